/*
 * policy.h - declarative policies: check results -> action.
 *
 * A policy is a libconfig file (policies/NAME.conf) holding an ordered list
 * of rules.  Each rule has optional match conditions (all given conditions
 * must hold) and an action; the first matching rule decides, and its name
 * goes into the trace and the log.  No scripting.
 *
 *   description = "...";
 *   default_action = "accept";            # when no rule matches
 *   rules = (
 *     { name = "reject-spf-fail";
 *       trust = [ "inbound" ];             # inbound|authenticated|internal|submission|outbound|any
 *       spf = [ "fail" ];                  # MAIL FROM SPF result(s)
 *       helo_spf = [ "fail" ];             # HELO SPF result(s)
 *       sender_domain = [ "*.example.com" ];   # MAIL FROM domain globs
 *       network = [ "192.0.2.0/24" ];      # client address in one of these
 *       not_network = [ "198.51.100.0/24" ];
 *       reputation_below = -0.5;           # score known (min_samples) and below
 *       reputation_above = 0.5;            # ... or above; -1 (bad) .. 1 (good)
 *       reputation_subject = "ip";         # ip (default), net or domain
 *       null_sender = true;                # MAIL FROM:<> (true) or not (false)
 *       dmarc = [ "fail" ];                # DMARC result(s): none pass fail temperror permerror
 *       dmarc_disposition = [ "reject" ];  # what the domain asks, after t=y: none quarantine reject
 *       dmarc_policy = [ "reject" ];       # the applicable p/sp/np before t=y
 *       dmarc_override = [ "never_reject" ];   # local overrides in effect (see below)
 *       from_status = [ "multiple" ];      # header From: ok empty multiple nodomain unparsable
 *       from_domain = [ "*.example.com" ]; # header From domain globs
 *       from_enforcing = true;             # a From domain involved publishes quarantine/reject
 *       action = "reject";                 # accept|reject|tempfail|quarantine|discard
 *       reply = "550 5.7.23 %{spf_explanation}";   # optional SMTP reply
 *     }
 *   );
 *
 * Matching (documented for postmasters in mailwarden.conf(5)):
 *   - every rule needs a unique name (not "default") and an action; all
 *     other keys are optional conditions, and a rule without conditions
 *     matches everything.  A list matches when any element matches.  A
 *     single string is accepted where a list is expected.
 *   - trust: "outbound" = authenticated, internal or submission; "any" = all.
 *   - spf / helo_spf hold only when that check was evaluated (spf_done /
 *     helo_spf_done) and its result is listed: a skipped check is not "none".
 *   - sender_domain: case-insensitive globs ('*', '?').  "example.com"
 *     matches exactly that domain; "*.example.com" matches its subdomains
 *     but not example.com itself (list both for both).  A trailing dot on
 *     the sender's domain is ignored.  No domain: no match.
 *   - dmarc, dmarc_disposition, dmarc_policy and dmarc_override hold only
 *     when DMARC was evaluated (dmarc_done) and the value is listed; an
 *     unspecified policy/disposition (no record, temperror) matches no word.
 *     dmarc_override words: never_reject, always_enforce, allow_network
 *     (any listed flag set), and "none" (no override flag set).
 *   - from_status holds only when the header From was parsed (from_done);
 *     from_domain is matched like sender_domain; from_enforcing is a bool.
 *   - network: the client address is in one of the CIDRs (unknown client:
 *     no match); not_network: the client is in none of them (unknown
 *     client: holds).
 *   - reply is allowed only with reject (5xx) and tempfail (4xx); an
 *     enhanced status code (RFC 3463) after the basic code must have the
 *     same class ("550 5.7.23 ...", "451 4.7.24 ...").  Literal '%' is "%%";
 *     any other %{...} than the placeholders below is an error.
 *
 * Reply placeholders: %{spf_explanation} (the expanded SPF exp= text, or a
 * default sentence), %{sender_domain}, %{client_ip}, %{rule},
 * %{from_domain} (header From domain) and %{dmarc_policy} (the applicable
 * policy word, mw_dmarc_policy_name()).  Without a
 * reply the engine uses the action's default (reject 550 5.7.1, tempfail
 * 451 4.7.1).
 *
 * Names are looked up as: a path if it contains '/', else
 * POLICY_DIR/NAME.conf if that file exists, else the policy of that name
 * compiled into the binary (the shipped policies/ files, byte for byte).
 *
 * Thread safety: a loaded policy is immutable; evaluate from any thread.
 */
#ifndef MW_ENGINE_POLICY_H
#define MW_ENGINE_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "cidr.h"
#include "config.h"
#include "arc.h"
#include "dkim.h"
#include "dmarc.h"
#include "fromhdr.h"
#include "spf.h"

/* Trust classes (DESIGN §1).  The last three are "outbound". */
typedef enum mw_trust {
    MW_TRUST_INBOUND = 0,
    MW_TRUST_AUTHENTICATED,   /* SASL {auth_authen} present */
    MW_TRUST_INTERNAL,        /* client in internal networks */
    MW_TRUST_SUBMISSION       /* {daemon_name} is a submission daemon */
} mw_trust;

const char *mw_trust_name(mw_trust t);
static inline bool mw_trust_outbound(mw_trust t) { return t != MW_TRUST_INBOUND; }

typedef enum mw_action {
    MW_ACTION_ACCEPT = 0,
    MW_ACTION_REJECT,
    MW_ACTION_TEMPFAIL,
    MW_ACTION_QUARANTINE,
    MW_ACTION_DISCARD
} mw_action;

const char *mw_action_name(mw_action a);
bool mw_action_parse(const char *s, mw_action *out);

