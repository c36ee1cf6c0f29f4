"""tls-alpn-01 (RFC 8737) through nginx's module: no tls_alpn_listen, the
sidecar publishes the validation certificate in the shared zone and nginx
answers the CA on its own https port (Pebble's "tlsPort").

Held at the CA's door (ca_proxy.py) while the challenge is pending, nginx
shows what the CA sees (the validation certificate over acme-tls/1, in
TLS 1.2 and 1.3, and no HTTP after it) and what everybody else gets: the
server's usual certificate and ALPN, or for a name with nothing pending,
no validation certificate.  Released, the certificate issues, verifies,
and nginx serves it."""

import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ObjectIdentifier

from ca_proxy import CaProxy
from conftest import free_port, openssl, zone_name
from nginxlib import (MODULE, fingerprint, handshake, http_block_head,
                      main_block, nginx_factory, served_leaf, verify_served)

__all__ = ["nginx_factory"]

pytestmark = pytest.mark.skipif(
    not MODULE.exists(), reason="%s is not built (nginx-dev missing?)" %
    MODULE)

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
NAME = "alpn.example.test"
OTHER = "other.example.test"
# RFC 8738: the CA names an IP address by its reverse name in SNI.
IP, IP_SNI = "127.0.0.1", "1.0.0.127.in-addr.arpa"
CHALLENGE_PATH = "/chalZ/"


def nginx_body(tmp_path, ca, tls_port, fb_cert, fb_key):
    return """
acme_issuer example {
    uri         %(uri)s;
    state_path  %(state)s;
    accept_terms_of_service;
    ssl_trusted_certificate %(ca)s;
    challenge   tls-alpn-01;
}

acme_shared_zone zone=%(zone)s:1M;

server {
    listen 127.0.0.1:%(tls)d ssl http2;
    server_name %(name)s;

    acme_certificate example;
    acme_fallback_certificate %(fb_cert)s %(fb_key)s;

    ssl_certificate       $acme_certificate;
    ssl_certificate_key   $acme_certificate_key;

    location / {
        return 200 "hello from nginx\\n";
    }
}

server {
    listen 127.0.0.1:%(tls)d ssl;
    server_name ip.example.test;

    acme_certificate example %(ip)s;
    acme_fallback_certificate %(fb_cert)s %(fb_key)s;

    ssl_certificate       $acme_certificate;
    ssl_certificate_key   $acme_certificate_key;
}
""" % dict(ip=IP, uri=ca.directory_url, state=tmp_path / "state", ca=ca.ca,
           zone=zone_name(tmp_path), tls=tls_port, name=NAME,
           fb_cert=fb_cert, fb_key=fb_key)


