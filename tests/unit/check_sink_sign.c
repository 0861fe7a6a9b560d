/* Check suite for sink_sign: the Standard Webhooks signature against the spec's published test
 * vector and against an HMAC + base64 computed here with OpenSSL, secret parsing (whsec_ and
 * raw, rotation lists, the limits), and the original hookd signature.
 */
#include "sink_sign.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* The test vector the Standard Webhooks reference libraries (and Svix's) verify against. */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID	   "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS	   1614265330
#define VEC_BODY   "{\"test\": 2432232314}"
#define VEC_SIG	   "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* "v1," + base64(HMAC-SHA256(key, msg)) computed independently of sink_sign.c. */
static void expected_v1(const void *key, size_t key_len, const char *msg, char out[64])
{
	unsigned char mac[32], b64[48];
	unsigned int n = sizeof(mac);

	HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), mac, &n);
	EVP_EncodeBlock(b64, mac, sizeof(mac));
	snprintf(out, 64, "v1,%s", (const char *)b64);
}

static void expected_hookd(const char *secret, const char *msg, char out[72])
{
	unsigned char mac[32];
	unsigned int n = sizeof(mac);

	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, strlen(msg),
	     mac, &n);
	memcpy(out, "sha256=", 7);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", mac[i]);
}

static void parse_ok(const char *secrets, struct sink_sign_keys *k)
{
	char why[128];

	ck_assert_msg(sink_sign_keys_parse(secrets, k, why, sizeof(why)) == 0, "%s: %s", secrets,
		      why);
}

static void parse_bad(const char *secrets, const char *reason)
{
	struct sink_sign_keys k;
	char why[128];

	ck_assert_int_eq(sink_sign_keys_parse(secrets, &k, why, sizeof(why)), -EINVAL);
	ck_assert_msg(strstr(why, reason) != NULL, "%s: got \"%s\"", secrets, why);
	/* Nothing of a refused secret is left behind. */
	ck_assert_uint_eq(k.n, 0);
	ck_assert_uint_eq(k.len[0], 0);
	/* The reason never quotes the secret. */
	ck_assert_msg(secrets[0] == '\0' || strstr(why, secrets) == NULL, "%s", why);
}

START_TEST(test_spec_vector)
{
	struct sink_sign_keys k;
	char sig[SINK_SIGN_HEADER_LEN];

	parse_ok(VEC_SECRET, &k);
	ck_assert_uint_eq(k.n, 1);
	ck_assert_uint_eq(k.len[0], 24); /* base64 of 24 bytes */
	ck_assert_int_eq(sink_sign_standard(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), sig),
			 0);
	ck_assert_str_eq(sig, VEC_SIG);
	sink_sign_keys_clear(&k);
}
END_TEST

START_TEST(test_standard_matches_openssl)
{
	static const char body[] = "{\"event_id\":42,\"status\":\"PAID\"}";
	struct sink_sign_keys k;
	char sig[SINK_SIGN_HEADER_LEN], want[64], id[SINK_SIGN_ID_LEN];

	sink_sign_webhook_id(42, id);
	ck_assert_str_eq(id, "evt_42");
	parse_ok("0123456789abcdef0123", &k);
	expected_v1("0123456789abcdef0123", 20,
		    "evt_42.1786529730.{\"event_id\":42,\"status\":"
		    "\"PAID\"}",
		    want);
	ck_assert_int_eq(sink_sign_standard(&k, id, 1786529730, body, strlen(body), sig), 0);
	ck_assert_str_eq(sig, want);
	/* id, timestamp and body are all covered. */
	ck_assert_int_eq(sink_sign_standard(&k, "evt_43", 1786529730, body, strlen(body), sig), 0);
	ck_assert_str_ne(sig, want);
	ck_assert_int_eq(sink_sign_standard(&k, id, 1786529731, body, strlen(body), sig), 0);
	ck_assert_str_ne(sig, want);
	ck_assert_int_eq(sink_sign_standard(&k, id, 1786529730, body, strlen(body) - 1, sig), 0);
	ck_assert_str_ne(sig, want);
	sink_sign_keys_clear(&k);
}
END_TEST

