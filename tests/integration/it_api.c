/* Integration: the admin API of the real komerce-hookd in front of komerce-sim. Payments created
 * through the API (VA and QRIS), paid through the simulator's control endpoint so that its
 * signed callback lands; cancel; the methods cache; every local validation rule; upstream 5xx,
 * timeouts, resets and garbage mapped to 502/504 with nothing recorded; the bearer token; 404s;
 * tracking; payment ids with slashes. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cjson/cJSON.h>

#include "harness.h"

#define TOKEN_HEADER	  "Authorization: Bearer " HK_ADMIN_TOKEN
#define DAEMON_TIMEOUT_MS 600 /* komerce.timeout_ms of the daemon under test */

static struct hk_daemon d;
static struct hk_sim sim;

/* ---- helpers --------------------------------------------------------------------------- */

static void start_daemon(const char *base_url, const char *more)
{
	hk_daemon_init(&d, NULL);
	snprintf(d.extra, sizeof(d.extra),
		 "[komerce]\nbase_url = %s\n"
		 "callback_url = http://127.0.0.1:%u/v1/komerce/callback\n"
		 "timeout_ms = %d\n%s",
		 base_url, d.port, DAEMON_TIMEOUT_MS, more != NULL ? more : "");
	ck_assert_msg(hk_daemon_start(&d) == 0, "daemon did not become ready (log: %s)", d.log);
}

static void setup(void)
{
	char base[128];

	ck_assert_msg(hk_sim_start(&sim, "--quiet") == 0, "komerce-sim did not start");
	snprintf(base, sizeof(base), "http://127.0.0.1:%u/user", sim.port);
	start_daemon(base, NULL);
}

static void teardown(void)
{
	hk_daemon_cleanup(&d);
	hk_sim_stop(&sim);
}

/* A request to the admin listener; auth is the Authorization header (NULL: none). */
static long admin_as(const char *auth, const char *method, const char *path, const char *body,
		     struct hk_reply *r)
{
	char url[1024];
	const char *headers[3] = {NULL, NULL, NULL};
	size_t n = 0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", d.admin_port, path);
	if (auth != NULL)
		headers[n++] = auth;
	if (body != NULL)
		headers[n++] = "Content-Type: application/json";
	return hk_request(method, url, headers, body, body != NULL ? strlen(body) : 0, 10000, r);
}

static long admin(const char *method, const char *path, const char *body, struct hk_reply *r)
{
	return admin_as(TOKEN_HEADER, method, path, body, r);
}

static long sim_req(const char *method, const char *path, const char *body, struct hk_reply *r)
{
	char url[1024];
	const char *headers[] = {"Content-Type: application/json", NULL};

	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", sim.port, path);
	return hk_request(method, url, headers, body, body != NULL ? strlen(body) : 0, 10000, r);
}

static void sim_config(const char *json)
{
	struct hk_reply r;

	ck_assert_int_eq(sim_req("POST", "/_sim/config", json, &r), 200);
}

/* Parses a reply body; the test fails if it is not JSON. Caller frees. */
static cJSON *json_of(const struct hk_reply *r)
{
	cJSON *o = cJSON_Parse(r->body);

	ck_assert_msg(o != NULL, "reply is not JSON: %s", r->body);
	return o;
}

/* The member at a dotted path ("data.payment_id"), or NULL. */
static const cJSON *jget(const cJSON *o, const char *path)
{
	char name[64];

	while (o != NULL && *path != '\0') {
		size_t n = strcspn(path, ".");

		snprintf(name, sizeof(name), "%.*s", (int)n, path);
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

/* API requests the simulator has seen (GET /_sim/stats "requests"). */
static long sim_requests(void)
{
	struct hk_reply r;
	cJSON *o;
	long n;

	ck_assert_int_eq(sim_req("GET", "/_sim/stats", NULL, &r), 200);
	o = json_of(&r);
	n = (long)jnum(o, "requests");
	cJSON_Delete(o);
	return n;
}

/* Percent-encodes everything but unreserved characters (ids may contain slashes). */
static void pct(const char *in, char *out, size_t n)
{
	size_t o = 0;

	for (; *in != '\0' && o + 4 < n; in++) {
		unsigned char c = (unsigned char)*in;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, n - o, "%%%02X", c);
	}
	out[o] = '\0';
}

static const char va_body[] =
	"{\"order_id\":\"ORD-VA-1\",\"payment_type\":\"bank_transfer\",\"channel_code\":\"BCA\","
	"\"amount\":150000,\"customer\":{\"name\":\"Budi\",\"email\":\"budi@example.com\","
	"\"phone\":\"081234567890\"},\"items\":[{\"name\":\"Shirt\",\"quantity\":3,"
	"\"price\":50000}],\"expiry_duration\":7200}";

static const char qris_body[] =
	"{\"order_id\":\"ORD-QR-1\",\"payment_type\":\"qris\",\"amount\":25000,"
	"\"customer\":{\"name\":\"Sari\",\"email\":\"sari@example.com\",\"phone\":\"0811\"}}";

/* Creates a payment through the admin API; returns the parsed 201 reply (caller frees). */
static cJSON *create(const char *body)
{
	struct hk_reply r;

	ck_assert_int_eq(admin("POST", "/v1/payments", body, &r), 201);
	return json_of(&r);
}

/* GET /v1/payments/{id}: the parsed reply (caller frees), or NULL unless 200. */
static cJSON *get_payment(const char *id)
{
	char path[512], esc[400];
	struct hk_reply r;

	pct(id, esc, sizeof(esc));
	snprintf(path, sizeof(path), "/v1/payments/%s", esc);
	if (admin("GET", path, NULL, &r) != 200)
		return NULL;
	return json_of(&r);
}

struct wait_status {
	const char *id;
	const char *status;
	const char *source; /* an event with this status must have come from here, or NULL */
};

static bool payment_has(void *arg)
{
	struct wait_status *w = arg;
	cJSON *o = get_payment(w->id), *e;
	bool ok = false;

	if (o == NULL)
		return false;
	if (jstr(o, "payment.status") != NULL &&
	    strcmp(jstr(o, "payment.status"), w->status) == 0) {
		ok = w->source == NULL;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "events"))
		{
			if (w->source != NULL && strcmp(jstr(e, "status"), w->status) == 0 &&
			    strcmp(jstr(e, "source"), w->source) == 0)
				ok = true;
		}
	}
	cJSON_Delete(o);
	return ok;
}

