/*
 * test_core_config_dump.c - config_dump.c (`mailwarden config-dump`) and the
 * one duration syntax of every duration key (config.c).
 *
 * The dump must load back: each test dumps, writes the text to a file,
 * loads it, dumps again and compares the values (comments stripped).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "config_dump.h"
#include "mwtest.h"

static char tmp_paths[32][64];
static size_t ntmp;

static const char *write_tmp(const char *text)
{
    char *path = tmp_paths[ntmp++];
    size_t len = strlen(text);
    int fd;

    snprintf(path, sizeof tmp_paths[0], "/tmp/mw-test-cdump-XXXXXX");
    fd = mkstemp(path);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        perror("mkstemp/write");
        exit(2);
    }
    close(fd);
    return path;
}

static mw_config *load_text(const char *text, mw_config_errors *errs, const char **path)
{
    const char *p = write_tmp(text);
    if (path != NULL)
        *path = p;
    return mw_config_load(p, NULL, errs);
}

static void print_errs(const mw_config_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    %s\n", e->msg[i]);
}

/* The dump without comments: comment lines dropped, "  # ..." cut off.
 * skip_host: also drop the keys whose default is this host's name. */
static char *values_only(const char *dump, bool skip_host)
{
    mw_buf b = MW_BUF_INIT;
    const char *p = dump;

    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, len);
        char *c = strstr(line, "  # ");
        const char *t = line + strspn(line, " ");
        bool host = strstr(line, "this host's name") != NULL;
        if (*t != '#' && !(skip_host && host)) {
            if (c != NULL)
                *c = '\0';
            mw_buf_puts(&b, line);
            mw_buf_putc(&b, '\n');
        }
        free(line);
        p += len + (nl != NULL);
    }
    return mw_buf_steal(&b);
}

static char *dump(const mw_config *c, mw_config_dump_mode mode)
{
    mw_buf b = MW_BUF_INIT;
    mw_config_dump(c, mode, &b);
    return mw_buf_steal(&b);
}

/* Is there a line in text that starts (after blanks) with want? */
static bool has_line(const char *text, const char *want)
{
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        const char *t = p + strspn(p, " ");
        if (strncmp(t, want, strlen(want)) == 0)
            return true;
    }
    fprintf(stderr, "  no line \"%s\" in:\n%s\n", want, text);
    return false;
}

/* --defaults loads back to the defaults: config-dump --defaults > x.conf. */
static void test_defaults_round_trip(void)
{
    mw_config_errors errs = {0};
    mw_config *d = mw_config_load(NULL, NULL, &errs);
    char *text = dump(d, MW_DUMP_DEFAULTS);
    const char *path;
    mw_config *c = load_text(text, &errs, &path);

    print_errs(&errs);
    MW_TEST_EQ_INT(errs.n, 0);
    MW_TEST_ASSERT(c != NULL);
    if (c != NULL) {
        char *again = dump(c, MW_DUMP_ALL);
        char *a = values_only(text, true), *b = values_only(again, true);
        MW_TEST_EQ_STR(a, b);
        /* every key is in the defaults dump, the host-dependent ones as a comment */
        for (size_t i = 0; mw_config_key_name(i) != NULL; i++) {
            const char *k = mw_config_key_name(i), *leaf = strrchr(k, '.');
            char want[128];
            snprintf(want, sizeof want, "\n%s%s = ", leaf != NULL ? "    " : "", leaf != NULL ? leaf + 1 : k);
            char want_c[128];
            snprintf(want_c, sizeof want_c, "\n%s# %s = ", leaf != NULL ? "    " : "", leaf != NULL ? leaf + 1 : k);
            if (!MW_TEST_ASSERT(strstr(text, want) != NULL || strstr(text, want_c) != NULL))
                fprintf(stderr, "  key %s missing from the defaults dump\n", k);
        }
        /* the effective dump of that file names the file's lines */
        char want[256];
        snprintf(want, sizeof want, "socket = \"inet:8894@127.0.0.1\";  # %s:2", path);
        MW_TEST_ASSERT(has_line(again, want));
        /* the host name keys: a value in the effective dump, default as origin */
        MW_TEST_ASSERT(strstr(again, "\nauthserv_id = \"") != NULL);
        MW_TEST_ASSERT(strstr(text, "\n# authserv_id = \"") != NULL);
        free(a);
        free(b);
        free(again);
    }
    free(text);
    mw_config_free(&c);
    mw_config_free(&d);
    mw_config_errors_free(&errs);
}

