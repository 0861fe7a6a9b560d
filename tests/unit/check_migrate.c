/* Check suite for the upgrade path of src/store.c (store_open -> migrate): this binary is the
 * real store linked with a migration table one version ahead of the shipped one (sql/sqlite/
 * and the test-only tests/migrate/006_test_upgrade.sql). A version-1 database with data (built
 * with the real migration 001 and a valid hash chain) is migrated with its data intact and a
 * backup <db>.v1.bak left beside it; a database from the future is refused and not altered
 * by a single byte; no backup, no migration; a failing migration rolls back. */
#include "store.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char *const store_sqlite_migrations[];
extern const size_t store_sqlite_migrations_count;

static char tmpdir[PATH_MAX];
static char dbpath[PATH_MAX];
static char bakpath[PATH_MAX + 16];
static const struct store_sink sinks[] = {{"shop", false}};

/* ---- helpers ---- */

static struct store_opts make_opts(bool readonly)
{
	struct store_opts o = {
		.path = dbpath,
		.mode = readonly ? STORE_MODE_READER : STORE_MODE_WRITER,
		.synchronous_full = true,
		.busy_timeout_ms = 5000,
		.grace_seconds = 60,
		.reconcile = true,
		.sinks = sinks,
		.n_sinks = 1,
	};
	return o;
}

static int open_at(const char *path, bool readonly, struct store **ret, char *err, size_t n)
{
	struct store_opts o = make_opts(readonly);

	o.path = path;
	err[0] = '\0';
	*ret = NULL;
	return store_open(&o, ret, err, n);
}

static sqlite3 *raw_open(const char *path, int flags)
{
	sqlite3 *db = NULL;

	ck_assert_int_eq(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg != NULL ? msg : "?");
	sqlite3_free(msg);
}

static char *raw_text(const char *path, const char *sql)
{
	sqlite3 *db = raw_open(path, SQLITE_OPEN_READONLY);
	sqlite3_stmt *q = NULL;
	char *v;

	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	v = strdup(sqlite3_column_text(q, 0) != NULL ? (const char *)sqlite3_column_text(q, 0)
						     : "");
	ck_assert_ptr_nonnull(v);
	sqlite3_finalize(q);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	return v;
}

static int raw_int(const char *path, const char *sql)
{
	char *t = raw_text(path, sql);
	int v = atoi(t);

	free(t);
	return v;
}

static bool exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0;
}

static unsigned char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	long len;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	ck_assert_int_gt(len, 0);
	rewind(f);
	buf = malloc((size_t)len);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*ret_len = (size_t)len;
	return buf;
}

/* The rows of every version-1 table, columns of schema version 1 only, as one text: equal
 * before and after a migration when no row and no value changed. */
static char *dump_v1(const char *path)
{
	static const struct {
		const char *table, *cols;
	} t[] = {
		{"payments",
		 "payment_id, order_id, payment_type, channel_code, amount, status, "
		 "expires_at, created_at, updated_at, callback_seen_at, last_polled_at, "
		 "next_poll_at, poll_attempts, origin"},
		{"events",
		 "id, payment_id, order_id, status, amount, source, conflict, dedupe_key, "
		 "raw_json, received_at, prev_hash, hash"},
		{"receipts", "id, event_id, source, remote_addr, received_at"},
		{"outbox", "id, event_id, payment_id, sink, state, attempts, next_attempt_at, "
			   "last_error, created_at, delivered_at"},
	};
	sqlite3 *db = raw_open(path, SQLITE_OPEN_READONLY);
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap);

	ck_assert_ptr_nonnull(out);
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char sql[512];
		sqlite3_stmt *q = NULL;

		snprintf(sql, sizeof(sql), "SELECT %s FROM %s ORDER BY 1", t[i].cols, t[i].table);
		ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
		len += (size_t)snprintf(out + len, cap - len, "[%s]\n", t[i].table);
		while (sqlite3_step(q) == SQLITE_ROW) {
			for (int c = 0; c < sqlite3_column_count(q); c++) {
				const unsigned char *b = sqlite3_column_blob(q, c);
				int n = sqlite3_column_bytes(q, c);

				ck_assert_uint_lt(len + 2 * (size_t)n + 16, cap);
				len += (size_t)snprintf(out + len, cap - len,
							"%d:", sqlite3_column_type(q, c));
				for (int k = 0; k < n; k++)
					len += (size_t)snprintf(out + len, cap - len, "%02x", b[k]);
				out[len++] = '|';
				out[len] = '\0';
			}
			out[len++] = '\n';
			out[len] = '\0';
		}
		sqlite3_finalize(q);
	}
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	return out;
}

