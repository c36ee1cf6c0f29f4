/*
 * RFC 7515 JWS in the flattened JSON serialisation, as RFC 8555 section
 * 6.2 uses it: every ACME POST goes through jws_sign, so it stays cheap.
 * The JWK is only derived for requests that carry it (newAccount and
 * revocation by certificate key); kid requests never touch it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>

#include "sidecar.h"

#define JWS_SIG_MAX	1024	/* RSA 8192; ECDSA DER for P-521 is ~140 */
#define JWS_EC_MAX	66	/* P-521 field size in bytes */

struct jws_algo {
	const char	*group;		/* OpenSSL EC group, NULL for RSA */
	const char	*name;		/* JWS "alg" */
	const char	*md;		/* digest name */
	size_t		 size;		/* R and S length, 0 for RSA */
};

static const struct jws_algo jws_algos[] = {
	{ "prime256v1", "ES256", "SHA256", 32 },
	{ "secp384r1", "ES384", "SHA384", 48 },
	{ "secp521r1", "ES512", "SHA512", 66 },
	{ NULL, "RS256", "SHA256", 0 },
};

/*
 * RFC 7518 3.1: the algorithm this key signs with, or NULL.  Parameter
 * lookups only, no allocation: this runs on every request.
 */
static const struct jws_algo *
jws_algo(EVP_PKEY *key)
{
	char	 group[64];
	size_t	 i, len;
	int	 id;

	id = EVP_PKEY_get_base_id(key);
	if (id == EVP_PKEY_EC && !EVP_PKEY_get_utf8_string_param(key,
	    OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len))
		return NULL;
	for (i = 0; i < sizeof(jws_algos) / sizeof(jws_algos[0]); i++) {
		if (id == EVP_PKEY_RSA && jws_algos[i].group == NULL)
			return &jws_algos[i];
		if (id == EVP_PKEY_EC && jws_algos[i].group != NULL &&
		    strcmp(group, jws_algos[i].group) == 0)
			return &jws_algos[i];
	}
	return NULL;
}

const char *
jws_alg(EVP_PKEY *key)
{
	const struct jws_algo	*a;

	if ((a = jws_algo(key)) == NULL)
		return NULL;
	return a->name;
}

/*
 * RFC 7518 3.4: JWS wants R || S, each left-padded to the field size,
 * where OpenSSL produces a DER SEQUENCE of two INTEGERs.
 */
static int
jws_ecdsa_raw(const unsigned char *der, size_t derlen, size_t size,
    unsigned char *raw)
{
	ECDSA_SIG	*sig = NULL;
	const BIGNUM	*r, *s;
	int		 rc = -1;

	if ((sig = d2i_ECDSA_SIG(NULL, &der, (long)derlen)) == NULL) {
		log_openssl("jws_sign: d2i_ECDSA_SIG");
		goto out;
	}
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, raw, (int)size) < 0 ||
	    BN_bn2binpad(s, raw + size, (int)size) < 0) {
		log_warnx("jws_sign: ECDSA signature larger than the field");
		goto out;
	}
	rc = 0;
out:
	ECDSA_SIG_free(sig);
	return rc;
}

/*
 * Sign "protected.payload" and return the JWS signature value, base64url.
 * The pieces are fed to the digest in turn, so no joined copy is made.
 */
static char *
jws_signature(EVP_PKEY *key, const struct jws_algo *a, const char *prot,
    const char *payload)
{
	EVP_MD_CTX	*ctx = NULL;
	unsigned char	 der[JWS_SIG_MAX], raw[2 * JWS_EC_MAX];
	size_t		 len = sizeof(der);
	char		*sig = NULL;

	if (EVP_PKEY_get_size(key) > (int)sizeof(der)) {
		log_warnx("jws_sign: key too large");
		goto out;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		fatalx("jws_sign: EVP_MD_CTX_new");
	if (!EVP_DigestSignInit_ex(ctx, NULL, a->md, NULL, NULL, key, NULL) ||
	    !EVP_DigestSignUpdate(ctx, prot, strlen(prot)) ||
	    !EVP_DigestSignUpdate(ctx, ".", 1) ||
	    !EVP_DigestSignUpdate(ctx, payload, strlen(payload)) ||
	    !EVP_DigestSignFinal(ctx, der, &len)) {
		log_openssl("jws_sign: %s", a->name);
		goto out;
	}
	if (a->size == 0) {
		sig = b64url_encode(der, len);
		goto out;
	}
	if (jws_ecdsa_raw(der, len, a->size, raw) != 0)
		goto out;
	sig = b64url_encode(raw, 2 * a->size);
out:
	EVP_MD_CTX_free(ctx);
	return sig;
}

/*
 * Whether s goes between JSON quotes as it is: printable ASCII without a
 * quote or a backslash, as the kid, nonce and URLs of a CA are.
 */
static int
jws_json_plain(const char *s)
{
	const unsigned char	*p;

	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
			return 0;
	}
	return 1;
}

