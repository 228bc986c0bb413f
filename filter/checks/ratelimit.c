/*
 * ratelimit.c - rate limits: rules from ratelimit.rules, GCRA buckets in the
 * state store, one store round trip per SMTP stage.
 *
 * Purpose
 *   At each stage the engine hands over what it knows (mw_rl_facts); every
 *   rule of that stage that applies (trust class, allow lists, the key's
 *   values present) becomes one bucket "rl:{SUBJECT}:RULE".  Buckets with
 *   the same subject are checked and charged by one call of the gcra script
 *   (all or nothing); the calls for different subjects go out in one
 *   pipelined batch.  The first refusing rule (in configuration order)
 *   decides the reply.
 *
 *   The batch may be shared: mw_ratelimit_prepare adds the calls to the
 *   caller's batch (the engine puts the reputation score in the same one),
 *   the caller executes it, mw_ratelimit_finish reads the answers.  Rules
 *   with skip_reputation_above need the domain reputation before they can
 *   be charged; when it is fetched in the same round trip, the subjects
 *   with such a rule wait for a second part (mw_rl_part).
 *
 * Design notes
 *   - The subject is the {hash tag}: rules on the same SASL user share a
 *     slot, so "200/h and 1000/d for a user" is one atomic script call.
 *   - Values are lower-cased (addresses and domains compare without case);
 *     IP subjects are masked (default /32, IPv6 /64) and IPv4-mapped IPv6
 *     is taken as IPv4.
 *   - Time comes from the store's clock (injectable for tests) and is
 *     passed to the script, so the memory and redis backends agree.
 *   - Store failure: redis.failure_action decides (fail open by default);
 *     failures are counted and logged at most once a minute.
 *
 * See also: ratelimit.h, store.h, scripts/redis/gcra.lua, docs/ratelimit.md.
 */
#include "ratelimit.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "strutil.h"

#define FAIL_LOG_INTERVAL_US (60ULL * 1000000ULL)
#define MAX_VALUE            320     /* longest value put into a key */

enum sel { SEL_IP, SEL_USER, SEL_SENDER, SEL_DOMAIN, SEL_RCPT };

static const char *const sel_words[] = {"ip", "sasl_user", "sender", "sender_domain", "recipient"};
static const char *const sel_tags[] = {"ip", "user", "from", "domain", "rcpt"};

struct rule {
    char          *name;
    enum sel       sel[5];
    size_t         nsel;
    char           rate[32];
    unsigned long long interval_us;
    unsigned       burst;
    bool           per_rcpt;
    mw_rl_stage    stage;
    unsigned       trust;
    bool           reject;
    char          *reply;          /* template, NULL: default */
    unsigned       v4mask, v6mask;
    mw_cidr_set   *allow_nets;     /* NULL: none */
    char         **allow_senders;
    size_t         nallow_senders;
    bool           skip_rep;       /* skip_reputation_above given */
    double         skip_rep_above;
};

struct mw_ratelimit {
    mw_store        *store;
    struct rule     *rules;
    size_t           nrules;
    mw_state_failure failure;
    atomic_ullong    checks, refused, failures, failed_open;
    pthread_mutex_t  log_mu;
    uint64_t         last_fail_log;
    unsigned long long fails_unlogged;
};

const char *mw_rl_stage_name(mw_rl_stage st)
{
    static const char *const n[] = {"connect", "mail", "rcpt", "eom"};
    return (unsigned)st < 4 ? n[st] : "?";
}

/* ---- creation ----------------------------------------------------------------- */

