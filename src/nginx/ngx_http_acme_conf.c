/*
 * The acme_* directives in nginx.conf.
 *
 * The sidecar reads the same directives (acme-sidecar --nginx-conf) and
 * acts on them; this module only checks what it cheaply can, so that
 * "nginx -t" catches the mistakes the sidecar would refuse, and works out
 * each server's certificate id exactly as the sidecar does (see LOOKUPS in
 * proto/acme_shm.h), since that id is the key into the segment: both read
 * identifiers, key types and ids with proto/acme_ident.h alone.
 */
#include <pwd.h>

#include "ngx_http_acme_module.h"

#define NGX_HTTP_ACME_MAX_RATE		1000000
#define NGX_HTTP_ACME_MAX_BURST		1000000
#define NGX_HTTP_ACME_MAX_IDENTS	1000	/* CONF_MAX_IDENTS */
#define NGX_HTTP_ACME_MAX_PROFILE	64	/* CONF_PROFILE_MAX */
#define NGX_HTTP_ACME_DEFAULT_ZONE	"ngx_acme_shared"
#define NGX_HTTP_ACME_DEFAULT_SIZE	(256 * 1024)

static const char *ngx_http_acme_family_names[NGX_HTTP_ACME_NFAMILIES] = {
	"ECDSA", "RSA"
};

/* A key type as acme_certificate and account_key take it. */
static ngx_int_t
ngx_http_acme_key_type(ngx_str_t *s, ngx_uint_t *t)
{
	int	 k;

	if ((k = acme_key_parse((const char *)s->data, s->len)) == -1)
		return NGX_ERROR;
	*t = (ngx_uint_t)k;
	return NGX_OK;
}

static ngx_uint_t
ngx_http_acme_key_family(ngx_uint_t t)
{
	return acme_key_desc((enum acme_key_type)t)->kd_family;
}