START_TEST(test_rotation_signs_with_each)
{
	static const char body[] = "{}";
	struct sink_sign_keys k;
	char sig[SINK_SIGN_HEADER_LEN], a[64], b[64], both[140];

	parse_ok(" " VEC_SECRET " ,  old-raw-secret-0123456789 ", &k);
	ck_assert_uint_eq(k.n, 2);
	ck_assert_uint_eq(k.len[1], strlen("old-raw-secret-0123456789"));
	ck_assert_int_eq(sink_sign_standard(&k, "evt_1", 5, body, 2, sig), 0);
	expected_v1(k.key[0], k.len[0], "evt_1.5.{}", a);
	expected_v1("old-raw-secret-0123456789", 25, "evt_1.5.{}", b);
	snprintf(both, sizeof(both), "%s %s", a, b);
	ck_assert_str_eq(sig, both);
	sink_sign_keys_clear(&k);
	ck_assert_uint_eq(k.n, 0);
}
END_TEST

START_TEST(test_hookd_matches_openssl)
{
	char got[SINK_SIGN_HOOKD_LEN], want[72];

	expected_hookd("0123456789abcdef0123", "1786529730.{\"a\":1}", want);
	ck_assert_int_eq(sink_sign_hookd("0123456789abcdef0123", 1786529730, "{\"a\":1}", 7, got),
			 0);
	ck_assert_str_eq(got, want);
	ck_assert_int_eq(sink_sign_hookd("0123456789abcdef0123", 1786529731, "{\"a\":1}", 7, got),
			 0);
	ck_assert_str_ne(got, want);
	expected_hookd("0123456789abcdef", "5.", want);
	ck_assert_int_eq(sink_sign_hookd("0123456789abcdef", 5, "", 0, got), 0);
	ck_assert_str_eq(got, want);
}
END_TEST

START_TEST(test_limits)
{
	struct sink_sign_keys k;
	char sig[SINK_SIGN_HEADER_LEN], long_raw[300];

	/* Exactly 16 characters, and exactly 16 decoded bytes, are enough. */
	parse_ok("0123456789abcdef", &k);
	parse_ok("whsec_MDEyMzQ1Njc4OWFiY2RlZg==", &k);
	ck_assert_uint_eq(k.len[0], 16);
	ck_assert_int_eq(memcmp(k.key[0], "0123456789abcdef", 16), 0);
	/* Four secrets sign; the header holds all four signatures. */
	parse_ok("0123456789abcdef0,0123456789abcdef1,0123456789abcdef2,0123456789abcdef3", &k);
	ck_assert_uint_eq(k.n, 4);
	ck_assert_int_eq(sink_sign_standard(&k, "evt_9223372036854775807", 1, "x", 1, sig), 0);
	ck_assert_uint_eq(strlen(sig), 4 * 47 + 3);
	memset(long_raw, 'a', 256);
	long_raw[256] = '\0';
	parse_ok(long_raw, &k);
	sink_sign_keys_clear(&k);
}
END_TEST

START_TEST(test_invalid)
{
	struct sink_sign_keys k = {.n = 0};
	char sig[SINK_SIGN_HEADER_LEN], long_raw[300];

	parse_bad("", "missing");
	parse_bad("   ", "missing");
	parse_bad("short-secret", "shorter than 16");
	parse_bad("0123456789abcdef,", "secret 2 of the list: is empty");
	parse_bad("0123456789abcdef,,0123456789abcdef", "is empty");
	parse_bad("whsec_MDEyMzQ1Njc4OWFiY2RlZg", "base64");	    /* padding missing */
	parse_bad("whsec_MDEyMzQ1Njc4OWFiY2Rl", "shorter than 16"); /* 15 bytes */
	parse_bad("whsec_MDEyMzQ1Njc4OWFiY2RlZg=A", "base64");
	parse_bad("whsec_MDEyMzQ1Njc4OWFi!2RlZg==", "base64");
	parse_bad("whsec_MDEyMzQ1Njc4OWE=", "shorter than 16"); /* 11 bytes */
	parse_bad("a0123456789abcdef,b0123456789abcdef,c0123456789abcdef,d0123456789abcdef,"
		  "e0123456789abcdef",
		  "at most 4");
	memset(long_raw, 'a', 257);
	long_raw[257] = '\0';
	parse_bad(long_raw, "longer than 256");
	ck_assert_int_eq(sink_sign_standard(&k, "evt_1", 1, "x", 1, sig), -EINVAL);
	ck_assert_int_eq(sink_sign_standard(NULL, "evt_1", 1, "x", 1, sig), -EINVAL);
}
END_TEST

static Suite *sink_sign_suite(void)
{
	Suite *s = suite_create("sink_sign");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_test(tc, test_spec_vector);
	tcase_add_test(tc, test_standard_matches_openssl);
	tcase_add_test(tc, test_rotation_signs_with_each);
	tcase_add_test(tc, test_hookd_matches_openssl);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_invalid);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(sink_sign_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
