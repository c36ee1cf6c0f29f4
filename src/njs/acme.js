/*
 * acme.js: the njs reader of acme-sidecar's shared-memory segment, for
 * nginx without the compiled module.  proto/acme_shm.h is the layout
 * and the protocol; this file follows its READER steps with positioned
 * reads of the file, since njs 0.7.9 can neither mmap nor fence.
 *
 *	js_import acme from /usr/share/acme-sidecar/acme.js;
 *	js_set $acme_certificate     acme.certificate;
 *	js_set $acme_certificate_key acme.key;
 *	ssl_certificate              $acme_certificate;
 *	ssl_certificate_key          $acme_certificate_key;
 *
 * Optional variables:
 *	$acme_shared_path	the segment (default /dev/shm/ngx_acme_shared)
 *	$acme_shared_owner	the numeric uid that must own it (default 0):
 *				the sidecar's user
 *	$acme_certificate_id	the certificate id served when the client
 *				sends no server name or one we have no
 *				certificate for
 * Set them with js_var in http{} (in njs 0.7.9 a js_var is http-wide:
 * its last definition wins, even one written inside a server{}), or per
 * server with "map $server_name ...".  "set" does not work: nginx does
 * not run the rewrite phase during a handshake.
 *
 * Each lookup opens the file, reads the header, the image header, a few
 * hash buckets, the one certificate entry and its chain and key, reads
 * the generation again and closes the file: a handful of pread(2)s and
 * no state kept between handshakes (njs 0.7.9 gives every request a
 * fresh VM, so there is nowhere to keep it).  See src/njs/README.md.
 *
 * The file is believed only when it is a regular file with one name,
 * owned by $acme_shared_owner and writable by nobody else: /dev/shm is
 * world-writable, and whoever writes the segment chooses the
 * certificates served.  njs 0.7.9 cannot open with O_NOFOLLOW or
 * O_NONBLOCK, so the name is checked with lstat before the open and the
 * descriptor with fstat after it; README.md says what that leaves.
 *
 * A file cut short (anyone able to write it can truncate it) cannot
 * hurt this reader, which reads and never maps: a read past the end is
 * short, and refused.  The size fstat gave is compared with the header
 * first, so that the log says what happened.
 */
import fs from 'fs';

/* From proto/acme_shm.h. */
const SHM_MAGIC = 0x534d4341;
const SHM_IMAGE_MAGIC = 0x474d4941;
const SHM_VERSION = 1;
const SHM_MAX_SIZE = 1024 * 1024 * 1024;
const SHM_MAX_RETRIES = 64;
const HEADER_SIZE = 128;
const MAX_UID = 4294967294;
const IMAGE_SIZE = 64;
const BUCKET_SIZE = 16;
const CERT_SIZE = 64;
const DEFAULT_PATH = '/dev/shm/ngx_acme_shared';

/* Buckets per read: a half-full table rarely probes further. */
const BUCKETS_PER_READ = 4;

/* No chain or key comes near this; a larger length is garbage. */
const MAX_PEM = 1024 * 1024;

/*
 * The answer of the last lookup.  nginx evaluates $acme_certificate and
 * then $acme_certificate_key in the same request, hence the same VM: the
 * key comes from the read that found the certificate, so the two always
 * belong together even when the sidecar publishes in between.
 */
let last = null;

/* A reason to refuse, as opposed to a bug in this file. */
function ShmError(message) {
	this.message = message;
}

function fail(message) {
	throw new ShmError(message);
}

function inside(size, off, len) {
	return off <= size && len <= size - off;
}

/* What st is, for a refusal. */
function kind(st) {
	if (st.isSymbolicLink())
		return 'a symbolic link';
	if (st.isFIFO())
		return 'a FIFO';
	if (st.isFile())
		return 'a regular file';
	if (st.isDirectory())
		return 'a directory';
	return 'a special file';
}

/*
 * Refuse a file that someone other than owner could have written: only
 * a regular file with one name, owned by owner, not writable by group
 * or others is believed.
 */
