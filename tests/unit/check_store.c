/* Check suite for the store (src/store.c and a backend) on a real database: an SQLite file in a
 * temporary directory, or with HK_BACKEND=postgresql a database of its own in the suite's
 * throw-away PostgreSQL cluster (tests/pgtest.c); the same tests run against both. Idempotency
 * (one event per fact, one receipt per delivery), conflicts, payment rows, the outbox, group
 * commit, the append-only triggers and the hash chain (tampered with through the database's
 * own client library), read-only queries, and the refusals at open (newer schema, a second
 * writer on SQLite, a file or database that is not ours). PostgreSQL only: two writers on one
 * chain, migrating once when two start together, reconnection, and leadership. "confirm":
 * PAID callbacks held for a status call (the shared decisions of store_event.c, then the
 * backend: verdicts, markers, the polls log, the poll hook, confirmations polled first). */
#include "store.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "callback.h"
#include "store_backend.h" /* the pure decisions every backend shares */
#include "pgtest.h"
#include "util.h"

extern const size_t store_sqlite_migrations_count;
extern const size_t store_pg_migrations_count;
uint32_t store_pg_fnv(const char *prefix, const char *s); /* store_pg_util.c */

static bool pg_mode; /* HK_BACKEND=postgresql */
static char tmpdir[PATH_MAX];
static char dbpath[PATH_MAX]; /* SQLite: the file; PostgreSQL: the database's URL */
static struct store *st;
/* Only "stream" takes conflicts. */
static const struct store_sink sinks[] = {{"shop", false}, {"stream", true}};

static struct store_opts make_opts(bool readonly, bool reconcile)
{
	struct store_opts o = {
		.backend = pg_mode ? STORE_BACKEND_POSTGRESQL : STORE_BACKEND_SQLITE,
		.path = pg_mode ? NULL : dbpath,
		.url = pg_mode ? dbpath : NULL,
		.instance = "unit",
		.mode = readonly ? STORE_MODE_READER : STORE_MODE_WRITER,
		.synchronous_full = true,
		.busy_timeout_ms = 5000,
		.grace_seconds = 60,
		.reconcile = reconcile,
		.sinks = sinks,
		.n_sinks = 2,
	};
	return o;
}

static struct store *open_store(const struct store_opts *o)
{
	struct store *s = NULL;
	char err[256] = "";
	int r = store_open(o, &s, err, sizeof(err));

	ck_assert_msg(r == 0, "store_open(%s) = %d: %s", dbpath, r, err);
	ck_assert_ptr_nonnull(s);
	return s;
}

static struct store *open_ro(void)
{
	struct store_opts o = make_opts(true, true);

	return open_store(&o);
}

static void setup(void)
{
	struct store_opts o;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_store.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	if (pg_mode)
		ck_assert_int_eq(pgtest_createdb(dbpath, sizeof(dbpath)), 0);
	else
		snprintf(dbpath, sizeof(dbpath), "%s/events.db", tmpdir);
	o = make_opts(false, true);
	st = open_store(&o);
	ck_assert_int_eq(store_writer_start(st), 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	store_close(st);
	st = NULL;
	if (pg_mode)
		pgtest_dropdb(dbpath);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Closes the writer's handle so that the file can be handled directly. */
static void close_store(void)
{
	store_close(st);
	st = NULL;
}

static int64_t count(struct store *s, const char *table)
{
	int64_t n = -1;

	ck_assert_int_eq(store_count(s, table, &n), 0);
	return n;
}

/* A realistic callback body for the fact (payment_id, status, amount), parsed into ev; amount
 * < 0 leaves the field out. body must outlive the request. */
static void make_event(struct event *ev, char *body, size_t n, const char *pid, const char *status,
		       long long amount, enum event_source src)
{
	char why[128] = "";

	if (amount >= 0)
		snprintf(
			body, n,
			"{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"%s\","
			"\"amount\":%lld,\"payment_type\":\"bank_transfer\",\"bank_code\":\"BCA\"}",
			pid, pid, status, amount);
	else
		snprintf(body, n,
			 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"%s\"}", pid,
			 pid, status);
	ck_assert_msg(callback_parse(body, strlen(body), ev, why, sizeof(why)) == 0, "%s: %s", body,
		      why);
	ev->source = src;
	snprintf(ev->remote_addr, sizeof(ev->remote_addr), "203.0.113.7");
}

/* Stores one fact and waits for the commit; r receives the outcome. */
static int put_at(struct store_req *r, const char *pid, const char *status, long long amount,
		  enum event_source src, int64_t received_at)
{
	char body[512];
	struct event ev;

	make_event(&ev, body, sizeof(body), pid, status, amount, src);
	store_req_event(r, &ev);
	r->received_at = received_at;
	return store_submit_wait(st, r);
}

static int put(struct store_req *r, const char *pid, const char *status, long long amount)
{
	return put_at(r, pid, status, amount, EVENT_SOURCE_CALLBACK, 0);
}

static void put_ok(const char *pid, const char *status, long long amount)
{
	struct store_req r;

	ck_assert_msg(put(&r, pid, status, amount) == 0, "%s %s: %s", pid, status,
		      store_errmsg(st));
	ck_assert_int_eq(r.result, 0);
}

static struct store_payment get_payment(struct store *s, const char *pid)
{
	struct store_payment p;

	ck_assert_int_eq(store_payment_get(s, pid, &p), 0);
	return p;
}

/* Collects the ids (and copies of a few fields) of a query. */
struct collected {
	int n;
	int64_t ids[64];
	bool conflict[64];
	long receipts[64];
	int64_t received_at[64];
	char raw[64][256];
	bool hash_set[64];
	int stop_after; /* 0 = never */
};

static int collect(void *arg, const struct store_event *e)
{
	struct collected *c = arg;
	static const uint8_t zero[STORE_HASH_LEN];

	ck_assert_int_lt(c->n, 64);
	c->ids[c->n] = e->id;
	c->conflict[c->n] = e->conflict;
	c->receipts[c->n] = e->receipts;
	c->received_at[c->n] = e->received_at;
	snprintf(c->raw[c->n], sizeof(c->raw[0]), "%s", e->raw_json ? e->raw_json : "(null)");
	c->hash_set[c->n] = memcmp(e->hash, zero, STORE_HASH_LEN) != 0;
	c->n++;
	if (c->stop_after > 0 && c->n == c->stop_after)
		return 7;
	return 0;
}

static struct collected query(struct store *s, const struct store_event_filter *f)
{
	struct collected c;

	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(store_events_query(s, f, collect, &c), 0);
	return c;
}

static struct store_event_filter any(void)
{
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN};

	return f;
}

static void assert_ids(const struct collected *c, int n, const int64_t *want)
{
	ck_assert_int_eq(c->n, n);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(c->ids[i], want[i]);
}

/* Runs SQL on the database through its client library directly (sqlite3, libpq): 0 (SQLITE_OK)
 * or non-zero, with the message in errbuf. */
static int raw_exec(const char *sql, char *errbuf, size_t n)
{
	sqlite3 *db = NULL;
	char *msg = NULL, out[512];
	int rc;

	if (pg_mode) {
		rc = pgtest_exec(dbpath, sql, out, sizeof(out)) == 0 ? 0 : 1;
		if (errbuf != NULL)
			snprintf(errbuf, n, "%s", rc == 0 ? "" : out);
		return rc;
	}
	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (errbuf != NULL)
		snprintf(errbuf, n, "%s", msg != NULL ? msg : "");
	sqlite3_free(msg);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	return rc;
}

static int raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	char out[512];
	int v;

	if (pg_mode) {
		ck_assert_msg(pgtest_exec(dbpath, sql, out, sizeof(out)) == 0, "%s: %s", sql, out);
		return atoi(out);
	}
	ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	v = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	return v;
}

/* Runs sql with the trigger named out of the way, as someone with write access to the
 * database can: SQLite drops it, PostgreSQL disables it. */
static int tamper(const char *trigger, const char *sql)
{
	char all[1024];

	snprintf(all, sizeof(all),
		 pg_mode ? "ALTER TABLE events DISABLE TRIGGER %s; %s"
			 : "DROP TRIGGER IF EXISTS %s; %s",
		 trigger, sql);
	return raw_exec(all, NULL, 0);
}

