/*
 * privs.h - dropping root for the daemon and the tools that write files.
 *
 * Rule (docs/security.md): every file mailwarden writes is created by the
 * user it runs as.  `serve` binds its sockets as root, hands the unix
 * sockets to the configured user and group, drops privileges, and only
 * then builds the engine (DKIM keys, history directory and files), so
 * start-up and a SIGHUP reload run as the same user.  `report` run as root
 * drops to the same user before it opens anything.
 */
#ifndef MW_TOOLS_PRIVS_H
#define MW_TOOLS_PRIVS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct mw_privs {
    bool  change;      /* root and a user or group configured: mw_privs_drop changes ids */
    bool  have_user;   /* a user was configured */
    uid_t uid;         /* the ids to run as (the current ones when nothing is configured) */
    gid_t gid;
    char  user[64];    /* the user's name, or the uid as a number, for messages */
    char  group[64];   /* likewise for the group */
} mw_privs;

/* Look up user and group (either may be NULL or ""; group "" means the
 * user's primary group).  Changes nothing.  0, or -1 with a reason: an
 * unknown name, or not root but asked to become someone else. */
int mw_privs_resolve(const char *user, const char *group, mw_privs *p, char *err, size_t errlen);

/* Become p's user and group: supplementary groups set (initgroups for a
 * user, only the group otherwise), then setresgid, then setresuid, then
 * checked (real, effective and saved ids all changed; setuid(0) and
 * setgid(0) fail).  Nothing to do when !p->change.  0, or -1 with a reason:
 * the caller must not go on (some ids may already be changed). */
int mw_privs_drop(const mw_privs *p, char *err, size_t errlen);

/* Can p's user (and group) open path for reading?  Tried for real, in a
 * child process that drops to p's ids (so group membership, directory
 * search permission and ACLs all count); when !p->change, with the
 * current ids.  true, or false with a reason in err. */
bool mw_privs_can_read(const mw_privs *p, const char *path, char *err, size_t errlen);

/* Give a unix socket (a listener spec "unix:PATH" / "local:PATH"; others
 * are ignored) to p's user and group, so the MTA's access is decided by
 * socket_mode and the configured group, not by root's ownership.  Call
 * before mw_privs_drop.  0, or -1 with a reason. */
int mw_privs_chown_socket(const mw_privs *p, const char *spec, char *err, size_t errlen);

#endif
