/* Integration: the payments console on the real komerce-hookd in front of komerce-sim, with
 * two HTTP sinks served here ("shop" answers 200, "ledger" 400 until told otherwise). The
 * static routes need no token and carry the CSP, caching and ETag/304; every console API route
 * needs the token; bad parameters are 400 naming them; the shapes of GET /v1/payments (search
 * by payment id, order id, VA number; stale; conflicts; cursor), GET /v1/payments/{id}
 * (receipts, deliveries, reconcile), GET /v1/outbox, POST /v1/outbox/replay and GET /v1/stats;
 * a dead letter replayed through the API is delivered. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "rx.h"

#define TOKEN_HEADER "Authorization: Bearer " HK_ADMIN_TOKEN

static struct hk_daemon d;
static struct hk_sim sim;

/* ---- the sinks (tests/lib/rx.c) ------------------------------------------------------ */

struct sink {
	struct rx *rx;
	unsigned port;
	int status;   /* atomic: what to answer */
	int accepted; /* atomic: requests answered 2xx */
};

static struct sink shop, ledger;

static int sink_answer(void *ctx, struct rx_request *req)
{
	struct sink *s = ctx;
	int st = __atomic_load_n(&s->status, __ATOMIC_ACQUIRE);

	(void)req;
	if (st < 300)
		__atomic_fetch_add(&s->accepted, 1, __ATOMIC_RELEASE);
	return st;
}

static void sink_start(struct sink *s, int status)
{
	memset(s, 0, sizeof(*s));
	s->status = status;
	s->rx = rx_start(0, sink_answer, s);
	ck_assert_ptr_nonnull(s->rx);
	s->port = rx_port(s->rx);
}

static void sink_stop(struct sink *s)
{
	rx_stop(s->rx);
	s->rx = NULL;
}

/* ---- fixture and helpers ---------------------------------------------------------------- */

static void setup(void)
{
	char more[2048];

	sink_start(&shop, 200);
	sink_start(&ledger, 400);
	ck_assert_msg(hk_sim_start(&sim, "--quiet") == 0, "komerce-sim did not start");
	hk_daemon_init(&d, NULL);
	snprintf(more, sizeof(more),
		 "[komerce]\nbase_url = http://127.0.0.1:%u/user\n"
		 "callback_url = http://127.0.0.1:%u/v1/komerce/callback\n"
		 "[reconcile]\ngrace_seconds = 3600\n"
		 "[sink.shop]\nurl = http://127.0.0.1:%u/hook\nsecret = it-console-sink-secret\n"
		 "[sink.ledger]\nurl = http://127.0.0.1:%u/hook\nsecret = it-console-sink-secret\n",
		 sim.port, d.port, shop.port, ledger.port);
	snprintf(d.extra, sizeof(d.extra), "%s", more);
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
}

static void teardown(void)
{
	hk_daemon_cleanup(&d);
	hk_sim_stop(&sim);
	sink_stop(&shop);
	sink_stop(&ledger);
}

/* A request to the admin listener; auth is the Authorization header (NULL: none); extra one
 * more header (NULL: Content-Type: application/json when there is a body). */
static long admin_as(const char *auth, const char *method, const char *path, const char *body,
		     const char *extra, struct hk_reply *r)
{
	char url[1024];
	const char *headers[4] = {NULL, NULL, NULL, NULL};
	size_t n = 0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", d.admin_port, path);
	if (auth != NULL)
		headers[n++] = auth;
	if (extra != NULL)
		headers[n++] = extra;
	else if (body != NULL)
		headers[n++] = "Content-Type: application/json";
	return hk_request(method, url, headers, body, body != NULL ? strlen(body) : 0, 10000, r);
}

static long admin(const char *method, const char *path, const char *body, struct hk_reply *r)
{
	return admin_as(TOKEN_HEADER, method, path, body, NULL, r);
}

static cJSON *json_of(const struct hk_reply *r)
{
	cJSON *o = cJSON_Parse(r->body);

	ck_assert_msg(o != NULL, "reply is not JSON: %s", r->body);
	return o;
}

