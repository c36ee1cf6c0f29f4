/*
 * Allocation that cannot fail, base64url (RFC 4648 section 5, no padding)
 * and the small numeric helpers the scheduler needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "sidecar.h"

void *
xmalloc(size_t size)
{
	void	*p;

	if (size == 0)
		fatalx("xmalloc: zero size");
	if ((p = malloc(size)) == NULL)
		fatal("xmalloc: allocating %zu bytes", size);
	return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void	*p;

	if (nmemb == 0 || size == 0)
		fatalx("xcalloc: zero size");
	if ((p = calloc(nmemb, size)) == NULL)
		fatal("xcalloc: allocating %zu * %zu bytes", nmemb, size);
	return p;
}

void *
xreallocarray(void *ptr, size_t nmemb, size_t size)
{
	void	*p;

	if (nmemb == 0 || size == 0)
		fatalx("xreallocarray: zero size");
	if (nmemb > SIZE_MAX / size)
		fatalx("xreallocarray: %zu * %zu overflows", nmemb, size);
	if ((p = realloc(ptr, nmemb * size)) == NULL)
		fatal("xreallocarray: allocating %zu * %zu bytes", nmemb, size);
	return p;
}

char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		fatal("xstrdup");
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char	*p;

	if ((p = strndup(s, n)) == NULL)
		fatal("xstrndup");
	return p;
}

/*
 * A copy of s that is UTF-8: s itself when it is, else with '?' for each
 * byte outside ASCII.  Text from outside (a hook's output, a header)
 * goes into JSON (the API, the event feed), whose strings must be
 * UTF-8: jansson refuses anything else, so it is checked by jansson.
 */
char *
util_utf8_copy(const char *s)
{
	json_t	*j;
	char	*copy, *c;

	if ((j = json_string(s)) != NULL) {
		json_decref(j);
		return xstrdup(s);
	}
	copy = xstrdup(s);
	for (c = copy; *c != '\0'; c++)
		if ((unsigned char)*c >= 0x80)
			*c = '?';
	return copy;
}

int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vasprintf(ret, fmt, ap);
	va_end(ap);
	if (n == -1)
		fatal("xasprintf");
	return n;
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *
b64url_encode(const void *data, size_t len)
{
	const unsigned char	*in = data;
	char			*out, *p;
	size_t			 i;
	uint32_t		 v;

	out = p = xmalloc(len / 3 * 4 + 5);
	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*p++ = b64url_alphabet[v >> 18 & 63];
		*p++ = b64url_alphabet[v >> 12 & 63];
		*p++ = b64url_alphabet[v >> 6 & 63];
		*p++ = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		*p++ = b64url_alphabet[v >> 18 & 63];
		*p++ = b64url_alphabet[v >> 12 & 63];
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*p++ = b64url_alphabet[v >> 18 & 63];
		*p++ = b64url_alphabet[v >> 12 & 63];
		*p++ = b64url_alphabet[v >> 6 & 63];
	}
	*p = '\0';
	return out;
}

static int
b64url_value(unsigned char c)
{
	const char	*p;

	if (c == '\0' || (p = strchr(b64url_alphabet, c)) == NULL)
		return -1;
	return (int)(p - b64url_alphabet);
}

/*
 * Decode unpadded base64url.  Returns 0 and a buffer the caller frees, or
 * -1 for a character outside the alphabet or an impossible length.
 */
int
b64url_decode(const char *s, unsigned char **out, size_t *outlen)
{
	size_t		 len = strlen(s), i, n = 0;
	unsigned char	*buf;
	uint32_t	 v = 0;
	int		 d, bits = 0;

	if (len % 4 == 1)
		return -1;
	buf = xmalloc(len / 4 * 3 + 3);
	for (i = 0; i < len; i++) {
		if ((d = b64url_value((unsigned char)s[i])) == -1) {
			free(buf);
			return -1;
		}
		v = v << 6 | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[n++] = (unsigned char)(v >> bits);
		}
	}
	/* Leftover bits must be zero, or the encoding is not canonical. */
	if ((v & ((1u << bits) - 1)) != 0) {
		free(buf);
		return -1;
	}
	*out = buf;
	*outlen = n;
	return 0;
}

double
util_random_unit(void)
{
	uint64_t	 r;

	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		fatalx("RAND_bytes failed");
	return (double)(r >> 11) / (double)(1ULL << 53);
}

/* v scaled by a random factor in [1 - frac, 1 + frac). */
double
util_jitter(double v, double frac)
{
	return v * (1.0 - frac + 2.0 * frac * util_random_unit());
}

time_t
util_now(void)
{
	return time(NULL);
}

/* Seconds on a clock that never jumps, for pacing and durations. */
double
util_monotonic(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* RFC 3339 in UTC: "2026-11-28T21:33:18Z". */
void
util_time_rfc3339(time_t t, char *buf, size_t len)
{
	struct tm	 tm;

	gmtime_r(&t, &tm);
	if (strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && len > 0)
		buf[0] = '\0';
}

/*
 * FNV-1a (64 bits) of a string, for the daemon's in-memory tables.  Not
 * for keys an attacker chooses: the tables hold only what we inserted.
 */
uint64_t
util_hash(const char *s)
{
	uint64_t	 h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}
