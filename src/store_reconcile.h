/* Reconciler part of the store module: which watched payments are due for a status poll, and
 * the writes that record a poll (before it is sent, and with its result). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callback.h"
#include "store.h"

/* A watched payment as the scheduler needs it. */
struct store_reconcile_row {
	char payment_id[EVENT_ID_MAX];
	enum payment_status status;
	long long amount;	/* -1 when unknown */
	int64_t expires_at;	/* unix s, 0 when unknown */
	int64_t created_at;	/* unix ms */
	int64_t last_polled_at; /* unix ms, 0 = never */
	int64_t next_poll_at;	/* unix ms */
	long poll_attempts;
};

/* PENDING payments with next_poll_at <= now_ms, oldest due first (next_poll_at, then
 * payment_id), at most max rows into rows[]. Sets *ret_n. Returns 0 or -errno. Served by the
 * payments_due index: the cost is the rows returned, not the table size. */
int store_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			struct store_reconcile_row *rows, size_t *ret_n);
/* Earliest next_poll_at of a PENDING watched payment into *ret_ms. -ENOENT when none. */
int store_reconcile_next_due(struct store *s, int64_t *ret_ms);
/* Watched payments (next_poll_at set). */
int store_reconcile_watched(struct store *s, int64_t *ret);

/* One change to one payment's schedule, optionally with the status the poll learned. */
struct store_reconcile_update {
	char payment_id[EVENT_ID_MAX];
	bool only_if_watched;	/* apply only while PENDING and watched (a "mark": see below) */
	int64_t last_polled_at; /* ms; 0 = unchanged; never moves backwards */
	bool set_next;		/* false: next_poll_at unchanged */
	int64_t next_poll_at;	/* ms when set_next; 0 = stop watching. A terminal payment is
				   never watched again, whatever this says */
	long poll_attempts;	/* -1 = unchanged */
	int64_t expires_at;	/* unix s: fills an unknown expires_at; 0 = nothing */
	bool has_event;		/* store ev (source reconcile) before the schedule change */
	struct event ev;	/* ev.raw is borrowed until done() */
	/* set by the writer */
	bool matched; /* the payment row was updated */
	int64_t event_id;
	bool duplicate, conflict;
};

/* A write request: updates applied in order in one savepoint of the writer's transaction
 * (all or nothing). Use it for the "mark polled" write that must commit before the status
 * request is sent (only_if_watched, last_polled_at = now, next_poll_at = the earliest safe
 * re-poll should the result never be written) and for poll results (event + schedule). */
struct store_reconcile_req {
	struct store_req req; /* first: submit &r->req */
	struct store_reconcile_update *updates;
	size_t n;
};

void store_reconcile_req_init(struct store_reconcile_req *r, struct store_reconcile_update *u,
			      size_t n);
