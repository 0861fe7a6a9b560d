/* Writer requests of the store module that touch the payments table alone: registering a
 * payment created elsewhere (origin "track") for the reconciler to watch. Runs on the writer
 * thread inside its group-commit transaction; the admin API handlers submit the requests. */
#include "store_payment.h"

#include <errno.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

/* A plain prepare per request: tracking is rare, and the statement cache in store_int.h belongs
 * to the ingest path. */
static int apply_track(struct store *s, struct store_req *r)
{
	static const char sql[] =
		"INSERT INTO payments (payment_id, order_id, payment_type, channel_code, amount, "
		"status, expires_at, created_at, updated_at, next_poll_at, origin) "
		"VALUES (?1, ?2, ?3, ?4, ?5, 'PENDING', ?6, ?7, ?7, ?8, 'track') "
		"ON CONFLICT (payment_id) DO NOTHING";
	const struct event *ev = &r->ev;
	const struct store_opts *o = store_options(s);
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	sqlite3_stmt *st;
	int rc, err;

	if (ev->payment_id[0] == '\0')
		return -EINVAL;
	err = store_prepare(s, sql, &st, "payment track");
	if (err < 0)
		return err;
	sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
	store_bind_text_or_null(st, 2, ev->order_id);
	store_bind_text_or_null(st, 3, ev->payment_type);
	store_bind_text_or_null(st, 4, ev->channel_code);
	store_bind_int_or_null(st, 5, ev->amount, -1);
	store_bind_int_or_null(st, 6, ev->expires_at, 0);
	sqlite3_bind_int64(st, 7, now);
	if (o->reconcile)
		sqlite3_bind_int64(st, 8, now + (int64_t)o->grace_seconds * 1000);
	else
		sqlite3_bind_null(st, 8);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		err = sqlite3_changes(s->db) == 0 ? -EEXIST : 0;
	} else {
		store_set_err(s, "payment track");
		err = store_errno_or_eio(rc);
		/* A CHECK failure maps to -EEXIST in store_errno; it is bad input here. */
		if ((rc & 0xff) == SQLITE_CONSTRAINT)
			err = -EINVAL;
	}
	sqlite3_finalize(st);
	return err;
}

void store_req_payment_track(struct store_req *r, const struct event *ev)
{
	memset(r, 0, sizeof(*r));
	r->apply = apply_track;
	r->ev = *ev;
}
