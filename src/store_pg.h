/* Internals of the PostgreSQL backend (store_pg*.c), one file per job like the SQLite backend:
 * store_pg.c (the backend table, open, close, reconnection, the writer's transaction),
 * _util (connections, statements, parameters, errors), _event (the event and track requests),
 * _outbox, _reconcile, _query, _audit (verify, orphans, statistics, plans), _prune, _migrate
 * (schema versions under an advisory lock) and _leader (elections). Not for other modules. */
#pragma once

#include <libpq-fe.h>

#include "store_backend.h"

/* Advisory locks of komerce-hookd, in the two-int4 key space. Their class is a hash of the
 * schema the tables live in (the first of the session's search_path), even, so that two
 * deployments in two schemas of one database never compete: class holds the chain
 * (transaction-level, every writer transaction) and the migration (session-level, at
 * start-up); class + 1 holds one lock per elected job, keyed by a hash of its name. Advisory
 * locks are per database, so other databases of the cluster never compete either. */
#define STORE_PG_LOCK_CHAIN   1
#define STORE_PG_LOCK_MIGRATE 2

#define STORE_PG_STR(x)	 #x
#define STORE_PG_XSTR(x) STORE_PG_STR(x)

/* A LEADER session silent this long is ended by the server (its locks released). */
#define STORE_PG_LEASE_MS 8000

#define STORE_PG_MAX_JOBS 16
#define STORE_PG_JOB_MAX  48

/* Statements prepared once per connection (the ingest path). */
enum store_pg_stmt {
	PG_EVENT_LOOKUP,
	PG_EVENT_BY_KEY,
	PG_EVENT_NEW_PAYMENT,
	PG_EVENT_KNOWN_PAYMENT,
	PG_EVENT_DUPLICATE,
	PG__COUNT,
};

/* The writer's per-request savepoint is sent with the request's first statement, and released
 * with its last one where the request says which that is: one round trip each instead of
 * two (libpq pipeline mode). */
enum store_pg_sp {
	STORE_PG_SP_NONE,    /* no savepoint (outside a request, or released) */
	STORE_PG_SP_PENDING, /* asked for, not sent yet: nothing of the request ran */
	STORE_PG_SP_OPEN,    /* sent */
};

/* The keys a fact may be stored under, by what store_event_decide() makes of it: agreeing with
 * the payment, conflicting with it, or held for confirmation. */
enum store_pg_key {
	STORE_PG_KEY_AGREE,
	STORE_PG_KEY_CONTRA,
	STORE_PG_KEY_HELD,
	STORE_PG_KEYS,
};
#define STORE_PG_KEY_MAX (EVENT_ID_MAX + 48)
void store_pg_fact_keys(const struct event *ev, char keys[STORE_PG_KEYS][STORE_PG_KEY_MAX]);

/* An event stored under a key (id 0: none). */
struct store_pg_dup {
	int64_t id;
	bool conflict, held;
};

/* What a lookup learned about one event request: its payment as stored, and the event stored
 * under each key it may have. */
struct store_pg_seen {
	struct store_event_payment cur;
	struct store_pg_dup dup[STORE_PG_KEYS];
};

/* Reads one row of a lookup into seen: the payment (columns 0-4) and the event (columns 6-8)
 * under the key numbered in column 5, if any. */
void store_pg_read_seen(PGresult *res, int row, struct store_pg_seen *seen);

/* The batch's read-ahead of one event request (store_pg_prefetch.c). */
struct store_pg_prefetch {
	const struct store_req *req;
	struct store_pg_seen seen;
};

