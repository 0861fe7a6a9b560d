/* Internals of the SQLite backend (store_sqlite*.c), one file per job: store_sqlite.c (the
 * backend table, open, close, transactions), _util (statements, binding, errors), _event (the
 * event and track requests), _outbox, _reconcile, _query (payments, events, counts), _audit
 * (verify, orphans, statistics, query plans), _prune (retention), _migrate (schema versions)
 * and _backup (online copies). Not for other modules. */
#pragma once

#include <sqlite3.h>

#include "store_backend.h"

enum store_sqlite_stmt {
	SQ_EVENT_BY_KEY,
	SQ_EVENT_INSERT,
	SQ_PAYMENT_GET,
	SQ_PAYMENT_INSERT,
	SQ_PAYMENT_UPDATE,
	SQ_PAYMENT_SEEN,
	SQ_PAYMENT_HOLD,
	SQ_PAYMENT_CONFIRM,
	SQ_POLL_INSERT,
	SQ_RECEIPT_INSERT,
	SQ_OUTBOX_INSERT,
	SQ_SAVEPOINT,
	SQ_RELEASE,
	SQ_ROLLBACK_TO,
	SQ_BEGIN,
	SQ_COMMIT,
	SQ_ROLLBACK,
	SQ__COUNT,
};

struct store_sqlite {
	sqlite3 *db;
	int lock_fd; /* WRITER: flock()ed <path>.lock, one writer per database */
	int version; /* schema version: a reader may look at an older database (a backup) */
	sqlite3_stmt *stmts[SQ__COUNT];
	/* hash chain head: committed, inside the transaction, and at the request's savepoint */
	int64_t last_id, tx_last_id, sp_last_id;
	uint8_t last_hash[STORE_HASH_LEN], tx_last_hash[STORE_HASH_LEN],
		sp_last_hash[STORE_HASH_LEN];
};

static inline struct store_sqlite *store_sqlite_of(struct store *s)
{
	return s->impl;
}

static inline sqlite3 *store_sqlite_db(struct store *s)
{
	return ((struct store_sqlite *)s->impl)->db;
}

/* ---- store_sqlite_util.c ---- */

/* Maps an SQLite result code to -errno (0 for OK, ROW and DONE). */
int store_sqlite_errno(int rc);
/* store_sqlite_errno(rc), but -EIO where rc is a success code: for a step that should not
 * have ended there. */
int store_sqlite_errno_or_eio(int rc);
/* Records "what: <sqlite message>" as the handle's last error. */
void store_sqlite_set_err(struct store *s, const char *what);
/* The cached prepared statement for id, reset and with bindings cleared. NULL on error. */
sqlite3_stmt *store_sqlite_stmt(struct store *s, enum store_sqlite_stmt id);
/* Steps a bound statement that returns no rows and resets it: 0 or -errno (err recorded). */
int store_sqlite_step_done(struct store *s, sqlite3_stmt *st);
int store_sqlite_exec(struct store *s, const char *sql);
/* For statements prepared per call (finalized, not cached): 0, or -errno with *ret NULL and
 * the error recorded. */
int store_sqlite_prepare(struct store *s, const char *sql, sqlite3_stmt **ret, const char *what);
/* Finalizes st; a last step result rc other than ROW or DONE becomes -errno (recorded). */
int store_sqlite_finish(struct store *s, sqlite3_stmt *st, int rc, const char *what);
void store_sqlite_bind_text_or_null(sqlite3_stmt *st, int i, const char *v); /* "" binds NULL */
void store_sqlite_bind_int_or_null(sqlite3_stmt *st, int i, long long v, long long absent);
/* Copies a text column (NULL -> "") into out, cut at n-1 bytes. */
void store_sqlite_col_copy(sqlite3_stmt *st, int col, char *out, size_t n);
int64_t store_sqlite_col_i64(sqlite3_stmt *st, int col, int64_t absent);
/* The schema version that added the confirmation columns and the polls log (003). */
#define STORE_SQLITE_V_CONFIRM 3
/* Whether s's database has them (a reader may look at an older backup). */
#define store_sqlite_has_confirm(s) (store_sqlite_of(s)->version >= STORE_SQLITE_V_CONFIRM)
/* The columns store_sqlite_payment_read() expects, in its order: those of schema version 2
 * (confirmation, migration 3) read as NULL from an older database (komerce-hookctl on a backup). */
#define STORE_SQLITE_PAYMENT_COLUMNS_V1                                                  \
	"payment_id, order_id, payment_type, channel_code, amount, status, expires_at, " \
	"created_at, updated_at, callback_seen_at, last_polled_at, next_poll_at, "       \
	"poll_attempts, origin, "
#define STORE_SQLITE_PAYMENT_COLUMNS(s)                                              \
	(store_sqlite_has_confirm(s) ? STORE_SQLITE_PAYMENT_COLUMNS_V1               \
		 "confirmation, confirmation_detail, confirmation_at, held_event_id" \
				     : STORE_SQLITE_PAYMENT_COLUMNS_V1 "NULL, NULL, NULL, NULL")
/* The events columns of migration 3, for table alias a ("" or "e."), as NULLs before. */
#define STORE_SQLITE_EVENT_V2(s, a) \
	(store_sqlite_has_confirm(s) ? a "confirmation, " a "held_event_id" : "NULL, NULL")
