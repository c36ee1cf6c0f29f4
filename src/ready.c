/*
 * ready.c: before the CA is told to validate a challenge, check that the
 * answer can be reached the way the CA will reach it.
 *
 * A sidecar that starts beside nginx (two containers of a pod) may have
 * its first order ready before nginx listens.  Telling the CA then costs
 * a failed validation (Let's Encrypt allows 5 per account, hostname and
 * hour) and a one-minute backoff.  So each challenge is first fetched
 * locally, from the address the CA's request arrives at (the first
 * port-80 listen of nginx.conf, else challenge_listen, or
 * challenge_check), and tried again briefly until it answers: every
 * READY_RETRY_FIRST_MS, growing to READY_RETRY_MAX_MS, for at most
 * READY_LIMIT seconds (challenge_check timeout=), each try
 * READY_TRY_TIMEOUT seconds at most.
 *
 * Each challenge type is one row of ready_kinds: how one try starts and
 * how it is cancelled.  HTTP-01 is a GET with Host: the identifier,
 * through libevent's own evhttp: http_client.c sends the URL's host as
 * Host, and this request goes to one address for another name.
 * tls-alpn-01 is a handshake offering acme-tls/1 with the identifier's
 * SNI, that judges the certificate served as the CA does: with
 * tls_alpn_listen's address where the daemon answers itself, else with
 * nginx's (its module answers from the shared zone): the first ssl
 * listen on port 443 of nginx.conf, else its first ssl listen, else
 * port 443 of this host.  dns-01 asks every authoritative server of the
 * zone for the TXT record, with RD=0 (dns_check.c): the issuer's
 * dns_check list, or else the zone's NS set; "dns_check off" (or
 * challenge_check off) sends the CA without asking.
 *
 * Callbacks of libevent only record what a try found and arm the check's
 * timer; the timer frees the connection and decides, so nothing is freed
 * inside its own callback, and the caller's callback may cancel or start
 * anything.
 */
#include <sys/types.h>
#include <sys/time.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sidecar.h"

#define READY_TRY_TIMEOUT	2	/* seconds, one try */
#define READY_RETRY_FIRST_MS	250
#define READY_RETRY_MAX_MS	1000
#define READY_BODY_MAX		4096	/* a key authorization is ~90 bytes */
#define READY_SHOW_MAX		64	/* bytes of a wrong body in a message */

enum ready_state {
	READY_TRYING,		/* a request in flight */
	READY_JUDGING,		/* it ended; the timer decides */
	READY_WAITING,		/* until the next try */
	READY_STATE_MAX
};

static const char *ready_state_names[READY_STATE_MAX] = {
	"trying", "judging", "waiting"
};

struct ready_check;

/* One challenge type: how a try starts and is abandoned. */
struct ready_kind {
	enum challenge_type	 rk_type;
	const char		*rk_name;
	int			(*rk_start)(struct ready_check *);
	void			(*rk_stop)(struct ready_check *);
};

struct ready_check {
	struct event_base	*rc_base;
	const struct ready_kind	*rc_kind;
	enum ready_state	 rc_state;
	char			*rc_ident;	/* the identifier validated */
	char			*rc_token;
	char			*rc_keyauth;
	char			*rc_addr;	/* where the check connects */
	int			 rc_port;
	int			 rc_limit;	/* seconds of tries */
	char			*rc_url;	/* what the messages name */
	ready_cb		 rc_cb;
	void			*rc_arg;
	struct event		*rc_timer;
	struct timeval		 rc_start;
	struct timeval		 rc_try_start;
	int			 rc_tries;
	int			 rc_passed;	/* the last try found it */
	char			*rc_last;	/* what the last try found */

	/* HTTP-01 */
	struct evhttp_connection *rc_evcon;
	struct evhttp_request	*rc_req;
	int			 rc_errno;	/* errno when evhttp failed */
	int			 rc_everr;	/* evhttp's error, or -1 */

	/* tls-alpn-01 */
	struct bufferevent	*rc_bev;

