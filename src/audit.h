/* The audit log as the admin API and komerce-hookctl present it: the events filter read from
 * text (CLI options, API query parameters), an event as a JSON object, a page of the events
 * API, and the statistics. Pure (no logging); queries go through store.h. */
#pragma once

#include <stddef.h>

#include "store.h"

struct cJSON;

/* Sets one field of f from text. name is the API parameter name: payment_id, order_id,
 * status, source, since, until (ISO 8601 or unix seconds), after_id, limit (>= 1). value is
 * borrowed (must outlive f); an empty value clears the field. Returns 0, or -EINVAL with a
 * short reason (without the name) in why, or -ENOENT for an unknown name. */
int audit_filter_set(struct store_event_filter *f, const char *name, const char *value, char *why,
		     size_t why_len);

/* The event as a JSON object: id, payment_id, order_id, status, amount, source, conflict,
 * received_at (ISO 8601 UTC), receipts, confirmation (held, confirmed, unconfirmed or null),
 * held_event_id (or null), callback (the stored raw body as an object, or a string if it does
 * not parse, or null when empty). NULL on allocation failure. Caller frees with
 * cJSON_Delete. */
struct cJSON *audit_event_json(const struct store_event *e);

/* The payment as a JSON object (times ISO 8601 UTC or null), with its confirmation (pending,
 * confirmed, unconfirmed or null), its detail and time, and held_event_id. NULL on allocation
 * failure. */
struct cJSON *audit_payment_json(const struct store_payment *p);
/* One reconciler status call: id, polled_at, elapsed_ms, outcome, http_status, komerce_status,
 * confirming, error. NULL on allocation failure. */
struct cJSON *audit_poll_json(const struct store_poll *p);
/* Adds key: ISO 8601 UTC of unix ms, or null when ms <= 0. */
void audit_json_time(struct cJSON *o, const char *key, int64_t ms);
/* Adds key: v, or null when v is NULL or empty. */
void audit_json_str_or_null(struct cJSON *o, const char *key, const char *v);

/* One page of the events API: {"status":"ok","events":[...],"next_after_id":N|null}. Stops
 * after f->limit events (100 when 0) or once the body passes max_bytes (at least one event is
 * always included), and sets next_after_id when more rows may follow. Returns 0 and *ret
 * (caller frees), -ENOMEM or the query's -errno. */
int audit_events_page(struct store *s, const struct store_event_filter *f, size_t max_bytes,
		      char **ret);

/* The statistics as `komerce-hookctl stats --format json` and GET /v1/stats show them: events
 * (total, by_status, by_source, conflicts), receipts, duplicates, payments (total, by_status,
 * stale), reconciled (total, callback_missed, callback_late) and outbox (pending, dead (open
 * dead letters), replayed, delivered, sinks: [{sink, pending, dead, replayed, delivered,
 * oldest_pending}]). NULL on allocation failure. Caller frees. */
struct cJSON *audit_stats_json(const struct store_stats *t);
