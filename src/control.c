/*
 * The control API: HTTP/1.1 + JSON on a Unix socket (proto/control-api.md).
 *
 * Why libmicrohttpd and not libevent's evhttp: evhttp in libevent 2.1 (the
 * Debian version) has no cap on open connections and no hook at accept or
 * close time to build one, so a local client could hold any number of
 * sockets open.  libmicrohttpd has the cap, per-connection memory limits
 * and idle timeouts built in, and loop.c already runs it inside the loop
 * for challenge.c, so every handler runs on the loop thread and reads the
 * scheduler's state with no lock.
 *
 * We accept connections ourselves (MHD_USE_NO_LISTEN_SOCKET, then
 * MHD_add_connection()): libmicrohttpd busy-waits when accept() fails with
 * EMFILE and no connection is open, while our accept event is taken off
 * for CONTROL_ACCEPT_PAUSE seconds instead (tmux, httpd).  A client beyond
 * CONTROL_MAX_CONNS gets a JSON 503 written straight to its socket.
 *
 * Access: the socket is 0660 (group= of control_socket, else ours), and
 * each request's caller is read with SO_PEERCRED: reads for root, our own
 * uid and members of that group; changes for root and our own uid only.
 *
 * Routes are one table, one row each: method, path, access, handler.  A
 * path segment "{id}" matches one segment.  No route for the path is a
 * 404, a route for another method a 405 with Allow.  Every error is
 * {"error": {"status": N, "message": "..."}} and changes nothing.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <microhttpd.h>

#include "sidecar.h"

#define CONTROL_BACKLOG		16
#define CONTROL_MAX_GROUPS	256	/* a caller's groups we look at */
#define CONTROL_MAX_SEGMENTS	8	/* in a route's path */

enum control_access {
	CONTROL_READ,		/* root, our uid, the socket's group */
	CONTROL_CHANGE		/* root and our uid */
};

struct control_req {
	char			*cr_body;
	size_t			 cr_len;
	int			 cr_too_big;
};

struct control_ctx {
	struct MHD_Connection	*cx_conn;
	const char		*cx_id;		/* the {id} segment, or NULL */
	json_t			*cx_body;	/* the JSON object, or NULL */
};

struct control_route {
	const char		*cr_method;
	const char		*cr_path;
	enum control_access	 cr_access;
	enum MHD_Result		(*cr_handler)(struct control_ctx *);
};

static enum MHD_Result	control_get_status(struct control_ctx *);
static enum MHD_Result	control_get_certs(struct control_ctx *);
static enum MHD_Result	control_get_cert(struct control_ctx *);
static enum MHD_Result	control_get_issuers(struct control_ctx *);
static enum MHD_Result	control_post_reload(struct control_ctx *);
static enum MHD_Result	control_post_renew(struct control_ctx *);

static const struct control_route control_routes[] = {
	{ "GET", "/v1/status", CONTROL_READ, control_get_status },
	{ "GET", "/v1/certificates", CONTROL_READ, control_get_certs },
	{ "GET", "/v1/certificates/{id}", CONTROL_READ, control_get_cert },
	{ "GET", "/v1/issuers", CONTROL_READ, control_get_issuers },
	{ "POST", "/v1/reload", CONTROL_CHANGE, control_post_reload },
	{ "POST", "/v1/certificates/{id}/renew", CONTROL_CHANGE,
	    control_post_renew },
};
#define CONTROL_NROUTES	(sizeof(control_routes) / sizeof(control_routes[0]))

/* The whole server; one per process, touched only by the loop thread. */
static struct {
	struct MHD_Daemon	*daemon;
	int			 fd;		/* listening socket */
	struct event		*ev_accept;
	struct event		*ev_pause;	/* after EMFILE */
	struct loop_mhd		 loop;		/* drives daemon */
	char			*path;
	dev_t			 dev;		/* to unlink only our own */
	ino_t			 ino;
	gid_t			 gid;		/* the socket's group */
	control_reload_cb	 reload;
	struct timespec		 started;
} control = { .fd = -1 };

/* ---------------------------------------------------------------- replies */

