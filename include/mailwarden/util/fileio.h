/*
 * fileio.h - small file helpers shared by the history, report and key writers.
 */
#ifndef MW_UTIL_FILEIO_H
#define MW_UTIL_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

/* Write all n bytes of p to fd, retrying after EINTR and short writes.
 * false on an error (errno set; EIO when write(2) returned 0). */
bool mw_write_all(int fd, const void *p, size_t n);

/* Read from fd until size bytes, end of file or an error (EINTR retried).
 * The number of bytes read (short only at end of file or on an error). */
size_t mw_read_full(int fd, void *buf, size_t size);

#endif
