/* The store: the only door to persistence. Nothing else includes sqlite3.h or libpq-fe.h.
 *
 * A handle is opened in one of three modes. The daemon's WRITER handle owns the writer thread:
 * every write is a struct store_req handed to store_submit(); the writer applies whatever is
 * queued in one transaction (group commit), each request in a savepoint, and then calls each
 * request's done() with its result. Other threads (reconciler, forwarder, admin API) and
 * komerce-hookctl open READER handles of their own for queries; komerce-hookctl's replay opens
 * an ADMIN handle and applies one request in its own transaction (store_apply_now).
 *
 * The backend (SQLite, the embedded default) sits behind store_backend.h; callers never see
 * which one runs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store_types.h"

struct store;

enum store_backend_kind { STORE_BACKEND_SQLITE, STORE_BACKEND_POSTGRESQL };

enum store_mode {
	STORE_MODE_WRITER, /* creates and migrates the schema; one per database; writer thread */
	STORE_MODE_READER, /* queries only */
	STORE_MODE_ADMIN,  /* queries and store_apply_now(); no migration (komerce-hookctl) */
	STORE_MODE_LEADER, /* elections only (store_leader_*): a connection of its own */
};

struct store_sink {
	const char *name;
	bool conflicts; /* also gets events flagged conflict */
};

struct store_opts {
	enum store_backend_kind backend;
	const char *path;     /* SQLite database file */
	const char *url;      /* PostgreSQL: libpq URI (a secret: never in error text or logs) */
	const char *instance; /* names this instance in receipts (and the server's sessions) */
	enum store_mode mode;
	bool synchronous_full; /* SQLite: PRAGMA synchronous = FULL (else NORMAL) */
	long busy_timeout_ms;
	long batch_max;	    /* most requests per transaction */
	long queue_max;	    /* most requests waiting; store_submit gives -EAGAIN past it */
	long grace_seconds; /* reconciler: first poll of a new PENDING payment */
	bool reconcile;	    /* schedule polls for PENDING payments at all */
	bool confirm_paid;  /* hold PAID callbacks until a status call confirms them */
	const struct store_sink *sinks; /* outbox: one row per sink per new event */
	size_t n_sinks;
};

/* Opens (creating and migrating in WRITER mode) the store. On failure returns -errno and
 * writes one line into err; *ret is set only on success. */
int store_open(const struct store_opts *o, struct store **ret, char *err, size_t err_len)
	__attribute__((warn_unused_result));
/* Another handle on the same store as s (same options), in mode: a READER for a thread's
 * queries, typically. */
int store_open_like(struct store *s, enum store_mode mode, struct store **ret, char *err,
		    size_t err_len) __attribute__((warn_unused_result));
/* Stops the writer if running (draining its queue first) and closes. NULL is fine. */
void store_close(struct store *s);
/* Last error text of the handle for log lines (never contains secrets). */
const char *store_errmsg(struct store *s);
/* "sqlite" or "postgresql" (for logs and /readyz). */
const char *store_backend_name(const struct store *s);

/* ---- write requests ---- */

struct store_req;
typedef void (*store_done_fn)(struct store_req *r);

enum store_req_kind {
	STORE_REQ_EVENT,     /* store ev: dedupe, chain, payment state, outbox, receipt */
	STORE_REQ_TRACK,     /* register a PENDING payment from ev (no event); -EEXIST if known */
	STORE_REQ_OUTCOMES,  /* record delivery outcomes of outbox rows still pending */
	STORE_REQ_REPLAY,    /* queue an event again for delivery */
	STORE_REQ_RECONCILE, /* poll schedule changes, each optionally with a learned event */
	STORE_REQ_PRUNE,     /* retention: old receipts and delivered outbox rows, one batch */
};

/* One unit of work. The submitter owns the memory (and anything it points to) until done()
 * has been called (on the writer thread, after commit or rollback). Fill it with one of the
 * store_req_*() constructors, then set done and user. */
