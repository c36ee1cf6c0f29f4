"""Both libmicrohttpd servers against a local user with ordinary rights
(issue 12, "Local attackers and hostile files").

- The HTTP-01 responder: a slowloris from another loopback address
  (127.0.0.2; the CA validates from 127.0.0.1) holding 500 connections,
  idle and trickling, while Pebble validates and a certificate is issued.
- The control socket: a read-only caller (a member of the socket's group)
  takes every connection and event stream it can and never reads; root
  still gets GET /v1/status and a stream, and the non-reading streams are
  cut.
- Smaller: %00 in a certificate id, two Content-Length headers (both
  servers), and 1,000 identifiers in one certificate (a directive takes
  at most 1,024 words) or 3,000 through the API.

Limits under test (src/sidecar.h): CHALLENGE_REQUEST_TIMEOUT 10 s from
accept to a complete request, CHALLENGE_PER_IP_LOOPBACK 128 (64 on other
addresses), CHALLENGE_MAX_CONNS 256; CONTROL_MAX_CONNS 64 of which
CONTROL_RESERVED_CONNS 8 are for root and the daemon's uid,
CONTROL_MAX_CONNS_PER_UID 16; CONTROL_MAX_STREAMS 16 of which
CONTROL_RESERVED_STREAMS 4 are kept, CONTROL_MAX_STREAMS_PER_UID 4,
CONTROL_STREAM_STALL 15 s; CONF_MAX_IDENTS 100.
"""

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import SIDECAR, write_config

PREFIX = b"/.well-known/acme-challenge/"
ATTACKER = "127.0.0.2"
NOBODY = 65534
NOGROUP = 65534

REQUEST_TIMEOUT = 10        # CHALLENGE_REQUEST_TIMEOUT
PER_IP = 128                # CHALLENGE_PER_IP_LOOPBACK
STREAM_STALL = 15           # CONTROL_STREAM_STALL
STREAM_CHECK = 5            # CONTROL_STREAM_CHECK
MAX_IDENTS = 100            # CONF_MAX_IDENTS


# ---------------------------------------------------------------- helpers

def exchange(sock_or_port, raw, timeout=5.0):
    """Send raw bytes on a new connection (a TCP port or a Unix socket
    path), return what comes back until the server closes it, or until
    timeout (a connection kept alive)."""
    if isinstance(sock_or_port, int):
        c = socket.create_connection(("127.0.0.1", sock_or_port),
                                     timeout=timeout)
    else:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(timeout)
        c.connect(str(sock_or_port))
    try:
        c.sendall(raw)
        data = b""
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                if not data:
                    raise
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        c.close()


def status_of(data):
    assert data.startswith(b"HTTP/1."), data[:300]
    return int(data.split(b" ", 2)[1])


def body_of(data):
    return data.partition(b"\r\n\r\n")[2]


def api(sock, method, path, body=None, timeout=10):
    """(status, JSON) of one call as root, through curl as a user would."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "--unix-socket",
           str(sock), "-X", method, "-o", "-", "-w", "\n%{http_code}",
           "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary",
                "@-"]
    p = subprocess.run(cmd, input=body, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True,
                       timeout=timeout + 10)
    assert p.returncode == 0, "curl %s %s: %s" % (method, path, p.stderr)
    text, _, code = p.stdout.rpartition("\n")
    return int(code), json.loads(text) if text else None


@pytest.fixture
def sockdir():
    """A folder uid 65534 can pass through (pytest's own are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="acme-hostile-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(tmp_path, pebble, http_port, sidecar_factory, certs=(),
          sock=None, group=None):
    conf = tmp_path / "acme-sidecar.conf"
    state = tmp_path / "state"
    write_config(conf, pebble, state, http_port, list(certs))
    sock = sock or tmp_path / "control.sock"
    text = re.sub(r"(?m)^control_socket .*;$", "control_socket %s%s;" % (
        sock, " group=%s" % group if group else ""), conf.read_text())
    conf.write_text(text)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_log(r"control: listening on")
    sidecar.wait_log(r"answering HTTP-01 on 127\.0\.0\.1:%d" % http_port)
    return sidecar, state, sock, conf


# ------------------------------------------------------------ 1. slowloris

