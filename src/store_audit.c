/* Audit queries of the store module (see store_audit.h): payment listings, statistics, replay
 * from outside the daemon, the online backup, query plans and the JSON form of an event. Called
 * by komerce-hookctl (one thread) and by the admin API's per-connection threads, each on its
 * own read-only struct store; replay opens its own read-write connection. */
#include "store_int.h"
#include "store_audit.h"
#include "store_outbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "util.h"

/* ---- events filter ---- */

/* A decimal integer in [min, LLONG_MAX], nothing else (no sign, no spaces). */
static int parse_int(const char *v, long long min, long long *ret)
{
	char *end;
	long long n;

	if (v[0] < '0' || v[0] > '9')
		return -EINVAL;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < min)
		return -EINVAL;
	*ret = n;
	return 0;
}

static const char *source_name(const char *v)
{
	static const enum event_source all[] = {EVENT_SOURCE_CALLBACK, EVENT_SOURCE_RECONCILE,
						EVENT_SOURCE_API};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcasecmp(v, event_source_name(all[i])) == 0)
			return event_source_name(all[i]);
	}
	return NULL;
}

int store_audit_filter_set(struct store_event_filter *f, const char *name, const char *value,
			   char *why, size_t why_len)
{
	bool empty = value == NULL || value[0] == '\0';
	long long n;
	int64_t ms;

	if (strcmp(name, "payment_id") == 0 || strcmp(name, "order_id") == 0) {
		if (!empty && strlen(value) >= EVENT_ID_MAX) {
			snprintf(why, why_len, "longer than %d bytes", EVENT_ID_MAX - 1);
			return -EINVAL;
		}
		if (name[0] == 'p')
			f->payment_id = empty ? NULL : value;
		else
			f->order_id = empty ? NULL : value;
	} else if (strcmp(name, "status") == 0) {
		f->status = empty ? PAYMENT_UNKNOWN : payment_status_parse(value);
		if (!empty && f->status == PAYMENT_UNKNOWN) {
			snprintf(why, why_len, "must be PENDING, PAID, EXPIRED or CANCELED");
			return -EINVAL;
		}
	} else if (strcmp(name, "source") == 0) {
		f->source = empty ? NULL : source_name(value);
		if (!empty && f->source == NULL) {
			snprintf(why, why_len, "must be callback, reconcile or api");
			return -EINVAL;
		}
	} else if (strcmp(name, "since") == 0 || strcmp(name, "until") == 0) {
		ms = 0;
		if (!empty && util_parse_time_ms(value, &ms) < 0) {
			snprintf(why, why_len, "not an ISO 8601 time or unix seconds");
			return -EINVAL;
		}
		if (name[0] == 's')
			f->since_ms = ms;
		else
			f->until_ms = ms;
	} else if (strcmp(name, "after_id") == 0) {
		n = 0;
		if (!empty && parse_int(value, 0, &n) < 0) {
			snprintf(why, why_len, "must be a non-negative integer");
			return -EINVAL;
		}
		f->after_id = n;
	} else if (strcmp(name, "limit") == 0) {
		n = 0;
		if (!empty && (parse_int(value, 1, &n) < 0 || n > LONG_MAX)) {
			snprintf(why, why_len, "must be a positive integer");
			return -EINVAL;
		}
		f->limit = (long)n;
	} else {
		snprintf(why, why_len, "unknown filter");
		return -ENOENT;
	}
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
int store_audit_events_plan(struct store *s, const struct store_event_filter *f, char *out,
			    size_t out_len)
{
	struct plan_capture c = {.have = false};
	char sql[1100];
	int depth_of[64][2]; /* (plan row id, depth) */
	size_t n_rows = 0, o = 0;
	sqlite3_stmt *st;
	int rc, r;

	out[0] = '\0';
	sqlite3_trace_v2(s->db, SQLITE_TRACE_STMT, plan_trace, &c);
	sqlite3_progress_handler(s->db, 1, plan_progress, &c);
	(void)store_events_query(s, f, plan_stop, NULL);
	sqlite3_progress_handler(s->db, 0, NULL, NULL);
	sqlite3_trace_v2(s->db, 0, NULL, NULL);
	s->err[0] = '\0';
	if (!c.have) {
		snprintf(s->err, sizeof(s->err), "plan: the events query did not start");
		return -EIO;
	}
	snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", c.sql);
	r = store_prepare(s, sql, &st, "plan");
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
		store_set_err(s, "plan");
	sqlite3_finalize(st);
	return r;
}

/* ---- JSON form of an event ---- */

struct cJSON *store_audit_event_json(const struct store_event *e)
{
	cJSON *o = cJSON_CreateObject(), *cb = NULL;
	char iso[40];
	bool ok;

	if (o == NULL)
		return NULL;
	util_iso8601_ms(e->received_at, iso, sizeof(iso));
	ok = cJSON_AddNumberToObject(o, "id", (double)e->id) != NULL &&
	     cJSON_AddStringToObject(o, "payment_id", e->payment_id) != NULL &&
	     (e->order_id[0] != '\0' ? cJSON_AddStringToObject(o, "order_id", e->order_id)
				     : cJSON_AddNullToObject(o, "order_id")) != NULL &&
	     cJSON_AddStringToObject(o, "status", payment_status_name(e->status)) != NULL &&
	     (e->amount >= 0 ? cJSON_AddNumberToObject(o, "amount", (double)e->amount)
			     : cJSON_AddNullToObject(o, "amount")) != NULL &&
	     cJSON_AddStringToObject(o, "source", e->source) != NULL &&
	     cJSON_AddBoolToObject(o, "conflict", e->conflict) != NULL &&
	     cJSON_AddStringToObject(o, "received_at", iso) != NULL &&
	     cJSON_AddNumberToObject(o, "receipts", (double)e->receipts) != NULL;
	if (ok) {
		if (e->raw_json == NULL || e->raw_json[0] == '\0')
			cb = cJSON_CreateNull();
		else if ((cb = cJSON_Parse(e->raw_json)) == NULL)
			cb = cJSON_CreateString(e->raw_json);
		ok = cb != NULL && cJSON_AddItemToObject(o, "callback", cb);
		if (!ok)
			cJSON_Delete(cb);
	}
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* ---- events page (admin API) ---- */

struct page {
	char *buf;
	size_t len, cap, max_bytes;
	long count, want;
	int64_t last_id;
	bool more;
};

static int page_append(struct page *p, const char *s, size_t n)
{
	if (p->len + n + 1 > p->cap) {
		size_t cap = p->cap * 2 > p->len + n + 1 ? p->cap * 2 : p->len + n + 1;
		char *b = realloc(p->buf, cap);

		if (b == NULL)
			return -ENOMEM;
		p->buf = b;
		p->cap = cap;
	}
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
	return 0;
}

static int page_event(void *arg, const struct store_event *e)
{
	struct page *p = arg;
	cJSON *o;
	char *text;
	int r;

	if (p->count == p->want || (p->count > 0 && p->len > p->max_bytes)) {
		p->more = true;
		return 1;
	}
	o = store_audit_event_json(e);
	text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (text == NULL)
		return -ENOMEM;
	r = p->count > 0 ? page_append(p, ",", 1) : 0;
	if (r == 0)
		r = page_append(p, text, strlen(text));
	free(text);
	if (r < 0)
		return r;
	p->count++;
	p->last_id = e->id;
	return 0;
}

int store_audit_events_page(struct store *s, const struct store_event_filter *f, size_t max_bytes,
			    char **ret)
{
	struct store_event_filter q = *f;
	struct page p = {.max_bytes = max_bytes, .want = f->limit > 0 ? f->limit : 100};
	char tail[64];
	int r;

	q.limit = p.want + 1; /* one more row tells whether another page follows */
	r = page_append(&p, "{\"events\":[", 11);
	if (r == 0)
		r = store_events_query(s, &q, page_event, &p);
	if (r < 0) {
		free(p.buf);
		return r;
	}
	if (p.more)
		snprintf(tail, sizeof(tail), "],\"next_after_id\":%lld}", (long long)p.last_id);
	else
		snprintf(tail, sizeof(tail), "],\"next_after_id\":null}");
	r = page_append(&p, tail, strlen(tail));
	if (r < 0) {
		free(p.buf);
		return r;
	}
	*ret = p.buf;
	return 0;
}

/* ---- payments ---- */

int store_audit_payments(struct store *s, const struct store_payment_filter *f,
			 int (*fn)(void *arg, const struct store_payment *p), void *arg)
{
	char sql[768];
	size_t o;
	sqlite3_stmt *st;
	int rc, r;

	o = (size_t)snprintf(sql, sizeof(sql),
			     "SELECT " STORE_PAYMENT_COLUMNS " FROM payments WHERE 1");
	if (f->status != PAYMENT_UNKNOWN)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND status = ?1");
	if (f->stale)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND status = 'PENDING' AND expires_at IS NOT NULL"
				      " AND expires_at < ?2");
	o += (size_t)snprintf(sql + o, sizeof(sql) - o, " ORDER BY created_at, payment_id");
	if (f->limit > 0)
		snprintf(sql + o, sizeof(sql) - o, " LIMIT ?3");
	r = store_prepare(s, sql, &st, "payments");
	if (r < 0)
		return r;
	if (f->status != PAYMENT_UNKNOWN)
		sqlite3_bind_text(st, 1, payment_status_name(f->status), -1, SQLITE_STATIC);
	if (f->stale)
		sqlite3_bind_int64(st, 2, f->now_ms / 1000);
	if (f->limit > 0)
		sqlite3_bind_int64(st, 3, f->limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_payment p;

		store_payment_read(st, &p);
		r = fn(arg, &p);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_finish(s, st, rc, "payments");
}

/* ---- statistics ---- */

/* Runs sql (bound with bind_i64 as ?1 when non-zero) and calls row() for each result row. */
static int each_row(struct store *s, const char *sql, int64_t bind_i64,
		    void (*row)(sqlite3_stmt *st, struct store_audit_stats *ret),
		    struct store_audit_stats *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = store_prepare(s, sql, &st, "stats");
	if (r < 0)
		return r;
	if (bind_i64 != 0)
		sqlite3_bind_int64(st, 1, bind_i64);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		row(st, ret);
	return store_finish(s, st, rc, "stats");
}

static int source_index(const char *v)
{
	for (int i = 0; i < 3; i++) {
		if (v != NULL && strcmp(v, event_source_name((enum event_source)i)) == 0)
			return i;
	}
	return -1;
}

static void row_events(sqlite3_stmt *st, struct store_audit_stats *t)
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

static void row_payments(sqlite3_stmt *st, struct store_audit_stats *t)
{
	enum payment_status status = payment_status_parse((const char *)sqlite3_column_text(st, 0));
	int64_t n = sqlite3_column_int64(st, 1);

	t->payments += n;
	if (status != PAYMENT_UNKNOWN)
		t->payments_by_status[status] += n;
}

static void row_stale(sqlite3_stmt *st, struct store_audit_stats *t)
{
	t->stale = sqlite3_column_int64(st, 0);
}

static void row_receipts(sqlite3_stmt *st, struct store_audit_stats *t)
{
	t->receipts = sqlite3_column_int64(st, 0);
}

static void row_reconciled(sqlite3_stmt *st, struct store_audit_stats *t)
{
	t->reconciled = sqlite3_column_int64(st, 0);
	t->reconciled_late_cb = store_col_i64(st, 1, 0);
}

static int add_sink(void *arg, const struct store_outbox_summary *sum)
{
	struct store_audit_stats *t = arg;

	t->outbox_pending += sum->pending;
	t->outbox_delivered += sum->delivered;
	t->outbox_dead += sum->dead;
	if (t->n_sinks < STORE_AUDIT_MAX_SINKS) {
		struct store_audit_sink_stats *k = &t->sinks[t->n_sinks++];

		snprintf(k->sink, sizeof(k->sink), "%s", sum->sink);
		k->pending = sum->pending;
		k->delivered = sum->delivered;
		k->dead = sum->dead;
		k->oldest_pending_ms = sum->oldest_pending_at;
	}
	return 0;
}

int store_audit_stats(struct store *s, int64_t now_ms, struct store_audit_stats *ret)
{
	static const struct {
		const char *sql;
		bool bind_now_s;
		void (*row)(sqlite3_stmt *st, struct store_audit_stats *ret);
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
	struct store_audit_stats t;
	int r;

	memset(&t, 0, sizeof(t));
	r = store_exec_sql(s, "BEGIN");
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]) && r == 0; i++)
		r = each_row(s, q[i].sql, q[i].bind_now_s ? now_ms / 1000 : 0, q[i].row, &t);
	if (r == 0)
		r = store_outbox_summaries(s, add_sink, &t);
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (r < 0)
		return r;
	*ret = t;
	return 0;
}

