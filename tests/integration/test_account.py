"""The ACME account (RFC 8555 7.3): contact update, key rollover and its
crash recovery, deactivation, through the control API and acmectl,
against a real Pebble 2.4.0.

What the CA holds is read from Pebble itself, with requests this file
signs with the keys found in state_path: newAccount with
onlyReturnExisting tells whether Pebble knows a key, and a POST-as-GET
to the account URL returns the account object (contact, status).

The crash between keyChange's answer and the file swap is a real
SIGKILL, at that exact point: strace, attached to the daemon, kills it
when it enters the rename() of account.key.next onto account.key (the
rename is not carried out), with no hook in the daemon.
"""

import base64
import json
import os
import pty
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from conftest import (ROOT, cert_id, check_certificate, free_port, mode,
                      write_config)

ACMECTL = Path(os.environ.get("ACMECTL", ROOT / "build" / "acmectl"))
NAMES = ["acct.example.test"]
CID = cert_id(NAMES)


def acmectl(sock, *args, stdin=subprocess.DEVNULL, timeout=60):
    return subprocess.run([str(ACMECTL), "-s", str(sock), *args],
                          stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def acmectl_tty(sock, answer, *args):
    """acmectl with a terminal as stdin, on which answer is typed."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([str(ACMECTL), "-s", str(sock), *args],
                             stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        os.close(slave)
        slave = None
        os.write(master, (answer + "\n").encode())
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    return p.returncode, out, err


def acmectl_ok(sock, *args):
    p = acmectl(sock, *args)
    assert p.returncode == 0, "acmectl %s: exit %d: %s" % (
        " ".join(args), p.returncode, p.stderr)
    return p.stdout


def show(sock):
    return json.loads(acmectl_ok(sock, "--json", "account", "show",
                                 "pebble"))


# ------------------------------------------------- speaking to Pebble

def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Ca:
    """Signed requests to Pebble with a key of state_path (P-256)."""

    def __init__(self, pebble):
        self.ctx = ssl.create_default_context(cafile=str(pebble.ca))
        with urllib.request.urlopen(pebble.directory_url,
                                    context=self.ctx, timeout=10) as r:
            self.dir = json.load(r)

    def _nonce(self):
        req = urllib.request.Request(self.dir["newNonce"], method="HEAD")
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            return r.headers["Replay-Nonce"]

    def post(self, pem, url, payload, kid=None):
        """(status, Location, JSON body) of one POST; payload None is a
        POST-as-GET.  Pebble refuses a share of good nonces on purpose:
        badNonce is sent again, as RFC 8555 6.5 says."""
        for _ in range(10):
            got = self._post(pem, url, payload, kid)
            if got[0] != 400 or not got[2].get("type", "").endswith(
                    ":badNonce"):
                return got
        return got

    def _post(self, pem, url, payload, kid):
        key = serialization.load_pem_private_key(pem.encode(), None)
        nums = key.public_key().public_numbers()
        prot = {"alg": "ES256", "nonce": self._nonce(), "url": url}
        if kid is None:
            prot["jwk"] = {"kty": "EC", "crv": "P-256",
                           "x": b64u(nums.x.to_bytes(32, "big")),
                           "y": b64u(nums.y.to_bytes(32, "big"))}
        else:
            prot["kid"] = kid
        p64 = b64u(json.dumps(prot).encode())
        b64 = "" if payload is None else b64u(json.dumps(payload).encode())
        der = key.sign(("%s.%s" % (p64, b64)).encode(),
                       ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        sig = b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        body = json.dumps({"protected": p64, "payload": b64,
                           "signature": sig}).encode()
        req = urllib.request.Request(
            url, data=body, method="POST",
            headers={"Content-Type": "application/jose+json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx,
                                        timeout=10) as r:
                return r.status, r.headers.get("Location"), json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, None, json.loads(e.read() or b"{}")

    def account_of(self, pem):
        """The account URL Pebble finds for this key, or its problem."""
        status, loc, body = self.post(pem, self.dir["newAccount"],
                                      {"onlyReturnExisting": True})
        return loc if status == 200 else body.get("type", str(status))

    def account(self, pem, url):
        status, _, body = self.post(pem, url, None, kid=url)
        assert status == 200, "POST-as-GET %s: %d %s" % (url, status, body)
        return body


NOT_FOUND = "urn:ietf:params:acme:error:accountDoesNotExist"


# ------------------------------------------------------------- the run

@pytest.fixture
def daemon(tmp_path, pebble, http_port, sidecar_factory):
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble, state, http_port, [(NAMES, None)])
    sc = sidecar_factory(conf, [pebble]).start()
    sc.wait_certs(state, [CID])
    sc.state, sc.conf, sc.sock = state, conf, tmp_path / "control.sock"
    sc.http_port = http_port
    return sc


def renew_and_check(sc, pebble, tmp_path):
    """A new certificate issues (signed requests with the account key
    the daemon holds now), and it verifies."""
    before = (sc.state / "certs" / CID / "fullchain.pem").read_text()
    acmectl_ok(sc.sock, "renew", "--timeout", "60", CID)
    after = (sc.state / "certs" / CID / "fullchain.pem").read_text()
    assert after != before, "renew stored no new certificate"
    check_certificate(sc.state, NAMES, None, pebble, tmp_path)


def account_requests(sock):
    """Requests sent to the account URL so far, from /metrics."""
    text = acmectl_ok(sock, "metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("acme_sidecar_acme_requests_total{") and
               'endpoint="account"' in line)


def strace_kill_at_swap(sc):
    """strace attached to the daemon: SIGKILL when it enters the
    rename() of account.key.next (onto account.key), which is then not
    carried out.  Returns once the daemon is traced.  (strace 6.1's -P
    matches a rename by its first path only.)"""
    if shutil.which("strace") is None:
        pytest.fail("strace is missing: scripts/install-deps installs it",
                    pytrace=False)
    st = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(sc.proc.pid),
         "-P", str(sc.state / "account.key.next"),
         "-e", "trace=rename,renameat,renameat2",
         "-e", "inject=rename,renameat,renameat2:error=EPERM:signal=KILL"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = Path("/proc/%d/status" % sc.proc.pid)
    deadline = time.monotonic() + 20
    while "TracerPid:\t0\n" in status.read_text():
        if st.poll() is not None or time.monotonic() > deadline:
            st.kill()
            pytest.fail("strace did not attach to the daemon (exit %s)" %
                        st.poll(), pytrace=False)
        time.sleep(0.05)
    return st


def test_contact_rollover_and_crash(daemon, pebble, tmp_path):
    """Contact follows the configuration after a reload; a rollover gives
    the account a new key that Pebble takes and the old one it refuses,
    and issuance goes on with it; a SIGKILL between keyChange's answer
    and the swap of account.key leaves an account that the next start
    finds working; a leftover key the CA never saw is dropped."""
    sc, state = daemon, daemon.state
    ca = Ca(pebble)
    key1 = (state / "account.key").read_text()
    url = (state / "account.url").read_text().strip()

    # --- show, and contact at the CA
    a = show(sc.sock)
    assert a["url"] == url and a["status"] == "valid", a
    assert a["key_type"] == "ecdsa:256" and a["thumbprint"], a
    assert a["contact"] == ["mailto:admin@example.test"], a
    text = acmectl_ok(sc.sock, "account", "show", "pebble")
    assert "url           %s\n" % url in text, text
    assert ca.account(key1, url)["contact"] == ["mailto:admin@example.test"]

    mark = sc.mark()
    write_config(sc.conf, pebble, state, sc.http_port, [(NAMES, None)],
                 issuer_extra="contact ops@example.test;")
    sc.signal(signal.SIGHUP)
    sc.wait_log(r'contact updated at the CA to '
                r'\["mailto:admin@example.test","mailto:ops@example.test"\]',
                since=mark)
    assert ca.account(key1, url)["contact"] == [
        "mailto:admin@example.test", "mailto:ops@example.test"]
    # Idempotent: the same contact again sends no update (checked
    # below, once the rollover and a whole order have been through).
    sent = account_requests(sc.sock)
    mark = sc.mark()
    acmectl_ok(sc.sock, "reload")

    # --- rollover
    out = acmectl_ok(sc.sock, "account", "rollover", "pebble")
    assert "rolled over to a new ecdsa:256 key" in out, out
    key2 = (state / "account.key").read_text()
    assert key2 != key1 and key2.startswith("-----BEGIN PRIVATE KEY-----")
    assert mode(state / "account.key") == 0o600
    assert not (state / "account.key.next").exists()
    assert ca.account_of(key2) == url
    assert ca.account_of(key1) == NOT_FOUND, "the old key still works"
    assert show(sc.sock)["thumbprint"] != a["thumbprint"]
    renew_and_check(sc, pebble, tmp_path)
    assert account_requests(sc.sock) == sent, "a reload that changed " \
        "nothing sent the contact again"
    assert "contact updated" not in sc.log(since=mark)

    # --- a rollover killed between the CA's yes and the swap
    st = strace_kill_at_swap(sc)
    try:
        p = acmectl(sc.sock, "account", "rollover", "pebble")
        assert p.returncode != 0, "the rollover answered: %s" % p.stdout
        sc.proc.wait(timeout=30)
    finally:
        st.kill()
        st.wait()
    assert sc.proc.returncode == -signal.SIGKILL, sc.proc.returncode
    assert sc.log().rstrip().splitlines()[-1].endswith(
        "the CA took the new account key; replacing %s/account.key" %
        state), sc.log()[-500:]
    assert (state / "account.key").read_text() == key2
    key3 = (state / "account.key.next").read_text()
    assert ca.account_of(key3) == url, "Pebble did not take the new key"
    assert ca.account_of(key2) == NOT_FOUND

    sc.start()
    sc.wait_log(r"the CA knows the key of account.key.next; it is "
                r"account.key now")
    assert (state / "account.key").read_text() == key3
    assert not (state / "account.key.next").exists()
    assert mode(state / "account.key") == 0o600
    renew_and_check(sc, pebble, tmp_path)

    # --- a leftover the CA never saw (killed before keyChange left)
    sc.kill()
    stray = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (state / "account.key.next").write_bytes(stray)
    sc.start()
    sc.wait_log(r"the CA does not know the key of account.key.next; "
                r"account.key stays")
    sc.wait_log(r"account %s ready" % url)
    assert (state / "account.key").read_text() == key3
    assert not (state / "account.key.next").exists()
    assert sc.stop() == 0


def test_deactivate(daemon, pebble, tmp_path):
    """acmectl refuses without a terminal or --yes, and on a terminal
    unless the issuer's name is typed back; then Pebble deactivates the
    account, the issuer says so and orders nothing, and a restart
    registers no new account by itself: removing account.deactivated
    and reloading does."""
    sc, state = daemon, daemon.state
    ca = Ca(pebble)
    key = (state / "account.key").read_text()
    url = (state / "account.url").read_text().strip()

    p = acmectl(sc.sock, "account", "deactivate", "pebble")
    assert p.returncode == 1, p
    assert "stdin is not a terminal" in p.stderr and "--yes" in p.stderr, \
        p.stderr
    for args, msg in ((["show", "--yes"], "account show does not take "
                       "--yes"), (["deactivate", "--key", "rsa:2048"],
                                  "account deactivate does not take --key"),
                      (["drop"], 'account: unknown "drop"')):
        p = acmectl(sc.sock, "account", *args, "pebble")
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    rc, out, err = acmectl_tty(sc.sock, "pebbel", "account", "deactivate",
                               "pebble")
    assert rc == 1 and "cannot be undone" in err and \
        "not confirmed; nothing was done" in err, (rc, out, err)
    assert ca.account(key, url)["status"] == "valid"

    rc, out, err = acmectl_tty(sc.sock, "pebble", "account", "deactivate",
                               "pebble")
    assert rc == 0 and "account %s deactivated" % url in out, (rc, out, err)
    status, _, body = ca.post(key, url, None, kid=url)
    assert status == 403 and body["type"].endswith(":unauthorized"), body
    a = show(sc.sock)
    assert a["state"] == "deactivated" and a["status"] == "deactivated", a
    assert (state / "account.deactivated").read_text().strip() == url
    assert not (state / "account.key").exists()
    assert list(state.glob("account.key.deactivated-*"))

    # No more orders, with an error that says why.
    p = acmectl(sc.sock, "renew", "--timeout", "30", CID)
    assert p.returncode == 1 and "is deactivated" in p.stderr, p.stderr
    cert = json.loads(acmectl_ok(sc.sock, "--json", "show", CID))
    assert "is deactivated" in cert["last_error"]["message"], cert
    p = acmectl(sc.sock, "account", "rollover", "pebble")
    assert p.returncode == 1 and "is deactivated" in p.stderr, p.stderr
    p = acmectl(sc.sock, "account", "deactivate", "--yes", "pebble")
    assert p.returncode == 1 and "is deactivated" in p.stderr, p.stderr

    assert sc.stop() == 0
    sc.start()
    sc.wait_log(r"account %s is deactivated .*account.deactivated.*remove "
                r"that file" % url)
    assert show(sc.sock)["state"] == "deactivated"
    assert not (state / "account.key").exists(), "a new account was made"

    # Asking for a new account: remove the file, reload.
    (state / "account.deactivated").unlink()
    mark = sc.mark()
    acmectl_ok(sc.sock, "reload")
    sc.wait_log(r"registered account", since=mark)
    a = show(sc.sock)
    assert a["state"] == "ready" and a["url"] != url, a
    renew_and_check(sc, pebble, tmp_path)
    assert sc.stop() == 0


def test_add_with_profile(run, fake):
    """acmectl add --profile: the order carries it (the fake CA lists
    it; Pebble 2.4 has no profiles)."""
    fake.profiles = {"classic": "the usual", "shortlived": "6 days"}
    run.start([["p.example"]])
    run.wait_issued("p.example")
    sock = run.tmp / "control.sock"
    out = json.loads(acmectl_ok(sock, "--json", "add", "--profile",
                                "shortlived", "fake", "q.example"))
    assert out["profile"] == "shortlived", out
    sent = [p.get("profile") for p in fake.new_orders()
            if "q.example" in [i["value"] for i in p["identifiers"]]]
    assert sent == ["shortlived"], sent
    p = acmectl(sock, "add", "--profile", "", "fake", "r.example")
    assert p.returncode == 2 and "--profile: empty" in p.stderr, p.stderr


def jwk_of(pem_path):
    """The public JWK (P-256) of a PKCS#8 key file."""
    key = serialization.load_pem_private_key(Path(pem_path).read_bytes(),
                                             None)
    nums = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256",
            "x": b64u(nums.x.to_bytes(32, "big")),
            "y": b64u(nums.y.to_bytes(32, "big"))}


