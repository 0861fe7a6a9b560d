/* Integration: komerce-hookctl against a database the real daemon filled and keeps filling.
 * Every events filter and output format, payments --stale, stats, verify on an intact chain and
 * after an attacker with write access edits, deletes or reorders rows, replay, the online backup
 * and every read command while the daemon is under load, usage errors, the events API page
 * builder, and the query plan (index use) of events by payment_id / order_id. Runs on SQLite
 * (--db PATH) and, with HK_BACKEND=postgresql, on PostgreSQL (--db URL; backup refused with a
 * pointer to pg_dump). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "harness.h"
#include "audit.h"
#include "store.h"
#include "util.h"

#define NO_RECONCILE "[reconcile]\nenabled = false\n"

static struct hk_daemon d;

/* ---- running komerce-hookctl ---- */

struct run {
	int rc;
	char *out, *err;
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	ck_assert_msg(f != NULL, "cannot read %s: errno %d", path, errno);
	do {
		if (cap - len < 65536) {
			cap = cap * 2 + 65536;
			buf = realloc(buf, cap + 1);
			ck_assert_ptr_nonnull(buf);
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return buf;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

/* Runs $HOOKCTL_BIN with args (NULL-terminated), stdout and stderr captured in files. */
static void ctl_argv(struct run *r, const char *const *args)
{
	const char *bin = getenv("HOOKCTL_BIN");
	static int seq;
	char outp[400], errp[400];
	const char *argv[64];
	size_t n = 0;
	pid_t pid;
	int status;

	ck_assert_msg(bin != NULL && bin[0] != '\0', "HOOKCTL_BIN is not set");
	argv[n++] = bin;
	for (size_t i = 0; args[i] != NULL && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	snprintf(outp, sizeof(outp), "%s/ctl-%d-%d.out", d.dir, (int)getpid(), seq);
	snprintf(errp, sizeof(errp), "%s/ctl-%d-%d.err", d.dir, (int)getpid(), seq++);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fo = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fo < 0 || fe < 0)
			_exit(126);
		dup2(fo, STDOUT_FILENO);
		dup2(fe, STDERR_FILENO);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	r->rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	ck_assert_msg(r->rc != 126 && r->rc != 127, "%s did not run (exit %d; output to %s)", bin,
		      r->rc, outp);
	r->out = slurp(outp);
	r->err = slurp(errp);
	unlink(outp);
	unlink(errp);
}

#define CTL(r, ...) ctl_argv((r), (const char *const[]){__VA_ARGS__, NULL})

/* Runs a read command on d.db and parses its JSON output (array or object). */
static cJSON *ctl_json(const char *const *args)
{
	struct run r;
	cJSON *j;

	ctl_argv(&r, args);
	ck_assert_msg(r.rc == 0, "exit %d: %s", r.rc, r.err);
	ck_assert_msg(r.err[0] == '\0', "stderr: %s", r.err);
	j = cJSON_Parse(r.out);
	ck_assert_msg(j != NULL, "not JSON: %.300s", r.out);
	run_free(&r);
	return j;
}

#define CTL_JSON(...) ctl_json((const char *const[]){__VA_ARGS__, NULL})

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* Splits s in place at sep into at most max pieces; an empty last piece is dropped. */
static size_t split(char *s, char sep, char **out, size_t max)
{
	size_t n = 0;

	while (*s != '\0' && n < max) {
		char *end = strchr(s, sep);

		out[n++] = s;
		if (end == NULL)
			break;
		*end = '\0';
		s = end + 1;
	}
	return n;
}

/* ---- filling the database ---- */

static void post(const char *payment_id, const char *order_id, const char *status, long amount)
{
	char body[512];
	struct hk_reply r;
	cJSON *o = cJSON_CreateObject();
	char *text;

	cJSON_AddStringToObject(o, "payment_id", payment_id);
	if (order_id != NULL)
		cJSON_AddStringToObject(o, "order_id", order_id);
	cJSON_AddStringToObject(o, "status", status);
	cJSON_AddNumberToObject(o, "amount", (double)amount);
	text = cJSON_PrintUnformatted(o);
	snprintf(body, sizeof(body), "%s", text);
	free(text);
	cJSON_Delete(o);
	ck_assert_int_eq(hk_post_callback(&d, body, HK_CALLBACK_KEY, &r), 200);
}

/* An event from the reconciler or the admin API, written through the store writer the way
 * the daemon does (the daemon is not running yet). */
static void seed(struct store *s, enum event_source src, const char *payment_id,
		 const char *order_id, const char *status, long amount, int64_t expires_at)
{
	struct store_req req;
	struct event ev;
	char raw[256];

	memset(&ev, 0, sizeof(ev));
	snprintf(ev.payment_id, sizeof(ev.payment_id), "%s", payment_id);
	snprintf(ev.order_id, sizeof(ev.order_id), "%s", order_id);
	ev.status = payment_status_parse(status);
	ev.amount = amount;
	ev.source = src;
	ev.expires_at = expires_at;
	snprintf(raw, sizeof(raw), "{\"payment_id\":\"%s\",\"status\":\"%s\"}", payment_id, status);
	ev.raw = raw;
	ev.raw_len = strlen(raw);
	store_req_event(&req, &ev);
	ck_assert_int_eq(store_submit_wait(s, &req), 0);
	ck_assert(!req.duplicate);
}

static struct store *open_writer(const char *path)
{
	struct store_opts o = {.busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[512];

	hk_store_target(&o, path);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(store_writer_start(s), 0);
	return s;
}

static struct store *open_ro(const char *path)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s = NULL;
	char err[512];

	hk_store_target(&o, path);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

/* The "core" data set (11 events, 13 receipts, 8 payments):
 *  1 STALE   PENDING api (expired an hour ago)   2 FRESH PENDING api (expires in an hour)
 *  3 REC     PENDING api      4 REC  PAID reconcile (the callback never came)
 *  5 LATE    PAID reconcile   (its callback arrives later: a second receipt of event 5)
 *  6 A1      PENDING          7 A1 PAID (posted twice: 2 receipts)        order ORD-1
 *  8 KPAY-5292/KM/2026 PAID, order with a comma and quotes
 *  9 C1 PAID                 10 C1 EXPIRED (conflict)
 * 11 A2      PENDING                                                      order ORD-1 */
#define CORE_EVENTS 11
static const char quoted_order[] = "ORD,2 \"quoted\"";

static void core_setup(void)
{
	int64_t now_s = util_now_ms() / 1000;
	struct store *s;

	hk_daemon_init(&d, NO_RECONCILE);
	s = open_writer(d.db);
	seed(s, EVENT_SOURCE_API, "KOMPAY-STALE", "ORD-STALE", "PENDING", 5000, now_s - 3600);
	seed(s, EVENT_SOURCE_API, "KOMPAY-FRESH", "ORD-FRESH", "PENDING", 6000, now_s + 3600);
	seed(s, EVENT_SOURCE_API, "KOMPAY-REC", "ORD-REC", "PENDING", 7000, now_s + 3600);
	seed(s, EVENT_SOURCE_RECONCILE, "KOMPAY-REC", "ORD-REC", "PAID", 7000, 0);
	seed(s, EVENT_SOURCE_RECONCILE, "KOMPAY-LATE", "ORD-LATE", "PAID", 8000, 0);
	store_close(s);

	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
	post("KOMPAY-A1", "ORD-1", "PENDING", 100000);
	post("KOMPAY-A1", "ORD-1", "PAID", 100000);
	post("KOMPAY-A1", "ORD-1", "PAID", 100000);
	post("KPAY-5292/KM/2026", quoted_order, "PAID", 250000);
	post("KOMPAY-C1", "ORD-C1", "PAID", 9000);
	post("KOMPAY-C1", "ORD-C1", "EXPIRED", 9000);
	post("KOMPAY-LATE", "ORD-LATE", "PAID", 8000);
	post("KOMPAY-A2", "ORD-1", "PENDING", 100000);
	ck_assert_int_eq(hk_count(&d, "events"), CORE_EVENTS);
}

static void core_teardown(void)
{
	hk_daemon_cleanup(&d);
}

/* ids of a JSON array of events, as "1,2,3". */
static void ids_of(const cJSON *arr, char *out, size_t n)
{
	const cJSON *e;
	size_t o = 0;

	out[0] = '\0';
	cJSON_ArrayForEach(e, arr)
	{
		int w = snprintf(out + o, n - o, "%s%d", o > 0 ? "," : "",
				 cJSON_GetObjectItem(e, "id")->valueint);

		o += w > 0 ? (size_t)w : 0;
	}
}

static void assert_ids(const char *want, const char *const *args)
{
	char got[512];
	cJSON *j = ctl_json(args);

	ck_assert(cJSON_IsArray(j));
	ids_of(j, got, sizeof(got));
	ck_assert_msg(strcmp(got, want) == 0, "%s %s %s: got [%s], want [%s]", args[3],
		      args[4] != NULL ? args[4] : "", args[5] != NULL ? args[5] : "", got, want);
	cJSON_Delete(j);
}

#define ASSERT_IDS(want, ...) assert_ids((want), (const char *const[]){__VA_ARGS__, NULL})

/* ---- core: events ---- */

START_TEST(events_json_has_every_field)
{
	cJSON *j = CTL_JSON("--db", d.db, "events", "--format", "json"), *e;
	int64_t prev_ms = 0;
	int i = 0;

	ck_assert_int_eq(cJSON_GetArraySize(j), CORE_EVENTS);
	cJSON_ArrayForEach(e, j)
	{
		const cJSON *at = cJSON_GetObjectItem(e, "received_at");
		const cJSON *cb = cJSON_GetObjectItem(e, "callback");
		int64_t ms;

		i++;
		ck_assert_int_eq(cJSON_GetObjectItem(e, "id")->valueint, i);
		ck_assert(cJSON_IsString(at));
		ck_assert_int_eq(util_parse_time_ms(at->valuestring, &ms), 0);
		ck_assert(at->valuestring[strlen(at->valuestring) - 1] == 'Z');
		ck_assert(ms >= prev_ms);
		prev_ms = ms;
		ck_assert(cJSON_IsObject(cb));
		ck_assert_str_eq(cJSON_GetObjectItem(cb, "payment_id")->valuestring,
				 cJSON_GetObjectItem(e, "payment_id")->valuestring);
		ck_assert(cJSON_IsBool(cJSON_GetObjectItem(e, "conflict")));
		ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(e, "amount")));
		ck_assert(cJSON_IsString(cJSON_GetObjectItem(e, "source")));
		ck_assert_int_eq(cJSON_GetObjectItem(e, "receipts")->valueint,
				 i == 5 || i == 7 ? 2 : 1);
		ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(e, "conflict")) == (i == 10));
	}
	e = cJSON_GetArrayItem(j, 7);
	ck_assert_str_eq(cJSON_GetObjectItem(e, "payment_id")->valuestring, "KPAY-5292/KM/2026");
	ck_assert_str_eq(cJSON_GetObjectItem(e, "order_id")->valuestring, quoted_order);
	ck_assert_str_eq(cJSON_GetObjectItem(e, "status")->valuestring, "PAID");
	ck_assert_int_eq(cJSON_GetObjectItem(e, "amount")->valueint, 250000);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 3), "source")->valuestring,
			 "reconcile");
	cJSON_Delete(j);
}
END_TEST

