"""Several replicas behind a load balancer, sharing one Redis.

What a user of a fleet observes: the CA issues each certificate once,
every replica serves every certificate, no validation fails although the
CA's request reaches any replica, and Redis never holds a key in clear.
"""

import json
import os
import re
import subprocess
import time

import pytest

from clusterlib import (PREFIX, REDIS_CLI, REDIS_SERVER, Balancer, Redis,
                        Replica, fingerprint,
                        issued_by_pebble, join, names_of, served_leaf,
                        stored_leaf, verify_leaf, write_secret)
from conftest import free_port, openssl, pebble26_links
from nginxlib import MODULE, http_get
from test_control import api

pytestmark = pytest.mark.skipif(
    not MODULE.exists(), reason="%s is not built (nginx-dev missing?)" %
    MODULE)

FLEET_TIMEOUT = 120.0


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path / "redis").start()
    yield r
    r.kill()


@pytest.fixture
def fleet(tmp_path, pebble, http_port, redis):
    """make(n, ncerts) -> replicas, all started, behind the balancer."""
    made = []

    def make(n, ncerts, secret=None, before_start=None):
        """before_start(replica, tmp_path) runs for the last replica."""
        secret = secret or write_secret(tmp_path / "secret")
        certs = [names_of(i) for i in range(ncerts)]
        replicas = [Replica(tmp_path, "node%d" % i, pebble, redis, certs,
                            secret) for i in range(n)]
        if before_start is not None:
            replicas[-1].planted = before_start(replicas[-1], tmp_path)
        made.extend(replicas)
        balancer = Balancer(tmp_path, http_port, replicas).start()
        made.append(balancer)
        for r in replicas:
            r.start()
        join(replicas)
        return replicas, certs

    yield make
    for m in made:
        m.stop()


def wait_served(replicas, certs, pebble, tmp_path, timeout=FLEET_TIMEOUT):
    """Until every replica serves every certificate over TLS, each
    verifying against Pebble's root; returns {name: fingerprint}."""
    deadline = time.monotonic() + timeout
    pending = {(r.name, n[0]) for r in replicas for n in certs}
    byname = {r.name: r for r in replicas}
    served = {}
    while pending:
        for rname, name in sorted(pending):
            leaf = served_leaf(byname[rname], name)
            if leaf is None:
                continue
            ok, out = verify_leaf(leaf, name, pebble, tmp_path)
            if ok:
                pending.discard((rname, name))
                served.setdefault(name, set()).add(fingerprint(leaf))
        if not pending:
            break
        if time.monotonic() > deadline:
            r = byname[sorted(pending)[0][0]]
            pytest.fail("after %.0fs, %d (replica, name) pairs are not "
                        "served, e.g. %s%s" % (timeout, len(pending),
                                               sorted(pending)[:3],
                                               r.sidecar.diagnostics()),
                        pytrace=False)
        for r in replicas:
            r.sidecar._check_alive("waiting for the fleet")
        time.sleep(0.5)
    return served


def account_url(replica, issuer="pebble"):
    out = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(replica.dir / "control.sock"),
         "http://localhost/v1/issuers"], stdout=subprocess.PIPE,
        check=True).stdout
    return next(i["account_url"] for i in json.loads(out)["issuers"]
                if i["name"] == issuer)


def validation_failures(replicas):
    return [line for r in replicas for line in r.sidecar.log().splitlines()
            if "authorization for" in line and "failed" in line]


def plant_own_account(replica, tmp_path):
    """An account node2 had before it joined the fleet: never lost."""
    replica.state.mkdir(mode=0o700, parents=True)
    key = openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                  "ec_paramgen_curve:P-256").stdout
    (replica.state / "account.key").write_text(key)
    (replica.state / "account.url").write_text(
        "https://ca.invalid/acct/own\n")
    os.chmod(replica.state / "account.key", 0o600)
    return key


