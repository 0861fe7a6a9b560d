/* Integration (PostgreSQL only): two real komerce-hookd instances on one database. Callbacks
 * spread over both land in one hash chain; the same signed callback sent to both at the same
 * moment is one event with a receipt from each; kill -9 of one instance under load loses no
 * acknowledged callback and stores none twice; the reconciler's leader killed is replaced
 * within 15 s and no payment is polled twice within 3 s across the takeover (komerce-sim's poll
 * log); the forwarder's leader killed mid-stream: every event arrives, in order per payment;
 * PostgreSQL stopped for 5 s under load: 503s, never a 200 for anything not stored, recovery
 * without a restart. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "harness.h"
#include "pgtest.h"
#include "store.h"
#include "util.h"

#define RATE	     5 /* reconcile max_requests_per_second */
#define TAKEOVER_MS  15000
#define MIN_POLL_GAP 3000
#define SINK_SECRET  "cluster-sink-secret-0123456789"
#define NO_RECONCILE "[reconcile]\nenabled = false\n"
#define MAX_ACKED    20000

static struct hk_daemon a, b;
static struct hk_sim sim;
static bool sim_up;

static void start_two(const char *extra)
{
	char ea[2048], eb[2048];

	ck_assert_msg(hk_backend_pg(), "it-cluster runs with HK_BACKEND=postgresql");
	snprintf(ea, sizeof(ea), "[cluster]\ninstance = a\n%s", extra != NULL ? extra : "");
	snprintf(eb, sizeof(eb), "[cluster]\ninstance = b\n%s", extra != NULL ? extra : "");
	hk_daemon_init(&a, ea);
	hk_daemon_init_peer(&b, &a, eb);
	ck_assert_msg(hk_daemon_start(&a) == 0, "instance a did not become ready (log: %s)", a.log);
	ck_assert_msg(hk_daemon_start(&b) == 0, "instance b did not become ready (log: %s)", b.log);
}

static void teardown(void)
{
	/* b first: a owns the database, dropped with a */
	hk_daemon_cleanup(&b);
	hk_daemon_cleanup(&a);
	if (sim_up) {
		hk_sim_stop(&sim);
		sim_up = false;
	}
}

/* ---- small helpers ---- */

static void body_for(char *out, size_t n, const char *pid, const char *status)
{
	snprintf(out, n,
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"%s\","
		 "\"amount\":100000,\"payment_type\":\"bank_transfer\",\"bank_code\":\"BCA\"}",
		 pid, pid, status);
}

static long post(const struct hk_daemon *d, const char *pid, const char *status, struct hk_reply *r)
{
	char body[512];

	body_for(body, sizeof(body), pid, status);
	return hk_post_callback(d, body, HK_CALLBACK_KEY, r);
}

static long long event_id_of(const struct hk_reply *r)
{
	cJSON *j = cJSON_Parse(r->body);
	long long id = -1;

	if (cJSON_IsNumber(cJSON_GetObjectItem(j, "event_id")))
		id = (long long)cJSON_GetObjectItem(j, "event_id")->valuedouble;
	cJSON_Delete(j);
	return id;
}

/* GET /readyz of d: its status code, and its roles as "reconcile,forward:x" into roles. */
static long readyz(const struct hk_daemon *d, char *roles, size_t n)
{
	char url[128];
	struct hk_reply r;
	cJSON *j, *e;
	size_t o = 0;
	long st;

	roles[0] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/readyz", d->admin_port);
	st = hk_request("GET", url, NULL, NULL, 0, 3000, &r);
	j = cJSON_Parse(r.body);
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "roles"))
	{
		if (cJSON_IsString(e))
			o += (size_t)snprintf(roles + o, n - o, "%s%s", o > 0 ? "," : "",
					      e->valuestring);
	}
	cJSON_Delete(j);
	return st;
}

static bool leads(const struct hk_daemon *d, const char *job)
{
	char roles[256], want[64];

	if (d->pid <= 0 || readyz(d, roles, sizeof(roles)) != 200)
		return false;
	snprintf(want, sizeof(want), ",%s,", job);
	{
		char padded[300];

		snprintf(padded, sizeof(padded), ",%s,", roles);
		return strstr(padded, want) != NULL;
	}
}

/* The value of a sample in d's /metrics, -1 when absent. */
static double metric(const struct hk_daemon *d, const char *sample)
{
	char url[128];
	static struct hk_reply r;
	const char *p;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", d->admin_port);
	if (hk_request("GET", url, NULL, NULL, 0, 3000, &r) != 200)
		return -1;
	for (p = strstr(r.body, sample); p != NULL; p = strstr(p + 1, sample))
		if ((p == r.body || p[-1] == '\n') && p[strlen(sample)] == ' ')
			return atof(p + strlen(sample) + 1);
	return -1;
}

struct job_wait {
	const struct hk_daemon *d;
	const char *job;
};

static bool job_led(void *arg)
{
	struct job_wait *w = arg;

	return leads(w->d, w->job);
}

