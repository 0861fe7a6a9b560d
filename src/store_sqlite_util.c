/* Small helpers of the SQLite backend: the cached statements of the ingest path, statements
 * prepared per call, binding and reading columns, errors mapped to -errno and recorded for
 * log lines, and the hash chain's head. Called on whichever thread owns the handle. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const stmt_sql[SQ__COUNT] = {
	[SQ_EVENT_BY_KEY] = "SELECT id, conflict, confirmation FROM events WHERE dedupe_key = ?1",
	[SQ_EVENT_INSERT] = "INSERT INTO events (id, payment_id, order_id, status, amount, source, "
			    "conflict, dedupe_key, raw_json, received_at, prev_hash, hash, "
			    "confirmation, held_event_id) "
			    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
	/* The held callback's amount by its id: a rowid lookup, only when one is held. */
	[SQ_PAYMENT_GET] = "SELECT status, amount, confirmation, held_event_id, "
			   "(SELECT e.amount FROM events e WHERE e.id = p.held_event_id), "
			   "confirmation_at FROM payments p WHERE payment_id = ?1",
	[SQ_PAYMENT_INSERT] =
		"INSERT INTO payments (payment_id, order_id, payment_type, channel_code, amount, "
		"status, expires_at, created_at, updated_at, callback_seen_at, next_poll_at, "
		"origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11)",
	[SQ_PAYMENT_UPDATE] =
		"UPDATE payments SET status = ?2, updated_at = ?3, "
		"order_id = COALESCE(order_id, ?4), payment_type = COALESCE(payment_type, ?5), "
		"channel_code = COALESCE(channel_code, ?6), amount = COALESCE(amount, ?7), "
		"callback_seen_at = COALESCE(?8, callback_seen_at), "
		"expires_at = COALESCE(expires_at, ?10), "
		"next_poll_at = CASE WHEN ?9 THEN NULL ELSE next_poll_at END "
		"WHERE payment_id = ?1",
	[SQ_PAYMENT_SEEN] = "UPDATE payments SET callback_seen_at = ?2 WHERE payment_id = ?1",
	/* A PAID callback held for confirmation: nothing of the claim is taken but the fact
	 * that it came; the payment is polled now (the reconciler keeps the 3 s rule). */
	[SQ_PAYMENT_HOLD] =
		"UPDATE payments SET confirmation = 'pending', held_event_id = ?2, "
		"confirmation_detail = 'waiting for a status call', confirmation_at = ?3, "
		"callback_seen_at = ?3, updated_at = ?3, "
		"next_poll_at = CASE WHEN next_poll_at IS NULL OR next_poll_at > ?3 THEN ?3 "
		"ELSE next_poll_at END WHERE payment_id = ?1",
	[SQ_PAYMENT_CONFIRM] = "UPDATE payments SET confirmation = ?2, confirmation_detail = ?3, "
			       "confirmation_at = COALESCE(?4, confirmation_at) "
			       "WHERE payment_id = ?1",
	[SQ_POLL_INSERT] = "INSERT INTO polls (payment_id, polled_at, elapsed_ms, outcome, "
			   "http_status, komerce_status, confirming, error) "
			   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[SQ_RECEIPT_INSERT] = "INSERT INTO receipts (event_id, source, remote_addr, received_at, "
			      "instance) VALUES (?1, ?2, ?3, ?4, ?5)",
	[SQ_OUTBOX_INSERT] = "INSERT INTO outbox (event_id, payment_id, sink, next_attempt_at, "
			     "created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
	[SQ_SAVEPOINT] = "SAVEPOINT req",
	[SQ_RELEASE] = "RELEASE req",
	[SQ_ROLLBACK_TO] = "ROLLBACK TO req",
	[SQ_BEGIN] = "BEGIN IMMEDIATE",
	[SQ_COMMIT] = "COMMIT",
	[SQ_ROLLBACK] = "ROLLBACK",
};

int store_sqlite_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EAGAIN;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

int store_sqlite_errno_or_eio(int rc)
{
	int r = store_sqlite_errno(rc);

	return r != 0 ? r : -EIO;
}

void store_sqlite_set_err(struct store *s, const char *what)
{
	sqlite3 *db = s->impl != NULL ? store_sqlite_db(s) : NULL;

	snprintf(s->err, sizeof(s->err), "%s: %s", what, db != NULL ? sqlite3_errmsg(db) : "no db");
}

