/* Check suite for the reconciler: the pure schedule (whole payment lives simulated with an
 * injected clock: VA, QRIS, unknown expiry), the error backoff and the circuit breaker; the
 * store side (src/store_reconcile.c) on a real SQLite file: due order, marks, results with
 * events, the never-earlier guarantees; and one short run of the thread against a fake
 * Komerce on 127.0.0.1 (resolution, no second poll within the interval, prompt stop). */
#include "reconcile.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "callback.h"
#include "config.h"
#include "store.h"
#include "util.h"

#define T0  1786529730000LL /* ms */
#define MIN (3000 + RECONCILE_SAFETY_MS)

/* ---- schedule ---- */

/* Polls a payment from first_ms on until the schedule stops or the status flips: returns the
 * poll times in out (at most max) and their count. The payment "flips" at flip_ms (0: never),
 * which ends the life at the first poll at or after it. */
static size_t simulate(int64_t created, int64_t first, int64_t expires_s, int64_t flip_ms,
		       int64_t *out, size_t max)
{
	struct reconcile_sched s = {
		.created_at_ms = created, .expires_at_s = expires_s, .min_interval_ms = MIN};
	int64_t t = first;
	size_t n = 0;

	while (t != 0 && n < max) {
		out[n++] = t;
		if (flip_ms != 0 && t >= flip_ms)
			break;
		s.now_ms = t;
		s.last_polled_ms = t;
		s.attempts = (long)n;
		t = reconcile_next_poll_ms(&s);
		if (t != 0)
			ck_assert_int_ge(t - out[n - 1], MIN);
	}
	return n;
}

START_TEST(test_sched_backoff_unknown_expiry)
{
	struct reconcile_sched s = {.now_ms = T0,
				    .created_at_ms = T0 - 60000,
				    .last_polled_ms = T0,
				    .min_interval_ms = MIN};
	static const int64_t want[] = {5000,   10000,  20000,	40000,	 80000,	 160000,
				       320000, 640000, 1280000, 1800000, 1800000};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		s.attempts = (long)i + 1;
		ck_assert_int_eq(reconcile_next_poll_ms(&s) - T0, want[i]);
	}
	s.attempts = 1000000; /* no overflow */
	ck_assert_int_eq(reconcile_next_poll_ms(&s) - T0, RECONCILE_MAX_UNKNOWN);
	/* A week after creation, still unknown and PENDING: stop watching. */
	s.now_ms = s.last_polled_ms = T0 - 60000 + RECONCILE_GIVE_UP_UNKNOWN;
	ck_assert_int_eq(reconcile_next_poll_ms(&s), 0);
}
END_TEST

START_TEST(test_sched_never_before_min_interval)
{
	struct reconcile_sched s = {
		.now_ms = T0, .created_at_ms = T0, .attempts = 1, .min_interval_ms = MIN};

	/* The reply came at T0 but the last poll was recorded later (a mark after a restart):
	 * the interval counts from the later one. */
	s.last_polled_ms = T0 + 4000;
	ck_assert_int_eq(reconcile_next_poll_ms(&s), T0 + 4000 + MIN);
	/* Near the expiry the confirming poll never goes below it either. */
	s.last_polled_ms = T0;
	s.expires_at_s = (T0 + 1000) / 1000;
	ck_assert_int_eq(reconcile_next_poll_ms(&s), T0 + MIN);
}
END_TEST

START_TEST(test_sched_va_day)
{
	int64_t polls[400], e = T0 + 86400000;
	size_t n, in_window = 0;

	/* A VA that lives a day, never paid: Komerce says EXPIRED once it has expired. */
	n = simulate(T0, T0 + 60000, e / 1000, e, polls, 400);
	/* Sparse in between: every gap at most 10 min; dense at the end. */
	for (size_t i = 1; i < n; i++) {
		ck_assert_int_le(polls[i] - polls[i - 1], RECONCILE_MAX_BACKOFF);
		if (polls[i] >= e - RECONCILE_NEAR_WINDOW && polls[i] < e)
			in_window++;
	}
	ck_assert_int_eq(in_window, 4);
	/* The last poll is the one 2 s after the expiry. */
	ck_assert_int_eq(polls[n - 1], e + RECONCILE_FINAL_DELAY);
	ck_assert_int_lt(polls[n - 2], e);
	/* About a poll per 10 min over a day, not more. */
	ck_assert_int_le(n, 24 * 6 + 20);
	ck_assert_int_ge(n, 24 * 6);
}
END_TEST

