/*
 * Configuration: the sidecar's directives, read with conf_parse.c's
 * grammar: the directive table and its handlers (but acme_certificate's,
 * in conf_cert.c, and cluster's, in conf_cluster.c), and the sidecar's
 * own file.  Also the struct conf they fill: its defaults, and the
 * making, copying and freeing of it and of its issuers.
 *
 * Relative paths (include patterns and every path-valued directive)
 * resolve against the directory of the file that holds the directive; in
 * an nginx.conf, against the directory of its main file (nginx_conf.c).
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sidecar.h"
#include "conf_int.h"

/* Hard limits on input: a config is small and written by a person. */
#define CONF_MAX_RATE		1000000		/* request_rate, r/s or r/m */
#define CONF_MAX_BURST		1000000		/* request_rate burst= */

#define CONF_DEFAULT_STATE_DIR	"/var/lib/acme-sidecar"
#define CONF_VOLATILE_TEMPLATE	"acme-sidecar.XXXXXX"
#define CONF_VOLATILE_FDS	16	/* descriptors nftw() may hold */

/*
 * "state_path off" (nginx-acme's: nothing outlives the process).  store.c
 * knows one kind of state_path, a folder, so "off" is a folder that lives
 * only as long as the process: one private folder (0700), made with
 * mkdtemp(3) the first time an issuer asks for it, under
 * $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=, which systemd removes
 * when the service stops, however it stops), else $TMPDIR, else /tmp.
 * Each such issuer has NAME below it.  Reloads keep it; exit() removes it.
 * A kill -9 cannot, and leaves it: its keys are 0600 in a 0700 folder,
 * and the next start makes a new one.
 */
static char	*conf_volatile_root;
static pid_t	 conf_volatile_pid;
#define CONF_DEFAULT_CONTROL	"/run/acme-sidecar/control.sock"
#define CONF_DEFAULT_ADDR	"0.0.0.0"
#define CONF_DEFAULT_PORT	80
#define CONF_DEFAULT_ZONE_NAME	"ngx_acme_shared"
#define CONF_DEFAULT_ZONE_SIZE	(256 * 1024)
#define CONF_ZONE_DIR		"/dev/shm/"
#define CONF_MIN_ZONE_SIZE	(32 * 1024)		/* nginx: 8 pages */
#define CONF_MAX_ZONE_SIZE	(1024 * 1024 * 1024)

/* Table flags beside the contexts (CONF_TOP, ...) a directive is for. */
#define CONF_BLOCK	0x100		/* takes a { } block */
#define CONF_ONCE	0x200		/* may appear once per context */

struct conf_cmd {
	const char	*name;
	int		 flags;
	int		 minargs;
	int		 maxargs;
	int		(*fn)(struct conf_parse *, struct conf_block *, int,
			    char **);
};

static int	conf_directive(struct conf_parse *, const struct conf_ctx *,
		    struct conf_args *, enum conf_tok);

