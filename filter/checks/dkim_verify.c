/*
 * dkim_verify.c - DKIM verification on libopendkim with its key lookups
 * through our resolver, and the per-message context that streams one
 * message into a verification handle and the signing context (dkim_sign.c,
 * on OpenSSL).
 *
 * DNS
 *   libopendkim asks for keys through four hooks (dkim_dns_set_query_*).
 *   The start hook runs mw_dns_query() synchronously and writes a
 *   synthetic wire-format reply into libopendkim's buffer: header with the
 *   rcode (NOERROR / NXDOMAIN / SERVFAIL), the question, and the TXT
 *   answers with a name pointer to the question (0xc00c).  The waitreply
 *   hook hands back its status: SUCCESS, or ERROR/EXPIRED for temporary
 *   failures, which libopendkim turns into a key-fetch failure and we into
 *   temperror.  DNSSEC state comes from answer->secure/bogus.
 *   The hooks receive only the library-wide service handle (the verifier),
 *   so the message being verified is found through a thread-local pointer
 *   that is set only around dkim_eoh()/dkim_eom() (where libopendkim
 *   fetches keys) on the calling thread.  It records each lookup (for
 *   reasons such as "key lookup timed out") and enforces the per-message
 *   lookup deadline, so hostile signatures cannot stall a message.
 *
 * Limits
 *   Only the first max_signatures DKIM-Signature fields are handed to
 *   libopendkim; later ones are counted (nskipped) and never parsed, so a
 *   message with thousands of signatures costs no more than max.
 *
 * Threads
 *   The DKIM_LIB is configured at create and shared read-only; each message
 *   has its own DKIM handles (libopendkim's thread model).
 *
 * Keys
 *   libopendkim parses each RSA key with d2i_PUBKEY_bio(); dkim_keycache.c
 *   interposes on it and answers repeated keys from a content-addressed
 *   cache (MW_DKIM_KEY_CACHE=off turns it off).  Creating a verifier
 *   initialises it and says if it is not in libopendkim's path.
 *
 * See also: dkim.h, dkim_sign.c, RFC 6376 §6, RFC 8601 §2.7.1 (header.b).
 */
#include "dkim_priv.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "buf.h"
#include "dkim_keycache.h"
#include "log.h"
#include "strutil.h"

#define DEFAULT_DEADLINE_MS 15000
#define BPREFIX_MIN 8

struct mw_dkim_verifier {
    DKIM_LIB              *lib;
    mw_dns                *dns;
    mw_dkim_verify_options o;
};

/* One key lookup of the current message. */
struct lookup {
    char         *qname;
    mw_dns_status status;
    char         *why;
    bool          bad_name;   /* refused by us, not a server: not a DNS name */
};

struct mw_dkim_msg {
    mw_dkim_verifier     *v;
    DKIM                 *vd;          /* verification handle, NULL when not verifying */
    bool                  vactive;     /* still feeding vd */
    size_t                nsighdr;     /* DKIM-Signature fields seen */
    size_t                nskipped;
    mw_dkim_signmsg      *sign;        /* NULL when not signing */
    char                 *id;
    mw_buf                tmp;         /* header line / CRLF conversion */
    bool                  body_cr;     /* the last body byte seen was CR */
    struct lookup        *lk;
    size_t                nlk;
    mw_dkim_sig          *bad;         /* signatures refused before libopendkim (bad_tag_list) */
    size_t                nbad;
    struct timespec       dns_t0;      /* first key lookup */
    bool                  dns_started;
};

/* The message whose dkim_eoh/dkim_eom runs on this thread (see DNS above). */
static _Thread_local mw_dkim_msg *tls_msg;

