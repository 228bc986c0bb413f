/*
 * policy.c - declarative policies: parse policies/NAME.conf, evaluate rules.
 *
 * Purpose
 *   A policy is an ordered list of rules (conditions -> action); the first
 *   rule whose conditions all hold decides.  The file format and matching
 *   rules are documented in policy.h and mailwarden.conf(5).
 *
 * Design notes
 *   - Parsing is strict and complete: unknown keys, unknown words, bad
 *     CIDRs, bad replies are all reported ("ORIGIN:LINE: message"), and a
 *     policy with any error is refused, never half-loaded.
 *   - Conditions are compiled at load (bit masks, CIDR sets), so evaluation
 *     allocates nothing and a loaded policy is safely shared by threads.
 *   - The shipped policies are compiled in (mw_embedded_policies, generated
 *     from policies/NAME.conf), so a missing policy_dir never leaves the daemon
 *     without them.
 *
 * See also: policy.h, policies/NAME.conf, docs/mailwarden.conf.5.
 */
#include "policy.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "strutil.h"

#define TRUST_ALL      0xFu
#define TRUST_OUTBOUND ((1u << MW_TRUST_AUTHENTICATED) | (1u << MW_TRUST_INTERNAL) | \
                        (1u << MW_TRUST_SUBMISSION))
#define POLICY_MAX_SIZE (1024 * 1024)
#define REPLY_MAX 450   /* an SMTP reply line is at most 512 octets with CRLF */
#define OVR_NONE  (1u << 31)   /* dmarc_override = [ "none" ]: no override flag set */

/* Placeholders a reply may use (session.c expands them; mailwarden.conf(5)
 * documents each, checked by test_core_config). */
static const char *const placeholders[] = {"spf_explanation", "sender_domain", "client_ip", "rule",
                                           "from_domain", "dmarc_policy"};

typedef struct rule {
    char        *name;
    unsigned     trust;        /* bit per mw_trust; TRUST_ALL when not given */
    unsigned     spf;          /* bit per mw_spf_result; 0 = not a condition */
    unsigned     helo_spf;
    char       **domains;      /* NULL = not a condition */
    size_t       ndomains;
    mw_cidr_set *network;      /* NULL = not a condition */
    mw_cidr_set *not_network;
    int          null_sender;  /* -1 = not a condition, else 0/1 */
    unsigned     dmarc;        /* bit per mw_dmarc_result; 0 = not a condition */
    unsigned     dmarc_disp;   /* bit per mw_dmarc_policy */
    unsigned     dmarc_pol;
    unsigned     dmarc_ovr;    /* MW_DMARC_OVR_* bits, OVR_NONE for "none" */
    unsigned     from_status;  /* bit per mw_from_status */
    char       **from_domains; /* NULL = not a condition */
    size_t       nfrom_domains;
    int          from_enforcing;   /* -1 = not a condition, else 0/1 */
    bool         rep_below_set, rep_above_set;
    double       rep_below, rep_above;   /* reputation score bounds (-1 .. 1) */
    int          rep_subject;            /* 0 ip, 1 net, 2 domain */
    unsigned     dkim;         /* bit per mw_dkim_result (NONE: unsigned); 0 = not a condition */
    char       **dkim_domains; /* passing d= globs; NULL = not a condition */
    size_t       ndkim_domains;
    int          signed_by_from;   /* -1 = not a condition, else 0/1 */
    unsigned     arc;          /* bit per mw_arc_result; 0 = not a condition */
    char       **recipients;   /* address globs; NULL = not a condition */
    size_t       nrecipients;
    char       **rcpt_domains; /* domain globs; NULL = not a condition */
    size_t       nrcpt_domains;
    int          rate_limited; /* -1 = not a condition, else 0/1 */
    int          list_mail;    /* -1 = not a condition, else 0/1 */
    mw_action    action;
    char        *reply;        /* NULL = the engine's default for the action */
} rule;

struct mw_policy {
    char     *name;
    char     *description;
    mw_action default_action;
    rule     *rules;
    size_t    nrules;
};

/* ---- names ------------------------------------------------------------------ */

static const char *const trust_names[] = {"inbound", "authenticated", "internal", "submission"};
static const char *const action_names[] = {"accept", "reject", "tempfail", "quarantine", "discard"};

const char *mw_trust_name(mw_trust t)
{
    return (unsigned)t < sizeof trust_names / sizeof trust_names[0] ? trust_names[t] : "unknown";
}

const char *mw_action_name(mw_action a)
{
    return (unsigned)a < sizeof action_names / sizeof action_names[0] ? action_names[a] : "unknown";
}

bool mw_action_parse(const char *s, mw_action *out)
{
    if (s == NULL)
        return false;
    for (size_t i = 0; i < sizeof action_names / sizeof action_names[0]; i++) {
        if (strcasecmp(s, action_names[i]) == 0) {
            *out = (mw_action)i;
            return true;
        }
    }
    return false;
}

