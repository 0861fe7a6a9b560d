/* Integration suite for forwarding: the real daemon (harness) delivering to an HTTP receiver
 * written here (a small threaded socket server on 127.0.0.1 that records every request,
 * checks the Standard Webhooks signature or X-Hookd-Signature, and can be told to answer 500 / 400
 * / hang up / hang) and to a real redis-server started on a free loopback port. Daemon-side state
 * is read through the store API on a read-only handle. Every wait is a condition with a deadline.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "harness.h"
#include "rx.h"
#include "store.h"

#define SECRET	     "0123456789abcdef0123"
#define STREAM	     "hookd-events"
#define MAX_REQS     4096
#define WAIT_MS	     20000
#define NO_RECONCILE "[reconcile]\nenabled = false\n"

/* ---- HTTP receiver --------------------------------------------------------------------- */

/* RX_RESET_SOME: event ids divisible by 6 get their connection reset, the rest 204. */
/* RX_RESET_SOME: event ids divisible by 6 get their connection reset, the rest 204. */
enum rx_mode { RX_OK, RX_500, RX_400, RX_CLOSE, RX_HANG, RX_RESET_SOME };

struct rx_req {
	long long event_id;
	char payment_id[128];
	char status[16];
	int answered; /* status sent, 0 when hung up */
	bool sig_ok;
	bool doc_ok; /* body is the expected document, consistent with the headers */
};

/* The consumer: tests/lib/rx.c serving, this recording every request and answering as the
 * mode says. */
struct receiver {
	struct rx *srv;
	unsigned port;
	pthread_mutex_t mu;
	enum rx_mode mode;
	struct rx_req reqs[MAX_REQS];
	size_t n;
	size_t arrived; /* requests read, answered or not yet */
};

static enum rx_mode rx_mode(struct receiver *rx)
{
	enum rx_mode m;

	pthread_mutex_lock(&rx->mu);
	m = rx->mode;
	pthread_mutex_unlock(&rx->mu);
	return m;
}

static void rx_set_mode(struct receiver *rx, enum rx_mode m)
{
	pthread_mutex_lock(&rx->mu);
	rx->mode = m;
	pthread_mutex_unlock(&rx->mu);
}

static void check_request(const struct rx_request *q, struct rx_req *r)
{
	cJSON *doc, *cb;

	memset(r, 0, sizeof(*r));
	r->event_id = rx_event_id(q);
	r->sig_ok = rx_signature_ok(q, SECRET);
	doc = cJSON_ParseWithLength(q->body, q->body_len);
	if (doc == NULL)
		return;
	cb = cJSON_GetObjectItem(doc, "callback");
	if (cJSON_IsString(cJSON_GetObjectItem(doc, "payment_id")))
		snprintf(r->payment_id, sizeof(r->payment_id), "%s",
			 cJSON_GetObjectItem(doc, "payment_id")->valuestring);
	if (cJSON_IsString(cJSON_GetObjectItem(doc, "status")))
		snprintf(r->status, sizeof(r->status), "%s",
			 cJSON_GetObjectItem(doc, "status")->valuestring);
	r->doc_ok = cJSON_IsNumber(cJSON_GetObjectItem(doc, "event_id")) &&
		    (long long)cJSON_GetObjectItem(doc, "event_id")->valuedouble == r->event_id &&
		    cJSON_IsString(cJSON_GetObjectItem(doc, "received_at")) &&
		    cJSON_IsString(cJSON_GetObjectItem(doc, "source")) && cJSON_IsObject(cb) &&
		    cJSON_IsString(cJSON_GetObjectItem(cb, "payment_id")) &&
		    strcmp(cJSON_GetObjectItem(cb, "payment_id")->valuestring, r->payment_id) == 0;
	cJSON_Delete(doc);
}

/* The answer of a mode: a status, or RX_HANG_UP / RX_RESET. */
static int answer_for(struct receiver *rx, enum rx_mode m, long long event_id)
{
	switch (m) {
	case RX_OK:
		return 200;
	case RX_500:
		return 500;
	case RX_400:
		return 400;
	case RX_RESET_SOME:
		return event_id % 6 == 0 ? RX_RESET : 204;
	case RX_HANG:
		/* Held until the mode changes, then dropped unanswered (its sender has usually
		 * given up by then). */
		while (rx_mode(rx) == RX_HANG && !rx_stopping(rx->srv))
			hk_sleep_ms(20);
		return RX_HANG_UP;
	case RX_CLOSE:
	default:
		return RX_HANG_UP;
	}
}

