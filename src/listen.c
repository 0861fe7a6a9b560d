/* Socket activation: takes the listening sockets systemd passed for komerce-hookd.socket and
 * komerce-hookd-admin.socket, matched by FileDescriptorName=, so that connections queue in
 * the kernel's backlog while the service restarts. Called once from main() before the HTTP
 * servers start; nothing here runs on another thread. */
#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <systemd/sd-daemon.h>

#include "log.h"

void listen_match(const char *const *want, size_t n_want, const char *const *names, size_t n_names,
		  int *ret_idx)
{
	for (size_t i = 0; i < n_want; i++) {
		ret_idx[i] = -1;
		for (size_t j = 0; j < n_names && want[i] != NULL; j++) {
			bool taken = false;

			if (names[j] == NULL || strcmp(names[j], want[i]) != 0)
				continue;
			/* Two listeners with the same name would share one fd: the first wins. */
			for (size_t k = 0; k < i; k++)
				taken = taken || ret_idx[k] == (int)j;
			if (!taken) {
				ret_idx[i] = (int)j;
				break;
			}
		}
	}
}

/* "1.2.3.4:80" / "[::1]:80" of a bound socket, for the log. */
static void sock_name(int fd, char *out, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	snprintf(out, n, "?");
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;

		if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) != NULL)
			snprintf(out, n, "%s:%u", host, ntohs(a->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;

		if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) != NULL)
			snprintf(out, n, "[%s]:%u", host, ntohs(a->sin6_port));
	}
}

int listen_take(const char *const *want, size_t n_want, int *ret_fds)
{
	char **names = NULL;
	int idx[8];
	int n, taken = 0;

	for (size_t i = 0; i < n_want; i++)
		ret_fds[i] = -1;
	if (n_want > sizeof(idx) / sizeof(idx[0]))
		return -EINVAL;
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		errno = -n;
		log_err("listen: cannot use the sockets passed by systemd (LISTEN_FDS): %m");
		return n;
	}
	listen_match(want, n_want, (const char *const *)names, (size_t)n, idx);
	for (size_t i = 0; i < n_want; i++) {
		int fd = idx[i] >= 0 ? SD_LISTEN_FDS_START + idx[i] : -1;
		char addr[64];

		if (fd >= 0 && sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			log_warn("listen: passed fd is not a listening stream socket, binding "
				 "instead name=%s fd=%d",
				 want[i], fd);
			idx[i] = -1;
			continue;
		}
		if (fd < 0) {
			if (n > 0)
				log_warn(
					"listen: no socket named \"%s\" passed by systemd, binding "
					"it here",
					want[i]);
			continue;
		}
		/* MHD's thread pool accepts from several threads at once. */
		if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
			log_warn("listen: cannot make fd %d non-blocking: %m", fd);
		sock_name(fd, addr, sizeof(addr));
		log_info("listen: using the socket passed by systemd name=%s fd=%d address=%s",
			 want[i], fd, addr);
		ret_fds[i] = fd;
		taken++;
	}
	for (int j = 0; j < n; j++) {
		bool used = false;

		for (size_t i = 0; i < n_want; i++)
			used = used || idx[i] == j;
		if (!used) {
			log_warn("listen: closing a socket passed by systemd that no listener "
				 "wants name=\"%s\" fd=%d",
				 names != NULL && names[j] != NULL ? names[j] : "",
				 SD_LISTEN_FDS_START + j);
			close(SD_LISTEN_FDS_START + j);
		}
		if (names != NULL)
			free(names[j]);
	}
	free(names);
	return taken;
}
