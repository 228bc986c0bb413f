/*
 * fileio.c - small file helpers (fileio.h).
 */
#include "fileio.h"

#include <errno.h>
#include <unistd.h>

bool mw_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return false;
        if (w == 0) {
            errno = EIO;
            return false;
        }
        c += w;
        n -= (size_t)w;
    }
    return true;
}

size_t mw_read_full(int fd, void *buf, size_t size)
{
    char *p = buf;
    size_t n = 0;
    while (n < size) {
        ssize_t r = read(fd, p + n, size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    return n;
}
