/*
 * What a replica reads back from Redis (src/cluster_record.c,
 * src/cluster_seal.c): certificate, order, account and ARI records, a
 * shared token's key authorization, and a sealed value on its own (the
 * fleet's secret check).
 *
 * A record's "key" is opened with cluster_key(), the running link's.  The
 * harness is linked with --wrap=cluster_key,--wrap=cluster_node: the key
 * comes from a fixed secret (FUZZ_SECRET) and the node is "fuzz".  The
 * seeds are sealed under that key for the names below, so their keys
 * open and mutations of the other fields reach the checks past the key.
 *
 * Input: byte 0 picks the parser, the rest is the value as GET returns
 * it; for a key authorization, "TOKEN\nVALUE".
 *
 * Checked besides the sanitizers: a refused value comes back as a cause
 * and an empty record; an accepted record, written out again by the
 * builders, reads back the same (an ARI record: with a window that does
 * not end before it starts, and times a renewal can be armed with); an accepted key authorization starts
 * with "TOKEN." and holds no NUL, as challenge_add() will take it.
 *
 * FUZZ_CLUSTER_SEEDS=DIR build/fuzz/fuzz_cluster writes the seeds of
 * corpus/cluster/ into DIR and exits.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sidecar.h"

#include "fuzz.h"

#define FUZZ_SECRET	"fuzz_cluster: a fixed secret_file, 32 bytes or more"
#define FUZZ_OTHER	"another fleet's secret_file, 32 bytes or more"
#define FUZZ_NODE	"fuzz"
#define FUZZ_ID		"www.example.com"
#define FUZZ_CERT_NAME	"fuzz:cert:" FUZZ_ID
#define FUZZ_ORDER_NAME	"fuzz:order:" FUZZ_ID
#define FUZZ_ACCT_NAME	"fuzz:account:pebble"
#define FUZZ_SEAL_NAME	"fuzz:seal"
#define FUZZ_SEAL_CHECK	"acme-sidecar secret check"	/* cluster_sync.c */

enum {
	FUZZ_CERT,
	FUZZ_ORDER,
	FUZZ_ACCOUNT,
	FUZZ_KEYAUTH,
	FUZZ_UNSEAL,
	FUZZ_RUNTIME,		/* a field of PREFIX:runtime */
	FUZZ_ARI,		/* PREFIX:ari:ID */
	FUZZ_KINDS
};

const unsigned char	*__wrap_cluster_key(void);
const char		*__wrap_cluster_node(void);

static unsigned char	 fuzz_key[CLUSTER_KEY_LEN];

const unsigned char *
__wrap_cluster_key(void)
{
	return fuzz_key;
}

const char *
__wrap_cluster_node(void)
{
	return FUZZ_NODE;
}

/* stderr is /dev/null (fuzz.h): say it on descriptor 2, then crash. */
static void __attribute__((noreturn))
fuzz_broken(const char *what, const char *detail)
{
	dprintf(STDERR_FILENO, "fuzz_cluster: %s%s%s\n", what,
	    detail != NULL ? ": " : "", detail != NULL ? detail : "");
	abort();
}

#define FUZZ_ASSERT(c) do {						\
	if (!(c))							\
		fuzz_broken("does not hold", #c);			\
} while (0)

/* Exactly size bytes, no NUL after them: the parsers take a length. */
static char *
fuzz_copy(const uint8_t *data, size_t size)
{
	char	*p;

	if ((p = malloc(size)) == NULL)
		abort();
	memcpy(p, data, size);
	return p;
}

static const char *
fuzz_name(int kind)
{
	switch (kind) {
	case FUZZ_CERT:
		return FUZZ_CERT_NAME;
	case FUZZ_ORDER:
		return FUZZ_ORDER_NAME;
	default:
		return FUZZ_ACCT_NAME;
	}
}

static int
fuzz_parse(int kind, const char *text, size_t len, struct cluster_rec *rec,
    char **cause)
{
	switch (kind) {
	case FUZZ_CERT:
		return cluster_rec_cert_parse(FUZZ_CERT_NAME, FUZZ_ID, text,
		    len, rec, cause);
	case FUZZ_ORDER:
		return cluster_rec_order_parse(FUZZ_ORDER_NAME, FUZZ_ID, text,
		    len, rec, cause);
	default:
		return cluster_rec_account_parse(FUZZ_ACCT_NAME, text, len,
		    rec, cause);
	}
}

