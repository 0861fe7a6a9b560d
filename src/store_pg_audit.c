/* The PostgreSQL backend's audit queries for komerce-hookctl and the admin API: the hash-chain
 * verifier (streamed: memory stays flat however long the chain), rows that refer to deleted
 * events, aggregate statistics inside one snapshot, and the query plan of an events filter.
 * Each runs on the caller's own handle. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct verify_walk {
	struct store *s;
	uint8_t prev[STORE_HASH_LEN];
	int64_t checked, expect_id, bad_id;
	char *why;
	size_t why_len;
};

static int verify_row(void *arg, PGresult *res)
{
	struct verify_walk *w = arg;
	int64_t id = store_pg_i64(res, 0, 0, 0);
	uint8_t prev[STORE_HASH_LEN], stored[STORE_HASH_LEN], h[STORE_HASH_LEN];

	if (id != w->expect_id) {
		snprintf(w->why, w->why_len, "id %lld follows %lld: %s", (long long)id,
			 (long long)(w->expect_id - 1),
			 id > w->expect_id ? "rows missing (deleted)" : "ids out of order");
		w->bad_id = id;
		return -EBADMSG;
	}
	store_pg_hash(res, 0, 10, prev);
	if (PQgetlength(res, 0, 10) != 2 * STORE_HASH_LEN ||
	    memcmp(prev, w->prev, STORE_HASH_LEN) != 0) {
		snprintf(w->why, w->why_len, "prev_hash does not match the hash of event %lld",
			 (long long)(id - 1));
		w->bad_id = id;
		return -EBADMSG;
	}
	if (store_event_hash_marked(w->prev, id, PQgetvalue(res, 0, 1),
				    PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2),
				    PQgetvalue(res, 0, 3), store_pg_i64(res, 0, 4, -1),
				    PQgetvalue(res, 0, 5), store_pg_bool(res, 0, 6),
				    PQgetvalue(res, 0, 7), PQgetvalue(res, 0, 8),
				    (size_t)PQgetlength(res, 0, 8), store_pg_i64(res, 0, 9, 0),
				    PQgetisnull(res, 0, 12) ? NULL : PQgetvalue(res, 0, 12),
				    store_pg_i64(res, 0, 13, 0), h) < 0) {
		/* not a finding about the chain: the caller reports store_errmsg() */
		snprintf(w->s->err, sizeof(w->s->err), "verify: out of memory");
		return -ENOMEM;
	}
	store_pg_hash(res, 0, 11, stored);
	if (PQgetlength(res, 0, 11) != 2 * STORE_HASH_LEN ||
	    memcmp(stored, h, STORE_HASH_LEN) != 0) {
		snprintf(w->why, w->why_len, "content does not match its hash (row was altered)");
		w->bad_id = id;
		return -EBADMSG;
	}
	memcpy(w->prev, h, STORE_HASH_LEN);
	w->checked++;
	w->expect_id++;
	return 0;
}

int store_pg_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		    size_t why_len)
{
	static const char sql[] = "SELECT id, payment_id, order_id, status, amount, source, "
				  "conflict, dedupe_key, raw_json, received_at, "
				  "encode(prev_hash, 'hex'), encode(hash, 'hex'), confirmation, "
				  "held_event_id FROM events ORDER BY id";
	struct verify_walk w = {.s = s, .expect_id = 1, .why = why, .why_len = why_len};
	int r;

	r = store_pg_stream(s, sql, 0, NULL, verify_row, &w, "verify");
	*ret_checked = w.checked;
	if (r == -EBADMSG)
		*ret_bad_id = w.bad_id;
	return r;
}

int store_pg_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len)
{
	static const char sql[] =
		"SELECT min(id), max(t) FROM ("
		"SELECT r.event_id AS id, 'receipts' AS t FROM receipts r "
		"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id) "
		"UNION ALL SELECT o.event_id, 'outbox' FROM outbox o "
		"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = o.event_id)) x";
	PGresult *res;
	int r;

	r = store_pg_exec(s, sql, 0, NULL, &res, "orphans");
	if (r < 0)
		return r;
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
		*ret_bad_id = store_pg_i64(res, 0, 0, 0);
		snprintf(why, why_len, "event is missing but %s rows refer to it (rows deleted)",
			 PQgetvalue(res, 0, 1));
		r = -EBADMSG;
	}
	PQclear(res);
	return r;
}

/* ---- statistics ---- */

static int source_index(const char *v)
{
	for (int i = 0; i < EVENT_SOURCE_COUNT; i++) {
		if (v != NULL && strcmp(v, event_source_name((enum event_source)i)) == 0)
			return i;
	}
	return -1;
}

