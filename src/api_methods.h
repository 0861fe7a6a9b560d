/* GET /v1/methods' cache of Komerce's payment methods: a copy younger than an hour is served
 * as it is; an older one is refreshed, and when the refresh fails the old copy is served as
 * stale (with no new attempt for API_METHODS_RETRY_MS, so an outage does not cost every caller
 * a timeout). Thread-safe; the clock and the fetch are the caller's (the tests inject both). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "komerce.h"

#define API_METHODS_TTL_MS   (3600LL * 1000)
#define API_METHODS_RETRY_MS (30LL * 1000) /* after a failed refresh, serve stale */

struct api_methods {
	pthread_mutex_t mu;   /* held across a refresh: concurrent callers wait for it */
	char *text;	      /* the methods array as JSON text; NULL until a fetch worked */
	int64_t fetched_mono; /* when text was fetched (monotonic ms) */
	int64_t fetched_wall; /* the same, unix ms, for the reply */
	int64_t failed_mono;  /* last failed refresh (monotonic ms), 0 when none since */
	int (*fetch)(void *ctx, struct komerce_result *ret); /* komerce_methods_get, or a fake */
	void *ctx;
};

void api_methods_init(struct api_methods *m, int (*fetch)(void *ctx, struct komerce_result *ret),
		      void *ctx);
void api_methods_destroy(struct api_methods *m);
/* Returns 0 with a heap copy of the array's JSON text in *ret_text (caller frees), *ret_stale
 * and *ret_fetched_wall; or the refresh's -errno when there is no copy at all. *ret_err
 * describes the last refresh when it failed (the caller logs it and clears it). */
int api_methods_get(struct api_methods *m, int64_t now_mono, int64_t now_wall, char **ret_text,
		    bool *ret_stale, int64_t *ret_fetched_wall, struct komerce_result *ret_err);
