/* Redis Streams sink: parses redis:// URLs, keeps one non-blocking hiredis connection, and
 * pipelines one XADD per outbox row, polling the socket in 100 ms slices so that a stop
 * request or the sink's timeout is honoured promptly. Called by this sink's forwarder thread
 * only. A connection that failed in any way is freed; the next batch connects again, so a
 * Redis restart costs retries, never entries. */
#include "sink_redis.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "sink_sign.h"
#include "util.h"

#define SLICE_MS 100

struct sink_redis {
	const struct config_sink *cfg;
	struct sink_redis_addr addr;
	redisContext *c;
};

static int parse_ulong(const char *s, size_t len, unsigned long max, unsigned long *ret)
{
	unsigned long v = 0;

	if (len == 0 || len > 10)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int sink_redis_parse_url(const char *url, struct sink_redis_addr *ret)
{
	struct sink_redis_addr a;
	const char *p, *at, *end, *slash, *host_end, *port_s = NULL;
	unsigned long v;

	memset(&a, 0, sizeof(a));
	a.port = 6379;
	if (url == NULL || strncmp(url, "redis://", 8) != 0)
		return -EINVAL;
	p = url + 8;
	end = p + strlen(p);
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = end;
	at = memchr(p, '@', (size_t)(slash - p));
	if (at != NULL) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		size_t ul, pl;

		if (colon == NULL)
			return -EINVAL;
		ul = (size_t)(colon - p);
		pl = (size_t)(at - colon - 1);
		if (ul >= sizeof(a.user) || pl >= sizeof(a.password) || pl == 0)
			return -EINVAL;
		memcpy(a.user, p, ul);
		memcpy(a.password, colon + 1, pl);
		p = at + 1;
	}
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(slash - p));

		if (rb == NULL)
			return -EINVAL;
		if ((size_t)(rb - p - 1) >= sizeof(a.host) || rb == p + 1)
			return -EINVAL;
		memcpy(a.host, p + 1, (size_t)(rb - p - 1));
		host_end = rb + 1;
		if (host_end < slash) {
			if (*host_end != ':')
				return -EINVAL;
			port_s = host_end + 1;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(slash - p));

		host_end = colon != NULL ? colon : slash;
		if (host_end == p || (size_t)(host_end - p) >= sizeof(a.host))
			return -EINVAL;
		memcpy(a.host, p, (size_t)(host_end - p));
		if (colon != NULL)
			port_s = colon + 1;
	}
	if (port_s != NULL) {
		if (parse_ulong(port_s, (size_t)(slash - port_s), 65535, &v) < 0 || v == 0)
			return -EINVAL;
		a.port = (unsigned)v;
	}
	if (slash < end && slash + 1 < end) {
		if (parse_ulong(slash + 1, (size_t)(end - slash - 1), 1000000, &v) < 0)
			return -EINVAL;
		a.db = (long)v;
	}
	*ret = a;
	return 0;
}

int sink_redis_new(const struct config_sink *cfg, struct sink_redis **ret)
{
	struct sink_redis *r;
	struct sink_redis_addr a;

	if (sink_redis_parse_url(cfg->url, &a) < 0)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->cfg = cfg;
	r->addr = a;
	*ret = r;
	return 0;
}

static void drop(struct sink_redis *r)
{
	if (r->c != NULL)
		redisFree(r->c);
	r->c = NULL;
}

void sink_redis_free(struct sink_redis *r)
{
	if (r == NULL)
		return;
	drop(r);
	explicit_bzero(r->addr.password, sizeof(r->addr.password));
	free(r);
}

/* Waits for events on the connection in slices. 0 when ready, -ETIMEDOUT past the deadline,
 * -ECANCELED when stopping, -EIO on a socket error. */
static int wait_fd(struct sink_redis *r, short events, int64_t deadline, const int *stop)
{
	for (;;) {
		struct pollfd pfd = {.fd = r->c->fd, .events = events};
		int64_t left = deadline - util_mono_ms();
		int n;

		if (__atomic_load_n(stop, __ATOMIC_ACQUIRE))
			return -ECANCELED;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)(left < SLICE_MS ? left : SLICE_MS));
		if (n < 0 && errno != EINTR)
			return -EIO;
		if (n > 0) /* an error shows in the read, write or SO_ERROR that follows */
			return (pfd.revents & POLLNVAL) ? -EIO : 0;
	}
}