static enum MHD_Result
control_reply(struct MHD_Connection *conn, unsigned int status, json_t *j,
    const char *allow)
{
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;
	char			*text;

	text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (text == NULL)
		fatalx("%s: json_dumps", __func__);
	/* A newline, so that curl's output ends on its own line. */
	text = xreallocarray(text, strlen(text) + 2, 1);
	strcat(text, "\n");
	resp = MHD_create_response_from_buffer(strlen(text), text,
	    MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/json");
	if (allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
control_error(struct MHD_Connection *conn, unsigned int status,
    const char *allow, const char *fmt, ...) PRINTFLIKE(4, 5);

static enum MHD_Result
control_error(struct MHD_Connection *conn, unsigned int status,
    const char *allow, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;
	json_t	*j;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("%s: vasprintf", __func__);
	va_end(ap);
	j = json_pack("{s:{s:i, s:s}}", "error", "status", (int)status,
	    "message", msg);
	free(msg);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return control_reply(conn, status, j, allow);
}

/* RFC 3339 in UTC, or JSON null for "never". */
static json_t *
control_time(time_t t)
{
	struct tm	 tm;
	char		 buf[32];

	if (t == 0)
		return json_null();
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}

/* ------------------------------------------------------------------ routes */

static json_t *
control_cert_json(const struct cert *ce)
{
	struct order_info	 oi;
	json_t			*j, *ids, *err = json_null();
	size_t			 i;

	order_cert_info(ce, &oi);
	ids = json_array();
	for (i = 0; i < oi.oi_nidents; i++)
		json_array_append_new(ids, json_string(oi.oi_idents[i]));
	if (oi.oi_last_error != NULL)
		err = json_pack("{s:s, s:o}", "message", oi.oi_last_error,
		    "time", control_time(oi.oi_last_error_at));
	j = json_pack("{s:s, s:o, s:s, s:s, s:s, s:b, s:o, s:o, s:o, s:o, "
	    "s:i, s:o}",
	    "id", oi.oi_id,
	    "identifiers", ids,
	    "issuer", oi.oi_issuer,
	    "key_type", key_type_name(oi.oi_key),
	    "state", order_state_name(oi.oi_state),
	    "valid", order_cert_valid(ce),
	    "not_before", control_time(oi.oi_not_before),
	    "not_after", control_time(oi.oi_not_after),
	    "next_renewal", control_time(oi.oi_renew_at),
	    "next_retry", control_time(oi.oi_retry_at),
	    "failures", oi.oi_failures,
	    "last_error", err);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

static json_t *
control_issuer_json(const struct acme_issuer *ai)
{
	const char	*url = acme_issuer_account_url(ai);
	json_t		*j;

	j = json_pack("{s:s, s:s, s:s, s:o}",
	    "name", acme_issuer_name(ai),
	    "uri", acme_issuer_uri(ai),
	    "state", acme_issuer_state_name(acme_issuer_state(ai)),
	    "account_url", url != NULL ? json_string(url) : json_null());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

static json_t *
control_issuers_json(void)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < sched_issuer_count(); i++)
		json_array_append_new(a, control_issuer_json(sched_issuer_at(i)));
	return a;
}

/* The segment nginx reads; "full" means nginx is serving an older image. */
static json_t *
control_zone_json(void)
{
	struct shm_stats	 st;
	json_t			*j;

	shm_get_stats(&st);
	j = json_pack("{s:I, s:b, s:I, s:I, s:I, s:I, s:I}",
	    "generation", (json_int_t)st.ss_generation,
	    "full", st.ss_full,
	    "used", (json_int_t)st.ss_used,
	    "image_size", (json_int_t)st.ss_slot_size,
	    "certificates", (json_int_t)st.ss_certs,
	    "tokens", (json_int_t)st.ss_tokens,
	    "failed_publishes", (json_int_t)st.ss_failures);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

static enum MHD_Result
control_get_status(struct control_ctx *cx)
{
	struct timespec	 now;
	json_t		*states, *j;
	size_t		 i, n = sched_cert_count(), valid = 0;
	size_t		 count[ORDER_STATE_MAX] = { 0 };
	struct cert	*ce;

	for (i = 0; i < n; i++) {
		ce = sched_cert_at(i);
		count[order_cert_state(ce)]++;
		if (order_cert_valid(ce))
			valid++;
	}
	states = json_object();
	for (i = 0; i < ORDER_STATE_MAX; i++)
		json_object_set_new(states, order_state_name(i),
		    json_integer((json_int_t)count[i]));
	clock_gettime(CLOCK_MONOTONIC, &now);
	j = json_pack("{s:s, s:I, s:o, s:{s:I, s:I, s:o}, s:o}",
	    "version", SIDECAR_VERSION,
	    "uptime", (json_int_t)(now.tv_sec - control.started.tv_sec),
	    "issuers", control_issuers_json(),
	    "certificates", "total", (json_int_t)n, "valid", (json_int_t)valid,
	    "by_state", states,
	    "shared_zone", control_zone_json());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, j, NULL);
}

static enum MHD_Result
control_get_certs(struct control_ctx *cx)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < sched_cert_count(); i++)
		json_array_append_new(a, control_cert_json(sched_cert_at(i)));
	return control_reply(cx->cx_conn, MHD_HTTP_OK,
	    json_pack("{s:o}", "certificates", a), NULL);
}

static enum MHD_Result
control_get_cert(struct control_ctx *cx)
{
	struct cert	*ce;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, control_cert_json(ce),
	    NULL);
}