static unsigned trust_bits(char **words, size_t n)
{
    unsigned m = 0;

    if (words == NULL || n == 0)
        return MW_RL_TRUST_ANY;
    for (size_t i = 0; i < n; i++) {
        const char *w = words[i];
        if (strcmp(w, "inbound") == 0)            m |= MW_RL_TRUST_INBOUND;
        else if (strcmp(w, "authenticated") == 0) m |= MW_RL_TRUST_AUTHENTICATED;
        else if (strcmp(w, "internal") == 0)      m |= MW_RL_TRUST_INTERNAL;
        else if (strcmp(w, "submission") == 0)    m |= MW_RL_TRUST_SUBMISSION;
        else if (strcmp(w, "outbound") == 0)
            m |= MW_RL_TRUST_AUTHENTICATED | MW_RL_TRUST_INTERNAL | MW_RL_TRUST_SUBMISSION;
        else
            m |= MW_RL_TRUST_ANY;
    }
    return m;
}

static bool stage_parse(const char *s, mw_rl_stage *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, mw_rl_stage_name((mw_rl_stage)i)) == 0) {
            *out = (mw_rl_stage)i;
            return true;
        }
    return false;
}

static void rule_free(struct rule *r)
{
    free(r->name);
    free(r->reply);
    mw_cidr_set_free(&r->allow_nets);
    for (size_t i = 0; i < r->nallow_senders; i++)
        free(r->allow_senders[i]);
    free(r->allow_senders);
}

static bool rule_build(struct rule *r, const mw_config_ratelimit_rule *c, char *err, size_t errlen)
{
    unsigned long long n, period;

    memset(r, 0, sizeof *r);
    r->name = mw_strdup(c->name);
    if (!mw_config_parse_rate(c->rate, &n, &period, err, errlen) || c->stage == NULL ||
        !stage_parse(c->stage, &r->stage) || c->cost == NULL || c->action == NULL) {
        if (err[0] == '\0')
            snprintf(err, errlen, "ratelimit rule %s: incomplete", c->name);
        return false;
    }
    snprintf(r->rate, sizeof r->rate, "%s", c->rate);
    r->interval_us = period * 1000000ULL / n;
    if (r->interval_us == 0)
        r->interval_us = 1;
    r->burst = c->burst > 0 ? c->burst : (unsigned)n;
    r->per_rcpt = strcmp(c->cost, "recipient") == 0;
    r->reject = strcmp(c->action, "reject") == 0;
    r->trust = trust_bits(c->trust, c->ntrust);
    r->reply = mw_strdup(c->reply);
    r->v4mask = c->ipv4_mask ? c->ipv4_mask : 32;
    r->v6mask = c->ipv6_mask ? c->ipv6_mask : 64;
    for (size_t i = 0; i < c->nkey && r->nsel < 5; i++)
        for (int k = 0; k < 5; k++)
            if (strcmp(c->key[i], sel_words[k]) == 0)
                r->sel[r->nsel++] = (enum sel)k;
    if (r->nsel == 0) {
        snprintf(err, errlen, "ratelimit rule %s: no key", c->name);
        return false;
    }
    if (c->nallow_networks > 0) {
        r->allow_nets = mw_cidr_set_new();
        for (size_t i = 0; i < c->nallow_networks; i++)
            if (!mw_cidr_set_add(r->allow_nets, c->allow_networks[i], err, errlen))
                return false;
    }
    r->allow_senders = mw_calloc(c->nallow_senders + 1, sizeof *r->allow_senders);
    for (size_t i = 0; i < c->nallow_senders; i++) {
        r->allow_senders[i] = mw_strdup(c->allow_senders[i]);
        mw_str_lower(r->allow_senders[i]);
    }
    r->nallow_senders = c->nallow_senders;
    if (c->skip_reputation_above) {
        r->skip_rep = true;
        r->skip_rep_above = strtod(c->skip_reputation_above, NULL);
    }
    return true;
}