/* The first cell of sql as text into out. */
static void raw_text(const char *sql, char *out, size_t n)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;

	if (pg_mode) {
		ck_assert_msg(pgtest_exec(dbpath, sql, out, n) == 0, "%s: %s", sql, out);
		return;
	}
	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	snprintf(out, n, "%s", (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

/* store_verify on a fresh read-only handle. */
static int verify_ro(int64_t *ret_checked, int64_t *ret_bad, char *why, size_t n)
{
	struct store *ro = open_ro();
	int r;

	why[0] = '\0';
	*ret_bad = -1;
	r = store_verify(ro, ret_checked, ret_bad, why, n);
	store_close(ro);
	return r;
}

/* Four events over two payments: ids 1..4. */
static void put_four(void)
{
	put_ok("KOMPAY-1", "PENDING", 100000);
	put_ok("KOMPAY-2", "PENDING", 50000);
	put_ok("KOMPAY-1", "PAID", 100000);
	put_ok("KOMPAY-2", "EXPIRED", 50000);
}

/* ---- asynchronous submissions ---- */

static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t async_cond = PTHREAD_COND_INITIALIZER;
static int async_done_count;
static size_t hook_events;

static void async_done(struct store_req *r)
{
	(void)r;
	pthread_mutex_lock(&async_mu);
	async_done_count++;
	pthread_cond_broadcast(&async_cond);
	pthread_mutex_unlock(&async_mu);
}

static void async_wait(int n)
{
	pthread_mutex_lock(&async_mu);
	while (async_done_count < n)
		pthread_cond_wait(&async_cond, &async_mu);
	pthread_mutex_unlock(&async_mu);
}

static void commit_hook(void *arg, size_t new_events)
{
	(void)arg;
	__atomic_fetch_add(&hook_events, new_events, __ATOMIC_RELAXED);
}

/* ---- core ---- */

START_TEST(test_first_insert)
{
	struct store_req r;

	ck_assert_int_eq(put(&r, "KOMPAY-1699012345-A1B2C3", "PENDING", 100000), 0);
	ck_assert_int_eq(r.event_id, 1);
	ck_assert(!r.duplicate);
	ck_assert(!r.conflict);
	ck_assert_int_eq(count(st, "events"), 1);
	ck_assert_int_eq(count(st, "receipts"), 1);
	ck_assert_int_eq(count(st, "payments"), 1);
	ck_assert_int_eq(count(st, "outbox"), 2); /* one per sink */
}
END_TEST

START_TEST(test_duplicate)
{
	struct store_req r1, r2, r3;
	struct store_event_filter f = any();
	struct collected c;
	struct store_writer_stats stats;

	ck_assert_int_eq(put(&r1, "KOMPAY-1", "PAID", 100000), 0);
	ck_assert_int_eq(put(&r2, "KOMPAY-1", "PAID", 100000), 0);
	ck_assert(!r1.duplicate);
	ck_assert(r2.duplicate);
	ck_assert_int_eq(r2.event_id, r1.event_id);
	ck_assert(!r2.conflict);
	/* The reconciler learning the same fact is the same event too. */
	ck_assert_int_eq(put_at(&r3, "KOMPAY-1", "paid", 100000, EVENT_SOURCE_RECONCILE, 0), 0);
	ck_assert(r3.duplicate);
	ck_assert_int_eq(r3.event_id, r1.event_id);

	ck_assert_int_eq(count(st, "events"), 1);
	ck_assert_int_eq(count(st, "receipts"), 3); /* every delivery is audited */
	ck_assert_int_eq(count(st, "outbox"), 2);   /* forwarded once */
	c = query(st, &f);
	ck_assert_int_eq(c.n, 1);
	ck_assert_int_eq(c.receipts[0], 3);
	store_writer_stats_get(st, &stats);
	ck_assert_uint_eq(stats.events, 1);
	ck_assert_uint_eq(stats.duplicates, 2);
}
END_TEST

START_TEST(test_conflict_after_terminal)
{
	struct store_req r, again;
	struct store_event_filter f = any();
	struct store_payment p;
	struct collected c;
	struct store_writer_stats stats;

	put_ok("KOMPAY-1", "PENDING", 100000);
	put_ok("KOMPAY-1", "PAID", 100000);
	ck_assert_int_eq(put(&r, "KOMPAY-1", "EXPIRED", 100000), 0);
	ck_assert_int_eq(r.event_id, 3);
	ck_assert(!r.duplicate);
	ck_assert(r.conflict);
	p = get_payment(st, "KOMPAY-1");
	ck_assert_int_eq(p.status, PAYMENT_PAID); /* terminal never regresses */
	ck_assert_int_eq(count(st, "events"), 3);
	ck_assert_int_eq(count(st, "outbox"), 5); /* the conflict only to "stream" */

	/* The conflicting fact again: a duplicate that keeps its conflict flag. */
	ck_assert_int_eq(put(&again, "KOMPAY-1", "EXPIRED", 100000), 0);
	ck_assert(again.duplicate);
	ck_assert(again.conflict);
	ck_assert_int_eq(again.event_id, 3);

	c = query(st, &f);
	ck_assert_int_eq(c.n, 3);
	ck_assert(!c.conflict[0]);
	ck_assert(!c.conflict[1]);
	ck_assert(c.conflict[2]);
	store_writer_stats_get(st, &stats);
	ck_assert_uint_eq(stats.conflicts, 1);
}
END_TEST

START_TEST(test_regression_to_pending)
{
	struct store_req r;

	put_ok("KOMPAY-1", "PAID", 100000);
	ck_assert_int_eq(put(&r, "KOMPAY-1", "PENDING", 100000), 0);
	ck_assert(r.conflict);
	ck_assert_int_eq(get_payment(st, "KOMPAY-1").status, PAYMENT_PAID);
	ck_assert_int_eq(get_payment(st, "KOMPAY-1").next_poll_at, 0);
}
END_TEST

START_TEST(test_amount_mismatch)
{
	struct store_req r, again, right;
	struct store_payment p;
	struct store_event_filter f = any();
	struct collected c;

	put_ok("KOMPAY-1", "PENDING", 100000);
	ck_assert_int_eq(put(&r, "KOMPAY-1", "PAID", 1), 0);
	ck_assert(!r.duplicate);
	ck_assert(r.conflict);
	p = get_payment(st, "KOMPAY-1");
	ck_assert_int_eq(p.amount, 100000); /* the amount created stays */
	/* Issue 19.2: a conflicting fact never moves the payment, and stays watched. */
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_int_ne(p.next_poll_at, 0);
	/* The same conflicting fact again is its duplicate ... */
	ck_assert_int_eq(put(&again, "KOMPAY-1", "PAID", 1), 0);
	ck_assert(again.duplicate);
	ck_assert(again.conflict);
	ck_assert_int_eq(again.event_id, r.event_id);
	/* ... but the true PAID, arriving later, is a fact of its own that moves the payment. */
	ck_assert_int_eq(put(&right, "KOMPAY-1", "PAID", 100000), 0);
	ck_assert(!right.duplicate);
	ck_assert(!right.conflict);
	ck_assert_int_gt(right.event_id, r.event_id);
	p = get_payment(st, "KOMPAY-1");
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.next_poll_at, 0);
	f.payment_id = "KOMPAY-1";
	c = query(st, &f);
	ck_assert_int_eq(c.n, 3);
	/* Outbox: PENDING and the true PAID to both sinks, the conflict to "stream" only. */
	ck_assert_int_eq(count(st, "outbox"), 5);

	/* An absent amount contradicts nothing. */
	ck_assert_int_eq(put(&r, "KOMPAY-2", "PENDING", 100000), 0);
	ck_assert_int_eq(put(&r, "KOMPAY-2", "PAID", -1), 0);
	ck_assert(!r.conflict);
	ck_assert_int_eq(get_payment(st, "KOMPAY-2").status, PAYMENT_PAID);
	/* Nor does a first amount for a payment that had none. */
	ck_assert_int_eq(put(&r, "KOMPAY-3", "PENDING", -1), 0);
	ck_assert_int_eq(put(&r, "KOMPAY-3", "PAID", 75000), 0);
	ck_assert(!r.conflict);
	ck_assert_int_eq(get_payment(st, "KOMPAY-3").amount, 75000);
}
END_TEST

START_TEST(test_new_payment_from_callback)
{
	int64_t before = util_now_ms(), after;
	struct store_payment p;

	put_ok("KPAY-5292/KM/2026", "PENDING", 100000);
	after = util_now_ms();
	p = get_payment(st, "KPAY-5292/KM/2026");
	ck_assert_str_eq(p.payment_id, "KPAY-5292/KM/2026");
	ck_assert_str_eq(p.order_id, "ORD-KPAY-5292/KM/2026");
	ck_assert_str_eq(p.origin, "callback");
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_int_eq(p.amount, 100000);
	ck_assert_str_eq(p.payment_type, "bank_transfer");
	ck_assert_str_eq(p.channel_code, "BCA");
	ck_assert_int_ge(p.created_at, before);
	ck_assert_int_le(p.created_at, after);
	ck_assert_int_ge(p.callback_seen_at, before);
	ck_assert_int_le(p.callback_seen_at, after);
	/* watched: first poll after the grace period */
	ck_assert_int_ge(p.next_poll_at, before + 60 * 1000);
	ck_assert_int_le(p.next_poll_at, after + 60 * 1000);
	ck_assert_int_eq(p.poll_attempts, 0);
	ck_assert_int_eq(p.last_polled_at, 0);

	/* terminal: no longer watched */
	put_ok("KPAY-5292/KM/2026", "PAID", 100000);
	p = get_payment(st, "KPAY-5292/KM/2026");
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.next_poll_at, 0);
	ck_assert_int_ge(p.updated_at, p.created_at);
}
END_TEST

START_TEST(test_new_terminal_payment_not_watched)
{
	struct store_payment p;

	put_ok("KOMPAY-1", "PAID", 100000);
	p = get_payment(st, "KOMPAY-1");
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.next_poll_at, 0);
	ck_assert_str_eq(p.origin, "callback");
}
END_TEST

START_TEST(test_no_reconcile)
{
	struct store_opts o = make_opts(false, false);

	close_store();
	st = open_store(&o);
	ck_assert_int_eq(store_writer_start(st), 0);
	put_ok("KOMPAY-1", "PENDING", 100000);
	ck_assert_int_eq(get_payment(st, "KOMPAY-1").next_poll_at, 0);
}
END_TEST

START_TEST(test_other_sources)
{
	struct store_req r;
	struct store_payment p;
	struct store_event_filter f = any();
	struct collected c;

	ck_assert_int_eq(put_at(&r, "KOMPAY-R", "PENDING", 1000, EVENT_SOURCE_RECONCILE, 0), 0);
	p = get_payment(st, "KOMPAY-R");
	ck_assert_str_eq(p.origin, "reconcile");
	ck_assert_int_eq(p.callback_seen_at, 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-A", "PENDING", 1000, EVENT_SOURCE_API, 0), 0);
	ck_assert_str_eq(get_payment(st, "KOMPAY-A").origin, "api");

	f.source = "reconcile";
	c = query(st, &f);
	assert_ids(&c, 1, (int64_t[]){1});
	f.source = "api";
	c = query(st, &f);
	assert_ids(&c, 1, (int64_t[]){2});
	f.source = "callback";
	c = query(st, &f);
	ck_assert_int_eq(c.n, 0);
}
END_TEST

START_TEST(test_received_at)
{
	struct store_req r;
	struct store_event_filter f = any();
	struct collected c;

	ck_assert_int_eq(put_at(&r, "KOMPAY-1", "PENDING", 1, EVENT_SOURCE_CALLBACK, 1000), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-1", "PAID", 1, EVENT_SOURCE_CALLBACK, 2000), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-2", "PAID", 1, EVENT_SOURCE_CALLBACK, 3000), 0);
	ck_assert_int_eq(get_payment(st, "KOMPAY-1").created_at, 1000);
	ck_assert_int_eq(get_payment(st, "KOMPAY-1").updated_at, 2000);

	c = query(st, &f);
	ck_assert_int_eq(c.n, 3);
	ck_assert_int_eq(c.received_at[0], 1000);
	ck_assert_int_eq(c.received_at[2], 3000);
	f.since_ms = 2000;
	c = query(st, &f);
	assert_ids(&c, 2, (int64_t[]){2, 3});
	f.since_ms = 0;
	f.until_ms = 3000; /* exclusive */
	c = query(st, &f);
	assert_ids(&c, 2, (int64_t[]){1, 2});
	f.since_ms = 1500;
	c = query(st, &f);
	assert_ids(&c, 1, (int64_t[]){2});
}
END_TEST

START_TEST(test_user_version)
{
	ck_assert_int_eq(raw_int(dbpath, "PRAGMA user_version"), 5);
	ck_assert_int_eq((int)store_sqlite_migrations_count, 5);
	ck_assert_int_eq(
		raw_int(dbpath,
			"SELECT count(*) FROM sqlite_master WHERE type = 'table' "
			"AND name IN ('events', 'payments', 'receipts', 'outbox', 'polls')"),
		5);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM pragma_table_info('receipts') "
					 "WHERE name = 'instance'"),
			 1);
	/* Reopening does not migrate again. */
	close_store();
	{
		struct store_opts o = make_opts(false, true);

		st = open_store(&o);
	}
	ck_assert_int_eq(raw_int(dbpath, "PRAGMA user_version"), 5);
}
END_TEST

START_TEST(test_pg_schema_version)
{
	ck_assert_int_eq(raw_int(dbpath, "SELECT version FROM schema_version"),
			 (int)store_pg_migrations_count);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM schema_version"), 1);
	ck_assert_int_eq(
		raw_int(dbpath,
			"SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
			"AND tablename IN ('events', 'payments', 'receipts', 'outbox')"),
		4);
	close_store();
	{
		struct store_opts o = make_opts(false, true);

		st = open_store(&o);
	}
	ck_assert_int_eq(raw_int(dbpath, "SELECT version FROM schema_version"),
			 (int)store_pg_migrations_count);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM schema_version"), 1);
}
END_TEST

START_TEST(test_receipt_instance)
{
	struct store_req r;
	char name[64];

	put_ok("KOMPAY-1", "PAID", 1);
	ck_assert_int_eq(put(&r, "KOMPAY-1", "PAID", 1), 0);
	ck_assert(r.duplicate);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM receipts WHERE instance = 'unit'"),
			 2);
	raw_text("SELECT instance FROM receipts ORDER BY id LIMIT 1", name, sizeof(name));
	ck_assert_str_eq(name, "unit");
}
END_TEST

/* A mark with min_gap_ms applies only when the stored last poll is old enough: whichever
 * instance marks second within the gap is refused by the store itself. */
START_TEST(test_mark_min_gap)
{
	struct store_reconcile_update u;
	struct store_req r;
	int64_t t0 = util_now_ms();

	put_ok("KOMPAY-G", "PENDING", 1);
	memset(&u, 0, sizeof(u));
	snprintf(u.payment_id, sizeof(u.payment_id), "KOMPAY-G");
	u.only_if_watched = true;
	u.last_polled_at = t0;
	u.min_gap_ms = 3100;
	u.set_next = true;
	u.next_poll_at = t0 + 10000;
	u.poll_attempts = -1;
	store_req_reconcile(&r, &u, 1);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	ck_assert(u.matched);
	/* another mark 3 s later: too close */
	u.last_polled_at = t0 + 3000;
	store_req_reconcile(&r, &u, 1);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	ck_assert(!u.matched);
	ck_assert_int_eq(get_payment(st, "KOMPAY-G").last_polled_at, t0);
	/* 3.1 s later: allowed */
	u.last_polled_at = t0 + 3100;
	store_req_reconcile(&r, &u, 1);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	ck_assert(u.matched);
	ck_assert_int_eq(get_payment(st, "KOMPAY-G").last_polled_at, t0 + 3100);
	/* a result (no gap asked) always applies; last_polled_at never moves back */
	u.min_gap_ms = 0;
	u.only_if_watched = false;
	u.last_polled_at = t0 + 3200;
	store_req_reconcile(&r, &u, 1);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
	ck_assert(u.matched);
	ck_assert_int_eq(get_payment(st, "KOMPAY-G").last_polled_at, t0 + 3200);
}
END_TEST

