/*
 * report_mail.c - the pieces of a report mail: gzip, rua URIs, the MIME
 * message (RFC 9990 section 5.2 / RFC 7489 section 7.2.1.1) and its DKIM
 * signature by our own signer.
 *
 * Design notes
 *   - The message is built with CRLF line ends and only 7-bit content
 *     (the attachment is base64, the text part ASCII), so no relay needs to
 *     convert it and the DKIM signature survives.
 *   - Signing feeds our own headers and body to the signer exactly as they
 *     will be sent; the DKIM-Signature headers go on top.
 *   - rua: only mailto: is deliverable; "!10m" style size limits (RFC 7489
 *     section 6.2) are parsed in the RFC 7489 format (saturating, at most
 *     16 digits) and ignored, junk included, in RFC 9990's; percent-
 *     encoding in the address is decoded; a ?query part is ignored.
 *   - Threat notes: the rua comes from the DMARC record of whoever sent us
 *     mail.  The decoded address must be a dot-atom local part (1..64
 *     bytes of RFC 5322 atext) '@' a valid host name, 254 bytes at most:
 *     nothing else can reach RCPT TO, the To: header or the state journal
 *     (which refuses blanks, controls and tokens over 512 bytes).
 *
 * See also: report.h, filter/tools/report.c.
 */
#include "report.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "alloc.h"
#include "buf.h"
#include "strutil.h"

#define RUA_LOCAL_MAX 64    /* RFC 5321 4.5.3.1.1 */
#define RUA_ADDR_MAX  254   /* RFC 5321 4.5.3.1.3 path minus the brackets */

bool mw_report_gzip(const void *in, size_t len, mw_buf *out)
{
    z_stream z;
    int rc;

    mw_buf_reset(out);
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    size_t bound = deflateBound(&z, (uLong)len) + 64;
    mw_buf_reserve(out, bound);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out->data;
    z.avail_out = (uInt)bound;
    rc = deflate(&z, Z_FINISH);
    if (rc == Z_STREAM_END)
        out->len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        mw_buf_reset(out);
        return false;
    }
    out->data[out->len] = '\0';
    return true;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 5322 atext (a dot-atom local part is atext and single inner dots). */
static bool is_atext(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool rua_fail(mw_buf *a, char *why, size_t whylen, const char *reason)
{
    snprintf(why, whylen, "%s", reason);
    mw_buf_free(a);
    return false;
}

bool mw_report_rua_parse(const char *uri, char **addr, unsigned long long *max_size, char *why,
                         size_t whylen)
{
    return mw_report_rua_parse_fmt(uri, MW_REPORT_FMT_RFC7489, addr, max_size, why, whylen);
}

bool mw_report_rua_parse_fmt(const char *uri, mw_report_format f, char **addr,
                             unsigned long long *max_size, char *why, size_t whylen)
{
    mw_buf a = MW_BUF_INIT;
    const char *p, *end;
    size_t at = 0, nat = 0;

    *addr = NULL;
    *max_size = 0;
    while (isspace((unsigned char)*uri))
        uri++;
    if (strncasecmp(uri, "mailto:", 7) != 0)
        return rua_fail(&a, why, whylen, "not a mailto: URI");
    p = uri + 7;
    end = p + strcspn(p, "!?");
    /* the address is bounded before anything is decoded or copied */
    if ((size_t)(end - p) > 3 * RUA_ADDR_MAX)
        return rua_fail(&a, why, whylen, "address longer than 254 bytes");
    for (const char *q = p; q < end; q++) {
        int c = (unsigned char)*q;
        if (c == '%' && q + 2 < end && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
            c = hexval(q[1]) * 16 + hexval(q[2]);
            q += 2;
        }
        /* only a dot-atom local part and a host name: no blanks, controls,
         * quotes, brackets or commas can reach RCPT TO or the To: header */
        if (c == '@') {
            at = a.len;
            nat++;
        } else if (c != '.' && !is_atext(c)) {
            return rua_fail(&a, why, whylen, "bad character in the address");
        }
        mw_buf_putc(&a, (char)c);
    }
    const char *s = mw_buf_cstr(&a);
    if (nat != 1 || at == 0 || at + 1 >= a.len || !mw_domain_valid(s + at + 1) ||
        s[a.len - 1] == '.')
        return rua_fail(&a, why, whylen, "not an address local@domain");
    if (at > RUA_LOCAL_MAX)
        return rua_fail(&a, why, whylen, "local part longer than 64 bytes");
    if (a.len > RUA_ADDR_MAX)
        return rua_fail(&a, why, whylen, "address longer than 254 bytes");
    if (s[0] == '.' || s[at - 1] == '.' || strstr(s, "..") != NULL)
        return rua_fail(&a, why, whylen, "not an address local@domain (dots)");
    for (char *d = a.data + at; *d != '\0'; d++)
        *d = (char)tolower((unsigned char)*d);
    /* RFC 9990 has no size limits: whatever follows '!' is ignored */
    if (*end == '!' && f == MW_REPORT_FMT_RFC7489) {
        const char *q = end + 1;
        unsigned long long v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*q) && digits < 16) {
            v = v * 10 + (unsigned long long)(*q++ - '0');
            digits++;
        }
        if (digits == 0 || isdigit((unsigned char)*q))
            return rua_fail(&a, why, whylen, "bad size limit after '!'");
        unsigned shift = 0;
        switch (tolower((unsigned char)*q)) {
        case 'k': shift = 10; q++; break;
        case 'm': shift = 20; q++; break;
        case 'g': shift = 30; q++; break;
        case 't': shift = 40; q++; break;
        default: break;
        }
        if (*q != '\0' && *q != '?')
            return rua_fail(&a, why, whylen, "bad size limit after '!'");
        /* saturate instead of wrapping: a huge limit is no limit */
        v = v > (UINT64_MAX >> shift) ? UINT64_MAX : v << shift;
        *max_size = v;
    }
    *addr = mw_buf_steal(&a);
    return true;
}

