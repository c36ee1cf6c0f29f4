/*
 * What the module reads of a raw ClientHello for tls-alpn-01 (RFC 8737):
 * whether its ALPN extension offers "acme-tls/1", and the host name of
 * its SNI extension.  OpenSSL has parsed neither when the ClientHello
 * callback runs, so these read the extensions' bytes as the client sent
 * them (SSL_client_hello_get0_ext()): outside input, every length
 * checked against what is left.  No nginx types, so that
 * tests/fuzz/fuzz_shm.c runs them as they are.
 */
#ifndef NGX_HTTP_ACME_HELLO_H
#define NGX_HTTP_ACME_HELLO_H

#include <stddef.h>
#include <string.h>

/* The protocol of RFC 8737 section 6.2. */
#define ACME_HELLO_ALPN		"acme-tls/1"

/* A host name in SNI is at most 255 bytes (RFC 6066 3, RFC 1035 2.3.4). */
#define ACME_HELLO_SNI_MAX	255

/* A 16-bit length at p, big-endian as TLS writes it. */
static inline size_t
acme_hello_u16(const unsigned char *p)
{
	return (size_t)p[0] << 8 | p[1];
}

/*
 * Whether the ALPN extension (RFC 7301 3.1: a 16-bit length, then
 * protocol names each with an 8-bit length) is well formed and offers
 * acme-tls/1.
 */
static inline int
acme_hello_offers_acme_tls(const unsigned char *ext, size_t len)
{
	const size_t	 want = sizeof(ACME_HELLO_ALPN) - 1;
	size_t		 n, i;
	int		 found = 0;

	if (len < 2 || acme_hello_u16(ext) != len - 2)
		return 0;
	for (i = 2; i < len; i += n) {
		n = ext[i++];
		if (n == 0 || n > len - i)
			return 0;
		if (n == want && memcmp(ext + i, ACME_HELLO_ALPN, want) == 0)
			found = 1;
	}
	return found;
}

/*
 * The host name of the SNI extension (RFC 6066 3: a 16-bit list length,
 * then entries of an 8-bit type and a 16-bit length), in lower case and
 * NUL-terminated in out (ACME_HELLO_SNI_MAX + 1 bytes).  Returns its
 * length, or 0 when the extension is malformed or names no host of
 * letters, digits, '-', '_' and '.' (nothing the sidecar publishes).
 */
static inline size_t
acme_hello_sni(const unsigned char *ext, size_t len, char *out)
{
	size_t		 i, n, k;
	unsigned char	 c;

	if (len < 2 || acme_hello_u16(ext) != len - 2)
		return 0;
	for (i = 2; len - i >= 3; i += n) {
		n = acme_hello_u16(ext + i + 1);
		if (n > len - i - 3)
			return 0;
		i += 3;
		if (ext[i - 3] != 0)	/* not host_name */
			continue;
		if (n == 0 || n > ACME_HELLO_SNI_MAX)
			return 0;
		for (k = 0; k < n; k++) {
			c = ext[i + k];
			if (c >= 'A' && c <= 'Z')
				c += 'a' - 'A';
			else if (!((c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
			    c == '.'))
				return 0;
			out[k] = (char)c;
		}
		out[n] = '\0';
		return n;
	}
	return 0;
}

#endif /* NGX_HTTP_ACME_HELLO_H */
