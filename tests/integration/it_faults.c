/* Integration: storage faults against the real komerce-hookd. A database on a small tmpfs that
 * fills up (503, never 200, and recovery by itself when space returns), a database already in
 * use by another daemon, and a corrupted database file (a clear line, a non-zero exit, the file
 * left as it was). The tmpfs case needs root; without it the suite reports SKIP (exit 77). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <sqlite3.h>

#include "harness.h"
#include "store.h"

static struct hk_daemon d, d2;
static char mnt[300];
static bool mounted;
static int skipped;

static void teardown(void)
{
	if (d.pid > 0)
		hk_daemon_stop(&d, SIGKILL);
	if (d2.pid > 0)
		hk_daemon_stop(&d2, SIGKILL);
	if (mounted && umount2(mnt, MNT_DETACH) != 0)
		fprintf(stderr, "umount %s: %m\n", mnt);
	mounted = false;
	hk_daemon_cleanup(&d);
	hk_daemon_cleanup(&d2);
	memset(&d, 0, sizeof(d));
	memset(&d2, 0, sizeof(d2));
}

static bool daemon_alive(struct hk_daemon *h)
{
	int status;

	return h->pid > 0 && waitpid(h->pid, &status, WNOHANG) == 0;
}

static long healthz(const struct hk_daemon *h)
{
	struct hk_reply r;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/healthz", h->admin_port);
	return hk_request("GET", url, NULL, NULL, 0, 5000, &r);
}

static int count_event(void *arg, const struct store_event *e)
{
	(void)e;
	(*(long *)arg)++;
	return 0;
}

/* Events stored for each id; ck_asserts that every one is there exactly once and that the
 * hash chain verifies. */
static void assert_each_once(const char *db, char (*ids)[64], int n)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	int64_t checked = 0, bad = 0;
	char err[256], why[256] = "";

	hk_store_target(&o, db);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	for (int i = 0; i < n; i++) {
		struct store_event_filter f = {.payment_id = ids[i], .status = PAYMENT_UNKNOWN};
		long found = 0;

		ck_assert_int_eq(store_events_query(s, &f, count_event, &found), 0);
		ck_assert_msg(found == 1, "acknowledged %s is stored %ld times", ids[i], found);
	}
	ck_assert_msg(store_verify(s, &checked, &bad, why, sizeof(why)) == 0,
		      "hash chain broken at %lld: %s", (long long)bad, why);
	store_close(s);
}

/* ---- disk full ---- */

#define PAD_BYTES 48000
#define MAX_POSTS 2000

static long post_unique(const char *prefix, int i, char *ret_id, size_t id_len)
{
	static char body[PAD_BYTES + 256];
	struct hk_reply r;
	int n;

	snprintf(ret_id, id_len, "%s-%05d", prefix, i);
	n = snprintf(body, sizeof(body),
		     "{\"payment_id\":\"%s\",\"order_id\":\"KOM-FULL\",\"status\":\"PAID\","
		     "\"amount\":150000,\"pad\":\"",
		     ret_id);
	/* Varied bytes so nothing below SQLite could shrink them. */
	for (int k = 0; k < PAD_BYTES; k++)
		body[n + k] = "abcdefghijklmnopqrstuvwxyz0123456789"[(k * 7 + i * 13) % 36];
	memcpy(body + n + PAD_BYTES, "\"}", 3);
	return hk_post_callback(&d, body, HK_CALLBACK_KEY, &r);
}

