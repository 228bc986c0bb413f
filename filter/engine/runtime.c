/*
 * runtime.c - build and reference-count one configuration generation.
 *
 * Everything a message needs is built here, before the swap, so a reload
 * either yields a complete working runtime or fails without side effects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "log.h"
#include "runtime.h"

mw_runtime *mw_runtime_build(mw_config *cfg, unsigned generation, const mw_runtime *prev, char *err,
                             size_t errlen)
{
    mw_runtime *rt = mw_calloc(1, sizeof *rt);
    atomic_init(&rt->refs, 1);
    rt->generation = generation;

    mw_dns_options dopt = {0};
    dopt.forwarders = (const char *const *)cfg->dns_forwarders;
    dopt.nforwarders = cfg->ndns_forwarders;
    dopt.resolv_conf = cfg->dns_resolv_conf;
    dopt.timeout_ms = cfg->dns_timeout_ms;
    dopt.trust_anchor_file = (cfg->dns_trust_anchor && *cfg->dns_trust_anchor) ? cfg->dns_trust_anchor : NULL;
    dopt.use_tcp = cfg->dns_tcp;
    dopt.cache_size = cfg->dns_cache_size;      /* per generation: a reload starts cold */
    dopt.cache_min_ttl = cfg->dns_cache_min_ttl;
    dopt.cache_max_ttl = cfg->dns_cache_max_ttl;
    char why[256] = "";
    rt->dns = mw_dns_create(&dopt, why, sizeof why);
    if (!rt->dns) {
        snprintf(err, errlen, "DNS resolver: %s", why);
        goto fail;
    }
    mw_spf_options sopt = {.timeout_ms = cfg->spf_timeout_ms, .receiver = cfg->hostname,
                           .query_timeout_ms = cfg->dns_timeout_ms};
    rt->spf = mw_spf_create(rt->dns, &sopt, why, sizeof why);
    if (!rt->spf) {
        snprintf(err, errlen, "SPF: %s", why);
        goto fail;
    }
    if (prev && prev->store && mw_store_config_same(prev->cfg, cfg)) {
        rt->store = mw_store_ref(prev->store);
    } else {
        rt->store = mw_store_create(cfg, why, sizeof why);
        if (!rt->store) {
            snprintf(err, errlen, "state store: %s", why);
            goto fail;
        }
    }
    rt->ratelimit = mw_ratelimit_create(cfg, rt->store, why, sizeof why);
    if (!rt->ratelimit) {
        snprintf(err, errlen, "rate limits: %s", why);
        goto fail;
    }
    rt->reputation = mw_reputation_create(cfg, rt->store);
    if (cfg->dkim_verify) {
        mw_dkim_verify_options vo = {.min_key_bits = cfg->dkim_min_key_bits,
                                     .max_signatures = cfg->dkim_max_signatures,
                                     .timeout_ms = cfg->dns_timeout_ms,
                                     .dnssec = cfg->dns_trust_anchor && *cfg->dns_trust_anchor};
        rt->dkim_verifier = mw_dkim_verifier_create(rt->dns, &vo, why, sizeof why);
        if (!rt->dkim_verifier) {
            snprintf(err, errlen, "DKIM verifier: %s", why);
            goto fail;
        }
    }
    if (cfg->dmarc_enabled) {
        mw_dmarc_options mo = {.mode = cfg->dmarc_mode == MW_CFG_DMARC_RFC7489 ? MW_DMARC_MODE_RFC7489
                                                                               : MW_DMARC_MODE_RFC9989,
                               .psl_file = cfg->dmarc_psl_file,
                               .timeout_ms = cfg->dns_timeout_ms};
        rt->dmarc = mw_dmarc_create(rt->dns, &mo, why, sizeof why);
        if (!rt->dmarc) {
            snprintf(err, errlen, "DMARC: %s", why);
            goto fail;
        }
    }
    if (cfg->history_dir && *cfg->history_dir) {
        mw_history_options ho = {.fsync_interval_ms = cfg->history_fsync_interval_ms,
                                 .rotate_seconds = cfg->history_rotate_s};
        rt->history = mw_history_open(cfg->history_dir, &ho, why, sizeof why);
        if (!rt->history) {
            snprintf(err, errlen, "history: %s", why);
            goto fail;
        }
    }
    if (cfg->dmarc_reject_text && *cfg->dmarc_reject_text &&
        !mw_policy_reply_valid(cfg->dmarc_reject_text, MW_ACTION_REJECT, why, sizeof why)) {
        snprintf(err, errlen, "dmarc.reject_text: %s", why);
        goto fail;
    }
    mw_config_errors errs = {0};
    rt->dkim_signer = mw_dkim_signer_create(cfg, &errs);
    if (!rt->dkim_signer) {
        snprintf(err, errlen, "DKIM signing keys: %s%s", errs.n ? errs.msg[0] : "cannot load",
                 errs.n > 1 ? " (and more)" : "");
        mw_config_errors_free(&errs);
        goto fail;
    }
    mw_config_errors_free(&errs);
    rt->arc_seal_key = SIZE_MAX;
    if (cfg->arc_verify || cfg->arc_seal) {   /* sealing needs the chain's status */
        mw_arc_verify_options ao = {.min_key_bits = cfg->dkim_min_key_bits, .timeout_ms = cfg->dns_timeout_ms};
        rt->arc_verifier = mw_arc_verifier_create(rt->dns, &ao);
    }
    if (cfg->arc_seal) {
        for (size_t i = 0; i < mw_dkim_signer_nkeys(rt->dkim_signer); i++) {
            mw_dkim_key_info ki;
            if (mw_dkim_signer_key(rt->dkim_signer, i, &ki) && strcasecmp(ki.name, cfg->arc_key) == 0)
                rt->arc_seal_key = i;
        }
        if (rt->arc_seal_key == SIZE_MAX) {
            snprintf(err, errlen, "arc.key \"%s\": no such key in the DKIM key table", cfg->arc_key);
            goto fail;
        }
        mw_dkim_key_info ki;
        if (mw_dkim_signer_key(rt->dkim_signer, rt->arc_seal_key, &ki) && ki.per_domain) {
            snprintf(err, errlen, "arc.key \"%s\": a key with OpenDKIM's %% (the sender's domain) "
                     "cannot seal: ARC seals carry this host's domain; name a key with a fixed "
                     "domain and key file", cfg->arc_key);
            goto fail;
        }
    }
    rt->policy = mw_policy_load_at(cfg->policy, cfg->policy_dir, mw_config_origin(cfg, "policy"), &errs);
    if (!rt->policy) {
        /* a name not found already says `FILE:LINE: policy "NAME": ...` */
        bool named = errs.n && strstr(errs.msg[0], "policy \"") != NULL;
        snprintf(err, errlen, "%s%s%s%s", named ? "" : "policy \"", named ? "" : cfg->policy,
                 named ? "" : "\": ", errs.n ? errs.msg[0] : "cannot load");
        mw_config_errors_free(&errs);
        goto fail;
    }
    mw_config_errors_free(&errs);
    if (cfg->policy_shadow && *cfg->policy_shadow) {
        rt->shadow = mw_policy_load_at(cfg->policy_shadow, cfg->policy_dir,
                                       mw_config_origin(cfg, "policy_shadow"), &errs);
        if (!rt->shadow) {
            snprintf(err, errlen, "policy_shadow \"%s\": %s", cfg->policy_shadow,
                     errs.n ? errs.msg[0] : "cannot load");
            mw_config_errors_free(&errs);
            goto fail;
        }
        mw_config_errors_free(&errs);
    }
    rt->cfg = cfg;
    return rt;
