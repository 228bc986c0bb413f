/*
 * dkim_keycache.h - a process-wide, content-addressed cache of parsed DKIM
 * public keys under libopendkim (filter/checks/dkim_keycache.c).
 *
 * libopendkim parses the p= key of every RSA signature it verifies with
 * d2i_PUBKEY_bio(), which costs ~0.075 ms a call on OpenSSL 3.0 (its decoder
 * framework is set up anew each time) and has no hook to hand it a parsed
 * key.  dkim_keycache.c defines d2i_PUBKEY_bio() itself: the executable's
 * definition interposes on libcrypto's for libopendkim's call, and answers
 * from a cache keyed by the exact DER bytes of the key.  Results never
 * change: the same bytes are the same key, a rotated key has new bytes, and
 * anything that is not a plain memory BIO holding one DER SEQUENCE goes to
 * the real function untouched.  See the comment block in the .c file.
 *
 * Turning it off: MW_DKIM_KEY_CACHE=off (or 0, no, false) in the daemon's
 * environment, read once at the first use; every call then goes straight
 * to libcrypto.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef MW_CHECKS_DKIM_KEYCACHE_H
#define MW_CHECKS_DKIM_KEYCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MW_DKIM_KEYCACHE_MAX 1024    /* entries; least recently used ones go first */

typedef struct mw_dkim_keycache_stats {
    uint64_t hits;        /* answered from the cache */
    uint64_t misses;      /* parsed by libcrypto (cached when the parse succeeded) */
    uint64_t bypassed;    /* not cacheable (a != NULL, not a memory BIO, not one DER
                             SEQUENCE, too large): handed to libcrypto, not counted above */
    uint64_t evictions;
    size_t   entries;
    bool     enabled;     /* false: MW_DKIM_KEY_CACHE turned it off */
    bool     interposed;  /* libopendkim's d2i_PUBKEY_bio resolves to ours */
} mw_dkim_keycache_stats;

/* Resolve libcrypto's d2i_PUBKEY_bio and read MW_DKIM_KEY_CACHE (once;
 * later calls do nothing).  Returns whether the cache is on and in the
 * path (interposed).  Called by mw_dkim_verifier_create(). */
bool mw_dkim_keycache_init(void);

/* A snapshot of the counters (monotonic for the life of the process). */
void mw_dkim_keycache_get_stats(mw_dkim_keycache_stats *out);

/* Drop every entry (the keys stay alive while a verification holds them).
 * Counters are kept. */
void mw_dkim_keycache_flush(void);

#endif
