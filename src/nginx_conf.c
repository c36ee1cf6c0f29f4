/*
 * nginx.conf as the sidecar reads it (--nginx-conf, nginx_config): the
 * acme_* directives of nginx's own configuration, so that one file
 * configures nginx and the sidecar alike.
 *
 * The walk follows nginx's contexts and takes:
 *	main	user USER [GROUP]		the nginx workers' group
 *	http	acme_issuer NAME { ... }	conf.c's handlers, unchanged
 *		acme_shared_zone ...
 *	server	server_name, acme_certificate (one per key family),
 *		listen (the readiness check's address)
 * and follows include wherever it walks.  Every other directive and block
 * (events, location, map, upstream, stream, if, types, ...) is read past
 * without judging it: that is nginx -t's job.  An acme_* directive is
 * judged wherever the walk looks, as nginx-acme would judge it.
 *
 * As in nginx, relative paths (include patterns, and state_path,
 * ssl_trusted_certificate, account_key and external_account_key files)
 * resolve against the directory of the main nginx.conf, nginx's conf
 * prefix, and not against the file that holds them.
 */
#include <sys/types.h>

#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"
#include "conf_int.h"

/* One word of a server_name directive and where it was. */
struct nginx_name {
	char		*nn_name;
	char		*nn_file;
	int		 nn_line;
};

/* Key families: a server may have one acme_certificate of each. */
enum nginx_family {
	NGINX_FAMILY_EC,
	NGINX_FAMILY_RSA,
	NGINX_FAMILY_MAX
};

/* One acme_certificate directive of a server. */
struct nginx_cert {
	char			**nc_words;	/* its words, the name first */
	int			 nc_nwords;
	char			*nc_file;
	int			 nc_line;
};

/* A server { } being read: nothing is decided before its '}'. */
struct nginx_server {
	struct nginx_name	*ns_names;
	size_t			 ns_nnames;
	struct nginx_cert	 ns_certs[NGINX_FAMILY_MAX];
	int			 ns_ncerts;	/* 0: no acme_certificate */
};

static int	nginx_conf_main(struct conf_parse *, const struct conf_ctx *,
		    struct conf_args *, enum conf_tok);
static int	nginx_conf_http(struct conf_parse *, const struct conf_ctx *,
		    struct conf_args *, enum conf_tok);
static int	nginx_conf_server(struct conf_parse *,
		    const struct conf_ctx *, struct conf_args *, enum conf_tok);
static int	nginx_conf_skip(struct conf_parse *, const struct conf_ctx *,
		    struct conf_args *, enum conf_tok);

static const struct conf_ctx nginx_conf_skip_ctx = { nginx_conf_skip, NULL };

/*
 * The acme_* directives are ours to judge; the others are nginx's, and
 * so is acme_fallback_certificate, which only the nginx module reads.
 */
static int
nginx_conf_ours(const char *name)
{
	return strncmp(name, "acme_", 5) == 0 &&
	    strcmp(name, "acme_fallback_certificate") != 0;
}

/*
 * Read past a directive, and past its block if it has one.  Includes in
 * it are not followed: a block is whole within one file, and no acme_*
 * directive belongs in it.
 */
static int
nginx_conf_skip(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	(void)a;
	if (end != CONF_TOK_LBRACE)
		return 0;
	return conf_parse_block(p, p->lex, ctx, 1);
}

/*
 * user USER [GROUP]: the group of the nginx workers, which the segment
 * file is given.  Without GROUP nginx takes the group named like USER;
 * where there is none, USER's primary group.  When neither is known here
 * (the sidecar may run in a container without nginx's users), NULL.
 * Whether nginx accepts the directive is nginx's business, but a "user"
 * without USER has nothing to take: nginx's own error, as nginx -t says it.
 */