/* The member at a dotted path ("payment.status"; "events.1.source" indexes arrays). */
static const cJSON *jget(const cJSON *o, const char *path)
{
	char name[64];

	while (o != NULL && *path != '\0') {
		size_t n = strcspn(path, ".");

		snprintf(name, sizeof(name), "%.*s", (int)n, path);
		if (cJSON_IsArray(o))
			o = cJSON_GetArrayItem(o, atoi(name));
		else
			o = cJSON_GetObjectItemCaseSensitive(o, name);
		path += path[n] == '.' ? n + 1 : n;
	}
	return o;
}

static const char *jstr(const cJSON *o, const char *path)
{
	o = jget(o, path);
	return cJSON_IsString(o) ? o->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *path)
{
	o = jget(o, path);
	ck_assert_msg(cJSON_IsNumber(o), "%s is not a number", path);
	return o->valuedouble;
}

static int jlen(const cJSON *o, const char *path)
{
	o = jget(o, path);
	ck_assert_msg(cJSON_IsArray(o), "%s is not an array", path);
	return cJSON_GetArraySize(o);
}

static bool header_has(const struct hk_reply *r, const char *line)
{
	return strcasestr(r->headers, line) != NULL;
}

struct created {
	char id[128], va[64];
};

/* Creates a BCA VA payment through the admin API and has the simulator pay it; waits for the
 * PAID callback to be stored. */
static struct created create_paid(const char *order_id)
{
	struct created c;
	struct hk_reply r;
	char body[512], url[300];
	cJSON *o;

	snprintf(body, sizeof(body),
		 "{\"order_id\":\"%s\",\"payment_type\":\"bank_transfer\",\"channel_code\":"
		 "\"BCA\",\"amount\":100000,\"customer\":{\"name\":\"Budi\",\"email\":"
		 "\"budi@example.com\",\"phone\":\"081234567890\"}}",
		 order_id);
	ck_assert_int_eq(admin("POST", "/v1/payments", body, &r), 201);
	o = json_of(&r);
	snprintf(c.id, sizeof(c.id), "%s", jstr(o, "data.payment_id"));
	snprintf(c.va, sizeof(c.va), "%s", jstr(o, "data.va_number"));
	cJSON_Delete(o);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/_sim/payments/%s/pay", sim.port, c.id);
	ck_assert_int_eq(hk_request("POST", url, NULL, "", 0, 5000, &r), 200);
	for (int i = 0; i < 500; i++) {
		snprintf(url, sizeof(url), "/v1/payments/%s", c.id);
		ck_assert_int_eq(admin("GET", url, NULL, &r), 200);
		if (strstr(r.body, "\"status\":\"PAID\"") != NULL)
			return c;
		usleep(10000);
	}
	ck_abort_msg("the PAID callback never landed");
	return c;
}

/* ---- static routes ------------------------------------------------------------------------ */

START_TEST(console_page_needs_no_token_and_is_locked_down)
{
	struct hk_reply r, a;
	char path[128], etag[64], inm[96];
	const char *p, *e;

	ck_assert_int_eq(admin_as(NULL, "GET", "/", NULL, NULL, &r), 200);
	ck_assert(header_has(&r, "Content-Type: text/html; charset=utf-8"));
	ck_assert(header_has(&r, "Content-Security-Policy: default-src 'none'; script-src 'self'; "
				 "style-src 'self'; connect-src 'self'"));
	ck_assert(header_has(&r, "frame-ancestors 'none'"));
	ck_assert(header_has(&r, "X-Frame-Options: DENY"));
	ck_assert(header_has(&r, "X-Content-Type-Options: nosniff"));
	ck_assert(header_has(&r, "Cache-Control: no-cache"));
	ck_assert_ptr_nonnull(strstr(r.body, "<title>"));

	/* the script it names: cached for a year, the same headers */
	p = strstr(r.body, "src=\"/console/app.");
	ck_assert_ptr_nonnull(p);
	p += 5;
	snprintf(path, sizeof(path), "%.*s", (int)strcspn(p, "\""), p);
	ck_assert_int_eq(admin_as(NULL, "GET", path, NULL, NULL, &a), 200);
	ck_assert(header_has(&a, "Content-Type: text/javascript"));
	ck_assert(header_has(&a, "Cache-Control: public, max-age=31536000, immutable"));
	ck_assert(header_has(&a, "Content-Security-Policy: default-src 'none'"));
	ck_assert_ptr_nonnull(strstr(a.body, "sessionStorage"));

	/* revalidation: 304 without a body */
	e = strcasestr(r.headers, "\r\nETag: ");
	ck_assert_ptr_nonnull(e);
	e += 8;
	snprintf(etag, sizeof(etag), "%.*s", (int)strcspn(e, "\r\n"), e);
	snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
	ck_assert_int_eq(admin_as(NULL, "GET", "/", NULL, inm, &r), 304);
	ck_assert_uint_eq(r.len, 0);
	ck_assert_int_eq(admin_as(NULL, "GET", "/", NULL, "If-None-Match: \"stale\"", &r), 200);

	/* anything else under /console/ is a 404, still under the policy */
	ck_assert_int_eq(admin_as(NULL, "GET", "/console/app.js", NULL, NULL, &r), 404);
	ck_assert(header_has(&r, "Content-Security-Policy:"));
	ck_assert_int_eq(admin_as(NULL, "POST", "/", "{}", NULL, &r), 405);
	/* the data is not: the API still wants the token */
	ck_assert_int_eq(admin_as(NULL, "GET", "/v1/stats", NULL, NULL, &r), 401);
}
END_TEST

