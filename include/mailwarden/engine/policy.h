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
 *       null_sender = true;                # MAIL FROM:<> (true) or not (false)
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
 *   - network: the client address is in one of the CIDRs (unknown client:
 *     no match); not_network: the client is in none of them (unknown
 *     client: holds).
 *   - reply is allowed only with reject (5xx) and tempfail (4xx); an
 *     enhanced status code (RFC 3463) after the basic code must have the
 *     same class ("550 5.7.23 ...", "451 4.7.24 ...").  Literal '%' is "%%";
 *     any other %{...} than the placeholders below is an error.
 *
 * Reply placeholders: %{spf_explanation} (the expanded SPF exp= text, or a
 * default sentence), %{sender_domain}, %{client_ip}, %{rule}.  Without a
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

/* What the engine knows when it asks the policy. */
typedef struct mw_policy_facts {
    mw_trust       trust;
    const mw_addr *client;           /* NULL if unknown (unix socket, no address) */
    const char    *sender_domain;    /* MAIL FROM domain, or HELO for a null sender; may be NULL */
    bool           spf_done;         /* MAIL FROM SPF evaluated */
    mw_spf_result  spf;
    bool           helo_spf_done;    /* HELO SPF evaluated */
    mw_spf_result  helo_spf;
    bool           null_sender;      /* MAIL FROM:<> (bounces, DSNs) */
} mw_policy_facts;

typedef struct mw_policy_decision {
    mw_action   action;
    const char *rule;    /* name of the matching rule, or "default" (owned by the policy) */
    const char *reply;   /* rule's reply template or NULL (owned by the policy) */
} mw_policy_decision;

typedef struct mw_policy mw_policy;

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
/* Parse policy text; origin names it in error messages. */
mw_policy *mw_policy_parse(const char *text, const char *origin, mw_config_errors *errs);
void mw_policy_free(mw_policy **p);
/* The policy's name (file base name or embedded name). */
const char *mw_policy_name(const mw_policy *p);
/* The policy's description ("" if none); owned by the policy. */
const char *mw_policy_description(const mw_policy *p);
/* First matching rule decides; never fails. */
void mw_policy_eval(const mw_policy *p, const mw_policy_facts *f, mw_policy_decision *out);

#endif
