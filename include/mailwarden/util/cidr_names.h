/*
 * cidr_names.h - network lists that also take host names and files of
 * entries: the values of trust.internal_networks and the other CIDR-list
 * keys, and OpenDKIM's InternalHosts / TrustedHosts files.
 *
 * An entry is an address ("192.0.2.1", "[192.0.2.1]", "2001:db8::1"), a
 * network ("192.0.2.0/24"), or a host name, which is resolved when the list
 * is built (at config load, so again at every reload) and adds every
 * address it has (A and AAAA).  A name that does not resolve is an error,
 * never dropped.  A list entry "file:PATH", "refile:PATH" or "/PATH" names
 * a file of entries, one per line, '#' to the end of a line a comment, the
 * form OpenDKIM reads; errors are "PATH:LINE: ...".
 *
 * Host-name matching (".example.com", "*.example.com") and negations
 * ("!192.0.2.1") of OpenDKIM's PeerList form are refused with a reason:
 * mailwarden matches the client's address, never its host name.
 *
 * Resolution goes through a resolver function, so tests need no DNS.
 */
#ifndef MW_UTIL_CIDR_NAMES_H
#define MW_UTIL_CIDR_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "cidr.h"

typedef enum {
    MW_CIDR_NAME_OK,        /* at least one address added */
    MW_CIDR_NAME_NOTFOUND,  /* the name has no address */
    MW_CIDR_NAME_TEMPFAIL   /* the lookup failed for now (no answer) */
} mw_cidr_name_status;

/*
 * A resolver: call add(arg, a) for every address of name; return the
 * status, with a reason in why on failure.  ctx is the resolver's own.
 */
typedef mw_cidr_name_status (*mw_cidr_resolve_fn)(void *ctx, const char *name,
                                                  void (*add)(void *arg, const mw_addr *a),
                                                  void *arg, char *why, size_t whylen);

typedef struct mw_cidr_resolver {
    mw_cidr_resolve_fn fn;
    void              *ctx;
} mw_cidr_resolver;

/* The system resolver: getaddrinfo(3) (nsswitch: /etc/hosts, then DNS). */
mw_cidr_name_status mw_cidr_resolve_system(void *ctx, const char *name,
                                           void (*add)(void *arg, const mw_addr *a), void *arg,
                                           char *why, size_t whylen);

/* The resolver used when a caller passes NULL (the system resolver; NULL
 * restores it).  For fuzzers and tests that load whole configurations and
 * must not wait on DNS for the names they invent.  Not thread-safe: set it
 * before loading. */
void mw_cidr_names_set_default_resolver(const mw_cidr_resolver *r);

/*
 * Add one entry (address, network or host name) to set.  r NULL: the
 * default resolver (the system one unless set above).  false with a reason in why (may be NULL) on error; the
 * set may then hold part of the entry's addresses.
 */
bool mw_cidr_names_add(mw_cidr_set *set, const char *entry, const mw_cidr_resolver *r, char *why,
                       size_t whylen);

/* The path of a file entry ("file:P", "refile:P", "/P"), else NULL.  Borrowed from entry. */
const char *mw_cidr_names_file(const char *entry);

/*
 * Add every entry of the file at path.  Each problem is passed to
 * err(arg, "PATH:LINE: reason") (or "PATH: reason" when the file cannot be
 * read); returns the number of problems (0: all added).  Lines of at most
 * 4096 bytes.
 */
size_t mw_cidr_names_add_file(mw_cidr_set *set, const char *path, const mw_cidr_resolver *r,
                              void (*err)(void *arg, const char *msg), void *arg);

#endif
