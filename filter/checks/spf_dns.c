/*
 * spf_dns.c - libspf2 DNS layer on top of mw_dns (see spf_dns.h).
 *
 * Design: the layer's hook points at one mw_spf_eval, i.e. at the state of a
 * single evaluation; a layer (and the SPF_server_t using it) is created per
 * evaluation, so concurrent evaluations never share mutable state.
 *
 * Threat notes: everything in an answer is attacker-controlled.  Rdata is
 * decoded with mw_dns's bounds-checked helpers; malformed RRs are skipped.
 * TXT data keeps embedded NULs (see spf_dns.h) instead of being silently cut.
 * The number of queries is bounded by libspf2's limits and by the deadline.
 *
 * Void lookups (RFC 7208 4.6.4): NXDOMAIN/NODATA answers to the lookups made
 * for a term (a, mx, ptr, exists, include, redirect, and the record itself)
 * count; the address lookups of the names an MX or PTR answer returned do not
 * (they are part of one term, and ptr validation of unrelated names must not
 * push a domain over the limit).  Type-99 questions are never asked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

void mw_spf_eval_init(mw_spf_eval *ev, mw_dns *dns, unsigned timeout_ms)
{
    memset(ev, 0, sizeof *ev);
    ev->dns = dns;
    ev->deadline_ms = mw_spf_now_ms() + timeout_ms;
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
    free_names(&ev->exp_domains, &ev->nexp);
    free_names(&ev->aux_names, &ev->naux);
    MW_FREE(&ev->dns_why);
}

unsigned mw_spf_eval_remaining(const mw_spf_eval *ev)
{
    uint64_t now = mw_spf_now_ms();
    return now >= ev->deadline_ms ? 0 : (unsigned)(ev->deadline_ms - now);
}

static bool is_aux_name(const mw_spf_eval *ev, const char *name)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '.')
        n--;
    for (size_t i = 0; i < ev->naux; i++)
        if (strlen(ev->aux_names[i]) == n && strncasecmp(ev->aux_names[i], name, n) == 0)
            return true;
    return false;
}

/*
 * One query on behalf of libspf2: deadline, void counting, error flags.
 * Returns the status; *out is set (free with mw_dns_answer_free) unless the
 * evaluation is aborted, in which case *out is NULL and TEMPFAIL returned.
 */
static mw_dns_status eval_query(mw_spf_eval *ev, const char *name, uint16_t type,
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
    ev->queries++;
    mw_dns_status st = mw_dns_query(ev->dns, name, type, left, out);
    switch (st) {
    case MW_DNS_NXDOMAIN:
    case MW_DNS_NODATA:
        if ((type == MW_DNS_T_A || type == MW_DNS_T_AAAA) && is_aux_name(ev, name))
            break;
        if (++ev->voids > MW_SPF_VOID_LIMIT) {
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
    rr->rr = mw_calloc(a->nrr, sizeof *rr->rr);
    rr->rr_buf_len = mw_calloc(a->nrr, sizeof *rr->rr_buf_len);
    rr->rr_buf_num = (int)a->nrr;
    if (type == MW_DNS_T_MX || type == MW_DNS_T_PTR)
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
            if (mw_dns_rr_name(r, name, sizeof name)) {
                rr_put(rr, n++, name, strlen(name));
                remember_aux(ev, name);
            }
            break;
        default:
            break;
        }
    }
    mw_buf_free(&txt);
    rr->ttl = a->ttl;
    return n;
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *server, const char *domain, ns_type type,
                                  int should_cache)
{
    mw_spf_eval *ev = server->hook;
    (void)should_cache;

    if (type == ns_t_spf)       /* RFC 7208 3.1: type 99 is not used; save the round trip */
        return SPF_dns_rr_new_init(server, domain, type, 0, NO_DATA);
    if (type != ns_t_a && type != ns_t_aaaa && type != ns_t_txt && type != ns_t_mx &&
        type != ns_t_ptr)
        return SPF_dns_rr_new_init(server, domain, type, 0, NO_RECOVERY);

    mw_dns_answer *a = NULL;
    mw_dns_status st = eval_query(ev, domain ? domain : "", (uint16_t)type, &a);
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(server, domain, type, 0, herrno_of(st));
    if (!rr)
        mw_panic("spf: out of memory");
    if (st == MW_DNS_OK && a) {
        if (rr_fill(ev, rr, a, (uint16_t)type) == 0)
            rr->herrno = NO_DATA;
    } else if (a) {
        rr->ttl = a->ttl;
    }
    mw_dns_answer_free(&a);
    return rr;
}

