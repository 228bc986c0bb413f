/*
 * ratelimit.h - rate limits: GCRA buckets in the state store (store.h).
 *
 * A rule (ratelimit.rules in mailwarden.conf, see docs/ratelimit.md):
 *   name      unique; appears in the bucket key, the reply, trace and log
 *   key       selectors whose values name the bucket: ip (masked: /32 and
 *             IPv6 /64 by default), sasl_user, sender, sender_domain,
 *             recipient; several = one bucket per combination
 *   rate      "N/PERIOD" (s, m, h, d) and burst B (default N): B units at
 *             once, then one unit every PERIOD/N
 *   cost      message (1 per call) or recipient (1 per recipient)
 *   stage     connect, mail, rcpt or eom (when the unit is charged)
 *   trust     the trust classes it applies to (default any)
 *   action    tempfail (451 4.7.1, default) or reject (550 5.7.1)
 *   allow_*   networks and senders the rule does not apply to
 *
 * Algorithm: GCRA (scripts/redis/gcra.lua; the memory backend does the
 * same in C).  One value per bucket (the theoretical arrival time), exact
 * under concurrency (the check-and-update is one atomic script), keys
 * expire exactly when the bucket is full again.
 *
 * One round trip per stage: the rules that apply are grouped by bucket
 * subject (the {hash tag}); each group is one script call, all-or-nothing
 * within the group (nothing is charged unless every bucket of the group
 * allows), and the groups go out in one pipeline.  Groups are independent:
 * when a rule of one subject refuses, buckets of other subjects checked in
 * the same stage have been charged (docs/ratelimit.md: charging).
 *
 * The first recipient (facts.with_mail): the MAIL-stage rules are charged
 * with the RCPT-stage rules of the message's first recipient, all of them
 * in ONE script call whatever their subjects (mw_store_batch_script_multi):
 * nothing is charged unless every rule allows, so a refused first
 * recipient leaves the MAIL-stage buckets untouched and the next recipient
 * can try again without charging twice.  That call spans hash tags (one
 * slot each otherwise): one script for Redis and Sentinel; a Cluster gets it
 * split per slot with a refund when a part refuses (store_redis_cluster.c).
 *
 * Shared round trips: mw_ratelimit_prepare adds a stage's script calls to a
 * batch that other modules fill too (the engine adds the reputation score),
 * the caller executes it once, and mw_ratelimit_finish decides from the
 * answers.  mw_ratelimit_check is prepare + exec + finish on a batch of its
 * own.
 *
 * Thread safety: a limiter is immutable after creation and shared; check
 * from any thread.  Counters are atomic.
 */
#ifndef MW_CHECKS_RATELIMIT_H
#define MW_CHECKS_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "config.h"
#include "store.h"

typedef enum mw_rl_stage {
    MW_RL_CONNECT = 0,   /* client connected: charge 1 per connection */
    MW_RL_MAIL,          /* 1 per message (transaction): with its first accepted
                          * recipient in an SMTP session (facts.with_mail), else at MAIL */
    MW_RL_RCPT,          /* a recipient we are about to accept: 1 per recipient */
    MW_RL_EOM            /* end of message: 1 per message, or nrcpt for cost recipient */
} mw_rl_stage;

const char *mw_rl_stage_name(mw_rl_stage st);

/* Trust classes as bits: bit n is the engine's mw_trust value n
 * (0 inbound, 1 authenticated, 2 internal, 3 submission); the engine
 * passes 1u << trust. */
#define MW_RL_TRUST_INBOUND       (1u << 0)
#define MW_RL_TRUST_AUTHENTICATED (1u << 1)
#define MW_RL_TRUST_INTERNAL      (1u << 2)
#define MW_RL_TRUST_SUBMISSION    (1u << 3)
#define MW_RL_TRUST_ANY           0xfu

/* What the engine knows at the stage.  Strings may be NULL (unknown); they
 * are compared case-insensitively (lower-cased into the key). */
/* Which rules of the stage one prepare takes.  A rule with
 * skip_reputation_above needs the domain reputation before it can be
 * charged; when that score is fetched in the same round trip as the
 * limits, prepare the INDEPENDENT part with it and, if the decision says
 * rules_deferred and allowed, the DEPENDENT part after it with the score
 * in the facts (a second round trip, only in that case). */
typedef enum mw_rl_part {
    MW_RL_PART_ALL = 0,        /* every rule (the domain reputation is known, or not needed) */
    MW_RL_PART_INDEPENDENT,    /* the bucket subjects none of whose rules has
                                * skip_reputation_above (rep_domain_* are ignored) */
    MW_RL_PART_DEPENDENT       /* the others (the "not applied" lines are not traced again) */
} mw_rl_part;

typedef struct mw_rl_facts {
    mw_rl_part     part;         /* 0: MW_RL_PART_ALL */
    unsigned       trust;        /* one MW_RL_TRUST_* bit */
    const mw_addr *client;       /* NULL: unknown (unix socket) */
    const char    *sasl_user;    /* {auth_authen}; NULL or "": none */
    const char    *sender;       /* envelope sender without <>; NULL or "": null sender */
    const char    *recipient;    /* RCPT stage: this recipient, without <> */
    unsigned       nrcpt;        /* EOM stage: recipients accepted for the message */
    bool           with_mail;    /* RCPT stage, the message's first recipient: charge the
                                  * MAIL-stage rules too, all in one script call (all or
                                  * nothing across subjects; see below) */
    bool           rep_domain_known;  /* reputation of the authenticated domains so far */
    double         rep_domain_score;  /* -1 .. 1 (skip_reputation_above) */
} mw_rl_facts;

