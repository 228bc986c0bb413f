/*
 * spf.c - SPF (RFC 7208) checks of the MAIL FROM and HELO identities on
 * libspf2, with all DNS through mw_dns (spf_dns.c).
 *
 * Design: every evaluation builds its own SPF_server_t on its own DNS layer
 * whose hook is the evaluation's state (deadline, void lookups, DNS error,
 * exp= domains), then frees them.  The mw_spf handle itself is read-only
 * after mw_spf_create(), so mw_spf_check() needs no lock.  Creating a
 * libspf2 server costs a few microseconds (gethostname() plus compiling the
 * default explanation and an empty local policy), well below one DNS round
 * trip, and avoids thread-specific caches and their lifetime problems.
 *
 * What we correct in libspf2 1.2.10 (see shared notes, conformance §1):
 *   - a record that does not compile, or two records, is permerror (libspf2
 *     leaves SPF_RESULT_INVALID); a DNS failure is temperror;
 *   - every record passes our strict RFC 7208 parser first (spf_record.c):
 *     domain-spec ends, numeric top labels, macro syntax, duplicate
 *     exp=/redirect=, NULs, non-ASCII, cidr syntax -> permerror;
 *   - the record libspf2 compiles is rewritten (spf_dns.c): macros are
 *     expanded by our expander (aliases), ptr and a/mx with /0 are evaluated
 *     by our code, ip4/ip6 /0 become two /1 halves, unknown modifiers are
 *     dropped, redirect is dropped when "all" is present;
 *   - the 10 DNS-term limit is counted across include/redirect, the void
 *     lookup limit (2) and the MX/PTR limits are enforced in our DNS layer;
 *   - the total evaluation has a deadline (temperror when it passes), each
 *     query a timeout cap;
 *   - record selection follows RFC 7208 4.5 ("v=spf1" alone is a record);
 *   - IPv4-mapped IPv6 clients are evaluated as IPv4;
 *   - a domain that is not a multi-label LDH name gives none (RFC 7208 4.3);
 *   - the explanation (exp=) is built and macro-expanded here, only for fail;
 *   - libspf2's SPF_request_query_mailfrom() passes loopback clients without
 *     looking at the record ("localhost is always allowed", no switch to
 *     turn it off); we call the two exported steps it wraps
 *     (SPF_server_get_record + SPF_record_interpret) ourselves, so loopback
 *     clients are evaluated like any other.  Whether loopback mail is
 *     checked at all is the engine's trust decision (internal networks).
 * Results are cached (see spf.h) for the smallest TTL seen.
 *
 * Threat notes: identity, HELO, DNS text and libspf2 messages are outside
 * data.  Reasons are made printable (mw_str_printable) and length-capped;
 * the Received-SPF renderer quotes and escapes every value and caps every
 * field so the header is one valid line below 998 bytes.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "cidr.h"
#include "log.h"
#include "spf.h"
#include "idna.h"
#include "spf_dns.h"
#include "strutil.h"

#define DEFAULT_TIMEOUT_MS       20000u
#define DEFAULT_QUERY_TIMEOUT_MS 5000u
#define DEFAULT_CACHE_ENTRIES    4096u
#define CACHE_MAX_TTL_S          3600u
#define MAX_REASON_IN            300     /* input bytes of a reason kept */
#define MAX_EXPLANATION          1024

typedef struct cache_ent {
    char             *key;
    uint64_t          hash;
    uint64_t          expires_ms;
    mw_spf_result     result;
    char             *explanation;
    char             *reason;
    struct cache_ent *hnext;          /* bucket chain */
    struct cache_ent *prev, *next;    /* LRU list, most recent first */
} cache_ent;

typedef struct spf_cache {
    pthread_mutex_t lock;
    cache_ent     **buckets;
    size_t          nbuckets;
    size_t          n, max;
    cache_ent      *head, *tail;
    mw_spf_cache_stats st;
    uint64_t      (*clock)(void *arg);   /* tests only; NULL: mw_spf_now_ms() */
    void           *clock_arg;
} spf_cache;

