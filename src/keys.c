/*
 * Private keys (account and certificate), their public JWK and RFC 7638
 * thumbprint, the RFC 8555 key authorization, the PKCS#10 CSR that
 * finalizes an order and the tls-alpn-01 validation certificate.  Only
 * EC P-256/P-384/P-521 and RSA >= 2048 are accepted: those are the keys
 * ACME servers take and jws.c can sign with.
 */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sidecar.h"

#define KEYS_PEM_MAX		(1024 * 1024)	/* a key file is a few KiB */
#define KEYS_RSA_MIN_BITS	2048
#define KEYS_CN_MAX		64		/* ub-common-name */

#define KEYS_EC_PUB_MAX		(1 + 2 * 66)	/* uncompressed P-521 point */
#define KEYS_EC_DER_MAX		256		/* its ECPrivateKey: 214 */

static const struct {
	const char	*group;		/* OpenSSL group name */
	int		 nid;		/* its OID */
	const char	*crv;		/* JWK "crv" */
	size_t		 size;		/* field and order size in bytes */
	const EVP_MD	*(*md)(void);	/* CSR digest, RFC 5480 section 4 */
} keys_curves[] = {
	{ "prime256v1", NID_X9_62_prime256v1, "P-256", 32, EVP_sha256 },
	{ "secp384r1", NID_secp384r1, "P-384", 48, EVP_sha384 },
	{ "secp521r1", NID_secp521r1, "P-521", 66, EVP_sha512 },
};

const char *
key_type_name(enum key_type t)
{
	if (t < 0 || t >= KEY_TYPE_MAX)
		fatalx("%s: bad key type %d", __func__, (int)t);
	return acme_key_desc((enum acme_key_type)t)->kd_name;
}

const char *
key_type_suffix(enum key_type t)
{
	if (t < 0 || t >= KEY_TYPE_MAX)
		fatalx("%s: bad key type %d", __func__, (int)t);
	return acme_key_desc((enum acme_key_type)t)->kd_suffix;
}

/* "rsa:2048", or nginx-acme's "rsa" and "ecdsa" (proto/acme_ident.h). */
int
key_type_parse(const char *s, enum key_type *t)
{
	int	 k;

	if ((k = acme_key_parse(s, strlen(s))) == -1)
		return -1;
	*t = (enum key_type)k;
	return 0;
}

/* Index into keys_curves for an EC key, or -1. */
static int
keys_curve(EVP_PKEY *key)
{
	char	 group[64];
	size_t	 i, len;

	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
		return -1;
	if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME,
	    group, sizeof(group), &len))
		return -1;
	for (i = 0; i < sizeof(keys_curves) / sizeof(keys_curves[0]); i++) {
		if (strcmp(group, keys_curves[i].group) == 0)
			return (int)i;
	}
	return -1;
}

/* Is this a key the rest of the daemon can use?  Sets *cause if not. */
static int
keys_check(EVP_PKEY *key, char **cause)
{
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC:
		if (keys_curve(key) != -1)
			return 0;
		xasprintf(cause, "unsupported EC curve (want P-256, P-384 "
		    "or P-521)");
		return -1;
	case EVP_PKEY_RSA:
		if (EVP_PKEY_get_bits(key) >= KEYS_RSA_MIN_BITS)
			return 0;
		xasprintf(cause, "RSA key of %d bits is too small (minimum "
		    "%d)", EVP_PKEY_get_bits(key), KEYS_RSA_MIN_BITS);
		return -1;
	default:
		xasprintf(cause, "unsupported key type %s",
		    OBJ_nid2sn(EVP_PKEY_get_base_id(key)));
		return -1;
	}
}

EVP_PKEY *
keys_generate(enum key_type type)
{
	EVP_PKEY	*key = NULL;

	switch (type) {
	case KEY_ECDSA_256:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		break;
	case KEY_ECDSA_384:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
		break;
	case KEY_ECDSA_521:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
		break;
	case KEY_RSA_2048:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
		break;
	case KEY_RSA_3072:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
		break;
	case KEY_RSA_4096:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
		break;
	default:
		log_warnx("keys_generate: bad key type %d", (int)type);
		return NULL;
	}
	if (key == NULL)
		log_openssl("keys_generate: type %d", (int)type);
	return key;
}

/* Never prompt on the terminal for an encrypted key: fail instead. */
static int
keys_no_password(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return -1;
}

