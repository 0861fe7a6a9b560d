/* The SQLite backend's outbox: the per-payment-ordered "next rows" query the forwarder polls
 * on its own read-only handle, counts and listings (forwarder gauges, komerce-hookctl), and the
 * outcome and replay requests, applied on the writer thread inside its transaction (or by
 * store_apply_now on komerce-hookctl's handle). The rows themselves are inserted by the event
 * request (store_sqlite_event.c), in the transaction that stores the event. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The newest row that replaced a dead one (index outbox_replay_of; NULL for other rows). */
#define REPLACEMENT(col) \
	"(SELECT " col " FROM outbox x WHERE x.replay_of = o.id ORDER BY x.id DESC LIMIT 1)"
#define ROW_COLUMNS                                                                        \
	"o.id, o.event_id, o.sink, o.state, o.attempts, o.next_attempt_at, o.created_at, " \
	"o.delivered_at, o.last_error, e.payment_id, e.order_id, e.status, e.amount, "     \
	"e.source, e.conflict, e.received_at, e.raw_json, o.replayed_at, o.replayed_by, "  \
	"CASE WHEN o.replayed_at IS NULL THEN NULL ELSE " REPLACEMENT(                     \
		"x.state") " END, "                                                        \
			   "CASE WHEN o.replayed_at IS NULL THEN NULL ELSE " REPLACEMENT(  \
				   "x.delivered_at") " END"
#define COL_RAW 16

/* Fills r from a row selected with ROW_COLUMNS; raw_json is left to the caller. */
static void read_row(sqlite3_stmt *st, struct store_outbox_row *r)
{
	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(st, 0);
	r->event_id = sqlite3_column_int64(st, 1);
	store_sqlite_col_copy(st, 2, r->sink, sizeof(r->sink));
	r->state = store_outbox_state_parse((const char *)sqlite3_column_text(st, 3));
	r->attempts = (long)sqlite3_column_int64(st, 4);
	r->next_attempt_at = sqlite3_column_int64(st, 5);
	r->created_at = sqlite3_column_int64(st, 6);
	r->delivered_at = store_sqlite_col_i64(st, 7, 0);
	store_sqlite_col_copy(st, 8, r->last_error, sizeof(r->last_error));
	store_sqlite_col_copy(st, 9, r->payment_id, sizeof(r->payment_id));
	store_sqlite_col_copy(st, 10, r->order_id, sizeof(r->order_id));
	r->status = payment_status_parse((const char *)sqlite3_column_text(st, 11));
	r->amount = store_sqlite_col_i64(st, 12, -1);
	store_sqlite_col_copy(st, 13, r->source, sizeof(r->source));
	r->conflict = sqlite3_column_int(st, 14) != 0;
	r->received_at = sqlite3_column_int64(st, 15);
	r->replayed_at = store_sqlite_col_i64(st, 17, 0);
	store_sqlite_col_copy(st, 18, r->replayed_by, sizeof(r->replayed_by));
	r->replay_state = store_outbox_state_parse((const char *)sqlite3_column_text(st, 19));
	r->replay_delivered_at = store_sqlite_col_i64(st, 20, 0);
}

int store_sqlite_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
			     struct store_outbox_row **ret_rows, size_t *ret_n)
{
	/* The correlated subquery keeps per-payment order: a row is a candidate only while it is
	 * the lowest pending id of its payment for this sink (index outbox_payment). Ordering by
	 * next_attempt_at follows index outbox_pending, so LIMIT stops the scan early instead of
	 * sorting every due row of a large backlog. */
	static const char sql[] =
		"SELECT " ROW_COLUMNS " FROM outbox o JOIN events e ON e.id = o.event_id "
		"WHERE o.sink = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2 "
		"AND o.id = (SELECT min(p.id) FROM outbox p WHERE p.sink = ?1 "
		"AND p.payment_id = o.payment_id AND p.state = 'pending') "
		"ORDER BY o.next_attempt_at, o.id LIMIT ?3";
	struct store_outbox_row *rows;
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, r;

