/* libFuzzer target for the config parser: config_load_string() on the input as INI text (a
 * NUL-terminated copy), with no environment. Aborts if a failure leaves no error line, so
 * "invalid config exits with one line naming the key" holds for any input. Leaks are caught
 * by LeakSanitizer through config_free(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CONFIG_ERR_LEN];
	char *text = malloc(size + 1);
	struct config *c;
	int r;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	c = config_new();
	if (c == NULL)
		abort();
	err[0] = '\0';
	r = config_load_string(c, text, NULL, err, sizeof(err));
	if (r < 0 && (err[0] == '\0' || strnlen(err, sizeof(err)) == sizeof(err)))
		abort();
	if (r > 0)
		abort();
	config_free(c);
	free(text);
	return 0;
}
