/* Check suite for src/callback.c: X-Callback-Api-Key verification (HMAC of the raw body, hex in
 * either case, "sha256=" prefix, key rotation, plain mode) and the tolerant body parser, driven
 * by inline bodies and by the JSON fixtures in tests/fixtures (valid_*.json must parse,
 * invalid_*.json must be refused with a reason). */
#include "callback.h"

#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define KEY1 "cb-key-one-0123456789abcdef"
#define KEY2 "cb-key-two-fedcba9876543210"
#define BODY                                                                                 \
	"{\"payment_id\":\"KOMPAY-1699012345-A1B2C3\",\"order_id\":\"KOM12345\",\"status\":" \
	"\"PAID\",\"amount\":100000,\"paid_at\":\"2026-08-12T10:15:30.000Z\"}"

static const char *key_list[2];
static size_t key_lens[2];
static struct callback_keys keys1, keys2, keys_plain;

static void setup(void)
{
	key_list[0] = KEY1;
	key_list[1] = KEY2;
	key_lens[0] = strlen(KEY1);
	key_lens[1] = strlen(KEY2);
	keys1 = (struct callback_keys){.keys = key_list, .lens = key_lens, .n = 1};
	keys2 = (struct callback_keys){.keys = key_list, .lens = key_lens, .n = 2};
	keys_plain =
		(struct callback_keys){.keys = key_list, .lens = key_lens, .n = 2, .plain = true};
}

static void teardown(void)
{
}

/* Lowercase hex HMAC-SHA256 of body under key. */
static void sign(const char *key, const void *body, size_t len, char out[65])
{
	uint8_t mac[UTIL_SHA256_LEN];

	ck_assert_int_eq(util_hmac_sha256(key, strlen(key), body, len, mac), 0);
	util_hex(mac, sizeof(mac), out);
}

static int verify(const struct callback_keys *k, const char *header, const char *body)
{
	return callback_verify(k, header, body, strlen(body));
}

static int parse(const char *body, struct event *ev, char *why, size_t why_len)
{
	why[0] = '\0';
	return callback_parse(body, strlen(body), ev, why, why_len);
}

/* Parses body, which must be refused with a reason mentioning word. */
static void expect_refused(const char *body, size_t len, const char *word)
{
	struct event ev;
	char why[128] = "";

	ck_assert_msg(callback_parse(body, len, &ev, why, sizeof(why)) == -EINVAL,
		      "body should be refused: %.*s", (int)(len > 200 ? 200 : len), body);
	ck_assert_msg(why[0] != '\0', "no reason given");
	if (word != NULL)
		ck_assert_msg(strstr(why, word) != NULL, "reason \"%s\" does not mention \"%s\"",
			      why, word);
}

/* lit is a string literal: its length includes any NUL inside. */
#define REFUSED(lit, word) expect_refused(lit, sizeof(lit) - 1, word)

static char *read_fixture(const char *name, size_t *ret_len)
{
	char path[PATH_MAX];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", FIXTURES, name);
	f = fopen(path, "rbe");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*ret_len = (size_t)n;
	return buf;
}

/* ---- callback_verify ---- */

START_TEST(test_verify_lowercase_hex)
{
	char sig[65];

	sign(KEY1, BODY, strlen(BODY), sig);
	ck_assert_int_eq(verify(&keys1, sig, BODY), 0);
}
END_TEST

