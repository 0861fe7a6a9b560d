/* Small helpers of the PostgreSQL backend: the connection (keepalives, timeouts, session
 * settings per mode) and its reconnection with backoff, statements with parameters (the ingest
 * path's prepared once per connection), SQLSTATEs mapped to -errno and recorded for log lines,
 * and reading cells. Called on whichever thread owns the handle. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CONNECT_TIMEOUT_S "5"
#define BACKOFF_MIN_MS	  250
#define BACKOFF_MAX_MS	  5000

static const char *const stmt_sql[PG__COUNT] = {
	/* The payment (with the amount of a held callback) and the three keys the fact may have
	 * (agreeing, conflicting, held): one round trip, then store_event_decide() picks. */
	[PG_EVENT_LOOKUP] = "SELECT p.status, p.amount, p.confirmation, p.held_event_id, h.amount, "
			    "CASE e.dedupe_key WHEN $2 THEN 0 WHEN $3 THEN 1 WHEN $4 THEN 2 END, "
			    "e.id, e.conflict, e.confirmation FROM (SELECT 1) x "
			    "LEFT JOIN payments p ON p.payment_id = $1 "
			    "LEFT JOIN events h ON h.id = p.held_event_id "
			    "LEFT JOIN events e ON e.dedupe_key IN ($2, $3, $4)",
	[PG_EVENT_BY_KEY] = "SELECT id, conflict, confirmation FROM events WHERE dedupe_key = $1",
	/* A new fact about a new payment: event, payment, outbox rows (one per sink in $13) and
	 * receipt in one statement. The payment's order, amount and status ($24-$26) are not the
	 * event's when it is a held claim ($23), which also starts the payment's confirmation. */
	[PG_EVENT_NEW_PAYMENT] =
		"WITH ev AS (INSERT INTO events (id, payment_id, order_id, status, amount, source, "
		"conflict, dedupe_key, raw_json, received_at, prev_hash, hash, confirmation, "
		"held_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $21, "
		"$22)), "
		"pay AS (INSERT INTO payments (payment_id, order_id, payment_type, channel_code, "
		"amount, status, expires_at, created_at, updated_at, callback_seen_at, "
		"next_poll_at, origin, confirmation, confirmation_detail, confirmation_at, "
		"held_event_id) VALUES ($2, $24, $16, $17, $25, $26, $18, $10, $10, $19, $20, $6, "
		"CASE WHEN $23::boolean THEN 'pending' END, "
		"CASE WHEN $23::boolean THEN 'waiting for a status call' END, "
		"CASE WHEN $23::boolean THEN $10::bigint END, "
		"CASE WHEN $23::boolean THEN $1::bigint END)), "
		"ob AS (INSERT INTO outbox (event_id, payment_id, sink, next_attempt_at, "
		"created_at) SELECT $1, $2, unnest($13::text[]), $10, $10) "
		"INSERT INTO receipts (event_id, source, remote_addr, received_at, instance) "
		"VALUES ($1, $6, $14, $10, $15)",
	/* The same for a payment already known. The state machine's update ($24): a conflict
	 * never moves the payment; any fact may fill fields that were unknown ($4 is the event's
	 * status, $25 the payment's new one); $27 settles a pending confirmation as unconfirmed.
	 * Or the hold of a PAID callback ($23): the payment waits for its status call, polled
	 * now. */
	[PG_EVENT_KNOWN_PAYMENT] =
		"WITH ev AS (INSERT INTO events (id, payment_id, order_id, status, amount, source, "
		"conflict, dedupe_key, raw_json, received_at, prev_hash, hash, confirmation, "
		"held_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $21, "
		"$22)), "
		"pay AS (UPDATE payments SET status = $25, updated_at = $10, "
		"order_id = COALESCE(order_id, $3), payment_type = COALESCE(payment_type, $16), "
		"channel_code = COALESCE(channel_code, $17), amount = COALESCE(amount, $26), "
		"callback_seen_at = COALESCE($19, callback_seen_at), "
		"expires_at = COALESCE(expires_at, $18), "
		"next_poll_at = CASE WHEN $20::boolean THEN NULL ELSE next_poll_at END, "
		"confirmation = CASE WHEN $27::text IS NULL THEN confirmation "
		"ELSE 'unconfirmed' END, "
		"confirmation_detail = COALESCE($27::text, confirmation_detail), "
		"confirmation_at = CASE WHEN $27::text IS NULL THEN confirmation_at ELSE $10 END "
		"WHERE payment_id = $2 AND $24::boolean), "
		"hold AS (UPDATE payments SET confirmation = 'pending', held_event_id = $1, "
		"confirmation_detail = 'waiting for a status call', confirmation_at = $10, "
		"callback_seen_at = $10, updated_at = $10, "
		"next_poll_at = LEAST(COALESCE(next_poll_at, $10), $10) "
		"WHERE payment_id = $2 AND $23::boolean), "
		"ob AS (INSERT INTO outbox (event_id, payment_id, sink, next_attempt_at, "
		"created_at) SELECT $1, $2, unnest($13::text[]), $10, $10) "
		"INSERT INTO receipts (event_id, source, remote_addr, received_at, instance) "
		"VALUES ($1, $6, $14, $10, $15)",
	/* The same fact again: one more receipt (and a callback is seen). */
	[PG_EVENT_DUPLICATE] =
		"WITH seen AS (UPDATE payments SET callback_seen_at = $5 WHERE payment_id = $6 "
		"AND $7) "
		"INSERT INTO receipts (event_id, source, remote_addr, received_at, instance) "
		"VALUES ($1, $2, $3, $5, $4)",
};