/* PEM (PKCS#8 or traditional) to key; sets *cause on failure. */
static EVP_PKEY *
keys_parse_pem(const char *buf, size_t len, char **cause)
{
	BIO		*bio = NULL;
	EVP_PKEY	*key = NULL;
	char		 err[256];
	unsigned long	 e;

	if (len > KEYS_PEM_MAX || len > INT_MAX) {
		xasprintf(cause, "key too large (%zu bytes)", len);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL)
		fatalx("keys_parse_pem: BIO_new_mem_buf");
	key = PEM_read_bio_PrivateKey(bio, NULL, keys_no_password, NULL);
	if (key == NULL) {
		if ((e = ERR_peek_last_error()) != 0)
			ERR_error_string_n(e, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "unknown error");
		ERR_clear_error();
		xasprintf(cause, "no usable private key PEM (%s)", err);
		goto out;
	}
	if (keys_check(key, cause) != 0) {
		EVP_PKEY_free(key);
		key = NULL;
	}
out:
	BIO_free(bio);
	return key;
}

EVP_PKEY *
keys_from_pem(const char *buf, size_t len, char **cause)
{
	return keys_parse_pem(buf, len, cause);
}

/* A FIFO or a device for a key file is refused, never waited on. */
EVP_PKEY *
keys_load_file(const char *path, char **cause)
{
	struct stat	 st;
	EVP_PKEY	*key = NULL;
	char		*buf = NULL, *why = NULL;
	size_t		 len = 0;
	ssize_t		 n;
	int		 fd;

	if ((fd = fsafe_open_regular(path, 0, &st, cause)) == -1)
		return NULL;
	if (st.st_size > KEYS_PEM_MAX) {
		xasprintf(cause, "%s: larger than %d bytes", path,
		    KEYS_PEM_MAX);
		goto out;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (len < (size_t)st.st_size) {
		n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			xasprintf(cause, "%s: read: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if ((key = keys_parse_pem(buf, len, &why)) == NULL) {
		xasprintf(cause, "%s: %s", path, why);
		goto out;
	}
out:
	if (buf != NULL) {
		/* The buffer held a private key: do not leave it in the heap. */
		OPENSSL_cleanse(buf, len);
		free(buf);
	}
	free(why);
	close(fd);
	return key;
}

/* Free what keys_to_pem() returned, wiping the key material first. */
void
keys_pem_free(char *pem)
{
	if (pem == NULL)
		return;
	OPENSSL_cleanse(pem, strlen(pem));
	free(pem);
}

/* A DER tag and length at p; returns the bytes written (at most 4). */
static size_t
keys_der_head(unsigned char *p, unsigned char tag, size_t len)
{
	size_t	 n = 0;

	p[n++] = tag;
	if (len >= 0x100) {
		p[n++] = 0x82;
		p[n++] = (unsigned char)(len >> 8);
	} else if (len >= 0x80)
		p[n++] = 0x81;
	p[n++] = (unsigned char)len;
	return n;
}

/* The key's public point as SEC 1 octets (uncompressed unless loaded so). */
static int
keys_ec_point(EVP_PKEY *key, unsigned char *pub, size_t *len)
{
	return EVP_PKEY_get_octet_string_param(key,
	    OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, KEYS_EC_PUB_MAX, len) ? 0 :
	    -1;
}

/*
 * RFC 5915 ECPrivateKey as OpenSSL puts it inside PKCS#8: version 1, the
 * scalar padded to the order's size, the public point in [1], and no [0]
 * parameters (the AlgorithmIdentifier names the curve).  Returns its
 * length in der (KEYS_EC_DER_MAX bytes), or 0.
 */
static size_t
keys_ec_private_der(EVP_PKEY *key, size_t size, unsigned char *der)
{
	BIGNUM		*priv = NULL;
	unsigned char	 body[KEYS_EC_DER_MAX], pub[KEYS_EC_PUB_MAX];
	size_t		 publen, n = 0, len = 0;

	if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &priv) ||
	    keys_ec_point(key, pub, &publen) == -1)
		goto out;
	memcpy(body, "\x02\x01\x01", 3);
	n = 3 + keys_der_head(body + 3, 0x04, size);
	if (BN_bn2binpad(priv, body + n, (int)size) < 0)
		goto out;
	n += size;
	n += keys_der_head(body + n, 0xa1, publen + 1 + (publen + 1 >= 0x80 ?
	    3 : 2));
	n += keys_der_head(body + n, 0x03, publen + 1);
	body[n++] = 0;		/* no unused bits */
	memcpy(body + n, pub, publen);
	n += publen;
	if (n > KEYS_EC_DER_MAX - 4)
		goto out;
	len = keys_der_head(der, 0x30, n);
	memcpy(der + len, body, n);
	len += n;
out:
	OPENSSL_cleanse(body, sizeof(body));
	BN_clear_free(priv);
	return len;
}

