/* The PostgreSQL backend's reconciler queries: the due payments (confirmations first) and the
 * earliest due time that the elected reconciler reads on its own handle, the polls log, and
 * the schedule request (mark polled / poll result, with an optional source=reconcile event,
 * the verdict on a PAID callback held for confirmation and a row of the polls log) applied on
 * the writer thread inside its transaction, as the SQLite backend does. The schedule lives in the
 * payments rows, so a new leader picks it up as it is; a mark with min_gap_ms applies only when the
 * last poll is old enough, so two instances can never both mark (and then poll) one payment within
 * the minimum interval. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* Due rows of one query into rows[*n ...]. */
static int due_from(struct store *s, const char *sql, const char *what, int64_t now_ms, size_t max,
		    struct store_reconcile_row *rows, size_t *n)
{
	struct store_pg_num n_now, n_max;
	const char *v[2] = {store_pg_num(&n_now, now_ms),
			    store_pg_num(&n_max, (long long)(max - *n))};
	PGresult *res;
	int r;

	r = store_pg_exec(s, sql, 2, v, &res, what);
	if (r < 0)
		return r;
	for (int i = 0; i < PQntuples(res) && *n < max; i++) {
		struct store_reconcile_row *row = &rows[(*n)++];

		memset(row, 0, sizeof(*row));
		store_pg_copy(res, i, 0, row->payment_id, sizeof(row->payment_id));
		row->status = payment_status_parse(PQgetvalue(res, i, 1));
		row->amount = store_pg_i64(res, i, 2, -1);
		row->expires_at = store_pg_i64(res, i, 3, 0);
		row->created_at = store_pg_i64(res, i, 4, 0);
		row->last_polled_at = store_pg_i64(res, i, 5, 0);
		row->next_poll_at = store_pg_i64(res, i, 6, 0);
		row->poll_attempts = (long)store_pg_i64(res, i, 7, 0);
		row->confirming = store_pg_bool(res, i, 8);
	}
	PQclear(res);
	return 0;
}

