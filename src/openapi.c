/* GET /openapi.json: serves the document embedded at build time. Runs on the admin listener's
 * threads; the document is a constant, so there is nothing to lock. */
#include "openapi.h"

#include "http.h"

void openapi_handler(struct http_request *req, void *ctx)
{
	(void)ctx;
	http_reply(req, 200, "application/json", openapi_json, openapi_json_len, NULL);
}
