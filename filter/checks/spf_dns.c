/*
 * spf_dns.c - libspf2 DNS layer on top of mw_dns, record preprocessing and
 * the mechanisms we evaluate ourselves (see spf_dns.h).
 *
 * Design: the layer's hook points at one mw_spf_eval, i.e. at the state of a
 * single evaluation; a layer (and the SPF_server_t using it) is created per
 * evaluation, so concurrent evaluations never share mutable state.
 *
 * Threat notes: everything in an answer is attacker-controlled.  Rdata is
 * decoded with mw_dns's bounds-checked helpers; malformed RRs are skipped.
 * Records are parsed by spf_record.c, which bounds all expansions.  The
 * number of queries is bounded by the term, void, MX and PTR limits and by
 * the deadline; the alias table by the record sizes (one per term).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "spf_dns.h"

uint64_t mw_spf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *get_p(void *arg, const char *domain);

void mw_spf_eval_init(mw_spf_eval *ev, mw_dns *dns, unsigned timeout_ms, unsigned query_cap_ms,
                      const mw_addr *ip, const char *local, const char *sender_dom,
                      const char *helo, const char *receiver)
{
    memset(ev, 0, sizeof *ev);
    ev->dns = dns;
    ev->deadline_ms = mw_spf_now_ms() + timeout_ms;
    ev->query_cap_ms = query_cap_ms ? query_cap_ms : timeout_ms;
    ev->exp_alias = -1;
    ev->mctx.local = local;
    ev->mctx.sender_dom = sender_dom;
    ev->mctx.helo = helo;
    ev->mctx.receiver = receiver;
    if (ip)
        ev->mctx.ip = *ip;
    ev->mctx.get_p = get_p;
    ev->mctx.arg = ev;
}

static void free_names(char ***v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*v)[i]);
    free(*v);
    *v = NULL;
    *n = 0;
}

void mw_spf_eval_fini(mw_spf_eval *ev)
{
    for (size_t i = 0; i < ev->nalias; i++) {
        free(ev->alias[i].spec);
        free(ev->alias[i].context);
        free(ev->alias[i].expanded);
        free(ev->alias[i].text);
    }
    free(ev->alias);
    ev->alias = NULL;
    ev->nalias = 0;
    free_names(&ev->aux_names, &ev->naux);
    free_names(&ev->pnames, &ev->npnames);
    MW_FREE(&ev->p_value);
    MW_FREE(&ev->dns_why);
    MW_FREE(&ev->abort_why);
}

unsigned mw_spf_eval_remaining(const mw_spf_eval *ev)
{
    uint64_t now = mw_spf_now_ms();
    return now >= ev->deadline_ms ? 0 : (unsigned)(ev->deadline_ms - now);
}

static void set_abort_perm(mw_spf_eval *ev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_abort_perm(mw_spf_eval *ev, const char *fmt, ...)
{
    if (ev->abort != MW_SPF_ABORT_NONE)
        return;
    ev->abort = MW_SPF_ABORT_PERM;
    mw_buf b = MW_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    ev->abort_why = mw_buf_steal(&b);
}

/* One more DNS-querying term; false (and abort) beyond the limit. */
static bool count_term(mw_spf_eval *ev)
{
    if (ev->abort != MW_SPF_ABORT_NONE)
        return false;
    if (++ev->terms > MW_SPF_TERM_LIMIT) {
        ev->abort = MW_SPF_ABORT_TERMS;
        return false;
    }
    return true;
}

/* Name equality ignoring case and one trailing dot. */
static bool name_eq(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na && a[na - 1] == '.')
        na--;
    if (nb && b[nb - 1] == '.')
        nb--;
    return na == nb && strncasecmp(a, b, na) == 0;
}

/* An MX target being looked up by the mx term that returned it: consume it. */
static bool consume_aux(mw_spf_eval *ev, const char *name)
{
    for (size_t i = 0; i < ev->naux; i++) {
        if (name_eq(ev->aux_names[i], name)) {
            free(ev->aux_names[i]);
            ev->aux_names[i] = ev->aux_names[--ev->naux];
            return true;
        }
    }
    return false;
}

/*
 * One query on behalf of the evaluation: deadline, void counting (when
 * count_void), TTL, error flags.  Returns the status; *out is set (free with
 * mw_dns_answer_free) unless the evaluation is aborted, in which case *out
 * is NULL and TEMPFAIL returned.
 */