/*
 * PKCS#8 PEM of an EC key, from its parameters.  OpenSSL 3.0 encodes a
 * key by searching every provider's encoders for a chain that fits: 0.8M
 * instructions a key (callgrind), and each issued key is encoded three
 * times (pending/, the store, the zone).  This gives the same bytes as
 * PEM_write_bio_PrivateKey() (test_keys compares them) for a fraction.
 */
static int
keys_ec_pem(BIO *bio, EVP_PKEY *key, int curve)
{
	PKCS8_PRIV_KEY_INFO	*p8 = NULL;
	unsigned char		 der[KEYS_EC_DER_MAX], *copy = NULL;
	size_t			 len;
	int			 rc = 0;

	if ((len = keys_ec_private_der(key, keys_curves[curve].size,
	    der)) == 0)
		goto out;
	if ((p8 = PKCS8_PRIV_KEY_INFO_new()) == NULL ||
	    (copy = OPENSSL_memdup(der, len)) == NULL)
		fatalx("keys_to_pem: out of memory");
	/* p8 owns copy from here, and wipes it when freed. */
	if (!PKCS8_pkey_set0(p8, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), 0,
	    V_ASN1_OBJECT, OBJ_nid2obj(keys_curves[curve].nid), copy,
	    (int)len)) {
		OPENSSL_clear_free(copy, len);
		goto out;
	}
	rc = PEM_write_bio_PKCS8_PRIV_KEY_INFO(bio, p8);
out:
	OPENSSL_cleanse(der, sizeof(der));
	PKCS8_PRIV_KEY_INFO_free(p8);
	return rc;
}

char *
keys_to_pem(EVP_PKEY *key)
{
	BIO	*bio = NULL;
	char	*data = NULL, *pem = NULL;
	long	 len = 0;
	int	 curve, ok;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		fatalx("keys_to_pem: BIO_new");
	/* OpenSSL 3 writes PKCS#8 ("BEGIN PRIVATE KEY") here. */
	if ((curve = keys_curve(key)) != -1)
		ok = keys_ec_pem(bio, key, curve);
	else
		ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL,
		    NULL);
	if (!ok) {
		log_openssl("keys_to_pem");
		goto out;
	}
	if ((len = BIO_get_mem_data(bio, &data)) <= 0) {
		log_openssl("keys_to_pem: empty");
		goto out;
	}
	pem = xstrndup(data, (size_t)len);
out:
	/* Memory BIOs do not clear what they held. */
	if (len > 0)
		OPENSSL_cleanse(data, (size_t)len);
	BIO_free(bio);
	return pem;
}

/* A certificate as PEM, which the caller frees; NULL if it does not encode. */
char *
keys_cert_pem(X509 *x)
{
	BIO	*bio;
	char	*data = NULL, *pem = NULL;
	long	 len;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		fatalx("keys_cert_pem: BIO_new");
	if (PEM_write_bio_X509(bio, x) == 1 &&
	    (len = BIO_get_mem_data(bio, &data)) > 0)
		pem = xstrndup(data, (size_t)len);
	else
		log_openssl("keys_cert_pem");
	BIO_free(bio);
	return pem;
}

/* Big number parameter as base64url; size 0 means no padding. */
static char *
keys_bn_b64(EVP_PKEY *key, const char *param, size_t size)
{
	BIGNUM		*bn = NULL;
	unsigned char	*buf = NULL;
	char		*s = NULL;
	int		 len;

	if (!EVP_PKEY_get_bn_param(key, param, &bn)) {
		log_openssl("keys_jwk: %s", param);
		goto out;
	}
	if (size == 0)
		size = (size_t)BN_num_bytes(bn);
	if (size == 0 || (size_t)BN_num_bytes(bn) > size) {
		log_warnx("keys_jwk: %s has a bad length", param);
		goto out;
	}
	buf = xmalloc(size);
	if ((len = BN_bn2binpad(bn, buf, (int)size)) < 0) {
		log_openssl("keys_jwk: %s", param);
		goto out;
	}
	s = b64url_encode(buf, (size_t)len);
out:
	free(buf);
	BN_free(bn);
	return s;
}