const char *mw_dkim_result_name(mw_dkim_result r)
{
    static const char *const names[] = {"none", "pass", "fail", "neutral", "policy",
                                        "temperror", "permerror"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "permerror";
}

/* ---- DNS hooks -------------------------------------------------------------------- */

struct query {
    int    status;   /* DKIM_DNS_* */
    size_t len;
    int    dnssec;   /* DKIM_DNSSEC_* */
};

static bool put16(unsigned char *buf, size_t buflen, size_t *pos, unsigned v)
{
    if (*pos + 2 > buflen)
        return false;
    buf[(*pos)++] = (unsigned char)(v >> 8);
    buf[(*pos)++] = (unsigned char)v;
    return true;
}

/*
 * Tags in a TXT record's text (rdata: length-prefixed strings), counted as
 * ';'-separated parts, at most max + 1.  libopendkim's tag-list parser is
 * quadratic in the number of distinct tags (see bad_tag_list), so a key
 * record with more than a real one ever has (v k h n p s t) is dropped
 * before it reaches libopendkim, which then sees no key.
 */
#define MAX_KEY_TAGS 64
static size_t txt_tags(const unsigned char *d, size_t len, size_t max)
{
    size_t n = 1;
    for (size_t i = 0; i < len && n <= max;) {
        size_t cl = d[i++];
        for (size_t k = 0; k < cl && i + k < len; k++)
            n += d[i + k] == ';';
        i += cl;
    }
    return n;
}

/* A reply as a server would send it; 0 if it does not fit or the name is bad.
 * *dropped counts TXT records left out for having too many tags. */
static size_t build_reply(unsigned char *buf, size_t buflen, const char *qname, int qtype,
                          int rcode, const mw_dns_answer *a, size_t *dropped)
{
    size_t pos = 12, an = 0;
    const char *p = qname;

    if (buflen < 12)
        return 0;
    memset(buf, 0, 12);
    buf[2] = 0x85;                       /* QR, AA, RD */
    buf[3] = (unsigned char)(0x80 | (rcode & 0x0f));   /* RA, rcode */
    buf[5] = 1;                          /* QDCOUNT */
    while (*p != '\0') {                 /* the question name */
        const char *dot = strchr(p, '.');
        size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n > 63 || pos + 1 + n + 1 > buflen || pos + n > 12 + 250)
            return 0;
        buf[pos++] = (unsigned char)n;
        memcpy(buf + pos, p, n);
        pos += n;
        p += n;
        if (*p == '.')
            p++;
    }
    if (pos + 1 > buflen)
        return 0;
    buf[pos++] = 0;
    if (!put16(buf, buflen, &pos, (unsigned)qtype) || !put16(buf, buflen, &pos, 1))
        return 0;
    for (size_t i = 0; a != NULL && i < a->nrr; i++) {
        const mw_dns_rr *rr = &a->rr[i];
        if (rr->type != qtype || rr->len > 65535)
            continue;                    /* CNAMEs were followed by the resolver */
        if (rr->type == 16 && txt_tags(rr->data, rr->len, MAX_KEY_TAGS) > MAX_KEY_TAGS) {
            (*dropped)++;
            continue;
        }
        if (pos + 12 + rr->len > buflen)
            break;                       /* keep what fits */
        buf[pos++] = 0xc0;
        buf[pos++] = 0x0c;
        put16(buf, buflen, &pos, rr->type);
        put16(buf, buflen, &pos, 1);
        put16(buf, buflen, &pos, rr->ttl >> 16);
        put16(buf, buflen, &pos, rr->ttl & 0xffff);
        put16(buf, buflen, &pos, (unsigned)rr->len);
        memcpy(buf + pos, rr->data, rr->len);
        pos += rr->len;
        an++;
    }
    buf[6] = (unsigned char)(an >> 8);
    buf[7] = (unsigned char)an;
    return pos;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1000.0 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static void lookup_note(mw_dkim_msg *m, const char *qname, mw_dns_status st, const char *why, bool bad_name)
{
    if (m == NULL)
        return;
    m->lk = mw_reallocarray(m->lk, m->nlk + 1, sizeof *m->lk);
    m->lk[m->nlk++] = (struct lookup){.qname = mw_strdup(qname), .status = st,
                                      .why = why != NULL ? mw_strdup(why) : NULL, .bad_name = bad_name};
}

static int dns_start(void *srv, int type, unsigned char *name, unsigned char *buf, size_t buflen,
                     void **qh)
{
    mw_dkim_verifier *v = srv;
    mw_dkim_msg *m = tls_msg;
    struct query *q = mw_calloc(1, sizeof *q);
    mw_dns_answer *a = NULL;
    unsigned timeout = v->o.timeout_ms;
    unsigned deadline = v->o.deadline_ms != 0 ? v->o.deadline_ms : DEFAULT_DEADLINE_MS;
    int rcode = 0;

    *qh = q;
    q->dnssec = DKIM_DNSSEC_UNKNOWN;
    if (m != NULL) {
        if (!m->dns_started) {
            clock_gettime(CLOCK_MONOTONIC, &m->dns_t0);
            m->dns_started = true;
        }
        double spent = ms_since(&m->dns_t0);
        if (spent >= deadline) {
            q->status = DKIM_DNS_EXPIRED;
            lookup_note(m, (const char *)name, MW_DNS_TEMPFAIL,
                        "the message's key-lookup deadline was reached", false);
            return 0;
        }
        if (timeout == 0 || timeout > deadline - (unsigned)spent)
            timeout = deadline - (unsigned)spent;
    }
    (void)mw_dns_query(v->dns, (const char *)name, (uint16_t)type, timeout, &a);
    q->dnssec = a->secure ? DKIM_DNSSEC_SECURE : a->bogus ? DKIM_DNSSEC_BOGUS
              : v->o.dnssec ? DKIM_DNSSEC_INSECURE : DKIM_DNSSEC_UNKNOWN;
    q->status = DKIM_DNS_SUCCESS;
    switch (a->status) {
    case MW_DNS_OK:
    case MW_DNS_NODATA:
        break;
    case MW_DNS_NXDOMAIN:
        rcode = 3;
        break;
    case MW_DNS_TEMPFAIL:
        rcode = 2;
        q->status = DKIM_DNS_ERROR;
        break;
    case MW_DNS_PERMFAIL:        /* bogus, REFUSED, bad name: no usable key */
        /* A server's answer (REFUSED, FORMERR...) keeps its rcode.  No reply
         * (rcode -1) means we refused the name ourselves (an empty or 64-byte label,
         * too long): that is the signer's own doing, a name that cannot
         * exist, so NXDOMAIN (permerror), never SERVFAIL: a selector like
         * "a..b" must not turn a spoof's DKIM fail into a temperror (451
         * instead of 550, and no report record). */
        rcode = a->rcode > 0 ? a->rcode : 3;
        break;
    }
    size_t dropped = 0;
    q->len = build_reply(buf, buflen, (const char *)name, type, rcode,
                         a->status == MW_DNS_OK ? a : NULL, &dropped);
    if (q->len == 0)
        q->status = DKIM_DNS_ERROR;
    lookup_note(m, (const char *)name, a->status,
                a->why != NULL ? a->why : a->bogus ? "DNSSEC validation failed"
                : dropped ? "key record with more than 64 tags ignored" : NULL,
                a->status == MW_DNS_PERMFAIL && a->rcode < 0 && !a->bogus);
    mw_dns_answer_free(&a);
    return 0;
}

static int dns_cancel(void *srv, void *qh)
{
    (void)srv;
    free(qh);
    return 0;
}

static int dns_waitreply(void *srv, void *qh, struct timeval *to, size_t *bytes, int *error,
                         int *dnssec)
{
    struct query *q = qh;

    (void)srv, (void)to;
    if (bytes != NULL)
        *bytes = q->len;
    if (error != NULL)
        *error = 0;
    if (dnssec != NULL)
        *dnssec = q->dnssec;
    return q->status;
}

/* ---- verifier ------------------------------------------------------------------------- */

mw_dkim_verifier *mw_dkim_verifier_create(mw_dns *dns, const mw_dkim_verify_options *o, char *err,
                                          size_t errlen)
{
    mw_dkim_verifier *v = mw_calloc(1, sizeof *v);
    unsigned flags = DKIM_LIBFLAGS_BADSIGHANDLES;
    unsigned tsec;

    v->dns = dns;
    if (o != NULL)
        v->o = *o;
    if (v->o.min_key_bits == 0)
        v->o.min_key_bits = 1024;
    if (v->o.max_signatures == 0)
        v->o.max_signatures = 10;
    if (!mw_dkim_keycache_init()) {
        mw_dkim_keycache_stats ks;
        mw_dkim_keycache_get_stats(&ks);
        mw_info("dkim: public key cache %s", !ks.enabled ? "off (MW_DKIM_KEY_CACHE)"
                                             : "not in libopendkim's path (d2i_PUBKEY_bio "
                                               "is not interposed): keys are parsed per message");
    }
    v->lib = dkim_init(NULL, NULL);
    if (v->lib == NULL) {
        snprintf(err, errlen, "cannot initialise libopendkim");
        free(v);
        return NULL;
    }
    tsec = (v->o.timeout_ms + 999) / 1000;
    if (tsec == 0)
        tsec = 10;
    if (dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags) != DKIM_STAT_OK ||
        dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &v->o.min_key_bits,
                     sizeof v->o.min_key_bits) != DKIM_STAT_OK ||
        dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_TIMEOUT, &tsec, sizeof tsec) != DKIM_STAT_OK) {
        snprintf(err, errlen, "libopendkim refused an option");
        mw_dkim_verifier_destroy(&v);
        return NULL;
    }
    if (v->o.fixed_time > 0) {
        /* libopendkim's x= and t= checks read the clock, not FIXEDTIME:
         * widen the allowed clock drift back to the fixed time (tests). */
        uint64_t t = (uint64_t)v->o.fixed_time, now = (uint64_t)time(NULL);
        uint64_t drift = 300 + (now > t ? now - t : 0);
        (void)dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME, &t, sizeof t);
        (void)dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_CLOCKDRIFT, &drift, sizeof drift);
    }
    /* Our resolver replaces libresolv: no init/close of a resolver state. */
    dkim_dns_set_init(v->lib, NULL);
    dkim_dns_set_close(v->lib, NULL);
    dkim_dns_set_nslist(v->lib, NULL);
    dkim_dns_set_config(v->lib, NULL);
    dkim_dns_set_trustanchor(v->lib, NULL);
    (void)dkim_dns_set_query_service(v->lib, v);
    dkim_dns_set_query_start(v->lib, dns_start);
    dkim_dns_set_query_cancel(v->lib, dns_cancel);
    dkim_dns_set_query_waitreply(v->lib, dns_waitreply);
    return v;
}

