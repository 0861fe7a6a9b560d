/* libmicrohttpd glue: both listeners, the route table lookup, body collection with limits,
 * reply building, and the callback route (authenticate → parse → hand to the store writer →
 * suspend until the commit is done). Runs on MHD's threads; http_reply() may also be called
 * from the store writer thread to complete a suspended request. */
#include "http.h"

#include <errno.h>
#include <pthread.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <microhttpd.h>

#include "callback.h"
#include "config.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"

struct http_server {
	struct MHD_Daemon *d;
	struct http_opts opts;
	char name[16];
	pthread_mutex_t mu;
	bool stopping; /* under mu: no more suspensions (MHD must not stop with any) */
	long waiting;  /* under mu: requests suspended for a commit and not yet answered */
	bool suspend_ok;
};

enum req_state { REQ_READING, REQ_WAITING, REQ_READY };

struct http_request {
	struct http_server *srv;
	struct MHD_Connection *conn;
	const struct http_route *route;
	const char *url, *method;
	char remote[INET6_ADDRSTRLEN];
	char *body;
	size_t body_len, body_cap, discarded;
	bool too_large;
	enum req_state state;
	bool suspended;
	bool waiting; /* counted in srv->waiting */
	unsigned status;
	char *reply;
	size_t reply_len;
	const char *content_type;
	char extra_header[128];
	struct store_req sreq; /* the callback route's write request */
};

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

const char *http_remote(struct http_request *req)
{
	return req->remote;
}

const char *http_body(struct http_request *req, size_t *ret_len)
{
	*ret_len = req->body_len;
	return req->body != NULL ? req->body : "";
}

int http_json_escape(const char *s, char *out, size_t n)
{
	size_t o = 0;

	if (n < 3)
		return -1;
	out[o++] = '"';
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		size_t len;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			len = 2;
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			len = 6;
		} else {
			esc[0] = (char)c;
			len = 1;
		}
		if (o + len + 2 > n)
			return -1;
		memcpy(out + o, esc, len);
		o += len;
	}
	out[o++] = '"';
	out[o] = '\0';
	return (int)o;
}

/* ---- replies ---- */

void http_reply(struct http_request *req, unsigned status, const char *content_type,
		const char *body, size_t len, const char *extra_header)
{
	char *copy = malloc(len + 1);

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
	snprintf(req->extra_header, sizeof(req->extra_header), "%s",
		 extra_header != NULL ? extra_header : "");
	req->state = REQ_READY;
	if (req->suspended) {
		req->suspended = false;
		MHD_resume_connection(req->conn);
	}
}

void http_reply_json(struct http_request *req, unsigned status, const char *json)
{
	http_reply(req, status, "application/json", json, strlen(json), NULL);
}

void http_reply_error(struct http_request *req, unsigned status, const char *msg)
{
	char esc[512], body[600];
	int n;

	if (http_json_escape(msg, esc, sizeof(esc)) < 0)
		snprintf(esc, sizeof(esc), "\"error\"");
	n = snprintf(body, sizeof(body), "{\"status\":\"error\",\"error\":%s}", esc);
	http_reply(req, status, "application/json", body, (size_t)n, NULL);
}

