/* The public listener's front door (see gate.h): the accept policy (per-address limit, total
 * limit and a reserve for addresses that hold no connection yet), the request-head deadline
 * with its 408, the Content-Length check that keeps libmicrohttpd 0.9.75 from answering twice,
 * and the hand-off. One thread (gate_main) owns the listener and every connection until it is
 * handed off; MHD's threads only call gate_closed(), gate_deadline() and gate_reply_timeout(). */
#include "gate.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define PEEK_MAX      (64 * 1024) /* past this MHD takes the head and answers 414/431 itself */
#define LINGER_MS     2000	  /* after our reply: read and drop what the client still sends */
#define TICK_MS	      100
#define IP_BUCKETS    1024
#define ACCEPT_ROUND  256
#define FD_TABLE_MAX  (1 << 20)
#define STOP_GRACE_MS 1000 /* at stop: heads already accepted may finish arriving */
#define REPLY_408     "{\"status\":\"error\",\"error\":\"request not complete in time\"}"
#define REPLY_400_CL  "{\"status\":\"error\",\"error\":\"malformed Content-Length\"}"
#define REPLY_413_CL  "{\"status\":\"error\",\"error\":\"body too large\"}"

enum conn_phase { PHASE_HEAD, PHASE_LINGER };

struct conn {
	int fd;
	enum conn_phase phase;
	struct sockaddr_storage sa;
	socklen_t sa_len;
	char remote[INET6_ADDRSTRLEN];
	int64_t deadline, idle_deadline; /* monotonic ms */
	size_t seen;			 /* bytes of head seen at the last look */
	struct conn *prev, *next;
};

struct ka_link {
	int prev, next; /* fds, -1 at the ends */
	bool linked;
};

struct ip_slot {
	uint8_t key[16];
	unsigned n;
	struct ip_slot *next;
};

struct gate {
	struct gate_opts o;
	int epfd, wakefd;
	pthread_t thread;
	bool running;
	bool draining;	     /* gate thread: stopping, the listener no longer watched */
	int64_t drain_until; /* gate thread: then the heads still arriving are cut off */
	unsigned reserve;    /* the last slots go to addresses holding none */
	struct conn *conns;
	int64_t accept_paused_until;
	/* shared with MHD's threads */
	pthread_mutex_t mu;
	struct ip_slot *ips[IP_BUCKETS]; /* under mu */
	unsigned total;			 /* under mu: open connections, gate and MHD */
	int64_t *deadline_by_fd;	 /* atomic entries */
	size_t n_fd;
	/* Keep-alive connections back in MHD between two requests, by fd, oldest deadline
	 * first (each is the end of a request plus the same timeout, so appending keeps the
	 * order): under mu, NULL without keep-alive. */
	struct ka_link *ka;
	int ka_head, ka_tail;
	struct log_rl rl_refused, rl_timeout, rl_framing;
	char buf[PEEK_MAX];
};

static const char listener_tag, wake_tag;

/* ---- the request head ---- */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The Content-Length value between v and end: digits, optional surrounding blanks, 64 bits. */
static enum gate_head check_length(const char *v, const char *end)
{
	uint64_t n = 0;
	bool digits = false;

	while (v < end && is_blank(*v))
		v++;
	while (end > v && is_blank(end[-1]))
		end--;
	for (; v < end; v++) {
		unsigned d = (unsigned)(unsigned char)*v - '0';

		if (d > 9)
			return GATE_HEAD_BAD_LENGTH;
		if (n > (UINT64_MAX - d) / 10)
			return GATE_HEAD_LENGTH_TOO_LONG;
		n = n * 10 + d;
		digits = true;
	}
	return digits ? GATE_HEAD_OK : GATE_HEAD_BAD_LENGTH;
}

/* One header line [p, end) (no line terminator). *prev_cl says whether the line before was a
 * Content-Length, so that a folded continuation of it is refused. */
static enum gate_head check_line(const char *p, const char *end, bool *prev_cl)
{
	static const char name[] = "content-length";
	const char *colon;
	size_t nlen;