/* Which of a and b leads job (waiting up to 10 s for an election); fails when both do. */
static struct hk_daemon *leader_of(const char *job)
{
	for (int i = 0; i < 100; i++) {
		bool la = leads(&a, job), lb = leads(&b, job);

		ck_assert_msg(!(la && lb), "both instances lead %s", job);
		if (la)
			return &a;
		if (lb)
			return &b;
		usleep(100000);
	}
	ck_abort_msg("nobody leads %s", job);
	return NULL;
}

static struct store *open_ro(void)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[256];

	hk_store_target(&o, a.db);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

static void assert_chain(int64_t want_min)
{
	struct store *s = open_ro();
	int64_t checked = 0, bad = 0;
	char why[256] = "";

	ck_assert_msg(store_verify(s, &checked, &bad, why, sizeof(why)) == 0,
		      "chain broken at %lld: %s", (long long)bad, why);
	ck_assert_int_ge(checked, want_min);
	ck_assert_int_eq(store_orphans(s, &bad, why, sizeof(why)), 0);
	store_close(s);
}

/* ---- one chain, two instances ---- */

START_TEST(both_serve_one_chain)
{
	struct hk_reply r1;
	char n1[16], n2[16];
	long long ids[40];

	start_two(NO_RECONCILE);
	for (int i = 0; i < 40; i++) {
		char pid[32];

		snprintf(pid, sizeof(pid), "KOMPAY-SPREAD-%d", i);
		ck_assert_int_eq(post(i % 2 == 0 ? &a : &b, pid, "PAID", &r1), 200);
		ids[i] = event_id_of(&r1);
		ck_assert_int_eq(ids[i], i + 1); /* one chain: the ids follow each other */
	}
	ck_assert_int_eq(hk_count(&a, "events"), 40);
	/* the receipts name the instance that took each delivery */
	ck_assert_int_eq(hk_db_exec(&a, "SELECT count(*) FROM receipts WHERE instance = 'a'", n1,
				    sizeof(n1)),
			 0);
	ck_assert_int_eq(hk_db_exec(&a, "SELECT count(*) FROM receipts WHERE instance = 'b'", n2,
				    sizeof(n2)),
			 0);
	ck_assert_str_eq(n1, "20");
	ck_assert_str_eq(n2, "20");
	assert_chain(40);
}
END_TEST

struct same {
	const struct hk_daemon *d;
	pthread_barrier_t *go;
	struct hk_reply r;
	long status;
};

static void *post_same(void *arg)
{
	struct same *x = arg;

	pthread_barrier_wait(x->go);
	x->status = post(x->d, "KOMPAY-TWICE", "PAID", &x->r);
	return NULL;
}

START_TEST(same_callback_to_both_at_once)
{
	pthread_barrier_t go;
	char n[16];

	start_two(NO_RECONCILE);
	for (int round = 0; round < 20; round++) {
		struct same xa = {.d = &a, .go = &go}, xb = {.d = &b, .go = &go};
		pthread_t ta, tb;
		char pid_sql[160];

		pthread_barrier_init(&go, NULL, 2);
		ck_assert_int_eq(pthread_create(&ta, NULL, post_same, &xa), 0);
		ck_assert_int_eq(pthread_create(&tb, NULL, post_same, &xb), 0);
		pthread_join(ta, NULL);
		pthread_join(tb, NULL);
		pthread_barrier_destroy(&go);
		ck_assert_int_eq(xa.status, 200);
		ck_assert_int_eq(xb.status, 200);
		/* one event: both replies name it, exactly one of them as new */
		ck_assert_int_eq(event_id_of(&xa.r), 1);
		ck_assert_int_eq(event_id_of(&xb.r), 1);
		ck_assert_int_eq((strstr(xa.r.body, "\"duplicate\":false") != NULL) +
					 (strstr(xb.r.body, "\"duplicate\":false") != NULL),
				 round == 0 ? 1 : 0);
		snprintf(pid_sql, sizeof(pid_sql),
			 "SELECT count(DISTINCT instance) FROM receipts WHERE event_id = 1");
		ck_assert_int_eq(hk_db_exec(&a, pid_sql, n, sizeof(n)), 0);
		ck_assert_str_eq(n, "2"); /* a receipt on both */
	}
	ck_assert_int_eq(hk_count(&a, "events"), 1);
	ck_assert_int_eq(hk_count(&a, "receipts"), 40);
	assert_chain(1);
}
END_TEST

START_TEST(one_leader_per_job)
{
	char extra[512];

	snprintf(extra, sizeof(extra),
		 "[komerce]\nbase_url = http://127.0.0.1:1/user\n"
		 "[sink.x]\ntype = http\nurl = http://127.0.0.1:1/\nsecret = %s\n"
		 "[sink.y]\ntype = http\nurl = http://127.0.0.1:1/\nsecret = %s\n",
		 SINK_SECRET, SINK_SECRET);
	start_two(extra);
	for (int i = 0; i < 3; i++) {
		static const char *const jobs[] = {"reconcile", "forward:x", "forward:y"};
		struct hk_daemon *l = leader_of(jobs[i]);
		struct hk_daemon *f = l == &a ? &b : &a;
		char sample[64];

		snprintf(sample, sizeof(sample), "hookd_leader{job=\"%s\"}", jobs[i]);
		ck_assert(metric(l, sample) == 1);
		ck_assert(metric(f, sample) == 0);
	}
	/* a clean stop hands every job over */
	{
		struct hk_daemon *l = leader_of("reconcile");
		struct hk_daemon *f = l == &a ? &b : &a;
		struct job_wait w = {f, "reconcile"};

		ck_assert_int_eq(hk_daemon_stop(l, SIGTERM), 0);
		ck_assert_msg(hk_wait_until(job_led, &w, 5000), "no handover after SIGTERM");
		w.job = "forward:x";
		ck_assert(hk_wait_until(job_led, &w, 5000));
		w.job = "forward:y";
		ck_assert(hk_wait_until(job_led, &w, 5000));
		ck_assert(hk_log_contains(l, "leadership given up job=reconcile"));
	}
}
END_TEST

