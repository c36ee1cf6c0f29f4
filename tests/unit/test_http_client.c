/*
 * http_client.c against a real HTTPS server: a throwaway CA and a Python
 * http.server (HTTP/1.1 keep-alive, TLS) started by the test on a free
 * port.  The server counts the TCP connections it accepted and exposes
 * the count at /conns, so keep-alive is observed, not assumed.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>

#include "sidecar.h"

#define TH_BIG	(HTTP_MAX_BODY + 1)

static const char th_server_py[] =
"import http.server, socket, ssl, sys, threading, time\n"
"ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
"ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n"
"lock = threading.Lock()\n"
"conns = 0\n"
"BIG = int(sys.argv[3])\n"
"class H(http.server.BaseHTTPRequestHandler):\n"
"    protocol_version = 'HTTP/1.1'\n"
"    def setup(self):\n"
"        global conns\n"
"        with lock:\n"
"            conns += 1\n"
"        super().setup()\n"
"    def log_message(self, *a):\n"
"        pass\n"
"    def reply(self, code, body, headers=()):\n"
"        if isinstance(body, str):\n"
"            body = body.encode()\n"
"        self.send_response(code)\n"
"        for k, v in headers:\n"
"            self.send_header(k, v)\n"
"        self.send_header('Content-Length', str(len(body)))\n"
"        self.end_headers()\n"
"        if self.command != 'HEAD':\n"
"            self.wfile.write(body)\n"
"    def any(self):\n"
"        n = int(self.headers.get('Content-Length') or 0)\n"
"        body = self.rfile.read(n).decode() if n else ''\n"
"        h = self.headers\n"
"        p = self.path\n"
"        if p == '/echo':\n"
"            self.reply(200, '|'.join([self.command, str(h['Content-Type']),\n"
"                str(h['Accept']), str(h['User-Agent']), str(h['Host']),\n"
"                str(h['Content-Length']), body]))\n"
"        elif p == '/links':\n"
"            self.reply(200, '', [\n"
"                ('Link', '<https://ca.test/a>;rel=\"alternate\", '\n"
"                         '<https://ca.test/up>;rel=\"up\"'),\n"
"                ('Link', '<https://ca.test/b,1>; rel=alternate; '\n"
"                         'title=\"x, y\"'),\n"
"                ('Link', '<https://ca.test/c>; title=\"rel=up\"; '\n"
"                         'REL=\"index Alternate\"')])\n"
"        elif p == '/busy':\n"
"            self.reply(503, '{\"type\":\"urn:ietf:params:acme:error:'\n"
"                'rateLimited\"}', [('Retry-After', '7')])\n"
"        elif p == '/slow':\n"
"            time.sleep(3)\n"
"            self.reply(200, 'late')\n"
"        elif p == '/delay':\n"
"            time.sleep(0.3)\n"
"            self.reply(200, 'delayed')\n"
"        elif p == '/close':\n"
"            self.close_connection = True\n"
"            self.reply(200, 'bye', [('Connection', 'close')])\n"
"        elif p == '/drop':\n"
"            self.close_connection = True\n"
"            self.reply(200, 'dropped')\n"
"        elif p == '/conns':\n"
"            with lock:\n"
"                self.reply(200, str(conns))\n"
"        elif p == '/big':\n"
"            self.reply(200, 'x' * BIG)\n"
"        else:\n"
"            self.reply(404, 'not found')\n"
"    do_GET = do_POST = do_HEAD = any\n"
"class S(http.server.ThreadingHTTPServer):\n"
"    daemon_threads = True\n"
"    def finish_request(self, request, client_address):\n"
"        try:\n"
"            tls = ctx.wrap_socket(request, server_side=True)\n"
"        except OSError:\n"
"            return\n"
"        try:\n"
"            self.RequestHandlerClass(tls, client_address, self)\n"
"        except OSError:\n"
"            pass\n"
"        finally:\n"
"            tls.close()\n"
"srv = S(('127.0.0.1', 0), H)\n"
"print(srv.server_address[1], flush=True)\n"
"srv.serve_forever()\n";

/* The server and its CA, shared by every test. */
static struct {
	char	 dir[64];
	char	 ca[128];
	pid_t	 pid;
	int	 port;
	int	 out;
} th_srv = { .pid = -1, .out = -1 };