static char *
fuzz_build(int kind, const struct cluster_rec *rec)
{
	switch (kind) {
	case FUZZ_CERT:
		return cluster_rec_cert_json(FUZZ_CERT_NAME, rec);
	case FUZZ_ORDER:
		return cluster_rec_order_json(FUZZ_ORDER_NAME, rec);
	default:
		return cluster_rec_account_json(FUZZ_ACCT_NAME, rec->cr_issuer,
		    rec->cr_url, rec->cr_key);
	}
}

static int
fuzz_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Everything a reader uses; the node is the writer's, so it differs. */
static void
fuzz_same(const struct cluster_rec *a, const struct cluster_rec *b)
{
	size_t	 i;

	FUZZ_ASSERT(fuzz_str_eq(a->cr_id, b->cr_id));
	FUZZ_ASSERT(fuzz_str_eq(a->cr_issuer, b->cr_issuer));
	FUZZ_ASSERT(fuzz_str_eq(a->cr_url, b->cr_url));
	FUZZ_ASSERT(fuzz_str_eq(a->cr_chain, b->cr_chain));
	FUZZ_ASSERT(a->cr_nidents == b->cr_nidents);
	for (i = 0; i < a->cr_nidents; i++)
		FUZZ_ASSERT(strcmp(a->cr_idents[i], b->cr_idents[i]) == 0);
	FUZZ_ASSERT(a->cr_key_type == b->cr_key_type);
	FUZZ_ASSERT(a->cr_not_before == b->cr_not_before);
	FUZZ_ASSERT(a->cr_not_after == b->cr_not_after);
	FUZZ_ASSERT(a->cr_renew_at == b->cr_renew_at);
	FUZZ_ASSERT(a->cr_fence == b->cr_fence);
	FUZZ_ASSERT(EVP_PKEY_eq(a->cr_key, b->cr_key) == 1);
}

static void
fuzz_record(int kind, const uint8_t *data, size_t size)
{
	static const struct cluster_rec	 empty;
	struct cluster_rec		 rec, again;
	char				*text, *json, *cause = NULL;

	text = fuzz_copy(data, size);
	if (fuzz_parse(kind, text, size, &rec, &cause) == -1) {
		FUZZ_ASSERT(cause != NULL && *cause != '\0');
		/* As sync_parse() does; shown with FUZZ_VERBOSE=1. */
		log_warnx("cluster: %s: ignored: %s", fuzz_name(kind), cause);
		FUZZ_ASSERT(memcmp(&rec, &empty, sizeof(rec)) == 0);
		free(cause);
		free(text);
		return;
	}
	FUZZ_ASSERT(cause == NULL && rec.cr_key != NULL);
	log_debug("cluster: %s: accepted", fuzz_name(kind));
	if (kind != FUZZ_ACCOUNT)
		FUZZ_ASSERT(rec.cr_nidents > 0 && rec.cr_fence > 0);
	if ((json = fuzz_build(kind, &rec)) == NULL)
		fuzz_broken("an accepted record does not write out", NULL);
	if (fuzz_parse(kind, json, strlen(json), &again, &cause) == -1)
		fuzz_broken("an accepted record, written out, is refused",
		    cause);
	fuzz_same(&rec, &again);
	cluster_rec_clear(&again);
	cluster_rec_clear(&rec);
	free(json);
	free(text);
}

static void
fuzz_keyauth(const uint8_t *data, size_t size)
{
	const uint8_t	*nl;
	char		*token, *ka;
	size_t		 tlen, len;

	if ((nl = memchr(data, '\n', size)) == NULL)
		return;
	tlen = (size_t)(nl - data);
	token = xstrndup((const char *)data, tlen);
	/* sync_remote_token() asks only for a token that is valid. */
	if (!challenge_token_valid(token)) {
		free(token);
		return;
	}
	tlen = strlen(token);
	len = size - (size_t)(nl - data) - 1;
	ka = fuzz_copy(nl + 1, len);
	if (cluster_rec_keyauth_ok(token, ka, len)) {
		FUZZ_ASSERT(len > tlen + 1);
		FUZZ_ASSERT(memcmp(ka, token, tlen) == 0 && ka[tlen] == '.');
		FUZZ_ASSERT(memchr(ka, '\0', len) == NULL);
	}
	free(ka);
	free(token);
}