/* ---- load ---- */

#define POSTERS 6

struct load {
	int stop;   /* atomic */
	int only_b; /* atomic: a is gone, post to b only */
	pthread_mutex_t mu;
	char (*acked)[48]; /* payment ids answered 200 */
	long n_acked;
	long n_503, n_other, n_transport;
	bool saw_retry_after;
	int next; /* atomic */
};

static struct load load;

static void *poster(void *arg)
{
	long t = (long)arg;

	(void)arg;
	while (!__atomic_load_n(&load.stop, __ATOMIC_ACQUIRE)) {
		int n = __atomic_fetch_add(&load.next, 1, __ATOMIC_RELAXED);
		const struct hk_daemon *d =
			__atomic_load_n(&load.only_b, __ATOMIC_ACQUIRE) || n % 2 ? &b : &a;
		char pid[48];
		struct hk_reply r;
		long st;

		snprintf(pid, sizeof(pid), "KOMPAY-LOAD-%ld-%d", t, n);
		st = post(d, pid, "PAID", &r);
		pthread_mutex_lock(&load.mu);
		if (st == 200 && load.n_acked < MAX_ACKED)
			snprintf(load.acked[load.n_acked++], sizeof(load.acked[0]), "%s", pid);
		else if (st == 503) {
			load.n_503++;
			load.saw_retry_after |= strstr(r.headers, "Retry-After:") != NULL;
		} else if (st < 0)
			load.n_transport++;
		else if (st != 200)
			load.n_other++;
		pthread_mutex_unlock(&load.mu);
		if (st != 200)
			usleep(20000);
	}
	return NULL;
}

static void load_start(pthread_t *th)
{
	memset(&load, 0, sizeof(load));
	pthread_mutex_init(&load.mu, NULL);
	load.acked = calloc(MAX_ACKED, sizeof(load.acked[0]));
	ck_assert_ptr_nonnull(load.acked);
	for (long i = 0; i < POSTERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, poster, (void *)i), 0);
}

static void load_stop(pthread_t *th)
{
	__atomic_store_n(&load.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < POSTERS; i++)
		pthread_join(th[i], NULL);
}

static long acked_now(void)
{
	long n;

	pthread_mutex_lock(&load.mu);
	n = load.n_acked;
	pthread_mutex_unlock(&load.mu);
	return n;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(x, y);
}

struct id_list {
	char (*ids)[48];
	long n, cap;
};

static int collect_pid(void *arg, const struct store_event *e)
{
	struct id_list *l = arg;

	if (l->n < l->cap)
		snprintf(l->ids[l->n++], sizeof(l->ids[0]), "%s", e->payment_id);
	return 0;
}

/* Every callback answered 200 is stored, exactly once (the load's facts are one per payment). */
static void assert_acked_stored_once(void)
{
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN};
	struct id_list l = {.cap = MAX_ACKED * 2};
	struct store *s = open_ro();

	l.ids = calloc((size_t)l.cap, sizeof(l.ids[0]));
	ck_assert_int_eq(store_events_query(s, &f, collect_pid, &l), 0);
	store_close(s);
	qsort(l.ids, (size_t)l.n, sizeof(l.ids[0]), cmp_str);
	for (long i = 1; i < l.n; i++)
		ck_assert_msg(strcmp(l.ids[i - 1], l.ids[i]) != 0, "%s stored twice", l.ids[i]);
	for (long i = 0; i < load.n_acked; i++)
		ck_assert_msg(bsearch(load.acked[i], l.ids, (size_t)l.n, sizeof(l.ids[0]),
				      cmp_str) != NULL,
			      "%s was acknowledged but is not stored", load.acked[i]);
	fprintf(stderr, "stored %ld events, %ld acknowledged, %ld 503, %ld transport errors\n", l.n,
		load.n_acked, load.n_503, load.n_transport);
	free(l.ids);
}

static bool acked_reaches(void *arg)
{
	return acked_now() >= *(long *)arg;
}

/* Waits until want callbacks were acknowledged; on failure names what the load got instead. */
static void wait_acked(long want, long timeout_ms, const char *what)
{
	if (hk_wait_until(acked_reaches, &want, timeout_ms))
		return;
	pthread_mutex_lock(&load.mu);
	fprintf(stderr,
		"%s: %ld acknowledged of %ld wanted in %ld ms; 503: %ld, transport "
		"errors: %ld, other: %ld (logs %s, %s)\n",
		what, load.n_acked, want, timeout_ms, load.n_503, load.n_transport, load.n_other,
		a.log, b.log);
	pthread_mutex_unlock(&load.mu);
	hk_print_log_tail(&a, 30);
	hk_print_log_tail(&b, 30);
	ck_abort_msg("%s", what);
}

