/*
 * config.c - load and validate mailwarden.conf against one declarative table.
 *
 * Purpose
 *   Every configuration key is one row of keys[] below: dotted name, type,
 *   default, bounds or validator, target field in struct mw_config, and a
 *   one-line doc.  Defaults are applied from the table, then the parsed
 *   libconfig tree is walked against it, then command-line overrides are
 *   applied, then the few cross-key rules run (dns.mode vs dns.forwarders,
 *   host-name defaults).  Nothing else knows key names; the man page and the
 *   sample config are checked against this table by test_core_config.
 *
 * Diagnostics
 *   Every problem becomes one "FILE:LINE: message" string in the caller's
 *   mw_config_errors; loading never stops at the first one, so
 *   `mailwarden config-test` can list them all.  Override problems use the
 *   origin "command line".
 *
 * Design notes
 *   - Unknown keys are errors at every level: a typo must not silently fall
 *     back to a default (e.g. "spf { enable = false; }").
 *   - socket_mode is written as an octal string ("0660"): libconfig 1.5
 *     reads 0660 as the decimal integer 660.
 *   - A list key also takes a single string (a one-element list).
 *   - The loaded config is immutable; reload builds a new one.
 *
 * See also: config.h, docs/mailwarden.conf.5, contrib/mailwarden.conf.
 */
#include "config.h"
#include "config_dump.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "cidr_names.h"
#include "metrics.h"
#include "strutil.h"

/* ---- the table ------------------------------------------------------------ */

typedef enum key_type {
    KT_STRING,    /* char *                                       */
    KT_BOOL,      /* bool                                         */
    KT_UINT,      /* unsigned, within [min, max]                  */
    KT_MODE,      /* int, octal string "0660", within [min, max]  */
    KT_ENUM,      /* int-sized enum, one of words[]               */
    KT_DURATION,  /* unsigned seconds: "90s", "15m", "6h", "7d" or */
                  /* an integer of seconds, within [min, max]     */
    KT_DURATION_MS, /* unsigned milliseconds: "300ms", "2s", ... or */
                  /* an integer of milliseconds, within [min, max] */
    KT_STRLIST,   /* char ** (NULL-terminated) + size_t count     */
    KT_CIDRLIST,  /* mw_cidr_set *                                */
    KT_GROUPLIST  /* array of structs + size_t count: a list of   */
                  /* groups ( { a = "x"; b = [..]; }, ... ) whose */
                  /* members are described by fields[]            */
} key_type;

/* Validates one string value (or one list element); reason into why. */
typedef bool (*str_check_fn)(const char *s, char *why, size_t whylen);

struct enum_word {
    const char *word;
    int         value;
};

/* One member of a KT_GROUPLIST element (required unless optional). */
typedef enum { GF_STRING, GF_STRLIST, GF_UINT } gfield_type;
struct gfield {
    const char  *name;       /* NULL ends the array */
    gfield_type  type;
    size_t       off;        /* char *, char ** or unsigned within the element */
    size_t       off_n;      /* GF_STRLIST: size_t count within the element */
    str_check_fn check;      /* each string (or list element) */
    bool         optional;   /* may be left out (NULL / 0 then) */
    long long    min, max;   /* GF_UINT bounds */
};

struct key {
    const char             *name;       /* dotted: "dns.forwarders" */
    key_type                type;
    size_t                  off;        /* target field */
    size_t                  off_n;      /* KT_STRLIST: element count field */
    const char             *def_str;    /* KT_STRING / KT_ENUM / KT_MODE default */
    long long               def_int;    /* KT_BOOL / KT_UINT default */
    const char *const      *def_list;   /* KT_STRLIST / KT_CIDRLIST default */
    bool                    def_host;   /* KT_STRING default: this host's name */
    long long               min, max;   /* KT_UINT / KT_MODE bounds */
    const struct enum_word *words;      /* KT_ENUM, NULL-terminated */
    str_check_fn            check;      /* KT_STRING / KT_STRLIST validator */
    const struct gfield    *fields;     /* KT_GROUPLIST: the members of an element */
    size_t                  elem_size;  /* KT_GROUPLIST: sizeof one element */
    size_t                  off_where;  /* KT_GROUPLIST: char * "FILE:LINE" in the element */
    const char             *doc;
};

static bool check_socket(const char *s, char *why, size_t whylen);
static bool check_abs_or_empty(const char *s, char *why, size_t whylen);
static bool check_abs_path(const char *s, char *why, size_t whylen);
static bool check_nonempty(const char *s, char *why, size_t whylen);
static bool check_word(const char *s, char *why, size_t whylen);
static bool check_authserv_id(const char *s, char *why, size_t whylen);
static bool check_hostname(const char *s, char *why, size_t whylen);
static bool check_facility(const char *s, char *why, size_t whylen);
static bool check_forwarder(const char *s, char *why, size_t whylen);
static bool check_domain(const char *s, char *why, size_t whylen);
static bool check_socket_or_empty(const char *s, char *why, size_t whylen);
static bool check_selector(const char *s, char *why, size_t whylen);
static bool check_header_name(const char *s, char *why, size_t whylen);
static bool check_canon(const char *s, char *why, size_t whylen);
static bool check_key_table(const char *s, char *why, size_t whylen);
static bool check_signing_table(const char *s, char *why, size_t whylen);
static bool check_host_port(const char *s, char *why, size_t whylen);
static bool check_redis_host(const char *s, char *why, size_t whylen);
static bool check_printable(const char *s, char *why, size_t whylen);
static bool check_rl_name(const char *s, char *why, size_t whylen);
static bool check_rl_selector(const char *s, char *why, size_t whylen);
static bool check_rl_rate(const char *s, char *why, size_t whylen);
static bool check_rl_cost(const char *s, char *why, size_t whylen);
static bool check_rl_stage(const char *s, char *why, size_t whylen);
static bool check_rl_trust(const char *s, char *why, size_t whylen);
static bool check_rl_action(const char *s, char *why, size_t whylen);
static bool check_rl_reply(const char *s, char *why, size_t whylen);
static bool check_rep_bound(const char *s, char *why, size_t whylen);
static bool check_cidr(const char *s, char *why, size_t whylen);
static bool check_dmarc_forwarder(const char *s, char *why, size_t whylen);
static bool check_report_addr(const char *s, char *why, size_t whylen);
static bool check_report_text(const char *s, char *why, size_t whylen);
static bool check_report_receiver(const char *s, char *why, size_t whylen);
static bool check_metrics_listen(const char *s, char *why, size_t whylen);

/* The enum fields are written through int *; make sure that is their size. */
_Static_assert(sizeof(mw_log_target) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_dns_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_dkim_identity) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_state_backend) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_state_failure) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_report_format) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_failrep_mode) == sizeof(int), "enum size");

static const struct enum_word w_log_target[] = {
    {"stderr", MW_LOG_TO_STDERR}, {"syslog", MW_LOG_TO_SYSLOG}, {"journal", MW_LOG_TO_JOURNAL},
    {"auto", MW_LOG_TO_AUTO}, {NULL, 0}};
static const struct enum_word w_log_format[] = {
    {"text", MW_LOG_FMT_TEXT}, {"json", MW_LOG_FMT_JSON}, {NULL, 0}};
static const struct enum_word w_log_level[] = {
    {"debug", MW_LOG_DEBUG}, {"info", MW_LOG_INFO}, {"warn", MW_LOG_WARN},
    {"warning", MW_LOG_WARN}, {"error", MW_LOG_ERROR}, {NULL, 0}};
static const struct enum_word w_dns_mode[] = {
    {"resolv.conf", MW_DNS_MODE_RESOLV_CONF}, {"forward", MW_DNS_MODE_FORWARD},
    {"recursive", MW_DNS_MODE_RECURSIVE}, {NULL, 0}};

static const struct enum_word w_dmarc_mode[] = {
    {"rfc9989", MW_CFG_DMARC_RFC9989}, {"rfc7489", MW_CFG_DMARC_RFC7489}, {NULL, 0}};
static const struct enum_word w_quarantine[] = {
    {"hold", MW_QUARANTINE_HOLD}, {"header", MW_QUARANTINE_HEADER},
    {"deliver", MW_QUARANTINE_DELIVER}, {NULL, 0}};
static const struct enum_word w_history_err[] = {
    {"accept", MW_HISTORY_ERR_ACCEPT}, {"tempfail", MW_HISTORY_ERR_TEMPFAIL}, {NULL, 0}};
static const struct enum_word w_report_format[] = {
    {"rfc9990", MW_REPORT_FMT_RFC9990}, {"rfc7489", MW_REPORT_FMT_RFC7489}, {NULL, 0}};
static const struct enum_word w_failrep[] = {
    {"off", MW_FAILREP_OFF}, {"redacted", MW_FAILREP_REDACTED}, {"full", MW_FAILREP_FULL},
    {NULL, 0}};

static const struct enum_word w_dkim_identity[] = {
    {"header-from", MW_DKIM_ID_HEADER_FROM}, {"envelope", MW_DKIM_ID_ENVELOPE},
    {"auth", MW_DKIM_ID_AUTH}, {NULL, 0}};

static const struct enum_word w_state_backend[] = {
    {"memory", MW_STATE_MEMORY}, {"redis", MW_STATE_REDIS}, {NULL, 0}};
static const struct enum_word w_state_failure[] = {
    {"accept", MW_STATE_FAIL_ACCEPT}, {"tempfail", MW_STATE_FAIL_TEMPFAIL}, {NULL, 0}};

static const char *const def_none[] = {NULL};
static const char *const def_internal[] = {"127.0.0.0/8", "::1/128", NULL};
static const char *const def_loopback[] = {"127.0.0.0/8", "::1/128", NULL};
/* Postfix's submission service sets {daemon_name} to whatever master.cf
 * says (ORIGINATING in the stock file); Sendmail's submission port is MSA. */
static const char *const def_submission[] = {"ORIGINATING", "MSA", NULL};

/* What a signature covers by default: the originator and recipient fields,
 * the subject and threading fields and the MIME fields (RFC 6376 §5.4.1). */
static const char *const def_sign_headers[] = {
    "From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID", "In-Reply-To",
    "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Content-Disposition", "Content-Language", "Sender", "List-Id", "List-Unsubscribe",
    "List-Unsubscribe-Post", NULL};
/* Listed once more than they occur, so none can be added after signing. */
static const char *const def_oversign_headers[] = {"From", "To", "Subject", NULL};

#define F(field) offsetof(mw_config, field)
#define KF(field) offsetof(mw_config_dkim_key, field)
#define RF(field) offsetof(mw_config_dkim_rule, field)
#define LF(field) offsetof(mw_config_ratelimit_rule, field)

static const struct gfield dkim_key_fields[] = {
    {.name = "name", .type = GF_STRING, .off = KF(name), .check = check_nonempty},
    {.name = "domain", .type = GF_STRING, .off = KF(domain), .check = check_domain},
    {.name = "selector", .type = GF_STRING, .off = KF(selector), .check = check_selector},
    {.name = "file", .type = GF_STRING, .off = KF(file), .check = check_abs_path},
    {.name = NULL}};
static const struct gfield dkim_rule_fields[] = {
    {.name = "pattern", .type = GF_STRING, .off = RF(pattern), .check = check_nonempty},
    {.name = "keys", .type = GF_STRLIST, .off = RF(keys), .off_n = RF(nkeys),
     .check = check_nonempty},
    {.name = NULL}};
static const struct gfield ratelimit_rule_fields[] = {
    {.name = "name", .type = GF_STRING, .off = LF(name), .check = check_rl_name},
    {.name = "key", .type = GF_STRLIST, .off = LF(key), .off_n = LF(nkey),
     .check = check_rl_selector},
    {.name = "rate", .type = GF_STRING, .off = LF(rate), .check = check_rl_rate},
    {.name = "burst", .type = GF_UINT, .off = LF(burst), .optional = true, .min = 1,
     .max = 1000000000},
    {.name = "cost", .type = GF_STRING, .off = LF(cost), .check = check_rl_cost, .optional = true},
    {.name = "stage", .type = GF_STRING, .off = LF(stage), .check = check_rl_stage,
     .optional = true},
    {.name = "trust", .type = GF_STRLIST, .off = LF(trust), .off_n = LF(ntrust),
     .check = check_rl_trust, .optional = true},
    {.name = "action", .type = GF_STRING, .off = LF(action), .check = check_rl_action,
     .optional = true},
    {.name = "reply", .type = GF_STRING, .off = LF(reply), .check = check_rl_reply,
     .optional = true},
    {.name = "ipv4_mask", .type = GF_UINT, .off = LF(ipv4_mask), .optional = true, .min = 1,
     .max = 32},
    {.name = "ipv6_mask", .type = GF_UINT, .off = LF(ipv6_mask), .optional = true, .min = 1,
     .max = 128},
    {.name = "allow_networks", .type = GF_STRLIST, .off = LF(allow_networks),
     .off_n = LF(nallow_networks), .check = check_cidr, .optional = true},
    {.name = "allow_senders", .type = GF_STRLIST, .off = LF(allow_senders),
     .off_n = LF(nallow_senders), .check = check_nonempty, .optional = true},
    {.name = "skip_reputation_above", .type = GF_STRING, .off = LF(skip_reputation_above),
     .check = check_rep_bound, .optional = true},
    {.name = NULL}};

