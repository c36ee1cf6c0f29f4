"""nginx with ngx_http_acme_module serves what the sidecar issues.

The nginx.conf is the seed's "Full example" (seed/nginx-plus-module-acme.md)
with only its ports, paths, zone name and issuer changed, plus Pebble's CA
in ssl_trusted_certificate so the sidecar trusts Pebble's HTTPS.  The
sidecar reads that same file (--nginx-conf).  Its own HTTP-01 listener is
on a port Pebble never dials, so every challenge is answered by nginx's
port-80 server through the module, with its "return 404" in place.
"""

import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

import shmread
from conftest import free_port, split_pem, zone_name, zone_path
from nginxlib import (MODULE, fingerprint, handshake, http_block_head,
                      http_get, main_block, nginx_factory, served_leaf,
                      verify_served)

NAMES = ["example.test", "www.example.test"]

pytestmark = pytest.mark.skipif(
    not MODULE.exists(), reason="%s is not built (nginx-dev missing?)" %
    MODULE)

__all__ = ["nginx_factory"]


def seed_http(pebble, tmp_path, tls_port, http_port):
    """The seed's Full example: ports, paths, zone and uri changed."""
    return """
resolver 127.0.0.1:53;

acme_issuer example {
    uri         %(uri)s;
    # contact   admin@example.test;
    state_path  %(state)s;
    accept_terms_of_service;
    ssl_trusted_certificate %(ca)s;
}

acme_shared_zone zone=%(zone)s:1M;

server {
    listen 127.0.0.1:%(tls)d ssl;
    server_name  .example.test;

    acme_certificate example;

    ssl_certificate       $acme_certificate;
    ssl_certificate_key   $acme_certificate_key;

    # do not parse the certificate on each request
    ssl_certificate_cache max=2;
}

server {
    # listener on port 80 is required to process ACME HTTP-01 challenges
    listen 127.0.0.1:%(http)d;

    location / {
        return 404;
    }
}
""" % dict(uri=pebble.directory_url, state=tmp_path / "state",
           ca=pebble.ca, zone=zone_name(tmp_path), tls=tls_port,
           http=http_port)


def nginx_conf(prefix, body):
    return main_block(prefix, [MODULE]) + "http {\n" + \
        http_block_head(prefix) + body + "}\n"


def sidecar_conf(tmp_path):
    """Only what nginx.conf cannot say: a responder Pebble never uses."""
    p = tmp_path / "acme-sidecar.conf"
    p.write_text("challenge_listen 127.0.0.1:%d;\n" % free_port())
    return p


@pytest.fixture
def seed(tmp_path, pebble, http_port, nginx_factory, sidecar_factory):
    tls_port = free_port()
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, seed_http(pebble, tmp_path,
                                                   tls_port, http_port)))
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    return nginx, sidecar, tls_port


def stored_leaf(tmp_path, cid="example.test"):
    pem = (tmp_path / "state" / "certs" / cid / "fullchain.pem").read_text()
    return split_pem(pem)[0]


def test_seed_full_example(tmp_path, pebble, http_port, seed):
    nginx, sidecar, tls_port = seed
    rc, out = nginx.test_config()
    assert rc == 0 and "test is successful" in out, out

    nginx.start([tls_port, http_port])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])

    # The challenges went through nginx: the sidecar's own responder
    # served none of them.
    assert "served" not in sidecar.log() or \
        "served 0" in sidecar.log()
    leaf = stored_leaf(tmp_path)
    deadline = time.monotonic() + 10
    for name in NAMES:
        while True:
            rc, blocks, _ = handshake(tls_port, name, check=False)
            if rc == 0 and blocks and \
                    fingerprint(blocks[0]) == fingerprint(leaf):
                break
            assert time.monotonic() < deadline, \
                "nginx never served the issued certificate for %s%s" % (
                    name, nginx.diagnostics())
            time.sleep(0.1)
        verify_served(tls_port, name, pebble, tmp_path)

    # The port-80 server still says 404 to everything else.
    status, _ = http_get(http_port, "/.well-known/acme-challenge/nosuch")
    assert status == 404
    status, _ = http_get(http_port, "/")
    assert status == 404
    assert "[alert]" not in nginx.error_log()
    assert "[crit]" not in nginx.error_log()


