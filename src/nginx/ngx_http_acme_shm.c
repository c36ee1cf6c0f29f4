/*
 * The segment from a worker's side: map it, keep the mapping current, and
 * look things up following the reader protocol of proto/acme_shm.h.
 *
 * The mapping is per worker, read-only and MAP_SHARED, so it sees every
 * image the sidecar publishes without a system call.  The file may not
 * exist yet (the sidecar starts after nginx), may grow across a sidecar
 * restart (header.size changes) or may be replaced (another inode): each
 * is noticed by an lstat(2) on the next lookup, at most once a second
 * once a file is mapped.
 *
 * The file is believed only when the configured owner (root unless
 * "acme_shared_zone ... owner=USER") owns it and nobody else may write
 * it: /dev/shm is world-writable, so anyone may create the name before
 * the sidecar does, and whoever writes the segment decides which key
 * authorizations and certificates nginx serves.
 *
 * Everything read from the mapping, the header included, is copied to
 * locals before it is checked and only the copy is used afterwards, so a
 * writer that changes it under us cannot turn a checked offset into an
 * unchecked one; the compiler barrier in ngx_http_acme_shm_copy() keeps
 * the compiler from reading it twice.
 *
 * Whoever can write the file can also truncate it, and a worker touching
 * a mapped page past the new end dies with SIGBUS.  So the descriptor of
 * the mapped file stays open, and before each lookup touches the mapping
 * an fstat(2) checks that the file still covers it; a short file serves
 * nothing (the certificate a worker holds, or the fallback) until the
 * sidecar puts its size back.  That costs one system call per lookup.
 * What it cannot close: a truncation landing between that fstat and the
 * last byte the lookup reads, a window of microseconds that an attacker
 * with write access would have to hit by looping.  Closing it for good
 * would take a SIGBUS handler that longjmps out of the copy, in a worker
 * whose signals belong to nginx.  MAP_POPULATE would not help: a
 * truncation takes the pages away from every mapping, populated or not.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include "ngx_http_acme_module.h"

/* What was last logged about the file, so each problem is logged once. */
enum {
	NGX_HTTP_ACME_OK = 0,
	NGX_HTTP_ACME_NOFILE,
	NGX_HTTP_ACME_NOOPEN,
	NGX_HTTP_ACME_SYMLINK,
	NGX_HTTP_ACME_UNTRUSTED,
	NGX_HTTP_ACME_SHORT,
	NGX_HTTP_ACME_NOMAP,
	NGX_HTTP_ACME_BADMAGIC,
	NGX_HTTP_ACME_BADVERSION,
	NGX_HTTP_ACME_BADSIZE,
	NGX_HTTP_ACME_TRUNCATED
};

static const char *ngx_http_acme_status_texts[] = {
	[NGX_HTTP_ACME_FOUND] = "found",
	[NGX_HTTP_ACME_UNMAPPED] = "the shared zone is not available",
	[NGX_HTTP_ACME_EMPTY] = "nothing published yet",
	[NGX_HTTP_ACME_ABSENT] = "not in the shared zone",
	[NGX_HTTP_ACME_MALFORMED] = "the shared zone is malformed",
	[NGX_HTTP_ACME_BUSY] = "the shared zone changed under every retry",
	[NGX_HTTP_ACME_NOMEM] = "out of memory",
};

const char *
ngx_http_acme_status_text(ngx_http_acme_status_e st)
{
	if ((size_t)st >= sizeof(ngx_http_acme_status_texts) /
	    sizeof(ngx_http_acme_status_texts[0]))
		return "unknown";
	return ngx_http_acme_status_texts[st];
}

/* Copy from the mapping into a local, which no later access re-reads. */
static void
ngx_http_acme_shm_copy(void *dst, const u_char *src, size_t len)
{
	ngx_memcpy(dst, src, len);
	__asm__ __volatile__("" ::: "memory");
}

/* Log a problem with the file once, until it changes or goes away. */
static void
ngx_http_acme_shm_complain(ngx_http_acme_shm_t *shm, ngx_log_t *log,
    ngx_uint_t what, ngx_uint_t level, ngx_err_t err, const char *fmt, ...)
{
	u_char	 buf[NGX_MAX_ERROR_STR], *p;
	va_list	 ap;

	if (shm->complaint == what)
		return;
	shm->complaint = what;
	va_start(ap, fmt);
	p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, ap);
	va_end(ap);
	ngx_log_error(level, log, err, "%*s", (size_t)(p - buf), buf);
}

