/*
 * Shared by the LD_PRELOAD shims in this directory (fault_shim.c, powerloss_shim.c): the
 * real libc calls, resolved once with dlsym(RTLD_NEXT), and the open family of wrappers.
 *
 * A shim defines `_GNU_SOURCE`, includes this file, and defines
 *   static void shim_opened(int fd, const char *path, int flags);
 * which sees every descriptor opened through open/open64, and through openat/openat64 when
 * the path is absolute (only absolute paths can be matched against a tracked root). Its
 * constructor calls `resolve_real()` first. Everything else (which writes and flushes it
 * hooks, and what it does with them) is the shim's own policy.
 */
#ifndef CAIRN_SHIM_COMMON_H
#define CAIRN_SHIM_COMMON_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_msync)(void *, size_t, int);
static void (*real_sync)(void);
static int (*real_syncfs)(int);

static void shim_opened(int fd, const char *path, int flags);

static void resolve_real(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_close = dlsym(RTLD_NEXT, "close");
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_msync = dlsym(RTLD_NEXT, "msync");
    real_sync = dlsym(RTLD_NEXT, "sync");
    real_syncfs = dlsym(RTLD_NEXT, "syncfs");
}

/* The mode argument of an open that creates a file (0 otherwise). */
#define OPEN_MODE(flags, mode)                      \
    do {                                            \
        if ((flags) & (O_CREAT | O_TMPFILE)) {      \
            va_list ap;                             \
            va_start(ap, flags);                    \
            (mode) = va_arg(ap, mode_t);            \
            va_end(ap);                             \
        }                                           \
    } while (0)

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    int fd = real_open(path, flags, mode);
    shim_opened(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...) {
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    int fd = real_openat(dirfd, path, flags, mode);
    if (path[0] == '/') shim_opened(fd, path, flags);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

#endif
