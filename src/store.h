/* The only door to persistence (SQLite). Nothing else includes sqlite3.h.
 *
 * One read-write struct store owns the writer thread: every write is a struct store_req
 * handed to store_submit(); the writer applies whatever is queued in one transaction (group
 * commit) and then calls each request's done() with its result. Other threads (reconciler,
 * forwarder, admin API, komerce-hookctl) open their own read-only struct store for queries. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callback.h"

#define STORE_HASH_LEN	32
#define STORE_MAX_SINKS 8

struct store;

struct store_opts {
	const char *path;
	bool readonly;	       /* query handle: no migration, no writer */
	bool synchronous_full; /* PRAGMA synchronous = FULL (else NORMAL) */
	long busy_timeout_ms;
	long batch_max;		    /* most requests per transaction */
	long queue_max;		    /* most requests waiting; store_submit gives -EAGAIN past it */
	long grace_seconds;	    /* reconciler: first poll of a new PENDING payment */
	bool reconcile;		    /* schedule polls for PENDING payments at all */
	const char *const *sinks;   /* outbox: one row per sink per new event */
	const bool *sink_conflicts; /* per sink: conflicting events too (NULL: none do) */
	size_t n_sinks;
};

struct store_req;
typedef void (*store_done_fn)(struct store_req *r);

/* One unit of work for the writer. The submitter owns the memory and must keep it alive until
 * done() has been called (on the writer thread, after commit or rollback). */
struct store_req {
	/* set by the submitter */
	int (*apply)(struct store *s, struct store_req *r); /* internal: set by store_req_* */
	store_done_fn done;
	void *user;
	struct event ev;     /* for event requests */
	int64_t received_at; /* unix ms, 0 = now */
	/* set by the writer before done() */
	int result; /* 0, or -ENOSPC / -EAGAIN / -EIO / -EINVAL / -ESHUTDOWN */
	int64_t event_id;
	bool duplicate;
	bool conflict;
	/* internal */
	struct store_req *next;
	void *priv;
};

/* Opens (creating if needed, read-write) and migrates, or opens read-only. On failure returns
 * -errno and writes one line into err. *ret is set only on success. */
int store_open(const struct store_opts *o, struct store **ret, char *err, size_t err_len)
	__attribute__((warn_unused_result));
/* Stops the writer if running (draining its queue first) and closes. NULL is fine. */
void store_close(struct store *s);

int store_writer_start(struct store *s) __attribute__((warn_unused_result));
/* Refuses new requests, finishes what is queued, joins the writer thread. */
void store_writer_stop(struct store *s);

/* Prepares r as "store this event" (callback, reconcile or api source). */
void store_req_event(struct store_req *r, const struct event *ev);

/* Queues r. Returns 0 (done() will be called), -EAGAIN (queue full) or -ESHUTDOWN. */
int store_submit(struct store *s, struct store_req *r) __attribute__((warn_unused_result));
/* Queues r and waits for its result (for threads that may block). Returns r->result. */
int store_submit_wait(struct store *s, struct store_req *r);

/* Called on the writer thread after each successful commit that stored new events. */
void store_set_commit_hook(struct store *s, void (*fn)(void *arg, size_t new_events), void *arg);

/* Writer statistics for metrics (approximate, lock-free reads). */
struct store_stats {
	uint64_t commits;
	uint64_t commit_failures;
	uint64_t events;
	uint64_t duplicates;
	uint64_t conflicts;
	uint64_t batch_total; /* sum of batch sizes, for the average */
	uint64_t commit_us_total;
	uint64_t commit_us_bucket[12]; /* latency histogram: <=0.5,1,2,5,10,25,50,100,250,500,1000
					  ms, +Inf */
	uint64_t batch_bucket[10];     /* batch size <=1,2,4,8,16,32,64,128,256,+Inf */
	uint64_t events_by[4][3];      /* new events by enum payment_status x enum event_source */
	long queue_len;
};
void store_get_stats(struct store *s, struct store_stats *ret);
extern const double store_commit_bucket_ms[11];
extern const double store_batch_bucket[9];

/* ---- queries (any handle; read-only ones for threads other than the writer) ---- */

struct store_payment {
	char payment_id[EVENT_ID_MAX];
	char order_id[EVENT_ID_MAX];
	char payment_type[32];
	char channel_code[32];
	long long amount; /* -1 when unknown */
	enum payment_status status;
	int64_t expires_at; /* unix s, 0 when unknown */
	int64_t created_at, updated_at, callback_seen_at, last_polled_at, next_poll_at; /* ms, 0 */
	long poll_attempts;
	char origin[16];
};

struct store_event {
	int64_t id;
	char payment_id[EVENT_ID_MAX];
	char order_id[EVENT_ID_MAX];
	enum payment_status status;
	long long amount;
	char source[16];
	bool conflict;
	int64_t received_at;
	char *raw_json; /* heap; freed by the query after the callback returns */
	long receipts;
	uint8_t hash[STORE_HASH_LEN];
};

/* Returns 0 and fills *ret, -ENOENT if unknown, -EIO on a storage error. */
int store_payment_get(struct store *s, const char *payment_id, struct store_payment *ret);

struct store_event_filter {
	const char *payment_id, *order_id, *source;
	enum payment_status status; /* PAYMENT_UNKNOWN = any */
	int64_t since_ms, until_ms; /* 0 = unbounded; until is exclusive */
	int64_t after_id;	    /* cursor: id > after_id */
	long limit;		    /* 0 = no limit */
};
/* Calls fn for each matching event in id order; stops early if fn returns non-zero (which is
 * then returned). Returns 0, or -EIO. */
int store_events_query(struct store *s, const struct store_event_filter *f,
		       int (*fn)(void *arg, const struct store_event *e), void *arg);

int store_count(struct store *s, const char *table, int64_t *ret);

/* Walks the hash chain. Returns 0 with *ret_checked rows when intact; -EBADMSG with
 * *ret_bad_id and a reason in why when not; -EIO on a storage error. */
int store_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		 size_t why_len);

/* The chain hash of an event (exported for tests and the verifier). */
void store_event_hash(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
		      const char *order_id, const char *status, long long amount,
		      const char *source, bool conflict, const char *dedupe_key, const char *raw,
		      size_t raw_len, int64_t received_at, uint8_t out[STORE_HASH_LEN]);

/* The idempotency key of an event: "<payment_id>:<STATUS>" for a fact that agrees with what
 * is known, "<payment_id>:<STATUS>:conflict[:<amount>]" for one that contradicts it. Every key
 * starts with "<payment_id>:", which the payment's event lookups use as a prefix range. */
void store_dedupe_key(const char *payment_id, const char *status, bool conflict, long long amount,
		      char *out, size_t n);

/* Last error text of the handle for log lines (never contains secrets). */
const char *store_errmsg(struct store *s);
