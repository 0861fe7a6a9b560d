/* The seam between the store's common layer (store.c: handles, the writer thread and its
 * group commit, statistics) and a storage backend (store_sqlite*.c). A backend fills a struct
 * store_backend with its functions; store.c calls nothing else of it. Only store*.c include
 * this header. */
#pragma once

#include <pthread.h>

#include "store.h"
#include "store_console.h"

/* The payment a fact is about, as stored (known false: no payments row yet). */
struct store_event_payment {
	bool known;
	enum payment_status status;
	long long amount; /* -1: unknown */
	enum store_confirmation confirmation;
	int64_t held_event_id;	 /* the PAID callback held for confirmation, 0 */
	long long held_amount;	 /* its amount, -1 */
	int64_t confirmation_at; /* unix ms of the last change (pending: when it was held) */
};

/* What a new fact means for its payment: decided from the payment as stored (or its absence)
 * by store_event_decide(), the same for every backend. */
struct store_event_decision {
	bool known;		      /* a payments row exists */
	enum payment_verdict verdict; /* of the state machine (APPLY when unknown) */
	bool conflict;		      /* the state machine refuses it, or the amount differs */
	bool apply;		      /* the payment takes the new status (never for a conflict) */
	bool terminal;		      /* the new status is terminal */
	bool hold;		      /* a PAID callback to confirm (confirm_paid): stored with mark
					 HELD, the payment stays as it is but for its confirmation
					 (pending, polled now), no outbox row */
	enum store_event_mark mark;   /* HELD when hold; the backend may set CONFIRMED */
	int64_t held_event_id;	      /* with CONFIRMED / UNCONFIRMED */
	char key[EVENT_ID_MAX + 48];  /* store_dedupe_key() / store_dedupe_key_marked() */
};

/* cur describes the stored payment. confirm_paid: komerce.confirm_paid. */
void store_event_decide(const struct event *ev, const struct store_event_payment *cur,
			bool confirm_paid, struct store_event_decision *ret);

/* What a poll result does to the payment's confirmation (see store_confirm_decide). */
struct store_confirm_decision {
	enum store_confirmation verdict; /* NONE: nothing changes; PENDING: still waiting (detail
					    updated); CONFIRMED; UNCONFIRMED */
	bool mark_fact;			 /* the poll's PAID event is stored with mark CONFIRMED */
	bool marker;			 /* append the UNCONFIRMED conflict event */
	bool poll_again;		 /* the poll left before the callback came: it decides
					    nothing, and the payment is due again (now) */
	char detail[STORE_DETAIL_MAX];
};

/* A poll result u (sent_at > 0) for the payment cur: a pending confirmation is settled by a
 * decisive result (store_confirm_decisive) of a poll sent after the callback was held (an
 * older one, in flight when it came, may predate the payment: unless it says PAID it settles
 * nothing and the payment is polled again), or stays pending with the failure as its detail; an
 * UNCONFIRMED one becomes CONFIRMED when a later poll says PAID (no second marker). */
void store_confirm_decide(const struct store_event_payment *cur,
			  const struct store_reconcile_update *u,
			  struct store_confirm_decision *ret);
/* The UNCONFIRMED conflict event for u's answer about cur: Komerce's status (the payment's own
 * when Komerce did not tell one), source reconcile, mark UNCONFIRMED; fills ev (raw borrowed
 * from u) and d. */
void store_confirm_marker(const struct store_event_payment *cur,
			  const struct store_reconcile_update *u, struct event *ev,
			  struct store_event_decision *d);

/* A store's five tables as copies see them (store_copy): every column, in this order, as
 * text: NULL for SQL NULL, integers in decimal, booleans 0 or 1, hashes in lowercase hex. */
struct store_table {
	const char *name;
	const char *const *cols;
	size_t n_cols;
	const char *order_by;
};
extern const struct store_table store_tables[STORE_TABLES];

/* Where a dump goes: table() once before each table's rows, row() for each row. */
struct store_dump_sink {
	int (*table)(void *arg, const struct store_table *t);
	int (*row)(void *arg, const struct store_table *t, const char *const *vals);
	void *arg;
};

struct store_backend {
	const char *name;
	/* Opens s->opts as the mode says; sets s->impl. -errno with one line in err. */
	int (*open)(struct store *s, char *err, size_t err_len);
	void (*close)(struct store *s); /* also after a failed open */

	/* The writer's transaction. begin() also reads (or reuses) the hash chain's head;
	 * savepoint()/rollback_to() bracket one request and restore the head with the data. */
	int (*begin)(struct store *s);
	int (*savepoint)(struct store *s);
	int (*release)(struct store *s);
	int (*rollback_to)(struct store *s);
	/* True when a batch of callback events may first be tried without savepoints (they cost
	 * the backend more than a rare whole-batch retry): if one event then fails on its own,
	 * the transaction is rolled back and the batch applied again, a savepoint per event. */
	bool optimistic_events;
	int (*commit)(struct store *s);
	void (*rollback)(struct store *s);
	/* Applies one request inside the transaction: 0, a request error (-EINVAL, -EEXIST,
	 * -ENOENT, -ENODATA: the savepoint is rolled back, the batch goes on) or a storage error
	 * (the whole batch fails). Sets the request's results. */
	int (*apply)(struct store *s, struct store_req *r);
	/* May be NULL. Right after begin(), before the batch is applied request by request: a
	 * chance to read ahead what the batch needs in one go. A failure fails the batch. */
	int (*prefetch)(struct store *s, struct store_req *batch);