START_TEST(events_filters)
{
	ASSERT_IDS("6,7", "--db", d.db, "events", "--payment-id", "KOMPAY-A1", "--format", "json");
	ASSERT_IDS("8", "--db", d.db, "events", "--payment-id", "KPAY-5292/KM/2026", "--format",
		   "json");
	ASSERT_IDS("6,7,11", "--db", d.db, "events", "--order-id", "ORD-1", "--format", "json");
	ASSERT_IDS("8", "--db", d.db, "events", "--order-id", quoted_order, "--format", "json");
	ASSERT_IDS("10", "--db", d.db, "events", "--status", "EXPIRED", "--format", "json");
	ASSERT_IDS("1,2,3,6,11", "--db", d.db, "events", "--status", "pending", "--format", "json");
	ASSERT_IDS("4,5", "--db", d.db, "events", "--source", "reconcile", "--format", "json");
	ASSERT_IDS("1,2,3", "--db", d.db, "events", "--source", "api", "--format", "json");
	ASSERT_IDS("1,2,3", "--db", d.db, "events", "--limit", "3", "--format", "json");
	ASSERT_IDS("10,11", "--db", d.db, "events", "--after-id", "9", "--format", "json");
	/* combined */
	ASSERT_IDS("7", "--db", d.db, "events", "--payment-id", "KOMPAY-A1", "--status", "PAID",
		   "--format", "json");
	ASSERT_IDS("7,11", "--db", d.db, "events", "--order-id", "ORD-1", "--source", "callback",
		   "--after-id", "6", "--format", "json");
	ASSERT_IDS("", "--db", d.db, "events", "--payment-id", "KOMPAY-A1", "--source", "api",
		   "--format", "json");
	ASSERT_IDS("", "--db", d.db, "events", "--payment-id", "nobody", "--format", "json");
}
END_TEST

/* --since / --until against the times the events really got (ISO and unix seconds). */
START_TEST(events_time_filters)
{
	cJSON *all = CTL_JSON("--db", d.db, "events", "--format", "json"), *e;
	const char *t9 =
		cJSON_GetObjectItem(cJSON_GetArrayItem(all, 8), "received_at")->valuestring;
	char since_want[256] = "", until_want[256] = "", secs_want[256] = "", secs[32];
	int64_t ms9, ms;
	size_t a = 0, b = 0, c = 0;

	ck_assert_int_eq(util_parse_time_ms(t9, &ms9), 0);
	snprintf(secs, sizeof(secs), "%lld", (long long)(ms9 / 1000));
	cJSON_ArrayForEach(e, all)
	{
		int id = cJSON_GetObjectItem(e, "id")->valueint;

		util_parse_time_ms(cJSON_GetObjectItem(e, "received_at")->valuestring, &ms);
		if (ms >= ms9)
			a += (size_t)snprintf(since_want + a, sizeof(since_want) - a, "%s%d",
					      a > 0 ? "," : "", id);
		else
			b += (size_t)snprintf(until_want + b, sizeof(until_want) - b, "%s%d",
					      b > 0 ? "," : "", id);
		if (ms >= ms9 / 1000 * 1000)
			c += (size_t)snprintf(secs_want + c, sizeof(secs_want) - c, "%s%d",
					      c > 0 ? "," : "", id);
	}
	ck_assert(strstr(since_want, "9") != NULL);
	ASSERT_IDS(since_want, "--db", d.db, "events", "--since", t9, "--format", "json");
	ASSERT_IDS(until_want, "--db", d.db, "events", "--until", t9, "--format", "json");
	ASSERT_IDS(secs_want, "--db", d.db, "events", "--since", secs, "--format", "json");
	ASSERT_IDS("", "--db", d.db, "events", "--since", "2100-01-01", "--format", "json");
	ASSERT_IDS("", "--db", d.db, "events", "--until", "2000-01-01T00:00:00+07:00", "--format",
		   "json");
	cJSON_Delete(all);
}
END_TEST

START_TEST(events_jsonl_one_object_a_line)
{
	struct run r;
	char *lines[64];
	size_t n;

	CTL(&r, "--db", d.db, "events", "--format", "jsonl");
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(count_lines(r.out), CORE_EVENTS);
	n = split(r.out, '\n', lines, 64);
	ck_assert_int_eq(n, CORE_EVENTS);
	for (size_t i = 0; i < n; i++) {
		cJSON *o = cJSON_Parse(lines[i]);

		ck_assert_msg(cJSON_IsObject(o), "not an object: %s", lines[i]);
		ck_assert_int_eq(cJSON_GetObjectItem(o, "id")->valueint, (int)i + 1);
		cJSON_Delete(o);
	}
	run_free(&r);
}
END_TEST

/* RFC 4180: records end in CRLF; a field with a comma, quote or line break is quoted with its
 * quotes doubled. Parses the output back into rows of fields (a cJSON array of arrays). */
static cJSON *csv_parse(const char *p)
{
	cJSON *rows = cJSON_CreateArray(), *row = cJSON_CreateArray();
	char *field = malloc(strlen(p) + 1);

	for (;;) {
		size_t n = 0;

		if (*p == '"') {
			for (p++;; p++) {
				ck_assert_msg(*p != '\0', "unterminated quoted field");
				if (*p == '"' && p[1] == '"') {
					field[n++] = '"';
					p++;
				} else if (*p == '"') {
					p++;
					break;
				} else {
					field[n++] = *p;
				}
			}
		} else {
			while (*p != '\0' && *p != ',' && *p != '\r' && *p != '\n' && *p != '"')
				field[n++] = *p++;
		}
		field[n] = '\0';
		cJSON_AddItemToArray(row, cJSON_CreateString(field));
		if (*p == ',') {
			p++;
			continue;
		}
		ck_assert_msg(p[0] == '\r' && p[1] == '\n', "record does not end in CRLF: %.40s",
			      p);
		p += 2;
		cJSON_AddItemToArray(rows, row);
		if (*p == '\0')
			break;
		row = cJSON_CreateArray();
	}
	free(field);
	return rows;
}