struct th_res {
	int	 called;
	int	 status;
	char	*error;
	char	*body;
	size_t	 len;
	char	*retry_after;
	char	**alternate;
	char	**up;
	char	**none;
	void	*call;		/* the th_call until the callback frees it */
};

struct th {
	struct event_base	*base;
	struct http_pool	*pool;
	SSL_CTX			*ctx;
	int			 pending;
};

static int
th_system(const char *fmt, ...)
{
	char	*cmd = NULL;
	va_list	 ap;
	int	 rc;

	va_start(ap, fmt);
	if (vasprintf(&cmd, fmt, ap) == -1)
		abort();
	va_end(ap);
	rc = system(cmd);
	free(cmd);
	return rc;
}

static int
th_certs(void)
{
	const char	*d = th_srv.dir;
	FILE		*f;
	char		 path[128];

	snprintf(path, sizeof(path), "%s/ext.cnf", d);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
	    "extendedKeyUsage=serverAuth\n");
	fclose(f);
	snprintf(th_srv.ca, sizeof(th_srv.ca), "%s/ca.pem", d);
	return th_system("cd %s && ("
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout srv.key -out srv.csr -subj /CN=127.0.0.1 && "
	    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -days 2 -extfile ext.cnf -out srv.pem"
	    ") >/dev/null 2>&1", d);
}

