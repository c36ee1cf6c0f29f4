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
#include <arpa/inet.h>

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
 * The key family a parsed pair goes into the SSL_CTX under, or -1 when
 * its key is not of the family its acme_certificate asked for (only a
 * planted entry can do that).  Such a pair is handed to one connection
 * at a time, never to the SSL_CTX, which could not drop it again: a
 * context only replaces the certificate of the same family.
 */
static ngx_int_t
ngx_http_acme_ssl_family(ngx_http_acme_cert_t *cert,
    ngx_http_acme_pair_t *pair)
{
	int	 want, type = EVP_PKEY_get_base_id(pair->pkey);

	want = cert->family == NGX_HTTP_ACME_RSA ? EVP_PKEY_RSA : EVP_PKEY_EC;
	return type == want ? (ngx_int_t)cert->family : -1;
}

/*
 * Make pair the certificate of its family that the server's SSL_CTX
 * hands every new connection, as it would a static one, so later
 * handshakes need nothing from us.
 */
static void
ngx_http_acme_ssl_install(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_cert_t *cert, ngx_http_acme_pair_t *pair, ngx_log_t *log)
{
	ngx_int_t	 fam = ngx_http_acme_ssl_family(cert, pair);

	if (fam < 0 || ascf->ctx_x509[fam] == pair->x509)
		return;
	if (SSL_CTX_use_cert_and_key(ascf->ssl_ctx, pair->x509, pair->pkey,
	    pair->chain, 1) != 1) {
		ngx_ssl_error(NGX_LOG_ERR, log, 0, "acme: "
		    "SSL_CTX_use_cert_and_key(\"%V\") failed", &cert->id);
		return;
	}
	ascf->ctx_x509[fam] = pair->x509;
	ascf->ctx_last = pair->x509;
}

/*
 * Whether this connection already holds pairs, every one of the
 * server's certificates: when the SSL_CTX holds them all, a connection
 * made since the last install starts with a copy of its certificates,
 * and with the one installed last as its current one.  A connection
 * made before that install has another current certificate: the
 * context holds a reference to every certificate it was given, so no
 * newer one can have the address of one a connection still holds.
 */
static ngx_int_t
ngx_http_acme_ssl_in_ctx(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_pair_t **pairs, ngx_ssl_conn_t *ssl_conn)
{
	ngx_uint_t	 i;
	ngx_int_t	 fam;

	for (i = 0; i < ascf->nlines; i++) {
		if (pairs[i] == NULL)
			return 0;
		fam = ngx_http_acme_ssl_family(ascf->lines[i].cert, pairs[i]);
		if (fam < 0 || ascf->ctx_x509[fam] != pairs[i]->x509)
			return 0;
	}
	return ascf->ctx_last != NULL &&
	    SSL_get_certificate(ssl_conn) == ascf->ctx_last;
}

static void
ngx_http_acme_ssl_log_missing(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_cert_t *cert, ngx_http_acme_status_e st,
    ngx_uint_t others, ngx_log_t *log)
{
	ngx_http_acme_main_conf_t	*amcf = ascf->amcf;

	if (!ngx_http_acme_shm_log_allowed(&amcf->shm))
		return;
	/* ngx_log_error() is a macro with an if of its own. */
	if (others) {
		ngx_log_error(NGX_LOG_WARN, log, 0, "acme: no certificate "
		    "\"%V\" in shared zone \"%s\" (%s); serving the server's "
		    "other certificate", &cert->id, amcf->shm.path.data,
		    ngx_http_acme_status_text(st));
	} else if (ascf->fallback != NULL) {
		ngx_log_error(NGX_LOG_WARN, log, 0, "acme: no certificate "
		    "\"%V\" in shared zone \"%s\" (%s); serving the fallback "
		    "\"%s\"", &cert->id, amcf->shm.path.data,
		    ngx_http_acme_status_text(st),
		    ascf->fallback->cert_file.data);
	} else {
		ngx_log_error(NGX_LOG_ERR, log, 0, "acme: no certificate "
		    "\"%V\" in shared zone \"%s\" (%s); handshake refused",
		    &cert->id, amcf->shm.path.data,
		    ngx_http_acme_status_text(st));
	}
}

