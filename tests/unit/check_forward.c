/* Check suite for the forwarding pieces that need no daemon: the HTTP document (its signatures
 * are check_sink_sign.c's), status classification, the
 * retry schedule, redis:// URL parsing, the outbox queries and write requests against a
 * temporary database (one row per payment at a time, retry, dead letter, replay), and the
 * sinks' failure paths (refused connections, stop flag).
 */
#include "forward.h"
#include "sink_http.h"
#include "sink_redis.h"
#include "store.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "util.h"

static struct store_outbox_row sample_row(void)
{
	static char raw[] = "{\"payment_id\":\"KPAY-5292/KM/2026\",\"status\":\"PAID\","
			    "\"amount\":100000,\"data\":{\"va_number\":\"8808\"}}";
	struct store_outbox_row r;

	memset(&r, 0, sizeof(r));
	r.id = 7;
	r.event_id = 42;
	snprintf(r.sink, sizeof(r.sink), "app");
	snprintf(r.payment_id, sizeof(r.payment_id), "KPAY-5292/KM/2026");
	snprintf(r.order_id, sizeof(r.order_id), "KOM12345");
	r.status = PAYMENT_PAID;
	r.amount = 100000;
	snprintf(r.source, sizeof(r.source), "callback");
	r.received_at = 1786529730123LL; /* 2026-08-12T10:15:30.123Z */
	r.raw_json = raw;
	r.raw_len = strlen(raw);
	return r;
}

/* ---- document ---------------------------------------------------------------------------- */

START_TEST(test_document_fields)
{
	struct store_outbox_row r = sample_row();
	size_t len = 0;
	char *doc = sink_http_document(&r, &len);
	cJSON *j, *cb;

	ck_assert_ptr_nonnull(doc);
	ck_assert_uint_eq(len, strlen(doc));
	j = cJSON_Parse(doc);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq((int)cJSON_GetObjectItem(j, "event_id")->valuedouble, 42);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "payment_id")->valuestring, "KPAY-5292/KM/2026");
	ck_assert_str_eq(cJSON_GetObjectItem(j, "order_id")->valuestring, "KOM12345");
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "PAID");
	ck_assert_int_eq((long)cJSON_GetObjectItem(j, "amount")->valuedouble, 100000);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "source")->valuestring, "callback");
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "conflict")));
	ck_assert_str_eq(cJSON_GetObjectItem(j, "received_at")->valuestring,
			 "2026-08-12T10:15:30.123Z");
	cb = cJSON_GetObjectItem(j, "callback");
	ck_assert(cJSON_IsObject(cb));
	ck_assert_str_eq(
		cJSON_GetObjectItem(cJSON_GetObjectItem(cb, "data"), "va_number")->valuestring,
		"8808");
	ck_assert_ptr_null(cJSON_GetObjectItem(j, "callback_raw"));
	cJSON_Delete(j);
	free(doc);
}
END_TEST

START_TEST(test_document_absent_fields_and_bad_raw)
{
	struct store_outbox_row r = sample_row();
	char raw[] = "not json {";
	char *doc;
	cJSON *j;

	r.order_id[0] = '\0';
	r.amount = -1;
	r.conflict = true;
	r.raw_json = raw;
	r.raw_len = strlen(raw);
	doc = sink_http_document(&r, NULL);
	ck_assert_ptr_nonnull(doc);
	j = cJSON_Parse(doc);
	ck_assert_ptr_nonnull(j);
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "order_id")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "amount")));
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "conflict")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "callback")));
	ck_assert_str_eq(cJSON_GetObjectItem(j, "callback_raw")->valuestring, "not json {");
	cJSON_Delete(j);
	free(doc);
}
END_TEST