static enum MHD_Result
control_get_issuers(struct control_ctx *cx)
{
	return control_reply(cx->cx_conn, MHD_HTTP_OK,
	    json_pack("{s:o}", "issuers", control_issuers_json()), NULL);
}

/* The same reload as SIGHUP; a configuration that fails is refused. */
static enum MHD_Result
control_post_reload(struct control_ctx *cx)
{
	enum MHD_Result	 ret;
	char		*cause = NULL;

	if (control.reload(&cause) == -1) {
		ret = control_error(cx->cx_conn,
		    MHD_HTTP_UNPROCESSABLE_CONTENT, NULL,
		    "reload refused, the running configuration is kept: %s",
		    cause);
		free(cause);
		return ret;
	}
	return control_reply(cx->cx_conn, MHD_HTTP_OK, json_pack("{s:b, s:I}",
	    "reloaded", 1, "certificates", (json_int_t)sched_cert_count()),
	    NULL);
}

static enum MHD_Result
control_post_renew(struct control_ctx *cx)
{
	struct cert		*ce;
	enum order_state	 st;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	st = order_cert_state(ce);
	if (st != ORDER_IDLE && st != ORDER_BACKOFF)
		return control_error(cx->cx_conn, MHD_HTTP_CONFLICT, NULL,
		    "certificate \"%s\": an order is already under way (%s)",
		    cx->cx_id, order_state_name(st));
	log_info("certificate \"%s\": renewal asked through the control "
	    "socket", cx->cx_id);
	order_renew_now(ce);
	return control_reply(cx->cx_conn, MHD_HTTP_ACCEPTED,
	    control_cert_json(ce), NULL);
}

/* ---------------------------------------------------------------- dispatch */

/* Does path match pattern?  *id gets the "{id}" segment (not copied). */
static int
control_match(const char *pattern, const char *path, char *idbuf,
    size_t idlen, const char **id)
{
	const char	*p = pattern, *s = path;
	size_t		 n;

	*id = NULL;
	while (*p != '\0') {
		if (strncmp(p, "{id}", 4) == 0) {
			n = strcspn(s, "/");
			if (n == 0 || n >= idlen)
				return 0;
			memcpy(idbuf, s, n);
			idbuf[n] = '\0';
			*id = idbuf;
			p += 4;
			s += n;
			continue;
		}
		if (*p++ != *s++)
			return 0;
	}
	return *s == '\0';
}