static void
fuzz_unseal(const uint8_t *data, size_t size)
{
	unsigned char	*plain = NULL;
	size_t		 len = 1;
	char		*sealed, *cause = NULL;

	/* A GET reply, read as a C string as sync_seal_checked() does. */
	sealed = xstrndup((const char *)data, size);
	if (cluster_unseal(fuzz_key, FUZZ_SEAL_NAME, sealed, &plain, &len,
	    &cause) == -1) {
		FUZZ_ASSERT(cause != NULL && plain == NULL && len == 0);
		log_warnx("cluster: %s: %s", FUZZ_SEAL_NAME, cause);
		free(cause);
	} else {
		FUZZ_ASSERT(cause == NULL && plain != NULL &&
		    plain[len] == '\0');
		explicit_bzero(plain, len);
		free(plain);
	}
	free(sealed);
}

/* A field of PREFIX:runtime: whole, or refused with a cause. */
static void
fuzz_runtime(const uint8_t *data, size_t size)
{
	struct cluster_runtime	 cr;
	char			*cause = NULL;
	size_t			 i;

	if (cluster_runtime_parse("c0.example.test", (const char *)data, size,
	    &cr, &cause) == -1) {
		FUZZ_ASSERT(cause != NULL && cr.cr_id == NULL &&
		    cr.cr_idents == NULL);
		free(cause);
		return;
	}
	FUZZ_ASSERT(cause == NULL && strcmp(cr.cr_id, "c0.example.test") == 0);
	if (!cr.cr_deleted) {
		FUZZ_ASSERT(cr.cr_issuer != NULL && *cr.cr_issuer != '\0');
		FUZZ_ASSERT(cr.cr_key != NULL && *cr.cr_key != '\0');
		FUZZ_ASSERT(cr.cr_nidents >= 1 && cr.cr_nidents <= 100);
		for (i = 0; i < cr.cr_nidents; i++)
			FUZZ_ASSERT(*cr.cr_idents[i] != '\0');
		/* Optional, as "profile": a name, checked by conf. */
		FUZZ_ASSERT(cr.cr_challenge == NULL ||
		    strlen(cr.cr_challenge) >= 1);
	} else
		FUZZ_ASSERT(cr.cr_challenge == NULL && cr.cr_issuer == NULL);
	cluster_runtime_clear(&cr);
}

/* PREFIX:ari:ID: whole and sane, or refused with a cause. */
static void
fuzz_ari(const uint8_t *data, size_t size)
{
	struct ari_state	 as, again;
	char			*cause = NULL, *json;

	memset(&as, 0, sizeof(as));
	memset(&again, 0, sizeof(again));
	if (cluster_rec_ari_parse(FUZZ_ID, (const char *)data, size, &as,
	    &cause) == -1) {
		FUZZ_ASSERT(cause != NULL && as.as_cert_id == NULL &&
		    as.as_explanation == NULL && as.as_end == 0);
		free(cause);
		return;
	}
	FUZZ_ASSERT(cause == NULL && as.as_cert_id != NULL &&
	    *as.as_cert_id != '\0' && strlen(as.as_cert_id) <=
	    ARI_CERT_ID_MAX);
	FUZZ_ASSERT(as.as_start <= as.as_end && as.as_start >= 0 &&
	    as.as_renew_at >= 0 && as.as_next_fetch >= 0);
	json = cluster_rec_ari_json(FUZZ_ID, &as, 7);
	if (cluster_rec_ari_parse(FUZZ_ID, json, strlen(json), &again,
	    &cause) == -1)
		fuzz_broken("an accepted ARI record does not read back", cause);
	FUZZ_ASSERT(strcmp(as.as_cert_id, again.as_cert_id) == 0 &&
	    as.as_start == again.as_start && as.as_end == again.as_end &&
	    as.as_renew_at == again.as_renew_at &&
	    as.as_next_fetch == again.as_next_fetch &&
	    fuzz_str_eq(as.as_explanation, again.as_explanation));
	free(json);
	ari_state_clear(&again);
	ari_state_clear(&as);
}

