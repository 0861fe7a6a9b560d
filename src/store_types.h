/* Value types of the store interface (store.h): the rows its queries return, their filters,
 * and the inputs of its write requests. Plain data, no behaviour; shared by every backend and
 * every caller. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "payment.h"

#define STORE_HASH_LEN	    32
#define STORE_MAX_SINKS	    8
#define STORE_SINK_NAME_MAX 32	/* sink name, bytes including NUL */
#define STORE_ERR_MAX	    512 /* outbox last_error is cut to this, bytes including NUL */
#define STORE_DETAIL_MAX    256 /* confirmation_detail and a poll's error, bytes with NUL */

/* ---- payments and events ---- */

/* Where a PAID callback stands when komerce.confirm_paid asks a status call to confirm it
 * (payments.confirmation). */
enum store_confirmation {
	STORE_CONFIRM_NONE = 0,	   /* nothing was held for confirmation */
	STORE_CONFIRM_PENDING,	   /* a PAID callback waits for a status call */
	STORE_CONFIRM_CONFIRMED,   /* a status call said PAID: the payment is PAID */
	STORE_CONFIRM_UNCONFIRMED, /* a status call said something else: status unchanged */
};

/* What an event is in the confirmation of a PAID callback (events.confirmation). */
enum store_event_mark {
	STORE_MARK_NONE = 0,
	STORE_MARK_HELD,	/* a PAID callback stored as received, pending confirmation: it did
				   not move the payment and has no outbox row */
	STORE_MARK_CONFIRMED,	/* the status call's PAID that confirmed held_event_id (applied,
				   forwarded like any fact) */
	STORE_MARK_UNCONFIRMED, /* a conflict: the status call that did not confirm held_event_id
				   (status = what Komerce said) */
};

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
	enum store_confirmation confirmation;
	char confirmation_detail[STORE_DETAIL_MAX]; /* why, "" when none */
	int64_t confirmation_at;		    /* ms, when it last changed; 0 */
	int64_t held_event_id;			    /* the PAID callback concerned; 0 */
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
	const char *raw_json; /* valid during the query's callback only */
	long receipts;
	uint8_t hash[STORE_HASH_LEN];
	enum store_event_mark mark;
	int64_t held_event_id; /* CONFIRMED, UNCONFIRMED: the held callback judged; else 0 */
};

struct store_event_filter {
	const char *payment_id, *order_id, *source;
	enum payment_status status; /* PAYMENT_UNKNOWN = any */
	int64_t since_ms, until_ms; /* 0 = unbounded; until is exclusive */
	int64_t after_id;	    /* cursor: id > after_id */
	long limit;		    /* 0 = no limit */
};

struct store_payment_filter {
	enum payment_status status; /* PAYMENT_UNKNOWN = any */
	bool stale;		    /* PENDING with expires_at before now_ms */
	int64_t now_ms;
	long limit; /* 0 = no limit */
};

/* ---- audit statistics ---- */

struct store_sink_stats {
	char sink[STORE_SINK_NAME_MAX];
	int64_t pending, delivered, dead, replayed;
	int64_t oldest_pending_ms; /* created_at of the oldest pending row, 0 when none */
};

struct store_stats {
	int64_t events, receipts, conflicts;
	int64_t events_by_status[4];		      /* indexed by enum payment_status */
	int64_t events_by_source[EVENT_SOURCE_COUNT]; /* indexed by enum event_source */
	int64_t payments, stale;
	int64_t payments_by_status[4];
	int64_t reconciled;	    /* terminal payments whose terminal event came from reconcile */
	int64_t reconciled_late_cb; /* ... of which the callback arrived afterwards */
	int64_t outbox_pending, outbox_delivered, outbox_dead, outbox_replayed;
	struct store_sink_stats sinks[2 * STORE_MAX_SINKS]; /* sinks of the table, by name */
	size_t n_sinks; /* sinks beyond the array are counted in the totals only */
};

/* ---- outbox ---- */

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
	char sink[STORE_SINK_NAME_MAX];
	enum store_outbox_state state;
	long attempts;					   /* failed attempts so far */
	int64_t next_attempt_at, created_at, delivered_at; /* unix ms; delivered_at 0 if never */
	char last_error[STORE_ERR_MAX];			   /* "" when none */
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
	/* a dead row queued again (replay): when, by whom, and what became of the new row */
	int64_t replayed_at; /* unix ms, 0 when never */
	char replayed_by[32];
	enum store_outbox_state replay_state; /* of the newest row that replaced it; ANY: none */
	int64_t replay_delivered_at;	      /* its delivered_at, 0 when not (yet) */
};

struct store_outbox_filter {
	const char *sink;	       /* NULL = every sink */
	enum store_outbox_state state; /* STORE_OUTBOX_ANY = all */
	int64_t event_id;	       /* 0 = any */
	int64_t after_id;	       /* cursor: outbox id > after_id */
	long limit;		       /* 0 = no limit */
};

