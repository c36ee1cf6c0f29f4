"""The njs reader (src/njs/acme.js) in a real nginx, reading the segment
that the real daemon publishes after issuing from a real Pebble.

nginx runs with "user www-data;", as on a Debian host: the segment is
0640 root:www-data, so the workers read it through its group, exactly
the permission a user's nginx relies on (with "user root;" a wrong mode
or group would go unnoticed).  The workers need nothing else on disk:
js_import is compiled by the master, which is root, at config load, and
the logs are opened by the master too.  So acme.js is imported straight
from the source tree and the prefix may live in pytest's 0700 tmp_path.
"""

import grp
import hashlib
import mmap
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, cert_id, free_port, split_pem, tail

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"
ACME_JS = ROOT / "src" / "njs" / "acme.js"

A = ["a.example.test"]
B = ["b.example.test", "www.b.example.test"]


# ---------------------------------------------------------------- helpers

def fingerprint(pem):
    p = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                        "-sha256"], input=pem, capture_output=True,
                       text=True, check=True)
    return p.stdout.strip()


def stored_chain(state, names, key=None):
    return (Path(state) / "certs" / cert_id(names, key) /
            "fullchain.pem").read_text()


class Handshake:
    """openssl s_client against nginx: what a TLS client observes."""

    def __init__(self, port, name, root, tls="-tls1_3"):
        args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                "-showcerts", tls]
        if root is not None:
            args += ["-CAfile", str(root)]
        if name is None:
            args.append("-noservername")
        else:
            args += ["-servername", name, "-verify_hostname", name]
        p = subprocess.run(args, input="", capture_output=True, text=True,
                           timeout=20)
        self.name = name
        self.rc = p.returncode
        self.out = p.stdout + p.stderr
        self.chain = split_pem(p.stdout)
        m = re.search(r"Verify return code: (\d+)", p.stdout)
        self.verify = int(m.group(1)) if m else None
        m = re.search(r"^New, (TLSv[0-9.]+),", p.stdout, re.M)
        self.protocol = m.group(1) if m else None

    @property
    def ok(self):
        return self.rc == 0 and len(self.chain) > 0

    def leaf(self):
        assert self.ok, "handshake for %r failed:\n%s" % (self.name,
                                                         self.out)
        return fingerprint(self.chain[0])


