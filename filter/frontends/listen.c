/*
 * listen.c - listening sockets of the MTA front ends (listen.h).
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int listen_unix(const char *path, int mode, int backlog, char **unix_path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (path[0] != '/' || strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "bad unix socket path \"%s\" (absolute, shorter than %zu bytes)", path,
                 sizeof sa.sun_path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);   /* stale socket from an earlier run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on unix:%s: socket: %s", path, strerror(errno));
        return -1;
    }
    /* The socket file gets 0777 & ~umask at bind: with this umask it has
     * its final mode from the start.  The umask is process-wide; binding
     * happens at start-up, before the connection threads run. */
    mode_t old = 0;
    if (mode)
        old = umask((mode_t)(~mode & 0777));
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    int bind_errno = errno;
    if (mode)
        umask(old);
    if (rc != 0 || listen(fd, backlog) != 0) {
        snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(rc != 0 ? bind_errno : errno));
        close(fd);
        return -1;
    }
    *unix_path = strdup(path);
    return fd;
}

static int listen_inet(bool v6, const char *spec, const char *rest, int backlog, char *err, size_t errlen)
{
    char port[16], host[256];
    const char *at = strchr(rest, '@');
    size_t pl = at ? (size_t)(at - rest) : strlen(rest);
    if (pl == 0 || pl >= sizeof port || strspn(rest, "0123456789") != pl ||
        (at && (at[1] == '\0' || strlen(at + 1) >= sizeof host))) {
        snprintf(err, errlen, "bad socket \"%s\": expected %s:PORT or %s:PORT@HOST", spec,
                 v6 ? "inet6" : "inet", v6 ? "inet6" : "inet");
        return -1;
    }
    memcpy(port, rest, pl);
    port[pl] = '\0';
    /* no host: loopback, never every interface */
    snprintf(host, sizeof host, "%s", at ? at + 1 : v6 ? "::1" : "127.0.0.1");
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = v6 ? AF_INET6 : AF_INET, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *ai = NULL;
    int gr = getaddrinfo(host, port, &hints, &ai);
    if (gr != 0) {
        snprintf(err, errlen, "bad socket \"%s\": %s", spec, gai_strerror(gr));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        snprintf(err, errlen, "cannot listen on %s (in use, or no permission?): %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int mw_listen_open(const char *spec, int mode, int backlog, char **unix_path, char *err, size_t errlen)
{
    *unix_path = NULL;
    if (spec == NULL)
        spec = "";
    if (strncmp(spec, "unix:", 5) == 0)
        return listen_unix(spec + 5, mode, backlog, unix_path, err, errlen);
    if (strncmp(spec, "local:", 6) == 0)
        return listen_unix(spec + 6, mode, backlog, unix_path, err, errlen);
    if (spec[0] == '/')
        return listen_unix(spec, mode, backlog, unix_path, err, errlen);
    if (strncmp(spec, "inet:", 5) == 0)
        return listen_inet(false, spec, spec + 5, backlog, err, errlen);
    if (strncmp(spec, "inet6:", 6) == 0)
        return listen_inet(true, spec, spec + 6, backlog, err, errlen);
    snprintf(err, errlen, "bad socket \"%s\" (expected inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH)", spec);
    return -1;
}

bool mw_listen_peer(int fd, mw_addr *a, char *text, size_t len)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl = sizeof ss;
    mw_addr tmp = {0};
    uint16_t port = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        ss.ss_family = AF_UNSPEC;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)&ss;
        tmp.family = AF_INET;
        memcpy(tmp.bytes, &s4->sin_addr, 4);
        port = ntohs(s4->sin_port);
    } else if (ss.ss_family == AF_INET6 && sl >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)&ss;
        tmp.family = AF_INET6;
        memcpy(tmp.bytes, &s6->sin6_addr, 16);
        port = ntohs(s6->sin6_port);
        mw_addr_unmap(&tmp);
    } else {
        snprintf(text, len, "unix");
        return false;
    }
    char buf[64];
    snprintf(text, len, "[%s]:%u", mw_addr_format(&tmp, buf, sizeof buf), (unsigned)port);
    if (a)
        *a = tmp;
    return true;
}
