/* Chain checkpoints: the head of the events hash chain (an event id and its hash) published
 * outside the database, so that deleting the newest events together with their receipts is
 * still detected. The daemon logs one every store.checkpoint_interval minutes and at shutdown;
 * `komerce-hookctl verify --checkpoint` checks the database still reaches each one. Pure. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store_types.h"

#define CHECKPOINT_TEXT_MAX 200 /* "checkpoint=ID:HASH mac=MAC" with its NUL */

struct checkpoint {
	int64_t id;
	uint8_t hash[STORE_HASH_LEN];
	bool has_mac;
	uint8_t mac[STORE_HASH_LEN];
};

/* "checkpoint=<id>:<hex hash>", then " mac=<hex HMAC-SHA256(key, "<id>:<hex hash>")>" when a
 * key is given (key_len > 0). Returns the length, or -ENOBUFS. */
int checkpoint_format(int64_t id, const uint8_t hash[STORE_HASH_LEN], const void *key,
		      size_t key_len, char *out, size_t n);
/* Reads a checkpoint from "ID:HASH" or from a line that contains "checkpoint=ID:HASH" (a log
 * line, as journalctl prints it), with its "mac=" when present. 0, -ENOENT (the line holds no
 * checkpoint) or -EINVAL (one that is malformed). */
int checkpoint_parse(const char *text, struct checkpoint *ret);
/* True when c carries a MAC made with key. */
bool checkpoint_mac_ok(const struct checkpoint *c, const void *key, size_t key_len);
