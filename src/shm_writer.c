/*
 * The shared-memory segment nginx reads: certificates, keys, pending
 * HTTP-01 tokens and tls-alpn-01 validation certificates.
 * proto/acme_shm.h is the layout and the reader's side of the protocol;
 * this file is the only writer.
 *
 * The daemon keeps a model (the certificates and tokens that should be
 * visible) and, when it changes, publishes a complete image of it into
 * the slot no reader of the current generation looks at, then bumps the
 * generation.  The two slots overlap (LAYOUT in acme_shm.h): past the
 * images' headers the zone is one heap (struct shm_heap).  Each
 * certificate's strings (chain, key, names) lie in one block of it that
 * stays in place while the certificate is unchanged and that both images
 * point at, so the zone holds one copy of every chain and key, and the
 * daemon none: a block is written as soon as its certificate is staged
 * (shm_staged_write()), and the model reads the chain and key back from
 * it (shm_cert_chain()).  Each image's entries, tables and
 * tokens (its front) lie in an extent of the heap of their own.  So
 * publishing costs what changed, not what exists: new blocks and the
 * tokens; while the ids, their order and their names stay as they were
 * in that slot's front, only the changed certificates' entries and
 * buckets are written again, otherwise all entries and hash tables are
 * (tens of bytes a certificate).  Blocks of removed or replaced
 * certificates are wiped once the first image without them is
 * published.
 *
 * Certificate changes are staged and committed together after
 * SHM_COMMIT_DELAY: a start-up that loads a thousand certificates, or a
 * thousand orders finishing, writes a few images, not a thousand.  Token
 * changes (and tls-alpn-01 certificates, which are challenges too) are
 * published by a deferred event in the same turn of the loop, long
 * before a CA that is sent a challenge in that turn can ask nginx for
 * the token.  A slot whose entries are already current takes new
 * tokens without them being written again: during mass issuance a
 * publish costs what the tokens cost.
 *
 * The file is never shrunk and never replaced, so a reader's mapping
 * stays valid for as long as the reader keeps it.
 *
 * Others may: whoever can write the file (its owner, root, or a
 * descriptor someone opened before we owned it, which is why a file we
 * did not create is refused unless its owner and mode rule that out) can
 * truncate it, and touching the mapping past the new end is SIGBUS.  So
 * each publish checks the size through the descriptor first and, when
 * the file was cut, puts the size back and lays everything out again,
 * with a warning; a timer looks every SHM_WATCH_INTERVAL so that nginx
 * is not left without an image until the next renewal.  The chains and
 * keys of the certificates whose blocks lay past the cut are gone (the
 * daemon keeps no copy), and so are those certificates from the zone
 * until they are set again.  A commit, which reads chains and keys back
 * from the zone, checks the size first too.  What remains is a
 * truncation landing between that check and the last byte a publish
 * writes or a commit reads: a window of a few microseconds that only a
 * process already able to write the file can aim at.
 */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "acme_shm.h"
#include "sidecar.h"

struct shm_cert {
	char		*sc_id;
	char		*sc_issuer;
	char		**sc_names;
	size_t		 sc_nnames;
	char		*sc_chain;	/* NULL once its block holds it */
	char		*sc_key;	/* PEM, as sc_chain; wiped when freed */
	time_t		 sc_not_before;
	time_t		 sc_not_after;
	uint64_t	 sc_serial;
	size_t		 sc_id_len;	/* strlen, kept: a publish lays out */
	size_t		 sc_issuer_len;	/* the entries of every certificate */
	size_t		 sc_chain_len;
	size_t		 sc_key_len;
	size_t		 sc_strings;	/* bytes of its strings, NULs too */
	uint32_t	 sc_at;		/* its block, both slots'; 0: none */
	size_t		 sc_prior;	/* staged: prior block taken, + 1 */
	/*
	 * Its buckets in each slot's by_id and by_name (SHM_NO_BUCKET where
	 * an older certificate holds the name), so that a new block is
	 * pointed at without the tables being built again.
	 */
	uint32_t	 sc_id_bucket[2];
	uint32_t	*sc_name_buckets[2];
};

/* A change to the certificates, waiting for the next commit. */
struct shm_pending {
	struct shm_cert	 sp_cert;	/* sp_cert.sc_id alone: removal */
	int		 sp_remove;
};

/*
 * Where each id stands in an array (the model's certificates, the
 * changes pending), so that a change finds its certificate without a
 * scan: at a cold start with N = 10,000 certificates the scans were N^2
 * strcmp() calls.  Open addressing with linear probing, at most half
 * full.  A slot holds a position in the array plus one (0: free), and
 * the id is read from the array through si_id, so the array may be
 * reallocated under it.
 */
struct shm_index {
	size_t		*si_slots;
	size_t		 si_cap;	/* 0 or a power of two */
	size_t		 si_n;
	const char	*(*si_id)(size_t);
};

struct shm_token {
	char		*st_token;
	char		*st_keyauth;
};

/* A pending tls-alpn-01 authorization's validation certificate. */
struct shm_alpn {
	char		*sa_sni;	/* the by_alpn key */
	char		*sa_ident;
	char		*sa_keyauth;	/* which authorization: for removal */
	char		*sa_cert;	/* PEM */
	char		*sa_key;	/* PEM; wiped when freed */
};

/*
 * Where the front of one image goes, worked out before anything is
 * written: the certificates' entries and tables, then the tokens' part
 * (tokens, then tls-alpn-01 certificates, each with their strings).  The
 * image itself (struct acme_shm_image) is at its slot's start; the front
 * lies in an extent of the heap (struct shm_slot).  The certificates'
 * strings are not in it: they lie in blocks that both images share.  A
 * slot whose entries are current takes new tokens without the entries
 * being written again.
 */
struct shm_plan {
	uint32_t	 certs_off;
	struct acme_shm_table by_id;
	struct acme_shm_table by_name;
	uint32_t	 tokens_part_off;	/* where the tokens' part starts */
	uint32_t	 tokens_off;
	struct acme_shm_table by_token;
	uint32_t	 token_strings_off;
	uint32_t	 alpn_off;
	struct acme_shm_table by_alpn;
	uint32_t	 alpn_strings_off;
	uint64_t	 front;			/* bytes, from certs_off */
};

/* Bytes of the zone, offsets from the file start. */
struct shm_extent {
	uint32_t	 se_off;
	uint32_t	 se_len;
};

/*
 * The two slots overlap (LAYOUT in acme_shm.h): past the two images'
 * headers, everything is one heap that both slots hold.  Each
 * certificate's strings lie in one block of it (sc_at), which stays in
 * place for as long as the certificate does not change and which both
 * images point at: one copy of each chain and key, not two.  Each
 * image's front lies in an extent of its own (struct shm_slot).  sh_free
 * is the free extents, all zero, sorted and coalesced; sh_stale the
 * blocks of certificates removed or replaced since the last publish,
 * which the published image may still point at, wiped once it does not.
 */
struct shm_heap {
	uint32_t	 sh_lo;		/* [sh_lo, sh_hi): in both slots */
	uint32_t	 sh_hi;
	uint64_t	 sh_free_bytes;
	struct shm_extent *sh_free;
	size_t		 sh_nfree;
	struct shm_extent *sh_stale;
	size_t		 sh_nstale;
	uint64_t	 sh_live;	/* bytes of the blocks in use */
};

/*
 * What the writer knows of one slot's image: the heap extent its front
 * lies in (sl_front, 0: none yet, sl_front_cap bytes, zero past
 * sl_front_end), rebuilt as the model changes.
 */
struct shm_slot {
	uint32_t	 sl_front;
	uint32_t	 sl_front_cap;
	uint32_t	 sl_front_end;	/* of the front written last */
	uint32_t	 sl_tokens_part;	/* where its tokens' part is */
	uint64_t	 sl_version;	/* cert_version of its entries */
	uint64_t	 sl_shape;	/* shape_version of its tables */
	size_t		*sl_changed;	/* certs replaced since, same shape */
	size_t		 sl_nchanged;
};

/*
 * A certificate block of the image a previous run left published (see
 * shm_take_up()): readers may use it until our first image is out, so
 * it is neither written nor wiped until then.  A staged certificate with
 * exactly its bytes takes it instead of writing a block of its own.
 */
struct shm_prior {
	uint32_t	 pr_at;		/* the block; its id comes first */
	uint32_t	 pr_len;	/* bytes, a multiple of the grain */
	uint32_t	 pr_id_len;
	uint32_t	 pr_names;	/* where its names start */
	uint64_t	 pr_serial;
	int64_t		 pr_not_before;
	int64_t		 pr_not_after;
	int		 pr_taken;	/* by a certificate, staged or not */
};

static struct {
	char			*path;
	int			 fd;
	unsigned char		*base;
	size_t			 size;
	struct acme_shm_header	*hdr;
	struct event		*publish_ev;
	struct event		*commit_ev;
	struct event		*watch_ev;
	struct shm_cert		*certs;
	size_t			 ncerts;
	size_t			 certs_cap;	/* certs' room, in entries */
	size_t			 nnames;
	uint64_t		 cert_version;	/* bumps as certs change */
	uint64_t		 shape_version;	/* as ids, order or names do */
	uint64_t		 cert_blocks;	/* bytes of all their blocks */
	size_t			*placed;	/* certs given a block, this */
	size_t			 nplaced;	/* publish */
	struct shm_pending	*pending;
	size_t			 npending;
	size_t			 pending_cap;
	struct shm_token	*tokens;
	size_t			 ntokens;
	struct shm_alpn		*alpns;		/* oldest first */
	size_t			 nalpns;
	int			 alpn_gone;	/* a key to wipe from both */
	struct shm_slot		 slots[2];
	struct shm_heap		 heap;
	struct shm_prior	*prior;		/* until our first image */
	size_t			 nprior;
	int			 prior_held;	/* a previous run's image is
						   the published one */
	int			 full;		/* the last publish failed */
	int			 dirty;		/* changes not yet published */
	struct shm_stats	 stats;
} shm = { .fd = -1 };

/* Certificate changes wait this long (ms) to go out together. */
#define SHM_COMMIT_DELAY	100

/* How often (s) the file's size is checked between publishes. */
#define SHM_WATCH_INTERVAL	2

static const char *shm_cert_id(size_t);
static const char *shm_pending_id(size_t);
static const char *shm_prior_id(size_t);

static struct shm_index	shm_certs_index = { .si_id = shm_cert_id };
static struct shm_index	shm_pending_index = { .si_id = shm_pending_id };
static struct shm_index	shm_prior_index = { .si_id = shm_prior_id };

static void	shm_changed(void);
static void	shm_commit_cb(int, short, void *);
static size_t	shm_certs_recover(uint64_t);
static int	shm_intact(void);
static uint32_t	shm_heap_alloc(uint64_t);
static void	shm_heap_free(uint32_t, uint32_t);
static void	shm_write_block(const struct shm_cert *, uint32_t);
static void	shm_index_clear(struct shm_index *);
static void	shm_prior_forget(void);
static int	shm_take_up(size_t);
static int	shm_prior_adopt(struct shm_cert *);
static uint64_t	shm_prior_drop(void);
static uint64_t	shm_prior_room(void);

static size_t
shm_align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/*
 * Blocks take whole multiples of this: a renewed certificate's strings
 * differ by a few bytes from the old ones (a signature's length), and
 * then fit the hole the old block leaves instead of leaving slivers.
 */
#define SHM_BLOCK_GRAIN		64

#define SHM_NO_BUCKET		UINT32_MAX

static uint32_t
shm_block_size(const struct shm_cert *sc)
{
	return (uint32_t)((sc->sc_strings + SHM_BLOCK_GRAIN - 1) &
	    ~(size_t)(SHM_BLOCK_GRAIN - 1));
}

static uint32_t
shm_buckets_for(size_t n)
{
	uint32_t	 b = 1;

	if (n == 0)
		return 0;
	while (b < 2 * n)
		b <<= 1;
	return b;
}

/* A serial never used before for this file: see SERIALS in acme_shm.h. */
static uint64_t
shm_next_serial(void)
{
	struct timespec	 ts;
	uint64_t	 now, next;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	next = shm.stats.ss_last_serial + 1;
	if (now > next)
		next = now;
	shm.stats.ss_last_serial = next;
	return next;
}

/*
 * Forget what the zone holds, after a new layout zeroed it: no image has
 * a front, no certificate a block, and the heap is free from lo to hi.
 * A certificate's strings must be in its own copies by then
 * (shm_certs_recover()).
 */