static int on_request(void *ctx, struct rx_request *q)
{
	struct receiver *rx = ctx;
	struct rx_req r;
	int status;

	check_request(q, &r);
	pthread_mutex_lock(&rx->mu);
	rx->arrived++;
	pthread_mutex_unlock(&rx->mu);
	status = answer_for(rx, rx_mode(rx), r.event_id);
	if (status == 400)
		q->reply = "unknown order";
	r.answered = status >= 200 && status < 300 ? 200 : status > 0 ? status : 0;
	pthread_mutex_lock(&rx->mu);
	if (rx->n < MAX_REQS)
		rx->reqs[rx->n++] = r;
	pthread_mutex_unlock(&rx->mu);
	return status;
}

/* A receiver on 127.0.0.1:port (0: any free port). */
static struct receiver *rx_start_on(unsigned port)
{
	struct receiver *rx = calloc(1, sizeof(*rx));

	ck_assert_ptr_nonnull(rx);
	pthread_mutex_init(&rx->mu, NULL);
	rx->srv = rx_start(port, on_request, rx);
	ck_assert_ptr_nonnull(rx->srv);
	rx->port = rx_port(rx->srv);
	return rx;
}

static struct receiver *rx_start_any(void)
{
	return rx_start_on(0);
}

static void rx_stop_all(struct receiver *rx)
{
	if (rx == NULL)
		return;
	rx_stop(rx->srv);
	pthread_mutex_destroy(&rx->mu);
	free(rx);
}

/* Snapshot counters of the receiver. */
struct rx_stats {
	size_t total, accepted, failed, bad_sig, bad_doc;
};

static struct rx_stats rx_stats(struct receiver *rx)
{
	struct rx_stats s = {0};

	pthread_mutex_lock(&rx->mu);
	s.total = rx->n;
	for (size_t i = 0; i < rx->n; i++) {
		if (rx->reqs[i].answered == 200)
			s.accepted++;
		else
			s.failed++;
		if (!rx->reqs[i].sig_ok)
			s.bad_sig++;
		if (!rx->reqs[i].doc_ok)
			s.bad_doc++;
	}
	pthread_mutex_unlock(&rx->mu);
	return s;
}

/* How many times event_id was answered 200. */
static int rx_accepted_count(struct receiver *rx, long long event_id)
{
	int n = 0;

	pthread_mutex_lock(&rx->mu);
	for (size_t i = 0; i < rx->n; i++)
		n += rx->reqs[i].event_id == event_id && rx->reqs[i].answered == 200;
	pthread_mutex_unlock(&rx->mu);
	return n;
}

/* ---- redis-server ---------------------------------------------------------------------- */

struct redis_srv {
	pid_t pid;
	unsigned port;
	char dir[256];
};

static redisContext *redis_connect(unsigned port)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)port, tv);

	if (c != NULL && c->err) {
		redisFree(c);
		return NULL;
	}
	if (c != NULL)
		redisSetTimeout(c, tv);
	return c;
}

static bool redis_pongs(void *arg)
{
	struct redis_srv *r = arg;
	redisContext *c = redis_connect(r->port);
	redisReply *rep;
	bool ok = false;

	if (c == NULL)
		return false;
	rep = redisCommand(c, "PING");
	ok = rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
	if (rep != NULL)
		freeReplyObject(rep);
	redisFree(c);
	return ok;
}

static void redis_start(struct redis_srv *r)
{
	char port[16], log[300];
	pid_t pid;

	if (r->dir[0] == '\0') {
		snprintf(r->dir, sizeof(r->dir), "%s/hookd-redis-XXXXXX",
			 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
		ck_assert_ptr_nonnull(mkdtemp(r->dir));
		r->port = hk_free_port();
	}
	snprintf(port, sizeof(port), "%u", r->port);
	snprintf(log, sizeof(log), "%s/redis.log", r->dir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		/* appendonly + fsync always: what Redis acknowledged survives its restart, so a
		 * missing entry afterwards can only be the forwarder's fault. */
		execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir",
		       r->dir, "--daemonize", "no", (char *)NULL);
		_exit(127);
	}
	r->pid = pid;
	ck_assert_msg(hk_wait_until(redis_pongs, r, 10000), "redis-server did not answer PING");
}

static void redis_stop(struct redis_srv *r)
{
	int status;

	if (r->pid > 0) {
		kill(r->pid, SIGTERM);
		waitpid(r->pid, &status, 0);
		r->pid = 0;
	}
}

static void redis_cleanup(struct redis_srv *r)
{
	char cmd[300];

	redis_stop(r);
	if (r->dir[0] != '\0' && getenv("HK_KEEP") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", r->dir);
	}
}

/* Reads the whole stream: fills counts[event_id] (ids < max) and returns the entry count, or
 * -1 on error. Each entry's document must parse and agree with its event_id field. */