static const struct key keys[] = {
    /* daemon */
    {.name = "socket", .type = KT_STRING, .off = F(socket), .def_str = "inet:8894@127.0.0.1",
     .check = check_socket,
     .doc = "milter socket: inet:PORT@HOST, inet6:PORT@HOST, unix:/PATH or local:/PATH"},
    {.name = "pid_file", .type = KT_STRING, .off = F(pid_file), .def_str = "",
     .check = check_abs_or_empty, .doc = "absolute path of the PID file; \"\" writes none"},
    {.name = "user", .type = KT_STRING, .off = F(user), .def_str = "", .check = check_word,
     .doc = "user to run as after binding the socket; \"\" keeps the current one"},
    {.name = "group", .type = KT_STRING, .off = F(group), .def_str = "", .check = check_word,
     .doc = "group to run as; \"\" uses the user's primary group"},
    {.name = "socket_mode", .type = KT_MODE, .off = F(socket_mode), .def_str = "0660",
     .min = 0, .max = 0777, .doc = "permissions of a unix socket, an octal string"},
    {.name = "shutdown_timeout", .type = KT_DURATION, .off = F(shutdown_timeout), .def_int = 30,
     .min = 0, .max = 3600, .doc = "seconds to let messages in flight finish on SIGTERM"},
    {.name = "milter_timeout", .type = KT_DURATION, .off = F(milter_timeout), .def_int = 300,
     .min = 1, .max = 86400, .doc = "seconds to wait for the MTA before giving up on a connection"},
    {.name = "milter_command_timeout", .type = KT_DURATION, .off = F(milter_command_timeout), .def_int = 30,
     .min = 1, .max = 3600,
     .doc = "seconds a milter command may take to arrive complete once it started, and our reply to be taken"},
    {.name = "milter_max_connections", .type = KT_UINT, .off = F(milter_max_connections), .def_int = 256,
     .min = 1, .max = 100000,
     .doc = "milter connections open at most; more are accepted and closed at once (the MTA's default action)"},
    /* identity */
    {.name = "authserv_id", .type = KT_STRING, .off = F(authserv_id), .def_host = true,
     .check = check_authserv_id, .doc = "authserv-id of our Authentication-Results headers"},
    {.name = "hostname", .type = KT_STRING, .off = F(hostname), .def_host = true,
     .check = check_hostname, .doc = "this host's name, for Received-SPF and SPF's %{r}"},
    /* policy */
    {.name = "policy", .type = KT_STRING, .off = F(policy), .def_str = "default",
     .check = check_nonempty, .doc = "policy name (policy_dir, then built-in) or a file path"},
    {.name = "policy_shadow", .type = KT_STRING, .off = F(policy_shadow), .def_str = "",
     .doc = "a second policy evaluated on every message, only logged and counted where it would "
            "decide differently (see the effect of tightening before doing it); \"\" = none"},
    {.name = "policy_dir", .type = KT_STRING, .off = F(policy_dir),
     .def_str = "/etc/mailwarden/policies", .check = check_abs_path,
     .doc = "directory searched for NAME.conf before the built-in policies"},
    /* logging */
    {.name = "log.target", .type = KT_ENUM, .off = F(log_target), .def_str = "auto",
     .words = w_log_target,
     .doc = "where log lines go: auto (serve -f: stderr; under systemd: the journal; else syslog), "
            "stderr, syslog or journal"},
    {.name = "log.format", .type = KT_ENUM, .off = F(log_format), .def_str = "text",
     .words = w_log_format, .doc = "log line format: text or json"},
    {.name = "log.level", .type = KT_ENUM, .off = F(log_level), .def_str = "info",
     .words = w_log_level, .doc = "least severe level logged: debug, info, warn or error"},
    {.name = "log.facility", .type = KT_STRING, .off = F(log_facility), .def_str = "mail",
     .check = check_facility, .doc = "syslog facility: mail, daemon, local0 .. local7"},
    /* DNS */
    {.name = "dns.mode", .type = KT_ENUM, .off = F(dns_mode), .def_str = "resolv.conf",
     .words = w_dns_mode, .doc = "resolv.conf, forward (to dns.forwarders) or recursive"},
    {.name = "dns.forwarders", .type = KT_STRLIST, .off = F(dns_forwarders),
     .off_n = F(ndns_forwarders), .def_list = def_none, .check = check_forwarder,
     .doc = "upstream servers \"ADDR\" or \"ADDR@PORT\" for mode forward"},
    {.name = "dns.timeout", .type = KT_DURATION_MS, .off = F(dns_timeout_ms), .def_int = 5000,
     .min = 100, .max = 60000, .doc = "per-query deadline in milliseconds"},
    {.name = "dns.trust_anchor", .type = KT_STRING, .off = F(dns_trust_anchor), .def_str = "",
     .check = check_abs_or_empty, .doc = "DNSSEC root trust anchor file; \"\" disables validation"},
    {.name = "dns.tcp", .type = KT_BOOL, .off = F(dns_tcp), .def_int = 0,
     .doc = "query upstream servers over TCP only"},
    {.name = "dns.cache_size", .type = KT_UINT, .off = F(dns_cache_size), .def_int = 10000,
     .min = 0, .max = 10000000, .doc = "answers kept in the in-process DNS answer cache; 0 disables it"},
    {.name = "dns.cache_min_ttl", .type = KT_DURATION, .off = F(dns_cache_min_ttl), .def_int = 0,
     .min = 0, .max = 86400, .doc = "seconds: shorter answer TTLs are cached this long"},
    {.name = "dns.cache_max_ttl", .type = KT_DURATION, .off = F(dns_cache_max_ttl), .def_int = 3600,
     .min = 1, .max = 86400, .doc = "seconds: longer answer TTLs are cached only this long"},
    /* trust classes */
    {.name = "trust.internal_networks", .type = KT_CIDRLIST, .off = F(internal_networks),
     .def_list = def_internal, .doc = "client networks whose mail is outbound (internal)"},
    {.name = "trust.submission_daemons", .type = KT_STRLIST, .off = F(submission_daemons),
     .off_n = F(nsubmission_daemons), .def_list = def_submission, .check = check_nonempty,
     .doc = "MTA {daemon_name} values that mean the submission service"},
    /* SPF */
    {.name = "spf.enabled", .type = KT_BOOL, .off = F(spf_enabled), .def_int = 1,
     .doc = "evaluate SPF for inbound mail"},
    {.name = "spf.helo", .type = KT_BOOL, .off = F(spf_helo), .def_int = 1,
     .doc = "also evaluate the HELO identity"},
    {.name = "spf.received_spf", .type = KT_BOOL, .off = F(spf_received_header), .def_int = 1,
     .doc = "add a Received-SPF header"},
    {.name = "spf.timeout", .type = KT_DURATION_MS, .off = F(spf_timeout_ms), .def_int = 20000,
     .min = 1000, .max = 120000, .doc = "total SPF evaluation deadline in milliseconds"},
    /* DKIM */
    {.name = "dkim.verify", .type = KT_BOOL, .off = F(dkim_verify), .def_int = 1,
     .doc = "verify the DKIM signatures of inbound mail"},
    {.name = "dkim.min_key_bits", .type = KT_UINT, .off = F(dkim_min_key_bits), .def_int = 1024,
     .min = 512, .max = 16384, .doc = "smallest RSA key accepted; smaller keys give dkim=policy"},
    {.name = "dkim.max_signatures", .type = KT_UINT, .off = F(dkim_max_signatures), .def_int = 10,
     .min = 1, .max = 100, .doc = "signatures verified per message; more are not evaluated"},
    {.name = "dkim.sign", .type = KT_BOOL, .off = F(dkim_sign), .def_int = 1,
     .doc = "sign outbound mail when the signing table has a match"},
    {.name = "dkim.keys", .type = KT_GROUPLIST, .off = F(dkim_keys), .off_n = F(ndkim_keys),
     .fields = dkim_key_fields, .elem_size = sizeof(mw_config_dkim_key),
     .off_where = KF(where), .doc = "key table: ( { name, domain, selector, file }, ... )"},
    {.name = "dkim.signing", .type = KT_GROUPLIST, .off = F(dkim_rules), .off_n = F(ndkim_rules),
     .fields = dkim_rule_fields, .elem_size = sizeof(mw_config_dkim_rule),
     .off_where = RF(where), .doc = "signing table: ( { pattern, keys = [ ... ] }, ... ), first match wins"},
    {.name = "dkim.key_table", .type = KT_STRING, .off = F(dkim_key_table), .def_str = "",
     .check = check_key_table, .doc = "OpenDKIM-format KeyTable file; \"\" for none"},
    {.name = "dkim.signing_table", .type = KT_STRING, .off = F(dkim_signing_table), .def_str = "",
     .check = check_signing_table,
     .doc = "OpenDKIM-format SigningTable file (\"refile:PATH\" for patterns); \"\" for none"},
    {.name = "dkim.canonicalization", .type = KT_STRING, .off = F(dkim_canon),
     .def_str = "relaxed/relaxed", .check = check_canon,
     .doc = "header/body canonicalization of our signatures: relaxed or simple"},
    {.name = "dkim.sign_headers", .type = KT_STRLIST, .off = F(dkim_sign_headers),
     .off_n = F(ndkim_sign_headers), .def_list = def_sign_headers, .check = check_header_name,
     .doc = "header fields our signatures cover (must include From)"},
    {.name = "dkim.oversign_headers", .type = KT_STRLIST, .off = F(dkim_oversign_headers),
     .off_n = F(ndkim_oversign_headers), .def_list = def_oversign_headers,
     .check = check_header_name, .doc = "header fields signed once more than present"},
    {.name = "dkim.identity", .type = KT_ENUM, .off = F(dkim_identity), .def_str = "header-from",
     .words = w_dkim_identity, .doc = "address looked up in the signing table: header-from, envelope or auth"},
    {.name = "dkim.allow_unsafe_keys", .type = KT_BOOL, .off = F(dkim_allow_unsafe_keys),
     .def_int = 0, .doc = "accept private key files readable by group or others"},
    /* ARC (RFC 8617) */
    {.name = "arc.verify", .type = KT_BOOL, .off = F(arc_verify), .def_int = 1,
     .doc = "verify the ARC chain of inbound mail (arc= in Authentication-Results)"},
    {.name = "arc.seal", .type = KT_BOOL, .off = F(arc_seal), .def_int = 0,
     .doc = "add an ARC set to inbound mail we relay (list servers, forwarders); needs arc.key"},
    {.name = "arc.key", .type = KT_STRING, .off = F(arc_key), .def_str = "",
     .doc = "name of the sealing key in the DKIM key table (dkim.keys / dkim.key_table)"},
    /* Authentication-Results */
    {.name = "authres.remove_forged", .type = KT_BOOL, .off = F(ar_remove_forged), .def_int = 1,
     .doc = "remove incoming Authentication-Results headers that claim our authserv_id"},
    /* shared state: rate limits and reputation (store.h) */
    {.name = "state.backend", .type = KT_ENUM, .off = F(state_backend), .def_str = "memory",
     .words = w_state_backend, .doc = "where rate-limit and reputation state lives: memory or redis"},
    {.name = "state.max_keys", .type = KT_UINT, .off = F(state_max_keys), .def_int = 1000000,
     .min = 1000, .max = 100000000, .doc = "memory backend: most entries kept (the soonest to expire go first)"},
    {.name = "redis.host", .type = KT_STRING, .off = F(redis_host), .def_str = "127.0.0.1",
     .check = check_redis_host, .doc = "Redis server address or host name (without Sentinel)"},
    {.name = "redis.port", .type = KT_UINT, .off = F(redis_port), .def_int = 6379, .min = 1,
     .max = 65535, .doc = "Redis server port"},
    {.name = "redis.sentinels", .type = KT_STRLIST, .off = F(redis_sentinels),
     .off_n = F(nredis_sentinels), .def_list = def_none, .check = check_host_port,
     .doc = "Sentinels \"HOST:PORT\" that name the master; when set, redis.host/port are unused"},
    {.name = "redis.master_name", .type = KT_STRING, .off = F(redis_master_name),
     .def_str = "mymaster", .check = check_nonempty, .doc = "the master's name in Sentinel"},
    {.name = "redis.username", .type = KT_STRING, .off = F(redis_username), .def_str = "",
     .check = check_printable, .doc = "ACL user for AUTH; \"\" authenticates with the password only"},
    {.name = "redis.password", .type = KT_STRING, .off = F(redis_password), .def_str = "",
     .check = check_printable, .doc = "password for AUTH; \"\" sends no AUTH"},
    {.name = "redis.db", .type = KT_UINT, .off = F(redis_db), .def_int = 0, .min = 0,
     .max = 1000000, .doc = "database index (SELECT)"},
    {.name = "redis.prefix", .type = KT_STRING, .off = F(redis_prefix), .def_str = "mw:",
     .check = check_printable, .doc = "prefix of every key mailwarden writes"},
    {.name = "redis.connect_timeout", .type = KT_DURATION_MS, .off = F(redis_connect_timeout_ms),
     .def_int = 200, .min = 10, .max = 60000,
     .doc = "milliseconds to connect, authenticate and find the master"},
    {.name = "redis.command_timeout", .type = KT_DURATION_MS, .off = F(redis_command_timeout_ms),
     .def_int = 250, .min = 10, .max = 60000,
     .doc = "milliseconds one stage's commands may take (queueing for a connection included)"},
    {.name = "redis.pool_size", .type = KT_UINT, .off = F(redis_pool_size), .def_int = 16,
     .min = 1, .max = 1024, .doc = "connections to Redis at most, shared by all SMTP sessions"},
    {.name = "redis.failure_action", .type = KT_ENUM, .off = F(redis_failure_action),
     .def_str = "accept", .words = w_state_failure,
     .doc = "when the state store fails: accept (fail open) or tempfail (fail closed)"},
    {.name = "redis.cluster_nodes", .type = KT_STRLIST, .off = F(redis_cluster_nodes),
     .off_n = F(nredis_cluster_nodes), .def_list = def_none, .check = check_host_port,
     .doc = "Redis Cluster nodes \"HOST:PORT\" to learn the slot map from; when set, redis.host/port and redis.sentinels are unused"},
    {.name = "redis.allow_plaintext", .type = KT_BOOL, .off = F(redis_allow_plaintext),
     .def_int = 0,
     .doc = "allow a Redis, Sentinel or Cluster address that is not loopback (no TLS: use a local stunnel/spiped)"},
    /* rate limits */
    {.name = "ratelimit.rules", .type = KT_GROUPLIST, .off = F(ratelimit_rules),
     .off_n = F(nratelimit_rules), .fields = ratelimit_rule_fields,
     .elem_size = sizeof(mw_config_ratelimit_rule), .off_where = LF(where),
     .doc = "rate limits: ( { name, key = [ ... ], rate = \"N/PERIOD\", ... }, ... )"},
    /* reputation */
    {.name = "reputation.enabled", .type = KT_BOOL, .off = F(reputation_enabled), .def_int = 0,
     .doc = "record outcomes per client IP, network and authenticated domain, and score them"},
    {.name = "reputation.window", .type = KT_DURATION, .off = F(reputation_window_s),
     .def_int = 7 * 86400, .min = 3600, .max = 366 * 86400,
     .doc = "how long outcomes count (\"7d\")"},
    {.name = "reputation.bucket", .type = KT_DURATION, .off = F(reputation_bucket_s),
     .def_int = 6 * 3600, .min = 60, .max = 7 * 86400,
     .doc = "width of one time bucket (\"6h\"); at most 1000 per window"},
    {.name = "reputation.half_life", .type = KT_DURATION, .off = F(reputation_half_life_s),
     .def_int = 2 * 86400, .min = 60, .max = 366 * 86400,
     .doc = "age at which an outcome counts half (\"2d\")"},
    {.name = "reputation.min_samples", .type = KT_UINT, .off = F(reputation_min_samples),
     .def_int = 10, .min = 1, .max = 1000000,
     .doc = "outcomes needed in the window before a score is known"},
    {.name = "reputation.ipv4_prefix", .type = KT_UINT, .off = F(reputation_ipv4_prefix),
     .def_int = 24, .min = 8, .max = 32, .doc = "prefix length of an IPv4 client's network subject"},
    {.name = "reputation.ipv6_prefix", .type = KT_UINT, .off = F(reputation_ipv6_prefix),
     .def_int = 48, .min = 16, .max = 128, .doc = "prefix length of an IPv6 client's network subject"},
    /* DMARC */
    {.name = "dmarc.enabled", .type = KT_BOOL, .off = F(dmarc_enabled), .def_int = 1,
     .doc = "evaluate DMARC for inbound mail"},
    {.name = "dmarc.mode", .type = KT_ENUM, .off = F(dmarc_mode), .def_str = "rfc9989",
     .words = w_dmarc_mode, .doc = "rfc9989 (DNS tree walk) or rfc7489 (public suffix list, pct)"},
    {.name = "dmarc.psl_file", .type = KT_STRING, .off = F(dmarc_psl_file),
     .def_str = "/usr/share/publicsuffix/effective_tld_names.dat", .check = check_abs_path,
     .doc = "public suffix list for dmarc.mode rfc7489"},
    {.name = "dmarc.reject_text", .type = KT_STRING, .off = F(dmarc_reject_text), .def_str = "",
     .doc = "SMTP reply for a DMARC reject, e.g. \"550 5.7.1 ...\"; \"\" uses the policy's"},
    {.name = "dmarc.quarantine_action", .type = KT_ENUM, .off = F(dmarc_quarantine_action),
     .def_str = "hold", .words = w_quarantine,
     .doc = "what quarantine does: hold (MTA quarantine), header, or deliver"},
    {.name = "dmarc.never_reject", .type = KT_STRLIST, .off = F(dmarc_never_reject),
     .off_n = F(ndmarc_never_reject), .def_list = def_none, .check = check_nonempty,
     .doc = "domain globs (passing DKIM d= or SPF domain) whose mail DMARC never refuses"},
    {.name = "dmarc.always_enforce", .type = KT_STRLIST, .off = F(dmarc_always_enforce),
     .off_n = F(ndmarc_always_enforce), .def_list = def_none, .check = check_nonempty,
     .doc = "From domain globs whose p=none is enforced as reject"},
    {.name = "dmarc.allow_networks", .type = KT_CIDRLIST, .off = F(dmarc_allow_networks),
     .def_list = def_none, .doc = "client networks DMARC never refuses"},
    {.name = "dmarc.forwarders", .type = KT_STRLIST, .off = F(dmarc_forwarders),
     .off_n = F(ndmarc_forwarders), .def_list = def_none, .check = check_dmarc_forwarder,
     .doc = "known forwarders: client networks (CIDR) or domain globs verified by a passing DKIM d= or "
            "SPF domain; their DMARC failures are overridden as forwarder (the policy decides the action)"},
    {.name = "dmarc.trusted_arc_sealers", .type = KT_STRLIST, .off = F(dmarc_trusted_arc_sealers),
     .off_n = F(ndmarc_trusted_arc_sealers), .def_list = def_none, .check = check_nonempty,
     .doc = "domain globs whose ARC seal is trusted: a passing chain whose newest AAR shows an aligned "
            "pass overrides a DMARC failure (trusted_forwarder)"},
    {.name = "dmarc.trusted_authserv_ids", .type = KT_STRLIST, .off = F(dmarc_trusted_authserv_ids),
     .off_n = F(ndmarc_trusted_authserv_ids), .def_list = def_none, .check = check_authserv_id,
     .doc = "authserv-ids of upstream hosts whose Authentication-Results spf/dkim passes DMARC may use"},
    /* history */
    {.name = "history.dir", .type = KT_STRING, .off = F(history_dir), .def_str = "",
     .check = check_abs_or_empty, .doc = "directory for the DMARC aggregate history; \"\" = off"},
    {.name = "history.fsync_interval", .type = KT_DURATION_MS, .off = F(history_fsync_interval_ms),
     .def_int = 1000, .min = 0, .max = 60000,
     .doc = "fsync the history at least this often (ms); 0 = after every record"},
    {.name = "history.rotate", .type = KT_DURATION, .off = F(history_rotate_s), .def_int = 3600,
     .min = 60, .max = 86400, .doc = "seconds per history file"},
    {.name = "history.on_error", .type = KT_ENUM, .off = F(history_on_error), .def_str = "accept",
     .words = w_history_err, .doc = "when a record cannot be written: accept or tempfail"},
    /* DMARC aggregate reports (mailwarden report) */
    {.name = "report.org_name", .type = KT_STRING, .off = F(report_org_name), .def_str = "",
     .check = check_report_text, .doc = "reporting organization named in aggregate reports; \"\" = hostname"},
    {.name = "report.email", .type = KT_STRING, .off = F(report_email), .def_str = "",
     .check = check_report_addr, .doc = "contact address in aggregate reports; \"\" = postmaster@hostname"},
    {.name = "report.extra_contact", .type = KT_STRING, .off = F(report_extra_contact),
     .def_str = "", .check = check_report_text,
     .doc = "additional contact information in aggregate reports; \"\" = none"},
    {.name = "report.receiver", .type = KT_STRING, .off = F(report_receiver), .def_str = "",
     .check = check_report_receiver,
     .doc = "receiver name in report file names and the Submitter of the subject; \"\" = hostname"},
    {.name = "report.from", .type = KT_STRING, .off = F(report_from), .def_str = "",
     .check = check_report_addr, .doc = "From and envelope sender of report mails; \"\" = report.email"},
    {.name = "report.interval", .type = KT_DURATION, .off = F(report_interval_s),
     .def_int = 86400, .min = 3600, .max = 86400,
     .doc = "length of a report period (\"1d\"); must divide a day, periods are UTC-aligned"},
    {.name = "report.format", .type = KT_ENUM, .off = F(report_format), .def_str = "rfc9990",
     .words = w_report_format, .doc = "report XML: rfc9990 (dmarc-2.0 namespace) or rfc7489"},
    {.name = "report.relay_host", .type = KT_STRING, .off = F(report_relay_host),
     .def_str = "localhost", .check = check_redis_host,
     .doc = "SMTP relay that report mails are handed to"},
    {.name = "report.relay_port", .type = KT_UINT, .off = F(report_relay_port), .def_int = 25,
     .min = 1, .max = 65535, .doc = "port of the SMTP relay"},
    {.name = "report.starttls", .type = KT_BOOL, .off = F(report_starttls), .def_int = 1,
     .doc = "use STARTTLS when the relay offers it"},
    {.name = "report.tls_verify", .type = KT_BOOL, .off = F(report_tls_verify), .def_int = 1,
     .doc = "verify the relay's TLS certificate and host name; false = encrypt only"},
    {.name = "report.tls_ca_file", .type = KT_STRING, .off = F(report_tls_ca_file), .def_str = "",
     .check = check_abs_or_empty,
     .doc = "PEM file of CA certificates for the relay's certificate; \"\" = system CA store"},
    {.name = "report.timeout", .type = KT_DURATION, .off = F(report_timeout_s), .def_int = 60,
     .min = 1, .max = 3600, .doc = "deadline of one SMTP step (connect, command, reply)"},
    {.name = "report.max_size", .type = KT_UINT, .off = F(report_max_size),
     .def_int = 10 * 1024 * 1024, .min = 10000, .max = 1000000000,
     .doc = "largest report mail in bytes; a larger report is split by source range"},
    {.name = "report.max_destinations", .type = KT_UINT, .off = F(report_max_destinations),
     .def_int = 5, .min = 2, .max = 64,
     .doc = "rua addresses mailed per report; further ones are refused and counted"},
    {.name = "report.pacing", .type = KT_DURATION, .off = F(report_pacing_s), .def_int = 1,
     .min = 0, .max = 3600, .doc = "pause between two mails to the same destination domain"},
    {.name = "report.retries", .type = KT_UINT, .off = F(report_retries), .def_int = 3, .min = 0,
     .max = 100, .doc = "further attempts after a 4xx or a connection failure in one run"},
    {.name = "report.backoff", .type = KT_DURATION, .off = F(report_backoff_s), .def_int = 60,
     .min = 0, .max = 86400, .doc = "delay before the first retry, doubled for each further one"},
    {.name = "report.suppress_5xx_after", .type = KT_UINT, .off = F(report_suppress_5xx_after),
     .def_int = 3, .min = 1, .max = 1000,
     .doc = "consecutive 5xx answers after which a destination address is suppressed"},
    {.name = "report.suppress_5xx_for", .type = KT_DURATION, .off = F(report_suppress_5xx_for_s),
     .def_int = 7 * 86400, .min = 0, .max = 366 * 86400,
     .doc = "how long a destination that keeps answering 5xx gets no reports (\"7d\")"},
    {.name = "report.state_dir", .type = KT_STRING, .off = F(report_state_dir),
     .def_str = "/var/lib/mailwarden/reports", .check = check_abs_path,
     .doc = "directory of the report state journal (what was sent to whom)"},
    {.name = "report.history_dirs", .type = KT_STRLIST, .off = F(report_history_dirs),
     .off_n = F(nreport_history_dirs), .def_list = def_none, .check = check_abs_path,
     .doc = "history directories to report from (one per host); empty: history.dir"},
    {.name = "report.failure", .type = KT_ENUM, .off = F(report_failure), .def_str = "off",
     .words = w_failrep,
     .doc = "RFC 9991 failure reports to ruf: off, redacted (address local parts hashed) or full"},
    {.name = "report.failure_rate", .type = KT_UINT, .off = F(report_failure_rate), .def_int = 10,
     .min = 0, .max = 100000,
     .doc = "failure reports queued per ruf address per hour; more are counted and logged, not queued"},
    {.name = "report.failure_dir", .type = KT_STRING, .off = F(report_failure_dir),
     .def_str = "/var/lib/mailwarden/failure", .check = check_abs_path,
     .doc = "spool of failure reports: the daemon queues them, `mailwarden report --failure` sends them"},
    /* Exim front end */
    {.name = "exim.listen", .type = KT_STRING, .off = F(exim_listen), .def_str = "",
     .check = check_socket_or_empty,
     .doc = "Exim end-of-DATA scanner (rspamd protocol) socket: inet:PORT@HOST or unix:/PATH; \"\" = off"},
    {.name = "exim.rcpt_listen", .type = KT_STRING, .off = F(exim_rcpt_listen), .def_str = "",
     .check = check_socket_or_empty,
     .doc = "Exim ${readsocket} RCPT-time policy socket: inet:PORT@HOST or unix:/PATH; \"\" = off"},
    {.name = "exim.allow_peers", .type = KT_CIDRLIST, .off = F(exim_allow_peers), .def_list = def_loopback,
     .doc = "TCP peers the Exim sockets serve; others are closed at accept (unix sockets: file permissions)"},
    {.name = "exim.max_connections", .type = KT_UINT, .off = F(exim_max_connections), .def_int = 64,
     .min = 1, .max = 10000, .doc = "scan requests served at once; more wait up to 1 s for a slot, then are closed"},
    {.name = "exim.rcpt_max_connections", .type = KT_UINT, .off = F(exim_rcpt_max_connections),
     .def_int = 64, .min = 1, .max = 10000,
     .doc = "RCPT requests served at once; more wait up to 1 s for a slot, then are closed"},
    {.name = "exim.request_timeout", .type = KT_DURATION, .off = F(exim_request_timeout), .def_int = 60,
     .min = 1, .max = 3600, .doc = "seconds a scan request (envelope and message) may take to arrive whole"},
    {.name = "exim.rcpt_timeout", .type = KT_DURATION, .off = F(exim_rcpt_timeout), .def_int = 10,
     .min = 1, .max = 3600, .doc = "seconds a RCPT request line may take to arrive whole"},
    /* Prometheus endpoint */
    {.name = "metrics.listen", .type = KT_STRING, .off = F(metrics_listen), .def_str = "",
     .check = check_metrics_listen,
     .doc = "Prometheus endpoint (GET /metrics): \"ADDR:PORT\" or \"[ADDR6]:PORT\"; \"\" = off"},
    {.name = "metrics.max_connections", .type = KT_UINT, .off = F(metrics_max_connections),
     .def_int = 8, .min = 1, .max = 1024, .doc = "concurrent connections to the metrics endpoint at most"},
    {.name = "metrics.timeout", .type = KT_DURATION, .off = F(metrics_timeout_s), .def_int = 10, .min = 1,
     .max = 300, .doc = "seconds before an idle metrics connection is closed"},
};

