/* The admin API's request rules, pure and unit-tested: the bearer token check, payment ids in
 * paths, the reply status for an upstream failure, what the daemon adds to (and refuses in) a
 * create request, and the track request reader. No I/O, no logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "komerce.h"
#include "util.h"

#define API_PAYMENTS_PREFIX "/v1/payments/"

/* SHA-256 of the configured token, kept instead of the token for api_token_valid(). */
void api_token_hash(const char *token, uint8_t out[UTIL_SHA256_LEN]);
/* "Bearer <token>" against the configured token's hash: both sides are hashed first so the
 * comparison is constant-time and independent of the presented token's length. */
bool api_token_valid(const uint8_t want[UTIL_SHA256_LEN], const char *authorization);
/* The payment id in a decoded path "/v1/payments/{id}[suffix]" (libmicrohttpd has already
 * percent-decoded it, so "%2F" arrives as "/"). Returns 0, or -ENOENT when the path does not
 * have that shape or the id is empty, too long or has control characters. */
int api_path_id(const char *url, const char *suffix, char *out, size_t n);
/* Upstream failures: 504 on a timeout, 500 when we ran out of memory, 502 for the rest
 * (Komerce refused, was unreachable, or answered something that is not its envelope). */
unsigned api_upstream_status(enum komerce_err e);
/* The daemon, not the merchant app, decides where Komerce calls back and with which key: a
 * request that names either is refused; the configured URL and the first callback key are
 * filled in (nothing when no callback_url is configured: the reconciler polls instead), the
 * key under both spellings Komerce's documents use (callback_api_key, callback_API_KEY).
 * Returns 0, -EINVAL with field/rule, or -ENOMEM. */
int api_create_prepare(cJSON *request, const char *callback_url, const char *callback_key,
		       char *field, size_t field_len, char *rule, size_t rule_len);
/* Removes anything that could be a callback key from a reply before it is stored or echoed. */
void api_strip_secrets(cJSON *data);
/* True when v is a JSON number holding an integer in [min, max] (checked before any cast: a
 * double out of long long's range must never be converted), stored in *ret. */
bool api_json_integer(const cJSON *v, long long min, long long max, long long *ret);
/* An event the admin API stores (source api), with only the status and payment id set. */
void api_event_init(struct event *ev, enum payment_status status, const char *payment_id);
/* Reads a track request: payment_id, order_id, amount (integer >= 1) and expires_at (unix
 * seconds or ISO 8601) are required; payment_type and channel_code are optional. Returns 0, or
 * -EINVAL with the field and the rule it broke. */
int api_track_parse(const cJSON *body, struct event *ev, char *field, size_t field_len, char *rule,
		    size_t rule_len);