static void
ngx_http_acme_shm_unmap(ngx_http_acme_shm_t *shm)
{
	if (shm->base != NULL) {
		munmap((void *)shm->base, shm->mapped);
		close(shm->fd);
	}
	shm->base = NULL;
	shm->fd = NGX_INVALID_FILE;
	shm->size = 0;
	shm->mapped = 0;
}

/*
 * Whether a copy of a freshly mapped header is one we can read.  Returns
 * the complaint, or NGX_HTTP_ACME_OK.
 */
static ngx_uint_t
ngx_http_acme_shm_header_ok(ngx_http_acme_shm_t *shm, ngx_log_t *log,
    const struct acme_shm_header *h, size_t mapped)
{
	if (h->magic != ACME_SHM_MAGIC) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_BADMAGIC,
		    NGX_LOG_ERR, 0, "acme: shared zone \"%s\" has magic "
		    "0x%08xD, not an acme-sidecar segment; ignored",
		    shm->path.data, h->magic);
		return NGX_HTTP_ACME_BADMAGIC;
	}
	if (h->version != ACME_SHM_VERSION ||
	    h->header_size < sizeof(struct acme_shm_header)) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_BADVERSION,
		    NGX_LOG_ERR, 0, "acme: shared zone \"%s\" has layout "
		    "version %uD (header of %uD bytes); this module reads "
		    "version %uD: nginx's module and acme-sidecar must "
		    "match", shm->path.data, h->version, h->header_size,
		    (uint32_t)ACME_SHM_VERSION);
		return NGX_HTTP_ACME_BADVERSION;
	}
	if (h->size < sizeof(struct acme_shm_header) || h->size > mapped) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_BADSIZE,
		    NGX_LOG_ERR, 0, "acme: shared zone \"%s\" says it is %uD "
		    "bytes but the file has %uz; waiting for the sidecar",
		    shm->path.data, h->size, mapped);
		return NGX_HTTP_ACME_BADSIZE;
	}
	return NGX_HTTP_ACME_OK;
}

/* What st is, for a refusal. */
static const char *
ngx_http_acme_shm_kind(const struct stat *st)
{
	if (S_ISREG(st->st_mode))
		return "a regular file";
	if (S_ISFIFO(st->st_mode))
		return "a FIFO";
	if (S_ISDIR(st->st_mode))
		return "a directory";
	if (S_ISSOCK(st->st_mode))
		return "a socket";
	return "a device";
}

/*
 * Whether the file st describes may be believed: a regular file with one
 * name, owned by the configured owner and writable by nobody else.
 */
static ngx_uint_t
ngx_http_acme_shm_trusted(ngx_http_acme_shm_t *shm, ngx_log_t *log,
    const struct stat *st)
{
	ngx_uint_t	 m = st->st_mode & 07777;

	if (S_ISREG(st->st_mode) && st->st_nlink == 1 &&
	    (st->st_mode & (S_IWGRP | S_IWOTH)) == 0 &&
	    st->st_uid == shm->owner)
		return NGX_HTTP_ACME_OK;
	ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_UNTRUSTED,
	    NGX_LOG_ERR, 0, "acme: shared zone \"%s\" refused: it is %s "
	    "owned by uid %uD, mode %uD%uD%uD%uD, %uL link(s); expected a "
	    "regular file owned by uid %uD%s, not writable by group or "
	    "others, with one link", shm->path.data, ngx_http_acme_shm_kind(st),
	    (uint32_t)st->st_uid, (uint32_t)(m >> 9) & 7,
	    (uint32_t)(m >> 6) & 7, (uint32_t)(m >> 3) & 7, (uint32_t)m & 7,
	    (uint64_t)st->st_nlink, (uint32_t)shm->owner,
	    shm->owner_set ? " (owner=)" : " (root; see owner=)");
	return NGX_HTTP_ACME_UNTRUSTED;
}

/*
 * Open the file and check it through the descriptor, so what is checked
 * is what gets mapped.  O_NONBLOCK, because a FIFO planted at the path
 * would hold the worker in open(2) until some writer came; O_NOFOLLOW,
 * because a symbolic link would lead to a file of someone else's choice.
 * Returns the descriptor, or -1 (logged).
 */