START_TEST(test_sched_still_pending_after_expiry)
{
	int64_t polls[400], e = T0 + 3600000;
	size_t n, after = 0;

	/* Komerce keeps saying PENDING past expires_at: back off, give up a day later. */
	n = simulate(T0, T0 + 60000, e / 1000, 0, polls, 400);
	ck_assert_int_lt(n, 400);
	for (size_t i = 0; i < n; i++) {
		if (polls[i] < e)
			continue;
		if (after == 0)
			ck_assert_int_eq(polls[i], e + RECONCILE_FINAL_DELAY);
		else
			ck_assert_int_eq(polls[i] - polls[i - 1],
					 polls[i - 1] - e < MIN ? MIN
					 : polls[i - 1] - e > RECONCILE_MAX_UNKNOWN
						 ? RECONCILE_MAX_UNKNOWN
						 : polls[i - 1] - e);
		after++;
	}
	ck_assert_int_le(after, 60);
	/* The poll that finds the day over is the last one. */
	ck_assert_int_ge(polls[n - 1], e + RECONCILE_GIVE_UP);
	ck_assert_int_lt(polls[n - 2], e + RECONCILE_GIVE_UP);
}
END_TEST

START_TEST(test_sched_qris_five_minutes)
{
	int64_t polls[64], e = T0 + 300000;
	size_t n, i;

	/* QRIS: 5 min, first poll after a 60 s grace; paid at 4:50. */
	n = simulate(T0, T0 + 60000, e / 1000, T0 + 290000, polls, 64);
	ck_assert_int_le(n, 14);
	ck_assert_int_ge(polls[n - 1], T0 + 290000);
	ck_assert_int_le(polls[n - 1], T0 + 290000 + RECONCILE_NEAR_STEP);
	/* Never paid: the last minute is polled, then one poll confirms EXPIRED. */
	n = simulate(T0, T0 + 60000, e / 1000, e, polls, 64);
	for (i = 0; i < n && polls[i] < e - RECONCILE_NEAR_WINDOW; i++)
		;
	ck_assert_int_eq(polls[i], e - RECONCILE_NEAR_WINDOW);
	ck_assert_int_eq(polls[n - 1], e + RECONCILE_FINAL_DELAY);
}
END_TEST

START_TEST(test_sched_short_expiry)
{
	int64_t polls[16];
	size_t n;

	/* Expires 2 s after the first poll: the next poll is the confirming one, 3.1 s later. */
	n = simulate(T0, T0, (T0 + 2000) / 1000, T0 + 2000, polls, 16);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(polls[1], T0 + 2000 + RECONCILE_FINAL_DELAY);
	/* Already expired at the first poll (a late registration). */
	n = simulate(T0, T0 + 10000, T0 / 1000, 0, polls, 16);
	ck_assert_int_ge(n, 3);
	ck_assert_int_ge(polls[1] - polls[0], MIN);
}
END_TEST

START_TEST(test_error_delay)
{
	ck_assert_int_eq(reconcile_error_delay_ms(1, 0), 1000);
	ck_assert_int_eq(reconcile_error_delay_ms(1, UINT32_MAX), 2000);
	ck_assert_int_eq(reconcile_error_delay_ms(2, UINT32_MAX), 4000);
	ck_assert_int_eq(reconcile_error_delay_ms(4, UINT32_MAX), 16000);
	ck_assert_int_eq(reconcile_error_delay_ms(0, UINT32_MAX), 2000);
	ck_assert_int_eq(reconcile_error_delay_ms(100, UINT32_MAX), RECONCILE_MAX_BACKOFF);
	ck_assert_int_eq(reconcile_error_delay_ms(LONG_MAX, 0), RECONCILE_MAX_BACKOFF / 2);
	/* Jitter spreads payments that failed together. */
	ck_assert_int_ne(reconcile_error_delay_ms(3, 12345), reconcile_error_delay_ms(3, 99999999));
}
END_TEST

