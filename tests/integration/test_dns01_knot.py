"""dns-01 end to end against a real authoritative DNS server: a dns_hook
that writes TXT records into knotd with nsupdate and a TSIG key, and
Pebble resolving through that knotd, so what Pebble validates is what
the hook published."""

import subprocess
import time

from conftest import cert_sans, openssl, split_pem, write_config, \
    ISSUE_TIMEOUT
from dnslib import KEY_NAME, bind_key, dns01_issuer, wait_backoff, \
    knot_factory  # noqa: F401

# The README's nsupdate hook, with the server and zone spelled out (the
# test's knotd is no resolver nsupdate would find by itself).
HOOK = """#!/bin/sh
# add|del FQDN VALUE, as dns_hook.c calls it.
case "$1" in
add) op="update add $2 60 TXT \\"$3\\"" ;;
del) op="update delete $2 TXT \\"$3\\"" ;;
*) exit 2 ;;
esac
printf 'server 127.0.0.1 %(port)d\\nzone %(zone)s\\n%%s\\nsend\\n' "$op" |
    nsupdate -t 5 -k %(key)s || exit
echo "hook $1 $2 done"
"""


def hook(tmp_path, name, knot, zone, key_file):
    path = tmp_path / name
    path.write_text(HOOK % {"port": knot.port, "zone": zone,
                            "key": key_file})
    path.chmod(0o755)
    return path


def test_dns01_nsupdate_into_knot(tmp_path, http_port, pebble_factory,
                                  knot_factory, sidecar_factory):
    """A wildcard plus apex certificate is issued through nsupdate into
    knotd, and its records are gone afterwards.  A hook with the wrong
    TSIG key, and one whose update the server refuses, each fail their
    own certificate with the server's answer in the log and the API,
    and leave nothing pending."""
    knot = knot_factory(refused=["refused.test"])
    pebble = pebble_factory(http_port, dns_server=knot.address)
    bad_key = tmp_path / "wrong-tsig.key"
    bad_key.write_text(bind_key(KEY_NAME, "A" * 43 + "="))
    good = hook(tmp_path, "good.sh", knot, "example.test", knot.key_file)
    wrong = hook(tmp_path, "wrong.sh", knot, "example.test", bad_key)
    refused = hook(tmp_path, "refused.sh", knot, "refused.test",
                   knot.key_file)

    state = tmp_path / "state"
    conf = tmp_path / "sidecar.conf"
    write_config(conf, pebble, state, http_port,
                 [(["*.example.test", "example.test"], None)],
                 issuer_extra="challenge dns-01;\n    dns_hook %s;\n"
                 "    dns_check %s;" % (good, knot.address))
    extra = (dns01_issuer("wrong", pebble, tmp_path,
                          "dns_hook %s timeout=20s" % wrong) +
             ["acme_certificate wrong wrong.example.test;"] +
             dns01_issuer("refused", pebble, tmp_path,
                          "dns_hook %s timeout=20s" % refused) +
             ["acme_certificate refused www.refused.test;"])
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
    done = "hook del _acme-challenge.example.test. done"
    deadline = time.monotonic() + 30
    while sidecar.log().count(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sidecar.log().count(done) == 2, sidecar.diagnostics()
    assert knot.txt("_acme-challenge.example.test") == []

    sock = tmp_path / "control.sock"
    for cid, hook_path, answer in (
            ("wrong.example.test", wrong, "update failed: NOTAUTH(BADSIG)"),
            # knotd answers an update its ACL denies with NOTAUTH and
            # the TSIG error BADKEY (the key is not one it accepts
            # there), not with REFUSED.
            ("www.refused.test", refused, "update failed: NOTAUTH(BADKEY)")):
        fqdn = "_acme-challenge.%s." % cid
        sidecar.wait_log(r'dns_hook %s add %s exited with status 2 '
                         r'\(its last line: "%s"\)' %
                         (hook_path, fqdn.replace(".", r"\."),
                          answer.replace("(", r"\(").replace(")", r"\)")),
                         timeout=30)
        got = wait_backoff(sock, cid)
        assert got["state"] == "backoff", got
        assert answer in got["last_error"]["message"], got
        assert knot.txt(fqdn) == []
    assert sidecar.alive()
    assert sidecar.stop() == 0