/* The protected header as JSON text, which the caller frees; or NULL. */
static char *
jws_header(EVP_PKEY *key, const struct jws_algo *a, const char *kid,
    const char *nonce, const char *url)
{
	json_t	*hdr = NULL, *jwk = NULL;
	char	*text = NULL;

	/*
	 * Every request but newAccount's: the text json_dumps() would give
	 * (jansson keeps the members' order and escapes no '/'), without
	 * building an object and dumping it each time.  Anything else goes
	 * through jansson, which escapes it.
	 */
	if (kid != NULL && nonce != NULL && jws_json_plain(kid) &&
	    jws_json_plain(nonce) && jws_json_plain(url)) {
		xasprintf(&text, "{\"alg\":\"%s\",\"kid\":\"%s\","
		    "\"nonce\":\"%s\",\"url\":\"%s\"}", a->name, kid, nonce,
		    url);
		return text;
	}
	if (kid != NULL) {
		hdr = json_pack("{s:s, s:s, s:s, s:s}", "alg", a->name,
		    "kid", kid, "nonce", nonce, "url", url);
	} else {
		if ((jwk = keys_jwk(key)) == NULL)
			goto out;
		/* "o" steals the reference, even on failure. */
		hdr = json_pack("{s:s, s:o, s:s}", "alg", a->name,
		    "jwk", jwk, "url", url);
		/* keyChange's inner JWS has none (RFC 8555 7.3.5). */
		if (hdr != NULL && nonce != NULL &&
		    json_object_set_new(hdr, "nonce", json_string(nonce)) == -1) {
			json_decref(hdr);
			hdr = NULL;
		}
	}
	if (hdr == NULL) {
		/* Only invalid UTF-8 from the server gets here. */
		log_warnx("jws_sign: cannot build the protected header");
		goto out;
	}
	if ((text = json_dumps(hdr, JSON_COMPACT)) == NULL)
		fatalx("jws_sign: json_dumps");
out:
	json_decref(hdr);
	return text;
}

/* The protected header, base64url. */
static char *
jws_protected(EVP_PKEY *key, const struct jws_algo *a, const char *kid,
    const char *nonce, const char *url)
{
	char	*text, *prot;

	if ((text = jws_header(key, a, kid, nonce, url)) == NULL)
		return NULL;
	prot = b64url_encode(text, strlen(text));
	free(text);
	return prot;
}

/* With kid NULL, the key's jwk is sent; nonce NULL only for jws_sign_inner. */
static char *
jws_make(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
    const char *payload)
{
	const struct jws_algo	*a;
	const char		*body = "";
	char			*prot = NULL, *b64 = NULL, *sig = NULL;
	char			*jws = NULL;

	if ((a = jws_algo(key)) == NULL) {
		log_warnx("jws_sign: unsupported key");
		goto out;
	}
	if ((prot = jws_protected(key, a, kid, nonce, url)) == NULL)
		goto out;
	/* POST-as-GET (RFC 8555 6.3) signs and sends the empty string. */
	if (payload != NULL && *payload != '\0')
		body = b64 = b64url_encode(payload, strlen(payload));
	if ((sig = jws_signature(key, a, prot, body)) == NULL)
		goto out;
	/*
	 * All three values are base64url, which JSON never escapes, so a
	 * format string gives the same text as json_dumps without building
	 * and freeing an object on every request.
	 */
	xasprintf(&jws, "{\"protected\":\"%s\",\"payload\":\"%s\","
	    "\"signature\":\"%s\"}", prot, body, sig);
out:
	free(prot);
	free(b64);
	free(sig);
	return jws;
}

char *
jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
    const char *payload)
{
	if (nonce == NULL || url == NULL) {
		log_warnx("jws_sign: missing nonce or url");
		return NULL;
	}
	return jws_make(key, kid, nonce, url, payload);
}

/*
 * The inner JWS of keyChange: signed by the new key, with its jwk, the
 * same url as the outer one and no nonce; the outer JWS is the replay
 * protection.
 */
char *
jws_sign_inner(EVP_PKEY *key, const char *url, const char *payload)
{
	if (url == NULL || payload == NULL) {
		log_warnx("jws_sign_inner: missing url or payload");
		return NULL;
	}
	return jws_make(key, NULL, NULL, url, payload);
}

json_t *
jws_eab(const char *kid, const unsigned char *hmac, size_t hmaclen,
    EVP_PKEY *account, const char *url)
{
	json_t		*hdr = NULL, *jwk = NULL, *eab = NULL;
	char		*htext = NULL, *jtext = NULL;
	char		*prot = NULL, *body = NULL, *sig = NULL, *input = NULL;
	unsigned char	 mac[EVP_MAX_MD_SIZE];
	size_t		 maclen;

	if (kid == NULL || url == NULL || hmac == NULL || hmaclen == 0) {
		log_warnx("jws_eab: missing kid, url or key");
		goto out;
	}
	if ((jwk = keys_jwk(account)) == NULL)
		goto out;
	if ((hdr = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", kid,
	    "url", url)) == NULL) {
		log_warnx("jws_eab: cannot build the protected header");
		goto out;
	}
	if ((htext = json_dumps(hdr, JSON_COMPACT)) == NULL ||
	    (jtext = json_dumps(jwk, JSON_COMPACT)) == NULL)
		fatalx("jws_eab: json_dumps");
	prot = b64url_encode(htext, strlen(htext));
	body = b64url_encode(jtext, strlen(jtext));
	xasprintf(&input, "%s.%s", prot, body);
	if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hmac, hmaclen,
	    (const unsigned char *)input, strlen(input), mac, sizeof(mac),
	    &maclen) == NULL) {
		log_openssl("jws_eab: HMAC");
		goto out;
	}
	sig = b64url_encode(mac, maclen);
	OPENSSL_cleanse(mac, sizeof(mac));
	eab = json_pack("{s:s, s:s, s:s}", "protected", prot, "payload", body,
	    "signature", sig);
	if (eab == NULL)
		fatalx("jws_eab: json_pack");
out:
	json_decref(hdr);
	json_decref(jwk);
	free(htext);
	free(jtext);
	free(prot);
	free(body);
	free(sig);
	free(input);
	return eab;
}