/* The seeds. */

static void
fuzz_seed(const char *dir, const char *file, int kind, const char *value,
    size_t len)
{
	char	 path[PATH_MAX];
	FILE	*f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if ((f = fopen(path, "w")) == NULL || fputc(kind, f) == EOF ||
	    fwrite(value, 1, len, f) != len || fclose(f) != 0)
		fuzz_broken("cannot write", path);
}

static void
fuzz_seed_str(const char *dir, const char *file, int kind, const char *value)
{
	fuzz_seed(dir, file, kind, value, strlen(value));
}

/* A self-signed certificate for key, as a chain of one. */
static char *
fuzz_seed_chain(EVP_PKEY *key, const char *cn)
{
	X509		*x;
	X509_NAME	*name;
	BIO		*bio;
	char		*data, *pem;
	long		 len;

	if ((x = X509_new()) == NULL || X509_set_version(x, 2) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), 1700000000) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), 1707776000) == NULL)
		abort();
	name = X509_get_subject_name(x);
	if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, key) != 1 ||
	    X509_sign(x, key, EVP_sha256()) <= 0 ||
	    (bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509(bio, x) != 1)
		abort();
	len = BIO_get_mem_data(bio, &data);
	pem = xstrndup(data, (size_t)len);
	BIO_free(bio);
	X509_free(x);
	return pem;
}

static void
fuzz_seed_rec(struct cluster_rec *rec, enum key_type type)
{
	static char	*idents[] = { FUZZ_ID, "example.com" };

	memset(rec, 0, sizeof(*rec));
	rec->cr_id = FUZZ_ID;
	rec->cr_issuer = "pebble";
	rec->cr_url = "https://ca.example.net/order/1234";
	rec->cr_idents = idents;
	rec->cr_nidents = 2;
	rec->cr_key_type = type;
	if ((rec->cr_key = keys_generate(type)) == NULL)
		abort();
	rec->cr_chain = fuzz_seed_chain(rec->cr_key, FUZZ_ID);
	if (store_chain_dates(rec->cr_chain, &rec->cr_not_before,
	    &rec->cr_not_after) == -1)
		abort();
	rec->cr_renew_at = rec->cr_not_after - 30 * 86400;
	rec->cr_fence = 7;
}

static void
fuzz_seed_rec_free(struct cluster_rec *rec)
{
	free(rec->cr_chain);
	EVP_PKEY_free(rec->cr_key);
}

/* An account record whose sealed "key" opens to text, a key or not. */
static void
fuzz_seed_account_key(const char *dir, const char *file, const char *text)
{
	json_t	*o;
	char	*sealed, *s;

	sealed = cluster_seal(fuzz_key, FUZZ_ACCT_NAME, text, strlen(text));
	if ((o = json_pack("{s:i, s:s, s:s, s:s}", "v", 1, "uri",
	    "https://ca.example.net/dir", "url",
	    "https://ca.example.net/acct/1", "key", sealed)) == NULL ||
	    (s = json_dumps(o, JSON_COMPACT)) == NULL)
		abort();
	fuzz_seed_str(dir, file, FUZZ_ACCOUNT, s);
	free(s);
	json_decref(o);
	free(sealed);
}

