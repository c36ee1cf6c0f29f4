/*
 * hs_client: the TLS handshake load generator of scripts/bench/handshake.
 *
 *	hs_client -p PORT -s SNI [-a ADDR] [-c CONNS] [-t SECONDS]
 *	    [-f SHA256] [-C CAFILE] [-V]
 *
 * First, when -f is given, one checked handshake: the chain is verified
 * against CAFILE (-C) and the name SNI, and the SHA-256 of the leaf the
 * server sent must equal SHA256 (hex, colons allowed).  A contender that
 * serves the wrong certificate fails here, loudly, with exit status 2.
 *
 * Then, for SECONDS (-t, 0 = none), CONNS connections (-c) at once, each
 * doing connect, a full handshake with SNI, close_notify and close, over
 * and over, on one epoll loop.  No session is ever offered (no cache, no
 * tickets), and a handshake the server reports as resumed is an error.
 * The loop waits for the server to close after our close_notify, so the
 * server has read our Finished before the connection counts as done and
 * the TIME_WAIT sockets stay on the server's side of loopback.
 *
 * One client core has to keep one server core busy, and a full OpenSSL
 * 3.0 client costs more per handshake than the server does.  So by
 * default the load connections take three shortcuts, all on the client's
 * side (see "Shortcuts" below); what the server does is unchanged.  -V
 * turns them off.
 *
 * Prints one JSON line: handshakes, errors, seconds, the client's own CPU
 * seconds, and what the checked handshake saw.  Exit status: 0, 1 on a
 * usage or set-up error, 2 when the check fails.
 */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define HS_MAX_CONNS		4096
#define HS_CONN_TIMEOUT		5.0	/* seconds one connection may take */
#define HS_MAX_REPORTED		5	/* error reasons printed, at most */

enum hs_state {
	HS_IDLE,
	HS_HANDSHAKE,		/* SSL_connect until it succeeds */
	HS_CLOSING,		/* close_notify sent, waiting for EOF */
	HS_STATE_MAX
};

struct hs_conn {
	enum hs_state	 state;
	int		 fd;
	SSL		*ssl;
	double		 started;
};

struct hs_client {
	const char	*addr;
	const char	*sni;
	int		 port;
	int		 nconns;
	double		 seconds;
	int		 verify_all;
	SSL_CTX		*ctx;
	int		 ep;
	struct sockaddr_in sin;
	struct hs_conn	*conns;
	unsigned long	 handshakes;
	unsigned long	 errors;
	unsigned long	 reported;
};

/*
 * Shortcuts for the load connections, off for the checked handshake and
 * with -V.  libssl calls the three functions below through the dynamic
 * linker, so these definitions in the executable come before
 * libcrypto's:
 *
 * - EVP_DigestVerify checks the server's TLS 1.3 CertificateVerify (and
 *   the TLS 1.2 ServerKeyExchange, and certificate signatures): taken as
 *   good.  Checking an ECDSA P-256 signature costs about three times what
 *   making it costs the server.
 * - d2i_X509 parses each certificate the server sends.  In OpenSSL 3.0
 *   that goes through the provider decoders and is a third of the
 *   client's time: bytes seen before get the X509 parsed then, with one
 *   more reference, as if parsed again.
 * - EVP_PKEY_keygen makes the client's ephemeral X25519 key share: the
 *   first one is kept and offered again.  The server still makes its
 *   own key and computes the shared secret, as with a fresh share.
 *
 * None of them changes one operation on the server's side.
 */
#define HS_X509_CACHE	8

static int	hs_shortcuts;

static struct hs_x509_cached {
	unsigned char	*der;
	long		 len;
	X509		*x509;
} hs_x509_cache[HS_X509_CACHE];

static EVP_PKEY	*hs_x25519;

static void *
hs_real(const char *name)
{
	void	*f;

	if ((f = dlsym(RTLD_NEXT, name)) == NULL) {
		fprintf(stderr, "hs_client: no %s in libcrypto\n", name);
		exit(1);
	}
	return f;
}

