/* The store interface's queries for the payments console (GET /v1/payments and the parts of
 * GET /v1/payments/{id} and GET /v1/outbox that store.h does not answer): payment search by
 * id, order id or VA number, filtered payment listings with a cursor, a payment's receipts and
 * deliveries, the newest event id. Any handle
 * (the admin API opens a READER per request). Like store.h: callback-style queries stop early
 * when fn returns non-zero (which is then returned); otherwise 0 or -errno, -ENOTSUP from a
 * backend that does not implement them. Backends: store_backend.h (console_* entries). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* ---- payments ---- */

struct store_console_payment_filter {
	const char *q;		    /* exact payment_id, order_id or VA number; NULL = any */
	enum payment_status status; /* PAYMENT_UNKNOWN = any */
	bool stale;		    /* PENDING with expires_at before now_ms */
	bool conflict;		    /* with at least one event flagged conflict */
	int64_t now_ms;
	/* Cursor (newest first): rows strictly after (after_created_at, after_payment_id) in
	 * that order. after_payment_id NULL = from the newest. */
	int64_t after_created_at;
	const char *after_payment_id;
	long limit; /* 0 = no limit */
};

enum store_console_match {
	STORE_CONSOLE_MATCH_NONE = 0, /* no q */
	STORE_CONSOLE_MATCH_PAYMENT_ID,
	STORE_CONSOLE_MATCH_ORDER_ID,
	STORE_CONSOLE_MATCH_VA_NUMBER,
};

struct store_console_payment {
	struct store_payment p;
	long conflicts;			/* events of the payment flagged conflict */
	enum store_console_match match; /* which field q matched */
};

const char *store_console_match_name(enum store_console_match m); /* NULL for NONE */

/* Matching payments, newest (created_at, then payment_id) first.
 *
 * Cost (SQLite): a payment_id is a primary-key probe and an order id probes events_order, but
 * payments.order_id has no index and the VA number is not a column (it is read from the raw
 * JSON the events carry: Komerce's create reply, callbacks with va_number, top level or in
 * "data"), so a search also scans payments and every event's raw_json (instr() first, the
 * JSON parse only on a hit). Listings without q scan and sort payments; conflict=true scans
 * events (300k events, 2 busy cores: 0.3-0.5 s a search, 1 s an unfiltered page sorting every
 * payment). An indexed va_number column will replace the raw scan. */
int store_console_payments(struct store *s, const struct store_console_payment_filter *f,
			   int (*fn)(void *arg, const struct store_console_payment *p), void *arg);

/* ---- one payment ---- */

struct store_console_receipt {
	int64_t id, event_id;
	char source[16];
	char remote_addr[64]; /* "" when unknown */
	int64_t received_at;  /* unix ms */
};

/* Every receipt (each delivery of each of the payment's events), oldest first, at most limit
 * (0 = all). SQLite: probes the dedupe_key and receipts_event indexes. */
int store_console_receipts(struct store *s, const char *payment_id, long limit,
			   int (*fn)(void *arg, const struct store_console_receipt *r), void *arg);

/* Every outbox row of the payment's events (all sinks, all states, replays included), in
 * outbox id order; only the outbox columns (replayed_at and replayed_by too), event_id and
 * payment_id are set (raw_json NULL).
 * SQLite: probes the dedupe_key and outbox_event indexes. */
int store_console_deliveries(struct store *s, const char *payment_id,
			     int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);

/* ---- events ---- */

/* The newest event id (0 when there is none): where a live view of the log starts. */
int store_console_last_event_id(struct store *s, int64_t *ret);