static const char *mode_name(enum store_mode m)
{
	switch (m) {
	case STORE_MODE_WRITER:
		return "writer";
	case STORE_MODE_READER:
		return "reader";
	case STORE_MODE_ADMIN:
		return "admin";
	case STORE_MODE_LEADER:
		return "leader";
	}
	return "?";
}

/* "what: msg" as the handle's last error, on one line (libpq's messages have several). */
static void set_err(struct store *s, const char *what, const char *msg)
{
	size_t len, o = 0;

	snprintf(s->err, sizeof(s->err), "%s: %s", what, msg != NULL ? msg : "unknown error");
	for (size_t i = 0; s->err[i] != '\0'; i++) {
		char c = s->err[i] == '\n' || s->err[i] == '\t' ? ' ' : s->err[i];

		if (c != ' ' || (o > 0 && s->err[o - 1] != ' '))
			s->err[o++] = c;
	}
	s->err[o] = '\0';
	len = strlen(s->err);
	while (len > 0 && s->err[len - 1] == ' ')
		s->err[--len] = '\0';
}

/* Settings of the session, by mode. TCP keepalives on the server's side too (a vanished
 * client's session, and with it its locks, ends within about 11 s); the writer's lock waits
 * are bounded by busy_timeout_ms; a writer's transaction that stalls for 4 s (a hung or stopped
 * process holding the chain lock: every instance's writer waits for it) is ended by the
 * server. synchronous_commit is raised to on when
 * the server's default is off (a 200 means committed); a stronger level set by the DBA
 * (remote_apply) is kept. synchronous = normal turns it off for this session, like SQLite's
 * NORMAL. */
