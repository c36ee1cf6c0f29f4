/*
 * conf_int.h: the configuration parser as its own files share it, each
 * calling only those below it: conf_lex.c, conf_parse.c (the grammar),
 * conf_cert.c and conf_cluster.c (their directives' handlers), conf.c
 * (the directive table), nginx_conf.c, and the loader on top, conf_load.c.
 * Private to those files (and tests/unit/test_conf.c, which drives the
 * lexer); the rest of the daemon sees the configuration only through
 * sidecar.h's struct conf and conf_* functions.
 */
#ifndef CONF_INT_H
#define CONF_INT_H

/* conf_lex.c: the tokens of nginx's grammar. */
#define CONF_MAX_TOKEN		4096		/* bytes per word or string */
enum conf_tok {
	CONF_TOK_WORD,		/* in cl->tok */
	CONF_TOK_SEMI,
	CONF_TOK_LBRACE,
	CONF_TOK_RBRACE,
	CONF_TOK_EOF,
	CONF_TOK_ERROR		/* cl->cause says why */
};
struct conf_lex {
	char		*path;
	char		*dir;		/* relative paths resolve here */
	char		*buf;
	size_t		 len;
	size_t		 off;
	int		 line;
	int		 lastline;	/* line of the last token read */
	char		 tok[CONF_MAX_TOKEN + 1];
	size_t		 toklen;
	char		*cause;		/* "FILE:LINE: msg" once it failed */
};
struct conf_lex	*conf_lex_open(const char *, const char *, char **);
void		 conf_lex_free(struct conf_lex *);
enum conf_tok	 conf_lex_next(struct conf_lex *, int *);
char		*conf_path_resolve(const struct conf_lex *, const char *);

/*
 * conf_parse.c: nginx's grammar as the other configuration files use it.
 * conf_parse_block() reads the statements of one file or block and hands
 * each to its context's cx_stmt(); the first error sticks in cause.
 */
#define CONF_MAX_ARGS		1024		/* words per directive */
struct conf_args {			/* the words of one directive */
	char		**v;
	int		  n;
	int		  cap;
	int		  line;		/* of the first word */
	int		  endline;	/* of the terminator */
};
struct conf_parse {
	struct conf	*conf;
	struct conf_lex	*lex;		/* file of the current directive */
	const char	*file;		/* errors point here ... */
	int		 line;		/* ... at this line */
	int		 depth;		/* include nesting */
	int		 nfiles;	/* files read by this load */
	size_t		 nbytes;	/* and their bytes */
	int		 blocks;	/* { } nesting */
	char		*zone_file;	/* where acme_shared_zone was */
	int		 zone_line;
	char		*nginx_file;	/* where nginx_config was */
	int		 nginx_line;
	const char	*prefix;	/* nginx.conf's folder, or NULL */
	struct conf_cert_ids *cert_ids;	/* conf_cert_add()'s, by id */
	char		*cause;
};
struct conf_ctx {
	int		(*cx_stmt)(struct conf_parse *, const struct conf_ctx *,
			    struct conf_args *, enum conf_tok);
	void		*cx_arg;
};
int		 conf_parse_block(struct conf_parse *, struct conf_lex *,
		    const struct conf_ctx *, int inblock);
int		 conf_include(struct conf_parse *, const struct conf_ctx *,
		    struct conf_args *, enum conf_tok);
int		 conf_error(struct conf_parse *, const char *, ...)
		    PRINTFLIKE(2, 3);
int		 conf_error_at(struct conf_parse *, const char *, int,
		    const char *, ...) PRINTFLIKE(4, 5);

/*
 * conf.c: the directive table, its contexts (struct conf_block, what its
 * handlers get) and the sidecar's file.
 */
#define CONF_TOP	0x01		/* contexts: the sidecar's file */
#define CONF_ISSUER	0x02		/* acme_issuer { } */
#define CONF_HTTP	0x04		/* nginx.conf: http { } */
#define CONF_SERVER	0x08		/* nginx.conf: server { } */
#define CONF_NGX_MAIN	0x10		/* nginx.conf: main context */
struct conf_block {			/* a context of the directive table */
	int			 where;		/* CONF_TOP, ... */
	unsigned int		 seen;		/* single-valued directives */
	struct conf_issuer	*ci;		/* CONF_ISSUER */
	char			*sp_file;	/* where state_path was set */
	int			 sp_line;
};
int		 conf_command(struct conf_parse *, struct conf_block *,
		    struct conf_args *, enum conf_tok);
/* [ADDR:]PORT to connect to (readiness check); bad: "host" or "port". */
int		 conf_connect_addr(const char *, char **addr, int *port,
		    const char **bad);
struct conf	*conf_new(const char *);	/* defaults, for conf_load.c */
int		 conf_read_top(struct conf_parse *, const char *);

/* conf_cert.c: acme_certificate as the directive table reads it. */
struct conf_cert *conf_cert_new(struct conf_parse *, const char *);
int		 conf_cert_param(struct conf_parse *, struct conf_cert *,
		    const char *, int *);	/* IDENT, key=, profile=, ... */
int		 conf_challenge_parse(const char *, enum challenge_type *,
		    char **);
enum challenge_type conf_cert_challenge(const struct conf_cert *,
		    const struct conf_issuer *);
void		 conf_cert_resolve(struct conf_cert *,
		    const struct conf_issuer *);
#define CONF_PROFILE_MAX	64
int		 conf_profile_valid(const char *);
int		 conf_cert_ident(struct conf_parse *, struct conf_cert *,
		    const char *);
int		 conf_cert_add(struct conf_parse *, struct conf_cert *);
void		 conf_cert_ids_free(struct conf_parse *);
int		 conf_cmd_cert(struct conf_parse *, struct conf_block *, int,
		    char **);
/* STATE_PATH/CONF_RUNTIME_FILE of every issuer, into p->conf. */
int		 conf_read_runtime(struct conf_parse *);

/* conf_cluster.c: the "cluster" directive. */
int		 conf_cmd_cluster(struct conf_parse *, struct conf_block *, int,
		    char **);

/* nginx_conf.c: the acme_* directives of an nginx.conf. */
int		 nginx_conf_read(struct conf_parse *, const char *);

#endif /* CONF_INT_H */
