/*
 * proto/acme_ident.h: the identifier, key type and id rules that the
 * daemon and the nginx module share.  Included alone, as the module
 * includes it, so the header must stand on its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "acme_ident.h"

static int
ident_key(const char *s)
{
	return acme_key_parse(s, strlen(s));
}

static void
test_ident_key_types(void **state)
{
	static const struct {
		const char	*word;
		int		 type;
		const char	*suffix;
		int		 family;
	} k[] = {
		{ "ecdsa:256", ACME_KEY_ECDSA_256, "ecdsa256", ACME_KEY_FAMILY_EC },
		{ "ecdsa:384", ACME_KEY_ECDSA_384, "ecdsa384", ACME_KEY_FAMILY_EC },
		{ "ecdsa:521", ACME_KEY_ECDSA_521, "ecdsa521", ACME_KEY_FAMILY_EC },
		{ "rsa:2048", ACME_KEY_RSA_2048, "rsa2048", ACME_KEY_FAMILY_RSA },
		{ "rsa:3072", ACME_KEY_RSA_3072, "rsa3072", ACME_KEY_FAMILY_RSA },
		{ "rsa:4096", ACME_KEY_RSA_4096, "rsa4096", ACME_KEY_FAMILY_RSA },
	};
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		assert_int_equal(ident_key(k[i].word), k[i].type);
		assert_string_equal(acme_key_desc(k[i].type)->kd_name,
		    k[i].word);
		assert_string_equal(acme_key_desc(k[i].type)->kd_suffix,
		    k[i].suffix);
		assert_int_equal(acme_key_desc(k[i].type)->kd_family,
		    k[i].family);
		assert_true(strlen(k[i].suffix) <= ACME_IDENT_SUFFIX_MAX);
	}
	/* nginx-acme's sizeless names and its default sizes. */
	assert_int_equal(ident_key("ecdsa"), ACME_KEY_ECDSA_256);
	assert_int_equal(ident_key("rsa"), ACME_KEY_RSA_2048);
	assert_int_equal(ACME_KEY_DEFAULT, ACME_KEY_ECDSA_256);
	assert_int_equal(ident_key("RSA"), -1);
	assert_int_equal(ident_key("rsa:1024"), -1);
	assert_int_equal(ident_key("rsa:"), -1);
	assert_int_equal(ident_key("ecdsa256"), -1);
	assert_int_equal(ident_key(""), -1);
	/* The length counts, not a NUL: "rsa:2048" cut to "rsa". */
	assert_int_equal(acme_key_parse("rsa:2048", 3), ACME_KEY_RSA_2048);
	assert_int_equal(acme_key_parse("ecdsa:384", 7), -1);
}

/* word must read as want (NULL: refused with status). */
static void
ident_check(const char *word, const char *want, const char *want2,
    enum acme_ident_status status)
{
	struct acme_ident_words	 w;

	assert_int_equal(acme_ident_parse(word, strlen(word), &w), status);
	if (status != ACME_IDENT_OK && status != ACME_IDENT_WILDCARD) {
		assert_int_equal(w.iw_n, 0);
		return;
	}
	assert_int_equal(w.iw_n, want2 != NULL ? 2 : 1);
	assert_string_equal(w.iw_word[0], want);
	assert_int_equal(w.iw_len[0], (int)strlen(want));
	if (want2 != NULL) {
		assert_string_equal(w.iw_word[1], want2);
		assert_int_equal(w.iw_len[1], (int)strlen(want2));
	}
}

