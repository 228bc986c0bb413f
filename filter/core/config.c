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
#include "strutil.h"

/* ---- the table ------------------------------------------------------------ */

typedef enum key_type {
    KT_STRING,    /* char *                                       */
    KT_BOOL,      /* bool                                         */
    KT_UINT,      /* unsigned, within [min, max]                  */
    KT_MODE,      /* int, octal string "0660", within [min, max]  */
    KT_ENUM,      /* int-sized enum, one of words[]               */
    KT_STRLIST,   /* char ** (NULL-terminated) + size_t count     */
    KT_CIDRLIST   /* mw_cidr_set *                                */
} key_type;

/* Validates one string value (or one list element); reason into why. */
typedef bool (*str_check_fn)(const char *s, char *why, size_t whylen);

struct enum_word {
    const char *word;
    int         value;
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

/* The enum fields are written through int *; make sure that is their size. */
_Static_assert(sizeof(mw_log_target) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(mw_dns_mode) == sizeof(int), "enum size");

static const struct enum_word w_log_target[] = {
    {"stderr", MW_LOG_TO_STDERR}, {"syslog", MW_LOG_TO_SYSLOG}, {NULL, 0}};
static const struct enum_word w_log_format[] = {
    {"text", MW_LOG_FMT_TEXT}, {"json", MW_LOG_FMT_JSON}, {NULL, 0}};
static const struct enum_word w_log_level[] = {
    {"debug", MW_LOG_DEBUG}, {"info", MW_LOG_INFO}, {"warn", MW_LOG_WARN},
    {"warning", MW_LOG_WARN}, {"error", MW_LOG_ERROR}, {NULL, 0}};
static const struct enum_word w_dns_mode[] = {
    {"resolv.conf", MW_DNS_MODE_RESOLV_CONF}, {"forward", MW_DNS_MODE_FORWARD},
    {"recursive", MW_DNS_MODE_RECURSIVE}, {NULL, 0}};

static const char *const def_none[] = {NULL};
static const char *const def_internal[] = {"127.0.0.0/8", "::1/128", NULL};
/* Postfix's submission service sets {daemon_name} to whatever master.cf
 * says (ORIGINATING in the stock file); Sendmail's submission port is MSA. */
static const char *const def_submission[] = {"ORIGINATING", "MSA", NULL};

#define F(field) offsetof(mw_config, field)

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
    {.name = "shutdown_timeout", .type = KT_UINT, .off = F(shutdown_timeout), .def_int = 30,
     .min = 0, .max = 3600, .doc = "seconds to let messages in flight finish on SIGTERM"},
    {.name = "milter_timeout", .type = KT_UINT, .off = F(milter_timeout), .def_int = 300,
     .min = 1, .max = 86400, .doc = "seconds to wait for the MTA before giving up on a connection"},
    /* identity */
    {.name = "authserv_id", .type = KT_STRING, .off = F(authserv_id), .def_host = true,
     .check = check_authserv_id, .doc = "authserv-id of our Authentication-Results headers"},
    {.name = "hostname", .type = KT_STRING, .off = F(hostname), .def_host = true,
     .check = check_hostname, .doc = "this host's name, for Received-SPF and SPF's %{r}"},
    /* policy */
    {.name = "policy", .type = KT_STRING, .off = F(policy), .def_str = "default",
     .check = check_nonempty, .doc = "policy name (policy_dir, then built-in) or a file path"},
    {.name = "policy_dir", .type = KT_STRING, .off = F(policy_dir),
     .def_str = "/etc/mailwarden/policies", .check = check_abs_path,
     .doc = "directory searched for NAME.conf before the built-in policies"},
    /* logging */
    {.name = "log.target", .type = KT_ENUM, .off = F(log_target), .def_str = "stderr",
     .words = w_log_target, .doc = "where log lines go: stderr or syslog"},
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
    {.name = "dns.timeout", .type = KT_UINT, .off = F(dns_timeout_ms), .def_int = 5000,
     .min = 100, .max = 60000, .doc = "per-query deadline in milliseconds"},
    {.name = "dns.trust_anchor", .type = KT_STRING, .off = F(dns_trust_anchor), .def_str = "",
     .check = check_abs_or_empty, .doc = "DNSSEC root trust anchor file; \"\" disables validation"},
    {.name = "dns.tcp", .type = KT_BOOL, .off = F(dns_tcp), .def_int = 0,
     .doc = "query upstream servers over TCP only"},
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
    {.name = "spf.timeout", .type = KT_UINT, .off = F(spf_timeout_ms), .def_int = 20000,
     .min = 1000, .max = 120000, .doc = "total SPF evaluation deadline in milliseconds"},
    /* Authentication-Results */
    {.name = "authres.remove_forged", .type = KT_BOOL, .off = F(ar_remove_forged), .def_int = 1,
     .doc = "remove incoming Authentication-Results headers that claim our authserv_id"},
};

