/* Admin API: the Komerce front for the merchant app (methods with a one-hour cache, create,
 * cancel), the local view of a payment with its events, payment tracking, and the bearer-token
 * gate in front of GET /v1/events. Handlers run on the admin listener's thread-per-connection
 * threads, so they may block: on Komerce (a struct komerce borrowed from a small pool), on the
 * store writer (store_submit_wait), or on a read-only store opened for the request. */
#include "api.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api_console.h"
#include "api_events.h"
#include "api_int.h"
#include "api_methods.h"
#include "api_req.h"
#include "audit.h"
#include "config.h"
#include "http.h"
#include "komerce.h"
#include "log.h"
#include "reconcile.h"
#include "store.h"
#include "util.h"

#define API_POOL_MAX	  8   /* idle Komerce clients kept for reuse */
#define API_EVENTS_MAX	  100 /* events listed with one payment */
#define API_POLLS_MAX	  20  /* latest reconciler polls listed with one payment */
#define API_CANCEL_SUFFIX "/cancel"
#define API_WARNING_STALE "Warning: 110 - \"stale methods\""

enum api_op { API_OP_METHODS, API_OP_CREATE, API_OP_CANCEL };

struct api {
	const struct config *cfg;
	struct store *writer;
	struct reconcile *rec;
	struct komerce_opts kopts;
	uint8_t token_hash[UTIL_SHA256_LEN];

	pthread_mutex_t pool_mu;
	struct komerce *pool[API_POOL_MAX];
	size_t n_pool;

	struct api_methods methods;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void reply_cjson(struct http_request *req, unsigned status, cJSON *o,
			const char *extra_header)
{
	char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;

	if (text == NULL)
		http_reply_error(req, 500, "out of memory");
	else
		http_reply(req, status, "application/json", text, strlen(text), extra_header);
	cJSON_free(text);
	cJSON_Delete(o);
}

static bool authorized(struct api *a, struct http_request *req)
{
	static const char body[] = "{\"status\":\"error\",\"error\":\"missing or invalid bearer "
				   "token\"}";

	if (api_token_valid(a->token_hash, http_header(req, "Authorization")))
		return true;
	http_reply(req, 401, "application/json", body, strlen(body),
		   "WWW-Authenticate: Bearer realm=\"komerce-hookd\"");
	return false;
}

/* {"status":"error","error":msg}, for the caller to add to and reply with (NULL when out of
 * memory; reply_cjson answers 500 then). */
static cJSON *error_object(const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "status", "error");
	cJSON_AddStringToObject(o, "error", msg);
	return o;
}

/* 400 naming the field and the rule it broke. */
static void reply_invalid(struct http_request *req, const char *field, const char *rule)
{
	char msg[512];
	cJSON *o;

	snprintf(msg, sizeof(msg), "%s: %s", field, rule);
	o = error_object(msg);
	cJSON_AddStringToObject(o, "field", field);
	cJSON_AddStringToObject(o, "rule", rule);
	reply_cjson(req, 400, o, NULL);
}

/* The request body as a JSON object, or a 415/400 reply and NULL. Caller frees. */
static cJSON *body_object(struct http_request *req)
{
	const char *body;
	size_t len;
	cJSON *o;

	if (!http_is_json_type(http_header(req, "Content-Type"))) {
		http_reply_error(req, 415, "Content-Type must be application/json");
		return NULL;
	}
	body = http_body(req, &len);
	o = cJSON_ParseWithLength(body, len);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		reply_invalid(req, "body", "must be a JSON object");
		return NULL;
	}
	return o;
}

static void reply_not_found(struct http_request *req, const char *payment_id)
{
	cJSON *o = error_object("payment not found");

	if (payment_id != NULL)
		cJSON_AddStringToObject(o, "payment_id", payment_id);
	reply_cjson(req, 404, o, NULL);
}

static void wake_reconciler(struct api *a)
{
	if (a->rec != NULL)
		reconcile_wake(a->rec);
}

static int open_reader(struct api *a, struct store **ret)
{
	char err[512];
	int r = store_open_like(a->writer, STORE_MODE_READER, ret, err, sizeof(err));

	if (r < 0)
		log_err("admin api: %s", err);
	return r;
}