/* ---- a version-1 database with data ---- */

struct fx_event {
	const char *payment_id, *order_id, *status, *source;
	long long amount;
	bool conflict;
};

static const struct fx_event fx_events[] = {
	{"KOMPAY-1699012345-A1B2C3", "KOM12345", "PENDING", "callback", 100000, false},
	{"KPAY-5292/KM/2026", NULL, "PENDING", "api", 25000, false},
	{"KOMPAY-1699012345-A1B2C3", "KOM12345", "PAID", "callback", 100000, false},
	{"KOMPAY-7", "ORD-7", "EXPIRED", "reconcile", -1, false},
	{"KOMPAY-1699012345-A1B2C3", "KOM12345", "EXPIRED", "callback", 100000, true},
};
#define FX_EVENTS ((int)(sizeof(fx_events) / sizeof(fx_events[0])))

/* Writes a database the way a binary with only migration 001 leaves it: the real migration
 * text, user_version 1, WAL, and rows in every table (events hash-chained like the writer
 * does). Migration 001 of this binary is sql/001_init.sql, byte for byte. */
static void make_v1(const char *path, bool wal)
{
	sqlite3 *db = raw_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	uint8_t prev[STORE_HASH_LEN] = {0}, h[STORE_HASH_LEN];
	sqlite3_stmt *q = NULL;

	ck_assert_uint_ge(store_sqlite_migrations_count, 4);
	if (wal)
		raw_exec(db, "PRAGMA journal_mode = WAL");
	raw_exec(db, "BEGIN");
	raw_exec(db, store_sqlite_migrations[0]);
	raw_exec(db, "PRAGMA user_version = 1");
	ck_assert_int_eq(sqlite3_prepare_v2(
				 db,
				 "INSERT INTO events (id, payment_id, order_id, status, amount, "
				 "source, conflict, dedupe_key, raw_json, received_at, prev_hash, "
				 "hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
				 -1, &q, NULL),
			 SQLITE_OK);
	for (int i = 0; i < FX_EVENTS; i++) {
		const struct fx_event *e = &fx_events[i];
		char key[160], raw[256];
		int64_t at = 1786529731000LL + i * 1000;

		snprintf(key, sizeof(key), "%s:%s", e->payment_id, e->status);
		snprintf(raw, sizeof(raw), "{\"payment_id\":\"%s\",\"status\":\"%s\",\"n\":%d}",
			 e->payment_id, e->status, i);
		store_event_hash(prev, i + 1, e->payment_id, e->order_id, e->status, e->amount,
				 e->source, e->conflict, key, raw, strlen(raw), at, h);
		sqlite3_bind_int64(q, 1, i + 1);
		sqlite3_bind_text(q, 2, e->payment_id, -1, SQLITE_STATIC);
		if (e->order_id != NULL)
			sqlite3_bind_text(q, 3, e->order_id, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(q, 3);
		sqlite3_bind_text(q, 4, e->status, -1, SQLITE_STATIC);
		if (e->amount >= 0)
			sqlite3_bind_int64(q, 5, e->amount);
		else
			sqlite3_bind_null(q, 5);
		sqlite3_bind_text(q, 6, e->source, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 7, e->conflict ? 1 : 0);
		sqlite3_bind_text(q, 8, key, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(q, 9, raw, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(q, 10, at);
		sqlite3_bind_blob(q, 11, prev, STORE_HASH_LEN, SQLITE_TRANSIENT);
		sqlite3_bind_blob(q, 12, h, STORE_HASH_LEN, SQLITE_TRANSIENT);
		ck_assert_int_eq(sqlite3_step(q), SQLITE_DONE);
		sqlite3_reset(q);
		sqlite3_clear_bindings(q);
		memcpy(prev, h, STORE_HASH_LEN);
	}
	sqlite3_finalize(q);
	raw_exec(db,
		 "INSERT INTO payments (payment_id, order_id, payment_type, channel_code, amount, "
		 "status, expires_at, created_at, updated_at, callback_seen_at, last_polled_at, "
		 "next_poll_at, poll_attempts, origin) VALUES "
		 "('KOMPAY-1699012345-A1B2C3', 'KOM12345', 'bank_transfer', 'BCA', 100000, 'PAID', "
		 "NULL, 1786529731000, 1786529733000, 1786529735000, NULL, NULL, 0, 'callback'), "
		 "('KPAY-5292/KM/2026', NULL, 'qris', NULL, 25000, 'PENDING', 1786533331, "
		 "1786529732000, 1786529732000, NULL, 1786529790000, 1786529800000, 2, 'api'), "
		 "('KOMPAY-7', 'ORD-7', NULL, NULL, NULL, 'EXPIRED', NULL, 1786529734000, "
		 "1786529734000, NULL, 1786529734000, NULL, 5, 'reconcile')");
	raw_exec(db, "INSERT INTO receipts (event_id, source, remote_addr, received_at) VALUES "
		     "(1, 'callback', '203.0.113.7', 1786529731000), "
		     "(2, 'api', NULL, 1786529732000), "
		     "(3, 'callback', '203.0.113.7', 1786529733000), "
		     "(3, 'callback', '203.0.113.8', 1786529733500), "
		     "(4, 'reconcile', NULL, 1786529734000), "
		     "(5, 'callback', '203.0.113.7', 1786529735000)");
	raw_exec(db, "INSERT INTO outbox (event_id, payment_id, sink, state, attempts, "
		     "next_attempt_at, last_error, created_at, delivered_at) VALUES "
		     "(1, 'KOMPAY-1699012345-A1B2C3', 'shop', 'delivered', 1, 1786529731000, NULL, "
		     "1786529731000, 1786529731200), "
		     "(2, 'KPAY-5292/KM/2026', 'shop', 'dead', 12, 1786529999000, "
		     "'HTTP 400: bad request', 1786529732000, NULL), "
		     "(3, 'KOMPAY-1699012345-A1B2C3', 'shop', 'pending', 3, 1786529999000, "
		     "'timeout', 1786529733000, NULL)");
	raw_exec(db, "COMMIT");
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

static void assert_chain(const char *path, int64_t expect)
{
	struct store *ro = NULL;
	int64_t checked = -1, bad = -1;
	char err[512], why[256] = "";

	ck_assert_msg(open_at(path, true, &ro, err, sizeof(err)) == 0, "%s: %s", path, err);
	ck_assert_msg(store_verify(ro, &checked, &bad, why, sizeof(why)) == 0,
		      "%s: chain broken at %lld: %s", path, (long long)bad, why);
	ck_assert_int_eq(checked, expect);
	store_close(ro);
}

/* Migration 005: every CHECK of a fixed set of values is spelled as comparisons (no IN list,
 * which SQLite checks against an ephemeral B-tree built per written row), and each still
 * refuses what it refused: one bad value per constraint, one good row. */
static void assert_checks_without_in(const char *path)
{
	static const char *const tables[] = {"payments", "events", "outbox", "polls", "receipts"};
	static const char *const bad[] = {
		"INSERT INTO payments (payment_id, status, created_at, updated_at, origin) "
		"VALUES ('P1', 'BOGUS', 0, 0, 'api')",
		"INSERT INTO payments (payment_id, status, created_at, updated_at, origin) "
		"VALUES ('P1', 'PAID', 0, 0, 'bogus')",
		"INSERT INTO payments (payment_id, status, created_at, updated_at, origin, "
		"confirmation) VALUES ('P1', 'PAID', 0, 0, 'api', 'held')",
		"INSERT INTO events (payment_id, status, source, dedupe_key, raw_json, "
		"received_at, prev_hash, hash) "
		"VALUES ('P1', 'PAID', 'bogus', 'k', '{}', 0, x'', x'')",
		"INSERT INTO events (payment_id, status, source, dedupe_key, raw_json, "
		"received_at, prev_hash, hash, confirmation) "
		"VALUES ('P1', 'PAID', 'api', 'k', '{}', 0, x'', x'', 'pending')",
		"INSERT INTO outbox (event_id, payment_id, sink, state, next_attempt_at, "
		"created_at) VALUES (1, 'P1', 's', 'bogus', 0, 0)",
		"INSERT INTO polls (payment_id, polled_at, elapsed_ms, outcome) "
		"VALUES ('P1', 0, 0, 'bogus')",
	};
	sqlite3 *db = raw_open(path, SQLITE_OPEN_READWRITE);

	ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM sqlite_master "
				       "WHERE type = 'table' AND instr(sql, ' IN (') > 0"),
			 0);
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char sql[128];
		sqlite3_stmt *q = NULL;
		int ephemeral = 0;

		snprintf(sql, sizeof(sql), "EXPLAIN INSERT INTO %s DEFAULT VALUES", tables[i]);
		ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
		while (sqlite3_step(q) == SQLITE_ROW)
			ephemeral += strcmp((const char *)sqlite3_column_text(q, 1),
					    "OpenEphemeral") == 0;
		sqlite3_finalize(q);
		ck_assert_msg(ephemeral == 0, "%s: %d ephemeral tables", sql, ephemeral);
	}
	raw_exec(db, "BEGIN");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = sqlite3_exec(db, bad[i], NULL, NULL, NULL);

		ck_assert_msg(sqlite3_extended_errcode(db) == SQLITE_CONSTRAINT_CHECK,
			      "%s: rc %d, %s", bad[i], rc, sqlite3_errmsg(db));
	}
	raw_exec(db, "INSERT INTO payments (payment_id, status, created_at, updated_at, origin, "
		     "confirmation) VALUES ('P1', 'PAID', 0, 0, 'api', 'pending')");
	raw_exec(db, "ROLLBACK");
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_migrate.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbpath, sizeof(dbpath), "%s/events.db", tmpdir);
	snprintf(bakpath, sizeof(bakpath), "%s.v1.bak", dbpath);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- core ---- */

