/*
 * dmarc.h - DMARC evaluation per RFC 9989 (DNS tree walk, np, psd, t), with
 * an RFC 7489 mode (public suffix list, pct) as a switch.
 *
 * The module only evaluates: given the header From domain, the SPF result
 * for the MAIL FROM identity and the DKIM results, it discovers the policy
 * (through our resolver), computes alignment and the result, and the
 * disposition the published policy asks for.  Local overrides, quarantine
 * handling and enforcement are the engine's and the policy's business.
 *
 * Thread safety: an mw_dmarc is shared and read-only after create.
 */
#ifndef MW_CHECKS_DMARC_H
#define MW_CHECKS_DMARC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkim.h"
#include "dns.h"
#include "spf.h"

typedef enum mw_dmarc_result {
    MW_DMARC_NONE = 0,      /* no DMARC record: DMARC does not apply */
    MW_DMARC_PASS,
    MW_DMARC_FAIL,
    MW_DMARC_TEMPERROR,     /* policy discovery failed temporarily */
    MW_DMARC_PERMERROR      /* e.g. unusable From (the engine decides), broken record (see RFC) */
} mw_dmarc_result;

typedef enum mw_dmarc_policy {
    MW_DMARC_P_UNSPEC = 0, MW_DMARC_P_NONE, MW_DMARC_P_QUARANTINE, MW_DMARC_P_REJECT
} mw_dmarc_policy;

const char *mw_dmarc_result_name(mw_dmarc_result r);   /* "none", "pass", "fail", "temperror", "permerror" */
/* "none", "quarantine", "reject"; "unspecified" for MW_DMARC_P_UNSPEC (never parsed). */
const char *mw_dmarc_policy_name(mw_dmarc_policy p);
bool mw_dmarc_result_parse(const char *s, mw_dmarc_result *out);
bool mw_dmarc_policy_parse(const char *s, mw_dmarc_policy *out);

/* fo (RFC 9991): when a failure report is wanted. */
#define MW_DMARC_FO_0 1u   /* every mechanism failed to give an aligned pass (default) */
#define MW_DMARC_FO_1 2u   /* any mechanism failed to give an aligned pass */
#define MW_DMARC_FO_D 4u   /* a DKIM signature failed evaluation */
#define MW_DMARC_FO_S 8u   /* SPF failed evaluation */

typedef enum mw_dmarc_mode { MW_DMARC_MODE_RFC9989 = 0, MW_DMARC_MODE_RFC7489 } mw_dmarc_mode;

/* A published record, parsed (strings owned by the record). */
typedef struct mw_dmarc_record {
    mw_dmarc_policy p, sp, np;   /* sp/np UNSPEC when absent */
    char  adkim, aspf;           /* 'r' or 's' */
    bool  t;                     /* t=y: testing */
    bool  pct_testing;           /* RFC 9989 mode: t set because of pct=0 without t */
    char  psd;                   /* 'y', 'n' or 'u' (absent) */
    int   pct;                   /* RFC 7489 mode only; 100 when absent (always 100 in RFC 9989 mode) */
    char **rua;                  /* NULL-terminated list of URIs (may be empty) */
    char **ruf;
    unsigned fo;                 /* failure reporting options: MW_DMARC_FO_* bits (default 0) */
    char  *raw;                  /* the record text */
    bool   p_assumed;            /* p/sp/np missing or invalid, a valid rua: acting as p=none */
} mw_dmarc_record;

/*
 * Is this TXT text a DMARC record at all ("v=DMARC1" as the first tag,
 * value case-sensitive, blanks around '=' allowed)?  Other TXT records at
 * _dmarc.NAME are discarded before the "several records" rule applies.
 */
bool mw_dmarc_record_is_dmarc(const char *text, size_t len);

/*
 * Parse a record's text into *out (always filled; clear it even on false).
 * false with a reason when it is not a DMARC record or is unusable per the
 * RFC: no valid p (or an invalid sp/np) and no syntactically valid rua URI
 * ("no DMARC processing").  With a valid rua the record acts as p=none
 * (p_assumed).  Other bad values fall back to the tag's default; unknown
 * tags are ignored; a repeated tag keeps its first value.  RFC 9989 mode
 * ignores rf/ri and pct, except that pct=0 with no t tag reads as t=y
 * (pct_testing); RFC 7489 mode ignores np/psd/t and honours pct.
 */
