/*
 * store.c: what a user sees in state_path after saves, replacements and
 * crashes.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sidecar.h"
#include "test_util.h"

#define TS_NB	1700000000	/* 2023-11-14 */
#define TS_NA	1707776000	/* 2024-02-12 */

struct ts {
	char	 dir[64];
};

static int
ts_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
ts_setup(void **state)
{
	struct ts	*ts;

	ts = xcalloc(1, sizeof(*ts));
	snprintf(ts->dir, sizeof(ts->dir), "/tmp/test_store.XXXXXX");
	if (mkdtemp(ts->dir) == NULL)
		return -1;
	*state = ts;
	return 0;
}

static int
ts_teardown(void **state)
{
	struct ts	*ts = *state;

	nftw(ts->dir, ts_rm, 16, FTW_DEPTH | FTW_PHYS);
	free(ts);
	return 0;
}

/* A fresh state_path inside the test's folder. */
static char *
ts_state(struct ts *ts)
{
	char	*dir, *cause = NULL;

	xasprintf(&dir, "%s/issuer", ts->dir);
	if (store_init(dir, &cause) != 0)
		fail_msg("store_init: %s", cause);
	return dir;
}

static EVP_PKEY *
ts_key(void)
{
	EVP_PKEY	*key;

	key = EVP_EC_gen("P-256");
	assert_non_null(key);
	return key;
}

static mode_t
ts_mode(const char *dir, const char *rel)
{
	struct stat	 sb;
	char		*path;

	xasprintf(&path, "%s/%s", dir, rel);
	if (stat(path, &sb) == -1)
		fail_msg("stat %s: %s", path, strerror(errno));
	free(path);
	return sb.st_mode & 07777;
}

static int
ts_exists(const char *dir, const char *rel)
{
	struct stat	 sb;
	char		*path;
	int		 rc;

	xasprintf(&path, "%s/%s", dir, rel);
	rc = lstat(path, &sb) == 0;
	free(path);
	return rc;
}

