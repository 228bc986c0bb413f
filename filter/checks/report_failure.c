/*
 * report_failure.c - DMARC failure reports (RFC 9991): the fo decision,
 * the report message, redaction, the per-destination rate limit and the
 * spool between the daemon and `mailwarden report --failure`.
 *
 * Purpose
 *   The daemon decides at the end of a message whether the policy domain
 *   wants a report (ruf present, fo matching, report.failure on), builds it
 *   here and queues it in the spool; the report tool verifies external
 *   destinations, sends it through the SMTP client and journals it.
 *
 * Design and threat notes
 *   - Everything in a report comes from outside: header text, the envelope,
 *     the record's ruf.  Field values are reduced to printable ASCII with
 *     no line break; the reported header keeps its folding, but every line
 *     break becomes CRLF followed by a blank, so no line of it can begin a
 *     header or a MIME boundary, and the boundary also carries the report
 *     id (a hash of the content) and is checked against the body.
 *   - Redaction hashes local parts with unkeyed SHA-256 (16 hex digits):
 *     stable across reports so the owner can correlate, but a guessed
 *     address can be confirmed by hashing it: pseudonymous, not anonymous
 *     (docs/reports.md says so).
 *   - The limiter tracks at most MW_FAILREP_LIMIT_DESTS destinations per
 *     UTC hour: a flood of distinct ruf addresses cannot grow it, and each
 *     refusal is reported to the caller (counted, logged once per window).
 *   - Spool files are written to tmp/ with O_EXCL|O_NOFOLLOW, fsynced and
 *     renamed into new/ (then the directory fsynced): whole or absent.  The
 *     reader trusts nothing in them: every field is parsed again.
 *
 * See also: report_failure.h, engine/session_failrep.c,
 * tools/report_failure.c, docs/reports.md.
 */
#include "report_failure.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "alloc.h"
#include "dmarc.h"
#include "log.h"
#include "report.h"
#include "strutil.h"
#include "fileio.h"

#define FIELD_MAX   900      /* bytes of one feedback field value */
#define LINE_MAX_   998      /* RFC 5322 line limit */
#define SPOOL_MAGIC "mailwarden-failure-report 1"

/* ---- fo ------------------------------------------------------------------------------ */

bool mw_failrep_wanted(unsigned fo, const mw_failrep_facts *f, char *why, size_t whylen)
{
    const char *hit = NULL;

    if (!f->dmarc_fail) {
        snprintf(why, whylen, "DMARC did not fail");
        return false;
    }
    if (fo == 0)
        fo = MW_DMARC_FO_0;
    if ((fo & MW_DMARC_FO_0) && !f->spf_aligned && !f->dkim_aligned)
        hit = "fo=0: neither SPF nor DKIM gave an aligned pass";
    else if ((fo & MW_DMARC_FO_1) && (!f->spf_aligned || !f->dkim_aligned))
        hit = "fo=1: a mechanism gave no aligned pass";
    else if ((fo & MW_DMARC_FO_D) && f->dkim_failed)
        hit = "fo=d: a DKIM signature failed";
    else if ((fo & MW_DMARC_FO_S) && f->spf_failed)
        hit = "fo=s: SPF failed";
    if (hit == NULL) {
        snprintf(why, whylen, "fo%s%s%s%s asks for no report of this failure",
                 fo & MW_DMARC_FO_0 ? " 0" : "", fo & MW_DMARC_FO_1 ? " 1" : "",
                 fo & MW_DMARC_FO_D ? " d" : "", fo & MW_DMARC_FO_S ? " s" : "");
        return false;
    }
    snprintf(why, whylen, "%s", hit);
    return true;
}

/* ---- redaction ---------------------------------------------------------------------- */

