/*
 * The HTTP-01 responder (src/challenge.c): challenge_token_valid(), the
 * token table and the request handler's URL matching.
 *
 * challenge.c is #included so that its static handler,
 * challenge_request(), serves a libmicrohttpd daemon of our own with the
 * options of challenge_start() but no listening socket; the request goes
 * through a socketpair (fuzz_mhd.h).  A few hundred tokens are registered
 * so that the table has grown and lookups walk real chains.
 *
 * Input: byte 0 picks the method (bits 0-1), whether the rest, as a
 * token, is registered for this run and removed after it (bit 4), and
 * the framing headers (bits 5-6: none, Content-Length twice, with
 * Transfer-Encoding, or once; the first two are refused by
 * mhd_guard_refuse()); the rest is the path, any byte, percent-encoded
 * on the wire (%00 goes through mhd_guard_unescape()).  The daemon's
 * connection callbacks run too: each connection has its guard.
 */
#include "../../src/challenge.c"

#include "fuzz.h"
#include "fuzz_mhd.h"

#define FUZZ_TOKENS	300

static struct MHD_Daemon	*fuzz_daemon;
static struct event_base	*fuzz_base;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char	 token[32];
	int	 i;

	(void)argc;
	(void)argv;
	fuzz_quiet();
	log_init(0);
	/* The guards' deadlines are armed, never run: no loop runs. */
	if ((fuzz_base = event_base_new()) == NULL)
		abort();
	challenge.loop.lm_base = fuzz_base;
	challenge.loop.lm_name = "challenge";
	for (i = 0; i < FUZZ_TOKENS; i++) {
		snprintf(token, sizeof(token), "token-%d_x", i);
		challenge_add(token, "keyauth.thumbprint");
	}
	fuzz_daemon = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL,
	    challenge_request, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, challenge_completed, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, challenge_notify, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, mhd_guard_unescape, NULL,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CHALLENGE_MAX_CONNS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CHALLENGE_CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CHALLENGE_MEMORY_LIMIT,
	    MHD_OPTION_END);
	if (fuzz_daemon == NULL)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = { "GET", "HEAD", "POST", "PUT" };
	static const char *const framing[] = {
		"",
		"Content-Length: 0\r\nContent-Length: 4\r\n",
		"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
		"Content-Length: 0\r\n"
	};
	char		*req, *token;
	size_t		 n, len;
	int		 registered = 0;

	if (size < 1 || size > CHALLENGE_MEMORY_LIMIT)
		return 0;
	len = size - 1;
	token = xmalloc(len + 1);
	memcpy(token, data + 1, len);
	token[len] = '\0';
	if (challenge_token_valid(token) && (data[0] & 0x10)) {
		challenge_add(token, "fuzz.keyauth");
		registered = 1;
	}
	req = xmalloc(len * 3 + 256);
	n = (size_t)sprintf(req, "%s ", methods[data[0] & 3]);
	n += fuzz_mhd_encode(req + n, data + 1, len);
	n += (size_t)sprintf(req + n, " HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n%s\r\n", framing[(data[0] >> 5) & 3]);
	fuzz_mhd_exchange(fuzz_daemon, req, n);
	if (registered)
		challenge_remove(token);
	free(req);
	free(token);
	return 0;
}