static void
ts_write(const char *dir, const char *rel, const char *text)
{
	char	*path;
	FILE	*f;

	xasprintf(&path, "%s/%s", dir, rel);
	f = fopen(path, "w");
	if (f == NULL)
		fail_msg("fopen %s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
	free(path);
}

/* Entries of a folder whose name starts with prefix. */
static int
ts_count(const char *dir, const char *prefix)
{
	struct dirent	*de;
	DIR		*d;
	int		 n = 0;

	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static void
ts_meta(struct cert_meta *m)
{
	memset(m, 0, sizeof(*m));
	m->cm_not_before = 1;		/* must be ignored on load */
	m->cm_not_after = 2;
	m->cm_issued = 1700003600;
	m->cm_url = xstrdup("https://ca.test/cert/1");
	m->cm_nidents = 2;
	m->cm_idents = xcalloc(2, sizeof(char *));
	m->cm_idents[0] = xstrdup("example.com");
	m->cm_idents[1] = xstrdup("www.example.com");
	m->cm_key = KEY_ECDSA_256;
}

static void
test_init(void **state)
{
	struct ts	*ts = *state;
	char		*dir, *cause = NULL;

	xasprintf(&dir, "%s/a/b/issuer", ts->dir);
	assert_int_equal(store_init(dir, &cause), 0);
	assert_int_equal(ts_mode(dir, ""), 0700);
	assert_int_equal(ts_mode(dir, "certs"), 0700);
	/* Idempotent. */
	assert_int_equal(store_init(dir, &cause), 0);
	free(dir);

	ts_write(ts->dir, "file", "x");
	xasprintf(&dir, "%s/file", ts->dir);
	assert_int_equal(store_init(dir, &cause), -1);
	assert_non_null(strstr(cause, "not a directory"));
	free(cause);
	free(dir);
}

static void
test_write_atomic(void **state)
{
	struct ts	*ts = *state;
	char		*path, *cause = NULL;
	FILE		*f;
	char		 buf[64];
	size_t		 n;

	xasprintf(&path, "%s/f", ts->dir);
	assert_int_equal(store_write_atomic(path, "one", 3, 0600, &cause), 0);
	assert_int_equal(store_write_atomic(path, "second", 6, 0640, &cause),
	    0);
	assert_int_equal(ts_mode(ts->dir, "f"), 0640);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_int_equal(n, 6);
	assert_memory_equal(buf, "second", 6);
	free(path);

	/* A failed rename (onto a folder) leaves no temp file behind. */
	xasprintf(&path, "%s/sub", ts->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(store_write_atomic(path, "x", 1, 0600, &cause), -1);
	assert_non_null(strstr(cause, path));
	free(cause);
	assert_int_equal(ts_count(ts->dir, "."), 2);	/* "." and ".." */
	free(path);

	/* A missing folder is an error naming it. */
	xasprintf(&path, "%s/missing/f", ts->dir);
	assert_int_equal(store_write_atomic(path, "x", 1, 0600, &cause), -1);
	assert_non_null(strstr(cause, "missing"));
	free(cause);
	free(path);
}

static void
test_account_absent(void **state)
{
	struct ts	*ts = *state;
	EVP_PKEY	*key = (EVP_PKEY *)1;
	char		*dir, *url = (char *)1, *cause = NULL;

	dir = ts_state(ts);
	assert_int_equal(store_load_account(dir, &key, &url, &cause), 1);
	assert_null(key);
	assert_null(url);

	/* A URL without a key: still 1, the URL is handed back. */
	assert_int_equal(store_save_account_url(dir, "https://ca/acct/9",
	    &cause), 0);
	assert_int_equal(store_load_account(dir, &key, &url, &cause), 1);
	assert_null(key);
	assert_string_equal(url, "https://ca/acct/9");
	free(url);
	free(dir);
}

static void
test_account_roundtrip(void **state)
{
	struct ts	*ts = *state;
	EVP_PKEY	*key, *key2, *loaded = NULL;
	char		*dir, *url = NULL, *cause = NULL;

	dir = ts_state(ts);
	key = ts_key();
	assert_int_equal(store_save_account_key(dir, key, &cause), 0);
	assert_int_equal(ts_mode(dir, "account.key"), 0600);

	/* Key present, URL not yet registered. */
	assert_int_equal(store_load_account(dir, &loaded, &url, &cause), 0);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	assert_null(url);
	EVP_PKEY_free(loaded);

	assert_int_equal(store_save_account_url(dir, "https://ca/acct/1",
	    &cause), 0);
	assert_int_equal(store_save_account_url(dir, "https://ca/acct/2",
	    &cause), 0);
	assert_int_equal(store_load_account(dir, &loaded, &url, &cause), 0);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	assert_string_equal(url, "https://ca/acct/2");
	EVP_PKEY_free(loaded);
	free(url);

	/* The account key is never replaced. */
	key2 = ts_key();
	assert_int_equal(store_save_account_key(dir, key2, &cause), -1);
	assert_non_null(strstr(cause, "account.key"));
	free(cause);
	assert_int_equal(store_load_account(dir, &loaded, &url, &cause), 0);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	assert_int_equal(ts_count(dir, ".account"), 0);
	EVP_PKEY_free(loaded);
	free(url);

	EVP_PKEY_free(key2);
	EVP_PKEY_free(key);
	free(dir);
}

/*
 * A rollover's files: account.key.next is written 0600 and never
 * replaced, becomes account.key in one rename, or goes.
 */
static void
test_account_next(void **state)
{
	struct ts	*ts = *state;
	EVP_PKEY	*old, *next, *other, *loaded = NULL;
	char		*dir, *url = NULL, *cause = NULL;

	dir = ts_state(ts);
	old = ts_key();
	next = ts_key();
	other = ts_key();
	assert_int_equal(store_save_account_key(dir, old, &cause), 0);
	assert_int_equal(store_save_account_url(dir, "https://ca/acct/1",
	    &cause), 0);
	assert_int_equal(store_load_account_next(dir, &loaded, &cause), 1);

	assert_int_equal(store_save_account_next(dir, next, &cause), 0);
	assert_int_equal(ts_mode(dir, "account.key.next"), 0600);
	assert_int_equal(store_save_account_next(dir, other, &cause), -1);
	assert_non_null(strstr(cause, "account.key.next"));
	free(cause);
	cause = NULL;
	assert_int_equal(store_load_account_next(dir, &loaded, &cause), 0);
	assert_int_equal(EVP_PKEY_eq(next, loaded), 1);
	EVP_PKEY_free(loaded);

	/* Dropped: account.key stays. */
	assert_int_equal(store_drop_account_next(dir, &cause), 0);
	assert_int_equal(ts_exists(dir, "account.key.next"), 0);
	assert_int_equal(store_drop_account_next(dir, &cause), 0);
	assert_int_equal(store_load_account(dir, &loaded, &url, &cause), 0);
	assert_int_equal(EVP_PKEY_eq(old, loaded), 1);
	EVP_PKEY_free(loaded);
	free(url);

	/* Promoted: it is account.key, 0600, and the URL is kept. */
	assert_int_equal(store_save_account_next(dir, next, &cause), 0);
	assert_int_equal(store_promote_account_next(dir, &cause), 0);
	assert_int_equal(ts_exists(dir, "account.key.next"), 0);
	assert_int_equal(ts_mode(dir, "account.key"), 0600);
	assert_int_equal(store_load_account(dir, &loaded, &url, &cause), 0);
	assert_int_equal(EVP_PKEY_eq(next, loaded), 1);
	assert_string_equal(url, "https://ca/acct/1");
	EVP_PKEY_free(loaded);
	free(url);
	assert_int_equal(store_promote_account_next(dir, &cause), -1);
	free(cause);
	assert_int_equal(ts_count(dir, ".account"), 0);

	EVP_PKEY_free(old);
	EVP_PKEY_free(next);
	EVP_PKEY_free(other);
	free(dir);
}

/* Deactivated: the account is set aside, the marker names its URL. */
static void
test_account_deactivated(void **state)
{
	struct ts	*ts = *state;
	EVP_PKEY	*key, *loaded = NULL;
	char		*dir, *url = NULL, *cause = NULL;

	dir = ts_state(ts);
	key = ts_key();
	assert_int_equal(store_load_deactivated(dir, &url, &cause), 1);
	assert_int_equal(store_save_account_key(dir, key, &cause), 0);
	assert_int_equal(store_save_account_url(dir, "https://ca/acct/7",
	    &cause), 0);
	assert_int_equal(store_mark_deactivated(dir, "https://ca/acct/7",
	    &cause), 0);
	assert_int_equal(store_load_deactivated(dir, &url, &cause), 0);
	assert_string_equal(url, "https://ca/acct/7");
	free(url);
	assert_int_equal(ts_mode(dir, "account.deactivated"), 0600);
	assert_int_equal(ts_exists(dir, "account.key"), 0);
	assert_int_equal(ts_exists(dir, "account.url"), 0);
	assert_int_equal(ts_count(dir, "account.key.deactivated-"), 1);
	assert_int_equal(ts_count(dir, "account.url.deactivated-"), 1);
	/* No account now: the next registration starts from nothing. */
	assert_int_equal(store_load_account(dir, &loaded, &url, &cause), 1);

	EVP_PKEY_free(key);
	free(dir);
}

static void
test_account_corrupt(void **state)
{
	struct ts	*ts = *state;
	EVP_PKEY	*key = NULL;
	char		*dir, *url = NULL, *cause = NULL;

	dir = ts_state(ts);
	ts_write(dir, "account.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n"
	    "-----END PRIVATE KEY-----\n");
	ts_write(dir, "account.url", "https://ca/acct/1\n");
	assert_int_equal(store_load_account(dir, &key, &url, &cause), -1);
	assert_non_null(strstr(cause, "account.key"));
	assert_null(key);
	assert_null(url);
	free(cause);
	free(dir);
}

static void
test_cert_absent(void **state)
{
	struct ts		*ts = *state;
	struct cert_meta	 m;
	EVP_PKEY		*key = NULL;
	char			*dir, *chain = NULL, *cause = NULL;

	dir = ts_state(ts);
	assert_int_equal(store_load_cert(dir, "example.com", &chain, &key, &m,
	    &cause), 1);
	assert_null(chain);
	assert_null(key);
	assert_int_equal(store_load_cert(dir, "../x", &chain, &key, &m,
	    &cause), -1);
	free(cause);
	free(dir);
}

static void
test_cert_roundtrip(void **state)
{
	struct ts		*ts = *state;
	struct cert_meta	 m, got;
	EVP_PKEY		*key, *loaded = NULL;
	char			*dir, *pem, *chain = NULL, *cause = NULL;
	char			 target[PATH_MAX], *link;
	ssize_t			 n;
	json_t			*json;

	dir = ts_state(ts);
	key = ts_key();
	pem = tu_self_signed(key, TS_NB, TS_NA, "example.com");
	ts_meta(&m);
	assert_int_equal(store_save_cert(dir, "example.com", pem, key, &m,
	    &cause), 0);

	assert_int_equal(store_load_cert(dir, "example.com", &chain, &loaded,
	    &got, &cause), 0);
	assert_string_equal(chain, pem);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	assert_int_equal(got.cm_not_before, TS_NB);
	assert_int_equal(got.cm_not_after, TS_NA);
	assert_int_equal(got.cm_issued, 1700003600);
	assert_string_equal(got.cm_url, "https://ca.test/cert/1");
	assert_int_equal(got.cm_nidents, 2);
	assert_string_equal(got.cm_idents[0], "example.com");
	assert_string_equal(got.cm_idents[1], "www.example.com");
	assert_int_equal(got.cm_key, KEY_ECDSA_256);

	/* The layout users rely on. */
	assert_int_equal(ts_mode(dir, "certs/example.com/key.pem"), 0600);
	assert_int_equal(ts_mode(dir, "certs/example.com/fullchain.pem"),
	    0644);
	/* meta.json on disk tells the certificate's dates, not the caller's. */
	xasprintf(&link, "%s/certs/example.com/meta.json", dir);
	json = json_load_file(link, 0, NULL);
	assert_non_null(json);
	assert_int_equal(json_integer_value(json_object_get(json,
	    "not_before")), TS_NB);
	assert_int_equal(json_integer_value(json_object_get(json,
	    "not_after")), TS_NA);
	assert_string_equal(json_string_value(json_object_get(json, "key")),
	    "ecdsa:256");
	json_decref(json);
	free(link);
	xasprintf(&link, "%s/certs/example.com", dir);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_null(strchr(target, '/'));
	assert_int_equal(strncmp(target, "example.com@", 12), 0);

	free(link);
	store_meta_clear(&got);
	store_meta_clear(&m);
	EVP_PKEY_free(loaded);
	EVP_PKEY_free(key);
	free(chain);
	free(pem);
	free(dir);
}

/* Save n certificates for one id; the last one's key is returned. */
static EVP_PKEY *
ts_save_many(const char *dir, const char *id, int n, char **lastpem)
{
	struct cert_meta	 m;
	EVP_PKEY		*key = NULL;
	char			*cause = NULL;
	int			 i;

	ts_meta(&m);
	for (i = 0; i < n; i++) {
		EVP_PKEY_free(key);
		free(*lastpem);
		key = ts_key();
		*lastpem = tu_self_signed(key, TS_NB + i, TS_NA + i, id);
		if (store_save_cert(dir, id, *lastpem, key, &m, &cause) != 0)
			fail_msg("store_save_cert: %s", cause);
	}
	store_meta_clear(&m);
	return key;
}

static void
test_cert_replace(void **state)
{
	struct ts		*ts = *state;
	struct cert_meta	 got;
	EVP_PKEY		*key, *loaded = NULL;
	char			*dir, *certs, *pem = NULL, *chain = NULL;
	char			*cause = NULL;

	dir = ts_state(ts);
	xasprintf(&certs, "%s/certs", dir);
	key = ts_save_many(dir, "a.example", 3, &pem);
	/* Another id sharing the prefix must be left alone. */
	EVP_PKEY_free(ts_save_many(dir, "a.example.org", 1, &chain));
	free(chain);
	chain = NULL;

	assert_int_equal(store_load_cert(dir, "a.example", &chain, &loaded,
	    &got, &cause), 0);
	assert_string_equal(chain, pem);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	assert_int_equal(got.cm_not_before, TS_NB + 2);
	/*
	 * One generation folder for a.example; the other two entries are
	 * a.example.org's link and generation folder.
	 */
	assert_int_equal(ts_count(certs, "a.example@"), 1);
	assert_int_equal(ts_count(certs, "a.example."), 2);
	assert_int_equal(ts_count(certs, "a.example.org"), 2);
	assert_int_equal(ts_count(certs, ""), 2 + 4);
	assert_int_equal(ts_count(certs, "."), 2);
	store_meta_clear(&got);
	EVP_PKEY_free(loaded);
	free(chain);
	chain = NULL;

	assert_int_equal(store_load_cert(dir, "a.example.org", &chain, &loaded,
	    &got, &cause), 0);
	store_meta_clear(&got);
	EVP_PKEY_free(loaded);
	free(chain);

	EVP_PKEY_free(key);
	free(pem);
	free(certs);
	free(dir);
}

/*
 * What a crash leaves: a complete newer generation the link never
 * reached, a half-written one, and temp files.  Load must not see them;
 * the next save removes them.
 */
static void
test_cert_crash_leftovers(void **state)
{
	struct ts		*ts = *state;
	struct cert_meta	 got;
	EVP_PKEY		*key, *other, *loaded = NULL;
	char			*dir, *certs, *pem = NULL, *chain = NULL;
	char			*cause = NULL, *otherpem, *gen;

	dir = ts_state(ts);
	xasprintf(&certs, "%s/certs", dir);
	key = ts_save_many(dir, "c.example", 1, &pem);

	/*
	 * A save that crashed before the swap: generation 2 is half written
	 * and the temp link names it.
	 */
	other = ts_key();
	otherpem = tu_self_signed(other, TS_NB, TS_NA, "c.example");
	xasprintf(&gen, "%s/c.example@0000000000000002", certs);
	assert_int_equal(mkdir(gen, 0700), 0);
	ts_write(gen, "fullchain.pem", otherpem);
	ts_write(gen, "key.pem", "partial");
	free(gen);
	xasprintf(&gen, "%s/.c.example.link", certs);
	assert_int_equal(symlink("c.example@0000000000000002", gen), 0);

	assert_int_equal(store_load_cert(dir, "c.example", &chain, &loaded,
	    &got, &cause), 0);
	assert_string_equal(chain, pem);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	store_meta_clear(&got);
	EVP_PKEY_free(loaded);
	free(chain);
	chain = NULL;

	/* The next save cleans up and still wins. */
	EVP_PKEY_free(key);
	key = ts_save_many(dir, "c.example", 1, &pem);
	assert_int_equal(ts_count(certs, "c.example@"), 1);
	assert_int_equal(ts_count(certs, "."), 2);
	assert_int_equal(ts_count(certs, ""), 2 + 2);

	/*
	 * A save that crashed after the swap, before removing the old
	 * generation: the one before the linked one is left.
	 */
	free(gen);
	xasprintf(&gen, "%s/c.example@0000000000000001", certs);
	assert_int_equal(mkdir(gen, 0700), 0);
	ts_write(gen, "fullchain.pem", otherpem);
	EVP_PKEY_free(key);
	key = ts_save_many(dir, "c.example", 1, &pem);
	assert_int_equal(ts_count(certs, "c.example@"), 1);
	assert_int_equal(ts_count(certs, ""), 2 + 2);
	assert_int_equal(store_load_cert(dir, "c.example", &chain, &loaded,
	    &got, &cause), 0);
	assert_string_equal(chain, pem);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	store_meta_clear(&got);
	EVP_PKEY_free(loaded);
	free(chain);

	free(gen);
	free(otherpem);
	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
	free(pem);
	free(certs);
	free(dir);
}

static void
test_cert_mismatch(void **state)
{
	struct ts		*ts = *state;
	struct cert_meta	 m, got;
	EVP_PKEY		*key, *other, *loaded = NULL;
	char			*dir, *pem, *otherpem = NULL, *chain = NULL;
	char			*cause = NULL, *certs;
	BIO			*bio;
	char			*data;
	long			 len;

	dir = ts_state(ts);
	key = ts_key();
	other = ts_key();
	pem = tu_self_signed(key, TS_NB, TS_NA, "m.example");
	ts_meta(&m);

	/* Saving a mismatched pair is refused and stores nothing. */
	assert_int_equal(store_save_cert(dir, "m.example", pem, other, &m,
	    &cause), -1);
	assert_non_null(strstr(cause, "does not match"));
	free(cause);
	cause = NULL;
	assert_int_equal(store_load_cert(dir, "m.example", &chain, &loaded,
	    &got, &cause), 1);
	assert_false(ts_exists(dir, "certs/m.example"));
	xasprintf(&certs, "%s/certs", dir);
	assert_int_equal(ts_count(certs, ""), 2);	/* "." and ".." */
	free(certs);

	/* A key swapped behind our back is reported on load. */
	assert_int_equal(store_save_cert(dir, "m.example", pem, key, &m,
	    &cause), 0);
	bio = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PKCS8PrivateKey(bio, other, NULL, NULL, 0,
	    NULL, NULL));
	len = BIO_get_mem_data(bio, &data);
	otherpem = xstrndup(data, (size_t)len);
	BIO_free(bio);
	ts_write(dir, "certs/m.example/key.pem", otherpem);
	assert_int_equal(store_load_cert(dir, "m.example", &chain, &loaded,
	    &got, &cause), -1);
	assert_non_null(strstr(cause, "does not match"));
	assert_non_null(strstr(cause, "key.pem"));
	assert_null(chain);
	assert_null(loaded);
	free(cause);

	store_meta_clear(&m);
	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
	free(otherpem);
	free(pem);
	free(dir);
}

static void
test_cert_corrupt_meta(void **state)
{
	struct ts		*ts = *state;
	struct cert_meta	 got;
	EVP_PKEY		*key, *loaded = NULL;
	char			*dir, *pem = NULL, *chain = NULL, *cause = NULL;

	dir = ts_state(ts);
	key = ts_save_many(dir, "j.example", 1, &pem);
	ts_write(dir, "certs/j.example/meta.json", "{\"identifiers\": 3}");
	assert_int_equal(store_load_cert(dir, "j.example", &chain, &loaded,
	    &got, &cause), -1);
	assert_non_null(strstr(cause, "meta.json"));
	free(cause);
	EVP_PKEY_free(key);
	free(pem);
	free(dir);
}

/* Read a stored file whole; the caller frees. */
static char *
ts_read(const char *dir, const char *rel)
{
	char	*path, *text;
	FILE	*f;
	long	 len;

	xasprintf(&path, "%s/%s", dir, rel);
	if ((f = fopen(path, "r")) == NULL)
		fail_msg("fopen %s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = xcalloc(1, (size_t)len + 1);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	free(path);
	return text;
}

/* Set one member of the stored meta.json, leaving pair_sha256 as it is. */
static void
ts_meta_set(const char *dir, const char *id, const char *name, json_t *v)
{
	json_t	*json;
	char	*path;

	xasprintf(&path, "%s/certs/%s/meta.json", dir, id);
	assert_non_null(json = json_load_file(path, 0, NULL));
	if (v != NULL)
		json_object_set_new(json, name, v);
	else
		json_object_del(json, name);
	assert_int_equal(json_dump_file(json, path, 0), 0);
	json_decref(json);
	free(path);
}

/*
 * meta.json vouches for the files it was written with: a start takes its
 * facts and the key's text without parsing; any change sends the load
 * through the full check, which finds what is wrong.
 */
static void
test_cert_vouched(void **state)
{
	struct ts		*ts = *state;
	struct stored_cert	 sd;
	EVP_PKEY		*key;
	char			*dir, *pem = NULL, *cause = NULL, *text;
	char			*gen, want[64];

	dir = ts_state(ts);
	key = ts_save_many(dir, "v.example", 1, &pem);
	text = ts_read(dir, "certs/v.example/meta.json");
	assert_non_null(strstr(text, "\"pair_sha256\""));
	free(text);

	assert_int_equal(store_load_stored(dir, "v.example", &sd, &cause), 0);
	text = ts_read(dir, "certs/v.example/key.pem");
	assert_string_equal(sd.sd_key_pem, text);
	free(text);
	assert_string_equal(sd.sd_chain, pem);
	assert_int_equal(sd.sd_meta.cm_not_before, TS_NB);
	assert_int_equal(sd.sd_meta.cm_not_after, TS_NA);
	assert_int_equal(sd.sd_meta.cm_key, KEY_ECDSA_256);
	assert_int_equal(sd.sd_meta.cm_nidents, 2);
	store_stored_clear(&sd);

	/* A date edited in meta.json is not believed: the certificate's is. */
	ts_meta_set(dir, "v.example", "not_after", json_integer(TS_NA + 99));
	assert_int_equal(store_load_stored(dir, "v.example", &sd, &cause), 0);
	assert_int_equal(sd.sd_meta.cm_not_after, TS_NA);
	store_stored_clear(&sd);

	/* ... and the full check wrote it anew, with the right date. */
	text = ts_read(dir, "certs/v.example/meta.json");
	(void)snprintf(want, sizeof(want), "\"not_after\": %lld",
	    (long long)TS_NA);
	assert_non_null(strstr(text, want));
	free(text);

	/*
	 * A meta.json of before the digest loads as it always did, and gets
	 * the digest, its URL and identifiers kept.
	 */
	ts_meta_set(dir, "v.example", "pair_sha256", NULL);
	ts_meta_set(dir, "v.example", "cert_id", NULL);
	assert_int_equal(store_load_stored(dir, "v.example", &sd, &cause), 0);
	assert_int_equal(sd.sd_meta.cm_not_after, TS_NA);
	assert_int_equal(sd.sd_meta.cm_key, KEY_ECDSA_256);
	store_stored_clear(&sd);
	text = ts_read(dir, "certs/v.example/meta.json");
	assert_non_null(strstr(text, "\"pair_sha256\""));
	assert_non_null(strstr(text, "\"cert_id\""));
	assert_non_null(strstr(text, "https://ca.test/cert/1"));
	assert_non_null(strstr(text, "www.example.com"));
	free(text);
	assert_int_equal(store_load_stored(dir, "v.example", &sd, &cause), 0);
	assert_int_equal(sd.sd_meta.cm_not_after, TS_NA);
	assert_int_equal(sd.sd_meta.cm_nidents, 2);
	store_stored_clear(&sd);

	/* The same in a batch, which syncs at its end, not per file. */
	ts_meta_set(dir, "v.example", "pair_sha256", NULL);
	store_batch_begin();
	assert_int_equal(store_load_stored(dir, "v.example", &sd, &cause), 0);
	store_stored_clear(&sd);
	store_batch_end();
	text = ts_read(dir, "certs/v.example/meta.json");
	assert_non_null(strstr(text, "\"pair_sha256\""));
	assert_non_null(strstr(text, "https://ca.test/cert/1"));
	free(text);
	xasprintf(&gen, "%s/certs/v.example", dir);
	assert_int_equal(ts_count(gen, "."), 2);	/* no temp file left */
	free(gen);

	/* A chain cut short is found and reported. */
	key = (EVP_PKEY_free(key), ts_save_many(dir, "v.example", 1, &pem));
	pem[strlen(pem) / 2] = '\0';
	ts_write(dir, "certs/v.example/fullchain.pem", pem);
	assert_int_equal(store_load_stored(dir, "v.example", &sd, &cause),
	    -1);
	assert_non_null(strstr(cause, "fullchain.pem: no valid certificate"));
	assert_null(sd.sd_chain);
	assert_null(sd.sd_key_pem);
	free(cause);

	EVP_PKEY_free(key);
	free(pem);
	free(dir);
}

/*
 * A batch keeps a folder found fine (a start judges certs/ once), never a
 * refusal; after the batch every load judges again.
 */
static void
test_cert_batch(void **state)
{
	struct ts		*ts = *state;
	struct stored_cert	 sd;
	EVP_PKEY		*key;
	char			*dir, *pem = NULL, *cause = NULL, *certs;

	dir = ts_state(ts);
	key = ts_save_many(dir, "b.example", 1, &pem);
	xasprintf(&certs, "%s/certs", dir);

	/* Refused, then fixed within the batch: judged again, so loaded. */
	assert_int_equal(chmod(certs, 0777), 0);
	store_batch_begin();
	assert_int_equal(store_load_stored(dir, "b.example", &sd, &cause),
	    -1);
	assert_non_null(strstr(cause, "others than its owner may write"));
	free(cause);
	cause = NULL;
	assert_int_equal(chmod(certs, 0700), 0);
	assert_int_equal(store_load_stored(dir, "b.example", &sd, &cause), 0);
	store_stored_clear(&sd);

	/* Found fine: the rest of the batch takes that answer. */
	assert_int_equal(chmod(certs, 0777), 0);
	assert_int_equal(store_load_stored(dir, "b.example", &sd, &cause), 0);
	store_stored_clear(&sd);
	store_batch_end();

	/* Outside a batch, every load judges the folder. */
	assert_int_equal(store_load_stored(dir, "b.example", &sd, &cause),
	    -1);
	free(cause);
	assert_int_equal(chmod(certs, 0700), 0);

	EVP_PKEY_free(key);
	free(certs);
	free(pem);
	free(dir);
}

/* store_load_pending() of id for idents[0]: 0 found, 1 none. */
static int
ts_pending(const char *dir, const char *id, char *const *idents)
{
	EVP_PKEY	*key = NULL;
	char		*url = NULL, *cause = NULL;
	int		 rc;

	rc = store_load_pending(dir, id, idents, 1, &url, &key, &cause);
	assert_int_not_equal(rc, -1);
	assert_true((rc == 0) == (url != NULL && key != NULL));
	free(url);
	EVP_PKEY_free(key);
	return rc;
}

/*
 * A batch lists pending/ once: what was there is found, what was not is
 * not looked for, even when written meanwhile (which the daemon does not
 * do while it starts).  Outside the batch it is read again.
 */
static void
test_pending_batch(void **state)
{
	struct ts	*ts = *state;
	EVP_PKEY	*key;
	char		*dir, *cause = NULL;
	char		*idents[] = { "p.example" };

	dir = ts_state(ts);
	key = ts_key();
	/* An empty pending/ lists as nothing. */
	assert_int_equal(store_save_pending(dir, "p0", "https://ca.test/o/0",
	    idents, 1, key, &cause), 0);
	store_remove_pending(dir, "p0");
	store_batch_begin();
	assert_int_equal(ts_pending(dir, "p0", idents), 1);
	store_batch_end();

	assert_int_equal(store_save_pending(dir, "p1", "https://ca.test/o/1",
	    idents, 1, key, &cause), 0);
	store_batch_begin();
	assert_int_equal(ts_pending(dir, "p1", idents), 0);
	assert_int_equal(ts_pending(dir, "p2", idents), 1);
	assert_int_equal(store_save_pending(dir, "p2", "https://ca.test/o/2",
	    idents, 1, key, &cause), 0);
	assert_int_equal(ts_pending(dir, "p2", idents), 1);
	assert_int_equal(ts_pending(dir, "p1", idents), 0);
	store_batch_end();
	assert_int_equal(ts_pending(dir, "p2", idents), 0);
	EVP_PKEY_free(key);
	free(dir);
}

static void
test_chain_dates(void **state)
{
	EVP_PKEY	*key;
	char		*pem;
	time_t		 nb = 0, na = 0;

	(void)state;
	key = ts_key();
	pem = tu_self_signed(key, TS_NB, 4102444800 /* 2100-01-01 */, "d");
	assert_int_equal(store_chain_dates(pem, &nb, &na), 0);
	assert_int_equal(nb, TS_NB);
	assert_int_equal(na, 4102444800);
	assert_int_equal(store_chain_dates("not a pem", &nb, &na), -1);
	free(pem);
	EVP_PKEY_free(key);
}

/* fsafe_open_regular() opens path with flags, or refuses it. */
static int
ts_open_regular(const char *path, int flags, struct stat *sb)
{
	char	*cause = NULL;
	int	 fd;

	fd = fsafe_open_regular(path, flags, sb, &cause);
	assert_true((fd == -1) == (cause != NULL));
	free(cause);
	return fd;
}

/*
 * The descriptor store.c reads by keeps O_NONBLOCK, which it asked for;
 * others get a blocking one.  A FIFO or a missing file is refused, as
 * before, whichever the flags.
 */
static void
test_open_regular(void **state)
{
	struct ts	*ts = *state;
	struct stat	 sb;
	char		*file, *fifo, *missing;
	int		 fd, flags[] = { 0, O_NONBLOCK };
	size_t		 i;

	xasprintf(&file, "%s/file", ts->dir);
	xasprintf(&fifo, "%s/fifo", ts->dir);
	xasprintf(&missing, "%s/missing", ts->dir);
	assert_int_equal(store_write_atomic(file, "x", 1, 0600, NULL), 0);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		assert_int_not_equal(fd = ts_open_regular(file, flags[i],
		    &sb), -1);
		assert_int_equal(sb.st_size, 1);
		assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, flags[i]);
		close(fd);
		assert_int_equal(ts_open_regular(fifo, flags[i], &sb), -1);
		assert_int_equal(errno, EINVAL);
		assert_true(S_ISFIFO(sb.st_mode));
		assert_int_equal(ts_open_regular(missing, flags[i], &sb), -1);
		assert_int_equal(errno, ENOENT);
		assert_int_equal(sb.st_mode, 0);
	}
	free(file);
	free(fifo);
	free(missing);
}

/*
 * fsafe_openat_regular() judges a name under a folder as the path would
 * be, and its messages name dir/name.
 */
static void
test_openat_regular(void **state)
{
	struct ts	*ts = *state;
	struct stat	 sb;
	char		*file, *fifo, *cause = NULL;
	int		 dfd, fd;

	xasprintf(&file, "%s/file", ts->dir);
	xasprintf(&fifo, "%s/fifo", ts->dir);
	assert_int_equal(store_write_atomic(file, "xy", 2, 0600, NULL), 0);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_not_equal(dfd = open(ts->dir, O_RDONLY | O_DIRECTORY), -1);

	assert_int_not_equal(fd = fsafe_openat_regular(dfd, "D", "file",
	    O_NONBLOCK, &sb, &cause), -1);
	assert_null(cause);
	assert_int_equal(sb.st_size, 2);
	close(fd);
	assert_int_equal(fsafe_openat_regular(dfd, "D", "fifo", O_NONBLOCK,
	    &sb, &cause), -1);
	assert_int_equal(errno, EINVAL);
	assert_string_equal(cause, "D/fifo: not a regular file but a FIFO");
	free(cause);
	cause = NULL;
	assert_int_equal(fsafe_openat_regular(dfd, NULL, "missing", 0, &sb,
	    &cause), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(sb.st_mode, 0);
	assert_string_equal(cause, "missing: No such file or directory");
	free(cause);
	close(dfd);
	free(file);
	free(fifo);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_account_absent, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_account_roundtrip,
		    ts_setup, ts_teardown),
		cmocka_unit_test_setup_teardown(test_account_next,
		    ts_setup, ts_teardown),
		cmocka_unit_test_setup_teardown(test_account_deactivated,
		    ts_setup, ts_teardown),
		cmocka_unit_test_setup_teardown(test_account_corrupt,
		    ts_setup, ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_absent, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_roundtrip, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_replace, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_crash_leftovers,
		    ts_setup, ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_mismatch, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_corrupt_meta,
		    ts_setup, ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_vouched, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_cert_batch, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_open_regular, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_openat_regular, ts_setup,
		    ts_teardown),
		cmocka_unit_test_setup_teardown(test_pending_batch, ts_setup,
		    ts_teardown),
		cmocka_unit_test(test_chain_dates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