def _handshake_loop(port, name, stop, results):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=name) as t:
                    results.append(("ok", t.getpeercert(binary_form=True)))
        except (OSError, ssl.SSLError) as e:
            results.append(("error", repr(e)))
        time.sleep(0.01)


@pytest.mark.parametrize("validity", [30])
def test_renewal_without_reload(tmp_path, pebble_factory, http_port,
                                nginx_factory, sidecar_factory, validity):
    """Short-lived certificates renew at half their life; nginx serves
    each new one with no reload (same worker) and no failed handshake."""
    pebble = pebble_factory(http_port, validity=validity)
    tls_port = free_port()
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, seed_http(pebble, tmp_path,
                                                   tls_port, http_port)))
    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    nginx.start([tls_port, http_port])
    workers = nginx.worker_pids()
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    seg = str(zone_path(tmp_path))
    first = shmread.cert(seg, "example.test")

    stop = threading.Event()
    results = []
    t = threading.Thread(target=_handshake_loop,
                         args=(tls_port, "www.example.test", stop, results))
    t.start()
    try:
        deadline = time.monotonic() + validity + 20
        while True:
            e = shmread.cert(seg, "example.test")
            if e["serial"] != first["serial"]:
                break
            assert time.monotonic() < deadline, \
                "no renewal within %ds%s" % (validity + 20,
                                            sidecar.diagnostics())
            time.sleep(0.2)
        # Keep handshaking a little after the switch.
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()

    errors = [r for k, r in results if k == "error"]
    assert len(results) > 100, "only %d handshakes" % len(results)
    certs = [r for k, r in results if k == "ok"]
    assert not errors, "%d of %d handshakes failed during the renewal: %s" \
        % (len(errors), len(results), errors[:3])
    served = {ssl.DER_cert_to_PEM_cert(c) for c in certs}
    new_leaf = split_pem(e["chain"])[0]
    assert fingerprint(new_leaf) in {fingerprint(p) for p in served}, \
        "nginx kept serving the old certificate%s" % nginx.diagnostics()
    assert fingerprint(served_leaf(tls_port, "example.test")) == \
        fingerprint(new_leaf)
    assert nginx.worker_pids() == workers, "nginx was reloaded"


def test_before_issuance_and_garbage(tmp_path, pebble, http_port, seed):
    """No segment yet: handshakes fail cleanly with a clear error line.
    A garbage segment crashes nothing.  Then the sidecar starts and the
    same nginx, never reloaded, serves the certificate."""
    nginx, sidecar, tls_port = seed
    nginx.start([tls_port, http_port])
    workers = nginx.worker_pids()
    rc, _, _ = handshake(tls_port, "example.test", check=False)
    assert rc != 0, "a handshake succeeded with no certificate"

    seg = zone_path(tmp_path)
    with open(seg, "wb") as f:
        f.write(os.urandom(64 * 1024))
    os.chmod(seg, 0o644)
    time.sleep(1.2)         # the module looks for the file once a second
    for _ in range(3):
        rc, _, _ = handshake(tls_port, "example.test", check=False)
        assert rc != 0
    assert nginx.worker_pids() == workers, "a worker died" + \
        nginx.diagnostics()
    log = nginx.error_log()
    assert "example.test" in log, log[-2000:]
    seg.unlink()

    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    leaf = stored_leaf(tmp_path)
    deadline = time.monotonic() + 10
    while True:
        rc, blocks, _ = handshake(tls_port, "example.test", check=False)
        if rc == 0 and fingerprint(blocks[0]) == fingerprint(leaf):
            break
        assert time.monotonic() < deadline, nginx.diagnostics()
        time.sleep(0.2)
    assert nginx.worker_pids() == workers
    assert "[alert]" not in nginx.error_log()


