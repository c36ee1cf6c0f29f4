/*
 * The control API's request handling (src/control.c): route matching,
 * the JSON body check against a route's fields and the field parsers.
 *
 * control.c is #included so that its static handler, control_request(),
 * can be given to a libmicrohttpd daemon of our own: the same options as
 * control_start() but no listening socket, and the request handed over
 * through a socketpair (fuzz_mhd.h).  The caller check (SO_PEERCRED) runs
 * for real and lets us in, as our own uid.  One certificate, "example",
 * exists (its issuer never starts) so that the routes with an {id} get
 * past their lookup to their body fields.
 *
 * Input: byte 0 picks the method (byte 0 % 6) and the framing headers
 * ((byte 0 / 6) % 4: Content-Length alone, twice with the same value,
 * twice with two values, or with Transfer-Encoding: the last three are
 * refused by mhd_guard_refuse()), then the path up to '\n' (any byte,
 * percent-encoded on the wire: %00 goes through mhd_guard_unescape()),
 * then the body.  The daemon's connection callbacks run too, each
 * connection with its guard and its caller (ourselves, so privileged).
 * GET /v1/events is answered by the harness: it streams until the
 * daemon stops.
 *
 * Known bug (regressions/control/404-invalid-utf8-path): a path that is
 * not UTF-8 makes control_error_json()'s json_pack() fail, and the daemon
 * exits.  Until it is fixed, FUZZ_CONTROL_UTF8_ONLY=1 drops such paths so
 * that a run can look further; fuzz-check leaves it unset.
 */
#include "../../src/control.c"

#include "fuzz.h"
#include "fuzz_mhd.h"

static struct MHD_Daemon	*fuzz_daemon;
static struct event_base	*fuzz_base;
static int			 fuzz_utf8_only;

/* Whether s (len bytes) is well-formed UTF-8 without NUL, as jansson asks. */
static int
fuzz_utf8(const uint8_t *s, size_t len)
{
	size_t		 i = 0, n, k;
	uint32_t	 c;

	while (i < len) {
		if (s[i] == 0)
			return 0;
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			n = 1;
			c = s[i] & 0x1f;
		} else if ((s[i] & 0xf0) == 0xe0) {
			n = 2;
			c = s[i] & 0x0f;
		} else if ((s[i] & 0xf8) == 0xf0) {
			n = 3;
			c = s[i] & 0x07;
		} else
			return 0;
		if (i + n >= len)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			c = (c << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) ||
		    (n == 3 && c < 0x10000) || c > 0x10ffff ||
		    (c >= 0xd800 && c <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

static int
fuzz_reload(char **cause)
{
	*cause = xstrdup("refused by the harness");
	return -1;
}

static enum control_result
fuzz_add(const char *issuer, char *const *idents, size_t n, const char *key,
    const char *profile, const char *challenge, const char **id, char **cause)
{
	(void)idents;
	(void)n;
	(void)key;
	(void)profile;
	(void)challenge;
	if (strcmp(issuer, "example") == 0) {
		*id = "example";
		return CONTROL_OK;
	}
	*cause = xstrdup("refused by the harness");
	return CONTROL_INVALID;
}

static enum control_result
fuzz_remove(const char *id, char **cause)
{
	(void)id;
	*cause = xstrdup("refused by the harness");
	return CONTROL_CONFLICT;
}

static enum MHD_Result
fuzz_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	char		 idbuf[16];
	const char	*id;

	if (strcmp(method, "GET") == 0 &&
	    control_match("/v1/events", url, idbuf, sizeof(idbuf), &id))
		return control_error(conn, MHD_HTTP_NO_CONTENT, NULL, "events");
	return control_request(cls, conn, url, method, version, upload_data,
	    upload_data_size, con_cls);
}

/* A configuration with one certificate, applied to a loop never run. */
static void
fuzz_certificate(void)
{
	static const char	 text[] =
	    "acme_issuer fuzz {\n"
	    "    uri https://127.0.0.1:9/directory;\n"
	    "    state_path /nonexistent/acme-sidecar-fuzz;\n"
	    "}\n"
	    "acme_certificate fuzz example;\n";
	struct conf		*conf;
	char			 path[] = "/tmp/fuzz-control-XXXXXX";
	char			*cause = NULL;
	int			 fd;

	if ((fd = mkstemp(path)) == -1 ||
	    write(fd, text, sizeof(text) - 1) != (ssize_t)sizeof(text) - 1)
		abort();
	close(fd);
	conf = conf_load(path, &cause);
	unlink(path);
	if (conf == NULL) {
		fprintf(stderr, "fuzz_control: %s\n", cause);
		abort();
	}
	if ((fuzz_base = event_base_new()) == NULL)
		abort();
	sched_init(fuzz_base, NULL);
	sched_apply(conf);
	conf_free(conf);
	if (sched_cert_find("example") == NULL)
		abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct control_hooks hooks = {
		fuzz_reload, fuzz_add, fuzz_remove
	};

	(void)argc;
	(void)argv;
	fuzz_quiet();
	log_init(0);
	fuzz_certificate();
	clock_gettime(CLOCK_MONOTONIC, &control.started);
	control.hooks = hooks;
	control.gid = getegid();
	/* The guards' deadlines are armed, never run: no loop runs. */
	control.loop.lm_base = fuzz_base;
	control.loop.lm_name = "control";
	fuzz_utf8_only = getenv("FUZZ_CONTROL_UTF8_ONLY") != NULL;
	fuzz_daemon = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET |
	    MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, fuzz_request, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, control_completed, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, control_notify, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, mhd_guard_unescape, NULL,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONTROL_MAX_CONNS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONTROL_CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONTROL_MEMORY_LIMIT,
	    MHD_OPTION_END);
	if (fuzz_daemon == NULL)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = {
		"GET", "POST", "DELETE", "PUT", "HEAD", "PATCH"
	};
	static const char *const framing[] = {
		"Content-Length: %zu\r\n",
		"Content-Length: %zu\r\ncontent-length: %zu\r\n",
		"Content-Length: %zu\r\nContent-Length: %zu1\r\n",
		"Content-Length: %zu\r\nTransfer-Encoding: chunked\r\n"
	};
	const uint8_t	*nl;
	char		*req;
	size_t		 plen, blen, n;

	if (size < 1 || size > CONTROL_MAX_BODY + 4096)
		return 0;
	if ((nl = memchr(data + 1, '\n', size - 1)) == NULL)
		nl = data + size;
	plen = (size_t)(nl - (data + 1));
	blen = nl < data + size ? size - plen - 2 : 0;
	if (fuzz_utf8_only && !fuzz_utf8(data + 1, plen))
		return 0;
	req = xmalloc(plen * 3 + blen + 256);
	n = (size_t)sprintf(req, "%s ", methods[data[0] % 6]);
	n += fuzz_mhd_encode(req + n, data + 1, plen);
	n += (size_t)sprintf(req + n, " HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n");
	n += (size_t)sprintf(req + n, framing[(data[0] / 6) % 4], blen, blen);
	n += (size_t)sprintf(req + n, "\r\n");
	memcpy(req + n, nl + 1 - (blen == 0), blen);
	fuzz_mhd_exchange(fuzz_daemon, req, n + blen);
	free(req);
	return 0;
}
