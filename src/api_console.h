/* The admin API routes the payments console needs (all behind the admin bearer token):
 *
 *   GET  /v1/payments?q=&status=&stale=&conflict=&limit=&after=   payments, newest first
 *   GET  /v1/outbox?state=&sink=&limit=&after_id=                  outbox rows, oldest first
 *   POST /v1/outbox/replay {"event_id":N,"sink":"NAME"|null}       re-enqueue (the writer)
 *   GET  /v1/stats                                                  komerce-hookctl stats, JSON
 *
 * and the console's part of GET /v1/payments/{id} (receipts, deliveries, reconcile). Handlers
 * run on the admin listener's thread-per-connection threads; reads use a read-only store
 * opened per request, the replay waits for the store writer. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store_console.h"

struct api;
struct cJSON;
struct config;
struct http_route;

#define API_CONSOLE_PAYMENTS_LIMIT_DEFAULT 50
#define API_CONSOLE_PAYMENTS_LIMIT_MAX	   500
#define API_CONSOLE_OUTBOX_LIMIT_DEFAULT   100
#define API_CONSOLE_OUTBOX_LIMIT_MAX	   1000
#define API_CONSOLE_RECEIPTS_MAX	   1000 /* receipts listed with one payment */

/* Writes the routes above into out (at most max); returns how many. ctx of each is a. */
size_t api_console_routes(struct api *a, struct http_route *out, size_t max);

/* Adds to o, the reply of GET /v1/payments/{id} for payment p read on s: "receipts" (every
 * delivery of each event: id, event_id, source, remote_addr, received_at; the first
 * API_CONSOLE_RECEIPTS_MAX, "receipts_truncated" says whether more exist), "deliveries" (the
 * outbox rows of its events: id, event_id, sink, state, attempts, last_error, created_at,
 * next_attempt_at, dead_at, delivered_at, replayed_at, replayed_by) and "reconcile" (watched,
 * last_polled_at, next_poll_at, poll_attempts). Returns 0, -ENOMEM or the store's -errno. */
int api_console_payment_detail(struct store *s, const struct store_payment *p, struct cJSON *o);

/* ---- the request rules (pure, no I/O; unit-tested) ---- */

/* get(arg, name) returns a query parameter or NULL; an empty value is the same as none. On
 * failure each returns -EINVAL with the parameter and the rule it broke (static strings). */

struct api_console_payments_query {
	struct store_console_payment_filter f; /* points into the fields below */
	char q[EVENT_ID_MAX];
	char after_id[EVENT_ID_MAX];
};
/* q (trimmed, 1-127 bytes, no control characters), status, stale and conflict (true/false,
 * 1/0), limit (1-500, default 50), after (a next_after cursor). */
int api_console_payments_params(const char *(*get)(void *arg, const char *name), void *arg,
				struct api_console_payments_query *pq, const char **ret_field,
				const char **ret_rule);

struct api_console_outbox_query {
	struct store_outbox_filter f; /* points into sink */
	char sink[STORE_SINK_NAME_MAX];
};
/* state (pending, delivered, dead), sink (a sink name's characters), limit (1-1000, default
 * 100), after_id (>= 0). */
int api_console_outbox_params(const char *(*get)(void *arg, const char *name), void *arg,
			      struct api_console_outbox_query *oq, const char **ret_field,
			      const char **ret_rule);

/* The replay body {"event_id":N,"sink":"NAME"|null}: event_id a positive integer, sink null
 * (every configured sink) or one of cfg's sinks (*ret_sink then points into cfg). */
int api_console_replay_params(const struct cJSON *body, const struct config *cfg,
			      long long *ret_event_id, const char **ret_sink,
			      const char **ret_field, const char **ret_rule);

/* The payments cursor "<created_at ms>:<payment_id>" (the id may itself contain ':'). Parse
 * returns 0 or -EINVAL. */
void api_console_cursor_format(int64_t created_at, const char *payment_id, char *out, size_t n);
int api_console_cursor_parse(const char *v, int64_t *ret_created_at, char *id, size_t id_len);
