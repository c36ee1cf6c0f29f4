"""Faults from outside: kill -9, a CA that rejects nonces, goes away or
talks garbage, and a state_path that is full or read-only (issue 5,
points 1 to 3).

The daemon and Pebble are real.  What is counted (issuances, requests
during an outage) is counted from outside the daemon wherever possible:
Pebble's own log, and a TCP proxy in front of Pebble.

Garbage answers already covered elsewhere, and not repeated here:
test_failures.py has a directory that is not JSON, a 500 on the
directory, 429 and 503 with Retry-After: 3 and badNonce;
test_regressions.py has a malformed Replay-Nonce.
"""

import base64
import http.client
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import shmread
from conftest import (check_certificate, free_port, openssl, split_pem,
                      write_config, zone_path)
from fake_acme import Reply, problem

PEBBLE_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+) for order")


# ------------------------------------------------------------ helpers

def pebble_serials(pebble):
    """The serials Pebble logged as issued."""
    with open(pebble.path("pebble.log"), "rb") as f:
        text = f.read().decode(errors="replace")
    return [int(s, 16) for s in PEBBLE_ISSUED.findall(text)]


def der_complete(der):
    """True when der is exactly one DER SEQUENCE, as long as it says."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    n = der[1]
    if n < 0x80:
        return len(der) == 2 + n
    k = n & 0x7F
    if k == 0 or k > 4 or len(der) < 2 + k:
        return False
    return len(der) == 2 + k + int.from_bytes(der[2:2 + k], "big")


def pem_blocks(text, label):
    """The DER of every complete PEM block with this label; raises on a
    torn one."""
    out = []
    rx = re.compile(r"-----BEGIN %s-----\n(.*?)-----END %s-----" %
                    (label, label), re.S)
    for m in rx.finditer(text):
        der = base64.b64decode(m.group(1), validate=False)
        if not der_complete(der):
            raise ValueError("a torn %s block" % label)
        out.append(der)
    return out


def stored_count(state):
    try:
        return sum(1 for e in os.scandir(Path(state) / "certs")
                   if e.is_symlink())
    except FileNotFoundError:
        return 0


def leaf_serial(pem):
    return int(openssl("x509", "-noout", "-serial",
                       input=pem).stdout.strip().split("=")[1], 16)


def check_state_files(state, ids):
    """Every file the daemon reads at start-up, as a kill -9 left it:
    account.key and account.url, the pending orders, and for each
    certificate the three files of the generation its link names.  Each
    is non-empty and parses.  Returns ({id: leaf PEM}, the number of
    stray generations, which nobody reads and the next save removes)."""
    state = Path(state)
    problems = []
    key = state / "account.key"
    if key.exists():
        text = key.read_text()
        try:
            if len(pem_blocks(text, "PRIVATE KEY")) != 1:
                problems.append("account.key holds no PKCS#8 key")
        except ValueError as e:
            problems.append("account.key: %s" % e)
    url = state / "account.url"
    if url.exists() and not url.read_text().startswith("https://"):
        problems.append("account.url is %r" % url.read_text())
    pending = state / "pending"
    for p in sorted(pending.glob("*.json")) if pending.is_dir() else []:
        try:
            o = json.loads(p.read_text())
            if len(pem_blocks(o["key"], "PRIVATE KEY")) != 1 or \
                    not o["order"].startswith("https://"):
                raise ValueError("no key or no order URL")
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append("pending/%s: %s" % (p.name, e))
    leaves = {}
    certs = state / "certs"
    names = sorted(os.listdir(certs)) if certs.is_dir() else []
    linked = {os.readlink(certs / n) for n in names
              if (certs / n).is_symlink()}
    strays = len([n for n in names if not (certs / n).is_symlink() and
                  n not in linked])
    for name in names:
        p = certs / name
        if not p.is_symlink():
            continue
        if not p.is_dir():
            problems.append("certs/%s links to nothing" % name)
            continue
        try:
            chain = (p / "fullchain.pem").read_text()
            blocks = pem_blocks(chain, "CERTIFICATE")
            if len(blocks) < 2:
                raise ValueError("%d certificates" % len(blocks))
            if len(pem_blocks((p / "key.pem").read_text(),
                              "PRIVATE KEY")) != 1:
                raise ValueError("key.pem holds no key")
            meta = json.loads((p / "meta.json").read_text())
            if not isinstance(meta, dict) or not meta:
                raise ValueError("meta.json is %r" % meta)
        except (OSError, ValueError) as e:
            problems.append("certs/%s: %s" % (name, e))
            continue
        leaves[name] = split_pem(chain)[0]
    unknown = set(leaves) - set(ids)
    if unknown:
        problems.append("links for unknown ids: %s" % sorted(unknown))
    assert not problems, "torn or empty state files:\n" + "\n".join(problems)
    return leaves, strays


def verify_all(state, ids, root, workdir, names_of):
    """Every stored certificate verifies against root with the chain from
    its own file (one openssl run for all), has its SANs, and matches its
    key."""
    inter = None
    leaves = []
    for cid in ids:
        d = (Path(state) / "certs" / cid).resolve()
        blocks = split_pem((d / "fullchain.pem").read_text())
        if inter is None:
            inter = workdir / "verify-untrusted.pem"
            inter.write_text("".join(blocks[1:]))
        leaf = workdir / ("verify-%s.pem" % cid)
        leaf.write_text(blocks[0])
        leaves.append(str(leaf))
        sans = openssl("x509", "-noout", "-ext", "subjectAltName",
                       input=blocks[0]).stdout
        assert "DNS:%s" % names_of(cid) in sans, (cid, sans)
        pub_key = openssl("pkey", "-in", str(d / "key.pem"),
                          "-pubout").stdout
        pub_cert = openssl("x509", "-noout", "-pubkey",
                           input=blocks[0]).stdout
        assert pub_key == pub_cert, "%s: key.pem does not match" % cid
    v = openssl("verify", "-CAfile", str(root), "-untrusted", str(inter),
                *leaves, check=False)
    bad = [line for line in v.stdout.splitlines()
           if not line.endswith(": OK")]
    assert v.returncode == 0 and not bad, (v.stdout[-2000:], v.stderr)


# The control API must answer while a CA stalls or misbehaves: a loop
# that waited for the CA would stall for the CA's whole delay (5 s in the
# "slow" case, a minute in the outage).  The bound is about a blocked
# loop, not speed: a sanitized daemon on a loaded 2-core machine took
# 1.2 s once, so it leaves room for that.
STALL = 2.5


def api_status(sock, timeout=STALL):
    """GET /v1/status over the control socket; (seconds taken, JSON).
    Spoken from this process (no curl to start), so the time is the
    daemon's answer and the socket's, not a process start under load."""
    t = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n"
                  b"Connection: close\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        body = resp.read()
    took = time.monotonic() - t
    assert resp.status == 200, "GET /v1/status: %d after %.1fs" % (
        resp.status, took)
    return took, json.loads(body)


class CountingProxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:upstream that records when
    each connection arrives.  TLS passes through untouched, so the daemon
    still talks to Pebble itself; while Pebble is down the proxy accepts
    and closes at once, which is what the daemon would see from a load
    balancer in front of a dead CA."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted.append(time.monotonic())
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), 5)
        except OSError:
            c.close()
            return
        t = threading.Thread(target=self._pipe, args=(u, c), daemon=True)
        t.start()
        self._pipe(c, u)

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def count(self, t0, t1):
        with self.lock:
            return [t for t in self.accepted if t0 <= t < t1]

    def close(self):
        self.closed = True
        self.sock.close()


# ------------------------------------------------------------ 1. kill -9

CRASH_CERTS = 200
CRASH_KILLS = 5


def test_kill_9_during_200_orders(tmp_path, pebble, http_port,
                                  sidecar_factory):
    """200 orders at once, kill -9 at seeded random moments while they
    are being finalized (replay a failure with FAULTS_SEED=<seed>),
    restarted after each.

    After every kill, every file the daemon reads at start-up exists
    whole or not at all, and account.key is the same bytes throughout.

    "No valid certificate issued twice", precisely: Pebble issues
    exactly one certificate per id over all the runs (counted from its
    own log), so (a) a stored certificate is never replaced, and (b) an
    order the kill cut after its finalize is resumed from pending/ and
    not made again.  The daemon also logs "issued" at most once per id."""
    seed = int(os.environ.get("FAULTS_SEED", random.randrange(1 << 30)))
    print("FAULTS_SEED=%d" % seed)
    rnd = random.Random(seed)
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    names = ["k%03d.example.test" % i for i in range(CRASH_CERTS)]
    write_config(conf, pebble, state, http_port, [([n], None) for n in names])
    sidecar = sidecar_factory(conf, [pebble])

    account_key = None
    first_serial = {}           # id -> the serial first seen stored
    kills = 0
    for k in range(CRASH_KILLS):
        # Kill at a random moment of the issuing itself, whatever the
        # speed of this machine: once a random share (5 to 35%) of the
        # certificates still missing has been stored.
        stored = stored_count(state)
        target = stored + max(1, int(rnd.uniform(0.05, 0.35) *
                                     (CRASH_CERTS - stored)))
        sidecar.start()
        deadline = time.monotonic() + 60
        while stored_count(state) < target:
            assert time.monotonic() < deadline, sidecar.diagnostics()
            time.sleep(0.005)
        assert sidecar.alive(), "died before kill %d (seed %d)%s" % (
            k + 1, seed, sidecar.diagnostics())
        sidecar.kill()
        kills += 1
        leaves, strays = check_state_files(state, names)
        if (state / "account.key").exists():
            b = (state / "account.key").read_bytes()
            assert account_key in (None, b), (
                "account.key changed after kill %d (seed %d)" % (k + 1, seed))
            account_key = b
        for cid, pem in leaves.items():
            s = leaf_serial(pem)
            assert first_serial.setdefault(cid, s) == s, (
                "%s: stored serial changed after kill %d (seed %d)" %
                (cid, k + 1, seed))
        print("kill %d once %d were stored: %d stored after it, %d "
              "strays" % (k + 1, target, len(leaves), strays))

    sidecar.start()
    sidecar.wait_certs(state, names, timeout=150)
    # Every certificate loaded or issued, and renewal planned: up and
    # running (a SIGTERM before its handlers are set would kill it).
    deadline = time.monotonic() + 60
    while len(re.findall(r'certificate "k\d+\.example\.test" valid until',
                         sidecar.log())) < len(names):
        assert time.monotonic() < deadline, sidecar.diagnostics()
        time.sleep(0.2)
    assert sidecar.stop() == 0
    leaves, strays = check_state_files(state, names)
    assert set(leaves) == set(names)
    assert (state / "account.key").read_bytes() == account_key
    final = {cid: leaf_serial(pem) for cid, pem in leaves.items()}
    changed = {c: (s, final[c]) for c, s in first_serial.items()
               if final[c] != s}
    assert not changed, "stored certificates replaced: %s" % changed

    issued = pebble_serials(pebble)
    assert len(issued) == len(set(issued))
    extra = set(issued) - set(final.values())
    assert not extra, (
        "Pebble issued %d certificates for %d ids; %d never stored (seed "
        "%d)" % (len(issued), len(names), len(extra), seed))
    counts = {}
    for m in re.finditer(r'certificate "([^"]+)" issued',
                         sidecar.log(this_run=False)):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    twice = {c: n for c, n in counts.items() if n > 1}
    assert not twice, "issued more than once: %s" % twice

    verify_all(state, names, pebble.root, tmp_path, lambda c: c)
    resumed = len(re.findall(r'resuming order', sidecar.log(this_run=False)))
    print("kills %d, Pebble issued %d for %d certificates, %d orders "
          "resumed after a kill, %d stray generations left" %
          (kills, len(issued), len(names), resumed, strays))


def test_kill_9_between_finalize_and_answer(run, fake):
    """Killed while its finalize waits out a Retry-After: the restarted
    daemon finds the order in pending/, still "ready", and finalizes it
    with the key it kept, with no second newOrder."""
    fake.on("/finalize/.*", problem(503, "serverInternal", "busy",
                                    {"Retry-After": "30"}))
    run.start([["resume.example.test"]])
    pending = run.state / "pending" / "resume.example.test.json"
    run.wait(lambda: fake.requests("/finalize/.*"), 20, "a finalize")
    run.check(pending.is_file(), "no pending order before the finalize")
    saved = json.loads(pending.read_text())
    run.sidecar.kill()

    run.sidecar.start()
    run.wait_issued("resume.example.test")
    run.wait_log(r'certificate "resume.example.test": resuming order '
                 r'http://127\.0\.0\.1:\d+/order/\d+')
    run.check_fake_cert(["resume.example.test"])
    run.check(len(fake.requests("/new-order")) == 1,
              "a second newOrder after the restart")
    fin = fake.requests("/finalize/.*")
    run.check([r.status for r in fin] == [503, 200],
              "finalize answers %s" % [r.status for r in fin])
    key = run.tmp / "saved.key"
    key.write_text(saved["key"])
    want = openssl("pkey", "-in", str(key), "-pubout").stdout
    got = openssl("pkey", "-in", str(run.state / "certs" /
                                     "resume.example.test" / "key.pem"),
                  "-pubout").stdout
    run.check(want == got, "the certificate is not for the kept key")
    run.wait(lambda: not pending.exists(), 5, "pending/ emptied")
    assert run.sidecar.stop() == 0


# ------------------------------------------------------------ 2. CA faults

def test_nonce_reject_50(tmp_path, pebble_factory, http_port,
                         sidecar_factory):
    """Pebble rejects half the good nonces; 100 certificates all issue."""
    pebble = pebble_factory(http_port, env={"PEBBLE_WFE_NONCEREJECT": "50"})
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    names = ["n%03d.example.test" % i for i in range(100)]
    write_config(conf, pebble, state, http_port, [([n], None) for n in names])
    sidecar = sidecar_factory(conf, [pebble]).start()
    # A request gives up after ACME_BADNONCE_TRIES (10) rejections, 1 in
    # 1024 at 50%: with some 500 requests an order may fail so, twice
    # even, and wait its backoff (60 s, then 120 s, +-20%) before it
    # issues.  Most runs take under 90 s.
    sidecar.wait_certs(state, names, timeout=330)
    log = sidecar.log()
    retries = len(re.findall(r"badNonce for \S+, resending", log))
    failed = re.findall(r'certificate "[^"]+": .*badNonce.*retrying', log)
    print("badNonce retries: %d, orders failed on badNonce: %d" %
          (retries, len(failed)))
    assert retries >= 100, "50%% rejection, yet only %d retries" % retries
    assert sidecar.stop() == 0
    verify_all(state, names, pebble.root, tmp_path, lambda c: c)


OUTAGE = 60.0


def test_ca_outage_60s(tmp_path, pebble_factory, http_port,
                       sidecar_factory):
    """Pebble is stopped for 60 s in the middle of a run.  Every order
    completes afterwards, and the connections the daemon opened to the CA
    during the outage stay under a bound (see below), with no second
    carrying more than the in-flight cap."""
    listen = free_port()
    pebble = pebble_factory(http_port, listen_port=listen)
    proxy = CountingProxy(listen)
    pebble.listen_port = proxy.port     # the daemon's uri goes via proxy
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    names = ["o%03d.example.test" % i for i in range(40)]
    write_config(conf, pebble, state, http_port, [([n], None) for n in names])
    pebble.listen_port = listen
    old_root = tmp_path / "root-before.pem"
    try:
        sidecar = sidecar_factory(conf, [pebble]).start()
        # Mid-run: some certificates are stored, the rest are on order.
        deadline = time.monotonic() + 30
        while len(list((state / "certs").glob("o*[0-9].example.test"))) < 5:
            assert time.monotonic() < deadline, sidecar.diagnostics()
            time.sleep(0.02)
        old_root.write_bytes(Path(pebble.root).read_bytes())
        pebble.stop()
        t0 = time.monotonic()
        before = len(list((state / "certs").glob("o*[0-9].example.test")))
        while time.monotonic() < t0 + OUTAGE:
            assert sidecar.alive(), sidecar.diagnostics()
            took, _ = api_status(tmp_path / "control.sock")
            assert took < STALL, "/v1/status took %.1fs" % took
            time.sleep(1)
        t1 = time.monotonic()
        pebble.start()
        during = proxy.count(t0, t1)
        waiting = len(names) - before
        sidecar.wait_certs(state, names, timeout=240)
        done = time.monotonic() - t1
    finally:
        proxy.close()
    per_second = max((sum(1 for u in during if t <= u < t + 1.0)
                      for t in during), default=0)
    print("outage %.0fs: %d certificates waiting, %d connections to the "
          "CA during it (max %d in one second); all done %.0fs after" %
          (t1 - t0, waiting, len(during), per_second, done))
    # The bound: each waiting order sends one request at a time, tried
    # at most 5 times (ACME_NET_TRIES) 2, 4, 8, 16 s apart, then backs
    # off at least 48 s (1 min - 20%): at most 2 rounds in 60 s.  Plus
    # the issuer's own nonce and account requests, also one at a time.
    bound = waiting * 2 * 5 + 20
    assert len(during) <= bound, (
        "%d connections during a 60 s outage, more than %d" %
        (len(during), bound))
    assert per_second <= 32 + 8, "a burst of %d connections" % per_second
    stored = sorted((state / "certs").glob("o*[0-9].example.test"))
    stored_names = [p.name for p in stored]
    assert sidecar.stop() == 0
    # Stored before the outage: the old root; after: the new one.
    for cid in stored_names:
        blocks = split_pem((state / "certs" / cid / "fullchain.pem")
                           .read_text())
        leaf, untrusted = tmp_path / "o.pem", tmp_path / "u.pem"
        leaf.write_text(blocks[0])
        untrusted.write_text("".join(blocks[1:]))
        assert any(openssl("verify", "-CAfile", str(r), "-untrusted",
                           str(untrusted), str(leaf),
                           check=False).returncode == 0
                   for r in (old_root, pebble.root)), cid


def test_ca_forgets_orders_under_way(tmp_path, pebble, http_port,
                                     sidecar_factory):
    """Pebble restarts, with an empty database, while two orders wait on
    their challenges.  Both challenges reach the new Pebble at once,
    signed for the account it forgot: the daemon registers once and
    sends both again.  It takes the 404 that follows as an order to
    replace, orders anew at once, and both certificates verify against
    the new root, well before the shortest backoff (48 s) would have
    ended."""
    from ca_proxy import CaProxy
    names = ["lost1.example.test", "lost2.example.test"]
    proxy = CaProxy(pebble).start()
    try:
        state = tmp_path / "state"
        conf = tmp_path / "acme-sidecar.conf"
        write_config(conf, proxy, state, http_port,
                     [([n], None) for n in names])
        proxy.hold("/chalZ/")
        sc = sidecar_factory(conf, [pebble]).start()
        deadline = time.monotonic() + 30
        while len(proxy.held("/chalZ/")) < len(names):
            assert time.monotonic() < deadline, sc.diagnostics()
            time.sleep(0.05)
        pebble.stop()
        pebble.start()
        proxy.release("/chalZ/", forward=True)
        sc.wait_certs(state, names, timeout=30)
    finally:
        proxy.stop()
    log = sc.log()
    assert len(re.findall(r"registered account", log)) == 2, \
        sc.diagnostics()
    for name in names:
        assert re.search(r'certificate "%s": the CA no longer knows the '
                         r'order \S+ \(challenge: HTTP 404' %
                         re.escape(name), log), sc.diagnostics()
        assert not re.search(r'certificate "%s": .*retrying in' %
                             re.escape(name), log), sc.diagnostics()
        check_certificate(state, [name], None, pebble, tmp_path)
    assert sc.stop() == 0


# Garbage from a CA: each case is a list of fake_acme.py rules (path,
# reply, times), and what the log must then say about the fake issuer.

# The fake issuer's request_timeout in the "slow" case: the answer comes
# later than that, so the request times out (the default is 30 s).
SLOW_TIMEOUT = 2


def _slow(req):
    time.sleep(SLOW_TIMEOUT + 3)
    return None         # then the normal answer


def _retype(req):
    reply = FAKE.default(req)
    return Reply(reply.status, json.dumps(reply.body).encode(),
                 {"Content-Type": "text/plain"})


def _relocate(req):
    reply = FAKE.default(req)
    reply.headers["Location"] = "htp://[::1:bad/order"
    return reply


GARBAGE = {
    "slow": ([("/new-order", _slow, 1)], r"new-order: .*time"),
    "truncated-json": ([("/new-order", Reply(
        201, '{"status": "pending", "authorizations": ["http://127.0.0.1',
        {"Content-Type": "application/json"}), None)],
        r"newOrder: HTTP 201, body is not valid JSON"),
    "wrong-content-type": ([("/authz/.*", _retype, None)],
                           r"HTTP 200, Content-Type text/plain"),
    "500-html": ([("/new-order", Reply(
        500, "<html><body>Internal Server Error</body></html>",
        {"Content-Type": "text/html"}), None)],
        r"HTTP 500, Content-Type text/html"),
    "retry-after-1e9": ([("/new-order", problem(
        503, "rateLimited", "come back later",
        {"Retry-After": "1000000000"}), None)], r"come back later"),
    # The order's Location is no URL: refused at once, not requested.
    "bad-location": ([("/new-order", _relocate, None)],
                     r'certificate "bad.example.test": newOrder: malformed '
                     r'order object \(Location htp://'),
    "huge-body": ([("/new-order", Reply(
        201, b'{"status": "pending", "x": "' + b"A" * (6 << 20) + b'"}',
        {"Content-Type": "application/json"}), None)],
        r"response too large"),
}

# More lines for the fake issuer's block, per case.
GARBAGE_ISSUER = {"slow": ["request_timeout %ds;" % SLOW_TIMEOUT]}

FAKE = None     # the fake of the running test, for the callables above


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_ca_isolated(tmp_path, run, fake, pebble, case):
    """A fake issuer misbehaves; the daemon stays up, says what is wrong,
    the control API answers all along without waiting for the CA, and the Pebble
    issuer issues all its certificates meanwhile."""
    global FAKE
    FAKE = fake
    rules, said = GARBAGE[case]
    for path, reply, times in rules:
        fake.on(path, reply, times=times)
    pstate = tmp_path / "state-pebble"
    run.issuers["pebble"] = (pebble.directory_url, pstate, [
        "ssl_trusted_certificate %s;" % pebble.ca])
    pnames = ["g%d.example.test" % i for i in range(5)]
    run.start([["bad.example.test"]], certs=[("pebble", [n])
                                              for n in pnames],
              pebbles=[pebble], extra=GARBAGE_ISSUER.get(case, ()))
    sock = tmp_path / "control.sock"
    t0 = time.monotonic()
    worst = 0.0
    rx = re.compile(r"\[warn\] .*" + said)
    while not rx.search(run.sidecar.log()) or not all(
            (pstate / "certs" / n / "fullchain.pem").is_file()
            for n in pnames):
        run.check(time.monotonic() < t0 + 50,
                  "after 50 s: Pebble's certificates %s, log /%s/ %s" % (
                      "stalled" if not all(
                          (pstate / "certs" / n / "fullchain.pem").is_file()
                          for n in pnames) else "issued", said,
                      "seen" if rx.search(run.sidecar.log()) else "missing"))
        run.check(run.sidecar.alive(), "the daemon died (%s)" % case)
        if sock.exists():
            took, _ = api_status(sock)
            worst = max(worst, took)
        time.sleep(0.2)
    print(rx.search(run.sidecar.log()).group(0))
    run.check(worst < STALL, "/v1/status took %.1fs" % worst)
    for n in pnames:
        check_certificate(pstate, [n], None, pebble, tmp_path)
    if case == "retry-after-1e9":
        m = run.wait_log(r'certificate "bad.example.test": .*'
                         r'retrying in (\d+)s')
        run.check(int(m.group(1)) <= 24 * 3600 * 1.2,
                  "Retry-After 10^9 taken as is: %s" % m.group(0))
    assert run.sidecar.stop() == 0


# ------------------------------------------------------------ 3. disk

def _mount_tmpfs(path, size):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size,
                    "tmpfs", str(path)], check=True)


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path):
    """Fill the file system of path to the last byte; returns the filler
    file."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _shm_ids(tmp_path, want=(), timeout=10.0):
    """{id: serial} of the segment, once it holds every id in want."""
    deadline = time.monotonic() + timeout
    while True:
        got = {e["id"]: e["serial"]
               for e in shmread.certs(str(zone_path(tmp_path)))}
        if set(want) <= set(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_state_path_fault(tmp_path, pebble, http_port, sidecar_factory,
                          fault):
    """A certificate is issued while state_path cannot take it.  The log
    says so, the segment keeps the certificates already there (and gets
    the new one), and once the disk is back the write completes without
    a second order."""
    state = tmp_path / "state"
    _mount_tmpfs(state, "2M")
    filler = None
    try:
        conf = tmp_path / "acme-sidecar.conf"
        first = ["d1.example.test", "d2.example.test"]
        write_config(conf, pebble, state, http_port, [([n], None)
                                                      for n in first])
        sidecar = sidecar_factory(conf, [pebble]).start()
        sidecar.wait_certs(state, first)
        sidecar.wait_log(r'certificate "d2.example.test" issued')
        sidecar.wait_log(r'certificate "d1.example.test" issued')
        had = _shm_ids(tmp_path, first)
        assert set(had) == set(first)
        issued_before = len(pebble_serials(pebble))

        if fault == "full":
            filler = _fill(state)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(state)],
                           check=True)
        mark = sidecar.mark()
        write_config(conf, pebble, state, http_port,
                     [([n], None) for n in first + ["d3.example.test"]])
        sidecar.signal(1)   # SIGHUP
        m = sidecar.wait_log(r'\[warn\] certificate "d3.example.test": '
                             r'issued, but storing it in \S+ failed: '
                             r'(.*); serving it from memory and retrying '
                             r'the write in (\d+)s', since=mark, timeout=30)
        print("logged: %s" % m.group(0))
        want = "No space left" if fault == "full" else "Read-only"
        assert want in m.group(1), m.group(0)
        # A second write fails too, the certificate still served.
        sidecar.wait_log(r'\[warn\] certificate "d3.example.test": '
                         r'issued, but storing it in \S+ failed: .* '
                         r'\(try 2\)', since=mark, timeout=30)
        now = _shm_ids(tmp_path, first + ["d3.example.test"])
        for cid in first:
            assert now.get(cid) == had[cid], "%s left the segment" % cid
        assert "d3.example.test" in now, "the issued one is not served"
        assert not (state / "certs" / "d3.example.test").exists()
        took, status = api_status(tmp_path / "control.sock")
        assert took < STALL, "/v1/status took %.1fs" % took

        if fault == "full":
            filler.unlink()
            filler = None
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(state)],
                           check=True)
        sidecar.wait_certs(state, ["d3.example.test"], timeout=60)
        sidecar.wait_log(r'certificate "d3.example.test": stored in \S+ '
                         r'after \d+ failed writes?', since=mark)
        sidecar.wait_log(r'certificate "d3.example.test" issued', since=mark)
        check_certificate(state, ["d3.example.test"], None, pebble, tmp_path)
        orders = re.findall(r'certificate "d3.example.test": ordering',
                            sidecar.log(since=mark))
        assert len(orders) == 1, "ordered %d times" % len(orders)
        assert len(pebble_serials(pebble)) == issued_before + 1, \
            "Pebble issued d3 more than once"
        stored = leaf_serial(split_pem(
            (state / "certs" / "d3.example.test" / "fullchain.pem")
            .read_text())[0])
        assert stored in pebble_serials(pebble)
        assert sidecar.stop() == 0
    finally:
        if filler is not None:
            try:
                filler.unlink()
            except OSError:
                pass
        _umount(state)
