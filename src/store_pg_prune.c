/* The PostgreSQL backend's retention batch (store_req_prune): old receipts, delivered outbox
 * rows and the polls log, oldest first, at most a limit of each, inside the writer's
 * transaction (so under the chain lock, like every writer transaction: one instance prunes at a
 * time). Receipts and outbox rows are found through their event_id index, bounded by the newest
 * event received before the cutoff (found through events_received), so a batch reads about as
 * many rows as it deletes; polls in id order. */
#include "store_pg.h"

#include <errno.h>

static int delete_batch(struct store *s, const char *sql, const char *const *v, size_t *ret)
{
	PGresult *res;
	int r = store_pg_exec(s, sql, 2, v, &res, "prune");

	if (r < 0)
		return r;
	*ret = (size_t)store_pg_changed(res);
	PQclear(res);
	return 0;
}

int store_pg_prune(struct store *s, struct store_req *r)
{
	static const char receipts[] =
		"DELETE FROM receipts WHERE id IN (SELECT id FROM receipts WHERE event_id <= "
		"(SELECT id FROM events WHERE received_at < $1 ORDER BY received_at DESC LIMIT 1) "
		"AND received_at < $1 ORDER BY event_id LIMIT $2)";
	static const char outbox[] =
		"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE event_id <= "
		"(SELECT id FROM events WHERE received_at < $1 ORDER BY received_at DESC LIMIT 1) "
		"AND state = 'delivered' AND delivered_at < $1 ORDER BY event_id LIMIT $2)";
	/* The polls log in id order: ids grow with time, so the scan stops at the first young
	 * row. */
	static const char polls[] = "DELETE FROM polls WHERE id IN (SELECT id FROM polls "
				    "WHERE polled_at < $1 ORDER BY id LIMIT $2)";
	struct store_pg_num n_before, n_limit;
	const char *v[2] = {store_pg_num(&n_before, r->u.prune.before_ms),
			    store_pg_num(&n_limit, r->u.prune.limit)};
	int err;

	r->u.prune.receipts = r->u.prune.outbox = r->u.prune.polls = 0;
	if (r->u.prune.limit <= 0)
		return -EINVAL;
	err = delete_batch(s, receipts, v, &r->u.prune.receipts);
	if (err == 0)
		err = delete_batch(s, outbox, v, &r->u.prune.outbox);
	if (err == 0)
		err = delete_batch(s, polls, v, &r->u.prune.polls);
	return err;
}