static long redis_entries(unsigned port, int *counts, size_t max, long *bad)
{
	redisContext *c = redis_connect(port);
	redisReply *rep;
	long n = -1;

	*bad = 0;
	if (c == NULL)
		return -1;
	rep = redisCommand(c, "XRANGE %s - +", STREAM);
	if (rep != NULL && rep->type == REDIS_REPLY_ARRAY) {
		n = (long)rep->elements;
		for (size_t i = 0; i < rep->elements; i++) {
			redisReply *fields = rep->element[i]->element[1];
			long long id = -1, doc_id = -2, wid = -3;

			for (size_t k = 0; k + 1 < fields->elements; k += 2) {
				const char *name = fields->element[k]->str;
				const char *val = fields->element[k + 1]->str;

				if (strcmp(name, "event_id") == 0) {
					id = atoll(val);
				} else if (strcmp(name, "webhook_id") == 0) {
					/* the HTTP sink's webhook-id of the same event */
					wid = strncmp(val, "evt_", 4) == 0 ? atoll(val + 4) : -4;
				} else if (strcmp(name, "document") == 0) {
					cJSON *d = cJSON_Parse(val);

					if (d != NULL &&
					    cJSON_IsNumber(cJSON_GetObjectItem(d, "event_id")))
						doc_id = (long long)cJSON_GetObjectItem(d,
											"event_id")
								 ->valuedouble;
					cJSON_Delete(d);
				}
			}
			if (id != doc_id || id != wid)
				(*bad)++;
			if (id >= 0 && (size_t)id < max)
				counts[id]++;
		}
	}
	if (rep != NULL)
		freeReplyObject(rep);
	redisFree(c);
	return n;
}

/* ---- daemon side ----------------------------------------------------------------------- */

static int64_t outbox_count(const struct hk_daemon *d, const char *sink, enum store_outbox_state st)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s;
	char err[256];
	int64_t n = -1;

	hk_store_target(&o, d->db);
	if (store_open(&o, &s, err, sizeof(err)) < 0)
		return -1;
	if (store_outbox_count(s, sink, st, &n) < 0)
		n = -1;
	store_close(s);
	return n;
}

struct list_acc {
	long min_attempts_rows; /* rows with attempts >= min */
	long min;
	char last_error[STORE_ERR_MAX];
};

static int acc_row(void *arg, const struct store_outbox_row *r)
{
	struct list_acc *a = arg;

	if (r->attempts >= a->min)
		a->min_attempts_rows++;
	snprintf(a->last_error, sizeof(a->last_error), "%s", r->last_error);
	return 0;
}

static long outbox_rows_with_attempts(const struct hk_daemon *d, enum store_outbox_state st,
				      long min, char *last_error, size_t n)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store_outbox_filter f = {.state = st};
	struct list_acc a = {.min = min};
	struct store *s;
	char err[256];

	hk_store_target(&o, d->db);
	if (store_open(&o, &s, err, sizeof(err)) < 0)
		return -1;
	if (store_outbox_list(s, &f, acc_row, &a) < 0)
		a.min_attempts_rows = -1;
	store_close(s);
	if (last_error != NULL)
		snprintf(last_error, n, "%s", a.last_error);
	return a.min_attempts_rows;
}

struct cond {
	const struct hk_daemon *d;
	struct receiver *rx;
	const char *sink;
	enum store_outbox_state state;
	long long want;
	long min;
};

static bool outbox_reaches(void *arg)
{
	struct cond *c = arg;

	return outbox_count(c->d, c->sink, c->state) >= c->want;
}

static bool rx_arrived_reaches(void *arg)
{
	struct cond *c = arg;
	size_t n;

	pthread_mutex_lock(&c->rx->mu);
	n = c->rx->arrived;
	pthread_mutex_unlock(&c->rx->mu);
	return (long long)n >= c->want;
}

static bool rx_accepted_reaches(void *arg)
{
	struct cond *c = arg;

	return (long long)rx_stats(c->rx).accepted >= c->want;
}

static bool attempts_reach(void *arg)
{
	struct cond *c = arg;

	return outbox_rows_with_attempts(c->d, STORE_OUTBOX_PENDING, c->min, NULL, 0) >= c->want;
}

static void wait_outbox(const struct hk_daemon *d, const char *sink, enum store_outbox_state st,
			long long want)
{
	struct cond c = {.d = d, .sink = sink, .state = st, .want = want};

	ck_assert_msg(hk_wait_until(outbox_reaches, &c, WAIT_MS),
		      "outbox %s/%s stayed at %lld, want %lld", sink != NULL ? sink : "*",
		      store_outbox_state_name(st), (long long)outbox_count(d, sink, st), want);
}