START_TEST(test_wal_mode)
{
	sqlite3 *db;
	sqlite3_stmt *q;

	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "wal");
	sqlite3_finalize(q);
	sqlite3_close(db);
}
END_TEST

/* Retention: one prune batch deletes at most `limit` old receipts and delivered outbox rows,
 * oldest first; pending rows, recent rows and every event stay, and the chain is intact. */
START_TEST(test_prune)
{
	int64_t now = util_now_ms(), old = now - 10LL * 24 * 3600 * 1000;
	struct store_outbox_row *rows = NULL;
	struct store_req r;
	uint8_t head_hash[STORE_HASH_LEN];
	int64_t head = 0, checked = 0, bad = 0;
	size_t n = 0, receipts = 0, outbox = 0, batches = 0;
	char pid[32], why[128];

	for (int i = 0; i < 15; i++) {
		snprintf(pid, sizeof(pid), "KOMPAY-PRUNE-%02d", i);
		ck_assert_int_eq(
			put_at(&r, pid, "PAID", 100, EVENT_SOURCE_CALLBACK, i < 10 ? old + i : 0),
			0);
	}
	/* The shop sink delivered everything (the old ones long ago); the stream sink nothing. */
	ck_assert_int_eq(store_outbox_next(st, "shop", now + 60000, 100, &rows, &n), 0);
	ck_assert_uint_eq(n, 15);
	for (size_t i = 0; i < n; i++) {
		store_req_outcome(&r, rows[i].id, STORE_OUTBOX_MARK_DELIVERED,
				  rows[i].event_id <= 10 ? old + 1000 : now, NULL);
		ck_assert_int_eq(store_submit_wait(st, &r), 0);
	}
	store_outbox_rows_free(rows, n);
	do {
		store_req_prune(&r, now - 24 * 3600 * 1000, 3);
		ck_assert_int_eq(store_submit_wait(st, &r), 0);
		ck_assert_uint_le(r.u.prune.receipts, 3);
		ck_assert_uint_le(r.u.prune.outbox, 3);
		receipts += r.u.prune.receipts;
		outbox += r.u.prune.outbox;
		batches++;
	} while (r.u.prune.receipts == 3 || r.u.prune.outbox == 3);
	ck_assert_uint_eq(receipts, 10);
	ck_assert_uint_eq(outbox, 10);
	ck_assert_uint_eq(batches, 4);
	ck_assert_int_eq(count(st, "events"), 15);
	ck_assert_int_eq(count(st, "receipts"), 5);
	ck_assert_int_eq(count(st, "outbox"), 20); /* 15 pending for stream, 5 recent for shop */
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 15);
	ck_assert_int_eq(store_orphans(st, &bad, why, sizeof(why)), 0);
	/* The chain head (what a checkpoint publishes) is the newest event. */
	ck_assert_int_eq(store_chain_head(st, &head, head_hash), 0);
	ck_assert_int_eq(head, 15);
}
END_TEST

START_TEST(test_verify_intact)
{
	int64_t checked = -1, bad = -1;
	char why[256] = "";

	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 0); /* empty chain is intact */
	put_four();
	put_ok("KOMPAY-3", "PENDING", 10000);
	put_ok("KOMPAY-3", "CANCELLED", 10000);
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 6);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 6);
}
END_TEST

START_TEST(test_chain_survives_reopen)
{
	struct store_opts o = make_opts(false, true);
	struct store_req r;
	int64_t checked, bad;
	char why[256];

	put_four();
	close_store();
	st = open_store(&o);
	ck_assert_int_eq(store_writer_start(st), 0);
	ck_assert_int_eq(put(&r, "KOMPAY-9", "PENDING", 1), 0);
	ck_assert_int_eq(r.event_id, 5);
	/* dedupe survives the restart too */
	ck_assert_int_eq(put(&r, "KOMPAY-1", "PAID", 100000), 0);
	ck_assert(r.duplicate);
	ck_assert_int_eq(r.event_id, 3);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 5);
}
END_TEST

START_TEST(test_readonly_queries)
{
	struct store *ro;
	struct store_event_filter f = any();
	struct store_payment p;
	struct store_req r;
	struct collected c;
	char body[512];
	struct event ev;

	put_four();
	put_ok("KOMPAY-2", "PAID", 50000); /* conflict, id 5 */
	ro = open_ro();

	c = query(ro, &f);
	assert_ids(&c, 5, (int64_t[]){1, 2, 3, 4, 5});
	for (int i = 0; i < c.n; i++) {
		ck_assert(c.hash_set[i]);
		ck_assert_int_eq(c.receipts[i], 1);
	}
	make_event(&ev, body, sizeof(body), "KOMPAY-1", "PENDING", 100000, EVENT_SOURCE_CALLBACK);
	ck_assert_str_eq(c.raw[0], body); /* the raw body, byte for byte */
	ck_assert(c.conflict[4]);

	f.payment_id = "KOMPAY-1";
	c = query(ro, &f);
	assert_ids(&c, 2, (int64_t[]){1, 3});
	f = any();
	f.order_id = "ORD-KOMPAY-2";
	c = query(ro, &f);
	assert_ids(&c, 3, (int64_t[]){2, 4, 5});
	f = any();
	f.status = PAYMENT_PAID;
	c = query(ro, &f);
	assert_ids(&c, 2, (int64_t[]){3, 5});
	f.payment_id = "KOMPAY-2";
	c = query(ro, &f);
	assert_ids(&c, 1, (int64_t[]){5});
	/* cursor pagination */
	f = any();
	f.after_id = 2;
	f.limit = 2;
	c = query(ro, &f);
	assert_ids(&c, 2, (int64_t[]){3, 4});
	f.after_id = 4;
	c = query(ro, &f);
	assert_ids(&c, 1, (int64_t[]){5});
	f.after_id = 5;
	c = query(ro, &f);
	ck_assert_int_eq(c.n, 0);
	f = any();
	f.payment_id = "KOMPAY-404";
	c = query(ro, &f);
	ck_assert_int_eq(c.n, 0);

	p = get_payment(ro, "KOMPAY-1");
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.amount, 100000);
	p = get_payment(ro, "KOMPAY-2");
	ck_assert_int_eq(p.status, PAYMENT_EXPIRED);
	ck_assert_int_eq(store_payment_get(ro, "KOMPAY-404", &p), -ENOENT);
	ck_assert_int_eq(count(ro, "events"), 5);

	/* a read-only handle has no writer */
	ck_assert_int_eq(store_writer_start(ro), -EROFS);
	store_req_event(&r, &ev);
	ck_assert_int_eq(store_submit_wait(ro, &r), -ESHUTDOWN);
	store_close(ro);
}
END_TEST

START_TEST(test_query_stops_early)
{
	struct store_event_filter f = any();
	struct collected c;

	put_four();
	memset(&c, 0, sizeof(c));
	c.stop_after = 2;
	ck_assert_int_eq(store_events_query(st, &f, collect, &c), 7);
	ck_assert_int_eq(c.n, 2);
}
END_TEST

START_TEST(test_group_commit)
{
	enum { N = 300 };
	static struct store_req reqs[N];
	static char bodies[N][512];
	struct store_writer_stats stats;
	int64_t checked, bad;
	char why[256];
	bool seen[N + 1];

	store_set_commit_hook(st, commit_hook, NULL);
	for (int i = 0; i < N; i++) {
		char pid[32];
		struct event ev;

		snprintf(pid, sizeof(pid), "KOMPAY-%04d", i);
		make_event(&ev, bodies[i], sizeof(bodies[i]), pid, "PENDING", 1000 + i,
			   EVENT_SOURCE_CALLBACK);
		store_req_event(&reqs[i], &ev);
		reqs[i].done = async_done;
		ck_assert_int_eq(store_submit(st, &reqs[i]), 0);
	}
	async_wait(N);
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(reqs[i].result, 0);
		ck_assert(!reqs[i].duplicate);
		ck_assert_int_ge(reqs[i].event_id, 1);
		ck_assert_int_le(reqs[i].event_id, N);
		ck_assert(!seen[reqs[i].event_id]);
		seen[reqs[i].event_id] = true;
	}
	ck_assert_int_eq(count(st, "events"), N);
	ck_assert_int_eq(count(st, "outbox"), 2 * N);
	ck_assert_uint_eq(__atomic_load_n(&hook_events, __ATOMIC_RELAXED), N);
	store_writer_stats_get(st, &stats);
	ck_assert_uint_eq(stats.events, N);
	ck_assert_uint_eq(stats.batch_total, N);
	ck_assert_uint_le(stats.commits, N);
	ck_assert_uint_eq(stats.commit_failures, 0);
	ck_assert_int_eq(stats.queue_len, 0);
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, N);
}
END_TEST

/* One event in a burst fails on its own, half-written (a value the schema refuses): it alone is
 * refused, every other event of its batch commits, and the chain stays whole. SQLite first tries a
 * batch without savepoints, so this is the batch it must apply again, event by event. */
START_TEST(test_bad_event_in_a_batch)
{
	enum { N = 60, BAD = 31 };
	static struct store_req reqs[N];
	static char bodies[N][512];
	struct store_writer_stats stats;
	int64_t checked, bad;
	char why[256];

	for (int i = 0; i < N; i++) {
		char pid[32];
		struct event ev;

		snprintf(pid, sizeof(pid), "KOMPAY-R%04d", i);
		/* The bad one's event row is written, then its payment is refused (its status
		 * is not one the payments table takes): it must leave no row behind. */
		make_event(&ev, bodies[i], sizeof(bodies[i]), pid, "PENDING", 1000 + i,
			   EVENT_SOURCE_CALLBACK);
		if (i == BAD)
			ev.status = (enum payment_status)99;
		store_req_event(&reqs[i], &ev);
		reqs[i].done = async_done;
		ck_assert_int_eq(store_submit(st, &reqs[i]), 0);
	}
	async_wait(N);
	for (int i = 0; i < N; i++) {
		if (i == BAD) {
			ck_assert_int_lt(reqs[i].result, 0);
			ck_assert_int_ne(reqs[i].result, -EIO);
			ck_assert_int_eq(reqs[i].event_id, 0);
			continue;
		}
		ck_assert_int_eq(reqs[i].result, 0);
		ck_assert_int_ge(reqs[i].event_id, 1);
		ck_assert_int_le(reqs[i].event_id, N - 1);
	}
	ck_assert_int_eq(count(st, "events"), N - 1);
	ck_assert_int_eq(count(st, "payments"), N - 1);
	ck_assert_int_eq(count(st, "receipts"), N - 1);
	store_writer_stats_get(st, &stats);
	ck_assert_uint_eq(stats.events, N - 1);
	ck_assert_uint_eq(stats.commit_failures, 0);
	if (!pg_mode)
		ck_assert_uint_ge(stats.batch_retries, 1);
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, N - 1);
}
END_TEST

/* Facts that depend on each other in one batch (the same payment twice, a duplicate of a fact
 * stored a moment before, a conflict): each decided on what the ones before it wrote, as if
 * they had come one by one (PostgreSQL reads a batch ahead: this is what it must not get
 * wrong). */
