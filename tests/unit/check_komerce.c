/* Check suite for src/komerce.c: reply envelope classification, the tolerant payment reader,
 * create-request validation (each rule names its field), error names, and the real libcurl
 * client against a small libmicrohttpd server on 127.0.0.1 (headers, percent-encoding,
 * Retry-After, timeouts, refused connections, connection reuse, reply size cap).
 */
#include "komerce.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define T_2026_08_12_101530Z 1786529730LL

/* ---- komerce_parse_reply ---------------------------------------------------------------- */

static int parse(long status, const char *body, struct komerce_result *r)
{
	return komerce_parse_reply(status, body, body ? strlen(body) : 0, r);
}

START_TEST(test_reply_success)
{
	struct komerce_result r;
	const char *body = "{\"meta\":{\"message\":\"success get payment methods\",\"code\":200,"
			   "\"status\":\"success\"},\"data\":[{\"payment_type\":\"va\","
			   "\"bank_code\":\"BCA\"}]}";

	ck_assert_int_eq(parse(200, body, &r), 0);
	ck_assert_int_eq(r.err, KOMERCE_OK);
	ck_assert_int_eq(r.http_status, 200);
	ck_assert_int_eq(r.retry_after_s, -1);
	ck_assert_str_eq(r.message, "success get payment methods");
	ck_assert_ptr_nonnull(r.root);
	ck_assert(cJSON_IsArray(r.data));
	ck_assert_int_eq(cJSON_GetArraySize(r.data), 1);
	komerce_result_clear(&r);
	ck_assert_ptr_null(r.root);
	ck_assert_ptr_null(r.data);
	komerce_result_clear(NULL);
}
END_TEST

START_TEST(test_reply_success_null_data)
{
	struct komerce_result r;

	ck_assert_int_eq(
		parse(200, "{\"meta\":{\"code\":200,\"status\":\"success\"},\"data\":null}", &r),
		0);
	ck_assert_int_eq(r.err, KOMERCE_OK);
	ck_assert_str_eq(r.message, "");
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_400_meta_message)
{
	struct komerce_result r;
	const char *body = "{\"meta\":{\"message\":\"amount must be at least 10000\",\"code\":400,"
			   "\"status\":\"error\"},\"data\":null}";

	ck_assert_int_eq(parse(400, body, &r), -EINVAL);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_REQUEST);
	ck_assert_str_eq(r.message, "amount must be at least 10000");
	ck_assert_ptr_nonnull(r.root);
	komerce_result_clear(&r);

	ck_assert_int_eq(parse(422, body, &r), -EINVAL);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_REQUEST);
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_401_403)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(401,
			       "{\"meta\":{\"message\":\"Unauthorized\",\"code\":401,"
			       "\"status\":\"error\"},\"data\":null}",
			       &r),
			 -EACCES);
	ck_assert_int_eq(r.err, KOMERCE_E_UNAUTHORIZED);
	ck_assert_str_eq(r.message, "Unauthorized");
	komerce_result_clear(&r);

	/* the docs' 401 is text/plain with an empty body */
	ck_assert_int_eq(parse(403, "", &r), -EACCES);
	ck_assert_int_eq(r.err, KOMERCE_E_UNAUTHORIZED);
	ck_assert_str_eq(r.message, "HTTP 403 from Komerce");
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_404)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(404,
			       "{\"meta\":{\"message\":\"payment not found\",\"code\":404,"
			       "\"status\":\"error\"},\"data\":null}",
			       &r),
			 -ENOENT);
	ck_assert_int_eq(r.err, KOMERCE_E_NOT_FOUND);
	ck_assert_str_eq(r.message, "payment not found");
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_429)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(429,
			       "{\"meta\":{\"message\":\"Too Many Requests\",\"code\":429,"
			       "\"status\":\"error\"},\"data\":null}",
			       &r),
			 -EAGAIN);
	ck_assert_int_eq(r.err, KOMERCE_E_RATE_LIMITED);
	ck_assert_str_eq(r.message, "Too Many Requests");
	/* the header is the client's business; a bare parse knows of no Retry-After */
	ck_assert_int_eq(r.retry_after_s, -1);
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_5xx)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(500,
			       "{\"meta\":{\"message\":\"internal error\",\"code\":500,"
			       "\"status\":\"error\"},\"data\":null}",
			       &r),
			 -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_SERVER);
	ck_assert_str_eq(r.message, "internal error");
	komerce_result_clear(&r);

	/* a proxy's HTML error page is still a server error, not a bad response */
	ck_assert_int_eq(parse(502, "<html><body>Bad Gateway</body></html>", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_SERVER);
	ck_assert_str_eq(r.message, "HTTP 502 from Komerce");
	ck_assert_ptr_null(r.root);
	komerce_result_clear(&r);

	ck_assert_int_eq(parse(503, NULL, &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_SERVER);
	ck_assert_str_eq(r.message, "HTTP 503 from Komerce");
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_other_status)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(302, "", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_HTTP);
	ck_assert_str_eq(r.message, "HTTP 302 from Komerce");
	komerce_result_clear(&r);
	ck_assert_int_eq(parse(418, "{}", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_HTTP);
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_not_json)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(200, "<html>ok</html>", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	ck_assert_ptr_null(r.root);
	ck_assert_ptr_null(r.data);
	ck_assert_ptr_nonnull(strstr(r.message, "not JSON"));
	komerce_result_clear(&r);

	ck_assert_int_eq(parse(200, "{\"meta\":", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_no_meta)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(200, "{\"data\":{\"payment_id\":\"X\"}}", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	ck_assert_ptr_nonnull(strstr(r.message, "no meta"));
	komerce_result_clear(&r);

	ck_assert_int_eq(parse(200, "{\"meta\":\"ok\",\"data\":{}}", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	komerce_result_clear(&r);

	ck_assert_int_eq(parse(200, "[1,2,3]", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_empty_body)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(200, "", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	ck_assert_ptr_nonnull(strstr(r.message, "empty"));
	komerce_result_clear(&r);
	ck_assert_int_eq(komerce_parse_reply(204, NULL, 0, &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_error_inside_200)
{
	struct komerce_result r;

	ck_assert_int_eq(parse(200,
			       "{\"meta\":{\"message\":\"channel_code invalid\",\"code\":400,"
			       "\"status\":\"error\"},\"data\":null}",
			       &r),
			 -EINVAL);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_REQUEST);
	ck_assert_int_eq(r.http_status, 200);
	ck_assert_str_eq(r.message, "channel_code invalid");
	komerce_result_clear(&r);
}
END_TEST

START_TEST(test_reply_message_sanitised)
{
	struct komerce_result r;
	char body[1024];
	char longmsg[600];

	ck_assert_int_eq(parse(400, "{\"meta\":{\"message\":\"bad\\r\\nX-Injected: 1\"}}", &r),
			 -EINVAL);
	ck_assert_str_eq(r.message, "bad??X-Injected: 1");
	komerce_result_clear(&r);

	memset(longmsg, 'a', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	snprintf(body, sizeof(body), "{\"meta\":{\"message\":\"%s\"}}", longmsg);
	ck_assert_int_eq(parse(400, body, &r), -EINVAL);
	ck_assert_uint_eq(strlen(r.message), sizeof(r.message) - 1);
	komerce_result_clear(&r);
}
END_TEST

/* ---- komerce_payment_from_json ---------------------------------------------------------- */

static int payment_from(const char *json, struct komerce_payment *p)
{
	cJSON *j = cJSON_Parse(json);
	int r;

	ck_assert_ptr_nonnull(j);
	r = komerce_payment_from_json(j, p);
	cJSON_Delete(j);
	return r;
}

START_TEST(test_payment_full)
{
	struct komerce_payment p;

	ck_assert_int_eq(
		payment_from("{\"payment_id\":\"KOMPAY-1699012345-A1B2C3\","
			     "\"order_id\":\"KOM12345\",\"status\":\"PAID\","
			     "\"payment_type\":\"bank_transfer\",\"channel_code\":\"BCA\","
			     "\"amount\":100000,\"expired_at\":\"2026-08-12T10:15:30.000Z\","
			     "\"paid_at\":1786529730,\"va_number\":\"3935812345678901\"}",
			     &p),
		0);
	ck_assert_str_eq(p.payment_id, "KOMPAY-1699012345-A1B2C3");
	ck_assert_str_eq(p.order_id, "KOM12345");
	ck_assert_str_eq(p.status, "PAID");
	ck_assert_str_eq(p.payment_type, "bank_transfer");
	ck_assert_str_eq(p.channel_code, "BCA");
	ck_assert_int_eq(p.amount, 100000);
	ck_assert_int_eq(p.expires_at, T_2026_08_12_101530Z);
	ck_assert_int_eq(p.paid_at, T_2026_08_12_101530Z);
}
END_TEST

START_TEST(test_payment_status_spellings)
{
	static const struct {
		const char *json;
		const char *want;
	} cases[] = {
		{"{\"payment_id\":\"P\",\"status\":\"PENDING\"}", "PENDING"},
		{"{\"payment_id\":\"P\",\"status\":\"pending\"}", "PENDING"},
		{"{\"payment_id\":\"P\",\"status\":\"paid\"}", "PAID"},
		{"{\"payment_id\":\"P\",\"status\":\"Expired\"}", "EXPIRED"},
		{"{\"payment_id\":\"P\",\"status\":\"CANCELED\"}", "CANCELED"},
		{"{\"payment_id\":\"P\",\"status\":\"CANCELLED\"}", "CANCELED"},
		{"{\"payment_id\":\"P\",\"status\":\"cancelled\"}", "CANCELED"},
		{"{\"payment_id\":\"P\",\"payment_status\":\"PAID\"}", "PAID"},
		{"{\"payment_id\":\"P\",\"transaction_status\":\"expired\"}", "EXPIRED"},
		{"{\"payment_id\":\"P\",\"status\":null,\"payment_status\":\"PAID\"}", "PAID"},
		{"{\"payment_id\":\"P\"}", ""},
	};
	struct komerce_payment p;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(payment_from(cases[i].json, &p) == 0, "case %zu", i);
		ck_assert_str_eq(p.status, cases[i].want);
	}
}
END_TEST

START_TEST(test_payment_bad_status)
{
	struct komerce_payment p;

	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"status\":\"SETTLED\"}", &p),
			 -EINVAL);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"status\":7}", &p), -EINVAL);
	ck_assert_int_eq(
		payment_from("{\"payment_id\":\"P\",\"status\":\"PAIDPAIDPAIDPAIDPAIDPAID\"}", &p),
		-EINVAL);
}
END_TEST

START_TEST(test_payment_amount_forms)
{
	struct komerce_payment p;

	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":\"150000\"}", &p), 0);
	ck_assert_int_eq(p.amount, 150000);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":\"150000.00\"}", &p), 0);
	ck_assert_int_eq(p.amount, 150000);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":150000}", &p), 0);
	ck_assert_int_eq(p.amount, 150000);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\"}", &p), 0);
	ck_assert_int_eq(p.amount, -1);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":\"\"}", &p), 0);
	ck_assert_int_eq(p.amount, -1);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":\"12a\"}", &p), -EINVAL);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":\"150000.50\"}", &p),
			 -EINVAL);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":-5}", &p), -EINVAL);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":10.5}", &p), -EINVAL);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"amount\":true}", &p), -EINVAL);
}
END_TEST