	int (*payment_get)(struct store *s, const char *payment_id, struct store_payment *ret);
	int (*payments_list)(struct store *s, const struct store_payment_filter *f,
			     int (*fn)(void *arg, const struct store_payment *p), void *arg);
	int (*events_query)(struct store *s, const struct store_event_filter *f,
			    int (*fn)(void *arg, const struct store_event *e), void *arg);
	int (*events_plan)(struct store *s, const struct store_event_filter *f, char *out,
			   size_t out_len); /* may be NULL */
	int (*count)(struct store *s, const char *table, int64_t *ret);
	int (*verify)(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		      size_t why_len);
	int (*orphans)(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len);
	int (*stats)(struct store *s, int64_t now_ms, struct store_stats *ret);
	int (*backup)(struct store *s, const char *dest, int64_t *ret_bytes, char *err,
		      size_t err_len); /* may be NULL */
	int (*outbox_next)(struct store *s, const char *sink, int64_t now_ms, long limit,
			   struct store_outbox_row **ret_rows, size_t *ret_n);
	int (*outbox_count)(struct store *s, const char *sink, enum store_outbox_state state,
			    int64_t *ret);
	int (*outbox_list)(struct store *s, const struct store_outbox_filter *f,
			   int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);
	int (*outbox_summaries)(struct store *s,
				int (*fn)(void *arg, const struct store_outbox_summary *sum),
				void *arg);
	int (*reconcile_due)(struct store *s, int64_t now_ms, size_t max,
			     struct store_reconcile_row *rows, size_t *ret_n);
	int (*reconcile_next_due)(struct store *s, int64_t *ret_ms);
	int (*reconcile_watched)(struct store *s, int64_t *ret);
	int (*reconcile_pending)(struct store *s, int64_t now_s, int64_t *ret_pending,
				 int64_t *ret_expired);

	/* The payments console (store_console.h); NULL: -ENOTSUP. */
	int (*console_payments)(struct store *s, const struct store_console_payment_filter *f,
				int (*fn)(void *arg, const struct store_console_payment *p),
				void *arg);
	int (*console_receipts)(struct store *s, const char *payment_id, long limit,
				int (*fn)(void *arg, const struct store_console_receipt *r),
				void *arg);
	int (*console_deliveries)(struct store *s, const char *payment_id,
				  int (*fn)(void *arg, const struct store_outbox_row *r),
				  void *arg);
	int (*console_last_event_id)(struct store *s, int64_t *ret);

	/* Optional (NULL: store_chain_head gives -ENOTSUP): the newest event's id and hash. */
	int (*chain_head)(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN]);
	/* Optional (NULL: a prune request gives -ENOTSUP): inside the writer's transaction,
	 * deletes at most limit receipts and at most limit delivered outbox rows older than
	 * before_ms (oldest first; events are never pruned). Sets r->u.prune's counts. */
	int (*prune)(struct store *s, struct store_req *r);

	int (*polls_list)(struct store *s, const char *payment_id, long limit,
			  int (*fn)(void *arg, const struct store_poll *p), void *arg);
	/* Every table in store_tables order, inside one read snapshot. */
	int (*dump)(struct store *s, const struct store_dump_sink *sink);
	/* Inside the writer's transaction (begin/commit): bulk rows for table t, then end (which
	 * also moves the table's id counter past the copied ids). NULL: no copies into it. */
	int (*load_begin)(struct store *s, const struct store_table *t);
	int (*load_row)(struct store *s, const struct store_table *t, const char *const *vals);
	int (*load_end)(struct store *s, const struct store_table *t);
	/* NULL: the only instance, always the leader. */
	int (*leader_try)(struct store *s, const char *job);
	int (*leader_check)(struct store *s, long timeout_ms);
	void (*leader_release)(struct store *s, const char *job);
};

extern const struct store_backend store_backend_sqlite;
extern const struct store_backend store_backend_pg;

/* The handle: the common part, with the backend's own state behind impl. */
struct store {
	const struct store_backend *be;
	void *impl;
	struct store_opts opts; /* strings and sinks below are the handle's own copies */
	char *path;
	char *url;
	char *instance;
	struct store_sink sinks[STORE_MAX_SINKS];
	char sink_names[STORE_MAX_SINKS][STORE_SINK_NAME_MAX];
	char err[256]; /* last error, written by the backend */

	/* writer queue */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stopping;
	struct store_req *head, *tail;
	long queue_len;

	void (*commit_hook)(void *arg, size_t new_events);
	void *commit_hook_arg;
	void (*poll_hook)(void *arg, int64_t due_ms);
	void *poll_hook_arg;
	struct store_writer_stats stats;
};
