/* SQLite persistence: open and migrate the database, and the writer thread that applies
 * queued requests in group-committed transactions. Handlers on the HTTP threads call
 * store_submit(); the writer thread is the only one that writes. Queries live in
 * store_query.c and share the struct store defined in store_int.h. */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "payment.h"
#include "store_audit.h"
#include "util.h"

extern const char *const store_migrations[];
extern const size_t store_migrations_count;

const double store_commit_bucket_ms[11] = {0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000};
const double store_batch_bucket[9] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

static const char *const stmt_sql[ST__COUNT] = {
	[ST_EVENT_BY_KEY] = "SELECT id, conflict FROM events WHERE dedupe_key = ?1",
	[ST_EVENT_INSERT] = "INSERT INTO events (id, payment_id, order_id, status, amount, source, "
			    "conflict, dedupe_key, raw_json, received_at, prev_hash, hash) "
			    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[ST_PAYMENT_GET] = "SELECT status, amount FROM payments WHERE payment_id = ?1",
	[ST_PAYMENT_INSERT] =
		"INSERT INTO payments (payment_id, order_id, payment_type, channel_code, amount, "
		"status, expires_at, created_at, updated_at, callback_seen_at, next_poll_at, "
		"origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11)",
	[ST_PAYMENT_UPDATE] =
		"UPDATE payments SET status = ?2, updated_at = ?3, "
		"order_id = COALESCE(order_id, ?4), payment_type = COALESCE(payment_type, ?5), "
		"channel_code = COALESCE(channel_code, ?6), amount = COALESCE(amount, ?7), "
		"callback_seen_at = COALESCE(?8, callback_seen_at), "
		"expires_at = COALESCE(expires_at, ?10), "
		"next_poll_at = CASE WHEN ?9 THEN NULL ELSE next_poll_at END "
		"WHERE payment_id = ?1",
	[ST_PAYMENT_SEEN] = "UPDATE payments SET callback_seen_at = ?2 WHERE payment_id = ?1",
	[ST_RECEIPT_INSERT] = "INSERT INTO receipts (event_id, source, remote_addr, received_at) "
			      "VALUES (?1, ?2, ?3, ?4)",
	[ST_OUTBOX_INSERT] = "INSERT INTO outbox (event_id, payment_id, sink, next_attempt_at, "
			     "created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
	[ST_SAVEPOINT] = "SAVEPOINT req",
	[ST_RELEASE] = "RELEASE req",
	[ST_ROLLBACK_TO] = "ROLLBACK TO req",
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
};

int store_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EAGAIN;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

void store_set_err(struct store *s, const char *what)
{
	snprintf(s->err, sizeof(s->err), "%s: %s", what, s->db ? sqlite3_errmsg(s->db) : "no db");
}

const char *store_errmsg(struct store *s)
{
	return s->err;
}

sqlite3_stmt *store_stmt(struct store *s, enum store_stmt id)
{
	sqlite3_stmt *st = s->stmts[id];

	if (st == NULL) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st,
				       NULL) != SQLITE_OK) {
			store_set_err(s, "prepare");
			return NULL;
		}
		s->stmts[id] = st;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

int store_step_done(struct store *s, sqlite3_stmt *st)
{
	int rc;

	if (st == NULL)
		return -EIO;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_set_err(s, sqlite3_sql(st));
		return store_errno(rc);
	}
	return 0;
}

/* Runs a cached statement that takes no parameters. */
static int run_stmt(struct store *s, enum store_stmt id)
{
	return store_step_done(s, store_stmt(s, id));
}

int store_exec_sql(struct store *s, const char *sql)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK) {
		store_set_err(s, "exec");
		return store_errno(rc);
	}
	return 0;
}

/* ---- hash chain ---- */

static void hash_field(EVP_MD_CTX *ctx, const void *p, size_t len)
{
	uint8_t l[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			(uint8_t)len};

	EVP_DigestUpdate(ctx, l, sizeof(l));
	if (len > 0)
		EVP_DigestUpdate(ctx, p, len);
}