void mw_dkim_verifier_destroy(mw_dkim_verifier **vp)
{
    if (vp == NULL || *vp == NULL)
        return;
    if ((*vp)->lib != NULL)
        dkim_close((*vp)->lib);
    MW_FREE(vp);
}

/* ---- results --------------------------------------------------------------------------- */

void mw_dkim_results_clear(mw_dkim_results *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nsig; i++) {
        mw_dkim_sig *s = &r->sig[i];
        free(s->domain);
        free(s->selector);
        free(s->identity);
        free(s->algorithm);
        free(s->b_prefix);
        free(s->reason);
    }
    MW_FREE(&r->sig);
    r->nsig = 0;
    r->nskipped = 0;
}

static const struct lookup *lookup_find(const mw_dkim_msg *m, const char *sel, const char *dom)
{
    mw_buf q = MW_BUF_INIT;
    const struct lookup *found = NULL;

    mw_buf_printf(&q, "%s._domainkey.%s", sel, dom);
    for (size_t i = m->nlk; i-- > 0 && found == NULL;)
        if (strcasecmp(m->lk[i].qname, mw_buf_cstr(&q)) == 0)
            found = &m->lk[i];
    mw_buf_free(&q);
    return found;
}

static char *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strf(const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return mw_buf_steal(&b);
}