def test_key_change_refused_or_answer_lost(run, fake):
    """A keyChange the CA refuses leaves the old key and no
    account.key.next; one the CA carried out but whose answer was lost
    (a 500, then the retry, signed by the old key, refused) is found out
    by asking the CA, and the new key is kept: the account is not lost."""
    from fake_acme import problem, Reply
    run.start([["k.example"]])
    run.wait_issued("k.example")
    sock, state = run.tmp / "control.sock", run.state
    key1 = (state / "account.key").read_text()

    fake.on("/key-change", problem(400, "malformed", "no thanks"))
    p = acmectl(sock, "account", "rollover", "fake")
    assert p.returncode == 1 and "malformed: no thanks" in p.stderr, p
    assert (state / "account.key").read_text() == key1
    assert not (state / "account.key.next").exists()
    assert fake.account_jwk == jwk_of(state / "account.key")

    def lost(req):
        fake.key_changed(req)
        return Reply(500, "the answer is lost")
    fake.on("/key-change", lost)
    fake.on("/key-change", problem(401, "unauthorized", "not your key"))
    mark = run.sidecar.mark()
    out = acmectl_ok(sock, "account", "rollover", "fake")
    assert "rolled over" in out, out
    assert "asking the CA which key it has" in run.sidecar.log(since=mark)
    assert (state / "account.key").read_text() != key1
    assert not (state / "account.key.next").exists()
    assert fake.account_jwk == jwk_of(state / "account.key"), \
        "account.key is not the key the CA has"
    assert len(fake.requests("/key-change")) == 3


