/*
 * acme_shm.h: the shared-memory segment that acme-sidecar writes and
 * nginx reads.  This header is a contract: the daemon, the nginx module
 * and the tests include it, and src/njs/acme.js reads the same bytes.
 *
 * WHERE
 *	A regular file on tmpfs, "/dev/shm/<zone name>" unless
 *	"acme_shared_zone zone=NAME:SIZE path=FILE" says otherwise.  Mode
 *	0640, group of the nginx workers: it holds private keys.  The writer
 *	never shrinks it (a reader touching a page past a truncated end dies
 *	with SIGBUS); it may grow it across a restart with a larger SIZE, so
 *	a reader compares header.size with what it mapped and remaps.  A
 *	reader also compares the file's size (fstat) with what it maps
 *	before each lookup, and uses nothing while the file is shorter; the
 *	writer checks the size before each publish and puts it back.
 *
 *	/dev/shm is writable by everyone, so what a reader finds at the
 *	path may have been planted.  A reader opens it with O_NONBLOCK and
 *	O_NOFOLLOW and uses it only if it is a regular file with one link,
 *	not writable by group or others, owned by root or by the user that
 *	"owner=USER" names.  The writer creates the file with O_EXCL; it
 *	takes up an existing one only under the same rules and with this
 *	header's magic and version, and refuses to start otherwise, leaving
 *	the file as it is.  In one it takes up, the published image stays
 *	published (same generation) until the writer's first publish: the
 *	writer reads it as a careful reader would, never writes a byte it
 *	uses, keeps the blocks of the certificates it sets again with the
 *	same bytes (and their serials), and wipes the rest once its own
 *	image is out.  An image that does not hold up (an offset outside
 *	its slot, a string without its NUL, a lookup pointing astray,
 *	overlapping blocks), or a zone grown by a larger SIZE, is laid out
 *	again instead: generation 0 until the first publish, the
 *	generations continuing.  The writer holds an exclusive flock(2) on
 *	the file for as long as it runs: one writer per file.
 *
 * BYTE ORDER AND TYPES
 *	Host order (the writer and every reader share one machine), which is
 *	little-endian on every platform nginx is packaged for.  All offsets
 *	are uint32_t byte offsets from the start of the file, never pointers;
 *	a segment is at most ACME_SHM_MAX_SIZE bytes.  64-bit fields are
 *	8-byte aligned.  A reader copies each header field once and uses
 *	only the copy.  Every offset + length it takes from an image must lie
 *	inside the slot of the generation it reads (slot_off[g % 2],
 *	slot_size), and that slot inside the size it mapped.  The slots
 *	overlap (LAYOUT); the rule is what a reader can check, and the
 *	writer's side of it is PUBLISHING's: within the slot of the published
 *	generation it never writes a byte that image uses.
 *
 * LAYOUT
 *	offset 0			struct acme_shm_header
 *	header.slot_off[0]		slot 0, header.slot_size bytes
 *	header.slot_off[1]		slot 1, header.slot_size bytes
 *
 *	Each slot starts with one struct acme_shm_image, and everything an
 *	image points at lies inside its slot:
 *
 *	slot start			struct acme_shm_image
 *	image.certs_off			struct acme_shm_cert[image.ncerts]
 *	image.tokens_off		struct acme_shm_token[image.ntokens]
 *	image.by_id.off			struct acme_shm_bucket[by_id.nbuckets]
 *	image.by_name.off		struct acme_shm_bucket[by_name.nbuckets]
 *	image.by_token.off		struct acme_shm_bucket[by_token.nbuckets]
 *	(anywhere in the slot)		struct acme_shm_alpn entries
 *	image.by_alpn.off		struct acme_shm_bucket[by_alpn.nbuckets]
 *	(anywhere in the slot)		string bytes, each followed by a NUL
 *					that its length does not count
 *
 *	Arrays, tables and strings may lie anywhere in the slot, in any
 *	order, with zero bytes between them.
 *
 *	The slots may overlap, and the writer makes them: slot 1 starts
 *	right after slot 0's image (slot_off[1] = slot_off[0] + 64), both
 *	run almost to the end of the file, and all but their first bytes
 *	are one area both images point into:
 *
 *	  header | image 0 | image 1 | arrays, tables, strings ... | 64
 *	         |<-------------- slot 0 ------------------------->|
 *	                   |<-------------- slot 1 ------------------->|
 *
 *	Each image has its own arrays and tables (its "front"), somewhere in
 *	that area, but the strings of a certificate that both images hold
 *	unchanged (its id, issuer, chain, key and names) are there once,
 *	and both images' entries point at them: one copy of every chain and
 *	key, not two.  An image's used is where the area's last bytes in
 *	use ended when it was published: every byte past it was zero then,
 *	but the writer may since have written the strings of the next
 *	image there (bytes the published image does not use, see
 *	PUBLISHING).  No reader needs used.
 *
 *	A reader needs nothing of this: it reads one image, inside its slot,
 *	as always.  The readers written before the slots overlapped (this
 *	version) check that each slot lies inside the mapping and each
 *	offset inside the slot read, never that the slots are apart, so they
 *	read an overlapping layout unchanged.
 *
 * PUBLISHING (double buffering with a generation counter)
 *	header.generation == 0 means nothing is published (or the writer is
 *	laying the header out); otherwise the published image is in slot
 *	generation % 2.  The writer builds generation g + 1 in the other
 *	slot, then stores generation = g + 1 with release ordering.  Its
 *	one rule: it never writes a byte that the published image uses
 *	(that image's struct, its front, and the strings it points at).  So
 *	building g + 1 it writes its own image struct, a front of its own,
 *	and new strings (a certificate added or renewed since g) only into
 *	bytes that g does not use; it keeps the strings g uses and g + 1
 *	still needs where they are, and points at them.  Once g + 1 is
 *	published (and after a release fence) it wipes what no image in
 *	the model uses any more: the strings of every certificate removed or
 *	replaced since g, and the tokens' part of g's front when a
 *	tls-alpn-01 certificate went.  No removed or replaced key lingers in
 *	the file after the publish that drops it, and a reader still
 *	reading g sees the generation change and starts over.
 *
 *	A reader:
 *	  1. g = header.generation (acquire); if 0, nothing to read;
 *	  2. reads whatever it needs from slot g % 2 (copying each value
 *	     before checking it, and checking that every offset and length
 *	     stays inside that slot: nothing read is trusted yet);
 *	  3. acquire fence, then reads header.generation again;
 *	  4. keeps what it read only if that is still g, and otherwise starts
 *	     over (ACME_SHM_MAX_RETRIES times at most).
 *	While the generation stays g the writer writes no byte that image g
 *	uses, shared or not; a change of generation during step 2 means it
 *	may since have wiped or reused some.  So no reader ever acts on a
 *	torn entry, and a reader never waits: the writer holds no lock.  The
 *	njs reader follows the same steps with pread(2)-style reads of the
 *	file.
 *
 * LOOKUPS
 *	Four open-addressing hash tables map a key to a 32-bit value:
 *	  by_id		certificate id		-> index into certs[]
 *	  by_name	identifier (SNI name, lower case, or IP address
 *			in its canonical text form) -> index into certs[]
 *	  by_token	HTTP-01 token		-> index into tokens[]
 *	  by_alpn	tls-alpn-01 SNI		-> file offset of a struct
 *			acme_shm_alpn (see TLS-ALPN-01)
 *	nbuckets is a power of two (or 0 for an empty table), at most half
 *	full.  To find KEY: h = acme_shm_hash(KEY); start at bucket
 *	h & (nbuckets - 1) and step by one (wrapping) until a bucket whose
 *	key_len is 0 (KEY is absent) or whose hash, key_len and key bytes
 *	match (found), for nbuckets buckets at most.  acme_shm_lookup()
 *	below does exactly that.
 *
 *	A certificate id is the first identifier of its acme_certificate
 *	(".example.com" counts as "example.com"), followed by "_" and the
 *	key suffix ("rsa2048", "ecdsa384", ...) when the key type is not
 *	ecdsa:256; a wildcard first identifier has "_" for its "*"
 *	("*.example.com" gives "_.example.com", IDS in acme_ident.h).
 *	When two certificates share an identifier (an ECDSA and an RSA
 *	one), by_name points at the one that has been in the image
 *	longest, whichever was issued first, not a configured one.  The
 *	module looks certificates up by id and never meets this; a by_name
 *	reader (njs) should look such a pair up by id too.
 *
 *	A wildcard identifier is in by_name as written, "*.example.com".
 *	A reader that finds no entry for an SNI name tries "*." followed
 *	by the name without its first label ("a.example.com" ->
 *	"*.example.com"; one label only, RFC 6125 6.4.3), unless that
 *	parent is a single label.  The exact name wins over the wildcard.
 *	The nginx module looks certificates up by id (its server{} names
 *	the certificate, and nginx's own server_name matching picks the
 *	server); src/njs/acme.js looks up by name, then by wildcard.
 *
 * TLS-ALPN-01
 *	While a tls-alpn-01 authorization is pending (RFC 8737), by_alpn
 *	holds its validation certificate: self-signed, with the identifier
 *	alone in subjectAltName and the critical acmeIdentifier extension,
 *	and its key.  The key is the SNI the CA sends: the identifier in
 *	lower case, or for an IP address the reverse-mapping name of RFC
 *	8738 section 6 ("1.0.0.127.in-addr.arpa", nibbles under
 *	"ip6.arpa").  The value is the offset from the start of the file
 *	of the struct acme_shm_alpn, which (with every string it points at)
 *	lies inside the slot like everything else.  Two pending
 *	authorizations for one name: by_alpn holds the newest.  An entry
 *	goes when its authorization settles, valid or not.  A reader
 *	serves it only to a ClientHello that offers "acme-tls/1" and names
 *	the key in SNI, selects that protocol, and sends nothing after the
 *	handshake.
 *
 *	by_alpn took what was image.reserved[2], zero in every image
 *	written before it: a reader that predates it ignores it and answers
 *	no tls-alpn-01, as before, and a newer reader of an older image
 *	finds an empty table.  So the version did not change.
 *
 * SERIALS
 *	Each certificate entry carries a serial.  Equal serials for one id
 *	mean identical chain and key bytes, for as long as the file exists
 *	(serials only grow, and are seeded from the wall clock when the
 *	writer starts), so a reader may keep parsed objects keyed by
 *	(id, serial) and re-parse only entries whose serial changed.
 *
 * VERSIONING
 *	ACME_SHM_VERSION changes whenever a reader written for the old
 *	layout would misread the new one.  A reader refuses a magic or a
 *	version it does not know, and a header_size smaller than its own
 *	struct acme_shm_header.  Fields may be appended to the header
 *	(header_size grows) without a version change.
 */
