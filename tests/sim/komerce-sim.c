/* komerce-sim: a Komerce Payment API simulator for tests and the quick start. It owns an
 * in-memory payment table, the API endpoints (methods, create, status, cancel) under
 * /user/api/v1/user/... and /api/v1/user/..., signed callbacks sent by one worker thread, fault
 * injection and statistics under /_sim/. libmicrohttpd runs one thread per connection; every
 * shared structure is guarded by sim.lock. Independent of src/: it re-implements the rules.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SIM_MAX_PAYMENTS      200000
#define SIM_MAX_BODY	      (64 * 1024)
#define SIM_MAX_JOBS	      100000
#define SIM_BUCKETS	      (1u << 18)
#define SIM_POLL_WINDOW_MS    3000
#define SIM_CB_ATTEMPTS	      5
#define SIM_CB_TIMEOUT_MS     5000
#define SIM_REORDER_HOLD_MS   300
#define SIM_MIN_AMOUNT	      10000LL
#define SIM_MAX_AMOUNT	      1000000000000LL
#define SIM_QRIS_MAX_AMOUNT   10000000LL
#define SIM_VA_MAX_AMOUNT     999999999999LL
#define SIM_VA_DEFAULT_EXPIRY 86400LL
#define SIM_QRIS_EXPIRY	      300LL
#define SIM_MAX_POLL_LOG      1000000

enum sim_status { SIM_PENDING, SIM_PAID, SIM_EXPIRED, SIM_CANCELED };
static const char *const sim_status_name[] = {"PENDING", "PAID", "EXPIRED", "CANCELED"};

/* The banks the methods endpoint lists, with the prefix of their VA numbers. */
static const struct {
	const char *code;
	const char *name;
	const char *va_prefix;
} sim_banks[] = {
	{"BCA", "Bank Central Asia", "39358"},	   {"BNI", "Bank Negara Indonesia", "8808"},
	{"BRI", "Bank Rakyat Indonesia", "88810"}, {"MANDIRI", "Bank Mandiri", "89608"},
	{"PERMATA", "Bank Permata", "8625"},	   {"CIMB", "CIMB Niaga", "5919"},
	{"BSI", "Bank Syariah Indonesia", "9347"},
};

struct sim_payment {
	struct sim_payment *next; /* hash chain */
	char *id;
	char *order_id;
	char *callback_url; /* NULL: no callbacks */
	char *callback_key;
	char *qr_string;
	char payment_type[16];
	char channel_code[16];
	char va_number[24];
	long long amount;
	enum sim_status status;
	long long created_ms, expires_ms, paid_ms, updated_ms; /* wall clock */
	long polls;
	long long last_poll_mono;	/* 0: never polled */
	long long min_poll_interval_ms; /* -1: fewer than two polls */
	long long last_served_mono;	/* rate limit window start, 0: none */
	long callbacks;			/* callbacks delivered (2xx) */
};

struct sim_job {
	struct sim_job *next;
	char *url;
	char *key;
	char *body;
	char *payment_id;
	int attempt;
	long long due_mono;
	unsigned long long seq;
	unsigned long generation;
};

struct sim_autopay {
	struct sim_autopay *next;
	char *payment_id;
	long long due_ms;
};

struct sim_config {
	bool drop_callbacks;
	long callback_delay_ms;
	long duplicate_callbacks;
	bool reorder;
	long fail_status;
	long fail_count;
	long rate_limit_burst;
	long slow_ms;
	long reset_connections;
	int key_field; /* enum sim_key_field: the create field the server reads the key from */
};

/* Komerce's API document spells the create field callback_API_KEY, its endpoint page
 * callback_api_key: a server may read either one only. */
enum sim_key_field { SIM_KEY_ANY, SIM_KEY_LOWER, SIM_KEY_UPPER };
static const char *const sim_key_field_name[] = {"any", "callback_api_key", "callback_API_KEY"};

/* One status request as it arrived (the polls log, GET /_sim/polls). */
struct sim_poll {
	char *payment_id;
	long long at_mono;
};

struct sim_request {
	char *body;
	size_t len;
	bool too_big;
	long long start_mono;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* worker and sleeping handlers; CLOCK_MONOTONIC */
	bool stopping;

	char *api_key;
	long latency_ms;
	long auto_pay_after_s;
	bool quiet;
	char public_base[96]; /* http://HOST:PORT, for payment_url */

	struct sim_payment **buckets;
	size_t count;
	struct sim_autopay *ap_head, *ap_tail;
	struct sim_job *jobs;
	size_t njobs;
	unsigned long long job_seq;
	long long last_enqueue_mono;
	unsigned long generation;

	struct sim_poll *polls;
	size_t npolls, cap_polls;

	long long requests, status_requests, rate_limited;
	long long callbacks_sent, callbacks_failed, callbacks_abandoned, callbacks_dropped;
	struct sim_config cfg;
} sim = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- small helpers ------------------------------------------------------------------------ */

static long long sim_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static long long sim_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

__attribute__((format(printf, 2, 3))) static void sim_log(int prio, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (sim.quiet && prio > 3)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "<%d>komerce-sim: %s\n", prio, line);
}

static char *sim_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);

	if (d)
		memcpy(d, s, n);
	return d;
}

/* Copies user-controlled text for a log line: printable ASCII only, bounded. */
static void sim_printable(char *dst, size_t n, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < n; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
	dst[i] = '\0';
}

static void sim_iso8601(long long ms, char *buf, size_t n)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, n, "%s.%03lldZ", base, ms % 1000);
}

static void sim_random_hex(char *out, size_t nbytes)
{
	unsigned char raw[32];

	if (nbytes > sizeof(raw))
		nbytes = sizeof(raw);
	if (RAND_bytes(raw, (int)nbytes) != 1) {
		for (size_t i = 0; i < nbytes; i++)
			raw[i] = (unsigned char)rand();
	}
	for (size_t i = 0; i < nbytes; i++)
		snprintf(out + 2 * i, 3, "%02X", raw[i]);
}

static void sim_random_digits(char *out, size_t n)
{
	unsigned char raw[32];

	if (n > sizeof(raw))
		n = sizeof(raw);
	if (RAND_bytes(raw, (int)n) != 1) {
		for (size_t i = 0; i < n; i++)
			raw[i] = (unsigned char)rand();
	}
	for (size_t i = 0; i < n; i++)
		out[i] = (char)('0' + raw[i] % 10);
	out[n] = '\0';
}

/* Decodes %XX; refuses malformed escapes and NUL bytes. */
static int sim_url_decode(const char *in, char *out, size_t n)
{
	size_t o = 0;

	for (; *in; in++) {
		int c = (unsigned char)*in;

		if (c == '%') {
			if (!isxdigit((unsigned char)in[1]) || !isxdigit((unsigned char)in[2]))
				return -EINVAL;
			char hex[3] = {in[1], in[2], '\0'};

			c = (int)strtol(hex, NULL, 16);
			in += 2;
			if (c == 0)
				return -EINVAL;
		}
		if (o + 1 >= n)
			return -ENAMETOOLONG;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

static bool sim_has_control(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	}
	return false;
}

static bool sim_const_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = (unsigned char)(la != lb);

	for (size_t i = 0; i < la; i++)
		d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
	return d == 0;
}