	if (p < end && is_blank(*p))
		return *prev_cl ? GATE_HEAD_BAD_LENGTH : GATE_HEAD_OK; /* obs-fold */
	*prev_cl = false;
	colon = memchr(p, ':', (size_t)(end - p));
	if (colon == NULL)
		return GATE_HEAD_OK; /* MHD answers that one itself, once */
	nlen = (size_t)(colon - p);
	while (nlen > 0 && is_blank(p[nlen - 1]))
		nlen--;
	if (nlen != sizeof(name) - 1 || strncasecmp(p, name, nlen) != 0)
		return GATE_HEAD_OK;
	*prev_cl = true;
	if ((size_t)(colon - p) != nlen)
		return GATE_HEAD_BAD_LENGTH; /* whitespace before the colon (RFC 9112 5.1) */
	return check_length(colon + 1, end);
}

enum gate_head gate_scan_head(const char *p, size_t n, size_t *ret_len)
{
	const char *end = p + n, *s = p, *line;
	enum gate_head worst = GATE_HEAD_OK;
	bool prev_cl = false, first = true;

	/* Empty lines before the request line are allowed (RFC 9112 2.2). */
	while (s < end && (*s == '\n' || (*s == '\r' && s + 1 < end && s[1] == '\n')))
		s += *s == '\n' ? 1 : 2;
	for (line = s; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *le;

		if (nl == NULL)
			return GATE_HEAD_INCOMPLETE;
		le = nl > line && nl[-1] == '\r' ? nl - 1 : nl;
		if (le == line && !first) {
			*ret_len = (size_t)(nl + 1 - p);
			return worst;
		}
		if (!first && worst == GATE_HEAD_OK)
			worst = check_line(line, le, &prev_cl);
		first = false;
		line = nl + 1;
	}
	return GATE_HEAD_INCOMPLETE;
}

/* ---- addresses ---- */

static void addr_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff; /* as an IPv4-mapped IPv6 address */
		memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	}
}

static void addr_text(const struct sockaddr *sa, char *out, size_t n)
{
	snprintf(out, n, "unknown");
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
			  (socklen_t)n);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
			  out, (socklen_t)n);
}

static size_t ip_bucket(const uint8_t key[16])
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 1099511628211ULL;
	return (size_t)(h % IP_BUCKETS);
}

/* The slot of key (mu held), created (with n = 0) when create is true. NULL when absent or out
 * of memory. */
static struct ip_slot *ip_slot(struct gate *g, const uint8_t key[16], bool create)
{
	size_t b = ip_bucket(key);
	struct ip_slot *s;

	for (s = g->ips[b]; s != NULL; s = s->next)
		if (memcmp(s->key, key, 16) == 0)
			return s;
	if (!create)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	memcpy(s->key, key, 16);
	s->next = g->ips[b];
	g->ips[b] = s;
	return s;
}

/* Frees slot s of key when it counts no connection (mu held). */
static void ip_slot_gc(struct gate *g, const uint8_t key[16], struct ip_slot *s)
{
	struct ip_slot **pp;

	if (s->n > 0)
		return;
	for (pp = &g->ips[ip_bucket(key)]; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			free(s);
			return;
		}
	}
}

/* One connection of key closed (mu held). */
static void ip_slot_drop(struct gate *g, const uint8_t key[16])
{
	struct ip_slot *s = ip_slot(g, key, false);

	if (s == NULL || s->n == 0)
		return;
	s->n--;
	g->total--;
	ip_slot_gc(g, key, s);
}

/* The accept policy. NULL when the connection may stay, else the reason it may not. */
static const char *admit(struct gate *g, const struct sockaddr *sa, unsigned *ret_open)
{
	uint8_t key[16];
	struct ip_slot *s;
	const char *why = NULL;

	addr_key(sa, key);
	pthread_mutex_lock(&g->mu);
	s = ip_slot(g, key, true);
	*ret_open = s != NULL ? s->n : 0;
	if (s == NULL)
		why = "out_of_memory";
	else if (g->o.max_per_ip > 0 && s->n >= g->o.max_per_ip)
		why = "per_ip_limit";
	else if (g->total >= g->o.max_connections)
		why = "capacity";
	else if (s->n > 0 && g->total >= g->o.max_connections - g->reserve)
		why = "capacity"; /* the reserve is for addresses that hold nothing yet */
	if (why == NULL) {
		s->n++;
		g->total++;
	} else if (s != NULL) {
		ip_slot_gc(g, key, s); /* created for nothing */
	}
	pthread_mutex_unlock(&g->mu);
	return why;
}

static bool ka_fd_ok(const struct gate *g, int fd)
{
	return g != NULL && g->ka != NULL && fd >= 0 && (size_t)fd < g->n_fd;
}