#ifndef ACME_SHM_H
#define ACME_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ACME_SHM_MAGIC		0x534d4341u	/* "ACMS" in the file */
#define ACME_SHM_IMAGE_MAGIC	0x474d4941u	/* "AIMG" */
#define ACME_SHM_VERSION	1u
#define ACME_SHM_MAX_SIZE	(1024u * 1024 * 1024)	/* 1 GiB */
#define ACME_SHM_MIN_SIZE	(32u * 1024)
#define ACME_SHM_MAX_RETRIES	64	/* reader start-overs per lookup */
#define ACME_SHM_DEFAULT_DIR	"/dev/shm"

/* HTTP-01 (RFC 8555 8.3): where the CA asks for a key authorization. */
#define ACME_SHM_CHALLENGE_PREFIX "/.well-known/acme-challenge/"

/* header.flags */
#define ACME_SHM_FULL		0x1	/* the last image did not fit */

struct acme_shm_header {
	uint32_t	magic;		/* ACME_SHM_MAGIC */
	uint32_t	version;	/* ACME_SHM_VERSION */
	uint64_t	generation;	/* see PUBLISHING */
	uint32_t	size;		/* bytes in the file */
	uint32_t	header_size;	/* sizeof(struct acme_shm_header) */
	uint32_t	slot_off[2];
	uint32_t	slot_size;
	uint32_t	flags;		/* ACME_SHM_* */
	uint64_t	last_serial;	/* the writer's, see SERIALS */
	int64_t		published;	/* Unix time of the last publish */
	uint32_t	writer_pid;
	uint32_t	reserved[17];	/* zero; pads the header to 128 */
};

