"""acmectl, the command-line client of the control API.

A real daemon and a real Pebble, as in test_control.py; what acmectl prints
is checked against what curl gets from the same socket.  A small fake
server on a Unix socket feeds it responses the daemon never sends, to
check that acmectl refuses them instead of printing nonsense, and to
check what acmectl sends.

The routes add, delete, revoke, events and metrics are recent: a test of
one is skipped, saying so, when the daemon answers that it has no such
route (404 "no route" or 405).
"""

import json
import os
from pathlib import Path
import queue
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import (ROOT, cert_id, cert_serial, check_certificate,
                      split_pem, write_config)

ACMECTL = Path(os.environ.get("ACMECTL", ROOT / "build" / "acmectl"))
CERTS = [(["a.example.test"], None), (["b.example.test", "c.example.test"],
                                       "rsa:2048")]
IDS = sorted(cert_id(n, k) for n, k in CERTS)


def acmectl(*args, env=None, timeout=30):
    e = dict(os.environ)
    e.pop("ACME_SIDECAR_SOCKET", None)
    e.update(env or {})
    return subprocess.run([str(ACMECTL), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          env=e)


def curl(sock, path):
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket",
                        str(sock), "http://localhost" + path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def wait_idle(sock, cid, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        j = curl(sock, "/v1/certificates/" + cid)
        if j.get("state") == "idle" and j.get("valid"):
            return j
        assert time.monotonic() < deadline, "%s not idle: %s" % (cid, j)
        time.sleep(0.2)


@pytest.fixture
def setup(tmp_path, pebble, http_port, sidecar_factory):
    if not os.access(ACMECTL, os.X_OK):
        pytest.fail("%s is missing: run make first" % ACMECTL,
                    pytrace=False)
    conf = tmp_path / "acme-sidecar.conf"
    state = tmp_path / "state"
    write_config(conf, pebble, state, http_port, CERTS)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, IDS)
    sidecar.wait_log(r"control: listening on")
    sock = tmp_path / "control.sock"
    for cid in IDS:
        wait_idle(sock, cid)
    wait_zone_settled(sock)
    return sidecar, state, sock


def wait_zone_settled(sock, timeout=10):
    """Certificates reach the shared zone within 100 ms of being stored:
    wait until it holds them all and no token, so that the status the
    tests compare does not move under them."""
    deadline = time.monotonic() + timeout
    while True:
        st = curl(sock, "/v1/status")
        zone = st["shared_zone"]
        if zone["certificates"] == st["certificates"]["total"] and \
                zone["tokens"] == 0:
            time.sleep(0.3)
            if curl(sock, "/v1/status")["shared_zone"] == zone:
                return
        assert time.monotonic() < deadline, "zone never settled: %s" % st
        time.sleep(0.1)


def table(text):
    """Rows of a table: whitespace-split lines after the header."""
    lines = text.splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


def test_tables(setup):
    _, _, sock = setup
    p = acmectl("-s", str(sock), "list")
    assert p.returncode == 0 and p.stderr == "", p
    head, rows = table(p.stdout)
    assert head == ["ID", "STATE", "NOT", "AFTER", "NEXT", "RENEWAL",
                    "ISSUER", "FAILURES"], p.stdout
    # Sorted by id; every certificate idle, from pebble, no failures.
    assert [r[0] for r in rows] == IDS, p.stdout
    certs = {c["id"]: c for c in curl(sock, "/v1/certificates")
             ["certificates"]}
    for r in rows:
        c = certs[r[0]]
        assert r == [c["id"], "idle", c["not_after"], c["next_renewal"],
                     "pebble", "0"], p.stdout

    p = acmectl("-s", str(sock), "status")
    assert p.returncode == 0 and p.stderr == "", p
    out = p.stdout
    assert out.startswith("version       0.1.0\n"), out
    assert "certificates  2 total, 2 valid\n" in out, out
    assert "\n  idle        2\n" in out, out
    st = curl(sock, "/v1/status")
    issuer = st["issuers"][0]
    assert "\n  pebble  ready  %s\n" % issuer["uri"] in out, out
    zone = st["shared_zone"]
    assert "shared zone   generation %d, " % zone["generation"] in out, out
    assert "%d certificates, " % zone["certificates"] in out, out
    # No cluster directive: the daemon says so, and so does acmectl.
    assert st["cluster"] == {"enabled": False}, st
    assert out.endswith(" failed publishes\ncluster       off\n"), out

    p = acmectl("-s", str(sock), "show", "b.example.test_rsa2048")
    assert p.returncode == 0 and p.stderr == "", p
    assert "identifiers   b.example.test c.example.test\n" in p.stdout
    assert "key type      rsa:2048\n" in p.stdout
    assert "state         idle\n" in p.stdout
    assert "last error    -\n" in p.stdout


def test_json_matches_api(setup):
    _, _, sock = setup
    for args, path in [(["list"], "/v1/certificates"),
                       (["show", "a.example.test"],
                        "/v1/certificates/a.example.test"),
                       (["status"], "/v1/status")]:
        p = acmectl("-s", str(sock), "--json", *args)
        assert p.returncode == 0 and p.stderr == "", p
        assert p.stdout.startswith("{\n  \""), p.stdout  # indented
        got = json.loads(p.stdout)
        want = curl(sock, path)
        if path == "/v1/status":
            # Seconds pass between the two calls.
            assert abs(got.pop("uptime") - want.pop("uptime")) <= 2
        assert got == want, args


def test_errors(setup, tmp_path):
    _, _, sock = setup
    p = acmectl("-s", str(sock), "show", "nope.example.test")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr == \
        'acmectl: no certificate "nope.example.test" (HTTP 404)\n', p
    p = acmectl("-s", str(sock), "renew", "nope.example.test")
    assert p.returncode == 1
    assert p.stderr.endswith("(HTTP 404)\n"), p

    missing = tmp_path / "no" / "such.sock"
    p = acmectl("-s", str(missing), "status")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr == "acmectl: %s: No such file or directory\n" % \
        missing, p

    for args in [[], ["show"], ["list", "x"], ["frobnicate"], ["-x"]]:
        p = acmectl("-s", str(sock), *args)
        assert p.returncode == 2 and p.stdout == "", (args, p)


# Refused before any connection: the socket need not exist.
@pytest.mark.parametrize("args,err", [
    (["add"], "usage: acmectl [--json] [-s socket] add "),
    (["add", "pebble"], "usage: acmectl [--json] [-s socket] add "),
    (["add", "pebble", ""], "usage: "),
    (["remove"], "usage: acmectl [--json] [-s socket] remove ID\n"),
    (["remove", "a", "b"], "usage: "),
    (["revoke"], "usage: acmectl [--json] [-s socket] revoke "),
    (["renew"], "usage: acmectl [--json] [-s socket] renew "),
    (["renew", "--all", "a.example.test"], "usage: "),
    (["events", "x"], "usage: acmectl [--json] [-s socket] events\n"),
    (["metrics", "x"], "usage: "),
    (["metrics", "--json"], "acmectl: metrics does not take --json\n"),
    (["list", "--all"], "acmectl: list does not take --all\n"),
    (["show", "--key", "rsa:2048", "a"], "does not take --key\n"),
    (["remove", "--reason", "1", "a"], "does not take --reason\n"),
    (["revoke", "--no-wait", "a"], "does not take --no-wait or --timeout"),
    (["add", "--timeout", "0", "pebble", "x.test"], "--timeout: \"0\""),
    (["add", "--timeout", "5s", "pebble", "x.test"], "--timeout: \"5s\""),
    (["renew", "--timeout", "", "a"], "--timeout: "),
    (["revoke", "--reason", "", "a"], "--reason: empty"),
    (["add", "--key"], "requires an argument"),
])
def test_usage_errors(tmp_path, args, err):
    p = acmectl("-s", str(tmp_path / "none.sock"), *args)
    assert p.returncode == 2 and p.stdout == "", (args, p)
    assert err in p.stderr, (args, p)
    assert "No such file" not in p.stderr, (args, p)


def test_help_lists_commands():
    p = acmectl("-h")
    assert p.returncode == 0 and p.stderr == "", p
    for cmd in ["status", "list", "show", "add", "remove", "renew",
                "revoke", "reload", "events", "metrics", "account",
                "--timeout SECONDS", "--no-wait", "--reason R",
                "--key TYPE"]:
        assert "\n  " + cmd + " " in p.stdout, cmd
    assert "not implemented" not in p.stdout
    # A command's own help: its usage line and only the options it takes.
    p = acmectl("renew", "--help")
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout.startswith("usage: acmectl [--json] [-s socket] renew "
                               "[--no-wait] [--timeout SECONDS] ID|--all\n")
    assert "--timeout SECONDS" in p.stdout and "--key" not in p.stdout, p


def test_socket_choice(setup, tmp_path):
    _, _, sock = setup
    # The environment is used without -s ...
    p = acmectl("list", env={"ACME_SIDECAR_SOCKET": str(sock)})
    assert p.returncode == 0 and "a.example.test" in p.stdout, p
    # ... and -s wins over it.
    other = tmp_path / "other.sock"
    p = acmectl("-s", str(other), "list",
                env={"ACME_SIDECAR_SOCKET": str(sock)})
    assert p.returncode == 1 and str(other) in p.stderr, p
    p = acmectl("-s", str(sock), "list",
                env={"ACME_SIDECAR_SOCKET": str(other)})
    assert p.returncode == 0 and "a.example.test" in p.stdout, p
    # Neither: the default path, which this test's daemon is not on.
    p = acmectl("list")
    assert "/run/acme-sidecar/control.sock" in p.stderr or \
        p.returncode == 0, p


def test_renew_and_reload(setup):
    sidecar, state, sock = setup
    chain = state / "certs" / "a.example.test" / "fullchain.pem"
    serial = cert_serial(split_pem(chain.read_text())[0])
    mark = sidecar.mark()
    p = acmectl("-s", str(sock), "renew", "a.example.test", "--no-wait")
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout.startswith("a.example.test: renewal started"), p
    sidecar.wait_log(r'certificate "a.example.test" issued', since=mark,
                     timeout=60)
    wait_idle(sock, "a.example.test")
    assert cert_serial(split_pem(chain.read_text())[0]) != serial

    p = acmectl("-s", str(sock), "reload")
    assert p.returncode == 0, p
    assert p.stdout == "reloaded: 2 certificates managed\n", p


def test_renew_waits(setup):
    """renew ID waits for the order, shows its states, prints the
    certificate it left; renew --all does so for every certificate, with
    counts."""
    _, state, sock = setup

    def serial(cid):
        chain = state / "certs" / cid / "fullchain.pem"
        return cert_serial(split_pem(chain.read_text())[0])

    old = serial("a.example.test")
    p = acmectl("-s", str(sock), "renew", "a.example.test", timeout=90)
    assert p.returncode == 0, p
    progress = p.stderr.splitlines()
    assert progress[0] == "a.example.test: new", p.stderr
    assert progress[-1] == "a.example.test: idle", p.stderr
    assert all(re.fullmatch(r"a\.example\.test: [a-z-]+", line)
               for line in progress), p.stderr
    # The file changed before acmectl said it was done.  (not_before
    # may not: Pebble can issue twice within a second.)
    assert serial("a.example.test") != old
    after = curl(sock, "/v1/certificates/a.example.test")
    assert "state         idle\n" in p.stdout, p.stdout
    assert "not after     %s\n" % after["not_after"] in p.stdout, p.stdout

    p = acmectl("-s", str(sock), "--json", "renew", "b.example.test_rsa2048",
                timeout=90)
    assert p.returncode == 0, p
    got = json.loads(p.stdout)
    assert got["id"] == "b.example.test_rsa2048" and got["state"] == "idle"
    assert got == curl(sock, "/v1/certificates/b.example.test_rsa2048")

    olds = {cid: serial(cid) for cid in IDS}
    p = acmectl("-s", str(sock), "--json", "renew", "--all", timeout=120)
    assert p.returncode == 0, p
    assert p.stderr.splitlines()[-1] == "renewing: 2 of 2 done", p.stderr
    assert "renewing: 0 of 2 done" in p.stderr, p.stderr
    got = json.loads(p.stdout)["certificates"]
    assert sorted(c["id"] for c in got) == IDS, got
    for c in got:
        assert c["state"] == "idle" and c["valid"], c
        assert serial(c["id"]) != olds[c["id"]], c

    p = acmectl("-s", str(sock), "renew", "--all", "--no-wait")
    assert p.returncode == 0 and p.stderr == "", p
    head, rows = table(p.stdout)
    assert head[0] == "ID" and [r[0] for r in rows] == IDS, p.stdout
    assert all(r[1] != "idle" for r in rows), p.stdout
    for cid in IDS:
        wait_idle(sock, cid)


def test_add_and_remove(setup, pebble, tmp_path):
    _, state, sock = setup
    names = ["new.example.test", "www.new.example.test"]
    cid = cert_id(names, "rsa:2048")
    p = acmectl("-s", str(sock), "add", "pebble", *names, "--key",
                "rsa:2048", timeout=90)
    assert p.returncode == 0, p
    progress = p.stderr.splitlines()
    assert progress[0] == cid + ": new", p.stderr
    assert progress[-1] == cid + ": idle", p.stderr
    assert len(progress) >= 3, p.stderr     # at least one order step
    assert "id            %s\n" % cid in p.stdout, p.stdout
    assert "identifiers   %s\n" % " ".join(names) in p.stdout, p.stdout
    assert "valid         yes\n" in p.stdout, p.stdout
    # What the daemon stored is what acmectl said.
    check_certificate(state, names, "rsa:2048", pebble, tmp_path)
    show = json.loads(acmectl("-s", str(sock), "--json", "show",
                              cid).stdout)
    assert show["valid"] is True and show["not_after"], show
    assert "not after     %s\n" % show["not_after"] in p.stdout
    assert cid in acmectl("-s", str(sock), "list").stdout

    # Twice: 409; a refused identifier: 422; an unknown issuer.
    p = acmectl("-s", str(sock), "add", "pebble", *names, "--key",
                "rsa:2048")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.startswith("acmectl: ") and \
        p.stderr.endswith("(HTTP 409)\n"), p
    p = acmectl("-s", str(sock), "add", "pebble", "*.example.test")
    assert p.returncode == 1 and p.stderr.endswith("(HTTP 422)\n"), p
    p = acmectl("-s", str(sock), "add", "nope", "x.example.test")
    assert p.returncode == 1 and p.stdout == "", p

    # --no-wait --json: the 201's certificate, at once.
    p = acmectl("-s", str(sock), "--json", "add", "--no-wait", "pebble",
                "other.example.test")
    assert p.returncode == 0 and p.stderr == "", p
    j = json.loads(p.stdout)
    assert j["id"] == "other.example.test", j
    assert j["identifiers"] == ["other.example.test"], j
    wait_idle(sock, "other.example.test")

    p = acmectl("-s", str(sock), "remove", cid)
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout == "deleted %s\n" % cid, p
    p = acmectl("-s", str(sock), "--json", "remove", "other.example.test")
    assert p.returncode == 0 and p.stderr == "", p
    assert json.loads(p.stdout) == {"deleted": "other.example.test"}, p
    ids = [c["id"] for c in curl(sock, "/v1/certificates")["certificates"]]
    assert sorted(ids) == IDS, ids

    p = acmectl("-s", str(sock), "remove", cid)
    assert p.returncode == 1 and p.stdout == "", p
    assert cid in p.stderr and p.stderr.endswith("(HTTP 404)\n"), p
    # A certificate of the configuration files is removed there.
    p = acmectl("-s", str(sock), "remove", "a.example.test")
    assert p.returncode == 1 and p.stderr.endswith("(HTTP 409)\n"), p


def test_add_failed_order(setup):
    """An order that fails: its error on stderr, exit 1.  Pebble checks
    an IP identifier at that address, where nothing listens."""
    _, _, sock = setup
    p = acmectl("-s", str(sock), "add", "pebble", "127.0.0.2", timeout=90)
    assert p.returncode == 1 and p.stdout == "", p
    last = p.stderr.splitlines()[-1]
    assert last.startswith("acmectl: 127.0.0.2: the order failed: "), p
    show = curl(sock, "/v1/certificates/127.0.0.2")
    assert show["state"] == "backoff", show
    assert show["last_error"]["message"] in last, (show, last)
    assert "127.0.0.2: backoff" in p.stderr.splitlines(), p.stderr


def test_revoke(setup, pebble):
    _, state, sock = setup
    chain = state / "certs" / "a.example.test" / "fullchain.pem"
    serial = cert_serial(split_pem(chain.read_text())[0]).split("=")[1]
    # Beyond acmectl's own 60 s, so that its error is the one seen.
    p = acmectl("-s", str(sock), "revoke", "a.example.test", "--reason",
                "keyCompromise", timeout=90)
    assert p.returncode == 0 and p.stderr == "", p
    assert re.fullmatch(r"a\.example\.test: revoked \(reason keyCompromise"
                        r"\); a replacement is being ordered \(state "
                        r"[a-z-]+\)\n", p.stdout), p.stdout
    # Pebble's own word on the old certificate.
    st = json.loads(pebble.get("%s/cert-status-by-serial/%s" %
                               (pebble.mgmt_url, serial.lower())))
    assert (st["Status"], st["Reason"]) == ("Revoked", 1), st
    wait_idle(sock, "a.example.test")
    assert cert_serial(split_pem(chain.read_text())[0]).split("=")[1] != \
        serial

    chain = state / "certs" / "b.example.test_rsa2048" / "fullchain.pem"
    serial = cert_serial(split_pem(chain.read_text())[0]).split("=")[1]
    p = acmectl("-s", str(sock), "--json", "revoke", "--reason", "4",
                "b.example.test_rsa2048", timeout=90)
    assert p.returncode == 0 and p.stderr == "", p
    j = json.loads(p.stdout)
    assert j["revoked"] == "b.example.test_rsa2048", j
    assert j["reason"] in ("superseded", 4), j
    assert j["certificate"]["id"] == "b.example.test_rsa2048", j
    st = json.loads(pebble.get("%s/cert-status-by-serial/%s" %
                               (pebble.mgmt_url, serial.lower())))
    assert (st["Status"], st["Reason"]) == ("Revoked", 4), st

    p = acmectl("-s", str(sock), "revoke", "nope.example.test")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.endswith("(HTTP 404)\n") and "nope.example.test" in \
        p.stderr, p
    p = acmectl("-s", str(sock), "revoke", "a.example.test", "--reason",
                "bogus")
    assert p.returncode == 1 and p.stderr.endswith("(HTTP 400)\n"), p
    wait_idle(sock, "b.example.test_rsa2048")


class LineReader:
    """The stdout lines of a running acmectl, read with a timeout."""

    def __init__(self, args):
        self.proc = subprocess.Popen([str(ACMECTL), *args],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, rx, timeout=60):
        """The first line matching rx; the lines before it are kept."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
                left = 0
            if line is None or left <= 0:
                self.stop()
                pytest.fail("no line /%s/ from acmectl events; got %r, "
                            "stderr %r" % (rx, seen, self.proc.stderr.read()
                                           if self.proc.stderr else ""))
            seen.append(line)
            if re.fullmatch(rx, line.rstrip("\n")):
                return line, seen

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def test_events(setup):
    sidecar, _, sock = setup
    mark = sidecar.mark()
    ev = LineReader(["-s", str(sock), "events"])
    try:
        # Only events after the stream started are sent: wait for it.
        sidecar.wait_log(r"control: GET /v1/events", since=mark)
        p = acmectl("-s", str(sock), "renew", "a.example.test", "--no-wait")
        assert p.returncode == 0, p
        line, seen = ev.wait_for(r"\S+Z renewed a\.example\.test "
                                 r"\(not after \S+Z\)")
        order = r"\S+Z order a\.example\.test \(issuer pebble, renewal yes\)"
        assert any(re.fullmatch(order, s.rstrip("\n")) for s in seen), seen
        cert = wait_idle(sock, "a.example.test")
        assert "(not after %s)" % cert["not_after"] in line, line
        assert ev.proc.poll() is None      # the stream goes on
    finally:
        ev.stop()

    mark = sidecar.mark()
    ev = LineReader(["-s", str(sock), "--json", "events"])
    try:
        sidecar.wait_log(r"control: GET /v1/events", since=mark)
        p = acmectl("-s", str(sock), "renew", "b.example.test_rsa2048",
                    "--no-wait")
        assert p.returncode == 0, p
        line, seen = ev.wait_for(r'\{.*"type": ?"renewed".*\}')
        for s in seen:
            assert isinstance(json.loads(s), dict), s
        j = json.loads(line)
        assert j["certificate"] == "b.example.test_rsa2048", j
        assert j["issuer"] == "pebble", j
        cert = wait_idle(sock, "b.example.test_rsa2048")
        assert j["not_after"] == cert["not_after"], (j, cert)
    finally:
        ev.stop()

    # The stream says how often a quiet daemon sends its empty line.
    p = subprocess.run(["curl", "-sS", "-N", "-m", "1", "-D", "-",
                        "--unix-socket", str(sock),
                        "http://localhost/v1/events"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    assert re.search(r"(?mi)^Acme-Sidecar-Keepalive: 30$", p.stdout), p


def test_metrics(setup):
    _, _, sock = setup
    p = acmectl("-s", str(sock), "metrics")
    assert p.returncode == 0 and p.stderr == "", p
    text = p.stdout
    assert "# TYPE acme_sidecar_certificate_ready gauge\n" in text, text
    for cid in IDS:
        rx = (r'(?m)^acme_sidecar_certificate_ready\{[^}]*id="%s"[^}]*\} 1$'
              % re.escape(cid))
        assert re.search(rx, text), (cid, text)
    assert not text.lstrip().startswith("{"), text     # not JSON
    p = acmectl("-s", str(sock), "--json", "metrics")
    assert p.returncode == 2 and p.stdout == "", p


# ------------------------------------------------ responses the daemon never sends

class FakeServer:
    """Answers every connection on a Unix socket with one canned reply
    (or reply(head) if it is a function), and keeps each request (head
    and body) in requests."""

    def __init__(self, path, reply):
        self.reply = reply
        self.requests = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(4)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?mi)^content-length: *(\d+)", head)
                while m and len(body) < int(m.group(1)):
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    body += chunk
                self.requests.append((head.decode(), body))
                c.sendall(self.reply(head.decode()) if callable(self.reply)
                          else self.reply)

    def close(self):
        self.srv.close()


@pytest.mark.parametrize("reply,err", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}\n",
     "transfer closed with 47 bytes remaining to read"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n",
     "transfer closed with outstanding read data remaining"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     "transfer closed with 1 bytes remaining"),
    (b"HTTP/1.1 20 OK\r\n\r\n{}", "Unsupported response code in HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "transfer closed with 2 bytes remaining"),
    (b"", "Empty reply from server"),
    (b"HTTP/1.1 200 OK\r\n\r\n[1]", "the response is not a JSON object"),
    (b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n<html></html>",
     "acmectl: Request Header Fields Too Large (HTTP 431)"),
])
def test_bad_responses(tmp_path, reply, err):
    path = tmp_path / "fake.sock"
    srv = FakeServer(path, reply)
    try:
        p = acmectl("-s", str(path), "list")
    finally:
        srv.close()
    assert p.returncode == 1 and p.stdout == "", p
    assert err in p.stderr, p


def test_good_response_without_length(tmp_path):
    """A body ended by EOF alone is read whole."""
    path = tmp_path / "fake.sock"
    body = json.dumps({"certificates": [{"id": "x.example.test",
                                         "state": "backoff",
                                         "failures": 3}]})
    srv = FakeServer(path, b"HTTP/1.1 200 OK\r\n\r\n" + body.encode())
    try:
        p = acmectl("-s", str(path), "list")
    finally:
        srv.close()
    assert p.returncode == 0, p
    assert table(p.stdout)[1] == [["x.example.test", "backoff", "-", "-",
                                   "-", "3"]], p.stdout


def fake_run(tmp_path, reply, *args, timeout=30):
    """acmectl args against one canned reply; (result, requests)."""
    path = tmp_path / "fake.sock"
    srv = FakeServer(path, reply)
    try:
        p = acmectl("-s", str(path), *args, timeout=timeout)
    finally:
        srv.close()
        path.unlink()
    return p, srv.requests


def answer(status, obj):
    body = (json.dumps(obj) + "\n").encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n" \
        b"Content-Length: %d\r\n\r\n" % (status, len(body)) + body


def cert(cid, state, **kw):
    c = {"id": cid, "identifiers": [cid], "issuer": "pebble",
         "key_type": "ecdsa:256", "state": state, "valid": False,
         "not_before": None, "not_after": None, "next_renewal": None,
         "next_retry": None, "failures": 0, "last_error": None}
    c.update(kw)
    return c


def test_requests_sent(tmp_path):
    """The bodies of add and revoke, as the contract has them."""
    reply = answer(201, cert("x.example.test", "new"))
    p, reqs = fake_run(tmp_path, reply, "add", "--no-wait", "--key",
                       "rsa:3072", "pebble", "x.example.test", ".example.org")
    assert p.returncode == 0, p
    head, body = reqs[0]
    assert head.startswith("POST /v1/certificates HTTP/1.1\r\n"), head
    assert "\r\nContent-Type: application/json" in head, head
    assert json.loads(body) == {"issuer": "pebble", "identifiers": [
        "x.example.test", ".example.org"], "key": "rsa:3072"}, body
    p, reqs = fake_run(tmp_path, reply, "add", "--no-wait", "pebble",
                       "x.example.test")
    assert json.loads(reqs[0][1]) == {"issuer": "pebble", "identifiers":
                                      ["x.example.test"]}, reqs

    reply = answer(200, {"revoked": "x.example.test", "reason": "x",
                         "certificate": cert("x.example.test", "new")})
    for reason, want in [("keyCompromise", "keyCompromise"), ("4", 4),
                         ("0", 0), ("superseded", "superseded")]:
        p, reqs = fake_run(tmp_path, reply, "revoke", "x y", "--reason",
                           reason)
        assert p.returncode == 0, p
        head, body = reqs[0]
        assert head.startswith("POST /v1/certificates/x%20y/revoke "), head
        assert json.loads(body) == {"reason": want}, body
    p, reqs = fake_run(tmp_path, reply, "revoke", "x.example.test")
    assert reqs[0][1] == b"" and \
        "\r\nContent-Length: 0\r\n" in reqs[0][0] + "\r\n"

    p, reqs = fake_run(tmp_path, answer(200, {"deleted": "x"}), "remove",
                       "x.example.test")
    assert p.returncode == 0 and p.stdout == "deleted x\n", p
    assert reqs[0][0].startswith("DELETE /v1/certificates/x.example.test "
                                 "HTTP/1.1\r\n"), reqs


# Alone: counts the polls made within a wall-clock second.
@pytest.mark.serial
def test_wait_timeout(tmp_path):
    """An order that never ends: acmectl stops waiting, exit 1."""
    reply = answer(202, cert("x.example.test", "authz"))
    t0 = time.monotonic()
    p, reqs = fake_run(tmp_path, reply, "renew", "--timeout", "1",
                       "x.example.test")
    took = time.monotonic() - t0
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr == "x.example.test: authz\nacmectl: x.example.test: " \
        "still authz after 1 seconds; the order goes on, see acmectl " \
        "show x.example.test\n", p.stderr
    assert 1 <= took < 5, took
    # Polled, about every 250 ms.
    gets = [h for h, _ in reqs if h.startswith("GET /v1/certificates/x.")]
    assert 2 <= len(gets) <= 6, reqs


def test_wait_failed(tmp_path):
    """An order that failed: its last error, exit 1, nothing on stdout."""
    err = {"message": "newOrder: HTTP 400 urn:ietf:params:acme:error:"
           "rejectedIdentifier: no", "time": "2026-11-28T21:34:20Z"}
    reply = answer(201, cert("x.example.test", "backoff", failures=1,
                             last_error=err))
    p, _ = fake_run(tmp_path, reply, "add", "pebble", "x.example.test")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr == "x.example.test: backoff\nacmectl: x.example.test: " \
        "the order failed: %s\n" % err["message"], p.stderr


STATUS = {"version": "0.1.0", "uptime": 61, "issuers": [],
          "certificates": {"total": 1, "valid": 1,
                           "by_state": {"idle": 0, "lease": 1, "sync": 0}},
          "shared_zone": {"generation": 3, "full": False, "used": 10,
                          "image_size": 100, "certificates": 1, "tokens": 0,
                          "failed_publishes": 0}}
CLUSTER = {"enabled": True, "connected": False, "state": "connecting",
           "node": "n2", "redis": "redis://10.0.0.7:6379/2",
           "prefix": "fleet", "members": ["n3", "n1", "n2"], "leases": 4,
           "secret": "mismatch", "connects": 3, "drops": 2,
           "last_error": "cannot connect: Connection refused\r\nx",
           "last_error_at": "2026-11-28T21:34:20Z"}


@pytest.mark.parametrize("cluster,want", [
    # A daemon from before replicas: nothing more.
    (None, ""),
    ({"enabled": False}, "cluster       off\n"),
    (CLUSTER,
     "cluster       node n2, not connected (connecting)\n"
     "  redis       redis://10.0.0.7:6379/2, prefix fleet\n"
     "  members     n1 n2 n3\n"
     "  secret      mismatch; not the fleet's secret_file, nothing is "
     "written to Redis\n"
     "  leases      4 held by this node\n"
     "  link        3 connects, 2 drops\n"
     "  last error  2026-11-28T21:34:20Z: cannot connect: Connection "
     "refused??x\n"),
    (dict(CLUSTER, connected=True, state="up", members=[], secret="ok",
          last_error=None, last_error_at=None),
     "cluster       node n2, connected (up)\n"
     "  redis       redis://10.0.0.7:6379/2, prefix fleet\n"
     "  members     (none)\n"
     "  secret      ok\n"
     "  leases      4 held by this node\n"
     "  link        3 connects, 2 drops\n"
     "  last error  -\n"),
], ids=["absent", "off", "connecting", "up"])
def test_status_cluster(tmp_path, cluster, want):
    """The cluster section of status, last, as the API gives it (a real
    one needs a Redis: test_cluster.py); the new order states are
    counted like the others."""
    st = dict(STATUS)
    if cluster is not None:
        st["cluster"] = cluster
    p, _ = fake_run(tmp_path, answer(200, st), "status")
    assert p.returncode == 0 and p.stderr == "", p
    assert "\n  lease       1\n" in p.stdout, p.stdout
    assert p.stdout.endswith(" failed publishes\n" + want), p.stdout
    p, _ = fake_run(tmp_path, answer(200, st), "--json", "status")
    assert p.returncode == 0 and json.loads(p.stdout) == st, p


class FakeDaemon:
    """Just enough of the API for renew --all: x renews after a few
    polls, y fails, z has an order under way and is left alone."""

    def __init__(self, x_after=3):
        self.x_after = x_after
        self.polls = {"x": 0, "y": 0}
        self.certs = {n: cert("%s.example.test" % n, s, valid=True,
                              not_before="2026-11-01T00:00:00Z")
                      for n, s in [("x", "idle"), ("y", "backoff"),
                                   ("z", "authz")]}

    def __call__(self, head):
        method, path = head.split()[:2]
        if path == "/v1/certificates":
            return answer(200, {"certificates": list(self.certs.values())})
        n = path.split("/")[3][0]
        c = dict(self.certs[n])
        if method == "POST":
            c["state"] = "new"
            return answer(202, c)
        self.polls[n] += 1
        if n == "y":
            c.update(state="backoff", failures=1, last_error={
                "message": "boom", "time": "2026-11-28T21:34:20Z"})
        elif self.polls[n] >= self.x_after:
            c.update(state="idle", not_before="2026-11-28T00:00:00Z")
        else:
            c["state"] = "order-poll"
        return answer(200, c)


def test_renew_all_counts(tmp_path):
    p, reqs = fake_run(tmp_path, FakeDaemon(), "renew", "--all")
    assert p.returncode == 1, p
    assert p.stderr == (
        "z.example.test: skipped, an order is under way (authz)\n"
        "renewing: 0 of 2 done\n"
        "renewing: 1 of 2 done\n"
        "renewing: 2 of 2 done\n"
        "acmectl: y.example.test: the order failed: boom\n"
        "acmectl: 1 of 2 renewals failed\n"), p.stderr
    _, rows = table(p.stdout)
    assert [r[:2] for r in rows] == [["x.example.test", "idle"],
                                     ["y.example.test", "backoff"]], p
    posts = [h.split()[1] for h, _ in reqs if h.startswith("POST")]
    assert posts == ["/v1/certificates/x.example.test/renew",
                     "/v1/certificates/y.example.test/renew"], posts

    # Never done: the timeout, and the orders are left to the daemon.
    p, _ = fake_run(tmp_path, FakeDaemon(x_after=10 ** 6), "--json",
                    "renew", "--all", "--timeout", "1")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.endswith("renewing: 1 of 2 done\nacmectl: 1 of 2 "
                             "renewals still under way after 1 seconds; "
                             "they go on, see acmectl list\n"), p.stderr

    # --no-wait: the 202 answers, at once.
    p, reqs = fake_run(tmp_path, FakeDaemon(), "--json", "renew", "--all",
                       "--no-wait")
    assert p.returncode == 0, p
    j = json.loads(p.stdout)
    assert [(c["id"], c["state"]) for c in j["certificates"]] == [
        ("x.example.test", "new"), ("y.example.test", "new")], j
    assert not [h for h, _ in reqs if h.startswith("GET /v1/certificates/")]


def test_metrics_text(tmp_path):
    text = b"# TYPE acme_sidecar_start_time_seconds gauge\n" \
        b"acme_sidecar_start_time_seconds 1.8e9\n"
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4" \
        b"\r\nContent-Length: %d\r\n\r\n" % len(text) + text
    p, reqs = fake_run(tmp_path, reply, "metrics")
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout == text.decode(), p
    assert reqs[0][0].startswith("GET /metrics HTTP/1.1\r\n"), reqs
    p, _ = fake_run(tmp_path, answer(404, {"error": {
        "status": 404, "message": "no route /metrics"}}), "metrics")
    assert p.returncode == 1 and p.stderr == \
        "acmectl: no route /metrics (HTTP 404)\n", p


# ------------------------------------------------ the event stream, chunked

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n" \
    b"Transfer-Encoding: chunked\r\n\r\n"
EV_RENEWED = {"time": "2026-11-28T21:40:05Z", "type": "renewed",
              "certificate": "a.example.test", "issuer": "pebble",
              "not_after": "2027-02-26T21:40:04Z"}
EV_FAILED = {"time": "2026-11-28T21:40:06Z", "type": "failed",
             "certificate": "b.example.test", "issuer": "pebble",
             "error": "newOrder: HTTP 400\nbad\x1b[31m", "failures": 2,
             "next_retry": "2026-11-28T21:45:06Z"}
EV_NEW = {"time": "2026-11-28T21:40:07Z", "type": "frobnicated",
          "certificate": "c.example.test", "count": 3, "ok": True,
          "extra": {"a": [1, 2]}}


def chunk(data, ext=b""):
    return b"%x%s\r\n" % (len(data), ext) + data + b"\r\n"


def stream(*events):
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_events_good_stream(tmp_path):
    body = stream(EV_RENEWED, EV_FAILED, EV_NEW)
    # A line split across chunks, an extension, an empty chunk-less
    # line, a trailer: all legal.
    cut = 30
    reply = HEAD + chunk(body[:cut], b";name=value") + \
        chunk(body[cut:] + b"\n") + b"0\r\nX-Trailer: 1\r\n\r\n"
    p, reqs = fake_run(tmp_path, reply, "events")
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout.splitlines() == [
        "2026-11-28T21:40:05Z renewed a.example.test "
        "(not after 2027-02-26T21:40:04Z)",
        "2026-11-28T21:40:06Z failed b.example.test (failures 2, next retry "
        "2026-11-28T21:45:06Z): newOrder: HTTP 400?bad?[31m",
        '2026-11-28T21:40:07Z frobnicated certificate=c.example.test '
        'count=3 ok=yes extra={"a":[1,2]}',
    ], p.stdout
    assert reqs[0][0].startswith("GET /v1/events HTTP/1.1\r\n"), reqs

    p, _ = fake_run(tmp_path, reply, "--json", "events")
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout == body.decode(), p.stdout

    # Nothing happened before the daemon ended the stream.
    p, _ = fake_run(tmp_path, HEAD + b"0\r\n\r\n", "events")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p


class QuietStream:
    """An event stream on a Unix socket that promises an empty line
    every keepalive seconds: it sends one event, then an empty line every
    `every` seconds (None: never) for `last` seconds, then ends the
    stream, holding the connection open until closed if it is silent."""

    def __init__(self, path, keepalive, every, last):
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.head = HEAD.replace(
            b"\r\n\r\n", b"\r\nAcme-Sidecar-Keepalive: %d\r\n\r\n" %
            keepalive)
        self.every, self.last = every, last
        self.done = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        c, _ = self.srv.accept()
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(4096)
            c.sendall(self.head + chunk(stream(EV_RENEWED)))
            if self.every is None:
                self.done.wait(self.last)
                return
            end = time.monotonic() + self.last
            while time.monotonic() < end:
                time.sleep(self.every)
                c.sendall(chunk(b"\n"))
            c.sendall(b"0\r\n\r\n")

    def close(self):
        self.done.set()
        self.srv.close()
        self.path.unlink()


def quiet_run(tmp_path, keepalive, every, last):
    path = tmp_path / "quiet.sock"
    srv = QuietStream(path, keepalive, every, last)
    t0 = time.monotonic()
    try:
        p = acmectl("-s", str(path), "events", timeout=60)
    finally:
        srv.close()
    return p, time.monotonic() - t0


def test_events_stream_gone_quiet(tmp_path):
    """A daemon that stops sending even its keepalives (stopped, hung)
    ends acmectl events after three of them are missed, with an error;
    one that keeps sending them is followed until it ends the stream."""
    p, took = quiet_run(tmp_path, keepalive=1, every=None, last=30)
    assert p.returncode == 1, p
    assert p.stdout.startswith("2026-11-28T21:40:05Z renewed "), p
    assert re.fullmatch(r"acmectl: \S+: GET /v1/events: nothing from the "
                        r"daemon for [3-9] s, when it sends an empty line "
                        r"after 1 s of quiet\n", p.stderr), p
    assert took < 20, took

    p, took = quiet_run(tmp_path, keepalive=1, every=0.5, last=5)
    assert p.returncode == 0 and p.stderr == "", p
    assert took >= 5, took


@pytest.mark.parametrize("body,err", [
    (b"zz\r\n{}\n\r\n0\r\n\r\n", "Illegal or missing hexadecimal sequence in chunked-encoding"),
    (b"-5\r\n", "Illegal or missing hexadecimal sequence in chunked-encoding"),
    (b"\r\n", "Illegal or missing hexadecimal sequence in chunked-encoding"),
    (b"0x5\r\n", "transfer closed with outstanding read data remaining"),
    (b" 5\r\n", "Illegal or missing hexadecimal sequence in chunked-encoding"),
    (b"5 \r\n", "transfer closed with outstanding read data remaining"),
    (b"fffffffffffffffff\r\n", "Too long hexadecimal number in chunked-encoding"),
    (b"100001\r\n", "transfer closed with outstanding read data remaining"),      # over 1 MiB
    (b"5\n{}\n\r\n0\r\n\r\n", "event 2 is not a JSON object"),
    (b"1" * 2000, "Too long hexadecimal number in chunked-encoding"),
    (b"2\r\n{}\n\r\n0\r\n\r\n", "Illegal or missing hexadecimal sequence in chunked-encoding"),
    (b"2\r\n\n\nXX", "Malformed encoding found in chunked-encoding"),
    (b"40\r\n" + stream(EV_RENEWED)[:10], "transfer closed with outstanding read data remaining"),
    (chunk(stream(EV_RENEWED)),
     "transfer closed with outstanding read data remaining"),
    (b"", "transfer closed with outstanding read data remaining"),
    (chunk(stream(EV_RENEWED)[:-1]) + b"0\r\n\r\n",
     "the stream ended inside an event"),
    (b"0\r\nbad trailer\r\n\r\n", "Failed reading the chunked-encoded stream"),
    (b"0\r\nX: 1\r\n", "transfer closed with outstanding read data remaining"),
    (chunk(b"not json\n") + b"0\r\n\r\n",
     "event 2 is not a JSON object with a time and a type"),
    (chunk(b'{"type": "x"}\n') + b"0\r\n\r\n", "event 2 is not a JSON"),
    (chunk(b"[1]\n") + b"0\r\n\r\n", "event 2 is not a JSON"),
    (chunk(b'{"time": "t", "type": "x", "a\x00": 1}\n') + b"0\r\n\r\n",
     "a NUL byte in an event"),
    (chunk(b"{" + b" " * 70000 + b"}\n") + b"0\r\n\r\n",
     "an event over 65536 bytes"),
])
def test_events_bad_stream(tmp_path, body, err):
    # One good event first: it is printed before the error is found.
    p, _ = fake_run(tmp_path, HEAD + chunk(stream(EV_RENEWED)) + body,
                    "events")
    assert p.returncode == 1, p
    assert p.stdout.startswith("2026-11-28T21:40:05Z renewed "), p
    assert p.stderr.startswith("acmectl: "), p
    assert "GET /v1/events: " + err in p.stderr, p
    assert p.stderr.count("\n") == 1, p


@pytest.mark.parametrize("reply,err", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     "the event stream is not chunked"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", "transfer closed with outstanding read data remaining"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}\n",
     "the event stream is not chunked"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
     "transfer closed with outstanding read data remaining"),
    (b"", "Empty reply from server"),
    (answer(503, {"error": {"status": 503, "message": "too many event "
                            "streams"}}),
     "acmectl: too many event streams (HTTP 503)"),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 99\r\n\r\n{}",
     "transfer closed with 97 bytes remaining"),
])
def test_events_bad_head(tmp_path, reply, err):
    p, _ = fake_run(tmp_path, reply, "events")
    assert p.returncode == 1 and p.stdout == "", p
    assert err in p.stderr, p
