/*
 * ngx_http_acme_module: the module itself.  Its directives, the
 * $acme_certificate and $acme_certificate_key variables, the fast path's
 * installation, and the HTTP-01 responder.
 *
 * The HTTP-01 responder runs in the post-read phase, before any rewrite
 * phase, so a port-80 server whose only location says "return 404" (or
 * one that redirects everything to https) still answers the CA.
 */
#include "ngx_http_acme_module.h"

/* What $acme_certificate and $acme_certificate_key hold for a request. */
typedef struct {
	ngx_str_t	 value[2];	/* certificate, key */
} ngx_http_acme_var_ctx_t;

static ngx_int_t	 ngx_http_acme_add_variables(ngx_conf_t *);
static ngx_int_t	 ngx_http_acme_postconfiguration(ngx_conf_t *);
static ngx_int_t	 ngx_http_acme_init_process(ngx_cycle_t *);
static void		 ngx_http_acme_exit_process(ngx_cycle_t *);

static ngx_command_t ngx_http_acme_commands[] = {
	{ ngx_string("acme_issuer"),
	  NGX_HTTP_MAIN_CONF | NGX_CONF_BLOCK | NGX_CONF_TAKE1,
	  ngx_http_acme_issuer_block, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
	{ ngx_string("acme_shared_zone"),
	  NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1234,
	  ngx_http_acme_shared_zone, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },
	{ ngx_string("acme_certificate"),
	  NGX_HTTP_SRV_CONF | NGX_CONF_1MORE,
	  ngx_http_acme_certificate, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
	{ ngx_string("acme_fallback_certificate"),
	  NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_CONF_TAKE2,
	  ngx_http_acme_fallback, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
#if (nginx_version < 1027004)
	{ ngx_string("ssl_certificate_cache"),
	  NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_CONF_TAKE123,
	  ngx_http_acme_certificate_cache, NGX_HTTP_SRV_CONF_OFFSET, 0, NULL },
#endif
	ngx_null_command
};

static ngx_http_module_t ngx_http_acme_module_ctx = {
	ngx_http_acme_add_variables,		/* preconfiguration */
	ngx_http_acme_postconfiguration,	/* postconfiguration */
	ngx_http_acme_create_main_conf,		/* create main conf */
	ngx_http_acme_init_main_conf,		/* init main conf */
	ngx_http_acme_create_srv_conf,		/* create server conf */
	ngx_http_acme_merge_srv_conf,		/* merge server conf */
	NULL,					/* create location conf */
	NULL					/* merge location conf */
};

ngx_module_t ngx_http_acme_module = {
	NGX_MODULE_V1,
	&ngx_http_acme_module_ctx,		/* module context */
	ngx_http_acme_commands,			/* module directives */
	NGX_HTTP_MODULE,			/* module type */
	NULL,					/* init master */
	NULL,					/* init module */
	ngx_http_acme_init_process,		/* init process */
	NULL,					/* init thread */
	NULL,					/* exit thread */
	ngx_http_acme_exit_process,		/* exit process */
	NULL,					/* exit master */
	NGX_MODULE_V1_PADDING
};

/* ------------------------------------------------------------- variables */

static ngx_int_t
ngx_http_acme_data_value(ngx_pool_t *pool, ngx_str_t *pem, ngx_str_t *out)
{
	out->len = sizeof("data:") - 1 + pem->len;
	if ((out->data = ngx_pnalloc(pool, out->len + 1)) == NULL)
		return NGX_ERROR;
	ngx_sprintf(out->data, "data:%V%Z", pem);
	return NGX_OK;
}

/*
 * Both values at once, from one consistent read, so a certificate and a
 * key from two different generations never meet in one handshake.  A
 * server with an ECDSA and an RSA certificate has the first one written
 * here: nginx loads one pair per variable; the fast path serves both.
 */
static ngx_int_t
ngx_http_acme_variable_fill(ngx_http_request_t *r,
    ngx_http_acme_var_ctx_t *ctx)
{
	ngx_http_acme_main_conf_t	*amcf;
	ngx_http_acme_srv_conf_t	*ascf;
	ngx_http_acme_cert_t		*cert;
	ngx_http_acme_shm_cert_t	 found;
	ngx_http_acme_status_e		 st = NGX_HTTP_ACME_UNMAPPED;
	ngx_log_t			*log = r->connection->log;
	ngx_uint_t			 level;

	amcf = ngx_http_get_module_main_conf(r, ngx_http_acme_module);
	ascf = ngx_http_get_module_srv_conf(r, ngx_http_acme_module);
	if (ascf->nlines == 0) {
		if (ngx_http_acme_shm_log_allowed(&amcf->shm))
			ngx_log_error(NGX_LOG_ERR, log, 0, "acme: "
			    "$acme_certificate is empty in a server without "
			    "acme_certificate");
		return NGX_OK;
	}
	cert = ascf->lines[0].cert;
	if (ngx_http_acme_shm_ready(&amcf->shm, log) == NGX_OK)
		st = ngx_http_acme_shm_cert(&amcf->shm, &cert->id, NULL,
		    r->pool, &found);
	if (st == NGX_HTTP_ACME_FOUND) {
		if (ngx_http_acme_data_value(r->pool, &found.chain,
		    &ctx->value[0]) != NGX_OK ||
		    ngx_http_acme_data_value(r->pool, &found.key,
		    &ctx->value[1]) != NGX_OK)
			return NGX_ERROR;
		return NGX_OK;
	}
	if (st == NGX_HTTP_ACME_NOMEM)
		return NGX_ERROR;
	level = ascf->fallback != NULL ? NGX_LOG_WARN : NGX_LOG_ERR;
	if (ngx_http_acme_shm_log_allowed(&amcf->shm))
		ngx_log_error(level, log, 0, "acme: no certificate \"%V\" in "
		    "shared zone \"%s\" (%s)%s", &cert->id,
		    amcf->shm.path.data, ngx_http_acme_status_text(st),
		    ascf->fallback != NULL ? "; serving the fallback" : "");
	if (ascf->fallback != NULL) {
		ctx->value[0] = ascf->fallback->cert_value;
		ctx->value[1] = ascf->fallback->key_value;
	}
	return NGX_OK;
}

/* data is 0 for $acme_certificate, 1 for $acme_certificate_key. */
static ngx_int_t
ngx_http_acme_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
	ngx_http_acme_var_ctx_t	*ctx;

	ctx = ngx_http_get_module_ctx(r, ngx_http_acme_module);
	if (ctx == NULL) {
		if ((ctx = ngx_pcalloc(r->pool, sizeof(*ctx))) == NULL ||
		    ngx_http_acme_variable_fill(r, ctx) != NGX_OK)
			return NGX_ERROR;
		ngx_http_set_ctx(r, ctx, ngx_http_acme_module);
	}
	v->data = ctx->value[data].data;
	v->len = ctx->value[data].len;
	v->valid = 1;
	v->no_cacheable = 0;
	v->not_found = 0;
	return NGX_OK;
}

static ngx_http_variable_t ngx_http_acme_vars[] = {
	{ ngx_string("acme_certificate"), NULL, ngx_http_acme_variable, 0,
	  NGX_HTTP_VAR_NOCACHEABLE, 0 },
	{ ngx_string("acme_certificate_key"), NULL, ngx_http_acme_variable, 1,
	  NGX_HTTP_VAR_NOCACHEABLE, 0 },
	ngx_http_null_variable
};

static ngx_int_t
ngx_http_acme_add_variables(ngx_conf_t *cf)
{
	ngx_http_variable_t	*var, *v;

	for (v = ngx_http_acme_vars; v->name.len; v++) {
		if ((var = ngx_http_add_variable(cf, &v->name, v->flags)) ==
		    NULL)
			return NGX_ERROR;
		var->get_handler = v->get_handler;
		var->data = v->data;
	}
	return NGX_OK;
}

/* ------------------------------------------------------------- HTTP-01 */

/* RFC 8555 8.3: a token is base64url, without padding. */
static ngx_int_t
ngx_http_acme_token_valid(ngx_str_t *t)
{
	size_t	 i;
	u_char	 c;

	if (t->len == 0 || t->len > 256)
		return 0;
	for (i = 0; i < t->len; i++) {
		c = t->data[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

static ngx_int_t
ngx_http_acme_challenge_send(ngx_http_request_t *r, ngx_str_t *keyauth)
{
	ngx_buf_t	*b;
	ngx_chain_t	 out;
	ngx_int_t	 rc;

	if ((rc = ngx_http_discard_request_body(r)) != NGX_OK)
		return rc;
	r->headers_out.status = NGX_HTTP_OK;
	r->headers_out.content_length_n = keyauth->len;
	ngx_str_set(&r->headers_out.content_type, "text/plain");
	r->headers_out.content_type_len = r->headers_out.content_type.len;
	r->headers_out.content_type_lowcase = NULL;
	if (r->method == NGX_HTTP_HEAD)
		r->header_only = 1;
	rc = ngx_http_send_header(r);
	if (rc == NGX_ERROR || rc > NGX_OK || r->header_only)
		return rc;
	if ((b = ngx_calloc_buf(r->pool)) == NULL)
		return NGX_ERROR;
	b->pos = keyauth->data;
	b->last = keyauth->data + keyauth->len;
	b->memory = 1;
	b->last_buf = (r == r->main) ? 1 : 0;
	b->last_in_chain = 1;
	out.buf = b;
	out.next = NULL;
	return ngx_http_output_filter(r, &out);
}

/*
 * GET or HEAD /.well-known/acme-challenge/TOKEN with TOKEN in the
 * segment: 200 and the key authorization.  Anything else goes on
 * through nginx as if this module were not there.
 */
static ngx_int_t
ngx_http_acme_challenge_handler(ngx_http_request_t *r)
{
	ngx_http_acme_main_conf_t	*amcf;
	ngx_http_acme_status_e		 st;
	ngx_str_t			 token, keyauth;
	size_t				 plen;

	plen = sizeof(ACME_SHM_CHALLENGE_PREFIX) - 1;
	if (r->uri.len <= plen || ngx_strncmp(r->uri.data,
	    ACME_SHM_CHALLENGE_PREFIX, plen) != 0 ||
	    !(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)))
		return NGX_DECLINED;
	token.data = r->uri.data + plen;
	token.len = r->uri.len - plen;
	if (!ngx_http_acme_token_valid(&token))
		return NGX_DECLINED;

	amcf = ngx_http_get_module_main_conf(r, ngx_http_acme_module);
	st = NGX_HTTP_ACME_UNMAPPED;
	if (ngx_http_acme_shm_ready(&amcf->shm, r->connection->log) == NGX_OK)
		st = ngx_http_acme_shm_token(&amcf->shm, &token, r->pool,
		    &keyauth);
	if (st == NGX_HTTP_ACME_NOMEM)
		return NGX_HTTP_INTERNAL_SERVER_ERROR;
	if (st != NGX_HTTP_ACME_FOUND) {
		ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "acme: "
		    "challenge token \"%V\": %s", &token,
		    ngx_http_acme_status_text(st));
		return NGX_DECLINED;
	}
	ngx_http_finalize_request(r, ngx_http_acme_challenge_send(r,
	    &keyauth));
	return NGX_DONE;
}

/* ------------------------------------------------------------- fast path */

static ngx_int_t
ngx_http_acme_is_var(ngx_str_t *s, const char *name)
{
	u_char	 buf[64];
	size_t	 len;

	len = ngx_sprintf(buf, "$%s", name) - buf;
	if (s->len == len && ngx_strncmp(s->data, buf, len) == 0)
		return 1;
	len = ngx_sprintf(buf, "${%s}", name) - buf;
	return s->len == len && ngx_strncmp(s->data, buf, len) == 0;
}

/*
 * Where this server's only certificate is $acme_certificate with
 * $acme_certificate_key, put our callback in place of nginx's, which
 * would evaluate the variables and parse PEM on every handshake.  That
 * one pair of lines serves every acme_certificate of the server (an
 * ECDSA and an RSA one).  Any other combination (a static certificate
 * beside it, say) stays with nginx's callback and the variables.
 */
static void
ngx_http_acme_fast_path(ngx_conf_t *cf, ngx_http_core_srv_conf_t *cscf)
{
	ngx_http_acme_srv_conf_t	*ascf;
	ngx_http_ssl_srv_conf_t		*sscf;
	ngx_str_t			*cert, *key;

	ascf = cscf->ctx->srv_conf[ngx_http_acme_module.ctx_index];
	sscf = cscf->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
	if (ascf->nlines == 0 || sscf->ssl.ctx == NULL ||
	    sscf->certificates == NULL || sscf->certificate_keys == NULL ||
	    sscf->certificates->nelts != 1 ||
	    sscf->certificate_keys->nelts != 1)
		return;
	cert = sscf->certificates->elts;
	key = sscf->certificate_keys->elts;
	if (!ngx_http_acme_is_var(cert, "acme_certificate") ||
	    !ngx_http_acme_is_var(key, "acme_certificate_key"))
		return;
	ascf->ssl_ctx = sscf->ssl.ctx;
	SSL_CTX_set_cert_cb(sscf->ssl.ctx, ngx_http_acme_ssl_cert_cb, ascf);
	ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cf->log, 0,
	    "acme: fast path for certificate \"%V\"",
	    &ascf->lines[0].cert->id);
}

static ngx_int_t
ngx_http_acme_postconfiguration(ngx_conf_t *cf)
{
	ngx_http_acme_main_conf_t	*amcf;
	ngx_http_core_main_conf_t	*cmcf;
	ngx_http_core_srv_conf_t	**cscfp;
	ngx_http_handler_pt		*h;
	ngx_uint_t			 s;

	amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_acme_module);
	if (!amcf->enabled)
		return NGX_OK;
	cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
	h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
	if (h == NULL)
		return NGX_ERROR;
	*h = ngx_http_acme_challenge_handler;
	cscfp = cmcf->servers.elts;
	for (s = 0; s < cmcf->servers.nelts; s++)
		ngx_http_acme_fast_path(cf, cscfp[s]);
	if (ngx_http_acme_ssl_alpn_init(cf, amcf) != NGX_OK)
		return NGX_ERROR;
	return ngx_http_acme_ssl_addresses(cf, amcf);
}

/* ------------------------------------------------------------- processes */

static ngx_int_t
ngx_http_acme_init_process(ngx_cycle_t *cycle)
{
	ngx_http_acme_main_conf_t	*amcf;

	if (ngx_process != NGX_PROCESS_WORKER &&
	    ngx_process != NGX_PROCESS_SINGLE)
		return NGX_OK;
	amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_acme_module);
	if (amcf != NULL && amcf->enabled)
		ngx_http_acme_shm_init(&amcf->shm, cycle->log);
	return NGX_OK;
}

static void
ngx_http_acme_exit_process(ngx_cycle_t *cycle)
{
	ngx_http_acme_main_conf_t	*amcf;

	amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_acme_module);
	if (amcf != NULL)
		ngx_http_acme_shm_close(&amcf->shm);
}