static int
th_server_start(void)
{
	char	 script[128], cert[128], key[128], big[32], line[32];
	FILE	*f;
	int	 fds[2];
	ssize_t	 n;

	snprintf(script, sizeof(script), "%s/server.py", th_srv.dir);
	snprintf(cert, sizeof(cert), "%s/srv.pem", th_srv.dir);
	snprintf(key, sizeof(key), "%s/srv.key", th_srv.dir);
	snprintf(big, sizeof(big), "%d", TH_BIG);
	if ((f = fopen(script, "w")) == NULL)
		return -1;
	fputs(th_server_py, f);
	fclose(f);
	if (pipe(fds) == -1)
		return -1;
	switch (th_srv.pid = fork()) {
	case -1:
		return -1;
	case 0:
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execlp("python3", "python3", script, cert, key, big,
		    (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	/* Keep the read end open: the server must never see EPIPE. */
	th_srv.out = fds[0];
	n = read(fds[0], line, sizeof(line) - 1);
	if (n <= 0)
		return -1;
	line[n] = '\0';
	th_srv.port = atoi(line);
	return th_srv.port > 0 ? 0 : -1;
}

static int
th_group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(th_srv.dir, sizeof(th_srv.dir), "/tmp/test_http.XXXXXX");
	if (mkdtemp(th_srv.dir) == NULL)
		return -1;
	if (th_certs() != 0) {
		fprintf(stderr, "openssl failed\n");
		return -1;
	}
	if (th_server_start() != 0) {
		fprintf(stderr, "python3 server failed to start\n");
		return -1;
	}
	return 0;
}

static int
th_group_teardown(void **state)
{
	(void)state;
	if (th_srv.pid > 0) {
		kill(th_srv.pid, SIGTERM);
		waitpid(th_srv.pid, NULL, 0);
	}
	if (th_srv.out != -1)
		close(th_srv.out);
	th_system("rm -rf %s", th_srv.dir);
	return 0;
}

static struct th *
th_new(const char *cafile, int verify, unsigned int max_conns, int timeout)
{
	struct th	*th;
	char		*cause = NULL;

	th = xcalloc(1, sizeof(*th));
	th->base = event_base_new();
	th->ctx = http_ssl_ctx(cafile, verify, &cause);
	if (th->ctx == NULL)
		fail_msg("http_ssl_ctx: %s", cause);
	th->pool = http_pool_new(th->base, NULL, th->ctx, max_conns, timeout);
	/* The pool holds its own reference. */
	SSL_CTX_free(th->ctx);
	return th;
}

static void
th_free(struct th *th)
{
	http_pool_free(th->pool);
	event_base_free(th->base);
	free(th);
}

static void
th_res_clear(struct th_res *r)
{
	free(r->error);
	free(r->body);
	free(r->retry_after);
	http_links_free(r->alternate);
	http_links_free(r->up);
	http_links_free(r->none);
	memset(r, 0, sizeof(*r));
}

static char *
th_url(const char *path)
{
	char	*url = NULL;

	xasprintf(&url, "https://127.0.0.1:%d%s", th_srv.port, path);
	return url;
}

struct th_call {
	struct th	*th;
	struct th_res	*res;
};

static void
th_cb(const struct http_response *hr, void *arg)
{
	struct th_call	*c = arg;
	struct th_res	*r = c->res;
	const char	*v;

	r->called++;
	r->status = hr->hr_status;
	if (hr->hr_error != NULL)
		r->error = xstrdup(hr->hr_error);
	/* hr_body must be NUL terminated at hr_len. */
	assert_int_equal(hr->hr_body[hr->hr_len], '\0');
	r->len = hr->hr_len;
	r->body = xstrdup(hr->hr_body);
	if ((v = http_response_header(hr, "retry-after")) != NULL)
		r->retry_after = xstrdup(v);
	r->alternate = http_response_links(hr, "alternate");
	r->up = http_response_links(hr, "up");
	r->none = http_response_links(hr, "nope");
	c->th->pending--;
	r->call = NULL;
	free(c);
}

static struct http_request *
th_start(struct th *th, const char *method, const char *path,
    const char *body, struct th_res *res)
{
	struct th_call		*c;
	struct http_request	*hq;
	char			*url;

	c = xcalloc(1, sizeof(*c));
	c->th = th;
	c->res = res;
	res->call = c;
	url = path[0] == '/' ? th_url(path) : xstrdup(path);
	hq = http_pool_request(th->pool, method, url,
	    body != NULL ? "application/jose+json" : NULL,
	    "application/json", body, body != NULL ? strlen(body) : 0,
	    th_cb, c);
	free(url);
	th->pending++;
	/* Never called back from inside http_pool_request. */
	assert_int_equal(res->called, 0);
	return hq;
}

static void
th_cancel(struct th *th, struct http_request *hq, struct th_res *res)
{
	http_request_cancel(hq);
	free(res->call);
	res->call = NULL;
	th->pending--;
}

static void
th_loopbreak(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	*(int *)arg = 1;
}

/* Run the loop until nothing is pending, or for ms if ms > 0. */
static void
th_run(struct th *th, int ms)
{
	struct event	*t;
	struct timeval	 tv;
	int		 expired = 0;

	t = evtimer_new(th->base, th_loopbreak, &expired);
	tv.tv_sec = (ms > 0 ? ms : 10000) / 1000;
	tv.tv_usec = (ms > 0 ? ms : 10000) % 1000 * 1000;
	evtimer_add(t, &tv);
	while (!expired && (ms > 0 || th->pending > 0))
		event_base_loop(th->base, EVLOOP_ONCE);
	event_free(t);
}

static void
th_do(struct th *th, const char *method, const char *path, const char *body,
    struct th_res *res)
{
	th_start(th, method, path, body, res);
	th_run(th, 0);
	assert_int_equal(res->called, 1);
}

/* How many connections the server has accepted so far. */
static int
th_conns(struct th *th)
{
	struct th_res	 r = { 0 };
	int		 n;

	th_do(th, "GET", "/conns", NULL, &r);
	assert_int_equal(r.status, 200);
	n = atoi(r.body);
	th_res_clear(&r);
	return n;
}

static void
test_get_post(void **state)
{
	struct th	*th;
	struct th_res	 r = { 0 };
	char		 want[256];

	(void)state;
	th = th_new(th_srv.ca, 1, 4, 5);

	th_do(th, "GET", "/echo", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_null(r.error);
	snprintf(want, sizeof(want), "GET|None|application/json|"
	    "acme-sidecar/%s|127.0.0.1:%d|None|", SIDECAR_VERSION,
	    th_srv.port);
	assert_string_equal(r.body, want);
	assert_int_equal(r.len, strlen(want));
	th_res_clear(&r);

	th_do(th, "POST", "/echo", "{\"protected\":\"x\"}", &r);
	assert_int_equal(r.status, 200);
	snprintf(want, sizeof(want), "POST|application/jose+json|"
	    "application/json|acme-sidecar/%s|127.0.0.1:%d|17|"
	    "{\"protected\":\"x\"}", SIDECAR_VERSION, th_srv.port);
	assert_string_equal(r.body, want);
	th_res_clear(&r);

	/* An empty POST (POST-as-GET has a body, but be exact). */
	th_start(th, "POST", "/echo", NULL, &r);
	th_run(th, 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "POST|None|application/json|"));
	assert_non_null(strstr(r.body, "|0|"));
	th_res_clear(&r);

	th_do(th, "HEAD", "/echo", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, 0);
	th_res_clear(&r);

	th_do(th, "GET", "/busy", NULL, &r);
	assert_int_equal(r.status, 503);
	assert_null(r.error);
	assert_non_null(r.retry_after);
	assert_string_equal(r.retry_after, "7");
	assert_non_null(strstr(r.body, "rateLimited"));
	th_res_clear(&r);

	th_do(th, "GET", "/nowhere", NULL, &r);
	assert_int_equal(r.status, 404);
	th_res_clear(&r);

	th_free(th);
}

static void
test_bad_requests(void **state)
{
	struct th	*th;
	struct th_res	 r1 = { 0 }, r2 = { 0 }, r3 = { 0 };

	(void)state;
	th = th_new(th_srv.ca, 1, 4, 5);
	th_start(th, "GET", "not a url", NULL, &r1);
	th_start(th, "GET", "ftp://127.0.0.1/x", NULL, &r2);
	th_start(th, "PUT", "/echo", NULL, &r3);
	th_run(th, 0);
	assert_int_equal(r1.called, 1);
	assert_int_equal(r1.status, 0);
	assert_non_null(r1.error);
	assert_non_null(strstr(r1.error, "not a url"));
	assert_int_equal(r2.status, 0);
	assert_non_null(strstr(r2.error, "scheme"));
	assert_int_equal(r3.status, 0);
	assert_non_null(strstr(r3.error, "method"));
	th_res_clear(&r1);
	th_res_clear(&r2);
	th_res_clear(&r3);
	th_free(th);
}

static void
test_verify(void **state)
{
	struct th	*th;
	struct th_res	 r = { 0 };
	char		*cause = NULL;

	(void)state;

	/* The system store does not know our throwaway CA. */
	th = th_new(NULL, 1, 4, 5);
	th_do(th, "GET", "/echo", NULL, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(r.error);
	if (strncmp(r.error, "certificate verify failed: ", 27) != 0)
		fail_msg("unexpected error \"%s\"", r.error);
	th_res_clear(&r);
	th_free(th);

	/* ssl_verify off. */
	th = th_new(NULL, 0, 4, 5);
	th_do(th, "GET", "/echo", NULL, &r);
	assert_int_equal(r.status, 200);
	th_res_clear(&r);
	th_free(th);

	/* A missing CA file is a configuration error, with its name. */
	assert_null(http_ssl_ctx("/nonexistent/ca.pem", 1, &cause));
	assert_non_null(strstr(cause, "/nonexistent/ca.pem"));
	free(cause);
}

static void
test_refused(void **state)
{
	struct th		*th;
	struct th_res		 r = { 0 };
	struct sockaddr_in	 sin;
	socklen_t		 slen = sizeof(sin);
	char			 url[64];
	int			 s;

	(void)state;
	/* A port that was free a moment ago and has no listener. */
	s = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	getsockname(s, (struct sockaddr *)&sin, &slen);
	close(s);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/",
	    ntohs(sin.sin_port));

	th = th_new(th_srv.ca, 1, 4, 5);
	th_do(th, "GET", url, NULL, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(r.error);
	assert_string_equal(r.error, "connection refused");
	th_res_clear(&r);
	th_free(th);
}

struct th_seq {
	struct th	*th;
	int		 left;
	int		 ok;
};

static void
th_seq_cb(const struct http_response *hr, void *arg)
{
	struct th_seq	*s = arg;
	char		*url;

	if (hr->hr_status == 200)
		s->ok++;
	if (--s->left > 0) {
		url = th_url("/echo");
		http_pool_request(s->th->pool, "GET", url, NULL, NULL, NULL, 0,
		    th_seq_cb, s);
		free(url);
	} else
		s->th->pending--;
}

static void
test_keepalive(void **state)
{
	struct th	*th;
	struct th_seq	 s;
	char		*url;
	int		 before, after;

	(void)state;
	th = th_new(th_srv.ca, 1, 4, 5);
	before = th_conns(th);

	/* 20 requests, each issued from the previous one's callback. */
	s.th = th;
	s.left = 20;
	s.ok = 0;
	url = th_url("/echo");
	http_pool_request(th->pool, "GET", url, NULL, NULL, NULL, 0,
	    th_seq_cb, &s);
	free(url);
	th->pending++;
	th_run(th, 0);
	assert_int_equal(s.left, 0);
	assert_int_equal(s.ok, 20);

	after = th_conns(th);
	/* All of it over the connection that fetched "before". */
	assert_int_equal(after, before);
	th_free(th);
}

static void
test_concurrent(void **state)
{
	struct th	*th;
	struct th_res	 r[50];
	const char	*want;
	int		 i, before, after;

	(void)state;
	memset(r, 0, sizeof(r));
	th = th_new(th_srv.ca, 1, 4, 5);
	before = th_conns(th);
	for (i = 0; i < 50; i++)
		th_start(th, i % 2 ? "POST" : "GET", "/echo",
		    i % 2 ? "{}" : NULL, &r[i]);
	th_run(th, 0);
	for (i = 0; i < 50; i++) {
		assert_int_equal(r[i].called, 1);
		assert_int_equal(r[i].status, 200);
		want = i % 2 ? "POST|application/jose+json|application/json|" :
		    "GET|None|application/json|";
		assert_int_equal(strncmp(r[i].body, want, strlen(want)), 0);
		if (i % 2)
			assert_non_null(strstr(r[i].body, "|2|{}"));
		th_res_clear(&r[i]);
	}
	after = th_conns(th);
	/* max_conns=4, and one of them already existed. */
	if (after - before > 3)
		fail_msg("%d new connections for max_conns=4", after - before);
	th_free(th);
}

static void
test_server_close(void **state)
{
	struct th	*th;
	struct th_res	 r = { 0 };
	int		 i, before, after;

	(void)state;
	th = th_new(th_srv.ca, 1, 1, 5);
	before = th_conns(th);
	th_do(th, "GET", "/close", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "bye");
	th_res_clear(&r);

	/* The spent connection is replaced, not reused. */
	th_do(th, "POST", "/echo", "{}", &r);
	assert_int_equal(r.status, 200);
	assert_null(r.error);
	th_res_clear(&r);
	after = th_conns(th);
	assert_int_equal(after, before + 1);

	/*
	 * Closed without a word: the next GET, sent at once, either sees
	 * the close first or is retried once on a fresh connection.
	 */
	for (i = 0; i < 5; i++) {
		th_do(th, "GET", "/drop", NULL, &r);
		assert_int_equal(r.status, 200);
		th_res_clear(&r);
		th_do(th, "GET", "/echo", NULL, &r);
		assert_int_equal(r.status, 200);
		th_res_clear(&r);
	}
	th_free(th);
}

static void
test_timeout(void **state)
{
	struct th	*th;
	struct th_res	 r = { 0 };
	struct timeval	 t0, t1;

	(void)state;
	th = th_new(th_srv.ca, 1, 1, 1);
	gettimeofday(&t0, NULL);
	th_do(th, "GET", "/slow", NULL, &r);
	gettimeofday(&t1, NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(r.error);
	assert_string_equal(r.error, "timeout");
	/* 1 s timeout, the server takes 3 s. */
	assert_true(t1.tv_sec - t0.tv_sec <= 2);
	th_res_clear(&r);

	/* The pool recovers on a fresh connection. */
	th_do(th, "GET", "/echo", NULL, &r);
	assert_int_equal(r.status, 200);
	th_res_clear(&r);
	th_free(th);
}

static void
test_cancel(void **state)
{
	struct th		*th;
	struct th_res		 r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	struct http_request	*q1, *q2, *q3;

	(void)state;
	th = th_new(th_srv.ca, 1, 1, 5);
	q1 = th_start(th, "GET", "/delay", NULL, &r1);
	q2 = th_start(th, "GET", "/echo", NULL, &r2);	/* queued behind */
	q3 = th_start(th, "GET", "not a url", NULL, &r3); /* already done */
	th_cancel(th, q2, &r2);
	th_cancel(th, q3, &r3);
	th_run(th, 100);		/* q1 is now in flight */
	assert_int_equal(r1.called, 0);
	th_cancel(th, q1, &r1);
	th_run(th, 800);		/* its response arrives meanwhile */
	assert_int_equal(r1.called, 0);
	assert_int_equal(r2.called, 0);
	assert_int_equal(r3.called, 0);

	/* The connection it was on carries the next request. */
	th_do(th, "GET", "/echo", NULL, &r2);
	assert_int_equal(r2.status, 200);
	th_res_clear(&r2);
	th_free(th);
}

static void
test_links(void **state)
{
	struct th	*th;
	struct th_res	 r = { 0 };

	(void)state;
	th = th_new(th_srv.ca, 1, 1, 5);
	th_do(th, "GET", "/links", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(r.alternate);
	assert_non_null(r.alternate[0]);
	assert_string_equal(r.alternate[0], "https://ca.test/a");
	assert_non_null(r.alternate[1]);
	assert_string_equal(r.alternate[1], "https://ca.test/b,1");
	assert_non_null(r.alternate[2]);
	assert_string_equal(r.alternate[2], "https://ca.test/c");
	assert_null(r.alternate[3]);
	assert_non_null(r.up[0]);
	assert_string_equal(r.up[0], "https://ca.test/up");
	assert_null(r.up[1]);
	assert_null(r.none[0]);
	th_res_clear(&r);
	th_free(th);
}

static void
test_too_large(void **state)
{
	struct th	*th;
	struct th_res	 r = { 0 };

	(void)state;
	th = th_new(th_srv.ca, 1, 1, 5);
	th_do(th, "GET", "/big", NULL, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(r.error);
	assert_string_equal(r.error, "response too large");
	th_res_clear(&r);
	th_free(th);
}

struct th_freer {
	struct th	*th;
	int		 called;
};

static void
th_free_cb(const struct http_response *hr, void *arg)
{
	struct th_freer	*f = arg;

	(void)hr;
	f->called++;
	/* Freeing the pool from a callback stops every other callback. */
	http_pool_free(f->th->pool);
	f->th->pool = NULL;
}

static void
test_pool_free(void **state)
{
	struct th	*th;
	struct th_freer	 f = { 0 };
	char		*url;
	int		 i;

	(void)state;
	/* Freed with requests queued and in flight: no callback, no leak. */
	th = th_new(th_srv.ca, 1, 2, 5);
	f.th = th;
	url = th_url("/delay");
	for (i = 0; i < 5; i++)
		http_pool_request(th->pool, "GET", url, NULL, NULL, NULL, 0,
		    th_free_cb, &f);
	th->pending = 1;
	th_run(th, 50);
	http_pool_free(th->pool);
	th->pool = NULL;
	th_run(th, 500);
	assert_int_equal(f.called, 0);
	th_free(th);

	th = th_new(th_srv.ca, 1, 2, 5);
	f.th = th;
	for (i = 0; i < 5; i++)
		http_pool_request(th->pool, "GET", url, NULL, NULL, NULL, 0,
		    th_free_cb, &f);
	th->pending = 1;
	th_run(th, 1500);
	assert_int_equal(f.called, 1);
	assert_null(th->pool);
	th_free(th);
	free(url);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_post),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_verify),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_server_close),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_links),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_pool_free),
	};

	log_init(getenv("TEST_VERBOSE") != NULL ? 1 : 0);
	return cmocka_run_group_tests(tests, th_group_setup,
	    th_group_teardown);
}
