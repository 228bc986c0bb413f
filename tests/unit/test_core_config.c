/*
 * test_core_config.c - unit tests for core/config.c: defaults, every key,
 * every kind of error with its FILE:LINE, overrides, and the agreement of
 * the key table with docs/mailwarden.conf.5 and contrib/mailwarden.conf.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "cidr.h"
#include "config.h"
#include "mwtest.h"

/* ---- helpers ------------------------------------------------------------------ */

static char tmp_paths[64][64];
static size_t ntmp;

/* Write text into a new temporary file; returns its path (removed at exit). */
static const char *write_tmp(const char *text)
{
    char *path;
    int fd;
    size_t len = strlen(text);

    if (ntmp == sizeof tmp_paths / sizeof tmp_paths[0]) {
        fprintf(stderr, "too many temporary files\n");
        exit(2);
    }
    path = tmp_paths[ntmp++];

    snprintf(path, sizeof tmp_paths[0], "/tmp/mw-test-config-XXXXXX");
    fd = mkstemp(path);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        perror("mkstemp/write");
        exit(2);
    }
    close(fd);
    return path;
}

static void remove_tmps(void)
{
    for (size_t i = 0; i < ntmp; i++)
        unlink(tmp_paths[i]);
}

/* Load text; returns the config (NULL on errors, which stay in *errs). */
static mw_config *load_text(const char *text, const mw_config_overrides *ov,
                            mw_config_errors *errs, const char **path)
{
    const char *p = write_tmp(text);
    if (path != NULL)
        *path = p;
    return mw_config_load(p, ov, errs);
}

/* Is there an error that is exactly "PATH:LINE: " + starts with msg? */
static bool has_error(const mw_config_errors *e, const char *path, int line, const char *msg)
{
    char want[512];

    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->msg[i], want, strlen(want)) == 0)
            return true;
    fprintf(stderr, "  wanted error \"%s...\"; got %zu:\n", want, e->n);
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    %s\n", e->msg[i]);
    return false;
}

static bool has_substr(const mw_config_errors *e, const char *needle)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msg[i], needle) != NULL)
            return true;
    fprintf(stderr, "  wanted an error containing \"%s\"; got %zu:\n", needle, e->n);
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    %s\n", e->msg[i]);
    return false;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    mw_buf b = MW_BUF_INIT;
    char chunk[4096];
    size_t n;

    if (fp == NULL)
        return NULL;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        mw_buf_append(&b, chunk, n);
    fclose(fp);
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_defaults(void)
{
    mw_config_errors errs = {0};
    mw_config *c = mw_config_load(NULL, NULL, &errs);

    if (!MW_TEST_ASSERT(c != NULL))
        return;
    MW_TEST_EQ_INT(errs.n, 0);
    MW_TEST_ASSERT(c->path == NULL);
    MW_TEST_EQ_STR(c->socket, "inet:8894@127.0.0.1");
    MW_TEST_EQ_STR(c->pid_file, "");
    MW_TEST_EQ_STR(c->user, "");
    MW_TEST_EQ_STR(c->group, "");
    MW_TEST_EQ_INT(c->socket_mode, 0660);
    MW_TEST_EQ_INT(c->shutdown_timeout, 30);
    MW_TEST_EQ_INT(c->milter_timeout, 300);
    MW_TEST_ASSERT(c->hostname != NULL && c->hostname[0] != '\0');
    MW_TEST_EQ_STR(c->authserv_id, c->hostname);
    MW_TEST_EQ_INT(c->log_target, MW_LOG_TO_AUTO);
    MW_TEST_EQ_INT(c->log_format, MW_LOG_FMT_TEXT);
    MW_TEST_EQ_INT(c->log_level, MW_LOG_INFO);
    MW_TEST_EQ_STR(c->log_facility, "mail");
    MW_TEST_EQ_INT(c->dns_mode, MW_DNS_MODE_RESOLV_CONF);
    MW_TEST_ASSERT(c->dns_resolv_conf);
    MW_TEST_EQ_INT(c->ndns_forwarders, 0);
    MW_TEST_ASSERT(c->dns_forwarders != NULL && c->dns_forwarders[0] == NULL);
    MW_TEST_EQ_INT(c->dns_timeout_ms, 5000);
    MW_TEST_EQ_STR(c->dns_trust_anchor, "");
    MW_TEST_ASSERT(!c->dns_tcp);
    MW_TEST_EQ_INT(mw_cidr_set_count(c->internal_networks), 2);
    MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "127.0.0.1"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "::1"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(c->internal_networks, "192.0.2.1"));
    MW_TEST_EQ_INT(c->nsubmission_daemons, 2);
    MW_TEST_EQ_STR(c->submission_daemons[0], "ORIGINATING");
    MW_TEST_EQ_STR(c->submission_daemons[1], "MSA");
    MW_TEST_ASSERT(c->submission_daemons[2] == NULL);
    MW_TEST_ASSERT(c->spf_enabled);
    MW_TEST_ASSERT(c->spf_helo);
    MW_TEST_ASSERT(c->spf_received_header);
    MW_TEST_EQ_INT(c->spf_timeout_ms, 20000);
    MW_TEST_ASSERT(c->ar_remove_forged);
    MW_TEST_EQ_STR(c->policy, "default");
    MW_TEST_EQ_STR(c->policy_dir, "/etc/mailwarden/policies");
    mw_config_free(&c);
    MW_TEST_ASSERT(c == NULL);
    mw_config_free(&c);   /* NULL is fine */
    mw_config_errors_free(&errs);
}

