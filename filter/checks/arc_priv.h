/*
 * arc_priv.h - the ARC message context shared by arc.c (collection,
 * verification) and arc_sign.c (sealing).  Private to filter/checks.
 */
#ifndef MW_CHECKS_ARC_PRIV_H
#define MW_CHECKS_ARC_PRIV_H

#include <stdbool.h>
#include <stddef.h>

#include "arc.h"
#include "dkim_priv.h"

#define ARC_MAX_FIELDS (3 * MW_ARC_MAX_INSTANCES)   /* ARC fields looked at; more: fail */

enum arc_kind { ARC_AAR = 0, ARC_AMS, ARC_AS };

/* One header field as received: spans into a text buffer. */
struct arc_field {
    size_t noff, nlen;     /* name (trailing blanks before the colon trimmed) */
    size_t voff, vlen;     /* value, byte-exact after the colon */
};

/* The sealer's part: the covered fields (relaxed, CRLF), kept from the
 * header phase (names index the signer's header list). */
struct arc_held {
    size_t hdr;
    size_t off, len;
};

struct mw_arc_msg {
    mw_arc_verifier       *v;
    const mw_dkim_signer  *signer;     /* NULL: not sealing */
    size_t                 key;
    char                  *id;
    bool                   eoh, ended;

    /* the header section, until eoh (verification only) */
    mw_buf                 htext;
    struct arc_field      *hdr;
    size_t                 nhdr;
    bool                   hoverflow;  /* beyond the caps: verification fails */

    /* ARC fields (kept for the sealer's AS): their own text */
    mw_buf                 atext;
    struct arc_field       arc[ARC_MAX_FIELDS];
    enum arc_kind          akind[ARC_MAX_FIELDS];
    size_t                 narc;
    size_t                 narc_seen;  /* including those beyond ARC_MAX_FIELDS */
    size_t                 set[MW_ARC_MAX_INSTANCES + 1][3];   /* index into arc, per i/kind */

    /* verification state (arc.c) */
    struct arc_verify     *vs;

    /* body canonicalizers by canonicalization, on demand */
    bool                   want[2];
    mw_dkim_bodycanon      body[2];
    bool                   bh_done[2], bh_ok[2];
    unsigned char          bh[2][MW_DKIM_SHA256_LEN];

    /* sealing (arc_sign.c) */
    mw_buf                 stext;
    struct arc_held       *held;
    size_t                 nheld;
};

/* arc.c: the body hash for canonicalization c (finalized once); false when
 * it cannot be had. */
bool mw_arc_body_hash(mw_arc_msg *m, mw_dkim_canon c, unsigned char out[MW_DKIM_SHA256_LEN]);

/* arc_sign.c: the sealer's part of the header phase. */
void mw_arc_seal_header(mw_arc_msg *m, const char *name, size_t nlen, const char *value, size_t vlen);
void mw_arc_seal_free(mw_arc_msg *m);

#endif