START_TEST(kill9_under_load_loses_nothing)
{
	pthread_t th[POSTERS];
	long want = 600, after_kill;

	start_two(NO_RECONCILE);
	load_start(th);
	wait_acked(want, 60000, "load did not start");
	ck_assert_int_eq(hk_daemon_stop(&a, SIGKILL), 128 + SIGKILL);
	__atomic_store_n(&load.only_b, 1, __ATOMIC_RELEASE);
	after_kill = acked_now() + 600;
	wait_acked(after_kill, 60000, "b took no callbacks after a was killed");
	load_stop(th);
	ck_assert_int_eq(load.n_other, 0);
	assert_acked_stored_once();
	assert_chain(load.n_acked);
	free(load.acked);
}
END_TEST

/* One instance frozen under load (SIGSTOP, perhaps inside a transaction that holds the chain
 * lock): the server ends its stalled transaction, and the other instance goes on taking
 * callbacks within seconds. */
START_TEST(frozen_instance_under_load)
{
	pthread_t th[POSTERS];
	long want = 600, more;
	int64_t t0;

	start_two(NO_RECONCILE);
	load_start(th);
	wait_acked(want, 60000, "load did not start");
	ck_assert_int_eq(kill(a.pid, SIGSTOP), 0);
	__atomic_store_n(&load.only_b, 1, __ATOMIC_RELEASE);
	t0 = util_mono_ms();
	more = acked_now() + 300;
	wait_acked(more, 15000, "b stalled while a was frozen");
	fprintf(stderr, "frozen a: b took 300 more callbacks in %lld ms\n",
		(long long)(util_mono_ms() - t0));
	ck_assert_int_eq(kill(a.pid, SIGCONT), 0);
	load_stop(th);
	assert_acked_stored_once();
	assert_chain(load.n_acked);
	free(load.acked);
}
END_TEST

/* ---- PostgreSQL stopped for 5 s under load ---- */

struct ready_watch {
	int stop;
	bool saw_503, saw_200_after;
};

static void *watch_ready(void *arg)
{
	struct ready_watch *w = arg;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		char roles[256];

		if (readyz(&a, roles, sizeof(roles)) == 503)
			w->saw_503 = true;
		usleep(200000);
	}
	return NULL;
}

START_TEST(postgres_outage_503_then_recovery)
{
	pthread_t th[POSTERS], wt;
	struct ready_watch w = {0};
	long want = 300, acked_at_restart, n_503;
	pid_t pa, pb;
	int64_t t_restart, t_back;

	start_two(NO_RECONCILE);
	pa = a.pid;
	pb = b.pid;
	load_start(th);
	wait_acked(want, 60000, "load did not start");
	ck_assert_int_eq(pthread_create(&wt, NULL, watch_ready, &w), 0);
	ck_assert_int_eq(pgtest_server_stop(), 0);
	sleep(5);
	pthread_mutex_lock(&load.mu);
	n_503 = load.n_503;
	acked_at_restart = load.n_acked;
	pthread_mutex_unlock(&load.mu);
	ck_assert_int_eq(pgtest_server_start(), 0);
	t_restart = util_mono_ms();
	/* back without a restart of either daemon: new callbacks are taken by both */
	want = acked_at_restart + 200;
	wait_acked(want, 30000, "no recovery within 30 s of the database's return");
	t_back = util_mono_ms();
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	pthread_join(wt, NULL);
	load_stop(th);
	fprintf(stderr,
		"outage: %ld 503s while the database was down, taking callbacks again "
		"%lld ms after it came back\n",
		n_503, (long long)(t_back - t_restart));
	ck_assert_msg(n_503 > 0, "no 503 while the database was down");
	ck_assert(load.saw_retry_after);
	ck_assert_msg(w.saw_503, "/readyz never failed during the outage");
	ck_assert_int_eq(load.n_other, 0);
	ck_assert_int_eq(a.pid, pa);
	ck_assert_int_eq(b.pid, pb);
	ck_assert_int_eq(waitpid(a.pid, NULL, WNOHANG), 0);
	ck_assert_int_eq(waitpid(b.pid, NULL, WNOHANG), 0);
	{
		char roles[256];

		ck_assert_int_eq(readyz(&a, roles, sizeof(roles)), 200);
		ck_assert_int_eq(readyz(&b, roles, sizeof(roles)), 200);
	}
	assert_acked_stored_once();
	assert_chain(load.n_acked);
	ck_assert(hk_log_contains(&a, "callback not stored"));
	free(load.acked);
}
END_TEST

/* Started while its database is down: waits for it (not READY meanwhile), then serves. (The
 * daemon is started from the test's main thread: it dies with the thread that forked it.) */
static void *server_back_in_3s(void *arg)
{
	sleep(3);
	*(int *)arg = pgtest_server_start();
	return NULL;
}

