/* Elections on PostgreSQL: one session-level advisory lock per job (pg_try_advisory_lock) on a
 * LEADER handle's own connection. The lock lives exactly as long as the session: a killed
 * instance's session ends with its socket (the lock is free at once); a cut-off or hung one is
 * ended by the server through TCP keepalives or idle_session_timeout (store_pg_util.c), after
 * which another instance's next try wins. The leader thread (leader.c) calls check() every
 * tick; a check that does not come back within its timeout closes the connection, so this
 * instance stops believing it leads before the server can hand the lock to anyone else. */
#include "store_pg.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* The job's lock class (the schema's, + 1) and key (a hash of its name) as parameters. */
static void job_key(struct store *s, const char *job, struct store_pg_num *cls,
		    struct store_pg_num *key, const char **v)
{
	v[0] = store_pg_num(cls, (long long)store_pg_of(s)->lock_class + 1);
	v[1] = store_pg_num(key, (long long)(int32_t)store_pg_fnv("", job));
}

static ssize_t find(const struct store_pg *q, const char *job)
{
	for (size_t i = 0; i < q->n_jobs; i++)
		if (strcmp(q->jobs[i], job) == 0)
			return (ssize_t)i;
	return -1;
}

void store_pg_leader_forget(struct store *s)
{
	store_pg_of(s)->n_jobs = 0;
}

int store_pg_leader_try(struct store *s, const char *job)
{
	struct store_pg *q = store_pg_of(s);
	struct store_pg_num cls, key;
	const char *v[2];
	PGresult *res;
	bool won;
	int r;

	if (strlen(job) >= STORE_PG_JOB_MAX)
		return -EINVAL;
	r = store_pg_ready(s); /* a new session holds nothing: forgotten on reconnect */
	if (r < 0)
		return r;
	if (find(q, job) >= 0)
		return 1;
	if (q->n_jobs == STORE_PG_MAX_JOBS)
		return -E2BIG;
	job_key(s, job, &cls, &key, v); /* after ready(): the session's class */
	r = store_pg_exec(s, "SELECT pg_try_advisory_lock($1::int4, $2::int4)", 2, v, &res,
			  "leader try");
	if (r < 0)
		return r;
	won = store_pg_bool(res, 0, 0);
	PQclear(res);
	if (!won)
		return 0;
	snprintf(q->jobs[q->n_jobs++], STORE_PG_JOB_MAX, "%s", job);
	return 1;
}

/* Waits for events on the socket until deadline (monotonic ms): 0, -ETIMEDOUT or -EIO. */
static int wait_socket(PGconn *conn, short events, int64_t deadline)
{
	struct pollfd p = {.fd = PQsocket(conn), .events = events};
	int64_t left = deadline - util_mono_ms();
	int n;

	if (left <= 0)
		return -ETIMEDOUT;
	n = poll(&p, 1, (int)left);
	if (n == 0)
		return -ETIMEDOUT;
	return n < 0 && errno != EINTR ? -EIO : 0;
}

/* Sends "SELECT 1" and reads its answer, giving up at the deadline. */
static int round_trip(PGconn *conn, int64_t deadline)
{
	PGresult *res;
	bool ok = false;
	int r;

	if (!PQsendQuery(conn, "SELECT 1"))
		return -ECONNRESET;
	while (PQflush(conn) == 1) {
		r = wait_socket(conn, POLLIN | POLLOUT, deadline);
		if (r < 0)
			return r;
		if (!PQconsumeInput(conn))
			return -ECONNRESET;
	}
	for (;;) {
		while (PQisBusy(conn)) {
			r = wait_socket(conn, POLLIN, deadline);
			if (r < 0)
				return r;
			if (!PQconsumeInput(conn))
				return -ECONNRESET;
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		ok |= PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
	}
	return ok && PQstatus(conn) == CONNECTION_OK ? 0 : -ECONNRESET;
}

int store_pg_leader_check(struct store *s, long timeout_ms)
{
	struct store_pg *q = store_pg_of(s);
	int r;

	if (q->conn == NULL || PQstatus(q->conn) != CONNECTION_OK) {
		store_pg_leader_forget(s);
		return -ENOTCONN;
	}
	r = round_trip(q->conn, util_mono_ms() + timeout_ms);
	if (r < 0) {
		/* Whatever the server still thinks, this instance leads nothing from now on: the
		 * session is dropped here and the server ends its side (keepalives, idle timeout)
		 * before the locks can go to another instance. */
		snprintf(s->err, sizeof(s->err), "leader check: %s",
			 r == -ETIMEDOUT ? "no answer in time" : "connection lost");
		PQfinish(q->conn);
		q->conn = NULL;
		store_pg_leader_forget(s);
	}
	return r;
}

void store_pg_leader_release(struct store *s, const char *job)
{
	struct store_pg *q = store_pg_of(s);
	struct store_pg_num cls, key;
	const char *v[2];
	ssize_t i = find(q, job);

	if (i < 0)
		return;
	memmove(q->jobs[i], q->jobs[i + 1], (q->n_jobs - (size_t)i - 1) * sizeof(q->jobs[0]));
	q->n_jobs--;
	job_key(s, job, &cls, &key, v);
	if (q->conn != NULL && PQstatus(q->conn) == CONNECTION_OK)
		(void)store_pg_exec(s, "SELECT pg_advisory_unlock($1::int4, $2::int4)", 2, v, NULL,
				    "leader release");
}
