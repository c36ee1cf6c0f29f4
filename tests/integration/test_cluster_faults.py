"""A fleet under faults: replicas killed or frozen mid-order, Redis
restarted or away, a replica with the wrong secret, garbage under the
prefix.

Each test asserts what a user of the fleet observes: what Pebble issued
(its own log), what every replica serves (a TLS handshake, checked with
openssl verify), what Redis holds, what the daemons log, and that they
are still running.
"""

import json
import re
import subprocess
import time

import pytest

from clusterlib import (PREFIX, Fleet, Redis, issued_by_pebble, leaf_id,
                        names_of, pem_der, quick_leaf, redis_leaf,
                        served_leaf, stored_leaf, verify_leaf, wait_served,
                        write_secret)
from nginxlib import MODULE, http_get

pytestmark = pytest.mark.skipif(
    not MODULE.exists(), reason="%s is not built (nginx-dev missing?)" %
    MODULE)

LEASE_TTL = 15          # CLUSTER_LEASE_TTL


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path / "redis").start()
    yield r
    r.kill()


@pytest.fixture
def fleet(tmp_path, http_port, redis):
    """make(pebble, n, certs, secrets=None) -> Fleet, not started."""
    made = []

    def make(pebble, n, certs, secrets=None):
        f = Fleet(tmp_path, pebble, http_port, redis, n, certs, secrets)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def settle(f, tmp_path, certs=None, replicas=None):
    """Start replicas (default all), have the first order certs (default
    all the fleet's), then the others take them from Redis: returns
    {name: leaf id}.

    The others are told of the certificates only once the first has
    stored them, so they find them in Redis instead of waiting out its
    leases.
    """
    certs = f.certs if certs is None else certs
    replicas = f.replicas if replicas is None else replicas
    f.start(replicas)
    replicas[0].configure(certs)
    wait_served(replicas[:1], certs, f.pebble, tmp_path)
    for r in replicas[1:]:
        r.configure(certs)
    served = wait_served(replicas, certs, f.pebble, tmp_path)
    for name, ids in served.items():
        assert len(ids) == 1, "%s: replicas serve %d leaves" % (name,
                                                                len(ids))
    return {name: ids.pop() for name, ids in served.items()}


def ids_of(certs):
    return [n[0] for n in certs]


def check_unharmed(f, tmp_path, expected, what, replicas=None):
    """Every sidecar runs, and every replica serves, for every name, the
    leaf it served before (expected: {name: leaf id}), which verifies.
    Failures are pytest.fail (not AssertionError): an xfail(raises=
    AssertionError) below never hides them."""
    replicas = f.replicas if replicas is None else replicas
    for r in replicas:
        r.sidecar._check_alive(what)
    for r in replicas:
        for name, want in expected.items():
            leaf = served_leaf(r, name)
            if leaf is None:
                pytest.fail("%s: %s serves nothing for %s%s" % (
                    what, r.name, name, r.sidecar.diagnostics()),
                    pytrace=False)
            if leaf_id(leaf) != want:
                pytest.fail("%s: %s serves another leaf for %s" % (
                    what, r.name, name), pytrace=False)
            ok, out = verify_leaf(leaf, name, f.pebble, tmp_path)
            if not ok:
                pytest.fail("%s: %s serves for %s a leaf that does not "
                            "verify: %s" % (what, r.name, name, out),
                            pytrace=False)


def log_lines(replica, pattern, since=0):
    rx = re.compile(pattern)
    return [line for line in replica.sidecar.log(since=since).splitlines()
            if rx.search(line)]