START_TEST(test_verify_uppercase_hex)
{
	char sig[65];

	sign(KEY1, BODY, strlen(BODY), sig);
	for (char *p = sig; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	ck_assert_int_eq(verify(&keys1, sig, BODY), 0);
}
END_TEST

START_TEST(test_verify_sha256_prefix)
{
	char sig[65], header[96];

	sign(KEY1, BODY, strlen(BODY), sig);
	snprintf(header, sizeof(header), "sha256=%s", sig);
	ck_assert_int_eq(verify(&keys1, header, BODY), 0);
	snprintf(header, sizeof(header), "SHA256=%s", sig);
	ck_assert_int_eq(verify(&keys1, header, BODY), 0);
	/* Surrounding blanks from a sloppy proxy are tolerated. */
	snprintf(header, sizeof(header), "  %s\t", sig);
	ck_assert_int_eq(verify(&keys1, header, BODY), 0);
}
END_TEST

START_TEST(test_verify_rotation_second_key)
{
	char sig[65];

	sign(KEY2, BODY, strlen(BODY), sig);
	ck_assert_int_eq(verify(&keys1, sig, BODY), -EACCES); /* KEY2 not configured */
	ck_assert_int_eq(verify(&keys2, sig, BODY), 0);
}
END_TEST

START_TEST(test_verify_first_or_second_key_same_result)
{
	char sig1[65], sig2[65];

	/* Every key is always evaluated; which one matches makes no difference to the outcome. */
	sign(KEY1, BODY, strlen(BODY), sig1);
	sign(KEY2, BODY, strlen(BODY), sig2);
	ck_assert_int_eq(verify(&keys2, sig1, BODY), 0);
	ck_assert_int_eq(verify(&keys2, sig2, BODY), 0);
	ck_assert_int_eq(verify(&keys2, sig1, BODY), verify(&keys2, sig2, BODY));
}
END_TEST

START_TEST(test_verify_plain)
{
	ck_assert_int_eq(verify(&keys_plain, KEY1, BODY), 0);
	ck_assert_int_eq(verify(&keys_plain, KEY2, BODY), 0);
	ck_assert_int_eq(verify(&keys_plain, " " KEY2 " ", BODY), 0);
}
END_TEST

START_TEST(test_verify_empty_body)
{
	char sig[65];

	sign(KEY1, "", 0, sig);
	ck_assert_int_eq(callback_verify(&keys1, sig, "", 0), 0);
}
END_TEST

START_TEST(test_verify_wrong_key)
{
	char sig[65];

	sign("some-other-key-0123456789", BODY, strlen(BODY), sig);
	ck_assert_int_eq(verify(&keys2, sig, BODY), -EACCES);
}
END_TEST

START_TEST(test_verify_missing_header)
{
	struct callback_keys none = {.keys = key_list, .lens = key_lens, .n = 0};
	char sig[65];

	ck_assert_int_eq(verify(&keys2, NULL, BODY), -EACCES);
	ck_assert_int_eq(verify(&keys2, "", BODY), -EACCES);
	ck_assert_int_eq(verify(&keys2, "   ", BODY), -EACCES);
	ck_assert_int_eq(verify(&keys_plain, NULL, BODY), -EACCES);
	ck_assert_int_eq(verify(&keys_plain, "", BODY), -EACCES);
	/* No key configured: nothing can be valid. */
	sign(KEY1, BODY, strlen(BODY), sig);
	ck_assert_int_eq(verify(&none, sig, BODY), -EACCES);
	ck_assert_int_eq(verify(NULL, sig, BODY), -EACCES);
}
END_TEST

START_TEST(test_verify_body_changed)
{
	char sig[65], body[sizeof(BODY)];

	sign(KEY1, BODY, strlen(BODY), sig);
	for (size_t i = 0; i < strlen(BODY); i += 7) {
		memcpy(body, BODY, sizeof(BODY));
		body[i] ^= 0x01;
		ck_assert_msg(verify(&keys2, sig, body) == -EACCES, "byte %zu changed, accepted",
			      i);
	}
	/* One byte more or less. */
	ck_assert_int_eq(callback_verify(&keys2, sig, BODY, strlen(BODY) - 1), -EACCES);
	ck_assert_int_eq(callback_verify(&keys2, sig, BODY "\n", strlen(BODY) + 1), -EACCES);
}
END_TEST

START_TEST(test_verify_malformed_header)
{
	char sig[65], h[160];

	sign(KEY1, BODY, strlen(BODY), sig);
	/* truncated by one digit (odd length) and by two (one byte short) */
	snprintf(h, sizeof(h), "%.63s", sig);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	snprintf(h, sizeof(h), "%.62s", sig);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	/* one digit too many, two too many */
	snprintf(h, sizeof(h), "%s0", sig);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	snprintf(h, sizeof(h), "%s00", sig);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	/* non-hex digit */
	snprintf(h, sizeof(h), "%s", sig);
	h[10] = 'g';
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	/* blank inside */
	snprintf(h, sizeof(h), "%.32s %s", sig, sig + 32);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	/* prefix alone, doubled prefix, other algorithm */
	ck_assert_int_eq(verify(&keys1, "sha256=", BODY), -EACCES);
	snprintf(h, sizeof(h), "sha256=sha256=%s", sig);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	snprintf(h, sizeof(h), "sha1=%s", sig);
	ck_assert_int_eq(verify(&keys1, h, BODY), -EACCES);
	/* base64 instead of hex */
	ck_assert_int_eq(verify(&keys1, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=", BODY),
			 -EACCES);
}
END_TEST

START_TEST(test_verify_hmac_mode_refuses_key_itself)
{
	/* The header must be a signature: sending the key itself is not accepted in hmac mode. */
	ck_assert_int_eq(verify(&keys2, KEY1, BODY), -EACCES);
}
END_TEST

START_TEST(test_verify_plain_wrong_key)
{
	char sig[65];

	ck_assert_int_eq(verify(&keys_plain, "cb-key-one-0123456789abcdeX", BODY), -EACCES);
	ck_assert_int_eq(verify(&keys_plain, "cb-key-one-0123456789abcde", BODY), -EACCES);
	ck_assert_int_eq(verify(&keys_plain, KEY1 "X", BODY), -EACCES);
	/* In plain mode a signature is not the key. */
	sign(KEY1, BODY, strlen(BODY), sig);
	ck_assert_int_eq(verify(&keys_plain, sig, BODY), -EACCES);
}
END_TEST

/* ---- callback_parse ---- */

START_TEST(test_parse_valid)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse(BODY, &ev, why, sizeof(why)), 0);
	ck_assert_str_eq(ev.payment_id, "KOMPAY-1699012345-A1B2C3");
	ck_assert_str_eq(ev.order_id, "KOM12345");
	ck_assert_int_eq(ev.status, PAYMENT_PAID);
	ck_assert_int_eq(ev.amount, 100000);
	ck_assert_str_eq(ev.payment_type, "");
	ck_assert_str_eq(ev.channel_code, "");
	ck_assert_int_eq(ev.source, EVENT_SOURCE_CALLBACK);
	ck_assert_ptr_eq(ev.raw, BODY);
	ck_assert_uint_eq(ev.raw_len, strlen(BODY));
}
END_TEST

