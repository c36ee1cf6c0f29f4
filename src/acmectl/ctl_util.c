/*
 * acmectl: the helpers every other acmectl file calls: allocation where
 * running out ends acmectl, and a clock for timeouts.  They sit below the commands (acmectl.c),
 * the HTTP client (ctl_http.c), the printers (ctl_out.c) and the
 * waiting (ctl_wait.c), and call none of them.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

void
ctl_fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	fputs("acmectl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

char *
ctl_xasprintf(const char *fmt, ...)
{
	va_list	 ap;
	char	*s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		ctl_fatalx("out of memory");
	va_end(ap);
	return s;
}

void *
ctl_xreallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		ctl_fatalx("out of memory");
	if ((p = realloc(p, n * size)) == NULL)
		ctl_fatalx("out of memory");
	return p;
}

char *
ctl_xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		ctl_fatalx("out of memory");
	return p;
}

/* Milliseconds on a clock that never jumps. */
long long
ctl_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