/* Stores ev with raw (Komerce's reply, borrowed until this returns) and the caller's address,
 * waiting for the writer: store_submit_wait's result, sr telling what became of the event. */
static int record_event(struct api *a, struct http_request *req, struct event *ev, const char *raw,
			struct store_req *sr)
{
	ev->raw = raw;
	ev->raw_len = strlen(raw);
	snprintf(ev->remote_addr, sizeof(ev->remote_addr), "%s", http_remote(req));
	store_req_event(sr, ev);
	return store_submit_wait(a->writer, sr);
}

/* ---- Komerce calls ------------------------------------------------------------------------ */

static const char *op_name(enum api_op op)
{
	switch (op) {
	case API_OP_METHODS:
		return "methods";
	case API_OP_CREATE:
		return "create";
	case API_OP_CANCEL:
		return "cancel";
	}
	return "request";
}

/* One call through a pooled client (a struct komerce serves one thread at a time). */
static int upstream_call(struct api *a, enum api_op op, const cJSON *request,
			 const char *payment_id, struct komerce_result *ret)
{
	struct komerce *k = NULL;
	int r;

	pthread_mutex_lock(&a->pool_mu);
	if (a->n_pool > 0)
		k = a->pool[--a->n_pool];
	pthread_mutex_unlock(&a->pool_mu);
	if (k == NULL)
		k = komerce_new(&a->kopts);
	if (k == NULL) {
		memset(ret, 0, sizeof(*ret));
		ret->err = KOMERCE_E_NOMEM;
		ret->retry_after_s = -1;
		snprintf(ret->message, sizeof(ret->message), "out of memory");
		return -ENOMEM;
	}
	switch (op) {
	case API_OP_METHODS:
		r = komerce_methods_get(k, ret);
		break;
	case API_OP_CREATE:
		r = komerce_payment_create(k, request, ret);
		break;
	case API_OP_CANCEL:
	default:
		r = komerce_payment_cancel(k, payment_id, ret);
		break;
	}
	pthread_mutex_lock(&a->pool_mu);
	if (a->n_pool < API_POOL_MAX) {
		a->pool[a->n_pool++] = k;
		k = NULL;
	}
	pthread_mutex_unlock(&a->pool_mu);
	komerce_free(k);
	return r;
}

static int fetch_methods_komerce(void *ctx, struct komerce_result *ret)
{
	return upstream_call(ctx, API_OP_METHODS, NULL, NULL, ret);
}

/* One warning line per failed call to Komerce (its message is already scrubbed of the api key;
 * nothing else in it is secret). */
static void log_upstream(enum api_op op, const char *payment_id, const struct komerce_result *res,
			 const char *more)
{
	char msg[300], id[160] = "";

	if (payment_id != NULL)
		log_quote(payment_id, id, sizeof(id));
	log_warn("admin api: komerce %s failed err=%s http_status=%ld%s%s%s message=\"%s\"%s",
		 op_name(op), komerce_err_name(res->err), res->http_status,
		 payment_id != NULL ? " payment_id=\"" : "", id, payment_id != NULL ? "\"" : "",
		 log_quote(res->message, msg, sizeof(msg)), more != NULL ? more : "");
}

/* {"status":"error","error":"komerce: <message>","upstream":{...}} with 502/504. */
static void reply_upstream(struct http_request *req, enum api_op op,
			   const struct komerce_result *res)
{
	char msg[320], hdr[48] = "";
	cJSON *o, *u = cJSON_CreateObject();

	snprintf(msg, sizeof(msg), "komerce %s failed: %s", op_name(op),
		 res->message[0] != '\0' ? res->message : komerce_err_name(res->err));
	o = error_object(msg);
	cJSON_AddStringToObject(u, "error", komerce_err_name(res->err));
	if (res->http_status > 0)
		cJSON_AddNumberToObject(u, "http_status", (double)res->http_status);
	else
		cJSON_AddNullToObject(u, "http_status");
	cJSON_AddStringToObject(u, "message", res->message);
	cJSON_AddItemToObject(o, "upstream", u);
	if (res->err == KOMERCE_E_RATE_LIMITED && res->retry_after_s > 0)
		snprintf(hdr, sizeof(hdr), "Retry-After: %ld", res->retry_after_s);
	reply_cjson(req, api_upstream_status(res->err), o, hdr[0] != '\0' ? hdr : NULL);
}