def wait_logged(replicas, pattern, since, timeout, count=1, every=True):
    """Until every replica (or one, every=False) logged count lines
    matching pattern since its mark (since: {name: offset}); returns the
    replicas that did not, [] if one did and every=False."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [r for r in replicas
                   if len(log_lines(r, pattern, since[r.name])) < count]
        if not every and len(missing) < len(replicas):
            return []
        if not missing or time.monotonic() > deadline:
            return missing
        for r in replicas:
            r.sidecar._check_alive("waiting for /%s/" % pattern)
        time.sleep(0.1)


def wait_until(what, cond, timeout, replicas=(), step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        for r in replicas:
            r.sidecar._check_alive(what)
        if time.monotonic() > deadline:
            pytest.fail("%s: not within %.0fs%s" % (
                what, timeout, "".join(r.sidecar.diagnostics()
                                       for r in replicas)), pytrace=False)
        time.sleep(step)


def marks(f):
    return {r.name: r.sidecar.mark() for r in f.replicas}


_serials = {}


def serial_of(der):
    """A certificate's serial number (DER in), as an int."""
    if der not in _serials:
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout",
                              "-serial"], input=der, stdout=subprocess.PIPE,
                             check=True).stdout.decode()
        _serials[der] = int(out.strip().split("=", 1)[1], 16)
    return _serials[der]


def rank_of(serial, pebble):
    """Where serial comes in Pebble's issuance order (0 = first)."""
    issued = [int(s, 16) for s in issued_by_pebble(pebble)]
    assert serial in issued, "serial %x was never issued by Pebble" % serial
    return issued.index(serial)


def private_key_bodies(replicas):
    """The base64 lines of every private key the replicas hold."""
    lines = set()
    for r in replicas:
        for p in list(r.state.rglob("*.key")) + \
                list(r.state.rglob("key.pem")):
            for line in p.read_text().splitlines():
                if len(line) >= 40 and not line.startswith("-----"):
                    lines.add(line)
    return lines


def assert_no_key_in_clear(redis, replicas):
    """No value of any type in Redis holds a private key in clear: no
    PEM header, no line of any key a replica has in state_path."""
    bodies = private_key_bodies(replicas)
    assert bodies, "no private key found in the replicas' state_path"
    for key, (kind, value) in redis.snapshot("*").items():
        text = json.dumps(value, default=lambda b: b.decode("latin-1")) \
            if not isinstance(value, bytes) else value.decode("latin-1")
        assert "PRIVATE KEY" not in text, "%s (%s) holds a PEM private " \
            "key in clear" % (key, kind)
        for line in bodies:
            assert line not in text, "%s (%s) holds a private key's " \
                "base64 in clear" % (key, kind)


# ------------------------------------------------------------ hostile values
#
# Garbage under the prefix, one kind per test: every node that reads it
# logs its key and skips it, stays up, keeps serving the certificates it
# had (same leaf, still verifying), and puts none of it in its zone.

EVENTS = "%s:events" % PREFIX
TOKEN = "hostile-token-" + "A" * 29


def _cert_key(ids):
    return "%s:cert:%s" % (PREFIX, ids[0])


def _real_record(redis, ids):
    return redis.call("GET", _cert_key(ids))


def _publish(redis, f, msg):
    n = redis.call("PUBLISH", EVENTS, msg)
    if n != len(f.replicas):
        pytest.fail("%d nodes, not %d, are subscribed to %s" % (
            n, len(f.replicas), EVENTS), pytrace=False)


def _publish_cert(redis, f, ids):
    """Another node's "cert" message: every node reads the record.  A
    lease held meanwhile by someone else keeps the first reader from
    storing its own copy over the garbage (order_restore()) before the
    others have read it."""
    fence = redis.call("GET", "%s:fence:%s" % (PREFIX, ids[0])) or b"0"
    redis.call("SET", "%s:lease:%s" % (PREFIX, ids[0]),
               b"outsider#0 " + fence, "PX", 30000)
    _publish(redis, f, "cert %s intruder" % ids[0])


def _publish_token(redis, f, ids):
    _publish(redis, f, "token %s intruder" % TOKEN)


def _heartbeat(redis, f, ids):
    """Each node's heartbeat (every 2 s) reads PREFIX:members."""


def _renew(redis, f, ids):
    """A renewal asked on node0: it takes the lease, with a new fence."""
    code, body = f.replicas[0].renew(ids[0])
    if code != 202:
        pytest.fail("renew: %s %s" % (code, body), pytrace=False)


def _set(value):
    def plant(redis, key, ids):
        v = value(redis, ids) if callable(value) else value
        redis.call("DEL", key)
        redis.call("SET", key, v)
    return plant


