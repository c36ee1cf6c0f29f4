/*
 * acmectl: the HTTP client of the control socket, on libcurl.
 *
 * One request per call over the daemon's Unix socket
 * (CURLOPT_UNIX_SOCKET_PATH).  libcurl parses the answer and decodes
 * the chunked event stream; this file bounds what it keeps, splits the
 * stream into event lines and turns failures into one line for the
 * user: the daemon is trusted, but a stale or foreign socket must not
 * make acmectl print nonsense or grow without limit.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ctl.h"

/* A body; a list of thousands of certificates stays well under it. */
#define CTL_BODY_MAX		(8 * 1024 * 1024)
/* Seconds to connect, and of silence in an answer; every route answers
 * without waiting. */
#define CTL_TIMEOUT		60
/* An event is a short JSON line: the longest carries a CA's error. */
#define CTL_EVENT_MAX		(64 * 1024)
/*
 * The event stream: the daemon sends an empty line after this many
 * seconds of quiet (Acme-Sidecar-Keepalive says how many), and a stream
 * that misses CTL_STREAM_MISSED of them in a row is given up: the daemon
 * is stopped, or hung.
 */
#define CTL_STREAM_KEEPALIVE	30
#define CTL_STREAM_KEEPALIVE_MAX 3600
#define CTL_STREAM_MISSED	3

/* One transfer: what the callbacks keep, and why they stopped it. */
struct ctl_xfer {
	CURL			*x_curl;
	const char		*x_sock;
	const char		*x_method;
	const char		*x_path;
	struct ctl_response	*x_rs;
	char			*x_buf;		/* the body, NUL-terminated */
	size_t			 x_len;
	int			 x_stream;	/* GET /v1/events */
	ctl_event_cb		 x_on_event;	/* each event, parsed */
	void			*x_arg;
	int			 x_lines;	/* a 2xx stream: split lines */
	char			*x_line;	/* CTL_EVENT_MAX bytes */
	size_t			 x_linelen;
	unsigned long		 x_events;	/* lines read, for errors */
	long			 x_keepalive;	/* the stream's, in seconds */
	long long		 x_heard_ms;	/* its last bytes (ctl_now_ms) */
	char			*x_cause;	/* a callback's own error */
	char			 x_err[CURL_ERROR_SIZE];
};

static __attribute__((format(printf, 2, 3))) void
ctl_xfer_fail(struct ctl_xfer *x, const char *fmt, ...)
{
	va_list	 ap;
	char	*why;

	if (x->x_cause != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) == -1)
		ctl_fatalx("out of memory");
	va_end(ap);
	x->x_cause = ctl_xasprintf("%s: %s %s: %s", x->x_sock, x->x_method,
	    x->x_path, why);
	free(why);
}

/* "/v1/certificates/{id}" plus suffix, the id percent-encoded. */
char *
ctl_cert_path(const char *id, const char *suffix)
{
	char	*e, *path;

	if ((e = curl_easy_escape(NULL, id, 0)) == NULL)
		ctl_fatalx("out of memory");
	path = ctl_xasprintf("/v1/certificates/%s%s", e, suffix);
	curl_free(e);
	return path;
}

/* "/v1/issuers/{name}" plus suffix, the name percent-encoded. */
char *
ctl_issuer_path(const char *name, const char *suffix)
{
	char	*e, *path;

	if ((e = curl_easy_escape(NULL, name, 0)) == NULL)
		ctl_fatalx("out of memory");
	path = ctl_xasprintf("/v1/issuers/%s%s", e, suffix);
	curl_free(e);
	return path;
}

