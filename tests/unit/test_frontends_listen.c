/*
 * test_frontends_listen.c - the front ends' listening sockets (listen.h):
 * a spec without a host binds loopback (never every interface), an
 * explicit host is honoured, a unix socket is created with its configured
 * mode whatever the process umask, a stale socket file is replaced, bad
 * specs are refused with a reason, and mw_listen_peer() reads a TCP peer.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "listen.h"
#include "mwtest.h"

/* The bound address of fd as text, and its port. */
static const char *bound(int fd, char *buf, size_t len, unsigned *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    buf[0] = '\0';
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return buf;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)(void *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, buf, (socklen_t)len);
        *port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, buf, (socklen_t)len);
        *port = ntohs(a->sin6_port);
    }
    return buf;
}

static void test_no_host_is_loopback(void)
{
    char err[300], buf[64];
    char *up = NULL;
    unsigned port = 0;
    int fd = mw_listen_open("inet:0", 0, 4, &up, err, sizeof err);
    if (MW_TEST_ASSERT(fd >= 0)) {
        MW_TEST_EQ_STR(bound(fd, buf, sizeof buf, &port), "127.0.0.1");
        MW_TEST_ASSERT(up == NULL);
        close(fd);
    }
    fd = mw_listen_open("inet6:0", 0, 4, &up, err, sizeof err);
    if (fd >= 0) {   /* no IPv6 loopback in some containers */
        MW_TEST_EQ_STR(bound(fd, buf, sizeof buf, &port), "::1");
        close(fd);
    }
    /* every interface only when asked for */
    fd = mw_listen_open("inet:0@0.0.0.0", 0, 4, &up, err, sizeof err);
    if (MW_TEST_ASSERT(fd >= 0)) {
        MW_TEST_EQ_STR(bound(fd, buf, sizeof buf, &port), "0.0.0.0");
        close(fd);
    }
    fd = mw_listen_open("inet:0@127.0.0.2", 0, 4, &up, err, sizeof err);
    if (MW_TEST_ASSERT(fd >= 0)) {
        MW_TEST_EQ_STR(bound(fd, buf, sizeof buf, &port), "127.0.0.2");
        close(fd);
    }
}

static void test_peer(void)
{
    char err[300], buf[64], text[80];
    char *up = NULL;
    unsigned port = 0;
    int lfd = mw_listen_open("inet:0", 0, 4, &up, err, sizeof err);
    if (!MW_TEST_ASSERT(lfd >= 0))
        return;
    bound(lfd, buf, sizeof buf, &port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.2", &src.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    MW_TEST_ASSERT(bind(c, (struct sockaddr *)&src, sizeof src) == 0);
    MW_TEST_ASSERT(connect(c, (struct sockaddr *)&dst, sizeof dst) == 0);
    int a = accept(lfd, NULL, NULL);
    mw_addr peer;
    MW_TEST_ASSERT(mw_listen_peer(a, &peer, text, sizeof text));
    MW_TEST_EQ_INT(peer.family, AF_INET);
    MW_TEST_ASSERT(strncmp(text, "[127.0.0.2]:", 12) == 0);
    close(a);
    close(c);
    close(lfd);
}

static void test_unix_mode(const char *dir)
{
    char path[200], spec[220], err[300];
    char *up = NULL;
    struct stat st;
    snprintf(path, sizeof path, "%s/s", dir);
    snprintf(spec, sizeof spec, "unix:%s", path);
    mode_t old = umask(022);   /* a bind alone would give 0755 */
    static const int modes[] = {0600, 0660, 0666};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        int fd = mw_listen_open(spec, modes[i], 4, &up, err, sizeof err);   /* replaces the stale one */
        if (!MW_TEST_ASSERT(fd >= 0)) {
            fprintf(stderr, "  %s\n", err);
            continue;
        }
        MW_TEST_EQ_STR(up, path);
        MW_TEST_ASSERT(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
        MW_TEST_EQ_INT(st.st_mode & 0777, modes[i]);
        free(up);
        close(fd);
    }
    MW_TEST_EQ_INT(umask(old), 022);   /* the process umask is back */
    /* a path holding another kind of file is never removed */
    unlink(path);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
    MW_TEST_ASSERT(mw_listen_open(spec, 0600, 4, &up, err, sizeof err) < 0);
    MW_TEST_ASSERT(access(path, F_OK) == 0);
    unlink(path);
}

static void test_bad_specs(void)
{
    static const char *const bad[] = {"", "tcp:25", "inet:", "inet:x", "inet:25@", "unix:relative", "8894"};
    char err[300];
    char *up = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        MW_TEST_ASSERT(mw_listen_open(bad[i], 0, 4, &up, err, sizeof err) < 0);
        MW_TEST_ASSERT(err[0] != '\0');
    }
}

int main(void)
{
    char dir[] = "/tmp/mw-listen-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    MW_TEST_RUN(test_no_host_is_loopback);
    MW_TEST_RUN(test_peer);
    test_unix_mode(dir);
    MW_TEST_RUN(test_bad_specs);
    rmdir(dir);
    return MW_TEST_SUMMARY();
}