START_TEST(events_csv_rfc4180)
{
	struct run r;
	cJSON *rows, *row, *hdr;
	int order_col = -1, cb_col = -1;

	CTL(&r, "--db", d.db, "events", "--format", "csv");
	ck_assert_int_eq(r.rc, 0);
	ck_assert_msg(strstr(r.out, ",\"ORD,2 \"\"quoted\"\"\",") != NULL, "%s", r.out);
	rows = csv_parse(r.out);
	ck_assert_int_eq(cJSON_GetArraySize(rows), CORE_EVENTS + 1);
	hdr = cJSON_GetArrayItem(rows, 0);
	for (int i = 0; i < cJSON_GetArraySize(hdr); i++) {
		if (strcmp(cJSON_GetArrayItem(hdr, i)->valuestring, "order_id") == 0)
			order_col = i;
		if (strcmp(cJSON_GetArrayItem(hdr, i)->valuestring, "callback") == 0)
			cb_col = i;
	}
	ck_assert_int_ge(order_col, 0);
	ck_assert_int_ge(cb_col, 0);
	cJSON_ArrayForEach(row, rows)
	{
		ck_assert_int_eq(cJSON_GetArraySize(row), cJSON_GetArraySize(hdr));
	}
	row = cJSON_GetArrayItem(rows, 8);
	ck_assert_str_eq(cJSON_GetArrayItem(row, 0)->valuestring, "8");
	ck_assert_str_eq(cJSON_GetArrayItem(row, order_col)->valuestring, quoted_order);
	{
		cJSON *cb = cJSON_Parse(cJSON_GetArrayItem(row, cb_col)->valuestring);

		ck_assert_msg(cb != NULL, "the callback column is not the raw JSON");
		ck_assert_str_eq(cJSON_GetObjectItem(cb, "order_id")->valuestring, quoted_order);
		cJSON_Delete(cb);
	}
	cJSON_Delete(rows);
	run_free(&r);
}
END_TEST

/* People read the table: a header, one aligned line per event, UTC ISO 8601 times. */
START_TEST(events_table_aligned)
{
	static const char *const titles[] = {"RECEIVED", "PAYMENT", "STATUS", "SOURCE"};
	struct run r;
	char *lines[64];
	size_t n;

	CTL(&r, "--db", d.db, "events");
	ck_assert_int_eq(r.rc, 0);
	n = split(r.out, '\n', lines, 64);
	ck_assert_int_eq(n, CORE_EVENTS + 1);
	ck_assert_msg(strncmp(lines[0], "ID", 2) == 0 || strstr(lines[0], " ID") != NULL, "%s",
		      lines[0]);
	ck_assert(strstr(lines[0], "RECEIPTS") != NULL);
	for (size_t t = 0; t < sizeof(titles) / sizeof(titles[0]); t++) {
		size_t col = (size_t)(strstr(lines[0], titles[t]) - lines[0]);

		for (size_t i = 1; i < n; i++) {
			ck_assert_msg(strlen(lines[i]) > col && lines[i][col] != ' ' &&
					      lines[i][col - 1] == ' ',
				      "column %s not aligned on line %zu: '%s'", titles[t], i,
				      lines[i]);
		}
	}
	ck_assert_msg(strstr(lines[1], "T") != NULL && strstr(lines[1], "Z  ") != NULL, "%s",
		      lines[1]);
	ck_assert(strstr(lines[8], "KPAY-5292/KM/2026") != NULL);
	run_free(&r);
}
END_TEST

/* ---- core: payments, stats, verify ---- */

START_TEST(payments_stale_and_status)
{
	cJSON *j = CTL_JSON("--db", d.db, "payments", "--stale", "--format", "json");

	ck_assert_int_eq(cJSON_GetArraySize(j), 1);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "payment_id")->valuestring,
			 "KOMPAY-STALE");
	ck_assert(cJSON_IsString(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "expires_at")));
	cJSON_Delete(j);
	j = CTL_JSON("--db", d.db, "payments", "--status", "PENDING", "--format", "json");
	ck_assert_int_eq(cJSON_GetArraySize(j), 3);
	cJSON_Delete(j);
	j = CTL_JSON("--db", d.db, "payments", "--format", "json");
	ck_assert_int_eq(cJSON_GetArraySize(j), 8);
	cJSON_Delete(j);
}
END_TEST

static long long num_at(const cJSON *root, const char *path)
{
	char buf[128], *keys[8];
	const cJSON *o = root;
	size_t n;

	snprintf(buf, sizeof(buf), "%s", path);
	n = split(buf, '.', keys, 8);
	for (size_t i = 0; i < n; i++)
		o = cJSON_GetObjectItem(o, keys[i]);
	ck_assert_msg(cJSON_IsNumber(o), "%s missing", path);
	return (long long)o->valuedouble;
}

START_TEST(stats_counts)
{
	cJSON *j = CTL_JSON("--db", d.db, "stats", "--format", "json");
	struct run r;

	ck_assert_int_eq(num_at(j, "events.total"), 11);
	ck_assert_int_eq(num_at(j, "events.by_status.PENDING"), 5);
	ck_assert_int_eq(num_at(j, "events.by_status.PAID"), 5);
	ck_assert_int_eq(num_at(j, "events.by_status.EXPIRED"), 1);
	ck_assert_int_eq(num_at(j, "events.by_status.CANCELED"), 0);
	ck_assert_int_eq(num_at(j, "events.by_source.callback"), 6);
	ck_assert_int_eq(num_at(j, "events.by_source.reconcile"), 2);
	ck_assert_int_eq(num_at(j, "events.by_source.api"), 3);
	ck_assert_int_eq(num_at(j, "events.conflicts"), 1);
	ck_assert_int_eq(num_at(j, "receipts"), 13);
	ck_assert_int_eq(num_at(j, "duplicates"), 2);
	ck_assert_int_eq(num_at(j, "payments.total"), 8);
	ck_assert_int_eq(num_at(j, "payments.by_status.PENDING"), 3);
	ck_assert_int_eq(num_at(j, "payments.by_status.PAID"), 5);
	ck_assert_int_eq(num_at(j, "payments.stale"), 1);
	ck_assert_int_eq(num_at(j, "reconciled.total"), 2);
	ck_assert_int_eq(num_at(j, "reconciled.callback_missed"), 1);
	ck_assert_int_eq(num_at(j, "reconciled.callback_late"), 1);
	ck_assert_int_eq(num_at(j, "outbox.pending"), 0);
	cJSON_Delete(j);

	CTL(&r, "--db", d.db, "stats");
	ck_assert_int_eq(r.rc, 0);
	ck_assert_msg(strstr(r.out, "callback missed 1, late 1") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "conflicts         1") != NULL, "%s", r.out);
	run_free(&r);
}
END_TEST

START_TEST(verify_intact_chain)
{
	struct run r;

	CTL(&r, "--db", d.db, "verify");
	ck_assert_msg(r.rc == 0, "exit %d: %s%s", r.rc, r.out, r.err);
	ck_assert_msg(strstr(r.out, "OK, 11 events checked") != NULL, "%s", r.out);
	run_free(&r);
	/* through the daemon's own config file instead of --db */
	CTL(&r, "-c", d.conf, "verify");
	ck_assert_msg(r.rc == 0, "exit %d: %s%s", r.rc, r.out, r.err);
	run_free(&r);
}
END_TEST

/* ---- core: the events API page builder and the query plan ---- */

START_TEST(events_pages_walk_every_event_once)
{
	struct store *s = open_ro(d.db);
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN};
	char why[128], got[512] = "";
	size_t o = 0;
	int pages = 0;

	ck_assert_int_eq(audit_filter_set(&f, "limit", "4", why, sizeof(why)), 0);
	for (;;) {
		char *body = NULL;
		cJSON *j, *e, *next;

		ck_assert_int_eq(audit_events_page(s, &f, 1 << 20, &body), 0);
		j = cJSON_Parse(body);
		ck_assert_msg(j != NULL, "%s", body);
		free(body);
		pages++;
		cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "events"))
		{
			o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%d", o > 0 ? "," : "",
					      cJSON_GetObjectItem(e, "id")->valueint);
			ck_assert(cJSON_IsObject(cJSON_GetObjectItem(e, "callback")));
		}
		next = cJSON_GetObjectItem(j, "next_after_id");
		if (cJSON_IsNull(next)) {
			cJSON_Delete(j);
			break;
		}
		ck_assert(cJSON_IsNumber(next));
		f.after_id = (int64_t)next->valuedouble;
		cJSON_Delete(j);
		ck_assert_int_lt(pages, 10);
	}
	ck_assert_str_eq(got, "1,2,3,4,5,6,7,8,9,10,11");
	ck_assert_int_eq(pages, 3);

	/* a byte cap still makes progress: one event a page */
	{
		struct store_event_filter g = {.status = PAYMENT_UNKNOWN, .limit = 100};
		char *body = NULL;
		cJSON *j;

		ck_assert_int_eq(audit_events_page(s, &g, 1, &body), 0);
		j = cJSON_Parse(body);
		ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "events")), 1);
		ck_assert_int_eq(cJSON_GetObjectItem(j, "next_after_id")->valueint, 1);
		cJSON_Delete(j);
		free(body);
	}
	store_close(s);
}
END_TEST

START_TEST(filter_parameters_are_validated)
{
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN};
	char why[128];

	ck_assert_int_eq(audit_filter_set(&f, "limit", "0", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "limit", "-3", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "after_id", "x1", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "since", "yesterday", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "status", "REFUNDED", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "source", "web", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "colour", "red", why, sizeof(why)), -ENOENT);
	ck_assert_int_eq(audit_filter_set(&f, "source", "Reconcile", why, sizeof(why)), 0);
	ck_assert_str_eq(f.source, "reconcile");
	ck_assert_int_eq(
		audit_filter_set(&f, "until", "2026-08-12T10:15:30.5+07:00", why, sizeof(why)), 0);
	ck_assert_int_eq(f.until_ms, 1786504530500LL);
}
END_TEST

