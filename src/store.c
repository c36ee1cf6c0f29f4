/*
 * state_path: one folder per issuer, every write atomic.
 *
 * Layout (a contract: users back it up, scripts read it):
 *
 *   <dir>/account.key		account key, PKCS#8 PEM, 0600
 *   <dir>/account.url		the account URL (the JWS "kid"), one line
 *   <dir>/account.key.next	a rollover's new key, 0600 (see below)
 *   <dir>/account.deactivated	the URL of a deactivated account, one line
 *   <dir>/certs/<id>		symlink -> <id>@<generation> (relative)
 *   <dir>/certs/<id>@<generation>/fullchain.pem	0644
 *   <dir>/certs/<id>@<generation>/key.pem		0600, PKCS#8 PEM
 *   <dir>/certs/<id>@<generation>/meta.json	0644
 *   <dir>/pending/<id>.json	an order being finalized (see below)
 *   <dir>/ari/<id>.json		the CA's renewalInfo for it (ari.c), 0600
 *
 * Folders are 0700.
 * <generation> is 16 lower-case hex digits, a counter that grows by one
 * at every save.  meta.json is
 *
 *   {"not_before": 1700000000, "not_after": 1707776000,
 *    "issued": 1700003600, "url": "https://ca/cert/1",
 *    "identifiers": ["example.com", "www.example.com"], "key": "ecdsa:256"}
 *
 * with times in seconds since the epoch (UTC).  On load, not_before,
 * not_after and key are taken from the certificate and the key themselves;
 * meta.json supplies what they cannot tell us.
 *
 * Why a symlink: a certificate and its key must change together, and no
 * single rename() can replace two files.  A save writes a complete new
 * generation folder, then swaps the symlink with one rename(), then
 * removes the old generation.  A crash at any point leaves the symlink
 * pointing at either the old or the new complete set.  Leftovers from a
 * crash (generation folders nobody points to, temp files named ".*") are
 * ignored on load and removed by the next save of that id.
 *
 * Account key rollover (RFC 8555 7.3.5).  account.key is replaced only
 * by a key the CA has taken: the new key is first written whole to
 * account.key.next, then keyChange is sent, and only after the CA's yes
 * does account.key.next become account.key by one rename().  A crash
 * leaves either no account.key.next (account.key is the CA's key) or
 * both files, and then the CA knows one of the two: acme.c asks it
 * about account.key.next at the next start (newAccount with
 * onlyReturnExisting) and keeps whichever key it knows.
 *
 * Deactivation (RFC 8555 7.3.6) sets the account aside as
 * account.key.deactivated-TIME and account.url.deactivated-TIME and
 * writes account.deactivated: while that file is there the issuer
 * orders nothing; removing it lets the next start register a new
 * account.
 *
 * Each file is written the way acme-client's serialise() does it: mkstemp
 * in the same folder, fchmod, write, fsync, rename, fsync of the folder.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <arpa/inet.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sidecar.h"

#define STORE_ACCOUNT_KEY	"account.key"
#define STORE_ACCOUNT_URL	"account.url"
#define STORE_ACCOUNT_NEXT	"account.key.next"
#define STORE_DEACTIVATED	"account.deactivated"
#define STORE_CERTS		"certs"
#define STORE_CHAIN		"fullchain.pem"
#define STORE_KEY		"key.pem"
#define STORE_META		"meta.json"
#define STORE_GEN_LEN		16		/* hex digits */
#define STORE_MAX_FILE		(1024 * 1024)	/* no PEM or JSON is larger */
#define STORE_DIGEST_HEX	64		/* meta.json's pair_sha256 */
#define STORE_PENDING		"pending"	/* orders being finalized */
#define STORE_ARI		"ari"		/* renewalInfo answers (ari.c) */