/* ---- GET /v1/methods ---------------------------------------------------------------------- */

static void methods_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct komerce_result res;
	int64_t fetched_wall = 0;
	bool stale = false;
	char *text = NULL;
	cJSON *o, *data;
	int r;

	if (!authorized(a, req))
		return;
	r = api_methods_get(&a->methods, util_mono_ms(), util_now_ms(), &text, &stale,
			    &fetched_wall, &res);
	if (res.err != KOMERCE_OK)
		log_upstream(API_OP_METHODS, NULL, &res,
			     r == 0 ? " serving=stale" : " serving=none");
	if (r < 0) {
		reply_upstream(req, API_OP_METHODS, &res);
		komerce_result_clear(&res);
		return;
	}
	komerce_result_clear(&res);
	data = cJSON_Parse(text);
	free(text);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddBoolToObject(o, "stale", stale);
	audit_json_time(o, "fetched_at", fetched_wall);
	cJSON_AddItemToObject(o, "data", data != NULL ? data : cJSON_CreateArray());
	reply_cjson(req, 200, o, stale ? API_WARNING_STALE : NULL);
}

/* ---- POST /v1/payments -------------------------------------------------------------------- */

static const char *json_str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : "";
}

/* Fills in the daemon's callback fields and checks the request by the Komerce docs' rules;
 * false after replying 400 (or 500). Without a methods list (Komerce down, nothing cached) the
 * bank code is only checked for presence; Komerce checks it again anyway. */
static bool create_validate(struct api *a, struct http_request *req, cJSON *body)
{
	struct komerce_result res;
	char field[64], rule[160], *text = NULL;
	cJSON *methods = NULL;
	int64_t fetched_wall;
	bool stale, ok;
	int r;

	r = api_create_prepare(body, a->cfg->callback_url,
			       a->cfg->n_keys > 0 ? a->cfg->keys[0] : "", field, sizeof(field),
			       rule, sizeof(rule));
	if (r == -EINVAL) {
		reply_invalid(req, field, rule);
		return false;
	}
	if (r < 0) {
		http_reply_error(req, 500, "out of memory");
		return false;
	}
	r = api_methods_get(&a->methods, util_mono_ms(), util_now_ms(), &text, &stale,
			    &fetched_wall, &res);
	komerce_result_clear(&res);
	if (r == 0)
		methods = cJSON_Parse(text);
	free(text);
	ok = komerce_validate_create(body, methods, field, sizeof(field), rule, sizeof(rule)) == 0;
	cJSON_Delete(methods);
	if (!ok)
		reply_invalid(req, field, rule);
	return ok;
}

/* Journal fields for a log line about ev: PAYMENT_ID, ORDER_ID and EVENT_ID (event_id: its
 * decimal text, or NULL to leave it out). Valid while ev and event_id are. */
#define api_fields(ev, event_id)                                      \
	((const struct log_field[]){{"PAYMENT_ID", (ev)->payment_id}, \
				    {"ORDER_ID", (ev)->order_id},     \
				    {"EVENT_ID", (event_id)},         \
				    {NULL, NULL}})

/* The PENDING event of a payment Komerce created: its reply first, the request for what the
 * reply leaves out. */
static void created_event(const struct komerce_payment *p, const cJSON *body, struct event *ev)
{
	long long secs;

	api_event_init(ev, PAYMENT_PENDING, p->payment_id);
	snprintf(ev->order_id, sizeof(ev->order_id), "%s",
		 p->order_id[0] != '\0' ? p->order_id : json_str(body, "order_id"));
	snprintf(ev->payment_type, sizeof(ev->payment_type), "%s",
		 p->payment_type[0] != '\0' ? p->payment_type : json_str(body, "payment_type"));
	snprintf(ev->channel_code, sizeof(ev->channel_code), "%s",
		 p->channel_code[0] != '\0' ? p->channel_code : json_str(body, "channel_code"));
	ev->amount = p->amount;
	if (ev->amount < 0 && !api_json_integer(cJSON_GetObjectItemCaseSensitive(body, "amount"), 0,
						LLONG_MAX, &ev->amount))
		ev->amount = -1;
	ev->expires_at = p->expires_at;
	if (ev->expires_at == 0 &&
	    api_json_integer(cJSON_GetObjectItemCaseSensitive(body, "expiry_duration"), 1,
			     100LL * 365 * 86400, &secs))
		ev->expires_at = util_now_ms() / 1000 + secs;
}