/* Events of one payment are found through the dedupe_key index ("<payment_id>:<status>"
 * prefix range, sql/001_init.sql), events of an order through events_order: never a scan of
 * the events table, whatever else is filtered. */
#define BY_PAYMENT \
	(hk_backend_pg() ? "Index Cond: ((dedupe_key >=" : "(dedupe_key>? AND dedupe_key<?)")
#define BY_ORDER (hk_backend_pg() ? "events_order" : "USING INDEX events_order (order_id=?")

/* PostgreSQL's planner (rightly) scans a table of 11 rows: there the plan is only checked to
 * be the events query's; the 100 000-event test checks its index use at size. */
static void assert_plan(struct store *s, const struct store_event_filter *f, const char *needle)
{
	char plan[2048];

	ck_assert_int_eq(store_events_plan(s, f, plan, sizeof(plan)), 0);
	fprintf(stderr, "EXPLAIN QUERY PLAN (%s):\n%s", needle, plan);
	if (hk_backend_pg()) {
		ck_assert_msg(strstr(plan, "on events e") != NULL, "not the events query:\n%s",
			      plan);
		return;
	}
	ck_assert_msg(strstr(plan, needle) != NULL, "plan does not search by %s:\n%s", needle,
		      plan);
	ck_assert_msg(strstr(plan, "receipts_event") != NULL, "receipts count not by index:\n%s",
		      plan);
}

START_TEST(events_query_uses_indexes)
{
	struct store *s = open_ro(d.db);
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN, .payment_id = "KOMPAY-A1"};

	assert_plan(s, &f, BY_PAYMENT);
	f.after_id = 6;
	f.limit = 100;
	f.status = PAYMENT_PAID;
	assert_plan(s, &f, BY_PAYMENT);
	memset(&f, 0, sizeof(f));
	f.status = PAYMENT_UNKNOWN;
	f.order_id = "ORD-1";
	assert_plan(s, &f, BY_ORDER);
	f.source = "callback";
	f.since_ms = 1;
	f.after_id = 3;
	assert_plan(s, &f, BY_ORDER);
	store_close(s);
}
END_TEST

/* ---- core: GET /v1/events on the admin listener ---- */

static long api_get(const char *query, struct hk_reply *r, bool token)
{
	const char *headers[] = {"Authorization: Bearer " HK_ADMIN_TOKEN, NULL};
	char url[768];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/events%s", d.admin_port, query);
	return hk_request("GET", url, token ? headers : NULL, NULL, 0, 10000, r);
}

/* ids of a page, and its next_after_id (-1 when null). */
static cJSON *api_page(const char *query, char *ids, size_t n, long long *ret_next)
{
	static struct hk_reply r;
	cJSON *j, *next;

	ck_assert_int_eq(api_get(query, &r, true), 200);
	j = cJSON_Parse(r.body);
	ck_assert_msg(j != NULL, "%s", r.body);
	ids_of(cJSON_GetObjectItem(j, "events"), ids, n);
	next = cJSON_GetObjectItem(j, "next_after_id");
	ck_assert_msg(cJSON_IsNull(next) || cJSON_IsNumber(next), "%s", r.body);
	*ret_next = cJSON_IsNull(next) ? -1 : (long long)next->valuedouble;
	return j;
}

static void assert_api_ids(const char *query, const char *want)
{
	char ids[512];
	long long next;
	cJSON *j = api_page(query, ids, sizeof(ids), &next);

	ck_assert_msg(strcmp(ids, want) == 0, "%s: got [%s], want [%s]", query, ids, want);
	ck_assert_int_eq(next, -1);
	cJSON_Delete(j);
}

START_TEST(api_events_filters_and_cursor)
{
	char ids[512], all[512] = "", query[128];
	long long next = 0;
	struct hk_reply r;
	cJSON *j, *e;
	size_t o = 0;
	int pages = 0;

	/* walk the cursor, 4 a page */
	do {
		snprintf(query, sizeof(query), "?limit=4&after_id=%lld", next);
		j = api_page(query, ids, sizeof(ids), &next);
		o += (size_t)snprintf(all + o, sizeof(all) - o, "%s%s", o > 0 ? "," : "", ids);
		cJSON_Delete(j);
		ck_assert_int_lt(++pages, 10);
	} while (next != -1);
	ck_assert_str_eq(all, "1,2,3,4,5,6,7,8,9,10,11");
	ck_assert_int_eq(pages, 3);
	j = api_page("", ids, sizeof(ids), &next); /* default limit 100 */
	ck_assert_str_eq(ids, "1,2,3,4,5,6,7,8,9,10,11");
	/* issue 20: the same envelope as every other route */
	ck_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "ok");
	cJSON_Delete(j);

	/* an id with slashes and an order with a comma and quotes, percent-encoded */
	j = api_page("?payment_id=KPAY-5292%2FKM%2F2026", ids, sizeof(ids), &next);
	ck_assert_str_eq(ids, "8");
	e = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "events"), 0);
	ck_assert_str_eq(cJSON_GetObjectItem(e, "order_id")->valuestring, quoted_order);
	ck_assert_str_eq(cJSON_GetObjectItem(e, "status")->valuestring, "PAID");
	ck_assert_int_eq(cJSON_GetObjectItem(e, "amount")->valueint, 250000);
	ck_assert_str_eq(cJSON_GetObjectItem(e, "source")->valuestring, "callback");
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(e, "conflict")));
	ck_assert_int_eq(cJSON_GetObjectItem(e, "receipts")->valueint, 1);
	ck_assert(cJSON_GetObjectItem(e, "received_at")->valuestring[23] == 'Z');
	ck_assert_str_eq(
		cJSON_GetObjectItem(cJSON_GetObjectItem(e, "callback"), "payment_id")->valuestring,
		"KPAY-5292/KM/2026");
	cJSON_Delete(j);
	assert_api_ids("?order_id=ORD%2C2%20%22quoted%22", "8");
	assert_api_ids("?order_id=ORD-1", "6,7,11");
	assert_api_ids("?payment_id=KOMPAY-A1&status=paid", "7");
	assert_api_ids("?status=EXPIRED", "10");
	assert_api_ids("?source=reconcile", "4,5");
	assert_api_ids("?order_id=ORD-1&source=callback&after_id=6", "7,11");
	assert_api_ids("?since=2100-01-01T00:00:00Z", "");
	assert_api_ids("?until=946684800", "");
	assert_api_ids("?payment_id=&order_id=&limit=", "1,2,3,4,5,6,7,8,9,10,11");

	/* a bad value is a 400 that names the parameter */
	{
		static const char *const bad[][2] = {
			{"?limit=0", "limit"},
			{"?limit=1001", "limit"},
			{"?limit=ten", "limit"},
			{"?after_id=-1", "after_id"},
			{"?since=yesterday", "since"},
			{"?until=2026-02-30x", "until"},
			{"?status=REFUNDED", "status"},
			{"?source=web", "source"},
			/* issue 20: an unknown parameter is named, not ignored */
			{"?bogus=1", "unknown parameter bogus"},
			{"?limit=5&stauts=PAID", "unknown parameter stauts"},
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			ck_assert_int_eq(api_get(bad[i][0], &r, true), 400);
			ck_assert_msg(strstr(r.body, bad[i][1]) != NULL, "%s: %s", bad[i][0],
				      r.body);
		}
	}
	ck_assert_int_eq(api_get("?limit=1000", &r, true), 200);
	ck_assert_int_eq(api_get("", &r, false), 401);
}
END_TEST

/* ---- core: usage errors ---- */

static void assert_usage_error(const char *needle, const char *const *args)
{
	struct run r;

	ctl_argv(&r, args);
	ck_assert_msg(r.rc == 2, "exit %d for %s %s", r.rc, args[0], args[1] ? args[1] : "");
	ck_assert_msg(count_lines(r.err) == 1, "stderr is not one line: %s", r.err);
	ck_assert_msg(strstr(r.err, needle) != NULL, "'%s' not in: %s", needle, r.err);
	ck_assert_str_eq(r.out, "");
	run_free(&r);
}

#define USAGE_ERROR(needle, ...) \
	assert_usage_error((needle), (const char *const[]){__VA_ARGS__, NULL})