/* RFC 7208 4.5: "v=spf1" (any case) followed by a space or the end. */
static bool is_spf_record(const char *s, size_t len)
{
    return len >= 6 && strncasecmp(s, "v=spf1", 6) == 0 && (len == 6 || s[6] == ' ');
}

static SPF_errcode_t set_result(SPF_response_t *resp, SPF_result_t res, SPF_errcode_t err)
{
    resp->result = res;
    resp->reason = SPF_REASON_FAILURE;
    resp->err = err;
    return err;
}

/*
 * get_spf: fetch and compile the record of spf_request->cur_dom.  Errors
 * follow libspf2's convention: SPF_E_DNS_ERROR makes an include temperror,
 * any other error permerror; at the top level the caller maps the result.
 */
static SPF_errcode_t layer_get_spf(SPF_server_t *server, SPF_request_t *req,
                                   SPF_response_t *resp, SPF_record_t **recp)
{
    mw_spf_eval *ev = server->resolver->hook;
    const char *dom = req->cur_dom;
    *recp = NULL;
    if (!dom || !*dom) {
        set_result(resp, SPF_RESULT_PERMERROR, SPF_E_NOT_CONFIG);
        SPF_response_add_error(resp, SPF_E_NOT_CONFIG, "No domain to look up");
        return SPF_E_NOT_CONFIG;
    }

    mw_dns_answer *a = NULL;
    mw_dns_status st = eval_query(ev, dom, MW_DNS_T_TXT, &a);
    switch (st) {
    case MW_DNS_OK:
        break;
    case MW_DNS_NXDOMAIN:
    case MW_DNS_NODATA:
    case MW_DNS_PERMFAIL:
        mw_dns_answer_free(&a);
        set_result(resp, SPF_RESULT_NONE, SPF_E_NOT_SPF);
        SPF_response_add_error(resp, SPF_E_NOT_SPF, "%s%s for '%s'",
                               ev->records ? "include/redirect target: " : "",
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
        if (!is_spf_record(txt.len ? txt.data : "", txt.len))
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
                               ev->records ? "include/redirect target: " : "", dom);
    } else if (found > 1) {
        err = set_result(resp, SPF_RESULT_PERMERROR, SPF_E_MULTIPLE_RECORDS);
        SPF_response_add_error(resp, err, "Multiple SPF records for '%s'", dom);
    } else {
        ev->records++;
        /* libspf2 sees the record up to the first NUL; keep the fact visible. */
        if (memchr(rec.data, '\0', rec.len))
            ev->txt_nul = true;
        err = SPF_record_compile(server, resp, recp, mw_buf_cstr(&rec));
        if (err != SPF_E_SUCCESS) {
            if (*recp) {
                SPF_record_free(*recp);
                *recp = NULL;
            }
            set_result(resp, SPF_RESULT_PERMERROR, err);
            SPF_response_add_error(resp, err, "Failed to compile SPF record for '%s'", dom);
        }
    }
    mw_buf_free(&rec);
    return err;
}

/*
 * get_exp: remember the (expanded) exp= domain and hand back a marker.  No
 * DNS here: the caller fetches the text only when the final result is fail.
 */
static SPF_errcode_t layer_get_exp(SPF_server_t *server, const char *domain, char **bufp,
                                   size_t *buflenp)
{
    mw_spf_eval *ev = server->resolver->hook;
    ev->exp_domains = mw_reallocarray(ev->exp_domains, ev->nexp + 1, sizeof *ev->exp_domains);
    ev->exp_domains[ev->nexp] = mw_strdup(domain);   /* domain may alias *bufp */
    char marker[64];
    int n = snprintf(marker, sizeof marker, MW_SPF_EXP_MARKER "%zu", ev->nexp);
    ev->nexp++;
    if (*buflenp < (size_t)n + 1) {
        *bufp = mw_realloc(*bufp, (size_t)n + 1);
        *buflenp = (size_t)n + 1;
    }
    memcpy(*bufp, marker, (size_t)n + 1);
    return SPF_E_SUCCESS;
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