/* Under mu. */
static void ka_unlink(struct gate *g, int fd)
{
	struct ka_link *l = &g->ka[fd];

	if (!l->linked)
		return;
	if (l->prev >= 0)
		g->ka[l->prev].next = l->next;
	else
		g->ka_head = l->next;
	if (l->next >= 0)
		g->ka[l->next].prev = l->prev;
	else
		g->ka_tail = l->prev;
	l->linked = false;
}

void gate_closed(struct gate *g, int fd, const struct sockaddr *sa)
{
	uint8_t key[16];

	if (g == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	/* Before MHD closes fd (it notifies first): the sweep can never shut down a number
	 * that a new connection got in the meantime. */
	if (ka_fd_ok(g, fd))
		ka_unlink(g, fd);
	if (sa != NULL) {
		addr_key(sa, key);
		ip_slot_drop(g, key);
	}
	pthread_mutex_unlock(&g->mu);
}

void gate_request_begun(struct gate *g, int fd)
{
	if (!ka_fd_ok(g, fd))
		return;
	pthread_mutex_lock(&g->mu);
	ka_unlink(g, fd);
	pthread_mutex_unlock(&g->mu);
}

void gate_request_done(struct gate *g, int fd)
{
	struct ka_link *l;

	if (!ka_fd_ok(g, fd))
		return;
	__atomic_store_n(&g->deadline_by_fd[fd], util_mono_ms() + g->o.request_timeout_ms,
			 __ATOMIC_RELAXED);
	pthread_mutex_lock(&g->mu);
	ka_unlink(g, fd);
	l = &g->ka[fd];
	l->prev = g->ka_tail;
	l->next = -1;
	l->linked = true;
	if (g->ka_tail >= 0)
		g->ka[g->ka_tail].next = fd;
	else
		g->ka_head = fd;
	g->ka_tail = fd;
	pthread_mutex_unlock(&g->mu);
}

/* Keep-alive connections whose next request is not complete by its deadline (idle, or a
 * head trickling into MHD, which cannot tell the two apart) are shut down; MHD then sees the
 * end of the stream and closes them. Quietly: an idle keep-alive connection closed is not
 * an error. */
static void ka_sweep(struct gate *g, int64_t now)
{
	if (g->ka == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	while (g->ka_head >= 0 &&
	       __atomic_load_n(&g->deadline_by_fd[g->ka_head], __ATOMIC_RELAXED) <= now) {
		int fd = g->ka_head;

		ka_unlink(g, fd);
		(void)shutdown(fd, SHUT_RDWR);
		metrics_inc(METRICS_HTTP_KEEPALIVE_CLOSED, 1);
	}
	pthread_mutex_unlock(&g->mu);
}

int64_t gate_deadline(struct gate *g, int fd)
{
	if (g == NULL || fd < 0 || (size_t)fd >= g->n_fd)
		return 0;
	return __atomic_load_n(&g->deadline_by_fd[fd], __ATOMIC_RELAXED);
}

/* ---- connections in the gate ---- */

static void count_refusal(const char *why)
{
	metrics_inc(strcmp(why, "per_ip_limit") == 0 ? METRICS_HTTP_REFUSED_PER_IP
						     : METRICS_HTTP_REFUSED_CAPACITY,
		    1);
}

static void conn_unlink(struct gate *g, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		g->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

/* Closes a connection the gate still owns; its address gets its slot back. */
static void conn_close(struct gate *g, struct conn *c)
{
	uint8_t key[16];

	epoll_ctl(g->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conn_unlink(g, c);
	addr_key((const struct sockaddr *)&c->sa, key);
	pthread_mutex_lock(&g->mu);
	ip_slot_drop(g, key);
	pthread_mutex_unlock(&g->mu);
	free(c);
}

/* Reads and drops what a client sends after our reply, until it closes. */
static void on_linger_data(struct gate *g, struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, g->buf, sizeof(g->buf), MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			conn_close(g, c);
		return;
	}
}

/* Sends a whole small reply without blocking (a fresh socket's buffer takes it). */
static void send_reply(int fd, unsigned status, const char *reason, const char *body)
{
	char msg[512], date[64];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	if (gmtime_r(&now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
		date[0] = '\0';
	n = snprintf(msg, sizeof(msg),
		     "HTTP/1.1 %u %s\r\nDate: %s\r\nConnection: close\r\n"
		     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		     status, reason, date, strlen(body), body);

	if (n > 0 && (size_t)n < sizeof(msg))
		(void)send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Answers and closes gracefully: what the client still sends is read and dropped for a moment,
 * so that closing with unread bytes does not reset the connection before the reply is read. */
static void conn_answer(struct gate *g, struct conn *c, unsigned status, const char *reason,
			const char *body)
{
	send_reply(c->fd, status, reason, body);
	shutdown(c->fd, SHUT_WR);
	c->phase = PHASE_LINGER;
	c->deadline = util_mono_ms() + LINGER_MS;
	on_linger_data(g, c); /* edge-triggered: what is already there is read now */
}

void gate_reply_timeout(struct gate *g, int fd, const char *remote)
{
	unsigned long long sup;

	send_reply(fd, 408, "Request Timeout", REPLY_408);
	metrics_inc(METRICS_HTTP_REQUEST_TIMEOUT, 1);
	if (log_rl_allow(&g->rl_timeout, 1000, &sup))
		log_warn("http %s: request not complete in time phase=body remote=%s "
			 "suppressed=%llu",
			 g->o.name, remote, sup);
}

static void hand_off(struct gate *g, struct conn *c)
{
	int fd = c->fd;
	struct sockaddr_storage sa = c->sa;
	socklen_t len = c->sa_len;

	epoll_ctl(g->epfd, EPOLL_CTL_DEL, fd, NULL);
	conn_unlink(g, c);
	if ((size_t)fd < g->n_fd)
		__atomic_store_n(&g->deadline_by_fd[fd], c->deadline, __ATOMIC_RELAXED);
	free(c);
	if (g->o.hand_off(g->o.arg, fd, (const struct sockaddr *)&sa, len) < 0)
		gate_closed(g, -1, (const struct sockaddr *)&sa);
}

static void on_framing_error(struct gate *g, struct conn *c, enum gate_head h)
{
	unsigned long long sup;

	metrics_inc(METRICS_HTTP_BAD_FRAMING, 1);
	if (log_rl_allow(&g->rl_framing, 1000, &sup))
		log_warn("http %s: request refused reason=%s remote=%s suppressed=%llu", g->o.name,
			 h == GATE_HEAD_BAD_LENGTH ? "bad_content_length"
						   : "content_length_too_large",
			 c->remote, sup);
	if (h == GATE_HEAD_BAD_LENGTH)
		conn_answer(g, c, 400, "Bad Request", REPLY_400_CL);
	else
		conn_answer(g, c, 413, "Content Too Large", REPLY_413_CL);
}

/* A client that half-closed before its head was complete will send nothing more: close. */
static bool h_incomplete_at_eof(struct gate *g, struct conn *c, size_t n, uint32_t events)
{
	size_t head_len;

	if (!(events & (EPOLLRDHUP | EPOLLHUP)) ||
	    gate_scan_head(g->buf, n, &head_len) != GATE_HEAD_INCOMPLETE || n == sizeof(g->buf))
		return false;
	conn_close(g, c);
	return true;
}

/* New bytes (or a hang-up) on a connection whose head is not complete: look again. */
static void on_head_data(struct gate *g, struct conn *c, uint32_t events)
{
	ssize_t n = recv(c->fd, g->buf, sizeof(g->buf), MSG_PEEK | MSG_DONTWAIT);
	enum gate_head h;
	size_t head_len;

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(g, c); /* gone before its head was complete */
		return;
	}
	if (n < 0)
		return;
	if (h_incomplete_at_eof(g, c, (size_t)n, events))
		return;
	if ((size_t)n != c->seen) {
		c->seen = (size_t)n;
		c->idle_deadline = util_mono_ms() + g->o.idle_timeout_ms;
	}
	h = gate_scan_head(g->buf, (size_t)n, &head_len);
	if (h == GATE_HEAD_OK || (h == GATE_HEAD_INCOMPLETE && (size_t)n == sizeof(g->buf)))
		hand_off(g, c); /* a head over PEEK_MAX is MHD's to refuse (414/431) */
	else if (h != GATE_HEAD_INCOMPLETE)
		on_framing_error(g, c, h);
}

static void refuse(struct gate *g, int fd, const struct sockaddr *sa, const char *why,
		   unsigned open_now)
{
	char remote[INET6_ADDRSTRLEN];
	unsigned long long sup;

	close(fd);
	count_refusal(why);
	if (!log_rl_allow(&g->rl_refused, 1000, &sup))
		return;
	addr_text(sa, remote, sizeof(remote));
	log_warn("http %s: connection refused reason=%s remote=%s open_from_remote=%u "
		 "suppressed=%llu",
		 g->o.name, why, remote, open_now, sup);
}

/* Takes one new connection into the gate, or refuses it. */
static void take(struct gate *g, int fd, const struct sockaddr_storage *sa, socklen_t len)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET};
	unsigned open_now;
	const char *why = admit(g, (const struct sockaddr *)sa, &open_now);
	struct conn *c;
	int64_t now = util_mono_ms();

	if (why != NULL) {
		refuse(g, fd, (const struct sockaddr *)sa, why, open_now);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		gate_closed(g, -1, (const struct sockaddr *)sa);
		return;
	}
	c->fd = fd;
	c->sa = *sa;
	c->sa_len = len;
	c->phase = PHASE_HEAD;
	c->deadline = now + g->o.request_timeout_ms;
	c->idle_deadline = now + g->o.idle_timeout_ms;
	addr_text((const struct sockaddr *)sa, c->remote, sizeof(c->remote));
	c->next = g->conns;
	if (g->conns != NULL)
		g->conns->prev = c;
	g->conns = c;
	ev.data.ptr = c;
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		conn_close(g, c);
}

static void pause_accepting(struct gate *g)
{
	unsigned long long sup;
	int err = errno;

	if (g->accept_paused_until != 0)
		return;
	epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->o.listen_fd, NULL);
	g->accept_paused_until = util_mono_ms() + TICK_MS;
	errno = err;
	if (log_rl_allow(&g->rl_refused, 1000, &sup))
		log_warn("http %s: cannot accept: %m (descriptors exhausted?) suppressed=%llu",
			 g->o.name, sup);
}

static void accept_some(struct gate *g)
{
	for (int i = 0; i < ACCEPT_ROUND; i++) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa);
		int fd = accept4(g->o.listen_fd, (struct sockaddr *)&sa, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			take(g, fd, &sa, len);
			continue;
		}
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			pause_accepting(g);
		return; /* EAGAIN, or a connection that died in the queue */
	}
}

