/* Admin API routes for the payments console (see api_console.h): payment search and lists,
 * the outbox with replay, statistics, and the receipts/deliveries/reconcile part of a payment.
 * Handlers run on the admin listener's thread-per-connection threads: reads on a read-only
 * READER handle opened per request (store_console.h, store.h), the one write (replay) through
 * the daemon's writer with store_submit_wait. Query parameters are validated before any
 * database work; a bad one is a 400 naming it. */
#include "api_console.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api_int.h"
#include "api_req.h"
#include "audit.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "payment.h"
#include "store.h"
#include "store_console.h"
#include "util.h"

#define API_CONSOLE_Q_MAX     (EVENT_ID_MAX - 1) /* q: the longest id we store */
#define API_CONSOLE_CURSOR_ID ':'		 /* "<created_at ms>:<payment_id>" */

/* ---- parameters (pure; api_console.h) ------------------------------------------------------ */

static const char *const payments_param_names[] = {"q",	    "status", "stale", "conflict",
						   "limit", "after",  NULL};
static const char *const outbox_param_names[] = {"state", "sink", "limit", "after_id", NULL};
static const char *const no_param_names[] = {NULL};

/* "true"/"1" or "false"/"0". Returns 0 or -EINVAL. */
static int parse_bool(const char *v, bool *ret)
{
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
		*ret = true;
	else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		*ret = false;
	else
		return -EINVAL;
	return 0;
}

/* A decimal integer in [min, max], digits only. Returns 0 or -EINVAL. */
static int parse_int(const char *v, long long min, long long max, long long *ret)
{
	long long n = 0;

	if (v[0] == '\0')
		return -EINVAL;
	for (const char *c = v; *c != '\0'; c++) {
		if (*c < '0' || *c > '9' || n > (LLONG_MAX - 9) / 10)
			return -EINVAL;
		n = n * 10 + (*c - '0');
	}
	if (n < min || n > max)
		return -EINVAL;
	*ret = n;
	return 0;
}

/* The search text: surrounding blanks removed, 1..API_CONSOLE_Q_MAX bytes, no control
 * characters. Returns 0 or -EINVAL. */
static int parse_q(const char *v, char *out, size_t n)
{
	size_t len;

	while (*v == ' ' || *v == '\t')
		v++;
	len = strlen(v);
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (len == 0 || len > API_CONSOLE_Q_MAX || len >= n)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return -EINVAL;
	memcpy(out, v, len);
	out[len] = '\0';
	return 0;
}