/* Every kind of value, with characters that need quoting, survives a dump
 * and reload; origins are FILE:LINE of the setting; -n lists only those. */
static void test_values_round_trip(void)
{
    static const char text[] =
        "authserv_id = \"mx.example\";\n"                                  /* 1 */
        "policy_shadow = \"a \\\"quoted\\\" \\\\ back\\tslash\";\n"       /* 2 */
        "socket_mode = \"0640\";\n"                                        /* 3 */
        "shutdown_timeout = \"2m\";\n"                                     /* 4 */
        "dns = { timeout = 2500; forwarders = [ \"192.0.2.53@5353\", \"::1\" ]; };\n" /* 5 */
        "spf = { timeout = \"3s\"; helo = false; };\n"                     /* 6 */
        "trust = { internal_networks = [ \"10.0.0.0/8\", \"2001:db8::/32\" ]; };\n" /* 7 */
        "log = { level = \"warning\"; };\n"                                /* 8 */
        "redis = { connect_timeout = \"150ms\"; };\n"                      /* 9 */
        "reputation = { window = 172800; bucket = \"1h\"; };\n"           /* 10 */
        "dkim = {\n"                                                       /* 11 */
        "  keys = ( { name = \"k1\"; domain = \"example.org\"; selector = \"s1\"; file = \"/k/a b.key\"; } );\n"
        "  signing = ( { pattern = \"*@example.org\"; keys = [ \"k1\" ]; } );\n"
        "};\n"
        "ratelimit = { rules = (\n"
        "  { name = \"per-ip\"; key = [ \"ip\" ]; rate = \"100/1h\"; ipv4_mask = 24; }\n"
        "); };\n";
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text(text, &errs, &path);

    print_errs(&errs);
    MW_TEST_ASSERT(c != NULL);
    if (c == NULL)
        goto out;
    MW_TEST_EQ_INT(c->dns_timeout_ms, 2500);
    MW_TEST_EQ_INT(c->spf_timeout_ms, 3000);
    MW_TEST_EQ_INT(c->redis_connect_timeout_ms, 150);
    MW_TEST_EQ_INT(c->shutdown_timeout, 120);
    MW_TEST_EQ_INT(c->reputation_window_s, 172800);

    char *d1 = dump(c, MW_DUMP_ALL);
    char want[256];
    snprintf(want, sizeof want, "timeout = \"2500ms\";  # %s:5", path);
    MW_TEST_ASSERT(has_line(d1, want));
    snprintf(want, sizeof want, "shutdown_timeout = \"2m\";  # %s:4", path);
    MW_TEST_ASSERT(has_line(d1, want));
    snprintf(want, sizeof want, "window = \"2d\";  # %s:10", path);
    MW_TEST_ASSERT(has_line(d1, want));
    MW_TEST_ASSERT(has_line(d1, "policy_shadow = \"a \\\"quoted\\\" \\\\ back\\tslash\";"));
    MW_TEST_ASSERT(has_line(d1, "internal_networks = [ \"10.0.0.0/8\", \"2001:db8::/32\" ];"));
    MW_TEST_ASSERT(has_line(d1, "level = \"warn\";"));
    MW_TEST_ASSERT(has_line(d1, "socket_mode = \"0640\";"));
    MW_TEST_ASSERT(has_line(d1, "milter_timeout = \"5m\";  # default"));

    /* load the dump back: the same values */
    mw_config *c2 = load_text(d1, &errs, NULL);
    print_errs(&errs);
    MW_TEST_ASSERT(c2 != NULL);
    if (c2 != NULL) {
        char *d2 = dump(c2, MW_DUMP_ALL);
        char *a = values_only(d1, false), *b = values_only(d2, false);
        MW_TEST_EQ_STR(a, b);
        MW_TEST_EQ_STR(c2->policy_shadow, "a \"quoted\" \\ back\tslash");
        MW_TEST_EQ_INT(c2->ndkim_keys, 1);
        MW_TEST_EQ_INT(c2->nratelimit_rules, 1);
        if (c2->nratelimit_rules == 1)
            MW_TEST_EQ_INT(c2->ratelimit_rules[0].ipv4_mask, 24);
        free(a);
        free(b);
        free(d2);
    }
    mw_config_free(&c2);

    /* -n: the keys the file sets, and no others */
    char *dn = dump(c, MW_DUMP_NON_DEFAULT);
    MW_TEST_ASSERT(has_line(dn, "authserv_id = \"mx.example\";"));
    MW_TEST_ASSERT(has_line(dn, "rules = ("));
    MW_TEST_ASSERT(strstr(dn, "milter_timeout") == NULL);
    MW_TEST_ASSERT(strstr(dn, "metrics = {") == NULL);
    MW_TEST_ASSERT(strstr(dn, "# default") == NULL);
    free(dn);
    free(d1);
out:
    mw_config_free(&c);
    mw_config_errors_free(&errs);
}

