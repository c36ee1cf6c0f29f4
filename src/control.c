/*
 * The control API: HTTP/1.1 + JSON on a Unix socket (proto/control-api.md).
 * This file is its transport; the routes are in control_routes.c, the
 * event streams in control_stream.c (control.h).
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
 * Slots.  A reader must not be able to lock the administrator out: a uid
 * other than root and ours holds at most CONTROL_MAX_CONNS_PER_UID
 * connections and CONTROL_MAX_STREAMS_PER_UID event streams, and the last
 * CONTROL_RESERVED_CONNS connections and CONTROL_RESERVED_STREAMS streams
 * are for root and our uid alone.  Each request must arrive whole within
 * CONTROL_REQUEST_TIMEOUT seconds, however slowly it trickles in
 * (mhd_guard.c); a %00 in the path, which would cut an id short, and two
 * Content-Length headers are a 400 before any route is looked at.
 *
 * Routes are one table (control_routes.c), one row each: method, path,
 * access, the body fields it takes, handler.  No route for the path is a
 * 404, a route for another method a 405 with Allow.  Every error is
 * {"error": {"status": N, "message": "..."}} and changes nothing.
 *
 * Two kinds of answer wait, with their connection suspended: a request
 * for the CA (a revocation, an account operation: control_wait(), until
 * control_answer()) and GET /v1/events (until the next event).  The
 * daemon resumes them all before it stops libmicrohttpd, which refuses to
 * stop with a connection suspended.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
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
#include "control.h"

#define CONTROL_BACKLOG		16
#define CONTROL_MAX_GROUPS	256	/* a caller's groups we look at */
#define CONTROL_MAX_SEGMENTS	8	/* in a route's path */

/* The whole server; one per process, touched only by the loop thread. */
static struct {
	struct MHD_Daemon	*daemon;
	int			 fd;		/* listening socket */
	struct event		*ev_accept;
	struct event		*ev_pause;	/* after EMFILE */
	struct loop_mhd		 loop;		/* drives daemon */
	struct control_conns	 conns;
	size_t			 nconns;
	struct control_reqs	 waiting;	/* suspended for the CA */
	char			*path;
	dev_t			 dev;		/* to unlink only our own */
	ino_t			 ino;
	gid_t			 gid;		/* the socket's group */
	struct control_hooks	 hooks;
	struct timespec		 started;
} control = {
	.fd = -1,
	.conns = TAILQ_HEAD_INITIALIZER(control.conns),
	.waiting = TAILQ_HEAD_INITIALIZER(control.waiting)
};

/* ------------------------------------------------------------ connections */

