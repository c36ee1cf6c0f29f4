/*
 * acmectl: the command-line client of acme-sidecar's control API
 * (proto/control-api.md).
 *
 * One blocking HTTP/1.1 request per call over the daemon's Unix socket,
 * with "Connection: close" so the answer ends at EOF.  The response is
 * parsed strictly and within fixed bounds: the daemon is trusted, but a
 * stale or foreign socket must not make acmectl print nonsense or grow
 * without limit.  The one chunked answer, the event stream, is decoded
 * as it arrives, with the same care.
 *
 * Commands that start an order (add, renew) then poll the certificate
 * until the order ends, and show its progress on stderr; stdout keeps
 * the result alone, for scripts.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define CTL_VERSION		"0.1.0"
#define CTL_DEFAULT_SOCKET	"/run/acme-sidecar/control.sock"
#define CTL_SOCKET_ENV		"ACME_SIDECAR_SOCKET"

/* Status line plus headers; the daemon sends a few hundred bytes. */
#define CTL_HEAD_MAX		(16 * 1024)
/* A body; a list of thousands of certificates stays well under it. */
#define CTL_BODY_MAX		(8 * 1024 * 1024)
/* Seconds to wait on the socket; every route answers without waiting. */
#define CTL_TIMEOUT		60

/*
 * The event stream.  The daemon sends one event per chunk, or a few; a
 * chunk-size line is a few hex digits.  An event is a short JSON line:
 * the longest carries a CA's error message.
 */
#define CTL_CHUNK_MAX		(1024 * 1024)
#define CTL_CHUNK_LINE_MAX	1024
#define CTL_EVENT_MAX		(64 * 1024)

/* Waiting for an order: poll every 250 ms, give up after --timeout. */
#define CTL_POLL_MS		250
#define CTL_WAIT_DEFAULT	300
#define CTL_WAIT_MAX		86400

/* Usage errors (bad option, missing argument). */
#define CTL_EXIT_USAGE		2

/* Options, as bits: which were given, and which a command takes. */
#define CTL_OPT_JSON		0x01
#define CTL_OPT_KEY		0x02
#define CTL_OPT_REASON		0x04
#define CTL_OPT_ALL		0x08
#define CTL_OPT_WAIT		0x10	/* --no-wait, --timeout */

struct ctl_response {
	int		 rs_status;
	char		 rs_reason[128];
	const char	*rs_body;	/* points into the raw buffer */
	size_t		 rs_bodylen;
};

/* The framing headers of a response. */
struct ctl_head {
	long		 h_clen;	/* Content-Length, -1 if none */
	int		 h_chunked_ok;	/* the caller decodes chunks */
	int		 h_chunked;
};

struct ctl_opts {
	const char	*o_socket;
	int		 o_given;	/* CTL_OPT_* bits */
	int		 o_json;
	int		 o_all;		/* renew --all */
	int		 o_nowait;
	int		 o_timeout;	/* seconds */
	const char	*o_key;
	const char	*o_reason;
};

struct ctl_cmd {
	const char	*c_name;
	const char	*c_args;	/* for usage */
	int		 c_minargs;
	int		 c_maxargs;	/* -1: any number */
	int		 c_opts;	/* CTL_OPT_* it takes */
	int		 (*c_run)(const struct ctl_opts *, int, char **,
			     char **);
};

/* An order being waited for: add, renew. */
struct ctl_wait {
	char		*w_id;
	char		*w_path;	/* GET /v1/certificates/{id} */
	json_t		*w_cert;	/* its latest state */
	char		*w_before;	/* not_before as the order started */
	int		 w_busy;	/* seen in a state other than idle */
	int		 w_done;	/* 0 under way, 1 valid, -1 failed */
};

/* The event stream as it is read: raw bytes, then one event line. */
struct ctl_stream {
	int		 st_fd;
	const char	*st_sock;
	char		*st_buf;
	size_t		 st_size;
	size_t		 st_off;	/* first byte not used yet */
	size_t		 st_len;	/* end of the bytes read */
	char		*st_line;	/* CTL_EVENT_MAX bytes */
	size_t		 st_linelen;
	unsigned long	 st_events;	/* lines read, for errors */
	int		 st_json;
};