function checkOwner(path, st, owner) {
	if (st.isFile() && st.nlink === 1 && (st.mode & 0o022) === 0 &&
	    st.uid === owner)
		return;
	const mode = ('000' + (st.mode & 0o7777).toString(8)).slice(-4);

	fail(`${path} refused: it is ${kind(st)} owned by uid ${st.uid}, ` +
	    `mode ${mode}, ${st.nlink} link(s); expected a regular file ` +
	    `owned by uid ${owner} ($acme_shared_owner), not writable by ` +
	    'group or others, with one link');
}

function cannotOpen(path, e) {
	fail(`cannot open ${path}: ${e.message} (is acme-sidecar ` +
	    `running with this acme_shared_zone, and may nginx's ` +
	    `workers read it?)`);
}

/*
 * The descriptor of a file that passed checkOwner() both by its name,
 * before the open (a FIFO would block the open, a symbolic link lead
 * elsewhere), and by the descriptor, after it: { fd, size }.
 */
function openChecked(path, owner) {
	let st, fd;

	try {
		st = fs.lstatSync(path);
	} catch (e) {
		cannotOpen(path, e);
	}
	checkOwner(path, st, owner);
	try {
		fd = fs.openSync(path, 'r');
	} catch (e) {
		cannotOpen(path, e);
	}
	try {
		const fst = fs.fstatSync(fd);

		if (fst.dev !== st.dev || fst.ino !== st.ino)
			fail(`${path} was replaced while being opened; refused`);
		checkOwner(path, fst, owner);
		return { fd: fd, size: fst.size };
	} catch (e) {
		fs.closeSync(fd);
		throw e;
	}
}

/* FNV-1a, 32 bits, as acme_shm_hash(). */
function hash(buf) {
	let h = 2166136261;

	for (let i = 0; i < buf.length; i++)
		h = Math.imul(h ^ buf[i], 16777619);
	return h >>> 0;
}

/*
 * len bytes at off, all of them inside seg.lo to seg.hi (the file, or
 * the slot being read), or an error.
 */
function readAt(seg, off, len) {
	if (off < seg.lo || !inside(seg.hi, off, len))
		fail(`${seg.path}: ${len} bytes at offset ${off} lie outside ` +
		    `${seg.what}`);
	const buf = Buffer.alloc(len);
	let n;

	try {
		n = fs.readSync(seg.fd, buf, 0, len, off);
	} catch (e) {
		fail(`${seg.path}: read at offset ${off}: ${e.message}`);
	}
	if (n !== len)
		fail(`${seg.path}: short read at offset ${off} (${n} of ` +
		    `${len} bytes); the file is smaller than its header says`);
	return buf;
}

/* The header, refused unless its magic, version and sizes are known. */
function readHeader(fd, path) {
	const seg = { fd: fd, path: path, lo: 0, hi: HEADER_SIZE,
	    what: 'the header' };
	const b = readAt(seg, 0, HEADER_SIZE);
	const h = {
		magic: b.readUInt32LE(0),
		version: b.readUInt32LE(4),
		genLo: b.readUInt32LE(8),
		genHi: b.readUInt32LE(12),
		size: b.readUInt32LE(16),
		headerSize: b.readUInt32LE(20),
		slotOff: [b.readUInt32LE(24), b.readUInt32LE(28)],
		slotSize: b.readUInt32LE(32),
	};

	if (h.magic !== SHM_MAGIC)
		fail(`${path}: not an acme-sidecar segment (magic ` +
		    `0x${h.magic.toString(16)})`);
	if (h.version !== SHM_VERSION)
		fail(`${path}: segment layout version ${h.version}, this ` +
		    `acme.js reads version ${SHM_VERSION}; update acme.js`);
	if (h.headerSize < HEADER_SIZE || h.size < h.headerSize ||
	    h.size > SHM_MAX_SIZE)
		fail(`${path}: bad header (size ${h.size}, header_size ` +
		    `${h.headerSize})`);
	return h;
}