/* Keys replaced on the command line say so. */
static void test_override_origin(void)
{
    const char *dns[] = {"192.0.2.1"};
    mw_config_overrides ov = {.socket = "inet:9999@127.0.0.1", .dns = dns, .ndns = 1};
    mw_config_errors errs = {0};
    const char *path = write_tmp("socket = \"inet:8894@127.0.0.1\";\n");
    mw_config *c = mw_config_load(path, &ov, &errs);

    MW_TEST_ASSERT(c != NULL);
    if (c != NULL) {
        char *d = dump(c, MW_DUMP_ALL);
        MW_TEST_ASSERT(has_line(d, "socket = \"inet:9999@127.0.0.1\";  # command line"));
        MW_TEST_ASSERT(has_line(d, "forwarders = [ \"192.0.2.1\" ];  # command line"));
        MW_TEST_ASSERT(has_line(d, "mode = \"forward\";  # command line"));
        free(d);
    }
    mw_config_free(&c);
    mw_config_errors_free(&errs);
}

static bool has_error(const mw_config_errors *e, const char *path, int line, const char *msg)
{
    char want[512];

    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->msg[i], want, strlen(want)) == 0)
            return true;
    fprintf(stderr, "  wanted error \"%s...\"; got %zu:\n", want, e->n);
    print_errs(e);
    return false;
}

/* One duration form for every duration key; errors name the unit and the
 * forms; a key in seconds refuses what is not whole seconds. */
static void test_durations(void)
{
    mw_config_errors errs = {0};
    mw_config *c;

    /* accepted: units on millisecond keys and on second keys, bare numbers
     * in the key's documented unit */
    c = load_text("dns = { timeout = \"2s\"; cache_max_ttl = \"15m\"; cache_min_ttl = 30; };\n"
                  "spf = { timeout = \"20000ms\"; };\n"
                  "redis = { command_timeout = \"300ms\"; connect_timeout = 40; };\n"
                  "history = { fsync_interval = \"0ms\"; rotate = \"120000ms\"; };\n"
                  "milter_timeout = \"6h\";\n"
                  "exim = { request_timeout = \"1m\"; rcpt_timeout = \"5s\"; };\n"
                  "metrics = { timeout = \"7s\"; };\n"
                  "report = { suppress_5xx_for = \"7d\"; pacing = \"0s\"; timeout = \"300\"; };\n",
                  &errs, NULL);
    print_errs(&errs);
    MW_TEST_ASSERT(c != NULL);
    if (c != NULL) {
        MW_TEST_EQ_INT(c->dns_timeout_ms, 2000);
        MW_TEST_EQ_INT(c->dns_cache_max_ttl, 900);
        MW_TEST_EQ_INT(c->dns_cache_min_ttl, 30);
        MW_TEST_EQ_INT(c->spf_timeout_ms, 20000);
        MW_TEST_EQ_INT(c->redis_command_timeout_ms, 300);
        MW_TEST_EQ_INT(c->redis_connect_timeout_ms, 40);
        MW_TEST_EQ_INT(c->history_fsync_interval_ms, 0);
        MW_TEST_EQ_INT(c->history_rotate_s, 120);
        MW_TEST_EQ_INT(c->milter_timeout, 6 * 3600);
        MW_TEST_EQ_INT(c->exim_request_timeout, 60);
        MW_TEST_EQ_INT(c->exim_rcpt_timeout, 5);
        MW_TEST_EQ_INT(c->metrics_timeout_s, 7);
        MW_TEST_EQ_INT(c->report_suppress_5xx_for_s, 7 * 86400);
        MW_TEST_EQ_INT(c->report_pacing_s, 0);
        MW_TEST_EQ_INT(c->report_timeout_s, 300);
    }
    mw_config_free(&c);
    mw_config_errors_free(&errs);
}

