/* Outbox of the store module: the rows the forwarder delivers, the write requests that record
 * each delivery's outcome, replay, and the counts and listings for metrics and
 * komerce-hookctl. Queries run on any handle (read-only ones outside the writer thread);
 * write requests go through store_submit() / store_submit_wait() like every other write. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define STORE_OUTBOX_SINK_MAX 32  /* sink name, bytes including NUL (as config_sink.name) */
#define STORE_OUTBOX_ERR_MAX  512 /* last_error is cut to this many bytes including NUL */

enum store_outbox_state {
	STORE_OUTBOX_ANY = 0, /* in filters and counts: every state */
	STORE_OUTBOX_PENDING,
	STORE_OUTBOX_DELIVERED,
	STORE_OUTBOX_DEAD,
};

/* One outbox row joined with its event. */
struct store_outbox_row {
	int64_t id; /* outbox id */
	int64_t event_id;
	char sink[STORE_OUTBOX_SINK_MAX];
	enum store_outbox_state state;
	long attempts;					   /* failed attempts so far */
	int64_t next_attempt_at, created_at, delivered_at; /* unix ms; delivered_at 0 if never */
	char last_error[STORE_OUTBOX_ERR_MAX];		   /* "" when none */
	/* the event */
	char payment_id[EVENT_ID_MAX];
	char order_id[EVENT_ID_MAX]; /* "" when absent */
	enum payment_status status;
	long long amount; /* -1 when absent */
	char source[16];
	bool conflict;
	int64_t received_at; /* unix ms */
	char *raw_json;	     /* NUL-terminated; see the function that returned the row */
	size_t raw_len;
};

const char *store_outbox_state_name(enum store_outbox_state st);

/* The next deliverable rows of sink: pending, due (next_attempt_at <= now_ms), and only the
 * lowest pending outbox id of each payment, so no second event of a payment is handed out
 * before the earlier one was delivered or dead-lettered. Longest due first, at most limit rows.
 * On success *ret_rows is a heap array of *ret_n rows (each raw_json heap too; free all with
 * store_outbox_rows_free) and 0 is returned; -EIO/-EAGAIN on a storage error. Cost: a scan
 * of index outbox_pending that stops after limit heads (rows blocked behind their payment's
 * head are stepped over), one outbox_payment probe per row; the read transaction ends before
 * this returns. */
int store_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
		      struct store_outbox_row **ret_rows, size_t *ret_n)
	__attribute__((warn_unused_result));
void store_outbox_rows_free(struct store_outbox_row *rows, size_t n);

/* Rows of sink (NULL = every sink) in state (STORE_OUTBOX_ANY = all) into *ret. Pending counts
 * use a partial index; other states scan the sink's rows. Returns 0 or -errno. */
int store_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
		       int64_t *ret);

struct store_outbox_filter {
	const char *sink;	       /* NULL = every sink */
	enum store_outbox_state state; /* STORE_OUTBOX_ANY = all */
	int64_t event_id;	       /* 0 = any */
	int64_t after_id;	       /* cursor: outbox id > after_id */
	long limit;		       /* 0 = no limit */
};
/* Calls fn for each matching row in outbox id order (raw_json is valid only during the call);
 * stops early if fn returns non-zero (which is then returned). Returns 0, or -errno. For
 * `komerce-hookctl outbox --dead`: filter {.state = STORE_OUTBOX_DEAD}. */
int store_outbox_list(struct store *s, const struct store_outbox_filter *f,
		      int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);

/* Per-sink totals for `komerce-hookctl outbox` (one call per sink name found in the table, in
 * name order). oldest_pending_at is the created_at of the oldest pending row, 0 if none. */
struct store_outbox_summary {
	char sink[STORE_OUTBOX_SINK_MAX];
	int64_t pending, delivered, dead;
	int64_t oldest_pending_at;
};
int store_outbox_summaries(struct store *s,
			   int (*fn)(void *arg, const struct store_outbox_summary *sum), void *arg);

/* ---- write requests (applied by the writer thread) ---- */

enum store_outbox_verdict {
	STORE_OUTBOX_MARK_DELIVERED, /* state delivered, delivered_at = at */
	STORE_OUTBOX_MARK_RETRY,     /* attempts + 1, next_attempt_at = at, last_error */
	STORE_OUTBOX_MARK_DEAD,	     /* state dead, attempts + 1, last_error, next_attempt_at =
					at (a dead row's next_attempt_at is when it died) */
	STORE_OUTBOX_MARK_POSTPONE,  /* not attempted: next_attempt_at = at, last_error; attempts
					unchanged */
};

struct store_outbox_outcome {
	int64_t outbox_id;
	enum store_outbox_verdict verdict;
	int64_t at;	   /* unix ms: delivery or death time, or the next attempt (retry) */
	const char *error; /* retry/dead: stored (cut) in last_error; borrowed, may be NULL */
};

/* A write request of this module. Embeds struct store_req: submit &r->req. The submitter owns
 * r (and the outcomes array it points to) until done() has run. */
struct store_outbox_req {
	struct store_req req;
	/* outcome requests */
	const struct store_outbox_outcome *outcomes;
	size_t n_outcomes;
	struct store_outbox_outcome one; /* storage for the single-row constructors */
	/* replay */
	int64_t event_id;
	char sink[STORE_OUTBOX_SINK_MAX]; /* "" = every configured sink */
	/* set by the writer before done(): rows changed (outcomes applied to rows still pending,
	 * or outbox rows inserted by a replay) */
	size_t changed;
};

/* Records n outcomes in one request. Only rows still pending change (a stale outcome for a
 * row that was meanwhile delivered or dead-lettered is ignored). */
void store_outbox_req_outcomes(struct store_outbox_req *r, const struct store_outbox_outcome *o,
			       size_t n);
void store_outbox_req_delivered(struct store_outbox_req *r, int64_t outbox_id, int64_t now_ms);
void store_outbox_req_retry(struct store_outbox_req *r, int64_t outbox_id, int64_t next_attempt_at,
			    const char *error);
void store_outbox_req_dead(struct store_outbox_req *r, int64_t outbox_id, int64_t now_ms,
			   const char *error);
/* Re-enqueues event_id: one new pending row (due now) per configured sink of the writer
 * handle (store_opts.sinks), or for sink only (NULL = all). A sink that already has a pending
 * row for the event is skipped, so replaying twice does not deliver twice. The request's
 * result is -ENOENT for an unknown event, -EINVAL for a sink the handle does not know, else 0
 * with the rows inserted in changed. */
void store_outbox_req_replay(struct store_outbox_req *r, int64_t event_id, const char *sink);

/* The retry schedule: milliseconds to wait after the attempts-th failure (attempts >= 1):
 * 1 s * 2^(attempts-1), capped at 10 minutes, with jitter taking 0-25 % off so that rows
 * failed together do not retry together. rnd is any random 32-bit value. Result is in
 * [0.75 * base, base]. Pure. */
int64_t store_outbox_backoff_ms(long attempts, uint32_t rnd);
