/* HTTP sink: builds the JSON document (cJSON), signs it (sink_sign.c: Standard Webhooks or the
 * original X-Hookd-Signature), and POSTs a batch of
 * rows with a libcurl multi handle over a small pool of reused easy handles (kept-alive
 * connections). Only the forwarder thread of this sink calls sink_http_deliver(); the pure
 * helpers (document, classify) are also called by sink_redis and the tests. */
#include "build_config.h"
#include "sink_http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "config.h"
#include "sink_sign.h"
#include "util.h"

#define REPLY_KEEP 300 /* bytes of a reply body kept for last_error */

char *sink_http_document(const struct store_outbox_row *row, size_t *ret_len)
{
	char when[40];
	cJSON *doc, *cb = NULL;
	char *out = NULL;
	bool ok;

	doc = cJSON_CreateObject();
	if (doc == NULL)
		return NULL;
	util_iso8601_ms(row->received_at, when, sizeof(when));
	ok = cJSON_AddNumberToObject(doc, "event_id", (double)row->event_id) != NULL &&
	     cJSON_AddStringToObject(doc, "payment_id", row->payment_id) != NULL;
	if (ok)
		ok = row->order_id[0] != '\0'
			     ? cJSON_AddStringToObject(doc, "order_id", row->order_id) != NULL
			     : cJSON_AddNullToObject(doc, "order_id") != NULL;
	ok = ok && cJSON_AddStringToObject(doc, "status", payment_status_name(row->status)) != NULL;
	if (ok)
		ok = row->amount >= 0
			     ? cJSON_AddNumberToObject(doc, "amount", (double)row->amount) != NULL
			     : cJSON_AddNullToObject(doc, "amount") != NULL;
	ok = ok && cJSON_AddStringToObject(doc, "source", row->source) != NULL &&
	     cJSON_AddBoolToObject(doc, "conflict", row->conflict) != NULL &&
	     cJSON_AddStringToObject(doc, "received_at", when) != NULL;
	if (ok && row->raw_json != NULL && row->raw_len > 0)
		cb = cJSON_ParseWithLength(row->raw_json, row->raw_len);
	if (ok && cb != NULL) {
		ok = cJSON_AddItemToObject(doc, "callback", cb);
		if (!ok)
			cJSON_Delete(cb);
	} else if (ok) {
		ok = cJSON_AddNullToObject(doc, "callback") != NULL;
		if (ok && row->raw_json != NULL && row->raw_len > 0)
			ok = cJSON_AddStringToObject(doc, "callback_raw", row->raw_json) != NULL;
	}
	if (ok)
		out = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (out != NULL && ret_len != NULL)
		*ret_len = strlen(out);
	return out;
}

enum sink_verdict sink_http_classify(long status)
{
	if (status >= 200 && status < 300)
		return SINK_DELIVERED;
	if (status == 408 || status == 429)
		return SINK_RETRY;
	if (status >= 400 && status < 500)
		return SINK_DEAD;
	return SINK_RETRY;
}

/* ---- transfers ---- */

struct slot {
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char reply[REPLY_KEEP + 1];
	size_t reply_len;
	size_t row; /* index into the batch */
	bool busy;
};

struct sink_http {
	const struct config_sink *cfg;
	struct sink_sign_keys keys; /* Standard Webhooks: the decoded secrets */
	CURLM *multi;
	struct slot *slots;
	size_t n_slots;
};

static size_t on_reply(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct slot *sl = arg;
	size_t n = size * nmemb, room = REPLY_KEEP - sl->reply_len;

	if (n > room)
		n = room;
	memcpy(sl->reply + sl->reply_len, ptr, n);
	sl->reply_len += n;
	sl->reply[sl->reply_len] = '\0';
	return size * nmemb;
}