START_TEST(test_retry_after_failure)
{
	struct reconcile_sched s = {.now_ms = T0,
				    .created_at_ms = T0 - 600000,
				    .last_polled_ms = T0,
				    .min_interval_ms = MIN};
	int64_t lo = INT64_MAX, hi = 0;

	/* Early on: the error backoff (or Retry-After) decides, never under the interval. */
	s.attempts = 1;
	ck_assert_int_eq(reconcile_retry_ms(&s, 1000, 0), T0 + MIN);
	ck_assert_int_eq(reconcile_retry_ms(&s, 3000, UINT32_MAX), T0 + 5000);
	ck_assert_int_eq(reconcile_retry_ms(&s, 8000, UINT32_MAX), T0 + 8000);
	/* A payment that keeps failing still backs off with its attempts (640 s on the 8th),
	 * spread over [half, all] of it by jitter. */
	s.attempts = 8;
	for (uint32_t rnd = 1; rnd < 4000000000u; rnd += 97654321u) {
		int64_t n = reconcile_retry_ms(&s, 2000, rnd);

		lo = n < lo ? n : lo;
		hi = n > hi ? n : hi;
	}
	ck_assert_int_ge(lo, T0 + 320000);
	ck_assert_int_le(hi, T0 + 640000);
	ck_assert_int_gt(hi - lo, 200000);
	/* ... and is given up like any other. */
	s.now_ms = s.last_polled_ms = s.created_at_ms + RECONCILE_GIVE_UP_UNKNOWN;
	ck_assert_int_eq(reconcile_retry_ms(&s, 2000, 5), 0);
}
END_TEST

START_TEST(test_breaker)
{
	struct reconcile_breaker b;
	int64_t t = T0;

	reconcile_breaker_init(&b);
	ck_assert(reconcile_breaker_allow(&b, t));
	for (int i = 0; i < RECONCILE_BREAKER_THRESHOLD - 1; i++)
		ck_assert(!reconcile_breaker_failure(&b, t, t));
	/* A success in between (of a request sent after the failures were seen) resets the
	 * streak. */
	t++;
	ck_assert(!reconcile_breaker_success(&b, t, t));
	for (int i = 0; i < RECONCILE_BREAKER_THRESHOLD - 1; i++)
		ck_assert(!reconcile_breaker_failure(&b, t, t));
	ck_assert(reconcile_breaker_allow(&b, t));
	ck_assert(reconcile_breaker_failure(&b, t, t)); /* opens: one log line */
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_OPEN);
	ck_assert(!reconcile_breaker_allow(&b, t + RECONCILE_BREAKER_OPEN_MS - 1));
	ck_assert_int_eq(reconcile_breaker_ready_ms(&b, t), t + RECONCILE_BREAKER_OPEN_MS);

	/* Half-open: one probe, which fails: open twice as long, no new "opened". */
	t += RECONCILE_BREAKER_OPEN_MS;
	ck_assert(reconcile_breaker_allow(&b, t));
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_HALF_OPEN);
	ck_assert(!reconcile_breaker_allow(&b, t));
	ck_assert(!reconcile_breaker_failure(&b, t, t));
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_OPEN);
	ck_assert_int_eq(reconcile_breaker_ready_ms(&b, t), t + 2 * RECONCILE_BREAKER_OPEN_MS);

	/* Doubling stops at the maximum. */
	for (int i = 0; i < 20; i++) {
		t = b.open_until_ms;
		ck_assert(reconcile_breaker_allow(&b, t));
		ck_assert(!reconcile_breaker_failure(&b, t, t));
	}
	ck_assert_int_eq(b.open_ms, RECONCILE_BREAKER_MAX_OPEN_MS);

	/* The probe succeeds: closed (one log line), and the period is short again. */
	t = b.open_until_ms;
	ck_assert(reconcile_breaker_allow(&b, t));
	ck_assert(reconcile_breaker_success(&b, t, t));
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_CLOSED);
	ck_assert(reconcile_breaker_allow(&b, t));
	ck_assert(!reconcile_breaker_success(&b, t, t));
	for (int i = 0; i < RECONCILE_BREAKER_THRESHOLD; i++)
		reconcile_breaker_failure(&b, t, t);
	ck_assert_int_eq(reconcile_breaker_ready_ms(&b, t), t + RECONCILE_BREAKER_OPEN_MS);
}
END_TEST

