/*
 * jws.c: flattened JWS as RFC 8555 6.2 sends it, verified independently
 * with OpenSSL, and the 7.3.4 externalAccountBinding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "sidecar.h"

static const struct {
	enum key_type	 type;
	const char	*alg;
	const char	*md;
	size_t		 size;		/* R and S, 0 for RSA */
} jws_cases[] = {
	{ KEY_ECDSA_256, "ES256", "SHA256", 32 },
	{ KEY_ECDSA_384, "ES384", "SHA384", 48 },
	{ KEY_ECDSA_521, "ES512", "SHA512", 66 },
	{ KEY_RSA_2048, "RS256", "SHA256", 0 },
};
#define NCASES	(sizeof(jws_cases) / sizeof(jws_cases[0]))

static EVP_PKEY	*jws_keys[NCASES];

#define KID	"https://ca.example/acme/acct/evOfKhNU60wg"
#define NONCE	"Q_s3MWoqT05TrdkM2MTDcw"
#define URL	"https://ca.example/acme/new-order"

static int
setup(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < NCASES; i++) {
		if ((jws_keys[i] = keys_generate(jws_cases[i].type)) == NULL)
			return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < NCASES; i++)
		EVP_PKEY_free(jws_keys[i]);
	return 0;
}

/* Decode base64url that must hold JSON. */
static json_t *
b64_json(const char *s)
{
	unsigned char	*buf;
	size_t		 len;
	json_t		*j;
	json_error_t	 err;

	assert_int_equal(b64url_decode(s, &buf, &len), 0);
	j = json_loadb((const char *)buf, len, 0, &err);
	if (j == NULL)
		fail_msg("bad JSON: %s", err.text);
	free(buf);
	return j;
}

/* R || S back to the DER that EVP_DigestVerify expects. */
static unsigned char *
raw_to_der(const unsigned char *raw, size_t size, size_t *derlen)
{
	ECDSA_SIG	*sig;
	BIGNUM		*r, *s;
	unsigned char	*der = NULL;
	int		 len;

	assert_non_null(sig = ECDSA_SIG_new());
	r = BN_bin2bn(raw, (int)size, NULL);
	s = BN_bin2bn(raw + size, (int)size, NULL);
	assert_int_equal(ECDSA_SIG_set0(sig, r, s), 1);
	assert_true((len = i2d_ECDSA_SIG(sig, &der)) > 0);
	ECDSA_SIG_free(sig);
	*derlen = (size_t)len;
	return der;
}

/* Verify signature over "prot.payload"; returns 1 if it verifies. */
static int
verify(EVP_PKEY *key, size_t c, const char *prot, const char *payload,
    const char *sig64)
{
	EVP_MD_CTX	*ctx;
	unsigned char	*sig, *der = NULL;
	size_t		 siglen, derlen;
	char		*input;
	int		 ok;

	assert_int_equal(b64url_decode(sig64, &sig, &siglen), 0);
	if (jws_cases[c].size != 0) {
		/* RFC 7518 3.4: exactly twice the field size. */
		assert_int_equal(siglen, 2 * jws_cases[c].size);
		der = raw_to_der(sig, jws_cases[c].size, &derlen);
	} else {
		assert_int_equal(siglen, (size_t)EVP_PKEY_get_size(key));
		der = sig;
		derlen = siglen;
		sig = NULL;
	}
	xasprintf(&input, "%s.%s", prot, payload);
	assert_non_null(ctx = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit_ex(ctx, NULL, jws_cases[c].md,
	    NULL, NULL, key, NULL), 1);
	ok = EVP_DigestVerify(ctx, der, derlen, (unsigned char *)input,
	    strlen(input));
	EVP_MD_CTX_free(ctx);
	free(input);
	free(sig);
	OPENSSL_free(der);
	return ok == 1;
}

/*
 * Sign, parse the result and check everything a server would: the
 * header members, the payload, and the signature.
 */