/* ---- parse context ------------------------------------------------------------ */

typedef struct pctx {
    const char       *origin;
    mw_config_errors *errs;
    size_t            nerr0;
} pctx;

static void perr(pctx *c, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void perr(pctx *c, const config_setting_t *s, const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    mw_config_errors_addf(c->errs, "%s:%d: %s", c->origin,
                          s != NULL ? (int)config_setting_source_line(s) : 0, mw_buf_cstr(&b));
    mw_buf_free(&b);
}

/*
 * Call fn for every string of a list setting (array, list or one string).
 * Reports non-strings and empty lists; returns false if anything was bad
 * (fn reports its own problems and returns false too).
 */
typedef bool (*elem_fn)(pctx *c, const config_setting_t *e, const char *s, void *arg);

static bool each_string(pctx *c, const config_setting_t *s, const char *key, elem_fn fn, void *arg)
{
    int t = config_setting_type(s);
    bool ok = true;

    if (t == CONFIG_TYPE_STRING)
        return fn(c, s, config_setting_get_string(s), arg);
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
        perr(c, s, "%s: expected a list of strings [ \"...\", ... ]", key);
        return false;
    }
    if (config_setting_length(s) == 0) {
        perr(c, s, "%s: empty list (the rule could never match; remove the key instead)", key);
        return false;
    }
    for (int i = 0; i < config_setting_length(s); i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *str = config_setting_get_string(e);
        if (str == NULL) {
            perr(c, e, "%s: element %d is not a string", key, i + 1);
            ok = false;
        } else if (!fn(c, e, str, arg)) {
            ok = false;
        }
    }
    return ok;
}

static bool add_trust(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;

    if (strcasecmp(s, "any") == 0) {
        *mask |= TRUST_ALL;
        return true;
    }
    if (strcasecmp(s, "outbound") == 0) {
        *mask |= TRUST_OUTBOUND;
        return true;
    }
    for (size_t i = 0; i < sizeof trust_names / sizeof trust_names[0]; i++) {
        if (strcasecmp(s, trust_names[i]) == 0) {
            *mask |= 1u << i;
            return true;
        }
    }
    perr(c, e, "trust: unknown trust class \"%s\" (inbound, authenticated, internal, "
               "submission, outbound, any)", s);
    return false;
}

static bool add_result(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;
    mw_spf_result r;

    if (!mw_spf_result_parse(s, &r)) {
        perr(c, e, "unknown SPF result \"%s\" (none, neutral, pass, fail, softfail, "
                   "temperror, permerror)", s);
        return false;
    }
    *mask |= 1u << r;
    return true;
}

struct strvec {
    char      **v;
    size_t      n;
    const char *key;
};

static bool add_domain(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    struct strvec *sv = arg;

    if (*s == '\0' || strchr(s, '@') != NULL || strchr(s, ' ') != NULL) {
        perr(c, e, "%s: \"%s\" is not a domain pattern (e.g. \"example.com\", "
                   "\"*.example.com\")", sv->key, s);
        return false;
    }
    sv->v = mw_reallocarray(sv->v, sv->n + 2, sizeof *sv->v);
    sv->v[sv->n++] = mw_strdup(s);
    sv->v[sv->n] = NULL;
    return true;
}

static bool add_cidr(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    mw_cidr_set *set = arg;
    char why[160];

    if (!mw_cidr_set_add(set, s, why, sizeof why)) {
        perr(c, e, "bad network \"%s\": %s", s, why);
        return false;
    }
    return true;
}

static bool add_dmarc_result(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;
    mw_dmarc_result r;

    if (!mw_dmarc_result_parse(s, &r)) {
        perr(c, e, "dmarc: unknown DMARC result \"%s\" (none, pass, fail, temperror, permerror)", s);
        return false;
    }
    *mask |= 1u << r;
    return true;
}

static bool add_dkim_result(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;

    for (int r = MW_DKIM_NONE; r <= MW_DKIM_PERMERROR; r++) {
        if (strcasecmp(s, mw_dkim_result_name((mw_dkim_result)r)) == 0) {
            *mask |= 1u << r;
            return true;
        }
    }
    perr(c, e, "dkim: unknown DKIM result \"%s\" (none, pass, fail, neutral, policy, temperror, permerror)", s);
    return false;
}

static bool add_arc_result(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;

    for (int r = MW_ARC_NONE; r <= MW_ARC_FAIL; r++) {
        if (strcasecmp(s, mw_arc_result_name((mw_arc_result)r)) == 0) {
            *mask |= 1u << r;
            return true;
        }
    }
    perr(c, e, "arc: unknown ARC result \"%s\" (none, pass, fail)", s);
    return false;
}

