/* Komerce callback authentication (HMAC-SHA256 of the raw body, constant-time, every key
 * tried) and tolerant parsing of the body into a struct event. Pure: the HTTP worker thread
 * that calls it decides the reply and logs. */
#include "callback.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "util.h"

int callback_verify(const struct callback_keys *k, const char *header, const void *body, size_t len)
{
	uint8_t want[UTIL_SHA256_LEN], got[UTIL_SHA256_LEN];
	size_t hlen;
	int match = 0;

	if (header == NULL || k == NULL || k->n == 0)
		return -EACCES;
	while (*header == ' ' || *header == '\t')
		header++;
	hlen = strlen(header);
	while (hlen > 0 && (header[hlen - 1] == ' ' || header[hlen - 1] == '\t'))
		hlen--;
	if (k->plain) {
		/* Compare digests so the comparison's time does not depend on key length. */
		util_sha256(header, hlen, got);
		for (size_t i = 0; i < k->n; i++) {
			util_sha256(k->keys[i], k->lens[i], want);
			match |= util_ct_equal(want, got, sizeof(want));
		}
		return match ? 0 : -EACCES;
	}
	if (hlen > 7 && strncasecmp(header, "sha256=", 7) == 0) {
		header += 7;
		hlen -= 7;
	}
	if (util_unhex(header, hlen, got, sizeof(got)) < 0)
		return -EACCES;
	for (size_t i = 0; i < k->n; i++) {
		if (util_hmac_sha256(k->keys[i], k->lens[i], body, len, want) < 0)
			continue;
		match |= util_ct_equal(want, got, sizeof(want));
	}
	return match ? 0 : -EACCES;
}

