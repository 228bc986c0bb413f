/*
 * dns.c - the resolver (dns.h) on libunbound.
 *
 * Purpose
 *      One caching libunbound context shared by every thread, with a
 *      deadline per query that libunbound itself does not offer (its
 *      blocking ub_resolve() waits ~17 s on a silent server).
 *
 * Design
 *      Queries go through ub_resolve_async().  libunbound runs its own
 *      background thread for the network work (ub_ctx_async(ctx, 1): a
 *      thread, not a forked process, which would be wrong in a threaded
 *      daemon) and hands finished answers back over a pipe, ub_fd().  A
 *      "pump" thread of ours polls that pipe and calls ub_process(), which
 *      runs our callback.  The callback stores the result in the caller's
 *      query record and signals its condition variable; the caller waits
 *      with pthread_cond_timedwait() on CLOCK_MONOTONIC until its deadline.
 *
 *      Cancel/callback race: libunbound picks up the callback pointer of
 *      an answered query under its own lock, and ub_cancel() marks a query
 *      cancelled under the same lock, so exactly one of these holds:
 *        - ub_cancel() returns UB_NOERROR: the callback will never run;
 *          the waiter frees the query record;
 *        - ub_cancel() returns UB_NOID: the callback has run or is about
 *          to run; the waiter marks the record "abandoned" (under dns->lock)
 *          before cancelling, and the callback frees an abandoned record.
 *      The waiter never touches the record after a failed cancel, and the
 *      callback never touches it after signalling a live waiter.
 *
 *      libunbound's built-in local zones (localhost., test., invalid.,
 *      onion., 127.in-addr.arpa., the RFC 6303/AS112 reverse zones, ...) are
 *      switched off (empty transparent zones of our own, and
 *      "unblock-lan-zones: yes") so that whatever the forwarder serves is
 *      resolved: the test suites publish records under .test and
 *      127.in-addr.arpa.
 *
 * Classification (see dns.h): NOERROR with data -> OK, NOERROR without ->
 * NODATA, NXDOMAIN -> NXDOMAIN, SERVFAIL/timeouts/library errors ->
 * TEMPFAIL, REFUSED/FORMERR/NOTIMP/DNSSEC bogus/invalid names -> PERMFAIL.
 * Other rcodes are treated as TEMPFAIL (no permanent decision on an
 * answer we do not understand).  When no DNS reply was received (timeout,
 * invalid name, library error) answer->rcode is -1.
 *
 * Answer cache (dns_cache.h): with cache_size > 0, mw_dns_query() first asks
 * the cache (after the name check) and stores what libunbound answered
 * (OK/NXDOMAIN/NODATA with a TTL, never failures or bogus answers).  A hit
 * never touches libunbound, its thread or our pump.  Cache hits are counted
 * in mailwarden_dns_queries_total and the latency histogram like any answer,
 * and in mailwarden_dns_cache_{hits,misses}_total.
 *
 * Diagnostics: reasons go into answer->why; nothing is logged here except a
 * failing pump (which would stall every query).
 *
 * See also: dns.h, libunbound(3), tests/unit/test_core_dns.c,
 * tests/lib/testdns.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <unbound.h>

#include "alloc.h"
#include "metrics.h"
#include "buf.h"
#include "dns.h"
#include "dns_cache.h"
#include "log.h"

#define DNS_DEFAULT_TIMEOUT_MS 5000u
#define DNS_NAME_MAX           253     /* presentation form, no trailing dot */
#define DNS_LABEL_MAX          63

struct mw_dns {
    struct ub_ctx  *ctx;
    unsigned        timeout_ms;
    pthread_mutex_t lock;        /* guards every dns_query's done/abandoned/result */
    pthread_t       pump;
    int             wake[2];     /* pipe: a byte (or EOF) stops the pump */
    mw_dns_cache   *cache;       /* NULL: no cache */
    atomic_ullong   upstream;    /* ub_resolve_async() calls */
};

/* One outstanding query, shared by the waiting caller and the callback. */
typedef struct dns_query {
    mw_dns           *dns;
    pthread_cond_t    cond;      /* signalled when done, with dns->lock held */
    bool              done;
    bool              abandoned; /* the waiter gave up: the callback frees */
    int               err;       /* libunbound error code, 0 if res is valid */
    struct ub_result *res;
} dns_query;