/* The members are inserted in RFC 7638 order; jansson keeps it. */
static json_t *
keys_jwk_ec(EVP_PKEY *key, int curve)
{
	json_t	*jwk = NULL;
	char	*x = NULL, *y = NULL;
	size_t	 size = keys_curves[curve].size;

	if ((x = keys_bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_X, size)) == NULL ||
	    (y = keys_bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y, size)) == NULL)
		goto out;
	jwk = json_pack("{s:s, s:s, s:s, s:s}", "crv", keys_curves[curve].crv,
	    "kty", "EC", "x", x, "y", y);
	if (jwk == NULL)
		fatalx("keys_jwk: json_pack");
out:
	free(x);
	free(y);
	return jwk;
}

static json_t *
keys_jwk_rsa(EVP_PKEY *key)
{
	json_t	*jwk = NULL;
	char	*n = NULL, *e = NULL;

	if ((e = keys_bn_b64(key, OSSL_PKEY_PARAM_RSA_E, 0)) == NULL ||
	    (n = keys_bn_b64(key, OSSL_PKEY_PARAM_RSA_N, 0)) == NULL)
		goto out;
	jwk = json_pack("{s:s, s:s, s:s}", "e", e, "kty", "RSA", "n", n);
	if (jwk == NULL)
		fatalx("keys_jwk: json_pack");
out:
	free(e);
	free(n);
	return jwk;
}

json_t *
keys_jwk(EVP_PKEY *key)
{
	int	 curve;

	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC:
		if ((curve = keys_curve(key)) == -1)
			break;
		return keys_jwk_ec(key, curve);
	case EVP_PKEY_RSA:
		return keys_jwk_rsa(key);
	}
	log_warnx("keys_jwk: unsupported key");
	return NULL;
}

char *
keys_thumbprint(EVP_PKEY *key)
{
	json_t		*jwk = NULL;
	char		*text = NULL, *tp = NULL;
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen;

	if ((jwk = keys_jwk(key)) == NULL)
		goto out;
	/*
	 * RFC 7638 3.2: only the required members (all keys_jwk emits), in
	 * lexicographic order, no whitespace.  The values are base64url
	 * or fixed names, so no escaping question arises.
	 */
	if ((text = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		fatalx("keys_thumbprint: json_dumps");
	if (!EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL)) {
		log_openssl("keys_thumbprint");
		goto out;
	}
	tp = b64url_encode(md, mdlen);
out:
	free(text);
	json_decref(jwk);
	return tp;
}

char *
keys_key_authorization(const char *token, const char *thumbprint)
{
	char	*ka;

	xasprintf(&ka, "%s.%s", token, thumbprint);
	return ka;
}

/*
 * RFC 8738 IP identifier?  A stand-in for conf_ident_is_ip() so this file
 * does not depend on conf.c; the raw address goes to *addr (4 or 16 bytes).
 */
static int
keys_ident_ip(const char *ident, unsigned char *addr, int *len)
{
	if (inet_pton(AF_INET, ident, addr) == 1) {
		*len = 4;
		return 1;
	}
	if (inet_pton(AF_INET6, ident, addr) == 1) {
		*len = 16;
		return 1;
	}
	return 0;
}

/* One subjectAltName entry: dNSName or iPAddress. */
static GENERAL_NAME *
keys_csr_gen(const char *ident)
{
	GENERAL_NAME		*gen;
	ASN1_OCTET_STRING	*os;
	ASN1_IA5STRING		*ia5;
	unsigned char		 addr[16];
	int			 len;

	if ((gen = GENERAL_NAME_new()) == NULL)
		fatalx("keys_csr: GENERAL_NAME_new");
	if (keys_ident_ip(ident, addr, &len)) {
		if ((os = ASN1_OCTET_STRING_new()) == NULL ||
		    !ASN1_OCTET_STRING_set(os, addr, len))
			fatalx("keys_csr: ASN1_OCTET_STRING");
		GENERAL_NAME_set0_value(gen, GEN_IPADD, os);
	} else {
		if ((ia5 = ASN1_IA5STRING_new()) == NULL ||
		    !ASN1_STRING_set(ia5, ident, -1))
			fatalx("keys_csr: ASN1_IA5STRING");
		GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
	}
	return gen;
}

static int
keys_csr_san(X509_REQ *req, char *const *idents, size_t n)
{
	GENERAL_NAMES			*gens = NULL;
	STACK_OF(X509_EXTENSION)	*exts = NULL;
	GENERAL_NAME			*gen;
	size_t				 i;
	int				 rc = -1;

	if ((gens = GENERAL_NAMES_new()) == NULL)
		fatalx("keys_csr: GENERAL_NAMES_new");
	for (i = 0; i < n; i++) {
		gen = keys_csr_gen(idents[i]);
		if (!sk_GENERAL_NAME_push(gens, gen)) {
			GENERAL_NAME_free(gen);
			fatalx("keys_csr: sk_GENERAL_NAME_push");
		}
	}
	if (X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 0,
	    X509V3_ADD_DEFAULT) != 1 || !X509_REQ_add_extensions(req, exts)) {
		log_openssl("keys_csr: subjectAltName");
		goto out;
	}
	rc = 0;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	return rc;
}