static void test_every_key(void)
{
    static const char text[] =
        "socket = \"unix:/run/mailwarden/milter.sock\";\n"
        "pid_file = \"/run/mailwarden/mailwarden.pid\";\n"
        "user = \"mailwarden\";\n"
        "group = \"mail\";\n"
        "socket_mode = \"0600\";\n"
        "shutdown_timeout = 5;\n"
        "milter_timeout = 7210;\n"
        "authserv_id = \"mx.example.org\";\n"
        "hostname = \"mx1.example.org\";\n"
        "policy = \"strict\";\n"
        "policy_dir = \"/usr/local/etc/mailwarden/policies\";\n"
        "log = { target = \"syslog\"; format = \"json\"; level = \"debug\"; facility = \"local3\"; };\n"
        "dns = {\n"
        "  mode = \"forward\";\n"
        "  forwarders = [ \"127.0.0.1@5353\", \"::1\", \"192.0.2.53@53\" ];\n"
        "  timeout = 1500;\n"
        "  trust_anchor = \"/usr/share/dns/root.key\";\n"
        "  tcp = true;\n"
        "};\n"
        "trust = {\n"
        "  internal_networks = ( \"10.0.0.0/8\", \"2001:db8::/32\" );\n"
        "  submission_daemons = [ \"submission\" ];\n"
        "};\n"
        "spf = { enabled = false; helo = false; received_spf = false; timeout = 5000; };\n"
        "authres = { remove_forged = false; };\n";
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text(text, NULL, &errs, &path);

    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected: %s\n", errs.msg[i]);
    if (!MW_TEST_ASSERT(c != NULL))
        goto out;
    MW_TEST_EQ_STR(c->path, path);
    MW_TEST_EQ_STR(c->socket, "unix:/run/mailwarden/milter.sock");
    MW_TEST_EQ_STR(c->pid_file, "/run/mailwarden/mailwarden.pid");
    MW_TEST_EQ_STR(c->user, "mailwarden");
    MW_TEST_EQ_STR(c->group, "mail");
    MW_TEST_EQ_INT(c->socket_mode, 0600);
    MW_TEST_EQ_INT(c->shutdown_timeout, 5);
    MW_TEST_EQ_INT(c->milter_timeout, 7210);
    MW_TEST_EQ_STR(c->authserv_id, "mx.example.org");
    MW_TEST_EQ_STR(c->hostname, "mx1.example.org");
    MW_TEST_EQ_STR(c->policy, "strict");
    MW_TEST_EQ_STR(c->policy_dir, "/usr/local/etc/mailwarden/policies");
    MW_TEST_EQ_INT(c->log_target, MW_LOG_TO_SYSLOG);
    MW_TEST_EQ_INT(c->log_format, MW_LOG_FMT_JSON);
    MW_TEST_EQ_INT(c->log_level, MW_LOG_DEBUG);
    MW_TEST_EQ_STR(c->log_facility, "local3");
    MW_TEST_EQ_INT(c->dns_mode, MW_DNS_MODE_FORWARD);
    MW_TEST_ASSERT(!c->dns_resolv_conf);
    MW_TEST_EQ_INT(c->ndns_forwarders, 3);
    MW_TEST_EQ_STR(c->dns_forwarders[0], "127.0.0.1@5353");
    MW_TEST_EQ_STR(c->dns_forwarders[1], "::1");
    MW_TEST_EQ_STR(c->dns_forwarders[2], "192.0.2.53@53");
    MW_TEST_ASSERT(c->dns_forwarders[3] == NULL);
    MW_TEST_EQ_INT(c->dns_timeout_ms, 1500);
    MW_TEST_EQ_STR(c->dns_trust_anchor, "/usr/share/dns/root.key");
    MW_TEST_ASSERT(c->dns_tcp);
    MW_TEST_EQ_INT(mw_cidr_set_count(c->internal_networks), 2);
    MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "10.1.2.3"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "2001:db8::25"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(c->internal_networks, "127.0.0.1"));
    MW_TEST_EQ_INT(c->nsubmission_daemons, 1);
    MW_TEST_EQ_STR(c->submission_daemons[0], "submission");
    MW_TEST_ASSERT(!c->spf_enabled);
    MW_TEST_ASSERT(!c->spf_helo);
    MW_TEST_ASSERT(!c->spf_received_header);
    MW_TEST_EQ_INT(c->spf_timeout_ms, 5000);
    MW_TEST_ASSERT(!c->ar_remove_forged);
    mw_config_free(&c);
out:
    mw_config_errors_free(&errs);
}

/* Small conveniences: a list key takes one string; enum words ignore case;
 * "warning" is an alias of "warn"; an empty file gives the defaults. */