/* A non-2xx answer: the API's own message, else the HTTP reason. */
static char *
ctl_api_error(const struct ctl_response *rs)
{
	json_t		*j;
	const char	*msg;
	char		*cause;

	/* Not every error is the API's: libmicrohttpd's are HTML. */
	j = json_loadb(rs->rs_body, rs->rs_bodylen, JSON_REJECT_DUPLICATES,
	    NULL);
	if (j != NULL && json_unpack(j, "{s:{s:s}}", "error", "message",
	    &msg) == 0)
		cause = ctl_xasprintf("%s (HTTP %d)", msg, rs->rs_status);
	else
		cause = ctl_xasprintf("%s (HTTP %d)", rs->rs_reason[0] != '\0' ?
		    rs->rs_reason : "error", rs->rs_status);
	json_decref(j);
	return cause;
}

/* ---------------------------------------------------------------- callbacks */

/*
 * The reason phrase of "HTTP/1.1 NNN reason", which libcurl does not
 * keep: errors without a JSON body show it.  Printable bytes only.
 */
static void
ctl_keep_reason(struct ctl_response *rs, const char *line, size_t len)
{
	size_t	i, n = 0;

	rs->rs_reason[0] = '\0';
	if (len < 13 || line[12] != ' ')
		return;
	for (i = 13; i < len && n < sizeof(rs->rs_reason) - 1; i++) {
		if (line[i] == '\r' || line[i] == '\n')
			break;
		rs->rs_reason[n++] = line[i] >= 0x20 && line[i] < 0x7f ?
		    line[i] : '?';
	}
	rs->rs_reason[n] = '\0';
}

/* How often the stream promises a line; a daemon that does not say: 30 s. */
static long
ctl_stream_keepalive(struct ctl_xfer *x)
{
	struct curl_header	*h;
	char			*end;
	long			 v;

	if (curl_easy_header(x->x_curl, "Acme-Sidecar-Keepalive", 0,
	    CURLH_HEADER, -1, &h) != CURLHE_OK)
		return CTL_STREAM_KEEPALIVE;
	errno = 0;
	v = strtol(h->value, &end, 10);
	if (errno != 0 || end == h->value || *end != '\0' || v < 1 ||
	    v > CTL_STREAM_KEEPALIVE_MAX)
		return CTL_STREAM_KEEPALIVE;
	return v;
}

/*
 * At the end of the head: a 2xx event stream must be chunked, and its
 * body is split into lines; anything else is kept whole.
 */
static int
ctl_head_done(struct ctl_xfer *x)
{
	struct curl_header	*te;
	long			 code = 0;

	curl_easy_getinfo(x->x_curl, CURLINFO_RESPONSE_CODE, &code);
	x->x_rs->rs_status = (int)code;
	if (!x->x_stream || code < 200 || code > 299)
		return 0;
	if (curl_easy_header(x->x_curl, "Transfer-Encoding", 0,
	    CURLH_HEADER, -1, &te) != CURLHE_OK ||
	    strcasecmp(te->value, "chunked") != 0) {
		ctl_xfer_fail(x, "the event stream is not chunked");
		return -1;
	}
	x->x_lines = 1;
	x->x_keepalive = ctl_stream_keepalive(x);
	x->x_heard_ms = ctl_now_ms();
	return 0;
}

static size_t
ctl_on_header(char *p, size_t size, size_t n, void *arg)
{
	struct ctl_xfer	*x = arg;

	(void)size;
	if (n >= 5 && strncmp(p, "HTTP/", 5) == 0)
		ctl_keep_reason(x->x_rs, p, n);
	else if ((n == 2 && p[0] == '\r') || (n == 1 && p[0] == '\n')) {
		if (ctl_head_done(x) == -1)
			return 0;
	}
	return n;
}

/* A body, kept whole within CTL_BODY_MAX. */
static size_t
ctl_on_body(struct ctl_xfer *x, const char *p, size_t n)
{
	if (n > CTL_BODY_MAX - x->x_len) {
		ctl_xfer_fail(x, "a body over %d bytes", CTL_BODY_MAX);
		return 0;
	}
	x->x_buf = ctl_xreallocarray(x->x_buf, x->x_len + n + 1, 1);
	memcpy(x->x_buf + x->x_len, p, n);
	x->x_len += n;
	x->x_buf[x->x_len] = '\0';
	return n;
}

