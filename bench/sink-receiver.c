/* bench/sink-receiver: the HTTP sink consumer of bench/crash and bench/soak. A minimal
 * HTTP/1.1 keep-alive server on 127.0.0.1 (one thread per connection) that checks
 * X-Hookd-Signature like a real consumer and appends one line per request to LOG with write(2)
 * before it answers, so the record survives the receiver being killed:
 *
 *     EVENT_ID HTTP_CODE          200 delivered, 503 refused (fail mode), 401 bad signature
 *
 * SIGUSR1 switches to fail mode (every request answered 503, as a consumer that is down
 * behind its proxy), SIGUSR2 back to normal; SIGTERM/SIGINT exit. PORT 0 picks a free port;
 * a fixed PORT lets a restarted receiver come back where the daemon expects it.
 *
 * usage: sink-receiver PORT PORTFILE LOG SECRET
 * Built by bench/crash and bench/soak with tests/lib/rx.c: cc -O2 -Itests/lib sink-receiver.c
 * tests/lib/rx.c -lpthread -lcrypto */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rx.h"

static const char *secret;
static int log_fd;
static volatile sig_atomic_t failing;

static void on_usr(int sig)
{
	failing = sig == SIGUSR1;
}

static int on_request(void *ctx, struct rx_request *req)
{
	char line[80];
	int code, n;

	(void)ctx;
	if (!rx_signature_ok(req, secret))
		code = 401;
	else if (failing)
		code = 503;
	else
		code = 200;
	n = snprintf(line, sizeof(line), "%lld %d\n", rx_event_id(req), code);
	if (write(log_fd, line, (size_t)n) != n)
		code = 500; /* not recorded: do not acknowledge */
	return code;
}

int main(int argc, char **argv)
{
	struct sigaction usr = {.sa_handler = on_usr, .sa_flags = SA_RESTART};
	struct rx *rx;
	char tmp[4096];
	FILE *f;

	if (argc != 5) {
		fprintf(stderr, "usage: sink-receiver PORT PORTFILE LOG SECRET\n");
		return 2;
	}
	secret = argv[4];
	log_fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	sigaction(SIGUSR1, &usr, NULL);
	sigaction(SIGUSR2, &usr, NULL);
	signal(SIGPIPE, SIG_IGN);
	rx = log_fd >= 0 ? rx_start((unsigned)atoi(argv[1]), on_request, NULL) : NULL;
	if (rx == NULL) {
		perror("sink-receiver");
		return 1;
	}
	/* temp file + rename: a reader polling for PORTFILE never sees it half written */
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%u\n", rx_port(rx)) < 0 || fclose(f) != 0 ||
	    rename(tmp, argv[2]) != 0) {
		perror("sink-receiver: port file");
		return 1;
	}
	for (;;)
		pause();
}