/* The bucket value for key in table t, or -1 when it is absent. */
function lookup(seg, t, key) {
	const n = t.nbuckets;

	if (n === 0 || key.length === 0)
		return -1;
	if ((n & (n - 1)) !== 0 || t.off < seg.lo ||
	    !inside(seg.hi, t.off, n * BUCKET_SIZE))
		fail(`${seg.path}: bad hash table (${n} buckets at ${t.off})`);
	const h = hash(key);
	const mask = n - 1;
	let i = h & mask;
	let seen = 0;

	while (seen < n) {
		/* Contiguous buckets, up to the table's end at most. */
		const count = Math.min(BUCKETS_PER_READ, n - i, n - seen);
		const b = readAt(seg, t.off + i * BUCKET_SIZE,
		    count * BUCKET_SIZE);

		for (let j = 0; j < count; j++) {
			const at = j * BUCKET_SIZE;
			const len = b.readUInt32LE(at + 8);

			if (len === 0)
				return -1;
			if (b.readUInt32LE(at) !== h || len !== key.length)
				continue;
			if (readAt(seg, b.readUInt32LE(at + 4), len).equals(key))
				return b.readUInt32LE(at + 12);
		}
		seen += count;
		i = (i + count) & mask;
	}
	return -1;
}

function readPem(seg, off, len, what) {
	if (len === 0 || len > MAX_PEM)
		fail(`${seg.path}: ${what} of ${len} bytes`);
	return readAt(seg, off, len).toString();
}

/* Certificate number idx of the image: its chain and key. */
function readCert(seg, img, idx) {
	if (idx >= img.ncerts)
		fail(`${seg.path}: entry ${idx} of ${img.ncerts}`);
	const e = readAt(seg, img.certsOff + idx * CERT_SIZE, CERT_SIZE);

	return {
		chain: readPem(seg, e.readUInt32LE(40), e.readUInt32LE(44),
		    'chain'),
		key: readPem(seg, e.readUInt32LE(48), e.readUInt32LE(52),
		    'key'),
	};
}

/*
 * The image of generation h, and its slot: every offset it holds must
 * lie in that slot.  The generation check vouches for that slot alone;
 * the other one may be half rewritten by the writer meanwhile.
 */
function readImage(file, h) {
	const off = h.slotOff[h.genLo & 1];	/* slot generation % 2 */

	if (off < HEADER_SIZE || h.slotSize < IMAGE_SIZE ||
	    !inside(file.hi, off, h.slotSize))
		fail(`${file.path}: bad slot (${h.slotSize} bytes at ${off})`);
	const seg = { fd: file.fd, path: file.path, lo: off,
	    hi: off + h.slotSize,
	    what: `its slot (${h.slotSize} bytes at ${off})` };
	const b = readAt(seg, off, IMAGE_SIZE);

	if (b.readUInt32LE(0) !== SHM_IMAGE_MAGIC ||
	    b.readUInt32LE(8) !== h.genLo || b.readUInt32LE(12) !== h.genHi)
		fail(`${seg.path}: the published image is not generation ` +
		    `${h.genHi * 4294967296 + h.genLo}`);
	return {
		seg: seg,
		ncerts: b.readUInt32LE(16),
		certsOff: b.readUInt32LE(20),
		byId: { nbuckets: b.readUInt32LE(32), off: b.readUInt32LE(36) },
		byName: { nbuckets: b.readUInt32LE(40),
		    off: b.readUInt32LE(44) },
	};
}

function quote(s) {
	return JSON.stringify(s.length > 256 ? s.slice(0, 256) + '...' : s);
}

/*
 * The wildcard that covers name (LOOKUPS in proto/acme_shm.h): "*." and
 * its parent, one label only (RFC 6125 6.4.3), or '' when the parent is
 * a single label, which no certificate's wildcard can be.
 */
function wildcardOf(name) {
	const dot = name.indexOf('.');

	if (dot <= 0 || name.indexOf('.', dot + 1) === -1)
		return '';
	return '*' + name.slice(dot);
}

/*
 * Step 2 of READER: the entry for want.name, else for the wildcard over
 * it, else for want.id.
 */
