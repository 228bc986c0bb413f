/*
 * session_limits.c - rate limits and reputation for a session: which
 * stage charges what (docs/ratelimit.md), how a refusal is reported to the
 * front end, and the reputation score and outcome of each message.
 *
 * Charging: connect charges per connection, MAIL per transaction, RCPT per
 * recipient we would otherwise accept (a recipient refused for another
 * reason never reaches us), end of message per message or per recipient.
 * A store failure gives the configured redis.failure_action inside the
 * rate-limit module; here it is only traced.
 *
 * Round trips (docs/ratelimit.md): connect one (rate limits only); in an
 * SMTP session (the milter: the MTA reports every recipient) MAIL none and
 * the first recipient one: its limits, the MAIL-stage limits (one script
 * call, all or nothing) and the client's score in one batch; further
 * recipients one each; end of message one (limits + the score of the
 * authenticated domains; a second only when a skip_reputation_above rule
 * must wait for that score), and the outcome is then sent without waiting
 * (mw_store_send).  Without an SMTP session (Exim's scan, whose recipients
 * were charged at RCPT time; `mailwarden check`) MAIL keeps its own round
 * trip as before.
 *
 * The state this needs is the session's own: a message whose nrcpt is 0
 * has not charged its MAIL stage yet (the first recipient accepted here
 * charges it; a refused one charges nothing and leaves nrcpt at 0).
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "metrics.h"
#include "session_priv.h"
#include "strutil.h"

static unsigned trust_bit(mw_trust t)
{
    return 1u << (unsigned)t;
}

static void rl_trace(void *arg, const char *line)
{
    mw_sess_trace(arg, "ratelimit: %s", line);
}

static void rl_facts(mw_session *s, const char *rcpt, mw_rl_facts *f)
{
    memset(f, 0, sizeof *f);
    f->trust = trust_bit(s->res.trust);
    f->client = s->have_addr ? &s->client_addr : NULL;
    f->sasl_user = s->auth_authen;
    f->sender = s->mail_from;
    f->recipient = rcpt;
    f->nrcpt = s->nrcpt;
    if (s->res.reputation_done && s->res.reputation.domain.known) {
        f->rep_domain_known = true;
        f->rep_domain_score = s->res.reputation.domain.score;
    }
}

/* Act on a rate-limit decision: trace, count, fill s->refusal. */
static bool rl_decided(mw_session *s, mw_rl_stage stage, const mw_rl_decision *d)
{
    if (d->store_failed)
        mw_sess_trace(s, "ratelimit: state store unavailable at %s: %s", mw_rl_stage_name(stage),
                      d->allowed ? "accepted (redis.failure_action)" : "refused (redis.failure_action)");
    if (d->allowed)
        return true;
    mw_metric_inc_l(MW_M_RATELIMIT_HITS, d->rule, NULL);
    s->refused = true;
    s->rate_limited = true;
    memset(&s->refusal, 0, sizeof s->refusal);
    s->refusal.action = d->rcode[0] == '5' ? MW_ACTION_REJECT : MW_ACTION_TEMPFAIL;
    snprintf(s->refusal.rcode, sizeof s->refusal.rcode, "%s", d->rcode[0] ? d->rcode : "451");
    snprintf(s->refusal.xcode, sizeof s->refusal.xcode, "%s", d->xcode);
    snprintf(s->refusal.text, sizeof s->refusal.text, "%s", d->text[0] ? d->text : "rate limit exceeded");
    s->refusal.rule = d->rule;
    mw_sess_trace(s, "ratelimit: %s refused by rule %s: %s %s %s", mw_rl_stage_name(stage),
                  d->rule ? d->rule : "?", s->refusal.rcode, s->refusal.xcode, s->refusal.text);
    return false;
}

/* MAIL-stage limits and the client's score wait for the first recipient:
 * only in an SMTP session, whose front end reports each recipient through
 * mw_session_rcpt (mw_session_connect was called: the milter).  Exim's
 * scan session and `mailwarden check` charge MAIL at MAIL. */
static bool defers_mail(const mw_session *s)
{
    return s->connect_done;
}

