/* The PostgreSQL backend's outbox: the per-payment-ordered "next rows" query the forwarder
 * polls on its own handle, counts and listings, and the outcome and replay requests applied
 * on the writer thread (or by store_apply_now on komerce-hookctl's handle). The rows
 * themselves are inserted by the event request (store_pg_event.c) in the event's
 * transaction. Same statements as the SQLite backend's, in PostgreSQL's dialect. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The newest row that replaced a dead one (index outbox_replay_of; NULL for other rows). */
#define REPLACEMENT(col)                                                                      \
	"CASE WHEN o.replayed_at IS NULL THEN NULL ELSE (SELECT " col " FROM outbox x WHERE " \
	"x.replay_of = o.id ORDER BY x.id DESC LIMIT 1) END"
#define ROW_COLUMNS                                                                        \
	"o.id, o.event_id, o.sink, o.state, o.attempts, o.next_attempt_at, o.created_at, " \
	"o.delivered_at, o.last_error, e.payment_id, e.order_id, e.status, e.amount, "     \
	"e.source, e.conflict, e.received_at, e.raw_json, o.replayed_at, "                 \
	"o.replayed_by, " REPLACEMENT("x.state") ", " REPLACEMENT("x.delivered_at")
#define COL_RAW 16

static void read_row(PGresult *res, int i, struct store_outbox_row *r)
{
	memset(r, 0, sizeof(*r));
	r->id = store_pg_i64(res, i, 0, 0);
	r->event_id = store_pg_i64(res, i, 1, 0);
	store_pg_copy(res, i, 2, r->sink, sizeof(r->sink));
	r->state = store_outbox_state_parse(PQgetvalue(res, i, 3));
	r->attempts = (long)store_pg_i64(res, i, 4, 0);
	r->next_attempt_at = store_pg_i64(res, i, 5, 0);
	r->created_at = store_pg_i64(res, i, 6, 0);
	r->delivered_at = store_pg_i64(res, i, 7, 0);
	store_pg_copy(res, i, 8, r->last_error, sizeof(r->last_error));
	store_pg_copy(res, i, 9, r->payment_id, sizeof(r->payment_id));
	store_pg_copy(res, i, 10, r->order_id, sizeof(r->order_id));
	r->status = payment_status_parse(PQgetvalue(res, i, 11));
	r->amount = store_pg_i64(res, i, 12, -1);
	store_pg_copy(res, i, 13, r->source, sizeof(r->source));
	r->conflict = store_pg_bool(res, i, 14);
	r->received_at = store_pg_i64(res, i, 15, 0);
	r->replayed_at = store_pg_i64(res, i, 17, 0);
	store_pg_copy(res, i, 18, r->replayed_by, sizeof(r->replayed_by));
	r->replay_state = store_outbox_state_parse(PQgetvalue(res, i, 19));
	r->replay_delivered_at = store_pg_i64(res, i, 20, 0);
}

int store_pg_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
			 struct store_outbox_row **ret_rows, size_t *ret_n)
{
	/* A row is a candidate only while it is the lowest pending id of its payment for this
	 * sink (index outbox_payment), so no later event of a payment overtakes an earlier one. */
	static const char sql[] =
		"SELECT " ROW_COLUMNS " FROM outbox o JOIN events e ON e.id = o.event_id "
		"WHERE o.sink = $1 AND o.state = 'pending' AND o.next_attempt_at <= $2 "
		"AND o.id = (SELECT min(p.id) FROM outbox p WHERE p.sink = $1 "
		"AND p.payment_id = o.payment_id AND p.state = 'pending') "
		"ORDER BY o.next_attempt_at, o.id LIMIT $3";
	struct store_pg_num n_now, n_limit;
	const char *v[3] = {sink, store_pg_num(&n_now, now_ms), store_pg_num(&n_limit, limit)};
	struct store_outbox_row *rows;
	PGresult *res;
	size_t n = 0;
	int r;