static mw_dns_status eval_query(mw_spf_eval *ev, const char *name, uint16_t type, bool count_void,
                                mw_dns_answer **out)
{
    *out = NULL;
    if (ev->abort != MW_SPF_ABORT_NONE)
        return MW_DNS_TEMPFAIL;
    unsigned left = mw_spf_eval_remaining(ev);
    if (left == 0) {
        ev->abort = MW_SPF_ABORT_DEADLINE;
        return MW_DNS_TEMPFAIL;
    }
    if (left > ev->query_cap_ms)
        left = ev->query_cap_ms;
    ev->queries++;
    mw_dns_status st = mw_dns_query(ev->dns, name, type, left, out);
    if ((st == MW_DNS_OK || st == MW_DNS_NXDOMAIN || st == MW_DNS_NODATA) && *out) {
        if (!ev->ttl_seen || (*out)->ttl < ev->min_ttl)
            ev->min_ttl = (*out)->ttl;
        ev->ttl_seen = true;
    }
    switch (st) {
    case MW_DNS_NXDOMAIN:
    case MW_DNS_NODATA:
        if (count_void && ++ev->voids > MW_SPF_VOID_LIMIT) {
            ev->abort = MW_SPF_ABORT_VOID;
            mw_dns_answer_free(out);
            return MW_DNS_TEMPFAIL;
        }
        break;
    case MW_DNS_TEMPFAIL:
        if (mw_spf_eval_remaining(ev) == 0) {
            ev->abort = MW_SPF_ABORT_DEADLINE;
            mw_dns_answer_free(out);
            return MW_DNS_TEMPFAIL;
        }
        if (!ev->dns_error) {
            mw_buf b = MW_BUF_INIT;
            mw_buf_printf(&b, "DNS lookup of %s/%u failed: %s", name, (unsigned)type,
                          (*out && (*out)->why) ? (*out)->why : mw_dns_status_name(st));
            ev->dns_why = mw_buf_steal(&b);
        }
        ev->dns_error = true;
        break;
    default:
        break;
    }
    return st;
}

static SPF_dns_stat_t herrno_of(mw_dns_status st)
{
    switch (st) {
    case MW_DNS_OK:       return NETDB_SUCCESS;
    case MW_DNS_NXDOMAIN: return HOST_NOT_FOUND;
    case MW_DNS_NODATA:   return NO_DATA;
    case MW_DNS_TEMPFAIL: return TRY_AGAIN;
    case MW_DNS_PERMFAIL: return NO_RECOVERY;
    }
    return NO_RECOVERY;
}

/* ---- aliases ------------------------------------------------------------------ */

static size_t alias_new(mw_spf_eval *ev, mw_spf_alias_kind kind, const char *spec,
                        const char *context, int cidr4, int cidr6)
{
    ev->alias = mw_reallocarray(ev->alias, ev->nalias + 1, sizeof *ev->alias);
    mw_spf_alias *a = &ev->alias[ev->nalias];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->spec = mw_strdup(spec);
    a->context = mw_strdup(context ? context : "");
    a->cidr4 = cidr4;
    a->cidr6 = cidr6;
    return ev->nalias++;
}

/* Index of the alias named name, or -1. */
static long alias_index(const mw_spf_eval *ev, const char *name)
{
    size_t pl = strlen(MW_SPF_ALIAS_PREFIX);
    if (!name || strncasecmp(name, MW_SPF_ALIAS_PREFIX, pl) != 0)
        return -1;
    const char *p = name + pl;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    unsigned long idx = strtoul(p, &end, 10);
    if (strcasecmp(end, MW_SPF_ALIAS_SUFFIX) != 0 && strcasecmp(end, MW_SPF_ALIAS_SUFFIX ".") != 0)
        return -1;
    if (idx >= ev->nalias)
        return -1;
    return (long)idx;
}

/* The real name behind an alias (expanded once, with our macro expander). */
static const char *alias_target(mw_spf_eval *ev, mw_spf_alias *a)
{
    if (!a->expanded) {
        if (a->spec) {
            const char *save = ev->mctx.domain;
            ev->mctx.domain = a->context;
            a->expanded = mw_spf_expand_domain(&ev->mctx, a->spec);
            ev->mctx.domain = save;
        } else {
            a->expanded = mw_strdup(a->context);
        }
    }
    return a->expanded;
}

/* ---- validated client names (p macro, ptr mechanism) ---------------------------- */

static void reverse_name(const mw_addr *ip, mw_buf *out)
{
    static const char hex[] = "0123456789abcdef";
    if (ip->family == AF_INET) {
        mw_buf_printf(out, "%u.%u.%u.%u.in-addr.arpa", ip->bytes[3], ip->bytes[2], ip->bytes[1],
                      ip->bytes[0]);
        return;
    }
    for (int i = 15; i >= 0; i--) {
        mw_buf_putc(out, hex[ip->bytes[i] & 15]);
        mw_buf_putc(out, '.');
        mw_buf_putc(out, hex[ip->bytes[i] >> 4]);
        mw_buf_putc(out, '.');
    }
    mw_buf_puts(out, "ip6.arpa");
}

