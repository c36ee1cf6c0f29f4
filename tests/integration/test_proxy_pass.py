"""HTTP-01 through nginx's proxy_pass, with the shipped example.

nginx holds the port Pebble dials for HTTP-01 and runs
conf/nginx-proxy-pass.conf as it is shipped, with only its ports changed;
the sidecar's responder listens elsewhere.  The certificate can only be
issued if nginx passed the challenges on.
"""

from pathlib import Path

from conftest import ROOT, check_certificate, free_port, write_config
from nginxlib import http_block_head, http_get, main_block, nginx_factory

__all__ = ["nginx_factory"]

EXAMPLE = ROOT / "conf" / "nginx-proxy-pass.conf"


def example_server(http_port, responder_port):
    text = EXAMPLE.read_text()
    for old, new in [("listen 80;", "listen 127.0.0.1:%d;" % http_port),
                     ("listen [::]:80;\n", ""),
                     ("127.0.0.1:8081", "127.0.0.1:%d" % responder_port)]:
        assert old in text, "%s no longer has %r" % (EXAMPLE, old)
        text = text.replace(old, new)
    return text


def test_challenges_through_proxy_pass(tmp_path, pebble, http_port,
                                       nginx_factory, sidecar_factory):
    responder = free_port()
    nginx = nginx_factory()
    nginx.write(main_block(nginx.prefix) + "http {\n" +
                http_block_head(nginx.prefix) +
                example_server(http_port, responder) + "}\n")
    nginx.start([http_port])

    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    names = ["proxied.example.test", "www.proxied.example.test"]
    write_config(conf, pebble, state, responder, [(names, None)])
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, [names[0]])
    check_certificate(state, names, None, pebble, tmp_path)

    # The CA really went through nginx: its responder saw the requests
    # that nginx passed on, and nginx answers the rest itself.
    status, _ = http_get(http_port, "/.well-known/acme-challenge/gone",
                         host=names[0])
    assert status == 404
    status, _ = http_get(http_port, "/", host=names[0])
    assert status == 301
