/*
 * The event feed behind GET /v1/events: what happened to certificates,
 * as one JSON object per line.
 *
 * The subsystems that see things happen (order.c, challenge.c) sit below
 * the control API that streams them, so they cannot call it: they call
 * feed_emit(), and the control API registers the one listener.  With no
 * listener (no control socket, or tests) an event costs one json_pack.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"

static feed_cb	 feed_listener;
static void	*feed_arg;

void
feed_listen(feed_cb cb, void *arg)
{
	feed_listener = cb;
	feed_arg = arg;
}

/*
 * type, then the fields that fmt packs (json_pack syntax, an object):
 * the line reads {"time": ..., "type": ..., fields...}.
 */
void
feed_emit(const char *type, const char *fmt, ...)
{
	va_list		 ap;
	json_t		*fields, *ev;
	json_error_t	 err;
	char		*line, when[UTIL_TIME_LEN];

	va_start(ap, fmt);
	fields = json_vpack_ex(&err, 0, fmt, ap);
	va_end(ap);
	/*
	 * Text that is not UTF-8 (callers pass text from outside through
	 * util_utf8_copy(), but one may slip through) costs the event, not
	 * the daemon.
	 */
	if (fields == NULL) {
		log_warnx("event feed: a \"%s\" event dropped: %s", type,
		    err.text);
		return;
	}
	if (feed_listener == NULL) {
		json_decref(fields);
		return;
	}
	util_time_rfc3339(util_now(), when, sizeof(when));
	ev = json_pack("{s:s, s:s}", "time", when, "type", type);
	if (ev == NULL || json_object_update(ev, fields) == -1)
		fatalx("%s: json_pack", __func__);
	json_decref(fields);
	line = json_dumps(ev, JSON_PRESERVE_ORDER);
	json_decref(ev);
	if (line == NULL)
		fatalx("%s: json_dumps", __func__);
	feed_listener(line, feed_arg);
	free(line);
}
