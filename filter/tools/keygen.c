/*
 * keygen.c - `mailwarden keygen`: make a DKIM key pair.
 *
 *   mailwarden keygen --domain D --selector S [--type rsa|ed25519] [--bits N] [--out DIR]
 *                     [--user USER] [-c FILE]
 *
 * Writes DIR/S.private (PEM, PKCS#8, mode 0600, created with O_EXCL: an
 * existing key is never overwritten) and prints the DNS TXT record to
 * publish, in zone-file syntax with the value split into strings of at most
 * 255 bytes:
 *
 *   S._domainkey.D. IN TXT ( "v=DKIM1; k=rsa; p=..." "..." )
 *
 * Ed25519 records carry k=ed25519 and the raw 32-byte public key (RFC 8463).
 * The private key is wiped from memory after writing and never printed.
 *
 * Owner (why): the daemon reads its keys after dropping privileges, and the
 * signer refuses a key any other user can read, so a key written by root
 * for a daemon running as `mailwarden` could be used by nobody.  The key is
 * given to USER (--user; default: the configured `user`, from -c FILE or
 * the default configuration) before it is closed, a directory keygen
 * creates too, and then a child process that has become USER opens the key:
 * if USER cannot read it (a directory on the way not searchable by it),
 * keygen says so and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "dkim.h"
#include "privs.h"
#include "strutil.h"
#include "tools.h"
#include "fileio.h"

static int usage(void)
{
    fprintf(stderr, "usage: mailwarden keygen --domain DOMAIN --selector SELECTOR "
                    "[--type rsa|ed25519] [--bits N] [--out DIR] [--user USER] [-c FILE]\n"
                    "--user: the key's owner (default: the configuration's `user`; the daemon must "
                    "be able to read it)\n");
    return 2;
}

static bool write_private(const char *path, const mw_buf *pem, const mw_privs *pv)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t off = 0;

    if (fd < 0) {
        fprintf(stderr, "mailwarden keygen: %s: %s\n", path, strerror(errno));
        return false;
    }
    if (mw_write_all(fd, pem->data, pem->len))
        off = pem->len;
    if (off == pem->len && pv->change && fchown(fd, pv->uid, pv->gid) != 0) {
        fprintf(stderr, "mailwarden keygen: %s: cannot give it to %s:%s: %s\n", path, pv->user, pv->group,
                strerror(errno));
        close(fd);
        unlink(path);
        return false;
    }
    if (off != pem->len || fsync(fd) != 0 || close(fd) != 0) {
        fprintf(stderr, "mailwarden keygen: %s: write failed: %s\n", path, strerror(errno));
        unlink(path);
        return false;
    }
    return true;
}

/* Can pv's user open path for reading?  Checked for real, in a child that
 * has become that user.  true when nothing is to change. */
static bool readable_by(const char *path, const mw_privs *pv)
{
    char err[512];
    if (!pv->change)
        return true;
    if (mw_privs_can_read(pv, path, err, sizeof err))
        return true;
    fprintf(stderr, "mailwarden keygen: %s (make every directory on the way searchable by it)\n", err);
    return false;
}

/* The record's value as zone-file character-strings of <= 255 bytes. */
static void print_record(const char *sel, const char *dom, const char *k, const char *p)
{
    mw_buf v = MW_BUF_INIT;

    mw_buf_printf(&v, "v=DKIM1; k=%s; p=%s", k, p);
    printf("%s._domainkey.%s. IN TXT (", sel, dom);
    for (size_t off = 0; off < v.len; off += 255) {
        size_t n = v.len - off < 255 ? v.len - off : 255;
        printf(" \"%.*s\"", (int)n, v.data + off);
    }
    printf(" )\n");
    mw_buf_free(&v);
}