/* An address pattern: "local@domain", "*@domain", "local@*.domain". */
static bool add_address(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    struct strvec *sv = arg;
    const char *at = strchr(s, '@');

    if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL || strchr(s, ' ') != NULL) {
        perr(c, e, "%s: \"%s\" is not an address pattern (e.g. \"billing@example.com\", "
                   "\"*@example.com\")", sv->key, s);
        return false;
    }
    sv->v = mw_reallocarray(sv->v, sv->n + 2, sizeof *sv->v);
    sv->v[sv->n++] = mw_strdup(s);
    sv->v[sv->n] = NULL;
    return true;
}

static bool add_dmarc_policy(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;
    mw_dmarc_policy p;

    if (!mw_dmarc_policy_parse(s, &p)) {
        perr(c, e, "unknown DMARC policy \"%s\" (none, quarantine, reject)", s);
        return false;
    }
    *mask |= 1u << p;
    return true;
}

static const struct { const char *name; unsigned bit; } ovr_names[] = {
    {"never_reject", MW_DMARC_OVR_NEVER_REJECT}, {"always_enforce", MW_DMARC_OVR_ALWAYS_ENFORCE},
    {"allow_network", MW_DMARC_OVR_ALLOW_NETWORK}, {"mailing_list", MW_DMARC_OVR_MAILING_LIST},
    {"forwarder", MW_DMARC_OVR_FORWARDER}, {"trusted_arc", MW_DMARC_OVR_TRUSTED_ARC}, {"none", OVR_NONE},
};

static bool add_override(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;

    for (size_t i = 0; i < sizeof ovr_names / sizeof ovr_names[0]; i++) {
        if (strcasecmp(s, ovr_names[i].name) == 0) {
            *mask |= ovr_names[i].bit;
            return true;
        }
    }
    perr(c, e, "dmarc_override: unknown override \"%s\" (never_reject, always_enforce, "
               "allow_network, mailing_list, forwarder, trusted_arc, none)", s);
    return false;
}

static bool add_from_status(pctx *c, const config_setting_t *e, const char *s, void *arg)
{
    unsigned *mask = arg;

    for (unsigned i = MW_FROM_OK; i <= MW_FROM_UNPARSABLE; i++) {
        if (strcasecmp(s, mw_from_status_name((mw_from_status)i)) == 0) {
            *mask |= 1u << i;
            return true;
        }
    }
    perr(c, e, "from_status: unknown status \"%s\" (ok, empty, multiple, nodomain, unparsable)", s);
    return false;
}

/* RFC 3463 subject/detail: "0" or 1..3 digits without a leading zero. */
static const char *esc_number(const char *p)
{
    if (*p == '0')
        return isdigit((unsigned char)p[1]) ? NULL : p + 1;
    for (int i = 0; i < 3; i++) {
        if (!isdigit((unsigned char)*p))
            return i == 0 ? NULL : p;
        p++;
    }
    return isdigit((unsigned char)*p) ? NULL : p;
}

static bool reply_valid(const char *r, mw_action a, char *why, size_t whylen)
{
    char cls = a == MW_ACTION_REJECT ? '5' : '4';
    const char *p;

#define BAD(...) (snprintf(why, whylen, __VA_ARGS__), false)
    if (strlen(r) > REPLY_MAX)
        return BAD("reply is longer than %d characters", REPLY_MAX);
    for (p = r; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            return BAD("reply must be printable ASCII on one line");
    if (!isdigit((unsigned char)r[0]) || !isdigit((unsigned char)r[1]) ||
        !isdigit((unsigned char)r[2]) || (r[3] != '\0' && r[3] != ' '))
        return BAD("reply must start with a three-digit SMTP code (\"%c50 ...\")", cls);
    if (r[0] != cls)
        return BAD("a %s reply needs a %cxx code, not %.3s", mw_action_name(a), cls, r);
    if (r[1] > '5')
        return BAD("%.3s is not an SMTP reply code", r);
    p = r + 3;
    if (*p == ' ' && isdigit((unsigned char)p[1])) {
        const char *q = p + 1;
        if (*q != cls || q[1] != '.')
            return BAD("enhanced status code must be %c.X.Y to match %.3s", cls, r);
        q = esc_number(q + 2);
        if (q == NULL || *q != '.' || (q = esc_number(q + 1)) == NULL || (*q != '\0' && *q != ' '))
            return BAD("malformed enhanced status code (expected %c.X.Y, e.g. %c.7.1)", cls, cls);
    }
    for (p = r; *p != '\0'; p++) {
        if (*p != '%')
            continue;
        if (p[1] == '%') {
            p++;
            continue;
        }
        bool known = false;
        if (p[1] == '{') {
            const char *end = strchr(p, '}');
            for (size_t i = 0; end != NULL && i < sizeof placeholders / sizeof placeholders[0]; i++) {
                size_t len = strlen(placeholders[i]);
                if ((size_t)(end - p - 2) == len && strncmp(p + 2, placeholders[i], len) == 0)
                    known = true;
            }
            if (known) {
                p = end;
                continue;
            }
        }
        return BAD("unknown placeholder at \"%.20s\" (%%{spf_explanation}, %%{sender_domain}, "
                   "%%{client_ip}, %%{rule}, %%{from_domain}, %%{dmarc_policy}; write %%%% for a "
                   "literal %%)", p);
    }
    return true;
#undef BAD
}

bool mw_policy_reply_valid(const char *reply, mw_action a, char *why, size_t whylen)
{
    if (reply == NULL || (a != MW_ACTION_REJECT && a != MW_ACTION_TEMPFAIL)) {
        snprintf(why, whylen, "a reply is only used with action reject or tempfail");
        return false;
    }
    return reply_valid(reply, a, why, whylen);
}

static bool name_valid(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && strchr("-_.", *s) == NULL)
            return false;
    return true;
}

