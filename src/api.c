/* Admin API: the Komerce front for the merchant app (methods with a one-hour cache, create,
 * cancel), the local view of a payment with its events, payment tracking, and the bearer-token
 * gate in front of GET /v1/events. Handlers run on the admin listener's thread-per-connection
 * threads, so they may block: on Komerce (a struct komerce borrowed from a small pool), on the
 * store writer (store_submit_wait), or on a read-only store opened for the request. */
#include "api.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "callback.h"
#include "config.h"
#include "http.h"
#include "komerce.h"
#include "log.h"
#include "payment.h"
#include "store.h"
#include "store_audit.h"
#include "store_payment.h"
#include "util.h"
#if __has_include("api_events.h")
#include "api_events.h"
#define API_HAVE_EVENTS 1
#endif
#ifdef HAVE_RECONCILE
#include "reconcile.h"
#endif

#define API_METHODS_TTL_MS (3600LL * 1000)
#define API_METHODS_RETRY_MS                                                          \
	(30LL * 1000)		/* after a failed refresh, serve stale without asking \
				 */
#define API_POOL_MAX	    8	/* idle Komerce clients kept for reuse */
#define API_EVENTS_MAX	    100 /* events listed with one payment */
#define API_PAYMENTS_PREFIX "/v1/payments/"
#define API_CANCEL_SUFFIX   "/cancel"
#define API_WARNING_STALE   "Warning: 110 - \"stale methods\""

enum api_op { API_OP_METHODS, API_OP_CREATE, API_OP_CANCEL };

struct api_methods {
	char *text;	      /* the methods array as JSON text; NULL until a fetch succeeded */
	int64_t fetched_mono; /* when text was fetched (monotonic ms) */
	int64_t fetched_wall; /* the same, unix ms, for the reply */
	int64_t failed_mono;  /* last failed refresh (monotonic ms), 0 when none since */
};

struct api {
	const struct config *cfg;
	struct store *writer;
	struct reconcile *rec;
	struct komerce_opts kopts;
	uint8_t token_hash[UTIL_SHA256_LEN];

	pthread_mutex_t pool_mu;
	struct komerce *pool[API_POOL_MAX];
	size_t n_pool;

	/* Held across a refresh: concurrent callers wait for one request to Komerce. */
	pthread_mutex_t methods_mu;
	struct api_methods methods;
	/* komerce_methods_get through the pool; tests/unit/check_api.c replaces it */
	int (*fetch_methods)(struct api *a, struct komerce_result *ret);
};

/* ---- small helpers --------------------------------------------------------------------- */

static void sha256(const void *data, size_t len, uint8_t out[UTIL_SHA256_LEN])
{
	unsigned int n = UTIL_SHA256_LEN;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1)
		memset(out, 0, UTIL_SHA256_LEN);
}

/* "Bearer <token>" against the configured token's hash: both sides are hashed first so the
 * comparison is constant-time and independent of the presented token's length. */
static bool api_token_valid(const uint8_t want[UTIL_SHA256_LEN], const char *authorization)
{
	uint8_t got[UTIL_SHA256_LEN];
	const char *t;
	size_t len;

	if (authorization == NULL)
		return false;
	while (*authorization == ' ' || *authorization == '\t')
		authorization++;
	if (strncasecmp(authorization, "Bearer ", 7) != 0)
		return false;
	t = authorization + 7;
	while (*t == ' ' || *t == '\t')
		t++;
	len = strlen(t);
	while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
		len--;
	if (len == 0)
		return false;
	sha256(t, len, got);
	return util_ct_equal(got, want, UTIL_SHA256_LEN);
}

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

