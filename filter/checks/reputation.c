/*
 * reputation.c - good/bad outcome counts per subject in decaying time
 * buckets, and a score from them.
 *
 * Purpose
 *   record(): one "reputation" script call per subject (HINCRBY of the
 *   current bucket's good or bad field, TTL = the window, old buckets
 *   pruned when the hash outgrows the window), all in one pipelined batch.
 *   score(): one HGETALL per subject, one batch; the decay is computed here.
 *   Both exist in two halves (prepare adds the operations to a batch the
 *   caller may share with other modules, finish reads the answers after the
 *   caller's single exec), and record's batch may be sent without waiting.
 *
 * Design notes
 *   - Buckets rather than one exponentially decayed pair: the stored data
 *     stay plain integers (inspectable, exact, the same in both backends),
 *     the half-life can change without rewriting state, and the window
 *     drops old outcomes completely.
 *   - The bucket number is floor(now / bucket width) by the store's clock.
 *   - Subject keys: "rep:{ip=ADDR}", "rep:{net=ADDR/LEN}", "rep:{dom=NAME}".
 *
 * See also: reputation.h, store.h, scripts/redis/reputation.lua.
 */
#include "reputation.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "alloc.h"
#include "buf.h"
#include "strutil.h"

struct mw_reputation {
    mw_store *store;
    unsigned  window_s, bucket_s, half_life_s, min_samples;
    unsigned  v4prefix, v6prefix;
};

enum { SUBJ_IP, SUBJ_NET, SUBJ_DOM };

mw_reputation *mw_reputation_create(const mw_config *cfg, mw_store *store)
{
    mw_reputation *rep;

    if (!cfg->reputation_enabled)
        return NULL;
    rep = mw_calloc(1, sizeof *rep);
    rep->store = store;
    rep->window_s = cfg->reputation_window_s;
    rep->bucket_s = cfg->reputation_bucket_s > 0 ? cfg->reputation_bucket_s : 3600;
    rep->half_life_s = cfg->reputation_half_life_s > 0 ? cfg->reputation_half_life_s : 86400;
    rep->min_samples = cfg->reputation_min_samples;
    rep->v4prefix = cfg->reputation_ipv4_prefix;
    rep->v6prefix = cfg->reputation_ipv6_prefix;
    return rep;
}

void mw_reputation_destroy(mw_reputation **rep)
{
    if (rep != NULL)
        MW_FREE(rep);
}

unsigned mw_reputation_min_samples(const mw_reputation *rep) { return rep->min_samples; }

/* ---- subjects ------------------------------------------------------------------ */

struct subject {
    int  kind;
    char key[400];
};

static void addr_key(char *out, size_t len, const char *kind, const mw_addr *client,
                     unsigned prefix)
{
    mw_addr a = *client;
    unsigned total;
    char text[64];

    mw_addr_unmap(&a);
    total = a.family == AF_INET ? 32 : 128;
    if (prefix > total)
        prefix = total;
    for (unsigned i = 0; i < total / 8; i++) {
        unsigned keep = prefix > i * 8 ? (prefix - i * 8 >= 8 ? 8 : prefix - i * 8) : 0;
        a.bytes[i] &= (uint8_t)(0xff00u >> keep);
    }
    mw_addr_format(&a, text, sizeof text);
    if (prefix < total)
        snprintf(out, len, "rep:{%s=%s/%u}", kind, text, prefix);
    else
        snprintf(out, len, "rep:{%s=%s}", kind, text);
}

static size_t subjects(const mw_reputation *rep, const mw_rep_subjects *s, struct subject *out)
{
    size_t n = 0;

    if (s->client != NULL) {
        mw_addr a = *s->client;
        mw_addr_unmap(&a);
        out[n].kind = SUBJ_IP;
        addr_key(out[n++].key, sizeof out[0].key, "ip", &a, 128);
        out[n].kind = SUBJ_NET;
        addr_key(out[n++].key, sizeof out[0].key, "net", &a,
                 a.family == AF_INET ? rep->v4prefix : rep->v6prefix);
    }
    for (size_t i = 0; i < s->ndomains && i < MW_REP_MAX_DOMAINS; i++) {
        const char *d = s->domains[i];
        char key[400];
        bool dup = false;
        size_t len;

        if (d == NULL || d[0] == '\0' || strlen(d) > 253)
            continue;
        snprintf(key, sizeof key, "rep:{dom=%s", d);
        len = strlen(key);
        if (len > 0 && key[len - 1] == '.')   /* "example.com." = "example.com" */
            key[--len] = '\0';
        snprintf(key + len, sizeof key - len, "}");
        mw_str_lower(key);
        for (size_t j = 0; j < n; j++)
            dup = dup || strcmp(out[j].key, key) == 0;
        if (dup)
            continue;
        out[n].kind = SUBJ_DOM;
        snprintf(out[n++].key, sizeof out[0].key, "%s", key);
    }
    return n;
}

