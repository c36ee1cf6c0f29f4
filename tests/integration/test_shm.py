"""The shared-memory segment, as the real daemon writes it for nginx.

Read with tests/integration/shmread.py, a reader written from the
contract (proto/acme_shm.h) alone.
"""

import grp
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import shmread
from conftest import cert_id, write_config, zone_path

CERTS = [
    (["a.example.test", "www.a.example.test"], None),
    (["b.example.test"], "rsa:2048"),
]


def ids(certs):
    return [cert_id(n, k) for n, k in certs]


def api_status(workdir):
    """GET /v1/status on the control socket write_config gives the test."""
    out = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(Path(workdir) / "control.sock"),
         "http://localhost/v1/status"], stdout=subprocess.PIPE, check=True)
    return json.loads(out.stdout)


def wait_published(path, cid, timeout=10.0, serial=None):
    """The entry for cid, once present (and, with serial, changed)."""
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            e = shmread.cert(str(path), cid)
            if e is not None and (serial is None or e["serial"] != serial):
                return e
        assert time.monotonic() < deadline, "%s never published %s" % (
            path, cid)
        time.sleep(0.05)


def test_segment_holds_issued_certificates(tmp_path, pebble, http_port,
                                           sidecar_factory):
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble, state, http_port, CERTS)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ids(CERTS))
    seg = zone_path(tmp_path)

    st = os.stat(seg)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 1024 * 1024
    if "www-data" in [g.gr_name for g in grp.getgrall()]:
        assert st.st_gid == grp.getgrnam("www-data").gr_gid

    for names, key in CERTS:
        cid = cert_id(names, key)
        e = wait_published(seg, cid)
        d = state / "certs" / cid
        # What nginx gets is byte for byte what is stored.
        assert e["chain"] == (d / "fullchain.pem").read_text()
        assert e["key"] == (d / "key.pem").read_text()
        assert e["issuer"] == "pebble"
        assert e["not_after"] > time.time()
        for n in names:
            assert shmread.cert(str(seg), n, by="name")["id"] == cid
    assert shmread.cert(str(seg), "nobody.example.test", by="name") is None
    h = shmread.header(open(seg, "rb"))
    assert h["flags"] & shmread.FULL == 0
    assert h["writer_pid"] == sidecar.proc.pid
    # What the image uses (its strings at least), within what the zone
    # uses, within the zone: not the slot, nearly the whole zone.
    zone = api_status(tmp_path)["shared_zone"]
    strings = sum(len(e["chain"]) + len(e["key"])
                  for e in shmread.certs(str(seg)))
    assert zone["size"] == 1024 * 1024, zone
    assert strings < zone["image_size"] <= zone["used"] < zone["size"] / 4, \
        zone

    # A restart serves the same certificates at once, from a later
    # generation, and the file keeps its size.
    gen = h["generation"]
    assert sidecar.stop() == 0
    e = shmread.cert(str(seg), "a.example.test")
    assert e is not None, "the segment must outlive the daemon"
    sidecar.start()
    sidecar.wait_log(r"managing 2 certificates")
    e2 = wait_published(seg, "a.example.test", serial=None)
    deadline = time.monotonic() + 10
    while shmread.header(open(seg, "rb"))["generation"] <= gen:
        assert time.monotonic() < deadline, "no publish after restart"
        time.sleep(0.05)
    assert e2["chain"] == e["chain"]
    assert os.stat(seg).st_size == 1024 * 1024
    assert not re.search(r'certificate "[^"]+" issued',
                         sidecar.log().split("managing")[1])


