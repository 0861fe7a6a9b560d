/* The shared test receiver (see rx.h). Threads: one accept thread, one per connection; the
 * handler runs on the connection's thread. */
#include "rx.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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

#define RX_MAX_CONNS 256
#define RX_BUF	     (1 << 20)

struct rx {
	int fd;
	unsigned port;
	int stop; /* atomic */
	rx_handler_fn fn;
	void *ctx;
	pthread_t accept_thread;
	struct slot {
		pthread_t thread;
		bool used;
		int done; /* atomic: the thread ended and can be joined */
	} slot[RX_MAX_CONNS];
};

struct conn {
	struct rx *rx;
	struct slot *slot;
	int fd;
};

bool rx_stopping(const struct rx *rx)
{
	return __atomic_load_n(&rx->stop, __ATOMIC_ACQUIRE) != 0;
}

unsigned rx_port(const struct rx *rx)
{
	return rx->port;
}

const char *rx_header(const char *head, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);

	out[0] = '\0';
	for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p, "\r\n")) {
		const char *v, *e;

		p += 2;
		if (strncasecmp(p, name, nl) != 0 || p[nl] != ':')
			continue;
		for (v = p + nl + 1; *v == ' '; v++)
			;
		e = strstr(v, "\r\n");
		if (e == NULL)
			e = v + strlen(v);
		snprintf(out, n, "%.*s", (int)(e - v), v);
		return out;
	}
	return NULL;
}

bool rx_hookd_signature_ok(const struct rx_request *req, const char *secret)
{
	char ts[32], sig[128], want[7 + 64 + 1];
	unsigned char mac[32];
	unsigned int ml = sizeof(mac);
	size_t tl;
	char *msg;

	if (rx_header(req->head, "X-Hookd-Timestamp", ts, sizeof(ts)) == NULL ||
	    rx_header(req->head, "X-Hookd-Signature", sig, sizeof(sig)) == NULL)
		return false;
	tl = strlen(ts);
	msg = malloc(tl + 1 + req->body_len);
	if (msg == NULL)
		return false;
	memcpy(msg, ts, tl);
	msg[tl] = '.';
	memcpy(msg + tl + 1, req->body, req->body_len);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg,
	     tl + 1 + req->body_len, mac, &ml);
	free(msg);
	memcpy(want, "sha256=", 7);
	for (unsigned i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", mac[i]);
	return strlen(sig) == strlen(want) && CRYPTO_memcmp(sig, want, strlen(want)) == 0 &&
	       labs(atol(ts) - (long)time(NULL)) < 300;
}

bool rx_standard_signature_ok(const struct rx_request *req, const char *secret)
{
	char wid[64], ts[32], sig[512], want[80];
	unsigned char mac[32], b64[64];
	unsigned int ml = sizeof(mac);
	size_t pl;
	char *msg;

	if (rx_header(req->head, "webhook-id", wid, sizeof(wid)) == NULL ||
	    rx_header(req->head, "webhook-timestamp", ts, sizeof(ts)) == NULL ||
	    rx_header(req->head, "webhook-signature", sig, sizeof(sig)) == NULL)
		return false;
	pl = strlen(wid) + strlen(ts) + 2;
	msg = malloc(pl + req->body_len + 1);
	if (msg == NULL)
		return false;
	snprintf(msg, pl + 1, "%s.%s.", wid, ts);
	memcpy(msg + pl, req->body, req->body_len);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, pl + req->body_len,
	     mac, &ml);
	free(msg);
	EVP_EncodeBlock(b64, mac, sizeof(mac));
	snprintf(want, sizeof(want), "v1,%s", (const char *)b64);
	/* Several space-separated signatures during a rotation: any may match. */
	for (char *tok = sig, *save = NULL; (tok = strtok_r(tok, " ", &save)) != NULL; tok = NULL)
		if (strlen(tok) == strlen(want) && CRYPTO_memcmp(tok, want, strlen(want)) == 0)
			return labs(atol(ts) - (long)time(NULL)) < 300;
	return false;
}

bool rx_signature_ok(const struct rx_request *req, const char *secret)
{
	char tmp[8];

	if (rx_header(req->head, "webhook-id", tmp, sizeof(tmp)) != NULL)
		return rx_header(req->head, "X-Hookd-Signature", tmp, sizeof(tmp)) == NULL &&
		       rx_standard_signature_ok(req, secret);
	return rx_hookd_signature_ok(req, secret);
}

long long rx_event_id(const struct rx_request *req)
{
	char v[64];

	if (rx_header(req->head, "webhook-id", v, sizeof(v)) != NULL)
		return strncmp(v, "evt_", 4) == 0 ? atoll(v + 4) : -1;
	if (rx_header(req->head, "X-Hookd-Event-Id", v, sizeof(v)) != NULL)
		return atoll(v);
	return -1;
}

