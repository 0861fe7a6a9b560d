/* The PostgreSQL backend's reconciler queries: the due payments and the earliest due time that
 * the elected reconciler reads on its own handle, and the schedule request (mark polled / poll
 * result, with an optional source=reconcile event) applied on the writer thread inside its
 * transaction. The schedule lives in the payments rows, so a new leader picks it up as it is;
 * a mark with min_gap_ms applies only when the last poll is old enough, so two instances can
 * never both mark (and then poll) one payment within the minimum interval. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int store_pg_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			   struct store_reconcile_row *rows, size_t *ret_n)
{
	static const char sql[] =
		"SELECT payment_id, status, amount, expires_at, created_at, last_polled_at, "
		"next_poll_at, poll_attempts FROM payments "
		"WHERE next_poll_at IS NOT NULL AND next_poll_at <= $1 AND status = 'PENDING' "
		"ORDER BY next_poll_at, payment_id LIMIT $2";
	struct store_pg_num n_now, n_max;
	const char *v[2] = {store_pg_num(&n_now, now_ms), store_pg_num(&n_max, (long long)max)};
	PGresult *res;
	size_t n = 0;
	int r;

	r = store_pg_exec(s, sql, 2, v, &res, "reconcile due");
	if (r < 0)
		return r;
	for (int i = 0; i < PQntuples(res) && n < max; i++) {
		struct store_reconcile_row *row = &rows[n++];

		memset(row, 0, sizeof(*row));
		store_pg_copy(res, i, 0, row->payment_id, sizeof(row->payment_id));
		row->status = payment_status_parse(PQgetvalue(res, i, 1));
		row->amount = store_pg_i64(res, i, 2, -1);
		row->expires_at = store_pg_i64(res, i, 3, 0);
		row->created_at = store_pg_i64(res, i, 4, 0);
		row->last_polled_at = store_pg_i64(res, i, 5, 0);
		row->next_poll_at = store_pg_i64(res, i, 6, 0);
		row->poll_attempts = (long)store_pg_i64(res, i, 7, 0);
	}
	PQclear(res);
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

/* ---- write request ---- */

static int apply_one(struct store *s, struct store_reconcile_update *u)
{
	/* A payment that is (or just became) terminal is never watched again; last_polled_at
	 * only moves forward, so a late result cannot shorten the minimum interval. */
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

	u->matched = false;
	u->event_id = 0;
	u->duplicate = false;
	u->conflict = false;
	if (u->has_event) {
		struct store_req ev_req;

		store_req_event(&ev_req, &u->ev);
		ev_req.ev.source = EVENT_SOURCE_RECONCILE;
		snprintf(ev_req.ev.payment_id, sizeof(ev_req.ev.payment_id), "%s", u->payment_id);
		err = store_pg_apply_event(s, &ev_req);
		if (err < 0)
			return err;
		u->event_id = ev_req.event_id;
		u->duplicate = ev_req.duplicate;
		u->conflict = ev_req.conflict;
	}
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
	return 0;
}

int store_pg_apply_reconcile(struct store *s, struct store_req *r)
{
	int err = 0;

	for (size_t i = 0; i < r->u.reconcile.n && err == 0; i++)
		err = apply_one(s, &r->u.reconcile.list[i]);
	return err;
}
