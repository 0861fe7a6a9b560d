/* The PostgreSQL backend (several instances on one database): its entry in the backend table,
 * opening a handle in each mode (migrations for the writer, a schema check for the others)
 * and the writer's transaction. Every writer transaction, of every instance, first takes the
 * chain's transaction-level advisory lock and reads the chain's head inside it, so ids stay
 * head + 1 and one hash chain runs through the events of all instances. One connection per
 * handle; each handle is used by one thread at a time; a lost connection is reconnected with
 * backoff by the next statement (store_pg_ready). */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pg_open(struct store *s, char *err, size_t err_len)
{
	struct store_pg *q = calloc(1, sizeof(*q));
	int r;

	if (q == NULL) {
		snprintf(err, err_len, "store: out of memory");
		return -ENOMEM;
	}
	s->impl = q;
	if (s->url[0] == '\0') {
		snprintf(err, err_len, "store: no PostgreSQL URL (store.url)");
		return -EINVAL;
	}
	r = store_pg_connect(s);
	if (r < 0) {
		snprintf(err, err_len, "store: cannot connect to PostgreSQL: %s", s->err);
		return r == -ENOMEM || r == -EINVAL ? r : -ECONNREFUSED;
	}
	switch (s->opts.mode) {
	case STORE_MODE_WRITER:
		return store_pg_migrate(s, err, err_len);
	case STORE_MODE_READER:
	case STORE_MODE_ADMIN:
		return store_pg_check_schema(s, err, err_len);
	case STORE_MODE_LEADER:
		return 0;
	}
	return 0;
}

static void pg_close(struct store *s)
{
	struct store_pg *q = store_pg_of(s);

	if (q == NULL)
		return;
	if (q->conn != NULL)
		PQfinish(q->conn); /* ends the session: its advisory locks go with it */
	free(q->copy_buf);
	free(q->pf);
	free(q->touched);
	free(q);
	s->impl = NULL;
}

/* ---- the writer's transaction ---- */

static int simple(struct store *s, const char *sql)
{
	return store_pg_exec_simple(s, sql, NULL, sql);
}

/* Ends whatever transaction the session has open; never reconnects (a new session has none). */
static void pg_rollback(struct store *s)
{
	struct store_pg *q = store_pg_of(s);

	if (q->conn != NULL && PQstatus(q->conn) == CONNECTION_OK &&
	    PQtransactionStatus(q->conn) == PQTRANS_ACTIVE) {
		/* a copy cut short (store_pg_copy.c): end it as failed first */
		PGresult *res;

		(void)PQputCopyEnd(q->conn, "copy abandoned");
		while ((res = PQgetResult(q->conn)) != NULL)
			PQclear(res);
	}
	if (q->conn != NULL && PQstatus(q->conn) == CONNECTION_OK &&
	    PQtransactionStatus(q->conn) != PQTRANS_IDLE) {
		PGresult *res = PQexec(q->conn, "ROLLBACK");

		PQclear(res);
	}
	q->in_tx = false;
}

/* The chain lock is taken first in every writer transaction (and nothing else is ever
 * locked before it), so two writers never wait on each other for anything else: no
 * deadlock between instances. It is held until commit, so the transactions of all instances
 * that append to the chain run one after the other; group commit makes each of them carry a
 * batch. One round trip: BEGIN, the lock, the head. */
static int pg_begin(struct store *s)
{
	struct store_pg *q = store_pg_of(s);
	PGresult *res = NULL;
	char sql[192];
	int r;

	r = store_pg_ready(s);
	if (r < 0)
		return r;
	snprintf(sql, sizeof(sql),
		 "BEGIN; SELECT pg_advisory_xact_lock(%d, %d); "
		 "SELECT id, encode(hash, 'hex') FROM events ORDER BY id DESC LIMIT 1",
		 (int)q->lock_class, STORE_PG_LOCK_CHAIN);
	if (q->in_tx) /* a failed batch that could not roll back: start clean */
		pg_rollback(s);
	r = store_pg_exec_simple(s, sql, &res, "begin");
	if (r < 0) {
		pg_rollback(s);
		return r;
	}
	q->in_tx = true;
	q->sp = STORE_PG_SP_NONE;
	q->n_pf = q->pf_next = q->n_touched = 0;
	q->tx_last_id = 0;
	memset(q->tx_last_hash, 0, STORE_HASH_LEN);
	if (PQntuples(res) == 1) {
		q->tx_last_id = store_pg_i64(res, 0, 0, 0);
		store_pg_hash(res, 0, 1, q->tx_last_hash);
	}
	PQclear(res);
	return 0;
}

