/*
 * Certificates in the configuration: acme_certificate's identifiers and
 * the id they give a certificate (key types: keys.c).
 *
 * The id is a contract: the nginx module computes the same one from the
 * same server{} (src/nginx/ngx_http_acme_conf.c), and the shared zone
 * (proto/acme_shm.h) is keyed by it.  So the rules for identifiers, key
 * types and ids are written once, in proto/acme_ident.h, for both.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sidecar.h"
#include "conf_int.h"

int
conf_ident_is_ip(const char *s)
{
	return acme_ident_is_ip(s);
}

/*
 * Add ident (consumed) unless cc has it.  At most CONF_MAX_IDENTS here;
 * the issuer's own max_identifiers is checked once the issuers are all
 * known (conf_check_certs()): CAs refuse a larger order, and would only
 * say so at newOrder, after a key is made, on every retry.
 */
static int
conf_cert_push(struct conf_parse *p, struct conf_cert *cc, char *ident)
{
	size_t	 i;

	for (i = 0; i < cc->cc_nidents; i++) {
		if (strcmp(cc->cc_idents[i], ident) == 0) {
			free(ident);
			return 0;
		}
	}
	if (cc->cc_nidents >= CONF_MAX_IDENTS) {
		free(ident);
		return conf_error(p, "too many identifiers in one "
		    "certificate: at most %d (CAs refuse larger orders)",
		    CONF_MAX_IDENTS);
	}
	cc->cc_idents = xreallocarray(cc->cc_idents, cc->cc_nidents + 1,
	    sizeof(*cc->cc_idents));
	cc->cc_idents[cc->cc_nidents++] = ident;
	return 0;
}

/*
 * One identifier as written, read by proto/acme_ident.h as the nginx
 * module reads it: ".example.com" is example.com and www.example.com.
 * A wildcard is taken here and judged once the challenge is known
 * (conf_cert_check_challenge()), at the place it was written.
 */
int
conf_cert_ident(struct conf_parse *p, struct conf_cert *cc, const char *raw)
{
	struct acme_ident_words	 w;
	int			 i;

	switch (acme_ident_parse(raw, strlen(raw), &w)) {
	case ACME_IDENT_OK:
		break;
	case ACME_IDENT_WILDCARD:
		if (cc->cc_wild_file == NULL && p->file != NULL) {
			cc->cc_wild_file = xstrdup(p->file);
			cc->cc_wild_line = p->line;
		}
		break;
	case ACME_IDENT_REGEX:
		return conf_error(p, "regular expression \"%s\" cannot be an "
		    "identifier", raw);
	default:
		return conf_error(p, "invalid identifier \"%s\"", raw);
	}
	for (i = 0; i < w.iw_n; i++) {
		if (conf_cert_push(p, cc, xstrndup(w.iw_word[i],
		    (size_t)w.iw_len[i])) == -1)
			return -1;
	}
	return 0;
}

/* The first identifier, and the key type when it is not the default. */
static char *
conf_cert_id(const struct conf_cert *cc)
{
	char	 id[ACME_IDENT_ID_MAX + 1];

	if (acme_ident_cert_id(cc->cc_idents[0], strlen(cc->cc_idents[0]),
	    (enum acme_key_type)cc->cc_key, id, sizeof(id)) == -1)
		fatalx("%s: id of \"%s\" too long", __func__,
		    cc->cc_idents[0]);
	return xstrdup(id);
}

/*
 * A challenge type as written: nginx-acme's words, and its unversioned
 * "http".
 */
int
conf_challenge_parse(const char *s, enum challenge_type *t, char **why)
{
	if (strcasecmp(s, "http-01") == 0 || strcasecmp(s, "http") == 0) {
		*t = CHALLENGE_HTTP_01;
		return 0;
	}
	if (strcasecmp(s, "dns-01") == 0 || strcasecmp(s, "dns") == 0) {
		*t = CHALLENGE_DNS_01;
		return 0;
	}
	if (strcasecmp(s, "tls-alpn-01") == 0 ||
	    strcasecmp(s, "tls-alpn") == 0) {
		*t = CHALLENGE_TLS_ALPN_01;
		return 0;
	}
	xasprintf(why, "invalid challenge type \"%s\": use http-01, dns-01 "
	    "or tls-alpn-01", s);
	return -1;
}

const char *
conf_challenge_name(enum challenge_type t)
{
	switch (t) {
	case CHALLENGE_HTTP_01:
		return "http-01";
	case CHALLENGE_DNS_01:
		return "dns-01";
	case CHALLENGE_TLS_ALPN_01:
		return "tls-alpn-01";
	default:
		fatalx("%s: bad challenge type %d", __func__, (int)t);
	}
}