static int count_events(const cJSON *o, const char *status, const char *source)
{
	const cJSON *e;
	int n = 0;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "events"))
	{
		if ((status == NULL || strcmp(jstr(e, "status"), status) == 0) &&
		    (source == NULL || strcmp(jstr(e, "source"), source) == 0))
			n++;
	}
	return n;
}

static void assert_nothing_recorded(void)
{
	ck_assert_int_eq(hk_count(&d, "events"), 0);
	ck_assert_int_eq(hk_count(&d, "payments"), 0);
}

/* ---- core ------------------------------------------------------------------------------ */

START_TEST(create_va_then_pay_callback_is_stored)
{
	char path[512];
	struct hk_reply r;
	cJSON *c, *p, *s;
	const char *id;
	struct wait_status w = {NULL, "PAID", "callback"};

	c = create(va_body);
	id = jstr(c, "data.payment_id");
	ck_assert_ptr_nonnull(id);
	ck_assert_ptr_nonnull(jstr(c, "data.va_number"));
	ck_assert_ptr_nonnull(jstr(c, "data.payment_url"));
	ck_assert_str_eq(jstr(c, "data.status"), "PENDING");
	ck_assert_double_ge(jnum(c, "event_id"), 1);

	/* Recorded: the payment (origin api, watched by the reconciler) and one api event. */
	p = get_payment(id);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(jstr(p, "payment.status"), "PENDING");
	ck_assert_str_eq(jstr(p, "payment.origin"), "api");
	ck_assert_str_eq(jstr(p, "payment.order_id"), "ORD-VA-1");
	ck_assert_str_eq(jstr(p, "payment.channel_code"), "BCA");
	ck_assert_double_eq(jnum(p, "payment.amount"), 150000);
	ck_assert_ptr_nonnull(jstr(p, "payment.expires_at"));
	ck_assert_ptr_nonnull(jstr(p, "payment.next_poll_at"));
	ck_assert_int_eq(count_events(p, "PENDING", "api"), 1);
	cJSON_Delete(p);

	/* The simulator got our callback URL and key, not the app's. */
	snprintf(path, sizeof(path), "/_sim/payments/%s", id);
	ck_assert_int_eq(sim_req("GET", path, NULL, &r), 200);
	s = json_of(&r);
	snprintf(path, sizeof(path), "http://127.0.0.1:%u/v1/komerce/callback", d.port);
	ck_assert_str_eq(jstr(s, "callback_url"), path);
	cJSON_Delete(s);

	/* Pay it in the simulator: its signed callback (first configured key) lands. */
	snprintf(path, sizeof(path), "/_sim/payments/%s/pay", id);
	ck_assert_int_eq(sim_req("POST", path, "", &r), 200);
	/* issue 20: the reply ends its line when a newcomer runs it with curl */
	ck_assert_msg(r.len > 0 && r.body[r.len - 1] == '\n', "no trailing newline: %s", r.body);
	w.id = id;
	ck_assert_msg(hk_wait_until(payment_has, &w, 10000), "callback never stored");
	p = get_payment(id);
	ck_assert_ptr_nonnull(jstr(p, "payment.callback_seen_at"));
	ck_assert_int_eq(count_events(p, NULL, NULL), 2);
	cJSON_Delete(p);
	ck_assert_int_eq(hk_count(&d, "events"), 2);
	cJSON_Delete(c);
}
END_TEST