#define NKEYS (sizeof keys / sizeof keys[0])

const char *mw_config_key_name(size_t i) { return i < NKEYS ? keys[i].name : NULL; }

const char *mw_config_origin(const mw_config *cfg, const char *key)
{
    if (cfg == NULL || cfg->origin == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, key) == 0)
            return cfg->origin[i];
    return NULL;
}
const char *mw_config_key_doc(size_t i) { return i < NKEYS ? keys[i].doc : NULL; }

/* Typed access to a key's target field (and a list's count field). */
#define FIELD(cfg, k, T) ((T *)(void *)((char *)(cfg) + (k)->off))
#define COUNT(cfg, k)    ((size_t *)(void *)((char *)(cfg) + (k)->off_n))

/* The table and a config's values for config_dump.c (config_dump.h). */
bool mw_config_key_info_get(const mw_config *cfg, size_t i, mw_config_key_info *out)
{
    static const mw_config_kind kinds[] = {
        [KT_STRING] = MW_CK_STRING, [KT_BOOL] = MW_CK_BOOL, [KT_UINT] = MW_CK_UINT,
        [KT_MODE] = MW_CK_MODE, [KT_ENUM] = MW_CK_ENUM, [KT_DURATION] = MW_CK_DURATION,
        [KT_DURATION_MS] = MW_CK_DURATION_MS, [KT_STRLIST] = MW_CK_STRLIST,
        [KT_CIDRLIST] = MW_CK_CIDRLIST, [KT_GROUPLIST] = MW_CK_GROUPLIST};
    static const mw_config_member_kind mkinds[] = {
        [GF_STRING] = MW_CM_STRING, [GF_STRLIST] = MW_CM_STRLIST, [GF_UINT] = MW_CM_UINT};
    const struct key *k;

    if (i >= NKEYS)
        return false;
    k = &keys[i];
    memset(out, 0, sizeof *out);
    out->name = k->name;
    out->doc = k->doc;
    out->kind = kinds[k->type];
    out->min = k->min;
    out->max = k->max;
    out->def_host = k->def_host;
    out->elem_size = k->elem_size;
    for (const struct gfield *f = k->fields; f != NULL && f->name != NULL; f++) {
        if (out->nmembers == MW_CONFIG_MAX_MEMBERS)
            mw_panic("config: %s has more than %d members", k->name, MW_CONFIG_MAX_MEMBERS);
        out->members[out->nmembers++] = (mw_config_member){
            .name = f->name, .kind = mkinds[f->type], .off = f->off, .off_n = f->off_n};
    }
    if (cfg == NULL)
        return true;
    out->field = (const char *)cfg + k->off;
    if (k->type == KT_STRLIST || k->type == KT_GROUPLIST)
        out->count = *COUNT(cfg, k);
    if (k->type == KT_ENUM)
        for (const struct enum_word *w = k->words; w->word != NULL && out->enum_word == NULL; w++)
            if (w->value == *FIELD(cfg, k, const int))
                out->enum_word = w->word;
    out->origin = cfg->origin != NULL ? cfg->origin[i] : NULL;
    return true;
}