static void test_conveniences(void)
{
    mw_config_errors errs = {0};
    mw_config *c = load_text("trust: { internal_networks = \"192.0.2.0/24\"; };\n"
                             "log: { level = \"WARNING\"; target = \"Syslog\"; };\n",
                             NULL, &errs, NULL);

    if (MW_TEST_ASSERT(c != NULL)) {
        MW_TEST_EQ_INT(mw_cidr_set_count(c->internal_networks), 1);
        MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "192.0.2.77"));
        MW_TEST_EQ_INT(c->log_level, MW_LOG_WARN);
        MW_TEST_EQ_INT(c->log_target, MW_LOG_TO_SYSLOG);
    }
    mw_config_free(&c);
    c = load_text("# nothing but a comment\n", NULL, &errs, NULL);
    if (MW_TEST_ASSERT(c != NULL))
        MW_TEST_EQ_STR(c->socket, "inet:8894@127.0.0.1");
    mw_config_free(&c);
    /* An empty internal list is allowed (nothing is internal). */
    c = load_text("trust = { internal_networks = [ ]; };\n", NULL, &errs, NULL);
    if (MW_TEST_ASSERT(c != NULL))
        MW_TEST_EQ_INT(mw_cidr_set_count(c->internal_networks), 0);
    mw_config_free(&c);
    MW_TEST_EQ_INT(errs.n, 0);
    mw_config_errors_free(&errs);
}

static void test_unknown_keys(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text("socket = \"inet:8894@127.0.0.1\";\n"
                             "\n"
                             "bogus = 1;\n"
                             "spf = {\n"
                             "  enable = false;\n"
                             "};\n"
                             "frobnicate = { a = 1; };\n"
                             "timeout = 3;\n"
                             "log = \"syslog\";\n"
                             "dns = { forwarders = { x = 1; }; };\n",
                             NULL, &errs, &path);

    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 6);
    MW_TEST_ASSERT(has_error(&errs, path, 3, "unknown key \"bogus\""));
    MW_TEST_ASSERT(has_error(&errs, path, 5, "unknown key \"spf.enable\" (did you mean \"spf.enabled\"?)"));
    MW_TEST_ASSERT(has_error(&errs, path, 7, "unknown key \"frobnicate\""));
    MW_TEST_ASSERT(has_error(&errs, path, 8, "unknown key \"timeout\" (did you mean"));
    MW_TEST_ASSERT(has_error(&errs, path, 9, "log: expected a group"));
    MW_TEST_ASSERT(has_error(&errs, path, 10, "dns.forwarders: expected a list"));
    mw_config_errors_free(&errs);
    MW_TEST_EQ_INT(errs.n, 0);
    MW_TEST_ASSERT(errs.msg == NULL);
}

static void test_wrong_types_and_ranges(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text("socket_mode = 0660;\n"                 /* 1: must be a string */
                             "socket_mode = \"0999\";\n"             /* parse error: dup */
                             , NULL, &errs, &path);

    /* libconfig refuses duplicate settings itself. */
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 2, "duplicate setting name"));
    mw_config_errors_free(&errs);

    c = load_text("socket_mode = 0660;\n"
                  "shutdown_timeout = \"30x\";\n"
                  "milter_timeout = 0;\n"
                  "spf = { enabled = \"yes\"; timeout = 999999; helo = 1; };\n"
                  "dns = { timeout = 99; tcp = \"no\"; };\n"
                  "policy = 3;\n"
                  "log = { level = \"verbose\"; format = 1; facility = \"local9\"; };\n"
                  "user = \"mail warden\";\n"
                  "pid_file = \"run/x.pid\";\n"
                  "policy_dir = \"\";\n"
                  "authserv_id = \"mx;example\";\n"
                  "hostname = \"-bad-.example\";\n"
                  "trust = { submission_daemons = ( \"MSA\", 1, \"\" ); };\n",
                  NULL, &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 1, "socket_mode: expected an octal string"));
    MW_TEST_ASSERT(has_error(&errs, path, 2, "shutdown_timeout: \"30x\" is not a duration in seconds"));
    MW_TEST_ASSERT(has_error(&errs, path, 3, "milter_timeout: 0 is out of range (1 .. 86400)"));
    MW_TEST_ASSERT(has_error(&errs, path, 4, "spf.enabled: expected true or false, got a string"));
    MW_TEST_ASSERT(has_error(&errs, path, 4, "spf.timeout: 999999 is out of range"));
    MW_TEST_ASSERT(has_error(&errs, path, 4, "spf.helo: expected true or false, got an integer"));
    MW_TEST_ASSERT(has_error(&errs, path, 5, "dns.timeout: 99 is out of range (100 .. 60000)"));
    MW_TEST_ASSERT(has_error(&errs, path, 5, "dns.tcp: expected true or false"));
    MW_TEST_ASSERT(has_error(&errs, path, 6, "policy: expected a string, got an integer"));
    MW_TEST_ASSERT(has_error(&errs, path, 7, "log.level: unknown value \"verbose\" (expected one of \"debug\""));
    MW_TEST_ASSERT(has_error(&errs, path, 7, "log.format: expected one of \"text\", \"json\", got an integer"));
    MW_TEST_ASSERT(has_error(&errs, path, 7, "log.facility: \"local9\": unknown syslog facility"));
    MW_TEST_ASSERT(has_error(&errs, path, 8, "user: \"mail warden\": must not contain blanks"));
    MW_TEST_ASSERT(has_error(&errs, path, 9, "pid_file: \"run/x.pid\": must be an absolute path"));
    MW_TEST_ASSERT(has_error(&errs, path, 10, "policy_dir: \"\": must be an absolute path"));
    MW_TEST_ASSERT(has_error(&errs, path, 11, "authserv_id: \"mx;example\": must be a token"));
    MW_TEST_ASSERT(has_error(&errs, path, 12, "hostname: \"-bad-.example\": not a valid host name"));
    MW_TEST_ASSERT(has_error(&errs, path, 13, "trust.submission_daemons: element 2: expected a string"));
    MW_TEST_ASSERT(has_error(&errs, path, 13, "trust.submission_daemons: \"\": must not be empty"));
    MW_TEST_EQ_INT(errs.n, 19);
    mw_config_errors_free(&errs);

    c = load_text("socket_mode = \"0999\";\npolicy = \"\";\n", NULL, &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 1, "socket_mode: \"0999\" is not an octal mode"));
    MW_TEST_ASSERT(has_error(&errs, path, 2, "policy: \"\": must not be empty"));
    mw_config_errors_free(&errs);
}