static void
shm_slots_forget(uint32_t lo, uint32_t hi)
{
	struct shm_heap	*hp = &shm.heap;
	size_t		 i;
	int		 s;

	for (s = 0; s < 2; s++) {
		free(shm.slots[s].sl_changed);
		memset(&shm.slots[s], 0, sizeof(shm.slots[s]));
	}
	free(hp->sh_free);
	free(hp->sh_stale);
	memset(hp, 0, sizeof(*hp));
	hp->sh_lo = lo;
	hp->sh_hi = hi;
	if (hi > lo) {
		hp->sh_free = xcalloc(1, sizeof(*hp->sh_free));
		hp->sh_free[0].se_off = lo;
		hp->sh_free[0].se_len = hi - lo;
		hp->sh_nfree = 1;
		hp->sh_free_bytes = hi - lo;
	}
	for (i = 0; i < shm.ncerts; i++)
		shm.certs[i].sc_at = 0;
}

/* ------------------------------------------------------------ the file */

static gid_t
shm_group_id(const char *group, char **cause)
{
	struct group	*gr;

	errno = 0;
	if ((gr = getgrnam(group)) == NULL) {
		xasprintf(cause, "group \"%s\" of the shared zone does not "
		    "exist", group);
		return (gid_t)-1;
	}
	return gr->gr_gid;
}

/*
 * Refuse what lies at path, saying what it is.  The daemon never
 * removes, reuses or chmods it: /dev/shm and a pod's emptyDir are
 * writable by others, so it may be a squatter's (whose open descriptor
 * would outlive any chmod), and path= may name a file someone needs.
 */
static int
shm_refuse(const char *path, const struct stat *st, const char *why,
    char **cause)
{
	xasprintf(cause, "%s: refused as the shared zone: it is %s owned by "
	    "uid %u, mode %04o, %lu link(s); %s.  Nothing was changed: "
	    "remove it (or point path= elsewhere) if it is not needed",
	    path, fsafe_type(st->st_mode), (unsigned)st->st_uid,
	    (unsigned)(st->st_mode & 07777), (unsigned long)st->st_nlink,
	    why);
	return -1;
}

/*
 * Whether an existing file may receive private keys: a regular file with
 * no other name, ours (or root's, who could write it anyway), that
 * nobody else can write or, since it will hold keys, read but through
 * the group.  Whoever could write it could truncate it or choose what
 * nginx serves; a descriptor opened while it allowed that survives any
 * chmod, so a loose mode is refused, not fixed.
 */
static int
shm_file_trusted(const char *path, const struct stat *st, char **cause)
{
	char	*why = NULL;
	int	 rc;

	if (S_ISREG(st->st_mode) && st->st_nlink == 1 &&
	    (st->st_uid == geteuid() || st->st_uid == 0) &&
	    (st->st_mode & (S_IWGRP | S_IRWXO)) == 0)
		return 0;
	if (geteuid() == 0)
		why = xstrdup("a zone must be a regular file with one link, "
		    "owned by root, that the group cannot write and others "
		    "cannot open");
	else
		xasprintf(&why, "a zone must be a regular file with one link, "
		    "owned by uid %u or root, that the group cannot write and "
		    "others cannot open", (unsigned)geteuid());
	rc = shm_refuse(path, st, why, cause);
	free(why);
	return rc;
}

/*
 * Whether a trusted file holds a zone: our magic, version and header
 * size, in a file large enough for a header.  Anything else is someone's
 * data that path= named by mistake, and must keep every byte.
 */
static int
shm_file_is_zone(int fd, const char *path, const struct stat *st,
    char **cause)
{
	struct acme_shm_header	 h;
	char			*why = NULL;
	int			 rc;

	if ((size_t)st->st_size >= sizeof(h) &&
	    pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    h.magic == ACME_SHM_MAGIC && h.version == ACME_SHM_VERSION &&
	    h.header_size == sizeof(h))
		return 0;
	xasprintf(&why, "%lld bytes, not a shared zone of acme-sidecar "
	    "(layout %u)", (long long)st->st_size, ACME_SHM_VERSION);
	rc = shm_refuse(path, st, why, cause);
	free(why);
	return rc;
}

/*
 * Open what already lies at path, without following a link, blocking on
 * a FIFO or taking a terminal, and check it through the descriptor: what
 * is checked is what gets mapped.
 */
static int
shm_open_existing(const char *path, int flags, char **cause)
{
	struct stat	 st;
	int		 fd, err;

	fd = open(path, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
	    O_CLOEXEC);
	if (fd == -1) {
		err = errno;
		if (err != ENOENT && lstat(path, &st) == 0)
			return shm_refuse(path, &st, err == ELOOP ?
			    "a zone is never a symbolic link" : strerror(err),
			    cause);
		xasprintf(cause, "%s: %s", path, strerror(err));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		xasprintf(cause, "%s: fstat: %s", path, strerror(errno));
		goto fail;
	}
	if (shm_file_trusted(path, &st, cause) == -1 ||
	    shm_file_is_zone(fd, path, &st, cause) == -1)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

/*
 * A zone file: created anew with O_EXCL, so nobody else's file is ever
 * taken for ours, or the one a previous run left, checked.  Then locked:
 * two daemons publishing into one file would reuse generations and
 * readers could then accept torn entries.  The lock lasts as long as
 * the process.
 */
static int
shm_open_file(const char *path, gid_t gid, char **cause)
{
	int	 fd;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK |
	    O_NOCTTY | O_CLOEXEC, 0640);
	if (fd == -1 && errno == EEXIST)
		fd = shm_open_existing(path, O_RDWR, cause);
	else if (fd == -1)
		xasprintf(cause, "%s: %s", path, strerror(errno));
	if (fd == -1)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		xasprintf(cause, "%s: %s", path, errno == EWOULDBLOCK ?
		    "another acme-sidecar is publishing into it" :
		    strerror(errno));
		goto fail;
	}
	if ((gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) == -1) ||
	    fchmod(fd, 0640) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/*
 * For the configuration's check (-t included): NULL when path is free,
 * or holds a zone the daemon may take up (the one it runs with, on a
 * reload), else why not, which the caller frees.  The file is only
 * opened for reading and left as it is.
 */
char *
shm_zone_check(const char *path)
{
	struct stat	 st, ours;
	char		*cause = NULL;
	int		 fd;

	if (lstat(path, &st) == -1) {
		if (errno == ENOENT)
			return NULL;
		xasprintf(&cause, "%s: %s", path, strerror(errno));
		return cause;
	}
	if (shm.fd != -1 && fstat(shm.fd, &ours) == 0 &&
	    st.st_dev == ours.st_dev && st.st_ino == ours.st_ino)
		return NULL;
	if ((fd = shm_open_existing(path, O_RDONLY, &cause)) == -1)
		return cause;
	close(fd);
	return NULL;
}

/*
 * Zero len bytes at off.  The whole pages inside are given back to the
 * file system (a hole reads as zeros), so that wiping a large range
 * neither writes nor keeps every page of it: the daemon's RSS counts the
 * zone's pages it touched.
 */
static void
shm_zero(uint32_t off, uint32_t len)
{
	size_t	 page = (size_t)sysconf(_SC_PAGESIZE);
	size_t	 lo = ((size_t)off + page - 1) & ~(page - 1);
	size_t	 hi = ((size_t)off + len) & ~(page - 1);

	if (hi < lo + 4 * page || fallocate(shm.fd, FALLOC_FL_PUNCH_HOLE |
	    FALLOC_FL_KEEP_SIZE, (off_t)lo, (off_t)(hi - lo)) == -1) {
		memset(shm.base + off, 0, len);
		return;
	}
	memset(shm.base + off, 0, lo - off);
	memset(shm.base + hi, 0, (size_t)off + len - hi);
}

/*
 * Lay the header out again, wiping what the old layout held (old keys
 * included).  Generation 0 first, so that a reader that started before
 * sees its generation change and starts over; the next generation
 * continues the old one, so none is ever reused.  The two slots overlap
 * (LAYOUT in acme_shm.h): each image's header at its slot's start, then
 * the heap that both slots hold.
 */
static void
shm_layout(size_t size, size_t old_size)
{
	struct acme_shm_header	*h = shm.hdr;
	uint64_t		 gen = 0;
	size_t			 slot, hsize = shm_align8(sizeof(*h));
	size_t			 isize = sizeof(struct acme_shm_image);

	if (old_size >= sizeof(*h) && h->magic == ACME_SHM_MAGIC &&
	    h->version == ACME_SHM_VERSION) {
		gen = h->generation;
		if (h->last_serial > shm.stats.ss_last_serial)
			shm.stats.ss_last_serial = h->last_serial;
	}
	atomic_store_explicit((_Atomic uint64_t *)&h->generation, 0,
	    memory_order_relaxed);
	/* Readers must see generation 0 before any byte changes. */
	atomic_thread_fence(memory_order_release);
	if (old_size > hsize)
		shm_zero((uint32_t)hsize, (uint32_t)(old_size - hsize));
	slot = (size - hsize - isize) & ~(size_t)7;
	h->magic = ACME_SHM_MAGIC;
	h->version = ACME_SHM_VERSION;
	h->size = (uint32_t)size;
	h->header_size = sizeof(*h);
	h->slot_off[0] = (uint32_t)hsize;
	h->slot_off[1] = (uint32_t)(hsize + isize);
	h->slot_size = (uint32_t)slot;
	h->flags = 0;
	memset(h->reserved, 0, sizeof(h->reserved));
	shm.stats.ss_generation = gen;
	shm_prior_forget();
	shm_slots_forget((uint32_t)(hsize + 2 * isize),
	    (uint32_t)(hsize + slot));
}

/*
 * Put back the size of a file someone cut (see the top of this file),
 * keeping our own generation and serials: whatever the header held
 * before the cut is no longer ours to believe.  The writer keeps no copy
 * of what it published: the certificates whose blocks lay past the cut
 * are gone with them, until they are set again.
 */
static int
shm_restore(const struct stat *st)
{
	uint64_t	 gen = shm.stats.ss_generation;
	uint64_t	 serial = shm.stats.ss_last_serial;
	size_t		 lost;

	lost = shm_certs_recover((uint64_t)st->st_size);
	log_warnx("shared zone %s was truncated to %lld bytes, under its %zu: "
	    "someone able to write it cut it; putting its size back and "
	    "publishing everything again, but for %zu certificate(s) whose "
	    "strings were cut away (back when next renewed or reloaded)",
	    shm.path, (long long)st->st_size, shm.size, lost);
	if (ftruncate(shm.fd, (off_t)shm.size) == -1) {
		log_warn("shared zone %s: ftruncate", shm.path);
		return -1;
	}
	shm_layout(shm.size, (size_t)st->st_size);
	shm.stats.ss_generation = gen;
	shm.stats.ss_last_serial = serial;
	shm.stats.ss_restores++;
	return 0;
}

/* Whether the mapping may be written: -1 when the file stays short. */
static int
shm_intact(void)
{
	struct stat	 st;

	if (fstat(shm.fd, &st) == -1) {
		log_warn("shared zone %s: fstat", shm.path);
		return -1;
	}
	if ((uint64_t)st.st_size >= shm.size)
		return 0;
	return shm_restore(&st);
}

static void
shm_watch_cb(int fd, short ev, void *arg)
{
	struct stat	 st;

	(void)fd;
	(void)ev;
	(void)arg;
	if (fstat(shm.fd, &st) == 0 && (uint64_t)st.st_size < shm.size)
		shm_changed();
}

static void
shm_publish_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	shm_publish();
}