static void unwait(struct http_request *req)
{
	if (req->waiting) {
		req->waiting = false;
		pthread_mutex_lock(&req->srv->mu);
		req->srv->waiting--;
		pthread_mutex_unlock(&req->srv->mu);
	}
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
	pthread_mutex_unlock(&srv->mu);
	req->state = REQ_WAITING;
	req->waiting = true;
	req->suspended = true;
	MHD_suspend_connection(req->conn);
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

static enum MHD_Result queue_reply(struct http_request *req)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(req->reply_len, req->reply, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
		return MHD_NO;
	req->reply = NULL; /* owned by resp now */
	if (req->content_type != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
	if (req->extra_header[0] != '\0') {
		char *colon = strchr(req->extra_header, ':');

		if (colon != NULL) {
			*colon = '\0';
			MHD_add_response_header(resp, req->extra_header,
						colon[1] == ' ' ? colon + 2 : colon + 1);
		}
	}
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

static bool append_body(struct http_request *req, const char *data, size_t len)
{
	size_t max = req->srv->opts.max_body;

	if (req->too_large || req->body_len + len > max) {
		req->too_large = true;
		req->discarded += len;
		/* Read a little past the limit so the client sees the 413; then hang up. */
		return req->discarded <= 4 * max;
	}
	if (req->body_len + len + 1 > req->body_cap) {
		size_t cap = req->body_cap ? req->body_cap : 1024;
		char *nb;

		while (cap < req->body_len + len + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		nb = realloc(req->body, cap);
		if (nb == NULL)
			return false;
		req->body = nb;
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
	req->body[req->body_len] = '\0';
	return true;
}

static bool is_json_type(const char *ct)
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
	if (req->state == REQ_READY)
		return queue_reply(req);
	if (req->state == REQ_WAITING)
		return MHD_YES;
	http_reply_error(req, 500, "handler gave no reply");
	return queue_reply(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct http_request *req = *con_cls;

	(void)version;
	if (req == NULL) {
		const char *cl;
		bool path_known;

		req = calloc(1, sizeof(*req));
		if (req == NULL)
			return MHD_NO;
		req->srv = srv;
		req->conn = conn;
		req->url = url;
		req->method = method;
		client_address(conn, req->remote, sizeof(req->remote));
		*con_cls = req;

		req->route = find_route(srv, method, url, &path_known);
		if (req->route == NULL) {
			if (path_known) {
				char allow[64], hdr[80];

				allowed_methods(srv, url, allow, sizeof(allow));
				snprintf(hdr, sizeof(hdr), "Allow: %s", allow);
				static const char msg[] =
					"{\"status\":\"error\",\"error\":\"method not allowed\"}";

				http_reply(req, 405, "application/json", msg, strlen(msg), hdr);
			} else {
				http_reply_error(req, 404, "not found");
			}
			return queue_reply(req);
		}
		/* Both framings at once is how requests are smuggled past proxies (RFC 9112
		 * 6.1): refuse, and close the connection so the rest is never read. */
		if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL &&
		    MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						MHD_HTTP_HEADER_CONTENT_LENGTH) != NULL) {
			static const char msg[] = "{\"status\":\"error\",\"error\":\"both "
						  "Content-Length and Transfer-Encoding\"}";

			http_reply(req, 400, "application/json", msg, strlen(msg),
				   "Connection: close");
			return queue_reply(req);
		}
		/* Routes without a body are run on the next call: answering on the first one
		 * makes MHD close the connection (it cannot know no body follows). */
		if (!req->route->has_body)
			return MHD_YES;
		if (req->route->json_body &&
		    !is_json_type(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							      MHD_HTTP_HEADER_CONTENT_TYPE))) {
			http_reply_error(req, 415, "Content-Type must be application/json");
			return queue_reply(req);
		}
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						 MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL) {
			char *end;
			unsigned long long v = strtoull(cl, &end, 10);

			if (end == cl || *end != '\0' || v > srv->opts.max_body) {
				req->too_large = true;
				http_reply_error(req, 413, "body too large");
				return queue_reply(req);
			}
		}
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		size_t len = *upload_data_size;

		*upload_data_size = 0;
		if (req->state != REQ_READING)
			return MHD_YES;
		return append_body(req, upload_data, len) ? MHD_YES : MHD_NO;
	}
	switch (req->state) {
	case REQ_READY:
		return queue_reply(req);
	case REQ_WAITING:
		return MHD_YES;
	case REQ_READING:
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

	(void)cls;
	(void)conn;
	(void)toe;
	if (req == NULL)
		return;
	unwait(req);
	free(req->body);
	free(req->reply);
	free(req);
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

int http_start(const struct http_opts *o, struct http_server **ret, char *err, size_t err_len)
{
	struct http_server *srv;
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	char host[256], port_s[8];
	unsigned port, flags;
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
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (o->threads > 0) {
		flags |= MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
		srv->suspend_ok = true;
	} else {
		flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
	}
	srv->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, srv,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
				  ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
				  MHD_OPTION_CONNECTION_TIMEOUT, o->connection_timeout_s,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
				  o->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
				  o->threads > 1 ? o->threads : 0, MHD_OPTION_END);
	freeaddrinfo(ai);
	if (srv->d == NULL) {
		snprintf(err, err_len,
			 "http %s: cannot listen on %s (address in use or not local?)", o->name,
			 o->listen);
		free(srv);
		return -EADDRINUSE;
	}
	*ret = srv;
	return 0;
}

unsigned http_port(struct http_server *srv)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);

	return di != NULL ? di->port : 0;
}

