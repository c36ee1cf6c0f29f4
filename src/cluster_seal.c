/*
 * Sealing what reaches Redis: private keys never leave a node in clear.
 *
 * The key is HKDF-SHA256 of secret_file's contents, so any 32 bytes or
 * more of random text will do, base64 or not.  Every value is sealed with
 * AES-256-GCM under a fresh 96-bit random nonce, with the name it is
 * stored under as associated data:
 *
 *   s1.KEYID.BASE64URL(nonce[12] | ciphertext | tag[16])
 *
 * KEYID is a hash of the key, not of the secret, and tells a node with
 * another secret_file apart from a value that is damaged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "sidecar.h"

#define SEAL_MAGIC	"s1."
#define SEAL_INFO	"acme-sidecar cluster seal v1"
#define SEAL_NONCE_LEN	12
#define SEAL_TAG_LEN	16
#define SEAL_MAX_PLAIN	(1024 * 1024)	/* keys are a few KB */

int
cluster_seal_derive(const char *secret, size_t len,
    unsigned char key[CLUSTER_KEY_LEN])
{
	EVP_KDF		*kdf;
	EVP_KDF_CTX	*kctx = NULL;
	OSSL_PARAM	 params[4];
	int		 rc = -1;

	if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL)
		return -1;
	if ((kctx = EVP_KDF_CTX_new(kdf)) == NULL)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
	    (void *)secret, len);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
	    (void *)SEAL_INFO, strlen(SEAL_INFO));
	params[3] = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, key, CLUSTER_KEY_LEN, params) == 1)
		rc = 0;
out:
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return rc;
}

void
cluster_seal_key_id(const unsigned char key[CLUSTER_KEY_LEN],
    char id[CLUSTER_KEY_ID_LEN + 1])
{
	static const char	 label[] = "acme-sidecar key id";
	unsigned char		 md[EVP_MAX_MD_SIZE], buf[sizeof(label) +
				    CLUSTER_KEY_LEN];
	unsigned int		 mdlen = 0;
	int			 i;

	memcpy(buf, label, sizeof(label));
	memcpy(buf + sizeof(label), key, CLUSTER_KEY_LEN);
	if (EVP_Digest(buf, sizeof(buf), md, &mdlen, EVP_sha256(), NULL) != 1)
		fatalx("%s: EVP_Digest", __func__);
	explicit_bzero(buf, sizeof(buf));
	for (i = 0; i < CLUSTER_KEY_ID_LEN / 2; i++)
		snprintf(id + 2 * i, 3, "%02x", md[i]);
}

/* One AES-256-GCM pass; enc 1 seals, 0 opens (checking tag). */
static int
cluster_seal_gcm(int enc, const unsigned char *key, const unsigned char *nonce,
    const char *name, const unsigned char *in, size_t len, unsigned char *out,
    unsigned char *tag)
{
	EVP_CIPHER_CTX	*ctx;
	int		 n, rc = -1;

	if (len > SEAL_MAX_PLAIN || (ctx = EVP_CIPHER_CTX_new()) == NULL)
		return -1;
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce,
	    enc) != 1 ||
	    EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)name,
	    (int)strlen(name)) != 1 ||
	    EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
		goto out;
	if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG,
	    SEAL_TAG_LEN, tag) != 1)
		goto out;
	if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1)
		goto out;
	if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
	    SEAL_TAG_LEN, tag) != 1)
		goto out;
	rc = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return rc;
}

char *
cluster_seal(const unsigned char key[CLUSTER_KEY_LEN], const char *name,
    const void *plain, size_t len)
{
	unsigned char	*box;
	char		 id[CLUSTER_KEY_ID_LEN + 1], *b64, *s;
	size_t		 boxlen = SEAL_NONCE_LEN + len + SEAL_TAG_LEN;

	if (len > SEAL_MAX_PLAIN)
		fatalx("%s: %zu bytes is too much to seal", __func__, len);
	box = xmalloc(boxlen);
	if (RAND_bytes(box, SEAL_NONCE_LEN) != 1)
		fatalx("%s: RAND_bytes", __func__);
	if (cluster_seal_gcm(1, key, box, name, plain, len,
	    box + SEAL_NONCE_LEN, box + SEAL_NONCE_LEN + len) == -1)
		fatalx("%s: AES-256-GCM failed", __func__);
	b64 = b64url_encode(box, boxlen);
	free(box);
	cluster_seal_key_id(key, id);
	xasprintf(&s, SEAL_MAGIC "%s.%s", id, b64);
	free(b64);
	return s;
}

int
cluster_unseal(const unsigned char key[CLUSTER_KEY_LEN], const char *name,
    const char *sealed, unsigned char **plain, size_t *plainlen, char **cause)
{
	unsigned char	*box = NULL, *out = NULL;
	char		 id[CLUSTER_KEY_ID_LEN + 1];
	const char	*p;
	size_t		 boxlen = 0, len;
	int		 rc = -1;

	*plain = NULL;
	*plainlen = 0;
	cluster_seal_key_id(key, id);
	if (strncmp(sealed, SEAL_MAGIC, strlen(SEAL_MAGIC)) != 0) {
		*cause = xstrdup("not a sealed value");
		goto out;
	}
	p = sealed + strlen(SEAL_MAGIC);
	if (strlen(p) <= CLUSTER_KEY_ID_LEN || p[CLUSTER_KEY_ID_LEN] != '.') {
		*cause = xstrdup("a sealed value without its key id");
		goto out;
	}
	if (strncmp(p, id, CLUSTER_KEY_ID_LEN) != 0) {
		xasprintf(cause, "sealed with another secret_file (key id "
		    "%.*s; this node's is %s)", CLUSTER_KEY_ID_LEN, p, id);
		goto out;
	}
	if (b64url_decode(p + CLUSTER_KEY_ID_LEN + 1, &box, &boxlen) == -1 ||
	    boxlen < SEAL_NONCE_LEN + SEAL_TAG_LEN) {
		*cause = xstrdup("a sealed value that is truncated or not "
		    "base64url");
		goto out;
	}
	len = boxlen - SEAL_NONCE_LEN - SEAL_TAG_LEN;
	out = xmalloc(len + 1);
	if (cluster_seal_gcm(0, key, box, name, box + SEAL_NONCE_LEN, len, out,
	    box + SEAL_NONCE_LEN + len) == -1) {
		xasprintf(cause, "a sealed value that does not open: damaged, "
		    "or stored under another name than \"%s\"", name);
		explicit_bzero(out, len + 1);
		free(out);
		goto out;
	}
	out[len] = '\0';
	*plain = out;
	*plainlen = len;
	rc = 0;
out:
	free(box);
	return rc;
}