/* ---- errors ----------------------------------------------------------------- */

void mw_config_errors_addf(mw_config_errors *e, const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    /* capacity doubles (full exactly when n is a power of two): a file of
     * many bad lines must not cost a copy of the whole list per line */
    if ((e->n & (e->n - 1)) == 0)
        e->msg = mw_reallocarray(e->msg, e->n ? 2 * e->n : 1, sizeof *e->msg);
    e->msg[e->n++] = mw_buf_steal(&b);
}

void mw_config_errors_free(mw_config_errors *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++)
        free(e->msg[i]);
    MW_FREE(&e->msg);
    e->n = 0;
}

/* ---- validators --------------------------------------------------------------- */

static bool fail(char *why, size_t whylen, const char *msg)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "%s", msg);
    return false;
}

/* Decimal port 1..65535, all of s[0..len). */
static bool port_valid(const char *s, size_t len)
{
    unsigned long v = 0;

    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

bool mw_config_socket_valid(const char *spec, char *why, size_t whylen)
{
    const char *colon, *rest, *at;
    size_t plen;

    if (spec == NULL || *spec == '\0')
        return fail(why, whylen, "empty socket spec");
    colon = strchr(spec, ':');
    if (colon == NULL)
        return fail(why, whylen, "socket spec needs a type: inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH");
    rest = colon + 1;
    plen = (size_t)(colon - spec);
    if ((plen == 4 && strncmp(spec, "unix", 4) == 0) ||
        (plen == 5 && strncmp(spec, "local", 5) == 0)) {
        if (rest[0] != '/')
            return fail(why, whylen, "unix socket path must be absolute");
        if (strlen(rest) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
            return fail(why, whylen, "unix socket path is too long");
        return true;
    }
    if ((plen == 4 && strncmp(spec, "inet", 4) == 0) ||
        (plen == 5 && strncmp(spec, "inet6", 5) == 0)) {
        bool v6 = plen == 5;
        at = strchr(rest, '@');
        if (!port_valid(rest, at != NULL ? (size_t)(at - rest) : strlen(rest)))
            return fail(why, whylen, "port must be a number from 1 to 65535 (inet:PORT@HOST)");
        if (at == NULL)
            return true;   /* no host: loopback (frontends/listen.h) */
        at++;
        if (*at == '\0')
            return fail(why, whylen, "empty host after '@'");
        if (at[0] == '[')
            return fail(why, whylen, "write the IPv6 address without brackets (inet6:PORT@::1)");
        mw_addr a;
        if (mw_addr_parse(at, &a)) {
            if (v6 && a.family != AF_INET6)
                return fail(why, whylen, "inet6 socket needs an IPv6 address or host name");
            if (!v6 && a.family != AF_INET)
                return fail(why, whylen, "inet socket needs an IPv4 address or host name (use inet6: for IPv6)");
            return true;
        }
        if (!mw_domain_valid(at))
            return fail(why, whylen, "host is neither an address nor a valid host name");
        return true;
    }
    return fail(why, whylen, "unknown socket type (expected inet:, inet6:, unix: or local:)");
}

static bool check_socket(const char *s, char *why, size_t whylen)
{
    return mw_config_socket_valid(s, why, whylen);
}

static bool check_abs_path(const char *s, char *why, size_t whylen)
{
    if (s[0] != '/')
        return fail(why, whylen, "must be an absolute path");
    return true;
}

static bool check_abs_or_empty(const char *s, char *why, size_t whylen)
{
    return s[0] == '\0' || check_abs_path(s, why, whylen);
}

static bool check_nonempty(const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0')
        return fail(why, whylen, "must not be empty");
    return true;
}

/* User and group names: "" or printable without blanks. */
static bool check_word(const char *s, char *why, size_t whylen)
{
    for (const char *p = s; *p != '\0'; p++)
        if (!isgraph((unsigned char)*p))
            return fail(why, whylen, "must not contain blanks or control characters");
    return true;
}

/* RFC 8601 authserv-id as we emit it: an RFC 2045 token (no quoting). */
static bool check_authserv_id(const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0')
        return fail(why, whylen, "must not be empty");
    for (const char *p = s; *p != '\0'; p++)
        if (!isgraph((unsigned char)*p) || strchr("()<>@,;:\\\"/[]?=", *p) != NULL)
            return fail(why, whylen, "must be a token (letters, digits, '.', '-', '_'; no blanks or ;()\"@)");
    return true;
}

static bool check_hostname(const char *s, char *why, size_t whylen)
{
    if (!mw_domain_valid(s))
        return fail(why, whylen, "not a valid host name");
    return true;
}

static bool check_facility(const char *s, char *why, size_t whylen)
{
    if (!mw_log_facility_valid(s))
        return fail(why, whylen, "unknown syslog facility (mail, daemon, local0 .. local7)");
    return true;
}

/* "ADDR" or "ADDR@PORT" (libunbound's forwarder syntax). */
static bool check_forwarder(const char *s, char *why, size_t whylen)
{
    const char *at = strrchr(s, '@');
    char *addr = at != NULL ? mw_strndup(s, (size_t)(at - s)) : mw_strdup(s);
    mw_addr a;
    bool ok = mw_addr_parse(addr, &a);

    free(addr);
    if (!ok)
        return fail(why, whylen, "forwarder must be an IP address, optionally @PORT (\"192.0.2.53@53\")");
    if (at != NULL && !port_valid(at + 1, strlen(at + 1)))
        return fail(why, whylen, "forwarder port must be a number from 1 to 65535");
    return true;
}

static bool check_domain(const char *s, char *why, size_t whylen)
{
    if (!mw_domain_valid(s))
        return fail(why, whylen, "not a valid domain name");
    return true;
}

/* A DKIM selector: dot-separated labels of letters, digits, '-' and '_'. */
static bool check_selector(const char *s, char *why, size_t whylen)
{
    size_t label = 0, total = 0;

    for (const char *p = s;; p++, total++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0)
                return fail(why, whylen, "empty label in selector");
            if (label > 63)
                return fail(why, whylen, "selector label longer than 63 characters");
            if (*p == '\0')
                break;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return fail(why, whylen, "selector may contain only letters, digits, '-', '_' and '.'");
        label++;
    }
    if (total > 200)
        return fail(why, whylen, "selector is too long");
    return true;
}

/* RFC 5322 field name: printable ASCII except ':'. */
static bool check_header_name(const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0')
        return fail(why, whylen, "empty header name");
    for (const char *p = s; *p != '\0'; p++)
        if (*p < 33 || *p > 126 || *p == ':')
            return fail(why, whylen, "not a header field name (printable ASCII, no ':' or blanks)");
    return true;
}

/* "relaxed/relaxed", "simple/relaxed", ...; one word means header/simple. */
static bool check_canon(const char *s, char *why, size_t whylen)
{
    static const char *const ok[] = {"relaxed/relaxed", "relaxed/simple", "simple/relaxed",
                                     "simple/simple", "relaxed", "simple", NULL};

    for (const char *const *p = ok; *p != NULL; p++)
        if (strcasecmp(*p, s) == 0)
            return true;
    return fail(why, whylen, "expected HEADER/BODY canonicalization, each relaxed or simple "
                             "(\"relaxed/relaxed\")");
}

/* "" or [PREFIX]ABSPATH, PREFIX one of prefixes (NULL-terminated). */
static bool check_table_file(const char *s, const char *const *prefixes, char *why, size_t whylen)
{
    if (s[0] == '\0')
        return true;
    for (const char *const *p = prefixes; *p != NULL; p++)
        if (strncmp(s, *p, strlen(*p)) == 0) {
            s += strlen(*p);
            break;
        }
    if (s[0] != '/')
        return fail(why, whylen, "must be an absolute path (OpenDKIM-style \"file:\" and "
                                 "\"refile:\" prefixes allowed; no databases)");
    return true;
}

static bool check_key_table(const char *s, char *why, size_t whylen)
{
    static const char *const pre[] = {"file:", NULL};
    return check_table_file(s, pre, why, whylen);
}

static bool check_signing_table(const char *s, char *why, size_t whylen)
{
    static const char *const pre[] = {"file:", "refile:", NULL};
    return check_table_file(s, pre, why, whylen);
}

/* "HOST:PORT"; an IPv6 address in brackets ("[::1]:26379"). */
static bool check_host_port(const char *s, char *why, size_t whylen)
{
    const char *colon = strrchr(s, ':');
    char *host;
    bool ok;

    if (colon == NULL || !port_valid(colon + 1, strlen(colon + 1)))
        return fail(why, whylen, "expected HOST:PORT (\"192.0.2.7:26379\", \"[2001:db8::7]:26379\")");
    if (s[0] == '[') {
        if (colon < s + 2 || colon[-1] != ']')
            return fail(why, whylen, "an IPv6 address needs brackets: \"[2001:db8::7]:26379\"");
        host = mw_strndup(s + 1, (size_t)(colon - s - 2));
    } else {
        host = mw_strndup(s, (size_t)(colon - s));
    }
    ok = check_redis_host(host, why, whylen);
    free(host);
    return ok;
}

static bool check_redis_host(const char *s, char *why, size_t whylen)
{
    mw_addr a;

    if (mw_addr_parse(s, &a) || mw_domain_valid(s))
        return true;
    return fail(why, whylen, "not an IP address or host name");
}

/* metrics.listen: "" or an address literal and a port (metrics.h). */
static bool check_metrics_listen(const char *s, char *why, size_t whylen)
{
    return *s == '\0' || mw_metrics_parse_listen(s, NULL, NULL, why, whylen);
}

/* Printable ASCII, no blanks: passwords and key prefixes. */
static bool check_printable(const char *s, char *why, size_t whylen)
{
    for (const char *p = s; *p != '\0'; p++)
        if (!isgraph((unsigned char)*p))
            return fail(why, whylen, "must be printable ASCII without blanks");
    return true;
}

/* Rule names appear in keys ("rl:{...}:NAME"), replies and logs. */
static bool check_rl_name(const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0' || strlen(s) > 64)
        return fail(why, whylen, "must be 1 to 64 characters");
    for (const char *p = s; *p != '\0'; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return fail(why, whylen, "may contain only letters, digits, '-', '_' and '.'");
    return true;
}

static bool word_in(const char *s, const char *const *words)
{
    for (; *words != NULL; words++)
        if (strcmp(s, *words) == 0)
            return true;
    return false;
}

static bool check_rl_selector(const char *s, char *why, size_t whylen)
{
    static const char *const w[] = {"ip", "sasl_user", "sender", "sender_domain", "recipient", NULL};
    return word_in(s, w) ? true
        : fail(why, whylen, "expected ip, sasl_user, sender, sender_domain or recipient");
}

static bool check_rl_rate(const char *s, char *why, size_t whylen)
{
    unsigned long long n, p;
    return mw_config_parse_rate(s, &n, &p, why, whylen);
}

static bool check_rl_cost(const char *s, char *why, size_t whylen)
{
    static const char *const w[] = {"message", "recipient", NULL};
    return word_in(s, w) ? true : fail(why, whylen, "expected message or recipient");
}

static bool check_rl_stage(const char *s, char *why, size_t whylen)
{
    static const char *const w[] = {"connect", "mail", "rcpt", "eom", NULL};
    return word_in(s, w) ? true : fail(why, whylen, "expected connect, mail, rcpt or eom");
}

static bool check_rl_trust(const char *s, char *why, size_t whylen)
{
    static const char *const w[] = {"inbound", "authenticated", "internal", "submission",
                                    "outbound", "any", NULL};
    return word_in(s, w) ? true
        : fail(why, whylen, "expected inbound, authenticated, internal, submission, outbound or any");
}

static bool check_rl_action(const char *s, char *why, size_t whylen)
{
    static const char *const w[] = {"tempfail", "reject", NULL};
    return word_in(s, w) ? true : fail(why, whylen, "expected tempfail or reject");
}

/* "4XX[ 4.X.X] text" or "5XX[ 5.X.X] text" (class checked against the
 * action later); placeholders %{rule} %{limit} %{retry_after}, "%%". */
static bool check_rl_reply(const char *s, char *why, size_t whylen)
{
    static const char *const ph[] = {"%{rule}", "%{limit}", "%{retry_after}", NULL};

    if (!(s[0] == '4' || s[0] == '5') || !isdigit((unsigned char)s[1]) ||
        !isdigit((unsigned char)s[2]) || (s[3] != ' ' && s[3] != '\0'))
        return fail(why, whylen, "must start with a 4xx or 5xx reply code (\"451 4.7.1 ...\")");
    if (s[3] == ' ' && isdigit((unsigned char)s[4]) && s[5] == '.' && s[4] != s[0])
        return fail(why, whylen, "the enhanced status code must have the reply code's class");
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < 32 || *p > 126)
            return fail(why, whylen, "must be printable ASCII");
        if (*p != '%')
            continue;
        if (p[1] == '%') {
            p++;
            continue;
        }
        bool ok = false;
        for (const char *const *w = ph; *w != NULL && !ok; w++)
            if (strncmp(p, *w, strlen(*w)) == 0) {
                ok = true;
                p += strlen(*w) - 1;
            }
        if (!ok)
            return fail(why, whylen, "unknown placeholder (known: %{rule}, %{limit}, "
                                     "%{retry_after}; write a literal % as %%)");
    }
    return true;
}

