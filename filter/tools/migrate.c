/*
 * migrate.c - `mailwarden migrate`: turn an OpenDKIM and an OpenDMARC
 * configuration into one mailwarden.conf.
 *
 *   mailwarden migrate [--opendkim FILE] [--opendmarc FILE]
 *                      [--postfix-main-cf FILE] [--history-dir DIR]
 *                      [-o FILE] [--force]
 *
 * Every setting of the old files ends up in the new one as a comment that
 * says what was carried, what changed and why, or why it was not carried
 * ("NOT CARRIED", also summed up at the top of the file and on stderr).
 * Behaviour is kept where mailwarden can express it: OpenDMARC's default
 * RejectFailures false becomes policy = "monitor-only".  The written file
 * is then checked by config-test (the same function, so the key files and
 * history.dir are checked as the daemon's user).  With --postfix-main-cf,
 * the smtpd_milters (and non_smtpd_milters) line that replaces both
 * milters by mailwarden is printed.
 *
 * Exit: 0 written and valid; 1 written but config-test failed; 2 usage or
 * unreadable input (nothing written).  An existing output file is not
 * overwritten without --force.
 *
 * See docs/migrating.md for the key-by-key table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "cidr.h"
#include "migrate.h"
#include "strutil.h"
#include "tools.h"

/* What the mapping learnt that later steps need. */
struct mig {
    mw_mig_out *o;
    const char *history_dir;
    char       *socket;        /* mailwarden's milter socket (libconfig-unquoted) */
    char       *old_dkim_sock; /* Postfix spellings of the old milters, "" when unknown */
    char       *old_dmarc_sock;
};