/* A hash table: nbuckets buckets at off. */
struct acme_shm_table {
	uint32_t	nbuckets;
	uint32_t	off;
};

struct acme_shm_image {
	uint32_t		magic;		/* ACME_SHM_IMAGE_MAGIC */
	uint32_t		used;		/* bytes of the slot in use
						   when published (LAYOUT) */
	uint64_t		generation;	/* the header's, once published */
	uint32_t		ncerts;
	uint32_t		certs_off;
	uint32_t		ntokens;
	uint32_t		tokens_off;
	struct acme_shm_table	by_id;
	struct acme_shm_table	by_name;
	struct acme_shm_table	by_token;
	struct acme_shm_table	by_alpn;	/* see TLS-ALPN-01 */
};

/* key_len == 0 marks an empty bucket. */
struct acme_shm_bucket {
	uint32_t	hash;		/* acme_shm_hash() of the key */
	uint32_t	key_off;
	uint32_t	key_len;
	uint32_t	value;
};

struct acme_shm_cert {
	uint64_t	serial;		/* see SERIALS */
	int64_t		not_before;	/* Unix time, of the leaf */
	int64_t		not_after;
	uint32_t	id_off;
	uint32_t	id_len;
	uint32_t	issuer_off;	/* acme_issuer name */
	uint32_t	issuer_len;
	uint32_t	chain_off;	/* PEM: leaf, then intermediates */
	uint32_t	chain_len;
	uint32_t	key_off;	/* PEM: PKCS#8 private key */
	uint32_t	key_len;
	uint32_t	reserved[2];	/* pads the entry to 64 */
};

