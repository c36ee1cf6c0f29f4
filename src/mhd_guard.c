/*
 * What the HTTP-01 responder (challenge.c) and the control API
 * (control.c) add to libmicrohttpd's own limits.  Each connection gets
 * a guard, its MHD socket context, made and freed by the server's
 * MHD_OPTION_NOTIFY_CONNECTION callback.
 *
 * A request deadline.  MHD_OPTION_CONNECTION_TIMEOUT counts idleness
 * only, so a client that sends one byte every few seconds keeps its
 * connection for ever (slowloris), and a few hundred of them take every
 * slot.  libmicrohttpd 0.9.75 has no deadline of its own and no call to
 * close a connection, so a guard arms a timer at accept, and again
 * after each answer on a kept-alive connection; the handler disarms it
 * once the request is in (mhd_guard_arrived()).  When it fires, the
 * socket is shut down: libmicrohttpd sees the end of the stream and
 * closes the connection itself, on its next run, with its callbacks.
 *
 * Requests refused before any handler: two Content-Length headers, or
 * Content-Length with Transfer-Encoding (0.9.75 takes the first length,
 * and reads the rest of the body as the next request: a proxy that took
 * the other one sees two different requests), and %00 in the request
 * target (the handler's path is a C string: "a%00b" would reach it as
 * "a").
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <microhttpd.h>

#include "sidecar.h"

/* Deadline over: cut the connection short (see above). */
static void
mhd_guard_expire(evutil_socket_t fd, short events, void *arg)
{
	struct mhd_guard	*mg = arg;

	(void)fd;
	(void)events;
	log_debug("%s: a request took over %d s to arrive; closing its "
	    "connection", mg->mg_loop->lm_name, mg->mg_seconds);
	mhd_guard_cut(mg->mg_conn);
	loop_mhd_wake(mg->mg_loop);
}

static void
mhd_guard_arm(struct mhd_guard *mg)
{
	struct timeval	 tv = { mg->mg_seconds, 0 };

	if (mg->mg_deadline != NULL)
		evtimer_add(mg->mg_deadline, &tv);
}

/*
 * A guard for conn, just accepted, whose requests must each arrive
 * within seconds.  lm is the loop driving the daemon; without a base
 * (the fuzz harnesses drive MHD by hand) there is no deadline.
 */
struct mhd_guard *
mhd_guard_new(struct loop_mhd *lm, struct MHD_Connection *conn, int seconds,
    void *arg)
{
	struct mhd_guard	*mg;

	mg = xcalloc(1, sizeof(*mg));
	mg->mg_conn = conn;
	mg->mg_loop = lm;
	mg->mg_seconds = seconds;
	mg->mg_arg = arg;
	if (lm->lm_base != NULL) {
		mg->mg_deadline = evtimer_new(lm->lm_base, mhd_guard_expire,
		    mg);
		if (mg->mg_deadline == NULL)
			fatalx("%s: evtimer_new", __func__);
	}
	mhd_guard_arm(mg);
	return mg;
}

/* The connection is closed: called from NOTIFY_CONNECTION's CLOSED. */
void
mhd_guard_free(struct mhd_guard *mg)
{
	if (mg == NULL)
		return;
	if (mg->mg_deadline != NULL)
		event_free(mg->mg_deadline);
	free(mg);
}

struct mhd_guard *
mhd_guard_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo	*ci;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci != NULL ? ci->socket_context : NULL;
}

/* The request is in, whole: no deadline while it is answered. */
void
mhd_guard_arrived(struct MHD_Connection *conn)
{
	struct mhd_guard	*mg = mhd_guard_of(conn);

	if (mg != NULL && mg->mg_deadline != NULL)
		evtimer_del(mg->mg_deadline);
}

/* An answer is over (NOTIFY_COMPLETED): the next request's deadline. */
void
mhd_guard_next(struct MHD_Connection *conn)
{
	struct mhd_guard	*mg = mhd_guard_of(conn);

	if (mg == NULL)
		return;
	mg->mg_nul = 0;
	mhd_guard_arm(mg);
}

struct mhd_guard_count {
	unsigned int	 length;
	unsigned int	 encoding;
};

static enum MHD_Result
mhd_guard_header(void *arg, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct mhd_guard_count	*n = arg;

	(void)kind;
	(void)value;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		n->length++;
	else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
		n->encoding++;
	return MHD_YES;
}

/*
 * Why the request just read must be refused with a 400, or NULL.  Called
 * first thing by each handler, on its first call (the headers are in).
 */
const char *
mhd_guard_refuse(struct MHD_Connection *conn)
{
	struct mhd_guard	*mg = mhd_guard_of(conn);
	struct mhd_guard_count	 n = { 0, 0 };

	if (mg != NULL && mg->mg_nul)
		return "a NUL byte (%00) in the request target";
	MHD_get_connection_values(conn, MHD_HEADER_KIND, mhd_guard_header,
	    &n);
	if (n.length > 1)
		return "more than one Content-Length header";
	if (n.length > 0 && n.encoding > 0)
		return "both Content-Length and Transfer-Encoding";
	return NULL;
}

/*
 * MHD_OPTION_UNESCAPE_CALLBACK: libmicrohttpd's own decoding, noting a
 * %00 in the path or the query (the guard refuses the request then).
 */
size_t
mhd_guard_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	struct mhd_guard	*mg = mhd_guard_of(conn);
	size_t			 len;

	(void)cls;
	len = MHD_http_unescape(s);
	if (mg != NULL && memchr(s, '\0', len) != NULL)
		mg->mg_nul = 1;
	return len;
}

/*
 * Close conn from outside libmicrohttpd: shut its socket down, which its
 * epoll set reports, so that the next run ends it as a hang-up.  A
 * suspended connection must be resumed by its owner to be seen.
 */
void
mhd_guard_cut(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo	*ci;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci != NULL && shutdown(ci->connect_fd, SHUT_RDWR) == -1)
		log_debug("%s: shutdown: %s", __func__, strerror(errno));
}