/* Reads more bytes into buf; false on EOF, error or stop. */
static bool read_more(struct rx *rx, int fd, char *buf, size_t *len)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (rx_stopping(rx) || *len >= RX_BUF)
			return false;
		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(fd, buf + *len, RX_BUF - *len);
		if (n <= 0)
			return false;
		*len += (size_t)n;
		buf[*len] = '\0';
		return true;
	}
}

static bool send_all(int fd, const char *s, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);

		if (n <= 0)
			return false;
		off += (size_t)n;
	}
	return true;
}

/* Answers status with body (default "ok" for 2xx, "down" otherwise; none for 204); false
 * when the connection must end. */
static bool answer(int fd, int status, const char *body)
{
	char reply[400];
	int n;

	if (status == RX_RESET) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		return false;
	}
	if (status < 100)
		return false;
	if (status == 204)
		n = snprintf(reply, sizeof(reply), "HTTP/1.1 204 No Content\r\n\r\n");
	else {
		if (body == NULL)
			body = status < 300 ? "ok" : "down";
		n = snprintf(reply, sizeof(reply),
			     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			     "\r\n%s",
			     status, status < 300 ? "OK" : "Error", strlen(body), body);
	}
	return send_all(fd, reply, (size_t)n);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct rx *rx = c->rx;
	struct slot *sl = c->slot;
	int fd = c->fd;
	size_t len = 0;
	char *buf = malloc(RX_BUF + 1);

	free(c);
	while (buf != NULL) {
		char *end, cl[32];
		size_t head_len, want;
		struct rx_request req;
		int status;

		buf[len] = '\0';
		while ((end = strstr(buf, "\r\n\r\n")) == NULL)
			if (!read_more(rx, fd, buf, &len))
				goto out;
		head_len = (size_t)(end - buf) + 4;
		want = head_len + (rx_header(buf, "Content-Length", cl, sizeof(cl)) != NULL
					   ? strtoul(cl, NULL, 10)
					   : 0);
		while (len < want)
			if (!read_more(rx, fd, buf, &len))
				goto out;
		end[2] = '\0'; /* the head ends at the blank line; the body follows head_len */
		req = (struct rx_request){
			.head = buf, .body = buf + head_len, .body_len = want - head_len};
		status = rx->fn(rx->ctx, &req);
		if (!answer(fd, status, req.reply))
			goto out;
		memmove(buf, buf + want, len - want);
		len -= want;
	}
out:
	close(fd);
	free(buf);
	__atomic_store_n(&sl->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* A free slot, joining connection threads that ended (a long-running receiver sees many
 * connections come and go). NULL when every slot is busy. */
static struct slot *free_slot(struct rx *rx)
{
	for (size_t i = 0; i < RX_MAX_CONNS; i++) {
		struct slot *sl = &rx->slot[i];

		if (sl->used && __atomic_load_n(&sl->done, __ATOMIC_ACQUIRE)) {
			pthread_join(sl->thread, NULL);
			sl->used = false;
		}
		if (!sl->used)
			return sl;
	}
	return NULL;
}

static void *accept_main(void *arg)
{
	struct rx *rx = arg;
	int one = 1;

	while (!rx_stopping(rx)) {
		struct pollfd p = {.fd = rx->fd, .events = POLLIN};
		struct slot *sl;
		struct conn *c;
		int fd;

		if (poll(&p, 1, 100) <= 0)
			continue;
		fd = accept(rx->fd, NULL, NULL);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		sl = free_slot(rx);
		c = sl != NULL ? malloc(sizeof(*c)) : NULL;
		if (c == NULL) {
			close(fd);
			continue;
		}
		*c = (struct conn){.rx = rx, .slot = sl, .fd = fd};
		sl->done = 0;
		/* The thread owns c from here on (it may free it at once). */
		if (pthread_create(&sl->thread, NULL, conn_main, c) == 0) {
			sl->used = true;
		} else {
			free(c);
			close(fd);
		}
	}
	return NULL;
}

struct rx *rx_start(unsigned port, rx_handler_fn fn, void *ctx)
{
	struct rx *rx = calloc(1, sizeof(*rx));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	socklen_t sl = sizeof(sa);
	int one = 1;

	if (rx == NULL)
		return NULL;
	rx->fn = fn;
	rx->ctx = ctx;
	rx->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(rx->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (rx->fd < 0 || bind(rx->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(rx->fd, 128) < 0 || getsockname(rx->fd, (struct sockaddr *)&sa, &sl) < 0 ||
	    pthread_create(&rx->accept_thread, NULL, accept_main, rx) != 0) {
		if (rx->fd >= 0)
			close(rx->fd);
		free(rx);
		return NULL;
	}
	rx->port = ntohs(sa.sin_port);
	return rx;
}

void rx_stop(struct rx *rx)
{
	if (rx == NULL)
		return;
	__atomic_store_n(&rx->stop, 1, __ATOMIC_RELEASE);
	pthread_join(rx->accept_thread, NULL);
	for (size_t i = 0; i < RX_MAX_CONNS; i++)
		if (rx->slot[i].used)
			pthread_join(rx->slot[i].thread, NULL);
	close(rx->fd);
	free(rx);
}
