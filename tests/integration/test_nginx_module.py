"""nginx with ngx_http_acme_module serves what the sidecar issues.

The nginx.conf is the seed's "Full example" (seed/nginx-plus-module-acme.md)
with only its ports, paths, zone name and issuer changed, plus Pebble's CA
in ssl_trusted_certificate so the sidecar trusts Pebble's HTTPS.  The
sidecar reads that same file (--nginx-conf).  Its own HTTP-01 listener is
on a port Pebble never dials, so every challenge is answered by nginx's
port-80 server through the module, with its "return 404" in place.
"""

import grp
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import shmread
from conftest import free_port, split_pem, zone_name, zone_path
from dnslib import api, bind_key
from nginxlib import (MODULE, fingerprint, handshake, http_block_head,
                      http_get, main_block, nginx_factory, served_leaf,
                      served_while, verify_served)

NAMES = ["example.test", "www.example.test"]

pytestmark = pytest.mark.skipif(
    not MODULE.exists(), reason="%s is not built (nginx-dev missing?)" %
    MODULE)

__all__ = ["nginx_factory"]


def seed_http(pebble, tmp_path, tls_port, http_port):
    """The seed's Full example: ports, paths, zone and uri changed."""
    return """
resolver 127.0.0.1:53;

acme_issuer example {
    uri         %(uri)s;
    # contact   admin@example.test;
    state_path  %(state)s;
    accept_terms_of_service;
    ssl_trusted_certificate %(ca)s;
}

acme_shared_zone zone=%(zone)s:1M;

server {
    listen 127.0.0.1:%(tls)d ssl;
    server_name  .example.test;

    acme_certificate example;

    ssl_certificate       $acme_certificate;
    ssl_certificate_key   $acme_certificate_key;

    # do not parse the certificate on each request
    ssl_certificate_cache max=2;
}

server {
    # listener on port 80 is required to process ACME HTTP-01 challenges
    listen 127.0.0.1:%(http)d;

    location / {
        return 404;
    }
}
""" % dict(uri=pebble.directory_url, state=tmp_path / "state",
           ca=pebble.ca, zone=zone_name(tmp_path), tls=tls_port,
           http=http_port)


def nginx_conf(prefix, body, user="www-data"):
    return main_block(prefix, [MODULE], user) + "http {\n" + \
        http_block_head(prefix) + body + "}\n"


def sidecar_conf(tmp_path):
    """Only what nginx.conf cannot say: a responder Pebble never uses."""
    p = tmp_path / "acme-sidecar.conf"
    p.write_text("challenge_listen 127.0.0.1:%d;\ncontrol_socket %s;\n" %
                 (free_port(), tmp_path / "control.sock"))
    return p


@pytest.fixture
def seed(tmp_path, pebble, http_port, nginx_factory, sidecar_factory):
    tls_port = free_port()
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, seed_http(pebble, tmp_path,
                                                   tls_port, http_port)))
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    return nginx, sidecar, tls_port


def stored_leaf(tmp_path, cid="example.test"):
    pem = (tmp_path / "state" / "certs" / cid / "fullchain.pem").read_text()
    return split_pem(pem)[0]


def test_seed_full_example(tmp_path, pebble, http_port, seed):
    nginx, sidecar, tls_port = seed
    rc, out = nginx.test_config()
    assert rc == 0 and "test is successful" in out, out

    nginx.start([tls_port, http_port])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])

    # The challenges went through nginx: the sidecar's own responder
    # served none of them.
    assert "served" not in sidecar.log() or \
        "served 0" in sidecar.log()
    leaf = stored_leaf(tmp_path)
    deadline = time.monotonic() + 10
    for name in NAMES:
        while True:
            rc, blocks, _ = handshake(tls_port, name, check=False)
            if rc == 0 and blocks and \
                    fingerprint(blocks[0]) == fingerprint(leaf):
                break
            assert time.monotonic() < deadline, \
                "nginx never served the issued certificate for %s%s" % (
                    name, nginx.diagnostics())
            time.sleep(0.1)
        verify_served(tls_port, name, pebble, tmp_path)

    # The port-80 server still says 404 to everything else.
    status, _ = http_get(http_port, "/.well-known/acme-challenge/nosuch")
    assert status == 404
    status, _ = http_get(http_port, "/")
    assert status == 404
    assert "[alert]" not in nginx.error_log()
    assert "[crit]" not in nginx.error_log()


