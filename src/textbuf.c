/*
 * A growable text buffer: room grows by doubling, so that text written
 * in many small pieces costs one copy of each piece and a few reallocs.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"
#include "textbuf.h"

/* Room for more bytes and the NUL after them. */
void
textbuf_reserve(struct textbuf *tb, size_t more)
{
	size_t	 size;

	if (tb->tb_size - tb->tb_len > more)
		return;
	size = tb->tb_size == 0 ? 4096 : tb->tb_size;
	while (size - tb->tb_len <= more) {
		if (size > SIZE_MAX / 2)
			fatalx("%s: %zu bytes", __func__, size);
		size *= 2;
	}
	tb->tb_buf = xreallocarray(tb->tb_buf, size, 1);
	tb->tb_size = size;
	tb->tb_buf[tb->tb_len] = '\0';
}

void
textbuf_add(struct textbuf *tb, const char *s, size_t len)
{
	textbuf_reserve(tb, len);
	memcpy(tb->tb_buf + tb->tb_len, s, len);
	tb->tb_len += len;
	tb->tb_buf[tb->tb_len] = '\0';
}

void
textbuf_puts(struct textbuf *tb, const char *s)
{
	textbuf_add(tb, s, strlen(s));
}

/* Formatted in place; only text longer than the room left costs twice. */
void
textbuf_printf(struct textbuf *tb, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	textbuf_reserve(tb, 0);
	va_start(ap, fmt);
	n = vsnprintf(tb->tb_buf + tb->tb_len, tb->tb_size - tb->tb_len, fmt,
	    ap);
	va_end(ap);
	if (n < 0)
		fatalx("%s: vsnprintf failed", __func__);
	if ((size_t)n >= tb->tb_size - tb->tb_len) {
		textbuf_reserve(tb, n);
		va_start(ap, fmt);
		vsnprintf(tb->tb_buf + tb->tb_len, tb->tb_size - tb->tb_len,
		    fmt, ap);
		va_end(ap);
	}
	tb->tb_len += n;
}
