/* The audit log's presentation for the admin API (GET /v1/events, GET /v1/payments/{id},
 * GET /v1/stats) and komerce-hookctl: filters from text, events as JSON, cursor pages,
 * statistics. Pure; called on the admin listener's threads and by the CLI. */
#include "audit.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util.h"

/* A decimal integer in [min, LLONG_MAX], nothing else (no sign, no spaces). */
static int parse_int(const char *v, long long min, long long *ret)
{
	char *end;
	long long n;

	if (v[0] < '0' || v[0] > '9')
		return -EINVAL;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < min)
		return -EINVAL;
	*ret = n;
	return 0;
}

static const char *source_name(const char *v)
{
	int src = event_source_parse(v);

	return src < 0 ? NULL : event_source_name((enum event_source)src);
}

int audit_filter_set(struct store_event_filter *f, const char *name, const char *value, char *why,
		     size_t why_len)
{
	bool empty = value == NULL || value[0] == '\0';
	long long n;
	int64_t ms;

	if (strcmp(name, "payment_id") == 0 || strcmp(name, "order_id") == 0) {
		if (!empty && strlen(value) >= EVENT_ID_MAX) {
			snprintf(why, why_len, "longer than %d bytes", EVENT_ID_MAX - 1);
			return -EINVAL;
		}
		if (name[0] == 'p')
			f->payment_id = empty ? NULL : value;
		else
			f->order_id = empty ? NULL : value;
	} else if (strcmp(name, "status") == 0) {
		f->status = empty ? PAYMENT_UNKNOWN : payment_status_parse(value);
		if (!empty && f->status == PAYMENT_UNKNOWN) {
			snprintf(why, why_len, "must be PENDING, PAID, EXPIRED or CANCELED");
			return -EINVAL;
		}
	} else if (strcmp(name, "source") == 0) {
		f->source = empty ? NULL : source_name(value);
		if (!empty && f->source == NULL) {
			snprintf(why, why_len, "must be callback, reconcile or api");
			return -EINVAL;
		}
	} else if (strcmp(name, "since") == 0 || strcmp(name, "until") == 0) {
		ms = 0;
		if (!empty && util_parse_time_ms(value, &ms) < 0) {
			snprintf(why, why_len, "not an ISO 8601 time or unix seconds");
			return -EINVAL;
		}
		if (name[0] == 's')
			f->since_ms = ms;
		else
			f->until_ms = ms;
	} else if (strcmp(name, "after_id") == 0) {
		n = 0;
		if (!empty && parse_int(value, 0, &n) < 0) {
			snprintf(why, why_len, "must be a non-negative integer");
			return -EINVAL;
		}
		f->after_id = n;
	} else if (strcmp(name, "limit") == 0) {
		n = 0;
		if (!empty && (parse_int(value, 1, &n) < 0 || n > LONG_MAX)) {
			snprintf(why, why_len, "must be a positive integer");
			return -EINVAL;
		}
		f->limit = (long)n;
	} else {
		snprintf(why, why_len, "unknown filter");
		return -ENOENT;
	}
	return 0;
}

struct cJSON *audit_event_json(const struct store_event *e)
{
	cJSON *o = cJSON_CreateObject(), *cb = NULL;
	char iso[40];
	bool ok;