/* mw_mig_set with value v as a quoted string. */
static void set_str(mw_mig_out *o, const char *g, const char *k, const char *v, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void set_str(mw_mig_out *o, const char *g, const char *k, const char *v, const char *fmt, ...)
{
    mw_buf c = MW_BUF_INIT;
    va_list ap;
    char *q = mw_mig_quote(v);

    va_start(ap, fmt);
    mw_buf_vprintf(&c, fmt, ap);
    va_end(ap);
    mw_mig_set(o, g, k, q, "%s", mw_buf_cstr(&c));
    free(q);
    mw_buf_free(&c);
}

/* The OpenDMARC copy of a setting OpenDKIM's file also has: say which one is used. */
static void dup_note(mw_mig_out *o, const mw_mig_kv *used, const mw_mig_kv *other)
{
    if (used != NULL && other != NULL && used != other)
        mw_mig_note(o, "", "%s %s (%s): the same setting as %s (%s), which is the one carried", other->key,
                    other->val, other->where, used->val, used->where);
}

/* ---- host lists ------------------------------------------------------------------ */

/* InternalHosts / IgnoreHosts: IPs, CIDRs and host names carried (names are
 * resolved by mailwarden at load and on reload), "localhost" as the
 * loopback networks.  A file whose every entry mailwarden reads is carried
 * as the same file ("file:PATH" list entry), so the postmaster keeps
 * editing it; else the entries are written inline and host-name patterns
 * and negations are reported. */
static void hosts(struct mig *m, mw_mig_kv *kv, const char *group, const char *key, const char *what)
{
    mw_mig_list l = {0}, nets = {0}, bad = {0};
    bool re;
    const char *path = NULL;
    char why[1200];
    size_t nnames = 0;

    if (!mw_mig_dataset(kv->val, &l, &re, &path, why, sizeof why)) {
        mw_mig_gap(m->o, group, "%s %s (%s): %s", kv->key, kv->val, kv->where, why);
        return;
    }
    mw_cidr_set *set = mw_cidr_set_new();
    for (size_t i = 0; i < l.n; i++) {
        char *e = l.v[i];
        e[strcspn(e, " \t")] = '\0';
        if (strcasecmp(e, "localhost") == 0) {
            mw_mig_list_add(&nets, "127.0.0.0/8");
            mw_mig_list_add(&nets, "::1/128");
        } else if (mw_cidr_set_add(set, e, NULL, 0)) {
            mw_mig_list_add(&nets, e);
        } else if (e[0] != '!' && e[0] != '.' && strchr(e, '*') == NULL && mw_domain_valid(e)) {
            mw_mig_list_add(&nets, e);   /* a host name: resolved at load */
            nnames++;
        } else
            mw_mig_list_add(&bad, e);
    }
    mw_cidr_set_free(&set);
    if (bad.n == 0 && path != NULL && path[0] == '/') {
        mw_buf f = MW_BUF_INIT;
        mw_buf_printf(&f, "file:%s", path);
        mw_mig_list fl = {0};
        mw_mig_list_add(&fl, mw_buf_cstr(&f));
        char *q = mw_mig_quote_list(&fl);
        mw_mig_set(m->o, group, key, q, "%s %s (%s): %s; carried, the same file (%zu entr%s: "
                   "addresses, networks and host names, which are resolved at start and on every "
                   "reload; a name that does not resolve stops the start with FILE:LINE)",
                   kv->key, kv->val, kv->where, what, l.n, l.n == 1 ? "y" : "ies");
        free(q);
        mw_mig_list_free(&fl);
        mw_buf_free(&f);
    } else {
        char *q = mw_mig_quote_list(&nets);
        mw_mig_set(m->o, group, key, q, "%s %s (%s): %s; the %zu address%s, network%s and host "
                   "name%s carried (\"localhost\" as 127.0.0.0/8 and ::1; %zu host name%s, resolved "
                   "at start and on every reload)", kv->key, kv->val, kv->where, what, nets.n,
                   nets.n == 1 ? "" : "es", nets.n == 1 ? "" : "s", nets.n == 1 ? "" : "s", nnames,
                   nnames == 1 ? "" : "s");
        free(q);
    }
    if (bad.n > 0) {
        mw_buf b = MW_BUF_INIT;
        for (size_t i = 0; i < bad.n; i++)
            mw_buf_printf(&b, "%s%s", i ? ", " : "", bad.v[i]);
        mw_mig_gap(m->o, group, "%s (%s): %zu entr%s that %s.%s cannot express (host-name patterns "
                   "match the client's PTR name, which mailwarden never trusts; negations): %s\n"
                   "List those hosts by name or address if they send mail through this host.",
                   kv->key, kv->where, bad.n, bad.n == 1 ? "y" : "ies", group, key, mw_buf_cstr(&b));
        mw_buf_free(&b);
    }
    mw_mig_list_free(&l);
    mw_mig_list_free(&nets);
    mw_mig_list_free(&bad);
}

/* ---- shared daemon settings ---------------------------------------------------------- */

/* An OpenDKIM/OpenDMARC socket as Postfix writes it in smtpd_milters. */
static char *postfix_spelling(const char *s)
{
    mw_buf b = MW_BUF_INIT;
    const char *at = strchr(s, '@');
    if (strncmp(s, "local:", 6) == 0 || strncmp(s, "unix:", 5) == 0) {
        const char *p = strchr(s, ':') + 1;
        if (strncmp(p, "/var/spool/postfix/", 19) == 0)
            p += 19;   /* smtpd runs chrooted there on Debian */
        mw_buf_printf(&b, "unix:%s", p);
    } else if ((strncmp(s, "inet:", 5) == 0 || strncmp(s, "inet6:", 6) == 0) && at != NULL) {
        const char *port = strchr(s, ':') + 1;
        mw_buf_printf(&b, "%s:%s:%.*s", s[4] == '6' ? "inet6" : "inet", at + 1, (int)(at - port), port);
    } else if (strncmp(s, "inet:", 5) == 0) {
        mw_buf_printf(&b, "inet:localhost:%s", s + 5);
    }
    return mw_buf_steal(&b);
}

static void socket_map(struct mig *m, mw_mig_kv *dk, mw_mig_kv *dm)
{
    mw_mig_kv *kv = dk != NULL ? dk : dm;
    char why[256];
    if (dk != NULL)
        m->old_dkim_sock = postfix_spelling(dk->val);
    if (dm != NULL)
        m->old_dmarc_sock = postfix_spelling(dm->val);
    if (kv == NULL)
        return;
    const char *v = kv->val;
    if (strncmp(v, "local:", 6) == 0 || strncmp(v, "unix:", 5) == 0) {
        const char *p = strchr(v, ':') + 1;
        bool chroot = strncmp(p, "/var/spool/postfix/", 19) == 0;
        m->socket = mw_strdup(chroot ? "unix:/var/spool/postfix/mailwarden/mailwarden.sock"
                                     : "unix:/run/mailwarden/mailwarden.sock");
        mw_buf c = MW_BUF_INIT;
        mw_buf_printf(&c, "Socket %s (%s): CHANGED to a socket of mailwarden's own (the old one lives "
                      "in %s's directory, and both can run side by side while you switch).\n"
                      "Create the directory, owned by the daemon's user (systemd: "
                      "RuntimeDirectory=mailwarden).", v, kv->where, dk != NULL ? "OpenDKIM" : "OpenDMARC");
        char *q = mw_mig_quote(m->socket);
        mw_mig_set(m->o, "", "socket", q, "%s", mw_buf_cstr(&c));
        free(q);
        mw_buf_free(&c);
    } else if (mw_config_socket_valid(v, why, sizeof why)) {
        m->socket = mw_strdup(v);
        set_str(m->o, "", "socket", v, "Socket %s (%s): carried (stop the old milter before "
                "starting mailwarden: they share the port)", v, kv->where);
    } else {
        mw_mig_gap(m->o, "", "Socket %s (%s): %s", v, kv->where, why);
    }
    if (dk != NULL && dm != NULL)
        mw_mig_note(m->o, "", "Socket %s (%s): OpenDMARC's socket is not needed, mailwarden does "
                    "DKIM and DMARC on one socket", dm->val, dm->where);
}

static void daemon_map(struct mig *m, mw_mig_conf *dkim, mw_mig_conf *dmarc)
{
    mw_mig_kv *udk = mw_mig_get(dkim, "UserID"), *udm = mw_mig_get(dmarc, "UserID");
    mw_mig_kv *u = udk != NULL ? udk : udm;
    socket_map(m, mw_mig_get(dkim, "Socket"), mw_mig_get(dmarc, "Socket"));
    if (u != NULL) {
        char *user = mw_strdup(u->val), *colon = strchr(user, ':');
        if (colon != NULL)
            *colon++ = '\0';
        set_str(m->o, "", "user", user, "UserID %s (%s): carried (the user that can read the DKIM "
                "keys)", u->val, u->where);
        if (colon != NULL)
            set_str(m->o, "", "group", colon, "UserID %s (%s): the group part", u->val, u->where);
        if (udk != NULL && udm != NULL && strcmp(udk->val, udm->val) != 0)
            mw_mig_note(m->o, "", "UserID %s (%s): OpenDMARC's user is not used; mailwarden runs "
                        "as OpenDKIM's", udm->val, udm->where);
        free(user);
    }
    mw_mig_kv *umask = mw_mig_get(dkim, "UMask"), *umask_dm = mw_mig_get(dmarc, "UMask");
    if (umask == NULL)
        umask = umask_dm;
    dup_note(m->o, umask, umask_dm);
    if (umask != NULL && m->socket != NULL && strncmp(m->socket, "unix:", 5) == 0) {
        char *end, mode[8];
        unsigned long um = strtoul(umask->val, &end, 8);
        if (*end == '\0' && um <= 0777) {
            snprintf(mode, sizeof mode, "0%03lo", 0666 & ~um);
            set_str(m->o, "", "socket_mode", mode, "UMask %s (%s): carried as the unix socket's "
                    "permissions (0666 less the mask)", umask->val, umask->where);
        }
    } else if (umask != NULL) {
        mw_mig_note(m->o, "", "UMask %s (%s): not needed (an inet socket has no permissions; "
                    "mailwarden creates its files with safe modes)", umask->val, umask->where);
    }
    mw_mig_kv *pid = mw_mig_get(dkim, "PidFile"), *pm = mw_mig_get(dmarc, "PidFile");
    if (pid != NULL)
        mw_mig_set(m->o, "", "pid_file", "\"/run/mailwarden/mailwarden.pid\"", "PidFile %s (%s): "
                   "CHANGED to mailwarden's own PID file (the old one belongs to OpenDKIM's init "
                   "script; systemd needs none: set \"\")", pid->val, pid->where);
    if (pm != NULL)
        mw_mig_note(m->o, "", "PidFile %s (%s): OpenDMARC's PID file, not needed", pm->val, pm->where);
    mw_mig_kv *sl = mw_mig_get(dkim, "Syslog"), *sm = mw_mig_get(dmarc, "Syslog");
    if (sl == NULL)
        sl = sm;
    dup_note(m->o, sl, sm);
    if (sl != NULL) {
        int b = mw_mig_bool(sl->val);
        set_str(m->o, "log", "target", b == 1 ? "syslog" : "stderr", "Syslog %s (%s): carried%s",
                sl->val, sl->where, b == 1 ? "" : " (no syslog: stderr, which systemd's journal keeps)");
    }
    mw_mig_kv *fac = mw_mig_get(dkim, "SyslogFacility"), *fac_dm = mw_mig_get(dmarc, "SyslogFacility");
    if (fac == NULL)
        fac = fac_dm;
    dup_note(m->o, fac, fac_dm);
    if (fac != NULL)
        set_str(m->o, "log", "facility", fac->val, "SyslogFacility %s (%s): carried", fac->val, fac->where);
    mw_mig_kv *lw = mw_mig_get(dkim, "LogWhy");
    if (lw != NULL && mw_mig_bool(lw->val) == 1)
        set_str(m->o, "log", "level", "debug", "LogWhy %s (%s): carried as debug logging (every "
                "decision's reason; `mailwarden check` shows them for one message)", lw->val, lw->where);
}

/* ---- OpenDKIM ------------------------------------------------------------------------- */

/* OpenDKIM's On-* actions.  mailwarden has no per-result action settings:
 * the policy decides, and its rules can test DKIM results (`dkim = [...]`),
 * so each case maps to a policy rule where one can express it.  mw: what
 * mailwarden does (an action word when it is one); cond: the rule
 * condition, NULL when no rule can test the case, with why. */
static const struct on_key {
    const char *key, *mw, *what, *cond, *why;
} on_keys[] = {
    {"On-BadSignature", "accept", "a DKIM signature fails: mailwarden's policies never act on DKIM "
     "alone, DMARC decides", "dkim = [ \"fail\" ]", NULL},
    {"On-KeyNotFound", "accept", "a signature's key is not in DNS (dkim=permerror): DMARC decides",
     "dkim = [ \"permerror\" ]", NULL},
    {"On-NoSignature", "accept", "unsigned mail: DMARC decides", "dkim = [ \"none\" ]", NULL},
    {"On-DNSError", "accept", "a key lookup fails for now (dkim=temperror): delivered, except that "
     "the default policy tempfails mail whose DMARC result is temperror at an enforcing domain",
     "dkim = [ \"temperror\" ]", NULL},
    {"On-InternalError", "tempfail", "an internal error (resources): always tempfail (451), and a "
     "filter that is down gets the MTA's milter_default_action", NULL,
     "it is not a result a policy sees: a message mailwarden could not process is never accepted "
     "as checked"},
    {"On-Security", "-", "OpenDKIM's \"security concern\" cases (malformed headers): "
     "mailwarden parses From itself and the policy decides by from_status (the default policy "
     "refuses mail without one usable From from enforcing domains)", NULL,
     "there is no such class of result in mailwarden"},
    {"On-SignatureError", "accept", "signing fails (a key or message problem): the message is "
     "delivered unsigned, logged and counted", NULL,
     "outbound mail is never refused for our own signing problem"},
    {NULL, NULL, NULL, NULL, NULL}};

/* OpenDKIM's action word (or abbreviation) as mailwarden's, NULL if none. */
static const char *on_action(const char *v)
{
    static const char *const map[][2] = {{"accept", "accept"}, {"a", "accept"}, {"reject", "reject"},
        {"r", "reject"}, {"tempfail", "tempfail"}, {"t", "tempfail"}, {"quarantine", "quarantine"},
        {"q", "quarantine"}, {"discard", NULL}, {"d", NULL}, {NULL, NULL}};
    for (size_t i = 0; map[i][0] != NULL; i++)
        if (strcasecmp(v, map[i][0]) == 0)
            return map[i][1];
    return NULL;
}

static void on_actions(struct mig *m, mw_mig_conf *c)
{
    mw_mig_kv *def = mw_mig_get(c, "On-Default");
    if (def != NULL)
        mw_mig_note(m->o, "", "On-Default %s (%s): OpenDKIM's action for every case below that has "
                    "no On-* of its own; each is mapped below", def->val, def->where);
    for (const struct on_key *k = on_keys; k->key != NULL; k++) {
        mw_mig_kv *kv = mw_mig_get(c, k->key);
        mw_mig_kv *src = kv != NULL ? kv : def;
        if (src == NULL)
            continue;
        const char *act = on_action(src->val);
        char from[200];
        snprintf(from, sizeof from, "%s %s (%s%s)", k->key, src->val, src->where,
                 kv == NULL ? ", from On-Default" : "");
        if (act != NULL && strcmp(act, k->mw) == 0)
            mw_mig_note(m->o, "", "%s: carried: mailwarden does the same: %s", from, k->what);
        else if (k->cond == NULL)
            mw_mig_gap(m->o, "", "%s: mailwarden has no setting for it, because %s.\n"
                       "What mailwarden does: %s", from, k->why, k->what);
        else if (act == NULL)
            mw_mig_gap(m->o, "", "%s: mailwarden has no such action (it never discards mail "
                       "silently; use reject or quarantine).\nWhat mailwarden does: %s", from, k->what);
        else
            mw_mig_gap(m->o, "", "%s: no setting; mailwarden's policy decides.  What mailwarden "
                       "does: %s.\nTo do what OpenDKIM did, copy the policy file into policy_dir "
                       "and add, before its other inbound rules:\n  { name = \"opendkim-%s\"; trust = "
                       "[ \"inbound\" ]; %s; action = \"%s\"; }", from, k->what, k->key + 3,
                       k->cond, act);
    }
}

static void dkim_map(struct mig *m, mw_mig_conf *c)
{
    mw_mig_kv *kv;
    mw_mig_dkim_signing(c, m->o);
    if ((kv = mw_mig_get(c, "Mode")) != NULL) {
        bool s = strchr(kv->val, 's') != NULL, v = strchr(kv->val, 'v') != NULL;
        mw_mig_set(m->o, "dkim", "sign", s ? "true" : "false", "Mode %s (%s): carried", kv->val, kv->where);
        mw_mig_set(m->o, "dkim", "verify", v ? "true" : "false", "Mode %s (%s): carried%s", kv->val,
                   kv->where, v ? "" : "; note that DMARC needs DKIM results: with verify off only "
                   "SPF can align");
    }
    if ((kv = mw_mig_get(c, "Canonicalization")) != NULL)
        set_str(m->o, "dkim", "canonicalization", kv->val, "Canonicalization %s (%s): carried",
                kv->val, kv->where);
    else
        mw_mig_set(m->o, "dkim", "canonicalization", "\"simple/simple\"", "Canonicalization not set: "
                   "OpenDKIM's default simple/simple kept (mailwarden's own default is relaxed/relaxed, "
                   "which survives more relays)%s", "");
    const char *hk[2] = {"SignHeaders", "OversignHeaders"};
    const char *mk[2] = {"sign_headers", "oversign_headers"};
    for (int i = 0; i < 2; i++) {
        if ((kv = mw_mig_get(c, hk[i])) == NULL) {
            if (i == 1)
                mw_mig_note(m->o, "dkim", "OversignHeaders not set: mailwarden's default oversigns From, "
                            "To and Subject (OpenDKIM's: none); harmless for verifiers");
            continue;
        }
        mw_mig_list l = {0};
        bool re, from = false;
        char why[1200];
        if (!mw_mig_dataset(kv->val, &l, &re, NULL, why, sizeof why)) {
            mw_mig_gap(m->o, "dkim", "%s %s (%s): %s", hk[i], kv->val, kv->where, why);
            continue;
        }
        for (size_t j = 0; j < l.n; j++)
            from = from || strcasecmp(l.v[j], "From") == 0;
        if (i == 0 && !from)
            mw_mig_list_add(&l, "From");
        char *q = mw_mig_quote_list(&l);
        mw_mig_set(m->o, "dkim", mk[i], q, "%s %s (%s): carried%s", hk[i], kv->val, kv->where,
                   i == 0 && !from ? "; From added (RFC 6376 requires it)" : "");
        free(q);
        mw_mig_list_free(&l);
    }
    if ((kv = mw_mig_get(c, "MinimumKeyBits")) != NULL) {
        char *end;
        unsigned long b = strtoul(kv->val, &end, 10);
        if (*end == '\0' && b >= 512 && b <= 16384)
            mw_mig_set(m->o, "dkim", "min_key_bits", kv->val, "MinimumKeyBits %s (%s): carried", kv->val, kv->where);
        else
            mw_mig_gap(m->o, "dkim", "MinimumKeyBits %s (%s): mailwarden takes 512 .. 16384", kv->val, kv->where);
    }
    if ((kv = mw_mig_get(c, "RequireSafeKeys")) != NULL && mw_mig_bool(kv->val) == 0)
        mw_mig_set(m->o, "dkim", "allow_unsafe_keys", "true", "RequireSafeKeys %s (%s): carried (better: "
                   "chmod 0600 the key files and drop this)", kv->val, kv->where);
    else if (kv != NULL)
        mw_mig_note(m->o, "dkim", "RequireSafeKeys %s (%s): carried (mailwarden's default: key files "
                    "readable by group or others are refused)", kv->val, kv->where);
    if ((kv = mw_mig_get(c, "InternalHosts")) != NULL)
        hosts(m, kv, "trust", "internal_networks", "clients whose mail is signed (outbound)");
    else
        mw_mig_note(m->o, "trust", "InternalHosts not set: OpenDKIM signs mail from 127.0.0.1 only; "
                    "mailwarden's default trust.internal_networks is 127.0.0.0/8 and ::1 (authenticated "
                    "and submission-port clients are outbound too)");
    if ((kv = mw_mig_get(c, "ExternalIgnoreList")) != NULL)
        mw_mig_note(m->o, "trust", "ExternalIgnoreList %s (%s): nothing to carry: it only silences "
                    "OpenDKIM's \"external host tried to send as us\" log line, which mailwarden does "
                    "not write", kv->val, kv->where);
    on_actions(m, c);
    if ((kv = mw_mig_get(c, "TrustAnchorFile")) != NULL)
        set_str(m->o, "dns", "trust_anchor", kv->val, "TrustAnchorFile %s (%s): carried (DNSSEC "
                "validation of key records)", kv->val, kv->where);
    if ((kv = mw_mig_get(c, "Nameservers")) != NULL) {
        mw_mig_list l = {0};
        bool re;
        char why[64];
        mw_mig_dataset(kv->val, &l, &re, NULL, why, sizeof why);
        char *q = mw_mig_quote_list(&l);
        mw_mig_set(m->o, "dns", "mode", "\"forward\"", "Nameservers %s (%s): carried", kv->val, kv->where);
        mw_mig_set(m->o, "dns", "forwarders", q, "Nameservers %s (%s): carried", kv->val, kv->where);
        free(q);
        mw_mig_list_free(&l);
    }
}

/* ---- OpenDMARC ------------------------------------------------------------------------- */

static void dmarc_map(struct mig *m, mw_mig_conf *c)
{
    mw_mig_kv *kv = mw_mig_get(c, "RejectFailures");
    if (kv != NULL && mw_mig_bool(kv->val) == 1)
        mw_mig_set(m->o, "", "policy", "\"default\"", "RejectFailures %s (%s): carried: the default "
                   "policy refuses DMARC failures as the domain's policy asks", kv->val, kv->where);
    else
        mw_mig_set(m->o, "", "policy", "\"monitor-only\"", "RejectFailures %s: OpenDMARC's default is "
                   "to never refuse mail, so the migrated file keeps that: monitor-only checks and "
                   "records everything and refuses nothing.\nTO ENFORCE DMARC (mailwarden's own "
                   "default): policy = \"default\"; watch first with  mailwarden check --policy default",
                   kv != NULL ? kv->val : "not set");
    if ((kv = mw_mig_get(c, "IgnoreHosts")) != NULL)
        hosts(m, kv, "dmarc", "allow_networks", "CHANGED: OpenDMARC skips these clients; mailwarden "
              "still evaluates and records their mail but never refuses it");
    else
        mw_mig_note(m->o, "dmarc", "IgnoreHosts not set: OpenDMARC skips 127.0.0.1; mailwarden treats "
                    "trust.internal_networks as outbound and skips them too");
    if ((kv = mw_mig_get(c, "IgnoreAuthenticatedClients")) != NULL)
        mw_mig_note(m->o, "dmarc", "IgnoreAuthenticatedClients %s (%s): %s", kv->val, kv->where,
                    mw_mig_bool(kv->val) == 1 ? "carried: authenticated clients are outbound in "
                    "mailwarden and get no DMARC evaluation" : "CHANGED: mailwarden never evaluates "
                    "DMARC for authenticated (outbound) clients");
    mw_mig_kv *self = mw_mig_get(c, "SPFSelfValidate"), *ign = mw_mig_get(c, "SPFIgnoreResults");
    if (self != NULL || ign != NULL) {
        mw_buf w = MW_BUF_INIT;
        if (self != NULL)
            mw_buf_printf(&w, "SPFSelfValidate %s (%s)", self->val, self->where);
        if (ign != NULL)
            mw_buf_printf(&w, "%sSPFIgnoreResults %s (%s)", self ? ", " : "", ign->val, ign->where);
        mw_mig_set(m->o, "spf", "enabled", "true", "%s: mailwarden always evaluates SPF itself%s",
                   mw_buf_cstr(&w), (self && mw_mig_bool(self->val) == 1) || (ign && mw_mig_bool(ign->val) == 1) ? "" :
                   ".\nCHANGED: OpenDMARC used an upstream SPF checker's results; mailwarden's own "
                   "are used instead (remove the other SPF milter/policy service, or set "
                   "spf.received_spf = false to avoid two Received-SPF headers)");
        mw_buf_free(&w);
    }
    if ((kv = mw_mig_get(c, "TrustedAuthservIDs")) != NULL) {
        mw_mig_list l = {0};
        bool re;
        char why[1200];
        if (mw_mig_dataset(kv->val, &l, &re, NULL, why, sizeof why)) {
            char *q = mw_mig_quote_list(&l);
            mw_mig_set(m->o, "dmarc", "trusted_authserv_ids", q, "TrustedAuthservIDs %s (%s): carried "
                       "(mailwarden verifies DKIM itself; list only hosts upstream of this one)",
                       kv->val, kv->where);
            free(q);
        } else
            mw_mig_gap(m->o, "dmarc", "TrustedAuthservIDs %s (%s): %s", kv->val, kv->where, why);
        mw_mig_list_free(&l);
    }
    if ((kv = mw_mig_get(c, "HistoryFile")) != NULL)
        set_str(m->o, "history", "dir", m->history_dir, "HistoryFile %s (%s): CHANGED to a history "
                "directory of mailwarden's own format (docs/history-format.md).\nThe old history is NOT "
                "imported: send the reports for the current period with opendmarc-reports first.",
                kv->val, kv->where);
    if ((kv = mw_mig_get(c, "PublicSuffixList")) != NULL) {
        set_str(m->o, "dmarc", "psl_file", kv->val, "PublicSuffixList %s (%s): carried; used by "
                "dmarc.mode rfc7489.  mailwarden's default mode rfc9989 finds the organizational domain "
                "by the DNS tree walk instead; for OpenDMARC's exact behaviour set mode = \"rfc7489\"",
                kv->val, kv->where);
    }
    if ((kv = mw_mig_get(c, "RequiredHeaders")) != NULL)
        mw_mig_note(m->o, "dmarc", "RequiredHeaders %s (%s): %s", kv->val, kv->where,
                    mw_mig_bool(kv->val) == 1 ? "CHANGED: mailwarden always parses From and records "
                    "from_status; the policy decides (the default policy refuses mail without a "
                    "single usable From; monitor-only accepts it)" : "carried (no header requirements)");
    if ((kv = mw_mig_get(c, "FailureReports")) != NULL && mw_mig_bool(kv->val) == 1)
        mw_mig_gap(m->o, "dmarc", "FailureReports %s (%s): mailwarden sends aggregate reports "
                   "(`mailwarden report`) but no failure (ruf) reports", kv->val, kv->where);
    else if (kv != NULL)
        mw_mig_note(m->o, "dmarc", "FailureReports %s (%s): carried (mailwarden sends none)", kv->val, kv->where);
    if ((kv = mw_mig_get(c, "HoldQuarantinedMessages")) != NULL)
        mw_mig_set(m->o, "dmarc", "quarantine_action", mw_mig_bool(kv->val) == 1 ? "\"hold\"" : "\"deliver\"",
                   "HoldQuarantinedMessages %s (%s): carried", kv->val, kv->where);
    if ((kv = mw_mig_get(c, "DNSTimeout")) != NULL) {
        char *end, ms[32];
        unsigned long s = strtoul(kv->val, &end, 10);
        if (*end == '\0' && s >= 1 && s <= 60) {
            snprintf(ms, sizeof ms, "%lu", s * 1000);
            mw_mig_set(m->o, "dns", "timeout", ms, "DNSTimeout %s (%s): carried, in milliseconds", kv->val, kv->where);
        }
    }
}

/* AuthservID: OpenDMARC's wins (it writes the dmarc= result downstream reads). */
static void authserv(struct mig *m, mw_mig_conf *dkim, mw_mig_conf *dmarc)
{
    mw_mig_kv *dk = mw_mig_get(dkim, "AuthservID"), *dm = mw_mig_get(dmarc, "AuthservID");
    mw_mig_kv *kv = dm != NULL ? dm : dk;
    if (kv == NULL)
        return;
    if (strcasecmp(kv->val, "HOSTNAME") == 0)
        mw_mig_note(m->o, "", "AuthservID %s (%s): carried as the default (the host name)", kv->val, kv->where);
    else
        set_str(m->o, "", "authserv_id", kv->val, "AuthservID %s (%s): carried", kv->val, kv->where);
    if (dk != NULL && dm != NULL)
        mw_mig_note(m->o, "", "AuthservID %s (%s): OpenDKIM's; mailwarden writes one "
                    "Authentication-Results header, with OpenDMARC's id", dk->val, dk->where);
}

/* Settings nobody looked at: say why each is not carried.  "need" false:
 * a setting with nothing to carry (a comment, not counted as a gap). */
static void leftovers(struct mig *m, mw_mig_conf *c, const char *who)
{
    static const struct { const char *key, *why; bool need; } known[] = {
        {"AutoRestart", "the service manager restarts mailwarden (systemd Restart=on-failure)", false},
        {"AutoRestartRate", "the service manager restarts mailwarden", false},
        {"Background", "mailwarden runs in the foreground under its service manager", false},
        {"BaseDirectory", "mailwarden uses absolute paths", false},
        {"SyslogSuccess", "mailwarden logs every message's result at level info", false},
        {"SoftwareHeader", "mailwarden adds no software header", false},
        {"SignatureAlgorithm", "mailwarden signs RSA keys with rsa-sha256 and Ed25519 keys with ed25519-sha256 (rsa-sha1 is never used)", false},
        {"ChangeRootDirectory", "use the service manager's sandboxing (docs/systemd.md)", true},
        {NULL, NULL, false}};
    for (size_t i = 0; i < c->n; i++) {
        mw_mig_kv *kv = &c->kv[i];
        if (kv->used)
            continue;
        const char *why = "no mailwarden equivalent";
        bool need = true;
        for (size_t k = 0; known[k].key != NULL; k++)
            if (strcasecmp(known[k].key, kv->key) == 0) {
                why = known[k].why;
                need = known[k].need;
            }
        if (need)
            mw_mig_gap(m->o, "", "%s %s %s (%s): %s", who, kv->key, kv->val, kv->where, why);
        else
            mw_mig_note(m->o, "", "%s %s %s (%s): not needed: %s", who, kv->key, kv->val, kv->where, why);
    }
}

/* ---- Postfix ---------------------------------------------------------------------------- */

/* The value of a main.cf parameter (continuation lines joined), or NULL. */
static char *postfix_param(const char *path, const char *name)
{
    FILE *f = fopen(path, "re");
    char *line = NULL, *val = NULL;
    size_t cap = 0;
    mw_buf b = MW_BUF_INIT;
    bool in = false;

    if (f == NULL)
        return NULL;
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#')
            continue;
        if (in && (line[0] == ' ' || line[0] == '\t')) {
            mw_buf_printf(&b, " %s", line);
            continue;
        }
        in = false;
        size_t n = strlen(name);
        if (strncmp(line, name, n) == 0 && strchr(" \t=", line[n]) != NULL) {
            const char *eq = strchr(line + n, '=');
            if (eq == NULL)
                continue;
            mw_buf_reset(&b);   /* the last setting wins, as in Postfix */
            mw_buf_puts(&b, eq + 1);
            in = true;
            val = line;         /* found marker */
        }
    }
    free(line);
    fclose(f);
    return val != NULL ? mw_buf_steal(&b) : (mw_buf_free(&b), NULL);
}

