/*
 * The tokens of nginx's configuration grammar: words (bare or quoted, with
 * nginx's backslash escapes), ';', '{' and '}', with '#' comments and
 * line numbers, split where ngx_conf_read_token() splits them.  The
 * statements they make are conf_parse.c's business; what the words mean,
 * conf.c's and nginx_conf.c's.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"
#include "conf_int.h"

#define CONF_MAX_FILE_SIZE	(1024 * 1024)	/* bytes per file */

/* The first error sticks: "FILE:LINE: message" in lx->cause. */
static int PRINTFLIKE(3, 4)
conf_lex_error(struct conf_lex *lx, int line, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg = NULL;

	if (lx->cause != NULL)
		return -1;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	xasprintf(&lx->cause, "%s:%d: %s", lx->path, line, msg);
	free(msg);
	return -1;
}

/*
 * Read a whole regular file of at most CONF_MAX_FILE_SIZE bytes, NUL
 * terminated.  On error, *msg says why (no location) and the caller frees.
 *
 * A FIFO, a device or a socket is refused without blocking (fsafe.c): a
 * FIFO named by an include would stop -t, a start or a reload for good.
 * The buffer is the file's size, not the cap: an include fan-out opens
 * many files, and conf_parse.c caps their total (CONF_MAX_TOTAL_SIZE).
 * Bytes appended while it is read are not seen.
 */
