/*
 * A libmicrohttpd daemon driven by the daemon's libevent loop, for the
 * HTTP-01 responder (challenge.c) and the control API (control.c).
 *
 * The daemon is started with MHD_USE_EPOLL and no thread of its own.
 * Its epoll fd is watched by a persistent EV_READ event, and a timer
 * follows MHD_get_timeout() for its connection timeouts; both call
 * MHD_run(), which does whatever is ready without blocking.  So every
 * handler runs on the loop, and the state it touches has one owner.
 *
 * The loop has two priorities (main.c): the control API's daemon may be
 * made urgent (loop_mhd_urgent()), so that a request is not queued behind
 * a turn's worth of order work.  It stays urgent as long as the rest of
 * the loop also gets a turn now and then: see loop_urgent_account().
 */
#include <sys/time.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <microhttpd.h>

#include "sidecar.h"

/* How long urgent runs may keep the rest of the loop waiting. */
#define LOOP_URGENT_MAX_US	50000

/*
 * The urgent daemon, if any, and a marker event at the default priority:
 * queued after an urgent run, it runs once whatever was queued before it
 * at the default priority has run.
 */
static struct {
	struct loop_mhd		*lu_lm;
	struct event		*lu_turn;
	int			 lu_waiting;	/* lu_turn is queued */
	long long		 lu_used;	/* us run since it was */
} loop_urgent;

static void
loop_urgent_set(struct loop_mhd *lm, int priority)
{
	/* An event already queued keeps its place: it runs either way. */
	if (event_get_priority(lm->lm_read) != priority)
		event_priority_set(lm->lm_read, priority);
	if (event_get_priority(lm->lm_timer) != priority)
		event_priority_set(lm->lm_timer, priority);
}

/* The rest of the loop has had its turn: the urgent daemon may go first. */
static void
loop_urgent_turn(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	loop_urgent.lu_waiting = 0;
	loop_urgent_set(loop_urgent.lu_lm, LOOP_PRI_URGENT);
}

/*
 * After an urgent run that took us: the marker is queued behind the
 * default priority's work, if it is not already.  Once urgent runs have
 * taken LOOP_URGENT_MAX_US since, the daemon falls back to the default
 * priority, and waits its turn like any other event, until the marker has
 * run.  So a client that keeps the daemon busy (wrk on /v1/status) slows
 * orders down but cannot stop them, while a GET /v1/certificates among
 * 10,000 orders (30 ms) goes ahead of them all.
 */
static void
loop_urgent_account(struct loop_mhd *lm, long long us)
{
	if (!loop_urgent.lu_waiting) {
		loop_urgent.lu_waiting = 1;
		loop_urgent.lu_used = 0;
		event_active(loop_urgent.lu_turn, EV_TIMEOUT, 0);
	}
	loop_urgent.lu_used += us;
	loop_urgent_set(lm, loop_urgent.lu_used >= LOOP_URGENT_MAX_US ?
	    LOOP_PRI_DEFAULT : LOOP_PRI_URGENT);
}

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

/*
 * Run lm's daemon ahead of the loop's other events.  Without two
 * priorities on the base (a test's base), nothing changes.
 */
void
loop_mhd_urgent(struct loop_mhd *lm)
{
	if (event_base_get_npriorities(lm->lm_base) <= LOOP_PRI_DEFAULT ||
	    loop_urgent.lu_lm != NULL)
		return;
	loop_urgent.lu_turn = event_new(lm->lm_base, -1, 0, loop_urgent_turn,
	    NULL);
	if (loop_urgent.lu_turn == NULL)
		fatalx("%s: event_new", __func__);
	event_priority_set(loop_urgent.lu_turn, LOOP_PRI_DEFAULT);
	loop_urgent.lu_lm = lm;
	loop_urgent.lu_waiting = 0;
	loop_urgent_set(lm, LOOP_PRI_URGENT);
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
	double		 start = 0;

	(void)fd;
	(void)events;
	if (lm == loop_urgent.lu_lm)
		start = util_monotonic();
	before = loop_mhd_conns(lm);
	if (MHD_run(lm->lm_daemon) != MHD_YES)
		log_debug("%s: MHD_run failed", lm->lm_name);
	if (loop_mhd_conns(lm) < before && MHD_run(lm->lm_daemon) != MHD_YES)
		log_debug("%s: MHD_run failed", lm->lm_name);
	loop_mhd_schedule(lm);
	if (lm == loop_urgent.lu_lm)
		loop_urgent_account(lm,
		    (long long)((util_monotonic() - start) * 1e6));
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
	if (lm == loop_urgent.lu_lm) {
		event_free(loop_urgent.lu_turn);
		memset(&loop_urgent, 0, sizeof(loop_urgent));
	}
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