START_TEST(test_classify)
{
	ck_assert_int_eq(sink_http_classify(200), SINK_DELIVERED);
	ck_assert_int_eq(sink_http_classify(201), SINK_DELIVERED);
	ck_assert_int_eq(sink_http_classify(204), SINK_DELIVERED);
	ck_assert_int_eq(sink_http_classify(299), SINK_DELIVERED);
	ck_assert_int_eq(sink_http_classify(400), SINK_DEAD);
	ck_assert_int_eq(sink_http_classify(401), SINK_DEAD);
	ck_assert_int_eq(sink_http_classify(404), SINK_DEAD);
	ck_assert_int_eq(sink_http_classify(422), SINK_DEAD);
	ck_assert_int_eq(sink_http_classify(408), SINK_RETRY);
	ck_assert_int_eq(sink_http_classify(429), SINK_RETRY);
	ck_assert_int_eq(sink_http_classify(500), SINK_RETRY);
	ck_assert_int_eq(sink_http_classify(503), SINK_RETRY);
	ck_assert_int_eq(sink_http_classify(302), SINK_RETRY);
	ck_assert_int_eq(sink_http_classify(100), SINK_RETRY);
	ck_assert_int_eq(sink_http_classify(0), SINK_RETRY);
}
END_TEST

/* ---- backoff ------------------------------------------------------------------------------ */

START_TEST(test_backoff_bounds)
{
	const uint32_t rnds[] = {0, 1, 12345, 0x7fffffffu, 0xffffffffu};
	int64_t base = 1000;

	for (long a = 1; a <= 40; a++) {
		for (size_t i = 0; i < sizeof(rnds) / sizeof(rnds[0]); i++) {
			int64_t d = forward_backoff_ms(a, rnds[i]);

			ck_assert_int_le(d, base);
			ck_assert_int_ge(d, base - base / 4);
			ck_assert_int_le(d, 600000);
		}
		if (base < 600000)
			base = base * 2 > 600000 ? 600000 : base * 2;
	}
	ck_assert_int_eq(forward_backoff_ms(1, 0), 1000);
	ck_assert_int_eq(forward_backoff_ms(2, 0), 2000);
	ck_assert_int_eq(forward_backoff_ms(3, 0), 4000);
	ck_assert_int_eq(forward_backoff_ms(11, 0), 600000); /* 1024 s capped */
	ck_assert_int_eq(forward_backoff_ms(1000, 0), 600000);
}
END_TEST