static int
nginx_conf_user(struct conf_parse *p, struct conf_args *a)
{
	struct passwd	*pw;
	struct group	*gr;
	char		*group = NULL;

	if (a->n < 2 || a->n > 3)
		return conf_error(p, "invalid number of arguments in \"user\" "
		    "directive");
	if (a->n == 3)
		group = xstrdup(a->v[2]);
	else if (a->n == 2 && getgrnam(a->v[1]) != NULL)
		group = xstrdup(a->v[1]);
	else if (a->n == 2 && (pw = getpwnam(a->v[1])) != NULL &&
	    (gr = getgrgid(pw->pw_gid)) != NULL)
		group = xstrdup(gr->gr_name);
	free(p->conf->c_nginx_group);
	p->conf->c_nginx_group = group;
	free(p->conf->c_nginx_user);
	p->conf->c_nginx_user = xstrdup(a->v[1]);
	p->conf->c_nginx_user_from = "\"user\" in nginx.conf";
	return 0;
}

/*
 * Without "user", a master started as root runs its workers as the user
 * and group nginx was built with: "nobody", and the group its build host
 * had of "nobody" and "nogroup" (Debian builds: "nogroup"; none passes
 * --user or --group).  A master started as another user keeps its own,
 * which nothing here can know; root is where "user" matters.
 */
static void
nginx_conf_default_user(struct conf *conf)
{
	const char	*group = NULL;

	if (getgrnam("nogroup") != NULL)
		group = "nogroup";
	else if (getgrnam("nobody") != NULL)
		group = "nobody";
	conf->c_nginx_user = xstrdup("nobody");
	conf->c_nginx_group = group != NULL ? xstrdup(group) : NULL;
	conf->c_nginx_user_from = "nginx's default if its master runs as root: "
	    "nginx.conf has no \"user\"";
}

static void
nginx_server_free(struct nginx_server *srv)
{
	struct nginx_cert	*nc;
	size_t			 i;
	int			 j, k;

	for (i = 0; i < srv->ns_nnames; i++) {
		free(srv->ns_names[i].nn_name);
		free(srv->ns_names[i].nn_file);
	}
	free(srv->ns_names);
	for (j = 0; j < srv->ns_ncerts; j++) {
		nc = &srv->ns_certs[j];
		for (k = 0; k < nc->nc_nwords; k++)
			free(nc->nc_words[k]);
		free(nc->nc_words);
		free(nc->nc_file);
	}
}

static void
nginx_conf_names(struct conf_parse *p, struct nginx_server *srv,
    struct conf_args *a)
{
	struct nginx_name	*nn;
	int			 i;

	srv->ns_names = xreallocarray(srv->ns_names,
	    srv->ns_nnames + (size_t)a->n - 1, sizeof(*srv->ns_names));
	for (i = 1; i < a->n; i++) {
		nn = &srv->ns_names[srv->ns_nnames++];
		nn->nn_name = xstrdup(a->v[i]);
		nn->nn_file = xstrdup(p->file);
		nn->nn_line = a->line;
	}
}

/*
 * The key family of acme_certificate's words: ECDSA unless key= says
 * RSA.  -1 for a key= that names neither, which conf_cert_param() will
 * refuse with its own message.
 */
static int
nginx_conf_family(char *const *words, int nwords)
{
	int	 i;

	for (i = 2; i < nwords; i++) {
		if (strncmp(words[i], "key=", 4) != 0)
			continue;
		if (strncmp(words[i] + 4, "rsa", 3) == 0)
			return NGINX_FAMILY_RSA;
		if (strncmp(words[i] + 4, "ecdsa", 5) == 0)
			return NGINX_FAMILY_EC;
		return -1;
	}
	return NGINX_FAMILY_EC;
}

/*
 * nginx-acme allows one acme_certificate per server; we allow one per
 * key family, as nginx allows one ssl_certificate per family: the module
 * serves ECDSA to the clients that take it and RSA to the others.
 */
static int
nginx_conf_cert_family(struct conf_parse *p, struct nginx_server *srv,
    const struct conf_args *a)
{
	static const char	*names[NGINX_FAMILY_MAX] = { "ECDSA", "RSA" };
	struct nginx_cert	*nc;
	int			 fam, i;

	/*
	 * Full first, whatever this one's key=: ns_certs has no room for a
	 * third (an unknown key= is refused later, after it is kept).
	 */
	if (srv->ns_ncerts == NGINX_FAMILY_MAX)
		return conf_error(p, "\"acme_certificate\" directive is "
		    "duplicate");
	if ((fam = nginx_conf_family(a->v, a->n)) == -1)
		return 0;
	for (i = 0; i < srv->ns_ncerts; i++) {
		nc = &srv->ns_certs[i];
		if (nginx_conf_family(nc->nc_words, nc->nc_nwords) != fam)
			continue;
		return conf_error(p, "\"acme_certificate\" directive is "
		    "duplicate: the server has an %s certificate from %s:%d "
		    "already, and a second one must have the other key type",
		    names[fam], nc->nc_file, nc->nc_line);
	}
	return 0;
}

