/*
 * acmectl: the command-line client of acme-sidecar's control API
 * (proto/control-api.md).
 *
 * One blocking HTTP/1.1 request per run over the daemon's Unix socket,
 * with "Connection: close" so the answer ends at EOF.  The response is
 * parsed strictly and within fixed bounds: the daemon is trusted, but a
 * stale or foreign socket must not make acmectl print nonsense or grow
 * without limit.
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

/* Usage errors (bad option, missing argument, planned command). */
#define CTL_EXIT_USAGE		2

struct ctl_response {
	int		 rs_status;
	char		 rs_reason[128];
	const char	*rs_body;	/* points into the raw buffer */
	size_t		 rs_bodylen;
};

struct ctl_opts {
	const char	*o_socket;
	int		 o_json;
	int		 o_all;		/* renew --all (planned) */
};

struct ctl_cmd {
	const char	*c_name;
	const char	*c_args;	/* for usage: "" or " ID" */
	int		 c_nargs;	/* 0 or 1 (an ID) */
	int		 (*c_run)(const struct ctl_opts *, char **,
			     char **);
};

static int	ctl_cmd_status(const struct ctl_opts *, char **, char **);
static int	ctl_cmd_list(const struct ctl_opts *, char **, char **);
static int	ctl_cmd_show(const struct ctl_opts *, char **, char **);
static int	ctl_cmd_reload(const struct ctl_opts *, char **, char **);
static int	ctl_cmd_renew(const struct ctl_opts *, char **, char **);

/* Rows without c_run are planned commands: listed, refused honestly. */
static const struct ctl_cmd ctl_cmds[] = {
	{ "status",	"",	0, ctl_cmd_status },
	{ "list",	"",	0, ctl_cmd_list },
	{ "show",	" ID",	1, ctl_cmd_show },
	{ "reload",	"",	0, ctl_cmd_reload },
	{ "renew",	" ID",	1, ctl_cmd_renew },
	{ "add",	"",	0, NULL },
	{ "remove",	" ID",	0, NULL },
	{ "revoke",	" ID",	0, NULL },
	{ "events",	"",	0, NULL },
	{ "metrics",	"",	0, NULL },
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

/* ---------------------------------------------------------------- socket */

static int
ctl_connect(const char *path, char **cause)
{
	struct sockaddr_un	 sun;
	struct timeval		 tv = { CTL_TIMEOUT, 0 };
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
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1) {
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
 * Content-Length (every copy must agree) and Transfer-Encoding, which no
 * route uses and which acmectl therefore refuses rather than misreads.
 */
static int
ctl_parse_header(const char *line, size_t len, long *clen, char **why)
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
		*why = ctl_xasprintf("an unsupported Transfer-Encoding");
		return -1;
	}
	if (nlen == 14 && strncasecmp(line, "Content-Length", nlen) == 0) {
		n = ctl_parse_length(v, vlen);
		if (n == -1 || (*clen != -1 && *clen != n)) {
			*why = ctl_xasprintf("a bad Content-Length");
			return -1;
		}
		*clen = n;
	}
	return 0;
}

/* Split a whole response into status, headers and body. */
static int
ctl_parse_response(const char *buf, size_t len, struct ctl_response *rs,
    char **why)
{
	const char	*p = buf, *end, *eol;
	size_t		 limit = len < CTL_HEAD_MAX ? len : CTL_HEAD_MAX;
	long		 clen = -1;
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
		} else if (ctl_parse_header(p, eol - p, &clen, why) == -1)
			return -1;
		p = eol + 2;
	}

	rs->rs_body = p;
	rs->rs_bodylen = len - (p - buf);
	if (clen == -1) {
		if (rs->rs_bodylen > CTL_BODY_MAX) {
			*why = ctl_xasprintf("a body over %d bytes",
			    CTL_BODY_MAX);
			return -1;
		}
		return 0;
	}
	if (rs->rs_bodylen != (size_t)clen) {
		*why = ctl_xasprintf("%zu bytes of body, not the %ld of its "
		    "Content-Length", rs->rs_bodylen, clen);
		return -1;
	}
	return 0;
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

/*
 * One call: METHOD path on the socket.  On success *out is the JSON body
 * of a 2xx answer.  Otherwise *cause is what the user reads: the API's own
 * error message, or what went wrong on the way.
 */