def test_shipped_example_passes_both_checks(tmp_path, sidecar_bin):
    """conf/nginx-module.conf, with only the module's path made absolute,
    is accepted by nginx -t and by the sidecar's -t --nginx-conf."""
    from conftest import ROOT
    text = (ROOT / "conf" / "nginx-module.conf").read_text()
    assert "modules/ngx_http_acme_module.so" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("modules/ngx_http_acme_module.so",
                                 str(MODULE)))
    p = subprocess.run(["/usr/sbin/nginx", "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0, p.stdout
    p = subprocess.run([str(sidecar_bin), "-t", "--nginx-conf", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0, p.stdout
    assert "test is successful" in p.stdout


@pytest.mark.parametrize("line,message", [
    ("acme_certificate nosuch;", 'acme_issuer "nosuch"'),
    ("acme_certificate example key=rsa:1024;", "rsa:1024"),
    ("server_name *.example.test; acme_certificate example;",
     "*.example.test"),
])
def test_nginx_t_errors_name_the_line(tmp_path, pebble, nginx_factory, line,
                                      message):
    nginx = nginx_factory()
    body = ("acme_issuer example { uri %s; }\n"
            "acme_shared_zone zone=%s:1M;\n"
            "server {\n"
            "    listen 127.0.0.1:%d ssl;\n"
            "    %s\n"
            "    ssl_certificate $acme_certificate;\n"
            "    ssl_certificate_key $acme_certificate_key;\n"
            "}\n") % (pebble.directory_url, zone_name(tmp_path), free_port(),
                      line)
    nginx.write(nginx_conf(nginx.prefix, body))
    rc, out = nginx.test_config()
    assert rc != 0, out
    assert message in out, out
    # nginx's own convention: "in FILE:LINE"; the directive is on the
    # fifth line of the http{} body.
    head = nginx_conf(nginx.prefix, "").count("\n") - 1
    assert "in %s:%d" % (nginx.conf, head + 5) in out, out


def test_fallback_and_challenge_under_redirect(tmp_path, pebble, http_port,
                                               nginx_factory,
                                               sidecar_factory):
    """Before issuance a server with acme_fallback_certificate serves it;
    a port-80 server that redirects everything still answers challenges,
    so issuance works and the fallback gives way."""
    tls_port = free_port()
    fb_key, fb_cert = tmp_path / "fb.key", tmp_path / "fb.pem"
    from conftest import openssl
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(fb_key),
            "-out", str(fb_cert), "-subj", "/CN=fallback.invalid",
            "-days", "1")
    body = seed_http(pebble, tmp_path, tls_port, http_port)
    body = body.replace("    acme_certificate example;",
                        "    acme_certificate example;\n"
                        "    acme_fallback_certificate %s %s;" %
                        (fb_cert, fb_key))
    body = body.replace("        return 404;",
                        "        return 301 https://$host$request_uri;")
    nginx = nginx_factory()
    nginx.write(nginx_conf(nginx.prefix, body))
    nginx.start([tls_port, http_port])
    leaf = served_leaf(tls_port, "example.test")
    assert fingerprint(leaf) == fingerprint(fb_cert.read_text())
    status, _ = http_get(http_port, "/.well-known/acme-challenge/nosuch")
    assert status == 301

    sidecar = sidecar_factory(sidecar_conf(tmp_path), [pebble])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["example.test"])
    want = fingerprint(stored_leaf(tmp_path))
    deadline = time.monotonic() + 10
    while fingerprint(served_leaf(tls_port, "example.test")) != want:
        assert time.monotonic() < deadline, nginx.diagnostics()
        time.sleep(0.1)
