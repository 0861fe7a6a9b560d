/* Integration: the reconciler of the real komerce-hookd against komerce-sim with callbacks
 * dropped. Payments are created in the simulator and made known to the daemon by a signed
 * PENDING callback; the daemon must then find PAID / EXPIRED / CANCELED by polling, store one
 * source=reconcile event per fact, never poll a payment twice within 3 s (the simulator's own
 * measurement, across hundreds of payments, 429 bursts, 500s and a crash), and keep its
 * schedule across a restart. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "store.h"
#include "util.h"

static struct hk_daemon d;
static struct hk_sim sim;

/* ---- plumbing ---- */

static void start_pair(double rate, const char *more)
{
	char extra[1024];

	ck_assert_msg(hk_sim_start(&sim, "--quiet") == 0, "komerce-sim did not start");
	snprintf(extra, sizeof(extra),
		 "[komerce]\nbase_url = http://127.0.0.1:%u/user\ntimeout_ms = 2000\n"
		 "[reconcile]\ngrace_seconds = 0\nmax_requests_per_second = %g\n%s",
		 sim.port, rate, more != NULL ? more : "");
	hk_daemon_init(&d, extra);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
}

static void teardown(void)
{
	hk_daemon_cleanup(&d);
	hk_sim_stop(&sim);
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
	struct store_opts o = {.path = d.db, .mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[256];

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

	start_pair(rate, NULL);
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

	start_pair(40, NULL);
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

static Suite *reconcile_suite(void)
{
	Suite *s = suite_create("it-reconcile");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, finds_paid_expired_canceled);
	tcase_add_test(tc, hundreds_within_limits_through_429_and_500);
	tcase_add_test(tc, restart_keeps_schedule);
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