sqlite3_stmt *store_sqlite_stmt(struct store *s, enum store_sqlite_stmt id)
{
	struct store_sqlite *q = store_sqlite_of(s);
	sqlite3_stmt *st = q->stmts[id];

	if (st == NULL) {
		if (sqlite3_prepare_v3(q->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st,
				       NULL) != SQLITE_OK) {
			store_sqlite_set_err(s, "prepare");
			return NULL;
		}
		q->stmts[id] = st;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

int store_sqlite_step_done(struct store *s, sqlite3_stmt *st)
{
	int rc;

	if (st == NULL)
		return -EIO;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_sqlite_set_err(s, sqlite3_sql(st));
		return store_sqlite_errno_or_eio(rc);
	}
	return 0;
}

int store_sqlite_exec(struct store *s, const char *sql)
{
	int rc = sqlite3_exec(store_sqlite_db(s), sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK) {
		store_sqlite_set_err(s, "exec");
		return store_sqlite_errno_or_eio(rc);
	}
	return 0;
}

int store_sqlite_prepare(struct store *s, const char *sql, sqlite3_stmt **ret, const char *what)
{
	int rc = sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, ret, NULL);

	if (rc != SQLITE_OK) {
		store_sqlite_set_err(s, what);
		*ret = NULL;
		return store_sqlite_errno_or_eio(rc);
	}
	return 0;
}

int store_sqlite_finish(struct store *s, sqlite3_stmt *st, int rc, const char *what)
{
	int r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_sqlite_set_err(s, what);
		r = store_sqlite_errno_or_eio(rc);
	}
	sqlite3_finalize(st);
	return r;
}

void store_sqlite_bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
	if (v != NULL && v[0] != '\0')
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

void store_sqlite_bind_int_or_null(sqlite3_stmt *st, int i, long long v, long long absent)
{
	if (v != absent)
		sqlite3_bind_int64(st, i, v);
	else
		sqlite3_bind_null(st, i);
}

void store_sqlite_col_copy(sqlite3_stmt *st, int col, char *out, size_t n)
{
	const unsigned char *v = sqlite3_column_text(st, col);

	snprintf(out, n, "%s", v != NULL ? (const char *)v : "");
}

int64_t store_sqlite_col_i64(sqlite3_stmt *st, int col, int64_t absent)
{
	return sqlite3_column_type(st, col) == SQLITE_NULL ? absent : sqlite3_column_int64(st, col);
}

void store_sqlite_payment_read(sqlite3_stmt *st, struct store_payment *p)
{
	memset(p, 0, sizeof(*p));
	store_sqlite_col_copy(st, 0, p->payment_id, sizeof(p->payment_id));
	store_sqlite_col_copy(st, 1, p->order_id, sizeof(p->order_id));
	store_sqlite_col_copy(st, 2, p->payment_type, sizeof(p->payment_type));
	store_sqlite_col_copy(st, 3, p->channel_code, sizeof(p->channel_code));
	p->amount = store_sqlite_col_i64(st, 4, -1);
	p->status = payment_status_parse((const char *)sqlite3_column_text(st, 5));
	p->expires_at = store_sqlite_col_i64(st, 6, 0);
	p->created_at = store_sqlite_col_i64(st, 7, 0);
	p->updated_at = store_sqlite_col_i64(st, 8, 0);
	p->callback_seen_at = store_sqlite_col_i64(st, 9, 0);
	p->last_polled_at = store_sqlite_col_i64(st, 10, 0);
	p->next_poll_at = store_sqlite_col_i64(st, 11, 0);
	p->poll_attempts = (long)store_sqlite_col_i64(st, 12, 0);
	store_sqlite_col_copy(st, 13, p->origin, sizeof(p->origin));
	p->confirmation = store_confirmation_parse((const char *)sqlite3_column_text(st, 14));
	store_sqlite_col_copy(st, 15, p->confirmation_detail, sizeof(p->confirmation_detail));
	p->confirmation_at = store_sqlite_col_i64(st, 16, 0);
	p->held_event_id = store_sqlite_col_i64(st, 17, 0);
}

int store_sqlite_chain_head(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN])
{
	sqlite3_stmt *st;
	int rc, r;

	*ret_id = 0;
	memset(ret_hash, 0, STORE_HASH_LEN);
	r = store_sqlite_prepare(s, "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1", &st,
				 "chain head");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret_id = sqlite3_column_int64(st, 0);
		if (sqlite3_column_bytes(st, 1) == STORE_HASH_LEN)
			memcpy(ret_hash, sqlite3_column_blob(st, 1), STORE_HASH_LEN);
	}
	return store_sqlite_finish(s, st, rc, "chain head");
}