/*
 * One event line, handed on at once: a consumer waits for it.  Empty
 * lines (the daemon's keepalives) are skipped; anything else must be a
 * JSON object with a time and a type.
 */
static int
ctl_event_line(struct ctl_xfer *x)
{
	json_t		*ev;
	const char	*time, *type;
	int		 rc = -1;

	if (x->x_linelen == 0)
		return 0;
	x->x_events++;
	if (memchr(x->x_line, '\0', x->x_linelen) != NULL) {
		ctl_xfer_fail(x, "a NUL byte in an event");
		return -1;
	}
	ev = json_loadb(x->x_line, x->x_linelen, JSON_REJECT_DUPLICATES,
	    NULL);
	if (ev == NULL || json_unpack(ev, "{s:s,s:s}", "time", &time, "type",
	    &type) != 0) {
		ctl_xfer_fail(x, "event %lu is not a JSON object with a time "
		    "and a type", x->x_events);
		goto out;
	}
	rc = x->x_on_event(ev, x->x_line, x->x_linelen, x->x_arg,
	    &x->x_cause);
out:
	json_decref(ev);
	return rc;
}

/* The decoded stream, split into lines; a line may span writes. */
static size_t
ctl_on_events(struct ctl_xfer *x, const char *p, size_t n)
{
	const char	*nl;
	size_t		 k, left = n;

	while (left > 0) {
		nl = memchr(p, '\n', left);
		k = nl != NULL ? (size_t)(nl - p) : left;
		if (x->x_linelen + k > CTL_EVENT_MAX) {
			ctl_xfer_fail(x, "an event over %d bytes",
			    CTL_EVENT_MAX);
			return 0;
		}
		memcpy(x->x_line + x->x_linelen, p, k);
		x->x_linelen += k;
		if (nl == NULL)
			break;
		if (ctl_event_line(x) == -1)
			return 0;
		x->x_linelen = 0;
		p += k + 1;
		left -= k + 1;
	}
	return n;
}

static size_t
ctl_on_write(char *p, size_t size, size_t n, void *arg)
{
	struct ctl_xfer	*x = arg;

	(void)size;
	if (!x->x_lines)
		return ctl_on_body(x, p, n);
	x->x_heard_ms = ctl_now_ms();
	return ctl_on_events(x, p, n);
}

/*
 * libcurl's progress callback, about once a second: an event stream
 * that stayed silent past CTL_STREAM_MISSED keepalives ends the call.
 */
static int
ctl_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct ctl_xfer	*x = arg;
	long long	 quiet;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (!x->x_lines)
		return 0;
	quiet = (ctl_now_ms() - x->x_heard_ms) / 1000;
	if (quiet < CTL_STREAM_MISSED * x->x_keepalive)
		return 0;
	ctl_xfer_fail(x, "nothing from the daemon for %lld s, when it sends "
	    "an empty line after %ld s of quiet", quiet, x->x_keepalive);
	return 1;
}

/* ---------------------------------------------------------------- requests */

/*
 * The request's headers.  GET sends no body; the other methods say how
 * long theirs is, even when empty, or the server waits for one.
 */
static struct curl_slist *
ctl_headers(const char *body)
{
	struct curl_slist	*h = NULL;
	const char		*lines[] = {
		"Accept: application/json",
		body != NULL ? "Content-Type: application/json" :
		    "Content-Type:",
		"Expect:",		/* no 100-continue round trip */
		"Connection: close",
	};
	size_t			 i;

	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		if ((h = curl_slist_append(h, lines[i])) == NULL)
			ctl_fatalx("out of memory");
	}
	return h;
}

