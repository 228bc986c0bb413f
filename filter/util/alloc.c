/*
 * alloc.c - allocation wrappers (see alloc.h for the out-of-memory policy).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static void oom(size_t n)
{
    /* No logging module here: stderr is always safe and syslog may need memory. */
    fprintf(stderr, "mailwarden: panic: out of memory (%zu bytes)\n", n);
    abort();
}

void *mw_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *mw_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *mw_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

void *mw_reallocarray(void *p, size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size)
        oom(SIZE_MAX);
    return mw_realloc(p, nmemb * size);
}

char *mw_strdup(const char *s)
{
    if (!s)
        return NULL;
    return mw_strndup(s, strlen(s));
}

char *mw_strndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    size_t len = strnlen(s, n);
    char *p = mw_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