START_TEST(test_backoff_jitter_spreads)
{
	int64_t lo = INT64_MAX, hi = 0;

	for (uint32_t r = 0; r < 2000; r++) {
		int64_t d = forward_backoff_ms(4, r * 2654435761u);

		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	ck_assert_int_ge(hi - lo, 1000); /* of a possible 2000 ms spread at 8 s */
}
END_TEST

/* ---- redis url ---------------------------------------------------------------------------- */

START_TEST(test_redis_url_valid)
{
	struct sink_redis_addr a;

	ck_assert_int_eq(sink_redis_parse_url("redis://127.0.0.1:6380", &a), 0);
	ck_assert_str_eq(a.host, "127.0.0.1");
	ck_assert_uint_eq(a.port, 6380);
	ck_assert_int_eq(a.db, 0);
	ck_assert_str_eq(a.password, "");

	ck_assert_int_eq(sink_redis_parse_url("redis://localhost", &a), 0);
	ck_assert_str_eq(a.host, "localhost");
	ck_assert_uint_eq(a.port, 6379);

	ck_assert_int_eq(sink_redis_parse_url("redis://queue.internal:7000/3", &a), 0);
	ck_assert_str_eq(a.host, "queue.internal");
	ck_assert_uint_eq(a.port, 7000);
	ck_assert_int_eq(a.db, 3);

	ck_assert_int_eq(sink_redis_parse_url("redis://h/", &a), 0);
	ck_assert_int_eq(a.db, 0);

	ck_assert_int_eq(sink_redis_parse_url("redis://:s3cret@h:1/2", &a), 0);
	ck_assert_str_eq(a.user, "");
	ck_assert_str_eq(a.password, "s3cret");
	ck_assert_str_eq(a.host, "h");
	ck_assert_uint_eq(a.port, 1);
	ck_assert_int_eq(a.db, 2);

	ck_assert_int_eq(sink_redis_parse_url("redis://hookd:pw@h", &a), 0);
	ck_assert_str_eq(a.user, "hookd");
	ck_assert_str_eq(a.password, "pw");

	ck_assert_int_eq(sink_redis_parse_url("redis://[::1]:7001/1", &a), 0);
	ck_assert_str_eq(a.host, "::1");
	ck_assert_uint_eq(a.port, 7001);
	ck_assert_int_eq(a.db, 1);

	ck_assert_int_eq(sink_redis_parse_url("redis://[::1]", &a), 0);
	ck_assert_uint_eq(a.port, 6379);
}
END_TEST

START_TEST(test_redis_url_invalid)
{
	static const char *const bad[] = {
		"",
		"http://h:6379",
		"redis://",
		"redis://:6379",
		"redis://h:0",
		"redis://h:65536",
		"redis://h:12x",
		"redis://h:",
		"redis://h/x",
		"redis://h/1/2",
		"redis://[::1",
		"redis://[]:1",
		"redis://[::1]x",
		"redis://pw@h",
		"redis://u:@h",
		"redis://h:99999999999",
	};
	struct sink_redis_addr a;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(sink_redis_parse_url(bad[i], &a) == -EINVAL, "accepted \"%s\"",
			      bad[i]);
	ck_assert_int_eq(sink_redis_parse_url(NULL, &a), -EINVAL);
}
END_TEST

/* ---- outbox against a temporary database -------------------------------------------------- */

static char dir[256];
static struct store *wr, *rd;
static const struct store_sink sinks[] = {{"a", false}, {"b", false}};

static void db_setup(void)
{
	char path[300], err[256];
	struct store_opts o = {.busy_timeout_ms = 5000, .sinks = sinks, .n_sinks = 2};
	struct store_opts ro = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};

	snprintf(dir, sizeof(dir), "%s/check-forward-XXXXXX",
		 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/events.db", dir);
	o.path = path;
	ro.path = path;
	ck_assert_msg(store_open(&o, &wr, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(store_writer_start(wr), 0);
	ck_assert_msg(store_open(&ro, &rd, err, sizeof(err)) == 0, "%s", err);
}

static void db_teardown(void)
{
	char cmd[300];

	store_close(rd);
	store_close(wr);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* Stores one event and returns its id. */
static int64_t add_event(const char *payment_id, enum payment_status st, int64_t at)
{
	char raw[256];
	struct event ev;
	struct store_req r;

	memset(&ev, 0, sizeof(ev));
	snprintf(ev.payment_id, sizeof(ev.payment_id), "%s", payment_id);
	snprintf(ev.order_id, sizeof(ev.order_id), "ORD-%s", payment_id);
	ev.status = st;
	ev.amount = 1000;
	ev.source = EVENT_SOURCE_CALLBACK;
	snprintf(raw, sizeof(raw), "{\"payment_id\":\"%s\",\"status\":\"%s\",\"amount\":1000}",
		 payment_id, payment_status_name(st));
	ev.raw = raw;
	ev.raw_len = strlen(raw);
	store_req_event(&r, &ev);
	r.received_at = at;
	ck_assert_int_eq(store_submit_wait(wr, &r), 0);
	ck_assert(!r.duplicate);
	return r.event_id;
}

static size_t next_rows(const char *sink, int64_t now, struct store_outbox_row **rows)
{
	size_t n = 99;

	ck_assert_int_eq(store_outbox_next(rd, sink, now, 64, rows, &n), 0);
	return n;
}

static const struct store_outbox_row *find_event(const struct store_outbox_row *rows, size_t n,
						 int64_t event_id)
{
	for (size_t i = 0; i < n; i++)
		if (rows[i].event_id == event_id)
			return &rows[i];
	return NULL;
}

static void assert_one_per_payment(const struct store_outbox_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			ck_assert_msg(strcmp(rows[i].payment_id, rows[j].payment_id) != 0,
				      "two rows of payment %s handed out", rows[i].payment_id);
}

static int submit(struct store_req *r)
{
	return store_submit_wait(wr, r);
}

START_TEST(test_outbox_one_row_per_payment)
{
	int64_t t0 = 1786529730000LL;
	int64_t p1a = add_event("P1", PAYMENT_PENDING, t0);
	int64_t p2a = add_event("P2", PAYMENT_PENDING, t0);
	int64_t p1b = add_event("P1", PAYMENT_PAID, t0 + 1);
	int64_t p3a = add_event("P3", PAYMENT_PAID, t0 + 2);
	struct store_outbox_row *rows;
	const struct store_outbox_row *r;
	struct store_req req;
	int64_t n64;
	size_t n;

	ck_assert_int_eq(store_outbox_count(rd, NULL, STORE_OUTBOX_PENDING, &n64), 0);
	ck_assert_int_eq(n64, 8);
	ck_assert_int_eq(store_outbox_count(rd, "a", STORE_OUTBOX_PENDING, &n64), 0);
	ck_assert_int_eq(n64, 4);

	/* Not due yet: nothing. */
	n = next_rows("a", t0 - 1, &rows);
	ck_assert_uint_eq(n, 0);
	store_outbox_rows_free(rows, n);

	n = next_rows("a", t0 + 10, &rows);
	ck_assert_uint_eq(n, 3);
	assert_one_per_payment(rows, n);
	ck_assert_ptr_nonnull(find_event(rows, n, p1a));
	ck_assert_ptr_null(find_event(rows, n, p1b));
	ck_assert_ptr_nonnull(find_event(rows, n, p2a));
	r = find_event(rows, n, p3a);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r->sink, "a");
	ck_assert_str_eq(r->payment_id, "P3");
	ck_assert_str_eq(r->order_id, "ORD-P3");
	ck_assert_int_eq(r->status, PAYMENT_PAID);
	ck_assert_int_eq(r->amount, 1000);
	ck_assert_str_eq(r->source, "callback");
	ck_assert_int_eq(r->received_at, t0 + 2);
	ck_assert_int_eq(r->state, STORE_OUTBOX_PENDING);
	ck_assert_int_eq(r->attempts, 0);
	ck_assert_str_eq(r->raw_json,
			 "{\"payment_id\":\"P3\",\"status\":\"PAID\",\"amount\":1000}");
	ck_assert_uint_eq(r->raw_len, strlen(r->raw_json));

	/* Delivering P1's first event on sink a releases its second, on sink a only. */
	r = find_event(rows, n, p1a);
	store_req_outcome(&req, r->id, STORE_OUTBOX_MARK_DELIVERED, t0 + 20, NULL);
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 1);
	store_outbox_rows_free(rows, n);

	n = next_rows("a", t0 + 30, &rows);
	ck_assert_uint_eq(n, 3);
	assert_one_per_payment(rows, n);
	ck_assert_ptr_nonnull(find_event(rows, n, p1b));
	ck_assert_ptr_null(find_event(rows, n, p1a));
	store_outbox_rows_free(rows, n);

	n = next_rows("b", t0 + 30, &rows);
	ck_assert_uint_eq(n, 3);
	ck_assert_ptr_nonnull(find_event(rows, n, p1a));
	ck_assert_ptr_null(find_event(rows, n, p1b));
	store_outbox_rows_free(rows, n);

	/* A stale outcome for a row no longer pending changes nothing. */
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 0);

	/* The limit is honoured. */
	ck_assert_int_eq(store_outbox_next(rd, "b", t0 + 30, 2, &rows, &n), 0);
	ck_assert_uint_eq(n, 2);
	store_outbox_rows_free(rows, n);
	ck_assert_int_eq(store_outbox_next(rd, "b", t0 + 30, 0, &rows, &n), -EINVAL);
}
END_TEST

START_TEST(test_outbox_retry_blocks_the_payment)
{
	int64_t t0 = util_now_ms();
	int64_t e1 = add_event("P1", PAYMENT_PENDING, t0);
	int64_t e2 = add_event("P1", PAYMENT_PAID, t0);
	struct store_outbox_row *rows;
	struct store_req req;
	int64_t id;
	size_t n;

	n = next_rows("a", t0, &rows);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rows[0].event_id, e1);
	id = rows[0].id;
	store_outbox_rows_free(rows, n);

	store_req_outcome(&req, id, STORE_OUTBOX_MARK_RETRY, t0 + 10000, "HTTP 500: down");
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 1);

	/* The head waits, and the second event waits behind it. */
	n = next_rows("a", t0 + 5000, &rows);
	ck_assert_uint_eq(n, 0);
	store_outbox_rows_free(rows, n);

	n = next_rows("a", t0 + 10000, &rows);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rows[0].event_id, e1);
	ck_assert_int_eq(rows[0].attempts, 1);
	ck_assert_int_eq(rows[0].next_attempt_at, t0 + 10000);
	ck_assert_str_eq(rows[0].last_error, "HTTP 500: down");
	store_outbox_rows_free(rows, n);

	/* Dead-lettering the head lets the next event go. */
	store_req_outcome(&req, id, STORE_OUTBOX_MARK_DEAD, t0 + 10001, "HTTP 400: no such order");
	ck_assert_int_eq(submit(&req), 0);
	n = next_rows("a", t0 + 10002, &rows);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rows[0].event_id, e2);
	store_outbox_rows_free(rows, n);
}
END_TEST

