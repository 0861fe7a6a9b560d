/* Check suite for src/store_sqlite_walbuf.c, the writer's WAL-buffering VFS: every commit made
 * through it is seen at once, whole, by a connection of the default VFS (small, large, spilled
 * and rolled-back transactions, across a WAL restart), the file stays intact; a write that fails
 * underneath (RLIMIT_FSIZE) fails its commit and leaves the data as before; the store opens the
 * writer through it with synchronous = FULL only. */
#include "store.h"
#include "store_sqlite_int.h"
#include "store_sqlite_walbuf.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_VFS "test-walbuf"

static char tmpdir[PATH_MAX];
static char dbpath[PATH_MAX];

static void setup(void)
{
	int r;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_walbuf.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbpath, sizeof(dbpath), "%s/t.db", tmpdir);
	r = store_sqlite_walbuf_register(TEST_VFS, NULL);
	ck_assert(r == 0 || r == -EEXIST); /* -EEXIST: a test before this one in the process */
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static sqlite3 *open_db(const char *vfs)
{
	sqlite3 *db = NULL;

	ck_assert_int_eq(
		sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
		SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	return db;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg != NULL ? msg : "?");
}

static long long query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	long long v;

	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Inserts n rows of batch `batch` (about 1 KiB each, text that says which row it is) in
 * whatever transaction db is in; returns sqlite3_exec's code. */
static int insert_rows(sqlite3 *db, int batch, int n)
{
	char sql[512];

	snprintf(sql, sizeof(sql),
		 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
		 "INSERT INTO t(batch, seq, v) SELECT %d, x, printf('%d-%%01000d', x) FROM c",
		 n, batch, batch);
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Every row another connection can see is whole: its text matches its batch and seq. */
static void assert_rows(sqlite3 *reader, long long expected)
{
	ck_assert_int_eq(query_int(reader, "SELECT count(*) FROM t"), expected);
	ck_assert_int_eq(query_int(reader, "SELECT count(*) FROM t WHERE v IS NOT "
					   "printf('%d-%01000d', batch, seq)"),
			 0);
}

START_TEST(test_commits_seen_whole)
{
	/* sizes around the buffer (~124 KiB, ~120 rows): one row, a few, just under, far over */
	static const int sizes[] = {1, 7, 100, 125, 400, 1, 2000, 3};
	sqlite3 *w = open_db(TEST_VFS), *r;
	long long total = 0;
	size_t i;

	/* a tiny cache makes large transactions spill frames before they commit */
	exec_ok(w, "PRAGMA cache_size = 16; CREATE TABLE t(id INTEGER PRIMARY KEY, batch INTEGER, "
		   "seq INTEGER, v TEXT); CREATE INDEX t_v ON t(v)");
	r = open_db(NULL);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		exec_ok(w, "BEGIN");
		ck_assert_int_eq(insert_rows(w, (int)i, sizes[i]), SQLITE_OK);
		exec_ok(w, "COMMIT");
		total += sizes[i];
		assert_rows(r, total);
		if (i == 3) /* the next commits restart the WAL from its start */
			exec_ok(w, "PRAGMA wal_checkpoint(TRUNCATE)");
	}
	/* a spilled transaction rolled back, then a small one over the frames it left */
	exec_ok(w, "BEGIN");
	ck_assert_int_eq(insert_rows(w, 100, 600), SQLITE_OK);
	exec_ok(w, "ROLLBACK");
	assert_rows(r, total);
	exec_ok(w, "BEGIN");
	ck_assert_int_eq(insert_rows(w, 101, 2), SQLITE_OK);
	exec_ok(w, "COMMIT");
	assert_rows(r, total + 2);
	ck_assert_int_eq(sqlite3_close(w), SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(r), SQLITE_OK);

	r = open_db(NULL);
	assert_rows(r, total + 2);
	ck_assert_int_eq(query_int(r, "SELECT count(*) FROM pragma_integrity_check "
				      "WHERE integrity_check != 'ok'"),
			 0);
	ck_assert_int_eq(sqlite3_close(r), SQLITE_OK);
}
END_TEST

