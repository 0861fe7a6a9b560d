/* crashload: the load side of bench/crash. Threads POST signed Komerce callbacks to the daemon
 * as fast as it answers: new payments, and duplicates of facts sent before (in this run or in
 * earlier ones, read back from the acked file). Every 200 is appended to the acked file as
 * "payment_id:STATUS,event_id" before anything else happens, so the list survives the daemon
 * being killed mid-request. Stops on SIGTERM/SIGINT and prints "sent=N acked=N failed=N".
 *
 *   crashload [-r RATE] [-s STATUSES] URL KEY ACKED_FILE PREFIX [THREADS]
 *
 * -r caps the total request rate (requests per second over all threads; default: as fast as
 * the daemon answers). -s is the comma-separated list of statuses new facts are drawn from
 * (default PENDING,PAID,EXPIRED; bench/soak uses PAID,EXPIRED so that the reconciler is not
 * sent after payments its upstream never heard of).
 *
 * Built by bench/crash with: cc -O2 crashload.c $(pkg-config --cflags --libs libcurl
 * libcrypto) -lpthread */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_THREADS  32
#define MAX_OLD	     200000
#define ID_LEN	     64
#define MAX_STATUSES 8

static const char *url, *key, *prefix;
static int acked_fd;
static volatile sig_atomic_t stopping;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long long n_sent, n_acked, n_failed;

/* Facts acknowledged in earlier runs: "payment_id:STATUS". */
static char (*old)[ID_LEN];
static size_t n_old;

static const char *statuses[MAX_STATUSES] = {"PENDING", "PAID", "EXPIRED"};
static int n_statuses = 3;
static long long interval_ns; /* per thread, from -r; 0: no pacing */

struct reply {
	char body[512];
	size_t len;
};

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct reply *r = arg;
	size_t n = size * nmemb, room = sizeof(r->body) - 1 - r->len;

	if (n > room)
		n = room;
	memcpy(r->body + r->len, ptr, n);
	r->len += n;
	r->body[r->len] = '\0';
	return size * nmemb;
}

static void sign(const char *body, size_t len, char out[65])
{
	unsigned char mac[32];
	unsigned int n = sizeof(mac);

	HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)body, len, mac, &n);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static void load_old(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];

	old = calloc(MAX_OLD, sizeof(*old));
	if (old == NULL || f == NULL) {
		if (f != NULL)
			fclose(f);
		return;
	}
	while (n_old < MAX_OLD && fgets(line, sizeof(line), f) != NULL) {
		char *comma = strchr(line, ',');

		if (comma == NULL || (size_t)(comma - line) >= ID_LEN)
			continue;
		*comma = '\0';
		snprintf(old[n_old++], ID_LEN, "%s", line);
	}
	fclose(f);
}

/* Posts one fact; returns the HTTP status (or -1) and the event id of a 200. */
static long post(CURL *c, const char *payment_id, const char *status, long long *ret_event_id)
{
	char body[512], sig[65], hdr[100];
	struct curl_slist *hl = NULL;
	struct reply r = {.len = 0};
	long code = -1;
	const char *ev;
	int n;

	n = snprintf(
		body, sizeof(body),
		"{\"payment_id\":\"%s\",\"order_id\":\"ORD-%s\",\"status\":\"%s\","
		"\"amount\":125000,\"payment_type\":\"bank_transfer\",\"channel_code\":\"BCA\"}",
		payment_id, payment_id, status);
	sign(body, (size_t)n, sig);
	snprintf(hdr, sizeof(hdr), "X-Callback-Api-Key: %s", sig);
	hl = curl_slist_append(hl, "Content-Type: application/json");
	hl = curl_slist_append(hl, hdr);
	hl = curl_slist_append(hl, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)n);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(hl);
	*ret_event_id = 0;
	ev = strstr(r.body, "\"event_id\":");
	if (code == 200 && ev != NULL)
		*ret_event_id = strtoll(ev + 11, NULL, 10);
	return code;
}