/* 0: allowed; -1: refused (the reason is in why). */
static int
control_allowed(struct MHD_Connection *conn, enum control_access access,
    char *why, size_t len)
{
	const union MHD_ConnectionInfo	*ci;
	struct ucred			 uc;
	socklen_t			 ulen = sizeof(uc);
	struct passwd			*pw;
	gid_t				 groups[CONTROL_MAX_GROUPS];
	int				 ngroups = CONTROL_MAX_GROUPS, i;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED,
	    &uc, &ulen) == -1) {
		snprintf(why, len, "the caller's credentials are unknown");
		return -1;
	}
	if (uc.uid == 0 || uc.uid == geteuid())
		return 0;
	if (access == CONTROL_CHANGE) {
		snprintf(why, len, "uid %u may read but not change: changes "
		    "are for root and uid %u", (unsigned)uc.uid,
		    (unsigned)geteuid());
		return -1;
	}
	if (uc.gid == control.gid)
		return 0;
	if ((pw = getpwuid(uc.uid)) != NULL && getgrouplist(pw->pw_name,
	    pw->pw_gid, groups, &ngroups) != -1) {
		for (i = 0; i < ngroups; i++)
			if (groups[i] == control.gid)
				return 0;
	}
	snprintf(why, len, "uid %u is not in the control socket's group %u",
	    (unsigned)uc.uid, (unsigned)control.gid);
	return -1;
}

/*
 * None of this increment's routes takes a body: an empty one, or an
 * empty JSON object, is all they accept.
 */
static enum MHD_Result
control_check_body(struct MHD_Connection *conn, struct control_req *cr,
    json_t **body)
{
	json_error_t	 err;
	const char	*key;
	json_t		*v;

	*body = NULL;
	if (cr->cr_len == 0)
		return MHD_YES;
	*body = json_loadb(cr->cr_body, cr->cr_len, JSON_REJECT_DUPLICATES,
	    &err);
	if (*body == NULL) {
		control_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "malformed JSON at line %d, column %d: %s", err.line,
		    err.column, err.text);
		return MHD_NO;
	}
	if (!json_is_object(*body)) {
		control_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "the body must be a JSON object");
		return MHD_NO;
	}
	json_object_foreach(*body, key, v) {
		control_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "unknown field \"%s\"", key);
		return MHD_NO;
	}
	return MHD_YES;
}

static enum MHD_Result
control_dispatch(struct MHD_Connection *conn, const char *url,
    const char *method, struct control_req *cr)
{
	const struct control_route	*r, *found = NULL;
	struct control_ctx		 cx;
	char				 idbuf[512], why[256], allow[64] = "";
	const char			*id = NULL;
	enum MHD_Result			 ret;
	size_t				 i;

	for (i = 0; i < CONTROL_NROUTES; i++) {
		r = &control_routes[i];
		if (!control_match(r->cr_path, url, idbuf, sizeof(idbuf), &id))
			continue;
		if (strcmp(r->cr_method, method) == 0) {
			found = r;
			break;
		}
		if (strstr(allow, r->cr_method) == NULL)
			snprintf(allow + strlen(allow), sizeof(allow) -
			    strlen(allow), "%s%s", allow[0] != '\0' ? ", " : "",
			    r->cr_method);
	}
	if (found == NULL && allow[0] != '\0')
		return control_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, allow,
		    "method %s not allowed on %s", method, url);
	if (found == NULL)
		return control_error(conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no route %s", url);
	if (control_allowed(conn, found->cr_access, why, sizeof(why)) == -1)
		return control_error(conn, MHD_HTTP_FORBIDDEN, NULL, "%s", why);
	if (cr->cr_too_big)
		return control_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
		    "the body is larger than %d bytes", CONTROL_MAX_BODY);

	memset(&cx, 0, sizeof(cx));
	cx.cx_conn = conn;
	cx.cx_id = id;
	if (control_check_body(conn, cr, &cx.cx_body) == MHD_NO) {
		json_decref(cx.cx_body);
		return MHD_YES;		/* the error is queued */
	}
	log_debug("control: %s %s", method, url);
	ret = found->cr_handler(&cx);
	json_decref(cx.cx_body);
	return ret;
}

