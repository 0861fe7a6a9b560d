/* bench/forward-receiver: the consumer side of bench/forward. A minimal HTTP/1.1 keep-alive
 * server on 127.0.0.1 (one thread per connection; the forwarder opens a handful) that answers
 * 200 to every request, checks X-Hookd-Signature like a real consumer would, and records
 * "event_id received_at_ms receipt_ms" per request. On SIGTERM it writes the records to OUT
 * and exits. Built by bench/forward with cc and tests/lib/rx.c; not part of the daemon.
 *
 * usage: forward-receiver PORTFILE OUT SECRET
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include "rx.h"

#define MAX_RECORDS (4 * 1024 * 1024)

struct record {
	long long event_id, received_at, receipt;
};

static struct record *records;
static size_t n_records;
static unsigned long long bad_sig;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const char *secret;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "received_at":"2026-08-12T10:15:30.123Z" -> unix ms, 0 when absent. */
static long long received_at(const char *body, size_t len)
{
	static const char key[] = "\"received_at\":\"";
	const char *p = memmem(body, len, key, sizeof(key) - 1);
	struct tm tm;
	int ms = 0;

	if (p == NULL)
		return 0;
	memset(&tm, 0, sizeof(tm));
	if (sscanf(p + sizeof(key) - 1, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon,
		   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (long long)timegm(&tm) * 1000 + ms;
}

static int on_request(void *ctx, struct rx_request *req)
{
	struct record r = {rx_event_id(req), received_at(req->body, req->body_len), now_ms()};
	bool ok = rx_signature_ok(req, secret);

	(void)ctx;
	pthread_mutex_lock(&mu);
	if (n_records < MAX_RECORDS)
		records[n_records++] = r;
	if (!ok)
		bad_sig++;
	pthread_mutex_unlock(&mu);
	return 200;
}

int main(int argc, char **argv)
{
	struct rx *rx;
	sigset_t set;
	FILE *f;
	int sig;

	if (argc != 4) {
		fprintf(stderr, "usage: forward-receiver PORTFILE OUT SECRET\n");
		return 2;
	}
	secret = argv[3];
	records = calloc(MAX_RECORDS, sizeof(*records));
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	rx = records != NULL ? rx_start(0, on_request, NULL) : NULL;
	if (rx == NULL) {
		perror("forward-receiver");
		return 1;
	}
	f = fopen(argv[1], "w");
	fprintf(f, "%u\n", rx_port(rx));
	fclose(f);
	sigwait(&set, &sig);
	f = fopen(argv[2], "w");
	if (f == NULL)
		return 1;
	pthread_mutex_lock(&mu);
	fprintf(f, "# bad_signatures %llu\n", bad_sig);
	for (size_t i = 0; i < n_records; i++)
		fprintf(f, "%lld %lld %lld\n", records[i].event_id, records[i].received_at,
			records[i].receipt);
	pthread_mutex_unlock(&mu);
	fclose(f);
	_exit(0);
}