/* The challenge cc is validated with: its challenge=, else its issuer's. */
enum challenge_type
conf_cert_challenge(const struct conf_cert *cc, const struct conf_issuer *ci)
{
	if (cc->cc_challenge != CHALLENGE_ISSUER)
		return (enum challenge_type)cc->cc_challenge;
	return ci->ci_challenge;
}

/*
 * Whether ci can validate cc: a wildcard only over dns-01 (RFC 8555
 * 7.1.3), dns-01 only with a way to publish the record.  tls-alpn-01
 * always has a responder: nginx's module through the shared zone, and
 * tls_alpn_listen where set.  The reason in why otherwise.
 */
int
conf_cert_check_challenge(const struct conf *conf, const struct conf_cert *cc,
    const struct conf_issuer *ci, char **why)
{
	enum challenge_type	 t = conf_cert_challenge(cc, ci);
	size_t			 i;

	(void)conf;
	if (t == CHALLENGE_DNS_01) {
		if (ci->ci_dns_hook != NULL || ci->ci_dns_update != NULL)
			return 0;
		xasprintf(why, "certificate \"%s\" has challenge dns-01 but "
		    "acme_issuer \"%s\" has no way to publish the TXT record: "
		    "add \"dns_update\" or \"dns_hook\" to it", cc->cc_id,
		    ci->ci_name);
		return -1;
	}
	for (i = 0; i < cc->cc_nidents; i++) {
		if (!acme_ident_is_wildcard(cc->cc_idents[i]))
			continue;
		xasprintf(why, "wildcard identifier \"%s\" needs challenge "
		    "dns-01: %s cannot validate wildcard identifiers",
		    cc->cc_idents[i], conf_challenge_name(t));
		return -1;
	}
	return 0;
}

/*
 * Copy into cc what its orders need of its issuer's challenge, so that
 * they find it without the configuration (and a reload that changes it
 * restarts the certificate: order_cert_same_conf()).
 */
void
conf_cert_resolve(struct conf_cert *cc, const struct conf_issuer *ci)
{
	cc->cc_type = conf_cert_challenge(cc, ci);
	free(cc->cc_dns_hook);
	cc->cc_dns_hook = NULL;
	free(cc->cc_dns_update);
	cc->cc_dns_update = NULL;
	free(cc->cc_dns_check);
	cc->cc_dns_check = NULL;
	if (cc->cc_type == CHALLENGE_DNS_01) {
		if (ci->ci_dns_check != NULL)
			cc->cc_dns_check = xstrdup(ci->ci_dns_check);
		if (ci->ci_dns_hook != NULL)
			cc->cc_dns_hook = xstrdup(ci->ci_dns_hook);
		if (ci->ci_dns_update != NULL)
			cc->cc_dns_update = xstrdup(ci->ci_dns_update);
		cc->cc_dns_hook_timeout = ci->ci_dns_hook_timeout;
	}
}

/* A certificate from the directive being handled. */
struct conf_cert *
conf_cert_new(struct conf_parse *p, const char *issuer)
{
	struct conf_cert	*cc;

	cc = xcalloc(1, sizeof(*cc));
	cc->cc_issuer = xstrdup(issuer);
	cc->cc_key = KEY_TYPE_DEFAULT;
	cc->cc_challenge = CHALLENGE_ISSUER;
	cc->cc_file = p->file != NULL ? xstrdup(p->file) : NULL;
	cc->cc_line = p->line;
	return cc;
}

void
conf_cert_free(struct conf_cert *cc)
{
	size_t	 i;

	for (i = 0; i < cc->cc_nidents; i++)
		free(cc->cc_idents[i]);
	free(cc->cc_idents);
	free(cc->cc_id);
	free(cc->cc_issuer);
	free(cc->cc_profile);
	free(cc->cc_wild_file);
	free(cc->cc_dns_hook);
	free(cc->cc_dns_update);
	free(cc->cc_dns_check);
	free(cc->cc_file);
	free(cc);
}

/*
 * A profile name (draft-ietf-acme-profiles): the CA's own word, sent in
 * newOrder and shown in logs, so a short plain token.
 */
int
conf_profile_valid(const char *name)
{
	size_t	 i;

	for (i = 0; name[i] != '\0'; i++)
		if (i >= CONF_PROFILE_MAX || (!isalnum((unsigned char)name[i]) &&
		    strchr("-_.", name[i]) == NULL))
			return 0;
	return i > 0;
}