static int	ctl_cmd_status(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_list(const struct ctl_opts *, int, char **, char **);
static int	ctl_cmd_show(const struct ctl_opts *, int, char **, char **);
static int	ctl_cmd_add(const struct ctl_opts *, int, char **, char **);
static int	ctl_cmd_remove(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_renew(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_revoke(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_reload(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_events(const struct ctl_opts *, int, char **,
		    char **);
static int	ctl_cmd_metrics(const struct ctl_opts *, int, char **,
		    char **);

static const struct ctl_cmd ctl_cmds[] = {
	{ "status",	"",	0, 0, CTL_OPT_JSON, ctl_cmd_status },
	{ "list",	"",	0, 0, CTL_OPT_JSON, ctl_cmd_list },
	{ "show",	" ID",	1, 1, CTL_OPT_JSON, ctl_cmd_show },
	{ "add",	" [--key TYPE] [--no-wait] [--timeout SECONDS] "
			"ISSUER NAME...", 2, -1,
			CTL_OPT_JSON|CTL_OPT_KEY|CTL_OPT_WAIT, ctl_cmd_add },
	{ "remove",	" ID",	1, 1, CTL_OPT_JSON, ctl_cmd_remove },
	{ "renew",	" [--no-wait] [--timeout SECONDS] ID|--all", 0, 1,
			CTL_OPT_JSON|CTL_OPT_ALL|CTL_OPT_WAIT, ctl_cmd_renew },
	{ "revoke",	" [--reason R] ID", 1, 1,
			CTL_OPT_JSON|CTL_OPT_REASON, ctl_cmd_revoke },
	{ "reload",	"",	0, 0, CTL_OPT_JSON, ctl_cmd_reload },
	{ "events",	"",	0, 0, CTL_OPT_JSON, ctl_cmd_events },
	/* Prometheus text has no JSON form; --json is refused. */
	{ "metrics",	"",	0, 0, 0, ctl_cmd_metrics },
};

static const struct {
	int		 co_bit;
	const char	*co_name;
} ctl_optnames[] = {
	{ CTL_OPT_JSON,		"--json" },
	{ CTL_OPT_KEY,		"--key" },
	{ CTL_OPT_REASON,	"--reason" },
	{ CTL_OPT_ALL,		"--all" },
	{ CTL_OPT_WAIT,		"--no-wait or --timeout" },
};

/* ---------------------------------------------------------------- memory */

static __attribute__((noreturn, format(printf, 1, 2))) void
ctl_fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	fputs("acmectl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static __attribute__((format(printf, 1, 2))) char *
ctl_xasprintf(const char *fmt, ...)
{
	va_list	 ap;
	char	*s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		ctl_fatalx("out of memory");
	va_end(ap);
	return s;
}

static void *
ctl_xreallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		ctl_fatalx("out of memory");
	if ((p = realloc(p, n * size)) == NULL)
		ctl_fatalx("out of memory");
	return p;
}

static char *
ctl_xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		ctl_fatalx("out of memory");
	return p;
}

/* ---------------------------------------------------------------- socket */

/*
 * Connect to the control socket.  rcvtimeo is how long a read may wait,
 * 0 for ever: the event stream is quiet for as long as nothing happens.
 */
static int
ctl_connect(const char *path, int rcvtimeo, char **cause)
{
	struct sockaddr_un	 sun;
	struct timeval		 snd = { CTL_TIMEOUT, 0 };
	struct timeval		 rcv = { rcvtimeo, 0 };
	int			 fd = -1;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		*cause = ctl_xasprintf("%s: %s", path, strerror(ENAMETOOLONG));
		goto fail;
	}
	strncpy(sun.sun_path, path, sizeof(sun.sun_path) - 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		*cause = ctl_xasprintf("%s: %s", path, strerror(errno));
		goto fail;
	}
	/* A daemon that stops answering must not hang a script forever. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd)) == -1) {
		*cause = ctl_xasprintf("%s: setsockopt: %s", path,
		    strerror(errno));
		goto fail;
	}
	return fd;
fail:
	if (fd != -1)
		close(fd);
	return -1;
}

static const char *
ctl_io_error(int error)
{
	if (error == EAGAIN || error == EWOULDBLOCK)
		return "the daemon did not answer in time";
	return strerror(error);
}

static int
ctl_send(int fd, const char *path, const char *req, size_t len,
    char **cause)
{
	ssize_t	n;

	while (len > 0) {
		if ((n = write(fd, req, len)) == -1) {
			if (errno == EINTR)
				continue;
			*cause = ctl_xasprintf("%s: write: %s", path,
			    ctl_io_error(errno));
			return -1;
		}
		req += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read to EOF into *buf (NUL-terminated), at most the head and body caps. */
static int
ctl_recv(int fd, const char *path, char **buf, size_t *len, char **cause)
{
	const size_t	 max = CTL_HEAD_MAX + CTL_BODY_MAX;
	size_t		 size = 4096, used = 0;
	char		*b = NULL;
	ssize_t		 n;
	int		 rc = -1;

	b = ctl_xreallocarray(NULL, size, 1);
	for (;;) {
		if (used > max) {
			*cause = ctl_xasprintf("%s: the response is over %zu "
			    "bytes", path, max);
			goto out;
		}
		if (used + 1 == size) {
			size = size * 2 > max + 2 ? max + 2 : size * 2;
			b = ctl_xreallocarray(b, size, 1);
		}
		n = read(fd, b + used, size - used - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			*cause = ctl_xasprintf("%s: read: %s", path,
			    ctl_io_error(errno));
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	b[used] = '\0';
	*buf = b;
	*len = used;
	b = NULL;
	rc = 0;
out:
	free(b);
	return rc;
}

/* ---------------------------------------------------------------- HTTP */

/* "HTTP/1.x NNN reason"; the reason is kept for errors without JSON. */
static int
ctl_parse_status(const char *line, size_t len, struct ctl_response *rs)
{
	size_t	i;

	if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 ||
	    (line[7] != '0' && line[7] != '1') || line[8] != ' ')
		return -1;
	for (i = 9; i < 12; i++) {
		if (!isdigit((unsigned char)line[i]))
			return -1;
	}
	rs->rs_status = (line[9] - '0') * 100 + (line[10] - '0') * 10 +
	    (line[11] - '0');
	if (rs->rs_status < 100 || rs->rs_status > 599)
		return -1;
	rs->rs_reason[0] = '\0';
	if (len == 12)
		return 0;
	if (line[12] != ' ')
		return -1;
	line += 13;
	len -= 13;
	for (i = 0; i < len && i < sizeof(rs->rs_reason) - 1; i++) {
		if (!isprint((unsigned char)line[i]))
			return -1;
		rs->rs_reason[i] = line[i];
	}
	rs->rs_reason[i] = '\0';
	return 0;
}

/* Content-Length: digits only, bounded; -1 if malformed or too big. */
static long
ctl_parse_length(const char *v, size_t len)
{
	long	n = 0;
	size_t	i;

	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -1;
		n = n * 10 + (v[i] - '0');
		if (n > CTL_BODY_MAX)
			return -1;
	}
	return n;
}

/*
 * One header line, "name: value".  Only the framing headers matter here:
 * Content-Length (every copy must agree) and Transfer-Encoding, which
 * only the event stream uses, and then only as a single "chunked";
 * anything else is refused rather than misread.
 */
static int
ctl_parse_header(const char *line, size_t len, struct ctl_head *hd,
    char **why)
{
	const char	*colon, *v;
	size_t		 nlen, vlen, i;
	long		 n;

	if ((colon = memchr(line, ':', len)) == NULL || colon == line) {
		*why = ctl_xasprintf("a malformed header line");
		return -1;
	}
	nlen = colon - line;
	for (i = 0; i < nlen; i++) {
		if (!isgraph((unsigned char)line[i])) {
			*why = ctl_xasprintf("a malformed header name");
			return -1;
		}
	}
	v = colon + 1;
	vlen = len - nlen - 1;
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;

	if (nlen == 17 && strncasecmp(line, "Transfer-Encoding", nlen) == 0) {
		if (!hd->h_chunked_ok || hd->h_chunked || vlen != 7 ||
		    strncasecmp(v, "chunked", vlen) != 0) {
			*why = ctl_xasprintf("an unsupported "
			    "Transfer-Encoding");
			return -1;
		}
		hd->h_chunked = 1;
	}
	if (nlen == 14 && strncasecmp(line, "Content-Length", nlen) == 0) {
		n = ctl_parse_length(v, vlen);
		if (n == -1 || (hd->h_clen != -1 && hd->h_clen != n)) {
			*why = ctl_xasprintf("a bad Content-Length");
			return -1;
		}
		hd->h_clen = n;
	}
	return 0;
}

/*
 * The status line and headers at the start of buf; *off is where the
 * body starts.  Both framings at once is how requests get smuggled: no.
 */
static int
ctl_parse_head(const char *buf, size_t len, struct ctl_response *rs,
    struct ctl_head *hd, size_t *off, char **why)
{
	const char	*p = buf, *end, *eol;
	size_t		 limit = len < CTL_HEAD_MAX ? len : CTL_HEAD_MAX;
	int		 first = 1;

	end = buf + limit;
	for (;;) {
		eol = memmem(p, end - p, "\r\n", 2);
		if (eol == NULL) {
			*why = ctl_xasprintf(len == 0 ? "an empty response" :
			    "a response without a complete header");
			return -1;
		}
		if (memchr(p, '\0', eol - p) != NULL) {
			*why = ctl_xasprintf("a NUL byte in the header");
			return -1;
		}
		if (first) {
			if (ctl_parse_status(p, eol - p, rs) == -1) {
				*why = ctl_xasprintf("a malformed status "
				    "line");
				return -1;
			}
			first = 0;
		} else if (eol == p) {
			p += 2;
			break;
		} else if (*p == ' ' || *p == '\t') {
			*why = ctl_xasprintf("a folded header line");
			return -1;
		} else if (ctl_parse_header(p, eol - p, hd, why) == -1)
			return -1;
		p = eol + 2;
	}
	if (hd->h_chunked && hd->h_clen != -1) {
		*why = ctl_xasprintf("both Content-Length and "
		    "Transfer-Encoding");
		return -1;
	}
	*off = p - buf;
	return 0;
}

/* The body after the head: as long as its Content-Length says, if any. */
static int
ctl_parse_body(const char *buf, size_t len, size_t off,
    const struct ctl_head *hd, struct ctl_response *rs, char **why)
{
	rs->rs_body = buf + off;
	rs->rs_bodylen = len - off;
	if (hd->h_clen == -1) {
		if (rs->rs_bodylen > CTL_BODY_MAX) {
			*why = ctl_xasprintf("a body over %d bytes",
			    CTL_BODY_MAX);
			return -1;
		}
		return 0;
	}
	if (rs->rs_bodylen != (size_t)hd->h_clen) {
		*why = ctl_xasprintf("%zu bytes of body, not the %ld of its "
		    "Content-Length", rs->rs_bodylen, hd->h_clen);
		return -1;
	}
	return 0;
}

/* Split a whole response into status, headers and body. */
static int
ctl_parse_response(const char *buf, size_t len, struct ctl_response *rs,
    char **why)
{
	struct ctl_head	hd = { -1, 0, 0 };
	size_t		off;

	if (ctl_parse_head(buf, len, rs, &hd, &off, why) == -1)
		return -1;
	return ctl_parse_body(buf, len, off, &hd, rs, why);
}

/* Percent-encode an id for the path: anything but RFC 3986 unreserved. */
static char *
ctl_escape(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	char			*out, *o;
	unsigned char		 c;

	out = o = ctl_xreallocarray(NULL, strlen(s) * 3 + 1, 1);
	for (; *s != '\0'; s++) {
		c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '.' || c == '_' ||
		    c == '~')
			*o++ = (char)c;
		else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 0xf];
		}
	}
	*o = '\0';
	return out;
}

/* "/v1/certificates/{id}" plus suffix, the id escaped. */
static char *
ctl_cert_path(const char *id, const char *suffix)
{
	char	*e = ctl_escape(id), *path;

	path = ctl_xasprintf("/v1/certificates/%s%s", e, suffix);
	free(e);
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

/*
 * The request: GET without a body; the other methods say how long their
 * body is, even when empty, or the server waits for one.
 */
static char *
ctl_request(const char *method, const char *path, const char *body)
{
	char	*len, *req;

	if (strcmp(method, "GET") == 0)
		len = ctl_xasprintf("%s", "");
	else
		len = ctl_xasprintf("%sContent-Length: %zu\r\n",
		    body != NULL ? "Content-Type: application/json\r\n" : "",
		    body != NULL ? strlen(body) : 0);
	req = ctl_xasprintf("%s %s HTTP/1.1\r\n"
	    "Host: localhost\r\n"
	    "User-Agent: acmectl/" CTL_VERSION "\r\n"
	    "Accept: application/json\r\n"
	    "%s"
	    "Connection: close\r\n"
	    "\r\n"
	    "%s", method, path, len, body != NULL ? body : "");
	free(len);
	return req;
}

/*
 * One exchange: METHOD path (with a JSON body if body is not NULL) on
 * the socket.  On success *buf holds the raw answer, rs points into it,
 * and the status is 2xx.  Otherwise *cause is what the user reads: the
 * API's own error message, or what went wrong on the way.
 */
static int
ctl_exchange(const char *sock, const char *method, const char *path,
    const char *body, char **buf, struct ctl_response *rs, char **cause)
{
	char	*req = NULL, *b = NULL, *why = NULL;
	size_t	 len;
	int	 fd = -1, rc = -1;

	if ((fd = ctl_connect(sock, CTL_TIMEOUT, cause)) == -1)
		goto out;
	req = ctl_request(method, path, body);
	if (ctl_send(fd, sock, req, strlen(req), cause) == -1)
		goto out;
	if (ctl_recv(fd, sock, &b, &len, cause) == -1)
		goto out;
	if (ctl_parse_response(b, len, rs, &why) == -1) {
		*cause = ctl_xasprintf("%s: %s %s: %s", sock, method, path,
		    why);
		goto out;
	}
	if (rs->rs_status < 200 || rs->rs_status > 299) {
		*cause = ctl_api_error(rs);
		goto out;
	}
	*buf = b;
	b = NULL;
	rc = 0;
out:
	free(why);
	free(b);
	free(req);
	if (fd != -1)
		close(fd);
	return rc;
}

/*
 * One call with a JSON answer: on success *out is the JSON object of a
 * 2xx answer.  req, if not NULL, is sent as the body.
 */
static int
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

/* ---------------------------------------------------------------- output */

/* A scalar as text; "-" for null or missing (times that are "none"). */
static const char *
ctl_scalar(json_t *v, char *buf, size_t len)
{
	if (v == NULL || json_is_null(v))
		return "-";
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
		return buf;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "yes" : "no";
	return "?";
}

static const char *
ctl_field(json_t *o, const char *key, char *buf, size_t len)
{
	return ctl_scalar(json_object_get(o, key), buf, len);
}

/* The API's JSON as it came, indented, for scripts and jq. */
static void
ctl_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
}

/* Columns as wide as their widest cell; row 0 is the header. */
static void
ctl_table(const char *indent, char **cells, size_t rows, size_t cols)
{
	size_t	width[8] = { 0 }, r, c, n;

	if (cols > sizeof(width) / sizeof(width[0]))
		ctl_fatalx("%s: %zu columns", __func__, cols);
	for (r = 0; r < rows; r++) {
		for (c = 0; c < cols; c++) {
			n = strlen(cells[r * cols + c]);
			if (n > width[c])
				width[c] = n;
		}
	}
	for (r = 0; r < rows; r++) {
		fputs(indent, stdout);
		for (c = 0; c < cols - 1; c++)
			printf("%-*s  ", (int)width[c], cells[r * cols + c]);
		printf("%s\n", cells[r * cols + c]);
	}
}

static void
ctl_table_free(char **cells, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(cells[i]);
	free(cells);
}

static void
ctl_print_issuers(json_t *issuers)
{
	static const char	*head[] = { "NAME", "STATE", "URI" };
	const size_t		 cols = 3;
	size_t			 rows, i, c;
	char			**cells, buf[32];
	json_t			*is;

	rows = json_array_size(issuers) + 1;
	cells = ctl_xreallocarray(NULL, rows * cols, sizeof(*cells));
	for (c = 0; c < cols; c++)
		cells[c] = ctl_xasprintf("%s", head[c]);
	json_array_foreach(issuers, i, is) {
		cells[(i + 1) * cols] = ctl_xasprintf("%s",
		    ctl_field(is, "name", buf, sizeof(buf)));
		cells[(i + 1) * cols + 1] = ctl_xasprintf("%s",
		    ctl_field(is, "state", buf, sizeof(buf)));
		cells[(i + 1) * cols + 2] = ctl_xasprintf("%s",
		    ctl_field(is, "uri", buf, sizeof(buf)));
	}
	ctl_table("  ", cells, rows, cols);
	ctl_table_free(cells, rows * cols);
}

static void
ctl_print_uptime(json_int_t s)
{
	json_int_t	d = s / 86400, h = s % 86400 / 3600;
	json_int_t	m = s % 3600 / 60;

	if (d > 0)
		printf("%lldd ", (long long)d);
	if (d > 0 || h > 0)
		printf("%lldh ", (long long)h);
	if (d > 0 || h > 0 || m > 0)
		printf("%lldm ", (long long)m);
	printf("%llds\n", (long long)(s % 60));
}

static int
ctl_cmp_id(const void *a, const void *b)
{
	json_t	*ja = *(json_t * const *)a, *jb = *(json_t * const *)b;
	char	 b1[32], b2[32];

	return strcmp(ctl_field(ja, "id", b1, sizeof(b1)),
	    ctl_field(jb, "id", b2, sizeof(b2)));
}

/* Certificates as a table, one row each, sorted by id. */
static void
ctl_print_certs(json_t *a)
{
	static const char	*head[] = { "ID", "STATE", "NOT AFTER",
				    "NEXT RENEWAL", "ISSUER", "FAILURES" };
	static const char	*keys[] = { "id", "state", "not_after",
				    "next_renewal", "issuer", "failures" };
	const size_t		 cols = 6;
	json_t			**sorted;
	char			**cells, buf[32];
	size_t			 rows, i, c;

	/* The API gives no order; a table sorted by id is easier to scan. */
	sorted = ctl_xreallocarray(NULL, json_array_size(a) + 1,
	    sizeof(*sorted));
	for (i = 0; i < json_array_size(a); i++)
		sorted[i] = json_array_get(a, i);
	qsort(sorted, json_array_size(a), sizeof(*sorted), ctl_cmp_id);

	rows = json_array_size(a) + 1;
	cells = ctl_xreallocarray(NULL, rows * cols, sizeof(*cells));
	for (c = 0; c < cols; c++)
		cells[c] = ctl_xasprintf("%s", head[c]);
	for (i = 1; i < rows; i++) {
		for (c = 0; c < cols; c++)
			cells[i * cols + c] = ctl_xasprintf("%s",
			    ctl_field(sorted[i - 1], keys[c], buf,
			    sizeof(buf)));
	}
	ctl_table("", cells, rows, cols);
	ctl_table_free(cells, rows * cols);
	free(sorted);
}

static void
ctl_print_cert(json_t *ce)
{
	static const struct {
		const char	*label, *key;
	} rows[] = {
		{ "id", "id" },
		{ "issuer", "issuer" },
		{ "key type", "key_type" },
		{ "state", "state" },
		{ "valid", "valid" },
		{ "not before", "not_before" },
		{ "not after", "not_after" },
		{ "next renewal", "next_renewal" },
		{ "next retry", "next_retry" },
		{ "failures", "failures" },
	};
	json_t	*v, *err;
	char	 buf[32], buf2[32];
	size_t	 i, k;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		printf("%-14s%s\n", rows[i].label,
		    ctl_field(ce, rows[i].key, buf, sizeof(buf)));
		if (i != 0)
			continue;
		printf("%-14s", "identifiers");
		json_array_foreach(json_object_get(ce, "identifiers"), k, v)
			printf("%s%s", k == 0 ? "" : " ",
			    ctl_scalar(v, buf, sizeof(buf)));
		printf("\n");
	}
	err = json_object_get(ce, "last_error");
	if (err == NULL || json_is_null(err))
		printf("%-14s-\n", "last error");
	else
		printf("%-14s%s: %s\n", "last error",
		    ctl_field(err, "time", buf, sizeof(buf)),
		    ctl_field(err, "message", buf2, sizeof(buf2)));
}

