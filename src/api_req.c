/* The admin API's request rules (see api_req.h). Pure; called on the admin listener's
 * threads and by the unit tests. */
#include "api_req.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

void api_token_hash(const char *token, uint8_t out[UTIL_SHA256_LEN])
{
	util_sha256(token, strlen(token), out);
}

bool api_token_valid(const uint8_t want[UTIL_SHA256_LEN], const char *authorization)
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
	util_sha256(t, len, got);
	return util_ct_equal(got, want, UTIL_SHA256_LEN);
}

int api_path_id(const char *url, const char *suffix, char *out, size_t n)
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

unsigned api_upstream_status(enum komerce_err e)
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

int api_create_prepare(cJSON *request, const char *callback_url, const char *callback_key,
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
	/* Both spellings: Komerce's API document for merchants says callback_API_KEY, its
	 * endpoint page callback_api_key, and a server reads one and ignores the other. */
	if (cJSON_AddStringToObject(request, "callback_url", callback_url) == NULL ||
	    cJSON_AddStringToObject(request, "callback_api_key", callback_key) == NULL ||
	    cJSON_AddStringToObject(request, "callback_API_KEY", callback_key) == NULL)
		return -ENOMEM;
	return 0;
}

void api_strip_secrets(cJSON *data)
{
	cJSON_DeleteItemFromObjectCaseSensitive(data, "callback_api_key");
	cJSON_DeleteItemFromObjectCaseSensitive(data, "callback_API_KEY");
}

bool api_json_integer(const cJSON *v, long long min, long long max, long long *ret)
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

void api_event_init(struct event *ev, enum payment_status status, const char *payment_id)
{
	memset(ev, 0, sizeof(*ev));
	ev->source = EVENT_SOURCE_API;
	ev->status = status;
	snprintf(ev->payment_id, sizeof(ev->payment_id), "%s", payment_id);
}

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

int api_track_parse(const cJSON *body, struct event *ev, char *field, size_t field_len, char *rule,
		    size_t rule_len)
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
	if (!api_json_integer(v, 1, 1000000000000000LL, &ev->amount)) {
		snprintf(rule, rule_len, "must be a positive integer");
		return -EINVAL;
	}

	snprintf(field, field_len, "expires_at");
	v = cJSON_GetObjectItemCaseSensitive(body, "expires_at");
	if (v == NULL || cJSON_IsNull(v)) {
		snprintf(rule, rule_len, "is required");
		return -EINVAL;
	}
	if (api_json_integer(v, 1, 99999999999LL, &n)) {
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