/* Komerce's API document spells the create field callback_API_KEY, its endpoint page
 * callback_api_key: whichever one the server reads, it gets our key and signs the callback
 * with it. */
START_TEST(create_works_whichever_key_spelling_the_server_reads)
{
	static const char *const fields[] = {"callback_api_key", "callback_API_KEY"};
	char path[512], cfg[96], body[sizeof(va_body) + 16];
	struct hk_reply r;
	cJSON *c;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		struct wait_status w = {NULL, "PAID", "callback"};

		snprintf(cfg, sizeof(cfg), "{\"callback_key_field\":\"%s\"}", fields[i]);
		sim_config(cfg);
		snprintf(body, sizeof(body), "%s", va_body);
		memcpy(strstr(body, "ORD-VA-1"), i == 0 ? "ORD-VA-L" : "ORD-VA-U", 8);
		c = create(body);
		w.id = jstr(c, "data.payment_id");
		ck_assert_ptr_nonnull(w.id);
		snprintf(path, sizeof(path), "/_sim/payments/%s/pay", w.id);
		ck_assert_int_eq(sim_req("POST", path, "", &r), 200);
		ck_assert_msg(hk_wait_until(payment_has, &w, 10000),
			      "server reading %s: signed callback never stored", fields[i]);
		cJSON_Delete(c);
	}
}
END_TEST

START_TEST(create_qris)
{
	cJSON *c = create(qris_body), *p;
	const char *id = jstr(c, "data.payment_id");

	ck_assert_ptr_nonnull(id);
	ck_assert_ptr_nonnull(jstr(c, "data.qr_string"));
	p = get_payment(id);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(jstr(p, "payment.payment_type"), "qris");
	ck_assert_str_eq(jstr(p, "payment.status"), "PENDING");
	ck_assert_double_eq(jnum(p, "payment.amount"), 25000);
	ck_assert_int_eq(count_events(p, "PENDING", "api"), 1);
	cJSON_Delete(p);
	cJSON_Delete(c);
}
END_TEST

/* The CANCELED event has two receipts (our cancel and Komerce's callback). */
static bool canceled_twice(void *arg)
{
	cJSON *p = get_payment(arg);
	const cJSON *e;
	bool two = false;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "events"))
	{
		if (strcmp(jstr(e, "status"), "CANCELED") == 0 && jnum(e, "receipts") >= 2)
			two = true;
	}
	cJSON_Delete(p);
	return two;
}

START_TEST(cancel_records_event_and_callback_is_absorbed)
{
	char path[512];
	struct hk_reply r;
	cJSON *c = create(va_body), *o, *p;
	const char *id = jstr(c, "data.payment_id");

	snprintf(path, sizeof(path), "/v1/payments/%s/cancel", id);
	ck_assert_int_eq(admin("POST", path, NULL, &r), 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "status"), "ok");
	ck_assert_str_eq(jstr(o, "data.status"), "CANCELED");
	ck_assert_double_ge(jnum(o, "event_id"), 2);
	cJSON_Delete(o);

	p = get_payment(id);
	ck_assert_str_eq(jstr(p, "payment.status"), "CANCELED");
	ck_assert_ptr_null(jstr(p, "payment.next_poll_at")); /* terminal: not watched */
	/* One CANCELED event: ours, or Komerce's callback when it raced ahead of our commit. */
	ck_assert_int_eq(count_events(p, "CANCELED", NULL), 1);
	cJSON_Delete(p);

	/* Komerce's CANCELED callback: the same fact, one more receipt, no new event. */
	ck_assert_msg(hk_wait_until(canceled_twice, (void *)id, 10000),
		      "the simulator's cancel callback never arrived");
	ck_assert_int_eq(hk_count(&d, "events"), 2);

	/* Already canceled: refused locally, Komerce not asked. */
	long before = sim_requests();
	ck_assert_int_eq(admin("POST", path, NULL, &r), 409);
	ck_assert_ptr_nonnull(strstr(r.body, "CANCELED"));
	ck_assert_int_eq(sim_requests(), before);
	cJSON_Delete(c);
}
END_TEST

START_TEST(cancel_refused_upstream_is_502_and_not_recorded)
{
	char path[512];
	struct hk_reply r;
	cJSON *c = create(va_body), *p;
	const char *id = jstr(c, "data.payment_id");

	/* Paid at Komerce while our callback is dropped: locally still PENDING. */
	sim_config("{\"drop_callbacks\":true}");
	snprintf(path, sizeof(path), "/_sim/payments/%s/pay", id);
	ck_assert_int_eq(sim_req("POST", path, "", &r), 200);
	snprintf(path, sizeof(path), "/v1/payments/%s/cancel", id);
	ck_assert_int_eq(admin("POST", path, NULL, &r), 502);
	ck_assert_ptr_nonnull(strstr(r.body, "cannot be canceled"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"http_status\":400"));
	p = get_payment(id);
	ck_assert_str_eq(jstr(p, "payment.status"), "PENDING");
	ck_assert_int_eq(count_events(p, NULL, NULL), 1);
	cJSON_Delete(p);
	cJSON_Delete(c);
}
END_TEST