/* One certificate, as show prints it. */
static void
ctl_output_cert(const struct ctl_opts *o, json_t *ce)
{
	if (o->o_json)
		ctl_print_json(ce);
	else
		ctl_print_cert(ce);
}

/* ---------------------------------------------------------------- waiting */

static long long
ctl_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
ctl_sleep_ms(long ms)
{
	struct timespec	ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static const char *
ctl_wait_state(const struct ctl_wait *w)
{
	const char	*s;

	s = json_string_value(json_object_get(w->w_cert, "state"));
	return s != NULL ? s : "?";
}

/*
 * Start waiting for the order of the certificate the API answered with
 * (201 of add, 202 of renew).  A renewal is over when the certificate is
 * idle again after an order, or holds another certificate than before:
 * an answer that came before the order left idle must not end it.
 */
static int
ctl_wait_init(struct ctl_wait *w, json_t *ce, int renewal, char **cause)
{
	const char	*id, *nb;

	memset(w, 0, sizeof(*w));
	if ((id = json_string_value(json_object_get(ce, "id"))) == NULL) {
		*cause = ctl_xasprintf("the answer names no certificate id");
		return -1;
	}
	w->w_id = ctl_xstrdup(id);
	w->w_path = ctl_cert_path(id, "");
	w->w_cert = json_incref(ce);
	nb = json_string_value(json_object_get(ce, "not_before"));
	w->w_before = nb != NULL ? ctl_xstrdup(nb) : NULL;
	/* An added certificate is done once idle: it may reuse one. */
	w->w_busy = !renewal;
	return 0;
}

static void
ctl_wait_free(struct ctl_wait *w)
{
	free(w->w_id);
	free(w->w_path);
	free(w->w_before);
	json_decref(w->w_cert);
}

/* Whether the order ended, and how, from the latest state. */
static void
ctl_wait_check(struct ctl_wait *w)
{
	const char	*state = ctl_wait_state(w), *nb;
	int		 changed;

	if (strcmp(state, "backoff") == 0) {
		w->w_done = -1;
		return;
	}
	if (strcmp(state, "idle") != 0) {
		w->w_busy = 1;
		return;
	}
	nb = json_string_value(json_object_get(w->w_cert, "not_before"));
	changed = nb != NULL && (w->w_before == NULL ||
	    strcmp(nb, w->w_before) != 0);
	if (!w->w_busy && !changed)
		return;
	w->w_done = json_is_true(json_object_get(w->w_cert, "valid")) ? 1 :
	    -1;
}

/* Why an order failed: the daemon's last error, as show prints it. */
static char *
ctl_wait_error(const struct ctl_wait *w)
{
	const char	*msg;

	msg = json_string_value(json_object_get(json_object_get(w->w_cert,
	    "last_error"), "message"));
	if (strcmp(ctl_wait_state(w), "idle") == 0)
		return ctl_xasprintf("%s: the order ended without a valid "
		    "certificate", w->w_id);
	return ctl_xasprintf("%s: the order failed: %s", w->w_id,
	    msg != NULL ? msg : "(no error given)");
}

/* Poll once; with progress, a changed state is shown on stderr. */
static int
ctl_wait_poll(const struct ctl_opts *o, struct ctl_wait *w, int progress,
    char **cause)
{
	json_t	*j;
	char	*old;

	if (ctl_call(o->o_socket, "GET", w->w_path, NULL, &j, cause) == -1)
		return -1;
	old = ctl_xstrdup(ctl_wait_state(w));
	json_decref(w->w_cert);
	w->w_cert = j;
	if (progress && strcmp(old, ctl_wait_state(w)) != 0)
		fprintf(stderr, "%s: %s\n", w->w_id, ctl_wait_state(w));
	free(old);
	ctl_wait_check(w);
	return 0;
}

static size_t
ctl_wait_count(const struct ctl_wait *ws, size_t n)
{
	size_t	i, done = 0;

	for (i = 0; i < n; i++) {
		if (ws[i].w_done != 0)
			done++;
	}
	return done;
}

/*
 * Wait until every order in ws ended or the timeout passed.  Progress
 * on stderr is each state of the orders, or with counts, how many of
 * them are done.  An order that failed is not an error here: the caller
 * reads w_done.
 */
static int
ctl_wait_run(const struct ctl_opts *o, struct ctl_wait *ws, size_t n,
    int counts, char **cause)
{
	long long	 deadline = ctl_now_ms() + o->o_timeout * 1000LL;
	size_t		 i, done, shown = SIZE_MAX;

	for (i = 0; i < n; i++) {
		if (!counts)
			fprintf(stderr, "%s: %s\n", ws[i].w_id,
			    ctl_wait_state(&ws[i]));
		ctl_wait_check(&ws[i]);
	}
	for (;;) {
		done = ctl_wait_count(ws, n);
		if (counts && done != shown) {
			fprintf(stderr, "renewing: %zu of %zu done\n", done, n);
			shown = done;
		}
		if (done == n)
			return 0;
		if (ctl_now_ms() >= deadline)
			break;
		ctl_sleep_ms(CTL_POLL_MS);
		for (i = 0; i < n; i++) {
			if (ws[i].w_done == 0 &&
			    ctl_wait_poll(o, &ws[i], !counts, cause) == -1)
				return -1;
		}
	}
	/* The orders go on in the daemon; only acmectl stops waiting. */
	if (n == 1)
		*cause = ctl_xasprintf("%s: still %s after %d seconds; the "
		    "order goes on, see acmectl show %s", ws[0].w_id,
		    ctl_wait_state(&ws[0]), o->o_timeout, ws[0].w_id);
	else
		*cause = ctl_xasprintf("%zu of %zu renewals still under way "
		    "after %d seconds; they go on, see acmectl list",
		    n - done, n, o->o_timeout);
	return -1;
}

/* Wait for one order and print the certificate it left. */
static int
ctl_wait_one(const struct ctl_opts *o, json_t *ce, int renewal,
    char **cause)
{
	struct ctl_wait	w;
	int		rc = -1;

	if (ctl_wait_init(&w, ce, renewal, cause) == -1)
		return -1;
	if (ctl_wait_run(o, &w, 1, 0, cause) == -1)
		goto out;
	if (w.w_done == -1) {
		*cause = ctl_wait_error(&w);
		goto out;
	}
	ctl_output_cert(o, w.w_cert);
	rc = 0;
out:
	ctl_wait_free(&w);
	return rc;
}

/* ---------------------------------------------------------------- events */

static __attribute__((format(printf, 3, 4))) int
ctl_stream_bad(struct ctl_stream *st, char **cause, const char *fmt, ...)
{
	va_list	 ap;
	char	*why;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) == -1)
		ctl_fatalx("out of memory");
	va_end(ap);
	*cause = ctl_xasprintf("%s: GET /v1/events: %s", st->st_sock, why);
	free(why);
	return -1;
}