static int connect_redis(struct sink_redis *r, int64_t deadline, const int *stop, char *err,
			 size_t err_len)
{
	int so_err = 0, e;
	socklen_t sl = sizeof(so_err);

	r->c = redisConnectNonBlock(r->addr.host, (int)r->addr.port);
	if (r->c == NULL) {
		snprintf(err, err_len, "redis: out of memory");
		return -ENOMEM;
	}
	if (r->c->err) {
		snprintf(err, err_len, "redis: connect %s:%u: %s", r->addr.host, r->addr.port,
			 r->c->errstr);
		drop(r);
		return -EIO;
	}
	e = wait_fd(r, POLLOUT, deadline, stop);
	if (e == 0 && getsockopt(r->c->fd, SOL_SOCKET, SO_ERROR, &so_err, &sl) < 0)
		so_err = errno;
	if (e == 0 && so_err != 0)
		e = -so_err;
	if (e < 0) {
		if (e == -ETIMEDOUT)
			snprintf(err, err_len, "redis: connect %s:%u: timed out", r->addr.host,
				 r->addr.port);
		else if (e == -ECONNREFUSED)
			snprintf(err, err_len, "redis: connect %s:%u: connection refused",
				 r->addr.host, r->addr.port);
		else if (e != -ECANCELED)
			snprintf(err, err_len, "redis: connect %s:%u: failed (errno %d)",
				 r->addr.host, r->addr.port, -e);
		drop(r);
		return e;
	}
	return 0;
}

/* Writes the whole output buffer. */
static int flush(struct sink_redis *r, int64_t deadline, const int *stop)
{
	int done = 0, e;

	for (;;) {
		if (redisBufferWrite(r->c, &done) != REDIS_OK)
			return -EIO;
		if (done)
			return 0;
		e = wait_fd(r, POLLOUT, deadline, stop);
		if (e < 0)
			return e;
	}
}

/* Reads the next reply (caller frees). */
static int next_reply(struct sink_redis *r, redisReply **ret, int64_t deadline, const int *stop)
{
	void *reply = NULL;
	int e;

	for (;;) {
		if (redisGetReplyFromReader(r->c, &reply) != REDIS_OK)
			return -EIO;
		if (reply != NULL) {
			*ret = reply;
			return 0;
		}
		e = wait_fd(r, POLLIN, deadline, stop);
		if (e < 0)
			return e;
		if (redisBufferRead(r->c) != REDIS_OK)
			return -EIO;
	}
}

static void io_error(struct sink_redis *r, int e, char *err, size_t err_len)
{
	if (e == -ETIMEDOUT)
		snprintf(err, err_len, "redis: no reply within %ld ms", r->cfg->timeout_ms);
	else if (r->c != NULL && r->c->err)
		snprintf(err, err_len, "redis: %s", r->c->errstr);
	else
		snprintf(err, err_len, "redis: connection lost");
}

/* Sends AUTH / SELECT as the URL asks, on a fresh connection. */
static int handshake(struct sink_redis *r, int64_t deadline, const int *stop, char *err,
		     size_t err_len)
{
	char db[24];
	size_t expect = 0;
	int e = 0;

	if (r->addr.password[0] != '\0') {
		if (r->addr.user[0] != '\0')
			redisAppendCommand(r->c, "AUTH %s %s", r->addr.user, r->addr.password);
		else
			redisAppendCommand(r->c, "AUTH %s", r->addr.password);
		expect++;
	}
	if (r->addr.db != 0) {
		snprintf(db, sizeof(db), "%ld", r->addr.db);
		redisAppendCommand(r->c, "SELECT %s", db);
		expect++;
	}
	if (expect == 0)
		return 0;
	e = flush(r, deadline, stop);
	for (size_t i = 0; i < expect && e == 0; i++) {
		redisReply *rep = NULL;

		e = next_reply(r, &rep, deadline, stop);
		if (e == 0 && rep->type == REDIS_REPLY_ERROR) {
			snprintf(err, err_len, "redis: %s refused: %.200s",
				 r->addr.password[0] != '\0' && i == 0 ? "AUTH" : "SELECT",
				 rep->str);
			e = -EACCES;
		}
		freeReplyObject(rep);
	}
	if (e < 0 && e != -EACCES && e != -ECANCELED)
		io_error(r, e, err, err_len);
	return e;
}