def test_cluster_refuses_rollover_and_deactivation(tmp_path, pebble,
                                                   http_port,
                                                   sidecar_factory):
    """With cluster the account is the fleet's, one record in Redis:
    rollover and deactivation are refused, saying why, and the account
    stays as it was at the CA."""
    from clusterlib import Redis, write_secret
    redis = Redis(tmp_path / "redis").start()
    try:
        state = tmp_path / "state"
        conf = tmp_path / "acme-sidecar.conf"
        write_config(conf, pebble, state, http_port, [])
        with open(conf, "a") as f:
            f.write("cluster redis://127.0.0.1:%d prefix=acct node=n1 "
                    "secret_file=%s;\n" % (
                        redis.port, write_secret(tmp_path / "secret")))
        sc = sidecar_factory(conf, [pebble]).start()
        sc.wait_log(r"account \S+ is the fleet's now", timeout=30)
        sock = tmp_path / "control.sock"
        a = show(sock)
        assert a["shared_by_cluster"] is True and a["state"] == "ready", a
        for args in (["rollover"], ["deactivate", "--yes"]):
            p = acmectl(sock, "account", *args, "pebble")
            assert p.returncode == 1, p
            assert "cluster mode: the account is shared by every node " \
                "through Redis" in p.stderr, p.stderr
        key = (state / "account.key").read_text()
        assert Ca(pebble).account_of(key) == a["url"]
        assert not (state / "account.key.next").exists()
        assert sc.stop() == 0
    finally:
        redis.kill()