START_TEST(test_parse_nested_data)
{
	struct event ev;
	char why[128];
	const char *body =
		"{\"event\":\"payment.status_updated\",\"data\":{\"payment_id\":\"KOMPAY-1-X\","
		"\"order_id\":\"KOM1\",\"status\":\"EXPIRED\",\"amount\":250000,\"payment_type\":"
		"\"bank_transfer\",\"bank_code\":\"BCA\",\"va_number\":\"1234567890\"}}";

	ck_assert_int_eq(parse(body, &ev, why, sizeof(why)), 0);
	ck_assert_str_eq(ev.payment_id, "KOMPAY-1-X");
	ck_assert_str_eq(ev.order_id, "KOM1");
	ck_assert_int_eq(ev.status, PAYMENT_EXPIRED);
	ck_assert_int_eq(ev.amount, 250000);
	ck_assert_str_eq(ev.payment_type, "bank_transfer");
	ck_assert_str_eq(ev.channel_code, "BCA");
	ck_assert_ptr_eq(ev.raw, body);
}
END_TEST

START_TEST(test_parse_top_level_wins_over_data)
{
	struct event ev;
	char why[128];
	const char *body = "{\"payment_id\":\"TOP\",\"status\":\"PAID\",\"data\":{\"payment_id\":"
			   "\"NESTED\",\"status\":\"PENDING\",\"amount\":5000}}";

	ck_assert_int_eq(parse(body, &ev, why, sizeof(why)), 0);
	ck_assert_str_eq(ev.payment_id, "TOP");
	ck_assert_int_eq(ev.status, PAYMENT_PAID);
	ck_assert_int_eq(ev.amount, 5000); /* absent at the top, read from data */
}
END_TEST

