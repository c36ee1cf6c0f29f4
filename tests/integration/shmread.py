"""A reader of the shared-memory segment, written from proto/acme_shm.h.

It follows the header's reader protocol (generation before and after,
start over on a change) with plain file reads, like the njs reader does,
so the tests check the contract itself and not only the C readers.
"""

import struct

MAGIC = 0x534D4341
IMAGE_MAGIC = 0x474D4941
VERSION = 1
MAX_RETRIES = 64
FULL = 0x1

# struct acme_shm_header (128 bytes)
HEADER = struct.Struct("<IIQII2IIIQqI68x")
# struct acme_shm_image (64 bytes)
IMAGE = struct.Struct("<IIQIIII2I2I2I8x")
# struct acme_shm_cert (64 bytes)
CERT = struct.Struct("<QqqIIIIIIII8x")
BUCKET = struct.Struct("<IIII")
TOKEN = struct.Struct("<IIII")


class Torn(Exception):
    pass


def fnv1a(data):
    h = 2166136261
    for b in data:
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def header(f):
    f.seek(0)
    (magic, version, generation, size, header_size, slot0, slot1,
     slot_size, flags, last_serial, published, writer_pid) = \
        HEADER.unpack(f.read(HEADER.size))
    return dict(magic=magic, version=version, generation=generation,
                size=size, header_size=header_size, slot_off=(slot0, slot1),
                slot_size=slot_size, flags=flags, last_serial=last_serial,
                published=published, writer_pid=writer_pid)


def _read(f, off, n):
    f.seek(off)
    b = f.read(n)
    if len(b) != n:
        raise Torn("short read at %d" % off)
    return b


def _lookup(f, table, key):
    nbuckets, off = table
    if nbuckets == 0:
        return None
    h = fnv1a(key)
    for i in range(nbuckets):
        b = (h + i) & (nbuckets - 1)
        bh, koff, klen, value = BUCKET.unpack(
            _read(f, off + b * BUCKET.size, BUCKET.size))
        if klen == 0:
            return None
        if bh == h and klen == len(key) and _read(f, koff, klen) == key:
            return value
    return None


def _image(f):
    h = header(f)
    if h["magic"] != MAGIC or h["version"] != VERSION:
        raise ValueError("not a version %d segment" % VERSION)
    g = h["generation"]
    if g == 0:
        return h, None
    v = IMAGE.unpack(_read(f, h["slot_off"][g % 2], IMAGE.size))
    img = dict(magic=v[0], used=v[1], generation=v[2], ncerts=v[3],
               certs_off=v[4], ntokens=v[5], tokens_off=v[6],
               by_id=(v[7], v[8]), by_name=(v[9], v[10]),
               by_token=(v[11], v[12]))
    return h, img


def _cert(f, img, index):
    v = CERT.unpack(_read(f, img["certs_off"] + index * CERT.size,
                          CERT.size))
    serial, nb, na = v[0], v[1], v[2]

    def s(off, n):
        return _read(f, off, n).decode()
    return dict(serial=serial, not_before=nb, not_after=na,
                id=s(v[3], v[4]), issuer=s(v[5], v[6]),
                chain=s(v[7], v[8]), key=s(v[9], v[10]))


def _consistent(path, fn):
    """fn(f, header, image) under the generation check."""
    with open(path, "rb") as f:
        for _ in range(MAX_RETRIES):
            try:
                h, img = _image(f)
                out = fn(f, h, img)
            except Torn:
                continue
            if header(f)["generation"] == h["generation"]:
                return out
    raise Torn("%s: the generation kept changing" % path)


def cert(path, key, by="id"):
    """The entry for an id (by="id") or an SNI name (by="name"), or
    None."""
    def fn(f, h, img):
        if img is None:
            return None
        i = _lookup(f, img["by_id" if by == "id" else "by_name"],
                    key.encode())
        return None if i is None else _cert(f, img, i)
    return _consistent(path, fn)


def token(path, tok):
    def fn(f, h, img):
        if img is None:
            return None
        i = _lookup(f, img["by_token"], tok.encode())
        if i is None:
            return None
        toff, tlen, koff, klen = TOKEN.unpack(
            _read(f, img["tokens_off"] + i * TOKEN.size, TOKEN.size))
        return _read(f, koff, klen).decode()
    return _consistent(path, fn)


def certs(path):
    """Every certificate entry of the published image."""
    def fn(f, h, img):
        if img is None:
            return []
        return [_cert(f, img, i) for i in range(img["ncerts"])]
    return _consistent(path, fn)