/* Names that become file names: issuers (state_path) and the zone. */
static ngx_int_t
ngx_http_acme_name_valid(ngx_str_t *s)
{
	size_t	 i;
	u_char	 c;

	if (s->len == 0 || (s->len == 1 && s->data[0] == '.') ||
	    (s->len == 2 && s->data[0] == '.' && s->data[1] == '.'))
		return 0;
	for (i = 0; i < s->len; i++) {
		c = s->data[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

static ngx_int_t
ngx_http_acme_str_eq(ngx_str_t *a, const char *b)
{
	size_t	 len = ngx_strlen(b);

	return a->len == len && ngx_strncmp(a->data, b, len) == 0;
}

static ngx_int_t
ngx_http_acme_str_caseeq(ngx_str_t *a, const char *b)
{
	size_t	 len = ngx_strlen(b);

	return a->len == len && ngx_strncasecmp(a->data, (u_char *)b,
	    len) == 0;
}

static ngx_int_t
ngx_http_acme_has_prefix(ngx_str_t *a, const char *p)
{
	size_t	 len = ngx_strlen(p);

	return a->len >= len && ngx_strncmp(a->data, p, len) == 0;
}

/* ------------------------------------------------------------ identifiers */

static ngx_int_t
ngx_http_acme_ident_push(ngx_pool_t *pool, ngx_array_t *idents,
    const char *word, size_t len)
{
	ngx_str_t	*v = idents->elts, *p;
	ngx_uint_t	 i;

	for (i = 0; i < idents->nelts; i++) {
		if (v[i].len == len && ngx_strncmp(v[i].data, word, len) == 0)
			return NGX_OK;
	}
	if ((p = ngx_array_push(idents)) == NULL ||
	    (p->data = ngx_pnalloc(pool, len + 1)) == NULL)
		return NGX_ERROR;
	ngx_memcpy(p->data, word, len);
	p->data[len] = '\0';
	p->len = len;
	return NGX_OK;
}

/*
 * One identifier as written, added to idents, read by proto/acme_ident.h
 * as the sidecar reads it: ".example.com" is example.com and
 * www.example.com.  Returns NGX_DECLINED for an identifier that is
 * refused, with *why a format for the error message, whose %V is the
 * identifier.
 */
static ngx_int_t
ngx_http_acme_ident_add(ngx_pool_t *pool, ngx_array_t *idents,
    ngx_str_t *raw, const char **why)
{
	struct acme_ident_words	 w;
	int			 i;

	switch (acme_ident_parse((const char *)raw->data, raw->len, &w)) {
	case ACME_IDENT_OK:
		break;
	case ACME_IDENT_REGEX:
		*why = "regular expression \"%V\" cannot be an identifier";
		return NGX_DECLINED;
	case ACME_IDENT_WILDCARD:
		/* Judged with its challenge: ngx_http_acme_line_challenge(). */
		break;
	default:
		*why = "invalid identifier \"%V\"";
		return NGX_DECLINED;
	}
	for (i = 0; i < w.iw_n; i++) {
		if (ngx_http_acme_ident_push(pool, idents, w.iw_word[i],
		    (size_t)w.iw_len[i]) != NGX_OK)
			return NGX_ERROR;
	}
	return NGX_OK;
}

/* The first identifier, and "_" + the key type when not the default. */
static ngx_int_t
ngx_http_acme_cert_id(ngx_pool_t *pool, ngx_array_t *idents,
    ngx_uint_t key_type, ngx_str_t *id)
{
	ngx_str_t	*first = idents->elts;
	char		 buf[ACME_IDENT_ID_MAX + 1];
	int		 len;

	len = acme_ident_cert_id((const char *)first->data, first->len,
	    (enum acme_key_type)key_type, buf, sizeof(buf));
	if (len == -1 || (id->data = ngx_pnalloc(pool, len + 1)) == NULL)
		return NGX_ERROR;
	ngx_memcpy(id->data, buf, (size_t)len + 1);
	id->len = (size_t)len;
	return NGX_OK;
}

/* -------------------------------------------------------------- acme_issuer */

#define NGX_HTTP_ACME_ONCE	0x1

typedef char *(*ngx_http_acme_issuer_check_pt)(ngx_conf_t *,
    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);

static char	*ngx_http_acme_check_uri(ngx_conf_t *, ngx_http_acme_issuer_t *,
		    ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_nonempty(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_state_path(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_on_off(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_account_key(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_profile(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_challenge(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_dns_hook(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_dns_update(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_dns_check(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_rate(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_max_idents(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);
static char	*ngx_http_acme_check_request_timeout(ngx_conf_t *,
		    ngx_http_acme_issuer_t *, ngx_str_t *, ngx_uint_t);

/*
 * The directives of an acme_issuer block, as the sidecar reads them.  The
 * row index of a once-only directive is its bit in issuer->seen.
 */
static const struct {
	const char			*name;
	ngx_uint_t			 min;
	ngx_uint_t			 max;
	ngx_uint_t			 flags;
	ngx_http_acme_issuer_check_pt	 check;
} ngx_http_acme_issuer_cmds[] = {
	{ "uri", 1, 1, NGX_HTTP_ACME_ONCE, ngx_http_acme_check_uri },
	{ "contact", 1, 1, 0, ngx_http_acme_check_nonempty },
	{ "state_path", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_state_path },
	{ "accept_terms_of_service", 0, 0, NGX_HTTP_ACME_ONCE, NULL },
	{ "ssl_trusted_certificate", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_nonempty },
	{ "ssl_verify", 1, 1, NGX_HTTP_ACME_ONCE, ngx_http_acme_check_on_off },
	{ "account_key", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_account_key },
	{ "external_account_key", 2, 2, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_nonempty },
	{ "preferred_chain", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_nonempty },
	{ "profile", 1, 2, NGX_HTTP_ACME_ONCE, ngx_http_acme_check_profile },
	{ "challenge", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_challenge },
	{ "dns_hook", 1, 2, NGX_HTTP_ACME_ONCE, ngx_http_acme_check_dns_hook },
	{ "dns_update", 1, 3, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_dns_update },
	{ "dns_check", 1, 16, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_dns_check },
	{ "new_order_exclusive", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_on_off },
	{ "request_rate", 1, 2, NGX_HTTP_ACME_ONCE, ngx_http_acme_check_rate },
	{ "request_timeout", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_request_timeout },
	{ "max_identifiers", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_max_idents },
	{ "common_name_in_csr", 1, 1, NGX_HTTP_ACME_ONCE,
	    ngx_http_acme_check_on_off },
};
#define NGX_HTTP_ACME_ISSUER_NCMDS \
	(sizeof(ngx_http_acme_issuer_cmds) / \
	    sizeof(ngx_http_acme_issuer_cmds[0]))
#define NGX_HTTP_ACME_ISSUER_URI	0	/* its row above */

static char *
ngx_http_acme_check_uri(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	(void)iss;
	(void)n;
	if ((arg->len > 8 && ngx_strncasecmp(arg->data,
	    (u_char *)"https://", 8) == 0) ||
	    (arg->len > 7 && ngx_strncasecmp(arg->data,
	    (u_char *)"http://", 7) == 0))
		return NGX_CONF_OK;
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid uri \"%V\", it must "
	    "start with \"https://\" or \"http://\"", arg);
	return NGX_CONF_ERROR;
}

static char *
ngx_http_acme_check_nonempty(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_uint_t	 i;
	ngx_str_t	*value = cf->args->elts;

	(void)iss;
	for (i = 0; i < n; i++) {
		if (arg[i].len == 0) {
			ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid "
			    "empty value in \"%V\" directive", &value[0]);
			return NGX_CONF_ERROR;
		}
	}
	return NGX_CONF_OK;
}

static char *
ngx_http_acme_check_state_path(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	if (ngx_http_acme_check_nonempty(cf, iss, arg, n) != NGX_CONF_OK)
		return NGX_CONF_ERROR;
	/* "off": the sidecar's private folder per issuer, shared by none. */
	if (!ngx_http_acme_str_eq(arg, "off"))
		iss->state_path = *arg;
	return NGX_CONF_OK;
}

static char *
ngx_http_acme_check_on_off(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_str_t	*value = cf->args->elts;

	(void)iss;
	(void)n;
	if (ngx_http_acme_str_caseeq(arg, "on") ||
	    ngx_http_acme_str_caseeq(arg, "off"))
		return NGX_CONF_OK;
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" in "
	    "\"%V\" directive, it must be \"on\" or \"off\"", arg, &value[0]);
	return NGX_CONF_ERROR;
}

/* A key type, or else a PEM file holding the account key. */
static char *
ngx_http_acme_check_account_key(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_uint_t	 t;

	(void)iss;
	(void)n;
	if (ngx_http_acme_key_type(arg, &t) == NGX_OK)
		return NGX_CONF_OK;
	/* A misspelt type is likelier than a file called "rsa:1024". */
	if (arg->len == 0 || ngx_http_acme_has_prefix(arg, "ecdsa:") ||
	    ngx_http_acme_has_prefix(arg, "rsa:")) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid key type "
		    "\"%V\"", arg);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

static char *
ngx_http_acme_check_profile(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	if (ngx_http_acme_check_nonempty(cf, iss, arg, 1) != NGX_CONF_OK)
		return NGX_CONF_ERROR;
	if (n == 2 && !ngx_http_acme_str_eq(&arg[1], "require")) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter "
		    "\"%V\"", &arg[1]);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

/*
 * A challenge type as the sidecar reads it (conf_challenge_parse()):
 * nginx-acme's words.  tls-alpn-01 is answered by this module from the
 * shared zone (ngx_http_acme_ssl.c).
 */
static ngx_int_t
ngx_http_acme_challenge_type(ngx_conf_t *cf, ngx_str_t *arg)
{
	if (ngx_http_acme_str_caseeq(arg, "http-01") ||
	    ngx_http_acme_str_caseeq(arg, "http"))
		return NGX_HTTP_ACME_HTTP_01;
	if (ngx_http_acme_str_caseeq(arg, "dns-01") ||
	    ngx_http_acme_str_caseeq(arg, "dns"))
		return NGX_HTTP_ACME_DNS_01;
	if (ngx_http_acme_str_caseeq(arg, "tls-alpn-01") ||
	    ngx_http_acme_str_caseeq(arg, "tls-alpn"))
		return NGX_HTTP_ACME_TLS_ALPN_01;
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid challenge type "
	    "\"%V\": use http-01, dns-01 or tls-alpn-01", arg);
	return NGX_ERROR;
}

static char *
ngx_http_acme_check_challenge(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_int_t	 t;

	(void)n;
	if ((t = ngx_http_acme_challenge_type(cf, arg)) == NGX_ERROR)
		return NGX_CONF_ERROR;
	iss->challenge = (ngx_uint_t)t;
	return NGX_CONF_OK;
}

/*
 * The sidecar takes one way to publish dns-01's record: dns_hook or
 * dns_update.
 */
static char *
ngx_http_acme_dns_publisher(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss)
{
	if (iss->dns_publisher) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"dns_hook\" and "
		    "\"dns_update\" in one acme_issuer: choose one");
		return NGX_CONF_ERROR;
	}
	iss->dns_publisher = 1;
	return NGX_CONF_OK;
}

/* dns_hook PROGRAM [timeout=TIME]: an absolute path, as the sidecar wants. */
static char *
ngx_http_acme_check_dns_hook(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	if (arg[0].len == 0 || arg[0].data[0] != '/') {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "dns_hook \"%V\" is "
		    "not an absolute path", &arg[0]);
		return NGX_CONF_ERROR;
	}
	if (n == 2 && (!ngx_http_acme_has_prefix(&arg[1], "timeout=") ||
	    arg[1].len == 8)) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter "
		    "\"%V\" of dns_hook", &arg[1]);
		return NGX_CONF_ERROR;
	}
	return ngx_http_acme_dns_publisher(cf, iss);
}

/*
 * dns_update SERVER[:PORT] key=FILE [zone=ZONE]: its shape only; the
 * sidecar's -t reads the key file and judges the address.
 */
static char *
ngx_http_acme_check_dns_update(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_uint_t	 i, key = 0;

	for (i = 1; i < n; i++) {
		if (ngx_http_acme_has_prefix(&arg[i], "key=") &&
		    arg[i].len > 4 && !key) {
			key = 1;
			continue;
		}
		if (ngx_http_acme_has_prefix(&arg[i], "zone=") &&
		    arg[i].len > 5)
			continue;
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter "
		    "\"%V\" of dns_update", &arg[i]);
		return NGX_CONF_ERROR;
	}
	if (!key) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "dns_update \"%V\" "
		    "has no key=FILE (its TSIG key)", &arg[0]);
		return NGX_CONF_ERROR;
	}
	return ngx_http_acme_dns_publisher(cf, iss);
}

/* dns_check off | ADDR[:PORT] ...: "off" stands alone. */
static char *
ngx_http_acme_check_dns_check(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_uint_t	 i;

	(void)iss;
	for (i = 0; i < n; i++) {
		if (arg[i].len != 0 && (n == 1 ||
		    !ngx_http_acme_str_caseeq(&arg[i], "off")))
			continue;
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value "
		    "\"%V\" in \"dns_check\" directive", &arg[i]);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

/*
 * request_timeout TIME: "N", "Ns" or "Nm", 1 s to 10 min, as the sidecar
 * reads it (its CONF_REQUEST_TIMEOUT_MAX).
 */
static char *
ngx_http_acme_check_request_timeout(ngx_conf_t *cf,
    ngx_http_acme_issuer_t *iss, ngx_str_t *arg, ngx_uint_t n)
{
	ngx_int_t	 v;
	size_t		 len = arg->len;
	ngx_int_t	 scale = 1;

	(void)iss;
	(void)n;
	if (len > 1 && arg->data[len - 1] == 's')
		len--;
	else if (len > 1 && arg->data[len - 1] == 'm') {
		scale = 60;
		len--;
	}
	v = ngx_atoi(arg->data, len);
	if (v == NGX_ERROR || v < 1 || v > 600 / scale) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" "
		    "in \"request_timeout\" directive, it must be from 1s to "
		    "10m", arg);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

/* max_identifiers N: 1 to 1000 (the sidecar's CONF_MAX_IDENTS). */
static char *
ngx_http_acme_check_max_idents(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_int_t	 v;

	(void)iss;
	(void)n;
	v = ngx_atoi(arg->data, arg->len);
	if (v == NGX_ERROR || v < 1 || v > NGX_HTTP_ACME_MAX_IDENTS) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" "
		    "in \"max_identifiers\" directive, it must be from 1 to %d",
		    arg, NGX_HTTP_ACME_MAX_IDENTS);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

/* "off", or "20r/s" / "600r/m" as limit_req_zone's rate=, [burst=N]. */
static char *
ngx_http_acme_check_rate(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_str_t *arg, ngx_uint_t n)
{
	ngx_int_t	 v;
	size_t		 len = arg->len;

	(void)iss;
	if (ngx_http_acme_str_eq(arg, "off")) {
		if (n == 1)
			return NGX_CONF_OK;
		goto badparam;
	}
	if (len <= 3 || (ngx_strncmp(arg->data + len - 3, "r/s", 3) != 0 &&
	    ngx_strncmp(arg->data + len - 3, "r/m", 3) != 0) ||
	    (v = ngx_atoi(arg->data, len - 3)) == NGX_ERROR || v < 1 ||
	    v > NGX_HTTP_ACME_MAX_RATE) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid rate \"%V\"",
		    arg);
		return NGX_CONF_ERROR;
	}
	if (n == 1)
		return NGX_CONF_OK;
	if (!ngx_http_acme_has_prefix(&arg[1], "burst="))
		goto badparam;
	v = ngx_atoi(arg[1].data + 6, arg[1].len - 6);
	if (v == NGX_ERROR || v < 1 || v > NGX_HTTP_ACME_MAX_BURST) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid burst value "
		    "\"%V\"", &arg[1]);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
badparam:
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
	    &arg[1]);
	return NGX_CONF_ERROR;
}

