/* The SQLite backend's audit queries for komerce-hookctl and the admin API: the hash-chain
 * verifier, rows that refer to deleted events, aggregate statistics, and the query plan of an
 * events filter. Each runs on the caller's own (read-only) handle. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int store_sqlite_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
			size_t why_len)
{
	uint8_t prev[STORE_HASH_LEN] = {0}, h[STORE_HASH_LEN];
	int64_t checked = 0, expect_id = 1;
	sqlite3_stmt *st;
	char sql[320];
	int rc, r = 0;

	snprintf(sql, sizeof(sql),
		 "SELECT id, payment_id, order_id, status, amount, source, conflict, dedupe_key, "
		 "raw_json, received_at, prev_hash, hash, %s FROM events ORDER BY id",
		 STORE_SQLITE_EVENT_V2(s, ""));
	if (sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, &st, NULL) != SQLITE_OK) {
		store_sqlite_set_err(s, "verify");
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0);
		const void *ph = sqlite3_column_blob(st, 10), *hh = sqlite3_column_blob(st, 11);

		if (id != expect_id) {
			snprintf(why, why_len, "id %lld follows %lld: %s", (long long)id,
				 (long long)(expect_id - 1),
				 id > expect_id ? "rows missing (deleted)" : "ids out of order");
			*ret_bad_id = id;
			r = -EBADMSG;
			break;
		}
		if (ph == NULL || sqlite3_column_bytes(st, 10) != STORE_HASH_LEN ||
		    memcmp(ph, prev, STORE_HASH_LEN) != 0) {
			snprintf(why, why_len, "prev_hash does not match the hash of event %lld",
				 (long long)(id - 1));
			*ret_bad_id = id;
			r = -EBADMSG;
			break;
		}
		if (store_event_hash_marked(prev, id, (const char *)sqlite3_column_text(st, 1),
					    (const char *)sqlite3_column_text(st, 2),
					    (const char *)sqlite3_column_text(st, 3),
					    store_sqlite_col_i64(st, 4, -1),
					    (const char *)sqlite3_column_text(st, 5),
					    sqlite3_column_int(st, 6) != 0,
					    (const char *)sqlite3_column_text(st, 7),
					    (const char *)sqlite3_column_text(st, 8),
					    (size_t)sqlite3_column_bytes(st, 8),
					    sqlite3_column_int64(st, 9),
					    (const char *)sqlite3_column_text(st, 12),
					    store_sqlite_col_i64(st, 13, 0), h) < 0) {
			snprintf(s->err, sizeof(s->err), "verify: out of memory");
			r = -ENOMEM;
			break;
		}
		if (hh == NULL || sqlite3_column_bytes(st, 11) != STORE_HASH_LEN ||
		    memcmp(hh, h, STORE_HASH_LEN) != 0) {
			snprintf(why, why_len, "content does not match its hash (row was altered)");
			*ret_bad_id = id;
			r = -EBADMSG;
			break;
		}
		memcpy(prev, h, STORE_HASH_LEN);
		checked++;
		expect_id++;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		store_sqlite_set_err(s, "verify");
		r = store_sqlite_errno(rc);
	}
	sqlite3_finalize(st);
	*ret_checked = checked;
	return r;
}

int store_sqlite_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len)
{
	static const char sql[] =
		"SELECT min(id), max(t) FROM ("
		"SELECT r.event_id AS id, 'receipts' AS t FROM receipts r "
		"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id) "
		"UNION ALL SELECT o.event_id, 'outbox' FROM outbox o "
		"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = o.event_id))";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "orphans");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*ret_bad_id = sqlite3_column_int64(st, 0);
		snprintf(why, why_len, "event is missing but %s rows refer to it (rows deleted)",
			 (const char *)sqlite3_column_text(st, 1));
		r = -EBADMSG;
	} else if (rc != SQLITE_ROW) {
		store_sqlite_set_err(s, "orphans");
		r = store_sqlite_errno_or_eio(rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* ---- statistics ---- */