START_TEST(errors_exit_2_with_one_line)
{
	char missing[400];

	snprintf(missing, sizeof(missing), "%s/no-such.db", d.dir);
	USAGE_ERROR("--colour", "--db", d.db, "events", "--colour", "red");
	USAGE_ERROR("-x", "--db", d.db, "verify", "-x");
	USAGE_ERROR("--bogus", "--bogus", "events");
	USAGE_ERROR("--since", "--db", d.db, "events", "--since", "yesterday");
	USAGE_ERROR("--until", "--db", d.db, "events", "--until", "2026-13-01");
	USAGE_ERROR("--status", "--db", d.db, "events", "--status", "REFUNDED");
	USAGE_ERROR("--limit", "--db", d.db, "events", "--limit", "0");
	USAGE_ERROR("--limit", "--db", d.db, "payments", "--limit");
	USAGE_ERROR("--format", "--db", d.db, "events", "--format", "xml");
	USAGE_ERROR("no such file", "--db", missing, "events");
	USAGE_ERROR("no such file", "--db", missing, "verify");
	USAGE_ERROR("no such file", "--db", missing, "backup", "/tmp/never-written.db");
	USAGE_ERROR("config", "-c", missing, "stats");
	USAGE_ERROR("unknown command", "--db", d.db, "frobnicate");
	USAGE_ERROR("missing COMMAND", "--db", d.db);
	USAGE_ERROR("EVENT_ID", "--db", d.db, "replay", "seven");
	USAGE_ERROR("not a komerce-hookd database", "--db", d.conf, "events");
}
END_TEST

START_TEST(help_for_every_command)
{
	static const char *const cmds[] = {"events", "payments", "outbox", "stats",
					   "verify", "replay",	 "backup", "migrate-to"};
	struct run r;

	CTL(&r, "--help");
	ck_assert_int_eq(r.rc, 0);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		ck_assert_msg(strstr(r.out, cmds[i]) != NULL, "%s missing from --help", cmds[i]);
	run_free(&r);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		CTL(&r, cmds[i], "--help");
		ck_assert_int_eq(r.rc, 0);
		ck_assert(strncmp(r.out, "usage: komerce-hookctl ", 23) == 0);
		ck_assert(strncmp(r.out + 23, cmds[i], strlen(cmds[i])) == 0);
		run_free(&r);
	}
}
END_TEST

/* ---- tamper evidence (the daemon filled the database and stopped) ---- */

#define TAMPER_EVENTS 10

static void tamper_setup(void)
{
	char id[32];

	hk_daemon_init(&d, NO_RECONCILE "[store]\ncheckpoint_key = audit-checkpoint-key-0001\n");
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
	for (int i = 1; i <= TAMPER_EVENTS; i++) {
		snprintf(id, sizeof(id), "KOMPAY-T%d", i);
		post(id, "ORD-T", "PAID", 1000 * i);
	}
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
}

/* What an attacker with write access to the database does: plain SQL past the triggers (SQLite:
 * dropped; PostgreSQL: disabled, which the table's owner may do). */
static void attack(const char *trigger, const char *sql)
{
	char all[1024], msg[512];

	snprintf(all, sizeof(all),
		 hk_backend_pg() ? "ALTER TABLE events DISABLE TRIGGER %s; %s"
				 : "DROP TRIGGER IF EXISTS %s; %s",
		 trigger, sql);
	ck_assert_msg(hk_db_exec(&d, all, msg, sizeof(msg)) == 0, "%s: %s", all, msg);
}

/* Plain SQL on the daemon's database (seeding, no trigger in the way). */
static void db_exec_ok(const char *sql)
{
	char msg[512];

	ck_assert_msg(hk_db_exec(&d, sql, msg, sizeof(msg)) == 0, "%s: %s", sql, msg);
}

static void assert_verify_fails_at(long long id, const char *why)
{
	struct run r;
	char want[64];

	CTL(&r, "--db", d.db, "verify");
	ck_assert_msg(r.rc == 1, "verify exit %d: %s%s", r.rc, r.out, r.err);
	snprintf(want, sizeof(want), "FAILED at event %lld:", id);
	ck_assert_msg(strstr(r.out, want) != NULL, "'%s' not in: %s", want, r.out);
	ck_assert_msg(strstr(r.out, why) != NULL, "'%s' not in: %s", why, r.out);
	run_free(&r);
}

START_TEST(triggers_refuse_update_and_delete)
{
	char msg[512];

	ck_assert_int_ne(hk_db_exec(&d, "UPDATE events SET status = 'EXPIRED' WHERE id = 4", msg,
				    sizeof(msg)),
			 0);
	ck_assert_msg(strstr(msg, "append-only") != NULL, "%s", msg);
	ck_assert_int_ne(hk_db_exec(&d, "DELETE FROM events WHERE id = 4", msg, sizeof(msg)), 0);
	ck_assert_msg(strstr(msg, "append-only") != NULL, "%s", msg);
	{
		struct run r;

		CTL(&r, "--db", d.db, "verify");
		ck_assert_msg(r.rc == 0, "%s%s", r.out, r.err);
		ck_assert_msg(strstr(r.out, "OK, 10 events checked") != NULL, "%s", r.out);
		run_free(&r);
	}
}
END_TEST

START_TEST(tamper_edit_status)
{
	attack("events_no_update", "UPDATE events SET status = 'EXPIRED' WHERE id = 4");
	assert_verify_fails_at(4, "altered");
}
END_TEST

/* The first cell of sql on the daemon's database. */
static void cell(const char *sql, char *out, size_t n)
{
	ck_assert_msg(hk_db_exec(&d, sql, out, n) == 0, "%s: %s", sql, out);
}

START_TEST(tamper_edit_amount_and_rehash_is_caught_by_next_row)
{
	/* Rewriting a row's hash to match its new content breaks the next row's prev_hash. */
	char prev_hex[80], pid[64], order[64], status[16], source[16], conflict[8], key[128];
	char raw[512], at[32], sql[512], hex[2 * STORE_HASH_LEN + 1];
	uint8_t prev[STORE_HASH_LEN], h[STORE_HASH_LEN];
	bool pg = hk_backend_pg();

	attack("events_no_update", "UPDATE events SET amount = 1 WHERE id = 6");
	cell(pg ? "SELECT encode(prev_hash, 'hex') FROM events WHERE id = 6"
		: "SELECT hex(prev_hash) FROM events WHERE id = 6",
	     prev_hex, sizeof(prev_hex));
	ck_assert_int_eq(util_unhex(prev_hex, strlen(prev_hex), prev, sizeof(prev)), 0);
	cell("SELECT payment_id FROM events WHERE id = 6", pid, sizeof(pid));
	cell("SELECT order_id FROM events WHERE id = 6", order, sizeof(order));
	cell("SELECT status FROM events WHERE id = 6", status, sizeof(status));
	cell("SELECT source FROM events WHERE id = 6", source, sizeof(source));
	cell(pg ? "SELECT conflict::int FROM events WHERE id = 6"
		: "SELECT conflict FROM events WHERE id = 6",
	     conflict, sizeof(conflict));
	cell("SELECT dedupe_key FROM events WHERE id = 6", key, sizeof(key));
	cell("SELECT raw_json FROM events WHERE id = 6", raw, sizeof(raw));
	cell("SELECT received_at FROM events WHERE id = 6", at, sizeof(at));
	store_event_hash(prev, 6, pid, order, status, 1, source, atoi(conflict) != 0, key, raw,
			 strlen(raw), atoll(at), h);
	util_hex(h, sizeof(h), hex);
	snprintf(sql, sizeof(sql),
		 pg ? "UPDATE events SET hash = decode('%s', 'hex') WHERE id = 6"
		    : "UPDATE events SET hash = x'%s' WHERE id = 6",
		 hex);
	attack("events_no_update", sql);
	assert_verify_fails_at(7, "prev_hash");
}
END_TEST

START_TEST(tamper_delete_row)
{
	attack("events_no_delete", "DELETE FROM events WHERE id = 6");
	assert_verify_fails_at(7, "deleted");
}
END_TEST

START_TEST(tamper_delete_tail)
{
	/* The chain alone cannot see a missing tail; the receipts that refer to it do. */
	attack("events_no_delete", "DELETE FROM events WHERE id = 10");
	assert_verify_fails_at(10, "receipts rows refer to it");
}
END_TEST

START_TEST(tamper_swap_ids)
{
	attack("events_no_update", "UPDATE events SET id = -1 WHERE id = 3;"
				   "UPDATE events SET id = 3 WHERE id = 5;"
				   "UPDATE events SET id = 5 WHERE id = -1");
	assert_verify_fails_at(3, "event 3:");
}
END_TEST

/* ---- replay (daemon running) ---- */