struct collected {
	int n;
	int64_t ids[16];
	char errors[16][STORE_ERR_MAX];
	long attempts[16];
};

static int collect(void *arg, const struct store_outbox_row *r)
{
	struct collected *c = arg;

	if (c->n < 16) {
		c->ids[c->n] = r->event_id;
		c->attempts[c->n] = r->attempts;
		snprintf(c->errors[c->n], sizeof(c->errors[0]), "%s", r->last_error);
	}
	c->n++;
	return 0;
}

static int stop_at_first(void *arg, const struct store_outbox_row *r)
{
	(void)r;
	(*(int *)arg)++;
	return 7;
}

START_TEST(test_outbox_dead_list_and_counts)
{
	int64_t t0 = util_now_ms();
	int64_t e1 = add_event("P1", PAYMENT_PAID, t0);
	struct store_outbox_filter f = {.state = STORE_OUTBOX_DEAD};
	struct store_outbox_outcome oc[2];
	struct store_outbox_row *rows;
	struct store_req req;
	struct collected c;
	char long_err[2000];
	int64_t n64;
	size_t n;
	int calls = 0;

	memset(long_err, 'x', sizeof(long_err) - 1);
	long_err[sizeof(long_err) - 1] = '\0';
	n = next_rows("a", t0, &rows);
	ck_assert_uint_eq(n, 1);
	oc[0] = (struct store_outbox_outcome){rows[0].id, STORE_OUTBOX_MARK_DEAD, t0, long_err};
	store_outbox_rows_free(rows, n);
	n = next_rows("b", t0, &rows);
	ck_assert_uint_eq(n, 1);
	oc[1] = (struct store_outbox_outcome){rows[0].id, STORE_OUTBOX_MARK_DELIVERED, t0, NULL};
	store_outbox_rows_free(rows, n);

	store_req_outcomes(&req, oc, 2);
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 2);

	ck_assert_int_eq(store_outbox_count(rd, "a", STORE_OUTBOX_DEAD, &n64), 0);
	ck_assert_int_eq(n64, 1);
	ck_assert_int_eq(store_outbox_count(rd, "b", STORE_OUTBOX_DEAD, &n64), 0);
	ck_assert_int_eq(n64, 0);
	ck_assert_int_eq(store_outbox_count(rd, NULL, STORE_OUTBOX_DELIVERED, &n64), 0);
	ck_assert_int_eq(n64, 1);
	ck_assert_int_eq(store_outbox_count(rd, NULL, STORE_OUTBOX_ANY, &n64), 0);
	ck_assert_int_eq(n64, 2);

	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(store_outbox_list(rd, &f, collect, &c), 0);
	ck_assert_int_eq(c.n, 1);
	ck_assert_int_eq(c.ids[0], e1);
	ck_assert_int_eq(c.attempts[0], 1);
	ck_assert_uint_eq(strlen(c.errors[0]), STORE_ERR_MAX - 1); /* cut, kept */

	/* Early stop returns the callback's value. */
	f.state = STORE_OUTBOX_ANY;
	ck_assert_int_eq(store_outbox_list(rd, &f, stop_at_first, &calls), 7);
	ck_assert_int_eq(calls, 1);
}
END_TEST