/* One directive inside acme_issuer { }: cf->handler of that block. */
static char *
ngx_http_acme_issuer_directive(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf)
{
	ngx_http_acme_issuer_t	*iss = conf;
	ngx_str_t		*value = cf->args->elts;
	ngx_uint_t		 i, n = cf->args->nelts - 1;

	(void)dummy;
	for (i = 0; i < NGX_HTTP_ACME_ISSUER_NCMDS; i++) {
		if (ngx_http_acme_str_eq(&value[0],
		    ngx_http_acme_issuer_cmds[i].name))
			break;
	}
	if (i == NGX_HTTP_ACME_ISSUER_NCMDS) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "unknown directive "
		    "\"%V\" in acme_issuer", &value[0]);
		return NGX_CONF_ERROR;
	}
	if (n < ngx_http_acme_issuer_cmds[i].min ||
	    n > ngx_http_acme_issuer_cmds[i].max) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid number of "
		    "arguments in \"%V\" directive", &value[0]);
		return NGX_CONF_ERROR;
	}
	if (ngx_http_acme_issuer_cmds[i].flags & NGX_HTTP_ACME_ONCE) {
		if (iss->seen & ((ngx_uint_t)1 << i)) {
			ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" "
			    "directive is duplicate", &value[0]);
			return NGX_CONF_ERROR;
		}
		iss->seen |= (ngx_uint_t)1 << i;
	}
	if (ngx_http_acme_issuer_cmds[i].check == NULL)
		return NGX_CONF_OK;
	return ngx_http_acme_issuer_cmds[i].check(cf, iss, value + 1, n);
}