/* Does a (4 or 16 bytes) match the client within plen bits? */
static bool prefix_match(const mw_addr *client, const uint8_t *a, size_t alen, int plen)
{
    size_t clen = client->family == AF_INET ? 4 : 16;
    if (alen != clen)
        return false;
    int full = plen / 8, rem = plen % 8;
    if (memcmp(client->bytes, a, (size_t)full) != 0)
        return false;
    if (rem) {
        uint8_t mask = (uint8_t)(0xff << (8 - rem));
        if ((client->bytes[full] & mask) != (a[full] & mask))
            return false;
    }
    return true;
}

/*
 * Any address record of name matching the client within plen bits?
 * 1 match, 0 no match (incl. NXDOMAIN/NODATA/unusable name), -1 temporary
 * error or abort.
 */
static int match_addrs(mw_spf_eval *ev, const char *name, bool count_void, int plen)
{
    uint16_t type = ev->mctx.ip.family == AF_INET ? MW_DNS_T_A : MW_DNS_T_AAAA;
    mw_dns_answer *a = NULL;
    mw_dns_status st = eval_query(ev, name, type, count_void, &a);
    int r = 0;
    if (st == MW_DNS_TEMPFAIL) {
        r = -1;
    } else if (st == MW_DNS_OK) {
        uint8_t addr[16];
        for (size_t i = 0; i < a->nrr && r == 0; i++) {
            if (a->rr[i].type != type)
                continue;
            size_t n = mw_dns_rr_addr(&a->rr[i], addr);
            if (n && prefix_match(&ev->mctx.ip, addr, n, plen))
                r = 1;
        }
    }
    mw_dns_answer_free(&a);
    return r;
}

/*
 * The client's validated names (RFC 7208 5.5): PTR names (at most 10, the
 * rest ignored) whose own addresses include the client.  A failing address
 * lookup just skips that name.  Returns -1 when the evaluation aborted.
 */
static int validated_names(mw_spf_eval *ev, bool count_void)
{
    if (ev->pnames_done)
        return 0;
    ev->pnames_done = true;
    mw_buf rn = MW_BUF_INIT;
    reverse_name(&ev->mctx.ip, &rn);
    mw_dns_answer *a = NULL;
    mw_dns_status st = eval_query(ev, mw_buf_cstr(&rn), MW_DNS_T_PTR, count_void, &a);
    mw_buf_free(&rn);
    if (st != MW_DNS_OK) {
        mw_dns_answer_free(&a);
        return ev->abort != MW_SPF_ABORT_NONE ? -1 : 0;
    }
    char name[1025];
    size_t seen = 0;
    for (size_t i = 0; i < a->nrr && seen < MW_SPF_PTR_LIMIT; i++) {
        if (a->rr[i].type != MW_DNS_T_PTR || !mw_dns_rr_name(&a->rr[i], name, sizeof name))
            continue;
        seen++;
        int m = match_addrs(ev, name, false, ev->mctx.ip.family == AF_INET ? 32 : 128);
        if (ev->abort != MW_SPF_ABORT_NONE)
            break;
        if (m == 1) {
            ev->pnames = mw_reallocarray(ev->pnames, ev->npnames + 1, sizeof *ev->pnames);
            ev->pnames[ev->npnames++] = mw_strdup(name);
        }
    }
    mw_dns_answer_free(&a);
    return ev->abort != MW_SPF_ABORT_NONE ? -1 : 0;
}

/* name is target or a subdomain of it (case-insensitive, trailing dots ignored) */
static bool in_domain(const char *name, const char *target)
{
    size_t n = strlen(name), t = strlen(target);
    if (n && name[n - 1] == '.')
        n--;
    if (t && target[t - 1] == '.')
        t--;
    if (t == 0 || n < t)
        return false;
    if (strncasecmp(name + n - t, target, t) != 0)
        return false;
    return n == t || name[n - t - 1] == '.';
}

static const char *get_p(void *arg, const char *domain)
{
    mw_spf_eval *ev = arg;
    validated_names(ev, false);
    const char *pick = NULL;
    for (size_t i = 0; i < ev->npnames && !pick; i++)
        if (domain && name_eq(ev->pnames[i], domain))
            pick = ev->pnames[i];
    for (size_t i = 0; i < ev->npnames && !pick; i++)
        if (domain && in_domain(ev->pnames[i], domain))
            pick = ev->pnames[i];
    if (!pick && ev->npnames)
        pick = ev->pnames[0];
    free(ev->p_value);
    ev->p_value = mw_strdup(pick ? pick : "unknown");
    return ev->p_value;
}

/* ---- proxied mechanisms ------------------------------------------------------- */

