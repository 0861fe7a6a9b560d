/* libmicrohttpd glue: both listeners, the route table lookup, body collection with limits,
 * reply building, and the callback route (authenticate → parse → hand to the store writer →
 * suspend until the commit is done). Runs on MHD's threads; http_reply() may also be called
 * from the store writer thread to complete a suspended request. */
#include "http.h"

#include <errno.h>
#include <pthread.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "config.h"
#include "gate.h"
#include "log.h"
#include "netaddr.h"
#include "util.h"

struct http_server {
	struct MHD_Daemon *d;
	struct http_opts opts;
	char name[16];
	pthread_mutex_t mu;
	bool stopping; /* under mu: no more suspensions (MHD must not stop with any) */
	long waiting;  /* under mu: suspended requests not yet completed by MHD */
	struct http_request *parked; /* under mu: suspended requests whose owner has not replied */
	int resuming;		     /* atomic: MHD_resume_connection calls under way */
	bool suspend_ok;
	struct gate *gate; /* the front door of a gated listener (accepts for MHD), or NULL */
	long handing;	   /* atomic: handed to MHD by the gate, not yet taken up by its thread */
};

enum req_state { REQ_READING, REQ_WAITING, REQ_READY };

/* A request's memory is shared by MHD (until on_completed) and, while it is suspended, by
 * the owner that will reply (until http_reply). refs counts both; the last one frees it, so
 * an owner may still read the body after the server answered the request itself at stop. */
struct http_request {
	struct http_server *srv;
	struct MHD_Connection *conn;
	const struct http_route *route;
	const char *url, *method;
	char peer[INET6_ADDRSTRLEN];   /* TCP peer */
	char remote[INET6_ADDRSTRLEN]; /* client: the peer, or whom a trusted proxy names */
	struct util_buf body;	       /* at most max_body bytes */
	size_t discarded;
	bool too_large;
	int state;	/* enum req_state; atomic: the owner's thread publishes READY */
	bool suspended; /* went through http_suspend: the owner replies, then MHD resumes */
	bool waiting;	/* counted in srv->waiting */
	bool abandoned; /* under srv->mu: answered by http_stop; the owner's reply is dropped */
	int suspending; /* atomic: between parking and MHD_suspend_connection's return */
	int refs;	/* under srv->mu */
	struct http_request *park_prev, *park_next; /* under srv->mu */
	unsigned status;
	char *reply;
	size_t reply_len;
	const char *content_type;
	/* "Name: value" lines joined by CRLF, or NULL: on the heap, as few replies have one and a
	 * request without it fits the allocator's per-thread cache (below 1 KiB with ingest's) */
	char *extra_header;
	int64_t deadline;   /* monotonic ms by which the body must be in; 0 = none */
	max_align_t data[]; /* the route's req_data */
};

static void req_free(struct http_request *req)
{
	util_buf_free(&req->body);
	free(req->reply);
	free(req->extra_header);
	free(req);
}

/* Drops one reference (srv->mu held); returns true when the caller must free req. */
static bool req_unref_locked(struct http_request *req)
{
	return --req->refs == 0;
}

static void park_locked(struct http_server *srv, struct http_request *req)
{
	req->park_prev = NULL;
	req->park_next = srv->parked;
	if (srv->parked != NULL)
		srv->parked->park_prev = req;
	srv->parked = req;
}

static void unpark_locked(struct http_server *srv, struct http_request *req)
{
	if (req->park_prev != NULL)
		req->park_prev->park_next = req->park_next;
	else
		srv->parked = req->park_next;
	if (req->park_next != NULL)
		req->park_next->park_prev = req->park_prev;
	req->park_prev = req->park_next = NULL;
}

/* ---- accessors ---- */

const char *http_method(struct http_request *req)
{
	return req->method;
}

const char *http_url(struct http_request *req)
{
	return req->url;
}

const char *http_header(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct query_walk {
	int (*fn)(void *arg, const char *name, const char *value);
	void *arg;
	int r;
};

static enum MHD_Result query_one(void *cls, enum MHD_ValueKind kind, const char *key,
				 const char *value)
{
	struct query_walk *w = cls;

	(void)kind;
	w->r = w->fn(w->arg, key, value);
	return w->r == 0 ? MHD_YES : MHD_NO;
}

int http_query_each(struct http_request *req,
		    int (*fn)(void *arg, const char *name, const char *value), void *arg)
{
	struct query_walk w = {.fn = fn, .arg = arg};

	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_one, &w);
	return w.r;
}

