/* Read-ahead for the PostgreSQL writer's batch: right after begin(), one statement looks up the
 * payment and every key of every event request in the batch (unnest ... WITH ORDINALITY), so
 * that each event then costs one round trip (its savepoint, its write, its release) instead of
 * two. A payment written earlier in the same transaction is "touched": its read-ahead is stale
 * and that request looks up again on its own. Writer thread only. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_pid(const char *pid)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (; *pid != '\0'; pid++)
		h = (h ^ (unsigned char)*pid) * 1099511628211ULL;
	return h | 1; /* never 0: an empty slot */
}

void store_pg_touch(struct store *s, const char *payment_id)
{
	struct store_pg *q = store_pg_of(s);
	uint64_t h = hash_pid(payment_id);
	size_t i;

	/* Without read-ahead in this transaction there is nothing to invalidate, and the table
	 * (cleared only by a read-ahead) may still hold an earlier transaction's payments. */
	if (q->n_pf == 0)
		return;
	if (q->n_touched * 2 >= q->cap_touched) {
		/* too many to track: every read-ahead is now suspect */
		q->n_pf = 0;
		return;
	}
	for (i = h & (q->cap_touched - 1); q->touched[i] != 0 && q->touched[i] != h;
	     i = (i + 1) & (q->cap_touched - 1))
		;
	if (q->touched[i] == 0)
		q->n_touched++;
	q->touched[i] = h;
}

/* False positives only (a hash collision): then the request looks up on its own. */
static bool touched(const struct store_pg *q, const char *payment_id)
{
	uint64_t h = hash_pid(payment_id);

	for (size_t i = h & (q->cap_touched - 1); q->touched[i] != 0;
	     i = (i + 1) & (q->cap_touched - 1))
		if (q->touched[i] == h)
			return true;
	return false;
}

/* Appends v to a text[] literal: "v" with backslash and double quote escaped. */
static void put_elem(char *out, size_t *o, const char *v)
{
	if (*o > 1)
		out[(*o)++] = ',';
	out[(*o)++] = '"';
	for (; *v != '\0'; v++) {
		if (*v == '"' || *v == '\\')
			out[(*o)++] = '\\';
		out[(*o)++] = *v;
	}
	out[(*o)++] = '"';
	out[*o] = '\0';
}

static int reserve(struct store_pg *q, size_t n)
{
	size_t cap = 16;

	if (n > q->cap_pf) {
		struct store_pg_prefetch *pf = realloc(q->pf, n * sizeof(*pf));

		if (pf == NULL)
			return -ENOMEM;
		q->pf = pf;
		q->cap_pf = n;
	}
	while (cap < 4 * n)
		cap *= 2;
	if (cap > q->cap_touched) {
		uint64_t *t = realloc(q->touched, cap * sizeof(*t));

		if (t == NULL)
			return -ENOMEM;
		q->touched = t;
		q->cap_touched = cap;
	}
	return 0;
}

/* The text[] literals of the batch's event requests (payment ids, then each kind of key), in
 * pf order. Caller frees arr[]. */
#define N_ARRAYS (1 + STORE_PG_KEYS)
static int literals(struct store_pg *q, char *arr[N_ARRAYS])
{
	size_t cap = (2 * STORE_PG_KEY_MAX + 4) * q->n_pf + 8, o[N_ARRAYS];

	for (int k = 0; k < N_ARRAYS; k++) {
		arr[k] = malloc(cap);
		if (arr[k] == NULL)
			return -ENOMEM;
		arr[k][0] = '{';
		arr[k][1] = '\0';
		o[k] = 1;
	}
	for (size_t i = 0; i < q->n_pf; i++) {
		const struct event *ev = &q->pf[i].req->ev;
		char keys[STORE_PG_KEYS][STORE_PG_KEY_MAX];

		store_pg_fact_keys(ev, keys);
		put_elem(arr[0], &o[0], ev->payment_id);
		for (int k = 0; k < STORE_PG_KEYS; k++)
			put_elem(arr[1 + k], &o[1 + k], keys[k]);
	}
	for (int k = 0; k < N_ARRAYS; k++) {
		arr[k][o[k]++] = '}';
		arr[k][o[k]] = '\0';
	}
	return 0;
}

/* Rows as PG_EVENT_LOOKUP's, with the request's number in column 9. */
static void read_rows(struct store_pg *q, PGresult *res)
{
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t n = store_pg_i64(res, i, 9, 0);

		if (n >= 1 && (size_t)n <= q->n_pf)
			store_pg_read_seen(res, i, &q->pf[n - 1].seen);
	}
}

/* Each entry as a lookup that found nothing, before the rows fill it in. */
static void clear_entries(struct store_pg *q, size_t n)
{
	memset(q->pf, 0, n * sizeof(q->pf[0]));
	for (size_t i = 0; i < n; i++) {
		q->pf[i].seen.cur.status = PAYMENT_UNKNOWN;
		q->pf[i].seen.cur.amount = q->pf[i].seen.cur.held_amount = -1;
	}
}

int store_pg_prefetch(struct store *s, struct store_req *batch)
{
	static const char sql[] =
		"SELECT p.status, p.amount, p.confirmation, p.held_event_id, h.amount, "
		"CASE e.dedupe_key WHEN k.agree THEN 0 WHEN k.contra THEN 1 WHEN k.held THEN 2 "
		"END, "
		"e.id, e.conflict, e.confirmation, k.n "
		"FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY "
		"AS k(pid, agree, contra, held, n) "
		"LEFT JOIN payments p ON p.payment_id = k.pid "
		"LEFT JOIN events h ON h.id = p.held_event_id "
		"LEFT JOIN events e ON e.dedupe_key IN (k.agree, k.contra, k.held)";
	struct store_pg *q = store_pg_of(s);
	char *arr[N_ARRAYS] = {NULL};
	PGresult *res = NULL;
	bool intact = false;
	size_t n = 0;
	int r;

	q->n_pf = q->pf_next = q->n_touched = 0;
	for (struct store_req *x = batch; x != NULL; x = x->next)
		n += x->kind == STORE_REQ_EVENT;
	if (n < 2) /* one event: its own lookup costs no more */
		return 0;
	r = reserve(q, n);
	if (r < 0)
		return r;
	memset(q->touched, 0, q->cap_touched * sizeof(q->touched[0]));
	clear_entries(q, n);
	for (struct store_req *x = batch; x != NULL; x = x->next)
		if (x->kind == STORE_REQ_EVENT)
			q->pf[q->n_pf++].req = x;
	r = literals(q, arr);
	if (r == 0)
		r = store_pg_exec_guarded(s, sql, N_ARRAYS, (const char *const *)arr, &res, &intact,
					  "prefetch");
	for (int k = 0; k < N_ARRAYS; k++)
		free(arr[k]);
	if (r < 0) {
		/* without read-ahead, each request looks up on its own (and meets the bad input
		 * alone, in its own savepoint) */
		q->n_pf = 0;
		return intact || r == -ENOMEM ? 0 : r;
	}
	read_rows(q, res);
	PQclear(res);
	return 0;
}

const struct store_pg_prefetch *store_pg_prefetched(struct store *s, const struct store_req *r)
{
	struct store_pg *q = store_pg_of(s);
	const struct store_pg_prefetch *p;

	if (q->pf_next >= q->n_pf || q->pf[q->pf_next].req != r)
		return NULL;
	p = &q->pf[q->pf_next++];
	return touched(q, r->ev.payment_id) ? NULL : p;
}