mw_ratelimit *mw_ratelimit_create(const mw_config *cfg, mw_store *store, char *err, size_t errlen)
{
    mw_ratelimit *rl = mw_calloc(1, sizeof *rl);

    err[0] = '\0';
    rl->store = store;
    rl->failure = cfg->redis_failure_action;
    rl->rules = mw_calloc(cfg->nratelimit_rules + 1, sizeof *rl->rules);
    pthread_mutex_init(&rl->log_mu, NULL);
    for (size_t i = 0; i < cfg->nratelimit_rules; i++) {
        rl->nrules++;
        if (!rule_build(&rl->rules[i], &cfg->ratelimit_rules[i], err, errlen)) {
            mw_ratelimit_destroy(&rl);
            return NULL;
        }
    }
    return rl;
}

void mw_ratelimit_destroy(mw_ratelimit **rlp)
{
    mw_ratelimit *rl = rlp != NULL ? *rlp : NULL;

    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->nrules; i++)
        rule_free(&rl->rules[i]);
    free(rl->rules);
    pthread_mutex_destroy(&rl->log_mu);
    MW_FREE(rlp);
}

bool mw_ratelimit_has_stage(const mw_ratelimit *rl, mw_rl_stage stage)
{
    if (rl == NULL)
        return false;
    for (size_t i = 0; i < rl->nrules; i++)
        if (rl->rules[i].stage == stage)
            return true;
    return false;
}

size_t mw_ratelimit_rule_count(const mw_ratelimit *rl) { return rl->nrules; }

void mw_ratelimit_stats(const mw_ratelimit *rl, mw_rl_stats *out)
{
    mw_ratelimit *m = (mw_ratelimit *)rl;   /* atomics: loads only */
    out->checks = atomic_load(&m->checks);
    out->refused = atomic_load(&m->refused);
    out->store_failures = atomic_load(&m->failures);
    out->failed_open = atomic_load(&m->failed_open);
}

/* ---- subjects ------------------------------------------------------------------ */