START_TEST(disk_full_gives_503_and_recovers)
{
	static char acked[MAX_POSTS][64];
	char first_failed[64] = "", id[64];
	int n_acked = 0, n_503 = 0, late_200 = 0, i;
	long long deadline;
	long st = 0;

	hk_daemon_init(&d, NULL);
	snprintf(mnt, sizeof(mnt), "%s/fs", d.dir);
	ck_assert_int_eq(mkdir(mnt, 0700), 0);
	if (geteuid() != 0) {
		fprintf(stderr, "SKIP disk_full: needs root to mount a tmpfs on %s\n", mnt);
		skipped++;
		return;
	}
	ck_assert_msg(mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=6m,mode=0700") == 0,
		      "mount -t tmpfs -o size=6m tmpfs %s: %m (running as root)", mnt);
	mounted = true;
	snprintf(d.db, sizeof(d.db), "%s/events.db", mnt);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not start on %s (log: %s)", d.db,
		      d.log);

	/* Fill it: replies turn 503 and stay 503 while the disk is full. */
	for (i = 0; i < MAX_POSTS && n_503 < 20; i++) {
		st = post_unique("KOMPAY-FULL", i, id, sizeof(id));
		if (st == 200) {
			if (n_503 > 0)
				late_200++;
			snprintf(acked[n_acked++], sizeof(acked[0]), "%s", id);
		} else if (st == 503) {
			if (n_503++ == 0)
				snprintf(first_failed, sizeof(first_failed), "%s", id);
		} else {
			ck_abort_msg("callback %d: status %ld (expected 200 or 503)", i, st);
		}
	}
	fprintf(stderr, "disk full: %d acknowledged, then %d times 503 (first %s)\n", n_acked,
		n_503, first_failed);
	ck_assert_msg(n_503 > 0, "the 6 MiB filesystem never filled after %d callbacks", i);
	ck_assert_int_gt(n_acked, 0);
	ck_assert_msg(late_200 == 0, "%d callbacks got 200 after the first 503 on a full disk",
		      late_200);
	ck_assert_msg(daemon_alive(&d), "the daemon died on a full disk (log: %s)", d.log);
	ck_assert_int_eq(healthz(&d), 200);
	ck_assert_msg(hk_log_contains(&d, "disk_full"), "no disk_full line in %s", d.log);
	ck_assert_int_eq(hk_count(&d, "events"), n_acked);
	assert_each_once(d.db, acked, n_acked);

	/* Space comes back: the daemon recovers by itself, the 503'd callback is retried. */
	ck_assert_msg(mount("tmpfs", mnt, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, "size=64m") == 0,
		      "remount %s: %m", mnt);
	deadline = hk_mono_ms() + 15000;
	do {
		struct hk_reply r;
		char body[256];

		snprintf(body, sizeof(body),
			 "{\"payment_id\":\"%s\",\"order_id\":\"KOM-FULL\",\"status\":\"PAID\","
			 "\"amount\":150000}",
			 first_failed);
		st = hk_post_callback(&d, body, HK_CALLBACK_KEY, &r);
		if (st == 200) {
			ck_assert_msg(strstr(r.body, "\"duplicate\":false") != NULL,
				      "a callback answered 503 had been stored: %s", r.body);
			break;
		}
		hk_sleep_ms(200);
	} while (hk_mono_ms() < deadline);
	ck_assert_msg(st == 200, "no 200 within 15 s after space came back (last %ld)", st);
	snprintf(acked[n_acked++], sizeof(acked[0]), "%s", first_failed);
	for (int k = 0; k < 5; k++) {
		ck_assert_int_eq(post_unique("KOMPAY-AFTER", k, id, sizeof(id)), 200);
		snprintf(acked[n_acked++], sizeof(acked[0]), "%s", id);
	}
	ck_assert_int_eq(hk_count(&d, "events"), n_acked);
	assert_each_once(d.db, acked, n_acked);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

/* ---- start-up refusals ---- */

static void write_conf(const char *path, const char *db)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fprintf(f,
		"[server]\nlisten = 127.0.0.1:%u\n[admin]\nlisten = 127.0.0.1:%u\ntoken = %s\n"
		"[komerce]\napi_key = %s\ncallback_keys = %s\n[store]\npath = %s\n",
		hk_free_port(), hk_free_port(), HK_ADMIN_TOKEN, HK_API_KEY, HK_CALLBACK_KEY, db);
	ck_assert_int_eq(fclose(f), 0);
}