/* Why the key could not be had, from our lookup record. */
static char *key_reason(const mw_dkim_msg *m, const mw_dkim_sig *o, const char *what)
{
    const struct lookup *l = lookup_find(m, o->selector, o->domain);

    if (l == NULL)
        return strf("%s", what);
    return strf("%s (%s._domainkey.%s: %s%s%s)", what, o->selector, o->domain,
                mw_dns_status_name(l->status), l->why != NULL ? ", " : "",
                l->why != NULL ? l->why : "");
}

static void sig_classify(const mw_dkim_msg *m, DKIM_SIGINFO *sig, mw_dkim_sig *o)
{
    unsigned flags = dkim_sig_getflags(sig);
    int err = dkim_sig_geterror(sig);
    int bh = dkim_sig_getbh(sig);

    switch (err) {
    case DKIM_SIGERROR_OK:
    case DKIM_SIGERROR_UNKNOWN:
    case DKIM_SIGERROR_BADSIG:
        if (bh == DKIM_SIGBH_MISMATCH) {
            o->result = MW_DKIM_FAIL;
            o->reason = strf("body hash mismatch");
        } else if ((flags & DKIM_SIGFLAG_PASSED) != 0 && bh == DKIM_SIGBH_MATCH) {
            o->result = MW_DKIM_PASS;
        } else if ((flags & DKIM_SIGFLAG_PROCESSED) != 0 || err == DKIM_SIGERROR_BADSIG) {
            o->result = MW_DKIM_FAIL;
            o->reason = strf("signature did not verify");
        } else {
            o->result = MW_DKIM_PERMERROR;
            o->reason = strf("signature not evaluated");
        }
        break;
    case DKIM_SIGERROR_KEYTOOSMALL:
        o->result = MW_DKIM_POLICY;
        o->reason = strf("key too small (%u bits, minimum %u)", o->bits, m->v->o.min_key_bits);
        break;
    case DKIM_SIGERROR_EXPIRED:
        o->result = MW_DKIM_POLICY;
        o->reason = strf("signature expired (x=)");
        break;
    case DKIM_SIGERROR_FUTURE:
        o->result = MW_DKIM_POLICY;
        o->reason = strf("signature timestamp in the future (t=)");
        break;
    case DKIM_SIGERROR_KEYFAIL: {
        /* A key name that is no DNS name (s=a..b, a 64-byte label) is the
         * signer's doing and cannot exist: permerror.  Only a server's or
         * the network's failure is temporary (else a spoofer of a p=reject
         * domain could turn its 550 into a 451). */
        const struct lookup *l = lookup_find(m, o->selector, o->domain);
        bool bad = l != NULL && l->bad_name;
        o->result = bad ? MW_DKIM_PERMERROR : MW_DKIM_TEMPERROR;
        o->reason = key_reason(m, o, bad ? "no key: the key's name is not a DNS name" : "key lookup failed");
        break;
    }
    case DKIM_SIGERROR_NOKEY:
        o->result = MW_DKIM_PERMERROR;
        o->reason = key_reason(m, o, "no key record");
        break;
    case DKIM_SIGERROR_KEYREVOKED:
        o->result = MW_DKIM_PERMERROR;
        o->reason = strf("key revoked (empty p=)");
        break;
    case DKIM_SIGERROR_TOOLARGE_L:
        o->result = MW_DKIM_FAIL;
        o->reason = strf("l= is longer than the body");
        break;
    case DKIM_SIGERROR_MULTIREPLY:
        o->result = MW_DKIM_PERMERROR;
        o->reason = strf("several key records");
        break;
    default: {
        const char *e = dkim_sig_geterrorstr(err);
        o->result = MW_DKIM_PERMERROR;
        o->reason = strf("%s", e != NULL ? e : "malformed signature");
        break;
    }
    }
}