/* After the block: uri is there, and no other issuer has its folder. */
static char *
ngx_http_acme_issuer_finish(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_issuer_t *iss)
{
	ngx_http_acme_issuer_t	*other = amcf->issuers.elts;
	ngx_uint_t		 i;

	if (!(iss->seen & (1 << NGX_HTTP_ACME_ISSUER_URI))) {
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "no \"uri\" is "
		    "defined for acme_issuer \"%V\" in %s:%ui", &iss->name,
		    iss->file, iss->line);
		return NGX_CONF_ERROR;
	}
	if (iss->challenge == NGX_HTTP_ACME_DNS_01 && !iss->dns_publisher) {
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "acme_issuer \"%V\" "
		    "has challenge dns-01 but no way to publish the TXT record: "
		    "add \"dns_update\" or \"dns_hook\" in %s:%ui", &iss->name, iss->file,
		    iss->line);
		return NGX_CONF_ERROR;
	}
	for (i = 0; i < amcf->issuers.nelts; i++) {
		if (&other[i] == iss || iss->state_path.len == 0 ||
		    other[i].state_path.len != iss->state_path.len ||
		    ngx_strncmp(other[i].state_path.data, iss->state_path.data,
		    iss->state_path.len) != 0)
			continue;
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "state_path \"%V\" is "
		    "already used by acme_issuer \"%V\" in %s:%ui",
		    &iss->state_path, &other[i].name, iss->file, iss->line);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

char *
ngx_http_acme_issuer_block(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
	ngx_http_acme_main_conf_t	*amcf = conf;
	ngx_http_acme_issuer_t		*iss;
	ngx_str_t			*value = cf->args->elts;
	ngx_conf_t			 save;
	ngx_uint_t			 i;
	char				*rv;

	(void)cmd;
	if (!ngx_http_acme_name_valid(&value[1])) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid issuer name "
		    "\"%V\"", &value[1]);
		return NGX_CONF_ERROR;
	}
	iss = amcf->issuers.elts;
	for (i = 0; i < amcf->issuers.nelts; i++) {
		if (iss[i].name.len == value[1].len &&
		    ngx_strncmp(iss[i].name.data, value[1].data,
		    value[1].len) == 0) {
			ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "duplicate "
			    "acme_issuer \"%V\" (first defined at %s:%ui)",
			    &value[1], iss[i].file, iss[i].line);
			return NGX_CONF_ERROR;
		}
	}
	if ((iss = ngx_array_push(&amcf->issuers)) == NULL)
		return NGX_CONF_ERROR;
	ngx_memzero(iss, sizeof(*iss));
	iss->name = value[1];
	iss->file = cf->conf_file->file.name.data;
	iss->line = cf->conf_file->line;
	amcf->enabled = 1;

	save = *cf;
	cf->handler = ngx_http_acme_issuer_directive;
	cf->handler_conf = (char *)iss;
	rv = ngx_conf_parse(cf, NULL);
	*cf = save;
	if (rv != NGX_CONF_OK)
		return rv;
	return ngx_http_acme_issuer_finish(cf, amcf, iss);
}

/* --------------------------------------------------------- acme_shared_zone */

/* NAME:SIZE, the size with nginx's k/K/m/M suffixes, as the sidecar reads. */
static char *
ngx_http_acme_zone_param(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_str_t *arg)
{
	ngx_str_t	 name, size;
	u_char		*colon;
	ssize_t		 n;

	name.data = arg->data + 5;
	colon = ngx_strlchr(name.data, arg->data + arg->len, ':');
	if (colon == NULL)
		goto badsize;
	name.len = colon - name.data;
	size.data = colon + 1;
	size.len = arg->data + arg->len - size.data;
	if (size.len > 0 && (size.data[size.len - 1] == 'g' ||
	    size.data[size.len - 1] == 'G'))
		goto badsize;
	if ((n = ngx_parse_size(&size)) == NGX_ERROR)
		goto badsize;
	if (!ngx_http_acme_name_valid(&name)) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid zone name "
		    "\"%V\"", &name);
		return NGX_CONF_ERROR;
	}
	if ((size_t)n < ACME_SHM_MIN_SIZE || (size_t)n > ACME_SHM_MAX_SIZE) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "zone \"%V\" must be "
		    "between 32k and 1024m", &name);
		return NGX_CONF_ERROR;
	}
	amcf->zone_name = name;
	amcf->zone_size = (size_t)n;
	return NGX_CONF_OK;