static void sim_sleep_ms(long ms)
{
	struct timespec ts;
	long long deadline;

	if (ms <= 0)
		return;
	deadline = sim_mono_ms() + ms;
	ts.tv_sec = deadline / 1000;
	ts.tv_nsec = (deadline % 1000) * 1000000;
	pthread_mutex_lock(&sim.lock);
	while (!sim.stopping && sim_mono_ms() < deadline) {
		if (pthread_cond_timedwait(&sim.wake, &sim.lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&sim.lock);
}

/* ---- payment table (callers hold sim.lock) ------------------------------------------------ */

static uint32_t sim_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (SIM_BUCKETS - 1);
}

static struct sim_payment *sim_find(const char *id)
{
	struct sim_payment *p;

	for (p = sim.buckets[sim_hash(id)]; p; p = p->next) {
		if (strcmp(p->id, id) == 0)
			return p;
	}
	return NULL;
}

static void sim_payment_free(struct sim_payment *p)
{
	if (!p)
		return;
	free(p->id);
	free(p->order_id);
	free(p->callback_url);
	if (p->callback_key) {
		memset(p->callback_key, 0, strlen(p->callback_key));
		free(p->callback_key);
	}
	free(p->qr_string);
	free(p);
}

static void sim_job_free(struct sim_job *j)
{
	if (!j)
		return;
	free(j->url);
	free(j->key);
	free(j->body);
	free(j->payment_id);
	free(j);
}

static void sim_clear_polls(void)
{
	for (size_t i = 0; i < sim.npolls; i++)
		free(sim.polls[i].payment_id);
	sim.npolls = 0;
}

/* Frees payments, queued callbacks, the auto-pay queue and the polls log; the caller holds
 * the lock. */
static void sim_clear_all(void)
{
	for (size_t b = 0; b < SIM_BUCKETS; b++) {
		struct sim_payment *p = sim.buckets[b], *next;

		for (; p; p = next) {
			next = p->next;
			sim_payment_free(p);
		}
		sim.buckets[b] = NULL;
	}
	sim.count = 0;
	while (sim.jobs) {
		struct sim_job *j = sim.jobs;

		sim.jobs = j->next;
		sim_job_free(j);
	}
	sim.njobs = 0;
	while (sim.ap_head) {
		struct sim_autopay *a = sim.ap_head;

		sim.ap_head = a->next;
		free(a->payment_id);
		free(a);
	}
	sim.ap_tail = NULL;
	sim_clear_polls();
}

/* ---- callbacks ---------------------------------------------------------------------------- */

static char *sim_callback_body(const struct sim_payment *p)
{
	char when[40];
	cJSON *o = cJSON_CreateObject();
	char *body;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "payment_id", p->id);
	cJSON_AddStringToObject(o, "order_id", p->order_id);
	cJSON_AddStringToObject(o, "status", sim_status_name[p->status]);
	cJSON_AddNumberToObject(o, "amount", (double)p->amount);
	cJSON_AddStringToObject(o, "payment_type", p->payment_type);
	cJSON_AddStringToObject(o, "channel_code", p->channel_code);
	if (strcmp(p->payment_type, "bank_transfer") == 0)
		cJSON_AddStringToObject(o, "va_number", p->va_number);
	if (p->status == SIM_PAID) {
		sim_iso8601(p->paid_ms, when, sizeof(when));
		cJSON_AddStringToObject(o, "paid_at", when);
	}
	body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return body;
}

/* Queues the callback(s) for p's current status; the caller holds the lock. */
static void sim_queue_callback(const struct sim_payment *p)
{
	long copies = 1 + sim.cfg.duplicate_callbacks;
	long long due = sim_mono_ms() + sim.cfg.callback_delay_ms;
	char *body;

	if (!p->callback_url)
		return;
	if (sim.cfg.drop_callbacks) {
		sim.callbacks_dropped += copies;
		return;
	}
	body = sim_callback_body(p);
	if (!body) {
		sim.callbacks_dropped += copies;
		return;
	}
	for (long i = 0; i < copies; i++) {
		struct sim_job *j;

		if (sim.njobs >= SIM_MAX_JOBS) {
			sim.callbacks_dropped++;
			continue;
		}
		j = calloc(1, sizeof(*j));
		if (j) {
			j->url = sim_strdup(p->callback_url);
			j->key = sim_strdup(p->callback_key);
			j->body = sim_strdup(body);
			j->payment_id = sim_strdup(p->id);
		}
		if (!j || !j->url || !j->key || !j->body || !j->payment_id) {
			sim_job_free(j);
			sim.callbacks_dropped++;
			continue;
		}
		j->due_mono = due;
		j->seq = ++sim.job_seq;
		j->generation = sim.generation;
		j->next = sim.jobs;
		sim.jobs = j;
		sim.njobs++;
	}
	free(body);
	sim.last_enqueue_mono = sim_mono_ms();
	pthread_cond_broadcast(&sim.wake);
}

/* Moves p to a new status and queues its callback. Only PENDING moves unless force is set. */
static int sim_transition(struct sim_payment *p, enum sim_status to, bool force)
{
	long long now = sim_now_ms();

	if (p->status != SIM_PENDING && !force)
		return -EINVAL;
	p->status = to;
	p->updated_ms = now;
	if (to == SIM_PAID)
		p->paid_ms = now;
	sim_queue_callback(p);
	return 0;
}

/* A PENDING payment past its expiry becomes EXPIRED when it is read. */
static void sim_check_expiry(struct sim_payment *p)
{
	if (p->status == SIM_PENDING && sim_now_ms() >= p->expires_ms)
		sim_transition(p, SIM_EXPIRED, false);
}

/* The job to send now: FIFO by sequence. With reorder on, nothing leaves until no callback
 * was queued for SIM_REORDER_HOLD_MS, then the batch goes out newest first. */
static struct sim_job *sim_take_due_job(long long now, long long *next_due)
{
	struct sim_job **pp, **best = NULL;

	*next_due = -1;
	if (sim.cfg.reorder && sim.jobs && now - sim.last_enqueue_mono < SIM_REORDER_HOLD_MS) {
		*next_due = sim.last_enqueue_mono + SIM_REORDER_HOLD_MS;
		return NULL;
	}
	for (pp = &sim.jobs; *pp; pp = &(*pp)->next) {
		struct sim_job *j = *pp;

		if (j->due_mono > now) {
			if (*next_due < 0 || j->due_mono < *next_due)
				*next_due = j->due_mono;
			continue;
		}
		if (!best || (sim.cfg.reorder ? j->seq > (*best)->seq : j->seq < (*best)->seq))
			best = pp;
	}
	if (best) {
		struct sim_job *j = *best;

		*best = j->next;
		sim.njobs--;
		return j;
	}
	return NULL;
}

static size_t sim_discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void)ptr;
	(void)userdata;
	return size * nmemb;
}

