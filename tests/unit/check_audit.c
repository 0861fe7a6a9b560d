/* Check suite for src/audit.c: the events filter read from text (the CLI options and the API
 * query parameters share it), and events and payments as JSON (what the API and the CLI print).
 */
#include "audit.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static struct store_event_filter fresh(void)
{
	return (struct store_event_filter){.status = PAYMENT_UNKNOWN};
}

START_TEST(test_filter_values)
{
	struct store_event_filter f = fresh();
	char why[128];

	ck_assert_int_eq(audit_filter_set(&f, "payment_id", "KPAY-5292/KM/2026", why, sizeof(why)),
			 0);
	ck_assert_str_eq(f.payment_id, "KPAY-5292/KM/2026");
	ck_assert_int_eq(audit_filter_set(&f, "status", "paid", why, sizeof(why)), 0);
	ck_assert_int_eq(f.status, PAYMENT_PAID);
	ck_assert_int_eq(audit_filter_set(&f, "source", "RECONCILE", why, sizeof(why)), 0);
	ck_assert_str_eq(f.source, "reconcile");
	ck_assert_int_eq(audit_filter_set(&f, "since", "2026-08-12T10:15:30Z", why, sizeof(why)),
			 0);
	ck_assert_int_eq(f.since_ms, 1786529730000LL);
	ck_assert_int_eq(audit_filter_set(&f, "until", "1786529731", why, sizeof(why)), 0);
	ck_assert_int_eq(f.until_ms, 1786529731000LL);
	ck_assert_int_eq(audit_filter_set(&f, "after_id", "0", why, sizeof(why)), 0);
	ck_assert_int_eq(audit_filter_set(&f, "limit", "25", why, sizeof(why)), 0);
	ck_assert_int_eq(f.limit, 25);
	/* An empty value clears the field. */
	ck_assert_int_eq(audit_filter_set(&f, "status", "", why, sizeof(why)), 0);
	ck_assert_int_eq(f.status, PAYMENT_UNKNOWN);
	ck_assert_int_eq(audit_filter_set(&f, "payment_id", "", why, sizeof(why)), 0);
	ck_assert_ptr_null(f.payment_id);
}
END_TEST

START_TEST(test_filter_errors)
{
	struct store_event_filter f = fresh();
	char why[128], longid[300];

	ck_assert_int_eq(audit_filter_set(&f, "status", "REFUNDED", why, sizeof(why)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "PENDING"));
	ck_assert_int_eq(audit_filter_set(&f, "source", "webhook", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "since", "yesterday", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "after_id", "-1", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "limit", "0", why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "limit", "10x", why, sizeof(why)), -EINVAL);
	memset(longid, 'K', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	ck_assert_int_eq(audit_filter_set(&f, "order_id", longid, why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(audit_filter_set(&f, "bogus", "1", why, sizeof(why)), -ENOENT);
}
END_TEST

static struct store_event sample(const char *raw)
{
	struct store_event e;

	memset(&e, 0, sizeof(e));
	e.id = 42;
	strcpy(e.payment_id, "KOMPAY-1");
	e.status = PAYMENT_PAID;
	e.amount = -1;
	strcpy(e.source, "callback");
	e.received_at = 1786529730123LL;
	e.raw_json = raw;
	e.receipts = 2;
	return e;
}

START_TEST(test_event_json)
{
	struct store_event e = sample("{\"payment_id\":\"KOMPAY-1\",\"extra\":[1,2]}");
	cJSON *o = audit_event_json(&e), *cb;

	ck_assert_ptr_nonnull(o);
	ck_assert_double_eq(cJSON_GetObjectItem(o, "id")->valuedouble, 42);
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "order_id")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "amount")));
	ck_assert_str_eq(cJSON_GetObjectItem(o, "status")->valuestring, "PAID");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "received_at")->valuestring,
			 "2026-08-12T10:15:30.123Z");
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(o, "conflict")));
	cb = cJSON_GetObjectItem(o, "callback");
	ck_assert(cJSON_IsArray(cJSON_GetObjectItem(cb, "extra")));
	cJSON_Delete(o);

	/* A raw body that is not JSON is kept as a string; an empty one is null. */
	e = sample("not json");
	o = audit_event_json(&e);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "callback")->valuestring, "not json");
	cJSON_Delete(o);
	e = sample("");
	o = audit_event_json(&e);
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "callback")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "confirmation")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "held_event_id")));
	cJSON_Delete(o);

	/* Its part in the confirmation of a PAID callback. */
	e.mark = STORE_MARK_UNCONFIRMED;
	e.held_event_id = 41;
	o = audit_event_json(&e);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "confirmation")->valuestring, "unconfirmed");
	ck_assert_double_eq(cJSON_GetObjectItem(o, "held_event_id")->valuedouble, 41);
	cJSON_Delete(o);
}
END_TEST