struct store_req {
	enum store_req_kind kind;
	store_done_fn done;
	void *user;
	struct event ev;     /* EVENT, TRACK */
	int64_t received_at; /* EVENT, TRACK: unix ms, 0 = now */
	union {
		struct {
			const struct store_outbox_outcome *list;
			size_t n;
			struct store_outbox_outcome one;
		} outcomes;
		struct {
			int64_t event_id;
			char sink[STORE_SINK_NAME_MAX]; /* "" = the handle's sinks */
			char by[32]; /* who asked, recorded on the dead row it replaces */
		} replay;
		struct {
			struct store_reconcile_update *list;
			size_t n;
		} reconcile;
		struct {
			int64_t before_ms;		/* rows older than this (unix ms) */
			long limit;			/* at most this many of each table */
			size_t receipts, outbox, polls; /* set by the writer: rows deleted */
		} prune;
	} u;
	/* set by the writer before done() */
	int result; /* 0, or -ENOSPC / -EAGAIN / -EIO / -EINVAL / -EEXIST / -ENOENT / -ESHUTDOWN */
	int64_t event_id; /* EVENT */
	bool duplicate;	  /* EVENT: the fact was already stored (one more receipt) */
	bool conflict;	  /* EVENT: contradicts what was known (see store_dedupe_key) */
	bool held;	  /* EVENT: a PAID callback stored pending confirmation (confirm_paid) */
	int64_t next_poll_at; /* EVENT, TRACK: the poll this request scheduled (ms), else 0 */
	size_t changed;	      /* OUTCOMES: rows changed; REPLAY: rows queued */
	/* internal */
	struct store_req *next;
	void *priv;
};

void store_req_event(struct store_req *r, const struct event *ev);
void store_req_track(struct store_req *r, const struct event *ev);
/* Only rows still pending change (a stale outcome for a row that was meanwhile delivered or
 * dead-lettered is ignored). o is borrowed. */
void store_req_outcomes(struct store_req *r, const struct store_outbox_outcome *o, size_t n);
void store_req_outcome(struct store_req *r, int64_t outbox_id, enum store_outbox_verdict v,
		       int64_t at, const char *error);
/* One new pending row (due now) per sink of the handle, or for sink only (NULL = all); with a
 * handle that has no sinks, the sinks the event was queued for before. A sink that already
 * has a pending row for the event is skipped. A dead row of the event for that sink is marked
 * replayed (when, and by: who asked, e.g. "komerce-hookctl"), and the new row names it.
 * result: -ENOENT (no such event), -EINVAL (sink unknown to the handle), -ENODATA (no sink
 * to replay to), else 0 with the rows in changed. */
void store_req_replay(struct store_req *r, int64_t event_id, const char *sink, const char *by);
/* Updates applied in order in one savepoint (all or nothing): the "mark polled" write that
 * must commit before a status request is sent (only_if_watched, last_polled_at = now,
 * next_poll_at = the earliest safe re-poll) and poll results (event + schedule). */
void store_req_reconcile(struct store_req *r, struct store_reconcile_update *u, size_t n);
/* One retention batch: at most limit receipts, at most limit delivered outbox rows and at most
 * limit rows of the polls log whose time (received_at, delivered_at, polled_at) is before
 * before_ms, oldest first. The writer runs it in a
 * transaction of its own, so callbacks queued behind it wait one short batch at most. Events
 * (and their hash chain) are never pruned. result -ENOTSUP where the backend cannot prune. */
void store_req_prune(struct store_req *r, int64_t before_ms, long limit);

int store_writer_start(struct store *s) __attribute__((warn_unused_result));
/* Refuses new requests, finishes what is queued, joins the writer thread. */
void store_writer_stop(struct store *s);
/* Queues r. Returns 0 (done() will be called), -EAGAIN (queue full) or -ESHUTDOWN. */
int store_submit(struct store *s, struct store_req *r) __attribute__((warn_unused_result));
/* Queues r and waits for its result (for threads that may block). Returns r->result. */
int store_submit_wait(struct store *s, struct store_req *r);
/* Applies r in a transaction of its own on the calling thread (an ADMIN handle: waits up to
 * busy_timeout_ms for the daemon's writer). Returns r->result; done is not called. */
int store_apply_now(struct store *s, struct store_req *r);
/* Called on the writer thread after each successful commit that stored new events. */
void store_set_commit_hook(struct store *s, void (*fn)(void *arg, size_t new_events), void *arg);
/* Called on the writer thread after each successful commit in which event or track requests
 * scheduled status polls (a payment newly watched, a PAID callback to confirm), with the
 * earliest of them (unix ms): the reconciler's wake-up, whoever stored the fact. The hook runs
 * under the writer's queue lock and must only wake a thread; after this returns, a previous
 * hook is no longer running (NULL removes it). */
void store_set_poll_hook(struct store *s, void (*fn)(void *arg, int64_t due_ms), void *arg);
void store_writer_stats_get(struct store *s, struct store_writer_stats *ret);
extern const double store_commit_bucket_ms[STORE_COMMIT_BUCKETS];
extern const double store_batch_bucket[STORE_BATCH_BUCKETS];

/* ---- queries (any handle; READER handles for threads other than the writer) ----
 * Callback-style queries call fn for each row in order and stop early when fn returns
 * non-zero (which is then returned); otherwise they return 0 or -errno. */

/* 0 and *ret, -ENOENT if unknown, -EIO on a storage error. */
int store_payment_get(struct store *s, const char *payment_id, struct store_payment *ret);
/* Oldest first. */
int store_payments_list(struct store *s, const struct store_payment_filter *f,
			int (*fn)(void *arg, const struct store_payment *p), void *arg);
