/*
 * dkim_canon.h - DKIM canonicalization (RFC 6376 §3.4) for the signer:
 * a streaming body canonicalizer that feeds one SHA-256 context, and the
 * header canonicalizations.  Private to filter/checks (dkim_sign.c).
 */
#ifndef MW_CHECKS_DKIM_CANON_H
#define MW_CHECKS_DKIM_CANON_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#include "buf.h"

#define MW_DKIM_SHA256_LEN 32

typedef enum mw_dkim_canon { MW_DKIM_CANON_SIMPLE = 0, MW_DKIM_CANON_RELAXED } mw_dkim_canon;

/*
 * Body canonicalizer: body bytes in any chunking, CRLF or bare-LF line ends
 * (bare LF is taken as CRLF; a CR/LF pair split across chunks is one line
 * end; a CR not followed by LF is data), canonicalized on the fly into a
 * small buffer that is hashed when full.  Empty lines are held back (as a
 * count) until content follows, so trailing ones are dropped without
 * buffering the body.
 */
typedef struct mw_dkim_bodycanon {
    EVP_MD_CTX   *md;
    mw_dkim_canon canon;
    bool          cr;        /* input: a CR whose meaning the next byte decides */
    bool          bol;       /* output: at the start of a line (nothing of it emitted) */
    bool          wsp;       /* relaxed: blanks seen since the line's last content byte */
    bool          any;       /* anything emitted */
    bool          failed;    /* a digest call failed */
    size_t        nempty;    /* empty lines held back */
    size_t        n;         /* bytes in out */
    unsigned char out[4096];
} mw_dkim_bodycanon;

/* false when the digest cannot be set up (md: a fetched SHA-256). */
bool mw_dkim_bodycanon_init(mw_dkim_bodycanon *c, const EVP_MD *md, mw_dkim_canon canon);
void mw_dkim_bodycanon_update(mw_dkim_bodycanon *c, const unsigned char *p, size_t len);
/* The body hash; false if any digest step failed.  Frees the digest context. */
bool mw_dkim_bodycanon_final(mw_dkim_bodycanon *c, unsigned char hash[MW_DKIM_SHA256_LEN]);
void mw_dkim_bodycanon_clear(mw_dkim_bodycanon *c);

/*
 * One header field, canonicalized and appended to out:
 *   simple:  name ":" value, bare LF made CRLF, byte-exact otherwise;
 *   relaxed: name lower-cased without trailing blanks, ":", value unfolded
 *            (CRLF / LF removed), blank runs made one SP, leading and
 *            trailing blanks removed.
 * crlf: append CRLF (every signed header; not the DKIM-Signature itself).
 */
void mw_dkim_hcanon(mw_buf *out, mw_dkim_canon canon, const char *name, size_t nlen,
                    const char *value, size_t vlen, bool crlf);

#endif
