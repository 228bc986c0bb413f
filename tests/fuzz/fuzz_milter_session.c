/*
 * fuzz_milter_session.c - what the milter front end hands the engine
 * (frontends/milter.c -> engine.h): connect data and macros
 * ({auth_authen}, {daemon_name}, i), HELO, MAIL FROM, RCPT TO, headers,
 * body and end of message, in any order and any number, as a hostile or
 * buggy MTA connection could produce.  The milter server is not in the
 * loop (fuzz_milter_proto covers its packet decoder); the callbacks in
 * milter.c are thin and pass these values on unchanged.
 *
 * Two engines, built once: 0 = embedded defaults with SPF and DMARC off
 * (DKIM verification on), 1 = SPF and DMARC on too.  Both resolve through
 * the in-process responder (fuzz_dns.h), which answers every TXT query with
 * the script's T line, so no real DNS is ever asked.
 *
 * Input: a script, one operation per line; backslash escapes \n \r \t \0
 * \\ and \xHH in the argument:
 *   E0|E1          choose the engine (first line only)
 *   T<text>        TXT answer for every lookup from now on
 *   C<ip> <name>   new connection (the previous one is freed)
 *   M<name>=<val>  macro        K  connect-time checks
 *   H<helo>  F<mail from>  R<rcpt>  X<name>:<value>  O (end of headers)
 *   B<body chunk>  D (end of message)  A (abort)
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "fuzz_common.h"
#include "fuzz_dns.h"
#include "log.h"

static mw_engine *engines[2];

static mw_engine *make_engine(int port, const char *extra)
{
    /* made once; "is the last character still 'X'" was the test before,
     * and mkdtemp leaves an 'X' there one time in 62: the second engine
     * then called mkdtemp on a name without a template and aborted */
    static char dir[] = "/tmp/mw-fuzz-milter-XXXXXX";
    static int made;
    if (!made) {
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
        made = 1;
    }
    char path[128], text[1024], err[256];
    snprintf(path, sizeof path, "%s/e.conf", dir);
    snprintf(text, sizeof text,
             "authserv_id = \"mx.example.net\";\nhostname = \"mx.example.net\";\n"
             "log = { level = \"error\"; };\n"
             "dns = { mode = \"forward\"; forwarders = [\"127.0.0.1@%d\"]; timeout = 300; };\n"
             "trust = { internal_networks = [\"10.0.0.0/8\"]; submission_daemons = [\"ORIGINATING\"]; };\n"
             "%s",
             port, extra);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        abort();
    }
    fputs(text, f);
    fclose(f);
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(path, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "config: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    unlink(path);
    if (!cfg)
        abort();
    mw_engine *e = mw_engine_create(cfg, err, sizeof err);
    if (!e) {
        fprintf(stderr, "engine: %s\n", err);
        abort();
    }
    return e;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "fuzz", "mail", MW_LOG_ERROR);
    int port = fz_dns_start();
    engines[0] = make_engine(port, "spf = { enabled = false; };\ndmarc = { enabled = false; };\n");
    engines[1] = make_engine(port, "spf = { timeout = 2000; };\n");
    return 0;
}

static int hexv(uint8_t c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Unescape into a fresh buffer (NUL-terminated; *outlen excludes it). */
static char *unescape(const uint8_t *p, size_t n, size_t *outlen)
{
    char *o = malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 >= n) {
            o[k++] = (char)p[i];
            continue;
        }
        uint8_t c = p[++i];
        if (c == 'n') o[k++] = '\n';
        else if (c == 'r') o[k++] = '\r';
        else if (c == 't') o[k++] = '\t';
        else if (c == '0') o[k++] = '\0';
        else if (c == 'x' && i + 2 < n && hexv(p[i + 1]) >= 0 && hexv(p[i + 2]) >= 0) {
            o[k++] = (char)(hexv(p[i + 1]) << 4 | hexv(p[i + 2]));
            i += 2;
        } else o[k++] = (char)c;
    }
    o[k] = '\0';
    *outlen = k;
    return o;
}

