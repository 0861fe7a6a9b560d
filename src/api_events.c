/* GET /v1/events (see api_events.h): validates the query parameters into a store events
 * filter, reads one page on a read-only store opened for this request, and replies with JSON.
 * Called on the admin listener's per-connection threads, so a slow query blocks only its own
 * client; the page itself is built by audit.c. */
#include "api_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "http.h"
#include "log.h"
#include "store.h"

static const char *const params[] = {"payment_id", "order_id", "status",   "source",
				     "since",	   "until",    "after_id", "limit"};

/* A parameter that is none of params: 400 naming it (a typo would otherwise be ignored and
 * the caller would get more events than asked for). */
static int unknown_param(void *arg, const char *name, const char *value)
{
	char *ret = arg;

	(void)value;
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (strcmp(name, params[i]) == 0)
			return 0;
	snprintf(ret, 160,
		 "unknown parameter %.64s (known: payment_id, order_id, status, source, "
		 "since, until, after_id, limit)",
		 name);
	return 1;
}

/* The filter from the query; false after replying 400. */
static bool read_filter(struct http_request *req, struct store_event_filter *f)
{
	char why[128], msg[192];

	if (http_query_each(req, unknown_param, msg) != 0) {
		http_reply_error(req, 400, msg);
		return false;
	}
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		const char *v = http_query(req, params[i]);
		int r;

		if (v == NULL || v[0] == '\0')
			continue;
		r = audit_filter_set(f, params[i], v, why, sizeof(why));
		if (r == 0 && f->limit > API_EVENTS_LIMIT_MAX) {
			snprintf(why, sizeof(why), "at most %d", API_EVENTS_LIMIT_MAX);
			r = -EINVAL;
		}
		if (r < 0) {
			snprintf(msg, sizeof(msg), "%s: %s", params[i], why);
			http_reply_error(req, 400, msg);
			return false;
		}
	}
	return true;
}

void api_events_handler(struct http_request *req, void *ctx)
{
	struct store *writer = ctx;
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN,
				       .limit = API_EVENTS_LIMIT_DEFAULT};
	struct store *s = NULL;
	char err[512];
	char *body = NULL;
	int r;

	if (!read_filter(req, &f))
		return;
	r = store_open_like(writer, STORE_MODE_READER, &s, err, sizeof(err));
	if (r < 0) {
		log_err("events api: %s", err);
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	r = audit_events_page(s, &f, API_EVENTS_MAX_BYTES, &body);
	if (r < 0) {
		log_err("events api: query failed: %s", store_errmsg(s));
		store_close(s);
		http_reply_error(req, r == -ENOMEM ? 500 : 503,
				 r == -ENOMEM ? "out of memory" : "store unavailable");
		return;
	}
	store_close(s);
	http_reply_json(req, 200, body);
	free(body);
}
