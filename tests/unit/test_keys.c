/*
 * keys.c: generation, PEM, JWK, RFC 7638 thumbprint, key authorization
 * and the finalize CSR.
 */
#include <arpa/inet.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sidecar.h"

/* Generated once: rsa:4096 takes seconds. */
static EVP_PKEY	*keys[KEY_TYPE_MAX];

static const struct {
	int	 id;
	int	 bits;
} key_expect[KEY_TYPE_MAX] = {
	[KEY_ECDSA_256] = { EVP_PKEY_EC, 256 },
	[KEY_ECDSA_384] = { EVP_PKEY_EC, 384 },
	[KEY_ECDSA_521] = { EVP_PKEY_EC, 521 },
	[KEY_RSA_2048] = { EVP_PKEY_RSA, 2048 },
	[KEY_RSA_3072] = { EVP_PKEY_RSA, 3072 },
	[KEY_RSA_4096] = { EVP_PKEY_RSA, 4096 },
};

/* RFC 7638 section 3.1. */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7"
    "aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yB"
    "XArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnY"
    "b9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
    "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
static const char rfc7638_e[] = "AQAB";
static const char rfc7638_tp[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

static int
setup(void **state)
{
	int	 t;

	(void)state;
	for (t = 0; t < KEY_TYPE_MAX; t++) {
		if ((keys[t] = keys_generate((enum key_type)t)) == NULL)
			return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	int	 t;

	(void)state;
	for (t = 0; t < KEY_TYPE_MAX; t++)
		EVP_PKEY_free(keys[t]);
	return 0;
}

static BIGNUM *
b64_bn(const char *s)
{
	unsigned char	*buf;
	size_t		 len;
	BIGNUM		*bn;

	assert_int_equal(b64url_decode(s, &buf, &len), 0);
	bn = BN_bin2bn(buf, (int)len, NULL);
	assert_non_null(bn);
	free(buf);
	return bn;
}

static EVP_PKEY *
rsa_from_ne(const char *n64, const char *e64)
{
	OSSL_PARAM_BLD	*bld;
	OSSL_PARAM	*params;
	EVP_PKEY_CTX	*ctx;
	EVP_PKEY	*key = NULL;
	BIGNUM		*n, *e;

	n = b64_bn(n64);
	e = b64_bn(e64);
	assert_non_null(bld = OSSL_PARAM_BLD_new());
	assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n));
	assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e));
	assert_non_null(params = OSSL_PARAM_BLD_to_param(bld));
	assert_non_null(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL));
	assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
	assert_int_equal(EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY,
	    params), 1);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return key;
}

static void
test_keys_generate(void **state)
{
	int	 t;

	(void)state;
	for (t = 0; t < KEY_TYPE_MAX; t++) {
		assert_non_null(keys[t]);
		assert_int_equal(EVP_PKEY_get_base_id(keys[t]), key_expect[t].id);
		assert_int_equal(EVP_PKEY_get_bits(keys[t]), key_expect[t].bits);
	}
	assert_null(keys_generate(KEY_TYPE_MAX));
}

static void
test_keys_rfc7638(void **state)
{
	EVP_PKEY	*key;
	json_t		*jwk;
	char		*tp;

	(void)state;
	key = rsa_from_ne(rfc7638_n, rfc7638_e);

	assert_non_null(jwk = keys_jwk(key));
	assert_int_equal(json_object_size(jwk), 3);
	assert_string_equal(json_string_value(json_object_get(jwk, "kty")),
	    "RSA");
	assert_string_equal(json_string_value(json_object_get(jwk, "n")),
	    rfc7638_n);
	assert_string_equal(json_string_value(json_object_get(jwk, "e")),
	    rfc7638_e);
	json_decref(jwk);

	assert_non_null(tp = keys_thumbprint(key));
	assert_string_equal(tp, rfc7638_tp);
	free(tp);
	EVP_PKEY_free(key);
}