def test_seed_verbatim_without_user_line(tmp_path, pebble, http_port,
                                         nginx_factory, sidecar_factory):
    """The seed's Full example has no "user" line, so nginx (started as
    root) runs its workers as nobody:nogroup, Debian's build default.  The
    zone's group follows, and the certificate is served.  A group= that
    shuts those workers out is said in the sidecar's log and status, not
    only in nginx's error log."""
    tls_port = free_port()
    body = seed_http(pebble, tmp_path, tls_port, http_port)
    nginx = nginx_factory()
    sock = tmp_path / "control.sock"

    # group=www-data: the workers (nogroup) cannot open the zone.
    nginx.write(nginx_conf(nginx.prefix, body.replace(
        ":1M;", ":1M group=www-data;"), user=None))
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_log(r"shared zone \S+: nginx's workers \(nobody:nogroup, "
                     r"nginx's default if its master runs as root: "
                     r"nginx.conf has no \"user\"\) "
                     r"cannot read \S+ \(mode 0640 root:www-data\): nginx "
                     r"will serve no certificate from it")
    workers = api(sock, "/v1/status")["shared_zone"]["nginx_workers"]
    assert workers["user"] == "nobody" and workers["group"] == "nogroup"
    assert workers["can_open"] is False
    assert "(mode 0640 root:www-data)" in workers["problem"], workers
    assert sidecar.stop() == 0

    # As written: the group is nogroup, and nginx serves the certificate.
    nginx.write(nginx_conf(nginx.prefix, body, user=None))
    nginx.start([tls_port, http_port])
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    st = os.stat(zone_path(tmp_path))
    assert (st.st_mode & 0o777, st.st_gid) == \
        (0o640, grp.getgrnam("nogroup").gr_gid)
    workers = api(sock, "/v1/status")["shared_zone"]["nginx_workers"]
    assert workers["can_open"] is True and workers["problem"] is None
    leaf = stored_leaf(tmp_path)
    deadline = time.monotonic() + 10
    while True:
        rc, blocks, _ = handshake(tls_port, NAMES[0], check=False)
        if rc == 0 and blocks and fingerprint(blocks[0]) == fingerprint(leaf):
            break
        assert time.monotonic() < deadline, \
            "nginx never served the certificate%s" % nginx.diagnostics()
        time.sleep(0.1)
    verify_served(tls_port, NAMES[0], pebble, tmp_path)


@pytest.mark.parametrize("validity", [30])
def test_renewal_without_reload(tmp_path, pebble_factory, http_port,
                                nginx_factory, sidecar_factory, validity):
    """Short-lived certificates renew at half their life; nginx serves
    each new one with no reload (same worker) and no failed handshake."""
    pebble = pebble_factory(http_port, validity=validity)
    tls_port = free_port()
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, seed_http(pebble, tmp_path,
                                                   tls_port, http_port)))
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    nginx.start([tls_port, http_port])
    workers = nginx.worker_pids()
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    seg = str(zone_path(tmp_path))
    # Certificates reach the zone within SHM_COMMIT_DELAY of the store.
    deadline = time.monotonic() + 5
    while (first := shmread.cert(seg, "example.test")) is None:
        assert time.monotonic() < deadline, "never published"
        time.sleep(0.05)

    renewed = {}

    def changed():
        renewed["e"] = shmread.cert(seg, "example.test")
        return renewed["e"]["serial"] != first["serial"]

    served = served_while(tls_port, "www.example.test", changed,
                          validity + 20, sidecar.diagnostics)
    new_leaf = split_pem(renewed["e"]["chain"])[0]
    assert fingerprint(new_leaf) in served, \
        "nginx kept serving the old certificate%s" % nginx.diagnostics()
    assert fingerprint(served_leaf(tls_port, "example.test")) == \
        fingerprint(new_leaf)
    assert nginx.worker_pids() == workers, "nginx was reloaded"