static void check_verdict(const mw_verdict *v)
{
    assert(v != NULL);
    for (size_t i = 0; i < v->nadd; i++) {
        assert(v->add[i].name && v->add[i].value);
        /* header values we insert: no CR, no NUL, LF only as a fold */
        for (const char *c = v->add[i].value; *c; c++) {
            assert(*c != '\r');
            if (*c == '\n')
                assert(c[1] == '\t' || c[1] == ' ');
        }
    }
    for (size_t i = 0; i < v->nremove; i++)
        assert(v->remove[i].index >= 1);
    if (v->action != MW_ACTION_ACCEPT && v->text)
        assert(strchr(v->text, '\r') == NULL && strchr(v->text, '\n') == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *l;
    size_t n = size, ll;
    mw_engine *e = engines[0];
    mw_session *s = NULL;
    unsigned ops = 0;
    bool first = true;
    bool evaluated = false;   /* eom ran and no MAIL/abort/new connection since */
    int last_action = 0;      /* its verdict's action */
    fz_dns_set_txt(NULL, 0);

    while (fz_next_line(&p, &n, &l, &ll) && ops++ < 500) {
        if (ll == 0)
            continue;
        uint8_t op = l[0];
        size_t alen;
        char *arg = unescape(l + 1, ll - 1, &alen);
        if (first && op == 'E') {
            e = engines[arg[0] == '1'];
            first = false;
            free(arg);
            continue;
        }
        first = false;
        if (op == 'T') {
            fz_dns_set_txt(arg, alen);
            free(arg);
            continue;
        }
        if (op == 'C') {
            mw_session_free(&s);
            char *sp = strchr(arg, ' ');
            if (sp)
                *sp++ = '\0';
            s = mw_session_new(e, arg[0] ? arg : NULL, sp);
            evaluated = false;
            free(arg);
            continue;
        }
        if (!s)
            s = mw_session_new(e, "192.0.2.1", "client.example.org");
        switch (op) {
        case 'M': {
            char *eq = strchr(arg, '=');
            if (eq) {
                *eq = '\0';
                mw_session_macro(s, arg, eq + 1);
            }
            break;
        }
        case 'K': mw_session_connect(s); break;
        case 'H': mw_session_helo(s, arg); break;
        case 'F': mw_session_mail(s, arg); evaluated = false; break;
        case 'R': mw_session_rcpt(s, arg); break;
        case 'X': {
            char *colon = memchr(arg, ':', alen);
            if (colon) {
                *colon = '\0';
                char *v = fz_exact((const uint8_t *)colon + 1, alen - (size_t)(colon - arg) - 1);
                mw_session_header(s, arg, v, alen - (size_t)(colon - arg) - 1);
                free(v);
            }
            break;
        }
        case 'O': mw_session_eoh(s); break;
        case 'B': {
            unsigned char *b = (unsigned char *)fz_exact((const uint8_t *)arg, alen);
            mw_session_body(s, b, alen);
            free(b);
            break;
        }
        case 'D': {
            /* A second eom for the same message must give the first verdict
             * and evaluate, record and charge nothing again (session.c,
             * eom_done).  The milter server passes a repeated E on, so this
             * is reachable from the MTA (regression input
             * corpus/milter_session/crash-double-eom-leak). */
            const mw_verdict *v = mw_session_eom(s);
            check_verdict(v);
            if (evaluated && (int)v->action != last_action)
                abort();   /* the repeat changed the verdict */
            last_action = (int)v->action;
            evaluated = true;
            break;
        }
        case 'A': mw_session_abort(s); evaluated = false; break;
        default: break;
        }
        const mw_reply *r = mw_session_refusal(s);
        if (r)
            assert(r->action == MW_ACTION_TEMPFAIL || r->action == MW_ACTION_REJECT);
        (void)mw_session_id(s);
        free(arg);
    }
    if (s) {
        for (size_t i = 0; i < mw_session_trace_count(s); i++)
            (void)strlen(mw_session_trace(s, i));
        mw_session_free(&s);
    }
    assert(mw_engine_active_messages(e) == 0);
    return 0;
}
