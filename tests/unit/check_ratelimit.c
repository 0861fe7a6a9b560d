/* Check suite for src/ratelimit.c with an injected clock (no sleeps): the token bucket's
 * rate, burst, refill, rate changes and clock steps; the per-key minimum interval, alone and
 * in the recent-keys ring (including what happens when the ring is too small). */
#include "ratelimit.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define T0 1786529730000LL /* any epoch: the module only looks at differences */

/* Counts the tokens granted when asking every step_ms from start for dur_ms. */
static long granted(struct ratelimit_bucket *b, int64_t start, int64_t dur_ms, int64_t step_ms)
{
	long n = 0;

	for (int64_t t = start; t < start + dur_ms; t += step_ms)
		while (ratelimit_take(b, t) == 0)
			n++;
	return n;
}

START_TEST(test_bucket_starts_with_burst)
{
	struct ratelimit_bucket b;

	ratelimit_bucket_init(&b, 5, 3, T0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0);
	ck_assert_int_eq(ratelimit_take(&b, T0), -EAGAIN);
	ck_assert_int_eq(ratelimit_wait_ms(&b, T0), 200);
}
END_TEST

START_TEST(test_bucket_rate_over_time)
{
	struct ratelimit_bucket b;
	long n;

	/* 5/s with burst 1, asked every millisecond for 10 s: one at once, then one per 200 ms. */
	ratelimit_bucket_init(&b, 5, 1, T0);
	n = granted(&b, T0, 10000, 1);
	ck_assert_int_eq(n, 50);

	/* Fractional rate: 0.5/s is one token per 2 s. */
	ratelimit_bucket_init(&b, 0.5, 1, T0);
	n = granted(&b, T0, 10000, 7);
	ck_assert_int_eq(n, 5);
}
END_TEST

START_TEST(test_bucket_evenly_spaced)
{
	struct ratelimit_bucket b;
	int64_t last = 0;
	long n = 0;

	/* Burst 1: grants are at least 1/rate apart, so no one-second window sees more than
	 * rate + 1 requests. */
	ratelimit_bucket_init(&b, 50, 1, T0);
	for (int64_t t = T0; t < T0 + 5000; t++) {
		if (ratelimit_take(&b, t) == 0) {
			if (last != 0)
				ck_assert_int_ge(t - last, 20);
			last = t;
			n++;
		}
	}
	ck_assert_int_eq(n, 250);
}
END_TEST

START_TEST(test_bucket_wait_matches_take)
{
	struct ratelimit_bucket b;
	int64_t w;

	ratelimit_bucket_init(&b, 3, 1, T0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0);
	w = ratelimit_wait_ms(&b, T0);
	ck_assert_int_eq(w, 334);
	ck_assert_int_eq(ratelimit_take(&b, T0 + w - 1), -EAGAIN);
	ck_assert_int_eq(ratelimit_take(&b, T0 + w), 0);
}
END_TEST

START_TEST(test_bucket_idle_does_not_hoard)
{
	struct ratelimit_bucket b;

	/* An hour idle still leaves only burst tokens: no burst after a quiet spell. */
	ratelimit_bucket_init(&b, 100, 2, T0);
	ck_assert_int_eq(granted(&b, T0, 1, 1), 2);
	ck_assert_int_eq(granted(&b, T0 + 3600000, 1, 1), 2);
}
END_TEST

START_TEST(test_bucket_set_rate)
{
	struct ratelimit_bucket b;

	ratelimit_bucket_init(&b, 10, 1, T0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0);
	/* Slowed to 2/s after 50 ms: half a token was earned at the old rate. */
	ratelimit_bucket_set_rate(&b, 2, T0 + 50);
	ck_assert_int_eq(ratelimit_wait_ms(&b, T0 + 50), 250);
	ck_assert_int_eq(ratelimit_take(&b, T0 + 299), -EAGAIN);
	ck_assert_int_eq(ratelimit_take(&b, T0 + 300), 0);
}
END_TEST