/* Evaluate a proxied a / mx / ptr term: 1 match, 0 no match, -1 error/abort. */
static int run_proxy(mw_spf_eval *ev, mw_spf_alias *al)
{
    if (!count_term(ev))
        return -1;
    const char *target = alias_target(ev, al);
    bool v4 = ev->mctx.ip.family == AF_INET;
    int plen = v4 ? (al->cidr4 >= 0 ? al->cidr4 : 32) : (al->cidr6 >= 0 ? al->cidr6 : 128);
    switch (al->kind) {
    case MW_SPF_ALIAS_A:
        return match_addrs(ev, target, true, plen);
    case MW_SPF_ALIAS_MX: {
        mw_dns_answer *a = NULL;
        mw_dns_status st = eval_query(ev, target, MW_DNS_T_MX, true, &a);
        if (st != MW_DNS_OK) {
            mw_dns_answer_free(&a);
            return st == MW_DNS_TEMPFAIL ? -1 : 0;
        }
        size_t nmx = 0;
        for (size_t i = 0; i < a->nrr; i++)
            if (a->rr[i].type == MW_DNS_T_MX)
                nmx++;
        if (nmx > MW_SPF_MX_LIMIT) {
            mw_dns_answer_free(&a);
            set_abort_perm(ev, "%s has more than %d MX records (RFC 7208 4.6.4)", target,
                           MW_SPF_MX_LIMIT);
            return -1;
        }
        int r = 0;
        char name[1025];
        uint16_t pref;
        for (size_t i = 0; i < a->nrr && r == 0; i++) {
            if (a->rr[i].type != MW_DNS_T_MX || !mw_dns_rr_mx(&a->rr[i], &pref, name, sizeof name))
                continue;
            r = match_addrs(ev, name, false, plen);
        }
        mw_dns_answer_free(&a);
        return r;
    }
    case MW_SPF_ALIAS_PTR: {
        if (validated_names(ev, true) < 0)
            return -1;
        for (size_t i = 0; i < ev->npnames; i++)
            if (in_domain(ev->pnames[i], target))
                return 1;
        return 0;
    }
    default:
        return 0;
    }
}

/* ---- the libspf2 layer ------------------------------------------------------------ */

/* Store len bytes (+ NUL) as RR idx, with rr_buf_len[idx] == len + 1 exactly. */
static void rr_put(SPF_dns_rr_t *rr, int idx, const void *data, size_t len)
{
    size_t alloc = len + 1 < sizeof(SPF_dns_rr_data_t) ? sizeof(SPF_dns_rr_data_t) : len + 1;
    char *p = mw_calloc(1, alloc);
    memcpy(p, data, len);
    rr->rr[idx] = (SPF_dns_rr_data_t *)(void *)p;
    rr->rr_buf_len[idx] = len + 1;
    rr->num_rr = idx + 1;
}

static void rr_alloc(SPF_dns_rr_t *rr, size_t n)
{
    rr->rr = mw_calloc(n, sizeof *rr->rr);
    rr->rr_buf_len = mw_calloc(n, sizeof *rr->rr_buf_len);
    rr->rr_buf_num = (int)n;
}

static void remember_aux(mw_spf_eval *ev, const char *name)
{
    ev->aux_names = mw_reallocarray(ev->aux_names, ev->naux + 1, sizeof *ev->aux_names);
    ev->aux_names[ev->naux++] = mw_strdup(name);
}

/* Fill rr from an OK answer; returns the number of usable RRs. */
static int rr_fill(mw_spf_eval *ev, SPF_dns_rr_t *rr, const mw_dns_answer *a, uint16_t type)
{
    if (a->nrr == 0 || a->nrr > 1000)
        return 0;
    rr_alloc(rr, a->nrr);
    if (type == MW_DNS_T_MX)
        free_names(&ev->aux_names, &ev->naux);

    mw_buf txt = MW_BUF_INIT;
    char name[1025];
    uint8_t addr[16];
    int n = 0;
    for (size_t i = 0; i < a->nrr; i++) {
        const mw_dns_rr *r = &a->rr[i];
        if (r->type != type)
            continue;
        switch (type) {
        case MW_DNS_T_A:
            if (mw_dns_rr_addr(r, addr) == 4)
                rr_put(rr, n++, addr, 4);
            break;
        case MW_DNS_T_AAAA:
            if (mw_dns_rr_addr(r, addr) == 16)
                rr_put(rr, n++, addr, 16);
            break;
        case MW_DNS_T_TXT:
            if (mw_dns_rr_txt(r, &txt))
                rr_put(rr, n++, txt.len ? txt.data : "", txt.len);
            break;
        case MW_DNS_T_MX: {
            uint16_t pref;
            if (mw_dns_rr_mx(r, &pref, name, sizeof name)) {
                rr_put(rr, n++, name, strlen(name));
                remember_aux(ev, name);
            }
            break;
        }
        case MW_DNS_T_PTR:
            if (mw_dns_rr_name(r, name, sizeof name))
                rr_put(rr, n++, name, strlen(name));
            break;
        default:
            break;
        }
    }
    mw_buf_free(&txt);
    rr->ttl = a->ttl;
    return n;
}