/* In id order. */
int store_events_query(struct store *s, const struct store_event_filter *f,
		       int (*fn)(void *arg, const struct store_event *e), void *arg);
/* The query plan of the statement store_events_query() runs for f, one row a line: a prepare,
 * never a scan. -ENOTSUP where the backend cannot tell. */
int store_events_plan(struct store *s, const struct store_event_filter *f, char *out,
		      size_t out_len);
/* Rows of table: events, payments, receipts, outbox or polls (-EINVAL for anything else). */
int store_count(struct store *s, const char *table, int64_t *ret);
/* The newest event's id and hash (0 and zeros when there is none): the chain head a
 * checkpoint publishes. -ENOTSUP where the backend cannot tell, -EIO on a storage error. */
int store_chain_head(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN]);
/* Walks the hash chain. 0 with *ret_checked rows when intact; -EBADMSG with *ret_bad_id and a
 * reason in why when not; -EIO on a storage error. */
int store_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		 size_t why_len);
/* Receipts or outbox rows that refer to an event missing from the chain reveal deleted rows,
 * also at the tail where the chain alone cannot tell. 0 when none, -EBADMSG with the smallest
 * missing event id and a reason, or -errno. */
int store_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len);
/* Every figure inside one read transaction, so they agree with each other. */
int store_stats(struct store *s, int64_t now_ms, struct store_stats *ret);
/* A consistent copy of the live store into dest (which must not exist). Returns 0 and the
 * bytes written, or -errno with a line in err (-ENOTSUP where the backend has its own tools). */
int store_backup(struct store *s, const char *dest, int64_t *ret_bytes, char *err, size_t err_len);

/* The tables a copy holds (store_copy): payments, events, receipts, outbox, polls. */
#define STORE_TABLES 5

/* Copies every row of src (payments, events with their ids and hashes, receipts, outbox, the
 * polls log, from one consistent snapshot) into dst, in one transaction of dst; dst must hold no
 * payment and no event yet. The chain is copied as it is: both backends hash the same fields, so
 * dst verifies as src did. progress(arg, table, rows) is called after each table. Returns 0 and the
 * rows copied per table in ret_rows (in that order), or -errno with a line in err: -ENOTEMPTY (dst
 * has data), -ENOTSUP (dst's backend cannot take a copy). */
int store_copy(struct store *src, struct store *dst,
	       void (*progress)(void *arg, const char *table, int64_t rows), void *arg,
	       int64_t ret_rows[STORE_TABLES], char *err, size_t err_len)
	__attribute__((warn_unused_result));

/* The next deliverable rows of sink: pending, due (next_attempt_at <= now_ms), and only the
 * lowest pending outbox id of each payment, so no second event of a payment is handed out
 * before the earlier one was delivered or dead-lettered. Longest due first, at most limit
 * rows. On success *ret_rows is a heap array of *ret_n rows (raw_json heap too; free with
 * store_outbox_rows_free). */
int store_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
		      struct store_outbox_row **ret_rows, size_t *ret_n)
	__attribute__((warn_unused_result));
void store_outbox_rows_free(struct store_outbox_row *rows, size_t n);
/* Rows of sink (NULL = every sink) in state (STORE_OUTBOX_ANY = all). */
int store_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
		       int64_t *ret);
/* In outbox id order; raw_json is valid only during the call. */
int store_outbox_list(struct store *s, const struct store_outbox_filter *f,
		      int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);
int store_outbox_summaries(struct store *s,
			   int (*fn)(void *arg, const struct store_outbox_summary *sum), void *arg);

/* PENDING watched payments with next_poll_at <= now_ms, at most max rows: those whose PAID
 * callback waits for confirmation first, then the others; each group oldest due first. */
int store_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			struct store_reconcile_row *rows, size_t *ret_n);
/* Earliest next_poll_at of a PENDING watched payment into *ret_ms. -ENOENT when none. */
int store_reconcile_next_due(struct store *s, int64_t *ret_ms);
/* Watched payments (next_poll_at set). */
int store_reconcile_watched(struct store *s, int64_t *ret);
/* PENDING payments, and those of them past their expiry (now_s, unix seconds): neither a
 * callback nor a poll settled them. One scan of the payments table (no index serves status):
 * call it rarely. Returns 0 or -errno. */
int store_reconcile_pending(struct store *s, int64_t now_s, int64_t *ret_pending,
			    int64_t *ret_expired);
/* The reconciler's status calls for one payment (the polls log), newest first, at most limit
 * (0 = all). */
int store_polls_list(struct store *s, const char *payment_id, long limit,
		     int (*fn)(void *arg, const struct store_poll *p), void *arg);

