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
 * Built by bench/crash and bench/soak with: cc -O2 sink-receiver.c -lpthread -lcrypto */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define BUF_CAP (1 << 20)

static const char *secret;
static int log_fd;
static volatile sig_atomic_t failing;

static void on_usr(int sig)
{
	failing = sig == SIGUSR1;
}

/* Copies the value of header NAME (case-insensitive) into out; "" when absent. */
static void header(const char *head, size_t head_len, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);
	const char *end = head + head_len;

	out[0] = '\0';
	for (const char *p = head; p != NULL && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
		if (*p == '\n')
			p++;
		if ((size_t)(end - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			size_t k = 0;

			while (*v == ' ')
				v++;
			while (v + k < end && v[k] != '\r' && v[k] != '\n' && k + 1 < n) {
				out[k] = v[k];
				k++;
			}
			out[k] = '\0';
			return;
		}
	}
}

/* X-Hookd-Signature = "sha256=" hex(HMAC-SHA256(secret, timestamp "." body)). */
static int signature_ok(const char *ts, const char *sig, const char *body, size_t len)
{
	unsigned char mac[32];
	unsigned int ml = sizeof(mac);
	char want[72];
	size_t tl = strlen(ts);
	char *msg = malloc(tl + 1 + len);
	int ok;

	if (msg == NULL || ts[0] == '\0') {
		free(msg);
		return 0;
	}
	memcpy(msg, ts, tl);
	msg[tl] = '.';
	memcpy(msg + tl + 1, body, len);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, tl + 1 + len, mac,
	     &ml);
	free(msg);
	memcpy(want, "sha256=", 7);
	for (int i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", mac[i]);
	ok = strlen(sig) == 71 && CRYPTO_memcmp(sig, want, 71) == 0;
	return ok;
}

static void *conn_main(void *arg)
{
	int fd = (int)(long)arg;
	size_t len = 0;
	char *buf = malloc(BUF_CAP + 1);

	while (buf != NULL) {
		char *end, cl[32], id[32], ts[32], sig[128], line[80], reply[128];
		size_t head_len, body_len;
		int code, n;
		ssize_t got;

		buf[len] = '\0';
		while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
			if (len == BUF_CAP)
				goto out;
			got = read(fd, buf + len, BUF_CAP - len);
			if (got <= 0)
				goto out;
			len += (size_t)got;
			buf[len] = '\0';
		}
		head_len = (size_t)(end - buf) + 4;
		header(buf, head_len, "Content-Length", cl, sizeof(cl));
		body_len = strtoul(cl, NULL, 10);
		if (head_len + body_len > BUF_CAP)
			goto out;
		while (len < head_len + body_len) {
			got = read(fd, buf + len, BUF_CAP - len);
			if (got <= 0)
				goto out;
			len += (size_t)got;
		}
		header(buf, head_len, "X-Hookd-Event-Id", id, sizeof(id));
		header(buf, head_len, "X-Hookd-Timestamp", ts, sizeof(ts));
		header(buf, head_len, "X-Hookd-Signature", sig, sizeof(sig));
		if (!signature_ok(ts, sig, buf + head_len, body_len))
			code = 401;
		else if (failing)
			code = 503;
		else
			code = 200;
		n = snprintf(line, sizeof(line), "%lld %d\n", atoll(id), code);
		if (write(log_fd, line, (size_t)n) != n)
			code = 500; /* not recorded: do not acknowledge */
		n = snprintf(reply, sizeof(reply), "HTTP/1.1 %d %s\r\nContent-Length: 2\r\n\r\n%s",
			     code, code == 200 ? "OK" : "No", code == 200 ? "ok" : "no");
		if (send(fd, reply, (size_t)n, MSG_NOSIGNAL) < 0)
			goto out;
		memmove(buf, buf + head_len + body_len, len - head_len - body_len);
		len -= head_len + body_len;
	}
out:
	close(fd);
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct sigaction usr = {.sa_handler = on_usr, .sa_flags = SA_RESTART};
	socklen_t sl = sizeof(sa);
	char tmp[4096];
	FILE *f;
	int lfd, one = 1;

	if (argc != 5) {
		fprintf(stderr, "usage: sink-receiver PORT PORTFILE LOG SECRET\n");
		return 2;
	}
	secret = argv[4];
	log_fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	sigaction(SIGUSR1, &usr, NULL);
	sigaction(SIGUSR2, &usr, NULL);
	signal(SIGPIPE, SIG_IGN);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((unsigned short)atoi(argv[1]));
	if (log_fd < 0 || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 128) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("sink-receiver");
		return 1;
	}
	/* temp file + rename: a reader polling for PORTFILE never sees it half written */
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%u\n", ntohs(sa.sin_port)) < 0 || fclose(f) != 0 ||
	    rename(tmp, argv[2]) != 0) {
		perror("sink-receiver: port file");
		return 1;
	}
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_t t;

		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (pthread_create(&t, NULL, conn_main, (void *)(long)fd) == 0)
			pthread_detach(t);
		else
			close(fd);
	}
}