def test_three_replicas_sixty_certificates(tmp_path, pebble, redis, fleet):
    replicas, certs = fleet(3, 60, before_start=plant_own_account)
    own_key = replicas[2].planted
    served = wait_served(replicas, certs, pebble, tmp_path)

    # One certificate per name, the same one on every replica.
    for name, fps in served.items():
        assert len(fps) == 1, "%s: replicas serve %d different leaves" % (
            name, len(fps))
    issued = issued_by_pebble(pebble)
    assert len(issued) == 60, "Pebble issued %d certificates for 60" % \
        len(issued)
    assert validation_failures(replicas) == []

    # Each replica keeps its own copy in state_path.
    for r in replicas:
        for names in certs:
            assert stored_leaf(r, names[0]) is not None, (r.name, names)

    # The status API shows the fleet.
    for r in replicas:
        st = r.status()
        c = st["cluster"]
        assert c["enabled"] and c["connected"] and c["secret"] == "ok", c
        assert sorted(c["members"]) == ["node0", "node1", "node2"], c
        assert c["node"] == r.name
        assert st["certificates"]["valid"] == 60, st["certificates"]

    # One ACME account for the whole fleet, cached in each state_path.
    accounts = {account_url(r) for r in replicas}
    assert len(accounts) == 1 and None not in accounts, accounts
    for r in replicas:
        assert (r.state / "account.url").read_text().strip() in accounts
    aside = list(replicas[2].state.glob("account.key.own-*"))
    assert len(aside) == 1 and aside[0].read_text() == own_key, aside
    assert (replicas[2].state / "account.key").read_text() != own_key

    # No private key in clear anywhere in Redis.
    for key in redis.keys("*"):
        kind = redis.cli("TYPE", key).strip()
        if kind != "string":
            continue
        value = redis.cli("GET", key)
        assert "PRIVATE KEY" not in value, key
    assert "%s:cert:c0.example.test" % PREFIX in redis.keys("%s:*" % PREFIX)


