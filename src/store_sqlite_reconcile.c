/* The SQLite backend's reconciler queries: the due payments (confirmations first), the
 * earliest due time and the polls log that the reconciler thread and the admin API read on
 * their own handles, and the schedule request (mark polled / poll result, with an optional
 * source=reconcile event, the verdict on a PAID callback held for confirmation and a row of
 * the polls log) applied on the writer thread inside its group-commit transaction. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static void read_row(sqlite3_stmt *st, struct store_reconcile_row *row)
{
	memset(row, 0, sizeof(*row));
	store_sqlite_col_copy(st, 0, row->payment_id, sizeof(row->payment_id));
	row->status = payment_status_parse((const char *)sqlite3_column_text(st, 1));
	row->amount = store_sqlite_col_i64(st, 2, -1);
	row->expires_at = store_sqlite_col_i64(st, 3, 0);
	row->created_at = store_sqlite_col_i64(st, 4, 0);
	row->last_polled_at = store_sqlite_col_i64(st, 5, 0);
	row->next_poll_at = store_sqlite_col_i64(st, 6, 0);
	row->poll_attempts = (long)store_sqlite_col_i64(st, 7, 0);
	row->confirming = store_confirmation_parse((const char *)sqlite3_column_text(st, 8)) ==
			  STORE_CONFIRM_PENDING;
}

/* Due rows of one index into rows[*n ...]: skip_confirming leaves out those the first query
 * (on payments_confirming) already returned. */
static int due_from(struct store *s, const char *sql, const char *what, int64_t now_ms, size_t max,
		    struct store_reconcile_row *rows, size_t *n)
{
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, what);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, now_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(max - *n));
	for (rc = sqlite3_step(st); rc == SQLITE_ROW && *n < max; rc = sqlite3_step(st))
		read_row(st, &rows[(*n)++]);
	if (rc == SQLITE_ROW)
		rc = SQLITE_DONE; /* LIMIT makes this the end anyway */
	return store_sqlite_finish(s, st, rc, what);
}

int store_sqlite_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			       struct store_reconcile_row *rows, size_t *ret_n)
{
	/* In a WITHOUT ROWID table the index entries end with the primary key, so payments_due
	 * is (next_poll_at, payment_id): this ORDER BY is the index order, no sort. PAID
	 * callbacks waiting for their status call come first (payments_confirming is small);
	 * the second query leaves them out. */
	static const char confirming[] =
		"SELECT payment_id, status, amount, expires_at, created_at, last_polled_at, "
		"next_poll_at, poll_attempts, confirmation FROM payments INDEXED BY "
		"payments_confirming WHERE confirmation = 'pending' AND next_poll_at IS NOT NULL "
		"AND next_poll_at <= ?1 AND status = 'PENDING' "
		"ORDER BY next_poll_at, payment_id LIMIT ?2";
	static const char others[] =
		"SELECT payment_id, status, amount, expires_at, created_at, last_polled_at, "
		"next_poll_at, poll_attempts, confirmation FROM payments INDEXED BY payments_due "
		"WHERE next_poll_at IS NOT NULL AND next_poll_at <= ?1 AND status = 'PENDING' "
		"AND confirmation IS NOT 'pending' ORDER BY next_poll_at, payment_id LIMIT ?2";
	size_t n = 0;
	int r;

	r = due_from(s, confirming, "reconcile due (confirming)", now_ms, max, rows, &n);
	if (r == 0 && n < max)
		r = due_from(s, others, "reconcile due", now_ms, max, rows, &n);
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

/* ---- the polls log ---- */

int store_sqlite_polls_list(struct store *s, const char *payment_id, long limit,
			    int (*fn)(void *arg, const struct store_poll *p), void *arg)
{
	static const char sql[] =
		"SELECT id, payment_id, polled_at, elapsed_ms, outcome, http_status, "
		"komerce_status, confirming, error FROM polls INDEXED BY polls_payment "
		"WHERE payment_id = ?1 ORDER BY id DESC LIMIT ?2";
	sqlite3_stmt *st;
	int rc, r;

	if (!store_sqlite_has_confirm(s))
		return 0; /* an older database (a backup) has no polls log */
	r = store_sqlite_prepare(s, sql, &st, "polls");
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_poll p;

		memset(&p, 0, sizeof(p));
		p.id = sqlite3_column_int64(st, 0);
		store_sqlite_col_copy(st, 1, p.payment_id, sizeof(p.payment_id));
		p.polled_at = sqlite3_column_int64(st, 2);
		p.elapsed_ms = (long)sqlite3_column_int64(st, 3);
		p.outcome = store_poll_outcome_parse((const char *)sqlite3_column_text(st, 4));
		p.http_status = (long)store_sqlite_col_i64(st, 5, 0);
		p.komerce_status =
			sqlite3_column_type(st, 6) == SQLITE_NULL
				? PAYMENT_UNKNOWN
				: payment_status_parse((const char *)sqlite3_column_text(st, 6));
		p.confirming = sqlite3_column_int(st, 7) != 0;
		store_sqlite_col_copy(st, 8, p.error, sizeof(p.error));
		r = fn(arg, &p);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "polls");
}

