/* The payment state machine: which status changes are allowed. Pure and thread-safe; the
 * store writer asks it before it updates a payment row. */
#include "payment.h"

#include <stddef.h>
#include <strings.h>

static const char *const names[] = {"PENDING", "PAID", "EXPIRED", "CANCELED"};

enum payment_status payment_status_parse(const char *s)
{
	if (s == NULL)
		return PAYMENT_UNKNOWN;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(s, names[i]) == 0)
			return (enum payment_status)i;
	if (strcasecmp(s, "CANCELLED") == 0)
		return PAYMENT_CANCELED;
	return PAYMENT_UNKNOWN;
}

const char *payment_status_name(enum payment_status st)
{
	if (st < PAYMENT_PENDING || st > PAYMENT_CANCELED)
		return "UNKNOWN";
	return names[st];
}

bool payment_status_terminal(enum payment_status st)
{
	return st == PAYMENT_PAID || st == PAYMENT_EXPIRED || st == PAYMENT_CANCELED;
}

enum payment_verdict payment_transition(enum payment_status current, enum payment_status next)
{
	if (current == next)
		return PAYMENT_SAME;
	if (current == PAYMENT_PENDING && payment_status_terminal(next))
		return PAYMENT_APPLY;
	if (current == PAYMENT_UNKNOWN && next != PAYMENT_UNKNOWN)
		return PAYMENT_APPLY;
	/* Terminal to anything else (including back to PENDING) is a contradiction. */
	return PAYMENT_CONFLICT;
}
