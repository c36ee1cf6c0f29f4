"""tls-alpn-01 through nginx's stream ssl_preread, with the shipped
example: nginx holds the port Pebble's VA dials (its "tlsPort") and runs
conf/nginx-tls-alpn-stream.conf as shipped, with only its ports changed.
The CA's acme-tls/1 connections reach the sidecar's responder through
nginx; every other client reaches the https server behind it, during the
challenge as before it."""

import subprocess
from pathlib import Path

from ca_proxy import CaProxy
from conftest import ROOT, check_certificate, free_port
from nginxlib import http_block_head, main_block, nginx_factory
from test_tls_alpn import (ACME_IDENTIFIER, CHALLENGE_PATH, NAME, hello,
                           write_alpn_config)

from cryptography import x509

__all__ = ["nginx_factory"]

EXAMPLE = ROOT / "conf" / "nginx-tls-alpn-stream.conf"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def example_stream(tls_port, responder_port, https_port):
    """The example's stream{} with the test's ports."""
    text = EXAMPLE.read_text()
    for old, new in [("listen 443;", "listen 127.0.0.1:%d;" % tls_port),
                     ("listen [::]:443;\n", ""),
                     ("127.0.0.1:8443", "127.0.0.1:%d" % responder_port),
                     ("127.0.0.1:4443", "127.0.0.1:%d" % https_port)]:
        assert old in text, "%s no longer has %r" % (EXAMPLE, old)
        text = text.replace(old, new)
    return text


def https_server(prefix, port):
    """The site's https server{}, with a self-signed certificate of its
    own: what every client but the CA must keep getting."""
    key, crt = prefix / "site.key", prefix / "site.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=" + NAME,
                    "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    block = ("    server {\n"
             "        listen 127.0.0.1:%d ssl;\n"
             "        ssl_certificate %s;\n"
             "        ssl_certificate_key %s;\n"
             "        return 200 \"site\\n\";\n"
             "    }\n") % (port, crt, key)
    return block, x509.load_pem_x509_certificate(crt.read_bytes())


def test_tls_alpn_through_ssl_preread(tmp_path, pebble, http_port,
                                      nginx_factory, sidecar_factory):
    proxy = CaProxy(pebble).start()
    try:
        responder, https_port = free_port(), free_port()
        nginx = nginx_factory()
        nginx.prefix.mkdir(parents=True, exist_ok=True)
        server, site_cert = https_server(nginx.prefix, https_port)
        nginx.write(main_block(nginx.prefix, [STREAM_MODULE]) +
                    example_stream(pebble.tls_port, responder, https_port) +
                    "http {\n" + http_block_head(nginx.prefix) + server +
                    "}\n")
        nginx.start([pebble.tls_port, https_port])

        conf, state = write_alpn_config(tmp_path, proxy, http_port,
                                        responder)
        proxy.hold(CHALLENGE_PATH)
        sc = sidecar_factory(conf, [pebble]).start()
        sc.wait_log(r'"%s": \S+ -> challenge' % NAME.replace(".", r"\."),
                    timeout=60)

        # Through nginx's port, as the CA connects: the validation
        # certificate, over acme-tls/1.
        got = hello(pebble.tls_port, NAME, ["acme-tls/1"])
        assert not isinstance(got, Exception), \
            "%r\n%s%s" % (got, sc.diagnostics(), nginx.diagnostics())
        der, proto = got
        assert proto == "acme-tls/1"
        cert = x509.load_der_x509_certificate(der)
        assert cert.extensions.get_extension_for_oid(ACME_IDENTIFIER).critical

        # A browser during the challenge: the site, as before.
        for alpn in (["h2", "http/1.1"], None):
            got = hello(pebble.tls_port, NAME, alpn)
            assert not isinstance(got, Exception), got
            assert x509.load_der_x509_certificate(got[0]) == site_cert

        proxy.release(CHALLENGE_PATH, True)
        sc.wait_certs(state, [NAME, "127.0.0.1"])
        check_certificate(state, [NAME], None, pebble, tmp_path)
        # The CA's handshake went through nginx to the responder.
        assert sc.log().count("validation certificate served for " +
                              NAME) >= 3, sc.log()
        got = hello(pebble.tls_port, NAME, ["http/1.1"])
        assert x509.load_der_x509_certificate(got[0]) == site_cert
        assert sc.stop() == 0
    finally:
        proxy.stop()