	r = store_pg_exec(s, sql, 3, v, &res, "outbox next");
	if (r < 0)
		return r;
	rows = calloc((size_t)limit, sizeof(*rows));
	if (rows == NULL) {
		PQclear(res);
		return -ENOMEM;
	}
	for (int i = 0; i < PQntuples(res) && n < (size_t)limit; i++) {
		struct store_outbox_row *row = &rows[n];
		size_t len = (size_t)PQgetlength(res, i, COL_RAW);

		read_row(res, i, row);
		row->raw_json = malloc(len + 1);
		if (row->raw_json == NULL) {
			store_outbox_rows_free(rows, n);
			PQclear(res);
			return -ENOMEM;
		}
		memcpy(row->raw_json, PQgetvalue(res, i, COL_RAW), len);
		row->raw_json[len] = '\0';
		row->raw_len = len;
		n++;
	}
	PQclear(res);
	*ret_rows = rows;
	*ret_n = n;
	return 0;
}

int store_pg_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
			  int64_t *ret)
{
	char sql[192];
	const char *v[1] = {sink};
	PGresult *res;
	int r;

	/* The state is written literally so that the partial index on pending rows applies. */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM outbox WHERE true %s %s%s%s",
		 sink != NULL ? "AND sink = $1" : "",
		 state != STORE_OUTBOX_ANY ? "AND state = '" : "",
		 state != STORE_OUTBOX_ANY ? store_outbox_state_name(state) : "",
		 state != STORE_OUTBOX_ANY ? "'" : "");
	r = store_pg_exec(s, sql, sink != NULL ? 1 : 0, v, &res, "outbox count");
	if (r < 0)
		return r;
	*ret = store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return 0;
}

struct outbox_rows {
	int (*fn)(void *arg, const struct store_outbox_row *r);
	void *arg;
};

static int outbox_row(void *arg, PGresult *res)
{
	struct outbox_rows *x = arg;
	struct store_outbox_row row;

	read_row(res, 0, &row);
	row.raw_json = PQgetvalue(res, 0, COL_RAW);
	row.raw_len = (size_t)PQgetlength(res, 0, COL_RAW);
	return x->fn(x->arg, &row);
}

int store_pg_outbox_list(struct store *s, const struct store_outbox_filter *f,
			 int (*fn)(void *arg, const struct store_outbox_row *r), void *arg)
{
	struct store_pg_num n_after, n_event, n_limit;
	struct outbox_rows x = {fn, arg};
	const char *v[4];
	char sql[768];
	size_t o;
	int np = 0;

	v[np++] = store_pg_num(&n_after, f->after_id);
	o = (size_t)snprintf(sql, sizeof(sql),
			     "SELECT " ROW_COLUMNS " FROM outbox o JOIN events e ON e.id = "
			     "o.event_id WHERE o.id > $1");
	if (f->sink != NULL) {
		v[np++] = f->sink;
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND o.sink = $%d", np);
	}
	if (f->state != STORE_OUTBOX_ANY)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND o.state = '%s'",
				      store_outbox_state_name(f->state));
	if (f->event_id != 0) {
		v[np++] = store_pg_num(&n_event, f->event_id);
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND o.event_id = $%d", np);
	}
	o += (size_t)snprintf(sql + o, sizeof(sql) - o, " ORDER BY o.id");
	if (f->limit > 0) {
		v[np++] = store_pg_num(&n_limit, f->limit);
		snprintf(sql + o, sizeof(sql) - o, " LIMIT $%d", np);
	}
	return store_pg_stream(s, sql, np, v, outbox_row, &x, "outbox list");
}