/* Past its deadline: a head still incomplete gets 408, a lingering close ends. */
static void expire(struct gate *g, int64_t now)
{
	unsigned long long sup;

	ka_sweep(g, now);
	for (struct conn *c = g->conns, *next; c != NULL; c = next) {
		next = c->next;
		if (c->phase == PHASE_LINGER) {
			if (now >= c->deadline)
				conn_close(g, c);
			continue;
		}
		if (now < c->deadline && now < c->idle_deadline)
			continue;
		metrics_inc(METRICS_HTTP_REQUEST_TIMEOUT, 1);
		if (log_rl_allow(&g->rl_timeout, 1000, &sup))
			log_warn("http %s: request not complete in time phase=head remote=%s "
				 "suppressed=%llu",
				 g->o.name, c->remote, sup);
		conn_answer(g, c, 408, "Request Timeout", REPLY_408);
	}
	if (!g->draining && g->accept_paused_until != 0 && now >= g->accept_paused_until) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)&listener_tag};

		g->accept_paused_until = 0;
		epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->o.listen_fd, &ev);
	}
}

/* gate_stop() woke the thread: accept no more (under socket activation, what waits in the
 * listen queue is for the next instance), but let the heads already accepted finish arriving
 * for STOP_GRACE_MS and be handed off, so that a restart answers them instead of closing
 * them unanswered. */