static void test_duration_errors(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c;

    c = load_text("shutdown_timeout = \"1500ms\";\n"          /* 1: sub-second on a seconds key */
                  "dns = { timeout = \"5x\"; };\n"             /* 2: unknown unit */
                  "spf = { timeout = 2.5; };\n"                /* 3: a float */
                  "metrics = { timeout = \"1h\"; };\n"         /* 4: out of range */
                  "redis = { command_timeout = \"2m\"; };\n"   /* 5: out of range (ms key) */
                  "report = { timeout = \"-5s\"; };\n"         /* 6: no sign */
                  "milter_timeout = \"\";\n"                   /* 7: empty */
                  "history = { rotate = \"1.5h\"; };\n",       /* 8: no fractions */
                  &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 1, "shutdown_timeout: \"1500ms\" is not a whole number of "
                                             "seconds (this key counts in seconds"));
    MW_TEST_ASSERT(has_error(&errs, path, 2, "dns.timeout: \"5x\" is not a duration in milliseconds "
                                             "(an integer of milliseconds, or NUMBER with a unit ms, s, "
                                             "m, h or d: \"300ms\", \"5s\", \"15m\", \"6h\", \"7d\")"));
    MW_TEST_ASSERT(has_error(&errs, path, 3, "spf.timeout: expected a duration in milliseconds"));
    MW_TEST_ASSERT(has_error(&errs, path, 4, "metrics.timeout: \"1h\" is out of range (1 .. 300) in "
                                             "seconds: 1s .. 5m"));
    MW_TEST_ASSERT(has_error(&errs, path, 5, "redis.command_timeout: \"2m\" is out of range (10 .. 60000) "
                                             "in milliseconds: 10ms .. 1m"));
    MW_TEST_ASSERT(has_error(&errs, path, 6, "report.timeout: \"-5s\" is not a duration in seconds"));
    MW_TEST_ASSERT(has_error(&errs, path, 7, "milter_timeout: \"\" is not a duration in seconds"));
    MW_TEST_ASSERT(has_error(&errs, path, 8, "history.rotate: \"1.5h\" is not a duration in seconds"));
    MW_TEST_EQ_INT(errs.n, 8);
    mw_config_errors_free(&errs);
}

/* The exported parser: every form, the bare unit, overflow. */
static void test_parse_duration(void)
{
    unsigned long long ms = 0, s = 0;

    MW_TEST_ASSERT(mw_config_parse_duration_ms("300ms", 1000, &ms) && ms == 300);
    MW_TEST_ASSERT(mw_config_parse_duration_ms("5s", 1, &ms) && ms == 5000);
    MW_TEST_ASSERT(mw_config_parse_duration_ms("15m", 1, &ms) && ms == 900000);
    MW_TEST_ASSERT(mw_config_parse_duration_ms("6h", 1, &ms) && ms == 21600000);
    MW_TEST_ASSERT(mw_config_parse_duration_ms("7d", 1, &ms) && ms == 604800000);
    MW_TEST_ASSERT(mw_config_parse_duration_ms("42", 1, &ms) && ms == 42);
    MW_TEST_ASSERT(mw_config_parse_duration_ms("42", 1000, &ms) && ms == 42000);
    MW_TEST_ASSERT(!mw_config_parse_duration_ms("", 1, &ms));
    MW_TEST_ASSERT(!mw_config_parse_duration_ms("s", 1, &ms));
    MW_TEST_ASSERT(!mw_config_parse_duration_ms("5 s", 1, &ms));
    MW_TEST_ASSERT(!mw_config_parse_duration_ms("5sec", 1, &ms));
    MW_TEST_ASSERT(!mw_config_parse_duration_ms("99999999999999999999d", 1, &ms));
    MW_TEST_ASSERT(mw_config_parse_duration("90", &s) && s == 90);
    MW_TEST_ASSERT(mw_config_parse_duration("2000ms", &s) && s == 2);
    MW_TEST_ASSERT(!mw_config_parse_duration("2500ms", &s));

    mw_buf b = MW_BUF_INIT;
    unsigned long long v[] = {0, 300, 1000, 90000, 3600000, 86400000, 1500};
    const char *w[] = {"0s", "300ms", "1s", "90s", "1h", "1d", "1500ms"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        mw_buf_reset(&b);
        mw_config_format_duration_ms(&b, v[i]);
        MW_TEST_EQ_STR(mw_buf_cstr(&b), w[i]);
        /* and the formatted form parses back */
        MW_TEST_ASSERT(mw_config_parse_duration_ms(mw_buf_cstr(&b), 1, &ms) && ms == v[i]);
    }
    mw_buf_free(&b);
}

