"""Issuance against a real Pebble, driven through the real daemon."""

import re
import signal
import time
from pathlib import Path

import pytest

from conftest import (cert_id, cert_serial, check_account, check_certificate,
                      free_port, split_pem, write_config)

CERTS = [
    (["a.example.test", "b.example.test"], None),     # ECDSA P-256, 2 SANs
    (["c.example.test"], "rsa:2048"),
    (["d.example.test"], "ecdsa:384"),
]


def ids(certs):
    return [cert_id(n, k) for n, k in certs]


def serials(state, certs):
    out = {}
    for cid in ids(certs):
        pem = (Path(state) / "certs" / cid / "fullchain.pem").read_text()
        out[cid] = cert_serial(split_pem(pem)[0])
    return out


@pytest.fixture
def setup(tmp_path, pebble, http_port, sidecar_factory):
    """A running Pebble, a config for CERTS and an unstarted daemon."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble, state, http_port, CERTS)
    return pebble, state, conf, sidecar_factory(conf, [pebble])


def test_issue_certificates(tmp_path, setup):
    pebble, state, conf, sidecar = setup
    sidecar.start()
    sidecar.wait_certs(state, ids(CERTS))
    for names, key in CERTS:
        check_certificate(state, names, key, pebble, tmp_path)
    check_account(state)
    for cid in ids(CERTS):
        sidecar.wait_log(r'certificate "%s" issued' % re.escape(cid))
    assert sidecar.stop() == 0


def test_restart_reissues_nothing(setup):
    pebble, state, conf, sidecar = setup
    sidecar.start()
    sidecar.wait_certs(state, ids(CERTS))
    before_key = (state / "account.key").read_bytes()
    before_url = (state / "account.url").read_text()
    before = serials(state, CERTS)
    assert sidecar.stop() == 0, "SIGTERM must exit 0" + sidecar.diagnostics()

    sidecar.start()
    # Each certificate is loaded and scheduled for renewal years ahead,
    # the account is ready and the zone serves all three: a daemon that
    # meant to order again would have begun by then.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for cid in ids(CERTS):
        m = sidecar.wait_log(r'certificate "%s" valid until \S+, renewal '
                             r'at (\S+)' % re.escape(cid))
        assert m.group(1) > now, m.group(0)
    sidecar.wait_log(r'issuer "pebble": account \S+ ready')
    sidecar.wait_log(r"shared zone: generation \d+, %d certificates" %
                     len(CERTS))
    assert "ordering from" not in sidecar.log(), sidecar.diagnostics()
    assert (state / "account.key").read_bytes() == before_key
    assert (state / "account.url").read_text() == before_url
    assert serials(state, CERTS) == before, "a certificate was re-issued"
    assert not re.search(r'certificate "[^"]+" issued', sidecar.log()), \
        "restart issued again:" + sidecar.diagnostics()
    assert sidecar.stop() == 0


def test_bad_nonces(tmp_path, pebble_factory, http_port, sidecar_factory):
    """Pebble rejects 30% of good nonces; badNonce must be retried."""
    pebble = pebble_factory(http_port,
                            env={"PEBBLE_WFE_NONCEREJECT": "30"})
    certs = [(["n%d.example.test" % i], "rsa:2048" if i % 3 == 0 else None)
             for i in range(6)]
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble, state, http_port, certs)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ids(certs), timeout=90)
    for names, key in certs:
        check_certificate(state, names, key, pebble, tmp_path)
    assert sidecar.stop() == 0


def test_ca_down_then_up(tmp_path, pebble_factory, http_port,
                         sidecar_factory):
    """Nothing listens at the issuer's URL yet: the daemon warns, backs
    off instead of spinning, and issues once the CA comes up."""
    pebble = pebble_factory(http_port, listen_port=free_port(), start=False)
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    certs = [(["late.example.test"], None)]
    write_config(conf, pebble, state, http_port, certs, issuer="localca")
    sidecar = sidecar_factory(conf, [pebble]).start()

    m = sidecar.wait_log(r".*retrying in.*", timeout=10)
    line = m.group(0)
    assert "localca" in line, "the warning must name the issuer: " + line
    assert re.search(r"refused|connect|unreachable|reset|timed? ?out",
                     line, re.I), "the warning must name the cause: " + line

    def count():
        return len(re.findall(r"retrying in", sidecar.log()))

    n0 = count()
    time.sleep(5)
    n1 = count()
    assert n1 - n0 <= 8, (
        "%d retries in 5 s: the daemon is not backing off%s" %
        (n1 - n0, sidecar.diagnostics()))

    pebble.start()
    sidecar.wait_certs(state, ids(certs), timeout=90)
    check_certificate(state, certs[0][0], None, pebble, tmp_path)
    assert sidecar.stop() == 0


def test_sighup_adds_certificate(tmp_path, setup, http_port):
    pebble, state, conf, sidecar = setup
    sidecar.start()
    sidecar.wait_certs(state, ids(CERTS))
    before = serials(state, CERTS)

    new = (["e.example.test", "f.example.test"], None)
    write_config(conf, pebble, state, http_port, CERTS + [new])
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_certs(state, ids([new]))
    check_certificate(state, new[0], new[1], pebble, tmp_path)
    assert serials(state, CERTS) == before, \
        "reload re-issued an unchanged certificate"
    assert sidecar.alive()
    assert sidecar.stop() == 0
