/*
 * Asynchronous HTTPS client: libevent's evhttp over OpenSSL bufferevents,
 * with a small keep-alive pool per origin.
 *
 * Each origin (scheme, host, port) keeps at most max_conns connections,
 * each carrying one request at a time; requests beyond that wait in a
 * FIFO.  An evhttp_connection over an OpenSSL bufferevent cannot
 * reconnect once it has been closed (its SSL object is spent), so a
 * connection that closes or fails is discarded and a fresh one is built
 * for the next request.  Retries are off: the ACME layer retries, and a
 * POST must never be resent behind its back because nonces are single use.
 *
 * libevent's callbacks only record what happened and wake the pool's
 * "kick" event; user callbacks run from that event, never from inside
 * evhttp or http_pool_request.  So a callback may issue, cancel or free
 * anything, the pool included, and connections are freed only there,
 * never inside their own callbacks.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sidecar.h"

#define HTTP_MAX_HEADERS	(64 * 1024)
#define HTTP_USER_AGENT		"acme-sidecar/" SIDECAR_VERSION
#define HTTP_DEFAULT_TIMEOUT	30

enum http_conn_state {
	HTTP_CONN_NEW,		/* built, on no list yet */
	HTTP_CONN_BUSY,		/* one request on it (maybe still connecting) */
	HTTP_CONN_IDLE,		/* keep-alive, ready for the next request */
	HTTP_CONN_DEAD,		/* closed or failed; freed at the next kick */
	HTTP_CONN_STATE_MAX
};

enum http_req_state {
	HTTP_REQ_NEW,
	HTTP_REQ_QUEUED,	/* waiting in its origin's FIFO */
	HTTP_REQ_RUNNING,	/* on a connection */
	HTTP_REQ_DONE,		/* result ready, waiting for the kick */
	HTTP_REQ_CALLBACK,	/* its callback is running */
	HTTP_REQ_STATE_MAX
};

struct http_request {
	struct http_pool	*hq_pool;
	struct http_origin	*hq_origin;	/* NULL if the URL was bad */
	struct http_conn	*hq_conn;	/* while RUNNING */
	enum http_req_state	 hq_state;
	enum evhttp_cmd_type	 hq_type;
	char			*hq_target;	/* path?query */
	char			*hq_ctype;
	char			*hq_accept;
	char			*hq_body;
	size_t			 hq_len;
	http_cb			 hq_cb;
	void			*hq_arg;
	int			 hq_cancelled;	/* in flight; drop the result */
	int			 hq_retried;
	struct timeval		 hq_start;	/* sent to its connection */

	/* What libevent's error callback told us, if it ran. */
	int			 hq_have_everr;
	enum evhttp_request_error hq_everr;
	int			 hq_errno;

	/* The result. */
	int			 hq_status;
	struct evkeyvalq	 hq_headers;
	char			*hq_rbody;
	size_t			 hq_rlen;
	char			*hq_error;
	struct http_response	 hq_resp;

	TAILQ_ENTRY(http_request) hq_entry;
};
TAILQ_HEAD(http_requests, http_request);

struct http_conn {
	struct http_origin	*hc_origin;
	struct evhttp_connection *hc_evcon;
	struct bufferevent	*hc_bev;	/* owned by hc_evcon */
	SSL			*hc_ssl;	/* owned by hc_bev; NULL for http */
	enum http_conn_state	 hc_state;
	struct http_request	*hc_req;	/* while BUSY */
	unsigned int		 hc_served;	/* responses received */
	int			 hc_closed;	/* evhttp reported a close */
	int			 hc_nodelay;	/* TCP_NODELAY is set */
	TAILQ_ENTRY(http_conn)	 hc_entry;	/* idle, busy or dead list */
};
TAILQ_HEAD(http_conns, http_conn);

struct http_origin {
	struct http_pool	*ho_pool;
	int			 ho_tls;
	char			*ho_host;	/* to connect to, no brackets */
	int			 ho_port;
	int			 ho_ip;		/* host is an IP literal */
	char			*ho_hosthdr;	/* Host: value */
	unsigned int		 ho_nconns;	/* idle + busy */
	struct http_conns	 ho_idle;	/* most recently used first */
	struct http_conns	 ho_busy;
	struct http_requests	 ho_queue;
	TAILQ_ENTRY(http_origin) ho_entry;
};

struct http_pool {
	struct event_base	*hp_base;
	struct evdns_base	*hp_dns;
	SSL_CTX			*hp_ctx;	/* a reference of our own */
	unsigned int		 hp_max_conns;
	int			 hp_timeout;
	struct event		*hp_kick;
	int			 hp_inkick;
	int			 hp_freed;	/* freed from inside a callback */
	TAILQ_HEAD(, http_origin) hp_origins;
	struct http_requests	 hp_done;
	struct http_conns	 hp_dead;
};

static const char *http_conn_state_names[] = {
	"new", "busy", "idle", "dead"
};
static const char *http_req_state_names[] = {
	"new", "queued", "running", "done", "callback"
};