/* A dmarc.forwarders entry: a network (an address or CIDR) or a domain glob. */
static bool check_dmarc_forwarder(const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0')
        return fail(why, whylen, "empty forwarder");
    if (strchr(s, ':') != NULL || strchr(s, '/') != NULL || isdigit((unsigned char)s[strlen(s) - 1]))
        return check_cidr(s, why, whylen);
    const char *d = s[0] == '*' && s[1] == '.' ? s + 2 : s;
    if (!mw_domain_valid(d) || strchr(d, '*') != NULL) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "\"%s\" is neither a network (CIDR) nor a domain (or *.domain)", s);
        return false;
    }
    return true;
}

static bool check_cidr(const char *s, char *why, size_t whylen)
{
    mw_cidr_set *set = mw_cidr_set_new();
    bool ok = mw_cidr_set_add(set, s, why, whylen);
    mw_cidr_set_free(&set);
    return ok;
}

/* ---- exported parsers ----------------------------------------------------------- */

static bool parse_count_unit(const char *s, unsigned long long *out, bool unit_required)
{
    unsigned long long n = 0, mult = 1;
    const char *p = s;
    bool digits = false;

    while (isdigit((unsigned char)*p)) {
        if (n > 1000000000ULL)
            return false;
        n = n * 10 + (unsigned long long)(*p++ - '0');
        digits = true;
    }
    if (!digits)
        n = 1;                        /* "30/m" = "30/1m" */
    switch (*p) {
    case 's': mult = 1; p++; break;
    case 'm': mult = 60; p++; break;
    case 'h': mult = 3600; p++; break;
    case 'd': mult = 86400; p++; break;
    case '\0':
        if (unit_required || !digits)
            return false;
        break;
    default:
        return false;
    }
    if (*p != '\0' || n == 0)
        return false;
    *out = n * mult;
    return true;
}

/* The one duration syntax of every duration key: digits, then ms, s, m, h
 * or d; bare digits are in the key's own unit (bare_ms milliseconds each). */
bool mw_config_parse_duration_ms(const char *s, unsigned long long bare_ms, unsigned long long *ms)
{
    static const struct { const char *u; unsigned long long ms; } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"", 0}};
    unsigned long long n = 0, mult = bare_ms;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p)) {
        if (n > 1000000000000ULL)
            return false;
        n = n * 10 + (unsigned long long)(*p++ - '0');
    }
    if (*p != '\0') {
        mult = 0;
        for (size_t i = 0; units[i].ms != 0; i++)
            if (strcmp(p, units[i].u) == 0)
                mult = units[i].ms;
        if (mult == 0)
            return false;
    }
    *ms = n * mult;   /* n <= 1e12+9, mult <= 8.64e7: fits in 64 bits */
    return true;
}

bool mw_config_parse_duration(const char *s, unsigned long long *seconds)
{
    unsigned long long ms;

    if (!mw_config_parse_duration_ms(s, 1000, &ms) || ms % 1000 != 0)
        return false;
    *seconds = ms / 1000;
    return true;
}

bool mw_config_parse_rate(const char *s, unsigned long long *count, unsigned long long *period_s,
                          char *why, size_t whylen)
{
    const char *slash = strchr(s, '/');
    unsigned long long n = 0;
    const char *p = s;

    if (slash == NULL || slash == s)
        return fail(why, whylen, "expected N/PERIOD (\"100/1h\", \"5/10m\", \"30/m\")");
    for (; p < slash; p++) {
        if (!isdigit((unsigned char)*p) || n > 1000000000ULL)
            return fail(why, whylen, "N must be a number from 1 to 1000000000");
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    if (n == 0 || n > 1000000000ULL)
        return fail(why, whylen, "N must be a number from 1 to 1000000000");
    if (!parse_count_unit(slash + 1, period_s, true) || *period_s > 366ULL * 86400)
        return fail(why, whylen, "PERIOD must be a count and a unit s, m, h or d, at most 366d "
                                 "(\"1h\", \"10m\", \"d\")");
    *count = n;
    return true;
}

/* ---- defaults and freeing ------------------------------------------------------ */

static char **strlist_dup(const char *const *src, size_t *n)
{
    size_t cnt = 0;
    char **v;

    while (src[cnt] != NULL)
        cnt++;
    v = mw_calloc(cnt + 1, sizeof *v);
    for (size_t i = 0; i < cnt; i++)
        v[i] = mw_strdup(src[i]);
    *n = cnt;
    return v;
}

static void strlist_free(char ***v)
{
    if (*v == NULL)
        return;
    for (char **p = *v; *p != NULL; p++)
        free(*p);
    MW_FREE(v);
}

static int enum_lookup(const struct enum_word *w, const char *s, bool *ok)
{
    for (; w->word != NULL; w++) {
        if (strcasecmp(w->word, s) == 0) {
            *ok = true;
            return w->value;
        }
    }
    *ok = false;
    return 0;
}

static bool mode_parse(const char *s, long long *out)
{
    long long v = 0;
    size_t len = strlen(s);

    if (len == 0 || len > 4)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '7')
            return false;
        v = v * 8 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static void key_set_default(mw_config *cfg, const struct key *k)
{
    bool ok;
    long long m = 0;

    switch (k->type) {
    case KT_STRING:
        *FIELD(cfg, k, char *) = k->def_host ? NULL : mw_strdup(k->def_str);
        break;
    case KT_BOOL:
        *FIELD(cfg, k, bool) = k->def_int != 0;
        break;
    case KT_UINT:
    case KT_DURATION:
    case KT_DURATION_MS:
        *FIELD(cfg, k, unsigned) = (unsigned)k->def_int;
        break;
    case KT_MODE:
        if (!mode_parse(k->def_str, &m))
            mw_panic("config: bad default for %s", k->name);
        *FIELD(cfg, k, int) = (int)m;
        break;
    case KT_ENUM:
        *FIELD(cfg, k, int) = enum_lookup(k->words, k->def_str, &ok);
        if (!ok)
            mw_panic("config: bad default for %s", k->name);
        break;
    case KT_STRLIST:
        *FIELD(cfg, k, char **) = strlist_dup(k->def_list, COUNT(cfg, k));
        break;
    case KT_CIDRLIST: {
        mw_cidr_set *set = mw_cidr_set_new();
        for (const char *const *p = k->def_list; *p != NULL; p++)
            if (!mw_cidr_set_add(set, *p, NULL, 0))
                mw_panic("config: bad default %s for %s", *p, k->name);
        *FIELD(cfg, k, mw_cidr_set *) = set;
        break;
    }
    case KT_GROUPLIST:
        *FIELD(cfg, k, void *) = NULL;   /* default: an empty list */
        *COUNT(cfg, k) = 0;
        break;
    }
}

/* Typed access to a member of a KT_GROUPLIST element. */
#define MEMBER(elem, off, T) ((T *)(void *)((char *)(elem) + (off)))

/* Free the members of n elements of a group list, then the array. */
static void grouplist_free(const struct key *k, void *arr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *e = (char *)arr + i * k->elem_size;
        for (const struct gfield *f = k->fields; f->name != NULL; f++) {
            if (f->type == GF_STRING)
                MW_FREE(MEMBER(e, f->off, char *));
            else if (f->type == GF_STRLIST)
                strlist_free(MEMBER(e, f->off, char **));
        }
        MW_FREE(MEMBER(e, k->off_where, char *));
    }
    free(arr);
}

static void key_free(mw_config *cfg, const struct key *k)
{
    switch (k->type) {
    case KT_STRING:
        MW_FREE(FIELD(cfg, k, char *));
        break;
    case KT_STRLIST:
        strlist_free(FIELD(cfg, k, char **));
        break;
    case KT_CIDRLIST:
        mw_cidr_set_free(FIELD(cfg, k, mw_cidr_set *));
        break;
    case KT_GROUPLIST:
        grouplist_free(k, *FIELD(cfg, k, void *), *COUNT(cfg, k));
        *FIELD(cfg, k, void *) = NULL;
        *COUNT(cfg, k) = 0;
        break;
    default:
        break;
    }
}