/* challenge=TYPE: this certificate's, over its issuer's. */
static int
conf_cert_challenge_param(struct conf_parse *p, struct conf_cert *cc,
    const char *type)
{
	enum challenge_type	 t;
	char			*why = NULL;
	int			 rc;

	if (cc->cc_challenge != CHALLENGE_ISSUER)
		return conf_error(p, "duplicate \"challenge\" parameter");
	if (conf_challenge_parse(type, &t, &why) == -1) {
		rc = conf_error(p, "%s", why);
		free(why);
		return rc;
	}
	cc->cc_challenge = (int)t;
	return 0;
}

/*
 * A word of acme_certificate after the issuer: key=TYPE, profile=NAME (it
 * overrides the issuer's profile for this certificate), challenge=TYPE
 * (likewise) or an identifier.
 */
int
conf_cert_param(struct conf_parse *p, struct conf_cert *cc, const char *arg,
    int *havekey)
{
	if (strncmp(arg, "challenge=", 10) == 0)
		return conf_cert_challenge_param(p, cc, arg + 10);
	if (strncmp(arg, "profile=", 8) == 0) {
		if (cc->cc_profile != NULL)
			return conf_error(p, "duplicate \"profile\" parameter");
		if (!conf_profile_valid(arg + 8))
			return conf_error(p, "invalid profile \"%s\"", arg + 8);
		cc->cc_profile = xstrdup(arg + 8);
		return 0;
	}
	if (strncmp(arg, "key=", 4) != 0)
		return conf_cert_ident(p, cc, arg);
	if (*havekey)
		return conf_error(p, "duplicate \"key\" parameter");
	if (key_type_parse(arg + 4, &cc->cc_key) == -1)
		return conf_error(p, "invalid key type \"%s\"", arg + 4);
	*havekey = 1;
	return 0;
}

/*
 * The certificates a load has added so far, by id, so that each new one
 * is checked for a duplicate without a scan of all before it (N^2
 * strcmp() calls for a configuration of N = 10,000).  Open addressing
 * with linear probing, at most half full; nothing leaves it during a
 * load.  It points into p->conf's list and owns none of them.
 */
struct conf_cert_ids {
	struct conf_cert	**ci_slots;
	size_t			  ci_cap;	/* a power of two */
	size_t			  ci_n;
};

/* The slot holding id, or the free one where it would go. */
static struct conf_cert **
conf_cert_ids_slot(const struct conf_cert_ids *ids, const char *id)
{
	size_t	 k;

	k = util_hash(id) & (ids->ci_cap - 1);
	while (ids->ci_slots[k] != NULL &&
	    strcmp(ids->ci_slots[k]->cc_id, id) != 0)
		k = (k + 1) & (ids->ci_cap - 1);
	return &ids->ci_slots[k];
}

static void
conf_cert_ids_grow(struct conf_cert_ids *ids)
{
	struct conf_cert	**old = ids->ci_slots;
	size_t			  old_cap = ids->ci_cap, i;

	ids->ci_cap = old_cap == 0 ? 64 : old_cap * 2;
	ids->ci_slots = xcalloc(ids->ci_cap, sizeof(*ids->ci_slots));
	for (i = 0; i < old_cap; i++) {
		if (old[i] != NULL)
			*conf_cert_ids_slot(ids, old[i]->cc_id) = old[i];
	}
	free(old);
}

/* The certificate of p's load with cc's id; if none, cc is entered. */
static struct conf_cert *
conf_cert_ids_enter(struct conf_parse *p, struct conf_cert *cc)
{
	struct conf_cert_ids	 *ids;
	struct conf_cert	**slot;

	if (p->cert_ids == NULL)
		p->cert_ids = xcalloc(1, sizeof(*p->cert_ids));
	ids = p->cert_ids;
	if ((ids->ci_n + 1) * 2 > ids->ci_cap)
		conf_cert_ids_grow(ids);
	slot = conf_cert_ids_slot(ids, cc->cc_id);
	if (*slot != NULL)
		return *slot;
	*slot = cc;
	ids->ci_n++;
	return NULL;
}

void
conf_cert_ids_free(struct conf_parse *p)
{
	if (p->cert_ids == NULL)
		return;
	free(p->cert_ids->ci_slots);
	free(p->cert_ids);
	p->cert_ids = NULL;
}