int store_pg_outbox_summaries(struct store *s,
			      int (*fn)(void *arg, const struct store_outbox_summary *sum),
			      void *arg)
{
	static const char sql[] =
		"SELECT sink, count(*) FILTER (WHERE state = 'pending'), "
		"count(*) FILTER (WHERE state = 'delivered'), "
		"count(*) FILTER (WHERE state = 'dead' AND replayed_at IS NULL), "
		"min(created_at) FILTER (WHERE state = 'pending'), "
		"count(*) FILTER (WHERE state = 'dead' AND replayed_at IS NOT NULL) "
		"FROM outbox GROUP BY sink ORDER BY sink";
	PGresult *res;
	int r;

	r = store_pg_exec(s, sql, 0, NULL, &res, "outbox summary");
	if (r < 0)
		return r;
	for (int i = 0; i < PQntuples(res) && r == 0; i++) {
		struct store_outbox_summary sum;

		memset(&sum, 0, sizeof(sum));
		store_pg_copy(res, i, 0, sum.sink, sizeof(sum.sink));
		sum.pending = store_pg_i64(res, i, 1, 0);
		sum.delivered = store_pg_i64(res, i, 2, 0);
		sum.dead = store_pg_i64(res, i, 3, 0);
		sum.oldest_pending_at = store_pg_i64(res, i, 4, 0);
		sum.replayed = store_pg_i64(res, i, 5, 0);
		r = fn(arg, &sum);
	}
	PQclear(res);
	return r;
}

/* ---- write requests ---- */

/* Cuts e to STORE_ERR_MAX - 1 bytes, never in the middle of a UTF-8 sequence. */
static const char *cut_error(const char *e, char *buf)
{
	size_t len;

	if (e == NULL || e[0] == '\0')
		return NULL;
	len = strnlen(e, STORE_ERR_MAX - 1);
	while (len > 0 && e[len] != '\0' && ((unsigned char)e[len] & 0xc0) == 0x80)
		len--;
	memcpy(buf, e, len);
	buf[len] = '\0';
	return buf;
}

#define N_VERDICTS (STORE_OUTBOX_MARK_POSTPONE + 1)

int store_pg_apply_outcomes(struct store *s, struct store_req *r)
{
	static const char *const sql[N_VERDICTS] = {
		[STORE_OUTBOX_MARK_DELIVERED] = "UPDATE outbox SET state = 'delivered', "
						"delivered_at = $2 WHERE id = $1 AND state = "
						"'pending'",
		[STORE_OUTBOX_MARK_RETRY] = "UPDATE outbox SET attempts = attempts + 1, "
					    "next_attempt_at = $2, last_error = $3 WHERE id = $1 "
					    "AND state = 'pending'",
		[STORE_OUTBOX_MARK_DEAD] = "UPDATE outbox SET state = 'dead', attempts = attempts "
					   "+ 1, next_attempt_at = $2, last_error = $3 WHERE id = "
					   "$1 AND state = 'pending'",
		[STORE_OUTBOX_MARK_POSTPONE] = "UPDATE outbox SET next_attempt_at = $2, "
					       "last_error = $3 WHERE id = $1 AND state = "
					       "'pending'",
	};
	int err = 0;

	r->changed = 0;
	for (size_t i = 0; i < r->u.outcomes.n && err == 0; i++) {
		const struct store_outbox_outcome *o = &r->u.outcomes.list[i];
		int v = (int)o->verdict;
		struct store_pg_num n_id, n_at;
		char ebuf[STORE_ERR_MAX];
		const char *p[3];
		PGresult *res;

		if (v < 0 || v >= N_VERDICTS)
			return -EINVAL;
		p[0] = store_pg_num(&n_id, o->outbox_id);
		p[1] = store_pg_num(&n_at, o->at);
		p[2] = cut_error(o->error, ebuf);
		err = store_pg_exec(s, sql[v], v == STORE_OUTBOX_MARK_DELIVERED ? 2 : 3, p, &res,
				    "outbox outcome");
		if (err == 0) {
			r->changed += (size_t)store_pg_changed(res);
			PQclear(res);
		}
	}
	return err;
}

/* The sinks event_id was queued for before (a handle without the configuration's sinks). */
static int queued_sinks(struct store *s, int64_t event_id, char (*names)[STORE_SINK_NAME_MAX],
			size_t max, size_t *ret_n)
{
	struct store_pg_num n_id;
	const char *v[1] = {store_pg_num(&n_id, event_id)};
	PGresult *res;
	size_t n = 0;
	int r;

	r = store_pg_exec(s, "SELECT DISTINCT sink FROM outbox WHERE event_id = $1 ORDER BY sink",
			  1, v, &res, "replay sinks");
	if (r < 0)
		return r;
	for (int i = 0; i < PQntuples(res) && n < max; i++)
		store_pg_copy(res, i, 0, names[n++], sizeof(names[0]));
	PQclear(res);
	*ret_n = n;
	return 0;
}

