"""acmectl, the command-line client of the control API.

A real daemon and a real Pebble, as in test_control.py; what acmectl prints
is checked against what curl gets from the same socket.  A small fake
server on a Unix socket feeds it responses the daemon never sends, to
check that acmectl refuses them instead of printing nonsense.
"""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import ROOT, cert_id, cert_serial, split_pem, write_config

ACMECTL = ROOT / "build" / "acmectl"
CERTS = [(["a.example.test"], None), (["b.example.test", "c.example.test"],
                                       "rsa:2048")]
IDS = sorted(cert_id(n, k) for n, k in CERTS)


def acmectl(*args, env=None):
    e = dict(os.environ)
    e.pop("ACME_SIDECAR_SOCKET", None)
    e.update(env or {})
    return subprocess.run([str(ACMECTL), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30,
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

    for args, msg in [(["add"], "add is not implemented yet"),
                      (["metrics"], "metrics is not implemented yet"),
                      (["renew", "--all"], "renew --all is not implemented "
                       "yet")]:
        p = acmectl("-s", str(sock), *args)
        assert p.returncode == 2 and p.stderr == "acmectl: %s\n" % msg, p
    for args in [[], ["show"], ["list", "x"], ["frobnicate"], ["-x"]]:
        p = acmectl("-s", str(sock), *args)
        assert p.returncode == 2 and p.stdout == "", (args, p)


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
    p = acmectl("-s", str(sock), "renew", "a.example.test")
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout.startswith("a.example.test: renewal started"), p
    sidecar.wait_log(r'certificate "a.example.test" issued', since=mark,
                     timeout=60)
    wait_idle(sock, "a.example.test")
    assert cert_serial(split_pem(chain.read_text())[0]) != serial

    p = acmectl("-s", str(sock), "reload")
    assert p.returncode == 0, p
    assert p.stdout == "reloaded: 2 certificates managed\n", p


# ------------------------------------------------ responses the daemon never sends

class FakeServer:
    """Answers every connection on a Unix socket with one canned reply."""

    def __init__(self, path, reply):
        self.reply = reply
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
                c.sendall(self.reply)

    def close(self):
        self.srv.close()


@pytest.mark.parametrize("reply,err", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}\n",
     "3 bytes of body, not the 50 of its Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n",
     "an unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     "a bad Content-Length"),
    (b"HTTP/1.1 20 OK\r\n\r\n{}", "a malformed status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "without a complete"),
    (b"", "an empty response"),
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