static int session_setup(struct store *s)
{
	char sql[768];
	PGresult *res;
	int n;

	n = snprintf(sql, sizeof(sql),
		     "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
		     "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000; "
		     "SET application_name = 'komerce-hookd/%s/%s';",
		     s->opts.instance[0] != '\0' ? s->opts.instance : "-", mode_name(s->opts.mode));
	if (s->opts.mode == STORE_MODE_WRITER || s->opts.mode == STORE_MODE_ADMIN)
		n += snprintf(sql + n, sizeof(sql) - (size_t)n,
			      "SET lock_timeout = %ld; SET idle_in_transaction_session_timeout = "
			      "4000; %s",
			      s->opts.busy_timeout_ms,
			      s->opts.synchronous_full
				      ? "SELECT set_config('synchronous_commit', 'on', false) "
					"WHERE current_setting('synchronous_commit') = 'off';"
				      : "SET synchronous_commit = off;");
	else if (s->opts.mode == STORE_MODE_READER)
		snprintf(sql + n, sizeof(sql) - (size_t)n,
			 "SET default_transaction_read_only = on;");
	else if (s->opts.mode == STORE_MODE_LEADER)
		/* A lease: the leader thread asks every second; a session silent for 8 s (a
		 * hung or cut-off instance) is ended by the server, and its jobs' locks with it.
		 * PostgreSQL 14 and later; older servers rely on the keepalives alone. */
		n += snprintf(sql + n, sizeof(sql) - (size_t)n,
			      "SELECT set_config('idle_session_timeout', '" STORE_PG_XSTR(
				      STORE_PG_LEASE_MS) "', false) WHERE "
							 "current_setting('server_version_num')::"
							 "int >= 140000;");
	snprintf(sql + n, sizeof(sql) - (size_t)n, "SELECT current_schema();");
	res = PQexec(store_pg_of(s)->conn, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return store_pg_fail(s, res, "session settings");
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		PQclear(res);
		snprintf(s->err, sizeof(s->err), "session settings: no schema in search_path");
		return -EINVAL;
	}
	store_pg_of(s)->lock_class =
		(int32_t)(store_pg_fnv("komerce-hookd/", PQgetvalue(res, 0, 0)) & 0xfffffffeu);
	PQclear(res);
	return 0;
}

