/* libFuzzer target for the callback path that sees untrusted bytes: callback_parse() on the
 * raw body, and callback_verify() with a fixed key list and the input's first 64 bytes as the
 * X-Callback-Api-Key header (HMAC and plain modes). Aborts when a result breaks the
 * contract in callback.h, so a wrong answer is a finding, not only a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "callback.h"
#include "payment.h"

static const char *const keys[] = {"fuzz-callback-key-0001", "fuzz-callback-key-0002"};
static const size_t key_lens[] = {22, 22};

static void check_event(const struct event *ev, const uint8_t *data, size_t size)
{
	size_t id_len = strnlen(ev->payment_id, sizeof(ev->payment_id));

	if (id_len == 0 || id_len == sizeof(ev->payment_id) ||
	    strnlen(ev->order_id, sizeof(ev->order_id)) == sizeof(ev->order_id))
		abort();
	if (ev->status < PAYMENT_PENDING || ev->status > PAYMENT_CANCELED)
		abort();
	if (ev->amount < -1 || ev->amount > 1000000000000000LL)
		abort();
	if ((const uint8_t *)ev->raw != data || ev->raw_len != size)
		abort();
	for (size_t i = 0; i < id_len; i++)
		if ((unsigned char)ev->payment_id[i] < 0x20)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct callback_keys k = {.keys = keys, .lens = key_lens, .n = 2};
	struct event ev;
	char why[128], header[65];
	size_t hlen = size < 64 ? size : 64;

	why[0] = '\0';
	if (callback_parse((const char *)data, size, &ev, why, sizeof(why)) == 0)
		check_event(&ev, data, size);
	else if (why[0] == '\0' || strnlen(why, sizeof(why)) == sizeof(why))
		abort();

	memcpy(header, data, hlen);
	header[hlen] = '\0';
	(void)callback_verify(&k, header, data, size);
	k.plain = true;
	/* A plain header that is not one of the keys must never match. */
	if (callback_verify(&k, header, data, size) == 0 &&
	    strstr(header, "fuzz-callback-key") == NULL)
		abort();
	(void)callback_verify(&k, NULL, data, size);
	return 0;
}