static int	conf_cmd_issuer(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_zone(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_listen(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_check(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_alpn_listen(struct conf_parse *, struct conf_block *,
		    int, char **);
static int	conf_cmd_control(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_user(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_nginx(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_uri(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_contact(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_state(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_tos(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_trusted(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_verify(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_account(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_eab(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_chain(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_profile(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_challenge(struct conf_parse *, struct conf_block *,
		    int, char **);
static int	conf_cmd_dns_update(struct conf_parse *, struct conf_block *,
		    int, char **);
static int	conf_cmd_dns_hook(struct conf_parse *, struct conf_block *,
		    int, char **);
static int	conf_cmd_dns_check(struct conf_parse *, struct conf_block *,
		    int, char **);
static int	conf_cmd_rate(struct conf_parse *, struct conf_block *, int,
		    char **);
static int	conf_cmd_request_timeout(struct conf_parse *,
		    struct conf_block *, int, char **);
static int	conf_cmd_cn_in_csr(struct conf_parse *, struct conf_block *,
		    int, char **);
static int	conf_cmd_new_order_exclusive(struct conf_parse *,
		    struct conf_block *, int, char **);
static int	conf_cmd_max_idents(struct conf_parse *, struct conf_block *,
		    int, char **);

/* The index of a CONF_ONCE row is its bit in the "seen" masks. */
static const struct conf_cmd conf_cmds[] = {
	{ "acme_issuer", CONF_TOP|CONF_HTTP|CONF_BLOCK, 1, 1, conf_cmd_issuer },
	{ "acme_shared_zone", CONF_TOP|CONF_HTTP, 1, 4, conf_cmd_zone },
	{ "acme_certificate", CONF_TOP, 1, CONF_MAX_ARGS, conf_cmd_cert },
	{ "challenge_listen", CONF_TOP|CONF_ONCE, 1, 1, conf_cmd_listen },
	{ "challenge_check", CONF_TOP|CONF_ONCE, 1, 2, conf_cmd_check },
	{ "tls_alpn_listen", CONF_TOP|CONF_ONCE, 1, 1, conf_cmd_alpn_listen },
	{ "control_socket", CONF_TOP|CONF_ONCE, 1, 2, conf_cmd_control },
	{ "user", CONF_TOP|CONF_ONCE, 1, 2, conf_cmd_user },
	{ "nginx_config", CONF_TOP|CONF_ONCE, 1, 1, conf_cmd_nginx },
	{ "cluster", CONF_TOP|CONF_ONCE, 1, 5, conf_cmd_cluster },

	{ "uri", CONF_ISSUER|CONF_ONCE, 1, 1, conf_cmd_uri },
	{ "contact", CONF_ISSUER, 1, 1, conf_cmd_contact },
	{ "state_path", CONF_ISSUER|CONF_ONCE, 1, 1, conf_cmd_state },
	{ "accept_terms_of_service", CONF_ISSUER|CONF_ONCE, 0, 0,
	    conf_cmd_tos },
	{ "ssl_trusted_certificate", CONF_ISSUER|CONF_ONCE, 1, 1,
	    conf_cmd_trusted },
	{ "ssl_verify", CONF_ISSUER|CONF_ONCE, 1, 1, conf_cmd_verify },
	{ "account_key", CONF_ISSUER|CONF_ONCE, 1, 1, conf_cmd_account },
	{ "external_account_key", CONF_ISSUER|CONF_ONCE, 2, 2, conf_cmd_eab },
	{ "preferred_chain", CONF_ISSUER|CONF_ONCE, 1, 1, conf_cmd_chain },
	{ "profile", CONF_ISSUER|CONF_ONCE, 1, 2, conf_cmd_profile },
	{ "challenge", CONF_ISSUER|CONF_ONCE, 1, 1, conf_cmd_challenge },
	{ "dns_hook", CONF_ISSUER|CONF_ONCE, 1, 2, conf_cmd_dns_hook },
	{ "dns_update", CONF_ISSUER|CONF_ONCE, 1, 3, conf_cmd_dns_update },
	{ "dns_check", CONF_ISSUER|CONF_ONCE, 1, CONF_DNS_CHECK_MAX,
	    conf_cmd_dns_check },
	{ "request_rate", CONF_ISSUER|CONF_ONCE, 1, 2, conf_cmd_rate },
	{ "request_timeout", CONF_ISSUER|CONF_ONCE, 1, 1,
	    conf_cmd_request_timeout },
	{ "max_identifiers", CONF_ISSUER|CONF_ONCE, 1, 1,
	    conf_cmd_max_idents },
	{ "common_name_in_csr", CONF_ISSUER|CONF_ONCE, 1, 1,
	    conf_cmd_cn_in_csr },
	{ "new_order_exclusive", CONF_ISSUER|CONF_ONCE, 1, 1,
	    conf_cmd_new_order_exclusive },
};
#define CONF_NCMDS (sizeof(conf_cmds) / sizeof(conf_cmds[0]))

void
conf_issuer_free(struct conf_issuer *ci)
{
	size_t	 i;

	for (i = 0; i < ci->ci_ncontact; i++)
		free(ci->ci_contact[i]);
	free(ci->ci_contact);
	free(ci->ci_name);
	free(ci->ci_uri);
	free(ci->ci_state_path);
	free(ci->ci_trusted_cert);
	free(ci->ci_account_key_file);
	free(ci->ci_eab_kid);
	if (ci->ci_eab_hmac != NULL) {
		explicit_bzero(ci->ci_eab_hmac, ci->ci_eab_hmac_len);
		free(ci->ci_eab_hmac);
	}
	free(ci->ci_preferred_chain);
	free(ci->ci_profile);
	free(ci->ci_dns_hook);
	free(ci->ci_dns_update);
	free(ci->ci_dns_check);
	free(ci->ci_file);
	free(ci->ci_state_file);
	free(ci);
}

static char *
conf_strdup_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/*
 * A deep copy of one issuer, so that a running issuer outlives the
 * configuration it came from across reloads.  Free with conf_issuer_free.
 */
struct conf_issuer *
conf_issuer_dup(const struct conf_issuer *src)
{
	struct conf_issuer	*ci;
	size_t			 i;

	ci = xcalloc(1, sizeof(*ci));
	*ci = *src;
	ci->ci_contact = NULL;
	if (src->ci_ncontact > 0) {
		ci->ci_contact = xreallocarray(NULL, src->ci_ncontact,
		    sizeof(char *));
		for (i = 0; i < src->ci_ncontact; i++)
			ci->ci_contact[i] = xstrdup(src->ci_contact[i]);
	}
	ci->ci_name = conf_strdup_null(src->ci_name);
	ci->ci_uri = conf_strdup_null(src->ci_uri);
	ci->ci_state_path = conf_strdup_null(src->ci_state_path);
	ci->ci_trusted_cert = conf_strdup_null(src->ci_trusted_cert);
	ci->ci_account_key_file = conf_strdup_null(src->ci_account_key_file);
	ci->ci_eab_kid = conf_strdup_null(src->ci_eab_kid);
	ci->ci_preferred_chain = conf_strdup_null(src->ci_preferred_chain);
	ci->ci_profile = conf_strdup_null(src->ci_profile);
	ci->ci_dns_hook = conf_strdup_null(src->ci_dns_hook);
	ci->ci_dns_update = conf_strdup_null(src->ci_dns_update);
	ci->ci_dns_check = conf_strdup_null(src->ci_dns_check);
	ci->ci_file = conf_strdup_null(src->ci_file);
	ci->ci_state_file = conf_strdup_null(src->ci_state_file);
	ci->ci_eab_hmac = NULL;
	if (src->ci_eab_hmac != NULL) {
		ci->ci_eab_hmac = xmalloc(src->ci_eab_hmac_len);
		memcpy(ci->ci_eab_hmac, src->ci_eab_hmac, src->ci_eab_hmac_len);
	}
	memset(&ci->ci_entry, 0, sizeof(ci->ci_entry));
	return ci;
}

void
conf_free(struct conf *conf)
{
	struct conf_issuer	*ci;
	struct conf_cert	*cc;

	if (conf == NULL)
		return;
	while ((ci = TAILQ_FIRST(&conf->c_issuers)) != NULL) {
		TAILQ_REMOVE(&conf->c_issuers, ci, ci_entry);
		conf_issuer_free(ci);
	}
	while ((cc = TAILQ_FIRST(&conf->c_certs)) != NULL) {
		TAILQ_REMOVE(&conf->c_certs, cc, cc_entry);
		conf_cert_free(cc);
	}
	free(conf->c_challenge_addr);
	free(conf->c_alpn_addr);
	free(conf->c_check_addr);
	free(conf->c_check_from);
	free(conf->c_tls_check_addr);
	free(conf->c_tls_check_from);
	free(conf->c_control_socket);
	free(conf->c_control_group);
	free(conf->c_user);
	free(conf->c_group);
	free(conf->c_nginx_config);
	free(conf->c_nginx_group);
	free(conf->c_nginx_user);
	free(conf->c_zone_name);
	free(conf->c_zone_path);
	free(conf->c_zone_owner);
	free(conf->c_zone_group);
	conf_cluster_free(conf->c_cluster);
	free(conf->c_file);
	free(conf);
}

/* A configuration of defaults, before any directive. */
struct conf *
conf_new(const char *path)
{
	struct conf	*conf;

	conf = xcalloc(1, sizeof(*conf));
	TAILQ_INIT(&conf->c_issuers);
	TAILQ_INIT(&conf->c_certs);
	conf->c_challenge_addr = xstrdup(CONF_DEFAULT_ADDR);
	conf->c_challenge_port = CONF_DEFAULT_PORT;
	conf->c_check_limit = READY_LIMIT;
	conf->c_control_socket = xstrdup(CONF_DEFAULT_CONTROL);
	conf->c_zone_name = xstrdup(CONF_DEFAULT_ZONE_NAME);
	conf->c_zone_size = CONF_DEFAULT_ZONE_SIZE;
	conf->c_zone_path = xstrdup(CONF_ZONE_DIR CONF_DEFAULT_ZONE_NAME);
	conf->c_file = path != NULL ? xstrdup(path) : NULL;
	return conf;
}

static const struct conf_cmd *
conf_cmd_find(const char *name, unsigned int *bit)
{
	size_t	 i;

	for (i = 0; i < CONF_NCMDS; i++) {
		if (strcmp(conf_cmds[i].name, name) == 0) {
			*bit = 1u << i;
			return &conf_cmds[i];
		}
	}
	return NULL;
}

/* One directive of the table, in the context blk stands for. */
int
conf_command(struct conf_parse *p, struct conf_block *blk,
    struct conf_args *a, enum conf_tok end)
{
	const struct conf_cmd	*cmd;
	const char		*name = a->v[0];
	unsigned int		 bit = 0;
	int			 argc = a->n - 1;

	if ((cmd = conf_cmd_find(name, &bit)) == NULL)
		return conf_error(p, "unknown directive \"%s\"", name);
	if (!(cmd->flags & blk->where))
		return conf_error(p, "\"%s\" directive is not allowed here",
		    name);
	if ((cmd->flags & CONF_BLOCK) && end != CONF_TOK_LBRACE)
		return conf_error(p, "directive \"%s\" has no opening \"{\"",
		    name);
	if (!(cmd->flags & CONF_BLOCK) && end != CONF_TOK_SEMI)
		return conf_error(p, "directive \"%s\" is not terminated by "
		    "\";\"", name);
	if (argc < cmd->minargs || argc > cmd->maxargs)
		return conf_error(p, "invalid number of arguments in \"%s\" "
		    "directive", name);
	if (cmd->flags & CONF_ONCE) {
		if (blk->seen & bit)
			return conf_error(p, "\"%s\" directive is duplicate",
			    name);
		blk->seen |= bit;
	}
	return cmd->fn(p, blk, argc, a->v + 1);
}

/* The statements of the sidecar's own file and of its issuer blocks. */
static int
conf_directive(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	if (strcmp(a->v[0], "include") == 0)
		return conf_include(p, ctx, a, end);
	return conf_command(p, ctx->cx_arg, a, end);
}

/* Names that become file names: issuer (state_path) and zone (/dev/shm). */
static int
conf_name_valid(const char *s)
{
	const char	*c;

	if (*s == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	for (c = s; *c != '\0'; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
		    *c == '.'))
			return 0;
	}
	return 1;
}

static int
conf_volatile_rm(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	if (remove(path) == -1 && errno != ENOENT)
		log_warn("state_path off: %s", path);
	return 0;
}

/* At exit, by the process that made it only. */
static void
conf_volatile_remove(void)
{
	if (conf_volatile_root == NULL || getpid() != conf_volatile_pid)
		return;
	nftw(conf_volatile_root, conf_volatile_rm, CONF_VOLATILE_FDS,
	    FTW_DEPTH | FTW_PHYS);
}

const char *
conf_volatile_dir(void)
{
	return conf_volatile_root;
}

/* The folder of state_path off, made at the first call. */
static const char *
conf_volatile_make(char **cause)
{
	const char	*base;
	char		*path;
	size_t		 len;

	if (conf_volatile_root != NULL)
		return conf_volatile_root;
	if ((base = getenv("RUNTIME_DIRECTORY")) != NULL && *base == '/')
		len = strcspn(base, ":");	/* the first of a list */
	else {
		if ((base = getenv("TMPDIR")) == NULL || *base != '/')
			base = "/tmp";
		len = strlen(base);
	}
	xasprintf(&path, "%.*s/%s", (int)len, base, CONF_VOLATILE_TEMPLATE);
	if (mkdtemp(path) == NULL) {
		xasprintf(cause, "state_path off: mkdtemp %s: %s", path,
		    strerror(errno));
		free(path);
		return NULL;
	}
	conf_volatile_root = path;
	conf_volatile_pid = getpid();
	atexit(conf_volatile_remove);
	return path;
}

static int
conf_issuer_finish(struct conf_parse *p, struct conf_block *blk)
{
	const char		*root;
	char			*why = NULL;
	struct conf_issuer	*ci = blk->ci, *other;

	if (ci->ci_uri == NULL)
		return conf_error_at(p, ci->ci_file, ci->ci_line,
		    "no \"uri\" is defined for acme_issuer \"%s\"",
		    ci->ci_name);
	if (ci->ci_challenge == CHALLENGE_DNS_01 && ci->ci_dns_hook == NULL &&
	    ci->ci_dns_update == NULL)
		return conf_error_at(p, ci->ci_file, ci->ci_line,
		    "acme_issuer \"%s\" has challenge dns-01 but no way to "
		    "publish the TXT record: add \"dns_update\" or "
		    "\"dns_hook\"", ci->ci_name);
	if (ci->ci_state_off) {
		if ((root = conf_volatile_make(&why)) == NULL) {
			conf_error_at(p, blk->sp_file, blk->sp_line, "%s", why);
			free(why);
			return -1;
		}
		xasprintf(&ci->ci_state_path, "%s/%s", root, ci->ci_name);
	}
	if (ci->ci_state_path == NULL) {
		xasprintf(&ci->ci_state_path, "%s/%s",
		    CONF_DEFAULT_STATE_DIR, ci->ci_name);
	}
	/* Two accounts in one folder would overwrite each other's keys. */
	TAILQ_FOREACH(other, &p->conf->c_issuers, ci_entry) {
		if (other == ci ||
		    strcmp(other->ci_state_path, ci->ci_state_path) != 0)
			continue;
		return conf_error_at(p,
		    blk->sp_file != NULL ? blk->sp_file : ci->ci_file,
		    blk->sp_file != NULL ? blk->sp_line : ci->ci_line,
		    "state_path \"%s\" is already used by acme_issuer \"%s\"",
		    ci->ci_state_path, other->ci_name);
	}
	return 0;
}

static int
conf_cmd_issuer(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci, *first;
	struct conf_block	 nb;
	struct conf_ctx		 ctx = { conf_directive, &nb };
	int			 rc = -1;

	(void)blk;
	(void)argc;
	memset(&nb, 0, sizeof(nb));
	nb.where = CONF_ISSUER;
	if (!conf_name_valid(argv[0]))
		return conf_error(p, "invalid issuer name \"%s\"", argv[0]);
	if ((first = conf_find_issuer(p->conf, argv[0])) != NULL)
		return conf_error(p, "duplicate acme_issuer \"%s\", first "
		    "defined at %s:%d", argv[0], first->ci_file,
		    first->ci_line);

	ci = xcalloc(1, sizeof(*ci));
	ci->ci_name = xstrdup(argv[0]);
	ci->ci_file = xstrdup(p->file);
	ci->ci_line = p->line;
	ci->ci_ssl_verify = 1;
	ci->ci_account_key_type = KEY_TYPE_DEFAULT;
	ci->ci_challenge = CHALLENGE_HTTP_01;
	ci->ci_rate = CONF_RATE_DEFAULT;
	ci->ci_burst = CONF_BURST_DEFAULT;
	ci->ci_max_idents = CONF_IDENTS_DEFAULT;
	ci->ci_request_timeout = ACME_TIMEOUT;
	/* In the list at once, so conf_free() owns it on any error. */
	TAILQ_INSERT_TAIL(&p->conf->c_issuers, ci, ci_entry);

	nb.ci = ci;
	if (conf_parse_block(p, p->lex, &ctx, 1) == -1)
		goto out;
	rc = conf_issuer_finish(p, &nb);
out:
	free(nb.sp_file);
	return rc;
}

static int
conf_cmd_uri(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	const char	*u = argv[0];

	(void)argc;
	if (!((strncasecmp(u, "https://", 8) == 0 && u[8] != '\0') ||
	    (strncasecmp(u, "http://", 7) == 0 && u[7] != '\0')))
		return conf_error(p, "invalid uri \"%s\", it must start with "
		    "\"https://\" or \"http://\"", u);
	blk->ci->ci_uri = xstrdup(u);
	return 0;
}

/* RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" */
static int
conf_has_scheme(const char *s)
{
	const char	*c;

	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
		return 0;
	for (c = s + 1; *c != '\0' && *c != ':'; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || *c == '+' || *c == '-' ||
		    *c == '.'))
			return 0;
	}
	return *c == ':';
}

static int
conf_cmd_contact(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;
	char			*s;

	(void)argc;
	if (argv[0][0] == '\0')
		return conf_error(p, "invalid contact \"\"");
	if (conf_has_scheme(argv[0]))
		s = xstrdup(argv[0]);
	else
		xasprintf(&s, "mailto:%s", argv[0]);
	ci->ci_contact = xreallocarray(ci->ci_contact, ci->ci_ncontact + 1,
	    sizeof(*ci->ci_contact));
	ci->ci_contact[ci->ci_ncontact++] = s;
	return 0;
}

static int
conf_cmd_state(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)argc;
	if (argv[0][0] == '\0')
		return conf_error(p, "invalid state_path \"\"");
	/* Its folder is made once the block is read (conf_issuer_finish()). */
	if (strcmp(argv[0], "off") == 0)
		blk->ci->ci_state_off = 1;
	else
		blk->ci->ci_state_path = conf_path_resolve(p->lex, argv[0]);
	blk->sp_file = xstrdup(p->file);
	blk->sp_line = p->line;
	blk->ci->ci_state_file = xstrdup(p->file);
	blk->ci->ci_state_line = p->line;
	return 0;
}

static int
conf_cmd_tos(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)p;
	(void)argc;
	(void)argv;
	blk->ci->ci_accept_tos = 1;
	return 0;
}

/*
 * A file read later, on the loop: a FIFO there would stop it for good.
 * One that does not exist yet may be put there before it is needed.
 */
static int
conf_check_regular(struct conf_parse *p, const char *path)
{
	struct stat	 st;

	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		return conf_error(p, "\"%s\" is not a regular file (%s)",
		    path, fsafe_type(st.st_mode));
	return 0;
}

static int
conf_cmd_trusted(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)argc;
	blk->ci->ci_trusted_cert = conf_path_resolve(p->lex, argv[0]);
	return conf_check_regular(p, blk->ci->ci_trusted_cert);
}

/* on or off, in any case, as nginx's flag directives take it. */
static int
conf_on_off(struct conf_parse *p, const char *directive, const char *arg,
    int *flag)
{
	if (strcasecmp(arg, "on") == 0)
		*flag = 1;
	else if (strcasecmp(arg, "off") == 0)
		*flag = 0;
	else
		return conf_error(p, "invalid value \"%s\" in \"%s\" "
		    "directive, it must be \"on\" or \"off\"", arg, directive);
	return 0;
}

static int
conf_cmd_verify(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)argc;
	return conf_on_off(p, "ssl_verify", argv[0], &blk->ci->ci_ssl_verify);
}

/*
 * common_name_in_csr on|off (nginx-acme 0.4): whether the CSR's subject
 * carries the first identifier as its CN.  Off by default.
 */
static int
conf_cmd_cn_in_csr(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)argc;
	return conf_on_off(p, "common_name_in_csr", argv[0],
	    &blk->ci->ci_cn_in_csr);
}

/*
 * new_order_exclusive on|off: never overlap a newOrder with a request to
 * an authorization or a challenge (acme_next_queue()).  Off by default:
 * only a CA with Pebble 2.4.0's lock-order bug needs it.
 */
static int
conf_cmd_new_order_exclusive(struct conf_parse *p, struct conf_block *blk,
    int argc, char **argv)
{
	(void)argc;
	return conf_on_off(p, "new_order_exclusive", argv[0],
	    &blk->ci->ci_new_order_exclusive);
}

/* A key type, or else the name of a PEM file holding the account key. */
static int
conf_cmd_account(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;

	(void)argc;
	if (key_type_parse(argv[0], &ci->ci_account_key_type) == 0)
		return 0;
	/* A misspelt type is likelier than a file called "rsa:1024". */
	if (strncmp(argv[0], "ecdsa:", 6) == 0 ||
	    strncmp(argv[0], "rsa:", 4) == 0 || argv[0][0] == '\0')
		return conf_error(p, "invalid key type \"%s\"", argv[0]);
	ci->ci_account_key_file = conf_path_resolve(p->lex, argv[0]);
	return conf_check_regular(p, ci->ci_account_key_file);
}

/*
 * Decode an HMAC key: base64url, or standard base64 with or without
 * padding, which is what CAs' web pages often show.
 */
static int
conf_eab_decode(const char *text, unsigned char **out, size_t *outlen)
{
	char	*s, *c;
	size_t	 len;
	int	 rc;

	s = xstrdup(text);
	len = strlen(s);
	while (len > 0 && s[len - 1] == '=')
		s[--len] = '\0';
	for (c = s; *c != '\0'; c++) {
		if (*c == '+')
			*c = '-';
		else if (*c == '/')
			*c = '_';
	}
	rc = b64url_decode(s, out, outlen);
	explicit_bzero(s, len);
	free(s);
	if (rc == 0 && *outlen == 0) {
		free(*out);
		*out = NULL;
		rc = -1;
	}
	return rc;
}

static int
conf_cmd_eab(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;
	char			*path = NULL, *buf = NULL, *msg = NULL;
	char			*text;
	size_t			 len = 0;
	int			 rc = -1;

	(void)argc;
	if (argv[0][0] == '\0') {
		conf_error(p, "invalid external account key id \"\"");
		goto out;
	}
	if (strncmp(argv[1], "data:", 5) == 0) {
		buf = xstrdup(argv[1] + 5);
		len = strlen(buf);
	} else {
		path = conf_path_resolve(p->lex, argv[1]);
		if (conf_read_file(path, &buf, &len, &msg) == -1) {
			conf_error(p, "%s", msg);
			goto out;
		}
	}
	/* Key files usually end with a newline. */
	text = buf + strspn(buf, " \t\r\n");
	len = strlen(text);
	while (len > 0 && strchr(" \t\r\n", text[len - 1]) != NULL)
		text[--len] = '\0';
	/* Never print the key itself, only where it came from. */
	if (conf_eab_decode(text, &ci->ci_eab_hmac,
	    &ci->ci_eab_hmac_len) == -1) {
		if (path != NULL)
			conf_error(p, "invalid external account key in \"%s\"",
			    path);
		else
			conf_error(p, "invalid external account key");
		goto out;
	}
	ci->ci_eab_kid = xstrdup(argv[0]);
	rc = 0;
out:
	if (buf != NULL) {
		explicit_bzero(buf, strlen(buf));
		free(buf);
	}
	free(msg);
	free(path);
	return rc;
}

static int
conf_cmd_chain(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)p;
	(void)argc;
	blk->ci->ci_preferred_chain = xstrdup(argv[0]);
	return 0;
}

static int
conf_cmd_profile(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	if (argc == 2 && strcmp(argv[1], "require") != 0)
		return conf_error(p, "invalid parameter \"%s\"", argv[1]);
	if (!conf_profile_valid(argv[0]))
		return conf_error(p, "invalid profile \"%s\"", argv[0]);
	blk->ci->ci_profile = xstrdup(argv[0]);
	blk->ci->ci_profile_require = argc == 2;
	return 0;
}

static int
conf_cmd_challenge(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	char	*why = NULL;
	int	 rc;

	(void)argc;
	if (conf_challenge_parse(argv[0], &blk->ci->ci_challenge, &why) == 0)
		return 0;
	rc = conf_error(p, "%s", why);
	free(why);
	return rc;
}

/* "30", "30s" or "2m": whole seconds, from 1 to max. */
static int
conf_seconds(const char *s, long long max, int *out)
{
	char		*num;
	size_t		 len = strlen(s);
	long long	 v, scale = 1;
	int		 rc;

	if (len > 1 && s[len - 1] == 's')
		len--;
	else if (len > 1 && s[len - 1] == 'm') {
		scale = 60;
		len--;
	}
	num = xstrndup(s, len);
	rc = conf_number(num, 1, max, &v);
	free(num);
	if (rc == -1 || v > max / scale)
		return -1;
	*out = (int)(v * scale);
	return 0;
}

/*
 * dns_hook PROGRAM [timeout=TIME]: dns_hook.c runs it as "PROGRAM add|del
 * FQDN VALUE".  An absolute path: the daemon has no PATH to trust, and a
 * relative one would depend on where it was started.
 */
static int
conf_cmd_dns_hook(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;

	if (ci->ci_dns_update != NULL)
		return conf_error(p, "\"dns_hook\" and \"dns_update\" in "
		    "one issuer: it publishes through one of them");
	if (argv[0][0] != '/')
		return conf_error(p, "dns_hook \"%s\" is not an absolute path",
		    argv[0]);
	ci->ci_dns_hook_timeout = CONF_DNS_HOOK_TIMEOUT;
	if (argc == 2 && (strncmp(argv[1], "timeout=", 8) != 0 ||
	    conf_seconds(argv[1] + 8, CONF_DNS_HOOK_TIMEOUT_MAX,
	    &ci->ci_dns_hook_timeout) == -1))
		return conf_error(p, "invalid parameter \"%s\" of dns_hook: "
		    "timeout=TIME takes 1s to %dm", argv[1],
		    CONF_DNS_HOOK_TIMEOUT_MAX / 60);
	ci->ci_dns_hook = xstrdup(argv[0]);
	return 0;
}

/*
 * dns_update SERVER[:PORT] key=FILE zone=ZONE: dns_update.c sends RFC
 * 2136 updates signed with FILE's TSIG key.  The key is read here too,
 * so that a file that cannot be read or parsed is this line's error.
 */
static int
conf_cmd_dns_update(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;
	char			*why = NULL;

	if (ci->ci_dns_hook != NULL)
		return conf_error(p, "\"dns_hook\" and \"dns_update\" in "
		    "one issuer: it publishes through one of them");
	if (dns_update_conf(argc, argv, &ci->ci_dns_update, &why) == -1) {
		conf_error(p, "%s", why);
		free(why);
		return -1;
	}
	return 0;
}

/*
 * dns_check ADDR[:PORT]... | off: the servers dns-01's propagation check
 * asks (ready.c) instead of the zone's NS set, or no check.  Kept as
 * "off" or the addresses, as dns_check_addr_parse() shows them.
 */
static int
conf_cmd_dns_check(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 shown[64], *list = NULL, *more;
	int			 i;

	if (strcmp(argv[0], "off") == 0) {
		if (argc > 1)
			return conf_error(p, "invalid parameter \"%s\" of "
			    "dns_check: \"off\" stands alone", argv[1]);
		ci->ci_dns_check = xstrdup("off");
		return 0;
	}
	for (i = 0; i < argc; i++) {
		if (dns_check_addr_parse(argv[i], &ss, &sslen, shown,
		    sizeof(shown)) == -1) {
			free(list);
			return conf_error(p, "dns_check \"%s\": not an IP "
			    "address, with an optional :PORT, nor \"off\"",
			    argv[i]);
		}
		xasprintf(&more, "%s%s%s", list != NULL ? list : "",
		    list != NULL ? " " : "", shown);
		free(list);
		list = more;
	}
	ci->ci_dns_check = list;
	return 0;
}

/* "20r/s" or "600r/m", as nginx's limit_req_zone rate=. */
static int
conf_rate(const char *s, double *rate)
{
	char		*num;
	size_t		 len = strlen(s);
	long long	 v;
	int		 rc;

	if (len <= 3)
		return -1;
	num = xstrndup(s, len - 3);
	rc = conf_number(num, 1, CONF_MAX_RATE, &v);
	free(num);
	if (rc == -1)
		return -1;
	if (strcmp(s + len - 3, "r/s") == 0)
		*rate = (double)v;
	else if (strcmp(s + len - 3, "r/m") == 0)
		*rate = (double)v / 60.0;
	else
		return -1;
	return 0;
}

static int
conf_cmd_rate(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_issuer	*ci = blk->ci;
	long long		 burst;

	if (strcmp(argv[0], "off") == 0) {
		if (argc > 1)
			return conf_error(p, "invalid parameter \"%s\"",
			    argv[1]);
		ci->ci_rate = 0;
		return 0;
	}
	if (conf_rate(argv[0], &ci->ci_rate) == -1)
		return conf_error(p, "invalid rate \"%s\"", argv[0]);
	if (argc == 2) {
		if (strncmp(argv[1], "burst=", 6) != 0)
			return conf_error(p, "invalid parameter \"%s\"",
			    argv[1]);
		if (conf_number(argv[1] + 6, 1, CONF_MAX_BURST, &burst) == -1)
			return conf_error(p, "invalid burst value \"%s\"",
			    argv[1]);
		ci->ci_burst = (unsigned int)burst;
	}
	return 0;
}

/*
 * request_timeout TIME: how long a request to this CA may wait on a
 * silent connection (connecting, or for more of the answer) before it
 * counts as a network error and is tried again.  Tests set a short one.
 */
static int
conf_cmd_request_timeout(struct conf_parse *p, struct conf_block *blk,
    int argc, char **argv)
{
	(void)argc;
	if (conf_seconds(argv[0], CONF_REQUEST_TIMEOUT_MAX,
	    &blk->ci->ci_request_timeout) == -1)
		return conf_error(p, "invalid value \"%s\" in "
		    "\"request_timeout\" directive, it must be from 1s to %dm",
		    argv[0], CONF_REQUEST_TIMEOUT_MAX / 60);
	return 0;
}

/* max_identifiers N: for a CA that takes more (or fewer) than 100. */
static int
conf_cmd_max_idents(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	long long	 n;

	(void)argc;
	if (conf_number(argv[0], 1, CONF_MAX_IDENTS, &n) == -1)
		return conf_error(p, "invalid value \"%s\" in "
		    "\"max_identifiers\" directive, it must be from 1 to %d",
		    argv[0], CONF_MAX_IDENTS);
	blk->ci->ci_max_idents = (size_t)n;
	return 0;
}

/* A size with nginx's k/K/m/M suffixes. */
static int
conf_size(const char *s, size_t *size)
{
	char		*num;
	size_t		 len = strlen(s);
	long long	 v, scale = 1;
	int		 rc;

	if (len == 0)
		return -1;
	switch (s[len - 1]) {
	case 'k':
	case 'K':
		scale = 1024;
		len--;
		break;
	case 'm':
	case 'M':
		scale = 1024 * 1024;
		len--;
		break;
	}
	num = xstrndup(s, len);
	rc = conf_number(num, 0, CONF_MAX_ZONE_SIZE, &v);
	free(num);
	if (rc == -1 || v > CONF_MAX_ZONE_SIZE / scale)
		return -1;
	*size = (size_t)(v * scale);
	return 0;
}

/* zone=NAME:SIZE */
static int
conf_zone_arg(struct conf_parse *p, const char *arg, char **namep,
    size_t *sizep)
{
	const char	*colon;
	char		*name;

	if ((colon = strchr(arg + 5, ':')) == NULL ||
	    conf_size(colon + 1, sizep) == -1)
		return conf_error(p, "invalid zone size \"%s\"", arg);
	name = xstrndup(arg + 5, (size_t)(colon - (arg + 5)));
	if (!conf_name_valid(name)) {
		conf_error(p, "invalid zone name \"%s\"", name);
		free(name);
		return -1;
	}
	if (*sizep < CONF_MIN_ZONE_SIZE) {
		conf_error(p, "zone \"%s\" is too small", name);
		free(name);
		return -1;
	}
	*namep = name;
	return 0;
}

/*
 * A group= given as a number (main.c's main_zone_open reads it the same
 * way): its gid, or (gid_t)-1 when it is not all digits or out of range.
 */
gid_t
conf_gid(const char *s)
{
	unsigned long long	 n;
	char			*end;

	if (*s == '\0' || strspn(s, "0123456789") != strlen(s))
		return (gid_t)-1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0 || n >= (gid_t)-1)
		return (gid_t)-1;
	return (gid_t)n;
}

/*
 * path= must be absolute: the sidecar and nginx read it from two files
 * that may not share a folder, and must agree on one segment.
 */
static int
conf_zone_param(struct conf_parse *p, const char *arg, char **name,
    size_t *size, char **path, char **group, char **owner)
{
	/* Whom nginx's readers expect to own the file (root by default). */
	if (strncmp(arg, "owner=", 6) == 0) {
		if (*owner != NULL)
			return conf_error(p, "duplicate \"owner\" parameter");
		/* A uid works too: nginx's container may not know the name. */
		if (arg[6] == '\0' || (strspn(arg + 6, "0123456789") !=
		    strlen(arg + 6) && getpwnam(arg + 6) == NULL))
			return conf_error(p, "unknown user \"%s\"", arg + 6);
		*owner = xstrdup(arg + 6);
		return 0;
	}
	if (strncmp(arg, "zone=", 5) == 0) {
		if (*name != NULL)
			return conf_error(p, "duplicate \"zone\" parameter");
		return conf_zone_arg(p, arg, name, size);
	}
	if (strncmp(arg, "path=", 5) == 0) {
		if (*path != NULL)
			return conf_error(p, "duplicate \"path\" parameter");
		if (arg[5] != '/' || arg[6] == '\0')
			return conf_error(p, "invalid path \"%s\", it must be an "
			    "absolute file name", arg + 5);
		*path = xstrdup(arg + 5);
		return 0;
	}
	if (strncmp(arg, "group=", 6) == 0) {
		if (*group != NULL)
			return conf_error(p, "duplicate \"group\" parameter");
		/* A gid too: a pod's fsGroup may have no name in this image. */
		if (arg[6] == '\0' || (conf_gid(arg + 6) == (gid_t)-1 &&
		    getgrnam(arg + 6) == NULL))
			return conf_error(p, "unknown group \"%s\"", arg + 6);
		*group = xstrdup(arg + 6);
		return 0;
	}
	return conf_error(p, "invalid parameter \"%s\"", arg);
}

/*
 * acme_shared_zone zone=NAME:SIZE [path=FILE] [group=GROUP] [owner=USER],
 * once.
 */
static int
conf_cmd_zone(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf	*conf = p->conf;
	char		*name = NULL, *path = NULL, *group = NULL;
	char		*owner = NULL, *why;
	size_t		 size = 0;
	int		 i, rc = -1;

	(void)blk;
	if (p->zone_file != NULL)
		return conf_error(p, "\"acme_shared_zone\" directive is "
		    "duplicate, first defined at %s:%d", p->zone_file,
		    p->zone_line);
	for (i = 0; i < argc; i++) {
		if (conf_zone_param(p, argv[i], &name, &size, &path,
		    &group, &owner) == -1)
			goto out;
	}
	if (name == NULL) {
		conf_error(p, "\"acme_shared_zone\" must have \"zone\" "
		    "parameter");
		goto out;
	}
	if (path == NULL)
		xasprintf(&path, "%s%s", CONF_ZONE_DIR, name);
	/* Never a file that is not a zone of ours: start would refuse it. */
	if ((why = shm_zone_check(path)) != NULL) {
		conf_error(p, "%s", why);
		free(why);
		goto out;
	}
	free(conf->c_zone_name);
	free(conf->c_zone_path);
	free(conf->c_zone_group);
	conf->c_zone_name = name;
	conf->c_zone_size = size;
	conf->c_zone_path = path;
	conf->c_zone_group = group;
	free(conf->c_zone_owner);
	conf->c_zone_owner = owner;
	name = path = group = owner = NULL;
	p->zone_file = xstrdup(p->file);
	p->zone_line = p->line;
	rc = 0;
out:
	free(name);
	free(path);
	free(group);
	free(owner);
	return rc;
}

/*
 * [ADDR:]PORT, ADDR, "*:PORT" or "[IPV6]:PORT" of directive name; port 0
 * binds any port, no port is defport.
 */
static int
conf_listen_parse(struct conf_parse *p, const char *name, const char *arg,
    int defport, char **addr, int *portp)
{
	const char	*port = NULL, *end;
	char		*host = NULL, buf[INET6_ADDRSTRLEN];
	struct in_addr	 a4;
	struct in6_addr	 a6;
	long long	 v = defport;
	int		 rc = -1;

	if (arg[0] == '[') {
		if ((end = strchr(arg, ']')) == NULL)
			goto badhost;
		host = xstrndup(arg + 1, (size_t)(end - arg - 1));
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			goto badhost;
		if (inet_pton(AF_INET6, host, &a6) != 1 ||
		    inet_ntop(AF_INET6, &a6, buf, sizeof(buf)) == NULL)
			goto badhost;
	} else {
		if ((end = strrchr(arg, ':')) != NULL) {
			host = xstrndup(arg, (size_t)(end - arg));
			port = end + 1;
		} else if (strspn(arg, "0123456789") == strlen(arg))
			port = arg;
		else
			host = xstrdup(arg);
		if (host == NULL || strcmp(host, "*") == 0)
			snprintf(buf, sizeof(buf), "%s", CONF_DEFAULT_ADDR);
		else if (inet_pton(AF_INET, host, &a4) != 1 ||
		    inet_ntop(AF_INET, &a4, buf, sizeof(buf)) == NULL)
			goto badhost;
	}
	if (port != NULL && conf_number(port, 0, 65535, &v) == -1) {
		conf_error(p, "invalid port in \"%s\" of the \"%s\" "
		    "directive", arg, name);
		goto out;
	}
	free(*addr);
	*addr = xstrdup(buf);
	*portp = (int)v;
	rc = 0;
	goto out;
badhost:
	conf_error(p, "invalid host in \"%s\" of the \"%s\" directive",
	    arg, name);
out:
	free(host);
	return rc;
}

static int
conf_cmd_listen(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)blk;
	(void)argc;
	/* nginx answers HTTP-01 from the zone: no listener of ours. */
	if (strcmp(argv[0], "off") == 0) {
		p->conf->c_challenge_off = 1;
		return 0;
	}
	return conf_listen_parse(p, "challenge_listen", argv[0],
	    CONF_DEFAULT_PORT, &p->conf->c_challenge_addr,
	    &p->conf->c_challenge_port);
}

/*
 * tls_alpn_listen [ADDR:]PORT | off: the tls-alpn-01 responder (alpn.c),
 * off by default since port 443 is most often nginx's.
 */
static int
conf_cmd_alpn_listen(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)blk;
	(void)argc;
	free(p->conf->c_alpn_addr);
	p->conf->c_alpn_addr = NULL;
	if (strcmp(argv[0], "off") == 0)
		return 0;
	return conf_listen_parse(p, "tls_alpn_listen", argv[0], 443,
	    &p->conf->c_alpn_addr, &p->conf->c_alpn_port);
}

/*
 * An address to connect to, for the readiness check: [ADDR:]PORT, ADDR,
 * "*:PORT" or "[IPV6]:PORT", as nginx's listen writes them.  ADDR is an
 * IP address or "localhost"; a wildcard ("*", 0.0.0.0, [::]) or none is
 * the loopback address of its family.  PORT is 1-65535, 80 when absent.
 * Returns 0 with *addr (the caller frees) and *port, or -1 with *bad
 * naming what is wrong ("host" or "port").
 */
int
conf_connect_addr(const char *arg, char **addr, int *port, const char **bad)
{
	const char	*p = NULL, *end;
	char		*host = NULL, buf[INET6_ADDRSTRLEN];
	struct in_addr	 a4;
	struct in6_addr	 a6;
	long long	 v = 80;
	int		 rc = -1;

	*bad = "host";
	if (arg[0] == '[') {
		if ((end = strchr(arg, ']')) == NULL)
			goto out;
		host = xstrndup(arg + 1, (size_t)(end - arg - 1));
		if (end[1] == ':')
			p = end + 2;
		else if (end[1] != '\0')
			goto out;
		if (inet_pton(AF_INET6, host, &a6) != 1)
			goto out;
		if (IN6_IS_ADDR_UNSPECIFIED(&a6))
			a6 = in6addr_loopback;
		inet_ntop(AF_INET6, &a6, buf, sizeof(buf));
	} else {
		if ((end = strrchr(arg, ':')) != NULL) {
			host = xstrndup(arg, (size_t)(end - arg));
			p = end + 1;
		} else if (arg[0] != '\0' &&
		    strspn(arg, "0123456789") == strlen(arg))
			p = arg;
		else
			host = xstrdup(arg);
		if (host == NULL || strcmp(host, "*") == 0 ||
		    strcmp(host, "localhost") == 0)
			snprintf(buf, sizeof(buf), "127.0.0.1");
		else if (inet_pton(AF_INET, host, &a4) != 1)
			goto out;
		else {
			if (a4.s_addr == htonl(INADDR_ANY))
				a4.s_addr = htonl(INADDR_LOOPBACK);
			inet_ntop(AF_INET, &a4, buf, sizeof(buf));
		}
	}
	*bad = "port";
	if (p != NULL && conf_number(p, 1, 65535, &v) == -1)
		goto out;
	*addr = xstrdup(buf);
	*port = (int)v;
	*bad = NULL;
	rc = 0;
out:
	free(host);
	return rc;
}

/* timeout=TIME: how long the check tries, 1 to READY_LIMIT_MAX s. */
static int
conf_check_timeout(struct conf_parse *p, const char *arg)
{
	if (strncmp(arg, "timeout=", 8) != 0)
		return conf_error(p, "invalid parameter \"%s\" of the "
		    "\"challenge_check\" directive", arg);
	if (conf_seconds(arg + 8, READY_LIMIT_MAX, &p->conf->c_check_limit)
	    == -1)
		return conf_error(p, "invalid timeout \"%s\" of the "
		    "\"challenge_check\" directive: 1s to %ds", arg + 8,
		    READY_LIMIT_MAX);
	return 0;
}

/*
 * challenge_check [ADDR:]PORT [timeout=TIME] | timeout=TIME | off: where
 * the readiness check fetches, and for how long it tries.
 */
static int
conf_cmd_check(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf	*conf = p->conf;
	const char	*bad;
	char		*addr = NULL;
	int		 port;

	(void)blk;
	if (strcmp(argv[0], "off") == 0) {
		if (argc > 1)
			return conf_error(p, "invalid parameter \"%s\" of the "
			    "\"challenge_check\" directive", argv[1]);
		conf->c_check_off = 1;
		return 0;
	}
	if (strncmp(argv[argc - 1], "timeout=", 8) == 0 || argc > 1) {
		if (conf_check_timeout(p, argv[argc - 1]) == -1)
			return -1;
		if (argc == 1)
			return 0;
	}
	if (conf_connect_addr(argv[0], &addr, &port, &bad) == -1)
		return conf_error(p, "invalid %s in \"%s\" of the "
		    "\"challenge_check\" directive", bad, argv[0]);
	conf->c_check_set = 1;
	free(conf->c_check_addr);
	conf->c_check_addr = addr;
	conf->c_check_port = port;
	free(conf->c_check_from);
	xasprintf(&conf->c_check_from, "challenge_check at %s:%d", p->file,
	    p->line);
	return 0;
}

static int
conf_cmd_control(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)blk;
	if (argv[0][0] == '\0')
		return conf_error(p, "invalid control_socket \"\"");
	/* group=: who may read through the socket (control.c). */
	if (argc == 2) {
		if (strncmp(argv[1], "group=", 6) != 0)
			return conf_error(p, "invalid parameter \"%s\"",
			    argv[1]);
		if (argv[1][6] == '\0' || getgrnam(argv[1] + 6) == NULL)
			return conf_error(p, "unknown group \"%s\"",
			    argv[1] + 6);
		free(p->conf->c_control_group);
		p->conf->c_control_group = xstrdup(argv[1] + 6);
	}
	free(p->conf->c_control_socket);
	p->conf->c_control_socket = conf_path_resolve(p->lex, argv[0]);
	return 0;
}

static int
conf_cmd_user(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)blk;
	if (argv[0][0] == '\0' || (argc == 2 && argv[1][0] == '\0'))
		return conf_error(p, "invalid number of arguments in \"user\" "
		    "directive");
	/* As nginx -t does: a user that does not exist here is an error. */
	if (getpwnam(argv[0]) == NULL)
		return conf_error(p, "unknown user \"%s\" in \"user\" "
		    "directive", argv[0]);
	if (argc == 2 && getgrnam(argv[1]) == NULL)
		return conf_error(p, "unknown group \"%s\" in \"user\" "
		    "directive", argv[1]);
	p->conf->c_user = xstrdup(argv[0]);
	if (argc == 2)
		p->conf->c_group = xstrdup(argv[1]);
	return 0;
}

static int
conf_cmd_nginx(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	(void)blk;
	(void)argc;
	p->conf->c_nginx_config = conf_path_resolve(p->lex, argv[0]);
	p->nginx_file = xstrdup(p->file);
	p->nginx_line = p->line;
	return 0;
}

/* The sidecar's own file, into p->conf. */
int
conf_read_top(struct conf_parse *p, const char *path)
{
	struct conf_block	 top;
	struct conf_ctx		 ctx = { conf_directive, &top };
	struct conf_lex		*lx;
	int			 rc;

	memset(&top, 0, sizeof(top));
	top.where = CONF_TOP;
	/* A file that cannot be read has no line to point at. */
	if ((lx = conf_lex_open(path, NULL, &p->cause)) == NULL)
		return -1;
	p->nfiles++;
	p->nbytes += lx->len;
	rc = conf_parse_block(p, lx, &ctx, 0);
	conf_lex_free(lx);
	return rc;
}
