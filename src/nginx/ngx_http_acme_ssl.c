/*
 * The fast path: a certificate callback that hands OpenSSL objects it
 * parsed once, instead of nginx's variable path, which evaluates
 * $acme_certificate and parses PEM again on every full handshake.
 *
 * Each worker keeps, per certificate id, the parsed leaf, chain and key
 * with the serial they came from and the generation they were last seen
 * in.  A handshake in an unchanged generation costs one atomic load; a
 * new generation costs one lookup; only a new serial costs a parse, of
 * bytes copied out of the segment and confirmed by the generation first.
 *
 * The parsed certificate then goes into the server's SSL_CTX, in this
 * worker, so that new connections start with it exactly as they would
 * with a static certificate, and the callback finds nothing left to do.
 */
#include "ngx_http_acme_module.h"

/* Encrypted keys have no place here: never prompt on a terminal. */
static int
ngx_http_acme_ssl_no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

void
ngx_http_acme_ssl_pair_free(ngx_http_acme_pair_t *pair)
{
	X509_free(pair->x509);
	if (pair->chain != NULL)
		sk_X509_pop_free(pair->chain, X509_free);
	EVP_PKEY_free(pair->pkey);
	pair->x509 = NULL;
	pair->chain = NULL;
	pair->pkey = NULL;
}

/* The leaf, then every further certificate in cbio as the chain. */
static ngx_int_t
ngx_http_acme_ssl_read_chain(BIO *cbio, ngx_http_acme_pair_t *pair)
{
	X509		*x;
	u_long		 n;

	pair->x509 = PEM_read_bio_X509_AUX(cbio, NULL,
	    ngx_http_acme_ssl_no_password, NULL);
	if (pair->x509 == NULL)
		return NGX_ERROR;
	if ((pair->chain = sk_X509_new_null()) == NULL)
		return NGX_ERROR;
	for (;;) {
		x = PEM_read_bio_X509(cbio, NULL,
		    ngx_http_acme_ssl_no_password, NULL);
		if (x == NULL)
			break;
		if (sk_X509_push(pair->chain, x) == 0) {
			X509_free(x);
			return NGX_ERROR;
		}
	}
	/* The end of the input is the one error that is not one. */
	n = ERR_peek_last_error();
	if (ERR_GET_LIB(n) != ERR_LIB_PEM ||
	    ERR_GET_REASON(n) != PEM_R_NO_START_LINE)
		return NGX_ERROR;
	ERR_clear_error();
	return NGX_OK;
}

/*
 * Parse a full chain and its key into pair.  On failure pair is empty
 * and the OpenSSL error queue says why.
 */
static ngx_int_t
ngx_http_acme_ssl_parse(BIO *cbio, BIO *kbio, ngx_http_acme_pair_t *pair)
{
	ngx_memzero(pair, sizeof(*pair));
	if (ngx_http_acme_ssl_read_chain(cbio, pair) != NGX_OK)
		goto fail;
	pair->pkey = PEM_read_bio_PrivateKey(kbio, NULL,
	    ngx_http_acme_ssl_no_password, NULL);
	if (pair->pkey == NULL)
		goto fail;
	if (X509_check_private_key(pair->x509, pair->pkey) != 1)
		goto fail;
	return NGX_OK;
fail:
	ngx_http_acme_ssl_pair_free(pair);
	return NGX_ERROR;
}

static ngx_int_t
ngx_http_acme_ssl_parse_pem(ngx_str_t *chain, ngx_str_t *key,
    ngx_http_acme_pair_t *pair)
{
	BIO		*cbio, *kbio;
	ngx_int_t	 rc = NGX_ERROR;

	cbio = BIO_new_mem_buf(chain->data, (int)chain->len);
	kbio = BIO_new_mem_buf(key->data, (int)key->len);
	if (cbio != NULL && kbio != NULL)
		rc = ngx_http_acme_ssl_parse(cbio, kbio, pair);
	BIO_free(cbio);
	BIO_free(kbio);
	return rc;
}

/* The reason OpenSSL last gave, for a configuration error message. */
static const char *
ngx_http_acme_ssl_reason(void)
{
	const char	*s;

	s = ERR_reason_error_string(ERR_peek_last_error());
	ERR_clear_error();
	return s != NULL ? s : "unknown error";
}

/*
 * FILE's bytes as "data:" + PEM: the form nginx's variable path loads
 * from memory, so workers need no access to the file.
 */