/* Name cc and add it to the configuration; on error, cc is freed. */
int
conf_cert_add(struct conf_parse *p, struct conf_cert *cc)
{
	struct conf_cert	*other;

	if (cc->cc_nidents == 0) {
		conf_error(p, "no identifiers in \"acme_certificate\" "
		    "directive");
		goto fail;
	}
	cc->cc_id = conf_cert_id(cc);
	if ((other = conf_cert_ids_enter(p, cc)) != NULL) {
		conf_error(p, "duplicate acme_certificate \"%s\", first "
		    "defined at %s:%d", cc->cc_id, other->cc_file,
		    other->cc_line);
		goto fail;
	}
	TAILQ_INSERT_TAIL(&p->conf->c_certs, cc, cc_entry);
	return 0;
fail:
	conf_cert_free(cc);
	return -1;
}

int
conf_cmd_cert(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_cert	*cc;
	int			 i, havekey = 0;

	(void)blk;
	cc = conf_cert_new(p, argv[0]);
	for (i = 1; i < argc; i++) {
		if (conf_cert_param(p, cc, argv[i], &havekey) == -1) {
			conf_cert_free(cc);
			return -1;
		}
	}
	return conf_cert_add(p, cc);
}

/*
 * Certificates added through the control API.  They live in one file per
 * issuer, STATE_PATH/certificates.conf, in this grammar and with these
 * checks, so that a certificate added at run time is read at start, at
 * reload and by -t like any line of the configuration.
 */

char *
conf_runtime_path(const struct conf_issuer *ci)
{
	char	*path;

	xasprintf(&path, "%s/%s", ci->ci_state_path, CONF_RUNTIME_FILE);
	return path;
}

/* The file holds acme_certificate lines of its own issuer, nothing else. */
static int
conf_runtime_stmt(struct conf_parse *p, const struct conf_ctx *ctx,
    struct conf_args *a, enum conf_tok end)
{
	const struct conf_issuer	*ci = ctx->cx_arg;

	if (strcmp(a->v[0], "acme_certificate") != 0)
		return conf_error(p, "\"%s\" directive is not allowed here: "
		    "this file only holds the acme_certificate lines added "
		    "through the control API", a->v[0]);
	if (end != CONF_TOK_SEMI)
		return conf_error(p, "directive \"acme_certificate\" is not "
		    "terminated by \";\"");
	if (a->n < 3)
		return conf_error(p, "invalid number of arguments in "
		    "\"acme_certificate\" directive");
	if (strcmp(a->v[1], ci->ci_name) != 0)
		return conf_error(p, "acme_certificate of issuer \"%s\" in the "
		    "file of issuer \"%s\"", a->v[1], ci->ci_name);
	if (conf_cmd_cert(p, NULL, a->n - 1, a->v + 1) == -1)
		return -1;
	TAILQ_LAST(&p->conf->c_certs, conf_certs)->cc_runtime = 1;
	return 0;
}

int
conf_read_runtime(struct conf_parse *p)
{
	struct conf_issuer	*ci;
	struct conf_ctx		 ctx = { conf_runtime_stmt, NULL };
	struct conf_lex		*lx;
	char			*path;
	int			 rc = 0;

	TAILQ_FOREACH(ci, &p->conf->c_issuers, ci_entry) {
		path = conf_runtime_path(ci);
		if (access(path, F_OK) == -1 && errno == ENOENT) {
			free(path);
			continue;
		}
		ctx.cx_arg = ci;
		lx = conf_lex_open(path, NULL, &p->cause);
		free(path);
		if (lx == NULL)
			return -1;
		rc = conf_parse_block(p, lx, &ctx, 0);
		conf_lex_free(lx);
		if (rc == -1)
			break;
	}
	return rc;
}

/*
 * Check one certificate as its acme_certificate line would be checked,
 * and add it to conf as added at run time.  Returns CONF_ADD_OK, or
 * CONF_ADD_INVALID or CONF_ADD_DUPLICATE with the reason in cause.
 */
