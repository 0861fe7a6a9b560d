/* Shared by the admin API's handler files (api.c, api_console.c): the bearer-token gate, the
 * store handles and the reply helpers, so that every route answers in the same envelope. Not
 * for other modules. */
#pragma once

#include <stdbool.h>

struct api;
struct cJSON;
struct config;
struct http_request;
struct store;

/* True when the request carries the admin bearer token; otherwise replies 401 and returns
 * false. */
bool api_authorized(struct api *a, struct http_request *req);
const struct config *api_config(const struct api *a);
/* The daemon's WRITER store: writes go through store_submit_wait. */
struct store *api_writer(const struct api *a);
/* Opens a READER handle for one request (logs on failure). Returns 0 or -errno. */
int api_open_reader(struct api *a, struct store **ret);

/* Replies with o (freed) as JSON; 500 when o is NULL or cannot be printed. */
void api_reply_cjson(struct http_request *req, unsigned status, struct cJSON *o,
		     const char *extra_header);
/* {"status":"error","error":msg} to add to (NULL when out of memory). Caller frees. */
struct cJSON *api_error_object(const char *msg);
/* 400 {"status":"error","error":"<field>: <rule>","field":...,"rule":...}. */
void api_reply_invalid(struct http_request *req, const char *field, const char *rule);
/* The request body as a JSON object, or a 415/400 reply and NULL. Caller frees. */
struct cJSON *api_body_object(struct http_request *req);