static ngx_fd_t
ngx_http_acme_shm_open(ngx_http_acme_shm_t *shm, ngx_log_t *log,
    struct stat *st)
{
	ngx_fd_t	 fd;
	ngx_err_t	 err;

	fd = open((char *)shm->path.data, O_RDONLY | O_NONBLOCK | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd == -1) {
		err = ngx_errno;
		if (err == NGX_ELOOP)
			ngx_http_acme_shm_complain(shm, log,
			    NGX_HTTP_ACME_SYMLINK, NGX_LOG_ERR, 0, "acme: "
			    "shared zone \"%s\" is a symbolic link; refused",
			    shm->path.data);
		else
			ngx_http_acme_shm_complain(shm, log,
			    NGX_HTTP_ACME_NOOPEN, NGX_LOG_ERR, err, "acme: "
			    "open(\"%s\") failed; the workers need read "
			    "access to the shared zone (its group= "
			    "parameter)", shm->path.data);
		return -1;
	}
	if (fstat(fd, st) == -1) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_NOOPEN,
		    NGX_LOG_ERR, ngx_errno, "acme: fstat(\"%s\") failed",
		    shm->path.data);
		goto fail;
	}
	if (ngx_http_acme_shm_trusted(shm, log, st) != NGX_HTTP_ACME_OK)
		goto fail;
	if ((uint64_t)st->st_size < sizeof(struct acme_shm_header)) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_SHORT,
		    NGX_LOG_NOTICE, 0, "acme: shared zone \"%s\" has %L "
		    "bytes, too few for a header; waiting for the sidecar",
		    shm->path.data, (int64_t)st->st_size);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/*
 * Map the file anew.  The old mapping, if any, stays until the new one
 * proves readable: a half-created file never replaces a good segment.
 * The header is copied once and only the copy is checked and used: the
 * writer, or anyone who can write the file, may change it meanwhile.
 */
static void
ngx_http_acme_shm_map(ngx_http_acme_shm_t *shm, ngx_log_t *log)
{
	struct acme_shm_header	 h;
	struct stat		 st;
	void			*p = MAP_FAILED;
	size_t			 len = 0;
	ngx_fd_t		 fd;

	if ((fd = ngx_http_acme_shm_open(shm, log, &st)) == -1)
		return;
	len = (uint64_t)st.st_size > ACME_SHM_MAX_SIZE ? ACME_SHM_MAX_SIZE :
	    (size_t)st.st_size;
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_NOMAP,
		    NGX_LOG_ERR, ngx_errno, "acme: mmap(\"%s\") failed",
		    shm->path.data);
		goto out;
	}
	ngx_http_acme_shm_copy(&h, p, sizeof(h));
	if (ngx_http_acme_shm_header_ok(shm, log, &h, len) != NGX_HTTP_ACME_OK)
		goto out;
	ngx_http_acme_shm_unmap(shm);
	shm->base = p;
	shm->fd = fd;
	p = MAP_FAILED;		/* shm has them now */
	fd = NGX_INVALID_FILE;
	shm->mapped = len;
	shm->size = ngx_min((size_t)h.size, len);
	shm->dev = st.st_dev;
	shm->ino = st.st_ino;
	shm->epoch++;
	shm->complaint = NGX_HTTP_ACME_OK;
	ngx_log_error(NGX_LOG_INFO, log, 0, "acme: mapped shared zone \"%s\", "
	    "%uz bytes", shm->path.data, shm->size);
out:
	if (p != MAP_FAILED)
		munmap(p, len);
	if (fd != NGX_INVALID_FILE)
		close(fd);
}

/*
 * Whether the mapped file still covers what a lookup may touch (see the
 * top of this file).  A file back to its size after a truncation may
 * hold anything the sidecar wrote since: the epoch moves, so nothing
 * parsed from before is taken for current without a look.
 */