/* --man: one entry per key of the table, in roff. */
static void test_man(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_config_dump_man(&b);
    for (size_t i = 0; mw_config_key_name(i) != NULL; i++) {
        char want[128];
        snprintf(want, sizeof want, ".TP\n.B %s\n", mw_config_key_name(i));
        if (!MW_TEST_ASSERT(strstr(mw_buf_cstr(&b), want) != NULL))
            fprintf(stderr, "  key %s missing from --man\n", mw_config_key_name(i));
    }
    MW_TEST_ASSERT(strstr(mw_buf_cstr(&b), ".B dns.timeout\nDuration (milliseconds), 100ms to 1m; "
                                           "default\n.B \"5s\"\n") != NULL);
    mw_buf_free(&b);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    mw_buf b = MW_BUF_INIT;
    char chunk[4096];
    size_t n;

    if (f == NULL)
        return NULL;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        mw_buf_append(&b, chunk, n);
    fclose(f);
    return mw_buf_steal(&b);
}

/* The documented example ports: metrics 8895 (not an exporter's port from
 * Prometheus's 9100-9999 allocations, e.g. 9108 graphite_exporter), Exim
 * 8896/8897 (not 10025, amavis's re-injection port, nor 10026). */
static void test_example_ports(void)
{
    static const char *const files[] = {
        "README.md", "docs/metrics.md", "docs/exim.md", "docs/mailwarden.conf.5",
        "contrib/mailwarden.conf", "contrib/exim/exim.conf.template",
        "contrib/exim/mailwarden-rcpt.acl", "contrib/exim/mailwarden-data.acl", NULL};
    const char *src = getenv("MW_SOURCE_DIR");
    char path[1024];

    MW_TEST_ASSERT(src != NULL);
    for (size_t i = 0; src != NULL && files[i] != NULL; i++) {
        snprintf(path, sizeof path, "%s/%s", src, files[i]);
        char *t = slurp(path);
        if (!MW_TEST_ASSERT(t != NULL))
            continue;
        /* 10025 may be named only to say why it is not used */
        for (const char *p = strstr(t, "10025"); p != NULL; p = strstr(p + 1, "10025")) {
            bool why = strstr(files[i], "exim.md") != NULL && strstr(t, "amavis") != NULL;
            if (!MW_TEST_ASSERT(why))
                fprintf(stderr, "  %s uses port 10025\n", files[i]);
        }
        for (const char *p = strstr(t, "127.0.0.1:9"); p != NULL; p = strstr(p + 1, "127.0.0.1:9")) {
            int port = atoi(p + 10);
            if (!MW_TEST_ASSERT(port < 9100 || port > 9999))
                fprintf(stderr, "  %s: example port %d is in the exporters' range\n", files[i], port);
        }
        free(t);
    }
    snprintf(path, sizeof path, "%s/docs/metrics.md", src != NULL ? src : ".");
    char *m = slurp(path);
    MW_TEST_ASSERT(m != NULL && strstr(m, "metrics.listen = \"127.0.0.1:8895\";") != NULL);
    free(m);
}

int main(void)
{
    MW_TEST_RUN(test_defaults_round_trip);
    MW_TEST_RUN(test_values_round_trip);
    MW_TEST_RUN(test_override_origin);
    MW_TEST_RUN(test_durations);
    MW_TEST_RUN(test_duration_errors);
    MW_TEST_RUN(test_parse_duration);
    MW_TEST_RUN(test_man);
    MW_TEST_RUN(test_example_ports);
    for (size_t i = 0; i < ntmp; i++)
        unlink(tmp_paths[i]);
    return MW_TEST_SUMMARY();
}
