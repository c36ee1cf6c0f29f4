/*
 * GET /v1/events: one stream of events (feed.c) per client, as
 * newline-delimited JSON.
 *
 * A stream may be silent for hours, so its connection has no idle
 * timeout: it sleeps suspended until control_feed() has a line for it.
 * An empty line is sent after CONTROL_STREAM_KEEPALIVE seconds of
 * silence, and a client that leaves bytes unread for CONTROL_STREAM_STALL
 * seconds, or more than CONTROL_STREAM_BACKLOG bytes, is disconnected.  A
 * uid other than root and ours holds at most CONTROL_MAX_STREAMS_PER_UID
 * streams, and the last CONTROL_RESERVED_STREAMS are for root and our uid.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <linux/sockios.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "sidecar.h"
#include "control.h"

/* One GET /v1/events. */
struct control_stream {
	struct MHD_Connection	*cs_conn;
	struct evbuffer		*cs_buf;	/* lines not sent yet */
	int			 cs_suspended;	/* waiting for an event */
	int			 cs_end;	/* 0, or an MHD_CONTENT_READER_ */
	uid_t			 cs_uid;
	int			 cs_privileged;
	time_t			 cs_sent;	/* last line queued (monotonic) */
	time_t			 cs_unread;	/* bytes unread since, or 0 */
	TAILQ_ENTRY(control_stream) cs_entry;
};
TAILQ_HEAD(control_streams, control_stream);

static struct {
	struct control_streams	 list;
	size_t			 n;
	struct event		*ev_check;	/* hang-ups, stalls, keepalives */
} stream = {
	.list = TAILQ_HEAD_INITIALIZER(stream.list)
};

/* Whole seconds on the monotonic clock, for the streams' timers. */
static time_t
control_now(void)
{
	return (time_t)util_monotonic();
}

static void
control_stream_wake(struct control_stream *cs)
{
	if (cs->cs_suspended) {
		cs->cs_suspended = 0;
		MHD_resume_connection(cs->cs_conn);
	}
}

/* feed.c's listener: one line to every stream. */
static void
control_feed(const char *line, void *arg)
{
	struct control_stream	*cs;
	size_t			 len = strlen(line);

	(void)arg;
	TAILQ_FOREACH(cs, &stream.list, cs_entry) {
		if (cs->cs_end != 0)
			continue;
		if (evbuffer_get_length(cs->cs_buf) + len >
		    CONTROL_STREAM_BACKLOG) {
			log_warnx("control: an event stream's client reads "
			    "too slowly (%d bytes unread); disconnecting it",
			    CONTROL_STREAM_BACKLOG);
			cs->cs_end = MHD_CONTENT_READER_END_WITH_ERROR;
		} else {
			evbuffer_add(cs->cs_buf, line, len);
			evbuffer_add(cs->cs_buf, "\n", 1);
			cs->cs_sent = control_now();
		}
		control_stream_wake(cs);
	}
	control_wake();
}

/* libmicrohttpd wants more of the stream: give it, or wait for it. */
static ssize_t
control_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct control_stream	*cs = cls;
	int			 n;

	(void)pos;
	if (evbuffer_get_length(cs->cs_buf) > 0 &&
	    cs->cs_end != MHD_CONTENT_READER_END_WITH_ERROR) {
		n = evbuffer_remove(cs->cs_buf, buf, max);
		return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
	}
	if (cs->cs_end != 0)
		return cs->cs_end;
	/* Nothing to send: sleep until control_feed() wakes us. */
	cs->cs_suspended = 1;
	MHD_suspend_connection(cs->cs_conn);
	return 0;
}

static void
control_stream_free(void *cls)
{
	struct control_stream	*cs = cls;

	TAILQ_REMOVE(&stream.list, cs, cs_entry);
	stream.n--;
	evbuffer_free(cs->cs_buf);
	free(cs);
}

/*
 * 0 if the caller of cn may open one more stream, else -1 and why: a
 * reader that never reads would otherwise hold a place for ever, and
 * sixteen of them every place.
 */
static int
control_stream_admit(const struct control_conn *cn, char *why, size_t len)
{
	struct control_stream	*cs;
	int			 mine = 0;

	if (stream.n >= CONTROL_MAX_STREAMS) {
		snprintf(why, len, "too many event streams (%d)",
		    CONTROL_MAX_STREAMS);
		return -1;
	}
	if (cn->cn_privileged)
		return 0;
	if (stream.n >= CONTROL_MAX_STREAMS -
	    CONTROL_RESERVED_STREAMS) {
		snprintf(why, len, "too many event streams (%d, the last %d "
		    "of them kept for root and uid %u)", CONTROL_MAX_STREAMS,
		    CONTROL_RESERVED_STREAMS, (unsigned)geteuid());
		return -1;
	}
	TAILQ_FOREACH(cs, &stream.list, cs_entry)
		if (!cs->cs_privileged && cs->cs_uid == cn->cn_uid)
			mine++;
	if (mine >= CONTROL_MAX_STREAMS_PER_UID) {
		snprintf(why, len, "uid %u has %d event streams open, the most "
		    "one uid may have", (unsigned)cn->cn_uid, mine);
		return -1;
	}
	return 0;
}