START_TEST(test_dependent_facts_in_one_batch)
{
	enum { ROUNDS = 40, PER = 6 };
	static struct store_req reqs[ROUNDS][PER];
	static char bodies[ROUNDS][PER][512];
	static const struct {
		int pay; /* 1 or 2 */
		const char *status;
		long long amount;
		int want_id; /* within the round, 1-based */
		bool dup, conflict;
	} plan[PER] = {
		{1, "PENDING", 100, 1, false, false}, {1, "PAID", 100, 2, false, false},
		{1, "PAID", 100, 2, true, false},     {2, "PAID", 50, 3, false, false},
		{1, "EXPIRED", 100, 4, false, true},  {2, "PAID", 50, 3, true, false},
	};
	struct store_writer_stats stats;
	int64_t checked, bad;
	char why[256];

	for (int k = 0; k < ROUNDS; k++) {
		for (int i = 0; i < PER; i++) {
			char pid[48];
			struct event ev;

			snprintf(pid, sizeof(pid), "KOMPAY-B%d-%d", k, plan[i].pay);
			make_event(&ev, bodies[k][i], sizeof(bodies[k][i]), pid, plan[i].status,
				   plan[i].amount, EVENT_SOURCE_CALLBACK);
			store_req_event(&reqs[k][i], &ev);
			reqs[k][i].done = async_done;
			ck_assert_int_eq(store_submit(st, &reqs[k][i]), 0);
		}
	}
	async_wait(ROUNDS * PER);
	for (int k = 0; k < ROUNDS; k++) {
		int64_t base = 0;

		for (int i = 0; i < PER; i++) {
			struct store_req *r = &reqs[k][i];

			ck_assert_int_eq(r->result, 0);
			if (i == 0)
				base = r->event_id - 1;
			ck_assert_int_eq(r->event_id, base + plan[i].want_id);
			ck_assert(r->duplicate == plan[i].dup);
			ck_assert(r->conflict == plan[i].conflict);
		}
	}
	store_writer_stats_get(st, &stats);
	ck_assert_uint_lt(stats.commits, ROUNDS * PER); /* batches did form */
	ck_assert_int_eq(count(st, "events"), ROUNDS * 4);
	ck_assert_int_eq(count(st, "receipts"), ROUNDS * PER);
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, ROUNDS * 4);
	ck_assert_int_eq(get_payment(st, "KOMPAY-B7-1").status, PAYMENT_PAID);
}
END_TEST

START_TEST(test_event_hash)
{
	uint8_t prev[STORE_HASH_LEN], prev2[STORE_HASH_LEN], base[STORE_HASH_LEN],
		h[STORE_HASH_LEN];
	const char *raw = "{\"payment_id\":\"P\",\"status\":\"PAID\"}";
	size_t raw_len = strlen(raw);

	memset(prev, 0x11, sizeof(prev));
	memcpy(prev2, prev, sizeof(prev));
	prev2[31] ^= 1;
#define HASH(pv, id, pid, oid, status, amount, source, conflict, key, r, rl, at) \
	store_event_hash(pv, id, pid, oid, status, amount, source, conflict, key, r, rl, at, h)

	store_event_hash(prev, 7, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len,
			 1000, base);
	HASH(prev, 7, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert_mem_eq(h, base, STORE_HASH_LEN); /* deterministic */

	HASH(prev2, 7, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 8, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "Q", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "X", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "EXPIRED", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "PAID", 101, "callback", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "PAID", 100, "reconcile", false, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "PAID", 100, "callback", true, "P:PAID", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "PAID", 100, "callback", false, "P:PAIDX", raw, raw_len, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len - 1, 1000);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	HASH(prev, 7, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1001);
	ck_assert(memcmp(h, base, STORE_HASH_LEN) != 0);
	/* Field boundaries are part of the hash: moving a byte from one field to the next
	 * changes it. */
	HASH(prev, 7, "PO", "", "PAID", 100, "callback", false, "P:PAID", raw, raw_len, 1000);
	{
		uint8_t h2[STORE_HASH_LEN];

		memcpy(h2, h, sizeof(h2));
		HASH(prev, 7, "P", "O", "PAID", 100, "callback", false, "P:PAID", raw, raw_len,
		     1000);
		ck_assert(memcmp(h, h2, STORE_HASH_LEN) != 0);
	}
#undef HASH
}
END_TEST

START_TEST(test_close_null)
{
	store_close(NULL);
	store_writer_stop(NULL);
}
END_TEST

/* ---- limits ---- */

/* Batches of one after batches of many: PostgreSQL's read-ahead keeps a table of the payments
 * written in a transaction; a batch of one must not inherit a full table from an earlier one
 * (the writer then spun forever looking for a free slot, seen in it-cluster). */
START_TEST(test_single_batches_after_many)
{
	enum { BURST = 64, SINGLES = 200 };
	static struct store_req reqs[BURST];
	static char bodies[BURST][512];
	struct store_req r;
	char pid[48];

	async_done_count = 0;
	for (int i = 0; i < BURST; i++) {
		struct event ev;

		snprintf(pid, sizeof(pid), "KOMPAY-BURST-%d", i);
		make_event(&ev, bodies[i], sizeof(bodies[i]), pid, "PENDING", 500,
			   EVENT_SOURCE_CALLBACK);
		store_req_event(&reqs[i], &ev);
		reqs[i].done = async_done;
		ck_assert_int_eq(store_submit(st, &reqs[i]), 0);
	}
	async_wait(BURST);
	for (int i = 0; i < SINGLES; i++) {
		snprintf(pid, sizeof(pid), "KOMPAY-SINGLE-%d", i);
		ck_assert_int_eq(put_at(&r, pid, "PENDING", 500, EVENT_SOURCE_CALLBACK, 1000), 0);
	}
	ck_assert_int_eq(count(st, "events"), BURST + SINGLES);
}
END_TEST

START_TEST(test_long_payment_id)
{
	char pid[EVENT_ID_MAX];
	struct store_req r1, r2;
	struct event ev;
	char body[512];

	memset(pid, 'K', sizeof(pid));
	pid[EVENT_ID_MAX - 5] = '\0'; /* "ORD-" + pid must also fit order_id */
	make_event(&ev, body, sizeof(body), pid, "CANCELED", 5, EVENT_SOURCE_CALLBACK);
	store_req_event(&r1, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r1), 0);
	store_req_event(&r2, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r2), 0);
	ck_assert(r2.duplicate);
	ck_assert_str_eq(get_payment(st, pid).payment_id, pid);
}
END_TEST

START_TEST(test_no_sinks)
{
	struct store_opts o = make_opts(false, true);

	close_store();
	o.n_sinks = 0;
	o.sinks = NULL;
	st = open_store(&o);
	ck_assert_int_eq(store_writer_start(st), 0);
	put_ok("KOMPAY-1", "PAID", 1);
	ck_assert_int_eq(count(st, "events"), 1);
	ck_assert_int_eq(count(st, "outbox"), 0);
}
END_TEST

START_TEST(test_busy_database)
{
	struct store_opts o = make_opts(false, true);
	static struct store_req reqs[3];
	static char bodies[3][512];
	struct store_writer_stats stats;
	sqlite3 *db = NULL;
	PGconn *pc = NULL;
	char sql[128];
	int64_t checked, bad;
	char why[256];

	/* Short busy timeout, one request may wait. */
	close_store();
	o.busy_timeout_ms = 1000;
	o.queue_max = 1;
	st = open_store(&o);
	ck_assert_int_eq(store_writer_start(st), 0);

	/* Another connection holds the write lock (PostgreSQL: the chain lock) past the writer's
	 * busy timeout. */
	if (pg_mode) {
		PGresult *res;

		pc = PQconnectdb(dbpath);
		ck_assert_int_eq(PQstatus(pc), CONNECTION_OK);
		/* the chain lock's class: the hash of the schema, as store_pg_util.c makes it */
		res = PQexec(pc, "SELECT current_schema()");
		ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
		snprintf(
			sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%d, 1)",
			(int)(store_pg_fnv("komerce-hookd/", PQgetvalue(res, 0, 0)) & 0xfffffffeu));
		PQclear(res);
		res = PQexec(pc, sql);
		ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
		PQclear(res);
	} else {
		ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL),
				 SQLITE_OK);
		ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	}

	for (int i = 0; i < 3; i++) {
		char pid[32];
		struct event ev;

		snprintf(pid, sizeof(pid), "KOMPAY-B%d", i);
		make_event(&ev, bodies[i], sizeof(bodies[i]), pid, "PAID", 1,
			   EVENT_SOURCE_CALLBACK);
		store_req_event(&reqs[i], &ev);
		reqs[i].done = async_done;
	}
	ck_assert_int_eq(store_submit(st, &reqs[0]), 0);
	/* wait until the writer has taken it (and is blocked on the lock) */
	for (int i = 0; i < 1000; i++) {
		store_writer_stats_get(st, &stats);
		if (stats.queue_len == 0)
			break;
		usleep(1000);
	}
	ck_assert_int_eq(stats.queue_len, 0);
	ck_assert_int_eq(store_submit(st, &reqs[1]), 0);       /* queued: 1 of 1 */
	ck_assert_int_eq(store_submit(st, &reqs[2]), -EAGAIN); /* queue full */

	async_wait(1);
	ck_assert_int_eq(reqs[0].result, -EAGAIN); /* busy past the timeout: not durable */
	ck_assert_int_eq(reqs[0].event_id, 0);
	if (pg_mode) {
		PQfinish(pc); /* ends its transaction and lock */
	} else {
		ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
	}
	async_wait(2);
	ck_assert_int_eq(reqs[1].result, 0);
	ck_assert_int_eq(reqs[1].event_id, 1); /* the failed batch left no gap in the chain */
	ck_assert_int_eq(count(st, "events"), 1);
	ck_assert_int_eq(count(st, "receipts"), 1);
	store_writer_stats_get(st, &stats);
	ck_assert_uint_ge(stats.commit_failures, 1);
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_append_only)
{
	char msg[256];

	put_four();
	ck_assert_int_ne(
		raw_exec("UPDATE events SET status = 'PAID' WHERE id = 2", msg, sizeof(msg)),
		SQLITE_OK);
	ck_assert_ptr_nonnull(strstr(msg, "append-only"));
	ck_assert_int_ne(raw_exec("DELETE FROM events WHERE id = 4", msg, sizeof(msg)), SQLITE_OK);
	ck_assert_ptr_nonnull(strstr(msg, "append-only"));
	ck_assert_int_ne(raw_exec("DELETE FROM events", msg, sizeof(msg)), SQLITE_OK);
	ck_assert_int_eq(count(st, "events"), 4);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM events WHERE status = 'PAID'"), 1);
}
END_TEST

START_TEST(test_tamper_update)
{
	int64_t checked = -1, bad = -1;
	char why[256];

	put_four();
	close_store();
	ck_assert_int_eq(
		tamper("events_no_update", "UPDATE events SET status = 'EXPIRED' WHERE id = 2"),
		SQLITE_OK);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(bad, 2);
	ck_assert_int_eq(checked, 1);
	ck_assert(why[0] != '\0');
}
END_TEST

START_TEST(test_tamper_raw_last_row)
{
	int64_t checked = -1, bad = -1;
	char why[256];

	put_four();
	close_store();
	ck_assert_int_eq(tamper("events_no_update",
				"UPDATE events SET raw_json = replace(raw_json, '50000', '5000') "
				"WHERE id = 4"),
			 SQLITE_OK);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(bad, 4);
	ck_assert_int_eq(checked, 3);
}
END_TEST

START_TEST(test_tamper_rehashed_row)
{
	int64_t checked = -1, bad = -1;
	char why[256], sql[512], hex[2 * STORE_HASH_LEN + 1], raw[512], at[32], prev[128];
	uint8_t h1[STORE_HASH_LEN], h2[STORE_HASH_LEN];

	put_four();
	close_store();
	/* Someone who knows the scheme rewrites row 2 (PENDING -> PAID) and recomputes its own
	 * hash: the row checks out on its own, but the next row's prev_hash gives it away. */
	raw_text("SELECT raw_json FROM events WHERE id = 2", raw, sizeof(raw));
	raw_text("SELECT received_at FROM events WHERE id = 2", at, sizeof(at));
	raw_text(pg_mode ? "SELECT encode(hash, 'hex') FROM events WHERE id = 1"
			 : "SELECT hex(hash) FROM events WHERE id = 1",
		 prev, sizeof(prev));
	ck_assert_int_eq(util_unhex(prev, strlen(prev), h1, sizeof(h1)), 0);
	store_event_hash(h1, 2, "KOMPAY-2", "ORD-KOMPAY-2", "PAID", 50000, "callback", false,
			 "KOMPAY-2:PENDING", raw, strlen(raw), atoll(at), h2);
	util_hex(h2, sizeof(h2), hex);
	snprintf(sql, sizeof(sql),
		 pg_mode ? "UPDATE events SET status = 'PAID', hash = decode('%s', 'hex') "
			   "WHERE id = 2"
			 : "UPDATE events SET status = 'PAID', hash = x'%s' WHERE id = 2",
		 hex);
	ck_assert_int_eq(tamper("events_no_update", sql), SQLITE_OK);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(bad, 3);
	ck_assert_int_eq(checked, 2);
	ck_assert_ptr_nonnull(strstr(why, "prev_hash"));
}
END_TEST