static void rule_free(rule *r)
{
    free(r->name);
    for (size_t i = 0; i < r->ndomains; i++)
        free(r->domains[i]);
    free(r->domains);
    for (size_t i = 0; i < r->nfrom_domains; i++)
        free(r->from_domains[i]);
    free(r->from_domains);
    char **const lists[] = {r->dkim_domains, r->recipients, r->rcpt_domains};
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        for (size_t i = 0; lists[k] != NULL && lists[k][i] != NULL; i++)
            free(lists[k][i]);
        free(lists[k]);
    }
    mw_cidr_set_free(&r->network);
    mw_cidr_set_free(&r->not_network);
    free(r->reply);
}

/* Every key a rule may have; mailwarden.conf(5) documents each (a unit test
 * checks the man page against mw_policy_rule_key()). */
static const char *const rule_keys[] = {"name", "trust", "spf", "helo_spf", "sender_domain",
                                        "network", "not_network", "null_sender", "dmarc",
                                        "dmarc_disposition", "dmarc_policy", "dmarc_override",
                                        "from_status", "from_domain", "from_enforcing", "reputation_below",
                                        "reputation_above", "reputation_subject", "dkim", "dkim_domain",
                                        "signed_by_from", "arc", "recipient", "recipient_domain",
                                        "rate_limited", "list_mail", "action", "reply", NULL};

const char *mw_policy_placeholder(size_t i)
{
    return i < sizeof placeholders / sizeof placeholders[0] ? placeholders[i] : NULL;
}

const char *mw_policy_rule_key(size_t i)
{
    return i < sizeof rule_keys / sizeof rule_keys[0] - 1 ? rule_keys[i] : NULL;
}

/* A true/false condition: -1 when absent. */
static int get_bool(pctx *c, const config_setting_t *g, const char *key, const char *label)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (s == NULL)
        return -1;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        perr(c, s, "%s: %s: expected true or false", label, key);
        return -1;
    }
    return config_setting_get_bool(s) ? 1 : 0;
}

/* A list of patterns; a list whose every entry is bad stays a condition
 * that never matches. */
static char **get_patterns(pctx *c, const config_setting_t *g, const char *key,
                           bool (*add)(pctx *, const config_setting_t *, const char *, void *), size_t *n)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (s == NULL)
        return NULL;
    struct strvec sv = {NULL, 0, key};
    each_string(c, s, key, add, &sv);
    *n = sv.n;
    return sv.v != NULL ? sv.v : mw_calloc(1, sizeof *sv.v);
}

static bool key_listed(const char *const *list, const char *k)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, k) == 0)
            return true;
    return false;
}

static const char *get_string(pctx *c, const config_setting_t *grp, const char *key,
                              const config_setting_t **where)
{
    const config_setting_t *s = config_setting_get_member(grp, key);

    *where = s;
    if (s == NULL)
        return NULL;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        perr(c, s, "%s: expected a string", key);
        return NULL;
    }
    return config_setting_get_string(s);
}