void mw_config_free(mw_config **cfg)
{
    if (cfg == NULL || *cfg == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        key_free(*cfg, &keys[i]);
    for (size_t i = 0; (*cfg)->origin != NULL && i < NKEYS; i++)
        free((*cfg)->origin[i]);
    free((*cfg)->origin);
    free((*cfg)->path);
    MW_FREE(cfg);
}

/* ---- walking the file ----------------------------------------------------------- */

typedef struct loader {
    mw_config        *cfg;
    mw_config_errors *errs;
    const char       *path;
    const char       *dir;             /* path's directory with '/', or NULL */
    const mw_config_overrides *ov;
    bool              set[NKEYS];      /* given in the file */
    const config_setting_t *where[NKEYS]; /* where (while the file is parsed) */
    bool              bad[NKEYS];      /* given, but with an error already reported */
} loader;

/* "FILE:LINE" of a setting.  libconfig names an @include'd file as written
 * in the directive, relative to the include dir: make that a usable path. */
static void setting_where(const loader *ld, const config_setting_t *s, mw_buf *out)
{
    const char *f = config_setting_source_file(s);

    if (f == NULL)
        f = ld->path;
    if (f[0] != '/' && ld->dir != NULL && strcmp(f, ld->path) != 0)
        mw_buf_puts(out, ld->dir);
    mw_buf_printf(out, "%s:%d", f, (int)config_setting_source_line(s));
}

static void err_at(loader *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void err_at(loader *ld, const config_setting_t *s, const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    setting_where(ld, s, &b);
    mw_buf_puts(&b, ": ");
    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    mw_config_errors_addf(ld->errs, "%s", mw_buf_cstr(&b));
    mw_buf_free(&b);
}

static const char *type_name(int t)
{
    switch (t) {
    case CONFIG_TYPE_GROUP:  return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:  return "an integer";
    case CONFIG_TYPE_FLOAT:  return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL:   return "a boolean";
    case CONFIG_TYPE_ARRAY:  return "an array";
    case CONFIG_TYPE_LIST:   return "a list";
    default:                 return "nothing";
    }
}

static const struct key *key_find(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* Is name a group ("dns") of the table, i.e. a prefix "name." of some key? */
static bool group_known(const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(keys[i].name, name, len) == 0 && keys[i].name[len] == '.')
            return true;
    return false;
}

/* A key that the user probably meant: same last part, or a near miss. */
static const char *key_suggest(const char *full)
{
    const char *last = strrchr(full, '.');
    last = last != NULL ? last + 1 : full;

    for (size_t i = 0; i < NKEYS; i++)
        if (mw_str_edit_distance(full, keys[i].name) <= 2)
            return keys[i].name;
    for (size_t i = 0; i < NKEYS; i++) {
        const char *kl = strrchr(keys[i].name, '.');
        kl = kl != NULL ? kl + 1 : keys[i].name;
        if (strcmp(kl, last) == 0)
            return keys[i].name;
    }
    return NULL;
}

/* Collect a string list (array, list, or a single string) after validation.
 * Returns NULL (after reporting) on any bad element. */
static char **read_strlist(loader *ld, const struct key *k, config_setting_t *s, size_t *n)
{
    int t = config_setting_type(s);
    bool single = t == CONFIG_TYPE_STRING;
    int cnt = single ? 1 : config_setting_length(s);
    char **v;
    bool ok = true;
    char why[160];

    if (!single && t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
        err_at(ld, s, "%s: expected a list of strings [ \"...\", ... ], got %s", k->name, type_name(t));
        return NULL;
    }
    v = mw_calloc((size_t)cnt + 1, sizeof *v);
    for (int i = 0; i < cnt; i++) {
        config_setting_t *e = single ? s : config_setting_get_elem(s, (unsigned)i);
        const char *str = config_setting_get_string(e);
        if (str == NULL) {
            err_at(ld, e, "%s: element %d: expected a string, got %s", k->name, i + 1,
                   type_name(config_setting_type(e)));
            ok = false;
            continue;
        }
        if (k->check != NULL && !k->check(str, why, sizeof why)) {
            err_at(ld, e, "%s: \"%s\": %s", k->name, str, why);
            ok = false;
            continue;
        }
        v[i] = mw_strdup(str);
    }
    if (!ok) {
        for (int i = 0; i < cnt; i++)
            free(v[i]);
        free(v);
        return NULL;
    }
    *n = (size_t)cnt;
    return v;
}

/* A problem in a file named by a CIDR-list entry: "FILE:LINE: ..." (the
 * file's own line), then where the config names the file. */
struct cidr_file_err {
    loader                 *ld;
    const config_setting_t *s;
    const char             *key;
};

static void cidr_file_err(void *arg, const char *msg)
{
    struct cidr_file_err *fe = arg;
    mw_buf b = MW_BUF_INIT;

    setting_where(fe->ld, fe->s, &b);
    mw_config_errors_addf(fe->ld->errs, "%s (%s, named at %s)", msg, fe->key, mw_buf_cstr(&b));
    mw_buf_free(&b);
}

static mw_cidr_set *read_cidrlist(loader *ld, const struct key *k, config_setting_t *s)
{
    size_t n = 0;
    char **v = read_strlist(ld, k, s, &n);
    mw_cidr_set *set;
    bool ok = true;
    char why[160];

    if (v == NULL)
        return NULL;
    set = mw_cidr_set_new();
    for (size_t i = 0; i < n; i++) {
        config_setting_t *e = config_setting_type(s) == CONFIG_TYPE_STRING
                                  ? s : config_setting_get_elem(s, (unsigned)i);
        const char *file = mw_cidr_names_file(v[i]);
        if (file != NULL) {   /* a file of entries, OpenDKIM's InternalHosts form */
            struct cidr_file_err fe = {.ld = ld, .s = e, .key = k->name};
            ok = mw_cidr_names_add_file(set, file, NULL, cidr_file_err, &fe) == 0 && ok;
        } else if (!mw_cidr_names_add(set, v[i], NULL, why, sizeof why)) {
            err_at(ld, e, "%s: bad network \"%s\": %s", k->name, v[i], why);
            ok = false;
        }
    }
    strlist_free(&v);
    if (!ok)
        mw_cidr_set_free(&set);
    return set;
}

static const struct gfield *gfield_find(const struct gfield *f, const char *name)
{
    for (; f->name != NULL; f++)
        if (name != NULL && strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* One member of one group-list element into its field; false after reporting. */
static bool read_member(loader *ld, const struct key *k, size_t idx, const struct gfield *f,
                        config_setting_t *ms, char *elem)
{
    char why[160], full[160];

    snprintf(full, sizeof full, "%s entry %zu: %s", k->name, idx + 1, f->name);
    if (f->type == GF_UINT) {
        int t = config_setting_type(ms);
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
            err_at(ld, ms, "%s: expected an integer, got %s", full, type_name(t));
            return false;
        }
        long long v = config_setting_get_int64(ms);
        if (v < f->min || v > f->max) {
            err_at(ld, ms, "%s: %lld is out of range (%lld .. %lld)", full, v, f->min, f->max);
            return false;
        }
        *MEMBER(elem, f->off, unsigned) = (unsigned)v;
        return true;
    }
    if (f->type == GF_STRING) {
        const char *str = config_setting_type(ms) == CONFIG_TYPE_STRING
                              ? config_setting_get_string(ms) : NULL;
        if (str == NULL) {
            err_at(ld, ms, "%s: expected a string, got %s", full,
                   type_name(config_setting_type(ms)));
            return false;
        }
        if (f->check != NULL && !f->check(str, why, sizeof why)) {
            err_at(ld, ms, "%s: \"%s\": %s", full, str, why);
            return false;
        }
        free(*MEMBER(elem, f->off, char *));
        *MEMBER(elem, f->off, char *) = mw_strdup(str);
        return true;
    }
    struct key tmp = {.name = full, .check = f->check};
    size_t n = 0;
    char **v = read_strlist(ld, &tmp, ms, &n);
    if (v == NULL)
        return false;
    if (n == 0) {
        err_at(ld, ms, "%s: must not be empty", full);
        strlist_free(&v);
        return false;
    }
    strlist_free(MEMBER(elem, f->off, char **));
    *MEMBER(elem, f->off, char **) = v;
    *MEMBER(elem, f->off_n, size_t) = n;
    return true;
}

/* A list of groups ( { ... }, { ... } ) against k->fields. */
static void read_grouplist(loader *ld, const struct key *k, config_setting_t *s)
{
    int t = config_setting_type(s);
    size_t cnt;
    char *arr;
    bool ok = true;

    if (t != CONFIG_TYPE_LIST) {
        err_at(ld, s, "%s: expected a list of groups ( { ... }, { ... } ), got %s", k->name,
               type_name(t));
        return;
    }
    cnt = (size_t)config_setting_length(s);
    arr = mw_calloc(cnt + 1, k->elem_size);
    for (size_t i = 0; i < cnt; i++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char *elem = arr + i * k->elem_size;
        mw_buf where = MW_BUF_INIT;

        setting_where(ld, e, &where);
        *MEMBER(elem, k->off_where, char *) = mw_buf_steal(&where);
        if (!config_setting_is_group(e)) {
            err_at(ld, e, "%s entry %zu: expected a group { ... }, got %s", k->name, i + 1,
                   type_name(config_setting_type(e)));
            ok = false;
            continue;
        }
        int m = config_setting_length(e);
        for (int j = 0; j < m; j++) {
            config_setting_t *ms = config_setting_get_elem(e, (unsigned)j);
            const struct gfield *f = gfield_find(k->fields, config_setting_name(ms));
            if (f == NULL) {
                mw_buf exp = MW_BUF_INIT;
                for (const struct gfield *g = k->fields; g->name != NULL; g++)
                    mw_buf_printf(&exp, "%s%s", g == k->fields ? "" : ", ", g->name);
                err_at(ld, ms, "%s entry %zu: unknown member \"%s\" (expected %s)", k->name,
                       i + 1, config_setting_name(ms) ? config_setting_name(ms) : "?",
                       mw_buf_cstr(&exp));
                mw_buf_free(&exp);
                ok = false;
            } else if (!read_member(ld, k, i, f, ms, elem)) {
                ok = false;
            }
        }
        for (const struct gfield *f = k->fields; f->name != NULL; f++) {
            if (!f->optional && config_setting_get_member(e, f->name) == NULL) {
                err_at(ld, e, "%s entry %zu: missing \"%s\"", k->name, i + 1, f->name);
                ok = false;
            }
        }
    }
    if (!ok) {
        grouplist_free(k, arr, cnt);
        return;
    }
    grouplist_free(k, *FIELD(ld->cfg, k, void *), *COUNT(ld->cfg, k));
    *FIELD(ld->cfg, k, void *) = arr;
    *COUNT(ld->cfg, k) = cnt;
}

/* Record where key k's value came from (takes origin; config_dump.h). */
static void set_origin(mw_config *cfg, const struct key *k, char *origin)
{
    free(cfg->origin[k - keys]);
    cfg->origin[k - keys] = origin;
}

/* KT_DURATION / KT_DURATION_MS: an integer in the key's unit, or a string
 * "300ms", "5s", "15m", "6h", "7d".  A key in seconds refuses a value that
 * is not whole seconds (no silent rounding down). */
static void read_duration(loader *ld, const struct key *k, config_setting_t *s, int t, const char *str)
{
    bool in_ms = k->type == KT_DURATION_MS;
    unsigned long long unit = in_ms ? 1 : 1000, ms = 0;
    const char *uname = in_ms ? "milliseconds" : "seconds";
    mw_buf lo = MW_BUF_INIT, hi = MW_BUF_INIT;

    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        long long iv = config_setting_get_int64(s);
        if (iv < k->min || iv > k->max) {
            mw_config_format_duration_ms(&lo, (unsigned long long)k->min * unit);
            mw_config_format_duration_ms(&hi, (unsigned long long)k->max * unit);
            err_at(ld, s, "%s: %lld is out of range (%lld .. %lld) in %s: %s .. %s", k->name, iv,
                   k->min, k->max, uname, mw_buf_cstr(&lo), mw_buf_cstr(&hi));
            mw_buf_free(&lo);
            mw_buf_free(&hi);
            return;
        }
        ms = (unsigned long long)iv * unit;
    } else if (str == NULL || !mw_config_parse_duration_ms(str, unit, &ms)) {
        if (str == NULL)
            err_at(ld, s, "%s: expected a duration in %s (an integer, or a string with a unit: "
                   "\"300ms\", \"5s\", \"15m\", \"6h\", \"7d\"), got %s", k->name, uname,
                   type_name(t));
        else
            err_at(ld, s, "%s: \"%s\" is not a duration in %s (an integer of %s, or NUMBER with "
                   "a unit ms, s, m, h or d: \"300ms\", \"5s\", \"15m\", \"6h\", \"7d\")",
                   k->name, str, uname, uname);
        return;
    }
    if (!in_ms && ms % 1000 != 0) {
        err_at(ld, s, "%s: \"%s\" is not a whole number of seconds (this key counts in seconds; "
               "write e.g. \"1s\" or \"2s\")", k->name, str != NULL ? str : "?");
        return;
    }
    mw_config_format_duration_ms(&lo, (unsigned long long)k->min * unit);
    mw_config_format_duration_ms(&hi, (unsigned long long)k->max * unit);
    if (ms / unit < (unsigned long long)k->min || ms / unit > (unsigned long long)k->max)
        err_at(ld, s, "%s: \"%s\" is out of range (%lld .. %lld) in %s: %s .. %s", k->name,
               str, k->min, k->max, uname, mw_buf_cstr(&lo), mw_buf_cstr(&hi));
    else
        *FIELD(ld->cfg, k, unsigned) = (unsigned)(ms / unit);
    mw_buf_free(&lo);
    mw_buf_free(&hi);
}

static void key_read(loader *ld, const struct key *k, config_setting_t *s)
{
    mw_config *cfg = ld->cfg;
    int t = config_setting_type(s);
    const char *str = t == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
    char why[160];
    size_t nerr = ld->errs->n;

    ld->set[k - keys] = true;
    ld->where[k - keys] = s;
    mw_buf where = MW_BUF_INIT;
    setting_where(ld, s, &where);
    set_origin(cfg, k, mw_buf_steal(&where));

    switch (k->type) {
    case KT_STRING:
        if (str == NULL) {
            err_at(ld, s, "%s: expected a string, got %s", k->name, type_name(t));
        } else if (k->check != NULL && !k->check(str, why, sizeof why)) {
            err_at(ld, s, "%s: \"%s\": %s", k->name, str, why);
        } else {
            free(*FIELD(cfg, k, char *));
            *FIELD(cfg, k, char *) = mw_strdup(str);
        }
        break;
    case KT_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            err_at(ld, s, "%s: expected true or false, got %s", k->name, type_name(t));
        else
            *FIELD(cfg, k, bool) = config_setting_get_bool(s) != 0;
        break;
    case KT_UINT: {
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
            err_at(ld, s, "%s: expected an integer, got %s", k->name, type_name(t));
            break;
        }
        long long v = config_setting_get_int64(s);
        if (v < k->min || v > k->max)
            err_at(ld, s, "%s: %lld is out of range (%lld .. %lld)", k->name, v, k->min, k->max);
        else
            *FIELD(cfg, k, unsigned) = (unsigned)v;
        break;
    }
    case KT_DURATION:
    case KT_DURATION_MS:
        read_duration(ld, k, s, t, str);
        break;
    case KT_MODE: {
        long long m;
        if (str == NULL)
            err_at(ld, s, "%s: expected an octal string such as \"%s\", got %s", k->name,
                   k->def_str, type_name(t));
        else if (!mode_parse(str, &m) || m < k->min || m > k->max)
            err_at(ld, s, "%s: \"%s\" is not an octal mode from %llo to %llo", k->name, str,
                   k->min, k->max);
        else
            *FIELD(cfg, k, int) = (int)m;
        break;
    }
    case KT_ENUM: {
        bool ok = false;
        int v = str != NULL ? enum_lookup(k->words, str, &ok) : 0;
        if (ok) {
            *FIELD(cfg, k, int) = v;
            break;
        }
        mw_buf b = MW_BUF_INIT;
        for (const struct enum_word *w = k->words; w->word != NULL; w++)
            mw_buf_printf(&b, "%s\"%s\"", w == k->words ? "" : ", ", w->word);
        if (str == NULL)
            err_at(ld, s, "%s: expected one of %s, got %s", k->name, mw_buf_cstr(&b), type_name(t));
        else
            err_at(ld, s, "%s: unknown value \"%s\" (expected one of %s)", k->name, str, mw_buf_cstr(&b));
        mw_buf_free(&b);
        break;
    }
    case KT_STRLIST: {
        size_t n = 0;
        char **v = read_strlist(ld, k, s, &n);
        if (v != NULL) {
            strlist_free(FIELD(cfg, k, char **));
            *FIELD(cfg, k, char **) = v;
            *COUNT(cfg, k) = n;
        }
        break;
    }
    case KT_CIDRLIST: {
        mw_cidr_set *set = read_cidrlist(ld, k, s);
        if (set != NULL) {
            mw_cidr_set_free(FIELD(cfg, k, mw_cidr_set *));
            *FIELD(cfg, k, mw_cidr_set *) = set;
        }
        break;
    }
    case KT_GROUPLIST:
        read_grouplist(ld, k, s);
        break;
    }
    ld->bad[k - keys] = ld->errs->n > nerr;
}

static void walk_group(loader *ld, config_setting_t *grp, const char *prefix)
{
    int n = config_setting_length(grp);

    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        char full[256];
        const struct key *k;

        snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "." : "", name ? name : "?");
        if ((k = key_find(full)) != NULL) {
            if (config_setting_is_group(s))
                err_at(ld, s, "%s: expected %s, got a group", full,
                       k->type == KT_STRLIST || k->type == KT_CIDRLIST ? "a list"
                       : k->type == KT_GROUPLIST ? "a list of groups ( { ... }, ... )"
                                                  : "a value");
            else
                key_read(ld, k, s);
        } else if (group_known(full)) {
            if (config_setting_is_group(s))
                walk_group(ld, s, full);
            else
                err_at(ld, s, "%s: expected a group %s { ... }", full, name);
        } else {
            const char *hint = key_suggest(full);
            if (hint != NULL)
                err_at(ld, s, "unknown key \"%s\" (did you mean \"%s\"?)", full, hint);
            else
                err_at(ld, s, "unknown key \"%s\"", full);
        }
    }
}