/*
 * The current pair of each of the server's certificates, NULL for one
 * the segment has none of; returns how many there are, having logged
 * the missing ones.
 */
static ngx_uint_t
ngx_http_acme_ssl_pairs(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_pair_t **pairs, ngx_log_t *log)
{
	ngx_http_acme_status_e	 st[NGX_HTTP_ACME_NFAMILIES];
	ngx_uint_t		 i, n = 0;

	for (i = 0; i < ascf->nlines; i++) {
		pairs[i] = ngx_http_acme_ssl_current(ascf->amcf,
		    ascf->lines[i].cert, log, &st[i]);
		if (pairs[i] != NULL)
			n++;
	}
	for (i = 0; i < ascf->nlines; i++) {
		if (pairs[i] == NULL)
			ngx_http_acme_ssl_log_missing(ascf, ascf->lines[i].cert,
			    st[i], n, log);
	}
	return n;
}

/*
 * Give this connection pairs of its own, in place of whatever the
 * context gave it, which must not be served.  With an ECDSA and an RSA
 * pair, OpenSSL picks from the ClientHello as it would between two
 * ssl_certificate files.
 */
static int
ngx_http_acme_ssl_use(ngx_http_acme_srv_conf_t *ascf,
    ngx_http_acme_pair_t **pairs, ngx_uint_t npairs, ngx_ssl_conn_t *ssl_conn,
    ngx_log_t *log)
{
	ngx_uint_t	 i;

	SSL_certs_clear(ssl_conn);
	for (i = 0; i < npairs; i++) {
		if (pairs[i] == NULL)
			continue;
		if (SSL_use_cert_and_key(ssl_conn, pairs[i]->x509,
		    pairs[i]->pkey, pairs[i]->chain, 1) != 1) {
			ngx_ssl_error(NGX_LOG_ERR, log, 0, "acme: "
			    "SSL_use_cert_and_key(\"%V\") failed",
			    &ascf->lines[i < ascf->nlines ? i : 0].cert->id);
			return 0;
		}
	}
	return 1;
}

/*
 * Serve ascf's certificates.  own: ascf's SSL_CTX is this connection's,
 * so it may be brought up to date, and may already have given the
 * connection the current certificates.
 */
static int
ngx_http_acme_ssl_serve(ngx_http_acme_srv_conf_t *ascf,
    ngx_ssl_conn_t *ssl_conn, ngx_log_t *log, ngx_uint_t own)
{
	ngx_http_acme_pair_t	*pairs[NGX_HTTP_ACME_NFAMILIES];
	ngx_uint_t		 i, n;

	n = ngx_http_acme_ssl_pairs(ascf, pairs, log);
	if (n == 0) {
		if (ascf->fallback == NULL)
			return 0;
		pairs[0] = &ascf->fallback->pair;
		return ngx_http_acme_ssl_use(ascf, pairs, 1, ssl_conn, log);
	}
	if (own) {
		if (n == ascf->nlines &&
		    ngx_http_acme_ssl_in_ctx(ascf, pairs, ssl_conn))
			return 1;
		for (i = 0; i < ascf->nlines; i++) {
			if (pairs[i] != NULL)
				ngx_http_acme_ssl_install(ascf,
				    ascf->lines[i].cert, pairs[i], log);
		}
	}
	return ngx_http_acme_ssl_use(ascf, pairs, ascf->nlines, ssl_conn, log);
}

/* A socket address as an identifier would hold it: binary, v4 as v4. */
static ngx_int_t
ngx_http_acme_ssl_addr_of(struct sockaddr *sa, int *family, u_char *addr)
{
	struct sockaddr_in	*sin;
	struct sockaddr_in6	*sin6;

	switch (sa->sa_family) {
	case AF_INET:
		sin = (struct sockaddr_in *)sa;
		*family = AF_INET;
		ngx_memcpy(addr, &sin->sin_addr, 4);
		return NGX_OK;
	case AF_INET6:
		sin6 = (struct sockaddr_in6 *)sa;
		/* A v4 client of a [::] listen with ipv6only=off. */
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			*family = AF_INET;
			ngx_memcpy(addr, &sin6->sin6_addr.s6_addr[12], 4);
		} else {
			*family = AF_INET6;
			ngx_memcpy(addr, &sin6->sin6_addr, 16);
		}
		return NGX_OK;
	}
	return NGX_DECLINED;
}

