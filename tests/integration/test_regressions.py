"""Regression tests for bugs found in review, each driven by the fake CA.

Every test reproduces one misbehaving CA (or one reload) that used to
crash the daemon, spin it in a tight loop, or lose a certificate, and
asserts what a user sees instead: the daemon stays up, says what happened
in its log, backs off, and keeps or issues the certificate.  Every wait is
bounded, and every failure shows the daemon's log tail and the requests
the fake CA saw.
"""

import os
import re
import signal
import time

import pytest

from conftest import MemcheckSidecar, cert_sans, cert_serial, split_pem
from fake_acme import Reply, problem
from fake_run import ISSUED_TIMEOUT

def backoff_warning(run, cid, *words, timeout=5.0):
    """The warning that puts cid's order in backoff; returns its delay."""
    m = run.wait_log(r'\[warn\] certificate "%s": [^\n]*%s[^\n]*; '
                     r'retrying in (\d+)s' %
                     (re.escape(cid), ".*".join(map(re.escape, words))),
                     timeout=timeout)
    return int(m.group(1))


# ------------------------------------------- 1. premature valid order

@pytest.mark.parametrize("status", ["valid", "processing"])
def test_premature_order_status_backs_off(run, fake, status):
    """newOrder answers 201 with an order that is already "valid" (or
    "processing") although we never finalized it: its certificate's key
    is not ours.  This used to crash (EVP_PKEY_up_ref on a NULL key) when
    the daemon tried to store that certificate."""
    cid = "early.example.test"
    order = {"status": status,
             "identifiers": [{"type": "dns", "value": cid}],
             "authorizations": [fake.base + "/authz/x"],
             "finalize": fake.base + "/finalize/x"}
    valid = dict(order, status="valid", certificate=fake.base + "/cert-x")
    first = valid if status == "valid" else order
    fake.on("/new-order", lambda req: Reply(
        201, first, {"Location": fake.base + "/order/x"}), times=None)
    # A poll of a "processing" order turns valid, so that the old code
    # went on to download and store this foreign certificate.
    fake.on("/order/x", lambda req: Reply(200, valid), times=None)
    with open(fake.ca_pem) as f:
        pem = f.read()
    fake.on("/cert-x", Reply(200, pem, {
        "Content-Type": "application/pem-certificate-chain"}), times=None)

    run.start([[cid]])
    delay = backoff_warning(run, cid, "before we finalized it")
    run.check(delay >= 30, "the order must back off (about a minute), "
              "the log says %ds" % delay)
    run.sleep_alive(3.0, "after the CA's premature %r order" % status)

    orders = fake.requests("/new-order")
    run.check(len(orders) == 1, "%d newOrder requests in 3 s; the order "
              "must back off" % len(orders))
    run.check(not fake.requests("/finalize/.*"),
              "the daemon finalized an order the CA called %r" % status)
    certs = run.state / "certs"
    stored = sorted(os.listdir(certs)) if certs.is_dir() else []
    run.check(not stored, "something was stored for a certificate whose "
              "key is not ours: %s" % stored)
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")


# ------------------------------- 2. issuer removed during a bootstrap