function find(file, h, want) {
	const img = readImage(file, h);
	const seg = img.seg;
	const wild = wildcardOf(want.name);
	let idx = -1;

	if (want.name !== '')
		idx = lookup(seg, img.byName, Buffer.from(want.name));
	if (idx === -1 && wild !== '')
		idx = lookup(seg, img.byName, Buffer.from(wild));
	if (idx === -1 && want.id !== '')
		idx = lookup(seg, img.byId, Buffer.from(want.id));
	if (idx !== -1)
		return readCert(seg, img, idx);
	if (want.name === '' && want.id === '')
		fail('the client sent no server name and ' +
		    '$acme_certificate_id is not set');
	if (want.id === '')
		fail(`no certificate for server name ${quote(want.name)} in ` +
		    `${seg.path}, and $acme_certificate_id is not set`);
	fail(`no certificate for server name ${quote(want.name)} nor for ` +
	    `$acme_certificate_id ${quote(want.id)} in ${seg.path}`);
}

/*
 * One pass of READER steps 1 to 4: the entry (or the reason there is
 * none) when the generation held still, null when it moved.  A refusal
 * found while reading is only believed once the generation says the
 * bytes it came from were not being rewritten.
 */
function attempt(file, path, want) {
	const h = readHeader(file.fd, path);
	const seg = { fd: file.fd, path: path, lo: 0, hi: h.size,
	    what: `the segment's ${h.size} bytes` };
	let found;

	if (file.size < h.size)
		fail(`${path} was cut short: ${file.size} bytes, its header ` +
		    `says ${h.size}; nothing is read from it until ` +
		    'acme-sidecar puts its size back');

	if (h.genLo === 0 && h.genHi === 0)
		fail(`${path}: nothing published yet`);
	try {
		found = find(seg, h, want);
	} catch (e) {
		if (!(e instanceof ShmError))
			throw e;
		found = e;
	}
	const g = readAt(seg, 8, 8);
	if (g.readUInt32LE(0) !== h.genLo || g.readUInt32LE(4) !== h.genHi)
		return null;
	if (found instanceof ShmError)
		throw found;
	return found;
}

function read(path, owner, want) {
	const file = openChecked(path, owner);

	try {
		for (let i = 0; i < SHM_MAX_RETRIES; i++) {
			const found = attempt(file, path, want);

			if (found !== null)
				return found;
		}
	} finally {
		fs.closeSync(file.fd);
	}
	fail(`${path}: the generation changed during each of ` +
	    `${SHM_MAX_RETRIES} reads; giving up`);
}

function variable(r, name) {
	const v = r.variables[name];

	return v === undefined ? '' : v;
}

/* $acme_shared_owner as a uid; 0 (root) when it is not set. */
function owner(r) {
	const v = variable(r, 'acme_shared_owner');

	if (v === '')
		return 0;
	if (!/^[0-9]{1,10}$/.test(v) || Number(v) > MAX_UID)
		fail(`$acme_shared_owner ${quote(v)} is not a numeric uid`);
	return Number(v);
}

/*
 * The entry this handshake wants, read once per request: { chain, key }
 * or { error } (already logged).
 */
function entry(r) {
	const path = variable(r, 'acme_shared_path') || DEFAULT_PATH;
	const want = {
		name: variable(r, 'ssl_server_name').toLowerCase()
		    .replace(/\.$/, ''),
		id: variable(r, 'acme_certificate_id'),
	};
	const tag = [path, want.name, want.id].join('\n');

	if (last !== null && last.tag === tag)
		return last;
	try {
		last = read(path, owner(r), want);
	} catch (e) {
		if (!(e instanceof ShmError))
			throw e;
		r.error(`acme: ${e.message}`);
		last = { error: e.message };
	}
	last.tag = tag;
	return last;
}

/*
 * $acme_certificate: "data:" + PEM chain.  On failure an empty "data:",
 * which fails the handshake: nginx then logs 'cannot load certificate
 * "data:"' after our line.  (An empty string would make it open its
 * prefix directory as a certificate file, a misleading error.)
 */
function certificate(r) {
	const e = entry(r);

	return e.error === undefined ? 'data:' + e.chain : 'data:';
}

/* $acme_certificate_key: "data:" + PEM key, or "data:". */
function key(r) {
	const e = entry(r);

	return e.error === undefined ? 'data:' + e.key : 'data:';
}

export default { certificate, key };