/* Records the created payment (data: Komerce's reply, given to the reply) and answers 201, or
 * 503 when it could not be recorded. */
static void create_record(struct api *a, struct http_request *req, const cJSON *body,
			  const struct komerce_payment *p, cJSON *data)
{
	char *raw = cJSON_PrintUnformatted(data), id[160], eid[24];
	struct store_req sr;
	struct event ev;
	cJSON *o;
	int r;

	if (raw == NULL) {
		cJSON_Delete(data);
		http_reply_error(req, 500, "out of memory");
		return;
	}
	created_event(p, body, &ev);
	r = record_event(a, req, &ev, raw, &sr);
	cJSON_free(raw);
	log_quote(ev.payment_id, id, sizeof(id));
	if (r < 0) {
		log_fields(
			LOG_PRIO_ERR, api_fields(&ev, NULL),
			"admin api: payment created at komerce but not recorded payment_id=\"%s\" "
			"error=%d",
			id, r);
		o = error_object("payment created at Komerce but not recorded locally (store "
				 "unavailable); track it with POST /v1/payments/track");
		cJSON_AddItemToObject(o, "data", data);
		reply_cjson(req, 503, o, NULL);
		return;
	}
	wake_reconciler(a);
	log_fields(LOG_PRIO_INFO, api_fields(&ev, log_num(sr.event_id, eid, sizeof(eid))),
		   "admin api: payment created payment_id=\"%s\" event_id=%lld", id,
		   (long long)sr.event_id);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddNumberToObject(o, "event_id", (double)sr.event_id);
	cJSON_AddItemToObject(o, "data", data);
	reply_cjson(req, 201, o, NULL);
}

static void create_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct komerce_result res;
	struct komerce_payment p;
	cJSON *body, *data;
	char id[160];

	if (!authorized(a, req))
		return;
	body = body_object(req);
	if (body == NULL)
		return;
	if (!create_validate(a, req, body))
		goto out;
	if (upstream_call(a, API_OP_CREATE, body, NULL, &res) < 0) {
		log_upstream(API_OP_CREATE, NULL, &res, NULL);
		reply_upstream(req, API_OP_CREATE, &res);
		komerce_result_clear(&res);
		goto out;
	}
	data = cJSON_IsObject(res.data) ? cJSON_Duplicate(res.data, true) : NULL;
	komerce_result_clear(&res);
	if (data == NULL || komerce_payment_from_json(data, &p) < 0) {
		/* Komerce said yes but we cannot tell to what: nothing to record or track. */
		log_err("admin api: komerce create reply has no usable payment order_id=\"%s\"",
			log_quote(json_str(body, "order_id"), id, sizeof(id)));
		http_reply_error(req, 502,
				 "komerce create succeeded but its reply has no "
				 "payment_id; check the payment at Komerce");
		cJSON_Delete(data);
		goto out;
	}
	api_strip_secrets(data);
	create_record(a, req, body, &p, data);
out:
	cJSON_Delete(body);
}

/* ---- GET /v1/payments/{id} ---------------------------------------------------------------- */