/* Parse one rule group into r; errors reported.  idx is 1-based. */
static void rule_parse(pctx *c, const config_setting_t *g, int idx, rule *r)
{
    const config_setting_t *s;
    const char *str;
    char label[96];

    memset(r, 0, sizeof *r);
    r->trust = TRUST_ALL;
    r->null_sender = -1;
    r->from_enforcing = -1;

    r->signed_by_from = r->rate_limited = r->list_mail = -1;

    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        perr(c, g, "rules: element %d must be a group { name = ...; action = ...; }", idx);
        return;
    }
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        if (!key_listed(rule_keys, config_setting_name(m))) {
            mw_buf known = MW_BUF_INIT;
            for (size_t k = 0; rule_keys[k] != NULL; k++)
                mw_buf_printf(&known, "%s%s", k ? ", " : "", rule_keys[k]);
            perr(c, m, "rule %d: unknown key \"%s\" (%s)", idx, config_setting_name(m), mw_buf_cstr(&known));
            mw_buf_free(&known);
        }
    }

    str = get_string(c, g, "name", &s);
    if (str != NULL && (!name_valid(str) || strcmp(str, "default") == 0))
        perr(c, s, "rule %d: name \"%s\" must be letters, digits, '-', '_', '.' and not \"default\"",
             idx, str);
    else if (str != NULL)
        r->name = mw_strdup(str);
    else if (s == NULL)
        perr(c, g, "rule %d: missing name", idx);
    snprintf(label, sizeof label, "rule \"%s\"", r->name != NULL ? r->name : "?");

    if ((s = config_setting_get_member(g, "trust")) != NULL) {
        r->trust = 0;
        each_string(c, s, "trust", add_trust, &r->trust);
    }
    if ((s = config_setting_get_member(g, "spf")) != NULL)
        each_string(c, s, "spf", add_result, &r->spf);
    if ((s = config_setting_get_member(g, "helo_spf")) != NULL)
        each_string(c, s, "helo_spf", add_result, &r->helo_spf);
    if ((s = config_setting_get_member(g, "sender_domain")) != NULL) {
        struct strvec sv = {NULL, 0, "sender_domain"};
        each_string(c, s, "sender_domain", add_domain, &sv);
        r->domains = sv.v;
        r->ndomains = sv.n;
        if (r->domains == NULL)   /* all bad: keep the condition (never matches) */
            r->domains = mw_calloc(1, sizeof *r->domains);
    }
    if ((s = config_setting_get_member(g, "network")) != NULL) {
        r->network = mw_cidr_set_new();
        each_string(c, s, "network", add_cidr, r->network);
    }
    if ((s = config_setting_get_member(g, "not_network")) != NULL) {
        r->not_network = mw_cidr_set_new();
        each_string(c, s, "not_network", add_cidr, r->not_network);
    }
    if ((s = config_setting_get_member(g, "null_sender")) != NULL) {
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
            perr(c, s, "%s: null_sender: expected true or false", label);
        else
            r->null_sender = config_setting_get_bool(s) ? 1 : 0;
    }
    if ((s = config_setting_get_member(g, "dmarc")) != NULL)
        each_string(c, s, "dmarc", add_dmarc_result, &r->dmarc);
    if ((s = config_setting_get_member(g, "dmarc_disposition")) != NULL)
        each_string(c, s, "dmarc_disposition", add_dmarc_policy, &r->dmarc_disp);
    if ((s = config_setting_get_member(g, "dmarc_policy")) != NULL)
        each_string(c, s, "dmarc_policy", add_dmarc_policy, &r->dmarc_pol);
    if ((s = config_setting_get_member(g, "dmarc_override")) != NULL)
        each_string(c, s, "dmarc_override", add_override, &r->dmarc_ovr);
    if ((s = config_setting_get_member(g, "from_status")) != NULL)
        each_string(c, s, "from_status", add_from_status, &r->from_status);
    if ((s = config_setting_get_member(g, "from_domain")) != NULL) {
        struct strvec sv = {NULL, 0, "from_domain"};
        each_string(c, s, "from_domain", add_domain, &sv);
        r->from_domains = sv.v;
        r->nfrom_domains = sv.n;
        if (r->from_domains == NULL)   /* all bad: keep the condition (never matches) */
            r->from_domains = mw_calloc(1, sizeof *r->from_domains);
    }
    if ((s = config_setting_get_member(g, "from_enforcing")) != NULL) {
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
            perr(c, s, "%s: from_enforcing: expected true or false", label);
        else
            r->from_enforcing = config_setting_get_bool(s) ? 1 : 0;
    }

    static const char *const rep_bounds[] = {"reputation_below", "reputation_above"};
    for (int k = 0; k < 2; k++) {
        if ((s = config_setting_get_member(g, rep_bounds[k])) == NULL)
            continue;
        int t = config_setting_type(s);
        double v = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                   : t == CONFIG_TYPE_INT ? (double)config_setting_get_int(s) : -9;
        if ((t != CONFIG_TYPE_FLOAT && t != CONFIG_TYPE_INT) || v < -1 || v > 1) {
            perr(c, s, "%s: %s: expected a number from -1.0 to 1.0", label, rep_bounds[k]);
            continue;
        }
        if (k == 0) {
            r->rep_below_set = true;
            r->rep_below = v;
        } else {
            r->rep_above_set = true;
            r->rep_above = v;
        }
    }
    str = get_string(c, g, "reputation_subject", &s);
    if (str != NULL) {
        if (strcmp(str, "ip") == 0)
            r->rep_subject = 0;
        else if (strcmp(str, "net") == 0)
            r->rep_subject = 1;
        else if (strcmp(str, "domain") == 0)
            r->rep_subject = 2;
        else
            perr(c, s, "%s: reputation_subject: \"%s\" (ip, net or domain)", label, str);
    }

    if ((s = config_setting_get_member(g, "dkim")) != NULL)
        each_string(c, s, "dkim", add_dkim_result, &r->dkim);
    r->dkim_domains = get_patterns(c, g, "dkim_domain", add_domain, &r->ndkim_domains);
    r->signed_by_from = get_bool(c, g, "signed_by_from", label);
    if ((s = config_setting_get_member(g, "arc")) != NULL)
        each_string(c, s, "arc", add_arc_result, &r->arc);
    r->recipients = get_patterns(c, g, "recipient", add_address, &r->nrecipients);
    r->rcpt_domains = get_patterns(c, g, "recipient_domain", add_domain, &r->nrcpt_domains);
    r->rate_limited = get_bool(c, g, "rate_limited", label);
    r->list_mail = get_bool(c, g, "list_mail", label);

    str = get_string(c, g, "action", &s);
    bool action_ok = str != NULL && mw_action_parse(str, &r->action);
    if (str != NULL && !action_ok)
        perr(c, s, "%s: unknown action \"%s\" (accept, reject, tempfail, quarantine, discard)",
             label, str);
    else if (str == NULL && s == NULL)
        perr(c, g, "%s: missing action", label);

    str = get_string(c, g, "reply", &s);
    if (str != NULL && action_ok) {   /* a bad action is reported already */
        char why[200];
        if (r->action != MW_ACTION_REJECT && r->action != MW_ACTION_TEMPFAIL) {
            perr(c, s, "%s: reply is only used with action reject or tempfail", label);
        } else if (!reply_valid(str, r->action, why, sizeof why)) {
            perr(c, s, "%s: %s", label, why);
        } else {
            r->reply = mw_strdup(str);
        }
    }
}

