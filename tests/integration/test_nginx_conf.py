"""The sidecar configured by nginx.conf (--nginx-conf, nginx_config).

The nginx.conf is laid out as on Debian: a main file that includes
conf.d/*.conf inside http{}, and conf.d/acme.conf holding the seed's "Full
example" pointed at the test's Pebble.  Its state_path is relative, so it
also shows that nginx.conf's paths resolve against the main file's folder.
The sidecar's own file only moves the HTTP-01 responder and the control
socket into the test's ports and folder.
"""

import re
import signal
import subprocess
from pathlib import Path

from conftest import (cert_serial, check_account, check_certificate,
                      split_pem, zone_name)

SEED_NAMES = ["example.test", "www.example.test"]


def write(path, text):
    """Atomically, so a reload never reads half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)
    return path


def seed_conf(pebble, zone, server_name=".example.test", issuer="pebble"):
    """The seed's Full example, with uri and CA pointed at Pebble."""
    return """resolver 127.0.0.1:53;

acme_issuer pebble {
    uri         %s;
    # contact   admin@example.test;
    state_path  acme-state;
    accept_terms_of_service;
    ssl_trusted_certificate %s;
}

acme_shared_zone zone=%s:1M;

server {
    listen 443 ssl;
    server_name  %s;

    acme_certificate %s;

    ssl_certificate       $acme_certificate;
    ssl_certificate_key   $acme_certificate_key;

    # do not parse the certificate on each request
    ssl_certificate_cache max=2;
}

server {
    # listener on port 80 is required to process ACME HTTP-01 challenges
    listen 80;

    location / {
        return 404;
    }
}
""" % (pebble.directory_url, pebble.ca, zone, server_name, issuer)


# Line numbers in seed_conf(), for the error messages.
SERVER_NAME_LINE = 15
ACME_CERTIFICATE_LINE = 17

NGINX_CONF = """user root;
worker_processes 1;
events {
    worker_connections 64;
}
http {
    include conf.d/*.conf;
}
"""


def nginx_tree(tmp_path, pebble, **kw):
    """nginx/nginx.conf and nginx/conf.d/acme.conf; returns nginx.conf."""
    d = tmp_path / "nginx"
    (d / "conf.d").mkdir(parents=True, exist_ok=True)
    write(d / "conf.d" / "acme.conf",
          seed_conf(pebble, zone_name(tmp_path), **kw))
    return write(d / "nginx.conf", NGINX_CONF)


def sidecar_conf(tmp_path, http_port, extra=""):
    """No nginx runs on the seed's port 80: Pebble's requests go to the
    sidecar's own responder, and so does the readiness check."""
    return write(tmp_path / "acme-sidecar.conf",
                 "challenge_listen 127.0.0.1:%d;\n"
                 "challenge_check 127.0.0.1:%d;\n"
                 "control_socket %s;\n%s" %
                 (http_port, http_port, tmp_path / "control.sock", extra))


def run_t(sidecar_bin, *args):
    return subprocess.run([str(sidecar_bin), "-t", *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=30)


def serial(state, cid):
    pem = (Path(state) / "certs" / cid / "fullchain.pem").read_text()
    return cert_serial(split_pem(pem)[0])


def test_nginx_conf_issues_seed_certificate(tmp_path, pebble, http_port,
                                            sidecar_factory):
    nginx = nginx_tree(tmp_path, pebble)
    state = tmp_path / "nginx" / "acme-state"
    conf = sidecar_conf(tmp_path, http_port)
    sidecar = sidecar_factory(conf, [pebble]).start("--nginx-conf", nginx)
    sidecar.wait_certs(state, ["example.test"])
    check_certificate(state, SEED_NAMES, None, pebble, tmp_path)
    check_account(state)
    sidecar.wait_log(r'certificate "example\.test" issued')
    assert sidecar.stop() == 0


def test_t_nginx_conf(tmp_path, pebble, http_port, sidecar_bin):
    nginx = nginx_tree(tmp_path, pebble)
    # --nginx-conf alone: the sidecar's own file is not needed.
    p = run_t(sidecar_bin, "--nginx-conf", nginx)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "the configuration file %s syntax is ok" % nginx in out, out
    assert "configuration file %s test is successful" % nginx in out, out

    conf = sidecar_conf(tmp_path, http_port)
    p = run_t(sidecar_bin, "-c", conf, "--nginx-conf", nginx)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    for f in (conf, nginx):
        assert "the configuration file %s syntax is ok" % f in out, out
        assert "configuration file %s test is successful" % f in out, out

    # A wildcard server_name the certificate relies on.
    acme = tmp_path / "nginx" / "conf.d" / "acme.conf"
    write(acme, seed_conf(pebble, zone_name(tmp_path),
                          server_name="example.test *.example.test"))
    p = run_t(sidecar_bin, "--nginx-conf", nginx)
    assert p.returncode == 1, p.stdout + p.stderr
    assert ('%s:%d: wildcard identifier "*.example.test" needs challenge '
            'dns-01' % (acme, SERVER_NAME_LINE)) in p.stderr, p.stderr
    assert "configuration file %s test failed" % nginx in p.stderr
    assert "successful" not in p.stdout + p.stderr

    # An issuer nginx.conf does not define, through nginx_config.
    write(acme, seed_conf(pebble, zone_name(tmp_path), issuer="nosuch"))
    sidecar_conf(tmp_path, http_port, "nginx_config nginx/nginx.conf;\n")
    p = run_t(sidecar_bin, "-c", conf)
    assert p.returncode == 1, p.stdout + p.stderr
    assert ('%s:%d: unknown acme_issuer "nosuch"' %
            (acme, ACME_CERTIFICATE_LINE)) in p.stderr, p.stderr
    assert "configuration file %s test failed" % conf in p.stderr


def test_sighup_rereads_nginx_conf(tmp_path, pebble, http_port,
                                   sidecar_factory):
    """nginx_config in the sidecar's file; SIGHUP reads nginx.conf again,
    refuses a broken one and issues for a server{} added to it."""
    nginx_tree(tmp_path, pebble)
    state = tmp_path / "nginx" / "acme-state"
    conf = sidecar_conf(tmp_path, http_port,
                        "nginx_config nginx/nginx.conf;\n")
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ["example.test"])
    before = serial(state, "example.test")

    new = tmp_path / "nginx" / "conf.d" / "new.conf"
    write(new, "server {\n    listen 443 ssl;\n"
               "    server_name new.example.test\n}\n")
    mark = sidecar.mark()
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_log(r"reload refused.*%s:4: unexpected \"}\"" %
                     re.escape(str(new)), since=mark)
    assert sidecar.alive()

    write(new, "server {\n    listen 443 ssl;\n"
               "    server_name new.example.test;\n"
               "    acme_certificate pebble key=rsa:2048;\n}\n")
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_certs(state, ["new.example.test_rsa2048"])
    check_certificate(state, ["new.example.test"], "rsa:2048", pebble,
                      tmp_path)
    assert serial(state, "example.test") == before, \
        "the reload re-issued an unchanged certificate"
    assert sidecar.stop() == 0