int
conf_read_file(const char *path, char **bufp, size_t *lenp, char **msg)
{
	struct stat	 st;
	char		*buf = NULL, *why = NULL;
	size_t		 len = 0, size;
	ssize_t		 n;
	int		 fd = -1, rc = -1;

	if ((fd = fsafe_open_regular(path, 0, &st, &why)) == -1) {
		if (st.st_mode != 0)
			xasprintf(msg, "\"%s\" is not a regular file (%s)",
			    path, fsafe_type(st.st_mode));
		else
			xasprintf(msg, "open() \"%s\" failed (%s)", path,
			    strerror(errno));
		goto out;
	}
	if (st.st_size > CONF_MAX_FILE_SIZE) {
		xasprintf(msg, "file \"%s\" is too large (more than %d "
		    "bytes)", path, CONF_MAX_FILE_SIZE);
		goto out;
	}
	size = (size_t)st.st_size;
	buf = xmalloc(size + 1);
	while (len < size) {
		n = read(fd, buf + len, size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			xasprintf(msg, "read() \"%s\" failed (%s)", path,
			    strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	buf = NULL;
	rc = 0;
out:
	free(why);
	free(buf);
	if (fd != -1)
		close(fd);
	return rc;
}

void
conf_lex_free(struct conf_lex *lx)
{
	if (lx == NULL)
		return;
	free(lx->path);
	free(lx->dir);
	free(lx->buf);
	free(lx->cause);
	free(lx);
}

/*
 * Relative paths in the file resolve against dir (ending in '/'), or
 * beside the file when dir is NULL.
 */
struct conf_lex *
conf_lex_open(const char *path, const char *dir, char **msg)
{
	struct conf_lex	*lx;
	const char	*slash;

	lx = xcalloc(1, sizeof(*lx));
	if (conf_read_file(path, &lx->buf, &lx->len, msg) == -1) {
		free(lx);
		return NULL;
	}
	lx->path = xstrdup(path);
	if (dir != NULL)
		lx->dir = xstrdup(dir);
	else if ((slash = strrchr(path, '/')) != NULL)
		lx->dir = xstrndup(path, (size_t)(slash - path + 1));
	lx->line = 1;
	lx->lastline = 1;
	return lx;
}

/* A relative path, resolved as conf_lex_open() was told. */
char *
conf_path_resolve(const struct conf_lex *lx, const char *path)
{
	char	*s;

	if (path[0] == '/' || lx->dir == NULL)
		return xstrdup(path);
	xasprintf(&s, "%s%s", lx->dir, path);
	return s;
}

static int
conf_lex_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The backslash escapes nginx knows; others keep their backslash. */
static char
conf_lex_unescape(char c)
{
	switch (c) {
	case '"':
	case '\'':
	case '\\':
		return c;
	case 't':
		return '\t';
	case 'r':
		return '\r';
	case 'n':
		return '\n';
	}
	return '\0';
}

static int
conf_lex_put(struct conf_lex *lx, char c, int line)
{
	if (lx->toklen == CONF_MAX_TOKEN) {
		lx->tok[16] = '\0';
		return conf_lex_error(lx, line,
		    "too long parameter \"%s...\" started", lx->tok);
	}
	lx->tok[lx->toklen++] = c;
	return 0;
}

static void
conf_lex_skip(struct conf_lex *lx)
{
	char	 c;

	while (lx->off < lx->len) {
		c = lx->buf[lx->off];
		if (c == '\n')
			lx->line++;
		else if (c == '#') {
			while (lx->off < lx->len && lx->buf[lx->off] != '\n')
				lx->off++;
			continue;
		} else if (c != ' ' && c != '\t' && c != '\r')
			return;
		lx->off++;
	}
}

static int
conf_lex_quoted(struct conf_lex *lx, int line)
{
	char	 quote, c, e;

	quote = lx->buf[lx->off++];
	for (;;) {
		if (lx->off >= lx->len)
			return conf_lex_error(lx, line,
			    "unterminated quoted string");
		c = lx->buf[lx->off++];
		if (c == quote)
			break;
		if (c == '\0')
			return conf_lex_error(lx, lx->line,
			    "unexpected NUL byte");
		if (c == '\n')
			lx->line++;
		if (c == '\\' && lx->off < lx->len &&
		    (e = conf_lex_unescape(lx->buf[lx->off])) != '\0') {
			c = e;
			lx->off++;
		}
		if (conf_lex_put(lx, c, line) == -1)
			return -1;
	}
	/*
	 * As in nginx, a closing quote is followed by a space, ';', '{' or
	 * the ')' of an if (...) condition, which starts the next word.
	 */
	if (lx->off < lx->len && !conf_lex_is_space(c = lx->buf[lx->off]) &&
	    c != ';' && c != '{' && c != ')')
		return conf_lex_error(lx, lx->line, "unexpected \"%c\"", c);
	return 0;
}

/*
 * A bare word ends at a space, ';' or '{', as in nginx: a '}' is part of
 * it, and so is the '{' of "${name}".
 */
static int
conf_lex_bare(struct conf_lex *lx, int line)
{
	char	 c, next, e;
	int	 dollar = 0;

	while (lx->off < lx->len) {
		c = lx->buf[lx->off];
		if (conf_lex_is_space(c) || c == ';' || (c == '{' && !dollar))
			break;
		lx->off++;
		dollar = c == '$';
		if (c == '\0')
			return conf_lex_error(lx, lx->line,
			    "unexpected NUL byte");
		if (c == '\\' && lx->off < lx->len &&
		    (next = lx->buf[lx->off]) != '\n' && next != '\0') {
			lx->off++;
			if ((e = conf_lex_unescape(next)) != '\0') {
				if (conf_lex_put(lx, e, line) == -1)
					return -1;
				continue;
			}
			if (conf_lex_put(lx, c, line) == -1)
				return -1;
			c = next;
		}
		if (conf_lex_put(lx, c, line) == -1)
			return -1;
	}
	return 0;
}

/* The next token; a word is left NUL terminated in lx->tok. */
enum conf_tok
conf_lex_next(struct conf_lex *lx, int *line)
{
	char	 c;
	int	 rc;

	conf_lex_skip(lx);
	if (lx->off >= lx->len) {
		*line = lx->lastline;
		return CONF_TOK_EOF;
	}
	*line = lx->lastline = lx->line;
	c = lx->buf[lx->off];
	switch (c) {
	case ';':
		lx->off++;
		return CONF_TOK_SEMI;
	case '{':
		lx->off++;
		return CONF_TOK_LBRACE;
	case '}':
		lx->off++;
		return CONF_TOK_RBRACE;
	}
	lx->toklen = 0;
	if (c == '"' || c == '\'')
		rc = conf_lex_quoted(lx, *line);
	else
		rc = conf_lex_bare(lx, *line);
	if (rc == -1)
		return CONF_TOK_ERROR;
	lx->tok[lx->toklen] = '\0';
	return CONF_TOK_WORD;
}