START_TEST(test_bucket_zero_rate)
{
	struct ratelimit_bucket b;

	ratelimit_bucket_init(&b, 0, 1, T0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0); /* the initial burst */
	ck_assert_int_eq(ratelimit_take(&b, T0 + 86400000), -EAGAIN);
	ck_assert(ratelimit_wait_ms(&b, T0 + 86400000) == INT64_MAX);
}
END_TEST

START_TEST(test_bucket_clock_backwards)
{
	struct ratelimit_bucket b;

	ratelimit_bucket_init(&b, 1, 1, T0);
	ck_assert_int_eq(ratelimit_take(&b, T0), 0);
	/* The clock steps back 10 s: no token is invented, and time counts from there. */
	ck_assert_int_eq(ratelimit_take(&b, T0 - 10000), -EAGAIN);
	ck_assert_int_eq(ratelimit_take(&b, T0 - 9001), -EAGAIN);
	ck_assert_int_eq(ratelimit_take(&b, T0 - 9000), 0);
}
END_TEST

START_TEST(test_bucket_bad_params)
{
	struct ratelimit_bucket b;

	ratelimit_bucket_init(&b, -5, 0, T0);
	ck_assert(b.rate == 0);
	ck_assert(b.burst == 1);
}
END_TEST

START_TEST(test_interval)
{
	ck_assert_int_eq(ratelimit_interval_next(0, 3000), 0);
	ck_assert(ratelimit_interval_allows(0, 3000, T0));
	ck_assert_int_eq(ratelimit_interval_next(T0, 3000), T0 + 3000);
	ck_assert(!ratelimit_interval_allows(T0, 3000, T0 + 2999));
	ck_assert(ratelimit_interval_allows(T0, 3000, T0 + 3000));
}
END_TEST

START_TEST(test_keys_interval)
{
	struct ratelimit_keys *k = ratelimit_keys_new(16, 3000);

	ck_assert_ptr_nonnull(k);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KOMPAY-1", T0), 0);
	ratelimit_keys_note(k, "KOMPAY-1", T0);
	ratelimit_keys_note(k, "KPAY-5292/KM/2026", T0 + 1000);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KOMPAY-1", T0 + 1), 2999);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KOMPAY-1", T0 + 2999), 1);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KOMPAY-1", T0 + 3000), 0);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KPAY-5292/KM/2026", T0 + 3000), 1000);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KOMPAY-2", T0 + 1), 0);
	/* The latest use counts. */
	ratelimit_keys_note(k, "KOMPAY-1", T0 + 3500);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "KOMPAY-1", T0 + 4000), 2500);
	ratelimit_keys_free(k);
	ratelimit_keys_free(NULL);
}
END_TEST

START_TEST(test_keys_many)
{
	/* Sized for 100 keys per second over 3 s; every key used once per 3 s exactly is
	 * allowed, and never earlier. */
	struct ratelimit_keys *k = ratelimit_keys_new(400, 3000);
	char key[32];

	ck_assert_ptr_nonnull(k);
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 300; i++) {
			int64_t t = T0 + round * 3000 + i * 10;

			snprintf(key, sizeof(key), "KOMPAY-%d", i);
			ck_assert_int_eq(ratelimit_keys_wait_ms(k, key, t), 0);
			if (round > 0)
				ck_assert_int_eq(ratelimit_keys_wait_ms(k, key, t - 1), 1);
			ratelimit_keys_note(k, key, t);
		}
	}
	ratelimit_keys_free(k);
}
END_TEST

