/* Integration: the reconciler of the real komerce-hookd against komerce-sim with callbacks
 * dropped. Payments are created in the simulator and made known to the daemon by a signed
 * PENDING callback; the daemon must then find PAID / EXPIRED / CANCELED by polling, store one
 * source=reconcile event per fact, never poll a payment twice within 3 s (the simulator's own
 * measurement, across hundreds of payments, 429 bursts, 500s and a crash), keep its schedule
 * across a restart, fill its budget against a Komerce that answers in 300 ms (requests in
 * flight together) without passing it in any second, and poll a newly announced payment at
 * once. "confirm": with komerce.confirm_paid a signed PAID callback moves the payment and is
 * forwarded only once a status call confirms it; otherwise it is flagged and nothing is
 * forwarded; Komerce down meanwhile delays it; without confirm_paid nothing changes. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "rx.h"
#include "store.h"
#include "util.h"

static struct hk_daemon d;
static struct hk_sim sim;

/* ---- plumbing ---- */

/* komerce-sim with sim_args, the daemon polling it with grace_seconds and the budget rate;
 * more: further config text. */
static void start_with(const char *sim_args, long grace, double rate, const char *more)
{
	char extra[2048];

	ck_assert_msg(hk_sim_start(&sim, sim_args) == 0, "komerce-sim did not start");
	snprintf(extra, sizeof(extra),
		 "[komerce]\nbase_url = http://127.0.0.1:%u/user\ntimeout_ms = 2000\n"
		 "[reconcile]\ngrace_seconds = %ld\nmax_requests_per_second = %g\n%s",
		 sim.port, grace, rate, more != NULL ? more : "");
	hk_daemon_init(&d, extra);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
}

static void start_pair(double rate, const char *more)
{
	start_with("--quiet", 0, rate, more);
}

static struct rx *sink;

static void teardown(void)
{
	hk_daemon_cleanup(&d);
	hk_sim_stop(&sim);
	rx_stop(sink);
	sink = NULL;
}

static long sim_call(const char *method, const char *path, const char *body, struct hk_reply *ret)
{
	static const char *const json[] = {"Content-Type: application/json", NULL};
	char url[512];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", sim.port, path);
	return hk_request(method, url, json, body, body != NULL ? strlen(body) : 0, 10000, ret);
}

static void sim_config(const char *json)
{
	struct hk_reply r;

	ck_assert_int_eq(sim_call("POST", "/_sim/config", json, &r), 200);
}

/* A VA payment in the simulator; expiry_s 0 = the default (24 h). */
static void sim_create(const char *id, long expiry_s)
{
	char body[1024], exp[48] = "";
	struct hk_reply r;
	long st;

	if (expiry_s > 0)
		snprintf(exp, sizeof(exp), ",\"expiry_duration\":%ld", expiry_s);
	snprintf(
		body, sizeof(body),
		"{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"payment_type\":\"bank_transfer\","
		"\"channel_code\":\"BCA\",\"amount\":100000,\"customer\":{\"name\":\"Budi\","
		"\"email\":\"budi@example.com\",\"phone\":\"081234567890\"},"
		"\"callback_url\":\"http://127.0.0.1:%u/v1/komerce/callback\","
		"\"callback_api_key\":\"%s\"%s}",
		id, id, d.port, HK_CALLBACK_KEY, exp);
	st = sim_call("POST", "/_sim/payments", body, &r);
	ck_assert_msg(st == 200, "create %s: %ld %s", id, st, r.body);
}

static void sim_move(const char *id, const char *action)
{
	char path[256];
	struct hk_reply r;
	long st;

	snprintf(path, sizeof(path), "/_sim/payments/%s/%s", id, action);
	st = sim_call("POST", path, "", &r);
	ck_assert_msg(st == 200, "%s %s: %ld %s", action, id, st, r.body);
}

/* GET /_sim/stats, parsed (caller deletes). */
static cJSON *sim_stats(void)
{
	struct hk_reply r;
	cJSON *j;

	ck_assert_int_eq(sim_call("GET", "/_sim/stats", NULL, &r), 200);
	ck_assert_msg(r.len < sizeof(r.body) - 1, "stats reply truncated");
	j = cJSON_Parse(r.body);
	ck_assert_ptr_nonnull(j);
	return j;
}

static double num(const cJSON *o, const char *name, double absent)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsNumber(v) ? v->valuedouble : absent;
}

/* Polls the simulator counted for id (0 when none). */
static long polls_of(const cJSON *stats, const char *id)
{
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(stats, "payments");

	return (long)num(cJSON_GetObjectItemCaseSensitive(p, id), "polls", 0);
}

