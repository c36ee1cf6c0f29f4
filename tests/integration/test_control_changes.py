"""The control API's changes: add, delete, revoke, and what they show in
GET /v1/events and GET /metrics (proto/control-api.md).

A real daemon and a real Pebble, every call through curl --unix-socket.
"""

import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SIDECAR, cert_sans, cert_serial, split_pem
from test_control import CERTS, api, check_error, setup, wait_idle  # noqa

NEW = {"issuer": "pebble", "identifiers": ["new.example.test",
                                          "www.new.example.test"],
       "key": "rsa:2048"}
NEW_ID = "new.example.test_rsa2048"


def add(sock, body=NEW):
    return api(sock, "POST", "/v1/certificates", body=json.dumps(body))


def runtime_lines(state):
    path = state / "certificates.conf"
    if not path.exists():
        return []
    return [l for l in path.read_text().splitlines()
            if l and not l.startswith("#")]


def leaf(state, cid):
    return split_pem((state / "certs" / cid / "fullchain.pem").read_text())[0]


class Events:
    """GET /v1/events through curl -N; lines arrive on a queue."""

    def __init__(self, sock):
        self.proc = subprocess.Popen(
            ["curl", "-sSN", "--unix-socket", str(sock),
             "http://localhost/v1/events"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait(self, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("no such event in %ds; got %s" % (
                    timeout, self.seen), pytrace=False)
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, "the stream ended: %s" % self.seen
            if not line.strip():
                continue        # the keep-alive of a silent stream
            ev = json.loads(line)
            assert isinstance(ev["time"], str) and ev["type"], ev
            self.seen.append(ev)
            if pred(ev):
                return ev

    def close(self):
        self.proc.kill()
        self.proc.wait()


def metrics(sock):
    """GET /metrics as {'name{labels}': value}, once Prometheus' own parser
    has read the whole text."""
    p = subprocess.run(["curl", "-sS", "-D", "-", "--unix-socket", str(sock),
                        "http://localhost/metrics"], stdout=subprocess.PIPE,
                       timeout=20, check=True)
    head, _, body = p.stdout.decode().partition("\r\n\r\n")
    assert re.search(r"(?mi)^content-type: text/plain; version=0\.0\.4",
                     head), head
    parsed = 0
    for family in text_string_to_metric_families(body):
        parsed += len(family.samples)
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert parsed == len(samples), body
    return samples


def test_add_restart_still_there(setup, sidecar_factory, pebble):
    sidecar, state, sock, conf = setup
    mark = sidecar.mark()
    status, j, head = add(sock)
    assert status == 201, j
    assert re.search(r"(?mi)^location: /v1/certificates/%s\r?$" % NEW_ID,
                     head), head
    assert j["id"] == NEW_ID and j["key_type"] == "rsa:2048", j
    assert j["identifiers"] == NEW["identifiers"] and not j["valid"], j
    assert runtime_lines(state) == [
        "acme_certificate pebble new.example.test www.new.example.test "
        "key=rsa:2048;"]
    assert os.stat(state / "certificates.conf").st_mode & 0o777 == 0o600
    sidecar.wait_log(r'certificate "%s": added' % NEW_ID, since=mark)
    got = wait_idle(sidecar, sock, NEW_ID)
    pem = leaf(state, NEW_ID)
    assert cert_sans(pem) == {"DNS:" + n for n in NEW["identifiers"]}
    serial = cert_serial(pem)

    # The configuration test reads the file too.
    t = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                       stderr=subprocess.PIPE, text=True)
    assert t.returncode == 0, t.stderr

    # Restart: it is still managed, with the certificate it had.
    sidecar.stop()
    again = sidecar_factory(conf, [pebble]).start()
    again.wait_log(r"control: listening on")
    after = wait_idle(again, sock, NEW_ID)
    assert after["not_after"] == got["not_after"]
    assert cert_serial(leaf(state, NEW_ID)) == serial
    # A reload keeps it.
    status, j, _ = api(sock, "POST", "/v1/reload")
    assert status == 200 and j["certificates"] == 3, j
    status, j, _ = api(sock, "GET", "/v1/certificates/" + NEW_ID)
    assert status == 200, j


def test_add_errors_change_nothing(setup):
    sidecar, state, sock, conf = setup
    wait_idle(sidecar, sock, "a.example.test")
    mark = sidecar.mark()
    bad = [
        ("{not json", 400, "malformed JSON"),
        ('["x"]', 400, "object"),
        ('{"identifiers": ["x.example.test"]}', 400, 'missing field '
         '"issuer"'),
        ('{"issuer": "pebble"}', 400, 'missing field "identifiers"'),
        ('{"issuer": 1, "identifiers": ["x.example.test"]}', 400,
         '"issuer" must be a string'),
        ('{"issuer": "pebble", "identifiers": "x.example.test"}', 400,
         "non-empty array"),
        ('{"issuer": "pebble", "identifiers": []}', 400, "non-empty array"),
        ('{"issuer": "pebble", "identifiers": [1]}', 400,
         "identifiers[0] must be a string"),
        ('{"issuer": "pebble", "identifiers": ["x.example.test"], '
         '"key": 256}', 400, '"key" must be a string'),
        ('{"issuer": "pebble", "identifiers": ["x.example.test"], '
         '"force": true}', 400, 'unknown field "force"'),
        ('{"issuer": "nope", "identifiers": ["x.example.test"]}', 422,
         'unknown acme_issuer "nope"'),
        ('{"issuer": "pebble", "identifiers": ["*.example.test"]}', 422,
         'wildcard identifier "*.example.test" needs challenge dns-01'),
        ('{"issuer": "pebble", "identifiers": ["x.example.test"], '
         '"challenge": 1}', 400, '"challenge" must be a string'),
        ('{"issuer": "pebble", "identifiers": ["x.example.test"], '
         '"challenge": "dns-01"}', 422, "no way to publish the TXT record"),
        ('{"issuer": "pebble", "identifiers": ["a b.example.test"]}', 422,
         "invalid identifier"),
        ('{"issuer": "pebble", "identifiers": ["key=rsa:2048"]}', 422,
         "invalid identifier"),
        ('{"issuer": "pebble", "identifiers": ["x.example.test"], '
         '"key": "dsa:1024"}', 422, "invalid key type"),
        ('{"issuer": "pebble", "identifiers": ["a.example.test"]}', 409,
         "already managed, defined at %s:" % conf),
    ]
    for body, status, message in bad:
        resp = api(sock, "POST", "/v1/certificates", body=body)
        check_error(resp, status)
        assert message in resp[1]["error"]["message"], (body, resp)

    # Cannot be saved: refused, and not managed either.
    (state / "certificates.conf").mkdir()
    resp = add(sock)
    check_error(resp, 500)
    assert "not added" in resp[1]["error"]["message"], resp
    (state / "certificates.conf").rmdir()

    assert sidecar.alive()
    assert "added" not in sidecar.log(since=mark)
    assert runtime_lines(state) == []
    status, j, _ = api(sock, "GET", "/v1/status")
    assert j["certificates"]["total"] == 2, j
    check_error(api(sock, "GET", "/v1/certificates/" + NEW_ID), 404)


def test_delete(setup, sidecar_factory, pebble):
    sidecar, state, sock, conf = setup
    status, j, _ = add(sock)
    assert status == 201, j
    other = {"issuer": "pebble", "identifiers": ["keep.example.test"]}
    status, j, _ = add(sock, other)
    assert status == 201, j
    wait_idle(sidecar, sock, NEW_ID)

    status, j, _ = api(sock, "DELETE", "/v1/certificates/" + NEW_ID)
    assert status == 200 and j == {"deleted": NEW_ID}, j
    check_error(api(sock, "GET", "/v1/certificates/" + NEW_ID), 404)
    check_error(api(sock, "DELETE", "/v1/certificates/" + NEW_ID), 404)
    assert runtime_lines(state) == [
        "acme_certificate pebble keep.example.test;"]
    # The files stay, for a later add.
    assert (state / "certs" / NEW_ID / "fullchain.pem").exists()

    # A certificate of the configuration file is deleted there.
    resp = api(sock, "DELETE", "/v1/certificates/a.example.test")
    check_error(resp, 409)
    assert "defined at %s:" % conf in resp[1]["error"]["message"], resp
    status, j, _ = api(sock, "GET", "/v1/certificates/a.example.test")
    assert status == 200, j

    # Gone after a restart too; the other one stays.
    sidecar.stop()
    again = sidecar_factory(conf, [pebble]).start()
    again.wait_log(r"control: listening on")
    check_error(api(sock, "GET", "/v1/certificates/" + NEW_ID), 404)
    wait_idle(again, sock, "keep.example.test")


def cert_status(pebble, serial):
    """Pebble's own record of a certificate: "Valid" or "Revoked"."""
    hexserial = serial.split("=", 1)[1].lower().lstrip("0")
    text = pebble.get(pebble.mgmt_url + "/cert-status-by-serial/" +
                      hexserial).decode()
    return json.loads(text)


def test_revoke(setup, pebble):
    sidecar, state, sock, _ = setup
    wait_idle(sidecar, sock, "a.example.test")
    serial = cert_serial(leaf(state, "a.example.test"))
    path = "/v1/certificates/a.example.test/revoke"

    check_error(api(sock, "POST", path, body='{"reason": "bogus"}'), 400)
    check_error(api(sock, "POST", path, body='{"reason": 7}'), 400)
    check_error(api(sock, "POST", path, body='{"reason": true}'), 400)
    check_error(api(sock, "POST", path, body='{"why": 1}'), 400)
    check_error(api(sock, "POST", "/v1/certificates/nope.example.test/revoke",
                    body="{}"), 404)
    assert cert_status(pebble, serial)["Status"] == "Valid"

    events = Events(sock)
    try:
        time.sleep(0.5)
        mark = sidecar.mark()
        status, j, _ = api(sock, "POST", path,
                           body='{"reason": "keyCompromise"}')
        assert status == 200, j
        assert j["revoked"] == "a.example.test", j
        assert j["reason"] == "keyCompromise", j
        assert j["certificate"]["id"] == "a.example.test", j
        st = cert_status(pebble, serial)
        assert st["Status"] == "Revoked", st
        ev = events.wait(lambda e: e["type"] == "revoked")
        assert ev["certificate"] == "a.example.test", ev
        assert ev["reason"] == "keyCompromise", ev
        # A replacement, with a new serial and a new key.
        events.wait(lambda e: e["type"] == "renewed" and
                    e["certificate"] == "a.example.test")
    finally:
        events.close()
    sidecar.wait_log(r'"a.example.test" revoked \(keyCompromise\)',
                     since=mark)
    wait_idle(sidecar, sock, "a.example.test")
    assert cert_serial(leaf(state, "a.example.test")) != serial
    samples = metrics(sock)
    assert samples['acme_sidecar_orders_total{issuer="pebble",'
                   'outcome="revoked"}'] == 1


def test_events_and_metrics(setup):
    sidecar, state, sock, _ = setup
    a = wait_idle(sidecar, sock, "a.example.test")
    before = metrics(sock)
    events = Events(sock)
    try:
        time.sleep(0.5)
        status, j, _ = api(sock, "POST",
                           "/v1/certificates/a.example.test/renew")
        assert status == 202, j
        ev = events.wait(lambda e: e["type"] == "order")
        assert ev == dict(ev, certificate="a.example.test", issuer="pebble",
                          renewal=True)
        ev = events.wait(lambda e: e["type"] == "renewed")
        assert ev["certificate"] == "a.example.test", ev
        status, j, _ = add(sock, {"issuer": "pebble",
                                  "identifiers": ["ev.example.test"]})
        assert status == 201, j
        events.wait(lambda e: e["type"] == "added" and
                    e["certificate"] == "ev.example.test")
        events.wait(lambda e: e["type"] == "challenge_served")
        events.wait(lambda e: e["type"] == "issued" and
                    e["certificate"] == "ev.example.test")
    finally:
        events.close()
    a = wait_idle(sidecar, sock, "a.example.test")

    after = metrics(sock)
    key = 'acme_sidecar_orders_total{issuer="pebble",outcome="%s"}'
    assert after[key % "renewed"] == before.get(key % "renewed", 0) + 1
    assert after[key % "issued"] == before[key % "issued"] + 1
    label = '{id="a.example.test",issuer="pebble"}'
    assert after["acme_sidecar_certificate_ready" + label] == 1
    na = time.mktime(time.strptime(a["not_after"], "%Y-%m-%dT%H:%M:%SZ")) \
        - time.timezone
    assert after["acme_sidecar_certificate_expiry_timestamp_seconds" +
                 label] == na
    assert after["acme_sidecar_challenges_served_total"] > \
        before["acme_sidecar_challenges_served_total"]
    orders = [v for k, v in after.items() if k.startswith(
        'acme_sidecar_acme_requests_total{issuer="pebble",'
        'endpoint="newOrder",status="201"')]
    assert orders and orders[0] >= 4, after


def test_event_streams_are_limited(setup):
    sidecar, state, sock, _ = setup
    streams = [Events(sock) for _ in range(16)]
    try:
        time.sleep(1)
        check_error(api(sock, "GET", "/v1/events"), 503)
        # A client that hangs up frees its place within 5 s.
        streams.pop().close()
        deadline = time.monotonic() + 15
        while True:
            p = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                 "--max-time", "1", "--unix-socket", str(sock),
                 "http://localhost/v1/events"], stdout=subprocess.PIPE,
                text=True)
            if p.stdout == "200":
                break
            assert p.stdout == "503", p.stdout
            assert time.monotonic() < deadline, "the place was not freed"
            time.sleep(0.5)
    finally:
        for s in streams:
            s.close()
    assert sidecar.alive()
    # A stream ends cleanly when the daemon stops.
    last = Events(sock)
    time.sleep(0.5)
    sidecar.stop()
    assert last.proc.wait(timeout=10) == 0