badsize:
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid zone size \"%V\"",
	    arg);
	return NGX_CONF_ERROR;
}

/*
 * owner=USER (a name or a numeric uid): the user the sidecar runs as,
 * whom the workers require to own the segment; root when not given.
 * Whoever can write the file decides which key authorizations and
 * certificates nginx serves, so nobody else is believed.
 */
static char *
ngx_http_acme_zone_owner(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_str_t *arg)
{
	struct passwd	*pw;
	ngx_int_t	 n;
	u_char		*name = arg->data + 6;	/* NUL-terminated */

	if (amcf->shm.owner_set++)
		return "has duplicate \"owner\" parameter";
	if ((pw = getpwnam((char *)name)) != NULL) {
		amcf->shm.owner = pw->pw_uid;
		return NGX_CONF_OK;
	}
	n = ngx_atoi(name, arg->len - 6);
	if (n == NGX_ERROR || (uid_t)n != n) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid owner "
		    "\"%s\", it must be a user name or a numeric uid", name);
		return NGX_CONF_ERROR;
	}
	amcf->shm.owner = (uid_t)n;
	return NGX_CONF_OK;
}

/*
 * One parameter of acme_shared_zone.  path= must be absolute, as the
 * sidecar wants it: the two read it from files that may not share a
 * folder, and must agree on one segment.  group= is for the sidecar,
 * which gives the file that group; nothing to do here.
 */
static char *
ngx_http_acme_zone_arg(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_str_t *arg, ngx_str_t *path, ngx_uint_t *group)
{
	if (ngx_http_acme_has_prefix(arg, "zone=")) {
		if (amcf->zone_name.len != 0)
			return "has duplicate \"zone\" parameter";
		return ngx_http_acme_zone_param(cf, amcf, arg);
	}
	if (ngx_http_acme_has_prefix(arg, "path=")) {
		if (path->data != NULL)
			return "has duplicate \"path\" parameter";
		path->data = arg->data + 5;
		path->len = arg->len - 5;
		if (path->len < 2 || path->data[0] != '/') {
			ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid path "
			    "\"%V\", it must be an absolute file name", path);
			return NGX_CONF_ERROR;
		}
		return NGX_CONF_OK;
	}
	if (ngx_http_acme_has_prefix(arg, "owner=") && arg->len > 6)
		return ngx_http_acme_zone_owner(cf, amcf, arg);
	if (ngx_http_acme_has_prefix(arg, "group=") && arg->len > 6) {
		if ((*group)++)
			return "has duplicate \"group\" parameter";
		return NGX_CONF_OK;
	}
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
	    arg);
	return NGX_CONF_ERROR;
}

/* acme_shared_zone zone=NAME:SIZE [path=FILE] [group=NAME] [owner=USER]; */
char *
ngx_http_acme_shared_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
	ngx_http_acme_main_conf_t	*amcf = conf;
	ngx_str_t			*value = cf->args->elts, path;
	ngx_uint_t			 i, group = 0;
	char				*rv;

	(void)cmd;
	if (amcf->zone_file != NULL)
		return "is duplicate";
	ngx_str_null(&path);
	for (i = 1; i < cf->args->nelts; i++) {
		rv = ngx_http_acme_zone_arg(cf, amcf, &value[i], &path, &group);
		if (rv != NGX_CONF_OK)
			return rv;
	}
	if (amcf->zone_name.len == 0) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" must have "
		    "\"zone\" parameter", &cmd->name);
		return NGX_CONF_ERROR;
	}
	if (path.data != NULL)
		amcf->shm.path = path;	/* NUL-terminated: an argument */
	amcf->zone_file = cf->conf_file->file.name.data;
	amcf->zone_line = cf->conf_file->line;
	amcf->enabled = 1;
	return NGX_CONF_OK;
}

/* --------------------------------------------------------- acme_certificate */

/* key=TYPE of acme_certificate. */
static char *
ngx_http_acme_cert_key(ngx_conf_t *cf, ngx_http_acme_line_t *line,
    ngx_str_t *arg)
{
	ngx_str_t	 type;

	type.data = arg->data + 4;
	type.len = arg->len - 4;
	if (ngx_http_acme_key_type(&type, &line->key_type) == NGX_OK)
		return NGX_CONF_OK;
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid key type \"%V\", it "
	    "must be one of ecdsa, ecdsa:256, ecdsa:384, ecdsa:521, rsa, "
	    "rsa:2048, rsa:3072, rsa:4096", &type);
	return NGX_CONF_ERROR;
}

/*
 * profile=NAME: the ACME profile this certificate asks the CA for.  Only
 * the sidecar acts on it; the CA's word, so a short plain token, checked
 * as the sidecar checks it (conf_profile_valid()).
 */
static char *
ngx_http_acme_cert_profile(ngx_conf_t *cf, ngx_http_acme_line_t *line,
    ngx_str_t *arg)
{
	ngx_str_t	*p = &line->profile;
	size_t		 i;
	u_char		 c;

	p->data = arg->data + 8;
	p->len = arg->len - 8;
	if (p->len == 0) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid empty value "
		    "in \"profile\" parameter");
		return NGX_CONF_ERROR;
	}
	for (i = 0; i < p->len; i++) {
		c = p->data[i];
		if (i >= NGX_HTTP_ACME_MAX_PROFILE ||
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) {
			ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid "
			    "profile \"%V\"", p);
			return NGX_CONF_ERROR;
		}
	}
	return NGX_CONF_OK;
}

/* challenge=TYPE: this certificate's, over its issuer's. */
static char *
ngx_http_acme_cert_challenge(ngx_conf_t *cf, ngx_http_acme_line_t *line,
    ngx_str_t *arg)
{
	ngx_str_t	 type;

	type.data = arg->data + 10;
	type.len = arg->len - 10;
	if ((line->challenge = ngx_http_acme_challenge_type(cf, &type)) ==
	    NGX_ERROR)
		return NGX_CONF_ERROR;
	return NGX_CONF_OK;
}