static bool is_json_type(const char *ct)
{
	size_t n = strlen("application/json");

	if (ct == NULL)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "application/json", n) == 0 &&
	       (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The request body as a JSON object, or a 415/400 reply and NULL. Caller frees. */
static cJSON *body_object(struct http_request *req)
{
	const char *body;
	size_t len;
	cJSON *o;

	if (!is_json_type(http_header(req, "Content-Type"))) {
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

/* The payment id in a decoded path "/v1/payments/{id}[suffix]" (libmicrohttpd has already
 * percent-decoded it, so "%2F" arrives as "/"). Returns 0, or -ENOENT when the path does not
 * have that shape or the id is empty, too long or has control characters. */
static int api_path_id(const char *url, const char *suffix, char *out, size_t n)
{
	size_t plen = strlen(API_PAYMENTS_PREFIX), slen = suffix != NULL ? strlen(suffix) : 0;
	size_t len;

	if (strncmp(url, API_PAYMENTS_PREFIX, plen) != 0)
		return -ENOENT;
	url += plen;
	len = strlen(url);
	if (slen > 0) {
		if (len <= slen || strcmp(url + len - slen, suffix) != 0)
			return -ENOENT;
		len -= slen;
	}
	if (len == 0 || len >= n || len >= EVENT_ID_MAX)
		return -ENOENT;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] < 0x20 || url[i] == 0x7f)
			return -ENOENT;
	memcpy(out, url, len);
	out[len] = '\0';
	return 0;
}

static void reply_not_found(struct http_request *req, const char *payment_id)
{
	cJSON *o = error_object("payment not found");

	if (payment_id != NULL)
		cJSON_AddStringToObject(o, "payment_id", payment_id);
	reply_cjson(req, 404, o, NULL);
}

static void add_time_ms(cJSON *o, const char *name, int64_t ms)
{
	char iso[40];

	if (ms <= 0) {
		cJSON_AddNullToObject(o, name);
		return;
	}
	util_iso8601_ms(ms, iso, sizeof(iso));
	cJSON_AddStringToObject(o, name, iso);
}

static void add_str_or_null(cJSON *o, const char *name, const char *v)
{
	if (v != NULL && v[0] != '\0')
		cJSON_AddStringToObject(o, name, v);
	else
		cJSON_AddNullToObject(o, name);
}

static cJSON *payment_json(const struct store_payment *p)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "payment_id", p->payment_id);
	add_str_or_null(o, "order_id", p->order_id);
	add_str_or_null(o, "payment_type", p->payment_type);
	add_str_or_null(o, "channel_code", p->channel_code);
	if (p->amount >= 0)
		cJSON_AddNumberToObject(o, "amount", (double)p->amount);
	else
		cJSON_AddNullToObject(o, "amount");
	cJSON_AddStringToObject(o, "status", payment_status_name(p->status));
	add_time_ms(o, "expires_at", p->expires_at * 1000);
	add_time_ms(o, "created_at", p->created_at);
	add_time_ms(o, "updated_at", p->updated_at);
	add_time_ms(o, "callback_seen_at", p->callback_seen_at);
	add_time_ms(o, "last_polled_at", p->last_polled_at);
	add_time_ms(o, "next_poll_at", p->next_poll_at);
	cJSON_AddNumberToObject(o, "poll_attempts", (double)p->poll_attempts);
	cJSON_AddStringToObject(o, "origin", p->origin);
	return o;
}

static void wake_reconciler(struct api *a)
{
#ifdef HAVE_RECONCILE
	if (a->rec != NULL)
		reconcile_wake(a->rec);
#else
	(void)a;
#endif
}

static int open_reader(struct api *a, struct store **ret)
{
	struct store_opts so = {.path = a->cfg->store_path,
				.readonly = true,
				.busy_timeout_ms = a->cfg->busy_timeout_ms};
	char err[512];
	int r = store_open(&so, ret, err, sizeof(err));

	if (r < 0)
		log_err("admin api: %s", err);
	return r;
}