/* ---- record ------------------------------------------------------------------------ */

static void ticket_init(mw_rep_ticket *t, const mw_store_batch *b, const struct subject *subj,
                        size_t n, unsigned long long now_s)
{
    memset(t, 0, sizeof *t);
    t->first = mw_store_batch_count(b);
    t->n = n;
    t->now_s = now_s;
    for (size_t i = 0; i < n; i++)
        t->kind[i] = (unsigned char)subj[i].kind;
}

void mw_reputation_prepare_record(mw_reputation *rep, mw_rep_outcome outcome,
                                  const mw_rep_subjects *s, mw_store_batch *b, mw_rep_ticket *t)
{
    struct subject subj[2 + MW_REP_MAX_DOMAINS];
    size_t n = subjects(rep, s, subj);
    unsigned long long now_s = mw_store_now_us(rep->store) / 1000000u;
    unsigned long long bucket = now_s / rep->bucket_s;
    unsigned long long nbuckets = rep->window_s / rep->bucket_s + 1;
    char field[48], ttl[24], oldest[24], maxf[24];

    ticket_init(t, b, subj, n, now_s);
    snprintf(field, sizeof field, "%llu:%c", bucket, outcome == MW_REP_GOOD ? 'g' : 'b');
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)rep->window_s * 1000u);
    snprintf(oldest, sizeof oldest, "%llu", bucket >= nbuckets ? bucket - nbuckets + 1 : 0);
    snprintf(maxf, sizeof maxf, "%llu", 2 * nbuckets + 2);
    for (size_t i = 0; i < n; i++) {
        const char *keys[] = {subj[i].key};
        const char *args[] = {field, "1", ttl, oldest, maxf};
        mw_store_batch_script(b, "reputation", keys, 1, args, 5);
    }
}

mw_store_status mw_reputation_finish_record(mw_reputation *rep, const mw_rep_ticket *t,
                                            const mw_store_batch *b)
{
    (void)rep;
    for (size_t i = 0; i < t->n; i++)
        if (mw_store_batch_status(b, t->first + i) != MW_STORE_OK)
            return mw_store_batch_status(b, t->first + i);
    return MW_STORE_OK;
}

mw_store_status mw_reputation_record(mw_reputation *rep, mw_rep_outcome outcome,
                                     const mw_rep_subjects *s)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_store_status st = MW_STORE_OK;
    mw_rep_ticket t;

    mw_reputation_prepare_record(rep, outcome, s, b, &t);
    if (t.n > 0) {
        mw_store_exec(rep->store, b, NULL, 0);
        st = mw_reputation_finish_record(rep, &t, b);
    }
    mw_store_batch_free(&b);
    return st;
}

/* ---- score ------------------------------------------------------------------------- */

/* 0.5^t for t >= 0, without libm: halve for the whole part, a Taylor series
 * of e^(-f ln 2) for the fraction (|f ln 2| < 0.7: 14 terms are exact to
 * double precision). */
static double half_pow(double t)
{
    double r = 1.0, term = 1.0, y, sum = 1.0;

    if (t > 2000)
        return 0.0;
    while (t >= 1.0) {
        r *= 0.5;
        t -= 1.0;
    }
    y = -t * 0.69314718055994530942;
    for (int i = 1; i < 15; i++) {
        term *= y / i;
        sum += term;
    }
    return r * sum;
}

