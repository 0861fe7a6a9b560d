/* Integration: the real komerce-hookd binary receiving callbacks over HTTP on loopback, with a
 * temporary SQLite database. Every reply code of the callback contract, idempotency under
 * concurrency, and "a 200 means durable" across SIGTERM and kill -9. */
#include <check.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "store.h"

static struct hk_daemon d;

static void start_with(const char *extra)
{
	hk_daemon_init(&d, extra);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
}

static void setup(void)
{
	start_with(NULL);
}

static void teardown(void)
{
	hk_daemon_cleanup(&d);
}

static const char paid_body[] = "{\"payment_id\":\"KOMPAY-1699012345-A1B2C3\",\"order_id\":"
				"\"KOM12345\",\"status\":\"PAID\",\"amount\":100000,"
				"\"paid_at\":\"2026-08-12T10:15:30.000Z\"}";

static struct store *open_ro(void)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[256];

	hk_store_target(&o, d.db);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

START_TEST(valid_callback_is_stored)
{
	struct hk_reply r;

	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	ck_assert_str_eq(r.body, "{\"status\":\"ok\",\"event_id\":1,\"duplicate\":false}");
	ck_assert_int_eq(hk_count(&d, "events"), 1);
	ck_assert_int_eq(hk_count(&d, "receipts"), 1);
	ck_assert_int_eq(hk_count(&d, "payments"), 1);
}
END_TEST

START_TEST(duplicate_is_absorbed)
{
	struct hk_reply r;

	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	ck_assert_str_eq(r.body, "{\"status\":\"ok\",\"event_id\":1,\"duplicate\":true}");
	ck_assert_int_eq(hk_count(&d, "events"), 1);
	ck_assert_int_eq(hk_count(&d, "receipts"), 2);
}
END_TEST

START_TEST(wrong_key_is_401_and_not_stored)
{
	struct hk_reply r;

	ck_assert_int_eq(hk_post_callback(&d, paid_body, "some-other-key-0000", &r), 401);
	ck_assert_ptr_nonnull(strstr(r.body, "signature"));
	ck_assert_int_eq(hk_count(&d, "events"), 0);
	ck_assert_int_eq(hk_count(&d, "receipts"), 0);
}
END_TEST

START_TEST(missing_header_is_401)
{
	struct hk_reply r;

	ck_assert_int_eq(hk_post_callback(&d, paid_body, NULL, &r), 401);
	ck_assert_int_eq(hk_count(&d, "events"), 0);
}
END_TEST

START_TEST(body_changed_after_signing_is_401)
{
	char sig[65], hdr[100], url[128], body[sizeof(paid_body)];
	const char *headers[] = {"Content-Type: application/json", hdr, NULL};
	struct hk_reply r;

	hk_sign(HK_CALLBACK_KEY, paid_body, strlen(paid_body), sig);
	snprintf(hdr, sizeof(hdr), "X-Callback-Api-Key: %s", sig);
	memcpy(body, paid_body, sizeof(body));
	body[strlen(body) - 3] ^= 1; /* one byte of the timestamp */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/komerce/callback", d.port);
	ck_assert_int_eq(hk_request("POST", url, headers, body, strlen(body), 5000, &r), 401);
	ck_assert_int_eq(hk_count(&d, "events"), 0);
}
END_TEST