/* The options of one transfer; CURLE_OK or the first one refused. */
static CURLcode
ctl_setup(struct ctl_xfer *x, const char *url, const char *body,
    struct curl_slist *hdrs)
{
	CURL		*c = x->x_curl;
	CURLcode	 e = CURLE_OK;

#define CTL_SET(opt, v)	do { if (e == CURLE_OK) \
	e = curl_easy_setopt(c, opt, v); } while (0)
	CTL_SET(CURLOPT_UNIX_SOCKET_PATH, x->x_sock);
	CTL_SET(CURLOPT_URL, url);
	CTL_SET(CURLOPT_PROTOCOLS_STR, "http");
	CTL_SET(CURLOPT_CUSTOMREQUEST, x->x_method);
	CTL_SET(CURLOPT_USERAGENT, "acmectl/" CTL_VERSION);
	CTL_SET(CURLOPT_HTTPHEADER, hdrs);
	CTL_SET(CURLOPT_NOSIGNAL, 1L);
	CTL_SET(CURLOPT_ERRORBUFFER, x->x_err);
	CTL_SET(CURLOPT_HEADERFUNCTION, ctl_on_header);
	CTL_SET(CURLOPT_HEADERDATA, x);
	CTL_SET(CURLOPT_WRITEFUNCTION, ctl_on_write);
	CTL_SET(CURLOPT_WRITEDATA, x);
	CTL_SET(CURLOPT_MAXFILESIZE, (long)CTL_BODY_MAX);
	CTL_SET(CURLOPT_CONNECTTIMEOUT, (long)CTL_TIMEOUT);
	if (strcmp(x->x_method, "GET") != 0) {
		CTL_SET(CURLOPT_POSTFIELDS, body != NULL ? body : "");
		CTL_SET(CURLOPT_POSTFIELDSIZE, (long)(body != NULL ?
		    strlen(body) : 0));
	}
	/*
	 * A daemon that stops answering must not hang a script: less than
	 * a byte a second for CTL_TIMEOUT seconds ends a call.  The event
	 * stream is quiet for as long as nothing happens, but for its
	 * keepalives: missing CTL_STREAM_MISSED of them ends it.
	 */
	if (!x->x_stream) {
		CTL_SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
		CTL_SET(CURLOPT_LOW_SPEED_TIME, (long)CTL_TIMEOUT);
	} else {
		CTL_SET(CURLOPT_NOPROGRESS, 0L);
		CTL_SET(CURLOPT_XFERINFOFUNCTION, ctl_on_progress);
		CTL_SET(CURLOPT_XFERINFODATA, x);
	}
#undef CTL_SET
	return e;
}

/* What the user reads when libcurl failed: the socket, then why. */
static char *
ctl_curl_error(struct ctl_xfer *x, CURLcode e)
{
	long	oserr = 0;

	if (x->x_cause != NULL) {
		char *cause = x->x_cause;

		x->x_cause = NULL;
		return cause;
	}
	if (e == CURLE_COULDNT_CONNECT) {
		curl_easy_getinfo(x->x_curl, CURLINFO_OS_ERRNO, &oserr);
		if (oserr != 0)
			return ctl_xasprintf("%s: %s", x->x_sock,
			    strerror((int)oserr));
	}
	if (e == CURLE_OPERATION_TIMEDOUT)
		return ctl_xasprintf("%s: %s %s: the daemon did not answer in "
		    "time", x->x_sock, x->x_method, x->x_path);
	return ctl_xasprintf("%s: %s %s: %s", x->x_sock, x->x_method,
	    x->x_path, x->x_err[0] != '\0' ? x->x_err : curl_easy_strerror(e));
}

/*
 * Run one transfer.  0 once a whole answer came (any status, in
 * x->x_rs), -1 with *cause set otherwise.
 */
static int
ctl_perform(struct ctl_xfer *x, const char *body, char **cause)
{
	struct curl_slist	*hdrs = NULL;
	char			*url = NULL;
	CURLcode		 e;
	int			 rc = -1;

	if ((x->x_curl = curl_easy_init()) == NULL)
		ctl_fatalx("curl_easy_init failed");
	hdrs = ctl_headers(body);
	url = ctl_xasprintf("http://localhost%s", x->x_path);
	if ((e = ctl_setup(x, url, body, hdrs)) == CURLE_OK)
		e = curl_easy_perform(x->x_curl);
	if (e != CURLE_OK) {
		*cause = ctl_curl_error(x, e);
		goto out;
	}
	x->x_rs->rs_body = x->x_buf != NULL ? x->x_buf : "";
	x->x_rs->rs_bodylen = x->x_len;
	rc = 0;
out:
	free(x->x_cause);
	x->x_cause = NULL;
	free(url);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(x->x_curl);
	x->x_curl = NULL;
	return rc;
}