void http_stop(struct http_server *srv, long drain_ms)
{
	MHD_socket fd;
	int64_t deadline;

	if (srv == NULL)
		return;
	fd = MHD_quiesce_daemon(srv->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	/* Requests we owe a reply (their event is with the writer) are answered before the
	 * server stops; from now on a callback is answered 503 instead of waiting, and a client
	 * still sending its body is cut off and will retry. MHD must not be stopped with a
	 * connection still suspended. */
	deadline = util_mono_ms() + drain_ms;
	while (waiting_count(srv, true) > 0 && util_mono_ms() < deadline) {
		struct timespec ts = {0, 2 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
	if (waiting_count(srv, true) > 0)
		log_warn("http %s: stopping with replies still owed count=%ld", srv->name,
			 waiting_count(srv, true));
	MHD_stop_daemon(srv->d);
	pthread_mutex_destroy(&srv->mu);
	free(srv);
}

/* ---- the callback route ---- */

static struct log_rl rl_auth, rl_bad, rl_store, rl_throttle;

/* Failed signatures are budgeted per source address (AUTH_BURST, then AUTH_RATE a second):
 * past it, a source gets 429 without its body being checked, so guessing keys is slow and
 * cheap for us. A valid callback never spends the budget. The table is small and lossy (a
 * slot is taken over by another address), which can only make throttling forget. */
#define AUTH_SLOTS 1024
#define AUTH_BURST 20.0
#define AUTH_RATE  1.0

static struct {
	pthread_mutex_t mu;
	int64_t last_failure_ms; /* atomic: no lookup at all when nobody failed lately */
	struct {
		char addr[INET6_ADDRSTRLEN];
		struct ratelimit_bucket bucket;
	} slot[AUTH_SLOTS];
} auth_budget = {.mu = PTHREAD_MUTEX_INITIALIZER};

static size_t auth_slot(const char *addr)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (; *addr != '\0'; addr++)
		h = (h ^ (unsigned char)*addr) * 1099511628211ULL;
	return (size_t)(h % AUTH_SLOTS);
}

/* Milliseconds the address must wait, 0 when it may try. */
static int64_t auth_throttled(const char *addr, int64_t now)
{
	size_t i;
	int64_t wait = 0;

	if (now - __atomic_load_n(&auth_budget.last_failure_ms, __ATOMIC_RELAXED) > 60000)
		return 0;
	i = auth_slot(addr);
	pthread_mutex_lock(&auth_budget.mu);
	if (strcmp(auth_budget.slot[i].addr, addr) == 0)
		wait = ratelimit_wait_ms(&auth_budget.slot[i].bucket, now);
	pthread_mutex_unlock(&auth_budget.mu);
	return wait;
}

static void auth_failed(const char *addr, int64_t now)
{
	size_t i = auth_slot(addr);

	__atomic_store_n(&auth_budget.last_failure_ms, now, __ATOMIC_RELAXED);
	pthread_mutex_lock(&auth_budget.mu);
	if (strcmp(auth_budget.slot[i].addr, addr) != 0) {
		snprintf(auth_budget.slot[i].addr, sizeof(auth_budget.slot[i].addr), "%s", addr);
		ratelimit_bucket_init(&auth_budget.slot[i].bucket, AUTH_RATE, AUTH_BURST, now);
	}
	(void)ratelimit_take(&auth_budget.slot[i].bucket, now);
	pthread_mutex_unlock(&auth_budget.mu);
}

/* Runs on the store writer thread once the event's transaction committed or failed. */
static void callback_done(struct store_req *r)
{
	struct http_request *req = r->user;
	char body[160];
	int n;

	if (r->result == 0) {
		if (r->conflict && !r->duplicate) {
			char pid[160];

			log_warn("callback conflicts with known state payment_id=\"%s\" status=%s "
				 "event_id=%lld",
				 log_quote(r->ev.payment_id, pid, sizeof(pid)),
				 payment_status_name(r->ev.status), (long long)r->event_id);
		}
		n = snprintf(body, sizeof(body),
			     "{\"status\":\"ok\",\"event_id\":%lld,\"duplicate\":%s}",
			     (long long)r->event_id, r->duplicate ? "true" : "false");
		http_reply(req, 200, "application/json", body, (size_t)n, NULL);
		return;
	}
	unsigned long long sup;

	metrics_inc(METRICS_STORE_UNAVAILABLE, 1);
	if (log_rl_allow(&rl_store, 1000, &sup))
		log_err("callback not stored reason=%s remote=%s detail=\"%s\" suppressed=%llu",
			r->result == -ENOSPC	  ? "disk_full"
			: r->result == -EAGAIN	  ? "busy"
			: r->result == -ESHUTDOWN ? "shutting_down"
						  : "storage_error",
			req->remote,
			store_errmsg(((struct http_callback_ctx *)req->route->ctx)->store), sup);
	static const char msg[] =
		"{\"status\":\"error\",\"error\":\"event not stored, retry later\"}";

	http_reply(req, 503, "application/json", msg, strlen(msg), "Retry-After: 5");
}

void http_callback_handler(struct http_request *req, void *ctx)
{
	struct http_callback_ctx *cb = ctx;
	struct event ev;
	char why[128];
	unsigned long long sup;
	int r;

	int64_t now = util_mono_ms(), wait = auth_throttled(req->remote, now);

	if (wait > 0) {
		char hdr[48];

		metrics_inc(METRICS_AUTH_THROTTLED, 1);
		if (log_rl_allow(&rl_throttle, 1000, &sup))
			log_warn("callback throttled reason=too_many_auth_failures remote=%s "
				 "suppressed=%llu",
				 req->remote, sup);
		snprintf(hdr, sizeof(hdr), "Retry-After: %lld", (long long)(wait + 999) / 1000);
		static const char msg[] =
			"{\"status\":\"error\",\"error\":\"too many bad signatures\"}";

		http_reply(req, 429, "application/json", msg, strlen(msg), hdr);
		return;
	}
	if (callback_verify(&cb->keys, http_header(req, "X-Callback-Api-Key"), req->body,
			    req->body_len) < 0) {
		auth_failed(req->remote, now);
		metrics_inc(METRICS_AUTH_FAILURES, 1);
		if (log_rl_allow(&rl_auth, 1000, &sup))
			log_warn("callback rejected reason=%s remote=%s suppressed=%llu",
				 http_header(req, "X-Callback-Api-Key") ? "bad_signature"
									: "no_signature",
				 req->remote, sup);
		http_reply_error(req, 401, "missing or invalid X-Callback-Api-Key signature");
		return;
	}
	if (callback_parse(req->body != NULL ? req->body : "", req->body_len, &ev, why,
			   sizeof(why)) < 0) {
		metrics_inc(METRICS_BAD_REQUESTS, 1);
		if (log_rl_allow(&rl_bad, 1000, &sup))
			log_warn("callback rejected reason=\"%s\" remote=%s suppressed=%llu", why,
				 req->remote, sup);
		http_reply_error(req, 400, why);
		return;
	}
	snprintf(ev.remote_addr, sizeof(ev.remote_addr), "%s", req->remote);
	store_req_event(&req->sreq, &ev);
	req->sreq.done = callback_done;
	req->sreq.user = req;
	/* Suspend before submitting: the writer may finish before this function returns. */
	if (!http_suspend(req)) {
		req->sreq.result = -ESHUTDOWN;
		callback_done(&req->sreq);
		return;
	}
	r = store_submit(cb->store, &req->sreq);
	if (r < 0) {
		req->sreq.result = r;
		callback_done(&req->sreq);
	}
}