/* ---- auth and parameters ------------------------------------------------------------------ */

START_TEST(every_console_route_needs_the_token)
{
	static const struct {
		const char *method, *path, *body;
	} routes[] = {
		{"GET", "/v1/payments", NULL},
		{"GET", "/v1/payments?q=x", NULL},
		{"GET", "/v1/payments?limit=0", NULL}, /* 401 before 400 */
		{"GET", "/v1/outbox", NULL},
		{"GET", "/v1/outbox?state=dead", NULL},
		{"POST", "/v1/outbox/replay", "{\"event_id\":1}"},
		{"POST", "/v1/outbox/replay", "not json"},
		{"GET", "/v1/stats", NULL},
		{"GET", "/v1/payments/KOMPAY-1", NULL},
	};
	static const char *const auths[] = {NULL, "Authorization: Bearer wrong-token-0123456789",
					    "Authorization: " HK_ADMIN_TOKEN,
					    "Authorization: Basic dGVzdA=="};
	struct hk_reply r;

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		for (size_t j = 0; j < sizeof(auths) / sizeof(auths[0]); j++) {
			cJSON *o;

			ck_assert_int_eq(admin_as(auths[j], routes[i].method, routes[i].path,
						  routes[i].body, NULL, &r),
					 401);
			ck_assert(header_has(&r, "WWW-Authenticate: Bearer"));
			o = json_of(&r);
			ck_assert_str_eq(jstr(o, "status"), "error");
			ck_assert_ptr_nonnull(jstr(o, "error"));
			cJSON_Delete(o);
		}
	}
	/* nothing was replayed by the refused POSTs */
	ck_assert_int_eq(admin("GET", "/v1/outbox", NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"outbox\":[]"));
}
END_TEST