/* A sink name as config accepts it: 1-31 letters, digits, '-', '_'. */
static bool sink_name_valid(const char *v)
{
	size_t len = strlen(v);

	if (len == 0 || len >= STORE_SINK_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = v[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

void api_console_cursor_format(int64_t created_at, const char *payment_id, char *out, size_t n)
{
	snprintf(out, n, "%lld%c%s", (long long)created_at, API_CONSOLE_CURSOR_ID, payment_id);
}

int api_console_cursor_parse(const char *v, int64_t *ret_created_at, char *id, size_t id_len)
{
	const char *sep = strchr(v, API_CONSOLE_CURSOR_ID);
	char num[24];
	long long n;

	if (sep == NULL || sep == v || (size_t)(sep - v) >= sizeof(num) || sep[1] == '\0' ||
	    strlen(sep + 1) >= id_len || strlen(sep + 1) >= EVENT_ID_MAX)
		return -EINVAL;
	memcpy(num, v, (size_t)(sep - v));
	num[sep - v] = '\0';
	if (parse_int(num, 0, INT64_MAX, &n) < 0)
		return -EINVAL;
	*ret_created_at = n;
	snprintf(id, id_len, "%s", sep + 1);
	return 0;
}

/* ---- GET /v1/payments -------------------------------------------------------------------- */

int api_console_payments_params(const char *(*get)(void *arg, const char *name), void *arg,
				struct api_console_payments_query *pq, const char **ret_field,
				const char **ret_rule)
{
	const char *v;
	long long n;

	memset(pq, 0, sizeof(*pq));
	pq->f.status = PAYMENT_UNKNOWN;
	pq->f.limit = API_CONSOLE_PAYMENTS_LIMIT_DEFAULT;
	pq->f.now_ms = util_now_ms();
	if ((v = get(arg, "q")) != NULL && v[0] != '\0') {
		if (parse_q(v, pq->q, sizeof(pq->q)) < 0) {
			*ret_field = "q";
			*ret_rule = "must be 1 to 127 characters without control characters";
			return -EINVAL;
		}
		pq->f.q = pq->q;
	}
	if ((v = get(arg, "status")) != NULL && v[0] != '\0') {
		pq->f.status = payment_status_parse(v);
		if (pq->f.status == PAYMENT_UNKNOWN) {
			*ret_field = "status";
			*ret_rule = "must be PENDING, PAID, EXPIRED or CANCELED";
			return -EINVAL;
		}
	}
	if ((v = get(arg, "stale")) != NULL && v[0] != '\0' && parse_bool(v, &pq->f.stale) < 0) {
		*ret_field = "stale";
		*ret_rule = "must be true or false";
		return -EINVAL;
	}
	if ((v = get(arg, "conflict")) != NULL && v[0] != '\0' &&
	    parse_bool(v, &pq->f.conflict) < 0) {
		*ret_field = "conflict";
		*ret_rule = "must be true or false";
		return -EINVAL;
	}
	if ((v = get(arg, "limit")) != NULL && v[0] != '\0') {
		if (parse_int(v, 1, API_CONSOLE_PAYMENTS_LIMIT_MAX, &n) < 0) {
			*ret_field = "limit";
			*ret_rule = "must be an integer from 1 to 500";
			return -EINVAL;
		}
		pq->f.limit = (long)n;
	}
	if ((v = get(arg, "after")) != NULL && v[0] != '\0') {
		if (api_console_cursor_parse(v, &pq->f.after_created_at, pq->after_id,
					     sizeof(pq->after_id)) < 0) {
			*ret_field = "after";
			*ret_rule = "must be a next_after value of an earlier page";
			return -EINVAL;
		}
		pq->f.after_payment_id = pq->after_id;
	}
	return 0;
}

static const char *query_get(void *arg, const char *name)
{
	return http_query(arg, name);
}

struct known_params {
	const char *const *names; /* NULL-terminated */
	char bad[64];
};

static int check_param(void *arg, const char *name, const char *value)
{
	struct known_params *k = arg;

	(void)value;
	for (const char *const *n = k->names; *n != NULL; n++)
		if (strcmp(name, *n) == 0)
			return 0;
	snprintf(k->bad, sizeof(k->bad), "%s", name);
	return 1;
}

/* False after a 400 naming a query parameter that is none of names (NULL-terminated): a typo
 * would otherwise be ignored and widen the list asked for. */
static bool params_known(struct http_request *req, const char *const *names)
{
	struct known_params k = {.names = names};
	char rule[160];
	size_t o;

	if (http_query_each(req, check_param, &k) == 0)
		return true;
	o = (size_t)snprintf(rule, sizeof(rule), "is not a parameter of this route (known:");
	for (const char *const *n = names; *n != NULL && o < sizeof(rule); n++)
		o += (size_t)snprintf(rule + o, sizeof(rule) - o, " %s", *n);
	if (o < sizeof(rule))
		snprintf(rule + o, sizeof(rule) - o, "%s", names[0] != NULL ? ")" : " none)");
	api_reply_invalid(req, k.bad, rule);
	return false;
}

struct payments_page {
	cJSON *list;
	long count, want;
	bool more;
	int64_t last_created_at;
	char last_id[EVENT_ID_MAX];
};

static int page_payment(void *arg, const struct store_console_payment *cp)
{
	struct payments_page *pg = arg;
	cJSON *o;
	const char *m;

	if (pg->count == pg->want) {
		pg->more = true;
		return 1;
	}
	o = audit_payment_json(&cp->p);
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddNumberToObject(o, "conflicts", (double)cp->conflicts);
	m = store_console_match_name(cp->match);
	if (m != NULL)
		cJSON_AddStringToObject(o, "matched", m);
	cJSON_AddItemToArray(pg->list, o);
	pg->count++;
	pg->last_created_at = cp->p.created_at;
	snprintf(pg->last_id, sizeof(pg->last_id), "%s", cp->p.payment_id);
	return 0;
}

static void reply_store_error(struct http_request *req, struct store *s, int r, const char *what)
{
	log_err("admin api: %s query failed: %s", what, s != NULL ? store_errmsg(s) : "?");
	http_reply_error(req, r == -ENOMEM ? 500 : 503,
			 r == -ENOMEM ? "out of memory" : "store unavailable");
}

static void payments_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct api_console_payments_query pq;
	struct payments_page pg;
	struct store *s = NULL;
	const char *field = NULL, *rule = NULL;
	char cursor[EVENT_ID_MAX + 24];
	cJSON *o;
	int r;

	if (!api_authorized(a, req) || !params_known(req, payments_param_names))
		return;
	if (api_console_payments_params(query_get, req, &pq, &field, &rule) < 0) {
		api_reply_invalid(req, field, rule);
		return;
	}
	if (api_open_reader(a, &s) < 0) {
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	memset(&pg, 0, sizeof(pg));
	pg.want = pq.f.limit;
	pq.f.limit++; /* one more row tells whether another page follows */
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	pg.list = cJSON_AddArrayToObject(o, "payments");
	r = pg.list != NULL ? store_console_payments(s, &pq.f, page_payment, &pg) : -ENOMEM;
	if (r < 0) {
		reply_store_error(req, s, r, "payments");
		store_close(s);
		cJSON_Delete(o);
		return;
	}
	store_close(s);
	if (pg.more) {
		api_console_cursor_format(pg.last_created_at, pg.last_id, cursor, sizeof(cursor));
		cJSON_AddStringToObject(o, "next_after", cursor);
	} else {
		cJSON_AddNullToObject(o, "next_after");
	}
	api_reply_cjson(req, 200, o, NULL);
}

/* ---- GET /v1/payments/{id}: the console's part -------------------------------------------- */

struct detail {
	cJSON *list;
	long count;
	bool more;
};

static int add_receipt(void *arg, const struct store_console_receipt *rec)
{
	struct detail *d = arg;
	cJSON *o;

	if (d->count == API_CONSOLE_RECEIPTS_MAX) {
		d->more = true;
		return 1;
	}
	o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddNumberToObject(o, "id", (double)rec->id);
	cJSON_AddNumberToObject(o, "event_id", (double)rec->event_id);
	cJSON_AddStringToObject(o, "source", rec->source);
	audit_json_str_or_null(o, "remote_addr", rec->remote_addr);
	audit_json_time(o, "received_at", rec->received_at);
	cJSON_AddItemToArray(d->list, o);
	d->count++;
	return 0;
}

/* The outbox columns of a row: shared by deliveries and GET /v1/outbox. */
static cJSON *outbox_json(const struct store_outbox_row *row)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cJSON_AddNumberToObject(o, "id", (double)row->id);
	cJSON_AddNumberToObject(o, "event_id", (double)row->event_id);
	cJSON_AddStringToObject(o, "sink", row->sink);
	cJSON_AddStringToObject(o, "state", store_outbox_state_name(row->state));
	cJSON_AddNumberToObject(o, "attempts", (double)row->attempts);
	audit_json_str_or_null(o, "last_error", row->last_error);
	audit_json_time(o, "created_at", row->created_at);
	/* a pending row's next_attempt_at is its next try; a dead row's is when it died */
	audit_json_time(o, "next_attempt_at",
			row->state == STORE_OUTBOX_PENDING ? row->next_attempt_at : 0);
	audit_json_time(o, "dead_at", row->state == STORE_OUTBOX_DEAD ? row->next_attempt_at : 0);
	audit_json_time(o, "delivered_at", row->delivered_at);
	/* a dead row queued again: when and by whom (the new row is another delivery) */
	audit_json_time(o, "replayed_at", row->replayed_at);
	audit_json_str_or_null(o, "replayed_by", row->replayed_at != 0 ? row->replayed_by : "");
	return o;
}

static int add_delivery(void *arg, const struct store_outbox_row *row)
{
	struct detail *d = arg;
	cJSON *o = outbox_json(row);

	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(d->list, o);
	return 0;
}

int api_console_payment_detail(struct store *s, const struct store_payment *p, cJSON *o)
{
	struct detail d = {.list = cJSON_AddArrayToObject(o, "receipts")};
	cJSON *rec;
	int r;

	if (d.list == NULL)
		return -ENOMEM;
	r = store_console_receipts(s, p->payment_id, API_CONSOLE_RECEIPTS_MAX + 1, add_receipt, &d);
	if (r < 0)
		return r;
	cJSON_AddBoolToObject(o, "receipts_truncated", d.more);
	d = (struct detail){.list = cJSON_AddArrayToObject(o, "deliveries")};
	if (d.list == NULL)
		return -ENOMEM;
	r = store_console_deliveries(s, p->payment_id, add_delivery, &d);
	if (r < 0)
		return r;
	/* What the reconciler knows today; "polls" (each poll and Komerce's answer) and
	 * "confirmation" come with the reconciler's polls table. */
	rec = cJSON_AddObjectToObject(o, "reconcile");
	if (rec == NULL)
		return -ENOMEM;
	cJSON_AddBoolToObject(rec, "watched", p->next_poll_at > 0);
	audit_json_time(rec, "last_polled_at", p->last_polled_at);
	audit_json_time(rec, "next_poll_at", p->next_poll_at);
	cJSON_AddNumberToObject(rec, "poll_attempts", (double)p->poll_attempts);
	return 0;
}

/* ---- GET /v1/outbox ----------------------------------------------------------------------- */

int api_console_outbox_params(const char *(*get)(void *arg, const char *name), void *arg,
			      struct api_console_outbox_query *oq, const char **ret_field,
			      const char **ret_rule)
{
	const char *v;
	long long n;

	memset(oq, 0, sizeof(*oq));
	oq->f.state = STORE_OUTBOX_ANY;
	oq->f.limit = API_CONSOLE_OUTBOX_LIMIT_DEFAULT;
	if ((v = get(arg, "state")) != NULL && v[0] != '\0') {
		oq->f.state = store_outbox_state_parse(v);
		if (oq->f.state == STORE_OUTBOX_ANY) {
			*ret_field = "state";
			*ret_rule = "must be pending, delivered or dead";
			return -EINVAL;
		}
	}
	if ((v = get(arg, "sink")) != NULL && v[0] != '\0') {
		if (!sink_name_valid(v)) {
			*ret_field = "sink";
			*ret_rule = "must be 1 to 31 letters, digits, '-' or '_'";
			return -EINVAL;
		}
		snprintf(oq->sink, sizeof(oq->sink), "%s", v);
		oq->f.sink = oq->sink;
	}
	if ((v = get(arg, "limit")) != NULL && v[0] != '\0') {
		if (parse_int(v, 1, API_CONSOLE_OUTBOX_LIMIT_MAX, &n) < 0) {
			*ret_field = "limit";
			*ret_rule = "must be an integer from 1 to 1000";
			return -EINVAL;
		}
		oq->f.limit = (long)n;
	}
	if ((v = get(arg, "after_id")) != NULL && v[0] != '\0') {
		if (parse_int(v, 0, INT64_MAX, &n) < 0) {
			*ret_field = "after_id";
			*ret_rule = "must be a non-negative integer";
			return -EINVAL;
		}
		oq->f.after_id = n;
	}
	return 0;
}

struct outbox_page {
	cJSON *list;
	long count, want;
	bool more;
	int64_t last_id;
};

static int page_outbox(void *arg, const struct store_outbox_row *row)
{
	struct outbox_page *pg = arg;
	cJSON *o, *after;

	if (pg->count == pg->want) {
		pg->more = true;
		return 1;
	}
	o = outbox_json(row);
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "payment_id", row->payment_id);
	audit_json_str_or_null(o, "order_id", row->order_id);
	cJSON_AddStringToObject(o, "status", payment_status_name(row->status));
	if (row->amount >= 0)
		cJSON_AddNumberToObject(o, "amount", (double)row->amount);
	else
		cJSON_AddNullToObject(o, "amount");
	cJSON_AddStringToObject(o, "source", row->source);
	cJSON_AddBoolToObject(o, "conflict", row->conflict);
	audit_json_time(o, "received_at", row->received_at);
	/* what became of the replay of a dead row: its state, and when it was delivered */
	if (row->replayed_at != 0 && row->replay_state != STORE_OUTBOX_ANY) {
		after = cJSON_AddObjectToObject(o, "after_replay");
		cJSON_AddStringToObject(after, "state", store_outbox_state_name(row->replay_state));
		audit_json_time(after, "delivered_at", row->replay_delivered_at);
	} else {
		cJSON_AddNullToObject(o, "after_replay");
	}
	cJSON_AddItemToArray(pg->list, o);
	pg->count++;
	pg->last_id = row->id;
	return 0;
}

static void outbox_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct api_console_outbox_query oq;
	struct outbox_page pg;
	struct store *s = NULL;
	const char *field = NULL, *rule = NULL;
	cJSON *o;
	int r;

	if (!api_authorized(a, req) || !params_known(req, outbox_param_names))
		return;
	if (api_console_outbox_params(query_get, req, &oq, &field, &rule) < 0) {
		api_reply_invalid(req, field, rule);
		return;
	}
	if (api_open_reader(a, &s) < 0) {
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	memset(&pg, 0, sizeof(pg));
	pg.want = oq.f.limit;
	oq.f.limit++;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	pg.list = cJSON_AddArrayToObject(o, "outbox");
	r = pg.list != NULL ? store_outbox_list(s, &oq.f, page_outbox, &pg) : -ENOMEM;
	if (r < 0) {
		reply_store_error(req, s, r, "outbox");
		store_close(s);
		cJSON_Delete(o);
		return;
	}
	store_close(s);
	if (pg.more)
		cJSON_AddNumberToObject(o, "next_after_id", (double)pg.last_id);
	else
		cJSON_AddNullToObject(o, "next_after_id");
	api_reply_cjson(req, 200, o, NULL);
}

/* ---- POST /v1/outbox/replay ---------------------------------------------------------------- */

int api_console_replay_params(const cJSON *body, const struct config *cfg, long long *ret_event_id,
			      const char **ret_sink, const char **ret_field, const char **ret_rule)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "event_id");

	*ret_field = "event_id";
	if (v == NULL || cJSON_IsNull(v)) {
		*ret_rule = "is required";
		return -EINVAL;
	}
	if (!api_json_integer(v, 1, 9007199254740991LL, ret_event_id)) {
		*ret_rule = "must be a positive integer";
		return -EINVAL;
	}
	*ret_field = "sink";
	*ret_sink = NULL;
	v = cJSON_GetObjectItemCaseSensitive(body, "sink");
	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v)) {
		*ret_rule = "must be a string or null";
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_sinks; i++)
		if (strcmp(cfg->sinks[i].name, v->valuestring) == 0)
			*ret_sink = cfg->sinks[i].name;
	if (*ret_sink == NULL) {
		*ret_rule = "is not a configured sink";
		return -EINVAL;
	}
	return 0;
}