static size_t key_index(const char *name)
{
    return (size_t)(key_find(name) - keys);
}

/* dns.mode against dns.forwarders, while the file's settings still exist
 * (for their line numbers).  --dns replaces both, so skip then. */
static void dns_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;
    size_t im = key_index("dns.mode"), ifw = key_index("dns.forwarders");

    if (ld->ov != NULL && ld->ov->ndns > 0)
        return;
    /* Forwarders without an explicit mode mean "forward": listing servers
     * and having them ignored would surprise everyone. */
    if (ld->set[ifw] && !ld->set[im] && cfg->ndns_forwarders > 0) {
        cfg->dns_mode = MW_DNS_MODE_FORWARD;
        if (cfg->origin[ifw] != NULL)   /* implied by the forwarders' line */
            set_origin(cfg, &keys[im], mw_strdup(cfg->origin[ifw]));
    }
    if (cfg->dns_mode == MW_DNS_MODE_FORWARD && cfg->ndns_forwarders == 0 && !ld->bad[ifw])
        err_at(ld, ld->where[ld->set[im] ? im : ifw],
               "dns.mode \"forward\" needs at least one dns.forwarders entry");
    if (cfg->dns_mode != MW_DNS_MODE_FORWARD && cfg->ndns_forwarders > 0)
        err_at(ld, ld->where[ifw],
               "dns.forwarders are only used with dns.mode \"forward\" (dns.mode is \"%s\")",
               cfg->dns_mode == MW_DNS_MODE_RECURSIVE ? "recursive" : "resolv.conf");
}

static void dkim_file_checks(loader *ld);
/* Is the host of "HOST" or "HOST:PORT" ([v6]:port) loopback: 127.0.0.0/8,
 * ::1 (also as ::ffff:127.x) or the name "localhost"?  Other names are not:
 * where they resolve is not known at load time. */
static bool redis_loopback(const char *spec, bool with_port)
{
    const char *colon = with_port ? strrchr(spec, ':') : NULL;
    char *host = colon == NULL ? mw_strdup(spec)
               : spec[0] == '[' ? mw_strndup(spec + 1, (size_t)(colon - spec - 2))
                                : mw_strndup(spec, (size_t)(colon - spec));
    bool ok = mw_host_is_loopback(host);
    free(host);
    return ok;
}

/* Redis traffic is plaintext (hiredis 0.14 has no TLS): a non-loopback
 * address needs redis.allow_plaintext = true (docs/ratelimit.md: a local
 * stunnel or spiped sidecar is the supported way to encrypt). */
static void redis_plaintext_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;
    size_t ih = key_index("redis.host"), is = key_index("redis.sentinels"),
           ic = key_index("redis.cluster_nodes");
    const char *bad = NULL;
    size_t at = ih;

    if (cfg->nredis_cluster_nodes > 0 && cfg->nredis_sentinels > 0)
        err_at(ld, ld->where[ic], "redis.cluster_nodes and redis.sentinels exclude each other");
    if (cfg->nredis_cluster_nodes > 0 && cfg->redis_db != 0)
        err_at(ld, ld->where[ic], "a Redis Cluster has only database 0 (redis.db is %u)",
               cfg->redis_db);
    if (cfg->state_backend != MW_STATE_REDIS || cfg->redis_allow_plaintext)
        return;
    if (cfg->nredis_cluster_nodes > 0) {
        for (size_t i = 0; i < cfg->nredis_cluster_nodes && bad == NULL; i++)
            if (!redis_loopback(cfg->redis_cluster_nodes[i], true))
                bad = cfg->redis_cluster_nodes[i];
        at = ic;
    } else if (cfg->nredis_sentinels > 0) {
        for (size_t i = 0; i < cfg->nredis_sentinels && bad == NULL; i++)
            if (!redis_loopback(cfg->redis_sentinels[i], true))
                bad = cfg->redis_sentinels[i];
        at = is;
    } else if (!redis_loopback(cfg->redis_host, false)) {
        bad = cfg->redis_host;
    }
    if (bad == NULL || ld->bad[at])
        return;
    if (ld->where[at] != NULL)
        err_at(ld, ld->where[at], "%s \"%s\" is not a loopback address: Redis traffic would "
               "cross the network in plaintext (no TLS in hiredis 0.14); use a local stunnel or "
               "spiped sidecar (docs/ratelimit.md) or set redis.allow_plaintext = true", keys[at].name,
               bad);
    else
        mw_config_errors_addf(ld->errs, "%s: %s \"%s\" is not a loopback address (set "
                              "redis.allow_plaintext = true or use a local TLS sidecar)",
                              ld->path != NULL ? ld->path : "defaults", keys[at].name, bad);
}


static void load_file(loader *ld, const char *path)
{
    config_t lc;
    FILE *fp = fopen(path, "r");

    if (fp == NULL) {
        mw_config_errors_addf(ld->errs, "%s: cannot open: %s", path, strerror(errno));
        return;
    }
    fclose(fp);
    config_init(&lc);
    /* @include "x.conf" is relative to the directory of the main file. */
    const char *slash = strrchr(path, '/');
    char *dir = slash != NULL ? mw_strndup(path, (size_t)(slash - path) + 1) : NULL;
    if (dir != NULL)
        config_set_include_dir(&lc, dir);
    ld->dir = dir;
    if (config_read_file(&lc, path) != CONFIG_TRUE) {
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO && config_error_file(&lc) == NULL)
            mw_config_errors_addf(ld->errs, "%s: cannot read: %s", path, config_error_text(&lc));
        else
            mw_config_errors_addf(ld->errs, "%s:%d: %s",
                                  config_error_file(&lc) ? config_error_file(&lc) : path,
                                  config_error_line(&lc), config_error_text(&lc));
    } else {
        walk_group(ld, config_root_setting(&lc), "");
        dns_checks(ld);
        dkim_file_checks(ld);
        redis_plaintext_checks(ld);
    }
    config_destroy(&lc);
    ld->dir = NULL;
    free(dir);
}

/* ---- overrides and cross-key rules ----------------------------------------------- */

static void ov_string(loader *ld, const char *flag, const char *keyname, const char *val)
{
    const struct key *k = key_find(keyname);
    char why[160];

    if (val == NULL)
        return;
    if (k->check != NULL && !k->check(val, why, sizeof why)) {
        mw_config_errors_addf(ld->errs, "command line: %s \"%s\": %s", flag, val, why);
        return;
    }
    free(*FIELD(ld->cfg, k, char *));
    *FIELD(ld->cfg, k, char *) = mw_strdup(val);
    set_origin(ld->cfg, k, mw_strdup("command line"));
}

/* The keys an override replaced come from the command line (config_dump.h). */
static void ov_origin(loader *ld, const char *keyname)
{
    set_origin(ld->cfg, key_find(keyname), mw_strdup("command line"));
}

/* --sign DOMAIN:SELECTOR:KEYFILE: one key and rules for DOMAIN and *.DOMAIN,
 * ahead of the file's rules (the command line is the more specific wish). */
static void ov_sign(loader *ld, const char *spec, size_t *nrules_added)
{
    mw_config *cfg = ld->cfg;
    const char *c1 = strchr(spec, ':'), *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    char why[160], *domain, *selector, *file;
    mw_buf name = MW_BUF_INIT;

    if (c1 == NULL || c2 == NULL) {
        mw_config_errors_addf(ld->errs, "command line: --sign \"%s\": expected "
                              "DOMAIN:SELECTOR:KEYFILE", spec);
        return;
    }
    domain = mw_strndup(spec, (size_t)(c1 - spec));
    selector = mw_strndup(c1 + 1, (size_t)(c2 - c1 - 1));
    file = NULL;
    if (!check_domain(domain, why, sizeof why)) {
        mw_config_errors_addf(ld->errs, "command line: --sign \"%s\": domain \"%s\": %s", spec,
                              domain, why);
    } else if (!check_selector(selector, why, sizeof why)) {
        mw_config_errors_addf(ld->errs, "command line: --sign \"%s\": selector \"%s\": %s",
                              spec, selector, why);
    } else if (c2[1] == '\0') {
        mw_config_errors_addf(ld->errs, "command line: --sign \"%s\": empty key file name", spec);
    } else if (c2[1] == '/') {
        file = mw_strdup(c2 + 1);
    } else {
        char cwd[4096];
        if (getcwd(cwd, sizeof cwd) == NULL)
            mw_config_errors_addf(ld->errs, "command line: --sign \"%s\": cannot resolve the "
                                  "relative key file: %s", spec, strerror(errno));
        else {
            mw_buf b = MW_BUF_INIT;
            mw_buf_printf(&b, "%s/%s", cwd, c2 + 1);
            file = mw_buf_steal(&b);
        }
    }
    if (file == NULL) {
        free(domain);
        free(selector);
        return;
    }
    mw_str_lower(domain);
    mw_buf_printf(&name, "%s._domainkey.%s", selector, domain);
    for (size_t i = 0; i < cfg->ndkim_keys; i++) {
        if (strcasecmp(cfg->dkim_keys[i].name, mw_buf_cstr(&name)) == 0) {
            mw_config_errors_addf(ld->errs, "command line: --sign \"%s\": key %s given twice",
                                  spec, mw_buf_cstr(&name));
            mw_buf_free(&name);
            free(domain);
            free(selector);
            free(file);
            return;
        }
    }
    cfg->dkim_keys = mw_reallocarray(cfg->dkim_keys, cfg->ndkim_keys + 1, sizeof *cfg->dkim_keys);
    cfg->dkim_keys[cfg->ndkim_keys++] = (mw_config_dkim_key){
        .name = mw_strdup(mw_buf_cstr(&name)), .domain = mw_strdup(domain),
        .selector = selector, .file = file, .where = mw_strdup("command line")};

    /* Two rules: the domain itself and its subdomains, inserted after the
     * rules earlier --sign flags added. */
    cfg->dkim_rules = mw_reallocarray(cfg->dkim_rules, cfg->ndkim_rules + 2, sizeof *cfg->dkim_rules);
    memmove(cfg->dkim_rules + *nrules_added + 2, cfg->dkim_rules + *nrules_added,
            (cfg->ndkim_rules - *nrules_added) * sizeof *cfg->dkim_rules);
    for (int i = 0; i < 2; i++) {
        mw_config_dkim_rule *r = &cfg->dkim_rules[*nrules_added + (size_t)i];
        mw_buf pat = MW_BUF_INIT;
        mw_buf_printf(&pat, "%s%s", i == 0 ? "" : "*.", domain);
        r->pattern = mw_buf_steal(&pat);
        r->keys = mw_calloc(2, sizeof *r->keys);
        r->keys[0] = mw_strdup(mw_buf_cstr(&name));
        r->nkeys = 1;
        r->where = mw_strdup("command line");
    }
    cfg->ndkim_rules += 2;
    *nrules_added += 2;
    mw_buf_free(&name);
    free(domain);
}