/* The simulator's smallest gap between two status requests for one payment, over all of
 * them; a large number when no payment was polled twice. */
static double min_gap(const cJSON *stats)
{
	return num(stats, "min_poll_interval_ms", 1e12);
}

/* Makes the daemon watch id: a signed PENDING callback, as Komerce sends on creation. */
static void announce(const char *id)
{
	char body[512];
	struct hk_reply r;
	long st;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"PENDING\","
		 "\"amount\":100000,\"payment_type\":\"bank_transfer\",\"bank_code\":\"BCA\"}",
		 id, id);
	st = hk_post_callback(&d, body, HK_CALLBACK_KEY, &r);
	ck_assert_msg(st == 200, "callback %s: %ld %s", id, st, r.body);
}

static struct store *open_ro(void)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[256];

	hk_store_target(&o, d.db);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

static enum payment_status status_in_daemon(const char *id)
{
	struct store *s = open_ro();
	struct store_payment p;
	enum payment_status st = PAYMENT_UNKNOWN;

	if (store_payment_get(s, id, &p) == 0)
		st = p.status;
	store_close(s);
	return st;
}

static int count_cb(void *arg, const struct store_event *e)
{
	(void)e;
	(*(long *)arg)++;
	return 0;
}

/* Events matching (payment_id or NULL, status, source or NULL). */
static long events(const char *id, enum payment_status st, const char *source)
{
	struct store_event_filter f = {.payment_id = id, .status = st, .source = source};
	struct store *s = open_ro();
	long n = 0;

	ck_assert_int_eq(store_events_query(s, &f, count_cb, &n), 0);
	store_close(s);
	return n;
}

struct want {
	const char *id;
	enum payment_status st;
};

static bool reached(void *arg)
{
	const struct want *w = arg;

	return status_in_daemon(w->id) == w->st;
}

static void expect_status(const char *id, enum payment_status st, long timeout_ms)
{
	struct want w = {id, st};

	ck_assert_msg(hk_wait_until(reached, &w, timeout_ms), "%s is not %s after %ld ms (log %s)",
		      id, payment_status_name(st), timeout_ms, d.log);
}

static bool first_polled(void *arg)
{
	cJSON *s = sim_stats();
	bool ok = polls_of(s, arg) >= 1;

	cJSON_Delete(s);
	return ok;
}

/* ---- tests ---- */

START_TEST(finds_paid_expired_canceled)
{
	struct hk_reply r;
	char url[128];
	cJSON *s;

	start_pair(50, NULL);
	sim_config("{\"drop_callbacks\":true}");
	sim_create("KOMPAY-RC-PAID", 0);
	sim_create("KOMPAY-RC-CANCEL", 0);
	sim_create("KOMPAY-RC-EXPIRE", 2);
	sim_create("KPAY-5292/KM/2026", 0); /* paid while watched; slashes in the id */
	sim_move("KOMPAY-RC-PAID", "pay");
	sim_move("KOMPAY-RC-CANCEL", "cancel");
	announce("KOMPAY-RC-PAID");
	announce("KOMPAY-RC-CANCEL");
	announce("KOMPAY-RC-EXPIRE");
	announce("KPAY-5292/KM/2026");

	expect_status("KOMPAY-RC-PAID", PAYMENT_PAID, 10000);
	expect_status("KOMPAY-RC-CANCEL", PAYMENT_CANCELED, 10000);
	ck_assert(hk_wait_until(first_polled, "KPAY-5292/KM/2026", 10000));
	sim_move("KPAY-5292/KM/2026", "pay");
	/* Expired 2 s after creation: the confirming poll comes just after. */
	expect_status("KOMPAY-RC-EXPIRE", PAYMENT_EXPIRED, 15000);
	expect_status("KPAY-5292/KM/2026", PAYMENT_PAID, 15000);

	ck_assert_int_eq(events("KOMPAY-RC-PAID", PAYMENT_PAID, "reconcile"), 1);
	ck_assert_int_eq(events("KOMPAY-RC-CANCEL", PAYMENT_CANCELED, "reconcile"), 1);
	ck_assert_int_eq(events("KOMPAY-RC-EXPIRE", PAYMENT_EXPIRED, "reconcile"), 1);
	ck_assert_int_eq(events("KPAY-5292/KM/2026", PAYMENT_PAID, "reconcile"), 1);
	ck_assert_int_eq(events(NULL, PAYMENT_UNKNOWN, NULL), 8); /* 4 PENDING + 4 final */
	ck_assert(hk_log_contains(&d, "payment resolved by reconciliation"));

	/* The callback that finally arrives is a duplicate of what polling stored. */
	ck_assert_int_eq(hk_post_callback(&d,
					  "{\"payment_id\":\"KOMPAY-RC-PAID\",\"order_id\":"
					  "\"ORD-KOMPAY-RC-PAID\",\"status\":\"PAID\",\"amount\":"
					  "100000}",
					  HK_CALLBACK_KEY, &r),
			 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"duplicate\":true"));
	ck_assert_int_eq(events("KOMPAY-RC-PAID", PAYMENT_PAID, NULL), 1);

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", d.admin_port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "hookd_reconcile_resolved_total 4"));

	/* Terminal payments are not polled again, and nothing came within 3 s. */
	s = sim_stats();
	ck_assert_int_le(polls_of(s, "KOMPAY-RC-PAID"), 1);
	ck_assert_int_le(polls_of(s, "KOMPAY-RC-CANCEL"), 1);
	ck_assert_double_ge(min_gap(s), 3000);
	cJSON_Delete(s);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