static ngx_int_t
ngx_http_acme_shm_intact(ngx_http_acme_shm_t *shm, ngx_log_t *log)
{
	struct stat	 st;

	ngx_memzero(&st, sizeof(st));
	if (fstat(shm->fd, &st) == -1 || (uint64_t)st.st_size < shm->size) {
		ngx_http_acme_shm_complain(shm, log, NGX_HTTP_ACME_TRUNCATED,
		    NGX_LOG_ERR, 0, "acme: shared zone \"%s\" was truncated "
		    "to %O bytes, under the %uz mapped; nothing is read from "
		    "it until acme-sidecar puts its size back",
		    shm->path.data, st.st_size, shm->size);
		return NGX_DECLINED;
	}
	if (shm->complaint == NGX_HTTP_ACME_TRUNCATED) {
		ngx_log_error(NGX_LOG_NOTICE, log, 0, "acme: shared zone "
		    "\"%s\" has its %uz bytes again", shm->path.data,
		    shm->size);
		shm->complaint = NGX_HTTP_ACME_OK;
		shm->epoch++;
	}
	return NGX_OK;
}

/*
 * Notice a file that appeared, was replaced or grew.  A file that went
 * away leaves the mapping alone: it still holds the last image the
 * sidecar published.
 */
static void
ngx_http_acme_shm_refresh(ngx_http_acme_shm_t *shm, ngx_log_t *log)
{
	const struct acme_shm_header	*h;
	struct stat			 st;
	uint32_t			 size;

	if (lstat((char *)shm->path.data, &st) == -1) {
		if (shm->base == NULL)
			ngx_http_acme_shm_complain(shm, log,
			    NGX_HTTP_ACME_NOFILE, NGX_LOG_NOTICE, ngx_errno,
			    "acme: shared zone \"%s\" is not there yet (is "
			    "acme-sidecar running?)", shm->path.data);
		return;
	}
	if (shm->base != NULL && st.st_dev == shm->dev &&
	    st.st_ino == shm->ino) {
		if (ngx_http_acme_shm_intact(shm, log) != NGX_OK)
			return;
		h = (const struct acme_shm_header *)shm->base;
		ngx_http_acme_shm_copy(&size, (const u_char *)&h->size,
		    sizeof(size));
		if (size == shm->size)
			return;
	}
	ngx_http_acme_shm_map(shm, log);
}

void
ngx_http_acme_shm_init(ngx_http_acme_shm_t *shm, ngx_log_t *log)
{
	shm->base = NULL;
	shm->fd = NGX_INVALID_FILE;
	shm->next_check = ngx_time() + 1;
	ngx_http_acme_shm_refresh(shm, log);
}

void
ngx_http_acme_shm_close(ngx_http_acme_shm_t *shm)
{
	ngx_http_acme_shm_unmap(shm);
}

/*
 * Whether a mapping is there that a lookup may read now.  A mapped file
 * is checked at most once a second for replacement or growth, and at
 * every call for truncation.  Without a mapping every call looks: the
 * sidecar may have just created the file and sent the CA a challenge
 * that this very request is, and a stat(2) is nothing next to a refused
 * handshake.
 */
ngx_int_t
ngx_http_acme_shm_ready(ngx_http_acme_shm_t *shm, ngx_log_t *log)
{
	time_t	 now = ngx_time();

	if (shm->base == NULL || now >= shm->next_check) {
		shm->next_check = now + 1;
		ngx_http_acme_shm_refresh(shm, log);
	}
	if (shm->base == NULL)
		return NGX_DECLINED;
	return ngx_http_acme_shm_intact(shm, log);
}

/* The published generation, or 0; the mapping must be there. */
uint64_t
ngx_http_acme_shm_generation(ngx_http_acme_shm_t *shm)
{
	const struct acme_shm_header	*h;

	h = (const struct acme_shm_header *)shm->base;
	return __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE);
}

/* At most one "cannot serve" line a second per worker. */
ngx_int_t
ngx_http_acme_shm_log_allowed(ngx_http_acme_shm_t *shm)
{
	time_t	 now = ngx_time();

	if (now < shm->next_log)
		return 0;
	shm->next_log = now + 1;
	return 1;
}

/*
 * The slot of the generation being read: every offset taken from the
 * image must lie inside it, not merely inside the mapping.  The
 * generation check vouches for this slot alone; the other one may be
 * half rewritten by the writer at this very moment, and bytes read from
 * it could be torn even when the generation holds still.
 */
typedef struct {
	const u_char	*base;		/* the mapping */
	size_t		 start;		/* slot_off[g % 2] */
	size_t		 end;		/* start + slot_size */
} ngx_http_acme_slot_t;

