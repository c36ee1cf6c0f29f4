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
 * Slots.  A reader must not be able to lock the administrator out: a uid
 * other than root and ours holds at most CONTROL_MAX_CONNS_PER_UID
 * connections and CONTROL_MAX_STREAMS_PER_UID event streams, and the last
 * CONTROL_RESERVED_CONNS connections and CONTROL_RESERVED_STREAMS streams
 * are for root and our uid alone.  Each request must arrive whole within
 * CONTROL_REQUEST_TIMEOUT seconds, however slowly it trickles in
 * (mhd_guard.c); a %00 in the path, which would cut an id short, and two
 * Content-Length headers are a 400 before any route is looked at.
 *
 * Routes are one table, one row each: method, path, access, the body
 * fields it takes, handler.  A path segment "{id}" matches one segment.
 * No route for the path is a 404, a route for another method a 405 with
 * Allow.  Every error is {"error": {"status": N, "message": "..."}} and
 * changes nothing.
 *
 * Three kinds of answer wait, with their connection suspended: a
 * revocation and an account operation (until the CA answers) and GET
 * /v1/events (until the next event).  The
 * daemon resumes them all before it stops libmicrohttpd, which refuses to
 * stop with a connection suspended.  An event stream may be silent for
 * hours, so it has no idle timeout: an empty line is sent after
 * CONTROL_STREAM_KEEPALIVE seconds of silence, and a client that leaves
 * bytes unread for CONTROL_STREAM_STALL seconds is disconnected.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <linux/sockios.h>

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

#include <event2/buffer.h>
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

/* One request: its body, and the answer of a revocation once it came. */
struct control_req {
	struct MHD_Connection	*cr_conn;
	char			*cr_body;
	size_t			 cr_len;
	int			 cr_too_big;
	struct cert		*cr_revoking;	/* suspended for it */
	struct acme_issuer	*cr_account;	/* suspended for its account */
	const char		*cr_reason;	/* its RFC 5280 name */
	json_t			*cr_answer;	/* then this ... */
	unsigned int		 cr_status;	/* ... with this status */
	TAILQ_ENTRY(control_req) cr_entry;
};
TAILQ_HEAD(control_reqs, control_req);

/* One connection, from accept to close: whose it is. */
struct control_conn {
	struct MHD_Connection	*cn_conn;
	uid_t			 cn_uid;
	int			 cn_privileged;	/* root or our uid */
	TAILQ_ENTRY(control_conn) cn_entry;
};
TAILQ_HEAD(control_conns, control_conn);

/* One GET /v1/events. */
struct control_stream {
	struct MHD_Connection	*cs_conn;
	struct evbuffer		*cs_buf;	/* lines not sent yet */
	int			 cs_suspended;	/* waiting for an event */
	int			 cs_end;	/* 0, or an MHD_CONTENT_READER_ */
	uid_t			 cs_uid;
	int			 cs_privileged;
	time_t			 cs_sent;	/* last line queued (monotonic) */
	time_t			 cs_unread;	/* bytes unread since, or 0 */
	TAILQ_ENTRY(control_stream) cs_entry;
};
TAILQ_HEAD(control_streams, control_stream);

struct control_ctx {
	struct MHD_Connection	*cx_conn;
	struct control_req	*cx_req;
	const char		*cx_id;		/* the {id} segment, or NULL */
	json_t			*cx_body;	/* the JSON object, or NULL */
};

struct control_route {
	const char		*cr_method;
	const char		*cr_path;
	enum control_access	 cr_access;
	const char *const	*cr_fields;	/* of the body, NULL: none */
	enum MHD_Result		(*cr_handler)(struct control_ctx *);
};

/* RFC 5280 section 5.3.1 CRLReason; 7 is not used. */
static const struct {
	const char	*name;
	int		 code;
} control_reasons[] = {
	{ "unspecified", 0 }, { "keyCompromise", 1 }, { "cACompromise", 2 },
	{ "affiliationChanged", 3 }, { "superseded", 4 },
	{ "cessationOfOperation", 5 }, { "certificateHold", 6 },
	{ "removeFromCRL", 8 }, { "privilegeWithdrawn", 9 },
	{ "aACompromise", 10 }
};
#define CONTROL_NREASONS (sizeof(control_reasons) / sizeof(control_reasons[0]))

static enum MHD_Result	control_get_status(struct control_ctx *);
static enum MHD_Result	control_get_certs(struct control_ctx *);
static enum MHD_Result	control_get_cert(struct control_ctx *);
static enum MHD_Result	control_get_issuers(struct control_ctx *);
static enum MHD_Result	control_post_reload(struct control_ctx *);
static enum MHD_Result	control_post_renew(struct control_ctx *);
static enum MHD_Result	control_post_cert(struct control_ctx *);
static enum MHD_Result	control_delete_cert(struct control_ctx *);
static enum MHD_Result	control_post_revoke(struct control_ctx *);
static enum MHD_Result	control_get_events(struct control_ctx *);
static enum MHD_Result	control_get_metrics(struct control_ctx *);
static enum MHD_Result	control_get_account(struct control_ctx *);
static enum MHD_Result	control_post_key_change(struct control_ctx *);
static enum MHD_Result	control_post_deactivate(struct control_ctx *);

