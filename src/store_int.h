/* Internals shared by the store_*.c files (the store module). Not for other modules. */
#pragma once

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

enum store_stmt {
	ST_EVENT_BY_KEY,
	ST_EVENT_INSERT,
	ST_PAYMENT_GET,
	ST_PAYMENT_INSERT,
	ST_PAYMENT_UPDATE,
	ST_PAYMENT_SEEN,
	ST_RECEIPT_INSERT,
	ST_OUTBOX_INSERT,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST__COUNT,
};

struct store {
	sqlite3 *db;
	struct store_opts opts;
	char *path;
	char *sinks[STORE_MAX_SINKS];
	bool sink_conflicts[STORE_MAX_SINKS];
	size_t n_sinks;
	int lock_fd;
	sqlite3_stmt *stmts[ST__COUNT];
	char err[256];

	/* hash chain head: committed, and tentative inside the running transaction */
	int64_t last_id, tx_last_id;
	uint8_t last_hash[STORE_HASH_LEN], tx_last_hash[STORE_HASH_LEN];
	size_t tx_new_events;
	uint64_t tx_events_by[4][3];

	/* writer queue */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stopping;
	struct store_req *head, *tail;
	long queue_len;

	void (*commit_hook)(void *arg, size_t new_events);
	void *commit_hook_arg;

	struct store_stats stats;
};

/* Maps an SQLite result code to -errno. */
int store_errno(int rc);
/* The cached prepared statement for id, reset and with bindings cleared. NULL on error. */
sqlite3_stmt *store_stmt(struct store *s, enum store_stmt id);
int store_exec_sql(struct store *s, const char *sql);
/* The event request's apply step (dedupe, chain, payment state, outbox, receipt), for other
 * store_*.c requests that store an event as part of a larger change. Uses r->ev,
 * r->received_at; sets r->event_id, r->duplicate, r->conflict. */
int store_apply_event(struct store *s, struct store_req *r);
/* Small helpers shared by the store_*.c files. */
void store_bind_text_or_null(sqlite3_stmt *st, int i, const char *v); /* "" binds NULL */
void store_bind_int_or_null(sqlite3_stmt *st, int i, long long v, long long absent);
/* Copies a text column (NULL -> "") into out, cut at n-1 bytes. */
void store_col_copy(sqlite3_stmt *st, int col, char *out, size_t n);
int64_t store_col_i64(sqlite3_stmt *st, int col, int64_t absent);
/* Steps a bound statement that returns no rows and resets it: 0 or -errno (err recorded). */
int store_step_done(struct store *s, sqlite3_stmt *st);

/* Options the store was opened with (grace_seconds, reconcile, sinks...). */
static inline const struct store_opts *store_options(const struct store *s)
{
	return &s->opts;
}
void store_set_err(struct store *s, const char *what);

/* store_util.c: for statements prepared per call (finalized, not cached). */
/* store_errno(rc), but -EIO where rc is a success code: for a step that should not have ended
 * there. */
int store_errno_or_eio(int rc);
/* Prepares sql into *ret: 0, or -errno with *ret NULL and "what: <sqlite message>" recorded. */
int store_prepare(struct store *s, const char *sql, sqlite3_stmt **ret, const char *what);
/* Finalizes st; a last step result rc other than ROW or DONE becomes -errno (recorded). */
int store_finish(struct store *s, sqlite3_stmt *st, int rc, const char *what);
/* The columns store_payment_read() expects, in its order. */
#define STORE_PAYMENT_COLUMNS                                                            \
	"payment_id, order_id, payment_type, channel_code, amount, status, expires_at, " \
	"created_at, updated_at, callback_seen_at, last_polled_at, next_poll_at, "       \
	"poll_attempts, origin"
/* Fills p from a row that starts with STORE_PAYMENT_COLUMNS. */
void store_payment_read(sqlite3_stmt *st, struct store_payment *p);