static SPF_dns_rr_t *rr_new(SPF_dns_server_t *server, const char *domain, ns_type type,
                            SPF_dns_stat_t herrno)
{
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(server, domain, type, 0, herrno);
    if (!rr)
        mw_panic("spf: out of memory");
    return rr;
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *server, const char *domain, ns_type type,
                                  int should_cache)
{
    mw_spf_eval *ev = server->hook;
    (void)should_cache;

    if (type == ns_t_spf)       /* RFC 7208 3.1: type 99 is not used; save the round trip */
        return rr_new(server, domain, type, NO_DATA);
    if (type != ns_t_a && type != ns_t_aaaa && type != ns_t_txt && type != ns_t_mx &&
        type != ns_t_ptr)
        return rr_new(server, domain, type, NO_RECOVERY);

    const char *name = domain ? domain : "";
    long ai = alias_index(ev, name);
    if (ai >= 0) {
        mw_spf_alias *al = &ev->alias[ai];
        if (al->kind == MW_SPF_ALIAS_A || al->kind == MW_SPF_ALIAS_MX ||
            al->kind == MW_SPF_ALIAS_PTR) {
            /* "exists:<alias>": our own evaluation of the mechanism */
            if (type != ns_t_a)
                return rr_new(server, domain, type, NO_DATA);
            int m = run_proxy(ev, al);
            if (m < 0)
                return rr_new(server, domain, type, TRY_AGAIN);
            if (m == 0)
                return rr_new(server, domain, type, NO_DATA);
            SPF_dns_rr_t *rr = rr_new(server, domain, type, NETDB_SUCCESS);
            static const uint8_t match_addr[4] = {127, 0, 0, 2};
            rr_alloc(rr, 1);
            rr_put(rr, 0, match_addr, 4);
            return rr;
        }
        if (al->kind == MW_SPF_ALIAS_EXP)
            return rr_new(server, domain, type, NO_DATA);
        name = alias_target(ev, al);
    }

    bool aux = (type == ns_t_a || type == ns_t_aaaa) && consume_aux(ev, name);
    if (!aux && !count_term(ev))
        return rr_new(server, domain, type, TRY_AGAIN);

    mw_dns_answer *a = NULL;
    mw_dns_status st = eval_query(ev, name, (uint16_t)type, !aux, &a);
    if (st == MW_DNS_OK && type == ns_t_mx) {
        /* RFC 7208 4.6.4: more than 10 MX records is a permerror, whether or
         * not one of the first ten would match (libspf2 checks ten first). */
        size_t nmx = 0;
        for (size_t i = 0; i < a->nrr; i++)
            if (a->rr[i].type == MW_DNS_T_MX)
                nmx++;
        if (nmx > MW_SPF_MX_LIMIT) {
            mw_dns_answer_free(&a);
            set_abort_perm(ev, "%s has more than %d MX records (RFC 7208 4.6.4)", name,
                           MW_SPF_MX_LIMIT);
            return rr_new(server, domain, type, TRY_AGAIN);
        }
    }
    SPF_dns_rr_t *rr = rr_new(server, domain, type, herrno_of(st));
    if (st == MW_DNS_OK && a) {
        if (rr_fill(ev, rr, a, (uint16_t)type) == 0)
            rr->herrno = NO_DATA;
    } else if (a) {
        rr->ttl = a->ttl;
    }
    mw_dns_answer_free(&a);
    return rr;
}

static SPF_errcode_t set_result(SPF_response_t *resp, SPF_result_t res, SPF_errcode_t err)
{
    resp->result = res;
    resp->reason = SPF_REASON_FAILURE;
    resp->err = err;
    return err;
}

/* A name libspf2 can take as it is: LDH/'_' labels, no macros, no odd characters. */
static bool plain_name(const char *s)
{
    size_t n = strlen(s), lab = 0;
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (lab == 0)
                return false;
            lab = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
        if (++lab > 63)
            return false;
    }
    return true;
}

static void put_alias(mw_buf *out, size_t idx)
{
    mw_buf_printf(out, MW_SPF_ALIAS_PREFIX "%zu" MW_SPF_ALIAS_SUFFIX, idx);
}

static void put_target(mw_spf_eval *ev, mw_buf *out, const char *spec, const char *context)
{
    if (plain_name(spec))
        mw_buf_puts(out, spec);
    else
        put_alias(out, alias_new(ev, MW_SPF_ALIAS_NAME, spec, context, -1, -1));
}

