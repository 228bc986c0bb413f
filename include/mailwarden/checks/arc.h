/*
 * arc.h - ARC (RFC 8617): verify the Authenticated Received Chain of an
 * inbound message, and seal mail we relay with a new ARC set.
 *
 * One per-message context does both, streaming like mw_dkim_msg: headers
 * are fed one by one, then the end of headers, then body chunks; nothing
 * of the body is kept (its canonical form is hashed as it arrives), and
 * the header section is held only until the end of headers.
 *
 * Verification (RFC 8617 §5.2): every ARC set (ARC-Authentication-Results,
 * ARC-Message-Signature, ARC-Seal) is collected; instances must run 1..N
 * with exactly one field of each kind per instance and N <= 50; cv= must be
 * none at i=1 and pass above, and no seal may say fail; the newest AMS must
 * verify (body and header hash, DKIM rules without v=) and every AS must
 * verify over the sets up to its own (relaxed canonicalization).  Older
 * AMSs are then checked from N-1 down for header.oldest-pass.
 *
 * Sealing (RFC 8617 §5.1): with a key of the DKIM key table, the set for
 * instance N+1: the AAR carries our Authentication-Results text, the AMS
 * signs the configured header fields and the body (relaxed/relaxed), the
 * AS signs every set (or, with cv=fail, only the new one).  A chain whose
 * newest seal already says cv=fail, or that has 50 sets, gets no new set.
 *
 * Thread safety: a verifier is shared read-only by all threads; a message
 * context belongs to one thread.
 */
#ifndef MW_CHECKS_ARC_H
#define MW_CHECKS_ARC_H

#include <stdbool.h>
#include <stddef.h>

#include "authres.h"
#include "dkim.h"
#include "dns.h"

#define MW_ARC_MAX_INSTANCES 50   /* RFC 8617 §4.2.1: more sets make the chain fail */

typedef enum mw_arc_result { MW_ARC_NONE = 0, MW_ARC_PASS, MW_ARC_FAIL } mw_arc_result;

/* "none", "pass", "fail": the A-R result and the AS cv= value. */
const char *mw_arc_result_name(mw_arc_result r);

typedef struct mw_arc_verify_options {
    unsigned min_key_bits;     /* 0 -> 1024: smaller RSA keys make a signature fail */
    unsigned timeout_ms;       /* per key lookup (0: the resolver default) */
    unsigned deadline_ms;      /* all key lookups of one message (0: 15000); later ones
                                  fail as temporary errors without a query */
    bool     no_oldest_pass;   /* do not check older AMSs (fewer key lookups) */
} mw_arc_verify_options;

typedef struct mw_arc_verifier mw_arc_verifier;

/* dns is borrowed and must outlive the verifier.  o may be NULL (defaults). */
mw_arc_verifier *mw_arc_verifier_create(mw_dns *dns, const mw_arc_verify_options *o);
void mw_arc_verifier_destroy(mw_arc_verifier **v);

/* The outcome of verification; every string is owned by the struct. */
typedef struct mw_arc_status {
    mw_arc_result      result;
    bool               temporary;    /* fail only because a key lookup failed temporarily
                                        (or the lookup deadline was reached) */
    bool               terminated;   /* the newest AS says cv=fail: an earlier hop failed the
                                        chain; RFC 8617 §5.1.2: no set may be added */
    unsigned           instances;    /* highest valid i= seen (0: no ARC fields); the
                                        sealer's instance is this + 1 */
    unsigned           oldest_pass;  /* pass: the lowest i whose AMS, and every newer one,
                                        still verifies (1..N; N when older ones were not
                                        checked); 0 otherwise */
    char              *reason;       /* always set: for the A-R comment and the trace */
    char              *sealer;       /* pass: d= of the newest AS (lower case), else NULL */
    char              *selector;     /* pass: s= of the newest AS */
    char              *aar;          /* pass: the newest AAR value after "i=N;" (unfolded,
                                        printable), else NULL */
    mw_authres_parsed *aar_parsed;   /* pass: that AAR parsed (authserv-id, resinfos);
                                        NULL when it does not parse */
} mw_arc_status;

void mw_arc_status_clear(mw_arc_status *st);

/* ---- per message ---- */

typedef struct mw_arc_msg mw_arc_msg;

/*
 * Start a message.  verifier may be NULL (no verification: the status is
 * none).  signer may be NULL (no sealing); otherwise key is the index of
 * the sealing key in it and the AMS covers the signer's header list
 * (dkim.sign_headers, oversigned names once more).  id is used in log
 * lines (queue id).
 */
mw_arc_msg *mw_arc_msg_begin(mw_arc_verifier *verifier, const mw_dkim_signer *signer, size_t key,
                             const char *id);
/* One header as received: the name, and the value byte-exact after the
 * colon (leading blank and folding kept, no final line end), as for
 * mw_dkim_msg_header. */
void mw_arc_msg_header(mw_arc_msg *m, const char *name, const char *value, size_t vlen);
void mw_arc_msg_eoh(mw_arc_msg *m);
/* Body bytes (CRLF or LF line ends), in any chunking. */
void mw_arc_msg_body(mw_arc_msg *m, const unsigned char *chunk, size_t len);
/* End of message: the verification status into *st (cleared first; free
 * with mw_arc_status_clear).  Key lookups happen here. */
void mw_arc_msg_end(mw_arc_msg *m, mw_arc_status *st);

/* A new ARC set: header values (without "Name:"), folded with "\n\t",
 * each malloc'd.  Insert at the top in the order AS, AMS, AAR. */
typedef struct mw_arc_set {
    unsigned instance;
    char    *aar;    /* ARC-Authentication-Results */
    char    *ams;    /* ARC-Message-Signature */
    char    *as;     /* ARC-Seal */
} mw_arc_set;

void mw_arc_set_clear(mw_arc_set *set);

/*
 * Seal the message (after mw_arc_msg_end): chain is the verification
 * status (cv= follows it: none -> i=1 cv=none, pass -> cv=pass over all
 * sets, fail -> cv=fail over the new set only); authres is our
 * Authentication-Results value ("authserv-id; method=result ..."), which
 * becomes the AAR after "i=N; "; t is the signature time (0: now).
 * Returns false with the reason in why when no set is added: no signer or
 * key, a chain already terminated (cv=fail in its newest seal), 50 sets
 * already, or a signing failure.
 */
bool mw_arc_msg_seal(mw_arc_msg *m, const mw_arc_status *chain, const char *authres, long long t,
                     mw_arc_set *out, char *why, size_t whylen);
void mw_arc_msg_free(mw_arc_msg **m);

#endif