START_TEST(test_parse_status_spellings)
{
	static const struct {
		const char *field, *value;
		enum payment_status want;
	} cases[] = {
		{"status", "paid", PAYMENT_PAID},
		{"status", "Paid", PAYMENT_PAID},
		{"status", "PENDING", PAYMENT_PENDING},
		{"status", "expired", PAYMENT_EXPIRED},
		{"status", "Cancelled", PAYMENT_CANCELED},
		{"status", "CANCELLED", PAYMENT_CANCELED},
		{"status", "CANCELED", PAYMENT_CANCELED},
		{"payment_status", "PAID", PAYMENT_PAID},
		{"payment_status", "cancelled", PAYMENT_CANCELED},
		{"transaction_status", "EXPIRED", PAYMENT_EXPIRED},
		{"transaction_status", "pending", PAYMENT_PENDING},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[256], why[128];
		struct event ev;

		snprintf(body, sizeof(body),
			 "{\"payment_id\":\"KOMPAY-1-A\",\"%s\":\"%s\",\"amount\":1000}",
			 cases[i].field, cases[i].value);
		ck_assert_msg(parse(body, &ev, why, sizeof(why)) == 0, "%s refused: %s", body, why);
		ck_assert_msg(ev.status == cases[i].want, "%s: status %d", body, (int)ev.status);
	}
}
END_TEST

START_TEST(test_parse_status_field_precedence)
{
	struct event ev;
	char why[128];

	/* "status" first, then payment_status, then transaction_status. */
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"transaction_status\":\"EXPIRED\","
			       "\"payment_status\":\"PENDING\",\"status\":\"PAID\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.status, PAYMENT_PAID);
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"transaction_status\":\"EXPIRED\","
			       "\"payment_status\":\"PENDING\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.status, PAYMENT_PENDING);
	/* From data when the top level has none. */
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"data\":{\"payment_status\":\"cancelled\"}}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.status, PAYMENT_CANCELED);
}
END_TEST

START_TEST(test_parse_amount_forms)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"150000\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.amount, 150000);
	ck_assert_int_eq(
		parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"150000.00\"}", &ev,
		      why, sizeof(why)),
		0);
	ck_assert_int_eq(ev.amount, 150000);
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":1.5e5}", &ev,
			       why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.amount, 150000);
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":0}", &ev, why,
			       sizeof(why)),
			 0);
	ck_assert_int_eq(ev.amount, 0);
	/* absent or null: unknown */
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\"}", &ev, why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.amount, -1);
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":null}", &ev,
			       why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.amount, -1);
}
END_TEST

START_TEST(test_parse_unknown_fields_kept)
{
	struct event ev;
	char why[128];
	const char *body =
		"{\"payment_id\":\"KOMPAY-9\",\"status\":\"PAID\",\"amount\":100000,\"customer\":"
		"{\"name\":\"Budi\"},\"metadata\":[1,2,{\"x\":null}],\"livemode\":false}";

	ck_assert_int_eq(parse(body, &ev, why, sizeof(why)), 0);
	ck_assert_ptr_eq(ev.raw, body);
	ck_assert_uint_eq(ev.raw_len, strlen(body));
	ck_assert_mem_eq(ev.raw, body, ev.raw_len);
}
END_TEST

START_TEST(test_parse_slash_payment_id)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse("{\"payment_id\":\"KPAY-5292/KM/2026\",\"order_id\":"
			       "\"INV/2026/08/0001\",\"status\":\"PAID\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_str_eq(ev.payment_id, "KPAY-5292/KM/2026");
	ck_assert_str_eq(ev.order_id, "INV/2026/08/0001");
	/* JSON escape of the slash reads the same. */
	ck_assert_int_eq(parse("{\"payment_id\":\"KPAY-5292\\/KM\\/2026\",\"status\":\"PAID\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_str_eq(ev.payment_id, "KPAY-5292/KM/2026");
}
END_TEST

START_TEST(test_parse_channel_code)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"channel_code\":\"BNI\","
			       "\"bank_code\":\"BCA\",\"payment_type\":\"bank_transfer\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_str_eq(ev.channel_code, "BNI");
	ck_assert_str_eq(ev.payment_type, "bank_transfer");
	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"bank_code\":\"BCA\"}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_str_eq(ev.channel_code, "BCA");
}
END_TEST

START_TEST(test_parse_numeric_ids)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse("{\"payment_id\":5292,\"order_id\":12345,\"status\":\"PAID\"}", &ev,
			       why, sizeof(why)),
			 0);
	ck_assert_str_eq(ev.payment_id, "5292");
	ck_assert_str_eq(ev.order_id, "12345");
}
END_TEST