/* An event the admin API stores (source api), with only the status and payment id set. */
static void api_event_init(struct event *ev, enum payment_status status, const char *payment_id)
{
	memset(ev, 0, sizeof(*ev));
	ev->source = EVENT_SOURCE_API;
	ev->status = status;
	snprintf(ev->payment_id, sizeof(ev->payment_id), "%s", payment_id);
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

static int fetch_methods_komerce(struct api *a, struct komerce_result *ret)
{
	return upstream_call(a, API_OP_METHODS, NULL, NULL, ret);
}

/* Upstream failures: 504 on a timeout, 500 when we ran out of memory, 502 for the rest
 * (Komerce refused, was unreachable, or answered something that is not its envelope). */
static unsigned api_upstream_status(enum komerce_err e)
{
	switch (e) {
	case KOMERCE_E_TIMEOUT:
		return 504;
	case KOMERCE_E_NOMEM:
		return 500;
	default:
		return 502;
	}
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

/* ---- methods cache ------------------------------------------------------------------------ */

/* The methods list: the cached copy while younger than an hour, else a refresh. When the
 * refresh fails the old copy is served as stale (and no refresh is tried again for
 * API_METHODS_RETRY_MS, so a Komerce outage does not cost every caller a timeout). Returns 0
 * with a heap copy of the array's JSON text in *ret_text (caller frees), *ret_stale and
 * *ret_fetched_wall; or the refresh's -errno when there is no copy at all, with *ret_err
 * describing it. *ret_err is always initialised: the caller clears it. */
static int methods_get(struct api *a, int64_t now_mono, int64_t now_wall, char **ret_text,
		       bool *ret_stale, int64_t *ret_fetched_wall, struct komerce_result *ret_err)
{
	struct api_methods *m = &a->methods;
	bool fresh, backoff;
	char *copy = NULL;
	int r = 0;

	memset(ret_err, 0, sizeof(*ret_err));
	ret_err->retry_after_s = -1;
	pthread_mutex_lock(&a->methods_mu);
	fresh = m->text != NULL && now_mono - m->fetched_mono < API_METHODS_TTL_MS;
	backoff = m->text != NULL && m->failed_mono != 0 &&
		  now_mono - m->failed_mono < API_METHODS_RETRY_MS;
	if (!fresh && !backoff) {
		char *text = NULL;

		r = a->fetch_methods(a, ret_err);
		if (r == 0 && !cJSON_IsArray(ret_err->data)) {
			ret_err->err = KOMERCE_E_BAD_RESPONSE;
			snprintf(ret_err->message, sizeof(ret_err->message),
				 "methods reply has no data array");
			r = -EIO;
		}
		if (r == 0 && (text = cJSON_PrintUnformatted(ret_err->data)) == NULL) {
			ret_err->err = KOMERCE_E_NOMEM;
			snprintf(ret_err->message, sizeof(ret_err->message), "out of memory");
			r = -ENOMEM;
		}
		if (r == 0) {
			cJSON_free(m->text);
			m->text = text;
			m->fetched_mono = now_mono;
			m->fetched_wall = now_wall;
			m->failed_mono = 0;
			fresh = true;
		} else {
			m->failed_mono = now_mono;
			log_upstream(API_OP_METHODS, NULL, ret_err,
				     m->text != NULL ? " serving=stale" : " serving=none");
		}
	}
	if (m->text != NULL) {
		copy = strdup(m->text);
		*ret_stale = !fresh;
		*ret_fetched_wall = m->fetched_wall;
		r = copy != NULL ? 0 : -ENOMEM;
		if (copy == NULL) {
			ret_err->err = KOMERCE_E_NOMEM;
			snprintf(ret_err->message, sizeof(ret_err->message), "out of memory");
		}
	}
	pthread_mutex_unlock(&a->methods_mu);
	*ret_text = copy;
	return r;
}

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
	r = methods_get(a, util_mono_ms(), util_now_ms(), &text, &stale, &fetched_wall, &res);
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
	add_time_ms(o, "fetched_at", fetched_wall);
	cJSON_AddItemToObject(o, "data", data != NULL ? data : cJSON_CreateArray());
	reply_cjson(req, 200, o, stale ? API_WARNING_STALE : NULL);
}

/* ---- POST /v1/payments -------------------------------------------------------------------- */

/* The daemon, not the merchant app, decides where Komerce calls back and with which key: a
 * request that names either is refused; the configured URL and the first callback key are
 * filled in (nothing when no callback_url is configured: the reconciler polls instead).
 * Returns 0, -EINVAL with field/rule, or -ENOMEM. */
static int api_create_prepare(cJSON *request, const char *callback_url, const char *callback_key,
			      char *field, size_t field_len, char *rule, size_t rule_len)
{
	static const char *const reserved[] = {"callback_url", "callback_api_key",
					       "callback_API_KEY"};

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		if (cJSON_GetObjectItemCaseSensitive(request, reserved[i]) != NULL) {
			snprintf(field, field_len, "%s", reserved[i]);
			snprintf(rule, rule_len, "is set by komerce-hookd and must not be given");
			return -EINVAL;
		}
	}
	if (callback_url == NULL || callback_url[0] == '\0')
		return 0;
	if (cJSON_AddStringToObject(request, "callback_url", callback_url) == NULL ||
	    cJSON_AddStringToObject(request, "callback_api_key", callback_key) == NULL)
		return -ENOMEM;
	return 0;
}