static void hash_str(EVP_MD_CTX *ctx, const char *s)
{
	hash_field(ctx, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static void hash_int(EVP_MD_CTX *ctx, long long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lld", v);
	hash_str(ctx, buf);
}

void store_event_hash(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
		      const char *order_id, const char *status, long long amount,
		      const char *source, bool conflict, const char *dedupe_key, const char *raw,
		      size_t raw_len, int64_t received_at, uint8_t out[STORE_HASH_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = STORE_HASH_LEN;

	memset(out, 0, STORE_HASH_LEN);
	if (ctx == NULL)
		return;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) {
		EVP_DigestUpdate(ctx, "komerce-hookd/1", 15);
		hash_field(ctx, prev, STORE_HASH_LEN);
		hash_int(ctx, id);
		hash_str(ctx, payment_id);
		hash_str(ctx, order_id);
		hash_str(ctx, status);
		hash_int(ctx, amount);
		hash_str(ctx, source);
		hash_int(ctx, conflict ? 1 : 0);
		hash_str(ctx, dedupe_key);
		hash_field(ctx, raw, raw_len);
		hash_int(ctx, received_at);
		EVP_DigestFinal_ex(ctx, out, &n);
	}
	EVP_MD_CTX_free(ctx);
}

/* ---- event request ---- */

void store_dedupe_key(const char *payment_id, const char *status, bool conflict, long long amount,
		      char *out, size_t n)
{
	if (!conflict)
		snprintf(out, n, "%s:%s", payment_id, status);
	else if (amount >= 0)
		snprintf(out, n, "%s:%s:conflict:%lld", payment_id, status, amount);
	else
		snprintf(out, n, "%s:%s:conflict", payment_id, status);
}

void store_bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
	if (v != NULL && v[0] != '\0')
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

void store_bind_int_or_null(sqlite3_stmt *st, int i, long long v, long long absent)
{
	if (v != absent)
		sqlite3_bind_int64(st, i, v);
	else
		sqlite3_bind_null(st, i);
}

void store_col_copy(sqlite3_stmt *st, int col, char *out, size_t n)
{
	const unsigned char *v = sqlite3_column_text(st, col);

	snprintf(out, n, "%s", v != NULL ? (const char *)v : "");
}

int64_t store_col_i64(sqlite3_stmt *st, int col, int64_t absent)
{
	return sqlite3_column_type(st, col) == SQLITE_NULL ? absent : sqlite3_column_int64(st, col);
}

static int insert_receipt(struct store *s, int64_t event_id, const struct event *ev, int64_t now)
{
	sqlite3_stmt *st = store_stmt(s, ST_RECEIPT_INSERT);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_int64(st, 1, event_id);
	sqlite3_bind_text(st, 2, event_source_name(ev->source), -1, SQLITE_STATIC);
	store_bind_text_or_null(st, 3, ev->remote_addr);
	sqlite3_bind_int64(st, 4, now);
	return store_step_done(s, st);
}

/* Looks up the payment: 0 and its status/amount, -ENOENT if unknown, or -errno. */
static int payment_lookup(struct store *s, const char *payment_id, enum payment_status *ret_status,
			  long long *ret_amount)
{
	sqlite3_stmt *st = store_stmt(s, ST_PAYMENT_GET);
	int rc, r = -ENOENT;

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret_status = payment_status_parse((const char *)sqlite3_column_text(st, 0));
		*ret_amount = sqlite3_column_type(st, 1) == SQLITE_NULL
				      ? -1
				      : sqlite3_column_int64(st, 1);
		r = 0;
	} else if (rc != SQLITE_DONE) {
		store_set_err(s, "payment lookup");
		r = store_errno(rc);
	}
	sqlite3_reset(st);
	return r;
}

int store_apply_event(struct store *s, struct store_req *r)
{
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	const char *status = payment_status_name(ev->status);
	const char *source = event_source_name(ev->source);
	char key[EVENT_ID_MAX + 48];
	enum payment_status cur = PAYMENT_UNKNOWN;
	enum payment_verdict verdict;
	long long cur_amount = -1;
	uint8_t hash[STORE_HASH_LEN];
	sqlite3_stmt *st;
	int64_t id;
	int rc, err;
	bool known, terminal, apply;

	/* What the fact means for the payment decides its dedupe key: a conflicting fact (a status
	 * the state machine refuses, or another amount than the one known) never moves the payment
	 * and gets a key of its own, so that the true fact for the same status, arriving later,
	 * is still stored rather than absorbed as its duplicate. */
	err = payment_lookup(s, ev->payment_id, &cur, &cur_amount);
	if (err < 0 && err != -ENOENT)
		return err;
	known = err == 0;
	verdict = known ? payment_transition(cur, ev->status) : PAYMENT_APPLY;
	r->conflict = verdict == PAYMENT_CONFLICT ||
		      (known && cur_amount >= 0 && ev->amount >= 0 && cur_amount != ev->amount);
	store_dedupe_key(ev->payment_id, status, r->conflict, ev->amount, key, sizeof(key));

	/* The same fact learned again: one event, one more receipt. */
	st = store_stmt(s, ST_EVENT_BY_KEY);
	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		r->event_id = sqlite3_column_int64(st, 0);
		r->conflict = sqlite3_column_int(st, 1) != 0;
		r->duplicate = true;
		sqlite3_reset(st);
		if (ev->source == EVENT_SOURCE_CALLBACK) {
			st = store_stmt(s, ST_PAYMENT_SEEN);
			if (st == NULL)
				return -EIO;
			sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 2, now);
			err = store_step_done(s, st);
			if (err < 0)
				return err;
		}
		return insert_receipt(s, r->event_id, ev, now);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_set_err(s, "dedupe lookup");
		return store_errno(rc);
	}

	id = s->tx_last_id + 1;
	store_event_hash(s->tx_last_hash, id, ev->payment_id, ev->order_id, status, ev->amount,
			 source, r->conflict, key, ev->raw, ev->raw_len, now, hash);
	st = store_stmt(s, ST_EVENT_INSERT);
	if (st == NULL)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, ev->payment_id, -1, SQLITE_STATIC);
	store_bind_text_or_null(st, 3, ev->order_id);
	sqlite3_bind_text(st, 4, status, -1, SQLITE_STATIC);
	store_bind_int_or_null(st, 5, ev->amount, -1);
	sqlite3_bind_text(st, 6, source, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 7, r->conflict ? 1 : 0);
	sqlite3_bind_text(st, 8, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, ev->raw != NULL ? ev->raw : "", (int)ev->raw_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, now);
	sqlite3_bind_blob(st, 11, s->tx_last_hash, STORE_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 12, hash, STORE_HASH_LEN, SQLITE_STATIC);
	err = store_step_done(s, st);
	if (err < 0)
		return err;

	terminal = payment_status_terminal(ev->status);
	if (!known) {
		st = store_stmt(s, ST_PAYMENT_INSERT);
		if (st == NULL)
			return -EIO;
		sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
		store_bind_text_or_null(st, 2, ev->order_id);
		store_bind_text_or_null(st, 3, ev->payment_type);
		store_bind_text_or_null(st, 4, ev->channel_code);
		store_bind_int_or_null(st, 5, ev->amount, -1);
		sqlite3_bind_text(st, 6, status, -1, SQLITE_STATIC);
		store_bind_int_or_null(st, 7, ev->expires_at, 0);
		sqlite3_bind_int64(st, 8, now);
		store_bind_int_or_null(st, 9, ev->source == EVENT_SOURCE_CALLBACK ? now : 0, 0);
		if (!terminal && s->opts.reconcile)
			sqlite3_bind_int64(st, 10, now + s->opts.grace_seconds * 1000);
		else
			sqlite3_bind_null(st, 10);
		sqlite3_bind_text(st, 11, ev->source == EVENT_SOURCE_API ? "api" : source, -1,
				  SQLITE_STATIC);
		err = store_step_done(s, st);
	} else {
		st = store_stmt(s, ST_PAYMENT_UPDATE);
		if (st == NULL)
			return -EIO;
		sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
		/* A conflict never moves the payment (status, amount, watch schedule). */
		apply = verdict == PAYMENT_APPLY && !r->conflict;
		sqlite3_bind_text(st, 2, payment_status_name(apply ? ev->status : cur), -1,
				  SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, now);
		store_bind_text_or_null(st, 4, ev->order_id);
		store_bind_text_or_null(st, 5, ev->payment_type);
		store_bind_text_or_null(st, 6, ev->channel_code);
		store_bind_int_or_null(st, 7, r->conflict ? -1 : ev->amount, -1);
		store_bind_int_or_null(st, 8, ev->source == EVENT_SOURCE_CALLBACK ? now : 0, 0);
		sqlite3_bind_int(st, 9, apply && terminal);
		store_bind_int_or_null(st, 10, ev->expires_at, 0);
		err = store_step_done(s, st);
	}
	if (err < 0)
		return err;

	for (size_t i = 0; i < s->n_sinks; i++) {
		/* A conflict goes only to sinks that asked for conflicts (sink.NAME.conflicts): a
		 * consumer that reads "status" alone must never see a contradicted PAID. */
		if (r->conflict && !s->sink_conflicts[i])
			continue;
		st = store_stmt(s, ST_OUTBOX_INSERT);
		if (st == NULL)
			return -EIO;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_text(st, 2, ev->payment_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, s->sinks[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		err = store_step_done(s, st);
		if (err < 0)
			return err;
	}
	err = insert_receipt(s, id, ev, now);
	if (err < 0)
		return err;

	s->tx_last_id = id;
	memcpy(s->tx_last_hash, hash, STORE_HASH_LEN);
	s->tx_new_events++;
	if (ev->status >= PAYMENT_PENDING && ev->status <= PAYMENT_CANCELED &&
	    ev->source <= EVENT_SOURCE_API)
		s->tx_events_by[ev->status][ev->source]++;
	r->event_id = id;
	r->duplicate = false;
	return 0;
}

void store_req_event(struct store_req *r, const struct event *ev)
{
	memset(r, 0, sizeof(*r));
	r->apply = store_apply_event;
	r->ev = *ev;
}

/* ---- writer ---- */

static bool storage_error(int err)
{
	/* Errors that poison the whole transaction rather than one request. */
	return err == -ENOSPC || err == -EIO || err == -EAGAIN || err == -ENOMEM ||
	       err == -EBADMSG || err == -EACCES;
}

static void observe(uint64_t *buckets, const double *bounds, size_t n, double v)
{
	size_t i = 0;

	while (i < n && v > bounds[i])
		i++;
	__atomic_fetch_add(&buckets[i], 1, __ATOMIC_RELAXED);
}

/* Applies one batch in one transaction. Each request runs inside a savepoint so that a request
 * that fails on its own (bad input) leaves nothing behind while the others commit; a storage
 * error (disk full, I/O, busy past the timeout) rolls the whole batch back and fails every
 * request in it, so nothing is acknowledged that is not durable. */
static void run_batch(struct store *s, struct store_req *batch, size_t n)
{
	struct timespec a, b;
	int err = 0;
	size_t dups = 0, conflicts = 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	s->tx_last_id = s->last_id;
	memcpy(s->tx_last_hash, s->last_hash, STORE_HASH_LEN);
	s->tx_new_events = 0;
	memset(s->tx_events_by, 0, sizeof(s->tx_events_by));

	err = run_stmt(s, ST_BEGIN);
	for (struct store_req *r = batch; r != NULL && err == 0; r = r->next) {
		int e;

		err = run_stmt(s, ST_SAVEPOINT);
		if (err < 0)
			break;
		e = r->apply(s, r);
		if (e < 0 && storage_error(e)) {
			err = e;
			break;
		}
		if (e < 0) {
			r->result = e;
			err = run_stmt(s, ST_ROLLBACK_TO);
			if (err < 0)
				break;
		}
		err = run_stmt(s, ST_RELEASE);
	}
	if (err == 0)
		err = run_stmt(s, ST_COMMIT);
	if (err < 0) {
		if (!sqlite3_get_autocommit(s->db))
			run_stmt(s, ST_ROLLBACK);
		for (struct store_req *r = batch; r != NULL; r = r->next) {
			r->result = err;
			r->event_id = 0;
		}
		__atomic_fetch_add(&s->stats.commit_failures, 1, __ATOMIC_RELAXED);
	} else {
		s->last_id = s->tx_last_id;
		memcpy(s->last_hash, s->tx_last_hash, STORE_HASH_LEN);
		for (struct store_req *r = batch; r != NULL; r = r->next) {
			if (r->result == 0 && r->duplicate)
				dups++;
			if (r->result == 0 && r->conflict && !r->duplicate)
				conflicts++;
		}
		__atomic_fetch_add(&s->stats.commits, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->stats.events, s->tx_new_events, __ATOMIC_RELAXED);
		for (size_t st = 0; st < 4; st++)
			for (size_t so = 0; so < 3; so++)
				if (s->tx_events_by[st][so] != 0)
					__atomic_fetch_add(&s->stats.events_by[st][so],
							   s->tx_events_by[st][so],
							   __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->stats.duplicates, dups, __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->stats.conflicts, conflicts, __ATOMIC_RELAXED);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	{
		uint64_t us = (uint64_t)((b.tv_sec - a.tv_sec) * 1000000 +
					 (b.tv_nsec - a.tv_nsec) / 1000);

		__atomic_fetch_add(&s->stats.commit_us_total, us, __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->stats.batch_total, n, __ATOMIC_RELAXED);
		observe(s->stats.commit_us_bucket, store_commit_bucket_ms, 11, (double)us / 1000.0);
		observe(s->stats.batch_bucket, store_batch_bucket, 9, (double)n);
	}
	if (err == 0 && s->tx_new_events > 0 && s->commit_hook != NULL)
		s->commit_hook(s->commit_hook_arg, s->tx_new_events);

	/* done() may free or reuse r (the HTTP layer resumes the connection): read next first. */
	for (struct store_req *r = batch, *next; r != NULL; r = next) {
		next = r->next;
		r->next = NULL;
		r->done(r);
	}
}

static void *writer_main(void *arg)
{
	struct store *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct store_req *batch, *last;
		size_t n = 1;

		while (s->head == NULL && !s->stopping)
			pthread_cond_wait(&s->cond, &s->mu);
		if (s->head == NULL)
			break; /* stopping and drained */
		batch = last = s->head;
		while (last->next != NULL && (long)n < s->opts.batch_max) {
			last = last->next;
			n++;
		}
		s->head = last->next;
		if (s->head == NULL)
			s->tail = NULL;
		last->next = NULL;
		s->queue_len -= (long)n;
		pthread_mutex_unlock(&s->mu);

		run_batch(s, batch, n);

		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int store_writer_start(struct store *s)
{
	int r;

	if (s->opts.readonly)
		return -EROFS;
	s->stopping = false;
	r = pthread_create(&s->thread, NULL, writer_main, s);
	if (r != 0)
		return -r;
	s->running = true;
	return 0;
}

void store_writer_stop(struct store *s)
{
	if (s == NULL || !s->running)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	s->running = false;
}

int store_submit(struct store *s, struct store_req *r)
{
	int ret = 0;

	r->next = NULL;
	r->result = 0;
	pthread_mutex_lock(&s->mu);
	if (!s->running || s->stopping) {
		ret = -ESHUTDOWN;
	} else if (s->queue_len >= s->opts.queue_max) {
		ret = -EAGAIN;
	} else {
		if (s->tail != NULL)
			s->tail->next = r;
		else
			s->head = r;
		s->tail = r;
		s->queue_len++;
		pthread_cond_signal(&s->cond);
	}
	pthread_mutex_unlock(&s->mu);
	return ret;
}

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool done;
	store_done_fn inner;
	void *inner_user;
};

static void wait_done(struct store_req *r)
{
	struct waiter *w = r->priv;

	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

int store_submit_wait(struct store *s, struct store_req *r)
{
	struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	int ret;

	r->done = wait_done;
	r->priv = &w;
	ret = store_submit(s, r);
	if (ret < 0) {
		r->result = ret;
		return ret;
	}
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cond);
	return r->result;
}

void store_set_commit_hook(struct store *s, void (*fn)(void *arg, size_t new_events), void *arg)
{
	s->commit_hook = fn;
	s->commit_hook_arg = arg;
}

void store_get_stats(struct store *s, struct store_stats *ret)
{
	memcpy(ret, &s->stats, sizeof(*ret));
	pthread_mutex_lock(&s->mu);
	ret->queue_len = s->queue_len;
	pthread_mutex_unlock(&s->mu);
}

/* ---- open / migrate ---- */

/* Reads PRAGMA user_version into *ret_version: 0, or -errno with a line in err. Reading does
 * not write to the file. */
static int schema_version(struct store *s, int *ret_version, char *err, size_t err_len)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		int r = store_errno(rc);

		snprintf(err, err_len, "store: cannot read schema version of %s: %s", s->path,
			 sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		return r < 0 ? r : -EIO;
	}
	*ret_version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

/* A database written by a newer komerce-hookd is refused before anything writes to it (not
 * even the journal mode), so that the newer binary can still use it. */
static int refuse_newer(struct store *s, int version, char *err, size_t err_len)
{
	if (version <= (int)store_migrations_count)
		return 0;
	snprintf(err, err_len,
		 "store: %s has schema version %d, newer than this binary knows (%zu); "
		 "refusing to touch it",
		 s->path, version, store_migrations_count);
	return -EPROTO;
}

/* Before a migration changes an existing database, copies it to <path>.v<version>.bak with
 * SQLite's online backup API (store_audit_backup: one snapshot, fsynced, a single file
 * without -wal) and keeps it. Written as <bak>.new and renamed, so that a backup left by an
 * earlier attempt at the same upgrade is replaced only by a complete newer copy of the same
 * schema version. Costs one full read and write of the database, once per upgrade. No
 * backup, no migration: the caller refuses to start with the reason. */
static int backup_before_migrate(struct store *s, int version, char *err, size_t err_len)
{
	char dest[4096], tmp[4096 + 8], why[512];
	int64_t bytes = 0;
	int r;

	if ((size_t)snprintf(dest, sizeof(dest), "%s.v%d.bak", s->path, version) >= sizeof(dest))
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof(tmp), "%s.new", dest);
	unlink(tmp); /* left over from an interrupted attempt */
	r = store_audit_backup(s, tmp, &bytes, why, sizeof(why));
	if (r == 0 && rename(tmp, dest) < 0) {
		r = -errno;
		snprintf(why, sizeof(why), "cannot rename %s to %s", tmp, dest);
		unlink(tmp);
	}
	if (r == 0)
		r = util_fsync_dir(dest);
	if (r < 0)
		snprintf(err, err_len,
			 "store: cannot back up %s (schema version %d) before migrating it, "
			 "nothing was changed: %s",
			 s->path, version, why);
	return r;
}

/* Brings a database at schema version `version` (already checked not to be newer) up to
 * date: an existing database is backed up first, then each migration runs in its own
 * transaction together with the version bump, so a failure leaves the last good version. */
static int migrate(struct store *s, int version, char *err, size_t err_len)
{
	int r;

	if (version >= 1 && version < (int)store_migrations_count) {
		r = backup_before_migrate(s, version, err, err_len);
		if (r < 0)
			return r;
	}
	for (size_t v = (size_t)version; v < store_migrations_count; v++) {
		char pragma[64];

		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %zu", v + 1);
		r = store_exec_sql(s, "BEGIN IMMEDIATE");
		if (r == 0)
			r = store_exec_sql(s, store_migrations[v]);
		if (r == 0)
			r = store_exec_sql(s, pragma);
		if (r == 0)
			r = store_exec_sql(s, "COMMIT");
		if (r < 0) {
			snprintf(err, err_len, "store: migration %zu of %s failed: %s", v + 1,
				 s->path, s->err);
			if (!sqlite3_get_autocommit(s->db))
				sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return r;
		}
	}
	return 0;
}

static int load_chain_head(struct store *s)
{
	sqlite3_stmt *st;
	int rc;

	s->last_id = 0;
	memset(s->last_hash, 0, STORE_HASH_LEN);
	if (sqlite3_prepare_v2(s->db, "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1", -1,
			       &st, NULL) != SQLITE_OK) {
		store_set_err(s, "chain head");
		return -EIO;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->last_id = sqlite3_column_int64(st, 0);
		if (sqlite3_column_bytes(st, 1) == STORE_HASH_LEN)
			memcpy(s->last_hash, sqlite3_column_blob(st, 1), STORE_HASH_LEN);
	} else if (rc != SQLITE_DONE) {
		store_set_err(s, "chain head");
		sqlite3_finalize(st);
		return store_errno(rc);
	}
	sqlite3_finalize(st);
	return 0;
}

int store_open(const struct store_opts *o, struct store **ret, char *err, size_t err_len)
{
	struct store *s;
	char sql[128];
	int flags, rc, r;

	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, err_len, "store: out of memory");
		return -ENOMEM;
	}
	s->opts = *o;
	s->lock_fd = -1;
	if (s->opts.batch_max <= 0)
		s->opts.batch_max = 512;
	if (s->opts.queue_max <= 0)
		s->opts.queue_max = 65536;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->path = strdup(o->path);
	if (s->path == NULL) {
		r = -ENOMEM;
		snprintf(err, err_len, "store: out of memory");
		goto fail;
	}
	for (size_t i = 0; i < o->n_sinks && i < STORE_MAX_SINKS; i++) {
		s->sinks[i] = strdup(o->sinks[i]);
		s->sink_conflicts[i] = o->sink_conflicts != NULL && o->sink_conflicts[i];
		if (s->sinks[i] == NULL) {
			r = -ENOMEM;
			snprintf(err, err_len, "store: out of memory");
			goto fail;
		}
		s->n_sinks++;
	}
	s->opts.sinks = NULL;

	if (!o->readonly) {
		/* One writer per database: a second daemon on the same file would fork the hash
		 * chain. The lock dies with the process, so a crash never leaves it stale. */
		char lock_path[4096];

		snprintf(lock_path, sizeof(lock_path), "%s.lock", o->path);
		s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (s->lock_fd < 0) {
			r = -errno;
			snprintf(err, err_len, "store: cannot open lock file %s: %s", lock_path,
				 r == -EACCES	? "permission denied"
				 : r == -ENOENT ? "no such directory"
						: "open failed");
			goto fail;
		}
		if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			r = -EBUSY;
			snprintf(err, err_len,
				 "store: %s is in use by another komerce-hookd (lock %s held)",
				 o->path, lock_path);
			goto fail;
		}
	}

	flags = o->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	rc = sqlite3_open_v2(o->path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = store_errno(rc);
		snprintf(err, err_len, "store: cannot open %s: %s", o->path,
			 s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 0);
	sqlite3_busy_timeout(s->db, (int)o->busy_timeout_ms);

	if (!o->readonly) {
		int version = 0;

		r = schema_version(s, &version, err, err_len);
		if (r == 0)
			r = refuse_newer(s, version, err, err_len);
		if (r < 0)
			goto fail;
		r = store_exec_sql(s, "PRAGMA journal_mode = WAL");
		if (r == 0) {
			snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s",
				 o->synchronous_full ? "FULL" : "NORMAL");
			r = store_exec_sql(s, sql);
		}
		if (r < 0) {
			snprintf(err, err_len, "store: cannot use %s: %s", o->path, s->err);
			goto fail;
		}
		r = migrate(s, version, err, err_len);
		if (r < 0)
			goto fail;
		r = load_chain_head(s);
		if (r < 0) {
			snprintf(err, err_len, "store: cannot read %s: %s", o->path, s->err);
			goto fail;
		}
	} else {
		sqlite3_stmt *st;
		int version = -1;

		if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW)
			version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
		if (version > (int)store_migrations_count) {
			r = -EPROTO;
			snprintf(err, err_len,
				 "store: %s has schema version %d, newer than this binary knows "
				 "(%zu)",
				 o->path, version, store_migrations_count);
			goto fail;
		}
		if (version <= 0) {
			r = version == 0 ? -ENOENT : -EBADMSG;
			snprintf(err, err_len, "store: %s is not a komerce-hookd database%s",
				 o->path, version == 0 ? " (no schema)" : "");
			goto fail;
		}
	}
	*ret = s;
	return 0;
fail:
	store_close(s);
	return r;
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	store_writer_stop(s);
	for (size_t i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(s->stmts[i]);
	if (s->db != NULL) {
		if (sqlite3_close(s->db) != SQLITE_OK)
			sqlite3_close_v2(s->db);
	}
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	for (size_t i = 0; i < s->n_sinks; i++)
		free(s->sinks[i]);
	free(s->path);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
	free(s);
}