int store_pg_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			   struct store_reconcile_row *rows, size_t *ret_n)
{
	/* PAID callbacks waiting for their status call first (payments_confirming is small);
	 * the second query leaves them out. */
	static const char confirming[] =
		"SELECT payment_id, status, amount, expires_at, created_at, last_polled_at, "
		"next_poll_at, poll_attempts, true FROM payments "
		"WHERE confirmation = 'pending' AND next_poll_at IS NOT NULL "
		"AND next_poll_at <= $1 AND status = 'PENDING' "
		"ORDER BY next_poll_at, payment_id LIMIT $2";
	static const char others[] =
		"SELECT payment_id, status, amount, expires_at, created_at, last_polled_at, "
		"next_poll_at, poll_attempts, false FROM payments "
		"WHERE next_poll_at IS NOT NULL AND next_poll_at <= $1 AND status = 'PENDING' "
		"AND confirmation IS DISTINCT FROM 'pending' "
		"ORDER BY next_poll_at, payment_id LIMIT $2";
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

int store_pg_reconcile_next_due(struct store *s, int64_t *ret_ms)
{
	PGresult *res;
	int r;

	r = store_pg_exec(s,
			  "SELECT next_poll_at FROM payments WHERE next_poll_at IS NOT NULL "
			  "AND status = 'PENDING' ORDER BY next_poll_at LIMIT 1",
			  0, NULL, &res, "reconcile next due");
	if (r < 0)
		return r;
	r = PQntuples(res) == 0 ? -ENOENT : 0;
	if (r == 0)
		*ret_ms = store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return r;
}

int store_pg_reconcile_watched(struct store *s, int64_t *ret)
{
	PGresult *res;
	int r;

	r = store_pg_exec(s, "SELECT count(*) FROM payments WHERE next_poll_at IS NOT NULL", 0,
			  NULL, &res, "reconcile watched");
	if (r < 0)
		return r;
	*ret = store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return 0;
}

int store_pg_reconcile_pending(struct store *s, int64_t now_s, int64_t *ret_pending,
			       int64_t *ret_expired)
{
	struct store_pg_num n_now;
	const char *v[1] = {store_pg_num(&n_now, now_s)};
	PGresult *res;
	int r;

	r = store_pg_exec(s,
			  "SELECT count(*), count(*) FILTER (WHERE expires_at IS NOT NULL AND "
			  "expires_at < $1) FROM payments WHERE status = 'PENDING'",
			  1, v, &res, "reconcile pending");
	if (r < 0)
		return r;
	*ret_pending = store_pg_i64(res, 0, 0, 0);
	*ret_expired = store_pg_i64(res, 0, 1, 0);
	PQclear(res);
	return 0;
}

/* ---- the polls log ---- */

struct polls {
	int (*fn)(void *arg, const struct store_poll *p);
	void *arg;
};

static int poll_row(void *arg, PGresult *res)
{
	const struct polls *x = arg;
	struct store_poll p;

	memset(&p, 0, sizeof(p));
	p.id = store_pg_i64(res, 0, 0, 0);
	store_pg_copy(res, 0, 1, p.payment_id, sizeof(p.payment_id));
	p.polled_at = store_pg_i64(res, 0, 2, 0);
	p.elapsed_ms = (long)store_pg_i64(res, 0, 3, 0);
	p.outcome = store_poll_outcome_parse(PQgetvalue(res, 0, 4));
	p.http_status = (long)store_pg_i64(res, 0, 5, 0);
	p.komerce_status = PQgetisnull(res, 0, 6) ? PAYMENT_UNKNOWN
						  : payment_status_parse(PQgetvalue(res, 0, 6));
	p.confirming = store_pg_bool(res, 0, 7);
	store_pg_copy(res, 0, 8, p.error, sizeof(p.error));
	return x->fn(x->arg, &p);
}

int store_pg_polls_list(struct store *s, const char *payment_id, long limit,
			int (*fn)(void *arg, const struct store_poll *p), void *arg)
{
	static const char sql[] =
		"SELECT id, payment_id, polled_at, elapsed_ms, outcome, http_status, "
		"komerce_status, confirming, error FROM polls WHERE payment_id = $1 "
		"ORDER BY id DESC LIMIT $2";
	struct store_pg_num n_limit;
	const char *v[2] = {payment_id, limit > 0 ? store_pg_num(&n_limit, limit) : NULL};
	struct polls x = {fn, arg};

	return store_pg_stream(s, sql, 2, v, poll_row, &x, "polls");
}

static int insert_poll(struct store *s, const struct store_reconcile_update *u)
{
	static const char sql[] = "INSERT INTO polls (payment_id, polled_at, elapsed_ms, outcome, "
				  "http_status, komerce_status, confirming, error) "
				  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
	struct store_pg_num n_at, n_el, n_http;
	char error[STORE_DETAIL_MAX];
	const char *v[8];
	PGresult *res;
	int err;

	snprintf(error, sizeof(error), "%s", u->error != NULL ? u->error : "");
	v[0] = u->payment_id;
	v[1] = store_pg_num(&n_at, u->sent_at);
	v[2] = store_pg_num(&n_el, u->elapsed_ms > 0 ? u->elapsed_ms : 0);
	v[3] = store_poll_outcome_name(u->outcome);
	v[4] = store_pg_num_or_null(&n_http, u->http_status, 0);
	v[5] = u->outcome == STORE_POLL_OK && u->komerce_status != PAYMENT_UNKNOWN
		       ? payment_status_name(u->komerce_status)
		       : NULL;
	v[6] = u->confirming ? "t" : "f";
	v[7] = store_pg_text_or_null(error);
	err = store_pg_exec(s, sql, 8, v, &res, "poll log");
	if (err == 0)
		PQclear(res);
	return err;
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
	struct store_pg_fact f;
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
	err = store_pg_store_fact(s, &ev, &d, cur, NULL, now, false, &f);
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

	err = store_pg_payment_state(s, u->payment_id, &cur);
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
		struct store_pg_fact f;
		struct event ev;

		store_confirm_marker(&cur, u, &ev, &d);
		err = store_pg_store_fact(s, &ev, &d, &cur, NULL, now, false, &f);
		if (err < 0)
			return err;
		u->marker_event_id = f.event_id;
	}
	if (cd.verdict != STORE_CONFIRM_NONE) {
		/* Still pending keeps its time: when the callback was held. */
		err = store_pg_set_confirmation(s, u->payment_id, cd.verdict, cd.detail,
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

/* The schedule change itself. A payment that is (or just became) terminal is never watched
 * again; last_polled_at only moves forward, so a late result cannot shorten the minimum
 * interval. */
static int update_schedule(struct store *s, struct store_reconcile_update *u)
{
	static const char sql[] =
		"UPDATE payments SET "
		"last_polled_at = CASE WHEN $2::bigint IS NULL THEN last_polled_at "
		"ELSE GREATEST(COALESCE(last_polled_at, 0), $2::bigint) END, "
		"poll_attempts = COALESCE($3::bigint, poll_attempts), "
		"expires_at = COALESCE(expires_at, $4::bigint), "
		"next_poll_at = CASE WHEN status <> 'PENDING' THEN NULL "
		"WHEN NOT $5::boolean THEN next_poll_at ELSE $6::bigint END "
		"WHERE payment_id = $1 AND (NOT $7::boolean OR (status = 'PENDING' AND "
		"next_poll_at IS NOT NULL)) AND ($8::bigint IS NULL OR last_polled_at IS NULL OR "
		"last_polled_at <= $2::bigint - $8::bigint)";
	struct store_pg_num n_polled, n_att, n_exp, n_next, n_gap;
	const char *v[8];
	PGresult *res;
	int err;

	v[0] = u->payment_id;
	v[1] = store_pg_num_or_null(&n_polled, u->last_polled_at, 0);
	v[2] = u->poll_attempts >= 0 ? store_pg_num(&n_att, u->poll_attempts) : NULL;
	v[3] = store_pg_num_or_null(&n_exp, u->expires_at, 0);
	v[4] = u->set_next ? "t" : "f";
	v[5] = u->set_next ? store_pg_num_or_null(&n_next, u->next_poll_at, 0) : NULL;
	v[6] = u->only_if_watched ? "t" : "f";
	v[7] = u->min_gap_ms > 0 && u->last_polled_at > 0 ? store_pg_num(&n_gap, u->min_gap_ms)
							  : NULL;
	err = store_pg_exec(s, sql, 8, v, &res, "reconcile update");
	if (err < 0)
		return err;
	u->matched = store_pg_changed(res) > 0;
	PQclear(res);
	store_pg_touch(s, u->payment_id);
	return 0;
}

static int apply_one(struct store *s, struct store_reconcile_update *u)
{
	int64_t now = util_now_ms();
	int err = 0;

	u->matched = false;
	u->event_id = u->marker_event_id = u->held_event_id = 0;
	u->duplicate = false;
	u->conflict = false;
	u->verdict = STORE_CONFIRM_NONE;
	if (u->sent_at > 0) {
		err = apply_result(s, u, now);
	} else if (u->has_event) {
		struct store_confirm_decision cd = {.verdict = STORE_CONFIRM_NONE};
		struct store_event_payment cur;

		err = store_pg_payment_state(s, u->payment_id, &cur);
		if (err == 0)
			err = store_learned(s, u, &cur, &cd, now);
	}
	if (err < 0)
		return err;
	return update_schedule(s, u);
}

int store_pg_apply_reconcile(struct store *s, struct store_req *r)
{
	int err = 0;

	for (size_t i = 0; i < r->u.reconcile.n && err == 0; i++)
		err = apply_one(s, &r->u.reconcile.list[i]);
	return err;
}