typedef struct mw_rl_decision {
    bool        allowed;         /* true: go on; false: refuse with the reply below */
    bool        store_failed;    /* the store did not answer; allowed = failure action */
    const char *rule;            /* the refusing rule (owned by the limiter), NULL if allowed */
    mw_rl_stage rule_stage;      /* its stage (MW_RL_MAIL when with_mail and a MAIL rule refused) */
    char        rcode[4];        /* "451" / "550"; "" when allowed */
    char        xcode[10];       /* "4.7.1" / "5.7.1"; "" when allowed */
    char        text[256];       /* reply text without the codes; "" when allowed */
    unsigned    retry_after;     /* seconds until the refused cost would fit (0 unknown/never) */
    unsigned    rules_checked;   /* buckets consulted (0: nothing applied, no round trip) */
    unsigned    rules_deferred;  /* MW_RL_PART_INDEPENDENT: rules left for the DEPENDENT part */
} mw_rl_decision;

/* One trace line ("ratelimit: ..."), for the `check` trace and debug logs. */
typedef void (*mw_rl_trace_fn)(void *arg, const char *line);

typedef struct mw_ratelimit mw_ratelimit;

/*
 * Build the limiter from cfg->ratelimit_rules (validated by the config
 * loader) over store (borrowed: it must outlive the limiter).
 * failure: what to do when the store fails (cfg->redis_failure_action).
 * NULL with a reason in err only on inconsistent input.
 */
mw_ratelimit *mw_ratelimit_create(const mw_config *cfg, mw_store *store, char *err, size_t errlen);
void mw_ratelimit_destroy(mw_ratelimit **rl);

/* Does any rule charge at this stage?  (The engine can skip the call.) */
bool mw_ratelimit_has_stage(const mw_ratelimit *rl, mw_rl_stage stage);
size_t mw_ratelimit_rule_count(const mw_ratelimit *rl);

/*
 * Evaluate every rule of the stage that applies to the facts, in one store
 * round trip, and charge them (see above).  Fills out and always returns
 * (never blocks past the store's timeouts).  When the store fails,
 * out->store_failed is set and out->allowed follows redis.failure_action
 * (accept: allowed; tempfail: 451 4.7.1); the failure is counted and
 * logged at most once a minute.  trace may be NULL.
 */
void mw_ratelimit_check(mw_ratelimit *rl, mw_rl_stage stage, const mw_rl_facts *facts,
                        mw_rl_decision *out, mw_rl_trace_fn trace, void *trace_arg);

/*
 * The same check on a shared batch.  prepare adds one gcra call per bucket
 * subject to b (nothing when no rule applies: then no round trip is
 * needed) and returns a ticket; the caller executes b once (mw_store_exec
 * on the limiter's store), then finish reads the answers, fills out
 * exactly as mw_ratelimit_check would, and frees the ticket (*ticket
 * becomes NULL).  Call finish exactly once per prepare, with the same
 * batch, after the exec (not executed: a store failure).  Buckets are
 * charged by the exec, so the decision cannot be undone.
 */
typedef struct mw_rl_ticket mw_rl_ticket;
mw_rl_ticket *mw_ratelimit_prepare(mw_ratelimit *rl, mw_rl_stage stage, const mw_rl_facts *facts,
                                   mw_store_batch *b, mw_rl_trace_fn trace, void *trace_arg);
void mw_ratelimit_finish(mw_ratelimit *rl, mw_rl_ticket **ticket, const mw_store_batch *b,
                         mw_rl_decision *out, mw_rl_trace_fn trace, void *trace_arg);

typedef struct mw_rl_stats {
    unsigned long long checks;          /* calls that consulted the store */
    unsigned long long refused;         /* decisions not allowed by a rule */
    unsigned long long store_failures;  /* calls where the store failed */
    unsigned long long failed_open;     /* ... and the message was accepted */
} mw_rl_stats;
void mw_ratelimit_stats(const mw_ratelimit *rl, mw_rl_stats *out);

/* ---- inspection (mailwarden limits) ---- */

typedef struct mw_rl_bucket {
    char               rule[72];     /* rule name from the key */
    char               subject[400]; /* "user=alice", "ip=192.0.2.0/24" ... (raw bytes) */
    bool               configured;   /* the rule exists in this config */
    char               rate[32];     /* the rule's rate, "" if not configured */
    unsigned           burst;
    long long          remaining;    /* units available now (-1 unknown) */
    unsigned long long tat_us;       /* the stored TAT, 0 if none */
    long long          reset_ms;     /* until the bucket is full again (0: full) */
} mw_rl_bucket;

/* The key of the bucket for rule and subject ("rl:{SUBJECT}:RULE"). */
void mw_ratelimit_bucket_key(mw_buf *out, const char *rule, const char *subject);
/* Parse a key ("rl:{SUBJECT}:RULE", prefix already stripped) and read its
 * TAT (one GET).  OK, NOTFOUND (no bucket: full), TEMPFAIL or ERROR (not
 * a bucket key; reason in why). */
mw_store_status mw_ratelimit_inspect(mw_ratelimit *rl, const char *key, mw_rl_bucket *out,
                                     char *why, size_t whylen);
/* Delete a bucket (it becomes full).  OK or NOTFOUND. */
mw_store_status mw_ratelimit_reset(mw_ratelimit *rl, const char *key, char *why, size_t whylen);

#endif
