/* Check suite for src/api_console.c's request rules: the query parameters of
 * GET /v1/payments and GET /v1/outbox (each bad value named), the payments cursor (ids with
 * ':' and '/'), the search text, sink names, the replay body, the routes. */
#include "api_console.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "http.h"

/* ---- a fake query string ---------------------------------------------------------------- */

struct params {
	const char *kv[16][2];
};

static const char *get(void *arg, const char *name)
{
	struct params *p = arg;

	for (size_t i = 0; i < 16 && p->kv[i][0] != NULL; i++)
		if (strcmp(p->kv[i][0], name) == 0)
			return p->kv[i][1];
	return NULL;
}

/* The parameter payments_params names for one name=value, or NULL when accepted. */
static const char *payments_bad(const char *name, const char *value)
{
	struct params p = {.kv = {{name, value}}};
	struct api_console_payments_query pq;
	const char *field = NULL, *rule = NULL;

	if (api_console_payments_params(get, &p, &pq, &field, &rule) == 0)
		return NULL;
	ck_assert_ptr_nonnull(rule);
	return field;
}

static const char *outbox_bad(const char *name, const char *value)
{
	struct params p = {.kv = {{name, value}}};
	struct api_console_outbox_query oq;
	const char *field = NULL, *rule = NULL;

	if (api_console_outbox_params(get, &p, &oq, &field, &rule) == 0)
		return NULL;
	ck_assert_ptr_nonnull(rule);
	return field;
}

/* ---- tests --------------------------------------------------------------------------------- */

START_TEST(payments_parameters)
{
	struct params p = {.kv = {{"q", "  8808000111 "},
				  {"status", "pending"},
				  {"stale", "true"},
				  {"conflict", "0"},
				  {"limit", "500"},
				  {"after", "1700000000000:KPAY-5292/KM/2026:x"}}};
	struct api_console_payments_query pq;
	const char *field = NULL, *rule = NULL;

	ck_assert_int_eq(api_console_payments_params(get, &p, &pq, &field, &rule), 0);
	ck_assert_str_eq(pq.f.q, "8808000111");
	ck_assert_int_eq(pq.f.status, PAYMENT_PENDING);
	ck_assert(pq.f.stale);
	ck_assert(!pq.f.conflict);
	ck_assert_int_eq(pq.f.limit, 500);
	ck_assert_int_eq(pq.f.after_created_at, 1700000000000LL);
	ck_assert_str_eq(pq.f.after_payment_id, "KPAY-5292/KM/2026:x");
	ck_assert_int_gt(pq.f.now_ms, 0);

	/* defaults, and empty values are the same as none */
	p = (struct params){.kv = {{"q", ""}, {"status", ""}, {"limit", ""}}};
	ck_assert_int_eq(api_console_payments_params(get, &p, &pq, &field, &rule), 0);
	ck_assert_ptr_null(pq.f.q);
	ck_assert_int_eq(pq.f.status, PAYMENT_UNKNOWN);
	ck_assert_int_eq(pq.f.limit, API_CONSOLE_PAYMENTS_LIMIT_DEFAULT);
	ck_assert_ptr_null(pq.f.after_payment_id);
}
END_TEST

START_TEST(payments_bad_parameters_are_named)
{
	char longq[200];

	memset(longq, 'a', 128);
	longq[128] = '\0';
	ck_assert_str_eq(payments_bad("q", "   "), "q");
	ck_assert_str_eq(payments_bad("q", "a\tb\x01"), "q");
	ck_assert_str_eq(payments_bad("q", longq), "q");
	longq[127] = '\0';
	ck_assert_ptr_null(payments_bad("q", longq));
	ck_assert_str_eq(payments_bad("status", "SETTLED"), "status");
	ck_assert_str_eq(payments_bad("stale", "yes"), "stale");
	ck_assert_str_eq(payments_bad("conflict", "TRUE "), "conflict");
	ck_assert_str_eq(payments_bad("limit", "0"), "limit");
	ck_assert_str_eq(payments_bad("limit", "501"), "limit");
	ck_assert_str_eq(payments_bad("limit", "-1"), "limit");
	ck_assert_str_eq(payments_bad("limit", "1e3"), "limit");
	ck_assert_str_eq(payments_bad("limit", "99999999999999999999999"), "limit");
	ck_assert_str_eq(payments_bad("after", "KOMPAY-1"), "after");
	ck_assert_str_eq(payments_bad("after", ":KOMPAY-1"), "after");
	ck_assert_str_eq(payments_bad("after", "12:"), "after");
	ck_assert_str_eq(payments_bad("after", "x1:KOMPAY-1"), "after");
	ck_assert_ptr_null(payments_bad("stale", "1"));
	ck_assert_ptr_null(payments_bad("conflict", "false"));
	ck_assert_ptr_null(payments_bad("status", "CANCELLED"));
	ck_assert_ptr_null(payments_bad("unknown", "whatever"));
}
END_TEST

START_TEST(cursor_round_trip)
{
	static const char *const ids[] = {"KOMPAY-1", "KPAY-5292/KM/2026", "a:b:c", "<script>"};
	char c[EVENT_ID_MAX + 24], id[EVENT_ID_MAX];
	int64_t at;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		api_console_cursor_format(1700000000123LL + (int64_t)i, ids[i], c, sizeof(c));
		ck_assert_int_eq(api_console_cursor_parse(c, &at, id, sizeof(id)), 0);
		ck_assert_int_eq(at, 1700000000123LL + (int64_t)i);
		ck_assert_str_eq(id, ids[i]);
	}
	ck_assert_int_eq(api_console_cursor_parse("0:x", &at, id, sizeof(id)), 0);
	ck_assert_int_eq(api_console_cursor_parse("99999999999999999999:x", &at, id, sizeof(id)),
			 -EINVAL);
	ck_assert_int_eq(api_console_cursor_parse("", &at, id, sizeof(id)), -EINVAL);
}
END_TEST