START_TEST(replay_while_running)
{
	struct run r;
	cJSON *j;

	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not restart (log: %s)", d.log);
	/* no sink configured and the event was never queued anywhere */
	CTL(&r, "--db", d.db, "replay", "3");
	ck_assert_int_eq(r.rc, 1);
	ck_assert_msg(strstr(r.err, "--sink") != NULL, "%s", r.err);
	run_free(&r);
	CTL(&r, "--db", d.db, "replay", "3", "--sink", "audit");
	ck_assert_msg(r.rc == 0, "exit %d: %s", r.rc, r.err);
	ck_assert_msg(strstr(r.out, "queued for 1 sink") != NULL, "%s", r.out);
	run_free(&r);
	/* again: still pending, nothing doubled; now the sink is known from the outbox */
	CTL(&r, "--db", d.db, "replay", "3");
	ck_assert_int_eq(r.rc, 0);
	ck_assert_msg(strstr(r.out, "already pending") != NULL, "%s", r.out);
	run_free(&r);
	/* with the daemon's configuration, which has no such sink */
	CTL(&r, "-c", d.conf, "replay", "3", "--sink", "audit");
	ck_assert_int_eq(r.rc, 2);
	run_free(&r);
	CTL(&r, "--db", d.db, "replay", "999");
	ck_assert_int_eq(r.rc, 1);
	ck_assert_msg(strstr(r.err, "no event 999") != NULL, "%s", r.err);
	run_free(&r);

	j = CTL_JSON("--db", d.db, "outbox", "--format", "json");
	ck_assert_int_eq(cJSON_GetArraySize(j), 1);
	ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "event_id")->valueint, 3);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "sink")->valuestring,
			 "audit");
	cJSON_Delete(j);
	j = CTL_JSON("--db", d.db, "outbox", "--dead", "--format", "json");
	ck_assert_int_eq(cJSON_GetArraySize(j), 0);
	cJSON_Delete(j);
	j = CTL_JSON("--db", d.db, "stats", "--format", "json");
	ck_assert_int_eq(num_at(j, "outbox.pending"), 1);
	cJSON_Delete(j);
	/* the daemon still takes callbacks, and the chain is intact */
	post("KOMPAY-AFTER-REPLAY", NULL, "PAID", 1);
	CTL(&r, "--db", d.db, "verify");
	ck_assert_msg(r.rc == 0 && strstr(r.out, "11 events checked") != NULL, "%s%s", r.out,
		      r.err);
	run_free(&r);
}
END_TEST

/* ---- under load ---- */

struct load {
	volatile int stop;
	long ok, failed; /* atomic */
	int next;	 /* atomic */
};

static void *poster(void *arg)
{
	struct load *l = arg;

	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		int n = __atomic_add_fetch(&l->next, 1, __ATOMIC_RELAXED);
		char body[256];
		struct hk_reply r;

		snprintf(body, sizeof(body),
			 "{\"payment_id\":\"KOMPAY-LOAD-%d\",\"order_id\":\"ORD-LOAD-%d\","
			 "\"status\":\"PAID\",\"amount\":%d}",
			 n, n % 97, 1000 + n);
		if (hk_post_callback(&d, body, HK_CALLBACK_KEY, &r) == 200)
			__atomic_add_fetch(&l->ok, 1, __ATOMIC_RELAXED);
		else
			__atomic_add_fetch(&l->failed, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static struct load load;

static int grab_hash(void *arg, const struct store_event *e)
{
	memcpy(arg, e->hash, STORE_HASH_LEN);
	return 0;
}
#define POSTERS 4

static bool loaded_enough(void *arg)
{
	long want = *(long *)arg;

	return __atomic_load_n(&load.ok, __ATOMIC_RELAXED) >= want;
}

static long events_checked(const char *out)
{
	const char *p = strstr(out, "OK, ");

	return p != NULL ? strtol(p + 4, NULL, 10) : -1;
}

/* The last backup of the load test (SQLite) is one self-contained file, and a prefix of the
 * live chain; a second backup to the same path is refused. */
static void assert_backup_is_a_prefix(long before)
{
	struct stat sb;
	char path[400], wal[420];
	struct store *live = open_ro(d.db), *copy;
	int64_t n_copy = 0;
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN, .limit = 1};
	uint8_t h_live[STORE_HASH_LEN] = {0}, h_copy[STORE_HASH_LEN] = {1};
	struct run r;

	snprintf(path, sizeof(path), "%s/backup-4.db", d.dir);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	ck_assert_msg(stat(wal, &sb) != 0, "the backup has a -wal file");
	copy = open_ro(path);
	ck_assert_int_eq(store_count(copy, "events", &n_copy), 0);
	ck_assert(n_copy >= before);
	f.after_id = n_copy - 1;
	ck_assert_int_eq(store_events_query(live, &f, grab_hash, h_live), 0);
	ck_assert_int_eq(store_events_query(copy, &f, grab_hash, h_copy), 0);
	ck_assert(memcmp(h_live, h_copy, STORE_HASH_LEN) == 0);
	store_close(copy);
	store_close(live);
	CTL(&r, "--db", d.db, "backup", path);
	ck_assert_int_eq(r.rc, 2); /* exists */
	run_free(&r);
}

START_TEST(ctl_and_backup_while_daemon_under_load)
{
	pthread_t th[POSTERS];
	long want = 300, before, during;
	char path[400];
	struct run r;

	hk_daemon_init(&d, NO_RECONCILE);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
	memset(&load, 0, sizeof(load));
	for (int i = 0; i < POSTERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, poster, &load), 0);
	ck_assert_msg(hk_wait_until(loaded_enough, &want, 60000), "load did not start");
	before = __atomic_load_n(&load.ok, __ATOMIC_RELAXED);

	for (int round = 0, last = 0; round < 5; round++) {
		cJSON *j;

		CTL(&r, "--db", d.db, "verify");
		ck_assert_msg(r.rc == 0, "verify under load: exit %d: %s%s", r.rc, r.out, r.err);
		ck_assert(events_checked(r.out) >= before);
		ck_assert(events_checked(r.out) >= last);
		last = (int)events_checked(r.out);
		run_free(&r);
		j = CTL_JSON("--db", d.db, "events", "--order-id", "ORD-LOAD-5", "--format",
			     "json");
		ck_assert(cJSON_GetArraySize(j) > 0);
		cJSON_Delete(j);
		j = CTL_JSON("--db", d.db, "stats", "--format", "json");
		ck_assert(num_at(j, "events.total") >= before);
		ck_assert_int_eq(num_at(j, "events.total"), num_at(j, "payments.total"));
		cJSON_Delete(j);
		j = CTL_JSON("--db", d.db, "payments", "--limit", "5", "--format", "json");
		ck_assert_int_eq(cJSON_GetArraySize(j), 5);
		cJSON_Delete(j);

		snprintf(path, sizeof(path), "%s/backup-%d.db", d.dir, round);
		CTL(&r, "--db", d.db, "backup", path);
		if (hk_backend_pg()) {
			/* refused, pointing at PostgreSQL's own tools */
			ck_assert_msg(r.rc == 1 && strstr(r.err, "pg_dump") != NULL,
				      "backup: exit %d: %s", r.rc, r.err);
			run_free(&r);
			continue;
		}
		ck_assert_msg(r.rc == 0, "backup: exit %d: %s", r.rc, r.err);
		ck_assert_str_eq(r.err, "");
		run_free(&r);
		CTL(&r, "--db", path, "verify");
		ck_assert_msg(r.rc == 0, "backup does not verify: %s%s", r.out, r.err);
		ck_assert(events_checked(r.out) >= before);
		run_free(&r);
	}
	during = __atomic_load_n(&load.ok, __ATOMIC_RELAXED);
	__atomic_store_n(&load.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < POSTERS; i++)
		pthread_join(th[i], NULL);
	fprintf(stderr, "load: %ld callbacks before the ctl runs, %ld after, %ld failed\n", before,
		during, load.failed);
	ck_assert_msg(during > before, "the daemon took no callbacks while ctl ran");
	ck_assert_int_eq(load.failed, 0);

	if (!hk_backend_pg())
		assert_backup_is_a_prefix(before);
	CTL(&r, "--db", d.db, "verify");
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(events_checked(r.out), hk_count(&d, "events"));
	run_free(&r);
}
END_TEST

/* ---- 100 000 events: verify speed and index use at size ---- */

#define BIG_EVENTS 100000
#define CHUNK	   5000

static long big_done, big_failed;

static void big_req_done(struct store_req *r)
{
	if (r->result != 0)
		__atomic_add_fetch(&big_failed, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&big_done, 1, __ATOMIC_RELEASE);
}

static bool chunk_done(void *arg)
{
	return __atomic_load_n(&big_done, __ATOMIC_ACQUIRE) >= *(long *)arg;
}