/* ---- leadership: jobs that run on one instance at a time ----
 * The reconciler and each sink's forwarder ("reconcile", "forward:<sink>") are elected by
 * name on a LEADER handle. SQLite: one daemon per database file (the writer's lock), so that
 * instance always leads. PostgreSQL: a session-level advisory lock per job on the handle's own
 * connection, with TCP keepalives on both ends, so an instance that dies or is cut off loses
 * every job when its session ends and another instance's next try wins. */

/* 1 when this handle leads job now (or already did), 0 when another instance does, -errno
 * when the store is unreachable (then nothing is led: the next call reconnects). */
int store_leader_try(struct store *s, const char *job) __attribute__((warn_unused_result));
/* Confirms within timeout_ms that the handle's session is alive, so every job it leads is
 * still its own: 0, or -errno (-ETIMEDOUT, -ECONNRESET, ...) and nothing is led any more. */
int store_leader_check(struct store *s, long timeout_ms) __attribute__((warn_unused_result));
/* Gives job up; a no-op for a job not led. */
void store_leader_release(struct store *s, const char *job);

/* ---- pure helpers (store_event.c) ---- */

const char *store_outbox_state_name(enum store_outbox_state st);
enum store_outbox_state store_outbox_state_parse(const char *name); /* ANY when unknown */

/* The idempotency key of an event: "<payment_id>:<STATUS>" for a fact that agrees with what
 * is known, "<payment_id>:<STATUS>:conflict[:<amount>]" for one that contradicts it. Every key
 * starts with "<payment_id>:", which the payment's event lookups use as a prefix range. */
void store_dedupe_key(const char *payment_id, const char *status, bool conflict, long long amount,
		      char *out, size_t n);

/* The key of an event that plays a part in confirming a PAID callback: HELD
 * "<payment_id>:PAID:held[:<amount>]" (a retried callback is its duplicate, while the
 * confirming PAID, a plain "<payment_id>:PAID", is not); UNCONFIRMED
 * "<payment_id>:<STATUS>:unconfirmed:<held_event_id>"; NONE and CONFIRMED as
 * store_dedupe_key without conflict. */
void store_dedupe_key_marked(const char *payment_id, const char *status, enum store_event_mark mark,
			     long long amount, int64_t held_event_id, char *out, size_t n);

/* "held", "confirmed", "unconfirmed" (NULL for NONE) and back (NONE when unknown). */
const char *store_event_mark_name(enum store_event_mark m);
enum store_event_mark store_event_mark_parse(const char *name);
/* "pending", "confirmed", "unconfirmed" (NULL for NONE) and back (NONE when unknown). */
const char *store_confirmation_name(enum store_confirmation c);
enum store_confirmation store_confirmation_parse(const char *name);
/* "ok", "refused", "rate_limited", "failed" and back (FAILED when unknown). */
const char *store_poll_outcome_name(enum store_poll_outcome o);
enum store_poll_outcome store_poll_outcome_parse(const char *name);

/* Whether a poll's result settles a pending confirmation: Komerce told the status, or said
 * it does not know the payment (404) or refused the id (400). Anything else (429, 5xx,
 * timeouts, other statuses) leaves it pending and the poll is retried. */
bool store_confirm_decisive(enum store_poll_outcome outcome, long http_status);
/* The verdict of a decisive poll on a PAID callback held for confirmation (held_amount:
 * the callback's amount, -1 unknown): CONFIRMED when Komerce says PAID and the amounts agree
 * where both are known, else UNCONFIRMED. detail says why, for the payment's
 * confirmation_detail. */
enum store_confirmation store_confirm_verdict(long long held_amount,
					      enum store_poll_outcome outcome, long http_status,
					      enum payment_status komerce_status,
					      long long komerce_amount, char *detail, size_t n);

/* The chain hash of an event: SHA-256 over a version tag, the previous hash and every stored
 * field, each length-prefixed (exported for the verifier and the tests). 0, or -ENOMEM when
 * OpenSSL could not compute it (out a zero hash then: never store it). */
int store_event_hash(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
		     const char *order_id, const char *status, long long amount, const char *source,
		     bool conflict, const char *dedupe_key, const char *raw, size_t raw_len,
		     int64_t received_at, uint8_t out[STORE_HASH_LEN]);
/* The same for an event with a confirmation mark (mark NULL: exactly store_event_hash; else a
 * version 2 tag and the mark and held_event_id hashed after the version 1 fields). */
int store_event_hash_marked(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
			    const char *order_id, const char *status, long long amount,
			    const char *source, bool conflict, const char *dedupe_key,
			    const char *raw, size_t raw_len, int64_t received_at, const char *mark,
			    int64_t held_event_id, uint8_t out[STORE_HASH_LEN]);