START_TEST(uppercase_and_prefixed_signature_accepted)
{
	char sig[65], hdr[100], url[128];
	const char *headers[] = {"Content-Type: application/json; charset=utf-8", hdr, NULL};
	struct hk_reply r;

	hk_sign(HK_CALLBACK_KEY, paid_body, strlen(paid_body), sig);
	for (char *p = sig; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	snprintf(hdr, sizeof(hdr), "X-Callback-Api-Key: sha256=%s", sig);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/komerce/callback", d.port);
	ck_assert_int_eq(hk_request("POST", url, headers, paid_body, strlen(paid_body), 5000, &r),
			 200);
}
END_TEST

START_TEST(malformed_json_is_400)
{
	struct hk_reply r;

	ck_assert_int_eq(hk_post_callback(&d, "{\"payment_id\":", HK_CALLBACK_KEY, &r), 400);
	ck_assert_ptr_nonnull(strstr(r.body, "malformed JSON"));
	ck_assert_int_eq(hk_post_callback(&d, "{\"status\":\"PAID\"}", HK_CALLBACK_KEY, &r), 400);
	ck_assert_ptr_nonnull(strstr(r.body, "payment_id"));
	ck_assert_int_eq(hk_post_callback(&d, "{\"payment_id\":\"X\",\"status\":\"WAT\"}",
					  HK_CALLBACK_KEY, &r),
			 400);
	ck_assert_ptr_nonnull(strstr(r.body, "status"));
	ck_assert_int_eq(hk_count(&d, "events"), 0);
	ck_assert_int_eq(hk_count(&d, "receipts"), 0);
}
END_TEST

START_TEST(oversize_body_is_413)
{
	size_t n = 70 * 1024;
	char *body = malloc(n + 1);
	struct hk_reply r;

	ck_assert_ptr_nonnull(body);
	memset(body, ' ', n);
	memcpy(body, paid_body, strlen(paid_body));
	body[n] = '\0';
	ck_assert_int_eq(hk_post_callback(&d, body, HK_CALLBACK_KEY, &r), 413);
	free(body);
	ck_assert_int_eq(hk_count(&d, "events"), 0);
}
END_TEST

START_TEST(chunked_oversize_body_is_413)
{
	size_t n = 70 * 1024;
	char *body = malloc(n + 1), url[128];
	const char *headers[] = {"Content-Type: application/json", "Transfer-Encoding: chunked",
				 NULL};
	struct hk_reply r;

	ck_assert_ptr_nonnull(body);
	memset(body, ' ', n);
	body[n] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/komerce/callback", d.port);
	ck_assert_int_eq(hk_request("POST", url, headers, body, n, 5000, &r), 413);
	free(body);
}
END_TEST

START_TEST(wrong_method_is_405)
{
	struct hk_reply r;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/komerce/callback", d.port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, &r), 405);
	ck_assert_ptr_nonnull(strstr(r.headers, "Allow: POST"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"status\":\"error\""));
}
END_TEST

START_TEST(wrong_content_type_is_415)
{
	char sig[65], hdr[100], url[128];
	const char *headers[] = {"Content-Type: text/plain", hdr, NULL};
	struct hk_reply r;

	hk_sign(HK_CALLBACK_KEY, paid_body, strlen(paid_body), sig);
	snprintf(hdr, sizeof(hdr), "X-Callback-Api-Key: %s", sig);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/komerce/callback", d.port);
	ck_assert_int_eq(hk_request("POST", url, headers, paid_body, strlen(paid_body), 5000, &r),
			 415);
	ck_assert_int_eq(hk_count(&d, "events"), 0);
}
END_TEST

START_TEST(unknown_path_is_404)
{
	struct hk_reply r;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/nope", d.port);
	ck_assert_int_eq(hk_request("POST", url, NULL, "{}", 2, 5000, &r), 404);
}
END_TEST

START_TEST(terminal_state_never_regresses)
{
	static const char pending[] =
		"{\"payment_id\":\"KOMPAY-1699012345-A1B2C3\",\"status\":\"PENDING\"}";
	static const char expired[] =
		"{\"payment_id\":\"KOMPAY-1699012345-A1B2C3\",\"status\":\"EXPIRED\"}";
	struct store_payment p;
	struct hk_reply r;
	struct store *s;

	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	ck_assert_int_eq(hk_post_callback(&d, pending, HK_CALLBACK_KEY, &r), 200);
	ck_assert_int_eq(hk_post_callback(&d, expired, HK_CALLBACK_KEY, &r), 200);
	ck_assert_str_eq(r.body, "{\"status\":\"ok\",\"event_id\":3,\"duplicate\":false}");
	s = open_ro();
	ck_assert_int_eq(store_payment_get(s, "KOMPAY-1699012345-A1B2C3", &p), 0);
	ck_assert_int_eq(p.status, PAYMENT_PAID);
	store_close(s);
	ck_assert(hk_log_contains(&d, "conflicts with known state"));
}
END_TEST

START_TEST(rotated_keys_both_accepted)
{
	struct hk_reply r;

	hk_daemon_cleanup(&d);
	start_with("[komerce]\ncallback_keys = " HK_CALLBACK_KEY ", " HK_CALLBACK_KEY2 "\n");
	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY2, &r), 200);
	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	ck_assert_int_eq(hk_post_callback(&d, paid_body, "retired-key-000000", &r), 401);
	ck_assert_int_eq(hk_count(&d, "events"), 1);
}
END_TEST

