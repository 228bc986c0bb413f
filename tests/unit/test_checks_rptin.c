/*
 * test_checks_rptin.c - received-report parsing (checks/rptin_*.c): the XML
 * quirks receivers send, refusals, the zip reader's strictness, gzip caps,
 * MIME shapes.  The report XML writer (report_xml.c) provides a report of
 * our own to read back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "alloc.h"
#include "buf.h"
#include "mwtest.h"
#include "rptin.h"

static const char RPT[] =
    "<?xml version=\"1.0\"?>\n<feedback>\n <report_metadata>\n  <org_name> Example Org </org_name>\n"
    "  <email>d@reporter.example</email><report_id>r-1</report_id>\n"
    "  <date_range><begin>1700000000</begin><end>1700086399</end></date_range>\n </report_metadata>\n"
    " <policy_published><domain>Example.COM</domain><p>Reject</p><pct>100</pct></policy_published>\n"
    " <record><row><source_ip>2001:DB8:0:0::1</source_ip><count>3</count><policy_evaluated>"
    "<disposition>None</disposition><dkim>Pass</dkim><spf>fail</spf></policy_evaluated></row>"
    "<identifiers><header_from>example.com</header_from></identifiers><auth_results>"
    "<dkim><domain>other.example</domain><result>fail</result></dkim>"
    "<dkim><domain>example.com</domain><result>pass</result></dkim>"
    "<spf><domain>example.com</domain><result>softfail</result></spf></auth_results></record>\n"
    " <record><row><source_ip>192.0.2.1</source_ip><count>2</count><policy_evaluated>"
    "<disposition>reject</disposition></policy_evaluated></row><identifiers><header_from>example.com"
    "</header_from></identifiers><auth_results><spf><domain>mail.example.com</domain><result>pass</result>"
    "</spf></auth_results></record>\n</feedback>\n";

static void test_xml_quirks(void)
{
    mw_rptin_report r;
    char why[256];
    if (!MW_TEST_ASSERT(mw_rptin_parse(RPT, strlen(RPT), &r, why, sizeof why)))
        return;
    MW_TEST_EQ_STR(r.org_name, "Example Org");
    MW_TEST_EQ_STR(r.domain, "example.com");
    MW_TEST_EQ_STR(r.p, "reject");
    MW_TEST_EQ_INT(r.pct, 100);
    MW_TEST_EQ_INT(r.format, 7489);
    MW_TEST_EQ_INT(r.nrows, 2);
    MW_TEST_EQ_STR(r.rows[0].source_ip, "2001:db8::1");
    MW_TEST_EQ_STR(r.rows[0].dkim_aligned, "pass");
    MW_TEST_EQ_STR(r.rows[0].disposition, "none");
    MW_TEST_EQ_STR(r.rows[0].dkim_result, "pass");   /* a pass wins over an earlier fail */
    MW_TEST_EQ_STR(r.rows[0].dkim_domain, "example.com");
    MW_TEST_EQ_STR(r.rows[0].spf_result, "softfail");
    /* policy_evaluated without dkim/spf: derived (SPF pass at a child domain: aligned) */
    MW_TEST_EQ_STR(r.rows[1].spf_aligned, "pass");
    MW_TEST_EQ_STR(r.rows[1].dkim_aligned, "fail");
    mw_rptin_report_clear(&r);

    /* RFC 9990 namespace, times with a fraction, empty org_name */
    mw_buf b = MW_BUF_INIT;
    mw_buf_puts(&b, RPT);
    char *s = b.data;
    char *f = strstr(s, "<feedback>");
    mw_buf x = MW_BUF_INIT;
    mw_buf_append(&x, s, (size_t)(f - s));
    mw_buf_puts(&x, "<feedback xmlns=\"urn:ietf:params:xml:ns:dmarc-2.0\">");
    mw_buf_puts(&x, f + strlen("<feedback>"));
    char *t = strstr(x.data, "1700000000</begin>");
    memcpy(t, "1700000000", 10);
    MW_TEST_ASSERT(mw_rptin_parse(x.data, x.len, &r, why, sizeof why));
    MW_TEST_EQ_INT(r.format, 9990);
    mw_rptin_report_clear(&r);
    mw_buf_free(&x);
    mw_buf_free(&b);

    const char *frac = "<feedback><report_metadata><org_name></org_name><email>x@rep.example</email>"
                       "<report_id>1</report_id><date_range><begin>5.0</begin><end>6.25</end></date_range>"
                       "</report_metadata><policy_published><domain>d.example</domain></policy_published>"
                       "</feedback>";
    if (MW_TEST_ASSERT(mw_rptin_parse(frac, strlen(frac), &r, why, sizeof why))) {
        MW_TEST_EQ_STR(r.org_name, "rep.example");
        MW_TEST_EQ_INT(r.begin, 5);
        MW_TEST_EQ_INT(r.end, 6);
        MW_TEST_EQ_INT(r.nrows, 0);
        mw_rptin_report_clear(&r);
    }
}