/*
 * Read what the socket has, keeping the unused bytes, with at most cap
 * of them buffered.  1 if bytes came, 0 at EOF, -1 on error.
 */
static int
ctl_stream_fill(struct ctl_stream *st, size_t cap, char **cause)
{
	ssize_t	n;

	if (st->st_off > 0) {
		memmove(st->st_buf, st->st_buf + st->st_off,
		    st->st_len - st->st_off);
		st->st_len -= st->st_off;
		st->st_off = 0;
	}
	if (st->st_len >= cap)
		return ctl_stream_bad(st, cause, "over %zu bytes at once",
		    cap);
	if (st->st_size < cap + 1) {
		st->st_size = cap + 1;
		st->st_buf = ctl_xreallocarray(st->st_buf, st->st_size, 1);
	}
	for (;;) {
		n = read(st->st_fd, st->st_buf + st->st_len, cap - st->st_len);
		if (n != -1)
			break;
		if (errno != EINTR) {
			*cause = ctl_xasprintf("%s: read: %s", st->st_sock,
			    ctl_io_error(errno));
			return -1;
		}
	}
	st->st_len += (size_t)n;
	st->st_buf[st->st_len] = '\0';
	return n > 0;
}

/*
 * A CRLF-terminated line of at most max bytes, CRLF included: the
 * chunk sizes and the trailer.  EOF before it is a stream cut short,
 * where eof says.
 */