	rows = calloc((size_t)limit, sizeof(*rows));
	if (rows == NULL)
		return -ENOMEM;
	r = store_sqlite_prepare(s, sql, &st, "outbox next");
	if (r < 0) {
		free(rows);
		return r;
	}
	sqlite3_bind_text(st, 1, sink, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms);
	sqlite3_bind_int64(st, 3, limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < (size_t)limit) {
		struct store_outbox_row *row = &rows[n];
		const unsigned char *raw;
		size_t len;

		read_row(st, row);
		raw = sqlite3_column_text(st, COL_RAW);
		len = (size_t)sqlite3_column_bytes(st, COL_RAW);
		row->raw_json = malloc(len + 1);
		if (row->raw_json == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		if (len > 0)
			memcpy(row->raw_json, raw, len);
		row->raw_json[len] = '\0';
		row->raw_len = len;
		n++;
	}
	r = store_sqlite_finish(s, st, rc, "outbox next");
	if (r < 0) {
		store_outbox_rows_free(rows, n);
		return r;
	}
	*ret_rows = rows;
	*ret_n = n;
	return 0;
}

int store_sqlite_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
			      int64_t *ret)
{
	char sql[160];
	sqlite3_stmt *st;
	int rc, r;

	/* The state is written literally so that the partial index on pending rows applies. */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM outbox WHERE 1 %s %s%s%s",
		 sink != NULL ? "AND sink = ?1" : "",
		 state != STORE_OUTBOX_ANY ? "AND state = '" : "",
		 state != STORE_OUTBOX_ANY ? store_outbox_state_name(state) : "",
		 state != STORE_OUTBOX_ANY ? "'" : "");
	r = store_sqlite_prepare(s, sql, &st, "outbox count");
	if (r < 0)
		return r;
	if (sink != NULL)
		sqlite3_bind_text(st, 1, sink, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		rc = SQLITE_ERROR;
	return store_sqlite_finish(s, st, rc, "outbox count");
}

int store_sqlite_outbox_list(struct store *s, const struct store_outbox_filter *f,
			     int (*fn)(void *arg, const struct store_outbox_row *r), void *arg)
{
	char sql[768];
	size_t o;
	sqlite3_stmt *st;
	int rc, r;

	o = (size_t)snprintf(sql, sizeof(sql),
			     "SELECT " ROW_COLUMNS " FROM outbox o JOIN events e ON e.id = "
			     "o.event_id WHERE o.id > ?1");
	if (f->sink != NULL)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND o.sink = ?2");
	if (f->state != STORE_OUTBOX_ANY)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND o.state = '%s'",
				      store_outbox_state_name(f->state));
	if (f->event_id != 0)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND o.event_id = ?3");
	o += (size_t)snprintf(sql + o, sizeof(sql) - o, " ORDER BY o.id");
	if (f->limit > 0)
		snprintf(sql + o, sizeof(sql) - o, " LIMIT ?4");
	r = store_sqlite_prepare(s, sql, &st, "outbox list");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, f->after_id);
	if (f->sink != NULL)
		sqlite3_bind_text(st, 2, f->sink, -1, SQLITE_STATIC);
	if (f->event_id != 0)
		sqlite3_bind_int64(st, 3, f->event_id);
	if (f->limit > 0)
		sqlite3_bind_int64(st, 4, f->limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_outbox_row row;

		read_row(st, &row);
		row.raw_json = (char *)sqlite3_column_text(st, COL_RAW);
		row.raw_len = (size_t)sqlite3_column_bytes(st, COL_RAW);
		r = fn(arg, &row);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "outbox list");
}