class Nginx:
    """/usr/sbin/nginx -p DIR in the foreground, master plus one worker."""

    def __init__(self, prefix):
        self.prefix = Path(prefix)
        self.proc = None
        self.servers = []

    @property
    def error_log(self):
        return self.prefix / "error.log"

    def server(self, path, fallback=None):
        """A TLS server on a free port reading the segment at path, with
        fallback as its $acme_certificate_id; returns the port."""
        port = free_port()
        self.servers.append((port, path, fallback))
        return port

    def write(self):
        """nginx.conf for the servers.  The per-server settings go through
        maps on $server_name: js_var is http-wide in njs 0.7.9 (its last
        definition wins, even inside a server{}) and "set" does not run
        during the handshake."""
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        p = self.prefix
        names = {port: "server-%d.invalid" % port
                 for port, _, _ in self.servers}
        paths = {path for _, path, _ in self.servers}
        if len(paths) == 1:
            # As in conf/nginx-njs.conf: one http-wide js_var.
            paths = ["    js_var $acme_shared_path %s;" % paths.pop()]
        else:
            paths = (["    map $server_name $acme_shared_path {"] +
                     ["        %s %s;" % (names[port], path)
                      for port, path, _ in self.servers] + ["    }"])
        ids = (["    map $server_name $acme_certificate_id {",
                "        default \"\";"] +
               ["        %s %s;" % (names[port], fallback)
                for port, _, fallback in self.servers if fallback] +
               ["    }"])
        servers = []
        for port, _, _ in self.servers:
            servers += [
                "    server {",
                "        listen 127.0.0.1:%d ssl;" % port,
                "        server_name %s;" % names[port],
                "        ssl_certificate $acme_certificate;",
                "        ssl_certificate_key $acme_certificate_key;",
                "        location / { return 200 \"$ssl_server_name\\n\"; }",
                "    }",
            ]
        conf = "\n".join([
            "load_module %s;" % NJS_MODULE,
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            "user www-data;",
            "pid %s/nginx.pid;" % p,
            "error_log %s/error.log info;" % p,
            "events { worker_connections 64; }",
            "http {",
            "    access_log off;",
            "    client_body_temp_path %s/tmp/body;" % p,
            "    proxy_temp_path %s/tmp/proxy;" % p,
            "    fastcgi_temp_path %s/tmp/fastcgi;" % p,
            "    uwsgi_temp_path %s/tmp/uwsgi;" % p,
            "    scgi_temp_path %s/tmp/scgi;" % p,
            # Every s_client must make a full handshake, which is when
            # nginx evaluates the certificate variables.
            "    ssl_session_cache off;",
            "    ssl_session_tickets off;",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            "    js_import acme from %s;" % ACME_JS,
            "    js_set $acme_certificate acme.certificate;",
            "    js_set $acme_certificate_key acme.key;",
        ] + paths + ids + servers + [
            "}",
        ]) + "\n"
        (p / "nginx.conf").write_text(conf)

    def start(self, timeout=10.0):
        t = subprocess.run([NGINX, "-t", "-p", str(self.prefix), "-c",
                            str(self.prefix / "nginx.conf")],
                           capture_output=True, text=True)
        assert t.returncode == 0, "nginx -t: " + t.stderr
        with open(self.prefix / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c",
                 str(self.prefix / "nginx.conf")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        for port, _, _ in self.servers:
            while True:
                assert self.proc.poll() is None, (
                    "nginx exited: " + self.diagnostics())
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail("nginx does not listen on %d%s" %
                                    (port, self.diagnostics()))
                    time.sleep(0.05)
        return self

    def workers(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid",
                              str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return sorted(int(x) for x in out.split())

    def log(self):
        return self.error_log.read_text(errors="replace")

    def diagnostics(self):
        return "\n--- nginx error.log (tail) ---\n" + tail(self.error_log)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def sidecar_config(path, pebble, state, http_port, zone, certs):
    """The daemon's own config: one Pebble issuer, the zone, certs."""
    lines = [
        "acme_issuer pebble {",
        "    uri %s;" % pebble.directory_url,
        "    state_path %s;" % state,
        "    accept_terms_of_service;",
        "    ssl_trusted_certificate %s;" % pebble.ca,
        "    request_rate off;",
        "}",
        "challenge_listen 127.0.0.1:%d;" % http_port,
        "control_socket %s;" % (Path(path).parent / "control.sock"),
        "acme_shared_zone zone=%s:256k;" % zone,
    ]
    for names, key in certs:
        lines.append("acme_certificate pebble %s%s;" % (
            " ".join(names), " key=" + key if key else ""))
    Path(path).write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def zone():
    """A zone name of this test's own; its /dev/shm file goes at the end."""
    name = "acme-test-%d-%s" % (os.getpid(), secrets.token_hex(4))
    yield name
    for suffix in ("", "-junk", "-v2", "-private"):
        try:
            os.unlink("/dev/shm/" + name + suffix)
        except FileNotFoundError:
            pass


@pytest.fixture
def nginx(tmp_path):
    n = Nginx(tmp_path / "nginx")
    yield n
    n.stop()


@pytest.fixture
def issued(tmp_path, pebble, http_port, sidecar_factory, zone):
    """The daemon, running, with A and B issued into the zone."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    sidecar_config(conf, pebble, state, http_port, zone,
                   [(A, None), (B, None)])
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, [cert_id(A), cert_id(B)])
    return state, conf, sidecar


def wait_leaf(port, name, root, want, timeout=30.0):
    """Handshake until the served leaf is want; the last Handshake."""
    deadline = time.monotonic() + timeout
    while True:
        h = Handshake(port, name, root)
        if h.ok and fingerprint(h.chain[0]) == want:
            return h
        if time.monotonic() > deadline:
            return h
        time.sleep(0.2)


# ------------------------------------------------------------------- tests

def test_njs_serves_each_name(tmp_path, pebble, issued, zone, nginx):
    state, conf, sidecar = issued
    path = "/dev/shm/" + zone
    st = os.stat(path)
    assert (st.st_mode & 0o777, st.st_gid) == \
        (0o640, grp.getgrnam("www-data").gr_gid), \
        "the segment must be 0640 and group www-data, as the workers"
    plain = nginx.server(path)
    fallback = nginx.server(path, fallback=cert_id(A))
    nginx.write()
    nginx.start()

    intermediate = Path(pebble.intermediate).read_text()
    for names in (A, B):
        want = fingerprint(split_pem(stored_chain(state, names))[0])
        for name in names + [names[-1].upper()]:
            # The sidecar may still be publishing the second certificate.
            h = wait_leaf(plain, name, pebble.root, want, timeout=10)
            assert h.leaf() == want, (
                "SNI %s: nginx serves another certificate than %s/%s%s" %
                (name, state, cert_id(names), nginx.diagnostics()))
            assert h.verify == 0, (
                "SNI %s: the served chain does not verify against "
                "Pebble's root:\n%s" % (name, h.out))
            assert h.protocol == "TLSv1.3", h.out
            assert [fingerprint(c) for c in h.chain[1:]] == \
                [fingerprint(intermediate)], (
                    "SNI %s: the chain served is not leaf + Pebble's "
                    "intermediate" % name)
    h12 = Handshake(plain, B[1], pebble.root, tls="-tls1_2")
    assert h12.protocol == "TLSv1.2" and h12.verify == 0, h12.out
    assert h12.leaf() == fingerprint(split_pem(stored_chain(state, B))[0])

    # No certificate for the name and no fallback: no handshake, and
    # the reason is in nginx's error log.
    h = Handshake(plain, "nope.example.test", pebble.root)
    assert not h.ok, "an unknown name got a certificate:\n" + h.out
    assert re.search(r'\[error\].*js: acme: no certificate for server name '
                     r'"nope\.example\.test"', nginx.log()), \
        nginx.diagnostics()
    h = Handshake(plain, None, pebble.root)
    assert not h.ok, "a client without SNI got a certificate:\n" + h.out
    assert "js: acme: the client sent no server name" in nginx.log()

    # With $acme_certificate_id, both get that certificate instead.
    want_a = fingerprint(split_pem(stored_chain(state, A))[0])
    for name in ("nope.example.test", None):
        h = Handshake(fallback, name, pebble.root)
        assert h.leaf() == want_a, "fallback for %r:\n%s" % (name, h.out)
    # ... but a name that has its own certificate still gets it.
    h = Handshake(fallback, B[0], pebble.root)
    assert h.leaf() == fingerprint(split_pem(stored_chain(state, B))[0])

    assert sidecar.alive()
    assert "js exception" not in nginx.log(), nginx.diagnostics()


def test_njs_new_certificate_without_reload(tmp_path, pebble, http_port,
                                            issued, zone, nginx):
    """A new certificate for an id reaches nginx with no reload.  The
    daemon is stopped (nginx keeps serving from the segment it leaves)
    and restarted with one more name for A: it orders a new certificate
    under the same id, as a renewal does, and publishes it into the same
    segment, where nginx's same worker finds it."""
    state, conf, sidecar = issued
    port = nginx.server("/dev/shm/" + zone)
    nginx.write()
    nginx.start()
    old = fingerprint(split_pem(stored_chain(state, A))[0])
    assert Handshake(port, A[0], pebble.root).leaf() == old
    workers = nginx.workers()
    assert len(workers) == 1

    assert sidecar.stop() == 0
    assert Handshake(port, A[0], pebble.root).leaf() == old
    a2 = A + ["www.a.example.test"]
    sidecar_config(conf, pebble, state, http_port, zone, [(a2, None),
                                                          (B, None)])
    sidecar.start()
    deadline = time.monotonic() + 60
    while fingerprint(split_pem(stored_chain(state, A))[0]) == old:
        assert sidecar.alive(), sidecar.diagnostics()
        assert time.monotonic() < deadline, (
            "no new certificate for %s%s" % (A[0], sidecar.diagnostics()))
        time.sleep(0.2)
    new = fingerprint(split_pem(stored_chain(state, A))[0])

    for name in a2:
        h = wait_leaf(port, name, pebble.root, new)
        assert h.ok and fingerprint(h.chain[0]) == new, (
            "%s: nginx serves %s, not the new certificate:\n%s%s%s" %
            (name, fingerprint(h.chain[0]) if h.ok else "nothing", h.out,
             nginx.diagnostics(), sidecar.diagnostics()))
        assert h.verify == 0, h.out
    assert nginx.workers() == workers, "nginx was reloaded"
    assert "reconfiguring" not in nginx.log()
    # B was not touched and is still served.
    assert Handshake(port, B[0], pebble.root).leaf() == \
        fingerprint(split_pem(stored_chain(state, B))[0])


def header(version=1, size=4096, generation=1):
    """A struct acme_shm_header, for segments that must be refused."""
    h = struct.pack("<IIQIIIIII", 0x534d4341, version, generation, size,
                    128, 128, 128 + 1984, 1984, 0)
    return h + bytes(128 - len(h))


def test_njs_refuses_bad_segments(tmp_path, zone, nginx):
    """A missing file, a file that is not a segment, a layout version
    this acme.js does not know and a file the workers may not read: the
    handshake fails, and error.log says which."""
    missing = "/dev/shm/%s" % zone
    junk = "/dev/shm/%s-junk" % zone
    v2 = "/dev/shm/%s-v2" % zone
    private = "/dev/shm/%s-private" % zone
    with open(junk, "wb") as f:
        f.write(b"\x7fELF" + bytes(4092))
    with open(v2, "wb") as f:
        f.write(header(version=2).ljust(4096, b"\0"))
    with open(private, "wb") as f:
        f.write(header().ljust(4096, b"\0"))
    for p in (junk, v2):
        os.chmod(p, 0o644)
    os.chmod(private, 0o600)    # root's alone: not for www-data workers
    ports = [nginx.server(p, fallback="a.example.test")
             for p in (missing, junk, v2, private)]
    nginx.write()
    nginx.start()

    expect = [
        r"js: acme: cannot open %s: No such file or directory" %
        re.escape(missing),
        r"js: acme: %s: not an acme-sidecar segment \(magic 0x464c457f\)" %
        re.escape(junk),
        r"js: acme: %s: segment layout version 2, this acme\.js reads "
        r"version 1" % re.escape(v2),
        r"js: acme: cannot open %s: Permission denied" % re.escape(private),
    ]
    for port, rx in zip(ports, expect):
        h = Handshake(port, "a.example.test", None)
        assert not h.ok, h.out
        assert re.search(r"\[error\].*" + rx, nginx.log()), (
            "no line /%s/ in error.log%s" % (rx, nginx.diagnostics()))
    # nginx's own line after ours: the variable held no certificate.
    assert 'cannot load certificate "data:"' in nginx.log()


# ------------------------------------------------- a writer under our control

MAGIC, IMAGE_MAGIC = 0x534D4341, 0x474D4941


def fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


class FakeSegment:
    """A second writer of proto/acme_shm.h, for what the daemon cannot be
    made to do on demand: publish thousands of generations a second, and
    lay a hash table out with chosen collisions.  It follows the same
    protocol: build the next image in the slot readers of the current
    generation do not look at, then store the new generation."""

    SIZE = 256 * 1024

    def __init__(self, path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.fchmod(fd, 0o644)
        os.ftruncate(fd, self.SIZE)
        self.mm = mmap.mmap(fd, self.SIZE)
        os.close(fd)
        slot = (self.SIZE - 128) // 2 & ~7
        self.slot_off = (128, 128 + slot)
        self.gen = 0
        self.mm[0:128] = struct.pack(
            "<IIQIIIIII", MAGIC, 1, 0, self.SIZE, 128, self.slot_off[0],
            self.slot_off[1], slot, 0).ljust(128, b"\0")

    @staticmethod
    def _table(nbuckets, off, keys, strings_at):
        """Buckets for keys [(bytes, value)], linear probing."""
        b = [None] * nbuckets
        for key, value in keys:
            h = fnv1a(key)
            i = h & (nbuckets - 1)
            while b[i] is not None:
                i = (i + 1) & (nbuckets - 1)
            b[i] = struct.pack("<IIII", h, strings_at[key], len(key), value)
        return b"".join(x or bytes(16) for x in b)

    def image(self, so, gen, certs, name_buckets):
        """certs: [(id, [names], chain, key)], all str."""
        n = len(certs)
        id_buckets = 1
        while id_buckets < 2 * n:
            id_buckets *= 2
        certs_off = so + 64
        id_off = certs_off + 64 * n
        name_off = id_off + 16 * id_buckets
        strings_off = name_off + 16 * name_buckets
        strings = bytearray()
        at = {}

        def put(s):
            b = s.encode()
            off = strings_off + len(strings)
            strings.extend(b + b"\0")
            at.setdefault(b, off)
            return off, len(b)

        entries = b""
        ids, names = [], []
        for i, (cid, cnames, chain, key) in enumerate(certs):
            id_ = put(cid)
            iss = put("fake")
            ch = put(chain)
            k = put(key)
            entries += struct.pack("<QqqIIIIIIII8x", 1000 + i, 0, 0, *id_,
                                   *iss, *ch, *k)
            ids.append((cid.encode(), i))
            for nm in cnames:
                put(nm)
                names.append((nm.encode(), i))
        img = struct.pack("<IIQIIIIIIIIII8x", IMAGE_MAGIC,
                          strings_off - so + len(strings), gen, n,
                          certs_off, 0, id_off, id_buckets, id_off,
                          name_buckets, name_off, 0, strings_off)
        return (img + entries + self._table(id_buckets, id_off, ids, at) +
                self._table(name_buckets, name_off, names, at) +
                bytes(strings))

    def publish(self, certs, name_buckets=16):
        gen = self.gen + 1
        so = self.slot_off[gen % 2]
        img = self.image(so, gen, certs, name_buckets)
        self.mm[so:so + len(img)] = img
        self.mm[8:16] = struct.pack("<Q", gen)
        self.gen = gen

    def close(self):
        self.mm.close()


def self_signed(workdir, tag, names):
    """(chain PEM, PKCS#8 key PEM) of a self-signed ECDSA certificate."""
    key = workdir / ("%s.key" % tag)
    crt = workdir / ("%s.crt" % tag)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "1",
                    "-subj", "/CN=" + names[0], "-addext",
                    "subjectAltName=" + ",".join("DNS:" + n for n in names)],
                   check=True, capture_output=True)
    return crt.read_text(), key.read_text()


def der_digest(pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def tls_leaf(port, name):
    """The digest of the leaf served for name, or None if the handshake
    fails.  Python's ssl is quick enough for hundreds of handshakes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                return hashlib.sha256(t.getpeercert(True)).hexdigest()
    except (OSError, ssl.SSLError):
        return None


@pytest.fixture
def fake_segment(zone):
    seg = FakeSegment("/dev/shm/" + zone)
    yield seg
    seg.close()


def home(name, nbuckets):
    return fnv1a(name.encode()) & (nbuckets - 1)


def test_njs_probes_across_reads_and_wraps(tmp_path, zone, fake_segment,
                                           nginx):
    """Names whose hashes collide: one probe sequence runs past the end
    of the table and through more buckets than one read fetches."""
    # Six names at home 13 fill 13, 14, 15, 0, 1, 2; two at home 14 go
    # to 3 and 4: half of 16 buckets, as the contract allows.
    pool = ("c%d.example.test" % i for i in range(100000))
    at13 = [n for n in pool if home(n, 16) == 13][:7]
    pool = ("d%d.example.test" % i for i in range(100000))
    at14 = [n for n in pool if home(n, 16) == 14][:2]
    absent = at13.pop()     # probes 13..4 and stops at the empty 5
    x = self_signed(tmp_path, "x", ["x.example.test"])
    y = self_signed(tmp_path, "y", ["y.example.test"])
    certs = [("x.example.test", at13[0::2] + at14[:1], *x),
             ("y.example.test", at13[1::2] + at14[1:], *y)]
    fake_segment.publish(certs, name_buckets=16)
    path = "/dev/shm/" + zone
    port = nginx.server(path)
    fallback = nginx.server(path, fallback="y.example.test")
    nginx.write()
    nginx.start()

    for cid, names, chain, _ in certs:
        for name in names:
            assert tls_leaf(port, name) == der_digest(chain), (
                "%s (bucket %d) is not served %s%s" %
                (name, home(name, 16), cid, nginx.diagnostics()))
    assert tls_leaf(port, absent) is None
    assert 'no certificate for server name "%s"' % absent in nginx.log()
    # The fallback is looked up by id.
    assert tls_leaf(fallback, absent) == der_digest(y[0])
    assert tls_leaf(fallback, None) == der_digest(y[0])


# Alone: the writer must outpace the handshakes (published > 2 * seen).
@pytest.mark.serial
def test_njs_certificate_and_key_match_while_publishing(tmp_path, zone,
                                                        fake_segment, nginx):
    """The writer flips a name between two certificates (with their own
    keys) thousands of times a second while nginx handshakes: every
    handshake gets one of them, with its own key.  A key read apart from
    its certificate would fail about one handshake in ten here (nginx
    refuses a key that does not match), and a read of a slot being
    rewritten would serve garbage."""
    name = "h.example.test"
    x = self_signed(tmp_path, "x", [name])
    y = self_signed(tmp_path, "y", [name])
    images = [[(name, [name], *x)], [(name, [name], *y)]]
    fake_segment.publish(images[0])
    port = nginx.server("/dev/shm/" + zone)
    nginx.write()
    nginx.start()

    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            i += 1
            fake_segment.publish(images[i % 2])
            time.sleep(0.0002)

    writer = threading.Thread(target=flip)
    writer.start()
    try:
        seen = [tls_leaf(port, name) for _ in range(400)]
    finally:
        stop.set()
        writer.join()
    published = fake_segment.gen
    want = {der_digest(x[0]), der_digest(y[0])}
    failed = seen.count(None)
    assert failed == 0, "%d of %d handshakes failed%s" % (
        failed, len(seen), nginx.diagnostics())
    assert set(seen) == want, "both certificates must have been served"
    assert published > 2 * len(seen), (
        "only %d generations during %d handshakes: the writer was too "
        "slow to test anything" % (published, len(seen)))
    assert "[error]" not in nginx.log(), nginx.diagnostics()


def test_njs_renewal_without_reload(tmp_path, pebble_factory, http_port,
                                    sidecar_factory, zone, nginx):
    """Short-lived certificates renew at half their life: nginx serves the
    new one through njs with no reload (same worker) and not one failed
    handshake while it happens."""
    from nginxlib import served_while
    validity = 30
    pebble = pebble_factory(http_port, validity=validity)
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    sidecar_config(conf, pebble, state, http_port, zone, [(A, None)])
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, [cert_id(A)])
    port = nginx.server("/dev/shm/" + zone)
    nginx.write()
    nginx.start()
    workers = nginx.workers()
    first = fingerprint(split_pem(stored_chain(state, A))[0])
    assert fingerprint(wait_leaf(port, A[0], pebble.root, first).chain[0]) \
        == first

    renewed = {}

    def changed():
        renewed["now"] = fingerprint(split_pem(stored_chain(state, A))[0])
        return renewed["now"] != first

    served = served_while(port, A[0], changed, validity + 20,
                          sidecar.diagnostics)
    now = renewed["now"]
    assert now in served, "njs kept serving the old certificate"
    assert nginx.workers() == workers, "nginx was reloaded"


# ------------------------------------------------- files nobody should trust

NOBODY = 65534


@pytest.fixture
def shm_files(zone):
    """Names in /dev/shm for this test; whatever is there at the end goes."""
    made = []

    def name(suffix):
        made.append("/dev/shm/%s-%s" % (zone, suffix))
        return made[-1]

    yield name
    for p in made:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def test_njs_refuses_untrusted_zones(tmp_path, shm_files, nginx):
    """/dev/shm is world-writable: a segment someone else planted there
    must not be served.  A FIFO fails the handshake at once instead of
    holding the worker; a file owned by another user, writable by
    others, a symbolic link or a second name of a good file is refused
    with a line that says what it is and what is expected.  The same
    segment as a root-owned 0644 file is served (the test can tell)."""
    name = "t.example.test"
    x = self_signed(tmp_path, "x", [name])
    certs = [(name, [name], *x)]

    def segment(path, uid=0, mode=0o644):
        seg = FakeSegment(path)
        seg.publish(certs)
        seg.close()
        os.chown(path, uid, uid)
        os.chmod(path, mode)
        return path

    good = segment(shm_files("good"))
    linked = segment(shm_files("linked"))
    os.link(linked, shm_files("linked2"))
    symlink = shm_files("symlink")
    os.symlink(good, symlink)
    fifo = shm_files("fifo")
    os.mkfifo(fifo, 0o644)
    cases = [
        (segment(shm_files("nobody"), uid=NOBODY),
         "a regular file owned by uid %d, mode 0644, 1 link\\(s\\); "
         "expected a regular file owned by uid 0 \\(\\$acme_shared_owner\\)"
         ", not writable by group or others, with one link" % NOBODY),
        (segment(shm_files("writable"), mode=0o666),
         "a regular file owned by uid 0, mode 0666"),
        (symlink, "a symbolic link owned by uid 0"),
        (linked, "a regular file owned by uid 0, mode 0644, 2 link\\(s\\)"),
        (fifo, "a FIFO owned by uid 0, mode 0644"),
    ]
    good_port = nginx.server(good)
    ports = [nginx.server(path) for path, _ in cases]
    nginx.write()
    nginx.start()

    assert tls_leaf(good_port, name) == der_digest(x[0]), nginx.diagnostics()
    for port, (path, rx) in zip(ports, cases):
        h = Handshake(port, name, None)
        assert not h.ok, (path, h.out)
        rx = r"\[error\].*js: acme: %s refused: it is %s" % (
            re.escape(path), rx)
        assert re.search(rx, nginx.log()), (
            "no line /%s/ in error.log%s" % (rx, nginx.diagnostics()))
    assert tls_leaf(good_port, name) == der_digest(x[0]), nginx.diagnostics()


def test_njs_shared_owner_variable(tmp_path, shm_files, nginx):
    """js_var $acme_shared_owner names the uid that must own the segment
    (the sidecar's user) instead of root."""
    name = "o.example.test"
    x = self_signed(tmp_path, "x", [name])
    paths = []
    for tag, uid in (("theirs", NOBODY), ("roots", 0)):
        path = shm_files(tag)
        seg = FakeSegment(path)
        seg.publish([(name, [name], *x)])
        seg.close()
        os.chown(path, uid, uid)
        paths.append(path)
    ports = [nginx.server(p) for p in paths]
    nginx.write()
    conf = nginx.prefix / "nginx.conf"
    text = conf.read_text()
    assert "js_var $acme_shared_owner" not in text
    conf.write_text(text.replace(
        "    js_set $acme_certificate acme.certificate;",
        "    js_var $acme_shared_owner %d;\n"
        "    js_set $acme_certificate acme.certificate;" % NOBODY))
    nginx.start()
    assert tls_leaf(ports[0], name) == der_digest(x[0]), nginx.diagnostics()
    assert tls_leaf(ports[1], name) is None
    assert "%s refused: it is a regular file owned by uid 0, mode 0644, " \
        "1 link(s); expected a regular file owned by uid %d" % (
            paths[1], NOBODY) in nginx.log(), nginx.diagnostics()


@pytest.mark.parametrize("where", ["image", "chain"])
def test_njs_offsets_outside_the_slot(tmp_path, zone, fake_segment, nginx,
                                      where):
    """The published image (slot 1) points into slot 0, which the writer
    may be rewriting, while slot 0 holds the same bytes: refused, though
    every offset lies inside the file.  Published properly, the same
    certificate is served (the test can tell)."""
    name = "s.example.test"
    x = self_signed(tmp_path, "x", [name])
    certs = [(name, [name], *x)]
    seg = fake_segment
    so0, so1 = seg.slot_off
    img0 = seg.image(so0, 1, certs, 16)
    seg.mm[so0:so0 + len(img0)] = img0
    if where == "image":        # the image header of slot 0's image
        seg.mm[so1:so1 + 64] = img0[:64]
    else:                       # the chain of slot 1's entry in slot 0
        img1 = seg.image(so1, 1, certs, 16)
        seg.mm[so1:so1 + len(img1)] = img1
        chain_off = struct.unpack_from("<I", img1, 64 + 40)[0]
        struct.pack_into("<I", seg.mm, so1 + 64 + 40,
                         chain_off - (so1 - so0))
    seg.mm[8:16] = struct.pack("<Q", 1)
    seg.gen = 1
    port = nginx.server("/dev/shm/" + zone)
    nginx.write()
    nginx.start()

    assert tls_leaf(port, name) is None
    rx = (r"js: acme: /dev/shm/%s: (bad hash table|\d+ bytes at offset \d+ "
          r"lie outside its slot)" % re.escape(zone))
    assert re.search(rx, nginx.log()), nginx.diagnostics()
    seg.publish(certs)
    seg.publish(certs)          # generation 3: slot 1 again, whole
    assert tls_leaf(port, name) == der_digest(x[0]), nginx.diagnostics()