static int
ctl_stream_line(struct ctl_stream *st, size_t max, const char *what,
    const char *eof, const char **line, size_t *len, char **cause)
{
	const char	*start, *eol;
	size_t		 avail;
	int		 r;

	for (;;) {
		start = st->st_buf + st->st_off;
		avail = st->st_len - st->st_off;
		eol = memmem(start, avail, "\r\n", 2);
		if (eol != NULL && (size_t)(eol - start) + 2 <= max)
			break;
		if (eol != NULL || avail >= max)
			return ctl_stream_bad(st, cause, "%s over %zu bytes",
			    what, max);
		if ((r = ctl_stream_fill(st, max, cause)) == -1)
			return -1;
		if (r == 0)
			return ctl_stream_bad(st, cause, "the stream ended %s",
			    eof);
	}
	*line = st->st_buf + st->st_off;
	*len = eol - *line;
	st->st_off += *len + 2;
	return 0;
}

/* A chunk size: hex digits, bounded, then only an optional extension. */
static int
ctl_parse_chunk_size(const char *line, size_t len, size_t *size)
{
	size_t	i, n = 0;
	int	d;

	for (i = 0; i < len && isxdigit((unsigned char)line[i]); i++) {
		d = isdigit((unsigned char)line[i]) ? line[i] - '0' :
		    tolower((unsigned char)line[i]) - 'a' + 10;
		n = n * 16 + (size_t)d;
		if (n > CTL_CHUNK_MAX)
			return -1;
	}
	if (i == 0)
		return -1;
	if (i < len && line[i] != ';')
		return -1;
	/* chunk-ext: ignored, but printable like any header. */
	for (; i < len; i++) {
		if (!isprint((unsigned char)line[i]))
			return -1;
	}
	*size = n;
	return 0;
}

/* Text of the daemon's, on one line: control bytes become '?'. */
static void
ctl_put_clean(const char *s)
{
	for (; *s != '\0'; s++)
		putchar(iscntrl((unsigned char)*s) ? '?' : *s);
}

static void
ctl_put_value(json_t *v)
{
	char	 buf[32], *s;

	if (v == NULL || json_is_null(v) || json_is_string(v) ||
	    json_is_integer(v) || json_is_boolean(v)) {
		ctl_put_clean(ctl_scalar(v, buf, sizeof(buf)));
		return;
	}
	if ((s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
		ctl_fatalx("out of memory");
	ctl_put_clean(s);
	free(s);
}

/*
 * One line per event: time, type, what it is about, then details in
 * parentheses and, last, an error message.  Types this table does not
 * know are printed with all their fields, as key=value.
 */
static const struct ctl_event_fmt {
	const char	*e_type;
	const char	*e_subject;
	const char	*e_keys[3];
	const char	*e_labels[3];
	const char	*e_tail;	/* after ": " */
} ctl_event_fmts[] = {
	{ "order", "certificate", { "issuer", "renewal" },
	    { "issuer", "renewal" }, NULL },
	{ "issued", "certificate", { "not_after" }, { "not after" }, NULL },
	{ "renewed", "certificate", { "not_after" }, { "not after" }, NULL },
	{ "failed", "certificate", { "failures", "next_retry" },
	    { "failures", "next retry" }, "error" },
	{ "revoked", "certificate", { "reason" }, { "reason" }, NULL },
	{ "challenge_served", "token", { NULL }, { NULL }, NULL },
	{ "added", "certificate", { "issuer" }, { "issuer" }, NULL },
	{ "deleted", "certificate", { "issuer" }, { "issuer" }, NULL },
};

static void
ctl_print_event_known(const struct ctl_event_fmt *f, json_t *ev)
{
	size_t	i;

	putchar(' ');
	ctl_put_value(json_object_get(ev, f->e_subject));
	for (i = 0; i < 3 && f->e_keys[i] != NULL; i++) {
		printf("%s%s ", i == 0 ? " (" : ", ", f->e_labels[i]);
		ctl_put_value(json_object_get(ev, f->e_keys[i]));
	}
	if (i > 0)
		putchar(')');
	if (f->e_tail != NULL) {
		fputs(": ", stdout);
		ctl_put_value(json_object_get(ev, f->e_tail));
	}
}

static void
ctl_print_event(json_t *ev)
{
	const char	*type, *key;
	json_t		*v;
	size_t		 i;

	type = json_string_value(json_object_get(ev, "type"));
	ctl_put_value(json_object_get(ev, "time"));
	putchar(' ');
	ctl_put_clean(type);
	for (i = 0; i < sizeof(ctl_event_fmts) / sizeof(ctl_event_fmts[0]);
	    i++) {
		if (strcmp(ctl_event_fmts[i].e_type, type) == 0) {
			ctl_print_event_known(&ctl_event_fmts[i], ev);
			putchar('\n');
			return;
		}
	}
	json_object_foreach(ev, key, v) {
		if (strcmp(key, "time") == 0 || strcmp(key, "type") == 0)
			continue;
		putchar(' ');
		ctl_put_clean(key);
		putchar('=');
		ctl_put_value(v);
	}
	putchar('\n');
}

/*
 * One event line, printed at once: a consumer waits for it.  Empty
 * lines carry nothing and are skipped; anything else must be a JSON
 * object with a time and a type.
 */
static int
ctl_events_line(struct ctl_stream *st, const char *line, size_t len,
    char **cause)
{
	json_t		*ev;
	const char	*time, *type;
	int		 rc = -1;

	if (len == 0)
		return 0;
	st->st_events++;
	ev = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (ev == NULL || json_unpack(ev, "{s:s,s:s}", "time", &time, "type",
	    &type) != 0) {
		ctl_stream_bad(st, cause, "event %lu is not a JSON object "
		    "with a time and a type", st->st_events);
		goto out;
	}
	if (st->st_json) {
		fwrite(line, 1, len, stdout);
		putchar('\n');
	} else
		ctl_print_event(ev);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		*cause = ctl_xasprintf("stdout: %s", strerror(errno));
		goto out;
	}
	rc = 0;
out:
	json_decref(ev);
	return rc;
}

/* Chunk data, split into lines; a line may span chunks. */
static int
ctl_events_feed(struct ctl_stream *st, const char *p, size_t n,
    char **cause)
{
	const char	*nl;
	size_t		 k;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		k = nl != NULL ? (size_t)(nl - p) : n;
		if (st->st_linelen + k > CTL_EVENT_MAX)
			return ctl_stream_bad(st, cause, "an event over %d "
			    "bytes", CTL_EVENT_MAX);
		memcpy(st->st_line + st->st_linelen, p, k);
		st->st_linelen += k;
		if (nl == NULL)
			break;
		if (memchr(st->st_line, '\0', st->st_linelen) != NULL)
			return ctl_stream_bad(st, cause, "a NUL byte in an "
			    "event");
		if (ctl_events_line(st, st->st_line, st->st_linelen,
		    cause) == -1)
			return -1;
		st->st_linelen = 0;
		p += k + 1;
		n -= k + 1;
	}
	return 0;
}

/* More bytes inside a chunk, where EOF is a stream cut short. */
static int
ctl_events_more(struct ctl_stream *st, char **cause)
{
	int	r;

	if ((r = ctl_stream_fill(st, CTL_CHUNK_MAX, cause)) == -1)
		return -1;
	if (r == 0)
		return ctl_stream_bad(st, cause, "the stream ended inside a "
		    "chunk");
	return 0;
}