class HeldValidations:
    """A TCP relay in front of the daemon's HTTP-01 responder, where
    Pebble's VA connects: while held, a validation waits in it, and
    the order stays open at the CA with nothing in flight between the
    daemon's polls."""

    def __init__(self, upstream_port):
        import socketserver
        import threading
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with relay.cond:
                    relay.waiting += 1
                    relay.cond.notify_all()
                    while relay.holding:
                        relay.cond.wait(0.5)
                relay.pipe(self.request)

        self.upstream_port = upstream_port
        self.cond = threading.Condition()
        self.holding = False
        self.waiting = 0
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def pipe(self, client):
        import select
        import socket
        with socket.create_connection(("127.0.0.1", self.upstream_port),
                                      timeout=10) as up:
            socks = [client, up]
            while True:
                ready, _, _ = select.select(socks, [], [], 10)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is client else client).sendall(data)

    def hold(self):
        with self.cond:
            self.holding, self.waiting = True, 0

    def release(self):
        with self.cond:
            self.holding = False
            self.cond.notify_all()

    def stop(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()


def test_rollover_waits_for_open_orders(tmp_path, pebble_factory,
                                        sidecar_factory):
    """A rollover asked while Pebble is validating a challenge waits
    for that order to close: Pebble checks the key authorization against
    the account key's thumbprint, so a new key at that moment would fail
    the validation.  The daemon's polls go on meanwhile, and once the
    validation is let through both the new certificate and the rollover
    succeed, keyChange after the order's finalize.  (A certificate added
    for a new name: a renewal would reuse Pebble's valid authorization.)"""
    from ca_proxy import CaProxy
    http_port = free_port()
    relay = HeldValidations(http_port)
    pebble = pebble_factory(relay.port)
    proxy = CaProxy(pebble).start()
    try:
        state = tmp_path / "state"
        conf = tmp_path / "acme-sidecar.conf"
        write_config(conf, proxy, state, http_port, [(NAMES, None)])
        sc = sidecar_factory(conf, [pebble]).start()
        sc.wait_certs(state, [CID])
        sock = tmp_path / "control.sock"
        key1 = (state / "account.key").read_text()

        relay.hold()
        acmectl_ok(sock, "add", "--no-wait", "pebble", "held.example.test")
        with relay.cond:
            assert relay.cond.wait_for(lambda: relay.waiting > 0, 30), \
                "Pebble never validated held.example.test" + sc.diagnostics()
        mark = sc.mark()
        rollover = subprocess.Popen(
            [str(ACMECTL), "-s", str(sock), "account", "rollover", "pebble"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sc.wait_log(r"rolling account \S+ over to a new", since=mark)
        polls = len(proxy.payloads("/authZ/"))
        deadline = time.monotonic() + 30
        while len(proxy.payloads("/authZ/")) == polls:
            assert time.monotonic() < deadline, "no poll" + sc.diagnostics()
            time.sleep(0.05)
        assert not proxy.payloads("/rollover-account-key"), \
            "keyChange left while the CA was validating a challenge"

        relay.release()
        out, err = rollover.communicate(timeout=60)
        assert rollover.returncode == 0, err
        assert "rolled over to a new ecdsa:256 key" in out, out
        paths = [path for path, _, _ in proxy.posts]
        finalize = max(i for i, p in enumerate(paths)
                       if "/finalize-order/" in p)
        key_change = [i for i, p in enumerate(paths)
                      if "/rollover-account-key" in p]
        assert key_change and key_change[0] > finalize, paths
        key2 = (state / "account.key").read_text()
        assert key2 != key1
        assert Ca(proxy).account_of(key2) == (state /
                                              "account.url").read_text().strip()
        sc.wait_certs(state, ["held.example.test"])
        check_certificate(state, ["held.example.test"], None, pebble,
                          tmp_path)
        assert sc.stop() == 0
    finally:
        proxy.stop()
        relay.stop()
