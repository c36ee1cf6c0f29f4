/*
 * nginx's grammar over conf_lex.c's tokens: statements, { } blocks and
 * include, and the errors every configuration file reports.
 *
 * The grammar is nginx's: "directive arg ...;", "{ }" blocks, '#'
 * comments, "..." and '...' strings with backslash escapes, and
 * "include PATTERN;" expanded with glob(3).  As in nginx, each directive
 * is handled as soon as it is read, so the error reported is the first one
 * in file order, and every message reads "FILE:LINE: message" with the
 * wording nginx uses where it has one.
 *
 * What a statement means is its context's business (struct conf_ctx):
 * conf.c's directive table in the sidecar's file, nginx_conf.c's walk in
 * an nginx.conf, conf_cert.c's in certificates.conf.  This file is below
 * them all and calls none of them, only conf_lex.c and the daemon's
 * utilities, so that the handlers of conf_cert.c and conf_cluster.c,
 * which conf.c's table names, call down here and never back up into
 * conf.c: for their errors and the helpers they share (conf_number,
 * conf_find_issuer).
 */
#include <sys/types.h>

#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"
#include "conf_int.h"

/* Hard limits on input: a config is small and written by a person. */
#define CONF_MAX_INCLUDE_DEPTH	16		/* nested include levels */
/*
 * One load (start, -t, reload) reads at most this many files and bytes,
 * the main files and every include counted.  Neither depth nor the size
 * of one file (CONF_MAX_FILE_SIZE, conf_lex.c) bounds a fan-out: seven
 * levels of ten files, each including the whole next level, are ten
 * million opens.  Thousands of server files stay within the caps.
 */
#define CONF_MAX_FILES		4096		/* files read per load */
#define CONF_MAX_TOTAL_SIZE	(16 * 1024 * 1024)	/* their bytes */
#define CONF_MAX_BLOCK_DEPTH	64		/* nested { } blocks */

/* Errors: the first one sticks, later ones are consequences. */
static int PRINTFLIKE(4, 0)
conf_verror(struct conf_parse *p, const char *file, int line,
    const char *fmt, va_list ap)
{
	char	*msg = NULL;

	if (p->cause != NULL)
		return -1;
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("vasprintf");
	/* No file: a certificate from the control API, checked alone. */
	if (file == NULL) {
		p->cause = msg;
		return -1;
	}
	xasprintf(&p->cause, "%s:%d: %s", file, line, msg);
	free(msg);
	return -1;
}

int
conf_error_at(struct conf_parse *p, const char *file, int line,
    const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	conf_verror(p, file, line, fmt, ap);
	va_end(ap);
	return -1;
}

/* An error at the directive being handled. */
int
conf_error(struct conf_parse *p, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	conf_verror(p, p->file, p->line, fmt, ap);
	va_end(ap);
	return -1;
}