START_TEST(test_parse_utf8)
{
	struct event ev;
	char why[128];
	/* 2-, 3- and 4-byte sequences, one at the very end of the body's last string. */
	const char *body = "{\"payment_id\":\"P\",\"status\":\"PAID\",\"note\":\"caf\xc3\xa9 "
			   "\xe2\x9c\x93 \xf0\x9f\x92\xb0\"}";

	ck_assert_int_eq(parse(body, &ev, why, sizeof(why)), 0);
	ck_assert_int_eq(
		parse("{\"payment_id\":\"P\",\"status\":\"PAID\"}\xc2\xa0", &ev, why, sizeof(why)),
		-EINVAL); /* NBSP is not JSON whitespace */
}
END_TEST

static int fixture_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

START_TEST(test_parse_fixtures)
{
	struct dirent **list;
	int n = scandir(FIXTURES, &list, fixture_filter, alphasort);
	int valid = 0, invalid = 0;

	ck_assert_int_gt(n, 0);
	for (int i = 0; i < n; i++) {
		const char *name = list[i]->d_name;
		size_t len;
		char *body = read_fixture(name, &len);
		struct event ev;
		char why[128] = "";
		int r = callback_parse(body, len, &ev, why, sizeof(why));

		if (strncmp(name, "valid_", 6) == 0) {
			ck_assert_msg(r == 0, "%s refused: %s", name, why);
			ck_assert_msg(ev.payment_id[0] != '\0', "%s: no payment_id", name);
			ck_assert_msg(ev.status != PAYMENT_UNKNOWN, "%s: no status", name);
			ck_assert_ptr_eq(ev.raw, body);
			ck_assert_uint_eq(ev.raw_len, len);
			valid++;
		} else {
			ck_assert_msg(strncmp(name, "invalid_", 8) == 0,
				      "fixture %s must start with valid_ or invalid_", name);
			ck_assert_msg(r == -EINVAL, "%s accepted", name);
			ck_assert_msg(why[0] != '\0', "%s: no reason", name);
			invalid++;
		}
		free(body);
		free(list[i]);
	}
	free(list);
	ck_assert_int_ge(valid, 10);
	ck_assert_int_ge(invalid, 10);
}
END_TEST