int
shm_open_zone(struct event_base *base, const char *path, size_t size,
    const char *group, char **cause)
{
	struct timeval	 watch = { SHM_WATCH_INTERVAL, 0 };
	struct timeval	 commit = { 0, SHM_COMMIT_DELAY * 1000 };
	struct stat	 st;
	gid_t		 gid = (gid_t)-1;
	void		*p;
	int		 fd;

	if (size < ACME_SHM_MIN_SIZE || size > ACME_SHM_MAX_SIZE) {
		xasprintf(cause, "%s: zone size %zu is outside [%u, %u]",
		    path, size, ACME_SHM_MIN_SIZE, ACME_SHM_MAX_SIZE);
		return -1;
	}
	if (group != NULL && (gid = shm_group_id(group, cause)) == (gid_t)-1)
		return -1;
	if ((fd = shm_open_file(path, gid, cause)) == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	/* Never shrink: a reader past a truncated end dies with SIGBUS. */
	if ((size_t)st.st_size > size) {
		log_info("%s is %lld bytes, more than the configured %zu; "
		    "keeping its size", path, (long long)st.st_size, size);
		size = (size_t)st.st_size > ACME_SHM_MAX_SIZE ?
		    ACME_SHM_MAX_SIZE : (size_t)st.st_size;
	} else if ((size_t)st.st_size < size && ftruncate(fd, size) == -1)
		goto fail;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		goto fail;
	shm.path = xstrdup(path);
	shm.fd = fd;
	shm.base = p;
	shm.size = size;
	shm.hdr = p;
	/*
	 * A zone a previous run left keeps its published image until our
	 * first one (shm_take_up()); one grown, or whose image does not
	 * hold up, is laid out again: readers find generation 0 until the
	 * first image, and keep what they hold.
	 */
	if ((size_t)st.st_size != size || shm_take_up(size) == -1)
		shm_layout(size, (size_t)st.st_size < size ?
		    (size_t)st.st_size : size);
	shm.stats.ss_slot_size = shm.hdr->slot_size;
	/* No slot holds the entries of this model yet. */
	shm.cert_version = 1;
	shm.shape_version = 1;
	if (base != NULL) {
		shm.publish_ev = event_new(base, -1, 0, shm_publish_cb, NULL);
		shm.commit_ev = evtimer_new(base, shm_commit_cb, NULL);
		shm.watch_ev = event_new(base, -1, EV_PERSIST, shm_watch_cb,
		    NULL);
		if (shm.publish_ev == NULL || shm.commit_ev == NULL ||
		    shm.watch_ev == NULL)
			fatalx("%s: event_new", __func__);
		evtimer_add(shm.watch_ev, &watch);
	}
	log_info("shared zone %s: %zu bytes, %u of them shared by its two "
	    "images", path, size, shm.hdr->slot_size);
	if (!shm.prior_held)
		shm_changed();	/* publish at start-up, whatever is loaded */
	else if (shm.commit_ev != NULL) {
		/* After what start-up stages, which the commit takes. */
		shm.dirty = 1;
		evtimer_add(shm.commit_ev, &commit);
	}
	return 0;
fail:
	xasprintf(cause, "%s: %s", path, strerror(errno));
	close(fd);
	return -1;
}

/*
 * Room in array (n entries of size, *cap of room) for one more.  It
 * doubles: a start adds N certificates one at a time, and a realloc()
 * one entry larger may copy the whole array each time.
 */
static void *
shm_grow(void *array, size_t n, size_t *cap, size_t size)
{
	if (n < *cap)
		return array;
	*cap = *cap == 0 ? 16 : *cap * 2;
	return xreallocarray(array, *cap, size);
}

/* --------------------------------------------------------------- index */

static const char *
shm_cert_id(size_t i)
{
	return shm.certs[i].sc_id;
}

static const char *
shm_pending_id(size_t i)
{
	return shm.pending[i].sp_cert.sc_id;
}

static size_t
shm_index_home(const struct shm_index *ix, const char *id)
{
	return acme_shm_hash(id, strlen(id)) & (ix->si_cap - 1);
}

/* The slot that holds id, or the free one where it would go. */
static size_t
shm_index_slot(const struct shm_index *ix, const char *id)
{
	size_t	 k;

	k = shm_index_home(ix, id);
	while (ix->si_slots[k] != 0 &&
	    strcmp(ix->si_id(ix->si_slots[k] - 1), id) != 0)
		k = (k + 1) & (ix->si_cap - 1);
	return k;
}

/* Whether id is in the array; if so, *pos is where. */
static int
shm_index_find(const struct shm_index *ix, const char *id, size_t *pos)
{
	size_t	 k;

	if (ix->si_n == 0)
		return 0;
	k = shm_index_slot(ix, id);
	if (ix->si_slots[k] == 0)
		return 0;
	*pos = ix->si_slots[k] - 1;
	return 1;
}

static void
shm_index_grow(struct shm_index *ix)
{
	size_t	*old = ix->si_slots, old_cap = ix->si_cap, i;

	ix->si_cap = old_cap == 0 ? 64 : old_cap * 2;
	ix->si_slots = xcalloc(ix->si_cap, sizeof(*ix->si_slots));
	for (i = 0; i < old_cap; i++) {
		if (old[i] != 0)
			ix->si_slots[shm_index_slot(ix,
			    ix->si_id(old[i] - 1))] = old[i];
	}
	free(old);
}

/* The id at pos, which the index does not hold yet, is now there. */
static void
shm_index_add(struct shm_index *ix, size_t pos)
{
	if ((ix->si_n + 1) * 2 > ix->si_cap)
		shm_index_grow(ix);
	ix->si_slots[shm_index_slot(ix, ix->si_id(pos))] = pos + 1;
	ix->si_n++;
}

/*
 * The id at pos leaves, and the entries after it in the array move down
 * one (memmove); called while the array is still as it was.  The
 * entries that follow in its probe run are shifted back over the hole,
 * so that no run is cut short (there are no tombstones).
 */
static void
shm_index_remove(struct shm_index *ix, size_t pos)
{
	size_t	 mask = ix->si_cap - 1, hole, k, home;

	hole = shm_index_slot(ix, ix->si_id(pos));
	for (k = (hole + 1) & mask; ix->si_slots[k] != 0; k = (k + 1) & mask) {
		home = shm_index_home(ix, ix->si_id(ix->si_slots[k] - 1));
		/* It stays if its home lies cyclically in (hole, k]. */
		if (hole <= k ? (hole < home && home <= k) :
		    (hole < home || home <= k))
			continue;
		ix->si_slots[hole] = ix->si_slots[k];
		hole = k;
	}
	ix->si_slots[hole] = 0;
	ix->si_n--;
	for (k = 0; k < ix->si_cap; k++) {
		if (ix->si_slots[k] > pos + 1)
			ix->si_slots[k]--;
	}
}

static void
shm_index_clear(struct shm_index *ix)
{
	free(ix->si_slots);
	ix->si_slots = NULL;
	ix->si_cap = ix->si_n = 0;
}

/* --------------------------------------------------------------- model */

/* Everything but the id, which names the entry. */
static void
shm_cert_clear_content(struct shm_cert *sc)
{
	size_t	 i;

	free(sc->sc_issuer);
	for (i = 0; i < sc->sc_nnames; i++)
		free(sc->sc_names[i]);
	free(sc->sc_names);
	free(sc->sc_chain);
	keys_pem_free(sc->sc_key);
	sc->sc_issuer = sc->sc_chain = sc->sc_key = NULL;
	sc->sc_names = NULL;
	sc->sc_nnames = 0;
}

static void
shm_cert_clear(struct shm_cert *sc)
{
	shm_cert_clear_content(sc);
	free(sc->sc_name_buckets[0]);
	free(sc->sc_name_buckets[1]);
	free(sc->sc_id);
	memset(sc, 0, sizeof(*sc));
}

static struct shm_cert *
shm_find_cert(const char *id)
{
	size_t	 i;

	if (!shm_index_find(&shm_certs_index, id, &i))
		return NULL;
	return &shm.certs[i];
}

/* Publish at the end of this turn of the loop (now, without a loop). */
static void
shm_changed(void)
{
	if (shm.base == NULL)
		return;
	shm.dirty = 1;
	if (shm.publish_ev != NULL)
		event_active(shm.publish_ev, EV_TIMEOUT, 0);
	else
		shm_publish();
}

/*
 * Measure sc's strings once, when it enters the model: every publish
 * that writes the entries lays out every certificate's, and a slot laid
 * out afresh copies every chain and key.
 */
static size_t
shm_cert_strings(struct shm_cert *sc)
{
	size_t	 n, i;

	sc->sc_id_len = strlen(sc->sc_id);
	sc->sc_issuer_len = strlen(sc->sc_issuer);
	sc->sc_chain_len = strlen(sc->sc_chain);
	sc->sc_key_len = strlen(sc->sc_key);
	n = sc->sc_id_len + 1 + sc->sc_issuer_len + 1 +
	    sc->sc_chain_len + 1 + sc->sc_key_len + 1;
	for (i = 0; i < sc->sc_nnames; i++)
		n += strlen(sc->sc_names[i]) + 1;
	return n;
}

/*
 * sc's chain and key: its own copies until its block is written, and
 * from then on the block's, in the zone (shm_write_placed()): the
 * writer keeps no second copy of every chain and key.
 */
static const char *
shm_cert_chain(const struct shm_cert *sc)
{
	if (sc->sc_chain != NULL)
		return sc->sc_chain;
	return (const char *)shm.base + sc->sc_at + sc->sc_id_len + 1 +
	    sc->sc_issuer_len + 1;
}

static const char *
shm_cert_key(const struct shm_cert *sc)
{
	if (sc->sc_key != NULL)
		return sc->sc_key;
	return shm_cert_chain(sc) + sc->sc_chain_len + 1;
}

/* sc's block is written: its own copies of chain and key may go. */
static void
shm_cert_release(struct shm_cert *sc)
{
	free(sc->sc_chain);
	keys_pem_free(sc->sc_key);
	sc->sc_chain = sc->sc_key = NULL;
}

/*
 * sc's content leaves the model: its block goes stale, to be wiped once
 * no published image points at it (shm_publish_image()).
 */
static void
shm_cert_stale(struct shm_cert *sc)
{
	struct shm_heap	*hp = &shm.heap;

	shm.cert_blocks -= shm_block_size(sc);
	if (sc->sc_at == 0)
		return;
	hp->sh_stale = xreallocarray(hp->sh_stale, hp->sh_nstale + 1,
	    sizeof(*hp->sh_stale));
	hp->sh_stale[hp->sh_nstale].se_off = sc->sc_at;
	hp->sh_stale[hp->sh_nstale].se_len = shm_block_size(sc);
	hp->sh_nstale++;
	sc->sc_at = 0;
}

/*
 * The ids, their order or a certificate's names changed: every slot's
 * tables are to be built again, and the lists of certificates replaced
 * since (by index) mean nothing any more.
 */
static void
shm_shape_changed(void)
{
	shm.shape_version++;
	shm.slots[0].sl_nchanged = shm.slots[1].sl_nchanged = 0;
}

/*
 * Certificate i has a new block: each slot's entry for it is to point
 * there.
 */
static void
shm_cert_changed(size_t i)
{
	struct shm_slot	*sl;
	int		 s;

	for (s = 0; s < 2; s++) {
		sl = &shm.slots[s];
		sl->sl_changed = xreallocarray(sl->sl_changed,
		    sl->sl_nchanged + 1, sizeof(*sl->sl_changed));
		sl->sl_changed[sl->sl_nchanged++] = i;
	}
}

static void
shm_apply_remove(const char *id)
{
	struct shm_cert	*sc;
	size_t		 i;

	if ((sc = shm_find_cert(id)) == NULL)
		return;
	i = (size_t)(sc - shm.certs);
	shm_index_remove(&shm_certs_index, i);
	shm.nnames -= sc->sc_nnames;
	shm_cert_stale(sc);
	shm_cert_clear(sc);
	shm_shape_changed();
	/* Keep the order: by_name favours the certificate held longest. */
	memmove(&shm.certs[i], &shm.certs[i + 1],
	    (shm.ncerts - i - 1) * sizeof(*shm.certs));
	shm.ncerts--;
	shm.cert_version++;
}

/* Whether a and b have the same names, in the same order. */
static int
shm_names_equal(const struct shm_cert *a, const struct shm_cert *b)
{
	size_t	 i;

	if (a->sc_nnames != b->sc_nnames)
		return 0;
	for (i = 0; i < a->sc_nnames; i++)
		if (strcmp(a->sc_names[i], b->sc_names[i]) != 0)
			return 0;
	return 1;
}

/* Take the content of next (which is left empty) into the model. */
static void
shm_apply_set(struct shm_cert *next)
{
	struct shm_cert	*sc;

	if ((sc = shm_find_cert(next->sc_id)) == NULL) {
		shm.certs = shm_grow(shm.certs, shm.ncerts, &shm.certs_cap,
		    sizeof(*shm.certs));
		sc = &shm.certs[shm.ncerts++];
		memset(sc, 0, sizeof(*sc));
		sc->sc_id = xstrdup(next->sc_id);
		shm_index_add(&shm_certs_index, shm.ncerts - 1);
		shm_shape_changed();
	} else if (strcmp(shm_cert_chain(sc), shm_cert_chain(next)) == 0 &&
	    strcmp(shm_cert_key(sc), shm_cert_key(next)) == 0)
		return;			/* same bytes: keep the serial */
	else {
		if (!shm_names_equal(sc, next))
			shm_shape_changed();
		shm.nnames -= sc->sc_nnames;
		shm_cert_stale(sc);
		shm_cert_clear_content(sc);
		shm_cert_changed((size_t)(sc - shm.certs));
	}
	sc->sc_issuer = next->sc_issuer;
	sc->sc_names = next->sc_names;
	sc->sc_nnames = next->sc_nnames;
	sc->sc_chain = next->sc_chain;
	sc->sc_key = next->sc_key;
	sc->sc_not_before = next->sc_not_before;
	sc->sc_not_after = next->sc_not_after;
	/* A prior block's serial still names the very same bytes. */
	sc->sc_serial = next->sc_serial != 0 ? next->sc_serial :
	    shm_next_serial();
	sc->sc_id_len = next->sc_id_len;
	sc->sc_issuer_len = next->sc_issuer_len;
	sc->sc_chain_len = next->sc_chain_len;
	sc->sc_key_len = next->sc_key_len;
	sc->sc_strings = next->sc_strings;
	sc->sc_at = next->sc_at;	/* its block, if staged with one */
	shm.cert_blocks += shm_block_size(sc);
	shm.nnames += sc->sc_nnames;
	next->sc_issuer = next->sc_chain = next->sc_key = NULL;
	next->sc_names = NULL;
	next->sc_nnames = 0;
	next->sc_at = 0;
	next->sc_prior = 0;
	shm.cert_version++;
}

/*
 * A certificate staged with new content writes its block into the zone
 * at once, in bytes that no image uses, and drops its own copies of
 * chain and key: a start-up that stages thousands of certificates holds
 * none of them on the heap until the first image is written.  Without
 * room it keeps its copies, and the publish places it.
 */
static void
shm_staged_write(struct shm_cert *sc)
{
	uint32_t	 at;

	if (shm_intact() == -1)
		return;
	if (shm_prior_adopt(sc)) {
		shm_cert_release(sc);
		return;
	}
	if ((at = shm_heap_alloc(shm_block_size(sc))) == 0)
		return;
	sc->sc_at = at;
	shm.heap.sh_live += shm_block_size(sc);
	shm_write_block(sc, at);
	shm.stats.ss_bytes_written += shm_block_size(sc);
	shm_cert_release(sc);
}

/*
 * A staged block that the model did not take (a later change replaced
 * it, or the bytes were those the model held): no image ever pointed at
 * it, so it is wiped and given back now.  A prior block goes back to
 * the prior image, which may still be published.
 */
static void
shm_staged_drop(struct shm_cert *sc)
{
	if (sc->sc_at == 0)
		return;
	if (sc->sc_prior != 0) {
		shm.prior[sc->sc_prior - 1].pr_taken = 0;
		shm.heap.sh_live -= shm_block_size(sc);
		sc->sc_at = 0;
		sc->sc_prior = 0;
		return;
	}
	memset(shm.base + sc->sc_at, 0, shm_block_size(sc));
	shm_heap_free(sc->sc_at, shm_block_size(sc));
	shm.heap.sh_live -= shm_block_size(sc);
	shm.stats.ss_bytes_written += shm_block_size(sc);
	sc->sc_at = 0;
}

/*
 * The chain and key of sc from its block, which a new layout is about to
 * wipe, if the cut at size bytes left it whole; -1 otherwise.
 */
static int
shm_cert_take_back(struct shm_cert *sc, uint64_t size)
{
	char	*key;

	if (sc->sc_chain != NULL || sc->sc_at == 0)
		return 0;
	if ((uint64_t)sc->sc_at + shm_block_size(sc) > size)
		return -1;
	/* Both from the block, before either is the model's. */
	key = xstrndup(shm_cert_key(sc), sc->sc_key_len);
	sc->sc_chain = xstrndup(shm_cert_chain(sc), sc->sc_chain_len);
	sc->sc_key = key;
	return 0;
}

/*
 * The file was cut to size bytes: each certificate, staged or in the
 * model, takes its chain and key back from its block, which a new
 * layout is about to wipe.  One whose block was cut away leaves the
 * model (a staged one becomes a removal: its older content, if any, is
 * not served instead).  Returns how many left.
 */
static size_t
shm_certs_recover(uint64_t size)
{
	struct shm_cert	*sc;
	size_t		 i, lost = 0;

	for (i = 0; i < shm.npending; i++) {
		sc = &shm.pending[i].sp_cert;
		sc->sc_prior = 0;	/* the new layout forgets them */
		if (shm.pending[i].sp_remove ||
		    shm_cert_take_back(sc, size) == 0) {
			sc->sc_at = 0;
			continue;
		}
		log_warnx("shared zone %s: certificate %s was cut away",
		    shm.path, sc->sc_id);
		sc->sc_at = 0;
		shm_cert_clear_content(sc);
		shm.pending[i].sp_remove = 1;
		lost++;
	}
	for (i = shm.ncerts; i > 0; i--) {
		sc = &shm.certs[i - 1];
		if (shm_cert_take_back(sc, size) == 0)
			continue;
		log_warnx("shared zone %s: certificate %s was cut away",
		    shm.path, sc->sc_id);
		sc->sc_at = 0;		/* nothing of it to wipe */
		shm_apply_remove(sc->sc_id);
		lost++;
	}
	return lost;
}

/* Apply every staged change to the model, in order. */
static void
shm_commit(void)
{
	struct shm_pending	*sp;
	uint64_t		 version = shm.cert_version;
	size_t			 i;

	/* Comparing a change with the model reads the zone's blocks. */
	if (shm.base != NULL && shm_intact() == -1)
		return;
	for (i = 0; i < shm.npending; i++) {
		sp = &shm.pending[i];
		if (sp->sp_remove)
			shm_apply_remove(sp->sp_cert.sc_id);
		else
			shm_apply_set(&sp->sp_cert);
		shm_staged_drop(&sp->sp_cert);
		shm_cert_clear(&sp->sp_cert);
	}
	free(shm.pending);
	shm.pending = NULL;
	shm.npending = shm.pending_cap = 0;
	shm_index_clear(&shm_pending_index);
	/* The first image replaces a previous run's, changed or not. */
	if (shm.cert_version != version || shm.prior_held)
		shm_changed();
}

static void
shm_commit_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	shm_commit();
}