static bool first_rcpt(mw_session *s, const char *rcpt);

bool mw_sess_ratelimit(mw_session *s, mw_rl_stage stage, const char *rcpt)
{
    mw_runtime *rt = s->rt;
    s->refused = false;
    if (stage == MW_RL_RCPT && rt && s->in_message && s->nrcpt == 0 && defers_mail(s))
        return first_rcpt(s, rcpt);
    if (!rt || !rt->ratelimit || !mw_ratelimit_has_stage(rt->ratelimit, stage))
        return true;
    mw_rl_facts f;
    rl_facts(s, rcpt, &f);
    mw_rl_decision d;
    uint64_t t0 = mw_metrics_now_ns();
    mw_ratelimit_check(rt->ratelimit, stage, &f, &d, rl_trace, s);
    mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_RATELIMIT, mw_metrics_now_ns() - t0);
    return rl_decided(s, stage, &d);
}

/* Subjects: the client, and the domains authenticated so far. */
static size_t subjects(mw_session *s, mw_rep_subjects *subj, const char **doms, size_t max)
{
    size_t n = 0;
    mw_results *r = &s->res;
    for (size_t i = 0; r->dkim_verified && i < r->dkim.nsig && n < max; i++)
        if (r->dkim.sig[i].result == MW_DKIM_PASS && r->dkim.sig[i].domain)
            doms[n++] = r->dkim.sig[i].domain;
    if (r->spf.evaluated && r->spf.result == MW_SPF_PASS && r->spf.domain && n < max)
        doms[n++] = r->spf.domain;
    subj->client = s->have_addr ? &s->client_addr : NULL;
    subj->domains = doms;
    subj->ndomains = n;
    return n;
}

static bool rep_applies(mw_session *s)
{
    mw_runtime *rt = s->rt;
    return rt && rt->reputation && s->have_addr && !mw_trust_outbound(s->res.trust);
}

/* A score has been read (st) into s->res.reputation: count and trace it. */
static void rep_scored(mw_session *s, mw_store_status st, size_t ndomains)
{
    if (st != MW_STORE_OK) {
        mw_metric_inc(MW_M_REPUTATION_ERRORS, MW_ML_REPOP_SCORE, 0);
        mw_sess_trace(s, "reputation: unavailable (state store)");
        return;
    }
    const mw_rep_result *rr = &s->res.reputation;
    mw_metric_inc(MW_M_REPUTATION_SCORES, MW_ML_REPSUBJ_IP, rr->ip.known);
    mw_metric_inc(MW_M_REPUTATION_SCORES, MW_ML_REPSUBJ_NET, rr->net.known);
    if (ndomains)
        mw_metric_inc(MW_M_REPUTATION_SCORES, MW_ML_REPSUBJ_DOMAIN, rr->domain.known);
    s->res.reputation_done = true;
    mw_buf b = MW_BUF_INIT;
    mw_reputation_format(&s->res.reputation, &b);
    mw_sess_trace(s, "%s", mw_buf_cstr(&b));   /* the format starts with "reputation:" */
    mw_buf_free(&b);
}

void mw_sess_reputation_score(mw_session *s)
{
    mw_runtime *rt = s->rt;
    if (!rep_applies(s))
        return;
    const char *doms[8];
    mw_rep_subjects subj;
    subjects(s, &subj, doms, 8);
    uint64_t t0 = mw_metrics_now_ns();
    mw_store_status st = mw_reputation_score(rt->reputation, &subj, &s->res.reputation);
    mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_REPUTATION, mw_metrics_now_ns() - t0);
    rep_scored(s, st, subj.ndomains);
}

/* One store round trip for a batch whose limits are already prepared:
 * adds the score of subj (NULL: no score), runs the batch, reads the score
 * (ndoms: how many of subj's domains were scored).  Returns the time spent
 * in the store. */