const char *http_remote(struct http_request *req)
{
	return req->remote;
}

const char *http_peer(struct http_request *req)
{
	return req->peer;
}

const char *http_body(struct http_request *req, size_t *ret_len)
{
	*ret_len = req->body.len;
	return req->body.p != NULL ? req->body.p : "";
}

void *http_req_data(struct http_request *req)
{
	return req->data;
}

/* ---- replies ---- */

/* Stores the reply in req (body copied); a failed copy becomes an empty 500. */
static void set_reply(struct http_request *req, unsigned status, const char *content_type,
		      const char *body, size_t len, const char *extra_header)
{
	char *copy = malloc(len + 1);
	char *hdr = NULL;

	if (extra_header != NULL && *extra_header != '\0' && copy != NULL) {
		hdr = strdup(extra_header);
		if (hdr == NULL) {
			free(copy);
			copy = NULL;
		}
	}
	if (copy != NULL) {
		memcpy(copy, body, len);
		copy[len] = '\0';
	} else {
		status = 500;
		len = 0;
	}
	free(req->reply);
	req->reply = copy;
	req->reply_len = copy != NULL ? len : 0;
	req->status = status;
	req->content_type = content_type;
	free(req->extra_header);
	req->extra_header = hdr;
}

static void resume(struct http_server *srv, struct http_request *req)
{
	MHD_resume_connection(req->conn);
	__atomic_fetch_sub(&srv->resuming, 1, __ATOMIC_RELEASE);
}

void http_reply(struct http_request *req, unsigned status, const char *content_type,
		const char *body, size_t len, const char *extra_header)
{
	struct http_server *srv = req->srv;
	bool drop;

	if (!req->suspended) {
		/* Still inside the handler, on the MHD thread: it queues the reply. */
		set_reply(req, status, content_type, body, len, extra_header);
		__atomic_store_n(&req->state, REQ_READY, __ATOMIC_RELAXED);
		return;
	}
	pthread_mutex_lock(&srv->mu);
	if (req->abandoned) {
		/* http_stop answered it already (503); this reply is dropped. */
		drop = req_unref_locked(req);
		pthread_mutex_unlock(&srv->mu);
		if (drop)
			req_free(req);
		return;
	}
	unpark_locked(srv, req);
	set_reply(req, status, content_type, body, len, extra_header);
	__atomic_store_n(&req->state, REQ_READY, __ATOMIC_RELEASE);
	__atomic_fetch_add(&srv->resuming, 1, __ATOMIC_ACQUIRE);
	(void)req_unref_locked(req); /* MHD still holds its reference: never the last */
	pthread_mutex_unlock(&srv->mu);
	resume(srv, req);
}

void http_reply_json(struct http_request *req, unsigned status, const char *json)
{
	http_reply(req, status, "application/json", json, strlen(json), NULL);
}

void http_reply_error_hdr(struct http_request *req, unsigned status, const char *msg,
			  const char *extra_header)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;

	if (o != NULL && cJSON_AddStringToObject(o, "status", "error") != NULL &&
	    cJSON_AddStringToObject(o, "error", msg) != NULL)
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (text == NULL) {
		http_reply(req, 500, NULL, "", 0, NULL);
		return;
	}
	http_reply(req, status, "application/json", text, strlen(text), extra_header);
	cJSON_free(text);
}

void http_reply_error(struct http_request *req, unsigned status, const char *msg)
{
	http_reply_error_hdr(req, status, msg, NULL);
}

bool http_suspend(struct http_request *req)
{
	struct http_server *srv = req->srv;

	pthread_mutex_lock(&srv->mu);
	if (srv->stopping || !srv->suspend_ok) {
		pthread_mutex_unlock(&srv->mu);
		return false;
	}
	srv->waiting++;
	req->waiting = true;
	req->refs++; /* the owner's, dropped by its http_reply */
	req->suspended = true;
	__atomic_store_n(&req->state, REQ_WAITING, __ATOMIC_RELAXED);
	__atomic_store_n(&req->suspending, 1, __ATOMIC_RELAXED);
	park_locked(srv, req);
	pthread_mutex_unlock(&srv->mu);
	MHD_suspend_connection(req->conn);
	/* abandon_parked() must not resume before this suspension is done. */
	__atomic_store_n(&req->suspending, 0, __ATOMIC_RELEASE);
	return true;
}

