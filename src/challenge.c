/*
 * HTTP-01 responder (RFC 8555 section 8.3) on libmicrohttpd.
 *
 * libmicrohttpd runs inside the daemon's libevent loop rather than in its
 * own thread (loop.c: its epoll fd and its timeouts are events of the
 * loop).  So the request handler runs on the loop thread,
 * the same thread that adds and removes tokens as orders progress, and the
 * token table needs no lock and can never be read half-updated.
 *
 * We bind the listening socket ourselves and hand it over with
 * MHD_OPTION_LISTEN_SOCKET: that way a failed bind reports its exact errno
 * ("challenge_listen 0.0.0.0:80: Address already in use"), which
 * libmicrohttpd does not hand back, and the port is bound before any
 * privilege drop.
 *
 * Answers: GET or HEAD of exactly /.well-known/acme-challenge/<token> with
 * a known token is 200 with the key authorization; any other path is 404;
 * any other method is 405.  libmicrohttpd percent-decodes the path before
 * we see it, so "%2e%2e" arrives as ".." and fails the token check; a
 * %00, which would cut the token short, and a request with two
 * Content-Length headers are a 400 (mhd_guard_refuse()).
 *
 * Slow clients (slowloris).  Each request must arrive whole within
 * CHALLENGE_REQUEST_TIMEOUT seconds of the accept, however it trickles
 * in (mhd_guard.c), and one client address holds at most
 * CHALLENGE_PER_IP of the CHALLENGE_MAX_CONNS connections.  The CA
 * validates from a few addresses with a handful of requests each, so 64
 * is generous for it, while one host cannot take every slot.  A loopback
 * address has a cap too, CHALLENGE_PER_IP_LOOPBACK: all of 127.0.0.0/8
 * is open to any local user, who must not starve the CA's 127.0.0.1
 * from 127.0.0.2.  It is higher, half the slots, for 127.0.0.1 is where
 * nginx's proxy_pass brings every CA's requests.
 *
 * A token the table lacks may be known elsewhere: with a cluster, another
 * node may have published it in Redis a moment before this node heard of
 * it.  The request is then suspended until the lookup answers (at most
 * CLUSTER_CMD_TIMEOUT seconds: a Redis that does not answer drops the
 * link, and every lookup is answered then).
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <microhttpd.h>

#include "sidecar.h"

#define CHALLENGE_PREFIX	"/.well-known/acme-challenge/"

/*
 * Per-connection memory, which bounds the request line plus headers.  A
 * CA's validation request is a few hundred bytes; larger requests are
 * answered with an error by libmicrohttpd and never reach the handler.
 */
#define CHALLENGE_MEMORY_LIMIT	(16 * 1024)

#define CHALLENGE_TABLE_MIN	64		/* buckets, a power of two */

struct challenge_token {
	char			*ct_token;
	char			*ct_keyauth;
	size_t			 ct_len;
	unsigned int		 ct_refs;	/* orders presenting it */
	struct challenge_token	*ct_next;
};

/*
 * A request suspended for a lookup.  Freed once both are over: the lookup
 * has answered and libmicrohttpd has finished the request.
 */
struct challenge_wait {
	struct MHD_Connection	*cw_conn;
	char			*cw_keyauth;	/* the answer; NULL: none */
	size_t			 cw_len;
	int			 cw_asking;	/* the lookup has not answered */
	int			 cw_suspended;
	int			 cw_finished;	/* the request is over */
	LIST_ENTRY(challenge_wait) cw_entry;
};
LIST_HEAD(challenge_waits, challenge_wait);

/* The whole responder; one per process, touched only by the loop thread. */
static struct {
	struct MHD_Daemon	 *daemon;
	struct loop_mhd		  loop;		/* drives daemon */
	int			  port;
	struct challenge_token	**table;
	size_t			  nbuckets;
	size_t			  count;
	unsigned long		  served;
	char			 *lastmsg;	/* MHD's last complaint */
	challenge_lookup_fn	  lookup;
	struct challenge_waits	  waits;	/* suspended requests */
} challenge = { .port = -1, .waits = LIST_HEAD_INITIALIZER(waits) };

int
challenge_token_valid(const char *token)
{
	size_t	 n;

	if (token == NULL)
		return 0;
	n = strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789_-");
	return n > 0 && n <= CHALLENGE_TOKEN_MAX && token[n] == '\0';
}

/*
 * Lookup keys come from the network, but only the CA's tokens are ever
 * inserted, so nobody can aim collisions at a chain.
 */
static struct challenge_token **
challenge_table_slot(const char *token)
{
	struct challenge_token	**slot;

	if (challenge.table == NULL)
		return NULL;
	slot = &challenge.table[util_hash(token) &
	    (challenge.nbuckets - 1)];
	while (*slot != NULL && strcmp((*slot)->ct_token, token) != 0)
		slot = &(*slot)->ct_next;
	return slot;
}