/* Specific expectations for some fixtures. */
START_TEST(test_parse_fixture_fields)
{
	static const struct {
		const char *file, *payment_id;
		enum payment_status status;
		long long amount;
		const char *channel;
	} cases[] = {
		{"valid_toplevel_paid.json", "KOMPAY-1699012345-A1B2C3", PAYMENT_PAID, 100000, ""},
		{"valid_nested_data.json", "KOMPAY-1699012345-D4E5F6", PAYMENT_PAID, 250000, "BCA"},
		{"valid_status_lowercase.json", "KOMPAY-1699012345-G7H8I9", PAYMENT_PAID, 50000,
		 ""},
		{"valid_status_cancelled.json", "KOMPAY-1699012345-J1K2L3", PAYMENT_CANCELED, 75000,
		 "BNI"},
		{"valid_payment_status.json", "KOMPAY-1699012345-S1T2U3", PAYMENT_PAID, 100000, ""},
		{"valid_transaction_status.json", "KOMPAY-1699012345-V4W5X6", PAYMENT_EXPIRED,
		 100000, ""},
		{"valid_amount_string.json", "KOMPAY-1699012345-Y7Z8A9", PAYMENT_PAID, 150000, ""},
		{"valid_slash_payment_id.json", "KPAY-5292/KM/2026", PAYMENT_PAID, 100000, "BCA"},
		{"valid_no_amount.json", "KOMPAY-1699012345-E4F5G6", PAYMENT_PENDING, -1, ""},
		{"valid_pretty_printed.json", "KOMPAY-1699012345-H7I8J9", PAYMENT_PAID, 100000, ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		char *body = read_fixture(cases[i].file, &len);
		struct event ev;
		char why[128] = "";

		ck_assert_msg(callback_parse(body, len, &ev, why, sizeof(why)) == 0, "%s: %s",
			      cases[i].file, why);
		ck_assert_str_eq(ev.payment_id, cases[i].payment_id);
		ck_assert_int_eq(ev.status, cases[i].status);
		ck_assert_int_eq(ev.amount, cases[i].amount);
		ck_assert_str_eq(ev.channel_code, cases[i].channel);
		free(body);
	}
}
END_TEST

START_TEST(test_event_source_name)
{
	ck_assert_str_eq(event_source_name(EVENT_SOURCE_CALLBACK), "callback");
	ck_assert_str_eq(event_source_name(EVENT_SOURCE_RECONCILE), "reconcile");
	ck_assert_str_eq(event_source_name(EVENT_SOURCE_API), "api");
}
END_TEST

/* ---- limits ---- */

START_TEST(test_parse_payment_id_length)
{
	char id[200], body[400], why[128];
	struct event ev;

	memset(id, 'A', sizeof(id));
	id[127] = '\0'; /* 127 bytes: the most that fits */
	snprintf(body, sizeof(body), "{\"payment_id\":\"%s\",\"status\":\"PAID\"}", id);
	ck_assert_int_eq(parse(body, &ev, why, sizeof(why)), 0);
	ck_assert_uint_eq(strlen(ev.payment_id), 127);

	id[127] = 'A';
	id[128] = '\0'; /* 128 bytes: too long, refused rather than cut */
	snprintf(body, sizeof(body), "{\"payment_id\":\"%s\",\"status\":\"PAID\"}", id);
	expect_refused(body, strlen(body), "payment_id");

	snprintf(body, sizeof(body),
		 "{\"payment_id\":\"P\",\"order_id\":\"%s\",\"status\":\"PAID\"}", id);
	expect_refused(body, strlen(body), "order_id");
}
END_TEST

START_TEST(test_parse_amount_limits)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":"
			       "1000000000000000}",
			       &ev, why, sizeof(why)),
			 0);
	ck_assert_int_eq(ev.amount, 1000000000000000LL);
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":1000000000000001}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":1e300}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":-1}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":-0.5}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":100000.5}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"100000.5\"}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"1e300\"}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"-5\"}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"inf\"}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"nan\"}", "amount");
	/* A number too large for a double is read as infinity by cJSON. */
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":1e999}", "amount");
}
END_TEST

START_TEST(test_parse_numeric_id_limits)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse("{\"payment_id\":9007199254740991,\"status\":\"PAID\"}", &ev, why,
			       sizeof(why)),
			 0);
	ck_assert_str_eq(ev.payment_id, "9007199254740991");
	/* Past 2^53 a number can no longer name an id exactly. */
	REFUSED("{\"payment_id\":9007199254740993,\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":1e300,\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":12.5,\"status\":\"PAID\"}", "payment_id");
}
END_TEST

START_TEST(test_parse_deep_nesting)
{
	size_t depth = 5000, len = 0;
	char *body = malloc(2 * depth + 64);

	ck_assert_ptr_nonnull(body);
	len += (size_t)snprintf(body, 64, "{\"payment_id\":\"P\",\"status\":\"PAID\",\"x\":");
	for (size_t i = 0; i < depth; i++)
		body[len++] = '[';
	for (size_t i = 0; i < depth; i++)
		body[len++] = ']';
	body[len++] = '}';
	body[len] = '\0';
	expect_refused(body, len, NULL); /* refused, not a stack overflow */
	free(body);
}
END_TEST

START_TEST(test_parse_whitespace_around)
{
	struct event ev;
	char why[128];

	ck_assert_int_eq(parse(" \r\n\t{\"payment_id\":\"P\",\"status\":\"PAID\"}\r\n \t", &ev, why,
			       sizeof(why)),
			 0);
	ck_assert_str_eq(ev.payment_id, "P");
}
END_TEST