/* Runs the daemon on conf until it exits by itself (it must, within 15 s). Returns its exit
 * code; its stderr goes to log. */
static int run_to_exit(const char *conf, const char *log)
{
	const char *bin = getenv("HOOKD_BIN") ? getenv("HOOKD_BIN") : "build/komerce-hookd";
	long long deadline = hk_mono_ms() + 15000;
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		execl(bin, bin, "-c", conf, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (hk_mono_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			ck_abort_msg("komerce-hookd kept running on a database it should refuse");
		}
		hk_sleep_ms(20);
	}
	ck_assert_msg(WIFEXITED(status), "komerce-hookd died by signal %d",
		      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return WEXITSTATUS(status);
}

static void print_file(const char *what, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024];

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL)
		fprintf(stderr, "%s: %s", what, line);
	fclose(f);
}

START_TEST(database_in_use_is_refused)
{
	char conf[320], log[320];
	struct hk_reply r;
	int code;

	hk_daemon_init(&d, NULL);
	ck_assert_msg(hk_daemon_start(&d) == 0, "first daemon did not start (log: %s)", d.log);
	ck_assert_int_eq(hk_post_callback(&d,
					  "{\"payment_id\":\"KOMPAY-LOCK-1\",\"status\":\"PAID\"}",
					  HK_CALLBACK_KEY, &r),
			 200);

	snprintf(conf, sizeof(conf), "%s/second.conf", d.dir);
	snprintf(log, sizeof(log), "%s/second.log", d.dir);
	write_conf(conf, d.db);
	code = run_to_exit(conf, log);
	print_file("second daemon", log);
	ck_assert_msg(code != 0, "a second daemon on the same database exited 0");
	ck_assert_msg(hk_file_contains(log, "in use"), "no \"in use\" line in %s", log);

	/* The first one is untouched and still stores. */
	ck_assert(daemon_alive(&d));
	ck_assert_int_eq(hk_post_callback(&d,
					  "{\"payment_id\":\"KOMPAY-LOCK-2\",\"status\":\"PAID\"}",
					  HK_CALLBACK_KEY, &r),
			 200);
	ck_assert_int_eq(hk_count(&d, "events"), 2);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}
END_TEST

static void read_all(const char *path, unsigned char *buf, size_t cap, size_t *ret_len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	ck_assert_msg(fd >= 0, "open %s: %m", path);
	n = read(fd, buf, cap);
	ck_assert_int_ge(n, 0);
	*ret_len = (size_t)n;
	close(fd);
}

/* Writes `file` to the database path, starts the daemon on it, and checks the refusal. */
static void assert_refused(const unsigned char *file, size_t len, const char *needle)
{
	static unsigned char after[65536];
	char conf[320], log[320];
	size_t after_len = 0;
	int fd, code;

	fd = open(d.db, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, file, len), (ssize_t)len);
	close(fd);
	snprintf(conf, sizeof(conf), "%s/corrupt.conf", d.dir);
	snprintf(log, sizeof(log), "%s/corrupt.log", d.dir);
	write_conf(conf, d.db);
	code = run_to_exit(conf, log);
	print_file("daemon", log);
	ck_assert_msg(code != 0, "the daemon started on a corrupted database");
	ck_assert_msg(hk_file_contains(log, d.db) && hk_file_contains(log, needle),
		      "no line naming %s and saying \"%s\" in %s", d.db, needle, log);
	read_all(d.db, after, sizeof(after), &after_len);
	ck_assert_msg(after_len == len && memcmp(after, file, len) == 0,
		      "the corrupted database was modified or replaced (%zu bytes now, %zu before)",
		      after_len, len);
}