static ngx_int_t
ngx_http_acme_ssl_read(ngx_conf_t *cf, ngx_str_t *file, ngx_str_t *out)
{
	ngx_file_info_t	 fi;
	ngx_fd_t	 fd;
	ssize_t		 n;
	size_t		 size;
	ngx_int_t	 rc = NGX_ERROR;

	fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
	if (fd == NGX_INVALID_FILE) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
		    ngx_open_file_n " \"%s\" failed", file->data);
		return NGX_ERROR;
	}
	if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
		    ngx_fd_info_n " \"%s\" failed", file->data);
		goto out;
	}
	size = (size_t)ngx_file_size(&fi);
	if (size == 0 || size > NGX_HTTP_ACME_MAX_PEM) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%s\" is empty or "
		    "larger than %uz bytes", file->data,
		    (size_t)NGX_HTTP_ACME_MAX_PEM);
		goto out;
	}
	out->len = sizeof("data:") - 1 + size;
	if ((out->data = ngx_pnalloc(cf->pool, out->len + 1)) == NULL)
		goto out;
	ngx_memcpy(out->data, "data:", sizeof("data:") - 1);
	n = ngx_read_fd(fd, out->data + sizeof("data:") - 1, size);
	if (n == -1 || (size_t)n != size) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
		    ngx_read_fd_n " \"%s\" failed", file->data);
		goto out;
	}
	out->data[out->len] = '\0';
	rc = NGX_OK;
out:
	ngx_close_file(fd);
	return rc;
}

/* acme_fallback_certificate: read and check both files at start. */
ngx_int_t
ngx_http_acme_ssl_load(ngx_conf_t *cf, ngx_http_acme_fallback_t *fb)
{
	ngx_str_t	 chain, key;

	if (ngx_http_acme_ssl_read(cf, &fb->cert_file, &fb->cert_value) !=
	    NGX_OK ||
	    ngx_http_acme_ssl_read(cf, &fb->key_file, &fb->key_value) !=
	    NGX_OK)
		return NGX_ERROR;
	chain.data = fb->cert_value.data + sizeof("data:") - 1;
	chain.len = fb->cert_value.len - (sizeof("data:") - 1);
	key.data = fb->key_value.data + sizeof("data:") - 1;
	key.len = fb->key_value.len - (sizeof("data:") - 1);
	if (ngx_http_acme_ssl_parse_pem(&chain, &key, &fb->pair) != NGX_OK) {
		ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "cannot load "
		    "certificate \"%s\" with key \"%s\" (%s)",
		    fb->cert_file.data, fb->key_file.data,
		    ngx_http_acme_ssl_reason());
		return NGX_ERROR;
	}
	return NGX_OK;
}

/* When x expires, on ngx_time()'s clock; 0 when it cannot be told. */
static time_t
ngx_http_acme_ssl_not_after(X509 *x)
{
	int	 days, secs;

	if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1) {
		ERR_clear_error();
		return 0;
	}
	return ngx_time() + (time_t)days * 86400 + secs;
}

/* Whether the parsed pair may still be served in place of a newer entry. */
static ngx_int_t
ngx_http_acme_ssl_still_valid(ngx_http_acme_cert_t *cert)
{
	return cert->pair.x509 != NULL && ngx_time() < cert->not_after;
}

/*
 * Replace the cached objects with a parse of the entry just read.  When
 * it does not parse, the pair held so far stays, to be served for as
 * long as it is valid; the failure is logged once per serial.
 */
