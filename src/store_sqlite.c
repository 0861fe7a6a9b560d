/* The SQLite backend (the embedded default): its entry in the backend table, opening a handle in
 * each mode (the writer's lock file, WAL and its VFS, migrations, the hash chain's head) and the
 * writer's transaction (savepoints when store.c asks for them). One connection per handle; each
 * handle is used by one thread at a time. */
#include "store_sqlite_int.h"
#include "store_sqlite_walbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* One writer per database: a second daemon on the same file would fork the hash chain. The
 * lock dies with the process, so a crash never leaves it stale. */
static int take_writer_lock(struct store *s, char *err, size_t err_len)
{
	struct store_sqlite *q = store_sqlite_of(s);
	char lock_path[4096];
	int r;

	snprintf(lock_path, sizeof(lock_path), "%s.lock", s->path);
	q->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (q->lock_fd < 0) {
		r = -errno;
		snprintf(err, err_len, "store: cannot open lock file %s: %s", lock_path,
			 r == -EACCES	? "permission denied"
			 : r == -ENOENT ? "no such directory"
					: "open failed");
		return r;
	}
	if (flock(q->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		snprintf(err, err_len,
			 "store: %s is in use by another komerce-hookd (lock %s held)", s->path,
			 lock_path);
		return -EBUSY;
	}
	return 0;
}

static int open_db(struct store *s, char *err, size_t err_len)
{
	struct store_sqlite *q = store_sqlite_of(s);
	int flags = s->opts.mode == STORE_MODE_READER  ? SQLITE_OPEN_READONLY
		    : s->opts.mode == STORE_MODE_ADMIN ? SQLITE_OPEN_READWRITE
						       : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	/* The writer's connection with synchronous = FULL writes each commit's WAL frames down in
	 * one write at the WAL sync instead of two writes per frame (store_sqlite_walbuf.c). */
	const char *vfs = s->opts.mode == STORE_MODE_WRITER && s->opts.synchronous_full
				  ? store_sqlite_walbuf_vfs()
				  : NULL;
	int rc = sqlite3_open_v2(s->path, &q->db, flags | SQLITE_OPEN_NOMUTEX, vfs);

	if (rc != SQLITE_OK) {
		snprintf(err, err_len, "store: cannot open %s: %s", s->path,
			 q->db != NULL ? sqlite3_errmsg(q->db) : "out of memory");
		return store_sqlite_errno_or_eio(rc);
	}
	sqlite3_extended_result_codes(q->db, 0);
	sqlite3_busy_timeout(q->db, (int)s->opts.busy_timeout_ms);
	return 0;
}

static int sqlite_open(struct store *s, char *err, size_t err_len)
{
	struct store_sqlite *q = calloc(1, sizeof(*q));
	int r;

	if (q == NULL) {
		snprintf(err, err_len, "store: out of memory");
		return -ENOMEM;
	}
	q->lock_fd = -1;
	s->impl = q;
	if (s->opts.mode == STORE_MODE_LEADER)
		return 0; /* the writer's lock already makes this the only instance */
	if (s->path[0] == '\0') {
		snprintf(err, err_len, "store: no database path");
		return -EINVAL;
	}
	if (s->opts.mode == STORE_MODE_WRITER) {
		r = take_writer_lock(s, err, err_len);
		if (r < 0)
			return r;
	}
	r = open_db(s, err, err_len);
	if (r < 0)
		return r;
	if (s->opts.mode != STORE_MODE_WRITER)
		return store_sqlite_check_schema(s, err, err_len);
	r = store_sqlite_migrate(s, err, err_len);
	if (r < 0)
		return r;
	r = store_sqlite_chain_head(s, &q->last_id, q->last_hash);
	if (r < 0)
		snprintf(err, err_len, "store: cannot read %s: %s", s->path, s->err);
	return r;
}

static void sqlite_close(struct store *s)
{
	struct store_sqlite *q = store_sqlite_of(s);

	if (q == NULL)
		return;
	for (size_t i = 0; i < SQ__COUNT; i++)
		sqlite3_finalize(q->stmts[i]);
	if (q->db != NULL && sqlite3_close(q->db) != SQLITE_OK)
		sqlite3_close_v2(q->db);
	if (q->lock_fd >= 0)
		close(q->lock_fd);
	free(q);
	s->impl = NULL;
}

/* ---- the writer's transaction ---- */

static int run(struct store *s, enum store_sqlite_stmt id)
{
	return store_sqlite_step_done(s, store_sqlite_stmt(s, id));
}

/* The writer's handle is the only writer, so its cached head is the truth; an ADMIN handle
 * (komerce-hookctl) writes beside the daemon and reads the head inside its transaction. */
static int sqlite_begin(struct store *s)
{
	struct store_sqlite *q = store_sqlite_of(s);
	int r = run(s, SQ_BEGIN);

	if (r == 0 && s->opts.mode != STORE_MODE_WRITER)
		r = store_sqlite_chain_head(s, &q->last_id, q->last_hash);
	q->tx_last_id = q->last_id;
	memcpy(q->tx_last_hash, q->last_hash, STORE_HASH_LEN);
	return r;
}

static int sqlite_savepoint(struct store *s)
{
	struct store_sqlite *q = store_sqlite_of(s);

	q->sp_last_id = q->tx_last_id;
	memcpy(q->sp_last_hash, q->tx_last_hash, STORE_HASH_LEN);
	return run(s, SQ_SAVEPOINT);
}

static int sqlite_release(struct store *s)
{
	return run(s, SQ_RELEASE);
}

static int sqlite_rollback_to(struct store *s)
{
	struct store_sqlite *q = store_sqlite_of(s);

	q->tx_last_id = q->sp_last_id;
	memcpy(q->tx_last_hash, q->sp_last_hash, STORE_HASH_LEN);
	return run(s, SQ_ROLLBACK_TO);
}

static int sqlite_commit(struct store *s)
{
	struct store_sqlite *q = store_sqlite_of(s);
	int r = run(s, SQ_COMMIT);

	if (r == 0) {
		q->last_id = q->tx_last_id;
		memcpy(q->last_hash, q->tx_last_hash, STORE_HASH_LEN);
	}
	return r;
}

static void sqlite_rollback(struct store *s)
{
	if (!sqlite3_get_autocommit(store_sqlite_db(s)))
		(void)run(s, SQ_ROLLBACK);
}

static int sqlite_apply(struct store *s, struct store_req *r)
{
	switch (r->kind) {
	case STORE_REQ_EVENT:
		return store_sqlite_apply_event(s, r);
	case STORE_REQ_TRACK:
		return store_sqlite_apply_track(s, r);
	case STORE_REQ_OUTCOMES:
		return store_sqlite_apply_outcomes(s, r);
	case STORE_REQ_REPLAY:
		return store_sqlite_apply_replay(s, r);
	case STORE_REQ_RECONCILE:
		return store_sqlite_apply_reconcile(s, r);
	case STORE_REQ_PRUNE:
		break; /* store.c hands it to .prune */
	}
	return -EINVAL;
}

const struct store_backend store_backend_sqlite = {
	.name = "sqlite",
	.open = sqlite_open,
	.close = sqlite_close,
	.begin = sqlite_begin,
	.savepoint = sqlite_savepoint,
	.release = sqlite_release,
	.rollback_to = sqlite_rollback_to,
	/* A savepoint copies every page an event touches into the statement journal. */
	.optimistic_events = true,
	.commit = sqlite_commit,
	.rollback = sqlite_rollback,
	.apply = sqlite_apply,
	.payment_get = store_sqlite_payment_get,
	.payments_list = store_sqlite_payments_list,
	.events_query = store_sqlite_events_query,
	.events_plan = store_sqlite_events_plan,
	.count = store_sqlite_count,
	.verify = store_sqlite_verify,
	.orphans = store_sqlite_orphans,
	.stats = store_sqlite_stats,
	.backup = store_sqlite_backup,
	.outbox_next = store_sqlite_outbox_next,
	.outbox_count = store_sqlite_outbox_count,
	.outbox_list = store_sqlite_outbox_list,
	.outbox_summaries = store_sqlite_outbox_summaries,
	.reconcile_due = store_sqlite_reconcile_due,
	.reconcile_next_due = store_sqlite_reconcile_next_due,
	.reconcile_watched = store_sqlite_reconcile_watched,
	.reconcile_pending = store_sqlite_reconcile_pending,
	.console_payments = store_sqlite_console_payments,
	.console_receipts = store_sqlite_console_receipts,
	.console_deliveries = store_sqlite_console_deliveries,
	.console_last_event_id = store_sqlite_console_last_event_id,
	.chain_head = store_sqlite_chain_head,
	.prune = store_sqlite_prune,
	.polls_list = store_sqlite_polls_list,
	.dump = store_sqlite_dump,
};
