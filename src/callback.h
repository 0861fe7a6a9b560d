/* Callback authentication and parsing into a struct event. Pure (no logging, no I/O), so it
 * can be unit-tested and fuzzed; called by the HTTP worker threads. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct callback_keys {
	const char *const *keys; /* configured callback_API_KEYs */
	const size_t *lens;
	size_t n;
	bool plain; /* header carries the key itself, not an HMAC */
};

/* Checks the X-Callback-Api-Key header against every key, in constant time per key and
 * without stopping at the first match. Returns 0 when one matches, -EACCES otherwise
 * (including a missing or malformed header). */
int callback_verify(const struct callback_keys *k, const char *header, const void *body,
		    size_t len);

/* Parses a callback body. On success fills *ret (raw points into body) and returns 0. On
 * failure returns -EINVAL and writes a short reason naming the field into why. */
int callback_parse(const char *body, size_t len, struct event *ret, char *why, size_t why_len);