uint32_t store_pg_fnv(const char *prefix, const char *s)
{
	uint32_t h = 2166136261u;

	for (const char *p = prefix; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (const char *p = s; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

/* Notices and warnings of the server are not errors; the store does not log. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

int store_pg_connect(struct store *s)
{
	/* Our defaults first, the URL last: parameters in the URL override them. */
	static const char *const keys[] = {
		"connect_timeout",  "keepalives",
		"keepalives_idle",  "keepalives_interval",
		"keepalives_count", "tcp_user_timeout",
		"client_encoding",  "application_name",
		"dbname",	    NULL,
	};
	struct store_pg *q = store_pg_of(s);
	const char *vals[sizeof(keys) / sizeof(keys[0])] = {
		CONNECT_TIMEOUT_S, "1",	   "5",	 "2", "3", "10000", "UTF8",
		"komerce-hookd",   s->url, NULL,
	};

	if (q->conn != NULL)
		PQfinish(q->conn);
	memset(q->prepared, 0, sizeof(q->prepared));
	q->replan_at_id = 0;
	q->in_tx = false;
	q->conn = PQconnectdbParams(keys, vals, 1);
	if (q->conn == NULL) {
		set_err(s, "connect", "out of memory");
		return -ENOMEM;
	}
	if (PQstatus(q->conn) != CONNECTION_OK) {
		set_err(s, "connect", PQerrorMessage(q->conn));
		PQfinish(q->conn);
		q->conn = NULL;
		return -ECONNREFUSED;
	}
	PQsetNoticeProcessor(q->conn, ignore_notice, NULL);
	if (PQclientEncoding(q->conn) != pg_char_to_encoding("UTF8")) {
		set_err(s, "connect", "client_encoding must be UTF8");
		PQfinish(q->conn);
		q->conn = NULL;
		return -EINVAL;
	}
	return session_setup(s);
}

int store_pg_ready(struct store *s)
{
	struct store_pg *q = store_pg_of(s);
	int64_t now = util_mono_ms();
	int r;

	if (q->conn != NULL && PQstatus(q->conn) == CONNECTION_OK)
		return 0;
	if (now < q->next_connect_ms) {
		snprintf(s->err, sizeof(s->err), "database unreachable, reconnecting");
		return -ECONNRESET;
	}
	if (s->opts.mode == STORE_MODE_LEADER)
		store_pg_leader_forget(s);
	r = store_pg_connect(s);
	if (r < 0) {
		q->backoff_ms = q->backoff_ms <= 0 ? BACKOFF_MIN_MS : q->backoff_ms * 2;
		if (q->backoff_ms > BACKOFF_MAX_MS)
			q->backoff_ms = BACKOFF_MAX_MS;
		q->next_connect_ms = util_mono_ms() + q->backoff_ms;
		if (q->conn != NULL) {
			PQfinish(q->conn);
			q->conn = NULL;
		}
		return r == -ENOMEM ? r : -ECONNRESET;
	}
	q->backoff_ms = 0;
	q->next_connect_ms = 0;
	return 0;
}

/* SQLSTATE classes and codes that tell what the caller can do. */
static int errno_of(const char *state)
{
	static const struct {
		const char *prefix;
		int err;
	} map[] = {
		{"23505", -EEXIST},   /* unique_violation */
		{"23", -EINVAL},      /* other integrity constraints */
		{"22", -EINVAL},      /* data exceptions (bad encoding, out of range) */
		{"40", -EAGAIN},      /* serialization failure, deadlock */
		{"55P03", -EAGAIN},   /* lock_not_available (lock_timeout) */
		{"57014", -EAGAIN},   /* query_canceled (statement_timeout) */
		{"53100", -ENOSPC},   /* disk_full */
		{"53200", -ENOMEM},   /* out_of_memory */
		{"53", -EAGAIN},      /* too many connections, other resources */
		{"08", -ECONNRESET},  /* connection exceptions */
		{"57P", -ECONNRESET}, /* admin shutdown, crash shutdown, cannot connect now */
		{"28", -EACCES},      /* invalid authorization */
		{"42501", -EACCES},   /* insufficient_privilege */
		{"3D000", -ENOENT},   /* invalid_catalog_name */
		{"25006", -EROFS},    /* read_only_sql_transaction */
		{"P0001", -EPERM},    /* raise_exception: the append-only triggers */
	};

	if (state == NULL)
		return -EIO;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strncmp(state, map[i].prefix, strlen(map[i].prefix)) == 0)
			return map[i].err;
	return -EIO;
}

int store_pg_fail(struct store *s, PGresult *res, const char *what)
{
	struct store_pg *q = store_pg_of(s);
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	/* The primary message only: DETAIL lines may quote the row's values. */
	const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	int err;

	if (msg == NULL && q->conn != NULL)
		msg = PQerrorMessage(q->conn);
	set_err(s, what, msg);
	err = errno_of(state);
	if (q->conn == NULL || PQstatus(q->conn) != CONNECTION_OK)
		err = -ECONNRESET;
	if (err == -ECONNRESET)
		q->in_tx = false;
	PQclear(res);
	return err;
}

static int check(struct store *s, PGresult *res, PGresult **ret, const char *what)
{
	ExecStatusType st = PQresultStatus(res);

	if (res == NULL || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK))
		return store_pg_fail(s, res, what);
	if (ret != NULL)
		*ret = res;
	else
		PQclear(res);
	return 0;
}

/* One statement of a round trip. */
struct step {
	const char *sql;  /* text to run, or to prepare as name */
	const char *name; /* prepared statement to run (or to prepare, with prepare) */
	bool prepare;
	int n;
	const char *const *vals;
	const int *lens, *fmts;
};

static int send_step(PGconn *conn, const struct step *st)
{
	if (st->prepare)
		return PQsendPrepare(conn, st->name, st->sql, 0, NULL);
	if (st->name != NULL)
		return PQsendQueryPrepared(conn, st->name, st->n, st->vals, st->lens, st->fmts, 0);
	return PQsendQueryParams(conn, st->sql, st->n, NULL, st->vals, st->lens, st->fmts, 0);
}