struct store_pg {
	PGconn *conn;
	bool prepared[PG__COUNT];
	int64_t replan_at_id; /* the chain's head at which to prepare them again */
	int32_t lock_class;   /* see STORE_PG_LOCK_CHAIN */
	bool in_tx;
	enum store_pg_sp sp;
	/* reconnection: no attempt before next_connect_ms (monotonic), backoff doubling */
	int64_t next_connect_ms;
	long backoff_ms;
	bool was_down; /* the last attempt failed: log the recovery once (writer) */
	/* hash chain head inside the transaction and at the request's savepoint */
	int64_t tx_last_id, sp_last_id;
	uint8_t tx_last_hash[STORE_HASH_LEN], sp_last_hash[STORE_HASH_LEN];
	/* the writer's read-ahead (store_pg_prefetch.c): entries in batch order, and the payments
	 * written in this transaction since (an open-addressing set of hashes) */
	struct store_pg_prefetch *pf;
	size_t n_pf, cap_pf, pf_next;
	uint64_t *touched;
	size_t n_touched, cap_touched;
	/* copies (store_pg_copy.c): COPY FROM STDIN's buffer */
	char *copy_buf;
	size_t copy_len;
	/* LEADER handles: the jobs this session holds */
	char jobs[STORE_PG_MAX_JOBS][STORE_PG_JOB_MAX];
	size_t n_jobs;
};

static inline struct store_pg *store_pg_of(struct store *s)
{
	return s->impl;
}

/* ---- store_pg_util.c ---- */

/* FNV-1a, for lock keys. */
uint32_t store_pg_fnv(const char *prefix, const char *s);

/* Opens the handle's connection: the URL with keepalives and timeouts added (the URL's own
 * parameters win), session settings for the mode. 0, or -errno with the reason in s->err
 * (libpq's message, which never holds the password). */
int store_pg_connect(struct store *s);
/* A live connection for the next statement: reconnects a lost one, but not more often than
 * the backoff allows (-ECONNRESET at once in between). 0 or -errno. */
int store_pg_ready(struct store *s);
/* Maps a failed result (or NULL) to -errno and records "what: message" as the last error. A
 * lost connection gives -ECONNRESET (and the next store_pg_ready reconnects). */
int store_pg_fail(struct store *s, PGresult *res, const char *what);
/* Runs sql with n text parameters (NULL = SQL NULL). On success returns 0 and *ret (caller
 * PQclear()s; ret may be NULL). */
int store_pg_exec(struct store *s, const char *sql, int n, const char *const *vals, PGresult **ret,
		  const char *what);
/* Runs sql inside a savepoint of its own (sent in the same round trip): on failure the
 * transaction goes on without it when *ret_intact (else it is lost too). The writer's
 * statements that may fail without failing the batch. */
int store_pg_exec_guarded(struct store *s, const char *sql, int n, const char *const *vals,
			  PGresult **ret, bool *ret_intact, const char *what);
/* Runs sql, which may be several statements, without parameters (one round trip); *ret is
 * the last statement's result. */
int store_pg_exec_simple(struct store *s, const char *sql, PGresult **ret, const char *what);
/* Like store_pg_exec with per-parameter lengths and formats (1 = binary). */
int store_pg_exec_fmt(struct store *s, const char *sql, int n, const char *const *vals,
		      const int *lens, const int *fmts, PGresult **ret, const char *what);
/* Runs the prepared statement id (prepared on this connection first if needed). With last, the
 * request's savepoint is released in the same round trip. */
int store_pg_exec_stmt(struct store *s, enum store_pg_stmt id, int n, const char *const *vals,
		       const int *lens, const int *fmts, bool last, PGresult **ret);
/* Runs sql and calls row(arg, res, 0) for each result row as it arrives (single-row mode:
 * memory stays flat however many rows there are); a non-zero return from row stops it (the
 * rest is cancelled) and is returned. Else 0 or -errno. */
int store_pg_stream(struct store *s, const char *sql, int n, const char *const *vals,
		    int (*row)(void *arg, PGresult *res), void *arg, const char *what);
/* A generic plan made while the tables were small (a sequential scan) would stay for the
 * connection's life: the ingest statements are prepared again each time the chain has doubled
 * since (head_id passes 1024, 3072, 7168, ...). 0 or -errno. */