static int sum_cb(void *arg, const struct store_outbox_summary *s)
{
	struct store_outbox_summary *out = arg;

	out[s->sink[0] == 'a' ? 0 : 1] = *s;
	return 0;
}

START_TEST(test_outbox_replay)
{
	int64_t t0 = util_now_ms();
	int64_t e1 = add_event("P1", PAYMENT_PAID, t0);
	struct store_outbox_row *rows;
	struct store_req req;
	struct store_outbox_summary sums[2];
	struct store_outbox_filter f = {.event_id = e1, .sink = "a"};
	struct collected c;
	size_t n;

	/* Sink a delivered it, sink b still has it pending. */
	n = next_rows("a", t0, &rows);
	ck_assert_uint_eq(n, 1);
	store_req_outcome(&req, rows[0].id, STORE_OUTBOX_MARK_DELIVERED, t0, NULL);
	ck_assert_int_eq(submit(&req), 0);
	store_outbox_rows_free(rows, n);

	/* Replay to every sink: a gets a new row, b is already pending and is skipped. */
	store_req_replay(&req, e1, NULL, "test");
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 1);
	n = next_rows("a", util_now_ms(), &rows);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rows[0].event_id, e1);
	ck_assert_int_eq(rows[0].attempts, 0);
	store_outbox_rows_free(rows, n);

	/* Twice in a row does not queue it twice. */
	store_req_replay(&req, e1, "a", "test");
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 0);

	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(store_outbox_list(rd, &f, collect, &c), 0);
	ck_assert_int_eq(c.n, 2);

	memset(sums, 0, sizeof(sums));
	ck_assert_int_eq(store_outbox_summaries(rd, sum_cb, sums), 0);
	ck_assert_str_eq(sums[0].sink, "a");
	ck_assert_int_eq(sums[0].pending, 1);
	ck_assert_int_eq(sums[0].delivered, 1);
	ck_assert_int_eq(sums[0].dead, 0);
	ck_assert_int_ge(sums[0].oldest_pending_at, t0);
	ck_assert_str_eq(sums[1].sink, "b");
	ck_assert_int_eq(sums[1].pending, 1);

	/* Unknown event, unknown sink. */
	store_req_replay(&req, e1 + 1000, NULL, "test");
	ck_assert_int_eq(submit(&req), -ENOENT);
	store_req_replay(&req, e1, "nosuchsink", "test");
	ck_assert_int_eq(submit(&req), -EINVAL);
}
END_TEST