static void refused(const char *xml, const char *want)
{
    mw_rptin_report r;
    char why[256] = "";
    bool ok = mw_rptin_parse(xml, strlen(xml), &r, why, sizeof why);
    MW_TEST_ASSERT(!ok);
    if (!MW_TEST_ASSERT(strstr(why, want) != NULL))
        fprintf(stderr, "  why: %s (want %s)\n", why, want);
    MW_TEST_ASSERT(r.rows == NULL && r.org_name == NULL);
}

static void test_xml_refused(void)
{
    refused("<?xml version=\"1.0\"?><!DOCTYPE feedback SYSTEM \"file:///etc/passwd\"><feedback/>",
            "DOCTYPE refused");
    refused("<!DOCTYPE f [<!ENTITY a \"b\">]><feedback>&a;</feedback>", "DOCTYPE refused");
    refused("<feedback><report_metadata>", "XML error");
    refused("<html/>", "not <feedback>");
    refused("<feedback><report_metadata><org_name>o</org_name></report_metadata><policy_published/>"
            "</feedback>",
            "no report_id");
    refused("<feedback><report_metadata><org_name>o</org_name><report_id>1</report_id><date_range><begin>x"
            "</begin><end>2</end></date_range></report_metadata><policy_published><domain>d</domain>"
            "</policy_published></feedback>",
            "are not times");
    const char *p = strstr(RPT, "<count>3</count>");
    mw_buf b = MW_BUF_INIT;
    mw_buf_append(&b, RPT, (size_t)(p - RPT));
    mw_buf_puts(&b, "<count>3x</count>");
    mw_buf_puts(&b, p + strlen("<count>3</count>"));
    refused(b.data, "record 1: count \"3x\" is not a number");
    mw_buf_free(&b);
}