/*
 * With common_name_in_csr on, CN = the first identifier when it is a DNS
 * name that fits in a CN; otherwise, and by default (nginx-acme 0.4), an
 * empty subject: the names are in subjectAltName alone, which is all a
 * CA reads, and a CN may only repeat one of them.
 */
static int
keys_csr_subject(X509_REQ *req, const char *first, int with_cn)
{
	X509_NAME	*name;
	unsigned char	 addr[16];
	int		 len;

	if (!with_cn || keys_ident_ip(first, addr, &len) ||
	    strlen(first) > KEYS_CN_MAX)
		return 0;
	if ((name = X509_REQ_get_subject_name(req)) == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	    (const unsigned char *)first, -1, -1, 0)) {
		log_openssl("keys_csr: subject");
		return -1;
	}
	return 0;
}

/* A digest as strong as the key; SHA-256 for RSA. */
static const EVP_MD *
keys_csr_md(EVP_PKEY *key)
{
	int	 curve;

	if ((curve = keys_curve(key)) == -1)
		return EVP_sha256();
	return keys_curves[curve].md();
}

/*
 * The request's SubjectPublicKeyInfo.  For an EC key it is filled from
 * the key's point: X509_REQ_set_pubkey() goes through OpenSSL 3.0's
 * encoder search and then decodes what it encoded, 2.2M instructions a
 * CSR (callgrind), where this takes a parameter lookup.
 */
static int
keys_csr_pubkey(X509_REQ *req, EVP_PKEY *key)
{
	unsigned char	 pub[KEYS_EC_PUB_MAX], *copy;
	size_t		 len;
	int		 curve;

	if ((curve = keys_curve(key)) == -1)
		return X509_REQ_set_pubkey(req, key) ? 0 : -1;
	if (keys_ec_point(key, pub, &len) == -1)
		return -1;
	if ((copy = OPENSSL_memdup(pub, len)) == NULL)
		fatalx("keys_csr: out of memory");
	if (!X509_PUBKEY_set0_param(X509_REQ_get_X509_PUBKEY(req),
	    OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
	    OBJ_nid2obj(keys_curves[curve].nid), copy, (int)len)) {
		OPENSSL_free(copy);
		return -1;
	}
	return 0;
}

char *
keys_csr(EVP_PKEY *key, char *const *idents, size_t n, int with_cn)
{
	X509_REQ	*req = NULL;
	unsigned char	*der = NULL;
	char		*csr = NULL;
	int		 len;

	if (n == 0) {
		log_warnx("keys_csr: no identifiers");
		goto out;
	}
	if ((req = X509_REQ_new()) == NULL)
		fatalx("keys_csr: X509_REQ_new");
	if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
	    keys_csr_pubkey(req, key) == -1) {
		log_openssl("keys_csr");
		goto out;
	}
	if (keys_csr_subject(req, idents[0], with_cn) != 0 ||
	    keys_csr_san(req, idents, n) != 0)
		goto out;
	if (X509_REQ_sign(req, key, keys_csr_md(key)) <= 0) {
		log_openssl("keys_csr: sign");
		goto out;
	}
	if ((len = i2d_X509_REQ(req, &der)) <= 0) {
		log_openssl("keys_csr: i2d_X509_REQ");
		goto out;
	}
	csr = b64url_encode(der, (size_t)len);