static const char *const top_keys[] = {"description", "default_action", "rules", NULL};

static void policy_walk(pctx *c, config_t *lc, mw_policy *p)
{
    const config_setting_t *root = config_root_setting(lc), *s;
    const char *str;

    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *m = config_setting_get_elem(root, (unsigned)i);
        if (!key_listed(top_keys, config_setting_name(m)))
            perr(c, m, "unknown key \"%s\" (description, default_action, rules)",
                 config_setting_name(m));
    }
    str = get_string(c, root, "description", &s);
    p->description = mw_strdup(str != NULL ? str : "");
    str = get_string(c, root, "default_action", &s);
    if (str != NULL && !mw_action_parse(str, &p->default_action))
        perr(c, s, "default_action: unknown action \"%s\" (accept, reject, tempfail, "
                   "quarantine, discard)", str);

    s = config_setting_get_member(root, "rules");
    if (s == NULL)
        return;
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        perr(c, s, "rules: expected a list of groups: rules = ( { ... }, { ... } );");
        return;
    }
    p->nrules = (size_t)config_setting_length(s);
    p->rules = mw_calloc(p->nrules + 1, sizeof *p->rules);
    for (size_t i = 0; i < p->nrules; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        rule_parse(c, g, (int)i + 1, &p->rules[i]);
        for (size_t j = 0; j < i && p->rules[i].name != NULL; j++)
            if (p->rules[j].name != NULL && strcmp(p->rules[j].name, p->rules[i].name) == 0)
                perr(c, config_setting_get_member(g, "name"), "duplicate rule name \"%s\"",
                     p->rules[i].name);
    }
}

/* The name a policy is known by: the base name of origin without ".conf". */
static char *name_from_origin(const char *origin)
{
    const char *b = strrchr(origin, '/');
    size_t len;

    b = b != NULL ? b + 1 : origin;
    len = strlen(b);
    if (len > 5 && strcmp(b + len - 5, ".conf") == 0)
        len -= 5;
    return mw_strndup(b, len);
}

static mw_policy *parse_named(const char *text, const char *origin, const char *name,
                              mw_config_errors *errs)
{
    pctx c = {origin, errs, errs->n};
    config_t lc;
    mw_policy *p = mw_calloc(1, sizeof *p);

    p->name = mw_strdup(name);
    p->default_action = MW_ACTION_ACCEPT;
    config_init(&lc);
    if (config_read_string(&lc, text) != CONFIG_TRUE)
        mw_config_errors_addf(errs, "%s:%d: %s", origin, config_error_line(&lc), config_error_text(&lc));
    else
        policy_walk(&c, &lc, p);
    config_destroy(&lc);
    if (errs->n > c.nerr0)
        mw_policy_free(&p);
    return p;
}

mw_policy *mw_policy_parse(const char *text, const char *origin, mw_config_errors *errs)
{
    char *name = name_from_origin(origin);
    mw_policy *p = parse_named(text, origin, name, errs);

    free(name);
    return p;
}

void mw_policy_free(mw_policy **pp)
{
    mw_policy *p;

    if (pp == NULL || *pp == NULL)
        return;
    p = *pp;
    for (size_t i = 0; i < p->nrules; i++)
        rule_free(&p->rules[i]);
    free(p->rules);
    free(p->name);
    free(p->description);
    MW_FREE(pp);
}

const char *mw_policy_name(const mw_policy *p) { return p->name; }
const char *mw_policy_description(const mw_policy *p) { return p->description; }

/* ---- loading by name -------------------------------------------------------------- */