/* Removes anything that could be a callback key from a reply before it is stored or echoed. */
static void strip_secrets(cJSON *data)
{
	cJSON_DeleteItemFromObjectCaseSensitive(data, "callback_api_key");
	cJSON_DeleteItemFromObjectCaseSensitive(data, "callback_API_KEY");
}

/* True when v is a JSON number holding an integer in [min, max] (checked before any cast: a
 * double out of long long's range must never be converted), stored in *ret. */
static bool json_integer(const cJSON *v, long long min, long long max, long long *ret)
{
	double d;

	if (!cJSON_IsNumber(v))
		return false;
	d = v->valuedouble;
	if (!(d >= (double)min && d <= (double)max) || d != floor(d))
		return false;
	*ret = (long long)d;
	return *ret >= min && *ret <= max;
}

static const char *json_str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static void create_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct komerce_result res;
	struct komerce_payment p;
	struct store_req sr;
	struct event ev;
	char field[64], rule[160], *methods_text = NULL, *raw = NULL, id[160];
	cJSON *body, *methods = NULL, *data = NULL, *o;
	int64_t fetched_wall;
	bool stale;
	int r;

	if (!authorized(a, req))
		return;
	body = body_object(req);
	if (body == NULL)
		return;
	r = api_create_prepare(body, a->cfg->callback_url,
			       a->cfg->n_keys > 0 ? a->cfg->keys[0] : "", field, sizeof(field),
			       rule, sizeof(rule));
	if (r == -EINVAL) {
		reply_invalid(req, field, rule);
		goto out;
	}
	if (r < 0) {
		http_reply_error(req, 500, "out of memory");
		goto out;
	}
	/* Without a methods list (Komerce down, nothing cached) the bank code is only checked
	 * for presence; Komerce checks it again anyway. */
	r = methods_get(a, util_mono_ms(), util_now_ms(), &methods_text, &stale, &fetched_wall,
			&res);
	komerce_result_clear(&res);
	if (r == 0)
		methods = cJSON_Parse(methods_text);
	if (komerce_validate_create(body, methods, field, sizeof(field), rule, sizeof(rule)) < 0) {
		reply_invalid(req, field, rule);
		goto out;
	}

	r = upstream_call(a, API_OP_CREATE, body, NULL, &res);
	if (r < 0) {
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
		goto out;
	}
	strip_secrets(data);
	raw = cJSON_PrintUnformatted(data);
	if (raw == NULL) {
		http_reply_error(req, 500, "out of memory");
		goto out;
	}

	api_event_init(&ev, PAYMENT_PENDING, p.payment_id);
	snprintf(ev.order_id, sizeof(ev.order_id), "%s",
		 p.order_id[0] != '\0' ? p.order_id : json_str(body, "order_id"));
	snprintf(ev.payment_type, sizeof(ev.payment_type), "%s",
		 p.payment_type[0] != '\0' ? p.payment_type : json_str(body, "payment_type"));
	snprintf(ev.channel_code, sizeof(ev.channel_code), "%s",
		 p.channel_code[0] != '\0' ? p.channel_code : json_str(body, "channel_code"));
	ev.amount = p.amount;
	if (ev.amount < 0 && !json_integer(cJSON_GetObjectItemCaseSensitive(body, "amount"), 0,
					   LLONG_MAX, &ev.amount))
		ev.amount = -1;
	ev.expires_at = p.expires_at;
	if (ev.expires_at == 0) {
		long long secs;

		if (json_integer(cJSON_GetObjectItemCaseSensitive(body, "expiry_duration"), 1,
				 100LL * 365 * 86400, &secs))
			ev.expires_at = util_now_ms() / 1000 + secs;
	}
	r = record_event(a, req, &ev, raw, &sr);
	if (r < 0) {
		log_err("admin api: payment created at komerce but not recorded payment_id=\"%s\" "
			"error=%d",
			log_quote(ev.payment_id, id, sizeof(id)), r);
		o = error_object("payment created at Komerce but not recorded locally (store "
				 "unavailable); track it with POST /v1/payments/track");
		cJSON_AddItemToObject(o, "data", data);
		data = NULL;
		reply_cjson(req, 503, o, NULL);
		goto out;
	}
	wake_reconciler(a);
	log_info("admin api: payment created payment_id=\"%s\" event_id=%lld",
		 log_quote(ev.payment_id, id, sizeof(id)), (long long)sr.event_id);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddNumberToObject(o, "event_id", (double)sr.event_id);
	cJSON_AddItemToObject(o, "data", data);
	data = NULL;
	reply_cjson(req, 201, o, NULL);