	/* dns-01 */
	char			*rc_dns_fqdn;
	char			*rc_dns_value;
	char			*rc_dns_list;	/* dns_check's, or NULL */
	struct sockaddr_storage	 rc_dns_lookup;	/* dns_update's SERVER, */
	socklen_t		 rc_dns_lookuplen; /* or 0: resolv.conf */
	char			*rc_dns_zone;	/* dns_update's zone=, or NULL */
	struct dns_check	*rc_dns;
};

static int	ready_http_start(struct ready_check *);
static void	ready_http_stop(struct ready_check *);
static int	ready_tls_start(struct ready_check *);
static void	ready_tls_stop(struct ready_check *);
static int	ready_dns_start(struct ready_check *);
static void	ready_dns_stop(struct ready_check *);

static const struct ready_kind ready_kinds[] = {
	{ CHALLENGE_HTTP_01, "http-01", ready_http_start, ready_http_stop },
	{ CHALLENGE_TLS_ALPN_01, "tls-alpn-01", ready_tls_start,
	    ready_tls_stop },
	{ CHALLENGE_DNS_01, "dns-01", ready_dns_start, ready_dns_stop },
};

/* Where the checks go (ready_configure()); no address: checks are off. */
static struct {
	char		*addr;
	int		 port;
	int		 limit;		/* seconds */
	char		*from;		/* how it was chosen, for the log */
	char		*tls_addr;	/* tls-alpn-01's; NULL: unchecked */
	int		 tls_port;
} ready_conf;

static struct ready_stats ready_stats;

static void
ready_set_state(struct ready_check *rc, enum ready_state state)
{
	if (state >= READY_STATE_MAX)
		fatalx("%s: bad state %d", __func__, state);
	log_debug("readiness %s: %s -> %s", rc->rc_url,
	    ready_state_names[rc->rc_state], ready_state_names[state]);
	rc->rc_state = state;
}

void
ready_configure(const char *addr, int port, int limit, const char *from)
{
	free(ready_conf.addr);
	free(ready_conf.from);
	ready_conf.addr = addr != NULL ? xstrdup(addr) : NULL;
	ready_conf.port = port;
	ready_conf.limit = limit;
	ready_conf.from = from != NULL ? xstrdup(from) : NULL;
	if (addr == NULL)
		log_info("readiness check before validation: off");
	else
		log_info("readiness check before validation: %s%s%s:%d (%s), "
		    "for up to %ds", strchr(addr, ':') != NULL ? "[" : "", addr,
		    strchr(addr, ':') != NULL ? "]" : "", port, from, limit);
}

/* A wildcard address is reached through loopback, as the CA's NAT would. */
void
ready_configure_tls(const char *addr, int port, const char *from)
{
	free(ready_conf.tls_addr);
	ready_conf.tls_addr = NULL;
	if (addr == NULL)
		return;
	if (strcmp(addr, "0.0.0.0") == 0)
		addr = "127.0.0.1";
	else if (strcmp(addr, "::") == 0)
		addr = "::1";
	ready_conf.tls_addr = xstrdup(addr);
	ready_conf.tls_port = port;
	if (ready_conf.addr != NULL)
		log_info("readiness check of tls-alpn-01: %s%s%s:%d (%s)",
		    strchr(addr, ':') != NULL ? "[" : "", addr,
		    strchr(addr, ':') != NULL ? "]" : "", port, from);
}

int
ready_enabled(void)
{
	return ready_conf.addr != NULL;
}

void
ready_get_stats(struct ready_stats *st)
{
	*st = ready_stats;
}

/* s, at most READY_SHOW_MAX bytes of it, printable and in quotes. */
static char *
ready_show(const char *s, size_t len)
{
	char	*out, *p;
	size_t	 i, n = len > READY_SHOW_MAX ? READY_SHOW_MAX : len;

	out = p = xmalloc(n * 4 + 8);
	*p++ = '"';
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			p += sprintf(p, "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			*p++ = (char)c;
		else
			p += sprintf(p, "\\x%02x", c);
	}
	*p++ = '"';
	if (n < len)
		p += sprintf(p, "...");
	*p = '\0';
	return out;
}