enum MHD_Result
control_get_events(struct control_ctx *cx)
{
	struct control_conn	*cn = control_conn_of(cx->cx_conn);
	struct control_stream	*cs;
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;
	char			 why[256], keepalive[16];

	if (control_stream_admit(cn, why, sizeof(why)) == -1)
		return control_error(cx->cx_conn, MHD_HTTP_SERVICE_UNAVAILABLE,
		    NULL, "%s", why);
	cs = xcalloc(1, sizeof(*cs));
	cs->cs_conn = cx->cx_conn;
	cs->cs_uid = cn->cn_uid;
	cs->cs_privileged = cn->cn_privileged;
	cs->cs_sent = control_now();	/* the answer's head */
	if ((cs->cs_buf = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
	    control_stream_read, cs, control_stream_free);
	if (resp == NULL) {
		evbuffer_free(cs->cs_buf);
		free(cs);
		return MHD_NO;
	}
	TAILQ_INSERT_TAIL(&stream.list, cs, cs_entry);
	stream.n++;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/x-ndjson");
	/* For a client to tell a quiet daemon from a hung one. */
	(void)snprintf(keepalive, sizeof(keepalive), "%d",
	    CONTROL_STREAM_KEEPALIVE);
	MHD_add_response_header(resp, "Acme-Sidecar-Keepalive", keepalive);
	ret = MHD_queue_response(cx->cx_conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * Every CONTROL_STREAM_CHECK seconds, each stream: a sleeping one peeks
 * at its socket, for a suspended connection does not see its client hang
 * up.  A client that has left bytes unread (in its socket, SIOCOUTQ, or
 * still ours) for CONTROL_STREAM_STALL seconds is cut, as is one whose
 * unread events pass CONTROL_STREAM_BACKLOG (control_feed()).  A stream
 * silent for CONTROL_STREAM_KEEPALIVE seconds gets an empty line, which
 * clients skip (proto/control-api.md): so one that stopped reading is
 * found even when no event comes.
 */
static void
control_check_stream(struct control_stream *cs, time_t now)
{
	const union MHD_ConnectionInfo	*ci;
	char				 c;
	ssize_t				 n;
	int				 outq = 0;

	if (cs->cs_end != 0)
		return;
	ci = MHD_get_connection_info(cs->cs_conn,
	    MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL)
		return;
	if (cs->cs_suspended) {
		n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
			cs->cs_end = MHD_CONTENT_READER_END_WITH_ERROR;
			control_stream_wake(cs);
			return;
		}
	}
	if (ioctl(ci->connect_fd, SIOCOUTQ, &outq) == -1)
		outq = 0;
	if (outq == 0 && evbuffer_get_length(cs->cs_buf) == 0)
		cs->cs_unread = 0;
	else if (cs->cs_unread == 0)
		cs->cs_unread = now;
	else if (now - cs->cs_unread >= CONTROL_STREAM_STALL) {
		log_warnx("control: uid %u's event stream has left bytes "
		    "unread for %d s; disconnecting it", (unsigned)cs->cs_uid,
		    CONTROL_STREAM_STALL);
		cs->cs_end = MHD_CONTENT_READER_END_WITH_ERROR;
		/* Its answer may be stuck in a full socket: cut it there. */
		mhd_guard_cut(cs->cs_conn);
		control_stream_wake(cs);
		return;
	}
	if (cs->cs_suspended && now - cs->cs_sent >= CONTROL_STREAM_KEEPALIVE) {
		evbuffer_add(cs->cs_buf, "\n", 1);
		cs->cs_sent = now;
		control_stream_wake(cs);
	}
}

static void
control_check_streams(evutil_socket_t fd, short events, void *arg)
{
	struct control_stream	*cs;
	time_t			 now = control_now();

	(void)fd;
	(void)events;
	(void)arg;
	TAILQ_FOREACH(cs, &stream.list, cs_entry)
		control_check_stream(cs, now);
	control_wake();
}

int
control_stream_start(struct event_base *base, char **cause)
{
	struct timeval	 check = { CONTROL_STREAM_CHECK, 0 };

	stream.ev_check = event_new(base, -1, EV_PERSIST,
	    control_check_streams, NULL);
	if (stream.ev_check == NULL ||
	    evtimer_add(stream.ev_check, &check) == -1) {
		xasprintf(cause, "control: cannot add events");
		return -1;
	}
	feed_listen(control_feed, NULL);
	return 0;
}

/*
 * libmicrohttpd cannot stop with a connection suspended: end every
 * stream, and wake them.
 */
void
control_stream_stop(void)
{
	struct control_stream	*cs;

	feed_listen(NULL, NULL);
	TAILQ_FOREACH(cs, &stream.list, cs_entry) {
		cs->cs_end = MHD_CONTENT_READER_END_OF_STREAM;
		control_stream_wake(cs);
	}
	if (stream.ev_check != NULL)
		event_free(stream.ev_check);
	stream.ev_check = NULL;
}