static long long post(const struct hk_daemon *d, const char *payment_id, const char *status,
		      bool *ret_duplicate)
{
	char body[512];
	struct hk_reply r;
	cJSON *j;
	long long id;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"%s\","
		 "\"amount\":150000,\"payment_type\":\"va\"}",
		 payment_id, payment_id, status);
	ck_assert_int_eq(hk_post_callback(d, body, HK_CALLBACK_KEY, &r), 200);
	j = cJSON_Parse(r.body);
	ck_assert_ptr_nonnull(j);
	id = (long long)cJSON_GetObjectItem(j, "event_id")->valuedouble;
	if (ret_duplicate != NULL)
		*ret_duplicate = cJSON_IsTrue(cJSON_GetObjectItem(j, "duplicate"));
	cJSON_Delete(j);
	return id;
}

static void start_daemon(struct hk_daemon *d, const char *extra)
{
	hk_daemon_init(d, extra);
	ck_assert_msg(hk_daemon_start(d) == 0, "daemon did not start (log %s)", d->log);
}

static void http_sink_conf(char *buf, size_t n, unsigned port, const char *more)
{
	snprintf(buf, n,
		 NO_RECONCILE "[sink.app]\ntype = http\nurl = http://127.0.0.1:%u/hook\n"
			      "secret = " SECRET "\nsignature = hookd\ntimeout_ms = 3000\n%s",
		 port, more != NULL ? more : "");
}

/* ---- tests ----------------------------------------------------------------------------- */

START_TEST(test_exactly_once_http_and_redis)
{
	struct receiver *rx = rx_start_any();
	struct redis_srv rs = {0};
	struct hk_daemon d;
	char conf[1024], metrics_url[128];
	long long ids[40];
	int counts[256] = {0};
	struct rx_stats st;
	struct hk_reply rep;
	long bad = 0;

	redis_start(&rs);
	snprintf(conf, sizeof(conf),
		 NO_RECONCILE "[sink.app]\ntype = http\nurl = http://127.0.0.1:%u/hook\n"
			      "secret = " SECRET "\n"
			      "[sink.q]\ntype = redis\nurl = redis://127.0.0.1:%u/0\n"
			      "stream = " STREAM "\nmaxlen = 100000\n",
		 rx->port, rs.port);
	start_daemon(&d, conf);
	for (int i = 0; i < 20; i++) {
		char pid[64];

		snprintf(pid, sizeof(pid), "KPAY-%d/KM/2026", i);
		ids[2 * i] = post(&d, pid, "PENDING", NULL);
		ids[2 * i + 1] = post(&d, pid, "PAID", NULL);
	}
	wait_outbox(&d, "app", STORE_OUTBOX_DELIVERED, 40);
	wait_outbox(&d, "q", STORE_OUTBOX_DELIVERED, 40);

	st = rx_stats(rx);
	ck_assert_uint_eq(st.total, 40);
	ck_assert_uint_eq(st.accepted, 40);
	ck_assert_uint_eq(st.bad_sig, 0);
	ck_assert_uint_eq(st.bad_doc, 0);
	for (int i = 0; i < 40; i++)
		ck_assert_int_eq(rx_accepted_count(rx, ids[i]), 1);

	ck_assert_int_eq(redis_entries(rs.port, counts, 256, &bad), 40);
	ck_assert_int_eq(bad, 0);
	for (int i = 0; i < 40; i++)
		ck_assert_int_eq(counts[ids[i]], 1);
	ck_assert_int_eq(outbox_count(&d, NULL, STORE_OUTBOX_PENDING), 0);
	ck_assert_int_eq(outbox_count(&d, NULL, STORE_OUTBOX_DEAD), 0);

	snprintf(metrics_url, sizeof(metrics_url), "http://127.0.0.1:%u/metrics", d.admin_port);
	ck_assert_int_eq(hk_request("GET", metrics_url, NULL, NULL, 0, 5000, &rep), 200);
	ck_assert_ptr_nonnull(strstr(rep.body, "hookd_forward_total{outcome=\"delivered\"} 80"));

	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	hk_daemon_cleanup(&d);
	redis_cleanup(&rs);
	rx_stop_all(rx);
}
END_TEST