/* Whether a, an IP identifier on a listen, names where c arrived. */
static ngx_int_t
ngx_http_acme_ssl_addr_match(ngx_http_acme_addr_t *a, int family,
    u_char *addr, ngx_connection_t *c)
{
	if (a->family != family ||
	    ngx_memcmp(a->addr, addr, family == AF_INET ? 4 : 16) != 0 ||
	    ngx_inet_get_port(a->listen) !=
	    ngx_inet_get_port(c->local_sockaddr))
		return 0;
	return ngx_inet_wildcard(a->listen) ||
	    ngx_cmp_sockaddr(a->listen, a->socklen, c->local_sockaddr,
	    c->local_socklen, 1) == NGX_OK;
}

/*
 * TLS clients send no SNI for an IP address (RFC 6066 3), so nginx
 * leaves such a connection with the default server of its listen
 * address.  The certificate with the address the connection arrived at
 * as an identifier is the one it asked for: the server that has it on
 * that listen address.  ascf itself when it has it, when there is none,
 * or when the client sent SNI.
 */
static ngx_http_acme_srv_conf_t *
ngx_http_acme_ssl_by_address(ngx_http_acme_srv_conf_t *ascf,
    ngx_ssl_conn_t *ssl_conn, ngx_connection_t *c)
{
	ngx_http_acme_main_conf_t	*amcf = ascf->amcf;
	ngx_http_acme_addr_t		*a;
	ngx_http_acme_srv_conf_t	*found = NULL;
	ngx_uint_t			 i;
	u_char				 addr[16];
	int				 family;

	if (amcf->addrs.nelts == 0 ||
	    SSL_get_servername(ssl_conn, TLSEXT_NAMETYPE_host_name) != NULL ||
	    ngx_connection_local_sockaddr(c, NULL, 0) != NGX_OK ||
	    ngx_http_acme_ssl_addr_of(c->local_sockaddr, &family, addr) !=
	    NGX_OK)
		return ascf;
	a = amcf->addrs.elts;
	for (i = 0; i < amcf->addrs.nelts; i++) {
		if (!ngx_http_acme_ssl_addr_match(&a[i], family, addr, c))
			continue;
		if (a[i].ascf == ascf)
			return ascf;
		if (found == NULL)
			found = a[i].ascf;
	}
	return found != NULL ? found : ascf;
}

/*
 * SSL_CTX_set_cert_cb() of every server whose ssl_certificate is
 * $acme_certificate.  nginx's SNI callback moves the connection to the
 * chosen server's SSL_CTX before OpenSSL calls this, and the callback
 * travels with the context, so arg is the chosen server's configuration.
 * Without SNI, the server whose certificate has the connection's local
 * address is chosen here instead, for this connection's certificate only.
 *
 * A connection starts with a copy of its SSL_CTX's certificates.  When
 * that copy is the current certificates there is nothing to do, which is
 * the common case and costs what static certificates cost.  Otherwise
 * (a new serial, a connection accepted before it, the fallback, another
 * server's certificate by address) this connection gets certificates of
 * its own.
 */
int
ngx_http_acme_ssl_cert_cb(ngx_ssl_conn_t *ssl_conn, void *arg)
{
	ngx_http_acme_srv_conf_t	*ascf = arg, *chosen;
	ngx_connection_t		*c;

	c = ngx_ssl_get_connection(ssl_conn);
	/* No renegotiation, as in nginx's own callback. */
	if (c->ssl->handshaked)
		return 0;
	chosen = ngx_http_acme_ssl_by_address(ascf, ssl_conn, c);
	return ngx_http_acme_ssl_serve(chosen, ssl_conn, c->log,
	    chosen == ascf);
}