static const char *const control_add_fields[] = {
	"issuer", "identifiers", "key", "profile", "challenge", NULL
};
static const char *const control_revoke_fields[] = { "reason", NULL };
static const char *const control_key_change_fields[] = { "key", NULL };

static const struct control_route control_routes[] = {
	{ "GET", "/v1/status", CONTROL_READ, NULL, control_get_status },
	{ "GET", "/v1/certificates", CONTROL_READ, NULL, control_get_certs },
	{ "POST", "/v1/certificates", CONTROL_CHANGE, control_add_fields,
	    control_post_cert },
	{ "GET", "/v1/certificates/{id}", CONTROL_READ, NULL,
	    control_get_cert },
	{ "DELETE", "/v1/certificates/{id}", CONTROL_CHANGE, NULL,
	    control_delete_cert },
	{ "POST", "/v1/certificates/{id}/renew", CONTROL_CHANGE, NULL,
	    control_post_renew },
	{ "POST", "/v1/certificates/{id}/revoke", CONTROL_CHANGE,
	    control_revoke_fields, control_post_revoke },
	{ "GET", "/v1/issuers", CONTROL_READ, NULL, control_get_issuers },
	{ "GET", "/v1/issuers/{id}/account", CONTROL_READ, NULL,
	    control_get_account },
	{ "POST", "/v1/issuers/{id}/account/key-change", CONTROL_CHANGE,
	    control_key_change_fields, control_post_key_change },
	{ "POST", "/v1/issuers/{id}/account/deactivate", CONTROL_CHANGE, NULL,
	    control_post_deactivate },
	{ "POST", "/v1/reload", CONTROL_CHANGE, NULL, control_post_reload },
	{ "GET", "/v1/events", CONTROL_READ, NULL, control_get_events },
	{ "GET", "/metrics", CONTROL_READ, NULL, control_get_metrics },
};
#define CONTROL_NROUTES	(sizeof(control_routes) / sizeof(control_routes[0]))

/* The whole server; one per process, touched only by the loop thread. */
static struct {
	struct MHD_Daemon	*daemon;
	int			 fd;		/* listening socket */
	struct event		*ev_accept;
	struct event		*ev_pause;	/* after EMFILE */
	struct event		*ev_check;	/* streams' hang-ups */
	struct loop_mhd		 loop;		/* drives daemon */
	struct control_conns	 conns;
	size_t			 nconns;
	struct control_streams	 streams;
	size_t			 nstreams;
	struct control_reqs	 revoking;	/* suspended for the CA */
	struct control_reqs	 accounts;	/* suspended for the CA */
	char			*path;
	dev_t			 dev;		/* to unlink only our own */
	ino_t			 ino;
	gid_t			 gid;		/* the socket's group */
	struct control_hooks	 hooks;
	struct timespec		 started;
} control = {
	.fd = -1,
	.conns = TAILQ_HEAD_INITIALIZER(control.conns),
	.streams = TAILQ_HEAD_INITIALIZER(control.streams),
	.revoking = TAILQ_HEAD_INITIALIZER(control.revoking),
	.accounts = TAILQ_HEAD_INITIALIZER(control.accounts)
};

/* ------------------------------------------------------------ connections */

static int
control_privileged(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* The caller of conn: never NULL once control_notify() has seen it. */
static struct control_conn *
control_conn_of(struct MHD_Connection *conn)
{
	static struct control_conn	 unknown = { .cn_uid = (uid_t)-1 };
	struct mhd_guard		*mg = mhd_guard_of(conn);

	return mg != NULL ? mg->mg_arg : &unknown;
}

/* ---------------------------------------------------------------- replies */

/* Queue len bytes of text (consumed), with one extra header if name. */
static enum MHD_Result
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
static enum MHD_Result
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
static json_t *
control_message(const char *msg)
{
	json_t	*j;
	char	*copy, *c;

	if ((j = json_string(msg)) != NULL)
		return j;
	copy = xstrdup(msg);
	for (c = copy; *c != '\0'; c++)
		if ((unsigned char)*c >= 0x80)
			*c = '?';
	j = json_string(copy);
	free(copy);
	if (j == NULL)
		fatalx("%s: json_string", __func__);
	return j;
}

static json_t *
control_error_json(unsigned int status, const char *msg)
{
	json_t	*j;

	j = json_pack("{s:{s:i, s:o}}", "error", "status", (int)status,
	    "message", control_message(msg));
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
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
	j = control_error_json(status, msg);
	free(msg);
	return control_reply(conn, status, j, allow != NULL ?
	    MHD_HTTP_HEADER_ALLOW : NULL, allow);
}

/* RFC 3339 in UTC, or JSON null for "never". */
static json_t *
control_time(time_t t)
{
	char	 buf[UTIL_TIME_LEN];

	if (t == 0)
		return json_null();
	util_time_rfc3339(t, buf, sizeof(buf));
	return json_string(buf);
}

/* ------------------------------------------------------------------ routes */

static json_t *
control_str(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

/*
 * Where next_renewal comes from: "ari", a moment inside the window the
 * CA's renewalInfo suggested (RFC 9773), or "lifetime", the 2/3 rule.
 */
static json_t *
control_renewal_json(const struct order_info *oi)
{
	json_t	*w = json_null(), *j;

	if (oi->oi_ari_end != 0)
		w = json_pack("{s:o, s:o}", "start",
		    control_time(oi->oi_ari_start), "end",
		    control_time(oi->oi_ari_end));
	j = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}",
	    "source", oi->oi_renew_at == 0 ? json_null() :
	    json_string(oi->oi_renew_ari ? "ari" : "lifetime"),
	    "at", control_time(oi->oi_renew_at),
	    "ari_window", w,
	    "ari_next_fetch", control_time(oi->oi_ari_next_fetch),
	    "ari_explanation_url", control_str(oi->oi_ari_explanation),
	    "ari_cert_id", control_str(oi->oi_cert_id));
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
}

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
	json_object_set_new(j, "profile", control_str(oi.oi_profile));
	json_object_set_new(j, "challenge",
	    json_string(conf_challenge_name(order_cert_challenge(ce))));
	json_object_set_new(j, "renewal", control_renewal_json(&oi));
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