static struct challenge_token *
challenge_table_find(const char *token)
{
	struct challenge_token	**slot;

	if ((slot = challenge_table_slot(token)) == NULL)
		return NULL;
	return *slot;
}

/* Double the buckets so chains stay about one entry long. */
static void
challenge_table_grow(void)
{
	struct challenge_token	**old = challenge.table, *ct, *next;
	size_t			  oldn = challenge.nbuckets, i, b;

	challenge.nbuckets = oldn == 0 ? CHALLENGE_TABLE_MIN : oldn * 2;
	challenge.table = xcalloc(challenge.nbuckets, sizeof(*challenge.table));
	for (i = 0; i < oldn; i++) {
		for (ct = old[i]; ct != NULL; ct = next) {
			next = ct->ct_next;
			b = util_hash(ct->ct_token) &
			    (challenge.nbuckets - 1);
			ct->ct_next = challenge.table[b];
			challenge.table[b] = ct;
		}
	}
	free(old);
}

static void
challenge_token_free(struct challenge_token *ct)
{
	free(ct->ct_token);
	free(ct->ct_keyauth);
	free(ct);
}

static void
challenge_table_free(void)
{
	struct challenge_token	*ct, *next;
	size_t			 i;

	for (i = 0; i < challenge.nbuckets; i++) {
		for (ct = challenge.table[i]; ct != NULL; ct = next) {
			next = ct->ct_next;
			challenge_token_free(ct);
		}
	}
	free(challenge.table);
	challenge.table = NULL;
	challenge.nbuckets = 0;
	challenge.count = 0;
}

/*
 * Two orders can be handed the same authorization, and so the same token
 * (the same names with two key types, on a CA that reuses pending
 * authorizations): the token stays until the last of them removes it.
 */
void
challenge_add(const char *token, const char *keyauth)
{
	struct challenge_token	**slot, *ct;

	if (!challenge_token_valid(token)) {
		log_warnx("challenge: token \"%.*s\" cannot be served",
		    CHALLENGE_TOKEN_MAX, token);
		return;
	}
	if (challenge.count >= challenge.nbuckets)
		challenge_table_grow();
	slot = challenge_table_slot(token);
	if ((ct = *slot) != NULL) {
		free(ct->ct_keyauth);
	} else {
		ct = *slot = xcalloc(1, sizeof(*ct));
		ct->ct_token = xstrdup(token);
		challenge.count++;
	}
	ct->ct_keyauth = xstrdup(keyauth);
	ct->ct_len = strlen(keyauth);
	ct->ct_refs++;
	log_debug("challenge: token %s added", token);
}

void
challenge_remove(const char *token)
{
	struct challenge_token	**slot, *ct;

	if ((slot = challenge_table_slot(token)) == NULL || *slot == NULL)
		return;
	ct = *slot;
	if (--ct->ct_refs > 0)
		return;
	*slot = ct->ct_next;
	challenge_token_free(ct);
	challenge.count--;
	log_debug("challenge: token %s removed", token);
}

unsigned long
challenge_served(void)
{
	return challenge.served;
}

int
challenge_port(void)
{
	return challenge.port;
}

static enum MHD_Result
challenge_reply(struct MHD_Connection *conn, unsigned int status,
    const char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;

	resp = MHD_create_response_from_buffer(len, (void *)body, mode);
	if (resp == NULL)
		return MHD_NO;
	if (status == MHD_HTTP_OK) {
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		    "application/octet-stream");
	} else {
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		    "text/plain");
	}
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
		    "GET, HEAD");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* The client's address, for debug logs only. */
static void
challenge_client(struct MHD_Connection *conn, char *buf, size_t len)
{
	const union MHD_ConnectionInfo	*ci;
	socklen_t			 slen;

	snprintf(buf, len, "?");
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || ci->client_addr == NULL)
		return;
	slen = ci->client_addr->sa_family == AF_INET6 ?
	    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	getnameinfo(ci->client_addr, slen, buf, len, NULL, 0, NI_NUMERICHOST);
}

