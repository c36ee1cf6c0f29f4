"""How the daemon behaves when its CA misbehaves.

The CA is tests/integration/fake_acme.py, scripted per test; the asserts
are on what a user sees (log lines, certificates on disk) and on what the
CA sees (which requests arrive, and when).  Every wait is bounded.
"""

import re
import time

import pytest

from conftest import check_certificate
from fake_acme import Reply, problem

# The tests that time the gaps between requests (gap_between, the pacing
# of request_rate) are marked serial: they run alone, since a CPU shared
# with other tests would stretch a gap or bunch the requests.


def gap_between(run, reqs, i, lo, hi, what):
    """Seconds between requests i-1 and i, which must lie in [lo, hi)."""
    if len(reqs) <= i:
        run.fail("%s: expected at least %d requests, saw %d" %
                 (what, i + 1, len(reqs)))
    gap = reqs[i].t - reqs[i - 1].t
    if not lo <= gap < hi:
        run.fail("%s: %.2fs between the requests, expected %.1f to %.1f s" %
                 (what, gap, lo, hi))
    return gap


# ------------------------------------------------------------------ tests

@pytest.mark.serial
def test_rate_limited_honours_retry_after(run, fake):
    fake.on("/new-order", problem(429, "rateLimited", "slow down",
                                  {"Retry-After": "3"}))
    run.start([["rl.example.test"]])
    run.wait_issued("rl.example.test")
    run.check_fake_cert(["rl.example.test"])

    orders = fake.requests("/new-order")
    assert [r.status for r in orders] == [429, 201], run.diagnostics()
    gap_between(run, orders, 1, 2.9, 8.0, "newOrder after 429 Retry-After: 3")
    run.wait_log(r'issuer "fake": HTTP 429 rateLimited: slow down; '
                 r'retrying in 3s')


@pytest.mark.serial
def test_503_honours_retry_after(run, fake):
    fake.on("/finalize/.*", problem(503, "serverInternal", "maintenance",
                                    {"Retry-After": "3"}))
    run.start([["u.example.test"]])
    run.wait_issued("u.example.test")
    run.check_fake_cert(["u.example.test"])

    fin = fake.requests("/finalize/.*")
    assert [r.status for r in fin] == [503, 200], run.diagnostics()
    assert fin[0].payload == fin[1].payload, "the retry changed the CSR"
    gap_between(run, fin, 1, 2.9, 8.0, "finalize after 503 Retry-After: 3")
    run.wait_log(r'issuer "fake": HTTP 503 serverInternal: maintenance; '
                 r'retrying in 3s')


@pytest.mark.serial
def test_poll_honours_retry_after(run, fake):
    def pending_once(req):
        reply = fake.default(req)
        reply.body["status"] = "pending"
        reply.headers["Retry-After"] = "2"
        return reply

    # Only a poll: the first fetch of the authorization comes before the
    # challenge is posted.
    fake.on("/authz/.*", pending_once,
            when=lambda req: fake.requests("/chall/.*"))
    run.start([["poll.example.test"]])
    run.wait_issued("poll.example.test")

    authz = fake.requests("/authz/.*")
    chall = fake.requests("/chall/.*")
    assert len(chall) == 1 and chall[0].t < authz[1].t, run.diagnostics()
    # authz[0]: the fetch; authz[1]: the poll told to wait; authz[2]: next.
    gap_between(run, authz, 2, 1.9, 6.0,
                "authorization poll after Retry-After: 2")


def test_hopeless_order_error(tmp_path, run, fake, pebble, http_port):
    """rejectedIdentifier is logged once and not retried soon, and neither
    the same issuer's other certificate nor another issuer waits for it."""
    fake.on("/new-order", problem(400, "rejectedIdentifier", "no such name"),
            times=None,
            when=lambda req: "bad.example.test" in req.identifiers())
    pstate = tmp_path / "state-pebble"
    run.issuers["pebble"] = (pebble.directory_url, pstate, [
        "ssl_trusted_certificate %s;" % pebble.ca])
    run.start([["bad.example.test"], ["good.example.test"]],
              certs=[("pebble", ["p.example.test"])], pebbles=[pebble])

    run.wait_issued("good.example.test", timeout=15)
    run.check_fake_cert(["good.example.test"])
    run.wait_issued("p.example.test", state=pstate, timeout=20)
    check_certificate(pstate, ["p.example.test"], None, pebble, tmp_path)

    # Give a tight retry loop time to show itself.
    time.sleep(max(0.0, run.t0 + 6.0 - time.monotonic()))
    bad = [r for r in fake.requests("/new-order")
           if "bad.example.test" in r.identifiers()]
    if len(bad) != 1:
        run.fail("%d newOrder requests for bad.example.test in 6 s; a "
                 "rejectedIdentifier must not be retried soon" % len(bad))
    lines = run.warnings('certificate "bad.example.test"', "no such name")
    if len(lines) != 1:
        run.fail("expected exactly one warning about bad.example.test "
                 "naming the CA's detail, got %d:\n%s" %
                 (len(lines), "\n".join(lines)))
    m = re.search(r"retrying in (\d+)s", lines[0])
    assert m and int(m.group(1)) >= 2880, (
        "a hopeless error must wait about an hour (3600 s -20%%): %s" %
        lines[0])