/* Any other word is an identifier. */
static char *
ngx_http_acme_cert_ident(ngx_conf_t *cf, ngx_http_acme_line_t *line,
    ngx_str_t *arg)
{
	const char	*why;
	ngx_int_t	 rc;

	if (line->listed == NULL) {
		line->listed = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
		if (line->listed == NULL)
			return NGX_CONF_ERROR;
	}
	rc = ngx_http_acme_ident_add(cf->pool, line->listed, arg, &why);
	if (rc == NGX_ERROR)
		return NGX_CONF_ERROR;
	if (rc == NGX_DECLINED) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, why, arg);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

/*
 * A second acme_certificate in a server is the other key family's
 * (nginx-acme issue #170: ECDSA for the clients that take it, RSA for
 * the rest), as a second ssl_certificate would be: an SSL_CTX holds one
 * certificate per family.
 */
static char *
ngx_http_acme_cert_family(ngx_conf_t *cf, ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_line_t *line)
{
	ngx_http_acme_line_t	*other;
	ngx_uint_t		 fam, i;

	fam = ngx_http_acme_key_family(line->key_type);
	for (i = 0; i < ascf->nlines; i++) {
		other = &ascf->lines[i];
		if (ngx_http_acme_key_family(other->key_type) != fam)
			continue;
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"acme_certificate\" "
		    "directive is duplicate: the server has an %s certificate "
		    "from %s:%ui already, and a second one must have the other "
		    "key type", ngx_http_acme_family_names[fam], other->file,
		    other->line);
		return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}

/*
 * acme_certificate ISSUER [IDENT ...] [key=TYPE] [profile=NAME]; in
 * server { }, once per key family.
 */
char *
ngx_http_acme_certificate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
	ngx_http_acme_srv_conf_t	*ascf = conf;
	ngx_http_acme_main_conf_t	*amcf;
	ngx_http_acme_line_t		 l, *line = &l;
	ngx_str_t			*value = cf->args->elts;
	ngx_uint_t			 i, havekey = 0, haveprofile = 0;
	ngx_uint_t			 havechallenge = 0;
	char				*rv;

	(void)cmd;
	if (value[1].len == 0)
		return "has an empty issuer name";
	ngx_memzero(line, sizeof(*line));
	line->issuer = value[1];
	line->challenge = -1;
	line->file = cf->conf_file->file.name.data;
	line->line = cf->conf_file->line;
	for (i = 2; i < cf->args->nelts; i++) {
		if (ngx_http_acme_has_prefix(&value[i], "key=")) {
			if (havekey++)
				return "has duplicate \"key\" parameter";
			rv = ngx_http_acme_cert_key(cf, line, &value[i]);
		} else if (ngx_http_acme_has_prefix(&value[i], "profile=")) {
			if (haveprofile++)
				return "has duplicate \"profile\" parameter";
			rv = ngx_http_acme_cert_profile(cf, line, &value[i]);
		} else if (ngx_http_acme_has_prefix(&value[i], "challenge=")) {
			if (havechallenge++)
				return "has duplicate \"challenge\" parameter";
			rv = ngx_http_acme_cert_challenge(cf, line, &value[i]);
		} else
			rv = ngx_http_acme_cert_ident(cf, line, &value[i]);
		if (rv != NGX_CONF_OK)
			return rv;
	}
	/* One per family, so at most NGX_HTTP_ACME_NFAMILIES. */
	if (ngx_http_acme_cert_family(cf, ascf, line) != NGX_CONF_OK)
		return NGX_CONF_ERROR;
	ascf->lines[ascf->nlines++] = *line;
	amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_acme_module);
	amcf->enabled = 1;
	return NGX_CONF_OK;
}

/* ------------------------------------------------ acme_fallback_certificate */

static void
ngx_http_acme_fallback_cleanup(void *data)
{
	ngx_http_acme_fallback_t	*fb = data;

	ngx_http_acme_ssl_pair_free(&fb->pair);
}

/* acme_fallback_certificate FILE KEYFILE; parsed once, here. */
char *
ngx_http_acme_fallback(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
	ngx_http_acme_srv_conf_t	*ascf = conf;
	ngx_http_acme_fallback_t	*fb;
	ngx_pool_cleanup_t		*cln;
	ngx_str_t			*value = cf->args->elts;

	(void)cmd;
	if (ascf->fallback != NGX_CONF_UNSET_PTR)
		return "is duplicate";
	if ((fb = ngx_pcalloc(cf->pool, sizeof(*fb))) == NULL)
		return NGX_CONF_ERROR;
	fb->cert_file = value[1];
	fb->key_file = value[2];
	if (ngx_conf_full_name(cf->cycle, &fb->cert_file, 1) != NGX_OK ||
	    ngx_conf_full_name(cf->cycle, &fb->key_file, 1) != NGX_OK)
		return NGX_CONF_ERROR;
	if ((cln = ngx_pool_cleanup_add(cf->pool, 0)) == NULL)
		return NGX_CONF_ERROR;
	cln->handler = ngx_http_acme_fallback_cleanup;
	cln->data = fb;
	if (ngx_http_acme_ssl_load(cf, fb) != NGX_OK)
		return NGX_CONF_ERROR;
	ascf->fallback = fb;
	return NGX_CONF_OK;
}

/* -------------------------------------------------- ssl_certificate_cache */

#if (nginx_version < 1027004)

/*
 * nginx 1.27.4 added ssl_certificate_cache to keep parsed variable
 * certificates.  The seed's configuration uses it, so on older nginx it
 * is accepted and checked here, and otherwise ignored: where ssl_certificate
 * is $acme_certificate the module's own per-worker cache does that job.
 */