/*
 * Whether nginx's workers can open the segment, as judged at start:
 * "can_open" is null when who they are is not known here.
 */
static json_t *
control_zone_readers_json(void)
{
	const struct zone_readers	*zr = zone_readers_get();
	json_t				*j;

	if (zr->zr_state == ZONE_READERS_UNKNOWN && zr->zr_user[0] == '\0')
		return json_pack("{s:n, s:n, s:n, s:n, s:n}", "user", "group",
		    "from", "can_open", "problem");
	j = json_pack("{s:s, s:s, s:s, s:o, s:o}", "user", zr->zr_user,
	    "group", zr->zr_group, "from", zr->zr_source,
	    "can_open", zr->zr_state == ZONE_READERS_UNKNOWN ? json_null() :
	    json_boolean(zr->zr_state == ZONE_READERS_YES),
	    "problem", zr->zr_state == ZONE_READERS_NO ?
	    json_string(zr->zr_why) : json_null());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return j;
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
	json_object_set_new(j, "nginx_workers", control_zone_readers_json());
	return j;
}

/* "cluster": {"enabled": false}, or the link, members and leases. */
static json_t *
control_cluster_json(void)
{
	struct cluster_status	 cs;
	json_t			*j, *members;
	char			 at[UTIL_TIME_LEN];
	size_t			 i;

	cluster_get_status(&cs);
	if (!cs.cs_enabled)
		return json_pack("{s:b}", "enabled", 0);
	members = json_array();
	for (i = 0; i < cs.cs_nmembers; i++)
		json_array_append_new(members, json_string(cs.cs_members[i]));
	j = json_pack("{s:b, s:b, s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:I, "
	    "s:I}", "enabled", 1, "connected", cs.cs_connected,
	    "state", cs.cs_state, "node", cs.cs_node, "redis", cs.cs_url,
	    "prefix", cs.cs_prefix, "members", members,
	    "leases", (json_int_t)cs.cs_leases,
	    "secret", cs.cs_secret_ok == 1 ? "ok" : cs.cs_secret_ok == 0 ?
	    "mismatch" : "unchecked",
	    "connects", (json_int_t)cs.cs_connects,
	    "drops", (json_int_t)cs.cs_drops);
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	if (cs.cs_last_error != NULL) {
		util_time_rfc3339(cs.cs_last_error_at, at, sizeof(at));
		json_object_set_new(j, "last_error",
		    json_string(cs.cs_last_error));
		json_object_set_new(j, "last_error_at", json_string(at));
	}
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
	j = json_pack("{s:s, s:I, s:o, s:{s:I, s:I, s:o}, s:o, s:o}",
	    "version", SIDECAR_VERSION,
	    "uptime", (json_int_t)(now.tv_sec - control.started.tv_sec),
	    "issuers", control_issuers_json(),
	    "certificates", "total", (json_int_t)n, "valid", (json_int_t)valid,
	    "by_state", states,
	    "shared_zone", control_zone_json(),
	    "cluster", control_cluster_json());
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, j, NULL, NULL);
}

/*
 * The list is written one certificate at a time, each on one line: with
 * 10,000 certificates a tree of them all, indented, took most of the
 * 100 ms this call may take (scripts/bench/control).
 */