#define MANY 300

static bool all_polled(void *arg)
{
	cJSON *s = sim_stats();
	bool ok = num(s, "status_requests", 0) >= *(long *)arg;

	cJSON_Delete(s);
	return ok;
}

static bool all_paid(void *arg)
{
	(void)arg;
	return events(NULL, PAYMENT_PAID, "reconcile") >= MANY;
}

START_TEST(hundreds_within_limits_through_429_and_500)
{
	const double rate = 150;
	char id[64];
	long need = MANY;
	int64_t t0;
	double elapsed_s, sent;
	cJSON *s;

	/* One request in flight: the breaker counts consecutive failures, and with several in
	 * flight a success sent before Komerce's bad moment can complete among its five 500s
	 * and reset the count (the budget and the gaps are what this test measures). */
	start_pair(rate, "max_in_flight = 1\n");
	sim_config("{\"drop_callbacks\":true}");
	for (int i = 0; i < MANY; i++) {
		snprintf(id, sizeof(id), "KOMPAY-MANY-%03d", i);
		sim_create(id, 0);
	}
	t0 = util_mono_ms();
	for (int i = 0; i < MANY; i++) {
		snprintf(id, sizeof(id), "KOMPAY-MANY-%03d", i);
		announce(id);
	}
	/* Everyone polled once (PENDING), at most rate per second. */
	ck_assert(hk_wait_until(all_polled, &need, 15000));

	/* Komerce has a bad moment: five 500s (the breaker opens), then a burst of 429s; the
	 * payments are paid meanwhile and their callbacks are lost. */
	sim_config("{\"fail_status\":500,\"fail_count\":5,\"rate_limit_burst\":40}");
	for (int i = 0; i < MANY; i++) {
		snprintf(id, sizeof(id), "KOMPAY-MANY-%03d", i);
		sim_move(id, "pay");
	}
	ck_assert_msg(hk_wait_until(all_paid, NULL, 60000), "not all resolved (log %s)", d.log);
	elapsed_s = (double)(util_mono_ms() - t0) / 1000.0;

	s = sim_stats();
	sent = num(s, "status_requests", 0);
	ck_assert_double_ge(min_gap(s), 3000);
	ck_assert_double_ge(num(s, "rate_limited", 0), 40);
	/* The budget held (with a second of slack), and each payment took few requests. */
	ck_assert_msg(sent <= rate * (elapsed_s + 1), "%.0f requests in %.1f s", sent, elapsed_s);
	ck_assert_msg(sent <= MANY * 4, "%.0f requests for %d payments", sent, MANY);
	for (int i = 0; i < MANY; i++) {
		snprintf(id, sizeof(id), "KOMPAY-MANY-%03d", i);
		ck_assert_int_eq(events(id, PAYMENT_PAID, NULL), 1);
	}
	cJSON_Delete(s);
	ck_assert(hk_log_contains(&d, "reconcile circuit open"));
	ck_assert(hk_log_contains(&d, "reconcile circuit closed"));
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

#define RESTART_N 100

static bool some_polled(void *arg)
{
	cJSON *s = sim_stats();
	bool ok = num(s, "status_requests", 0) >= *(long *)arg;

	cJSON_Delete(s);
	return ok;
}

static bool each_polled_once(void *arg)
{
	cJSON *s = sim_stats();
	char id[64];
	bool ok = true;

	(void)arg;
	for (int i = 0; i < RESTART_N && ok; i++) {
		snprintf(id, sizeof(id), "KOMPAY-RS-%03d", i);
		ok = polls_of(s, id) >= 1;
	}
	cJSON_Delete(s);
	return ok;
}

START_TEST(restart_keeps_schedule)
{
	long before[RESTART_N], mid = RESTART_N / 3, n_before = 0;
	int64_t next_at[RESTART_N], t;
	char id[64];
	struct store *ro;
	cJSON *s;
	int rc;

	/* 20/s: the first pass takes 5 s, time enough to kill it in the middle however slow the
	 * test's own look at the simulator (sanitizers, a busy machine). */
	start_pair(20, NULL);
	sim_config("{\"drop_callbacks\":true}");
	for (int i = 0; i < RESTART_N; i++) {
		snprintf(id, sizeof(id), "KOMPAY-RS-%03d", i);
		sim_create(id, 0);
		announce(id);
	}
	/* Crash in the middle of the first pass. */
	ck_assert(hk_wait_until(some_polled, &mid, 10000));
	ck_assert_int_eq(hk_daemon_stop(&d, SIGKILL), 128 + SIGKILL);

	s = sim_stats();
	ro = open_ro();
	for (int i = 0; i < RESTART_N; i++) {
		struct store_payment p;

		snprintf(id, sizeof(id), "KOMPAY-RS-%03d", i);
		before[i] = polls_of(s, id);
		n_before += before[i] > 0;
		ck_assert_int_eq(store_payment_get(ro, id, &p), 0);
		next_at[i] = p.next_poll_at;
		/* Whatever the crash interrupted, a polled payment is not due within 3 s. */
		if (before[i] > 0)
			ck_assert_int_ge(p.next_poll_at - p.last_polled_at, 3000);
	}
	store_close(ro);
	cJSON_Delete(s);
	ck_assert_int_ge(n_before, mid);
	ck_assert_int_lt(n_before, RESTART_N);

	ck_assert_msg(hk_daemon_start(&d) == 0, "restart failed (log %s)", d.log);
	ck_assert(hk_wait_until(each_polled_once, NULL, 15000));
	t = util_now_ms();
	s = sim_stats();
	for (int i = 0; i < RESTART_N; i++) {
		snprintf(id, sizeof(id), "KOMPAY-RS-%03d", i);
		/* Those polled before the crash are not polled again before their time. */
		if (before[i] > 0 && t < next_at[i])
			ck_assert_msg(polls_of(s, id) == before[i], "%s polled early", id);
	}
	ck_assert_double_ge(min_gap(s), 3000);
	cJSON_Delete(s);

	/* SIGTERM while polling: a clean exit, promptly. */
	t = util_mono_ms();
	rc = hk_daemon_stop(&d, SIGTERM);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_lt(util_mono_ms() - t, 3000);
	ck_assert(hk_log_contains(&d, "stopped cleanly"));
}
END_TEST

/* ---- requests in flight together, against a slow Komerce ---- */

#define SLOW_N	  200
#define SLOW_RATE 40
#define SLOW_LAT  300

/* GET /_sim/polls: the arrival times (monotonic ms) of every status request, in order, into
 * at (at most max) and the ids into ids (may be NULL). Returns the count. */
static size_t sim_polls(long long *at, char (*ids)[64], size_t max)
{
	struct hk_reply *r = malloc(sizeof(*r));
	const cJSON *p;
	cJSON *j;
	size_t n = 0;

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(sim_call("GET", "/_sim/polls", NULL, r), 200);
	ck_assert_msg(r->len < sizeof(r->body) - 1, "polls reply truncated");
	j = cJSON_Parse(r->body);
	ck_assert_ptr_nonnull(j);
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(j, "polls"))
	{
		if (n == max)
			break;
		at[n] = (long long)num(p, "at_ms", 0);
		if (ids != NULL)
			snprintf(ids[n], sizeof(ids[n]), "%s",
				 cJSON_GetObjectItemCaseSensitive(p, "payment_id")->valuestring);
		n++;
	}
	cJSON_Delete(j);
	free(r);
	return n;
}

