/*
 * challenge.c: real HTTP requests over loopback against the responder,
 * with the libevent loop driven by the test between reads and writes.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>

#include "sidecar.h"

#define TC_PREFIX	"/.well-known/acme-challenge/"
#define TC_TOKEN	"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
#define TC_KEYAUTH	TC_TOKEN ".nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ"

struct tc_response {
	int	 status;	/* 0: no status line (closed or reset) */
	char	*raw;
	char	*body;		/* into raw */
	size_t	 bodylen;
};

static struct event_base	*tc_base;

static int
tc_setup(void **state)
{
	char	*cause = NULL;

	(void)state;
	log_init(getenv("TEST_VERBOSE") != NULL);
	tc_base = event_base_new();
	if (tc_base == NULL)
		return -1;
	if (challenge_start(tc_base, "127.0.0.1", 0, &cause) != 0) {
		fprintf(stderr, "challenge_start: %s\n", cause);
		return -1;
	}
	return 0;
}

static int
tc_teardown(void **state)
{
	(void)state;
	challenge_stop();
	event_base_free(tc_base);
	tc_base = NULL;
	return 0;
}

static double
tc_clock(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
tc_connect(int family, int port)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;
	int			 fd, r;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(fd != -1);
	if (family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		r = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)port);
		sin6.sin6_addr = in6addr_loopback;
		r = connect(fd, (struct sockaddr *)&sin6, sizeof(sin6));
	}
	assert_true(r == 0 || errno == EINPROGRESS);
	return fd;
}

/*
 * Send req and read until the server closes, driving the loop in between.
 * Reset or close before any answer gives status 0.
 */
static void
tc_exchange(int family, const char *req, size_t reqlen, struct tc_response *r)
{
	struct pollfd	 pfd;
	size_t		 off = 0, len = 0, cap = 4096;
	ssize_t		 n;
	double		 deadline = tc_clock() + 5.0;
	int		 fd, writing = 1;
	char		*end;

	memset(r, 0, sizeof(*r));
	r->raw = xmalloc(cap);
	fd = tc_connect(family, challenge_port());
	for (;;) {
		if (tc_clock() > deadline)
			fail_msg("no answer within 5 s");
		if (writing && off < reqlen) {
			n = send(fd, req + off, reqlen - off,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0)
				off += (size_t)n;
			else if (n == -1 && errno != EAGAIN &&
			    errno != ENOTCONN)
				writing = 0;	/* EPIPE, ECONNRESET */
		}
		event_base_loop(tc_base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 5) <= 0)
			continue;
		if (len + 1024 > cap) {
			r->raw = xreallocarray(r->raw, 2, cap);
			cap *= 2;
		}
		n = recv(fd, r->raw + len, cap - len - 1, 0);
		if (n == -1 && errno == EAGAIN)
			continue;
		if (n <= 0)
			break;		/* EOF or reset */
		len += (size_t)n;
	}
	close(fd);
	r->raw[len] = '\0';
	if (sscanf(r->raw, "HTTP/1.%*d %d", &r->status) != 1)
		r->status = 0;
	if ((end = strstr(r->raw, "\r\n\r\n")) != NULL) {
		r->body = end + 4;
		r->bodylen = len - (size_t)(r->body - r->raw);
	}
}

static void
tc_get(const char *method, const char *path, struct tc_response *r)
{
	char	*req;

	xasprintf(&req, "%s %s HTTP/1.1\r\nHost: example.com\r\n"
	    "Connection: close\r\n\r\n", method, path);
	tc_exchange(AF_INET, req, strlen(req), r);
	free(req);
}

static void
tc_free(struct tc_response *r)
{
	free(r->raw);
	memset(r, 0, sizeof(*r));
}

static void
tc_expect(const char *method, const char *path, int status)
{
	struct tc_response	 r;

	tc_get(method, path, &r);
	if (r.status != status)
		fail_msg("%s %s: got %d, want %d", method, path, r.status,
		    status);
	tc_free(&r);
}

static void
test_token_valid(void **state)
{
	char	 longtok[CHALLENGE_TOKEN_MAX + 2];

	(void)state;
	assert_true(challenge_token_valid(TC_TOKEN));
	assert_true(challenge_token_valid("a"));
	assert_true(challenge_token_valid("A-_z09"));
	assert_false(challenge_token_valid(""));
	assert_false(challenge_token_valid(NULL));
	assert_false(challenge_token_valid(".."));
	assert_false(challenge_token_valid("a.b"));
	assert_false(challenge_token_valid("a/b"));
	assert_false(challenge_token_valid("a=="));
	assert_false(challenge_token_valid("a+b"));
	assert_false(challenge_token_valid("a%2e"));
	memset(longtok, 'a', sizeof(longtok));
	longtok[CHALLENGE_TOKEN_MAX] = '\0';
	assert_true(challenge_token_valid(longtok));
	longtok[CHALLENGE_TOKEN_MAX] = 'a';
	longtok[CHALLENGE_TOKEN_MAX + 1] = '\0';
	assert_false(challenge_token_valid(longtok));
}