def _typed(cmd, *args):
    def plant(redis, key, ids):
        redis.call("DEL", key)
        redis.call(cmd, key, *args)
    return plant


FOREIGN_JSON = json.dumps({
    "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n"
                   "-----END CERTIFICATE-----\n",
    "private_key": "(another tool's)", "expires": "2031-01-01"})


class Hostile:
    """key: under the prefix, {0} the first certificate's id;
    plant(redis, key, ids); trigger(redis, fleet, ids): have it read;
    readers: the replicas that read it ("all", "first": node0, or "any":
    the first to read a key it may repair, as PREFIX:members);
    renewed: the trigger renews the certificate, a new leaf is served."""

    def __init__(self, key, plant, trigger, readers="all", renewed=False):
        self.key, self.plant, self.trigger = key, plant, trigger
        self.readers, self.renewed = readers, renewed


HOSTILE = {
    "cert-not-json": Hostile(
        "cert:{0}", _set(b"\x00\xff\xfe{not json at all"), _publish_cert),
    "cert-truncated": Hostile(
        "cert:{0}", _set(lambda r, ids: _real_record(r, ids)[:300]),
        _publish_cert),
    "cert-foreign-json": Hostile(
        "cert:{0}", _set(FOREIGN_JSON), _publish_cert),
    "cert-of-another-certificate": Hostile(
        "cert:{0}", _set(lambda r, ids: r.call(
            "GET", "%s:cert:%s" % (PREFIX, ids[1]))), _publish_cert),
    "cert-hash": Hostile(
        "cert:{0}", _typed("HSET", "chain", "x", "key", "y"),
        _publish_cert),
    "order-list": Hostile(
        "order:{0}", _typed("RPUSH", "https://ca.invalid/order/1", "x"),
        _publish_cert),
    "token-hash": Hostile(
        "token:" + TOKEN, _typed("HSET", "keyauth", TOKEN + ".abc"),
        _publish_token),
    "members-hash": Hostile(
        "members", _typed("HSET", "node0", "1"), _heartbeat, "any"),
    "lease-garbage": Hostile(
        "lease:{0}", _set(b"\xff\xfe not a lease"), _renew, "first",
        renewed=True),
    "fence-not-integer": Hostile(
        "fence:{0}", _set("NaN"), _renew, "first"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_value(kind, tmp_path, pebble, redis, fleet):
    certs = [names_of(i) for i in range(2)]
    f = fleet(pebble, 2, certs)
    served = settle(f, tmp_path)
    ids = ids_of(certs)
    h = HOSTILE[kind]
    key = "%s:%s" % (PREFIX, h.key.format(*ids))
    issued = len(issued_by_pebble(pebble))

    since = marks(f)
    h.plant(redis, key, ids)
    h.trigger(redis, f, ids)
    readers = f.replicas[:1] if h.readers == "first" else f.replicas
    silent = wait_logged(readers, re.escape(key), since, timeout=6.0,
                         every=h.readers != "any")

    if h.renewed:
        # The renewal asked goes through: one more certificate, which
        # every replica serves in place of the old one.
        wait_until("the renewal", lambda: len(issued_by_pebble(pebble))
                   > issued, 20, f.replicas)
        def renewed():
            stored = redis_leaf(redis, ids[0])
            return stored is not None and \
                leaf_id(stored) != served[ids[0]] and \
                all(quick_leaf(r, ids[0])[0] == pem_der(stored)
                    for r in f.replicas)
        wait_until("every replica serves the renewed certificate",
                   renewed, 20, f.replicas)
        served[ids[0]] = leaf_id(redis_leaf(redis, ids[0]))
        issued += 1
    check_unharmed(f, tmp_path, served, "after %s at %s" % (kind, key))
    for r in f.replicas:
        status, body = http_get(r.http_port,
                                "/.well-known/acme-challenge/" + TOKEN)
        if status != 404:
            pytest.fail("%s answers %s for the planted token: %r" % (
                r.name, status, body), pytrace=False)
    if kind == "members-hash":
        wait_until("both are members again", lambda: all(
            sorted(r.status()["cluster"]["members"]) == ["node0", "node1"]
            for r in f.replicas), 10, f.replicas)
    if len(issued_by_pebble(pebble)) != issued:
        pytest.fail("the garbage had a certificate ordered again",
                    pytrace=False)
    assert not silent, "%s never logged the key %s" % (
        ", ".join(r.name for r in silent), key)


def test_hostile_key_authorizations(tmp_path, pebble, redis, fleet):
    """Tokens whose key authorization is malformed: each logged with its
    key and skipped; nginx answers none of them."""
    certs = [names_of(0)]
    f = fleet(pebble, 2, certs)
    served = settle(f, tmp_path)
    bad = {
        "no-dot": b"garbage",
        "nothing-after-dot": b"%s.",
        "another-token": b"someoneelse." + b"A" * 43,
        "bad-characters": b"%s.abc def<script>",
        "newline": b"%s.abc\nHTTP/1.1 200 OK",
        "nul": b"%s.abc\x00def",
        "too-long": b"%s." + b"A" * 5000,
        "binary": b"\xff\xfe\x00\x01",
    }
    for label, value in bad.items():
        token = "hostile-%s-%s" % (label, "A" * 20)
        key = "%s:token:%s" % (PREFIX, token)
        since = marks(f)
        redis.call("SET", key, value.replace(b"%s", token.encode())
                   if b"%s" in value else value)
        redis.call("PUBLISH", EVENTS, "token %s intruder" % token)
        silent = wait_logged(f.replicas, re.escape(key), since, timeout=5.0)
        for r in f.replicas:
            status, body = http_get(r.http_port,
                                    "/.well-known/acme-challenge/" + token)
            if status != 404:
                pytest.fail("%s answers %s for %s: %r" % (
                    r.name, status, label, body), pytrace=False)
        assert not silent, "%s never logged the key %s" % (
            ", ".join(r.name for r in silent), key)
    check_unharmed(f, tmp_path, served, "after malformed tokens")


# Messages on PREFIX:events: (message, a line each node logs, or None
# where silence is right: a well-formed message naming nothing known).
GARBAGE_MESSAGES = [
    (b"", r'unreadable message "" ignored'),
    (b"\x00\xff\xfe binary noise", r'unreadable message "" ignored'),
    (b"oneword", r'unreadable message "oneword" ignored'),
    (b"two words", r'unreadable message "two words" ignored'),
    # A line forged in a message stays inside the line that logs it.
    (b"lone\n[info]forged", r'unreadable message "lone\\x0a\[info\]forged" '
     r'ignored'),
    (b"x" * 5000, r"a message of 5000 bytes on %s ignored" % EVENTS),
    (b"frobnicate c0.example.test intruder",
     r'message "frobnicate" ignored'),
    (b"\xff\xfe\xfd\xfc \xfb \xfa", None),
    (b"cert ../../../../etc/passwd intruder", None),
    (b"cert %s%s%s%n%n intruder", None),
    (b"token ../../x intruder", None),
    (b"token " + b"A" * 1000 + b" intruder", None),
    (b"untoken " + b"B" * 43 + b" intruder", None),
    (b"cert c0.example.test " + b"n" * 300, None),
    (b"token\tc0\r\nintruder", None),
]


def test_garbage_events(tmp_path, pebble, redis, fleet):
    certs = [names_of(0)]
    f = fleet(pebble, 2, certs)
    served = settle(f, tmp_path)
    silent = []
    for msg, line in GARBAGE_MESSAGES:
        since = marks(f)
        assert redis.call("PUBLISH", EVENTS, msg) == 2, \
            "not every node is subscribed to %s" % EVENTS
        if line is not None:
            for r in wait_logged(f.replicas, line, since, timeout=5.0):
                silent.append((r.name, msg[:40]))
        # What follows shows each node handled the message: a node reads
        # its messages in order, and a token message is answered by a
        # GET, whose acknowledgement lands in Redis.
        probe = "probe-" + "P" * 30 + str(len(silent))
        redis.call("SET", "%s:token:%s" % (PREFIX, probe), probe + ".x")
        redis.call("PUBLISH", EVENTS, "token %s intruder" % probe)
        deadline = time.monotonic() + 5
        while redis.call("SCARD", "%s:ack:%s" % (PREFIX, probe)) < 2:
            for r in f.replicas:
                r.sidecar._check_alive("after the message %r" % msg[:60])
            if time.monotonic() > deadline:
                pytest.fail("after the message %r, not every node "
                            "acknowledged a token" % msg[:60],
                            pytrace=False)
            time.sleep(0.05)
    check_unharmed(f, tmp_path, served, "after garbage messages")
    assert not silent, "these messages were not logged: %s" % silent
    assert not [line for r in f.replicas for line in
                r.sidecar.log().splitlines() if line.startswith("[info]")]


# ------------------------------------------------------------ kill -9

def test_kill_9_lease_holders(tmp_path, pebble, redis, fleet):
    """Three replicas, each in turn told of four certificates of its own,
    so that it holds their leases, and killed with SIGKILL as soon as it
    has shared an order (its finalize comes next): node0 and node1 come
    back at once, node2 stays dead with its nginx (a pod gone for good).
    The CA issues each certificate exactly once, the orders the dead left
    behind are resumed by others, and the two remaining replicas serve all
    twelve."""
    certs = [names_of(i) for i in range(12)]
    batches = [certs[0:4], certs[4:8], certs[8:12]]
    f = fleet(pebble, 3, certs)
    f.start()

    left = {}               # certificate id -> the dead node's name
    for i, victim in enumerate(f.replicas):
        ids = ids_of(batches[i])
        orders = ["%s:order:%s" % (PREFIX, c) for c in ids]
        victim.configure(batches[i])
        deadline = time.monotonic() + 30
        while not redis.call("EXISTS", *orders):
            if time.monotonic() > deadline:
                pytest.fail("%s shared no order within 30s%s" % (
                    victim.name, victim.sidecar.diagnostics()),
                    pytrace=False)
            time.sleep(0.002)
        victim.kill()
        held = [c for c in ids if (redis.call(
            "GET", "%s:lease:%s" % (PREFIX, c)) or b"").startswith(
                victim.name.encode() + b"#")]
        assert held, "%s held no lease when it was killed" % victim.name
        for c in ids:
            raw = redis.call("GET", "%s:order:%s" % (PREFIX, c))
            if raw is not None:
                left[c] = json.loads(raw)["node"]
        known = [n for b in batches[:i + 1] for n in b]
        if i < 2:
            victim.configure(known)         # read when it starts
            victim.start_sidecar()
        else:
            victim.nginx.stop()
            for r in f.replicas[:2]:
                r.configure(known)
    assert left, "the dead left no order behind"

    survivors = f.replicas[:2]
    served = wait_served(survivors, certs, pebble, tmp_path, timeout=150)
    for name, ids in served.items():
        assert len(ids) == 1, "%s: the survivors serve %d leaves" % (
            name, len(ids))
    issued = issued_by_pebble(pebble)
    assert len(issued) == len(set(issued)) == 12, \
        "Pebble issued %d certificates (%d serials) for 12" % (
            len(issued), len(set(issued)))
    # Every order a dead node left was resumed, not ordered again.
    for cid, node in left.items():
        resumed = [line for r in survivors for line in log_lines(
            r, r'certificate "%s": resuming order .* finalized by node '
               r'"%s"' % (re.escape(cid), node))]
        assert resumed, "the order %s of %s was never resumed" % (cid,
                                                                  node)
    assert redis.call("KEYS", "%s:order:*" % PREFIX) == [], \
        "orders left behind in Redis"


# ------------------------------------------------------------ fencing

def test_fencing_frozen_holder(tmp_path, pebble_factory, http_port, redis,
                               fleet):
    """node0 shares its order (finalize comes next) and is frozen with
    SIGSTOP past its lease.  node1 takes a newer lease, resumes the
    order, and renews at once (20 s certificates renew at half life;
    Pebble reuses the authorization, so node0's nginx, stale while its
    sidecar sleeps, is never asked).  Then node0 wakes up holding the
    older certificate and its old fence: its writes are refused, and from
    then on no replica, nor Redis, ever goes back to an older leaf."""
    pebble = pebble_factory(http_port, validity=20,
                            env={"PEBBLE_AUTHZREUSE": "100"})
    certs = [names_of(0)]
    cid = certs[0][0]
    f = fleet(pebble, 2, certs)
    stale, fresh = f.replicas
    f.start()
    stale.configure(certs)

    order_key = "%s:order:%s" % (PREFIX, cid)
    wait_until("node0 shares its order", lambda: redis.call(
        "EXISTS", order_key), 20, [stale], step=0.005)
    stale.freeze()
    frozen_at = time.monotonic()
    if redis.call("EXISTS", "%s:cert:%s" % (PREFIX, cid)):
        pytest.fail("node0 stored the certificate before it was frozen",
                    pytrace=False)
    # Past its lease: gone from Redis (15 s at most after its last renewal).
    wait_until("node0's lease expires", lambda: not redis.call(
        "EXISTS", "%s:lease:%s" % (PREFIX, cid)), LEASE_TTL + 5)
    fresh.configure(certs)

    def redis_rank():
        leaf = redis_leaf(redis, cid)
        return None if leaf is None else rank_of(serial_of(pem_der(leaf)),
                                                 pebble)

    def served_rank(r):
        der, _ = quick_leaf(r, cid)
        return None if der is None else rank_of(serial_of(der), pebble)

    # node1 resumed node0's order (the first certificate Pebble issued),
    # and renewed it: Redis and node1 have a newer one.
    wait_until("node1 resumes and renews", lambda: (redis_rank() or 0) >= 1
               and (served_rank(fresh) or 0) >= 1, 40, [fresh])
    assert log_lines(fresh, r'certificate "%s": resuming order .* '
                            r'finalized by node "node0"' % re.escape(cid)), \
        "node1 did not resume node0's order"
    asleep = time.monotonic() - frozen_at
    assert asleep > LEASE_TTL

    newest = redis_rank()
    seen = {"redis": [newest], fresh.name: [served_rank(fresh)],
            stale.name: []}
    since = stale.sidecar.mark()
    stale.thaw()
    fenced = r'another node holds a newer lease|lost the lease'
    settle_by = None
    deadline = time.monotonic() + 30
    while settle_by is None or time.monotonic() < settle_by:
        seen["redis"].append(redis_rank())
        for r in (fresh, stale):
            seen[r.name].append(served_rank(r))
        stale.sidecar._check_alive("after SIGCONT")
        if settle_by is None and log_lines(stale, fenced, since) and \
                (seen[stale.name][-1] or -1) >= newest:
            settle_by = time.monotonic() + 3
        if time.monotonic() > deadline:
            pytest.fail("node0 never showed it was fenced off (%s) or "
                        "never served the newer certificate: %s%s" % (
                            fenced, seen[stale.name][-5:],
                            stale.sidecar.diagnostics()), pytrace=False)
        time.sleep(0.05)

    # Never back: each observer's ranks only grow, and node0 never shows
    # anything older than what Redis had when it woke up.
    for who, ranks in seen.items():
        ranks = [x for x in ranks if x is not None]
        assert ranks == sorted(ranks), "%s went back to an older " \
            "certificate: ranks %s" % (who, ranks)
    assert min(x for x in seen[stale.name] if x is not None) >= newest, \
        "node0 served an older certificate than Redis held: %s (newest " \
        "%d)" % (seen[stale.name], newest)
    # In the end all agree, state_path included.
    wait_until("both serve Redis' certificate", lambda: served_rank(stale)
               == served_rank(fresh) == redis_rank(), 20, [stale, fresh])
    final = redis_rank()
    for r in (stale, fresh):
        leaf = stored_leaf(r, cid)
        assert leaf is not None and rank_of(serial_of(pem_der(leaf)),
                                            pebble) >= newest, r.name
    assert final >= newest


def test_renew_through_the_api_in_a_fleet(tmp_path, pebble, redis, fleet):
    """acmectl renew (POST /v1/certificates/{id}/renew) on the replica
    that did not order the certificate: one new certificate is issued,
    stored in Redis, and served by both."""
    certs = [names_of(0)]
    cid = certs[0][0]
    f = fleet(pebble, 2, certs)
    before = settle(f, tmp_path)[cid]
    # At once: a renewal issued within the second of the first has the
    # same dates, and must still be told apart (order_adopt()).
    code, body = f.replicas[1].renew(cid)
    assert code == 202, (code, body)

    def everywhere():
        stored = redis_leaf(redis, cid)
        return stored is not None and leaf_id(stored) != before and all(
            quick_leaf(r, cid)[0] == pem_der(stored) for r in f.replicas)
    wait_until("both serve a renewed certificate", everywhere, 20,
               f.replicas)
    served = wait_served(f.replicas, certs, pebble, tmp_path)
    assert len(served[cid]) == 1 and before not in served[cid]
    assert len(issued_by_pebble(pebble)) == 2


# ------------------------------------------------------------ Redis away

def test_redis_restart_mid_run(tmp_path, pebble, redis, fleet):
    """Redis killed (SIGKILL) and started again while ten certificates
    are being ordered: every one is issued once and served by both."""
    certs = [names_of(i) for i in range(10)]
    f = fleet(pebble, 2, certs)
    f.start()
    for r in f.replicas:
        r.configure(certs)
    # Mid-run: as soon as a first order is shared (the others are being
    # validated or finalized).
    wait_until("a first order shared", lambda: redis.call(
        "KEYS", "%s:order:*" % PREFIX), 30, f.replicas, step=0.002)
    stored = len(redis.call("KEYS", "%s:cert:*" % PREFIX))
    redis.kill()
    redis.start()
    assert stored < 10, "everything was stored before the restart"

    served = wait_served(f.replicas, certs, pebble, tmp_path, timeout=150)
    for name, ids in served.items():
        assert len(ids) == 1, "%s: replicas serve %d leaves" % (name,
                                                                len(ids))
    issued = issued_by_pebble(pebble)
    assert len(issued) == len(set(issued)) == 10, \
        "Pebble issued %d certificates for 10" % len(issued)
    for r in f.replicas:
        c = r.status()["cluster"]
        assert c["connected"] and c["drops"] >= 1, (r.name, c)
    assert len(redis.call("KEYS", "%s:cert:*" % PREFIX)) == 10


def test_redis_away_30s(tmp_path, pebble, redis, fleet):
    """Redis goes away for 30 s just after three certificates were added
    to the three both replicas serve: frozen (SIGSTOP: connections hang)
    for 10 s, then killed and down for 20 s.  Throughout, every handshake
    on both replicas gets the certificate it got before; once Redis is
    back, the three pending orders complete, each issued once."""
    certs = [names_of(i) for i in range(6)]
    old, new = certs[:3], certs[3:]
    f = fleet(pebble, 2, certs)
    served = settle(f, tmp_path, old)

    for r in f.replicas:
        r.configure(certs)
    assert not redis.call("EXISTS", *("%s:cert:%s" % (PREFIX, n[0])
                                      for n in new)), "nothing was pending"
    redis.freeze()
    start = time.monotonic()
    killed = False
    failures, handshakes, noticed = [], 0, set()
    while time.monotonic() - start < 30:
        if not killed and time.monotonic() - start >= 10:
            redis.kill()
            killed = True
        for r in f.replicas:
            for names in old:
                der, err = quick_leaf(r, names[0])
                handshakes += 1
                if der is None or leaf_id(der) != served[names[0]]:
                    failures.append((round(time.monotonic() - start, 1),
                                     r.name, names[0], err or "another "
                                     "leaf"))
            if r.name not in noticed and \
                    not r.status()["cluster"]["connected"]:
                noticed.add(r.name)
            r.sidecar._check_alive("with Redis away")
        time.sleep(0.05)
    redis.start()
    assert failures == [], "%d of %d handshakes failed while Redis was " \
        "away: %s" % (len(failures), handshakes, failures[:5])
    assert noticed == {r.name for r in f.replicas}, \
        "a replica never reported Redis gone: %s" % noticed

    again = wait_served(f.replicas, certs, pebble, tmp_path, timeout=150)
    for names in old:
        assert again[names[0]] == {served[names[0]]}, names
    for name, ids in again.items():
        assert len(ids) == 1, "%s: replicas serve %d leaves" % (name,
                                                                len(ids))
    issued = issued_by_pebble(pebble)
    assert len(issued) == len(set(issued)) == 6, \
        "Pebble issued %d certificates for 6" % len(issued)
    # The first node back waited for the other before its CA looked.
    failed = [line for r in f.replicas for line in
              r.sidecar.log().splitlines()
              if "authorization for" in line and "failed" in line]
    assert failed == [], failed


# ------------------------------------------------------------ secrets

VOLATILE = re.compile(r"^%s:(members|lease:.*|token:.*|ack:.*)$" % PREFIX)


def durable(snap):
    return {k: v for k, v in snap.items() if not VOLATILE.match(k)}


def test_wrong_secret_file(tmp_path, pebble, redis, fleet):
    """node2 joins with a secret_file of its own: it says so (log and
    GET /v1/status), overwrites nothing in Redis, orders nothing, and
    serves none of the fleet's certificates; no private key is in Redis
    in clear."""
    certs = [names_of(i) for i in range(3)]
    good = write_secret(tmp_path / "secret")
    other = write_secret(tmp_path / "secret-other")
    f = fleet(pebble, 3, certs, secrets=[good, good, other])
    fleet_nodes, intruder = f.replicas[:2], f.replicas[2]
    served = settle(f, tmp_path, replicas=fleet_nodes)
    before = durable(redis.snapshot("%s:*" % PREFIX))
    assert "%s:seal" % PREFIX in before

    intruder.configure(certs)          # read at start
    intruder.start()
    intruder.sidecar.wait_log(
        r"%s:seal: .*this node's secret_file is not the fleet's" % PREFIX)
    verdict = {intruder.name: intruder.sidecar.mark()}
    # The sealed account is refused too, with its key.
    intruder.sidecar.wait_log(r"%s:account:pebble: ignored: its key: "
                              r"sealed with another secret_file" % PREFIX)
    wait_until("node2 reports the mismatch", lambda: intruder.status()[
        "cluster"]["secret"] == "mismatch", 10, [intruder])
    # It is in the fleet (heartbeats), and since its verdict each of its
    # certificates was refused a lease twice: it had every chance to
    # write.
    wait_until("node0 sees node2", lambda: intruder.name in fleet_nodes[0]
               .status()["cluster"]["members"], 10, [intruder])
    for cid in ids_of(certs):
        missing = wait_logged([intruder], r'certificate "%s": no lease '
                              r"\(this node's secret_file is not the "
                              r"fleet's\)" % re.escape(cid), verdict, 15,
                              count=2)
        assert not missing, "node2 never tried to lease %s" % cid
    # Another node's "cert" message: node2 reads the record, cannot open
    # its key, and says so with the key.
    since = {intruder.name: intruder.sidecar.mark()}
    redis.call("PUBLISH", EVENTS, "cert %s node0" % certs[0][0])
    missing = wait_logged([intruder], r"%s:cert:%s: ignored: its key: "
                          r"sealed with another secret_file" % (
                              PREFIX, re.escape(certs[0][0])), since, 5)
    assert not missing, "node2 did not refuse the fleet's certificate"
    # And after that, it carried on trying (and failing) to lease.
    since = {intruder.name: intruder.sidecar.mark()}
    assert not wait_logged([intruder], r"no lease \(this node's "
                           r"secret_file is not the fleet's\)", since, 10)

    after = durable(redis.snapshot("%s:*" % PREFIX))
    assert after == before, "node2 changed %s" % sorted(
        k for k in set(before) | set(after) if before.get(k) != after.get(k))
    for names in certs:
        der, _ = quick_leaf(intruder, names[0])
        assert der is None or leaf_id(der) != served[names[0]], \
            "node2 serves the fleet's %s" % names[0]
    assert len(issued_by_pebble(pebble)) == 3, "node2 ordered"
    for r in fleet_nodes:
        assert r.status()["cluster"]["secret"] == "ok", r.name
    check_unharmed(f, tmp_path, served, "with node2 in", fleet_nodes)
    intruder.sidecar._check_alive("with a secret of its own")
    assert_no_key_in_clear(redis, f.replicas)