/* Runs steps in one round trip (pipeline mode). The result of step keep goes to *ret; the
 * first failure is returned (later steps are skipped by the server). ok[i] tells which
 * steps succeeded. */
static int pipeline(struct store *s, const struct step *steps, size_t n, size_t keep,
		    PGresult **ret, bool *ok, const char *what)
{
	PGconn *conn = store_pg_of(s)->conn;
	int err = 0;

	if (!PQenterPipelineMode(conn))
		return store_pg_fail(s, NULL, what);
	for (size_t i = 0; i < n; i++)
		if (!send_step(conn, &steps[i])) {
			(void)PQexitPipelineMode(conn);
			return store_pg_fail(s, NULL, what);
		}
	if (!PQpipelineSync(conn))
		return store_pg_fail(s, NULL, what);
	for (size_t i = 0; i < n; i++) {
		PGresult *res = PQgetResult(conn), *end;
		ExecStatusType st = PQresultStatus(res);

		ok[i] = res != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
		if (res == NULL)
			return store_pg_fail(s, NULL, what); /* the connection is gone */
		if (!ok[i] && err == 0 && st != PGRES_PIPELINE_ABORTED)
			err = store_pg_fail(s, res, what); /* clears res */
		else if (ok[i] && i == keep && ret != NULL)
			*ret = res;
		else
			PQclear(res);
		while ((end = PQgetResult(conn)) != NULL) /* the NULL that ends each step */
			PQclear(end);
	}
	if (err == 0 && (n == 0 || !ok[n - 1]))
		err = store_pg_fail(s, NULL, what); /* aborted without an error of its own */
	{
		PGresult *sync = PQgetResult(conn);

		if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC && err == 0)
			err = store_pg_fail(s, sync, what);
		else
			PQclear(sync);
	}
	if (!PQexitPipelineMode(conn) && err == 0)
		err = store_pg_fail(s, NULL, what);
	if (err < 0 && ret != NULL && *ret != NULL) {
		PQclear(*ret);
		*ret = NULL;
	}
	return err;
}

/* Runs one statement of the writer's request (or of any handle): alone when it can, else in
 * one round trip with the request's pending savepoint before it, its preparation, and (last)
 * the savepoint's release after it. */
static int issue(struct store *s, const struct step *main_step, bool *prepared, bool last,
		 PGresult **ret, const char *what)
{
	static const struct step savepoint = {.sql = "SAVEPOINT req"};
	static const struct step release = {.sql = "RELEASE req"};
	struct store_pg *q = store_pg_of(s);
	struct step steps[4], prep;
	bool ok[4] = {false};
	size_t n = 0, keep, sp_at = 4, prep_at = 4;
	bool with_sp = q->sp == STORE_PG_SP_PENDING, with_release;
	int r;

	if (ret != NULL)
		*ret = NULL;
	r = store_pg_ready(s);
	if (r < 0)
		return r;
	if (with_sp) {
		sp_at = n;
		steps[n++] = savepoint;
	}
	if (prepared != NULL && !*prepared) {
		prep = *main_step;
		prep.prepare = true;
		prep_at = n;
		steps[n++] = prep;
	}
	keep = n;
	steps[n++] = *main_step;
	with_release = last && (with_sp || q->sp == STORE_PG_SP_OPEN);
	if (with_release)
		steps[n++] = release;
	if (n == 1) {
		PGresult *res = main_step->name != NULL
					? PQexecPrepared(q->conn, main_step->name, main_step->n,
							 main_step->vals, main_step->lens,
							 main_step->fmts, 0)
					: PQexecParams(q->conn, main_step->sql, main_step->n, NULL,
						       main_step->vals, main_step->lens,
						       main_step->fmts, 0);

		return check(s, res, ret, what);
	}
	r = pipeline(s, steps, n, keep, ret, ok, what);
	if (prep_at < n && ok[prep_at])
		*prepared = true; /* a statement's preparation outlives a rollback */
	if (with_sp && ok[sp_at])
		q->sp = STORE_PG_SP_OPEN;
	if (with_release && ok[n - 1])
		q->sp = STORE_PG_SP_NONE;
	return r;
}

