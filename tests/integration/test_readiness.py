"""The readiness check: before the CA is told to validate, the daemon
fetches its own HTTP-01 answer the way the CA will, and tries again
briefly until it answers (README "Readiness").

The race of issue 14: the sidecar starts first and nginx (the module,
answering from the shared zone; challenge_listen off) 3 s later.  The
certificate is issued with no failed validation at the CA.  A check that
never passes fails the order, naming the address and what came back,
and the CA never hears of the challenge.
"""

import http.server
import json
import re
import subprocess
import threading
import time

import pytest

from conftest import free_port, zone_line
from nginxlib import (MODULE, http_block_head, main_block, nginx_factory,
                      verify_served)

__all__ = ["nginx_factory"]

NAMES = ["example.test", "www.example.test"]


def control(tmp_path, method, path):
    """(HTTP status, parsed JSON) of a control API call."""
    out = subprocess.run(
        ["curl", "-sS", "-X", method, "-w", "\n%{http_code}",
         "--unix-socket", str(tmp_path / "control.sock"),
         "http://localhost" + path], stdout=subprocess.PIPE, check=True,
        text=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body) if body else None


def metric(tmp_path, name):
    out = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(tmp_path / "control.sock"),
         "http://localhost/metrics"], stdout=subprocess.PIPE, check=True,
        text=True).stdout
    m = re.search(r"^%s (\d+)$" % re.escape(name), out, re.M)
    assert m, "no %s in /metrics:\n%s" % (name, out)
    return int(m.group(1))


def pebble_log(pebble):
    with open(pebble.path("pebble.log"), errors="replace") as f:
        return f.read()


def nginx_conf(prefix, pebble, tmp_path, tls_port, http_port):
    """The module answers HTTP-01 on Pebble's port from the zone."""
    return main_block(prefix, [MODULE]) + "http {\n" + \
        http_block_head(prefix) + """
    acme_issuer pebble {
        uri %(uri)s;
        state_path %(state)s;
        accept_terms_of_service;
        ssl_trusted_certificate %(ca)s;
        request_rate off;
    }
    %(zone)s
    server {
        listen 127.0.0.1:%(tls)d ssl;
        server_name %(names)s;
        acme_certificate pebble;
        ssl_certificate $acme_certificate;
        ssl_certificate_key $acme_certificate_key;
    }
    server {
        listen 127.0.0.1:%(http)d;
        location / { return 404; }
    }
}
""" % dict(uri=pebble.directory_url, state=tmp_path / "state",
           ca=pebble.ca, zone=zone_line(tmp_path), tls=tls_port,
           http=http_port, names=" ".join(NAMES))


@pytest.mark.skipif(not MODULE.exists(), reason="%s is not built" % MODULE)
def test_sidecar_starts_before_nginx(tmp_path, pebble, http_port,
                                     nginx_factory, sidecar_factory):
    tls_port = free_port()
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, pebble, tmp_path, tls_port,
                           http_port))
    conf = tmp_path / "acme-sidecar.conf"
    conf.write_text("challenge_listen off;\ncontrol_socket %s;\n" %
                    (tmp_path / "control.sock"))
    sidecar = sidecar_factory(conf, [pebble])

    start = time.monotonic()
    sidecar.start("--nginx-conf", str(nginx.conf))
    # No listener of its own; the check's address is nginx.conf's
    # plain-HTTP listen, and nothing answers there yet.
    sidecar.wait_log(r"challenge_listen off")
    sidecar.wait_log(r"readiness check before validation: 127\.0\.0\.1:%d "
                     r"\(listen at %s:\d+\)" % (http_port,
                                                re.escape(str(nginx.conf))))
    sidecar.wait_log(r"readiness http://127\.0\.0\.1:%d/\.well-known/"
                     r"acme-challenge/\S+: got connection refused; trying "
                     r"again" % http_port)
    code, cert = control(tmp_path, "GET", "/v1/certificates/example.test")
    assert code == 200 and cert["state"] == "ready-check", cert

    time.sleep(max(0.0, start + 3.0 - time.monotonic()))
    nginx.start([tls_port, http_port])
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    took = time.monotonic() - start
    print("\nrace: certificate %.1fs after the sidecar started, nginx "
          "3.0s after it" % took)

    log = pebble_log(pebble)
    assert "INVALID" not in log, "a failed validation at the CA:\n" + log
    # One validation per identifier: the CA was asked once for each.
    assert log.count("Pulled a task from the Tasks queue") == len(NAMES), log
    assert "readiness check:" not in sidecar.log(), sidecar.diagnostics()
    assert metric(tmp_path, 'acme_sidecar_readiness_checks_total'
                  '{result="passed"}') == len(NAMES)
    assert metric(tmp_path, "acme_sidecar_readiness_failed_tries_total") >= 1
    for name in NAMES:
        deadline = time.monotonic() + 10
        while True:
            try:
                verify_served(tls_port, name, pebble, tmp_path)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    assert sidecar.stop() == 0