START_TEST(test_payment_missing_fields)
{
	struct komerce_payment p;

	memset(&p, 0x55, sizeof(p));
	ck_assert_int_eq(payment_from("{\"payment_id\":\"KPAY-5292/KM/2026\"}", &p), 0);
	ck_assert_str_eq(p.payment_id, "KPAY-5292/KM/2026");
	ck_assert_str_eq(p.order_id, "");
	ck_assert_str_eq(p.status, "");
	ck_assert_str_eq(p.payment_type, "");
	ck_assert_str_eq(p.channel_code, "");
	ck_assert_int_eq(p.amount, -1);
	ck_assert_int_eq(p.expires_at, 0);
	ck_assert_int_eq(p.paid_at, 0);

	ck_assert_int_eq(payment_from("{\"status\":\"PAID\"}", &p), -EINVAL);
	ck_assert_int_eq(payment_from("{\"payment_id\":\"\"}", &p), -EINVAL);
	ck_assert_int_eq(payment_from("[]", &p), -EINVAL);
	ck_assert_int_eq(komerce_payment_from_json(NULL, &p), -EINVAL);
}
END_TEST

START_TEST(test_payment_bank_code_and_numeric_ids)
{
	struct komerce_payment p;

	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"bank_code\":\"BNI\","
				      "\"order_id\":12345}",
				      &p),
			 0);
	ck_assert_str_eq(p.channel_code, "BNI");
	ck_assert_str_eq(p.order_id, "12345");
}
END_TEST

