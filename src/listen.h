/* Listening sockets handed over by systemd (socket activation): each passed fd is matched to a
 * listener by its FileDescriptorName= ("public", "admin"). A listener with no matching fd binds
 * its configured address itself (started by hand, tests, no socket unit). */
#pragma once

#include <stddef.h>

/* Pure: for each want[i], ret_idx[i] = the index in names[] of the first fd named want[i], or
 * -1 when none is. A name passed twice matches once; names matching no want[] are left over
 * (the caller closes them). NULL entries in names never match. */
void listen_match(const char *const *want, size_t n_want, const char *const *names, size_t n_names,
		  int *ret_idx);

/* Takes the sockets systemd passed ($LISTEN_FDS, $LISTEN_FDNAMES; the variables are unset so
 * children do not inherit them). ret_fds[i] = a listening stream socket (non-blocking, owned by
 * the caller) for want[i], or -1 to bind it yourself. Passed fds that match no name, or are not
 * listening stream sockets, are logged and closed. Logs one line per listener. Call once, at
 * start-up, before any other fd is opened by another thread. Returns the number of fds taken,
 * or -errno when $LISTEN_FDS is malformed (then ret_fds are all -1). */
int listen_take(const char *const *want, size_t n_want, int *ret_fds);
