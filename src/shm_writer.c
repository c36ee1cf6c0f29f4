/*
 * The shared-memory segment nginx reads: certificates, keys, pending
 * HTTP-01 tokens and tls-alpn-01 validation certificates.
 * proto/acme_shm.h is the layout and the reader's side of the protocol;
 * this file is the only writer.
 *
 * The daemon keeps a model (the certificates and tokens that should be
 * visible) and, when it changes, publishes a complete image of it into
 * the slot no reader of the current generation looks at, then bumps the
 * generation.  Publishing costs what changed, not what exists: each
 * certificate's strings (chain, key, names) lie in a block of the slot
 * that stays in place while the certificate is unchanged, so an image
 * reuses the blocks its slot already holds and writes only new ones,
 * and the tokens.  While the ids, their order and their names stay as
 * they were in that slot, only the changed certificates' entries and
 * buckets are written again; otherwise all entries and hash tables are
 * (tens of bytes a certificate).  Blocks of removed or replaced
 * certificates are wiped, in the slot being written at once and in the
 * other once the new image is published; a slot is laid out afresh only
 * when its free room is too fragmented (struct shm_slot, SHM_HOLES_MIN).
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
 * is not left without an image until the next renewal.  What remains is
 * a truncation landing between that check and the last byte a publish
 * writes: a window of a few microseconds (a memcpy of an image) that
 * only a process already able to write the file can aim at.
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
	char		*sc_chain;
	char		*sc_key;	/* PEM; wiped when freed */
	time_t		 sc_not_before;
	time_t		 sc_not_after;
	uint64_t	 sc_serial;
	size_t		 sc_id_len;	/* strlen, kept: a publish lays out */
	size_t		 sc_issuer_len;	/* the entries of every certificate */
	size_t		 sc_chain_len;
	size_t		 sc_key_len;
	size_t		 sc_strings;	/* bytes of its strings, NULs too */
	uint32_t	 sc_at[2];	/* its block in each slot; 0: none */
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
 * written: the image, the certificates' entries and tables, then the
 * tokens' part (tokens, then tls-alpn-01 certificates, each with their
 * strings).  The certificates' strings are not in it: they lie in blocks
 * behind the front (struct shm_slot).  A slot whose entries are current
 * takes new tokens without the entries being written again.
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
	uint64_t	 front;			/* bytes, from the slot start */
	uint64_t	 strings;		/* all certificates' blocks */
};

/* Bytes of a slot, offsets from the file start. */
struct shm_extent {
	uint32_t	 se_off;
	uint32_t	 se_len;
};

/*
 * What the writer knows of one slot.  Its front (struct shm_plan) is
 * rebuilt as the model changes.  Behind it, from sl_heap on, each
 * certificate's strings lie in one block (sc_at) that stays in place for
 * as long as the certificate does not change, so an image reuses the
 * blocks its slot already holds and writes only the new ones.  sl_free
 * is the heap's free extents (zero bytes), sorted and coalesced;
 * sl_stale the blocks of certificates removed or replaced since, wiped
 * once no published image points at them.  sl_heap 0: nothing is known
 * of the slot (a new layout, a file we adopted) and the next image in it
 * is laid out afresh.
 */