/*
 * Stage a change to the certificates (taking sc's content).  Changes of
 * SHM_COMMIT_DELAY go out together: every certificate change rewrites
 * the certificates' part of an image, while tokens, which a CA is
 * waiting for, are published in the same turn of the loop.
 */
static void
shm_stage(struct shm_cert *sc, int remove)
{
	struct timeval		 tv = { 0, SHM_COMMIT_DELAY * 1000 };
	struct shm_pending	*sp;
	size_t			 i;

	if (!remove) {
		sc->sc_strings = shm_cert_strings(sc);
		shm_staged_write(sc);
	}
	if (shm_index_find(&shm_pending_index, sc->sc_id, &i)) {
		/* The later change wins, in the place of the first. */
		sp = &shm.pending[i];
		shm_staged_drop(&sp->sp_cert);
		shm_cert_clear(&sp->sp_cert);
		sp->sp_cert = *sc;
	} else {
		shm.pending = shm_grow(shm.pending, shm.npending,
		    &shm.pending_cap, sizeof(*shm.pending));
		sp = &shm.pending[shm.npending++];
		sp->sp_cert = *sc;
		shm_index_add(&shm_pending_index, shm.npending - 1);
	}
	sp->sp_remove = remove;
	memset(sc, 0, sizeof(*sc));
	if (shm.commit_ev == NULL)
		shm_commit();
	else if (!evtimer_pending(shm.commit_ev, NULL))
		evtimer_add(shm.commit_ev, &tv);
}

/*
 * The key comes as PEM text, as state_path holds it, so a certificate read
 * at start-up is published without decoding and re-encoding its key.
 */
void
shm_cert_set(const char *id, const char *issuer, char *const *names,
    size_t nnames, const char *chain, const char *key_pem, time_t not_before,
    time_t not_after)
{
	char	*chain_copy, *key_copy;

	if (shm.base == NULL)
		return;
	chain_copy = xstrdup(chain);
	key_copy = xstrdup(key_pem);
	shm_cert_take(id, issuer, names, nnames, &chain_copy, &key_copy,
	    not_before, not_after);
}

/*
 * shm_cert_set(), taking *chain and *key_pem (the key freed as
 * keys_pem_free() does) and setting them to NULL; with no zone open they
 * stay the caller's.  A start publishes every stored certificate, and
 * copying them all cost it about 5% of its time at 10,000.
 */
void
shm_cert_take(const char *id, const char *issuer, char *const *names,
    size_t nnames, char **chain, char **key_pem, time_t not_before,
    time_t not_after)
{
	struct shm_cert	 sc;
	size_t		 i;

	if (shm.base == NULL)
		return;
	memset(&sc, 0, sizeof(sc));
	sc.sc_id = xstrdup(id);
	sc.sc_issuer = xstrdup(issuer);
	sc.sc_names = xcalloc(nnames, sizeof(*sc.sc_names));
	for (i = 0; i < nnames; i++)
		sc.sc_names[i] = xstrdup(names[i]);
	sc.sc_nnames = nnames;
	sc.sc_chain = *chain;
	sc.sc_key = *key_pem;
	*chain = *key_pem = NULL;
	sc.sc_not_before = not_before;
	sc.sc_not_after = not_after;
	shm_stage(&sc, 0);
}

void
shm_cert_remove(const char *id)
{
	struct shm_cert	 sc;

	if (shm.base == NULL)
		return;
	memset(&sc, 0, sizeof(sc));
	sc.sc_id = xstrdup(id);
	shm_stage(&sc, 1);
}

void
shm_token_add(const char *token, const char *keyauth)
{
	size_t	 i;

	for (i = 0; i < shm.ntokens; i++)
		if (strcmp(shm.tokens[i].st_token, token) == 0)
			return;
	shm.tokens = xreallocarray(shm.tokens, shm.ntokens + 1,
	    sizeof(*shm.tokens));
	shm.tokens[shm.ntokens].st_token = xstrdup(token);
	shm.tokens[shm.ntokens].st_keyauth = xstrdup(keyauth);
	shm.ntokens++;
	shm_changed();
}

void
shm_token_remove(const char *token)
{
	size_t	 i;

	for (i = 0; i < shm.ntokens; i++) {
		if (strcmp(shm.tokens[i].st_token, token) != 0)
			continue;
		free(shm.tokens[i].st_token);
		free(shm.tokens[i].st_keyauth);
		shm.tokens[i] = shm.tokens[--shm.ntokens];
		shm_changed();
		return;
	}
}

static void
shm_alpn_clear(struct shm_alpn *sa)
{
	free(sa->sa_sni);
	free(sa->sa_ident);
	free(sa->sa_keyauth);
	free(sa->sa_cert);
	keys_pem_free(sa->sa_key);
	memset(sa, 0, sizeof(*sa));
}

/*
 * A pending tls-alpn-01 authorization's validation certificate, for
 * nginx to serve to the CA (TLS-ALPN-01 in acme_shm.h).  Published in
 * this turn of the loop, as a token is.  The newest of two for one
 * name is the one served, as by alpn.c's responder.
 */