out:
	cJSON_free(raw);
	cJSON_Delete(data);
	cJSON_Delete(methods);
	free(methods_text);
	cJSON_Delete(body);
}

/* ---- GET /v1/payments/{id} ---------------------------------------------------------------- */

static int add_event(void *arg, const struct store_event *e)
{
	cJSON *item = store_audit_event_json(e);

	if (item == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(arg, item);
	return 0;
}

static void get_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct store_payment p;
	struct store *s = NULL;
	char id[EVENT_ID_MAX];
	cJSON *o, *events;
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
	if (r == 0) {
		struct store_event_filter f = {
			.payment_id = id, .status = PAYMENT_UNKNOWN, .limit = API_EVENTS_MAX};

		r = store_events_query(s, &f, add_event, events);
	}
	if (r < 0) {
		log_err("admin api: payment query failed: %s", store_errmsg(s));
		store_close(s);
		cJSON_Delete(events);
		http_reply_error(req, r == -ENOMEM ? 500 : 503,
				 r == -ENOMEM ? "out of memory" : "store unavailable");
		return;
	}
	store_close(s);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddItemToObject(o, "payment", payment_json(&p));
	cJSON_AddItemToObject(o, "events", events);
	reply_cjson(req, 200, o, NULL);
}

/* ---- POST /v1/payments/{id}/cancel -------------------------------------------------------- */