static long waiting_count(struct http_server *srv, bool stop)
{
	long n;

	pthread_mutex_lock(&srv->mu);
	if (stop)
		srv->stopping = true;
	n = srv->waiting;
	pthread_mutex_unlock(&srv->mu);
	return n;
}

/* At stop, after the drain: every request still waiting for its owner is answered 503 (its
 * owner did not reply, so nothing was acknowledged) and resumed, so that MHD can be stopped
 * (it aborts when stopped with a suspended connection). Returns how many. */
static size_t abandon_parked(struct http_server *srv)
{
	static const char msg[] =
		"{\"status\":\"error\",\"error\":\"shutting down before the event was stored, "
		"retry later\"}";
	struct http_request *list, *next;
	size_t n = 0;

	pthread_mutex_lock(&srv->mu);
	srv->stopping = true;
	list = srv->parked;
	srv->parked = NULL;
	for (struct http_request *req = list; req != NULL; req = req->park_next) {
		req->abandoned = true;
		set_reply(req, 503, "application/json", msg, strlen(msg), "Retry-After: 5");
		__atomic_store_n(&req->state, REQ_READY, __ATOMIC_RELEASE);
		__atomic_fetch_add(&srv->resuming, 1, __ATOMIC_ACQUIRE);
		n++;
	}
	pthread_mutex_unlock(&srv->mu);
	/* A suspended connection is not processed, so none of these can complete (and be freed
	 * by MHD) before it is resumed here; the owner's reference keeps it alive too. */
	for (struct http_request *req = list; req != NULL; req = next) {
		next = req->park_next;
		while (__atomic_load_n(&req->suspending, __ATOMIC_ACQUIRE))
			util_sleep_ms(1);
		resume(srv, req);
	}
	return n;
}

static enum MHD_Result queue_reply(struct http_request *req)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	bool close_it = req->srv->gate != NULL && !req->srv->opts.keep_alive &&
			(req->extra_header == NULL ||
			 strncasecmp(req->extra_header, "Connection:", 11) != 0);

	resp = MHD_create_response_from_buffer(req->reply_len, req->reply, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
		return MHD_NO;
	req->reply = NULL; /* owned by resp now */
	if (req->content_type != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
	for (char *line = req->extra_header, *next; line != NULL && *line != '\0'; line = next) {
		char *colon, *eol = strstr(line, "\r\n");

		next = eol != NULL ? eol + 2 : line + strlen(line);
		if (eol != NULL)
			*eol = '\0';
		colon = strchr(line, ':');
		if (colon != NULL) {
			*colon = '\0';
			MHD_add_response_header(resp, line,
						colon[1] == ' ' ? colon + 2 : colon + 1);
		}
	}
	/* Without keep-alive every request of a gated listener comes through the gate on a new
	 * connection. */
	if (close_it)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(req->conn, req->status, resp);
	MHD_destroy_response(resp);
	metrics_http(req->route != NULL ? req->route->ep : METRICS_EP_OTHER, req->status);
	return ret;
}

/* ---- request lifecycle ---- */

static const struct http_route *find_route(struct http_server *srv, const char *method,
					   const char *url, bool *ret_path_known)
{
	*ret_path_known = false;
	for (size_t i = 0; i < srv->opts.n_routes; i++) {
		const struct http_route *r = &srv->opts.routes[i];
		bool match = r->prefix ? strncmp(url, r->path, strlen(r->path)) == 0
				       : strcmp(url, r->path) == 0;

		if (!match)
			continue;
		*ret_path_known = true;
		if (strcmp(method, r->method) == 0 ||
		    (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0))
			return r;
	}
	return NULL;
}

static void allowed_methods(struct http_server *srv, const char *url, char *out, size_t n)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < srv->opts.n_routes; i++) {
		const struct http_route *r = &srv->opts.routes[i];
		bool match = r->prefix ? strncmp(url, r->path, strlen(r->path)) == 0
				       : strcmp(url, r->path) == 0;

		if (match && strstr(out, r->method) == NULL)
			o += (size_t)snprintf(out + o, n - o, "%s%s", o ? ", " : "", r->method);
		if (o >= n)
			break;
	}
}