START_TEST(methods_are_cached)
{
	struct hk_reply r;
	long n0 = sim_requests();
	cJSON *o;

	ck_assert_int_eq(admin("GET", "/v1/methods", NULL, &r), 200);
	ck_assert_ptr_null(strcasestr(r.headers, "\nWarning:"));
	o = json_of(&r);
	ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "data")));
	ck_assert_int_gt(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "data")), 1);
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "stale")));
	cJSON_Delete(o);
	ck_assert_int_eq(sim_requests(), n0 + 1);

	ck_assert_int_eq(admin("GET", "/v1/methods", NULL, &r), 200);
	ck_assert_int_eq(sim_requests(), n0 + 1);

	/* A create validates against the cached list: only the create reaches Komerce. */
	cJSON_Delete(create(va_body));
	ck_assert_int_eq(sim_requests(), n0 + 2);
}
END_TEST

START_TEST(every_validation_rule_is_400)
{
	static const struct {
		const char *body;
		const char *field;
		const char *rule; /* substring */
	} cases[] = {
#define CUST "\"customer\":{\"name\":\"A\",\"email\":\"a@example.com\",\"phone\":\"0812\"}"
#define VA   "\"payment_type\":\"bank_transfer\",\"channel_code\":\"BCA\""
		{"[1,2]", "body", "JSON object"},
		{"{\"order_id\":", "body", "JSON object"},
		{"{" VA ",\"amount\":10000," CUST "}", "order_id", "required"},
		{"{\"order_id\":\"\"," VA ",\"amount\":10000," CUST "}", "order_id", "empty"},
		{"{\"order_id\":"
		 "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"," VA ",\"amount\":10000," CUST "}",
		 "order_id", "at most 100"},
		{"{\"order_id\":7," VA ",\"amount\":10000," CUST "}", "order_id", "string"},
		{"{\"order_id\":\"O\",\"amount\":10000," CUST "}", "payment_type", "required"},
		{"{\"order_id\":\"O\",\"payment_type\":\"card\",\"amount\":10000," CUST "}",
		 "payment_type", "bank_transfer or qris"},
		{"{\"order_id\":\"O\",\"payment_type\":\"bank_transfer\",\"amount\":10000," CUST
		 "}",
		 "channel_code", "required for bank_transfer"},
		{"{\"order_id\":\"O\",\"payment_type\":\"bank_transfer\",\"channel_code\":\"XYZ\","
		 "\"amount\":10000," CUST "}",
		 "channel_code", "methods"},
		{"{\"order_id\":\"O\"," VA "," CUST "}", "amount", "required"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":9999," CUST "}", "amount",
		 "at least 10000"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000.5," CUST "}", "amount", "integer"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":\"10000\"," CUST "}", "amount", "integer"},
		{"{\"order_id\":\"O\",\"payment_type\":\"qris\",\"amount\":20000000," CUST "}",
		 "amount", "for this channel"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000}", "customer", "required"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000,\"customer\":\"x\"}", "customer",
		 "object"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000,\"customer\":{\"email\":\"a@example."
		 "com\",\"phone\":\"1\"}}",
		 "customer.name", "required"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000,\"customer\":{\"name\":\"A\","
		 "\"email\":\"not-an-email\",\"phone\":\"1\"}}",
		 "customer.email", "valid email"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000,\"customer\":{\"name\":\"A\","
		 "\"email\":\"a@example.com\"}}",
		 "customer.phone", "required"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST ",\"items\":[]}", "items",
		 "not be empty"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST
		 ",\"items\":[{\"name\":\"a\",\"quantity\":1,\"price\":9000}]}",
		 "items", "must equal amount"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST
		 ",\"items\":[{\"name\":\"a\",\"quantity\":0,\"price\":10000}]}",
		 "items[0].quantity", "at least 1"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST
		 ",\"items\":[{\"quantity\":1,\"price\":10000}]}",
		 "items[0].name", "required"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST
		 ",\"items\":[{\"name\":\"a\",\"quantity\":1}]}",
		 "items[0].price", "required"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST ",\"expiry_duration\":3599}",
		 "expiry_duration", "at least 3600"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST
		 ",\"expiry_duration\":2592001}",
		 "expiry_duration", "at most"},
		{"{\"order_id\":\"O\",\"payment_type\":\"qris\",\"amount\":10000," CUST
		 ",\"expiry_duration\":3600}",
		 "expiry_duration", "fixed at 300"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST
		 ",\"callback_url\":\"https://evil.example/cb\"}",
		 "callback_url", "set by komerce-hookd"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST ",\"callback_api_key\":\"k\"}",
		 "callback_api_key", "set by komerce-hookd"},
		{"{\"order_id\":\"O\"," VA ",\"amount\":10000," CUST ",\"callback_API_KEY\":\"k\"}",
		 "callback_API_KEY", "set by komerce-hookd"},