def test_issuer_removed_while_new_account_waits(run, fake, sidecar_bin):
    """newAccount answers 503 Retry-After: 3, and a SIGHUP removes the
    issuer during that wait.  The queued retry used to fire on the freed
    issuer (a use-after-free that ASan and valgrind both see)."""
    fake.on("/new-account", problem(503, "serverInternal", "busy",
                                    {"Retry-After": "3"}), times=None)
    run.start([["gone.example.test"]], sidecar_class=MemcheckSidecar)
    try:
        run.wait_log(r'issuer "fake": [^\n]*HTTP 503 serverInternal: busy; '
                     r'retrying in 3', timeout=20)
        accounts = len(fake.requests("/new-account"))
        mark = run.sidecar.mark()
        run.write_conf([], issuer=False)
        run.sidecar.signal(signal.SIGHUP)
        run.wait_log(r"managing 0 certificates from 0 issuers", timeout=10,
                     since=mark)
        # The 3 s retry was due during this sleep.
        t = time.monotonic()
        while time.monotonic() < t + 4.0:
            run.check(run.sidecar.alive(), "acme-sidecar died after the "
                      "reload removed an issuer waiting on Retry-After")
            time.sleep(0.1)
        late = fake.requests("/new-account")[accounts:]
        run.check(not late, "the removed issuer still sent %d newAccount "
                  "request(s) after the reload" % len(late))
        rc = run.sidecar.stop(timeout=60)
        log = run.sidecar.log()
        run.check("ERROR SUMMARY: 0 errors" in log,
                  "valgrind reported errors after the reload")
        run.check(rc == 0, "exit status %s under valgrind" % rc)
    finally:
        run.sidecar.kill()


# --------------------------------------- 3. malformed Replay-Nonce

def test_malformed_replay_nonce_is_bounded(run, fake):
    """Every Replay-Nonce is padded base64 ("...="), which RFC 8555
    forbids.  The daemon used to drop it and ask newNonce again at once,
    for ever: thousands of HEAD requests a second."""
    orig = fake.fresh_nonce
    fake.fresh_nonce = lambda: orig() + "="

    run.start([["nonce.example.test"]])
    run.sleep_alive(3.0, "while every Replay-Nonce was malformed")
    heads = fake.requests("/nonce", "HEAD")
    run.check(len(heads) < 30, "%d HEAD newNonce requests in 3 s: a "
              "malformed Replay-Nonce must not be fetched again at once" %
              len(heads))
    lines = run.warnings("Replay-Nonce")
    run.check(lines, "no warning mentions the malformed Replay-Nonce; the "
              "warnings were:\n%s" % "\n".join(run.warnings()))
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")


# ------------------------------------------------ 4. orderNotReady

def test_order_not_ready_finalizes_again(run, fake):
    """finalize answers 403 orderNotReady once; the order poll then says
    "ready".  The daemon used to keep the CSR's key and poll a "ready"
    order for ever without finalizing it again."""
    fake.on("/finalize/.*", problem(403, "orderNotReady", "not yet"))
    cid = "notready.example.test"
    run.start([[cid]])
    run.wait_issued(cid, timeout=20)
    leaf = run.leaf(cid)
    run.check(cert_sans(leaf) == {"DNS:" + cid}, "wrong names in the leaf")
    fin = fake.requests("/finalize/.*", "POST")
    run.check([r.status for r in fin] == [403, 200],
              "finalize answers %s, expected [403, 200]" %
              [r.status for r in fin])
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")


# -------------------------------------------- 5. accountDoesNotExist

def test_account_does_not_exist_for_ever(run, fake):
    """The CA answers accountDoesNotExist to every kid-signed request,
    even right after newAccount succeeded.  The daemon used to register
    again in a tight loop."""
    fake.on(".*", problem(400, "accountDoesNotExist", "who are you?"),
            times=None, when=lambda req: req.method == "POST" and req.kid)
    cid = "acct.example.test"
    run.start([[cid]])
    delay = backoff_warning(run, cid, "accountDoesNotExist")
    run.check(delay >= 30, "the order must back off (about a minute), "
              "the log says %ds" % delay)
    run.sleep_alive(3.0, "while the CA forgot the account")
    accounts = fake.requests("/new-account")
    run.check(len(accounts) <= 3, "%d newAccount requests in 3 s; "
              "re-registering must not loop" % len(accounts))
    orders = fake.requests("/new-order")
    run.check(len(orders) <= 3, "%d newOrder requests in 3 s; the order "
              "must back off" % len(orders))
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")


# ------------------------------- 6. failed alternate chain download

