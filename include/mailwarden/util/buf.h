/*
 * buf.h - growable byte buffer that carries its length.
 *
 * Every string that comes from outside (headers, DNS TXT chunks, body
 * blocks) travels in an mw_buf.  The data is always NUL-terminated for
 * convenience, but the length is authoritative: data may contain NULs.
 * The struct is public so buffers can live on the stack or inside other
 * structs; initialise with MW_BUF_INIT or mw_buf_init(), release with
 * mw_buf_free().  All growth aborts on out-of-memory (see alloc.h).
 */
#ifndef MW_UTIL_BUF_H
#define MW_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct mw_buf {
    char  *data;   /* NUL-terminated; NULL only before the first append */
    size_t len;    /* bytes used, excluding the terminating NUL */
    size_t cap;    /* bytes allocated */
} mw_buf;

#define MW_BUF_INIT { NULL, 0, 0 }

void mw_buf_init(mw_buf *b);
/* Release storage; the buffer is reusable (empty) afterwards. */
void mw_buf_free(mw_buf *b);
/* Empty the buffer but keep its storage. */
void mw_buf_reset(mw_buf *b);
/* Make room for at least n more bytes. */
void mw_buf_reserve(mw_buf *b, size_t n);
void mw_buf_append(mw_buf *b, const void *p, size_t n);
void mw_buf_puts(mw_buf *b, const char *s);
void mw_buf_putc(mw_buf *b, char c);
void mw_buf_printf(mw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mw_buf_vprintf(mw_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Return the contents ("" if empty); valid until the next modification. */
const char *mw_buf_cstr(const mw_buf *b);
/* Hand the storage to the caller (who frees it); the buffer becomes empty. */
char *mw_buf_steal(mw_buf *b);

#endif