static int first_row(void *arg, const struct store_outbox_row *r)
{
	*(struct store_outbox_row *)arg = *r;
	((struct store_outbox_row *)arg)->raw_json = NULL;
	return 1;
}

/* Issue 20: a replayed dead letter says when and by whom it was replayed and what became of
 * it, and stops counting as an open dead letter. */
START_TEST(test_replayed_dead_letter_state)
{
	int64_t t0 = util_now_ms();
	int64_t e1 = add_event("P1", PAYMENT_PAID, t0);
	struct store_outbox_filter dead = {.state = STORE_OUTBOX_DEAD, .sink = "a"};
	struct store_outbox_summary sums[2];
	struct store_outbox_row *rows, row;
	struct store_req req;
	size_t n;

	n = next_rows("a", t0, &rows);
	ck_assert_uint_eq(n, 1);
	store_req_outcome(&req, rows[0].id, STORE_OUTBOX_MARK_DEAD, t0, "HTTP 400: no such order");
	ck_assert_int_eq(submit(&req), 0);
	store_outbox_rows_free(rows, n);
	ck_assert_int_eq(store_outbox_list(rd, &dead, first_row, &row), 1);
	ck_assert_int_eq(row.replayed_at, 0);
	memset(sums, 0, sizeof(sums));
	ck_assert_int_eq(store_outbox_summaries(rd, sum_cb, sums), 0);
	ck_assert_int_eq(sums[0].dead, 1);
	ck_assert_int_eq(sums[0].replayed, 0);

	store_req_replay(&req, e1, "a", "komerce-hookctl");
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_int_eq(store_outbox_list(rd, &dead, first_row, &row), 1);
	ck_assert_int_ge(row.replayed_at, t0);
	ck_assert_str_eq(row.replayed_by, "komerce-hookctl");
	ck_assert_int_eq(row.replay_state, STORE_OUTBOX_PENDING);
	memset(sums, 0, sizeof(sums));
	ck_assert_int_eq(store_outbox_summaries(rd, sum_cb, sums), 0);
	ck_assert_int_eq(sums[0].dead, 0);
	ck_assert_int_eq(sums[0].replayed, 1);

	/* The replacement is delivered: the dead row shows it. */
	n = next_rows("a", util_now_ms(), &rows);
	ck_assert_uint_eq(n, 1);
	store_req_outcome(&req, rows[0].id, STORE_OUTBOX_MARK_DELIVERED, t0 + 5, NULL);
	ck_assert_int_eq(submit(&req), 0);
	store_outbox_rows_free(rows, n);
	ck_assert_int_eq(store_outbox_list(rd, &dead, first_row, &row), 1);
	ck_assert_int_eq(row.replay_state, STORE_OUTBOX_DELIVERED);
	ck_assert_int_eq(row.replay_delivered_at, t0 + 5);
}
END_TEST