bool mw_dmarc_record_parse(const char *text, size_t len, mw_dmarc_mode mode, mw_dmarc_record *out,
                           char *why, size_t whylen);
void mw_dmarc_record_clear(mw_dmarc_record *r);

typedef struct mw_dmarc_options {
    mw_dmarc_mode mode;
    const char   *psl_file;     /* RFC 7489 mode; default Debian's publicsuffix file */
    unsigned      timeout_ms;   /* per lookup (0: resolver default) */
} mw_dmarc_options;

typedef struct mw_dmarc mw_dmarc;

mw_dmarc *mw_dmarc_create(mw_dns *dns, const mw_dmarc_options *o, char *err, size_t errlen);
void mw_dmarc_destroy(mw_dmarc **d);

/* What the evaluation needs (all borrowed). */
typedef struct mw_dmarc_input {
    const char          *from_domain;  /* header From domain (lower case) */
    const char          *spf_domain;   /* MAIL FROM domain (HELO for a null sender) */
    mw_spf_result        spf_result;
    bool                 spf_done;
    const mw_dkim_sig   *dkim;         /* every DKIM signature result */
    size_t               ndkim;
    /* RFC 7489 mode, pct < 100: a per-message uniform random value (e.g.
     * from the queue id hashed with a per-process secret, or random()); the
     * policy applies when pct_sample % 100 < pct, else the next lower one.
     * Ignored in RFC 9989 mode. */
    uint32_t             pct_sample;
} mw_dmarc_input;

typedef struct mw_dmarc_outcome {
    mw_dmarc_result  result;
    mw_dmarc_policy  disposition;     /* what the published policy asks for (after t=y) */
    mw_dmarc_policy  policy;          /* the applicable p/sp/np before t=y */
    const char      *policy_source;   /* "p", "sp" or "np" */
    bool             testing;         /* t=y lowered the disposition */
    mw_dmarc_record  record;          /* as published */
    char            *from_domain;
    char            *policy_domain;   /* where the record was found */
    char            *org_domain;
    const char      *discovery;       /* "treewalk" or "psl" */
    bool             spf_aligned, dkim_aligned;
    char            *dkim_aligned_domain;  /* d= of the aligned passing signature */
    char            *reason;          /* human, for the trace */
    bool             from_exists;     /* false when the From domain does not exist (np) */
    bool             sampled_out;     /* RFC 7489 mode: pct sampling lowered the disposition */
    bool             auth_temperror;  /* a check of an aligned identifier had temperror
                                         (then the result is temperror, never fail) */
    unsigned         queries;         /* DNS queries made (tree walks, existence check) */
} mw_dmarc_outcome;

/*
 * Evaluate one message.  Never fails: DNS trouble is temperror, an unusable
 * From domain (NULL, empty, not a domain name) is permerror, no (usable)
 * record is none.  disposition: none for pass; for fail the applicable
 * p/sp/np lowered by t=y (and, RFC 7489 mode, pct sampling); UNSPEC for
 * none/temperror/permerror.  All strings in *out are owned by it.
 */
void mw_dmarc_evaluate(mw_dmarc *d, const mw_dmarc_input *in, mw_dmarc_outcome *out);
void mw_dmarc_outcome_clear(mw_dmarc_outcome *o);

/*
 * Does domain publish an enforcing policy (the p/sp/np that would apply to
 * mail from it is quarantine or reject, before t=y)?  For a malformed
 * header From with several domains: the engine's from_enforcing fact.
 * *temperror (may be NULL) is set when discovery failed temporarily (then
 * false is returned).
 */
bool mw_dmarc_domain_enforcing(mw_dmarc *d, const char *domain, bool *temperror);

/* Organizational domain of name by the configured method (tree walk or
 * PSL); for alignment and reports.  Caller frees.  NULL on DNS trouble. */
char *mw_dmarc_org_domain(mw_dmarc *d, const char *name);

#endif