START_TEST(verify_and_query_100k_events)
{
	struct store_opts o = {.busy_timeout_ms = 5000, .batch_max = 1024};
	struct store_req *reqs = calloc(CHUNK, sizeof(*reqs));
	char(*raw)[160] = calloc(CHUNK, 160);
	struct store *s;
	char err[512], plan[2048], plan2[2048];
	struct run r;
	int64_t t0, ms_verify, ms_pay, ms_order, ms_stats;
	long submitted = 0;
	cJSON *j;

	hk_daemon_init(&d, NO_RECONCILE);
	hk_store_target(&o, d.db);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(store_writer_start(s), 0);
	for (int base = 0; base < BIG_EVENTS; base += CHUNK) {
		for (int i = 0; i < CHUNK; i++) {
			int n = base + i, pay = n / 2;
			struct event ev;

			memset(&ev, 0, sizeof(ev));
			snprintf(ev.payment_id, sizeof(ev.payment_id), "KOMPAY-BIG-%d", pay);
			snprintf(ev.order_id, sizeof(ev.order_id), "ORD-BIG-%d", pay);
			ev.status = n % 2 == 0 ? PAYMENT_PENDING : PAYMENT_PAID;
			ev.amount = 10000 + pay;
			ev.source = EVENT_SOURCE_CALLBACK;
			snprintf(raw[i], 160, "{\"payment_id\":\"%s\",\"status\":\"%s\"}",
				 ev.payment_id, payment_status_name(ev.status));
			ev.raw = raw[i];
			ev.raw_len = strlen(raw[i]);
			store_req_event(&reqs[i], &ev);
			reqs[i].done = big_req_done;
			ck_assert_int_eq(store_submit(s, &reqs[i]), 0);
			submitted++;
		}
		ck_assert(hk_wait_until(chunk_done, &submitted, 120000));
	}
	ck_assert_int_eq(big_failed, 0);
	store_close(s);
	free(reqs);
	free(raw);

	t0 = util_mono_ms();
	CTL(&r, "--db", d.db, "verify");
	ms_verify = util_mono_ms() - t0;
	ck_assert_msg(r.rc == 0, "%s%s", r.out, r.err);
	ck_assert_int_eq(events_checked(r.out), BIG_EVENTS);
	run_free(&r);

	t0 = util_mono_ms();
	j = CTL_JSON("--db", d.db, "events", "--order-id", "ORD-BIG-31337", "--format", "json");
	ms_order = util_mono_ms() - t0;
	ck_assert_int_eq(cJSON_GetArraySize(j), 2);
	cJSON_Delete(j);
	t0 = util_mono_ms();
	j = CTL_JSON("--db", d.db, "events", "--payment-id", "KOMPAY-BIG-4242", "--format", "json");
	ms_pay = util_mono_ms() - t0;
	ck_assert_int_eq(cJSON_GetArraySize(j), 2);
	cJSON_Delete(j);

	t0 = util_mono_ms();
	j = CTL_JSON("--db", d.db, "stats", "--format", "json");
	ms_stats = util_mono_ms() - t0;
	ck_assert_int_eq(num_at(j, "events.total"), BIG_EVENTS);
	ck_assert_int_eq(num_at(j, "payments.by_status.PAID"), BIG_EVENTS / 2);
	cJSON_Delete(j);

	s = open_ro(d.db);
	{
		struct store_event_filter f = {.status = PAYMENT_UNKNOWN,
					       .payment_id = "KOMPAY-BIG-4242"};

		ck_assert_int_eq(store_events_plan(s, &f, plan, sizeof(plan)), 0);
		f.payment_id = NULL;
		f.order_id = "ORD-BIG-31337";
		ck_assert_int_eq(store_events_plan(s, &f, plan2, sizeof(plan2)), 0);
	}
	store_close(s);
	fprintf(stderr,
		"100k events: ctl verify %lld ms, events --payment-id %lld ms, --order-id %lld ms, "
		"stats %lld ms (each including process start)\n"
		"EXPLAIN QUERY PLAN by payment_id:\n%sEXPLAIN QUERY PLAN by order_id:\n%s",
		(long long)ms_verify, (long long)ms_pay, (long long)ms_order, (long long)ms_stats,
		plan, plan2);
	/* clean up first: a failed assertion ends this process before the teardown runs */
	hk_daemon_cleanup(&d);
	ck_assert_msg(strstr(plan, BY_PAYMENT) != NULL, "payment_id query scans:\n%s", plan);
	ck_assert_msg(strstr(plan2, BY_ORDER) != NULL, "order_id query scans:\n%s", plan2);
	/* generous bounds (sanitizers, busy CI); the plans above are the real check */
	ck_assert_msg(ms_verify < 60000, "verify took %lld ms", (long long)ms_verify);
	ck_assert_msg(ms_pay < 5000 && ms_order < 5000, "an indexed query took seconds");
}
END_TEST

/* ---- chain checkpoints (issue 14): the tail deleted with its receipts ---- */

/* The last "checkpoint=ID:HASH" the daemon logged into out (the shutdown one). */
static void last_checkpoint(char *out, size_t n)
{
	char *log = slurp(d.log), *at = log, *next;

	out[0] = '\0';
	while ((next = strstr(at, "checkpoint=")) != NULL) {
		snprintf(out, n, "%.*s", (int)strcspn(next + 11, " \n"), next + 11);
		at = next + 11;
	}
	free(log);
	ck_assert_msg(out[0] != '\0', "no checkpoint in %s", d.log);
}

static void assert_ctl_fails(const char *needle, const char *const *args)
{
	struct run r;

	ctl_argv(&r, args);
	ck_assert_msg(r.rc == 1, "exit %d: %s%s", r.rc, r.out, r.err);
	ck_assert_msg(strstr(r.out, needle) != NULL, "'%s' not in: %s", needle, r.out);
	fprintf(stderr, "%s", r.out);
	run_free(&r);
}

START_TEST(checkpoint_catches_a_deleted_tail)
{
	char cp[128], cp_id[32], wrong[128], want[128];
	struct run r;

	last_checkpoint(cp, sizeof(cp));
	snprintf(cp_id, sizeof(cp_id), "%.*s", (int)strcspn(cp, ":"), cp);
	ck_assert_str_eq(cp_id, "10"); /* the head at shutdown */
	ck_assert(hk_log_contains(&d, "chain head published reason=shutdown"));
	CTL(&r, "--db", d.db, "verify", "--checkpoint", cp);
	ck_assert_msg(r.rc == 0 && strstr(r.out, "reached") != NULL, "%s%s", r.out, r.err);
	run_free(&r);

	/* The newest three events go, with their receipts and outbox rows: the file alone no
	 * longer shows it ... */
	attack("events_no_delete",
	       "DELETE FROM receipts WHERE event_id > 7;"
	       "DELETE FROM outbox WHERE event_id > 7; DELETE FROM events WHERE id > 7");
	CTL(&r, "--db", d.db, "verify");
	ck_assert_msg(r.rc == 0 && strstr(r.out, "OK, 7 events checked") != NULL, "%s%s", r.out,
		      r.err);
	run_free(&r);
	/* ... the published checkpoint does, naming the gap, from the command line or from the
	 * log itself ... */
	snprintf(want, sizeof(want), "checkpoint 10:%.12s... not reached: the chain ends at 7",
		 cp + 3);
	assert_ctl_fails(want,
			 (const char *const[]){"--db", d.db, "verify", "--checkpoint", cp, NULL});
	assert_ctl_fails(
		want, (const char *const[]){"--db", d.db, "verify", "--checkpoints", d.log, NULL});
	/* ... and a checkpoint whose event exists with another hash is a rewritten chain. */
	snprintf(wrong, sizeof(wrong), "5:%s", cp + 3);
	assert_ctl_fails("checkpoint 5:", (const char *const[]){"--db", d.db, "verify",
								"--checkpoint", wrong, NULL});
	assert_ctl_fails(
		"does not match: event 5 has hash",
		(const char *const[]){"--db", d.db, "verify", "--checkpoint", wrong, NULL});
}
END_TEST

START_TEST(checkpoint_mac_is_checked)
{
	char cp[128], line[512], path[400], *log = slurp(d.log), *at;
	struct run r;
	FILE *f;

	/* The fixture's daemon signs its checkpoints (store.checkpoint_key); komerce-hookctl
	 * with the same configuration checks the signature ... */
	at = strstr(log, "reason=shutdown checkpoint=");
	ck_assert_ptr_nonnull(at);
	snprintf(line, sizeof(line), "%.*s", (int)strcspn(at, "\n"), at);
	free(log);
	ck_assert_msg(strstr(line, " mac=") != NULL, "unsigned: %s", line);
	CTL(&r, "-c", d.conf, "verify", "--checkpoints", d.log);
	ck_assert_msg(r.rc == 0 && strstr(r.out, "reached\n") != NULL, "%s%s", r.out, r.err);
	run_free(&r);
	/* ... and refuses a line whose hash was changed to match a rewritten chain. */
	last_checkpoint(cp, sizeof(cp));
	at = strstr(line, "mac=");
	snprintf(path, sizeof(path), "%s/forged.txt", d.dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "checkpoint=9:%s %s\n", cp + 3, at);
	fclose(f);
	assert_ctl_fails(
		"has a mac that store.checkpoint_key did not make",
		(const char *const[]){"-c", d.conf, "verify", "--checkpoints", path, NULL});
}
END_TEST

/* ---- retention (issue 14): a large backlog pruned while callbacks keep coming ---- */

#define OLD_EVENTS	20000
#define RECEIPT_COPIES	4 /* extra receipts per old event */
#define OUTBOX_COPIES	3 /* delivered outbox rows per old event */
#define RETENTION_CHUNK 2000