START_TEST(test_parse_not_nul_terminated)
{
	struct event ev;
	char why[128];
	/* The body is exactly len bytes; what follows in memory is not part of it. */
	const char buf[] = "{\"payment_id\":\"P\",\"status\":\"PAID\"}GARBAGE";

	ck_assert_int_eq(callback_parse(buf, 34, &ev, why, sizeof(why)), 0);
	ck_assert_uint_eq(ev.raw_len, 34);
	ck_assert_int_eq(callback_parse(buf, 33, &ev, why, sizeof(why)), -EINVAL);
}
END_TEST

START_TEST(test_parse_small_why_buffer)
{
	struct event ev;
	char why[8];

	memset(why, 'x', sizeof(why));
	ck_assert_int_eq(callback_parse("{}", 2, &ev, why, sizeof(why)), -EINVAL);
	ck_assert_uint_lt(strlen(why), sizeof(why));
}
END_TEST

/* ---- errors ---- */

START_TEST(test_parse_missing_required)
{
	REFUSED("{\"status\":\"PAID\",\"amount\":100000}", "payment_id");
	REFUSED("{\"payment_id\":null,\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":\"\",\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":\"P\",\"amount\":100000}", "status");
	REFUSED("{\"payment_id\":\"P\",\"status\":null}", "status");
	REFUSED("{}", "payment_id");
	/* "data" that is not an object is not looked into. */
	REFUSED("{\"data\":\"{\\\"payment_id\\\":\\\"P\\\",\\\"status\\\":\\\"PAID\\\"}\"}",
		"payment_id");
}
END_TEST

START_TEST(test_parse_wrong_types)
{
	REFUSED("{\"payment_id\":{\"id\":\"P\"},\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":[\"P\"],\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":true,\"status\":\"PAID\"}", "payment_id");
	REFUSED("{\"payment_id\":\"P\",\"order_id\":{},\"status\":\"PAID\"}", "order_id");
	REFUSED("{\"payment_id\":\"P\",\"status\":1}", "status");
	REFUSED("{\"payment_id\":\"P\",\"status\":true}", "status");
	REFUSED("{\"payment_id\":\"P\",\"status\":{\"code\":\"PAID\"}}", "status");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":true}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":{\"value\":1}}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":[1]}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"abc\"}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"12abc\"}", "amount");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"amount\":\"\"}", "amount");
}
END_TEST

START_TEST(test_parse_unknown_status)
{
	REFUSED("{\"payment_id\":\"P\",\"status\":\"REFUNDED\"}", "status");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"\"}", "status");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID \"}", "status");
	REFUSED("{\"payment_id\":\"P\",\"payment_status\":\"SETTLED\"}", "status");
}
END_TEST

START_TEST(test_parse_bad_bytes)
{
	/* not UTF-8: Latin-1 é, a lone continuation byte, an overlong '/', a surrogate, and a
	 * sequence cut at the end of the body */
	REFUSED("{\"payment_id\":\"caf\xe9\",\"status\":\"PAID\"}", "UTF-8");
	REFUSED("{\"payment_id\":\"P\x80\",\"status\":\"PAID\"}", "UTF-8");
	REFUSED("{\"payment_id\":\"\xc0\xaf\",\"status\":\"PAID\"}", "UTF-8");
	REFUSED("{\"payment_id\":\"\xed\xa0\x80\",\"status\":\"PAID\"}", "UTF-8");
	REFUSED("{\"payment_id\":\"\xf4\x90\x80\x80\",\"status\":\"PAID\"}", "UTF-8");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\"}\xe2\x9c", "UTF-8");
	/* NUL inside the body, even where cJSON would stop reading */
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\"}\0{}", NULL);
	REFUSED("{\"payment_id\":\"P\0X\",\"status\":\"PAID\"}", NULL);
	/* control character inside an id (escaped, so valid JSON) */
	REFUSED("{\"payment_id\":\"P\\n1\",\"status\":\"PAID\"}", "payment_id");
}
END_TEST

START_TEST(test_parse_malformed)
{
	REFUSED("", NULL);
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\"", "JSON");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\"}}", "JSON");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\"} x", "JSON");
	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\"}{\"payment_id\":\"Q\"}", "JSON");
	REFUSED("[{\"payment_id\":\"P\",\"status\":\"PAID\"}]", "object");
	REFUSED("\"payment_id\"", "object");
	REFUSED("42", "object");
	REFUSED("null", "object");
	REFUSED("{'payment_id':'P','status':'PAID'}", "JSON");
	REFUSED("payment_id=P&status=PAID", "JSON");
}
END_TEST