START_TEST(starts_before_its_database)
{
	struct hk_reply r;
	pthread_t t;
	int started, back = -2;

	hk_daemon_init(&a, "[cluster]\ninstance = a\n" NO_RECONCILE);
	ck_assert_int_eq(pgtest_server_stop(), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, server_back_in_3s, &back), 0);
	started = hk_daemon_start(&a);
	pthread_join(t, NULL);
	ck_assert_int_eq(back, 0);
	ck_assert_msg(started == 0, "did not become ready once the database was back (log: %s)",
		      a.log);
	ck_assert(hk_log_contains(&a, "retrying until it answers"));
	{
		long st = post(&a, "KOMPAY-LATE-DB", "PAID", &r);

		ck_assert_msg(st == 200, "post: %ld %s alive=%d", st, r.body, kill(a.pid, 0) == 0);
	}
}
END_TEST

/* ---- the reconciler's leader killed ---- */

static long sim_call(const char *method, const char *path, const char *body, struct hk_reply *ret)
{
	static const char *const json[] = {"Content-Type: application/json", NULL};
	char url[512];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", sim.port, path);
	return hk_request(method, url, json, body, body != NULL ? strlen(body) : 0, 10000, ret);
}

static void sim_create(const char *id)
{
	char body[1024];
	struct hk_reply r;
	long st;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"payment_type\":"
		 "\"bank_transfer\",\"channel_code\":\"BCA\",\"amount\":100000,\"customer\":"
		 "{\"name\":\"Budi\",\"email\":\"budi@example.com\",\"phone\":\"081234567890\"}}",
		 id, id);
	st = sim_call("POST", "/_sim/payments", body, &r);
	ck_assert_msg(st == 200, "create %s: %ld %s", id, st, r.body);
}

/* The simulator's poll log (caller deletes). */
static cJSON *sim_polls(void)
{
	static struct hk_reply r;
	cJSON *j;

	ck_assert_int_eq(sim_call("GET", "/_sim/polls", NULL, &r), 200);
	ck_assert_msg(r.len < sizeof(r.body) - 1, "poll log truncated");
	j = cJSON_Parse(r.body);
	ck_assert_ptr_nonnull(j);
	return j;
}

struct poll_wait {
	const char *payment_id; /* NULL: any */
	double after_ms;
	double at_ms; /* found */
};

static bool polled(void *arg)
{
	struct poll_wait *w = arg;
	cJSON *j = sim_polls(), *e;

	cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "polls"))
	{
		double at = cJSON_GetObjectItem(e, "at_ms")->valuedouble;

		if (at >= w->after_ms && (w->payment_id == NULL ||
					  strcmp(cJSON_GetObjectItem(e, "payment_id")->valuestring,
						 w->payment_id) == 0)) {
			w->at_ms = at;
			cJSON_Delete(j);
			return true;
		}
	}
	cJSON_Delete(j);
	return false;
}

static void announce(const struct hk_daemon *d, const char *id)
{
	struct hk_reply r;

	ck_assert_int_eq(post(d, id, "PENDING", &r), 200);
}

#define WATCHED 12

/* Per payment, no two polls closer than MIN_POLL_GAP; over all, never more than the budget. */
static void assert_poll_log(void)
{
	cJSON *j = sim_polls(), *e, *f;
	double t[4096];
	int n = 0;

	cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "polls"))
	{
		const char *pid = cJSON_GetObjectItem(e, "payment_id")->valuestring;
		double at = cJSON_GetObjectItem(e, "at_ms")->valuedouble, prev = -1;

		if (n < 4096)
			t[n++] = at;
		cJSON_ArrayForEach(f, cJSON_GetObjectItem(j, "polls"))
		{
			double at2 = cJSON_GetObjectItem(f, "at_ms")->valuedouble;

			if (f == e)
				break;
			if (strcmp(cJSON_GetObjectItem(f, "payment_id")->valuestring, pid) == 0)
				prev = at2;
		}
		ck_assert_msg(prev < 0 || at - prev >= MIN_POLL_GAP,
			      "%s polled twice %.0f ms apart", pid, at - prev);
	}
	/* the global budget, across the change of leader: any 2 s hold at most 2 * RATE + 1 */
	for (int i = 0; i < n; i++) {
		int in = 0;

		for (int k = i; k < n && t[k] < t[i] + 2000; k++)
			in++;
		ck_assert_msg(in <= 2 * RATE + 1, "%d polls in 2 s from %.0f", in, t[i]);
	}
	fprintf(stderr, "poll log: %d polls\n", n);
	cJSON_Delete(j);
}