struct sink_http *sink_http_new(const struct config_sink *cfg, size_t parallel)
{
	struct sink_http *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	h->cfg = cfg;
	if (cfg->signature == SINK_SIGN_STANDARD) {
		char why[128];

		/* Validated at config load: a failure here is a secret changed under us. */
		if (sink_sign_keys_parse(cfg->secret, &h->keys, why, sizeof(why)) < 0) {
			free(h);
			return NULL;
		}
	}
	h->n_slots = parallel > 0 ? parallel : 1;
	h->slots = calloc(h->n_slots, sizeof(*h->slots));
	h->multi = curl_multi_init();
	if (h->slots == NULL || h->multi == NULL) {
		sink_http_free(h);
		return NULL;
	}
	curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->n_slots);
	for (size_t i = 0; i < h->n_slots; i++) {
		h->slots[i].easy = curl_easy_init();
		if (h->slots[i].easy == NULL) {
			sink_http_free(h);
			return NULL;
		}
	}
	return h;
}

static void slot_clear(struct sink_http *h, struct slot *sl)
{
	if (sl->busy)
		curl_multi_remove_handle(h->multi, sl->easy);
	sl->busy = false;
	curl_slist_free_all(sl->headers);
	sl->headers = NULL;
	free(sl->body);
	sl->body = NULL;
	sl->reply_len = 0;
	sl->reply[0] = '\0';
}

void sink_http_free(struct sink_http *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; h->slots != NULL && i < h->n_slots; i++) {
		slot_clear(h, &h->slots[i]);
		if (h->slots[i].easy != NULL)
			curl_easy_cleanup(h->slots[i].easy);
	}
	free(h->slots);
	if (h->multi != NULL)
		curl_multi_cleanup(h->multi);
	sink_sign_keys_clear(&h->keys);
	free(h);
}

static struct curl_slist *add_header(struct curl_slist *l, bool *ok, const char *fmt, const char *a)
{
	char line[SINK_SIGN_HEADER_LEN + 64];
	struct curl_slist *n;

	snprintf(line, sizeof(line), fmt, a);
	n = curl_slist_append(l, line);
	if (n == NULL) {
		*ok = false;
		return l;
	}
	return n;
}

/* Prepares and adds the transfer of rows[i] on sl. Returns 0 or a -errno with res filled. */
static int start(struct sink_http *h, struct slot *sl, const struct store_outbox_row *row, size_t i,
		 struct sink_result *res)
{
	char sig[SINK_SIGN_HEADER_LEN], num[32], ts_s[32], id[SINK_SIGN_ID_LEN];
	int64_t ts = util_now_ms() / 1000;
	size_t len = 0;
	bool ok = true;
	CURL *e = sl->easy;
	int r = -ENOMEM;

	sink_sign_webhook_id(row->event_id, id);
	sl->body = sink_http_document(row, &len);
	if (sl->body != NULL && h->cfg->signature == SINK_SIGN_HOOKD)
		r = sink_sign_hookd(h->cfg->secret, ts, sl->body, len, sig);
	else if (sl->body != NULL)
		r = sink_sign_standard(&h->keys, id, ts, sl->body, len, sig);
	if (r < 0) {
		snprintf(res->error, sizeof(res->error), "out of memory building the document");
		res->verdict = SINK_RETRY;
		slot_clear(h, sl);
		return -ENOMEM;
	}
	snprintf(num, sizeof(num), "%lld", (long long)row->event_id);
	snprintf(ts_s, sizeof(ts_s), "%lld", (long long)ts);
	sl->headers = add_header(sl->headers, &ok, "%s", "Content-Type: application/json");
	sl->headers = add_header(sl->headers, &ok, "%s", "Expect:");
	sl->headers = add_header(sl->headers, &ok, "User-Agent: komerce-hookd/%s", HOOKD_VERSION);
	if (h->cfg->signature == SINK_SIGN_HOOKD) {
		sl->headers = add_header(sl->headers, &ok, "X-Hookd-Event-Id: %s", num);
		sl->headers = add_header(sl->headers, &ok, "X-Hookd-Timestamp: %s", ts_s);
		sl->headers = add_header(sl->headers, &ok, "X-Hookd-Signature: %s", sig);
	} else {
		sl->headers = add_header(sl->headers, &ok, "webhook-id: %s", id);
		sl->headers = add_header(sl->headers, &ok, "webhook-timestamp: %s", ts_s);
		sl->headers = add_header(sl->headers, &ok, "webhook-signature: %s", sig);
	}
	if (!ok) {
		snprintf(res->error, sizeof(res->error), "out of memory building the headers");
		res->verdict = SINK_RETRY;
		slot_clear(h, sl);
		return -ENOMEM;
	}
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, h->cfg->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, sl->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, sl->headers);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->cfg->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->cfg->timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_reply);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, sl);
	sl->row = i;
	sl->reply_len = 0;
	sl->reply[0] = '\0';
	if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
		snprintf(res->error, sizeof(res->error), "curl: cannot add the transfer");
		res->verdict = SINK_RETRY;
		slot_clear(h, sl);
		return -EIO;
	}
	sl->busy = true;
	return 0;
}