int store_pg_exec_fmt(struct store *s, const char *sql, int n, const char *const *vals,
		      const int *lens, const int *fmts, PGresult **ret, const char *what)
{
	struct step st = {.sql = sql, .n = n, .vals = vals, .lens = lens, .fmts = fmts};

	return issue(s, &st, NULL, false, ret, what);
}

int store_pg_exec_guarded(struct store *s, const char *sql, int n, const char *const *vals,
			  PGresult **ret, bool *ret_intact, const char *what)
{
	struct store_pg *q = store_pg_of(s);
	struct step st = {.sql = sql, .n = n, .vals = vals};
	char why[sizeof(s->err)];
	int r;

	q->sp = STORE_PG_SP_PENDING;
	r = issue(s, &st, NULL, true, ret, what);
	*ret_intact = r == 0;
	if (r < 0 && q->sp == STORE_PG_SP_OPEN) {
		memcpy(why, s->err, sizeof(why));
		*ret_intact =
			store_pg_exec_simple(s, "ROLLBACK TO req; RELEASE req", NULL, what) == 0;
		memcpy(s->err, why, sizeof(why));
	}
	q->sp = STORE_PG_SP_NONE;
	return r;
}

int store_pg_exec_simple(struct store *s, const char *sql, PGresult **ret, const char *what)
{
	int r = store_pg_ready(s);

	if (ret != NULL)
		*ret = NULL;
	if (r < 0)
		return r;
	return check(s, PQexec(store_pg_of(s)->conn, sql), ret, what);
}

int store_pg_exec(struct store *s, const char *sql, int n, const char *const *vals, PGresult **ret,
		  const char *what)
{
	return store_pg_exec_fmt(s, sql, n, vals, NULL, NULL, ret, what);
}

int store_pg_exec_stmt(struct store *s, enum store_pg_stmt id, int n, const char *const *vals,
		       const int *lens, const int *fmts, bool last, PGresult **ret)
{
	struct store_pg *q = store_pg_of(s);
	char name[16];
	struct step st = {.sql = stmt_sql[id],
			  .name = name,
			  .n = n,
			  .vals = vals,
			  .lens = lens,
			  .fmts = fmts};
	int r;

	snprintf(name, sizeof(name), "hookd_%d", (int)id);
	r = store_pg_ready(s); /* a new connection has nothing prepared */
	if (r < 0)
		return r;
	return issue(s, &st, &q->prepared[id], last, ret, name);
}

/* Stops a streaming query early: cancels it on the server and reads what is left. */
static void stream_abandon(PGconn *conn)
{
	PGcancel *c = PQgetCancel(conn);
	PGresult *res;
	char buf[256];

	if (c != NULL) {
		(void)PQcancel(c, buf, sizeof(buf));
		PQfreeCancel(c);
	}
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
}

int store_pg_stream(struct store *s, const char *sql, int n, const char *const *vals,
		    int (*row)(void *arg, PGresult *res), void *arg, const char *what)
{
	PGconn *conn;
	PGresult *res;
	int r = store_pg_ready(s), err = 0;

	if (r < 0)
		return r;
	conn = store_pg_of(s)->conn;
	if (!PQsendQueryParams(conn, sql, n, NULL, vals, NULL, NULL, 0))
		return store_pg_fail(s, NULL, what);
	PQsetSingleRowMode(conn);
	while ((res = PQgetResult(conn)) != NULL) {
		ExecStatusType st = PQresultStatus(res);

		if (st == PGRES_SINGLE_TUPLE) {
			r = row(arg, res);
			PQclear(res);
			if (r != 0) {
				stream_abandon(conn);
				return r;
			}
		} else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
			PQclear(res);
		} else if (err == 0) {
			err = store_pg_fail(s, res, what);
		} else {
			PQclear(res);
		}
	}
	return err;
}