START_TEST(reconcile_leader_killed_is_replaced)
{
	char extra[512], id[32];
	struct hk_daemon *l, *f;
	struct poll_wait pw = {0};
	struct job_wait jw;
	int64_t t_kill;

	ck_assert_msg(hk_sim_start(&sim, "--quiet") == 0, "komerce-sim did not start");
	sim_up = true;
	snprintf(extra, sizeof(extra),
		 "[komerce]\nbase_url = http://127.0.0.1:%u/user\ntimeout_ms = 2000\n"
		 "[reconcile]\ngrace_seconds = 0\nmax_requests_per_second = %d\n",
		 sim.port, RATE);
	start_two(extra);
	for (int i = 0; i < WATCHED; i++) {
		snprintf(id, sizeof(id), "KOMPAY-W%d", i);
		sim_create(id);
		announce(i % 2 ? &a : &b, id);
	}
	/* every payment polled once, then the leader dies at an arbitrary point of its
	 * second round */
	for (int i = 0; i < WATCHED; i++) {
		snprintf(id, sizeof(id), "KOMPAY-W%d", i);
		pw = (struct poll_wait){.payment_id = id};
		ck_assert_msg(hk_wait_until(polled, &pw, 20000), "%s never polled", id);
	}
	sleep(3);
	l = leader_of("reconcile");
	f = l == &a ? &b : &a;
	t_kill = util_mono_ms(); /* the simulator's at_ms is CLOCK_MONOTONIC too */
	ck_assert_int_eq(hk_daemon_stop(l, SIGKILL), 128 + SIGKILL);
	/* a payment the survivor learns about now is due at once */
	sim_create("KOMPAY-AFTER");
	announce(f, "KOMPAY-AFTER");
	jw = (struct job_wait){f, "reconcile"};
	ck_assert_msg(hk_wait_until(job_led, &jw, TAKEOVER_MS), "no new reconcile leader in 15 s");
	pw = (struct poll_wait){.payment_id = "KOMPAY-AFTER", .after_ms = (double)t_kill};
	ck_assert_msg(hk_wait_until(polled, &pw, TAKEOVER_MS),
		      "the survivor did not poll within 15 s of the kill");
	fprintf(stderr, "takeover: first poll by the new leader %.0f ms after the kill\n",
		pw.at_ms - (double)t_kill);
	ck_assert(pw.at_ms - (double)t_kill <= TAKEOVER_MS);
	/* more rounds by the new leader, over payments the old one polled just before */
	sleep(8);
	assert_poll_log();
}
END_TEST

/* Frozen rather than dead (SIGSTOP: its sockets stay open, the kernel still answers TCP): the
 * server ends its silent leader session (idle_session_timeout) and another instance takes over
 * within 15 s; woken up, the old leader finds it leads nothing and stops, and the store's
 * guard keeps the 3 s rule meanwhile. */
START_TEST(reconcile_leader_frozen_is_replaced)
{
	char extra[512], id[32], roles[256];
	struct hk_daemon *l, *f;
	struct poll_wait pw = {0};
	struct job_wait jw;
	int64_t t_stop;

	ck_assert_msg(hk_sim_start(&sim, "--quiet") == 0, "komerce-sim did not start");
	sim_up = true;
	snprintf(extra, sizeof(extra),
		 "[komerce]\nbase_url = http://127.0.0.1:%u/user\ntimeout_ms = 2000\n"
		 "[reconcile]\ngrace_seconds = 0\nmax_requests_per_second = %d\n",
		 sim.port, RATE);
	start_two(extra);
	for (int i = 0; i < WATCHED; i++) {
		snprintf(id, sizeof(id), "KOMPAY-Z%d", i);
		sim_create(id);
		announce(i % 2 ? &a : &b, id);
	}
	pw = (struct poll_wait){.payment_id = "KOMPAY-Z11"};
	ck_assert_msg(hk_wait_until(polled, &pw, 20000), "never polled");
	l = leader_of("reconcile");
	f = l == &a ? &b : &a;
	t_stop = util_mono_ms(); /* the simulator's at_ms is CLOCK_MONOTONIC too */
	ck_assert_int_eq(kill(l->pid, SIGSTOP), 0);
	sim_create("KOMPAY-THAW");
	announce(f, "KOMPAY-THAW");
	jw = (struct job_wait){f, "reconcile"};
	ck_assert_msg(hk_wait_until(job_led, &jw, TAKEOVER_MS), "no new leader within 15 s");
	pw = (struct poll_wait){.payment_id = "KOMPAY-THAW", .after_ms = (double)t_stop};
	ck_assert_msg(hk_wait_until(polled, &pw, TAKEOVER_MS), "no poll within 15 s");
	fprintf(stderr, "frozen leader: first poll by the new leader %.0f ms after SIGSTOP\n",
		pw.at_ms - (double)t_stop);
	ck_assert_int_eq(kill(l->pid, SIGCONT), 0);
	sleep(5);
	ck_assert_int_eq(readyz(l, roles, sizeof(roles)), 200);
	ck_assert_msg(strstr(roles, "reconcile") == NULL, "the old leader still leads: %s", roles);
	ck_assert(leads(f, "reconcile"));
	ck_assert(hk_log_contains(l, "leadership lost job=reconcile"));
	assert_poll_log();
}
END_TEST

/* ---- the forwarder's leader killed ---- */

struct arrival {
	long long event_id;
	char payment_id[48];
	char status[16];
};

static struct {
	pthread_mutex_t mu;
	struct arrival *list;
	size_t n, cap;
	struct MHD_Daemon *d;
	unsigned port;
} rx = {.mu = PTHREAD_MUTEX_INITIALIZER};

struct rx_body {
	char *p;
	size_t len;
};