/* POSTs one callback; returns the HTTP status, or 0 when no reply was received. */
static long sim_send_callback(CURL *curl, const struct sim_job *j, char *err, size_t errlen)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1], header[64 + 2 * EVP_MAX_MD_SIZE];
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *h = NULL;
	long status = 0;
	CURLcode rc;

	if (!HMAC(EVP_sha256(), j->key, (int)strlen(j->key), (const unsigned char *)j->body,
		  strlen(j->body), mac, &maclen)) {
		snprintf(err, errlen, "HMAC failed");
		return 0;
	}
	for (unsigned int i = 0; i < maclen; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	snprintf(header, sizeof(header), "X-Callback-Api-Key: %s", hex);
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, header);
	h = curl_slist_append(h, "Expect:");
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return 0;
	}
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, j->url);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, j->body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(j->body));
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)SIM_CB_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)SIM_CB_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sim_discard);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "komerce-sim");
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	rc = curl_easy_perform(curl);
	if (rc == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	else
		snprintf(err, errlen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(h);
	if (rc == CURLE_OK && (status < 200 || status > 299))
		snprintf(err, errlen, "HTTP %ld", status);
	return rc == CURLE_OK ? status : 0;
}

/* Marks due auto-pay payments PAID; the caller holds the lock. */
static long long sim_run_autopay(void)
{
	long long now = sim_now_ms();

	while (sim.ap_head && sim.ap_head->due_ms <= now) {
		struct sim_autopay *a = sim.ap_head;
		struct sim_payment *p = sim_find(a->payment_id);

		sim.ap_head = a->next;
		if (!sim.ap_head)
			sim.ap_tail = NULL;
		if (p) {
			sim_check_expiry(p);
			if (sim_transition(p, SIM_PAID, false) == 0)
				sim_log(6, "auto-paid payment_id=\"%s\"", p->id);
		}
		free(a->payment_id);
		free(a);
	}
	return sim.ap_head ? sim.ap_head->due_ms - now : -1;
}

/* The worker: auto-pay timer and callback sender, one callback at a time so that delivery
 * order is deterministic (and reorderable on purpose). */
static void *sim_worker(void *arg)
{
	CURL *curl = curl_easy_init();

	(void)arg;
	pthread_mutex_lock(&sim.lock);
	while (!sim.stopping) {
		long long now = sim_mono_ms(), next_due, ap_wait, wait = 1000;
		struct sim_job *j;

		ap_wait = sim_run_autopay();
		j = sim_take_due_job(now, &next_due);
		if (j) {
			char err[CURL_ERROR_SIZE + 16] = "";
			long status;

			pthread_mutex_unlock(&sim.lock);
			status = curl ? sim_send_callback(curl, j, err, sizeof(err)) : 0;
			pthread_mutex_lock(&sim.lock);
			if (j->generation != sim.generation) {
				sim_job_free(j); /* a reset happened meanwhile */
				continue;
			}
			if (status >= 200 && status <= 299) {
				struct sim_payment *p = sim_find(j->payment_id);

				sim.callbacks_sent++;
				if (p)
					p->callbacks++;
				sim_log(6, "callback delivered payment_id=\"%s\" attempt=%d",
					j->payment_id, j->attempt + 1);
				sim_job_free(j);
				continue;
			}
			sim.callbacks_failed++;
			j->attempt++;
			sim_log(4, "callback failed payment_id=\"%s\" attempt=%d error=\"%s\"",
				j->payment_id, j->attempt, err);
			if (j->attempt >= SIM_CB_ATTEMPTS) {
				sim.callbacks_abandoned++;
				sim_job_free(j);
				continue;
			}
			j->due_mono = sim_mono_ms() + (500LL << (j->attempt - 1));
			j->next = sim.jobs;
			sim.jobs = j;
			sim.njobs++;
			continue;
		}
		if (next_due >= 0 && next_due - now < wait)
			wait = next_due - now;
		if (ap_wait >= 0 && ap_wait < wait)
			wait = ap_wait;
		if (wait > 0) {
			long long deadline = now + wait;
			struct timespec ts = {.tv_sec = deadline / 1000,
					      .tv_nsec = (deadline % 1000) * 1000000};

			pthread_cond_timedwait(&sim.wake, &sim.lock, &ts);
		}
	}
	pthread_mutex_unlock(&sim.lock);
	if (curl)
		curl_easy_cleanup(curl);
	return NULL;
}

/* ---- create-request validation (an independent copy of the documented rules) -------------- */

static int sim_bank_index(const char *code)
{
	for (size_t i = 0; i < sizeof(sim_banks) / sizeof(sim_banks[0]); i++) {
		if (strcmp(sim_banks[i].code, code) == 0)
			return (int)i;
	}
	return -1;
}

static bool sim_is_int(const cJSON *v)
{
	double d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;

	/* no libm: an integral value survives the round trip through long long */
	return isfinite(d) && d >= -9e15 && d <= 9e15 && (double)(long long)d == d;
}

static bool sim_valid_email(const char *s)
{
	const char *at = strchr(s, '@');
	const char *dot;

	if (!at || at == s || strchr(at + 1, '@') || at[1] == '.' || strstr(at, ".."))
		return false;
	for (const char *c = s; *c; c++) {
		if ((unsigned char)*c <= ' ' || strchr(",<>\"()", *c))
			return false;
	}
	dot = strrchr(at, '.');
	return dot && dot[1] != '\0';
}

static bool sim_valid_url(const char *s)
{
	size_t skip;

	if (strncasecmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncasecmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return false;
	if (strlen(s) > 2048 || strchr(s, ' ') || sim_has_control(s))
		return false;
	return s[skip] != '\0' && !strchr("/:?#", s[skip]);
}

/* A required string field: NULL when fine, else the message. */
static const char *sim_need_string(const cJSON *v, size_t max)
{
	if (!v || cJSON_IsNull(v))
		return "is required";
	if (!cJSON_IsString(v))
		return "must be a string";
	if (!v->valuestring[0])
		return "must not be empty";
	if (strlen(v->valuestring) > max)
		return "is too long";
	if (sim_has_control(v->valuestring))
		return "must not contain control characters";
	return NULL;
}

/* The key for callbacks in a create request, read as the server configured reads it. */
static const cJSON *sim_key_of(const cJSON *req, int key_field)
{
	const cJSON *lower = cJSON_GetObjectItemCaseSensitive(req, "callback_api_key");
	const cJSON *upper = cJSON_GetObjectItemCaseSensitive(req, "callback_API_KEY");

	if (key_field == SIM_KEY_LOWER)
		return lower;
	if (key_field == SIM_KEY_UPPER)
		return upper;
	return lower && !cJSON_IsNull(lower) ? lower : upper;
}

/* Validates a create request; on failure writes "field: rule" into msg and returns -EINVAL.
 * test_hooks (POST /_sim/payments) relaxes expiry_duration to any value >= 1 s. */
static int sim_validate(const cJSON *req, bool test_hooks, int key_field, char *msg, size_t n)
{
	const cJSON *v, *c, *items;
	const char *why;
	long long amount, total = 0;
	bool qris;
	int idx = 0;

#define SIM_FAIL(...)                          \
	do {                                   \
		snprintf(msg, n, __VA_ARGS__); \
		return -EINVAL;                \
	} while (0)

	if (!cJSON_IsObject(req))
		SIM_FAIL("body: must be a JSON object");
	v = cJSON_GetObjectItemCaseSensitive(req, "order_id");
	why = sim_need_string(v, 100);
	if (why)
		SIM_FAIL("order_id: %s",
			 strcmp(why, "is too long") ? why : "must be at most 100 characters");

	v = cJSON_GetObjectItemCaseSensitive(req, "payment_type");
	why = sim_need_string(v, 32);
	if (why)
		SIM_FAIL("payment_type: %s", why);
	if (strcmp(v->valuestring, "qris") && strcmp(v->valuestring, "bank_transfer"))
		SIM_FAIL("payment_type: must be bank_transfer or qris");
	qris = !strcmp(v->valuestring, "qris");

	if (!qris) {
		v = cJSON_GetObjectItemCaseSensitive(req, "channel_code");
		why = sim_need_string(v, 31);
		if (why)
			SIM_FAIL("channel_code: %s", strcmp(why, "is required")
							     ? why
							     : "is required for bank_transfer");
		if (sim_bank_index(v->valuestring) < 0)
			SIM_FAIL("channel_code: is not a supported bank code");
	}

	v = cJSON_GetObjectItemCaseSensitive(req, "amount");
	if (!v || cJSON_IsNull(v))
		SIM_FAIL("amount: is required");
	if (!sim_is_int(v))
		SIM_FAIL("amount: must be an integer");
	amount = (long long)v->valuedouble;
	if (amount < SIM_MIN_AMOUNT)
		SIM_FAIL("amount: must be at least %lld", SIM_MIN_AMOUNT);
	if (amount > SIM_MAX_AMOUNT)
		SIM_FAIL("amount: must be at most %lld", SIM_MAX_AMOUNT);
	if (qris && amount > SIM_QRIS_MAX_AMOUNT)
		SIM_FAIL("amount: must be at most %lld for qris", SIM_QRIS_MAX_AMOUNT);
	if (!qris && amount > SIM_VA_MAX_AMOUNT)
		SIM_FAIL("amount: must be at most %lld for this channel", SIM_VA_MAX_AMOUNT);

	c = cJSON_GetObjectItemCaseSensitive(req, "customer");
	if (!c || cJSON_IsNull(c))
		SIM_FAIL("customer: is required");
	if (!cJSON_IsObject(c))
		SIM_FAIL("customer: must be an object");
	why = sim_need_string(cJSON_GetObjectItemCaseSensitive(c, "name"), 255);
	if (why)
		SIM_FAIL("customer.name: %s", why);
	v = cJSON_GetObjectItemCaseSensitive(c, "email");
	why = sim_need_string(v, 254);
	if (why)
		SIM_FAIL("customer.email: %s", why);
	if (!sim_valid_email(v->valuestring))
		SIM_FAIL("customer.email: must be a valid email address");
	why = sim_need_string(cJSON_GetObjectItemCaseSensitive(c, "phone"), 32);
	if (why)
		SIM_FAIL("customer.phone: %s", why);

	items = cJSON_GetObjectItemCaseSensitive(req, "items");
	if (items && !cJSON_IsNull(items)) {
		const cJSON *it;

		if (!cJSON_IsArray(items))
			SIM_FAIL("items: must be an array");
		if (cJSON_GetArraySize(items) < 1)
			SIM_FAIL("items: must not be empty when given");
		if (cJSON_GetArraySize(items) > 1000)
			SIM_FAIL("items: must have at most 1000 entries");
		cJSON_ArrayForEach(it, items)
		{
			const cJSON *q, *pr;

			if (!cJSON_IsObject(it))
				SIM_FAIL("items[%d]: must be an object", idx);
			why = sim_need_string(cJSON_GetObjectItemCaseSensitive(it, "name"), 255);
			if (why)
				SIM_FAIL("items[%d].name: %s", idx, why);
			q = cJSON_GetObjectItemCaseSensitive(it, "quantity");
			if (!q)
				SIM_FAIL("items[%d].quantity: is required", idx);
			if (!sim_is_int(q))
				SIM_FAIL("items[%d].quantity: must be an integer", idx);
			if (q->valuedouble < 1 || q->valuedouble > 1000000)
				SIM_FAIL("items[%d].quantity: must be between 1 and 1000000", idx);
			pr = cJSON_GetObjectItemCaseSensitive(it, "price");
			if (!pr)
				SIM_FAIL("items[%d].price: is required", idx);
			if (!sim_is_int(pr))
				SIM_FAIL("items[%d].price: must be an integer", idx);
			if (pr->valuedouble < 0 || pr->valuedouble > (double)SIM_MAX_AMOUNT)
				SIM_FAIL("items[%d].price: must not be negative or above %lld", idx,
					 SIM_MAX_AMOUNT);
			total += (long long)q->valuedouble * (long long)pr->valuedouble;
			if (total > SIM_MAX_AMOUNT * 10)
				break;
			idx++;
		}
		if (total != amount)
			SIM_FAIL("items: sum of quantity * price (%lld) must equal amount (%lld)",
				 total, amount);
	}

	v = cJSON_GetObjectItemCaseSensitive(req, "expiry_duration");
	if (v && !cJSON_IsNull(v)) {
		long long secs;

		if (!sim_is_int(v))
			SIM_FAIL("expiry_duration: must be an integer");
		secs = (long long)v->valuedouble;
		if (test_hooks) {
			if (secs < 1 || secs > 30LL * 86400)
				SIM_FAIL("expiry_duration: must be between 1 and 2592000 seconds");
		} else if (qris && secs != SIM_QRIS_EXPIRY) {
			SIM_FAIL("expiry_duration: is fixed at 300 seconds for qris");
		} else if (!qris && secs < 3600) {
			SIM_FAIL("expiry_duration: must be at least 3600 seconds");
		} else if (!qris && secs > 30LL * 86400) {
			SIM_FAIL("expiry_duration: must be at most 2592000 seconds (30 days)");
		}
	}

	v = cJSON_GetObjectItemCaseSensitive(req, "callback_url");
	if (v && !cJSON_IsNull(v)) {
		const cJSON *k = cJSON_GetObjectItemCaseSensitive(req, "callback_api_key");

		if (!cJSON_IsString(v) || !sim_valid_url(v->valuestring))
			SIM_FAIL("callback_url: must be an http or https URL");
		k = sim_key_of(req, key_field);
		if (!k || cJSON_IsNull(k))
			SIM_FAIL("%s: is required when callback_url is given",
				 key_field == SIM_KEY_UPPER ? "callback_API_KEY"
							    : "callback_api_key");
		why = sim_need_string(k, 256);
		if (why)
			SIM_FAIL("callback_api_key: %s", why);
	}
#undef SIM_FAIL
	return 0;
}

/* ---- building payments and replies -------------------------------------------------------- */

static void sim_tlv(char *buf, size_t n, const char *tag, const char *value)
{
	size_t used = strlen(buf);

	snprintf(buf + used, n - used, "%s%02zu%s", tag, strlen(value), value);
}

static unsigned sim_crc16(const char *s)
{
	unsigned crc = 0xFFFF;

	for (; *s; s++) {
		crc ^= (unsigned)(unsigned char)*s << 8;
		for (int i = 0; i < 8; i++)
			crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xFFFF : (crc << 1) & 0xFFFF;
	}
	return crc;
}

/* A dynamic QRIS payload in EMVCo TLV form with a valid CRC, good enough for QR renderers. */
static char *sim_qr_string(const char *id, long long amount)
{
	char buf[512] = "", amt[32], ref[32], merchant[64] = "", extra[64] = "";

	snprintf(amt, sizeof(amt), "%lld", amount);
	snprintf(ref, sizeof(ref), "%.25s", id);
	sim_tlv(merchant, sizeof(merchant), "00", "ID.KOMERCE.SIM");
	sim_tlv(merchant, sizeof(merchant), "01", "936000000000000001");
	sim_tlv(extra, sizeof(extra), "05", ref);
	sim_tlv(buf, sizeof(buf), "00", "01");
	sim_tlv(buf, sizeof(buf), "01", "12");
	sim_tlv(buf, sizeof(buf), "26", merchant);
	sim_tlv(buf, sizeof(buf), "52", "5999");
	sim_tlv(buf, sizeof(buf), "53", "360");
	sim_tlv(buf, sizeof(buf), "54", amt);
	sim_tlv(buf, sizeof(buf), "58", "ID");
	sim_tlv(buf, sizeof(buf), "59", "KOMERCE SIM");
	sim_tlv(buf, sizeof(buf), "60", "JAKARTA");
	sim_tlv(buf, sizeof(buf), "62", extra);
	snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "6304");
	snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%04X", sim_crc16(buf));
	return sim_strdup(buf);
}

/* The payment as the API shows it; internal adds the simulator's bookkeeping. */
static cJSON *sim_payment_json(const struct sim_payment *p, bool internal)
{
	char when[40], url[512], esc[300];
	cJSON *o = cJSON_CreateObject();
	size_t e = 0;

	if (!o)
		return NULL;
	for (const char *s = p->id; *s && e + 4 < sizeof(esc); s++) {
		if (isalnum((unsigned char)*s) || strchr("-_.~", *s))
			esc[e++] = *s;
		else
			e += (size_t)snprintf(esc + e, sizeof(esc) - e, "%%%02X",
					      (unsigned char)*s);
	}
	esc[e] = '\0';
	cJSON_AddStringToObject(o, "payment_id", p->id);
	cJSON_AddStringToObject(o, "order_id", p->order_id);
	cJSON_AddStringToObject(o, "payment_type", p->payment_type);
	cJSON_AddStringToObject(o, "channel_code", p->channel_code);
	cJSON_AddNumberToObject(o, "amount", (double)p->amount);
	cJSON_AddStringToObject(o, "status", sim_status_name[p->status]);
	if (p->qr_string)
		cJSON_AddStringToObject(o, "qr_string", p->qr_string);
	else
		cJSON_AddStringToObject(o, "va_number", p->va_number);
	snprintf(url, sizeof(url), "%s/pay/%s", sim.public_base, esc);
	cJSON_AddStringToObject(o, "payment_url", url);
	sim_iso8601(p->created_ms, when, sizeof(when));
	cJSON_AddStringToObject(o, "created_at", when);
	sim_iso8601(p->expires_ms, when, sizeof(when));
	cJSON_AddStringToObject(o, "expired_at", when);
	if (p->status == SIM_PAID) {
		sim_iso8601(p->paid_ms, when, sizeof(when));
		cJSON_AddStringToObject(o, "paid_at", when);
	}
	sim_iso8601(p->updated_ms, when, sizeof(when));
	cJSON_AddStringToObject(o, "updated_at", when);
	if (internal) {
		if (p->callback_url)
			cJSON_AddStringToObject(o, "callback_url", p->callback_url);
		else
			cJSON_AddNullToObject(o, "callback_url");
		cJSON_AddNumberToObject(o, "polls", (double)p->polls);
		if (p->min_poll_interval_ms >= 0)
			cJSON_AddNumberToObject(o, "min_poll_interval_ms",
						(double)p->min_poll_interval_ms);
		else
			cJSON_AddNullToObject(o, "min_poll_interval_ms");
		cJSON_AddNumberToObject(o, "callbacks", (double)p->callbacks);
	}
	return o;
}

/* Creates and stores a payment from a validated request; the caller holds the lock. */
static int sim_create(const cJSON *req, const char *forced_id, struct sim_payment **ret)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, "expiry_duration");
	const cJSON *url = cJSON_GetObjectItemCaseSensitive(req, "callback_url");
	const cJSON *key = sim_key_of(req, sim.cfg.key_field);
	struct sim_payment *p;
	char id[160], hex[8], digits[24];
	long long now = sim_now_ms(), expiry;
	uint32_t b;

	if (sim.count >= SIM_MAX_PAYMENTS)
		return -ENOSPC;
	if (forced_id) {
		if (sim_find(forced_id))
			return -EEXIST;
		snprintf(id, sizeof(id), "%s", forced_id);
	} else {
		do {
			sim_random_hex(hex, 3);
			snprintf(id, sizeof(id), "KOMPAY-%lld-%s", now / 1000, hex);
		} while (sim_find(id));
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->id = sim_strdup(id);
	p->order_id = sim_strdup(cJSON_GetObjectItemCaseSensitive(req, "order_id")->valuestring);
	snprintf(p->payment_type, sizeof(p->payment_type), "%s",
		 cJSON_GetObjectItemCaseSensitive(req, "payment_type")->valuestring);
	p->amount = (long long)cJSON_GetObjectItemCaseSensitive(req, "amount")->valuedouble;
	if (strcmp(p->payment_type, "qris") == 0) {
		snprintf(p->channel_code, sizeof(p->channel_code), "QRIS");
		expiry = SIM_QRIS_EXPIRY;
		p->qr_string = sim_qr_string(id, p->amount);
	} else {
		int bank = sim_bank_index(
			cJSON_GetObjectItemCaseSensitive(req, "channel_code")->valuestring);
		size_t plen = strlen(sim_banks[bank].va_prefix);

		snprintf(p->channel_code, sizeof(p->channel_code), "%s", sim_banks[bank].code);
		sim_random_digits(digits, 16 - plen);
		snprintf(p->va_number, sizeof(p->va_number), "%s%s", sim_banks[bank].va_prefix,
			 digits);
		expiry = SIM_VA_DEFAULT_EXPIRY;
	}
	if (v && cJSON_IsNumber(v))
		expiry = (long long)v->valuedouble;
	if (cJSON_IsString(url) && cJSON_IsString(key)) {
		p->callback_url = sim_strdup(url->valuestring);
		p->callback_key = sim_strdup(key->valuestring);
		if (!p->callback_url || !p->callback_key) {
			sim_payment_free(p);
			return -ENOMEM;
		}
	}
	if (!p->id || !p->order_id || (strcmp(p->payment_type, "qris") == 0 && !p->qr_string)) {
		sim_payment_free(p);
		return -ENOMEM;
	}
	p->status = SIM_PENDING;
	p->created_ms = p->updated_ms = now;
	p->expires_ms = now + expiry * 1000;
	p->min_poll_interval_ms = -1;
	b = sim_hash(p->id);
	p->next = sim.buckets[b];
	sim.buckets[b] = p;
	sim.count++;

	if (sim.auto_pay_after_s > 0) {
		struct sim_autopay *a = calloc(1, sizeof(*a));

		if (a)
			a->payment_id = sim_strdup(p->id);
		if (a && a->payment_id) {
			a->due_ms = now + sim.auto_pay_after_s * 1000;
			if (sim.ap_tail)
				sim.ap_tail->next = a;
			else
				sim.ap_head = a;
			sim.ap_tail = a;
			pthread_cond_broadcast(&sim.wake);
		} else {
			free(a);
		}
	}
	*ret = p;
	return 0;
}

