/* The maintenance thread: publishes the hash chain's head (a checkpoint, checkpoint.h) in the
 * log every store.checkpoint_interval and at shutdown, and prunes receipts and delivered
 * outbox rows past store.retention_days in small batches through the writer, off the
 * callbacks' path. */
#pragma once

#include <stddef.h>

struct store;
struct maintain;

struct maintain_opts {
	struct store *store;	    /* the daemon's WRITER handle (prune requests go to it) */
	long checkpoint_interval_s; /* 0 = only at start and shutdown */
	const char *checkpoint_key; /* HMAC key of the checkpoints; "" = unsigned */
	long retention_days;	    /* 0 = keep everything */
	long prune_batch;	    /* rows of each table per transaction */
	long prune_pause_ms;	    /* between two batches */
};

/* Opens a reader handle, logs a first checkpoint and starts the thread. 0, or -errno with a
 * line in err. */
int maintain_start(const struct maintain_opts *o, struct maintain **ret, char *err, size_t err_len)
	__attribute__((warn_unused_result));
/* Stops the thread and logs the final checkpoint: call it once the writer has committed
 * everything (after store_writer_stop). NULL is fine. */
void maintain_stop(struct maintain *m);
