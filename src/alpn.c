/*
 * alpn.c: the daemon's own tls-alpn-01 responder (RFC 8737), on the
 * address of tls_alpn_listen.  (The validation certificates also go to
 * the shared zone, where nginx's module answers the CA on its own https
 * port: order.c makes each once and hands it to both.)
 *
 * The CA connects with SNI naming the identifier (RFC 8738 section 6's
 * reverse name for an IP address) and ALPN offering only "acme-tls/1",
 * and reads the certificate the handshake presents: the self-signed
 * validation certificate of keys_alpn_cert().  No application data
 * follows (RFC 8737 section 3), so a connection is closed as soon as the
 * handshake is over.
 *
 * Anything else is refused during the handshake, by OpenSSL's own
 * parsing of the ClientHello: a client that offers no ALPN, or not
 * "acme-tls/1" (a browser that reached the port by mistake), or names
 * nothing pending, gets an alert and no certificate.  A hostile client
 * holds at most one of ALPN_MAX_CONNS connections, for at most
 * ALPN_HANDSHAKE_TIMEOUT seconds.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sidecar.h"

/* The ALPN protocol list of RFC 8737 section 6.2, in wire format. */
static const unsigned char alpn_proto[] = "\x0a" "acme-tls/1";

/* A validation certificate, for one identifier's pending authorization. */
struct alpn_name {
	TAILQ_ENTRY(alpn_name)	 an_entry;
	char			*an_ident;	/* as the CA names it */
	char			*an_sni;	/* as the CA sends it */
	char			*an_keyauth;
	X509			*an_cert;
	EVP_PKEY		*an_key;
};

struct alpn_conn {
	TAILQ_ENTRY(alpn_conn)	 ac_entry;
	struct bufferevent	*ac_bev;
	struct event		*ac_timer;
};

static struct {
	struct event_base		*base;
	struct evconnlistener		*listener;
	struct event			*resume;	/* after EMFILE */
	SSL_CTX				*ctx;
	int				 port;
	TAILQ_HEAD(, alpn_name)		 names;
	size_t				 nnames;
	TAILQ_HEAD(, alpn_conn)		 conns;
	size_t				 nconns;
} alpn = {
	.names = TAILQ_HEAD_INITIALIZER(alpn.names),
	.conns = TAILQ_HEAD_INITIALIZER(alpn.conns),
};

/*
 * The SNI the CA sends for ident: the name itself, or for an IP address
 * the reverse-mapping name of RFC 8738 section 6 ("1.2.0.192.in-addr.arpa",
 * nibbles under "ip6.arpa").
 */
char *
alpn_sni_name(const char *ident)
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 a[16];
	char			*s, *p;
	int			 i;

	if (inet_pton(AF_INET, ident, a) == 1) {
		xasprintf(&s, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1],
		    a[0]);
		return s;
	}
	if (inet_pton(AF_INET6, ident, a) == 1) {
		s = p = xcalloc(1, 16 * 4 + sizeof("ip6.arpa"));
		for (i = 15; i >= 0; i--) {
			*p++ = hex[a[i] & 0x0f];
			*p++ = '.';
			*p++ = hex[a[i] >> 4];
			*p++ = '.';
		}
		memcpy(p, "ip6.arpa", sizeof("ip6.arpa"));
		return s;
	}
	return xstrdup(ident);
}

/* The newest certificate for sni: names compare without case. */
static struct alpn_name *
alpn_find(const char *sni)
{
	struct alpn_name	*an;

	TAILQ_FOREACH(an, &alpn.names, an_entry) {
		if (strcasecmp(an->an_sni, sni) == 0)
			return an;
	}
	return NULL;
}

static void
alpn_name_free(struct alpn_name *an)
{
	free(an->an_ident);
	free(an->an_sni);
	free(an->an_keyauth);
	X509_free(an->an_cert);
	EVP_PKEY_free(an->an_key);
	free(an);
}

/* Whether tls_alpn_listen's responder runs (it starts with the daemon). */
int
alpn_running(void)
{
	return alpn.listener != NULL;
}