class WrongBody(http.server.BaseHTTPRequestHandler):
    """A port-80 server that answers something else than the token."""

    def do_GET(self):
        body = b"wrong \x01body\n" + b"x" * 200
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def wrong_body():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                          WrongBody)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def wait_error(tmp_path, sidecar, pattern, since_count=0):
    """The certificate's last_error once its failure count passes
    since_count; it must match pattern."""
    deadline = time.monotonic() + 20
    while True:
        try:
            code, cert = control(tmp_path, "GET",
                                 "/v1/certificates/example.test")
        except subprocess.CalledProcessError:
            cert = {}   # the daemon is starting: no control socket yet
        if cert.get("failures", 0) > since_count:
            msg = cert["last_error"]["message"]
            assert re.search(pattern, msg), msg
            return cert
        assert time.monotonic() < deadline, "no failure%s" % (
            sidecar.diagnostics())
        time.sleep(0.1)


def test_check_never_passes(tmp_path, pebble, http_port, sidecar_factory,
                            wrong_body):
    """Pebble could validate (challenge_listen is its port), but the
    check, pointed elsewhere, never finds the answer: the order fails
    with what came back, first a wrong body, then (after a reload to a
    closed port) a refused connection.  The CA never validates."""
    closed = free_port()
    conf = tmp_path / "acme-sidecar.conf"

    def write(check):
        conf.write_text("""acme_issuer pebble {
    uri %s;
    state_path %s;
    accept_terms_of_service;
    ssl_trusted_certificate %s;
    request_rate off;
}
challenge_listen 127.0.0.1:%d;
challenge_check %s;
control_socket %s;
%s
acme_certificate pebble example.test;
""" % (pebble.directory_url, tmp_path / "state", pebble.ca, http_port, check,
            tmp_path / "control.sock", zone_line(tmp_path)))

    write("127.0.0.1:%d timeout=2s" % wrong_body)
    sidecar = sidecar_factory(conf, [pebble]).start()
    cert = wait_error(
        tmp_path, sidecar,
        r'^readiness check: http://127\.0\.0\.1:%d/\.well-known/'
        r'acme-challenge/[\w-]+ for example\.test got HTTP 200 with '
        r'"wrong \\x01body\\x0axxx+"\.\.\., not the key authorization '
        r'\(\d+ tries over 2s\); the CA was not asked to validate$' %
        wrong_body)
    assert cert["state"] == "backoff", cert

    write("127.0.0.1:%d timeout=1" % closed)
    code, _ = control(tmp_path, "POST", "/v1/reload")
    assert code == 200
    code, _ = control(tmp_path, "POST", "/v1/certificates/example.test/renew")
    assert code in (200, 202), code
    wait_error(tmp_path, sidecar,
               r"^readiness check: http://127\.0\.0\.1:%d/\S+ for "
               r"example\.test got connection refused \(\d+ tries over 1s\)"
               % closed, since_count=cert["failures"])

    log = pebble_log(pebble)
    assert "POST /chalZ/" not in log, log
    assert "Pulled a task from the Tasks queue" not in log, log
    assert "Attempting to validate" not in log, log
    assert metric(tmp_path, 'acme_sidecar_readiness_checks_total'
                  '{result="failed"}') == 2
    assert sidecar.stop() == 0


def test_t_challenge_check_errors(tmp_path, sidecar_bin):
    cases = [
        ("challenge_check 'no host:80';",
         r'invalid host in "no host:80" of the "challenge_check" directive'),
        ("challenge_check 127.0.0.1:0;",
         r'invalid port in "127\.0\.0\.1:0" of the "challenge_check"'),
        ("challenge_check 127.0.0.1:80 timeout=0;",
         r'invalid timeout "0" of the "challenge_check" directive'),
        ("challenge_check 80 wait=1s;",
         r'invalid parameter "wait=1s" of the "challenge_check" directive'),
        ("challenge_check off;\nchallenge_check off;",
         r'"challenge_check" directive is duplicate'),
    ]
    conf = tmp_path / "acme-sidecar.conf"
    for text, want in cases:
        conf.write_text("control_socket %s;\n%s\n" %
                        (tmp_path / "control.sock", text))
        p = subprocess.run([str(sidecar_bin), "-t", "-c", str(conf)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        line = 3 if "\n" in text else 2
        assert p.returncode != 0, p.stdout
        assert re.search(r"%s:%d: %s" % (re.escape(str(conf)), line, want),
                         p.stdout), p.stdout
    # off is accepted for both; the daemon needs no listener of its own.
    conf.write_text("control_socket %s;\nchallenge_listen off;\n"
                    "challenge_check off;\n" % (tmp_path / "control.sock"))
    p = subprocess.run([str(sidecar_bin), "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0 and "test is successful" in p.stdout, p.stdout