int store_pg_replan(struct store *s, int64_t head_id)
{
	struct store_pg *q = store_pg_of(s);
	bool any = false;
	int r;

	if (head_id < q->replan_at_id)
		return 0;
	q->replan_at_id = 2 * head_id + 1024;
	for (size_t i = 0; i < PG__COUNT; i++)
		any |= q->prepared[i];
	if (!any)
		return 0;
	r = store_pg_exec_simple(s, "DEALLOCATE ALL", NULL, "replan");
	if (r == 0)
		memset(q->prepared, 0, sizeof(q->prepared));
	return r;
}

long store_pg_changed(PGresult *res)
{
	return strtol(PQcmdTuples(res), NULL, 10);
}

int64_t store_pg_i64(PGresult *res, int row, int col, int64_t absent)
{
	if (PQgetisnull(res, row, col))
		return absent;
	return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

void store_pg_copy(PGresult *res, int row, int col, char *out, size_t n)
{
	snprintf(out, n, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

bool store_pg_bool(PGresult *res, int row, int col)
{
	const char *v = PQgetvalue(res, row, col);

	return !PQgetisnull(res, row, col) && (v[0] == 't' || v[0] == '1');
}

void store_pg_hash(PGresult *res, int row, int col, uint8_t out[STORE_HASH_LEN])
{
	const char *v = PQgetvalue(res, row, col);

	if (PQgetisnull(res, row, col) || strlen(v) != 2 * STORE_HASH_LEN ||
	    util_unhex(v, 2 * STORE_HASH_LEN, out, STORE_HASH_LEN) < 0)
		memset(out, 0, STORE_HASH_LEN);
}

const char *store_pg_num(struct store_pg_num *b, long long v)
{
	snprintf(b->buf, sizeof(b->buf), "%lld", v);
	return b->buf;
}

const char *store_pg_num_or_null(struct store_pg_num *b, long long v, long long absent)
{
	return v == absent ? NULL : store_pg_num(b, v);
}

const char *store_pg_text_or_null(const char *v)
{
	return v != NULL && v[0] != '\0' ? v : NULL;
}

void store_pg_payment_read(PGresult *res, int row, struct store_payment *p)
{
	memset(p, 0, sizeof(*p));
	store_pg_copy(res, row, 0, p->payment_id, sizeof(p->payment_id));
	store_pg_copy(res, row, 1, p->order_id, sizeof(p->order_id));
	store_pg_copy(res, row, 2, p->payment_type, sizeof(p->payment_type));
	store_pg_copy(res, row, 3, p->channel_code, sizeof(p->channel_code));
	p->amount = store_pg_i64(res, row, 4, -1);
	p->status = payment_status_parse(PQgetvalue(res, row, 5));
	p->expires_at = store_pg_i64(res, row, 6, 0);
	p->created_at = store_pg_i64(res, row, 7, 0);
	p->updated_at = store_pg_i64(res, row, 8, 0);
	p->callback_seen_at = store_pg_i64(res, row, 9, 0);
	p->last_polled_at = store_pg_i64(res, row, 10, 0);
	p->next_poll_at = store_pg_i64(res, row, 11, 0);
	p->poll_attempts = (long)store_pg_i64(res, row, 12, 0);
	store_pg_copy(res, row, 13, p->origin, sizeof(p->origin));
	p->confirmation = store_confirmation_parse(
		PQgetisnull(res, row, 14) ? NULL : PQgetvalue(res, row, 14));
	store_pg_copy(res, row, 15, p->confirmation_detail, sizeof(p->confirmation_detail));
	p->confirmation_at = store_pg_i64(res, row, 16, 0);
	p->held_event_id = store_pg_i64(res, row, 17, 0);
}
