/* Audit queries of the store module for komerce-hookctl and the admin events API: payment
 * listings, aggregate statistics, replay from outside the daemon, the online backup, the query
 * plan of an events filter, and the JSON form of an event shared by the CLI and the API. Pure:
 * no logging; every function returns 0 (or a count) or -errno. (Outbox listings: store_outbox.h.)
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct cJSON;

#define STORE_AUDIT_MAX_SINKS 16 /* per-sink rows kept by store_audit_stats */

/* ---- events filter, shared by the CLI options and the API query parameters ---- */

/* Sets one field of f from text. name is the API parameter name: payment_id, order_id,
 * status, source, since, until (ISO 8601 or unix seconds), after_id, limit (>= 1). value is
 * borrowed (must outlive f); an empty value clears the field. Returns 0, or -EINVAL with a
 * short reason (without the name) in why, or -ENOENT for an unknown name. */
int store_audit_filter_set(struct store_event_filter *f, const char *name, const char *value,
			   char *why, size_t why_len);

/* The EXPLAIN QUERY PLAN of the statement store_events_query() runs for f, one plan row a line
 * (indented by depth), into out. The statement is captured as the query starts and stopped
 * before it reads a row, so this costs a prepare, never a scan. Returns 0 or -EIO. */
int store_audit_events_plan(struct store *s, const struct store_event_filter *f, char *out,
			    size_t out_len);

/* The event as a JSON object: id, payment_id, order_id, status, amount, source, conflict,
 * received_at (ISO 8601 UTC), receipts, callback (the stored raw body as an object, or a string
 * if it does not parse, or null when empty). NULL on allocation failure. Caller frees with
 * cJSON_Delete. */
struct cJSON *store_audit_event_json(const struct store_event *e);

/* One page of the events API: {"events":[...],"next_after_id":N|null}. Stops after f->limit
 * events or once the body passes max_bytes (at least one event is always included), and sets
 * next_after_id when more rows may follow. Returns 0 and *ret (caller frees), -ENOMEM or the
 * query's -errno. */
int store_audit_events_page(struct store *s, const struct store_event_filter *f, size_t max_bytes,
			    char **ret);

/* ---- payments ---- */

struct store_payment_filter {
	enum payment_status status; /* PAYMENT_UNKNOWN = any */
	bool stale;		    /* PENDING with expires_at before now_ms */
	int64_t now_ms;
	long limit; /* 0 = no limit */
};

/* Calls fn for each matching payment, oldest first; stops early if fn returns non-zero (which
 * is then returned). Returns 0 or -errno. */
int store_audit_payments(struct store *s, const struct store_payment_filter *f,
			 int (*fn)(void *arg, const struct store_payment *p), void *arg);

/* ---- statistics ---- */

struct store_audit_sink_stats {
	char sink[32];
	int64_t pending, delivered, dead;
	int64_t oldest_pending_ms; /* created_at of the oldest pending row, 0 when none */
};

struct store_audit_stats {
	int64_t events, receipts, conflicts;
	int64_t events_by_status[4]; /* indexed by enum payment_status */
	int64_t events_by_source[3]; /* indexed by enum event_source */
	int64_t payments, stale;
	int64_t payments_by_status[4];
	int64_t reconciled;	    /* terminal payments whose terminal event came from reconcile */
	int64_t reconciled_late_cb; /* ... of which the callback arrived afterwards */
	int64_t outbox_pending, outbox_delivered, outbox_dead;
	struct store_audit_sink_stats sinks[STORE_AUDIT_MAX_SINKS];
	size_t n_sinks; /* sinks beyond the array are counted in the totals only */
};

/* Reads every figure inside one read transaction, so they agree with each other. Costs one
 * scan each of events, payments, receipts and outbox (no index serves the groupings: about
 * 0.1 s per 100k events here); the reconciled count probes the dedupe_key index. Returns 0 or
 * -errno. */
int store_audit_stats(struct store *s, int64_t now_ms, struct store_audit_stats *ret);

/* Extra tamper evidence beside store_verify(): receipts or outbox rows that refer to an event
 * missing from the chain reveal deleted rows, including at the tail where the hash chain alone
 * cannot tell. Returns 0 when none, -EBADMSG with the smallest missing event id and a reason,
 * or -errno. */
int store_audit_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len);

/* ---- outbox replay from outside the daemon ---- */

/* The daemon replays through its writer (store_outbox_req_replay); komerce-hookctl cannot open
 * a writer handle while the daemon holds the database lock, so it uses this instead, with the
 * same rules. */
/* Re-enqueues event_id for delivery: one new pending outbox row per sink in sinks, or, when
 * n_sinks is 0, for each sink the event was enqueued for before. A sink that already has a
 * pending row for the event is skipped. Opens path read-write by itself (not through a struct
 * store, and without the daemon's lock file) so that it works while the daemon runs; waits up
 * to busy_timeout_ms for the writer. Returns the number of rows queued, -ENOENT (no such event),
 * -ENODATA (no sink to replay to) or -errno, with a line in err on failure. */
int store_audit_replay(const char *path, int64_t event_id, const char *const *sinks, size_t n_sinks,
		       long busy_timeout_ms, char *err, size_t err_len);

/* ---- backup ---- */

/* Copies the database into dest with SQLite's online backup API in one step: the copy is the
 * snapshot of one read transaction, so it is consistent while the daemon writes (WAL readers
 * do not block the writer). Writes dest.partial, fsyncs, then renames it to dest; refuses
 * (-EEXIST) when dest exists. Returns 0 and the bytes written, or -errno with a line in err. */
int store_audit_backup(struct store *s, const char *dest, int64_t *ret_bytes, char *err,
		       size_t err_len);
