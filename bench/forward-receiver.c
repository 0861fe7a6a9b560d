/* bench/forward-receiver: the consumer side of bench/forward. A minimal HTTP/1.1 keep-alive
 * server on 127.0.0.1 (one thread per connection; the forwarder opens a handful) that answers
 * 200 to every request, checks X-Hookd-Signature like a real consumer would, and records
 * "event_id received_at_ms receipt_ms" per request. On SIGTERM it writes the records to OUT
 * and exits. Built by bench/forward with cc; not part of the daemon.
 *
 * usage: forward-receiver PORTFILE OUT SECRET
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_RECORDS (4 * 1024 * 1024)

struct record {
	long long event_id, received_at, receipt;
};

static struct record *records;
static size_t n_records;
static unsigned long long bad_sig;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const char *secret;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *header(const char *head, size_t head_len, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);

	out[0] = '\0';
	for (const char *p = head; p != NULL && p < head + head_len;
	     p = memchr(p, '\n', head + head_len - p)) {
		if (*p == '\n')
			p++;
		if ((size_t)(head + head_len - p) > nl && strncasecmp(p, name, nl) == 0 &&
		    p[nl] == ':') {
			const char *v = p + nl + 1;
			size_t k = 0;

			while (*v == ' ')
				v++;
			while (v[k] != '\r' && v[k] != '\n' && k + 1 < n) {
				out[k] = v[k];
				k++;
			}
			out[k] = '\0';
			return out;
		}
	}
	return NULL;
}

/* "received_at":"2026-08-12T10:15:30.123Z" -> unix ms, 0 when absent. */
static long long received_at(const char *body, size_t len)
{
	static const char key[] = "\"received_at\":\"";
	const char *p = memmem(body, len, key, sizeof(key) - 1);
	struct tm tm;
	int ms = 0;

	if (p == NULL)
		return 0;
	memset(&tm, 0, sizeof(tm));
	if (sscanf(p + sizeof(key) - 1, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon,
		   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (long long)timegm(&tm) * 1000 + ms;
}

static int verify(const char *ts, const char *sig, const char *body, size_t len)
{
	unsigned char mac[32];
	unsigned int ml = sizeof(mac);
	char want[72];
	size_t tl = strlen(ts);
	char *msg = malloc(tl + 1 + len);

	memcpy(msg, ts, tl);
	msg[tl] = '.';
	memcpy(msg + tl + 1, body, len);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, tl + 1 + len, mac,
	     &ml);
	free(msg);
	memcpy(want, "sha256=", 7);
	for (int i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", mac[i]);
	return strlen(sig) == 71 && CRYPTO_memcmp(sig, want, 71) == 0;
}

static void *conn_main(void *arg)
{
	int fd = (int)(long)arg;
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap + 1);
	static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

	for (;;) {
		char *end, cl[32], id[32], ts[32], sig[128];
		size_t head_len, body_len;
		ssize_t n;

		buf[len] = '\0';
		while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
			n = read(fd, buf + len, cap - len);
			if (n <= 0)
				goto out;
			len += (size_t)n;
			buf[len] = '\0';
		}
		head_len = (size_t)(end - buf) + 4;
		body_len = header(buf, head_len, "Content-Length", cl, sizeof(cl))
				   ? strtoul(cl, NULL, 10)
				   : 0;
		while (len < head_len + body_len) {
			n = read(fd, buf + len, cap - len);
			if (n <= 0)
				goto out;
			len += (size_t)n;
		}
		header(buf, head_len, "X-Hookd-Event-Id", id, sizeof(id));
		header(buf, head_len, "X-Hookd-Timestamp", ts, sizeof(ts));
		header(buf, head_len, "X-Hookd-Signature", sig, sizeof(sig));
		{
			struct record r = {atoll(id), received_at(buf + head_len, body_len),
					   now_ms()};
			int ok = verify(ts, sig, buf + head_len, body_len);

			pthread_mutex_lock(&mu);
			if (n_records < MAX_RECORDS)
				records[n_records++] = r;
			if (!ok)
				bad_sig++;
			pthread_mutex_unlock(&mu);
		}
		if (send(fd, reply, sizeof(reply) - 1, MSG_NOSIGNAL) < 0)
			goto out;
		memmove(buf, buf + head_len + body_len, len - head_len - body_len);
		len -= head_len + body_len;
	}
out:
	close(fd);
	free(buf);
	return NULL;
}

static void *accept_main(void *arg)
{
	int lfd = (int)(long)arg, one = 1;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		pthread_t t;

		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (pthread_create(&t, NULL, conn_main, (void *)(long)fd) == 0)
			pthread_detach(t);
		else
			close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	sigset_t set;
	pthread_t t;
	FILE *f;
	int lfd, one = 1, sig;

	if (argc != 4) {
		fprintf(stderr, "usage: forward-receiver PORTFILE OUT SECRET\n");
		return 2;
	}
	secret = argv[3];
	records = calloc(MAX_RECORDS, sizeof(*records));
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (records == NULL || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 128) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("forward-receiver");
		return 1;
	}
	f = fopen(argv[1], "w");
	fprintf(f, "%u\n", ntohs(sa.sin_port));
	fclose(f);
	if (pthread_create(&t, NULL, accept_main, (void *)(long)lfd) != 0)
		return 1;
	sigwait(&set, &sig);
	f = fopen(argv[2], "w");
	if (f == NULL)
		return 1;
	pthread_mutex_lock(&mu);
	fprintf(f, "# bad_signatures %llu\n", bad_sig);
	for (size_t i = 0; i < n_records; i++)
		fprintf(f, "%lld %lld %lld\n", records[i].event_id, records[i].received_at,
			records[i].receipt);
	pthread_mutex_unlock(&mu);
	fclose(f);
	_exit(0);
}