static void tracef(mw_rl_trace_fn fn, void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void tracef(mw_rl_trace_fn fn, void *arg, const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    if (fn == NULL)
        return;
    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    fn(arg, mw_buf_cstr(&b));
    mw_buf_free(&b);
}

static void put_lower(mw_buf *b, const char *s)
{
    size_t n = strnlen(s, MAX_VALUE);
    for (size_t i = 0; i < n; i++)
        mw_buf_putc(b, (char)tolower((unsigned char)s[i]));
}

static void put_ip(mw_buf *b, const mw_addr *client, unsigned v4mask, unsigned v6mask)
{
    mw_addr a = *client;
    char text[64];
    unsigned bits, total;

    mw_addr_unmap(&a);
    total = a.family == AF_INET ? 32 : 128;
    bits = a.family == AF_INET ? v4mask : v6mask;
    for (unsigned i = 0; i < total / 8; i++) {
        unsigned keep = bits > i * 8 ? (bits - i * 8 >= 8 ? 8 : bits - i * 8) : 0;
        a.bytes[i] &= (uint8_t)(0xff00u >> keep);
    }
    mw_addr_format(&a, text, sizeof text);
    mw_buf_puts(b, text);
    if (bits < total)
        mw_buf_printf(b, "/%u", bits);
}

static const char *nonempty(const char *s) { return s != NULL && s[0] != '\0' ? s : NULL; }

/* The bucket subject of rule r, or false with the missing value in *missing. */
static bool subject(const struct rule *r, const mw_rl_facts *f, mw_buf *out, const char **missing)
{
    const char *sender = nonempty(f->sender);

    for (size_t i = 0; i < r->nsel; i++) {
        const char *v = NULL;
        if (i > 0)
            mw_buf_putc(out, ',');
        mw_buf_printf(out, "%s=", sel_tags[r->sel[i]]);
        switch (r->sel[i]) {
        case SEL_IP:
            if (f->client == NULL) {
                *missing = "client address";
                return false;
            }
            put_ip(out, f->client, r->v4mask, r->v6mask);
            continue;
        case SEL_USER:   v = nonempty(f->sasl_user); *missing = "SASL user"; break;
        case SEL_SENDER: v = sender; *missing = "sender (null sender)"; break;
        case SEL_DOMAIN:
            v = sender != NULL && strchr(sender, '@') != NULL ? nonempty(mw_addr_domain(sender)) : NULL;
            *missing = "sender domain";
            break;
        case SEL_RCPT:   v = nonempty(f->recipient); *missing = "recipient"; break;
        }
        if (v == NULL)
            return false;
        put_lower(out, v);
    }
    *missing = NULL;
    return true;
}

static bool allow_listed(const struct rule *r, const mw_rl_facts *f, const char **why)
{
    const char *sender = nonempty(f->sender);

    if (r->allow_nets != NULL && f->client != NULL && mw_cidr_set_contains(r->allow_nets, f->client)) {
        *why = "client in allow_networks";
        return true;
    }
    if (sender == NULL || r->nallow_senders == 0)
        return false;
    const char *dom = mw_addr_domain(sender);
    for (size_t i = 0; i < r->nallow_senders; i++) {
        const char *p = r->allow_senders[i];
        if (strchr(p, '@') != NULL ? mw_glob_match(p, sender) : mw_glob_match(p, dom)) {
            *why = "sender in allow_senders";
            return true;
        }
    }
    return false;
}

/* ---- replies ---------------------------------------------------------------------- */

static void reply_build(const struct rule *r, unsigned retry, mw_rl_decision *d)
{
    const char *tpl = r->reply;
    mw_buf text = MW_BUF_INIT;
    const char *p;

    if (tpl == NULL)
        tpl = r->reject ? "550 5.7.1 rate limit exceeded (%{rule}: %{limit})"
                        : "451 4.7.1 rate limit exceeded (%{rule}: %{limit}), try again later";
    memcpy(d->rcode, tpl, 3);
    d->rcode[3] = '\0';
    p = tpl + 3;
    while (*p == ' ')
        p++;
    if (isdigit((unsigned char)p[0]) && p[1] == '.') {
        size_t n = strcspn(p, " ");
        snprintf(d->xcode, sizeof d->xcode, "%.*s", (int)(n < 9 ? n : 9), p);
        p += n;
        while (*p == ' ')
            p++;
    } else {
        snprintf(d->xcode, sizeof d->xcode, "%s", r->reject ? "5.7.1" : "4.7.1");
    }
    for (; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == '%') {
            mw_buf_putc(&text, '%');
            p++;
        } else if (strncmp(p, "%{rule}", 7) == 0) {
            mw_buf_puts(&text, r->name);
            p += 6;
        } else if (strncmp(p, "%{limit}", 8) == 0) {
            mw_buf_puts(&text, r->rate);
            p += 7;
        } else if (strncmp(p, "%{retry_after}", 14) == 0) {
            mw_buf_printf(&text, "%u", retry);
            p += 13;
        } else {
            mw_buf_putc(&text, *p);
        }
    }
    snprintf(d->text, sizeof d->text, "%s", mw_buf_cstr(&text));
    mw_buf_free(&text);
}

static void store_failed(mw_ratelimit *rl, mw_rl_stage stage, const char *why, mw_rl_decision *d,
                         mw_rl_trace_fn trace, void *targ)
{
    uint64_t now = mw_store_now_us(rl->store);
    bool open = rl->failure == MW_STATE_FAIL_ACCEPT;

    atomic_fetch_add(&rl->failures, 1);
    if (open)
        atomic_fetch_add(&rl->failed_open, 1);
    pthread_mutex_lock(&rl->log_mu);
    rl->fails_unlogged++;
    if (rl->last_fail_log == 0 || now - rl->last_fail_log >= FAIL_LOG_INTERVAL_US ||
        now < rl->last_fail_log) {
        mw_warn("ratelimit: state store failed at %s (%s): %s; %llu time%s since the last report",
                mw_rl_stage_name(stage), why, open ? "accepting (fail open)" : "tempfail (fail closed)",
                rl->fails_unlogged, rl->fails_unlogged == 1 ? "" : "s");
        rl->last_fail_log = now;
        rl->fails_unlogged = 0;
    }
    pthread_mutex_unlock(&rl->log_mu);
    d->store_failed = true;
    d->allowed = open;
    if (!open) {
        d->rule = "ratelimit-unavailable";
        snprintf(d->rcode, sizeof d->rcode, "451");
        snprintf(d->xcode, sizeof d->xcode, "4.7.1");
        snprintf(d->text, sizeof d->text, "rate limit state unavailable, try again later");
    }
    tracef(trace, targ, "ratelimit: state store failed (%s): %s", why,
           open ? "fail open, accepted" : "fail closed, 451 4.7.1");
}