static void *worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u ^ (unsigned)time(NULL);
	int t = (int)(uintptr_t)arg;
	char(*mine)[ID_LEN] = calloc(4096, ID_LEN);
	size_t n_mine = 0, n_new = 0; /* n_new names new payments: it never stops growing */
	CURL *c = curl_easy_init();
	struct timespec due;

	if (c == NULL || mine == NULL)
		return NULL;
	clock_gettime(CLOCK_MONOTONIC, &due);
	while (!stopping) {
		char pid[ID_LEN], fact[ID_LEN];
		const char *status;
		int dice = rand_r(&seed) % 100;
		long long event_id;
		long code;

		if (dice < 25 && n_mine > 0) {
			/* the same fact again, as a Komerce retry would send it */
			snprintf(fact, sizeof(fact), "%s", mine[(size_t)rand_r(&seed) % n_mine]);
		} else if (dice < 35 && n_old > 0) {
			/* a fact acknowledged before an earlier crash */
			snprintf(fact, sizeof(fact), "%s", old[(size_t)rand_r(&seed) % n_old]);
		} else {
			snprintf(pid, sizeof(pid), "%s-%d-%zu", prefix, t, n_new++);
			snprintf(fact, sizeof(fact), "%s:%s", pid,
				 statuses[rand_r(&seed) % (unsigned)n_statuses]);
			if (n_mine < 4096)
				snprintf(mine[n_mine++], ID_LEN, "%s", fact);
		}
		status = strrchr(fact, ':');
		if (status == NULL)
			continue;
		snprintf(pid, sizeof(pid), "%.*s", (int)(status - fact), fact);
		status++;
		code = post(c, pid, status, &event_id);

		pthread_mutex_lock(&mu);
		n_sent++;
		if (code == 200) {
			char line[160];
			int n = snprintf(line, sizeof(line), "%s,%lld\n", fact, event_id);

			n_acked++;
			if (write(acked_fd, line, (size_t)n) != n)
				fprintf(stderr, "crashload: cannot record an ack: %m\n");
		} else {
			n_failed++;
		}
		pthread_mutex_unlock(&mu);
		if (code != 200) {
			struct timespec ts = {0, 20 * 1000 * 1000};

			nanosleep(&ts, NULL); /* daemon gone or refusing: do not spin */
		}
		if (interval_ns > 0) {
			long long ns = due.tv_nsec + interval_ns;
			struct timespec now;

			due.tv_sec += ns / 1000000000;
			due.tv_nsec = ns % 1000000000;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > due.tv_sec + 1)
				due = now; /* far behind (daemon stalled): no catch-up burst */
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
		}
	}
	curl_easy_cleanup(c);
	free(mine);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[MAX_THREADS];
	struct sigaction sa = {.sa_handler = on_signal};
	double rate = 0;
	int threads, opt;

	while ((opt = getopt(argc, argv, "r:s:")) != -1) {
		if (opt == 'r') {
			rate = atof(optarg);
		} else if (opt == 's') {
			char *list = strdup(optarg), *save = NULL;

			n_statuses = 0;
			for (char *t = strtok_r(list, ",", &save); t && n_statuses < MAX_STATUSES;
			     t = strtok_r(NULL, ",", &save))
				statuses[n_statuses++] = t;
		} else {
			n_statuses = 0;
		}
	}
	argc -= optind;
	argv += optind;
	threads = argc > 4 ? atoi(argv[4]) : 8;
	if (argc < 4 || threads < 1 || threads > MAX_THREADS || n_statuses == 0 || rate < 0) {
		fprintf(stderr,
			"usage: crashload [-r RATE] [-s STATUSES] URL KEY ACKED_FILE PREFIX "
			"[THREADS]\n");
		return 2;
	}
	if (rate > 0)
		interval_ns = (long long)(1e9 * threads / rate);
	url = argv[0];
	key = argv[1];
	prefix = argv[3];
	load_old(argv[2]);
	acked_fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (acked_fd < 0) {
		fprintf(stderr, "crashload: %s: %m\n", argv[2]);
		return 1;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	close(acked_fd);
	printf("sent=%lld acked=%lld failed=%lld\n", n_sent, n_acked, n_failed);
	curl_global_cleanup();
	free(old);
	return 0;
}