static void begin_drain(struct gate *g)
{
	uint64_t v;

	if (read(g->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("http %s: cannot read the gate's wake-up: %m", g->o.name);
	if (g->draining)
		return;
	g->draining = true;
	g->drain_until = util_mono_ms() + STOP_GRACE_MS;
	if (g->accept_paused_until == 0)
		epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->o.listen_fd, NULL);
}

/* Whether the drain is over: no head is still arriving, or the grace is spent. */
static bool drained(const struct gate *g, int64_t now)
{
	if (now >= g->drain_until)
		return true;
	for (const struct conn *c = g->conns; c != NULL; c = c->next) {
		if (c->phase == PHASE_HEAD)
			return false;
	}
	return true;
}

static void *gate_main(void *arg)
{
	struct gate *g = arg;
	struct epoll_event evs[64];
	int64_t next_tick = util_mono_ms() + TICK_MS;

	for (;;) {
		int64_t now = util_mono_ms();
		int n = epoll_wait(g->epfd, evs, 64, now < next_tick ? (int)(next_tick - now) : 0);

		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &wake_tag) {
				begin_drain(g);
				continue;
			}
			if (p == &listener_tag) {
				if (g->draining)
					continue; /* reported before the listener was removed */
				accept_some(g);
				continue;
			}
			if (((struct conn *)p)->phase == PHASE_HEAD)
				on_head_data(g, p, evs[i].events);
			else
				on_linger_data(g, p);
		}
		now = util_mono_ms();
		if (now >= next_tick) {
			expire(g, now);
			next_tick = now + TICK_MS;
		}
		if (g->draining && drained(g, now))
			return NULL;
	}
}