/* The sinks a replay goes to: the one asked for (which the handle must know, when it knows
 * any), else the handle's, else those the event was queued for. */
static int replay_sinks(struct store *s, const struct store_req *r,
			char (*names)[STORE_SINK_NAME_MAX], size_t *ret_n)
{
	const char *want = r->u.replay.sink;
	size_t n = 0;

	if (want[0] != '\0') {
		bool known = s->opts.n_sinks == 0;

		for (size_t i = 0; i < s->opts.n_sinks; i++)
			known |= strcmp(s->opts.sinks[i].name, want) == 0;
		if (!known)
			return -EINVAL;
		snprintf(names[n++], sizeof(names[0]), "%s", want);
	} else if (s->opts.n_sinks > 0) {
		for (size_t i = 0; i < s->opts.n_sinks; i++)
			snprintf(names[n++], sizeof(names[0]), "%s", s->opts.sinks[i].name);
	} else {
		int err = queued_sinks(s, r->u.replay.event_id, names, 2 * STORE_MAX_SINKS, &n);

		if (err < 0)
			return err;
	}
	*ret_n = n;
	return n > 0 ? 0 : -ENODATA;
}

/* One pending row for (event, sink) unless one is already pending; the newest dead row of the
 * pair that nobody replayed yet is marked replayed (when, by whom) and named by the new row.
 * One statement: the insert, and the mark when it inserted. */
static int replay_one(struct store *s, const struct store_req *r, const char *sink, const char *now,
		      size_t *changed)
{
	static const char sql[] =
		"WITH dead AS (SELECT max(id) AS id FROM outbox WHERE event_id = $1 AND sink = $2 "
		"AND state = 'dead' AND replayed_at IS NULL), "
		"ins AS (INSERT INTO outbox (event_id, payment_id, sink, next_attempt_at, "
		"created_at, replay_of) SELECT e.id, e.payment_id, $2, $3, $3, (SELECT id FROM "
		"dead) "
		"FROM events e WHERE e.id = $1 AND NOT EXISTS (SELECT 1 FROM outbox WHERE event_id "
		"= $1 AND sink = $2 AND state = 'pending') RETURNING replay_of), "
		"mark AS (UPDATE outbox SET replayed_at = $3, replayed_by = $4 WHERE id = "
		"(SELECT replay_of FROM ins)) SELECT count(*) FROM ins";
	struct store_pg_num n_id;
	const char *v[4] = {store_pg_num(&n_id, r->u.replay.event_id), sink, now,
			    store_pg_text_or_null(r->u.replay.by)};
	PGresult *res;
	int err = store_pg_exec(s, sql, 4, v, &res, "outbox replay");

	if (err < 0)
		return err;
	*changed += (size_t)store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return 0;
}

int store_pg_apply_replay(struct store *s, struct store_req *r)
{
	char names[2 * STORE_MAX_SINKS][STORE_SINK_NAME_MAX];
	struct store_pg_num n_id, n_now;
	const char *v[1] = {store_pg_num(&n_id, r->u.replay.event_id)};
	const char *now = store_pg_num(&n_now, util_now_ms());
	PGresult *res;
	size_t n = 0;
	int err;

	r->changed = 0;
	err = store_pg_exec(s, "SELECT 1 FROM events WHERE id = $1", 1, v, &res, "replay lookup");
	if (err < 0)
		return err;
	n = (size_t)PQntuples(res);
	PQclear(res);
	if (n == 0)
		return -ENOENT;
	err = replay_sinks(s, r, names, &n);
	for (size_t i = 0; i < n && err == 0; i++)
		err = replay_one(s, r, names[i], now, &r->changed);
	return err;
}