struct shm_slot {
	uint32_t	 sl_used;	/* bytes past it are all zero */
	uint32_t	 sl_front_end;	/* of the front written last */
	uint32_t	 sl_tokens_part;	/* where its tokens' part is */
	uint32_t	 sl_heap;
	uint64_t	 sl_version;	/* cert_version of its entries */
	uint64_t	 sl_shape;	/* shape_version of its tables */
	uint64_t	 sl_live;	/* bytes of the blocks in use */
	uint64_t	 sl_free_bytes;
	struct shm_extent *sl_free;
	size_t		 sl_nfree;
	struct shm_extent *sl_stale;
	size_t		 sl_nstale;
	size_t		*sl_changed;	/* certs replaced since, same shape */
	size_t		 sl_nchanged;
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

static struct shm_index	shm_certs_index = { .si_id = shm_cert_id };
static struct shm_index	shm_pending_index = { .si_id = shm_pending_id };

static void	shm_changed(void);
static void	shm_commit_cb(int, short, void *);

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
 * Forget what the slots hold: after a new layout, which zeroed them, or
 * before adopting a file, whose slots a previous writer laid out.
 */
static void
shm_slots_forget(void)
{
	size_t	 i;
	int	 s;

	for (s = 0; s < 2; s++) {
		free(shm.slots[s].sl_free);
		free(shm.slots[s].sl_stale);
		free(shm.slots[s].sl_changed);
		memset(&shm.slots[s], 0, sizeof(shm.slots[s]));
	}
	for (i = 0; i < shm.ncerts; i++)
		shm.certs[i].sc_at[0] = shm.certs[i].sc_at[1] = 0;
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

/* Whether the header found in the file describes the layout we want. */
static int
shm_layout_ok(const struct acme_shm_header *h, size_t size)
{
	size_t	 slot = (size - shm_align8(sizeof(*h))) / 2 & ~(size_t)7;

	return h->magic == ACME_SHM_MAGIC &&
	    h->version == ACME_SHM_VERSION &&
	    h->size == size && h->header_size == sizeof(*h) &&
	    h->slot_size == slot &&
	    h->slot_off[0] == shm_align8(sizeof(*h)) &&
	    h->slot_off[1] == h->slot_off[0] + slot;
}

/*
 * Lay the header out again, wiping what the old layout held (old keys
 * included).  Generation 0 first, so that a reader that started before
 * sees its generation change and starts over; the next generation
 * continues the old one, so none is ever reused.
 */
static void
shm_layout(size_t size, size_t old_size)
{
	struct acme_shm_header	*h = shm.hdr;
	uint64_t		 gen = 0;
	size_t			 slot, hsize = shm_align8(sizeof(*h));

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
		memset(shm.base + hsize, 0, old_size - hsize);
	slot = (size - hsize) / 2 & ~(size_t)7;
	h->magic = ACME_SHM_MAGIC;
	h->version = ACME_SHM_VERSION;
	h->size = (uint32_t)size;
	h->header_size = sizeof(*h);
	h->slot_off[0] = (uint32_t)hsize;
	h->slot_off[1] = (uint32_t)(hsize + slot);
	h->slot_size = (uint32_t)slot;
	h->flags = 0;
	memset(h->reserved, 0, sizeof(h->reserved));
	shm.stats.ss_generation = gen;
	shm_slots_forget();
}

/*
 * How far each slot of a file we keep may hold bytes: the first image
 * in a slot lays it out afresh and wipes what lies past it, and the
 * first publish wipes the other slot whole.
 */
static void
shm_adopt(void)
{
	const struct acme_shm_image	*img;
	int				 s;

	shm.stats.ss_generation = shm.hdr->generation;
	shm.stats.ss_last_serial = shm.hdr->last_serial;
	shm_slots_forget();
	for (s = 0; s < 2; s++) {
		img = (const struct acme_shm_image *)
		    (shm.base + shm.hdr->slot_off[s]);
		shm.slots[s].sl_used = img->magic == ACME_SHM_IMAGE_MAGIC &&
		    img->used <= shm.hdr->slot_size ? img->used :
		    shm.hdr->slot_size;
	}
}

/*
 * Put back the size of a file someone cut (see the top of this file),
 * keeping our own generation and serials: whatever the header held
 * before the cut is no longer ours to believe.
 */
static int
shm_restore(const struct stat *st)
{
	uint64_t	 gen = shm.stats.ss_generation;
	uint64_t	 serial = shm.stats.ss_last_serial;

	log_warnx("shared zone %s was truncated to %lld bytes, under its %zu: "
	    "someone able to write it cut it; putting its size back and "
	    "publishing everything again", shm.path, (long long)st->st_size,
	    shm.size);
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
	if (shm_layout_ok(shm.hdr, size))
		shm_adopt();
	else
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
	log_info("shared zone %s: %zu bytes, %u per image", path, size,
	    shm.hdr->slot_size);
	shm_changed();		/* publish at start-up, whatever is loaded */
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
 * sc's content leaves the model: its block in each slot goes stale, to
 * be wiped once no published image points at it (shm_publish_image()).
 */
static void
shm_cert_stale(struct shm_cert *sc)
{
	struct shm_slot	*sl;
	int		 s;

	shm.cert_blocks -= shm_block_size(sc);
	for (s = 0; s < 2; s++) {
		if (sc->sc_at[s] == 0)
			continue;
		sl = &shm.slots[s];
		sl->sl_stale = xreallocarray(sl->sl_stale, sl->sl_nstale + 1,
		    sizeof(*sl->sl_stale));
		sl->sl_stale[sl->sl_nstale].se_off = sc->sc_at[s];
		sl->sl_stale[sl->sl_nstale].se_len = shm_block_size(sc);
		sl->sl_nstale++;
		sc->sc_at[s] = 0;
	}
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

/* Certificate i got new content: each slot is to give it a new block. */
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
	} else if (strcmp(sc->sc_chain, next->sc_chain) == 0 &&
	    strcmp(sc->sc_key, next->sc_key) == 0)
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
	sc->sc_serial = shm_next_serial();
	sc->sc_strings = shm_cert_strings(sc);
	shm.cert_blocks += shm_block_size(sc);
	shm.nnames += sc->sc_nnames;
	next->sc_issuer = next->sc_chain = next->sc_key = NULL;
	next->sc_names = NULL;
	next->sc_nnames = 0;
	shm.cert_version++;
}

/* Apply every staged change to the model, in order. */
static void
shm_commit(void)
{
	struct shm_pending	*sp;
	uint64_t		 version = shm.cert_version;
	size_t			 i;

	for (i = 0; i < shm.npending; i++) {
		sp = &shm.pending[i];
		if (sp->sp_remove)
			shm_apply_remove(sp->sp_cert.sc_id);
		else
			shm_apply_set(&sp->sp_cert);
		shm_cert_clear(&sp->sp_cert);
	}
	free(shm.pending);
	shm.pending = NULL;
	shm.npending = shm.pending_cap = 0;
	shm_index_clear(&shm_pending_index);
	if (shm.cert_version != version)
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

	if (shm_index_find(&shm_pending_index, sc->sc_id, &i)) {
		/* The later change wins, in the place of the first. */
		sp = &shm.pending[i];
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
	sc.sc_chain = xstrdup(chain);
	sc.sc_key = xstrdup(key_pem);
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
 * Room left between the front and the heap when a slot is laid out
 * afresh, so that certificates, tokens and tls-alpn-01 certificates can
 * be added without every block moving: a quarter of the front and
 * SHM_SLACK_MIN more, at most half of what the slot has spare.
 */
#define SHM_SLACK_MIN		(64 * 1024)

/*
 * A slot is laid out afresh, every block written again, when its heap
 * has more than SHM_MAX_HOLES free extents, or when the free bytes
 * between its blocks (the free end of the slot not counted) exceed both
 * SHM_HOLES_MIN and a quarter of the bytes the blocks hold: one full copy
 * now and then, rather than ever more room lost and ever longer searches
 * for a free extent.
 */
#define SHM_HOLES_MIN		(64 * 1024)
#define SHM_MAX_HOLES		4096

/* Where slot s ends, from the file start. */
static uint32_t
shm_slot_end(int s)
{
	return shm.hdr->slot_off[s] + shm.hdr->slot_size;
}

/*
 * Where the front of the next image goes in the slot at so.  Offsets
 * are from the file start, as readers want them; front and strings are
 * the bytes the image needs, which the caller compares with the slot
 * size.  The plan depends on nothing but the model, so the entries of a
 * slot written from the same cert_version are where this plan puts them.
 */
static void
shm_plan(struct shm_plan *pl, uint32_t so)
{
	uint64_t	 off, strings = 0;
	size_t		 i;

	memset(pl, 0, sizeof(*pl));
	off = sizeof(struct acme_shm_image);
	pl->certs_off = so + (uint32_t)off;
	off += (uint64_t)shm.ncerts * sizeof(struct acme_shm_cert);
	pl->by_id.nbuckets = shm_buckets_for(shm.ncerts);
	pl->by_id.off = so + (uint32_t)off;
	off += (uint64_t)pl->by_id.nbuckets * sizeof(struct acme_shm_bucket);
	pl->by_name.nbuckets = shm_buckets_for(shm.nnames);
	pl->by_name.off = so + (uint32_t)off;
	off += (uint64_t)pl->by_name.nbuckets * sizeof(struct acme_shm_bucket);
	pl->strings = shm.cert_blocks;

	pl->tokens_part_off = so + (uint32_t)off;
	pl->tokens_off = pl->tokens_part_off;
	off += (uint64_t)shm.ntokens * sizeof(struct acme_shm_token);
	pl->by_token.nbuckets = shm_buckets_for(shm.ntokens);
	pl->by_token.off = so + (uint32_t)off;
	off += (uint64_t)pl->by_token.nbuckets * sizeof(struct acme_shm_bucket);
	pl->token_strings_off = so + (uint32_t)off;
	for (i = 0; i < shm.ntokens; i++)
		strings += strlen(shm.tokens[i].st_token) + 1 +
		    strlen(shm.tokens[i].st_keyauth) + 1;
	off = shm_align8(off + strings);

	pl->alpn_off = so + (uint32_t)off;
	off += (uint64_t)shm.nalpns * sizeof(struct acme_shm_alpn);
	pl->by_alpn.nbuckets = shm_buckets_for(shm.nalpns);
	pl->by_alpn.off = so + (uint32_t)off;
	off += (uint64_t)pl->by_alpn.nbuckets * sizeof(struct acme_shm_bucket);
	pl->alpn_strings_off = so + (uint32_t)off;
	strings = 0;
	for (i = 0; i < shm.nalpns; i++)
		strings += strlen(shm.alpns[i].sa_sni) + 1 +
		    strlen(shm.alpns[i].sa_ident) + 1 +
		    strlen(shm.alpns[i].sa_cert) + 1 +
		    strlen(shm.alpns[i].sa_key) + 1;
	/* Checked against the slot before any uint32_t offset is used. */
	pl->front = shm_align8(off + strings);
}

/* ---------------------------------------------------------------- heap */

/* The bytes of the free extent that ends the slot at end, if any. */
static uint64_t
shm_heap_tail(const struct shm_slot *sl, uint32_t end)
{
	const struct shm_extent	*f;

	if (sl->sl_nfree == 0)
		return 0;
	f = &sl->sl_free[sl->sl_nfree - 1];
	return f->se_off + f->se_len == end ? f->se_len : 0;
}

/* Give [off, off + len), zeroed, back to the heap of sl. */
static void
shm_heap_free(struct shm_slot *sl, uint32_t off, uint32_t len)
{
	struct shm_extent	*f = sl->sl_free;
	size_t			 lo = 0, hi = sl->sl_nfree, mid;

	while (lo < hi) {		/* lo: the first extent past off */
		mid = lo + (hi - lo) / 2;
		if (f[mid].se_off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	sl->sl_free_bytes += len;
	if (lo > 0 && f[lo - 1].se_off + f[lo - 1].se_len == off) {
		f[lo - 1].se_len += len;
		if (lo < sl->sl_nfree && off + len == f[lo].se_off) {
			f[lo - 1].se_len += f[lo].se_len;
			memmove(&f[lo], &f[lo + 1],
			    (sl->sl_nfree - lo - 1) * sizeof(*f));
			sl->sl_nfree--;
		}
		return;
	}
	if (lo < sl->sl_nfree && off + len == f[lo].se_off) {
		f[lo].se_off = off;
		f[lo].se_len += len;
		return;
	}
	sl->sl_free = f = xreallocarray(f, sl->sl_nfree + 1, sizeof(*f));
	memmove(&f[lo + 1], &f[lo], (sl->sl_nfree - lo) * sizeof(*f));
	f[lo].se_off = off;
	f[lo].se_len = len;
	sl->sl_nfree++;
}

/*
 * len bytes from the first free extent of sl that holds them, lowest
 * first so that the heap stays compact; 0 when none does.
 */
static uint32_t
shm_heap_alloc(struct shm_slot *sl, uint32_t len)
{
	struct shm_extent	*f = sl->sl_free;
	uint32_t		 at;
	size_t			 i;

	for (i = 0; i < sl->sl_nfree; i++) {
		if (f[i].se_len < len)
			continue;
		at = f[i].se_off;
		f[i].se_off += len;
		f[i].se_len -= len;
		if (f[i].se_len == 0) {
			memmove(&f[i], &f[i + 1],
			    (sl->sl_nfree - i - 1) * sizeof(*f));
			sl->sl_nfree--;
		}
		sl->sl_free_bytes -= len;
		return at;
	}
	return 0;
}

/* How many bytes of slot s may be other than zero: its image's used. */
static uint32_t
shm_slot_used(int s)
{
	const struct shm_slot	*sl = &shm.slots[s];
	uint32_t		 so = shm.hdr->slot_off[s];
	uint32_t		 end = shm_slot_end(s);
	uint32_t		 top = sl->sl_front_end, heap_top;

	if (sl->sl_live > 0) {
		heap_top = end - (uint32_t)shm_heap_tail(sl, end);
		if (heap_top > top)
			top = heap_top;
	}
	return top > so ? top - so : 0;
}

/*
 * Wipe the stale blocks of slot s, at which no published image points
 * any more, and give their room back.  Returns the bytes wiped.
 */
static uint64_t
shm_wipe_stale(int s)
{
	struct shm_slot		*sl = &shm.slots[s];
	const struct shm_extent	*x;
	uint64_t		 n = 0;
	size_t			 i;

	for (i = 0; i < sl->sl_nstale; i++) {
		x = &sl->sl_stale[i];
		memset(shm.base + x->se_off, 0, x->se_len);
		shm_heap_free(sl, x->se_off, x->se_len);
		sl->sl_live -= x->se_len;
		n += x->se_len;
	}
	free(sl->sl_stale);
	sl->sl_stale = NULL;
	sl->sl_nstale = 0;
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
 * Certificate i's entry in slot s, pointing into its block there;
 * returns where its names start in the block.
 */
static uint32_t
shm_fill_entry(const struct shm_plan *pl, int s, size_t i)
{
	const struct shm_cert	*sc = &shm.certs[i];
	struct acme_shm_cert	*e;
	uint32_t		 at = sc->sc_at[s];

	e = (struct acme_shm_cert *)(shm.base + pl->certs_off) + i;
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

/* Certificate i's entry in slot s and its keys, noting their buckets. */
static void
shm_write_entry(const struct shm_plan *pl, int s, size_t i)
{
	struct shm_cert	*sc = &shm.certs[i];
	uint32_t	 at, len;
	size_t		 j;

	at = shm_fill_entry(pl, s, i);
	sc->sc_id_bucket[s] = shm_table_put(&pl->by_id, sc->sc_at[s],
	    (uint32_t)sc->sc_id_len, (uint32_t)i);
	sc->sc_name_buckets[s] = xreallocarray(sc->sc_name_buckets[s],
	    sc->sc_nnames, sizeof(*sc->sc_name_buckets[s]));
	for (j = 0; j < sc->sc_nnames; j++) {
		len = (uint32_t)strlen(sc->sc_names[j]);
		sc->sc_name_buckets[s][j] = shm_table_put(&pl->by_name, at,
		    len, (uint32_t)i);
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

	at = shm_fill_entry(pl, s, i);
	n += shm_table_repoint(&pl->by_id, sc->sc_id_bucket[s], sc->sc_at[s]);
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

/* Give certificate i a block in slot s, if it has none; -1: no room. */
static int
shm_place_cert(int s, size_t i)
{
	struct shm_slot	*sl = &shm.slots[s];
	struct shm_cert	*sc = &shm.certs[i];

	if (sc->sc_at[s] != 0)
		return 0;
	if ((sc->sc_at[s] = shm_heap_alloc(sl, shm_block_size(sc))) == 0)
		return -1;
	sl->sl_live += shm_block_size(sc);
	shm.placed = xreallocarray(shm.placed, shm.nplaced + 1,
	    sizeof(*shm.placed));
	shm.placed[shm.nplaced++] = i;
	return 0;
}

/*
 * Place in slot s the blocks of the certificates it does not hold, in
 * free extents of its heap; shm_write_placed() writes them.  Those are
 * the ones replaced since the slot was written when its tables are of
 * this shape (patched), else any.  -1: the slot is to be laid out
 * afresh, as nothing is known of it, its front outgrew its room, a block
 * found no room or the heap is too fragmented.
 */
static int
shm_place(int s, const struct shm_plan *pl, int patched)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint64_t	 holes;
	size_t		 i;

	shm.nplaced = 0;
	if (sl->sl_heap == 0 || shm.hdr->slot_off[s] + pl->front > sl->sl_heap)
		return -1;
	if (patched) {
		for (i = 0; i < sl->sl_nchanged; i++)
			if (shm_place_cert(s, sl->sl_changed[i]) == -1)
				return -1;
	} else {
		for (i = 0; i < shm.ncerts; i++)
			if (shm_place_cert(s, i) == -1)
				return -1;
	}
	holes = sl->sl_free_bytes - shm_heap_tail(sl, shm_slot_end(s));
	if (sl->sl_nfree > SHM_MAX_HOLES ||
	    (holes > SHM_HOLES_MIN && holes > sl->sl_live / 4))
		return -1;
	return 0;
}

/*
 * Write the blocks shm_place() placed in slot s, and with pl (the slot's
 * tables hold this model's keys) patch their entries; returns the bytes.
 */
static uint64_t
shm_write_placed(int s, const struct shm_plan *pl)
{
	struct shm_cert	*sc;
	uint64_t	 n = 0;
	size_t		 i;

	for (i = 0; i < shm.nplaced; i++) {
		sc = &shm.certs[shm.placed[i]];
		shm_write_block(sc, sc->sc_at[s]);
		n += shm_block_size(sc);
		if (pl != NULL)
			n += shm_patch_entry(pl, s, shm.placed[i]);
	}
	shm.nplaced = 0;
	return n;
}

/*
 * Lay slot s out afresh: the front (the caller's), room for it to grow,
 * then every certificate's block end to end, and zeros over whatever
 * else the slot held.  Returns the bytes written, wipes included.
 */
static uint64_t
shm_repack(int s, const struct shm_plan *pl)
{
	struct shm_slot	*sl = &shm.slots[s];
	struct shm_cert	*sc;
	uint32_t	 so = shm.hdr->slot_off[s], end = shm_slot_end(s);
	uint32_t	 front = so + (uint32_t)pl->front, old, heap, pos;
	uint64_t	 spare, slack, written = 0;
	size_t		 i;

	spare = shm.hdr->slot_size - pl->front - pl->strings;
	slack = pl->front / 4 + SHM_SLACK_MIN;
	if (slack > spare / 2)
		slack = spare / 2;
	heap = so + (uint32_t)((pl->front + slack) & ~(uint64_t)7);
	/* The front zeroes its own bytes; the room after it may hold keys. */
	old = so + sl->sl_used;
	if (old > front) {
		memset(shm.base + front, 0, (old < heap ? old : heap) - front);
		written += (old < heap ? old : heap) - front;
	}
	pos = heap;
	for (i = 0; i < shm.ncerts; i++) {
		sc = &shm.certs[i];
		sc->sc_at[s] = pos;
		shm_write_block(sc, pos);
		pos += shm_block_size(sc);
	}
	written += pos - heap;
	if (old > pos) {
		memset(shm.base + pos, 0, old - pos);
		written += old - pos;
	}
	/* Stale blocks were in what was just overwritten or zeroed. */
	free(sl->sl_stale);
	sl->sl_stale = NULL;
	sl->sl_nstale = 0;
	sl->sl_nfree = 0;
	sl->sl_free_bytes = 0;
	if (pos < end)
		shm_heap_free(sl, pos, end - pos);
	sl->sl_heap = heap;
	sl->sl_live = pos - heap;
	sl->sl_front_end = front;
	shm.stats.ss_repacks++;
	return written;
}

/*
 * The front of the image in slot s: the entries and tables (unless
 * current: the slot's are this model's, as written or as patched), then
 * the tokens' part.
 * All of it is zeroed first, and what a longer front left after it: no
 * byte of a tls-alpn-01 key stays in an alignment gap.  Returns the
 * bytes written.
 */
static uint64_t
shm_write_front(const struct shm_plan *pl, int s, int current)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint32_t	 so = shm.hdr->slot_off[s], start, end, pos;
	uint64_t	 written;
	size_t		 i;

	start = current ? pl->tokens_part_off : so;
	end = so + (uint32_t)pl->front;
	memset(shm.base + start, 0, end - start);
	written = end - start;
	if (sl->sl_front_end > end) {
		memset(shm.base + end, 0, sl->sl_front_end - end);
		written += sl->sl_front_end - end;
	}
	sl->sl_front_end = end;
	sl->sl_tokens_part = pl->tokens_part_off;
	if (!current)
		for (i = 0; i < shm.ncerts; i++)
			shm_write_entry(pl, s, i);
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
shm_write_image(const struct shm_plan *pl, int s, uint64_t gen)
{
	struct acme_shm_image	*img;

	img = (struct acme_shm_image *)(shm.base + shm.hdr->slot_off[s]);
	img->magic = ACME_SHM_IMAGE_MAGIC;
	img->used = shm.slots[s].sl_used;
	img->generation = gen;
	img->ncerts = (uint32_t)shm.ncerts;
	img->certs_off = pl->certs_off;
	img->ntokens = (uint32_t)shm.ntokens;
	img->tokens_off = pl->tokens_off;
	img->by_id = pl->by_id;
	img->by_name = pl->by_name;
	img->by_token = pl->by_token;
	img->by_alpn = pl->by_alpn;
}

static void
shm_set_full(int full, const struct shm_plan *pl)
{
	struct acme_shm_header	*h = shm.hdr;

	if (full && !shm.full)
		log_warnx("shared zone %s is full: the image needs %llu "
		    "bytes and a slot holds %u (acme_shared_zone size %zu); "
		    "nginx keeps generation %llu until it fits", shm.path,
		    (unsigned long long)(pl->front + pl->strings),
		    h->slot_size, shm.size,
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

/*
 * Once a newer image is published, what slot s (the previous one's)
 * holds that the model lost goes: blocks of certificates removed or
 * replaced, and the tokens' part when a tls-alpn-01 key left.  What is
 * unchanged stays, for the next image in the slot to reuse.  A slot
 * nothing is known of (a file we adopted) is wiped whole.  Returns the
 * bytes wiped.
 */
static uint64_t
shm_wipe_previous(int s)
{
	struct shm_slot	*sl = &shm.slots[s];
	uint64_t	 n;

	if (sl->sl_heap == 0) {
		n = sl->sl_used;
		memset(shm.base + shm.hdr->slot_off[s], 0, n);
		sl->sl_used = 0;
		return n;
	}
	n = shm_wipe_stale(s);
	if (shm.alpn_gone)
		n += shm_wipe_tokens(s);
	sl->sl_used = shm_slot_used(s);
	return n;
}

/*
 * Publish the model; returns the bytes it wrote into the zone (wipes
 * included), or -1.  The new image goes into the slot no reader of the
 * published generation looks at, reusing the blocks of the certificates
 * that slot already holds unchanged: a publish writes the front, the new
 * blocks and the wipes, not every certificate.
 */
static int64_t
shm_publish_image(void)
{
	struct acme_shm_header	*h = shm.hdr;
	struct shm_slot		*sl;
	struct shm_plan		 pl;
	uint64_t		 gen, written;
	int			 s, current, patched, packed = 0;

	if (shm.base == NULL || shm_intact() == -1)
		return -1;
	gen = shm.stats.ss_generation + 1;
	s = (int)(gen % 2);
	sl = &shm.slots[s];
	shm_plan(&pl, h->slot_off[s]);
	if (pl.front + pl.strings > h->slot_size) {
		shm.stats.ss_failures++;
		shm_set_full(1, &pl);
		return -1;
	}
	written = shm_wipe_stale(s);
	current = sl->sl_heap != 0 && sl->sl_version == shm.cert_version;
	patched = sl->sl_shape == shm.shape_version;
	if (current)
		;
	else if (shm_place(s, &pl, patched) == 0)
		written += shm_write_placed(s, patched ? &pl : NULL);
	else {
		written += shm_repack(s, &pl);
		packed = 1;
		patched = 0;
	}
	written += shm_write_front(&pl, s, current || patched);
	if (!current)
		shm.stats.ss_cert_writes++;
	sl->sl_version = shm.cert_version;
	sl->sl_shape = shm.shape_version;
	sl->sl_nchanged = 0;
	sl->sl_used = shm_slot_used(s);
	shm_write_image(&pl, s, gen);

	h->last_serial = shm.stats.ss_last_serial;
	h->published = util_now();
	h->writer_pid = (uint32_t)getpid();
	atomic_store_explicit((_Atomic uint64_t *)&h->generation, gen,
	    memory_order_release);
	/*
	 * A reader still in the previous image sees the generation change
	 * and starts over; the fence keeps the wipe from being seen before
	 * the new generation.
	 */
	atomic_thread_fence(memory_order_release);
	written += shm_wipe_previous(1 - s);
	shm.alpn_gone = 0;
	shm.dirty = 0;
	shm.stats.ss_generation = gen;
	shm.stats.ss_used = sl->sl_used;
	shm.stats.ss_publishes++;
	shm_set_full(0, &pl);
	log_debug("shared zone: generation %llu, %zu certificates, %zu "
	    "tokens, %zu tls-alpn-01, %u of %u bytes, %llu written%s",
	    (unsigned long long)gen, shm.ncerts, shm.ntokens, shm.nalpns,
	    sl->sl_used, h->slot_size, (unsigned long long)written,
	    current ? " (tokens only)" : patched ? " (entries patched)" :
	    packed ? " (laid out afresh)" : "");
	return (int64_t)written;
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
	shm_slots_forget();
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