/* Kept for the '}': server_name may come after it. */
static int
nginx_conf_cert(struct conf_parse *p, struct nginx_server *srv,
    struct conf_args *a, enum conf_tok end)
{
	struct nginx_cert	*nc;
	int			 i;

	if (end != CONF_TOK_SEMI)
		return conf_error(p, "directive \"acme_certificate\" is not "
		    "terminated by \";\"");
	if (a->n < 2)
		return conf_error(p, "invalid number of arguments in "
		    "\"acme_certificate\" directive");
	if (nginx_conf_cert_family(p, srv, a) == -1)
		return -1;
	nc = &srv->ns_certs[srv->ns_ncerts++];
	nc->nc_words = xreallocarray(NULL, (size_t)a->n, sizeof(char *));
	for (i = 0; i < a->n; i++)
		nc->nc_words[i] = xstrdup(a->v[i]);
	nc->nc_nwords = a->n;
	nc->nc_file = xstrdup(p->file);
	nc->nc_line = a->line;
	return 0;
}

/*
 * The identifiers of an acme_certificate without any: the server_name
 * words, where "_" and "" name no host.  Regular expressions and
 * wildcards other than "*.name" are errors at their server_name, since
 * the certificate relies on them; "*.name" needs dns-01, which
 * conf_check_certs() judges at that server_name too.
 */
static int
nginx_conf_idents(struct conf_parse *p, struct nginx_server *srv,
    struct conf_cert *cc)
{
	struct nginx_name	*nn;
	size_t			 i;

	for (i = 0; i < srv->ns_nnames; i++) {
		nn = &srv->ns_names[i];
		if (strcmp(nn->nn_name, "_") == 0 || nn->nn_name[0] == '\0')
			continue;
		p->file = nn->nn_file;
		p->line = nn->nn_line;
		if (nn->nn_name[0] == '~')
			return conf_error(p, "server_name \"%s\" cannot be an "
			    "ACME identifier: it is a regular expression; list "
			    "the identifiers in \"acme_certificate\"",
			    nn->nn_name);
		if (strchr(nn->nn_name, '*') != NULL &&
		    strncmp(nn->nn_name, "*.", 2) != 0)
			return conf_error(p, "server_name \"%s\" cannot be an "
			    "ACME identifier: only a wildcard \"*.name\" can "
			    "be, with challenge dns-01; list the identifiers "
			    "in \"acme_certificate\"", nn->nn_name);
		if (conf_cert_ident(p, cc, nn->nn_name) == -1)
			return -1;
	}
	return 0;
}

/*
 * Two server blocks (say, two ports) may ask for the same certificate,
 * and the nginx module gives both the one id: one certificate serves them.
 * The same means the same profile= and challenge= too: one that differs
 * is a conflict (as the module says), not a line whose word would go
 * unread.
 */
static int
nginx_conf_same(const struct conf *conf, const struct conf_cert *cc)
{
	const struct conf_cert	*o;
	size_t			 i;

	TAILQ_FOREACH(o, &conf->c_certs, cc_entry) {
		if (!o->cc_nginx || o->cc_key != cc->cc_key ||
		    o->cc_nidents != cc->cc_nidents ||
		    o->cc_challenge != cc->cc_challenge ||
		    strcmp(o->cc_issuer, cc->cc_issuer) != 0 ||
		    (o->cc_profile == NULL) != (cc->cc_profile == NULL) ||
		    (o->cc_profile != NULL &&
		    strcmp(o->cc_profile, cc->cc_profile) != 0))
			continue;
		for (i = 0; i < cc->cc_nidents; i++) {
			if (strcmp(o->cc_idents[i], cc->cc_idents[i]) != 0)
				break;
		}
		if (i == cc->cc_nidents)
			return 1;
	}
	return 0;
}

