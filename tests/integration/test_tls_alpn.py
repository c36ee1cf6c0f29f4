"""tls-alpn-01 (RFC 8737) through the daemon's own responder,
tls_alpn_listen, against Pebble: its VA connects to the responder (Pebble's
"tlsPort" is the responder's port), reads the validation certificate and
issues.  Held at the CA's door (ca_proxy.py) while the challenge is
pending, the responder shows what the CA would see, and what everybody
else gets: an alert and no certificate."""

import os
import resource
import signal
import socket
import ssl
import subprocess
import time

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from ca_proxy import CaProxy
from conftest import (SIDECAR, check_certificate, free_port,
                      write_config)

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
NAME = "alpn.example.test"
# RFC 8738: the CA names an IP address by its reverse name in SNI.
IP, IP_SNI = "127.0.0.1", "1.0.0.127.in-addr.arpa"
# Pebble's challenge URLs: the daemon's "{}" that starts the validation.
CHALLENGE_PATH = "/chalZ/"


def hello(port, sni, alpn):
    """(DER of the certificate served, protocol selected) of a handshake
    with SNI sni offering alpn (None: no ALPN extension), or the
    ssl.SSLError or connection error it ended with."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            with ctx.wrap_socket(s, server_hostname=sni) as t:
                return (t.getpeercert(binary_form=True),
                        t.selected_alpn_protocol())
        except (ssl.SSLError, ConnectionError) as e:
            return e


def assert_refused(result, alert):
    """The handshake ended with alert ("tlsv1 alert no application
    protocol", "tlsv1 unrecognized name": as OpenSSL names it)."""
    assert isinstance(result, ssl.SSLError) and alert in str(result), result


def write_alpn_config(tmp_path, ca, http_port, alpn_port):
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, ca, state, http_port, [([NAME], None), ([IP], None)],
                 issuer_extra="challenge tls-alpn-01;")
    with open(conf, "a") as f:
        f.write("tls_alpn_listen 127.0.0.1:%d;\n" % alpn_port)
    return conf, state


def test_tls_alpn_issues_and_refuses_other_clients(tmp_path, pebble,
                                                   http_port,
                                                   sidecar_factory):
    proxy = CaProxy(pebble).start()
    try:
        # Pebble's VA connects to its tlsPort: the responder listens there.
        alpn_port = pebble.tls_port
        conf, state = write_alpn_config(tmp_path, proxy, http_port,
                                        alpn_port)
        proxy.hold(CHALLENGE_PATH)
        sc = sidecar_factory(conf, [pebble]).start()
        sc.wait_log(r"answering tls-alpn-01 on 127\.0\.0\.1:%d" % alpn_port)
        for ident in (NAME, IP):
            sc.wait_log(r'"%s": \S+ -> challenge' % ident.replace(".", r"\."),
                        timeout=60)

        # What the CA sees: the validation certificate, over acme-tls/1.
        got = hello(alpn_port, NAME, ["acme-tls/1"])
        assert not isinstance(got, Exception), \
            "%r\n%s" % (got, sc.diagnostics())
        der, proto = got
        assert proto == "acme-tls/1"
        cert = x509.load_der_x509_certificate(der)
        assert cert.issuer == cert.subject
        san = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [NAME]
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        assert ext.critical
        # An OCTET STRING of the 32 bytes of SHA-256(key authorization).
        assert ext.value.value[:2] == b"\x04\x20"
        assert len(ext.value.value) == 34

        # Everybody else: an alert, no certificate.  A browser (no
        # acme-tls/1), a client with no ALPN at all, a name not pending.
        assert_refused(hello(alpn_port, NAME, ["h2", "http/1.1"]),
                       "no application protocol")
        assert_refused(hello(alpn_port, NAME, None),
                       "no application protocol")
        assert_refused(hello(alpn_port, "other.example.test",
                             ["acme-tls/1"]), "unrecognized name")
        # ALPN_MAX_CONNS (64) idle connections fill the responder: the
        # next is closed at once, and handshakes succeed again once they
        # are gone.
        idle = [socket.create_connection(("127.0.0.1", alpn_port))
                for _ in range(64)]
        try:
            got = hello(alpn_port, NAME, ["acme-tls/1"])
            assert isinstance(got, (ssl.SSLError, ConnectionError)), got
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 30
        while isinstance(hello(alpn_port, NAME, ["acme-tls/1"]), Exception):
            assert time.monotonic() < deadline, sc.diagnostics()
            time.sleep(0.1)

        # Out of descriptors: accepting pauses (logged), then resumes.
        pid = sc.proc.pid
        used = len(os.listdir("/proc/%d/fd" % pid))
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 2, hard))
        mark = sc.mark()
        clients = []
        try:
            for _ in range(6):
                clients.append(socket.create_connection(("127.0.0.1",
                                                         alpn_port)))
            sc.wait_log(r"tls_alpn_listen: accept: Too many open files; "
                        r"pausing for 1s", since=mark)
        finally:
            for c in clients:
                c.close()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        deadline = time.monotonic() + 30
        while isinstance(hello(alpn_port, NAME, ["acme-tls/1"]), Exception):
            assert time.monotonic() < deadline, sc.diagnostics()
            time.sleep(0.1)

        # Plain HTTP instead of a ClientHello: an alert, or a reset.
        with socket.create_connection(("127.0.0.1", alpn_port)) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.settimeout(10)
            try:
                first = s.recv(4096)[:1]
            except ConnectionResetError:
                first = b""
            assert first in (b"\x15", b"")

        got = hello(alpn_port, IP_SNI, ["acme-tls/1"])
        assert not isinstance(got, Exception), got
        san = x509.load_der_x509_certificate(got[0]).extensions. \
            get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] \
            == [IP]
        # The address itself is no SNI (RFC 6066): nothing to serve.
        assert_refused(hello(alpn_port, IP, ["acme-tls/1"]),
                       "unrecognized name")

        proxy.release(CHALLENGE_PATH, True)
        sc.wait_certs(state, [NAME, IP])
        check_certificate(state, [NAME], None, pebble, tmp_path)
        # The readiness check's, ours above, then the CA's.
        log = sc.log()
        for sni in (NAME, IP_SNI):
            assert log.count("validation certificate served for " +
                             sni) >= 3, log
        assert log.count("readiness tls://127.0.0.1:%d (acme-tls/1) "
                         "answers (try 1," % alpn_port) == 2, log
        # The authorization settled: its certificate is gone.
        assert_refused(hello(alpn_port, NAME, ["acme-tls/1"]),
                       "unrecognized name")
        assert sc.alive()
        assert sc.stop() == 0
    finally:
        proxy.stop()