/* One chunk of size bytes, used as it arrives, then its CRLF. */
static int
ctl_events_chunk(struct ctl_stream *st, size_t size, char **cause)
{
	size_t	take;

	while (size > 0) {
		if (st->st_off == st->st_len &&
		    ctl_events_more(st, cause) == -1)
			return -1;
		take = st->st_len - st->st_off;
		if (take > size)
			take = size;
		if (ctl_events_feed(st, st->st_buf + st->st_off, take,
		    cause) == -1)
			return -1;
		st->st_off += take;
		size -= take;
	}
	while (st->st_len - st->st_off < 2) {
		if (ctl_events_more(st, cause) == -1)
			return -1;
	}
	if (memcmp(st->st_buf + st->st_off, "\r\n", 2) != 0)
		return ctl_stream_bad(st, cause, "a chunk longer than its "
		    "size");
	st->st_off += 2;
	return 0;
}

/* After the last chunk: trailer fields, bounded, then an empty line. */
static int
ctl_events_trailer(struct ctl_stream *st, char **cause)
{
	struct ctl_head	 hd = { -1, 0, 0 };
	const char	*line;
	size_t		 len, total = 0;
	char		*why = NULL;

	for (;;) {
		if (ctl_stream_line(st, CTL_HEAD_MAX, "the trailer",
		    "inside its trailer", &line, &len, cause) == -1)
			return -1;
		if (len == 0)
			break;
		total += len + 2;
		if (total > CTL_HEAD_MAX)
			return ctl_stream_bad(st, cause, "a trailer over %d "
			    "bytes", CTL_HEAD_MAX);
		if (memchr(line, '\0', len) != NULL ||
		    ctl_parse_header(line, len, &hd, &why) == -1) {
			ctl_stream_bad(st, cause, "in the trailer: %s",
			    why != NULL ? why : "a NUL byte");
			free(why);
			return -1;
		}
	}
	if (st->st_linelen != 0)
		return ctl_stream_bad(st, cause, "the stream ended inside an "
		    "event");
	return 0;
}

/* The chunked body, to its last chunk. */
static int
ctl_events_body(struct ctl_stream *st, char **cause)
{
	const char	*line;
	size_t		 len, size;

	for (;;) {
		if (ctl_stream_line(st, CTL_CHUNK_LINE_MAX, "a chunk-size "
		    "line", "early, without its last chunk", &line, &len,
		    cause) == -1)
			return -1;
		if (ctl_parse_chunk_size(line, len, &size) == -1)
			return ctl_stream_bad(st, cause, "a malformed chunk "
			    "size");
		if (size == 0)
			return ctl_events_trailer(st, cause);
		if (ctl_events_chunk(st, size, cause) == -1)
			return -1;
	}
}

/*
 * The head of the answer.  A 2xx must be chunked; an error is read to
 * its end and reported like any other call's.
 */
static int
ctl_events_head(struct ctl_stream *st, char **cause)
{
	struct ctl_response	 rs;
	struct ctl_head		 hd = { -1, 1, 0 };
	char			*why = NULL;
	size_t			 off;
	int			 r;

	while (memmem(st->st_buf, st->st_len, "\r\n\r\n", 4) == NULL &&
	    st->st_len < CTL_HEAD_MAX) {
		if ((r = ctl_stream_fill(st, CTL_HEAD_MAX, cause)) == -1)
			return -1;
		if (r == 0)
			break;
	}
	if (ctl_parse_head(st->st_buf, st->st_len, &rs, &hd, &off, &why) ==
	    -1)
		goto bad;
	if (rs.rs_status >= 200 && rs.rs_status <= 299) {
		if (!hd.h_chunked) {
			why = ctl_xasprintf("the event stream is not chunked");
			goto bad;
		}
		st->st_off = off;
		return 0;
	}
	while ((r = ctl_stream_fill(st, CTL_HEAD_MAX + CTL_BODY_MAX,
	    cause)) == 1)
		;
	if (r == -1)
		return -1;
	if (hd.h_chunked) {
		/* The daemon's errors are never chunked: the reason will do. */
		rs.rs_body = "";
		rs.rs_bodylen = 0;
	} else if (ctl_parse_body(st->st_buf, st->st_len, off, &hd, &rs,
	    &why) == -1)
		goto bad;
	*cause = ctl_api_error(&rs);
	return -1;
bad:
	*cause = ctl_xasprintf("%s: GET /v1/events: %s", st->st_sock, why);
	free(why);
	return -1;
}

/* ---------------------------------------------------------------- commands */

static int
ctl_cmd_status(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t		*j = NULL, *certs, *states, *zone, *v;
	const char	*state;
	char		 b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
	int		 any = 0, rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_call(o->o_socket, "GET", "/v1/status", NULL, &j, cause) == -1)
		goto out;
	if (o->o_json) {
		ctl_print_json(j);
		rc = 0;
		goto out;
	}
	certs = json_object_get(j, "certificates");
	states = json_object_get(certs, "by_state");
	zone = json_object_get(j, "shared_zone");
	printf("version       %s\n", ctl_field(j, "version", b1, sizeof(b1)));
	printf("uptime        ");
	ctl_print_uptime(json_integer_value(json_object_get(j, "uptime")));
	printf("certificates  %s total, %s valid\n",
	    ctl_field(certs, "total", b1, sizeof(b1)),
	    ctl_field(certs, "valid", b2, sizeof(b2)));
	/* Only the states something is in: ten zeros would hide them. */
	json_object_foreach(states, state, v) {
		if (json_integer_value(v) == 0)
			continue;
		printf("  %-11s %s\n", state, ctl_scalar(v, b1, sizeof(b1)));
		any = 1;
	}
	if (!any)
		printf("  (none)\n");
	printf("issuers\n");
	ctl_print_issuers(json_object_get(j, "issuers"));
	printf("shared zone   generation %s, %s of %s bytes used, "
	    "%s certificates, %s tokens, %s failed publishes%s\n",
	    ctl_field(zone, "generation", b1, sizeof(b1)),
	    ctl_field(zone, "used", b2, sizeof(b2)),
	    ctl_field(zone, "image_size", b3, sizeof(b3)),
	    ctl_field(zone, "certificates", b4, sizeof(b4)),
	    ctl_field(zone, "tokens", b5, sizeof(b5)),
	    ctl_field(zone, "failed_publishes", b6, sizeof(b6)),
	    json_is_true(json_object_get(zone, "full")) ?
	    "; FULL, nginx serves the generation above" : "");
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/* The "certificates" array of a list answer. */
static json_t *
ctl_cert_array(const struct ctl_opts *o, json_t *j, char **cause)
{
	json_t	*a;

	if (!json_is_array(a = json_object_get(j, "certificates"))) {
		*cause = ctl_xasprintf("%s: GET /v1/certificates: no "
		    "\"certificates\" array", o->o_socket);
		return NULL;
	}
	return a;
}

static int
ctl_cmd_list(const struct ctl_opts *o, int argc, char **argv, char **cause)
{
	json_t	*j = NULL, *a;
	int	 rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_call(o->o_socket, "GET", "/v1/certificates", NULL, &j,
	    cause) == -1)
		goto out;
	if (o->o_json) {
		ctl_print_json(j);
		rc = 0;
		goto out;
	}
	if ((a = ctl_cert_array(o, j, cause)) == NULL)
		goto out;
	ctl_print_certs(a);
	rc = 0;
out:
	json_decref(j);
	return rc;
}

static int
ctl_cmd_show(const struct ctl_opts *o, int argc, char **argv, char **cause)
{
	json_t	*j = NULL;
	char	*path = ctl_cert_path(argv[0], "");
	int	 rc = -1;

	(void)argc;
	if (ctl_call(o->o_socket, "GET", path, NULL, &j, cause) == -1)
		goto out;
	ctl_output_cert(o, j);
	rc = 0;
out:
	json_decref(j);
	free(path);
	return rc;
}