class Slowloris:
    """Keeps `count` connections open from ATTACKER to port: a third sit
    idle after a partial request line, the rest trickle one header byte
    per second.  A connection the server closes is opened again at the
    next sweep, as a real attacker would.  Records how long each one the
    server closed had lived, and whether a trickling one outlived the
    request deadline."""

    def __init__(self, port, count):
        self.port = port
        self.count = count
        self.conns = []             # [socket, opened at, trickles]
        self.lifetimes = []         # of trickling ones the server closed
        self.opened = 0
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, trickles):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((ATTACKER, 0))
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        self.opened += 1
        self.conns.append([s, time.monotonic(), trickles, False])

    def _closed_by_server(self, s):
        try:
            return s.recv(4096, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _sweep(self):
        now = time.monotonic()
        for c in list(self.conns):
            s, opened, trickles, started = c
            if self._closed_by_server(s):
                self.conns.remove(c)
                s.close()
                if trickles and started:
                    self.lifetimes.append(now - opened)
                continue
            try:
                if not started:
                    s.send(b"GET " + PREFIX + b"x HTTP/1.1\r\n")
                    c[3] = True
                elif trickles:
                    s.send(b"X")
            except BlockingIOError:
                pass
            except OSError:
                self.conns.remove(c)
                s.close()
        while len(self.conns) < self.count:
            self._open(trickles=len(self.conns) % 3 != 0)

    def _run(self):
        try:
            while not self.stop.wait(1.0):
                self._sweep()
        except Exception as e:          # reported by the test
            self.error = repr(e)

    def start(self):
        self._sweep()
        self.thread.start()
        return self

    def oldest_trickler(self):
        now = time.monotonic()
        return max([now - o for s, o, t, st in self.conns if t and st],
                   default=0)

    def close(self):
        self.stop.set()
        self.thread.join(10)
        for s, *_ in self.conns:
            s.close()


def test_slowloris_does_not_starve_validation(tmp_path, pebble, http_port,
                                              sidecar_factory):
    sidecar, state, sock, _ = start(tmp_path, pebble, http_port,
                                    sidecar_factory)
    attack = Slowloris(http_port, 500).start()
    try:
        time.sleep(2)
        # The attacker's 500 are in place: a real order, validated by
        # Pebble from 127.0.0.1, must still go through.
        status, j = api(sock, "POST", "/v1/certificates", body=json.dumps(
            {"issuer": "pebble", "identifiers": ["slow.example.test"]}))
        assert status == 201, j
        sidecar.wait_certs(state, ["slow.example.test"], timeout=30)
        # Hold the attack past the request deadline: no trickling
        # connection may outlive it, however it dribbles.
        deadline = time.monotonic() + REQUEST_TIMEOUT + 3
        while time.monotonic() < deadline:
            time.sleep(0.5)
        assert attack.error is None, attack.error
        assert attack.oldest_trickler() < REQUEST_TIMEOUT + 3, \
            "a trickling connection outlived the request deadline"
        assert attack.lifetimes, "no trickling connection was ever cut"
        assert max(attack.lifetimes) < REQUEST_TIMEOUT + 3, \
            attack.lifetimes
    finally:
        attack.close()
    assert sidecar.alive()
    log = sidecar.log()
    assert "answering HTTP-01" in log


def test_per_ip_cap_applies_on_loopback(tmp_path, pebble, http_port,
                                        sidecar_factory):
    """One loopback address holds at most CHALLENGE_PER_IP_LOOPBACK
    connections; another address (the CA's, 127.0.0.1) is still
    answered."""
    sidecar, *_ = start(tmp_path, pebble, http_port, sidecar_factory)
    held = []
    try:
        for _ in range(PER_IP + 20):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((ATTACKER, 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", http_port))
            s.sendall(b"GET " + PREFIX + b"x HTTP/1.1\r\n")
            held.append(s)
        time.sleep(1)
        alive = 0
        for s in held:
            s.setblocking(False)
            try:
                alive += s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) \
                    != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        assert alive == PER_IP, "%d connections held from %s" % (
            alive, ATTACKER)
        data = exchange(http_port, b"GET " + PREFIX + b"unknown HTTP/1.1\r\n"
                        b"Host: x\r\nConnection: close\r\n\r\n", timeout=2)
        assert status_of(data) == 404
    finally:
        for s in held:
            s.close()
    assert sidecar.alive()


# ---------------------------------------------------------- 2. control API

# Run as uid 65534, group nogroup (the socket's group): take every
# connection and event stream the daemon gives, never read a byte, report
# what was had, then for each line on stdin report how many of its
# streams the daemon has hung up (poll, which reads nothing).
HOG = r"""
import json, select, socket, sys, time
sock = sys.argv[1]

def conn(req):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    try:
        s.sendall(req)
    except OSError:         # refused and closed already
        pass
    return s

def peek(s):
    try:
        return s.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b""

def partial():
    return conn(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")

others = [partial() for _ in range(10)]
streams = [conn(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
           for _ in range(20)]
others += [partial() for _ in range(70)]
time.sleep(1)
got = [peek(s) or b"" for s in streams]
held_streams = [s for s, g in zip(streams, got)
                if g.startswith(b"HTTP/1.1 200")]
held_conns = [s for s in others if peek(s) is None]
print(json.dumps({
    "streams": len(held_streams),
    "refused": sorted({g[:12].decode() for g in got
                       if not g.startswith(b"HTTP/1.1 200")}),
    "connections": len(held_conns)}), flush=True)
gone = select.POLLHUP | select.POLLRDHUP | select.POLLERR
while sys.stdin.readline():
    p = select.poll()
    for s in held_streams:
        p.register(s, gone)
    print(json.dumps({"cut": len(p.poll(0))}), flush=True)
"""


def as_nobody():
    os.setgroups([])
    os.setgid(NOGROUP)
    os.setuid(NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_read_only_user_cannot_lock_out_root(tmp_path, sockdir, pebble,
                                             http_port, sidecar_factory):
    sidecar, _, sock, _ = start(tmp_path, pebble, http_port,
                                sidecar_factory, sock=sockdir / "c.sock",
                                group="nogroup")
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(sock)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=as_nobody)
    root_stream = None
    started = time.monotonic()
    try:
        line = hog.stdout.readline()
        assert line, "the read-only client failed: %s" % hog.stderr.read()
        had = json.loads(line)
        # It got something: it is a reader of the socket.
        assert had["streams"] >= 1 and had["connections"] >= 1, had

        # Root is let in ...
        status, j = api(sock, "GET", "/v1/status", timeout=5)
        assert status == 200, j
        # ... and gets a stream of its own.
        root_stream = subprocess.Popen(
            ["curl", "-sSN", "--max-time", "60", "--unix-socket", str(sock),
             "-o", "-", "-w", "\n%{http_code}", "http://localhost/v1/events"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # One uid may not hold them all.
        assert had["streams"] <= 4 and had["connections"] <= 16, had

        # A stream whose client reads nothing (the answer's own head is
        # left unread) is cut after the stall time, not before; root's,
        # which reads, stays.
        def cut():
            hog.stdin.write("?\n")
            hog.stdin.flush()
            return json.loads(hog.stdout.readline())["cut"]
        deadline = started + STREAM_STALL + 2 * STREAM_CHECK + 3
        while cut() < had["streams"]:
            assert time.monotonic() < deadline, \
                "%d of %d streams that read nothing were cut" % (
                    cut(), had["streams"])
            time.sleep(0.5)
        assert time.monotonic() - started >= STREAM_STALL - 1
        assert root_stream.poll() is None, root_stream.communicate()
        status, j = api(sock, "GET", "/v1/status", timeout=5)
        assert status == 200, j
    finally:
        hog.kill()
        hog.wait()
        if root_stream is not None:
            root_stream.kill()
            root_stream.wait()
    assert sidecar.alive()
    assert "disconnecting" in sidecar.log()


# ------------------------------------------------------------ 3. smaller

def test_nul_in_certificate_id(tmp_path, pebble, http_port,
                               sidecar_factory):
    sidecar, _, sock, _ = start(tmp_path, pebble, http_port,
                                sidecar_factory,
                                certs=[(["a.example.test"], None)])
    for path in (b"/v1/certificates/a.example.test%00junk",
                 b"/v1/certificates/a.example.test%00"):
        data = exchange(sock, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n")
        assert status_of(data) == 400, data[:300]
        j = json.loads(body_of(data))
        assert j["error"]["status"] == 400
        assert "NUL" in j["error"]["message"], j
    data = exchange(sock, b"DELETE /v1/certificates/a.example.test%00x "
                    b"HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(data) == 400, data[:300]
    # The responder: a token cut short at %00 is not served either.
    data = exchange(http_port, b"GET " + PREFIX + b"tok%00en HTTP/1.1\r\n"
                    b"Host: x\r\nConnection: close\r\n\r\n")
    assert status_of(data) == 400, data[:300]
    # The plain id still answers.
    status, j = api(sock, "GET", "/v1/certificates/a.example.test")
    assert status == 200 and j["id"] == "a.example.test", j
    assert sidecar.alive()


DOUBLE_CL = [b"Content-Length: 0\r\nContent-Length: 5\r\n",
             b"Content-Length: 2\r\ncontent-length: 2\r\n",
             b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"]


def test_two_content_lengths_are_refused(tmp_path, pebble, http_port,
                                         sidecar_factory):
    """A request whose length two headers tell is refused before any
    handler sees it, on both servers (libmicrohttpd 0.9.75 takes the
    first Content-Length and leaves the rest of the body to be read as
    the next request)."""
    sidecar, _, sock, _ = start(tmp_path, pebble, http_port,
                                sidecar_factory)
    mark = sidecar.mark()
    for headers in DOUBLE_CL:
        data = exchange(sock, b"POST /v1/reload HTTP/1.1\r\nHost: x\r\n" +
                        headers + b"\r\n{}")
        assert status_of(data) == 400, (headers, data[:300])
        msg = json.loads(body_of(data))["error"]["message"]
        assert "Content-Length" in msg, (headers, msg)
        data = exchange(sock, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" +
                        headers + b"\r\n")
        assert status_of(data) == 400, (headers, data[:300])
        data = exchange(http_port, b"GET " + PREFIX + b"x HTTP/1.1\r\n"
                        b"Host: x\r\n" + headers + b"\r\n")
        assert status_of(data) == 400, (headers, data[:300])
    assert "reloading" not in sidecar.log(since=mark)
    # One Content-Length is fine on both.
    data = exchange(sock, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert status_of(data) == 200, data[:300]
    data = exchange(http_port, b"GET " + PREFIX + b"x HTTP/1.1\r\n"
                    b"Host: x\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n")
    assert status_of(data) == 404, data[:300]
    assert sidecar.alive()


def names(n, domain="many.example.test"):
    return ["n%d.%s" % (i, domain) for i in range(n)]


def test_identifiers_per_certificate_are_capped(tmp_path, pebble, http_port,
                                                sidecar_factory):
    conf = tmp_path / "many.conf"
    write_config(conf, pebble, tmp_path / "state", http_port,
                 [(names(MAX_IDENTS), None),
                  (names(1000, "other.example.test"), None)])
    line = next(i for i, text in enumerate(
        conf.read_text().splitlines(), 1) if "other.example.test" in text)
    p = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    assert p.returncode != 0, p.stdout
    assert "%s:%d: 1000 identifiers in one certificate: acme_issuer " \
        "\"pebble\" takes at most 100 (max_identifiers)" % (conf, line) \
        in p.stdout, p.stdout
    # 100 is allowed.
    write_config(conf, pebble, tmp_path / "state", http_port,
                 [(names(MAX_IDENTS), None)])
    p = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout
    # An issuer whose CA takes more says so: 150 pass, 151 do not.
    for n, ok in ((150, True), (151, False)):
        write_config(conf, pebble, tmp_path / "state", http_port,
                     [(names(n), None)], issuer_extra="max_identifiers 150;")
        p = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        assert (p.returncode == 0) == ok, (n, p.stdout)

    # Through the API: a 400 that names the cap, and nothing added.
    sidecar, _, sock, _ = start(tmp_path, pebble, http_port,
                                sidecar_factory)
    status, j = api(sock, "POST", "/v1/certificates", body=json.dumps(
        {"issuer": "pebble", "identifiers": names(3000, "x.test")}))
    assert status == 400, j
    assert "at most 1000" in j["error"]["message"], j
    # Beyond the issuer's max_identifiers: the configuration's refusal.
    status, j = api(sock, "POST", "/v1/certificates", body=json.dumps(
        {"issuer": "pebble", "identifiers": names(101, "y.test")}))
    assert status == 422, j
    assert "takes at most 100 (max_identifiers)" in j["error"]["message"], j
    status, j = api(sock, "GET", "/v1/certificates")
    assert j["certificates"] == [], j
    assert sidecar.alive()
