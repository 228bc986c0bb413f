/*
 * dmarc_priv.h - internals shared by the DMARC module's files (dmarc.c,
 * dmarc_psl.c); not part of the interface.
 */
#ifndef MW_CHECKS_DMARC_PRIV_H
#define MW_CHECKS_DMARC_PRIV_H

#include <stdbool.h>
#include <stddef.h>

/* The public suffix list (RFC 7489 mode), immutable after load. */
typedef struct mw_psl mw_psl;

/* Load a publicsuffix.org list file (ICANN and private sections alike, as
 * libopendmarc does).  NULL + reason on error. */
mw_psl *mw_psl_load(const char *path, char *err, size_t errlen);
void mw_psl_free(mw_psl **psl);
size_t mw_psl_nrules(const mw_psl *psl);

/* Organizational domain of a lower-case name without trailing dot (RFC
 * 7489 §3.2): the public suffix plus one label; the name itself when it is
 * a public suffix.  Caller frees. */
char *mw_psl_org_domain(const mw_psl *psl, const char *name);

#endif