/* Read a whole file (at most POLICY_MAX_SIZE).  NULL with errno on failure. */
static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    mw_buf b = MW_BUF_INIT;
    char chunk[4096];
    size_t n;

    if (fp == NULL)
        return NULL;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        mw_buf_append(&b, chunk, n);
        if (b.len > POLICY_MAX_SIZE) {
            fclose(fp);
            mw_buf_free(&b);
            errno = EFBIG;
            return NULL;
        }
    }
    if (ferror(fp)) {
        int e = errno;
        fclose(fp);
        mw_buf_free(&b);
        errno = e != 0 ? e : EIO;
        return NULL;
    }
    fclose(fp);
    if (b.data == NULL)
        mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

static mw_policy *load_path(const char *path, mw_config_errors *errs)
{
    char *text = read_file(path);
    mw_policy *p;

    if (text == NULL) {
        mw_config_errors_addf(errs, "%s: cannot read policy: %s", path, strerror(errno));
        return NULL;
    }
    p = mw_policy_parse(text, path, errs);
    free(text);
    return p;
}

mw_policy *mw_policy_load(const char *name, const char *policy_dir, mw_config_errors *errs)
{
    return mw_policy_load_at(name, policy_dir, NULL, errs);
}

mw_policy *mw_policy_load_at(const char *name, const char *policy_dir, const char *where,
                             mw_config_errors *errs)
{
    const char *o = where != NULL ? where : "", *sep = where != NULL ? ": " : "";
    if (name == NULL || *name == '\0') {
        mw_config_errors_addf(errs, "%s%spolicy: empty policy name", o, sep);
        return NULL;
    }
    if (strchr(name, '/') != NULL)
        return load_path(name, errs);

    if (policy_dir != NULL && *policy_dir != '\0') {
        mw_buf path = MW_BUF_INIT;
        mw_buf_printf(&path, "%s/%s.conf", policy_dir, name);
        char *text = read_file(mw_buf_cstr(&path));
        if (text != NULL || errno != ENOENT) {
            mw_policy *p = NULL;
            if (text == NULL)
                mw_config_errors_addf(errs, "%s: cannot read policy: %s", mw_buf_cstr(&path),
                                      strerror(errno));
            else
                p = parse_named(text, mw_buf_cstr(&path), name, errs);
            free(text);
            mw_buf_free(&path);
            return p;
        }
        mw_buf_free(&path);
    }

    for (const struct mw_embedded_policy *e = mw_embedded_policies; e->name != NULL; e++) {
        if (strcmp(e->name, name) == 0) {
            mw_buf origin = MW_BUF_INIT;
            mw_buf_printf(&origin, "built-in:%s.conf", name);
            mw_policy *p = parse_named(e->text, mw_buf_cstr(&origin), name, errs);
            mw_buf_free(&origin);
            return p;
        }
    }

    mw_buf known = MW_BUF_INIT;
    const char *hint = NULL;
    size_t best = 3;   /* suggest only a near miss: at most 2 edits */
    for (const struct mw_embedded_policy *e = mw_embedded_policies; e->name != NULL; e++) {
        mw_buf_printf(&known, "%s%s", known.len ? ", " : "", e->name);
        size_t d = mw_str_edit_distance(name, e->name);
        if (d < best) {
            best = d;
            hint = e->name;
        }
    }
    mw_buf hb = MW_BUF_INIT;
    if (hint != NULL)
        mw_buf_printf(&hb, "did you mean \"%s\"? ", hint);
    mw_config_errors_addf(errs, "%s%spolicy \"%s\": no %s/%s.conf and no built-in policy of that "
                                "name (%sbuilt-in: %s)", o, sep, name,
                          policy_dir != NULL && *policy_dir ? policy_dir : "(no policy_dir)",
                          name, mw_buf_cstr(&hb), mw_buf_cstr(&known));
    mw_buf_free(&hb);
    mw_buf_free(&known);
    return NULL;
}

/* ---- evaluation ------------------------------------------------------------------ */

static bool domain_matches(char *const *globs, size_t n, const char *domain)
{
    char buf[256];
    size_t len;

    if (domain == NULL || *domain == '\0')
        return false;
    len = strlen(domain);
    if (domain[len - 1] == '.' && len < sizeof buf) {   /* "example.com." */
        memcpy(buf, domain, len - 1);
        buf[len - 1] = '\0';
        domain = buf;
    }
    for (size_t i = 0; i < n; i++)
        if (mw_glob_match(globs[i], domain))
            return true;
    return false;
}