int
EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sig, size_t siglen,
    const unsigned char *tbs, size_t tbslen)
{
	static int	(*real)(EVP_MD_CTX *, const unsigned char *, size_t,
			    const unsigned char *, size_t);

	if (hs_shortcuts)
		return 1;
	if (real == NULL)
		*(void **)&real = hs_real("EVP_DigestVerify");
	return real(ctx, sig, siglen, tbs, tbslen);
}

X509 *
d2i_X509(X509 **a, const unsigned char **pp, long len)
{
	static X509	*(*real)(X509 **, const unsigned char **, long);
	struct hs_x509_cached	*c;
	const unsigned char	*p;
	X509			*x;
	int			 i;

	if (real == NULL)
		*(void **)&real = hs_real("d2i_X509");
	if (!hs_shortcuts || len <= 0)
		return real(a, pp, len);
	for (i = 0; i < HS_X509_CACHE; i++) {
		c = &hs_x509_cache[i];
		if (c->x509 == NULL)
			break;
		if (c->len != len || memcmp(c->der, *pp, len) != 0)
			continue;
		X509_up_ref(c->x509);
		if (a != NULL) {
			X509_free(*a);
			*a = c->x509;
		}
		*pp += len;
		return c->x509;
	}
	p = *pp;
	if ((x = real(a, pp, len)) == NULL || i == HS_X509_CACHE)
		return x;
	if ((c->der = malloc(len)) == NULL)
		return x;
	memcpy(c->der, p, len);
	c->len = len;
	X509_up_ref(x);
	c->x509 = x;
	return x;
}

int
EVP_PKEY_keygen(EVP_PKEY_CTX *ctx, EVP_PKEY **ppkey)
{
	static int	(*real)(EVP_PKEY_CTX *, EVP_PKEY **);
	int		 r;

	if (real == NULL)
		*(void **)&real = hs_real("EVP_PKEY_keygen");
	if (!hs_shortcuts || ppkey == NULL || *ppkey != NULL ||
	    !EVP_PKEY_CTX_is_a(ctx, "X25519"))
		return real(ctx, ppkey);
	if (hs_x25519 == NULL) {
		if ((r = real(ctx, &hs_x25519)) <= 0)
			return r;
	}
	EVP_PKEY_up_ref(hs_x25519);
	*ppkey = hs_x25519;
	return 1;
}

static double
hs_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
hs_cpu_self(void)
{
	struct rusage	ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void
hs_report_error(struct hs_client *hc, const char *what)
{
	unsigned long	 e;
	char		 buf[256];

	hc->errors++;
	if (hc->reported++ >= HS_MAX_REPORTED) {
		ERR_clear_error();
		return;
	}
	if ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof buf);
		fprintf(stderr, "hs_client: %s: %s\n", what, buf);
	} else if (errno != 0)
		fprintf(stderr, "hs_client: %s: %s\n", what, strerror(errno));
	else
		fprintf(stderr, "hs_client: %s\n", what);
	ERR_clear_error();
}

/* No session cache and no tickets: every handshake is a full one. */
static SSL_CTX *
hs_ctx_new(const char *cafile)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return NULL;
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* Whole flights per read(2), not a header and then a body. */
	SSL_CTX_set_read_ahead(ctx, 1);
	if (cafile != NULL &&
	    SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int
hs_socket(struct hs_client *hc, int nonblock)
{
	int	fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd == -1)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&hc->sin, sizeof hc->sin) == -1 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Lower-case hex without colons, so that both spellings compare equal. */
static void
hs_hex_normalise(const char *in, char *out, size_t outlen)
{
	size_t	n = 0;

	for (; *in != '\0' && n + 1 < outlen; in++) {
		if (*in != ':')
			out[n++] = tolower((unsigned char)*in);
	}
	out[n] = '\0';
}