def hello(port, sni, alpn, version=None):
    """(certificate served, protocol selected, the socket) of a handshake
    offering alpn, or the error it ended with.  The caller closes the
    socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
    except (ssl.SSLError, ConnectionError) as e:
        s.close()
        return e
    return (x509.load_der_x509_certificate(t.getpeercert(binary_form=True)),
            t.selected_alpn_protocol(), t)


def is_validation(cert, name):
    """Whether cert is a tls-alpn-01 validation certificate for name (a
    DNS name, or IP)."""
    try:
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return False
    san = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    names = [str(a) for a in san.get_values_for_type(x509.IPAddress)] + \
        san.get_values_for_type(x509.DNSName)
    # A critical OCTET STRING of SHA-256(key authorization).
    return ext.critical and ext.value.value[:2] == b"\x04\x20" and \
        len(ext.value.value) == 34 and names == [name]


def no_validation(port, sni):
    """A client offering acme-tls/1 for sni gets no validation
    certificate (an alert, or an ordinary one)."""
    got = hello(port, sni, ["acme-tls/1"])
    if isinstance(got, Exception):
        return True
    got[2].close()
    return not is_validation(got[0], sni)


def read_after_handshake(t):
    """What nginx sends after a request, until it closes."""
    t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
              % NAME.encode())
    t.settimeout(10)
    data = b""
    try:
        while True:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    finally:
        t.close()
    return data


def test_tls_alpn_through_nginx(tmp_path, pebble, nginx_factory,
                                sidecar_factory):
    proxy = CaProxy(pebble).start()
    try:
        port = pebble.tls_port
        fb_key, fb_cert = tmp_path / "fb.key", tmp_path / "fb.pem"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(fb_key),
                "-out", str(fb_cert), "-subj", "/CN=fallback.invalid",
                "-days", "1")
        fallback = fingerprint(fb_cert.read_text())
        nginx = nginx_factory()
        nginx.write(main_block(nginx.prefix, [MODULE]) + "http {\n" +
                    http_block_head(nginx.prefix) +
                    nginx_body(tmp_path, proxy, port, fb_cert, fb_key) +
                    "}\n")
        nginx.start([port])
        conf = tmp_path / "acme-sidecar.conf"
        conf.write_text("challenge_listen 127.0.0.1:%d;\n"
                        "control_socket %s;\n" %
                        (free_port(), tmp_path / "control.sock"))
        proxy.hold(CHALLENGE_PATH)
        sc = sidecar_factory(conf, [pebble])
        sc.start("--nginx-conf", str(nginx.conf))
        # Past the readiness check, which went through nginx: the CA is
        # told to validate, and that request waits at the proxy.
        for ident in (NAME, IP):
            sc.wait_log(r'"%s": \S+ -> challenge' %
                        ident.replace(".", r"\."), timeout=60)
        assert sc.log().count("readiness tls://127.0.0.1:%d (acme-tls/1) "
                              "answers (try " % port) == 2, sc.log()

        # What the CA sees, in TLS 1.3 and 1.2: the validation
        # certificate over acme-tls/1, then nothing: no HTTP response.
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            got = hello(port, NAME, ["acme-tls/1"], version)
            assert not isinstance(got, Exception), \
                "%r%s" % (got, nginx.diagnostics())
            cert, proto, t = got
            assert proto == "acme-tls/1"
            assert is_validation(cert, NAME), cert
            assert cert.issuer == cert.subject
            assert read_after_handshake(t) == b""

        # An address, under its reverse name (RFC 8738).
        got = hello(port, IP_SNI, ["acme-tls/1"])
        assert not isinstance(got, Exception), got
        got[2].close()
        assert got[1] == "acme-tls/1" and is_validation(got[0], IP)

        # Everybody else: the server's certificate (its fallback, before
        # the first issuance) and nginx's own ALPN.
        for extra in ((), ("-tls1_2",)):
            _, blocks, out = handshake(port, NAME, extra=extra)
            assert fingerprint(blocks[0]) == fallback, out
        for alpn, want in ((["h2", "http/1.1"], "h2"),
                           (["http/1.1"], "http/1.1")):
            cert, proto, t = hello(port, NAME, alpn)
            assert proto == want and fingerprint(cert.public_bytes(
                serialization.Encoding.PEM).decode()) == fallback
            if want == "http/1.1":
                assert b"hello from nginx" in read_after_handshake(t)
            t.close()
        # acme-tls/1 for a name with nothing pending, or no SNI at all.
        assert no_validation(port, OTHER)
        assert no_validation(port, None)

        proxy.release(CHALLENGE_PATH, True)
        sc.wait_certs(tmp_path / "state", [NAME, IP])
        deadline = time.monotonic() + 10
        while fingerprint(served_leaf(port, NAME)) == fallback:
            assert time.monotonic() < deadline, nginx.diagnostics()
            time.sleep(0.1)
        verify_served(port, NAME, pebble, tmp_path)
        # The authorization settled: nothing is served for it any more.
        assert no_validation(port, NAME)
        assert no_validation(port, IP_SNI)
        log = nginx.error_log()
        # Ours above (two), the readiness check's and the CA's.
        assert log.count('tls-alpn-01 validation certificate for "%s" '
                         'served' % NAME) >= 4, log
        assert sc.alive()
        assert sc.stop() == 0
    finally:
        proxy.stop()
