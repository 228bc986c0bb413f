/*
 * report_priv.h - internals shared by the report_*.c files: a small
 * string -> index hash table (open addressing, keys borrowed from the
 * caller, who keeps them alive while the table exists).
 */
#ifndef MW_CHECKS_REPORT_PRIV_H
#define MW_CHECKS_REPORT_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

typedef struct strmap {
    char  **keys;     /* borrowed: owned by the report or row */
    size_t *vals;
    size_t  cap, n;
} strmap;

static inline uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static inline bool strmap_get(const strmap *m, const char *k, size_t *v)
{
    if (m->cap == 0)
        return false;
    for (size_t i = hash_str(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == NULL)
            return false;
        if (strcmp(m->keys[i], k) == 0) {
            *v = m->vals[i];
            return true;
        }
    }
}

static inline void strmap_put(strmap *m, char *k, size_t v);

static inline void strmap_grow(strmap *m)
{
    strmap old = *m;

    m->cap = old.cap ? old.cap * 2 : 64;
    m->keys = mw_calloc(m->cap, sizeof *m->keys);
    m->vals = mw_calloc(m->cap, sizeof *m->vals);
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] != NULL)
            strmap_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

static inline void strmap_put(strmap *m, char *k, size_t v)
{
    if ((m->n + 1) * 2 > m->cap)
        strmap_grow(m);
    size_t i = hash_str(k) & (m->cap - 1);
    while (m->keys[i] != NULL)
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = k;
    m->vals[i] = v;
    m->n++;
}

static inline void strmap_free(strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

#endif