/* Partial-body signatures (l=): neutral when the body goes on past l=. */
static void sig_length(DKIM *d, DKIM_SIGINFO *sig, mw_dkim_sig *o)
{
    ssize_t msglen = -1, canonlen = -1, signlen = -1;

    if (o->result != MW_DKIM_PASS ||
        dkim_sig_getcanonlen(d, sig, &msglen, &canonlen, &signlen) != DKIM_STAT_OK || signlen < 0)
        return;
    if (signlen < msglen) {
        o->result = MW_DKIM_NEUTRAL;
        o->reason = strf("l=%zd covers only part of the body (%zd bytes)", signlen, msglen);
    }
}

static char *tag_dup(DKIM_SIGINFO *sig, const char *tag)
{
    const char *v = (const char *)dkim_sig_gettagvalue(sig, false, (unsigned char *)tag);
    mw_buf b = MW_BUF_INIT;

    if (v == NULL)
        return mw_strdup("");
    /* runs between blanks, appended whole (b= is a few hundred bytes) */
    while (*v != '\0') {
        size_t run = strcspn(v, " \t\r\n");
        mw_buf_append(&b, v, run);
        v += run;
        v += strspn(v, " \t\r\n");
    }
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

/* Printable, bounded copy of a string from a signature. */
static char *clean_dup(const unsigned char *s, size_t max)
{
    mw_buf b = MW_BUF_INIT;

    if (s == NULL)
        return mw_strdup("");
    mw_str_printable(&b, (const char *)s, strlen((const char *)s), max);
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

static void sig_fill(const mw_dkim_msg *m, DKIM_SIGINFO *sig, mw_dkim_sig *o, char **b_full)
{
    unsigned char ident[512];
    unsigned int bits = 0;
    int dnssec = dkim_sig_getdnssec(sig);

    o->domain = clean_dup(dkim_sig_getdomain(sig), 255);
    o->selector = clean_dup(dkim_sig_getselector(sig), 255);
    if (dkim_sig_getidentity(m->vd, sig, ident, sizeof ident) == DKIM_STAT_OK)
        o->identity = clean_dup(ident, 255);
    else
        o->identity = strf("@%s", o->domain);
    char *a = tag_dup(sig, "a");
    o->algorithm = clean_dup((unsigned char *)a, 40);
    free(a);
    if (dkim_sig_getkeysize(sig, &bits) == DKIM_STAT_OK)
        o->bits = bits;
    o->dnssec = dnssec == DKIM_DNSSEC_SECURE     ? MW_DKIM_DNSSEC_SECURE
              : dnssec == DKIM_DNSSEC_BOGUS      ? MW_DKIM_DNSSEC_BOGUS
              : dnssec == DKIM_DNSSEC_INSECURE   ? MW_DKIM_DNSSEC_UNPROTECTED
                                                 : MW_DKIM_DNSSEC_UNKNOWN;
    *b_full = tag_dup(sig, "b");
    sig_classify(m, sig, o);
    /* RFC 8301: rsa-sha1 signatures must not be considered valid */
    if (o->result == MW_DKIM_PASS && o->algorithm && strcasecmp(o->algorithm, "rsa-sha1") == 0) {
        o->result = MW_DKIM_POLICY;
        free(o->reason);
        o->reason = mw_strdup("rsa-sha1 is not accepted (RFC 8301)");
    }
    /* libopendkim reports no size for Ed25519 keys; they are all 256 bits. */
    if (o->bits == 0 && strcasecmp(o->algorithm, "ed25519-sha256") == 0 &&
        (dkim_sig_getflags(sig) & DKIM_SIGFLAG_PROCESSED) != 0 &&
        (o->result == MW_DKIM_PASS || o->result == MW_DKIM_FAIL || o->result == MW_DKIM_NEUTRAL))
        o->bits = 256;
    sig_length(m->vd, sig, o);
}

/* header.b: the shortest prefix (>= 8) no other signature's b= shares. */
static void b_prefixes(mw_dkim_results *r, char **b)
{
    for (size_t i = 0; i < r->nsig; i++) {
        size_t len = strlen(b[i]), n = len < BPREFIX_MIN ? len : BPREFIX_MIN;
        for (size_t j = 0; j < r->nsig; j++) {
            if (j == i)
                continue;
            while (n < len && strncmp(b[i], b[j], n) == 0)
                n++;
        }
        r->sig[i].b_prefix = mw_strndup(b[i], n);
    }
}

static void collect(mw_dkim_msg *m, mw_dkim_results *res)
{
    DKIM_SIGINFO **sigs = NULL;
    int n = 0;
    char **b;

    if (dkim_getsiglist(m->vd, &sigs, &n) != DKIM_STAT_OK || n <= 0)
        return;
    res->sig = mw_calloc((size_t)n, sizeof *res->sig);
    b = mw_calloc((size_t)n, sizeof *b);
    for (int i = 0; i < n; i++) {
        if ((dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) != 0)
            continue;
        sig_fill(m, sigs[i], &res->sig[res->nsig], &b[res->nsig]);
        res->nsig++;
    }
    b_prefixes(res, b);
    for (size_t i = 0; i < res->nsig; i++)
        free(b[i]);
    free(b);
}

/* ---- the message ----------------------------------------------------------------------- */

mw_dkim_msg *mw_dkim_msg_begin(mw_dkim_verifier *verifier, const mw_dkim_signer *signer,
                               const size_t *keys, size_t nkeys, const char *id)
{
    mw_dkim_msg *m = mw_calloc(1, sizeof *m);
    DKIM_STAT st = DKIM_STAT_OK;

    m->id = mw_strdup(id != NULL ? id : "-");
    m->v = verifier;
    if (verifier != NULL) {
        m->vd = dkim_verify(verifier->lib, (const unsigned char *)m->id, NULL, &st);
        if (m->vd == NULL)
            mw_warn("%s: dkim: cannot start verifying: %s", m->id, dkim_getresultstr(st));
        m->vactive = m->vd != NULL;
    }
    m->sign = mw_dkim_signmsg_begin(signer, keys, nkeys, m->id);
    return m;
}

void mw_dkim_msg_sign_domain(mw_dkim_msg *m, const char *domain)
{
    if (m != NULL)
        mw_dkim_signmsg_domain(m->sign, domain);
}

/* Append s[0..n) with bare LF made CRLF; prev_cr: the byte before s was CR.
 * Line by line (memchr, one append per line), not byte by byte: every
 * header field goes through here. */
static void crlf_append(mw_buf *out, const char *s, size_t n, bool prev_cr)
{
    const char *p = s, *end = s + n;

    mw_buf_reserve(out, n + 2);
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL) {
            mw_buf_append(out, p, (size_t)(end - p));
            break;
        }
        mw_buf_append(out, p, (size_t)(lf - p));
        if (!(lf > s ? lf[-1] == '\r' : prev_cr))
            mw_buf_putc(out, '\r');
        mw_buf_putc(out, '\n');
        p = lf + 1;
    }
}