static ngx_int_t
ngx_http_acme_ssl_reparse(ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_cert_t *cert, ngx_http_acme_shm_cert_t *found,
    ngx_log_t *log)
{
	ngx_http_acme_pair_t	 pair;

	if (ngx_http_acme_ssl_parse_pem(&found->chain, &found->key,
	    &pair) != NGX_OK) {
		/*
		 * Equal serials mean equal bytes, so parsing it again would
		 * fail again: try once a second at most, and log it once.
		 */
		cert->bad_retry = ngx_time() + 1;
		if (cert->have_bad && cert->bad_serial == found->serial) {
			ERR_clear_error();
			return NGX_ERROR;
		}
		cert->bad_serial = found->serial;
		cert->have_bad = 1;
		if (ngx_http_acme_ssl_still_valid(cert))
			ngx_ssl_error(NGX_LOG_ERR, log, 0, "acme: certificate "
			    "\"%V\" (serial %uL) in shared zone \"%s\" does "
			    "not parse; serving serial %uL until it expires",
			    &cert->id, found->serial, amcf->shm.path.data,
			    cert->serial);
		else
			ngx_ssl_error(NGX_LOG_ERR, log, 0, "acme: certificate "
			    "\"%V\" (serial %uL) in shared zone \"%s\" does "
			    "not parse", &cert->id, found->serial,
			    amcf->shm.path.data);
		return NGX_ERROR;
	}
	ngx_http_acme_ssl_pair_free(&cert->pair);
	cert->pair = pair;
	cert->not_after = ngx_http_acme_ssl_not_after(pair.x509);
	cert->serial = found->serial;
	cert->have_bad = 0;
	ngx_log_error(NGX_LOG_INFO, log, 0, "acme: loaded certificate \"%V\" "
	    "serial %uL", &cert->id, found->serial);
	return NGX_OK;
}

/*
 * Whether the entry found is what cert holds now, parsing it if it is
 * new.  A bad new serial is parsed again once a second at most.
 */
static ngx_int_t
ngx_http_acme_ssl_take(ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_cert_t *cert, ngx_http_acme_shm_cert_t *found,
    ngx_log_t *log)
{
	if (found->chain.data == NULL)
		return NGX_OK;		/* the serial we hold, unchanged */
	if (cert->have_bad && cert->bad_serial == found->serial &&
	    ngx_time() < cert->bad_retry)
		return NGX_ERROR;
	return ngx_http_acme_ssl_reparse(amcf, cert, found, log);
}

/*
 * The current certificate of id, parsed; NULL when the segment has none
 * that works, and *stp says why.
 */
ngx_http_acme_pair_t *
ngx_http_acme_ssl_current(ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_cert_t *cert, ngx_log_t *log, ngx_http_acme_status_e *stp)
{
	ngx_http_acme_shm_t		*shm = &amcf->shm;
	ngx_http_acme_shm_cert_t	 found;
	ngx_http_acme_status_e		 st;
	ngx_pool_t			*pool;
	const uint64_t			*known = NULL;
	ngx_int_t			 rc = NGX_ERROR;

	/*
	 * A file cut short under the mapping (see ngx_http_acme_shm.c) still
	 * leaves what was parsed from it before: what the sidecar published
	 * last, as when a writer lays the file out again below.
	 */
	if (ngx_http_acme_shm_ready(shm, log) != NGX_OK) {
		if (cert->pair.x509 != NULL && shm->base != NULL &&
		    cert->epoch == shm->epoch)
			return &cert->pair;
		*stp = NGX_HTTP_ACME_UNMAPPED;
		return NULL;
	}
	/*
	 * Nothing was published since this certificate was last seen (and
	 * a pair kept past a bad serial has not expired since).
	 */
	if (cert->pair.x509 != NULL && cert->epoch == shm->epoch &&
	    ngx_http_acme_shm_generation(shm) == cert->generation &&
	    (!cert->stale || ngx_time() < cert->not_after))
		return &cert->pair;

	if ((pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log)) == NULL) {
		*stp = NGX_HTTP_ACME_NOMEM;
		return NULL;
	}
	/* Equal serials mean equal bytes within one file only (SERIALS). */
	if (cert->pair.x509 != NULL && cert->epoch == shm->epoch)
		known = &cert->serial;
	st = ngx_http_acme_shm_cert(shm, &cert->id, known, pool, &found);
	if (st == NGX_HTTP_ACME_FOUND)
		rc = ngx_http_acme_ssl_take(amcf, cert, &found, log);
	ngx_destroy_pool(pool);

	/*
	 * The entry is what we hold, or a new serial that does not parse
	 * while what we hold is still valid: serve that, and look again only
	 * at the next publish.
	 */
	if (st == NGX_HTTP_ACME_FOUND &&
	    (rc == NGX_OK || ngx_http_acme_ssl_still_valid(cert))) {
		cert->stale = rc != NGX_OK;
		cert->generation = found.generation;
		cert->epoch = shm->epoch;
		return &cert->pair;
	}
	/*
	 * A writer too quick for every retry, or one laying the file out
	 * again (generation 0 until its first publish): what we hold is
	 * what it published last.
	 */
	if ((st == NGX_HTTP_ACME_BUSY || st == NGX_HTTP_ACME_EMPTY) &&
	    cert->pair.x509 != NULL)
		return &cert->pair;
	/* FOUND here is a serial that did not parse, and nothing valid. */
	*stp = st == NGX_HTTP_ACME_FOUND ? NGX_HTTP_ACME_MALFORMED : st;
	return NULL;
}