START_TEST(test_keys_ring_too_small)
{
	/* A ring of 2 forgets the oldest use: documented, so it must be sized for the rate. */
	struct ratelimit_keys *k = ratelimit_keys_new(2, 3000);

	ck_assert_ptr_nonnull(k);
	ratelimit_keys_note(k, "a", T0);
	ratelimit_keys_note(k, "b", T0 + 1);
	ck_assert_int_gt(ratelimit_keys_wait_ms(k, "a", T0 + 2), 0);
	ratelimit_keys_note(k, "c", T0 + 2);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "a", T0 + 3), 0);
	ck_assert_int_gt(ratelimit_keys_wait_ms(k, "b", T0 + 3), 0);
	ratelimit_keys_free(k);

	k = ratelimit_keys_new(0, 3000); /* raised to 1 */
	ck_assert_ptr_nonnull(k);
	ratelimit_keys_note(k, "a", T0);
	ck_assert_int_eq(ratelimit_keys_wait_ms(k, "a", T0), 3000);
	ratelimit_keys_free(k);
}
END_TEST

START_TEST(test_window_caps_any_window)
{
	/* 40 per 1000 ms: a bucket that lets one request through at once after a pause and
	 * then one every 25 ms would put 41 into [0, 1000]; the window holds the 41st back. */
	struct ratelimit_window *w = ratelimit_window_new(40, 1000);
	struct ratelimit_bucket b;
	int64_t t = T0, sent[400];
	size_t n = 0;

	ck_assert_ptr_nonnull(w);
	ratelimit_bucket_init(&b, 40, 1, t);
	while (n < sizeof(sent) / sizeof(sent[0])) {
		int64_t wb = ratelimit_wait_ms(&b, t), ww = ratelimit_window_wait_ms(w, t);

		if (wb > 0 || ww > 0) {
			t += wb > ww ? wb : ww;
			continue;
		}
		ck_assert_int_eq(ratelimit_take(&b, t), 0);
		ratelimit_window_note(w, t);
		sent[n++] = t;
		t += (n % 7 == 0) ? 60 : 1; /* the caller is sometimes late */
	}
	/* Any 40 consecutive sends span at least the window, and the rate stays near 40/s. */
	for (size_t i = 40; i < n; i++)
		ck_assert_int_ge(sent[i] - sent[i - 40], 1000);
	ck_assert_int_lt(sent[n - 1] - sent[0], 400 * 1000 / 40 + 2000);
	ratelimit_window_free(w);
}
END_TEST

START_TEST(test_window_wait)
{
	struct ratelimit_window *w = ratelimit_window_new(2, 1000);

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0), 0);
	ratelimit_window_note(w, T0);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0), 0);
	ratelimit_window_note(w, T0 + 100);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 100), 900);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 999), 1);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 1000), 0);
	ratelimit_window_note(w, T0 + 1000);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 1000), 100);
	/* Noted when reserved, then made good later: the window counts the later time. */
	ratelimit_window_retime(w, 1, T0 + 1500);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 1500), 0); /* the older one is out */
	ratelimit_window_note(w, T0 + 1500);
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 1500), 1000);
	ratelimit_window_retime(w, 5, T0 + 1400); /* never earlier */
	ck_assert_int_eq(ratelimit_window_wait_ms(w, T0 + 1500), 1000);
	ratelimit_window_free(w);
	ratelimit_window_free(NULL);
	ck_assert_ptr_null(ratelimit_window_new(0, 1000));
}
END_TEST

static Suite *ratelimit_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_test(tc, test_bucket_starts_with_burst);
	tcase_add_test(tc, test_bucket_rate_over_time);
	tcase_add_test(tc, test_bucket_evenly_spaced);
	tcase_add_test(tc, test_bucket_wait_matches_take);
	tcase_add_test(tc, test_bucket_set_rate);
	tcase_add_test(tc, test_interval);
	tcase_add_test(tc, test_keys_interval);
	tcase_add_test(tc, test_window_wait);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_bucket_idle_does_not_hoard);
	tcase_add_test(tc, test_bucket_zero_rate);
	tcase_add_test(tc, test_keys_many);
	tcase_add_test(tc, test_keys_ring_too_small);
	tcase_add_test(tc, test_window_caps_any_window);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_bucket_clock_backwards);
	tcase_add_test(tc, test_bucket_bad_params);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ratelimit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
