/* Check suite for the admin API's rules (src/api_req.c: the bearer-token check, payment ids
 * from decoded paths, the upstream-error mapping, the create-request preparation, whose
 * callback fields belong to the daemon, the track-request reader) and its methods cache
 * (src/api_methods.c: TTL, stale copy on a failed refresh, retry back-off) driven by a fake
 * clock and a fake Komerce. */
#include "api_methods.h"
#include "api_req.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---- token ----------------------------------------------------------------------------- */

static void hash_of(const char *token, uint8_t out[UTIL_SHA256_LEN])
{
	api_token_hash(token, out);
}

START_TEST(test_token)
{
	uint8_t want[UTIL_SHA256_LEN];

	hash_of("admin-token-0123456789", want);
	ck_assert(api_token_valid(want, "Bearer admin-token-0123456789"));
	ck_assert(api_token_valid(want, "bearer admin-token-0123456789"));
	ck_assert(api_token_valid(want, "  Bearer   admin-token-0123456789  "));
	ck_assert(!api_token_valid(want, NULL));
	ck_assert(!api_token_valid(want, ""));
	ck_assert(!api_token_valid(want, "Bearer"));
	ck_assert(!api_token_valid(want, "Bearer "));
	ck_assert(!api_token_valid(want, "admin-token-0123456789"));
	ck_assert(!api_token_valid(want, "Basic admin-token-0123456789"));
	ck_assert(!api_token_valid(want, "Bearer admin-token-012345678"));
	ck_assert(!api_token_valid(want, "Bearer admin-token-01234567890"));
	ck_assert(!api_token_valid(want, "Bearer ADMIN-TOKEN-0123456789"));
}
END_TEST

/* ---- paths ----------------------------------------------------------------------------- */

START_TEST(test_path_id)
{
	char id[EVENT_ID_MAX], longp[400];

	ck_assert_int_eq(api_path_id("/v1/payments/KOMPAY-1-A", NULL, id, sizeof(id)), 0);
	ck_assert_str_eq(id, "KOMPAY-1-A");
	ck_assert_int_eq(api_path_id("/v1/payments/KPAY-5292/KM/2026", NULL, id, sizeof(id)), 0);
	ck_assert_str_eq(id, "KPAY-5292/KM/2026");
	ck_assert_int_eq(
		api_path_id("/v1/payments/KPAY-5292/KM/2026/cancel", "/cancel", id, sizeof(id)), 0);
	ck_assert_str_eq(id, "KPAY-5292/KM/2026");
	ck_assert_int_eq(api_path_id("/v1/payments/X/cancel", NULL, id, sizeof(id)), 0);
	ck_assert_str_eq(id, "X/cancel");

	ck_assert_int_eq(api_path_id("/v1/payments/", NULL, id, sizeof(id)), -ENOENT);
	ck_assert_int_eq(api_path_id("/v1/payments//cancel", "/cancel", id, sizeof(id)), -ENOENT);
	ck_assert_int_eq(api_path_id("/v1/payments/cancel", "/cancel", id, sizeof(id)), -ENOENT);
	ck_assert_int_eq(api_path_id("/v1/payments/X", "/cancel", id, sizeof(id)), -ENOENT);
	ck_assert_int_eq(api_path_id("/v1/payment/X", NULL, id, sizeof(id)), -ENOENT);
	ck_assert_int_eq(api_path_id("/v1/payments/a\tb", NULL, id, sizeof(id)), -ENOENT);
	snprintf(longp, sizeof(longp), "/v1/payments/%0*d", EVENT_ID_MAX, 7);
	ck_assert_int_eq(api_path_id(longp, NULL, id, sizeof(id)), -ENOENT);
	snprintf(longp, sizeof(longp), "/v1/payments/%0*d", EVENT_ID_MAX - 1, 7);
	ck_assert_int_eq(api_path_id(longp, NULL, id, sizeof(id)), 0);
}
END_TEST

