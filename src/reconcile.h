/* Reconciler: a thread that polls Komerce for the status of PENDING payments whose callback
 * has not arrived, within the per-payment 3 s limit and a global request budget. */
#pragma once

#include <stddef.h>

struct config;
struct store;
struct reconcile;

int reconcile_start(const struct config *cfg, struct store *writer, struct reconcile **ret,
		    char *err, size_t err_len) __attribute__((warn_unused_result));
/* A payment became watched (created or tracked): look at the schedule again. Any thread. */
void reconcile_wake(struct reconcile *r);
/* Stops and joins within about a second. NULL is fine. */
void reconcile_stop(struct reconcile *r);
