/* Admin API handlers (admin listener, bearer token): Komerce front (methods, create, cancel,
 * status), payment tracking, events query. Handlers run on the admin listener's
 * thread-per-connection threads and may block on Komerce or on the store writer. */
#pragma once

#include <stddef.h>

struct config;
struct store;
struct reconcile;
struct http_route;
struct api;

/* writer: the daemon's read-write store (writes go through store_submit_wait); reads open
 * their own read-only handles. rec may be NULL. */
int api_new(const struct config *cfg, struct store *writer, struct reconcile *rec, struct api **ret,
	    char *err, size_t err_len) __attribute__((warn_unused_result));
/* Writes the API's routes into out (at most max); returns how many. */
size_t api_routes(struct api *a, struct http_route *out, size_t max);
void api_free(struct api *a);
