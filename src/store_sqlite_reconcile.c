/* The SQLite backend's reconciler queries: the due payments and the earliest due time that
 * the reconciler thread reads on its own read-only handle, and the schedule request (mark
 * polled / poll result, with an optional source=reconcile event) applied on the writer thread
 * inside its group-commit transaction. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int store_sqlite_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			       struct store_reconcile_row *rows, size_t *ret_n)
{
	/* In a WITHOUT ROWID table the index entries end with the primary key, so payments_due
	 * is (next_poll_at, payment_id): this ORDER BY is the index order, no sort. */
	static const char sql[] =
		"SELECT payment_id, status, amount, expires_at, created_at, last_polled_at, "
		"next_poll_at, poll_attempts FROM payments INDEXED BY payments_due "
		"WHERE next_poll_at IS NOT NULL AND next_poll_at <= ?1 AND status = 'PENDING' "
		"ORDER BY next_poll_at, payment_id LIMIT ?2";
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "reconcile due");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, now_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
	for (rc = sqlite3_step(st); rc == SQLITE_ROW && n < max; rc = sqlite3_step(st)) {
		struct store_reconcile_row *row = &rows[n];

		memset(row, 0, sizeof(*row));
		store_sqlite_col_copy(st, 0, row->payment_id, sizeof(row->payment_id));
		row->status = payment_status_parse((const char *)sqlite3_column_text(st, 1));
		row->amount = store_sqlite_col_i64(st, 2, -1);
		row->expires_at = store_sqlite_col_i64(st, 3, 0);
		row->created_at = store_sqlite_col_i64(st, 4, 0);
		row->last_polled_at = store_sqlite_col_i64(st, 5, 0);
		row->next_poll_at = store_sqlite_col_i64(st, 6, 0);
		row->poll_attempts = (long)store_sqlite_col_i64(st, 7, 0);
		n++;
	}
	if (rc == SQLITE_ROW)
		rc = SQLITE_DONE; /* LIMIT makes this the end anyway */
	r = store_sqlite_finish(s, st, rc, "reconcile due");
	if (r < 0)
		return r;
	*ret_n = n;
	return 0;
}

int store_sqlite_reconcile_next_due(struct store *s, int64_t *ret_ms)
{
	static const char sql[] = "SELECT next_poll_at FROM payments INDEXED BY payments_due "
				  "WHERE next_poll_at IS NOT NULL AND status = 'PENDING' "
				  "ORDER BY next_poll_at LIMIT 1";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "reconcile next due");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret_ms = sqlite3_column_int64(st, 0);
	r = store_sqlite_finish(s, st, rc, "reconcile next due");
	if (r == 0 && rc == SQLITE_DONE)
		r = -ENOENT;
	return r;
}

int store_sqlite_reconcile_watched(struct store *s, int64_t *ret)
{
	static const char sql[] = "SELECT count(*) FROM payments INDEXED BY payments_due "
				  "WHERE next_poll_at IS NOT NULL";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "reconcile watched");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		rc = SQLITE_ERROR;
	return store_sqlite_finish(s, st, rc, "reconcile watched");
}

int store_sqlite_reconcile_pending(struct store *s, int64_t now_s, int64_t *ret_pending,
				   int64_t *ret_expired)
{
	static const char sql[] =
		"SELECT count(*), total(expires_at IS NOT NULL AND expires_at < ?1) FROM payments "
		"WHERE status = 'PENDING'";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "reconcile pending");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, now_s);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret_pending = sqlite3_column_int64(st, 0);
		*ret_expired = sqlite3_column_int64(st, 1);
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_ERROR;
	}
	return store_sqlite_finish(s, st, rc, "reconcile pending");
}

/* ---- write request ---- */

static int apply_one(struct store *s, sqlite3_stmt *st, struct store_reconcile_update *u)
{
	int rc, err;

	u->matched = false;
	u->event_id = 0;
	u->duplicate = false;
	u->conflict = false;
	if (u->has_event) {
		struct store_req ev_req;

		store_req_event(&ev_req, &u->ev);
		ev_req.ev.source = EVENT_SOURCE_RECONCILE;
		snprintf(ev_req.ev.payment_id, sizeof(ev_req.ev.payment_id), "%s", u->payment_id);
		err = store_sqlite_apply_event(s, &ev_req);
		if (err < 0)
			return err;
		u->event_id = ev_req.event_id;
		u->duplicate = ev_req.duplicate;
		u->conflict = ev_req.conflict;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_text(st, 1, u->payment_id, -1, SQLITE_STATIC);
	if (u->last_polled_at > 0)
		sqlite3_bind_int64(st, 2, u->last_polled_at);
	if (u->poll_attempts >= 0)
		sqlite3_bind_int64(st, 3, u->poll_attempts);
	if (u->expires_at > 0)
		sqlite3_bind_int64(st, 4, u->expires_at);
	sqlite3_bind_int(st, 5, u->set_next ? 1 : 0);
	if (u->set_next && u->next_poll_at > 0)
		sqlite3_bind_int64(st, 6, u->next_poll_at);
	sqlite3_bind_int(st, 7, u->only_if_watched ? 1 : 0);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		store_sqlite_set_err(s, "reconcile update");
		return store_sqlite_errno_or_eio(rc);
	}
	u->matched = sqlite3_changes(store_sqlite_db(s)) > 0;
	return 0;
}

int store_sqlite_apply_reconcile(struct store *s, struct store_req *r)
{
	/* A payment that is (or just became) terminal is never watched again; last_polled_at
	 * only moves forward, so a late result cannot shorten the 3 s guard. */
	static const char sql[] =
		"UPDATE payments SET "
		"last_polled_at = CASE WHEN ?2 IS NULL THEN last_polled_at "
		"ELSE max(COALESCE(last_polled_at, 0), ?2) END, "
		"poll_attempts = COALESCE(?3, poll_attempts), "
		"expires_at = COALESCE(expires_at, ?4), "
		"next_poll_at = CASE WHEN status <> 'PENDING' THEN NULL "
		"WHEN ?5 = 0 THEN next_poll_at ELSE ?6 END "
		"WHERE payment_id = ?1 AND (?7 = 0 OR (status = 'PENDING' AND next_poll_at IS NOT "
		"NULL))";
	sqlite3_stmt *st;
	int err;

	err = store_sqlite_prepare(s, sql, &st, "reconcile update");
	if (err < 0)
		return err;
	for (size_t i = 0; i < r->u.reconcile.n && err == 0; i++)
		err = apply_one(s, st, &r->u.reconcile.list[i]);
	sqlite3_finalize(st);
	return err;
}