START_TEST(test_payment_id_too_long)
{
	struct komerce_payment p;
	char json[400];
	char id[200];

	memset(id, 'X', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	snprintf(json, sizeof(json), "{\"payment_id\":\"%s\"}", id);
	ck_assert_int_eq(payment_from(json, &p), -EINVAL);
}
END_TEST

START_TEST(test_payment_times)
{
	static const struct {
		const char *json;
		long long want;
	} cases[] = {
		{"{\"payment_id\":\"P\",\"expired_at\":\"2026-08-12T10:15:30.000Z\"}",
		 T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expired_at\":\"2026-08-12T10:15:30Z\"}",
		 T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expires_at\":\"2026-08-12T17:15:30+07:00\"}",
		 T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expires_at\":\"2026-08-12T17:15:30.123456+0700\"}",
		 T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expired\":\"2026-08-12T05:15:30-05:00\"}",
		 T_2026_08_12_101530Z},
		/* zone-less local time: Komerce is in WIB (UTC+7) */
		{"{\"payment_id\":\"P\",\"expiry_time\":\"2026-08-12 17:15:30\"}",
		 T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expired_at\":1786529730}", T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expired_at\":\"1786529730\"}", T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expired_at\":1786529730000}", T_2026_08_12_101530Z},
		{"{\"payment_id\":\"P\",\"expired_at\":\"2024-02-29T00:00:00Z\"}", 1709164800LL},
		{"{\"payment_id\":\"P\",\"expired_at\":null}", 0},
		{"{\"payment_id\":\"P\",\"expired_at\":\"\"}", 0},
	};
	struct komerce_payment p;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(payment_from(cases[i].json, &p) == 0, "case %zu", i);
		ck_assert_msg(p.expires_at == cases[i].want, "case %zu: %lld", i, p.expires_at);
	}
	ck_assert_int_eq(payment_from("{\"payment_id\":\"P\",\"paid_at\":"
				      "\"2026-08-12T10:15:30.000Z\"}",
				      &p),
			 0);
	ck_assert_int_eq(p.paid_at, T_2026_08_12_101530Z);
}
END_TEST

START_TEST(test_payment_bad_times)
{
	static const char *const bad[] = {
		"{\"payment_id\":\"P\",\"expired_at\":\"tomorrow\"}",
		"{\"payment_id\":\"P\",\"expired_at\":\"2026-13-01T00:00:00Z\"}",
		"{\"payment_id\":\"P\",\"expired_at\":\"2025-02-29T00:00:00Z\"}",
		"{\"payment_id\":\"P\",\"expired_at\":\"2026-08-12T25:00:00Z\"}",
		"{\"payment_id\":\"P\",\"expired_at\":\"2026-08-12T10:15:30Zjunk\"}",
		"{\"payment_id\":\"P\",\"expired_at\":-1}",
		"{\"payment_id\":\"P\",\"paid_at\":true}",
	};
	struct komerce_payment p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(payment_from(bad[i], &p) == -EINVAL, "case %zu", i);
}
END_TEST

/* ---- komerce_validate_create ------------------------------------------------------------ */

static const char *const methods_json =
	"[{\"payment_type\":\"va\",\"display_name\":\"Bank Central Asia\",\"bank_code\":\"BCA\","
	"\"min_amount\":10000,\"max_amount\":999999999999,\"currency\":\"IDR\"},"
	"{\"payment_type\":\"va\",\"display_name\":\"Bank Negara Indonesia\",\"bank_code\":\"BNI\","
	"\"min_amount\":10000,\"max_amount\":999999999999,\"currency\":\"IDR\"},"
	"{\"payment_type\":\"qris\",\"display_name\":\"QRIS\",\"bank_code\":\"\","
	"\"min_amount\":10000,\"max_amount\":10000000,\"currency\":\"IDR\"}]";

static cJSON *va_request(void)
{
	cJSON *r =
		cJSON_Parse("{\"order_id\":\"KOM12345\",\"payment_type\":\"bank_transfer\","
			    "\"channel_code\":\"BCA\",\"amount\":100000,"
			    "\"customer\":{\"name\":\"John Doe\",\"email\":\"john@example.com\","
			    "\"phone\":\"081234567890\"},"
			    "\"items\":[{\"name\":\"Product A\",\"quantity\":2,\"price\":50000}],"
			    "\"expiry_duration\":86400,"
			    "\"callback_url\":\"https://shop.example/v1/komerce/callback\","
			    "\"callback_api_key\":\"cb-secret\"}");

	ck_assert_ptr_nonnull(r);
	return r;
}

static cJSON *qris_request(void)
{
	cJSON *r = cJSON_Parse("{\"order_id\":\"KOM12346\",\"payment_type\":\"qris\","
			       "\"amount\":25000,\"customer\":{\"name\":\"Jane\","
			       "\"email\":\"jane@example.co.id\",\"phone\":\"+62811\"}}");

	ck_assert_ptr_nonnull(r);
	return r;
}

static void set(cJSON *obj, const char *name, cJSON *value)
{
	ck_assert_ptr_nonnull(value);
	if (cJSON_GetObjectItemCaseSensitive(obj, name))
		cJSON_ReplaceItemInObjectCaseSensitive(obj, name, value);
	else
		cJSON_AddItemToObject(obj, name, value);
}

static void expect_ok(cJSON *req, bool with_methods)
{
	cJSON *methods = with_methods ? cJSON_Parse(methods_json) : NULL;
	char field[64], rule[160];
	int r = komerce_validate_create(req, methods, field, sizeof(field), rule, sizeof(rule));

	ck_assert_msg(r == 0, "unexpected failure: %s %s", field, rule);
	cJSON_Delete(methods);
	cJSON_Delete(req);
}

/* Consumes req; asserts -EINVAL naming want_field, and that the rule mentions rule_part. */
static void expect_invalid(cJSON *req, bool with_methods, const char *want_field,
			   const char *rule_part)
{
	cJSON *methods = with_methods ? cJSON_Parse(methods_json) : NULL;
	char field[64] = "?", rule[160] = "?";
	int r = komerce_validate_create(req, methods, field, sizeof(field), rule, sizeof(rule));

	ck_assert_int_eq(r, -EINVAL);
	ck_assert_str_eq(field, want_field);
	ck_assert_msg(strstr(rule, rule_part) != NULL, "rule '%s' lacks '%s'", rule, rule_part);
	cJSON_Delete(methods);
	cJSON_Delete(req);
}

START_TEST(test_validate_valid)
{
	cJSON *r;

	expect_ok(va_request(), false);
	expect_ok(va_request(), true);
	expect_ok(qris_request(), false);
	expect_ok(qris_request(), true);

	r = qris_request();
	set(r, "expiry_duration", cJSON_CreateNumber(300));
	expect_ok(r, true);

	r = va_request();
	cJSON_DeleteItemFromObject(r, "items");
	cJSON_DeleteItemFromObject(r, "expiry_duration");
	cJSON_DeleteItemFromObject(r, "callback_url");
	cJSON_DeleteItemFromObject(r, "callback_api_key");
	expect_ok(r, true);

	/* the spelling of the brief and DESIGN.md is accepted as well as the docs' one */
	r = va_request();
	cJSON_DeleteItemFromObject(r, "callback_api_key");
	cJSON_AddStringToObject(r, "callback_API_KEY", "cb-secret");
	expect_ok(r, false);

	r = va_request();
	set(r, "expiry_duration", cJSON_CreateNumber(3600));
	expect_ok(r, false);
	r = va_request();
	set(r, "expiry_duration", cJSON_CreateNumber(2592000));
	expect_ok(r, false);

	/* methods entries that use channel_code instead of bank_code */
	r = va_request();
	{
		cJSON *m = cJSON_Parse("[{\"payment_type\":\"bank_transfer\","
				       "\"channel_code\":\"BCA\"}]");
		char field[64], rule[160];

		ck_assert_int_eq(
			komerce_validate_create(r, m, field, sizeof(field), rule, sizeof(rule)), 0);
		cJSON_Delete(m);
	}
	cJSON_Delete(r);
}
END_TEST