typedef struct pieces {
    char  **v;
    size_t  n;
} pieces;

static void piece_add(pieces *p, mw_buf *b)
{
    p->v = mw_reallocarray(p->v, p->n + 1, sizeof *p->v);
    p->v[p->n++] = mw_buf_steal(b);
}

/* The macro-free text libspf2 compiles for a record that passed our parser. */
static void rewrite(mw_spf_eval *ev, const mw_spf_record *rec, const char *domain, mw_buf *out)
{
    char ip[64];
    pieces mech = {0};
    mw_buf t = MW_BUF_INIT, redirect = MW_BUF_INIT, exp = MW_BUF_INIT;
    for (size_t i = 0; i < rec->n; i++) {
        const mw_spf_term *m = &rec->t[i];
        char q[2] = {m->qual, '\0'};
        switch (m->kind) {
        case MW_SPF_T_ALL:
            mw_buf_printf(&t, "%sall", q);
            break;
        case MW_SPF_T_INCLUDE:
        case MW_SPF_T_EXISTS:
            mw_buf_printf(&t, "%s%s:", q, m->kind == MW_SPF_T_INCLUDE ? "include" : "exists");
            put_target(ev, &t, m->spec, domain);
            break;
        case MW_SPF_T_A:
        case MW_SPF_T_MX:
            if (m->cidr4 == 0 || m->cidr6 == 0) {
                mw_buf_printf(&t, "%sexists:", q);
                put_alias(&t, alias_new(ev, m->kind == MW_SPF_T_A ? MW_SPF_ALIAS_A
                                                                : MW_SPF_ALIAS_MX,
                                        m->spec, domain, m->cidr4, m->cidr6));
                break;
            }
            mw_buf_printf(&t, "%s%s", q, m->kind == MW_SPF_T_A ? "a" : "mx");
            if (m->spec) {
                mw_buf_putc(&t, ':');
                put_target(ev, &t, m->spec, domain);
            }
            if (m->cidr4 >= 0)
                mw_buf_printf(&t, "/%d", m->cidr4);
            if (m->cidr6 >= 0)
                mw_buf_printf(&t, "//%d", m->cidr6);
            break;
        case MW_SPF_T_PTR:
            mw_buf_printf(&t, "%sexists:", q);
            put_alias(&t, alias_new(ev, MW_SPF_ALIAS_PTR, m->spec, domain, -1, -1));
            break;
        case MW_SPF_T_IP4:
            if (m->cidr4 == 0) {
                mw_buf_printf(&t, "%sip4:0.0.0.0/1", q);
                piece_add(&mech, &t);
                mw_buf_printf(&t, "%sip4:128.0.0.0/1", q);
                break;
            }
            inet_ntop(AF_INET, m->net, ip, sizeof ip);
            mw_buf_printf(&t, "%sip4:%s", q, ip);
            if (m->cidr4 > 0)
                mw_buf_printf(&t, "/%d", m->cidr4);
            break;
        case MW_SPF_T_IP6:
            if (m->cidr6 == 0) {
                mw_buf_printf(&t, "%sip6:::/1", q);
                piece_add(&mech, &t);
                mw_buf_printf(&t, "%sip6:8000::/1", q);
                break;
            }
            inet_ntop(AF_INET6, m->net, ip, sizeof ip);
            mw_buf_printf(&t, "%sip6:%s", q, ip);
            if (m->cidr6 > 0)
                mw_buf_printf(&t, "/%d", m->cidr6);
            break;
        case MW_SPF_T_REDIRECT:
            if (!rec->has_all) {  /* RFC 7208 6.1: ignored when "all" is present */
                mw_buf_puts(&redirect, " redirect=");
                put_target(ev, &redirect, m->spec, domain);
            }
            break;
        case MW_SPF_T_EXP:
            mw_buf_puts(&exp, " exp=");
            put_alias(&exp, alias_new(ev, MW_SPF_ALIAS_EXP, m->spec, domain, -1, -1));
            break;
        case MW_SPF_T_UNKNOWN_MOD:
            break;                /* ignored (RFC 7208 6); libspf2 refuses some */
        }
        if (t.len)
            piece_add(&mech, &t);
    }

    /* chunks of at most MW_SPF_CHUNK_BUDGET estimated compiled bytes */
    size_t *starts = mw_calloc(mech.n + 2, sizeof *starts);
    size_t nchunks = 1, used = 0;
    for (size_t i = 0; i < mech.n; i++) {
        size_t cost = strlen(mech.v[i]) + 8;
        if (used && used + cost > MW_SPF_CHUNK_BUDGET) {
            starts[nchunks++] = i;
            used = 0;
        }
        used += cost;
    }
    starts[nchunks] = mech.n;
    size_t *ids = mw_calloc(nchunks, sizeof *ids);
    for (size_t c = 1; c < nchunks; c++)
        ids[c] = alias_new(ev, MW_SPF_ALIAS_CONT, NULL, domain, -1, -1);
    for (size_t c = 0; c < nchunks; c++) {
        mw_buf b = MW_BUF_INIT;
        mw_buf_puts(&b, "v=spf1");
        for (size_t i = starts[c]; i < starts[c + 1]; i++) {
            mw_buf_putc(&b, ' ');
            mw_buf_puts(&b, mech.v[i]);
        }
        if (c + 1 < nchunks) {
            mw_buf_puts(&b, " redirect=");
            put_alias(&b, ids[c + 1]);
        } else {
            mw_buf_append(&b, redirect.data ? redirect.data : "", redirect.len);
        }
        mw_buf_append(&b, exp.data ? exp.data : "", exp.len);
        if (c == 0) {
            mw_buf_append(out, b.data, b.len);
            mw_buf_free(&b);
        } else {
            ev->alias[ids[c]].text = mw_buf_steal(&b);
        }
    }
    free(ids);
    free(starts);
    for (size_t i = 0; i < mech.n; i++)
        free(mech.v[i]);
    free(mech.v);
    mw_buf_free(&t);
    mw_buf_free(&redirect);
    mw_buf_free(&exp);
}