/* ---- the check --------------------------------------------------------------------- */

struct entry {
    size_t  rule;          /* index into rl->rules */
    unsigned long long cost;
    bool    skip;          /* exempt by skip_reputation_above */
    char   *subject;       /* its bucket subject (owned) */
};

/* One gcra call: the rules of one subject, or (with_mail) every rule of
 * the first recipient and of MAIL, whatever their subjects. */
struct group {
    struct entry *e;       /* rl->nrules slots */
    size_t  n;
    bool    dep;           /* a rule of the group has skip_reputation_above */
    size_t  op;            /* batch operation */
};

struct mw_rl_ticket {
    mw_rl_stage   stage;
    struct group *g;       /* the groups sent, each with the rules sent */
    size_t        ng;
    unsigned      rules_checked, rules_deferred;
};

static void group_clear(struct group *x)
{
    for (size_t j = 0; j < x->n; j++)
        free(x->e[j].subject);
    free(x->e);
    x->e = NULL;
    x->n = 0;
}

static void groups_free(struct group *g, size_t ng)
{
    for (size_t k = 0; k < ng; k++)
        group_clear(&g[k]);
    free(g);
}

/* The batch operation of group x: one gcra call, arguments built in one
 * buffer (no allocation per number). */
static size_t group_send(const mw_ratelimit *rl, const struct group *x, uint64_t now,
                         bool multi, mw_store_batch *b)
{
    const char **keys = mw_calloc(x->n + 1, sizeof *keys);
    const char **args = mw_calloc(1 + 3 * x->n, sizeof *args);
    char *nums = mw_calloc(1 + 3 * x->n, 24);
    mw_buf kb = MW_BUF_INIT;
    size_t *koff = mw_calloc(x->n + 1, sizeof *koff), na = 0, op;

#define NUM(fmt, v) (snprintf(nums + 24 * na, 24, fmt, v), args[na] = nums + 24 * na, na++)
    NUM("%llu", (unsigned long long)now);
    for (size_t j = 0; j < x->n; j++) {
        const struct rule *r = &rl->rules[x->e[j].rule];
        koff[j] = kb.len;
        mw_ratelimit_bucket_key(&kb, r->name, x->e[j].subject);
        mw_buf_putc(&kb, '\0');
        NUM("%llu", r->interval_us);
        NUM("%u", r->burst);
        NUM("%llu", x->e[j].cost);
    }
#undef NUM
    for (size_t j = 0; j < x->n; j++)
        keys[j] = kb.data + koff[j];
    op = multi ? mw_store_batch_script_multi(b, "gcra", keys, x->n, args, na)
               : mw_store_batch_script(b, "gcra", keys, x->n, args, na);
    mw_buf_free(&kb);
    free(koff);
    free(nums);
    free(args);
    free(keys);
    return op;
}