static bool rule_matches(const rule *r, const mw_policy_facts *f)
{
    /* Out-of-range enums would be our own bug; never shift by them. */
    if ((unsigned)f->trust > MW_TRUST_SUBMISSION || (unsigned)f->spf > MW_SPF_PERMERROR ||
        (unsigned)f->helo_spf > MW_SPF_PERMERROR || (unsigned)f->dmarc > MW_DMARC_PERMERROR ||
        (unsigned)f->dmarc_policy > MW_DMARC_P_REJECT ||
        (unsigned)f->dmarc_disposition > MW_DMARC_P_REJECT ||
        (unsigned)f->from_status > MW_FROM_UNPARSABLE)
        mw_panic("policy: bad facts (trust %d, spf %d, helo_spf %d, dmarc %d/%d/%d, from %d)",
                 (int)f->trust, (int)f->spf, (int)f->helo_spf, (int)f->dmarc,
                 (int)f->dmarc_policy, (int)f->dmarc_disposition, (int)f->from_status);
    if (!(r->trust & (1u << f->trust)))
        return false;
    if (r->spf != 0 && !(f->spf_done && (r->spf & (1u << f->spf))))
        return false;
    if (r->helo_spf != 0 && !(f->helo_spf_done && (r->helo_spf & (1u << f->helo_spf))))
        return false;
    if (r->null_sender >= 0 && (r->null_sender != 0) != f->null_sender)
        return false;
    if (r->domains != NULL && !domain_matches(r->domains, r->ndomains, f->sender_domain))
        return false;
    if (r->dmarc != 0 && !(f->dmarc_done && (r->dmarc & (1u << f->dmarc))))
        return false;
    /* UNSPEC is bit 0, which no word sets: an unspecified policy never matches. */
    if (r->dmarc_disp != 0 && !(f->dmarc_done && (r->dmarc_disp & (1u << f->dmarc_disposition))))
        return false;
    if (r->dmarc_pol != 0 && !(f->dmarc_done && (r->dmarc_pol & (1u << f->dmarc_policy))))
        return false;
    if (r->dmarc_ovr != 0) {
        unsigned set = f->dmarc_override & ~OVR_NONE;
        if (!f->dmarc_done || !((r->dmarc_ovr & set) || ((r->dmarc_ovr & OVR_NONE) && set == 0)))
            return false;
    }
    if (r->from_status != 0 && !(f->from_done && (r->from_status & (1u << f->from_status))))
        return false;
    if (r->from_domains != NULL && !domain_matches(r->from_domains, r->nfrom_domains, f->from_domain))
        return false;
    if (r->from_enforcing >= 0 && (r->from_enforcing != 0) != f->from_enforcing)
        return false;
    if (r->rep_below_set || r->rep_above_set) {
        /* a reputation bound holds only for a known score (min_samples met) */
        const mw_policy_rep *rs = r->rep_subject == 0 ? &f->rep_ip : r->rep_subject == 1 ? &f->rep_net : &f->rep_domain;
        if (!rs->known)
            return false;
        if (r->rep_below_set && !(rs->score < r->rep_below))
            return false;
        if (r->rep_above_set && !(rs->score > r->rep_above))
            return false;
    }
    if (r->dkim != 0 && !(f->dkim_done && (r->dkim & f->dkim_results)))
        return false;
    if (r->dkim_domains != NULL) {
        bool any = false;
        for (size_t i = 0; f->dkim_done && i < f->ndkim_pass && !any; i++)
            any = domain_matches(r->dkim_domains, r->ndkim_domains, f->dkim_pass_domains[i]);
        if (!any)
            return false;
    }
    if (r->signed_by_from >= 0 && (!f->dkim_done || (r->signed_by_from != 0) != f->signed_by_from))
        return false;
    if (r->arc != 0 && !(f->arc_done && (r->arc & (1u << f->arc))))
        return false;
    if (r->recipients != NULL || r->rcpt_domains != NULL) {
        bool any = false;
        for (size_t i = 0; i < f->nrcpts && !any; i++) {
            const char *a = f->rcpts[i];
            if (r->recipients != NULL)
                for (size_t k = 0; k < r->nrecipients && !any; k++)
                    any = mw_glob_match(r->recipients[k], a);
            if (r->rcpt_domains != NULL && !any)
                any = domain_matches(r->rcpt_domains, r->nrcpt_domains, mw_addr_domain(a));
        }
        if (!any)
            return false;
    }
    if (r->rate_limited >= 0 && (r->rate_limited != 0) != f->rate_limited)
        return false;
    if (r->list_mail >= 0 && (r->list_mail != 0) != f->list_mail)
        return false;
    if (r->network != NULL && (f->client == NULL || !mw_cidr_set_contains(r->network, f->client)))
        return false;
    if (r->not_network != NULL && f->client != NULL && mw_cidr_set_contains(r->not_network, f->client))
        return false;
    return true;
}

void mw_policy_eval(const mw_policy *p, const mw_policy_facts *f, mw_policy_decision *out)
{
    for (size_t i = 0; i < p->nrules; i++) {
        const rule *r = &p->rules[i];
        if (rule_matches(r, f)) {
            out->action = r->action;
            out->rule = r->name;
            out->reply = r->reply;
            return;
        }
    }
    out->action = p->default_action;
    out->rule = "default";
    out->reply = NULL;
}