int
conf_runtime_add(struct conf *conf, const char *issuer, char *const *idents,
    size_t nidents, const char *key, const char *profile,
    const char *challenge, char **cause)
{
	struct conf_parse	 p;
	struct conf_cert	*cc, *other;
	struct conf_issuer	*ci;
	char			*word = NULL;
	int			 havekey = 0;
	size_t			 i;

	memset(&p, 0, sizeof(p));
	p.conf = conf;
	if ((ci = conf_find_issuer(conf, issuer)) == NULL) {
		xasprintf(cause, "unknown acme_issuer \"%s\"", issuer);
		return CONF_ADD_INVALID;
	}
	cc = conf_cert_new(&p, issuer);
	for (i = 0; i < nidents && p.cause == NULL; i++)
		conf_cert_ident(&p, cc, idents[i]);
	if (key != NULL && p.cause == NULL) {
		xasprintf(&word, "key=%s", key);
		conf_cert_param(&p, cc, word, &havekey);
		free(word);
	}
	if (profile != NULL && p.cause == NULL) {
		xasprintf(&word, "profile=%s", profile);
		conf_cert_param(&p, cc, word, &havekey);
		free(word);
	}
	if (challenge != NULL && p.cause == NULL)
		conf_cert_challenge_param(&p, cc, challenge);
	if (p.cause == NULL && cc->cc_nidents == 0)
		conf_error(&p, "no identifiers");
	if (p.cause == NULL && cc->cc_nidents > ci->ci_max_idents)
		conf_error(&p, "%zu identifiers in one certificate: acme_issuer "
		    "\"%s\" takes at most %zu (max_identifiers)",
		    cc->cc_nidents, ci->ci_name, ci->ci_max_idents);
	if (p.cause != NULL) {
		conf_cert_free(cc);
		*cause = p.cause;
		return CONF_ADD_INVALID;
	}
	cc->cc_id = conf_cert_id(cc);
	if (conf_cert_check_challenge(conf, cc, ci, cause) == -1) {
		conf_cert_free(cc);
		return CONF_ADD_INVALID;
	}
	conf_cert_resolve(cc, ci);
	TAILQ_FOREACH(other, &conf->c_certs, cc_entry) {
		if (strcmp(other->cc_id, cc->cc_id) != 0)
			continue;
		xasprintf(cause, "certificate \"%s\" is already managed, "
		    "defined at %s:%d", cc->cc_id, other->cc_file,
		    other->cc_line);
		conf_cert_free(cc);
		return CONF_ADD_DUPLICATE;
	}
	cc->cc_runtime = 1;
	TAILQ_INSERT_TAIL(&conf->c_certs, cc, cc_entry);
	return CONF_ADD_OK;
}

#define CONF_RUNTIME_HEADER_LINES	2

static int
conf_runtime_of(const struct conf_cert *cc, const struct conf_issuer *ci)
{
	return cc->cc_runtime && strcmp(cc->cc_issuer, ci->ci_name) == 0;
}

/*
 * Where each of issuer's certificates added at run time stands in its
 * certificates.conf, as conf_runtime_text() writes it: the file and line
 * that errors name.
 */
void
conf_runtime_renumber(struct conf *conf, const struct conf_issuer *ci)
{
	struct conf_cert	*cc;
	char			*path = conf_runtime_path(ci);
	int			 line = CONF_RUNTIME_HEADER_LINES + 1;

	TAILQ_FOREACH(cc, &conf->c_certs, cc_entry) {
		if (!conf_runtime_of(cc, ci))
			continue;
		free(cc->cc_file);
		cc->cc_file = xstrdup(path);
		cc->cc_line = line++;
	}
	free(path);
}

/* The text of issuer's certificates.conf; each certificate is renumbered. */
char *
conf_runtime_text(struct conf *conf, const struct conf_issuer *ci)
{
	struct conf_cert	*cc;
	FILE			*f;
	char			*text = NULL;
	size_t			 len, i;

	if ((f = open_memstream(&text, &len)) == NULL)
		fatal("open_memstream");
	fprintf(f, "# Certificates added through the control API of "
	    "acme-sidecar, issuer \"%s\".\n# The daemon rewrites this file: "
	    "use acmectl add and acmectl remove.\n", ci->ci_name);
	TAILQ_FOREACH(cc, &conf->c_certs, cc_entry) {
		if (!conf_runtime_of(cc, ci))
			continue;
		fprintf(f, "acme_certificate %s", cc->cc_issuer);
		for (i = 0; i < cc->cc_nidents; i++)
			fprintf(f, " %s", cc->cc_idents[i]);
		if (cc->cc_key != KEY_TYPE_DEFAULT)
			fprintf(f, " key=%s", key_type_name(cc->cc_key));
		if (cc->cc_profile != NULL)
			fprintf(f, " profile=%s", cc->cc_profile);
		if (cc->cc_challenge != CHALLENGE_ISSUER)
			fprintf(f, " challenge=%s", conf_challenge_name(
			    (enum challenge_type)cc->cc_challenge));
		fprintf(f, ";\n");
	}
	if (fclose(f) != 0)
		fatal("open_memstream");
	conf_runtime_renumber(conf, ci);
	return text;
}