/*
 * One acme_certificate of a server block, once all of it is read.  Its
 * words are parameters (key=, profile=, ...: conf_cert_param() knows
 * them) and identifiers, which never hold a '='; without identifiers
 * the server's names are its identifiers.
 */
static int
nginx_conf_cert_end(struct conf_parse *p, struct nginx_server *srv,
    struct nginx_cert *nc)
{
	struct conf_cert	*cc;
	int			 i, havekey = 0, named = 0;

	p->file = nc->nc_file;
	p->line = nc->nc_line;
	cc = conf_cert_new(p, nc->nc_words[1]);
	cc->cc_nginx = 1;
	for (i = 2; i < nc->nc_nwords; i++) {
		if (strchr(nc->nc_words[i], '=') == NULL)
			named = 1;
		if (conf_cert_param(p, cc, nc->nc_words[i], &havekey) == -1)
			goto fail;
	}
	if (!named && nginx_conf_idents(p, srv, cc) == -1)
		goto fail;
	p->file = nc->nc_file;
	p->line = nc->nc_line;
	if (cc->cc_nidents == 0) {
		conf_error(p, "no identifiers in \"acme_certificate\" "
		    "directive, and no server_name that can be one");
		goto fail;
	}
	if (nginx_conf_same(p->conf, cc)) {
		conf_cert_free(cc);
		return 0;
	}
	return conf_cert_add(p, cc);
fail:
	conf_cert_free(cc);
	return -1;
}

/* The certificates of a server block, once all of it is read. */
static int
nginx_conf_server_end(struct conf_parse *p, struct nginx_server *srv)
{
	int	 i;

	for (i = 0; i < srv->ns_ncerts; i++) {
		if (nginx_conf_cert_end(p, srv, &srv->ns_certs[i]) == -1)
			return -1;
	}
	return 0;
}

static int
nginx_conf_server_block(struct conf_parse *p)
{
	struct nginx_server	 srv;
	struct conf_ctx		 ctx = { nginx_conf_server, &srv };
	const char		*file = p->file;
	int			 line = p->line, rc;

	memset(&srv, 0, sizeof(srv));
	rc = conf_parse_block(p, p->lex, &ctx, 1);
	if (rc == 0)
		rc = nginx_conf_server_end(p, &srv);
	p->file = file;
	p->line = line;
	nginx_server_free(&srv);
	return rc;
}

/*
 * listen ADDR[:PORT] ssl: where the readiness check makes tls-alpn-01's
 * handshake when the module answers it (no tls_alpn_listen).  The first
 * ssl listen on port 443 is the one the CA reaches; without one, the
 * first ssl listen, as for HTTP-01 below.
 */
static void
nginx_conf_tls_listen(struct conf_parse *p, struct conf_args *a)
{
	struct conf	*conf = p->conf;
	const char	*bad;
	char		*addr = NULL;
	int		 port;

	if ((conf->c_tls_check_addr != NULL && conf->c_tls_check_port == 443) ||
	    conf_connect_addr(a->v[1], &addr, &port, &bad) == -1)
		return;
	if (conf->c_tls_check_addr != NULL && port != 443) {
		free(addr);
		return;
	}
	free(conf->c_tls_check_addr);
	free(conf->c_tls_check_from);
	conf->c_tls_check_addr = addr;
	conf->c_tls_check_port = port;
	xasprintf(&conf->c_tls_check_from, "listen at %s:%d", p->file,
	    a->line);
}

/*
 * listen ADDR[:PORT] [params]: where the readiness check fetches HTTP-01
 * answers, unless challenge_check says.  The first listen on port 80 is
 * the one the CA reaches; without one, the first plain-HTTP listen (no
 * ssl, no quic), as a NAT or a Kubernetes Service maps port 80 to
 * 8080.  A unix: socket or a host name other than localhost is passed
 * over: the check connects to an address.
 */
