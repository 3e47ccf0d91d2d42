/*
 * cairn storage-fault shim: an LD_PRELOAD library that makes writes or flushes of LMDB's data
 * file fail with ENOSPC or EIO, from the Nth call on, as a full or failing disk would.
 *
 * Tracked files: `data.mdb` opened (open/open64/openat/openat64, absolute paths) under
 * $CAIRN_FAULT_DIR. Nothing else is touched; untracked calls go straight to libc.
 *
 *   CAIRN_FAULT_DIR    the directory whose data.mdb is tracked (unset: the shim does nothing)
 *   CAIRN_FAULT_OP     write (write, pwrite, writev, pwritev) | sync (fsync, fdatasync; msync
 *                      of any mapping) | any                                  default: write
 *   CAIRN_FAULT_ERRNO  ENOSPC | EIO                                           default: ENOSPC
 *   CAIRN_FAULT_NTH    the first armed matching call that fails (1-based)     default: 1
 *   CAIRN_FAULT_TIMES  how many calls fail from there (then space "returns")  default: all
 *   CAIRN_FAULT_GATE   a path: calls are armed only while this file exists (the test arms
 *                      the fault by creating it)                              default: always
 *   CAIRN_FAULT_GROW   if set, only writes that extend the file match: a full disk still
 *                      lets a program overwrite blocks it already has (LMDB's meta pages)
 *   CAIRN_FAULT_BELOW  an offset: only writes that start below it match (LMDB's meta pages
 *                      are its first two pages: 8192 with 4 KiB pages)
 *   CAIRN_FAULT_LOG    a path, rewritten after every armed matching call as one line:
 *                      "calls=N injected=N"
 *
 * A failed call does nothing and returns -1 with errno set, as the kernel does when no byte
 * could be written.
 */
#define _GNU_SOURCE
#include "shim_common.h"

enum op { OP_WRITE = 1, OP_SYNC = 2 };

static char tracked[MAX_FDS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *root;
static size_t root_len;
static int ops = OP_WRITE;
static int fault_errno = ENOSPC;
static unsigned long nth = 1, times = (unsigned long)-1;
static const char *gate;
static int grow_only;
static off_t below = -1;
static const char *log_path;
static unsigned long n_calls, n_injected;


__attribute__((constructor)) static void init(void) {
    resolve_real();
    root = getenv("CAIRN_FAULT_DIR");
    root_len = root ? strlen(root) : 0;
    const char *v = getenv("CAIRN_FAULT_OP");
    if (v && strcmp(v, "sync") == 0) ops = OP_SYNC;
    else if (v && strcmp(v, "any") == 0) ops = OP_WRITE | OP_SYNC;
    v = getenv("CAIRN_FAULT_ERRNO");
    if (v && strcmp(v, "EIO") == 0) fault_errno = EIO;
    v = getenv("CAIRN_FAULT_NTH");
    if (v) nth = strtoul(v, NULL, 10);
    v = getenv("CAIRN_FAULT_TIMES");
    if (v) times = strtoul(v, NULL, 10);
    gate = getenv("CAIRN_FAULT_GATE");
    grow_only = getenv("CAIRN_FAULT_GROW") != NULL;
    log_path = getenv("CAIRN_FAULT_LOG");
    v = getenv("CAIRN_FAULT_BELOW");
    if (v) below = (off_t)strtoull(v, NULL, 10);
}

static void shim_opened(int fd, const char *path, int flags) {
    (void)flags;
    if (fd < 0 || fd >= MAX_FDS || !root || !path) return;
    if (strncmp(path, root, root_len) != 0 || path[root_len] != '/') return;
    const char *base = strrchr(path, '/') + 1;
    if (strcmp(base, "data.mdb") == 0) __atomic_store_n(&tracked[fd], 1, __ATOMIC_RELEASE);
}

static int is_tracked(int fd) {
    return fd >= 0 && fd < MAX_FDS && __atomic_load_n(&tracked[fd], __ATOMIC_ACQUIRE);
}

/* Called with `lock` held. */
static void publish(void) {
    if (!log_path) return;
    int fd = real_open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char buf[96];
    int n = snprintf(buf, sizeof buf, "calls=%lu injected=%lu\n", n_calls, n_injected);
    if (n > 0) {
        ssize_t ignored = real_write(fd, buf, (size_t)n);
        (void)ignored;
    }
    real_close(fd);
}

/* Whether this call (of kind `op`; for writes, of `start`..`end` on `fd`) fails. */
static int fails(int fd, int op, off_t start, off_t end) {
    if (!(ops & op)) return 0;
    if (op == OP_WRITE && below >= 0 && start >= below) return 0;
    if (gate && access(gate, F_OK) != 0) return 0;
    if (op == OP_WRITE && grow_only) {
        struct stat st;
        if (fstat(fd, &st) == 0 && end <= st.st_size) return 0;
    }
    pthread_mutex_lock(&lock);
    unsigned long call = ++n_calls;
    int fail = call >= nth && n_injected < times;
    if (fail) n_injected++;
    publish();
    pthread_mutex_unlock(&lock);
    if (fail) errno = fault_errno;
    return fail;
}

static int fails_at(int fd, off_t off, size_t len) {
    return fails(fd, OP_WRITE, off, off + (off_t)len);
}

static size_t iov_len(const struct iovec *iov, int cnt) {
    size_t len = 0;
    for (int i = 0; i < cnt; i++) len += iov[i].iov_len;
    return len;
}

int close(int fd) {
    if (is_tracked(fd)) __atomic_store_n(&tracked[fd], 0, __ATOMIC_RELEASE);
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t len) {
    if (is_tracked(fd) && fails_at(fd, lseek(fd, 0, SEEK_CUR), len)) return -1;
    return real_write(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    if (is_tracked(fd) && fails_at(fd, off, len)) return -1;
    return real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    if (is_tracked(fd) &&
        fails_at(fd, lseek(fd, 0, SEEK_CUR), iov_len(iov, cnt)))
        return -1;
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (is_tracked(fd) && fails_at(fd, off, iov_len(iov, cnt))) return -1;
    return real_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
    __attribute__((alias("pwritev")));

int fsync(int fd) {
    if (is_tracked(fd) && fails(fd, OP_SYNC, 0, 0)) return -1;
    return real_fsync(fd);
}

int fdatasync(int fd) {
    if (is_tracked(fd) && fails(fd, OP_SYNC, 0, 0)) return -1;
    return real_fdatasync(fd);
}

int msync(void *addr, size_t len, int flags) {
    if (root && fails(-1, OP_SYNC, 0, 0)) return -1;
    return real_msync(addr, len, flags);
}