START_TEST(test_validate_body)
{
	expect_invalid(cJSON_CreateArray(), false, "body", "object");
	ck_assert_int_eq(komerce_validate_create(NULL, NULL, NULL, 0, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_validate_order_id)
{
	cJSON *r;
	char id[102];

	r = va_request();
	cJSON_DeleteItemFromObject(r, "order_id");
	expect_invalid(r, false, "order_id", "required");
	r = va_request();
	set(r, "order_id", cJSON_CreateString(""));
	expect_invalid(r, false, "order_id", "empty");
	r = va_request();
	set(r, "order_id", cJSON_CreateNumber(12345));
	expect_invalid(r, false, "order_id", "string");

	memset(id, 'o', 101);
	id[101] = '\0';
	r = va_request();
	set(r, "order_id", cJSON_CreateString(id));
	expect_invalid(r, false, "order_id", "100");
	id[100] = '\0';
	r = va_request();
	set(r, "order_id", cJSON_CreateString(id));
	expect_ok(r, false);
}
END_TEST

START_TEST(test_validate_payment_type)
{
	cJSON *r;

	r = va_request();
	cJSON_DeleteItemFromObject(r, "payment_type");
	expect_invalid(r, false, "payment_type", "required");
	r = va_request();
	set(r, "payment_type", cJSON_CreateString("credit_card"));
	expect_invalid(r, false, "payment_type", "bank_transfer or qris");
	r = va_request();
	set(r, "payment_type", cJSON_CreateString("va"));
	expect_invalid(r, false, "payment_type", "bank_transfer or qris");
}
END_TEST

START_TEST(test_validate_channel_code)
{
	cJSON *r;

	r = va_request();
	cJSON_DeleteItemFromObject(r, "channel_code");
	expect_invalid(r, false, "channel_code", "required for bank_transfer");
	r = va_request();
	set(r, "channel_code", cJSON_CreateString(""));
	expect_invalid(r, false, "channel_code", "empty");
	r = va_request();
	set(r, "channel_code", cJSON_CreateString("XYZ"));
	expect_invalid(r, true, "channel_code", "methods");
	/* without a methods list only presence is checked */
	r = va_request();
	set(r, "channel_code", cJSON_CreateString("XYZ"));
	expect_ok(r, false);
	/* case matters: the API lists upper-case bank codes */
	r = va_request();
	set(r, "channel_code", cJSON_CreateString("bca"));
	expect_invalid(r, true, "channel_code", "methods");
}
END_TEST

START_TEST(test_validate_amount)
{
	cJSON *r;

	r = va_request();
	cJSON_DeleteItemFromObject(r, "amount");
	cJSON_DeleteItemFromObject(r, "items");
	expect_invalid(r, false, "amount", "required");
	r = va_request();
	set(r, "amount", cJSON_CreateString("100000"));
	expect_invalid(r, false, "amount", "integer");
	r = va_request();
	set(r, "amount", cJSON_CreateNumber(100000.5));
	expect_invalid(r, false, "amount", "integer");
	r = va_request();
	set(r, "amount", cJSON_CreateNumber(9999));
	expect_invalid(r, false, "amount", "at least 10000");
	r = va_request();
	set(r, "amount", cJSON_CreateNumber(-100000));
	expect_invalid(r, false, "amount", "at least 10000");
	r = va_request();
	set(r, "amount", cJSON_CreateNumber(1e12 + 1));
	expect_invalid(r, false, "amount", "at most");
	/* the methods list caps QRIS at 10 000 000 */
	r = qris_request();
	set(r, "amount", cJSON_CreateNumber(10000001));
	expect_invalid(r, true, "amount", "at most 10000000");
	r = qris_request();
	set(r, "amount", cJSON_CreateNumber(10000000));
	expect_ok(r, true);
	r = va_request();
	cJSON_DeleteItemFromObject(r, "items");
	set(r, "amount", cJSON_CreateNumber(10000));
	expect_ok(r, true);
}
END_TEST

START_TEST(test_validate_customer)
{
	cJSON *r;

	r = va_request();
	cJSON_DeleteItemFromObject(r, "customer");
	expect_invalid(r, false, "customer", "required");
	r = va_request();
	set(r, "customer", cJSON_CreateString("John"));
	expect_invalid(r, false, "customer", "object");
	r = va_request();
	cJSON_DeleteItemFromObject(cJSON_GetObjectItem(r, "customer"), "name");
	expect_invalid(r, false, "customer.name", "required");
	r = va_request();
	cJSON_DeleteItemFromObject(cJSON_GetObjectItem(r, "customer"), "email");
	expect_invalid(r, false, "customer.email", "required");
	r = va_request();
	cJSON_DeleteItemFromObject(cJSON_GetObjectItem(r, "customer"), "phone");
	expect_invalid(r, false, "customer.phone", "required");

	static const char *const bad_emails[] = {"john",
						 "john@",
						 "@example.com",
						 "john@example",
						 "john@@example.com",
						 "john doe@example.com",
						 "john@.com",
						 "john@example..com",
						 "john@example.com."};
	for (size_t i = 0; i < sizeof(bad_emails) / sizeof(bad_emails[0]); i++) {
		r = va_request();
		set(cJSON_GetObjectItem(r, "customer"), "email", cJSON_CreateString(bad_emails[i]));
		expect_invalid(r, false, "customer.email", "email");
	}
	r = va_request();
	set(cJSON_GetObjectItem(r, "customer"), "email",
	    cJSON_CreateString("john.doe+shop@mail.example.co.id"));
	expect_ok(r, false);
}
END_TEST

START_TEST(test_validate_items)
{
	cJSON *r, *items;

	r = va_request();
	set(r, "items", cJSON_CreateObject());
	expect_invalid(r, false, "items", "array");
	r = va_request();
	set(r, "items", cJSON_CreateArray());
	expect_invalid(r, false, "items", "empty");

	r = va_request();
	items = cJSON_Parse("[{\"name\":\"A\",\"quantity\":1,\"price\":50000},"
			    "{\"quantity\":1,\"price\":50000}]");
	set(r, "items", items);
	expect_invalid(r, false, "items[1].name", "required");

	r = va_request();
	set(r, "items", cJSON_Parse("[{\"name\":\"A\",\"quantity\":0,\"price\":100000}]"));
	expect_invalid(r, false, "items[0].quantity", "at least 1");
	r = va_request();
	set(r, "items", cJSON_Parse("[{\"name\":\"A\",\"quantity\":1.5,\"price\":100000}]"));
	expect_invalid(r, false, "items[0].quantity", "integer");
	r = va_request();
	set(r, "items", cJSON_Parse("[{\"name\":\"A\",\"price\":100000}]"));
	expect_invalid(r, false, "items[0].quantity", "required");
	r = va_request();
	set(r, "items", cJSON_Parse("[{\"name\":\"A\",\"quantity\":1,\"price\":-1}]"));
	expect_invalid(r, false, "items[0].price", "negative");
	r = va_request();
	set(r, "items", cJSON_Parse("[{\"name\":\"A\",\"quantity\":1}]"));
	expect_invalid(r, false, "items[0].price", "required");
	r = va_request();
	set(r, "items", cJSON_Parse("[\"A\"]"));
	expect_invalid(r, false, "items[0]", "object");

	r = va_request();
	set(r, "items", cJSON_Parse("[{\"name\":\"A\",\"quantity\":2,\"price\":40000}]"));
	expect_invalid(r, false, "items", "sum");

	/* a free item (price 0) is allowed */
	r = va_request();
	set(r, "items",
	    cJSON_Parse("[{\"name\":\"A\",\"quantity\":2,\"price\":50000},"
			"{\"name\":\"Gift\",\"quantity\":1,\"price\":0}]"));
	expect_ok(r, false);
}
END_TEST

START_TEST(test_validate_expiry)
{
	cJSON *r;

	r = va_request();
	set(r, "expiry_duration", cJSON_CreateNumber(3599));
	expect_invalid(r, false, "expiry_duration", "at least 3600");
	r = va_request();
	set(r, "expiry_duration", cJSON_CreateNumber(2592001));
	expect_invalid(r, false, "expiry_duration", "at most");
	r = va_request();
	set(r, "expiry_duration", cJSON_CreateString("3600"));
	expect_invalid(r, false, "expiry_duration", "integer");
	r = qris_request();
	set(r, "expiry_duration", cJSON_CreateNumber(600));
	expect_invalid(r, false, "expiry_duration", "300");
	r = qris_request();
	set(r, "expiry_duration", cJSON_CreateNumber(3600));
	expect_invalid(r, false, "expiry_duration", "300");
}
END_TEST

START_TEST(test_validate_callback)
{
	cJSON *r;

	r = va_request();
	set(r, "callback_url", cJSON_CreateString("ftp://shop.example/cb"));
	expect_invalid(r, false, "callback_url", "http");
	r = va_request();
	set(r, "callback_url", cJSON_CreateString("https://"));
	expect_invalid(r, false, "callback_url", "http");
	r = va_request();
	set(r, "callback_url", cJSON_CreateString("shop.example/cb"));
	expect_invalid(r, false, "callback_url", "http");
	r = va_request();
	set(r, "callback_url", cJSON_CreateNumber(1));
	expect_invalid(r, false, "callback_url", "http");
	r = va_request();
	set(r, "callback_url", cJSON_CreateString("http://127.0.0.1:8080/cb"));
	expect_ok(r, false);

	r = va_request();
	cJSON_DeleteItemFromObject(r, "callback_api_key");
	expect_invalid(r, false, "callback_api_key", "required when callback_url");
	r = va_request();
	set(r, "callback_api_key", cJSON_CreateString(""));
	expect_invalid(r, false, "callback_api_key", "empty");

	/* a key without a URL is harmless */
	r = va_request();
	cJSON_DeleteItemFromObject(r, "callback_url");
	expect_ok(r, false);
}
END_TEST

/* ---- komerce_err_name ------------------------------------------------------------------- */

START_TEST(test_err_names)
{
	const char *names[KOMERCE_E_INTERNAL + 1];

	ck_assert_str_eq(komerce_err_name(KOMERCE_OK), "ok");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_BAD_REQUEST), "bad_request");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_UNAUTHORIZED), "unauthorized");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_NOT_FOUND), "not_found");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_RATE_LIMITED), "rate_limited");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_SERVER), "server_error");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_HTTP), "http_error");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_TIMEOUT), "timeout");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_DNS), "dns");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_CONNECT), "connect");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_TLS), "tls");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_BAD_RESPONSE), "bad_response");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_NOMEM), "nomem");
	ck_assert_str_eq(komerce_err_name(KOMERCE_E_INTERNAL), "internal");
	ck_assert_str_eq(komerce_err_name((enum komerce_err)999), "unknown");
	for (int i = 0; i <= KOMERCE_E_INTERNAL; i++) {
		names[i] = komerce_err_name((enum komerce_err)i);
		for (int j = 0; j < i; j++)
			ck_assert_str_ne(names[i], names[j]);
	}
}
END_TEST