/* Whether a Postfix milter entry is one of the old milters. */
static bool old_milter(const struct mig *m, const char *e, const char *name)
{
    const char *sock = strcmp(name, "opendkim") == 0 ? m->old_dkim_sock : m->old_dmarc_sock;
    char *plain = NULL;
    if (e[0] == '{') {   /* { inet:host:port, settings } */
        plain = mw_strndup(e + 1, strcspn(e + 1, ",}"));
        char *t = plain;
        while (*t == ' ')
            t++;
        memmove(plain, t, strlen(t) + 1);
        plain[strcspn(plain, " ")] = '\0';
        e = plain;
    }
    bool hit = (sock != NULL && sock[0] != '\0' && strcmp(e, sock) == 0) || strstr(e, name) != NULL ||
               (strncmp(e, "inet:", 5) == 0 && strcmp(name, "opendkim") == 0 && strstr(e, ":8891") != NULL) ||
               (strncmp(e, "inet:", 5) == 0 && strcmp(name, "opendmarc") == 0 && strstr(e, ":8893") != NULL);
    free(plain);
    return hit;
}

static void postfix(const struct mig *m, const char *path)
{
    static const char *const params[] = {"smtpd_milters", "non_smtpd_milters", NULL};
    char *mine = m->socket != NULL ? postfix_spelling(m->socket) : mw_strdup("inet:localhost:8894");
    bool any = false;

    for (size_t p = 0; params[p] != NULL; p++) {
        char *v = postfix_param(path, params[p]);
        if (v == NULL)
            continue;
        mw_buf out = MW_BUF_INIT;
        bool placed = false, dk = false, dm = false;
        /* entries are separated by commas or blanks, except inside { } */
        size_t i = 0, n = strlen(v);
        while (i < n) {
            while (i < n && strchr(" \t,", v[i]) != NULL)
                i++;
            if (i >= n)
                break;
            size_t j = i;
            if (v[i] == '{') {
                while (j < n && v[j] != '}')
                    j++;
                j += j < n;
            } else
                while (j < n && strchr(" \t,", v[j]) == NULL)
                    j++;
            char *e = mw_strndup(v + i, j - i);
            bool isdk = old_milter(m, e, "opendkim"), isdm = !isdk && old_milter(m, e, "opendmarc");
            dk = dk || isdk;
            dm = dm || isdm;
            if ((isdk || isdm) && !placed) {
                mw_buf_printf(&out, "%s%s", out.len ? ", " : "", mine);
                placed = true;
            } else if (!isdk && !isdm)
                mw_buf_printf(&out, "%s%s", out.len ? ", " : "", e);
            free(e);
            i = j;
        }
        if (dk || dm) {
            printf("# Postfix %s: replace%s%s by mailwarden (was: %s = %s)\n", path,
                   dk ? " OpenDKIM" : "", dk && dm ? " and OpenDMARC" : dm ? " OpenDMARC" : "",
                   params[p], v + strspn(v, " \t"));
            printf("%s = %s\n", params[p], mw_buf_cstr(&out));
            any = true;
        }
        mw_buf_free(&out);
        free(v);
    }
    if (!any)
        printf("# Postfix %s: no OpenDKIM or OpenDMARC milter found in smtpd_milters; add:\n"
               "smtpd_milters = %s\n", path, mine);
    free(mine);
}

