/* The public listener's front door: one thread accepts every connection, counts it against
 * its address and the whole listener, holds it until its request head (request line and
 * headers) has arrived, checks the framing libmicrohttpd would mishandle, and only then hands
 * the socket to libmicrohttpd. Clients too slow to send a head within the request deadline
 * get 408 here, so they never occupy libmicrohttpd's threads or slots. MHD threads call
 * gate_closed() and gate_deadline(); everything else runs on the gate's own thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct gate;

/* Hands a socket whose head is complete to the HTTP server. Returns 0, or -errno when it was
 * not taken (the socket is then closed already, as MHD_add_connection does). */
typedef int (*gate_hand_off_fn)(void *arg, int fd, const struct sockaddr *sa, socklen_t len);

struct gate_opts {
	const char *name;	  /* for logs */
	int listen_fd;		  /* bound and listening; the gate owns it from now on */
	unsigned max_connections; /* open connections of the listener, here and in MHD */
	unsigned max_per_ip;	  /* of one TCP peer address; 0 = no limit */
	long request_timeout_ms;  /* head and body, from the moment the connection is accepted */
	long idle_timeout_ms;	  /* no byte for this long while the head is incomplete */
	/* Replies keep the connection (HTTP keep-alive): the next request on it goes straight
	 * to MHD, and must be complete within request_timeout_ms of the previous one's end, or
	 * the gate shuts the connection down (gate_request_begun / gate_request_done). */
	bool keep_alive;
	gate_hand_off_fn hand_off;
	void *arg;
};

/* Starts the gate thread. 0, or -errno. */
int gate_start(const struct gate_opts *o, struct gate **ret) __attribute__((warn_unused_result));
/* Stops accepting; the heads already accepted get up to a second to arrive and be handed off
 * (the server must still take them); then closes the listener and every connection still in
 * the gate, and joins the thread. The
 * struct stays valid for gate_closed()/gate_deadline() until gate_free(). NULL is fine. */
void gate_stop(struct gate *g);
void gate_free(struct gate *g);
/* The port the listener is bound to. */
unsigned gate_port(struct gate *g);
/* A connection handed off earlier is being closed (fd is still open): its address gets its
 * slot back, and a keep-alive wait on it ends. */
void gate_closed(struct gate *g, int fd, const struct sockaddr *sa);
/* Keep-alive (MHD's threads): a request's head has arrived on fd, which the deadline sweep
 * leaves alone until gate_request_done(fd); the request finished and fd stays open: its next
 * request must be complete by now + request_timeout (gate_deadline() then returns that). */
void gate_request_begun(struct gate *g, int fd);
void gate_request_done(struct gate *g, int fd);
/* Monotonic ms by which the request on fd (handed off) must be complete; 0 when unknown. */
int64_t gate_deadline(struct gate *g, int fd);
/* Writes the 408 reply of a request past its deadline to fd (non-blocking, best effort) and
 * counts it. For the HTTP layer, which then closes the connection. */
void gate_reply_timeout(struct gate *g, int fd, const char *remote);

/* ---- pure: the request head (unit-tested) ---- */

enum gate_head {
	GATE_HEAD_INCOMPLETE, /* no empty line yet */
	GATE_HEAD_OK,
	GATE_HEAD_BAD_LENGTH,	   /* a Content-Length that is not a decimal number (400) */
	GATE_HEAD_LENGTH_TOO_LONG, /* a Content-Length beyond 2^64 - 1 (413) */
};

/* Looks for the end of the request head in the n bytes at p (leading empty lines skipped, as
 * HTTP allows; lines end in CRLF or LF) and checks every Content-Length field: digits only,
 * optional surrounding blanks, fitting 64 bits, no whitespace before the colon, not folded.
 * On OK, *ret_len is the head's length including the empty line. */
enum gate_head gate_scan_head(const char *p, size_t n, size_t *ret_len);