#undef CUST
#undef VA
	};
	struct hk_reply r;
	long n0;

	/* Warm the methods cache: after this, no rejected request may reach Komerce. */
	ck_assert_int_eq(admin("GET", "/v1/methods", NULL, &r), 200);
	n0 = sim_requests();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *o;

		ck_assert_msg(admin("POST", "/v1/payments", cases[i].body, &r) == 400,
			      "case %zu (%s): got %ld %s", i, cases[i].field, r.status, r.body);
		o = json_of(&r);
		ck_assert_msg(jstr(o, "field") != NULL &&
				      strcmp(jstr(o, "field"), cases[i].field) == 0,
			      "case %zu: want field %s, got %s", i, cases[i].field, r.body);
		ck_assert_msg(strstr(jstr(o, "rule"), cases[i].rule) != NULL,
			      "case %zu: want rule ~ %s, got %s", i, cases[i].rule, r.body);
		ck_assert_ptr_nonnull(strstr(jstr(o, "error"), cases[i].field));
		cJSON_Delete(o);
	}
	ck_assert_int_eq(sim_requests(), n0);
	assert_nothing_recorded();
}
END_TEST

START_TEST(wrong_content_type_is_415)
{
	char url[128];
	const char *headers[] = {TOKEN_HEADER, "Content-Type: text/plain", NULL};
	struct hk_reply r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/payments", d.admin_port);
	ck_assert_int_eq(hk_request("POST", url, headers, va_body, strlen(va_body), 5000, &r), 415);
	assert_nothing_recorded();
}
END_TEST

/* ---- upstream failures ------------------------------------------------------------------ */

static void warm_methods(void)
{
	struct hk_reply r;

	ck_assert_int_eq(admin("GET", "/v1/methods", NULL, &r), 200);
}

START_TEST(upstream_500_is_502_and_nothing_recorded)
{
	struct hk_reply r;
	cJSON *o;

	warm_methods();
	sim_config("{\"fail_status\":500,\"fail_count\":1}");
	ck_assert_int_eq(admin("POST", "/v1/payments", va_body, &r), 502);
	o = json_of(&r);
	ck_assert_ptr_nonnull(strstr(jstr(o, "error"), "simulated failure"));
	ck_assert_str_eq(jstr(o, "upstream.error"), "server_error");
	ck_assert_double_eq(jnum(o, "upstream.http_status"), 500);
	cJSON_Delete(o);
	assert_nothing_recorded();
	ck_assert(hk_log_contains(&d, "komerce create failed"));
	ck_assert(!hk_log_contains(&d, HK_API_KEY));
	ck_assert(!hk_log_contains(&d, HK_CALLBACK_KEY));
}
END_TEST

START_TEST(upstream_refusal_is_502_and_nothing_recorded)
{
	struct hk_reply r;

	/* 401 from Komerce (as with a wrong api key): the app sees 502 with the message. */
	warm_methods();
	sim_config("{\"fail_status\":401,\"fail_count\":1}");
	ck_assert_int_eq(admin("POST", "/v1/payments", va_body, &r), 502);
	ck_assert_ptr_nonnull(strstr(r.body, "\"http_status\":401"));
	assert_nothing_recorded();
}
END_TEST

struct sim_payments {
	long want;
};

static bool sim_has_payments(void *arg)
{
	struct sim_payments *w = arg;
	struct hk_reply r;
	cJSON *o, *p;
	bool ok;

	if (sim_req("GET", "/_sim/stats", NULL, &r) != 200)
		return false;
	o = cJSON_Parse(r.body);
	p = cJSON_GetObjectItemCaseSensitive(o, "payments");
	ok = cJSON_GetArraySize(p) >= w->want;
	cJSON_Delete(o);
	return ok;
}

START_TEST(upstream_timeout_is_504_and_nothing_recorded)
{
	struct hk_reply r;
	struct sim_payments w = {1};
	char slow[64];

	warm_methods();
	snprintf(slow, sizeof(slow), "{\"slow_ms\":%d}", DAEMON_TIMEOUT_MS + 600);
	sim_config(slow);
	ck_assert_int_eq(admin("POST", "/v1/payments", va_body, &r), 504);
	ck_assert_ptr_nonnull(strstr(r.body, "timeout"));
	/* The simulator creates it once its delay is over; we still know nothing of it. */
	ck_assert(hk_wait_until(sim_has_payments, &w, 5000));
	assert_nothing_recorded();
}
END_TEST

START_TEST(upstream_reset_is_502)
{
	struct hk_reply r;

	/* Two: libcurl retries once on a fresh connection when a reused one dies unanswered. */
	warm_methods();
	sim_config("{\"reset_connections\":2}");
	ck_assert_int_eq(admin("POST", "/v1/payments", va_body, &r), 502);
	assert_nothing_recorded();
}
END_TEST