static void client_address(struct MHD_Connection *conn, char *out, size_t n)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;

	snprintf(out, n, "unknown");
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
			  (socklen_t)n);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
			  out, (socklen_t)n);
}

static int connection_fd(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci != NULL ? ci->connect_fd : -1;
}

/* A gated request's body must be in by its deadline (the gate saw its head in time). MHD's
 * idle timeout of the connection is kept within the time left (plus a second), so a client
 * that goes quiet is dropped by then; one that trickles is answered 408 on its next byte. Returns
 * false (408 written, the caller closes) past the deadline. */
static bool within_deadline(struct http_request *req)
{
	int64_t left;

	if (req->deadline == 0)
		return true;
	left = req->deadline - util_mono_ms();
	if (left <= 0) {
		gate_reply_timeout(req->srv->gate, connection_fd(req->conn), req->remote);
		return false;
	}
	/* A second past the deadline, so that the next byte of a trickle arrives (and gets its
	 * 408) before the idle timeout closes the connection without a word. */
	left = (left + 999) / 1000 + 1;
	if (left > (int64_t)req->srv->opts.connection_timeout_s)
		left = req->srv->opts.connection_timeout_s;
	MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)left);
	return true;
}

static bool append_body(struct http_request *req, const char *data, size_t len)
{
	size_t max = req->srv->opts.max_body;

	if (req->too_large || req->body.len + len > max) {
		req->too_large = true;
		req->discarded += len;
		/* Read a little past the limit so the client sees the 413; then hang up. */
		return req->discarded <= 4 * max;
	}
	return util_buf_add(&req->body, data, len) == 0;
}

bool http_is_json_type(const char *ct)
{
	size_t n = strlen("application/json");

	if (ct == NULL)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "application/json", n) == 0 &&
	       (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static enum MHD_Result run_handler(struct http_request *req)
{
	req->route->fn(req, req->route->ctx);
	/* A suspended request is answered from another thread, which may already have set its
	 * reply: it is queued when MHD calls on_request again after the resume, never here. */
	if (req->suspended)
		return MHD_YES;
	if (__atomic_load_n(&req->state, __ATOMIC_RELAXED) == REQ_READY)
		return queue_reply(req);
	http_reply_error(req, 500, "handler gave no reply");
	return queue_reply(req);
}

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key,
					    const char *value)
{
	(void)kind;
	(void)value;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		(*(int *)cls)++;
	return MHD_YES;
}

/* Answers 400 and closes for framing a proxy could read differently than we do (RFC 9112
 * 6.1, 6.3): Content-Length with Transfer-Encoding, or Content-Length twice. Returns true when
 * it replied. */
static bool refuse_ambiguous_framing(struct http_request *req)
{
	int n_cl = 0;
	const char *why = NULL;
	char body[128];
	int n;

	MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_content_length, &n_cl);
	if (n_cl > 0 && MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
		why = "both Content-Length and Transfer-Encoding";
	else if (n_cl > 1)
		why = "more than one Content-Length";
	if (why == NULL)
		return false;
	n = snprintf(body, sizeof(body), "{\"status\":\"error\",\"error\":\"%s\"}", why);
	http_reply(req, 400, "application/json", body, (size_t)n, "Connection: close");
	return true;
}

/* A new request: its memory (with the route's req_data) and its addresses. NULL when out of
 * memory. */
static struct http_request *new_request(struct http_server *srv, struct MHD_Connection *conn,
					const char *url, const char *method,
					const struct http_route *route)
{
	struct http_request *req = calloc(1, sizeof(*req) + (route != NULL ? route->req_data : 0));

	if (req == NULL)
		return NULL;
	req->srv = srv;
	req->conn = conn;
	req->url = url;
	req->method = method;
	req->route = route;
	req->refs = 1; /* MHD's, dropped by on_completed */
	if (srv->gate != NULL) {
		int fd = connection_fd(conn);

		req->deadline = gate_deadline(srv->gate, fd);
		gate_request_begun(srv->gate, fd);
	}
	client_address(conn, req->peer, sizeof(req->peer));
	netaddr_client(srv->opts.trusted_proxies, req->peer,
		       MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-For"),
		       MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Forwarded"), req->remote,
		       sizeof(req->remote));
	return req;
}

static enum MHD_Result reply_no_route(struct http_request *req, bool path_known)
{
	char allow[64], hdr[80];