/* Zones libunbound answers itself unless overridden (RFC 6303, 6761, 7686,
 * 8375); the AS112 reverse zones go with "unblock-lan-zones". */
static const char *const default_zones[] = {
    "localhost.", "127.in-addr.arpa.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "onion.", "test.", "invalid.", "home.arpa.", "resolver.arpa.", "service.arpa.",
    NULL
};

const char *mw_dns_status_name(mw_dns_status s)
{
    switch (s) {
    case MW_DNS_OK:       return "ok";
    case MW_DNS_NXDOMAIN: return "nxdomain";
    case MW_DNS_NODATA:   return "nodata";
    case MW_DNS_TEMPFAIL: return "tempfail";
    case MW_DNS_PERMFAIL: return "permfail";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------ */
/* creation and destruction                                                 */

static void *dns_pump(void *arg)
{
    mw_dns *dns = arg;
    struct pollfd pfd[2];
    unsigned failures = 0;

    for (;;) {
        pfd[0].fd = ub_fd(dns->ctx);
        pfd[0].events = POLLIN;
        pfd[1].fd = dns->wake[0];
        pfd[1].events = POLLIN;
        pfd[0].revents = pfd[1].revents = 0;
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            mw_error_errno("dns: poll");
            usleep(100000);
            continue;
        }
        if (pfd[1].revents)
            break;
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int r = ub_process(dns->ctx);
            if (r != 0) {
                /* The background worker is gone: every query will time
                 * out.  Say so (rarely) and do not spin. */
                if (failures++ % 100 == 0)
                    mw_error("dns: resolver pipe failed: %s", ub_strerror(r));
                usleep(100000);
            }
        }
    }
    return NULL;
}

static bool ub_opt(struct ub_ctx *ctx, const char *opt, const char *val, char *err, size_t errlen)
{
    int r = ub_ctx_set_option(ctx, opt, val);
    if (r != 0) {
        snprintf(err, errlen, "resolver option %s %s: %s", opt, val, ub_strerror(r));
        return false;
    }
    return true;
}

static bool dns_configure(struct ub_ctx *ctx, const mw_dns_options *opt, char *err, size_t errlen)
{
    int r;

    if ((r = ub_ctx_async(ctx, 1)) != 0) {
        snprintf(err, errlen, "resolver threads: %s", ub_strerror(r));
        return false;
    }
    /* Forwarders and test servers on loopback are normal here. */
    if (!ub_opt(ctx, "do-not-query-localhost:", "no", err, errlen))
        return false;
    /*
     * Resolve what the servers say, not libunbound's built-in answers.  An
     * empty "transparent" zone of our own keeps the built-in one out and
     * passes every query on.  ("local-zone: NAME nodefault" would be the
     * documented way, but through ub_ctx_set_option() libunbound 1.17
     * stores the whole "NAME nodefault" string as the zone name, so it
     * never matches.)
     */
    for (const char *const *z = default_zones; *z; z++) {
        char v[128];
        snprintf(v, sizeof v, "%s transparent", *z);
        if (!ub_opt(ctx, "local-zone:", v, err, errlen))
            return false;
    }
    if (!ub_opt(ctx, "unblock-lan-zones:", "yes", err, errlen) ||
        !ub_opt(ctx, "insecure-lan-zones:", "yes", err, errlen))
        return false;
    /*
     * A server marked down after timeouts is still probed, not skipped
     * until infra-host-ttl expires.  Known limit: libunbound keeps working
     * on a query we cancelled, and each of its timeouts raises the
     * server's retransmit timer (shared by all names on that server), so a
     * burst of names the forwarder never answers slows the others down for
     * a while (measured: ~60 silent queries -> later answers up to ~1-3 s).
     * Lowering infra-cache-max-rtt or raising infra-cache-min-rtt made it
     * worse (the forwarder got declared down: instant SERVFAILs).
     */
    if (!ub_opt(ctx, "infra-keep-probing:", "yes", err, errlen))
        return false;
    if (opt->use_tcp && !ub_opt(ctx, "tcp-upstream:", "yes", err, errlen))
        return false;

    for (size_t i = 0; opt->forwarders && i < opt->nforwarders; i++) {
        const char *f = opt->forwarders[i];
        if (!f || !*f || (r = ub_ctx_set_fwd(ctx, f)) != 0) {
            snprintf(err, errlen, "bad DNS forwarder \"%s\": %s", f ? f : "",
                     f && *f ? ub_strerror(r) : "empty");
            return false;
        }
    }
    if ((!opt->forwarders || opt->nforwarders == 0) && opt->resolv_conf) {
        if ((r = ub_ctx_resolvconf(ctx, NULL)) != 0) {
            snprintf(err, errlen, "/etc/resolv.conf: %s", ub_strerror(r));
            return false;
        }
    }
    if (opt->trust_anchor_file && *opt->trust_anchor_file) {
        if (access(opt->trust_anchor_file, R_OK) != 0) {
            snprintf(err, errlen, "trust anchor %s: %s", opt->trust_anchor_file, strerror(errno));
            return false;
        }
        if ((r = ub_ctx_add_ta_autr(ctx, opt->trust_anchor_file)) != 0) {
            snprintf(err, errlen, "trust anchor %s: %s", opt->trust_anchor_file, ub_strerror(r));
            return false;
        }
    }
    /*
     * Finalize now, so configuration errors surface at start-up rather
     * than on the first query.  Every local-data call finalizes the
     * context; removing data that does not exist has no other effect.
     */
    if ((r = ub_ctx_data_remove(ctx, "mailwarden.invalid.")) != 0) {
        snprintf(err, errlen, "resolver set-up: %s", ub_strerror(r));
        return false;
    }
    return true;
}