static double
ready_elapsed(const struct ready_check *rc)
{
	struct timeval	 now, d;

	event_base_gettimeofday_cached(rc->rc_base, &now);
	timersub(&now, &rc->rc_start, &d);
	return (double)d.tv_sec + (double)d.tv_usec / 1e6;
}

static void
ready_arm(struct ready_check *rc, int ms)
{
	struct timeval	 tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(rc->rc_timer, &tv);
}

/* A try ended (from a libevent callback): the timer takes it from here. */
static void
ready_tried(struct ready_check *rc, int passed, char *what)
{
	rc->rc_passed = passed;
	free(rc->rc_last);
	rc->rc_last = what;
	ready_set_state(rc, READY_JUDGING);
	ready_arm(rc, 0);
}

static int
ready_retry_ms(const struct ready_check *rc)
{
	int	 ms = READY_RETRY_FIRST_MS, i;

	for (i = 1; i < rc->rc_tries && ms < READY_RETRY_MAX_MS; i++)
		ms *= 2;
	return ms > READY_RETRY_MAX_MS ? READY_RETRY_MAX_MS : ms;
}

static void
ready_try(struct ready_check *rc)
{
	rc->rc_tries++;
	ready_set_state(rc, READY_TRYING);
	if (rc->rc_kind->rk_start(rc) == -1)
		ready_tried(rc, 0, xstrdup("the request could not be made"));
}

/* Pass, give up, or try again later. */
static void
ready_judge(struct ready_check *rc)
{
	ready_cb	 cb = rc->rc_cb;
	void		*arg = rc->rc_arg;
	char		*why = NULL;
	int		 ms;

	rc->rc_kind->rk_stop(rc);
	if (rc->rc_passed) {
		ready_stats.rs_passed++;
		log_info("readiness %s answers (try %d, %.1fs)", rc->rc_url,
		    rc->rc_tries, ready_elapsed(rc));
		cb(0, NULL, arg);
		return;
	}
	ready_stats.rs_failed_tries++;
	ms = ready_retry_ms(rc);
	if (ready_elapsed(rc) + ms / 1000.0 <= rc->rc_limit) {
		if (rc->rc_tries == 1)
			log_info("readiness %s: %s; trying again for up to "
			    "%ds", rc->rc_url, rc->rc_last, rc->rc_limit);
		ready_set_state(rc, READY_WAITING);
		ready_arm(rc, ms);
		return;
	}
	ready_stats.rs_gave_up++;
	if (rc->rc_kind->rk_type == CHALLENGE_DNS_01)
		xasprintf(&why, "readiness check: %s for %s: %s after %.0f s "
		    "(%d tries); the CA was not asked to validate", rc->rc_url,
		    rc->rc_ident, rc->rc_last, ready_elapsed(rc),
		    rc->rc_tries);
	else
		xasprintf(&why, "readiness check: %s for %s %s (%d tries over "
		    "%.0fs); the CA was not asked to validate", rc->rc_url,
		    rc->rc_ident, rc->rc_last, rc->rc_tries,
		    ready_elapsed(rc));
	cb(-1, why, arg);
	free(why);
}

static void
ready_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct ready_check	*rc = arg;

	(void)fd;
	(void)ev;
	if (rc->rc_state == READY_JUDGING)
		ready_judge(rc);
	else if (rc->rc_state == READY_WAITING)
		ready_try(rc);
}

/* A check of type's row, not started; NULL if the type has none. */
static struct ready_check *
ready_new(struct event_base *base, enum challenge_type type,
    const char *ident, ready_cb cb, void *arg)
{
	struct ready_check	*rc;
	size_t			 i;

	if (ready_conf.addr == NULL)
		fatalx("%s: checks are off", __func__);
	for (i = 0; i < sizeof(ready_kinds) / sizeof(ready_kinds[0]); i++)
		if (ready_kinds[i].rk_type == type)
			break;
	if (i == sizeof(ready_kinds) / sizeof(ready_kinds[0]))
		return NULL;
	rc = xcalloc(1, sizeof(*rc));
	rc->rc_kind = &ready_kinds[i];
	rc->rc_base = base;
	rc->rc_ident = xstrdup(ident);
	rc->rc_limit = ready_conf.limit;
	rc->rc_cb = cb;
	rc->rc_arg = arg;
	rc->rc_everr = -1;
	return rc;
}