/* RFC 3629 UTF-8 check: no overlongs, no surrogates, nothing above U+10FFFF, no NUL. */
static bool valid_utf8(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + n >= len)
			return false;
		for (size_t j = 1; j <= n; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/* True when the JSON text has a \u0000 escape (one not itself escaped): cJSON would decode it
 * into a NUL that silently cuts the string short (an id "K\u0000X" read as "K"). */
static bool has_nul_escape(const char *s, size_t len)
{
	for (size_t i = 0; i + 6 <= len; i++) {
		size_t bs = 0;

		if (s[i] != '\\' || s[i + 1] != 'u' || memcmp(s + i + 2, "0000", 4) != 0)
			continue;
		while (bs < i && s[i - 1 - bs] == '\\')
			bs++;
		if (bs % 2 == 0)
			return true;
	}
	return false;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a member name that appears twice in obj (cJSON keeps the first, another parser of the
 * stored raw body might keep the last). A callback has about ten members: those are compared
 * pair by pair; more are sorted, O(n log n) for hostile bodies. Returns the name, NULL if none;
 * *ret_oom set on allocation failure. */
static const char *duplicate_name(const cJSON *obj, bool *ret_oom)
{
	enum { PAIRWISE_MAX = 16 };
	const cJSON *c;
	const char **names, *dup = NULL;
	size_t n = 0, i = 0;

	for (c = obj->child; c != NULL; c = c->next)
		n++;
	if (n < 2)
		return NULL;
	if (n <= PAIRWISE_MAX) {
		const char *s[PAIRWISE_MAX];
		size_t len[PAIRWISE_MAX];

		for (c = obj->child; c != NULL; c = c->next, i++) {
			s[i] = c->string != NULL ? c->string : "";
			len[i] = strlen(s[i]);
		}
		for (i = 0; i < n; i++)
			for (size_t j = i + 1; j < n; j++)
				if (len[i] == len[j] && memcmp(s[i], s[j], len[i]) == 0)
					return s[j];
		return NULL;
	}
	names = malloc(n * sizeof(*names));
	if (names == NULL) {
		*ret_oom = true;
		return NULL;
	}
	for (c = obj->child; c != NULL; c = c->next)
		names[i++] = c->string != NULL ? c->string : "";
	qsort(names, n, sizeof(*names), cmp_names);
	for (i = 1; i < n && dup == NULL; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			dup = names[i];
	free(names);
	return dup;
}

/* Looks a field up at the top level, then in a "data" object. */
static const cJSON *field(const cJSON *root, const cJSON *data, const char *name)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);

	if (f == NULL && data != NULL)
		f = cJSON_GetObjectItemCaseSensitive(data, name);
	return f;
}

static int reason(char *why, size_t why_len, const char *fmt, const char *name)
{
	snprintf(why, why_len, fmt, name);
	return -EINVAL;
}

/* Copies a string field (or an integer one, rendered) into out. Absent is fine unless
 * required. */
static int get_id(const cJSON *f, const char *name, bool required, char *out, size_t n, char *why,
		  size_t why_len)
{
	out[0] = '\0';
	if (f == NULL || cJSON_IsNull(f)) {
		if (required)
			return reason(why, why_len, "%s is missing", name);
		return 0;
	}
	if (cJSON_IsNumber(f)) {
		double v = f->valuedouble;

		if (v != floor(v) || fabs(v) > 9007199254740991.0)
			return reason(why, why_len, "%s must be a string", name);
		snprintf(out, n, "%.0f", v);
		return 0;
	}
	if (!cJSON_IsString(f))
		return reason(why, why_len, "%s must be a string", name);
	if (strlen(f->valuestring) >= n)
		return reason(why, why_len, "%s is too long", name);
	if (required && f->valuestring[0] == '\0')
		return reason(why, why_len, "%s is empty", name);
	for (const char *p = f->valuestring; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20)
			return reason(why, why_len, "%s has control characters", name);
	snprintf(out, n, "%s", f->valuestring);
	return 0;
}

/* Integer rupiah amount: a JSON number or a numeric string, whole, 0 .. 10^15. */
static int get_amount(const cJSON *f, const char *name, long long *ret, char *why, size_t why_len)
{
	double v;

	*ret = -1;
	if (f == NULL || cJSON_IsNull(f))
		return 0;
	if (cJSON_IsNumber(f)) {
		v = f->valuedouble;
	} else if (cJSON_IsString(f)) {
		const char *q = f->valuestring;
		char *end;

		/* Plain decimal only: strtod would also take hex, "inf" and exponents. */
		while (*q >= '0' && *q <= '9')
			q++;
		if (*q == '.')
			for (q++; *q >= '0' && *q <= '9'; q++)
				;
		if (q == f->valuestring || *q != '\0')
			return reason(why, why_len, "%s must be a number", name);
		v = strtod(f->valuestring, &end);
	} else {
		return reason(why, why_len, "%s must be a number", name);
	}
	if (!isfinite(v) || v < 0 || v > 1e15)
		return reason(why, why_len, "%s is out of range", name);
	if (v != floor(v))
		return reason(why, why_len, "%s must be a whole number", name);
	*ret = (long long)v;
	return 0;
}

static void get_opt_string(const cJSON *f, char *out, size_t n)
{
	out[0] = '\0';
	if (cJSON_IsString(f) && strlen(f->valuestring) < n)
		snprintf(out, n, "%s", f->valuestring);
}

/* The JSON object of a body that passed the byte checks, or NULL with the reason. */
static cJSON *parse_object(const char *body, size_t len, char *why, size_t why_len)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);

	if (root == NULL) {
		reason(why, why_len, "%s", "malformed JSON");
		return NULL;
	}
	while (end != NULL && end < body + len &&
	       (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
		end++;
	if (end != body + len)
		reason(why, why_len, "%s", "malformed JSON (trailing data)");
	else if (!cJSON_IsObject(root))
		reason(why, why_len, "%s", "body must be a JSON object");
	else
		return root;
	cJSON_Delete(root);
	return NULL;
}

/* -EINVAL with the reason when root or data names a field twice (parsers disagree on which
 * one wins, so the stored fact and what a sink reads from the raw body could differ). */
static int refuse_duplicates(const cJSON *root, const cJSON *data, char *why, size_t why_len)
{
	bool oom = false;
	const char *dup = duplicate_name(root, &oom);
	char name[48];

	if (dup == NULL && data != NULL)
		dup = duplicate_name(data, &oom);
	if (oom)
		return reason(why, why_len, "%s", "out of memory");
	if (dup == NULL)
		return 0;
	snprintf(name, sizeof(name), "%s", dup);
	for (char *p = name; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
			*p = '?';
	snprintf(why, why_len, "duplicate field %s", name);
	return -EINVAL;
}

/* The status from status, payment_status or transaction_status (the first present). */
static int get_status(const cJSON *root, const cJSON *data, enum payment_status *ret, char *why,
		      size_t why_len)
{
	const cJSON *st = field(root, data, "status");

	if (st == NULL)
		st = field(root, data, "payment_status");
	if (st == NULL)
		st = field(root, data, "transaction_status");
	if (st == NULL || cJSON_IsNull(st))
		return reason(why, why_len, "%s", "status is missing");
	if (!cJSON_IsString(st))
		return reason(why, why_len, "%s", "status must be a string");
	*ret = payment_status_parse(st->valuestring);
	if (*ret == PAYMENT_UNKNOWN)
		return reason(why, why_len, "%s",
			      "status must be one of PENDING, PAID, EXPIRED, CANCELED");
	return 0;
}

static int read_fields(const cJSON *root, const cJSON *data, struct event *ev, char *why,
		       size_t why_len)
{
	const cJSON *ch;

	if (get_id(field(root, data, "payment_id"), "payment_id", true, ev->payment_id,
		   sizeof(ev->payment_id), why, why_len) < 0 ||
	    get_id(field(root, data, "order_id"), "order_id", false, ev->order_id,
		   sizeof(ev->order_id), why, why_len) < 0 ||
	    get_status(root, data, &ev->status, why, why_len) < 0 ||
	    get_amount(field(root, data, "amount"), "amount", &ev->amount, why, why_len) < 0)
		return -EINVAL;
	get_opt_string(field(root, data, "payment_type"), ev->payment_type,
		       sizeof(ev->payment_type));
	ch = field(root, data, "channel_code");
	if (ch == NULL)
		ch = field(root, data, "bank_code");
	get_opt_string(ch, ev->channel_code, sizeof(ev->channel_code));
	return 0;
}

int callback_parse(const char *body, size_t len, struct event *ret, char *why, size_t why_len)
{
	const cJSON *data;
	cJSON *root;
	struct event ev;
	int r;

	memset(&ev, 0, sizeof(ev));
	if (len == 0)
		return reason(why, why_len, "%s", "empty body");
	if (!valid_utf8((const unsigned char *)body, len))
		return reason(why, why_len, "%s", "body is not valid UTF-8");
	if (has_nul_escape(body, len))
		return reason(why, why_len, "%s", "body has a \\u0000 escape");
	root = parse_object(body, len, why, why_len);
	if (root == NULL)
		return -EINVAL;
	data = cJSON_GetObjectItemCaseSensitive(root, "data");
	if (!cJSON_IsObject(data))
		data = NULL;
	r = refuse_duplicates(root, data, why, why_len);
	if (r == 0)
		r = read_fields(root, data, &ev, why, why_len);
	cJSON_Delete(root);
	if (r < 0)
		return r;
	ev.source = EVENT_SOURCE_CALLBACK;
	ev.raw = body;
	ev.raw_len = len;
	*ret = ev;
	return 0;
}