/* ---- the command ------------------------------------------------------------------------- */

static int usage(FILE *f, int rc)
{
    fprintf(f, "usage: mailwarden migrate [--opendkim FILE] [--opendmarc FILE] [--postfix-main-cf FILE]\n"
               "                          [--history-dir DIR] [-o FILE] [--force]\n"
               "Write a mailwarden.conf (default ./mailwarden.conf) from OpenDKIM and OpenDMARC\n"
               "configuration files, every setting commented, then check it as config-test does.\n"
               "--history-dir: history.dir when OpenDMARC has a HistoryFile (default\n"
               "/var/lib/mailwarden/history).  Exit 0 valid, 1 config-test failed, 2 error.\n");
    return rc;
}

static bool load(mw_mig_conf *c, const char *path)
{
    char err[1200];
    if (path == NULL)
        return true;
    if (!mw_mig_conf_read(c, path, err, sizeof err)) {
        fprintf(stderr, "mailwarden migrate: %s\n", err);
        return false;
    }
    return true;
}

int mw_cmd_migrate(int argc, char **argv)
{
    const char *dkim_path = NULL, *dmarc_path = NULL, *main_cf = NULL, *out = "mailwarden.conf";
    bool force = false;
    struct mig m = {.history_dir = "/var/lib/mailwarden/history"};

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return usage(stdout, 0);
        if (strcmp(a, "--force") == 0) {
            force = true;
            continue;
        }
        if (strcmp(a, "--opendkim") == 0)
            slot = &dkim_path;
        else if (strcmp(a, "--opendmarc") == 0)
            slot = &dmarc_path;
        else if (strcmp(a, "--postfix-main-cf") == 0)
            slot = &main_cf;
        else if (strcmp(a, "--history-dir") == 0)
            slot = &m.history_dir;
        else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0)
            slot = &out;
        if (slot == NULL || v == NULL) {
            fprintf(stderr, "mailwarden migrate: %s %s\n", a, slot ? "needs a value" : "unknown option");
            return usage(stderr, 2);
        }
        *slot = v;
        i++;
    }
    if (dkim_path == NULL && dmarc_path == NULL)
        return usage(stderr, 2);
    if (m.history_dir[0] != '/') {
        fprintf(stderr, "mailwarden migrate: --history-dir must be an absolute path\n");
        return 2;
    }
    mw_mig_conf dkim = {0}, dmarc = {0};
    if (!load(&dkim, dkim_path) || !load(&dmarc, dmarc_path)) {
        mw_mig_conf_free(&dkim);
        mw_mig_conf_free(&dmarc);
        return 2;
    }
    m.o = mw_mig_out_new();
    daemon_map(&m, dkim_path ? &dkim : NULL, dmarc_path ? &dmarc : NULL);
    authserv(&m, dkim_path ? &dkim : NULL, dmarc_path ? &dmarc : NULL);
    if (dkim_path != NULL)
        dkim_map(&m, &dkim);
    else
        mw_mig_note(m.o, "dkim", "no OpenDKIM configuration given: mailwarden's DKIM defaults apply "
                    "(verify inbound mail; sign nothing until keys are configured)");
    if (dmarc_path != NULL)
        dmarc_map(&m, &dmarc);
    else
        mw_mig_set(m.o, "", "policy", "\"monitor-only\"", "no OpenDMARC configuration given: nothing was "
                   "refused for DMARC before, so monitor-only keeps that.\nTO ENFORCE DMARC: policy = "
                   "\"default\"%s", "");
    if (dkim_path != NULL)
        leftovers(&m, &dkim, "OpenDKIM");
    if (dmarc_path != NULL)
        leftovers(&m, &dmarc, "OpenDMARC");

    mw_buf hdr = MW_BUF_INIT;
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    mw_buf_printf(&hdr, "mailwarden.conf written by `mailwarden migrate` on %s from\n"
                  "  OpenDKIM:  %s\n  OpenDMARC: %s\n"
                  "Each setting says where it came from: \"carried\" (same behaviour), \"CHANGED\" "
                  "(and why),\nor \"NOT CARRIED\" (and why).  Keys not written keep mailwarden's "
                  "defaults: mailwarden.conf(5).\nCheck it with:  mailwarden config-test -c THIS-FILE",
                  date, dkim_path ? dkim_path : "(none)", dmarc_path ? dmarc_path : "(none)");
    int fd = open(out, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (force ? O_TRUNC : O_EXCL), 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int rc = 2;
    if (f == NULL) {
        fprintf(stderr, "mailwarden migrate: %s: %s%s\n", out, strerror(errno),
                errno == EEXIST ? " (use --force to overwrite)" : "");
        if (fd >= 0)
            close(fd);
    } else {
        mw_mig_write(m.o, f, mw_buf_cstr(&hdr));
        if (fclose(f) != 0) {
            fprintf(stderr, "mailwarden migrate: %s: write failed: %s\n", out, strerror(errno));
        } else {
            fprintf(stderr, "mailwarden migrate: wrote %s; %zu setting%s not carried (see NOT CARRIED "
                    "in the file)\n", out, mw_mig_gaps(m.o), mw_mig_gaps(m.o) == 1 ? "" : "s");
            if (main_cf != NULL)
                postfix(&m, main_cf);
            fflush(stdout);
            /* the same validation as `mailwarden config-test -c OUT` */
            char *ct[] = {"config-test", "-c", (char *)out, NULL};
            rc = mw_cmd_config_test(3, ct) == 0 ? 0 : 1;
        }
    }
    mw_buf_free(&hdr);
    mw_mig_out_free(&m.o);
    free(m.socket);
    free(m.old_dkim_sock);
    free(m.old_dmarc_sock);
    mw_mig_conf_free(&dkim);
    mw_mig_conf_free(&dmarc);
    return rc;
}
