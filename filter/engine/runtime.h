/*
 * runtime.h (engine-private) - one complete, immutable configuration
 * generation: config + resolver + checkers + policy, reference counted.
 */
#ifndef MW_ENGINE_RUNTIME_H
#define MW_ENGINE_RUNTIME_H

#include <stdatomic.h>
#include <stdint.h>

#include "arc.h"
#include "config.h"
#include "dkim.h"
#include "dmarc.h"
#include "history.h"
#include "ratelimit.h"
#include "reputation.h"
#include "store.h"
#include "dns.h"
#include "policy.h"
#include "spf.h"

typedef struct mw_runtime {
    atomic_uint  refs;
    unsigned     generation;
    mw_config   *cfg;
    mw_dns      *dns;
    mw_spf      *spf;
    mw_dkim_verifier *dkim_verifier;   /* NULL when dkim.verify is off */
    mw_dkim_signer   *dkim_signer;     /* always set; may hold no keys */
    mw_arc_verifier  *arc_verifier;    /* NULL when arc.verify is off */
    size_t            arc_seal_key;    /* arc.seal: index of arc.key in dkim_signer;
                                          SIZE_MAX when not sealing */
    mw_dmarc         *dmarc;           /* NULL when dmarc.enabled is off */
    mw_history       *history;         /* NULL when history.dir is "" */
    mw_store         *store;           /* state store (memory or Redis) */
    mw_ratelimit     *ratelimit;       /* always set; may hold no rules */
    mw_reputation    *reputation;      /* NULL when reputation.enabled is off */
    mw_policy   *policy;
    mw_policy   *shadow;       /* policy_shadow, or NULL */
} mw_runtime;

/* Build everything for cfg (ownership of cfg passes in only on success).
 * prev (may be NULL) is the running runtime: its state store is kept when
 * the store settings did not change, so in-memory buckets survive SIGHUP. */
mw_runtime *mw_runtime_build(mw_config *cfg, unsigned generation, const mw_runtime *prev, char *err,
                             size_t errlen);
void mw_runtime_ref(mw_runtime *rt);
void mw_runtime_unref(mw_runtime **rt);

#endif