/* Whether [off, off + len) lies inside the slot. */
static int
ngx_http_acme_shm_in_slot(const ngx_http_acme_slot_t *sl, uint64_t off,
    uint64_t len)
{
	return off >= sl->start && acme_shm_inside(sl->end, off, len);
}

/*
 * acme_shm_lookup(), but each bucket is copied before it is checked, and
 * the table and every key must lie inside the slot being read.  Returns
 * the value, -1 when the key is absent, -2 when the table is malformed.
 */
static int64_t
ngx_http_acme_shm_find(const ngx_http_acme_slot_t *sl,
    const struct acme_shm_table *t, const u_char *key, size_t len)
{
	struct acme_shm_bucket	 b;
	uint32_t		 h, i, n = t->nbuckets, mask;

	if (n == 0 || len == 0)
		return -1;
	if ((n & (n - 1)) != 0 ||
	    !ngx_http_acme_shm_in_slot(sl, t->off, (uint64_t)n * sizeof(b)))
		return -2;
	h = acme_shm_hash(key, len);
	mask = n - 1;
	for (i = 0; i < n; i++) {
		ngx_http_acme_shm_copy(&b, sl->base + t->off +
		    (size_t)((h + i) & mask) * sizeof(b), sizeof(b));
		if (b.key_len == 0)
			return -1;
		if (b.hash != h || b.key_len != len)
			continue;
		if (!ngx_http_acme_shm_in_slot(sl, b.key_off, len))
			return -2;
		if (ngx_memcmp(sl->base + b.key_off, key, len) == 0)
			return b.value;
	}
	return -1;
}

/* Copy len bytes at off in the slot, NUL-terminated, into the pool. */
static ngx_int_t
ngx_http_acme_shm_dup(const ngx_http_acme_slot_t *sl, uint32_t off,
    uint32_t len, size_t max, ngx_pool_t *pool, ngx_str_t *out)
{
	if (len == 0 || len > max || !ngx_http_acme_shm_in_slot(sl, off, len))
		return NGX_DECLINED;
	if ((out->data = ngx_pnalloc(pool, (size_t)len + 1)) == NULL)
		return NGX_ERROR;
	ngx_http_acme_shm_copy(out->data, sl->base + off, len);
	out->data[len] = '\0';
	out->len = len;
	return NGX_OK;
}

/* What one lookup wants, and what it found; see ngx_http_acme_shm_read. */
typedef struct {
	const struct acme_shm_table *(*table)(const struct acme_shm_image *);
	ngx_http_acme_status_e (*entry)(void *, const ngx_http_acme_slot_t *,
	    const struct acme_shm_image *, uint32_t);
	void		*arg;
	ngx_str_t	*key;
} ngx_http_acme_shm_query_t;

/*
 * One attempt of the reader protocol on generation g: find the image,
 * look the key up, let the query copy out its entry.  Whatever it
 * returns is only kept if the generation is still g afterwards.
 */
static ngx_http_acme_status_e
ngx_http_acme_shm_attempt(ngx_http_acme_shm_t *shm, uint64_t g,
    ngx_http_acme_shm_query_t *q)
{
	const struct acme_shm_header	*h;
	struct acme_shm_image		 img;
	ngx_http_acme_slot_t		 sl;
	uint32_t			 so, ss;
	int64_t				 v;

	h = (const struct acme_shm_header *)shm->base;
	ngx_http_acme_shm_copy(&so, (const u_char *)&h->slot_off[g & 1],
	    sizeof(so));
	ngx_http_acme_shm_copy(&ss, (const u_char *)&h->slot_size,
	    sizeof(ss));
	if (so < sizeof(*h) || ss < sizeof(img) ||
	    !acme_shm_inside(shm->size, so, ss))
		return NGX_HTTP_ACME_MALFORMED;
	sl.base = shm->base;
	sl.start = so;
	sl.end = (size_t)so + ss;
	ngx_http_acme_shm_copy(&img, shm->base + so, sizeof(img));
	if (img.magic != ACME_SHM_IMAGE_MAGIC)
		return NGX_HTTP_ACME_MALFORMED;
	v = ngx_http_acme_shm_find(&sl, q->table(&img), q->key->data,
	    q->key->len);
	if (v == -2)
		return NGX_HTTP_ACME_MALFORMED;
	if (v < 0)
		return NGX_HTTP_ACME_ABSENT;
	return q->entry(q->arg, &sl, &img, (uint32_t)v);
}