/* ---- the client against a local libmicrohttpd server ------------------------------------ */

#define API_KEY "test-key-0123456789"

static struct {
	pthread_mutex_t lock;
	struct MHD_Daemon *daemon;
	unsigned port;
	int connections;
	int requests;
	char url[512];
	char method[16];
	char api_key[128];
	char content_type[128];
	char body[1024];
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct req_ctx {
	char body[1024];
	size_t len;
};

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s); /* keep %2F visible to the test */
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	(void)cls;
	(void)c;
	(void)socket_context;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		pthread_mutex_lock(&srv.lock);
		srv.connections++;
		pthread_mutex_unlock(&srv.lock);
	}
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
			     const char *retry_after)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (retry_after)
		MHD_add_response_header(r, "Retry-After", retry_after);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
			       const char *method, const char *version, const char *upload,
			       size_t *upload_size, void **con_cls)
{
	struct req_ctx *ctx = *con_cls;
	const char *key, *ctype;
	enum MHD_Result ret;

	(void)cls;
	(void)version;
	if (!ctx) {
		ctx = calloc(1, sizeof(*ctx));
		if (!ctx)
			return MHD_NO;
		*con_cls = ctx;
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;

		if (n > sizeof(ctx->body) - 1 - ctx->len)
			n = sizeof(ctx->body) - 1 - ctx->len;
		memcpy(ctx->body + ctx->len, upload, n);
		ctx->len += n;
		*upload_size = 0;
		return MHD_YES;
	}

	key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
	ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
	pthread_mutex_lock(&srv.lock);
	srv.requests++;
	snprintf(srv.url, sizeof(srv.url), "%s", url);
	snprintf(srv.method, sizeof(srv.method), "%s", method);
	snprintf(srv.api_key, sizeof(srv.api_key), "%s", key ? key : "");
	snprintf(srv.content_type, sizeof(srv.content_type), "%s", ctype ? ctype : "");
	snprintf(srv.body, sizeof(srv.body), "%s", ctx->body);
	pthread_mutex_unlock(&srv.lock);

	if (!key || strcmp(key, API_KEY) != 0) {
		ret = reply(c, 401,
			    "{\"meta\":{\"message\":\"Unauthorized\",\"code\":401,"
			    "\"status\":\"error\"},\"data\":null}",
			    NULL);
	} else if (ends_with(url, "/api/v1/user/methods")) {
		ret = reply(c, 200,
			    "{\"meta\":{\"message\":\"success get payment methods\",\"code\":200,"
			    "\"status\":\"success\"},\"data\":[{\"payment_type\":\"va\","
			    "\"bank_code\":\"BCA\"}]}",
			    NULL);
	} else if (ends_with(url, "/payment/status/KPAY-5292%2FKM%2F2026")) {
		ret = reply(
			c, 200,
			"{\"meta\":{\"message\":\"success\",\"code\":200,\"status\":\"success\"},"
			"\"data\":{\"payment_id\":\"KPAY-5292/KM/2026\",\"status\":\"PAID\","
			"\"amount\":\"100000\",\"paid_at\":\"2026-08-12T10:15:30.000Z\"}}",
			NULL);
	} else if (ends_with(url, "/payment/status/RL")) {
		ret = reply(c, 429,
			    "{\"meta\":{\"message\":\"Too Many Requests\",\"code\":429,"
			    "\"status\":\"error\"},\"data\":null}",
			    "7");
	} else if (ends_with(url, "/payment/status/SLOW")) {
		usleep(900 * 1000);
		ret = reply(c, 200, "{\"meta\":{\"code\":200},\"data\":null}", NULL);
	} else if (ends_with(url, "/payment/status/BIG")) {
		size_t n = 2 * 1024 * 1024;
		char *big = malloc(n + 1);
		struct MHD_Response *r;

		if (!big)
			return MHD_NO;
		memset(big, ' ', n);
		big[0] = '{';
		big[n - 1] = '}';
		big[n] = '\0';
		r = MHD_create_response_from_buffer(n, big, MHD_RESPMEM_MUST_FREE);
		ret = MHD_queue_response(c, 200, r);
		MHD_destroy_response(r);
	} else if (ends_with(url, "/payment/cancel") && strcmp(method, "POST") == 0) {
		ret = reply(
			c, 200,
			"{\"meta\":{\"message\":\"payment canceled\",\"code\":200,"
			"\"status\":\"success\"},\"data\":{\"payment_id\":\"KPAY-5292/KM/2026\","
			"\"status\":\"CANCELED\"}}",
			NULL);
	} else if (ends_with(url, "/payment/create") && strcmp(method, "POST") == 0) {
		ret = reply(
			c, 400,
			"{\"meta\":{\"message\":\"amount: must be at least 10000\",\"code\":400,"
			"\"status\":\"error\"},\"data\":null}",
			NULL);
	} else {
		ret = reply(c, 404, "{\"meta\":{\"message\":\"not found\",\"code\":404}}", NULL);
	}
	return ret;
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	free(*con_cls);
	*con_cls = NULL;
}

