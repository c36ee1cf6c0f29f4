"""dns-01's propagation check: before the CA is told to validate, every
authoritative server of the zone must answer the new TXT value.  A
primary knotd takes the daemon's RFC 2136 updates (dns_update without
zone=, so the daemon asks the primary for the zone), secondaries
transfer from it without NOTIFY, so they lag until told to refresh, and
Pebble resolves through a secondary: without the check its validation
would fail."""

import re
import time
from pathlib import Path

from conftest import cert_sans, openssl, split_pem, write_config
from dnslib import api, dns01_issuer, wait_backoff, \
    knot_factory  # noqa: F401

CHECK_TIMEOUT = 15      # challenge_check timeout=, seconds


def wait_state(sock, cid, state, sidecar, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = api(sock, "/v1/certificates/" + cid)
        except ValueError:
            got = {}    # the control socket is not up yet
        if got.get("state") == state:
            return got
        assert time.monotonic() < deadline, (got, sidecar.diagnostics())
        time.sleep(0.1)


def test_dns01_waits_for_every_server(tmp_path, http_port, pebble_factory,
                                      knot_factory, sidecar_factory):
    """The order waits in ready-check, with no challenge sent to Pebble,
    while the secondary lags; once the secondary refreshed, the
    certificate is issued and verifies.  A secondary that never gets
    the record fails its order naming it and what it answers; a
    dns_update SERVER that is not authoritative for the name fails its
    order saying so; without dns_check, the zone's NS set (its glue
    address, port 53) is what is asked.  A TXT answer too large for UDP
    is asked again over TCP."""
    primary = knot_factory("primary", zones=["example.test"])
    # Older values, transferred to the secondaries at their start: with
    # the new one, more than the 512 bytes of a UDP answer without EDNS.
    big = "_acme-challenge.big.example.test."
    primary.update("example.test", *["update add %s 60 TXT \"%s\"" %
                                     (big, str(i) * 200) for i in range(4)])
    lagging = knot_factory("lagging", zones=["example.test"],
                           primary=primary)
    never = knot_factory("never", zones=["example.test"], primary=primary)
    pebble = pebble_factory(http_port, dns_server=lagging.address)

    state = tmp_path / "state"
    conf = tmp_path / "sidecar.conf"
    update = "dns_update %s key=%s" % (primary.address, primary.key_file)
    write_config(conf, pebble, state, http_port, [(["lag.example.test"],
                                                   None)],
                 issuer_extra="challenge dns-01;\n    %s;\n"
                 "    dns_check %s %s;" % (update, primary.address,
                                           lagging.address))
    both = "dns_check %s %s" % (primary.address, lagging.address)
    extra = (dns01_issuer("big", pebble, tmp_path, update + ";\n    " + both) +
             ["acme_certificate big big.example.test;"] +
             dns01_issuer("never", pebble, tmp_path, update +
                          ";\n    dns_check %s %s" % (primary.address,
                                                      never.address)) +
             ["acme_certificate never never.example.test;"] +
             dns01_issuer("other", pebble, tmp_path, update) +
             ["acme_certificate other www.other.test;"] +
             # No dns_check: the zone's NS set, from the primary.
             dns01_issuer("nsset", pebble, tmp_path, update +
                          " zone=example.test") +
             ["acme_certificate nsset nsset.example.test;",
              "challenge_check timeout=%ds;" % CHECK_TIMEOUT])
    with open(conf, "a") as f:
        f.write("\n".join(extra) + "\n")

    sidecar = sidecar_factory(conf, [pebble]).start()
    sock = tmp_path / "control.sock"
    fqdn = "_acme-challenge.lag.example.test."
    wait_state(sock, "lag.example.test", "ready-check", sidecar)
    wait_state(sock, "big.example.test", "ready-check", sidecar)
    # The record is on the primary, the daemon found its zone by itself.
    assert len(primary.txt(fqdn)) == 1, sidecar.diagnostics()
    assert lagging.txt(fqdn) == []
    sidecar.wait_log(r"dns_update add %s: %s names zone example\.test\." %
                     (fqdn.replace(".", r"\."), primary.address))
    # The check asked both servers and found the secondary lagging.
    sidecar.wait_log(r"readiness TXT %s: %s lags: it answers no TXT for "
                     r"%s" % (fqdn.replace(".", r"\."),
                                            lagging.address,
                                            fqdn.replace(".", r"\.")))
    assert api(sock, "/v1/certificates/lag.example.test")["state"] == \
        "ready-check", sidecar.diagnostics()
    pebble_log = Path(pebble.path("pebble.log"))
    assert "POST /chalZ/" not in pebble_log.read_text(), \
        sidecar.diagnostics()

    lagging.refresh()
    sidecar.wait_certs(state, ["lag.example.test"])
    # The large answer was read over TCP and the check passed.  (Pebble
    # 2.4's own resolver does not retry over TCP: its validation of this
    # one fails, which is Pebble's limit, not the daemon's.)
    sidecar.wait_log(r"dns query %s 16 at %s: udp -> tcp" %
                     (big.replace(".", r"\."), lagging.address))
    sidecar.wait_log(r"readiness TXT %s answers" % big.replace(".", r"\."))
    chain = split_pem((state / "certs" / "lag.example.test" /
                       "fullchain.pem").read_text())
    leaf, rest = tmp_path / "leaf.pem", tmp_path / "chain.pem"
    leaf.write_text(chain[0])
    rest.write_text("".join(chain[1:]))
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted", str(rest),
                str(leaf), check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    assert cert_sans(chain[0]) == {"DNS:lag.example.test"}
    assert "readiness TXT %s answers" % fqdn in sidecar.log()
    # The record is removed from the zone found for its "add": SERVER is
    # asked for it once.
    sidecar.wait_log(r'TXT %s "[^"]+" removed' % fqdn.replace(".", r"\."))
    assert primary.txt(fqdn) == []
    assert sidecar.log().count("%s: %s names zone" %
                               (fqdn, primary.address)) == 1, \
        sidecar.diagnostics()

    got = wait_backoff(sock, "never.example.test", timeout=CHECK_TIMEOUT + 20)
    assert got["state"] == "backoff", got
    assert ("readiness check: TXT _acme-challenge.never.example.test. for "
            "never.example.test: %s lags: it answers no TXT for "
            "_acme-challenge.never.example.test. (NXDOMAIN) after"
            % never.address
            in got["last_error"]["message"]), got
    assert "the CA was not asked to validate" in \
        got["last_error"]["message"], got

    got = wait_backoff(sock, "www.other.test")
    assert got["state"] == "backoff", got
    assert ("dns_update: %s is not authoritative for "
            "_acme-challenge.www.other.test. (it answers REFUSED)"
            % primary.address in got["last_error"]["message"]), got

    # The NS set: ns.example.test. with its glue, 127.0.0.1, on port 53,
    # where no server of the zone listens.
    got = wait_backoff(sock, "nsset.example.test")
    assert got["state"] == "backoff", got
    assert ("readiness check: TXT _acme-challenge.nsset.example.test. for "
            "nsset.example.test: ns.example.test. 127.0.0.1:53 lags: "
            in got["last_error"]["message"]), got

    # Pebble validated the two challenges that were ready, no other.
    text = pebble_log.read_text()
    validated = set(re.findall(r'Pulled a task .*Value:"([^"]+)"', text))
    assert validated == {"lag.example.test", "big.example.test"}, text
    assert sidecar.alive()
    assert sidecar.stop() == 0