/* Runs sql (bound with bind_i64 as ?1 when non-zero) and calls row() for each result row. */
static int each_row(struct store *s, const char *sql, int64_t bind_i64,
		    void (*row)(sqlite3_stmt *st, struct store_stats *ret), struct store_stats *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "stats");
	if (r < 0)
		return r;
	if (bind_i64 != 0)
		sqlite3_bind_int64(st, 1, bind_i64);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		row(st, ret);
	return store_sqlite_finish(s, st, rc, "stats");
}

static int source_index(const char *v)
{
	for (int i = 0; i < 3; i++) {
		if (v != NULL && strcmp(v, event_source_name((enum event_source)i)) == 0)
			return i;
	}
	return -1;
}

static void row_events(sqlite3_stmt *st, struct store_stats *t)
{
	enum payment_status status = payment_status_parse((const char *)sqlite3_column_text(st, 0));
	int src = source_index((const char *)sqlite3_column_text(st, 1));
	int64_t n = sqlite3_column_int64(st, 2);

	t->events += n;
	t->conflicts += sqlite3_column_int64(st, 3);
	if (status != PAYMENT_UNKNOWN)
		t->events_by_status[status] += n;
	if (src >= 0)
		t->events_by_source[src] += n;
}

static void row_payments(sqlite3_stmt *st, struct store_stats *t)
{
	enum payment_status status = payment_status_parse((const char *)sqlite3_column_text(st, 0));
	int64_t n = sqlite3_column_int64(st, 1);

	t->payments += n;
	if (status != PAYMENT_UNKNOWN)
		t->payments_by_status[status] += n;
}

static void row_stale(sqlite3_stmt *st, struct store_stats *t)
{
	t->stale = sqlite3_column_int64(st, 0);
}

static void row_receipts(sqlite3_stmt *st, struct store_stats *t)
{
	t->receipts = sqlite3_column_int64(st, 0);
}

static void row_reconciled(sqlite3_stmt *st, struct store_stats *t)
{
	t->reconciled = sqlite3_column_int64(st, 0);
	t->reconciled_late_cb = store_sqlite_col_i64(st, 1, 0);
}

static int add_sink(void *arg, const struct store_outbox_summary *sum)
{
	struct store_stats *t = arg;

	t->outbox_pending += sum->pending;
	t->outbox_delivered += sum->delivered;
	t->outbox_dead += sum->dead;
	t->outbox_replayed += sum->replayed;
	if (t->n_sinks < (sizeof(t->sinks) / sizeof(t->sinks[0]))) {
		struct store_sink_stats *k = &t->sinks[t->n_sinks++];

		snprintf(k->sink, sizeof(k->sink), "%s", sum->sink);
		k->pending = sum->pending;
		k->delivered = sum->delivered;
		k->dead = sum->dead;
		k->replayed = sum->replayed;
		k->oldest_pending_ms = sum->oldest_pending_at;
	}
	return 0;
}

int store_sqlite_stats(struct store *s, int64_t now_ms, struct store_stats *ret)
{
	static const struct {
		const char *sql;
		bool bind_now_s;
		void (*row)(sqlite3_stmt *st, struct store_stats *ret);
	} q[] = {
		{"SELECT status, source, count(*), total(conflict) FROM events "
		 "GROUP BY status, source",
		 false, row_events},
		{"SELECT status, count(*) FROM payments GROUP BY status", false, row_payments},
		{"SELECT count(*) FROM payments WHERE status = 'PENDING' "
		 "AND expires_at IS NOT NULL AND expires_at < ?1",
		 true, row_stale},
		{"SELECT count(*) FROM receipts", false, row_receipts},
		/* The terminal event of a payment is the one for its current status (a conflicting
		 * later fact never changes the status); dedupe_key finds it by index. */
		{"SELECT count(*), total(EXISTS (SELECT 1 FROM receipts r WHERE r.event_id = e.id "
		 "AND r.source = 'callback')) FROM payments p JOIN events e "
		 "ON e.dedupe_key = p.payment_id || ':' || p.status "
		 "WHERE p.status IN ('PAID', 'EXPIRED', 'CANCELED') AND e.source = 'reconcile'",
		 false, row_reconciled},
	};
	struct store_stats t;
	int r;

	memset(&t, 0, sizeof(t));
	r = store_sqlite_exec(s, "BEGIN");
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]) && r == 0; i++)
		r = each_row(s, q[i].sql, q[i].bind_now_s ? now_ms / 1000 : 0, q[i].row, &t);
	if (r == 0)
		r = store_sqlite_outbox_summaries(s, add_sink, &t);
	if (!sqlite3_get_autocommit(store_sqlite_db(s)))
		sqlite3_exec(store_sqlite_db(s), "COMMIT", NULL, NULL, NULL);
	if (r < 0)
		return r;
	*ret = t;
	return 0;
}