START_TEST(outbox_parameters)
{
	struct params p = {.kv = {{"state", "dead"},
				  {"sink", "shop-1_a"},
				  {"limit", "1000"},
				  {"after_id", "42"}}};
	struct api_console_outbox_query oq;
	const char *field = NULL, *rule = NULL;
	char long_sink[40];

	ck_assert_int_eq(api_console_outbox_params(get, &p, &oq, &field, &rule), 0);
	ck_assert_int_eq(oq.f.state, STORE_OUTBOX_DEAD);
	ck_assert_str_eq(oq.f.sink, "shop-1_a");
	ck_assert_int_eq(oq.f.limit, 1000);
	ck_assert_int_eq(oq.f.after_id, 42);
	p = (struct params){.kv = {{NULL, NULL}}};
	ck_assert_int_eq(api_console_outbox_params(get, &p, &oq, &field, &rule), 0);
	ck_assert_int_eq(oq.f.state, STORE_OUTBOX_ANY);
	ck_assert_ptr_null(oq.f.sink);
	ck_assert_int_eq(oq.f.limit, API_CONSOLE_OUTBOX_LIMIT_DEFAULT);

	memset(long_sink, 's', 32);
	long_sink[32] = '\0';
	ck_assert_str_eq(outbox_bad("state", "any"), "state");
	ck_assert_str_eq(outbox_bad("state", "DEAD"), "state");
	ck_assert_str_eq(outbox_bad("sink", "a b"), "sink");
	ck_assert_str_eq(outbox_bad("sink", "shop'--"), "sink");
	ck_assert_str_eq(outbox_bad("sink", long_sink), "sink");
	long_sink[31] = '\0';
	ck_assert_ptr_null(outbox_bad("sink", long_sink));
	ck_assert_str_eq(outbox_bad("limit", "1001"), "limit");
	ck_assert_str_eq(outbox_bad("after_id", "-3"), "after_id");
	ck_assert_str_eq(outbox_bad("after_id", "7x"), "after_id");
	ck_assert_ptr_null(outbox_bad("state", "pending"));
	ck_assert_ptr_null(outbox_bad("state", "delivered"));
}
END_TEST

/* replay_params on a body; returns the field named, or NULL when accepted. */
static const char *replay_bad(const char *json, long long *ret_id, const char **ret_sink)
{
	static struct config cfg = {.sinks = {{.name = "shop"}, {.name = "ledger"}}, .n_sinks = 2};
	cJSON *body = cJSON_Parse(json);
	const char *field = NULL, *rule = NULL;
	int r;

	ck_assert_ptr_nonnull(body);
	r = api_console_replay_params(body, &cfg, ret_id, ret_sink, &field, &rule);
	cJSON_Delete(body);
	if (r == 0)
		return NULL;
	ck_assert_ptr_nonnull(rule);
	return field;
}

START_TEST(replay_body)
{
	long long id = 0;
	const char *sink = "x";

	ck_assert_ptr_null(replay_bad("{\"event_id\":7}", &id, &sink));
	ck_assert_int_eq(id, 7);
	ck_assert_ptr_null(sink);
	ck_assert_ptr_null(replay_bad("{\"event_id\":8,\"sink\":null}", &id, &sink));
	ck_assert_ptr_null(sink);
	ck_assert_ptr_null(replay_bad("{\"event_id\":9,\"sink\":\"ledger\"}", &id, &sink));
	ck_assert_int_eq(id, 9);
	ck_assert_str_eq(sink, "ledger");

	ck_assert_str_eq(replay_bad("{}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":null}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":0}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":-1}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":1.5}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":\"7\"}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":1e300}", &id, &sink), "event_id");
	ck_assert_str_eq(replay_bad("{\"event_id\":7,\"sink\":\"nope\"}", &id, &sink), "sink");
	ck_assert_str_eq(replay_bad("{\"event_id\":7,\"sink\":\"\"}", &id, &sink), "sink");
	ck_assert_str_eq(replay_bad("{\"event_id\":7,\"sink\":3}", &id, &sink), "sink");
	ck_assert_str_eq(replay_bad("{\"event_id\":7,\"sink\":[\"shop\"]}", &id, &sink), "sink");
}
END_TEST

START_TEST(routes)
{
	struct http_route r[8];

	ck_assert_uint_eq(api_console_routes(NULL, r, 8), 4);
	ck_assert_str_eq(r[0].path, "/v1/payments");
	ck_assert(!r[0].prefix);
	ck_assert_str_eq(r[2].method, "POST");
	ck_assert(r[2].has_body);
	ck_assert(!r[2].json_body); /* 401 before 415 */
	ck_assert_uint_eq(api_console_routes(NULL, r, 2), 2);
}
END_TEST

static Suite *api_console_suite(void)
{
	Suite *s = suite_create("api_console");
	TCase *core = tcase_create("core"), *limits = tcase_create("limits");

	tcase_add_test(core, payments_parameters);
	tcase_add_test(core, outbox_parameters);
	tcase_add_test(core, replay_body);
	tcase_add_test(core, routes);
	suite_add_tcase(s, core);
	tcase_add_test(limits, payments_bad_parameters_are_named);
	tcase_add_test(limits, cursor_round_trip);
	suite_add_tcase(s, limits);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(api_console_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