static void
test_serve(void **state)
{
	struct tc_response	 r;
	unsigned long		 served = challenge_served();

	(void)state;
	assert_true(challenge_port() > 0);
	challenge_add(TC_TOKEN, TC_KEYAUTH);

	tc_get("GET", TC_PREFIX TC_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.raw,
	    "\r\nContent-Type: application/octet-stream\r\n"));
	assert_int_equal(r.bodylen, strlen(TC_KEYAUTH));
	assert_memory_equal(r.body, TC_KEYAUTH, r.bodylen);
	tc_free(&r);
	assert_int_equal(challenge_served(), served + 1);

	tc_get("HEAD", TC_PREFIX TC_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.bodylen, 0);
	tc_free(&r);
	assert_int_equal(challenge_served(), served + 2);

	/* Replacing a token's value serves the new one. */
	challenge_add(TC_TOKEN, "other.value");
	tc_get("GET", TC_PREFIX TC_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.bodylen, strlen("other.value"));
	assert_memory_equal(r.body, "other.value", r.bodylen);
	tc_free(&r);
}

static void
test_not_found(void **state)
{
	unsigned long	 served;

	(void)state;
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	challenge_add("ab", "ab.thumb");
	served = challenge_served();

	tc_expect("GET", TC_PREFIX "unknownToken", 404);
	tc_expect("GET", TC_PREFIX, 404);
	tc_expect("GET", TC_PREFIX "a.b", 404);
	tc_expect("GET", TC_PREFIX "ab.", 404);
	tc_expect("GET", TC_PREFIX "ab/", 404);
	tc_expect("GET", TC_PREFIX "a/b", 404);
	tc_expect("GET", TC_PREFIX "%2e%2e", 404);
	tc_expect("GET", TC_PREFIX "%2e%2e%2fab", 404);
	tc_expect("GET", TC_PREFIX "ab%2e", 404);
	tc_expect("GET", TC_PREFIX "../acme-challenge/ab", 404);
	tc_expect("GET", "/.well-known/acme-challengeab", 404);
	tc_expect("GET", "/ab", 404);
	tc_expect("GET", "/", 404);
	assert_int_equal(challenge_served(), served);

	/* Sanity: the same server does answer the real path. */
	tc_expect("GET", TC_PREFIX "ab", 200);
	assert_int_equal(challenge_served(), served + 1);
}

static void
test_method(void **state)
{
	struct tc_response	 r;
	const char		*post;
	unsigned long		 served;

	(void)state;
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	served = challenge_served();

	post = "POST " TC_PREFIX TC_TOKEN " HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
	tc_exchange(AF_INET, post, strlen(post), &r);
	assert_int_equal(r.status, 405);
	assert_non_null(strcasestr(r.raw, "\r\nAllow: GET, HEAD\r\n"));
	tc_free(&r);
	tc_expect("PUT", TC_PREFIX TC_TOKEN, 405);
	tc_expect("DELETE", TC_PREFIX TC_TOKEN, 405);
	assert_int_equal(challenge_served(), served);
}

static void
test_remove(void **state)
{
	unsigned long	 served;

	(void)state;
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	challenge_add("second", "second.thumb");
	served = challenge_served();
	tc_expect("GET", TC_PREFIX TC_TOKEN, 200);
	challenge_remove(TC_TOKEN);
	challenge_remove(TC_TOKEN);		/* twice is harmless */
	challenge_remove("neverAdded");
	tc_expect("GET", TC_PREFIX TC_TOKEN, 404);
	tc_expect("GET", TC_PREFIX "second", 200);
	assert_int_equal(challenge_served(), served + 2);
}

/* Two orders presenting one token: it stays until both are done. */
static void
test_shared_token(void **state)
{
	(void)state;
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	challenge_remove(TC_TOKEN);
	tc_expect("GET", TC_PREFIX TC_TOKEN, 200);
	challenge_remove(TC_TOKEN);
	tc_expect("GET", TC_PREFIX TC_TOKEN, 404);
}

/* Thousands of tokens, through table growth, and removal of half. */
static void
test_many(void **state)
{
	struct tc_response	 r;
	char			 tok[32], ka[64], *path;
	int			 i;

	(void)state;
	for (i = 0; i < 5000; i++) {
		snprintf(tok, sizeof(tok), "tok%d", i);
		snprintf(ka, sizeof(ka), "tok%d.thumb", i);
		challenge_add(tok, ka);
	}
	for (i = 0; i < 5000; i += 2) {
		snprintf(tok, sizeof(tok), "tok%d", i);
		challenge_remove(tok);
	}
	for (i = 4990; i < 5000; i++) {
		xasprintf(&path, TC_PREFIX "tok%d", i);
		tc_get("GET", path, &r);
		if (i % 2 == 0) {
			assert_int_equal(r.status, 404);
		} else {
			assert_int_equal(r.status, 200);
			snprintf(ka, sizeof(ka), "tok%d.thumb", i);
			assert_int_equal(r.bodylen, strlen(ka));
			assert_memory_equal(r.body, ka, r.bodylen);
		}
		tc_free(&r);
		free(path);
	}
}

