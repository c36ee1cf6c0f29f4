/*
 * Drive one libmicrohttpd request through a socketpair, with no listening
 * socket and no thread: the request is written to one end, the other is
 * handed to MHD_add_connection(), and MHD_run() is called until the answer
 * has been read to its end ("Connection: close").  The handler then runs
 * exactly as in the daemon: MHD parses the request, ours parses the rest.
 */
#ifndef FUZZ_MHD_H
#define FUZZ_MHD_H

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <microhttpd.h>

#define FUZZ_MHD_ROUNDS	10000	/* MHD_run() calls before giving up */

/* Percent-encode what may not stand in a request target. */
static size_t
fuzz_mhd_encode(char *dst, const unsigned char *src, size_t len)
{
	static const char	 hex[] = "0123456789ABCDEF";
	size_t			 i, n = 0;

	for (i = 0; i < len; i++) {
		if (src[i] > 0x20 && src[i] < 0x7f && src[i] != '%') {
			dst[n++] = (char)src[i];
			continue;
		}
		dst[n++] = '%';
		dst[n++] = hex[src[i] >> 4];
		dst[n++] = hex[src[i] & 15];
	}
	return n;
}

/* Send req (len bytes) on a new connection; the answer is thrown away. */
static void
fuzz_mhd_exchange(struct MHD_Daemon *d, const char *req, size_t len)
{
	struct sockaddr_un	 sun = { .sun_family = AF_UNIX };
	char			 buf[65536];
	ssize_t			 n;
	size_t			 off = 0;
	int			 sv[2], i;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1)
		abort();
	if (MHD_add_connection(d, sv[1], (struct sockaddr *)&sun,
	    sizeof(sun)) != MHD_YES)
		abort();
	for (i = 0; i < FUZZ_MHD_ROUNDS; i++) {
		if (off < len) {
			n = write(sv[0], req + off, len - off);
			if (n > 0)
				off += (size_t)n;
		}
		MHD_run(d);
		n = read(sv[0], buf, sizeof(buf));
		if (n == 0)
			break;
		if (n == -1 && errno != EAGAIN)
			break;
	}
	if (i == FUZZ_MHD_ROUNDS)
		abort();	/* the answer never ended: a hang */
	close(sv[0]);
	MHD_run(d);
}

#endif /* FUZZ_MHD_H */