#define STORE_SQLITE_PAYMENT_NCOLS 18 /* how many columns STORE_SQLITE_PAYMENT_COLUMNS names */
void store_sqlite_payment_read(sqlite3_stmt *st, struct store_payment *p);
/* Reads the newest event's id and hash into *ret_id / ret_hash (0 and zeros when empty). */
int store_sqlite_chain_head(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN]);

/* ---- store_sqlite_event.c (writer) ---- */

/* The event request (dedupe, chain, payment state, outbox, receipt). */
int store_sqlite_apply_event(struct store *s, struct store_req *r);
/* The payment as the writer's decisions need it (known false when there is none). */
int store_sqlite_payment_state(struct store *s, const char *payment_id,
			       struct store_event_payment *ret);
/* What storing one fact did. */
struct store_sqlite_fact {
	int64_t event_id;
	bool duplicate, conflict, held;
	int64_t next_poll_at; /* a poll it scheduled (ms), 0 */
};
/* Stores ev at now as d decided about the payment cur: dedupe (one more receipt), chain,
 * payment row, outbox rows, receipt. Also the step of a reconcile update that stores what a
 * poll learned, and its UNCONFIRMED marker. */
int store_sqlite_store_fact(struct store *s, const struct event *ev,
			    const struct store_event_decision *d,
			    const struct store_event_payment *cur, int64_t now,
			    struct store_sqlite_fact *ret);
/* Sets the payment's confirmation (state, detail) at now (0: the time stays, for a detail). */
int store_sqlite_set_confirmation(struct store *s, const char *payment_id,
				  enum store_confirmation c, const char *detail, int64_t now);
int store_sqlite_apply_track(struct store *s, struct store_req *r);

/* ---- store_sqlite_outbox.c ---- */

int store_sqlite_apply_outcomes(struct store *s, struct store_req *r);
int store_sqlite_apply_replay(struct store *s, struct store_req *r);
int store_sqlite_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
			     struct store_outbox_row **ret_rows, size_t *ret_n);
int store_sqlite_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
			      int64_t *ret);
int store_sqlite_outbox_list(struct store *s, const struct store_outbox_filter *f,
			     int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);
int store_sqlite_outbox_summaries(struct store *s,
				  int (*fn)(void *arg, const struct store_outbox_summary *sum),
				  void *arg);

/* ---- store_sqlite_reconcile.c ---- */

int store_sqlite_apply_reconcile(struct store *s, struct store_req *r);
int store_sqlite_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			       struct store_reconcile_row *rows, size_t *ret_n);
int store_sqlite_reconcile_next_due(struct store *s, int64_t *ret_ms);
int store_sqlite_reconcile_watched(struct store *s, int64_t *ret);
int store_sqlite_reconcile_pending(struct store *s, int64_t now_s, int64_t *ret_pending,
				   int64_t *ret_expired);
int store_sqlite_polls_list(struct store *s, const char *payment_id, long limit,
			    int (*fn)(void *arg, const struct store_poll *p), void *arg);

/* ---- store_sqlite_query.c ---- */

int store_sqlite_payment_get(struct store *s, const char *payment_id, struct store_payment *ret);
int store_sqlite_payments_list(struct store *s, const struct store_payment_filter *f,
			       int (*fn)(void *arg, const struct store_payment *p), void *arg);
int store_sqlite_events_query(struct store *s, const struct store_event_filter *f,
			      int (*fn)(void *arg, const struct store_event *e), void *arg);
int store_sqlite_count(struct store *s, const char *table, int64_t *ret);

/* ---- store_sqlite_audit.c ---- */

int store_sqlite_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
			size_t why_len);
int store_sqlite_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len);
int store_sqlite_stats(struct store *s, int64_t now_ms, struct store_stats *ret);
int store_sqlite_events_plan(struct store *s, const struct store_event_filter *f, char *out,
			     size_t out_len);

/* ---- store_sqlite_console.c ---- */

int store_sqlite_console_payments(struct store *s, const struct store_console_payment_filter *f,
				  int (*fn)(void *arg, const struct store_console_payment *p),
				  void *arg);
int store_sqlite_console_receipts(struct store *s, const char *payment_id, long limit,
				  int (*fn)(void *arg, const struct store_console_receipt *r),
				  void *arg);
int store_sqlite_console_deliveries(struct store *s, const char *payment_id,
				    int (*fn)(void *arg, const struct store_outbox_row *r),
				    void *arg);
int store_sqlite_console_last_event_id(struct store *s, int64_t *ret);

/* ---- store_sqlite_prune.c (writer) ---- */

int store_sqlite_prune(struct store *s, struct store_req *r);

/* ---- store_sqlite_backup.c ---- */

/* SQLite's online backup API in one step (one snapshot), written as dest.partial, fsynced,
 * renamed into place without replacing anything. */
int store_sqlite_backup(struct store *s, const char *dest, int64_t *ret_bytes, char *err,
			size_t err_len);

/* ---- store_sqlite_dump.c ---- */

int store_sqlite_dump(struct store *s, const struct store_dump_sink *sink);

/* ---- store_sqlite_migrate.c ---- */

/* WRITER: refuses a database newer than the binary before anything writes to it, sets WAL
 * and the synchronous level, backs an existing database up before changing it, and runs the
 * missing migrations, each in its own transaction. */
int store_sqlite_migrate(struct store *s, char *err, size_t err_len);
/* READER / ADMIN: checks that the file is a komerce-hookd database this binary knows. */
int store_sqlite_check_schema(struct store *s, char *err, size_t err_len);
