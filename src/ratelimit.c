/* Token bucket, sliding window and per-key minimum interval, for the reconciler's request
 * budget. Pure: no
 * clock (callers pass now_ms), no logging, no locking. Each structure belongs to one thread
 * (the reconciler thread); unit tests drive it with an injected clock. */
#include "ratelimit.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

static void refill(struct ratelimit_bucket *b, int64_t now_ms)
{
	if (now_ms > b->last_ms) {
		b->tokens += b->rate * (double)(now_ms - b->last_ms) / 1000.0;
		if (b->tokens > b->burst)
			b->tokens = b->burst;
		b->last_ms = now_ms;
	} else if (now_ms < b->last_ms) {
		/* Clock went backwards: restart the accounting from here, keep the tokens. */
		b->last_ms = now_ms;
	}
}

void ratelimit_bucket_init(struct ratelimit_bucket *b, double rate, double burst, int64_t now_ms)
{
	b->rate = rate > 0 && isfinite(rate) ? rate : 0;
	b->burst = burst >= 1 && isfinite(burst) ? burst : 1;
	b->tokens = b->burst;
	b->last_ms = now_ms;
}

void ratelimit_bucket_set_rate(struct ratelimit_bucket *b, double rate, int64_t now_ms)
{
	refill(b, now_ms);
	b->rate = rate > 0 && isfinite(rate) ? rate : 0;
}

int ratelimit_take(struct ratelimit_bucket *b, int64_t now_ms)
{
	refill(b, now_ms);
	/* A tiny epsilon absorbs rounding: 5/s for 200 ms must give exactly one token. */
	if (b->tokens + 1e-9 < 1.0)
		return -EAGAIN;
	b->tokens -= 1.0;
	if (b->tokens < 0)
		b->tokens = 0;
	return 0;
}

int64_t ratelimit_wait_ms(struct ratelimit_bucket *b, int64_t now_ms)
{
	double missing;

	refill(b, now_ms);
	if (b->tokens + 1e-9 >= 1.0)
		return 0;
	if (b->rate <= 0)
		return INT64_MAX;
	missing = 1.0 - b->tokens;
	return (int64_t)ceil(missing * 1000.0 / b->rate - 1e-6);
}

int64_t ratelimit_interval_next(int64_t last_ms, int64_t min_interval_ms)
{
	if (last_ms <= 0)
		return 0;
	return last_ms + min_interval_ms;
}

bool ratelimit_interval_allows(int64_t last_ms, int64_t min_interval_ms, int64_t now_ms)
{
	return now_ms >= ratelimit_interval_next(last_ms, min_interval_ms);
}

/* ---- recent keys ---- */

struct ratelimit_use {
	uint64_t hash;
	int64_t at_ms;
};

struct ratelimit_keys {
	int64_t min_interval_ms;
	size_t cap, n, head; /* head: next slot to write; entries are in time order */
	struct ratelimit_use uses[];
};

static uint64_t key_hash(const char *key)
{
	/* FNV-1a: well spread for short ids, and collisions only delay a poll. */
	uint64_t h = 1469598103934665603ULL;

	for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
		h ^= *p;
		h *= 1099511628211ULL;
	}
	return h;
}

struct ratelimit_keys *ratelimit_keys_new(size_t capacity, int64_t min_interval_ms)
{
	struct ratelimit_keys *k;

	if (capacity == 0)
		capacity = 1;
	if (capacity > ((size_t)-1 - sizeof(*k)) / sizeof(struct ratelimit_use))
		return NULL;
	k = calloc(1, sizeof(*k) + capacity * sizeof(struct ratelimit_use));
	if (k == NULL)
		return NULL;
	k->cap = capacity;
	k->min_interval_ms = min_interval_ms;
	return k;
}

void ratelimit_keys_free(struct ratelimit_keys *k)
{
	free(k);
}

int64_t ratelimit_keys_wait_ms(const struct ratelimit_keys *k, const char *key, int64_t now_ms)
{
	uint64_t h = key_hash(key);

	/* Newest first; stop at the first use older than the interval (older ones are too). */
	for (size_t i = 0; i < k->n; i++) {
		const struct ratelimit_use *u = &k->uses[(k->head + k->cap - 1 - i) % k->cap];
		int64_t until = u->at_ms + k->min_interval_ms;

		if (until <= now_ms)
			break;
		if (u->hash == h)
			return until - now_ms;
	}
	return 0;
}

void ratelimit_keys_note(struct ratelimit_keys *k, const char *key, int64_t now_ms)
{
	k->uses[k->head] = (struct ratelimit_use){.hash = key_hash(key), .at_ms = now_ms};
	k->head = (k->head + 1) % k->cap;
	if (k->n < k->cap)
		k->n++;
}

/* ---- sliding window ---- */

struct ratelimit_window {
	int64_t window_ms;
	size_t cap, n, head; /* head: next slot to write (the oldest once full) */
	int64_t at[];
};

struct ratelimit_window *ratelimit_window_new(size_t max_events, int64_t window_ms)
{
	struct ratelimit_window *w;

	if (max_events == 0 || max_events > ((size_t)-1 - sizeof(*w)) / sizeof(int64_t))
		return NULL;
	w = calloc(1, sizeof(*w) + max_events * sizeof(int64_t));
	if (w == NULL)
		return NULL;
	w->cap = max_events;
	w->window_ms = window_ms;
	return w;
}

void ratelimit_window_free(struct ratelimit_window *w)
{
	free(w);
}

int64_t ratelimit_window_wait_ms(const struct ratelimit_window *w, int64_t now_ms)
{
	int64_t until;

	if (w->n < w->cap)
		return 0;
	/* Full: the oldest of the last cap events must have left the window. */
	until = w->at[w->head] + w->window_ms;
	return until > now_ms ? until - now_ms : 0;
}

void ratelimit_window_note(struct ratelimit_window *w, int64_t now_ms)
{
	w->at[w->head] = now_ms;
	w->head = (w->head + 1) % w->cap;
	if (w->n < w->cap)
		w->n++;
}

void ratelimit_window_retime(struct ratelimit_window *w, size_t n, int64_t now_ms)
{
	if (n > w->n)
		n = w->n;
	for (size_t i = 0; i < n; i++) {
		int64_t *at = &w->at[(w->head + w->cap - 1 - i) % w->cap];

		if (*at < now_ms)
			*at = now_ms;
	}
}