START_TEST(bad_parameters_are_400_naming_them)
{
	static const struct {
		const char *method, *path, *body, *field;
	} cases[] = {
		{"GET", "/v1/payments?limit=0", NULL, "limit"},
		{"GET", "/v1/payments?limit=501", NULL, "limit"},
		{"GET", "/v1/payments?limit=ten", NULL, "limit"},
		{"GET", "/v1/payments?status=SETTLED", NULL, "status"},
		{"GET", "/v1/payments?stale=maybe", NULL, "stale"},
		{"GET", "/v1/payments?conflict=2", NULL, "conflict"},
		{"GET", "/v1/payments?after=KOMPAY-1", NULL, "after"},
		{"GET", "/v1/payments?q=%20%20", NULL, "q"},
		{"GET", "/v1/payments?q=a%01b", NULL, "q"},
		{"GET", "/v1/outbox?state=lost", NULL, "state"},
		{"GET", "/v1/outbox?sink=a%20b", NULL, "sink"},
		{"GET", "/v1/outbox?limit=1001", NULL, "limit"},
		{"GET", "/v1/outbox?after_id=-1", NULL, "after_id"},
		{"GET", "/v1/payments?stal=true", NULL, "stal"},
		{"GET", "/v1/outbox?states=dead", NULL, "states"},
		{"GET", "/v1/stats?since=1", NULL, "since"},
		{"POST", "/v1/outbox/replay", "{}", "event_id"},
		{"POST", "/v1/outbox/replay", "{\"event_id\":\"1\"}", "event_id"},
		{"POST", "/v1/outbox/replay", "{\"event_id\":0}", "event_id"},
		{"POST", "/v1/outbox/replay", "{\"event_id\":1,\"sink\":\"nope\"}", "sink"},
		{"POST", "/v1/outbox/replay", "{\"event_id\":1,\"sink\":5}", "sink"},
		{"POST", "/v1/outbox/replay", "[1]", "body"},
		{"POST", "/v1/outbox/replay", "{\"event_id\":", "body"},
	};
	struct hk_reply r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[80];
		cJSON *o;

		ck_assert_msg(admin(cases[i].method, cases[i].path, cases[i].body, &r) == 400,
			      "%s %s: %ld %s", cases[i].method, cases[i].path, r.status, r.body);
		o = json_of(&r);
		ck_assert_str_eq(jstr(o, "status"), "error");
		ck_assert_str_eq(jstr(o, "field"), cases[i].field);
		snprintf(want, sizeof(want), "%s: ", cases[i].field);
		ck_assert_msg(strncmp(jstr(o, "error"), want, strlen(want)) == 0, "%s",
			      jstr(o, "error"));
		cJSON_Delete(o);
	}
	ck_assert_int_eq(admin_as(TOKEN_HEADER, "POST", "/v1/outbox/replay", "{\"event_id\":1}",
				  "Content-Type: text/plain", &r),
			 415);
	ck_assert_int_eq(admin("POST", "/v1/outbox/replay", "{\"event_id\":424242}", &r), 404);
	ck_assert_ptr_nonnull(strstr(r.body, "\"event_id\":424242"));
}
END_TEST

/* ---- shapes ------------------------------------------------------------------------------- */