static void test_bad_cidrs(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text("trust = {\n"
                             "  internal_networks = [\n"
                             "    \"10.0.0.0/8\",\n"
                             "    \"10.0.0.1/8\",\n"
                             "    \"300.1.2.0/24\",\n"
                             "    \"2001:db8::/129\",\n"
                             "    \"fe80::/10\"\n"
                             "  ];\n"
                             "};\n",
                             NULL, &errs, &path);

    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 3);
    MW_TEST_ASSERT(has_error(&errs, path, 4, "trust.internal_networks: bad network \"10.0.0.1/8\""));
    MW_TEST_ASSERT(has_error(&errs, path, 5, "trust.internal_networks: bad network \"300.1.2.0/24\""));
    MW_TEST_ASSERT(has_error(&errs, path, 6, "trust.internal_networks: bad network \"2001:db8::/129\""));
    mw_config_errors_free(&errs);
}

/* Host names and files of entries in every CIDR-list key: names resolve
 * at load (localhost from /etc/hosts), an unresolvable one is FILE:LINE. */
static void test_cidr_names(void)
{
    static const char *const keys[][2] = {{"trust", "internal_networks"}, {"dmarc", "allow_networks"},
                                          {"exim", "allow_peers"}};
    const char *hosts = write_tmp("# OpenDKIM InternalHosts form\n192.0.2.0/24\nlocalhost  # me\n");
    for (size_t i = 0; i < 3; i++) {
        mw_config_errors errs = {0};
        const char *path;
        char text[600];
        snprintf(text, sizeof text, "%s = {\n  %s = [ \"localhost\", \"file:%s\" ];\n};\n",
                 keys[i][0], keys[i][1], hosts);
        mw_config *c = load_text(text, NULL, &errs, &path);
        if (MW_TEST_ASSERT(c != NULL)) {
            mw_cidr_set *set = i == 0 ? c->internal_networks : i == 1 ? c->dmarc_allow_networks
                                                                       : c->exim_allow_peers;
            MW_TEST_ASSERT(mw_cidr_set_contains_str(set, "127.0.0.1"));
            MW_TEST_ASSERT(mw_cidr_set_contains_str(set, "192.0.2.77"));
            MW_TEST_ASSERT(!mw_cidr_set_contains_str(set, "198.51.100.1"));
        }
        mw_config_free(&c);
        snprintf(text, sizeof text, "%s = {\n  %s = [ \"localhost\",\n  \"no-such-host.invalid\" ];\n};\n",
                 keys[i][0], keys[i][1]);
        c = load_text(text, NULL, &errs, &path);
        MW_TEST_ASSERT(c == NULL);
        char want[200];
        snprintf(want, sizeof want, "%s.%s: bad network \"no-such-host.invalid\": host name", keys[i][0],
                 keys[i][1]);
        MW_TEST_ASSERT(has_error(&errs, path, 3, want));
        mw_config_errors_free(&errs);
    }
}

static void test_socket_specs(void)
{
    static const char *const good[] = {
        "inet:8894@127.0.0.1", "inet:1@localhost", "inet:65535@mx.example.org", "inet:8894",
        "inet6:8894@::1", "inet6:25@2001:db8::1", "inet6:8894@localhost",
        "unix:/run/mailwarden/milter.sock", "local:/var/spool/postfix/mw.sock",
    };
    static const char *const bad[] = {
        "", "8894", "/run/x.sock", "tcp:8894@127.0.0.1", "inet:0@127.0.0.1",
        "inet:65536@127.0.0.1", "inet:@127.0.0.1", "inet:88x4@127.0.0.1", "inet:8894@",
        "inet:8894@::1", "inet6:8894@127.0.0.1", "inet6:8894@[::1]", "inet:8894@bad host",
        "unix:relative/path", "unix:", "local:x",
        "inet:-1@127.0.0.1", "inet:123456@127.0.0.1",
    };
    char why[160];

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        why[0] = '\0';
        if (!MW_TEST_ASSERT(mw_config_socket_valid(good[i], why, sizeof why)))
            fprintf(stderr, "  %s refused: %s\n", good[i], why);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        bool ok = mw_config_socket_valid(bad[i], why, sizeof why);
        if (!MW_TEST_ASSERT(!ok && why[0] != '\0'))
            fprintf(stderr, "  %s accepted\n", bad[i]);
    }
    /* A unix path longer than sun_path. */
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'a', 150);
    longpath[156] = '\0';
    MW_TEST_ASSERT(!mw_config_socket_valid(longpath, why, sizeof why));
    MW_TEST_ASSERT(!mw_config_socket_valid(NULL, NULL, 0));

    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text("\nsocket = \"inet:99999@127.0.0.1\";\n", NULL, &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 1);
    MW_TEST_ASSERT(has_error(&errs, path, 2, "socket: \"inet:99999@127.0.0.1\": port must be"));
    mw_config_errors_free(&errs);
}