/* --redis HOST:PORT: the redis backend at that address, no Sentinel. */
static void ov_redis(loader *ld, const char *spec)
{
    mw_config *cfg = ld->cfg;
    const char *colon = strrchr(spec, ':');
    char why[160];

    if (!check_host_port(spec, why, sizeof why)) {
        mw_config_errors_addf(ld->errs, "command line: --redis \"%s\": %s", spec, why);
        return;
    }
    if (!cfg->redis_allow_plaintext && !redis_loopback(spec, true)) {
        mw_config_errors_addf(ld->errs, "command line: --redis \"%s\": not a loopback address "
                              "(set redis.allow_plaintext = true or use a local TLS sidecar)", spec);
        return;
    }
    strlist_free(&cfg->redis_cluster_nodes);
    cfg->redis_cluster_nodes = mw_calloc(1, sizeof *cfg->redis_cluster_nodes);
    cfg->nredis_cluster_nodes = 0;
    free(cfg->redis_host);
    cfg->redis_host = spec[0] == '[' ? mw_strndup(spec + 1, (size_t)(colon - spec - 2))
                                     : mw_strndup(spec, (size_t)(colon - spec));
    cfg->redis_port = (unsigned)atoi(colon + 1);
    strlist_free(&cfg->redis_sentinels);
    cfg->redis_sentinels = mw_calloc(1, sizeof *cfg->redis_sentinels);
    cfg->nredis_sentinels = 0;
    cfg->state_backend = MW_STATE_REDIS;
}

static void apply_overrides(loader *ld, const mw_config_overrides *ov)
{
    mw_config *cfg = ld->cfg;
    char why[160];

    ov_string(ld, "--socket", "socket", ov->socket);
    ov_string(ld, "--authserv-id", "authserv_id", ov->authserv_id);
    ov_string(ld, "--policy", "policy", ov->policy);
    ov_string(ld, "--pid-file", "pid_file", ov->pid_file);
    ov_string(ld, "--user", "user", ov->user);
    ov_string(ld, "--group", "group", ov->group);
    ov_string(ld, "--history", "history.dir", ov->history);
    if (ov->log_stderr) {
        cfg->log_target = MW_LOG_TO_STDERR;
        ov_origin(ld, "log.target");
    }

    if (ov->ndns > 0) {
        char **v = mw_calloc(ov->ndns + 1, sizeof *v);
        size_t n = 0;
        for (size_t i = 0; i < ov->ndns; i++) {
            if (!check_forwarder(ov->dns[i], why, sizeof why))
                mw_config_errors_addf(ld->errs, "command line: --dns \"%s\": %s", ov->dns[i], why);
            else
                v[n++] = mw_strdup(ov->dns[i]);
        }
        strlist_free(&cfg->dns_forwarders);
        cfg->dns_forwarders = v;
        cfg->ndns_forwarders = n;
        cfg->dns_mode = MW_DNS_MODE_FORWARD;
        ov_origin(ld, "dns.forwarders");
        ov_origin(ld, "dns.mode");
    }
    if (ov->ninternal > 0) {
        mw_cidr_set *set = mw_cidr_set_new();
        for (size_t i = 0; i < ov->ninternal; i++)
            if (!mw_cidr_set_add(set, ov->internal[i], why, sizeof why))
                mw_config_errors_addf(ld->errs, "command line: --internal \"%s\": %s",
                                      ov->internal[i], why);
        mw_cidr_set_free(&cfg->internal_networks);
        cfg->internal_networks = set;
        ov_origin(ld, "trust.internal_networks");
    }
    size_t nrules_added = 0;
    for (size_t i = 0; i < ov->nsign; i++)
        ov_sign(ld, ov->sign[i], &nrules_added);
    if (ov->nsign > 0) {
        ov_origin(ld, "dkim.keys");
        ov_origin(ld, "dkim.signing");
    }
    if (ov->redis != NULL) {
        ov_redis(ld, ov->redis);
        ov_origin(ld, "state.backend");
        ov_origin(ld, "redis.host");
        ov_origin(ld, "redis.port");
        ov_origin(ld, "redis.sentinels");
    }
}

/* This host's name: gethostname(), made fully qualified through the
 * resolver (normally /etc/hosts) when it has no dot. */
static char *local_hostname(void)
{
    char name[256];
    struct addrinfo hints, *res = NULL;
    char *out = NULL;

    if (gethostname(name, sizeof name) != 0 || name[0] == '\0')
        return mw_strdup("localhost");
    name[sizeof name - 1] = '\0';
    if (strchr(name, '.') != NULL)
        return mw_strdup(name);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_CANONNAME;
    if (getaddrinfo(name, NULL, &hints, &res) == 0) {
        if (res != NULL && res->ai_canonname != NULL && strchr(res->ai_canonname, '.') != NULL)
            out = mw_strdup(res->ai_canonname);
        freeaddrinfo(res);
    }
    return out != NULL ? out : mw_strdup(name);
}

/* Key names unique; rules name known keys (when every key is inline);
 * the signed header list has From (RFC 6376 §5.4: From MUST be signed). */
static void dkim_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;

    for (size_t i = 0; i < cfg->ndkim_keys; i++)
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(cfg->dkim_keys[i].name, cfg->dkim_keys[j].name) == 0)
                mw_config_errors_addf(ld->errs, "%s: dkim.keys: key name \"%s\" already used at %s",
                                      cfg->dkim_keys[i].where, cfg->dkim_keys[i].name,
                                      cfg->dkim_keys[j].where);
    if (cfg->dkim_key_table[0] == '\0') {
        for (size_t i = 0; i < cfg->ndkim_rules; i++) {
            for (size_t k = 0; k < cfg->dkim_rules[i].nkeys; k++) {
                const char *kn = cfg->dkim_rules[i].keys[k];
                bool found = false;
                for (size_t j = 0; j < cfg->ndkim_keys && !found; j++)
                    found = strcasecmp(cfg->dkim_keys[j].name, kn) == 0;
                if (!found)
                    mw_config_errors_addf(ld->errs, "%s: dkim.signing: unknown key \"%s\" "
                                          "(not in dkim.keys)", cfg->dkim_rules[i].where, kn);
            }
        }
    }
}

/* Only the file can drop From (the default has it): checked while the
 * file's settings (and their lines) exist. */
static void dkim_file_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;
    if (cfg->arc_seal && (cfg->arc_key == NULL || cfg->arc_key[0] == '\0'))
        err_at(ld, ld->where[key_index("arc.seal")], "arc.seal = true needs arc.key (a key name from the DKIM key table)");
    size_t k = key_index("dkim.sign_headers");
    bool from = false;

    for (size_t i = 0; i < cfg->ndkim_sign_headers; i++)
        from = from || strcasecmp(cfg->dkim_sign_headers[i], "From") == 0;
    if (!from && ld->set[k] && !ld->bad[k])
        err_at(ld, ld->where[k], "dkim.sign_headers must include From (RFC 6376 section 5.4)");
}

/* Rate-limit rules: unique names, what each stage can know, reply class;
 * then the documented defaults are filled in, so every consumer sees
 * complete rules. */
static void ratelimit_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;

    for (size_t i = 0; i < cfg->nratelimit_rules; i++) {
        mw_config_ratelimit_rule *r = &cfg->ratelimit_rules[i];
        bool has_rcpt = false, only_ip = true;

        for (size_t j = 0; j < i; j++)
            if (strcmp(r->name, cfg->ratelimit_rules[j].name) == 0)
                mw_config_errors_addf(ld->errs, "%s: ratelimit.rules: rule name \"%s\" already "
                                      "used at %s", r->where, r->name,
                                      cfg->ratelimit_rules[j].where);
        for (size_t j = 0; j < r->nkey; j++) {
            has_rcpt = has_rcpt || strcmp(r->key[j], "recipient") == 0;
            only_ip = only_ip && strcmp(r->key[j], "ip") == 0;
        }
        if (r->cost == NULL)
            r->cost = mw_strdup(has_rcpt ? "recipient" : "message");
        if (r->stage == NULL)
            r->stage = mw_strdup(strcmp(r->cost, "recipient") == 0 ? "rcpt" : "mail");
        if (r->action == NULL)
            r->action = mw_strdup("tempfail");
        if (r->ipv4_mask == 0)
            r->ipv4_mask = 32;
        if (r->ipv6_mask == 0)
            r->ipv6_mask = 64;
        if (r->burst == 0) {
            unsigned long long n = 1, p = 1;
            if (mw_config_parse_rate(r->rate, &n, &p, NULL, 0))
                r->burst = (unsigned)n;
        }
        if (strcmp(r->stage, "connect") == 0 && !only_ip)
            mw_config_errors_addf(ld->errs, "%s: ratelimit rule \"%s\": at stage connect only "
                                  "the key ip is known", r->where, r->name);
        if (has_rcpt && strcmp(r->stage, "rcpt") != 0)
            mw_config_errors_addf(ld->errs, "%s: ratelimit rule \"%s\": the key recipient needs "
                                  "stage rcpt", r->where, r->name);
        if (strcmp(r->cost, "recipient") == 0 &&
            (strcmp(r->stage, "connect") == 0 || strcmp(r->stage, "mail") == 0))
            mw_config_errors_addf(ld->errs, "%s: ratelimit rule \"%s\": cost recipient needs "
                                  "stage rcpt or eom (recipients are not known at %s)", r->where,
                                  r->name, r->stage);
        if (strcmp(r->cost, "message") == 0 && strcmp(r->stage, "rcpt") == 0)
            mw_config_errors_addf(ld->errs, "%s: ratelimit rule \"%s\": at stage rcpt each "
                                  "recipient costs one (cost recipient); count messages at "
                                  "stage mail or eom", r->where, r->name);
        if (r->reply != NULL && r->reply[0] != (strcmp(r->action, "reject") == 0 ? '5' : '4'))
            mw_config_errors_addf(ld->errs, "%s: ratelimit rule \"%s\": action %s needs a %cxx "
                                  "reply", r->where, r->name, r->action,
                                  strcmp(r->action, "reject") == 0 ? '5' : '4');
    }
}

static void state_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;

    if (cfg->reputation_bucket_s > 0 && cfg->reputation_window_s / cfg->reputation_bucket_s > 1000)
        mw_config_errors_addf(ld->errs, "%s: reputation.window is more than 1000 "
                              "reputation.bucket long (%u s / %u s)",
                              cfg->path != NULL ? cfg->path : "defaults",
                              cfg->reputation_window_s, cfg->reputation_bucket_s);
    if (cfg->reputation_bucket_s > cfg->reputation_window_s)
        mw_config_errors_addf(ld->errs, "%s: reputation.bucket is longer than reputation.window",
                              cfg->path != NULL ? cfg->path : "defaults");
    ratelimit_checks(ld);
}

static void cross_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;

    cfg->dns_resolv_conf = cfg->dns_mode == MW_DNS_MODE_RESOLV_CONF;
    dkim_checks(ld);
    state_checks(ld);
    if (cfg->hostname == NULL)
        cfg->hostname = local_hostname();
    if (cfg->authserv_id == NULL)
        cfg->authserv_id = mw_strdup(cfg->hostname);
}

/* ---- entry point ----------------------------------------------------------------- */

mw_config *mw_config_load(const char *path, const mw_config_overrides *ov, mw_config_errors *errs)
{
    loader ld;
    size_t start = errs->n;

    memset(&ld, 0, sizeof ld);
    ld.cfg = mw_calloc(1, sizeof *ld.cfg);
    ld.errs = errs;
    ld.path = path;
    ld.ov = ov;
    ld.cfg->path = mw_strdup(path);
    ld.cfg->origin = mw_calloc(NKEYS, sizeof *ld.cfg->origin);
    for (size_t i = 0; i < NKEYS; i++)
        key_set_default(ld.cfg, &keys[i]);
    if (path != NULL)
        load_file(&ld, path);
    if (ov != NULL)
        apply_overrides(&ld, ov);
    cross_checks(&ld);
    if (errs->n > start)
        mw_config_free(&ld.cfg);
    return ld.cfg;
}

/* "" or local@domain (printable, no blanks). */
static bool check_report_addr(const char *s, char *why, size_t whylen)
{
    const char *at = strrchr(s, '@');

    if (*s == '\0')
        return true;
    if (!check_printable(s, why, whylen))
        return false;
    if (at == NULL || at == s || !mw_domain_valid(at + 1))
        return fail(why, whylen, "must be an address local@domain");
    return true;
}

/* Free text for the report XML: no control characters. */
static bool check_report_text(const char *s, char *why, size_t whylen)
{
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return fail(why, whylen, "must not contain control characters");
    return true;
}

/* "" or a host name: it becomes part of a file name (no '!' or '/'). */
static bool check_report_receiver(const char *s, char *why, size_t whylen)
{
    if (*s == '\0' || mw_domain_valid(s))
        return true;
    return fail(why, whylen, "must be a host name");
}

static bool check_socket_or_empty(const char *s, char *why, size_t whylen)
{
    return *s == '\0' || check_socket(s, why, whylen);
}

/* A reputation bound written as a string: "-1" .. "1" (e.g. "0.5"). */
static bool check_rep_bound(const char *s, char *why, size_t whylen)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v < -1.0 || v > 1.0) {
        snprintf(why, whylen, "expected a number from -1 to 1, e.g. \"0.5\"");
        return false;
    }
    return true;
}