static void score_add(const mw_reputation *rep, const mw_store_value *v, unsigned long long now_s,
                      mw_rep_score *sc)
{
    unsigned long long bucket = now_s / rep->bucket_s;
    unsigned long long nbuckets = rep->window_s / rep->bucket_s + 1;

    if (v->type != MW_STORE_ARRAY)
        return;
    for (size_t i = 0; i + 1 < v->nelem; i += 2) {
        const mw_store_value *f = &v->elem[i], *c = &v->elem[i + 1];
        unsigned long long b;
        char kind, *end;
        long long cnt;

        if (f->type != MW_STORE_STR || c->type != MW_STORE_STR)
            continue;
        b = strtoull(f->str, &end, 10);
        if (end == f->str || end[0] != ':' || (end[1] != 'g' && end[1] != 'b') || end[2] != '\0')
            continue;
        kind = end[1];
        cnt = strtoll(c->str, NULL, 10);
        if (cnt <= 0 || b > bucket || bucket - b >= nbuckets)
            continue;
        /* Age from the middle of the bucket (the current one: half its
         * elapsed part) to now. */
        double mid = ((double)b + 0.5) * rep->bucket_s;
        double age = (double)now_s > mid ? (double)now_s - mid : 0.0;
        double w = half_pow(age / rep->half_life_s) * (double)cnt;
        if (kind == 'g')
            sc->good += w;
        else
            sc->bad += w;
        sc->samples += (unsigned)(cnt > 1000000000 ? 1000000000 : cnt);
    }
}

static void score_finish(const mw_reputation *rep, mw_rep_score *sc)
{
    double t = sc->good + sc->bad;
    sc->score = t > 0 ? (sc->good - sc->bad) / t : 0.0;
    sc->known = sc->samples >= rep->min_samples;
}

void mw_reputation_prepare_score(mw_reputation *rep, const mw_rep_subjects *s, mw_store_batch *b,
                                 mw_rep_ticket *t)
{
    struct subject subj[2 + MW_REP_MAX_DOMAINS];
    size_t n = subjects(rep, s, subj);

    ticket_init(t, b, subj, n, mw_store_now_us(rep->store) / 1000000u);
    for (size_t i = 0; i < n; i++)
        mw_store_batch_hgetall(b, subj[i].key, strlen(subj[i].key));
}

mw_store_status mw_reputation_finish_score(mw_reputation *rep, const mw_rep_ticket *t,
                                           const mw_store_batch *b, mw_rep_result *out)
{
    mw_store_status st = MW_STORE_OK;

    memset(out, 0, sizeof *out);
    if (t->n == 0)
        return MW_STORE_OK;          /* no subjects: every score unknown */
    for (size_t i = 0; i < t->n && st == MW_STORE_OK; i++) {
        mw_store_status os = mw_store_batch_status(b, t->first + i);
        if (os != MW_STORE_OK && os != MW_STORE_NOTFOUND)
            st = os;
    }
    if (st == MW_STORE_OK) {
        for (size_t i = 0; i < t->n; i++) {
            mw_rep_score *sc = t->kind[i] == SUBJ_IP ? &out->ip
                             : t->kind[i] == SUBJ_NET ? &out->net : &out->domain;
            score_add(rep, mw_store_batch_result(b, t->first + i), t->now_s, sc);
        }
    }
    score_finish(rep, &out->ip);
    score_finish(rep, &out->net);
    score_finish(rep, &out->domain);
    if (st != MW_STORE_OK)
        out->ip.known = out->net.known = out->domain.known = false;
    return st;
}

mw_store_status mw_reputation_score(mw_reputation *rep, const mw_rep_subjects *s, mw_rep_result *out)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_rep_ticket t;
    mw_store_status st;

    mw_reputation_prepare_score(rep, s, b, &t);
    if (t.n > 0)
        mw_store_exec(rep->store, b, NULL, 0);
    st = mw_reputation_finish_score(rep, &t, b, out);
    mw_store_batch_free(&b);
    return st;
}

static void fmt_one(mw_buf *out, const char *name, const mw_rep_score *s)
{
    if (s->known)
        mw_buf_printf(out, "%s %.2f (%u samples)", name, s->score, s->samples);
    else
        mw_buf_printf(out, "%s unknown (%u samples)", name, s->samples);
}

void mw_reputation_format(const mw_rep_result *r, mw_buf *out)
{
    mw_buf_puts(out, "reputation: ");
    fmt_one(out, "ip", &r->ip);
    mw_buf_puts(out, ", ");
    fmt_one(out, "net", &r->net);
    mw_buf_puts(out, ", ");
    fmt_one(out, "domain", &r->domain);
}
