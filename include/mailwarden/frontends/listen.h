/*
 * listen.h - the listening sockets of the MTA front ends (milter, Exim):
 * one place decides what a socket spec binds and how a unix socket gets
 * its permissions.
 *
 * Spec: inet:PORT[@HOST], inet6:PORT[@HOST] (HOST may be bracketed),
 * unix:/PATH, local:/PATH, or a bare /PATH.  Without a host the socket
 * binds loopback (127.0.0.1, or ::1 for inet6), never every interface:
 * listening on all of them takes an explicit inet:PORT@0.0.0.0 or
 * inet6:PORT@::.  (metrics.listen follows the same rule: "PORT" alone is
 * 127.0.0.1:PORT.)
 *
 * A unix socket is created with its final mode: the umask is set for the
 * bind itself (umask ~mode), so the socket never exists with looser
 * permissions, as it would between a bind() and a chmod().  A stale socket
 * file from an earlier run is removed first (only a socket, never another
 * file type).
 */
#ifndef MW_FRONTENDS_LISTEN_H
#define MW_FRONTENDS_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

#include "cidr.h"

/*
 * Bind and listen on spec with the given backlog.  mode: the permissions
 * of a unix socket (0: as the process umask gives).  TCP sockets get
 * SO_REUSEADDR, inet6 ones IPV6_V6ONLY.  Returns the listening fd
 * (close-on-exec), with *unix_path set to a malloc'ed copy of the socket
 * path for a unix socket (NULL for TCP; the caller frees it and unlinks the
 * file at stop), or -1 with a reason in err.
 */
int mw_listen_open(const char *spec, int mode, int backlog, char **unix_path, char *err, size_t errlen);

/*
 * The peer of an accepted connection.  For a TCP peer: true, *a (may be
 * NULL) set (an IPv4-mapped IPv6 address is turned into IPv4) and text set
 * to "[ADDR]:PORT".  For a unix peer (or when the address cannot be read):
 * false and text "unix".
 */
bool mw_listen_peer(int fd, mw_addr *a, char *text, size_t len);

#endif
