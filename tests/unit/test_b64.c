/*
 * base64url (RFC 4648 section 5, no padding) from util.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "sidecar.h"

/* RFC 4648 section 10, with the padding dropped. */
static const struct {
	const char	*plain;
	const char	*encoded;
} b64_vectors[] = {
	{ "", "" },
	{ "f", "Zg" },
	{ "fo", "Zm8" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg" },
	{ "fooba", "Zm9vYmE" },
	{ "foobar", "Zm9vYmFy" },
};

static void
test_b64_rfc4648(void **state)
{
	unsigned char	*dec;
	char		*enc;
	size_t		 i, len;

	(void)state;
	for (i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		enc = b64url_encode(b64_vectors[i].plain,
		    strlen(b64_vectors[i].plain));
		assert_string_equal(enc, b64_vectors[i].encoded);
		free(enc);

		assert_int_equal(b64url_decode(b64_vectors[i].encoded, &dec,
		    &len), 0);
		assert_int_equal(len, strlen(b64_vectors[i].plain));
		assert_memory_equal(dec, b64_vectors[i].plain, len);
		free(dec);
	}
}

/* The two characters that differ from standard base64: '-' and '_'. */
static void
test_b64_url_alphabet(void **state)
{
	static const unsigned char	 a[] = { 0xfb, 0xef, 0xbe };
	static const unsigned char	 b[] = { 0xff, 0xff, 0xff };
	static const unsigned char	 c[] = { 0xfb, 0xff };
	unsigned char			*dec;
	char				*enc;
	size_t				 len;

	(void)state;
	enc = b64url_encode(a, sizeof(a));
	assert_string_equal(enc, "----");
	free(enc);
	enc = b64url_encode(b, sizeof(b));
	assert_string_equal(enc, "____");
	free(enc);
	enc = b64url_encode(c, sizeof(c));
	assert_string_equal(enc, "-_8");
	free(enc);

	assert_int_equal(b64url_decode("-_8", &dec, &len), 0);
	assert_int_equal(len, sizeof(c));
	assert_memory_equal(dec, c, sizeof(c));
	free(dec);
}

static void
test_b64_round_trip(void **state)
{
	unsigned char	 buf[64], *dec;
	char		*enc;
	size_t		 n, len, round;

	(void)state;
	for (round = 0; round < 20; round++) {
		for (n = 0; n <= sizeof(buf); n++) {
			assert_int_equal(RAND_bytes(buf, sizeof(buf)), 1);
			enc = b64url_encode(buf, n);
			/* Unpadded: ceil(4n / 3) characters. */
			assert_int_equal(strlen(enc), (4 * n + 2) / 3);
			assert_null(strpbrk(enc, "+/="));
			assert_int_equal(b64url_decode(enc, &dec, &len), 0);
			assert_int_equal(len, n);
			if (n > 0)
				assert_memory_equal(dec, buf, n);
			free(dec);
			free(enc);
		}
	}
}

static void
test_b64_reject(void **state)
{
	static const char *const bad[] = {
		"Zg==",		/* padding is not base64url */
		"Zm9vYg=",
		"Zm+v",		/* standard alphabet */
		"Zm/v",
		"Zm9v Yg",	/* whitespace */
		"Zm9v\nYg",
		"Zm9v.Yg",
		"Z\xc3\xa9g",	/* non-ASCII */
		"Z",		/* lengths that no input encodes to */
		"Zm9vY",
		"Zm9vYmFyZ",
		"Zh",		/* non-zero trailing bits: canonical is "Zg" */
		"Zm9",		/* canonical is "Zm8" */
		"Zm9vYh",
		"-_9",		/* canonical is "-_8" */
	};
	unsigned char	*dec = NULL;
	size_t		 i, len;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (b64url_decode(bad[i], &dec, &len) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_rfc4648),
		cmocka_unit_test(test_b64_url_alphabet),
		cmocka_unit_test(test_b64_round_trip),
		cmocka_unit_test(test_b64_reject),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
