/*
 * privs.c - look up the configured user and group, drop root, hand unix
 * sockets over.
 *
 * Order (why): supplementary groups first (root's groups, e.g. disk or
 * shadow, must not survive), then the group ids (setresgid needs root, so
 * it must come before setresuid), then the user ids.  All three ids of
 * each kind (real, effective, saved) change, so nothing can be regained;
 * that is checked afterwards rather than assumed.  Any failure is fatal
 * for the caller: a daemon half-dropped is worse than one not started.
 *
 * See also: serve.c (the order of start-up), report.c, docs/security.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privs.h"

int mw_privs_resolve(const char *user, const char *group, mw_privs *p, char *err, size_t errlen)
{
    char buf[16384];

    memset(p, 0, sizeof *p);
    p->uid = geteuid();
    p->gid = getegid();
    snprintf(p->user, sizeof p->user, "%u", (unsigned)p->uid);
    snprintf(p->group, sizeof p->group, "%u", (unsigned)p->gid);
    if (user != NULL && *user != '\0') {
        struct passwd pw, *res = NULL;
        int rc = getpwnam_r(user, &pw, buf, sizeof buf, &res);
        if (res == NULL) {
            snprintf(err, errlen, "unknown user \"%s\"%s%s", user, rc ? ": " : "", rc ? strerror(rc) : "");
            return -1;
        }
        p->have_user = true;
        p->uid = pw.pw_uid;
        p->gid = pw.pw_gid;
        snprintf(p->user, sizeof p->user, "%s", user);
        snprintf(p->group, sizeof p->group, "%u", (unsigned)p->gid);
    }
    if (group != NULL && *group != '\0') {
        struct group gr, *res = NULL;
        int rc = getgrnam_r(group, &gr, buf, sizeof buf, &res);
        if (res == NULL) {
            snprintf(err, errlen, "unknown group \"%s\"%s%s", group, rc ? ": " : "", rc ? strerror(rc) : "");
            return -1;
        }
        p->gid = gr.gr_gid;
        snprintf(p->group, sizeof p->group, "%s", group);
    } else if (p->have_user) {
        struct group gr, *res = NULL;
        if (getgrgid_r(p->gid, &gr, buf, sizeof buf, &res) == 0 && res != NULL)
            snprintf(p->group, sizeof p->group, "%s", gr.gr_name);
    }
    bool want = p->have_user || (group != NULL && *group != '\0');
    if (!want)
        return 0;
    if (geteuid() == 0) {
        p->change = true;
        return 0;
    }
    /* Not root: only "become who we already are" can be honoured (systemd
     * with User= and the same name in the config). */
    if (p->uid != geteuid() || p->gid != getegid()) {
        snprintf(err, errlen, "not root (uid %u gid %u): cannot change to user %s (uid %u) group %s (gid %u)",
                 (unsigned)geteuid(), (unsigned)getegid(), p->user, (unsigned)p->uid, p->group,
                 (unsigned)p->gid);
        return -1;
    }
    return 0;
}

int mw_privs_drop(const mw_privs *p, char *err, size_t errlen)
{
    if (!p->change)
        return 0;
    if (p->have_user ? initgroups(p->user, p->gid) != 0 : setgroups(1, &p->gid) != 0) {
        snprintf(err, errlen, "cannot set the supplementary groups of %s: %s", p->user, strerror(errno));
        return -1;
    }
    if (setresgid(p->gid, p->gid, p->gid) != 0) {
        snprintf(err, errlen, "setresgid(%u): %s", (unsigned)p->gid, strerror(errno));
        return -1;
    }
    if (setresuid(p->uid, p->uid, p->uid) != 0) {
        snprintf(err, errlen, "setresuid(%u): %s", (unsigned)p->uid, strerror(errno));
        return -1;
    }
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) != 0 || r != p->uid || e != p->uid || s != p->uid ||
        getresgid(&rg, &eg, &sg) != 0 || rg != p->gid || eg != p->gid || sg != p->gid) {
        snprintf(err, errlen, "user or group ids did not all change to uid %u gid %u", (unsigned)p->uid,
                 (unsigned)p->gid);
        return -1;
    }
    if (p->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        snprintf(err, errlen, "root could be regained after dropping privileges");
        return -1;
    }
    if (p->uid != 0 && p->gid != 0 && (setgid(0) == 0 || setegid(0) == 0)) {
        snprintf(err, errlen, "group 0 could be regained after dropping privileges");
        return -1;
    }
    /* Supplementary groups: none of root's may remain (initgroups gave the
     * user's own, which may legitimately include gid 0 only if the group
     * database says so). */
    gid_t groups[256];
    int n = getgroups(256, groups);
    if (n < 0) {
        snprintf(err, errlen, "getgroups: %s", strerror(errno));
        return -1;
    }
    if (!p->have_user) {
        for (int i = 0; i < n; i++)
            if (groups[i] != p->gid) {
                snprintf(err, errlen, "supplementary group %u still set", (unsigned)groups[i]);
                return -1;
            }
    }
    return 0;
}

int mw_privs_chown_socket(const mw_privs *p, const char *spec, char *err, size_t errlen)
{
    const char *path;

    if (!p->change || spec == NULL)
        return 0;
    if (strncmp(spec, "unix:", 5) == 0)
        path = spec + 5;
    else if (strncmp(spec, "local:", 6) == 0)
        path = spec + 6;
    else
        return 0;
    /* lchown: the path was bound a moment ago by us; never follow a link
     * someone put there since */
    if (lchown(path, p->uid, p->gid) != 0) {
        snprintf(err, errlen, "cannot give socket %s to %s:%s: %s", path, p->user, p->group, strerror(errno));
        return -1;
    }
    return 0;
}

bool mw_privs_can_read(const mw_privs *p, const char *path, char *err, size_t errlen)
{
    int pfd[2];

    if (!p->change) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            snprintf(err, errlen, "%s cannot read %s: %s", p->user, path, strerror(errno));
            return false;
        }
        close(fd);
        return true;
    }
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return false;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return false;
    }
    if (pid == 0) {
        /* the reason goes back through the pipe; the exit status says yes/no */
        char why[300];
        int fd = -1;
        close(pfd[0]);
        if (mw_privs_drop(p, why, sizeof why) != 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "cannot become %s: %s", p->user, why);
            (void)!write(pfd[1], msg, strlen(msg));
            _exit(1);
        }
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            snprintf(why, sizeof why, "%s cannot read %s: %s", p->user, path, strerror(errno));
            (void)!write(pfd[1], why, strlen(why));
            _exit(1);
        }
        _exit(0);
    }
    close(pfd[1]);
    char msg[400];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof msg - 1 && ((n = read(pfd[0], msg + got, sizeof msg - 1 - got)) > 0 ||
                                    (n < 0 && errno == EINTR)))
        got += n > 0 ? (size_t)n : 0;
    msg[got] = '\0';
    close(pfd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return true;
    snprintf(err, errlen, "%s", got > 0 ? msg : "the check as that user failed");
    return false;
}