static cJSON *sim_config_json(void)
{
	const struct sim_config *c = &sim.cfg;
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddBoolToObject(o, "drop_callbacks", c->drop_callbacks);
	cJSON_AddNumberToObject(o, "callback_delay_ms", (double)c->callback_delay_ms);
	cJSON_AddNumberToObject(o, "duplicate_callbacks", (double)c->duplicate_callbacks);
	cJSON_AddBoolToObject(o, "reorder", c->reorder);
	cJSON_AddNumberToObject(o, "fail_status", (double)c->fail_status);
	cJSON_AddNumberToObject(o, "fail_count", (double)c->fail_count);
	cJSON_AddNumberToObject(o, "rate_limit_burst", (double)c->rate_limit_burst);
	cJSON_AddNumberToObject(o, "slow_ms", (double)c->slow_ms);
	cJSON_AddNumberToObject(o, "reset_connections", (double)c->reset_connections);
	cJSON_AddStringToObject(o, "callback_key_field", sim_key_field_name[c->key_field]);
	return o;
}

static cJSON *sim_stats_json(void)
{
	cJSON *o = cJSON_CreateObject(), *pays;
	long long min = -1;

	if (!o)
		return NULL;
	cJSON_AddNumberToObject(o, "requests", (double)sim.requests);
	cJSON_AddNumberToObject(o, "status_requests", (double)sim.status_requests);
	cJSON_AddNumberToObject(o, "rate_limited", (double)sim.rate_limited);
	cJSON_AddNumberToObject(o, "callbacks_sent", (double)sim.callbacks_sent);
	cJSON_AddNumberToObject(o, "callbacks_failed", (double)sim.callbacks_failed);
	cJSON_AddNumberToObject(o, "callbacks_abandoned", (double)sim.callbacks_abandoned);
	cJSON_AddNumberToObject(o, "callbacks_dropped", (double)sim.callbacks_dropped);
	cJSON_AddNumberToObject(o, "callbacks_queued", (double)sim.njobs);
	pays = cJSON_AddObjectToObject(o, "payments");
	for (size_t b = 0; pays && b < SIM_BUCKETS; b++) {
		for (const struct sim_payment *p = sim.buckets[b]; p; p = p->next) {
			cJSON *e = cJSON_CreateObject();

			if (!e)
				continue;
			cJSON_AddStringToObject(e, "status", sim_status_name[p->status]);
			cJSON_AddNumberToObject(e, "polls", (double)p->polls);
			if (p->min_poll_interval_ms >= 0)
				cJSON_AddNumberToObject(e, "min_poll_interval_ms",
							(double)p->min_poll_interval_ms);
			else
				cJSON_AddNullToObject(e, "min_poll_interval_ms");
			cJSON_AddNumberToObject(e, "callbacks", (double)p->callbacks);
			cJSON_AddItemToObject(pays, p->id, e);
			if (p->min_poll_interval_ms >= 0 &&
			    (min < 0 || p->min_poll_interval_ms < min))
				min = p->min_poll_interval_ms;
		}
	}
	if (min >= 0)
		cJSON_AddNumberToObject(o, "min_poll_interval_ms", (double)min);
	else
		cJSON_AddNullToObject(o, "min_poll_interval_ms");
	return o;
}