mw_rl_ticket *mw_ratelimit_prepare(mw_ratelimit *rl, mw_rl_stage stage, const mw_rl_facts *f,
                                   mw_store_batch *b, mw_rl_trace_fn trace, void *targ)
{
    mw_rl_ticket *t = mw_calloc(1, sizeof *t);
    struct group *g = mw_calloc(rl->nrules + 1, sizeof *g);
    size_t ng = 0, nsend = 0;
    /* The dependent part sees the same rules again: their "not applied"
     * lines were traced by the independent part. */
    mw_rl_trace_fn tr = f->part == MW_RL_PART_DEPENDENT ? NULL : trace;
    /* The first recipient also charges the MAIL-stage rules, in one call. */
    bool with_mail = f->with_mail && stage == MW_RL_RCPT;
    uint64_t now;

    t->stage = stage;
    for (size_t i = 0; i < rl->nrules; i++) {
        const struct rule *r = &rl->rules[i];
        const char *missing = NULL, *allow = NULL;
        mw_buf subj = MW_BUF_INIT;
        unsigned long long cost = 1;

        if (r->stage != stage && !(with_mail && r->stage == MW_RL_MAIL))
            continue;
        if (!(r->trust & f->trust)) {
            tracef(tr, targ, "ratelimit %s: not for this trust class", r->name);
            continue;
        }
        if (allow_listed(r, f, &allow)) {
            tracef(tr, targ, "ratelimit %s: not applied (%s)", r->name, allow);
            continue;
        }
        if (r->per_rcpt && stage == MW_RL_EOM)
            cost = f->nrcpt;
        if (cost == 0) {
            tracef(tr, targ, "ratelimit %s: no recipients, nothing to charge", r->name);
            continue;
        }
        if (!subject(r, f, &subj, &missing)) {
            tracef(tr, targ, "ratelimit %s: not applied (no %s)", r->name, missing);
            mw_buf_free(&subj);
            continue;
        }
        size_t k = 0;
        if (!with_mail)
            while (k < ng && strcmp(g[k].e[0].subject, mw_buf_cstr(&subj)) != 0)
                k++;
        if (k == ng) {
            g[ng].e = mw_calloc(rl->nrules, sizeof *g[ng].e);
            ng++;
        }
        struct entry *en = &g[k].e[g[k].n++];
        g[k].dep = g[k].dep || r->skip_rep;
        en->skip = r->skip_rep && f->part != MW_RL_PART_INDEPENDENT && f->rep_domain_known &&
                   f->rep_domain_score > r->skip_rep_above;
        en->cost = cost;
        en->rule = i;
        en->subject = mw_buf_steal(&subj);
        mw_buf_free(&subj);
    }

    /* The part asked for; exempt rules leave their group (the others of
     * the group are still checked together). */
    for (size_t k = 0; k < ng; k++) {
        struct group *x = &g[k];
        bool send = f->part == MW_RL_PART_ALL || (f->part == MW_RL_PART_DEPENDENT) == x->dep;
        size_t m = 0;

        if (!send) {
            if (x->dep) {
                t->rules_deferred += (unsigned)x->n;
                tracef(trace, targ, "ratelimit: %zu rule%s on one subject checked after the domain "
                       "reputation (skip_reputation_above)", x->n, x->n == 1 ? "" : "s");
            }
            group_clear(x);
            continue;
        }
        for (size_t j = 0; j < x->n; j++) {
            if (x->e[j].skip) {
                tracef(trace, targ, "ratelimit %s: not applied (authenticated domain reputation "
                       "above skip_reputation_above)", rl->rules[x->e[j].rule].name);
                free(x->e[j].subject);
                continue;
            }
            x->e[m++] = x->e[j];
        }
        x->n = m;
        if (m == 0) {
            group_clear(x);
            continue;
        }
        if (nsend != k)
            g[nsend] = *x;
        nsend++;
    }
    t->g = g;
    t->ng = nsend;
    if (nsend == 0)
        return t;

    /* One gcra call per subject (with_mail: one call in all), all in the
     * caller's batch (one round trip). */
    now = mw_store_now_us(rl->store);
    for (size_t k = 0; k < nsend; k++) {
        g[k].op = group_send(rl, &g[k], now, with_mail, b);
        t->rules_checked += (unsigned)g[k].n;
    }
    if (with_mail)
        tracef(trace, targ, "ratelimit: first recipient: its rules and the MAIL-stage rules in one "
               "call (all or nothing)");
    atomic_fetch_add(&rl->checks, 1);
    return t;
}

