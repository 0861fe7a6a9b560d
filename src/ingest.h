/* The callback route: authenticate a Komerce callback, parse it, hand the event to the store
 * writer and answer only after its transaction committed (200), or 4xx/429/503. Runs on the
 * public listener's threads (the reply is sent from the writer thread). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "callback.h"

struct store;
struct http_route;
struct ingest;

struct ingest_opts {
	struct store *store; /* the daemon's writer handle */
	struct callback_keys keys;
	const char *path;	   /* where Komerce posts */
	double auth_failure_burst; /* failed signatures a source may send at once ... */
	double auth_failure_rate;  /* ... and then per second; past it they get 429 */
};

/* NULL on allocation failure. The strings and keys of o are borrowed: they must outlive it. */
struct ingest *ingest_new(const struct ingest_opts *o);
void ingest_free(struct ingest *in);
/* The route of the callback path for the public listener's table. */
struct http_route ingest_route(struct ingest *in);