static void rx_record(const char *body, size_t len)
{
	cJSON *j = cJSON_ParseWithLength(body, len);
	struct arrival a0 = {0};

	if (j == NULL)
		return;
	if (cJSON_IsNumber(cJSON_GetObjectItem(j, "event_id")))
		a0.event_id = (long long)cJSON_GetObjectItem(j, "event_id")->valuedouble;
	if (cJSON_IsString(cJSON_GetObjectItem(j, "payment_id")))
		snprintf(a0.payment_id, sizeof(a0.payment_id), "%s",
			 cJSON_GetObjectItem(j, "payment_id")->valuestring);
	if (cJSON_IsString(cJSON_GetObjectItem(j, "status")))
		snprintf(a0.status, sizeof(a0.status), "%s",
			 cJSON_GetObjectItem(j, "status")->valuestring);
	cJSON_Delete(j);
	pthread_mutex_lock(&rx.mu);
	if (rx.n == rx.cap) {
		rx.cap = rx.cap ? rx.cap * 2 : 1024;
		rx.list = realloc(rx.list, rx.cap * sizeof(rx.list[0]));
	}
	rx.list[rx.n++] = a0;
	pthread_mutex_unlock(&rx.mu);
}

static enum MHD_Result rx_handler(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *size, void **con_cls)
{
	struct rx_body *b0 = *con_cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	if (b0 == NULL) {
		*con_cls = calloc(1, sizeof(*b0));
		return MHD_YES;
	}
	if (*size > 0) {
		b0->p = realloc(b0->p, b0->len + *size);
		memcpy(b0->p + b0->len, data, *size);
		b0->len += *size;
		*size = 0;
		return MHD_YES;
	}
	rx_record(b0->p, b0->len);
	resp = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void rx_done(void *cls, struct MHD_Connection *c, void **con_cls,
		    enum MHD_RequestTerminationCode toe)
{
	struct rx_body *b0 = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (b0 != NULL) {
		free(b0->p);
		free(b0);
		*con_cls = NULL;
	}
}

static void rx_start(void)
{
	const union MHD_DaemonInfo *info;

	rx.n = 0;
	rx.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
				NULL, NULL, rx_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, rx_done,
				NULL, MHD_OPTION_END);
	ck_assert_ptr_nonnull(rx.d);
	info = MHD_get_daemon_info(rx.d, MHD_DAEMON_INFO_BIND_PORT);
	rx.port = info->port;
}

static bool rx_has_all(void *arg)
{
	long want = *(long *)arg, distinct = 0;

	pthread_mutex_lock(&rx.mu);
	for (size_t i = 0; i < rx.n; i++) {
		bool seen = false;

		for (size_t k = 0; k < i && !seen; k++)
			seen = rx.list[k].event_id == rx.list[i].event_id;
		distinct += !seen;
	}
	pthread_mutex_unlock(&rx.mu);
	return distinct >= want;
}

#define PAYMENTS 40

START_TEST(forward_leader_killed_in_order)
{
	char extra[512], id[32];
	struct hk_daemon *l, *f;
	long want = 2 * PAYMENTS;
	struct hk_reply r;

	rx_start();
	snprintf(extra, sizeof(extra),
		 NO_RECONCILE "[sink.x]\ntype = http\nurl = http://127.0.0.1:%u/\nsecret = %s\n",
		 rx.port, SINK_SECRET);
	start_two(extra);
	l = leader_of("forward:x");
	f = l == &a ? &b : &a;
	for (int i = 0; i < PAYMENTS; i++) {
		snprintf(id, sizeof(id), "KOMPAY-F%d", i);
		if (i == PAYMENTS / 2)
			ck_assert_int_eq(hk_daemon_stop(l, SIGKILL), 128 + SIGKILL);
		/* PENDING through one instance, PAID through the other (the survivor after
		 * the kill) */
		ck_assert_int_eq(post(i < PAYMENTS / 2 && i % 2 ? l : f, id, "PENDING", &r), 200);
		ck_assert_int_eq(post(i < PAYMENTS / 2 && i % 2 == 0 ? l : f, id, "PAID", &r), 200);
	}
	ck_assert_msg(hk_wait_until(rx_has_all, &want, 30000), "events missing at the sink");
	/* per payment: every PENDING delivery before the first PAID one */
	pthread_mutex_lock(&rx.mu);
	for (int i = 0; i < PAYMENTS; i++) {
		bool paid = false;

		snprintf(id, sizeof(id), "KOMPAY-F%d", i);
		for (size_t k = 0; k < rx.n; k++) {
			if (strcmp(rx.list[k].payment_id, id) != 0)
				continue;
			if (strcmp(rx.list[k].status, "PAID") == 0)
				paid = true;
			else
				ck_assert_msg(!paid, "%s: PENDING delivered after PAID", id);
		}
		ck_assert_msg(paid, "%s: PAID never delivered", id);
	}
	fprintf(stderr, "sink: %zu deliveries for %d events\n", rx.n, 2 * PAYMENTS);
	pthread_mutex_unlock(&rx.mu);
	MHD_stop_daemon(rx.d);
	free(rx.list);
	rx.list = NULL;
	rx.cap = 0;
}
END_TEST

/* ---- moving an SQLite database over ---- */

/* komerce-hookctl args... : exit status, stdout (and stderr) into out. */
static int ctl(char *out, size_t n, const char *args)
{
	char cmd[2048];
	size_t len;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", getenv("HOOKCTL_BIN"), args);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	len = fread(out, 1, n - 1, p);
	out[len] = '\0';
	return WEXITSTATUS(pclose(p));
}

