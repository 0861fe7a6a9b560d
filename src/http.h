/* libmicrohttpd servers: the public callback listener and the admin listener, a routing
 * table, body limits and JSON replies. Handlers run on MHD threads; a handler that must wait
 * (for a commit) suspends its request and completes it later from another thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "metrics.h"

struct http_server;
struct http_request;
struct netaddr_list;

typedef void (*http_handler_fn)(struct http_request *req, void *ctx);

struct http_route {
	const char *method; /* "GET", "POST" */
	const char *path;   /* exact path, or a prefix when prefix is true */
	bool prefix;
	bool has_body;	/* collect the body (POST) */
	bool json_body; /* refuse (415) a body that is not application/json */
	enum metrics_endpoint ep;
	http_handler_fn fn;
	void *ctx;
	size_t req_data; /* bytes the transport keeps with each request for fn (http_req_data) */
};

struct http_opts {
	const char *name;   /* "public" or "admin", for logs */
	const char *listen; /* HOST:PORT */
	unsigned threads;   /* 0 = thread per connection (admin: handlers may block) */
	unsigned max_connections;
	unsigned connection_timeout_s; /* idle */
	/* With threads > 0 and request_timeout_s > 0 the listener is gated (gate.h): a request
	 * must be complete this long after its connection was accepted (408), each TCP peer
	 * may hold max_connections_per_ip connections (0 = no limit), and every reply closes
	 * its connection, so that each request passes the gate, unless keep_alive: then the
	 * gate sees a connection's first request, and each next one must be complete within
	 * request_timeout_s of the one before it ending (or the connection is shut down). */
	unsigned request_timeout_s;
	bool keep_alive;
	unsigned max_connections_per_ip;
	size_t max_body;
	/* Peers whose X-Forwarded-For / Forwarded name the client (NULL or empty: none). */
	const struct netaddr_list *trusted_proxies;
	const struct http_route *routes;
	size_t n_routes;
	/* A listening socket to serve instead of binding listen (from systemd, listen_take; such
	 * fds are >= 3), or 0 to bind. The server owns it from http_start on. */
	int listen_fd;
};

/* Starts listening. Returns 0 and *ret, or -errno with a line in err. */
int http_start(const struct http_opts *o, struct http_server **ret, char *err, size_t err_len)
	__attribute__((warn_unused_result));
/* Stops accepting new connections, waits up to drain_ms for suspended requests to be
 * answered, answers those still waiting 503 (their owners' later http_reply is dropped), then
 * stops the server. The struct stays valid for those late replies: free it with http_free()
 * once no owner can still reply (after the store writer has stopped). NULL is fine. */
void http_stop(struct http_server *srv, long drain_ms);
/* Stops the server if still running and frees it. NULL is fine. */
void http_free(struct http_server *srv);
/* The port actually bound (useful with port 0). */
unsigned http_port(struct http_server *srv);

/* ---- for handlers ---- */
const char *http_method(struct http_request *req);
const char *http_url(struct http_request *req);
const char *http_header(struct http_request *req, const char *name);
const char *http_query(struct http_request *req, const char *name);
/* Calls fn for each query parameter in order (value NULL for "?name" without "="); stops when
 * fn returns non-zero, which is then returned. */
int http_query_each(struct http_request *req,
		    int (*fn)(void *arg, const char *name, const char *value), void *arg);
/* The client's address: the TCP peer, or, when the peer is a trusted proxy, the client it
 * names (netaddr_client). Per-source accounting and receipts use this. */
const char *http_remote(struct http_request *req);
/* The TCP peer's address. */
const char *http_peer(struct http_request *req);
const char *http_body(struct http_request *req, size_t *ret_len);

/* Sets the reply (body copied). On a request suspended with http_suspend, also resumes it;
 * then it may be called from any thread, exactly once. extra_header may be NULL or
 * "Name: value", or several such lines joined by "\r\n" (1023 bytes at most). */
void http_reply(struct http_request *req, unsigned status, const char *content_type,
		const char *body, size_t len, const char *extra_header);
void http_reply_json(struct http_request *req, unsigned status, const char *json);
/* {"status":"error","error":"<msg>"} with msg JSON-escaped. */
void http_reply_error(struct http_request *req, unsigned status, const char *msg);
void http_reply_error_hdr(struct http_request *req, unsigned status, const char *msg,
			  const char *extra_header);
/* The route's req_data bytes, zeroed when the request arrived; they live as long as the
 * request, also while it is suspended. */
void *http_req_data(struct http_request *req);
/* True for "application/json", with parameters (charset) or not, in any case. */
bool http_is_json_type(const char *content_type);
/* Marks the request as waiting: the MHD thread goes on with other connections until
 * http_reply() is called. Must be called from the handler, before handing req elsewhere.
 * Returns false (and changes nothing) when the server is stopping or cannot suspend: the
 * handler must then reply at once. */
bool http_suspend(struct http_request *req);