static int add_event(void *arg, const struct store_event *e)
{
	cJSON *item = audit_event_json(e);

	if (item == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(arg, item);
	return 0;
}

static int add_poll(void *arg, const struct store_poll *p)
{
	cJSON *item = audit_poll_json(p);

	if (item == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(arg, item);
	return 0;
}

/* The payment's events (oldest first) and latest polls (newest first) into events, polls. */
static int payment_history(struct store *s, const char *id, cJSON *events, cJSON *polls)
{
	struct store_event_filter f = {
		.payment_id = id, .status = PAYMENT_UNKNOWN, .limit = API_EVENTS_MAX};
	int r = store_events_query(s, &f, add_event, events);

	if (r == 0)
		r = store_polls_list(s, id, API_POLLS_MAX, add_poll, polls);
	return r;
}

static void get_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct store_payment p;
	struct store *s = NULL;
	char id[EVENT_ID_MAX];
	cJSON *o, *events, *polls;
	int r;

	if (!authorized(a, req))
		return;
	if (api_path_id(http_url(req), NULL, id, sizeof(id)) < 0) {
		reply_not_found(req, NULL);
		return;
	}
	if (open_reader(a, &s) < 0) {
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	r = store_payment_get(s, id, &p);
	if (r == -ENOENT) {
		store_close(s);
		reply_not_found(req, id);
		return;
	}
	events = cJSON_CreateArray();
	polls = cJSON_CreateArray();
	o = cJSON_CreateObject();
	if (r == 0)
		r = payment_history(s, id, events, polls);
	if (r == 0) {
		cJSON_AddStringToObject(o, "status", "ok");
		cJSON_AddItemToObject(o, "payment", audit_payment_json(&p));
		cJSON_AddItemToObject(o, "events", events);
		cJSON_AddItemToObject(o, "polls", polls);
		events = polls = NULL;
		/* receipts, deliveries and the reconciler's view, for the console */
		r = api_console_payment_detail(s, &p, o);
	}
	if (r < 0) {
		log_err("admin api: payment query failed: %s", store_errmsg(s));
		store_close(s);
		cJSON_Delete(events);
		cJSON_Delete(polls);
		cJSON_Delete(o);
		http_reply_error(req, r == -ENOMEM ? 500 : 503,
				 r == -ENOMEM ? "out of memory" : "store unavailable");
		return;
	}
	store_close(s);
	reply_cjson(req, 200, o, NULL);
}

/* ---- POST /v1/payments/{id}/cancel -------------------------------------------------------- */

/* The payment to cancel: true with *p, or false after replying 404, 409 or 503. */
static bool cancel_lookup(struct api *a, struct http_request *req, const char *id,
			  struct store_payment *p)
{
	struct store *s = NULL;
	char msg[160];
	cJSON *o;
	int r;

	if (open_reader(a, &s) < 0) {
		http_reply_error(req, 503, "store unavailable");
		return false;
	}
	r = store_payment_get(s, id, p);
	if (r < 0 && r != -ENOENT)
		log_err("admin api: payment lookup failed: %s", store_errmsg(s));
	store_close(s);
	if (r == -ENOENT) {
		reply_not_found(req, id);
		return false;
	}
	if (r < 0) {
		http_reply_error(req, 503, "store unavailable");
		return false;
	}
	if (!payment_status_terminal(p->status))
		return true;
	snprintf(msg, sizeof(msg), "payment is %s and cannot be canceled",
		 payment_status_name(p->status));
	o = error_object(msg);
	cJSON_AddItemToObject(o, "payment", audit_payment_json(p));
	reply_cjson(req, 409, o, NULL);
	return false;
}

/* Records the CANCELED event (data: Komerce's reply, given to the reply) and answers. */
static void cancel_record(struct api *a, struct http_request *req, const struct store_payment *p,
			  cJSON *data)
{
	char *raw = cJSON_PrintUnformatted(data), q[160], eid[24];
	struct komerce_payment kp;
	struct store_req sr;
	struct event ev;
	cJSON *o;
	int r;

	if (raw == NULL) {
		cJSON_Delete(data);
		http_reply_error(req, 500, "out of memory");
		return;
	}
	api_event_init(&ev, PAYMENT_CANCELED, p->payment_id);
	ev.amount = p->amount;
	snprintf(ev.order_id, sizeof(ev.order_id), "%s", p->order_id);
	if (komerce_payment_from_json(data, &kp) == 0) {
		if (kp.amount >= 0)
			ev.amount = kp.amount;
		if (kp.order_id[0] != '\0')
			snprintf(ev.order_id, sizeof(ev.order_id), "%s", kp.order_id);
	}
	r = record_event(a, req, &ev, raw, &sr);
	cJSON_free(raw);
	log_quote(p->payment_id, q, sizeof(q));
	if (r < 0) {
		log_fields(
			LOG_PRIO_ERR, api_fields(&ev, NULL),
			"admin api: payment canceled at komerce but not recorded payment_id=\"%s\" "
			"error=%d",
			q, r);
		o = error_object("payment canceled at Komerce but not recorded locally (store "
				 "unavailable); its callback or the reconciler will record it");
		cJSON_AddItemToObject(o, "data", data);
		reply_cjson(req, 503, o, NULL);
		return;
	}
	log_fields(LOG_PRIO_INFO, api_fields(&ev, log_num(sr.event_id, eid, sizeof(eid))),
		   "admin api: payment canceled payment_id=\"%s\" event_id=%lld conflict=%s", q,
		   (long long)sr.event_id, sr.conflict ? "yes" : "no");
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddNumberToObject(o, "event_id", (double)sr.event_id);
	cJSON_AddBoolToObject(o, "duplicate", sr.duplicate);
	cJSON_AddBoolToObject(o, "conflict", sr.conflict);
	cJSON_AddItemToObject(o, "data", data);
	reply_cjson(req, 200, o, NULL);
}

static void cancel_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct komerce_result res;
	struct store_payment p;
	char id[EVENT_ID_MAX];
	cJSON *data;

	if (!authorized(a, req))
		return;
	if (api_path_id(http_url(req), API_CANCEL_SUFFIX, id, sizeof(id)) < 0) {
		http_reply_error(req, 404, "not found");
		return;
	}
	if (!cancel_lookup(a, req, id, &p))
		return;
	if (upstream_call(a, API_OP_CANCEL, NULL, id, &res) < 0) {
		log_upstream(API_OP_CANCEL, id, &res, NULL);
		reply_upstream(req, API_OP_CANCEL, &res);
		komerce_result_clear(&res);
		return;
	}
	data = cJSON_IsObject(res.data) ? cJSON_Duplicate(res.data, true) : cJSON_CreateObject();
	komerce_result_clear(&res);
	if (data == NULL) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	api_strip_secrets(data);
	cancel_record(a, req, &p, data);
}

/* ---- POST /v1/payments/track -------------------------------------------------------------- */

/* The payments row a track request wrote, as GET /v1/payments/{id} would show it. */
static void tracked_payment(const struct api *a, const struct event *ev, int64_t at,
			    struct store_payment *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->payment_id, sizeof(p->payment_id), "%s", ev->payment_id);
	snprintf(p->order_id, sizeof(p->order_id), "%s", ev->order_id);
	snprintf(p->payment_type, sizeof(p->payment_type), "%s", ev->payment_type);
	snprintf(p->channel_code, sizeof(p->channel_code), "%s", ev->channel_code);
	snprintf(p->origin, sizeof(p->origin), "track");
	p->amount = ev->amount;
	p->status = PAYMENT_PENDING;
	p->expires_at = ev->expires_at;
	p->created_at = p->updated_at = at;
	if (a->cfg->reconcile_enabled)
		p->next_poll_at = at + (int64_t)a->cfg->grace_seconds * 1000;
}