/*
 * Make pair the certificate the server's SSL_CTX hands every new
 * connection, as it would a static one, so later handshakes need nothing
 * from us.  A context cannot drop a certificate, only replace the one of
 * the same key type, so only certificates of one key type go there.
 */
static void
ngx_http_acme_ssl_install(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_pair_t *pair, ngx_log_t *log)
{
	int	 type = EVP_PKEY_get_base_id(pair->pkey);

	if (ascf->ctx_x509 != NULL && ascf->ctx_type != type)
		return;
	if (SSL_CTX_use_cert_and_key(ascf->ssl_ctx, pair->x509, pair->pkey,
	    pair->chain, 1) != 1) {
		ngx_ssl_error(NGX_LOG_ERR, log, 0, "acme: "
		    "SSL_CTX_use_cert_and_key(\"%V\") failed", &ascf->cert->id);
		return;
	}
	ascf->ctx_x509 = pair->x509;
	ascf->ctx_type = type;
}

static void
ngx_http_acme_ssl_log_missing(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_status_e st, ngx_log_t *log)
{
	ngx_http_acme_main_conf_t	*amcf = ascf->amcf;

	if (!ngx_http_acme_shm_log_allowed(&amcf->shm))
		return;
	/* ngx_log_error() is a macro with an if of its own. */
	if (ascf->fallback != NULL) {
		ngx_log_error(NGX_LOG_WARN, log, 0, "acme: no certificate "
		    "\"%V\" in shared zone \"%s\" (%s); serving the fallback "
		    "\"%s\"", &ascf->cert->id, amcf->shm.path.data,
		    ngx_http_acme_status_text(st),
		    ascf->fallback->cert_file.data);
	} else {
		ngx_log_error(NGX_LOG_ERR, log, 0, "acme: no certificate "
		    "\"%V\" in shared zone \"%s\" (%s); handshake refused",
		    &ascf->cert->id, amcf->shm.path.data,
		    ngx_http_acme_status_text(st));
	}
}

/*
 * SSL_CTX_set_cert_cb() of every server whose ssl_certificate is
 * $acme_certificate.  nginx's SNI callback moves the connection to the
 * chosen server's SSL_CTX before OpenSSL calls this, and the callback
 * travels with the context, so arg is the chosen server's configuration.
 *
 * A connection starts with a copy of its SSL_CTX's certificates.  When
 * that copy is the current certificate there is nothing to do, which is
 * the common case and costs what a static certificate costs.  Otherwise
 * (a new serial, a connection accepted before it, the fallback) this
 * connection gets the certificate of its own.
 */
int
ngx_http_acme_ssl_cert_cb(ngx_ssl_conn_t *ssl_conn, void *arg)
{
	ngx_http_acme_srv_conf_t	*ascf = arg;
	ngx_http_acme_pair_t		*pair;
	ngx_http_acme_status_e		 st;
	ngx_connection_t		*c;

	c = ngx_ssl_get_connection(ssl_conn);
	/* No renegotiation, as in nginx's own callback. */
	if (c->ssl->handshaked)
		return 0;
	pair = ngx_http_acme_ssl_current(ascf->amcf, ascf->cert, c->log, &st);
	if (pair != NULL) {
		if (SSL_get_certificate(ssl_conn) == pair->x509)
			return 1;
		if (ascf->ctx_x509 != pair->x509)
			ngx_http_acme_ssl_install(ascf, pair, c->log);
	} else {
		ngx_http_acme_ssl_log_missing(ascf, st, c->log);
		if (ascf->fallback == NULL)
			return 0;
		pair = &ascf->fallback->pair;
	}
	/* Whatever the context gave this connection must not be served. */
	SSL_certs_clear(ssl_conn);
	if (SSL_use_cert_and_key(ssl_conn, pair->x509, pair->pkey,
	    pair->chain, 1) != 1) {
		ngx_ssl_error(NGX_LOG_ERR, c->log, 0, "acme: "
		    "SSL_use_cert_and_key(\"%V\") failed", &ascf->cert->id);
		return 0;
	}
	return 1;
}