static enum MHD_Result
control_get_certs(struct control_ctx *cx)
{
	FILE			*f;
	char			*text = NULL;
	size_t			 len, i, n = sched_cert_count();
	json_t			*j;

	if ((f = open_memstream(&text, &len)) == NULL)
		fatal("%s: open_memstream", __func__);
	fputs("{\n  \"certificates\": [", f);
	for (i = 0; i < n; i++) {
		fputs(i == 0 ? "\n    " : ",\n    ", f);
		j = control_cert_json(sched_cert_at(i));
		if (json_dumpf(j, f, JSON_PRESERVE_ORDER) == -1)
			fatalx("%s: json_dumpf", __func__);
		json_decref(j);
	}
	fputs(n == 0 ? "]\n}\n" : "\n  ]\n}\n", f);
	if (fclose(f) != 0)
		fatal("%s: open_memstream", __func__);
	return control_send(cx->cx_conn, MHD_HTTP_OK, text, len,
	    "application/json", NULL, NULL);
}

static enum MHD_Result
control_get_cert(struct control_ctx *cx)
{
	struct cert	*ce;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, control_cert_json(ce),
	    NULL, NULL);
}

static enum MHD_Result
control_get_issuers(struct control_ctx *cx)
{
	return control_reply(cx->cx_conn, MHD_HTTP_OK,
	    json_pack("{s:o}", "issuers", control_issuers_json()), NULL,
	    NULL);
}

/* The same reload as SIGHUP; a configuration that fails is refused. */
static enum MHD_Result
control_post_reload(struct control_ctx *cx)
{
	enum MHD_Result	 ret;
	char		*cause = NULL;

	if (control.hooks.ch_reload(&cause) == -1) {
		ret = control_error(cx->cx_conn,
		    MHD_HTTP_UNPROCESSABLE_CONTENT, NULL,
		    "reload refused, the running configuration is kept: %s",
		    cause);
		free(cause);
		return ret;
	}
	return control_reply(cx->cx_conn, MHD_HTTP_OK, json_pack("{s:b, s:I}",
	    "reloaded", 1, "certificates", (json_int_t)sched_cert_count()),
	    NULL, NULL);
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
	    control_cert_json(ce), NULL, NULL);
}

/* A field that must be a string, or NULL with a 400 queued. */
static const char *
control_string_field(struct control_ctx *cx, const char *name, int required,
    int *failed)
{
	json_t	*v = json_object_get(cx->cx_body, name);

	*failed = 0;
	if (v == NULL && !required)
		return NULL;
	if (json_is_string(v))
		return json_string_value(v);
	*failed = 1;
	control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL, v == NULL ?
	    "missing field \"%s\"" : "field \"%s\" must be a string", name);
	return NULL;
}

/* "identifiers": a non-empty array of strings; NULL with a 400 queued. */
static const char **
control_idents_field(struct control_ctx *cx, size_t *n)
{
	json_t		*a = json_object_get(cx->cx_body, "identifiers"), *v;
	const char	**idents;
	size_t		 i;

	if (!json_is_array(a) || json_array_size(a) == 0) {
		control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL, a == NULL ?
		    "missing field \"identifiers\"" : "field \"identifiers\" "
		    "must be a non-empty array of strings");
		return NULL;
	}
	if (json_array_size(a) > CONF_MAX_IDENTS) {
		control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "field \"identifiers\" holds %zu identifiers: one "
		    "certificate may have at most %d", json_array_size(a),
		    CONF_MAX_IDENTS);
		return NULL;
	}
	idents = xreallocarray(NULL, json_array_size(a), sizeof(*idents));
	json_array_foreach(a, i, v) {
		if ((idents[i] = json_string_value(v)) == NULL) {
			free(idents);
			control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL,
			    "identifiers[%zu] must be a string", i);
			return NULL;
		}
	}
	*n = json_array_size(a);
	return idents;
}