/* x and y of the JWK decode to exactly size bytes and match the key. */
static void
check_ec_jwk(EVP_PKEY *key, const char *crv, size_t size)
{
	static const char *const coord[2] = { "x", "y" };
	static const char *const param[2] = {
		OSSL_PKEY_PARAM_EC_PUB_X, OSSL_PKEY_PARAM_EC_PUB_Y
	};
	json_t		*jwk;
	unsigned char	*buf, *want;
	size_t		 len, i;
	BIGNUM		*bn = NULL;

	assert_non_null(jwk = keys_jwk(key));
	assert_int_equal(json_object_size(jwk), 4);
	assert_string_equal(json_string_value(json_object_get(jwk, "kty")),
	    "EC");
	assert_string_equal(json_string_value(json_object_get(jwk, "crv")),
	    crv);
	for (i = 0; i < 2; i++) {
		assert_int_equal(b64url_decode(json_string_value(
		    json_object_get(jwk, coord[i])), &buf, &len), 0);
		assert_int_equal(len, size);
		assert_true(EVP_PKEY_get_bn_param(key, param[i], &bn));
		want = calloc(1, size);
		assert_int_equal(BN_bn2binpad(bn, want, (int)size), (int)size);
		assert_memory_equal(buf, want, size);
		free(want);
		free(buf);
		BN_free(bn);
		bn = NULL;
	}
	json_decref(jwk);
}

/* Smallest byte length of the public x or y. */
static int
ec_min_coord_bytes(EVP_PKEY *key)
{
	BIGNUM	*x = NULL, *y = NULL;
	int	 n;

	assert_true(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x));
	assert_true(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y));
	n = BN_num_bytes(x) < BN_num_bytes(y) ? BN_num_bytes(x) :
	    BN_num_bytes(y);
	BN_free(x);
	BN_free(y);
	return n;
}

static void
test_keys_jwk_ec(void **state)
{
	EVP_PKEY	*key;
	int		 i;

	(void)state;
	check_ec_jwk(keys[KEY_ECDSA_256], "P-256", 32);
	check_ec_jwk(keys[KEY_ECDSA_384], "P-384", 48);
	check_ec_jwk(keys[KEY_ECDSA_521], "P-521", 66);

	/* A coordinate with a leading zero byte must still be padded. */
	for (i = 0; i < 5000; i++) {
		key = keys_generate(KEY_ECDSA_256);
		if (ec_min_coord_bytes(key) < 32)
			break;
		EVP_PKEY_free(key);
		key = NULL;
	}
	assert_non_null(key);
	check_ec_jwk(key, "P-256", 32);
	EVP_PKEY_free(key);
	for (i = 0; i < 100; i++) {
		key = keys_generate(KEY_ECDSA_521);
		if (ec_min_coord_bytes(key) < 66)
			break;
		EVP_PKEY_free(key);
		key = NULL;
	}
	assert_non_null(key);
	check_ec_jwk(key, "P-521", 66);
	EVP_PKEY_free(key);
}

static void
test_keys_jwk_rsa(void **state)
{
	json_t		*jwk;
	unsigned char	*buf;
	size_t		 len;

	(void)state;
	assert_non_null(jwk = keys_jwk(keys[KEY_RSA_2048]));
	assert_string_equal(json_string_value(json_object_get(jwk, "e")),
	    "AQAB");
	assert_int_equal(b64url_decode(json_string_value(json_object_get(jwk,
	    "n")), &buf, &len), 0);
	assert_int_equal(len, 256);
	assert_true(buf[0] != 0);
	free(buf);
	json_decref(jwk);
}

static void
test_keys_thumbprint_ec(void **state)
{
	json_t		*jwk;
	char		*text, *tp, *want;
	unsigned char	 md[32];

	(void)state;
	/* Recompute from the documented canonical form. */
	jwk = keys_jwk(keys[KEY_ECDSA_256]);
	xasprintf(&text, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\","
	    "\"y\":\"%s\"}", json_string_value(json_object_get(jwk, "x")),
	    json_string_value(json_object_get(jwk, "y")));
	assert_int_equal(EVP_Digest(text, strlen(text), md, NULL,
	    EVP_sha256(), NULL), 1);
	want = b64url_encode(md, sizeof(md));
	assert_non_null(tp = keys_thumbprint(keys[KEY_ECDSA_256]));
	assert_string_equal(tp, want);
	assert_int_equal(strlen(tp), 43);
	free(tp);
	free(want);
	free(text);
	json_decref(jwk);
}

