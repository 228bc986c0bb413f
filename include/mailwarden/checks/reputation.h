/*
 * reputation.h - sender reputation from past outcomes, in the state store.
 *
 * Subjects: the client IP, its network (/24 for IPv4, /48 for IPv6 by
 * default) and authenticated domains (a DKIM d= whose signature passed, the
 * MAIL FROM domain when SPF passed).  Each subject has a hash
 * "rep:{KIND=VALUE}" (KIND ip, net, dom) of good and bad counts per time
 * bucket (reputation.bucket wide, kept for reputation.window).
 *
 * Score: every bucket's counts are weighted by 0.5^(age / half_life), age
 * measured from the middle of the bucket to now; with G and B the weighted
 * good and bad counts, score = (G - B) / (G + B), from -1 (only bad) to 1
 * (only good).  samples = the unweighted outcomes in the window; the score
 * is "known" when samples >= reputation.min_samples, and policies should
 * act only on known scores.
 *
 * Which outcome to record is the engine's decision (docs/ratelimit.md,
 * "Reputation"): good = DMARC pass or aligned authentication; bad = policy
 * reject, SPF fail, DMARC fail, rate-limited.  One record per message.
 *
 * One store round trip per call (pipelined: one script or HGETALL per
 * subject), or none of its own: prepare/finish put the operations into a
 * batch shared with other modules (the engine's rate limits), and a record
 * batch may go out by mw_store_send without waiting for the answers.
 * Failures: record drops the update (logged by the store); score returns
 * TEMPFAIL and unknown scores.
 *
 * Thread safety: immutable after creation; call from any thread.
 */
#ifndef MW_CHECKS_REPUTATION_H
#define MW_CHECKS_REPUTATION_H

#include <stdbool.h>
#include <stddef.h>

#include "cidr.h"
#include "config.h"
#include "store.h"

#define MW_REP_MAX_DOMAINS 8

typedef enum mw_rep_outcome { MW_REP_GOOD = 0, MW_REP_BAD } mw_rep_outcome;

/* The subjects of one message.  NULL / 0 entries are skipped; domains are
 * lower-cased; duplicates are counted once. */
typedef struct mw_rep_subjects {
    const mw_addr     *client;       /* gives the ip and net subjects */
    const char *const *domains;      /* authenticated domains (at most MW_REP_MAX_DOMAINS used) */
    size_t             ndomains;
} mw_rep_subjects;

typedef struct mw_rep_score {
    bool     known;        /* samples >= reputation.min_samples */
    double   score;        /* -1 .. 1 (0 when there are no samples) */
    double   good, bad;    /* decayed counts */
    unsigned samples;      /* outcomes in the window, unweighted */
} mw_rep_score;

typedef struct mw_rep_result {
    mw_rep_score ip;       /* the client address */
    mw_rep_score net;      /* its /24 or /48 */
    mw_rep_score domain;   /* the authenticated domains together (counts summed) */
} mw_rep_result;

typedef struct mw_reputation mw_reputation;

/* From cfg->reputation_* over store (borrowed, must outlive it).  Returns
 * NULL when reputation.enabled is false (callers then skip everything). */
mw_reputation *mw_reputation_create(const mw_config *cfg, mw_store *store);
void mw_reputation_destroy(mw_reputation **rep);
unsigned mw_reputation_min_samples(const mw_reputation *rep);

/* Count one outcome for every subject.  OK, or TEMPFAIL/ERROR (the update
 * is lost; nothing else happens). */
mw_store_status mw_reputation_record(mw_reputation *rep, mw_rep_outcome outcome,
                                     const mw_rep_subjects *subj);
/* Scores of the subjects.  OK (out filled), or TEMPFAIL/ERROR with every
 * score unknown. */
mw_store_status mw_reputation_score(mw_reputation *rep, const mw_rep_subjects *subj,
                                    mw_rep_result *out);

/*
 * The same on a shared batch: prepare adds the operations (one per
 * subject; none when there are no subjects, t->n == 0) and fills the
 * ticket; the caller executes the batch once (or, for a record whose
 * outcome nobody waits for, sends it: mw_store_send); finish reads the
 * answers with the same batch and ticket.  finish_score returns and fills
 * out like mw_reputation_score; finish_record like mw_reputation_record
 * (after a send: only whether the backend took the operations).
 */
typedef struct mw_rep_ticket {              /* fields private to reputation.c */
    size_t             first, n;            /* the batch's operations first .. first+n-1 */
    unsigned char      kind[2 + MW_REP_MAX_DOMAINS];
    unsigned long long now_s;
} mw_rep_ticket;

void mw_reputation_prepare_score(mw_reputation *rep, const mw_rep_subjects *subj,
                                 mw_store_batch *b, mw_rep_ticket *t);
mw_store_status mw_reputation_finish_score(mw_reputation *rep, const mw_rep_ticket *t,
                                           const mw_store_batch *b, mw_rep_result *out);
void mw_reputation_prepare_record(mw_reputation *rep, mw_rep_outcome outcome,
                                  const mw_rep_subjects *subj, mw_store_batch *b, mw_rep_ticket *t);
mw_store_status mw_reputation_finish_record(mw_reputation *rep, const mw_rep_ticket *t,
                                            const mw_store_batch *b);

/* One line for the trace and the log, e.g.
 * "reputation: ip 0.82 (41 samples), net 0.50 (120), domain unknown (3)". */
void mw_reputation_format(const mw_rep_result *r, mw_buf *out);

/* The policy conditions reputation_below / reputation_above on one score:
 * true only when the score is known (enough samples). */
static inline bool mw_rep_below(const mw_rep_score *s, double bound) { return s->known && s->score < bound; }
static inline bool mw_rep_above(const mw_rep_score *s, double bound) { return s->known && s->score > bound; }

#endif
