"""Local attackers and hostile files at the shared zone's path (issue 12).

The zone lives in /dev/shm (or a tmpfs folder) that everyone may write,
so its path may hold a file someone else made before the daemon starts;
a process that can write the zone may truncate it under nginx and the
daemon; and path= may name a file that is not a zone at all.  Each test
plays the attacker's steps as nobody where rights matter (the tests run
as root) and checks what a user would see: the daemon refuses with a
line naming the path, its owner and its mode, no process dies, and no
file is wiped.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

import shmread
from conftest import (SIDECAR, Sidecar, free_port, openssl, split_pem,
                      zone_name, zone_path)
from nginxlib import (MODULE, fingerprint, handshake, http_get,
                      nginx_factory)
from test_nginx_module import (nginx_conf, plant, seed_http, sidecar_conf,
                               zone_bytes, zone_server, CHALLENGE, KEYAUTH,
                               TOKEN)

__all__ = ["nginx_factory"]

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
             "--clear-groups"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="playing another user needs root")


def as_nobody(code, *args, input=b""):
    """Run python code as nobody, input on its stdin."""
    p = subprocess.run(AS_NOBODY + ["/usr/bin/python3", "-c", code,
                                    *map(str, args)], input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    assert p.returncode == 0, p.stderr


def sidecar_config(tmp_path, port=None, path=None, size="64k"):
    """A daemon that needs no CA to reach its zone: the issuer points at
    a closed port and no certificate is configured."""
    conf = tmp_path / "acme-sidecar.conf"
    conf.write_text("""acme_issuer fake {
    uri https://127.0.0.1:9/dir;
    state_path %s;
    accept_terms_of_service;
}
challenge_listen 127.0.0.1:%d;
control_socket %s;
acme_shared_zone zone=%s:%s%s;
""" % (tmp_path / "state", port or free_port(), tmp_path / "control.sock",
           zone_name(tmp_path), size, " path=%s" % path if path else ""))
    return conf


def refused(tmp_path, conf, timeout=5.0):
    """Start the daemon and expect it to exit at once: its log."""
    s = Sidecar(tmp_path, conf)
    s.start()
    try:
        rc = s.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log = s.log()
        s.kill()
        pytest.fail("the daemon started:\n" + log, pytrace=False)
    log = s.log()
    assert rc != 0, log
    return log


def snapshot(path):
    """What must not change: inode, owner, mode, size, bytes."""
    st = os.lstat(path)
    data = os.readlink(path) if os.path.islink(path) else \
        Path(path).read_bytes() if os.path.isfile(path) else None
    return (st.st_ino, st.st_uid, st.st_mode, st.st_size, data)


# ------------------------------------------------------ 1. zone squatting

SQUAT_FILE = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, sys.stdin.buffer.read())
os.close(fd)
"""