static void test_parse_errors(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text("socket = \"inet:8894@127.0.0.1\";\n"
                             "log = {\n"
                             "  level = ;\n"
                             "};\n",
                             NULL, &errs, &path);

    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 1);
    MW_TEST_ASSERT(has_error(&errs, path, 3, "syntax error"));
    mw_config_errors_free(&errs);

    c = mw_config_load("/nonexistent/mailwarden.conf", NULL, &errs);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 1);
    MW_TEST_ASSERT(has_substr(&errs, "/nonexistent/mailwarden.conf: cannot open: No such file"));
    mw_config_errors_free(&errs);
}

static void test_many_errors_collected(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c = load_text("socket = \"bogus\";\n"
                             "socket_mode = \"0660\";\n"
                             "shutdown_timeout = -1;\n"
                             "trust = { internal_networks = [ \"1.2.3.4/33\" ]; };\n"
                             "unknown_thing = true;\n"
                             "log = { facility = \"kern2\"; };\n"
                             "dns = { mode = \"magic\"; };\n",
                             NULL, &errs, &path);

    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 6);
    /* In file order, each with its own line. */
    if (errs.n == 6) {
        MW_TEST_ASSERT(has_error(&errs, path, 1, "socket:"));
        MW_TEST_ASSERT(strncmp(errs.msg[0], path, strlen(path)) == 0 && strstr(errs.msg[0], ":1: "));
        MW_TEST_ASSERT(strstr(errs.msg[1], ":3: shutdown_timeout: -1 is out of range") != NULL);
        MW_TEST_ASSERT(strstr(errs.msg[2], ":4: trust.internal_networks") != NULL);
        MW_TEST_ASSERT(strstr(errs.msg[3], ":5: unknown key \"unknown_thing\"") != NULL);
        MW_TEST_ASSERT(strstr(errs.msg[4], ":6: log.facility") != NULL);
        MW_TEST_ASSERT(strstr(errs.msg[5], ":7: dns.mode: unknown value \"magic\"") != NULL);
    }
    /* Errors are appended: a second failed load adds to the same list. */
    c = mw_config_load("/nonexistent", NULL, &errs);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 7);
    mw_config_errors_free(&errs);
}

static void test_dns_mode(void)
{
    mw_config_errors errs = {0};
    const char *path;
    mw_config *c;

    /* Forwarders alone imply mode forward. */
    c = load_text("dns = { forwarders = [ \"192.0.2.53\" ]; };\n", NULL, &errs, NULL);
    if (MW_TEST_ASSERT(c != NULL)) {
        MW_TEST_EQ_INT(c->dns_mode, MW_DNS_MODE_FORWARD);
        MW_TEST_ASSERT(!c->dns_resolv_conf);
        MW_TEST_EQ_INT(c->ndns_forwarders, 1);
    }
    mw_config_free(&c);

    c = load_text("dns = { mode = \"recursive\"; };\n", NULL, &errs, NULL);
    if (MW_TEST_ASSERT(c != NULL)) {
        MW_TEST_EQ_INT(c->dns_mode, MW_DNS_MODE_RECURSIVE);
        MW_TEST_ASSERT(!c->dns_resolv_conf);
    }
    mw_config_free(&c);
    MW_TEST_EQ_INT(errs.n, 0);

    c = load_text("dns = {\n  mode = \"forward\";\n};\n", NULL, &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 2, "dns.mode \"forward\" needs at least one dns.forwarders"));
    mw_config_errors_free(&errs);

    c = load_text("dns = {\n  mode = \"recursive\";\n  forwarders = [ \"::1@53\" ];\n};\n",
                  NULL, &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 3, "dns.forwarders are only used with dns.mode \"forward\""));
    mw_config_errors_free(&errs);

    /* Bad forwarder entries. */
    c = load_text("dns = {\n forwarders = [ \"ns.example.org\",\n \"127.0.0.1@0\",\n \"127.0.0.1@53\" ];\n};\n",
                  NULL, &errs, &path);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 2);
    MW_TEST_ASSERT(has_error(&errs, path, 2, "dns.forwarders: \"ns.example.org\": forwarder must be an IP address"));
    MW_TEST_ASSERT(has_error(&errs, path, 3, "dns.forwarders: \"127.0.0.1@0\": forwarder port"));
    mw_config_errors_free(&errs);

    /* --dns on the command line replaces the file's forwarders and mode. */
    const char *dns[] = {"127.0.0.1@5353"};
    mw_config_overrides ov = {.dns = dns, .ndns = 1};
    c = load_text("dns = { mode = \"recursive\"; };\n", &ov, &errs, NULL);
    if (MW_TEST_ASSERT(c != NULL)) {
        MW_TEST_EQ_INT(c->dns_mode, MW_DNS_MODE_FORWARD);
        MW_TEST_EQ_INT(c->ndns_forwarders, 1);
        MW_TEST_EQ_STR(c->dns_forwarders[0], "127.0.0.1@5353");
        MW_TEST_ASSERT(c->dns_forwarders[1] == NULL);
    }
    mw_config_free(&c);
    mw_config_errors_free(&errs);
}