START_TEST(methods_failure_without_cache_is_502)
{
	struct hk_reply r;

	sim_config("{\"fail_status\":503,\"fail_count\":1}");
	ck_assert_int_eq(admin("GET", "/v1/methods", NULL, &r), 502);
	ck_assert_ptr_nonnull(strstr(r.body, "simulated failure"));
	ck_assert(hk_log_contains(&d, "komerce methods failed"));
}
END_TEST

/* A fake upstream that answers every request with a 200 HTML page. */
struct garbage_server {
	int fd;
	unsigned port;
	pthread_t thread;
	long served;
};

static void *garbage_main(void *arg)
{
	static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
				    "Content-Length: 28\r\nConnection: close\r\n\r\n"
				    "<html>502 Bad Gateway</html>";
	struct garbage_server *g = arg;
	char buf[8192];

	for (;;) {
		int c = accept(g->fd, NULL, NULL);
		struct timeval tv = {0, 200000};

		if (c < 0)
			break;
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		/* Read whatever the request is (headers and a small body), then answer. */
		for (ssize_t n; (n = read(c, buf, sizeof(buf))) > 0;)
			if (memmem(buf, (size_t)n, "\r\n\r\n", 4) != NULL)
				break;
		if (write(c, reply, sizeof(reply) - 1) < 0)
			perror("garbage write");
		__atomic_fetch_add(&g->served, 1, __ATOMIC_RELAXED);
		close(c);
	}
	return NULL;
}

static struct garbage_server garbage;

static void garbage_setup(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	char base[128];

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	garbage.fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(garbage.fd, 0);
	ck_assert_int_eq(bind(garbage.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(garbage.fd, 16), 0);
	ck_assert_int_eq(getsockname(garbage.fd, (struct sockaddr *)&sa, &len), 0);
	garbage.port = ntohs(sa.sin_port);
	ck_assert_int_eq(pthread_create(&garbage.thread, NULL, garbage_main, &garbage), 0);
	snprintf(base, sizeof(base), "http://127.0.0.1:%u/user", garbage.port);
	start_daemon(base, NULL);
}

static void garbage_teardown(void)
{
	hk_daemon_cleanup(&d);
	shutdown(garbage.fd, SHUT_RDWR);
	close(garbage.fd);
	pthread_join(garbage.thread, NULL);
}

START_TEST(upstream_garbage_is_502_and_nothing_recorded)
{
	struct hk_reply r;
	cJSON *o;

	ck_assert_int_eq(admin("GET", "/v1/methods", NULL, &r), 502);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "upstream.error"), "bad_response");
	cJSON_Delete(o);
	/* Without a methods list the create is still validated for presence, then sent. */
	ck_assert_int_eq(admin("POST", "/v1/payments", va_body, &r), 502);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "upstream.error"), "bad_response");
	ck_assert_ptr_nonnull(strstr(jstr(o, "error"), "komerce create failed"));
	cJSON_Delete(o);
	ck_assert_int_ge(__atomic_load_n(&garbage.served, __ATOMIC_RELAXED), 3);
	assert_nothing_recorded();
}
END_TEST

/* ---- auth and lookups ------------------------------------------------------------------- */

START_TEST(token_required_everywhere)
{
	static const struct {
		const char *method, *path;
		bool body;
	} routes[] = {
		{"GET", "/v1/methods", false},
		{"POST", "/v1/payments", true},
		{"GET", "/v1/payments/KOMPAY-1-ABCDEF", false},
		{"POST", "/v1/payments/KOMPAY-1-ABCDEF/cancel", true},
		{"POST", "/v1/payments/track", true},
		{"GET", "/v1/events", false},
	};
	static const char *const bad[] = {
		NULL,
		"Authorization: Bearer wrong-token-0123456789",
		"Authorization: Bearer " HK_ADMIN_TOKEN "x",
		"Authorization: Basic dGVzdDp0ZXN0",
		"Authorization: " HK_ADMIN_TOKEN,
		"Authorization: Bearer ",
	};
	long n0 = sim_requests();
	struct hk_reply r;

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			ck_assert_msg(admin_as(bad[j], routes[i].method, routes[i].path,
					       routes[i].body ? va_body : NULL, &r) == 401,
				      "%s %s with %s: %ld", routes[i].method, routes[i].path,
				      bad[j] != NULL ? bad[j] : "no header", r.status);
			ck_assert_ptr_nonnull(strcasestr(r.headers, "WWW-Authenticate: Bearer"));
		}
	}
	ck_assert_int_eq(sim_requests(), n0);
	assert_nothing_recorded();
	/* The lowercase scheme is fine. */
	ck_assert_int_eq(
		admin_as("Authorization: bearer " HK_ADMIN_TOKEN, "GET", "/v1/methods", NULL, &r),
		200);
}
END_TEST