/* ARI records: one as a replica writes it, and some it must refuse. */
static void
fuzz_seed_ari(const char *dir)
{
	struct ari_state	 as;
	char			*s;

	memset(&as, 0, sizeof(as));
	as.as_cert_id = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
	as.as_start = 1700000000;
	as.as_end = 1700172800;
	as.as_renew_at = 1700090000;
	as.as_next_fetch = 1700021600;
	as.as_explanation = "https://ca.example.net/why";
	s = cluster_rec_ari_json(FUZZ_ID, &as, 7);
	fuzz_seed_str(dir, "ari", FUZZ_ARI, s);
	fuzz_seed(dir, "ari-truncated", FUZZ_ARI, s, strlen(s) / 2);
	free(s);
	s = cluster_rec_ari_json("mail.example.com", &as, 7);
	fuzz_seed_str(dir, "ari-other-id", FUZZ_ARI, s);
	free(s);
	fuzz_seed_str(dir, "ari-backwards", FUZZ_ARI, "{\"v\":1,\"id\":\""
	    FUZZ_ID "\",\"cert_id\":\"a.b\",\"start\":9,\"end\":8,"
	    "\"renew_at\":8,\"next_fetch\":0,\"fence\":1,\"node\":\"n\"}");
	fuzz_seed_str(dir, "ari-no-fence", FUZZ_ARI, "{\"v\":1,\"id\":\""
	    FUZZ_ID "\",\"cert_id\":\"a.b\",\"start\":1,\"end\":8,"
	    "\"renew_at\":8,\"next_fetch\":0,\"node\":\"n\"}");
}