/* The IP identifiers of ascf's certificates, on the listen addr. */
static ngx_int_t
ngx_http_acme_ssl_add_addrs(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf,
    ngx_http_acme_srv_conf_t *ascf, ngx_http_conf_addr_t *addr)
{
	ngx_http_acme_addr_t	*a;
	ngx_str_t		*ident;
	ngx_uint_t		 i, j;
	u_char			 bin[16];
	int			 family;

	for (i = 0; i < ascf->nlines; i++) {
		ident = ascf->lines[i].cert->idents->elts;
		for (j = 0; j < ascf->lines[i].cert->idents->nelts; j++) {
			/* Normalised and NUL-terminated (ngx_http_acme_conf.c). */
			if (inet_pton(AF_INET, (char *)ident[j].data, bin) == 1)
				family = AF_INET;
			else if (inet_pton(AF_INET6, (char *)ident[j].data,
			    bin) == 1)
				family = AF_INET6;
			else
				continue;
			if ((a = ngx_array_push(&amcf->addrs)) == NULL ||
			    (a->listen = ngx_palloc(cf->pool,
			    addr->opt.socklen)) == NULL)
				return NGX_ERROR;
			ngx_memcpy(a->listen, addr->opt.sockaddr,
			    addr->opt.socklen);
			a->socklen = addr->opt.socklen;
			a->family = family;
			ngx_memcpy(a->addr, bin, sizeof(bin));
			a->ascf = ascf;
		}
	}
	return NGX_OK;
}

/*
 * At postconfiguration, before nginx turns its listen addresses into
 * listening sockets: every server with an IP identifier, on each of its
 * ssl listen addresses, for ngx_http_acme_ssl_by_address().
 */
ngx_int_t
ngx_http_acme_ssl_addresses(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf)
{
	ngx_http_core_main_conf_t	*cmcf;
	ngx_http_conf_port_t		*port;
	ngx_http_conf_addr_t		*addr;
	ngx_http_core_srv_conf_t	**cscfp;
	ngx_http_acme_srv_conf_t	*ascf;
	ngx_uint_t			 p, a, s;

	cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
	if (cmcf->ports == NULL)
		return NGX_OK;
	port = cmcf->ports->elts;
	for (p = 0; p < cmcf->ports->nelts; p++) {
		addr = port[p].addrs.elts;
		for (a = 0; a < port[p].addrs.nelts; a++) {
			if (!addr[a].opt.ssl)
				continue;
			cscfp = addr[a].servers.elts;
			for (s = 0; s < addr[a].servers.nelts; s++) {
				ascf = cscfp[s]->ctx->srv_conf[
				    ngx_http_acme_module.ctx_index];
				if (ngx_http_acme_ssl_add_addrs(cf, amcf, ascf,
				    &addr[a]) != NGX_OK)
					return NGX_ERROR;
			}
		}
	}
	return NGX_OK;
}

/* ------------------------------------------------------------ tls-alpn-01 */

/*
 * tls-alpn-01 (RFC 8737) on nginx's own https listeners.  The CA's
 * ClientHello offers "acme-tls/1" and names the identifier in SNI; the
 * sidecar publishes each pending validation certificate in the zone
 * (by_alpn, proto/acme_shm.h).
 *
 * The hook is the ClientHello callback, which nginx 1.22 leaves unused
 * and which OpenSSL runs before anything else looks at the hello, for
 * TLS 1.2 and 1.3 alike: nginx's own SNI, ALPN and certificate
 * callbacks come later, and in TLS 1.2 ALPN is chosen only after the
 * certificate.  A hello that offers acme-tls/1 for a name pending in the
 * zone moves to a context of our own (ngx_http_acme_ssl_alpn_ctx()):
 * its SNI callback keeps nginx's from picking a server, its ALPN
 * callback selects acme-tls/1, and the connection is given the
 * validation certificate.  Every other hello is left exactly as it came,
 * so nginx's SNI, ALPN (h2, http/1.1) and certificates are unchanged.
 *
 * After such a handshake nothing is exchanged (RFC 8737 3): the
 * connection is marked to close, which nginx does once the handshake
 * is over instead of waiting for a request.
 */