static void
test_keys_key_authorization(void **state)
{
	char	*ka;

	(void)state;
	ka = keys_key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
	    rfc7638_tp);
	assert_string_equal(ka, "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA."
	    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	free(ka);
}

static X509_REQ *
csr_decode(const char *csr)
{
	unsigned char		*der;
	const unsigned char	*p;
	size_t			 len;
	X509_REQ		*req;

	assert_int_equal(b64url_decode(csr, &der, &len), 0);
	p = der;
	assert_non_null(req = d2i_X509_REQ(NULL, &p, (long)len));
	assert_ptr_equal(p, der + len);
	free(der);
	return req;
}

/* Common name, or "" for an empty subject; caller frees. */
static char *
csr_cn(X509_REQ *req)
{
	X509_NAME	*name = X509_REQ_get_subject_name(req);
	char		 buf[256];

	if (X509_NAME_entry_count(name) == 0)
		return strdup("");
	assert_int_equal(X509_NAME_entry_count(name), 1);
	assert_true(X509_NAME_get_text_by_NID(name, NID_commonName, buf,
	    sizeof(buf)) > 0);
	return strdup(buf);
}

/* The SAN list, rendered as "DNS:x" or "IP:x" in order; returns count. */
static size_t
csr_sans(X509_REQ *req, char out[][128], size_t max)
{
	STACK_OF(X509_EXTENSION)	*exts;
	GENERAL_NAMES			*gens;
	GENERAL_NAME			*gen;
	ASN1_OCTET_STRING		*os;
	char				 addr[INET6_ADDRSTRLEN];
	int				 i, n, type;

	assert_non_null(exts = X509_REQ_get_extensions(req));
	assert_non_null(gens = X509V3_get_d2i(exts, NID_subject_alt_name,
	    NULL, NULL));
	n = sk_GENERAL_NAME_num(gens);
	assert_true((size_t)n <= max);
	for (i = 0; i < n; i++) {
		gen = sk_GENERAL_NAME_value(gens, i);
		if (gen->type == GEN_DNS) {
			snprintf(out[i], 128, "DNS:%.*s",
			    ASN1_STRING_length(gen->d.dNSName),
			    (const char *)ASN1_STRING_get0_data(
			    gen->d.dNSName));
			continue;
		}
		assert_int_equal(gen->type, GEN_IPADD);
		os = gen->d.iPAddress;
		assert_true(ASN1_STRING_length(os) == 4 ||
		    ASN1_STRING_length(os) == 16);
		type = ASN1_STRING_length(os) == 4 ? AF_INET : AF_INET6;
		assert_non_null(inet_ntop(type, ASN1_STRING_get0_data(os),
		    addr, sizeof(addr)));
		snprintf(out[i], 128, "IP:%s", addr);
	}
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return (size_t)n;
}

/* cn "": the subject must be empty, the names in subjectAltName only. */
static void
check_csr(EVP_PKEY *key, char *const *idents, size_t n, int with_cn,
    const char *cn, const char *const *want)
{
	X509_REQ	*req;
	EVP_PKEY	*pub;
	char		*csr, *got_cn, sans[8][128];
	size_t		 i, nsans;

	assert_non_null(csr = keys_csr(key, idents, n, with_cn));
	assert_null(strpbrk(csr, "+/="));
	req = csr_decode(csr);
	assert_int_equal(X509_REQ_verify(req, key), 1);
	assert_non_null(pub = X509_REQ_get0_pubkey(req));
	assert_int_equal(EVP_PKEY_eq(pub, key), 1);
	got_cn = csr_cn(req);
	assert_string_equal(got_cn, cn);
	free(got_cn);
	if (*cn == '\0')
		assert_int_equal(X509_NAME_entry_count(
		    X509_REQ_get_subject_name(req)), 0);
	nsans = csr_sans(req, sans, 8);
	assert_int_equal(nsans, n);
	for (i = 0; i < n; i++)
		assert_string_equal(sans[i], want[i]);
	X509_REQ_free(req);
	free(csr);
}