/* A member named twice is refused, at the top level or inside data, whether the object is
 * small (compared pair by pair) or large (sorted); many distinct members pass. */
START_TEST(test_parse_duplicate_members)
{
	char body[2048], why[128];
	struct event ev;
	size_t n;

	REFUSED("{\"payment_id\":\"P\",\"status\":\"PAID\",\"status\":\"EXPIRED\"}",
		"duplicate field status");
	REFUSED("{\"data\":{\"payment_id\":\"P\",\"status\":\"PAID\",\"payment_id\":\"Q\"}}",
		"duplicate field payment_id");
	for (int members = 10; members <= 40; members += 30) {
		n = (size_t)snprintf(body, sizeof(body),
				     "{\"payment_id\":\"P\",\"status\":\"PAID\"");
		for (int i = 0; i < members; i++)
			n += (size_t)snprintf(body + n, sizeof(body) - n, ",\"x%d\":%d", i, i);
		snprintf(body + n, sizeof(body) - n, "}");
		ck_assert_msg(parse(body, &ev, why, sizeof(why)) == 0, "%d members: %s", members,
			      why);
		/* the same name again, last */
		snprintf(body + n, sizeof(body) - n, ",\"x%d\":0}", members / 2);
		ck_assert_int_eq(parse(body, &ev, why, sizeof(why)), -EINVAL);
		ck_assert_msg(strstr(why, "duplicate field x") != NULL, "%s", why);
	}
}
END_TEST

Suite *callback_suite(void)
{
	Suite *s = suite_create("callback");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_verify_lowercase_hex);
	tcase_add_test(tc, test_verify_uppercase_hex);
	tcase_add_test(tc, test_verify_sha256_prefix);
	tcase_add_test(tc, test_verify_rotation_second_key);
	tcase_add_test(tc, test_verify_first_or_second_key_same_result);
	tcase_add_test(tc, test_verify_plain);
	tcase_add_test(tc, test_verify_empty_body);
	tcase_add_test(tc, test_parse_valid);
	tcase_add_test(tc, test_parse_nested_data);
	tcase_add_test(tc, test_parse_top_level_wins_over_data);
	tcase_add_test(tc, test_parse_status_spellings);
	tcase_add_test(tc, test_parse_status_field_precedence);
	tcase_add_test(tc, test_parse_amount_forms);
	tcase_add_test(tc, test_parse_unknown_fields_kept);
	tcase_add_test(tc, test_parse_slash_payment_id);
	tcase_add_test(tc, test_parse_channel_code);
	tcase_add_test(tc, test_parse_numeric_ids);
	tcase_add_test(tc, test_parse_utf8);
	tcase_add_test(tc, test_parse_fixtures);
	tcase_add_test(tc, test_parse_fixture_fields);
	tcase_add_test(tc, test_event_source_name);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_parse_payment_id_length);
	tcase_add_test(tc, test_parse_amount_limits);
	tcase_add_test(tc, test_parse_numeric_id_limits);
	tcase_add_test(tc, test_parse_deep_nesting);
	tcase_add_test(tc, test_parse_whitespace_around);
	tcase_add_test(tc, test_parse_not_nul_terminated);
	tcase_add_test(tc, test_parse_small_why_buffer);
	tcase_add_test(tc, test_parse_duplicate_members);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_verify_wrong_key);
	tcase_add_test(tc, test_verify_missing_header);
	tcase_add_test(tc, test_verify_body_changed);
	tcase_add_test(tc, test_verify_malformed_header);
	tcase_add_test(tc, test_verify_hmac_mode_refuses_key_itself);
	tcase_add_test(tc, test_verify_plain_wrong_key);
	tcase_add_test(tc, test_parse_missing_required);
	tcase_add_test(tc, test_parse_wrong_types);
	tcase_add_test(tc, test_parse_unknown_status);
	tcase_add_test(tc, test_parse_bad_bytes);
	tcase_add_test(tc, test_parse_malformed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(callback_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