/* The savepoint itself is sent with the request's first statement (store_pg_util.c). */
static int pg_savepoint(struct store *s)
{
	struct store_pg *q = store_pg_of(s);

	q->sp_last_id = q->tx_last_id;
	memcpy(q->sp_last_hash, q->tx_last_hash, STORE_HASH_LEN);
	q->sp = STORE_PG_SP_PENDING;
	return 0;
}

static int pg_release(struct store *s)
{
	struct store_pg *q = store_pg_of(s);
	bool open = q->sp == STORE_PG_SP_OPEN;

	q->sp = STORE_PG_SP_NONE;
	return open ? simple(s, "RELEASE req") : 0;
}

static int pg_rollback_to(struct store *s)
{
	struct store_pg *q = store_pg_of(s);

	q->tx_last_id = q->sp_last_id;
	memcpy(q->tx_last_hash, q->sp_last_hash, STORE_HASH_LEN);
	if (q->sp != STORE_PG_SP_OPEN) {
		q->sp = STORE_PG_SP_NONE; /* nothing of the request ran */
		return 0;
	}
	return simple(s, "ROLLBACK TO req");
}

/* COMMIT returns once the commit record is flushed (synchronous_commit on), so the callbacks
 * acknowledged after it are durable. A connection lost during COMMIT leaves the outcome
 * unknown: the batch is answered 503 and Komerce's retry finds the event (a duplicate) or
 * stores it. */
static int pg_commit(struct store *s)
{
	struct store_pg *q = store_pg_of(s);
	int r = simple(s, "COMMIT");

	q->in_tx = false;
	return r;
}

static int pg_apply(struct store *s, struct store_req *r)
{
	switch (r->kind) {
	case STORE_REQ_EVENT:
		return store_pg_apply_event(s, r);
	case STORE_REQ_TRACK:
		return store_pg_apply_track(s, r);
	case STORE_REQ_OUTCOMES:
		return store_pg_apply_outcomes(s, r);
	case STORE_REQ_REPLAY:
		return store_pg_apply_replay(s, r);
	case STORE_REQ_RECONCILE:
		return store_pg_apply_reconcile(s, r);
	case STORE_REQ_PRUNE:
		break; /* store.c hands it to .prune */
	}
	return -EINVAL;
}

const struct store_backend store_backend_pg = {
	.name = "postgresql",
	.open = pg_open,
	.close = pg_close,
	.begin = pg_begin,
	.savepoint = pg_savepoint,
	.release = pg_release,
	.rollback_to = pg_rollback_to,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.apply = pg_apply,
	.prefetch = store_pg_prefetch,
	.payment_get = store_pg_payment_get,
	.payments_list = store_pg_payments_list,
	.events_query = store_pg_events_query,
	.events_plan = store_pg_events_plan,
	.count = store_pg_count,
	.verify = store_pg_verify,
	.orphans = store_pg_orphans,
	.stats = store_pg_stats,
	.backup = NULL, /* pg_dump: see README "Several instances" */
	.outbox_next = store_pg_outbox_next,
	.outbox_count = store_pg_outbox_count,
	.outbox_list = store_pg_outbox_list,
	.outbox_summaries = store_pg_outbox_summaries,
	.reconcile_due = store_pg_reconcile_due,
	.reconcile_next_due = store_pg_reconcile_next_due,
	.reconcile_watched = store_pg_reconcile_watched,
	.reconcile_pending = store_pg_reconcile_pending,
	.console_payments = store_pg_console_payments,
	.console_receipts = store_pg_console_receipts,
	.console_deliveries = store_pg_console_deliveries,
	.console_last_event_id = store_pg_console_last_event_id,
	.chain_head = store_pg_chain_head,
	.prune = store_pg_prune,
	.polls_list = store_pg_polls_list,
	.dump = store_pg_dump,
	.load_begin = store_pg_load_begin,
	.load_row = store_pg_load_row,
	.load_end = store_pg_load_end,
	.leader_try = store_pg_leader_try,
	.leader_check = store_pg_leader_check,
	.leader_release = store_pg_leader_release,
};