	if (!path_known) {
		http_reply_error(req, 404, "not found");
		return queue_reply(req);
	}
	allowed_methods(req->srv, req->url, allow, sizeof(allow));
	snprintf(hdr, sizeof(hdr), "Allow: %s", allow);
	http_reply_error_hdr(req, 405, "method not allowed", hdr);
	return queue_reply(req);
}

/* The checks a request's headers allow before any body byte is read. */
static enum MHD_Result on_headers(struct http_request *req)
{
	struct MHD_Connection *conn = req->conn;
	const char *cl;

	/* Ambiguous framing is how requests are smuggled past proxies: refuse, and close the
	 * connection so the rest is never read. */
	if (refuse_ambiguous_framing(req))
		return queue_reply(req);
	/* Routes without a body are run on the next call: answering on the first one makes MHD
	 * close the connection (it cannot know no body follows). */
	if (!req->route->has_body)
		return MHD_YES;
	if (req->route->json_body &&
	    !http_is_json_type(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							   MHD_HTTP_HEADER_CONTENT_TYPE))) {
		http_reply_error(req, 415, "Content-Type must be application/json");
		return queue_reply(req);
	}
	cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL) {
		char *end;
		unsigned long long v = strtoull(cl, &end, 10);

		if (end == cl || *end != '\0' || v > req->srv->opts.max_body) {
			req->too_large = true;
			http_reply_error(req, 413, "body too large");
			return queue_reply(req);
		}
		/* One allocation for the whole body (it is within max_body). */
		(void)util_buf_reserve(&req->body, (size_t)v + 1);
	}
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct http_request *req = *con_cls;

	(void)version;
	if (req == NULL) {
		bool path_known;
		const struct http_route *route = find_route(srv, method, url, &path_known);

		req = new_request(srv, conn, url, method, route);
		if (req == NULL)
			return MHD_NO;
		*con_cls = req;
		if (!within_deadline(req))
			return MHD_NO;
		return route == NULL ? reply_no_route(req, path_known) : on_headers(req);
	}
	if (*upload_data_size != 0) {
		size_t len = *upload_data_size;

		*upload_data_size = 0;
		if (req->state != REQ_READING)
			return MHD_YES;
		if (!within_deadline(req))
			return MHD_NO;
		return append_body(req, upload_data, len) ? MHD_YES : MHD_NO;
	}
	/* Acquire: a reply set on another thread (http_reply of a suspended request) is read
	 * only after its READY was published. */
	switch (__atomic_load_n(&req->state, __ATOMIC_ACQUIRE)) {
	case REQ_READY:
		return queue_reply(req);
	case REQ_WAITING:
		return MHD_YES;
	default:
		break;
	}
	if (req->too_large) {
		http_reply_error(req, 413, "body too large");
		return queue_reply(req);
	}
	return run_handler(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_request *req = *con_cls;
	bool drop;

	(void)cls;
	if (req == NULL)
		return;
	if (req->srv->gate != NULL && req->srv->opts.keep_alive &&
	    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
		/* The connection may carry another request: its deadline starts now, and the
		 * idle timeout within_deadline() shortened is the configured one again. */
		gate_request_done(req->srv->gate, connection_fd(conn));
		MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
					  req->srv->opts.connection_timeout_s);
	}
	pthread_mutex_lock(&req->srv->mu);
	if (req->waiting)
		req->srv->waiting--;
	req->waiting = false;
	drop = req_unref_locked(req);
	pthread_mutex_unlock(&req->srv->mu);
	if (drop)
		req_free(req);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	static struct log_rl rl;
	unsigned long long sup;
	char line[256];
	size_t n;

	(void)cls;
	/* Clients that hang up mid-request make MHD talk: one line a second at most. */
	if (!log_rl_allow(&rl, 1000, &sup))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	log_warn("http: %s suppressed=%llu", line, sup);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct http_server *srv = cls;
	const union MHD_ConnectionInfo *ci;

	(void)socket_context;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		__atomic_sub_fetch(&srv->handing, 1, __ATOMIC_RELEASE);
	if (toe != MHD_CONNECTION_NOTIFY_CLOSED || srv->gate == NULL)
		return;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	gate_closed(srv->gate, connection_fd(conn), ci != NULL ? ci->client_addr : NULL);
}