/* Per-sink totals (one per sink name found in the table, in name order). dead counts the
 * dead letters nobody has dealt with; replayed those queued again since. */
struct store_outbox_summary {
	char sink[STORE_SINK_NAME_MAX];
	int64_t pending, delivered, dead, replayed;
	int64_t oldest_pending_at; /* created_at of the oldest pending row, 0 if none */
};

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

/* ---- reconciler ---- */

enum store_poll_outcome {
	STORE_POLL_OK = 0,	 /* Komerce told the status */
	STORE_POLL_REFUSED,	 /* Komerce answered but not with a status (404, 400, other) */
	STORE_POLL_RATE_LIMITED, /* 429 */
	STORE_POLL_FAILED,	 /* 5xx, timeout, network, unusable reply */
};

/* A watched payment as the scheduler needs it. */
struct store_reconcile_row {
	char payment_id[EVENT_ID_MAX];
	enum payment_status status;
	long long amount;	/* -1 when unknown */
	int64_t expires_at;	/* unix s, 0 when unknown */
	int64_t created_at;	/* unix ms */
	int64_t last_polled_at; /* unix ms, 0 = never */
	int64_t next_poll_at;	/* unix ms */
	long poll_attempts;
	bool confirming; /* a PAID callback waits for this poll (confirmation pending) */
};

/* One change to one payment's schedule, optionally with the status the poll learned. */
struct store_reconcile_update {
	char payment_id[EVENT_ID_MAX];
	bool only_if_watched;	/* apply only while PENDING and watched (a "mark": see below) */
	int64_t last_polled_at; /* ms; 0 = unchanged; never moves backwards */
	int64_t min_gap_ms;	/* > 0 (with last_polled_at): apply only if the stored last poll
				   is at least this much older, so that no two marks of one
				   payment, from any instance, come closer than the minimum */
	bool set_next;		/* false: next_poll_at unchanged */
	int64_t next_poll_at;	/* ms when set_next; 0 = stop watching. A terminal payment is
				   never watched again, whatever this says */
	long poll_attempts;	/* -1 = unchanged */
	int64_t expires_at;	/* unix s: fills an unknown expires_at; 0 = nothing */
	bool has_event;		/* store ev (source reconcile) before the schedule change */
	struct event ev;	/* ev.raw is borrowed until done() */
	/* A poll's result (sent_at > 0): one row of the polls log, and the verdict on a PAID
	 * callback waiting for confirmation. With outcome OK, ev holds Komerce's answer (also
	 * when has_event is false) and komerce_status what it said. */
	int64_t sent_at;		    /* ms: the request left (its mark); 0 = not a result */
	long elapsed_ms;		    /* until the reply (or the failure) */
	enum store_poll_outcome outcome;    /* with sent_at */
	long http_status;		    /* 0 when there was no HTTP reply */
	enum payment_status komerce_status; /* outcome OK; else PAYMENT_UNKNOWN */
	const char *error;		    /* not OK: what went wrong (borrowed until done()) */
	bool confirming;		    /* the row was confirming a PAID callback */
	/* set by the writer */
	bool matched; /* the payment row was updated */
	int64_t event_id;
	bool duplicate, conflict;
	enum store_confirmation verdict; /* CONFIRMED / UNCONFIRMED when this poll decided a
					    pending confirmation, else NONE */
	int64_t held_event_id;		 /* with a verdict: the callback it judged */
	int64_t marker_event_id;	 /* UNCONFIRMED: the conflict event written */
};

/* One status call of the reconciler as the polls log keeps it. */
struct store_poll {
	int64_t id;
	char payment_id[EVENT_ID_MAX];
	int64_t polled_at; /* ms: when the request was sent */
	long elapsed_ms;
	enum store_poll_outcome outcome;
	long http_status;		    /* 0: no HTTP reply */
	enum payment_status komerce_status; /* what Komerce said (outcome OK), else UNKNOWN */
	bool confirming;		    /* it was to confirm a PAID callback */
	char error[STORE_DETAIL_MAX];	    /* "" when none */
};

/* ---- writer statistics (for metrics; approximate, lock-free reads) ---- */

#define STORE_COMMIT_BUCKETS 11 /* <=0.5,1,2,5,10,25,50,100,250,500,1000 ms, then +Inf */
#define STORE_BATCH_BUCKETS  9	/* <=1,2,4,8,16,32,64,128,256, then +Inf */

struct store_writer_stats {
	uint64_t commits;
	uint64_t commit_failures;
	uint64_t batch_retries; /* batches tried without savepoints, applied again with them */
	uint64_t events;
	uint64_t duplicates;
	uint64_t conflicts;
	uint64_t batch_total; /* sum of batch sizes, for the average */
	uint64_t commit_us_total;
	uint64_t commit_us_bucket[STORE_COMMIT_BUCKETS + 1];
	uint64_t batch_bucket[STORE_BATCH_BUCKETS + 1];
	uint64_t events_by[4][EVENT_SOURCE_COUNT]; /* new events by status x source */
	long queue_len;
};