/* OLD_EVENTS events received 30 days ago, through the store writer (daemon stopped). */
static void seed_old_events(void)
{
	struct store_opts o = {.busy_timeout_ms = 5000, .batch_max = 1024};
	struct store_req *reqs = calloc(RETENTION_CHUNK, sizeof(*reqs));
	char(*raw)[128] = calloc(RETENTION_CHUNK, 128);
	int64_t old = util_now_ms() - 30LL * 24 * 3600 * 1000;
	struct store *s;
	char err[512];
	long submitted = 0;

	big_done = big_failed = 0;
	hk_store_target(&o, d.db);
	ck_assert_msg(store_open(&o, &s, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(store_writer_start(s), 0);
	for (int base = 0; base < OLD_EVENTS; base += RETENTION_CHUNK) {
		for (int i = 0; i < RETENTION_CHUNK; i++) {
			struct event ev;

			memset(&ev, 0, sizeof(ev));
			snprintf(ev.payment_id, sizeof(ev.payment_id), "KOMPAY-OLD-%d", base + i);
			ev.status = PAYMENT_PAID;
			ev.amount = 1000;
			ev.source = EVENT_SOURCE_CALLBACK;
			snprintf(raw[i], 128, "{\"payment_id\":\"%s\",\"status\":\"PAID\"}",
				 ev.payment_id);
			ev.raw = raw[i];
			ev.raw_len = strlen(raw[i]);
			store_req_event(&reqs[i], &ev);
			reqs[i].received_at = old + base + i;
			reqs[i].done = big_req_done;
			ck_assert_int_eq(store_submit(s, &reqs[i]), 0);
			submitted++;
		}
		ck_assert(hk_wait_until(chunk_done, &submitted, 120000));
	}
	ck_assert_int_eq(big_failed, 0);
	store_close(s);
	free(reqs);
	free(raw);
	for (int i = 0; i < RECEIPT_COPIES; i++)
		db_exec_ok("INSERT INTO receipts (event_id, source, remote_addr, received_at) "
			   "SELECT id, 'callback', '203.0.113.9', received_at FROM events");
	for (int i = 0; i < OUTBOX_COPIES; i++)
		db_exec_ok("INSERT INTO outbox (event_id, payment_id, sink, state, attempts, "
			   "next_attempt_at, created_at, delivered_at) SELECT id, payment_id, "
			   "'app', 'delivered', 0, received_at, received_at, received_at + 5 "
			   "FROM events");
}

struct latency {
	long long n, failed, total_ms, worst_ms;
	long long ms[20000];
};

/* One signed callback, timed. */
static void timed_post(struct latency *l, const char *tag)
{
	char body[256];
	struct hk_reply r;
	long long t0 = hk_mono_ms(), ms;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"KOMPAY-%s-%lld\",\"status\":\"PAID\",\"amount\":1}", tag, l->n);
	l->failed += hk_post_callback(&d, body, HK_CALLBACK_KEY, &r) != 200;
	ms = hk_mono_ms() - t0;
	if (l->n < (long long)(sizeof(l->ms) / sizeof(l->ms[0])))
		l->ms[l->n] = ms;
	l->n++;
	l->total_ms += ms;
	if (ms > l->worst_ms)
		l->worst_ms = ms;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static long long p99(struct latency *l)
{
	size_t n = l->n < 20000 ? (size_t)l->n : 20000;

	qsort(l->ms, n, sizeof(l->ms[0]), cmp_ll);
	return n > 0 ? l->ms[n * 99 / 100] : 0;
}

static struct latency base_lat, prune_lat;

START_TEST(retention_prunes_a_backlog_while_callbacks_get_200)
{
	long long receipts0, outbox0, t0, prune_ms = 0;
	FILE *f;
	struct run r;

	hk_daemon_init(&d, NO_RECONCILE);
	ck_assert_int_eq(hk_daemon_start(&d), 0); /* creates the schema */
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	seed_old_events();
	receipts0 = hk_count(&d, "receipts");
	outbox0 = hk_count(&d, "outbox");
	ck_assert_int_eq(receipts0, OLD_EVENTS * (1 + RECEIPT_COPIES));
	ck_assert_int_eq(outbox0, OLD_EVENTS * OUTBOX_COPIES);

	/* The baseline: the same callbacks without pruning. */
	memset(&base_lat, 0, sizeof(base_lat));
	memset(&prune_lat, 0, sizeof(prune_lat));
	ck_assert_int_eq(hk_daemon_start(&d), 0);
	for (int i = 0; i < 300; i++)
		timed_post(&base_lat, "BASE");
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);

	/* Now with a retention of a day: the daemon prunes at start, callbacks keep coming. */
	f = fopen(d.conf, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[store]\nretention_days = 1\n");
	fclose(f);
	ck_assert_int_eq(hk_daemon_start(&d), 0);
	t0 = hk_mono_ms();
	while (hk_mono_ms() - t0 < 180000) {
		timed_post(&prune_lat, "LOAD");
		if (prune_lat.n % 25 == 0 && hk_log_contains(&d, "retention: pruned")) {
			prune_ms = hk_mono_ms() - t0;
			break;
		}
	}
	ck_assert_int_eq(hk_daemon_stop(&d, SIGTERM), 0);
	fprintf(stderr,
		"retention: %lld receipts and %lld outbox rows pruned in about %lld ms; callbacks "
		"without pruning: %lld, mean %lld ms, p99 %lld ms, max %lld ms; during pruning: "
		"%lld, mean %lld ms, p99 %lld ms, max %lld ms\n",
		receipts0, outbox0, prune_ms, base_lat.n, base_lat.total_ms / base_lat.n,
		p99(&base_lat), base_lat.worst_ms, prune_lat.n,
		prune_lat.total_ms / (prune_lat.n > 0 ? prune_lat.n : 1), p99(&prune_lat),
		prune_lat.worst_ms);
	ck_assert_msg(prune_ms > 0, "the backlog was not pruned within 180 s");
	ck_assert_int_eq(base_lat.failed, 0);
	ck_assert_int_eq(prune_lat.failed, 0);
	ck_assert_int_ge(prune_lat.n, 25);
	/* Generous: a callback never waits behind the whole backlog, only one batch. */
	ck_assert_msg(prune_lat.worst_ms < 2000, "a callback waited %lld ms", prune_lat.worst_ms);
	/* Old receipts and delivered rows are gone; every event and every new receipt stays. */
	ck_assert_int_eq(hk_count(&d, "receipts"), base_lat.n + prune_lat.n);
	ck_assert_int_eq(hk_count(&d, "outbox"), 0);
	ck_assert_int_eq(hk_count(&d, "events"), OLD_EVENTS + base_lat.n + prune_lat.n);
	CTL(&r, "--db", d.db, "verify");
	ck_assert_msg(r.rc == 0, "%s%s", r.out, r.err);
	run_free(&r);
}
END_TEST

static Suite *audit_suite(void)
{
	Suite *s = suite_create("audit");
	TCase *core = tcase_create("core");
	TCase *tamper = tcase_create("tamper");
	TCase *load_tc = tcase_create("load");
	TCase *size = tcase_create("limits");
	TCase *retention = tcase_create("retention");

	tcase_add_unchecked_fixture(core, core_setup, core_teardown);
	tcase_add_test(core, events_json_has_every_field);
	tcase_add_test(core, events_filters);
	tcase_add_test(core, events_time_filters);
	tcase_add_test(core, events_jsonl_one_object_a_line);
	tcase_add_test(core, events_csv_rfc4180);
	tcase_add_test(core, events_table_aligned);
	tcase_add_test(core, payments_stale_and_status);
	tcase_add_test(core, stats_counts);
	tcase_add_test(core, verify_intact_chain);
	tcase_add_test(core, events_pages_walk_every_event_once);
	tcase_add_test(core, filter_parameters_are_validated);
	tcase_add_test(core, events_query_uses_indexes);
	tcase_add_test(core, api_events_filters_and_cursor);
	tcase_add_test(core, errors_exit_2_with_one_line);
	tcase_add_test(core, help_for_every_command);
	suite_add_tcase(s, core);

	tcase_add_checked_fixture(tamper, tamper_setup, core_teardown);
	tcase_add_test(tamper, triggers_refuse_update_and_delete);
	tcase_add_test(tamper, tamper_edit_status);
	tcase_add_test(tamper, tamper_edit_amount_and_rehash_is_caught_by_next_row);
	tcase_add_test(tamper, tamper_delete_row);
	tcase_add_test(tamper, tamper_delete_tail);
	tcase_add_test(tamper, tamper_swap_ids);
	tcase_add_test(tamper, replay_while_running);
	tcase_add_test(tamper, checkpoint_catches_a_deleted_tail);
	tcase_add_test(tamper, checkpoint_mac_is_checked);
	suite_add_tcase(s, tamper);

	tcase_add_checked_fixture(retention, NULL, core_teardown);
	tcase_add_test(retention, retention_prunes_a_backlog_while_callbacks_get_200);
	tcase_set_timeout(retention, 400);
	suite_add_tcase(s, retention);

	tcase_add_checked_fixture(load_tc, NULL, core_teardown);
	tcase_add_test(load_tc, ctl_and_backup_while_daemon_under_load);
	suite_add_tcase(s, load_tc);

	tcase_add_checked_fixture(size, NULL, core_teardown);
	tcase_add_test(size, verify_and_query_100k_events);
	tcase_set_timeout(size, 300);
	suite_add_tcase(s, size);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	sr = srunner_create(audit_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed ? 1 : 0;
}