/* ---- orphans ---- */

int store_audit_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len)
{
	static const char sql[] =
		"SELECT min(id), max(t) FROM ("
		"SELECT r.event_id AS id, 'receipts' AS t FROM receipts r "
		"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id) "
		"UNION ALL SELECT o.event_id, 'outbox' FROM outbox o "
		"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = o.event_id))";
	sqlite3_stmt *st;
	int rc, r;

	r = store_prepare(s, sql, &st, "orphans");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*ret_bad_id = sqlite3_column_int64(st, 0);
		snprintf(why, why_len, "event is missing but %s rows refer to it (rows deleted)",
			 (const char *)sqlite3_column_text(st, 1));
		r = -EBADMSG;
	} else if (rc != SQLITE_ROW) {
		store_set_err(s, "orphans");
		r = store_errno_or_eio(rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* ---- replay ---- */

static int replay_fail(sqlite3 *db, int r, char *err, size_t err_len, const char *what)
{
	snprintf(err, err_len, "%s: %s", what, db != NULL ? sqlite3_errmsg(db) : "?");
	return r;
}

/* Inserts the rows inside one IMMEDIATE transaction (it waits for the daemon's writer through
 * the busy timeout, never the other way round for long: it is a handful of inserts). */
static int replay_tx(sqlite3 *db, int64_t event_id, const char *const *sinks, size_t n_sinks,
		     char *err, size_t err_len)
{
	static const char q_event[] = "SELECT payment_id FROM events WHERE id = ?1";
	static const char q_sinks[] = "SELECT DISTINCT sink FROM outbox WHERE event_id = ?1 "
				      "ORDER BY sink";
	static const char q_pending[] = "SELECT 1 FROM outbox WHERE event_id = ?1 AND sink = ?2 "
					"AND state = 'pending'";
	static const char q_insert[] = "INSERT INTO outbox (event_id, payment_id, sink, "
				       "next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)";
	char payment_id[EVENT_ID_MAX];
	char found[STORE_AUDIT_MAX_SINKS][32];
	const char *use[STORE_AUDIT_MAX_SINKS];
	sqlite3_stmt *st = NULL;
	size_t n_use = 0;
	int64_t now = util_now_ms();
	int rc, queued = 0;

	if (sqlite3_prepare_v2(db, q_event, -1, &st, NULL) != SQLITE_OK)
		return replay_fail(db, -EIO, err, err_len, "event lookup");
	sqlite3_bind_int64(st, 1, event_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		store_col_copy(st, 0, payment_id, sizeof(payment_id));
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE) {
		snprintf(err, err_len, "no event %lld", (long long)event_id);
		return -ENOENT;
	}
	if (rc != SQLITE_ROW)
		return replay_fail(db, store_errno_or_eio(rc), err, err_len, "event lookup");

	if (n_sinks == 0) {
		if (sqlite3_prepare_v2(db, q_sinks, -1, &st, NULL) != SQLITE_OK)
			return replay_fail(db, -EIO, err, err_len, "sink lookup");
		sqlite3_bind_int64(st, 1, event_id);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW && n_use < STORE_AUDIT_MAX_SINKS) {
			store_col_copy(st, 0, found[n_use], sizeof(found[n_use]));
			use[n_use] = found[n_use];
			n_use++;
		}
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE && rc != SQLITE_ROW)
			return replay_fail(db, store_errno_or_eio(rc), err, err_len, "sink lookup");
	} else {
		for (size_t i = 0; i < n_sinks && n_use < STORE_AUDIT_MAX_SINKS; i++)
			use[n_use++] = sinks[i];
	}
	if (n_use == 0) {
		snprintf(err, err_len,
			 "event %lld was never queued for a sink; name one with --sink",
			 (long long)event_id);
		return -ENODATA;
	}

	for (size_t i = 0; i < n_use; i++) {
		if (sqlite3_prepare_v2(db, q_pending, -1, &st, NULL) != SQLITE_OK)
			return replay_fail(db, -EIO, err, err_len, "pending lookup");
		sqlite3_bind_int64(st, 1, event_id);
		sqlite3_bind_text(st, 2, use[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc == SQLITE_ROW)
			continue; /* already waiting for delivery */
		if (rc != SQLITE_DONE)
			return replay_fail(db, store_errno_or_eio(rc), err, err_len,
					   "pending lookup");
		if (sqlite3_prepare_v2(db, q_insert, -1, &st, NULL) != SQLITE_OK)
			return replay_fail(db, -EIO, err, err_len, "insert");
		sqlite3_bind_int64(st, 1, event_id);
		sqlite3_bind_text(st, 2, payment_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, use[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return replay_fail(db, store_errno_or_eio(rc), err, err_len, "insert");
		queued++;
	}
	return queued;
}

int store_audit_replay(const char *path, int64_t event_id, const char *const *sinks, size_t n_sinks,
		       long busy_timeout_ms, char *err, size_t err_len)
{
	sqlite3 *db = NULL;
	int rc, r;

	err[0] = '\0';
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = replay_fail(db, store_errno_or_eio(rc), err, err_len, path);
		sqlite3_close(db);
		return r;
	}
	sqlite3_busy_timeout(db, (int)busy_timeout_ms);
	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		r = replay_fail(db, store_errno_or_eio(rc), err, err_len, "begin");
		sqlite3_close(db);
		return r;
	}
	r = replay_tx(db, event_id, sinks, n_sinks, err, err_len);
	if (r >= 0) {
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			r = replay_fail(db, store_errno_or_eio(rc), err, err_len, "commit");
	}
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	return r;
}

/* ---- backup ---- */

static int backup_fail(int r, char *err, size_t err_len, const char *what, const char *detail)
{
	snprintf(err, err_len, "%s: %s", what, detail);
	return r;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Copies every page in one backup step so that the copy is one snapshot. Stepping page by page
 * would let the daemon's commits in between restart the copy, forever under steady load. */
static int backup_copy(struct store *s, sqlite3 *dst, char *err, size_t err_len)
{
	sqlite3_backup *b = sqlite3_backup_init(dst, "main", s->db, "main");
	int rc;

	if (b == NULL)
		return backup_fail(-EIO, err, err_len, "init", sqlite3_errmsg(dst));
	for (int tries = 0;; tries++) {
		rc = sqlite3_backup_step(b, -1);
		if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || tries >= 100)
			break;
		sleep_ms(50); /* the busy handler already waited; the source is busy for long */
	}
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE)
		return backup_fail(store_errno_or_eio(rc), err, err_len, "copy",
				   sqlite3_errstr(rc));
	/* The copy carries the source's WAL flag: make it one self-contained file. */
	rc = sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return backup_fail(store_errno_or_eio(rc), err, err_len, "journal mode",
				   sqlite3_errmsg(dst));
	return 0;
}

