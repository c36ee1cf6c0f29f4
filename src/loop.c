/*
 * A libmicrohttpd daemon driven by the daemon's libevent loop, for the
 * HTTP-01 responder (challenge.c) and the control API (control.c).
 *
 * The daemon is started with MHD_USE_EPOLL and no thread of its own.
 * Its epoll fd is watched by a persistent EV_READ event, and a timer
 * follows MHD_get_timeout() for its connection timeouts; both call
 * MHD_run(), which does whatever is ready without blocking.  So every
 * handler runs on the loop, and the state it touches has one owner.
 */
#include <sys/time.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <microhttpd.h>

#include "sidecar.h"

/* Arm the timer for the next connection timeout, if there is one. */
void
loop_mhd_schedule(struct loop_mhd *lm)
{
	MHD_UNSIGNED_LONG_LONG	 ms;
	struct timeval		 tv;

	if (MHD_get_timeout(lm->lm_daemon, &ms) == MHD_YES) {
		tv.tv_sec = (time_t)(ms / 1000);
		tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
		evtimer_add(lm->lm_timer, &tv);
	} else
		evtimer_del(lm->lm_timer);
}

/*
 * Run the daemon on the next turn of the loop, for a connection resumed
 * from outside libmicrohttpd's callbacks: its epoll fd does not say so.
 * The read event is made active, not the timer, which the run in progress
 * (if any) re-arms when it returns.
 */
void
loop_mhd_wake(struct loop_mhd *lm)
{
	event_active(lm->lm_read, EV_READ, 0);
}

static unsigned int
loop_mhd_conns(struct loop_mhd *lm)
{
	const union MHD_DaemonInfo	*di;

	di = MHD_get_daemon_info(lm->lm_daemon,
	    MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return di != NULL ? di->num_connections : 0;
}

/*
 * At its connection limit libmicrohttpd takes its listening socket out of
 * its epoll set, and puts it back at the start of a later run, once
 * connections have gone.  When the run that closed them was the last
 * thing due, no later run would come and new clients would wait for ever
 * (tests/integration/test_challenge_hostile.py): so a run that closed
 * connections is followed by one more at once.
 */
static void
loop_mhd_run(evutil_socket_t fd, short events, void *arg)
{
	struct loop_mhd	*lm = arg;
	unsigned int	 before;

	(void)fd;
	(void)events;
	before = loop_mhd_conns(lm);
	if (MHD_run(lm->lm_daemon) != MHD_YES)
		log_debug("%s: MHD_run failed", lm->lm_name);
	if (loop_mhd_conns(lm) < before && MHD_run(lm->lm_daemon) != MHD_YES)
		log_debug("%s: MHD_run failed", lm->lm_name);
	loop_mhd_schedule(lm);
}

/* Drive daemon from base; on failure the caller still calls _stop(). */
int
loop_mhd_start(struct loop_mhd *lm, struct event_base *base,
    struct MHD_Daemon *daemon, const char *name, char **cause)
{
	const union MHD_DaemonInfo	*di;

	lm->lm_daemon = daemon;
	lm->lm_base = base;
	lm->lm_name = name;
	di = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
	if (di == NULL || di->epoll_fd == -1) {
		xasprintf(cause, "%s: libmicrohttpd has no epoll fd", name);
		return -1;
	}
	lm->lm_read = event_new(base, di->epoll_fd, EV_READ | EV_PERSIST,
	    loop_mhd_run, lm);
	lm->lm_timer = evtimer_new(base, loop_mhd_run, lm);
	if (lm->lm_read == NULL || lm->lm_timer == NULL ||
	    event_add(lm->lm_read, NULL) == -1) {
		xasprintf(cause, "%s: cannot add events", name);
		return -1;
	}
	loop_mhd_schedule(lm);
	return 0;
}

/* Free the events and stop the daemon; safe on a half-started one. */
void
loop_mhd_stop(struct loop_mhd *lm)
{
	if (lm->lm_read != NULL)
		event_free(lm->lm_read);
	if (lm->lm_timer != NULL)
		event_free(lm->lm_timer);
	if (lm->lm_daemon != NULL)
		MHD_stop_daemon(lm->lm_daemon);
	lm->lm_read = lm->lm_timer = NULL;
	lm->lm_daemon = NULL;
	lm->lm_base = NULL;
}

/*
 * One of libmicrohttpd's log messages as a line of ours, without its
 * trailing newline; NULL when it cannot be formatted.  Caller frees.
 */
char *
loop_mhd_message(const char *fmt, va_list ap)
{
	char	*msg;
	size_t	 len;

	if (vasprintf(&msg, fmt, ap) == -1)
		return NULL;
	len = strlen(msg);
	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
		msg[--len] = '\0';
	return msg;
}