static void
nginx_conf_listen(struct conf_parse *p, struct conf_args *a)
{
	struct conf	*conf = p->conf;
	const char	*bad;
	char		*addr = NULL;
	int		 i, port;

	if (a->n < 2)
		return;
	for (i = 2; i < a->n; i++)
		if (strcmp(a->v[i], "ssl") == 0) {
			nginx_conf_tls_listen(p, a);
			return;
		}
	if (conf->c_check_set ||
	    (conf->c_check_addr != NULL && !conf->c_check_plain))
		return;
	for (i = 2; i < a->n; i++)
		if (strcmp(a->v[i], "quic") == 0)
			return;
	if (conf_connect_addr(a->v[1], &addr, &port, &bad) == -1)
		return;
	if (conf->c_check_addr != NULL && port != 80) {
		free(addr);
		return;
	}
	free(conf->c_check_addr);
	free(conf->c_check_from);
	conf->c_check_addr = addr;
	conf->c_check_port = port;
	conf->c_check_plain = port != 80;
	xasprintf(&conf->c_check_from, "listen at %s:%d", p->file, a->line);
}

static int
nginx_conf_server(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	struct conf_block	 blk = { .where = CONF_SERVER };
	const char		*name = a->v[0];

	if (strcmp(name, "include") == 0)
		return conf_include(p, ctx, a, end);
	if (strcmp(name, "server_name") == 0 && end == CONF_TOK_SEMI) {
		/* nginx -t refuses it too (found by tests/fuzz). */
		if (a->n < 2)
			return conf_error(p, "invalid number of arguments in "
			    "\"server_name\" directive");
		nginx_conf_names(p, ctx->cx_arg, a);
		return 0;
	}
	if (strcmp(name, "acme_certificate") == 0)
		return nginx_conf_cert(p, ctx->cx_arg, a, end);
	if (strcmp(name, "listen") == 0 && end == CONF_TOK_SEMI) {
		nginx_conf_listen(p, a);
		return 0;
	}
	if (nginx_conf_ours(name))
		return conf_command(p, &blk, a, end);
	return nginx_conf_skip(p, &nginx_conf_skip_ctx, a, end);
}

static int
nginx_conf_http(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	const char	*name = a->v[0];

	if (strcmp(name, "include") == 0)
		return conf_include(p, ctx, a, end);
	if (strcmp(name, "server") == 0 && end == CONF_TOK_LBRACE)
		return nginx_conf_server_block(p);
	if (nginx_conf_ours(name))
		return conf_command(p, ctx->cx_arg, a, end);
	return nginx_conf_skip(p, &nginx_conf_skip_ctx, a, end);
}

static int
nginx_conf_main(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	struct conf_block	 blk = { .where = CONF_NGX_MAIN };
	struct conf_block	 http = { .where = CONF_HTTP };
	struct conf_ctx		 hctx = { nginx_conf_http, &http };
	const char		*name = a->v[0];

	if (strcmp(name, "include") == 0)
		return conf_include(p, ctx, a, end);
	if (strcmp(name, "http") == 0 && end == CONF_TOK_LBRACE)
		return conf_parse_block(p, p->lex, &hctx, 1);
	if (strcmp(name, "user") == 0 && end == CONF_TOK_SEMI)
		return nginx_conf_user(p, a);
	if (nginx_conf_ours(name))
		return conf_command(p, &blk, a, end);
	return nginx_conf_skip(p, &nginx_conf_skip_ctx, a, end);
}

/*
 * Walk the nginx.conf at path into p->conf.  The folder of path is
 * nginx's conf prefix: every relative path in every file it includes
 * resolves against it.
 */
int
nginx_conf_read(struct conf_parse *p, const char *path)
{
	struct conf_ctx	 ctx = { nginx_conf_main, NULL };
	struct conf_lex	*lx;
	char		*msg = NULL;
	int		 rc;

	if ((lx = conf_lex_open(path, NULL, &msg)) == NULL) {
		/* At the nginx_config that named it, if one did. */
		if (p->nginx_file != NULL)
			conf_error_at(p, p->nginx_file, p->nginx_line, "%s",
			    msg);
		else if (p->cause == NULL) {
			p->cause = msg;
			msg = NULL;
		}
		free(msg);
		return -1;
	}
	p->prefix = lx->dir != NULL ? lx->dir : "";
	rc = conf_parse_block(p, lx, &ctx, 0);
	p->prefix = NULL;
	conf_lex_free(lx);
	if (rc == 0 && p->conf->c_nginx_user == NULL)
		nginx_conf_default_user(p->conf);
	return rc;
}