/* ---- upstream mapping ------------------------------------------------------------------ */

START_TEST(test_upstream_status)
{
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_TIMEOUT), 504);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_NOMEM), 500);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_BAD_REQUEST), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_UNAUTHORIZED), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_NOT_FOUND), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_RATE_LIMITED), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_SERVER), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_CONNECT), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_DNS), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_TLS), 502);
	ck_assert_uint_eq(api_upstream_status(KOMERCE_E_BAD_RESPONSE), 502);
}
END_TEST

/* ---- create preparation ---------------------------------------------------------------- */

START_TEST(test_create_prepare_fills_callback)
{
	cJSON *req = cJSON_Parse("{\"order_id\":\"O\"}");
	char field[64], rule[128];

	ck_assert_int_eq(api_create_prepare(req, "https://shop.example/cb", "key-1", field,
					    sizeof(field), rule, sizeof(rule)),
			 0);
	ck_assert_str_eq(cJSON_GetObjectItem(req, "callback_url")->valuestring,
			 "https://shop.example/cb");
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(req, "callback_api_key")->valuestring,
			 "key-1");
	/* The other spelling of Komerce's documents too: a server reads the one it knows. */
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(req, "callback_API_KEY")->valuestring,
			 "key-1");
	cJSON_Delete(req);

	req = cJSON_Parse("{\"order_id\":\"O\"}");
	ck_assert_int_eq(
		api_create_prepare(req, "", "key-1", field, sizeof(field), rule, sizeof(rule)), 0);
	ck_assert_ptr_null(cJSON_GetObjectItem(req, "callback_url"));
	ck_assert_ptr_null(cJSON_GetObjectItem(req, "callback_api_key"));
	ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(req, "callback_API_KEY"));
	cJSON_Delete(req);
}
END_TEST

START_TEST(test_create_prepare_refuses_client_callback)
{
	static const char *const bodies[] = {
		"{\"callback_url\":\"https://evil.example\"}", "{\"callback_api_key\":\"k\"}",
		"{\"callback_API_KEY\":\"k\"}", "{\"callback_url\":null}"};
	static const char *const fields[] = {"callback_url", "callback_api_key", "callback_API_KEY",
					     "callback_url"};
	char field[64], rule[128];

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		cJSON *req = cJSON_Parse(bodies[i]);

		ck_assert_int_eq(api_create_prepare(req, "https://shop.example/cb", "key-1", field,
						    sizeof(field), rule, sizeof(rule)),
				 -EINVAL);
		ck_assert_str_eq(field, fields[i]);
		ck_assert_ptr_nonnull(strstr(rule, "komerce-hookd"));
		cJSON_Delete(req);
	}
}
END_TEST

/* ---- track ----------------------------------------------------------------------------- */

static int track(const char *json, struct event *ev, char *field, size_t n)
{
	char rule[128];
	cJSON *b = cJSON_Parse(json);
	int r;

	ck_assert_ptr_nonnull(b);
	r = api_track_parse(b, ev, field, n, rule, sizeof(rule));
	cJSON_Delete(b);
	return r;
}

START_TEST(test_track_parse)
{
	struct event ev;
	char field[64];

	ck_assert_int_eq(track("{\"payment_id\":\"KPAY-1/KM\",\"order_id\":\"O-1\",\"amount\":"
			       "10000,\"expires_at\":1786529730,\"payment_type\":\"qris\"}",
			       &ev, field, sizeof(field)),
			 0);
	ck_assert_str_eq(ev.payment_id, "KPAY-1/KM");
	ck_assert_str_eq(ev.order_id, "O-1");
	ck_assert_str_eq(ev.payment_type, "qris");
	ck_assert_str_eq(ev.channel_code, "");
	ck_assert_int_eq(ev.amount, 10000);
	ck_assert_int_eq(ev.expires_at, 1786529730);
	ck_assert_int_eq(ev.status, PAYMENT_PENDING);

	ck_assert_int_eq(track("{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":1,"
			       "\"expires_at\":\"2026-08-12T10:15:30Z\"}",
			       &ev, field, sizeof(field)),
			 0);
	ck_assert_int_eq(ev.expires_at, 1786529730);
}
END_TEST