/* ---- HTTP plumbing ------------------------------------------------------------------------ */

static enum MHD_Result sim_send(struct MHD_Connection *c, const char *method, const char *url,
				unsigned status, char *body, const char *ctype, long retry_after)
{
	struct MHD_Response *r;
	enum MHD_Result ret;
	char shown[200], ra[24];

	if (!body) {
		status = 500;
		body = sim_strdup("{\"meta\":{\"message\":\"out of memory\",\"code\":500,"
				  "\"status\":\"error\"},\"data\":null}");
		if (!body)
			return MHD_NO;
	}
	r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", ctype);
	if (retry_after > 0) {
		snprintf(ra, sizeof(ra), "%ld", retry_after);
		MHD_add_response_header(r, "Retry-After", ra);
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	sim_printable(shown, sizeof(shown), url);
	sim_log(6, "%s %s -> %u", method, shown, status);
	return ret;
}

/* The API envelope {"meta":{message,code,status},"data":data}; consumes data. */
static enum MHD_Result sim_envelope(struct MHD_Connection *c, const char *method, const char *url,
				    unsigned status, const char *message, cJSON *data,
				    long retry_after)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *meta = root ? cJSON_AddObjectToObject(root, "meta") : NULL;
	char *body = NULL;

	if (meta) {
		cJSON_AddStringToObject(meta, "message", message);
		cJSON_AddNumberToObject(meta, "code", status);
		cJSON_AddStringToObject(meta, "status",
					status >= 200 && status <= 299 ? "success" : "error");
		if (data)
			cJSON_AddItemToObject(root, "data", data);
		else
			cJSON_AddNullToObject(root, "data");
		data = NULL;
		body = cJSON_PrintUnformatted(root);
	}
	cJSON_Delete(data);
	cJSON_Delete(root);
	return sim_send(c, method, url, status, body, "application/json", retry_after);
}

/* Control endpoints answer bare JSON; consumes obj. */
static enum MHD_Result sim_json(struct MHD_Connection *c, const char *method, const char *url,
				unsigned status, cJSON *obj)
{
	char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
	char *body = NULL;

	cJSON_Delete(obj);
	/* A trailing newline, so that a reply printed by curl ends its line. */
	if (text != NULL && asprintf(&body, "%s\n", text) < 0)
		body = NULL;
	free(text);
	return sim_send(c, method, url, status, body, "application/json", 0);
}

static enum MHD_Result sim_error(struct MHD_Connection *c, const char *method, const char *url,
				 unsigned status, const char *message)
{
	cJSON *o = cJSON_CreateObject();

	if (o)
		cJSON_AddStringToObject(o, "error", message);
	return sim_json(c, method, url, status, o);
}

enum sim_route {
	SIM_R_NONE,
	SIM_R_METHODS,
	SIM_R_CREATE,
	SIM_R_STATUS,
	SIM_R_CANCEL,
};

static const char *sim_api_path(const char *url)
{
	if (strncmp(url, "/user/api/v1/user/", 18) == 0)
		return url + 5;
	if (strncmp(url, "/api/v1/user/", 13) == 0)
		return url;
	return NULL;
}

static enum sim_route sim_route_of(const char *url, const char **status_id)
{
	const char *p = sim_api_path(url);

	*status_id = NULL;
	if (!p)
		return SIM_R_NONE;
	if (strcmp(p, "/api/v1/user/methods") == 0)
		return SIM_R_METHODS;
	if (strcmp(p, "/api/v1/user/payment/create") == 0)
		return SIM_R_CREATE;
	if (strcmp(p, "/api/v1/user/payment/cancel") == 0)
		return SIM_R_CANCEL;
	if (strncmp(p, "/api/v1/user/payment/status/", 28) == 0 && p[28]) {
		*status_id = p + 28;
		return SIM_R_STATUS;
	}
	return SIM_R_NONE;
}

/* Appends a status request to the polls log (bounded); the caller holds the lock. */
static void sim_log_poll(const char *id, long long now)
{
	if (sim.npolls == sim.cap_polls) {
		size_t cap = sim.cap_polls ? 2 * sim.cap_polls : 1024;
		struct sim_poll *n;

		if (cap > SIM_MAX_POLL_LOG)
			return;
		n = realloc(sim.polls, cap * sizeof(*n));
		if (!n)
			return;
		sim.polls = n;
		sim.cap_polls = cap;
	}
	sim.polls[sim.npolls].payment_id = sim_strdup(id);
	if (!sim.polls[sim.npolls].payment_id)
		return;
	sim.polls[sim.npolls++].at_mono = now;
}

/* GET /_sim/polls: every status request in arrival order; at_ms on a monotonic clock. */
static cJSON *sim_polls_json(void)
{
	cJSON *o = cJSON_CreateObject(), *arr;

	if (!o)
		return NULL;
	cJSON_AddNumberToObject(o, "count", (double)sim.npolls);
	arr = cJSON_AddArrayToObject(o, "polls");
	for (size_t i = 0; arr && i < sim.npolls; i++) {
		cJSON *e = cJSON_CreateObject();

		if (!e)
			break;
		cJSON_AddStringToObject(e, "payment_id", sim.polls[i].payment_id);
		cJSON_AddNumberToObject(e, "at_ms", (double)sim.polls[i].at_mono);
		cJSON_AddItemToArray(arr, e);
	}
	return o;
}

