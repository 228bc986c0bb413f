/*
 * alloc.h - allocation wrappers that never return NULL.
 *
 * Out-of-memory policy: log and abort().  A milter that cannot allocate
 * cannot make a decision; dying lets the MTA apply milter_default_action
 * (tempfail), which loses no mail.  Every function here either succeeds or
 * does not return.
 */
#ifndef MW_UTIL_ALLOC_H
#define MW_UTIL_ALLOC_H

#include <stddef.h>

/* malloc/calloc/realloc that abort on failure.  Free with free(). */
void *mw_malloc(size_t n);
void *mw_calloc(size_t nmemb, size_t size);
void *mw_realloc(void *p, size_t n);
/* Duplicate a NUL-terminated string (NULL in -> NULL out).  Caller frees. */
char *mw_strdup(const char *s);
/* Duplicate at most n bytes of s and NUL-terminate.  Caller frees. */
char *mw_strndup(const char *s, size_t n);
/* Allocate nmemb*size with overflow check (aborts on overflow). */
void *mw_reallocarray(void *p, size_t nmemb, size_t size);

/* Free *pp and set it to NULL. */
#define MW_FREE(pp) do { free(*(pp)); *(pp) = NULL; } while (0)

#endif