/*
 * get_spf: fetch, check and compile the record of spf_request->cur_dom.
 * Errors follow libspf2's convention: SPF_E_DNS_ERROR makes an include
 * temperror, any other error permerror; at the top level the caller maps
 * the result.
 */
static SPF_errcode_t layer_get_spf(SPF_server_t *server, SPF_request_t *req,
                                   SPF_response_t *resp, SPF_record_t **recp)
{
    mw_spf_eval *ev = server->resolver->hook;
    const char *dom = req->cur_dom;
    *recp = NULL;
    bool top = ev->fetches++ == 0;
    if (!dom || !*dom) {
        set_result(resp, SPF_RESULT_PERMERROR, SPF_E_NOT_CONFIG);
        SPF_response_add_error(resp, SPF_E_NOT_CONFIG, "No domain to look up");
        return SPF_E_NOT_CONFIG;
    }
    long ai = alias_index(ev, dom);
    if (ai >= 0 && ev->alias[ai].kind == MW_SPF_ALIAS_CONT && ev->alias[ai].text) {
        /* the next chunk of a long record: no DNS, not a term */
        SPF_errcode_t err = SPF_record_compile(server, resp, recp, ev->alias[ai].text);
        if (err != SPF_E_SUCCESS) {
            if (*recp) {
                SPF_record_free(*recp);
                *recp = NULL;
            }
            set_result(resp, SPF_RESULT_PERMERROR, err);
            SPF_response_add_error(resp, err, "Failed to compile SPF record for '%s'",
                                   ev->alias[ai].context);
        }
        return err;
    }
    if (ai >= 0)
        dom = alias_target(ev, &ev->alias[ai]);
    if (!top && !count_term(ev)) {
        set_result(resp, SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR);
        return SPF_E_DNS_ERROR;
    }

    mw_dns_answer *a = NULL;
    mw_dns_status st = eval_query(ev, dom, MW_DNS_T_TXT, !top, &a);
    switch (st) {
    case MW_DNS_OK:
        break;
    case MW_DNS_NXDOMAIN:
    case MW_DNS_NODATA:
    case MW_DNS_PERMFAIL:
        mw_dns_answer_free(&a);
        set_result(resp, SPF_RESULT_NONE, SPF_E_NOT_SPF);
        SPF_response_add_error(resp, SPF_E_NOT_SPF, "%s%s for '%s'",
                               top ? "" : "include/redirect target: ",
                               st == MW_DNS_NXDOMAIN ? "Domain does not exist"
                               : st == MW_DNS_NODATA ? "No TXT records"
                                                     : "Unusable domain name",
                               dom);
        return SPF_E_NOT_SPF;
    case MW_DNS_TEMPFAIL:
        mw_dns_answer_free(&a);
        set_result(resp, SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR);
        SPF_response_add_error(resp, SPF_E_DNS_ERROR, "Temporary DNS failure for '%s'", dom);
        return SPF_E_DNS_ERROR;
    }

    mw_buf txt = MW_BUF_INIT, rec = MW_BUF_INIT;
    unsigned found = 0;
    for (size_t i = 0; i < a->nrr; i++) {
        if (a->rr[i].type != MW_DNS_T_TXT || !mw_dns_rr_txt(&a->rr[i], &txt))
            continue;
        if (!mw_spf_is_record(txt.len ? txt.data : "", txt.len))
            continue;
        if (found++ == 0) {
            mw_buf_reset(&rec);
            mw_buf_append(&rec, txt.data, txt.len);
        }
    }
    mw_buf_free(&txt);
    mw_dns_answer_free(&a);

    SPF_errcode_t err;
    if (found == 0) {
        err = set_result(resp, SPF_RESULT_NONE, SPF_E_NOT_SPF);
        SPF_response_add_error(resp, err, "%sNo SPF record for '%s'",
                               top ? "" : "include/redirect target: ", dom);
    } else if (found > 1) {
        err = set_result(resp, SPF_RESULT_PERMERROR, SPF_E_MULTIPLE_RECORDS);
        SPF_response_add_error(resp, err, "Multiple SPF records for '%s'", dom);
    } else {
        mw_spf_record parsed;
        char why[256];
        if (!mw_spf_record_parse(rec.data, rec.len, &parsed, why, sizeof why)) {
            err = set_result(resp, SPF_RESULT_PERMERROR, SPF_E_SYNTAX);
            SPF_response_add_error(resp, err, "SPF record of '%s': %s", dom, why);
        } else {
            mw_buf out = MW_BUF_INIT;
            rewrite(ev, &parsed, dom, &out);
            mw_spf_record_free(&parsed);
            ev->records++;
            err = SPF_record_compile(server, resp, recp, mw_buf_cstr(&out));
            if (err != SPF_E_SUCCESS) {
                if (*recp) {
                    SPF_record_free(*recp);
                    *recp = NULL;
                }
                set_result(resp, SPF_RESULT_PERMERROR, err);
                SPF_response_add_error(resp, err, "Failed to compile SPF record for '%s'", dom);
            }
            mw_buf_free(&out);
        }
    }
    mw_buf_free(&rec);
    return err;
}