static void cancel_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;
	struct komerce_result res;
	struct komerce_payment kp;
	struct store_payment p;
	struct store_req sr;
	struct store *s = NULL;
	struct event ev;
	char id[EVENT_ID_MAX], q[160], msg[160], *raw = NULL;
	cJSON *o, *data = NULL;
	int r;

	if (!authorized(a, req))
		return;
	if (api_path_id(http_url(req), API_CANCEL_SUFFIX, id, sizeof(id)) < 0) {
		http_reply_error(req, 404, "not found");
		return;
	}
	if (open_reader(a, &s) < 0) {
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	r = store_payment_get(s, id, &p);
	if (r < 0 && r != -ENOENT)
		log_err("admin api: payment lookup failed: %s", store_errmsg(s));
	store_close(s);
	if (r == -ENOENT) {
		reply_not_found(req, id);
		return;
	}
	if (r < 0) {
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	if (payment_status_terminal(p.status)) {
		snprintf(msg, sizeof(msg), "payment is %s and cannot be canceled",
			 payment_status_name(p.status));
		o = error_object(msg);
		cJSON_AddItemToObject(o, "payment", payment_json(&p));
		reply_cjson(req, 409, o, NULL);
		return;
	}

	r = upstream_call(a, API_OP_CANCEL, NULL, id, &res);
	if (r < 0) {
		log_upstream(API_OP_CANCEL, id, &res, NULL);
		reply_upstream(req, API_OP_CANCEL, &res);
		komerce_result_clear(&res);
		return;
	}
	data = cJSON_IsObject(res.data) ? cJSON_Duplicate(res.data, true) : cJSON_CreateObject();
	komerce_result_clear(&res);
	if (data != NULL)
		strip_secrets(data);
	raw = data != NULL ? cJSON_PrintUnformatted(data) : NULL;
	if (raw == NULL) {
		cJSON_Delete(data);
		http_reply_error(req, 500, "out of memory");
		return;
	}

	api_event_init(&ev, PAYMENT_CANCELED, id);
	ev.amount = p.amount;
	snprintf(ev.order_id, sizeof(ev.order_id), "%s", p.order_id);
	if (komerce_payment_from_json(data, &kp) == 0) {
		if (kp.amount >= 0)
			ev.amount = kp.amount;
		if (kp.order_id[0] != '\0')
			snprintf(ev.order_id, sizeof(ev.order_id), "%s", kp.order_id);
	}
	r = record_event(a, req, &ev, raw, &sr);
	cJSON_free(raw);
	if (r < 0) {
		log_err("admin api: payment canceled at komerce but not recorded payment_id=\"%s\" "
			"error=%d",
			log_quote(id, q, sizeof(q)), r);
		o = error_object("payment canceled at Komerce but not recorded locally (store "
				 "unavailable); its callback or the reconciler will record it");
		cJSON_AddItemToObject(o, "data", data);
		reply_cjson(req, 503, o, NULL);
		return;
	}
	log_info("admin api: payment canceled payment_id=\"%s\" event_id=%lld conflict=%s",
		 log_quote(id, q, sizeof(q)), (long long)sr.event_id, sr.conflict ? "yes" : "no");
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddNumberToObject(o, "event_id", (double)sr.event_id);
	cJSON_AddBoolToObject(o, "duplicate", sr.duplicate);
	cJSON_AddBoolToObject(o, "conflict", sr.conflict);
	cJSON_AddItemToObject(o, "data", data);
	reply_cjson(req, 200, o, NULL);
}

/* ---- POST /v1/payments/track -------------------------------------------------------------- */

static int track_string(const cJSON *body, const char *name, bool required, size_t max, char *out,
			size_t out_len, char *field, size_t field_len, char *rule, size_t rule_len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
	const char *why = NULL;

	if (v == NULL || cJSON_IsNull(v)) {
		if (!required)
			return 0;
		why = "is required";
	} else if (!cJSON_IsString(v)) {
		why = "must be a string";
	} else if (v->valuestring[0] == '\0') {
		why = "must not be empty";
	} else if (strlen(v->valuestring) > max || strlen(v->valuestring) >= out_len) {
		snprintf(rule, rule_len, "must be at most %zu characters",
			 max < out_len - 1 ? max : out_len - 1);
		snprintf(field, field_len, "%s", name);
		return -EINVAL;
	} else {
		for (const char *s = v->valuestring; *s != '\0'; s++)
			if ((unsigned char)*s < 0x20 || *s == 0x7f)
				why = "must not contain control characters";
	}
	if (why != NULL) {
		snprintf(field, field_len, "%s", name);
		snprintf(rule, rule_len, "%s", why);
		return -EINVAL;
	}
	snprintf(out, out_len, "%s", v->valuestring);
	return 0;
}

/* Reads a track request: payment_id, order_id, amount (integer >= 1) and expires_at (unix
 * seconds or ISO 8601) are required; payment_type and channel_code are optional. Returns 0, or
 * -EINVAL with the field and the rule it broke. */
static int api_track_parse(const cJSON *body, struct event *ev, char *field, size_t field_len,
			   char *rule, size_t rule_len)
{
	const cJSON *v;
	long long n;
	int64_t ms;

	api_event_init(ev, PAYMENT_PENDING, "");
	if (track_string(body, "payment_id", true, EVENT_ID_MAX - 1, ev->payment_id,
			 sizeof(ev->payment_id), field, field_len, rule, rule_len) < 0 ||
	    track_string(body, "order_id", true, EVENT_ID_MAX - 1, ev->order_id,
			 sizeof(ev->order_id), field, field_len, rule, rule_len) < 0 ||
	    track_string(body, "payment_type", false, sizeof(ev->payment_type) - 1,
			 ev->payment_type, sizeof(ev->payment_type), field, field_len, rule,
			 rule_len) < 0 ||
	    track_string(body, "channel_code", false, sizeof(ev->channel_code) - 1,
			 ev->channel_code, sizeof(ev->channel_code), field, field_len, rule,
			 rule_len) < 0)
		return -EINVAL;

	snprintf(field, field_len, "amount");
	v = cJSON_GetObjectItemCaseSensitive(body, "amount");
	if (v == NULL || cJSON_IsNull(v)) {
		snprintf(rule, rule_len, "is required");
		return -EINVAL;
	}
	if (!json_integer(v, 1, 1000000000000000LL, &ev->amount)) {
		snprintf(rule, rule_len, "must be a positive integer");
		return -EINVAL;
	}

	snprintf(field, field_len, "expires_at");
	v = cJSON_GetObjectItemCaseSensitive(body, "expires_at");
	if (v == NULL || cJSON_IsNull(v)) {
		snprintf(rule, rule_len, "is required");
		return -EINVAL;
	}
	if (json_integer(v, 1, 99999999999LL, &n)) {
		ev->expires_at = n;
	} else if (cJSON_IsString(v) && util_parse_time_ms(v->valuestring, &ms) == 0 && ms > 0) {
		ev->expires_at = ms / 1000;
	} else {
		snprintf(rule, rule_len, "must be unix seconds or an ISO 8601 time");
		return -EINVAL;
	}
	field[0] = '\0';
	rule[0] = '\0';
	return 0;
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
	store_req_payment_track(&sr, &ev);
	sr.received_at = util_now_ms();
	r = store_submit_wait(a->writer, &sr);
	if (r == -EEXIST) {
		o = error_object("payment_id: is already known");
		cJSON_AddStringToObject(o, "payment_id", ev.payment_id);
		reply_cjson(req, 409, o, NULL);
		return;
	}
	if (r < 0) {
		log_err("admin api: track not recorded payment_id=\"%s\" error=%d",
			log_quote(ev.payment_id, q, sizeof(q)), r);
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	wake_reconciler(a);
	log_info("admin api: payment tracked payment_id=\"%s\"",
		 log_quote(ev.payment_id, q, sizeof(q)));

	memset(&p, 0, sizeof(p));
	snprintf(p.payment_id, sizeof(p.payment_id), "%s", ev.payment_id);
	snprintf(p.order_id, sizeof(p.order_id), "%s", ev.order_id);
	snprintf(p.payment_type, sizeof(p.payment_type), "%s", ev.payment_type);
	snprintf(p.channel_code, sizeof(p.channel_code), "%s", ev.channel_code);
	snprintf(p.origin, sizeof(p.origin), "track");
	p.amount = ev.amount;
	p.status = PAYMENT_PENDING;
	p.expires_at = ev.expires_at;
	p.created_at = p.updated_at = sr.received_at;
	if (a->cfg->reconcile_enabled)
		p.next_poll_at = sr.received_at + (int64_t)a->cfg->grace_seconds * 1000;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddItemToObject(o, "payment", payment_json(&p));
	reply_cjson(req, 201, o, NULL);
}

/* ---- GET /v1/events ----------------------------------------------------------------------- */

#ifdef API_HAVE_EVENTS
static void events_handler(struct http_request *req, void *ctx)
{
	struct api *a = ctx;

	if (!authorized(a, req))
		return;
	api_events_handler(req, a->cfg->store_path);
}
#endif

/* ---- lifecycle ---------------------------------------------------------------------------- */

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
	a->kopts = (struct komerce_opts){.base_url = cfg->base_url,
					 .api_key = cfg->api_key,
					 .connect_timeout_ms = cfg->connect_timeout_ms,
					 .timeout_ms = cfg->timeout_ms};
	sha256(cfg->admin_token, strlen(cfg->admin_token), a->token_hash);
	pthread_mutex_init(&a->pool_mu, NULL);
	pthread_mutex_init(&a->methods_mu, NULL);
	a->fetch_methods = fetch_methods_komerce;
	*ret = a;
	return 0;
}

size_t api_routes(struct api *a, struct http_route *out, size_t max)
{
	/* First match of path and method wins: the exact paths before the prefixes. Bodies are
	 * collected without the listener's Content-Type check so that the token is checked
	 * first (401 before 415). */
	const struct http_route routes[] = {
		{"GET", "/v1/methods", false, false, false, METRICS_EP_ADMIN, methods_handler, a},
		{"POST", "/v1/payments/track", false, true, false, METRICS_EP_ADMIN, track_handler,
		 a},
		{"POST", "/v1/payments", false, true, false, METRICS_EP_ADMIN, create_handler, a},
		{"POST", API_PAYMENTS_PREFIX, true, true, false, METRICS_EP_ADMIN, cancel_handler,
		 a},
		{"GET", API_PAYMENTS_PREFIX, true, false, false, METRICS_EP_ADMIN, get_handler, a},
#ifdef API_HAVE_EVENTS
		{"GET", "/v1/events", false, false, false, METRICS_EP_ADMIN, events_handler, a},
#endif
	};
	size_t n = sizeof(routes) / sizeof(routes[0]);

	if (n > max)
		n = max;
	memcpy(out, routes, n * sizeof(routes[0]));
	return n;
}

void api_free(struct api *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n_pool; i++)
		komerce_free(a->pool[i]);
	cJSON_free(a->methods.text);
	pthread_mutex_destroy(&a->pool_mu);
	pthread_mutex_destroy(&a->methods_mu);
	free(a);
}