static int hand_off(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
	struct http_server *srv = arg;

	/* MHD takes an added connection up later, in a worker thread: until then it is not in
	 * MHD's count of connections, and http_stop must not mistake it for none. */
	__atomic_add_fetch(&srv->handing, 1, __ATOMIC_RELEASE);
	if (MHD_add_connection(srv->d, fd, sa, len) == MHD_YES)
		return 0;
	__atomic_sub_fetch(&srv->handing, 1, __ATOMIC_RELEASE);
	return -EIO;
}

/* A gated listener's own socket (the gate accepts; MHD gets sockets from it). */
static int open_listener(const struct addrinfo *ai)
{
	int one = 1;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

static int start_gate(struct http_server *srv, int fd)
{
	const struct http_opts *o = &srv->opts;
	struct gate_opts go = {
		.name = srv->name,
		.listen_fd = fd,
		.max_connections = o->max_connections,
		.max_per_ip = o->max_connections_per_ip,
		.request_timeout_ms = (long)o->request_timeout_s * 1000,
		.idle_timeout_ms = (long)o->connection_timeout_s * 1000,
		.keep_alive = o->keep_alive,
		.hand_off = hand_off,
		.arg = srv,
	};

	return gate_start(&go, &srv->gate);
}

/* Starts MHD: listening itself, or (gated) fed by the gate with MHD_add_connection. */
static struct MHD_Daemon *start_mhd(struct http_server *srv, const struct addrinfo *ai, bool gated)
{
	const struct http_opts *o = &srv->opts;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	struct MHD_OptionItem opts[9];
	size_t n = 0;

	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* poll(2), not epoll: libmicrohttpd 0.9.75's epoll loop, when epoll_wait returns exactly
	 * its 128 events, calls it again with the full timeout although it has just marked those
	 * connections ready; with 128 or 256 keep-alive connections on a worker, all waiting,
	 * nothing moved for connection_timeout (it-hostile "keep-alive-many"). poll also spares
	 * the two epoll_ctl calls of every suspend and resume (bench/ingest: +12 % at c64). The
	 * gate keeps slow heads out of MHD, so its workers poll few connections. */
	if (o->threads > 0)
		flags |= MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME;
	else
		flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
					    (intptr_t)o->connection_timeout_s, NULL};
	opts[n++] =
		(struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv};
	if (gated) {
		/* The gate keeps the count: MHD's own limit must never refuse what it admitted
		 * (a refusal inside MHD's thread would not be reported back). */
		flags |= MHD_USE_NO_LISTEN_SOCKET;
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
						    (intptr_t)o->max_connections * 2 + 64, NULL};
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
						    (intptr_t)on_connection, srv};
	} else {
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr};
		if (o->listen_fd > 0) /* from systemd: MHD serves it instead of binding */
			opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET,
							    (intptr_t)o->listen_fd, NULL};
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
						    (intptr_t)o->max_connections, NULL};
	}
	if (o->threads > 1)
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
						    (intptr_t)o->threads, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	return MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_ARRAY, opts,
				MHD_OPTION_END);
}

/* Gated: our listener and the gate in front of MHD. 0 or -errno with a line in err. */
static int start_gated(struct http_server *srv, const struct addrinfo *ai, char *err,
		       size_t err_len)
{
	int fd = srv->opts.listen_fd > 0 ? srv->opts.listen_fd : open_listener(ai);
	int r;

	if (fd < 0) {
		snprintf(err, err_len, "http %s: cannot listen on %s: %s", srv->name,
			 srv->opts.listen, fd == -EADDRINUSE ? "address in use" : "not local?");
		return fd;
	}
	srv->d = start_mhd(srv, ai, true);
	r = srv->d != NULL ? start_gate(srv, fd) : -EIO;
	if (r < 0) {
		close(fd);
		snprintf(err, err_len, "http %s: cannot start the server", srv->name);
	}
	return r;
}