static void
test_keys_csr(void **state)
{
	char *const idents[] = {
		"example.com", "www.example.com", "192.0.2.1", "2001:db8::1"
	};
	const char *const want[] = {
		"DNS:example.com", "DNS:www.example.com", "IP:192.0.2.1",
		"IP:2001:db8::1"
	};
	int	 t;

	(void)state;
	/* common_name_in_csr: off by default, as in nginx-acme 0.4. */
	for (t = 0; t < KEY_TYPE_MAX; t++) {
		check_csr(keys[t], idents, 4, 1, "example.com", want);
		check_csr(keys[t], idents, 4, 0, "", want);
	}
}

static void
test_keys_csr_no_cn(void **state)
{
	char *const ip_first[] = { "192.0.2.7", "example.org" };
	const char *const ip_want[] = { "IP:192.0.2.7", "DNS:example.org" };
	char	 long_name[80];
	char	*long_first[1];
	char	 long_want[128];
	const char *long_wantp[1];
	X509_REQ *req;
	EVP_PKEY *other;
	char	*csr;

	(void)state;
	/* An IP literal never becomes the CN. */
	check_csr(keys[KEY_ECDSA_256], ip_first, 2, 1, "", ip_want);

	/* 64 characters fit ub-common-name; 65 do not. */
	memset(long_name, 'a', 61);
	memcpy(long_name + 61, ".io", 4);
	assert_int_equal(strlen(long_name), 64);
	long_first[0] = long_name;
	snprintf(long_want, sizeof(long_want), "DNS:%s", long_name);
	long_wantp[0] = long_want;
	check_csr(keys[KEY_ECDSA_256], long_first, 1, 1, long_name,
	    long_wantp);
	memset(long_name, 'a', 62);
	memcpy(long_name + 62, ".io", 4);
	assert_int_equal(strlen(long_name), 65);
	snprintf(long_want, sizeof(long_want), "DNS:%s", long_name);
	check_csr(keys[KEY_ECDSA_256], long_first, 1, 1, "", long_wantp);

	/* The signature is over this key, not another one. */
	csr = keys_csr(keys[KEY_ECDSA_256], ip_first, 2, 1);
	req = csr_decode(csr);
	other = keys_generate(KEY_ECDSA_256);
	assert_int_not_equal(X509_REQ_verify(req, other), 1);
	EVP_PKEY_free(other);
	X509_REQ_free(req);
	free(csr);

	assert_null(keys_csr(keys[KEY_ECDSA_256], ip_first, 0, 1));
}

static void
test_keys_pem(void **state)
{
	EVP_PKEY	*back;
	BIO		*bio;
	char		*pem, *data, *cause = NULL;
	long		 len;
	int		 t;

	(void)state;
	for (t = 0; t < KEY_TYPE_MAX; t++) {
		assert_non_null(pem = keys_to_pem(keys[t]));
		assert_true(strncmp(pem, "-----BEGIN PRIVATE KEY-----\n",
		    28) == 0);
		assert_non_null(back = keys_from_pem(pem, strlen(pem), &cause));
		assert_int_equal(EVP_PKEY_eq(back, keys[t]), 1);
		EVP_PKEY_free(back);
		free(pem);
	}

	/* Traditional "BEGIN EC PRIVATE KEY", as openssl ecparam writes. */
	assert_non_null(bio = BIO_new(BIO_s_mem()));
	assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio,
	    keys[KEY_ECDSA_384], NULL, NULL, 0, NULL, NULL), 1);
	len = BIO_get_mem_data(bio, &data);
	assert_true(strncmp(data, "-----BEGIN EC PRIVATE KEY-----", 30) == 0);
	assert_non_null(back = keys_from_pem(data, (size_t)len, &cause));
	assert_int_equal(EVP_PKEY_eq(back, keys[KEY_ECDSA_384]), 1);
	EVP_PKEY_free(back);
	BIO_free(bio);

	assert_null(keys_from_pem("garbage", 7, &cause));
	assert_non_null(strstr(cause, "no usable private key PEM"));
	free(cause);
	cause = NULL;
	assert_null(keys_from_pem("", 0, &cause));
	free(cause);
}

/* What OpenSSL's own encoder writes for key, which keys_to_pem matches. */
static char *
encoder_pem(EVP_PKEY *key)
{
	BIO	*bio;
	char	*data, *pem;
	long	 len;

	assert_non_null(bio = BIO_new(BIO_s_mem()));
	assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0,
	    NULL, NULL), 1);
	assert_true((len = BIO_get_mem_data(bio, &data)) > 0);
	pem = strndup(data, (size_t)len);
	BIO_free(bio);
	return pem;
}