static void
check_sign(size_t c, const char *kid, const char *payload)
{
	EVP_PKEY	*key = jws_keys[c];
	json_t		*jws, *hdr, *jwk;
	json_error_t	 err;
	const char	*prot, *body, *sig;
	unsigned char	*dec;
	size_t		 len;
	char		*text;

	assert_string_equal(jws_alg(key), jws_cases[c].alg);
	assert_non_null(text = jws_sign(key, kid, NONCE, URL, payload));
	if ((jws = json_loads(text, 0, &err)) == NULL)
		fail_msg("jws_sign output is not JSON: %s", err.text);
	assert_int_equal(json_object_size(jws), 3);
	assert_non_null(prot = json_string_value(json_object_get(jws,
	    "protected")));
	assert_non_null(body = json_string_value(json_object_get(jws,
	    "payload")));
	assert_non_null(sig = json_string_value(json_object_get(jws,
	    "signature")));

	hdr = b64_json(prot);
	assert_string_equal(json_string_value(json_object_get(hdr, "alg")),
	    jws_cases[c].alg);
	assert_string_equal(json_string_value(json_object_get(hdr, "nonce")),
	    NONCE);
	assert_string_equal(json_string_value(json_object_get(hdr, "url")),
	    URL);
	if (kid != NULL) {
		/* RFC 8555 6.2: "kid" and "jwk" are mutually exclusive. */
		assert_int_equal(json_object_size(hdr), 4);
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "kid")), kid);
		assert_null(json_object_get(hdr, "jwk"));
	} else {
		assert_int_equal(json_object_size(hdr), 4);
		assert_null(json_object_get(hdr, "kid"));
		jwk = keys_jwk(key);
		assert_true(json_equal(json_object_get(hdr, "jwk"), jwk));
		json_decref(jwk);
	}

	if (payload == NULL) {
		assert_string_equal(body, "");
	} else {
		assert_int_equal(b64url_decode(body, &dec, &len), 0);
		assert_int_equal(len, strlen(payload));
		assert_memory_equal(dec, payload, len);
		free(dec);
	}

	assert_true(verify(key, c, prot, body, sig));
	/* The check can fail: a changed payload or header must not verify. */
	assert_false(verify(key, c, prot, "eyJ4IjoxfQ", sig));
	assert_false(verify(key, c, "eyJ4IjoxfQ", body, sig));

	json_decref(hdr);
	json_decref(jws);
	free(text);
}

static void
test_jws_kid(void **state)
{
	size_t	 c;

	(void)state;
	for (c = 0; c < NCASES; c++)
		check_sign(c, KID, "{\"identifiers\":[{\"type\":\"dns\","
		    "\"value\":\"example.com\"}]}");
}

/*
 * The kid header is written without jansson when its values need no
 * escaping: the same text json_dumps() gives.  Values that do need it
 * still come out as JSON that says them.
 */
static void
test_jws_kid_text(void **state)
{
	const char	*kids[] = {
		KID, "https://ca.test/acct/\"q\\1\x01\xc3\xa9"
	};
	json_t		*jws, *want, *hdr;
	unsigned char	*dec;
	char		*text, *want_text;
	size_t		 i, len;

	(void)state;
	for (i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
		assert_non_null(text = jws_sign(jws_keys[0], kids[i], NONCE,
		    URL, NULL));
		assert_non_null(jws = json_loads(text, 0, NULL));
		assert_int_equal(b64url_decode(json_string_value(
		    json_object_get(jws, "protected")), &dec, &len), 0);
		assert_non_null(want = json_pack("{s:s, s:s, s:s, s:s}",
		    "alg", jws_cases[0].alg, "kid", kids[i], "nonce", NONCE,
		    "url", URL));
		assert_non_null(want_text = json_dumps(want, JSON_COMPACT));
		assert_int_equal(len, strlen(want_text));
		assert_memory_equal(dec, want_text, len);
		assert_non_null(hdr = json_loadb((char *)dec, len, 0, NULL));
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "kid")), kids[i]);
		json_decref(hdr);
		free(want_text);
		json_decref(want);
		free(dec);
		json_decref(jws);
		free(text);
	}
}

static void
test_jws_jwk(void **state)
{
	size_t	 c;

	(void)state;
	for (c = 0; c < NCASES; c++)
		check_sign(c, NULL, "{\"termsOfServiceAgreed\":true}");
}

static void
test_jws_post_as_get(void **state)
{
	size_t	 c;

	(void)state;
	for (c = 0; c < NCASES; c++)
		check_sign(c, KID, NULL);
}

/*
 * keyChange's inner JWS (RFC 8555 7.3.5): the new key's jwk, the url, no
 * nonce, and a signature by that key over the payload.
 */
static void
test_jws_inner(void **state)
{
	const char	*payload = "{\"account\":\"" KID "\",\"oldKey\":{}}";
	json_t		*jws, *hdr, *jwk;
	const char	*prot, *body, *sig;
	char		*text;
	size_t		 c;

	(void)state;
	for (c = 0; c < NCASES; c++) {
		assert_non_null(text = jws_sign_inner(jws_keys[c], URL,
		    payload));
		assert_non_null(jws = json_loads(text, 0, NULL));
		prot = json_string_value(json_object_get(jws, "protected"));
		body = json_string_value(json_object_get(jws, "payload"));
		sig = json_string_value(json_object_get(jws, "signature"));
		assert_non_null(prot);
		assert_non_null(body);
		assert_non_null(sig);
		hdr = b64_json(prot);
		assert_int_equal(json_object_size(hdr), 3);
		assert_null(json_object_get(hdr, "nonce"));
		assert_null(json_object_get(hdr, "kid"));
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "url")), URL);
		jwk = keys_jwk(jws_keys[c]);
		assert_true(json_equal(json_object_get(hdr, "jwk"), jwk));
		assert_true(verify(jws_keys[c], c, prot, body, sig));
		assert_false(verify(jws_keys[c], c, prot, "eyJ4IjoxfQ", sig));
		json_decref(jwk);
		json_decref(hdr);
		json_decref(jws);
		free(text);
	}
	assert_null(jws_sign_inner(jws_keys[0], NULL, payload));
	assert_null(jws_sign_inner(jws_keys[0], URL, NULL));
}