static int
control_privileged(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* The caller of conn: never NULL once control_notify() has seen it. */
struct control_conn *
control_conn_of(struct MHD_Connection *conn)
{
	static struct control_conn	 unknown = { .cn_uid = (uid_t)-1 };
	struct mhd_guard		*mg = mhd_guard_of(conn);

	return mg != NULL ? mg->mg_arg : &unknown;
}

/* ---------------------------------------------------------------- replies */

/* Queue len bytes of text (consumed), with one extra header if name. */
enum MHD_Result
control_send(struct MHD_Connection *conn, unsigned int status, char *text,
    size_t len, const char *type, const char *name, const char *value)
{
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;

	resp = MHD_create_response_from_buffer(len, text,
	    MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (name != NULL)
		MHD_add_response_header(resp, name, value);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Queue j (consumed) as the answer, with one extra header if name. */
enum MHD_Result
control_reply(struct MHD_Connection *conn, unsigned int status, json_t *j,
    const char *name, const char *value)
{
	char	*text;

	text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (text == NULL)
		fatalx("%s: json_dumps", __func__);
	/* A newline, so that curl's output ends on its own line. */
	text = xreallocarray(text, strlen(text) + 2, 1);
	strcat(text, "\n");
	return control_send(conn, status, text, strlen(text),
	    "application/json", name, value);
}

/*
 * msg may quote the client's own bytes (a path, an identifier) and JSON
 * strings are UTF-8: a message that is not becomes one with '?' for each
 * byte outside ASCII (found by tests/fuzz: a path of two bytes stopped
 * the daemon).
 */
json_t *
control_message(const char *msg)
{
	json_t	*j;
	char	*copy;

	if ((j = json_string(msg)) != NULL)
		return j;
	copy = util_utf8_copy(msg);
	j = json_string(copy);
	free(copy);
	if (j == NULL)
		fatalx("%s: json_string", __func__);
	return j;
}

json_t *
control_error_json(unsigned int status, const char *msg)
{
	json_t	*j;

	j = json_pack("{s:{s:i, s:o}}", "error", "status", (int)status,
	    "message", control_message(msg));
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

enum MHD_Result
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
	j = control_error_json(status, msg);
	free(msg);
	return control_reply(conn, status, j, allow != NULL ?
	    MHD_HTTP_HEADER_ALLOW : NULL, allow);
}

/* ------------------------------------------------------ waiting for the CA */

/*
 * The handler started something the CA answers later: the connection
 * sleeps until control_answer().  cancel undoes it if the daemon stops
 * first (it may leave an answer in the request).
 */
void
control_wait(struct control_ctx *cx, void (*cancel)(struct control_req *))
{
	cx->cx_req->cr_cancel = cancel;
	TAILQ_INSERT_TAIL(&control.waiting, cx->cx_req, cr_entry);
	MHD_suspend_connection(cx->cx_conn);
}

/* The CA answered: wake the request up with answer (consumed). */
void
control_answer(struct control_req *cr, unsigned int status, json_t *answer)
{
	TAILQ_REMOVE(&control.waiting, cr, cr_entry);
	cr->cr_cancel = NULL;
	cr->cr_status = status;
	cr->cr_answer = answer;
	MHD_resume_connection(cr->cr_conn);
	control_wake();
}

const struct control_hooks *
control_hooks(void)
{
	return &control.hooks;
}

time_t
control_uptime(void)
{
	struct timespec	 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec - control.started.tv_sec;
}

/* Run libmicrohttpd soon: a connection was resumed or has more to send. */
void
control_wake(void)
{
	loop_mhd_wake(&control.loop);
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
 * The body: empty, or a JSON object with only the route's fields (their
 * types are the handler's to check).  Routes without fields accept an
 * empty body or {}.
 */
static int
control_field_known(const char *const *fields, const char *key)
{
	for (; fields != NULL && *fields != NULL; fields++)
		if (strcmp(*fields, key) == 0)
			return 1;
	return 0;
}

static enum MHD_Result
control_check_body(struct MHD_Connection *conn, struct control_req *cr,
    const char *const *fields, json_t **body)
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
		if (control_field_known(fields, key))
			continue;
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

	for (i = 0; i < control_nroutes; i++) {
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
	cx.cx_req = cr;
	cx.cx_id = id;
	if (control_check_body(conn, cr, found->cr_fields, &cx.cx_body) ==
	    MHD_NO) {
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
	const char		*clen, *why;

	(void)cls;
	(void)version;
	if (cr != NULL && cr->cr_answer != NULL) {
		/* Resumed: the CA answered (a revocation, an account). */
		json_t	*j = cr->cr_answer;

		cr->cr_answer = NULL;
		return control_reply(conn, cr->cr_status, j, NULL, NULL);
	}
	if (cr == NULL) {
		*con_cls = cr = xcalloc(1, sizeof(*cr));
		cr->cr_conn = conn;
		if ((why = mhd_guard_refuse(conn)) != NULL) {
			mhd_guard_arrived(conn);
			return control_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
			    "%s", why);
		}
		/* Refuse a body announced too big before reading it. */
		clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		    MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (clen != NULL && strtoull(clen, NULL, 10) >
		    CONTROL_MAX_BODY) {
			mhd_guard_arrived(conn);
			return control_error(conn, MHD_HTTP_CONTENT_TOO_LARGE,
			    NULL, "the body is larger than %d bytes",
			    CONTROL_MAX_BODY);
		}
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
	mhd_guard_arrived(conn);
	return control_dispatch(conn, url, method, cr);
}

static void
control_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct control_req	*cr = *con_cls;

	(void)cls;
	(void)toe;
	mhd_guard_next(conn);
	if (cr == NULL)
		return;
	json_decref(cr->cr_answer);
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

/* Over a cap: say why in one write, best effort, and close. */
static void
control_refuse(int fd, const char *why)
{
	json_t	*j;
	char	*body, *buf;
	int	 n;

	j = control_error_json(MHD_HTTP_SERVICE_UNAVAILABLE, why);
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (body == NULL)
		fatalx("%s: json_dumps", __func__);
	n = asprintf(&buf, "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s\n", strlen(body) + 1, body);
	if (n == -1)
		fatalx("%s: asprintf", __func__);
	log_debug("control: refusing a connection: %s", why);
	if (write(fd, buf, (size_t)n) == -1)
		log_debug("control: refusing a connection: %s",
		    strerror(errno));
	free(buf);
	free(body);
	close(fd);
}

/*
 * 0 if the client on fd may have one more connection, else -1 and why.
 * Root and our uid only meet the total; any other uid its own cap and
 * the total less the slots kept for root and our uid.
 */
static int
control_admit(int fd, char *why, size_t len)
{
	struct control_conn	*cn;
	struct ucred		 uc;
	socklen_t		 ulen = sizeof(uc);
	int			 mine = 0;

	if (control.nconns >= CONTROL_MAX_CONNS) {
		snprintf(why, len, "too many connections");
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ulen) == -1) {
		snprintf(why, len, "the caller's credentials are unknown");
		return -1;
	}
	if (control_privileged(uc.uid))
		return 0;
	if (control.nconns >= CONTROL_MAX_CONNS - CONTROL_RESERVED_CONNS) {
		snprintf(why, len, "too many connections (the last %d are "
		    "kept for root and uid %u)", CONTROL_RESERVED_CONNS,
		    (unsigned)geteuid());
		return -1;
	}
	TAILQ_FOREACH(cn, &control.conns, cn_entry)
		if (cn->cn_uid == uc.uid)
			mine++;
	if (mine >= CONTROL_MAX_CONNS_PER_UID) {
		snprintf(why, len, "uid %u has %d connections open, the most "
		    "one uid may have", (unsigned)uc.uid, mine);
		return -1;
	}
	return 0;
}

/* A connection opens or closes: who it is, and its guard. */
static void
control_notify(void *cls, struct MHD_Connection *conn, void **ctx,
    enum MHD_ConnectionNotificationCode code)
{
	const union MHD_ConnectionInfo	*ci;
	struct control_conn		*cn;
	struct mhd_guard		*mg;
	struct ucred			 uc;
	socklen_t			 ulen = sizeof(uc);

	(void)cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		cn = xcalloc(1, sizeof(*cn));
		cn->cn_conn = conn;
		cn->cn_uid = (uid_t)-1;
		ci = MHD_get_connection_info(conn,
		    MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci != NULL && getsockopt(ci->connect_fd, SOL_SOCKET,
		    SO_PEERCRED, &uc, &ulen) == 0) {
			cn->cn_uid = uc.uid;
			cn->cn_privileged = control_privileged(uc.uid);
		}
		TAILQ_INSERT_TAIL(&control.conns, cn, cn_entry);
		control.nconns++;
		*ctx = mhd_guard_new(&control.loop, conn,
		    CONTROL_REQUEST_TIMEOUT, cn);
		return;
	}
	if ((mg = *ctx) == NULL)
		return;
	cn = mg->mg_arg;
	TAILQ_REMOVE(&control.conns, cn, cn_entry);
	control.nconns--;
	free(cn);
	mhd_guard_free(mg);
	*ctx = NULL;
}

static void
control_accept(evutil_socket_t lfd, short events, void *arg)
{
	struct sockaddr_un		 sun;
	socklen_t			 len = sizeof(sun);
	struct timeval			 tv = { CONTROL_ACCEPT_PAUSE, 0 };
	char				 why[256];
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
	if (control_admit(fd, why, sizeof(why)) == -1) {
		control_refuse(fd, why);
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

/*
 * The socket's folder, when missing (e.g. /run/acme-sidecar): made 0750
 * in the socket's group, so that its members can reach the socket.  One
 * that exists is left as it is, but only if it and the folders above it
 * belong to root or to us (fsafe.c): another user's could swap the socket
 * for one of their own under our clients.  Its mode is not held to 0750:
 * a pod shares the socket through an emptyDir, 0777.
 */
static int
control_mkdir(const char *path, char **cause)
{
	char	*copy, *dir, *why = NULL;
	int	 fd;

	copy = xstrdup(path);
	dir = dirname(copy);
	fd = fsafe_opendir(dir, 0777, (uid_t)-1, &why);
	if (fd == -1 && errno == ENOENT) {
		free(why);
		why = NULL;
		fd = fsafe_mkdir(dir, 0750, (uid_t)-1, control.gid, &why);
	}
	if (fd == -1)
		xasprintf(cause, "control_socket %s: %s", path, why);
	else
		close(fd);
	free(why);
	free(copy);
	return fd == -1 ? -1 : 0;
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
	size_t	i;

	if (loop_mhd_start(&control.loop, base, control.daemon, "control",
	    cause) == -1)
		return -1;
	control.ev_accept = event_new(base, control.fd, EV_READ | EV_PERSIST,
	    control_accept, NULL);
	control.ev_pause = evtimer_new(base, control_resume, NULL);
	if (control.ev_accept == NULL || control.ev_pause == NULL) {
		xasprintf(cause, "control: cannot add events");
		return -1;
	}
	/* A request goes ahead of order work (loop.c). */
	loop_mhd_urgent(&control.loop);
	if (event_base_get_npriorities(base) > LOOP_PRI_DEFAULT)
		event_priority_set(control.ev_accept, LOOP_PRI_URGENT);
	if (event_add(control.ev_accept, NULL) == -1) {
		xasprintf(cause, "control: cannot add events");
		return -1;
	}
	for (i = 0; i < control_nservices; i++)
		if (control_services[i].cs_start(base, cause) == -1)
			return -1;
	return 0;
}

int
control_start(struct event_base *base, const char *path, const char *group,
    const struct control_hooks *hooks, char **cause)
{
	if (control.daemon != NULL) {
		xasprintf(cause, "control: already started");
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &control.started);
	control.hooks = *hooks;
	if ((control.fd = control_bind(path, group, cause)) == -1)
		return -1;
	control.path = xstrdup(path);
	control.daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
	    MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, control_request, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, control_mhd_log, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, control_completed, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, control_notify, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, mhd_guard_unescape, NULL,
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

/*
 * libmicrohttpd cannot stop with a connection suspended: end the streams,
 * drop what still waits for the CA, and wake them all.
 */
static void
control_wake_all(void)
{
	struct control_req	*cr;
	void			(*cancel)(struct control_req *);
	size_t			 i;

	for (i = 0; i < control_nservices; i++)
		control_services[i].cs_stop();
	while ((cr = TAILQ_FIRST(&control.waiting)) != NULL) {
		TAILQ_REMOVE(&control.waiting, cr, cr_entry);
		cancel = cr->cr_cancel;
		cr->cr_cancel = NULL;
		cancel(cr);
		MHD_resume_connection(cr->cr_conn);
	}
}

void
control_stop(void)
{
	struct stat	 st;

	if (control.daemon != NULL)
		control_wake_all();
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