def test_failed_alternate_chain_keeps_default(run, fake):
    """preferred_chain matches no chain, and the one Link rel="alternate"
    answers 500, then 404.  The daemon used to fail the whole order and
    throw the issued certificate away."""
    def with_alternate(req):
        reply = fake.default(req)
        reply.headers["Link"] = '<%s/alt/1>;rel="alternate"' % fake.base
        return reply

    fake.on("/cert/.*", with_alternate, times=None)
    # A 500 is retried like any request (for about 30 s: 2, 4, 8, 16 s),
    # so it comes once; the 404 after it ends the retries at once.
    fake.on("/alt/.*", problem(500, "serverInternal", "no alternates today"))
    fake.on("/alt/.*", problem(404, "malformed", "no such chain"),
            times=None)
    cid = "alt.example.test"
    run.start([[cid]], extra=['preferred_chain "No Such Root CA";'])
    run.wait_issued(cid, timeout=20)
    run.leaf(cid)
    alt = [r.status for r in fake.requests("/alt/.*", "POST")]
    run.check(alt[:2] == [500, 404], "the alternate chain answered %s, "
              "expected a 500 then a 404, so this test proved nothing" % alt)
    run.wait_log(r'certificate "%s": no chain is issued by "No Such Root '
                 r'CA"; keeping the default chain' % re.escape(cid))
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")


# --------------------------------------- 7. generation name collision

def test_generation_name_collision(run, fake):
    """A certificate whose id looks like another one's generation folder:
    "example.test.00000000000000ab" next to "example.test".  With folders
    named "<id>.<16 hex>", re-issuing "example.test" at generation 0xac
    removed "generation 0xab", which was the other certificate's link,
    and followed it.  To get there without 171 renewals, the first
    certificate's generation is renumbered while the daemon is stopped,
    in whatever naming the daemon itself used for it."""
    a, b = "example.test", "example.test.00000000000000ab"
    run.start([[a]])
    run.wait_issued(a)
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")

    certs = run.state / "certs"
    link = certs / a
    target = os.readlink(link)
    run.check(re.fullmatch(re.escape(a) + r"[.@][0-9a-f]{16}", target),
              "certs/%s points at %r, not a generation folder" % (a, target))
    renumbered = target[:-16] + "%016x" % 0xac
    os.rename(certs / target, certs / renumbered)
    os.symlink(renumbered, str(link) + ".tmp")
    os.rename(str(link) + ".tmp", link)

    # b is issued next to the still valid a, then a SIGHUP that changes
    # a's identifiers forces its re-issue.
    run.start([[a], [b]])
    run.wait_issued(b)
    leaf_b = run.leaf(b)
    run.check(cert_sans(leaf_b) == {"DNS:" + b}, "wrong names in %s" % b)
    serial_a = cert_serial(run.leaf(a))
    serial_b = cert_serial(leaf_b)
    mark = run.sidecar.mark()
    run.write_conf([[a, "www.example.test"], [b]])
    run.sidecar.signal(signal.SIGHUP)
    run.wait_log(r"managing 2 certificates from 1 issuers", since=mark)
    want = {"DNS:" + a, "DNS:www.example.test"}

    def reissued():
        try:
            pem = (certs / a / "fullchain.pem").read_text()
            return cert_sans(split_pem(pem)[0]) == want
        except (OSError, IndexError, AssertionError):
            return False    # caught between two writes: look again

    run.wait(reissued, ISSUED_TIMEOUT,
             "re-issue of %s with www.example.test" % a)
    run.check(cert_serial(run.leaf(a)) != serial_a, "%s kept its serial" % a)
    # The re-issue removed the generation before the renumbered one (or
    # would have): b, whose id is that generation's old name, is intact.
    run.check(os.path.islink(certs / b), "certs/%s is no longer a link" % b)
    run.check(cert_serial(run.leaf(b)) == serial_b,
              "%s changed although only %s was re-issued" % (b, a))
    run.check(run.sidecar.stop() == 0, "SIGTERM did not give exit 0")
