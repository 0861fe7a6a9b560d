/* Outbox forwarder: a thread that delivers committed events to the configured sinks
 * ([sink.NAME], HTTP or Redis stream), at-least-once and in order per payment. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct config;
struct store;
struct forward;

/* Starts the forwarder thread (a no-op forwarder when no sink is configured). writer is the
 * daemon's read-write store: all outbox updates go through store_submit_wait(). On failure
 * returns -errno and writes one line into err. */
int forward_start(const struct config *cfg, struct store *writer, struct forward **ret, char *err,
		  size_t err_len) __attribute__((warn_unused_result));
/* Wakes the forwarder: new outbox rows were committed. Safe from any thread; cheap. */
void forward_notify(struct forward *f);
/* The retry schedule: milliseconds to wait after the attempts-th failure (attempts >= 1):
 * 1 s * 2^(attempts-1), capped at 10 minutes, with jitter taking 0-25 % off so that rows
 * failed together do not retry together. rnd is any random 32-bit value. Result is in
 * [0.75 * base, base]. Pure. */
int64_t forward_backoff_ms(long attempts, uint32_t rnd);
/* Stops and joins within about a second (an in-flight delivery is abandoned and retried on the
 * next start). NULL is fine. */
void forward_stop(struct forward *f);