/*
 * The checked handshake: verified chain and name, leaf fingerprint
 * compared with want.  Prints what it saw into the JSON fields.
 */
static int
hs_check(struct hs_client *hc, const char *cafile, const char *want,
    char *got, size_t gotlen, char *proto, size_t protolen)
{
	SSL_CTX		*ctx = NULL;
	SSL		*ssl = NULL;
	X509		*leaf;
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen, i;
	char		 wantn[2 * EVP_MAX_MD_SIZE + 1];
	long		 vr;
	int		 fd = -1, rc = -1;

	snprintf(got, gotlen, "none");
	snprintf(proto, protolen, "none");
	if ((ctx = hs_ctx_new(cafile)) == NULL) {
		hs_report_error(hc, "check: SSL_CTX");
		goto out;
	}
	if (cafile != NULL)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if ((fd = hs_socket(hc, 0)) == -1) {
		hs_report_error(hc, "check: connect");
		goto out;
	}
	if ((ssl = SSL_new(ctx)) == NULL ||
	    SSL_set_fd(ssl, fd) != 1 ||
	    SSL_set_tlsext_host_name(ssl, hc->sni) != 1 ||
	    (cafile != NULL && SSL_set1_host(ssl, hc->sni) != 1)) {
		hs_report_error(hc, "check: SSL");
		goto out;
	}
	if (SSL_connect(ssl) != 1) {
		vr = SSL_get_verify_result(ssl);
		if (vr != X509_V_OK)
			fprintf(stderr, "hs_client: check: verify: %s\n",
			    X509_verify_cert_error_string(vr));
		hs_report_error(hc, "check: handshake");
		goto out;
	}
	snprintf(proto, protolen, "%s %s", SSL_get_version(ssl),
	    SSL_get_cipher_name(ssl));
	if ((leaf = SSL_get0_peer_certificate(ssl)) == NULL ||
	    X509_digest(leaf, EVP_sha256(), md, &mdlen) != 1) {
		hs_report_error(hc, "check: no leaf certificate");
		goto out;
	}
	for (i = 0; i < mdlen && 2 * i + 2 < gotlen; i++)
		snprintf(got + 2 * i, 3, "%02x", md[i]);
	hs_hex_normalise(want, wantn, sizeof wantn);
	if (strcmp(got, wantn) != 0) {
		fprintf(stderr, "hs_client: check: leaf sha256 %s, expected "
		    "%s\n", got, wantn);
		goto out;
	}
	if (SSL_session_reused(ssl)) {
		fprintf(stderr, "hs_client: check: session was resumed\n");
		goto out;
	}
	SSL_shutdown(ssl);
	rc = 0;
out:
	SSL_free(ssl);
	if (fd != -1)
		close(fd);
	SSL_CTX_free(ctx);
	return rc;
}