/* The most arrivals in any window [t, t + 1000 ms) (at is in arrival order). */
static long peak_per_second(const long long *at, size_t n)
{
	long best = 0;

	for (size_t i = 0, j = 0; i < n; i++) {
		while (j < n && at[j] < at[i] + 1000)
			j++;
		if ((long)(j - i) > best)
			best = (long)(j - i);
	}
	return best;
}

static bool paid_by_polling(void *arg)
{
	return events(NULL, PAYMENT_PAID, "reconcile") >= *(long *)arg;
}

START_TEST(budget_filled_against_slow_komerce)
{
	static long long at[4 * SLOW_N];
	long need = SLOW_N;
	char id[64];
	size_t n;
	double rate;
	long peak;
	cJSON *s;

	/* All announced within the grace period, then polled together: what the reconciler
	 * does after a callback outage. Each request takes 300 ms: one at a time would be
	 * ~3 per second. */
	start_with("--quiet --latency-ms 300", 2, SLOW_RATE, "max_in_flight = 16\n");
	sim_config("{\"drop_callbacks\":true}");
	for (int i = 0; i < SLOW_N; i++) {
		snprintf(id, sizeof(id), "KOMPAY-SLOW-%03d", i);
		sim_create(id, 0);
		announce(id);
	}
	ck_assert_msg(hk_wait_until(all_polled, &need, 30000), "first round not done (log %s)",
		      d.log);
	for (int i = 0; i < SLOW_N; i++) {
		snprintf(id, sizeof(id), "KOMPAY-SLOW-%03d", i);
		sim_move(id, "pay");
	}
	ck_assert_msg(hk_wait_until(paid_by_polling, &need, 60000), "not all resolved (log %s)",
		      d.log);

	/* Payments paid while their first request was on its way were resolved by it. */
	n = sim_polls(at, NULL, sizeof(at) / sizeof(at[0]));
	ck_assert_int_ge(n, SLOW_N + SLOW_N / 2);
	/* The first round (first polls come first: they are the longest due), at >= 80 % of
	 * the budget. */
	rate = (SLOW_N - 1) * 1000.0 / (double)(at[SLOW_N - 1] - at[0]);
	ck_assert_msg(rate >= 0.8 * SLOW_RATE, "first round at %.1f polls/s, budget %d", rate,
		      SLOW_RATE);
	/* Never more than the budget in any second, as Komerce counts arrivals: the reconciler
	 * spaces its sends, but on a loaded machine (sanitizers, a busy CI box) arrivals bunch
	 * by scheduling jitter, so a tenth of slack is allowed for that. */
	peak = peak_per_second(at, n);
	ck_assert_msg(peak <= SLOW_RATE + SLOW_RATE / 10, "%ld polls in one second, budget %d",
		      peak, SLOW_RATE);
	fprintf(stderr, "it-reconcile: first round %.1f polls/s (budget %d), peak %ld in 1 s\n",
		rate, SLOW_RATE, peak);
	s = sim_stats();
	ck_assert_double_ge(min_gap(s), 3000);
	cJSON_Delete(s);
	for (int i = 0; i < SLOW_N; i++) {
		snprintf(id, sizeof(id), "KOMPAY-SLOW-%03d", i);
		ck_assert_int_eq(status_in_daemon(id), PAYMENT_PAID);
		ck_assert_int_eq(events(id, PAYMENT_UNKNOWN, "reconcile"), 1);
	}
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* A payment seen in a PENDING callback is polled at once (grace 0), not at the next look at
 * the schedule (every 5 s when idle): three in a row, each within a second. */
START_TEST(announced_payment_wakes_the_reconciler)
{
	char id[64];
	long long t0;
	cJSON *s;

	start_pair(50, NULL);
	sim_config("{\"drop_callbacks\":true}");
	for (int i = 0; i < 3; i++) {
		snprintf(id, sizeof(id), "KOMPAY-WAKE-%d", i);
		sim_create(id, 0);
		hk_sleep_ms(1200); /* idle: the reconciler sleeps */
		t0 = hk_mono_ms();
		announce(id);
		ck_assert_msg(hk_wait_until(first_polled, id, 5000), "%s never polled", id);
		ck_assert_msg(hk_mono_ms() - t0 < 1000, "%s polled after %lld ms", id,
			      hk_mono_ms() - t0);
	}
	s = sim_stats();
	ck_assert_double_eq(num(s, "status_requests", 0), 3);
	cJSON_Delete(s);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* ---- PAID callbacks confirmed by a status call (komerce.confirm_paid) ---- */

#define SINK_SECRET "it-reconcile-sink-secret-0001"

/* What the sink received: one entry per delivery. */
static pthread_mutex_t got_mu = PTHREAD_MUTEX_INITIALIZER;
static struct delivery {
	long long event_id;
	char payment_id[64], status[16], source[16];
	long long at_ms;
} got[256];
static size_t n_got;

static int on_delivery(void *ctx, struct rx_request *q)
{
	cJSON *doc = cJSON_ParseWithLength(q->body, q->body_len);
	const cJSON *v;

	(void)ctx;
	pthread_mutex_lock(&got_mu);
	if (doc != NULL && n_got < sizeof(got) / sizeof(got[0])) {
		struct delivery *g = &got[n_got++];

		memset(g, 0, sizeof(*g));
		g->event_id = rx_event_id(q);
		g->at_ms = hk_mono_ms();
		v = cJSON_GetObjectItemCaseSensitive(doc, "payment_id");
		snprintf(g->payment_id, sizeof(g->payment_id), "%s",
			 cJSON_IsString(v) ? v->valuestring : "");
		v = cJSON_GetObjectItemCaseSensitive(doc, "status");
		snprintf(g->status, sizeof(g->status), "%s",
			 cJSON_IsString(v) ? v->valuestring : "");
		v = cJSON_GetObjectItemCaseSensitive(doc, "source");
		snprintf(g->source, sizeof(g->source), "%s",
			 cJSON_IsString(v) ? v->valuestring : "");
	}
	pthread_mutex_unlock(&got_mu);
	cJSON_Delete(doc);
	return 204;
}

/* Deliveries of (id, status); *ret_at the first one's time when given. */
static long delivered(const char *id, const char *status, long long *ret_at)
{
	long n = 0;

	pthread_mutex_lock(&got_mu);
	for (size_t i = 0; i < n_got; i++) {
		if (strcmp(got[i].payment_id, id) != 0 || strcmp(got[i].status, status) != 0)
			continue;
		if (n++ == 0 && ret_at != NULL)
			*ret_at = got[i].at_ms;
	}
	pthread_mutex_unlock(&got_mu);
	return n;
}

/* komerce-sim (callbacks dropped: the test posts them) and the daemon with confirm_paid as
 * given, a sink, grace_seconds 60 (no ordinary poll during a test unless asked). */
static void start_confirming(bool confirm, const char *sim_config_json)
{
	char more[512];

	pthread_mutex_lock(&got_mu);
	n_got = 0;
	pthread_mutex_unlock(&got_mu);
	sink = rx_start(0, on_delivery, NULL);
	ck_assert_ptr_nonnull(sink);
	snprintf(more, sizeof(more),
		 "[komerce]\nconfirm_paid = %s\n[sink.app]\ntype = http\n"
		 "url = http://127.0.0.1:%u/hook\nsecret = " SINK_SECRET "\n",
		 confirm ? "true" : "false", rx_port(sink));
	start_with("--quiet", 60, 20, more);
	sim_config(sim_config_json != NULL ? sim_config_json : "{\"drop_callbacks\":true}");
}

/* Posts the signed PAID callback Komerce would send for id; returns its event id. */
static long long post_paid(const char *id, bool want_duplicate)
{
	char body[512];
	struct hk_reply r;
	cJSON *j;
	long long eid;
	long st;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"PAID\","
		 "\"amount\":100000,\"paid_at\":\"2026-08-12T10:15:30.000Z\"}",
		 id, id);
	st = hk_post_callback(&d, body, HK_CALLBACK_KEY, &r);
	ck_assert_msg(st == 200, "PAID callback %s: %ld %s", id, st, r.body);
	j = cJSON_Parse(r.body);
	ck_assert_ptr_nonnull(j);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "duplicate")) == want_duplicate);
	eid = (long long)num(j, "event_id", 0);
	cJSON_Delete(j);
	return eid;
}