#define NKEYS (sizeof keys / sizeof keys[0])

const char *mw_config_key_name(size_t i) { return i < NKEYS ? keys[i].name : NULL; }
const char *mw_config_key_doc(size_t i) { return i < NKEYS ? keys[i].doc : NULL; }

/* Typed access to a key's target field (and a list's count field). */
#define FIELD(cfg, k, T) ((T *)(void *)((char *)(cfg) + (k)->off))
#define COUNT(cfg, k)    ((size_t *)(void *)((char *)(cfg) + (k)->off_n))

/* ---- errors ----------------------------------------------------------------- */

void mw_config_errors_addf(mw_config_errors *e, const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    e->msg = mw_reallocarray(e->msg, e->n + 1, sizeof *e->msg);
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
            return true;   /* libmilter: all addresses */
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
    }
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

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

    if (lb >= 64 || la >= 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof *prev);
    }
    return prev[lb];
}

/* A key that the user probably meant: same last part, or a near miss. */
static const char *key_suggest(const char *full)
{
    const char *last = strrchr(full, '.');
    last = last != NULL ? last + 1 : full;

    for (size_t i = 0; i < NKEYS; i++)
        if (edit_distance(full, keys[i].name) <= 2)
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
        if (!mw_cidr_set_add(set, v[i], why, sizeof why)) {
            config_setting_t *e = config_setting_type(s) == CONFIG_TYPE_STRING
                                      ? s : config_setting_get_elem(s, (unsigned)i);
            err_at(ld, e, "%s: bad network \"%s\": %s", k->name, v[i], why);
            ok = false;
        }
    }
    strlist_free(&v);
    if (!ok)
        mw_cidr_set_free(&set);
    return set;
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
                       k->type == KT_STRLIST || k->type == KT_CIDRLIST ? "a list" : "a value");
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
    if (ld->set[ifw] && !ld->set[im] && cfg->ndns_forwarders > 0)
        cfg->dns_mode = MW_DNS_MODE_FORWARD;
    if (cfg->dns_mode == MW_DNS_MODE_FORWARD && cfg->ndns_forwarders == 0 && !ld->bad[ifw])
        err_at(ld, ld->where[ld->set[im] ? im : ifw],
               "dns.mode \"forward\" needs at least one dns.forwarders entry");
    if (cfg->dns_mode != MW_DNS_MODE_FORWARD && cfg->ndns_forwarders > 0)
        err_at(ld, ld->where[ifw],
               "dns.forwarders are only used with dns.mode \"forward\" (dns.mode is \"%s\")",
               cfg->dns_mode == MW_DNS_MODE_RECURSIVE ? "recursive" : "resolv.conf");
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
    if (ov->log_stderr)
        cfg->log_target = MW_LOG_TO_STDERR;

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
    }
    if (ov->ninternal > 0) {
        mw_cidr_set *set = mw_cidr_set_new();
        for (size_t i = 0; i < ov->ninternal; i++)
            if (!mw_cidr_set_add(set, ov->internal[i], why, sizeof why))
                mw_config_errors_addf(ld->errs, "command line: --internal \"%s\": %s",
                                      ov->internal[i], why);
        mw_cidr_set_free(&cfg->internal_networks);
        cfg->internal_networks = set;
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

static void cross_checks(loader *ld)
{
    mw_config *cfg = ld->cfg;

    cfg->dns_resolv_conf = cfg->dns_mode == MW_DNS_MODE_RESOLV_CONF;
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
