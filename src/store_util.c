/* Helpers shared by the store_*.c files that run their own (not cached) statements: prepare and
 * finish with the error recorded, the -errno of a failed step, and the payments row. Pure; any
 * thread that owns the struct store calls them. */
#include "store_int.h"

#include <errno.h>
#include <string.h>

int store_errno_or_eio(int rc)
{
	int r = store_errno(rc);

	return r != 0 ? r : -EIO;
}

int store_prepare(struct store *s, const char *sql, sqlite3_stmt **ret, const char *what)
{
	int rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);

	if (rc != SQLITE_OK) {
		store_set_err(s, what);
		*ret = NULL;
		return store_errno_or_eio(rc);
	}
	return 0;
}

int store_finish(struct store *s, sqlite3_stmt *st, int rc, const char *what)
{
	int r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_set_err(s, what);
		r = store_errno_or_eio(rc);
	}
	sqlite3_finalize(st);
	return r;
}

void store_payment_read(sqlite3_stmt *st, struct store_payment *p)
{
	memset(p, 0, sizeof(*p));
	store_col_copy(st, 0, p->payment_id, sizeof(p->payment_id));
	store_col_copy(st, 1, p->order_id, sizeof(p->order_id));
	store_col_copy(st, 2, p->payment_type, sizeof(p->payment_type));
	store_col_copy(st, 3, p->channel_code, sizeof(p->channel_code));
	p->amount = store_col_i64(st, 4, -1);
	p->status = payment_status_parse((const char *)sqlite3_column_text(st, 5));
	p->expires_at = store_col_i64(st, 6, 0);
	p->created_at = store_col_i64(st, 7, 0);
	p->updated_at = store_col_i64(st, 8, 0);
	p->callback_seen_at = store_col_i64(st, 9, 0);
	p->last_polled_at = store_col_i64(st, 10, 0);
	p->next_poll_at = store_col_i64(st, 11, 0);
	p->poll_attempts = (long)store_col_i64(st, 12, 0);
	store_col_copy(st, 13, p->origin, sizeof(p->origin));
}