/*
 * The reader protocol: generation (acquire), read, acquire fence,
 * generation again; start over when it moved.
 */
static ngx_http_acme_status_e
ngx_http_acme_shm_read(ngx_http_acme_shm_t *shm, ngx_http_acme_shm_query_t *q,
    uint64_t *genp)
{
	const struct acme_shm_header	*h;
	ngx_http_acme_status_e		 st;
	uint64_t			 g;
	int				 i;

	if (shm->base == NULL)
		return NGX_HTTP_ACME_UNMAPPED;
	h = (const struct acme_shm_header *)shm->base;
	for (i = 0; i < ACME_SHM_MAX_RETRIES; i++) {
		g = __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE);
		if (g == 0)
			return NGX_HTTP_ACME_EMPTY;
		st = ngx_http_acme_shm_attempt(shm, g, q);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&h->generation, __ATOMIC_RELAXED) != g)
			continue;
		*genp = g;
		return st;
	}
	return NGX_HTTP_ACME_BUSY;
}

static const struct acme_shm_table *
ngx_http_acme_shm_by_id(const struct acme_shm_image *img)
{
	return &img->by_id;
}

static const struct acme_shm_table *
ngx_http_acme_shm_by_token(const struct acme_shm_image *img)
{
	return &img->by_token;
}

typedef struct {
	const uint64_t			*known;
	ngx_pool_t			*pool;
	ngx_http_acme_shm_cert_t	*out;
} ngx_http_acme_cert_query_t;

/* A certificate entry; its PEM is copied only when the serial is new. */
static ngx_http_acme_status_e
ngx_http_acme_shm_cert_entry(void *arg, const ngx_http_acme_slot_t *sl,
    const struct acme_shm_image *img, uint32_t i)
{
	ngx_http_acme_cert_query_t	*cq = arg;
	struct acme_shm_cert		 e;
	ngx_int_t			 rc;

	if (i >= img->ncerts || !ngx_http_acme_shm_in_slot(sl, img->certs_off,
	    (uint64_t)img->ncerts * sizeof(e)))
		return NGX_HTTP_ACME_MALFORMED;
	ngx_http_acme_shm_copy(&e, sl->base + img->certs_off +
	    (size_t)i * sizeof(e), sizeof(e));
	cq->out->serial = e.serial;
	ngx_str_null(&cq->out->chain);
	ngx_str_null(&cq->out->key);
	if (cq->known != NULL && *cq->known == e.serial)
		return NGX_HTTP_ACME_FOUND;
	rc = ngx_http_acme_shm_dup(sl, e.chain_off, e.chain_len,
	    NGX_HTTP_ACME_MAX_PEM, cq->pool, &cq->out->chain);
	if (rc == NGX_OK)
		rc = ngx_http_acme_shm_dup(sl, e.key_off, e.key_len,
		    NGX_HTTP_ACME_MAX_PEM, cq->pool, &cq->out->key);
	if (rc == NGX_ERROR)
		return NGX_HTTP_ACME_NOMEM;
	return rc == NGX_OK ? NGX_HTTP_ACME_FOUND : NGX_HTTP_ACME_MALFORMED;
}

/*
 * Look certificate id up.  When known points at the serial the caller
 * already holds and the entry still has it, nothing is copied; otherwise
 * the chain and key PEM are copied into pool.
 */
ngx_http_acme_status_e
ngx_http_acme_shm_cert(ngx_http_acme_shm_t *shm, ngx_str_t *id,
    const uint64_t *known, ngx_pool_t *pool, ngx_http_acme_shm_cert_t *out)
{
	ngx_http_acme_cert_query_t	 cq;
	ngx_http_acme_shm_query_t	 q;

	cq.known = known;
	cq.pool = pool;
	cq.out = out;
	q.table = ngx_http_acme_shm_by_id;
	q.entry = ngx_http_acme_shm_cert_entry;
	q.arg = &cq;
	q.key = id;
	return ngx_http_acme_shm_read(shm, &q, &out->generation);
}

typedef struct {
	ngx_pool_t	*pool;
	ngx_str_t	*keyauth;
} ngx_http_acme_token_query_t;

