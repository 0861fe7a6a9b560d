/* Check suite for src/payment.c: status names (parse/name round trip, spellings) and the full
 * transition table, including an UNKNOWN current status. */
#include "payment.h"

#include <check.h>
#include <stddef.h>

static const enum payment_status all[] = {PAYMENT_PENDING, PAYMENT_PAID, PAYMENT_EXPIRED,
					  PAYMENT_CANCELED};
#define N_ALL (sizeof(all) / sizeof(all[0]))

START_TEST(test_name_round_trip)
{
	for (size_t i = 0; i < N_ALL; i++)
		ck_assert_int_eq(payment_status_parse(payment_status_name(all[i])), all[i]);
	ck_assert_str_eq(payment_status_name(PAYMENT_PENDING), "PENDING");
	ck_assert_str_eq(payment_status_name(PAYMENT_PAID), "PAID");
	ck_assert_str_eq(payment_status_name(PAYMENT_EXPIRED), "EXPIRED");
	ck_assert_str_eq(payment_status_name(PAYMENT_CANCELED), "CANCELED");
}
END_TEST

START_TEST(test_parse_spellings)
{
	ck_assert_int_eq(payment_status_parse("paid"), PAYMENT_PAID);
	ck_assert_int_eq(payment_status_parse("Paid"), PAYMENT_PAID);
	ck_assert_int_eq(payment_status_parse("pending"), PAYMENT_PENDING);
	ck_assert_int_eq(payment_status_parse("Expired"), PAYMENT_EXPIRED);
	ck_assert_int_eq(payment_status_parse("canceled"), PAYMENT_CANCELED);
	ck_assert_int_eq(payment_status_parse("CANCELLED"), PAYMENT_CANCELED);
	ck_assert_int_eq(payment_status_parse("Cancelled"), PAYMENT_CANCELED);
	ck_assert_int_eq(payment_status_parse("cancelled"), PAYMENT_CANCELED);
}
END_TEST

START_TEST(test_terminal)
{
	ck_assert(!payment_status_terminal(PAYMENT_PENDING));
	ck_assert(payment_status_terminal(PAYMENT_PAID));
	ck_assert(payment_status_terminal(PAYMENT_EXPIRED));
	ck_assert(payment_status_terminal(PAYMENT_CANCELED));
	ck_assert(!payment_status_terminal(PAYMENT_UNKNOWN));
}
END_TEST

/* Every pair of known statuses: [current][next]. */
static const enum payment_verdict table[4][4] = {
	/*               PENDING           PAID              EXPIRED           CANCELED */
	[PAYMENT_PENDING] = {PAYMENT_SAME, PAYMENT_APPLY, PAYMENT_APPLY, PAYMENT_APPLY},
	[PAYMENT_PAID] = {PAYMENT_CONFLICT, PAYMENT_SAME, PAYMENT_CONFLICT, PAYMENT_CONFLICT},
	[PAYMENT_EXPIRED] = {PAYMENT_CONFLICT, PAYMENT_CONFLICT, PAYMENT_SAME, PAYMENT_CONFLICT},
	[PAYMENT_CANCELED] = {PAYMENT_CONFLICT, PAYMENT_CONFLICT, PAYMENT_CONFLICT, PAYMENT_SAME},
};

START_TEST(test_transition_table)
{
	for (size_t c = 0; c < N_ALL; c++)
		for (size_t n = 0; n < N_ALL; n++)
			ck_assert_msg(payment_transition(all[c], all[n]) == table[c][n],
				      "%s -> %s: got %d, want %d", payment_status_name(all[c]),
				      payment_status_name(all[n]),
				      (int)payment_transition(all[c], all[n]), (int)table[c][n]);
}
END_TEST

START_TEST(test_terminal_never_regresses)
{
	for (size_t c = 0; c < N_ALL; c++) {
		if (!payment_status_terminal(all[c]))
			continue;
		for (size_t n = 0; n < N_ALL; n++)
			if (all[n] != all[c])
				ck_assert_int_eq(payment_transition(all[c], all[n]),
						 PAYMENT_CONFLICT);
	}
}
END_TEST

START_TEST(test_transition_from_unknown)
{
	/* A payment first learned of: any real status applies. */
	for (size_t n = 0; n < N_ALL; n++)
		ck_assert_int_eq(payment_transition(PAYMENT_UNKNOWN, all[n]), PAYMENT_APPLY);
}
END_TEST

START_TEST(test_transition_to_unknown)
{
	/* An unknown new status never moves a known payment. */
	for (size_t c = 0; c < N_ALL; c++)
		ck_assert_int_ne(payment_transition(all[c], PAYMENT_UNKNOWN), PAYMENT_APPLY);
}
END_TEST

START_TEST(test_name_out_of_range)
{
	ck_assert_str_eq(payment_status_name(PAYMENT_UNKNOWN), "UNKNOWN");
	ck_assert_str_eq(payment_status_name((enum payment_status)4), "UNKNOWN");
	ck_assert_str_eq(payment_status_name((enum payment_status)1000), "UNKNOWN");
	ck_assert_str_eq(payment_status_name((enum payment_status) - 7), "UNKNOWN");
}
END_TEST

START_TEST(test_parse_unknown)
{
	static const char *const bad[] = {"",		"UNKNOWN", "REFUNDED", "SETTLEMENT",
					  "PAID ",	" PAID",   "PAIDX",    "PAI",
					  "CANCELLLED", "CANCEL",  "success",  "1"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(payment_status_parse(bad[i]) == PAYMENT_UNKNOWN,
			      "\"%s\" should be UNKNOWN", bad[i]);
	ck_assert_int_eq(payment_status_parse(NULL), PAYMENT_UNKNOWN);
}
END_TEST

Suite *payment_suite(void)
{
	Suite *s = suite_create("payment");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_test(tc, test_name_round_trip);
	tcase_add_test(tc, test_parse_spellings);
	tcase_add_test(tc, test_terminal);
	tcase_add_test(tc, test_transition_table);
	tcase_add_test(tc, test_terminal_never_regresses);
	tcase_add_test(tc, test_transition_from_unknown);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_transition_to_unknown);
	tcase_add_test(tc, test_name_out_of_range);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_parse_unknown);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(payment_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