/* A one-entry zip of data (method 8), built by hand over zlib. */
static void make_zip(mw_buf *z, const char *name, const char *data, size_t len)
{
    unsigned char comp[65536];
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit2(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    s.next_in = (Bytef *)(uintptr_t)data;
    s.avail_in = (uInt)len;
    s.next_out = comp;
    s.avail_out = sizeof comp;
    deflate(&s, Z_FINISH);
    size_t clen = sizeof comp - s.avail_out;
    deflateEnd(&s);
    unsigned long crc = crc32(0, (const Bytef *)data, (uInt)len);
    size_t nlen = strlen(name);
#define U16(v) do { unsigned char t_[2] = {(unsigned char)(v), (unsigned char)((v) >> 8)}; mw_buf_append(z, t_, 2); } while (0)
#define U32(v) do { U16((v) & 0xffff); U16(((unsigned long)(v) >> 16) & 0xffff); } while (0)
    U32(0x04034b50); U16(20); U16(0); U16(8); U16(0); U16(0); U32(crc); U32(clen); U32(len); U16(nlen); U16(0);
    mw_buf_append(z, name, nlen);
    mw_buf_append(z, comp, clen);
    size_t cd = z->len;
    U32(0x02014b50); U16(20); U16(20); U16(0); U16(8); U16(0); U16(0); U32(crc); U32(clen); U32(len);
    U16(nlen); U16(0); U16(0); U16(0); U16(0); U32(0); U32(0);
    mw_buf_append(z, name, nlen);
    size_t cdlen = z->len - cd;
    U32(0x06054b50); U16(0); U16(0); U16(1); U16(1); U32(cdlen); U32(cd); U16(0);
}

static bool count_entry(const char *e, const unsigned char *d, size_t n, void *arg)
{
    ++*(int *)arg;
    return true;
}

static void zip_refused(mw_buf *z, const char *want)
{
    mw_rptin_budget bg = {0};
    char why[256] = "";
    int n = 0;
    MW_TEST_ASSERT(!mw_rptin_unzip((unsigned char *)z->data, z->len, MW_RPTIN_MAX_XML, &bg, count_entry, &n, why,
                                   sizeof why));
    if (!MW_TEST_ASSERT(strstr(why, want) != NULL))
        fprintf(stderr, "  why: %s (want %s)\n", why, want);
    MW_TEST_EQ_INT(n, 0);
}

static void test_zip(void)
{
    mw_buf z = MW_BUF_INIT;
    make_zip(&z, "r.xml", RPT, strlen(RPT));
    mw_rptin_budget bg = {0};
    char why[256] = "";
    int n = 0;
    MW_TEST_ASSERT(mw_rptin_unzip((unsigned char *)z.data, z.len, MW_RPTIN_MAX_XML, &bg, count_entry, &n, why,
                                  sizeof why));
    MW_TEST_EQ_INT(n, 1);
    MW_TEST_EQ_INT(bg.total, strlen(RPT));

    size_t cd = z.len - 22 - (46 + 5);
    mw_buf c = MW_BUF_INIT;
    /* encrypted flag in the central directory */
    mw_buf_append(&c, z.data, z.len);
    c.data[cd + 8] |= 1;
    zip_refused(&c, "encrypted");
    /* zip64 marker */
    mw_buf_reset(&c);
    mw_buf_append(&c, z.data, z.len);
    memset(c.data + cd + 24, 0xff, 4);
    zip_refused(&c, "zip64");
    /* CRC wrong */
    mw_buf_reset(&c);
    mw_buf_append(&c, z.data, z.len);
    c.data[cd + 16] ^= 1;
    zip_refused(&c, "CRC-32 mismatch");
    /* local header method disagrees */
    mw_buf_reset(&c);
    mw_buf_append(&c, z.data, z.len);
    c.data[8] = 0;
    zip_refused(&c, "local header");
    /* central directory offset past the end */
    mw_buf_reset(&c);
    mw_buf_append(&c, z.data, z.len);
    c.data[z.len - 22 + 16] = (char)0xf0;
    zip_refused(&c, "outside the file");
    /* cut short: no end record */
    mw_buf_reset(&c);
    mw_buf_append(&c, z.data, z.len - 3);
    zip_refused(&c, "end-of-central-directory");
    /* declares less than it inflates to */
    mw_buf_reset(&c);
    mw_buf_append(&c, z.data, z.len);
    c.data[cd + 24] = 10;
    c.data[cd + 25] = 0;
    zip_refused(&c, "inflates past its declared size of 10 bytes");
    mw_buf_free(&c);
    mw_buf_free(&z);
}

static void test_gzip(void)
{
    /* 1 MiB of spaces, gzipped: a cap of 64 KiB must stop it with an error */
    size_t big = 1 << 20;
    char *sp = mw_malloc(big);
    memset(sp, ' ', big);
    unsigned char gz[16384];
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit2(&s, 9, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY);
    s.next_in = (Bytef *)sp;
    s.avail_in = (uInt)big;
    s.next_out = gz;
    s.avail_out = sizeof gz;
    MW_TEST_EQ_INT(deflate(&s, Z_FINISH), Z_STREAM_END);
    size_t glen = sizeof gz - s.avail_out;
    deflateEnd(&s);
    mw_rptin_budget bg = {0};
    unsigned char *out = NULL;
    size_t olen = 0;
    char why[256] = "";
    MW_TEST_ASSERT(!mw_rptin_gunzip(gz, glen, 65536, &bg, &out, &olen, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "larger than the limit of 65536 bytes") != NULL);
    bg.total = 0;
    MW_TEST_ASSERT(mw_rptin_gunzip(gz, glen, big, &bg, &out, &olen, why, sizeof why));
    MW_TEST_EQ_INT(olen, big);
    free(out);
    bg.total = 0;
    MW_TEST_ASSERT(!mw_rptin_gunzip(gz, glen - 5, big, &bg, &out, &olen, why, sizeof why));
    free(sp);
}

typedef struct leaves {
    int  n;
    char types[8][64];
    char bodies[8][64];
} leaves;

static bool leaf(const char *ct, const char *fn, const unsigned char *b, size_t n, void *arg)
{
    leaves *l = arg;
    if (l->n < 8) {
        snprintf(l->types[l->n], sizeof l->types[0], "%s|%s", ct, fn);
        snprintf(l->bodies[l->n], sizeof l->bodies[0], "%.*s", (int)n, (const char *)b);
    }
    l->n++;
    return true;
}

static void test_mime(void)
{
    const char *m = "From: a@b.example\nContent-Type: multipart/mixed;\n\tboundary=\"b1\"\n\npreamble\n"
                    "--b1\nContent-Type: text/plain\n\nhello\n"
                    "--b1  \nContent-Type: application/octet-stream; name=\"r.xml\"\n"
                    "Content-Transfer-Encoding: BASE64\n\nPGZl\nZWRi YWNr\r\nLz4=\n"
                    "--b1\nContent-Type: text/xml\nContent-Transfer-Encoding: quoted-printable\n\n<a=\n>=3D</a>\n"
                    "--b1--\nepilogue\n";
    leaves l = {0};
    unsigned parts = 0;
    char why[256] = "";
    MW_TEST_ASSERT(mw_rptin_mime((const unsigned char *)m, strlen(m), 0, &parts, leaf, &l, why, sizeof why));
    MW_TEST_EQ_INT(l.n, 3);
    MW_TEST_EQ_STR(l.types[0], "text/plain|");
    MW_TEST_EQ_STR(l.bodies[0], "hello");
    MW_TEST_EQ_STR(l.types[1], "application/octet-stream|r.xml");
    MW_TEST_EQ_STR(l.bodies[1], "<feedback/>");
    MW_TEST_EQ_STR(l.bodies[2], "<a>=</a>");

    const char *nob = "Content-Type: multipart/mixed\n\nx\n";
    MW_TEST_ASSERT(!mw_rptin_mime((const unsigned char *)nob, strlen(nob), 0, &parts, leaf, &l, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "without a boundary") != NULL);
    const char *noline = "Content-Type: multipart/mixed; boundary=zz\n\nno boundary here\n";
    MW_TEST_ASSERT(
        !mw_rptin_mime((const unsigned char *)noline, strlen(noline), 0, &parts, leaf, &l, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "without any boundary line") != NULL);
    /* nesting bound */
    mw_buf deep = MW_BUF_INIT;
    for (int i = 0; i < 20; i++)
        mw_buf_printf(&deep, "Content-Type: multipart/mixed; boundary=q%d\n\n--q%d\n", i, i);
    parts = 0;
    MW_TEST_ASSERT(!mw_rptin_mime((const unsigned char *)deep.data, deep.len, 0, &parts, leaf, &l, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "nested deeper") != NULL);
    mw_buf_free(&deep);
}

typedef struct docs {
    int  docs, errors;
    char last_err[256];
} docs;

static bool on_doc(const char *name, const char *xml, size_t len, void *arg)
{
    ((docs *)arg)->docs++;
    return true;
}

static void on_err(const char *name, const char *why, void *arg)
{
    docs *d = arg;
    d->errors++;
    snprintf(d->last_err, sizeof d->last_err, "%s: %s", name, why);
}

static void test_unpack(void)
{
    /* a zip attachment (base64) in a mail in a mail */
    mw_buf z = MW_BUF_INIT, m = MW_BUF_INIT;
    make_zip(&z, "r.xml", RPT, strlen(RPT));
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    mw_buf_puts(&m, "Content-Type: message/rfc822\n\nContent-Type: multipart/report; boundary=\"x\"\n\n"
                    "--x\nContent-Type: text/plain\n\nreport\n--x\nContent-Type: application/zip\n"
                    "Content-Transfer-Encoding: base64\n\n");
    const unsigned char *p = (const unsigned char *)z.data;
    for (size_t i = 0; i < z.len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < z.len ? p[i + 1] << 8 : 0) | (i + 2 < z.len ? p[i + 2] : 0);
        mw_buf_putc(&m, b64[v >> 18 & 63]);
        mw_buf_putc(&m, b64[v >> 12 & 63]);
        mw_buf_putc(&m, i + 1 < z.len ? b64[v >> 6 & 63] : '=');
        mw_buf_putc(&m, i + 2 < z.len ? b64[v & 63] : '=');
    }
    mw_buf_puts(&m, "\n--x--\n");
    docs d = {0};
    MW_TEST_EQ_INT(mw_rptin_unpack("m", (unsigned char *)m.data, m.len, on_doc, on_err, &d), 0);
    MW_TEST_EQ_INT(d.docs, 1);
    /* a mail with only text: an error naming the mail */
    docs e = {0};
    const char *txt = "Subject: hi\n\nno report\n";
    MW_TEST_EQ_INT(mw_rptin_unpack("t.eml", (const unsigned char *)txt, strlen(txt), on_doc, on_err, &e), 1);
    MW_TEST_ASSERT(strstr(e.last_err, "t.eml: no DMARC report") != NULL);
    mw_buf_free(&z);
    mw_buf_free(&m);
}

int main(void)
{
    MW_TEST_RUN(test_xml_quirks);
    MW_TEST_RUN(test_xml_refused);
    MW_TEST_RUN(test_zip);
    MW_TEST_RUN(test_gzip);
    MW_TEST_RUN(test_mime);
    MW_TEST_RUN(test_unpack);
    return MW_TEST_SUMMARY();
}