def test_before_issuance_and_garbage(tmp_path, pebble, http_port, seed):
    """No segment yet: handshakes fail cleanly with a clear error line.
    A garbage segment crashes nothing.  Then the sidecar starts and the
    same nginx, never reloaded, serves the certificate."""
    nginx, sidecar, tls_port = seed
    nginx.start([tls_port, http_port])
    workers = nginx.worker_pids()
    rc, _, _ = handshake(tls_port, "example.test", check=False)
    assert rc != 0, "a handshake succeeded with no certificate"

    seg = zone_path(tmp_path)
    with open(seg, "wb") as f:
        f.write(os.urandom(64 * 1024))
    os.chmod(seg, 0o644)
    time.sleep(1.2)         # the module looks for the file once a second
    for _ in range(3):
        rc, _, _ = handshake(tls_port, "example.test", check=False)
        assert rc != 0
    assert nginx.worker_pids() == workers, "a worker died" + \
        nginx.diagnostics()
    log = nginx.error_log()
    assert "example.test" in log, log[-2000:]
    seg.unlink()

    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    leaf = stored_leaf(tmp_path)
    deadline = time.monotonic() + 10
    while True:
        rc, blocks, _ = handshake(tls_port, "example.test", check=False)
        if rc == 0 and fingerprint(blocks[0]) == fingerprint(leaf):
            break
        assert time.monotonic() < deadline, nginx.diagnostics()
        time.sleep(0.2)
    assert nginx.worker_pids() == workers
    assert "[alert]" not in nginx.error_log()