START_TEST(test_tamper_delete)
{
	int64_t checked = -1, bad = -1;
	char why[256];

	put_four();
	put_ok("KOMPAY-3", "PENDING", 1);
	close_store();
	ck_assert_int_eq(tamper("events_no_delete", "DELETE FROM events WHERE id = 3"), SQLITE_OK);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(bad, 4);
	ck_assert_int_eq(checked, 2);
	ck_assert(why[0] != '\0');
}
END_TEST

START_TEST(test_tamper_delete_first)
{
	int64_t checked = -1, bad = -1;
	char why[256];

	put_four();
	close_store();
	ck_assert_int_eq(tamper("events_no_delete", "DELETE FROM events WHERE id = 1"), SQLITE_OK);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(bad, 2);
	ck_assert_int_eq(checked, 0);
}
END_TEST

START_TEST(test_tamper_swap_ids)
{
	int64_t checked = -1, bad = -1;
	char why[256];

	put_four();
	close_store();
	ck_assert_int_eq(tamper("events_no_update", "UPDATE events SET id = 1000 WHERE id = 2;"
						    "UPDATE events SET id = 2 WHERE id = 3;"
						    "UPDATE events SET id = 3 WHERE id = 1000"),
			 SQLITE_OK);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(bad, 2);
	ck_assert_int_eq(checked, 1);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
	struct store_opts o = make_opts(false, true);
	struct store *s = NULL;
	char err[256] = "", sql[96];
	int newer = (int)(pg_mode ? store_pg_migrations_count : store_sqlite_migrations_count) + 1;
	const char *version_sql =
		pg_mode ? "SELECT version FROM schema_version" : "PRAGMA user_version";

	put_ok("KOMPAY-1", "PAID", 1);
	close_store();
	snprintf(sql, sizeof(sql),
		 pg_mode ? "UPDATE schema_version SET version = %d" : "PRAGMA user_version = %d",
		 newer);
	ck_assert_int_eq(raw_exec(sql, NULL, 0), SQLITE_OK);
	ck_assert_int_eq(store_open(&o, &s, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(strstr(err, "version"));
	o.mode = STORE_MODE_READER;
	ck_assert_int_eq(store_open(&o, &s, err, sizeof(err)), -EPROTO);
	/* untouched */
	ck_assert_int_eq(raw_int(dbpath, version_sql), newer);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM events"), 1);
}
END_TEST

START_TEST(test_second_writer_busy)
{
	struct store_opts o = make_opts(false, true);
	struct store *s = NULL, *ro;
	char err[256] = "";

	ck_assert_int_eq(store_open(&o, &s, err, sizeof(err)), -EBUSY);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');
	/* readers are welcome meanwhile */
	ro = open_ro();
	store_close(ro);
	/* once the first is closed, the lock is free */
	close_store();
	st = open_store(&o);
}
END_TEST

START_TEST(test_garbage_file_refused)
{
	struct store_opts o = make_opts(false, true);
	struct store *s = NULL;
	char path[PATH_MAX], err[256] = "";
	unsigned char data[8192], back[sizeof(data) + 1];
	uint32_t x = 12345;
	FILE *f;

	for (size_t i = 0; i < sizeof(data); i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (unsigned char)(x >> 16);
	}
	snprintf(path, sizeof(path), "%s/garbage.db", tmpdir);
	f = fopen(path, "wbe");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, sizeof(data), f), sizeof(data));
	fclose(f);

	o.path = path;
	ck_assert_int_lt(store_open(&o, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');
	o.mode = STORE_MODE_READER;
	err[0] = '\0';
	ck_assert_int_lt(store_open(&o, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');

	/* never replaced nor modified */
	f = fopen(path, "rbe");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(back, 1, sizeof(back), f), sizeof(data));
	fclose(f);
	ck_assert_mem_eq(back, data, sizeof(data));
}
END_TEST

START_TEST(test_readonly_open_errors)
{
	struct store_opts o = make_opts(true, true);
	struct store *s = NULL;
	char path[PATH_MAX], err[256] = "";
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/missing.db", tmpdir);
	o.path = path;
	ck_assert_int_lt(store_open(&o, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');
	ck_assert_int_eq(access(path, F_OK), -1); /* a reader never creates the file */

	/* an SQLite database that is not ours */
	snprintf(path, sizeof(path), "%s/other.db", tmpdir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	err[0] = '\0';
	ck_assert_int_eq(store_open(&o, &s, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');
}
END_TEST

START_TEST(test_open_bad_directory)
{
	struct store_opts o = make_opts(false, true);
	struct store *s = NULL;
	char path[PATH_MAX], err[256] = "";

	snprintf(path, sizeof(path), "%s/no/such/dir/events.db", tmpdir);
	o.path = path;
	ck_assert_int_lt(store_open(&o, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');
}
END_TEST

START_TEST(test_submit_after_stop)
{
	struct store_req r;
	char body[512];
	struct event ev;

	put_ok("KOMPAY-1", "PENDING", 1);
	store_writer_stop(st);
	store_writer_stop(st); /* twice is fine */
	make_event(&ev, body, sizeof(body), "KOMPAY-1", "PAID", 1, EVENT_SOURCE_CALLBACK);
	store_req_event(&r, &ev);
	r.done = async_done;
	ck_assert_int_eq(store_submit(st, &r), -ESHUTDOWN);
	store_req_event(&r, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r), -ESHUTDOWN);
	ck_assert_int_eq(r.result, -ESHUTDOWN);
	/* queries still work on the handle */
	ck_assert_int_eq(count(st, "events"), 1);
}
END_TEST

START_TEST(test_submit_before_start)
{
	struct store_opts o = make_opts(false, true);
	struct store_req r;
	char body[512];
	struct event ev;

	close_store();
	st = open_store(&o);
	make_event(&ev, body, sizeof(body), "KOMPAY-1", "PAID", 1, EVENT_SOURCE_CALLBACK);
	store_req_event(&r, &ev);
	ck_assert_int_eq(store_submit_wait(st, &r), -ESHUTDOWN);
}
END_TEST

START_TEST(test_count_invalid_table)
{
	int64_t n = 42;

	ck_assert_int_eq(store_count(st, "sqlite_master", &n), -EINVAL);
	ck_assert_int_eq(store_count(st, "events; DROP TABLE events", &n), -EINVAL);
	ck_assert_int_eq(store_count(st, "", &n), -EINVAL);
	ck_assert_int_eq(n, 42);
}
END_TEST

/* ---- PAID callbacks held for confirmation ---- */

static struct store_event_payment pay_state(bool known, enum payment_status st, long long amount)
{
	struct store_event_payment p = {
		.known = known, .status = st, .amount = amount, .held_amount = -1};

	return p;
}

START_TEST(test_decide_hold)
{
	struct store_event_decision d;
	struct store_event_payment cur = pay_state(true, PAYMENT_PENDING, 100000);
	char body[512];
	struct event ev;

	make_event(&ev, body, sizeof(body), "P1", "PAID", 100000, EVENT_SOURCE_CALLBACK);
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(d.hold && !d.apply && !d.conflict);
	ck_assert_int_eq(d.mark, STORE_MARK_HELD);
	ck_assert_str_eq(d.key, "P1:PAID:held:100000");
	/* Without confirm_paid, from the reconciler, for a payment already PAID: the fact. */
	store_event_decide(&ev, &cur, false, &d);
	ck_assert(!d.hold && d.apply);
	ck_assert_str_eq(d.key, "P1:PAID");
	ev.source = EVENT_SOURCE_RECONCILE;
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(!d.hold && d.apply);
	ev.source = EVENT_SOURCE_CALLBACK;
	cur.status = PAYMENT_PAID;
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(!d.hold && !d.apply && d.verdict == PAYMENT_SAME);
	ck_assert_str_eq(d.key, "P1:PAID");
	/* A contradiction stays a conflict; other statuses are never held. */
	cur.status = PAYMENT_EXPIRED;
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(!d.hold && d.conflict);
	cur = pay_state(true, PAYMENT_PENDING, 5);
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(!d.hold && d.conflict);
	make_event(&ev, body, sizeof(body), "P1", "EXPIRED", -1, EVENT_SOURCE_CALLBACK);
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(!d.hold && d.apply);
	/* A payment never seen: held too, key without an amount when none was given. */
	make_event(&ev, body, sizeof(body), "P2", "PAID", -1, EVENT_SOURCE_CALLBACK);
	cur = pay_state(false, PAYMENT_UNKNOWN, -1);
	store_event_decide(&ev, &cur, true, &d);
	ck_assert(d.hold && !d.known);
	ck_assert_str_eq(d.key, "P2:PAID:held");
	store_event_decide(&ev, NULL, true, &d);
	ck_assert(d.hold);
}
END_TEST

START_TEST(test_keys_marked)
{
	char k[128];

	store_dedupe_key_marked("P", "PAID", STORE_MARK_NONE, 5, 0, k, sizeof(k));
	ck_assert_str_eq(k, "P:PAID");
	store_dedupe_key_marked("P", "PAID", STORE_MARK_CONFIRMED, 5, 9, k, sizeof(k));
	ck_assert_str_eq(k, "P:PAID");
	store_dedupe_key_marked("P", "PENDING", STORE_MARK_UNCONFIRMED, 5, 9, k, sizeof(k));
	ck_assert_str_eq(k, "P:PENDING:unconfirmed:9");
	ck_assert_str_eq(store_event_mark_name(STORE_MARK_HELD), "held");
	ck_assert_ptr_null(store_event_mark_name(STORE_MARK_NONE));
	ck_assert_int_eq(store_event_mark_parse("unconfirmed"), STORE_MARK_UNCONFIRMED);
	ck_assert_int_eq(store_event_mark_parse(NULL), STORE_MARK_NONE);
	ck_assert_int_eq(store_confirmation_parse("pending"), STORE_CONFIRM_PENDING);
	ck_assert_int_eq(store_confirmation_parse("bogus"), STORE_CONFIRM_NONE);
	ck_assert_str_eq(store_poll_outcome_name(STORE_POLL_RATE_LIMITED), "rate_limited");
	ck_assert_int_eq(store_poll_outcome_parse("refused"), STORE_POLL_REFUSED);
}
END_TEST

/* A poll result for the confirmation tests. */
static struct store_reconcile_update result(const char *pid, enum store_poll_outcome o, long http,
					    enum payment_status komerce, long long amount)
{
	struct store_reconcile_update u;

	memset(&u, 0, sizeof(u));
	snprintf(u.payment_id, sizeof(u.payment_id), "%s", pid);
	u.poll_attempts = -1;
	u.sent_at = 1786529730000LL;
	u.outcome = o;
	u.http_status = http;
	u.komerce_status = komerce;
	u.ev.amount = amount;
	u.ev.status = komerce;
	u.error = o == STORE_POLL_OK ? NULL : "server_error: HTTP 503 from Komerce";
	return u;
}

START_TEST(test_confirm_decide)
{
	struct store_event_payment cur = pay_state(true, PAYMENT_PENDING, -1);
	struct store_reconcile_update u;
	struct store_confirm_decision cd;

	cur.confirmation = STORE_CONFIRM_PENDING;
	cur.held_event_id = 7;
	cur.held_amount = 100000;
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PAID, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_CONFIRMED);
	ck_assert(cd.mark_fact && !cd.marker);
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PENDING, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_UNCONFIRMED);
	ck_assert(cd.marker && !cd.mark_fact);
	ck_assert_str_eq(cd.detail, "Komerce says PENDING");
	/* Another amount than the callback claimed is not a confirmation. */
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PAID, 5);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_ptr_nonnull(strstr(cd.detail, "amount 5"));
	/* 404: Komerce does not know it; 503, 429, 418: still waiting. */
	u = result("P", STORE_POLL_REFUSED, 404, PAYMENT_UNKNOWN, -1);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_ptr_nonnull(strstr(cd.detail, "does not know"));
	u = result("P", STORE_POLL_FAILED, 503, PAYMENT_UNKNOWN, -1);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_PENDING);
	ck_assert(!cd.marker && !cd.mark_fact);
	ck_assert_ptr_nonnull(strstr(cd.detail, "HTTP 503"));
	ck_assert(!store_confirm_decisive(STORE_POLL_RATE_LIMITED, 429));
	ck_assert(!store_confirm_decisive(STORE_POLL_REFUSED, 418));
	ck_assert(store_confirm_decisive(STORE_POLL_REFUSED, 400));
	/* Unconfirmed, then a later poll says PAID: confirmed, no second marker; anything else
	 * changes nothing. */
	cur.confirmation = STORE_CONFIRM_UNCONFIRMED;
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PAID, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_CONFIRMED);
	ck_assert(cd.mark_fact && !cd.marker);
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PENDING, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_NONE);
	/* A poll that left before the callback was held (in flight when it came): its PENDING
	 * may predate the payment, so it decides nothing and the payment is polled again; its
	 * PAID is an answer all the same. */
	cur.confirmation = STORE_CONFIRM_PENDING;
	cur.confirmation_at = u.sent_at;
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PENDING, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_NONE);
	ck_assert(cd.poll_again && !cd.marker);
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PAID, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_CONFIRMED);
	ck_assert(!cd.poll_again);
	/* Nothing held: nothing to decide. */
	cur = pay_state(true, PAYMENT_PENDING, -1);
	u = result("P", STORE_POLL_OK, 200, PAYMENT_PAID, 100000);
	store_confirm_decide(&cur, &u, &cd);
	ck_assert_int_eq(cd.verdict, STORE_CONFIRM_NONE);
}
END_TEST

START_TEST(test_hash_marked)
{
	uint8_t prev[STORE_HASH_LEN] = {1}, a[STORE_HASH_LEN], b[STORE_HASH_LEN];

	store_event_hash(prev, 3, "P", "O", "PAID", 5, "callback", false, "P:PAID", "{}", 2, 9, a);
	store_event_hash_marked(prev, 3, "P", "O", "PAID", 5, "callback", false, "P:PAID", "{}", 2,
				9, NULL, 0, b);
	ck_assert_mem_eq(a, b, STORE_HASH_LEN);
	store_event_hash_marked(prev, 3, "P", "O", "PAID", 5, "callback", false, "P:PAID", "{}", 2,
				9, "held", 0, b);
	ck_assert(memcmp(a, b, STORE_HASH_LEN) != 0);
	memcpy(a, b, STORE_HASH_LEN);
	store_event_hash_marked(prev, 3, "P", "O", "PAID", 5, "callback", false, "P:PAID", "{}", 2,
				9, "held", 1, b);
	ck_assert(memcmp(a, b, STORE_HASH_LEN) != 0);
}
END_TEST

/* The chain's hash is a stored format: events hashed by any earlier version must still verify.
 * Expected digests computed outside the daemon (Python hashlib over the documented layout:
 * "komerce-hookd/1" or "/2", then each field as a 4-byte big-endian length and its bytes,
 * integers in decimal); a raw body longer than the hash's internal buffer, negative and extreme
 * integers, a NULL order_id (an empty field). */
START_TEST(test_hash_golden)
{
	static const struct {
		int64_t id;
		const char *pid, *oid, *status;
		long long amount;
		const char *source;
		bool conflict;
		const char *key;
		const char *raw; /* NULL: fill_len bytes of fill */
		char fill;
		size_t fill_len;
		int64_t at;
		const char *mark;
		int64_t held;
		const char *hex;
	} v[] = {
		{7, "KOMPAY-1", "ORD-1", "PAID", 150000, "callback", false, "KOMPAY-1:PAID",
		 "{\"a\":1}", 0, 0, 1764547200123LL, NULL, 0,
		 "187f23f5dd34ecced00b270d150301089185556e3c57873462ff200bf189999a"},
		{INT64_MIN, "P", NULL, "PAID", -1, "reconcile", true, "P:PAID:conflict", NULL, 'x',
		 1500, 0, NULL, 0,
		 "b75f437b085ca6e995e0374e423cb2ac5ada44e5ab204c2647ebf12ff0de3a60"},
		{12, "P", "O", "PAID", 5, "callback", false, "P:PAID:held:5", "", 0, 0, 9, "held",
		 0, "9d5341e0df2df0c15b7734a6edd3b787bf279693a307b9203e6f7b7754fd4df1"},
		{13, "P", "O", "PAID", 5, "callback", false, "P:PAID:unconfirmed:5", NULL, 'y', 511,
		 9, "unconfirmed", 12,
		 "b54f734929fa0055ea4e2a0dc684b5c8d077abedadf3f51becd9653c0b347bb2"},
	};
	uint8_t prev[STORE_HASH_LEN], h[STORE_HASH_LEN];
	char raw[1500], hex[2 * STORE_HASH_LEN + 1];

	for (size_t i = 0; i < sizeof(prev); i++)
		prev[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		const char *r = v[i].raw;
		size_t rl = r != NULL ? strlen(r) : v[i].fill_len;

		if (r == NULL) {
			memset(raw, v[i].fill, v[i].fill_len);
			r = raw;
		}
		ck_assert_int_eq(store_event_hash_marked(prev, v[i].id, v[i].pid, v[i].oid,
							 v[i].status, v[i].amount, v[i].source,
							 v[i].conflict, v[i].key, r, rl, v[i].at,
							 v[i].mark, v[i].held, h),
				 0);
		util_hex(h, sizeof(h), hex);
		ck_assert_msg(strcmp(hex, v[i].hex) == 0, "vector %zu: %s", i, hex);
	}
}
END_TEST

static int64_t hook_due;
static int hook_calls;

static void on_poll(void *arg, int64_t due_ms)
{
	(void)arg;
	hook_due = due_ms;
	hook_calls++;
}

static void confirm_setup(void)
{
	struct store_opts o;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_store.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	if (pg_mode)
		ck_assert_int_eq(pgtest_createdb(dbpath, sizeof(dbpath)), 0);
	else
		snprintf(dbpath, sizeof(dbpath), "%s/events.db", tmpdir);
	o = make_opts(false, true);
	o.confirm_paid = true;
	st = open_store(&o);
	hook_due = 0;
	hook_calls = 0;
	store_set_poll_hook(st, on_poll, NULL);
	ck_assert_int_eq(store_writer_start(st), 0);
}

static int64_t outbox_rows(const char *sink)
{
	int64_t n = -1;

	ck_assert_int_eq(store_outbox_count(st, sink, STORE_OUTBOX_ANY, &n), 0);
	return n;
}

/* Applies one poll result and waits for the commit. */
static void apply_result(struct store_reconcile_update *u, const char *raw)
{
	struct store_req r;

	u->ev.raw = raw;
	u->ev.raw_len = strlen(raw);
	u->ev.source = EVENT_SOURCE_RECONCILE;
	snprintf(u->ev.payment_id, sizeof(u->ev.payment_id), "%s", u->payment_id);
	u->has_event = u->outcome == STORE_POLL_OK && u->komerce_status != PAYMENT_PENDING;
	u->set_next = true;
	u->next_poll_at = u->has_event ? 0 : u->sent_at + 5000;
	store_req_reconcile(&r, u, 1);
	ck_assert_int_eq(store_submit_wait(st, &r), 0);
}

struct marked {
	int n, held, confirmed, unconfirmed;
	int64_t held_id, ref[8];
	bool conflict[8];
};

static int collect_marks(void *arg, const struct store_event *e)
{
	struct marked *m = arg;

	if (m->n < 8) {
		m->ref[m->n] = e->held_event_id;
		m->conflict[m->n] = e->conflict;
	}
	m->n++;
	m->held += e->mark == STORE_MARK_HELD;
	m->confirmed += e->mark == STORE_MARK_CONFIRMED;
	m->unconfirmed += e->mark == STORE_MARK_UNCONFIRMED;
	if (e->mark == STORE_MARK_HELD)
		m->held_id = e->id;
	return 0;
}

static struct marked marks(const char *pid)
{
	struct store_event_filter f = {.payment_id = pid, .status = PAYMENT_UNKNOWN};
	struct marked m;

	memset(&m, 0, sizeof(m));
	ck_assert_int_eq(store_events_query(st, &f, collect_marks, &m), 0);
	return m;
}

START_TEST(test_held_then_confirmed)
{
	struct store_reconcile_update u;
	struct store_payment p;
	struct store_req r, r2;
	int64_t before, checked = 0, bad = 0;
	char why[128];

	ck_assert_int_eq(put_at(&r, "KOMPAY-H1", "PENDING", 100000, EVENT_SOURCE_API, 1000), 0);
	before = outbox_rows(NULL);
	hook_calls = 0;
	ck_assert_int_eq(put_at(&r, "KOMPAY-H1", "PAID", 100000, EVENT_SOURCE_CALLBACK, 2000), 0);
	ck_assert(r.held && !r.duplicate && !r.conflict);
	ck_assert_int_eq(r.next_poll_at, 2000);
	ck_assert_int_eq(hook_calls, 1);
	ck_assert_int_eq(hook_due, 2000);
	ck_assert_int_eq(outbox_rows(NULL), before); /* held: forwarded nowhere */
	p = get_payment(st, "KOMPAY-H1");
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_PENDING);
	ck_assert_int_eq(p.held_event_id, r.event_id);
	ck_assert_int_eq(p.next_poll_at, 2000);
	ck_assert_int_eq(p.callback_seen_at, 2000);
	/* Komerce retries it: absorbed. */
	ck_assert_int_eq(put_at(&r2, "KOMPAY-H1", "PAID", 100000, EVENT_SOURCE_CALLBACK, 2500), 0);
	ck_assert(r2.duplicate && r2.held);
	ck_assert_int_eq(r2.event_id, r.event_id);

	u = result("KOMPAY-H1", STORE_POLL_OK, 200, PAYMENT_PAID, 100000);
	apply_result(&u, "{\"payment_id\":\"KOMPAY-H1\",\"status\":\"PAID\",\"amount\":100000}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_CONFIRMED);
	ck_assert_int_eq(u.held_event_id, r.event_id);
	ck_assert(!u.duplicate && u.event_id > r.event_id);
	p = get_payment(st, "KOMPAY-H1");
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_CONFIRMED);
	ck_assert_str_eq(p.confirmation_detail, "Komerce says PAID");
	ck_assert_int_eq(outbox_rows(NULL), before + 2); /* the confirmed PAID, to both sinks */
	ck_assert_int_eq(marks("KOMPAY-H1").confirmed, 1);
	ck_assert_int_eq(count(st, "polls"), 1);
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 3);
}
END_TEST