static void replay_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct store_req rq;
	const char *sink = NULL, *field = NULL, *rule = NULL;
	long long event_id = 0;
	cJSON *body, *o;
	int r;

	if (!api_authorized(a, req))
		return;
	body = api_body_object(req);
	if (body == NULL)
		return;
	r = api_console_replay_params(body, api_config(a), &event_id, &sink, &field, &rule);
	cJSON_Delete(body);
	if (r < 0) {
		api_reply_invalid(req, field, rule);
		return;
	}
	store_req_replay(&rq, event_id, sink, "admin api");
	r = store_submit_wait(api_writer(a), &rq);
	if (r == -ENOENT) {
		o = api_error_object("event not found");
		cJSON_AddNumberToObject(o, "event_id", (double)event_id);
		api_reply_cjson(req, 404, o, NULL);
		return;
	}
	if (r == -EINVAL) { /* the writer does not know the sink: config and store disagree */
		api_reply_invalid(req, "sink", "is not a configured sink");
		return;
	}
	if (r == -ENODATA) {
		o = api_error_object("no sink to replay to: none is configured");
		cJSON_AddNumberToObject(o, "event_id", (double)event_id);
		api_reply_cjson(req, 409, o, NULL);
		return;
	}
	if (r < 0) {
		log_err("admin api: replay not recorded event_id=%lld error=%d", event_id, r);
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	log_info("admin api: replay event_id=%lld sink=%s queued=%zu", event_id,
		 sink != NULL ? sink : "(all)", rq.changed);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddNumberToObject(o, "event_id", (double)event_id);
	audit_json_str_or_null(o, "sink", sink);
	cJSON_AddNumberToObject(o, "queued", (double)rq.changed);
	api_reply_cjson(req, 200, o, NULL);
}