static void rows_events(PGresult *res, struct store_stats *t)
{
	for (int i = 0; i < PQntuples(res); i++) {
		enum payment_status st = payment_status_parse(PQgetvalue(res, i, 0));
		int src = source_index(PQgetvalue(res, i, 1));
		int64_t n = store_pg_i64(res, i, 2, 0);

		t->events += n;
		t->conflicts += store_pg_i64(res, i, 3, 0);
		if (st != PAYMENT_UNKNOWN)
			t->events_by_status[st] += n;
		if (src >= 0)
			t->events_by_source[src] += n;
	}
}

static void rows_payments(PGresult *res, struct store_stats *t)
{
	for (int i = 0; i < PQntuples(res); i++) {
		enum payment_status st = payment_status_parse(PQgetvalue(res, i, 0));
		int64_t n = store_pg_i64(res, i, 1, 0);

		t->payments += n;
		if (st != PAYMENT_UNKNOWN)
			t->payments_by_status[st] += n;
	}
}

static void rows_stale(PGresult *res, struct store_stats *t)
{
	t->stale = store_pg_i64(res, 0, 0, 0);
}

static void rows_receipts(PGresult *res, struct store_stats *t)
{
	t->receipts = store_pg_i64(res, 0, 0, 0);
}

static void rows_reconciled(PGresult *res, struct store_stats *t)
{
	t->reconciled = store_pg_i64(res, 0, 0, 0);
	t->reconciled_late_cb = store_pg_i64(res, 0, 1, 0);
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

/* Every figure in one REPEATABLE READ snapshot, so that they agree with each other. */
int store_pg_stats(struct store *s, int64_t now_ms, struct store_stats *ret)
{
	static const struct {
		const char *sql;
		bool bind_now_s;
		void (*rows)(PGresult *res, struct store_stats *ret);
	} q[] = {
		{"SELECT status, source, count(*), count(*) FILTER (WHERE conflict) FROM events "
		 "GROUP BY status, source",
		 false, rows_events},
		{"SELECT status, count(*) FROM payments GROUP BY status", false, rows_payments},
		{"SELECT count(*) FROM payments WHERE status = 'PENDING' "
		 "AND expires_at IS NOT NULL AND expires_at < $1",
		 true, rows_stale},
		{"SELECT count(*) FROM receipts", false, rows_receipts},
		/* The terminal event of a payment is the one for its current status (a conflicting
		 * later fact never changes the status); dedupe_key finds it by index. */
		{"SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM receipts r "
		 "WHERE r.event_id = e.id AND r.source = 'callback')) FROM payments p JOIN events "
		 "e "
		 "ON e.dedupe_key = p.payment_id || ':' || p.status "
		 "WHERE p.status IN ('PAID', 'EXPIRED', 'CANCELED') AND e.source = 'reconcile'",
		 false, rows_reconciled},
	};
	struct store_pg_num n_now;
	const char *v[1] = {store_pg_num(&n_now, now_ms / 1000)};
	struct store_stats t;
	int r;

	memset(&t, 0, sizeof(t));
	r = store_pg_exec_simple(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL,
				 "stats");
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]) && r == 0; i++) {
		PGresult *res;

		r = store_pg_exec(s, q[i].sql, q[i].bind_now_s ? 1 : 0, v, &res, "stats");
		if (r == 0) {
			q[i].rows(res, &t);
			PQclear(res);
		}
	}
	if (r == 0)
		r = store_pg_outbox_summaries(s, add_sink, &t);
	(void)store_pg_exec_simple(s, r == 0 ? "COMMIT" : "ROLLBACK", NULL, "stats");
	if (r < 0)
		return r;
	*ret = t;
	return 0;
}

/* ---- query plan ---- */

/* EXPLAIN of the statement store_pg_events_query() runs for f, with the same parameters. */
int store_pg_events_plan(struct store *s, const struct store_event_filter *f, char *out,
			 size_t out_len)
{
	struct store_pg_num nums[STORE_PG_EVENT_PARAMS];
	const char *v[STORE_PG_EVENT_PARAMS];
	char sql[1100];
	size_t o = 0;
	PGresult *res;
	int np, r;

	out[0] = '\0';
	memcpy(sql, "EXPLAIN ", 8);
	np = store_pg_events_sql(f, sql + 8, sizeof(sql) - 8, v, nums);
	r = store_pg_exec(s, sql, np, v, &res, "plan");
	if (r < 0)
		return r;
	for (int i = 0; i < PQntuples(res) && o < out_len; i++) {
		int w = snprintf(out + o, out_len - o, "%s\n", PQgetvalue(res, i, 0));

		o += w > 0 ? (size_t)w : 0;
	}
	PQclear(res);
	return 0;
}