static int append_xadd(struct sink_redis *r, const struct store_outbox_row *row)
{
	char id[24], amount[24], maxlen[24], when[40], wid[SINK_SIGN_ID_LEN];
	const char *argv[32]; /* XADD key [MAXLEN ~ n] * and 10 field-value pairs: 26 */
	size_t lens[32];
	size_t n = 0, dl = 0;
	char *doc;
	int rc;

	doc = sink_http_document(row, &dl);
	if (doc == NULL)
		return -ENOMEM;
	snprintf(id, sizeof(id), "%lld", (long long)row->event_id);
	sink_sign_webhook_id(row->event_id, wid);
	if (row->amount >= 0)
		snprintf(amount, sizeof(amount), "%lld", row->amount);
	else
		amount[0] = '\0';
	util_iso8601_ms(row->received_at, when, sizeof(when));

#define ARG(s)                       \
	do {                         \
		argv[n] = (s);       \
		lens[n] = strlen(s); \
		n++;                 \
	} while (0)
	ARG("XADD");
	ARG(r->cfg->stream);
	if (r->cfg->maxlen > 0) {
		snprintf(maxlen, sizeof(maxlen), "%ld", r->cfg->maxlen);
		ARG("MAXLEN");
		ARG("~");
		ARG(maxlen);
	}
	ARG("*");
	ARG("event_id");
	ARG(id);
	ARG("webhook_id");
	ARG(wid);
	ARG("payment_id");
	ARG(row->payment_id);
	ARG("order_id");
	ARG(row->order_id);
	ARG("status");
	ARG(payment_status_name(row->status));
	ARG("amount");
	ARG(amount);
	ARG("source");
	ARG(row->source);
	ARG("conflict");
	ARG(row->conflict ? "true" : "false");
	ARG("received_at");
	ARG(when);
	ARG("document");
	argv[n] = doc;
	lens[n] = dl;
	n++;
#undef ARG
	rc = redisAppendCommandArgv(r->c, (int)n, argv, lens);
	free(doc);
	return rc == REDIS_OK ? 0 : -ENOMEM;
}

static void fail_rest(struct sink_result *res, size_t from, size_t n, enum sink_verdict v,
		      const char *err)
{
	for (size_t i = from; i < n; i++) {
		res[i].verdict = v;
		snprintf(res[i].error, sizeof(res[i].error), "%s", err);
	}
}

void sink_redis_deliver(struct sink_redis *r, const struct store_outbox_row *rows, size_t n,
			struct sink_result *res, const int *stop)
{
	int64_t deadline = util_mono_ms() + r->cfg->timeout_ms;
	char err[STORE_ERR_MAX] = "";
	size_t got = 0;
	int e = 0;

	for (size_t i = 0; i < n; i++) {
		res[i].verdict = SINK_ABANDONED;
		res[i].error[0] = '\0';
	}
	if (n == 0)
		return;
	if (r->c == NULL) {
		e = connect_redis(r, deadline, stop, err, sizeof(err));
		if (e == 0)
			e = handshake(r, deadline, stop, err, sizeof(err));
		if (e < 0 && e != -ECANCELED) {
			/* Nothing was sent: the first row carries the attempt, the rest wait. */
			char not_sent[STORE_ERR_MAX];

			drop(r);
			snprintf(not_sent, sizeof(not_sent), "not sent: %s", err);
			fail_rest(res, 0, 1, SINK_RETRY, err[0] != '\0' ? err : "redis: failed");
			fail_rest(res, 1, n, SINK_NOT_SENT, not_sent);
			return;
		}
	}
	for (size_t i = 0; i < n && e == 0; i++) {
		e = append_xadd(r, &rows[i]);
		if (e < 0)
			snprintf(err, sizeof(err), "redis: out of memory");
	}
	if (e == 0) {
		e = flush(r, deadline, stop);
		if (e < 0 && e != -ECANCELED)
			io_error(r, e, err, sizeof(err));
	}
	while (e == 0 && got < n) {
		redisReply *rep = NULL;

		e = next_reply(r, &rep, deadline, stop);
		if (e < 0) {
			if (e != -ECANCELED)
				io_error(r, e, err, sizeof(err));
			break;
		}
		if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS) {
			res[got].verdict = SINK_DELIVERED;
		} else {
			res[got].verdict = SINK_RETRY;
			snprintf(res[got].error, sizeof(res[got].error), "redis: %s",
				 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
		}
		freeReplyObject(rep);
		got++;
	}
	if (e < 0) {
		/* The pipeline is out of step now: start over on a new connection. */
		drop(r);
		if (e == -ECANCELED)
			fail_rest(res, got, n, SINK_ABANDONED, "");
		else
			fail_rest(res, got, n, SINK_RETRY, err[0] != '\0' ? err : "redis: failed");
	}
}