mw_dns *mw_dns_create(const mw_dns_options *opt, char *err, size_t errlen)
{
    static const mw_dns_options defaults = { 0 };
    char scratch[256];
    mw_dns *dns;
    int r;

    if (!err || !errlen) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (!opt)
        opt = &defaults;

    dns = mw_calloc(1, sizeof *dns);
    dns->timeout_ms = opt->timeout_ms ? opt->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
    dns->wake[0] = dns->wake[1] = -1;
    atomic_init(&dns->upstream, 0);
    dns->ctx = ub_ctx_create();
    if (!dns->ctx) {
        snprintf(err, errlen, "cannot create resolver context");
        goto fail;
    }
    if (!dns_configure(dns->ctx, opt, err, errlen))
        goto fail;
    if (pipe2(dns->wake, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&dns->lock, NULL);
    if ((r = pthread_create(&dns->pump, NULL, dns_pump, dns)) != 0) {
        snprintf(err, errlen, "resolver thread: %s", strerror(r));
        pthread_mutex_destroy(&dns->lock);
        goto fail;
    }
    dns->cache = mw_dns_cache_create(opt->cache_size, opt->cache_min_ttl, opt->cache_max_ttl);
    return dns;

fail:
    if (dns->wake[0] >= 0) {
        close(dns->wake[0]);
        close(dns->wake[1]);
    }
    if (dns->ctx)
        ub_ctx_delete(dns->ctx);
    free(dns);
    return NULL;
}

void mw_dns_destroy(mw_dns **pdns)
{
    mw_dns *dns;

    if (!pdns || !(dns = *pdns))
        return;
    *pdns = NULL;
    /* Closing the write end wakes the pump (POLLHUP/POLLIN at EOF). */
    close(dns->wake[1]);
    pthread_join(dns->pump, NULL);
    close(dns->wake[0]);
    /* Stops libunbound's worker; it frees the records of cancelled queries
     * (whose callback argument we have already freed and it never uses). */
    ub_ctx_delete(dns->ctx);
    pthread_mutex_destroy(&dns->lock);
    mw_dns_cache_destroy(&dns->cache);
    free(dns);
}

void mw_dns_set_cache_clock(mw_dns *dns, uint64_t (*fn)(void *arg), void *arg)
{
    if (dns != NULL)
        mw_dns_cache_set_clock(dns->cache, fn, arg);
}

void mw_dns_get_stats(mw_dns *dns, mw_dns_stats *st)
{
    mw_dns_cache_stats cs;

    memset(st, 0, sizeof *st);
    if (!dns)
        return;
    st->upstream = atomic_load_explicit(&dns->upstream, memory_order_relaxed);
    mw_dns_cache_get_stats(dns->cache, &cs);
    st->cache_hits = cs.hits;
    st->cache_misses = cs.misses;
    st->cache_inserts = cs.inserts;
    st->cache_evictions = cs.evictions;
    st->cache_expired = cs.expired;
    st->cache_entries = cs.entries;
    st->cache_capacity = cs.capacity;
}

/* ------------------------------------------------------------------------ */
/* queries                                                                  */

static void query_free(dns_query *q)
{
    pthread_cond_destroy(&q->cond);
    free(q);
}

/* Runs on the pump thread, inside ub_process(). */
static void dns_callback(void *arg, int err, struct ub_result *res)
{
    dns_query *q = arg;
    mw_dns *dns = q->dns;

    pthread_mutex_lock(&dns->lock);
    if (q->abandoned) {
        pthread_mutex_unlock(&dns->lock);
        ub_resolve_free(res);
        query_free(q);
        return;
    }
    q->err = err;
    q->res = res;
    q->done = true;
    pthread_cond_signal(&q->cond);
    /* The waiter may free q as soon as the lock is released. */
    pthread_mutex_unlock(&dns->lock);
}

static mw_dns_answer *answer_new(const char *name, uint16_t type)
{
    mw_dns_answer *a = mw_calloc(1, sizeof *a);
    a->qname = mw_strdup(name ? name : "");
    a->qtype = type;
    a->rcode = -1;
    return a;
}

static mw_dns_status answer_fail(mw_dns_answer *a, mw_dns_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static mw_dns_status answer_fail(mw_dns_answer *a, mw_dns_status st, const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    free(a->why);
    a->why = mw_buf_steal(&b);
    a->status = st;
    return st;
}

/*
 * Check a query name (presentation form, optional trailing dot, \DDD and
 * \X escapes as libunbound understands them).  NULL if fine, else why not.
 */
static const char *name_invalid(const char *name)
{
    size_t full, plen, label = 0, wire = 1;

    if (!name || !*name)
        return "empty name";
    if (strcmp(name, ".") == 0)
        return NULL;                            /* the root */
    full = plen = strlen(name);
    for (size_t i = 0; i < full; i++) {
        if (name[i] == '.') {
            if (label == 0)
                return "empty label";
            wire += label + 1;
            label = 0;
            if (i == full - 1)
                plen = full - 1;                /* one trailing dot is fine */
            continue;
        }
        if (name[i] == '\\') {
            if (i + 1 >= full)
                return "bad escape";
            if (name[i + 1] >= '0' && name[i + 1] <= '9') {
                if (i + 3 >= full || name[i + 2] < '0' || name[i + 2] > '9' ||
                    name[i + 3] < '0' || name[i + 3] > '9' ||
                    (name[i + 1] - '0') * 100 + (name[i + 2] - '0') * 10 + (name[i + 3] - '0') > 255)
                    return "bad escape";
                i += 3;
            } else {
                i += 1;
            }
        }
        if (++label > DNS_LABEL_MAX)
            return "label longer than 63 bytes";
    }
    if (label)
        wire += label + 1;
    if (plen > DNS_NAME_MAX)
        return "name longer than 253 bytes";
    if (wire > 255)
        return "name longer than 255 bytes in wire form";
    return NULL;
}

/* "example.com." -> "example.com" in a fresh string; NULL stays NULL. */
static char *strip_dot(const char *s)
{
    size_t n;

    if (!s)
        return NULL;
    n = strlen(s);
    if (n > 1 && s[n - 1] == '.' && s[n - 2] != '\\')
        n--;
    return mw_strndup(s, n);
}

static bool same_name(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la > 1 && a[la - 1] == '.')
        la--;
    if (lb > 1 && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

static mw_dns_status classify(mw_dns_answer *a, struct ub_result *res)
{
    a->rcode = res->rcode;
    a->secure = res->secure != 0;
    a->bogus = res->bogus != 0;
    if (res->canonname && !same_name(res->canonname, a->qname))
        a->canonname = strip_dot(res->canonname);

    if (res->bogus)
        return answer_fail(a, MW_DNS_PERMFAIL, "DNSSEC bogus: %s",
                           res->why_bogus ? res->why_bogus : "validation failed");
    switch (res->rcode) {
    case 0:  /* NOERROR */
        if (res->havedata && res->data) {
            size_t n = 0;
            while (res->data[n])
                n++;
            a->rr = mw_calloc(n ? n : 1, sizeof *a->rr);
            for (size_t i = 0; i < n; i++) {
                size_t len = res->len[i] > 0 ? (size_t)res->len[i] : 0;
                a->rr[i].type = a->qtype;
                a->rr[i].ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
                a->rr[i].len = len;
                a->rr[i].data = mw_malloc(len ? len : 1);
                memcpy(a->rr[i].data, res->data[i], len);
            }
            a->nrr = n;
        }
        a->ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
        a->status = a->nrr ? MW_DNS_OK : MW_DNS_NODATA;
        return a->status;
    case 3:  /* NXDOMAIN */
        a->ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
        a->status = MW_DNS_NXDOMAIN;
        return a->status;
    case 2:
        return answer_fail(a, MW_DNS_TEMPFAIL, "SERVFAIL%s%s", res->why_bogus ? ": " : "",
                           res->why_bogus ? res->why_bogus : "");
    case 1:
        return answer_fail(a, MW_DNS_PERMFAIL, "FORMERR");
    case 4:
        return answer_fail(a, MW_DNS_PERMFAIL, "NOTIMP");
    case 5:
        return answer_fail(a, MW_DNS_PERMFAIL, "REFUSED");
    default:
        return answer_fail(a, MW_DNS_TEMPFAIL, "unexpected rcode %d", res->rcode);
    }
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static mw_dns_status query_timed(mw_dns *dns, const char *name, uint16_t type, unsigned timeout_ms,
                               mw_dns_answer **out);

_Static_assert(MW_ML_DNS_OK == (int)MW_DNS_OK && MW_ML_DNS_NXDOMAIN == (int)MW_DNS_NXDOMAIN &&
               MW_ML_DNS_NODATA == (int)MW_DNS_NODATA && MW_ML_DNS_TEMPFAIL == (int)MW_DNS_TEMPFAIL &&
               MW_ML_DNS_PERMFAIL == (int)MW_DNS_PERMFAIL, "metrics labels follow mw_dns_status");

mw_dns_status mw_dns_query(mw_dns *dns, const char *name, uint16_t type, unsigned timeout_ms,
                           mw_dns_answer **out)
{
    uint64_t t0 = mw_metrics_now_ns();
    mw_dns_status st = query_timed(dns, name, type, timeout_ms, out);
    mw_metric_inc(MW_M_DNS_QUERIES, (unsigned)st, 0);
    mw_metric_observe(MW_M_DNS_SECONDS, 0, mw_metrics_now_ns() - t0);
    return st;
}

static mw_dns_status query_timed(mw_dns *dns, const char *name, uint16_t type, unsigned timeout_ms,
                               mw_dns_answer **out)
{
    mw_dns_answer *a = answer_new(name, type);
    pthread_condattr_t ca;
    struct timespec deadline;
    dns_query *q;
    const char *bad;
    int id = 0, r;

    *out = a;
    if ((bad = name_invalid(name)) != NULL)
        return answer_fail(a, MW_DNS_PERMFAIL, "invalid name: %s", bad);
    if (!dns)
        return answer_fail(a, MW_DNS_TEMPFAIL, "no resolver");
    if (!timeout_ms)
        timeout_ms = dns->timeout_ms;
    if (dns->cache) {
        mw_dns_answer *hit = NULL;
        if (mw_dns_cache_get(dns->cache, name, type, 1 /* IN */, &hit)) {
            mw_metric_inc(MW_M_DNS_CACHE_HITS, 0, 0);
            mw_dns_answer_free(&a);
            *out = hit;
            return hit->status;
        }
        mw_metric_inc(MW_M_DNS_CACHE_MISSES, 0, 0);
    }

    q = mw_calloc(1, sizeof *q);
    q->dns = dns;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);

    deadline_after(&deadline, timeout_ms);
    atomic_fetch_add_explicit(&dns->upstream, 1, memory_order_relaxed);
    r = ub_resolve_async(dns->ctx, name, type, 1 /* IN */, q, dns_callback, &id);
    if (r != 0) {
        /* The query never reached the worker: no callback will come. */
        query_free(q);
        return answer_fail(a, MW_DNS_TEMPFAIL, "resolver: %s", ub_strerror(r));
    }

    pthread_mutex_lock(&dns->lock);
    while (!q->done) {
        if (pthread_cond_timedwait(&q->cond, &dns->lock, &deadline) == ETIMEDOUT)
            break;
    }
    if (!q->done) {
        q->abandoned = true;
        pthread_mutex_unlock(&dns->lock);
        /* See the header comment: NOERROR means no callback will ever
         * come, so q is ours to free; otherwise the callback frees it. */
        if (ub_cancel(dns->ctx, id) == 0)
            query_free(q);
        mw_metric_inc(MW_M_DNS_TIMEOUTS, 0, 0);
        return answer_fail(a, MW_DNS_TEMPFAIL, "timeout after %u ms", timeout_ms);
    }
    pthread_mutex_unlock(&dns->lock);

    if (q->err != 0 || !q->res) {
        answer_fail(a, MW_DNS_TEMPFAIL, "resolver: %s", ub_strerror(q->err));
    } else if (classify(a, q->res) != MW_DNS_TEMPFAIL && dns->cache) {
        mw_dns_cache_put(dns->cache, name, type, 1 /* IN */, a);
    }
    ub_resolve_free(q->res);
    query_free(q);
    return a->status;
}

void mw_dns_answer_free(mw_dns_answer **pa)
{
    mw_dns_answer *a;

    if (!pa || !(a = *pa))
        return;
    for (size_t i = 0; i < a->nrr; i++)
        free(a->rr[i].data);
    free(a->rr);
    free(a->qname);
    free(a->canonname);
    free(a->why);
    free(a);
    *pa = NULL;
}

/* ------------------------------------------------------------------------ */
/* rdata helpers                                                            */

bool mw_dns_rr_txt(const mw_dns_rr *rr, mw_buf *out)
{
    size_t off = 0;

    if (!rr || !out)
        return false;
    mw_buf_reset(out);
    mw_buf_reserve(out, rr->len);
    if (rr->len == 0 || !rr->data)
        return false;          /* a TXT RR has at least one character-string */
    while (off < rr->len) {
        size_t n = rr->data[off];
        if (n > rr->len - off - 1) {
            mw_buf_reset(out);
            return false;
        }
        mw_buf_append(out, rr->data + off + 1, n);
        off += 1 + n;
    }
    return true;
}

/*
 * Decode the uncompressed wire name at p[0..len) into presentation form
 * without the trailing dot ("." for the root).  Bytes outside printable
 * ASCII, and '.', '\\', are written as \DDD.  *used gets the wire length.
 */
static bool name_decode(const unsigned char *p, size_t len, char *out, size_t outlen, size_t *used)
{
    size_t off = 0, o = 0;

    if (!out || outlen == 0)
        return false;
    for (;;) {
        size_t n;
        if (off >= len || off >= 255)
            return false;
        n = p[off++];
        if (n == 0)
            break;
        if (n > DNS_LABEL_MAX || n > len - off)   /* also rejects pointers (0xC0) */
            return false;
        if (o > 0) {
            if (o + 1 >= outlen)
                return false;
            out[o++] = '.';
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = p[off + i];
            if (c > 0x20 && c < 0x7f && c != '.' && c != '\\') {
                if (o + 1 >= outlen)
                    return false;
                out[o++] = (char)c;
            } else {
                if (o + 4 >= outlen)
                    return false;
                snprintf(out + o, 5, "\\%03u", c);
                o += 4;
            }
        }
        off += n;
    }
    if (off > 255)
        return false;
    if (o == 0) {
        if (outlen < 2)
            return false;
        out[o++] = '.';
    }
    out[o] = '\0';
    *used = off;
    return true;
}

bool mw_dns_rr_name(const mw_dns_rr *rr, char *out, size_t outlen)
{
    size_t used;

    if (!rr || !rr->data || !name_decode(rr->data, rr->len, out, outlen, &used))
        return false;
    return used == rr->len;
}

bool mw_dns_rr_mx(const mw_dns_rr *rr, uint16_t *pref, char *out, size_t outlen)
{
    size_t used;

    if (!rr || !rr->data || rr->len < 3)
        return false;
    if (!name_decode(rr->data + 2, rr->len - 2, out, outlen, &used) || used != rr->len - 2)
        return false;
    if (pref)
        *pref = (uint16_t)((rr->data[0] << 8) | rr->data[1]);
    return true;
}

size_t mw_dns_rr_addr(const mw_dns_rr *rr, uint8_t out[16])
{
    if (!rr || !rr->data)
        return 0;
    if ((rr->type == MW_DNS_T_A && rr->len == 4) || (rr->type == MW_DNS_T_AAAA && rr->len == 16)) {
        memcpy(out, rr->data, rr->len);
        return rr->len;
    }
    return 0;
}
