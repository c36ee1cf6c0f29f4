"""The control API on its Unix socket (proto/control-api.md).

A real daemon and a real Pebble; every call goes through curl
--unix-socket, as a user would type it.  Changes are refused to a caller
that is neither root nor the daemon's owner, and every refusal or error
is a JSON object with the right status that changes nothing.
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import cert_id, cert_serial, split_pem, write_config

CERTS = [(["a.example.test"], None), (["b.example.test", "c.example.test"],
                                       "rsa:2048")]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def api(sock, method, path, body=None, as_user=None, headers=False,
        expect=False):
    """(status, JSON body, raw headers) of one curl call.  expect: send
    "Expect: 100-continue" and the body only once the daemon says so."""
    cmd = list(as_user or []) + [
        "curl", "-sS", "--max-time", "10", "--unix-socket", str(sock),
        "-X", method, "-D", "-", "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary",
                "@-"]
    if expect:
        cmd += ["-H", "Expect: 100-continue", "--expect100-timeout", "10"]
    # Bytes: text mode would turn the header's CRLF into LF.
    p = subprocess.run(cmd, input=body.encode() if body is not None else
                       None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert p.returncode == 0, "curl %s %s: %s" % (method, path, p.stderr)
    head, _, text = p.stdout.decode().partition("\r\n\r\n")
    status = int(head.split()[1])
    assert re.search(r"(?mi)^content-type: application/json", head), head
    return status, json.loads(text), head


def check_error(resp, status):
    got, j, _ = resp
    assert got == status, j
    assert set(j) == {"error"}, j
    assert j["error"]["status"] == status, j
    assert isinstance(j["error"]["message"], str) and j["error"]["message"]


@pytest.fixture
def setup(tmp_path, pebble, http_port, sidecar_factory):
    conf = tmp_path / "acme-sidecar.conf"
    state = tmp_path / "state"
    write_config(conf, pebble, state, http_port, CERTS)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, [cert_id(n, k) for n, k in CERTS])
    sock = tmp_path / "control.sock"
    sidecar.wait_log(r"control: listening on")
    return sidecar, state, sock, conf


def wait_idle(sidecar, sock, cid, timeout=60):
    """The certificate once it is valid and no order is under way."""
    deadline = time.monotonic() + timeout
    while True:
        status, j, _ = api(sock, "GET", "/v1/certificates/" + cid)
        assert status == 200, j
        if j["state"] == "idle" and j["valid"]:
            return j
        if time.monotonic() > deadline:
            pytest.fail("%s not idle after %ds: %s%s" % (
                cid, timeout, j, sidecar.diagnostics()), pytrace=False)
        time.sleep(0.2)


def test_reads(setup):
    sidecar, state, sock, _ = setup
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o660
    ids = sorted(cert_id(n, k) for n, k in CERTS)
    for cid in ids:
        wait_idle(sidecar, sock, cid)

    status, j, _ = api(sock, "GET", "/v1/status")
    assert status == 200, j
    assert j["version"] == "0.1.0"
    assert isinstance(j["uptime"], int) and j["uptime"] >= 0
    assert [i["name"] for i in j["issuers"]] == ["pebble"]
    assert j["issuers"][0]["state"] == "ready"
    assert j["issuers"][0]["account_url"].startswith("https://127.0.0.1:")
    assert j["certificates"]["total"] == 2
    assert j["certificates"]["valid"] == 2
    assert j["certificates"]["by_state"]["idle"] == 2
    assert sum(j["certificates"]["by_state"].values()) == 2

    status, j, _ = api(sock, "GET", "/v1/issuers")
    assert status == 200, j
    (issuer,) = j["issuers"]
    assert issuer["name"] == "pebble" and issuer["state"] == "ready"
    assert issuer["uri"].endswith("/dir")
    assert issuer["account_url"] == \
        (state / "account.url").read_text().strip()

    status, j, _ = api(sock, "GET", "/v1/certificates")
    assert status == 200, j
    certs = {c["id"]: c for c in j["certificates"]}
    assert sorted(certs) == ids
    b = certs[cert_id(["b.example.test"], "rsa:2048")]
    assert b["identifiers"] == ["b.example.test", "c.example.test"]
    assert b["issuer"] == "pebble" and b["key_type"] == "rsa:2048"
    assert certs["a.example.test"]["key_type"] == "ecdsa:256"
    for c in certs.values():
        assert c["state"] == "idle" and c["valid"] is True
        assert c["failures"] == 0 and c["last_error"] is None
        assert c["next_retry"] is None
        assert c["not_before"] < c["next_renewal"] < c["not_after"]
        # The dates are the stored certificate's.
        pem = (state / "certs" / c["id"] / "fullchain.pem").read_text()
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-enddate", "-dateopt",
             "iso_8601"], input=split_pem(pem)[0], text=True,
            stdout=subprocess.PIPE, check=True).stdout
        assert out.strip() == "notAfter=" + \
            c["not_after"].replace("T", " "), (out, c)

    status, one, _ = api(sock, "GET", "/v1/certificates/a.example.test")
    assert status == 200
    assert one == certs["a.example.test"]


def test_errors_change_nothing(setup):
    sidecar, state, sock, _ = setup
    check_error(api(sock, "GET", "/v1/certificates/nope.example.test"), 404)
    check_error(api(sock, "POST", "/v1/certificates/nope.example.test/renew"),
                404)
    check_error(api(sock, "GET", "/v1/nothing"), 404)
    check_error(api(sock, "GET", "/v1/certificates/a.example.test/x"), 404)

    resp = api(sock, "DELETE", "/v1/status")
    check_error(resp, 405)
    assert re.search(r"(?mi)^allow: GET\r?$", resp[2]), resp[2]
    resp = api(sock, "GET", "/v1/certificates/a.example.test/renew")
    check_error(resp, 405)
    assert re.search(r"(?mi)^allow: POST\r?$", resp[2]), resp[2]

    mark = sidecar.mark()
    path = "/v1/certificates/a.example.test/renew"
    check_error(api(sock, "POST", path, body="{not json"), 400)
    check_error(api(sock, "POST", path, body='["a"]'), 400)
    check_error(api(sock, "POST", path, body='{"force": true}'), 400)
    check_error(api(sock, "POST", "/v1/reload", body='{"x": 1}'), 400)
    # Refused on its Content-Length, before the body is read, and the
    # connection closed: a client still sending its body then gets EPIPE
    # before it reads the answer (curl: "Send failure: Broken pipe").
    # With Expect: 100-continue curl waits for the verdict first.
    check_error(api(sock, "POST", "/v1/reload", body="x" * 70000,
                    expect=True), 413)
    log = sidecar.log(since=mark)
    assert "renewal asked" not in log and "reloading" not in log, log
    status, j, _ = api(sock, "GET", "/v1/certificates/a.example.test")
    assert j["state"] == "idle" and j["failures"] == 0, j


def test_renew(setup):
    sidecar, state, sock, _ = setup
    before = wait_idle(sidecar, sock, "a.example.test")
    chain = state / "certs" / "a.example.test" / "fullchain.pem"
    serial = cert_serial(split_pem(chain.read_text())[0])

    mark = sidecar.mark()
    status, j, _ = api(sock, "POST", "/v1/certificates/a.example.test/renew",
                       body="{}")
    assert status == 202, j
    assert j["id"] == "a.example.test" and j["state"] != "idle", j
    sidecar.wait_log(r'certificate "a.example.test": renewal asked',
                     since=mark)
    sidecar.wait_log(r'certificate "a.example.test" issued', since=mark,
                     timeout=60)
    after = wait_idle(sidecar, sock, "a.example.test")
    assert cert_serial(split_pem(chain.read_text())[0]) != serial
    assert after["not_before"] >= before["not_before"]
    assert after["not_after"] >= before["not_after"]
    # The other certificate was left alone.
    status, b, _ = api(sock, "GET", "/v1/certificates/" +
                       cert_id(["b.example.test"], "rsa:2048"))
    assert status == 200 and b["state"] == "idle"


def test_reload(setup, pebble, http_port):
    sidecar, state, sock, conf = setup
    new = (["d.example.test"], None)
    write_config(conf, pebble, state, http_port, CERTS + [new])
    status, j, _ = api(sock, "POST", "/v1/reload")
    assert status == 200, j
    assert j == {"reloaded": True, "certificates": 3}
    status, j, _ = api(sock, "GET", "/v1/certificates/d.example.test")
    assert status == 200 and j["identifiers"] == ["d.example.test"], j
    sidecar.wait_certs(state, ["d.example.test"])
    wait_idle(sidecar, sock, "d.example.test")

    # A configuration that does not load is refused, and kept out.
    good = conf.read_text()
    conf.write_text(good + "acme_certificate nosuchissuer e.example.test;\n")
    resp = api(sock, "POST", "/v1/reload")
    check_error(resp, 422)
    assert "nosuchissuer" in resp[1]["error"]["message"], resp
    status, j, _ = api(sock, "GET", "/v1/status")
    assert j["certificates"]["total"] == 3, j


def test_changes_refused_to_others(tmp_path, pebble, http_port,
                                   sidecar_factory):
    # A folder that uid 65534 can reach (pytest's own are 0700).
    sockdir = Path(tempfile.mkdtemp(prefix="acme-control-"))
    try:
        os.chmod(sockdir, 0o755)
        # A missing folder is made 0750 in the socket's group.
        sock = sockdir / "run" / "control.sock"
        conf = tmp_path / "acme-sidecar.conf"
        state = tmp_path / "state"
        write_config(conf, pebble, state, http_port, CERTS[:1])
        text = re.sub(r"(?m)^control_socket .*;$",
                      "control_socket %s group=nogroup;" % sock,
                      conf.read_text())
        conf.write_text(text)
        sidecar = sidecar_factory(conf, [pebble]).start()
        sidecar.wait_certs(state, ["a.example.test"])
        sidecar.wait_log(r"control: listening on")
        assert os.stat(sock).st_gid == 65534
        st = os.stat(sock.parent)
        assert st.st_gid == 65534 and st.st_mode & 0o777 == 0o750

        # Reads are open to the group ...
        status, j, _ = api(sock, "GET", "/v1/status", as_user=NOBODY)
        assert status == 200 and j["certificates"]["total"] == 1, j
        # ... changes are not.
        mark = sidecar.mark()
        check_error(api(sock, "POST", "/v1/certificates/a.example.test/renew",
                        as_user=NOBODY), 403)
        check_error(api(sock, "POST", "/v1/reload", as_user=NOBODY), 403)
        check_error(api(sock, "POST", "/v1/certificates", as_user=NOBODY,
                        body='{"issuer": "pebble", "identifiers": '
                        '["x.example.test"]}'), 403)
        check_error(api(sock, "DELETE", "/v1/certificates/a.example.test",
                        as_user=NOBODY), 403)
        check_error(api(sock, "POST", "/v1/certificates/a.example.test/"
                        "revoke", as_user=NOBODY, body="{}"), 403)
        log = sidecar.log(since=mark)
        for word in ("renewal asked", "reloading", "added", "deleted",
                     "revocation"):
            assert word not in log, (word, log)
        status, j, _ = api(sock, "GET", "/v1/status", as_user=NOBODY)
        assert j["certificates"]["total"] == 1, j
        # Events and metrics are reads.
        p = subprocess.run(NOBODY + [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
            "--unix-socket", str(sock), "http://localhost/metrics"],
            stdout=subprocess.PIPE, text=True, timeout=20)
        assert p.stdout == "200", p.stdout
        # Root still may.
        status, j, _ = api(sock, "POST", "/v1/reload")
        assert status == 200, j
        sidecar.stop()
        assert not sock.exists(), "the socket outlived the daemon"
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def status_client(sock, stop, counts, k, depth=32):
    """GET /v1/status on one keep-alive connection until stop, depth
    requests pipelined at a time, so that the daemon always has one more
    to answer; counts the 200s in counts[k]."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(sock))
    req = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
    buf = b""

    def more():
        chunk = s.recv(1 << 20)
        assert chunk, "the daemon closed the connection"
        return chunk

    try:
        while not stop.is_set():
            s.sendall(req * depth)
            for _ in range(depth):
                while b"\r\n\r\n" not in buf:
                    buf += more()
                head, _, buf = buf.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(re.search(rb"(?i)content-length: *(\d+)",
                                       head).group(1))
                while len(buf) < length:
                    buf += more()
                buf = buf[length:]
                counts[k] += 1
    finally:
        s.close()


def test_orders_progress_under_api_load(tmp_path, pebble, http_port,
                                        sidecar_factory):
    """The control API goes ahead of order work (loop.c), yet clients that
    keep it busy do not stop orders: the certificates are issued while
    eight connections keep /v1/status requests waiting, and every one of
    them is answered meanwhile."""
    certs = [(["load%d.example.test" % i], None) for i in range(6)]
    conf = tmp_path / "acme-sidecar.conf"
    state = tmp_path / "state"
    write_config(conf, pebble, state, http_port, certs)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sock = tmp_path / "control.sock"
    sidecar.wait_log(r"control: listening on")
    stop = threading.Event()
    counts = [0] * 8
    errors = []

    def client(k):
        try:
            status_client(sock, stop, counts, k)
        except Exception as e:  # reported below, not lost in a thread
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in
               range(len(counts))]
    for t in threads:
        t.start()
    try:
        sidecar.wait_certs(state, [cert_id(n, k) for n, k in certs],
                           timeout=90)
        before = list(counts)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert not errors, errors
    # Still answering at the end, on every connection.
    assert all(b < c for b, c in zip(before, counts)), (before, counts)
    status, j, _ = api(sock, "GET", "/v1/status")
    assert j["certificates"]["valid"] == len(certs), j