def test_bad_nonce_retried_with_fresh_nonce(run, fake):
    fake.on(".*", problem(400, "badNonce", "stale nonce"), times=3,
            when=lambda req: req.method == "POST")
    run.start([["nonce.example.test"]])
    run.wait_issued("nonce.example.test")
    run.check_fake_cert(["nonce.example.test"])

    posts = fake.requests(method="POST")
    assert [r.status for r in posts[:3]] == [400] * 3, run.diagnostics()
    assert posts[3].status in (200, 201), run.diagnostics()
    for i in range(1, 4):
        if posts[i].nonce != posts[i - 1].reply_nonce:
            run.fail("retry %d of %s used nonce %s, not %s, the one the "
                     "badNonce answer carried" %
                     (i, posts[i].path, posts[i].nonce,
                      posts[i - 1].reply_nonce))
    assert posts[3].path == posts[0].path, "the retries went elsewhere"
    bad = [r for r in posts if r.status == 400]
    assert len(bad) == 3, ("the daemon sent a used or unknown nonce:\n%s" %
                           "\n".join(map(repr, bad)))


@pytest.mark.serial
def test_directory_garbage_then_good(run, fake):
    fake.on("/dir", Reply(200, "{this is not json",
                          {"Content-Type": "application/json"}))
    fake.on("/dir", problem(500, "serverInternal", "database on fire"))
    run.start([["dir.example.test"]])

    uri = re.escape(fake.directory_url)
    first = run.wait_log(r'\[warn\] issuer "fake": %s: not an ACME '
                         r'directory.*; retrying in (\d+)s' % uri)
    second = run.wait_log(r'\[warn\] issuer "fake": %s: HTTP 500 '
                          r'serverInternal: database on fire; '
                          r'retrying in (\d+)s' % uri)
    run.wait_issued("dir.example.test", timeout=20)
    run.check_fake_cert(["dir.example.test"])

    dirs = fake.requests("/dir")
    assert [r.status for r in dirs[:3]] == [200, 500, 200]
    # Last, being the least important: the waits must be what the log
    # announced, which is the jittered delay rounded to whole seconds.
    for i, m in ((1, first), (2, second)):
        said = int(m.group(1))
        gap_between(run, dirs, i, said - 0.6, said + 1.0,
                    "the directory retry announced as \"retrying in %ds\""
                    % said)


def test_invalid_authorization_backs_off(run, fake):
    fake.validation_error = "connection refused by test"
    run.start([["inv.example.test"]])
    m = run.wait_log(r'\[warn\] certificate "inv.example.test": '
                     r'authorization for inv.example.test failed: '
                     r'connection refused by test; retrying in (\d+)s')
    delay = int(m.group(1))
    assert 45 <= delay <= 75, (
        "the first order backoff is 1 minute (+-20%%), the log says %ds" %
        delay)
    time.sleep(3)
    orders = fake.requests("/new-order")
    if len(orders) != 1:
        run.fail("%d newOrder requests; the order must wait %ds" %
                 (len(orders), delay))
    assert not (run.state / "certs" / "inv.example.test").exists()
    assert run.sidecar.alive(), run.diagnostics()


@pytest.mark.serial
def test_request_rate_paces_every_request(run, fake):
    """request_rate 5r/s burst=2: whatever the orders want, no second of
    traffic to the CA carries more than rate + burst requests, and the
    certificates are still issued."""
    run.issuers["fake"] = (fake.directory_url, run.state,
                           ["request_rate 5r/s burst=2;"])
    names = ["r%d.example.test" % i for i in range(3)]
    run.start([[n] for n in names])
    for n in names:
        run.wait_issued(n, timeout=40)
    times = sorted(r.t for r in fake.requests())
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    if worst > 5 + 2:
        run.fail("%d requests within one second at request_rate 5r/s "
                 "burst=2" % worst)
    span = times[-1] - times[0]
    # n requests at 5/s after a burst of 2 leave over at least
    # (n - 2) / 5 s.  The times are arrivals at a Python fake: under load
    # (a make check at load 6.5) the first came 0.24 s after the pace
    # allowed, so 0.5 s of slack; without pacing, 21 requests arrive
    # within a second.
    if span < (len(times) - 2) / 5.0 - 0.5:
        run.fail("%d requests in %.2fs: faster than 5r/s" %
                 (len(times), span))
    assert run.sidecar.stop() == 0