/*
 * One exchange: METHOD path (with a JSON body if body is not NULL) on
 * the socket.  On success *buf holds the body, rs points into it, and
 * the status is 2xx.  Otherwise *cause is what the user reads: the
 * API's own error message, or what went wrong on the way.
 */
int
ctl_exchange(const char *sock, const char *method, const char *path,
    const char *body, char **buf, struct ctl_response *rs, char **cause)
{
	struct ctl_xfer	x;
	int		rc = -1;

	memset(&x, 0, sizeof(x));
	memset(rs, 0, sizeof(*rs));
	x.x_sock = sock;
	x.x_method = method;
	x.x_path = path;
	x.x_rs = rs;
	if (ctl_perform(&x, body, cause) == -1)
		goto out;
	if (rs->rs_status < 200 || rs->rs_status > 299) {
		*cause = ctl_api_error(rs);
		goto out;
	}
	*buf = x.x_buf;
	x.x_buf = NULL;
	rc = 0;
out:
	free(x.x_buf);
	return rc;
}

/*
 * One call with a JSON answer: on success *out is the JSON object of a
 * 2xx answer.  req, if not NULL, is sent as the body.
 */
int
ctl_call(const char *sock, const char *method, const char *path,
    json_t *req, json_t **out, char **cause)
{
	struct ctl_response	 rs;
	json_error_t		 jerr;
	json_t			*j = NULL;
	char			*body = NULL, *buf = NULL;
	int			 rc = -1;

	*out = NULL;
	if (req != NULL &&
	    (body = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER)) ==
	    NULL)
		ctl_fatalx("out of memory");
	if (ctl_exchange(sock, method, path, body, &buf, &rs, cause) == -1)
		goto out;
	j = json_loadb(rs.rs_body, rs.rs_bodylen, JSON_REJECT_DUPLICATES,
	    &jerr);
	if (j == NULL || !json_is_object(j)) {
		*cause = ctl_xasprintf("%s: %s %s: the response is not a JSON "
		    "object%s%s", sock, method, path, j == NULL ? ": " : "",
		    j == NULL ? jerr.text : "");
		goto out;
	}
	*out = j;
	j = NULL;
	rc = 0;
out:
	json_decref(j);
	free(buf);
	free(body);
	return rc;
}

/*
 * Hand each event to on_event until the daemon ends the stream with its
 * last chunk, or on_event fails (-1 and its cause).  An error answer is
 * reported like any other call's.
 */
int
ctl_events(const char *sock, ctl_event_cb on_event, void *arg,
    char **cause)
{
	struct ctl_response	 rs;
	struct ctl_xfer		 x;
	int			 rc = -1;

	memset(&x, 0, sizeof(x));
	memset(&rs, 0, sizeof(rs));
	x.x_sock = sock;
	x.x_method = "GET";
	x.x_path = "/v1/events";
	x.x_rs = &rs;
	x.x_stream = 1;
	x.x_on_event = on_event;
	x.x_arg = arg;
	x.x_line = ctl_xreallocarray(NULL, CTL_EVENT_MAX, 1);
	if (ctl_perform(&x, NULL, cause) == -1)
		goto out;
	if (!x.x_lines) {
		*cause = ctl_api_error(&rs);
		goto out;
	}
	if (x.x_linelen != 0) {
		*cause = ctl_xasprintf("%s: GET /v1/events: the stream ended "
		    "inside an event", sock);
		goto out;
	}
	rc = 0;
out:
	free(x.x_line);
	free(x.x_buf);
	return rc;
}
