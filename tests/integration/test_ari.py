"""ACME Renewal Information (RFC 9773) and "replaces", on the wire.

The fake CA (fake_acme.py) serves the windows these tests need and counts
the renewalInfo fetches; Pebble 2.6 (trixie's, build/pebble-2.6) is the
real CA that computes windows and records replacements.
"""

import json
import os
import re
import subprocess
import time

from conftest import (ROOT, openssl, pebble26_links, split_pem,
                      write_config)

FAR = 30 * 86400


def cert_id_of(pem):
    """RFC 9773 CertID of a PEM certificate, computed apart from the
    daemon: base64url(AKI keyIdentifier) "." base64url(serial DER
    content octets)."""
    from fake_acme import b64u_encode
    text = openssl("x509", "-noout", "-text", input=pem).stdout
    m = re.search(r"Authority Key Identifier:\s*\n\s*(?:keyid:)?"
                  r"([0-9A-F:]+)", text)
    assert m, text
    aki = bytes.fromhex(m.group(1).replace(":", ""))
    serial = int(openssl("x509", "-noout", "-serial",
                         input=pem).stdout.strip().split("=")[1], 16)
    der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return b64u_encode(aki) + "." + b64u_encode(der)


def api_cert(run, cid):
    out = subprocess.run(
        ["curl", "-s", "--unix-socket", str(run.tmp / "control.sock"),
         "http://localhost/v1/certificates/" + cid],
        stdout=subprocess.PIPE, text=True, timeout=10).stdout
    return json.loads(out)


def test_ari_window_respected_and_fetched_once(run, fake):
    """The renewal lands inside the window renewalInfo suggested, with
    "replaces" naming the certificate it replaces; a Retry-After of one
    second is clamped, so the CA is asked once."""
    t0 = time.time()
    first = {}

    def ari(cid):
        first.setdefault("id", cid)
        if cid == first["id"]:
            return (int(t0) + 5, int(t0) + 9, {"Retry-After": "1"},
                    "https://ca.example/why")
        return (int(t0) + FAR, int(t0) + FAR + 86400, {}, None)
    fake.ari = ari
    run.start([["a.example"]])
    run.wait_issued("a.example")
    cid = cert_id_of(run.leaf("a.example"))
    info = run.wait(lambda: (lambda c: c if c["renewal"]["source"] == "ari"
                             else None)(api_cert(run, "a.example")),
                    10, "renewal source ari")
    r = info["renewal"]
    run.check(r["ari_cert_id"] == cid, "CertID %s, expected %s" %
              (r["ari_cert_id"], cid))
    run.check(r["ari_explanation_url"] == "https://ca.example/why", str(r))
    run.check(r["ari_next_fetch"] is not None, str(r))
    run.wait(lambda: len(fake.new_orders()) >= 2, 20, "the renewal")
    renewal = fake.requests("/new-order", "POST")[1]
    wall = time.time() - (time.monotonic() - renewal.t)
    run.check(int(t0) + 5 - 1 <= wall <= int(t0) + 9 + 2,
              "renewal at %.1f, window %d..%d" %
              (wall, int(t0) + 5, int(t0) + 9))
    run.check(renewal.payload.get("replaces") == cid,
              "replaces %r, expected %r" %
              (renewal.payload.get("replaces"), cid))
    run.check(len(fake.ari_fetches(cid)) == 1,
              "%d renewalInfo fetches of %s" %
              (len(fake.ari_fetches(cid)), cid))
    run.check(run.sidecar.log().count("explains its renewal window") >= 1,
              "explanationURL not logged")