/* ---- concurrency ---- */

struct dup_arg {
	long status;
	char body[128];
};

static void *post_same(void *arg)
{
	struct dup_arg *a = arg;
	struct hk_reply *r = malloc(sizeof(*r));

	a->status = hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, r);
	snprintf(a->body, sizeof(a->body), "%s", r->body);
	free(r);
	return NULL;
}

START_TEST(concurrent_duplicates_make_one_event)
{
	enum { N = 32 };
	pthread_t t[N];
	struct dup_arg a[N];
	int fresh = 0;

	for (int i = 0; i < N; i++)
		pthread_create(&t[i], NULL, post_same, &a[i]);
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(a[i].status, 200);
		fresh += strstr(a[i].body, "\"duplicate\":false") != NULL;
	}
	ck_assert_int_eq(fresh, 1);
	ck_assert_int_eq(hk_count(&d, "events"), 1);
	ck_assert_int_eq(hk_count(&d, "receipts"), N);
}
END_TEST

/* ---- durability under load ---- */

enum { LOADERS = 8, PER_LOADER = 100000 };

struct loader {
	int id;
	int *stop;
	long acked;
	long sent;
	int *acked_ids; /* sequence numbers that got a 200 */
};

static void *load(void *arg)
{
	struct loader *l = arg;
	struct hk_reply *r = malloc(sizeof(*r));

	for (int i = 0; i < PER_LOADER && !__atomic_load_n(l->stop, __ATOMIC_ACQUIRE); i++) {
		char body[200];

		snprintf(body, sizeof(body),
			 "{\"payment_id\":\"LOAD-%d-%d\",\"status\":\"PAID\",\"amount\":10000}",
			 l->id, i);
		l->sent++;
		if (hk_post_callback(&d, body, HK_CALLBACK_KEY, r) == 200) {
			l->acked_ids[l->acked] = i;
			__atomic_store_n(&l->acked, l->acked + 1, __ATOMIC_RELEASE);
		}
	}
	free(r);
	return NULL;
}

static bool enough_acked(void *arg)
{
	struct loader *l = arg;
	long n = 0;

	for (int i = 0; i < LOADERS; i++)
		n += __atomic_load_n(&l[i].acked, __ATOMIC_ACQUIRE);
	return n >= 500;
}

static int count_cb(void *arg, const struct store_event *e)
{
	(void)e;
	(*(long *)arg)++;
	return 0;
}

/* Every request that got a 200 is in events exactly once. */
static void check_acked_present(struct loader *l)
{
	struct store *s = open_ro();
	long total = 0, missing = 0;
	int64_t checked, bad;
	char why[128];

	for (int i = 0; i < LOADERS; i++) {
		for (long k = 0; k < l[i].acked; k++) {
			char pid[64];
			long n = 0;
			struct store_event_filter f = {.status = PAYMENT_UNKNOWN};

			snprintf(pid, sizeof(pid), "LOAD-%d-%d", i, l[i].acked_ids[k]);
			f.payment_id = pid;
			ck_assert_int_eq(store_events_query(s, &f, count_cb, &n), 0);
			missing += n != 1;
			total++;
		}
	}
	ck_assert_msg(missing == 0, "%ld of %ld acknowledged events missing", missing, total);
	ck_assert_int_eq(store_verify(s, &checked, &bad, why, sizeof(why)), 0);
	store_close(s);
}