static void test_overrides(void)
{
    const char *dns[] = {"192.0.2.1", "2001:db8::53@5353"};
    const char *internal[] = {"198.51.100.0/24"};
    mw_config_overrides ov = {
        .socket = "inet6:9999@::1",
        .dns = dns, .ndns = 2,
        .authserv_id = "auth.example.net",
        .internal = internal, .ninternal = 1,
        .policy = "/etc/mailwarden/custom.conf",
        .pid_file = "/run/mw.pid",
        .user = "nobody",
        .group = "nogroup",
        .log_stderr = 1,
    };
    mw_config_errors errs = {0};
    mw_config *c = load_text("socket = \"unix:/run/x.sock\";\n"
                             "authserv_id = \"file.example\";\n"
                             "policy = \"strict\";\n"
                             "log = { target = \"syslog\"; };\n"
                             "dns = { forwarders = [ \"127.0.0.1\" ]; };\n"
                             "trust = { internal_networks = [ \"10.0.0.0/8\" ]; };\n",
                             &ov, &errs, NULL);

    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected: %s\n", errs.msg[i]);
    if (MW_TEST_ASSERT(c != NULL)) {
        MW_TEST_EQ_STR(c->socket, "inet6:9999@::1");
        MW_TEST_EQ_STR(c->authserv_id, "auth.example.net");
        MW_TEST_EQ_STR(c->policy, "/etc/mailwarden/custom.conf");
        MW_TEST_EQ_STR(c->pid_file, "/run/mw.pid");
        MW_TEST_EQ_STR(c->user, "nobody");
        MW_TEST_EQ_STR(c->group, "nogroup");
        MW_TEST_EQ_INT(c->log_target, MW_LOG_TO_STDERR);
        MW_TEST_EQ_INT(c->dns_mode, MW_DNS_MODE_FORWARD);
        MW_TEST_EQ_INT(c->ndns_forwarders, 2);
        MW_TEST_EQ_STR(c->dns_forwarders[0], "192.0.2.1");
        MW_TEST_EQ_STR(c->dns_forwarders[1], "2001:db8::53@5353");
        /* --internal replaces the list: 10/8 and loopback are gone. */
        MW_TEST_EQ_INT(mw_cidr_set_count(c->internal_networks), 1);
        MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "198.51.100.9"));
        MW_TEST_ASSERT(!mw_cidr_set_contains_str(c->internal_networks, "10.0.0.1"));
        MW_TEST_ASSERT(!mw_cidr_set_contains_str(c->internal_networks, "127.0.0.1"));
    }
    mw_config_free(&c);

    /* Overrides apply to the embedded defaults too. */
    mw_config_overrides ov2 = {.socket = "unix:/tmp/mw.sock", .authserv_id = "x.example"};
    c = mw_config_load(NULL, &ov2, &errs);
    if (MW_TEST_ASSERT(c != NULL)) {
        MW_TEST_EQ_STR(c->socket, "unix:/tmp/mw.sock");
        MW_TEST_EQ_STR(c->authserv_id, "x.example");
        MW_TEST_ASSERT(c->hostname != NULL && c->hostname[0] != '\0');
    }
    mw_config_free(&c);
    MW_TEST_EQ_INT(errs.n, 0);

    /* Bad overrides are errors from the command line, all of them. */
    const char *bad_dns[] = {"resolver.example"};
    const char *bad_int[] = {"10.0.0.1/8", "192.0.2.0/24"};
    mw_config_overrides ov3 = {
        .socket = "inet:0@127.0.0.1", .dns = bad_dns, .ndns = 1,
        .internal = bad_int, .ninternal = 2, .authserv_id = "a b", .policy = "",
        .pid_file = "relative.pid",
    };
    c = mw_config_load(NULL, &ov3, &errs);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_EQ_INT(errs.n, 6);
    MW_TEST_ASSERT(has_substr(&errs, "command line: --socket \"inet:0@127.0.0.1\": port must be"));
    MW_TEST_ASSERT(has_substr(&errs, "command line: --dns \"resolver.example\":"));
    MW_TEST_ASSERT(has_substr(&errs, "command line: --internal \"10.0.0.1/8\":"));
    MW_TEST_ASSERT(has_substr(&errs, "command line: --authserv-id \"a b\":"));
    MW_TEST_ASSERT(has_substr(&errs, "command line: --policy \"\":"));
    MW_TEST_ASSERT(has_substr(&errs, "command line: --pid-file \"relative.pid\":"));
    mw_config_errors_free(&errs);
}

/* @include is resolved against the main file's directory; errors inside the
 * included file name that file. */
static void test_include(void)
{
    char dir[] = "/tmp/mw-test-include-XXXXXX";
    char main_path[128], inc_path[128];
    FILE *fp;
    mw_config_errors errs = {0};

    if (!MW_TEST_ASSERT(mkdtemp(dir) != NULL))
        return;
    snprintf(main_path, sizeof main_path, "%s/mailwarden.conf", dir);
    snprintf(inc_path, sizeof inc_path, "%s/dns.conf", dir);
    fp = fopen(inc_path, "w");
    fputs("dns = {\n  timeout = 1;\n};\n", fp);
    fclose(fp);
    fp = fopen(main_path, "w");
    fputs("policy = \"strict\";\n@include \"dns.conf\"\n", fp);
    fclose(fp);
    mw_config *c = mw_config_load(main_path, NULL, &errs);
    MW_TEST_ASSERT(c == NULL);
    MW_TEST_ASSERT(has_error(&errs, inc_path, 2, "dns.timeout: 1 is out of range"));
    mw_config_errors_free(&errs);
    unlink(inc_path);
    unlink(main_path);
    rmdir(dir);
}