static enum MHD_Result
challenge_serve(struct MHD_Connection *conn, const char *token,
    const char *keyauth, size_t len)
{
	char	 client[NI_MAXHOST];

	challenge.served++;
	feed_emit("challenge_served", "{s:s}", "token", token);
	if (log_verbose()) {
		challenge_client(conn, client, sizeof(client));
		log_debug("challenge: served token %s to %s", token, client);
	}
	/* Copied: the token may be removed before the answer is sent. */
	return challenge_reply(conn, MHD_HTTP_OK, keyauth, len,
	    MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result
challenge_not_found(struct MHD_Connection *conn)
{
	static const char	 notfound[] = "not found\n";

	return challenge_reply(conn, MHD_HTTP_NOT_FOUND, notfound,
	    sizeof(notfound) - 1, MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result
challenge_bad_request(struct MHD_Connection *conn, const char *why)
{
	char	*text;
	int	 len;

	if ((len = asprintf(&text, "bad request: %s\n", why)) == -1)
		fatalx("%s: asprintf", __func__);
	log_debug("challenge: refused a request: %s", why);
	return challenge_reply(conn, MHD_HTTP_BAD_REQUEST, text, (size_t)len,
	    MHD_RESPMEM_MUST_FREE);
}

static void
challenge_wait_free(struct challenge_wait *cw)
{
	free(cw->cw_keyauth);
	free(cw);
}

static void
challenge_found(const char *keyauth, size_t len, void *arg)
{
	struct challenge_wait	*cw = arg;

	cw->cw_asking = 0;
	if (cw->cw_finished) {		/* the responder stopped meanwhile */
		challenge_wait_free(cw);
		return;
	}
	if (keyauth != NULL) {
		cw->cw_keyauth = xmalloc(len + 1);
		memcpy(cw->cw_keyauth, keyauth, len);
		cw->cw_keyauth[len] = '\0';
		cw->cw_len = len;
	}
	if (cw->cw_suspended) {
		cw->cw_suspended = 0;
		MHD_resume_connection(cw->cw_conn);
		loop_mhd_wake(&challenge.loop);
	}
}

/* Suspend conn until the lookup answers; -1 if it cannot ask. */
static int
challenge_wait(struct MHD_Connection *conn, const char *token, void **con_cls)
{
	struct challenge_wait	*cw;

	cw = xcalloc(1, sizeof(*cw));
	cw->cw_conn = conn;
	cw->cw_asking = 1;
	if (challenge.lookup(token, challenge_found, cw) == -1) {
		challenge_wait_free(cw);
		return -1;
	}
	LIST_INSERT_HEAD(&challenge.waits, cw, cw_entry);
	*con_cls = cw;
	if (cw->cw_asking) {	/* not answered at once */
		cw->cw_suspended = 1;
		MHD_suspend_connection(conn);
	}
	return 0;
}

/* libmicrohttpd is done with a request: a wait's share of it ends. */
static void
challenge_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct challenge_wait	*cw = *con_cls;

	(void)cls;
	(void)toe;
	mhd_guard_next(conn);
	if (cw == NULL)
		return;
	*con_cls = NULL;
	LIST_REMOVE(cw, cw_entry);
	cw->cw_finished = 1;
	if (!cw->cw_asking)
		challenge_wait_free(cw);
}

/* A connection opens or closes: its guard (mhd_guard.c). */
static void
challenge_notify(void *cls, struct MHD_Connection *conn, void **ctx,
    enum MHD_ConnectionNotificationCode code)
{
	(void)cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED)
		*ctx = mhd_guard_new(&challenge.loop, conn,
		    CHALLENGE_REQUEST_TIMEOUT, NULL);
	else {
		mhd_guard_free(*ctx);
		*ctx = NULL;
	}
}

void
challenge_set_lookup(challenge_lookup_fn fn)
{
	challenge.lookup = fn;
}

static enum MHD_Result
challenge_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	static const char	 notallowed[] = "method not allowed\n";
	struct challenge_wait	*cw = *con_cls;
	struct challenge_token	*ct;
	const char		*token, *why;

	(void)cls;
	(void)version;
	(void)upload_data;
	(void)upload_data_size;

	if (cw == NULL && (why = mhd_guard_refuse(conn)) != NULL)
		return challenge_bad_request(conn, why);
	mhd_guard_arrived(conn);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
		return challenge_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    notallowed, sizeof(notallowed) - 1,
		    MHD_RESPMEM_PERSISTENT);
	}
	if (strncmp(url, CHALLENGE_PREFIX, strlen(CHALLENGE_PREFIX)) != 0)
		return challenge_not_found(conn);
	token = url + strlen(CHALLENGE_PREFIX);
	if (cw != NULL) {		/* back from a lookup */
		if (cw->cw_keyauth == NULL)
			return challenge_not_found(conn);
		return challenge_serve(conn, token, cw->cw_keyauth,
		    cw->cw_len);
	}
	if (!challenge_token_valid(token))
		return challenge_not_found(conn);
	if ((ct = challenge_table_find(token)) != NULL)
		return challenge_serve(conn, token, ct->ct_keyauth,
		    ct->ct_len);
	if (challenge.lookup != NULL &&
	    challenge_wait(conn, token, con_cls) == 0)
		return MHD_YES;
	return challenge_not_found(conn);
}

/*
 * libmicrohttpd's own messages.  A remote client can provoke most of them
 * (oversized headers, resets), so they go to the debug log; the last one
 * is kept to explain a failed start.
 */