static void run_load_and_signal(int sig)
{
	struct loader l[LOADERS];
	pthread_t t[LOADERS];
	int stop = 0;
	int code;

	for (int i = 0; i < LOADERS; i++) {
		l[i] = (struct loader){.id = i, .stop = &stop};
		l[i].acked_ids = malloc(sizeof(int) * PER_LOADER);
		pthread_create(&t[i], NULL, load, &l[i]);
	}
	ck_assert(hk_wait_until(enough_acked, l, 30000));
	code = hk_daemon_stop(&d, sig);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < LOADERS; i++)
		pthread_join(t[i], NULL);
	if (sig == SIGTERM)
		ck_assert_int_eq(code, 0);
	else
		ck_assert_int_eq(code, 128 + SIGKILL);
	if (sig == SIGKILL) /* restart: recovery of the WAL, then check through the daemon too */
		ck_assert_int_eq(hk_daemon_start(&d), 0);
	check_acked_present(l);
	for (int i = 0; i < LOADERS; i++)
		free(l[i].acked_ids);
}

START_TEST(sigterm_during_load_keeps_every_ack)
{
	run_load_and_signal(SIGTERM);
	ck_assert(hk_log_contains(&d, "stopped cleanly"));
}
END_TEST

START_TEST(kill9_during_load_keeps_every_ack)
{
	struct hk_reply r;

	run_load_and_signal(SIGKILL);
	/* The restarted daemon continues the chain. */
	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	ck_assert_str_eq(r.body + strlen(r.body) - 18, "\"duplicate\":false}");
	{
		struct store *s = open_ro();
		int64_t checked, bad;
		char why[128];

		ck_assert_msg(store_verify(s, &checked, &bad, why, sizeof(why)) == 0, "%s", why);
		store_close(s);
	}
}
END_TEST

START_TEST(health_and_ready)
{
	struct hk_reply r;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/healthz", d.port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, &r), 200);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/readyz", d.admin_port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, &r), 200);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", d.admin_port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "hookd_build_info"));
}
END_TEST

/* komerce-hookd --check-config on conf: its exit status, its output into out. */
static int check_config(const char *conf, char *out, size_t n)
{
	const char *bin = getenv("HOOKD_BIN");
	char cmd[1024];
	size_t len;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "'%s' -c '%s' --check-config 2>&1", bin, conf);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	len = fread(out, 1, n - 1, p);
	out[len] = '\0';
	return WEXITSTATUS(pclose(p));
}

/* --check-config names the backend, the database (the URL without its password) and the
 * instance. */
START_TEST(check_config_prints_effective_store)
{
	char out[1024], want[512], conf[400];
	FILE *f;

	ck_assert_int_eq(check_config(d.conf, out, sizeof(out)), 0);
	ck_assert_msg(strncmp(out, "configuration OK\n", 17) == 0, "%s", out);
	if (hk_backend_pg())
		snprintf(want, sizeof(want), "store: backend=postgresql url=%s\n", d.db);
	else
		snprintf(want, sizeof(want), "store: backend=sqlite path=%s\n", d.db);
	ck_assert_msg(strstr(out, want) != NULL, "'%s' not in: %s", want, out);
	ck_assert_msg(strstr(out, "cluster: instance=") != NULL, "%s", out);
	/* a password in the URL is never printed */
	snprintf(conf, sizeof(conf), "%s/pw.conf", d.dir);
	f = fopen(conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
		"[admin]\ntoken = %s\n[komerce]\napi_key = k\ncallback_keys = %s\n"
		"[store]\nbackend = postgresql\n"
		"url = postgresql://hookd:Pa55-w0rd@db1:5432/hookd?password=Pa55-w0rd\n"
		"[cluster]\ninstance = web1\n",
		HK_ADMIN_TOKEN, HK_CALLBACK_KEY);
	fclose(f);
	ck_assert_int_eq(check_config(conf, out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "Pa55-w0rd") == NULL, "password printed: %s", out);
	ck_assert_msg(strstr(out,
			     "store: backend=postgresql "
			     "url=postgresql://hookd:***@db1:5432/hookd?password=***\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "cluster: instance=web1\n") != NULL, "%s", out);
}
END_TEST

START_TEST(secrets_never_logged)
{
	struct hk_reply r;

	ck_assert_int_eq(hk_post_callback(&d, paid_body, "wrong-key-0000000", &r), 401);
	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, &r), 200);
	hk_daemon_stop(&d, SIGTERM);
	ck_assert(!hk_log_contains(&d, HK_CALLBACK_KEY));
	ck_assert(!hk_log_contains(&d, HK_ADMIN_TOKEN));
	ck_assert(!hk_log_contains(&d, HK_API_KEY));
}
END_TEST

