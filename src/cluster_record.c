/*
 * The values replicas keep in Redis, written and read.  Anything can be
 * found under the prefix (another program, an older version, a person
 * with redis-cli), so a value is trusted only once every field has the
 * right type and size, its sealed key opens for the name it is stored
 * under, and that key matches the certificate.  A value that fails is
 * described in *cause and never used.
 *
 *   PREFIX:cert:ID   {"v":1, "id", "issuer", "identifiers":[...],
 *                     "key_type", "chain", "key":SEALED, "not_before",
 *                     "not_after", "renew_at", "fence", "node", "stored"}
 *   PREFIX:order:ID  {"v":1, "id", "issuer", "url", "identifiers":[...],
 *                     "key":SEALED, "fence", "node"}
 *   PREFIX:account:ISSUER {"v":1, "uri", "url", "key":SEALED}
 *   PREFIX:ari:ID    {"v":1, "id", "cert_id", "start", "end", "renew_at",
 *                     "next_fetch"[, "explanation_url"], "fence", "node"}
 *
 * The ARI record is what the last fetch of renewalInfo said of the
 * certificate named by cert_id (ari.c's STATE/ari/ID.json, shared): every
 * replica renews at its renew_at, and none asks the CA before next_fetch.
 *
 * The sealed keys' associated data is the Redis key name itself.
 */
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"

#define REC_VERSION		1
#define REC_MAX_CHAIN		(64 * 1024)
#define REC_MAX_IDENTS		100
#define REC_MAX_STRING		4096

void
cluster_rec_clear(struct cluster_rec *rec)
{
	size_t	 i;

	free(rec->cr_id);
	free(rec->cr_issuer);
	free(rec->cr_url);
	free(rec->cr_chain);
	free(rec->cr_node);
	for (i = 0; i < rec->cr_nidents; i++)
		free(rec->cr_idents[i]);
	free(rec->cr_idents);
	EVP_PKEY_free(rec->cr_key);
	memset(rec, 0, sizeof(*rec));
}

static json_t *
cluster_rec_idents(char *const *idents, size_t n)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < n; i++)
		json_array_append_new(a, json_string(idents[i]));
	return a;
}

