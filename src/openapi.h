/* GET /openapi.json on the admin listener: the OpenAPI 3.1 document of both listeners
 * (docs/openapi.yaml, converted to JSON and embedded at build time by tools/embed-openapi.py). */
#pragma once

#include <stddef.h>

struct http_request;

/* The embedded document (generated openapi_json.c). */
extern const char openapi_json[];
extern const size_t openapi_json_len;

/* Replies 200 with the document; needs no token (like /healthz). ctx is unused. */
void openapi_handler(struct http_request *req, void *ctx);