/* POST /v1/certificates, then follow the order unless --no-wait. */
static int
ctl_cmd_add(const struct ctl_opts *o, int argc, char **argv, char **cause)
{
	json_t	*req, *ids, *j = NULL;
	int	 i, rc = -1;

	ids = json_array();
	for (i = 1; i < argc; i++)
		json_array_append_new(ids, json_string(argv[i]));
	req = json_pack("{s:s,s:o}", "issuer", argv[0], "identifiers", ids);
	if (req == NULL)
		ctl_fatalx("%s: json_pack failed", __func__);
	if (o->o_key != NULL)
		json_object_set_new(req, "key", json_string(o->o_key));
	if (ctl_call(o->o_socket, "POST", "/v1/certificates", req, &j,
	    cause) == -1)
		goto out;
	if (o->o_nowait)
		ctl_output_cert(o, j);
	else if (ctl_wait_one(o, j, 0, cause) == -1)
		goto out;
	rc = 0;
out:
	json_decref(j);
	json_decref(req);
	return rc;
}

static int
ctl_cmd_remove(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t	*j = NULL;
	char	*path = ctl_cert_path(argv[0], ""), buf[32];
	int	 rc = -1;

	(void)argc;
	if (ctl_call(o->o_socket, "DELETE", path, NULL, &j, cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("deleted %s\n", ctl_field(j, "deleted", buf,
		    sizeof(buf)));
	rc = 0;
out:
	json_decref(j);
	free(path);
	return rc;
}

/* POST renew for one id; *out is the 202's certificate. */
static int
ctl_renew_start(const struct ctl_opts *o, const char *id, json_t **out,
    char **cause)
{
	char	*path = ctl_cert_path(id, "/renew");
	int	 rc;

	rc = ctl_call(o->o_socket, "POST", path, NULL, out, cause);
	free(path);
	return rc;
}

static int
ctl_renew_one(const struct ctl_opts *o, const char *id, char **cause)
{
	json_t	*j = NULL;
	char	 b1[32], b2[32];
	int	 rc = -1;

	if (ctl_renew_start(o, id, &j, cause) == -1)
		goto out;
	if (!o->o_nowait) {
		rc = ctl_wait_one(o, j, 1, cause);
		goto out;
	}
	/* The answer is 202: the order has started, not finished. */
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: renewal started (state %s); see acmectl show %s\n",
		    ctl_field(j, "id", b1, sizeof(b1)),
		    ctl_field(j, "state", b2, sizeof(b2)), id);
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/*
 * Start a renewal of every certificate with no order under way; the
 * others are named on stderr and left alone.  Each started one is a
 * ctl_wait in *ws; a refusal is reported and counted in *refused.
 */
static int
ctl_renew_start_all(const struct ctl_opts *o, struct ctl_wait **ws,
    size_t *n, size_t *refused, char **cause)
{
	json_t		*j = NULL, *a, *ce, *started;
	const char	*id, *state;
	char		*why;
	size_t		 i;
	int		 rc = -1, r;

	if (ctl_call(o->o_socket, "GET", "/v1/certificates", NULL, &j,
	    cause) == -1)
		goto out;
	if ((a = ctl_cert_array(o, j, cause)) == NULL)
		goto out;
	*ws = ctl_xreallocarray(NULL, json_array_size(a) + 1, sizeof(**ws));
	json_array_foreach(a, i, ce) {
		id = json_string_value(json_object_get(ce, "id"));
		state = json_string_value(json_object_get(ce, "state"));
		if (id == NULL || state == NULL)
			continue;
		if (strcmp(state, "idle") != 0 &&
		    strcmp(state, "backoff") != 0) {
			fprintf(stderr, "%s: skipped, an order is under way "
			    "(%s)\n", id, state);
			continue;
		}
		if (ctl_renew_start(o, id, &started, &why) == -1) {
			fprintf(stderr, "acmectl: %s: %s\n", id, why);
			free(why);
			(*refused)++;
			continue;
		}
		r = ctl_wait_init(&(*ws)[*n], started, 1, cause);
		json_decref(started);
		if (r == -1)
			goto out;
		(*n)++;
	}
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/* The certificates renewed, as list prints them, or their JSON. */
static void
ctl_renew_output(const struct ctl_opts *o, struct ctl_wait *ws, size_t n)
{
	json_t	*a, *j;
	size_t	 i;

	a = json_array();
	for (i = 0; i < n; i++)
		json_array_append(a, ws[i].w_cert);
	if (o->o_json) {
		j = json_pack("{s:o}", "certificates", a);
		ctl_print_json(j);
		json_decref(j);
	} else {
		ctl_print_certs(a);
		json_decref(a);
	}
}

static int
ctl_renew_all(const struct ctl_opts *o, char **cause)
{
	struct ctl_wait	*ws = NULL;
	size_t		 n = 0, refused = 0, failed, i;
	char		*why;
	int		 rc = -1;

	if (ctl_renew_start_all(o, &ws, &n, &refused, cause) == -1)
		goto out;
	if (!o->o_nowait && ctl_wait_run(o, ws, n, 1, cause) == -1)
		goto out;
	failed = refused;
	for (i = 0; i < n; i++) {
		if (ws[i].w_done != -1)
			continue;
		why = ctl_wait_error(&ws[i]);
		fprintf(stderr, "acmectl: %s\n", why);
		free(why);
		failed++;
	}
	ctl_renew_output(o, ws, n);
	if (failed > 0) {
		*cause = ctl_xasprintf("%zu of %zu renewals failed", failed,
		    n + refused);
		goto out;
	}
	rc = 0;
out:
	for (i = 0; i < n; i++)
		ctl_wait_free(&ws[i]);
	free(ws);
	return rc;
}

static int
ctl_cmd_renew(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	(void)argc;
	if (o->o_all)
		return ctl_renew_all(o, cause);
	return ctl_renew_one(o, argv[0], cause);
}

/* A reason by code is sent as a number, by name as a string. */
static json_t *
ctl_revoke_body(const char *reason)
{
	const char	*p;

	if (reason == NULL)
		return NULL;
	for (p = reason; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			break;
	}
	if (*p == '\0' && p - reason <= 3)
		return json_pack("{s:I}", "reason",
		    (json_int_t)strtol(reason, NULL, 10));
	return json_pack("{s:s}", "reason", reason);
}

static int
ctl_cmd_revoke(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t	*req, *j = NULL, *ce;
	char	*path = ctl_cert_path(argv[0], "/revoke");
	char	 b1[32], b2[32], b3[32];
	int	 rc = -1;

	(void)argc;
	req = ctl_revoke_body(o->o_reason);
	if (ctl_call(o->o_socket, "POST", path, req, &j, cause) == -1)
		goto out;
	ce = json_object_get(j, "certificate");
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: revoked (reason %s); a replacement is being "
		    "ordered (state %s)\n",
		    ctl_field(j, "revoked", b1, sizeof(b1)),
		    ctl_field(j, "reason", b2, sizeof(b2)),
		    ctl_field(ce, "state", b3, sizeof(b3)));
	rc = 0;
out:
	json_decref(j);
	json_decref(req);
	free(path);
	return rc;
}

static int
ctl_cmd_reload(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	json_t	*j = NULL;
	char	 buf[32];
	int	 rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_call(o->o_socket, "POST", "/v1/reload", NULL, &j,
	    cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("reloaded: %s certificates managed\n",
		    ctl_field(j, "certificates", buf, sizeof(buf)));
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/*
 * Print events until the daemon ends the stream with its last chunk
 * (exit 0).  No read timeout: the stream is quiet while nothing happens.
 */
static int
ctl_cmd_events(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	struct ctl_stream	 st;
	char			*req = NULL;
	int			 rc = -1;

	(void)argc;
	(void)argv;
	memset(&st, 0, sizeof(st));
	st.st_sock = o->o_socket;
	st.st_json = o->o_json;
	st.st_line = ctl_xreallocarray(NULL, CTL_EVENT_MAX + 1, 1);
	st.st_size = CTL_HEAD_MAX + 1;
	st.st_buf = ctl_xreallocarray(NULL, st.st_size, 1);
	if ((st.st_fd = ctl_connect(o->o_socket, 0, cause)) == -1)
		goto out;
	req = ctl_request("GET", "/v1/events", NULL);
	if (ctl_send(st.st_fd, o->o_socket, req, strlen(req), cause) == -1)
		goto out;
	if (ctl_events_head(&st, cause) == -1)
		goto out;
	if (ctl_events_body(&st, cause) == -1)
		goto out;
	rc = 0;
out:
	if (st.st_fd != -1)
		close(st.st_fd);
	free(req);
	free(st.st_line);
	free(st.st_buf);
	return rc;
}

/* The Prometheus text, as the daemon sent it. */
static int
ctl_cmd_metrics(const struct ctl_opts *o, int argc, char **argv,
    char **cause)
{
	struct ctl_response	 rs;
	char			*buf = NULL;
	int			 rc = -1;

	(void)argc;
	(void)argv;
	if (ctl_exchange(o->o_socket, "GET", "/metrics", NULL, &buf, &rs,
	    cause) == -1)
		goto out;
	if (memchr(rs.rs_body, '\0', rs.rs_bodylen) != NULL) {
		*cause = ctl_xasprintf("%s: GET /metrics: a NUL byte in the "
		    "text", o->o_socket);
		goto out;
	}
	fwrite(rs.rs_body, 1, rs.rs_bodylen, stdout);
	rc = 0;
out:
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- main */

static void
ctl_usage(FILE *f)
{
	fprintf(f,
	    "usage: acmectl [-hV] [--json] [-s socket] command [arguments]\n"
	    "\n"
	    "commands:\n"
	    "  status              the daemon: version, uptime, issuers, "
	    "certificates\n"
	    "                      by state\n"
	    "  list                every certificate: state, expiry, next "
	    "renewal\n"
	    "  show ID             one certificate\n"
	    "  add ISSUER NAME...  manage a new certificate and order it\n"
	    "                      [--key TYPE] ecdsa:256 (default), "
	    "ecdsa:384,\n"
	    "                      ecdsa:521, rsa:2048, rsa:3072, rsa:4096\n"
	    "  remove ID           stop managing a certificate added with add\n"
	    "  renew ID|--all      order ID again now, or every certificate "
	    "with\n"
	    "                      no order under way\n"
	    "  revoke ID           revoke the certificate in use, order a "
	    "new one\n"
	    "                      [--reason R] an RFC 5280 reason, by name "
	    "or code\n"
	    "  reload              read the configuration again (as SIGHUP)\n"
	    "  events              print events as they happen, until the "
	    "daemon\n"
	    "                      ends the stream\n"
	    "  metrics             the Prometheus metrics, as text (no "
	    "--json)\n"
	    "\n"
	    "add and renew wait for the order to end, showing its progress "
	    "on stderr,\n"
	    "then print the certificate; a failed order exits 1 with its "
	    "error.\n"
	    "\n"
	    "options:\n"
	    "  -s socket           the control socket (default: $"
	    CTL_SOCKET_ENV ",\n"
	    "                      else " CTL_DEFAULT_SOCKET ")\n"
	    "  --json              print the API's JSON (events: its lines "
	    "as they come)\n"
	    "  --no-wait           add, renew: return once the order has "
	    "started\n"
	    "  --timeout SECONDS   add, renew: stop waiting after SECONDS "
	    "(default %d);\n"
	    "                      the order goes on\n"
	    "  -h                  this help\n"
	    "  -V                  the version\n"
	    "\n"
	    "exit status: 0 done, 1 error (on stderr), 2 bad usage\n",
	    CTL_WAIT_DEFAULT);
}

static const struct ctl_cmd *
ctl_find(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++) {
		if (strcmp(ctl_cmds[i].c_name, name) == 0)
			return &ctl_cmds[i];
	}
	return NULL;
}

/* --timeout: whole seconds, 1 to a day. */
static int
ctl_parse_timeout(const char *s)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(s, &end, 10);
	if (!isdigit((unsigned char)*s) || *end != '\0' || errno != 0 ||
	    n < 1 || n > CTL_WAIT_MAX)
		return -1;
	return (int)n;
}

/* The command's arguments and options; 0 if they fit, else usage. */
static int
ctl_check_args(const struct ctl_cmd *cmd, const struct ctl_opts *o,
    int argc, char **argv)
{
	size_t	i;
	int	k;

	for (i = 0; i < sizeof(ctl_optnames) / sizeof(ctl_optnames[0]);
	    i++) {
		if ((o->o_given & ctl_optnames[i].co_bit) &&
		    !(cmd->c_opts & ctl_optnames[i].co_bit)) {
			fprintf(stderr, "acmectl: %s does not take %s\n",
			    cmd->c_name, ctl_optnames[i].co_name);
			return -1;
		}
	}
	if (argc < cmd->c_minargs ||
	    (cmd->c_maxargs != -1 && argc > cmd->c_maxargs))
		goto usage;
	/* renew takes one ID or --all, not both. */
	if ((cmd->c_opts & CTL_OPT_ALL) && o->o_all == (argc == 1))
		goto usage;
	for (k = 0; k < argc; k++) {
		if (argv[k][0] == '\0')
			goto usage;
	}
	return 0;
usage:
	fprintf(stderr, "usage: acmectl [--json] [-s socket] %s%s\n",
	    cmd->c_name, cmd->c_args);
	return -1;
}

/* Options; -1 on a bad one (usage printed). */
static int
ctl_parse_opts(int argc, char **argv, struct ctl_opts *o, int *exitnow)
{
	static const struct option	 longopts[] = {
		{ "json",	no_argument,		NULL, 'j' },
		{ "all",	no_argument,		NULL, 'a' },
		{ "key",	required_argument,	NULL, 'k' },
		{ "reason",	required_argument,	NULL, 'r' },
		{ "no-wait",	no_argument,		NULL, 'n' },
		{ "timeout",	required_argument,	NULL, 't' },
		{ "socket",	required_argument,	NULL, 's' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 }
	};
	int				 ch;

	while ((ch = getopt_long(argc, argv, "hs:V", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			o->o_json = 1;
			o->o_given |= CTL_OPT_JSON;
			break;
		case 'a':
			o->o_all = 1;
			o->o_given |= CTL_OPT_ALL;
			break;
		case 'k':
			o->o_key = optarg;
			o->o_given |= CTL_OPT_KEY;
			break;
		case 'r':
			o->o_reason = optarg;
			o->o_given |= CTL_OPT_REASON;
			if (*optarg == '\0') {
				fprintf(stderr, "acmectl: --reason: empty\n");
				return -1;
			}
			break;
		case 'n':
			o->o_nowait = 1;
			o->o_given |= CTL_OPT_WAIT;
			break;
		case 't':
			o->o_given |= CTL_OPT_WAIT;
			if ((o->o_timeout = ctl_parse_timeout(optarg)) == -1) {
				fprintf(stderr, "acmectl: --timeout: \"%s\" is "
				    "not 1 to %d seconds\n", optarg,
				    CTL_WAIT_MAX);
				return -1;
			}
			break;
		case 's':
			o->o_socket = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			*exitnow = 1;
			return 0;
		case 'V':
			printf("acmectl %s\n", CTL_VERSION);
			*exitnow = 1;
			return 0;
		default:
			ctl_usage(stderr);
			return -1;
		}
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	struct ctl_opts		 o;
	const struct ctl_cmd	*cmd;
	char			*cause = NULL;
	int			 exitnow = 0;

	memset(&o, 0, sizeof(o));
	o.o_timeout = CTL_WAIT_DEFAULT;
	if (ctl_parse_opts(argc, argv, &o, &exitnow) == -1)
		return CTL_EXIT_USAGE;
	if (exitnow)
		return 0;
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if ((cmd = ctl_find(argv[0])) == NULL) {
		fprintf(stderr, "acmectl: unknown command \"%s\"; acmectl -h "
		    "lists them\n", argv[0]);
		return CTL_EXIT_USAGE;
	}
	if (ctl_check_args(cmd, &o, argc - 1, argv + 1) == -1)
		return CTL_EXIT_USAGE;

	if (o.o_socket == NULL)
		o.o_socket = getenv(CTL_SOCKET_ENV);
	if (o.o_socket == NULL || *o.o_socket == '\0')
		o.o_socket = CTL_DEFAULT_SOCKET;
	/* A daemon that closes early must give an error, not kill us. */
	signal(SIGPIPE, SIG_IGN);

	if (cmd->c_run(&o, argc - 1, argv + 1, &cause) == -1) {
		fflush(stdout);
		fprintf(stderr, "acmectl: %s\n", cause);
		free(cause);
		return 1;
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "acmectl: stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