static void test_key_table(void)
{
    size_t n = 0;

    for (; mw_config_key_name(n) != NULL; n++) {
        MW_TEST_ASSERT(mw_config_key_doc(n) != NULL && mw_config_key_doc(n)[0] != '\0');
        for (size_t j = 0; j < n; j++)
            MW_TEST_ASSERT(strcmp(mw_config_key_name(j), mw_config_key_name(n)) != 0);
    }
    MW_TEST_ASSERT(n >= 27);
    MW_TEST_ASSERT(mw_config_key_doc(n) == NULL);
    MW_TEST_ASSERT(mw_config_key_name(n + 100) == NULL);
}

/* Every key of the table is documented in the man page (as a ".B key" line)
 * and in the sample config (as a "# key:" comment), and the sample config
 * loads cleanly and sets exactly the defaults. */
static void test_docs_agree(void)
{
    const char *src = getenv("MW_SOURCE_DIR");
    char path[1024];
    char *man, *sample;

    if (src == NULL) {
        fprintf(stderr, "  MW_SOURCE_DIR not set; using ../.. guesses is unsafe, failing\n");
        MW_TEST_ASSERT(src != NULL);
        return;
    }
    snprintf(path, sizeof path, "%s/docs/mailwarden.conf.5", src);
    man = slurp(path);
    MW_TEST_ASSERT(man != NULL);
    snprintf(path, sizeof path, "%s/contrib/mailwarden.conf", src);
    sample = slurp(path);
    MW_TEST_ASSERT(sample != NULL);
    if (man == NULL || sample == NULL)
        goto out;

    for (size_t i = 0; mw_config_key_name(i) != NULL; i++) {
        const char *k = mw_config_key_name(i);
        char want[128];
        snprintf(want, sizeof want, "\n.B %s\n", k);
        if (!MW_TEST_ASSERT(strstr(man, want) != NULL))
            fprintf(stderr, "  key %s is not documented in mailwarden.conf.5\n", k);
        snprintf(want, sizeof want, "# %s:", k);
        if (!MW_TEST_ASSERT(strstr(sample, want) != NULL))
            fprintf(stderr, "  key %s is not in contrib/mailwarden.conf\n", k);
    }

    mw_config_errors errs = {0};
    mw_config *c = mw_config_load(path, NULL, &errs), *d = mw_config_load(NULL, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  %s\n", errs.msg[i]);
    MW_TEST_EQ_INT(errs.n, 0);
    if (c != NULL && d != NULL) {
        MW_TEST_EQ_STR(c->socket, d->socket);
        MW_TEST_EQ_STR(c->pid_file, d->pid_file);
        MW_TEST_EQ_STR(c->user, d->user);
        MW_TEST_EQ_STR(c->group, d->group);
        MW_TEST_EQ_INT(c->socket_mode, d->socket_mode);
        MW_TEST_EQ_INT(c->shutdown_timeout, d->shutdown_timeout);
        MW_TEST_EQ_INT(c->milter_timeout, d->milter_timeout);
        MW_TEST_EQ_STR(c->authserv_id, d->authserv_id);
        MW_TEST_EQ_STR(c->hostname, d->hostname);
        MW_TEST_EQ_STR(c->policy, d->policy);
        MW_TEST_EQ_STR(c->policy_dir, d->policy_dir);
        MW_TEST_EQ_INT(c->log_target, d->log_target);
        MW_TEST_EQ_INT(c->log_format, d->log_format);
        MW_TEST_EQ_INT(c->log_level, d->log_level);
        MW_TEST_EQ_STR(c->log_facility, d->log_facility);
        MW_TEST_EQ_INT(c->dns_mode, d->dns_mode);
        MW_TEST_EQ_INT(c->ndns_forwarders, d->ndns_forwarders);
        MW_TEST_EQ_INT(c->dns_resolv_conf, d->dns_resolv_conf);
        MW_TEST_EQ_INT(c->dns_timeout_ms, d->dns_timeout_ms);
        MW_TEST_EQ_STR(c->dns_trust_anchor, d->dns_trust_anchor);
        MW_TEST_EQ_INT(c->dns_tcp, d->dns_tcp);
        MW_TEST_EQ_INT(mw_cidr_set_count(c->internal_networks), mw_cidr_set_count(d->internal_networks));
        MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "127.0.0.1"));
        MW_TEST_ASSERT(mw_cidr_set_contains_str(c->internal_networks, "::1"));
        MW_TEST_EQ_INT(c->nsubmission_daemons, d->nsubmission_daemons);
        for (size_t i = 0; i < c->nsubmission_daemons && i < d->nsubmission_daemons; i++)
            MW_TEST_EQ_STR(c->submission_daemons[i], d->submission_daemons[i]);
        MW_TEST_EQ_INT(c->spf_enabled, d->spf_enabled);
        MW_TEST_EQ_INT(c->spf_helo, d->spf_helo);
        MW_TEST_EQ_INT(c->spf_received_header, d->spf_received_header);
        MW_TEST_EQ_INT(c->spf_timeout_ms, d->spf_timeout_ms);
        MW_TEST_EQ_INT(c->ar_remove_forged, d->ar_remove_forged);
    }
    mw_config_free(&c);
    mw_config_free(&d);
    mw_config_errors_free(&errs);