	if (o == NULL)
		return NULL;
	util_iso8601_ms(e->received_at, iso, sizeof(iso));
	ok = cJSON_AddNumberToObject(o, "id", (double)e->id) != NULL &&
	     cJSON_AddStringToObject(o, "payment_id", e->payment_id) != NULL &&
	     (e->order_id[0] != '\0' ? cJSON_AddStringToObject(o, "order_id", e->order_id)
				     : cJSON_AddNullToObject(o, "order_id")) != NULL &&
	     cJSON_AddStringToObject(o, "status", payment_status_name(e->status)) != NULL &&
	     (e->amount >= 0 ? cJSON_AddNumberToObject(o, "amount", (double)e->amount)
			     : cJSON_AddNullToObject(o, "amount")) != NULL &&
	     cJSON_AddStringToObject(o, "source", e->source) != NULL &&
	     cJSON_AddBoolToObject(o, "conflict", e->conflict) != NULL &&
	     cJSON_AddStringToObject(o, "received_at", iso) != NULL &&
	     cJSON_AddNumberToObject(o, "receipts", (double)e->receipts) != NULL &&
	     (store_event_mark_name(e->mark) != NULL
		      ? cJSON_AddStringToObject(o, "confirmation", store_event_mark_name(e->mark))
		      : cJSON_AddNullToObject(o, "confirmation")) != NULL &&
	     (e->held_event_id > 0
		      ? cJSON_AddNumberToObject(o, "held_event_id", (double)e->held_event_id)
		      : cJSON_AddNullToObject(o, "held_event_id")) != NULL;
	if (ok) {
		if (e->raw_json == NULL || e->raw_json[0] == '\0')
			cb = cJSON_CreateNull();
		else if ((cb = cJSON_Parse(e->raw_json)) == NULL)
			cb = cJSON_CreateString(e->raw_json);
		ok = cb != NULL && cJSON_AddItemToObject(o, "callback", cb);
		if (!ok)
			cJSON_Delete(cb);
	}
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

void audit_json_time(cJSON *o, const char *key, int64_t ms)
{
	char iso[40];

	if (ms <= 0) {
		cJSON_AddNullToObject(o, key);
		return;
	}
	util_iso8601_ms(ms, iso, sizeof(iso));
	cJSON_AddStringToObject(o, key, iso);
}

void audit_json_str_or_null(cJSON *o, const char *key, const char *v)
{
	if (v != NULL && v[0] != '\0')
		cJSON_AddStringToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

cJSON *audit_payment_json(const struct store_payment *p)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "payment_id", p->payment_id);
	audit_json_str_or_null(o, "order_id", p->order_id);
	audit_json_str_or_null(o, "payment_type", p->payment_type);
	audit_json_str_or_null(o, "channel_code", p->channel_code);
	if (p->amount >= 0)
		cJSON_AddNumberToObject(o, "amount", (double)p->amount);
	else
		cJSON_AddNullToObject(o, "amount");
	cJSON_AddStringToObject(o, "status", payment_status_name(p->status));
	audit_json_time(o, "expires_at", p->expires_at * 1000);
	audit_json_time(o, "created_at", p->created_at);
	audit_json_time(o, "updated_at", p->updated_at);
	audit_json_time(o, "callback_seen_at", p->callback_seen_at);
	audit_json_time(o, "last_polled_at", p->last_polled_at);
	audit_json_time(o, "next_poll_at", p->next_poll_at);
	cJSON_AddNumberToObject(o, "poll_attempts", (double)p->poll_attempts);
	cJSON_AddStringToObject(o, "origin", p->origin);
	audit_json_str_or_null(o, "confirmation", store_confirmation_name(p->confirmation));
	audit_json_str_or_null(o, "confirmation_detail", p->confirmation_detail);
	audit_json_time(o, "confirmation_at", p->confirmation_at);
	if (p->held_event_id > 0)
		cJSON_AddNumberToObject(o, "held_event_id", (double)p->held_event_id);
	else
		cJSON_AddNullToObject(o, "held_event_id");
	return o;
}

cJSON *audit_poll_json(const struct store_poll *p)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cJSON_AddNumberToObject(o, "id", (double)p->id);
	audit_json_time(o, "polled_at", p->polled_at);
	cJSON_AddNumberToObject(o, "elapsed_ms", (double)p->elapsed_ms);
	cJSON_AddStringToObject(o, "outcome", store_poll_outcome_name(p->outcome));
	if (p->http_status > 0)
		cJSON_AddNumberToObject(o, "http_status", (double)p->http_status);
	else
		cJSON_AddNullToObject(o, "http_status");
	audit_json_str_or_null(o, "komerce_status",
			       p->komerce_status != PAYMENT_UNKNOWN
				       ? payment_status_name(p->komerce_status)
				       : NULL);
	cJSON_AddBoolToObject(o, "confirming", p->confirming);
	audit_json_str_or_null(o, "error", p->error);
	return o;
}

/* ---- events page (admin API) ---- */

struct page {
	struct util_buf b;
	size_t max_bytes;
	long count, want;
	int64_t last_id;
	bool more;
};

static int page_event(void *arg, const struct store_event *e)
{
	struct page *p = arg;
	cJSON *o;
	char *text;

	if (p->count == p->want || (p->count > 0 && p->b.len > p->max_bytes)) {
		p->more = true;
		return 1;
	}
	o = audit_event_json(e);
	text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (text == NULL)
		return -ENOMEM;
	if (p->count > 0)
		util_buf_add(&p->b, ",", 1);
	util_buf_add(&p->b, text, strlen(text));
	free(text);
	if (p->b.oom)
		return -ENOMEM;
	p->count++;
	p->last_id = e->id;
	return 0;
}