static void	http_pool_schedule(struct http_pool *);
static void	http_request_finish(struct http_request *);

/* The innermost OpenSSL error as text; clears the queue. */
static const char *
http_ssl_errstr(unsigned long e)
{
	static char	 buf[256];
	const char	*reason;

	if (e == 0)
		e = ERR_peek_last_error();
	ERR_clear_error();
	if (e == 0)
		return "unknown error";
	if ((reason = ERR_reason_error_string(e)) != NULL)
		return reason;
	ERR_error_string_n(e, buf, sizeof(buf));
	return buf;
}

/*
 * ssl_trusted_certificate's roots (and CRLs), read from a descriptor that
 * fsafe_open_regular() vouched for: the path was checked when the
 * configuration loaded, but a FIFO swapped in since must not block the
 * loop in OpenSSL's own open.
 */
static int
http_load_roots(SSL_CTX *ctx, const char *cafile, char **cause)
{
	STACK_OF(X509_INFO)	*infos;
	X509_INFO		*xi;
	X509_STORE		*store = SSL_CTX_get_cert_store(ctx);
	struct stat		 sb;
	BIO			*bio;
	char			*why = NULL;
	int			 fd, i, n = 0;

	if ((fd = fsafe_open_regular(cafile, 0, &sb, &why)) == -1) {
		xasprintf(cause, "%s", why);
		free(why);
		return -1;
	}
	if ((bio = BIO_new_fd(fd, BIO_CLOSE)) == NULL)
		fatalx("%s: BIO_new_fd", __func__);
	infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
	BIO_free(bio);
	for (i = 0; infos != NULL && i < sk_X509_INFO_num(infos); i++) {
		xi = sk_X509_INFO_value(infos, i);
		if (xi->x509 != NULL && X509_STORE_add_cert(store, xi->x509))
			n++;
		if (xi->crl != NULL)
			X509_STORE_add_crl(store, xi->crl);
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	if (n == 0) {
		xasprintf(cause, "%s: cannot load CA certificates: %s", cafile,
		    http_ssl_errstr(0));
		return -1;
	}
	ERR_clear_error();
	return 0;
}

SSL_CTX *
http_ssl_ctx(const char *cafile, int verify, char **cause)
{
	SSL_CTX	*ctx = NULL;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		xasprintf(cause, "SSL_CTX_new: %s", http_ssl_errstr(0));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (!verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cafile != NULL) {
		/* Like nginx's ssl_trusted_certificate: only these roots. */
		if (http_load_roots(ctx, cafile, cause) == -1) {
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (!SSL_CTX_set_default_verify_paths(ctx)) {
		xasprintf(cause, "cannot load the system CA store: %s",
		    http_ssl_errstr(0));
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static void
http_request_set_state(struct http_request *hq, enum http_req_state state)
{
	if (state >= HTTP_REQ_STATE_MAX)
		fatalx("%s: bad state %d", __func__, state);
	if (log_verbose() > 1)
		log_debug("http: request %p %s -> %s", (void *)hq,
		    http_req_state_names[hq->hq_state],
		    http_req_state_names[state]);
	hq->hq_state = state;
}

static void
http_request_free(struct http_request *hq)
{
	evhttp_clear_headers(&hq->hq_headers);
	free(hq->hq_target);
	free(hq->hq_ctype);
	free(hq->hq_accept);
	free(hq->hq_body);
	free(hq->hq_rbody);
	free(hq->hq_error);
	free(hq);
}

/* Move a request whose result (or error) is set to the done queue. */
static void
http_request_finish(struct http_request *hq)
{
	struct http_pool	*hp = hq->hq_pool;

	http_request_set_state(hq, HTTP_REQ_DONE);
	TAILQ_INSERT_TAIL(&hp->hp_done, hq, hq_entry);
	http_pool_schedule(hp);
}

static void
http_request_deliver(struct http_request *hq)
{
	struct http_response	*hr = &hq->hq_resp;

	hr->hr_status = hq->hq_status;
	hr->hr_error = hq->hq_error;
	hr->hr_headers = &hq->hq_headers;
	hr->hr_body = hq->hq_rbody != NULL ? hq->hq_rbody : "";
	hr->hr_len = hq->hq_rlen;
	http_request_set_state(hq, HTTP_REQ_CALLBACK);
	if (hq->hq_cb != NULL)
		hq->hq_cb(hr, hq->hq_arg);
	http_request_free(hq);
}

static struct http_conns *
http_conn_list(struct http_conn *hc, enum http_conn_state state)
{
	switch (state) {
	case HTTP_CONN_BUSY:
		return &hc->hc_origin->ho_busy;
	case HTTP_CONN_IDLE:
		return &hc->hc_origin->ho_idle;
	case HTTP_CONN_DEAD:
		return &hc->hc_origin->ho_pool->hp_dead;
	default:
		return NULL;
	}
}

/* Every transition moves the connection between its origin's lists. */
static void
http_conn_set_state(struct http_conn *hc, enum http_conn_state state)
{
	struct http_origin	*ho = hc->hc_origin;
	struct http_conns	*from, *to;

	if (state >= HTTP_CONN_STATE_MAX)
		fatalx("%s: bad state %d", __func__, state);
	if (state == hc->hc_state)
		return;
	/* busy <-> idle happens per request: only at -vv. */
	if (log_verbose() > 1 || state == HTTP_CONN_DEAD)
		log_debug("http: connection %p to %s:%d %s -> %s", (void *)hc,
		    ho->ho_host, ho->ho_port,
		    http_conn_state_names[hc->hc_state],
		    http_conn_state_names[state]);

	if ((from = http_conn_list(hc, hc->hc_state)) != NULL)
		TAILQ_REMOVE(from, hc, hc_entry);
	if (hc->hc_state == HTTP_CONN_NEW)
		ho->ho_nconns++;
	to = http_conn_list(hc, state);
	if (state == HTTP_CONN_IDLE)
		TAILQ_INSERT_HEAD(to, hc, hc_entry);
	else
		TAILQ_INSERT_TAIL(to, hc, hc_entry);
	if (state == HTTP_CONN_DEAD) {
		ho->ho_nconns--;
		/* The kick frees it, outside libevent's callbacks. */
		http_pool_schedule(ho->ho_pool);
	}
	hc->hc_state = state;
}

/* Only from the kick or http_pool_free: never inside hc's callbacks. */
static void
http_conn_free(struct http_conn *hc)
{
	evhttp_connection_set_closecb(hc->hc_evcon, NULL, NULL);
	/* Frees its bufferevent, its SSL and any evhttp_request on it. */
	evhttp_connection_free(hc->hc_evcon);
	if (hc->hc_req != NULL)
		http_request_free(hc->hc_req);
	free(hc);
}

static void
http_conn_closecb(struct evhttp_connection *evcon, void *arg)
{
	struct http_conn	*hc = arg;

	(void)evcon;
	hc->hc_closed = 1;
	/* A busy connection dies when its request's callback arrives. */
	if (hc->hc_state == HTTP_CONN_IDLE)
		http_conn_set_state(hc, HTTP_CONN_DEAD);
}

/*
 * evhttp writes a request's headers and body as two TLS records; with
 * Nagle on, the second waits for the server's delayed ACK (40 ms).
 * evhttp creates the socket itself (after DNS), and the handshake start
 * is the first moment we see it.
 */
static void
http_conn_nodelay(int fd)
{
	int	 one = 1;

	if (fd != -1 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one)) == -1)
		log_debug("http: setsockopt(TCP_NODELAY): %s", strerror(errno));
}

static void
http_conn_ssl_info(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if (where & SSL_CB_HANDSHAKE_START && !SSL_is_init_finished(ssl))
		http_conn_nodelay(SSL_get_fd(ssl));
}

static SSL *
http_conn_ssl(struct http_origin *ho, char **cause)
{
	SSL_CTX	*ctx = ho->ho_pool->hp_ctx;
	SSL	*ssl = NULL;

	if (ctx == NULL) {
		*cause = xstrdup("no TLS context");
		return NULL;
	}
	if ((ssl = SSL_new(ctx)) == NULL)
		goto fail;
	SSL_set_info_callback(ssl, http_conn_ssl_info);
	/* RFC 6066 forbids SNI with an IP literal. */
	if (!ho->ho_ip && !SSL_set_tlsext_host_name(ssl, ho->ho_host))
		goto fail;
	if (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) {
		if (ho->ho_ip) {
			if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
			    ho->ho_host))
				goto fail;
		} else if (!SSL_set1_host(ssl, ho->ho_host))
			goto fail;
	}
	return ssl;

fail:
	xasprintf(cause, "TLS set-up failed: %s", http_ssl_errstr(0));
	SSL_free(ssl);
	return NULL;
}

static struct http_conn *
http_conn_new(struct http_origin *ho, char **cause)
{
	struct http_pool	*hp = ho->ho_pool;
	struct http_conn	*hc = NULL;
	struct bufferevent	*bev = NULL;
	SSL			*ssl = NULL;
	int			 opts;

	opts = BEV_OPT_CLOSE_ON_FREE|BEV_OPT_DEFER_CALLBACKS;
	if (ho->ho_tls) {
		if ((ssl = http_conn_ssl(ho, cause)) == NULL)
			return NULL;
		bev = bufferevent_openssl_socket_new(hp->hp_base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, opts);
		if (bev == NULL) {
			SSL_free(ssl);
			*cause = xstrdup("cannot create TLS bufferevent");
			return NULL;
		}
		/* Many servers close without close_notify. */
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else if ((bev = bufferevent_socket_new(hp->hp_base, -1,
	    opts)) == NULL) {
		*cause = xstrdup("cannot create bufferevent");
		return NULL;
	}

	hc = xcalloc(1, sizeof(*hc));
	hc->hc_origin = ho;
	hc->hc_bev = bev;
	hc->hc_ssl = ssl;
	hc->hc_state = HTTP_CONN_NEW;
	hc->hc_evcon = evhttp_connection_base_bufferevent_new(hp->hp_base,
	    hp->hp_dns, bev, ho->ho_host, ho->ho_port);
	if (hc->hc_evcon == NULL)
		fatalx("%s: evhttp_connection_base_bufferevent_new", __func__);
	evhttp_connection_set_timeout(hc->hc_evcon, hp->hp_timeout);
	evhttp_connection_set_retries(hc->hc_evcon, 0);
	evhttp_connection_set_max_body_size(hc->hc_evcon, HTTP_MAX_BODY);
	evhttp_connection_set_max_headers_size(hc->hc_evcon, HTTP_MAX_HEADERS);
	evhttp_connection_set_closecb(hc->hc_evcon, http_conn_closecb, hc);
	return hc;
}

/* A short human reason for a request that got no response. */
static char *
http_conn_error(struct http_conn *hc, struct http_request *hq)
{
	struct http_pool	*hp = hc->hc_origin->ho_pool;
	struct timeval		 now, elapsed;
	unsigned long		 e, last = 0;
	long			 v;
	int			 dnserr;
	char			*msg = NULL;

	if (hq->hq_have_everr) {
		switch (hq->hq_everr) {
		case EVREQ_HTTP_TIMEOUT:
			return xstrdup("timeout");
		case EVREQ_HTTP_DATA_TOO_LONG:
			return xstrdup("response too large");
		case EVREQ_HTTP_INVALID_HEADER:
			return xstrdup("invalid response");
		case EVREQ_HTTP_BUFFER_ERROR:
			return xstrdup("buffer error");
		default:
			break;
		}
	}
	if ((dnserr = bufferevent_socket_get_dns_error(hc->hc_bev)) != 0) {
		xasprintf(&msg, "cannot resolve %s: %s", hc->hc_origin->ho_host,
		    evutil_gai_strerror(dnserr));
		return msg;
	}
	if (hc->hc_ssl != NULL) {
		v = SSL_get_verify_result(hc->hc_ssl);
		/*
		 * libevent stacks SSL_get_error()'s code (library 0) before
		 * the real OpenSSL errors; keep the innermost real one.
		 */
		while ((e = bufferevent_get_openssl_error(hc->hc_bev)) != 0) {
			if (ERR_GET_LIB(e) != 0 || ERR_SYSTEM_ERROR(e))
				last = e;
		}
		/* With verification off the result is recorded, not fatal. */
		if (v != X509_V_OK &&
		    (SSL_get_verify_mode(hc->hc_ssl) & SSL_VERIFY_PEER)) {
			xasprintf(&msg, "certificate verify failed: %s",
			    X509_verify_cert_error_string(v));
			return msg;
		}
		if (last != 0) {
			xasprintf(&msg, "%s: %s", SSL_is_init_finished(
			    hc->hc_ssl) ? "TLS error" : "TLS handshake failed",
			    http_ssl_errstr(last));
			return msg;
		}
	}
	if (hc->hc_served > 0 ||
	    (hc->hc_ssl != NULL && SSL_is_init_finished(hc->hc_ssl)))
		return xstrdup("connection closed");

	/* Never connected.  Which way it failed, errno or the clock says. */
	if (hq->hq_have_everr && hq->hq_errno != 0 && hq->hq_errno != EAGAIN) {
		if (hq->hq_errno == ECONNREFUSED)
			return xstrdup("connection refused");
		if (hq->hq_errno == ETIMEDOUT)
			return xstrdup("timeout");
		if (hc->hc_ssl == NULL) {
			xasprintf(&msg, "connection failed: %s",
			    strerror(hq->hq_errno));
			return msg;
		}
	}
	if (hq->hq_have_everr && hc->hc_ssl != NULL)
		return xstrdup("TLS handshake failed: connection closed");
	/* evhttp's connect clean-up path: refused or connect timeout. */
	event_base_gettimeofday_cached(hp->hp_base, &now);
	timersub(&now, &hq->hq_start, &elapsed);
	if (elapsed.tv_sec * 1000 + elapsed.tv_usec / 1000 >=
	    hp->hp_timeout * 1000 - 100)
		return xstrdup("timeout");
	return xstrdup("connection refused");
}

static void
http_conn_everror(enum evhttp_request_error error, void *arg)
{
	struct http_request	*hq = arg;

	hq->hq_have_everr = 1;
	hq->hq_everr = error;
	hq->hq_errno = errno;
}

/* Take the status, headers and body out of libevent's request. */
static void
http_request_take(struct http_request *hq, struct evhttp_request *req)
{
	struct evkeyvalq	*in;
	struct evkeyval		*kv;
	struct evbuffer		*buf;

	hq->hq_status = evhttp_request_get_response_code(req);
	in = evhttp_request_get_input_headers(req);
	while ((kv = TAILQ_FIRST(in)) != NULL) {
		TAILQ_REMOVE(in, kv, next);
		TAILQ_INSERT_TAIL(&hq->hq_headers, kv, next);
	}
	buf = evhttp_request_get_input_buffer(req);
	hq->hq_rlen = evbuffer_get_length(buf);
	hq->hq_rbody = xmalloc(hq->hq_rlen + 1);
	evbuffer_remove(buf, hq->hq_rbody, hq->hq_rlen);
	hq->hq_rbody[hq->hq_rlen] = '\0';
}

/*
 * A GET or HEAD that found its reused keep-alive connection closed under
 * it is sent again once, on a fresh connection; anything else is
 * reported.  POST never: the server may have consumed its nonce.
 */
static int
http_request_may_retry(struct http_conn *hc, struct http_request *hq)
{
	if (hq->hq_retried || hq->hq_type == EVHTTP_REQ_POST)
		return 0;
	if (hc->hc_served == 0)
		return 0;
	return !hq->hq_have_everr || hq->hq_everr == EVREQ_HTTP_EOF;
}

/* evhttp's request callback: req is NULL or has no status on failure. */
static void
http_conn_evdone(struct evhttp_request *req, void *arg)
{
	struct http_request	*hq = arg;
	struct http_conn	*hc = hq->hq_conn;
	struct http_origin	*ho = hc->hc_origin;
	int			 ok;

	ok = req != NULL && evhttp_request_get_response_code(req) != 0;
	hc->hc_req = NULL;
	hq->hq_conn = NULL;
	if (ok) {
		hc->hc_served++;
		if (!hq->hq_cancelled)
			http_request_take(hq, req);
	}

	if (hq->hq_cancelled)
		http_request_free(hq);
	else if (!ok && http_request_may_retry(hc, hq)) {
		log_debug("http: %s:%d closed a kept-alive connection, "
		    "retrying", ho->ho_host, ho->ho_port);
		hq->hq_retried = 1;
		hq->hq_have_everr = 0;
		http_request_set_state(hq, HTTP_REQ_QUEUED);
		TAILQ_INSERT_HEAD(&ho->ho_queue, hq, hq_entry);
	} else {
		if (!ok) {
			hq->hq_error = http_conn_error(hc, hq);
			log_debug("http: %s:%d: %s", ho->ho_host, ho->ho_port,
			    hq->hq_error);
		}
		http_request_finish(hq);
	}

	if (!ok || hc->hc_closed)
		http_conn_set_state(hc, HTTP_CONN_DEAD);
	else
		http_conn_set_state(hc, HTTP_CONN_IDLE);
	http_pool_schedule(ho->ho_pool);
}

static void
http_conn_send(struct http_conn *hc, struct http_request *hq)
{
	struct http_origin	*ho = hc->hc_origin;
	struct evhttp_request	*req;
	struct evkeyvalq	*hdrs;
	char			 clen[32];
	int			 fd;

	if ((req = evhttp_request_new(http_conn_evdone, hq)) == NULL)
		fatalx("%s: evhttp_request_new", __func__);
	evhttp_request_set_error_cb(req, http_conn_everror);
	hdrs = evhttp_request_get_output_headers(req);
	evhttp_add_header(hdrs, "Host", ho->ho_hosthdr);
	evhttp_add_header(hdrs, "User-Agent", HTTP_USER_AGENT);
	if (hq->hq_ctype != NULL)
		evhttp_add_header(hdrs, "Content-Type", hq->hq_ctype);
	if (hq->hq_accept != NULL)
		evhttp_add_header(hdrs, "Accept", hq->hq_accept);
	if (hq->hq_type == EVHTTP_REQ_POST) {
		snprintf(clen, sizeof(clen), "%zu", hq->hq_len);
		evhttp_add_header(hdrs, "Content-Length", clen);
		if (hq->hq_len != 0)
			evbuffer_add(evhttp_request_get_output_buffer(req),
			    hq->hq_body, hq->hq_len);
	}

	hq->hq_conn = hc;
	hq->hq_have_everr = 0;
	hc->hc_req = hq;
	event_base_gettimeofday_cached(ho->ho_pool->hp_base, &hq->hq_start);
	http_request_set_state(hq, HTTP_REQ_RUNNING);
	http_conn_set_state(hc, HTTP_CONN_BUSY);

	/*
	 * A connect that fails at once runs http_conn_evdone before this
	 * returns; that only queues the result for the kick.  -1 means
	 * libevent has freed req without calling back.
	 */
	if (evhttp_make_request(hc->hc_evcon, req, hq->hq_type,
	    hq->hq_target) == -1) {
		hc->hc_req = NULL;
		hq->hq_conn = NULL;
		http_conn_set_state(hc, HTTP_CONN_DEAD);
		if (hq->hq_cancelled)
			http_request_free(hq);
		else {
			hq->hq_error = xstrdup("cannot start request");
			http_request_finish(hq);
		}
		return;
	}
	/* The socket exists by now unless DNS is still running. */
	if (!hc->hc_nodelay && (fd = bufferevent_getfd(hc->hc_bev)) != -1) {
		http_conn_nodelay(fd);
		hc->hc_nodelay = 1;
	}
}

/* Hand queued requests to idle connections, opening new ones up to max. */
static void
http_origin_dispatch(struct http_origin *ho)
{
	struct http_pool	*hp = ho->ho_pool;
	struct http_request	*hq;
	struct http_conn	*hc;
	char			*cause = NULL;

	while ((hq = TAILQ_FIRST(&ho->ho_queue)) != NULL) {
		if ((hc = TAILQ_FIRST(&ho->ho_idle)) == NULL) {
			if (ho->ho_nconns >= hp->hp_max_conns)
				break;
			if ((hc = http_conn_new(ho, &cause)) == NULL) {
				TAILQ_REMOVE(&ho->ho_queue, hq, hq_entry);
				hq->hq_error = cause;
				cause = NULL;
				http_request_finish(hq);
				continue;
			}
			log_debug("http: new connection %p to %s:%d",
			    (void *)hc, ho->ho_host, ho->ho_port);
		}
		TAILQ_REMOVE(&ho->ho_queue, hq, hq_entry);
		http_conn_send(hc, hq);
	}
}

static void
http_origin_free(struct http_origin *ho)
{
	struct http_conn	*hc;
	struct http_request	*hq;

	while ((hc = TAILQ_FIRST(&ho->ho_busy)) != NULL) {
		TAILQ_REMOVE(&ho->ho_busy, hc, hc_entry);
		http_conn_free(hc);
	}
	while ((hc = TAILQ_FIRST(&ho->ho_idle)) != NULL) {
		TAILQ_REMOVE(&ho->ho_idle, hc, hc_entry);
		http_conn_free(hc);
	}
	while ((hq = TAILQ_FIRST(&ho->ho_queue)) != NULL) {
		TAILQ_REMOVE(&ho->ho_queue, hq, hq_entry);
		http_request_free(hq);
	}
	free(ho->ho_host);
	free(ho->ho_hosthdr);
	free(ho);
}

/* Find or create the origin of a parsed URL. */
static struct http_origin *
http_origin_get(struct http_pool *hp, const struct evhttp_uri *uri,
    char **cause)
{
	struct http_origin	*ho;
	const char		*scheme, *host;
	char			*bare = NULL;
	size_t			 len;
	int			 tls, port, dflt;
	struct in6_addr		 a6;

	scheme = evhttp_uri_get_scheme(uri);
	if (scheme != NULL && strcasecmp(scheme, "https") == 0)
		tls = 1;
	else if (scheme != NULL && strcasecmp(scheme, "http") == 0)
		tls = 0;
	else {
		*cause = xstrdup("unsupported URL scheme");
		return NULL;
	}
	host = evhttp_uri_get_host(uri);
	if (host == NULL || *host == '\0') {
		*cause = xstrdup("URL has no host");
		return NULL;
	}
	len = strlen(host);
	if (host[0] == '[' && len > 2 && host[len - 1] == ']')
		bare = xstrndup(host + 1, len - 2);
	else
		bare = xstrdup(host);
	dflt = tls ? 443 : 80;
	if ((port = evhttp_uri_get_port(uri)) == -1)
		port = dflt;

	TAILQ_FOREACH(ho, &hp->hp_origins, ho_entry) {
		if (ho->ho_tls == tls && ho->ho_port == port &&
		    strcasecmp(ho->ho_host, bare) == 0) {
			free(bare);
			return ho;
		}
	}

	ho = xcalloc(1, sizeof(*ho));
	ho->ho_pool = hp;
	ho->ho_tls = tls;
	ho->ho_host = bare;
	ho->ho_port = port;
	ho->ho_ip = inet_pton(AF_INET, bare, &a6) == 1 ||
	    inet_pton(AF_INET6, bare, &a6) == 1;
	if (strchr(bare, ':') != NULL) {
		if (port == dflt)
			xasprintf(&ho->ho_hosthdr, "[%s]", bare);
		else
			xasprintf(&ho->ho_hosthdr, "[%s]:%d", bare, port);
	} else if (port == dflt)
		ho->ho_hosthdr = xstrdup(bare);
	else
		xasprintf(&ho->ho_hosthdr, "%s:%d", bare, port);
	TAILQ_INIT(&ho->ho_idle);
	TAILQ_INIT(&ho->ho_busy);
	TAILQ_INIT(&ho->ho_queue);
	TAILQ_INSERT_TAIL(&hp->hp_origins, ho, ho_entry);
	return ho;
}

static void
http_pool_destroy(struct http_pool *hp)
{
	struct http_origin	*ho;
	struct http_conn	*hc;
	struct http_request	*hq;

	event_free(hp->hp_kick);
	while ((ho = TAILQ_FIRST(&hp->hp_origins)) != NULL) {
		TAILQ_REMOVE(&hp->hp_origins, ho, ho_entry);
		http_origin_free(ho);
	}
	while ((hc = TAILQ_FIRST(&hp->hp_dead)) != NULL) {
		TAILQ_REMOVE(&hp->hp_dead, hc, hc_entry);
		http_conn_free(hc);
	}
	while ((hq = TAILQ_FIRST(&hp->hp_done)) != NULL) {
		TAILQ_REMOVE(&hp->hp_done, hq, hq_entry);
		http_request_free(hq);
	}
	if (hp->hp_ctx != NULL)
		SSL_CTX_free(hp->hp_ctx);
	free(hp);
}

/*
 * The pool's one worker: free dead connections, start queued requests,
 * then run the callbacks of finished ones.
 */
static void
http_pool_kick(evutil_socket_t fd, short events, void *arg)
{
	struct http_pool	*hp = arg;
	struct http_origin	*ho;
	struct http_conn	*hc;
	struct http_request	*hq;

	(void)fd;
	(void)events;
	hp->hp_inkick = 1;
	while ((hc = TAILQ_FIRST(&hp->hp_dead)) != NULL) {
		TAILQ_REMOVE(&hp->hp_dead, hc, hc_entry);
		http_conn_free(hc);
	}
	TAILQ_FOREACH(ho, &hp->hp_origins, ho_entry)
		http_origin_dispatch(ho);
	while (!hp->hp_freed && (hq = TAILQ_FIRST(&hp->hp_done)) != NULL) {
		TAILQ_REMOVE(&hp->hp_done, hq, hq_entry);
		http_request_deliver(hq);
	}
	hp->hp_inkick = 0;
	if (hp->hp_freed)
		http_pool_destroy(hp);
}

static void
http_pool_schedule(struct http_pool *hp)
{
	/* Activating an active event is a no-op, so this is cheap. */
	event_active(hp->hp_kick, EV_TIMEOUT, 0);
}

struct http_pool *
http_pool_new(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx,
    unsigned int max_conns, int timeout_sec)
{
	struct http_pool	*hp;

	hp = xcalloc(1, sizeof(*hp));
	hp->hp_base = base;
	hp->hp_dns = dns;
	if (ctx != NULL && SSL_CTX_up_ref(ctx))
		hp->hp_ctx = ctx;
	hp->hp_max_conns = max_conns > 0 ? max_conns : 1;
	hp->hp_timeout = timeout_sec > 0 ? timeout_sec : HTTP_DEFAULT_TIMEOUT;
	if ((hp->hp_kick = event_new(base, -1, 0, http_pool_kick, hp)) == NULL)
		fatalx("%s: event_new", __func__);
	TAILQ_INIT(&hp->hp_origins);
	TAILQ_INIT(&hp->hp_done);
	TAILQ_INIT(&hp->hp_dead);
	return hp;
}

/* No callback runs after this, not even for requests in flight. */
void
http_pool_free(struct http_pool *hp)
{
	if (hp == NULL)
		return;
	if (hp->hp_inkick) {
		hp->hp_freed = 1;
		return;
	}
	http_pool_destroy(hp);
}

static int
http_method_parse(const char *method, enum evhttp_cmd_type *type)
{
	if (strcmp(method, "GET") == 0)
		*type = EVHTTP_REQ_GET;
	else if (strcmp(method, "HEAD") == 0)
		*type = EVHTTP_REQ_HEAD;
	else if (strcmp(method, "POST") == 0)
		*type = EVHTTP_REQ_POST;
	else
		return -1;
	return 0;
}

static char *
http_uri_target(const struct evhttp_uri *uri)
{
	const char	*path, *query;
	char		*target = NULL;

	path = evhttp_uri_get_path(uri);
	if (path == NULL || *path == '\0')
		path = "/";
	query = evhttp_uri_get_query(uri);
	if (query != NULL)
		xasprintf(&target, "%s?%s", path, query);
	else
		target = xstrdup(path);
	return target;
}

struct http_request *
http_pool_request(struct http_pool *hp, const char *method, const char *url,
    const char *content_type, const char *accept, const char *body,
    size_t len, http_cb cb, void *arg)
{
	struct http_request	*hq;
	struct evhttp_uri	*uri = NULL;
	char			*cause = NULL;

	hq = xcalloc(1, sizeof(*hq));
	hq->hq_pool = hp;
	hq->hq_cb = cb;
	hq->hq_arg = arg;
	hq->hq_state = HTTP_REQ_NEW;
	TAILQ_INIT(&hq->hq_headers);

	if (http_method_parse(method, &hq->hq_type) == -1)
		xasprintf(&cause, "unsupported method %s", method);
	else if ((uri = evhttp_uri_parse(url)) == NULL)
		cause = xstrdup("invalid URL");
	else
		hq->hq_origin = http_origin_get(hp, uri, &cause);
	if (cause != NULL) {
		xasprintf(&hq->hq_error, "%s: %s", url, cause);
		free(cause);
		if (uri != NULL)
			evhttp_uri_free(uri);
		/* Reported from the kick, never from here. */
		http_request_finish(hq);
		return hq;
	}

	hq->hq_target = http_uri_target(uri);
	evhttp_uri_free(uri);
	if (content_type != NULL)
		hq->hq_ctype = xstrdup(content_type);
	if (accept != NULL)
		hq->hq_accept = xstrdup(accept);
	if (body != NULL && len != 0) {
		hq->hq_body = xmalloc(len);
		memcpy(hq->hq_body, body, len);
		hq->hq_len = len;
	}
	http_request_set_state(hq, HTTP_REQ_QUEUED);
	TAILQ_INSERT_TAIL(&hq->hq_origin->ho_queue, hq, hq_entry);
	http_pool_schedule(hp);
	return hq;
}

/*
 * The callback will not run.  A request in flight stays on its
 * connection until the response (or error) arrives, and is dropped then.
 * Cancelling from inside the request's own callback does nothing.
 */
void
http_request_cancel(struct http_request *hq)
{
	if (hq == NULL)
		return;
	switch (hq->hq_state) {
	case HTTP_REQ_QUEUED:
		TAILQ_REMOVE(&hq->hq_origin->ho_queue, hq, hq_entry);
		http_request_free(hq);
		break;
	case HTTP_REQ_RUNNING:
		hq->hq_cancelled = 1;
		hq->hq_cb = NULL;
		hq->hq_arg = NULL;
		break;
	case HTTP_REQ_DONE:
		TAILQ_REMOVE(&hq->hq_pool->hp_done, hq, hq_entry);
		http_request_free(hq);
		break;
	default:
		break;
	}
}

const char *
http_response_header(const struct http_response *hr, const char *name)
{
	if (hr == NULL || hr->hr_headers == NULL)
		return NULL;
	return evhttp_find_header(hr->hr_headers, name);
}

/* Does a rel value (space separated relation types) name rel? */
static int
http_links_rel_match(const char *value, const char *rel)
{
	size_t	 n, want = strlen(rel);

	for (;;) {
		value += strspn(value, " \t");
		if (*value == '\0')
			return 0;
		n = strcspn(value, " \t");
		if (n == want && strncasecmp(value, rel, n) == 0)
			return 1;
		value += n;
	}
}

/* A link-param value: token or quoted-string.  Caller frees. */
static char *
http_links_value(const char **pp)
{
	const char	*p = *pp;
	char		*v, *out;

	if (*p != '"') {
		v = xstrndup(p, strcspn(p, ";, \t"));
		*pp = p + strlen(v);
		return v;
	}
	out = v = xmalloc(strlen(p));
	for (p++; *p != '\0' && *p != '"'; p++) {
		if (*p == '\\' && p[1] != '\0')
			p++;
		*out++ = *p;
	}
	*out = '\0';
	if (*p == '"')
		p++;
	*pp = p;
	return v;
}

/* Parse one Link header value (RFC 8288), appending URLs that match. */
static void
http_links_parse(const char *p, const char *rel, char ***links, size_t *n)
{
	const char	*end, *name;
	char		*url, *value;
	size_t		 namelen;
	int		 match, seen;

	for (;;) {
		p += strspn(p, " \t,");
		if (*p == '\0')
			return;
		if (*p != '<' || (end = strchr(p + 1, '>')) == NULL) {
			/* Not a link-value: skip to the next one. */
			p += strcspn(p, ",");
			continue;
		}
		url = xstrndup(p + 1, end - p - 1);
		p = end + 1;
		match = seen = 0;
		for (;;) {
			p += strspn(p, " \t");
			if (*p != ';')
				break;
			p++;
			p += strspn(p, " \t");
			name = p;
			namelen = strcspn(p, "=;, \t");
			p += namelen;
			p += strspn(p, " \t");
			if (*p != '=')
				continue;
			p++;
			p += strspn(p, " \t");
			value = http_links_value(&p);
			/* Only the first rel parameter counts (RFC 8288 3.3). */
			if (!seen && namelen == 3 &&
			    strncasecmp(name, "rel", 3) == 0) {
				seen = 1;
				match = http_links_rel_match(value, rel);
			}
			free(value);
		}
		if (match) {
			*links = xreallocarray(*links, *n + 2, sizeof(**links));
			(*links)[(*n)++] = url;
			(*links)[*n] = NULL;
		} else
			free(url);
		p += strcspn(p, ",");
	}
}

char **
http_response_links(const struct http_response *hr, const char *rel)
{
	struct evkeyval	*kv;
	char		**links;
	size_t		 n = 0;

	links = xcalloc(1, sizeof(*links));
	if (hr == NULL || hr->hr_headers == NULL)
		return links;
	TAILQ_FOREACH(kv, hr->hr_headers, next) {
		if (strcasecmp(kv->key, "Link") == 0)
			http_links_parse(kv->value, rel, &links, &n);
	}
	return links;
}

void
http_links_free(char **links)
{
	size_t	 i;

	if (links == NULL)
		return;
	for (i = 0; links[i] != NULL; i++)
		free(links[i]);
	free(links);
}
