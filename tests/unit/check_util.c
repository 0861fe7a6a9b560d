/* Check suite for src/util.c: time parsing and formatting, hex, HMAC-SHA256 against the RFC 4231
 * vectors, constant-time compare, and util_read_file's limits. */
#include "util.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T_2026_08_12_101530Z_MS 1786529730000LL

static char tmpdir[PATH_MAX];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_util.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static void write_file(const char *name, const void *data, size_t len, char *ret_path,
		       size_t path_len)
{
	FILE *f;

	snprintf(ret_path, path_len, "%s/%s", tmpdir, name);
	f = fopen(ret_path, "we");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* ---- time ---- */

static int64_t parse_ok(const char *s)
{
	int64_t ms = -42;

	ck_assert_msg(util_parse_time_ms(s, &ms) == 0, "\"%s\" should parse", s);
	return ms;
}

START_TEST(test_parse_time_iso)
{
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30Z"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30.000Z"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12t10:15:30z"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12 10:15:30"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12T10:15"), T_2026_08_12_101530Z_MS - 30000);
	ck_assert_int_eq(parse_ok("1970-01-01T00:00:00Z"), 0);
	ck_assert_int_eq(parse_ok("2000-02-29T23:59:59Z"), 951868799000LL);
}
END_TEST

START_TEST(test_parse_time_fraction)
{
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30.5Z"), T_2026_08_12_101530Z_MS + 500);
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30.12Z"), T_2026_08_12_101530Z_MS + 120);
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30.123Z"), T_2026_08_12_101530Z_MS + 123);
	/* Sub-millisecond digits are dropped, not rounded into the next second. */
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30.123999Z"), T_2026_08_12_101530Z_MS + 123);
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30.999999999Z"), T_2026_08_12_101530Z_MS + 999);
}
END_TEST

START_TEST(test_parse_time_offsets)
{
	/* 17:15:30 in Jakarta (+07:00) is 10:15:30 UTC. */
	ck_assert_int_eq(parse_ok("2026-08-12T17:15:30+07:00"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12T17:15:30+0700"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12T17:15:30.250+07:00"), T_2026_08_12_101530Z_MS + 250);
	ck_assert_int_eq(parse_ok("2026-08-12T08:45:30-01:30"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("2026-08-12T10:15:30+00:00"), T_2026_08_12_101530Z_MS);
	/* Crossing midnight backwards. */
	ck_assert_int_eq(parse_ok("2026-08-13T03:00:00+07:00"), parse_ok("2026-08-12T20:00:00Z"));
}
END_TEST

START_TEST(test_parse_time_date_only)
{
	ck_assert_int_eq(parse_ok("2026-08-12"), 1786492800000LL);
	ck_assert_int_eq(parse_ok("1970-01-01"), 0);
}
END_TEST

START_TEST(test_parse_time_unix_seconds)
{
	ck_assert_int_eq(parse_ok("1786529730"), T_2026_08_12_101530Z_MS);
	ck_assert_int_eq(parse_ok("0"), 0);
	ck_assert_int_eq(parse_ok("253402300799"), 253402300799000LL);
}
END_TEST

START_TEST(test_parse_time_invalid)
{
	static const char *const bad[] = {
		"",
		"abc",
		"12abc",
		"-5",
		"253402300800", /* past 9999-12-31 */
		"99999999999999999999999",
		"2026/08/12",
		"2026-8-12",
		"26-08-12",
		"2026-13-01",
		"2026-00-10",
		"2026-08-00",
		"2026-08-32",
		"2026-08-12T",
		"2026-08-12T1",
		"2026-08-12T10",
		"2026-08-12T25:00:00Z",
		"2026-08-12T10:60:00Z",
		"2026-08-12T10:15:61Z",
		"2026-08-12T10:15:30.Z",
		"2026-08-12T10:15:30+7",
		"2026-08-12T10:15:30+07:0",
		"2026-08-12T10:15:30+24:00",
		"2026-08-12T10:15:30+07:60",
		"2026-08-12T10:15:30Zjunk",
		"2026-08-12T10:15:30 Z",
		"2026-08-12junk",
		"2026-08-12Tx",
	};
	int64_t ms = 12345;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(util_parse_time_ms(bad[i], &ms) == -EINVAL,
			      "\"%s\" should be refused", bad[i]);
	ck_assert_int_eq(util_parse_time_ms(NULL, &ms), -EINVAL);
	ck_assert_int_eq(ms, 12345); /* untouched on failure */
}
END_TEST

START_TEST(test_parse_time_impossible_dates)
{
	int64_t ms;

	/* BUG: util.c util_parse_time_ms only checks day <= 31, so "2026-02-30" is accepted and
	 * silently becomes 2026-03-02 (and 2026-04-31 becomes 2026-05-01). It should be -EINVAL. */
	ck_assert_int_eq(util_parse_time_ms("2026-02-30", &ms), -EINVAL);
	ck_assert_int_eq(util_parse_time_ms("2026-04-31T10:00:00Z", &ms), -EINVAL);
	ck_assert_int_eq(util_parse_time_ms("2026-02-29", &ms), -EINVAL); /* not a leap year */
	ck_assert_int_eq(util_parse_time_ms("2028-02-29", &ms), 0);	  /* leap year */
}
END_TEST

START_TEST(test_iso8601_format)
{
	char buf[32];

	util_iso8601_ms(T_2026_08_12_101530Z_MS, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2026-08-12T10:15:30.000Z");
	util_iso8601_ms(T_2026_08_12_101530Z_MS + 7, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2026-08-12T10:15:30.007Z");
	util_iso8601_ms(0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
	util_iso8601_ms(951868799999LL, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2000-02-29T23:59:59.999Z");
	ck_assert_uint_eq(strlen(buf), 24); /* fits the documented 25-byte buffer */
}
END_TEST

START_TEST(test_iso8601_round_trip)
{
	static const int64_t values[] = {
		0,
		1,
		999,
		951868799999LL,
		T_2026_08_12_101530Z_MS,
		T_2026_08_12_101530Z_MS + 123,
		4102444800000LL, /* 2100-01-01 */
		253402300799999LL,
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		int64_t back = -1;

		util_iso8601_ms(values[i], buf, sizeof(buf));
		ck_assert_int_eq(util_parse_time_ms(buf, &back), 0);
		ck_assert_msg(back == values[i], "%s parsed back as %lld, not %lld", buf,
			      (long long)back, (long long)values[i]);
	}
}
END_TEST

START_TEST(test_iso8601_small_buffer)
{
	char buf[11];

	memset(buf, 'x', sizeof(buf));
	util_iso8601_ms(T_2026_08_12_101530Z_MS, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2026-08-12");
}
END_TEST

START_TEST(test_clocks)
{
	int64_t a = util_mono_ms(), b;

	ck_assert_int_gt(util_now_ms(), 1577836800000LL); /* after 2020-01-01 */
	b = util_mono_ms();
	ck_assert_int_ge(b, a);
}
END_TEST

/* ---- hex ---- */

START_TEST(test_hex)
{
	static const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	char out[2 * sizeof(in) + 1];

	util_hex(in, sizeof(in), out);
	ck_assert_str_eq(out, "00017f80abff");
	util_hex(in, 0, out);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_unhex)
{
	uint8_t out[4];

	ck_assert_int_eq(util_unhex("deadBEEF", 8, out, sizeof(out)), 0);
	ck_assert_uint_eq(out[0], 0xde);
	ck_assert_uint_eq(out[1], 0xad);
	ck_assert_uint_eq(out[2], 0xbe);
	ck_assert_uint_eq(out[3], 0xef);
	ck_assert_int_eq(util_unhex("", 0, out, 0), 0);
}
END_TEST

START_TEST(test_hex_round_trip)
{
	uint8_t in[256], back[256];
	char hex[513];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)i;
	util_hex(in, sizeof(in), hex);
	ck_assert_uint_eq(strlen(hex), 512);
	ck_assert_int_eq(util_unhex(hex, 512, back, sizeof(back)), 0);
	ck_assert_mem_eq(in, back, sizeof(in));
}
END_TEST

START_TEST(test_unhex_invalid)
{
	uint8_t out[4];

	ck_assert_int_eq(util_unhex("deadbee", 7, out, sizeof(out)), -EINVAL);	   /* short */
	ck_assert_int_eq(util_unhex("deadbeef00", 10, out, sizeof(out)), -EINVAL); /* long */
	ck_assert_int_eq(util_unhex("deadbeeg", 8, out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(util_unhex("dead beef", 8, out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(util_unhex("0x00beef", 8, out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(util_unhex("de\0dbeef", 8, out, sizeof(out)), -EINVAL);
}
END_TEST

/* ---- HMAC ---- */

static void hmac_hex(const void *key, size_t key_len, const void *data, size_t len, char *out)
{
	uint8_t mac[UTIL_SHA256_LEN];

	ck_assert_int_eq(util_hmac_sha256(key, key_len, data, len, mac), 0);
	util_hex(mac, sizeof(mac), out);
}

START_TEST(test_hmac_rfc4231)
{
	char hex[2 * UTIL_SHA256_LEN + 1];
	uint8_t key1[20], key3[20], data3[50];

	/* Test case 2: key "Jefe". */
	hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
	ck_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	/* Test case 1: key 20 x 0x0b, "Hi There". */
	memset(key1, 0x0b, sizeof(key1));
	hmac_hex(key1, sizeof(key1), "Hi There", 8, hex);
	ck_assert_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	/* Test case 3: key 20 x 0xaa, data 50 x 0xdd. */
	memset(key3, 0xaa, sizeof(key3));
	memset(data3, 0xdd, sizeof(data3));
	hmac_hex(key3, sizeof(key3), data3, sizeof(data3), hex);
	ck_assert_str_eq(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
}
END_TEST

START_TEST(test_hmac_long_key_and_empty_data)
{
	char hex[2 * UTIL_SHA256_LEN + 1];
	uint8_t key[131];

	/* RFC 4231 test case 6: a key longer than the block size is hashed first. */
	memset(key, 0xaa, sizeof(key));
	hmac_hex(key, sizeof(key), "Test Using Larger Than Block-Size Key - Hash Key First", 54,
		 hex);
	ck_assert_str_eq(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	/* Empty body: a valid (if useless) input, well defined. */
	hmac_hex("key", 3, "", 0, hex);
	ck_assert_str_eq(hex, "5d5d139563c95b5967b9bd9a8c9b233a9dedb45072794cd232dc1b74832607d0");
}
END_TEST

/* Each thread keeps one MAC context: a call with another key, an empty or a NULL key never
 * reuses the key of the call before, on this thread or another. */
static void *hmac_alternating(void *arg)
{
	char hex[2 * UTIL_SHA256_LEN + 1];
	uint8_t key1[20];
	long bad = 0;

	(void)arg;
	memset(key1, 0x0b, sizeof(key1));
	for (int i = 0; i < 2000; i++) {
		hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
		bad += strcmp(hex,
			      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") !=
		       0;
		hmac_hex(key1, sizeof(key1), "Hi There", 8, hex);
		bad += strcmp(hex,
			      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7") !=
		       0;
	}
	return (void *)bad;
}

START_TEST(test_hmac_key_changes_and_threads)
{
	char hex[2 * UTIL_SHA256_LEN + 1];
	pthread_t t[2];
	void *bad;

	hmac_hex("Jefe", 4, "Hi There", 8, hex);
	hmac_hex("", 0, "", 0, hex);
	ck_assert_str_eq(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
	hmac_hex("Jefe", 4, "Hi There", 8, hex);
	hmac_hex(NULL, 0, "Hi There", 8, hex);
	ck_assert_str_eq(hex, "e48411262715c8370cd5e7bf8e82bef53bd53712d007f3429351843b77c7bb9b");
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, hmac_alternating, NULL), 0);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(pthread_join(t[i], &bad), 0);
		ck_assert_ptr_null(bad);
	}
	ck_assert_ptr_null(hmac_alternating(NULL));
}
END_TEST

START_TEST(test_ct_equal)
{
	ck_assert(util_ct_equal("abcdef", "abcdef", 6));
	ck_assert(!util_ct_equal("abcdef", "abcdeg", 6));
	ck_assert(!util_ct_equal("Abcdef", "abcdef", 6));
	ck_assert(util_ct_equal("abc", "abd", 2));
	ck_assert(util_ct_equal("x", "y", 0));
}
END_TEST

/* ---- util_read_file ---- */

START_TEST(test_read_file)
{
	char path[PATH_MAX], *s = NULL;

	write_file("secret", "s3cr3t-value\n", 13, path, sizeof(path));
	ck_assert_int_eq(util_read_file(path, 1024, &s), 0);
	ck_assert_str_eq(s, "s3cr3t-value");
	free(s);

	write_file("crlf", "line1\nline2\r\n\r\n", 15, path, sizeof(path));
	ck_assert_int_eq(util_read_file(path, 1024, &s), 0);
	ck_assert_str_eq(s, "line1\nline2");
	free(s);

	write_file("empty", "", 0, path, sizeof(path));
	ck_assert_int_eq(util_read_file(path, 1024, &s), 0);
	ck_assert_str_eq(s, "");
	free(s);

	write_file("spaces", "  keep  ", 8, path, sizeof(path));
	ck_assert_int_eq(util_read_file(path, 1024, &s), 0);
	ck_assert_str_eq(s, "  keep  ");
	free(s);
}
END_TEST

START_TEST(test_read_file_limit)
{
	char path[PATH_MAX], *s = NULL, buf[100];

	memset(buf, 'k', sizeof(buf));
	write_file("hundred", buf, sizeof(buf), path, sizeof(path));
	ck_assert_int_eq(util_read_file(path, 100, &s), 0);
	ck_assert_uint_eq(strlen(s), 100);
	free(s);
	s = NULL;
	ck_assert_int_eq(util_read_file(path, 99, &s), -EFBIG);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(util_read_file(path, 0, &s), -EFBIG);
	ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_read_file_large)
{
	char path[PATH_MAX], *s = NULL;
	size_t n = 200 * 1024;
	char *big = malloc(n);

	ck_assert_ptr_nonnull(big);
	memset(big, 'b', n);
	write_file("big", big, n, path, sizeof(path));
	free(big);
	ck_assert_int_eq(util_read_file(path, 64 * 1024, &s), -EFBIG);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(util_read_file(path, n, &s), 0);
	ck_assert_uint_eq(strlen(s), n);
	free(s);
}
END_TEST

START_TEST(test_read_file_errors)
{
	char path[PATH_MAX], *s = NULL;

	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	ck_assert_int_eq(util_read_file(path, 1024, &s), -ENOENT);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(util_read_file(tmpdir, 1024, &s), -EISDIR);
	ck_assert_ptr_null(s);
	if (geteuid() != 0) {
		write_file("unreadable", "x", 1, path, sizeof(path));
		ck_assert_int_eq(chmod(path, 0), 0);
		ck_assert_int_eq(util_read_file(path, 1024, &s), -EACCES);
		ck_assert_ptr_null(s);
	}
}
END_TEST

Suite *util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_parse_time_iso);
	tcase_add_test(tc, test_parse_time_fraction);
	tcase_add_test(tc, test_parse_time_offsets);
	tcase_add_test(tc, test_parse_time_date_only);
	tcase_add_test(tc, test_parse_time_unix_seconds);
	tcase_add_test(tc, test_iso8601_format);
	tcase_add_test(tc, test_iso8601_round_trip);
	tcase_add_test(tc, test_clocks);
	tcase_add_test(tc, test_hex);
	tcase_add_test(tc, test_unhex);
	tcase_add_test(tc, test_hex_round_trip);
	tcase_add_test(tc, test_hmac_rfc4231);
	tcase_add_test(tc, test_hmac_long_key_and_empty_data);
	tcase_add_test(tc, test_hmac_key_changes_and_threads);
	tcase_add_test(tc, test_ct_equal);
	tcase_add_test(tc, test_read_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_iso8601_small_buffer);
	tcase_add_test(tc, test_read_file_limit);
	tcase_add_test(tc, test_read_file_large);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_parse_time_invalid);
	tcase_add_test(tc, test_parse_time_impossible_dates);
	tcase_add_test(tc, test_unhex_invalid);
	tcase_add_test(tc, test_read_file_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(util_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
