/* The console's queries of the store interface (store_console.h): each goes to the backend's
 * console_* entry; a backend without them answers -ENOTSUP. Any thread, on its own handle. */
#include "store_console.h"

#include <errno.h>

#include "store_backend.h"

static const char *const match_names[] = {
	[STORE_CONSOLE_MATCH_NONE] = NULL,
	[STORE_CONSOLE_MATCH_PAYMENT_ID] = "payment_id",
	[STORE_CONSOLE_MATCH_ORDER_ID] = "order_id",
	[STORE_CONSOLE_MATCH_VA_NUMBER] = "va_number",
};

const char *store_console_match_name(enum store_console_match m)
{
	if (m < STORE_CONSOLE_MATCH_NONE || m > STORE_CONSOLE_MATCH_VA_NUMBER)
		return NULL;
	return match_names[m];
}

int store_console_payments(struct store *s, const struct store_console_payment_filter *f,
			   int (*fn)(void *arg, const struct store_console_payment *p), void *arg)
{
	if (s->be->console_payments == NULL)
		return -ENOTSUP;
	return s->be->console_payments(s, f, fn, arg);
}

int store_console_receipts(struct store *s, const char *payment_id, long limit,
			   int (*fn)(void *arg, const struct store_console_receipt *r), void *arg)
{
	if (s->be->console_receipts == NULL)
		return -ENOTSUP;
	return s->be->console_receipts(s, payment_id, limit, fn, arg);
}

int store_console_deliveries(struct store *s, const char *payment_id,
			     int (*fn)(void *arg, const struct store_outbox_row *r), void *arg)
{
	if (s->be->console_deliveries == NULL)
		return -ENOTSUP;
	return s->be->console_deliveries(s, payment_id, fn, arg);
}

int store_console_last_event_id(struct store *s, int64_t *ret)
{
	if (s->be->console_last_event_id == NULL)
		return -ENOTSUP;
	return s->be->console_last_event_id(s, ret);
}