START_TEST(test_breaker_configured)
{
	struct reconcile_breaker b;
	int64_t t = T0;

	/* reconcile.breaker_failures = 2, breaker_open_seconds = 1, breaker_max_open_seconds = 3 */
	reconcile_breaker_configure(&b, 2, 1000, 3000);
	ck_assert(!reconcile_breaker_failure(&b, t, t));
	ck_assert(reconcile_breaker_failure(&b, t, t));
	ck_assert_int_eq(reconcile_breaker_ready_ms(&b, t), t + 1000);
	for (int i = 0; i < 5; i++) {
		t = b.open_until_ms;
		ck_assert(reconcile_breaker_allow(&b, t));
		ck_assert(!reconcile_breaker_failure(&b, t, t));
	}
	ck_assert_int_eq(b.open_ms, 3000);
	t = b.open_until_ms;
	ck_assert(reconcile_breaker_allow(&b, t));
	ck_assert(reconcile_breaker_success(&b, t, t));
	ck_assert_int_eq(b.open_ms, 1000);
	/* Values <= 0 keep the defaults; a maximum below the period is raised to it. */
	reconcile_breaker_configure(&b, 0, -1, 0);
	ck_assert_int_eq(b.threshold, RECONCILE_BREAKER_THRESHOLD);
	ck_assert_int_eq(b.open_ms, RECONCILE_BREAKER_OPEN_MS);
	ck_assert_int_eq(b.max_open_ms, RECONCILE_BREAKER_MAX_OPEN_MS);
	reconcile_breaker_configure(&b, 3, 5000, 1000);
	ck_assert_int_eq(b.max_open_ms, 5000);
}
END_TEST

/* Requests in flight together: once a failure was seen, the successes of requests sent before
 * it (answered late, in any order) do not hide that Komerce is failing. */
START_TEST(test_breaker_in_flight)
{
	struct reconcile_breaker b;
	int64_t t = T0;

	reconcile_breaker_init(&b);
	ck_assert(!reconcile_breaker_failure(&b, t + 100, t + 10));
	for (int i = 1; i < RECONCILE_BREAKER_THRESHOLD; i++) {
		/* sent together with the failing ones, answered in between */
		ck_assert(!reconcile_breaker_success(&b, t + 100 + i, t + 10));
		if (i < RECONCILE_BREAKER_THRESHOLD - 1)
			ck_assert(!reconcile_breaker_failure(&b, t + 100 + i, t + 10));
	}
	ck_assert_int_eq(b.failures, RECONCILE_BREAKER_THRESHOLD - 1);
	ck_assert(reconcile_breaker_failure(&b, t + 120, t + 10));
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_OPEN);
	/* The others in flight fail too: the streak (and so the retry delay) stays. */
	ck_assert(!reconcile_breaker_failure(&b, t + 130, t + 10));
	ck_assert_int_eq(b.failures, RECONCILE_BREAKER_THRESHOLD);
	ck_assert(!reconcile_breaker_success(&b, t + 200, t + 99)); /* stale: stays open */
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_OPEN);
	/* A request sent after the first failure was seen that succeeds closes it. */
	ck_assert(reconcile_breaker_success(&b, t + 300, t + 101));
	ck_assert_int_eq(b.state, RECONCILE_BREAKER_CLOSED);
	ck_assert_int_eq(b.failures, 0);
	/* An isolated failure does not pile up: a later request's success ends the streak. */
	ck_assert(!reconcile_breaker_failure(&b, t + 400, t + 350));
	ck_assert(!reconcile_breaker_success(&b, t + 500, t + 450));
	ck_assert_int_eq(b.failures, 0);
}
END_TEST

START_TEST(test_sched_give_up_configured)
{
	struct reconcile_sched s = {.now_ms = T0,
				    .created_at_ms = T0 - 3600000,
				    .last_polled_ms = T0,
				    .attempts = 3,
				    .min_interval_ms = MIN,
				    .give_up_unknown_ms = 3600000};

	/* reconcile.give_up_unknown_expiry_seconds = 3600: an hour after creation, stop. */
	ck_assert_int_eq(reconcile_next_poll_ms(&s), 0);
	s.give_up_unknown_ms = 0; /* the default, a week */
	ck_assert_int_gt(reconcile_next_poll_ms(&s), 0);
	/* reconcile.give_up_after_expiry_seconds = 600: ten minutes past expiry, stop. */
	s.expires_at_s = (T0 - 600000) / 1000;
	s.give_up_ms = 600000;
	ck_assert_int_eq(reconcile_next_poll_ms(&s), 0);
	s.give_up_ms = 0;
	ck_assert_int_gt(reconcile_next_poll_ms(&s), 0);
}
END_TEST