/* Answer ident with cert and key (keys_alpn_cert()), which it shares. */
int
alpn_add(const char *ident, const char *keyauth, X509 *cert, EVP_PKEY *key,
    char **cause)
{
	struct alpn_name	*an;

	if (alpn.listener == NULL) {
		xasprintf(cause, "challenge tls-alpn-01 for %s: the "
		    "tls_alpn_listen responder is not running", ident);
		return -1;
	}
	if (alpn.nnames >= ALPN_MAX_NAMES) {
		xasprintf(cause, "challenge tls-alpn-01 for %s: %d validation "
		    "certificates pending already", ident, ALPN_MAX_NAMES);
		return -1;
	}
	an = xcalloc(1, sizeof(*an));
	if (X509_up_ref(cert) != 1 || EVP_PKEY_up_ref(key) != 1)
		fatalx("%s: up_ref", __func__);
	an->an_cert = cert;
	an->an_key = key;
	an->an_ident = xstrdup(ident);
	an->an_sni = alpn_sni_name(ident);
	an->an_keyauth = xstrdup(keyauth);
	/* Two certificates sharing a name: the newest order is answered. */
	TAILQ_INSERT_HEAD(&alpn.names, an, an_entry);
	alpn.nnames++;
	log_debug("tls-alpn-01: answering %s (SNI %s)", ident, an->an_sni);
	return 0;
}

void
alpn_remove(const char *ident, const char *keyauth)
{
	struct alpn_name	*an;

	TAILQ_FOREACH(an, &alpn.names, an_entry) {
		if (strcmp(an->an_ident, ident) == 0 &&
		    strcmp(an->an_keyauth, keyauth) == 0)
			break;
	}
	if (an == NULL)
		return;
	TAILQ_REMOVE(&alpn.names, an, an_entry);
	alpn.nnames--;
	alpn_name_free(an);
}