def test_shipped_example_passes_both_checks(tmp_path, sidecar_bin):
    """conf/nginx-module.conf, with only the module's path made absolute,
    is accepted by nginx -t and by the sidecar's -t --nginx-conf."""
    from conftest import ROOT
    text = (ROOT / "conf" / "nginx-module.conf").read_text()
    assert "modules/ngx_http_acme_module.so" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("modules/ngx_http_acme_module.so",
                                 str(MODULE)))
    p = subprocess.run(["/usr/sbin/nginx", "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0, p.stdout
    p = subprocess.run([str(sidecar_bin), "-t", "--nginx-conf", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0, p.stdout
    assert "test is successful" in p.stdout


@pytest.mark.parametrize("line,message", [
    ("acme_certificate nosuch;", 'acme_issuer "nosuch"'),
    ("acme_certificate example key=rsa:1024;", "rsa:1024"),
    ("server_name *.example.test; acme_certificate example;",
     "*.example.test"),
])
def test_nginx_t_errors_name_the_line(tmp_path, pebble, nginx_factory, line,
                                      message):
    nginx = nginx_factory()
    body = ("acme_issuer example { uri %s; }\n"
            "acme_shared_zone zone=%s:1M;\n"
            "server {\n"
            "    listen 127.0.0.1:%d ssl;\n"
            "    %s\n"
            "    ssl_certificate $acme_certificate;\n"
            "    ssl_certificate_key $acme_certificate_key;\n"
            "}\n") % (pebble.directory_url, zone_name(tmp_path), free_port(),
                      line)
    nginx.write(nginx_conf(nginx.prefix, body))
    rc, out = nginx.test_config()
    assert rc != 0, out
    assert message in out, out
    # nginx's own convention: "in FILE:LINE"; the directive is on the
    # fifth line of the http{} body.
    head = nginx_conf(nginx.prefix, "").count("\n") - 1
    assert "in %s:%d" % (nginx.conf, head + 5) in out, out


DNS_ISSUER = ("acme_issuer example {\n"
              "    uri %s;\n"
              "    challenge dns-01;\n"
              "    %s\n"
              "    dns_check 127.0.0.1:5353 [::1]:5354;\n"
              "    new_order_exclusive on;\n"
              "}\n")


@pytest.mark.parametrize("publisher,message", [
    ("dns_update 127.0.0.1:5353 key=%(key)s zone=example.test;", None),
    ("dns_update 127.0.0.1:5353 zone=example.test;",
     'dns_update "127.0.0.1:5353" has no key=FILE'),
    ("dns_update 127.0.0.1 key=%(key)s; dns_hook /bin/true;",
     '"dns_hook" and "dns_update" in one acme_issuer'),
])
def test_nginx_t_dns01_directives(tmp_path, pebble, nginx_factory,
                                  sidecar_bin, publisher, message):
    """dns-01's issuer directives are known to nginx -t as to the
    sidecar's: a wildcard server over dns_update, with dns_check and
    new_order_exclusive, passes both; a dns_update without its key, or
    two publishers, is an error at its line."""
    key = tmp_path / "tsig.key"
    key.write_text(bind_key("acme", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"))
    nginx = nginx_factory()
    body = (DNS_ISSUER % (pebble.directory_url, publisher % {"key": key}) +
            "acme_shared_zone zone=%s:1M;\n"
            "server {\n"
            "    listen 127.0.0.1:%d ssl;\n"
            "    server_name *.example.test example.test;\n"
            "    acme_certificate example;\n"
            "    ssl_certificate $acme_certificate;\n"
            "    ssl_certificate_key $acme_certificate_key;\n"
            "}\n") % (zone_name(tmp_path), free_port())
    nginx.write(nginx_conf(nginx.prefix, body))
    rc, out = nginx.test_config()
    if message is not None:
        assert rc != 0 and message in out, out
        head = nginx_conf(nginx.prefix, "").count("\n") - 1
        assert "in %s:%d" % (nginx.conf, head + 4) in out, out
        return
    assert rc == 0, out
    p = subprocess.run([str(sidecar_bin), "-t", "--nginx-conf",
                        str(nginx.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0 and "test is successful" in p.stdout, p.stdout


@pytest.mark.parametrize("value,ok", [("150", True), ("1001", False)])
def test_nginx_t_max_identifiers(tmp_path, pebble, nginx_factory, value,
                                 ok):
    """max_identifiers is an issuer directive nginx -t knows, 1 to
    1000, as the sidecar reads it."""
    nginx = nginx_factory()
    body = ("acme_issuer example { uri %s; max_identifiers %s; }\n"
            "acme_shared_zone zone=%s:1M;\n") % (
                pebble.directory_url, value, zone_name(tmp_path))
    nginx.write(nginx_conf(nginx.prefix, body))
    rc, out = nginx.test_config()
    assert (rc == 0) == ok, out
    if not ok:
        assert 'invalid value "1001" in "max_identifiers" directive, it ' \
            'must be from 1 to 1000' in out, out


@pytest.mark.parametrize("value,ok", [("2m", True), ("11m", False)])
def test_nginx_t_request_timeout(tmp_path, pebble, nginx_factory, value,
                                 ok):
    """request_timeout is an issuer directive nginx -t knows, 1s to 10m,
    as the sidecar reads it."""
    nginx = nginx_factory()
    body = ("acme_issuer example { uri %s; request_timeout %s; }\n"
            "acme_shared_zone zone=%s:1M;\n") % (
                pebble.directory_url, value, zone_name(tmp_path))
    nginx.write(nginx_conf(nginx.prefix, body))
    rc, out = nginx.test_config()
    assert (rc == 0) == ok, out
    if not ok:
        assert 'invalid value "11m" in "request_timeout" directive, it ' \
            'must be from 1s to 10m' in out, out


def test_nginx_acme_04_words(tmp_path, nginx_factory, sidecar_bin):
    """nginx-acme 0.4's common_name_in_csr, state_path off (in two
    issuers: no folder of theirs is shared) and sizeless key types pass
    nginx -t and the sidecar's -t alike; a bad flag fails both, at its
    line."""
    nginx = nginx_factory()
    issuers = "".join(
        "acme_issuer %s { uri https://127.0.0.1:1/dir; state_path off; "
        "common_name_in_csr %s; }\n" % (name, cn)
        for name, cn in (("a", "on"), ("b", "off")))
    servers = "".join(
        "server {\n    listen 127.0.0.1:%d ssl;\n    server_name %s;\n"
        "    acme_certificate %s key=%s;\n"
        "    ssl_certificate $acme_certificate;\n"
        "    ssl_certificate_key $acme_certificate_key;\n}\n" %
        (free_port(), name, issuer, key)
        for name, issuer, key in (("r.test", "a", "rsa"),
                                  ("e.test", "b", "ecdsa")))
    body = issuers + "acme_shared_zone zone=%s:1M;\n" % zone_name(
        tmp_path) + servers
    nginx.write(nginx_conf(nginx.prefix, body))
    rc, out = nginx.test_config()
    assert rc == 0, out
    p = subprocess.run([str(sidecar_bin), "-t", "--nginx-conf",
                        str(nginx.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout

    text = nginx_conf(nginx.prefix, body.replace(
        "common_name_in_csr off", "common_name_in_csr maybe"))
    nginx.write(text)
    line = text[:text.index("maybe")].count("\n") + 1
    want = 'invalid value "maybe" in "common_name_in_csr" directive, ' \
        'it must be "on" or "off"'
    rc, out = nginx.test_config()
    assert rc != 0 and want in out, out
    assert "%s:%d" % (nginx.conf, line) in out, out
    p = subprocess.run([str(sidecar_bin), "-t", "--nginx-conf",
                        str(nginx.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode != 0 and want in p.stdout, p.stdout
    assert "%s:%d" % (nginx.conf, line) in p.stdout, p.stdout


def test_fallback_and_challenge_under_redirect(tmp_path, pebble, http_port,
                                               nginx_factory,
                                               sidecar_factory):
    """Before issuance a server with acme_fallback_certificate serves it;
    a port-80 server that redirects everything still answers challenges,
    so issuance works and the fallback gives way."""
    tls_port = free_port()
    fb_key, fb_cert = tmp_path / "fb.key", tmp_path / "fb.pem"
    from conftest import openssl
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(fb_key),
            "-out", str(fb_cert), "-subj", "/CN=fallback.invalid",
            "-days", "1")
    body = seed_http(pebble, tmp_path, tls_port, http_port)
    body = body.replace("    acme_certificate example;",
                        "    acme_certificate example;\n"
                        "    acme_fallback_certificate %s %s;" %
                        (fb_cert, fb_key))
    body = body.replace("        return 404;",
                        "        return 301 https://$host$request_uri;")
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, body))
    nginx.start([tls_port, http_port])
    leaf = served_leaf(tls_port, "example.test")
    assert fingerprint(leaf) == fingerprint(fb_cert.read_text())
    status, _ = http_get(http_port, "/.well-known/acme-challenge/nosuch")
    assert status == 301

    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    want = fingerprint(stored_leaf(tmp_path))
    deadline = time.monotonic() + 10
    while fingerprint(served_leaf(tls_port, "example.test")) != want:
        assert time.monotonic() < deadline, nginx.diagnostics()
        time.sleep(0.1)


# ------------------------------------------ segments the sidecar cannot make
#
# The tests below write proto/acme_shm.h segments themselves: planted by
# someone other than the sidecar, pointing outside their slot, changing
# under the reader, or with a certificate that does not parse.

import struct   # noqa: E402

ZONE_MAGIC, ZONE_IMAGE_MAGIC = 0x534D4341, 0x474D4941
ZONE_SIZE = 64 * 1024
ZONE_SLOT = (ZONE_SIZE - 128) // 2 & ~7
ZONE_SLOTS = (128, 128 + ZONE_SLOT)
NOBODY = 65534


def _fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def _nbuckets(n):
    b = 0 if n == 0 else 2
    while b and b < 2 * n:
        b *= 2
    return b


def zone_image(so, gen, certs=(), tokens=()):
    """The image of generation gen for the slot at so: (bytes, where),
    where maps each string, and "tokens" and "buckets", to its offset in
    the file.  certs: [(id, serial, chain, key)], tokens: [(token,
    keyauth)], all bytes."""
    nbi, nbt = _nbuckets(len(certs)), _nbuckets(len(tokens))
    certs_off = so + 64
    tokens_off = certs_off + 64 * len(certs)
    id_off = tokens_off + 16 * len(tokens)
    tok_off = id_off + 16 * nbi
    strings_off = tok_off + 16 * nbt
    strings = bytearray()
    where = {"tokens": tokens_off, "buckets": tok_off}

    def put(b):
        off = strings_off + len(strings)
        strings.extend(b + b"\0")
        where.setdefault(b, off)
        return off, len(b)

    def table(nb, keys):
        out = [bytes(16)] * nb
        for key, value in keys:
            h = _fnv1a(key)
            i = h & (nb - 1)
            while out[i] != bytes(16):
                i = (i + 1) & (nb - 1)
            out[i] = struct.pack("<IIII", h, where[key], len(key), value)
        return b"".join(out)

    entries = b""
    for cid, serial, chain, key in certs:
        entries += struct.pack("<QqqIIIIIIII8x", serial, 0, 0, *put(cid),
                               *put(b"fake"), *put(chain), *put(key))
    for token, keyauth in tokens:
        entries += struct.pack("<IIII", *put(token), *put(keyauth))
    tables = (table(nbi, [(c[0], i) for i, c in enumerate(certs)]) +
              table(nbt, [(t[0], i) for i, t in enumerate(tokens)]))
    head = struct.pack("<IIQIIIIIIIIII8x", ZONE_IMAGE_MAGIC,
                       strings_off - so + len(strings), gen, len(certs),
                       certs_off, len(tokens), tokens_off, nbi, id_off,
                       0, 0, nbt, tok_off)
    return head + entries + tables + bytes(strings), where


def zone_header(gen, size=ZONE_SIZE, slots=ZONE_SLOTS, slot_size=ZONE_SLOT):
    return struct.pack("<IIQIIIIII", ZONE_MAGIC, 1, gen, size, 128,
                       slots[0], slots[1], slot_size, 0).ljust(128, b"\0")


def zone_bytes(gen, certs=(), tokens=()):
    """A whole segment with generation gen published."""
    buf = bytearray(ZONE_SIZE)
    buf[0:128] = zone_header(gen)
    so = ZONE_SLOTS[gen % 2]
    img, _ = zone_image(so, gen, certs, tokens)
    buf[so:so + len(img)] = img
    return buf


def plant(path, data, mode=0o644, uid=0, gid=0):
    """data at path, a new file (a new inode) owned by uid:gid."""
    tmp = "%s.tmp" % path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, bytes(data))
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def publish(path, gen, certs=(), tokens=()):
    """Publish generation gen in place, as the sidecar does."""
    so = ZONE_SLOTS[gen % 2]
    img, _ = zone_image(so, gen, certs, tokens)
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, img, so)
        os.pwrite(fd, struct.pack("<Q", gen), 8)
    finally:
        os.close(fd)


def zone_server(nginx_factory, tmp_path, extra=""):
    """nginx reading zone_path(tmp_path): a TLS server for a.example.test
    and a plain HTTP server whose only location says 404.  Returns
    (nginx, tls port, http port)."""
    tls, plain = free_port(), free_port()
    body = """
acme_issuer fake {
    uri https://127.0.0.1:9/dir;
    state_path %(state)s;
}
acme_shared_zone zone=%(zone)s:64k path=%(path)s%(extra)s;
server {
    listen 127.0.0.1:%(tls)d ssl;
    server_name a.example.test;
    acme_certificate fake;
    ssl_certificate $acme_certificate;
    ssl_certificate_key $acme_certificate_key;
}
server {
    listen 127.0.0.1:%(plain)d;
    location / { return 404; }
}
""" % dict(state=tmp_path / "state", zone=zone_name(tmp_path),
           path=zone_path(tmp_path), extra=extra, tls=tls, plain=plain)
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, body))
    return nginx, tls, plain


def self_signed_pair(tmp_path, tag, name="a.example.test"):
    """(chain PEM, key PEM) as bytes."""
    from conftest import openssl
    key, crt = tmp_path / ("%s.key" % tag), tmp_path / ("%s.crt" % tag)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
            "-out", str(crt), "-subj", "/CN=" + name, "-days", "2")
    return crt.read_bytes(), key.read_bytes()


TOKEN = b"planted-token_0123456789"
KEYAUTH = TOKEN + b".thumbprint"
CHALLENGE = "/.well-known/acme-challenge/" + TOKEN.decode()


@pytest.fixture
def zone_extra(tmp_path):
    """Files the tests put beside the zone, removed at the end."""
    made = []
    yield lambda suffix: made.append("%s%s" % (zone_path(tmp_path),
                                               suffix)) or made[-1]
    for p in made:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _gone(path, plain):
    """Remove path and let the module notice (it logs the next problem
    afresh once the file is missing)."""
    os.unlink(path)
    assert http_get(plain, CHALLENGE)[0] == 404


def test_planted_zone_is_refused(tmp_path, nginx_factory, zone_extra):
    """/dev/shm is world-writable: a file planted there before the sidecar
    starts must not be believed.  A FIFO does not hold the workers, and a
    file owned by another user, writable by others, a symbolic link or a
    second name of a good file serves no key authorization; the log says
    what was found and what is expected.  A root-owned 0640 file is
    served, by the same workers."""
    path = zone_path(tmp_path)
    seg = zone_bytes(1, tokens=[(TOKEN, KEYAUTH)])
    os.mkfifo(path, 0o644)
    nginx, tls, plain = zone_server(nginx_factory, tmp_path)
    nginx.start([tls, plain])       # workers open the zone at start
    workers = nginx.worker_pids()
    assert http_get(plain, CHALLENGE)[0] == 404
    log = nginx.error_log()
    assert "refused: it is a FIFO owned by uid 0, mode 0644" in log, log
    _gone(path, plain)

    cases = [
        (dict(uid=NOBODY), "a regular file owned by uid %d, mode 0644, "
         "1 link(s); expected a regular file owned by uid 0" % NOBODY),
        (dict(mode=0o666), "owned by uid 0, mode 0666"),
        (dict(mode=0o660, gid=33), "owned by uid 0, mode 0660"),
    ]
    for how, line in cases:
        plant(path, seg, **how)
        assert http_get(plain, CHALLENGE)[0] == 404, how
        assert line in nginx.error_log(), (how, nginx.diagnostics())
        _gone(path, plain)

    good = zone_extra(".good")
    plant(good, seg)
    os.symlink(good, path)
    assert http_get(plain, CHALLENGE)[0] == 404
    assert 'shared zone "%s" is a symbolic link; refused' % path in \
        nginx.error_log(), nginx.diagnostics()
    _gone(path, plain)
    os.link(good, path)
    assert http_get(plain, CHALLENGE)[0] == 404
    assert "mode 0644, 2 link(s)" in nginx.error_log(), nginx.diagnostics()
    _gone(path, plain)

    plant(path, seg, mode=0o640, gid=33)
    assert http_get(plain, CHALLENGE) == (200, KEYAUTH.decode())
    assert nginx.worker_pids() == workers, nginx.diagnostics()


def test_zone_owner_parameter(tmp_path, nginx_factory):
    """owner=USER names who must own the zone instead of root."""
    path = zone_path(tmp_path)
    seg = zone_bytes(1, tokens=[(TOKEN, KEYAUTH)])
    nginx, tls, plain = zone_server(nginx_factory, tmp_path,
                                    " owner=nobody")
    nginx.start([tls, plain])
    plant(path, seg)
    assert http_get(plain, CHALLENGE)[0] == 404
    assert "expected a regular file owned by uid %d (owner=)" % NOBODY in \
        nginx.error_log(), nginx.diagnostics()
    _gone(path, plain)
    plant(path, seg, uid=NOBODY, mode=0o640, gid=33)
    assert http_get(plain, CHALLENGE) == (200, KEYAUTH.decode())

    bad, _, _ = zone_server(nginx_factory, tmp_path, " owner=no-such-user")
    rc, out = bad.test_config()
    assert rc != 0 and 'invalid owner "no-such-user"' in out, out


def _other_slot(where):
    """Segments whose published image (slot 1) points into slot 0 in one
    place; slot 0 holds the same strings, so a reader bounded only by the
    file would serve them."""
    tokens = [(TOKEN, KEYAUTH)]
    buf = bytearray(ZONE_SIZE)
    buf[0:128] = zone_header(1)
    img0, at0 = zone_image(ZONE_SLOTS[0], 1, tokens=tokens)
    img1, at1 = zone_image(ZONE_SLOTS[1], 1, tokens=tokens)
    buf[ZONE_SLOTS[0]:ZONE_SLOTS[0] + len(img0)] = img0
    if where == "image":        # every offset of the image
        buf[ZONE_SLOTS[1]:ZONE_SLOTS[1] + 64] = img0[:64]
        return buf
    s1 = ZONE_SLOTS[1]
    buf[s1:s1 + len(img1)] = img1
    if where == "keyauth":
        struct.pack_into("<I", buf, at1["tokens"] + 8, at0[KEYAUTH])
    elif where == "key":
        for i in range(2):      # the bucket that holds the token
            b = at1["buckets"] + 16 * i
            if struct.unpack_from("<I", buf, b + 8)[0]:
                struct.pack_into("<I", buf, b + 4, at0[TOKEN])
    return buf


@pytest.mark.parametrize("where", ["image", "keyauth", "key"])
def test_offsets_outside_the_slot(tmp_path, nginx_factory, where):
    """Offsets into the other slot, which the writer may be rewriting,
    are refused even though they lie inside the file; the same segment
    with slot 1 complete is served (the test can tell)."""
    path = zone_path(tmp_path)
    nginx, tls, plain = zone_server(nginx_factory, tmp_path)
    nginx.start([tls, plain])
    plant(path, _other_slot(where))
    status, body = http_get(plain, CHALLENGE)
    assert status == 404, (where, body)
    assert "the shared zone is malformed" in nginx.error_log()
    plant(path, _other_slot("none"))
    time.sleep(1.2)     # the module looks for a new file once a second
    assert http_get(plain, CHALLENGE) == (200, KEYAUTH.decode())


# Alone: the flipper and the requests hammer for 6 s; sharing the CPU
# would leave fewer flips to race the workers.
@pytest.mark.serial
def test_header_changing_under_the_workers(tmp_path, nginx_factory):
    """Someone able to write the zone flips header.size between a sane
    value and a huge one, with slot 1 far outside the file: the workers
    must re-read nothing they checked, so none of them crashes."""
    path = zone_path(tmp_path)
    buf = zone_bytes(1, tokens=[(TOKEN, KEYAUTH)])
    struct.pack_into("<II", buf, 28, 0x7FFF0000, 0x1000)   # slot_off[1]
    plant(path, buf)
    nginx, tls, plain = zone_server(nginx_factory, tmp_path)
    nginx.start([tls, plain])
    workers = nginx.worker_pids()
    flipper = subprocess.Popen(["/usr/bin/python3", "-c", """
import mmap, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(10000):
        m[16:20] = b"\\x00\\x00\\x01\\x00"
        m[16:20] = b"\\x00\\xff\\xff\\xff"
m[16:20] = struct.pack("<I", 65536)
""", str(path), "6"])
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            http_get(plain, CHALLENGE)
    finally:
        flipper.wait(20)
    assert nginx.worker_pids() == workers, nginx.diagnostics()
    assert "exited on signal" not in nginx.error_log(), nginx.diagnostics()


def test_same_serial_in_a_new_file(tmp_path, nginx_factory):
    """Serials say "same bytes" within one file only: a new file (the
    sidecar started over) whose entry has the serial of the parsed one
    but other bytes is served, not the parsed one."""
    path = zone_path(tmp_path)
    x = self_signed_pair(tmp_path, "x")
    y = self_signed_pair(tmp_path, "y")
    plant(path, zone_bytes(1, certs=[(b"a.example.test", 7, *x)]))
    nginx, tls, plain = zone_server(nginx_factory, tmp_path)
    nginx.start([tls, plain])
    assert fingerprint(served_leaf(tls, "a.example.test")) == \
        fingerprint(x[0].decode())
    plant(path, zone_bytes(1, certs=[(b"a.example.test", 7, *y)]))
    time.sleep(1.2)     # the module looks for a new file once a second
    assert fingerprint(served_leaf(tls, "a.example.test")) == \
        fingerprint(y[0].decode()), nginx.diagnostics()


def test_new_serial_that_does_not_parse(tmp_path, nginx_factory):
    """A new serial whose PEM does not parse leaves the parsed
    certificate in service while it is valid, with one log line; the
    next good serial replaces it."""
    path = zone_path(tmp_path)
    x = self_signed_pair(tmp_path, "x")
    y = self_signed_pair(tmp_path, "y")
    cid = b"a.example.test"
    plant(path, zone_bytes(1, certs=[(cid, 1, *x)]))
    nginx, tls, plain = zone_server(nginx_factory, tmp_path)
    nginx.start([tls, plain])
    assert fingerprint(served_leaf(tls, "a.example.test")) == \
        fingerprint(x[0].decode())
    garbage = b"-----BEGIN CERTIFICATE-----\nnot base64\n" \
        b"-----END CERTIFICATE-----\n"
    publish(path, 2, certs=[(cid, 2, garbage, x[1])])
    for _ in range(3):
        assert fingerprint(served_leaf(tls, "a.example.test")) == \
            fingerprint(x[0].decode()), nginx.diagnostics()
    log = nginx.error_log()
    assert log.count("(serial 2) in shared zone") == 1, log
    assert "does not parse; serving serial 1 until it expires" in log
    publish(path, 3, certs=[(cid, 3, *y)])
    assert fingerprint(served_leaf(tls, "a.example.test")) == \
        fingerprint(y[0].decode()), nginx.diagnostics()
