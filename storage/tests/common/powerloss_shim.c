/*
 * cairn power-loss shim: an LD_PRELOAD library that keeps, next to every file it tracks, the
 * image a power loss would leave behind, and counts the flushes.
 *
 * Tracked files: opened (open/open64/openat/openat64) under $CAIRN_POWERLOSS_DIR, except
 * LMDB's lock file (`lock.mdb`, rebuilt on open after a crash). For a tracked file F:
 *
 *   F.durable  what is on the disk for sure: the file as it was at first open, plus every
 *              write that a completed sync covered.
 *   F.pending  writes issued since the last sync of F, in order, as records
 *              [u64 offset][u64 length][bytes] (a record cut short by a kill is incomplete).
 *
 * A write on a descriptor opened with O_DSYNC/O_SYNC is durable when it returns: it goes
 * straight to F.durable. fsync/fdatasync on any descriptor of F (and sync/syncfs) move all of
 * F.pending into F.durable once the real call succeeded. Each hook does the real call first
 * and updates the image only after it returned, so a kill in between leaves the image
 * *behind* the disk — the conservative side: a write counts as durable only once the caller
 * could have seen it complete. After a kill the test builds the disk a power loss leaves: F.durable plus any
 * subset of the complete F.pending records, applied in order (unsynced writes may or may not
 * have reached the disk, in any order).
 *
 * Writes through a shared writable mmap (msync) are invisible here; msync is only counted.
 * LMDB without MDB_WRITEMAP (Cairn's configuration) writes with pwrite/writev.
 *
 * Counts (tracked files only) are kept in $CAIRN_POWERLOSS_COUNTS, rewritten in place after
 * every counted call as one fixed-width line:
 *   fsync=N fdatasync=N dsync_writes=N writes=N msync=N
 * (msync is counted for any descriptor-less call, tracked or not.)
 */
#define _GNU_SOURCE
#include "shim_common.h"

#define MAX_FILES 16
#define PATH_CAP 4096

struct file {
    char path[PATH_CAP];
    int durable_fd;
    int pending_fd;
};

static struct file files[MAX_FILES];
static int nfiles;
/* fd -> 1 + index into files (0: untracked); with the O_DSYNC bit of the open in bit 16. */
static int fd_file[MAX_FDS];
#define DSYNC_BIT (1 << 16)
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *root;
static size_t root_len;
static int counts_fd = -1;
static unsigned long n_fsync, n_fdatasync, n_dsync_writes, n_writes, n_msync;


static void die(const char *what) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "cairn powerloss shim: %s: %s\n", what, strerror(errno));
    if (n > 0) {
        ssize_t ignored = real_write ? real_write(2, buf, (size_t)n) : -1;
        (void)ignored;
    }
    abort();
}

__attribute__((constructor)) static void init(void) {
    resolve_real();
    root = getenv("CAIRN_POWERLOSS_DIR");
    root_len = root ? strlen(root) : 0;
    const char *counts = getenv("CAIRN_POWERLOSS_COUNTS");
    if (counts) {
        counts_fd = real_open(counts, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (counts_fd < 0) die("open counts file");
    }
}

/* Called with `lock` held. */
static void publish_counts(void) {
    if (counts_fd < 0) return;
    char buf[160];
    int n = snprintf(buf, sizeof buf,
                     "fsync=%012lu fdatasync=%012lu dsync_writes=%012lu writes=%012lu msync=%012lu\n",
                     n_fsync, n_fdatasync, n_dsync_writes, n_writes, n_msync);
    if (n <= 0 || real_pwrite(counts_fd, buf, (size_t)n, 0) != n) die("write counts");
}

static int tracked_path(const char *path) {
    if (!root || !path || strncmp(path, root, root_len) != 0) return 0;
    if (path[root_len] != '/' && path[root_len] != '\0') return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strcmp(base, "lock.mdb") != 0;
}

static void copy_file(int from, int to) {
    char buf[1 << 16];
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(from, buf, sizeof buf, off);
        if (n < 0) die("read for the durable image");
        if (n == 0) return;
        if (real_pwrite(to, buf, (size_t)n, off) != n) die("write the durable image");
        off += n;
    }
}