/* ---- query plan ---- */

struct plan_capture {
	char sql[1024];
	bool have;
};

static int plan_trace(unsigned type, void *ctx, void *p, void *x)
{
	struct plan_capture *c = ctx;
	const char *sql = sqlite3_sql(p);

	(void)x;
	if (type == SQLITE_TRACE_STMT && !c->have && sql != NULL) {
		snprintf(c->sql, sizeof(c->sql), "%s", sql);
		c->have = true;
	}
	return 0;
}

static int plan_progress(void *ctx)
{
	const struct plan_capture *c = ctx;

	return c->have ? 1 : 0; /* interrupt as soon as the statement is known */
}

static int plan_stop(void *arg, const struct store_event *e)
{
	(void)arg;
	(void)e;
	return 1;
}

/* The statement is the one store_events_query() builds (captured with a trace hook rather
 * than rebuilt here), so the plan shown is the plan that runs. */
int store_sqlite_events_plan(struct store *s, const struct store_event_filter *f, char *out,
			     size_t out_len)
{
	struct plan_capture c = {.have = false};
	char sql[1100];
	int depth_of[64][2]; /* (plan row id, depth) */
	size_t n_rows = 0, o = 0;
	sqlite3_stmt *st;
	int rc, r;

	out[0] = '\0';
	sqlite3_trace_v2(store_sqlite_db(s), SQLITE_TRACE_STMT, plan_trace, &c);
	sqlite3_progress_handler(store_sqlite_db(s), 1, plan_progress, &c);
	(void)store_sqlite_events_query(s, f, plan_stop, NULL);
	sqlite3_progress_handler(store_sqlite_db(s), 0, NULL, NULL);
	sqlite3_trace_v2(store_sqlite_db(s), 0, NULL, NULL);
	s->err[0] = '\0';
	if (!c.have) {
		snprintf(s->err, sizeof(s->err), "plan: the events query did not start");
		return -EIO;
	}
	snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", c.sql);
	r = store_sqlite_prepare(s, sql, &st, "plan");
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int id = sqlite3_column_int(st, 0), parent = sqlite3_column_int(st, 1), depth = 0;
		const unsigned char *detail = sqlite3_column_text(st, 3);

		for (size_t i = 0; i < n_rows; i++) {
			if (depth_of[i][0] == parent)
				depth = depth_of[i][1] + 1;
		}
		if (n_rows < sizeof(depth_of) / sizeof(depth_of[0])) {
			depth_of[n_rows][0] = id;
			depth_of[n_rows][1] = depth;
			n_rows++;
		}
		if (o < out_len) {
			int w = snprintf(out + o, out_len - o, "%*s%s\n", 2 * depth, "",
					 detail != NULL ? (const char *)detail : "");

			o += w > 0 ? (size_t)w : 0;
		}
	}
	r = rc == SQLITE_DONE ? 0 : -EIO;
	if (r < 0)
		store_sqlite_set_err(s, "plan");
	sqlite3_finalize(st);
	return r;
}
