/*
 * textbuf.h: a growable text buffer, for answers written a piece at a
 * time (the control API's list, the metrics page).
 */
#ifndef TEXTBUF_H
#define TEXTBUF_H

#include <stddef.h>

/*
 * tb_buf holds tb_len bytes and a NUL after them once anything was
 * reserved; the caller owns tb_buf and frees it.
 */
struct textbuf {
	char	*tb_buf;
	size_t	 tb_len;
	size_t	 tb_size;
};

void	 textbuf_reserve(struct textbuf *, size_t);
void	 textbuf_add(struct textbuf *, const char *, size_t);
void	 textbuf_puts(struct textbuf *, const char *);
void	 textbuf_printf(struct textbuf *, const char *, ...)
	    __attribute__((__format__(__printf__, 2, 3)));

#endif