@pytest.mark.parametrize("what", ["file", "symlink", "fifo"])
def test_squatted_zone_is_refused(tmp_path, what):
    """nobody creates the zone's path in world-writable, sticky /dev/shm
    before the daemon starts: a segment of his (his size, his magic, his
    certificate), a link to a file of root's, or a FIFO.  The daemon
    refuses to start, says the path, the owner and the mode, and leaves
    what it found alone (no reuse, no chmod, no unlink)."""
    path = zone_path(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("root's own file\n")
    if what == "file":
        seg = zone_bytes(1, certs=[(b"a.example.test", 1, b"x", b"y")])
        as_nobody(SQUAT_FILE, path, input=bytes(seg))
        expect = "owned by uid %d, mode 0644" % NOBODY
    elif what == "symlink":
        as_nobody("import os, sys; os.symlink(sys.argv[2], sys.argv[1])",
                  path, victim)
        expect = "a symbolic link"
    else:
        as_nobody("import os, sys; os.mkfifo(sys.argv[1], 0o644)", path)
        expect = "a FIFO owned by uid %d, mode 0644" % NOBODY
    before = snapshot(path)
    victim_before = snapshot(victim)

    log = refused(tmp_path, sidecar_config(tmp_path))
    assert str(path) in log and expect in log, log
    assert snapshot(path) == before, "the squatter's file was touched"
    assert snapshot(victim) == victim_before


def test_zone_writable_by_others_is_refused(tmp_path):
    """A zone of root's that others could write: nobody opened it for
    writing while it was 0666 and keeps the descriptor, which survives a
    chmod.  The daemon refuses it rather than chmod it and go on, since
    nobody could then truncate it or plant certificates in it."""
    path = zone_path(tmp_path)
    plant(path, zone_bytes(1), mode=0o666)
    holder = subprocess.Popen(
        AS_NOBODY + ["/usr/bin/python3", "-c", """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("open", flush=True)
sys.stdin.readline()
os.ftruncate(fd, 0)
print(os.fstat(fd).st_size, flush=True)
""", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        before = snapshot(path)
        log = refused(tmp_path, sidecar_config(tmp_path))
        assert "%s" % path in log and "mode 0666" in log, log
        assert snapshot(path) == before, "the file was changed"
    finally:
        holder.communicate("go\n", timeout=10)


def test_zone_opened_before_the_challenge_port(tmp_path):
    """A restart that fails on its zone must not have bound the challenge
    port first (binding it, then freeing it as it exits, lets another
    process take it).  With the port busy and the zone squatted, the
    error is the zone's: it was opened before the port was bound."""
    path = zone_path(tmp_path)
    as_nobody(SQUAT_FILE, path, input=bytes(zone_bytes(1)))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        log = refused(tmp_path, sidecar_config(
            tmp_path, port=busy.getsockname()[1]))
    finally:
        busy.close()
    assert "owned by uid %d" % NOBODY in log, log
    assert "answering HTTP-01" not in log, log


def test_own_zone_is_reused(tmp_path):
    """The other side of the refusals: the zone a previous run left,
    root's and 0640, is taken up again with what it holds."""
    path = zone_path(tmp_path)
    s = Sidecar(tmp_path, sidecar_config(tmp_path)).start()
    try:
        s.wait_log(r"shared zone \S+: group")
        assert s.stop() == 0
        ino = os.stat(path).st_ino
        s.start()
        s.wait_log(r"shared zone \S+: group")
        assert os.stat(path).st_ino == ino
        assert shmread.header(open(path, "rb"))["magic"] == shmread.MAGIC
    finally:
        s.kill()


# ------------------------------------------- 2. truncating the zone

def fallback_pair(tmp_path):
    key, crt = tmp_path / "fb.key", tmp_path / "fb.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
            "-out", str(crt), "-subj", "/CN=fallback.invalid", "-days", "1")
    return crt, key


def wait_served(nginx, tls_port, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        rc, blocks, _ = handshake(tls_port, "example.test", check=False)
        if rc == 0 and blocks and fingerprint(blocks[0]) == want:
            return
        assert time.monotonic() < deadline, nginx.diagnostics()
        time.sleep(0.1)


def handshakes_survive(nginx, tls_port, allowed, n=5):
    """n handshakes complete with one of the allowed leaves (or fail
    cleanly when allowed holds None) and no worker dies."""
    workers = nginx.worker_pids()
    for _ in range(n):
        rc, blocks, out = handshake(tls_port, "example.test", check=False)
        got = fingerprint(blocks[0]) if rc == 0 and blocks else None
        assert got in allowed, (got, out[-600:], nginx.diagnostics())
    assert nginx.worker_pids() == workers, nginx.diagnostics()
    assert "exited on signal" not in nginx.error_log(), nginx.diagnostics()


def test_truncated_zone_kills_nothing(tmp_path, pebble, http_port,
                                      nginx_factory, sidecar_factory):
    """Someone able to write the zone truncates it under nginx and the
    daemon.  nginx's workers keep serving (the certificate they hold, or
    the fallback) and answer challenge requests; the daemon, at its next
    publish (a renewal here), puts the size back with a warning and
    publishes again; nginx serves the renewed certificate.  Nothing
    stored is lost."""
    if not MODULE.exists():
        pytest.skip("%s is not built" % MODULE)
    tls_port = free_port()
    fb_crt, fb_key = fallback_pair(tmp_path)
    body = seed_http(pebble, tmp_path, tls_port, http_port).replace(
        "    acme_certificate example;",
        "    acme_certificate example;\n"
        "    acme_fallback_certificate %s %s;" % (fb_crt, fb_key))
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, body))
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    nginx.start([tls_port, http_port])
    sidecar.start("--nginx-conf", str(nginx.conf))
    state = tmp_path / "state"
    sidecar.wait_certs(state, ["example.test"])
    stored = state / "certs" / "example.test" / "fullchain.pem"
    leaf = fingerprint(split_pem(stored.read_text())[0])
    wait_served(nginx, tls_port, leaf)
    seg = zone_path(tmp_path)
    size = os.stat(seg).st_size

    os.truncate(seg, 0)
    fb = fingerprint(fb_crt.read_text())
    handshakes_survive(nginx, tls_port, {leaf, fb})
    time.sleep(1.1)     # past the module's once-a-second look at the file
    handshakes_survive(nginx, tls_port, {leaf, fb})
    assert http_get(http_port, CHALLENGE)[0] == 404
    assert "exited on signal" not in nginx.error_log(), nginx.diagnostics()
    # The daemon looks at the size between publishes too.
    sidecar.wait_log(r"shared zone \S+ was truncated to 0 bytes")
    assert os.stat(seg).st_size == size

    # Cut again, right before a publish: the renewal's token, then its
    # certificate.
    mark = sidecar.mark()
    os.truncate(seg, 4096)
    out = subprocess.run(
        ["curl", "-sS", "-m", "10", "--unix-socket",
         str(tmp_path / "control.sock"), "-X", "POST",
         "http://localhost/v1/certificates/example.test/renew"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert out.returncode == 0, out.stdout
    sidecar.wait_log(r"shared zone \S+ was truncated to 4096 bytes",
                     since=mark)
    deadline = time.monotonic() + 30
    while fingerprint(split_pem(stored.read_text())[0]) == leaf:
        assert sidecar.alive(), sidecar.diagnostics()
        assert time.monotonic() < deadline, sidecar.diagnostics()
        time.sleep(0.2)
    wait_served(nginx, tls_port, fingerprint(split_pem(stored.read_text())[0]))
    assert sidecar.alive(), sidecar.diagnostics()
    assert os.stat(seg).st_size == size
    # What the zone holds is what is stored, key included.
    e = shmread.cert(str(seg), "example.test")
    assert e["chain"] == stored.read_text()
    assert e["key"] == (stored.parent / "key.pem").read_text()
    assert "exited on signal" not in nginx.error_log(), nginx.diagnostics()


def test_module_survives_truncation_loop(tmp_path, nginx_factory):
    """A planted zone of root's cut and put back over and over while the
    worker answers challenge requests: it answers each one (the key
    authorization or a 404), and never dies."""
    if not MODULE.exists():
        pytest.skip("%s is not built" % MODULE)
    path = zone_path(tmp_path)
    seg = bytes(zone_bytes(1, tokens=[(TOKEN, KEYAUTH)]))
    plant(path, seg, mode=0o640, gid=33)
    nginx, tls, plain = zone_server(nginx_factory, tmp_path)
    nginx.start([tls, plain])
    workers = nginx.worker_pids()
    assert http_get(plain, CHALLENGE) == (200, KEYAUTH.decode())
    for cut in (0, 64, 4096, len(seg) // 2):
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, cut)
            for _ in range(3):
                assert http_get(plain, CHALLENGE)[0] in (200, 404)
            time.sleep(1.1)
            assert http_get(plain, CHALLENGE)[0] == 404
            os.ftruncate(fd, len(seg))
            os.pwrite(fd, seg, 0)
        finally:
            os.close(fd)
        assert http_get(plain, CHALLENGE) == (200, KEYAUTH.decode()), \
            nginx.diagnostics()
    assert nginx.worker_pids() == workers, nginx.diagnostics()
    assert "exited on signal" not in nginx.error_log()
    assert "was truncated" in nginx.error_log(), nginx.diagnostics()


# ------------------------------------------ 3. path= naming another file

def precious(tmp_path):
    """A file of root's that path= names by mistake: (path, snapshot)."""
    other = tmp_path / "precious.db"
    other.write_bytes(b"precious data\n" * 100)
    os.chmod(other, 0o600)
    return other, snapshot(other)


def check_conf(conf):
    """acme-sidecar -t: (exit status, output)."""
    p = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=10)
    return p.returncode, p.stdout


def test_path_to_a_file_that_is_not_a_zone(tmp_path):
    """path= naming an existing file that is not a zone (a typo, or a
    file of the daemon's own user): start-up is refused with the path,
    and the file keeps every byte.  The same path holding a zone is
    taken up (the check can tell)."""
    other, before = precious(tmp_path)
    conf = sidecar_config(tmp_path, path=other)
    log = refused(tmp_path, conf)
    assert "%s: refused as the shared zone" % other in log, log
    assert "1400 bytes, not a shared zone" in log, log
    assert snapshot(other) == before

    plant(other, zone_bytes(1), mode=0o640)
    s = Sidecar(tmp_path, conf).start()
    try:
        s.wait_log(r"shared zone %s: group" % other)
    finally:
        s.kill()


def test_path_to_a_file_that_is_not_a_zone_t(tmp_path):
    """The same, found by -t with FILE:LINE of acme_shared_zone, as nginx
    -t would say it; a zone at that path passes."""
    other, before = precious(tmp_path)
    conf = sidecar_config(tmp_path, path=other)
    lines = conf.read_text().splitlines()
    line = 1 + next(i for i, text in enumerate(lines)
                    if text.startswith("acme_shared_zone"))
    rc, out = check_conf(conf)
    assert snapshot(other) == before
    assert rc != 0, out
    assert "%s:%d: %s: refused as the shared zone" % (conf, line, other) \
        in out, out
    plant(other, zone_bytes(1), mode=0o640)
    rc, out = check_conf(conf)
    assert rc == 0, out


def test_njs_reader_survives_truncation(tmp_path):
    """acme.js reads, never maps, so a zone cut short cannot kill a
    worker; the handshake fails cleanly with a line that says the file
    was cut short, and the same worker serves again once the size is
    back."""
    from test_njs import (NJS_MODULE, FakeSegment, Nginx as NjsNginx,
                          der_digest, self_signed, tls_leaf)
    if not os.path.exists(NJS_MODULE):
        pytest.skip("%s is missing" % NJS_MODULE)
    path = zone_path(tmp_path)
    name = "t.example.test"
    x = self_signed(tmp_path, "x", [name])
    seg = FakeSegment(str(path))
    seg.publish([(name, [name], *x)])
    seg.close()
    data = path.read_bytes()
    nginx = NjsNginx(tmp_path / "njs")
    port = nginx.server(str(path))
    nginx.write()
    nginx.start()
    try:
        workers = nginx.workers()
        assert tls_leaf(port, name) == der_digest(x[0]), nginx.diagnostics()
        for cut in (len(data) // 2, 100, 0):
            os.truncate(path, cut)
            assert tls_leaf(port, name) is None, cut
            with open(path, "r+b") as f:
                f.write(data)
            assert tls_leaf(port, name) == der_digest(x[0]), \
                nginx.diagnostics()
        log = nginx.log()
        assert "was cut short: %d bytes, its header says %d" % (
            len(data) // 2, len(data)) in log, nginx.diagnostics()
        assert nginx.workers() == workers, nginx.diagnostics()
        assert "exited on signal" not in log
    finally:
        nginx.stop()