void
shm_alpn_add(const char *ident, const char *keyauth, X509 *cert,
    EVP_PKEY *key)
{
	struct shm_alpn	 sa;
	char		*p;

	if (shm.base == NULL)
		return;
	memset(&sa, 0, sizeof(sa));
	if ((sa.sa_cert = keys_cert_pem(cert)) == NULL ||
	    (sa.sa_key = keys_to_pem(key)) == NULL) {
		log_warnx("tls-alpn-01 for %s: the validation certificate "
		    "does not encode; not published", ident);
		shm_alpn_clear(&sa);
		return;
	}
	sa.sa_sni = alpn_sni_name(ident);
	for (p = sa.sa_sni; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p += 'a' - 'A';
	sa.sa_ident = xstrdup(ident);
	sa.sa_keyauth = xstrdup(keyauth);
	shm.alpns = xreallocarray(shm.alpns, shm.nalpns + 1,
	    sizeof(*shm.alpns));
	shm.alpns[shm.nalpns++] = sa;
	shm_changed();
}

/* The authorization settled: its certificate and key leave the zone. */
void
shm_alpn_remove(const char *ident, const char *keyauth)
{
	size_t	 i;

	for (i = 0; i < shm.nalpns; i++) {
		if (strcmp(shm.alpns[i].sa_ident, ident) != 0 ||
		    strcmp(shm.alpns[i].sa_keyauth, keyauth) != 0)
			continue;
		shm_alpn_clear(&shm.alpns[i]);
		/* Keep the order: the newest for a name is served. */
		memmove(&shm.alpns[i], &shm.alpns[i + 1],
		    (shm.nalpns - i - 1) * sizeof(*shm.alpns));
		shm.nalpns--;
		shm.alpn_gone = 1;
		shm_changed();
		return;
	}
}

/* ------------------------------------------------------------- publish */

/*
 * Room kept after an image's front for it to grow in place, so that
 * certificates and tokens can be added without every entry being
 * written somewhere else: a quarter of the front and SHM_SLACK_MIN more,
 * at most a 32nd of the heap.
 */
#define SHM_SLACK_MIN		(64 * 1024)

static uint32_t
shm_align_grain(uint64_t n)
{
	return (uint32_t)((n + SHM_BLOCK_GRAIN - 1) &
	    ~(uint64_t)(SHM_BLOCK_GRAIN - 1));
}

/*
 * Where the front of the next image goes, from fo on, for ncerts
 * certificates with nnames names.  Offsets are from the file start, as
 * readers want them.  The plan depends on nothing but the model (and
 * fo), so the entries of a front written from the same cert_version are
 * where this plan puts them.
 */
static void
shm_plan(struct shm_plan *pl, uint32_t fo, size_t ncerts, size_t nnames)
{
	uint64_t	 off = 0, strings = 0;
	size_t		 i;

	memset(pl, 0, sizeof(*pl));
	pl->certs_off = fo;
	off += (uint64_t)ncerts * sizeof(struct acme_shm_cert);
	pl->by_id.nbuckets = shm_buckets_for(ncerts);
	pl->by_id.off = fo + (uint32_t)off;
	off += (uint64_t)pl->by_id.nbuckets * sizeof(struct acme_shm_bucket);
	pl->by_name.nbuckets = shm_buckets_for(nnames);
	pl->by_name.off = fo + (uint32_t)off;
	off += (uint64_t)pl->by_name.nbuckets * sizeof(struct acme_shm_bucket);

	pl->tokens_part_off = fo + (uint32_t)off;
	pl->tokens_off = pl->tokens_part_off;
	off += (uint64_t)shm.ntokens * sizeof(struct acme_shm_token);
	pl->by_token.nbuckets = shm_buckets_for(shm.ntokens);
	pl->by_token.off = fo + (uint32_t)off;
	off += (uint64_t)pl->by_token.nbuckets * sizeof(struct acme_shm_bucket);
	pl->token_strings_off = fo + (uint32_t)off;
	for (i = 0; i < shm.ntokens; i++)
		strings += strlen(shm.tokens[i].st_token) + 1 +
		    strlen(shm.tokens[i].st_keyauth) + 1;
	off = shm_align8(off + strings);

	pl->alpn_off = fo + (uint32_t)off;
	off += (uint64_t)shm.nalpns * sizeof(struct acme_shm_alpn);
	pl->by_alpn.nbuckets = shm_buckets_for(shm.nalpns);
	pl->by_alpn.off = fo + (uint32_t)off;
	off += (uint64_t)pl->by_alpn.nbuckets * sizeof(struct acme_shm_bucket);
	pl->alpn_strings_off = fo + (uint32_t)off;
	strings = 0;
	for (i = 0; i < shm.nalpns; i++)
		strings += strlen(shm.alpns[i].sa_sni) + 1 +
		    strlen(shm.alpns[i].sa_ident) + 1 +
		    strlen(shm.alpns[i].sa_cert) + 1 +
		    strlen(shm.alpns[i].sa_key) + 1;
	/* Checked against the heap before any uint32_t offset is used. */
	pl->front = shm_align8(off + strings);
}

/* ---------------------------------------------------------------- heap */

/* The bytes of the free extent that ends the heap, if any. */
static uint64_t
shm_heap_tail(void)
{
	const struct shm_heap	*hp = &shm.heap;
	const struct shm_extent	*f;

	if (hp->sh_nfree == 0)
		return 0;
	f = &hp->sh_free[hp->sh_nfree - 1];
	return f->se_off + f->se_len == hp->sh_hi ? f->se_len : 0;
}

/* Give [off, off + len), zeroed, back to the heap. */
static void
shm_heap_free(uint32_t off, uint32_t len)
{
	struct shm_heap		*hp = &shm.heap;
	struct shm_extent	*f = hp->sh_free;
	size_t			 lo = 0, hi = hp->sh_nfree, mid;

	while (lo < hi) {		/* lo: the first extent past off */
		mid = lo + (hi - lo) / 2;
		if (f[mid].se_off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	hp->sh_free_bytes += len;
	if (lo > 0 && f[lo - 1].se_off + f[lo - 1].se_len == off) {
		f[lo - 1].se_len += len;
		if (lo < hp->sh_nfree && off + len == f[lo].se_off) {
			f[lo - 1].se_len += f[lo].se_len;
			memmove(&f[lo], &f[lo + 1],
			    (hp->sh_nfree - lo - 1) * sizeof(*f));
			hp->sh_nfree--;
		}
		return;
	}
	if (lo < hp->sh_nfree && off + len == f[lo].se_off) {
		f[lo].se_off = off;
		f[lo].se_len += len;
		return;
	}
	hp->sh_free = f = xreallocarray(f, hp->sh_nfree + 1, sizeof(*f));
	memmove(&f[lo + 1], &f[lo], (hp->sh_nfree - lo) * sizeof(*f));
	f[lo].se_off = off;
	f[lo].se_len = len;
	hp->sh_nfree++;
}

/*
 * len bytes from the first free extent that holds them, lowest first so
 * that the heap stays compact; 0 when none does.
 */
static uint32_t
shm_heap_alloc(uint64_t len)
{
	struct shm_heap		*hp = &shm.heap;
	struct shm_extent	*f = hp->sh_free;
	uint32_t		 at;
	size_t			 i;

	for (i = 0; i < hp->sh_nfree; i++) {
		if (f[i].se_len < len)
			continue;
		at = f[i].se_off;
		f[i].se_off += (uint32_t)len;
		f[i].se_len -= (uint32_t)len;
		if (f[i].se_len == 0) {
			memmove(&f[i], &f[i + 1],
			    (hp->sh_nfree - i - 1) * sizeof(*f));
			hp->sh_nfree--;
		}
		hp->sh_free_bytes -= len;
		return at;
	}
	return 0;
}

/*
 * How many bytes of slot s may be other than zero: everything past the
 * heap's last extent in use is free, and free bytes are zero.
 */
static uint32_t
shm_slot_used(int s)
{
	uint32_t	 top = shm.heap.sh_hi - (uint32_t)shm_heap_tail();

	return top - shm.hdr->slot_off[s];
}

/*
 * Wipe the stale blocks, at which no published image points any more,
 * and give their room back.  Returns the bytes wiped.
 */
static uint64_t
shm_wipe_stale(void)
{
	struct shm_heap		*hp = &shm.heap;
	const struct shm_extent	*x;
	uint64_t		 n = 0;
	size_t			 i;

	for (i = 0; i < hp->sh_nstale; i++) {
		x = &hp->sh_stale[i];
		memset(shm.base + x->se_off, 0, x->se_len);
		shm_heap_free(x->se_off, x->se_len);
		hp->sh_live -= x->se_len;
		n += x->se_len;
	}
	free(hp->sh_stale);
	hp->sh_stale = NULL;
	hp->sh_nstale = 0;
	return n;
}

/*
 * Slot s's front goes (it is not the published image's): wiped and its
 * extent given back.  Returns the bytes wiped.
 */
static uint64_t
shm_front_drop(int s)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint64_t	 n;

	if (sl->sl_front == 0)
		return 0;
	n = sl->sl_front_end - sl->sl_front;
	shm_zero(sl->sl_front, (uint32_t)n);
	shm_heap_free(sl->sl_front, sl->sl_front_cap);
	sl->sl_front = sl->sl_front_cap = sl->sl_front_end = 0;
	sl->sl_tokens_part = 0;
	/* Nothing of the entries it held is left to reuse. */
	sl->sl_version = sl->sl_shape = 0;
	sl->sl_nchanged = 0;
	return n;
}

/*
 * An extent for slot s's front that holds need bytes: the one it has,
 * or a new one with room to grow.  -1 when the heap has none.
 */
static int
shm_front_room(int s, uint64_t need, uint64_t *written)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint64_t	 cap, slack;
	uint32_t	 at;

	if (sl->sl_front != 0 && need <= sl->sl_front_cap)
		return 0;
	*written += shm_front_drop(s);
	slack = need / 4 + SHM_SLACK_MIN;
	if (slack > (shm.heap.sh_hi - shm.heap.sh_lo) / 32)
		slack = (shm.heap.sh_hi - shm.heap.sh_lo) / 32;
	cap = shm_align_grain(need + slack);
	if ((at = shm_heap_alloc(cap)) == 0) {
		cap = shm_align_grain(need);
		if ((at = shm_heap_alloc(cap)) == 0)
			return -1;
	}
	sl->sl_front = sl->sl_front_end = sl->sl_tokens_part = at;
	sl->sl_front_cap = (uint32_t)cap;
	return 0;
}

/* ------------------------------------------------------------- take-up */

/*
 * A zone a previous run left holds an image that nginx may be reading,
 * and that a worker which has not cached a certificate (a new one after
 * a reload) needs while the daemon loads.  So the writer takes it up:
 * it reads the published image as a careful reader would, marks every
 * byte it uses, keeps it published until its own first image, and only
 * then wipes what that image does not use.  Anything it cannot account
 * for (an image of another layout, an offset outside the slot, a
 * string without its NUL, a block that overlaps another) refuses the
 * image, and the zone is laid out again: the file may have been
 * planted, or cut and grown.
 */

/* Bytes of the published image: owner is a certificate, or SHM_FRONT. */
struct shm_range {
	uint32_t	 rg_off;
	uint32_t	 rg_len;
	size_t		 rg_owner;
};

#define SHM_FRONT	SIZE_MAX

struct shm_take {
	struct acme_shm_image	 img;	/* copied once, as a reader does */
	uint32_t		 lo;	/* the heap */
	uint32_t		 hi;
	struct shm_range	*r;
	size_t			 nr;
	const char		*why;	/* NULL while the image holds up */
};

static const char *
shm_prior_id(size_t i)
{
	return (const char *)shm.base + shm.prior[i].pr_at;
}

static void
shm_prior_forget(void)
{
	free(shm.prior);
	shm.prior = NULL;
	shm.nprior = 0;
	shm.prior_held = 0;
	shm_index_clear(&shm_prior_index);
}

static int
shm_take_fail(struct shm_take *tk, const char *why)
{
	if (tk->why == NULL)
		tk->why = why;
	return -1;
}

/* Note len bytes at off as the image's, which must lie in the heap. */
static int
shm_take_range(struct shm_take *tk, uint64_t off, uint64_t len,
    size_t owner)
{
	if (len == 0)
		return 0;
	if (!acme_shm_within(tk->lo, tk->hi, off, len))
		return shm_take_fail(tk, "an offset lies outside the heap");
	tk->r = xreallocarray(tk->r, tk->nr + 1, sizeof(*tk->r));
	tk->r[tk->nr].rg_off = (uint32_t)off;
	tk->r[tk->nr].rg_len = (uint32_t)len;
	tk->r[tk->nr].rg_owner = owner;
	tk->nr++;
	return 0;
}

/* A string of len bytes at off, and the NUL that must follow it. */
static int
shm_take_string(struct shm_take *tk, uint32_t off, uint32_t len,
    size_t owner)
{
	if (shm_take_range(tk, off, (uint64_t)len + 1, owner) == -1)
		return -1;
	if (shm.base[off + len] != '\0')
		return shm_take_fail(tk, "a string lacks its NUL");
	return 0;
}

static int
shm_take_table(struct shm_take *tk, const struct acme_shm_table *t)
{
	if (t->nbuckets == 0)
		return 0;
	if ((t->nbuckets & (t->nbuckets - 1)) != 0)
		return shm_take_fail(tk, "a table is not a power of two");
	return shm_take_range(tk, t->off,
	    (uint64_t)t->nbuckets * sizeof(struct acme_shm_bucket),
	    SHM_FRONT);
}

/* Bucket i of table t, copied (the table is checked to lie inside). */
static void
shm_take_bucket(const struct acme_shm_table *t, uint32_t i,
    struct acme_shm_bucket *b)
{
	memcpy(b, shm.base + t->off + (size_t)i * sizeof(*b), sizeof(*b));
}

/*
 * The certificate entries: each one's id, issuer, chain and key end to
 * end, as shm_write_block() writes them, which become a prior block
 * (its names are found once every range is known, shm_take_names()).
 */
static int
shm_take_certs(struct shm_take *tk)
{
	struct acme_shm_cert	 e;
	struct shm_prior	*pr;
	size_t			 i, pos;

	if (tk->img.ncerts > (tk->hi - tk->lo) / sizeof(e))
		return shm_take_fail(tk, "too many certificates");
	if (shm_take_range(tk, tk->img.certs_off,
	    (uint64_t)tk->img.ncerts * sizeof(e), SHM_FRONT) == -1)
		return -1;
	if (tk->img.ncerts > 0)
		shm.prior = xcalloc(tk->img.ncerts, sizeof(*shm.prior));
	for (i = 0; i < tk->img.ncerts; i++) {
		memcpy(&e, shm.base + tk->img.certs_off + i * sizeof(e),
		    sizeof(e));
		if (e.id_len == 0 || (uint64_t)e.issuer_off != (uint64_t)
		    e.id_off + e.id_len + 1 || (uint64_t)e.chain_off !=
		    (uint64_t)e.issuer_off + e.issuer_len + 1 ||
		    (uint64_t)e.key_off != (uint64_t)e.chain_off +
		    e.chain_len + 1)
			return shm_take_fail(tk, "an entry's strings are not "
			    "one block");
		if (shm_take_range(tk, e.id_off, (uint64_t)e.key_off +
		    e.key_len + 1 - e.id_off, i) == -1)
			return -1;
		if (shm.base[e.issuer_off - 1] != '\0' ||
		    shm.base[e.chain_off - 1] != '\0' ||
		    shm.base[e.key_off - 1] != '\0' ||
		    shm.base[e.key_off + e.key_len] != '\0')
			return shm_take_fail(tk, "a string lacks its NUL");
		if (memchr(shm.base + e.id_off, '\0', e.id_len) != NULL)
			return shm_take_fail(tk, "an id holds a NUL");
		pr = &shm.prior[shm.nprior];
		pr->pr_at = e.id_off;
		pr->pr_id_len = e.id_len;
		pr->pr_names = e.key_off + e.key_len + 1;
		pr->pr_serial = e.serial;
		pr->pr_not_before = e.not_before;
		pr->pr_not_after = e.not_after;
		if (shm_index_find(&shm_prior_index, shm_prior_id(i), &pos))
			return shm_take_fail(tk, "an id appears twice");
		shm.nprior++;
		shm_index_add(&shm_prior_index, i);
	}
	return 0;
}

/* The tokens, their strings, and by_token pointing at them. */
static int
shm_take_tokens(struct shm_take *tk)
{
	const struct acme_shm_table	*t = &tk->img.by_token;
	struct acme_shm_token		 tok;
	struct acme_shm_bucket		 b;
	uint32_t			 i;

	if (tk->img.ntokens > (tk->hi - tk->lo) / sizeof(tok))
		return shm_take_fail(tk, "too many tokens");
	if (shm_take_range(tk, tk->img.tokens_off,
	    (uint64_t)tk->img.ntokens * sizeof(tok), SHM_FRONT) == -1 ||
	    shm_take_table(tk, t) == -1)
		return -1;
	for (i = 0; i < tk->img.ntokens; i++) {
		memcpy(&tok, shm.base + tk->img.tokens_off + i * sizeof(tok),
		    sizeof(tok));
		if (shm_take_string(tk, tok.token_off, tok.token_len,
		    SHM_FRONT) == -1 || shm_take_string(tk, tok.keyauth_off,
		    tok.keyauth_len, SHM_FRONT) == -1)
			return -1;
	}
	for (i = 0; i < t->nbuckets; i++) {
		shm_take_bucket(t, i, &b);
		if (b.key_len != 0 && shm_take_string(tk, b.key_off,
		    b.key_len, SHM_FRONT) == -1)
			return -1;
	}
	return 0;
}

/* The tls-alpn-01 certificates that by_alpn points at. */
static int
shm_take_alpns(struct shm_take *tk)
{
	const struct acme_shm_table	*t = &tk->img.by_alpn;
	struct acme_shm_bucket		 b;
	struct acme_shm_alpn		 a;
	uint32_t			 i;

	if (shm_take_table(tk, t) == -1)
		return -1;
	for (i = 0; i < t->nbuckets; i++) {
		shm_take_bucket(t, i, &b);
		if (b.key_len == 0)
			continue;
		if (shm_take_string(tk, b.key_off, b.key_len, SHM_FRONT) ==
		    -1 || shm_take_range(tk, b.value, sizeof(a),
		    SHM_FRONT) == -1)
			return -1;
		memcpy(&a, shm.base + b.value, sizeof(a));
		if (shm_take_string(tk, a.ident_off, a.ident_len,
		    SHM_FRONT) == -1 || shm_take_string(tk, a.cert_off,
		    a.cert_len, SHM_FRONT) == -1 || shm_take_string(tk,
		    a.key_off, a.key_len, SHM_FRONT) == -1)
			return -1;
	}
	return 0;
}

static int
shm_range_cmp(const void *a, const void *b)
{
	const struct shm_range	*x = a, *y = b;

	if (x->rg_off != y->rg_off)
		return x->rg_off < y->rg_off ? -1 : 1;
	return 0;
}

/*
 * Each certificate's names follow its key in its block, up to the next
 * range the image uses: the block's size follows, whole grains, and no
 * other range may overlap it.  The ranges are sorted.
 */
static int
shm_take_names(struct shm_take *tk)
{
	struct shm_range	*rg;
	struct shm_prior	*pr;
	uint64_t		 reach = tk->lo, limit, pos, block;
	const unsigned char	*nul;
	size_t			 i;

	for (i = 0; i < tk->nr; i++) {
		rg = &tk->r[i];
		if (rg->rg_owner == SHM_FRONT) {
			if (rg->rg_off + (uint64_t)rg->rg_len > reach)
				reach = rg->rg_off + (uint64_t)rg->rg_len;
			continue;
		}
		pr = &shm.prior[rg->rg_owner];
		limit = i + 1 < tk->nr ? tk->r[i + 1].rg_off : tk->hi;
		if (rg->rg_off < reach || limit < (uint64_t)rg->rg_off +
		    rg->rg_len)
			return shm_take_fail(tk, "a block overlaps another");
		for (pos = pr->pr_names; pos < limit && shm.base[pos] != 0;
		    pos = (uint64_t)(nul - shm.base) + 1)
			if ((nul = memchr(shm.base + pos, '\0',
			    limit - pos)) == NULL)
				return shm_take_fail(tk, "a name lacks its "
				    "NUL");
		block = shm_align_grain(pos - rg->rg_off);
		if (rg->rg_off + block > limit)
			return shm_take_fail(tk, "a block overlaps another");
		rg->rg_len = pr->pr_len = (uint32_t)block;
		reach = rg->rg_off + block;
	}
	return 0;
}

/* by_id and by_name point into the blocks of the entries they name. */
static int
shm_take_lookups(struct shm_take *tk)
{
	const struct shm_prior	*pr;
	struct acme_shm_bucket	 b;
	uint32_t		 i;

	for (i = 0; i < tk->img.by_id.nbuckets; i++) {
		shm_take_bucket(&tk->img.by_id, i, &b);
		if (b.key_len != 0 && (b.value >= shm.nprior ||
		    b.key_off != shm.prior[b.value].pr_at ||
		    b.key_len != shm.prior[b.value].pr_id_len))
			return shm_take_fail(tk, "by_id points astray");
	}
	for (i = 0; i < tk->img.by_name.nbuckets; i++) {
		shm_take_bucket(&tk->img.by_name, i, &b);
		if (b.key_len == 0)
			continue;
		if (b.value >= shm.nprior)
			return shm_take_fail(tk, "by_name points astray");
		pr = &shm.prior[b.value];
		if (!acme_shm_within(pr->pr_names, pr->pr_at + pr->pr_len,
		    b.key_off, (uint64_t)b.key_len + 1) ||
		    shm.base[b.key_off + b.key_len] != '\0')
			return shm_take_fail(tk, "by_name points astray");
	}
	return 0;
}

/*
 * Widen every range to whole grains: the heap hands out grains, and the
 * fronts written in a free extent must be 8-byte aligned (acme_shm_cert
 * holds 64-bit fields).  The image's arrays and tables end where their
 * last bucket does, and a planted image may put a block anywhere.
 */
static void
shm_take_grains(struct shm_take *tk)
{
	struct shm_range	*rg;
	uint64_t		 end;
	size_t			 i;

	for (i = 0; i < tk->nr; i++) {
		rg = &tk->r[i];
		end = shm_align_grain((uint64_t)rg->rg_off + rg->rg_len);
		if (end > tk->hi)
			end = tk->hi;
		rg->rg_off &= ~(uint32_t)(SHM_BLOCK_GRAIN - 1);
		rg->rg_len = (uint32_t)(end - rg->rg_off);
	}
}

/*
 * Every byte of the heap the image does not use is zeroed now and free;
 * what the front and the tokens use goes stale, wiped after our first
 * image; each block stays a prior block, until then too.
 */
static void
shm_take_heap(struct shm_take *tk)
{
	struct shm_heap		*hp = &shm.heap;
	const struct shm_range	*rg;
	uint32_t		 at = tk->lo, end;
	size_t			 i, j;

	shm_slots_forget(tk->lo, tk->lo);
	hp->sh_hi = tk->hi;
	shm_take_grains(tk);
	for (i = 0; i < tk->nr; i = j) {
		rg = &tk->r[i];
		end = rg->rg_off + rg->rg_len;
		for (j = i + 1; j < tk->nr && tk->r[j].rg_off < end; j++)
			if (tk->r[j].rg_off + tk->r[j].rg_len > end)
				end = tk->r[j].rg_off + tk->r[j].rg_len;
		if (rg->rg_off > at) {
			shm_zero(at, rg->rg_off - at);
			shm_heap_free(at, rg->rg_off - at);
		}
		if (rg->rg_owner == SHM_FRONT) {
			hp->sh_live += end - rg->rg_off;
			hp->sh_stale = xreallocarray(hp->sh_stale,
			    hp->sh_nstale + 1, sizeof(*hp->sh_stale));
			hp->sh_stale[hp->sh_nstale].se_off = rg->rg_off;
			hp->sh_stale[hp->sh_nstale].se_len = end - rg->rg_off;
			hp->sh_nstale++;
		}
		at = end;
	}
	if (tk->hi > at) {
		shm_zero(at, tk->hi - at);
		shm_heap_free(at, tk->hi - at);
	}
}

/*
 * Take up the image a previous run published in a zone of size bytes
 * (see above).  0: it stays published, its bytes marked; -1: the zone is
 * to be laid out again (logged).
 */
static int
shm_take_up(size_t size)
{
	struct acme_shm_header	 h;
	struct shm_take		 tk;
	size_t			 hsize = shm_align8(sizeof(h));
	size_t			 isize = sizeof(struct acme_shm_image);
	uint32_t		 slot;
	int			 s;

	memset(&tk, 0, sizeof(tk));
	memcpy(&h, shm.hdr, sizeof(h));
	slot = (uint32_t)((size - hsize - isize) & ~(size_t)7);
	tk.lo = (uint32_t)(hsize + 2 * isize);
	tk.hi = (uint32_t)(hsize + slot);
	s = (int)(h.generation % 2);
	if (h.generation == 0)
		return -1;		/* nothing to keep */
	if (h.size != size || h.slot_off[0] != hsize ||
	    h.slot_off[1] != hsize + isize || h.slot_size != slot)
		shm_take_fail(&tk, "its layout is not this writer's");
	else {
		memcpy(&tk.img, shm.base + h.slot_off[s], sizeof(tk.img));
		if (tk.img.magic != ACME_SHM_IMAGE_MAGIC ||
		    tk.img.generation != h.generation)
			shm_take_fail(&tk, "no image of its generation");
	}
	if (tk.why == NULL && shm_take_certs(&tk) == 0 &&
	    shm_take_table(&tk, &tk.img.by_id) == 0 &&
	    shm_take_table(&tk, &tk.img.by_name) == 0 &&
	    shm_take_tokens(&tk) == 0 && shm_take_alpns(&tk) == 0) {
		if (tk.nr > 0)
			qsort(tk.r, tk.nr, sizeof(*tk.r), shm_range_cmp);
		if (shm_take_names(&tk) == 0)
			shm_take_lookups(&tk);
	}
	if (tk.why != NULL) {
		log_warnx("shared zone %s: generation %llu left by a previous "
		    "run is not taken up (%s); laying the zone out again",
		    shm.path, (unsigned long long)h.generation, tk.why);
		free(tk.r);
		shm_prior_forget();
		return -1;
	}
	shm_take_heap(&tk);
	free(tk.r);
	/* The other image and the bytes past the heap: no reader's. */
	memset(shm.base + h.slot_off[1 - s], 0, isize);
	memset(shm.base + tk.hi, 0, size - tk.hi);
	shm.stats.ss_generation = h.generation;
	if (h.last_serial > shm.stats.ss_last_serial)
		shm.stats.ss_last_serial = h.last_serial;
	shm.prior_held = 1;
	log_info("shared zone %s: generation %llu left by a previous run "
	    "(%u certificates) stays published until the first image",
	    shm.path, (unsigned long long)h.generation, tk.img.ncerts);
	return 0;
}

/*
 * The staged sc has exactly the bytes of a prior block (id, issuer,
 * chain, key and names, dates too): it takes that block, and its serial,
 * instead of writing one.  Returns whether it did.
 */
static int
shm_prior_adopt(struct shm_cert *sc)
{
	struct shm_prior	*pr;
	const unsigned char	*p;
	uint32_t		 len;
	size_t			 i, k;

	if (shm.nprior == 0 ||
	    !shm_index_find(&shm_prior_index, sc->sc_id, &i))
		return 0;
	pr = &shm.prior[i];
	if (pr->pr_taken || pr->pr_len != shm_block_size(sc) ||
	    pr->pr_not_before != (int64_t)sc->sc_not_before ||
	    pr->pr_not_after != (int64_t)sc->sc_not_after)
		return 0;
	p = shm.base + pr->pr_at + sc->sc_id_len + 1;
	if (memcmp(p, sc->sc_issuer, sc->sc_issuer_len + 1) != 0)
		return 0;
	p += sc->sc_issuer_len + 1;
	if (memcmp(p, sc->sc_chain, sc->sc_chain_len + 1) != 0)
		return 0;
	p += sc->sc_chain_len + 1;
	if (memcmp(p, sc->sc_key, sc->sc_key_len + 1) != 0)
		return 0;
	p += sc->sc_key_len + 1;
	for (k = 0; k < sc->sc_nnames; k++) {
		len = (uint32_t)strlen(sc->sc_names[k]) + 1;
		if (memcmp(p, sc->sc_names[k], len) != 0)
			return 0;
		p += len;
	}
	for (; p < shm.base + pr->pr_at + pr->pr_len; p++)
		if (*p != 0)
			return 0;
	pr->pr_taken = 1;
	sc->sc_at = pr->pr_at;
	sc->sc_prior = i + 1;
	sc->sc_serial = pr->pr_serial;
	shm.heap.sh_live += pr->pr_len;
	shm.stats.ss_adopted++;
	return 1;
}

/*
 * Our first image is out: the prior blocks that no certificate took are
 * wiped and free.  Returns the bytes wiped.
 */
static uint64_t
shm_prior_drop(void)
{
	const struct shm_prior	*pr;
	uint64_t		 n = 0;
	size_t			 i;

	for (i = 0; i < shm.nprior; i++) {
		pr = &shm.prior[i];
		if (pr->pr_taken)
			continue;
		memset(shm.base + pr->pr_at, 0, pr->pr_len);
		shm_heap_free(pr->pr_at, pr->pr_len);
		n += pr->pr_len;
	}
	shm_prior_forget();
	return n;
}

/* The prior blocks no certificate took: room once they are wiped. */
static uint64_t
shm_prior_room(void)
{
	uint64_t	 n = 0;
	size_t		 i;

	for (i = 0; i < shm.nprior; i++)
		if (!shm.prior[i].pr_taken)
			n += shm.prior[i].pr_len;
	return n;
}

/* -------------------------------------------------------------- images */

/* Copy len bytes of s and a NUL to *pos; returns where they went. */
static uint32_t
shm_put_bytes(uint32_t *pos, const char *s, size_t len, uint32_t *lenp)
{
	uint32_t	 at = *pos;

	memcpy(shm.base + at, s, len);
	shm.base[at + len] = '\0';
	*pos += (uint32_t)len + 1;
	*lenp = (uint32_t)len;
	return at;
}

static uint32_t
shm_put_string(uint32_t *pos, const char *s, uint32_t *lenp)
{
	return shm_put_bytes(pos, s, strlen(s), lenp);
}

/* Where a string of len bytes lies in a block: see shm_write_block(). */
static uint32_t
shm_block_span(uint32_t *pos, size_t len, uint32_t *lenp)
{
	uint32_t	 at = *pos;

	*pos += (uint32_t)len + 1;
	*lenp = (uint32_t)len;
	return at;
}

/*
 * Insert a key already written at key_off; a key present is kept.
 * Returns the bucket, or SHM_NO_BUCKET when the key was present.
 */
static uint32_t
shm_table_put(const struct acme_shm_table *t, uint32_t key_off,
    uint32_t key_len, uint32_t value)
{
	struct acme_shm_bucket	*b;
	const unsigned char	*key = shm.base + key_off;
	uint32_t		 h, i, mask = t->nbuckets - 1;

	b = (struct acme_shm_bucket *)(shm.base + t->off);
	h = acme_shm_hash(key, key_len);
	for (i = h & mask;; i = (i + 1) & mask) {
		if (b[i].key_len == 0)
			break;
		if (b[i].hash == h && b[i].key_len == key_len &&
		    memcmp(shm.base + b[i].key_off, key, key_len) == 0)
			return SHM_NO_BUCKET;
	}
	b[i].hash = h;
	b[i].key_off = key_off;
	b[i].key_len = key_len;
	b[i].value = value;
	return i;
}

/*
 * sc's block at at: its id, issuer, chain, key and names, each followed
 * by a NUL, end to end, then zeros to the block's end.
 */
static void
shm_write_block(const struct shm_cert *sc, uint32_t at)
{
	uint32_t	 end = at + shm_block_size(sc), len;
	size_t		 i;

	shm_put_bytes(&at, sc->sc_id, sc->sc_id_len, &len);
	shm_put_bytes(&at, sc->sc_issuer, sc->sc_issuer_len, &len);
	shm_put_bytes(&at, sc->sc_chain, sc->sc_chain_len, &len);
	shm_put_bytes(&at, sc->sc_key, sc->sc_key_len, &len);
	for (i = 0; i < sc->sc_nnames; i++)
		shm_put_string(&at, sc->sc_names[i], &len);
	memset(shm.base + at, 0, end - at);
}

/*
 * Certificate i's entry, entry pos of the front pl lays out, pointing into
 * its block; returns where its names start in the block.
 */
static uint32_t
shm_fill_entry(const struct shm_plan *pl, size_t i, size_t pos)
{
	const struct shm_cert	*sc = &shm.certs[i];
	struct acme_shm_cert	*e;
	uint32_t		 at = sc->sc_at;

	e = (struct acme_shm_cert *)(shm.base + pl->certs_off) + pos;
	e->serial = sc->sc_serial;
	e->not_before = sc->sc_not_before;
	e->not_after = sc->sc_not_after;
	e->id_off = shm_block_span(&at, sc->sc_id_len, &e->id_len);
	e->issuer_off = shm_block_span(&at, sc->sc_issuer_len,
	    &e->issuer_len);
	e->chain_off = shm_block_span(&at, sc->sc_chain_len, &e->chain_len);
	e->key_off = shm_block_span(&at, sc->sc_key_len, &e->key_len);
	return at;
}

/*
 * Certificate i's entry (entry pos) in slot s and its keys, noting their
 * buckets.
 */
static void
shm_write_entry(const struct shm_plan *pl, int s, size_t i, size_t pos)
{
	struct shm_cert	*sc = &shm.certs[i];
	uint32_t	 at, len;
	size_t		 j;

	at = shm_fill_entry(pl, i, pos);
	sc->sc_id_bucket[s] = shm_table_put(&pl->by_id, sc->sc_at,
	    (uint32_t)sc->sc_id_len, (uint32_t)pos);
	sc->sc_name_buckets[s] = xreallocarray(sc->sc_name_buckets[s],
	    sc->sc_nnames, sizeof(*sc->sc_name_buckets[s]));
	for (j = 0; j < sc->sc_nnames; j++) {
		len = (uint32_t)strlen(sc->sc_names[j]);
		sc->sc_name_buckets[s][j] = shm_table_put(&pl->by_name, at,
		    len, (uint32_t)pos);
		at += len + 1;
	}
}

/* Point bucket n of table t (SHM_NO_BUCKET: none) at key_off. */
static uint64_t
shm_table_repoint(const struct acme_shm_table *t, uint32_t n,
    uint32_t key_off)
{
	struct acme_shm_bucket	*b;

	if (n == SHM_NO_BUCKET)
		return 0;
	b = (struct acme_shm_bucket *)(shm.base + t->off) + n;
	b->key_off = key_off;
	return sizeof(b->key_off);
}

/*
 * Certificate i has a new block in slot s, whose tables hold its keys
 * already (the same ids, in the same order, with the same names): its
 * entry is written again and its buckets pointed at the new block.
 * Returns the bytes written.
 */
static uint64_t
shm_patch_entry(const struct shm_plan *pl, int s, size_t i)
{
	const struct shm_cert	*sc = &shm.certs[i];
	uint64_t		 n = sizeof(struct acme_shm_cert);
	uint32_t		 at;
	size_t			 j;

	at = shm_fill_entry(pl, i, i);
	n += shm_table_repoint(&pl->by_id, sc->sc_id_bucket[s], sc->sc_at);
	for (j = 0; j < sc->sc_nnames; j++) {
		n += shm_table_repoint(&pl->by_name, sc->sc_name_buckets[s][j],
		    at);
		at += (uint32_t)strlen(sc->sc_names[j]) + 1;
	}
	return n;
}

static void
shm_write_token(const struct shm_plan *pl, uint32_t *pos, size_t i)
{
	struct acme_shm_token	*t;

	t = (struct acme_shm_token *)(shm.base + pl->tokens_off) + i;
	t->token_off = shm_put_string(pos, shm.tokens[i].st_token,
	    &t->token_len);
	t->keyauth_off = shm_put_string(pos, shm.tokens[i].st_keyauth,
	    &t->keyauth_len);
	shm_table_put(&pl->by_token, t->token_off, t->token_len, (uint32_t)i);
}

/*
 * One tls-alpn-01 certificate; the newest for a name goes into by_alpn
 * first (see shm_write_front()), and a key present is kept.
 */
static void
shm_write_alpn(const struct shm_plan *pl, uint32_t *pos, size_t i)
{
	const struct shm_alpn	*sa = &shm.alpns[i];
	struct acme_shm_alpn	*e;
	uint32_t		 at, off, len;

	at = pl->alpn_off + (uint32_t)(i * sizeof(*e));
	e = (struct acme_shm_alpn *)(shm.base + at);
	off = shm_put_string(pos, sa->sa_sni, &len);
	e->ident_off = shm_put_string(pos, sa->sa_ident, &e->ident_len);
	e->cert_off = shm_put_string(pos, sa->sa_cert, &e->cert_len);
	e->key_off = shm_put_string(pos, sa->sa_key, &e->key_len);
	shm_table_put(&pl->by_alpn, off, len, at);
}

/* Give certificate i a block, if it has none; -1: no room. */
static int
shm_place_cert(size_t i)
{
	struct shm_cert	*sc = &shm.certs[i];

	if (sc->sc_at != 0)
		return 0;
	if ((sc->sc_at = shm_heap_alloc(shm_block_size(sc))) == 0)
		return -1;
	shm.heap.sh_live += shm_block_size(sc);
	shm.placed = xreallocarray(shm.placed, shm.nplaced + 1,
	    sizeof(*shm.placed));
	shm.placed[shm.nplaced++] = i;
	return 0;
}

/* Give back the blocks shm_place() took, unwritten: the publish failed. */
static void
shm_unplace(void)
{
	struct shm_cert	*sc;
	size_t		 i;

	for (i = 0; i < shm.nplaced; i++) {
		sc = &shm.certs[shm.placed[i]];
		shm_heap_free(sc->sc_at, shm_block_size(sc));
		shm.heap.sh_live -= shm_block_size(sc);
		sc->sc_at = 0;
	}
	shm.nplaced = 0;
}

/*
 * Give a block to each certificate that has none, in free extents of the
 * heap; shm_write_placed() writes them.  Only the certificates replaced
 * since slot s was written can lack one when its tables are of this
 * shape (patched), any otherwise.  -1: a block found no room.
 */
static int
shm_place(int s, int patched)
{
	const struct shm_slot	*sl = &shm.slots[s];
	size_t			 i;

	shm.nplaced = 0;
	if (patched) {
		for (i = 0; i < sl->sl_nchanged; i++)
			if (shm_place_cert(sl->sl_changed[i]) == -1)
				return -1;
	} else {
		for (i = 0; i < shm.ncerts; i++)
			if (shm_place_cert(i) == -1)
				return -1;
	}
	return 0;
}

/*
 * Write the blocks shm_place() placed; from then on they hold the
 * certificates' chains and keys, and the model's copies go.  Returns
 * the bytes written.
 */
static uint64_t
shm_write_placed(void)
{
	struct shm_cert	*sc;
	uint64_t	 n = 0;
	size_t		 i;

	for (i = 0; i < shm.nplaced; i++) {
		sc = &shm.certs[shm.placed[i]];
		shm_write_block(sc, sc->sc_at);
		shm_cert_release(sc);
		n += shm_block_size(sc);
	}
	shm.nplaced = 0;
	return n;
}

/*
 * Point the entries and buckets of slot s at the new blocks of the
 * certificates replaced since it was written; its tables hold this
 * model's keys already.  Returns the bytes written.
 */
static uint64_t
shm_patch_changed(const struct shm_plan *pl, int s)
{
	const struct shm_slot	*sl = &shm.slots[s];
	uint64_t		 n = 0;
	size_t			 i;

	for (i = 0; i < sl->sl_nchanged; i++)
		n += shm_patch_entry(pl, s, sl->sl_changed[i]);
	return n;
}

/*
 * The front of the image in slot s: the entries and tables (unless
 * current: the slot's are this model's, as written or as patched), then
 * the tokens' part.
 * All of it is zeroed first, and what a longer front left after it: no
 * byte of a tls-alpn-01 key stays in an alignment gap.  held: the
 * certificates that have no block yet are left out.  Returns the bytes
 * written.
 */
static uint64_t
shm_write_front(const struct shm_plan *pl, int s, int current, int held)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint32_t	 start, end, pos;
	uint64_t	 written;
	size_t		 i, n = 0;

	start = current ? pl->tokens_part_off : pl->certs_off;
	end = pl->certs_off + (uint32_t)pl->front;
	memset(shm.base + start, 0, end - start);
	written = end - start;
	if (sl->sl_front_end > end) {
		memset(shm.base + end, 0, sl->sl_front_end - end);
		written += sl->sl_front_end - end;
	}
	sl->sl_front_end = end;
	sl->sl_tokens_part = pl->tokens_part_off;
	for (i = 0; !current && i < shm.ncerts; i++)
		if (!held || shm.certs[i].sc_at != 0)
			shm_write_entry(pl, s, i, n++);
	pos = pl->token_strings_off;
	for (i = 0; i < shm.ntokens; i++)
		shm_write_token(pl, &pos, i);
	pos = pl->alpn_strings_off;
	for (i = shm.nalpns; i > 0; i--)
		shm_write_alpn(pl, &pos, i - 1);
	return written;
}