START_TEST(search_and_the_payment_story)
{
	struct created c = create_paid("IT-CONSOLE-1");
	struct hk_reply r;
	char path[300];
	const cJSON *arr, *it;
	int shop_rows = 0, ledger_rows = 0;
	cJSON *o;

	/* the VA number, the order id and the payment id each find it */
	snprintf(path, sizeof(path), "/v1/payments?q=%s", c.va);
	ck_assert_int_eq(admin("GET", path, NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "status"), "ok");
	ck_assert_int_eq(jlen(o, "payments"), 1);
	ck_assert_str_eq(jstr(o, "payments.0.payment_id"), c.id);
	ck_assert_str_eq(jstr(o, "payments.0.matched"), "va_number");
	ck_assert_str_eq(jstr(o, "payments.0.status"), "PAID");
	ck_assert_int_eq((int)jnum(o, "payments.0.conflicts"), 0);
	ck_assert(cJSON_IsNull(jget(o, "next_after")));
	cJSON_Delete(o);
	ck_assert_int_eq(admin("GET", "/v1/payments?q=IT-CONSOLE-1", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "payments.0.matched"), "order_id");
	cJSON_Delete(o);
	snprintf(path, sizeof(path), "/v1/payments?q=%%20%s%%20", c.id);
	ck_assert_int_eq(admin("GET", path, NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "payments.0.matched"), "payment_id");
	cJSON_Delete(o);
	ck_assert_int_eq(admin("GET", "/v1/payments?q=IT-CONSOLE", NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"payments\":[]"));

	/* the whole story: events, receipts with their source address, deliveries, reconcile */
	snprintf(path, sizeof(path), "/v1/payments/%s", c.id);
	for (int i = 0; i < 500; i++) { /* until both sinks have an outcome for both events */
		ck_assert_int_eq(admin("GET", path, NULL, &r), 200);
		if (strstr(r.body, "\"state\":\"pending\"") == NULL)
			break;
		usleep(10000);
	}
	o = json_of(&r);
	ck_assert_int_eq(jlen(o, "events"), 2);
	ck_assert_str_eq(jstr(o, "events.0.source"), "api");
	ck_assert_str_eq(jstr(o, "events.1.source"), "callback");
	ck_assert_int_eq(jlen(o, "receipts"), 2);
	ck_assert_str_eq(jstr(o, "receipts.1.source"), "callback");
	ck_assert_str_eq(jstr(o, "receipts.1.remote_addr"), "127.0.0.1");
	ck_assert_int_eq((int)jnum(o, "receipts.1.event_id"), (int)jnum(o, "events.1.id"));
	ck_assert_ptr_nonnull(jstr(o, "receipts.1.received_at"));
	ck_assert(cJSON_IsFalse(jget(o, "receipts_truncated")));
	arr = jget(o, "deliveries");
	ck_assert_int_eq(cJSON_GetArraySize(arr), 4);
	cJSON_ArrayForEach(it, arr)
	{
		const char *sink = jstr(it, "sink");

		ck_assert_ptr_nonnull(jget(it, "attempts"));
		ck_assert_ptr_nonnull(jget(it, "next_attempt_at"));
		if (strcmp(sink, "shop") == 0) {
			shop_rows++;
			ck_assert_str_eq(jstr(it, "state"), "delivered");
			ck_assert_ptr_nonnull(jstr(it, "delivered_at"));
			ck_assert(cJSON_IsNull(jget(it, "last_error")));
		} else {
			ledger_rows++;
			ck_assert_str_eq(jstr(it, "sink"), "ledger");
			ck_assert_str_eq(jstr(it, "state"), "dead");
			ck_assert_ptr_nonnull(strstr(jstr(it, "last_error"), "HTTP 400"));
			ck_assert_ptr_nonnull(jstr(it, "dead_at"));
		}
	}
	ck_assert_int_eq(shop_rows, 2);
	ck_assert_int_eq(ledger_rows, 2);
	ck_assert(cJSON_IsFalse(jget(o, "reconcile.watched")));
	ck_assert_ptr_nonnull(jget(o, "reconcile.poll_attempts"));
	ck_assert_ptr_nonnull(jget(o, "reconcile.last_polled_at"));
	/* the reconciler's polls log (none here: the payment was never polled) */
	ck_assert(cJSON_IsArray(jget(o, "polls")));
	ck_assert_int_eq(cJSON_GetArraySize(jget(o, "polls")), 0);
	cJSON_Delete(o);
}
END_TEST