int gate_start(const struct gate_opts *o, struct gate **ret)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct rlimit rl;
	struct gate *g = calloc(1, sizeof(*g));
	int r;

	if (g == NULL)
		return -ENOMEM;
	g->o = *o;
	g->epfd = g->wakefd = -1;
	g->reserve = o->max_connections / 8;
	pthread_mutex_init(&g->mu, NULL);
	g->n_fd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < FD_TABLE_MAX
			  ? (size_t)rl.rlim_cur
			  : FD_TABLE_MAX;
	g->deadline_by_fd = calloc(g->n_fd, sizeof(*g->deadline_by_fd));
	g->ka_head = g->ka_tail = -1;
	if (o->keep_alive)
		g->ka = calloc(g->n_fd, sizeof(*g->ka));
	g->epfd = epoll_create1(EPOLL_CLOEXEC);
	g->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (g->deadline_by_fd == NULL || (o->keep_alive && g->ka == NULL) || g->epfd < 0 ||
	    g->wakefd < 0) {
		r = g->deadline_by_fd == NULL || (o->keep_alive && g->ka == NULL) ? -ENOMEM
										  : -errno;
		goto fail;
	}
	ev.data.ptr = (void *)&listener_tag;
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, o->listen_fd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	ev.data.ptr = (void *)&wake_tag;
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->wakefd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	/* Published before the thread runs: MHD's threads read it for what the gate hands off. */
	*ret = g;
	g->running = true;
	r = pthread_create(&g->thread, NULL, gate_main, g);
	if (r != 0) {
		*ret = NULL;
		g->running = false;
		r = -r;
		goto fail;
	}
	return 0;
fail:
	g->o.listen_fd = -1; /* the caller still owns it */
	gate_free(g);
	return r;
}

unsigned gate_port(struct gate *g)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);

	if (getsockname(g->o.listen_fd, (struct sockaddr *)&sa, &len) < 0)
		return 0;
	if (sa.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&sa)->sin_port);
	if (sa.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
	return 0;
}

void gate_stop(struct gate *g)
{
	uint64_t one = 1;
	unsigned n;

	if (g == NULL || !g->running)
		return;
	if (write(g->wakefd, &one, sizeof(one)) < 0)
		log_warn("http %s: cannot wake the gate thread: %m", g->o.name);
	pthread_join(g->thread, NULL);
	g->running = false;
	n = 0;
	for (struct conn *c = g->conns; c != NULL; c = c->next)
		n += c->phase == PHASE_HEAD;
	if (n > 0)
		log_warn(
			"http %s: stopped with requests still arriving, closed unanswered count=%u "
			"grace_ms=%d",
			g->o.name, n, STOP_GRACE_MS);
	while (g->conns != NULL)
		conn_close(g, g->conns);
	if (g->o.listen_fd >= 0)
		close(g->o.listen_fd);
	g->o.listen_fd = -1;
}

void gate_free(struct gate *g)
{
	if (g == NULL)
		return;
	gate_stop(g);
	if (g->o.listen_fd >= 0)
		close(g->o.listen_fd);
	for (size_t b = 0; b < IP_BUCKETS; b++) {
		for (struct ip_slot *s = g->ips[b], *next; s != NULL; s = next) {
			next = s->next;
			free(s);
		}
	}
	if (g->epfd >= 0)
		close(g->epfd);
	if (g->wakefd >= 0)
		close(g->wakefd);
	free(g->deadline_by_fd);
	free(g->ka);
	pthread_mutex_destroy(&g->mu);
	free(g);
}