/* Whether the key's scalar has a zero first byte, so the DER pads it. */
static int
ec_priv_padded(EVP_PKEY *key, size_t size)
{
	BIGNUM	*priv = NULL;
	int	 padded;

	assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY,
	    &priv), 1);
	padded = (size_t)BN_num_bytes(priv) < size;
	BN_clear_free(priv);
	return padded;
}

/*
 * keys_to_pem builds EC keys' PKCS#8 itself: byte for byte what the
 * encoder writes, for each curve, for many keys and for one whose scalar
 * is a byte shorter than the order.
 */
static void
test_keys_pem_ec_exact(void **state)
{
	const struct { enum key_type type; size_t size; } curves[] = {
		{ KEY_ECDSA_256, 32 }, { KEY_ECDSA_384, 48 },
		{ KEY_ECDSA_521, 66 },
	};
	EVP_PKEY	*key;
	char		*ours, *theirs;
	size_t		 c;
	int		 i, padded;

	(void)state;
	for (c = 0; c < sizeof(curves) / sizeof(curves[0]); c++) {
		padded = 0;
		for (i = 0; i < 2000 && (i < 50 || !padded); i++) {
			assert_non_null(key = keys_generate(curves[c].type));
			padded |= ec_priv_padded(key, curves[c].size);
			assert_non_null(ours = keys_to_pem(key));
			theirs = encoder_pem(key);
			assert_string_equal(ours, theirs);
			free(ours);
			free(theirs);
			EVP_PKEY_free(key);
		}
		assert_true(padded);
	}
}

static void
test_keys_pem_unsupported(void **state)
{
	EVP_PKEY	*ed, *back;
	BIO		*bio;
	char		*data, *cause = NULL;
	long		 len;

	(void)state;
	assert_non_null(ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"));
	assert_non_null(bio = BIO_new(BIO_s_mem()));
	assert_int_equal(PEM_write_bio_PrivateKey(bio, ed, NULL, NULL, 0,
	    NULL, NULL), 1);
	len = BIO_get_mem_data(bio, &data);
	back = keys_from_pem(data, (size_t)len, &cause);
	assert_null(back);
	assert_non_null(cause);
	free(cause);
	BIO_free(bio);
	EVP_PKEY_free(ed);
}

static void
test_keys_load_file(void **state)
{
	char		 path[] = "/tmp/test_keys.XXXXXX";
	char		*pem, *cause = NULL;
	EVP_PKEY	*back;
	int		 fd;

	(void)state;
	assert_true((fd = mkstemp(path)) != -1);
	pem = keys_to_pem(keys[KEY_ECDSA_256]);
	assert_int_equal(write(fd, pem, strlen(pem)), (ssize_t)strlen(pem));
	close(fd);
	back = keys_load_file(path, &cause);
	assert_non_null(back);
	assert_null(cause);
	assert_int_equal(EVP_PKEY_eq(back, keys[KEY_ECDSA_256]), 1);
	EVP_PKEY_free(back);

	/* A truncated file names the file. */
	assert_int_equal(truncate(path, 40), 0);
	assert_null(keys_load_file(path, &cause));
	assert_non_null(cause);
	assert_non_null(strstr(cause, path));
	free(cause);
	cause = NULL;
	unlink(path);

	assert_null(keys_load_file(path, &cause));
	assert_non_null(strstr(cause, path));
	assert_non_null(strstr(cause, "No such file"));
	free(cause);
	free(pem);
}

/*
 * RFC 8737 section 3: the identifier alone in subjectAltName, and a
 * critical acmeIdentifier whose value is the DER OCTET STRING of
 * SHA-256(key authorization): 04 20, then the 32 bytes.
 */
static void
check_alpn_cert(const char *ident, const char *want_san)
{
	const char	*ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA."
			    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
	unsigned char	 want[2 + SHA256_DIGEST_LENGTH], *der = NULL;
	X509		*x, *back;
	X509_EXTENSION	*ext;
	ASN1_OBJECT	*oid;
	ASN1_OCTET_STRING *value;
	GENERAL_NAMES	*gens;
	const GENERAL_NAME *gen;
	char		 san[128];
	int		 len, loc;

	assert_non_null(x = keys_alpn_cert(keys[KEY_ECDSA_256], ident, ka));
	/* Parse it back from DER, as a CA would see it. */
	assert_true((len = i2d_X509(x, &der)) > 0);
	{
		const unsigned char *p = der;

		assert_non_null(back = d2i_X509(NULL, &p, len));
	}
	assert_int_equal(X509_verify(back, keys[KEY_ECDSA_256]), 1);
	assert_int_equal(X509_check_issued(back, back), X509_V_OK);

	assert_non_null(oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1));
	assert_true((loc = X509_get_ext_by_OBJ(back, oid, -1)) >= 0);
	assert_int_equal(X509_get_ext_by_OBJ(back, oid, loc), -1);
	assert_non_null(ext = X509_get_ext(back, loc));
	assert_int_equal(X509_EXTENSION_get_critical(ext), 1);
	value = X509_EXTENSION_get_data(ext);
	want[0] = 0x04;
	want[1] = SHA256_DIGEST_LENGTH;
	SHA256((const unsigned char *)ka, strlen(ka), want + 2);
	assert_int_equal(ASN1_STRING_length(value), sizeof(want));
	assert_memory_equal(ASN1_STRING_get0_data(value), want, sizeof(want));

	assert_non_null(gens = X509_get_ext_d2i(back, NID_subject_alt_name,
	    NULL, NULL));
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	gen = sk_GENERAL_NAME_value(gens, 0);
	if (gen->type == GEN_DNS)
		snprintf(san, sizeof(san), "DNS:%s",
		    ASN1_STRING_get0_data(gen->d.dNSName));
	else {
		char	 addr[64];

		assert_int_equal(gen->type, GEN_IPADD);
		assert_non_null(inet_ntop(ASN1_STRING_length(gen->d.iPAddress)
		    == 4 ? AF_INET : AF_INET6,
		    ASN1_STRING_get0_data(gen->d.iPAddress), addr,
		    sizeof(addr)));
		snprintf(san, sizeof(san), "IP:%s", addr);
	}
	assert_string_equal(san, want_san);

	GENERAL_NAMES_free(gens);
	ASN1_OBJECT_free(oid);
	OPENSSL_free(der);
	X509_free(back);
	X509_free(x);
}