def test_api_changes_reach_every_node(tmp_path, pebble, redis, fleet):
    """POST on one node issues once and every node keeps it; DELETE on
    another removes it everywhere; with Redis away, both are refused."""
    replicas, certs = fleet(2, 1)
    wait_served(replicas, certs, pebble, tmp_path)
    socks = [r.dir / "control.sock" for r in replicas]
    body = json.dumps({"issuer": "pebble",
                       "identifiers": ["api.example.test"]})

    status, j, _ = api(socks[0], "POST", "/v1/certificates", body=body)
    assert status == 201, j
    cid = j["id"]
    deadline = time.monotonic() + FLEET_TIMEOUT
    for r in replicas:
        while stored_leaf(r, cid) is None:
            assert time.monotonic() < deadline, "%s lacks %s%s" % (
                r.name, cid, r.sidecar.diagnostics())
            time.sleep(0.2)
        ok, out = verify_leaf(stored_leaf(r, cid), "api.example.test",
                              pebble, tmp_path)
        assert ok, out
    assert "api.example.test" in (replicas[1].state /
                                  "certificates.conf").read_text()
    assert len(issued_by_pebble(pebble)) == 2

    status, j, _ = api(socks[1], "DELETE", "/v1/certificates/" + cid)
    assert status == 200, j
    deadline = time.monotonic() + 10
    while api(socks[0], "GET", "/v1/certificates/" + cid)[0] != 404:
        assert time.monotonic() < deadline, replicas[0].sidecar.log()
        time.sleep(0.1)
    assert "api.example.test" not in (replicas[0].state /
                                      "certificates.conf").read_text()
    replicas[0].sidecar.wait_log(r'certificate "%s": deleted on another '
                                 r'node' % re.escape(cid))

    redis.stop()
    deadline = time.monotonic() + 10
    while replicas[0].status()["cluster"]["connected"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, j, _ = api(socks[0], "POST", "/v1/certificates", body=body)
    assert status == 503 and "Redis is out of reach" in \
        j["error"]["message"], j
    assert "api.example.test" not in (replicas[0].state /
                                      "certificates.conf").read_text()


def challenge_port(replica):
    conf = (replica.dir / "acme-sidecar.conf").read_text()
    return int(re.search(r"challenge_listen 127\.0\.0\.1:(\d+);",
                         conf).group(1))


def test_responder_finds_tokens_in_redis(tmp_path, pebble, redis, fleet):
    """The proxy_pass responder answers a token that is in Redis but was
    never announced to this node; a bad value there is a 404, logged."""
    (replica,), _ = fleet(1, 1)
    port = challenge_port(replica)
    token = "T" * 43
    keyauth = token + ".thumbprintthumbprintthumbprintthumbprint12"
    redis.cli("SET", "%s:token:%s" % (PREFIX, token), keyauth)
    status, body = http_get(port, "/.well-known/acme-challenge/" + token)
    assert (status, body) == (200, keyauth)

    status, _ = http_get(port, "/.well-known/acme-challenge/" + "U" * 43)
    assert status == 404
    bad = "V" * 43
    redis.cli("SET", "%s:token:%s" % (PREFIX, bad), "not-for-this-token")
    status, _ = http_get(port, "/.well-known/acme-challenge/" + bad)
    assert status == 404
    replica.sidecar.wait_log(r"%s:token:%s: ignored: not a key "
                             r"authorization" % (PREFIX, bad))


def test_stop_hands_leases_over(tmp_path, pebble, redis, fleet):
    """SIGTERM mid-order: the node leaves the members and gives its
    leases back before it exits, and the other node finishes the work,
    each certificate issued once."""
    replicas, certs = fleet(2, 10)
    # Whichever node reloaded first may hold every lease: stop that one.
    deadline = time.monotonic() + 30
    while True:
        holders = [r for r in replicas if r.status()["cluster"]["leases"]]
        if holders:
            break
        assert time.monotonic() < deadline, replicas[0].sidecar.log()
        time.sleep(0.05)
    gone = holders[0]
    rest = [r for r in replicas if r is not gone]
    # As a pod goes: out of the load balancer first, then SIGTERM.
    gone.nginx.stop()
    gone.sidecar.stop()

    held = [k for k in redis.keys("%s:lease:*" % PREFIX)
            if redis.cli("GET", k).startswith(gone.name + "#")]
    assert held == [], held
    assert redis.cli("ZSCORE", "%s:members" % PREFIX,
                     gone.name).strip() == ""
    wait_served(rest, certs, pebble, tmp_path)
    assert len(issued_by_pebble(pebble)) == 10


class Sentinel:
    """redis-server --sentinel watching one master, quick to fail over."""

    MASTER = "fleetmaster"

    def __init__(self, directory, master_port):
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor %s 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 10000\n" % (
                self.port, self.dir, self.MASTER, master_port, self.MASTER,
                self.MASTER))
        self.proc = None

    def cli(self, *args):
        return subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw",
                               *args], stdout=subprocess.PIPE, text=True,
                              timeout=10).stdout

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(self.conf), "--sentinel"],
            stdout=open(self.dir / "sentinel.log", "ab"),
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while self.cli("PING").strip() != "PONG":
            assert time.monotonic() < deadline, "sentinel did not start"
            time.sleep(0.05)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def role(port):
    return subprocess.run([REDIS_CLI, "-p", str(port), "--raw", "ROLE"],
                          stdout=subprocess.PIPE, text=True,
                          timeout=10).stdout.split("\n")[0]


def test_sentinel_failover(tmp_path, pebble, http_port, redis):
    """cluster sentinel://: the node finds the master through Sentinel,
    and after a failover writes to the new master."""
    standby = Redis(tmp_path / "standby").start()
    sentinel = None
    made = []
    try:
        standby.cli("REPLICAOF", "127.0.0.1", str(redis.port))
        sentinel = Sentinel(tmp_path / "sentinel", redis.port).start()
        deadline = time.monotonic() + 30
        while "127.0.0.1" not in sentinel.cli("SENTINEL", "replicas",
                                              Sentinel.MASTER) or \
                "state=online" not in redis.cli("INFO", "replication"):
            assert time.monotonic() < deadline, "no replica in sync"
            time.sleep(0.2)

        certs = [names_of(0)]
        node = Replica(tmp_path, "node0", pebble, redis, certs,
                       write_secret(tmp_path / "secret"))
        conf = node.dir / "acme-sidecar.conf"
        conf.write_text(conf.read_text().replace(
            "redis://127.0.0.1:%d" % redis.port, "sentinel://127.0.0.1:%d,"
            "127.0.0.1:1/%s" % (sentinel.port, Sentinel.MASTER)))
        made.append(node)
        made.append(Balancer(tmp_path, http_port, [node]).start())
        node.start()
        join([node])
        wait_served([node], certs, pebble, tmp_path)
        assert redis.cli("EXISTS", "%s:cert:c0.example.test" % PREFIX) \
            .strip() == "1"

        sentinel.cli("SENTINEL", "FAILOVER", Sentinel.MASTER)
        deadline = time.monotonic() + 30
        while role(standby.port) != "master":
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.2)

        # A write after the failover lands on the new master.
        body = json.dumps({"issuer": "pebble",
                           "identifiers": ["after.example.test"]})
        deadline = time.monotonic() + 30
        while True:
            status, j, _ = api(node.dir / "control.sock", "POST",
                               "/v1/certificates", body=body)
            if status == 201:
                break
            assert status == 503 and time.monotonic() < deadline, j
            time.sleep(0.2)
        key = "%s:cert:%s" % (PREFIX, j["id"])
        deadline = time.monotonic() + FLEET_TIMEOUT
        while standby.cli("EXISTS", key).strip() != "1":
            assert time.monotonic() < deadline, node.sidecar.log()
            time.sleep(0.2)
        assert node.status()["cluster"]["connected"]
    finally:
        for m in made:
            m.stop()
        if sentinel is not None:
            sentinel.stop()
        standby.kill()