/* The file entry for `path`, made on first sight. Called with `lock` held. */
static int file_index(const char *path) {
    for (int i = 0; i < nfiles; i++)
        if (strcmp(files[i].path, path) == 0) return i;
    if (nfiles == MAX_FILES || strlen(path) + 16 > PATH_CAP) {
        errno = ENAMETOOLONG;
        die("too many or too long tracked paths");
    }
    struct file *f = &files[nfiles];
    strcpy(f->path, path);
    char aux[PATH_CAP];
    snprintf(aux, sizeof aux, "%s.durable", path);
    f->durable_fd = real_open(aux, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->durable_fd < 0) die("open the durable image");
    /* What exists at first open survived whatever came before (the test starts every child
       on an image it built), so it is the durable starting point. */
    int src = real_open(path, O_RDONLY | O_CLOEXEC);
    if (src < 0) die("open the tracked file to copy it");
    copy_file(src, f->durable_fd);
    real_close(src);
    snprintf(aux, sizeof aux, "%s.pending", path);
    f->pending_fd = real_open(aux, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (f->pending_fd < 0) die("open the pending log");
    return nfiles++;
}

static void shim_opened(int fd, const char *path, int flags) {
    if (fd < 0 || fd >= MAX_FDS || !tracked_path(path)) return;
    pthread_mutex_lock(&lock);
    int dsync = (flags & (O_DSYNC | O_SYNC)) ? DSYNC_BIT : 0;
    __atomic_store_n(&fd_file[fd], (1 + file_index(path)) | dsync, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
}

/* Records `len` bytes written at `off` through `fd`. Called with `lock` held. */
static void record(int fd, off_t off, const void *data, size_t len) {
    struct file *f = &files[(fd_file[fd] & ~DSYNC_BIT) - 1];
    if (fd_file[fd] & DSYNC_BIT) {
        if (real_pwrite(f->durable_fd, data, len, off) != (ssize_t)len) die("dsync write");
        n_dsync_writes++;
    } else {
        uint64_t head[2] = {(uint64_t)off, (uint64_t)len};
        struct iovec iov[2] = {{head, sizeof head}, {(void *)data, len}};
        if (real_writev(f->pending_fd, iov, 2) != (ssize_t)(sizeof head + len))
            die("append to the pending log");
        n_writes++;
    }
}

static void record_iov(int fd, off_t off, const struct iovec *iov, int cnt, ssize_t done) {
    for (int i = 0; i < cnt && done > 0; i++) {
        size_t len = iov[i].iov_len < (size_t)done ? iov[i].iov_len : (size_t)done;
        record(fd, off, iov[i].iov_base, len);
        off += (off_t)len;
        done -= (ssize_t)len;
    }
}

/* Moves file `i`'s pending writes into its durable image. Called with `lock` held. */
static void make_durable(int i) {
    struct file *f = &files[i];
    off_t pos = 0;
    for (;;) {
        uint64_t head[2];
        ssize_t n = pread(f->pending_fd, head, sizeof head, pos);
        if (n == 0) break;
        if (n != sizeof head) die("read the pending log");
        char *buf = malloc(head[1] ? head[1] : 1);
        if (!buf) die("malloc");
        if (pread(f->pending_fd, buf, head[1], pos + (off_t)sizeof head) != (ssize_t)head[1])
            die("read a pending record");
        if (real_pwrite(f->durable_fd, buf, head[1], (off_t)head[0]) != (ssize_t)head[1])
            die("apply a pending record");
        free(buf);
        pos += (off_t)(sizeof head + head[1]);
    }
    if (ftruncate(f->pending_fd, 0) != 0) die("empty the pending log");
}

/* Read without the lock: a descriptor is (un)tracked by the thread that opens (closes) it. */
static int is_tracked(int fd) {
    return fd >= 0 && fd < MAX_FDS && __atomic_load_n(&fd_file[fd], __ATOMIC_ACQUIRE) != 0;
}

int close(int fd) {
    if (is_tracked(fd)) {
        pthread_mutex_lock(&lock);
        __atomic_store_n(&fd_file[fd], 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t len) {
    if (!is_tracked(fd)) return real_write(fd, buf, len);
    pthread_mutex_lock(&lock);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t n = real_write(fd, buf, len);
    if (n > 0) record(fd, off, buf, (size_t)n);
    publish_counts();
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    if (!is_tracked(fd)) return real_pwrite(fd, buf, len, off);
    pthread_mutex_lock(&lock);
    ssize_t n = real_pwrite(fd, buf, len, off);
    if (n > 0) record(fd, off, buf, (size_t)n);
    publish_counts();
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    if (!is_tracked(fd)) return real_writev(fd, iov, cnt);
    pthread_mutex_lock(&lock);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t n = real_writev(fd, iov, cnt);
    record_iov(fd, off, iov, cnt, n);
    publish_counts();
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (!is_tracked(fd)) return real_pwritev(fd, iov, cnt, off);
    pthread_mutex_lock(&lock);
    ssize_t n = real_pwritev(fd, iov, cnt, off);
    record_iov(fd, off, iov, cnt, n);
    publish_counts();
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
    __attribute__((alias("pwritev")));

static int synced(int fd, int rc, unsigned long *counter) {
    if (!is_tracked(fd)) return rc;
    pthread_mutex_lock(&lock);
    (*counter)++;
    if (rc == 0) make_durable((fd_file[fd] & ~DSYNC_BIT) - 1);
    publish_counts();
    pthread_mutex_unlock(&lock);
    return rc;
}

int fsync(int fd) { return synced(fd, real_fsync(fd), &n_fsync); }

int fdatasync(int fd) { return synced(fd, real_fdatasync(fd), &n_fdatasync); }

int msync(void *addr, size_t len, int flags) {
    int rc = real_msync(addr, len, flags);
    pthread_mutex_lock(&lock);
    n_msync++;
    publish_counts();
    pthread_mutex_unlock(&lock);
    return rc;
}

static void all_durable(void) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nfiles; i++) make_durable(i);
    n_fsync++;
    publish_counts();
    pthread_mutex_unlock(&lock);
}

void sync(void) {
    real_sync();
    all_durable();
}

int syncfs(int fd) {
    int rc = real_syncfs(fd);
    if (rc == 0) all_durable();
    return rc;
}
