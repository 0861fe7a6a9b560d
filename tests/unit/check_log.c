/* Check suite for log: the journal entry a line with fields becomes (MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, then PAYMENT_ID= ...; invalid names and empty values left out, limits),
 * $JOURNAL_STREAM matching, and that without journald a line with fields prints exactly what
 * log_msg prints. The entry as journald stores it is checked by tests/journal/check.sh.
 */
#include "log.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int render(int prio, const char *msg, const struct log_field *f, const char **out,
		  size_t out_max)
{
	static char buf[8192];

	return log_journal_render(prio, msg, f, buf, sizeof(buf), out, out_max);
}

START_TEST(test_render_fields)
{
	const char *out[16];
	const struct log_field f[] = {{"PAYMENT_ID", "KPAY-5292/KM/2026"},
				      {"ORDER_ID", "ORD 1\nsecond line"},
				      {"EVENT_ID", "42"},
				      {"SINK", "app"},
				      {NULL, NULL}};
	int n = render(LOG_PRIO_WARNING, "callback conflicts payment_id=\"KPAY-5292/KM/2026\"", f,
		       out, 16);

	ck_assert_int_eq(n, 7);
	ck_assert_str_eq(out[0], "MESSAGE=callback conflicts payment_id=\"KPAY-5292/KM/2026\"");
	ck_assert_str_eq(out[1], "PRIORITY=4");
	ck_assert_str_eq(out[2], "SYSLOG_IDENTIFIER=komerce-hookd");
	ck_assert_str_eq(out[3], "PAYMENT_ID=KPAY-5292/KM/2026");
	/* Values are kept as they are: sd_journal_sendv carries newlines safely. */
	ck_assert_str_eq(out[4], "ORDER_ID=ORD 1\nsecond line");
	ck_assert_str_eq(out[5], "EVENT_ID=42");
	ck_assert_str_eq(out[6], "SINK=app");
}
END_TEST

START_TEST(test_render_skips)
{
	const char *out[16];
	/* NULL or empty values, and names journald would refuse or treat as trusted, are left
	 * out; the line itself is never lost for them. */
	const struct log_field f[] = {
		{"PAYMENT_ID", NULL}, {"ORDER_ID", ""},	  {"_PID", "1"}, {"payment_id", "x"},
		{"9LIVES", "x"},      {"SINK-NAME", "x"}, {"", "x"},	 {"EVENT_ID", "7"},
		{NULL, NULL}};
	int n = render(LOG_PRIO_INFO, "m", f, out, 16);

	ck_assert_int_eq(n, 4);
	ck_assert_str_eq(out[1], "PRIORITY=6");
	ck_assert_str_eq(out[3], "EVENT_ID=7");
	/* No fields at all: the three standard ones. */
	ck_assert_int_eq(render(LOG_PRIO_ERR, "m", NULL, out, 16), 3);
	ck_assert_str_eq(out[1], "PRIORITY=3");
}
END_TEST

START_TEST(test_render_limits)
{
	const char *out[32];
	char big[LOG_FIELD_VALUE_MAX + 100], small[64];
	struct log_field f[LOG_FIELDS_MAX + 3];
	char names[LOG_FIELDS_MAX + 2][16];
	int n;

	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (size_t i = 0; i < LOG_FIELDS_MAX + 2; i++) {
		snprintf(names[i], sizeof(names[i]), "F%zu", i);
		f[i].name = names[i];
		f[i].value = i == 0 ? big : "x";
	}
	f[LOG_FIELDS_MAX + 2].name = NULL;
	f[LOG_FIELDS_MAX + 2].value = NULL;
	n = render(LOG_PRIO_DEBUG, "m", f, out, 32);
	/* At most LOG_FIELDS_MAX fields, each value cut at LOG_FIELD_VALUE_MAX bytes. */
	ck_assert_int_eq(n, 3 + LOG_FIELDS_MAX);
	ck_assert_uint_eq(strlen(out[3]), strlen("F0=") + LOG_FIELD_VALUE_MAX);
	/* Too small a buffer or output array: an error, not a cut entry. */
	ck_assert_int_eq(log_journal_render(4, "message", NULL, small, 10, out, 32), -ENOBUFS);
	ck_assert_int_eq(log_journal_render(4, "message", NULL, small, sizeof(small), out, 2),
			 -ENOBUFS);
	f[0].value = "x";
	ck_assert_int_eq(log_journal_render(4, "m", f, small, sizeof(small), out, 32), -ENOBUFS);
	/* The output array bounds the fields too. */
	ck_assert_int_eq(render(4, "m", f, out, 5), 5);
}
END_TEST

START_TEST(test_journal_stream)
{
	ck_assert(log_journal_stream_matches("8:123456", 8, 123456));
	ck_assert(log_journal_stream_matches("64768:18446744073709551615", 64768,
					     18446744073709551615ULL));
	ck_assert(!log_journal_stream_matches("8:123456", 8, 123457));
	ck_assert(!log_journal_stream_matches("9:123456", 8, 123456));
	ck_assert(!log_journal_stream_matches(NULL, 8, 123456));
	ck_assert(!log_journal_stream_matches("", 0, 0));
	ck_assert(!log_journal_stream_matches("8:", 8, 0));
	ck_assert(!log_journal_stream_matches(":123456", 0, 123456));
	ck_assert(!log_journal_stream_matches("8:123456x", 8, 123456));
	ck_assert(!log_journal_stream_matches("-8:123456", (unsigned long long)-8, 123456));
	ck_assert(!log_journal_stream_matches("8:123456:1", 8, 123456));
}
END_TEST

/* Runs fn with stderr sent to a file and returns what it wrote (static buffer). */
static const char *capture_stderr(void (*fn)(void))
{
	static char got[4096];
	char path[] = "/tmp/check-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(fd, got, sizeof(got) - 1, 0);
	got[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return got;
}

static void write_both(void)
{
	const struct log_field f[] = {{"PAYMENT_ID", "P-1"}, {"EVENT_ID", "9"}, {NULL, NULL}};

	log_msg(LOG_PRIO_WARNING, "forward dead letter sink=%s event_id=%d", "app", 9);
	log_fields(LOG_PRIO_WARNING, f, "forward dead letter sink=%s event_id=%d", "app", 9);
	log_fields(LOG_PRIO_DEBUG, f, "dropped below the level");
}

START_TEST(test_stderr_unchanged)
{
	/* Not under journald (log_init never detected it here): stderr gets the same line for
	 * both calls, with the "<N>" prefix and nothing of the fields. */
	unsetenv("JOURNAL_STREAM");
	ck_assert(!log_init());
	ck_assert_str_eq(capture_stderr(write_both),
			 "<4>forward dead letter sink=app event_id=9\n"
			 "<4>forward dead letter sink=app event_id=9\n");
}
END_TEST

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_test(tc, test_render_fields);
	tcase_add_test(tc, test_journal_stream);
	tcase_add_test(tc, test_stderr_unchanged);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_render_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_render_skips);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(log_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
