/*
 * cluster_seal.c: what a node sees when it opens a value from Redis:
 * its own values, another fleet's, damaged ones and moved ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar.h"

static const char	 seal_plain[] = "-----BEGIN PRIVATE KEY-----\nMIG...\n";

static void
seal_key(const char *secret, unsigned char key[CLUSTER_KEY_LEN])
{
	assert_int_equal(cluster_seal_derive(secret, strlen(secret), key), 0);
}

/* Open sealed under name; on failure, return the cause. */
static char *
seal_open(const unsigned char *key, const char *name, const char *sealed,
    int want_ok)
{
	unsigned char	*plain = NULL;
	size_t		 len = 1;
	char		*cause = NULL;
	int		 rc;

	rc = cluster_unseal(key, name, sealed, &plain, &len, &cause);
	if (want_ok) {
		if (rc != 0)
			fail_msg("unseal: %s", cause);
		assert_int_equal(len, strlen(seal_plain));
		assert_memory_equal(plain, seal_plain, len);
		assert_int_equal(plain[len], '\0');
		free(plain);
		return NULL;
	}
	assert_int_equal(rc, -1);
	assert_null(plain);
	assert_int_equal(len, 0);
	assert_non_null(cause);
	return cause;
}

static void
test_seal_round_trip(void **state)
{
	unsigned char	 key[CLUSTER_KEY_LEN];
	char		*a, *b, id[CLUSTER_KEY_ID_LEN + 1];

	(void)state;
	seal_key("0123456789abcdef0123456789abcdef", key);
	a = cluster_seal(key, "fleet:cert:www", seal_plain, strlen(seal_plain));
	b = cluster_seal(key, "fleet:cert:www", seal_plain, strlen(seal_plain));
	/* A fresh nonce each time: the same key never gives the same text. */
	assert_string_not_equal(a, b);
	cluster_seal_key_id(key, id);
	assert_int_equal(strlen(id), CLUSTER_KEY_ID_LEN);
	assert_true(strncmp(a, "s1.", 3) == 0);
	assert_true(strncmp(a + 3, id, CLUSTER_KEY_ID_LEN) == 0);
	/* Nothing of the key shows through. */
	assert_null(strstr(a, "PRIVATE"));
	seal_open(key, "fleet:cert:www", a, 1);
	seal_open(key, "fleet:cert:www", b, 1);
	free(a);
	free(b);

	/* The empty value seals too. */
	a = cluster_seal(key, "n", "", 0);
	{
		unsigned char	*p = NULL;
		size_t		 len = 9;
		char		*cause = NULL;

		assert_int_equal(cluster_unseal(key, "n", a, &p, &len, &cause),
		    0);
		assert_int_equal(len, 0);
		free(p);
	}
	free(a);
}

static void
test_seal_refused(void **state)
{
	unsigned char	 key[CLUSTER_KEY_LEN], other[CLUSTER_KEY_LEN];
	char		*a, *cause, *bad, id[CLUSTER_KEY_ID_LEN + 1], *want;
	size_t		 len;

	(void)state;
	seal_key("0123456789abcdef0123456789abcdef", key);
	seal_key("another fleet's secret, 32 bytes or more", other);
	a = cluster_seal(key, "fleet:cert:www", seal_plain, strlen(seal_plain));

	/* Another secret_file: said as such, with both key ids. */
	cause = seal_open(other, "fleet:cert:www", a, 0);
	cluster_seal_key_id(other, id);
	xasprintf(&want, "sealed with another secret_file (key id %.16s; this "
	    "node's is %s)", a + 3, id);
	assert_string_equal(cause, want);
	free(want);
	free(cause);

	/* Moved to another name: the associated data does not match. */
	cause = seal_open(key, "fleet:cert:mail", a, 0);
	assert_string_equal(cause, "a sealed value that does not open: "
	    "damaged, or stored under another name than \"fleet:cert:mail\"");
	free(cause);

	/* One character changed, anywhere in the box. */
	len = strlen(a);
	bad = xstrdup(a);
	bad[len - 5] = bad[len - 5] == 'A' ? 'B' : 'A';
	cause = seal_open(key, "fleet:cert:www", bad, 0);
	assert_non_null(strstr(cause, "does not open"));
	free(cause);

	/* Truncated: shorter than a nonce and a tag. */
	bad[3 + CLUSTER_KEY_ID_LEN + 1 + 10] = '\0';
	cause = seal_open(key, "fleet:cert:www", bad, 0);
	assert_string_equal(cause, "a sealed value that is truncated or not "
	    "base64url");
	free(cause);
	free(bad);

	cause = seal_open(key, "n", "-----BEGIN PRIVATE KEY-----", 0);
	assert_string_equal(cause, "not a sealed value");
	free(cause);
	cause = seal_open(key, "n", "s1.abc", 0);
	assert_string_equal(cause, "a sealed value without its key id");
	free(cause);
	cause = seal_open(key, "n", "", 0);
	assert_string_equal(cause, "not a sealed value");
	free(cause);
	free(a);
}

/* The derivation is HKDF: fixed for a secret, different for another. */
static void
test_seal_derive(void **state)
{
	unsigned char	 a[CLUSTER_KEY_LEN], b[CLUSTER_KEY_LEN];
	unsigned char	 c[CLUSTER_KEY_LEN];

	(void)state;
	seal_key("0123456789abcdef0123456789abcdef", a);
	seal_key("0123456789abcdef0123456789abcdef", b);
	seal_key("0123456789abcdef0123456789abcdeF", c);
	assert_memory_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, c, sizeof(a));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seal_round_trip),
		cmocka_unit_test(test_seal_refused),
		cmocka_unit_test(test_seal_derive),
	};

	log_init(0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