static void sha256_hex(const void *p, size_t n, char *out, size_t nhex)
{
    static const char hx[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 < nhex)
        mw_panic("report_failure: SHA-256 failed");
    for (size_t i = 0; i < nhex; i++)
        out[i] = hx[(md[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[nhex] = '\0';
}

static bool is_atext(unsigned char c)
{
    return isalnum(c) || c >= 0x80 || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL);
}

static bool is_domain_start(unsigned char c)
{
    return isalnum(c) || c == '[' || c >= 0x80;
}

void mw_failrep_redact(const char *text, size_t len, mw_buf *out)
{
    size_t copied = 0;

    for (size_t i = 0; i < len; i++) {
        if (text[i] != '@' || i + 1 >= len || !is_domain_start((unsigned char)text[i + 1]))
            continue;
        size_t j = i;
        if (j > copied && text[j - 1] == '"') {
            /* a quoted local part: back to the opening quote on this line */
            size_t k = j - 1;
            while (k > copied && text[k - 1] != '"' && text[k - 1] != '\n' && text[k - 1] != '\r')
                k--;
            if (k > copied && text[k - 1] == '"')
                j = k - 1;
        } else {
            while (j > copied && is_atext((unsigned char)text[j - 1]))
                j--;
        }
        if (j == i)
            continue;   /* no local part */
        /* by length: a local part may hold a NUL (8-bit header text) */
        char *lp = mw_malloc(i - j);
        for (size_t k = 0; k < i - j; k++)
            lp[k] = (char)tolower((unsigned char)text[j + k]);
        char hex[17];
        sha256_hex(lp, i - j, hex, 16);
        free(lp);
        mw_buf_append(out, text + copied, j - copied);
        mw_buf_printf(out, "redacted-%s", hex);
        copied = i;
    }
    mw_buf_append(out, text + copied, len - copied);
}

void mw_failrep_header_append(mw_buf *hdrs, const char *name, const char *value, size_t vlen)
{
    mw_buf_puts(hdrs, name);
    /* a milter value keeps the blank after the colon (Postfix): as received */
    mw_buf_puts(hdrs, vlen > 0 && (value[0] == ' ' || value[0] == '\t') ? ":" : ": ");
    for (size_t i = 0; i < vlen; i++) {
        char c = value[i];
        if (c != '\r' && c != '\n') {
            mw_buf_putc(hdrs, c);
            continue;
        }
        if (c == '\r' && i + 1 < vlen && value[i + 1] == '\n')
            i++;
        mw_buf_puts(hdrs, "\r\n");
        if (i + 1 < vlen && value[i + 1] != ' ' && value[i + 1] != '\t')
            mw_buf_putc(hdrs, ' ');
    }
    mw_buf_puts(hdrs, "\r\n");
}

/* ---- building -------------------------------------------------------------------------- */

static const char *const wday[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static void rfc5322_date(time_t t, char *out, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", wday[tm.tm_wday], tm.tm_mday,
             mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool empty(const char *s)
{
    return s == NULL || *s == '\0';
}

/* One field line "Name: value": value flattened to printable ASCII (runs
 * of blanks and line breaks become one space, other bytes '?'), capped,
 * folded at a blank before column 78 where one exists. */
static void put_field(mw_buf *out, const char *name, const char *value)
{
    mw_buf v = MW_BUF_INIT;
    bool blank = false;

    if (empty(value))
        return;
    for (const char *p = value; *p != '\0' && v.len < FIELD_MAX; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            blank = true;
            continue;
        }
        if (blank && v.len > 0)
            mw_buf_putc(&v, ' ');
        blank = false;
        mw_buf_putc(&v, c >= 0x21 && c < 0x7f ? (char)c : '?');
    }
    size_t col = strlen(name) + 2;
    mw_buf_printf(out, "%s: ", name);
    const char *s = mw_buf_cstr(&v);
    while (*s != '\0') {
        const char *sp = strchr(s, ' ');
        size_t w = sp != NULL ? (size_t)(sp - s) : strlen(s);
        if (col > 1 && col + w > 78) {
            mw_buf_puts(out, "\r\n\t");
            col = 1;
        }
        mw_buf_append(out, s, w);
        col += w;
        s += w;
        if (*s == ' ') {
            s++;
            if (*s != '\0' && col + 1 <= 78) {
                mw_buf_putc(out, ' ');
                col++;
            }
        }
    }
    mw_buf_puts(out, "\r\n");
    mw_buf_free(&v);
}

/* The header section made safe for a MIME part (see the header comment). */
static bool put_headers(mw_buf *out, const char *h, size_t len)
{
    size_t col = 0;
    bool eight = false;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '\r' || c == '\n') {
            if (c == '\r' && i + 1 < len && h[i + 1] == '\n')
                i++;
            mw_buf_puts(out, "\r\n");
            col = 0;
            /* a continuation must start with a blank; a new field must
             * start with a name character: anything else is indented */
            if (i + 1 < len && h[i + 1] != ' ' && h[i + 1] != '\t' &&
                (h[i + 1] == '-' || h[i + 1] == '\r' || h[i + 1] == '\n' ||
                 (unsigned char)h[i + 1] < 0x21 || (unsigned char)h[i + 1] > 0x7e)) {
                mw_buf_putc(out, ' ');
                col = 1;
            }
            continue;
        }
        if (col >= LINE_MAX_ - 2) {
            mw_buf_puts(out, "\r\n ");
            col = 1;
        }
        if (c == '\0')
            c = '?';
        if (c >= 0x80)
            eight = true;
        mw_buf_putc(out, (char)c);
        col++;
    }
    if (col > 0)
        mw_buf_puts(out, "\r\n");
    return eight;
}

/* ASCII-only, single-line version of s for the human part. */
static const char *plain(mw_buf *b, const char *s)
{
    mw_buf_reset(b);
    for (; s != NULL && *s != '\0' && b->len < 200; s++)
        mw_buf_putc(b, (unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f ? *s : '?');
    if (b->len == 0)
        mw_buf_puts(b, "unknown");
    return mw_buf_cstr(b);
}

void mw_failrep_build(const mw_failrep_info *in, mw_buf *out, char id_out[33])
{
    mw_buf idsrc = MW_BUF_INIT, hdrs = MW_BUF_INIT, t = MW_BUF_INIT,
           t2 = MW_BUF_INIT, mf = MW_BUF_INIT, rt = MW_BUF_INIT, bnd = MW_BUF_INIT;
    char date[64], arrival[64];
    bool redact = in->mode == MW_FAILREP_REDACTED;

    mw_buf_reset(out);
    mw_buf_printf(&idsrc, "%s|%lld|%s|%s|%s|%s|", in->reporting_host ? in->reporting_host : "",
                  (long long)in->arrival, in->source_ip ? in->source_ip : "",
                  in->envelope_id ? in->envelope_id : "",
                  in->policy_domain ? in->policy_domain : "",
                  in->mail_from ? in->mail_from : "");
    mw_buf_append(&idsrc, in->headers ? in->headers : "", in->headers ? in->headers_len : 0);
    sha256_hex(idsrc.data ? idsrc.data : "", idsrc.len, id_out, 32);

    /* the reported header, redacted or not, made safe */
    const char *h = in->headers ? in->headers : "";
    size_t hlen = in->headers ? in->headers_len : 0;
    mw_buf red = MW_BUF_INIT;
    if (redact) {
        mw_failrep_redact(h, hlen, &red);
        h = red.data ? red.data : "";
        hlen = red.len;
    }
    bool eight = put_headers(&hdrs, h, hlen);
    mw_buf_free(&red);

    /* envelope addresses */
    const char *mail_from = in->mail_from ? in->mail_from : "";
    const char *rcpt = in->rcpt_to ? in->rcpt_to : "";
    if (redact) {
        mw_failrep_redact(mail_from, strlen(mail_from), &mf);
        mw_failrep_redact(rcpt, strlen(rcpt), &rt);
    } else {
        mw_buf_puts(&mf, mail_from);
        mw_buf_puts(&rt, rcpt);
    }

    rfc5322_date(in->arrival, arrival, sizeof arrival);
    rfc5322_date(in->arrival, date, sizeof date);
    for (unsigned n = 0;; n++) {
        mw_buf_reset(&bnd);
        mw_buf_printf(&bnd, "mw-failure-%s-%u", id_out, n);
        mw_buf pat = MW_BUF_INIT;
        mw_buf_printf(&pat, "\n--%s", mw_buf_cstr(&bnd));
        bool clash = hdrs.len > 0 && memmem(hdrs.data, hdrs.len, pat.data, pat.len) != NULL;
        mw_buf_free(&pat);
        if (!clash)
            break;
    }
    const char *b = mw_buf_cstr(&bnd);

    mw_buf_printf(out, "Date: %s\r\n", date);
    mw_buf_printf(out, "Subject: DMARC failure report for %s from %s\r\n",
                  plain(&t, in->reported_domain), plain(&t2, in->source_ip));
    mw_buf_printf(out, "Message-ID: <%s.failure@%s>\r\n", id_out, plain(&t, in->reporting_host));
    mw_buf_puts(out, "MIME-Version: 1.0\r\n");
    mw_buf_puts(out, "Auto-Submitted: auto-generated\r\n");
    mw_buf_printf(out, "Content-Type: multipart/report; report-type=feedback-report;\r\n"
                       "\tboundary=\"%s\"\r\n", b);
    if (eight)
        mw_buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
    mw_buf_puts(out, "\r\nThis is an RFC 9991 DMARC failure report (multipart/report).\r\n\r\n");

    /* 1: for people */
    mw_buf_printf(out, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n"
                       "Content-Transfer-Encoding: 7bit\r\n\r\n", b);
    mw_buf_printf(out, "This is an authentication failure report for a message that failed DMARC\r\n"
                       "for the domain %s", plain(&t, in->reported_domain));
    mw_buf_printf(out, " (policy domain %s).\r\n", plain(&t, in->policy_domain));
    mw_buf_printf(out, "It was received from %s at %s by %s;\r\n", plain(&t, in->source_ip),
                  arrival, plain(&t2, in->reporting_host));
    mw_buf_printf(out, "the receiver's handling: %s.\r\n", plain(&t, in->delivery_result));
    mw_buf_printf(out, "The message's header is attached%s.\r\n",
                  redact ? ", with the local part of every address replaced by a SHA-256 digest"
                         : "");
    if (in->headers_truncated)
        mw_buf_puts(out, "The header was longer than the report keeps: it is cut short.\r\n");
    mw_buf_puts(out, "\r\n");

    /* 2: the machine-readable part */
    mw_buf_printf(out, "--%s\r\nContent-Type: message/feedback-report\r\n\r\n", b);
    put_field(out, "Feedback-Type", "auth-failure");
    put_field(out, "Version", "1");
    put_field(out, "User-Agent", in->user_agent);
    put_field(out, "Auth-Failure", "dmarc");
    put_field(out, "Authentication-Results", in->authres);
    put_field(out, "Original-Envelope-Id", in->envelope_id);
    mw_buf_reset(&t);
    mw_buf_printf(&t, "<%s>", mw_buf_cstr(&mf));
    put_field(out, "Original-Mail-From", mw_buf_cstr(&t));
    if (rt.len > 0) {
        mw_buf_reset(&t);
        mw_buf_printf(&t, "<%s>", mw_buf_cstr(&rt));
        put_field(out, "Original-Rcpt-To", mw_buf_cstr(&t));
    }
    put_field(out, "Arrival-Date", arrival);
    put_field(out, "Source-IP", in->source_ip);
    put_field(out, "Reported-Domain", in->reported_domain);
    put_field(out, "Identity-Alignment", in->dkim_aligned && in->spf_aligned ? "dkim, spf"
                                         : in->dkim_aligned                  ? "dkim"
                                         : in->spf_aligned                   ? "spf"
                                                                             : "none");
    put_field(out, "Delivery-Result", in->delivery_result);
    for (size_t i = 0; i < in->ndkim; i++) {
        if (empty(in->dkim[i].domain))
            continue;
        put_field(out, "DKIM-Domain", in->dkim[i].domain);
        put_field(out, "DKIM-Selector", in->dkim[i].selector);
        break;
    }
    mw_buf_puts(out, "\r\n");

    /* 3: the header */
    mw_buf_printf(out, "--%s\r\nContent-Type: text/rfc822-headers\r\n", b);
    mw_buf_printf(out, "Content-Transfer-Encoding: %s\r\n\r\n", eight ? "8bit" : "7bit");
    mw_buf_append(out, hdrs.data ? hdrs.data : "", hdrs.len);
    mw_buf_printf(out, "\r\n--%s--\r\n", b);

    mw_buf_free(&idsrc);
    mw_buf_free(&hdrs);
    mw_buf_free(&t);
    mw_buf_free(&t2);
    mw_buf_free(&mf);
    mw_buf_free(&rt);
    mw_buf_free(&bnd);
}

/* ---- rate limit ------------------------------------------------------------------------- */

typedef struct lim_entry {
    char    *dest;
    unsigned count;
    bool     logged;
} lim_entry;

#define LIM_CAP (2 * MW_FAILREP_LIMIT_DESTS)   /* power of two */

struct mw_failrep_limiter {
    pthread_mutex_t mu;
    long long       window;     /* UTC hour number */
    lim_entry      *e;          /* LIM_CAP slots */
    size_t          n;
    bool            full_logged;
};

mw_failrep_limiter *mw_failrep_limiter_create(void)
{
    mw_failrep_limiter *l = mw_calloc(1, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    l->e = mw_calloc(LIM_CAP, sizeof *l->e);
    l->window = -1;
    return l;
}

static void lim_reset(mw_failrep_limiter *l)
{
    for (size_t i = 0; i < LIM_CAP; i++) {
        free(l->e[i].dest);
        memset(&l->e[i], 0, sizeof l->e[i]);
    }
    l->n = 0;
    l->full_logged = false;
}

void mw_failrep_limiter_destroy(mw_failrep_limiter **pl)
{
    mw_failrep_limiter *l = *pl;
    if (l == NULL)
        return;
    lim_reset(l);
    free(l->e);
    pthread_mutex_destroy(&l->mu);
    free(l);
    *pl = NULL;
}

static uint64_t hash_ci(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)tolower((unsigned char)*s);
        h *= 1099511628211ULL;
    }
    return h;
}

mw_failrep_take mw_failrep_limiter_take(mw_failrep_limiter *l, const char *dest, unsigned rate,
                                        time_t now, bool *log_it)
{
    mw_failrep_take r;
    long long w = (long long)(now / 3600);

    *log_it = false;
    pthread_mutex_lock(&l->mu);
    if (w != l->window) {
        lim_reset(l);
        l->window = w;
    }
    size_t i = hash_ci(dest) & (LIM_CAP - 1);
    while (l->e[i].dest != NULL && strcasecmp(l->e[i].dest, dest) != 0)
        i = (i + 1) & (LIM_CAP - 1);
    lim_entry *e = &l->e[i];
    if (e->dest == NULL) {
        if (l->n >= MW_FAILREP_LIMIT_DESTS) {
            *log_it = !l->full_logged;
            l->full_logged = true;
            r = MW_FRL_FULL;
            goto out;
        }
        e->dest = mw_strdup(dest);
        l->n++;
    }
    if (e->count >= rate) {
        *log_it = !e->logged;
        e->logged = true;
        r = MW_FRL_LIMITED;
        goto out;
    }
    e->count++;
    r = MW_FRL_OK;
out:
    pthread_mutex_unlock(&l->mu);
    return r;
}

/* ---- spool ----------------------------------------------------------------------------- */

void mw_failrep_spool_format(const mw_failrep_spooled *r, mw_buf *out)
{
    mw_buf_reset(out);
    mw_buf_printf(out, "%s\nid %s\ndomain %s\ntime %lld\n", SPOOL_MAGIC, r->id, r->domain,
                  (long long)r->time);
    for (size_t i = 0; i < r->ndest; i++)
        mw_buf_printf(out, "to %s\n", r->dest[i]);
    mw_buf_putc(out, '\n');
    mw_buf_append(out, r->msg, r->msg_len);
}

void mw_failrep_spooled_clear(mw_failrep_spooled *r)
{
    for (size_t i = 0; i < r->ndest; i++)
        free(r->dest[i]);
    memset(r, 0, sizeof *r);
}

static bool fail(char *why, size_t whylen, const char *msg, size_t line)
{
    snprintf(why, whylen, "line %zu: %s", line, msg);
    return false;
}

bool mw_failrep_spool_parse(const char *data, size_t len, mw_failrep_spooled *out, char *why,
                            size_t whylen)
{
    size_t pos = 0, line = 0;
    bool have_id = false, have_domain = false, have_time = false;

    memset(out, 0, sizeof *out);
    if (len > MW_FAILREP_MAX_FILE)
        return fail(why, whylen, "file too large", 0);
    for (;;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        line++;
        if (nl == NULL)
            return fail(why, whylen, "no end of the envelope (blank line)", line);
        size_t n = (size_t)(nl - (data + pos));
        const char *l = data + pos;
        pos += n + 1;
        if (n > 600)
            return fail(why, whylen, "line too long", line);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)l[i] < 0x20 || (unsigned char)l[i] > 0x7e)
                return fail(why, whylen, "control or 8-bit byte in the envelope", line);
        if (line == 1) {
            if (n != strlen(SPOOL_MAGIC) || memcmp(l, SPOOL_MAGIC, n) != 0)
                return fail(why, whylen, "not a failure report spool file", line);
            continue;
        }
        if (n == 0)
            break;
        const char *sp = memchr(l, ' ', n);
        if (sp == NULL)
            return fail(why, whylen, "no value", line);
        size_t kn = (size_t)(sp - l), vn = n - kn - 1;
        char v[601];
        memcpy(v, sp + 1, vn);
        v[vn] = '\0';
        if (kn == 2 && memcmp(l, "id", 2) == 0 && !have_id) {
            if (vn != 32 || strspn(v, "0123456789abcdef") != 32)
                return fail(why, whylen, "bad id", line);
            memcpy(out->id, v, 33);
            have_id = true;
        } else if (kn == 6 && memcmp(l, "domain", 6) == 0 && !have_domain) {
            if (vn >= sizeof out->domain || !mw_domain_valid(v))
                return fail(why, whylen, "bad domain", line);
            memcpy(out->domain, v, vn + 1);
            have_domain = true;
        } else if (kn == 4 && memcmp(l, "time", 4) == 0 && !have_time) {
            if (vn == 0 || vn > 18 || strspn(v, "0123456789") != vn)
                return fail(why, whylen, "bad time", line);
            out->time = (time_t)strtoll(v, NULL, 10);
            have_time = true;
        } else if (kn == 2 && memcmp(l, "to", 2) == 0) {
            if (out->ndest >= MW_FAILREP_MAX_DESTS)
                return fail(why, whylen, "too many destinations", line);
            mw_buf uri = MW_BUF_INIT;
            char *addr = NULL, pwhy[200];
            unsigned long long lim = 0;
            mw_buf_printf(&uri, "mailto:%s", v);
            bool ok = mw_report_rua_parse(mw_buf_cstr(&uri), &addr, &lim, pwhy, sizeof pwhy) &&
                      strcmp(addr, v) == 0;
            mw_buf_free(&uri);
            if (!ok) {
                free(addr);
                return fail(why, whylen, "unsafe destination address", line);
            }
            out->dest[out->ndest++] = addr;
        } else {
            return fail(why, whylen, "unknown or repeated field", line);
        }
    }
    if (!have_id || !have_domain || !have_time || out->ndest == 0)
        return fail(why, whylen, "id, domain, time or to missing", line);
    if (pos >= len)
        return fail(why, whylen, "no message", line);
    out->msg = data + pos;
    out->msg_len = len - pos;
    return true;
}