START_TEST(unknown_payment_is_404)
{
	struct hk_reply r;
	long n0 = sim_requests();

	ck_assert_int_eq(admin("GET", "/v1/payments/KOMPAY-0-000000", NULL, &r), 404);
	ck_assert_ptr_nonnull(strstr(r.body, "payment not found"));
	ck_assert_int_eq(admin("POST", "/v1/payments/KOMPAY-0-000000/cancel", NULL, &r), 404);
	ck_assert_int_eq(admin("POST", "/v1/payments/KOMPAY-0-000000", NULL, &r), 404);
	ck_assert_int_eq(admin("GET", "/v1/payments/", NULL, &r), 404);
	ck_assert_int_eq(sim_requests(), n0);
}
END_TEST

START_TEST(events_behind_token)
{
	char path[512], esc[256];
	struct hk_reply r;
	cJSON *c = create(va_body), *o;

	pct(jstr(c, "data.payment_id"), esc, sizeof(esc));
	snprintf(path, sizeof(path), "/v1/events?payment_id=%s", esc);
	ck_assert_int_eq(admin("GET", path, NULL, &r), 200);
	o = json_of(&r);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "events")), 1);
	cJSON_Delete(o);
	ck_assert_int_eq(admin_as(NULL, "GET", path, NULL, &r), 401);
	cJSON_Delete(c);
}
END_TEST

/* ---- tracking and ids with slashes ------------------------------------------------------ */

START_TEST(track_then_409)
{
	static const char body[] = "{\"payment_id\":\"KOMPAY-1700000000-ABC123\",\"order_id\":"
				   "\"ORD-T-1\",\"amount\":120000,\"expires_at\":4102444800}";
	struct hk_reply r;
	cJSON *o, *p;

	ck_assert_int_eq(admin("POST", "/v1/payments/track", body, &r), 201);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "payment.origin"), "track");
	cJSON_Delete(o);
	p = get_payment("KOMPAY-1700000000-ABC123");
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(jstr(p, "payment.status"), "PENDING");
	ck_assert_str_eq(jstr(p, "payment.origin"), "track");
	ck_assert_str_eq(jstr(p, "payment.order_id"), "ORD-T-1");
	ck_assert_str_eq(jstr(p, "payment.expires_at"), "2100-01-01T00:00:00.000Z");
	ck_assert_ptr_nonnull(jstr(p, "payment.next_poll_at"));
	ck_assert_int_eq(count_events(p, NULL, NULL), 0);
	cJSON_Delete(p);

	ck_assert_int_eq(admin("POST", "/v1/payments/track", body, &r), 409);
	ck_assert_ptr_nonnull(strstr(r.body, "already known"));

	/* A payment created through the API is known too. */
	o = create(va_body);
	char again[512];
	snprintf(again, sizeof(again),
		 "{\"payment_id\":\"%s\",\"order_id\":\"O\",\"amount\":150000,"
		 "\"expires_at\":\"2100-01-01T00:00:00Z\"}",
		 jstr(o, "data.payment_id"));
	ck_assert_int_eq(admin("POST", "/v1/payments/track", again, &r), 409);
	cJSON_Delete(o);
	ck_assert_int_eq(hk_count(&d, "payments"), 2);
}
END_TEST

START_TEST(track_missing_fields_is_400)
{
	static const struct {
		const char *body, *field;
	} cases[] = {
		{"{\"order_id\":\"O\",\"amount\":10000,\"expires_at\":4102444800}", "payment_id"},
		{"{\"payment_id\":\"\",\"order_id\":\"O\",\"amount\":10000,\"expires_at\":1}",
		 "payment_id"},
		{"{\"payment_id\":\"P\",\"amount\":10000,\"expires_at\":4102444800}", "order_id"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"expires_at\":4102444800}", "amount"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":-5,\"expires_at\":1}",
		 "amount"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":10000}", "expires_at"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":10000,\"expires_at\":"
		 "\"soon\"}",
		 "expires_at"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":10000,\"expires_at\":1,"
		 "\"channel_code\":5}",
		 "channel_code"},
		{"\"just a string\"", "body"},
	};
	struct hk_reply r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *o;

		ck_assert_msg(admin("POST", "/v1/payments/track", cases[i].body, &r) == 400,
			      "case %zu: %ld %s", i, r.status, r.body);
		o = json_of(&r);
		ck_assert_str_eq(jstr(o, "field"), cases[i].field);
		cJSON_Delete(o);
	}
	assert_nothing_recorded();
}
END_TEST