static void
hs_conn_close(struct hs_client *hc, struct hs_conn *c)
{
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd != -1) {
		epoll_ctl(hc->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	c->state = HS_IDLE;
}

static int
hs_conn_wait(struct hs_client *hc, struct hs_conn *c, uint32_t events,
    int op)
{
	struct epoll_event	ev;

	memset(&ev, 0, sizeof ev);
	ev.events = events;
	ev.data.ptr = c;
	return epoll_ctl(hc->ep, op, c->fd, &ev);
}

static void
hs_conn_start(struct hs_client *hc, struct hs_conn *c)
{
	errno = 0;
	if ((c->fd = hs_socket(hc, 1)) == -1) {
		hs_report_error(hc, "connect");
		return;
	}
	if ((c->ssl = SSL_new(hc->ctx)) == NULL ||
	    SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_set_tlsext_host_name(c->ssl, hc->sni) != 1) {
		hs_report_error(hc, "SSL_new");
		hs_conn_close(hc, c);
		return;
	}
	c->state = HS_HANDSHAKE;
	c->started = hs_now();
	/* Wait for the connect to finish before the ClientHello. */
	if (hs_conn_wait(hc, c, EPOLLOUT, EPOLL_CTL_ADD) == -1) {
		hs_report_error(hc, "epoll_ctl");
		hs_conn_close(hc, c);
	}
}

/* close_notify, then wait for the server to close its side. */
static void
hs_conn_finish(struct hs_client *hc, struct hs_conn *c)
{
	SSL_set_quiet_shutdown(c->ssl, 0);
	SSL_shutdown(c->ssl);
	ERR_clear_error();
	c->state = HS_CLOSING;
	if (hs_conn_wait(hc, c, EPOLLIN, EPOLL_CTL_MOD) == -1)
		hs_conn_close(hc, c);
}

static void
hs_conn_handshake(struct hs_client *hc, struct hs_conn *c)
{
	int	r, e;

	errno = 0;
	if ((r = SSL_connect(c->ssl)) == 1) {
		if (SSL_session_reused(c->ssl)) {
			hs_report_error(hc, "the server resumed a session");
			hs_conn_close(hc, c);
			return;
		}
		hc->handshakes++;
		hs_conn_finish(hc, c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (hs_conn_wait(hc, c, e == SSL_ERROR_WANT_READ ? EPOLLIN :
		    EPOLLOUT, EPOLL_CTL_MOD) == -1) {
			hs_report_error(hc, "epoll_ctl");
			hs_conn_close(hc, c);
		}
		return;
	}
	hs_report_error(hc, e == SSL_ERROR_SYSCALL && errno == 0 ?
	    "handshake: connection closed" : "handshake");
	hs_conn_close(hc, c);
}

/* Drain whatever the server still sends (tickets, alerts) until EOF. */
static void
hs_conn_drain(struct hs_client *hc, struct hs_conn *c)
{
	char	buf[4096];
	ssize_t	n;

	while ((n = read(c->fd, buf, sizeof buf)) > 0)
		continue;
	if (n == -1 && errno == EAGAIN)
		return;
	hs_conn_close(hc, c);
}

static void
hs_conn_event(struct hs_client *hc, struct hs_conn *c)
{
	switch (c->state) {
	case HS_HANDSHAKE:
		hs_conn_handshake(hc, c);
		break;
	case HS_CLOSING:
		hs_conn_drain(hc, c);
		break;
	default:
		break;
	}
}

/* Connections stuck for HS_CONN_TIMEOUT are errors; idle ones restart. */
static void
hs_sweep(struct hs_client *hc, double now, int restart)
{
	struct hs_conn	*c;
	int		 i;

	for (i = 0; i < hc->nconns; i++) {
		c = &hc->conns[i];
		if (c->state != HS_IDLE && now - c->started > HS_CONN_TIMEOUT) {
			errno = 0;
			if (c->state == HS_HANDSHAKE)
				hs_report_error(hc, "handshake timed out");
			hs_conn_close(hc, c);
		}
		if (c->state == HS_IDLE && restart)
			hs_conn_start(hc, c);
	}
}

static int
hs_load(struct hs_client *hc, double *elapsed)
{
	struct epoll_event	 evs[256];
	double			 t0, now, end;
	int			 i, n;

	if ((hc->ep = epoll_create1(0)) == -1)
		return -1;
	hc->conns = calloc(hc->nconns, sizeof *hc->conns);
	if (hc->conns == NULL)
		return -1;
	for (i = 0; i < hc->nconns; i++)
		hc->conns[i].fd = -1;
	hs_shortcuts = !hc->verify_all;
	t0 = now = hs_now();
	end = t0 + hc->seconds;
	hs_sweep(hc, now, 1);
	while (now < end) {
		n = epoll_wait(hc->ep, evs, 256, 50);
		if (n == -1 && errno != EINTR)
			return -1;
		for (i = 0; i < n; i++)
			hs_conn_event(hc, evs[i].data.ptr);
		now = hs_now();
		if (now < end)
			hs_sweep(hc, now, 1);
	}
	*elapsed = now - t0;
	/* What is still in flight was not finished in time: not counted. */
	for (i = 0; i < hc->nconns; i++)
		hs_conn_close(hc, &hc->conns[i]);
	hs_shortcuts = 0;
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: hs_client -p PORT -s SNI [-a ADDR] "
	    "[-c CONNS] [-t SECONDS] [-f SHA256] [-C CAFILE] [-V]\n");
	exit(1);
}

int
main(int argc, char **argv)
{
	struct hs_client	 hc;
	const char		*want = NULL, *cafile = NULL, *errstr = NULL;
	char			 got[2 * EVP_MAX_MD_SIZE + 1], proto[128];
	double			 elapsed = 0, cpu0;
	char			*end;
	int			 ch, checked = 0;

	memset(&hc, 0, sizeof hc);
	hc.addr = "127.0.0.1";
	hc.nconns = 32;
	snprintf(got, sizeof got, "none");
	snprintf(proto, sizeof proto, "none");
	while ((ch = getopt(argc, argv, "a:C:c:f:p:s:t:V")) != -1) {
		switch (ch) {
		case 'a':
			hc.addr = optarg;
			break;
		case 'C':
			cafile = optarg;
			break;
		case 'c':
			hc.nconns = strtol(optarg, &end, 10);
			if (*end != '\0' || hc.nconns < 1 ||
			    hc.nconns > HS_MAX_CONNS)
				errstr = "-c: 1 to 4096";
			break;
		case 'f':
			want = optarg;
			break;
		case 'p':
			hc.port = strtol(optarg, &end, 10);
			if (*end != '\0' || hc.port < 1 || hc.port > 65535)
				errstr = "-p: a port";
			break;
		case 's':
			hc.sni = optarg;
			break;
		case 't':
			hc.seconds = strtod(optarg, &end);
			if (*end != '\0' || hc.seconds < 0)
				errstr = "-t: seconds";
			break;
		case 'V':
			hc.verify_all = 1;
			break;
		default:
			usage();
		}
	}
	if (errstr != NULL) {
		fprintf(stderr, "hs_client: %s\n", errstr);
		usage();
	}
	if (hc.port == 0 || hc.sni == NULL || argc != optind)
		usage();
	hc.sin.sin_family = AF_INET;
	hc.sin.sin_port = htons(hc.port);
	if (inet_pton(AF_INET, hc.addr, &hc.sin.sin_addr) != 1) {
		fprintf(stderr, "hs_client: bad address %s\n", hc.addr);
		return 1;
	}

	if (want != NULL) {
		if (hs_check(&hc, cafile, want, got, sizeof got, proto,
		    sizeof proto) == -1) {
			printf("{\"check\":\"failed\",\"fingerprint\":\"%s\","
			    "\"protocol\":\"%s\"}\n", got, proto);
			return 2;
		}
		checked = 1;
	}
	hc.errors = hc.reported = 0;
	cpu0 = hs_cpu_self();
	if (hc.seconds > 0) {
		if ((hc.ctx = hs_ctx_new(NULL)) == NULL ||
		    hs_load(&hc, &elapsed) == -1) {
			fprintf(stderr, "hs_client: load: %s\n",
			    strerror(errno));
			return 1;
		}
	}
	printf("{\"check\":\"%s\",\"fingerprint\":\"%s\",\"protocol\":\"%s\","
	    "\"handshakes\":%lu,\"errors\":%lu,\"seconds\":%.4f,"
	    "\"client_cpu\":%.4f,\"verify_all\":%s}\n",
	    checked ? "ok" : "skipped", got, proto, hc.handshakes, hc.errors,
	    elapsed, hs_cpu_self() - cpu0, hc.verify_all ? "true" : "false");
	return 0;
}