START_TEST(dead_letter_replayed_then_delivered)
{
	struct created c = create_paid("IT-CONSOLE-2");
	struct hk_reply r;
	char body[128];
	long long event_id = 0;
	const cJSON *it;
	cJSON *o = NULL;

	for (int i = 0; i < 500; i++) {
		ck_assert_int_eq(admin("GET", "/v1/outbox?state=dead&sink=ledger", NULL, &r), 200);
		cJSON_Delete(o);
		o = json_of(&r);
		if (jlen(o, "outbox") == 2)
			break;
		usleep(10000);
	}
	ck_assert_int_eq(jlen(o, "outbox"), 2);
	cJSON_ArrayForEach(it, jget(o, "outbox"))
	{
		ck_assert_str_eq(jstr(it, "state"), "dead");
		ck_assert_str_eq(jstr(it, "sink"), "ledger");
		ck_assert_str_eq(jstr(it, "payment_id"), c.id);
		ck_assert_str_eq(jstr(it, "order_id"), "IT-CONSOLE-2");
		ck_assert_ptr_nonnull(strstr(jstr(it, "last_error"), "HTTP 400"));
		ck_assert(cJSON_IsNull(jget(it, "replayed_at")));
		ck_assert(cJSON_IsNull(jget(it, "replayed_by")));
		ck_assert(cJSON_IsNull(jget(it, "after_replay")));
		if (strcmp(jstr(it, "status"), "PAID") == 0)
			event_id = (long long)jnum(it, "event_id");
	}
	ck_assert(cJSON_IsNull(jget(o, "next_after_id")));
	cJSON_Delete(o);
	ck_assert_int_gt(event_id, 0);

	/* paging: one row a page */
	ck_assert_int_eq(admin("GET", "/v1/outbox?state=dead&limit=1", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_int_eq(jlen(o, "outbox"), 1);
	snprintf(body, sizeof(body), "/v1/outbox?state=dead&limit=1&after_id=%d",
		 (int)jnum(o, "next_after_id"));
	cJSON_Delete(o);
	ck_assert_int_eq(admin("GET", body, NULL, &r), 200);
	o = json_of(&r);
	ck_assert_int_eq(jlen(o, "outbox"), 1);
	ck_assert(cJSON_IsNull(jget(o, "next_after_id")));
	cJSON_Delete(o);

	__atomic_store_n(&ledger.status, 200, __ATOMIC_RELEASE);
	snprintf(body, sizeof(body), "{\"event_id\":%lld,\"sink\":\"ledger\"}", event_id);
	ck_assert_int_eq(admin("POST", "/v1/outbox/replay", body, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "status"), "ok");
	ck_assert_int_eq((int)jnum(o, "queued"), 1);
	ck_assert_str_eq(jstr(o, "sink"), "ledger");
	cJSON_Delete(o);
	ck_assert(hk_log_contains(&d, "admin api: replay"));

	/* the dead row says it was replayed, by the admin API, and what became of the replay */
	for (int i = 0; i < 500; i++) {
		ck_assert_int_eq(admin("GET", "/v1/outbox?state=dead&sink=ledger", NULL, &r), 200);
		if (strstr(r.body, "\"after_replay\":{\"state\":\"delivered\"") != NULL)
			break;
		usleep(20000);
	}
	o = json_of(&r);
	cJSON_ArrayForEach(it, jget(o, "outbox"))
	{
		if ((long long)jnum(it, "event_id") != event_id)
			continue;
		ck_assert_str_eq(jstr(it, "replayed_by"), "admin api");
		ck_assert_ptr_nonnull(jstr(it, "replayed_at"));
		ck_assert_str_eq(jstr(it, "after_replay.state"), "delivered");
		ck_assert_ptr_nonnull(jstr(it, "after_replay.delivered_at"));
	}
	cJSON_Delete(o);
	ck_assert_msg(strstr(r.body, "\"after_replay\":{\"state\":\"delivered\"") != NULL, "%s",
		      r.body);
	ck_assert_int_ge(__atomic_load_n(&ledger.accepted, __ATOMIC_ACQUIRE), 1);
	/* the stats count it as replayed, no longer as an open dead letter */
	ck_assert_int_eq(admin("GET", "/v1/stats", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_int_eq((int)jnum(o, "stats.outbox.dead"), 1);
	ck_assert_int_eq((int)jnum(o, "stats.outbox.replayed"), 1);
	cJSON_Delete(o);
	/* the replayed row is a delivered row of the outbox now, not a dead one */
	ck_assert_int_eq(admin("GET", "/v1/outbox?state=delivered&sink=ledger", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_int_eq(jlen(o, "outbox"), 1);
	ck_assert_int_eq((long long)jnum(o, "outbox.0.event_id"), event_id);
	cJSON_Delete(o);
}
END_TEST

START_TEST(lists_stale_conflicts_pages_and_stats)
{
	struct created c = create_paid("IT-CONSOLE-3");
	struct hk_reply r;
	char body[300], path[400];
	long long last_id = 0;
	cJSON *o;

	/* a tracked payment an hour past its expiry, and a fresh one */
	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"TRACK-STALE\",\"order_id\":\"O-S\",\"amount\":10,"
		 "\"expires_at\":%lld}",
		 (long long)time(NULL) - 3600);
	ck_assert_int_eq(admin("POST", "/v1/payments/track", body, &r), 201);
	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"TRACK-FRESH\",\"order_id\":\"O-F\",\"amount\":10,"
		 "\"expires_at\":%lld}",
		 (long long)time(NULL) + 3600);
	ck_assert_int_eq(admin("POST", "/v1/payments/track", body, &r), 201);
	ck_assert_int_eq(admin("GET", "/v1/payments?status=PENDING&stale=true", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_int_eq(jlen(o, "payments"), 1);
	ck_assert_str_eq(jstr(o, "payments.0.payment_id"), "TRACK-STALE");
	ck_assert_ptr_null(jget(o, "payments.0.matched"));
	cJSON_Delete(o);

	/* EXPIRED after PAID: a conflict */
	snprintf(path, sizeof(path), "http://127.0.0.1:%u/_sim/payments/%s/expire?force=1",
		 sim.port, c.id);
	ck_assert_int_eq(hk_request("POST", path, NULL, "", 0, 5000, &r), 200);
	for (int i = 0; i < 500; i++) {
		ck_assert_int_eq(admin("GET", "/v1/payments?conflict=true", NULL, &r), 200);
		if (strstr(r.body, c.id) != NULL)
			break;
		usleep(10000);
	}
	o = json_of(&r);
	ck_assert_int_eq(jlen(o, "payments"), 1);
	ck_assert_str_eq(jstr(o, "payments.0.payment_id"), c.id);
	ck_assert_str_eq(jstr(o, "payments.0.status"), "PAID");
	ck_assert_int_eq((int)jnum(o, "payments.0.conflicts"), 1);
	cJSON_Delete(o);

	/* three payments, newest first, one a page through next_after */
	ck_assert_int_eq(admin("GET", "/v1/payments?limit=1", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "payments.0.payment_id"), "TRACK-FRESH");
	ck_assert_ptr_nonnull(jstr(o, "next_after"));
	snprintf(path, sizeof(path), "/v1/payments?limit=1&after=%s", jstr(o, "next_after"));
	cJSON_Delete(o);
	ck_assert_int_eq(admin("GET", path, NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "payments.0.payment_id"), "TRACK-STALE");
	ck_assert_ptr_nonnull(jstr(o, "next_after"));
	cJSON_Delete(o);

	/* stats: the CLI's shape, the newest event id and the configured sinks */
	ck_assert_int_eq(admin("GET", "/v1/events?limit=1000", NULL, &r), 200);
	o = json_of(&r);
	last_id = (long long)jnum(o, "events.2.id");
	ck_assert_int_eq(jlen(o, "events"), 3);
	cJSON_Delete(o);
	ck_assert_int_eq(admin("GET", "/v1/stats", NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "status"), "ok");
	ck_assert_int_eq((int)jnum(o, "stats.events.total"), 3);
	ck_assert_int_eq((int)jnum(o, "stats.events.by_status.PAID"), 1);
	ck_assert_int_eq((int)jnum(o, "stats.events.by_source.callback"), 2);
	ck_assert_int_eq((int)jnum(o, "stats.events.by_source.api"), 1);
	ck_assert_int_eq((int)jnum(o, "stats.events.conflicts"), 1);
	ck_assert_int_eq((int)jnum(o, "stats.payments.stale"), 1);
	ck_assert_ptr_nonnull(jget(o, "stats.reconciled.total"));
	ck_assert_ptr_nonnull(jget(o, "stats.outbox.pending"));
	ck_assert_ptr_nonnull(jget(o, "stats.outbox.sinks"));
	ck_assert_int_eq((long long)jnum(o, "last_event_id"), last_id);
	ck_assert_int_eq(jlen(o, "sinks"), 2);
	ck_assert_str_eq(jstr(o, "sinks.0"), "shop");
	ck_assert_str_eq(jstr(o, "sinks.1"), "ledger");
	ck_assert_ptr_nonnull(jstr(o, "generated_at"));
	cJSON_Delete(o);
}
END_TEST

static Suite *console_suite(void)
{
	Suite *s = suite_create("it_console");
	TCase *core = tcase_create("core"), *limits = tcase_create("limits");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_add_test(core, console_page_needs_no_token_and_is_locked_down);
	tcase_add_test(core, search_and_the_payment_story);
	tcase_add_test(core, dead_letter_replayed_then_delivered);
	tcase_add_test(core, lists_stale_conflicts_pages_and_stats);
	suite_add_tcase(s, core);
	tcase_add_checked_fixture(limits, setup, teardown);
	tcase_add_test(limits, every_console_route_needs_the_token);
	tcase_add_test(limits, bad_parameters_are_400_naming_them);
	suite_add_tcase(s, limits);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(console_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