/* Moves the finished copy into place without ever replacing a file that appeared meanwhile:
 * renameat2(RENAME_NOREPLACE), or link + unlink where the file system lacks it. */
static int place_copy(const char *tmp, const char *dest)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (link(tmp, dest) < 0)
		return -1;
	unlink(tmp);
	return 0;
}

int store_audit_backup(struct store *s, const char *dest, int64_t *ret_bytes, char *err,
		       size_t err_len)
{
	char tmp[4096];
	struct stat sb;
	sqlite3 *dst = NULL;
	int rc, r;

	err[0] = '\0';
	if (stat(dest, &sb) == 0)
		return backup_fail(-EEXIST, err, err_len, dest, "already exists");
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.partial", dest) >= sizeof(tmp))
		return backup_fail(-ENAMETOOLONG, err, err_len, dest, "path too long");
	unlink(tmp); /* left over from an interrupted run */
	rc = sqlite3_open_v2(
		tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = backup_fail(store_errno_or_eio(rc), err, err_len, tmp,
				dst != NULL ? sqlite3_errmsg(dst) : "out of memory");
		sqlite3_close(dst);
		return r;
	}
	r = backup_copy(s, dst, err, err_len);
	if (sqlite3_close(dst) != SQLITE_OK && r == 0)
		r = backup_fail(-EIO, err, err_len, tmp, "close failed");
	if (r == 0 && place_copy(tmp, dest) < 0) {
		r = -errno;
		if (r == -EEXIST)
			backup_fail(r, err, err_len, dest, "already exists");
		else
			backup_fail(r, err, err_len, dest, "cannot rename the copy into place");
	}
	if (r == 0)
		r = util_fsync_dir(dest);
	if (r < 0) {
		if (err[0] == '\0')
			backup_fail(r, err, err_len, dest, "cannot sync its directory");
		unlink(tmp);
		return r;
	}
	if (stat(dest, &sb) == 0)
		*ret_bytes = (int64_t)sb.st_size;
	return 0;
}