/* Its first try now. */
static void
ready_begin(struct ready_check *rc)
{
	if ((rc->rc_timer = evtimer_new(rc->rc_base, ready_timer_cb,
	    rc)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	event_base_gettimeofday_cached(rc->rc_base, &rc->rc_start);
	ready_try(rc);
}

/* HTTP-01 and tls-alpn-01; dns-01 is ready_start_dns()'s. */
struct ready_check *
ready_start(struct event_base *base, enum challenge_type type,
    const char *ident, const char *token, const char *keyauth, ready_cb cb,
    void *arg)
{
	struct ready_check	*rc;
	int			 v6, tls = type == CHALLENGE_TLS_ALPN_01;

	if (type == CHALLENGE_DNS_01 || (tls && ready_conf.tls_addr == NULL) ||
	    (rc = ready_new(base, type, ident, cb, arg)) == NULL)
		return NULL;
	rc->rc_token = token != NULL ? xstrdup(token) : NULL;
	rc->rc_keyauth = xstrdup(keyauth);
	rc->rc_addr = xstrdup(tls ? ready_conf.tls_addr : ready_conf.addr);
	rc->rc_port = tls ? ready_conf.tls_port : ready_conf.port;
	v6 = strchr(rc->rc_addr, ':') != NULL;
	if (tls)
		xasprintf(&rc->rc_url, "tls://%s%s%s:%d (acme-tls/1)",
		    v6 ? "[" : "", rc->rc_addr, v6 ? "]" : "", rc->rc_port);
	else
		xasprintf(&rc->rc_url, "http://%s%s%s:%d/.well-known/"
		    "acme-challenge/%s", v6 ? "[" : "", rc->rc_addr,
		    v6 ? "]" : "", rc->rc_port, token);
	ready_begin(rc);
	return rc;
}

/*
 * dns-01: whether every authoritative server answers value for fqdn,
 * the TXT record published for ident.  check is the certificate's
 * dns_check ("off", a list of servers, or NULL: the zone's NS set);
 * update its dns_update spec, whose SERVER (and zone=) find that NS set.
 * NULL when dns_check is off.
 */
struct ready_check *
ready_start_dns(struct event_base *base, const char *ident,
    const char *fqdn, const char *value, const char *check,
    const char *update, ready_cb cb, void *arg)
{
	struct ready_check	*rc;

	if ((check != NULL && strcmp(check, "off") == 0) ||
	    (rc = ready_new(base, CHALLENGE_DNS_01, ident, cb, arg)) == NULL)
		return NULL;
	rc->rc_dns_fqdn = xstrdup(fqdn);
	rc->rc_dns_value = xstrdup(value);
	rc->rc_keyauth = xstrdup(value);
	rc->rc_dns_list = check != NULL ? xstrdup(check) : NULL;
	if (check == NULL && update != NULL &&
	    dns_update_spec_server(update, fqdn, &rc->rc_dns_lookup,
	    &rc->rc_dns_lookuplen, &rc->rc_dns_zone) == -1)
		fatalx("%s: dns_update \"%s\" does not parse", __func__,
		    update);
	xasprintf(&rc->rc_url, "TXT %s", fqdn);
	ready_begin(rc);
	return rc;
}

/*
 * No callback runs after this.  The check's own callback may call it: by
 * then libevent is done with the timer that ran it, and ready_judge()
 * does not touch rc after calling back.
 */
void
ready_cancel(struct ready_check *rc)
{
	if (rc == NULL)
		return;
	rc->rc_kind->rk_stop(rc);
	event_free(rc->rc_timer);
	free(rc->rc_ident);
	free(rc->rc_token);
	free(rc->rc_keyauth);
	free(rc->rc_addr);
	free(rc->rc_url);
	free(rc->rc_last);
	free(rc->rc_dns_fqdn);
	free(rc->rc_dns_value);
	free(rc->rc_dns_list);
	free(rc->rc_dns_zone);
	free(rc);
}

/* HTTP-01: GET the token with Host: the identifier. */

static void
ready_http_error(enum evhttp_request_error error, void *arg)
{
	struct ready_check	*rc = arg;

	rc->rc_everr = (int)error;
	rc->rc_errno = errno;
}

/* What a try that got no HTTP answer ran into. */
static char *
ready_http_failure(struct ready_check *rc)
{
	char	*s = NULL;

	struct timeval	 now, d;

	event_base_gettimeofday_cached(rc->rc_base, &now);
	timersub(&now, &rc->rc_try_start, &d);
	if (rc->rc_everr == EVREQ_HTTP_TIMEOUT || rc->rc_errno == ETIMEDOUT ||
	    d.tv_sec >= READY_TRY_TIMEOUT)
		xasprintf(&s, "got no answer within %ds", READY_TRY_TIMEOUT);
	else if (rc->rc_errno == ECONNREFUSED || rc->rc_errno == ENOTCONN)
		/*
		 * evhttp shuts the socket down before it reports a failed
		 * connect, which leaves ENOTCONN in place of ECONNREFUSED.
		 */
		s = xstrdup("got connection refused");
	else if (rc->rc_everr == EVREQ_HTTP_DATA_TOO_LONG)
		s = xstrdup("got a response too large to be a key "
		    "authorization");
	else if (rc->rc_errno != 0 && rc->rc_errno != EAGAIN)
		xasprintf(&s, "got %s", strerror(rc->rc_errno));
	else
		s = xstrdup("got no HTTP response (connection closed)");
	return s;
}

static void
ready_http_done(struct evhttp_request *req, void *arg)
{
	struct ready_check	*rc = arg;
	struct evbuffer		*buf;
	char			*body = NULL, *shown, *what = NULL;
	size_t			 len;
	int			 status;

	rc->rc_req = NULL;
	if (req == NULL || (status = evhttp_request_get_response_code(req)) ==
	    0) {
		if (rc->rc_errno == 0)
			rc->rc_errno = errno;
		ready_tried(rc, 0, ready_http_failure(rc));
		return;
	}
	buf = evhttp_request_get_input_buffer(req);
	len = evbuffer_get_length(buf);
	body = xmalloc(len + 1);
	evbuffer_copyout(buf, body, len);
	body[len] = '\0';
	/* RFC 8555 8.3: the CA ignores whitespace around the body. */
	while (len > 0 && strchr(" \t\r\n", body[len - 1]) != NULL)
		body[--len] = '\0';
	if (status == 200 && strcmp(body, rc->rc_keyauth) == 0) {
		free(body);
		ready_tried(rc, 1, NULL);
		return;
	}
	shown = ready_show(body, len);
	if (status == 200)
		xasprintf(&what, "got HTTP 200 with %s, not the key "
		    "authorization", shown);
	else
		xasprintf(&what, "got HTTP %d %s", status, shown);
	free(shown);
	free(body);
	ready_tried(rc, 0, what);
}

static int
ready_http_start(struct ready_check *rc)
{
	struct evkeyvalq	*hdrs;
	struct timeval		 tv = { READY_TRY_TIMEOUT, 0 };
	char			*path = NULL, *host = NULL;

	rc->rc_errno = 0;
	rc->rc_everr = -1;
	event_base_gettimeofday_cached(rc->rc_base, &rc->rc_try_start);
	rc->rc_evcon = evhttp_connection_base_new(rc->rc_base, NULL,
	    rc->rc_addr, (unsigned short)rc->rc_port);
	if (rc->rc_evcon == NULL)
		return -1;
	evhttp_connection_set_timeout_tv(rc->rc_evcon, &tv);
	evhttp_connection_set_retries(rc->rc_evcon, 0);
	evhttp_connection_set_max_body_size(rc->rc_evcon, READY_BODY_MAX);
	evhttp_connection_set_max_headers_size(rc->rc_evcon, 16 * 1024);
	if ((rc->rc_req = evhttp_request_new(ready_http_done, rc)) == NULL)
		fatalx("%s: evhttp_request_new", __func__);
	evhttp_request_set_error_cb(rc->rc_req, ready_http_error);
	hdrs = evhttp_request_get_output_headers(rc->rc_req);
	if (strchr(rc->rc_ident, ':') != NULL) {
		xasprintf(&host, "[%s]", rc->rc_ident);
		evhttp_add_header(hdrs, "Host", host);
		free(host);
	} else
		evhttp_add_header(hdrs, "Host", rc->rc_ident);
	evhttp_add_header(hdrs, "User-Agent", "acme-sidecar/" SIDECAR_VERSION
	    " (readiness check)");
	evhttp_add_header(hdrs, "Connection", "close");
	xasprintf(&path, "/.well-known/acme-challenge/%s", rc->rc_token);
	/* On failure libevent has freed the request, without a callback. */
	if (evhttp_make_request(rc->rc_evcon, rc->rc_req, EVHTTP_REQ_GET,
	    path) == -1) {
		rc->rc_req = NULL;
		free(path);
		return -1;
	}
	free(path);
	return 0;
}

/* Freeing the connection drops a request in flight, with no callback. */
static void
ready_http_stop(struct ready_check *rc)
{
	if (rc->rc_evcon != NULL)
		evhttp_connection_free(rc->rc_evcon);
	rc->rc_evcon = NULL;
	rc->rc_req = NULL;
}

/*
 * tls-alpn-01: a handshake offering acme-tls/1 with the SNI the CA sends
 * (alpn_sni_name()), judged as RFC 8737 section 3 has the CA judge it.
 */

static const unsigned char ready_alpn_proto[] = "\x0a" "acme-tls/1";
#define READY_ACME_IDENTIFIER	"1.3.6.1.5.5.7.1.31"

static SSL_CTX *
ready_tls_ctx(void)
{
	static SSL_CTX	*ctx;

	/* The certificate is self-signed: judged below, not verified. */
	if (ctx == NULL && (ctx = SSL_CTX_new(TLS_client_method())) != NULL &&
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		SSL_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

/* The identifier alone in subjectAltName. */
static int
ready_tls_san_ok(X509 *x, const char *ident)
{
	GENERAL_NAMES	*gens;
	int		 n;

	if ((gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL)) == NULL)
		return 0;
	n = sk_GENERAL_NAME_num(gens);
	GENERAL_NAMES_free(gens);
	if (n != 1)
		return 0;
	if (strchr(ident, ':') != NULL || strspn(ident, "0123456789.") ==
	    strlen(ident))
		return X509_check_ip_asc(x, ident, 0) == 1;
	return X509_check_host(x, ident, strlen(ident),
	    X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
}

/* A critical acmeIdentifier, the OCTET STRING of SHA-256(keyauth). */
static int
ready_tls_ext_ok(X509 *x, const char *keyauth)
{
	unsigned char		 want[2 + SHA256_DIGEST_LENGTH];
	ASN1_OBJECT		*oid;
	X509_EXTENSION		*ext;
	ASN1_OCTET_STRING	*v;
	int			 loc;

	if ((oid = OBJ_txt2obj(READY_ACME_IDENTIFIER, 1)) == NULL)
		return 0;
	loc = X509_get_ext_by_OBJ(x, oid, -1);
	ASN1_OBJECT_free(oid);
	if (loc < 0 || (ext = X509_get_ext(x, loc)) == NULL ||
	    !X509_EXTENSION_get_critical(ext))
		return 0;
	v = X509_EXTENSION_get_data(ext);
	want[0] = V_ASN1_OCTET_STRING;
	want[1] = SHA256_DIGEST_LENGTH;
	SHA256((const unsigned char *)keyauth, strlen(keyauth), want + 2);
	return ASN1_STRING_length(v) == (int)sizeof(want) &&
	    memcmp(ASN1_STRING_get0_data(v), want, sizeof(want)) == 0;
}

/* NULL when the handshake served the right certificate, else what came. */
static char *
ready_tls_judge(struct ready_check *rc, SSL *ssl)
{
	const unsigned char	*proto;
	unsigned int		 len;
	X509			*x;
	char			*what = NULL;

	SSL_get0_alpn_selected(ssl, &proto, &len);
	if (len != sizeof(ready_alpn_proto) - 2 ||
	    memcmp(proto, ready_alpn_proto + 1, len) != 0)
		return xstrdup("got a handshake without acme-tls/1");
	if ((x = SSL_get1_peer_certificate(ssl)) == NULL)
		return xstrdup("got no certificate");
	if (!ready_tls_san_ok(x, rc->rc_ident))
		what = xstrdup("got a certificate for another name");
	else if (!ready_tls_ext_ok(x, rc->rc_keyauth))
		what = xstrdup("got a certificate without this "
		    "authorization's acmeIdentifier");
	X509_free(x);
	return what;
}

static void
ready_tls_event(struct bufferevent *bev, short what, void *arg)
{
	struct ready_check	*rc = arg;
	unsigned long		 e;
	char			*s = NULL, buf[256];

	if (what & BEV_EVENT_CONNECTED) {
		s = ready_tls_judge(rc, bufferevent_openssl_get_ssl(bev));
		ready_tried(rc, s == NULL, s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		xasprintf(&s, "got no handshake within %ds", READY_TRY_TIMEOUT);
	else if ((e = bufferevent_get_openssl_error(bev)) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		xasprintf(&s, "got %s", buf);
	} else if (EVUTIL_SOCKET_ERROR() != 0)
		xasprintf(&s, "got %s", evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
	else
		s = xstrdup("got the connection closed");
	ready_tried(rc, 0, s);
}

static int
ready_tls_start(struct ready_check *rc)
{
	struct timeval		 tv = { READY_TRY_TIMEOUT, 0 };
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 sslen;
	SSL_CTX			*ctx;
	SSL			*ssl;
	char			*sni;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, rc->rc_addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(rc->rc_port);
		sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, rc->rc_addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(rc->rc_port);
		sslen = sizeof(*sin6);
	} else
		return -1;
	if ((ctx = ready_tls_ctx()) == NULL || (ssl = SSL_new(ctx)) == NULL)
		return -1;
	sni = alpn_sni_name(rc->rc_ident);
	if (SSL_set_tlsext_host_name(ssl, sni) != 1 ||
	    SSL_set_alpn_protos(ssl, ready_alpn_proto,
	    sizeof(ready_alpn_proto) - 1) != 0) {
		free(sni);
		SSL_free(ssl);
		return -1;
	}
	free(sni);
	if ((rc->rc_bev = bufferevent_openssl_socket_new(rc->rc_base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		fatalx("%s: bufferevent_openssl_socket_new", __func__);
	bufferevent_setcb(rc->rc_bev, NULL, NULL, ready_tls_event, rc);
	bufferevent_set_timeouts(rc->rc_bev, &tv, &tv);
	if (bufferevent_socket_connect(rc->rc_bev, (struct sockaddr *)&ss,
	    (int)sslen) == -1) {
		bufferevent_free(rc->rc_bev);
		rc->rc_bev = NULL;
		return -1;
	}
	return 0;
}

static void
ready_tls_stop(struct ready_check *rc)
{
	if (rc->rc_bev != NULL)
		bufferevent_free(rc->rc_bev);
	rc->rc_bev = NULL;
}

/* dns-01: one try asks every server once (dns_check.c). */

static void
ready_dns_done(int passed, char *what, void *arg)
{
	ready_tried(arg, passed, what);
}

static int
ready_dns_start(struct ready_check *rc)
{
	char	*why = NULL;

	rc->rc_dns = dns_check_start(rc->rc_base, rc->rc_dns_list,
	    rc->rc_dns_lookuplen > 0 ? &rc->rc_dns_lookup : NULL,
	    rc->rc_dns_lookuplen, rc->rc_dns_zone, rc->rc_dns_fqdn,
	    rc->rc_dns_value, ready_dns_done, rc, &why);
	if (rc->rc_dns == NULL)
		ready_tried(rc, 0, why);
	return 0;
}

static void
ready_dns_stop(struct ready_check *rc)
{
	dns_check_free(rc->rc_dns);
	rc->rc_dns = NULL;
}