char *
ngx_http_acme_certificate_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
	ngx_http_acme_srv_conf_t	*ascf = conf;
	ngx_str_t			*value = cf->args->elts, s;
	ngx_uint_t			 i, max = 0;

	(void)cmd;
	if (ascf->cache_set)
		return "is duplicate";
	ascf->cache_set = 1;
	if (ngx_http_acme_str_eq(&value[1], "off")) {
		if (cf->args->nelts == 2)
			return NGX_CONF_OK;
		i = 2;
		goto invalid;
	}
	for (i = 1; i < cf->args->nelts; i++) {
		if (ngx_http_acme_has_prefix(&value[i], "max=")) {
			if (max++ ||
			    ngx_atoi(value[i].data + 4, value[i].len - 4) <= 0)
				goto invalid;
		} else if (ngx_http_acme_has_prefix(&value[i], "inactive=") ||
		    ngx_http_acme_has_prefix(&value[i], "valid=")) {
			s.data = ngx_strlchr(value[i].data,
			    value[i].data + value[i].len, '=') + 1;
			s.len = value[i].data + value[i].len - s.data;
			if (ngx_parse_time(&s, 1) == (time_t)NGX_ERROR)
				goto invalid;
		} else
			goto invalid;
	}
	if (max)
		return NGX_CONF_OK;
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"ssl_certificate_cache\" "
	    "must have \"max\" parameter");
	return NGX_CONF_ERROR;
invalid:
	ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
	    &value[i]);
	return NGX_CONF_ERROR;
}

#endif

/* ----------------------------------------------------------- configuration */

void *
ngx_http_acme_create_main_conf(ngx_conf_t *cf)
{
	ngx_http_acme_main_conf_t	*amcf;

	if ((amcf = ngx_pcalloc(cf->pool, sizeof(*amcf))) == NULL)
		return NULL;
	if (ngx_array_init(&amcf->issuers, cf->pool, 4,
	    sizeof(ngx_http_acme_issuer_t)) != NGX_OK ||
	    ngx_array_init(&amcf->certs, cf->pool, 4,
	    sizeof(ngx_http_acme_cert_t *)) != NGX_OK ||
	    ngx_array_init(&amcf->addrs, cf->pool, 4,
	    sizeof(ngx_http_acme_addr_t)) != NGX_OK)
		return NULL;
	return amcf;
}

static void
ngx_http_acme_certs_cleanup(void *data)
{
	ngx_http_acme_main_conf_t	*amcf = data;
	ngx_http_acme_cert_t		**cert = amcf->certs.elts;
	ngx_uint_t			 i;

	for (i = 0; i < amcf->certs.nelts; i++)
		ngx_http_acme_ssl_pair_free(&cert[i]->pair);
}

/* The zone defaults to the sidecar's: ngx_acme_shared in /dev/shm. */
char *
ngx_http_acme_init_main_conf(ngx_conf_t *cf, void *conf)
{
	ngx_http_acme_main_conf_t	*amcf = conf;
	ngx_pool_cleanup_t		*cln;
	ngx_str_t			*path = &amcf->shm.path;

	if (amcf->zone_name.len == 0) {
		ngx_str_set(&amcf->zone_name, NGX_HTTP_ACME_DEFAULT_ZONE);
		amcf->zone_size = NGX_HTTP_ACME_DEFAULT_SIZE;
	}
	if (path->data == NULL) {
		path->len = sizeof(ACME_SHM_DEFAULT_DIR "/") - 1 +
		    amcf->zone_name.len;
		if ((path->data = ngx_pnalloc(cf->pool, path->len + 1)) == NULL)
			return NGX_CONF_ERROR;
		ngx_sprintf(path->data, ACME_SHM_DEFAULT_DIR "/%V%Z",
		    &amcf->zone_name);
	}
	if ((cln = ngx_pool_cleanup_add(cf->pool, 0)) == NULL)
		return NGX_CONF_ERROR;
	cln->handler = ngx_http_acme_certs_cleanup;
	cln->data = amcf;
	return NGX_CONF_OK;
}

void *
ngx_http_acme_create_srv_conf(ngx_conf_t *cf)
{
	ngx_http_acme_srv_conf_t	*ascf;

	if ((ascf = ngx_pcalloc(cf->pool, sizeof(*ascf))) == NULL)
		return NULL;
	ascf->fallback = NGX_CONF_UNSET_PTR;
	return ascf;
}

/* The server's names as identifiers, when acme_certificate lists none. */
static ngx_int_t
ngx_http_acme_server_idents(ngx_conf_t *cf, ngx_http_acme_line_t *line,
    ngx_array_t *idents)
{
	ngx_http_core_srv_conf_t	*cscf;
	ngx_http_server_name_t		*sn;
	ngx_uint_t			 i;
	ngx_str_t			 name;
	const char			*why;
	u_char				 msg[NGX_MAX_CONF_ERRSTR], *p;
	ngx_int_t			 rc;

	cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
	sn = cscf->server_names.elts;
	for (i = 0; i < cscf->server_names.nelts; i++) {
		name = sn[i].name;
		/* "" and "_" name no host, as the sidecar reads them. */
		if (name.len == 0 || (name.len == 1 && name.data[0] == '_'))
			continue;
		why = "regular expression \"~%V\" cannot be an identifier";
		rc = NGX_DECLINED;
#if (NGX_PCRE)
		if (sn[i].regex == NULL)
#endif
			rc = ngx_http_acme_ident_add(cf->pool, idents, &name,
			    &why);
		if (rc == NGX_ERROR)
			return NGX_ERROR;
		if (rc == NGX_DECLINED) {
			p = ngx_snprintf(msg, sizeof(msg), why, &name);
			ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "%*s in "
			    "server_name, which acme_certificate takes its "
			    "identifiers from, in %s:%ui", (size_t)(p - msg),
			    msg, line->file, line->line);
			return NGX_ERROR;
		}
	}
	if (idents->nelts > 0)
		return NGX_OK;
	ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "acme_certificate lists no "
	    "identifiers and its server has no server_name that can be one in "
	    "%s:%ui", line->file, line->line);
	return NGX_ERROR;
}

