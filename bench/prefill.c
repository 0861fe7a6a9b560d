/* bench/prefill: fills a komerce-hookd database with N events through the store's own writer
 * (the same code path as callbacks, without HTTP), for "rate with a big database" runs, and
 * prints the rate. DB is an SQLite path or a PostgreSQL URL.
 * usage: prefill DB N   (built by bench/ingest against build/libhookd.a) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

#define INFLIGHT 4096

static void done(struct store_req *r)
{
	(void)r;
}

int main(int argc, char **argv)
{
	struct store_opts o = {.busy_timeout_ms = 5000, .batch_max = 4096, .queue_max = INFLIGHT};
	static struct store_req reqs[INFLIGHT];
	static char bodies[INFLIGHT][256];
	struct store *s;
	char err[256];
	int64_t t0;
	long n;

	if (argc != 3 || (n = atol(argv[2])) <= 0) {
		fprintf(stderr, "usage: prefill DB N\n");
		return 2;
	}
	if (strncmp(argv[1], "postgresql://", 13) == 0) {
		o.backend = STORE_BACKEND_POSTGRESQL;
		o.url = argv[1];
	} else {
		o.path = argv[1];
	}
	t0 = util_mono_ms();
	if (store_open(&o, &s, err, sizeof(err)) < 0 || store_writer_start(s) < 0) {
		fprintf(stderr, "prefill: %s\n", err);
		return 1;
	}
	for (long base = 0; base < n; base += INFLIGHT) {
		long k = n - base < INFLIGHT ? n - base : INFLIGHT;

		for (long i = 0; i < k; i++) {
			struct event ev = {.status = PAYMENT_PAID, .source = EVENT_SOURCE_CALLBACK};

			snprintf(ev.payment_id, sizeof(ev.payment_id), "KOMPAY-PREFILL-%09ld",
				 base + i);
			snprintf(ev.order_id, sizeof(ev.order_id), "ORDER-PREFILL-%09ld", base + i);
			ev.amount = 100000;
			snprintf(bodies[i], sizeof(bodies[i]),
				 "{\"payment_id\":\"%s\",\"order_id\":\"%s\",\"status\":\"PAID\","
				 "\"amount\":100000}",
				 ev.payment_id, ev.order_id);
			ev.raw = bodies[i];
			ev.raw_len = strlen(bodies[i]);
			store_req_event(&reqs[i], &ev);
			reqs[i].done = done;
		}
		/* The last request of the round waits; the writer applies in order. */
		for (long i = 0; i + 1 < k; i++)
			if (store_submit(s, &reqs[i]) < 0) {
				fprintf(stderr, "prefill: queue refused\n");
				return 1;
			}
		if (store_submit_wait(s, &reqs[k - 1]) < 0) {
			fprintf(stderr, "prefill: store failed: %s\n", store_errmsg(s));
			return 1;
		}
		if ((base / INFLIGHT) % 64 == 0)
			fprintf(stderr, "\rprefill: %ld / %ld", base + k, n);
	}
	fprintf(stderr, "\rprefill: %ld events in %.1f s (%.0f events/s)\n", n,
		(double)(util_mono_ms() - t0) / 1000.0,
		(double)n * 1000.0 / (double)(util_mono_ms() - t0));
	store_close(s);
	return 0;
}
