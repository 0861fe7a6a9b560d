/* Check suite for src/store_console.c on a real SQLite file (or, with HK_BACKEND=postgresql, a
 * database of its own in the suite's throw-away PostgreSQL cluster) written through the store's
 * own writer: payment search by payment id, order id and VA number (top level, in "data", as a
 * number; raw bodies that are not JSON), the stale and conflict listings, the newest-first
 * cursor, a payment's receipts and deliveries (a replayed dead letter among them), and the
 * newest event id; all through the store interface (store_console.h). */
#include "store_console.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "callback.h"
#include "pgtest.h"
#include "util.h"

static char tmpdir[PATH_MAX];
static char dbpath[PATH_MAX]; /* SQLite: the file; PostgreSQL: the database's URL */
static struct store *st;

static void target(struct store_opts *o)
{
	if (pgtest_enabled()) {
		o->backend = STORE_BACKEND_POSTGRESQL;
		o->url = dbpath;
		o->path = NULL;
	}
}
static const struct store_sink sinks[] = {{"shop", false}, {"ledger", false}};

static void setup(void)
{
	struct store_opts o = {.path = dbpath,
			       .mode = STORE_MODE_WRITER,
			       .synchronous_full = false,
			       .busy_timeout_ms = 5000,
			       .grace_seconds = 60,
			       .reconcile = true,
			       .sinks = sinks,
			       .n_sinks = 2};
	char err[256] = "";

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_store_console.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	if (pgtest_enabled())
		ck_assert_int_eq(pgtest_createdb(dbpath, sizeof(dbpath)), 0);
	else
		snprintf(dbpath, sizeof(dbpath), "%s/events.db", tmpdir);
	target(&o);
	ck_assert_msg(store_open(&o, &st, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(store_writer_start(st), 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	store_close(st);
	st = NULL;
	if (pgtest_enabled())
		pgtest_dropdb(dbpath);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct store *open_ro(void)
{
	struct store_opts o = {.path = dbpath, .mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[256] = "";

	target(&o);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

/* Stores raw as an event of source src (fields from the parsed body when it parses, else
 * payment_id/status given) at received_at (0 = now), from addr. Returns the event id. */
static int64_t put_raw(const char *raw, const char *pid, enum payment_status status,
		       enum event_source src, int64_t received_at, const char *addr)
{
	struct store_req r;
	struct event ev;
	char why[128];

	if (callback_parse(raw, strlen(raw), &ev, why, sizeof(why)) < 0) {
		memset(&ev, 0, sizeof(ev));
		snprintf(ev.payment_id, sizeof(ev.payment_id), "%s", pid);
		ev.status = status;
		ev.amount = -1;
		ev.raw = raw;
		ev.raw_len = strlen(raw);
	}
	ev.source = src;
	snprintf(ev.remote_addr, sizeof(ev.remote_addr), "%s", addr);
	store_req_event(&r, &ev);
	r.received_at = received_at;
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	return r.event_id;
}

static int64_t put(const char *raw, int64_t received_at)
{
	return put_raw(raw, NULL, PAYMENT_UNKNOWN, EVENT_SOURCE_CALLBACK, received_at,
		       "198.51.100.4");
}

/* ---- search ---------------------------------------------------------------------------- */

struct found {
	int n;
	char ids[32][EVENT_ID_MAX];
	enum store_console_match match[32];
	long conflicts[32];
};

static int collect(void *arg, const struct store_console_payment *p)
{
	struct found *f = arg;

	ck_assert_int_lt(f->n, 32);
	snprintf(f->ids[f->n], sizeof(f->ids[0]), "%s", p->p.payment_id);
	f->match[f->n] = p->match;
	f->conflicts[f->n] = p->conflicts;
	f->n++;
	return 0;
}

static struct found list(const struct store_console_payment_filter *flt)
{
	struct store *ro = open_ro();
	struct found f;

	memset(&f, 0, sizeof(f));
	ck_assert_int_eq(store_console_payments(ro, flt, collect, &f), 0);
	store_close(ro);
	return f;
}

static struct found search(const char *q)
{
	struct store_console_payment_filter flt = {.q = q, .status = PAYMENT_UNKNOWN};

	return list(&flt);
}

/* Payments of several shapes: a create reply with va_number (api), a callback with it in
 * "data", one with a numeric VA, one whose raw body is not JSON, and one sharing an order. */
static void fill(void)
{
	int64_t t = util_now_ms() - 100000;

	put_raw("{\"payment_id\":\"KOMPAY-1\",\"order_id\":\"ORD-1\",\"status\":\"PENDING\","
		"\"amount\":100000,\"va_number\":\"8808000111\"}",
		NULL, 0, EVENT_SOURCE_API, t, "127.0.0.1");
	put("{\"payment_id\":\"KOMPAY-1\",\"order_id\":\"ORD-1\",\"status\":\"PAID\","
	    "\"amount\":100000,\"va_number\":\"8808000111\"}",
	    t + 1000);
	put("{\"data\":{\"payment_id\":\"KPAY-5292/KM/2026\",\"order_id\":\"ORD-2\","
	    "\"status\":\"PENDING\",\"amount\":5000,\"va_number\":\"990011\"}}",
	    t + 2000);
	put("{\"payment_id\":\"KOMPAY-3\",\"order_id\":\"ORD-3\",\"status\":\"PENDING\","
	    "\"amount\":7000,\"va_number\":12345678901}",
	    t + 3000);
	put_raw("not json 8808000111 ORD-1", "KOMPAY-4", PAYMENT_PENDING, EVENT_SOURCE_CALLBACK,
		t + 4000, "");
	put("{\"payment_id\":\"KOMPAY-5\",\"order_id\":\"ORD-1\",\"status\":\"PENDING\","
	    "\"amount\":1}",
	    t + 5000);
}

START_TEST(search_by_payment_id_order_id_and_va)
{
	struct found f;

	fill();
	f = search("KOMPAY-1");
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KOMPAY-1");
	ck_assert_int_eq(f.match[0], STORE_CONSOLE_MATCH_PAYMENT_ID);

	f = search("KPAY-5292/KM/2026");
	ck_assert_int_eq(f.n, 1);
	ck_assert_int_eq(f.match[0], STORE_CONSOLE_MATCH_PAYMENT_ID);

	/* an order id shared by two payments: both, newest first */
	f = search("ORD-1");
	ck_assert_int_eq(f.n, 2);
	ck_assert_str_eq(f.ids[0], "KOMPAY-5");
	ck_assert_str_eq(f.ids[1], "KOMPAY-1");
	ck_assert_int_eq(f.match[0], STORE_CONSOLE_MATCH_ORDER_ID);
	ck_assert_int_eq(f.match[1], STORE_CONSOLE_MATCH_ORDER_ID);

	/* VA at the top level (create reply and callback: one payment), in "data", numeric */
	f = search("8808000111");
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KOMPAY-1");
	ck_assert_int_eq(f.match[0], STORE_CONSOLE_MATCH_VA_NUMBER);
	f = search("990011");
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KPAY-5292/KM/2026");
	f = search("12345678901");
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KOMPAY-3");

	/* exact, not substring: a part of a VA, of an id or of a non-JSON body finds nothing */
	ck_assert_int_eq(search("8808").n, 0);
	ck_assert_int_eq(search("KOMPAY").n, 0);
	ck_assert_int_eq(search("not json").n, 0);
	ck_assert_int_eq(search("amount").n, 0);
}
END_TEST

START_TEST(lists_stale_and_conflicts)
{
	struct store_console_payment_filter flt = {.status = PAYMENT_UNKNOWN};
	struct store_req r;
	struct event ev;
	struct found f;
	int64_t now = util_now_ms();

	fill();
	/* tracked, PENDING and an hour past its expiry; another one not yet expired */
	memset(&ev, 0, sizeof(ev));
	snprintf(ev.payment_id, sizeof(ev.payment_id), "TRACK-OLD");
	snprintf(ev.order_id, sizeof(ev.order_id), "ORD-T1");
	ev.amount = 100;
	ev.expires_at = now / 1000 - 3600;
	store_req_track(&r, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	snprintf(ev.payment_id, sizeof(ev.payment_id), "TRACK-NEW");
	ev.expires_at = now / 1000 + 3600;
	store_req_track(&r, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	/* EXPIRED after PAID: a conflict */
	put("{\"payment_id\":\"KOMPAY-1\",\"status\":\"EXPIRED\",\"amount\":100000}", 0);

	flt.stale = true;
	flt.now_ms = now;
	f = list(&flt);
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "TRACK-OLD");
	ck_assert_int_eq(f.match[0], STORE_CONSOLE_MATCH_NONE);

	flt = (struct store_console_payment_filter){.status = PAYMENT_UNKNOWN, .conflict = true};
	f = list(&flt);
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KOMPAY-1");
	ck_assert_int_eq(f.conflicts[0], 1);

	flt = (struct store_console_payment_filter){.status = PAYMENT_PAID};
	f = list(&flt);
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KOMPAY-1");

	/* search and status combine */
	flt = (struct store_console_payment_filter){.q = "ORD-1", .status = PAYMENT_PENDING};
	f = list(&flt);
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.ids[0], "KOMPAY-5");
}
END_TEST

START_TEST(cursor_pages_newest_first)
{
	struct store_console_payment_filter flt = {.status = PAYMENT_UNKNOWN, .limit = 2};
	char seen[16][EVENT_ID_MAX], after[EVENT_ID_MAX];
	int n = 0;
	int64_t t = 1700000000000;

	/* equal created_at for some rows: the payment id breaks the tie */
	for (int i = 0; i < 7; i++) {
		char raw[160];

		snprintf(raw, sizeof(raw), "{\"payment_id\":\"P-%d\",\"status\":\"PENDING\"}", i);
		put(raw, t + (i / 2) * 1000);
	}
	for (int page = 0; page < 10; page++) {
		struct store *ro = open_ro();
		struct found f;
		struct store_payment last;

		memset(&f, 0, sizeof(f));
		ck_assert_int_eq(store_console_payments(ro, &flt, collect, &f), 0);
		for (int i = 0; i < f.n; i++)
			snprintf(seen[n++], sizeof(seen[0]), "%s", f.ids[i]);
		if (f.n < 2) {
			store_close(ro);
			break;
		}
		ck_assert_int_eq(store_payment_get(ro, f.ids[f.n - 1], &last), 0);
		store_close(ro);
		flt.after_created_at = last.created_at;
		snprintf(after, sizeof(after), "%s", last.payment_id);
		flt.after_payment_id = after;
	}
	ck_assert_int_eq(n, 7);
	ck_assert_str_eq(seen[0], "P-6");
	ck_assert_str_eq(seen[1], "P-5");
	ck_assert_str_eq(seen[2], "P-4");
	ck_assert_str_eq(seen[3], "P-3");
	ck_assert_str_eq(seen[4], "P-2");
	ck_assert_str_eq(seen[5], "P-1");
	ck_assert_str_eq(seen[6], "P-0");
}
END_TEST

/* ---- one payment ----------------------------------------------------------------------- */

struct receipts {
	int n;
	struct store_console_receipt r[16];
};

static int collect_receipt(void *arg, const struct store_console_receipt *r)
{
	struct receipts *c = arg;

	ck_assert_int_lt(c->n, 16);
	c->r[c->n++] = *r;
	return 0;
}

struct rows {
	int n;
	struct store_outbox_row r[16];
};

static int collect_delivery(void *arg, const struct store_outbox_row *r)
{
	struct rows *c = arg;

	ck_assert_int_lt(c->n, 16);
	c->r[c->n++] = *r;
	return 0;
}

static void submit(struct store_req *rq)
{
	ck_assert_int_eq(store_submit_wait(st, rq), 0);
}

static const char paid9[] = "{\"payment_id\":\"KOMPAY-9\",\"order_id\":\"ORD-9\","
			    "\"status\":\"PAID\",\"amount\":10}";

/* KOMPAY-9: PENDING, then PAID delivered twice (from two addresses); another payment. Returns
 * the PAID event's id, the PENDING one's in *ret_pending. */
static int64_t fill9(int64_t *ret_pending)
{
	int64_t e2;

	*ret_pending = put("{\"payment_id\":\"KOMPAY-9\",\"order_id\":\"ORD-9\","
			   "\"status\":\"PENDING\",\"amount\":10}",
			   0);
	e2 = put(paid9, 0);
	ck_assert_int_eq(put_raw(paid9, NULL, 0, EVENT_SOURCE_CALLBACK, 0, "203.0.113.9"), e2);
	put("{\"payment_id\":\"OTHER\",\"status\":\"PENDING\"}", 0);
	return e2;
}

START_TEST(receipts_of_a_payment)
{
	struct receipts rc = {0};
	struct store *ro;
	int64_t e1, e2 = fill9(&e1);

	ro = open_ro();
	ck_assert_int_eq(store_console_receipts(ro, "KOMPAY-9", 0, collect_receipt, &rc), 0);
	ck_assert_int_eq(rc.n, 3); /* one per delivery, the retried PAID twice */
	ck_assert_int_eq(rc.r[0].event_id, e1);
	ck_assert_int_eq(rc.r[1].event_id, e2);
	ck_assert_int_eq(rc.r[2].event_id, e2);
	ck_assert_str_eq(rc.r[1].remote_addr, "198.51.100.4");
	ck_assert_str_eq(rc.r[2].remote_addr, "203.0.113.9");
	ck_assert_str_eq(rc.r[2].source, "callback");
	ck_assert_int_gt(rc.r[2].received_at, 0);
	memset(&rc, 0, sizeof(rc));
	ck_assert_int_eq(store_console_receipts(ro, "KOMPAY-9", 2, collect_receipt, &rc), 0);
	ck_assert_int_eq(rc.n, 2);
	ck_assert_int_eq(store_console_receipts(ro, "KOMPAY-", 0, collect_receipt, &rc), 0);
	ck_assert_int_eq(rc.n, 2); /* a prefix of an id is not the payment */
	store_close(ro);
}
END_TEST

/* The PAID row of "ledger" of KOMPAY-9 dies; returns its outbox id. */
static int64_t kill_ledger_row(int64_t e2)
{
	struct rows d = {0};
	struct store_req rq;
	struct store *ro = open_ro();
	int64_t dead_id = 0;

	ck_assert_int_eq(store_console_deliveries(ro, "KOMPAY-9", collect_delivery, &d), 0);
	store_close(ro);
	ck_assert_int_eq(d.n, 4); /* 2 events x 2 sinks */
	for (int i = 0; i < d.n; i++) {
		ck_assert_int_eq(d.r[i].state, STORE_OUTBOX_PENDING);
		if (d.r[i].event_id == e2 && strcmp(d.r[i].sink, "ledger") == 0)
			dead_id = d.r[i].id;
	}
	ck_assert_int_ne(dead_id, 0);
	store_req_outcome(&rq, dead_id, STORE_OUTBOX_MARK_DEAD, util_now_ms(),
			  "HTTP 400: unknown order");
	submit(&rq);
	return dead_id;
}

START_TEST(deliveries_show_a_replayed_dead_letter)
{
	struct store_req rq;
	struct rows d = {0};
	struct store *ro;
	int64_t e1, e2 = fill9(&e1), dead_id = kill_ledger_row(e2), last = 0;

	store_req_replay(&rq, e2, "ledger", "admin api");
	submit(&rq);
	ck_assert_uint_eq(rq.changed, 1);
	ro = open_ro();
	ck_assert_int_eq(store_console_deliveries(ro, "KOMPAY-9", collect_delivery, &d), 0);
	ck_assert_int_eq(d.n, 5); /* 2 events x 2 sinks, and the replay */
	for (int i = 0; i < d.n; i++) {
		ck_assert_str_eq(d.r[i].payment_id, "KOMPAY-9");
		if (d.r[i].id == dead_id) {
			ck_assert_int_eq(d.r[i].state, STORE_OUTBOX_DEAD);
			ck_assert_str_eq(d.r[i].last_error, "HTTP 400: unknown order");
			ck_assert_int_eq(d.r[i].attempts, 1);
			ck_assert_int_gt(d.r[i].replayed_at, 0);
			ck_assert_str_eq(d.r[i].replayed_by, "admin api");
		} else {
			ck_assert_int_eq(d.r[i].replayed_at, 0);
		}
	}
	ck_assert_int_eq(d.r[4].event_id, e2);
	ck_assert_str_eq(d.r[4].sink, "ledger");
	ck_assert_int_eq(d.r[4].state, STORE_OUTBOX_PENDING);
	store_close(ro);

	store_req_outcome(&rq, d.r[4].id, STORE_OUTBOX_MARK_DELIVERED, util_now_ms(), NULL);
	submit(&rq);
	memset(&d, 0, sizeof(d));
	ro = open_ro();
	ck_assert_int_eq(store_console_deliveries(ro, "KOMPAY-9", collect_delivery, &d), 0);
	ck_assert_int_eq(d.r[4].state, STORE_OUTBOX_DELIVERED);
	ck_assert_int_gt(d.r[4].delivered_at, 0);
	ck_assert_int_eq(store_console_last_event_id(ro, &last), 0);
	ck_assert_int_eq(last, e2 + 1);
	store_close(ro);
}
END_TEST

START_TEST(empty_database)
{
	struct store *ro = open_ro();
	struct store_console_payment_filter flt = {.q = "x", .status = PAYMENT_UNKNOWN};
	struct found f = {0};
	int64_t last = -1;

	ck_assert_int_eq(store_console_last_event_id(ro, &last), 0);
	ck_assert_int_eq(last, 0);
	ck_assert_int_eq(store_console_payments(ro, &flt, collect, &f), 0);
	ck_assert_int_eq(f.n, 0);
	ck_assert_ptr_null(store_console_match_name(STORE_CONSOLE_MATCH_NONE));
	ck_assert_str_eq(store_console_match_name(STORE_CONSOLE_MATCH_VA_NUMBER), "va_number");
	store_close(ro);
}
END_TEST

static int stop_at_first(void *arg, const struct store_console_payment *p)
{
	(void)p;
	(*(int *)arg)++;
	return 42;
}

START_TEST(callback_stops_the_walk)
{
	struct store_console_payment_filter flt = {.status = PAYMENT_UNKNOWN};
	struct store *ro;
	int calls = 0;

	fill();
	ro = open_ro();
	ck_assert_int_eq(store_console_payments(ro, &flt, stop_at_first, &calls), 42);
	ck_assert_int_eq(calls, 1);
	store_close(ro);
}
END_TEST

static Suite *store_console_suite(void)
{
	Suite *s = suite_create("store_console");
	TCase *core = tcase_create("core"), *limits = tcase_create("limits");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_add_test(core, search_by_payment_id_order_id_and_va);
	tcase_add_test(core, lists_stale_and_conflicts);
	tcase_add_test(core, receipts_of_a_payment);
	tcase_add_test(core, deliveries_show_a_replayed_dead_letter);
	suite_add_tcase(s, core);
	tcase_add_checked_fixture(limits, setup, teardown);
	tcase_add_test(limits, cursor_pages_newest_first);
	tcase_add_test(limits, empty_database);
	tcase_add_test(limits, callback_stops_the_walk);
	suite_add_tcase(s, limits);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(store_console_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