/* ---- /metrics is valid Prometheus text format ---- */

struct family {
	char name[96];
	char type[16];
};

/* Parses the exposition format strictly enough to catch what a Prometheus server rejects:
 * every sample belongs to a family declared once with # TYPE before it, names and labels are
 * well-formed, values are numbers, histogram buckets are cumulative and end at _count.
 * Returns the value of `want` (a full sample name with labels), or -1 when absent. */
static double parse_metrics(char *text, const char *want)
{
	struct family fam[128];
	size_t nfam = 0;
	regex_t sample;
	double found = -1, last_bucket = -1;
	char *save = NULL;

	ck_assert_int_eq(regcomp(&sample,
				 "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
				 "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"]*\"(,[a-zA-Z_][a-zA-Z0-9_]*=\"["
				 "^\"]*\")*\\})?"
				 " ([-+0-9.eE]+|\\+Inf|NaN)$",
				 REG_EXTENDED),
			 0);
	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		regmatch_t m[5];
		char name[96], *end;
		size_t len, i;

		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char type[16];

			ck_assert_int_eq(sscanf(line + 7, "%95s %15s", name, type), 2);
			ck_assert_msg(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
					      strcmp(type, "histogram") == 0,
				      "type %s", type);
			for (i = 0; i < nfam; i++)
				ck_assert_msg(strcmp(fam[i].name, name) != 0, "TYPE twice: %s",
					      name);
			ck_assert_uint_lt(nfam, 128);
			snprintf(fam[nfam].name, sizeof(fam[nfam].name), "%s", name);
			snprintf(fam[nfam].type, sizeof(fam[nfam].type), "%s", type);
			nfam++;
			continue;
		}
		ck_assert_msg(line[0] != '#', "unknown comment: %s", line);
		ck_assert_msg(regexec(&sample, line, 5, m, 0) == 0, "bad sample line: %s", line);
		len = (size_t)(m[1].rm_eo - m[1].rm_so);
		ck_assert_uint_lt(len, sizeof(name));
		memcpy(name, line, len);
		name[len] = '\0';
		for (i = 0; i < nfam; i++) {
			size_t fl = strlen(fam[i].name);

			if (strcmp(fam[i].name, name) == 0)
				break;
			if (strcmp(fam[i].type, "histogram") == 0 &&
			    strncmp(name, fam[i].name, fl) == 0 &&
			    (strcmp(name + fl, "_bucket") == 0 || strcmp(name + fl, "_sum") == 0 ||
			     strcmp(name + fl, "_count") == 0))
				break;
		}
		ck_assert_msg(i < nfam, "sample before its # TYPE: %s", line);
		if (strstr(name, "_bucket") != NULL) {
			double v = strtod(line + m[4].rm_so, &end);

			if (strstr(line, "le=\"0.0005\"") != NULL ||
			    strstr(line, "le=\"1\"}") != NULL)
				last_bucket = -1; /* first bucket of a histogram */
			ck_assert_msg(v >= last_bucket, "buckets not cumulative: %s", line);
			last_bucket = v;
		}
		if (strncmp(line, want, strlen(want)) == 0 && line[strlen(want)] == ' ')
			found = strtod(line + strlen(want) + 1, &end);
	}
	regfree(&sample);
	return found;
}