int store_pg_replan(struct store *s, int64_t head_id);
/* Number of rows a command changed. */
long store_pg_changed(PGresult *res);

/* Cell helpers: NULL cells read as absent (text "" or the given value). */
int64_t store_pg_i64(PGresult *res, int row, int col, int64_t absent);
void store_pg_copy(PGresult *res, int row, int col, char *out, size_t n);
bool store_pg_bool(PGresult *res, int row, int col);
/* A hex-encoded 32-byte hash (encode(x, 'hex')) into out; zeros when absent or malformed. */
void store_pg_hash(PGresult *res, int row, int col, uint8_t out[STORE_HASH_LEN]);

/* Text forms of parameters: a number, or NULL when it equals absent. */
struct store_pg_num {
	char buf[24];
};
const char *store_pg_num(struct store_pg_num *b, long long v);
const char *store_pg_num_or_null(struct store_pg_num *b, long long v, long long absent);
const char *store_pg_text_or_null(const char *v); /* "" -> NULL */

/* The columns store_pg_payment_read() expects, in its order (like SQLite's). */
#define STORE_PG_PAYMENT_COLUMNS                                                         \
	"payment_id, order_id, payment_type, channel_code, amount, status, expires_at, " \
	"created_at, updated_at, callback_seen_at, last_polled_at, next_poll_at, "       \
	"poll_attempts, origin, confirmation, confirmation_detail, confirmation_at, "    \
	"held_event_id"
#define STORE_PG_PAYMENT_NCOLS 18
void store_pg_payment_read(PGresult *res, int row, struct store_payment *p);

/* ---- store_pg_prefetch.c (writer) ---- */

/* After begin(): looks up every event request of the batch in one statement. */
int store_pg_prefetch(struct store *s, struct store_req *batch);
/* The read-ahead of event request r, or NULL (none, or its payment was written since). */
const struct store_pg_prefetch *store_pg_prefetched(struct store *s, const struct store_req *r);
/* The payment was written in this transaction: its read-ahead is stale from now on. */
void store_pg_touch(struct store *s, const char *payment_id);

/* ---- store_pg_event.c (writer) ---- */

int store_pg_apply_event(struct store *s, struct store_req *r);
int store_pg_apply_track(struct store *s, struct store_req *r);
/* The payment as the writer's decisions need it (known false when there is none). */
int store_pg_payment_state(struct store *s, const char *payment_id,
			   struct store_event_payment *ret);
/* What storing one fact did. */
struct store_pg_fact {
	int64_t event_id;
	bool duplicate, conflict, held;
	int64_t next_poll_at; /* a poll it scheduled (ms), 0 */
};
/* Stores ev at now as d decided about the payment cur, like store_sqlite_store_fact: one more
 * receipt for a fact stored before (dup: the event under d->key, from a lookup; NULL: looked
 * up here), else the chain, the payment row, the outbox rows and the receipt in one
 * statement. last: it is the request's last statement (its savepoint is released with it). */
int store_pg_store_fact(struct store *s, const struct event *ev,
			const struct store_event_decision *d, const struct store_event_payment *cur,
			const struct store_pg_dup *dup, int64_t now, bool last,
			struct store_pg_fact *ret);
/* Sets the payment's confirmation (state, detail) at now (0: the time stays, for a detail). */
int store_pg_set_confirmation(struct store *s, const char *payment_id, enum store_confirmation c,
			      const char *detail, int64_t now);

/* ---- store_pg_outbox.c ---- */

int store_pg_apply_outcomes(struct store *s, struct store_req *r);
int store_pg_apply_replay(struct store *s, struct store_req *r);
int store_pg_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
			 struct store_outbox_row **ret_rows, size_t *ret_n);
int store_pg_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
			  int64_t *ret);
int store_pg_outbox_list(struct store *s, const struct store_outbox_filter *f,
			 int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);