static void server_start(void)
{
	struct sockaddr_in sa;
	const union MHD_DaemonInfo *info;

	pthread_mutex_lock(&srv.lock);
	srv.connections = 0;
	srv.requests = 0;
	srv.url[0] = srv.method[0] = srv.api_key[0] = srv.content_type[0] = srv.body[0] = '\0';
	pthread_mutex_unlock(&srv.lock);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv.daemon =
		MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
				 NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR,
				 (struct sockaddr *)&sa, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape,
				 NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
				 MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL, MHD_OPTION_END);
	ck_assert_ptr_nonnull(srv.daemon);
	info = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT);
	ck_assert_ptr_nonnull(info);
	srv.port = info->port;
	ck_assert_uint_ne(srv.port, 0);
}

static void server_stop(void)
{
	if (srv.daemon)
		MHD_stop_daemon(srv.daemon);
	srv.daemon = NULL;
}

static struct komerce *client(long timeout_ms, const char *key)
{
	char base[128];
	struct komerce_opts o = {0};
	struct komerce *k;

	/* trailing slash: the client must not produce "//api" */
	snprintf(base, sizeof(base), "http://127.0.0.1:%u/user/", srv.port);
	o.base_url = base;
	o.api_key = key;
	o.connect_timeout_ms = 2000;
	o.timeout_ms = timeout_ms;
	k = komerce_new(&o);
	ck_assert_ptr_nonnull(k);
	return k;
}

START_TEST(test_client_methods_headers_and_reuse)
{
	struct komerce *k = client(5000, API_KEY);
	struct komerce_result r;

	ck_assert_int_eq(komerce_methods_get(k, &r), 0);
	ck_assert_int_eq(r.err, KOMERCE_OK);
	ck_assert_int_eq(r.http_status, 200);
	ck_assert(cJSON_IsArray(r.data));
	komerce_result_clear(&r);
	pthread_mutex_lock(&srv.lock);
	ck_assert_str_eq(srv.url, "/user/api/v1/user/methods");
	ck_assert_str_eq(srv.method, "GET");
	ck_assert_str_eq(srv.api_key, API_KEY);
	ck_assert_str_eq(srv.content_type, "application/json");
	pthread_mutex_unlock(&srv.lock);

	ck_assert_int_eq(komerce_methods_get(k, &r), 0);
	komerce_result_clear(&r);
	pthread_mutex_lock(&srv.lock);
	ck_assert_int_eq(srv.requests, 2);
	ck_assert_int_eq(srv.connections, 1); /* the second request reused the connection */
	pthread_mutex_unlock(&srv.lock);

	/* A status poll never rides a kept-alive connection: libcurl would silently send it
	 * again if that connection turned out dead (two polls within 3 s). */
	komerce_payment_status(k, "KPAY-1", &r);
	komerce_result_clear(&r);
	komerce_payment_status(k, "KPAY-1", &r);
	komerce_result_clear(&r);
	pthread_mutex_lock(&srv.lock);
	ck_assert_int_eq(srv.requests, 4);
	ck_assert_int_eq(srv.connections, 3);
	pthread_mutex_unlock(&srv.lock);
	komerce_free(k);
	komerce_free(NULL);
}
END_TEST