START_TEST(test_outbox_replay_orders_after_pending)
{
	int64_t t0 = util_now_ms();
	int64_t e1 = add_event("P1", PAYMENT_PENDING, t0);
	int64_t e2 = add_event("P1", PAYMENT_PAID, t0);
	struct store_outbox_row *rows;
	struct store_req req;
	size_t n;

	/* e1 delivered; replaying it while e2 is still pending queues it behind e2. */
	n = next_rows("a", t0, &rows);
	ck_assert_uint_eq(n, 1);
	store_req_outcome(&req, rows[0].id, STORE_OUTBOX_MARK_DELIVERED, t0, NULL);
	ck_assert_int_eq(submit(&req), 0);
	store_outbox_rows_free(rows, n);
	store_req_replay(&req, e1, "a", "test");
	ck_assert_int_eq(submit(&req), 0);
	ck_assert_uint_eq(req.changed, 1);

	n = next_rows("a", util_now_ms(), &rows);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rows[0].event_id, e2);
	store_req_outcome(&req, rows[0].id, STORE_OUTBOX_MARK_DELIVERED, t0, NULL);
	ck_assert_int_eq(submit(&req), 0);
	store_outbox_rows_free(rows, n);

	n = next_rows("a", util_now_ms(), &rows);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(rows[0].event_id, e1);
	store_outbox_rows_free(rows, n);
}
END_TEST

/* ---- sinks: failure paths ------------------------------------------------------------------ */

/* A loopback port with nothing listening (bound, then closed). */
static unsigned dead_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port = 0;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