int store_sqlite_outbox_summaries(struct store *s,
				  int (*fn)(void *arg, const struct store_outbox_summary *sum),
				  void *arg)
{
	static const char sql[] = "SELECT sink, sum(state = 'pending'), sum(state = 'delivered'), "
				  "sum(state = 'dead' AND replayed_at IS NULL), "
				  "min(CASE WHEN state = 'pending' THEN created_at END), "
				  "sum(state = 'dead' AND replayed_at IS NOT NULL) "
				  "FROM outbox GROUP BY sink ORDER BY sink";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "outbox summary");
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_outbox_summary sum;

		memset(&sum, 0, sizeof(sum));
		store_sqlite_col_copy(st, 0, sum.sink, sizeof(sum.sink));
		sum.pending = sqlite3_column_int64(st, 1);
		sum.delivered = sqlite3_column_int64(st, 2);
		sum.dead = sqlite3_column_int64(st, 3);
		sum.oldest_pending_at = store_sqlite_col_i64(st, 4, 0);
		sum.replayed = sqlite3_column_int64(st, 5);
		r = fn(arg, &sum);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "outbox summary");
}

/* ---- write requests ---- */

/* Binds text cut to STORE_ERR_MAX - 1 bytes, never in the middle of a UTF-8 sequence. */
static void bind_error(sqlite3_stmt *st, int i, const char *e)
{
	size_t len;

	if (e == NULL || e[0] == '\0') {
		sqlite3_bind_null(st, i);
		return;
	}
	len = strnlen(e, STORE_ERR_MAX - 1);
	while (len > 0 && e[len] != '\0' && ((unsigned char)e[len] & 0xc0) == 0x80)
		len--;
	sqlite3_bind_text(st, i, e, (int)len, SQLITE_TRANSIENT);
}

#define N_VERDICTS (STORE_OUTBOX_MARK_POSTPONE + 1)

int store_sqlite_apply_outcomes(struct store *s, struct store_req *r)
{
	static const char *const sql[N_VERDICTS] = {
		[STORE_OUTBOX_MARK_DELIVERED] = "UPDATE outbox SET state = 'delivered', "
						"delivered_at = ?2 WHERE id = ?1 AND state = "
						"'pending'",
		[STORE_OUTBOX_MARK_RETRY] = "UPDATE outbox SET attempts = attempts + 1, "
					    "next_attempt_at = ?2, last_error = ?3 WHERE id = ?1 "
					    "AND state = 'pending'",
		[STORE_OUTBOX_MARK_DEAD] =
			"UPDATE outbox SET state = 'dead', attempts = attempts + "
			"1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1 "
			"AND state = 'pending'",
		[STORE_OUTBOX_MARK_POSTPONE] = "UPDATE outbox SET next_attempt_at = ?2, "
					       "last_error = ?3 WHERE id = ?1 AND state = "
					       "'pending'",
	};
	sqlite3_stmt *st[N_VERDICTS] = {NULL};
	int err = 0;

	r->changed = 0;
	for (size_t i = 0; i < r->u.outcomes.n && err == 0; i++) {
		const struct store_outbox_outcome *o = &r->u.outcomes.list[i];
		int v = (int)o->verdict, rc;

		if (v < 0 || v >= N_VERDICTS) {
			err = -EINVAL;
			break;
		}
		if (st[v] == NULL) {
			err = store_sqlite_prepare(s, sql[v], &st[v], "outbox outcome");
			if (err < 0)
				break;
		}
		sqlite3_reset(st[v]);
		sqlite3_clear_bindings(st[v]);
		sqlite3_bind_int64(st[v], 1, o->outbox_id);
		sqlite3_bind_int64(st[v], 2, o->at);
		if (v != STORE_OUTBOX_MARK_DELIVERED)
			bind_error(st[v], 3, o->error);
		rc = sqlite3_step(st[v]);
		if (rc != SQLITE_DONE) {
			store_sqlite_set_err(s, "outbox outcome");
			err = store_sqlite_errno_or_eio(rc);
			break;
		}
		r->changed += (size_t)sqlite3_changes(store_sqlite_db(s));
	}
	for (size_t i = 0; i < N_VERDICTS; i++)
		sqlite3_finalize(st[i]);
	return err;
}