/* Counts an API request the moment its headers arrive, so that requests the fault injection
 * answers (or resets) still count, and records the poll interval of status requests. */
static void sim_account(const char *url)
{
	const char *raw_id;
	char id[256];
	long long now = sim_mono_ms();
	struct sim_payment *p;

	sim.requests++;
	if (sim_route_of(url, &raw_id) != SIM_R_STATUS)
		return;
	sim.status_requests++;
	if (sim_url_decode(raw_id, id, sizeof(id)) < 0)
		return;
	sim_log_poll(id, now);
	p = sim_find(id);
	if (!p)
		return;
	if (p->last_poll_mono) {
		long long gap = now - p->last_poll_mono;

		if (p->min_poll_interval_ms < 0 || gap < p->min_poll_interval_ms)
			p->min_poll_interval_ms = gap;
	}
	p->last_poll_mono = now;
	p->polls++;
}

static cJSON *sim_methods_json(void)
{
	cJSON *arr = cJSON_CreateArray();
	char logo[128];

	for (size_t i = 0; arr && i < sizeof(sim_banks) / sizeof(sim_banks[0]); i++) {
		cJSON *m = cJSON_CreateObject();
		char lower[16];
		size_t j;

		if (!m)
			break;
		for (j = 0; sim_banks[i].code[j] && j + 1 < sizeof(lower); j++)
			lower[j] = (char)tolower((unsigned char)sim_banks[i].code[j]);
		lower[j] = '\0';
		snprintf(logo, sizeof(logo),
			 "https://storage.googleapis.com/komerce/assets/logo/%s.png", lower);
		cJSON_AddStringToObject(m, "payment_type", "va");
		cJSON_AddStringToObject(m, "display_name", sim_banks[i].name);
		cJSON_AddStringToObject(m, "bank_code", sim_banks[i].code);
		cJSON_AddStringToObject(m, "logo_url", logo);
		cJSON_AddNumberToObject(m, "min_amount", (double)SIM_MIN_AMOUNT);
		cJSON_AddNumberToObject(m, "max_amount", (double)SIM_VA_MAX_AMOUNT);
		cJSON_AddStringToObject(m, "currency", "IDR");
		cJSON_AddItemToArray(arr, m);
	}
	if (arr) {
		cJSON *q = cJSON_CreateObject();

		if (q) {
			cJSON_AddStringToObject(q, "payment_type", "qris");
			cJSON_AddStringToObject(q, "display_name", "QRIS");
			cJSON_AddStringToObject(q, "bank_code", "");
			cJSON_AddStringToObject(
				q, "logo_url",
				"https://storage.googleapis.com/komerce/assets/logo/qris.png");
			cJSON_AddNumberToObject(q, "min_amount", (double)SIM_MIN_AMOUNT);
			cJSON_AddNumberToObject(q, "max_amount", (double)SIM_QRIS_MAX_AMOUNT);
			cJSON_AddStringToObject(q, "currency", "IDR");
			cJSON_AddItemToArray(arr, q);
		}
	}
	return arr;
}

/* POST create, shared by the API (test_hooks false) and POST /_sim/payments (true). */
static enum MHD_Result sim_do_create(struct MHD_Connection *c, const char *method, const char *url,
				     const struct sim_request *rq, bool test_hooks)
{
	char msg[256];
	cJSON *req = rq->body ? cJSON_ParseWithLength(rq->body, rq->len) : NULL;
	const cJSON *forced = NULL;
	struct sim_payment *p = NULL;
	cJSON *data = NULL;
	int r, key_field;

	if (!req || !cJSON_IsObject(req)) {
		cJSON_Delete(req);
		return test_hooks ? sim_error(c, method, url, 400, "body: must be a JSON object")
				  : sim_envelope(c, method, url, 400, "body: must be a JSON object",
						 NULL, 0);
	}
	pthread_mutex_lock(&sim.lock);
	key_field = sim.cfg.key_field;
	pthread_mutex_unlock(&sim.lock);
	if (sim_validate(req, test_hooks, key_field, msg, sizeof(msg)) < 0) {
		cJSON_Delete(req);
		return test_hooks ? sim_error(c, method, url, 400, msg)
				  : sim_envelope(c, method, url, 400, msg, NULL, 0);
	}
	if (test_hooks) {
		forced = cJSON_GetObjectItemCaseSensitive(req, "payment_id");
		if (forced &&
		    (!cJSON_IsString(forced) || !forced->valuestring[0] ||
		     strlen(forced->valuestring) > 127 || sim_has_control(forced->valuestring))) {
			cJSON_Delete(req);
			return sim_error(c, method, url, 400,
					 "payment_id: must be a string of 1 to 127 characters");
		}
	}
	pthread_mutex_lock(&sim.lock);
	r = sim_create(req, forced ? forced->valuestring : NULL, &p);
	if (r == 0)
		data = sim_payment_json(p, test_hooks);
	pthread_mutex_unlock(&sim.lock);
	cJSON_Delete(req);
	if (r == -EEXIST)
		return sim_error(c, method, url, 409, "payment_id: already exists");
	if (r == -ENOSPC)
		return test_hooks ? sim_error(c, method, url, 503, "payment table is full")
				  : sim_envelope(c, method, url, 503, "payment table is full", NULL,
						 0);
	if (r < 0 || !data) {
		cJSON_Delete(data);
		return sim_envelope(c, method, url, 500, "out of memory", NULL, 0);
	}
	if (test_hooks)
		return sim_json(c, method, url, 200, data);
	return sim_envelope(c, method, url, 200, "success create payment", data, 0);
}

static enum MHD_Result sim_do_status(struct MHD_Connection *c, const char *method, const char *url,
				     const char *raw_id)
{
	char id[256];
	struct sim_payment *p;
	cJSON *data;
	long long now = sim_mono_ms(), wait;

	if (sim_url_decode(raw_id, id, sizeof(id)) < 0)
		return sim_envelope(c, method, url, 400, "payment_id: malformed", NULL, 0);
	pthread_mutex_lock(&sim.lock);
	p = sim_find(id);
	if (!p) {
		pthread_mutex_unlock(&sim.lock);
		return sim_envelope(c, method, url, 404, "payment not found", NULL, 0);
	}
	if (sim.cfg.rate_limit_burst > 0) {
		sim.cfg.rate_limit_burst--;
		sim.rate_limited++;
		pthread_mutex_unlock(&sim.lock);
		return sim_envelope(c, method, url, 429, "Too Many Requests", NULL,
				    SIM_POLL_WINDOW_MS / 1000);
	}
	if (p->last_served_mono && now - p->last_served_mono < SIM_POLL_WINDOW_MS) {
		wait = (SIM_POLL_WINDOW_MS - (now - p->last_served_mono) + 999) / 1000;
		sim.rate_limited++;
		pthread_mutex_unlock(&sim.lock);
		return sim_envelope(c, method, url, 429,
				    "Too Many Requests: at most one status request per payment "
				    "every 3 seconds",
				    NULL, wait > 0 ? wait : 1);
	}
	p->last_served_mono = now;
	sim_check_expiry(p);
	data = sim_payment_json(p, false);
	pthread_mutex_unlock(&sim.lock);
	return sim_envelope(c, method, url, 200, "success get payment status", data, 0);
}

static enum MHD_Result sim_do_cancel(struct MHD_Connection *c, const char *method, const char *url,
				     const struct sim_request *rq)
{
	cJSON *req = rq->body ? cJSON_ParseWithLength(rq->body, rq->len) : NULL;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "payment_id");
	struct sim_payment *p;
	char msg[256];
	cJSON *data;

	if (!cJSON_IsString(id) || !id->valuestring[0]) {
		cJSON_Delete(req);
		return sim_envelope(c, method, url, 400, "payment_id: is required", NULL, 0);
	}
	pthread_mutex_lock(&sim.lock);
	p = sim_find(id->valuestring);
	cJSON_Delete(req);
	if (!p) {
		pthread_mutex_unlock(&sim.lock);
		return sim_envelope(c, method, url, 404, "payment not found", NULL, 0);
	}
	sim_check_expiry(p);
	if (p->status != SIM_PENDING) {
		snprintf(msg, sizeof(msg), "payment_id: payment is %s and cannot be canceled",
			 sim_status_name[p->status]);
		pthread_mutex_unlock(&sim.lock);
		return sim_envelope(c, method, url, 400, msg, NULL, 0);
	}
	sim_transition(p, SIM_CANCELED, false);
	data = sim_payment_json(p, false);
	pthread_mutex_unlock(&sim.lock);
	return sim_envelope(c, method, url, 200, "success cancel payment", data, 0);
}