static void
test_keys_alpn_cert(void **state)
{
	(void)state;
	check_alpn_cert("example.com", "DNS:example.com");
	check_alpn_cert("192.0.2.1", "IP:192.0.2.1");
	check_alpn_cert("2001:db8::1", "IP:2001:db8::1");
}

/*
 * The SNI a CA sends for tls-alpn-01 (alpn.c): a DNS name as it is, an IP
 * address by its reverse-mapping name (RFC 8738 section 6).
 */
static void
test_alpn_sni_name(void **state)
{
	static const struct {
		const char	*ident, *sni;
	} cases[] = {
		{ "example.com", "example.com" },
		{ "192.0.2.1", "1.2.0.192.in-addr.arpa" },
		{ "2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
		    "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa" },
		{ "::ffff:192.0.2.1", "1.0.2.0.0.0.0.c.f.f.f.f.0.0.0.0."
		    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa" },
	};
	size_t	 i;
	char	*sni;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sni = alpn_sni_name(cases[i].ident);
		assert_string_equal(sni, cases[i].sni);
		free(sni);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys_generate),
		cmocka_unit_test(test_keys_rfc7638),
		cmocka_unit_test(test_keys_jwk_ec),
		cmocka_unit_test(test_keys_jwk_rsa),
		cmocka_unit_test(test_keys_thumbprint_ec),
		cmocka_unit_test(test_keys_key_authorization),
		cmocka_unit_test(test_keys_csr),
		cmocka_unit_test(test_keys_csr_no_cn),
		cmocka_unit_test(test_keys_pem),
		cmocka_unit_test(test_keys_pem_ec_exact),
		cmocka_unit_test(test_keys_pem_unsupported),
		cmocka_unit_test(test_keys_load_file),
		cmocka_unit_test(test_keys_alpn_cert),
		cmocka_unit_test(test_alpn_sni_name),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