static const unsigned char ngx_http_acme_alpn_proto[] =
    "\x0a" ACME_HELLO_ALPN;

/* Stops nginx's SNI callback (the session context's) from running. */
static int
ngx_http_acme_ssl_alpn_servername(ngx_ssl_conn_t *ssl_conn, int *ad,
    void *arg)
{
	(void)ssl_conn;
	(void)ad;
	(void)arg;
	return SSL_TLSEXT_ERR_OK;
}

static int
ngx_http_acme_ssl_alpn_select(ngx_ssl_conn_t *ssl_conn,
    const unsigned char **out, unsigned char *outlen, const unsigned char *in,
    unsigned int inlen, void *arg)
{
	unsigned char	*sel;

	(void)ssl_conn;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, ngx_http_acme_alpn_proto,
	    sizeof(ngx_http_acme_alpn_proto) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/*
 * Hand this connection to the validation context with pair: no session
 * to resume or to be resumed elsewhere (its own session id context, no
 * tickets), no client certificate asked for.
 */
static ngx_int_t
ngx_http_acme_ssl_alpn_take(ngx_http_acme_main_conf_t *amcf,
    ngx_ssl_conn_t *ssl_conn, ngx_http_acme_pair_t *pair)
{
	if (SSL_set_SSL_CTX(ssl_conn, amcf->alpn_ctx) == NULL ||
	    SSL_set_session_id_context(ssl_conn, ngx_http_acme_alpn_proto + 1,
	    sizeof(ngx_http_acme_alpn_proto) - 2) != 1 ||
	    SSL_set_num_tickets(ssl_conn, 0) != 1)
		return NGX_ERROR;
	SSL_set_options(ssl_conn, SSL_OP_NO_TICKET);
	SSL_set_verify(ssl_conn, SSL_VERIFY_NONE, NULL);
	if (SSL_use_cert_and_key(ssl_conn, pair->x509, pair->pkey, NULL,
	    1) != 1)
		return NGX_ERROR;
	return NGX_OK;
}

/*
 * The validation certificate pending for sni, parsed into pair: NGX_OK,
 * else NGX_DECLINED (none) or NGX_ERROR (logged), pair left empty.
 */
static ngx_int_t
ngx_http_acme_ssl_alpn_find(ngx_http_acme_main_conf_t *amcf, ngx_str_t *sni,
    ngx_connection_t *c, ngx_http_acme_pair_t *pair)
{
	ngx_http_acme_status_e	 st;
	ngx_str_t		 cert, key;
	ngx_pool_t		*pool;
	ngx_int_t		 rc = NGX_DECLINED;

	if (ngx_http_acme_shm_ready(&amcf->shm, c->log) != NGX_OK)
		return NGX_DECLINED;
	if ((pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, c->log)) == NULL)
		return NGX_ERROR;
	st = ngx_http_acme_shm_alpn(&amcf->shm, sni, pool, &cert, &key);
	if (st == NGX_HTTP_ACME_FOUND) {
		rc = ngx_http_acme_ssl_parse_pem(&cert, &key, pair);
		if (rc != NGX_OK)
			ngx_ssl_error(NGX_LOG_ERR, c->log, 0, "acme: tls-alpn-01 "
			    "certificate for \"%V\" in shared zone \"%s\" does "
			    "not parse", sni, amcf->shm.path.data);
	} else
		ngx_log_error(NGX_LOG_INFO, c->log, 0, "acme: acme-tls/1 "
		    "offered for \"%V\": %s", sni,
		    ngx_http_acme_status_text(st));
	ngx_destroy_pool(pool);
	return rc;
}

/*
 * SSL_CTX_set_client_hello_cb() of every https server: see above.
 * Anything but acme-tls/1 for a pending name returns at once, as if
 * there were no callback.
 */