START_TEST(test_http_refused_is_retry_and_rest_not_sent)
{
	struct store_outbox_row rows[12];
	struct sink_result res[12];
	struct config_sink cfg;
	struct sink_http *h;
	char url[64];
	int stop = 0;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/hook", dead_port());
	cfg.url = url;
	cfg.secret = (char *)"0123456789abcdef0123";
	cfg.timeout_ms = 2000;
	for (size_t i = 0; i < 12; i++) {
		rows[i] = sample_row();
		rows[i].event_id = (int64_t)i + 1;
	}
	h = sink_http_new(&cfg, 4);
	ck_assert_ptr_nonnull(h);
	sink_http_deliver(h, rows, 12, res, &stop);
	/* The rows started before the refusal was seen were attempted; the rest were not sent
	 * and must not spend an attempt (issue 19.3). */
	for (size_t i = 0; i < 4; i++) {
		ck_assert_int_eq(res[i].verdict, SINK_RETRY);
		ck_assert_msg(strstr(res[i].error, "curl:") != NULL, "%s", res[i].error);
	}
	for (size_t i = 4; i < 12; i++) {
		ck_assert_int_eq(res[i].verdict, SINK_NOT_SENT);
		ck_assert_msg(strstr(res[i].error, "not sent: curl:") != NULL, "%s", res[i].error);
	}

	/* Stop already requested: nothing is attempted, everything stays pending. */
	stop = 1;
	sink_http_deliver(h, rows, 3, res, &stop);
	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(res[i].verdict, SINK_ABANDONED);
	sink_http_free(h);
	sink_http_free(NULL);
}
END_TEST

START_TEST(test_redis_refused_is_retry)
{
	struct store_outbox_row rows[3];
	struct sink_result res[3];
	struct config_sink cfg;
	struct sink_redis *r;
	char url[64];
	int stop = 0;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(url, sizeof(url), "redis://127.0.0.1:%u", dead_port());
	cfg.url = url;
	cfg.stream = (char *)"s";
	cfg.timeout_ms = 2000;
	for (size_t i = 0; i < 3; i++)
		rows[i] = sample_row();
	ck_assert_int_eq(sink_redis_new(&cfg, &r), 0);
	sink_redis_deliver(r, rows, 3, res, &stop);
	/* Nothing was sent: the first row carries the attempt, the others are postponed. */
	ck_assert_int_eq(res[0].verdict, SINK_RETRY);
	for (size_t i = 0; i < 3; i++)
		ck_assert_msg(strstr(res[i].error, "refused") != NULL, "%s", res[i].error);
	ck_assert_int_eq(res[1].verdict, SINK_NOT_SENT);
	ck_assert_int_eq(res[2].verdict, SINK_NOT_SENT);
	/* And again (reconnects, fails again the same way). */
	sink_redis_deliver(r, rows, 3, res, &stop);
	ck_assert_int_eq(res[0].verdict, SINK_RETRY);
	ck_assert_int_eq(res[2].verdict, SINK_NOT_SENT);
	sink_redis_free(r);
	sink_redis_free(NULL);

	cfg.url = (char *)"http://nope";
	ck_assert_int_eq(sink_redis_new(&cfg, &r), -EINVAL);
}
END_TEST

START_TEST(test_forward_without_sinks)
{
	struct config *cfg = config_new();
	struct forward *f = NULL;
	char err[256];

	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(forward_start(cfg, wr, &f, err, sizeof(err)), 0);
	forward_notify(f);
	forward_stop(f);
	forward_notify(NULL);
	forward_stop(NULL);
	config_free(cfg);
}
END_TEST

static Suite *forward_suite(void)
{
	Suite *s = suite_create("forward");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_test(tc, test_document_fields);
	tcase_add_test(tc, test_document_absent_fields_and_bad_raw);
	tcase_add_test(tc, test_classify);
	tcase_add_test(tc, test_redis_url_valid);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_backoff_bounds);
	tcase_add_test(tc, test_backoff_jitter_spreads);
	suite_add_tcase(s, tc);

	tc = tcase_create("outbox");
	tcase_add_checked_fixture(tc, db_setup, db_teardown);
	tcase_add_test(tc, test_outbox_one_row_per_payment);
	tcase_add_test(tc, test_outbox_retry_blocks_the_payment);
	tcase_add_test(tc, test_outbox_dead_list_and_counts);
	tcase_add_test(tc, test_outbox_replay);
	tcase_add_test(tc, test_replayed_dead_letter_state);
	tcase_add_test(tc, test_outbox_replay_orders_after_pending);
	tcase_add_test(tc, test_forward_without_sinks);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_redis_url_invalid);
	tcase_add_test(tc, test_http_refused_is_retry_and_rest_not_sent);
	tcase_add_test(tc, test_redis_refused_is_retry);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(forward_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