START_TEST(test_duplicates_not_redelivered)
{
	struct receiver *rx = rx_start_any();
	struct hk_daemon d;
	char conf[1024];
	long long a, a2, b;
	bool dup = false;

	http_sink_conf(conf, sizeof(conf), rx->port, NULL);
	start_daemon(&d, conf);
	a = post(&d, "KOMPAY-DUP-1", "PAID", &dup);
	ck_assert(!dup);
	for (int i = 0; i < 3; i++) {
		a2 = post(&d, "KOMPAY-DUP-1", "PAID", &dup);
		ck_assert(dup);
		ck_assert_int_eq(a2, a);
	}
	b = post(&d, "KOMPAY-DUP-2", "PAID", NULL);
	wait_outbox(&d, "app", STORE_OUTBOX_DELIVERED, 2);
	ck_assert_int_eq(outbox_count(&d, "app", STORE_OUTBOX_ANY), 2);
	ck_assert_int_eq(rx_accepted_count(rx, a), 1);
	ck_assert_int_eq(rx_accepted_count(rx, b), 1);
	ck_assert_uint_eq(rx_stats(rx).total, 2);
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

/* In the request log, no status of a payment other than PENDING may appear before its PENDING
 * was accepted. */
static void assert_per_payment_order(struct receiver *rx)
{
	pthread_mutex_lock(&rx->mu);
	for (size_t i = 0; i < rx->n; i++) {
		bool pending_done = false;

		if (strcmp(rx->reqs[i].status, "PENDING") == 0)
			continue;
		for (size_t j = 0; j < i; j++)
			pending_done |=
				strcmp(rx->reqs[j].payment_id, rx->reqs[i].payment_id) == 0 &&
				strcmp(rx->reqs[j].status, "PENDING") == 0 &&
				rx->reqs[j].answered == 200;
		ck_assert_msg(pending_done, "%s %s sent before its PENDING was delivered",
			      rx->reqs[i].payment_id, rx->reqs[i].status);
	}
	pthread_mutex_unlock(&rx->mu);
}

START_TEST(test_consumer_down_then_ordered)
{
	struct receiver *rx = rx_start_any();
	struct hk_daemon d;
	char conf[1024];
	long long ids[20];
	struct cond c;
	struct rx_stats st;

	rx_set_mode(rx, RX_500);
	http_sink_conf(conf, sizeof(conf), rx->port, NULL);
	start_daemon(&d, conf);
	for (int i = 0; i < 10; i++) {
		char pid[64];

		snprintf(pid, sizeof(pid), "KOMPAY-ORDER-%d", i);
		ids[2 * i] = post(&d, pid, "PENDING", NULL);
		ids[2 * i + 1] = post(&d, pid, "PAID", NULL);
	}
	/* Every head failed once with 500, then once more with the connection cut. */
	c = (struct cond){.d = &d, .want = 10, .min = 1};
	ck_assert(hk_wait_until(attempts_reach, &c, WAIT_MS));
	rx_set_mode(rx, RX_CLOSE);
	c.min = 2;
	ck_assert(hk_wait_until(attempts_reach, &c, WAIT_MS));
	st = rx_stats(rx);
	ck_assert_uint_eq(st.accepted, 0);
	ck_assert_uint_ge(st.failed, 11);
	ck_assert_int_eq(outbox_count(&d, "app", STORE_OUTBOX_PENDING), 20);

	rx_set_mode(rx, RX_OK);
	c = (struct cond){.rx = rx, .want = 20};
	ck_assert(hk_wait_until(rx_accepted_reaches, &c, WAIT_MS));
	wait_outbox(&d, "app", STORE_OUTBOX_DELIVERED, 20);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(rx_accepted_count(rx, ids[i]), 1);
	assert_per_payment_order(rx);
	st = rx_stats(rx);
	ck_assert_uint_eq(st.bad_sig, 0);
	ck_assert(hk_log_contains(&d, "forward delivery failed sink=app"));
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

START_TEST(test_max_attempts_then_dead)
{
	struct receiver *rx = rx_start_any();
	struct hk_daemon d;
	char conf[1024], last[STORE_ERR_MAX];

	rx_set_mode(rx, RX_500);
	http_sink_conf(conf, sizeof(conf), rx->port, "max_attempts = 2\n");
	start_daemon(&d, conf);
	post(&d, "KOMPAY-MAX-1", "PAID", NULL);
	wait_outbox(&d, "app", STORE_OUTBOX_DEAD, 1);
	ck_assert_int_eq(outbox_rows_with_attempts(&d, STORE_OUTBOX_DEAD, 2, last, sizeof(last)),
			 1);
	ck_assert_ptr_nonnull(strstr(last, "HTTP 500: down"));
	ck_assert_uint_eq(rx_stats(rx).total, 2);
	ck_assert(hk_log_contains(&d, "forward dead letter sink=app"));
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

/* Issue 19.3: rows that were never sent must not spend attempts. A sink that resets the
 * connection for one document in six and answers 204 to the rest, with max_attempts = 3: every
 * good row is delivered once, only the reset documents end dead, after 3 real attempts. */
START_TEST(test_unsent_rows_spend_no_attempts)
{
	unsigned port = hk_free_port();
	struct receiver *rx;
	struct hk_daemon d;
	char conf[1024];
	long long ids[60];
	struct list_acc dead = {.min = 3};
	struct store_opts o;
	struct store *s;
	struct store_outbox_filter f = {.state = STORE_OUTBOX_DEAD};
	char err[256];
	int n_bad = 0;

	/* The rows pile up while nothing listens on the sink's port (connection refused), so
	 * that later rounds carry many rows behind each reset. */
	http_sink_conf(conf, sizeof(conf), port, "max_attempts = 3\n");
	start_daemon(&d, conf);
	for (int i = 0; i < 60; i++) {
		char pid[64];

		snprintf(pid, sizeof(pid), "KOMPAY-RESET-%d", i);
		ids[i] = post(&d, pid, "PAID", NULL);
		n_bad += ids[i] % 6 == 0;
	}
	ck_assert_int_eq(n_bad, 10);
	rx = rx_start_on(port);
	rx_set_mode(rx, RX_RESET_SOME);
	wait_outbox(&d, "app", STORE_OUTBOX_DELIVERED, 60 - n_bad);
	wait_outbox(&d, "app", STORE_OUTBOX_DEAD, n_bad);
	ck_assert_int_eq(outbox_count(&d, "app", STORE_OUTBOX_PENDING), 0);
	for (int i = 0; i < 60; i++) {
		if (ids[i] % 6 != 0)
			ck_assert_msg(rx_accepted_count(rx, ids[i]) == 1,
				      "event %lld accepted %d times", ids[i],
				      rx_accepted_count(rx, ids[i]));
	}
	/* Every dead row is a reset document that was really sent three times. */
	o = (struct store_opts){.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	hk_store_target(&o, d.db);
	ck_assert_int_eq(store_open(&o, &s, err, sizeof(err)), 0);
	ck_assert_int_eq(store_outbox_list(s, &f, acc_row, &dead), 0);
	store_close(s);
	ck_assert_int_eq(dead.min_attempts_rows, n_bad);
	ck_assert_msg(strstr(dead.last_error, "not sent") == NULL, "%s", dead.last_error);
	pthread_mutex_lock(&rx->mu);
	for (size_t i = 0; i < rx->n; i++)
		if (rx->reqs[i].event_id % 6 == 0)
			ck_assert_int_eq(rx->reqs[i].answered, 0);
	pthread_mutex_unlock(&rx->mu);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

static int run_hookctl(const struct hk_daemon *d, long long event_id)
{
	const char *bin = getenv("HOOKCTL_BIN");
	char id[32];
	pid_t pid;
	int status = 0;

	snprintf(id, sizeof(id), "%lld", event_id);
	pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		if (fd >= 0)
			dup2(fd, STDOUT_FILENO);
		execl(bin, bin, "-c", d->conf, "replay", id, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Issue 20: `komerce-hookctl outbox --dead` shows each replayed dead letter as dealt with: by
 * whom, and delivered after the replay. e1 was replayed by komerce-hookctl, the other by the
 * store API ("test"). */
static void assert_dead_letters_dealt_with(const struct hk_daemon *d, const char *hookctl,
					   long long e1)
{
	char cmd[800], out[16384];
	size_t len;
	cJSON *j;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "'%s' -c '%s' outbox --dead --format json", hookctl, d->conf);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	len = fread(out, 1, sizeof(out) - 1, f);
	out[len] = '\0';
	ck_assert_int_eq(pclose(f), 0);
	j = cJSON_Parse(out);
	ck_assert_msg(cJSON_GetArraySize(j) == 2, "%s", out);
	for (int i = 0; i < 2; i++) {
		cJSON *row = cJSON_GetArrayItem(j, i);
		const char *by = cJSON_GetObjectItem(row, "replayed")->valuestring;
		const char *after = cJSON_GetObjectItem(row, "after_replay")->valuestring;
		bool by_ctl = cJSON_GetObjectItem(row, "event_id")->valuedouble == (double)e1;

		ck_assert_msg(by != NULL && strstr(by, by_ctl ? "by komerce-hookctl" : "by test"),
			      "%s", out);
		ck_assert_msg(after != NULL && strncmp(after, "delivered 20", 12) == 0, "%s", out);
	}
	cJSON_Delete(j);
	snprintf(cmd, sizeof(cmd), "'%s' -c '%s' stats --format json", hookctl, d->conf);
	f = popen(cmd, "r");
	len = fread(out, 1, sizeof(out) - 1, f);
	out[len] = '\0';
	pclose(f);
	j = cJSON_Parse(out);
	ck_assert_double_eq(
		cJSON_GetObjectItem(cJSON_GetObjectItem(j, "outbox"), "dead")->valuedouble, 0);
	ck_assert_double_eq(
		cJSON_GetObjectItem(cJSON_GetObjectItem(j, "outbox"), "replayed")->valuedouble, 2);
	cJSON_Delete(j);
}

START_TEST(test_4xx_dead_letter_and_replay)
{
	struct receiver *rx = rx_start_any();
	struct hk_daemon d;
	char conf[1024], last[STORE_ERR_MAX], metrics_url[128];
	const char *hookctl = getenv("HOOKCTL_BIN");
	long long e1, e2;
	struct hk_reply rep;
	struct cond c;

	rx_set_mode(rx, RX_400);
	http_sink_conf(conf, sizeof(conf), rx->port, NULL);
	start_daemon(&d, conf);
	e1 = post(&d, "KOMPAY-4XX-1", "PENDING", NULL);
	e2 = post(&d, "KOMPAY-4XX-1", "PAID", NULL);
	/* Both refused once each, no retries: dead at once with the reply kept. */
	wait_outbox(&d, "app", STORE_OUTBOX_DEAD, 2);
	ck_assert_int_eq(outbox_rows_with_attempts(&d, STORE_OUTBOX_DEAD, 1, last, sizeof(last)),
			 2);
	ck_assert_str_eq(last, "HTTP 400: unknown order");
	ck_assert_uint_eq(rx_stats(rx).total, 2);
	snprintf(metrics_url, sizeof(metrics_url), "http://127.0.0.1:%u/metrics", d.admin_port);
	ck_assert_int_eq(hk_request("GET", metrics_url, NULL, NULL, 0, 5000, &rep), 200);
	ck_assert_ptr_nonnull(strstr(rep.body, "hookd_forward_total{outcome=\"dead\"} 2"));
	ck_assert_ptr_nonnull(strstr(rep.body, "hookd_outbox_pending{sink=\"app\"}"));

	rx_set_mode(rx, RX_OK);
	if (hookctl != NULL && hookctl[0] != '\0') {
		/* Another process re-enqueues while the daemon runs: the re-scan finds it. */
		ck_assert_int_eq(run_hookctl(&d, e1), 0);
		c = (struct cond){.rx = rx, .want = 1};
		ck_assert(hk_wait_until(rx_accepted_reaches, &c, WAIT_MS));
		ck_assert_int_eq(rx_accepted_count(rx, e1), 1);
	}

	/* Through the store API (the writer lock needs the daemon stopped). */
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	{
		const struct store_sink sinks[] = {{"app", false}};
		struct store_opts o = {.busy_timeout_ms = 5000, .sinks = sinks, .n_sinks = 1};
		struct store_req req;
		struct store *s;
		char err[256];

		hk_store_target(&o, d.db);
		ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
		ck_assert_int_eq(store_writer_start(s), 0);
		store_req_replay(&req, e2, NULL, "test");
		ck_assert_int_eq(store_submit_wait(s, &req), 0);
		ck_assert_uint_eq(req.changed, 1);
		store_req_replay(&req, e2 + 1000, NULL, "test");
		ck_assert_int_eq(store_submit_wait(s, &req), -ENOENT);
		store_close(s);
	}
	ck_assert_int_eq(hk_daemon_start(&d), 0);
	c = (struct cond){.rx = rx, .want = hookctl != NULL && hookctl[0] != '\0' ? 2 : 1};
	ck_assert(hk_wait_until(rx_accepted_reaches, &c, WAIT_MS));
	ck_assert_int_eq(rx_accepted_count(rx, e2), 1);
	ck_assert_int_eq(outbox_count(&d, "app", STORE_OUTBOX_DEAD), 2); /* history kept */
	if (hookctl != NULL && hookctl[0] != '\0')
		assert_dead_letters_dealt_with(&d, hookctl, e1);
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

START_TEST(test_redis_restart_nothing_lost)
{
	struct redis_srv rs = {0};
	struct hk_daemon d;
	char conf[1024];
	long long ids[30];
	int counts[256] = {0};
	struct cond c;
	long bad = 0;

	redis_start(&rs);
	snprintf(conf, sizeof(conf),
		 NO_RECONCILE "[sink.q]\ntype = redis\nurl = redis://127.0.0.1:%u\n"
			      "stream = " STREAM "\ntimeout_ms = 2000\n",
		 rs.port);
	start_daemon(&d, conf);
	for (int i = 0; i < 10; i++) {
		char pid[64];

		snprintf(pid, sizeof(pid), "KOMPAY-R-%d", i);
		ids[i] = post(&d, pid, "PENDING", NULL);
	}
	wait_outbox(&d, "q", STORE_OUTBOX_DELIVERED, 10);

	/* Redis goes away mid-stream: new events wait, and the forwarder keeps trying. */
	redis_stop(&rs);
	for (int i = 0; i < 10; i++) {
		char pid[64];

		snprintf(pid, sizeof(pid), "KOMPAY-R-%d", i);
		ids[10 + i] = post(&d, pid, "PAID", NULL);
		snprintf(pid, sizeof(pid), "KOMPAY-R2-%d", i);
		ids[20 + i] = post(&d, pid, "PAID", NULL);
	}
	/* Keeps trying: at least one row per round carries an attempt (while Redis refuses
	 * connections nothing is sent, so the others of a round spend none). */
	c = (struct cond){.d = &d, .want = 1, .min = 2};
	ck_assert(hk_wait_until(attempts_reach, &c, WAIT_MS));
	ck_assert_int_eq(outbox_count(&d, "q", STORE_OUTBOX_PENDING), 20);

	redis_start(&rs);
	wait_outbox(&d, "q", STORE_OUTBOX_DELIVERED, 30);
	ck_assert_int_eq(outbox_count(&d, "q", STORE_OUTBOX_PENDING), 0);
	ck_assert_int_eq(redis_entries(rs.port, counts, 256, &bad), 30);
	ck_assert_int_eq(bad, 0);
	for (int i = 0; i < 30; i++)
		ck_assert_int_eq(counts[ids[i]], 1);
	hk_daemon_cleanup(&d);
	redis_cleanup(&rs);
}
END_TEST

START_TEST(test_kill9_then_delivered_after_restart)
{
	struct receiver *rx = rx_start_any();
	struct hk_daemon d;
	char conf[1024];
	long long ids[6];
	struct cond c;

	rx_set_mode(rx, RX_500);
	http_sink_conf(conf, sizeof(conf), rx->port, NULL);
	start_daemon(&d, conf);
	for (int i = 0; i < 3; i++) {
		char pid[64];

		snprintf(pid, sizeof(pid), "KOMPAY-K-%d", i);
		ids[2 * i] = post(&d, pid, "PENDING", NULL);
		ids[2 * i + 1] = post(&d, pid, "PAID", NULL);
	}
	c = (struct cond){.d = &d, .want = 3, .min = 1};
	ck_assert(hk_wait_until(attempts_reach, &c, WAIT_MS));
	ck_assert_int_eq(hk_daemon_stop(&d, SIGKILL), 128 + SIGKILL);

	rx_set_mode(rx, RX_OK);
	ck_assert_int_eq(hk_daemon_start(&d), 0);
	c = (struct cond){.rx = rx, .want = 6};
	ck_assert(hk_wait_until(rx_accepted_reaches, &c, WAIT_MS));
	wait_outbox(&d, "app", STORE_OUTBOX_DELIVERED, 6);
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(rx_accepted_count(rx, ids[i]), 1);
	assert_per_payment_order(rx);
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

START_TEST(test_stop_abandons_hung_delivery)
{
	struct receiver *rx = rx_start_any();
	struct hk_daemon d;
	char conf[1024];
	struct cond c;
	long long t0, e;

	rx_set_mode(rx, RX_HANG);
	http_sink_conf(conf, sizeof(conf), rx->port, "timeout_ms = 60000\n");
	start_daemon(&d, conf);
	e = post(&d, "KOMPAY-HANG-1", "PAID", NULL);
	/* The POST is in flight, the consumer holds it: stopping must not wait for it. */
	c = (struct cond){.rx = rx, .want = 1};
	ck_assert(hk_wait_until(rx_arrived_reaches, &c, WAIT_MS));
	t0 = hk_now_ms();
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	ck_assert_int_lt(hk_now_ms() - t0, 3000);
	ck_assert_int_eq(outbox_count(&d, "app", STORE_OUTBOX_PENDING), 1);
	ck_assert_int_eq(outbox_rows_with_attempts(&d, STORE_OUTBOX_PENDING, 1, NULL, 0), 0);

	/* Released and restarted: delivered once. */
	rx_set_mode(rx, RX_OK);
	ck_assert_int_eq(hk_daemon_start(&d), 0);
	c = (struct cond){.rx = rx, .want = 1};
	ck_assert(hk_wait_until(rx_accepted_reaches, &c, WAIT_MS));
	ck_assert_int_eq(rx_accepted_count(rx, e), 1);
	hk_daemon_cleanup(&d);
	rx_stop_all(rx);
}
END_TEST

static Suite *forward_suite(void)
{
	Suite *s = suite_create("it-forward");
	TCase *tc;

	tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_exactly_once_http_and_redis);
	tcase_add_test(tc, test_duplicates_not_redelivered);
	tcase_add_test(tc, test_consumer_down_then_ordered);
	tcase_add_test(tc, test_kill9_then_delivered_after_restart);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_max_attempts_then_dead);
	tcase_add_test(tc, test_unsent_rows_spend_no_attempts);
	tcase_add_test(tc, test_4xx_dead_letter_and_replay);
	tcase_add_test(tc, test_redis_restart_nothing_lost);
	tcase_add_test(tc, test_stop_abandons_hung_delivery);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(forward_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
