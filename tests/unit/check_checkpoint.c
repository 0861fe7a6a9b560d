/* Check suite for src/checkpoint.c: the text of a checkpoint as the daemon logs it, parsing it
 * back from the command line or a line of journalctl output, and its HMAC. */
#include "checkpoint.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char key[] = "checkpoint-key-0123456789";
static uint8_t hash[STORE_HASH_LEN];
static char hex[2 * STORE_HASH_LEN + 1];

static void setup(void)
{
	for (size_t i = 0; i < STORE_HASH_LEN; i++)
		hash[i] = (uint8_t)(0xa0 + i);
	util_hex(hash, STORE_HASH_LEN, hex);
}

START_TEST(test_format_and_parse_back)
{
	char text[CHECKPOINT_TEXT_MAX], want[CHECKPOINT_TEXT_MAX], line[400];
	struct checkpoint c;

	ck_assert_int_gt(checkpoint_format(1042, hash, NULL, 0, text, sizeof(text)), 0);
	snprintf(want, sizeof(want), "checkpoint=1042:%s", hex);
	ck_assert_str_eq(text, want);
	ck_assert_int_eq(checkpoint_parse(text, &c), 0);
	ck_assert_int_eq(c.id, 1042);
	ck_assert_mem_eq(c.hash, hash, STORE_HASH_LEN);
	ck_assert(!c.has_mac);
	/* signed, inside a journalctl line */
	ck_assert_int_gt(checkpoint_format(1042, hash, key, strlen(key), text, sizeof(text)), 0);
	snprintf(line, sizeof(line),
		 "Nov 30 08:00:00 host komerce-hookd[1]: chain head published reason=periodic "
		 "%s\n",
		 text);
	ck_assert_int_eq(checkpoint_parse(line, &c), 0);
	ck_assert_int_eq(c.id, 1042);
	ck_assert(c.has_mac);
	ck_assert(checkpoint_mac_ok(&c, key, strlen(key)));
	ck_assert(!checkpoint_mac_ok(&c, "another-key-0123456789", 22));
	/* the bare form an operator types */
	snprintf(line, sizeof(line), "  7:%s \n", hex);
	ck_assert_int_eq(checkpoint_parse(line, &c), 0);
	ck_assert_int_eq(c.id, 7);
	ck_assert(!checkpoint_mac_ok(&c, key, strlen(key))); /* no mac at all */
}
END_TEST

START_TEST(test_mac_covers_id_and_hash)
{
	char text[CHECKPOINT_TEXT_MAX];
	struct checkpoint c;

	ck_assert_int_gt(checkpoint_format(5, hash, key, strlen(key), text, sizeof(text)), 0);
	ck_assert_int_eq(checkpoint_parse(text, &c), 0);
	c.id = 6;
	ck_assert(!checkpoint_mac_ok(&c, key, strlen(key)));
	c.id = 5;
	c.hash[0] ^= 1;
	ck_assert(!checkpoint_mac_ok(&c, key, strlen(key)));
}
END_TEST

START_TEST(test_parse_errors)
{
	char line[400];
	struct checkpoint c;

	ck_assert_int_eq(checkpoint_parse("", &c), -ENOENT);
	ck_assert_int_eq(checkpoint_parse("<6>komerce-hookd started version=0.1.0", &c), -ENOENT);
	ck_assert_int_eq(checkpoint_parse("# a comment", &c), -ENOENT);
	ck_assert_int_eq(checkpoint_parse("1042:abcd", &c), -EINVAL);
	snprintf(line, sizeof(line), "0:%s", hex);
	ck_assert_int_eq(checkpoint_parse(line, &c), -EINVAL);
	snprintf(line, sizeof(line), "12x:%s", hex);
	ck_assert_int_eq(checkpoint_parse(line, &c), -EINVAL);
	snprintf(line, sizeof(line), "12:%s trailing", hex);
	ck_assert_int_eq(checkpoint_parse(line, &c), -EINVAL);
	snprintf(line, sizeof(line), "checkpoint=12:%.63sz", hex);
	ck_assert_int_eq(checkpoint_parse(line, &c), -EINVAL);
	snprintf(line, sizeof(line), "checkpoint=12:%s mac=00", hex);
	ck_assert_int_eq(checkpoint_parse(line, &c), -EINVAL);
	ck_assert_int_eq(checkpoint_format(1, hash, NULL, 0, line, 20), -ENOBUFS);
}
END_TEST

static Suite *checkpoint_suite(void)
{
	Suite *s = suite_create("checkpoint");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_format_and_parse_back);
	tcase_add_test(tc, test_mac_covers_id_and_hash);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_parse_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(checkpoint_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