static int insert_poll(struct store *s, const struct store_reconcile_update *u)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_POLL_INSERT);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, u->payment_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, u->sent_at);
	sqlite3_bind_int64(st, 3, u->elapsed_ms > 0 ? u->elapsed_ms : 0);
	sqlite3_bind_text(st, 4, store_poll_outcome_name(u->outcome), -1, SQLITE_STATIC);
	store_sqlite_bind_int_or_null(st, 5, u->http_status, 0);
	if (u->outcome == STORE_POLL_OK && u->komerce_status != PAYMENT_UNKNOWN)
		sqlite3_bind_text(st, 6, payment_status_name(u->komerce_status), -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 7, u->confirming ? 1 : 0);
	if (u->error != NULL && u->error[0] != '\0')
		sqlite3_bind_text(st, 8, u->error, (int)strnlen(u->error, STORE_DETAIL_MAX - 1),
				  SQLITE_STATIC);
	return store_sqlite_step_done(s, st);
}

/* ---- write request ---- */

/* The fact a poll learned (u->has_event), stored like a callback's; with mark CONFIRMED when
 * it confirms the held callback. A confirming PAID that the state machine refuses (another
 * amount than the payment's) confirms nothing. */
static int store_learned(struct store *s, struct store_reconcile_update *u,
			 const struct store_event_payment *cur, struct store_confirm_decision *cd,
			 int64_t now)
{
	struct store_event_decision d;
	struct store_sqlite_fact f;
	struct event ev = u->ev;
	int err;

	ev.source = EVENT_SOURCE_RECONCILE;
	snprintf(ev.payment_id, sizeof(ev.payment_id), "%s", u->payment_id);
	store_event_decide(&ev, cur, false, &d);
	if (cd->mark_fact && ev.status == PAYMENT_PAID && !d.conflict) {
		d.mark = STORE_MARK_CONFIRMED;
		d.held_event_id = cur->held_event_id;
	} else if (cd->mark_fact) {
		cd->mark_fact = false;
		cd->verdict = cur->confirmation == STORE_CONFIRM_PENDING ? STORE_CONFIRM_UNCONFIRMED
									 : STORE_CONFIRM_NONE;
		cd->marker = cd->verdict == STORE_CONFIRM_UNCONFIRMED;
		snprintf(cd->detail, sizeof(cd->detail),
			 "Komerce says PAID, but it contradicts the payment (amount)");
	}
	err = store_sqlite_store_fact(s, &ev, &d, cur, now, &f);
	if (err < 0)
		return err;
	u->event_id = f.event_id;
	u->duplicate = f.duplicate;
	u->conflict = f.conflict;
	return 0;
}

/* A poll result's part in a pending confirmation: the verdict on the held callback (and its
 * UNCONFIRMED conflict event), or the failure that keeps it waiting. */
static int apply_result(struct store *s, struct store_reconcile_update *u, int64_t now)
{
	struct store_event_payment cur;
	struct store_confirm_decision cd;
	int err;

	err = store_sqlite_payment_state(s, u->payment_id, &cur);
	if (err < 0)
		return err;
	store_confirm_decide(&cur, u, &cd);
	if (u->has_event) {
		err = store_learned(s, u, &cur, &cd, now);
		if (err < 0)
			return err;
	}
	if (cd.marker) {
		struct store_event_decision d;
		struct store_sqlite_fact f;
		struct event ev;

		store_confirm_marker(&cur, u, &ev, &d);
		err = store_sqlite_store_fact(s, &ev, &d, &cur, now, &f);
		if (err < 0)
			return err;
		u->marker_event_id = f.event_id;
	}
	if (cd.verdict != STORE_CONFIRM_NONE) {
		/* Still pending keeps its time: when the callback was held. */
		err = store_sqlite_set_confirmation(s, u->payment_id, cd.verdict, cd.detail,
						    cd.verdict == STORE_CONFIRM_PENDING ? 0 : now);
		if (err < 0)
			return err;
	}
	if (cd.verdict == STORE_CONFIRM_CONFIRMED || cd.verdict == STORE_CONFIRM_UNCONFIRMED) {
		u->verdict = cd.verdict;
		u->held_event_id = cur.held_event_id;
	}
	/* The reconciler scheduled this payment without knowing of the held callback: it is
	 * due now (the reconciler still keeps its 3 s). */
	if (cd.poll_again && u->set_next && u->next_poll_at != 0)
		u->next_poll_at = now;
	return insert_poll(s, u);
}

static int apply_one(struct store *s, sqlite3_stmt *st, struct store_reconcile_update *u)
{
	int64_t now = util_now_ms();
	int rc, err;

	u->matched = false;
	u->event_id = u->marker_event_id = u->held_event_id = 0;
	u->duplicate = false;
	u->conflict = false;
	u->verdict = STORE_CONFIRM_NONE;
	if (u->sent_at > 0) {
		err = apply_result(s, u, now);
		if (err < 0)
			return err;
	} else if (u->has_event) {
		struct store_confirm_decision cd = {.verdict = STORE_CONFIRM_NONE};
		struct store_event_payment cur;

		err = store_sqlite_payment_state(s, u->payment_id, &cur);
		if (err == 0)
			err = store_learned(s, u, &cur, &cd, now);
		if (err < 0)
			return err;
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
	if (u->min_gap_ms > 0 && u->last_polled_at > 0)
		sqlite3_bind_int64(st, 8, u->min_gap_ms);
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
		"NULL)) AND (?8 IS NULL OR last_polled_at IS NULL OR last_polled_at <= ?2 - ?8)";
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
