/* Payment rows written without an event: POST /v1/payments/track registers a payment that was
 * created elsewhere so that the reconciler watches it. Part of the store module (writer
 * requests); the admin API submits them. */
#pragma once

#include "store.h"

/* Prepares r as "track this payment": inserts a PENDING payments row with origin "track" from
 * r->ev (payment_id, order_id, amount, payment_type, channel_code, expires_at; "" / -1 / 0 mean
 * unknown), no event, and schedules its first poll after grace_seconds when the store was
 * opened with reconcile. r->result is then 0, or -EEXIST when the payment_id is already known
 * (nothing changes), or a storage error. */
void store_req_payment_track(struct store_req *r, const struct event *ev);
