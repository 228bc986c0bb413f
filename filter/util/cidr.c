/*
 * cidr.c - immutable sets of IPv4/IPv6 networks.
 *
 * A linear list: sets are small (internal networks, allow lists) and a
 * prefix compare is a few instructions.  Thread-safe for readers once built.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "cidr.h"

struct net {
    mw_addr addr;
    unsigned prefix;
};

struct mw_cidr_set {
    struct net *nets;
    size_t n, cap;
};

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool mw_host_is_loopback(const char *host)
{
    static const uint8_t v6lo[16] = {[15] = 1};
    mw_addr a;

    if (host == NULL)
        return false;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (!mw_addr_parse(host, &a))
        return false;
    mw_addr_unmap(&a);
    return (a.family == AF_INET && a.bytes[0] == 127) ||
           (a.family == AF_INET6 && memcmp(a.bytes, v6lo, 16) == 0);
}

bool mw_addr_parse(const char *s, mw_addr *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return false;
    if (inet_pton(AF_INET, s, out->bytes) == 1) {
        out->family = AF_INET;
        return true;
    }
    /* Accept "IPv6:" prefixes (Sendmail/SMTP address literals) and brackets. */
    char tmp[64];
    const char *p = s;
    if (strncasecmp(p, "ipv6:", 5) == 0)
        p += 5;
    size_t n = strlen(p);
    if (n && p[0] == '[' && p[n - 1] == ']') {
        p++;
        n -= 2;
    }
    if (n >= sizeof tmp)
        return false;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET6, tmp, out->bytes) == 1) {
        out->family = AF_INET6;
        return true;
    }
    if (inet_pton(AF_INET, tmp, out->bytes) == 1) {
        out->family = AF_INET;
        return true;
    }
    return false;
}

void mw_addr_unmap(mw_addr *a)
{
    if (a->family == AF_INET6 && memcmp(a->bytes, v4mapped, 12) == 0) {
        memmove(a->bytes, a->bytes + 12, 4);
        memset(a->bytes + 4, 0, 12);
        a->family = AF_INET;
    }
}

const char *mw_addr_format(const mw_addr *a, char *buf, size_t len)
{
    if (!inet_ntop(a->family, a->bytes, buf, (socklen_t)len))
        snprintf(buf, len, "?");
    return buf;
}

mw_cidr_set *mw_cidr_set_new(void)
{
    return mw_calloc(1, sizeof(mw_cidr_set));
}

mw_cidr_set *mw_cidr_set_copy(const mw_cidr_set *src)
{
    mw_cidr_set *s = mw_cidr_set_new();
    if (src && src->n) {
        s->nets = mw_reallocarray(NULL, src->n, sizeof *s->nets);
        memcpy(s->nets, src->nets, src->n * sizeof *s->nets);
        s->n = s->cap = src->n;
    }
    return s;
}

void mw_cidr_set_free(mw_cidr_set **set)
{
    if (!set || !*set)
        return;
    free((*set)->nets);
    free(*set);
    *set = NULL;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((a[full] & mask) != (b[full] & mask))
            return false;
    }
    return true;
}

bool mw_cidr_set_add(mw_cidr_set *set, const char *spec, char *why, size_t whylen)
{
    char tmp[80];
    if (!spec || strlen(spec) >= sizeof tmp) {
        if (why)
            snprintf(why, whylen, "bad network \"%.60s\"", spec ? spec : "(null)");
        return false;
    }
    strcpy(tmp, spec);
    char *slash = strchr(tmp, '/');
    long prefix = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        if (!slash[1] || slash[1] == '-' || slash[1] == '+') {
            if (why)
                snprintf(why, whylen, "bad prefix length in \"%s\"", spec);
            return false;
        }
        prefix = strtol(slash + 1, &end, 10);
        if (*end) {
            if (why)
                snprintf(why, whylen, "bad prefix length in \"%s\"", spec);
            return false;
        }
    }
    struct net net;
    if (!mw_addr_parse(tmp, &net.addr)) {
        if (why)
            snprintf(why, whylen, "bad address in \"%s\"", spec);
        return false;
    }
    unsigned max = net.addr.family == AF_INET ? 32 : 128;
    if (prefix < 0)
        prefix = max;
    if (prefix > (long)max) {
        if (why)
            snprintf(why, whylen, "prefix length %ld too long for \"%s\"", prefix, spec);
        return false;
    }
    net.prefix = (unsigned)prefix;
    /* host bits set below the prefix: almost always a typo */
    mw_addr masked = net.addr;
    unsigned nbytes = max / 8;
    for (unsigned bit = net.prefix; bit < max; bit++)
        masked.bytes[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
    if (memcmp(masked.bytes, net.addr.bytes, nbytes) != 0) {
        if (why)
            snprintf(why, whylen, "\"%s\" has host bits set (network address expected)", spec);
        return false;
    }
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 8;
        set->nets = mw_reallocarray(set->nets, set->cap, sizeof *set->nets);
    }
    set->nets[set->n++] = net;
    return true;
}

bool mw_cidr_set_contains(const mw_cidr_set *set, const mw_addr *a)
{
    if (!set || !a)
        return false;
    mw_addr u = *a;
    mw_addr_unmap(&u);
    for (size_t i = 0; i < set->n; i++) {
        const struct net *n = &set->nets[i];
        if (n->addr.family == u.family && prefix_eq(n->addr.bytes, u.bytes, n->prefix))
            return true;
        /* An IPv6 entry written as ::ffff:a.b.c.d/N matches plain IPv4 too. */
        if (n->addr.family == AF_INET6 && u.family == AF_INET && n->prefix >= 96 &&
            memcmp(n->addr.bytes, v4mapped, 12) == 0) {
            uint8_t mapped[16];
            memcpy(mapped, v4mapped, 12);
            memcpy(mapped + 12, u.bytes, 4);
            if (prefix_eq(n->addr.bytes, mapped, n->prefix))
                return true;
        }
    }
    return false;
}

bool mw_cidr_set_contains_str(const mw_cidr_set *set, const char *ip)
{
    mw_addr a;
    return mw_addr_parse(ip, &a) && mw_cidr_set_contains(set, &a);
}

size_t mw_cidr_set_count(const mw_cidr_set *set)
{
    return set ? set->n : 0;
}

const char *mw_cidr_set_entry(const mw_cidr_set *set, size_t i, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];

    if (set == NULL || i >= set->n)
        return NULL;
    snprintf(buf, len, "%s/%u", mw_addr_format(&set->nets[i].addr, a, sizeof a), set->nets[i].prefix);
    return buf;
}
