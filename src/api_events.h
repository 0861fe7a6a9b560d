/* GET /v1/events on the admin listener: the audit log with the filters of komerce-hookctl
 * events and cursor pagination. Runs on the admin listener's thread-per-connection threads. */
#pragma once

struct http_request;

#define API_EVENTS_LIMIT_DEFAULT 100
#define API_EVENTS_LIMIT_MAX	 1000
#define API_EVENTS_MAX_BYTES	 (4 * 1024 * 1024) /* a page stops growing past this */

/* Query parameters: payment_id, order_id, status, source, since, until (ISO 8601 or unix
 * seconds; until is exclusive), after_id (cursor), limit (1..1000, default 100); an empty value
 * is the same as none. Replies 200 {"events":[{id, payment_id, order_id, status, amount,
 * source, conflict, received_at (ISO 8601 UTC), receipts, callback (the raw body as an
 * object)}], "next_after_id": N | null}; pass next_after_id as after_id for the next page. 400
 * names the parameter with a bad value; 503 when the database cannot be read.
 *
 * ctx is the daemon's store (struct store *): each request opens its own read-only handle
 * like it and closes it. The handler does no authentication: the caller (api.c) registers it behind
 * the admin bearer-token check. */
void api_events_handler(struct http_request *req, void *ctx);