static void
conf_args_free(struct conf_args *a)
{
	int	 i;

	for (i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

static int
conf_args_add(struct conf_parse *p, struct conf_lex *lx,
    struct conf_args *a, int line)
{
	if (a->n == 0)
		a->line = line;
	if (a->n == CONF_MAX_ARGS)
		return conf_error_at(p, lx->path, line,
		    "too many parameters in \"%s\" directive", a->v[0]);
	if (a->n == a->cap) {
		a->cap = a->cap == 0 ? 8 : a->cap * 2;
		a->v = xreallocarray(a->v, (size_t)a->cap, sizeof(*a->v));
	}
	a->v[a->n++] = xstrndup(lx->tok, lx->toklen);
	return 0;
}

/*
 * Read one directive's words up to its terminator, which is returned:
 * ';', '{', a '}' closing the block (no words) or the end of the file (no
 * words).  The nginx checks of ngx_conf_read_token() apply.
 */
static enum conf_tok
conf_read_stmt(struct conf_parse *p, struct conf_lex *lx, struct conf_args *a)
{
	enum conf_tok	 tok;
	int		 line;

	for (;;) {
		tok = conf_lex_next(lx, &line);
		a->endline = line;
		switch (tok) {
		case CONF_TOK_ERROR:
			if (p->cause == NULL)
				p->cause = xstrdup(lx->cause);
			return tok;
		case CONF_TOK_WORD:
			if (conf_args_add(p, lx, a, line) == -1)
				return CONF_TOK_ERROR;
			break;
		case CONF_TOK_SEMI:
		case CONF_TOK_LBRACE:
			if (a->n == 0) {
				conf_error_at(p, lx->path, line,
				    "unexpected \"%c\"",
				    tok == CONF_TOK_SEMI ? ';' : '{');
				return CONF_TOK_ERROR;
			}
			return tok;
		case CONF_TOK_RBRACE:
			if (a->n != 0) {
				conf_error_at(p, lx->path, line,
				    "unexpected \"}\"");
				return CONF_TOK_ERROR;
			}
			return tok;
		case CONF_TOK_EOF:
			if (a->n != 0) {
				conf_error_at(p, lx->path, line,
				    "unexpected end of file, expecting \";\" "
				    "or \"}\"");
				return CONF_TOK_ERROR;
			}
			return tok;
		}
	}
}

/* Charge one file read to the load; the error is at the current line. */
static int
conf_count_file(struct conf_parse *p, const struct conf_lex *lx)
{
	p->nfiles++;
	p->nbytes += lx->len;
	if (p->nbytes > CONF_MAX_TOTAL_SIZE)
		return conf_error(p, "included files are too large (more than "
		    "%d bytes in all)", CONF_MAX_TOTAL_SIZE);
	return 0;
}

static int
conf_include_file(struct conf_parse *p, const struct conf_ctx *ctx,
    const char *path)
{
	struct conf_lex	*lx = p->lex, *nlx;
	const char	*file = p->file;
	char		*msg = NULL;
	int		 line = p->line, rc;

	if (p->nfiles >= CONF_MAX_FILES)
		return conf_error(p, "too many files included (more than %d)",
		    CONF_MAX_FILES);
	if ((nlx = conf_lex_open(path, p->prefix, &msg)) == NULL) {
		conf_error(p, "%s", msg);
		free(msg);
		return -1;
	}
	if (conf_count_file(p, nlx) == -1) {
		conf_lex_free(nlx);
		return -1;
	}
	p->depth++;
	rc = conf_parse_block(p, nlx, ctx, 0);
	p->depth--;
	p->lex = lx;
	p->file = file;
	p->line = line;
	conf_lex_free(nlx);
	return rc;
}

/*
 * As in nginx, a pattern whose folder does not exist matches nothing
 * (an nginx.conf mounted without its modules-enabled/, say); a folder
 * that cannot be read is an error, not certificates silently missed.
 */
static int
conf_glob_error(const char *path, int error)
{
	(void)path;
	return error != ENOENT && error != ENOTDIR;
}

/*
 * include PATTERN: a plain name must exist, a glob may match nothing.
 * Files are read in glob(3)'s sorted order, in the including context.
 */
int
conf_include(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	glob_t	 g;
	char	*pattern = NULL;
	size_t	 i;
	int	 r, rc = -1;

	memset(&g, 0, sizeof(g));
	if (a->n != 2)
		return conf_error(p, "invalid number of arguments in "
		    "\"include\" directive");
	if (end != CONF_TOK_SEMI)
		return conf_error(p, "directive \"include\" is not terminated "
		    "by \";\"");
	if (p->depth >= CONF_MAX_INCLUDE_DEPTH)
		return conf_error(p, "include nesting is too deep (more than "
		    "%d levels)", CONF_MAX_INCLUDE_DEPTH);

	pattern = conf_path_resolve(p->lex, a->v[1]);
	if (strpbrk(pattern, "*?[") == NULL) {
		rc = conf_include_file(p, ctx, pattern);
		goto out;
	}
	r = glob(pattern, 0, conf_glob_error, &g);
	if (r == GLOB_NOMATCH) {
		rc = 0;
		goto out;
	}
	if (r != 0) {
		conf_error(p, "glob() \"%s\" failed", pattern);
		goto out;
	}
	for (i = 0; i < g.gl_pathc; i++) {
		if (conf_include_file(p, ctx, g.gl_pathv[i]) == -1)
			goto out;
	}
	rc = 0;
out:
	globfree(&g);
	free(pattern);
	return rc;
}

/*
 * Read directives up to the end of the file, or up to the '}' closing
 * the block when inblock, and hand each to ctx.
 */
int
conf_parse_block(struct conf_parse *p, struct conf_lex *lx,
    const struct conf_ctx *ctx, int inblock)
{
	struct conf_args	 a;
	enum conf_tok		 end;
	int			 rc = -1;

	memset(&a, 0, sizeof(a));
	if (inblock && ++p->blocks > CONF_MAX_BLOCK_DEPTH) {
		conf_error(p, "blocks are nested too deep (more than %d "
		    "levels)", CONF_MAX_BLOCK_DEPTH);
		goto out;
	}
	for (;;) {
		end = conf_read_stmt(p, lx, &a);
		if (end == CONF_TOK_ERROR)
			goto out;
		if (end == CONF_TOK_EOF) {
			if (inblock) {
				conf_error_at(p, lx->path, a.endline,
				    "unexpected end of file, expecting \"}\"");
				goto out;
			}
			break;
		}
		if (end == CONF_TOK_RBRACE) {
			if (!inblock) {
				conf_error_at(p, lx->path, a.endline,
				    "unexpected \"}\"");
				goto out;
			}
			break;
		}
		p->lex = lx;
		p->file = lx->path;
		p->line = a.line;
		if (ctx->cx_stmt(p, ctx, &a, end) == -1)
			goto out;
		conf_args_free(&a);
	}
	rc = 0;
out:
	if (inblock)
		p->blocks--;
	conf_args_free(&a);
	return rc;
}

/* A decimal number in [min, max], the whole string. */
int
conf_number(const char *s, long long min, long long max, long long *out)
{
	long long	 v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > max)
			return -1;
	}
	if (v < min)
		return -1;
	*out = v;
	return 0;
}

struct conf_issuer *
conf_find_issuer(struct conf *conf, const char *name)
{
	struct conf_issuer	*ci;

	TAILQ_FOREACH(ci, &conf->c_issuers, ci_entry) {
		if (strcmp(ci->ci_name, name) == 0)
			return ci;
	}
	return NULL;
}