static uint64_t run_batch(mw_session *s, mw_store_batch *b, const mw_rep_subjects *subj, size_t ndoms)
{
    mw_runtime *rt = s->rt;
    mw_rep_ticket st_ = {0};
    if (subj)
        mw_reputation_prepare_score(rt->reputation, subj, b, &st_);
    uint64_t t0 = mw_metrics_now_ns();
    if (mw_store_batch_count(b) > 0)
        mw_store_exec(rt->store, b, NULL, 0);
    uint64_t spent = mw_metrics_now_ns() - t0;
    if (subj) {
        mw_store_status st = mw_reputation_finish_score(rt->reputation, &st_, b, &s->res.reputation);
        mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_REPUTATION, spent);
        rep_scored(s, st, ndoms);
    }
    return spent;
}

/*
 * MAIL and end of message: the stage's rate limits and the reputation
 * score in one store round trip (one batch, one mw_store_exec).  At MAIL
 * the score is the client's (ip, net); at end of message it is read again
 * only when authenticated domains are known (the policy and
 * skip_reputation_above see them).  Rules with skip_reputation_above need
 * that domain score first: their bucket subjects go in a second round trip
 * after it, only when such a rule applies and the first part allowed.
 * In an SMTP session MAIL does nothing here: its limits and the client's
 * score go with the first recipient (first_rcpt).
 */
bool mw_sess_stage_state(mw_session *s, mw_rl_stage stage)
{
    mw_runtime *rt = s->rt;
    s->refused = false;
    if (stage == MW_RL_MAIL)
        s->rate_limited = false;   /* a new message */
    if (!rt)
        return true;
    if (stage == MW_RL_MAIL && defers_mail(s)) {
        if ((rt->ratelimit && mw_ratelimit_has_stage(rt->ratelimit, MW_RL_MAIL)) || rep_applies(s))
            mw_sess_trace(s, "ratelimit: MAIL-stage limits and the client's reputation wait for the "
                          "first recipient (one round trip with its limits)");
        return true;
    }
    bool limits = rt->ratelimit && mw_ratelimit_has_stage(rt->ratelimit, stage);
    const char *doms[8];
    mw_rep_subjects subj = {0};
    size_t ndoms = 0;
    bool score = false;
    if (rep_applies(s)) {
        ndoms = subjects(s, &subj, doms, 8);
        score = stage != MW_RL_EOM || ndoms > 0;
    }
    if (!limits && !score)
        return true;

    mw_store_batch *b = mw_store_batch_new();
    mw_rl_facts f;
    mw_rl_ticket *lt = NULL;
    mw_rl_decision d = {.allowed = true};
    rl_facts(s, NULL, &f);
    if (score && ndoms > 0)
        f.part = MW_RL_PART_INDEPENDENT;   /* the domain score arrives with the limits */
    if (limits)
        lt = mw_ratelimit_prepare(rt->ratelimit, stage, &f, b, rl_trace, s);
    uint64_t spent = run_batch(s, b, score ? &subj : NULL, ndoms);
    if (limits) {
        mw_ratelimit_finish(rt->ratelimit, &lt, b, &d, rl_trace, s);
        if (d.allowed && !d.store_failed && d.rules_deferred > 0) {
            /* skip_reputation_above: the subjects that waited for the score */
            unsigned checked = d.rules_checked;
            mw_store_batch_reset(b);
            rl_facts(s, NULL, &f);
            f.part = MW_RL_PART_DEPENDENT;
            lt = mw_ratelimit_prepare(rt->ratelimit, stage, &f, b, rl_trace, s);
            uint64_t t1 = mw_metrics_now_ns();
            if (mw_store_batch_count(b) > 0)
                mw_store_exec(rt->store, b, NULL, 0);
            spent += mw_metrics_now_ns() - t1;
            mw_ratelimit_finish(rt->ratelimit, &lt, b, &d, rl_trace, s);
            d.rules_checked += checked;
        }
        mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_RATELIMIT, spent);
    }
    mw_store_batch_free(&b);
    return limits ? rl_decided(s, stage, &d) : true;
}

/*
 * The message's first recipient in an SMTP session: the MAIL-stage limits,
 * this recipient's limits and the client's score in one round trip.  The
 * limits are one script call (all or nothing): if any rule refuses, the
 * recipient is refused with that rule's reply and nothing is charged, so
 * the next recipient tries again (nrcpt is still 0).  A MAIL-stage refusal
 * is the message's: its bad reputation outcome is recorded once.
 */