START_TEST(test_client_unauthorized)
{
	struct komerce *k = client(5000, "wrong-key-secret");
	struct komerce_result r;

	ck_assert_int_eq(komerce_methods_get(k, &r), -EACCES);
	ck_assert_int_eq(r.err, KOMERCE_E_UNAUTHORIZED);
	ck_assert_int_eq(r.http_status, 401);
	ck_assert_str_eq(r.message, "Unauthorized");
	ck_assert_ptr_null(strstr(r.message, "wrong-key-secret"));
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_status_percent_encoded)
{
	struct komerce *k = client(5000, API_KEY);
	struct komerce_result r;
	struct komerce_payment p;

	ck_assert_int_eq(komerce_payment_status(k, "KPAY-5292/KM/2026", &r), 0);
	pthread_mutex_lock(&srv.lock);
	ck_assert_str_eq(srv.url, "/user/api/v1/user/payment/status/KPAY-5292%2FKM%2F2026");
	pthread_mutex_unlock(&srv.lock);
	ck_assert_int_eq(komerce_payment_from_json(r.data, &p), 0);
	ck_assert_str_eq(p.payment_id, "KPAY-5292/KM/2026");
	ck_assert_str_eq(p.status, "PAID");
	ck_assert_int_eq(p.amount, 100000);
	ck_assert_int_eq(p.paid_at, T_2026_08_12_101530Z);
	komerce_result_clear(&r);

	ck_assert_int_eq(komerce_payment_status(k, "", &r), -EINVAL);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_REQUEST);
	ck_assert_int_eq(r.http_status, 0);
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_rate_limited_retry_after)
{
	struct komerce *k = client(5000, API_KEY);
	struct komerce_result r;

	ck_assert_int_eq(komerce_payment_status(k, "RL", &r), -EAGAIN);
	ck_assert_int_eq(r.err, KOMERCE_E_RATE_LIMITED);
	ck_assert_int_eq(r.http_status, 429);
	ck_assert_int_eq(r.retry_after_s, 7);
	ck_assert_str_eq(r.message, "Too Many Requests");
	komerce_result_clear(&r);

	/* the next, unrelated reply does not inherit the previous Retry-After */
	ck_assert_int_eq(komerce_methods_get(k, &r), 0);
	ck_assert_int_eq(r.retry_after_s, -1);
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_timeout)
{
	struct komerce *k = client(300, API_KEY);
	struct komerce_result r;
	struct timespec a, b;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &a);
	ck_assert_int_eq(komerce_payment_status(k, "SLOW", &r), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	ck_assert_int_eq(r.err, KOMERCE_E_TIMEOUT);
	ck_assert_msg(strncmp(r.message, "timeout after 300 ms", 20) == 0, "%s", r.message);
	ck_assert_int_lt(ms, 850);
	komerce_result_clear(&r);

	/* the handle recovers for the next request */
	ck_assert_int_eq(komerce_methods_get(k, &r), 0);
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_connect_refused)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	struct komerce_opts o = {0};
	struct komerce_result r;
	struct komerce *k;
	char base[128];
	int fd;

	/* a port that was free a moment ago and has no listener now */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);

	snprintf(base, sizeof(base), "http://127.0.0.1:%u/user", ntohs(sa.sin_port));
	o.base_url = base;
	o.api_key = API_KEY;
	o.connect_timeout_ms = 2000;
	o.timeout_ms = 2000;
	k = komerce_new(&o);
	ck_assert_ptr_nonnull(k);
	ck_assert_int_eq(komerce_payment_status(k, "KPAY-5292/KM/2026", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_CONNECT);
	ck_assert_int_eq(r.http_status, 0);
	ck_assert_str_ne(r.message, "");
	ck_assert_ptr_null(strstr(r.message, API_KEY));
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_cancel_and_create)
{
	struct komerce *k = client(5000, API_KEY);
	struct komerce_result r;
	cJSON *req;

	ck_assert_int_eq(komerce_payment_cancel(k, "KPAY-5292/KM/2026", &r), 0);
	pthread_mutex_lock(&srv.lock);
	ck_assert_str_eq(srv.method, "POST");
	ck_assert_str_eq(srv.url, "/user/api/v1/user/payment/cancel");
	ck_assert_str_eq(srv.body, "{\"payment_id\":\"KPAY-5292/KM/2026\"}");
	ck_assert_str_eq(srv.content_type, "application/json");
	pthread_mutex_unlock(&srv.lock);
	ck_assert_str_eq(r.message, "payment canceled");
	komerce_result_clear(&r);

	req = cJSON_Parse("{\"order_id\":\"A\",\"amount\":5}");
	ck_assert_int_eq(komerce_payment_create(k, req, &r), -EINVAL);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_REQUEST);
	ck_assert_str_eq(r.message, "amount: must be at least 10000");
	pthread_mutex_lock(&srv.lock);
	ck_assert_str_eq(srv.body, "{\"order_id\":\"A\",\"amount\":5}");
	pthread_mutex_unlock(&srv.lock);
	komerce_result_clear(&r);
	cJSON_Delete(req);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_reply_too_big)
{
	struct komerce *k = client(5000, API_KEY);
	struct komerce_result r;

	ck_assert_int_eq(komerce_payment_status(k, "BIG", &r), -EIO);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_RESPONSE);
	ck_assert_ptr_nonnull(strstr(r.message, "over"));
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_stop_aborts)
{
	struct komerce_opts o = {0};
	struct komerce_result r;
	struct komerce *k;
	struct timespec a, b;
	char base[128];
	int stop = 1;
	long ms;

	snprintf(base, sizeof(base), "http://127.0.0.1:%u/user", srv.port);
	o.base_url = base;
	o.api_key = API_KEY;
	o.connect_timeout_ms = 2000;
	o.timeout_ms = 5000;
	o.stop = &stop;
	k = komerce_new(&o);
	ck_assert_ptr_nonnull(k);
	clock_gettime(CLOCK_MONOTONIC, &a);
	ck_assert_int_lt(komerce_payment_status(k, "SLOW", &r), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	ck_assert_int_eq(r.err, KOMERCE_E_INTERNAL);
	ck_assert_int_lt(ms, 1000);
	komerce_result_clear(&r);
	stop = 0;
	ck_assert_int_eq(komerce_methods_get(k, &r), 0);
	komerce_result_clear(&r);
	komerce_free(k);
}
END_TEST

START_TEST(test_client_bad_opts)
{
	struct komerce_opts o = {.base_url = "http://127.0.0.1:1/user",
				 .api_key = "key\r\nX-Evil: 1",
				 .connect_timeout_ms = 1000,
				 .timeout_ms = 1000};

	ck_assert_ptr_null(komerce_new(&o));
	ck_assert_ptr_null(komerce_new(NULL));
}
END_TEST

START_TEST(test_multi_concurrent)
{
	char base[128];
	struct komerce_opts o = {
		.api_key = API_KEY, .connect_timeout_ms = 2000, .timeout_ms = 5000};
	struct komerce_multi *m;
	struct komerce_result r;
	int tags[4] = {0, 1, 2, 3}, seen[4] = {0};
	struct timespec a, b;
	void *tag;
	long ms;
	int done = 0;

	snprintf(base, sizeof(base), "http://127.0.0.1:%u/user", srv.port);
	o.base_url = base;
	m = komerce_multi_new(&o, 3);
	ck_assert_ptr_nonnull(m);
	/* A wake-up ends a wait at once, also one given before the wait. */
	clock_gettime(CLOCK_MONOTONIC, &a);
	komerce_multi_wakeup(m);
	ck_assert_int_eq(komerce_multi_wait(m, 5000), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ck_assert_int_lt((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 1000);

	/* Three requests of 0.9 s each together take about 0.9 s, not 2.7 s. */
	ck_assert_int_eq(komerce_multi_status(m, "SLOW", &tags[0], &r), 0);
	ck_assert_int_eq(komerce_multi_status(m, "KPAY-5292/KM/2026", &tags[1], &r), 0);
	ck_assert_int_eq(komerce_multi_status(m, "SLOW", &tags[2], &r), 0);
	ck_assert_int_eq(komerce_multi_status(m, "RL", &tags[3], &r), -EBUSY);
	ck_assert_uint_eq(komerce_multi_running(m), 3);
	ck_assert_int_eq(komerce_multi_status(m, "", &tags[3], &r), -EBUSY);
	clock_gettime(CLOCK_MONOTONIC, &a);
	while (done < 3) {
		ck_assert_int_eq(komerce_multi_wait(m, 1000), 0);
		while (komerce_multi_next(m, &tag, &r) == 1) {
			int i = *(int *)tag;

			seen[i]++;
			ck_assert_int_eq(r.err, KOMERCE_OK);
			ck_assert_int_eq(r.http_status, 200);
			if (i == 1)
				ck_assert_str_eq(cJSON_GetObjectItem(r.data, "status")->valuestring,
						 "PAID");
			komerce_result_clear(&r);
			done++;
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
		ck_assert_int_lt(ms, 2500);
	}
	ck_assert_int_lt(ms, 1800);
	ck_assert(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
	ck_assert_uint_eq(komerce_multi_running(m), 0);

	/* A slot's next request keeps nothing of the last one; a 429 carries Retry-After. */
	ck_assert_int_eq(komerce_multi_status(m, "RL", &tags[3], &r), 0);
	for (done = 0; !done;) {
		ck_assert_int_eq(komerce_multi_wait(m, 1000), 0);
		done = komerce_multi_next(m, &tag, &r);
	}
	ck_assert_ptr_eq(tag, &tags[3]);
	ck_assert_int_eq(r.err, KOMERCE_E_RATE_LIMITED);
	ck_assert_int_eq(r.retry_after_s, 7);
	komerce_result_clear(&r);
	/* Pushed out at once; a reply that is already in when the caller waits ends the wait
	 * at once (the request has no socket left to wake a poll). */
	ck_assert_int_eq(komerce_multi_status(m, "KPAY-5292/KM/2026", &tags[1], &r), 0);
	komerce_multi_push(m);
	usleep(300 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (done = 0; !done;) {
		ck_assert_int_eq(komerce_multi_wait(m, 5000), 0);
		done = komerce_multi_next(m, &tag, &r);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	ck_assert_int_lt((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 1000);
	ck_assert_int_eq(r.err, KOMERCE_OK);
	komerce_result_clear(&r);
	/* Not sent: the result says why at once. */
	ck_assert_int_eq(komerce_multi_status(m, "", &tags[0], &r), -EINVAL);
	ck_assert_int_eq(r.err, KOMERCE_E_BAD_REQUEST);
	komerce_result_clear(&r);
	/* Freed with a request in flight: abandoned. */
	ck_assert_int_eq(komerce_multi_status(m, "SLOW", &tags[0], &r), 0);
	ck_assert_int_eq(komerce_multi_wait(m, 50), 0);
	komerce_multi_free(m);
	komerce_multi_free(NULL);
	ck_assert_ptr_null(komerce_multi_new(&o, 0));
}
END_TEST

Suite *komerce_suite(void)
{
	Suite *s = suite_create("komerce");
	TCase *tc;

	tc = tcase_create("reply");
	tcase_add_test(tc, test_reply_success);
	tcase_add_test(tc, test_reply_success_null_data);
	tcase_add_test(tc, test_reply_400_meta_message);
	tcase_add_test(tc, test_reply_401_403);
	tcase_add_test(tc, test_reply_404);
	tcase_add_test(tc, test_reply_429);
	tcase_add_test(tc, test_reply_5xx);
	tcase_add_test(tc, test_reply_other_status);
	tcase_add_test(tc, test_reply_not_json);
	tcase_add_test(tc, test_reply_no_meta);
	tcase_add_test(tc, test_reply_empty_body);
	tcase_add_test(tc, test_reply_error_inside_200);
	tcase_add_test(tc, test_reply_message_sanitised);
	tcase_add_test(tc, test_err_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("payment");
	tcase_add_test(tc, test_payment_full);
	tcase_add_test(tc, test_payment_status_spellings);
	tcase_add_test(tc, test_payment_bad_status);
	tcase_add_test(tc, test_payment_amount_forms);
	tcase_add_test(tc, test_payment_missing_fields);
	tcase_add_test(tc, test_payment_bank_code_and_numeric_ids);
	tcase_add_test(tc, test_payment_id_too_long);
	tcase_add_test(tc, test_payment_times);
	tcase_add_test(tc, test_payment_bad_times);
	suite_add_tcase(s, tc);

	tc = tcase_create("validate");
	tcase_add_test(tc, test_validate_valid);
	tcase_add_test(tc, test_validate_body);
	tcase_add_test(tc, test_validate_order_id);
	tcase_add_test(tc, test_validate_payment_type);
	tcase_add_test(tc, test_validate_channel_code);
	tcase_add_test(tc, test_validate_amount);
	tcase_add_test(tc, test_validate_customer);
	tcase_add_test(tc, test_validate_items);
	tcase_add_test(tc, test_validate_expiry);
	tcase_add_test(tc, test_validate_callback);
	suite_add_tcase(s, tc);

	tc = tcase_create("client");
	tcase_add_checked_fixture(tc, server_start, server_stop);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_client_methods_headers_and_reuse);
	tcase_add_test(tc, test_client_unauthorized);
	tcase_add_test(tc, test_client_status_percent_encoded);
	tcase_add_test(tc, test_client_rate_limited_retry_after);
	tcase_add_test(tc, test_client_timeout);
	tcase_add_test(tc, test_client_stop_aborts);
	tcase_add_test(tc, test_client_connect_refused);
	tcase_add_test(tc, test_client_cancel_and_create);
	tcase_add_test(tc, test_client_reply_too_big);
	tcase_add_test(tc, test_client_bad_opts);
	tcase_add_test(tc, test_multi_concurrent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(komerce_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