static void track_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct store_payment p;
	struct store_req sr;
	struct event ev;
	char field[64], rule[160], q[160];
	cJSON *body, *o;
	int r;

	if (!authorized(a, req))
		return;
	body = body_object(req);
	if (body == NULL)
		return;
	r = api_track_parse(body, &ev, field, sizeof(field), rule, sizeof(rule));
	cJSON_Delete(body);
	if (r < 0) {
		reply_invalid(req, field, rule);
		return;
	}
	store_req_track(&sr, &ev);
	sr.received_at = util_now_ms();
	r = store_submit_wait(a->writer, &sr);
	if (r == -EEXIST) {
		o = error_object("payment_id: is already known");
		cJSON_AddStringToObject(o, "payment_id", ev.payment_id);
		reply_cjson(req, 409, o, NULL);
		return;
	}
	if (r < 0) {
		log_fields(LOG_PRIO_ERR, api_fields(&ev, NULL),
			   "admin api: track not recorded payment_id=\"%s\" error=%d",
			   log_quote(ev.payment_id, q, sizeof(q)), r);
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	wake_reconciler(a);
	log_fields(LOG_PRIO_INFO, api_fields(&ev, NULL),
		   "admin api: payment tracked payment_id=\"%s\"",
		   log_quote(ev.payment_id, q, sizeof(q)));
	tracked_payment(a, &ev, sr.received_at, &p);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddItemToObject(o, "payment", audit_payment_json(&p));
	reply_cjson(req, 201, o, NULL);
}

