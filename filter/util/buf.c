/*
 * buf.c - growable length-carrying byte buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"

void mw_buf_init(mw_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void mw_buf_free(mw_buf *b)
{
    free(b->data);
    mw_buf_init(b);
}

void mw_buf_reset(mw_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void mw_buf_reserve(mw_buf *b, size_t n)
{
    if (b->cap - b->len > n && b->data)
        return;
    size_t need = b->len + n + 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > ((size_t)-1) / 2)
            cap = need;
        else
            cap *= 2;
    }
    b->data = mw_realloc(b->data, cap);
    b->cap = cap;
}

void mw_buf_append(mw_buf *b, const void *p, size_t n)
{
    mw_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void mw_buf_puts(mw_buf *b, const char *s)
{
    mw_buf_append(b, s, strlen(s));
}

void mw_buf_putc(mw_buf *b, char c)
{
    mw_buf_append(b, &c, 1);
}

void mw_buf_vprintf(mw_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    mw_buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        mw_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    b->len += (size_t)n;
}

void mw_buf_printf(mw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mw_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

const char *mw_buf_cstr(const mw_buf *b)
{
    return b->data ? b->data : "";
}

char *mw_buf_steal(mw_buf *b)
{
    char *p = b->data ? b->data : mw_strdup("");
    mw_buf_init(b);
    return p;
}