static int
ngx_http_acme_ssl_client_hello(ngx_ssl_conn_t *ssl_conn, int *al, void *arg)
{
	ngx_http_acme_main_conf_t	*amcf = arg;
	ngx_http_acme_pair_t		 pair;
	ngx_connection_t		*c;
	const unsigned char		*ext;
	ngx_str_t			 sni;
	size_t				 len;
	ngx_int_t			 rc;
	char				 name[ACME_HELLO_SNI_MAX + 1];

	if (SSL_client_hello_get0_ext(ssl_conn,
	    TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
	    &len) != 1 || !acme_hello_offers_acme_tls(ext, len) ||
	    SSL_client_hello_get0_ext(ssl_conn, TLSEXT_TYPE_server_name, &ext,
	    &len) != 1 || (sni.len = acme_hello_sni(ext, len, name)) == 0)
		return SSL_CLIENT_HELLO_SUCCESS;
	sni.data = (u_char *)name;
	c = ngx_ssl_get_connection(ssl_conn);
	if (ngx_http_acme_ssl_alpn_find(amcf, &sni, c, &pair) != NGX_OK)
		return SSL_CLIENT_HELLO_SUCCESS;
	rc = ngx_http_acme_ssl_alpn_take(amcf, ssl_conn, &pair);
	ngx_http_acme_ssl_pair_free(&pair);
	if (rc != NGX_OK) {
		ngx_ssl_error(NGX_LOG_ERR, c->log, 0, "acme: tls-alpn-01 for "
		    "\"%V\": the validation certificate cannot be used", &sni);
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	/* No request follows: nginx closes once the handshake is done. */
	c->close = 1;
	ngx_log_error(NGX_LOG_INFO, c->log, 0, "acme: tls-alpn-01 validation "
	    "certificate for \"%V\" served", &sni);
	return SSL_CLIENT_HELLO_SUCCESS;
}

static void
ngx_http_acme_ssl_alpn_cleanup(void *data)
{
	SSL_CTX_free(data);
}

/* The context a validation handshake moves to: no certificate of its own. */
static SSL_CTX *
ngx_http_acme_ssl_alpn_ctx(ngx_conf_t *cf)
{
	ngx_pool_cleanup_t	*cln;
	SSL_CTX			*ctx;

	if ((cln = ngx_pool_cleanup_add(cf->pool, 0)) == NULL)
		return NULL;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0, "acme: SSL_CTX_new() "
		    "for tls-alpn-01 failed");
		return NULL;
	}
	cln->handler = ngx_http_acme_ssl_alpn_cleanup;
	cln->data = ctx;
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_tlsext_servername_callback(ctx,
	    ngx_http_acme_ssl_alpn_servername);
	SSL_CTX_set_alpn_select_cb(ctx, ngx_http_acme_ssl_alpn_select, NULL);
	return ctx;
}

/*
 * At postconfiguration: the ClientHello callback on the SSL_CTX of every
 * server with one.  Not only those with acme_certificate: the context
 * that sees a ClientHello is that of the listen address's default
 * server, whichever it is (a catch-all, one with ssl_reject_handshake).
 */
ngx_int_t
ngx_http_acme_ssl_alpn_init(ngx_conf_t *cf, ngx_http_acme_main_conf_t *amcf)
{
	ngx_http_core_main_conf_t	*cmcf;
	ngx_http_core_srv_conf_t	**cscfp;
	ngx_http_ssl_srv_conf_t		*sscf;
	ngx_uint_t			 s;

	cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
	cscfp = cmcf->servers.elts;
	for (s = 0; s < cmcf->servers.nelts; s++) {
		sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
		if (sscf->ssl.ctx == NULL)
			continue;
		if (amcf->alpn_ctx == NULL &&
		    (amcf->alpn_ctx = ngx_http_acme_ssl_alpn_ctx(cf)) == NULL)
			return NGX_ERROR;
		SSL_CTX_set_client_hello_cb(sscf->ssl.ctx,
		    ngx_http_acme_ssl_client_hello, amcf);
	}
	return NGX_OK;
}
