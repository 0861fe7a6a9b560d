/* The PostgreSQL backend's read queries: a payment, payments by status or staleness, events
 * with filters and cursor, counts and the chain's head. Used by the admin API, the reconciler and
 * komerce-hookctl, each on its own handle. The events query is built by events_sql(), which
 * the plan (store_pg_audit.c) explains, so the plan shown is the plan that runs. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_pg_payment_get(struct store *s, const char *payment_id, struct store_payment *ret)
{
	static const char sql[] =
		"SELECT " STORE_PG_PAYMENT_COLUMNS " FROM payments WHERE payment_id = $1";
	const char *v[1] = {payment_id};
	PGresult *res;
	int r;

	r = store_pg_exec(s, sql, 1, v, &res, "payment get");
	if (r < 0)
		return r;
	r = PQntuples(res) == 0 ? -ENOENT : 0;
	if (r == 0)
		store_pg_payment_read(res, 0, ret);
	PQclear(res);
	return r;
}

int store_pg_events_sql(const struct store_event_filter *f, char *sql, size_t len, const char **v,
			struct store_pg_num *nums)
{
	size_t o;
	int np = 0;

	v[np] = store_pg_num(&nums[np], f->after_id);
	np++;
	o = (size_t)snprintf(sql, len,
			     "SELECT e.id, e.payment_id, e.order_id, e.status, e.amount, e.source, "
			     "e.conflict, e.received_at, e.raw_json, encode(e.hash, 'hex'), "
			     "(SELECT count(*) FROM receipts r WHERE r.event_id = e.id), "
			     "e.confirmation, e.held_event_id FROM events e WHERE e.id > $1");
	if (f->payment_id != NULL) {
		/* The dedupe_key index ("<payment_id>:<status>", collation "C") serves lookups
		 * by payment as a prefix range. */
		v[np++] = f->payment_id;
		o += (size_t)snprintf(sql + o, len - o,
				      " AND e.dedupe_key >= ($%d || ':') AND e.dedupe_key < ($%d "
				      "|| ';') AND e.payment_id = $%d",
				      np, np, np);
	}
	if (f->order_id != NULL) {
		v[np++] = f->order_id;
		o += (size_t)snprintf(sql + o, len - o, " AND e.order_id = $%d", np);
	}
	if (f->source != NULL) {
		v[np++] = f->source;
		o += (size_t)snprintf(sql + o, len - o, " AND e.source = $%d", np);
	}
	if (f->status != PAYMENT_UNKNOWN) {
		v[np++] = payment_status_name(f->status);
		o += (size_t)snprintf(sql + o, len - o, " AND e.status = $%d", np);
	}
	if (f->since_ms != 0) {
		v[np] = store_pg_num(&nums[np], f->since_ms);
		np++;
		o += (size_t)snprintf(sql + o, len - o, " AND e.received_at >= $%d", np);
	}
	if (f->until_ms != 0) {
		v[np] = store_pg_num(&nums[np], f->until_ms);
		np++;
		o += (size_t)snprintf(sql + o, len - o, " AND e.received_at < $%d", np);
	}
	o += (size_t)snprintf(sql + o, len - o, " ORDER BY e.id");
	if (f->limit > 0) {
		v[np] = store_pg_num(&nums[np], f->limit);
		np++;
		snprintf(sql + o, len - o, " LIMIT $%d", np);
	}
	return np;
}

struct event_rows {
	int (*fn)(void *arg, const struct store_event *e);
	void *arg;
};

static int event_row(void *arg, PGresult *res)
{
	struct event_rows *x = arg;
	struct store_event e;

	memset(&e, 0, sizeof(e));
	e.id = store_pg_i64(res, 0, 0, 0);
	store_pg_copy(res, 0, 1, e.payment_id, sizeof(e.payment_id));
	store_pg_copy(res, 0, 2, e.order_id, sizeof(e.order_id));
	e.status = payment_status_parse(PQgetvalue(res, 0, 3));
	e.amount = store_pg_i64(res, 0, 4, -1);
	store_pg_copy(res, 0, 5, e.source, sizeof(e.source));
	e.conflict = store_pg_bool(res, 0, 6);
	e.received_at = store_pg_i64(res, 0, 7, 0);
	e.raw_json = PQgetvalue(res, 0, 8);
	store_pg_hash(res, 0, 9, e.hash);
	e.receipts = (long)store_pg_i64(res, 0, 10, 0);
	e.mark = store_event_mark_parse(PQgetisnull(res, 0, 11) ? NULL : PQgetvalue(res, 0, 11));
	e.held_event_id = store_pg_i64(res, 0, 12, 0);
	return x->fn(x->arg, &e);
}

int store_pg_events_query(struct store *s, const struct store_event_filter *f,
			  int (*fn)(void *arg, const struct store_event *e), void *arg)
{
	struct store_pg_num nums[STORE_PG_EVENT_PARAMS];
	const char *v[STORE_PG_EVENT_PARAMS];
	struct event_rows x = {fn, arg};
	char sql[1024];
	int np;

	np = store_pg_events_sql(f, sql, sizeof(sql), v, nums);
	return store_pg_stream(s, sql, np, v, event_row, &x, "events query");
}

int store_pg_count(struct store *s, const char *table, int64_t *ret)
{
	char sql[64];
	PGresult *res;
	int r;

	/* table is one of store_count()'s allowed names. */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	r = store_pg_exec(s, sql, 0, NULL, &res, "count");
	if (r < 0)
		return r;
	*ret = store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return 0;
}

int store_pg_chain_head(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN])
{
	PGresult *res;
	int r;

	r = store_pg_exec(s, "SELECT id, encode(hash, 'hex') FROM events ORDER BY id DESC LIMIT 1",
			  0, NULL, &res, "chain head");
	if (r < 0)
		return r;
	*ret_id = 0;
	memset(ret_hash, 0, STORE_HASH_LEN);
	if (PQntuples(res) == 1) {
		*ret_id = store_pg_i64(res, 0, 0, 0);
		store_pg_hash(res, 0, 1, ret_hash);
	}
	PQclear(res);
	return 0;
}

struct payment_rows {
	int (*fn)(void *arg, const struct store_payment *p);
	void *arg;
};

static int payment_row(void *arg, PGresult *res)
{
	struct payment_rows *x = arg;
	struct store_payment p;

	store_pg_payment_read(res, 0, &p);
	return x->fn(x->arg, &p);
}

int store_pg_payments_list(struct store *s, const struct store_payment_filter *f,
			   int (*fn)(void *arg, const struct store_payment *p), void *arg)
{
	struct payment_rows x = {fn, arg};
	struct store_pg_num n_now, n_limit;
	const char *v[3];
	char sql[768];
	size_t o;
	int np = 0;

	o = (size_t)snprintf(sql, sizeof(sql),
			     "SELECT " STORE_PG_PAYMENT_COLUMNS " FROM payments WHERE true");
	if (f->status != PAYMENT_UNKNOWN) {
		v[np++] = payment_status_name(f->status);
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND status = $%d", np);
	}
	if (f->stale) {
		v[np++] = store_pg_num(&n_now, f->now_ms / 1000);
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND status = 'PENDING' AND expires_at IS NOT NULL"
				      " AND expires_at < $%d",
				      np);
	}
	o += (size_t)snprintf(sql + o, sizeof(sql) - o, " ORDER BY created_at, payment_id");
	if (f->limit > 0) {
		v[np++] = store_pg_num(&n_limit, f->limit);
		snprintf(sql + o, sizeof(sql) - o, " LIMIT $%d", np);
	}
	return store_pg_stream(s, sql, np, v, payment_row, &x, "payments");
}