int http_start(const struct http_opts *o, struct http_server **ret, char *err, size_t err_len)
{
	struct http_server *srv;
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	char host[256], port_s[8];
	unsigned port;
	int rc;

	if (config_split_listen(o->listen, host, sizeof(host), &port) < 0) {
		snprintf(err, err_len, "http %s: bad listen address \"%s\"", o->name, o->listen);
		return -EINVAL;
	}
	snprintf(port_s, sizeof(port_s), "%u", port);
	rc = getaddrinfo(host, port_s, &hints, &ai);
	if (rc != 0) {
		snprintf(err, err_len, "http %s: cannot resolve \"%s\": %s", o->name, host,
			 gai_strerror(rc));
		return -EINVAL;
	}
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		freeaddrinfo(ai);
		snprintf(err, err_len, "http %s: out of memory", o->name);
		return -ENOMEM;
	}
	srv->opts = *o;
	pthread_mutex_init(&srv->mu, NULL);
	snprintf(srv->name, sizeof(srv->name), "%s", o->name);
	srv->suspend_ok = o->threads > 0;
	if (o->threads > 0 && o->request_timeout_s > 0) {
		rc = start_gated(srv, ai, err, err_len);
	} else {
		srv->d = start_mhd(srv, ai, false);
		rc = srv->d != NULL ? 0 : -EADDRINUSE;
		if (rc < 0)
			snprintf(err, err_len,
				 "http %s: cannot listen on %s (address in use or not local?)",
				 o->name, o->listen);
	}
	freeaddrinfo(ai);
	if (rc < 0) {
		http_free(srv);
		return rc;
	}
	*ret = srv;
	return 0;
}

unsigned http_port(struct http_server *srv)
{
	const union MHD_DaemonInfo *di;

	if (srv->gate != NULL)
		return gate_port(srv->gate);
	di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
	return di != NULL ? di->port : 0;
}

static unsigned open_connections(struct http_server *srv)
{
	const union MHD_DaemonInfo *di =
		MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

	return di != NULL ? di->num_connections : 0;
}

void http_stop(struct http_server *srv, long drain_ms)
{
	MHD_socket fd;
	int64_t deadline;
	size_t abandoned;

	if (srv == NULL)
		return;
	/* With socket activation systemd keeps its own copy of the listening socket: closing ours
	 * leaves new connections waiting in the backlog for the next process. Never shutdown(2)
	 * it, which would end systemd's copy too. */
	if (srv->gate != NULL) {
		gate_stop(srv->gate); /* accepts no more; heads arriving get a second */
		/* What it handed off last may not be MHD's yet (a worker takes it up): wait for
		 * that, or the count of open connections below would miss it and stopping MHD
		 * would close it unanswered. */
		deadline = util_mono_ms() + 1000;
		while (__atomic_load_n(&srv->handing, __ATOMIC_ACQUIRE) > 0 &&
		       util_mono_ms() < deadline)
			util_sleep_ms(1);
	} else {
		fd = MHD_quiesce_daemon(srv->d);
		if (fd != MHD_INVALID_SOCKET)
			close(fd);
	}
	/* Requests we owe a reply (their event is with the writer) are answered before the
	 * server stops; from now on a callback is answered 503 instead of waiting, and a client
	 * still sending its body is cut off and will retry. MHD must not be stopped with a
	 * connection still suspended. */
	deadline = util_mono_ms() + drain_ms;
	while (waiting_count(srv, true) > 0 && util_mono_ms() < deadline)
		util_sleep_ms(2);
	abandoned = abandon_parked(srv);
	if (abandoned > 0)
		log_warn(
			"http %s: answered 503 to requests still waiting after the drain count=%zu",
			srv->name, abandoned);
	/* Give the 503s (and replies resumed just before) a moment to be sent; MHD must not be
	 * stopped while a resume call is still under way. */
	deadline = util_mono_ms() + 2000;
	while (waiting_count(srv, true) > 0 && util_mono_ms() < deadline)
		util_sleep_ms(2);
	while (__atomic_load_n(&srv->resuming, __ATOMIC_ACQUIRE) > 0)
		util_sleep_ms(1);
	/* A connection accepted just before the quiesce may still be reading its request or
	 * sending its reply (a 503 by now): stopping MHD would close it without one. Give those
	 * a second; idle keep-alive connections are closed after it. */
	deadline = util_mono_ms() + 1000;
	while (open_connections(srv) > 0 && util_mono_ms() < deadline)
		util_sleep_ms(2);
	MHD_stop_daemon(srv->d);
	srv->d = NULL;
}

void http_free(struct http_server *srv)
{
	if (srv == NULL)
		return;
	gate_stop(srv->gate);
	if (srv->d != NULL)
		MHD_stop_daemon(srv->d);
	gate_free(srv->gate);
	pthread_mutex_destroy(&srv->mu);
	free(srv);
}