/* ---- store side ---- */

static char tmpdir[PATH_MAX];
static char dbpath[PATH_MAX];
static struct store *st, *ro;

static struct store *open_store(bool readonly)
{
	struct store_opts o = {
		.path = dbpath,
		.mode = readonly ? STORE_MODE_READER : STORE_MODE_WRITER,
		.busy_timeout_ms = 5000,
		.grace_seconds = 0,
		.reconcile = true,
	};
	struct store *s = NULL;
	char err[256] = "";

	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_reconcile.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbpath, sizeof(dbpath), "%s/events.db", tmpdir);
	st = open_store(false);
	ck_assert_int_eq(store_writer_start(st), 0);
	ro = open_store(true);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	store_close(ro);
	store_close(st);
	ro = st = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

/* A PENDING callback at received_at: the store watches the payment from then on (grace 0). */
static void seen_pending(const char *pid, int64_t received_at)
{
	char body[256], why[64];
	struct store_req r;
	struct event ev;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"PENDING\","
		 "\"amount\":100000}",
		 pid, pid);
	ck_assert_int_eq(callback_parse(body, strlen(body), &ev, why, sizeof(why)), 0);
	ev.source = EVENT_SOURCE_CALLBACK;
	store_req_event(&r, &ev);
	r.received_at = received_at;
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
}

static int apply(struct store_reconcile_update *u, size_t n)
{
	struct store_req req;

	store_req_reconcile(&req, u, n);
	return store_submit_wait(st, &req);
}

static struct store_reconcile_update upd(const char *pid)
{
	struct store_reconcile_update u;

	memset(&u, 0, sizeof(u));
	snprintf(u.payment_id, sizeof(u.payment_id), "%s", pid);
	u.poll_attempts = -1;
	return u;
}

static int count_cb(void *arg, const struct store_event *e)
{
	(void)e;
	(*(int *)arg)++;
	return 0;
}

static int count_events(const char *pid, const char *source)
{
	struct store_event_filter f = {
		.payment_id = pid, .source = source, .status = PAYMENT_UNKNOWN};
	int n = 0;

	ck_assert_int_eq(store_events_query(ro, &f, count_cb, &n), 0);
	return n;
}