out:
    free(man);
    free(sample);
}

/* redis.allow_plaintext: a non-loopback Redis, Sentinel or Cluster address
 * is refused at FILE:LINE unless allowed; loopback forms pass. */
static void test_redis_plaintext(void)
{
    static const char *const refused[] = {
        "state = { backend = \"redis\"; };\nredis = {\n  host = \"10.0.0.5\";\n};\n",
        "state = { backend = \"redis\"; };\nredis = {\n  sentinels = [ \"127.0.0.1:26379\", \"192.0.2.7:26379\" ];\n};\n",
        "state = { backend = \"redis\"; };\nredis = {\n  cluster_nodes = [ \"[2001:db8::7]:7000\" ];\n};\n",
        "state = { backend = \"redis\"; };\nredis = {\n  host = \"redis.example.net\";\n};\n",
        "state = { backend = \"redis\"; };\nredis = {\n  cluster_nodes = [ \"128.0.0.1:7000\" ];\n};\n",
    };
    static const char *const keyname[] = {"redis.host", "redis.sentinels", "redis.cluster_nodes",
                                          "redis.host", "redis.cluster_nodes"};
    static const char *const accepted[] = {
        "state = { backend = \"redis\"; };\nredis = { host = \"127.0.0.1\"; };\n",
        "state = { backend = \"redis\"; };\nredis = { host = \"127.8.9.10\"; };\n",
        "state = { backend = \"redis\"; };\nredis = { host = \"::1\"; };\n",
        "state = { backend = \"redis\"; };\nredis = { host = \"localhost\"; };\n",
        "state = { backend = \"redis\"; };\nredis = { cluster_nodes = [ \"127.0.0.1:7000\", \"[::1]:7001\" ]; };\n",
        "state = { backend = \"redis\"; };\nredis = { host = \"10.0.0.5\"; allow_plaintext = true; };\n",
        "state = { backend = \"memory\"; };\nredis = { host = \"10.0.0.5\"; };\n",
    };

    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        mw_config_errors errs = {0};
        const char *path;
        char msg[160];
        mw_config *c = load_text(refused[i], NULL, &errs, &path);
        MW_TEST_ASSERT(c == NULL);
        snprintf(msg, sizeof msg, "%s \"", keyname[i]);
        MW_TEST_ASSERT(has_error(&errs, path, 3, msg));
        MW_TEST_ASSERT(has_substr(&errs, "redis.allow_plaintext = true"));
        mw_config_free(&c);
        mw_config_errors_free(&errs);
    }
    for (size_t i = 0; i < sizeof accepted / sizeof *accepted; i++) {
        mw_config_errors errs = {0};
        mw_config *c = load_text(accepted[i], NULL, &errs, NULL);
        if (!MW_TEST_ASSERT(c != NULL))
            fprintf(stderr, "  %s: %s\n", accepted[i], errs.n > 0 ? errs.msg[0] : "");
        mw_config_free(&c);
        mw_config_errors_free(&errs);
    }
    /* --redis on the command line: the same rule. */
    {
        mw_config_errors errs = {0};
        mw_config_overrides ov = {.redis = "192.0.2.7:6379"};
        mw_config *c = mw_config_load(NULL, &ov, &errs);
        MW_TEST_ASSERT(c == NULL);
        MW_TEST_ASSERT(has_substr(&errs, "--redis \"192.0.2.7:6379\": not a loopback address"));
        mw_config_free(&c);
        mw_config_errors_free(&errs);
    }
    /* Cluster: not with Sentinel, database 0 only. */
    {
        mw_config_errors errs = {0};
        const char *path;
        mw_config *c = load_text("redis = {\n  db = 2;\n  cluster_nodes = [ \"127.0.0.1:7000\" ];\n};\n",
                                 NULL, &errs, &path);
        MW_TEST_ASSERT(c == NULL);
        MW_TEST_ASSERT(has_error(&errs, path, 3, "a Redis Cluster has only database 0"));
        mw_config_free(&c);
        mw_config_errors_free(&errs);
    }
}

int main(void)
{
    MW_TEST_RUN(test_defaults);
    MW_TEST_RUN(test_every_key);
    MW_TEST_RUN(test_conveniences);
    MW_TEST_RUN(test_unknown_keys);
    MW_TEST_RUN(test_wrong_types_and_ranges);
    MW_TEST_RUN(test_bad_cidrs);
    MW_TEST_RUN(test_cidr_names);
    MW_TEST_RUN(test_socket_specs);
    MW_TEST_RUN(test_parse_errors);
    MW_TEST_RUN(test_many_errors_collected);
    MW_TEST_RUN(test_dns_mode);
    MW_TEST_RUN(test_overrides);
    MW_TEST_RUN(test_include);
    MW_TEST_RUN(test_key_table);
    MW_TEST_RUN(test_docs_agree);
    MW_TEST_RUN(test_redis_plaintext);
    remove_tmps();
    return MW_TEST_SUMMARY();
}