START_TEST(test_rollback_then_other_writer)
{
	sqlite3 *w = open_db(TEST_VFS), *o, *r;

	exec_ok(w, "PRAGMA cache_size = 16; CREATE TABLE t(id INTEGER PRIMARY KEY, batch INTEGER, "
		   "seq INTEGER, v TEXT)");
	ck_assert_int_eq(insert_rows(w, 1, 10), SQLITE_OK);
	/* the writer spills a transaction's frames into an empty WAL and rolls it back (reloading
	 * its pages from the database file, so nothing reads the WAL)... */
	exec_ok(w, "PRAGMA wal_checkpoint(TRUNCATE)");
	exec_ok(w, "BEGIN");
	ck_assert_int_eq(insert_rows(w, 2, 600), SQLITE_OK);
	exec_ok(w, "ROLLBACK");
	/* ...then another connection (komerce-hookctl, say) commits as many frames at the same
	 * offsets of the WAL, and the writer goes on */
	o = open_db(NULL);
	ck_assert_int_eq(insert_rows(o, 3, 600), SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(o), SQLITE_OK);
	ck_assert_int_eq(insert_rows(w, 4, 3), SQLITE_OK);
	r = open_db(NULL);
	assert_rows(r, 613);
	ck_assert_int_eq(query_int(r, "SELECT count(*) FROM t WHERE batch = 3"), 600);
	ck_assert_int_eq(query_int(r, "SELECT count(*) FROM pragma_integrity_check "
				      "WHERE integrity_check != 'ok'"),
			 0);
	ck_assert_int_eq(sqlite3_close(w), SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(r), SQLITE_OK);
}
END_TEST

START_TEST(test_failed_write_fails_commit)
{
	sqlite3 *w = open_db(TEST_VFS), *r;
	struct rlimit old, lim;
	struct stat st;
	int rc;

	exec_ok(w, "CREATE TABLE t(id INTEGER PRIMARY KEY, batch INTEGER, seq INTEGER, v TEXT)");
	ck_assert_int_eq(insert_rows(w, 1, 10), SQLITE_OK);
	exec_ok(w, "PRAGMA wal_checkpoint(TRUNCATE)");
	r = open_db(NULL);
	assert_rows(r, 10);

	/* no file of this process may grow past 256 KiB beyond the database: a 2 MiB transaction's
	 * WAL write fails underneath the buffer (EFBIG; the signal is ignored) */
	ck_assert_int_eq(stat(dbpath, &st), 0);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 256 * 1024;
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	exec_ok(w, "BEGIN");
	rc = insert_rows(w, 2, 2000);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(w, "COMMIT", NULL, NULL, NULL);
	ck_assert_msg(rc == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR,
		      "the commit should fail: %d %s", rc, sqlite3_errmsg(w));
	if (!sqlite3_get_autocommit(w))
		exec_ok(w, "ROLLBACK");
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_rows(r, 10);

	/* the connection goes on: the next commit is stored and seen */
	ck_assert_int_eq(insert_rows(w, 3, 5), SQLITE_OK);
	assert_rows(r, 15);
	ck_assert_int_eq(sqlite3_close(w), SQLITE_OK);
	ck_assert_int_eq(query_int(r, "SELECT count(*) FROM pragma_integrity_check "
				      "WHERE integrity_check != 'ok'"),
			 0);
	ck_assert_int_eq(sqlite3_close(r), SQLITE_OK);
}
END_TEST

/* The VFS the store opened its connection with (SQLite answers this itself). */
static const char *store_vfs(enum store_mode mode, bool full)
{
	struct store_opts o = {
		.path = dbpath,
		.mode = STORE_MODE_WRITER,
		.synchronous_full = full,
		.busy_timeout_ms = 5000,
		.grace_seconds = 60,
	};
	struct store *s = NULL, *like = NULL;
	sqlite3_vfs *vfs = NULL;
	static char name[64];
	char err[256];

	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	if (mode != STORE_MODE_WRITER)
		ck_assert_msg(store_open_like(s, mode, &like, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(sqlite3_file_control(store_sqlite_db(like != NULL ? like : s), "main",
					      SQLITE_FCNTL_VFS_POINTER, &vfs),
			 SQLITE_OK);
	snprintf(name, sizeof(name), "%s", vfs->zName);
	store_close(like);
	store_close(s);
	return name;
}

START_TEST(test_store_writer_full_only)
{
	ck_assert_str_eq(store_vfs(STORE_MODE_WRITER, true), STORE_SQLITE_WALBUF_VFS);
	ck_assert_str_ne(store_vfs(STORE_MODE_WRITER, false), STORE_SQLITE_WALBUF_VFS);
	ck_assert_str_ne(store_vfs(STORE_MODE_READER, true), STORE_SQLITE_WALBUF_VFS);
}
END_TEST

static Suite *walbuf_suite(void)
{
	Suite *s = suite_create("store_sqlite_walbuf");
	TCase *core = tcase_create("core"), *errors = tcase_create("errors");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_add_test(core, test_commits_seen_whole);
	tcase_add_test(core, test_rollback_then_other_writer);
	tcase_add_test(core, test_store_writer_full_only);
	tcase_set_timeout(core, 60);
	suite_add_tcase(s, core);
	tcase_add_checked_fixture(errors, setup, teardown);
	tcase_add_test(errors, test_failed_write_fails_commit);
	tcase_set_timeout(errors, 60);
	suite_add_tcase(s, errors);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(walbuf_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