void mw_ratelimit_finish(mw_ratelimit *rl, mw_rl_ticket **tp, const mw_store_batch *b,
                         mw_rl_decision *d, mw_rl_trace_fn trace, void *targ)
{
    mw_rl_ticket *t = tp != NULL ? *tp : NULL;
    struct group *g;
    char why[256];

    memset(d, 0, sizeof *d);
    d->allowed = true;
    if (t == NULL)
        return;
    *tp = NULL;
    g = t->g;
    d->rules_checked = t->rules_checked;
    d->rules_deferred = t->rules_deferred;
    for (size_t k = 0; k < t->ng; k++) {
        const mw_store_value *v = mw_store_batch_result(b, g[k].op);
        mw_store_status st = mw_store_batch_status(b, g[k].op);
        if (st == MW_STORE_TEMPFAIL) {
            const char *e = mw_store_batch_error(b, g[k].op);
            snprintf(why, sizeof why, "%s", e[0] != '\0' ? e : "state store unavailable");
            store_failed(rl, t->stage, why, d, trace, targ);
            goto out;
        }
        if (st != MW_STORE_OK || v->type != MW_STORE_ARRAY || v->nelem != 4 * g[k].n) {
            snprintf(why, sizeof why, "gcra: %s", st == MW_STORE_OK ? "unexpected reply" : "failed");
            store_failed(rl, t->stage, why, d, trace, targ);
            goto out;
        }
    }

    /* Decide: the first refusing rule in configuration order. */
    size_t best = (size_t)-1;
    long long best_retry = 0;
    for (size_t k = 0; k < t->ng; k++) {
        const mw_store_value *v = mw_store_batch_result(b, g[k].op);
        for (size_t j = 0; j < g[k].n; j++) {
            const struct entry *en = &g[k].e[j];
            const struct rule *r = &rl->rules[en->rule];
            long long ok = v->elem[4 * j].integer, rem = v->elem[4 * j + 1].integer,
                      retry = v->elem[4 * j + 2].integer, reset = v->elem[4 * j + 3].integer;
            if (trace != NULL) {
                mw_buf ps = MW_BUF_INIT;
                mw_str_printable(&ps, en->subject, strlen(en->subject), 120);
                if (ok)
                    tracef(trace, targ, "ratelimit %s: %s cost %llu: allowed, %lld left (%s, burst "
                           "%u; full in %lld s)", r->name, mw_buf_cstr(&ps), en->cost, rem, r->rate,
                           r->burst, (reset + 999) / 1000);
                else if (retry < 0)
                    tracef(trace, targ, "ratelimit %s: %s cost %llu: refused, more than the burst "
                           "%u (%s)", r->name, mw_buf_cstr(&ps), en->cost, r->burst, r->rate);
                else
                    tracef(trace, targ, "ratelimit %s: %s cost %llu: refused, %lld left (%s, burst "
                           "%u); retry in %lld s", r->name, mw_buf_cstr(&ps), en->cost, rem,
                           r->rate, r->burst, (retry + 999) / 1000);
                mw_buf_free(&ps);
            }
            if (!ok && (best == (size_t)-1 || en->rule < best)) {
                best = en->rule;
                best_retry = retry;
            }
        }
    }
    if (best != (size_t)-1) {
        const struct rule *r = &rl->rules[best];
        d->allowed = false;
        d->rule = r->name;
        d->rule_stage = r->stage;
        d->retry_after = best_retry > 0 ? (unsigned)((best_retry + 999) / 1000) : 0;
        reply_build(r, d->retry_after, d);
        atomic_fetch_add(&rl->refused, 1);
    }
out:
    groups_free(t->g, t->ng);
    free(t);
}