def test_malformed_input_changes_nothing(setup):
    """Every changing route, fed garbage: errors only, the same state, and
    the daemon still up."""
    sidecar, state, sock, _ = setup
    wait_idle(sidecar, sock, "a.example.test")
    _, before, _ = api(sock, "GET", "/v1/certificates")
    mark = sidecar.mark()
    routes = [("POST", "/v1/certificates"),
              ("DELETE", "/v1/certificates/a.example.test"),
              ("POST", "/v1/certificates/a.example.test/renew"),
              ("POST", "/v1/certificates/a.example.test/revoke"),
              ("POST", "/v1/reload")]
    bodies = ["{", "}", "null", "[]", '"x"', "1e999", '{"a":1,"a":2}',
              '{"reason": {}}', '{"issuer": null, "identifiers": null}',
              '{"identifiers": [[]], "issuer": "pebble"}',
              '{"identifiers": ["' + "a" * 70 + '.example.test"], '
              '"issuer": "pebble"}',
              '{"identifiers": ["\\u0000.example.test"], "issuer": "pebble"}',
              "\xff\xfe", "{" * 5000 + "}" * 5000]
    for method, path in routes:
        for body in bodies:
            got, j, _ = api(sock, method, path, body=body)
            if method == "DELETE" and got == 409:
                continue        # no body to look at: a config certificate
            assert got in (400, 422), (method, path, body, j)
            check_error((got, j, None), got)
    assert sidecar.alive()
    log = sidecar.log(since=mark)
    for word in ("added", "deleted", "renewal asked", "revocation",
                 "reloading"):
        assert word not in log, (word, log)
    _, after, _ = api(sock, "GET", "/v1/certificates")
    assert after == before
    assert runtime_lines(state) == []


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Alone: a spinning daemon sharing the CPU would burn less than 1 s.
@pytest.mark.serial
def test_out_of_descriptors_backs_off(setup):
    """accept() failing with EMFILE pauses accepting instead of spinning,
    and the API answers again once descriptors are free."""
    import resource
    import socket
    sidecar, state, sock, _ = setup
    wait_idle(sidecar, sock, "a.example.test")
    pid = sidecar.proc.pid
    used = len(os.listdir("/proc/%d/fd" % pid))
    # The soft limit only: the hard one may not come back up.
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 3, hard))
    mark = sidecar.mark()
    clients = []
    try:
        for _ in range(12):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(sock))
            clients.append(c)
        sidecar.wait_log(r"control: accept: Too many open files", since=mark)
        before = cpu_seconds(pid)
        time.sleep(3)
        # Spinning on accept() would burn about 3 s of CPU here.
        assert cpu_seconds(pid) - before < 1.0
    finally:
        for c in clients:
            c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    deadline = time.monotonic() + 10
    while True:
        p = subprocess.run(["curl", "-sS", "--max-time", "2", "--unix-socket",
                            str(sock), "http://localhost/v1/status"],
                           stdout=subprocess.PIPE, text=True)
        if p.returncode == 0:
            break
        assert time.monotonic() < deadline, "the API did not come back"
    assert json.loads(p.stdout)["certificates"]["total"] == 2
    assert sidecar.alive()


def test_non_utf8_path_is_a_404(setup):
    """Found by tests/fuzz: a path that is not UTF-8 went into the JSON
    error message, and jansson's refusal stopped the daemon."""
    import socket
    sidecar, state, sock, _ = setup
    for path in (b"/v1/\xcf\xcd", b"/v1/certificates/\xff", b"/v1/status\x80"):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(str(sock))
        c.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        c.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert status in (404, 405), data
        j = json.loads(body)
        assert j["error"]["status"] == status and "?" in \
            j["error"]["message"], j
    assert sidecar.alive()
    status, j, _ = api(sock, "GET", "/v1/status")
    assert status == 200, j