static bool mkdir_ok(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST)
        return true;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return false;
}

bool mw_failrep_spool_write(const char *dir, const char *name, const mw_buf *data, char *err,
                            size_t errlen)
{
    mw_buf tdir = MW_BUF_INIT, ndir = MW_BUF_INIT, tmp = MW_BUF_INIT, fin = MW_BUF_INIT;
    bool ok = false;
    int fd = -1;

    mw_buf_printf(&tdir, "%s/tmp", dir);
    mw_buf_printf(&ndir, "%s/new", dir);
    mw_buf_printf(&tmp, "%s/%s", mw_buf_cstr(&tdir), name);
    mw_buf_printf(&fin, "%s/%s", mw_buf_cstr(&ndir), name);
    if (!mkdir_ok(dir, err, errlen) || !mkdir_ok(mw_buf_cstr(&tdir), err, errlen) ||
        !mkdir_ok(mw_buf_cstr(&ndir), err, errlen))
        goto out;
    fd = open(mw_buf_cstr(&tmp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", mw_buf_cstr(&tmp), strerror(errno));
        goto out;
    }
    if (!mw_write_all(fd, data->data, data->len) || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", mw_buf_cstr(&tmp), strerror(errno));
        (void)unlink(mw_buf_cstr(&tmp));
        goto out;
    }
    if (rename(mw_buf_cstr(&tmp), mw_buf_cstr(&fin)) != 0) {
        snprintf(err, errlen, "%s: %s", mw_buf_cstr(&fin), strerror(errno));
        (void)unlink(mw_buf_cstr(&tmp));
        goto out;
    }
    int dfd = open(mw_buf_cstr(&ndir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    ok = true;
out:
    if (fd >= 0)
        close(fd);
    mw_buf_free(&tdir);
    mw_buf_free(&ndir);
    mw_buf_free(&tmp);
    mw_buf_free(&fin);
    return ok;
}
