/* Payment status state machine (pure). PENDING -> PAID | EXPIRED | CANCELED; terminal states
 * never regress. */
#pragma once

#include <stdbool.h>

enum payment_status {
	PAYMENT_UNKNOWN = -1,
	PAYMENT_PENDING = 0,
	PAYMENT_PAID,
	PAYMENT_EXPIRED,
	PAYMENT_CANCELED,
};

enum payment_verdict {
	PAYMENT_APPLY,	  /* move to the new status */
	PAYMENT_SAME,	  /* already in that status: nothing changes */
	PAYMENT_CONFLICT, /* contradicts a terminal status: record, do not apply */
};

/* Case-insensitive; CANCELLED is read as CANCELED. PAYMENT_UNKNOWN for anything else. */
enum payment_status payment_status_parse(const char *s);
const char *payment_status_name(enum payment_status st);
bool payment_status_terminal(enum payment_status st);
enum payment_verdict payment_transition(enum payment_status current, enum payment_status next);