struct mw_spf {
    mw_dns   *dns;
    unsigned  timeout_ms;
    unsigned  query_timeout_ms;
    char     *receiver;
    spf_cache *cache;                 /* NULL: disabled */
};

/* ---- result names ---------------------------------------------------------- */

static const char *const result_names[] = {
    [MW_SPF_NONE] = "none",         [MW_SPF_NEUTRAL] = "neutral",
    [MW_SPF_PASS] = "pass",         [MW_SPF_FAIL] = "fail",
    [MW_SPF_SOFTFAIL] = "softfail", [MW_SPF_TEMPERROR] = "temperror",
    [MW_SPF_PERMERROR] = "permerror",
};

const char *mw_spf_result_name(mw_spf_result r)
{
    if ((unsigned)r < sizeof result_names / sizeof result_names[0])
        return result_names[r];
    return "permerror";
}

bool mw_spf_result_parse(const char *s, mw_spf_result *out)
{
    if (!s)
        return false;
    for (size_t i = 0; i < sizeof result_names / sizeof result_names[0]; i++) {
        if (strcasecmp(s, result_names[i]) == 0) {
            if (out)
                *out = (mw_spf_result)i;
            return true;
        }
    }
    return false;
}

/* ---- libspf2 log handlers (set once; libspf2 otherwise prints to stdio) ---- */

static void spf_log_line(mw_log_level lvl, const char *file, int line, const char *msg)
{
    mw_buf b = MW_BUF_INIT;
    mw_str_printable(&b, msg ? msg : "", msg ? strlen(msg) : 0, 400);
    mw_log(lvl, "libspf2: %s:%d: %s", file ? file : "?", line, mw_buf_cstr(&b));
    mw_buf_free(&b);
}

_Noreturn static void spf_error_handler(const char *file, int line, const char *msg)
{
    mw_panic("libspf2: %s:%d: %s", file ? file : "?", line, msg ? msg : "");
}

static void spf_warning_handler(const char *file, int line, const char *msg)
{
    spf_log_line(MW_LOG_WARN, file, line, msg);
}

static void spf_debug_handler(const char *file, int line, const char *msg)
{
    if (mw_log_debug_enabled())
        spf_log_line(MW_LOG_DEBUG, file, line, msg);
}

static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

static void install_handlers(void)
{
    SPF_error_handler = spf_error_handler;
    SPF_warning_handler = spf_warning_handler;
    SPF_info_handler = spf_debug_handler;
    SPF_debug_handler = spf_debug_handler;
}

/* ---- result cache ------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static spf_cache *cache_new(size_t max)
{
    spf_cache *c = mw_calloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->max = max;
    c->nbuckets = 64;
    while (c->nbuckets < max && c->nbuckets < (1u << 20))
        c->nbuckets <<= 1;
    c->buckets = mw_calloc(c->nbuckets, sizeof *c->buckets);
    c->st.capacity = max;
    return c;
}

static void ent_free(cache_ent *e)
{
    free(e->key);
    free(e->explanation);
    free(e->reason);
    free(e);
}

static void cache_free(spf_cache *c)
{
    if (!c)
        return;
    for (cache_ent *e = c->head; e;) {
        cache_ent *nx = e->next;
        ent_free(e);
        e = nx;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Unlink e from its bucket and the LRU list (lock held). */
static void cache_unlink(spf_cache *c, cache_ent *e)
{
    cache_ent **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    c->n--;
}

