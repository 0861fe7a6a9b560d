/* The methods cache of the admin API (see api_methods.h). Called on the admin listener's
 * threads; one refresh at a time. */
#include "api_methods.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

void api_methods_init(struct api_methods *m, int (*fetch)(void *ctx, struct komerce_result *ret),
		      void *ctx)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->mu, NULL);
	m->fetch = fetch;
	m->ctx = ctx;
}

void api_methods_destroy(struct api_methods *m)
{
	cJSON_free(m->text);
	m->text = NULL;
	pthread_mutex_destroy(&m->mu);
}

static void fail(struct komerce_result *r, enum komerce_err e, const char *msg)
{
	r->err = e;
	snprintf(r->message, sizeof(r->message), "%s", msg);
}

/* Asks Komerce; on success the copy is replaced. m->mu is held. */
static int refresh(struct api_methods *m, int64_t now_mono, int64_t now_wall,
		   struct komerce_result *ret_err)
{
	char *text = NULL;
	int r = m->fetch(m->ctx, ret_err);

	if (r == 0 && !cJSON_IsArray(ret_err->data)) {
		fail(ret_err, KOMERCE_E_BAD_RESPONSE, "methods reply has no data array");
		r = -EIO;
	}
	if (r == 0 && (text = cJSON_PrintUnformatted(ret_err->data)) == NULL) {
		fail(ret_err, KOMERCE_E_NOMEM, "out of memory");
		r = -ENOMEM;
	}
	if (r < 0) {
		m->failed_mono = now_mono;
		return r;
	}
	cJSON_free(m->text);
	m->text = text;
	m->fetched_mono = now_mono;
	m->fetched_wall = now_wall;
	m->failed_mono = 0;
	return 0;
}

int api_methods_get(struct api_methods *m, int64_t now_mono, int64_t now_wall, char **ret_text,
		    bool *ret_stale, int64_t *ret_fetched_wall, struct komerce_result *ret_err)
{
	bool fresh, backoff;
	char *copy = NULL;
	int r = 0;

	memset(ret_err, 0, sizeof(*ret_err));
	ret_err->retry_after_s = -1;
	pthread_mutex_lock(&m->mu);
	fresh = m->text != NULL && now_mono - m->fetched_mono < API_METHODS_TTL_MS;
	backoff = m->text != NULL && m->failed_mono != 0 &&
		  now_mono - m->failed_mono < API_METHODS_RETRY_MS;
	if (!fresh && !backoff) {
		r = refresh(m, now_mono, now_wall, ret_err);
		fresh = r == 0;
	}
	if (m->text != NULL) {
		copy = strdup(m->text);
		*ret_stale = !fresh;
		*ret_fetched_wall = m->fetched_wall;
		r = 0;
		if (copy == NULL) {
			fail(ret_err, KOMERCE_E_NOMEM, "out of memory");
			r = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&m->mu);
	*ret_text = copy;
	return r;
}