/* Holds decided inside group-commit batches, where a backend may read the whole batch ahead
 * (PostgreSQL): in a first wave PAID callbacks for known payments, a retry of one in the same
 * batch and a PAID claim creating its payment; in a second wave (later transactions, read
 * ahead) their retries and a repeated PENDING that must not be confused with the hold. */
START_TEST(test_held_in_one_batch)
{
	enum { ROUNDS = 30, PER = 8 };
	static struct store_req reqs[ROUNDS][PER];
	static char bodies[ROUNDS][PER][512];
	static const struct {
		const char *pay, *status;
		bool dup;
		int want_id; /* within the round, 1-based; 0: an earlier fact */
	} plan[PER] = {
		/* first wave */
		{"A", "PAID", false, 1},
		{"B", "PAID", false, 2},
		{"A", "PAID", true, 1},
		{"C", "PAID", false, 3},
		/* second wave */
		{"A", "PAID", true, 1},
		{"C", "PAID", true, 3},
		{"A", "PENDING", true, 0},
		{"B", "PAID", true, 2},
	};
	int64_t checked = 0, bad = 0;
	char why[128], pid[48];
	struct store_req r;

	for (int k = 0; k < ROUNDS; k++) {
		for (int j = 0; j < 2; j++) {
			snprintf(pid, sizeof(pid), "KOMPAY-HB%d-%c", k, j == 0 ? 'A' : 'B');
			ck_assert_int_eq(put_at(&r, pid, "PENDING", 700, EVENT_SOURCE_API, 1000),
					 0);
		}
	}
	async_done_count = 0;
	for (int wave = 0; wave < 2; wave++) {
		for (int k = 0; k < ROUNDS; k++) {
			for (int i = wave * PER / 2; i < (wave + 1) * PER / 2; i++) {
				struct event ev;

				snprintf(pid, sizeof(pid), "KOMPAY-HB%d-%s", k, plan[i].pay);
				make_event(&ev, bodies[k][i], sizeof(bodies[k][i]), pid,
					   plan[i].status, 700, EVENT_SOURCE_CALLBACK);
				store_req_event(&reqs[k][i], &ev);
				reqs[k][i].done = async_done;
				ck_assert_int_eq(store_submit(st, &reqs[k][i]), 0);
			}
		}
		async_wait((wave + 1) * ROUNDS * PER / 2);
	}
	for (int k = 0; k < ROUNDS; k++) {
		int64_t base = reqs[k][0].event_id - 1;
		struct store_payment p;

		for (int i = 0; i < PER; i++) {
			struct store_req *q = &reqs[k][i];
			bool held = strcmp(plan[i].status, "PAID") == 0;

			ck_assert_int_eq(q->result, 0);
			ck_assert_msg(q->held == held && q->duplicate == plan[i].dup,
				      "round %d request %d: held %d duplicate %d", k, i, q->held,
				      q->duplicate);
			ck_assert(!q->conflict);
			if (plan[i].want_id > 0)
				ck_assert_int_eq(q->event_id, base + plan[i].want_id);
		}
		snprintf(pid, sizeof(pid), "KOMPAY-HB%d-C", k);
		p = get_payment(st, pid);
		/* a held claim created it: pending, nothing of the claim taken */
		ck_assert_int_eq(p.status, PAYMENT_PENDING);
		ck_assert_int_eq(p.amount, -1);
		ck_assert_int_eq(p.confirmation, STORE_CONFIRM_PENDING);
		ck_assert_int_eq(p.held_event_id, reqs[k][3].event_id);
		snprintf(pid, sizeof(pid), "KOMPAY-HB%d-A", k);
		p = get_payment(st, pid);
		ck_assert_int_eq(p.status, PAYMENT_PENDING);
		ck_assert_int_eq(p.confirmation, STORE_CONFIRM_PENDING);
		ck_assert_int_eq(p.held_event_id, reqs[k][0].event_id);
		ck_assert_int_eq(marks(pid).held, 1);
	}
	ck_assert_int_eq(outbox_rows(NULL), 2 * 2 * ROUNDS); /* the PENDING facts only */
	ck_assert_int_eq(store_verify(st, &checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 5 * ROUNDS);
}
END_TEST

static int first_poll(void *arg, const struct store_poll *p)
{
	*(struct store_poll *)arg = *p;
	return 1;
}

START_TEST(test_held_then_unconfirmed)
{
	struct store_reconcile_update u;
	struct store_payment p;
	struct store_poll pl;
	struct store_req r;
	struct marked m;
	int64_t before;

	ck_assert_int_eq(put_at(&r, "KOMPAY-H2", "PAID", 100000, EVENT_SOURCE_CALLBACK, 2000), 0);
	ck_assert(r.held);
	p = get_payment(st, "KOMPAY-H2"); /* never seen: made PENDING, nothing of the claim */
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_int_eq(p.amount, -1);
	ck_assert_str_eq(p.order_id, "");
	ck_assert_str_eq(p.origin, "callback");
	before = outbox_rows("shop");

	/* Komerce is down: still waiting, and the reason says so. */
	u = result("KOMPAY-H2", STORE_POLL_FAILED, 503, PAYMENT_UNKNOWN, -1);
	u.confirming = true;
	apply_result(&u, "");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_NONE);
	p = get_payment(st, "KOMPAY-H2");
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_PENDING);
	ck_assert_ptr_nonnull(strstr(p.confirmation_detail, "retrying"));
	ck_assert_int_eq(store_polls_list(st, "KOMPAY-H2", 1, first_poll, &pl), 1);
	ck_assert_int_eq(pl.outcome, STORE_POLL_FAILED);
	ck_assert_int_eq(pl.http_status, 503);
	ck_assert(pl.confirming);
	ck_assert_str_eq(pl.error, "server_error: HTTP 503 from Komerce");

	/* Komerce says PENDING: a conflict marker, to the sink that takes conflicts only. */
	u = result("KOMPAY-H2", STORE_POLL_OK, 200, PAYMENT_PENDING, 100000);
	apply_result(&u, "{\"payment_id\":\"KOMPAY-H2\",\"status\":\"PENDING\"}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_int_gt(u.marker_event_id, r.event_id);
	p = get_payment(st, "KOMPAY-H2");
	ck_assert_int_eq(p.status, PAYMENT_PENDING);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_str_eq(p.confirmation_detail, "Komerce says PENDING");
	ck_assert_int_eq(outbox_rows("shop"), before);
	ck_assert_int_eq(outbox_rows("stream"), 1);
	m = marks("KOMPAY-H2");
	ck_assert_int_eq(m.unconfirmed, 1);
	ck_assert(m.conflict[1]);
	ck_assert_int_eq(m.ref[1], r.event_id);
	ck_assert_int_eq(store_polls_list(st, "KOMPAY-H2", 0, first_poll, &pl), 1);
	ck_assert_int_eq(pl.komerce_status, PAYMENT_PENDING);

	/* A second poll saying PENDING adds nothing; a later PAID confirms it after all. */
	apply_result(&u, "{\"payment_id\":\"KOMPAY-H2\",\"status\":\"PENDING\"}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_NONE);
	u = result("KOMPAY-H2", STORE_POLL_OK, 200, PAYMENT_PAID, 100000);
	apply_result(&u, "{\"payment_id\":\"KOMPAY-H2\",\"status\":\"PAID\",\"amount\":100000}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_CONFIRMED);
	m = marks("KOMPAY-H2");
	ck_assert_int_eq(m.n, 3);
	ck_assert_int_eq(m.unconfirmed, 1);
	ck_assert_int_eq(m.confirmed, 1);
	ck_assert_int_eq(get_payment(st, "KOMPAY-H2").status, PAYMENT_PAID);
	ck_assert_int_eq(outbox_rows("shop"), before + 1);
}
END_TEST

START_TEST(test_held_not_found_and_cancel)
{
	struct store_reconcile_update u;
	struct store_payment p;
	struct store_req r;

	/* Komerce has never heard of it: unconfirmed. */
	ck_assert_int_eq(put_at(&r, "KOMPAY-H3", "PAID", 5, EVENT_SOURCE_CALLBACK, 2000), 0);
	u = result("KOMPAY-H3", STORE_POLL_REFUSED, 404, PAYMENT_UNKNOWN, -1);
	apply_result(&u, "{\"meta\":{\"code\":404}}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_int_eq(get_payment(st, "KOMPAY-H3").confirmation, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_int_eq(marks("KOMPAY-H3").unconfirmed, 1);

	/* Canceled through the admin API before any status call: nothing left to wait for. */
	ck_assert_int_eq(put_at(&r, "KOMPAY-H4", "PENDING", 10, EVENT_SOURCE_API, 1000), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-H4", "PAID", 10, EVENT_SOURCE_CALLBACK, 2000), 0);
	ck_assert(r.held);
	ck_assert_int_eq(put_at(&r, "KOMPAY-H4", "CANCELED", 10, EVENT_SOURCE_API, 3000), 0);
	p = get_payment(st, "KOMPAY-H4");
	ck_assert_int_eq(p.status, PAYMENT_CANCELED);
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_UNCONFIRMED);
	ck_assert_ptr_nonnull(strstr(p.confirmation_detail, "CANCELED"));
}
END_TEST

START_TEST(test_polls_pruned)
{
	struct store_reconcile_update u;
	struct store_req r;
	size_t polls = 0;

	/* Retention prunes the polls log like receipts: the old rows, a batch at a time. */
	ck_assert_int_eq(put_at(&r, "KOMPAY-P1", "PENDING", 10, EVENT_SOURCE_CALLBACK, 1000), 0);
	for (int i = 0; i < 3; i++) {
		u = result("KOMPAY-P1", STORE_POLL_FAILED, 503, PAYMENT_UNKNOWN, -1);
		u.sent_at = 1000 + i; /* long ago */
		apply_result(&u, "");
	}
	u = result("KOMPAY-P1", STORE_POLL_OK, 200, PAYMENT_PENDING, 10);
	u.sent_at = util_now_ms();
	apply_result(&u, "{}");
	ck_assert_int_eq(count(st, "polls"), 4);
	do {
		store_req_prune(&r, util_now_ms() - 86400000, 2);
		ck_assert_int_eq(store_submit_wait(st, &r), 0);
		polls += r.u.prune.polls;
	} while (r.u.prune.polls == 2);
	ck_assert_uint_eq(polls, 3);
	ck_assert_int_eq(count(st, "polls"), 1);
}
END_TEST

START_TEST(test_poll_older_than_the_hold)
{
	struct store_reconcile_update u;
	struct store_payment p;
	struct store_req r;
	int64_t held_at = util_now_ms();

	/* A poll leaves (PENDING at Komerce), the customer pays, the PAID callback is held, and
	 * then the poll's answer lands: not a verdict, and the payment is due at once. */
	ck_assert_int_eq(put_at(&r, "KOMPAY-R1", "PENDING", 10, EVENT_SOURCE_CALLBACK, 1000), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-R1", "PAID", 10, EVENT_SOURCE_CALLBACK, held_at), 0);
	u = result("KOMPAY-R1", STORE_POLL_OK, 200, PAYMENT_PENDING, 10);
	u.sent_at = held_at - 50;
	apply_result(&u, "{\"status\":\"PENDING\"}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_NONE);
	p = get_payment(st, "KOMPAY-R1");
	ck_assert_int_eq(p.confirmation, STORE_CONFIRM_PENDING);
	ck_assert_int_le(p.next_poll_at, util_now_ms());
	ck_assert_int_eq(marks("KOMPAY-R1").unconfirmed, 0);
	/* The next poll decides. */
	u = result("KOMPAY-R1", STORE_POLL_OK, 200, PAYMENT_PAID, 10);
	u.sent_at = held_at + 3100;
	apply_result(&u, "{\"status\":\"PAID\"}");
	ck_assert_int_eq(u.verdict, STORE_CONFIRM_CONFIRMED);
}
END_TEST

START_TEST(test_due_confirming_first)
{
	struct store_reconcile_row rows[4];
	struct store_req r;
	size_t n = 0;
	struct store *ro;

	/* Three payments overdue for a long time, then a PAID callback to confirm: it comes
	 * first. */
	ck_assert_int_eq(put_at(&r, "KOMPAY-D1", "PENDING", 10, EVENT_SOURCE_CALLBACK, 1000), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-D2", "PENDING", 10, EVENT_SOURCE_CALLBACK, 1001), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-D3", "PENDING", 10, EVENT_SOURCE_CALLBACK, 1002), 0);
	ck_assert_int_eq(put_at(&r, "KOMPAY-D4", "PAID", 10, EVENT_SOURCE_CALLBACK, 500000), 0);
	ro = open_ro();
	ck_assert_int_eq(store_reconcile_due(ro, 600000, 2, rows, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_str_eq(rows[0].payment_id, "KOMPAY-D4");
	ck_assert(rows[0].confirming);
	ck_assert_str_eq(rows[1].payment_id, "KOMPAY-D1");
	ck_assert(!rows[1].confirming);
	ck_assert_int_eq(store_reconcile_due(ro, 600000, 4, rows, &n), 0);
	ck_assert_int_eq(n, 4);
	store_close(ro);
}
END_TEST

/* ---- PostgreSQL: several instances on one database ---- */

static struct store *open_mode(enum store_mode mode, const char *instance)
{
	struct store_opts o = make_opts(false, true);

	o.mode = mode;
	o.instance = instance;
	return open_store(&o);
}

struct writer_load {
	struct store *s;
	const char *prefix;
	int n;
	int ok;
};

static void *writer_load_main(void *arg)
{
	struct writer_load *w = arg;

	for (int i = 0; i < w->n; i++) {
		char pid[48], body[512];
		struct store_req r;
		struct event ev;

		snprintf(pid, sizeof(pid), "%s-%d", w->prefix, i);
		make_event(&ev, body, sizeof(body), pid, "PAID", 1000 + i, EVENT_SOURCE_CALLBACK);
		store_req_event(&r, &ev);
		if (store_submit_wait(w->s, &r) == 0 && !r.duplicate)
			w->ok++;
	}
	return NULL;
}

/* Two writers (two instances) append to one chain at the same time: every event gets its own
 * id, the ids have no gap, and the chain verifies. */
START_TEST(test_pg_two_writers_one_chain)
{
	struct writer_load a = {.prefix = "KOMPAY-A", .n = 150},
			   b = {.prefix = "KOMPAY-B", .n = 150};
	struct store *st2 = open_mode(STORE_MODE_WRITER, "unit2");
	int64_t checked = -1, bad = -1;
	pthread_t ta, tb;
	char why[256];

	ck_assert_int_eq(store_writer_start(st2), 0);
	a.s = st;
	b.s = st2;
	ck_assert_int_eq(pthread_create(&ta, NULL, writer_load_main, &a), 0);
	ck_assert_int_eq(pthread_create(&tb, NULL, writer_load_main, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	ck_assert_int_eq(a.ok, 150);
	ck_assert_int_eq(b.ok, 150);
	/* the same fact through the other instance: one event, one more receipt */
	{
		struct store_req r;
		char body[512];
		struct event ev;

		make_event(&ev, body, sizeof(body), "KOMPAY-A-7", "PAID", 1007,
			   EVENT_SOURCE_CALLBACK);
		store_req_event(&r, &ev);
		ck_assert_int_eq(store_submit_wait(st2, &r), 0);
		ck_assert(r.duplicate);
	}
	store_close(st2);
	ck_assert_int_eq(count(st, "events"), 300);
	ck_assert_int_eq(raw_int(dbpath, "SELECT max(id) FROM events"), 300);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM receipts WHERE instance = 'unit2'"),
			 151);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 300);
}
END_TEST

struct opener {
	char url[256];
	int r;
	char err[256];
};

static void *open_writer_main(void *arg)
{
	struct opener *x = arg;
	struct store_opts o = make_opts(false, true);
	struct store *s = NULL;

	o.url = x->url;
	x->r = store_open(&o, &s, x->err, sizeof(x->err));
	store_close(s);
	return NULL;
}

/* Two instances starting together on a new database: the schema is created once. */
START_TEST(test_pg_migrate_once)
{
	struct opener x[4];
	pthread_t t[4];
	char url[256], out[64];

	ck_assert_int_eq(pgtest_createdb(url, sizeof(url)), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(x[i].url, sizeof(x[i].url), "%s", url);
		ck_assert_int_eq(pthread_create(&t[i], NULL, open_writer_main, &x[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(x[i].r == 0, "%s", x[i].err);
	}
	ck_assert_int_eq(pgtest_exec(url,
				     "SELECT count(*) || ':' || max(version) FROM "
				     "schema_version",
				     out, sizeof(out)),
			 0);
	ck_assert_str_eq(out, "1:1");
	pgtest_dropdb(url);
}
END_TEST

/* The writer's session is killed on the server: requests fail (never acknowledged) until the
 * writer has reconnected by itself, then succeed; nothing is stored twice or lost. */
START_TEST(test_pg_writer_reconnects)
{
	struct store_req r;
	int64_t checked, bad;
	int failures = 0, i;
	char why[256];

	put_ok("KOMPAY-1", "PENDING", 1);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(pg_terminate_backend(pid)) FROM "
					 "pg_stat_activity WHERE application_name = "
					 "'komerce-hookd/unit/writer'"),
			 1);
	for (i = 0; i < 100; i++) {
		int e = put(&r, "KOMPAY-1", "PAID", 1);

		if (e == 0)
			break;
		ck_assert_int_eq(e, -ECONNRESET);
		failures++;
		usleep(50000);
	}
	ck_assert_int_lt(i, 100);
	ck_assert(!r.duplicate);
	ck_assert_int_eq(r.event_id, 2);
	ck_assert_int_le(failures, 2);
	ck_assert_int_eq(count(st, "events"), 2);
	ck_assert_int_eq(verify_ro(&checked, &bad, why, sizeof(why)), 0);
	ck_assert_int_eq(checked, 2);
}
END_TEST

/* One leader per job; a job is free again when its holder releases it or its session ends. */
START_TEST(test_pg_leadership)
{
	struct store *a = open_mode(STORE_MODE_LEADER, "a");
	struct store *b = open_mode(STORE_MODE_LEADER, "b");

	ck_assert_int_eq(store_leader_try(a, "reconcile"), 1);
	ck_assert_int_eq(store_leader_try(b, "reconcile"), 0);
	ck_assert_int_eq(store_leader_try(a, "reconcile"), 1); /* still, and idempotent */
	ck_assert_int_eq(store_leader_try(b, "forward:shop"), 1);
	ck_assert_int_eq(store_leader_try(a, "forward:shop"), 0);
	ck_assert_int_eq(store_leader_check(a, 2000), 0);
	ck_assert_int_eq(store_leader_check(b, 2000), 0);
	/* released: the other takes it */
	store_leader_release(a, "reconcile");
	ck_assert_int_eq(store_leader_try(b, "reconcile"), 1);
	ck_assert_int_eq(store_leader_try(a, "reconcile"), 0);
	/* b's session is killed on the server: b learns it at its next check, a can lead */
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(pg_terminate_backend(pid)) FROM "
					 "pg_stat_activity WHERE application_name = "
					 "'komerce-hookd/b/leader'"),
			 1);
	ck_assert_int_lt(store_leader_check(b, 2000), 0);
	ck_assert_int_eq(store_leader_try(a, "reconcile"), 1);
	ck_assert_int_eq(store_leader_try(a, "forward:shop"), 1);
	/* b reconnects as a follower */
	ck_assert_int_eq(store_leader_try(b, "reconcile"), 0);
	ck_assert_int_eq(store_leader_check(b, 2000), 0);
	/* another deployment in another schema of the same database elects on its own */
	{
		struct store_opts o = make_opts(false, true);
		struct store *w, *other;
		char url[256];

		ck_assert_int_eq(pgtest_createdb(url, sizeof(url)), 0);
		o.url = url;
		w = open_store(&o); /* creates its schema */
		o.mode = STORE_MODE_LEADER;
		other = open_store(&o);
		ck_assert_int_eq(store_leader_try(other, "reconcile"), 1);
		ck_assert_int_eq(store_leader_try(b, "reconcile"), 0);
		store_close(other);
		store_close(w);
		pgtest_dropdb(url);
	}
	/* closing a ends its session: its jobs are free (once the server has seen it go) */
	store_close(a);
	for (int i = 0; i < 100 && store_leader_try(b, "reconcile") == 0; i++)
		usleep(20000);
	ck_assert_int_eq(store_leader_try(b, "reconcile"), 1);
	ck_assert_int_eq(store_leader_try(b, "forward:shop"), 1);
	store_close(b);
}
END_TEST

START_TEST(test_pg_open_errors)
{
	struct store_opts o = make_opts(false, true);
	struct store *s = NULL;
	char url[256], err[512] = "", out[64];

	/* nothing listens there; the password never shows in the error */
	o.url = "postgresql://hookd:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2";
	ck_assert_int_lt(store_open(&o, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	ck_assert(err[0] != '\0');
	ck_assert_ptr_null(strstr(err, "s3cret-pw"));
	/* a reader on a database without our schema: refused, nothing created */
	ck_assert_int_eq(pgtest_createdb(url, sizeof(url)), 0);
	o.url = url;
	o.mode = STORE_MODE_READER;
	ck_assert_int_eq(store_open(&o, &s, err, sizeof(err)), -ENOENT);
	ck_assert_int_eq(pgtest_exec(url, "SELECT to_regclass('events') IS NULL", out, sizeof(out)),
			 0);
	ck_assert_str_eq(out, "t");
	pgtest_dropdb(url);
	/* backups are pg_dump's job */
	{
		int64_t bytes = 0;

		ck_assert_int_eq(
			store_backup(st, "/tmp/never-written.db", &bytes, err, sizeof(err)),
			-ENOTSUP);
		ck_assert_ptr_nonnull(strstr(err, "postgresql"));
	}
}
END_TEST

static TCase *new_case(const char *name, void (*setup_fn)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup_fn, teardown);
	tcase_set_timeout(tc, 60);
	return tc;
}

static TCase *core_case(void)
{
	TCase *tc = new_case("core", setup);

	tcase_add_test(tc, test_first_insert);
	tcase_add_test(tc, test_duplicate);
	tcase_add_test(tc, test_conflict_after_terminal);
	tcase_add_test(tc, test_regression_to_pending);
	tcase_add_test(tc, test_amount_mismatch);
	tcase_add_test(tc, test_new_payment_from_callback);
	tcase_add_test(tc, test_new_terminal_payment_not_watched);
	tcase_add_test(tc, test_no_reconcile);
	tcase_add_test(tc, test_other_sources);
	tcase_add_test(tc, test_received_at);
	if (pg_mode) {
		tcase_add_test(tc, test_pg_schema_version);
	} else {
		tcase_add_test(tc, test_user_version);
		tcase_add_test(tc, test_wal_mode);
	}
	tcase_add_test(tc, test_receipt_instance);
	tcase_add_test(tc, test_mark_min_gap);
	tcase_add_test(tc, test_verify_intact);
	tcase_add_test(tc, test_prune);
	tcase_add_test(tc, test_chain_survives_reopen);
	tcase_add_test(tc, test_readonly_queries);
	tcase_add_test(tc, test_query_stops_early);
	tcase_add_test(tc, test_group_commit);
	tcase_add_test(tc, test_bad_event_in_a_batch);
	tcase_add_test(tc, test_dependent_facts_in_one_batch);
	tcase_add_test(tc, test_event_hash);
	tcase_add_test(tc, test_close_null);
	return tc;
}

static TCase *confirm_case(void)
{
	TCase *tc = new_case("confirm", confirm_setup);

	tcase_add_test(tc, test_decide_hold);
	tcase_add_test(tc, test_keys_marked);
	tcase_add_test(tc, test_confirm_decide);
	tcase_add_test(tc, test_hash_marked);
	tcase_add_test(tc, test_hash_golden);
	tcase_add_test(tc, test_held_then_confirmed);
	tcase_add_test(tc, test_held_in_one_batch);
	tcase_add_test(tc, test_held_then_unconfirmed);
	tcase_add_test(tc, test_held_not_found_and_cancel);
	tcase_add_test(tc, test_due_confirming_first);
	tcase_add_test(tc, test_polls_pruned);
	tcase_add_test(tc, test_poll_older_than_the_hold);
	return tc;
}

static TCase *errors_case(void)
{
	TCase *tc = new_case("errors", setup);

	tcase_add_test(tc, test_append_only);
	tcase_add_test(tc, test_tamper_update);
	tcase_add_test(tc, test_tamper_raw_last_row);
	tcase_add_test(tc, test_tamper_rehashed_row);
	tcase_add_test(tc, test_tamper_delete);
	tcase_add_test(tc, test_tamper_delete_first);
	tcase_add_test(tc, test_tamper_swap_ids);
	tcase_add_test(tc, test_newer_schema_refused);
	if (pg_mode) {
		tcase_add_test(tc, test_pg_open_errors);
	} else {
		tcase_add_test(tc, test_second_writer_busy);
		tcase_add_test(tc, test_garbage_file_refused);
		tcase_add_test(tc, test_readonly_open_errors);
		tcase_add_test(tc, test_open_bad_directory);
	}
	tcase_add_test(tc, test_submit_after_stop);
	tcase_add_test(tc, test_submit_before_start);
	tcase_add_test(tc, test_count_invalid_table);
	return tc;
}

Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc;

	suite_add_tcase(s, core_case());
	suite_add_tcase(s, confirm_case());
	tc = new_case("limits", setup);
	tcase_add_test(tc, test_long_payment_id);
	tcase_add_test(tc, test_single_batches_after_many);
	tcase_add_test(tc, test_no_sinks);
	tcase_add_test(tc, test_busy_database);
	suite_add_tcase(s, tc);
	suite_add_tcase(s, errors_case());
	if (pg_mode) {
		tc = new_case("cluster", setup);
		tcase_add_test(tc, test_pg_two_writers_one_chain);
		tcase_add_test(tc, test_pg_migrate_once);
		tcase_add_test(tc, test_pg_writer_reconnects);
		tcase_add_test(tc, test_pg_leadership);
		suite_add_tcase(s, tc);
	}
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	pg_mode = pgtest_enabled();
	sr = srunner_create(store_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