static double metric(const char *body, const char *want)
{
	char *copy = strdup(body);
	double v;

	ck_assert_ptr_nonnull(copy);
	v = parse_metrics(copy, want);
	free(copy);
	return v;
}

START_TEST(metrics_are_valid_prometheus_text)
{
	static const char again[] = "{\"payment_id\":\"KOMPAY-1699012345-A1B2C3\","
				    "\"status\":\"PENDING\"}";
	struct hk_reply *r = malloc(sizeof(*r));
	char url[128];

	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, r), 200);
	ck_assert_int_eq(hk_post_callback(&d, paid_body, HK_CALLBACK_KEY, r), 200);
	ck_assert_int_eq(hk_post_callback(&d, again, HK_CALLBACK_KEY, r), 200);
	ck_assert_int_eq(hk_post_callback(&d, paid_body, "wrong-key-00000000", r), 401);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", d.admin_port);
	ck_assert_int_eq(hk_request("GET", url, NULL, NULL, 0, 5000, r), 200);
	ck_assert_ptr_nonnull(strstr(r->headers, "text/plain; version=0.0.4"));
	ck_assert_double_eq(
		metric(r->body, "hookd_events_total{status=\"PAID\",source=\"callback\"}"), 1);
	ck_assert_double_eq(metric(r->body, "hookd_duplicates_total"), 1);
	ck_assert_double_eq(metric(r->body, "hookd_conflicts_total"), 1);
	ck_assert_double_eq(metric(r->body, "hookd_callback_auth_failures_total"), 1);
	ck_assert_double_eq(
		metric(r->body, "hookd_http_requests_total{endpoint=\"callback\",code=\"200\"}"),
		3);
	ck_assert_double_eq(metric(r->body, "hookd_commit_seconds_count"),
			    metric(r->body, "hookd_commit_seconds_bucket{le=\"+Inf\"}"));
	free(r);
}
END_TEST

static Suite *ingest_suite(void)
{
	Suite *s = suite_create("ingest");
	TCase *core = tcase_create("core"), *errors = tcase_create("errors"),
	      *durability = tcase_create("durability");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_add_test(core, valid_callback_is_stored);
	tcase_add_test(core, duplicate_is_absorbed);
	tcase_add_test(core, uppercase_and_prefixed_signature_accepted);
	tcase_add_test(core, terminal_state_never_regresses);
	tcase_add_test(core, rotated_keys_both_accepted);
	tcase_add_test(core, concurrent_duplicates_make_one_event);
	tcase_add_test(core, health_and_ready);
	tcase_add_test(core, metrics_are_valid_prometheus_text);
	suite_add_tcase(s, core);

	tcase_add_checked_fixture(errors, setup, teardown);
	tcase_add_test(errors, wrong_key_is_401_and_not_stored);
	tcase_add_test(errors, missing_header_is_401);
	tcase_add_test(errors, body_changed_after_signing_is_401);
	tcase_add_test(errors, malformed_json_is_400);
	tcase_add_test(errors, oversize_body_is_413);
	tcase_add_test(errors, chunked_oversize_body_is_413);
	tcase_add_test(errors, wrong_method_is_405);
	tcase_add_test(errors, wrong_content_type_is_415);
	tcase_add_test(errors, unknown_path_is_404);
	tcase_add_test(errors, secrets_never_logged);
	tcase_add_test(errors, check_config_prints_effective_store);
	suite_add_tcase(s, errors);

	tcase_add_checked_fixture(durability, setup, teardown);
	tcase_set_timeout(durability, 120);
	tcase_add_test(durability, sigterm_during_load_keeps_every_ack);
	tcase_add_test(durability, kill9_during_load_keeps_every_ack);
	suite_add_tcase(s, durability);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ingest_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