/* ---- GET /v1/stats ------------------------------------------------------------------------ */

static void stats_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	const struct config *cfg = api_config(a);
	struct store_stats t;
	struct store *s = NULL;
	int64_t now = util_now_ms(), last_id = 0;
	cJSON *o, *st, *names;
	int r;

	if (!api_authorized(a, req) || !params_known(req, no_param_names))
		return;
	if (api_open_reader(a, &s) < 0) {
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	r = store_stats(s, now, &t);
	if (r == 0)
		r = store_console_last_event_id(s, &last_id);
	if (r < 0) {
		reply_store_error(req, s, r, "stats");
		store_close(s);
		return;
	}
	store_close(s);
	st = audit_stats_json(&t);
	if (st == NULL) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddItemToObject(o, "stats", st);
	cJSON_AddNumberToObject(o, "last_event_id", (double)last_id);
	names = cJSON_AddArrayToObject(o, "sinks");
	for (size_t i = 0; i < cfg->n_sinks && names != NULL; i++)
		cJSON_AddItemToArray(names, cJSON_CreateString(cfg->sinks[i].name));
	audit_json_time(o, "generated_at", now);
	api_reply_cjson(req, 200, o, NULL);
}

/* ---- routes -------------------------------------------------------------------------------- */

size_t api_console_routes(struct api *a, struct http_route *out, size_t max)
{
	/* Exact paths: GET /v1/payments does not shadow the GET /v1/payments/{id} prefix. The
	 * replay body is collected without the listener's Content-Type check so that the token
	 * is checked first (401 before 415), as for the other admin POSTs. */
#define ROUTE(M, P, BODY, FN)                                                               \
	{                                                                                   \
		.method = M, .path = P, .has_body = BODY, .ep = METRICS_EP_ADMIN, .fn = FN, \
		.ctx = a                                                                    \
	}
	const struct http_route routes[] = {
		ROUTE("GET", "/v1/payments", false, payments_handler),
		ROUTE("GET", "/v1/outbox", false, outbox_handler),
		ROUTE("POST", "/v1/outbox/replay", true, replay_handler),
		ROUTE("GET", "/v1/stats", false, stats_handler),
	};
#undef ROUTE
	size_t n = sizeof(routes) / sizeof(routes[0]);

	if (n > max)
		n = max;
	memcpy(out, routes, n * sizeof(routes[0]));
	return n;
}