START_TEST(migrate_sqlite_to_postgresql)
{
	static char out[1 << 16], src_events[1 << 16], dst_events[1 << 16];
	struct hk_daemon s0;
	struct hk_reply r;
	char extra[512], args[1024], id[32];
	long long last;

	snprintf(extra, sizeof(extra),
		 NO_RECONCILE "[sink.x]\ntype = http\nurl = http://127.0.0.1:1/\nsecret = %s\n"
			      "max_attempts = 2\n",
		 SINK_SECRET);
	hk_daemon_init_sqlite(&s0, extra);
	ck_assert_msg(hk_daemon_start(&s0) == 0, "sqlite daemon (log: %s)", s0.log);
	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "KOMPAY-MIG-%d", i);
		ck_assert_int_eq(post(&s0, id, "PENDING", &r), 200);
		ck_assert_int_eq(post(&s0, id, i % 3 ? "PAID" : "EXPIRED", &r), 200);
		ck_assert_int_eq(post(&s0, id, i % 3 ? "PAID" : "EXPIRED", &r), 200); /* again */
	}
	ck_assert_int_eq(post(&s0, "KOMPAY-MIG-1", "EXPIRED", &r), 200); /* a conflict */
	sleep(2); /* the sink fails: attempts and errors in the outbox too */
	ck_assert_int_eq(hk_daemon_stop(&s0, SIGTERM), 0);

	/* into a's (empty) database, before a ever ran */
	hk_daemon_init(&a, extra);
	snprintf(args, sizeof(args), "--db '%s' migrate-to '%s'", s0.db, a.db);
	ck_assert_msg(ctl(out, sizeof(out), args) == 0, "%s", out);
	ck_assert_msg(strstr(out, "copied 10 payments, 21 events, 31 receipts") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "migrate-to: OK, hash chain verified: 21 events") != NULL, "%s",
		      out);
	snprintf(args, sizeof(args), "--db '%s' verify", a.db);
	ck_assert_msg(ctl(out, sizeof(out), args) == 0, "%s", out);
	ck_assert_msg(strstr(out, "OK, 21 events checked") != NULL, "%s", out);
	/* the same events, field for field */
	snprintf(args, sizeof(args), "--db '%s' events --format jsonl", s0.db);
	ck_assert_int_eq(ctl(src_events, sizeof(src_events), args), 0);
	snprintf(args, sizeof(args), "--db '%s' events --format jsonl", a.db);
	ck_assert_int_eq(ctl(dst_events, sizeof(dst_events), args), 0);
	ck_assert_str_eq(dst_events, src_events);
	snprintf(args, sizeof(args), "--db '%s' outbox --all --format json", s0.db);
	ck_assert_int_eq(ctl(src_events, sizeof(src_events), args), 0);
	snprintf(args, sizeof(args), "--db '%s' outbox --all --format json", a.db);
	ck_assert_int_eq(ctl(dst_events, sizeof(dst_events), args), 0);
	ck_assert_str_eq(dst_events, src_events);
	/* only into an empty database */
	snprintf(args, sizeof(args), "--db '%s' migrate-to '%s'", s0.db, a.db);
	ck_assert_int_eq(ctl(out, sizeof(out), args), 1);
	ck_assert_msg(strstr(out, "not empty") != NULL, "%s", out);

	/* the daemon goes on where the copy ends */
	ck_assert_msg(hk_daemon_start(&a) == 0, "daemon on the copy (log: %s)", a.log);
	ck_assert_int_eq(post(&a, "KOMPAY-MIG-NEW", "PAID", &r), 200);
	last = event_id_of(&r);
	ck_assert_int_eq(last, 22);
	ck_assert_int_eq(post(&a, "KOMPAY-MIG-4", "PAID", &r), 200);
	ck_assert_msg(strstr(r.body, "\"duplicate\":true") != NULL, "%s", r.body);
	assert_chain(22);
	hk_daemon_cleanup(&s0);
}
END_TEST

static Suite *cluster_suite(void)
{
	Suite *s = suite_create("cluster");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, both_serve_one_chain);
	tcase_add_test(tc, same_callback_to_both_at_once);
	tcase_add_test(tc, one_leader_per_job);
	tcase_add_test(tc, migrate_sqlite_to_postgresql);
	suite_add_tcase(s, tc);

	tc = tcase_create("failover");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, kill9_under_load_loses_nothing);
	tcase_add_test(tc, frozen_instance_under_load);
	tcase_add_test(tc, reconcile_leader_killed_is_replaced);
	tcase_add_test(tc, reconcile_leader_frozen_is_replaced);
	tcase_add_test(tc, forward_leader_killed_in_order);
#ifndef __SANITIZE_THREAD__
	/* These two stop and start the suite's PostgreSQL server, which the test runner's first
	 * process owns and does on a signal from the forked test. Under ThreadSanitizer that
	 * process gets the signal only when it returns from waiting for the test (TSan delivers
	 * signals at its own points), so the server stops after the test has given up. They run
	 * in the plain and the ASan build. */
	tcase_add_test(tc, postgres_outage_503_then_recovery);
	tcase_add_test(tc, starts_before_its_database);
#else
	(void)postgres_outage_503_then_recovery;
	(void)starts_before_its_database;
#endif
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cluster_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
