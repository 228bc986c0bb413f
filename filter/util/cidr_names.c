/*
 * cidr_names.c - address lists with host names and files of entries
 * (cidr_names.h).
 *
 * Why here: trust.internal_networks and OpenDKIM's InternalHosts files
 * list hosts by name as often as by address.  The client is matched by
 * address (a PTR name is the client's to choose), so a name is turned into
 * its addresses once, when the list is built: at config load, and so again
 * at every reload.  A name that does not resolve then is an error with
 * FILE:LINE, because dropping it would silently move that host's mail from
 * "internal" (signed) to "inbound" (verified, maybe refused).
 *
 * Diagnostics: reasons into the caller's buffer or err callback; nothing
 * is logged here.
 */
#include "cidr_names.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "alloc.h"
#include "strutil.h"

#define LINE_MAX_BYTES 4096

struct adder {
    mw_cidr_set *set;
    size_t       n;
    bool         bad;
};

static void add_addr(void *arg, const mw_addr *a)
{
    struct adder *ad = arg;
    char text[64];

    if (!mw_cidr_set_add(ad->set, mw_addr_format(a, text, sizeof text), NULL, 0))
        ad->bad = true;
    else
        ad->n++;
}

mw_cidr_name_status mw_cidr_resolve_system(void *ctx, const char *name,
                                           void (*add)(void *arg, const mw_addr *a), void *arg,
                                           char *why, size_t whylen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    size_t n = 0;
    (void)ctx;

    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        bool temp = rc == EAI_AGAIN || (rc == EAI_SYSTEM && errno != ENOENT);
        if (why != NULL)
            snprintf(why, whylen, "%s", temp ? "temporary resolution failure" : gai_strerror(rc));
        return temp ? MW_CIDR_NAME_TEMPFAIL : MW_CIDR_NAME_NOTFOUND;
    }
    for (struct addrinfo *p = res; p != NULL; p = p->ai_next) {
        mw_addr a = {.family = p->ai_family};
        if (p->ai_family == AF_INET)
            memcpy(a.bytes, &((struct sockaddr_in *)(void *)p->ai_addr)->sin_addr, 4);
        else if (p->ai_family == AF_INET6)
            memcpy(a.bytes, &((struct sockaddr_in6 *)(void *)p->ai_addr)->sin6_addr, 16);
        else
            continue;
        add(arg, &a);
        n++;
    }
    freeaddrinfo(res);
    if (n == 0 && why != NULL)
        snprintf(why, whylen, "no IPv4 or IPv6 address");
    return n > 0 ? MW_CIDR_NAME_OK : MW_CIDR_NAME_NOTFOUND;
}

/* Looks like an address or network (so a parse error is reported as such). */
static bool addressish(const char *s)
{
    if (strchr(s, ':') != NULL || strchr(s, '/') != NULL)
        return true;
    for (; *s != '\0'; s++)
        if (!isdigit((unsigned char)*s) && *s != '.')
            return false;
    return true;
}

/* "\"entry\"" followed by msg into why; false. */
static bool fail(char *why, size_t whylen, const char *entry, const char *msg)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "\"%s\"%s", entry, msg);
    return false;
}

static const mw_cidr_resolver sys_resolver = {.fn = mw_cidr_resolve_system};
static const mw_cidr_resolver *default_resolver = &sys_resolver;

void mw_cidr_names_set_default_resolver(const mw_cidr_resolver *r)
{
    default_resolver = r != NULL ? r : &sys_resolver;
}

bool mw_cidr_names_add(mw_cidr_set *set, const char *entry, const mw_cidr_resolver *r, char *why,
                       size_t whylen)
{
    char buf[300];
    size_t len = strlen(entry);

    if (len == 0)
        return fail(why, whylen, "", ": empty entry");
    if (entry[0] == '!')
        return fail(why, whylen, entry, ": negations (!) are not supported; list only the hosts "
                    "and networks that are in");
    if (entry[0] == '.' || strchr(entry, '*') != NULL)
        return fail(why, whylen, entry, ": host-name patterns are not supported (the client is "
                    "matched by address); list its networks, or its host names");
    /* OpenDKIM accepts "[192.0.2.1]" */
    if (entry[0] == '[' && len < sizeof buf && entry[len - 1] == ']') {
        memcpy(buf, entry + 1, len - 2);
        buf[len - 2] = '\0';
        entry = buf;
    }
    if (addressish(entry))
        return mw_cidr_set_add(set, entry, why, whylen);
    if (!mw_domain_valid(entry))
        return fail(why, whylen, entry, " is not an address, a network (CIDR) or a host name");
    if (r == NULL)
        r = default_resolver;
    struct adder ad = {.set = set};
    char reason[200] = "";
    mw_cidr_name_status st = r->fn(r->ctx, entry, add_addr, &ad, reason, sizeof reason);
    if (st != MW_CIDR_NAME_OK || ad.n == 0 || ad.bad) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "host name \"%s\" does not resolve%s (%s)", entry,
                     st == MW_CIDR_NAME_TEMPFAIL ? " now" : "",
                     ad.bad ? "an address could not be added" : reason[0] ? reason : "no address");
        return false;
    }
    return true;
}

const char *mw_cidr_names_file(const char *entry)
{
    if (strncmp(entry, "file:", 5) == 0)
        return entry + 5;
    if (strncmp(entry, "refile:", 7) == 0)
        return entry + 7;
    return entry[0] == '/' ? entry : NULL;
}

/* "PATH:LINE: why" (line 0: "PATH: why") to err; counts one problem. */
static size_t report(void (*err)(void *, const char *), void *arg, const char *path, unsigned line,
                     const char *why)
{
    char msg[1400];
    if (line > 0)
        snprintf(msg, sizeof msg, "%s:%u: %s", path, line, why);
    else
        snprintf(msg, sizeof msg, "%s: %s", path, why);
    err(arg, msg);
    return 1;
}

size_t mw_cidr_names_add_file(mw_cidr_set *set, const char *path, const mw_cidr_resolver *r,
                              void (*err)(void *arg, const char *msg), void *arg)
{
    FILE *f = path[0] == '/' ? fopen(path, "re") : NULL;
    char line[LINE_MAX_BYTES + 2], why[400];
    unsigned lineno = 0;
    size_t nerr = 0;

    if (path[0] != '/')
        return report(err, arg, path, 0, "not an absolute path");
    if (f == NULL) {
        snprintf(why, sizeof why, "cannot open: %s", strerror(errno));
        return report(err, arg, path, 0, why);
    }
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            nerr += report(err, arg, path, lineno, "line longer than 4096 bytes");
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        line[strcspn(line, "#")] = '\0';
        char *save = NULL, *w = strtok_r(line, " \t\r\n", &save);
        if (w == NULL)
            continue;
        if (strtok_r(NULL, " \t\r\n", &save) != NULL) {
            nerr += report(err, arg, path, lineno, "one entry per line expected");
            continue;
        }
        if (!mw_cidr_names_add(set, w, r, why, sizeof why))
            nerr += report(err, arg, path, lineno, why);
    }
    fclose(f);
    return nerr;
}