START_TEST(test_due_order_and_limit)
{
	struct store_reconcile_row rows[8];
	size_t n = 0;
	int64_t next = 0, watched = 0;

	ck_assert_int_eq(store_reconcile_next_due(ro, &next), -ENOENT);
	seen_pending("KOMPAY-B", T0 + 10);
	seen_pending("KOMPAY-A", T0 + 10);
	seen_pending("KOMPAY-C", T0);
	seen_pending("KOMPAY-LATER", T0 + 60000);
	ck_assert_int_eq(store_reconcile_due(ro, T0 + 10, 8, rows, &n), 0);
	ck_assert_int_eq(n, 3);
	/* Oldest due first, ties by payment_id. */
	ck_assert_str_eq(rows[0].payment_id, "KOMPAY-C");
	ck_assert_str_eq(rows[1].payment_id, "KOMPAY-A");
	ck_assert_str_eq(rows[2].payment_id, "KOMPAY-B");
	ck_assert_int_eq(rows[0].status, PAYMENT_PENDING);
	ck_assert_int_eq(rows[0].amount, 100000);
	ck_assert_int_eq(rows[0].created_at, T0);
	ck_assert_int_eq(rows[0].last_polled_at, 0);
	ck_assert_int_eq(rows[0].next_poll_at, T0);
	ck_assert_int_eq(rows[0].poll_attempts, 0);
	ck_assert_int_eq(store_reconcile_due(ro, T0 + 10, 2, rows, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(store_reconcile_due(ro, T0 - 1, 8, rows, &n), 0);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(store_reconcile_due(ro, T0, 0, rows, &n), -EINVAL);
	ck_assert_int_eq(store_reconcile_next_due(ro, &next), 0);
	ck_assert_int_eq(next, T0);
	ck_assert_int_eq(store_reconcile_watched(ro, &watched), 0);
	ck_assert_int_eq(watched, 4);
}
END_TEST

START_TEST(test_mark_and_result)
{
	struct store_reconcile_update u[2];
	struct store_reconcile_row rows[4];
	struct store_payment p;
	size_t n = 0;
	const char *raw = "{\"payment_id\":\"KOMPAY-1\",\"status\":\"PAID\",\"amount\":100000}";

	seen_pending("KOMPAY-1", T0);
	/* The mark: last poll now, next poll far enough should the result never land. */
	u[0] = upd("KOMPAY-1");
	u[0].only_if_watched = true;
	u[0].last_polled_at = T0 + 1000;
	u[0].set_next = true;
	u[0].next_poll_at = T0 + 10000;
	ck_assert_int_eq(apply(u, 1), 0);
	ck_assert(u[0].matched);
	ck_assert_int_eq(store_payment_get(ro, "KOMPAY-1", &p), 0);
	ck_assert_int_eq(p.last_polled_at, T0 + 1000);
	ck_assert_int_eq(p.next_poll_at, T0 + 10000);
	ck_assert_int_eq(store_reconcile_due(ro, T0 + 9999, 4, rows, &n), 0);
	ck_assert_int_eq(n, 0);

	/* A late result cannot move last_polled_at backwards. */
	u[0] = upd("KOMPAY-1");
	u[0].last_polled_at = T0 + 500;
	u[0].poll_attempts = 1;
	u[0].expires_at = (T0 + 86400000) / 1000;
	u[0].set_next = true;
	u[0].next_poll_at = T0 + 6000;
	ck_assert_int_eq(apply(u, 1), 0);
	ck_assert_int_eq(store_payment_get(ro, "KOMPAY-1", &p), 0);
	ck_assert_int_eq(p.last_polled_at, T0 + 1000);
	ck_assert_int_eq(p.poll_attempts, 1);
	ck_assert_int_eq(p.expires_at, (T0 + 86400000) / 1000);
	ck_assert_int_eq(p.next_poll_at, T0 + 6000);

	/* The poll learned PAID: one event, source reconcile, and the payment leaves the watch
	 * list whatever next_poll_at the result carries. */
	u[0] = upd("KOMPAY-1");
	u[0].last_polled_at = T0 + 7000;
	u[0].poll_attempts = 2;
	u[0].set_next = true;
	u[0].next_poll_at = T0 + 20000;
	u[0].has_event = true;
	ck_assert_int_eq(callback_parse(raw, strlen(raw), &u[0].ev, NULL, 0), 0);
	ck_assert_int_eq(apply(u, 1), 0);
	ck_assert(u[0].matched);
	ck_assert(!u[0].duplicate);
	ck_assert(!u[0].conflict);
	ck_assert_int_gt(u[0].event_id, 0);
	ck_assert_int_eq(store_payment_get(ro, "KOMPAY-1", &p), 0);
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.next_poll_at, 0);
	ck_assert_int_eq(p.last_polled_at, T0 + 7000);
	ck_assert_int_eq(count_events("KOMPAY-1", "reconcile"), 1);

	/* A mark for a payment no longer watched does not match: the poll is not sent. */
	u[1] = upd("KOMPAY-1");
	u[1].only_if_watched = true;
	u[1].last_polled_at = T0 + 30000;
	u[1].set_next = true;
	u[1].next_poll_at = T0 + 40000;
	ck_assert_int_eq(apply(&u[1], 1), 0);
	ck_assert(!u[1].matched);
	ck_assert_int_eq(store_payment_get(ro, "KOMPAY-1", &p), 0);
	ck_assert_int_eq(p.next_poll_at, 0);
	ck_assert_int_eq(p.last_polled_at, T0 + 7000);
}
END_TEST

START_TEST(test_callback_after_reconcile_is_duplicate)
{
	struct store_reconcile_update u = upd("KOMPAY-2");
	const char *raw = "{\"payment_id\":\"KOMPAY-2\",\"status\":\"EXPIRED\"}";
	struct store_req r;
	struct event ev;

	seen_pending("KOMPAY-2", T0);
	u.has_event = true;
	u.last_polled_at = T0 + 100;
	u.set_next = true;
	ck_assert_int_eq(callback_parse(raw, strlen(raw), &u.ev, NULL, 0), 0);
	ck_assert_int_eq(apply(&u, 1), 0);
	ck_assert(!u.duplicate);

	ck_assert_int_eq(callback_parse(raw, strlen(raw), &ev, NULL, 0), 0);
	ev.source = EVENT_SOURCE_CALLBACK;
	store_req_event(&r, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	ck_assert(r.duplicate);
	ck_assert_int_eq(r.event_id, u.event_id);
	ck_assert_int_eq(count_events("KOMPAY-2", NULL), 2); /* PENDING + EXPIRED */

	/* And the other way round: the reconciler learning what a callback told. */
	u = upd("KOMPAY-2");
	u.has_event = true;
	ck_assert_int_eq(callback_parse(raw, strlen(raw), &u.ev, NULL, 0), 0);
	ck_assert_int_eq(apply(&u, 1), 0);
	ck_assert(u.duplicate);
}
END_TEST

START_TEST(test_result_after_terminal_callback)
{
	struct store_reconcile_update u = upd("KOMPAY-3");
	const char *raw = "{\"payment_id\":\"KOMPAY-3\",\"status\":\"PAID\"}";
	struct store_payment p;
	struct store_req r;
	struct event ev;

	seen_pending("KOMPAY-3", T0);
	/* The PAID callback lands while a poll (which saw PENDING) is in flight. */
	ck_assert_int_eq(callback_parse(raw, strlen(raw), &ev, NULL, 0), 0);
	ev.source = EVENT_SOURCE_CALLBACK;
	store_req_event(&r, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	u.last_polled_at = T0 + 100;
	u.poll_attempts = 1;
	u.set_next = true;
	u.next_poll_at = T0 + 5000;
	ck_assert_int_eq(apply(&u, 1), 0);
	ck_assert_int_eq(store_payment_get(ro, "KOMPAY-3", &p), 0);
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.next_poll_at, 0); /* never watched again */
	ck_assert_int_eq(p.poll_attempts, 1);
}
END_TEST

START_TEST(test_stop_watching_and_unknown)
{
	struct store_reconcile_update u[2];
	int64_t watched = -1;

	seen_pending("KOMPAY-4", T0);
	u[0] = upd("KOMPAY-4");
	u[0].set_next = true;
	u[0].next_poll_at = 0; /* gave up */
	u[1] = upd("KOMPAY-NOPE");
	u[1].set_next = true;
	u[1].next_poll_at = T0;
	ck_assert_int_eq(apply(u, 2), 0);
	ck_assert(u[0].matched);
	ck_assert(!u[1].matched);
	ck_assert_int_eq(store_reconcile_watched(ro, &watched), 0);
	ck_assert_int_eq(watched, 0);
}
END_TEST

/* ---- the thread against a fake Komerce ---- */

static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static int fake_polls;
static int64_t fake_last_ms, fake_min_gap_ms = -1;
static const char *fake_status = "PENDING";

static enum MHD_Result fake_handler(void *cls, struct MHD_Connection *c, const char *url,
				    const char *method, const char *version, const char *data,
				    size_t *size, void **state)
{
	static const char prefix[] = "/api/v1/user/payment/status/";
	char body[512];
	struct MHD_Response *resp;
	enum MHD_Result ret;
	int64_t now = util_mono_ms();

	(void)cls, (void)method, (void)version, (void)data, (void)size, (void)state;
	if (strncmp(url, prefix, sizeof(prefix) - 1) != 0)
		return MHD_NO;
	pthread_mutex_lock(&fake_mu);
	if (fake_last_ms != 0 && (fake_min_gap_ms < 0 || now - fake_last_ms < fake_min_gap_ms))
		fake_min_gap_ms = now - fake_last_ms;
	fake_last_ms = now;
	fake_polls++;
	snprintf(body, sizeof(body),
		 "{\"meta\":{\"message\":\"ok\",\"code\":200,\"status\":\"success\"},"
		 "\"data\":{\"payment_id\":\"%s\",\"order_id\":\"ORD-1\",\"status\":\"%s\","
		 "\"amount\":100000,\"expired_at\":\"2099-01-01T00:00:00.000Z\"}}",
		 url + sizeof(prefix) - 1, fake_status);
	pthread_mutex_unlock(&fake_mu);
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
	ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

static int fake_polls_now(void)
{
	int n;

	pthread_mutex_lock(&fake_mu);
	n = fake_polls;
	pthread_mutex_unlock(&fake_mu);
	return n;
}

static bool wait_for(bool (*fn)(void), int64_t timeout_ms)
{
	int64_t end = util_mono_ms() + timeout_ms;
	struct timespec ts = {0, 10000000};

	while (!fn()) {
		if (util_mono_ms() > end)
			return false;
		nanosleep(&ts, NULL);
	}
	return true;
}

static bool polled_once(void)
{
	return fake_polls_now() >= 1;
}

static bool resolved(void)
{
	struct store_payment p;

	return store_payment_get(ro, "KOMPAY-T", &p) == 0 && p.status == PAYMENT_PAID;
}

START_TEST(test_thread_resolves_and_stops)
{
	struct sockaddr_in sa;
	struct MHD_Daemon *d;
	struct config *cfg = config_new();
	struct reconcile *rec = NULL;
	char text[1024], err[512] = "";
	const union MHD_DaemonInfo *info;
	int64_t t;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
			     NULL, NULL, fake_handler, NULL, MHD_OPTION_SOCK_ADDR, &sa,
			     MHD_OPTION_END);
	ck_assert_ptr_nonnull(d);
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	ck_assert_ptr_nonnull(cfg);
	snprintf(text, sizeof(text),
		 "[komerce]\nbase_url = http://127.0.0.1:%u\napi_key = k\n"
		 "callback_keys = 0123456789abcdef0123\n[admin]\ntoken = "
		 "0123456789abcdef0123\n[store]\npath = %s\n"
		 "[reconcile]\ngrace_seconds = 0\nmax_requests_per_second = 100\n",
		 (unsigned)info->port, dbpath);
	ck_assert_msg(config_load_string(cfg, text, NULL, err, sizeof(err)) == 0, "%s", err);

	seen_pending("KOMPAY-T", util_now_ms());
	ck_assert_int_eq(reconcile_start(cfg, st, &rec, err, sizeof(err)), 0);
	/* Still PENDING at the first poll; PAID at the second, which waits its 3 s. */
	ck_assert(wait_for(polled_once, 5000));
	pthread_mutex_lock(&fake_mu);
	fake_status = "PAID";
	pthread_mutex_unlock(&fake_mu);
	ck_assert(wait_for(resolved, 15000));
	ck_assert_int_eq(fake_polls_now(), 2);
	ck_assert_int_ge(fake_min_gap_ms, 3000);
	ck_assert_int_eq(count_events("KOMPAY-T", "reconcile"), 1);

	/* Idle: stop is prompt. */
	t = util_mono_ms();
	reconcile_stop(rec);
	ck_assert_int_lt(util_mono_ms() - t, 1000);
	reconcile_stop(NULL);
	reconcile_wake(NULL);
	config_free(cfg);
	MHD_stop_daemon(d);
}
END_TEST

static Suite *reconcile_suite(void)
{
	Suite *s = suite_create("reconcile");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_test(tc, test_sched_backoff_unknown_expiry);
	tcase_add_test(tc, test_sched_va_day);
	tcase_add_test(tc, test_sched_still_pending_after_expiry);
	tcase_add_test(tc, test_sched_qris_five_minutes);
	tcase_add_test(tc, test_error_delay);
	tcase_add_test(tc, test_retry_after_failure);
	tcase_add_test(tc, test_breaker);
	tcase_add_test(tc, test_breaker_configured);
	tcase_add_test(tc, test_breaker_in_flight);
	tcase_add_test(tc, test_sched_give_up_configured);
	suite_add_tcase(s, tc);

	tc = tcase_create("store");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_due_order_and_limit);
	tcase_add_test(tc, test_mark_and_result);
	tcase_add_test(tc, test_callback_after_reconcile_is_duplicate);
	tcase_add_test(tc, test_result_after_terminal_callback);
	tcase_add_test(tc, test_stop_watching_and_unknown);
	tcase_add_test(tc, test_thread_resolves_and_stops);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_sched_never_before_min_interval);
	tcase_add_test(tc, test_sched_short_expiry);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(reconcile_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