START_TEST(test_poll_json)
{
	struct store_poll p;
	cJSON *o;

	memset(&p, 0, sizeof(p));
	p.id = 3;
	p.polled_at = 1786529730000LL;
	p.elapsed_ms = 210;
	p.outcome = STORE_POLL_OK;
	p.http_status = 200;
	p.komerce_status = PAYMENT_PENDING;
	p.confirming = true;
	o = audit_poll_json(&p);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "polled_at")->valuestring,
			 "2026-08-12T10:15:30.000Z");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "outcome")->valuestring, "ok");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "komerce_status")->valuestring, "PENDING");
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "confirming")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "error")));
	cJSON_Delete(o);
	p.outcome = STORE_POLL_FAILED;
	p.http_status = 0;
	p.komerce_status = PAYMENT_UNKNOWN;
	strcpy(p.error, "timeout: timeout after 5000 ms");
	o = audit_poll_json(&p);
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "http_status")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "komerce_status")));
	ck_assert_str_eq(cJSON_GetObjectItem(o, "error")->valuestring,
			 "timeout: timeout after 5000 ms");
	cJSON_Delete(o);
}
END_TEST

START_TEST(test_payment_json)
{
	struct store_payment p;
	cJSON *o;

	memset(&p, 0, sizeof(p));
	strcpy(p.payment_id, "KOMPAY-2");
	strcpy(p.order_id, "ORD-2");
	strcpy(p.origin, "api");
	p.amount = 150000;
	p.status = PAYMENT_PENDING;
	p.expires_at = 1786529730;
	p.created_at = 1786529730000LL;
	o = audit_payment_json(&p);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "order_id")->valuestring, "ORD-2");
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "payment_type")));
	ck_assert_double_eq(cJSON_GetObjectItem(o, "amount")->valuedouble, 150000);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "expires_at")->valuestring,
			 "2026-08-12T10:15:30.000Z");
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "last_polled_at")));
	ck_assert_str_eq(cJSON_GetObjectItem(o, "origin")->valuestring, "api");
	ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "confirmation")));
	cJSON_Delete(o);

	p.confirmation = STORE_CONFIRM_UNCONFIRMED;
	strcpy(p.confirmation_detail, "Komerce says PENDING");
	p.confirmation_at = 1786529731000LL;
	p.held_event_id = 7;
	o = audit_payment_json(&p);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "confirmation")->valuestring, "unconfirmed");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "confirmation_detail")->valuestring,
			 "Komerce says PENDING");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "confirmation_at")->valuestring,
			 "2026-08-12T10:15:31.000Z");
	ck_assert_double_eq(cJSON_GetObjectItem(o, "held_event_id")->valuedouble, 7);
	cJSON_Delete(o);
}
END_TEST

static Suite *audit_suite(void)
{
	Suite *s = suite_create("audit");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_filter_values);
	tcase_add_test(tc, test_event_json);
	tcase_add_test(tc, test_payment_json);
	tcase_add_test(tc, test_poll_json);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_test(tc, test_filter_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(audit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