/* A 64 KiB header is never served; the server keeps serving others. */
static void
test_header_limit(void **state)
{
	struct tc_response	 r;
	unsigned long		 served;
	char			*req, *p;
	size_t			 big = 64 * 1024, len;

	(void)state;
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	served = challenge_served();

	len = big + 256;
	req = p = xmalloc(len);
	p += snprintf(p, len, "GET " TC_PREFIX TC_TOKEN " HTTP/1.1\r\n"
	    "Host: x\r\nConnection: close\r\nX-Big: ");
	memset(p, 'a', big);
	p += big;
	memcpy(p, "\r\n\r\n", 4);
	p += 4;
	tc_exchange(AF_INET, req, (size_t)(p - req), &r);
	if (r.status == 200)
		fail_msg("a 64 KiB header was served");
	assert_true(r.status == 0 || r.status >= 400);
	assert_int_equal(challenge_served(), served);
	tc_free(&r);
	free(req);

	tc_expect("GET", TC_PREFIX TC_TOKEN, 200);
}

static void
test_bind_error(void **state)
{
	struct sockaddr_in	 sin;
	socklen_t		 slen = sizeof(sin);
	char			*cause = NULL, *want;
	int			 fd, port;

	(void)state;
	/* The responder is running: a second start is refused. */
	assert_int_equal(challenge_start(tc_base, "127.0.0.1", 0, &cause), -1);
	free(cause);
	challenge_stop();
	assert_int_equal(challenge_port(), -1);

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
	port = ntohs(sin.sin_port);

	assert_int_equal(challenge_start(tc_base, "127.0.0.1", port, &cause),
	    -1);
	xasprintf(&want, "challenge_listen 127.0.0.1:%d: Address already in "
	    "use", port);
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	close(fd);

	assert_int_equal(challenge_start(tc_base, "localhost", 0, &cause), -1);
	assert_non_null(strstr(cause, "localhost"));
	free(cause);

	/* Start works again afterwards (teardown stops it). */
	assert_int_equal(challenge_start(tc_base, "127.0.0.1", 0, &cause), 0);
	assert_true(challenge_port() > 0);
}

static void
test_ipv6(void **state)
{
	struct tc_response	 r;
	const char		*req;
	char			*cause = NULL;

	(void)state;
	challenge_stop();
	if (challenge_start(tc_base, "::1", 0, &cause) != 0) {
		/* A machine without IPv6 loopback. */
		free(cause);
		assert_int_equal(challenge_start(tc_base, "127.0.0.1", 0,
		    &cause), 0);
		skip();
	}
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	req = "GET " TC_PREFIX TC_TOKEN " HTTP/1.1\r\nHost: [::1]\r\n"
	    "Connection: close\r\n\r\n";
	tc_exchange(AF_INET6, req, strlen(req), &r);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, TC_KEYAUTH, strlen(TC_KEYAUTH));
	tc_free(&r);
}

/* A request with these framing headers, for a known token. */
static int
tc_framed(const char *path, const char *headers)
{
	struct tc_response	 r;
	char			*req;
	int			 status;

	xasprintf(&req, "GET %s HTTP/1.1\r\nHost: example.com\r\n%s"
	    "Connection: close\r\n\r\n", path, headers);
	tc_exchange(AF_INET, req, strlen(req), &r);
	free(req);
	status = r.status;
	if (status == 200)
		assert_memory_equal(r.body, TC_KEYAUTH, strlen(TC_KEYAUTH));
	tc_free(&r);
	return status;
}

/*
 * Refused before the token is looked at: a %00 that would cut the token
 * short (TOKEN%00x was served as TOKEN), and two Content-Length headers
 * or one with Transfer-Encoding (libmicrohttpd 0.9.75 takes the first
 * length).  The token itself is still served.
 */
static void
test_refused(void **state)
{
	unsigned long	 served;

	(void)state;
	challenge_add(TC_TOKEN, TC_KEYAUTH);
	served = challenge_served();
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN "%00x", ""), 400);
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN "%00", ""), 400);
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN,
	    "Content-Length: 0\r\nContent-Length: 7\r\n"), 400);
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN,
	    "Content-Length: 0\r\ncontent-length: 0\r\n"), 400);
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN,
	    "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"), 400);
	assert_int_equal(challenge_served(), served);
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN,
	    "Content-Length: 0\r\n"), 200);
	assert_int_equal(tc_framed(TC_PREFIX TC_TOKEN, ""), 200);
	assert_int_equal(challenge_served(), served + 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_valid),
		cmocka_unit_test_setup_teardown(test_serve, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_not_found, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_method, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_remove, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_shared_token, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_many, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_header_limit, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_bind_error, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_ipv6, tc_setup,
		    tc_teardown),
		cmocka_unit_test_setup_teardown(test_refused, tc_setup,
		    tc_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