out:
	OPENSSL_free(der);
	X509_REQ_free(req);
	return csr;
}

/*
 * RFC 8737 section 3: the acmeIdentifier extension (id-pe 31), critical,
 * whose value is an OCTET STRING of SHA-256(key authorization).
 */
#define KEYS_ALPN_OID		"1.3.6.1.5.5.7.1.31"
#define KEYS_ALPN_DAYS		7	/* lives for one authorization */

static int
keys_alpn_ext(X509 *x, const char *keyauth)
{
	unsigned char		 digest[SHA256_DIGEST_LENGTH];
	ASN1_OCTET_STRING	*hash = NULL, *value = NULL;
	ASN1_OBJECT		*oid = NULL;
	X509_EXTENSION		*ext = NULL;
	unsigned char		*der = NULL;
	int			 len, rc = -1;

	SHA256((const unsigned char *)keyauth, strlen(keyauth), digest);
	if ((hash = ASN1_OCTET_STRING_new()) == NULL ||
	    !ASN1_OCTET_STRING_set(hash, digest, sizeof(digest)) ||
	    (len = i2d_ASN1_OCTET_STRING(hash, &der)) <= 0 ||
	    (value = ASN1_OCTET_STRING_new()) == NULL ||
	    !ASN1_OCTET_STRING_set(value, der, len) ||
	    (oid = OBJ_txt2obj(KEYS_ALPN_OID, 1)) == NULL ||
	    (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value)) == NULL ||
	    !X509_add_ext(x, ext, -1)) {
		log_openssl("keys_alpn_cert: acmeIdentifier");
		goto out;
	}
	rc = 0;
out:
	X509_EXTENSION_free(ext);
	ASN1_OBJECT_free(oid);
	ASN1_OCTET_STRING_free(value);
	ASN1_OCTET_STRING_free(hash);
	OPENSSL_free(der);
	return rc;
}

/* The identifier alone in subjectAltName: dNSName or iPAddress. */
static int
keys_alpn_san(X509 *x, const char *ident)
{
	GENERAL_NAMES	*gens;
	GENERAL_NAME	*gen;
	int		 rc = 0;

	if ((gens = GENERAL_NAMES_new()) == NULL)
		fatalx("keys_alpn_cert: GENERAL_NAMES_new");
	gen = keys_csr_gen(ident);
	if (!sk_GENERAL_NAME_push(gens, gen)) {
		GENERAL_NAME_free(gen);
		fatalx("keys_alpn_cert: sk_GENERAL_NAME_push");
	}
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
	    X509V3_ADD_DEFAULT) != 1) {
		log_openssl("keys_alpn_cert: subjectAltName");
		rc = -1;
	}
	GENERAL_NAMES_free(gens);
	return rc;
}

/*
 * The self-signed validation certificate of tls-alpn-01 for ident, with
 * key (RFC 8737 section 3).  A random serial and a validity from a day
 * back, so a CA whose clock is behind ours still takes it.
 */
X509 *
keys_alpn_cert(EVP_PKEY *key, const char *ident, const char *keyauth)
{
	X509		*x;
	ASN1_INTEGER	*serial;
	BIGNUM		*bn;

	if ((x = X509_new()) == NULL || (bn = BN_new()) == NULL)
		fatalx("keys_alpn_cert: X509_new");
	if (!BN_rand(bn, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    (serial = X509_get_serialNumber(x)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, serial) == NULL ||
	    !X509_set_version(x, X509_VERSION_3) ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -24L * 3600) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x),
	    KEYS_ALPN_DAYS * 24L * 3600) == NULL ||
	    !X509_set_pubkey(x, key)) {
		log_openssl("keys_alpn_cert");
		goto fail;
	}
	BN_free(bn);
	bn = NULL;
	if (keys_alpn_san(x, ident) != 0 || keys_alpn_ext(x, keyauth) != 0)
		goto fail;
	if (X509_sign(x, key, keys_csr_md(key)) <= 0) {
		log_openssl("keys_alpn_cert: sign");
		goto fail;
	}
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}