int store_pg_outbox_summaries(struct store *s,
			      int (*fn)(void *arg, const struct store_outbox_summary *sum),
			      void *arg);

/* ---- store_pg_reconcile.c ---- */

int store_pg_apply_reconcile(struct store *s, struct store_req *r);
int store_pg_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			   struct store_reconcile_row *rows, size_t *ret_n);
int store_pg_reconcile_next_due(struct store *s, int64_t *ret_ms);
int store_pg_reconcile_watched(struct store *s, int64_t *ret);
int store_pg_reconcile_pending(struct store *s, int64_t now_s, int64_t *ret_pending,
			       int64_t *ret_expired);
int store_pg_polls_list(struct store *s, const char *payment_id, long limit,
			int (*fn)(void *arg, const struct store_poll *p), void *arg);
/* Retention (store_req_prune), inside the writer's transaction. */
int store_pg_prune(struct store *s, struct store_req *r);

/* ---- store_pg_query.c ---- */

int store_pg_payment_get(struct store *s, const char *payment_id, struct store_payment *ret);
int store_pg_payments_list(struct store *s, const struct store_payment_filter *f,
			   int (*fn)(void *arg, const struct store_payment *p), void *arg);
int store_pg_events_query(struct store *s, const struct store_event_filter *f,
			  int (*fn)(void *arg, const struct store_event *e), void *arg);
int store_pg_count(struct store *s, const char *table, int64_t *ret);
int store_pg_chain_head(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN]);
/* The events query for f into sql with its parameters (v, backed by nums); returns their
 * number. */
#define STORE_PG_EVENT_PARAMS 8
int store_pg_events_sql(const struct store_event_filter *f, char *sql, size_t len, const char **v,
			struct store_pg_num *nums);

/* ---- store_pg_audit.c ---- */

int store_pg_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		    size_t why_len);
int store_pg_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len);
int store_pg_stats(struct store *s, int64_t now_ms, struct store_stats *ret);
int store_pg_events_plan(struct store *s, const struct store_event_filter *f, char *out,
			 size_t out_len);

/* ---- store_pg_console.c ---- */

struct store_console_payment_filter;
struct store_console_payment;
struct store_console_receipt;
int store_pg_console_payments(struct store *s, const struct store_console_payment_filter *f,
			      int (*fn)(void *arg, const struct store_console_payment *p),
			      void *arg);
int store_pg_console_receipts(struct store *s, const char *payment_id, long limit,
			      int (*fn)(void *arg, const struct store_console_receipt *r),
			      void *arg);
int store_pg_console_deliveries(struct store *s, const char *payment_id,
				int (*fn)(void *arg, const struct store_outbox_row *r), void *arg);
int store_pg_console_last_event_id(struct store *s, int64_t *ret);

/* ---- store_pg_copy.c ---- */

int store_pg_dump(struct store *s, const struct store_dump_sink *sink);
int store_pg_load_begin(struct store *s, const struct store_table *t);
int store_pg_load_row(struct store *s, const struct store_table *t, const char *const *vals);
int store_pg_load_end(struct store *s, const struct store_table *t);

/* ---- store_pg_migrate.c ---- */

/* WRITER: under the migration lock, refuses a database newer than the binary before anything
 * writes to it and runs the missing migrations, each in its own transaction with its version
 * row. Two instances starting together: the second waits for the lock and finds nothing left
 * to do. */
int store_pg_migrate(struct store *s, char *err, size_t err_len);
/* READER / ADMIN: the database holds a komerce-hookd schema this binary knows. */
int store_pg_check_schema(struct store *s, char *err, size_t err_len);

/* ---- store_pg_leader.c ---- */

int store_pg_leader_try(struct store *s, const char *job);
int store_pg_leader_check(struct store *s, long timeout_ms);
void store_pg_leader_release(struct store *s, const char *job);
/* Forgets every job (the session that held them is gone). */
void store_pg_leader_forget(struct store *s);