int mw_cmd_keygen(int argc, char **argv)
{
    const char *domain = NULL, *selector = NULL, *type = "rsa", *out = ".", *user = NULL;
    mw_cli cli = {0};
    unsigned bits = 0;
    mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT, path = MW_BUF_INIT;
    char err[256];
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 0;
        }
        if (val == NULL)
            return usage();
        if (strcmp(a, "--domain") == 0 || strcmp(a, "-d") == 0)
            domain = val;
        else if (strcmp(a, "--selector") == 0 || strcmp(a, "-s") == 0)
            selector = val;
        else if (strcmp(a, "--type") == 0 || strcmp(a, "-t") == 0)
            type = val;
        else if (strcmp(a, "--bits") == 0 || strcmp(a, "-b") == 0) {
            char *end;
            unsigned long b = strtoul(val, &end, 10);
            if (*end != '\0' || b == 0 || b > 16384) {
                fprintf(stderr, "mailwarden keygen: --bits \"%s\": not a key size\n", val);
                return 2;
            }
            bits = (unsigned)b;
        } else if (strcmp(a, "--out") == 0 || strcmp(a, "-o") == 0)
            out = val;
        else if (strcmp(a, "--user") == 0 || strcmp(a, "-u") == 0)
            user = val;
        else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
            cli.config_file = val;
        else
            return usage();
        i++;
    }
    if (domain == NULL || selector == NULL)
        return usage();
    if (!mw_domain_valid(domain)) {
        fprintf(stderr, "mailwarden keygen: --domain \"%s\": not a valid domain name\n", domain);
        return 2;
    }
    for (const char *c = selector; *c != '\0'; c++) {
        if (!(*c == '-' || *c == '_' || *c == '.' || (*c >= '0' && *c <= '9') ||
              (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')) || selector[0] == '.') {
            fprintf(stderr, "mailwarden keygen: --selector \"%s\": letters, digits, '-', '_' "
                            "and '.' only\n", selector);
            return 2;
        }
    }
    if (strcasecmp(type, "ed25519") == 0 && bits != 0 && bits != 256) {
        fprintf(stderr, "mailwarden keygen: Ed25519 keys have no --bits choice\n");
        return 2;
    }
    /* the owner: --user, else the configured user ("" keeps ours) */
    mw_privs pv;
    char perr[512];
    const char *group = NULL;
    mw_config *cfg = NULL;
    if (user == NULL) {
        cfg = mw_cli_load(&cli);
        if (cfg == NULL)
            return 2;
        user = cfg->user;
        group = cfg->group;
    }
    if (mw_privs_resolve(user, group, &pv, perr, sizeof perr) != 0) {
        fprintf(stderr, "mailwarden keygen: %s\n", perr);
        mw_config_free(&cfg);
        return 2;
    }
    mw_config_free(&cfg);
    if (!pv.change && geteuid() == 0)
        fprintf(stderr, "mailwarden keygen: note: the key will belong to root; a daemon running as another "
                        "user (the systemd unit runs as mailwarden) cannot read it: use --user\n");
    if (!mw_dkim_keygen(type, bits, &pem, &p, err, sizeof err)) {
        fprintf(stderr, "mailwarden keygen: %s\n", err);
        return 2;
    }
    mw_buf_printf(&path, "%s/%s.private", out, selector);
    /* Create the key directory if it is missing: private to its owner. */
    bool made = mkdir(out, 0700) == 0;
    if (!made && errno != EEXIST) {
        fprintf(stderr, "mailwarden keygen: cannot create %s: %s\n", out, strerror(errno));
    } else if (made && pv.change && chown(out, pv.uid, pv.gid) != 0) {
        fprintf(stderr, "mailwarden keygen: cannot give %s to %s: %s\n", out, pv.user, strerror(errno));
    } else if (!write_private(path.data, &pem, &pv)) {
        /* said why */
    } else if (!readable_by(path.data, &pv)) {
        fprintf(stderr, "mailwarden keygen: the key %s was written, but the daemon's user cannot read it\n",
                path.data);
    } else {
        fprintf(stderr, "mailwarden keygen: private key written to %s (owner %s, mode 0600); publish:\n",
                path.data, pv.user);
        print_record(selector, domain, strcasecmp(type, "ed25519") == 0 ? "ed25519" : "rsa", p.data);
        rc = 0;
    }
    if (pem.data != NULL)
        explicit_bzero(pem.data, pem.len);
    mw_buf_free(&pem);
    mw_buf_free(&p);
    mw_buf_free(&path);
    return rc;
}
