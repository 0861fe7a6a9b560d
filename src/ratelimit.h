/* Request budgets (pure, no clock of its own: every function takes now_ms, so tests inject
 * time): a token bucket for a global rate, a sliding window (at most n events in any window),
 * and a per-key minimum interval (a recent-keys ring that refuses a key used less than
 * min_interval_ms ago). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit_bucket {
	double rate;   /* tokens per second; 0 = nothing is ever allowed */
	double burst;  /* most tokens held */
	double tokens; /* available now (as of last_ms) */
	int64_t last_ms;
};

/* Starts full (burst tokens). burst below 1 is raised to 1. */
void ratelimit_bucket_init(struct ratelimit_bucket *b, double rate, double burst, int64_t now_ms);
/* Changes the rate from now on (tokens earned so far are kept). */
void ratelimit_bucket_set_rate(struct ratelimit_bucket *b, double rate, int64_t now_ms);
/* Takes one token: 0, or -EAGAIN when none is available (nothing taken). */
int ratelimit_take(struct ratelimit_bucket *b, int64_t now_ms);
/* Milliseconds until one token is available (0: now). INT64_MAX when the rate is 0. */
int64_t ratelimit_wait_ms(struct ratelimit_bucket *b, int64_t now_ms);

/* Earliest time a key last used at last_ms may be used again (last_ms 0: never used, 0). */
int64_t ratelimit_interval_next(int64_t last_ms, int64_t min_interval_ms);
bool ratelimit_interval_allows(int64_t last_ms, int64_t min_interval_ms, int64_t now_ms);

/* Recent keys: remembers the last `capacity` uses (a 64-bit hash of the key and the time).
 * Size capacity for rate * min_interval + burst so that no use inside the interval is
 * forgotten; when full the oldest use is dropped. A hash collision can only delay a key. */
struct ratelimit_keys;

/* NULL on allocation failure. Caller frees with ratelimit_keys_free (NULL is fine). */
struct ratelimit_keys *ratelimit_keys_new(size_t capacity, int64_t min_interval_ms);
void ratelimit_keys_free(struct ratelimit_keys *k);
/* 0 when key may be used at now_ms, else the milliseconds still to wait. Records nothing. */
int64_t ratelimit_keys_wait_ms(const struct ratelimit_keys *k, const char *key, int64_t now_ms);
/* Records a use of key at now_ms (times are expected not to go backwards). */
void ratelimit_keys_note(struct ratelimit_keys *k, const char *key, int64_t now_ms);

/* Sliding window: at most max_events events in any window_ms (the bucket smooths the rate,
 * this caps what any one window sees: a bucket with a token to spare after a pause lets
 * rate + 1 requests into one second). Keeps the last max_events times. */
struct ratelimit_window;

/* NULL on allocation failure (or max_events 0). Caller frees (NULL is fine). */
struct ratelimit_window *ratelimit_window_new(size_t max_events, int64_t window_ms);
void ratelimit_window_free(struct ratelimit_window *w);
/* 0 when an event may happen at now_ms, else the milliseconds until one may. */
int64_t ratelimit_window_wait_ms(const struct ratelimit_window *w, int64_t now_ms);
/* Records an event at now_ms (times are expected not to go backwards). */
void ratelimit_window_note(struct ratelimit_window *w, int64_t now_ms);
/* The newest n events happened at now_ms rather than when they were noted (a reservation
 * made good later: only ever moves them later). */
void ratelimit_window_retime(struct ratelimit_window *w, size_t n, int64_t now_ms);