static void
fuzz_seeds(const char *dir)
{
	struct cluster_rec	 ec, rsa;
	EVP_PKEY		*ed;
	unsigned char		 own[CLUSTER_KEY_LEN];
	char			*s, *v, *tp, *ka;

	fuzz_seed_rec(&ec, KEY_ECDSA_256);
	fuzz_seed_rec(&rsa, KEY_RSA_2048);

	s = cluster_rec_cert_json(FUZZ_CERT_NAME, &ec);
	fuzz_seed_str(dir, "cert-ecdsa", FUZZ_CERT, s);
	fuzz_seed(dir, "cert-truncated", FUZZ_CERT, s, strlen(s) / 2);
	/* A version this node does not read. */
	if ((v = strstr(s, "\"v\":1")) == NULL)
		abort();
	v[4] = '2';
	fuzz_seed_str(dir, "cert-v2", FUZZ_CERT, s);
	free(s);
	s = cluster_rec_cert_json(FUZZ_CERT_NAME, &rsa);
	fuzz_seed_str(dir, "cert-rsa", FUZZ_CERT, s);
	free(s);
	/* Sealed for another name, then copied under www's. */
	s = cluster_rec_cert_json("fuzz:cert:mail.example.com", &ec);
	fuzz_seed_str(dir, "cert-moved", FUZZ_CERT, s);
	free(s);
	/* The certificate of one key, the key of another. */
	free(ec.cr_chain);
	ec.cr_chain = xstrdup(rsa.cr_chain);
	s = cluster_rec_cert_json(FUZZ_CERT_NAME, &ec);
	fuzz_seed_str(dir, "cert-mismatch", FUZZ_CERT, s);
	free(s);

	s = cluster_rec_order_json(FUZZ_ORDER_NAME, &ec);
	fuzz_seed_str(dir, "order", FUZZ_ORDER, s);
	fuzz_seed(dir, "order-truncated", FUZZ_ORDER, s, strlen(s) - 20);
	free(s);
	/* Another fleet's secret_file. */
	memcpy(own, fuzz_key, sizeof(own));
	if (cluster_seal_derive(FUZZ_OTHER, strlen(FUZZ_OTHER), fuzz_key) == -1)
		abort();
	s = cluster_rec_order_json(FUZZ_ORDER_NAME, &ec);
	fuzz_seed_str(dir, "order-other-secret", FUZZ_ORDER, s);
	free(s);
	s = cluster_seal(fuzz_key, FUZZ_SEAL_NAME, FUZZ_SEAL_CHECK,
	    strlen(FUZZ_SEAL_CHECK));
	fuzz_seed_str(dir, "seal-other-secret", FUZZ_UNSEAL, s);
	free(s);
	memcpy(fuzz_key, own, sizeof(own));
	fuzz_seed_str(dir, "order-foreign", FUZZ_ORDER,
	    "{\"status\":\"pending\",\"expires\":\"2024-01-01T00:00:00Z\","
	    "\"identifiers\":[{\"type\":\"dns\",\"value\":\"www.example.com\"}],"
	    "\"finalize\":\"https://ca.example.net/finalize/1\"}");

	s = cluster_rec_account_json(FUZZ_ACCT_NAME,
	    "https://ca.example.net/dir", "https://ca.example.net/acct/1",
	    rsa.cr_key);
	fuzz_seed_str(dir, "account", FUZZ_ACCOUNT, s);
	free(s);
	fuzz_seed_account_key(dir, "account-key-not-pem", "not a key");
	/* A key this daemon does not use: Ed25519. */
	if ((ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL ||
	    (s = keys_to_pem(ed)) == NULL)
		abort();
	fuzz_seed_account_key(dir, "account-key-ed25519", s);
	keys_pem_free(s);
	EVP_PKEY_free(ed);
	fuzz_seed_str(dir, "account-not-object", FUZZ_ACCOUNT,
	    "[\"https://ca.example.net/dir\",1]");
	fuzz_seed_str(dir, "account-pem", FUZZ_ACCOUNT,
	    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n");

	tp = keys_thumbprint(ec.cr_key);
	ka = keys_key_authorization("tok_en-1", tp);
	xasprintf(&s, "tok_en-1\n%s", ka);
	fuzz_seed_str(dir, "keyauth", FUZZ_KEYAUTH, s);
	free(s);
	xasprintf(&s, "tok_en-2\n%s", ka);
	fuzz_seed_str(dir, "keyauth-other-token", FUZZ_KEYAUTH, s);
	free(s);
	fuzz_seed(dir, "keyauth-nul", FUZZ_KEYAUTH, "abc\nabc.de\0f", 12);
	free(ka);
	free(tp);

	s = cluster_seal(fuzz_key, FUZZ_SEAL_NAME, FUZZ_SEAL_CHECK,
	    strlen(FUZZ_SEAL_CHECK));
	fuzz_seed_str(dir, "seal", FUZZ_UNSEAL, s);
	free(s);
	s = cluster_seal(fuzz_key, FUZZ_SEAL_NAME, "", 0);
	fuzz_seed_str(dir, "seal-empty", FUZZ_UNSEAL, s);
	free(s);

	fuzz_seed_str(dir, "runtime", FUZZ_RUNTIME, "{\"v\":1,\"issuer\":"
	    "\"pebble\",\"identifiers\":[\"a.example.test\",\"b.example."
	    "test\"],\"key\":\"ecdsa:256\"}");
	fuzz_seed_str(dir, "runtime-challenge", FUZZ_RUNTIME, "{\"v\":1,"
	    "\"issuer\":\"pebble\",\"identifiers\":[\"*.example.test\"],"
	    "\"key\":\"ecdsa:256\",\"challenge\":\"dns-01\"}");
	fuzz_seed_str(dir, "runtime-deleted", FUZZ_RUNTIME,
	    "{\"v\":1,\"deleted\":true}");
	fuzz_seed_str(dir, "runtime-foreign", FUZZ_RUNTIME,
	    "{\"v\":1,\"issuer\":7,\"identifiers\":\"a\"}");

	fuzz_seed_ari(dir);
	fuzz_seed_rec_free(&ec);
	fuzz_seed_rec_free(&rsa);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char	*dir;

	(void)argc;
	(void)argv;
	fuzz_quiet();
	log_init(getenv("FUZZ_VERBOSE") != NULL);
	if (cluster_seal_derive(FUZZ_SECRET, strlen(FUZZ_SECRET),
	    fuzz_key) == -1)
		abort();
	if ((dir = getenv("FUZZ_CLUSTER_SEEDS")) != NULL) {
		fuzz_seeds(dir);
		exit(0);
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 256 * 1024)
		return 0;
	switch (data[0] % FUZZ_KINDS) {
	case FUZZ_CERT:
	case FUZZ_ORDER:
	case FUZZ_ACCOUNT:
		fuzz_record(data[0] % FUZZ_KINDS, data + 1, size - 1);
		break;
	case FUZZ_KEYAUTH:
		fuzz_keyauth(data + 1, size - 1);
		break;
	case FUZZ_UNSEAL:
		fuzz_unseal(data + 1, size - 1);
		break;
	case FUZZ_RUNTIME:
		fuzz_runtime(data + 1, size - 1);
		break;
	case FUZZ_ARI:
		fuzz_ari(data + 1, size - 1);
		break;
	}
	return 0;
}
