/*
 * acmectl: the HTTP/1.1 client of the control socket.
 *
 * One blocking request per call over the daemon's Unix socket, with
 * "Connection: close" so the answer ends at EOF.  The response is
 * parsed strictly and within fixed bounds: the daemon is trusted, but a
 * stale or foreign socket must not make acmectl print nonsense or grow
 * without limit.  The one chunked answer, the event stream, is decoded
 * as it arrives, with the same care.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl.h"

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

/* The framing headers of a response. */
struct ctl_head {
	long		 h_clen;	/* Content-Length, -1 if none */
	int		 h_chunked_ok;	/* the caller decodes chunks */
	int		 h_chunked;
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
char *
ctl_cert_path(const char *id, const char *suffix)
{
	char	*e = ctl_escape(id), *path;

	path = ctl_xasprintf("/v1/certificates/%s%s", e, suffix);
	free(e);
	return path;
}

/* "/v1/issuers/{name}" plus suffix, the name escaped. */
char *
ctl_issuer_path(const char *name, const char *suffix)
{
	char	*e = ctl_escape(name), *path;

	path = ctl_xasprintf("/v1/issuers/%s%s", e, suffix);
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
 * Connect and send the request: the socket, ready for its answer, or
 * -1.  rcvtimeo is as for ctl_connect.
 */
static int
ctl_open(const char *sock, int rcvtimeo, const char *method,
    const char *path, const char *body, char **cause)
{
	char	*req = NULL;
	int	 fd = -1, rc = -1;

	if ((fd = ctl_connect(sock, rcvtimeo, cause)) == -1)
		goto out;
	req = ctl_request(method, path, body);
	if (ctl_send(fd, sock, req, strlen(req), cause) == -1)
		goto out;
	rc = fd;
	fd = -1;
out:
	free(req);
	if (fd != -1)
		close(fd);
	return rc;
}

/*
 * One exchange: METHOD path (with a JSON body if body is not NULL) on
 * the socket.  On success *buf holds the raw answer, rs points into it,
 * and the status is 2xx.  Otherwise *cause is what the user reads: the
 * API's own error message, or what went wrong on the way.
 */
int
ctl_exchange(const char *sock, const char *method, const char *path,
    const char *body, char **buf, struct ctl_response *rs, char **cause)
{
	char	*b = NULL, *why = NULL;
	size_t	 len;
	int	 fd = -1, rc = -1;

	if ((fd = ctl_open(sock, CTL_TIMEOUT, method, path, body,
	    cause)) == -1)
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
	if (fd != -1)
		close(fd);
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
	ctl_stream_bad(st, cause, "%s", why);
	free(why);
	return -1;
}

/*
 * Print events until the daemon ends the stream with its last chunk.
 * No read timeout: the stream is quiet while nothing happens.
 */
int
ctl_events(const char *sock, int json, char **cause)
{
	struct ctl_stream	 st;
	int			 rc = -1;

	memset(&st, 0, sizeof(st));
	st.st_sock = sock;
	st.st_json = json;
	st.st_line = ctl_xreallocarray(NULL, CTL_EVENT_MAX + 1, 1);
	st.st_size = CTL_HEAD_MAX + 1;
	st.st_buf = ctl_xreallocarray(NULL, st.st_size, 1);
	if ((st.st_fd = ctl_open(sock, 0, "GET", "/v1/events", NULL,
	    cause)) == -1)
		goto out;
	if (ctl_events_head(&st, cause) == -1)
		goto out;
	if (ctl_events_body(&st, cause) == -1)
		goto out;
	rc = 0;
out:
	if (st.st_fd != -1)
		close(st.st_fd);
	free(st.st_line);
	free(st.st_buf);
	return rc;
}