START_TEST(test_track_parse_errors)
{
	static const struct {
		const char *json, *field;
	} cases[] = {
		{"{}", "payment_id"},
		{"{\"payment_id\":1}", "payment_id"},
		{"{\"payment_id\":\"a\\u0001b\"}", "payment_id"},
		{"{\"payment_id\":\"P\"}", "order_id"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"payment_type\":\"\"}", "payment_type"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"channel_code\":"
		 "\"0123456789012345678901234567890123\"}",
		 "channel_code"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\"}", "amount"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":0}", "amount"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":1.5}", "amount"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":\"100\"}", "amount"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":100}", "expires_at"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":100,\"expires_at\":0}",
		 "expires_at"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":100,\"expires_at\":true}",
		 "expires_at"},
		{"{\"payment_id\":\"P\",\"order_id\":\"O\",\"amount\":100,\"expires_at\":\"x\"}",
		 "expires_at"},
	};
	struct event ev;
	char field[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(track(cases[i].json, &ev, field, sizeof(field)) == -EINVAL,
			      "case %zu accepted", i);
		ck_assert_str_eq(field, cases[i].field);
	}
}
END_TEST

/* ---- methods cache --------------------------------------------------------------------- */

static const char methods_reply[] =
	"{\"meta\":{\"message\":\"ok\",\"code\":200,\"status\":\"success\"},\"data\":[{"
	"\"payment_type\":\"va\",\"bank_code\":\"BCA\"},{\"payment_type\":\"qris\","
	"\"bank_code\":\"\"}]}";

static int fake_calls;
static int fake_mode; /* 0 ok, 1 timeout, 2 data is not an array */

static int fake_fetch(void *ctx, struct komerce_result *ret)
{
	static const char not_array[] = "{\"meta\":{\"code\":200},\"data\":{\"x\":1}}";

	(void)ctx;
	fake_calls++;
	if (fake_mode == 1) {
		memset(ret, 0, sizeof(*ret));
		ret->err = KOMERCE_E_TIMEOUT;
		ret->retry_after_s = -1;
		snprintf(ret->message, sizeof(ret->message), "timeout after 10000 ms");
		return -ETIMEDOUT;
	}
	if (fake_mode == 2)
		return komerce_parse_reply(200, not_array, strlen(not_array), ret);
	return komerce_parse_reply(200, methods_reply, strlen(methods_reply), ret);
}

static struct api_methods fake;

static void methods_setup(void)
{
	api_methods_init(&fake, fake_fetch, NULL);
	fake_calls = 0;
	fake_mode = 0;
}

static void methods_teardown(void)
{
	api_methods_destroy(&fake);
}

/* One methods_get at monotonic time t (ms); returns its result, *stale and the text. */
static int get_at(int64_t t, bool *stale, char **text, enum komerce_err *err)
{
	struct komerce_result res;
	int64_t fetched = 0;
	int r;

	*stale = false;
	r = api_methods_get(&fake, t, 1786529730000LL + t, text, stale, &fetched, &res);
	*err = res.err;
	komerce_result_clear(&res);
	return r;
}

START_TEST(test_methods_cached_for_an_hour)
{
	enum komerce_err err;
	char *text;
	bool stale;

	ck_assert_int_eq(get_at(1000, &stale, &text, &err), 0);
	ck_assert(!stale);
	ck_assert_ptr_nonnull(strstr(text, "\"bank_code\":\"BCA\""));
	ck_assert_int_eq(fake_calls, 1);
	free(text);

	ck_assert_int_eq(get_at(1000 + API_METHODS_TTL_MS - 1, &stale, &text, &err), 0);
	ck_assert(!stale);
	ck_assert_int_eq(fake_calls, 1);
	free(text);

	ck_assert_int_eq(get_at(1000 + API_METHODS_TTL_MS, &stale, &text, &err), 0);
	ck_assert(!stale);
	ck_assert_int_eq(fake_calls, 2);
	free(text);
}
END_TEST