static void base64_lines(const unsigned char *p, size_t n, mw_buf *out)
{
    unsigned char line[80];

    for (size_t i = 0; i < n; i += 57) {
        size_t k = n - i < 57 ? n - i : 57;
        int w = EVP_EncodeBlock(line, p + i, (int)k);
        mw_buf_append(out, line, (size_t)w);
        mw_buf_puts(out, "\r\n");
    }
}

static uint32_t fnv32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* RFC 5322 date (C locale names) and "YYYY-MM-DD HH:MM:SS", both UTC. */
static void fmt_time(time_t t, char *out, size_t len, bool rfc5322)
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    if (rfc5322)
        snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", wd[tm.tm_wday % 7], tm.tm_mday,
                 mo[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    else
        snprintf(out, len, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void mw_report_mime(const mw_report *r, const mw_report_meta *m, const mw_report_mail *mail,
                    const mw_buf *gz, mw_buf *out)
{
    char date[64], b[64], e[64];
    mw_buf subj = MW_BUF_INIT;
    char boundary[80];

    mw_buf_reset(out);
    fmt_time(mail->now, date, sizeof date, true);
    fmt_time(r->begin, b, sizeof b, false);
    fmt_time(r->end, e, sizeof e, false);
    snprintf(boundary, sizeof boundary, "=_mailwarden_report_%s", mail->id);

    mw_buf_printf(&subj, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>",
                  r->policy_domain, m->receiver, mail->id);
    mw_buf_printf(out, "From: %s\r\n", mail->from);
    mw_buf_printf(out, "To: %s\r\n", mail->to);
    mw_buf_printf(out, "Date: %s\r\n", date);
    if (subj.len <= 78) {
        mw_buf_printf(out, "%s\r\n", mw_buf_cstr(&subj));
    } else {   /* fold before "Submitter:" and "Report-ID:" */
        mw_buf_printf(out, "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>\r\n",
                      r->policy_domain, m->receiver, mail->id);
    }
    mw_buf_printf(out, "Message-ID: <%s.%08x@%s>\r\n", mail->id, fnv32(mail->to),
                  mail->msgid_host);
    mw_buf_puts(out, "MIME-Version: 1.0\r\n");
    mw_buf_puts(out, "Auto-Submitted: auto-generated\r\n");
    mw_buf_printf(out, "Content-Type: multipart/mixed;\r\n boundary=\"%s\"\r\n", boundary);
    mw_buf_puts(out, "\r\n");
    mw_buf_puts(out, "This is a DMARC aggregate report in MIME format.\r\n\r\n");
    mw_buf_printf(out, "--%s\r\n", boundary);
    mw_buf_puts(out, "Content-Type: text/plain; charset=us-ascii\r\n"
                     "Content-Transfer-Encoding: 7bit\r\n\r\n");
    mw_buf_printf(out,
                  "This is a DMARC aggregate report (%s) for %s\r\n"
                  "covering %s to %s UTC, %llu message%s.\r\n"
                  "Report-ID: %s\r\n"
                  "Submitter: %s\r\n\r\n",
                  m->format == MW_REPORT_FMT_RFC7489 ? "RFC 7489" : "RFC 9990", r->policy_domain,
                  b, e, r->messages, r->messages == 1 ? "" : "s", mail->id, m->receiver);
    mw_buf_printf(out, "--%s\r\n", boundary);
    mw_buf_printf(out, "Content-Type: application/gzip;\r\n name=\"%s\"\r\n", mail->filename);
    mw_buf_puts(out, "Content-Transfer-Encoding: base64\r\n");
    mw_buf_printf(out, "Content-Disposition: attachment;\r\n filename=\"%s\"\r\n\r\n",
                  mail->filename);
    base64_lines((const unsigned char *)gz->data, gz->len, out);
    mw_buf_printf(out, "\r\n--%s--\r\n", boundary);
    mw_buf_free(&subj);
}

size_t mw_report_sign(const mw_dkim_signer *signer, const char *identity, mw_buf *msg, char *why,
                      size_t whylen)
{
    size_t keys[8], nkeys, nsigs = 0;
    char **sigs = NULL;
    const char *p, *hend, *body;

    if (signer == NULL) {
        snprintf(why, whylen, "no signer");
        return 0;
    }
    nkeys = mw_dkim_signer_lookup(signer, identity, keys, sizeof keys / sizeof keys[0], why,
                                  whylen);
    if (nkeys == 0)
        return 0;
    p = mw_buf_cstr(msg);
    hend = strstr(p, "\r\n\r\n");
    if (hend == NULL) {
        snprintf(why, whylen, "message without a header/body separator");
        return 0;
    }
    body = hend + 4;
    mw_dkim_msg *dm = mw_dkim_msg_begin(NULL, signer, keys, nkeys, "report");
    if (dm == NULL) {
        snprintf(why, whylen, "cannot start signing");
        return 0;
    }
    const char *at = strrchr(identity, '@');
    mw_dkim_msg_sign_domain(dm, at != NULL ? at + 1 : identity);
    /* one header = a line plus its continuation lines */
    const char *h = p;
    while (h < hend + 2) {
        const char *e = h;
        for (;;) {
            const char *nl = strstr(e, "\r\n");
            e = nl + 2;
            if (e >= hend + 2 || (*e != ' ' && *e != '\t'))
                break;
        }
        const char *colon = memchr(h, ':', (size_t)(e - h));
        if (colon != NULL) {
            char *name = mw_strndup(h, (size_t)(colon - h));
            mw_dkim_msg_header(dm, name, colon + 1, (size_t)(e - 2 - (colon + 1)));
            free(name);
        }
        h = e;
    }
    mw_dkim_msg_eoh(dm);
    mw_dkim_msg_body(dm, (const unsigned char *)body, msg->len - (size_t)(body - p));
    mw_dkim_msg_end(dm, NULL, &sigs, &nsigs);
    mw_dkim_msg_free(&dm);
    if (nsigs == 0) {
        snprintf(why, whylen, "signing failed (see the log)");
        return 0;
    }
    mw_buf out = MW_BUF_INIT;
    for (size_t i = 0; i < nsigs; i++) {
        const char *v = sigs[i];
        mw_buf_puts(&out, "DKIM-Signature:");
        if (*v != ' ' && *v != '\t')
            mw_buf_putc(&out, ' ');
        for (; *v != '\0'; v++) {
            if (*v == '\n' && (v == sigs[i] || v[-1] != '\r'))
                mw_buf_putc(&out, '\r');
            mw_buf_putc(&out, *v);
        }
        mw_buf_puts(&out, "\r\n");
    }
    mw_buf_append(&out, msg->data, msg->len);
    mw_buf_free(msg);
    *msg = out;
    mw_dkim_sigs_free(sigs, nsigs);
    return nsigs;
}