/* Inserts one pending row for (event, sink) unless one is already pending; the newest dead
 * row of the pair, if any, is marked replayed and named by the new row. */
static int replay_one(struct store *s, const struct store_req *req, const char *payment_id,
		      const char *sink, int64_t now, size_t *changed)
{
	static const char insert[] =
		"INSERT INTO outbox (event_id, payment_id, sink, next_attempt_at, created_at, "
		"replay_of) SELECT ?1, ?2, ?3, ?4, ?4, (SELECT max(id) FROM outbox WHERE "
		"event_id = ?1 AND sink = ?3 AND state = 'dead' AND replayed_at IS NULL) WHERE NOT "
		"EXISTS (SELECT 1 FROM "
		"outbox WHERE event_id = ?1 AND sink = ?3 AND state = 'pending')";
	static const char mark[] =
		"UPDATE outbox SET replayed_at = ?2, replayed_by = ?3 WHERE id = "
		"(SELECT replay_of FROM outbox WHERE id = ?1)";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, insert, &st, "outbox replay");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, req->u.replay.event_id);
	sqlite3_bind_text(st, 2, payment_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, sink, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now);
	rc = sqlite3_step(st);
	r = store_sqlite_finish(s, st, rc, "outbox replay");
	if (r < 0 || sqlite3_changes(store_sqlite_db(s)) == 0)
		return r;
	(*changed)++;
	r = store_sqlite_prepare(s, mark, &st, "outbox replay mark");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, sqlite3_last_insert_rowid(store_sqlite_db(s)));
	sqlite3_bind_int64(st, 2, now);
	store_sqlite_bind_text_or_null(st, 3, req->u.replay.by);
	rc = sqlite3_step(st);
	return store_sqlite_finish(s, st, rc, "outbox replay mark");
}

/* The sinks event_id was queued for before, into names (at most max): for a handle opened
 * without the configuration's sinks (komerce-hookctl --db). */
static int queued_sinks(struct store *s, int64_t event_id, char (*names)[STORE_SINK_NAME_MAX],
			size_t max, size_t *ret_n)
{
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, r;

	r = store_sqlite_prepare(
		s, "SELECT DISTINCT sink FROM outbox WHERE event_id = ?1 ORDER BY sink", &st,
		"replay sinks");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, event_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max)
		store_sqlite_col_copy(st, 0, names[n++], sizeof(names[0]));
	*ret_n = n;
	return store_sqlite_finish(s, st, rc, "replay sinks");
}

/* The sinks a replay goes to, into names: the one asked for (which the handle must know, when
 * it knows any), else the handle's, else those the event was queued for. */
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

int store_sqlite_apply_replay(struct store *s, struct store_req *r)
{
	char payment_id[EVENT_ID_MAX];
	char names[2 * STORE_MAX_SINKS][STORE_SINK_NAME_MAX];
	size_t n = 0;
	int64_t now = util_now_ms();
	sqlite3_stmt *st;
	int rc, err;

	r->changed = 0;
	err = store_sqlite_prepare(s, "SELECT payment_id FROM events WHERE id = ?1", &st,
				   "replay lookup");
	if (err < 0)
		return err;
	sqlite3_bind_int64(st, 1, r->u.replay.event_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		store_sqlite_col_copy(st, 0, payment_id, sizeof(payment_id));
	err = store_sqlite_finish(s, st, rc, "replay lookup");
	if (err < 0)
		return err;
	if (rc == SQLITE_DONE)
		return -ENOENT;
	err = replay_sinks(s, r, names, &n);
	for (size_t i = 0; i < n && err == 0; i++)
		err = replay_one(s, r, payment_id, names[i], now, &r->changed);
	return err;
}