def test_ari_past_window_renews_now_also_after_restart(run, fake):
    """A window in the past (as for a revoked certificate) renews at
    once.  Refused the first time, the renewal is due again at the
    restart from what state_path kept, without asking the CA again; a
    CA that refuses "replaces" gets the order again without it."""
    first = {}

    def ari(cid):
        first.setdefault("id", cid)
        now = int(time.time())
        if cid == first["id"]:
            return (now - 3600, now - 1800, {"Retry-After": "21600"}, None)
        return (now + FAR, now + FAR + 86400, {}, None)
    fake.ari = ari
    fake.on("/new-order", lambda req: None if "replaces" not in req.payload
            else __import__("fake_acme").problem(403, "unauthorized",
                                                 "not now"), times=1)
    run.start([["b.example"]])
    run.wait_issued("b.example")
    cid = cert_id_of(run.leaf("b.example"))
    run.wait_log(r"newOrder: HTTP 403", 10)
    run.sidecar.stop()
    run.check(len(fake.new_orders()) == 2, "orders: %s" % fake.new_orders())

    from fake_acme import problem
    fake.on("/new-order", lambda req: None if "replaces" not in req.payload
            else problem(409, "alreadyReplaced", "b is replaced already"),
            times=1)
    run.sidecar.start()
    t1 = time.monotonic()
    run.wait(lambda: len(fake.new_orders()) >= 4, 10,
             "a renewal at once after the restart")
    orders = fake.requests("/new-order", "POST")
    run.check(orders[2].t - t1 < 5, "renewal %.1fs after the restart" %
              (orders[2].t - t1))
    run.check(orders[2].payload.get("replaces") == cid, str(orders[2]))
    run.check("replaces" not in orders[3].payload, str(orders[3]))
    run.wait_log(r"refused \"replaces\"", 5)
    run.wait(lambda: run.sidecar.log().count("issued, valid until") >= 1,
             20, "the renewed certificate")
    run.check(cert_id_of(run.leaf("b.example")) != cid, "not renewed")
    run.check(len(fake.ari_fetches(cid)) == 1,
              "%d renewalInfo fetches of %s across a restart" %
              (len(fake.ari_fetches(cid)), cid))


def test_ari_replaces_server_error_orders_without_it(run, fake):
    """A CA that fails on "replaces" (Pebble 2.6 answers 500 when the
    serial's first byte has its high bit set) does not block the renewal:
    the daemon orders again at once without it."""
    from fake_acme import problem
    first = {}

    def ari(cid):
        first.setdefault("id", cid)
        now = int(time.time())
        if cid == first["id"]:
            return (now - 3600, now - 1800, {}, None)
        return (now + FAR, now + FAR + 86400, {}, None)
    fake.ari = ari
    fake.on("/new-order", lambda req: None if "replaces" not in req.payload
            else problem(500, "serverInternal", "could not find an order "
                         "for the given certificate"), times=1)
    run.start([["s.example"]])
    run.wait_issued("s.example")
    cid = cert_id_of(run.leaf("s.example"))
    run.wait(lambda: len(fake.new_orders()) >= 3, 10,
             "the renewal's two orders")
    orders = fake.requests("/new-order", "POST")
    run.check(orders[1].payload.get("replaces") == cid, str(orders[1]))
    run.check("replaces" not in orders[2].payload, str(orders[2]))
    run.check(orders[2].t - orders[1].t < 2, "ordered again %.1fs later" %
              (orders[2].t - orders[1].t))
    run.wait_log(r"newOrder refused \"replaces\" \(HTTP 500", 5)
    run.wait(lambda: run.sidecar.log().count("issued, valid until") >= 2,
             20, "the renewed certificate")
    run.check(cert_id_of(run.leaf("s.example")) != cid, "not renewed")


def test_ari_failed_fetch_falls_back_to_lifetime(run, fake):
    """renewalInfo failing never blocks issuance: the lifetime rule, and
    the renewal time drawn at issuance stays (a failed fetch does not
    draw another)."""
    fake.ari = lambda cid: None         # 404 for every CertID
    run.start([["c.example"]])
    run.wait_issued("c.example")
    run.wait_log(r"renewalInfo: HTTP 404.*renewing by its lifetime", 10)
    info = api_cert(run, "c.example")
    run.check(info["renewal"]["source"] == "lifetime", str(info))
    run.check(info["renewal"]["ari_window"] is None, str(info))
    drawn = re.findall(r'"c\.example" valid until \S+, renewal at (\S+) ',
                       run.sidecar.log())
    run.check(len(drawn) == 1 and info["renewal"]["at"][:19] ==
              drawn[0][:19], "renewal times %s, API %s" %
              (drawn, info["renewal"]["at"]))


def pebble_replacements(pebble):
    with open(pebble.path("pebble.log"), errors="replace") as f:
        return len(re.findall(r"ARI: order .* is a replacement of",
                              f.read()))