/*
 * RFC 6376 §3.2: a tag-list with a duplicate tag is invalid.  libopendkim
 * keeps the last value (and would look up a key for it), so such a
 * signature is refused here as permerror, without any DNS query.
 *
 * So is one with more than MAX_SIG_TAGS tags (a real one has about 12):
 * libopendkim looks each new tag up in a list of the tags before it that
 * share its first letter, so thousands of distinct tags ("t0= t1= ...")
 * cost time quadratic in the header's length.  Refusing them here keeps
 * the work linear, and the count bounds the duplicate search below.
 * Returns false, or true with the reason in why.
 */
#define MAX_SIG_TAGS 64
static bool bad_tag_list(const char *v, size_t len, char *why, size_t whylen)
{
    char seen[MAX_SIG_TAGS][16];
    size_t nseen = 0, ntags = 0, i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n' || v[i] == ';'))
            i++;
        size_t st = i;
        while (i < len && v[i] != '=' && v[i] != ';' && v[i] != ' ' && v[i] != '\t' && v[i] != '\r' &&
               v[i] != '\n')
            i++;
        size_t nl = i - st;
        while (i < len && v[i] != ';')
            i++;
        if (nl == 0)
            continue;
        if (++ntags > MAX_SIG_TAGS) {
            snprintf(why, whylen, "more than %d tags", MAX_SIG_TAGS);
            return true;
        }
        if (nl >= 16)
            continue;   /* longer than any tag RFC 6376 defines */
        char t[16];
        memcpy(t, v + st, nl);
        t[nl] = '\0';
        for (size_t k = 0; k < nseen; k++)
            if (strcmp(seen[k], t) == 0) {
                snprintf(why, whylen, "duplicate tag \"%s\" (RFC 6376 section 3.2)", t);
                return true;
            }
        memcpy(seen[nseen++], t, nl + 1);
    }
    return false;
}