START_TEST(test_v1_migrated_data_intact_backup_kept)
{
	struct store *s = NULL;
	struct store_req r;
	struct event ev;
	char err[512], tmp[PATH_MAX + 32];
	char *before, *after, *in_backup, *t;
	static const char raw[] = "{\"payment_id\":\"KPAY-5292/KM/2026\",\"status\":\"PAID\"}";

	make_v1(dbpath, true);
	before = dump_v1(dbpath);
	assert_chain(dbpath, FX_EVENTS);

	ck_assert_msg(open_at(dbpath, false, &s, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(raw_int(dbpath, "PRAGMA user_version"),
			 (int)store_sqlite_migrations_count);
	/* the migrations ran: the real 002's columns, the real 003's columns and table, the
	 * real 004's column, the test 006's column, index and table */
	ck_assert_int_eq(raw_int(dbpath,
				 "SELECT count(*) FROM pragma_table_info('outbox') "
				 "WHERE name IN ('replayed_at', 'replayed_by', 'replay_of')"),
			 3);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM pragma_table_info('events') "
					 "WHERE name IN ('confirmation', 'held_event_id')"),
			 2);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM pragma_table_info('receipts') "
					 "WHERE name = 'instance'"),
			 1);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM sqlite_master WHERE name = 'polls'"),
			 1);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM pragma_table_info('payments') "
					 "WHERE name = 'note'"),
			 1);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM sqlite_master "
					 "WHERE name IN ('events_conflicts', 'upgrade_marker')"),
			 2);
	assert_checks_without_in(dbpath);
	/* every row and value of version 1 is unchanged; the chain still verifies */
	after = dump_v1(dbpath);
	ck_assert_str_eq(after, before);
	assert_chain(dbpath, FX_EVENTS);

	/* the backup: beside the database, a single file at the old version, same data */
	ck_assert_msg(exists(bakpath), "no backup %s", bakpath);
	snprintf(tmp, sizeof(tmp), "%s.new", bakpath);
	ck_assert(!exists(tmp));
	snprintf(tmp, sizeof(tmp), "%s-wal", bakpath);
	ck_assert(!exists(tmp));
	ck_assert_int_eq(raw_int(bakpath, "PRAGMA user_version"), 1);
	t = raw_text(bakpath, "PRAGMA integrity_check");
	ck_assert_str_eq(t, "ok");
	free(t);
	t = raw_text(bakpath, "PRAGMA journal_mode");
	ck_assert_str_eq(t, "delete");
	free(t);
	ck_assert_int_eq(raw_int(bakpath, "SELECT count(*) FROM sqlite_master "
					  "WHERE name = 'upgrade_marker'"),
			 0);
	in_backup = dump_v1(bakpath);
	ck_assert_str_eq(in_backup, before);
	assert_chain(bakpath, FX_EVENTS);

	/* the migrated store keeps working: the next event continues the chain */
	ck_assert_int_eq(store_writer_start(s), 0);
	memset(&ev, 0, sizeof(ev));
	snprintf(ev.payment_id, sizeof(ev.payment_id), "KPAY-5292/KM/2026");
	ev.status = PAYMENT_PAID;
	ev.amount = 25000;
	ev.source = EVENT_SOURCE_CALLBACK;
	ev.raw = raw;
	ev.raw_len = strlen(raw);
	store_req_event(&r, &ev);
	ck_assert_int_eq(store_submit_wait(s, &r), 0);
	ck_assert_int_eq(r.event_id, FX_EVENTS + 1);
	ck_assert(!r.duplicate);
	store_close(s);
	assert_chain(dbpath, FX_EVENTS + 1);
	/* the backup is a snapshot of before: the new event is not in it */
	ck_assert_int_eq(raw_int(bakpath, "SELECT count(*) FROM events"), FX_EVENTS);
	free(before);
	free(after);
	free(in_backup);
}
END_TEST