/* Local DMARC overrides in effect for a message (mw_policy_facts.dmarc_override). */
enum {
    MW_DMARC_OVR_NEVER_REJECT   = 1u << 0,   /* dmarc.never_reject matched (forwarder, list) */
    MW_DMARC_OVR_ALWAYS_ENFORCE = 1u << 1,   /* dmarc.always_enforce lists the From domain */
    MW_DMARC_OVR_ALLOW_NETWORK  = 1u << 2,   /* client in dmarc.allow_networks */
    MW_DMARC_OVR_MAILING_LIST   = 1u << 3,   /* List-Id/List-Post and a passing DKIM signature of the list */
    MW_DMARC_OVR_FORWARDER      = 1u << 4,   /* dmarc.forwarders: client network or verified domain */
    MW_DMARC_OVR_TRUSTED_ARC    = 1u << 5    /* passing ARC chain of a dmarc.trusted_arc_sealers
                                                sealer whose AAR shows an aligned pass */
};

/* What the engine knows when it asks the policy.  Zero-initialise: every
 * later field then means "not evaluated". */
/* One reputation score as the policy sees it. */
typedef struct mw_policy_rep {
    bool   known;     /* enough samples (reputation.min_samples) */
    double score;     /* -1 (bad) .. 1 (good) */
} mw_policy_rep;

typedef struct mw_policy_facts {
    mw_trust       trust;
    const mw_addr *client;           /* NULL if unknown (unix socket, no address) */
    const char    *sender_domain;    /* MAIL FROM domain, or HELO for a null sender; may be NULL */
    bool           spf_done;         /* MAIL FROM SPF evaluated */
    mw_spf_result  spf;
    bool           helo_spf_done;    /* HELO SPF evaluated */
    mw_spf_result  helo_spf;
    bool           null_sender;      /* MAIL FROM:<> (bounces, DSNs) */
    /* DMARC (inbound) */
    bool            dmarc_done;         /* DMARC evaluated (result below is meaningful) */
    mw_dmarc_result dmarc;
    mw_dmarc_policy dmarc_policy;       /* applicable p/sp/np, before t=y */
    mw_dmarc_policy dmarc_disposition;  /* what the domain asks, after t=y (and pct) */
    unsigned        dmarc_override;     /* MW_DMARC_OVR_* bits */
    /* header From */
    bool            from_done;          /* the header From was parsed */
    mw_from_status  from_status;
    const char     *from_domain;        /* the (first) From domain; may be NULL */
    bool            from_enforcing;     /* a From domain involved publishes p=quarantine/reject */
    /* reputation (reputation.enabled); unknown scores never match a bound */
    mw_policy_rep   rep_ip, rep_net, rep_domain;
    /* DKIM (inbound verification) */
    bool            dkim_done;          /* signatures verified (the fields below mean something) */
    unsigned        dkim_results;       /* bit per mw_dkim_result present; MW_DKIM_NONE: no signature */
    const char *const *dkim_pass_domains;   /* d= of every passing signature */
    size_t          ndkim_pass;
    bool            signed_by_from;     /* a passing signature aligned with the From domain */
    /* ARC (arc.verify) */
    bool            arc_done;
    mw_arc_result   arc;
    /* envelope recipients accepted so far (the message's) */
    const char *const *rcpts;
    size_t          nrcpts;
    bool            rate_limited;       /* the message hit a rate limit (reputation: bad) */
    bool            list_mail;          /* a List-Id or List-Post header (not verified) */
} mw_policy_facts;

typedef struct mw_policy_decision {
    mw_action   action;
    const char *rule;    /* name of the matching rule, or "default" (owned by the policy) */
    const char *reply;   /* rule's reply template or NULL (owned by the policy) */
} mw_policy_decision;

typedef struct mw_policy mw_policy;

/* The i-th key a rule may have (name, conditions, action, reply); NULL past the last. */
const char *mw_policy_rule_key(size_t i);
/* The i-th %{placeholder} a reply may use (without %{ }); NULL past the last. */
const char *mw_policy_placeholder(size_t i);

/* Embedded copies of policies/NAME.conf (generated at build time). */
struct mw_embedded_policy {
    const char *name;
    const char *text;
};
extern const struct mw_embedded_policy mw_embedded_policies[];

/*
 * Load a policy by name or path (see above).  policy_dir may be NULL.
 * NULL on error, with every problem ("FILE:LINE: message") appended to errs.
 */
mw_policy *mw_policy_load(const char *name, const char *policy_dir, mw_config_errors *errs);
/* The same; origin ("FILE:LINE" of the key that named the policy, or NULL)
 * prefixes the error for a name that is neither a file nor built in, so a
 * typo in mailwarden.conf is reported where it was written. */
mw_policy *mw_policy_load_at(const char *name, const char *policy_dir, const char *origin,
                             mw_config_errors *errs);
/* Parse policy text; origin names it in error messages. */
mw_policy *mw_policy_parse(const char *text, const char *origin, mw_config_errors *errs);
void mw_policy_free(mw_policy **p);
/* The policy's name (file base name or embedded name). */
const char *mw_policy_name(const mw_policy *p);
/* The policy's description ("" if none); owned by the policy. */
const char *mw_policy_description(const mw_policy *p);
/* Is reply a valid reply for action a (reject: 5xx, tempfail: 4xx), by the
 * rules above (codes, enhanced code class, printable, placeholders)?  For
 * config keys holding replies (dmarc.reject_text).  false + why if not. */
bool mw_policy_reply_valid(const char *reply, mw_action a, char *why, size_t whylen);
/* First matching rule decides; never fails. */
void mw_policy_eval(const mw_policy *p, const mw_policy_facts *f, mw_policy_decision *out);

#endif