/* Value of tag t in a raw tag-list (first occurrence), printable, or NULL. */
static char *raw_tag(const char *v, size_t len, const char *t)
{
    size_t tl = strlen(t);
    for (size_t i = 0; i < len; i++) {
        if ((i == 0 || v[i - 1] == ';' || v[i - 1] == ' ' || v[i - 1] == '\t' || v[i - 1] == '\n') &&
            i + tl < len && strncmp(v + i, t, tl) == 0 && v[i + tl] == '=') {
            size_t st = i + tl + 1, e = st;
            while (e < len && v[e] != ';')
                e++;
            mw_buf b = MW_BUF_INIT;
            for (size_t k = st; k < e && b.len < 255; k++)
                if (v[k] != ' ' && v[k] != '\t' && v[k] != '\r' && v[k] != '\n')
                    mw_buf_putc(&b, v[k]);
            char *out = mw_strdup(mw_buf_cstr(&b));
            mw_buf_free(&b);
            return out;
        }
    }
    return NULL;
}

void mw_dkim_msg_header(mw_dkim_msg *m, const char *name, const char *value, size_t vlen)
{
    /* blanks before the colon ("DKIM-Signature :") still make a signature
     * for libopendkim, so they must count here too (limit, duplicate tags) */
    size_t nl = strlen(name);
    while (nl && (name[nl - 1] == ' ' || name[nl - 1] == '\t'))
        nl--;
    bool is_sig = nl == 14 && strncasecmp(name, "DKIM-Signature", 14) == 0;
    bool to_verifier = m->vactive;

    if (is_sig && ++m->nsighdr > (m->v != NULL ? m->v->o.max_signatures : 0)) {
        if (m->v != NULL)
            m->nskipped++;
        to_verifier = false;
    }
    char bad[64];
    if (is_sig && to_verifier && bad_tag_list(value, vlen, bad, sizeof bad)) {
        m->bad = mw_reallocarray(m->bad, m->nbad + 1, sizeof *m->bad);
        mw_dkim_sig *o = &m->bad[m->nbad++];
        memset(o, 0, sizeof *o);
        o->result = MW_DKIM_PERMERROR;
        o->domain = raw_tag(value, vlen, "d");
        o->selector = raw_tag(value, vlen, "s");
        o->algorithm = raw_tag(value, vlen, "a");
        o->identity = o->domain ? strf("@%s", o->domain) : NULL;
        o->b_prefix = raw_tag(value, vlen, "b");
        if (o->b_prefix && strlen(o->b_prefix) > 8)
            o->b_prefix[8] = '\0';
        o->reason = strf("%s", bad);
        to_verifier = false;
    }
    /* Signing takes the value byte-exact: "Name:" + value. */
    mw_dkim_signmsg_header(m->sign, name, value, vlen);
    if (!to_verifier)
        return;
    mw_buf_reset(&m->tmp);
    mw_buf_puts(&m->tmp, name);
    mw_buf_putc(&m->tmp, ':');   /* byte-exact: the value brings its own blank */
    crlf_append(&m->tmp, value, vlen, false);
    if (to_verifier) {
        DKIM_STAT st = dkim_header(m->vd, (unsigned char *)m->tmp.data, m->tmp.len);
        if (st != DKIM_STAT_OK && mw_log_debug_enabled())
            mw_debug("%s: dkim: header %s not accepted for verification: %s", m->id, name,
                     dkim_getresultstr(st));
    }
}