static char *
cluster_rec_dump(json_t *o)
{
	char	*s;

	if ((s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json_dumps", __func__);
	json_decref(o);
	return s;
}

/* The key in PKCS#8 PEM, sealed under name; NULL if it does not encode. */
static char *
cluster_rec_seal_key(const char *name, EVP_PKEY *key)
{
	char	*pem, *sealed;

	if ((pem = keys_to_pem(key)) == NULL)
		return NULL;
	sealed = cluster_seal(cluster_key(), name, pem, strlen(pem));
	keys_pem_free(pem);
	return sealed;
}

char *
cluster_rec_cert_json(const char *name, const struct cluster_rec *rec)
{
	json_t	*o;
	char	*sealed;

	if ((sealed = cluster_rec_seal_key(name, rec->cr_key)) == NULL)
		return NULL;
	o = json_pack("{s:i, s:s, s:s, s:o, s:s, s:s, s:s, s:I, s:I, s:I, "
	    "s:I, s:s, s:I}", "v", REC_VERSION, "id", rec->cr_id,
	    "issuer", rec->cr_issuer, "identifiers",
	    cluster_rec_idents(rec->cr_idents, rec->cr_nidents),
	    "key_type", key_type_name(rec->cr_key_type), "chain", rec->cr_chain,
	    "key", sealed, "not_before", (json_int_t)rec->cr_not_before,
	    "not_after", (json_int_t)rec->cr_not_after,
	    "renew_at", (json_int_t)rec->cr_renew_at,
	    "fence", (json_int_t)rec->cr_fence, "node", cluster_node(),
	    "stored", (json_int_t)util_now());
	free(sealed);
	if (o == NULL)
		fatalx("%s: json_pack", __func__);
	return cluster_rec_dump(o);
}

char *
cluster_rec_order_json(const char *name, const struct cluster_rec *rec)
{
	json_t	*o;
	char	*sealed;

	if ((sealed = cluster_rec_seal_key(name, rec->cr_key)) == NULL)
		return NULL;
	o = json_pack("{s:i, s:s, s:s, s:s, s:o, s:s, s:I, s:s}",
	    "v", REC_VERSION, "id", rec->cr_id, "issuer", rec->cr_issuer,
	    "url", rec->cr_url, "identifiers",
	    cluster_rec_idents(rec->cr_idents, rec->cr_nidents),
	    "key", sealed, "fence", (json_int_t)rec->cr_fence,
	    "node", cluster_node());
	free(sealed);
	if (o == NULL)
		fatalx("%s: json_pack", __func__);
	return cluster_rec_dump(o);
}

char *
cluster_rec_account_json(const char *name, const char *uri, const char *url,
    EVP_PKEY *key)
{
	json_t	*o;
	char	*sealed;

	if ((sealed = cluster_rec_seal_key(name, key)) == NULL)
		return NULL;
	o = json_pack("{s:i, s:s, s:s, s:s}", "v", REC_VERSION, "uri", uri,
	    "url", url, "key", sealed);
	free(sealed);
	if (o == NULL)
		fatalx("%s: json_pack", __func__);
	return cluster_rec_dump(o);
}

/* Reading. */

static const char *
cluster_rec_str(json_t *o, const char *field, size_t max, char **cause)
{
	json_t		*v = json_object_get(o, field);
	const char	*s = json_string_value(v);

	if (s == NULL) {
		xasprintf(cause, "\"%s\" is %s", field, v == NULL ? "missing" :
		    "not a string");
		return NULL;
	}
	if (json_string_length(v) > max || strlen(s) != json_string_length(v)) {
		xasprintf(cause, "\"%s\" is too long or holds a NUL", field);
		return NULL;
	}
	return s;
}

static int
cluster_rec_int(json_t *o, const char *field, json_int_t min, json_int_t *out,
    char **cause)
{
	json_t	*v = json_object_get(o, field);

	if (!json_is_integer(v) || json_integer_value(v) < min) {
		xasprintf(cause, "\"%s\" is %s", field, v == NULL ? "missing" :
		    "not a whole number in range");
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

static int
cluster_rec_get_idents(json_t *o, struct cluster_rec *rec, char **cause)
{
	json_t		*a = json_object_get(o, "identifiers"), *v;
	const char	*s;
	size_t		 i;

	if (!json_is_array(a) || json_array_size(a) == 0 ||
	    json_array_size(a) > REC_MAX_IDENTS) {
		xasprintf(cause, "\"identifiers\" is not a list of 1 to %d "
		    "names", REC_MAX_IDENTS);
		return -1;
	}
	rec->cr_idents = xcalloc(json_array_size(a), sizeof(char *));
	json_array_foreach(a, i, v) {
		if ((s = json_string_value(v)) == NULL || strlen(s) == 0 ||
		    strlen(s) > 255 || strlen(s) != json_string_length(v)) {
			xasprintf(cause, "\"identifiers\" holds something that "
			    "is not a name");
			return -1;
		}
		rec->cr_idents[rec->cr_nidents++] = xstrdup(s);
	}
	return 0;
}

/* The sealed "key" field, opened for name and parsed. */
static int
cluster_rec_get_key(json_t *o, const char *name, struct cluster_rec *rec,
    char **cause)
{
	const char	*sealed;
	unsigned char	*pem = NULL;
	size_t		 len = 0;
	char		*why = NULL;

	if ((sealed = cluster_rec_str(o, "key", REC_MAX_STRING * 4, cause)) ==
	    NULL)
		return -1;
	if (cluster_unseal(cluster_key(), name, sealed, &pem, &len, &why) ==
	    -1) {
		xasprintf(cause, "its key: %s", why);
		free(why);
		return -1;
	}
	rec->cr_key = keys_from_pem((char *)pem, len, &why);
	explicit_bzero(pem, len);
	free(pem);
	if (rec->cr_key == NULL) {
		xasprintf(cause, "its key does not parse: %s", why != NULL ?
		    why : "?");
		free(why);
		return -1;
	}
	return 0;
}

static json_t *
cluster_rec_open(const char *text, size_t len, char **cause)
{
	json_t		*o;
	json_error_t	 err;
	json_int_t	 v;

	if ((o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err)) == NULL) {
		xasprintf(cause, "not JSON (%s)", err.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		xasprintf(cause, "not a JSON object");
		goto fail;
	}
	if (cluster_rec_int(o, "v", 0, &v, cause) == -1)
		goto fail;
	if (v != REC_VERSION) {
		xasprintf(cause, "version %lld, this node reads %d",
		    (long long)v, REC_VERSION);
		goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

/* The fields both a certificate and an order have. */
static int
cluster_rec_common(json_t *o, const char *name, const char *id,
    struct cluster_rec *rec, char **cause)
{
	const char	*s;
	json_int_t	 fence;

	if ((s = cluster_rec_str(o, "id", REC_MAX_STRING, cause)) == NULL)
		return -1;
	if (strcmp(s, id) != 0) {
		xasprintf(cause, "it is certificate \"%s\", not \"%s\"", s, id);
		return -1;
	}
	rec->cr_id = xstrdup(s);
	if ((s = cluster_rec_str(o, "issuer", REC_MAX_STRING, cause)) == NULL)
		return -1;
	rec->cr_issuer = xstrdup(s);
	if ((s = cluster_rec_str(o, "node", REC_MAX_STRING, cause)) == NULL)
		return -1;
	rec->cr_node = xstrdup(s);
	if (cluster_rec_int(o, "fence", 1, &fence, cause) == -1 ||
	    cluster_rec_get_idents(o, rec, cause) == -1 ||
	    cluster_rec_get_key(o, name, rec, cause) == -1)
		return -1;
	rec->cr_fence = (uint64_t)fence;
	return 0;
}

int
cluster_rec_cert_parse(const char *name, const char *id, const char *text,
    size_t len, struct cluster_rec *rec, char **cause)
{
	json_t		*o;
	const char	*s;
	json_int_t	 renew;
	enum key_type	 type;
	char		*why = NULL;
	int		 rc = -1;

	memset(rec, 0, sizeof(*rec));
	if ((o = cluster_rec_open(text, len, cause)) == NULL)
		return -1;
	if (cluster_rec_common(o, name, id, rec, cause) == -1)
		goto out;
	if ((s = cluster_rec_str(o, "key_type", 32, cause)) == NULL)
		goto out;
	if (key_type_parse(s, &rec->cr_key_type) == -1) {
		xasprintf(cause, "\"key_type\" \"%s\" is unknown", s);
		goto out;
	}
	if ((s = cluster_rec_str(o, "chain", REC_MAX_CHAIN, cause)) == NULL)
		goto out;
	rec->cr_chain = xstrdup(s);
	if (cluster_rec_int(o, "renew_at", 0, &renew, cause) == -1)
		goto out;
	rec->cr_renew_at = (time_t)renew;
	/* The dates are the certificate's own, whatever the JSON says. */
	if (store_chain_dates(rec->cr_chain, &rec->cr_not_before,
	    &rec->cr_not_after) == -1) {
		xasprintf(cause, "\"chain\" holds no certificate");
		goto out;
	}
	if (store_check_pair(id, rec->cr_chain, rec->cr_key, &why) == -1) {
		xasprintf(cause, "%s", why);
		free(why);
		goto out;
	}
	/* Matching names to the configuration needs the key's real type. */
	if (store_key_type(rec->cr_key, &type) == -1 ||
	    type != rec->cr_key_type) {
		xasprintf(cause, "\"key_type\" is %s, but the key is not",
		    key_type_name(rec->cr_key_type));
		goto out;
	}
	rc = 0;
out:
	json_decref(o);
	if (rc == -1)
		cluster_rec_clear(rec);
	return rc;
}

int
cluster_rec_order_parse(const char *name, const char *id, const char *text,
    size_t len, struct cluster_rec *rec, char **cause)
{
	json_t		*o;
	const char	*s;
	int		 rc = -1;

	memset(rec, 0, sizeof(*rec));
	if ((o = cluster_rec_open(text, len, cause)) == NULL)
		return -1;
	if (cluster_rec_common(o, name, id, rec, cause) == -1)
		goto out;
	if ((s = cluster_rec_str(o, "url", REC_MAX_STRING, cause)) == NULL)
		goto out;
	if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) {
		xasprintf(cause, "\"url\" is not an http(s) URL");
		goto out;
	}
	rec->cr_url = xstrdup(s);
	rc = 0;
out:
	json_decref(o);
	if (rc == -1)
		cluster_rec_clear(rec);
	return rc;
}

int
cluster_rec_account_parse(const char *name, const char *text, size_t len,
    struct cluster_rec *rec, char **cause)
{
	json_t		*o;
	const char	*s;
	int		 rc = -1;

	memset(rec, 0, sizeof(*rec));
	if ((o = cluster_rec_open(text, len, cause)) == NULL)
		return -1;
	if ((s = cluster_rec_str(o, "uri", REC_MAX_STRING, cause)) == NULL)
		goto out;
	rec->cr_issuer = xstrdup(s);	/* the directory URI */
	if ((s = cluster_rec_str(o, "url", REC_MAX_STRING, cause)) == NULL)
		goto out;
	if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) {
		xasprintf(cause, "\"url\" is not an http(s) URL");
		goto out;
	}
	rec->cr_url = xstrdup(s);
	if (cluster_rec_get_key(o, name, rec, cause) == -1)
		goto out;
	rc = 0;
out:
	json_decref(o);
	if (rc == -1)
		cluster_rec_clear(rec);
	return rc;
}

/* "TOKEN.THUMBPRINT" for token, as keys_key_authorization() makes it. */
int
cluster_rec_keyauth_ok(const char *token, const char *ka, size_t len)
{
	size_t	 tlen = strlen(token), i;

	if (len <= tlen + 1 || len > CHALLENGE_TOKEN_MAX + 1 + 64 ||
	    strncmp(ka, token, tlen) != 0 || ka[tlen] != '.')
		return 0;
	for (i = tlen + 1; i < len; i++) {
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789-_", ka[i]) == NULL || ka[i] == '\0')
			return 0;
	}
	return 1;
}

/*
 * PREFIX:ari:ID: ari.c's own JSON, plus the record's version, the
 * certificate's id, the writer's fence and name.
 */
char *
cluster_rec_ari_json(const char *id, const struct ari_state *as,
    uint64_t fence)
{
	json_t		*o;
	json_error_t	 err;
	char		*text;

	text = ari_state_json(as);
	o = json_loads(text, 0, &err);
	free(text);
	if (o == NULL)
		fatalx("%s: ari_state_json: %s", __func__, err.text);
	if (json_object_set_new(o, "v", json_integer(REC_VERSION)) == -1 ||
	    json_object_set_new(o, "id", json_string(id)) == -1 ||
	    json_object_set_new(o, "fence", json_integer((json_int_t)fence)) ==
	    -1 || json_object_set_new(o, "node", json_string(cluster_node())) ==
	    -1)
		fatalx("%s: json_object_set_new", __func__);
	return cluster_rec_dump(o);
}

/*
 * Checked as STATE/ari/ID.json is (ari_state_parse()), and it must be
 * this certificate's, of this version, written under a fence.
 */
int
cluster_rec_ari_parse(const char *id, const char *text, size_t len,
    struct ari_state *as, char **cause)
{
	json_t		*o;
	const char	*s;
	json_int_t	 fence;
	int		 rc = -1;

	if (len > ARI_MAX_BODY) {
		xasprintf(cause, "larger than %d bytes", ARI_MAX_BODY);
		return -1;
	}
	if ((o = cluster_rec_open(text, len, cause)) == NULL)
		return -1;
	if ((s = cluster_rec_str(o, "id", REC_MAX_STRING, cause)) == NULL)
		goto out;
	if (strcmp(s, id) != 0) {
		xasprintf(cause, "it is certificate \"%s\", not \"%s\"", s, id);
		goto out;
	}
	if (cluster_rec_str(o, "node", REC_MAX_STRING, cause) == NULL ||
	    cluster_rec_int(o, "fence", 1, &fence, cause) == -1)
		goto out;
	rc = ari_state_parse(text, len, as, cause);
out:
	json_decref(o);
	return rc;
}