/* A client that offers no ALPN at all never reaches alpn_select(). */
static int
alpn_client_hello(SSL *ssl, int *alert, void *arg)
{
	const unsigned char	*ext;
	size_t			 len;

	(void)arg;
	if (SSL_client_hello_get0_ext(ssl,
	    TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
	    &len) != 1) {
		*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* The validation certificate of the name asked for, or an alert. */
static int
alpn_servername(SSL *ssl, int *alert, void *arg)
{
	const char		*sni;
	struct alpn_name	*an;

	(void)arg;
	sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (sni == NULL || (an = alpn_find(sni)) == NULL) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	if (SSL_use_certificate(ssl, an->an_cert) != 1 ||
	    SSL_use_PrivateKey(ssl, an->an_key) != 1) {
		log_openssl("tls-alpn-01: certificate");
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* "acme-tls/1" or a no_application_protocol alert. */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char	*sel;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, alpn_proto,
	    sizeof(alpn_proto) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static void
alpn_conn_close(struct alpn_conn *ac)
{
	TAILQ_REMOVE(&alpn.conns, ac, ac_entry);
	alpn.nconns--;
	event_free(ac->ac_timer);
	bufferevent_free(ac->ac_bev);
	free(ac);
}

static void
alpn_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	alpn_conn_close(arg);
}

/* Application data: none is expected (RFC 8737 section 3). */
static void
alpn_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	alpn_conn_close(arg);
}

/* The handshake is over, or failed: either way, the connection ends. */
static void
alpn_event(struct bufferevent *bev, short what, void *arg)
{
	const char	*sni;

	if (what & BEV_EVENT_CONNECTED) {
		sni = SSL_get_servername(bufferevent_openssl_get_ssl(bev),
		    TLSEXT_NAMETYPE_host_name);
		log_debug("tls-alpn-01: validation certificate served for %s",
		    sni != NULL ? sni : "?");
	}
	alpn_conn_close(arg);
}

static void
alpn_accept(struct evconnlistener *listener, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	const struct timeval	 tv = { ALPN_HANDSHAKE_TIMEOUT, 0 };
	struct alpn_conn	*ac;
	SSL			*ssl;

	(void)listener;
	(void)sa;
	(void)salen;
	(void)arg;
	if (alpn.nconns >= ALPN_MAX_CONNS || (ssl = SSL_new(alpn.ctx)) ==
	    NULL) {
		evutil_closesocket(fd);
		return;
	}
	ac = xcalloc(1, sizeof(*ac));
	if ((ac->ac_bev = bufferevent_openssl_socket_new(alpn.base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		fatalx("%s: bufferevent_openssl_socket_new", __func__);
	if ((ac->ac_timer = evtimer_new(alpn.base, alpn_timeout, ac)) ==
	    NULL || evtimer_add(ac->ac_timer, &tv) == -1)
		fatalx("%s: evtimer", __func__);
	TAILQ_INSERT_TAIL(&alpn.conns, ac, ac_entry);
	alpn.nconns++;
	bufferevent_setcb(ac->ac_bev, alpn_read, NULL, alpn_event, ac);
	bufferevent_enable(ac->ac_bev, EV_READ);
}

static void
alpn_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (alpn.listener != NULL)
		evconnlistener_enable(alpn.listener);
}

/*
 * Out of descriptors or memory, the pending connection stays in the
 * backlog and the listener readable: pause a second rather than spin.
 */
static void
alpn_accept_error(struct evconnlistener *listener, void *arg)
{
	const struct timeval	 tv = { 1, 0 };
	int			 e = EVUTIL_SOCKET_ERROR();

	(void)arg;
	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
		return;
	log_warnx("tls_alpn_listen: accept: %s; pausing for 1s",
	    strerror(e));
	evconnlistener_disable(listener);
	evtimer_add(alpn.resume, &tv);
}

static SSL_CTX *
alpn_ctx_new(void)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		return NULL;
	/* A validation is one handshake: nothing to resume. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_client_hello_cb(ctx, alpn_client_hello, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, alpn_servername);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	return ctx;
}

static int
alpn_bound_port(evutil_socket_t fd)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int
alpn_start(struct event_base *base, const char *addr, int port,
    char **cause)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 sslen;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sslen = sizeof(*sin6);
	} else {
		xasprintf(cause, "tls_alpn_listen: bad address %s", addr);
		return -1;
	}
	if ((alpn.ctx = alpn_ctx_new()) == NULL) {
		log_openssl("tls_alpn_listen");
		xasprintf(cause, "tls_alpn_listen: cannot set up TLS");
		return -1;
	}
	alpn.base = base;
	if ((alpn.listener = evconnlistener_new_bind(base, alpn_accept, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    128, (struct sockaddr *)&ss, (int)sslen)) == NULL) {
		xasprintf(cause, "tls_alpn_listen: cannot listen on %s:%d: "
		    "%s", addr, port, evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
		SSL_CTX_free(alpn.ctx);
		alpn.ctx = NULL;
		return -1;
	}
	evconnlistener_set_error_cb(alpn.listener, alpn_accept_error);
	if ((alpn.resume = evtimer_new(base, alpn_resume, NULL)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	alpn.port = alpn_bound_port(evconnlistener_get_fd(alpn.listener));
	return 0;
}

int
alpn_port(void)
{
	return alpn.port;
}

void
alpn_stop(void)
{
	struct alpn_name	*an;

	while (!TAILQ_EMPTY(&alpn.conns))
		alpn_conn_close(TAILQ_FIRST(&alpn.conns));
	while ((an = TAILQ_FIRST(&alpn.names)) != NULL) {
		TAILQ_REMOVE(&alpn.names, an, an_entry);
		alpn_name_free(an);
	}
	alpn.nnames = 0;
	if (alpn.listener != NULL)
		evconnlistener_free(alpn.listener);
	alpn.listener = NULL;
	if (alpn.resume != NULL)
		event_free(alpn.resume);
	alpn.resume = NULL;
	SSL_CTX_free(alpn.ctx);
	alpn.ctx = NULL;
}