static enum MHD_Result
control_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct control_req	*cr = *con_cls;
	const char		*clen;

	(void)cls;
	(void)version;
	if (cr == NULL) {
		*con_cls = xcalloc(1, sizeof(*cr));
		/* Refuse a body announced too big before reading it. */
		clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		    MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (clen != NULL && strtoull(clen, NULL, 10) > CONTROL_MAX_BODY)
			return control_error(conn, MHD_HTTP_CONTENT_TOO_LARGE,
			    NULL, "the body is larger than %d bytes",
			    CONTROL_MAX_BODY);
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (cr->cr_len + *upload_data_size > CONTROL_MAX_BODY)
			cr->cr_too_big = 1;
		else {
			cr->cr_body = xreallocarray(cr->cr_body,
			    cr->cr_len + *upload_data_size, 1);
			memcpy(cr->cr_body + cr->cr_len, upload_data,
			    *upload_data_size);
			cr->cr_len += *upload_data_size;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	return control_dispatch(conn, url, method, cr);
}

static void
control_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct control_req	*cr = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (cr == NULL)
		return;
	free(cr->cr_body);
	free(cr);
	*con_cls = NULL;
}

/* -------------------------------------------------------- loop and socket */

static void
control_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char	*msg;

	(void)cls;
	if ((msg = loop_mhd_message(fmt, ap)) == NULL)
		return;
	log_debug("control: libmicrohttpd: %s", msg);
	free(msg);
}

/* Over CONTROL_MAX_CONNS: say so in one write, best effort, and close. */
static void
control_refuse(int fd)
{
	static const char	 body[] = "{\"error\": {\"status\": 503, "
	    "\"message\": \"too many connections\"}}\n";
	char			 buf[256];
	int			 n;

	n = snprintf(buf, sizeof(buf), "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", sizeof(body) - 1, body);
	if (write(fd, buf, (size_t)n) == -1)
		log_debug("control: refusing a connection: %s",
		    strerror(errno));
	close(fd);
}

static void
control_accept(evutil_socket_t lfd, short events, void *arg)
{
	const union MHD_DaemonInfo	*di;
	struct sockaddr_un		 sun;
	socklen_t			 len = sizeof(sun);
	struct timeval			 tv = { CONTROL_ACCEPT_PAUSE, 0 };
	int				 fd;

	(void)events;
	(void)arg;
	memset(&sun, 0, sizeof(sun));
	fd = accept4(lfd, (struct sockaddr *)&sun, &len,
	    SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd == -1) {
		if (errno == EMFILE || errno == ENFILE) {
			/* Out of descriptors: wait rather than spin. */
			log_warn("control: accept");
			event_del(control.ev_accept);
			evtimer_add(control.ev_pause, &tv);
		} else if (errno != EAGAIN && errno != EINTR &&
		    errno != ECONNABORTED)
			log_warn("control: accept");
		return;
	}
	di = MHD_get_daemon_info(control.daemon,
	    MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	if (di != NULL && di->num_connections >= CONTROL_MAX_CONNS) {
		control_refuse(fd);
		return;
	}
	/* An unnamed client has a short address: hand over a full one. */
	sun.sun_family = AF_UNIX;
	if (MHD_add_connection(control.daemon, fd, (struct sockaddr *)&sun,
	    sizeof(sun)) != MHD_YES)
		log_debug("control: libmicrohttpd refused a connection");
	loop_mhd_schedule(&control.loop);
}

static void
control_resume(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	event_add(control.ev_accept, NULL);
}

/* The socket's folder: made 0750 when missing (e.g. /run/acme-sidecar). */
static int
control_mkdir(const char *path, char **cause)
{
	char	*copy, *dir;
	int	 rc = -1;

	copy = xstrdup(path);
	dir = dirname(copy);
	if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
		xasprintf(cause, "control_socket %s: cannot create %s: %s",
		    path, dir, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(copy);
	return rc;
}

/* unlink, umask, bind, chmod, chown, listen (httpd's control_init). */
static int
control_bind(const char *path, const char *group, char **cause)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	struct group		*gr;
	mode_t			 old;
	int			 fd = -1, rc = -1;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
	    path) >= sizeof(sun.sun_path)) {
		xasprintf(cause, "control_socket %s: path too long", path);
		return -1;
	}
	if (group != NULL) {
		if ((gr = getgrnam(group)) == NULL) {
			xasprintf(cause, "control_socket %s: unknown group "
			    "\"%s\"", path, group);
			return -1;
		}
		control.gid = gr->gr_gid;
	} else
		control.gid = getegid();
	if (control_mkdir(path, cause) == -1)
		return -1;
	/* Replace a stale socket, but never a file of some other kind. */
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		xasprintf(cause, "control_socket %s: exists and is not a "
		    "socket", path);
		return -1;
	}
	if (unlink(path) == -1 && errno != ENOENT) {
		xasprintf(cause, "control_socket %s: unlink: %s", path,
		    strerror(errno));
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		xasprintf(cause, "control_socket: socket: %s", strerror(errno));
		return -1;
	}
	old = umask(S_IXUSR | S_IXGRP | S_IRWXO);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		xasprintf(cause, "control_socket %s: bind: %s", path,
		    strerror(errno));
		umask(old);
		goto out;
	}
	umask(old);
	if (chmod(path, 0660) == -1 || chown(path, (uid_t)-1, control.gid) ==
	    -1 || lstat(path, &st) == -1 || listen(fd, CONTROL_BACKLOG) == -1) {
		xasprintf(cause, "control_socket %s: %s", path,
		    strerror(errno));
		unlink(path);
		goto out;
	}
	control.dev = st.st_dev;
	control.ino = st.st_ino;
	rc = fd;
	fd = -1;