static bool first_rcpt(mw_session *s, const char *rcpt)
{
    mw_runtime *rt = s->rt;
    bool limits = rt->ratelimit && (mw_ratelimit_has_stage(rt->ratelimit, MW_RL_MAIL) ||
                                    mw_ratelimit_has_stage(rt->ratelimit, MW_RL_RCPT));
    bool score = rep_applies(s) && !s->res.reputation_done;
    const char *doms[8];
    mw_rep_subjects subj = {0};
    if (score) {
        subjects(s, &subj, doms, 8);
        subj.ndomains = 0;   /* the client's score, as at MAIL; domains at end of message */
    }
    if (!limits && !score)
        return true;

    mw_store_batch *b = mw_store_batch_new();
    mw_rl_facts f;
    mw_rl_ticket *lt = NULL;
    mw_rl_decision d = {.allowed = true};
    rl_facts(s, rcpt, &f);
    f.with_mail = true;
    if (limits)
        lt = mw_ratelimit_prepare(rt->ratelimit, MW_RL_RCPT, &f, b, rl_trace, s);
    uint64_t spent = run_batch(s, b, score ? &subj : NULL, 0);
    if (limits) {
        mw_ratelimit_finish(rt->ratelimit, &lt, b, &d, rl_trace, s);
        mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_RATELIMIT, spent);
    }
    mw_store_batch_free(&b);
    bool was_limited = s->rate_limited;
    if (rl_decided(s, MW_RL_RCPT, &d))
        return true;
    if (d.rule_stage == MW_RL_MAIL && !was_limited)
        mw_sess_reputation_record(s, &s->verdict);   /* what a refused MAIL recorded */
    return false;
}

void mw_sess_reputation_record(mw_session *s, const mw_verdict *v)
{
    mw_runtime *rt = s->rt;
    mw_results *r = &s->res;
    if (!rep_applies(s))
        return;
    /* bad: refused by policy, rate-limited, SPF fail, DMARC fail;
     * good: DMARC pass, or aligned authentication without DMARC */
    bool bad = v->action == MW_ACTION_REJECT || s->rate_limited ||
               (r->spf.evaluated && r->spf.result == MW_SPF_FAIL) ||
               (r->dmarc_done && r->dmarc.result == MW_DMARC_FAIL);
    bool good = !bad && ((r->dmarc_done && r->dmarc.result == MW_DMARC_PASS) ||
                         (r->dmarc_done && r->dmarc.result == MW_DMARC_NONE &&
                          (r->dmarc.spf_aligned || r->dmarc.dkim_aligned)));
    mw_metric_inc(MW_M_REPUTATION_OUTCOMES, bad ? MW_ML_REP_BAD : good ? MW_ML_REP_GOOD : MW_ML_REP_NEUTRAL, 0);
    if (!bad && !good) {
        mw_sess_trace(s, "reputation: neutral outcome, not counted");
        return;
    }
    const char *doms[8];
    mw_rep_subjects subj;
    subjects(s, &subj, doms, 8);
    /* Nobody waits for the answer: sent without a round trip (store.h,
     * mw_store_send); the next command on that connection reads it. */
    mw_store_batch *b = mw_store_batch_new();
    mw_rep_ticket t;
    mw_reputation_prepare_record(rt->reputation, bad ? MW_REP_BAD : MW_REP_GOOD, &subj, b, &t);
    mw_store_status st = t.n > 0 ? mw_store_send(rt->store, b, NULL, 0) : MW_STORE_OK;
    if (st == MW_STORE_OK)
        st = mw_reputation_finish_record(rt->reputation, &t, b);
    mw_store_batch_free(&b);
    if (st != MW_STORE_OK) {
        mw_metric_inc(MW_M_REPUTATION_ERRORS, MW_ML_REPOP_RECORD, 0);
        mw_sess_trace(s, "reputation: outcome not recorded (state store)");
    }
    else
        mw_sess_trace(s, "reputation: %s outcome recorded", bad ? "bad" : "good");
}
