/*
 * cidr.h - sets of IPv4/IPv6 networks, for internal networks, allow lists
 * and policy matches.  A set is immutable after building and may be read
 * from any number of threads.
 */
#ifndef MW_UTIL_CIDR_H
#define MW_UTIL_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An address: family AF_INET or AF_INET6; IPv4 stored in the first 4 bytes. */
typedef struct mw_addr {
    int     family;
    uint8_t bytes[16];
} mw_addr;

/*
 * Parse a textual IPv4/IPv6 address.  "::ffff:1.2.3.4" is kept as IPv6; use
 * mw_addr_unmap() to see it as IPv4.  Returns false on bad syntax.
 */
bool mw_addr_parse(const char *s, mw_addr *out);
/* Is host (a bare address or name, no port) loopback: 127.0.0.0/8, ::1
 * (also as ::ffff:127.x) or the name "localhost"?  Other names are not:
 * where they resolve is not known here. */
bool mw_host_is_loopback(const char *host);
/* If a is an IPv4-mapped IPv6 address, turn it into the IPv4 address. */
void mw_addr_unmap(mw_addr *a);
/* Format into buf (at least 46 bytes). */
const char *mw_addr_format(const mw_addr *a, char *buf, size_t len);

typedef struct mw_cidr_set mw_cidr_set;

mw_cidr_set *mw_cidr_set_new(void);
/* A copy of src (NULL: an empty set), owned by the caller. */
mw_cidr_set *mw_cidr_set_copy(const mw_cidr_set *src);
void mw_cidr_set_free(mw_cidr_set **set);
/*
 * Add "ADDR" or "ADDR/LEN".  Host bits set below the prefix are an error
 * ("10.0.0.1/8" is refused: it is almost always a typo).  On error returns
 * false and writes a reason into why (may be NULL).
 */
bool mw_cidr_set_add(mw_cidr_set *set, const char *spec, char *why, size_t whylen);
/* Does the set contain a?  IPv4-mapped IPv6 addresses match IPv4 entries. */
bool mw_cidr_set_contains(const mw_cidr_set *set, const mw_addr *a);
/* Convenience: parse text and test; false for unparsable text. */
bool mw_cidr_set_contains_str(const mw_cidr_set *set, const char *ip);
size_t mw_cidr_set_count(const mw_cidr_set *set);
/* The i-th network of set as "ADDR/PREFIX" into buf (what mw_cidr_set_add
 * reads back); NULL when i is past the end. */
const char *mw_cidr_set_entry(const mw_cidr_set *set, size_t i, char *buf, size_t len);

#endif