/* The image of generation gen in slot s, whose front is written. */
static void
shm_write_image(const struct shm_plan *pl, int s, uint64_t gen,
    size_t ncerts)
{
	struct acme_shm_image	*img;

	img = (struct acme_shm_image *)(shm.base + shm.hdr->slot_off[s]);
	img->magic = ACME_SHM_IMAGE_MAGIC;
	img->used = shm_slot_used(s);
	img->generation = gen;
	img->ncerts = (uint32_t)ncerts;
	img->certs_off = pl->certs_off;
	img->ntokens = (uint32_t)shm.ntokens;
	img->tokens_off = pl->tokens_off;
	img->by_id = pl->by_id;
	img->by_name = pl->by_name;
	img->by_token = pl->by_token;
	img->by_alpn = pl->by_alpn;
}

static void
shm_set_full(int full, uint64_t front)
{
	struct acme_shm_header	*h = shm.hdr;

	if (full && !shm.full)
		log_warnx("shared zone %s is full: the images need about %llu "
		    "bytes (every certificate's strings once, and two fronts "
		    "of %llu) and the zone holds %u (acme_shared_zone size "
		    "%zu); nginx keeps generation %llu until it fits",
		    shm.path, (unsigned long long)(shm.cert_blocks +
		    2 * front), (unsigned long long)front,
		    shm.heap.sh_hi - shm.heap.sh_lo, shm.size,
		    (unsigned long long)shm.stats.ss_generation);
	else if (!full && shm.full)
		log_info("shared zone %s has room again", shm.path);
	shm.full = full;
	shm.stats.ss_full = full;
	atomic_store_explicit((_Atomic uint32_t *)&h->flags,
	    full ? ACME_SHM_FULL : 0, memory_order_relaxed);
}

