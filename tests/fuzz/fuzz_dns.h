/*
 * fuzz_dns.h - a tiny in-process DNS responder for the fuzz targets that
 * need a resolver (DKIM key lookups, the engine).  UDP on 127.0.0.1, port
 * chosen by the kernel, one thread.  Every TXT query is answered with the
 * text set by fz_dns_set_txt() (TTL 0; NXDOMAIN when none is set); every
 * other type gets NOERROR with no answers.  Instant answers keep the
 * targets fast (a silent resolver costs the 100 ms minimum timeout per
 * lookup) and put the fuzzer's bytes into the TXT answers our code turns
 * into libopendkim's wire-format replies.
 */
#ifndef MW_FUZZ_DNS_H
#define MW_FUZZ_DNS_H

#include <arpa/inet.h>
#include <stdio.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FZ_DNS_MAX_TXT 3000

static pthread_mutex_t fz_dns_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char fz_dns_txt[FZ_DNS_MAX_TXT];
static size_t fz_dns_txt_len;
static int fz_dns_have_txt;
static int fz_dns_fd = -1;
static unsigned long fz_dns_queries, fz_dns_txt_answers;   /* MW_FUZZ_DEBUG=1 prints them at exit */

static void fz_dns_report(void) __attribute__((destructor));
static void fz_dns_report(void)
{
    if (fz_dns_fd >= 0 && getenv("MW_FUZZ_DEBUG"))
        fprintf(stderr, "fuzz_dns: %lu queries, %lu TXT answers\n", fz_dns_queries, fz_dns_txt_answers);
}

static void fz_dns_set_txt(const void *p, size_t n)
{
    pthread_mutex_lock(&fz_dns_mu);
    if (p == NULL) {
        fz_dns_have_txt = 0;
    } else {
        fz_dns_txt_len = n > FZ_DNS_MAX_TXT ? FZ_DNS_MAX_TXT : n;
        memcpy(fz_dns_txt, p, fz_dns_txt_len);
        fz_dns_have_txt = 1;
    }
    pthread_mutex_unlock(&fz_dns_mu);
}

static void *fz_dns_main(void *arg)
{
    (void)arg;
    unsigned char q[1500], r[FZ_DNS_MAX_TXT + 1600];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fz_dns_fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
        if (n < 12)
            continue;
        size_t i = 12;
        while (i < (size_t)n && q[i] != 0 && (q[i] & 0xc0) == 0)
            i += (size_t)q[i] + 1;
        if (i + 5 > (size_t)n || q[i] != 0)
            continue;
        size_t qend = i + 5;   /* root label, qtype, qclass */
        unsigned qtype = (unsigned)q[i + 1] << 8 | q[i + 2];
        memcpy(r, q, qend);
        r[2] = (unsigned char)(0x84 | (q[2] & 0x01));   /* QR AA, RD copied */
        r[3] = 0x80;                                    /* RA, NOERROR */
        r[4] = 0, r[5] = 1;                             /* QDCOUNT 1 */
        memset(r + 6, 0, 6);                            /* AN/NS/AR 0 (EDNS dropped) */
        size_t o = qend;
        pthread_mutex_lock(&fz_dns_mu);
        fz_dns_queries++;
        if (qtype == 16 && fz_dns_have_txt)
            fz_dns_txt_answers++;
        if (qtype == 16 && !fz_dns_have_txt) {
            r[3] = 0x83;   /* NXDOMAIN */
        } else if (qtype == 16) {
            r[7] = 1;
            static const unsigned char rr[] = {0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 0};
            memcpy(r + o, rr, sizeof rr);
            o += sizeof rr;
            size_t rdlen_at = o;
            o += 2;
            size_t done = 0;
            do {   /* character-strings of at most 255 bytes; an empty text is one empty string */
                size_t k = fz_dns_txt_len - done > 255 ? 255 : fz_dns_txt_len - done;
                r[o++] = (unsigned char)k;
                memcpy(r + o, fz_dns_txt + done, k);
                o += k;
                done += k;
            } while (done < fz_dns_txt_len);
            size_t rdlen = o - rdlen_at - 2;
            r[rdlen_at] = (unsigned char)(rdlen >> 8);
            r[rdlen_at + 1] = (unsigned char)rdlen;
        }
        pthread_mutex_unlock(&fz_dns_mu);
        (void)sendto(fz_dns_fd, r, o, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

/* Start the responder; returns its UDP port. */
static int fz_dns_start(void)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fz_dns_fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fz_dns_fd < 0 || bind(fz_dns_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fz_dns_fd, (struct sockaddr *)&a, &al) != 0)
        abort();
    pthread_t t;
    if (pthread_create(&t, NULL, fz_dns_main, NULL) != 0)
        abort();
    pthread_detach(t);
    return ntohs(a.sin_port);
}

#endif