def test_lost_writes_are_put_back(tmp_path, pebble, redis, fleet):
    """A Redis that loses its data (FLUSHALL here; a failover or an old
    AOF in real life) gets the account and the certificates back from
    the nodes when they reconnect, and nothing is ordered again."""
    replicas, certs = fleet(2, 3)
    wait_served(replicas, certs, pebble, tmp_path)
    keys = ["%s:cert:%s" % (PREFIX, n[0]) for n in certs] + \
        ["%s:account:pebble" % PREFIX]
    before = {k: redis.cli("GET", k) for k in keys}
    redis.cli("FLUSHALL")
    redis.cli("CLIENT", "KILL", "TYPE", "normal")
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
    deadline = time.monotonic() + 30
    while redis.cli("EXISTS", *keys).strip() != str(len(keys)):
        assert time.monotonic() < deadline, replicas[0].sidecar.log()
        time.sleep(0.2)
    # The same certificates and account, sealed again.
    for k in keys:
        assert json.loads(redis.cli("GET", k))["v"] == \
            json.loads(before[k])["v"]
    for r in replicas:
        assert served_leaf(r, certs[0][0]) is not None
    assert len(issued_by_pebble(pebble)) == 3
    assert validation_failures(replicas) == []


class AriFleet:
    """Two replicas on Pebble 2.6 behind ca_proxy.CaProxy (which counts
    the renewalInfo requests Pebble does not log), one certificate, the
    fleet's renewalInfo held at the proxy from the start."""

    def __init__(self, tmp_path, pebble, http_port, redis):
        from ca_proxy import CaProxy
        self.proxy = CaProxy(pebble).start()
        self.redis = redis
        self.cid = names_of(0)[0]
        secret = write_secret(tmp_path / "secret")
        self.replicas = [Replica(tmp_path, "node%d" % i, self.proxy, redis,
                                 [names_of(0)], secret) for i in range(2)]
        self.balancer = Balancer(tmp_path, http_port, self.replicas).start()
        self.proxy.hold("/renewalInfo/")
        for r in self.replicas:
            r.start()
        join(self.replicas)

    def wait(self, what, cond, timeout=FLEET_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            assert time.monotonic() < deadline, what + "".join(
                r.sidecar.diagnostics() for r in self.replicas)
            time.sleep(0.1)

    def renewal(self, replica):
        return api(replica.dir / "control.sock", "GET", "/v1/certificates/" +
                   self.cid)[1]["renewal"]

    def renewals(self):
        return [self.renewal(r) for r in self.replicas]

    def asked(self, n=1):
        """The CertIDs of the first n renewalInfo requests held."""
        held = self.wait("%d renewalInfo held" % n, lambda: len(
            self.proxy.held("/renewalInfo/")) >= n and
            self.proxy.held("/renewalInfo/"))
        return [p.rsplit("/", 1)[1] for p in held]

    def lease_holder(self):
        v = self.redis.cli("GET", "%s:lease:%s" % (PREFIX, self.cid))
        return [r for r in self.replicas if v.startswith(r.name + "#")]

    def stop(self):
        for r in self.replicas:
            r.stop()
        self.balancer.stop()
        self.proxy.stop()


@pytest.fixture
def ari_fleet(tmp_path, pebble26, http_port, redis):
    f = AriFleet(tmp_path, pebble26, http_port, redis)
    yield f
    f.stop()


def test_ari_fleet_asks_once_pebble26(ari_fleet, pebble26):
    """ARI across two replicas on Pebble 2.6: the fleet asks renewalInfo
    once per certificate per Retry-After, all replicas show the same
    window and renewal time from source "ari", and the past window Pebble
    gives for a certificate revoked at the CA brings one renewal, with
    "replaces", years before the lifetime rule."""
    from ca_proxy import revoke_at_ca
    from test_ari import cert_id_of
    f, proxy, cid = ari_fleet, ari_fleet.proxy, ari_fleet.cid
    # Revoked before the fleet hears of a window: the first answer waits
    # at the proxy meanwhile, the asking node holding the lease.
    first = f.asked()[0]
    owner = f.wait("the certificate stored", lambda: [
        r for r in f.replicas if stored_leaf(r, cid) is not None and
        cert_id_of(stored_leaf(r, cid)) == first])[0]
    live = owner.state / "certs" / cid
    assert revoke_at_ca(pebble26, stored_leaf(owner, cid),
                        (live / "key.pem").read_text()) == 200
    # The first issuance may take two newOrders (one abandoned when a slow,
    # sanitized node's lease ran out); the renewal must take one.
    before = len(proxy.payloads("/order-plz"))
    proxy.release("/renewalInfo/", forward=True)

    def settled():
        rs = f.renewals()
        ok = all(r["source"] == "ari" and r["ari_cert_id"] not in
                 (None, first) for r in rs)
        return rs if ok else None
    rs = f.wait("every replica on the renewed certificate's window", settled)
    second = rs[0]["ari_cert_id"]
    assert all(r == rs[0] for r in rs), rs
    w = rs[0]["ari_window"]
    assert w["start"] <= rs[0]["at"] <= w["end"], rs[0]
    assert len(issued_by_pebble(pebble26)) == 2
    orders = proxy.payloads("/order-plz")
    assert all("replaces" not in o for o in orders[:before]), orders
    # The abandoned first-issuance newOrder of a slow node may reach the
    # CA after the revocation (seen once in a sanitized make check); only
    # the first issuance orders without "replaces", at most twice.  Where
    # Pebble cannot find the certificate replaced (conftest.pebble26_links)
    # the renewal's order with "replaces" fails and one without follows.
    linked = pebble26_links(first)
    renewal = [o.get("replaces") for o in orders[-1 - (not linked):]]
    assert renewal == [first] + [None] * (not linked), orders
    issuance = len(orders) - len(renewal)
    assert before <= issuance <= 2, orders
    assert sum("replaces" in o for o in orders) == 1, orders
    with open(pebble26.path("pebble.log"), errors="replace") as log:
        assert len(re.findall(r"ARI: order .* is a replacement of",
                              log.read())) == int(linked)
    assert proxy.ari_count(first) == 1, proxy.ari
    assert proxy.ari_count(second) == 1, proxy.ari
    for r in f.replicas:
        assert cert_id_of(stored_leaf(r, cid)) == second


def test_ari_fleet_fenced_pebble26(ari_fleet):
    """A replica that slept past its lease while asking renewalInfo has
    its answer refused: the node that took the lease over asked too, its
    answer is the fleet's, and the sleeper takes it."""
    f = ari_fleet
    f.asked()
    sleeper = f.wait("the asking node's lease", f.lease_holder)[0]
    other = [r for r in f.replicas if r is not sleeper][0]
    sleeper.freeze()
    try:
        f.asked(2)      # the other node, once the lease expired
        assert f.lease_holder() == [other]
        f.proxy.release("/renewalInfo/", forward=True)
        f.wait("the other node's answer",
               lambda: f.renewal(other)["source"] == "ari")
    finally:
        sleeper.thaw()
    sleeper.sidecar.wait_log(r"another node holds a newer lease; its "
                             r"renewalInfo answer is the fleet's", 30)
    rec = json.loads(f.redis.cli("GET", "%s:ari:%s" % (PREFIX, f.cid)))
    assert rec["node"] == other.name, rec
    f.wait("the same renewal on both", lambda: (lambda rs: rs[0] == rs[1] and
           rs[0]["source"] == "ari")(f.renewals()), 30)