/*
 * The tokens' part of slot s, once the published image no longer holds
 * a tls-alpn-01 key that it may hold.  Returns the bytes wiped.
 */
static uint64_t
shm_wipe_tokens(int s)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint32_t	 n;

	if (sl->sl_front_end <= sl->sl_tokens_part)
		return 0;
	n = sl->sl_front_end - sl->sl_tokens_part;
	memset(shm.base + sl->sl_tokens_part, 0, n);
	sl->sl_front_end = sl->sl_tokens_part;
	return n;
}

/* How many certificates have a block, and their names. */
static size_t
shm_certs_placed(size_t *nnames)
{
	size_t	 i, n = 0;

	*nnames = 0;
	for (i = 0; i < shm.ncerts; i++) {
		if (shm.certs[i].sc_at == 0)
			continue;
		n++;
		*nnames += shm.certs[i].sc_nnames;
	}
	return n;
}

/*
 * Whether the blocks still to be placed would fit in the heap's free
 * bytes once the stale blocks are wiped (holes aside).
 */
static int
shm_fits_after_wipe(void)
{
	const struct shm_heap	*hp = &shm.heap;
	uint64_t		 need = 0, room = hp->sh_free_bytes;
	size_t			 i;

	for (i = 0; i < hp->sh_nstale; i++)
		room += hp->sh_stale[i].se_len;
	room += shm_prior_room();
	for (i = 0; i < shm.ncerts; i++)
		if (shm.certs[i].sc_at == 0)
			need += shm_block_size(&shm.certs[i]);
	return need <= room;
}