/* Keeps printable ASCII of a reply body, replacing the rest, for last_error. */
static void printable(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = ' ';
}

/* Records the result of a finished transfer; returns false for a transport failure (no HTTP
 * reply at all). */
static bool finish(struct sink_http *h, struct slot *sl, CURLcode code, struct sink_result *res)
{
	long status = 0;

	if (code != CURLE_OK) {
		res->verdict = SINK_RETRY;
		snprintf(res->error, sizeof(res->error), "curl: %s", curl_easy_strerror(code));
		slot_clear(h, sl);
		return false;
	}
	{
		curl_easy_getinfo(sl->easy, CURLINFO_RESPONSE_CODE, &status);
		res->verdict = sink_http_classify(status);
		printable(sl->reply);
		if (res->verdict == SINK_DELIVERED)
			res->error[0] = '\0';
		else
			snprintf(res->error, sizeof(res->error), "HTTP %ld: %s", status, sl->reply);
	}
	slot_clear(h, sl);
	return true;
}

void sink_http_deliver(struct sink_http *h, const struct store_outbox_row *rows, size_t n,
		       struct sink_result *res, const int *stop)
{
	size_t next = 0, active = 0;
	const char *broken = NULL; /* transport error: the rows not started yet fail with it */

	for (size_t i = 0; i < n; i++) {
		res[i].verdict = SINK_ABANDONED;
		res[i].error[0] = '\0';
	}
	for (;;) {
		CURLMsg *msg;
		int running = 0, left;
		size_t finished = 0;

		/* Fill the free slots; once the endpoint failed at the transport level, the rows
		 * not started are not sent this round, so a dead consumer costs one timeout per
		 * round rather than one per row. They were never attempted, so they are
		 * postponed without spending an attempt (never dead-lettered unseen). */
		for (; broken != NULL && next < n; next++) {
			res[next].verdict = SINK_NOT_SENT;
			snprintf(res[next].error, sizeof(res[next].error), "not sent: %s", broken);
		}
		for (size_t k = 0; k < h->n_slots && next < n; k++) {
			if (h->slots[k].busy)
				continue;
			if (start(h, &h->slots[k], &rows[next], next, &res[next]) == 0)
				active++;
			next++;
		}
		if (active == 0 && next >= n)
			break;
		if (__atomic_load_n(stop, __ATOMIC_ACQUIRE))
			break;
		curl_multi_perform(h->multi, &running);
		while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			for (size_t k = 0; k < h->n_slots; k++) {
				struct slot *sl = &h->slots[k];

				if (sl->busy && sl->easy == msg->easy_handle) {
					size_t row = sl->row;

					if (!finish(h, sl, msg->data.result, &res[row]) &&
					    broken == NULL)
						broken = res[row].error;
					active--;
					finished++;
					break;
				}
			}
		}
		if (active > 0 && finished == 0)
			curl_multi_poll(h->multi, NULL, 0, 100, NULL);
	}
	/* Stopping: drop what is in flight (those rows stay pending). */
	for (size_t k = 0; k < h->n_slots; k++)
		if (h->slots[k].busy)
			slot_clear(h, &h->slots[k]);
}