static ngx_http_acme_status_e
ngx_http_acme_shm_token_entry(void *arg, const ngx_http_acme_slot_t *sl,
    const struct acme_shm_image *img, uint32_t i)
{
	ngx_http_acme_token_query_t	*tq = arg;
	struct acme_shm_token		 t;
	ngx_int_t			 rc;

	if (i >= img->ntokens || !ngx_http_acme_shm_in_slot(sl, img->tokens_off,
	    (uint64_t)img->ntokens * sizeof(t)))
		return NGX_HTTP_ACME_MALFORMED;
	ngx_http_acme_shm_copy(&t, sl->base + img->tokens_off +
	    (size_t)i * sizeof(t), sizeof(t));
	rc = ngx_http_acme_shm_dup(sl, t.keyauth_off, t.keyauth_len,
	    NGX_HTTP_ACME_MAX_KEYAUTH, tq->pool, tq->keyauth);
	if (rc == NGX_ERROR)
		return NGX_HTTP_ACME_NOMEM;
	return rc == NGX_OK ? NGX_HTTP_ACME_FOUND : NGX_HTTP_ACME_MALFORMED;
}

/* The key authorization for an HTTP-01 token, copied into pool. */
ngx_http_acme_status_e
ngx_http_acme_shm_token(ngx_http_acme_shm_t *shm, ngx_str_t *token,
    ngx_pool_t *pool, ngx_str_t *keyauth)
{
	ngx_http_acme_token_query_t	 tq;
	ngx_http_acme_shm_query_t	 q;
	uint64_t			 gen;

	tq.pool = pool;
	tq.keyauth = keyauth;
	q.table = ngx_http_acme_shm_by_token;
	q.entry = ngx_http_acme_shm_token_entry;
	q.arg = &tq;
	q.key = token;
	return ngx_http_acme_shm_read(shm, &q, &gen);
}

static const struct acme_shm_table *
ngx_http_acme_shm_by_alpn(const struct acme_shm_image *img)
{
	return &img->by_alpn;
}

typedef struct {
	ngx_pool_t	*pool;
	ngx_str_t	*cert;
	ngx_str_t	*key;
} ngx_http_acme_alpn_query_t;

/* by_alpn's value is where the entry is: inside the slot, like the rest. */
static ngx_http_acme_status_e
ngx_http_acme_shm_alpn_entry(void *arg, const ngx_http_acme_slot_t *sl,
    const struct acme_shm_image *img, uint32_t off)
{
	ngx_http_acme_alpn_query_t	*aq = arg;
	struct acme_shm_alpn		 a;
	ngx_int_t			 rc;

	(void)img;
	if (!ngx_http_acme_shm_in_slot(sl, off, sizeof(a)))
		return NGX_HTTP_ACME_MALFORMED;
	ngx_http_acme_shm_copy(&a, sl->base + off, sizeof(a));
	rc = ngx_http_acme_shm_dup(sl, a.cert_off, a.cert_len,
	    NGX_HTTP_ACME_MAX_PEM, aq->pool, aq->cert);
	if (rc == NGX_OK)
		rc = ngx_http_acme_shm_dup(sl, a.key_off, a.key_len,
		    NGX_HTTP_ACME_MAX_PEM, aq->pool, aq->key);
	if (rc == NGX_ERROR)
		return NGX_HTTP_ACME_NOMEM;
	return rc == NGX_OK ? NGX_HTTP_ACME_FOUND : NGX_HTTP_ACME_MALFORMED;
}

/*
 * The tls-alpn-01 validation certificate and key pending for the name a
 * ClientHello sent in SNI (lower case), copied into pool.
 */
ngx_http_acme_status_e
ngx_http_acme_shm_alpn(ngx_http_acme_shm_t *shm, ngx_str_t *sni,
    ngx_pool_t *pool, ngx_str_t *cert, ngx_str_t *key)
{
	ngx_http_acme_alpn_query_t	 aq;
	ngx_http_acme_shm_query_t	 q;
	uint64_t			 gen;

	aq.pool = pool;
	aq.cert = cert;
	aq.key = key;
	q.table = ngx_http_acme_shm_by_alpn;
	q.entry = ngx_http_acme_shm_alpn_entry;
	q.arg = &aq;
	q.key = sni;
	return ngx_http_acme_shm_read(shm, &q, &gen);
}