static void
challenge_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char	*msg;

	(void)cls;
	if ((msg = loop_mhd_message(fmt, ap)) == NULL)
		return;
	log_debug("challenge: libmicrohttpd: %s", msg);
	free(challenge.lastmsg);
	challenge.lastmsg = msg;
}

/* "0.0.0.0", "::1" or "[::1]" into a socket address. */
static int
challenge_sockaddr(const char *addr, int port, struct sockaddr_storage *ss,
    socklen_t *len)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;
	char			*host;
	size_t			 n = strlen(addr);
	int			 rc = -1;

	memset(ss, 0, sizeof(*ss));
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']')
		host = xstrndup(addr + 1, n - 2);
	else
		host = xstrdup(addr);
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
		rc = 0;
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		rc = 0;
	}
	free(host);
	return rc;
}

static int
challenge_is_loopback(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET)
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
}

static int
challenge_listen(const char *name, const struct sockaddr_storage *ss,
    socklen_t len, char **cause)
{
	int	 fd, on = 1, off = 0;

	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1) {
		xasprintf(cause, "challenge_listen %s: %s", name,
		    strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		log_warn("challenge: SO_REUSEADDR");
	/* "::" answers over IPv4 too: the CA may validate over either. */
	if (ss->ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == -1)
		log_warn("challenge: IPV6_V6ONLY");
	if (bind(fd, (const struct sockaddr *)ss, len) == -1 ||
	    listen(fd, SOMAXCONN) == -1) {
		xasprintf(cause, "challenge_listen %s: %s", name,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int
challenge_events(struct event_base *base, char **cause)
{
	const union MHD_DaemonInfo	*di;

	if (loop_mhd_start(&challenge.loop, base, challenge.daemon,
	    "challenge", cause) == -1)
		return -1;
	di = MHD_get_daemon_info(challenge.daemon, MHD_DAEMON_INFO_BIND_PORT);
	challenge.port = di != NULL ? di->port : -1;
	return 0;
}

int
challenge_start(struct event_base *base, const char *addr, int port,
    char **cause)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len;
	char			*name = NULL;
	unsigned int		 perip;
	int			 fd = -1, rc = -1;

	if (challenge.daemon != NULL) {
		xasprintf(cause, "challenge: already started");
		return -1;
	}
	if (strchr(addr, ':') != NULL && addr[0] != '[')
		xasprintf(&name, "[%s]:%d", addr, port);
	else
		xasprintf(&name, "%s:%d", addr, port);
	if (port < 0 || port > 65535 ||
	    challenge_sockaddr(addr, port, &ss, &len) == -1) {
		xasprintf(cause, "challenge_listen %s: not an IP address and "
		    "port", name);
		goto out;
	}
	if ((fd = challenge_listen(name, &ss, len, cause)) == -1)
		goto out;
	perip = challenge_is_loopback(&ss) ? CHALLENGE_PER_IP_LOOPBACK :
	    CHALLENGE_PER_IP;
	challenge.daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
	    MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, challenge_request, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, challenge_mhd_log, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, challenge_completed, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, challenge_notify, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, mhd_guard_unescape, NULL,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CHALLENGE_MAX_CONNS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CHALLENGE_CONN_TIMEOUT,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, perip,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CHALLENGE_MEMORY_LIMIT,
	    MHD_OPTION_END);
	if (challenge.daemon == NULL) {
		xasprintf(cause, "challenge_listen %s: %s", name,
		    challenge.lastmsg != NULL ? challenge.lastmsg :
		    "cannot start libmicrohttpd");
		/* Whether MHD closed the socket on failure is unspecified. */
		if (fcntl(fd, F_GETFD) != -1)
			close(fd);
		goto out;
	}
	/* From here on the daemon owns fd and closes it when stopped. */
	if (challenge_events(base, cause) == -1) {
		challenge_stop();
		goto out;
	}
	log_info("challenge: listening on %.*s:%d", (int)(strrchr(name, ':') -
	    name), name, challenge.port);
	rc = 0;
out:
	free(challenge.lastmsg);
	challenge.lastmsg = NULL;
	free(name);
	return rc;
}

void
challenge_stop(void)
{
	struct challenge_wait	*cw;

	/* libmicrohttpd refuses to stop with a connection suspended. */
	LIST_FOREACH(cw, &challenge.waits, cw_entry) {
		if (cw->cw_suspended) {
			cw->cw_suspended = 0;
			MHD_resume_connection(cw->cw_conn);
		}
	}
	/* The loop owns the daemon once it drives it. */
	if (challenge.loop.lm_daemon == NULL && challenge.daemon != NULL)
		MHD_stop_daemon(challenge.daemon);
	loop_mhd_stop(&challenge.loop);
	challenge.daemon = NULL;
	challenge.port = -1;
	free(challenge.lastmsg);
	challenge.lastmsg = NULL;
	challenge_table_free();
}