static ngx_int_t
ngx_http_acme_idents_eq(ngx_array_t *a, ngx_array_t *b)
{
	ngx_str_t	*x = a->elts, *y = b->elts;
	ngx_uint_t	 i;

	if (a->nelts != b->nelts)
		return 0;
	for (i = 0; i < a->nelts; i++) {
		if (x[i].len != y[i].len ||
		    ngx_strncmp(x[i].data, y[i].data, x[i].len) != 0)
			return 0;
	}
	return 1;
}

static ngx_int_t
ngx_http_acme_str_same(ngx_str_t *a, ngx_str_t *b)
{
	return a->len == b->len && ngx_strncmp(a->data, b->data, a->len) == 0;
}

/*
 * The shared entry for this line's id.  Two servers may name the same
 * certificate (one name on two ports), but not two certificates with one
 * id: the segment holds one.
 */
static ngx_http_acme_cert_t *
ngx_http_acme_cert_get(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_line_t *line, ngx_array_t *idents, ngx_str_t *id)
{
	ngx_http_acme_cert_t	**certs = amcf->certs.elts, *c, **slot;
	ngx_uint_t		 i;

	for (i = 0; i < amcf->certs.nelts; i++) {
		c = certs[i];
		if (!ngx_http_acme_str_same(&c->id, id))
			continue;
		if (ngx_http_acme_str_same(&c->issuer, &line->issuer) &&
		    ngx_http_acme_str_same(&c->profile, &line->profile) &&
		    c->challenge == line->challenge &&
		    ngx_http_acme_idents_eq(c->idents, idents))
			return c;
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "acme_certificate "
		    "with id \"%V\" differs from the one in %s:%ui in %s:%ui",
		    id, c->file, c->line, line->file, line->line);
		return NULL;
	}
	if ((c = ngx_pcalloc(cf->pool, sizeof(*c))) == NULL ||
	    (slot = ngx_array_push(&amcf->certs)) == NULL)
		return NULL;
	c->id = *id;
	c->issuer = line->issuer;
	c->idents = idents;
	c->profile = line->profile;
	c->challenge = line->challenge;
	c->family = ngx_http_acme_key_family(line->key_type);
	c->file = line->file;
	c->line = line->line;
	*slot = c;
	return c;
}

static ngx_http_acme_issuer_t *
ngx_http_acme_issuer_find(ngx_http_acme_main_conf_t *amcf, ngx_str_t *name)
{
	ngx_http_acme_issuer_t	*iss = amcf->issuers.elts;
	ngx_uint_t		 i;

	for (i = 0; i < amcf->issuers.nelts; i++) {
		if (iss[i].name.len == name->len &&
		    ngx_strncmp(iss[i].name.data, name->data, name->len) == 0)
			return &iss[i];
	}
	return NULL;
}

/*
 * As the sidecar's conf_cert_check_challenge(): a wildcard only over
 * dns-01, and dns-01 only with a way to publish the record.
 */
static ngx_int_t
ngx_http_acme_line_challenge(ngx_conf_t *cf, ngx_http_acme_issuer_t *iss,
    ngx_http_acme_line_t *line, ngx_array_t *idents)
{
	ngx_str_t	*id = idents->elts;
	ngx_uint_t	 i, t = iss->challenge;

	if (line->challenge != -1)
		t = (ngx_uint_t)line->challenge;
	if (t == NGX_HTTP_ACME_DNS_01) {
		if (iss->dns_publisher)
			return NGX_OK;
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "acme_certificate has "
		    "challenge dns-01 but acme_issuer \"%V\" has no way to "
		    "publish the TXT record: add \"dns_update\" or "
		    "\"dns_hook\" to it in %s:%ui",
		    &iss->name, line->file, line->line);
		return NGX_ERROR;
	}
	for (i = 0; i < idents->nelts; i++) {
		if (id[i].len < 2 || id[i].data[0] != '*')
			continue;
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "wildcard identifier "
		    "\"%V\" needs challenge dns-01: %s cannot validate "
		    "wildcard identifiers in %s:%ui", &id[i],
		    t == NGX_HTTP_ACME_TLS_ALPN_01 ? "tls-alpn-01" : "http-01",
		    line->file, line->line);
		return NGX_ERROR;
	}
	return NGX_OK;
}

/* One acme_certificate of a server, once the server is read whole. */
static ngx_int_t
ngx_http_acme_merge_line(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_line_t *line)
{
	ngx_http_acme_issuer_t	*iss;
	ngx_array_t		*idents;
	ngx_str_t		 id;

	if ((iss = ngx_http_acme_issuer_find(amcf, &line->issuer)) == NULL) {
		ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "unknown acme_issuer "
		    "\"%V\" in %s:%ui", &line->issuer, line->file, line->line);
		return NGX_ERROR;
	}
	idents = line->listed;
	if (idents == NULL) {
		idents = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
		if (idents == NULL ||
		    ngx_http_acme_server_idents(cf, line, idents) != NGX_OK)
			return NGX_ERROR;
	}
	if (ngx_http_acme_line_challenge(cf, iss, line, idents) != NGX_OK)
		return NGX_ERROR;
	if (ngx_http_acme_cert_id(cf->pool, idents, line->key_type,
	    &id) != NGX_OK)
		return NGX_ERROR;
	line->cert = ngx_http_acme_cert_get(cf, amcf, line, idents, &id);
	return line->cert != NULL ? NGX_OK : NGX_ERROR;
}

/*
 * Runs once the whole http{} block is read, so issuers defined after the
 * server and server_name written after acme_certificate are all known.
 */
char *
ngx_http_acme_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
	ngx_http_acme_srv_conf_t	*prev = parent, *conf = child;
	ngx_http_acme_main_conf_t	*amcf;
	ngx_uint_t			 i;

	ngx_conf_merge_ptr_value(conf->fallback, prev->fallback, NULL);
	amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_acme_module);
	conf->amcf = amcf;
	for (i = 0; i < conf->nlines; i++) {
		if (ngx_http_acme_merge_line(cf, amcf, &conf->lines[i]) !=
		    NGX_OK)
			return NGX_CONF_ERROR;
	}
	return NGX_CONF_OK;
}