out:
	if (fd != -1)
		close(fd);
	return rc;
}

static int
control_events(struct event_base *base, char **cause)
{
	if (loop_mhd_start(&control.loop, base, control.daemon, "control",
	    cause) == -1)
		return -1;
	control.ev_accept = event_new(base, control.fd, EV_READ | EV_PERSIST,
	    control_accept, NULL);
	control.ev_pause = evtimer_new(base, control_resume, NULL);
	if (control.ev_accept == NULL || control.ev_pause == NULL ||
	    event_add(control.ev_accept, NULL) == -1) {
		xasprintf(cause, "control: cannot add events");
		return -1;
	}
	return 0;
}

int
control_start(struct event_base *base, const char *path, const char *group,
    control_reload_cb reload, char **cause)
{
	if (control.daemon != NULL) {
		xasprintf(cause, "control: already started");
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &control.started);
	control.reload = reload;
	if ((control.fd = control_bind(path, group, cause)) == -1)
		return -1;
	control.path = xstrdup(path);
	control.daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
	    MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, control_request, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, control_mhd_log, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, control_completed, NULL,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONTROL_MAX_CONNS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONTROL_CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONTROL_MEMORY_LIMIT,
	    MHD_OPTION_END);
	if (control.daemon == NULL) {
		xasprintf(cause, "control_socket %s: cannot start "
		    "libmicrohttpd", path);
		control_stop();
		return -1;
	}
	if (control_events(base, cause) == -1) {
		control_stop();
		return -1;
	}
	log_info("control: listening on %s (group %u)", path,
	    (unsigned)control.gid);
	return 0;
}

void
control_stop(void)
{
	struct stat	 st;

	if (control.ev_accept != NULL)
		event_free(control.ev_accept);
	if (control.ev_pause != NULL)
		event_free(control.ev_pause);
	control.ev_accept = control.ev_pause = NULL;
	/* The loop owns the daemon once it drives it. */
	if (control.loop.lm_daemon == NULL && control.daemon != NULL)
		MHD_stop_daemon(control.daemon);
	loop_mhd_stop(&control.loop);
	control.daemon = NULL;
	if (control.fd != -1)
		close(control.fd);
	control.fd = -1;
	/* Another daemon may have taken the path over since: leave it be. */
	if (control.path != NULL && lstat(control.path, &st) == 0 &&
	    st.st_dev == control.dev && st.st_ino == control.ino)
		unlink(control.path);
	free(control.path);
	control.path = NULL;
}