void mw_ratelimit_check(mw_ratelimit *rl, mw_rl_stage stage, const mw_rl_facts *f,
                        mw_rl_decision *d, mw_rl_trace_fn trace, void *targ)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_rl_ticket *t = mw_ratelimit_prepare(rl, stage, f, b, trace, targ);

    if (mw_store_batch_count(b) > 0)
        mw_store_exec(rl->store, b, NULL, 0);
    mw_ratelimit_finish(rl, &t, b, d, trace, targ);
    mw_store_batch_free(&b);
}

/* ---- inspection ------------------------------------------------------------------------ */

void mw_ratelimit_bucket_key(mw_buf *out, const char *rule, const char *subject)
{
    mw_buf_printf(out, "rl:{%s}:%s", subject, rule);
}

static bool key_parse(const char *key, mw_rl_bucket *out)
{
    const char *end = strrchr(key, ':');

    if (strncmp(key, "rl:{", 4) != 0 || end == NULL || end < key + 5 || end[-1] != '}' ||
        end[1] == '\0')
        return false;
    snprintf(out->rule, sizeof out->rule, "%s", end + 1);
    snprintf(out->subject, sizeof out->subject, "%.*s", (int)(end - 1 - (key + 4)), key + 4);
    return true;
}

mw_store_status mw_ratelimit_inspect(mw_ratelimit *rl, const char *key, mw_rl_bucket *out,
                                     char *why, size_t whylen)
{
    const struct rule *r = NULL;
    mw_store_batch *b;
    mw_store_status st;
    long long tat = 0;

    memset(out, 0, sizeof *out);
    out->remaining = -1;
    if (!key_parse(key, out)) {
        snprintf(why, whylen, "not a rate-limit bucket key (rl:{SUBJECT}:RULE)");
        return MW_STORE_ERROR;
    }
    for (size_t i = 0; i < rl->nrules; i++)
        if (strcmp(rl->rules[i].name, out->rule) == 0)
            r = &rl->rules[i];
    b = mw_store_batch_new();
    mw_store_batch_get(b, key, strlen(key));
    st = mw_store_exec(rl->store, b, why, whylen);
    if (st == MW_STORE_OK)
        st = mw_store_batch_status(b, 0);
    if (st == MW_STORE_OK) {
        const mw_store_value *v = mw_store_batch_result(b, 0);
        char *end = NULL;
        tat = v->type == MW_STORE_STR ? strtoll(v->str, &end, 10) : 0;
        if (end == NULL || *end != '\0') {
            snprintf(why, whylen, "the key does not hold a TAT");
            st = MW_STORE_ERROR;
        }
    }
    mw_store_batch_free(&b);
    if (st != MW_STORE_OK && st != MW_STORE_NOTFOUND)
        return st;
    out->tat_us = (unsigned long long)(tat > 0 ? tat : 0);
    if (r != NULL) {
        long long now = (long long)mw_store_now_us(rl->store), iv = (long long)r->interval_us;
        long long used = tat > now ? tat - now : 0;
        out->configured = true;
        snprintf(out->rate, sizeof out->rate, "%s", r->rate);
        out->burst = r->burst;
        out->remaining = ((long long)r->burst * iv - used) / iv;
        if (out->remaining < 0)
            out->remaining = 0;
        out->reset_ms = (used + 999) / 1000;
    }
    return st;
}

mw_store_status mw_ratelimit_reset(mw_ratelimit *rl, const char *key, char *why, size_t whylen)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_store_status st;

    mw_store_batch_del(b, key, strlen(key));
    st = mw_store_exec(rl->store, b, why, whylen);
    if (st == MW_STORE_OK) {
        const mw_store_value *v = mw_store_batch_result(b, 0);
        st = mw_store_batch_status(b, 0);
        if (st == MW_STORE_OK && v->type == MW_STORE_INT && v->integer == 0)
            st = MW_STORE_NOTFOUND;
    }
    mw_store_batch_free(&b);
    return st;
}
