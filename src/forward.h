/* Outbox forwarder: a thread that delivers committed events to the configured sinks
 * ([sink.NAME], HTTP or Redis stream), at-least-once and in order per payment. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct config;
struct store;
struct forward;

/* Prepares one worker per configured sink (its own read-only handle and sink client) without
 * starting any. writer is the daemon's read-write store: all outbox updates go through
 * store_submit_wait(). On failure returns -errno and writes one line into err. */
int forward_new(const struct config *cfg, struct store *writer, struct forward **ret, char *err,
		size_t err_len) __attribute__((warn_unused_result));
/* Starts / stops the worker of sink i (the configuration's order) as this instance wins or
 * loses "forward:<sink>". halt joins within about a second: a delivery in flight is abandoned
 * and its row stays pending, to be delivered again by whoever leads next. */
int forward_run(struct forward *f, size_t i) __attribute__((warn_unused_result));
void forward_halt(struct forward *f, size_t i);
/* forward_new + forward_run for every sink (a no-op forwarder when no sink is configured). */
int forward_start(const struct config *cfg, struct store *writer, struct forward **ret, char *err,
		  size_t err_len) __attribute__((warn_unused_result));
/* Wakes the forwarder: new outbox rows were committed. Safe from any thread; cheap. */
void forward_notify(struct forward *f);
/* The retry schedule: milliseconds to wait after the attempts-th failure (attempts >= 1):
 * 1 s * 2^(attempts-1), capped at 10 minutes, with jitter taking 0-25 % off so that rows
 * failed together do not retry together. rnd is any random 32-bit value. Result is in
 * [0.75 * base, base]. Pure. */
int64_t forward_backoff_ms(long attempts, uint32_t rnd);
/* Halts every worker and frees. NULL is fine. */
void forward_stop(struct forward *f);