fail:
    mw_policy_free(&rt->shadow);
    mw_policy_free(&rt->policy);
    mw_reputation_destroy(&rt->reputation);
    mw_ratelimit_destroy(&rt->ratelimit);
    mw_store_destroy(&rt->store);
    mw_history_close(&rt->history);
    mw_dmarc_destroy(&rt->dmarc);
    mw_dkim_signer_destroy(&rt->dkim_signer);
    mw_dkim_verifier_destroy(&rt->dkim_verifier);
    mw_arc_verifier_destroy(&rt->arc_verifier);
    mw_spf_destroy(&rt->spf);
    mw_dns_destroy(&rt->dns);
    free(rt);
    return NULL;
}

void mw_runtime_ref(mw_runtime *rt)
{
    atomic_fetch_add(&rt->refs, 1);
}

void mw_runtime_unref(mw_runtime **prt)
{
    mw_runtime *rt = *prt;
    if (!rt)
        return;
    *prt = NULL;
    if (atomic_fetch_sub(&rt->refs, 1) != 1)
        return;
    mw_policy_free(&rt->policy);
    mw_policy_free(&rt->shadow);
    mw_reputation_destroy(&rt->reputation);
    mw_ratelimit_destroy(&rt->ratelimit);
    mw_store_destroy(&rt->store);
    mw_history_close(&rt->history);
    mw_dmarc_destroy(&rt->dmarc);
    mw_dkim_signer_destroy(&rt->dkim_signer);
    mw_dkim_verifier_destroy(&rt->dkim_verifier);
    mw_arc_verifier_destroy(&rt->arc_verifier);
    mw_spf_destroy(&rt->spf);
    mw_dns_destroy(&rt->dns);
    mw_config_free(&rt->cfg);
    free(rt);
}
