/* The SQLite backend's retention batch (store_req_prune): old receipts and delivered outbox
 * rows, oldest first, at most a limit of each, inside the writer's transaction. Both are found
 * through their event_id index, bounded by the newest event received before the cutoff (found
 * through events_received), so a batch reads about as many rows as it deletes. Old rows of the
 * polls log go the same way, in id order (the oldest come first). */
#include "store_sqlite_int.h"

#include <errno.h>

/* The id of the newest event received before before_ms into *ret (0 when none). */
static int cutoff_event(struct store *s, int64_t before_ms, int64_t *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	*ret = 0;
	r = store_sqlite_prepare(s,
				 "SELECT id FROM events WHERE received_at < ?1 "
				 "ORDER BY received_at DESC LIMIT 1",
				 &st, "prune");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, before_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	return store_sqlite_finish(s, st, rc, "prune");
}

static int delete_batch(struct store *s, const char *sql, int64_t cut_id, int64_t before_ms,
			long limit, size_t *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "prune");
	if (r < 0)
		return r;
	if (cut_id >= 0)
		sqlite3_bind_int64(st, 1, cut_id);
	sqlite3_bind_int64(st, 2, before_ms);
	sqlite3_bind_int64(st, 3, limit);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		*ret = (size_t)sqlite3_changes(store_sqlite_db(s));
	return store_sqlite_finish(s, st, rc, "prune");
}

int store_sqlite_prune(struct store *s, struct store_req *r)
{
	static const char receipts[] =
		"DELETE FROM receipts WHERE id IN (SELECT id FROM receipts "
		"WHERE event_id <= ?1 AND received_at < ?2 ORDER BY event_id LIMIT ?3)";
	static const char outbox[] =
		"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
		"WHERE event_id <= ?1 AND state = 'delivered' AND delivered_at < ?2 "
		"ORDER BY event_id LIMIT ?3)";
	static const char polls[] = "DELETE FROM polls WHERE id IN (SELECT id FROM polls "
				    "WHERE polled_at < ?2 ORDER BY id LIMIT ?3)";
	int64_t cut;
	int err;

	r->u.prune.receipts = r->u.prune.outbox = r->u.prune.polls = 0;
	if (r->u.prune.limit <= 0)
		return -EINVAL;
	err = cutoff_event(s, r->u.prune.before_ms, &cut);
	if (err == 0 && cut > 0)
		err = delete_batch(s, receipts, cut, r->u.prune.before_ms, r->u.prune.limit,
				   &r->u.prune.receipts);
	if (err == 0 && cut > 0)
		err = delete_batch(s, outbox, cut, r->u.prune.before_ms, r->u.prune.limit,
				   &r->u.prune.outbox);
	if (err == 0 && store_sqlite_has_confirm(s))
		err = delete_batch(s, polls, -1, r->u.prune.before_ms, r->u.prune.limit,
				   &r->u.prune.polls);
	return err;
}