def test_ari_pebble26(pebble26, http_port, tmp_path, sidecar_factory):
    """Against Pebble 2.6: its window is the one shown, and every
    renewal, asked (acmectl renew) or after a revocation, replaces."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble26, state, http_port, [(["p.example"], None)])
    sc = sidecar_factory(conf, [pebble26]).start()
    sc.wait_certs(state, ["p.example"])

    class R:
        tmp = tmp_path
    deadline = time.monotonic() + 10
    while True:
        info = api_cert(R, "p.example")
        if info["renewal"]["source"] == "ari":
            break
        assert time.monotonic() < deadline, (info, sc.diagnostics())
        time.sleep(0.2)
    leaf = split_pem((state / "certs" / "p.example" /
                      "fullchain.pem").read_text())[0]
    cid = cert_id_of(leaf)
    assert info["renewal"]["ari_cert_id"] == cid, info
    want = json.loads(pebble26.get(
        json.loads(pebble26.get(pebble26.directory_url))["renewalInfo"] +
        "/" + cid))["suggestedWindow"]
    w = info["renewal"]["ari_window"]
    assert w["start"][:19] == want["start"][:19], (w, want)
    assert w["start"] <= info["renewal"]["at"] <= w["end"], info

    ctl = [os.environ.get("ACMECTL", str(ROOT / "build" / "acmectl")),
           "-s", str(tmp_path / "control.sock")]

    def stored():
        return cert_id_of(split_pem((state / "certs" / "p.example" /
                                     "fullchain.pem").read_text())[0])
    # Pebble records a replacement only where it finds the certificate
    # replaced (conftest.pebble26_links); else the daemon ordered again
    # without "replaces".
    subprocess.run(ctl + ["renew", "p.example"], check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    renewed = wait_for("the renewal", lambda: stored() != cid and stored(),
                       sc)
    linked = int(pebble26_links(cid))
    assert pebble_replacements(pebble26) == linked, sc.diagnostics()
    assert linked or 'refused "replaces"' in sc.log(), sc.diagnostics()
    subprocess.run(ctl + ["revoke", "p.example"], check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    wait_for("the renewal after the revocation",
             lambda: stored() != renewed, sc)
    linked += int(pebble26_links(renewed))
    assert pebble_replacements(pebble26) == linked, sc.diagnostics()


def wait_for(what, cond, sc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, "%s%s" % (what, sc.diagnostics())
        time.sleep(0.1)


def test_ari_revoked_at_ca_renews_now_pebble26(pebble26, http_port, tmp_path,
                                               sidecar_factory):
    """A certificate its owner revoked at Pebble 2.6 (with its own key,
    without the daemon) while the daemon was stopped: Pebble's window for
    it is past, and the daemon renews at once with "replaces", years
    before the lifetime rule would.  Killed -9 once it kept that window
    and before its order reached the CA, it renews at once again at the
    next start, from state_path, without asking the CA again."""
    from ca_proxy import CaProxy, revoke_at_ca
    proxy = CaProxy(pebble26).start()
    try:
        state = tmp_path / "state"
        conf = tmp_path / "acme-sidecar.conf"
        write_config(conf, proxy, state, http_port, [(["r.example"], None)])
        # The first run's renewalInfo never reaches the CA: it would learn
        # of a window before the revocation, and keep it for Retry-After.
        proxy.hold("/renewalInfo/")
        sc = sidecar_factory(conf, [pebble26]).start()
        sc.wait_certs(state, ["r.example"])
        live = state / "certs" / "r.example"
        leaf = split_pem((live / "fullchain.pem").read_text())[0]
        cid = cert_id_of(leaf)
        wait_for("renewalInfo asked", lambda: any(
            p.endswith("/" + cid) for p in proxy.held("/renewalInfo/")), sc)
        sc.stop()
        assert revoke_at_ca(pebble26, leaf, (live / "key.pem").read_text()) \
            == 200

        proxy.release("/renewalInfo/", forward=False)
        proxy.hold("/order-plz")
        sc.start()
        wait_for("the renewal's newOrder", lambda: proxy.held("/order-plz"),
                 sc)
        assert proxy.payloads("/order-plz")[-1].get("replaces") == cid
        assert proxy.ari_count(cid) == 1
        kept = json.loads((state / "ari" / "r.example.json").read_text())
        assert kept["cert_id"] == cid and kept["end"] < time.time(), kept
        sc.kill()

        proxy.release("/order-plz", forward=False)
        sc.start()
        wait_for("the renewed certificate", lambda: cert_id_of(split_pem(
            (live / "fullchain.pem").read_text())[0]) != cid, sc)
        # As in test_ari_pebble26: where Pebble cannot find the revoked
        # certificate, the order with "replaces" failed and one without it
        # followed.
        linked = pebble26_links(cid)
        assert pebble_replacements(pebble26) == int(linked)
        sent = [o.get("replaces") for o in proxy.payloads("/order-plz")]
        want = [cid] if linked else [cid, None]
        assert sent[-len(want):] == want, sent
        assert proxy.ari_count(cid) == 1, proxy.ari
    finally:
        proxy.stop()