static void lru_front(spf_cache *c, cache_ent *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* The entries' clock (ms): the evaluation deadline's, unless a test set one. */
static uint64_t cache_now(const spf_cache *c)
{
    return c->clock != NULL ? c->clock(c->clock_arg) : mw_spf_now_ms();
}

/* Look key up; on a live hit fill o (result, explanation, reason) and return true. */
static bool cache_get(spf_cache *c, const char *key, mw_spf_outcome *o)
{
    uint64_t h = fnv1a(key), now = cache_now(c);
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    cache_ent *e = c->buckets[h & (c->nbuckets - 1)];
    while (e && !(e->hash == h && strcmp(e->key, key) == 0))
        e = e->hnext;
    if (e && e->expires_ms <= now) {
        cache_unlink(c, e);
        ent_free(e);
        e = NULL;
    }
    if (e) {
        /* move to the front */
        if (e->prev) {
            e->prev->next = e->next;
            if (e->next)
                e->next->prev = e->prev;
            else
                c->tail = e->prev;
            lru_front(c, e);
        }
        o->result = e->result;
        o->explanation = mw_strdup(e->explanation);
        o->reason = mw_strdup(e->reason);
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void cache_put(spf_cache *c, const char *key, const mw_spf_outcome *o, unsigned ttl_s)
{
    cache_ent *ne = mw_calloc(1, sizeof *ne);
    ne->key = mw_strdup(key);
    ne->hash = fnv1a(key);
    ne->expires_ms = cache_now(c) + (uint64_t)ttl_s * 1000u;
    ne->result = o->result;
    ne->explanation = mw_strdup(o->explanation);
    ne->reason = mw_strdup(o->reason);
    pthread_mutex_lock(&c->lock);
    cache_ent **bp = &c->buckets[ne->hash & (c->nbuckets - 1)];
    for (cache_ent *e = *bp; e; e = e->hnext) {
        if (e->hash == ne->hash && strcmp(e->key, key) == 0) {
            cache_unlink(c, e);       /* replace (another thread evaluated it too) */
            ent_free(e);
            break;
        }
    }
    while (c->n >= c->max && c->tail) {
        cache_ent *old = c->tail;
        cache_unlink(c, old);
        ent_free(old);
        c->st.evictions++;
    }
    bp = &c->buckets[ne->hash & (c->nbuckets - 1)];
    ne->hnext = *bp;
    *bp = ne;
    lru_front(c, ne);
    c->n++;
    c->st.inserts++;
    pthread_mutex_unlock(&c->lock);
}

static void cache_count(spf_cache *c, bool hit)
{
    pthread_mutex_lock(&c->lock);
    if (hit)
        c->st.hits++;
    else
        c->st.misses++;
    pthread_mutex_unlock(&c->lock);
}

void mw_spf_cache_set_clock(mw_spf *spf, uint64_t (*fn)(void *arg), void *arg)
{
    if (!spf || !spf->cache)
        return;
    spf->cache->clock = fn;
    spf->cache->clock_arg = arg;
}

void mw_spf_cache_get_stats(mw_spf *spf, mw_spf_cache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!spf || !spf->cache)
        return;
    pthread_mutex_lock(&spf->cache->lock);
    *st = spf->cache->st;
    st->entries = spf->cache->n;
    pthread_mutex_unlock(&spf->cache->lock);
}

/*
 * Cache key: fields separated by a byte that cannot occur in them (\x01);
 * lp is the sender's local part, or NULL for "the result did not depend on
 * it".  Domain and HELO compare case-insensitively (lower-cased here).
 */
static char *cache_key(mw_spf_scope scope, const mw_addr *ip, const char *helo,
                       const char *domain, const char *lp)
{
    char ipb[64];
    mw_buf b = MW_BUF_INIT;
    mw_buf_printf(&b, "%c\x01%s\x01", scope == MW_SPF_SCOPE_HELO ? 'h' : 'm',
                  mw_addr_format(ip, ipb, sizeof ipb));
    size_t st = b.len;
    mw_buf_puts(&b, helo ? helo : "");
    mw_buf_putc(&b, '\x01');
    mw_buf_puts(&b, domain ? domain : "");
    for (size_t i = st; i < b.len; i++)
        if (b.data[i] >= 'A' && b.data[i] <= 'Z')
            b.data[i] = (char)(b.data[i] - 'A' + 'a');
    mw_buf_putc(&b, '\x01');
    if (lp) {
        mw_buf_putc(&b, 'L');
        mw_buf_puts(&b, lp);
    } else {
        mw_buf_putc(&b, '*');
    }
    return mw_buf_steal(&b);
}

/* ---- lifecycle --------------------------------------------------------------- */

mw_spf *mw_spf_create(mw_dns *dns, const mw_spf_options *opt, char *err, size_t errlen)
{
    if (!dns) {
        if (err && errlen)
            snprintf(err, errlen, "spf: no resolver");
        return NULL;
    }
    pthread_once(&handlers_once, install_handlers);
    mw_spf *spf = mw_calloc(1, sizeof *spf);
    spf->dns = dns;
    spf->timeout_ms = (opt && opt->timeout_ms) ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
    spf->query_timeout_ms = (opt && opt->query_timeout_ms) ? opt->query_timeout_ms
                                                          : DEFAULT_QUERY_TIMEOUT_MS;
    spf->receiver = mw_strdup(opt && opt->receiver && *opt->receiver ? opt->receiver : NULL);
    if (!opt || !opt->no_cache)
        spf->cache = cache_new(opt && opt->cache_entries ? opt->cache_entries
                                                         : DEFAULT_CACHE_ENTRIES);
    return spf;
}

void mw_spf_destroy(mw_spf **pspf)
{
    if (!pspf || !*pspf)
        return;
    cache_free((*pspf)->cache);
    free((*pspf)->receiver);
    free(*pspf);
    *pspf = NULL;
}

void mw_spf_outcome_clear(mw_spf_outcome *o)
{
    if (!o)
        return;
    free(o->identity);
    free(o->domain);
    free(o->client_ip);
    free(o->helo);
    free(o->explanation);
    free(o->reason);
    memset(o, 0, sizeof *o);
}

/* ---- helpers ------------------------------------------------------------------ */

/* A domain check_host() can evaluate: LDH, multi-label, top label not numeric. */
static bool spf_domain_ok(const char *d)
{
    if (!d || !mw_domain_valid(d))
        return false;
    size_t n = strlen(d);
    if (d[n - 1] == '.')
        n--;
    const char *dot = NULL;
    for (size_t i = 0; i < n; i++)
        if (d[i] == '.')
            dot = d + i;
    if (!dot)
        return false;
    for (const char *p = dot + 1; p < d + n; p++)
        if (*p < '0' || *p > '9')
            return true;
    return false;   /* "192.0.2.1": an address, not a name */
}

static char *printable(const char *s, size_t len)
{
    mw_buf b = MW_BUF_INIT;
    mw_str_printable(&b, s ? s : "", s ? len : 0, MAX_REASON_IN);
    return mw_buf_steal(&b);
}

static void set_reason(mw_spf_outcome *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(mw_spf_outcome *o, const char *fmt, ...)
{
    mw_buf raw = MW_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    mw_buf_vprintf(&raw, fmt, ap);
    va_end(ap);
    free(o->reason);
    o->reason = printable(raw.data, raw.len);
    mw_buf_free(&raw);
}

/* libspf2's error messages of a response, "; "-joined. */
static void spf_messages(SPF_response_t *resp, mw_buf *out)
{
    int n = SPF_response_messages(resp);
    for (int i = 0; i < n; i++) {
        SPF_error_t *e = SPF_response_message(resp, i);
        if (!e || !e->is_error)
            continue;
        const char *m = SPF_error_message(e);
        if (!m || !*m)
            continue;
        if (out->len)
            mw_buf_puts(out, "; ");
        mw_buf_puts(out, m);
    }
}

static mw_spf_result map_result(SPF_result_t r)
{
    switch (r) {
    case SPF_RESULT_PASS:      return MW_SPF_PASS;
    case SPF_RESULT_FAIL:      return MW_SPF_FAIL;
    case SPF_RESULT_SOFTFAIL:  return MW_SPF_SOFTFAIL;
    case SPF_RESULT_NEUTRAL:   return MW_SPF_NEUTRAL;
    case SPF_RESULT_NONE:      return MW_SPF_NONE;
    case SPF_RESULT_TEMPERROR: return MW_SPF_TEMPERROR;
    case SPF_RESULT_PERMERROR:
    case SPF_RESULT_INVALID:
    default:                   return MW_SPF_PERMERROR;
    }
}

/* Map libspf2's answer plus our own evaluation state to a result and reason. */
static void finish(mw_spf_outcome *o, mw_spf_eval *ev, SPF_response_t *resp, SPF_errcode_t err)
{
    switch (ev->abort) {
    case MW_SPF_ABORT_DEADLINE:
        o->result = MW_SPF_TEMPERROR;
        set_reason(o, "SPF evaluation deadline exceeded");
        return;
    case MW_SPF_ABORT_VOID:
        o->result = MW_SPF_PERMERROR;
        set_reason(o, "more than %d void DNS lookups (RFC 7208 4.6.4)", MW_SPF_VOID_LIMIT);
        return;
    case MW_SPF_ABORT_TERMS:
        o->result = MW_SPF_PERMERROR;
        set_reason(o, "more than %d DNS-querying terms, includes and redirects counted "
                      "(RFC 7208 4.6.4)", MW_SPF_TERM_LIMIT);
        return;
    case MW_SPF_ABORT_PERM:
        o->result = MW_SPF_PERMERROR;
        set_reason(o, "%s", ev->abort_why ? ev->abort_why : "permanent error");
        return;
    case MW_SPF_ABORT_NONE:
        break;
    }
    SPF_result_t r = resp ? SPF_response_result(resp) : SPF_RESULT_INVALID;
    SPF_errcode_t rerr = resp ? SPF_response_errcode(resp) : err;
    if (r == SPF_RESULT_INVALID &&
        (err == SPF_E_DNS_ERROR || rerr == SPF_E_DNS_ERROR || ev->dns_error))
        o->result = MW_SPF_TEMPERROR;
    else
        o->result = map_result(r);

    mw_buf msg = MW_BUF_INIT;
    switch (o->result) {
    case MW_SPF_TEMPERROR:
        set_reason(o, "%s", ev->dns_why ? ev->dns_why : "temporary DNS failure");
        break;
    case MW_SPF_PERMERROR:
        if (resp)
            spf_messages(resp, &msg);
        if (!msg.len)
            mw_buf_puts(&msg, SPF_strerror(rerr != SPF_E_SUCCESS ? rerr : err));
        set_reason(o, "%s", mw_buf_cstr(&msg));
        break;
    case MW_SPF_NONE:
        if (resp)
            spf_messages(resp, &msg);
        set_reason(o, "%s", msg.len ? mw_buf_cstr(&msg) : "no SPF record");
        break;
    default:
        switch (SPF_response_reason(resp)) {
        case SPF_REASON_DEFAULT:
            set_reason(o, "no mechanism matched: default result %s",
                       mw_spf_result_name(o->result));
            break;
        default:
            set_reason(o, "a mechanism with qualifier %s matched in the SPF record of %s%s",
                       mw_spf_result_name(o->result), o->domain ? o->domain : "?",
                       ev->records > 1 ? " (or a record it includes or redirects to)" : "");
            break;
        }
        break;
    }
    mw_buf_free(&msg);
    if (o->result == MW_SPF_FAIL) {
        char *e = mw_spf_eval_explanation(ev);
        if (e && strlen(e) > MAX_EXPLANATION)
            e[MAX_EXPLANATION] = '\0';
        o->explanation = e;
    }
}

/*
 * SPF_request_query_mailfrom() without its "localhost is always allowed"
 * shortcut: the same two exported steps, in the same order.
 */
static SPF_errcode_t query(SPF_server_t *server, SPF_request_t *req, SPF_response_t **respp)
{
    SPF_response_t *resp = SPF_response_new(req);
    if (!resp)
        mw_panic("spf: out of memory");
    *respp = resp;
    req->cur_dom = req->env_from_dp;    /* what SPF_request_prepare() does */
    SPF_record_t *rec = NULL;
    SPF_errcode_t err = SPF_server_get_record(server, req, resp, &rec);
    if (err != SPF_E_SUCCESS) {
        if (rec)
            SPF_record_free(rec);
        SPF_i_done(resp, resp->result, resp->reason, resp->err);
        return err;
    }
    resp->spf_record_exp = rec;
    err = SPF_record_interpret(rec, req, resp, 0);
    SPF_record_free(rec);
    resp->spf_record_exp = NULL;
    return err;
}

/* Decide the identity; false (with result none and a reason) if there is nothing to check. */
static bool pick_identity(mw_spf_outcome *o, const char *helo, const char *mailfrom,
                          mw_spf_scope scope)
{
    /* U-label domains (SMTPUTF8, RFC 8616) are checked by their A-label */
    char helo_a[256], dom_a[256];
    const char *why = NULL;
    if (helo && mw_idna_has_8bit(helo) && mw_idna_to_ascii(helo, helo_a, sizeof helo_a, &why))
        helo = helo_a;
    bool helo_ok = helo && *helo && spf_domain_ok(helo);
    if (scope == MW_SPF_SCOPE_HELO || !mailfrom || !*mailfrom) {
        if (!helo_ok) {
            o->result = MW_SPF_NONE;
            if (helo && *helo) {
                mw_buf b = MW_BUF_INIT;
                mw_buf_puts(&b, "postmaster@");
                mw_buf_puts(&b, helo);
                o->identity = mw_buf_steal(&b);
            }
            set_reason(o, "%s '%s' is not a domain name: nothing to check",
                       scope == MW_SPF_SCOPE_HELO ? "HELO" : "null sender and HELO",
                       helo ? helo : "");
            return false;
        }
        mw_buf b = MW_BUF_INIT;
        mw_buf_puts(&b, "postmaster@");
        mw_buf_puts(&b, helo);
        o->identity = mw_buf_steal(&b);
        o->domain = mw_strdup(helo);
        return true;
    }
    const char *at = strrchr(mailfrom, '@');
    const char *dom = at ? at + 1 : mailfrom;
    bool converted = false;
    if (mw_idna_has_8bit(dom) && mw_idna_to_ascii(dom, dom_a, sizeof dom_a, &why)) {
        dom = dom_a;
        converted = true;
    }
    if (!at || at == mailfrom) {             /* RFC 7208 4.3: no local-part */
        mw_buf b = MW_BUF_INIT;
        mw_buf_puts(&b, "postmaster@");
        mw_buf_puts(&b, dom);
        o->identity = mw_buf_steal(&b);
    } else if (converted) {
        mw_buf b = MW_BUF_INIT;
        mw_buf_append(&b, mailfrom, (size_t)(at - mailfrom) + 1);
        mw_buf_puts(&b, dom);
        o->identity = mw_buf_steal(&b);
    } else {
        o->identity = mw_strdup(mailfrom);
    }
    o->domain = mw_strdup(dom);
    if (!spf_domain_ok(dom)) {
        o->result = MW_SPF_NONE;
        set_reason(o, "sender domain '%s' is not a valid domain name", dom);
        return false;
    }
    return true;
}

/* ---- evaluation ------------------------------------------------------------------ */

void mw_spf_check(mw_spf *spf, const char *ip, const char *helo, const char *mailfrom,
                  mw_spf_scope scope, mw_spf_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->scope = scope;
    out->evaluated = true;
    out->client_ip = mw_strdup(ip ? ip : "");
    out->helo = mw_strdup(helo);

    if (!pick_identity(out, helo, mailfrom, scope))
        return;

    mw_addr addr;
    if (!ip || !mw_addr_parse(ip, &addr)) {
        out->result = MW_SPF_NONE;
        set_reason(out, "client address '%s' is not an IP address: nothing to check",
                   ip ? ip : "");
        return;
    }
    mw_addr_unmap(&addr);

    /* l and o of the identity ("postmaster@dom" when there was no local part) */
    const char *at = strrchr(out->identity, '@');
    char *local = at ? mw_strndup(out->identity, (size_t)(at - out->identity))
                     : mw_strdup("postmaster");
    const char *sdom = at ? at + 1 : out->domain;

    char *key_any = NULL, *key_lp = NULL;
    if (spf->cache) {
        key_any = cache_key(scope, &addr, helo, out->domain, NULL);
        key_lp = cache_key(scope, &addr, helo, out->domain, local);
        bool hit = cache_get(spf->cache, key_any, out) || cache_get(spf->cache, key_lp, out);
        cache_count(spf->cache, hit);
        if (hit) {
            free(key_any);
            free(key_lp);
            free(local);
            if (mw_log_debug_enabled())
                mw_debug("spf: %s identity=%s result=%s (cached)",
                         scope == MW_SPF_SCOPE_HELO ? "helo" : "mailfrom", out->identity,
                         mw_spf_result_name(out->result));
            return;
        }
    }

    mw_spf_eval ev;
    mw_spf_eval_init(&ev, spf->dns, spf->timeout_ms, spf->query_timeout_ms, &addr, local, sdom,
                     helo, spf->receiver);
    SPF_server_t *server = SPF_server_new_dns(mw_spf_dns_layer_new(&ev), 0);
    if (!server)
        mw_panic("spf: out of memory");
    /* libspf2 1.2.10's SPF_server_new_dns() does not take ownership of the
     * layer (destroy_resolver = 0); hand it over so SPF_server_free() frees it. */
    server->destroy_resolver = 1;
    if (spf->receiver)
        SPF_server_set_rec_dom(server, spf->receiver);
    /* Our layer counts DNS terms across the whole evaluation (RFC 7208
     * 4.6.4); libspf2's own per-response count would also see the
     * continuation redirects of long records (spf_dns.h): keep it out of
     * the way. */
    server->max_dns_mech = 1000;
    SPF_request_t *req = SPF_request_new(server);
    if (!req)
        mw_panic("spf: out of memory");

    if (addr.family == AF_INET) {
        struct in_addr a4;
        memcpy(&a4, addr.bytes, 4);
        SPF_request_set_ipv4(req, a4);
    } else {
        struct in6_addr a6;
        memcpy(&a6, addr.bytes, 16);
        SPF_request_set_ipv6(req, a6);
    }
    /* libspf2 expands no macro of ours any more, but keep %{h} defined */
    SPF_request_set_helo_dom(req, helo && *helo ? helo : "unknown");
    SPF_request_set_env_from(req, out->identity);

    SPF_response_t *resp = NULL;
    SPF_errcode_t err = query(server, req, &resp);
    finish(out, &ev, resp, err);

    if (spf->cache && out->result != MW_SPF_TEMPERROR && ev.ttl_seen && ev.min_ttl > 0) {
        unsigned ttl = ev.min_ttl < CACHE_MAX_TTL_S ? ev.min_ttl : CACHE_MAX_TTL_S;
        cache_put(spf->cache, ev.mctx.used_local ? key_lp : key_any, out, ttl);
    }
    if (mw_log_debug_enabled())
        mw_debug("spf: %s identity=%s result=%s queries=%u terms=%u voids=%u",
                 scope == MW_SPF_SCOPE_HELO ? "helo" : "mailfrom", out->identity,
                 mw_spf_result_name(out->result), ev.queries, ev.terms, ev.voids);
    if (resp)
        SPF_response_free(resp);
    SPF_request_free(req);
    SPF_server_free(server);    /* frees the layer too */
    mw_spf_eval_fini(&ev);
    free(key_any);
    free(key_lp);
    free(local);
}

/* ---- Received-SPF ------------------------------------------------------------------ */

/*
 * Output caps per field (bytes after escaping) keep the whole value, with
 * the fixed text, below 900 bytes: one header line well under RFC 5322's
 * 998 even with "Received-SPF: " in front.
 */
#define CAP_RECEIVER 64
#define CAP_IDENTITY 128
#define CAP_IP       48
#define CAP_HELO     96
#define CAP_PROBLEM  128

static bool is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool is_dot_atom(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!is_atext((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/*
 * Escape s for a quoted-string (quoted = true) or a comment: printable ASCII
 * stays, '"' '\' (and '(' ')' in comments) get a backslash, anything else
 * becomes the visible text \xNN (its backslash escaped).  At most cap
 * output bytes; "..." marks a cut.
 */
static size_t escape_unit(unsigned char c, bool quoted, char u[5])
{
    static const char hex[] = "0123456789abcdef";
    if (c == '\\' || (quoted && c == '"') || (!quoted && (c == '(' || c == ')'))) {
        u[0] = '\\';
        u[1] = (char)c;
        return 2;
    }
    if (c >= 0x20 && c < 0x7f) {
        u[0] = (char)c;
        return 1;
    }
    u[0] = '\\';
    u[1] = '\\';
    u[2] = 'x';
    u[3] = hex[c >> 4];
    u[4] = hex[c & 15];
    return 5;
}

static void put_escaped(mw_buf *out, const char *s, size_t cap, bool quoted)
{
    char u[5];
    size_t total = 0;
    for (const char *p = s; *p; p++)
        total += escape_unit((unsigned char)*p, quoted, u);
    size_t limit = total <= cap ? total : cap - 3, used = 0;
    for (const char *p = s; *p; p++) {
        size_t n = escape_unit((unsigned char)*p, quoted, u);
        if (used + n > limit)
            break;
        mw_buf_append(out, u, n);
        used += n;
    }
    if (total > cap)
        mw_buf_puts(out, "...");
}

static void put_kv(mw_buf *out, const char *key, const char *val, size_t cap, bool force_quote)
{
    mw_buf_printf(out, " %s=", key);
    if (!force_quote && strlen(val) <= cap && is_dot_atom(val)) {
        mw_buf_puts(out, val);
    } else {
        mw_buf_putc(out, '"');
        put_escaped(out, val, cap, true);
        mw_buf_putc(out, '"');
    }
    mw_buf_putc(out, ';');
}

void mw_spf_received_spf(const mw_spf_outcome *o, const char *receiver, mw_buf *out)
{
    const char *ip = o->client_ip && *o->client_ip ? o->client_ip : "unknown";
    const char *who = o->identity ? o->identity : (o->helo ? o->helo : "");
    bool rcv = receiver && *receiver;

    mw_buf_puts(out, mw_spf_result_name(o->result));
    mw_buf_puts(out, " (");
    if (rcv) {
        put_escaped(out, receiver, CAP_RECEIVER, false);
        mw_buf_puts(out, ": ");
    }
    mw_buf c = MW_BUF_INIT;   /* the comment, built from escaped pieces */
    mw_buf idb = MW_BUF_INIT, ipb = MW_BUF_INIT;
    put_escaped(&idb, who, CAP_IDENTITY, false);
    put_escaped(&ipb, ip, CAP_IP, false);
    const char *id = mw_buf_cstr(&idb), *cip = mw_buf_cstr(&ipb);
    switch (o->result) {
    case MW_SPF_PASS:
        mw_buf_printf(&c, "domain of %s designates %s as permitted sender", id, cip);
        break;
    case MW_SPF_FAIL:
        mw_buf_printf(&c, "domain of %s does not designate %s as permitted sender", id, cip);
        break;
    case MW_SPF_SOFTFAIL:
        mw_buf_printf(&c, "domain of transitioning %s does not designate %s as permitted sender",
                      id, cip);
        break;
    case MW_SPF_NEUTRAL:
        mw_buf_printf(&c, "%s is neither permitted nor denied by domain of %s", cip, id);
        break;
    case MW_SPF_NONE:
        if (*who)
            mw_buf_printf(&c, "domain of %s does not designate permitted sender hosts", id);
        else
            mw_buf_puts(&c, "no identity to check");
        break;
    case MW_SPF_TEMPERROR:
        mw_buf_printf(&c, "temporary error in processing during lookup of %s", id);
        break;
    case MW_SPF_PERMERROR:
    default:
        mw_buf_printf(&c, "permanent error in processing domain of %s", id);
        break;
    }
    mw_buf_append(out, c.data ? c.data : "", c.len);
    mw_buf_free(&c);
    mw_buf_free(&idb);
    mw_buf_free(&ipb);
    mw_buf_putc(out, ')');

    if (rcv)
        put_kv(out, "receiver", receiver, CAP_RECEIVER, false);
    put_kv(out, "client-ip", ip, CAP_IP, false);
    if (o->scope == MW_SPF_SCOPE_MAILFROM && o->identity)
        put_kv(out, "envelope-from", o->identity, CAP_IDENTITY, true);
    if (o->helo && *o->helo)
        put_kv(out, "helo", o->helo, CAP_HELO, false);
    if ((o->result == MW_SPF_TEMPERROR || o->result == MW_SPF_PERMERROR) && o->reason)
        put_kv(out, "problem", o->reason, CAP_PROBLEM, true);
    mw_buf_printf(out, " identity=%s;", o->scope == MW_SPF_SCOPE_HELO ? "helo" : "mailfrom");
}