static int
store_fsync_dir(const char *dir, char **cause)
{
	int	 fd;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		xasprintf(cause, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (fsync(fd) == -1) {
		xasprintf(cause, "fsync %s: %s", dir, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* The folder part of path, "." if it has none; caller frees. */
static char *
store_dirname(const char *path)
{
	const char	*slash;

	if ((slash = strrchr(path, '/')) == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/*
 * Give fd its mode, write all of data, fsync it unless told not to (a
 * caller that syncs the whole batch later), and close it; -1 on error.
 */
static int
store_fill(int fd, const char *path, const void *data, size_t len,
    mode_t mode, int sync, char **cause)
{
	const char	*p = data;
	ssize_t		 n;

	if (fchmod(fd, mode) == -1) {
		xasprintf(cause, "fchmod %s: %s", path, strerror(errno));
		goto fail;
	}
	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			xasprintf(cause, "write %s: %s", path, strerror(errno));
			goto fail;
		}
		p += n;
		len -= (size_t)n;
	}
	if (sync && fsync(fd) == -1) {
		xasprintf(cause, "fsync %s: %s", path, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		xasprintf(cause, "close %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
fail:
	close(fd);
	return -1;
}

/*
 * Write data to a new temp file ".<name>.XXXXXX" beside path, with mode,
 * and fsync it if sync.  Returns the temp file's name (caller frees) or
 * NULL.
 */
static char *
store_write_temp(const char *path, const void *data, size_t len, mode_t mode,
    int sync, char **cause)
{
	const char	*base;
	char		*dir = NULL, *tmp = NULL;
	int		 fd;

	base = strrchr(path, '/');
	base = (base == NULL) ? path : base + 1;
	dir = store_dirname(path);
	xasprintf(&tmp, "%s/.%s.XXXXXX", dir, base);
	free(dir);
	if ((fd = mkostemp(tmp, O_CLOEXEC)) == -1) {
		xasprintf(cause, "%s: %s", tmp, strerror(errno));
		free(tmp);
		return NULL;
	}
	if (store_fill(fd, tmp, data, len, mode, sync, cause) == -1) {
		unlink(tmp);
		free(tmp);
		return NULL;
	}
	return tmp;
}

/*
 * Write a file into a generation folder that no link names yet: nobody
 * can see it half-written, so it needs no temp file of its own, and no
 * fsync of its own either: store_save_certs() syncs the whole batch
 * before any link names the folder.
 */
static int
store_write_new(const char *path, const void *data, size_t len, mode_t mode,
    char **cause)
{
	int	 fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    mode)) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return -1;
	}
	return store_fill(fd, path, data, len, mode, 0, cause);
}

/*
 * Put a complete temp file in place.  With exclusive, link() instead of
 * rename(), so an existing file at path is never replaced (EEXIST).
 */
static int
store_write_file(const char *path, const void *data, size_t len, mode_t mode,
    int exclusive, char **cause)
{
	char	*tmp = NULL, *dir = NULL;
	int	 rc = -1;

	if ((tmp = store_write_temp(path, data, len, mode, 1, cause)) == NULL)
		goto out;
	if (exclusive) {
		if (link(tmp, path) == -1) {
			xasprintf(cause, "%s: %s", path, strerror(errno));
			goto out;
		}
		unlink(tmp);
	} else if (rename(tmp, path) == -1) {
		xasprintf(cause, "rename %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	dir = store_dirname(path);
	if (store_fsync_dir(dir, cause) == -1)
		goto out;
	rc = 0;
out:
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	free(dir);
	return rc;
}

int
store_write_atomic(const char *path, const void *data, size_t len,
    mode_t mode, char **cause)
{
	return store_write_file(path, data, len, mode, 0, cause);
}

/*
 * Read a whole small file, name under the folder dfd (AT_FDCWD: a path),
 * NUL terminated; messages call it dir/name (name when dir is NULL).
 * 0: read, 1: absent, -1: error.
 */
static int
store_read_at(int dfd, const char *dir, const char *name, char **out,
    size_t *outlen, char **cause)
{
	struct stat	 sb;
	char		*buf = NULL, *why = NULL;
	size_t		 len = 0;
	ssize_t		 n;
	int		 fd = -1, rc = -1;

	/*
	 * A FIFO planted here would stop the loop for good.  The file is
	 * read at once and closed: O_NONBLOCK may stay.
	 */
	if ((fd = fsafe_openat_regular(dfd, dir, name, O_NONBLOCK, &sb,
	    &why)) == -1) {
		if (errno == ENOENT && sb.st_mode == 0)
			rc = 1;
		else {
			*cause = why;
			why = NULL;
		}
		goto out;
	}
	if (sb.st_size > STORE_MAX_FILE) {
		xasprintf(cause, "%s%s%s: larger than %d bytes",
		    dir != NULL ? dir : "", dir != NULL ? "/" : "", name,
		    STORE_MAX_FILE);
		goto out;
	}
	buf = xmalloc((size_t)sb.st_size + 1);
	while (len < (size_t)sb.st_size) {
		n = read(fd, buf + len, (size_t)sb.st_size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			xasprintf(cause, "%s%s%s: %s", dir != NULL ? dir : "",
			    dir != NULL ? "/" : "", name, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
	if (outlen != NULL)
		*outlen = len;
	rc = 0;
out:
	free(why);
	if (fd != -1)
		close(fd);
	if (buf != NULL) {
		OPENSSL_cleanse(buf, len);
		free(buf);
	}
	return rc;
}

/* store_read_at() of a path. */
static int
store_read_file(const char *path, char **out, size_t *outlen, char **cause)
{
	return store_read_at(AT_FDCWD, NULL, path, out, outlen, cause);
}

/*
 * A folder of state_path, made 0700 if missing.  One that exists must be
 * root's or the daemon's own and writable by nobody else (fsafe.c): a
 * local user who made it first, or planted a link there, would otherwise
 * get to swap what the daemon keeps in it.
 */
static int
store_mkdir(const char *path, char **cause)
{
	int	 fd;

	if ((fd = fsafe_mkdir(path, 0700, geteuid(), (gid_t)-1, cause)) == -1)
		return -1;
	close(fd);
	return 0;
}

/*
 * While the scheduler starts its certificates (store_batch_begin() to
 * store_batch_end()), a folder of state_path that store_dir_ok() found
 * fine or missing is not judged again: ten thousand certificates would
 * otherwise walk the same few folders from / some 30,000 times, a third of
 * a start's time.  Only root or the daemon itself can change a folder
 * found fine, or make one missing in it (its parent is fine too), and the
 * daemon writes none during a batch, so the answer holds for the batch.
 * (A parent that others may write to, which fsafe.c only warns about on a
 * pod's volume, could be swapped under it, as it could between any check
 * and the open that follows.)  A refusal is judged again each time, and
 * outside a batch every call judges afresh.  The batch keeps the folder
 * open too, so that the files in it are opened relative to it
 * (store_dir_open()).
 */
struct store_judged {
	char	*sj_path;
	int	 sj_rc;		/* store_dir_ok()'s 0 or 1 */
	int	 sj_fd;		/* the folder, -1 when missing */
	int	 sj_listed;	/* 1: sj_names holds it, -1: cannot */
	char	**sj_names;	/* sorted, by store_batch_list() */
	size_t	 sj_nnames;
};

static struct {
	int			 sb_active;
	struct store_judged	*sb_dirs;
	size_t			 sb_ndirs;
	int			 sb_unsynced;	/* store_meta_write() */
} store_batch;

void
store_batch_begin(void)
{
	store_batch.sb_active = 1;
}

static void
store_names_free(char **names, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

void
store_batch_end(void)
{
	size_t	 i;

	/* Each folder's filesystem: syncfs() is cheap when nothing waits. */
	for (i = 0; store_batch.sb_unsynced && i < store_batch.sb_ndirs; i++) {
		if (store_batch.sb_dirs[i].sj_fd != -1 &&
		    syncfs(store_batch.sb_dirs[i].sj_fd) == -1)
			log_warnx("store: syncfs %s: %s",
			    store_batch.sb_dirs[i].sj_path, strerror(errno));
	}
	for (i = 0; i < store_batch.sb_ndirs; i++) {
		free(store_batch.sb_dirs[i].sj_path);
		if (store_batch.sb_dirs[i].sj_fd != -1)
			close(store_batch.sb_dirs[i].sj_fd);
		store_names_free(store_batch.sb_dirs[i].sj_names,
		    store_batch.sb_dirs[i].sj_nnames);
	}
	free(store_batch.sb_dirs);
	memset(&store_batch, 0, sizeof(store_batch));
}

/* The batch's answer for path and its folder, or -1 when it has none. */
static int
store_batch_judged(const char *path, int *fdp)
{
	size_t	 i;

	for (i = 0; i < store_batch.sb_ndirs; i++) {
		if (strcmp(store_batch.sb_dirs[i].sj_path, path) == 0) {
			*fdp = store_batch.sb_dirs[i].sj_fd;
			return store_batch.sb_dirs[i].sj_rc;
		}
	}
	return -1;
}

static int
store_batch_keep(const char *path, int rc, int fd)
{
	struct store_judged	*sj;

	if (!store_batch.sb_active)
		return rc;
	store_batch.sb_dirs = xreallocarray(store_batch.sb_dirs,
	    store_batch.sb_ndirs + 1, sizeof(*store_batch.sb_dirs));
	sj = &store_batch.sb_dirs[store_batch.sb_ndirs++];
	memset(sj, 0, sizeof(*sj));
	sj->sj_path = xstrdup(path);
	sj->sj_rc = rc;
	sj->sj_fd = fd;
	return rc;
}

static int
store_cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The names in sj's folder, read once per batch and sorted; those that
 * start with a dot (temporary files) are left out.  1: listed, -1: not.
 */
static int
store_batch_list(struct store_judged *sj)
{
	struct dirent	*de;
	DIR		*d;
	size_t		 room = 0;
	int		 fd;

	if (sj->sj_listed != 0)
		return sj->sj_listed;
	sj->sj_listed = -1;
	if ((fd = openat(sj->sj_fd, ".", O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (sj->sj_nnames == room) {
			room = room == 0 ? 16 : room * 2;
			sj->sj_names = xreallocarray(sj->sj_names, room,
			    sizeof(*sj->sj_names));
		}
		sj->sj_names[sj->sj_nnames++] = xstrdup(de->d_name);
	}
	if (errno != 0) {
		closedir(d);
		store_names_free(sj->sj_names, sj->sj_nnames);
		sj->sj_names = NULL;
		sj->sj_nnames = 0;
		return -1;
	}
	closedir(d);
	if (sj->sj_nnames > 0)
		qsort(sj->sj_names, sj->sj_nnames, sizeof(*sj->sj_names),
		    store_cmp_name);
	sj->sj_listed = 1;
	return 1;
}

/*
 * Whether the folder path, judged fine, may hold name.  A file that is
 * seldom there (a pending order) would cost each certificate of a start
 * a stat() that fails: in a batch the folder is listed once instead, and
 * the list answers, for the same reason that the folder's judgement
 * holds (see above).  0: it does not; 1: it may (outside a batch, or
 * when the folder could not be listed).
 */
static int
store_may_hold(const char *path, const char *name)
{
	struct store_judged	*sj;
	size_t			 i;

	if (!store_batch.sb_active)
		return 1;
	for (i = 0; i < store_batch.sb_ndirs; i++) {
		sj = &store_batch.sb_dirs[i];
		if (sj->sj_fd == -1 || strcmp(sj->sj_path, path) != 0)
			continue;
		if (store_batch_list(sj) != 1)
			return 1;
		/* bsearch() wants an array, even for none. */
		return sj->sj_nnames > 0 && bsearch(&name, sj->sj_names,
		    sj->sj_nnames, sizeof(*sj->sj_names),
		    store_cmp_name) != NULL;
	}
	return 1;
}

/*
 * An existing folder of state_path, judged as store_mkdir() does, and
 * opened: *fdp, for store_dir_close().  0: it is fine, 1: it is missing
 * (*fdp is -1), -1: refused (cause).
 */
static int
store_dir_open(const char *path, int *fdp, char **cause)
{
	char	*why = NULL;
	int	 fd, rc;

	*fdp = -1;
	if (store_batch.sb_active && (rc = store_batch_judged(path,
	    fdp)) != -1)
		return rc;
	if ((fd = fsafe_opendir(path, 0700, geteuid(), &why)) != -1) {
		*fdp = fd;
		return store_batch_keep(path, 0, fd);
	}
	if (errno == ENOENT) {
		free(why);
		return store_batch_keep(path, 1, -1);
	}
	*cause = why;
	return -1;
}

/* A folder from store_dir_open(); one the batch keeps stays open. */
static void
store_dir_close(int fd)
{
	if (fd != -1 && !store_batch.sb_active)
		close(fd);
}

/* store_dir_open() for an answer only. */
static int
store_dir_ok(const char *path, char **cause)
{
	int	 fd, rc;

	rc = store_dir_open(path, &fd, cause);
	store_dir_close(fd);
	return rc;
}

/* state_path and its certs/, missing parents made 0755 (fsafe.c). */
int
store_init(const char *dir, char **cause)
{
	char	*certs = NULL;
	int	 rc = -1;

	if (*dir == '\0') {
		xasprintf(cause, "state_path: empty path");
		return -1;
	}
	if (store_mkdir(dir, cause) == -1)
		goto out;
	xasprintf(&certs, "%s/%s", dir, STORE_CERTS);
	if (store_mkdir(certs, cause) == -1)
		goto out;
	rc = 0;
out:
	free(certs);
	return rc;
}

/*
 * Read and parse the private key at path, wiping the buffer that held it.
 * 0: loaded, 1: absent, -1: error (cause).
 */
static int
store_load_key(const char *path, EVP_PKEY **key, char **cause)
{
	char	*pem = NULL, *why = NULL;
	size_t	 len = 0;
	int	 r;

	*key = NULL;
	if ((r = store_read_file(path, &pem, &len, cause)) != 0)
		return r;
	if ((*key = keys_from_pem(pem, len, &why)) == NULL) {
		xasprintf(cause, "%s: %s", path, why);
		free(why);
	}
	OPENSSL_cleanse(pem, len);
	free(pem);
	return *key != NULL ? 0 : -1;
}

/* The account URL file is one line; trailing white space is not part of it. */
static int
store_load_url(const char *dir, char **url, char **cause)
{
	char	*path = NULL, *buf = NULL;
	size_t	 len;
	int	 rc;

	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_URL);
	rc = store_read_file(path, &buf, &len, cause);
	if (rc == 0) {
		while (len > 0 && isspace((unsigned char)buf[len - 1]))
			buf[--len] = '\0';
		if (len == 0 || strpbrk(buf, "\r\n") != NULL) {
			xasprintf(cause, "%s: not a single URL line", path);
			free(buf);
			rc = -1;
		} else
			*url = buf;
	}
	free(path);
	return rc;
}

int
store_load_account(const char *dir, EVP_PKEY **key, char **url, char **cause)
{
	char		*path = NULL;
	int		 rc = -1;

	*key = NULL;
	*url = NULL;
	if ((rc = store_dir_ok(dir, cause)) != 0)
		goto out;
	rc = -1;
	if (store_load_url(dir, url, cause) == -1)
		goto out;
	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_KEY);
	rc = store_load_key(path, key, cause);
out:
	if (rc == -1) {
		free(*url);
		*url = NULL;
	}
	free(path);
	return rc;
}

/* An account key, PKCS#8 PEM, 0600, to a path that must not exist (link()). */
static int
store_write_key(const char *path, EVP_PKEY *key, char **cause)
{
	char	*pem;
	int	 rc;

	if ((pem = keys_to_pem(key)) == NULL) {
		xasprintf(cause, "cannot encode the account key as PKCS#8");
		return -1;
	}
	rc = store_write_file(path, pem, strlen(pem), 0600, 1, cause);
	keys_pem_free(pem);
	return rc;
}

/* Refuses to replace an existing account key: losing it loses the account. */
int
store_save_account_key(const char *dir, EVP_PKEY *key, char **cause)
{
	struct stat	 sb;
	char		*path = NULL;
	int		 rc = -1;

	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_KEY);
	/* Checked first for a clear message; link() is what guarantees it. */
	if (lstat(path, &sb) == 0 || errno != ENOENT) {
		xasprintf(cause, "%s: already exists, refusing to replace an "
		    "account key", path);
		goto out;
	}
	rc = store_write_key(path, key, cause);
out:
	free(path);
	return rc;
}

int
store_save_account_url(const char *dir, const char *url, char **cause)
{
	char	*path = NULL, *line = NULL;
	int	 rc;

	if (*url == '\0' || strpbrk(url, "\r\n") != NULL) {
		xasprintf(cause, "account URL is not a single line");
		return -1;
	}
	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_URL);
	xasprintf(&line, "%s\n", url);
	rc = store_write_atomic(path, line, strlen(line), 0600, cause);
	free(line);
	free(path);
	return rc;
}

/*
 * Keep the account in state_path under another name: a node that joins a
 * fleet takes the fleet's account, and its own must not be lost, since
 * only its key can deactivate it or revoke what it issued.  The files
 * become account.key.SUFFIX and account.url.SUFFIX.
 */
int
store_set_aside_account(const char *dir, const char *suffix, char **cause)
{
	const char	*names[] = { STORE_ACCOUNT_KEY, STORE_ACCOUNT_URL };
	char		*from, *to;
	size_t		 i;
	int		 rc = 0;

	for (i = 0; i < sizeof(names) / sizeof(names[0]) && rc == 0; i++) {
		xasprintf(&from, "%s/%s", dir, names[i]);
		xasprintf(&to, "%s/%s.%s", dir, names[i], suffix);
		if (rename(from, to) == -1 && errno != ENOENT) {
			xasprintf(cause, "rename %s to %s: %s", from, to,
			    strerror(errno));
			rc = -1;
		}
		free(from);
		free(to);
	}
	if (rc == 0)
		rc = store_fsync_dir(dir, cause);
	return rc;
}

/* A rollover's new key, written before the CA is asked; never replaced. */
int
store_save_account_next(const char *dir, EVP_PKEY *key, char **cause)
{
	char	*path = NULL;
	int	 rc;

	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_NEXT);
	/* Never replaced: one left by a rollover cut short is the CA's, maybe. */
	rc = store_write_key(path, key, cause);
	free(path);
	return rc;
}

/* 0: loaded, 1: absent, -1: error (cause). */
int
store_load_account_next(const char *dir, EVP_PKEY **key, char **cause)
{
	char	*path = NULL;
	int	 rc;

	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_NEXT);
	rc = store_load_key(path, key, cause);
	free(path);
	return rc;
}

/* The CA took account.key.next: it becomes account.key, in one rename(). */
int
store_promote_account_next(const char *dir, char **cause)
{
	char	*from = NULL, *to = NULL;
	int	 rc = -1;

	xasprintf(&from, "%s/%s", dir, STORE_ACCOUNT_NEXT);
	xasprintf(&to, "%s/%s", dir, STORE_ACCOUNT_KEY);
	if (rename(from, to) == -1) {
		xasprintf(cause, "rename %s to %s: %s", from, to,
		    strerror(errno));
		goto out;
	}
	rc = store_fsync_dir(dir, cause);
out:
	free(from);
	free(to);
	return rc;
}

/* The CA refused account.key.next, or never saw it. */
int
store_drop_account_next(const char *dir, char **cause)
{
	char	*path = NULL;
	int	 rc = -1;

	xasprintf(&path, "%s/%s", dir, STORE_ACCOUNT_NEXT);
	if (unlink(path) == -1 && errno != ENOENT) {
		xasprintf(cause, "unlink %s: %s", path, strerror(errno));
		goto out;
	}
	rc = store_fsync_dir(dir, cause);
out:
	free(path);
	return rc;
}

/*
 * The CA deactivated the account at url: set it aside for good (its key
 * can still tell who revoked what) and leave account.deactivated, which
 * keeps the issuer from registering another one by itself.
 */
int
store_mark_deactivated(const char *dir, const char *url, char **cause)
{
	char	*path = NULL, *line = NULL, suffix[48];
	int	 rc = -1;

	snprintf(suffix, sizeof(suffix), "deactivated-%lld",
	    (long long)time(NULL));
	xasprintf(&path, "%s/%s", dir, STORE_DEACTIVATED);
	xasprintf(&line, "%s\n", url);
	/* The marker first: a crash between the two leaves it set. */
	if (store_write_atomic(path, line, strlen(line), 0600, cause) == -1)
		goto out;
	rc = store_set_aside_account(dir, suffix, cause);
out:
	free(line);
	free(path);
	return rc;
}

/* 0: url is the deactivated account's, 1: none, -1: error (cause). */
int
store_load_deactivated(const char *dir, char **url, char **cause)
{
	char	*path = NULL, *buf = NULL;
	size_t	 len = 0;
	int	 rc;

	*url = NULL;
	xasprintf(&path, "%s/%s", dir, STORE_DEACTIVATED);
	if ((rc = store_read_file(path, &buf, &len, cause)) == 0) {
		while (len > 0 && isspace((unsigned char)buf[len - 1]))
			buf[--len] = '\0';
		*url = buf;
	}
	free(path);
	return rc;
}

/* An id names files: no '/', no leading '.', which marks temp files. */
static int
store_id_valid(const char *id, char **cause)
{
	if (*id == '\0' || *id == '.' || strchr(id, '/') != NULL ||
	    strlen(id) > NAME_MAX - STORE_GEN_LEN - 1) {
		xasprintf(cause, "certificate id \"%s\" cannot be a file name",
		    id);
		return -1;
	}
	return 0;
}

static int
store_asn1_time(const ASN1_TIME *t, time_t *out)
{
	struct tm	 tm;

	memset(&tm, 0, sizeof(tm));
	if (!ASN1_TIME_to_tm(t, &tm))
		return -1;
	*out = timegm(&tm);
	return 0;
}

static X509 *
store_first_cert(const char *pem)
{
	X509	*x;
	BIO	*bio;

	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		fatalx("BIO_new_mem_buf");
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (x == NULL)
		ERR_clear_error();
	return x;
}

/*
 * The chain's first certificate, parsed, and its dates; NULL if it does
 * not parse.  OpenSSL 3.0 spends about 1.5M instructions on a parse (the
 * public key goes through its decoder search), so order.c parses an
 * issued chain once with this, and hands the result to the writer
 * (store_save_cert_x509()) and to ARI.
 */
X509 *
store_chain_leaf(const char *pem, time_t *nb, time_t *na)
{
	X509	*x;

	if ((x = store_first_cert(pem)) == NULL)
		return NULL;
	if (store_asn1_time(X509_get0_notBefore(x), nb) == -1 ||
	    store_asn1_time(X509_get0_notAfter(x), na) == -1) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int
store_chain_dates(const char *pem, time_t *nb, time_t *na)
{
	X509	*x;

	if ((x = store_chain_leaf(pem, nb, na)) == NULL)
		return -1;
	X509_free(x);
	return 0;
}

/* The key type from the key itself, -1 for one we do not issue. */
int
store_key_type(EVP_PKEY *key, enum key_type *type)
{
	int	 bits = EVP_PKEY_get_bits(key);

	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC:
		if (bits == 256)
			*type = KEY_ECDSA_256;
		else if (bits == 384)
			*type = KEY_ECDSA_384;
		else if (bits == 521)
			*type = KEY_ECDSA_521;
		else
			return -1;
		return 0;
	case EVP_PKEY_RSA:
		if (bits == 2048)
			*type = KEY_RSA_2048;
		else if (bits == 3072)
			*type = KEY_RSA_3072;
		else if (bits == 4096)
			*type = KEY_RSA_4096;
		else
			return -1;
		return 0;
	}
	return -1;
}

void
store_meta_clear(struct cert_meta *meta)
{
	size_t	 i;

	free(meta->cm_url);
	for (i = 0; i < meta->cm_nidents; i++)
		free(meta->cm_idents[i]);
	free(meta->cm_idents);
	memset(meta, 0, sizeof(*meta));
}

/*
 * meta.json.  With digest (store_pair_digest()), also the CertID and the
 * digest that vouch for the files as they were checked.
 */
static char *
store_meta_json(const struct cert_meta *meta, const char *cert_id,
    const char *digest)
{
	json_t	*obj, *ids;
	char	*s, *line;
	size_t	 i;

	ids = json_array();
	for (i = 0; i < meta->cm_nidents; i++)
		json_array_append_new(ids, json_string(meta->cm_idents[i]));
	obj = json_pack("{s:I, s:I, s:I, s:o, s:o, s:s}",
	    "not_before", (json_int_t)meta->cm_not_before,
	    "not_after", (json_int_t)meta->cm_not_after,
	    "issued", (json_int_t)meta->cm_issued,
	    "url", meta->cm_url != NULL ? json_string(meta->cm_url) :
	    json_null(),
	    "identifiers", ids,
	    "key", (unsigned)meta->cm_key < KEY_TYPE_MAX ?
	    key_type_name(meta->cm_key) : "unknown");
	if (obj == NULL)
		fatalx("store_meta_json: json_pack");
	if (digest != NULL) {
		json_object_set_new(obj, "cert_id", cert_id != NULL ?
		    json_string(cert_id) : json_null());
		json_object_set_new(obj, "pair_sha256", json_string(digest));
	}
	if ((s = json_dumps(obj, JSON_INDENT(1) | JSON_PRESERVE_ORDER)) == NULL)
		fatalx("store_meta_json: json_dumps");
	json_decref(obj);
	xasprintf(&line, "%s\n", s);
	free(s);
	return line;
}

/*
 * What meta.json's pair_sha256 vouches for: fullchain.pem and key.pem as
 * stored, and what was read from them when they were last parsed and
 * matched (dates, key type, CertID).  A start that finds the same digest
 * need not parse and match them again, which was most of its cost
 * (OpenSSL 3 sets up its decoders for every key); a file changed in any
 * byte goes through the full check.
 */
/*
 * SHA-256, fetched once: a start digests every certificate's pair, and
 * EVP_sha256() would look it up in the provider store each time.
 */
static EVP_MD	*store_sha256;

static void
store_sha256_fetch(void)
{
	if ((store_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		fatalx("store: EVP_MD_fetch SHA256");
}

static void
store_pair_digest(const char *chain, const char *key_pem,
    const struct cert_meta *meta, const char *cert_id,
    char hex[STORE_DIGEST_HEX + 1])
{
	static pthread_once_t	 once = PTHREAD_ONCE_INIT;
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen, i;
	EVP_MD_CTX		*ctx;
	char			*facts;

	/* Fetched once (the writer's thread digests too). */
	if ((errno = pthread_once(&once, store_sha256_fetch)) != 0)
		fatal("%s: pthread_once", __func__);
	xasprintf(&facts, "%lld %lld %s %s", (long long)meta->cm_not_before,
	    (long long)meta->cm_not_after, (unsigned)meta->cm_key <
	    KEY_TYPE_MAX ? key_type_name(meta->cm_key) : "unknown",
	    cert_id != NULL ? cert_id : "-");
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		fatalx("%s: EVP_MD_CTX_new", __func__);
	/* The NULs end the PEM texts, which hold none. */
	if (!EVP_DigestInit_ex(ctx, store_sha256, NULL) ||
	    !EVP_DigestUpdate(ctx, chain, strlen(chain) + 1) ||
	    !EVP_DigestUpdate(ctx, key_pem, strlen(key_pem) + 1) ||
	    !EVP_DigestUpdate(ctx, facts, strlen(facts)) ||
	    !EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen * 2 != STORE_DIGEST_HEX)
		fatalx("%s: SHA-256", __func__);
	EVP_MD_CTX_free(ctx);
	free(facts);
	for (i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/*
 * A key.pem as keys_to_pem() writes it: one PKCS#8 block and nothing
 * else, which the zone can take as it is.
 */
static int
store_key_pkcs8(const char *pem)
{
	static const char	 begin[] = "-----BEGIN PRIVATE KEY-----\n";
	static const char	 end[] = "-----END PRIVATE KEY-----\n";
	size_t			 len = strlen(pem);
	size_t			 nb = sizeof(begin) - 1, ne = sizeof(end) - 1;

	if (len < nb + ne || strncmp(pem, begin, nb) != 0 ||
	    strcmp(pem + len - ne, end) != 0)
		return 0;
	return strstr(pem + nb, "-----") == pem + len - ne &&
	    strchr(pem, '\r') == NULL;
}

/*
 * What meta.json says of the files it vouches for (store_pair_digest());
 * sv_ok is 0 when it says nothing, or not all of it.
 */
struct store_vouch {
	int		 sv_ok;
	struct cert_meta sv_meta;	/* only the dates and key type */
	char		*sv_cert_id;
	char		 sv_digest[STORE_DIGEST_HEX + 1];
};

static void
store_vouch_parse(json_t *obj, struct store_vouch *sv)
{
	json_int_t	 nb, na;
	json_t		*cert_id;
	const char	*key, *digest;

	memset(sv, 0, sizeof(*sv));
	if (json_unpack(obj, "{s:I, s:I, s:s, s:o, s:s}", "not_before", &nb,
	    "not_after", &na, "key", &key, "cert_id", &cert_id,
	    "pair_sha256", &digest) == -1 ||
	    key_type_parse(key, &sv->sv_meta.cm_key) == -1 ||
	    strlen(digest) != STORE_DIGEST_HEX ||
	    (!json_is_string(cert_id) && !json_is_null(cert_id)))
		return;
	sv->sv_meta.cm_not_before = (time_t)nb;
	sv->sv_meta.cm_not_after = (time_t)na;
	if (json_is_string(cert_id))
		sv->sv_cert_id = xstrdup(json_string_value(cert_id));
	memcpy(sv->sv_digest, digest, sizeof(sv->sv_digest));
	sv->sv_ok = 1;
}

/*
 * Fill issued, url and identifiers from meta.json, and sv with what it
 * vouches for.
 */
static int
store_meta_parse(const char *text, const char *path, struct cert_meta *meta,
    struct store_vouch *sv, char **cause)
{
	json_t		*obj = NULL, *ids = NULL, *url = NULL, *v;
	json_error_t	 err;
	json_int_t	 issued = 0;
	size_t		 i;
	int		 rc = -1;

	memset(sv, 0, sizeof(*sv));
	if ((obj = json_loads(text, 0, &err)) == NULL) {
		xasprintf(cause, "%s:%d: %s", path, err.line, err.text);
		goto out;
	}
	if (json_unpack_ex(obj, &err, 0, "{s?I, s?o, s:o}", "issued", &issued,
	    "url", &url, "identifiers", &ids) == -1) {
		xasprintf(cause, "%s: %s", path, err.text);
		goto out;
	}
	if (url != NULL && !json_is_string(url) && !json_is_null(url)) {
		xasprintf(cause, "%s: url is not a string", path);
		goto out;
	}
	if (!json_is_array(ids) || json_array_size(ids) == 0) {
		xasprintf(cause, "%s: identifiers is not a non-empty array",
		    path);
		goto out;
	}
	json_array_foreach(ids, i, v) {
		if (!json_is_string(v)) {
			xasprintf(cause, "%s: identifier %zu is not a string",
			    path, i);
			goto out;
		}
	}
	meta->cm_issued = (time_t)issued;
	if (json_is_string(url))
		meta->cm_url = xstrdup(json_string_value(url));
	meta->cm_nidents = json_array_size(ids);
	meta->cm_idents = xcalloc(meta->cm_nidents, sizeof(char *));
	json_array_foreach(ids, i, v)
		meta->cm_idents[i] = xstrdup(json_string_value(v));
	store_vouch_parse(obj, sv);
	rc = 0;
out:
	json_decref(obj);
	return rc;
}

/*
 * The identifiers a certificate is for: its subjectAltName DNS names and
 * IP addresses, which is where a CA puts every identifier of the order
 * (RFC 8555 section 7.4).  0 when it names none.
 */
static size_t
store_cert_idents(X509 *x, char ***out)
{
	GENERAL_NAMES	*gens;
	GENERAL_NAME	*gen;
	char		 ip[INET6_ADDRSTRLEN], *s, **v = NULL;
	size_t		 n = 0;
	int		 i, len, af;

	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		gen = sk_GENERAL_NAME_value(gens, i);
		s = NULL;
		if (gen->type == GEN_DNS) {
			len = ASN1_STRING_length(gen->d.dNSName);
			s = xstrndup((const char *)ASN1_STRING_get0_data(
			    gen->d.dNSName), (size_t)len);
			if (strlen(s) != (size_t)len) {	/* a NUL in it */
				free(s);
				continue;
			}
			for (len = 0; s[len] != '\0'; len++)
				s[len] = (char)tolower((unsigned char)s[len]);
		} else if (gen->type == GEN_IPADD) {
			len = ASN1_STRING_length(gen->d.iPAddress);
			af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
			if (af == -1 || inet_ntop(af, ASN1_STRING_get0_data(
			    gen->d.iPAddress), ip, sizeof(ip)) == NULL)
				continue;
			s = xstrdup(ip);
		}
		if (s == NULL)
			continue;
		v = xreallocarray(v, n + 1, sizeof(*v));
		v[n++] = s;
	}
	GENERAL_NAMES_free(gens);
	*out = v;
	return n;
}

/*
 * meta.json is damaged or missing, but the certificate and its key are
 * whole and match: what it says can be had from them, so the certificate
 * is kept, not dropped and ordered again.  The order's URL is lost; the
 * issue time becomes the certificate's notBefore.  Written anew
 * atomically; if that fails the next load rebuilds it again.
 */
static int
store_meta_rebuild(const char *path, struct stored_cert *sd,
    const char *digest, const char *why, char **cause)
{
	struct cert_meta	*meta = &sd->sd_meta;
	X509			*x;
	char			*json, *err = NULL;

	if ((x = store_first_cert(sd->sd_chain)) == NULL) {
		xasprintf(cause, "%s", why);
		return -1;
	}
	meta->cm_nidents = store_cert_idents(x, &meta->cm_idents);
	X509_free(x);
	if (meta->cm_nidents == 0) {
		xasprintf(cause, "%s; the certificate names no identifier to "
		    "rebuild it from", why);
		return -1;
	}
	meta->cm_issued = meta->cm_not_before;
	log_warnx("store: %s; rebuilt from the certificate", why);
	json = store_meta_json(meta, sd->sd_cert_id, digest);
	if (store_write_atomic(path, json, strlen(json), 0644, &err) == -1) {
		log_warnx("store: %s", err);
		free(err);
	}
	free(json);
	return 0;
}

/*
 * Put json at path, a meta.json, through a temp file and rename().  In a
 * batch without an fsync() of its own: the first start after an upgrade
 * rewrites every certificate's, and two fsync() each made that start
 * last minutes at N = 10,000, the zone empty meanwhile.  The batch syncs
 * them at its end instead (store_batch_end()); a crash before that can
 * only leave the old meta.json, or a torn one that the next load
 * rebuilds from the certificate.  Outside a batch: store_write_atomic().
 */
static int
store_meta_write(const char *path, const char *json, char **cause)
{
	char	*tmp;

	if (!store_batch.sb_active)
		return store_write_atomic(path, json, strlen(json), 0644,
		    cause);
	if ((tmp = store_write_temp(path, json, strlen(json), 0644, 0,
	    cause)) == NULL)
		return -1;
	if (rename(tmp, path) == -1) {
		xasprintf(cause, "rename %s: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	store_batch.sb_unsynced = 1;
	free(tmp);
	return 0;
}

/*
 * meta.json parsed but did not vouch for the pair, which the full check
 * has just found good: a meta.json written before pair_sha256 existed,
 * or one that no longer matches files changed since.  Written anew with
 * the digest, so that the next start does not parse and match the pair
 * again (that check is most of a start's cost).  Its identifiers, URL
 * and issue time are kept.  If the write fails, the next start checks
 * the pair in full, as this one did.
 */
static void
store_meta_vouch(const char *path, const struct stored_cert *sd,
    const char *digest)
{
	char	*json, *err = NULL;

	json = store_meta_json(&sd->sd_meta, sd->sd_cert_id, digest);
	if (store_meta_write(path, json, &err) == -1) {
		log_warnx("store: %s", err);
		free(err);
	} else
		log_debug("store: %s: pair_sha256 added", path);
	free(json);
}

/*
 * The generation folder that the symlink certs/id names, read as name
 * under the folder dfd (AT_FDCWD: name is a path).  1 when absent.
 */
static int
store_link_target(int dfd, const char *name, const char *certs,
    const char *id, char target[NAME_MAX + 1], char **cause)
{
	ssize_t	 n;

	if ((n = readlinkat(dfd, name, target, NAME_MAX)) == -1) {
		if (errno == ENOENT)
			return 1;
		if (errno == EINVAL)
			xasprintf(cause, "%s/%s: not a symbolic link", certs,
			    id);
		else
			xasprintf(cause, "%s/%s: %s", certs, id,
			    strerror(errno));
		return -1;
	}
	target[n] = '\0';
	if (n == 0 || target[0] == '.' || strchr(target, '/') != NULL) {
		xasprintf(cause, "%s/%s: points outside %s", certs, id, certs);
		return -1;
	}
	return 0;
}

/* The generation folder a certificate's symlink names.  1 when absent. */
static int
store_cert_target(const char *certs, const char *id, char **target,
    char **cause)
{
	char	 buf[NAME_MAX + 1], *link = NULL;
	int	 rc;

	*target = NULL;
	xasprintf(&link, "%s/%s", certs, id);
	if ((rc = store_link_target(AT_FDCWD, link, certs, id, buf,
	    cause)) == 0)
		*target = xstrdup(buf);
	free(link);
	return rc;
}

/*
 * Parse the chain and the key of one generation and check they agree:
 * the first certificate's dates and CertID, and the key's type, go to sd,
 * and the key as the zone takes it.
 */
static int
store_check_pair_files(const char *gen, const char *key_text, size_t key_len,
    struct stored_cert *sd, char **cause)
{
	struct cert_meta	*meta = &sd->sd_meta;
	X509			*x = NULL;
	EVP_PKEY		*key = NULL;
	char			*why = NULL;
	int			 rc = -1;

	if ((x = store_first_cert(sd->sd_chain)) == NULL ||
	    store_asn1_time(X509_get0_notBefore(x), &meta->cm_not_before) ||
	    store_asn1_time(X509_get0_notAfter(x), &meta->cm_not_after)) {
		xasprintf(cause, "%s/%s: no valid certificate", gen,
		    STORE_CHAIN);
		goto out;
	}
	if ((key = keys_from_pem(key_text, key_len, &why)) == NULL) {
		xasprintf(cause, "%s/%s: %s", gen, STORE_KEY, why);
		goto out;
	}
	if (!X509_check_private_key(x, key)) {
		ERR_clear_error();
		xasprintf(cause, "%s/%s: does not match the certificate in "
		    "%s/%s", gen, STORE_KEY, gen, STORE_CHAIN);
		goto out;
	}
	if (store_key_type(key, &meta->cm_key) == -1) {
		xasprintf(cause, "%s/%s: unsupported key type", gen, STORE_KEY);
		goto out;
	}
	/* Without one there is no ARI: order_ari.c says so. */
	sd->sd_cert_id = ari_cert_id_x509(x, &why);
	sd->sd_key_pem = store_key_pkcs8(key_text) ? xstrdup(key_text) :
	    keys_to_pem(key);
	if (sd->sd_key_pem == NULL) {
		xasprintf(cause, "%s/%s: the key does not encode", gen,
		    STORE_KEY);
		goto out;
	}
	rc = 0;
out:
	free(why);
	EVP_PKEY_free(key);
	X509_free(x);
	return rc;
}

/*
 * Read gen/file, a file that must be there, under the folder certs (cfd).
 * 0: read, -1: missing or error (cause).
 */
static int
store_read_whole(int cfd, const char *certs, const char *gen,
    const char *file, char **out, size_t *len, char **cause)
{
	char	 name[NAME_MAX + 1 + sizeof(STORE_CHAIN)];
	int	 r;

	(void)snprintf(name, sizeof(name), "%s/%s", gen, file);
	if ((r = store_read_at(cfd, certs, name, out, len, cause)) == 1)
		xasprintf(cause, "%s/%s: missing", certs, name);
	return r == 0 ? 0 : -1;
}

/*
 * Does meta.json vouch for the files as they are?  Then its dates, key
 * type and CertID stand for what parsing them would give, and *key_text
 * becomes sd's.
 */
static int
store_vouched(struct store_vouch *sv, struct stored_cert *sd, size_t len,
    char **key_text, size_t key_len)
{
	char	 digest[STORE_DIGEST_HEX + 1];

	/* The digest ends each text at a NUL: one inside is not vouched. */
	if (!sv->sv_ok || strlen(sd->sd_chain) != len ||
	    strlen(*key_text) != key_len || !store_key_pkcs8(*key_text))
		return 0;
	store_pair_digest(sd->sd_chain, *key_text, &sv->sv_meta,
	    sv->sv_cert_id, digest);
	if (strcmp(digest, sv->sv_digest) != 0)
		return 0;
	sd->sd_meta.cm_not_before = sv->sv_meta.cm_not_before;
	sd->sd_meta.cm_not_after = sv->sv_meta.cm_not_after;
	sd->sd_meta.cm_key = sv->sv_meta.cm_key;
	sd->sd_cert_id = sv->sv_cert_id;
	sv->sv_cert_id = NULL;
	sd->sd_key_pem = *key_text;
	*key_text = NULL;
	return 1;
}

/*
 * Load and check the files of one generation folder, gen under the
 * folder certs (cfd).
 */
static int
store_load_gen(int cfd, const char *certs, const char *gen,
    struct stored_cert *sd, char **cause)
{
	struct store_vouch	 sv;
	char			 digest[STORE_DIGEST_HEX + 1];
	char			*path = NULL, *key = NULL, *text = NULL;
	char			*why = NULL, *dir = NULL;
	size_t			 len, key_len = 0;
	int			 rc = -1, r, parsed = 0, vouchable;

	memset(&sv, 0, sizeof(sv));
	if (store_read_whole(cfd, certs, gen, STORE_CHAIN, &sd->sd_chain,
	    &len, cause) == -1 ||
	    store_read_whole(cfd, certs, gen, STORE_KEY, &key, &key_len,
	    cause) == -1)
		goto out;
	xasprintf(&path, "%s/%s/%s", certs, gen, STORE_META);
	if ((r = store_read_whole(cfd, certs, gen, STORE_META, &text, NULL,
	    &why)) == 0 && store_meta_parse(text, path, &sd->sd_meta, &sv,
	    &why) == 0)
		parsed = 1;
	if (parsed && store_vouched(&sv, sd, len, &key, key_len)) {
		rc = 0;
		goto out;
	}
	xasprintf(&dir, "%s/%s", certs, gen);
	if (store_check_pair_files(dir, key, key_len, sd, cause) == -1)
		goto out;
	vouchable = strlen(sd->sd_chain) == len && strlen(key) == key_len &&
	    store_key_pkcs8(key);
	if (!parsed || vouchable)
		store_pair_digest(sd->sd_chain, key, &sd->sd_meta,
		    sd->sd_cert_id, digest);
	if (!parsed) {
		if (store_meta_rebuild(path, sd, vouchable ? digest : NULL, why,
		    cause) == -1)
			goto out;
	} else if (vouchable)
		store_meta_vouch(path, sd, digest);
	rc = 0;
out:
	free(sv.sv_cert_id);
	if (key != NULL) {
		OPENSSL_cleanse(key, key_len);
		free(key);
	}
	free(why);
	free(text);
	free(path);
	free(dir);
	return rc;
}

int
store_load_stored(const char *dir, const char *id, struct stored_cert *sd,
    char **cause)
{
	char	*certs = NULL, target[NAME_MAX + 1];
	int	 rc = -1, r, cfd = -1;

	memset(sd, 0, sizeof(*sd));
	if (store_id_valid(id, cause) == -1)
		goto out;
	xasprintf(&certs, "%s/%s", dir, STORE_CERTS);
	if ((r = store_dir_open(certs, &cfd, cause)) != 0 ||
	    (r = store_link_target(cfd, id, certs, id, target, cause)) != 0) {
		rc = r;
		goto out;
	}
	if (store_load_gen(cfd, certs, target, sd, cause) == -1)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		store_stored_clear(sd);
	store_dir_close(cfd);
	free(certs);
	return rc;
}

void
store_stored_clear(struct stored_cert *sd)
{
	free(sd->sd_chain);
	keys_pem_free(sd->sd_key_pem);
	free(sd->sd_cert_id);
	store_meta_clear(&sd->sd_meta);
	memset(sd, 0, sizeof(*sd));
}

/* store_load_stored(), with the key decoded, for those that use it. */
int
store_load_cert(const char *dir, const char *id, char **chain, EVP_PKEY **key,
    struct cert_meta *meta, char **cause)
{
	struct stored_cert	 sd;
	char			*why = NULL;
	int			 rc;

	*chain = NULL;
	*key = NULL;
	memset(meta, 0, sizeof(*meta));
	if ((rc = store_load_stored(dir, id, &sd, cause)) != 0)
		return rc;
	if ((*key = keys_from_pem(sd.sd_key_pem, strlen(sd.sd_key_pem),
	    &why)) == NULL) {
		xasprintf(cause, "%s: %s", id, why);
		free(why);
		store_stored_clear(&sd);
		return -1;
	}
	*chain = sd.sd_chain;
	sd.sd_chain = NULL;
	*meta = sd.sd_meta;
	memset(&sd.sd_meta, 0, sizeof(sd.sd_meta));
	store_stored_clear(&sd);
	return 0;
}

/* Remove a generation folder and the files in it; it has no subfolders. */
static int
store_remove_gen(const char *path)
{
	struct dirent	*de;
	DIR		*d;
	int		 fd, rc = 0;

	/* Never follow a link: only a real generation folder goes. */
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1)
		return errno == ENOENT ? 0 : -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == -1)
			rc = -1;
	}
	closedir(d);
	if (rmdir(path) == -1)
		rc = -1;
	return rc;
}

/*
 * "<id>@<16 hex>": one of id's generation folders.  '@' appears in no DNS
 * name or IP address, so no other certificate's id can look like one.
 */
static int
store_is_gen(const char *name, const char *id)
{
	size_t	 n = strlen(id), i;

	if (strncmp(name, id, n) != 0 || name[n] != '@' ||
	    strlen(name + n + 1) != STORE_GEN_LEN)
		return 0;
	for (i = n + 1; name[i] != '\0'; i++) {
		if (!isxdigit((unsigned char)name[i]) ||
		    isupper((unsigned char)name[i]))
			return 0;
	}
	return 1;
}

/*
 * Create generation g+1 after the one the link names (g = 0 when there is
 * none).  Generations only ever grow by one, so a crash can leave only two
 * strays: g+1, written but never linked, which is removed and written
 * again, and g-1, linked before but never removed, which goes here too.
 * Nothing else needs a scan of certs/, which would make every save cost
 * as much as the number of certificates.
 */
static char *
store_new_gen(const char *certs, const char *id, const char *old,
    char **cause)
{
	unsigned long long	 g = 0;
	char			*name = NULL, *path = NULL;

	if (old != NULL && store_is_gen(old, id))
		g = strtoull(old + strlen(id) + 1, NULL, 16);
	if (g > 1) {
		xasprintf(&path, "%s/%s@%016llx", certs, id, g - 1);
		if (store_remove_gen(path) == -1)
			log_warn("store: removing %s", path);
		free(path);
	}
	xasprintf(&name, "%s@%016llx", id, g + 1);
	xasprintf(&path, "%s/%s", certs, name);
	if (mkdir(path, 0700) == -1) {
		if (errno != EEXIST)
			goto fail;
		log_debug("store: removing unlinked %s", path);
		if (store_remove_gen(path) == -1 || mkdir(path, 0700) == -1)
			goto fail;
	}
	free(path);
	return name;
fail:
	xasprintf(cause, "mkdir %s: %s", path, strerror(errno));
	free(path);
	free(name);
	return NULL;
}

static int
store_write_gen(const char *gen, const char *chain, EVP_PKEY *key,
    const struct cert_meta *meta, const char *cert_id, char **cause)
{
	char	 digest[STORE_DIGEST_HEX + 1];
	char	*path = NULL, *pem = NULL, *json = NULL;
	int	 rc = -1;

	xasprintf(&path, "%s/%s", gen, STORE_CHAIN);
	if (store_write_new(path, chain, strlen(chain), 0644, cause) == -1)
		goto out;
	free(path);
	path = NULL;
	if ((pem = keys_to_pem(key)) == NULL) {
		xasprintf(cause, "cannot encode the private key as PKCS#8");
		goto out;
	}
	xasprintf(&path, "%s/%s", gen, STORE_KEY);
	if (store_write_new(path, pem, strlen(pem), 0600, cause) == -1)
		goto out;
	free(path);
	/* store_save_cert() checked the pair: meta.json vouches for it. */
	store_pair_digest(chain, pem, meta, cert_id, digest);
	json = store_meta_json(meta, cert_id, digest);
	xasprintf(&path, "%s/%s", gen, STORE_META);
	if (store_write_new(path, json, strlen(json), 0644, cause) == -1)
		goto out;
	rc = 0;
out:
	keys_pem_free(pem);
	free(json);
	free(path);
	return rc;
}

/* Point certs/<id> at target with one rename(); -1: the link is unchanged. */
static int
store_swap_link(const char *certs, const char *id, const char *target,
    char **cause)
{
	char	*tmp = NULL, *link = NULL;
	int	 rc = -1;

	/* The first link needs no swap (and one inode less). */
	xasprintf(&link, "%s/%s", certs, id);
	if (symlink(target, link) == 0) {
		free(link);
		return 0;
	}
	if (errno != EEXIST) {
		xasprintf(cause, "symlink %s: %s", link, strerror(errno));
		free(link);
		return -1;
	}
	/* One daemon owns state_path, so a fixed temp name is safe. */
	xasprintf(&tmp, "%s/.%s.link", certs, id);
	if (unlink(tmp) == -1 && errno != ENOENT) {
		xasprintf(cause, "unlink %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (symlink(target, tmp) == -1) {
		xasprintf(cause, "symlink %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, link) == -1) {
		xasprintf(cause, "rename %s: %s", link, strerror(errno));
		unlink(tmp);
		goto out;
	}
	rc = 0;
out:
	free(tmp);
	free(link);
	return rc;
}

/*
 * The chain's first certificate if key is its key; NULL and why if not.
 * leaf, when not NULL, is that certificate already parsed: it gets a
 * reference instead of a second parse.
 */
static X509 *
store_matching_cert(const char *id, const char *chain, X509 *leaf,
    EVP_PKEY *key, char **cause)
{
	X509	*x;

	if (leaf != NULL && X509_up_ref(leaf) == 1)
		x = leaf;
	else if ((x = store_first_cert(chain)) == NULL) {
		xasprintf(cause, "%s: chain has no valid certificate", id);
		return NULL;
	}
	if (!X509_check_private_key(x, key)) {
		ERR_clear_error();
		xasprintf(cause, "%s: key does not match the certificate", id);
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Refuse to store a pair that store_load_cert would reject. */
int
store_check_pair(const char *id, const char *chain, EVP_PKEY *key,
    char **cause)
{
	X509	*x;

	if ((x = store_matching_cert(id, chain, NULL, key, cause)) == NULL)
		return -1;
	X509_free(x);
	return 0;
}

/*
 * store_check_pair(), and what meta.json records of the pair: its dates,
 * key type and CertID (NULL without one), from one parse of the chain
 * (none with leaf).
 */
static int
store_check_for_save(const char *id, const char *chain, X509 *leaf,
    EVP_PKEY *key, struct cert_meta *m, char **cert_id, char **cause)
{
	X509	*x;
	char	*why = NULL;
	int	 rc = -1;

	if ((x = store_matching_cert(id, chain, leaf, key, cause)) == NULL)
		return -1;
	if (store_asn1_time(X509_get0_notBefore(x), &m->cm_not_before) ||
	    store_asn1_time(X509_get0_notAfter(x), &m->cm_not_after)) {
		xasprintf(cause, "%s: certificate dates unreadable", id);
		goto out;
	}
	if (store_key_type(key, &m->cm_key) == -1) {
		xasprintf(cause, "%s: unsupported key type", id);
		goto out;
	}
	*cert_id = ari_cert_id_x509(x, &why);
	free(why);
	rc = 0;
out:
	X509_free(x);
	return rc;
}

/*
 * Saving a batch of certificates (store_save_certs()).  Each gets a new
 * generation folder that no link names yet, with its three files written
 * but not synced.  Then one syncfs() per filesystem makes all of them
 * durable at once: it writes back and waits for every dirty page and
 * inode of the filesystem, the folders' entries among them, and flushes
 * the disk's cache, and since Linux 5.8 it reports a write-back error of
 * any file there.  Only then is each link swapped, and each certs/ folder
 * fsynced once.  A link thus never names a folder that a crash could
 * lose or tear, as with a fsync per file, per folder and per link (six a
 * certificate before); a batch of n costs 1 + (certs/ folders) syncs.
 * syncfs() also writes other programs' data of that filesystem: that is
 * the writer thread's time, and more jobs queue meanwhile for the next.
 */
struct store_step {
	char		*st_certs;	/* <dir>/certs */
	char		*st_old;	/* the generation the link names */
	char		*st_name;	/* the new one */
	char		*st_gen;	/* its path */
	dev_t		 st_dev;	/* certs/'s filesystem */
	int		 st_synced;	/* whose syncfs() this one made */
	int		 st_swapped;	/* the link names it */
};

/* Write sv's generation folder, not synced; -1 and sv_cause on error. */
static int
store_save_write(struct store_save *sv, struct store_step *st)
{
	struct cert_meta	 m;
	char			*cert_id = NULL, **cause = &sv->sv_cause;
	int			 rc = -1;

	/* meta.json's dates and key type say what the files themselves say. */
	m = *sv->sv_meta;
	if (store_id_valid(sv->sv_id, cause) == -1 ||
	    store_check_for_save(sv->sv_id, sv->sv_chain, sv->sv_leaf,
	    sv->sv_key, &m, &cert_id, cause) == -1)
		goto out;
	xasprintf(&st->st_certs, "%s/%s", sv->sv_dir, STORE_CERTS);
	if (store_mkdir(st->st_certs, cause) == -1 ||
	    store_cert_target(st->st_certs, sv->sv_id, &st->st_old,
	    cause) == -1)
		goto out;
	if ((st->st_name = store_new_gen(st->st_certs, sv->sv_id, st->st_old,
	    cause)) == NULL)
		goto out;
	xasprintf(&st->st_gen, "%s/%s", st->st_certs, st->st_name);
	if (store_write_gen(st->st_gen, sv->sv_chain, sv->sv_key, &m, cert_id,
	    cause) == -1)
		goto out;
	rc = 0;
out:
	free(cert_id);
	return rc;
}

/*
 * One syncfs() for each filesystem that holds a folder written: an item
 * on a filesystem synced already shares that sync's outcome.
 */
static void
store_save_sync(struct store_save *sv, struct store_step *st, size_t n)
{
	struct stat	 sb;
	size_t		 i, j;
	int		 fd;

	for (i = 0; i < n; i++) {
		if (sv[i].sv_rc == -1)
			continue;
		if ((fd = open(st[i].st_certs, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) == -1 || fstat(fd, &sb) == -1) {
			xasprintf(&sv[i].sv_cause, "%s: %s", st[i].st_certs,
			    strerror(errno));
			sv[i].sv_rc = -1;
			if (fd != -1)
				close(fd);
			continue;
		}
		st[i].st_dev = sb.st_dev;
		for (j = 0; j < i; j++) {
			if (st[j].st_synced && st[j].st_dev == st[i].st_dev)
				break;
		}
		if (j < i) {
			if ((sv[i].sv_rc = sv[j].sv_rc) == -1)
				sv[i].sv_cause = xstrdup(sv[j].sv_cause);
		} else {
			st[i].st_synced = 1;
			if (syncfs(fd) == -1) {
				xasprintf(&sv[i].sv_cause, "syncfs %s: %s",
				    st[i].st_certs, strerror(errno));
				sv[i].sv_rc = -1;
			}
		}
		close(fd);
	}
}

/* One fsync of each certs/ folder whose links changed. */
static void
store_save_sync_links(struct store_save *sv, struct store_step *st,
    size_t n)
{
	size_t	 i, j;
	char	*why = NULL;
	int	 rc;

	for (i = 0; i < n; i++) {
		if (!st[i].st_swapped)
			continue;
		for (j = 0; j < i; j++) {
			if (st[j].st_swapped &&
			    strcmp(st[j].st_certs, st[i].st_certs) == 0)
				break;
		}
		if (j < i)
			continue;	/* that folder's fsync covered it */
		rc = store_fsync_dir(st[i].st_certs, &why);
		for (j = i; rc == -1 && j < n; j++) {
			if (!st[j].st_swapped ||
			    strcmp(st[j].st_certs, st[i].st_certs) != 0)
				continue;
			sv[j].sv_rc = -1;
			sv[j].sv_cause = xstrdup(why);
		}
		free(why);
		why = NULL;
	}
}

/* The old generation goes; a folder no link names goes too. */
static void
store_save_finish(struct store_save *sv, struct store_step *st)
{
	char	*path = NULL;

	if (sv->sv_rc == 0 && st->st_old != NULL &&
	    strcmp(st->st_old, st->st_name) != 0) {
		xasprintf(&path, "%s/%s", st->st_certs, st->st_old);
		if (store_remove_gen(path) == -1)
			log_warn("store: removing %s", path);
		free(path);
	}
	if (sv->sv_rc == 0)
		log_debug("store: %s saved as %s", sv->sv_id, st->st_name);
	/* Once the link names the new folder, it must stay. */
	if (sv->sv_rc == -1 && st->st_gen != NULL && !st->st_swapped)
		store_remove_gen(st->st_gen);
	free(st->st_certs);
	free(st->st_old);
	free(st->st_name);
	free(st->st_gen);
}

/* Save sv[0..n-1], all of distinct certificates. */
static void
store_save_distinct(struct store_save *sv, size_t n)
{
	struct store_step	*st;
	size_t			 i;

	st = xcalloc(n, sizeof(*st));
	for (i = 0; i < n; i++)
		sv[i].sv_rc = store_save_write(&sv[i], &st[i]);
	store_save_sync(sv, st, n);
	for (i = 0; i < n; i++) {
		if (sv[i].sv_rc == -1)
			continue;
		/* The new folder's entry was made durable by the sync. */
		if (store_swap_link(st[i].st_certs, sv[i].sv_id, st[i].st_name,
		    &sv[i].sv_cause) == -1)
			sv[i].sv_rc = -1;
		else
			st[i].st_swapped = 1;
	}
	store_save_sync_links(sv, st, n);
	for (i = 0; i < n; i++)
		store_save_finish(&sv[i], &st[i]);
	free(st);
}

/*
 * Save each of sv[0..n-1] as store_save_cert() does, setting its sv_rc
 * and, on error, sv_cause (the caller frees it), with a sync per batch
 * instead of six per certificate.  Items are saved in order: a second
 * save of the same certificate goes in a later batch, after the first.
 */
void
store_save_certs(struct store_save *sv, size_t n)
{
	size_t	 first, i, j;

	for (first = 0; first < n; first = i) {
		for (i = first + 1; i < n; i++) {
			for (j = first; j < i; j++) {
				if (strcmp(sv[j].sv_id, sv[i].sv_id) == 0 &&
				    strcmp(sv[j].sv_dir, sv[i].sv_dir) == 0)
					break;
			}
			if (j < i)
				break;
		}
		store_save_distinct(sv + first, i - first);
	}
}

int
store_save_cert(const char *dir, const char *id, const char *chain,
    EVP_PKEY *key, const struct cert_meta *meta, char **cause)
{
	return store_save_cert_x509(dir, id, chain, NULL, key, meta, cause);
}

/*
 * store_save_cert() with leaf, the first certificate of chain, already
 * parsed by store_chain_leaf() (NULL: parse it here).
 */
int
store_save_cert_x509(const char *dir, const char *id, const char *chain,
    X509 *leaf, EVP_PKEY *key, const struct cert_meta *meta, char **cause)
{
	struct store_save	 sv;

	memset(&sv, 0, sizeof(sv));
	sv.sv_dir = dir;
	sv.sv_id = id;
	sv.sv_chain = chain;
	sv.sv_leaf = leaf;
	sv.sv_key = key;
	sv.sv_meta = meta;
	store_save_certs(&sv, 1);
	*cause = sv.sv_cause;
	return sv.sv_rc;
}

/*
 * An order about to be finalized: its URL, identifiers and new private key,
 * kept in pending/<id>.json (0600) until the certificate is stored.  A daemon
 * killed in between then fetches that certificate on restart, instead of
 * ordering another one for the CA to issue a second time.
 *
 * It is written before every finalize, on the loop, so it gets rename() but
 * no fsync: that protects it from a crash of the daemon, which is what it is
 * for.  After a power cut it may be missing or torn; the loader then treats
 * it as absent, and the certificate is ordered again, as without it.
 */
static char *
store_pending_path(const char *dir, const char *id)
{
	char	*path;

	xasprintf(&path, "%s/%s/%s.json", dir, STORE_PENDING, id);
	return path;
}

int
store_save_pending(const char *dir, const char *id, const char *url,
    char *const *idents, size_t nidents, EVP_PKEY *key, char **cause)
{
	json_t	*o = NULL, *a;
	char	*pdir = NULL, *path = NULL, *tmp = NULL, *pem = NULL;
	char	*text = NULL;
	size_t	 i;
	int	 fd = -1, rc = -1;

	if (store_id_valid(id, cause) == -1)
		goto out;
	if ((pem = keys_to_pem(key)) == NULL) {
		xasprintf(cause, "cannot encode the private key as PKCS#8");
		goto out;
	}
	a = json_array();
	for (i = 0; i < nidents; i++)
		json_array_append_new(a, json_string(idents[i]));
	o = json_pack("{s:s, s:o, s:s}", "order", url, "identifiers", a,
	    "key", pem);
	if (o == NULL || (text = json_dumps(o, JSON_COMPACT)) == NULL) {
		xasprintf(cause, "%s: cannot encode the pending order", id);
		goto out;
	}
	xasprintf(&pdir, "%s/%s", dir, STORE_PENDING);
	if (store_mkdir(pdir, cause) == -1)
		goto out;
	path = store_pending_path(dir, id);
	xasprintf(&tmp, "%s/.%s.XXXXXX", pdir, id);
	if ((fd = mkostemp(tmp, O_CLOEXEC)) == -1) {
		xasprintf(cause, "%s: %s", tmp, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	errno = 0;
	if (fchmod(fd, 0600) == -1 ||
	    write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		xasprintf(cause, "write %s: %s", tmp, errno == 0 ? "short write" :
		    strerror(errno));
		goto out;
	}
	if (close(fd) == -1) {
		fd = -1;
		xasprintf(cause, "close %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		xasprintf(cause, "rename %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	if (text != NULL) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
	json_decref(o);		/* its copy of the key is not wiped */
	keys_pem_free(pem);
	free(path);
	free(pdir);
	return rc;
}

/*
 * The pending order of id, if there is one for exactly these identifiers.
 * 0: *url and *key are set; 1: none (or one for other identifiers, or one
 * that does not parse: see above); -1: unreadable.
 */
int
store_load_pending(const char *dir, const char *id, char *const *idents,
    size_t nidents, char **url, EVP_PKEY **key, char **cause)
{
	json_t		*o = NULL, *a;
	json_error_t	 jerr;
	const char	*u, *pem;
	char		*pdir = NULL, *path = NULL, *text = NULL, *why = NULL;
	char		 name[NAME_MAX + 1];
	size_t		 len, i;
	int		 rc, pfd;

	*url = NULL;
	*key = NULL;
	if (store_id_valid(id, cause) == -1)
		return -1;
	xasprintf(&pdir, "%s/%s", dir, STORE_PENDING);
	path = store_pending_path(dir, id);
	(void)snprintf(name, sizeof(name), "%s.json", id);
	if ((rc = store_dir_open(pdir, &pfd, cause)) == 0)
		rc = store_may_hold(pdir, name) ? store_read_at(pfd, pdir,
		    name, &text, &len, cause) : 1;
	store_dir_close(pfd);
	if (rc != 0)
		goto out;
	rc = 1;
	o = json_loadb(text, len, 0, &jerr);
	u = json_string_value(json_object_get(o, "order"));
	pem = json_string_value(json_object_get(o, "key"));
	a = json_object_get(o, "identifiers");
	if (u == NULL || pem == NULL || json_array_size(a) != nidents) {
		log_warnx("store: %s: not a pending order; ignored", path);
		goto out;
	}
	for (i = 0; i < nidents; i++) {
		if (!json_is_string(json_array_get(a, i)) || strcmp(idents[i],
		    json_string_value(json_array_get(a, i))) != 0) {
			log_debug("store: %s: for other identifiers", path);
			goto out;
		}
	}
	if ((*key = keys_from_pem(pem, strlen(pem), &why)) == NULL) {
		log_warnx("store: %s: %s; ignored", path, why);
		free(why);
		goto out;
	}
	*url = xstrdup(u);
	rc = 0;
out:
	if (text != NULL) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	json_decref(o);
	free(path);
	free(pdir);
	return rc;
}

void
store_remove_pending(const char *dir, const char *id)
{
	char	*path = store_pending_path(dir, id);

	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("store: unlink %s", path);
	free(path);
}

/*
 * STATE/ari/ID.json: what the CA's renewalInfo said of the certificate in
 * use (ari.c), so that a restart keeps its renewal time and does not ask
 * again before the CA's Retry-After.  It names the certificate by CertID:
 * one for another certificate is stale, and the caller ignores it.
 */
static char *
store_ari_path(const char *dir, const char *id)
{
	char	*path;

	xasprintf(&path, "%s/%s/%s.json", dir, STORE_ARI, id);
	return path;
}

int
store_save_ari(const char *dir, const char *id, const struct ari_state *as,
    char **cause)
{
	char	*adir = NULL, *path = NULL, *text = NULL;
	int	 rc = -1;

	if (store_id_valid(id, cause) == -1)
		return -1;
	xasprintf(&adir, "%s/%s", dir, STORE_ARI);
	if (store_mkdir(adir, cause) == -1)
		goto out;
	path = store_ari_path(dir, id);
	text = ari_state_json(as);
	rc = store_write_atomic(path, text, strlen(text), 0600, cause);
out:
	free(text);
	free(path);
	free(adir);
	return rc;
}

int
store_load_ari(const char *dir, const char *id, struct ari_state *as,
    char **cause)
{
	char	*adir = NULL, *path = NULL, *text = NULL, *why = NULL;
	size_t	 len;
	int	 rc;

	if (store_id_valid(id, cause) == -1)
		return -1;
	xasprintf(&adir, "%s/%s", dir, STORE_ARI);
	path = store_ari_path(dir, id);
	if ((rc = store_dir_ok(adir, cause)) != 0 ||
	    (rc = store_read_file(path, &text, &len, cause)) != 0)
		goto out;
	if (ari_state_parse(text, len, as, &why) == -1) {
		/* Only a cache of the CA's answer: ask the CA again. */
		log_warnx("store: %s: %s; ignored", path, why);
		free(why);
		rc = 1;
	}
out:
	free(text);
	free(path);
	free(adir);
	return rc;
}

void
store_remove_ari(const char *dir, const char *id)
{
	char	*path = store_ari_path(dir, id);

	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("store: unlink %s", path);
	free(path);
}

/*
 * STATE/dns-01/VALUE.json: a dns-01 TXT record the hook is asked to add
 * (order_dns.c), written before the "add" runs and removed once its "del"
 * succeeded, so that a record left behind by a crash is removed at the
 * next start.  VALUE, the record's text, is unique to its authorization
 * and base64url, so it makes a safe file name.  What is read back is
 * outside input: a note that does not parse is left alone, with a warning.
 */
#define STORE_DNS		"dns-01"
#define STORE_DNS_VALUE_LEN	43	/* base64url of a SHA-256 */
#define STORE_DNS_FQDN_MAX	255

static int
store_dns_value_valid(const char *value)
{
	size_t	 i;

	for (i = 0; value[i] != '\0'; i++)
		if (!isalnum((unsigned char)value[i]) && value[i] != '-' &&
		    value[i] != '_')
			return 0;
	return i == STORE_DNS_VALUE_LEN;
}

/* "_acme-challenge.NAME.": host name characters, no empty label. */
static int
store_dns_fqdn_valid(const char *fqdn)
{
	size_t	 i, len = strlen(fqdn);

	if (len > STORE_DNS_FQDN_MAX || len < 2 || fqdn[len - 1] != '.' ||
	    strncmp(fqdn, "_acme-challenge.", 16) != 0)
		return 0;
	for (i = 0; i < len; i++) {
		if (fqdn[i] == '.' && (i == 0 || fqdn[i - 1] == '.'))
			return 0;
		if (!isalnum((unsigned char)fqdn[i]) && fqdn[i] != '-' &&
		    fqdn[i] != '_' && fqdn[i] != '.')
			return 0;
	}
	return 1;
}

static char *
store_dns_path(const char *dir, const char *value)
{
	char	*path;

	xasprintf(&path, "%s/%s/%s.json", dir, STORE_DNS, value);
	return path;
}

int
store_save_dns_record(const char *dir, const char *fqdn, const char *value,
    char **cause)
{
	json_t	*o = NULL;
	char	*ddir = NULL, *path = NULL, *text = NULL;
	int	 rc = -1;

	if (!store_dns_value_valid(value) || !store_dns_fqdn_valid(fqdn)) {
		xasprintf(cause, "not a dns-01 record: %s \"%s\"", fqdn, value);
		goto out;
	}
	o = json_pack("{s:s, s:s}", "fqdn", fqdn, "value", value);
	if (o == NULL || (text = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	xasprintf(&ddir, "%s/%s", dir, STORE_DNS);
	if (store_mkdir(ddir, cause) == -1)
		goto out;
	path = store_dns_path(dir, value);
	rc = store_write_atomic(path, text, strlen(text), 0600, cause);
out:
	json_decref(o);
	free(text);
	free(path);
	free(ddir);
	return rc;
}

/* A note's text: 0 with *fqdn and *value set (caller frees), or -1. */
int
store_dns_record_parse(const char *text, size_t len, char **fqdn,
    char **value, char **cause)
{
	json_t		*o;
	json_error_t	 jerr;
	const char	*f, *v;
	int		 rc = -1;

	*fqdn = *value = NULL;
	if ((o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL) {
		xasprintf(cause, "not JSON: %s", jerr.text);
		return -1;
	}
	f = json_string_value(json_object_get(o, "fqdn"));
	v = json_string_value(json_object_get(o, "value"));
	/* jansson refuses a NUL inside a string (no JSON_ALLOW_NUL). */
	if (f == NULL || v == NULL || !store_dns_fqdn_valid(f) ||
	    !store_dns_value_valid(v)) {
		xasprintf(cause, "no valid \"fqdn\" and \"value\"");
		goto out;
	}
	*fqdn = xstrdup(f);
	*value = xstrdup(v);
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/* One note of STATE/dns-01 by its file name; 0 and set, or -1 (logged). */
static int
store_load_dns_one(const char *dir, const char *name,
    struct store_dns_record *rec)
{
	char	*path = NULL, *text = NULL, *value = NULL, *why = NULL;
	size_t	 len, namelen = strlen(name);
	int	 rc = -1;

	if (namelen != STORE_DNS_VALUE_LEN + 5 ||
	    strcmp(name + STORE_DNS_VALUE_LEN, ".json") != 0)
		return -1;	/* a temp file, or not ours */
	value = xstrndup(name, STORE_DNS_VALUE_LEN);
	if (!store_dns_value_valid(value))
		goto out;
	path = store_dns_path(dir, value);
	if (store_read_file(path, &text, &len, &why) != 0)
		goto out;
	if (store_dns_record_parse(text, len, &rec->sd_fqdn, &rec->sd_value,
	    &why) == -1)
		goto out;
	if (strcmp(rec->sd_value, value) != 0) {
		xasprintf(&why, "its value is not its name");
		free(rec->sd_fqdn);
		free(rec->sd_value);
		goto out;
	}
	rc = 0;
out:
	if (rc == -1 && path != NULL)
		log_warnx("store: %s: %s; left alone", path,
		    why != NULL ? why : "absent");
	free(why);
	free(text);
	free(value);
	free(path);
	return rc;
}

/*
 * Every note in STATE/dns-01, at most STORE_DNS_MAX_NOTES.  0: *recs (an
 * array the caller frees with store_dns_records_free) and *n set; -1:
 * the folder is unsafe or unreadable (cause).
 */
int
store_load_dns_records(const char *dir, struct store_dns_record **recs,
    size_t *n, char **cause)
{
	DIR			*d = NULL;
	struct dirent		*de;
	struct store_dns_record	 rec;
	char			*ddir = NULL;
	int			 rc = -1;

	*recs = NULL;
	*n = 0;
	xasprintf(&ddir, "%s/%s", dir, STORE_DNS);
	if ((rc = store_dir_ok(ddir, cause)) != 0) {
		rc = rc == 1 ? 0 : -1;
		goto out;
	}
	rc = -1;
	if ((d = opendir(ddir)) == NULL) {
		xasprintf(cause, "%s: %s", ddir, strerror(errno));
		goto out;
	}
	while ((de = readdir(d)) != NULL && *n < STORE_DNS_MAX_NOTES) {
		if (store_load_dns_one(dir, de->d_name, &rec) == -1)
			continue;
		*recs = xreallocarray(*recs, *n + 1, sizeof(**recs));
		(*recs)[(*n)++] = rec;
	}
	rc = 0;
out:
	if (d != NULL)
		closedir(d);
	free(ddir);
	return rc;
}

void
store_dns_records_free(struct store_dns_record *recs, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		free(recs[i].sd_fqdn);
		free(recs[i].sd_value);
	}
	free(recs);
}

void
store_remove_dns_record(const char *dir, const char *value)
{
	char	*path;

	if (!store_dns_value_valid(value))
		return;
	path = store_dns_path(dir, value);
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("store: unlink %s", path);
	free(path);
}
