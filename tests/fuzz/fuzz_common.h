/*
 * fuzz_common.h - small helpers shared by the fuzz targets.
 */
#ifndef MW_FUZZ_COMMON_H
#define MW_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A NUL-terminated copy of n bytes (the input may contain NULs: C-string
 * APIs then see a prefix, which is what a real caller would pass too). */
static inline char *fz_strndup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* An exact-size heap copy without a terminator, so ASan catches any read
 * past the length a length-bounded parser was given. */
static inline char *fz_exact(const uint8_t *p, size_t n)
{
    char *s = malloc(n ? n : 1);
    if (!s)
        abort();
    if (n)
        memcpy(s, p, n);
    return s;
}

/* Split off the next line (up to '\n', which is consumed). */
static inline int fz_next_line(const uint8_t **p, size_t *n, const uint8_t **line, size_t *len)
{
    if (*n == 0)
        return 0;
    const uint8_t *nl = memchr(*p, '\n', *n);
    size_t l = nl ? (size_t)(nl - *p) : *n;
    *line = *p;
    *len = l;
    *p += nl ? l + 1 : l;
    *n -= nl ? l + 1 : l;
    return 1;
}

#endif