/* Many signatures: ECDSA R or S with a leading zero must stay padded. */
static void
test_jws_many(void **state)
{
	size_t	 c;
	int	 i;

	(void)state;
	for (c = 0; c < 3; c++) {
		for (i = 0; i < 300; i++)
			check_sign(c, KID, "{}");
	}
}

/* Server-supplied strings are escaped, never spliced into the JSON. */
static void
test_jws_escaping(void **state)
{
	json_t		*jws, *hdr;
	char		*text;
	const char	*nonce = "a\"b\\c";

	(void)state;
	assert_non_null(text = jws_sign(jws_keys[0], "k\"id", nonce, URL,
	    "{}"));
	assert_non_null(jws = json_loads(text, 0, NULL));
	hdr = b64_json(json_string_value(json_object_get(jws, "protected")));
	assert_string_equal(json_string_value(json_object_get(hdr, "nonce")),
	    nonce);
	assert_string_equal(json_string_value(json_object_get(hdr, "kid")),
	    "k\"id");
	json_decref(hdr);
	json_decref(jws);
	free(text);

	assert_null(jws_sign(jws_keys[0], KID, NULL, URL, "{}"));
	assert_null(jws_sign(jws_keys[0], KID, NONCE, NULL, "{}"));
}

static void
test_jws_unsupported(void **state)
{
	EVP_PKEY	*ed;

	(void)state;
	assert_non_null(ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"));
	assert_null(jws_alg(ed));
	assert_null(jws_sign(ed, KID, NONCE, URL, "{}"));
	EVP_PKEY_free(ed);
}

static void
test_jws_eab(void **state)
{
	unsigned char	 hmac[32], *mac;
	size_t		 maclen, c;
	unsigned char	 want[EVP_MAX_MD_SIZE];
	unsigned int	 wantlen;
	json_t		*eab, *hdr, *payload, *jwk;
	const char	*prot, *body, *sig;
	char		*input;

	(void)state;
	assert_int_equal(RAND_bytes(hmac, sizeof(hmac)), 1);
	for (c = 0; c < NCASES; c++) {
		assert_non_null(eab = jws_eab("eab-kid-1", hmac, sizeof(hmac),
		    jws_keys[c], "https://ca.example/acme/new-account"));
		assert_int_equal(json_object_size(eab), 3);
		prot = json_string_value(json_object_get(eab, "protected"));
		body = json_string_value(json_object_get(eab, "payload"));
		sig = json_string_value(json_object_get(eab, "signature"));
		assert_non_null(prot);
		assert_non_null(body);
		assert_non_null(sig);

		hdr = b64_json(prot);
		assert_int_equal(json_object_size(hdr), 3);
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "alg")), "HS256");
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "kid")), "eab-kid-1");
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "url")), "https://ca.example/acme/new-account");

		payload = b64_json(body);
		jwk = keys_jwk(jws_keys[c]);
		assert_true(json_equal(payload, jwk));

		xasprintf(&input, "%s.%s", prot, body);
		assert_non_null(HMAC(EVP_sha256(), hmac, sizeof(hmac),
		    (unsigned char *)input, strlen(input), want, &wantlen));
		assert_int_equal(b64url_decode(sig, &mac, &maclen), 0);
		assert_int_equal(maclen, 32);
		assert_memory_equal(mac, want, wantlen);

		/* A different HMAC key gives a different MAC. */
		hmac[0] ^= 1;
		assert_non_null(HMAC(EVP_sha256(), hmac, sizeof(hmac),
		    (unsigned char *)input, strlen(input), want, &wantlen));
		assert_memory_not_equal(mac, want, wantlen);
		hmac[0] ^= 1;

		free(mac);
		free(input);
		json_decref(jwk);
		json_decref(payload);
		json_decref(hdr);
		json_decref(eab);
	}
	assert_null(jws_eab(NULL, hmac, sizeof(hmac), jws_keys[0], URL));
	assert_null(jws_eab("k", hmac, 0, jws_keys[0], URL));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jws_kid),
		cmocka_unit_test(test_jws_kid_text),
		cmocka_unit_test(test_jws_jwk),
		cmocka_unit_test(test_jws_post_as_get),
		cmocka_unit_test(test_jws_inner),
		cmocka_unit_test(test_jws_many),
		cmocka_unit_test(test_jws_escaping),
		cmocka_unit_test(test_jws_unsupported),
		cmocka_unit_test(test_jws_eab),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