/* GET /v1/payments/{id} of the admin API, parsed (caller deletes). */
static cJSON *api_payment(const char *id)
{
	static const char *const auth[] = {"Authorization: Bearer " HK_ADMIN_TOKEN, NULL};
	struct hk_reply *r = malloc(sizeof(*r));
	char url[256];
	cJSON *j;

	ck_assert_ptr_nonnull(r);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/payments/%s", d.admin_port, id);
	ck_assert_int_eq(hk_request("GET", url, auth, NULL, 0, 5000, r), 200);
	j = cJSON_Parse(r->body);
	free(r);
	ck_assert_ptr_nonnull(j);
	return j;
}

static const char *str_of(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static struct store_payment payment_in_daemon(const char *id)
{
	struct store *s = open_ro();
	struct store_payment p;

	ck_assert_int_eq(store_payment_get(s, id, &p), 0);
	store_close(s);
	return p;
}

struct want_confirmation {
	const char *id;
	enum store_confirmation c;
};

static bool confirmation_is(void *arg)
{
	const struct want_confirmation *w = arg;
	struct store *s = open_ro();
	struct store_payment p;
	bool ok = store_payment_get(s, w->id, &p) == 0 && p.confirmation == w->c;

	store_close(s);
	return ok;
}

static void expect_confirmation(const char *id, enum store_confirmation c, long timeout_ms)
{
	struct want_confirmation w = {id, c};

	ck_assert_msg(hk_wait_until(confirmation_is, &w, timeout_ms),
		      "%s: confirmation is not %s after %ld ms (log %s)", id,
		      store_confirmation_name(c), timeout_ms, d.log);
}

struct marks {
	long held, confirmed, unconfirmed, conflicts;
	int64_t held_id, confirmed_id, confirmed_ref, unconfirmed_ref;
};

static int mark_cb(void *arg, const struct store_event *e)
{
	struct marks *m = arg;

	m->conflicts += e->conflict;
	if (e->mark == STORE_MARK_HELD) {
		m->held++;
		m->held_id = e->id;
		ck_assert_str_eq(e->source, "callback");
		ck_assert(!e->conflict);
	} else if (e->mark == STORE_MARK_CONFIRMED) {
		m->confirmed++;
		m->confirmed_id = e->id;
		m->confirmed_ref = e->held_event_id;
		ck_assert_str_eq(e->source, "reconcile");
		ck_assert_int_eq(e->status, PAYMENT_PAID);
	} else if (e->mark == STORE_MARK_UNCONFIRMED) {
		m->unconfirmed++;
		m->unconfirmed_ref = e->held_event_id;
		ck_assert(e->conflict);
	}
	return 0;
}

static struct marks marks_of(const char *id)
{
	struct store_event_filter f = {.payment_id = id, .status = PAYMENT_UNKNOWN};
	struct store *s = open_ro();
	struct marks m;

	memset(&m, 0, sizeof(m));
	ck_assert_int_eq(store_events_query(s, &f, mark_cb, &m), 0);
	store_close(s);
	return m;
}

static bool paid_delivered(void *arg)
{
	return delivered(arg, "PAID", NULL) >= 1;
}

static void assert_chain_intact(void)
{
	struct store *s = open_ro();
	int64_t checked = 0, bad = 0;
	char why[256] = "";

	ck_assert_msg(store_verify(s, &checked, &bad, why, sizeof(why)) == 0, "%s", why);
	store_close(s);
}

START_TEST(confirmed_paid_is_forwarded_within_2s)
{
	const char *id = "KOMPAY-CONF-OK";
	long long t0, at = 0, held;
	struct store_payment p;
	struct marks m;
	cJSON *j;

	start_confirming(true, NULL);
	sim_create(id, 0);
	sim_move(id, "pay");
	t0 = hk_mono_ms();
	held = post_paid(id, false);
	/* Stored and answered, but not believed yet. */
	ck_assert_msg(hk_wait_until(paid_delivered, (void *)id, 5000), "not forwarded (log %s)",
		      d.log);
	delivered(id, "PAID", &at);
	ck_assert_msg(at - t0 <= 2000, "forwarded %lld ms after the callback", at - t0);
	p = payment_in_daemon(id);
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_CONFIRMED);
	ck_assert_int_eq(p.held_event_id, held);
	m = marks_of(id);
	ck_assert_int_eq(m.held, 1);
	ck_assert_int_eq(m.held_id, held);
	ck_assert_int_eq(m.confirmed, 1);
	ck_assert_int_eq(m.confirmed_ref, held);
	ck_assert_int_eq(m.conflicts, 0);

	/* Komerce retries the callback: a duplicate of the PAID now known (one more receipt). */
	ck_assert_int_eq(post_paid(id, true), m.confirmed_id);
	hk_sleep_ms(1500);
	ck_assert_int_eq(delivered(id, "PAID", NULL), 1);
	pthread_mutex_lock(&got_mu);
	ck_assert_str_eq(got[0].source, "reconcile");
	pthread_mutex_unlock(&got_mu);
	j = api_payment(id);
	ck_assert_str_eq(str_of(cJSON_GetObjectItem(j, "payment"), "confirmation"), "confirmed");
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "polls")), 1);
	cJSON_Delete(j);
	ck_assert(hk_log_contains(&d, "PAID callback confirmed by Komerce"));
	assert_chain_intact();
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(unconfirmed_paid_is_flagged_then_paid_later)
{
	const char *id = "KOMPAY-CONF-NO";
	struct store_payment p;
	struct hk_reply r;
	long long held;
	struct marks m;
	char url[128];
	cJSON *j, *pay;

	start_confirming(true, NULL);
	sim_create(id, 0); /* PENDING at Komerce */
	held = post_paid(id, false);
	expect_confirmation(id, STORE_CONFIRM_UNCONFIRMED, 5000);
	p = payment_in_daemon(id);
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_ptr_nonnull(strstr(p.confirmation_detail, "PENDING"));
	m = marks_of(id);
	ck_assert_int_eq(m.held, 1);
	ck_assert_int_eq(m.unconfirmed, 1);
	ck_assert_int_eq(m.unconfirmed_ref, held);
	ck_assert_int_eq(m.confirmed, 0);
	ck_assert(hk_log_contains(&d, "PAID callback not confirmed by Komerce"));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", d.admin_port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "hookd_unconfirmed_total 1"));
	/* The API shows the state and why; a retried callback changes nothing. */
	j = api_payment(id);
	pay = cJSON_GetObjectItem(j, "payment");
	ck_assert_str_eq(str_of(pay, "status"), "PENDING");
	ck_assert_str_eq(str_of(pay, "confirmation"), "unconfirmed");
	ck_assert_str_eq(str_of(pay, "confirmation_detail"), "Komerce says PENDING");
	cJSON_Delete(j);
	ck_assert_int_eq(post_paid(id, true), held);
	hk_sleep_ms(1000);
	ck_assert_int_eq(delivered(id, "PAID", NULL), 0);

	/* The customer really pays: the reconciler, still watching, finds it. */
	sim_move(id, "pay");
	expect_status(id, PAYMENT_PAID, 30000);
	ck_assert_msg(hk_wait_until(paid_delivered, (void *)id, 5000), "not forwarded");
	hk_sleep_ms(1000);
	ck_assert_int_eq(delivered(id, "PAID", NULL), 1);
	p = payment_in_daemon(id);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_CONFIRMED);
	m = marks_of(id);
	ck_assert_int_eq(m.confirmed, 1);
	ck_assert_int_eq(m.unconfirmed, 1);
	assert_chain_intact();
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(confirmation_waits_out_komerce_down)
{
	const char *id = "KOMPAY-CONF-DOWN";
	struct store_payment p;
	const cJSON *poll;
	long failed = 0, ok = 0;
	cJSON *j;

	/* Komerce answers its next three requests with 503. */
	start_confirming(true, "{\"drop_callbacks\":true,\"fail_status\":503,\"fail_count\":3}");
	sim_create(id, 0);
	sim_move(id, "pay");
	post_paid(id, false);
	hk_sleep_ms(500);
	p = payment_in_daemon(id);
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_PENDING);
	ck_assert_int_eq(delivered(id, "PAID", NULL), 0);
	expect_status(id, PAYMENT_PAID, 40000);
	ck_assert_msg(hk_wait_until(paid_delivered, (void *)id, 5000), "not forwarded");
	j = api_payment(id);
	cJSON_ArrayForEach(poll, cJSON_GetObjectItem(j, "polls"))
	{
		failed += strcmp(str_of(poll, "outcome"), "failed") == 0;
		ok += strcmp(str_of(poll, "outcome"), "ok") == 0;
		ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(poll, "confirming")));
	}
	cJSON_Delete(j);
	ck_assert_int_eq(failed, 3);
	ck_assert_int_eq(ok, 1);
	ck_assert_int_eq(payment_in_daemon(id).confirmation, STORE_CONFIRM_CONFIRMED);
	ck_assert_int_eq(delivered(id, "PAID", NULL), 1);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(without_confirm_paid_a_callback_moves_at_once)
{
	const char *id = "KOMPAY-CONF-OFF";
	cJSON *s;

	start_confirming(false, NULL);
	sim_create(id, 0); /* PENDING at Komerce: nobody asks */
	post_paid(id, false);
	ck_assert_int_eq(status_in_daemon(id), PAYMENT_PAID);
	ck_assert_msg(hk_wait_until(paid_delivered, (void *)id, 5000), "not forwarded");
	hk_sleep_ms(1000);
	s = sim_stats();
	ck_assert_double_eq(num(s, "status_requests", -1), 0);
	cJSON_Delete(s);
	ck_assert_int_eq(marks_of(id).held, 0);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

static Suite *reconcile_suite(void)
{
	Suite *s = suite_create("it-reconcile");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, finds_paid_expired_canceled);
	tcase_add_test(tc, hundreds_within_limits_through_429_and_500);
	tcase_add_test(tc, restart_keeps_schedule);
	tcase_add_test(tc, budget_filled_against_slow_komerce);
	tcase_add_test(tc, announced_payment_wakes_the_reconciler);
	suite_add_tcase(s, tc);

	tc = tcase_create("confirm");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, confirmed_paid_is_forwarded_within_2s);
	tcase_add_test(tc, unconfirmed_paid_is_flagged_then_paid_later);
	tcase_add_test(tc, confirmation_waits_out_komerce_down);
	tcase_add_test(tc, without_confirm_paid_a_callback_moves_at_once);
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
