"""dns-01 through the daemon's own RFC 2136 updates (dns_update): TSIG
signed UPDATE messages built by ldns, sent to a real knotd, and Pebble
resolving through that knotd, so what Pebble validates is what the
daemon published."""

import subprocess
import time

from conftest import cert_sans, free_port, openssl, split_pem, \
    write_config, ISSUE_TIMEOUT
from dnslib import KEY_NAME, bind_key, dns01_issuer, wait_backoff, \
    knot_factory  # noqa: F401


def test_dns01_update_into_knot(tmp_path, http_port, pebble_factory,
                                knot_factory, sidecar_factory):
    """A wildcard plus apex certificate is issued through the daemon's
    TSIG-signed updates into knotd, and its records are gone afterwards.
    A wrong TSIG key, and a zone whose updates the server denies, each
    fail their own certificate with knotd's real answer, naming the
    server and the key, and leave nothing pending; so does a server
    that never answers, after the three tries."""
    knot = knot_factory(refused=["refused.test"])
    pebble = pebble_factory(http_port, dns_server=knot.address)
    bad_key = tmp_path / "wrong-tsig.key"
    bad_key.write_text(bind_key(KEY_NAME, "A" * 43 + "="))
    server = "127.0.0.1:%d" % knot.port
    silent = "127.0.0.1:%d" % free_port(udp_too=True)

    state = tmp_path / "state"
    conf = tmp_path / "sidecar.conf"
    write_config(conf, pebble, state, http_port,
                 [(["*.example.test", "example.test"], None)],
                 issuer_extra="challenge dns-01;\n    dns_update %s "
                 "key=%s zone=example.test;\n    dns_check %s;"
                 % (server, knot.key_file, server))
    extra = (dns01_issuer("wrong", pebble, tmp_path,
                          "dns_update %s key=%s zone=example.test"
                          % (server, bad_key)) +
             ["acme_certificate wrong wrong.example.test;"] +
             dns01_issuer("refused", pebble, tmp_path,
                          "dns_update %s key=%s zone=refused.test"
                          % (server, knot.key_file)) +
             ["acme_certificate refused www.refused.test;"] +
             dns01_issuer("silent", pebble, tmp_path,
                          "dns_update %s key=%s zone=example.test"
                          % (silent, knot.key_file)) +
             ["acme_certificate silent silent.example.test;"])
    with open(conf, "a") as f:
        f.write("\n".join(extra) + "\n")

    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ["_.example.test"], ISSUE_TIMEOUT)
    chain = split_pem((state / "certs" / "_.example.test" /
                       "fullchain.pem").read_text())
    leaf, rest = tmp_path / "leaf.pem", tmp_path / "chain.pem"
    leaf.write_text(chain[0])
    rest.write_text("".join(chain[1:]))
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted", str(rest),
                str(leaf), check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    assert cert_sans(chain[0]) == {"DNS:*.example.test", "DNS:example.test"}

    # Both authorizations' records were removed from the server.
    def removed():
        return [ln for ln in sidecar.log().splitlines()
                if 'TXT _acme-challenge.example.test. "' in ln and
                ln.rstrip().endswith('" removed')]
    deadline = time.monotonic() + 30
    while len(removed()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(removed()) == 2, sidecar.diagnostics()
    assert knot.txt("_acme-challenge.example.test") == []

    sock = tmp_path / "control.sock"
    for cid, tsig_error in (("wrong.example.test", "BADSIG"),
                            # knotd answers an update its ACL denies with
                            # NOTAUTH and the TSIG error BADKEY.
                            ("www.refused.test", "BADKEY")):
        fqdn = "_acme-challenge.%s." % cid
        why = ("dns_update: %s refused our TSIG key %s (NOTAUTH, %s)" %
               (server, KEY_NAME, tsig_error))
        got = wait_backoff(sock, cid)
        assert got["state"] == "backoff", got
        assert why in got["last_error"]["message"], got
        assert knot.txt(fqdn) == []
    assert why in sidecar.log()
    got = wait_backoff(sock, "silent.example.test")
    assert got["state"] == "backoff", got
    assert ("dns_update: no answer from %s in 6 s" % silent in
            got["last_error"]["message"]), got
    assert sidecar.alive()
    assert sidecar.stop() == 0


def test_dns01_update_config_errors(tmp_path, sidecar_bin):
    """acme-sidecar -t names the line of a dns_update whose key file is
    not a TSIG key, and of one beside a dns_hook, and exits 1."""
    key = tmp_path / "not-a-key"
    key.write_text("secret=abc\n")
    for lines, line, message in (
            (["    dns_update 127.0.0.1:53 key=%s zone=a.test;" % key], 5,
             'TSIG key file %s: no key "NAME" { ... } statement' % key),
            (["    dns_hook /bin/true;",
              "    dns_update 127.0.0.1 key=%s zone=a.test;" % key], 6,
             '"dns_hook" and "dns_update" in one issuer: it publishes '
             'through one of them')):
        conf = tmp_path / "sidecar.conf"
        conf.write_text("\n".join(
            ["acme_issuer le {",
             "    uri https://127.0.0.1:1/dir;",
             "    state_path %s;" % (tmp_path / "state"),
             "    challenge dns-01;"] + lines +
            ["}", "acme_certificate le *.a.test;"]) + "\n")
        p = subprocess.run([str(sidecar_bin), "-t", "-c", str(conf)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "%s:%d: %s" % (conf, line, message) in p.stderr, p.stderr