static enum MHD_Result sim_api(struct MHD_Connection *c, const char *method, const char *url,
			       const struct sim_request *rq)
{
	const char *raw_id, *key;
	enum sim_route route = sim_route_of(url, &raw_id);
	long fail = 0, delay;

	pthread_mutex_lock(&sim.lock);
	delay = sim.latency_ms + sim.cfg.slow_ms;
	pthread_mutex_unlock(&sim.lock);
	sim_sleep_ms(delay);

	pthread_mutex_lock(&sim.lock);
	if (sim.cfg.fail_count > 0 && sim.cfg.fail_status > 0) {
		sim.cfg.fail_count--;
		fail = sim.cfg.fail_status;
	}
	pthread_mutex_unlock(&sim.lock);
	if (fail)
		return sim_envelope(c, method, url, (unsigned)fail, "simulated failure", NULL,
				    fail == 429 || fail == 503 ? 1 : 0);
	if (rq->too_big)
		return sim_envelope(c, method, url, 413, "body too large", NULL, 0);

	key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
	if (!key || !sim_const_eq(key, sim.api_key))
		return sim_envelope(c, method, url, 401, "Unauthorized: invalid api key", NULL, 0);

	switch (route) {
	case SIM_R_METHODS:
		if (strcmp(method, "GET") != 0)
			break;
		return sim_envelope(c, method, url, 200, "success get payment methods",
				    sim_methods_json(), 0);
	case SIM_R_CREATE:
		if (strcmp(method, "POST") != 0)
			break;
		return sim_do_create(c, method, url, rq, false);
	case SIM_R_STATUS:
		if (strcmp(method, "GET") != 0)
			break;
		return sim_do_status(c, method, url, raw_id);
	case SIM_R_CANCEL:
		if (strcmp(method, "POST") != 0)
			break;
		return sim_do_cancel(c, method, url, rq);
	case SIM_R_NONE:
		return sim_envelope(c, method, url, 404, "endpoint not found", NULL, 0);
	}
	return sim_envelope(c, method, url, 405, "method not allowed", NULL, 0);
}

static long sim_cfg_number(const cJSON *v, long max, bool *bad)
{
	if (!sim_is_int(v) || v->valuedouble < 0 || v->valuedouble > (double)max) {
		*bad = true;
		return 0;
	}
	return (long)v->valuedouble;
}

/* POST /_sim/config: validates every key first, then applies all of them. */
static enum MHD_Result sim_do_config(struct MHD_Connection *c, const char *method, const char *url,
				     const struct sim_request *rq)
{
	cJSON *req = rq->body ? cJSON_ParseWithLength(rq->body, rq->len) : NULL;
	struct sim_config next;
	const cJSON *v;
	char msg[160];
	cJSON *out;

	if (!cJSON_IsObject(req)) {
		cJSON_Delete(req);
		return sim_error(c, method, url, 400, "body: must be a JSON object");
	}
	pthread_mutex_lock(&sim.lock);
	next = sim.cfg;
	pthread_mutex_unlock(&sim.lock);
	cJSON_ArrayForEach(v, req)
	{
		bool bad = false;
		const char *k = v->string;

		if (strcmp(k, "drop_callbacks") == 0 || strcmp(k, "reorder") == 0) {
			if (!cJSON_IsBool(v))
				bad = true;
			else if (k[0] == 'd')
				next.drop_callbacks = cJSON_IsTrue(v);
			else
				next.reorder = cJSON_IsTrue(v);
		} else if (strcmp(k, "callback_delay_ms") == 0) {
			next.callback_delay_ms = sim_cfg_number(v, 600000, &bad);
		} else if (strcmp(k, "duplicate_callbacks") == 0) {
			next.duplicate_callbacks = sim_cfg_number(v, 100, &bad);
		} else if (strcmp(k, "fail_status") == 0) {
			next.fail_status = sim_cfg_number(v, 599, &bad);
			if (next.fail_status != 0 && next.fail_status < 100)
				bad = true;
		} else if (strcmp(k, "fail_count") == 0) {
			next.fail_count = sim_cfg_number(v, 1000000, &bad);
		} else if (strcmp(k, "rate_limit_burst") == 0) {
			next.rate_limit_burst = sim_cfg_number(v, 1000000, &bad);
		} else if (strcmp(k, "slow_ms") == 0) {
			next.slow_ms = sim_cfg_number(v, 600000, &bad);
		} else if (strcmp(k, "reset_connections") == 0) {
			next.reset_connections = sim_cfg_number(v, 1000000, &bad);
		} else if (strcmp(k, "callback_key_field") == 0) {
			bad = true;
			for (int i = SIM_KEY_ANY; i <= SIM_KEY_UPPER && cJSON_IsString(v); i++) {
				if (strcmp(v->valuestring, sim_key_field_name[i]) == 0) {
					next.key_field = i;
					bad = false;
				}
			}
		} else {
			snprintf(msg, sizeof(msg), "%.64s: unknown key", k);
			cJSON_Delete(req);
			return sim_error(c, method, url, 400, msg);
		}
		if (bad) {
			snprintf(msg, sizeof(msg), "%.64s: invalid value", k);
			cJSON_Delete(req);
			return sim_error(c, method, url, 400, msg);
		}
	}
	cJSON_Delete(req);
	pthread_mutex_lock(&sim.lock);
	sim.cfg = next;
	out = sim_config_json();
	pthread_cond_broadcast(&sim.wake);
	pthread_mutex_unlock(&sim.lock);
	return sim_json(c, method, url, 200, out);
}

/* /_sim/payments/{id}[/pay|/expire|/cancel] */
static enum MHD_Result sim_do_payment_action(struct MHD_Connection *c, const char *method,
					     const char *url, const char *rest)
{
	static const struct {
		const char *name;
		enum sim_status to;
	} actions[] = {{"pay", SIM_PAID}, {"expire", SIM_EXPIRED}, {"cancel", SIM_CANCELED}};
	const char *slash = strrchr(rest, '/'), *force;
	char raw[512], id[256], msg[200];
	struct sim_payment *p;
	int action = -1;
	cJSON *data;

	if (slash) {
		for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
			if (strcmp(slash + 1, actions[i].name) == 0)
				action = (int)i;
		}
	}
	if (action >= 0)
		snprintf(raw, sizeof(raw), "%.*s", (int)(slash - rest), rest);
	else
		snprintf(raw, sizeof(raw), "%s", rest);
	if (sim_url_decode(raw, id, sizeof(id)) < 0 || !id[0])
		return sim_error(c, method, url, 400, "payment_id: malformed");
	if ((action >= 0) != (strcmp(method, "POST") == 0) ||
	    (action < 0 && strcmp(method, "GET") != 0))
		return sim_error(c, method, url, 405, "method not allowed");

	force = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "force");
	pthread_mutex_lock(&sim.lock);
	p = sim_find(id);
	if (!p) {
		pthread_mutex_unlock(&sim.lock);
		return sim_error(c, method, url, 404, "payment not found");
	}
	if (action >= 0) {
		bool forced = force && strcmp(force, "0") != 0;

		if (!forced)
			sim_check_expiry(p);
		if (sim_transition(p, actions[action].to, forced) < 0) {
			snprintf(msg, sizeof(msg),
				 "payment is %s, not PENDING (add ?force=1 to override)",
				 sim_status_name[p->status]);
			pthread_mutex_unlock(&sim.lock);
			return sim_error(c, method, url, 409, msg);
		}
	}
	data = sim_payment_json(p, true);
	pthread_mutex_unlock(&sim.lock);
	return sim_json(c, method, url, 200, data);
}

static enum MHD_Result sim_control(struct MHD_Connection *c, const char *method, const char *url,
				   const struct sim_request *rq)
{
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	cJSON *out;

	if (rq->too_big)
		return sim_error(c, method, url, 413, "body too large");
	if (strcmp(url, "/_sim/stats") == 0 && get) {
		pthread_mutex_lock(&sim.lock);
		out = sim_stats_json();
		pthread_mutex_unlock(&sim.lock);
		return sim_json(c, method, url, 200, out);
	}
	if (strcmp(url, "/_sim/polls") == 0 && get) {
		pthread_mutex_lock(&sim.lock);
		out = sim_polls_json();
		pthread_mutex_unlock(&sim.lock);
		return sim_json(c, method, url, 200, out);
	}
	if (strcmp(url, "/_sim/config") == 0 && post)
		return sim_do_config(c, method, url, rq);
	if (strcmp(url, "/_sim/config") == 0 && get) {
		pthread_mutex_lock(&sim.lock);
		out = sim_config_json();
		pthread_mutex_unlock(&sim.lock);
		return sim_json(c, method, url, 200, out);
	}
	if (strcmp(url, "/_sim/reset") == 0 && post) {
		pthread_mutex_lock(&sim.lock);
		sim_clear_all();
		sim.generation++;
		sim.requests = sim.status_requests = sim.rate_limited = 0;
		sim.callbacks_sent = sim.callbacks_failed = 0;
		sim.callbacks_abandoned = sim.callbacks_dropped = 0;
		memset(&sim.cfg, 0, sizeof(sim.cfg));
		pthread_mutex_unlock(&sim.lock);
		out = cJSON_CreateObject();
		if (out)
			cJSON_AddTrueToObject(out, "ok");
		return sim_json(c, method, url, 200, out);
	}
	if (strcmp(url, "/_sim/payments") == 0 && post)
		return sim_do_create(c, method, url, rq, true);
	if (strncmp(url, "/_sim/payments/", 15) == 0 && url[15])
		return sim_do_payment_action(c, method, url, url + 15);
	return sim_error(c, method, url, 404, "unknown control endpoint");
}

