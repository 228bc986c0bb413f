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
 *   - more than two void lookups is permerror (libspf2 has no counter);
 *   - the total evaluation has a deadline (temperror when it passes);
 *   - record selection follows RFC 7208 4.5 ("v=spf1" alone is a record);
 *   - IPv4-mapped IPv6 clients are evaluated as IPv4;
 *   - a domain that is not a multi-label LDH name gives none (RFC 7208 4.3);
 *   - the explanation is built here, only for fail, and only for exp= texts
 *     without macros (libspf2 garbles expansion; full expansion comes later).
 * Not (yet) corrected: libspf2 passes loopback clients without evaluation,
 * the 10-lookup limit is not carried across include:, /0 prefixes are
 * refused, embedded NULs truncate the record (visible in eval.txt_nul).
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
#include "spf_dns.h"
#include "strutil.h"

#define DEFAULT_TIMEOUT_MS 20000u
#define MAX_REASON_IN      300     /* input bytes of a reason kept */
#define MAX_EXPLANATION    1024

struct mw_spf {
    mw_dns  *dns;
    unsigned timeout_ms;
    char    *receiver;
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
    spf->receiver = mw_strdup(opt && opt->receiver && *opt->receiver ? opt->receiver : NULL);
    return spf;
}

void mw_spf_destroy(mw_spf **pspf)
{
    if (!pspf || !*pspf)
        return;
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

/*
 * The explanation for a fail: TXT at the exp= domain, exactly one record,
 * printable ASCII.  A text with macros is left for the full expander (NULL).
 */
static char *fetch_explanation(mw_spf_eval *ev, const char *domain)
{
    unsigned left = mw_spf_eval_remaining(ev);
    if (left == 0 || !domain || !*domain)
        return NULL;
    mw_dns_answer *a = NULL;
    char *res = NULL;
    if (mw_dns_query(ev->dns, domain, MW_DNS_T_TXT, left, &a) == MW_DNS_OK) {
        mw_buf txt = MW_BUF_INIT;
        size_t n = 0;
        for (size_t i = 0; i < a->nrr; i++)
            if (a->rr[i].type == MW_DNS_T_TXT)
                n++;
        for (size_t i = 0; n == 1 && i < a->nrr; i++) {
            if (a->rr[i].type != MW_DNS_T_TXT || !mw_dns_rr_txt(&a->rr[i], &txt))
                continue;
            bool ok = txt.len > 0 && txt.len <= MAX_EXPLANATION;
            for (size_t j = 0; ok && j < txt.len; j++) {
                unsigned char c = (unsigned char)txt.data[j];
                ok = c >= 0x20 && c < 0x7f && c != '%';
            }
            if (ok)
                res = mw_strndup(txt.data, txt.len);
        }
        mw_buf_free(&txt);
    }
    mw_dns_answer_free(&a);
    return res;
}

static char *explanation_of(mw_spf_eval *ev, SPF_response_t *resp)
{
    const char *e = SPF_response_get_explanation(resp);
    size_t ml = strlen(MW_SPF_EXP_MARKER);
    if (!e || strncmp(e, MW_SPF_EXP_MARKER, ml) != 0)
        return NULL;    /* no exp=: libspf2's default text, which we do not use */
    char *end;
    unsigned long idx = strtoul(e + ml, &end, 10);
    if (*end || idx >= ev->nexp)
        return NULL;
    return fetch_explanation(ev, ev->exp_domains[idx]);
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
    if (ev->abort == MW_SPF_ABORT_DEADLINE) {
        o->result = MW_SPF_TEMPERROR;
        set_reason(o, "SPF evaluation deadline exceeded");
        return;
    }
    if (ev->abort == MW_SPF_ABORT_VOID) {
        o->result = MW_SPF_PERMERROR;
        set_reason(o, "more than %d void DNS lookups (RFC 7208 4.6.4)", MW_SPF_VOID_LIMIT);
        return;
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
        case SPF_REASON_LOCALHOST:
            set_reason(o, "loopback client (libspf2 always allows localhost)");
            break;
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
    if (o->result == MW_SPF_FAIL && resp)
        o->explanation = explanation_of(ev, resp);
}

/* Decide the identity; false (with result none and a reason) if there is nothing to check. */
static bool pick_identity(mw_spf_outcome *o, const char *helo, const char *mailfrom,
                          mw_spf_scope scope)
{
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
    if (!at || at == mailfrom) {             /* RFC 7208 4.3: no local-part */
        mw_buf b = MW_BUF_INIT;
        mw_buf_puts(&b, "postmaster@");
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

    mw_spf_eval ev;
    mw_spf_eval_init(&ev, spf->dns, spf->timeout_ms);
    SPF_server_t *server = SPF_server_new_dns(mw_spf_dns_layer_new(&ev), 0);
    if (!server)
        mw_panic("spf: out of memory");
    /* libspf2 1.2.10's SPF_server_new_dns() does not take ownership of the
     * layer (destroy_resolver = 0); hand it over so SPF_server_free() frees it. */
    server->destroy_resolver = 1;
    if (spf->receiver)
        SPF_server_set_rec_dom(server, spf->receiver);
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
    /* Without a HELO libspf2 cannot expand %{h} and turns that into temperror,
     * which would defer the mail forever: expand it to "unknown" instead. */
    SPF_request_set_helo_dom(req, helo && *helo ? helo : "unknown");
    SPF_request_set_env_from(req, out->identity);

    SPF_response_t *resp = NULL;
    SPF_errcode_t err = SPF_request_query_mailfrom(req, &resp);
    finish(out, &ev, resp, err);

    if (mw_log_debug_enabled())
        mw_debug("spf: %s identity=%s result=%s queries=%u voids=%u",
                 scope == MW_SPF_SCOPE_HELO ? "helo" : "mailfrom", out->identity,
                 mw_spf_result_name(out->result), ev.queries, ev.voids);
    if (resp)
        SPF_response_free(resp);
    SPF_request_free(req);
    SPF_server_free(server);    /* frees the layer too */
    mw_spf_eval_fini(&ev);
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