static int
ctl_call(const char *sock, const char *method, const char *path,
    json_t **out, char **cause)
{
	struct ctl_response	 rs;
	json_error_t		 jerr;
	json_t			*j = NULL;
	char			*req = NULL, *buf = NULL, *why = NULL;
	const char		*msg;
	size_t			 len;
	int			 fd = -1, rc = -1;

	*out = NULL;
	if ((fd = ctl_connect(sock, cause)) == -1)
		goto out;
	/* POST routes take an empty body; say so, or the server waits. */
	req = ctl_xasprintf("%s %s HTTP/1.1\r\n"
	    "Host: localhost\r\n"
	    "User-Agent: acmectl/" CTL_VERSION "\r\n"
	    "Accept: application/json\r\n"
	    "%s"
	    "Connection: close\r\n"
	    "\r\n", method, path,
	    strcmp(method, "POST") == 0 ? "Content-Length: 0\r\n" : "");
	if (ctl_send(fd, sock, req, strlen(req), cause) == -1)
		goto out;
	if (ctl_recv(fd, sock, &buf, &len, cause) == -1)
		goto out;
	if (ctl_parse_response(buf, len, &rs, &why) == -1) {
		*cause = ctl_xasprintf("%s: %s %s: %s", sock, method, path,
		    why);
		goto out;
	}

	j = json_loadb(rs.rs_body, rs.rs_bodylen, JSON_REJECT_DUPLICATES,
	    &jerr);
	if (rs.rs_status < 200 || rs.rs_status > 299) {
		/* Not every error is the API's: libmicrohttpd's are HTML. */
		if (j != NULL && json_unpack(j, "{s:{s:s}}", "error",
		    "message", &msg) == 0)
			*cause = ctl_xasprintf("%s (HTTP %d)", msg,
			    rs.rs_status);
		else
			*cause = ctl_xasprintf("%s (HTTP %d)",
			    rs.rs_reason[0] != '\0' ? rs.rs_reason :
			    "error", rs.rs_status);
		goto out;
	}
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
	free(why);
	free(buf);
	free(req);
	if (fd != -1)
		close(fd);
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

/* ---------------------------------------------------------------- commands */

static int
ctl_cmd_status(const struct ctl_opts *o, char **argv, char **cause)
{
	json_t		*j = NULL, *certs, *states, *zone, *v;
	const char	*state;
	char		 b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
	int		 any = 0, rc = -1;

	(void)argv;
	if (ctl_call(o->o_socket, "GET", "/v1/status", &j, cause) == -1)
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

static int
ctl_cmp_id(const void *a, const void *b)
{
	json_t	*ja = *(json_t * const *)a, *jb = *(json_t * const *)b;
	char	 b1[32], b2[32];

	return strcmp(ctl_field(ja, "id", b1, sizeof(b1)),
	    ctl_field(jb, "id", b2, sizeof(b2)));
}

static int
ctl_cmd_list(const struct ctl_opts *o, char **argv, char **cause)
{
	static const char	*head[] = { "ID", "STATE", "NOT AFTER",
				    "NEXT RENEWAL", "ISSUER", "FAILURES" };
	static const char	*keys[] = { "id", "state", "not_after",
				    "next_renewal", "issuer", "failures" };
	const size_t		 cols = 6;
	json_t			*j = NULL, *a, **sorted = NULL;
	char			**cells = NULL, buf[32];
	size_t			 rows = 0, i, c;
	int			 rc = -1;

	(void)argv;
	if (ctl_call(o->o_socket, "GET", "/v1/certificates", &j, cause) == -1)
		goto out;
	if (o->o_json) {
		ctl_print_json(j);
		rc = 0;
		goto out;
	}
	if (!json_is_array(a = json_object_get(j, "certificates"))) {
		*cause = ctl_xasprintf("%s: GET /v1/certificates: no "
		    "\"certificates\" array", o->o_socket);
		goto out;
	}
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
	rc = 0;
out:
	if (cells != NULL)
		ctl_table_free(cells, rows * cols);
	free(sorted);
	json_decref(j);
	return rc;
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

static int
ctl_cmd_show(const struct ctl_opts *o, char **argv, char **cause)
{
	json_t	*j = NULL;
	char	*id = ctl_escape(argv[0]), *path;
	int	 rc = -1;

	path = ctl_xasprintf("/v1/certificates/%s", id);
	if (ctl_call(o->o_socket, "GET", path, &j, cause) == -1)
		goto out;
	if (o->o_json)
		ctl_print_json(j);
	else
		ctl_print_cert(j);
	rc = 0;
out:
	json_decref(j);
	free(path);
	free(id);
	return rc;
}

static int
ctl_cmd_reload(const struct ctl_opts *o, char **argv, char **cause)
{
	json_t	*j = NULL;
	char	 buf[32];
	int	 rc = -1;

	(void)argv;
	if (ctl_call(o->o_socket, "POST", "/v1/reload", &j, cause) == -1)
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

static int
ctl_cmd_renew(const struct ctl_opts *o, char **argv, char **cause)
{
	json_t	*j = NULL;
	char	*id = ctl_escape(argv[0]), *path, b1[32], b2[32];
	int	 rc = -1;

	path = ctl_xasprintf("/v1/certificates/%s/renew", id);
	if (ctl_call(o->o_socket, "POST", path, &j, cause) == -1)
		goto out;
	/* The answer is 202: the order has started, not finished. */
	if (o->o_json)
		ctl_print_json(j);
	else
		printf("%s: renewal started (state %s); see acmectl show %s\n",
		    ctl_field(j, "id", b1, sizeof(b1)),
		    ctl_field(j, "state", b2, sizeof(b2)), argv[0]);
	rc = 0;
out:
	json_decref(j);
	free(path);
	free(id);
	return rc;
}

/* ---------------------------------------------------------------- main */

static void
ctl_usage(FILE *f)
{
	fprintf(f,
	    "usage: acmectl [-hV] [--json] [-s socket] command [ID]\n"
	    "\n"
	    "commands:\n"
	    "  status      the daemon: version, uptime, issuers, "
	    "certificates by state\n"
	    "  list        every certificate: state, expiry, next renewal\n"
	    "  show ID     one certificate\n"
	    "  reload      read the configuration again (as SIGHUP)\n"
	    "  renew ID    start a new order for ID now\n"
	    "\n"
	    "planned, not implemented yet:\n"
	    "  add, remove ID, revoke ID, events, metrics, renew --all\n"
	    "\n"
	    "options:\n"
	    "  -s socket   the control socket (default: $" CTL_SOCKET_ENV
	    ",\n"
	    "              else " CTL_DEFAULT_SOCKET ")\n"
	    "  --json      print the API's JSON\n"
	    "  -h          this help\n"
	    "  -V          the version\n");
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

int
main(int argc, char *argv[])
{
	static const struct option	 longopts[] = {
		{ "json",	no_argument,		NULL, 'j' },
		{ "all",	no_argument,		NULL, 'a' },
		{ "socket",	required_argument,	NULL, 's' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 }
	};
	struct ctl_opts		 o = { NULL, 0, 0 };
	const struct ctl_cmd	*cmd;
	char			*cause = NULL;
	int			 ch;

	while ((ch = getopt_long(argc, argv, "hs:V", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			o.o_json = 1;
			break;
		case 'a':
			o.o_all = 1;
			break;
		case 's':
			o.o_socket = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		case 'V':
			printf("acmectl %s\n", CTL_VERSION);
			return 0;
		default:
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
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
	if (cmd->c_run == NULL || (o.o_all && strcmp(cmd->c_name, "renew") ==
	    0)) {
		fprintf(stderr, "acmectl: %s%s is not implemented yet\n",
		    cmd->c_name, cmd->c_run != NULL ? " --all" : "");
		return CTL_EXIT_USAGE;
	}
	if (o.o_all || argc - 1 != cmd->c_nargs ||
	    (cmd->c_nargs == 1 && argv[1][0] == '\0')) {
		fprintf(stderr, "usage: acmectl [--json] [-s socket] %s%s\n",
		    cmd->c_name, cmd->c_args);
		return CTL_EXIT_USAGE;
	}

	if (o.o_socket == NULL)
		o.o_socket = getenv(CTL_SOCKET_ENV);
	if (o.o_socket == NULL || *o.o_socket == '\0')
		o.o_socket = CTL_DEFAULT_SOCKET;
	/* A daemon that closes early must give an error, not kill us. */
	signal(SIGPIPE, SIG_IGN);

	if (cmd->c_run(&o, argv + 1, &cause) == -1) {
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