START_TEST(test_current_database_not_backed_up_again)
{
	struct store *s = NULL;
	char err[512];
	struct stat a, b;

	make_v1(dbpath, true);
	ck_assert_msg(open_at(dbpath, false, &s, err, sizeof(err)) == 0, "%s", err);
	store_close(s);
	ck_assert_int_eq(stat(bakpath, &a), 0);
	/* up to date: opened without a migration and without touching the backup (a new
	 * backup is a rename: another inode; nanosecond mtimes catch a rewrite in place) */
	ck_assert_msg(open_at(dbpath, false, &s, err, sizeof(err)) == 0, "%s", err);
	store_close(s);
	ck_assert_int_eq(stat(bakpath, &b), 0);
	ck_assert_int_eq(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
	ck_assert_int_eq(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
	ck_assert_int_eq(a.st_ino, b.st_ino);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM upgrade_marker"), 1);
}
END_TEST

START_TEST(test_new_database_has_no_backup)
{
	struct store *s = NULL;
	char err[512], path[PATH_MAX + 16];

	ck_assert_msg(open_at(dbpath, false, &s, err, sizeof(err)) == 0, "%s", err);
	store_close(s);
	ck_assert_int_eq(raw_int(dbpath, "PRAGMA user_version"),
			 (int)store_sqlite_migrations_count);
	snprintf(path, sizeof(path), "%s.v0.bak", dbpath);
	ck_assert(!exists(path));
	ck_assert(!exists(bakpath));
	assert_checks_without_in(dbpath);
}
END_TEST

START_TEST(test_stale_backup_replaced)
{
	struct store *s = NULL;
	char err[512], *before, *in_backup;
	FILE *f;

	/* A backup left by an earlier attempt at the same upgrade (here: junk) is replaced by a
	 * complete copy of the database as it is now. */
	make_v1(dbpath, false);
	before = dump_v1(dbpath);
	f = fopen(bakpath, "w");
	ck_assert_ptr_nonnull(f);
	fputs("stale\n", f);
	fclose(f);
	ck_assert_msg(open_at(dbpath, false, &s, err, sizeof(err)) == 0, "%s", err);
	store_close(s);
	ck_assert_int_eq(raw_int(bakpath, "PRAGMA user_version"), 1);
	in_backup = dump_v1(bakpath);
	ck_assert_str_eq(in_backup, before);
	free(before);
	free(in_backup);
}
END_TEST

/* ---- errors ---- */

/* A database written by a newer binary: refused with a message naming it and its version,
 * and left exactly as it was, whatever its journal mode. */
static void assert_future_untouched(bool wal)
{
	struct store *s = NULL;
	unsigned char *a, *b;
	size_t alen, blen;
	char err[512], sql[64], path[PATH_MAX + 16];
	int future = (int)store_sqlite_migrations_count + 1;
	sqlite3 *db;

	make_v1(dbpath, wal);
	db = raw_open(dbpath, SQLITE_OPEN_READWRITE);
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", future);
	raw_exec(db, sql);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	snprintf(path, sizeof(path), "%s-wal", dbpath);
	ck_assert(!exists(path)); /* checkpointed on close: the file is the whole database */
	a = slurp(dbpath, &alen);

	ck_assert_int_eq(open_at(dbpath, false, &s, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_null(s);
	ck_assert_msg(strstr(err, "newer") != NULL && strstr(err, dbpath) != NULL, "%s", err);
	snprintf(sql, sizeof(sql), "version %d", future);
	ck_assert_msg(strstr(err, sql) != NULL, "%s", err);
	/* read-only handles (komerce-hookctl) refuse it too */
	ck_assert_int_eq(open_at(dbpath, true, &s, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_null(s);

	b = slurp(dbpath, &blen);
	ck_assert_uint_eq(blen, alen);
	ck_assert_msg(memcmp(a, b, alen) == 0, "the newer database was modified");
	snprintf(path, sizeof(path), "%s.v%d.bak", dbpath, future);
	ck_assert(!exists(path));
	ck_assert(!exists(bakpath));
	free(a);
	free(b);
}

START_TEST(test_future_database_refused_untouched_wal)
{
	assert_future_untouched(true);
}
END_TEST

START_TEST(test_future_database_refused_untouched_rollback_journal)
{
	assert_future_untouched(false);
}
END_TEST

START_TEST(test_no_backup_no_migration)
{
	struct store *s = NULL;
	char err[512], *before, *after, tmp[PATH_MAX + 32];

	/* Something is in the way of the backup (a directory at its name): the start is refused
	 * with the reason, and the database stays at version 1 with its data. */
	make_v1(dbpath, true);
	before = dump_v1(dbpath);
	ck_assert_int_eq(mkdir(bakpath, 0700), 0);
	ck_assert_int_lt(open_at(dbpath, false, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	ck_assert_msg(strstr(err, "back up") != NULL && strstr(err, "nothing was changed"), "%s",
		      err);
	ck_assert_int_eq(raw_int(dbpath, "PRAGMA user_version"), 1);
	after = dump_v1(dbpath);
	ck_assert_str_eq(after, before);
	snprintf(tmp, sizeof(tmp), "%s.new", bakpath);
	ck_assert(!exists(tmp));
	free(before);
	free(after);
}
END_TEST

START_TEST(test_failed_migration_rolls_back_backup_kept)
{
	struct store *s = NULL;
	char err[512], want[32], *before, *after;
	sqlite3 *db;

	/* The last migration fails half-way (its table already exists): nothing of it remains,
	 * the database is at the version before it (earlier migrations committed) with its
	 * data, and the backup taken before any of them is kept. */
	make_v1(dbpath, true);
	db = raw_open(dbpath, SQLITE_OPEN_READWRITE);
	raw_exec(db, "CREATE TABLE upgrade_marker (x)");
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	before = dump_v1(dbpath);
	ck_assert_int_lt(open_at(dbpath, false, &s, err, sizeof(err)), 0);
	ck_assert_ptr_null(s);
	snprintf(want, sizeof(want), "migration %zu", store_sqlite_migrations_count);
	ck_assert_msg(strstr(err, want) != NULL, "%s", err);
	ck_assert_int_eq(raw_int(dbpath, "PRAGMA user_version"),
			 (int)store_sqlite_migrations_count - 1);
	ck_assert_int_eq(raw_int(dbpath, "SELECT count(*) FROM pragma_table_info('payments') "
					 "WHERE name = 'note'"),
			 0);
	after = dump_v1(dbpath);
	ck_assert_str_eq(after, before);
	ck_assert_int_eq(raw_int(bakpath, "PRAGMA user_version"), 1);
	assert_chain(bakpath, FX_EVENTS);
	free(before);
	free(after);
}
END_TEST

static Suite *migrate_suite(void)
{
	Suite *s = suite_create("migrate");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_v1_migrated_data_intact_backup_kept);
	tcase_add_test(tc, test_current_database_not_backed_up_again);
	tcase_add_test(tc, test_new_database_has_no_backup);
	tcase_add_test(tc, test_stale_backup_replaced);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_future_database_refused_untouched_wal);
	tcase_add_test(tc, test_future_database_refused_untouched_rollback_journal);
	tcase_add_test(tc, test_no_backup_no_migration);
	tcase_add_test(tc, test_failed_migration_rolls_back_backup_kept);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(migrate_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