START_TEST(random_bytes_database_is_refused)
{
	unsigned char junk[4096];

	hk_daemon_init(&d, NULL);
	ck_assert_int_eq(getrandom(junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_refused(junk, sizeof(junk), "not a database");
}
END_TEST

START_TEST(damaged_pages_database_is_refused)
{
	static unsigned char db[65536];
	size_t len = 0;
	struct hk_reply r;
	char wal[320];

	/* A real database, cleanly closed, then everything after the 100-byte header of page 1
	 * overwritten: the header still says SQLite, the schema is garbage. */
	hk_daemon_init(&d, NULL);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not start (log: %s)", d.log);
	ck_assert_int_eq(hk_post_callback(&d,
					  "{\"payment_id\":\"KOMPAY-CORRUPT\",\"status\":\"PAID\"}",
					  HK_CALLBACK_KEY, &r),
			 200);
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	snprintf(wal, sizeof(wal), "%s-wal", d.db);
	unlink(wal);
	read_all(d.db, db, sizeof(db), &len);
	ck_assert_uint_gt(len, 4096);
	ck_assert_int_eq(getrandom(db + 100, len - 100, 0), (ssize_t)(len - 100));
	assert_refused(db, len, "malformed");
}
END_TEST

/* ---- shutdown with a stalled writer (issue 19.4) ---- */

struct poster {
	pthread_t t;
	int i;
	long status;
	char retry_after[32];
};

static void *poster_main(void *arg)
{
	struct poster *p = arg;
	struct hk_reply r;
	char body[160];
	const char *ra;

	snprintf(body, sizeof(body), "{\"payment_id\":\"KOMPAY-STALL-%d\",\"status\":\"PAID\"}",
		 p->i);
	p->status = hk_post_callback(&d, body, HK_CALLBACK_KEY, &r);
	ra = strcasestr(r.headers, "Retry-After:");
	if (ra != NULL)
		snprintf(p->retry_after, sizeof(p->retry_after), "%.*s", (int)strcspn(ra, "\r\n"),
			 ra);
	return NULL;
}

START_TEST(sigterm_with_stalled_writer_answers_503)
{
	struct poster p[3];
	sqlite3 *db;
	int code;

	/* One callback per transaction, and a writer that waits 2 s for a lock another process
	 * holds: at SIGTERM three callbacks are still waiting for their commit when the 1 s
	 * drain ends. */
	hk_daemon_init(&d, "[store]\nbatch_max = 1\nbusy_timeout_ms = 2000\n"
			   "[server]\ndrain_timeout = 1\n");
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not start (log: %s)", d.log);
	ck_assert_int_eq(sqlite3_open(d.db, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	for (int i = 0; i < 3; i++) {
		p[i] = (struct poster){.i = i};
		ck_assert_int_eq(pthread_create(&p[i].t, NULL, poster_main, &p[i]), 0);
	}
	hk_sleep_ms(500);
	code = hk_daemon_stop(&d, SIGTERM);
	for (int i = 0; i < 3; i++)
		pthread_join(p[i].t, NULL);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	print_file("daemon", d.log);
	ck_assert_msg(code == 0, "exit status %d after SIGTERM with a stalled writer", code);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(p[i].status == 503, "callback %d answered %ld", i, p[i].status);
		ck_assert_msg(p[i].retry_after[0] != '\0', "503 without Retry-After");
	}
	/* Nothing was acknowledged, and nothing was stored while the lock was held. */
	ck_assert_int_eq(hk_count(&d, "events"), 0);
	ck_assert(hk_log_contains(&d, "stopped cleanly"));
}
END_TEST

static Suite *faults_suite(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("disk");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, disk_full_gives_503_and_recovers);
	suite_add_tcase(s, tc);

	tc = tcase_create("start");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, database_in_use_is_refused);
	tcase_add_test(tc, random_bytes_database_is_refused);
	tcase_add_test(tc, damaged_pages_database_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("shutdown");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, sigterm_with_stalled_writer_answers_503);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(faults_suite());
	int failed;

	/* No fork: a failed assertion still runs the teardown (kill, umount, rm). */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (failed == 0 && skipped > 0) {
		fprintf(stderr, "%d case(s) skipped: reporting SKIP\n", skipped);
		return 77;
	}
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