START_TEST(ids_with_slashes)
{
	static const char id[] = "KPAY-5292/KM/2026";
	char body[1024], path[512], esc[256];
	struct hk_reply r;
	struct wait_status w = {id, "PAID", "callback"};
	cJSON *p;

	/* Created at "Komerce" directly (the simulator's control endpoint allows any id), with
	 * our callback URL and key, then tracked here. */
	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-S-1\",\"payment_type\":"
		 "\"bank_transfer\",\"channel_code\":\"BNI\",\"amount\":50000,\"customer\":"
		 "{\"name\":\"A\",\"email\":\"a@example.com\",\"phone\":\"1\"},\"callback_url\":"
		 "\"http://127.0.0.1:%u/v1/komerce/callback\",\"callback_api_key\":\"%s\"}",
		 id, d.port, HK_CALLBACK_KEY);
	ck_assert_int_eq(sim_req("POST", "/_sim/payments", body, &r), 200);
	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-S-1\",\"amount\":50000,"
		 "\"expires_at\":4102444800}",
		 id);
	ck_assert_int_eq(admin("POST", "/v1/payments/track", body, &r), 201);

	/* Encoded or not, the slashes belong to the id. */
	pct(id, esc, sizeof(esc));
	snprintf(path, sizeof(path), "/v1/payments/%s", esc);
	ck_assert_int_eq(admin("GET", path, NULL, &r), 200);
	p = json_of(&r);
	ck_assert_str_eq(jstr(p, "payment.payment_id"), id);
	cJSON_Delete(p);
	snprintf(path, sizeof(path), "/v1/payments/%s", id);
	ck_assert_int_eq(admin("GET", path, NULL, &r), 200);

	snprintf(path, sizeof(path), "/_sim/payments/%s/pay", esc);
	ck_assert_int_eq(sim_req("POST", path, "", &r), 200);
	ck_assert_msg(hk_wait_until(payment_has, &w, 10000), "callback never stored");
}
END_TEST

START_TEST(cancel_id_with_slashes)
{
	static const char id[] = "KPAY-77/KM/2026";
	char body[1024], path[512], esc[256];
	struct hk_reply r;
	cJSON *p;

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-S-2\",\"payment_type\":\"qris\","
		 "\"amount\":50000,\"customer\":{\"name\":\"A\",\"email\":\"a@example.com\","
		 "\"phone\":\"1\"}}",
		 id);
	ck_assert_int_eq(sim_req("POST", "/_sim/payments", body, &r), 200);
	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"%s\",\"order_id\":\"ORD-S-2\",\"amount\":50000,"
		 "\"expires_at\":4102444800,\"payment_type\":\"qris\"}",
		 id);
	ck_assert_int_eq(admin("POST", "/v1/payments/track", body, &r), 201);
	pct(id, esc, sizeof(esc));
	snprintf(path, sizeof(path), "/v1/payments/%s/cancel", esc);
	ck_assert_int_eq(admin("POST", path, NULL, &r), 200);
	p = get_payment(id);
	ck_assert_str_eq(jstr(p, "payment.status"), "CANCELED");
	ck_assert_int_eq(count_events(p, "CANCELED", "api"), 1);
	cJSON_Delete(p);
	snprintf(path, sizeof(path), "/_sim/payments/%s", esc);
	ck_assert_int_eq(sim_req("GET", path, NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"status\":\"CANCELED\""));
}
END_TEST

static Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *core = tcase_create("core"), *limits = tcase_create("limits"),
	      *errors = tcase_create("errors"), *garbage_tc = tcase_create("garbage");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_add_test(core, create_va_then_pay_callback_is_stored);
	tcase_add_test(core, create_qris);
	tcase_add_test(core, create_works_whichever_key_spelling_the_server_reads);
	tcase_add_test(core, cancel_records_event_and_callback_is_absorbed);
	tcase_add_test(core, methods_are_cached);
	tcase_add_test(core, events_behind_token);
	tcase_add_test(core, track_then_409);
	tcase_add_test(core, ids_with_slashes);
	tcase_add_test(core, cancel_id_with_slashes);
	suite_add_tcase(s, core);

	tcase_add_checked_fixture(limits, setup, teardown);
	tcase_add_test(limits, every_validation_rule_is_400);
	tcase_add_test(limits, wrong_content_type_is_415);
	tcase_add_test(limits, track_missing_fields_is_400);
	tcase_add_test(limits, token_required_everywhere);
	tcase_add_test(limits, unknown_payment_is_404);
	suite_add_tcase(s, limits);

	tcase_add_checked_fixture(errors, setup, teardown);
	tcase_add_test(errors, upstream_500_is_502_and_nothing_recorded);
	tcase_add_test(errors, upstream_refusal_is_502_and_nothing_recorded);
	tcase_add_test(errors, upstream_timeout_is_504_and_nothing_recorded);
	tcase_add_test(errors, upstream_reset_is_502);
	tcase_add_test(errors, methods_failure_without_cache_is_502);
	tcase_add_test(errors, cancel_refused_upstream_is_502_and_not_recorded);
	suite_add_tcase(s, errors);

	tcase_add_checked_fixture(garbage_tc, garbage_setup, garbage_teardown);
	tcase_add_test(garbage_tc, upstream_garbage_is_502_and_nothing_recorded);
	suite_add_tcase(s, garbage_tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(api_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