/*
 * get_exp: libspf2 hands us the exp= of the record whose explanation counts
 * (our alias); remember which one and hand back a placeholder.  No DNS
 * here: the caller builds the text only when the final result is fail.
 */
static SPF_errcode_t layer_get_exp(SPF_server_t *server, const char *domain, char **bufp,
                                   size_t *buflenp)
{
    mw_spf_eval *ev = server->resolver->hook;
    long ai = alias_index(ev, domain);
    if (ai >= 0 && ev->alias[ai].kind == MW_SPF_ALIAS_EXP)
        ev->exp_alias = ai;
    static const char marker[] = "mailwarden-exp";
    if (*buflenp < sizeof marker) {
        *bufp = mw_realloc(*bufp, sizeof marker);
        *buflenp = sizeof marker;
    }
    memcpy(*bufp, marker, sizeof marker);
    return SPF_E_SUCCESS;
}

char *mw_spf_eval_explanation(mw_spf_eval *ev)
{
    if (ev->exp_alias < 0 || (size_t)ev->exp_alias >= ev->nalias)
        return NULL;
    mw_spf_alias *al = &ev->alias[ev->exp_alias];
    const char *dom = alias_target(ev, al);
    unsigned left = mw_spf_eval_remaining(ev);
    if (left == 0 || !*dom)
        return NULL;
    if (left > ev->query_cap_ms)
        left = ev->query_cap_ms;
    mw_dns_answer *a = NULL;
    char *res = NULL;
    if (mw_dns_query(ev->dns, dom, MW_DNS_T_TXT, left, &a) == MW_DNS_OK) {
        size_t n = 0, which = 0;
        for (size_t i = 0; i < a->nrr; i++)
            if (a->rr[i].type == MW_DNS_T_TXT) {
                n++;
                which = i;
            }
        mw_buf txt = MW_BUF_INIT;
        if (n == 1 && mw_dns_rr_txt(&a->rr[which], &txt) && txt.len > 0) {
            const char *save = ev->mctx.domain;
            ev->mctx.domain = al->context;
            /* non-ASCII and control bytes fail the explain-string syntax */
            res = mw_spf_expand_explain(&ev->mctx, txt.data, txt.len);
            ev->mctx.domain = save;
        }
        mw_buf_free(&txt);
    }
    mw_dns_answer_free(&a);
    return res;
}

static void layer_destroy(SPF_dns_server_t *server)
{
    free(server);
}

SPF_dns_server_t *mw_spf_dns_layer_new(mw_spf_eval *ev)
{
    SPF_dns_server_t *s = mw_calloc(1, sizeof *s);
    s->destroy = layer_destroy;
    s->lookup = layer_lookup;
    s->get_spf = layer_get_spf;
    s->get_exp = layer_get_exp;
    s->add_cache = NULL;
    s->layer_below = NULL;
    s->name = "mailwarden";
    s->hook = ev;
    return s;
}