int audit_events_page(struct store *s, const struct store_event_filter *f, size_t max_bytes,
		      char **ret)
{
	struct store_event_filter q = *f;
	struct page p = {.max_bytes = max_bytes, .want = f->limit > 0 ? f->limit : 100};
	int r;

	q.limit = p.want + 1; /* one more row tells whether another page follows */
	util_buf_printf(&p.b, "{\"status\":\"ok\",\"events\":[");
	r = store_events_query(s, &q, page_event, &p);
	if (r < 0) {
		util_buf_free(&p.b);
		return r;
	}
	if (p.more)
		util_buf_printf(&p.b, "],\"next_after_id\":%lld}", (long long)p.last_id);
	else
		util_buf_printf(&p.b, "],\"next_after_id\":null}");
	*ret = util_buf_steal(&p.b, NULL);
	return *ret != NULL ? 0 : -ENOMEM;
}

/* ---- statistics ---- */

static cJSON *by_status_object(const int64_t *by_status)
{
	cJSON *o = cJSON_CreateObject();

	for (int i = PAYMENT_PENDING; i <= PAYMENT_CANCELED && o != NULL; i++)
		cJSON_AddNumberToObject(o, payment_status_name((enum payment_status)i),
					(double)by_status[i]);
	return o;
}

cJSON *audit_stats_json(const struct store_stats *t)
{
	cJSON *root = cJSON_CreateObject(), *ev, *src, *pay, *rec, *ob, *sinks;

	if (root == NULL)
		return NULL;
	ev = cJSON_AddObjectToObject(root, "events");
	cJSON_AddNumberToObject(ev, "total", (double)t->events);
	cJSON_AddItemToObject(ev, "by_status", by_status_object(t->events_by_status));
	src = cJSON_AddObjectToObject(ev, "by_source");
	for (int i = 0; i < EVENT_SOURCE_COUNT; i++)
		cJSON_AddNumberToObject(src, event_source_name((enum event_source)i),
					(double)t->events_by_source[i]);
	cJSON_AddNumberToObject(ev, "conflicts", (double)t->conflicts);
	cJSON_AddNumberToObject(root, "receipts", (double)t->receipts);
	cJSON_AddNumberToObject(root, "duplicates", (double)(t->receipts - t->events));
	pay = cJSON_AddObjectToObject(root, "payments");
	cJSON_AddNumberToObject(pay, "total", (double)t->payments);
	cJSON_AddItemToObject(pay, "by_status", by_status_object(t->payments_by_status));
	cJSON_AddNumberToObject(pay, "stale", (double)t->stale);
	rec = cJSON_AddObjectToObject(root, "reconciled");
	cJSON_AddNumberToObject(rec, "total", (double)t->reconciled);
	cJSON_AddNumberToObject(rec, "callback_missed",
				(double)(t->reconciled - t->reconciled_late_cb));
	cJSON_AddNumberToObject(rec, "callback_late", (double)t->reconciled_late_cb);
	ob = cJSON_AddObjectToObject(root, "outbox");
	cJSON_AddNumberToObject(ob, "pending", (double)t->outbox_pending);
	cJSON_AddNumberToObject(ob, "dead", (double)t->outbox_dead);
	cJSON_AddNumberToObject(ob, "replayed", (double)t->outbox_replayed);
	cJSON_AddNumberToObject(ob, "delivered", (double)t->outbox_delivered);
	sinks = cJSON_AddArrayToObject(ob, "sinks");
	for (size_t i = 0; i < t->n_sinks && sinks != NULL; i++) {
		cJSON *k = cJSON_CreateObject();

		if (k == NULL)
			break;
		cJSON_AddStringToObject(k, "sink", t->sinks[i].sink);
		cJSON_AddNumberToObject(k, "pending", (double)t->sinks[i].pending);
		cJSON_AddNumberToObject(k, "dead", (double)t->sinks[i].dead);
		cJSON_AddNumberToObject(k, "replayed", (double)t->sinks[i].replayed);
		cJSON_AddNumberToObject(k, "delivered", (double)t->sinks[i].delivered);
		audit_json_time(k, "oldest_pending", t->sinks[i].oldest_pending_ms);
		cJSON_AddItemToArray(sinks, k);
	}
	return root;
}