/* GET /pay/{id}: a stand-in for the hosted payment page. */
static enum MHD_Result sim_pay_page(struct MHD_Connection *c, const char *method, const char *url)
{
	char id[256], page[1024], shown[256];
	struct sim_payment *p;
	int n;

	if (sim_url_decode(url + 5, id, sizeof(id)) < 0)
		return sim_error(c, method, url, 400, "payment_id: malformed");
	pthread_mutex_lock(&sim.lock);
	p = sim_find(id);
	sim_printable(shown, sizeof(shown), id);
	if (!p) {
		pthread_mutex_unlock(&sim.lock);
		return sim_error(c, method, url, 404, "payment not found");
	}
	n = snprintf(page, sizeof(page),
		     "komerce-sim payment %s\nstatus: %s\namount: %lld\n%s%s\n\n"
		     "Simulate the customer paying with:\n"
		     "  curl -X POST %s/_sim/payments/%s/pay\n",
		     shown, sim_status_name[p->status], p->amount,
		     p->qr_string ? "qr_string: " : "va_number: ",
		     p->qr_string ? p->qr_string : p->va_number, sim.public_base, url + 5);
	pthread_mutex_unlock(&sim.lock);
	if (n < 0)
		return MHD_NO;
	return sim_send(c, method, url, 200, sim_strdup(page), "text/plain; charset=utf-8", 0);
}

static enum MHD_Result sim_handler(void *cls, struct MHD_Connection *c, const char *url,
				   const char *method, const char *version, const char *upload,
				   size_t *upload_size, void **con_cls)
{
	struct sim_request *rq = *con_cls;
	bool control = strncmp(url, "/_sim/", 6) == 0;

	(void)cls;
	(void)version;
	if (!rq) {
		bool reset = false;
		char shown[200];

		if (!control && strncmp(url, "/pay/", 5) != 0) {
			pthread_mutex_lock(&sim.lock);
			sim_account(url);
			if (sim.cfg.reset_connections > 0) {
				sim.cfg.reset_connections--;
				reset = true;
			}
			pthread_mutex_unlock(&sim.lock);
		}
		if (reset) {
			sim_printable(shown, sizeof(shown), url);
			sim_log(6, "%s %s -> connection reset (simulated)", method, shown);
			return MHD_NO;
		}
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return MHD_NO;
		rq->start_mono = sim_mono_ms();
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size) {
		if (!rq->too_big && *upload_size <= SIM_MAX_BODY - rq->len) {
			char *nb = realloc(rq->body, rq->len + *upload_size + 1);

			if (!nb)
				return MHD_NO;
			rq->body = nb;
			memcpy(rq->body + rq->len, upload, *upload_size);
			rq->len += *upload_size;
			rq->body[rq->len] = '\0';
		} else {
			rq->too_big = true;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (control)
		return sim_control(c, method, url, rq);
	if (strncmp(url, "/pay/", 5) == 0 && url[5] && strcmp(method, "GET") == 0)
		return sim_pay_page(c, method, url);
	return sim_api(c, method, url, rq);
}

static void sim_request_done(void *cls, struct MHD_Connection *c, void **con_cls,
			     enum MHD_RequestTerminationCode toe)
{
	struct sim_request *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (rq) {
		free(rq->body);
		free(rq);
	}
	*con_cls = NULL;
}

/* Keeps %2F in the path: the handler decodes the payment id itself. */
static size_t sim_no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s);
}

/* ---- main --------------------------------------------------------------------------------- */

static void sim_usage(FILE *f)
{
	fprintf(f, "usage: komerce-sim --listen HOST:PORT --api-key KEY [--port-file PATH]\n"
		   "                   [--latency-ms N] [--auto-pay-after S] [--quiet]\n"
		   "PORT 0 picks a free port; --port-file receives it once the simulator "
		   "accepts.\n");
}

static int sim_write_port_file(const char *path, unsigned port)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%u\n", port);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		int e = errno;

		fclose(f);
		unlink(tmp);
		return -e;
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		int e = errno;

		unlink(tmp);
		return -e;
	}
	return 0;
}

static long sim_parse_long(const char *s, const char *what, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0 || v > max) {
		fprintf(stderr, "komerce-sim: invalid %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"api-key", required_argument, NULL, 'k'},
		{"port-file", required_argument, NULL, 'p'},
		{"latency-ms", required_argument, NULL, 'L'},
		{"auto-pay-after", required_argument, NULL, 'a'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *listen = NULL, *port_file = NULL;
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sa;
	struct MHD_Daemon *d;
	pthread_condattr_t ca;
	pthread_t worker;
	sigset_t set;
	char host[64], *colon;
	unsigned port;
	int opt, sig;

	while ((opt = getopt_long(argc, argv, "l:k:p:L:a:qh", opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			listen = optarg;
			break;
		case 'k':
			free(sim.api_key);
			sim.api_key = sim_strdup(optarg);
			break;
		case 'p':
			port_file = optarg;
			break;
		case 'L':
			sim.latency_ms = sim_parse_long(optarg, "--latency-ms", 600000);
			break;
		case 'a':
			sim.auto_pay_after_s = sim_parse_long(optarg, "--auto-pay-after", 86400);
			break;
		case 'q':
			sim.quiet = true;
			break;
		case 'h':
			sim_usage(stdout);
			return 0;
		default:
			sim_usage(stderr);
			return 2;
		}
	}
	if (!listen || !sim.api_key || !sim.api_key[0] || optind != argc) {
		sim_usage(stderr);
		return 2;
	}
	colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
		fprintf(stderr, "komerce-sim: --listen wants HOST:PORT (IPv4)\n");
		return 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = (unsigned)sim_parse_long(colon + 1, "port", 65535);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "komerce-sim: --listen wants an IPv4 address: %s\n", host);
		return 2;
	}

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sim.wake, &ca);
	pthread_condattr_destroy(&ca);
	sim.buckets = calloc(SIM_BUCKETS, sizeof(*sim.buckets));
	if (!sim.buckets || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "komerce-sim: out of memory\n");
		return 1;
	}

	/* Every thread inherits this mask; the main thread collects the signals. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
				     (sim.quiet ? 0 : MHD_USE_ERROR_LOG),
			     0, NULL, NULL, sim_handler, NULL, MHD_OPTION_SOCK_ADDR,
			     (struct sockaddr *)&sa, MHD_OPTION_UNESCAPE_CALLBACK, sim_no_unescape,
			     NULL, MHD_OPTION_NOTIFY_COMPLETED, sim_request_done, NULL,
			     MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 60u,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "komerce-sim: cannot listen on %s\n", listen);
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : port;
	snprintf(sim.public_base, sizeof(sim.public_base), "http://%s:%u", host, port);
	if (pthread_create(&worker, NULL, sim_worker, NULL) != 0) {
		fprintf(stderr, "komerce-sim: cannot start the callback thread\n");
		MHD_stop_daemon(d);
		return 1;
	}
	if (port_file && sim_write_port_file(port_file, port) < 0) {
		fprintf(stderr, "komerce-sim: cannot write %s\n", port_file);
		sig = 0;
		goto stop;
	}
	sim_log(6, "listening on %s auto_pay_after_s=%ld latency_ms=%ld", sim.public_base,
		sim.auto_pay_after_s, sim.latency_ms);

	do {
		if (sigwait(&set, &sig) != 0)
			sig = SIGTERM;
	} while (sig != SIGINT && sig != SIGTERM);
	sim_log(6, "stopping on signal %d", sig);
stop:
	pthread_mutex_lock(&sim.lock);
	sim.stopping = true;
	pthread_cond_broadcast(&sim.wake);
	pthread_mutex_unlock(&sim.lock);
	MHD_stop_daemon(d);
	pthread_join(worker, NULL);
	pthread_mutex_lock(&sim.lock);
	sim_clear_all();
	pthread_mutex_unlock(&sim.lock);
	free(sim.polls);
	free(sim.buckets);
	free(sim.api_key);
	pthread_cond_destroy(&sim.wake);
	curl_global_cleanup();
	return sig ? 0 : 1;
}
