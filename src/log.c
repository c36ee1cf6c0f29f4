/*
 * Logging to stderr, in the foreground.  log_warn appends strerror(errno)
 * and keeps errno; fatal/fatalx end the process.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "sidecar.h"

static int	log_level_verbose;

/*
 * Control bytes become \xHH, so that a value from outside (Redis, a
 * peer, a hook's output) can neither end the line early nor forge one.
 */
static char *
log_escape(const char *msg)
{
	static const char	 hex[] = "0123456789abcdef";
	const unsigned char	*p;
	char			*out, *o;

	/* Not xcalloc(): fatal() would log again. */
	if ((out = o = malloc(strlen(msg) * 4 + 1)) == NULL)
		return NULL;
	for (p = (const unsigned char *)msg; *p != '\0'; p++) {
		if (*p >= 0x20 && *p != 0x7f) {
			*o++ = (char)*p;
			continue;
		}
		*o++ = '\\';
		*o++ = 'x';
		*o++ = hex[*p >> 4];
		*o++ = hex[*p & 0xf];
	}
	*o = '\0';
	return out;
}

/*
 * One line, written with one stdio call: the writer thread logs too, and
 * stdio locks each call, so lines never interleave.
 */
static void
log_vwrite(const char *level, const char *fmt, va_list ap, const char *tail)
{
	char		 stamp[32], *msg = NULL, *safe;
	struct timespec	 ts;
	struct tm	 tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y/%m/%d %H:%M:%S", &tm);
	if (vasprintf(&msg, fmt, ap) == -1)
		msg = NULL;
	if (msg == NULL || (safe = log_escape(msg)) == NULL) {
		free(msg);
		fprintf(stderr, "%s [%s] (out of memory formatting a log line)\n",
		    stamp, level);
		return;
	}
	fprintf(stderr, "%s [%s] %s%s%s\n", stamp, level, safe,
	    tail != NULL ? ": " : "", tail != NULL ? tail : "");
	free(safe);
	free(msg);
}

static void
log_libevent(int severity, const char *msg)
{
	if (severity == EVENT_LOG_DEBUG && !log_level_verbose)
		return;
	log_debug("libevent: %s", msg);
}

void
log_init(int verbose)
{
	log_level_verbose = verbose;
	setvbuf(stderr, NULL, _IOLBF, 0);
	event_set_log_callback(log_libevent);
}

int
log_verbose(void)
{
	return log_level_verbose;
}

void
log_warn(const char *fmt, ...)
{
	int	 saved = errno;
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("warn", fmt, ap, strerror(saved));
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("warn", fmt, ap, NULL);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("info", fmt, ap, NULL);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	 ap;

	if (!log_level_verbose)
		return;
	va_start(ap, fmt);
	log_vwrite("debug", fmt, ap, NULL);
	va_end(ap);
}

/* Log with the innermost OpenSSL error appended, and clear the queue. */
void
log_openssl(const char *fmt, ...)
{
	char		 buf[256];
	unsigned long	 e;
	va_list		 ap;

	e = ERR_peek_last_error();
	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "unknown OpenSSL error");
	ERR_clear_error();
	va_start(ap, fmt);
	log_vwrite("warn", fmt, ap, buf);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	int	 saved = errno;
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("emerg", fmt, ap, strerror(saved));
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("emerg", fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