struct acme_shm_token {
	uint32_t	token_off;
	uint32_t	token_len;
	uint32_t	keyauth_off;	/* "token.thumbprint" */
	uint32_t	keyauth_len;
};

/* A tls-alpn-01 validation certificate (TLS-ALPN-01 above). */
struct acme_shm_alpn {
	uint32_t	ident_off;	/* the identifier, as the CA names it */
	uint32_t	ident_len;
	uint32_t	cert_off;	/* PEM: the validation certificate */
	uint32_t	cert_len;
	uint32_t	key_off;	/* PEM: its PKCS#8 private key */
	uint32_t	key_len;
};

_Static_assert(sizeof(struct acme_shm_header) == 128, "header layout");
_Static_assert(sizeof(struct acme_shm_image) == 64, "image layout");
_Static_assert(sizeof(struct acme_shm_cert) == 64, "cert layout");
_Static_assert(sizeof(struct acme_shm_bucket) == 16, "bucket layout");
_Static_assert(sizeof(struct acme_shm_token) == 16, "token layout");
_Static_assert(sizeof(struct acme_shm_alpn) == 24, "alpn layout");

/* FNV-1a, 32 bits: simple enough to write again in JavaScript. */
static inline uint32_t
acme_shm_hash(const void *key, size_t len)
{
	const unsigned char	*p = key;
	uint32_t		 h = 2166136261u;
	size_t			 i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

/* Whether [off, off + len) lies inside [lo, hi). */
static inline int
acme_shm_within(uint64_t lo, uint64_t hi, uint64_t off, uint64_t len)
{
	return lo <= off && off <= hi && len <= hi - off;
}

/* Whether [off, off + len) lies inside a mapping of size bytes. */
static inline int
acme_shm_inside(size_t size, uint64_t off, uint64_t len)
{
	return acme_shm_within(0, size, off, len);
}

/*
 * Look KEY up in table t of the image in the slot [lo, hi) of a segment
 * mapped at base (hi never beyond the mapping).  Returns the bucket's
 * value, or -1 when the key is absent or the table points outside the
 * slot.  Each bucket is copied before it is checked, so a writer changing
 * it meanwhile cannot slip an unchecked offset past the check.  The
 * caller still has to check the generation afterwards.
 */
static inline int64_t
acme_shm_lookup(const unsigned char *base, uint64_t lo, uint64_t hi,
    const struct acme_shm_table *t, const void *key, size_t len)
{
	struct acme_shm_bucket	 e;
	struct acme_shm_table	 tab;
	uint32_t		 h, i, mask;

	memcpy(&tab, t, sizeof(tab));
	if (tab.nbuckets == 0 || len == 0 ||
	    (tab.nbuckets & (tab.nbuckets - 1)) != 0 ||
	    !acme_shm_within(lo, hi, tab.off,
	    (uint64_t)tab.nbuckets * sizeof(e)))
		return -1;
	h = acme_shm_hash(key, len);
	mask = tab.nbuckets - 1;
	for (i = 0; i < tab.nbuckets; i++) {
		memcpy(&e, base + tab.off + (size_t)((h + i) & mask) *
		    sizeof(e), sizeof(e));
		__asm__ __volatile__("" ::: "memory");
		if (e.key_len == 0)
			return -1;
		if (e.hash == h && e.key_len == len &&
		    acme_shm_within(lo, hi, e.key_off, len) &&
		    memcmp(base + e.key_off, key, len) == 0)
			return e.value;
	}
	return -1;
}

#endif /* ACME_SHM_H */