static unsigned int
control_result_status(enum control_result r)
{
	switch (r) {
	case CONTROL_OK:
		return MHD_HTTP_OK;
	case CONTROL_INVALID:
		return MHD_HTTP_UNPROCESSABLE_CONTENT;
	case CONTROL_CONFLICT:
		return MHD_HTTP_CONFLICT;
	case CONTROL_NOT_FOUND:
		return MHD_HTTP_NOT_FOUND;
	case CONTROL_UNAVAILABLE:
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	case CONTROL_FAILED:
		break;
	}
	return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

/* Add a certificate as an acme_certificate line would (main.c saves it). */
static enum MHD_Result
control_post_cert(struct control_ctx *cx)
{
	const char		*issuer, *key, *profile, *challenge, *id;
	const char		**idents;
	char			*cause = NULL, location[600];
	struct cert		*ce;
	enum control_result	 r;
	enum MHD_Result		 ret;
	size_t			 n;
	int			 failed;

	if ((issuer = control_string_field(cx, "issuer", 1, &failed)) == NULL)
		return MHD_YES;
	key = control_string_field(cx, "key", 0, &failed);
	if (failed)
		return MHD_YES;
	profile = control_string_field(cx, "profile", 0, &failed);
	if (failed)
		return MHD_YES;
	challenge = control_string_field(cx, "challenge", 0, &failed);
	if (failed || (idents = control_idents_field(cx, &n)) == NULL)
		return MHD_YES;
	r = control.hooks.ch_add(issuer, (char *const *)idents, n, key,
	    profile, challenge, &id, &cause);
	free(idents);
	if (r != CONTROL_OK) {
		ret = control_error(cx->cx_conn, control_result_status(r), NULL,
		    "%s", cause);
		free(cause);
		return ret;
	}
	if ((ce = sched_cert_find(id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
		    NULL, "certificate \"%s\" is saved but its issuer is not "
		    "running", id);
	snprintf(location, sizeof(location), "/v1/certificates/%s", id);
	return control_reply(cx->cx_conn, MHD_HTTP_CREATED,
	    control_cert_json(ce), MHD_HTTP_HEADER_LOCATION, location);
}

static enum MHD_Result
control_delete_cert(struct control_ctx *cx)
{
	enum control_result	 r;
	enum MHD_Result		 ret;
	char			*cause = NULL;

	if (sched_cert_find(cx->cx_id) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	if ((r = control.hooks.ch_remove(cx->cx_id, &cause)) != CONTROL_OK) {
		ret = control_error(cx->cx_conn, control_result_status(r), NULL,
		    "%s", cause);
		free(cause);
		return ret;
	}
	return control_reply(cx->cx_conn, MHD_HTTP_OK,
	    json_pack("{s:s}", "deleted", cx->cx_id), NULL, NULL);
}

/* "reason": an RFC 5280 name or code; -1 with a 400 queued. */
static int
control_reason(struct control_ctx *cx)
{
	json_t		*v = json_object_get(cx->cx_body, "reason");
	const char	*name = json_string_value(v);
	size_t		 i;

	if (v == NULL)
		return 0;
	for (i = 0; i < CONTROL_NREASONS; i++) {
		if (name != NULL && strcmp(name, control_reasons[i].name) == 0)
			return (int)i;
		if (json_is_integer(v) &&
		    json_integer_value(v) == control_reasons[i].code)
			return (int)i;
	}
	control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL, "invalid "
	    "\"reason\": an RFC 5280 reason is expected, by name "
	    "(\"keyCompromise\") or by code (0-6, 8-10)");
	return -1;
}

/* The CA answered a revocation: wake its request up with the answer. */
static void
control_revoked(int rc, const char *why, void *arg)
{
	struct control_req	*cr = arg;
	struct cert		*ce = cr->cr_revoking;

	TAILQ_REMOVE(&control.revoking, cr, cr_entry);
	cr->cr_revoking = NULL;
	if (rc == 0) {
		cr->cr_status = MHD_HTTP_OK;
		cr->cr_answer = json_pack("{s:s, s:s, s:o}", "revoked",
		    order_cert_id(ce), "reason", cr->cr_reason,
		    "certificate", control_cert_json(ce));
		if (cr->cr_answer == NULL)
			fatalx("%s: json_pack", __func__);
	} else {
		cr->cr_status = rc == -2 ? MHD_HTTP_CONFLICT :
		    MHD_HTTP_BAD_GATEWAY;
		cr->cr_answer = control_error_json(cr->cr_status, why);
	}
	MHD_resume_connection(cr->cr_conn);
	loop_mhd_wake(&control.loop);
}

static enum MHD_Result
control_post_revoke(struct control_ctx *cx)
{
	struct cert		*ce;
	struct acme_issuer	*ai;
	struct order_info	 oi;
	enum MHD_Result		 ret;
	char			*cause = NULL;
	int			 i, rc;

	if ((ce = sched_cert_find(cx->cx_id)) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
		    "no certificate \"%s\"", cx->cx_id);
	if ((i = control_reason(cx)) == -1)
		return MHD_YES;
	ai = order_cert_issuer(ce);
	if (acme_issuer_state(ai) != ISSUER_READY ||
	    acme_issuer_revoke_url(ai) == NULL)
		return control_error(cx->cx_conn, MHD_HTTP_SERVICE_UNAVAILABLE,
		    NULL, "issuer \"%s\" cannot revoke now: %s",
		    acme_issuer_name(ai), acme_issuer_state(ai) != ISSUER_READY ?
		    "its account is not ready" : "its directory has no "
		    "revokeCert");
	order_cert_info(ce, &oi);
	if (!oi.oi_have || order_revoking(ce))
		return control_error(cx->cx_conn, MHD_HTTP_CONFLICT, NULL,
		    "certificate \"%s\": %s", cx->cx_id, !oi.oi_have ?
		    "no certificate is stored yet" : "a revocation is already "
		    "under way");
	if ((rc = order_revoke(ce, control_reasons[i].code,
	    control_reasons[i].name, control_revoked, cx->cx_req,
	    &cause)) != 0) {
		ret = control_error(cx->cx_conn, rc == -2 ? MHD_HTTP_CONFLICT :
		    MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
		    "certificate \"%s\": %s", cx->cx_id, cause);
		free(cause);
		return ret;
	}
	log_info("certificate \"%s\": revocation (%s) asked through the "
	    "control socket", cx->cx_id, control_reasons[i].name);
	cx->cx_req->cr_revoking = ce;
	cx->cx_req->cr_reason = control_reasons[i].name;
	TAILQ_INSERT_TAIL(&control.revoking, cx->cx_req, cr_entry);
	MHD_suspend_connection(cx->cx_conn);
	return MHD_YES;
}

/* --------------------------------------------------------------- accounts */

static enum MHD_Result
control_no_issuer(struct control_ctx *cx)
{
	return control_error(cx->cx_conn, MHD_HTTP_NOT_FOUND, NULL,
	    "no issuer \"%s\"", cx->cx_id);
}

static enum MHD_Result
control_get_account(struct control_ctx *cx)
{
	struct acme_issuer	*ai;

	if ((ai = sched_find_issuer(cx->cx_id)) == NULL)
		return control_no_issuer(cx);
	return control_reply(cx->cx_conn, MHD_HTTP_OK, acme_account_json(ai),
	    NULL, NULL);
}

/*
 * The CA answered an account operation (or the issuer stopped before
 * it did, and is going: then it is not looked at).
 */
static void
control_account_done(int rc, const char *why, void *arg)
{
	struct control_req	*cr = arg;
	struct acme_issuer	*ai = cr->cr_account;

	TAILQ_REMOVE(&control.accounts, cr, cr_entry);
	cr->cr_account = NULL;
	if (rc == 0) {
		cr->cr_status = MHD_HTTP_OK;
		cr->cr_answer = acme_account_json(ai);
	} else {
		cr->cr_status = MHD_HTTP_BAD_GATEWAY;
		cr->cr_answer = control_error_json(cr->cr_status, why);
	}
	MHD_resume_connection(cr->cr_conn);
	loop_mhd_wake(&control.loop);
}

/* An operation started (wait for the CA), or refused: a 409 now. */
static enum MHD_Result
control_account_wait(struct control_ctx *cx, struct acme_issuer *ai, int rc,
    char *cause)
{
	enum MHD_Result	 ret;

	if (rc == -1) {
		ret = control_error(cx->cx_conn, MHD_HTTP_CONFLICT, NULL, "%s",
		    cause);
		free(cause);
		return ret;
	}
	cx->cx_req->cr_account = ai;
	TAILQ_INSERT_TAIL(&control.accounts, cx->cx_req, cr_entry);
	MHD_suspend_connection(cx->cx_conn);
	return MHD_YES;
}

static enum MHD_Result
control_post_key_change(struct control_ctx *cx)
{
	struct acme_issuer	*ai;
	const char		*key;
	enum key_type		 type;
	char			*cause = NULL;
	int			 failed, rc;

	if ((ai = sched_find_issuer(cx->cx_id)) == NULL)
		return control_no_issuer(cx);
	key = control_string_field(cx, "key", 0, &failed);
	if (failed)
		return MHD_YES;
	if (key != NULL && key_type_parse(key, &type) == -1)
		return control_error(cx->cx_conn, MHD_HTTP_BAD_REQUEST, NULL,
		    "invalid \"key\" \"%s\": ecdsa:256, ecdsa:384, "
		    "ecdsa:521, rsa:2048, rsa:3072 or rsa:4096 is expected",
		    key);
	log_info("issuer \"%s\": account key rollover asked through the "
	    "control socket", cx->cx_id);
	rc = acme_account_key_change(ai, key != NULL ? (int)type : -1,
	    control_account_done, cx->cx_req, &cause);
	return control_account_wait(cx, ai, rc, cause);
}

static enum MHD_Result
control_post_deactivate(struct control_ctx *cx)
{
	struct acme_issuer	*ai;
	char			*cause = NULL;
	int			 rc;

	if ((ai = sched_find_issuer(cx->cx_id)) == NULL)
		return control_no_issuer(cx);
	log_info("issuer \"%s\": account deactivation asked through the "
	    "control socket", cx->cx_id);
	rc = acme_account_deactivate(ai, control_account_done, cx->cx_req,
	    &cause);
	return control_account_wait(cx, ai, rc, cause);
}

/* ----------------------------------------------------------------- events */

/* Seconds on the monotonic clock, for the streams' timers. */
static time_t
control_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void
control_stream_wake(struct control_stream *cs)
{
	if (cs->cs_suspended) {
		cs->cs_suspended = 0;
		MHD_resume_connection(cs->cs_conn);
	}
}

/* feed.c's listener: one line to every stream. */
static void
control_feed(const char *line, void *arg)
{
	struct control_stream	*cs;
	size_t			 len = strlen(line);

	(void)arg;
	TAILQ_FOREACH(cs, &control.streams, cs_entry) {
		if (cs->cs_end != 0)
			continue;
		if (evbuffer_get_length(cs->cs_buf) + len >
		    CONTROL_STREAM_BACKLOG) {
			log_warnx("control: an event stream's client reads "
			    "too slowly (%d bytes unread); disconnecting it",
			    CONTROL_STREAM_BACKLOG);
			cs->cs_end = MHD_CONTENT_READER_END_WITH_ERROR;
		} else {
			evbuffer_add(cs->cs_buf, line, len);
			evbuffer_add(cs->cs_buf, "\n", 1);
			cs->cs_sent = control_now();
		}
		control_stream_wake(cs);
	}
	loop_mhd_wake(&control.loop);
}

/* libmicrohttpd wants more of the stream: give it, or wait for it. */
static ssize_t
control_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct control_stream	*cs = cls;
	int			 n;

	(void)pos;
	if (evbuffer_get_length(cs->cs_buf) > 0 &&
	    cs->cs_end != MHD_CONTENT_READER_END_WITH_ERROR) {
		n = evbuffer_remove(cs->cs_buf, buf, max);
		return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
	}
	if (cs->cs_end != 0)
		return cs->cs_end;
	/* Nothing to send: sleep until control_feed() wakes us. */
	cs->cs_suspended = 1;
	MHD_suspend_connection(cs->cs_conn);
	return 0;
}

static void
control_stream_free(void *cls)
{
	struct control_stream	*cs = cls;

	TAILQ_REMOVE(&control.streams, cs, cs_entry);
	control.nstreams--;
	evbuffer_free(cs->cs_buf);
	free(cs);
}

/*
 * 0 if the caller of cn may open one more stream, else -1 and why: a
 * reader that never reads would otherwise hold a place for ever, and
 * sixteen of them every place.
 */
static int
control_stream_admit(const struct control_conn *cn, char *why, size_t len)
{
	struct control_stream	*cs;
	int			 mine = 0;

	if (control.nstreams >= CONTROL_MAX_STREAMS) {
		snprintf(why, len, "too many event streams (%d)",
		    CONTROL_MAX_STREAMS);
		return -1;
	}
	if (cn->cn_privileged)
		return 0;
	if (control.nstreams >= CONTROL_MAX_STREAMS -
	    CONTROL_RESERVED_STREAMS) {
		snprintf(why, len, "too many event streams (%d, the last %d "
		    "of them kept for root and uid %u)", CONTROL_MAX_STREAMS,
		    CONTROL_RESERVED_STREAMS, (unsigned)geteuid());
		return -1;
	}
	TAILQ_FOREACH(cs, &control.streams, cs_entry)
		if (!cs->cs_privileged && cs->cs_uid == cn->cn_uid)
			mine++;
	if (mine >= CONTROL_MAX_STREAMS_PER_UID) {
		snprintf(why, len, "uid %u has %d event streams open, the most "
		    "one uid may have", (unsigned)cn->cn_uid, mine);
		return -1;
	}
	return 0;
}

static enum MHD_Result
control_get_events(struct control_ctx *cx)
{
	struct control_conn	*cn = control_conn_of(cx->cx_conn);
	struct control_stream	*cs;
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;
	char			 why[256];

	if (control_stream_admit(cn, why, sizeof(why)) == -1)
		return control_error(cx->cx_conn, MHD_HTTP_SERVICE_UNAVAILABLE,
		    NULL, "%s", why);
	cs = xcalloc(1, sizeof(*cs));
	cs->cs_conn = cx->cx_conn;
	cs->cs_uid = cn->cn_uid;
	cs->cs_privileged = cn->cn_privileged;
	cs->cs_sent = control_now();	/* the answer's head */
	if ((cs->cs_buf = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
	    control_stream_read, cs, control_stream_free);
	if (resp == NULL) {
		evbuffer_free(cs->cs_buf);
		free(cs);
		return MHD_NO;
	}
	TAILQ_INSERT_TAIL(&control.streams, cs, cs_entry);
	control.nstreams++;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/x-ndjson");
	ret = MHD_queue_response(cx->cx_conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * Every CONTROL_STREAM_CHECK seconds, each stream: a sleeping one peeks
 * at its socket, for a suspended connection does not see its client hang
 * up.  A client that has left bytes unread (in its socket, SIOCOUTQ, or
 * still ours) for CONTROL_STREAM_STALL seconds is cut, as is one whose
 * unread events pass CONTROL_STREAM_BACKLOG (control_feed()).  A stream
 * silent for CONTROL_STREAM_KEEPALIVE seconds gets an empty line, which
 * clients skip (proto/control-api.md): so one that stopped reading is
 * found even when no event comes.
 */
static void
control_check_stream(struct control_stream *cs, time_t now)
{
	const union MHD_ConnectionInfo	*ci;
	char				 c;
	ssize_t				 n;
	int				 outq = 0;

	if (cs->cs_end != 0)
		return;
	ci = MHD_get_connection_info(cs->cs_conn,
	    MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL)
		return;
	if (cs->cs_suspended) {
		n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
			cs->cs_end = MHD_CONTENT_READER_END_WITH_ERROR;
			control_stream_wake(cs);
			return;
		}
	}
	if (ioctl(ci->connect_fd, SIOCOUTQ, &outq) == -1)
		outq = 0;
	if (outq == 0 && evbuffer_get_length(cs->cs_buf) == 0)
		cs->cs_unread = 0;
	else if (cs->cs_unread == 0)
		cs->cs_unread = now;
	else if (now - cs->cs_unread >= CONTROL_STREAM_STALL) {
		log_warnx("control: uid %u's event stream has left bytes "
		    "unread for %d s; disconnecting it", (unsigned)cs->cs_uid,
		    CONTROL_STREAM_STALL);
		cs->cs_end = MHD_CONTENT_READER_END_WITH_ERROR;
		/* Its answer may be stuck in a full socket: cut it there. */
		mhd_guard_cut(cs->cs_conn);
		control_stream_wake(cs);
		return;
	}
	if (cs->cs_suspended && now - cs->cs_sent >= CONTROL_STREAM_KEEPALIVE) {
		evbuffer_add(cs->cs_buf, "\n", 1);
		cs->cs_sent = now;
		control_stream_wake(cs);
	}
}

static void
control_check_streams(evutil_socket_t fd, short events, void *arg)
{
	struct control_stream	*cs;
	time_t			 now = control_now();

	(void)fd;
	(void)events;
	(void)arg;
	TAILQ_FOREACH(cs, &control.streams, cs_entry)
		control_check_stream(cs, now);
	loop_mhd_wake(&control.loop);
}

/*
 * What /metrics shows besides metrics.c's own counters, taken now.  The
 * order_info strings point into the certificates, which stay put while
 * the page is rendered.
 */
static void
control_metrics_snapshot(struct metrics_snapshot *ms, struct order_info **oi,
    int **valid)
{
	struct cert	*ce;
	size_t		 i, n = sched_cert_count();

	memset(ms, 0, sizeof(*ms));
	*oi = n != 0 ? xreallocarray(NULL, n, sizeof(**oi)) : NULL;
	*valid = n != 0 ? xreallocarray(NULL, n, sizeof(**valid)) : NULL;
	for (i = 0; i < n; i++) {
		ce = sched_cert_at(i);
		order_cert_info(ce, &(*oi)[i]);
		(*valid)[i] = order_cert_valid(ce);
	}
	ms->ms_certs = *oi;
	ms->ms_valid = *valid;
	ms->ms_ncerts = n;
	ms->ms_challenges_served = challenge_served();
	ready_get_stats(&ms->ms_ready);
	shm_get_stats(&ms->ms_shm);
	cluster_get_status(&ms->ms_cluster);
}

static enum MHD_Result
control_get_metrics(struct control_ctx *cx)
{
	struct metrics_snapshot	 ms;
	struct order_info	*oi;
	int			*valid;
	char			*text;

	control_metrics_snapshot(&ms, &oi, &valid);
	text = metrics_render(&ms);
	free(valid);
	free(oi);
	return control_send(cx->cx_conn, MHD_HTTP_OK, text, strlen(text),
	    "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
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
	struct timeval	 check = { CONTROL_STREAM_CHECK, 0 };

	if (loop_mhd_start(&control.loop, base, control.daemon, "control",
	    cause) == -1)
		return -1;
	control.ev_accept = event_new(base, control.fd, EV_READ | EV_PERSIST,
	    control_accept, NULL);
	control.ev_pause = evtimer_new(base, control_resume, NULL);
	control.ev_check = event_new(base, -1, EV_PERSIST,
	    control_check_streams, NULL);
	if (control.ev_accept == NULL || control.ev_pause == NULL ||
	    control.ev_check == NULL ||
	    event_add(control.ev_accept, NULL) == -1 ||
	    evtimer_add(control.ev_check, &check) == -1) {
		xasprintf(cause, "control: cannot add events");
		return -1;
	}
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
	feed_listen(control_feed, NULL);
	log_info("control: listening on %s (group %u)", path,
	    (unsigned)control.gid);
	return 0;
}

/*
 * libmicrohttpd cannot stop with a connection suspended: end the streams,
 * drop the revocations still waiting for the CA, and wake them all.
 */
static void
control_wake_all(void)
{
	struct control_stream	*cs;
	struct control_req	*cr;

	feed_listen(NULL, NULL);
	TAILQ_FOREACH(cs, &control.streams, cs_entry) {
		cs->cs_end = MHD_CONTENT_READER_END_OF_STREAM;
		control_stream_wake(cs);
	}
	while ((cr = TAILQ_FIRST(&control.revoking)) != NULL) {
		TAILQ_REMOVE(&control.revoking, cr, cr_entry);
		order_revoke_cancel(cr->cr_revoking);
		cr->cr_revoking = NULL;
		MHD_resume_connection(cr->cr_conn);
	}
	while ((cr = TAILQ_FIRST(&control.accounts)) != NULL) {
		TAILQ_REMOVE(&control.accounts, cr, cr_entry);
		acme_account_forget(cr->cr_account);
		cr->cr_account = NULL;
		cr->cr_status = MHD_HTTP_SERVICE_UNAVAILABLE;
		cr->cr_answer = control_error_json(cr->cr_status,
		    "the daemon is stopping; the operation's outcome is in "
		    "its log");
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
	if (control.ev_check != NULL)
		event_free(control.ev_check);
	control.ev_accept = control.ev_pause = control.ev_check = NULL;
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