static void
test_ident_names(void **state)
{
	struct acme_ident_words	 w;
	char			 label[64], name[256], out[ACME_IDENT_MAX + 1];

	(void)state;
	ident_check("Example.COM", "example.com", NULL, ACME_IDENT_OK);
	ident_check("a.test.", "a.test", NULL, ACME_IDENT_OK);
	ident_check("a-b.x1.test", "a-b.x1.test", NULL, ACME_IDENT_OK);
	ident_check(".Example.com.", "example.com", "www.example.com",
	    ACME_IDENT_OK);
	ident_check("a.test..", NULL, NULL, ACME_IDENT_INVALID);
	ident_check(".", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("a..test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("-a.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("a-.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("a_b.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("a.123", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*.A.test.", "*.a.test", NULL, ACME_IDENT_WILDCARD);
	ident_check("a.*.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*x.a.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*.*.a.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("www.a.*", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*.", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("*.a_b.test", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("~^www\\d+$", NULL, NULL, ACME_IDENT_REGEX);
	ident_check(".192.0.2.1", NULL, NULL, ACME_IDENT_INVALID);

	/* A label of 63 bytes, not 64. */
	memset(label, 'a', 63);
	label[63] = '\0';
	snprintf(name, sizeof(name), "%s.test", label);
	ident_check(name, name, NULL, ACME_IDENT_OK);
	snprintf(name, sizeof(name), "a%s.test", label);
	ident_check(name, NULL, NULL, ACME_IDENT_INVALID);

	/* 253 bytes in all, one more with the trailing dot. */
	memset(name, 'a', 253);
	for (size_t i = 63; i < 253; i += 64)
		name[i] = '.';
	name[253] = '\0';
	ident_check(name, name, NULL, ACME_IDENT_OK);
	name[253] = '.';
	name[254] = '\0';
	assert_int_equal(acme_ident_dns(name, 254, out), 253);
	name[253] = 'a';
	ident_check(name, NULL, NULL, ACME_IDENT_INVALID);
	/* ".NAME": www.NAME must fit in 253 bytes too. */
	name[0] = '.';
	name[250] = '\0';
	assert_int_equal(acme_ident_parse(name, 250, &w), ACME_IDENT_OK);
	assert_int_equal(w.iw_len[1], 253);
	name[250] = 'a';
	name[251] = '\0';
	ident_check(name, NULL, NULL, ACME_IDENT_INVALID);
	/* "*.NAME": 253 bytes with the "*.", no byte written past. */
	memset(name, 'a', 254);
	for (size_t i = 63; i < 254; i += 64)
		name[i] = '.';
	name[0] = '*';
	name[1] = '.';
	name[253] = '\0';
	ident_check(name, name, NULL, ACME_IDENT_WILDCARD);
	name[253] = 'a';
	name[254] = '\0';
	ident_check(name, NULL, NULL, ACME_IDENT_INVALID);
	name[253] = '.';
	assert_int_equal(acme_ident_parse(name, 254, &w), ACME_IDENT_WILDCARD);
	assert_int_equal(w.iw_len[0], 253);
	assert_true(acme_ident_is_wildcard(w.iw_word[0]));
	assert_false(acme_ident_is_wildcard("a.test"));
}

static void
test_ident_addresses(void **state)
{
	(void)state;
	ident_check("192.0.2.1", "192.0.2.1", NULL, ACME_IDENT_OK);
	ident_check("2001:DB8:0:0:0:0:0:1", "2001:db8::1", NULL,
	    ACME_IDENT_OK);
	ident_check("[2001:db8::1]", "2001:db8::1", NULL, ACME_IDENT_OK);
	ident_check("::1", "::1", NULL, ACME_IDENT_OK);
	ident_check("[::1", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("192.0.2.256", NULL, NULL, ACME_IDENT_INVALID);
	ident_check("2001:db8::1::2", NULL, NULL, ACME_IDENT_INVALID);
	assert_true(acme_ident_is_ip("192.0.2.1"));
	assert_true(acme_ident_is_ip("2001:db8::1"));
	assert_false(acme_ident_is_ip("a.test"));
	assert_false(acme_ident_is_ip("[::1]"));
}

static void
test_ident_cert_id(void **state)
{
	char	 id[ACME_IDENT_ID_MAX + 1], name[ACME_IDENT_MAX + 1];

	(void)state;
	assert_int_equal(acme_ident_cert_id("a.test", 6, ACME_KEY_ECDSA_256,
	    id, sizeof(id)), 6);
	assert_string_equal(id, "a.test");
	assert_int_equal(acme_ident_cert_id("a.test", 6, ACME_KEY_RSA_2048,
	    id, sizeof(id)), 14);
	assert_string_equal(id, "a.test_rsa2048");
	assert_int_equal(acme_ident_cert_id("2001:db8::1", 11,
	    ACME_KEY_ECDSA_384, id, sizeof(id)), 20);
	assert_string_equal(id, "2001:db8::1_ecdsa384");
	/* Only the given length of the first identifier counts. */
	assert_int_equal(acme_ident_cert_id("a.test.more", 6,
	    ACME_KEY_RSA_4096, id, sizeof(id)), 14);
	assert_string_equal(id, "a.test_rsa4096");
	/* A wildcard's "*" is "_" in its id. */
	assert_int_equal(acme_ident_cert_id("*.a.test", 8, ACME_KEY_ECDSA_256,
	    id, sizeof(id)), 8);
	assert_string_equal(id, "_.a.test");
	assert_int_equal(acme_ident_cert_id("*.a.test", 8, ACME_KEY_RSA_2048,
	    id, sizeof(id)), 16);
	assert_string_equal(id, "_.a.test_rsa2048");
	/* The longest name with the longest suffix fits the buffer. */
	memset(name, 'a', ACME_IDENT_MAX);
	assert_int_equal(acme_ident_cert_id(name, ACME_IDENT_MAX,
	    ACME_KEY_ECDSA_521, id, sizeof(id)), ACME_IDENT_ID_MAX);
	/* One byte short: refused, never cut. */
	assert_int_equal(acme_ident_cert_id("a.test", 6, ACME_KEY_RSA_2048,
	    id, 14), -1);
	assert_int_equal(acme_ident_cert_id("a.test", 6, ACME_KEY_ECDSA_256,
	    id, 6), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ident_key_types),
		cmocka_unit_test(test_ident_names),
		cmocka_unit_test(test_ident_addresses),
		cmocka_unit_test(test_ident_cert_id),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