/*
 * The bytes of the blocks an image points at: every certificate's, or
 * (held) those that have a block.
 */
static uint64_t
shm_image_blocks(int held)
{
	uint64_t	 n = 0;
	size_t		 i;

	if (!held)
		return shm.cert_blocks;
	for (i = 0; i < shm.ncerts; i++)
		if (shm.certs[i].sc_at != 0)
			n += shm_block_size(&shm.certs[i]);
	return n;
}

/*
 * Publish the model into the slot no reader of the published generation
 * looks at, with its front in that slot's extent of the heap; both
 * images point at the same blocks.  So a publish writes the front (or
 * the changed entries), the new blocks and the wipes, never a byte the
 * published image uses, and not every certificate.  held: the
 * certificates that have no block yet are left out (see
 * shm_publish_image()).  Returns the bytes written into the zone (wipes
 * included), or -1 when the heap has no room; *front is the front's
 * size.
 */
static int64_t
shm_publish_try(int held, uint64_t *front)
{
	struct acme_shm_header	*h = shm.hdr;
	struct shm_slot		*sl;
	struct shm_plan		 pl;
	uint64_t		 gen, written = 0;
	size_t			 ncerts = shm.ncerts, nnames = shm.nnames;
	int			 s, current, patched;

	gen = shm.stats.ss_generation + 1;
	s = (int)(gen % 2);
	sl = &shm.slots[s];
	if (held)
		ncerts = shm_certs_placed(&nnames);
	shm_plan(&pl, 0, ncerts, nnames);
	*front = pl.front;
	if (shm_front_room(s, pl.front, &written) == -1)
		return -1;
	shm_plan(&pl, sl->sl_front, ncerts, nnames);
	current = !held && sl->sl_version == shm.cert_version;
	patched = !held && sl->sl_shape == shm.shape_version;
	if (!held && !current && shm_place(s, patched) == -1) {
		shm_unplace();
		return -1;
	}
	written += shm_write_placed();
	if (!current && patched)
		written += shm_patch_changed(&pl, s);
	written += shm_write_front(&pl, s, current || patched, held);
	if (!current)
		shm.stats.ss_cert_writes++;
	/* An image held back is no model's: the next one is written whole. */
	sl->sl_version = held ? 0 : shm.cert_version;
	sl->sl_shape = held ? 0 : shm.shape_version;
	sl->sl_nchanged = 0;
	shm_write_image(&pl, s, gen, ncerts);

	h->last_serial = shm.stats.ss_last_serial;
	h->published = util_now();
	h->writer_pid = (uint32_t)getpid();
	atomic_store_explicit((_Atomic uint64_t *)&h->generation, gen,
	    memory_order_release);
	/*
	 * A reader still in the previous image sees the generation change
	 * and starts over; the fence keeps the wipes from being seen before
	 * the new generation.
	 */
	atomic_thread_fence(memory_order_release);
	written += shm_wipe_stale();
	written += shm_prior_drop();
	if (shm.alpn_gone)
		written += shm_wipe_tokens(1 - s);
	shm.alpn_gone = 0;
	shm.stats.ss_generation = gen;
	shm.stats.ss_used = shm_slot_used(s);
	shm.stats.ss_image_bytes = sizeof(struct acme_shm_image) + pl.front +
	    shm_image_blocks(held);
	shm.stats.ss_publishes++;
	log_debug("shared zone: generation %llu, %zu certificates, %zu "
	    "tokens, %zu tls-alpn-01, %u of %u bytes, %llu written%s",
	    (unsigned long long)gen, ncerts, shm.ntokens, shm.nalpns,
	    shm.stats.ss_used, h->slot_size, (unsigned long long)written,
	    held ? " (held back)" : current ? " (tokens only)" :
	    patched ? " (entries patched)" : "");
	return (int64_t)written;
}

/*
 * Publish the model; returns the bytes written, or -1.  When the heap
 * has no room, the blocks of certificates removed or replaced since the
 * published image may be what takes it: they can only be wiped once an
 * image that does not point at them is published.  So, if wiping them
 * would make room, an image of the certificates that have a block goes
 * first (those added or renewed since are missing from it for the
 * moment between two publishes), and the whole model after it.
 * Otherwise the published image stays, flagged full.
 */
static int64_t
shm_publish_image(void)
{
	int64_t		 w, held;
	uint64_t	 front;

	if (shm.base == NULL || shm_intact() == -1)
		return -1;
	/*
	 * An image replacing a previous run's has what start-up staged,
	 * not an empty model: a token may ask for it before the commit.
	 */
	if (shm.prior_held && shm.npending > 0)
		shm_commit();
	if ((w = shm_publish_try(0, &front)) == -1 &&
	    shm.heap.sh_nstale > 0 && shm_fits_after_wipe() &&
	    (held = shm_publish_try(1, &front)) != -1 &&
	    (w = shm_publish_try(0, &front)) != -1)
		w += held;
	if (w == -1) {
		shm.stats.ss_failures++;
		shm_set_full(1, front);
		return -1;
	}
	shm.dirty = 0;
	shm_set_full(0, front);
	return w;
}

static uint64_t
shm_thread_ns(void)
{
	struct timespec	 ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == -1)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

/*
 * What a publish costs is counted (bytes written, CPU time) because it
 * is paid for every change, renewals included, and grows with the zone's
 * content: /metrics shows it, scripts/bench/shortlived watches it.  CPU
 * time, not wall time, so that a preempted loop does not inflate it.
 */
int
shm_publish(void)
{
	uint64_t	 t0 = shm_thread_ns();
	int64_t		 written;

	written = shm_publish_image();
	shm.stats.ss_publish_ns += shm_thread_ns() - t0;
	if (written == -1)
		return -1;
	shm.stats.ss_bytes_written += (uint64_t)written;
	return 0;
}

void
shm_get_stats(struct shm_stats *st)
{
	*st = shm.stats;
	/* The header, both images' structs and what the heap holds. */
	if (shm.base != NULL) {
		st->ss_zone_size = shm.size;
		st->ss_zone_used = shm.size - shm.heap.sh_free_bytes;
	}
	st->ss_certs = shm.ncerts;
	st->ss_tokens = shm.ntokens;
	st->ss_alpns = shm.nalpns;
}

/* Drop the mapping; the file and what it holds stay for nginx. */
void
shm_close(void)
{
	size_t	 i;

	/* What the last turns of the loop changed still reaches nginx. */
	shm_commit();
	if (shm.dirty)
		shm_publish();
	if (shm.publish_ev != NULL)
		event_free(shm.publish_ev);
	if (shm.commit_ev != NULL)
		event_free(shm.commit_ev);
	if (shm.watch_ev != NULL)
		event_free(shm.watch_ev);
	shm_slots_forget(0, 0);
	shm_prior_forget();
	free(shm.heap.sh_free);
	free(shm.placed);
	for (i = 0; i < shm.ncerts; i++)
		shm_cert_clear(&shm.certs[i]);
	free(shm.certs);
	shm_index_clear(&shm_certs_index);
	for (i = 0; i < shm.ntokens; i++) {
		free(shm.tokens[i].st_token);
		free(shm.tokens[i].st_keyauth);
	}
	free(shm.tokens);
	for (i = 0; i < shm.nalpns; i++)
		shm_alpn_clear(&shm.alpns[i]);
	free(shm.alpns);
	if (shm.base != NULL)
		munmap(shm.base, shm.size);
	if (shm.fd != -1)
		close(shm.fd);
	free(shm.path);
	memset(&shm, 0, sizeof(shm));
	shm.fd = -1;
}