START_TEST(test_methods_stale_on_failed_refresh)
{
	int64_t t = 5000 + API_METHODS_TTL_MS;
	enum komerce_err err;
	char *text;
	bool stale;

	ck_assert_int_eq(get_at(5000, &stale, &text, &err), 0);
	free(text);

	fake_mode = 1;
	ck_assert_int_eq(get_at(t, &stale, &text, &err), 0);
	ck_assert(stale);
	ck_assert_int_eq(err, KOMERCE_E_TIMEOUT);
	ck_assert_ptr_nonnull(strstr(text, "\"bank_code\":\"BCA\""));
	ck_assert_int_eq(fake_calls, 2);
	free(text);

	/* Within the back-off the stale copy is served without asking Komerce again. */
	ck_assert_int_eq(get_at(t + API_METHODS_RETRY_MS - 1, &stale, &text, &err), 0);
	ck_assert(stale);
	ck_assert_int_eq(fake_calls, 2);
	free(text);

	/* Then it tries again; a bad reply is a failure too. */
	fake_mode = 2;
	ck_assert_int_eq(get_at(t + API_METHODS_RETRY_MS, &stale, &text, &err), 0);
	ck_assert(stale);
	ck_assert_int_eq(err, KOMERCE_E_BAD_RESPONSE);
	ck_assert_int_eq(fake_calls, 3);
	free(text);

	/* Komerce is back: fresh again. */
	fake_mode = 0;
	ck_assert_int_eq(get_at(t + 2 * API_METHODS_RETRY_MS, &stale, &text, &err), 0);
	ck_assert(!stale);
	ck_assert_int_eq(fake_calls, 4);
	free(text);
}
END_TEST

START_TEST(test_methods_failure_without_copy)
{
	enum komerce_err err;
	char *text = (char *)"untouched";
	bool stale;

	fake_mode = 1;
	ck_assert_int_eq(get_at(1000, &stale, &text, &err), -ETIMEDOUT);
	ck_assert_ptr_null(text);
	ck_assert_int_eq(err, KOMERCE_E_TIMEOUT);
	/* No copy to fall back on: every call asks again (no back-off without a copy). */
	ck_assert_int_eq(get_at(1001, &stale, &text, &err), -ETIMEDOUT);
	ck_assert_int_eq(fake_calls, 2);
	fake_mode = 2;
	ck_assert_int_eq(get_at(1002, &stale, &text, &err), -EIO);
	ck_assert_int_eq(err, KOMERCE_E_BAD_RESPONSE);
}
END_TEST

static Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *core = tcase_create("core"), *limits = tcase_create("limits"),
	      *errors = tcase_create("errors");

	tcase_add_test(core, test_token);
	tcase_add_test(core, test_path_id);
	tcase_add_test(core, test_create_prepare_fills_callback);
	tcase_add_test(core, test_track_parse);
	suite_add_tcase(s, core);

	tcase_add_checked_fixture(limits, methods_setup, methods_teardown);
	tcase_add_test(limits, test_methods_cached_for_an_hour);
	tcase_add_test(limits, test_methods_stale_on_failed_refresh);
	tcase_add_test(limits, test_methods_failure_without_copy);
	suite_add_tcase(s, limits);

	tcase_add_test(errors, test_upstream_status);
	tcase_add_test(errors, test_create_prepare_refuses_client_callback);
	tcase_add_test(errors, test_track_parse_errors);
	suite_add_tcase(s, errors);
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