def test_segment_full_keeps_last_image(tmp_path, pebble, http_port,
                                       sidecar_factory):
    """A zone too small for the next image: the log says so and the
    published image stays what it was."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    one = [(["a.example.test"], "rsa:2048")]
    write_config(conf, pebble, state, http_port, one)
    text = conf.read_text().replace(":1M;", ":32k;")
    conf.write_text(text)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ids(one))
    seg = zone_path(tmp_path)
    first = wait_published(seg, ids(one)[0])

    # About 5 KB each with RSA keys; a 32k zone holds about 32k of them,
    # one copy that both images share.
    more = one + [(["%s.example.test" % c], "rsa:2048") for c in "bcdefgh"]
    write_config(conf, pebble, state, http_port, more)
    conf.write_text(conf.read_text().replace(":1M;", ":32k;"))
    mark = sidecar.mark()
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_certs(state, ids(more))
    m = sidecar.wait_log(r"shared zone \S+ is full: the images need about "
                         r"(\d+) bytes \(.*?\) and the zone holds (\d+)",
                         since=mark)
    # "About": a renewal's new strings beside the old, or holes, can
    # fill the zone before the model alone would.
    assert int(m.group(2)) < 32 * 1024 < 2 * int(m.group(1))
    h = shmread.header(open(seg, "rb"))
    assert h["flags"] & shmread.FULL
    zone = api_status(tmp_path)["shared_zone"]
    assert zone["full"] is True and zone["failed_publishes"] > 0, zone
    assert zone["generation"] == h["generation"], zone
    assert shmread.cert(str(seg), ids(one)[0])["serial"] == first["serial"]
    assert os.stat(seg).st_size == 32 * 1024
    published = [e["id"] for e in shmread.certs(str(seg))]
    assert ids(one)[0] in published
    assert len(published) < len(more)

    # Room again after a reload with fewer certificates: it publishes.
    write_config(conf, pebble, state, http_port, more[:2])
    conf.write_text(conf.read_text().replace(":1M;", ":32k;"))
    mark = sidecar.mark()
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_log(r"shared zone \S+ has room again", since=mark)
    assert sorted(e["id"] for e in shmread.certs(str(seg))) == \
        sorted(ids(more[:2]))
    assert shmread.header(open(seg, "rb"))["flags"] & shmread.FULL == 0
    assert api_status(tmp_path)["shared_zone"]["full"] is False


RESTART_CERTS = [
    (["r1.example.test", "www.r1.example.test"], None),
    (["r2.example.test"], "rsa:2048"),
    (["r3.example.test"], None),
    (["r4.example.test"], "ecdsa:384"),
]


class ZonePoller(threading.Thread):
    """Reads the whole published image every few ms, as a worker that
    has cached nothing would, and notes every read that lacks one of the
    expected certificates or shows another chain, or finds generation
    0."""

    def __init__(self, seg, chains):
        super().__init__(daemon=True)
        self.seg = str(seg)
        self.chains = chains
        self.stopping = threading.Event()
        self.reads = 0
        self.generations = set()
        self.bad = []

    def run(self):
        while not self.stopping.is_set():
            try:
                gen = shmread.header(open(self.seg, "rb"))["generation"]
                found = {e["id"]: e["chain"] for e in shmread.certs(self.seg)}
            except shmread.Torn as e:
                self.bad.append("torn: %s" % e)
                continue
            self.reads += 1
            self.generations.add(gen)
            if gen == 0:
                self.bad.append("generation 0")
            for cid, chain in self.chains.items():
                if found.get(cid) != chain:
                    self.bad.append("generation %d: %s %s" % (
                        gen, cid, "missing" if cid not in found else
                        "with another chain"))
            time.sleep(0.003)


def test_restart_keeps_image_readable(tmp_path, pebble, http_port,
                                      sidecar_factory):
    """A restarted daemon keeps the last image published while it loads
    (an nginx worker that has cached nothing still finds every
    certificate), then publishes its own, which keeps the unchanged
    certificates' blocks and serials."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble, state, http_port, RESTART_CERTS)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ids(RESTART_CERTS))
    seg = zone_path(tmp_path)
    before = {cid: wait_published(seg, cid) for cid in ids(RESTART_CERTS)}
    deadline = time.monotonic() + 10
    while len(shmread.certs(str(seg))) < len(RESTART_CERTS):
        assert time.monotonic() < deadline, "never all published"
        time.sleep(0.05)
    gen = shmread.header(open(seg, "rb"))["generation"]
    assert gen != 0

    poller = ZonePoller(seg, {c: e["chain"] for c, e in before.items()})
    poller.start()
    try:
        time.sleep(0.1)
        assert sidecar.stop() == 0
        time.sleep(0.2)
        mark = sidecar.mark()
        sidecar.start()
        sidecar.wait_log(r"shared zone \S+: generation %d left by a "
                         r"previous run \(4 certificates\) stays "
                         r"published" % gen, since=mark)
        deadline = time.monotonic() + 10
        while shmread.header(open(seg, "rb"))["generation"] <= gen:
            assert time.monotonic() < deadline, "no image after restart"
            time.sleep(0.01)
        time.sleep(0.3)
    finally:
        poller.stopping.set()
        poller.join()
    assert poller.bad == [], poller.bad[:10]
    assert poller.reads > 50
    assert gen in poller.generations and max(poller.generations) > gen
    # Same bytes in state_path: the same blocks, so the same serials.
    for cid, e in before.items():
        after = shmread.cert(str(seg), cid)
        assert after["serial"] == e["serial"], cid
        assert after["key"] == e["key"]
    assert "is not taken up" not in sidecar.log()