def test_tls_alpn_config_errors(tmp_path, pebble, http_port):
    """-t names the line: a bad tls_alpn_listen, and a wildcard, which
    tls-alpn-01 cannot validate.  (Without tls_alpn_listen nginx's module
    answers, through the shared zone: test_tls_alpn_nginx.py.)"""
    state = tmp_path / "state"
    cases = [
        ("tls_alpn_listen 127.0.0.1:99999;\n", [NAME], "tls_alpn_listen",
         "invalid port in \"127.0.0.1:99999\" of the \"tls_alpn_listen\" "
         "directive"),
        ("tls_alpn_listen 127.0.0.1:8443;\n", ["*.example.test"],
         "acme_certificate", "wildcard identifier \"*.example.test\" "
         "needs challenge dns-01: tls-alpn-01 cannot validate wildcard "
         "identifiers"),
    ]
    for extra, names, at, message in cases:
        conf = tmp_path / "acme-sidecar.conf"
        write_config(conf, pebble, state, http_port, [(names, None)],
                     issuer_extra="challenge tls-alpn-01;")
        with open(conf, "a") as f:
            f.write(extra)
        line = [n for n, text in enumerate(conf.read_text().split("\n"), 1)
                if text.startswith(at)][0]
        p = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        message = "%s:%d: %s" % (conf, line, message)
        assert p.returncode != 0 and message in p.stdout, p.stdout


def test_tls_alpn_listen_added_by_reload(tmp_path, pebble, http_port,
                                         sidecar_factory):
    """tls_alpn_listen binds at start only: added by a reload, it is
    logged as waiting for a restart, and a tls-alpn-01 order goes to the
    shared zone for nginx's module, its readiness check to port 443 of
    this host (no nginx.conf says otherwise), not to a responder that
    does not run."""
    conf, state = write_alpn_config(tmp_path, pebble, http_port, free_port())
    text = conf.read_text()
    # First without the responder, the challenge and the certificate.
    conf.write_text("".join(
        line for line in text.splitlines(keepends=True)
        if not line.strip().startswith(("tls_alpn_listen", "challenge tls",
                                        "acme_certificate"))))
    sc = sidecar_factory(conf, [pebble]).start()
    sc.wait_log(r"readiness check before validation")
    conf.write_text(text)
    sc.signal(signal.SIGHUP)
    sc.wait_log(r"tls_alpn_listen changed; it takes effect after a restart")
    sc.wait_log(r"readiness check of tls-alpn-01: 127\.0\.0\.1:443 \(port 443 "
                r"of this host")
    sc.wait_log(r"readiness tls://127\.0\.0\.1:443 \(acme-tls/1\): got ",
                timeout=60)
    assert sc.alive()
    assert sc.stop() == 0