/* ---- GET /v1/events ----------------------------------------------------------------------- */

static void events_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;

	if (!authorized(a, req))
		return;
	api_events_handler(req, a->writer);
}

/* ---- for the API's other files (api_int.h) ------------------------------------------------ */

bool api_authorized(struct api *a, struct http_request *req)
{
	return authorized(a, req);
}

const struct config *api_config(const struct api *a)
{
	return a->cfg;
}

struct store *api_writer(const struct api *a)
{
	return a->writer;
}

int api_open_reader(struct api *a, struct store **ret)
{
	return open_reader(a, ret);
}

void api_reply_cjson(struct http_request *req, unsigned status, cJSON *o, const char *extra_header)
{
	reply_cjson(req, status, o, extra_header);
}

cJSON *api_error_object(const char *msg)
{
	return error_object(msg);
}

void api_reply_invalid(struct http_request *req, const char *field, const char *rule)
{
	reply_invalid(req, field, rule);
}

cJSON *api_body_object(struct http_request *req)
{
	return body_object(req);
}

/* ---- the API object ----------------------------------------------------------------------- */

int api_new(const struct config *cfg, struct store *writer, struct reconcile *rec, struct api **ret,
	    char *err, size_t err_len)
{
	struct api *a;

	if (cfg == NULL || writer == NULL || cfg->admin_token == NULL ||
	    cfg->admin_token[0] == '\0') {
		snprintf(err, err_len, "admin api: no admin token configured");
		return -EINVAL;
	}
	a = calloc(1, sizeof(*a));
	if (a == NULL) {
		snprintf(err, err_len, "admin api: out of memory");
		return -ENOMEM;
	}
	a->cfg = cfg;
	a->writer = writer;
	a->rec = rec;
	a->kopts = (struct komerce_opts){
		.base_url = cfg->base_url,
		.api_key = cfg->api_key,
		.connect_timeout_ms = cfg->connect_timeout_ms,
		.timeout_ms = cfg->timeout_ms,
	};
	api_token_hash(cfg->admin_token, a->token_hash);
	pthread_mutex_init(&a->pool_mu, NULL);
	api_methods_init(&a->methods, fetch_methods_komerce, a);
	*ret = a;
	return 0;
}

size_t api_routes(struct api *a, struct http_route *out, size_t max)
{
	/* First match of path and method wins: the exact paths before the prefixes. Bodies are
	 * collected without the listener's Content-Type check so that the token is checked
	 * first (401 before 415). */
#define ROUTE(M, P, PREFIX, BODY, FN)                                       \
	{                                                                   \
		.method = M, .path = P, .prefix = PREFIX, .has_body = BODY, \
		.ep = METRICS_EP_ADMIN, .fn = FN, .ctx = a                  \
	}
	const struct http_route routes[] = {
		ROUTE("GET", "/v1/methods", false, false, methods_handler),
		ROUTE("POST", "/v1/payments/track", false, true, track_handler),
		ROUTE("POST", "/v1/payments", false, true, create_handler),
		ROUTE("POST", API_PAYMENTS_PREFIX, true, true, cancel_handler),
		ROUTE("GET", API_PAYMENTS_PREFIX, true, false, get_handler),
		ROUTE("GET", "/v1/events", false, false, events_handler),
	};
#undef ROUTE
	size_t n = sizeof(routes) / sizeof(routes[0]);

	if (n > max)
		n = max;
	memcpy(out, routes, n * sizeof(routes[0]));
	return n + api_console_routes(a, out + n, max - n);
}

void api_free(struct api *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n_pool; i++)
		komerce_free(a->pool[i]);
	api_methods_destroy(&a->methods);
	pthread_mutex_destroy(&a->pool_mu);
	free(a);
}