void mw_dkim_msg_eoh(mw_dkim_msg *m)
{
    mw_dkim_msg *prev = tls_msg;

    tls_msg = m;
    if (m->vactive) {
        DKIM_STAT st = dkim_eoh(m->vd);
        /* NOSIG: nothing to verify, skip the body.  Other errors (no From,
         * ...) still leave per-signature results to report at the end. */
        if (st == DKIM_STAT_NOSIG)
            m->vactive = false;
        else if (st != DKIM_STAT_OK && mw_log_debug_enabled())
            mw_debug("%s: dkim: end of headers: %s", m->id, dkim_getresultstr(st));
    }
    tls_msg = prev;
    mw_dkim_signmsg_eoh(m->sign);
}

void mw_dkim_msg_body(mw_dkim_msg *m, const unsigned char *chunk, size_t len)
{
    const unsigned char *p = chunk;
    size_t n = len;
    bool bare = false;

    if (len == 0)
        return;
    /* Signing canonicalizes line ends itself, streaming (no copy). */
    mw_dkim_signmsg_body(m->sign, chunk, len);
    if (!m->vactive)
        return;
    /* look for a bare LF line by line (memchr), not byte by byte */
    for (const unsigned char *q = memchr(chunk, '\n', len); q && !bare;
         q = memchr(q + 1, '\n', len - (size_t)(q + 1 - chunk)))
        bare = !(q > chunk ? q[-1] == '\r' : m->body_cr);
    if (bare) {
        mw_buf_reset(&m->tmp);
        crlf_append(&m->tmp, (const char *)chunk, len, m->body_cr);
        p = (const unsigned char *)m->tmp.data;
        n = m->tmp.len;
    }
    m->body_cr = chunk[len - 1] == '\r';
    if (m->vactive)
        (void)dkim_body(m->vd, (unsigned char *)p, n);
}

void mw_dkim_msg_end(mw_dkim_msg *m, mw_dkim_results *res, char ***sigs, size_t *nsigs)
{
    mw_dkim_msg *prev = tls_msg;

    tls_msg = m;
    if (res != NULL)
        memset(res, 0, sizeof *res);
    if (m->vd != NULL && m->vactive) {
        DKIM_STAT st = dkim_eom(m->vd, NULL);
        if (st != DKIM_STAT_OK && mw_log_debug_enabled())
            mw_debug("%s: dkim: verification: %s", m->id, dkim_getresultstr(st));
        if (res != NULL)
            collect(m, res);
    }
    if (res != NULL && m->nbad) {
        /* signatures refused before libopendkim, in the order seen */
        res->sig = mw_reallocarray(res->sig, res->nsig + m->nbad, sizeof *res->sig);
        memcpy(res->sig + res->nsig, m->bad, m->nbad * sizeof *m->bad);
        res->nsig += m->nbad;
        MW_FREE(&m->bad);
        m->nbad = 0;
    }
    if (res != NULL)
        res->nskipped = m->nskipped;
    if (sigs != NULL)
        *sigs = NULL;
    if (nsigs != NULL)
        *nsigs = 0;
    tls_msg = prev;
    mw_dkim_signmsg_end(m->sign, sigs, nsigs);
}

void mw_dkim_msg_free(mw_dkim_msg **mp)
{
    mw_dkim_msg *m = mp != NULL ? *mp : NULL;

    if (m == NULL)
        return;
    if (m->vd != NULL)
        dkim_free(m->vd);
    mw_dkim_signmsg_free(&m->sign);
    for (size_t i = 0; i < m->nlk; i++) {
        free(m->lk[i].qname);
        free(m->lk[i].why);
    }
    free(m->lk);
    if (m->nbad) {
        mw_dkim_results tmp = {m->bad, m->nbad, 0};
        mw_dkim_results_clear(&tmp);
    }
    mw_buf_free(&m->tmp);
    free(m->id);
    MW_FREE(mp);
}

void mw_dkim_sigs_free(char **sigs, size_t nsigs)
{
    for (size_t i = 0; i < nsigs; i++)
        free(sigs[i]);
    free(sigs);
}
