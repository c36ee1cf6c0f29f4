"""A real authoritative DNS server for the dns-01 tests: Debian's knotd,
run unprivileged on a free loopback port with its own configuration,
rundir and storage under the test's folder.

    knot = Knot(tmp_path / "knot", zones=["example.test"]).start()
    knot.address            "127.0.0.1:PORT", for Pebble's -dnsserver
    knot.key_file           the TSIG key in BIND's format (nsupdate -k)
    knot.txt(name)          the TXT strings knotd answers for name
    knot.update(zone, "update add ...", ...)   an update through nsupdate
    knot.stop()

Every zone gets an SOA and an NS record.  Updates to a zone are allowed
with the TSIG key only (hmac-sha256, a new secret per server); the zones
in refused= deny every update, signed or not.  A secondary
(Knot(..., primary=knot)) transfers the primary's zones and gets no
NOTIFY, so it lags until refresh() says to poll.

The fixture `knot` starts one server with example.test, `knot_factory`
any number; both fail the test with knotd's log if knotd died before
the test ended.  A test imports the fixtures it uses from here.
"""

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, pebblelib, tail

KNOTD = os.environ.get("KNOTD_BIN", "knotd")
KNOTC = os.environ.get("KNOTC_BIN", "knotc")
START_TIMEOUT = 20.0
KEY_NAME = "acme-test-key"
ALGORITHM = "hmac-sha256"


def bind_key(name, secret):
    """A TSIG key in the format of BIND's tsig-keygen, which nsupdate -k
    (and, next, the daemon's dns_update key=) reads."""
    return ('key "%s" {\n\talgorithm %s;\n\tsecret "%s";\n};\n' %
            (name, ALGORITHM, secret))


def zone_text(zone, serial=1):
    """SOA and NS: the least an authoritative zone has.  Short timers,
    so that a secondary's own polling cannot hide a lag for long."""
    return ("$ORIGIN %s.\n$TTL 60\n"
            "@ SOA ns.%s. hostmaster.%s. %d 60 10 600 1\n"
            "@ NS ns.%s.\n"
            "ns A 127.0.0.1\n") % (zone, zone, zone, serial, zone)


class KnotError(Exception):
    pass


class Knot:
    def __init__(self, directory, zones=("example.test",), refused=(),
                 primary=None):
        self.dir = Path(directory)
        self.zones = list(zones) + list(refused)
        self.refused = set(refused)
        self.primary = primary
        self.port = None
        self.proc = None
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.stopped = False

    def path(self, name):
        return self.dir / name

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def key_file(self):
        return self.path("tsig.key")

    @property
    def control_socket(self):
        return self.path("run") / "knot.sock"

    def _acls(self):
        out = ["acl:",
               "  - id: update-with-key",
               "    key: %s" % KEY_NAME,
               "    action: update",
               "  - id: no-update",
               "    action: update",
               "    deny: on",
               "  - id: transfer",
               "    address: 127.0.0.1",
               "    action: transfer"]
        if self.primary is not None:
            out += ["  - id: notify-from-primary",
                    "    address: 127.0.0.1",
                    "    action: notify"]
        return out

    def _zone_entries(self):
        out = ["zone:"]
        for z in self.zones:
            out.append("  - domain: %s" % z)
            if self.primary is not None:
                out += ["    master: primary",
                        "    acl: [notify-from-primary, transfer]"]
            elif z in self.refused:
                out.append("    acl: [no-update, transfer]")
            else:
                out.append("    acl: [update-with-key, transfer]")
        return out

    def write_config(self):
        run = self.path("run")
        db = self.path("db")
        for d in (self.dir, run, db):
            d.mkdir(parents=True, exist_ok=True)
        lines = [
            "server:",
            '    rundir: "%s"' % run,
            '    pidfile: "%s"' % (run / "knot.pid"),
            "    listen: 127.0.0.1@%d" % self.port,
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "log:",
            "  - target: stderr",
            "    any: info",
            "database:",
            '    storage: "%s"' % db,
            "control:",
            '    listen: "%s"' % self.control_socket,
            "key:",
            "  - id: %s" % KEY_NAME,
            "    algorithm: %s" % ALGORITHM,
            "    secret: %s" % self.secret,
        ]
        if self.primary is not None:
            lines += ["remote:",
                      "  - id: primary",
                      "    address: 127.0.0.1@%d" % self.primary.port]
        lines += self._acls()
        # The zone files are the start only: updates live in knotd's
        # journal and are never written back (zonefile-sync: -1).
        lines += ["template:",
                  "  - id: default",
                  '    storage: "%s"' % self.dir,
                  '    file: "%s.zone"',
                  "    zonefile-sync: -1",
                  "    journal-content: changes"]
        lines += self._zone_entries()
        self.path("knot.conf").write_text("\n".join(lines) + "\n")
        if self.primary is None:
            for z in self.zones:
                self.path(z + ".zone").write_text(zone_text(z))
        self.key_file.write_text(bind_key(KEY_NAME, self.secret))
        self.key_file.chmod(0o600)

    def start(self, timeout=START_TIMEOUT):
        # The port is free when picked, not reserved: retry with another
        # if something took it before knotd bound it.
        for attempt in range(3):
            self.port = free_port(udp_too=True)
            self.write_config()
            try:
                self._start_once(timeout)
                return self
            except KnotError:
                self._kill()
                if attempt == 2 or "bind" not in self.log():
                    raise
        return self

    def _start_once(self, timeout):
        with open(self.path("knotd.log"), "ab") as out:
            self.proc = subprocess.Popen(
                [KNOTD, "-c", str(self.path("knot.conf"))],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=pebblelib.die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KnotError("knotd exited with %d:\n%s" %
                                (self.proc.returncode, self.log()))
            if self._ready():
                return
            time.sleep(0.1)
        raise KnotError("knotd did not load its zones in %ds:\n%s" %
                        (timeout, self.log()))

    def _ready(self):
        """Every zone answers its SOA (a secondary's: once transferred)."""
        for z in self.zones:
            if self.soa_serial(z) is None:
                return False
        return True

    def dig(self, *args):
        p = subprocess.run(["dig", "-p", str(self.port), "@127.0.0.1",
                            "+norec", "+time=2", "+tries=2"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=15)
        return p.returncode, p.stdout

    def soa_serial(self, zone):
        rc, out = self.dig("+short", "SOA", zone)
        fields = out.split()
        if rc != 0 or len(fields) != 7:
            return None
        return int(fields[2])

    def txt(self, name):
        """The TXT strings knotd answers for name ([] for none)."""
        self.check_alive()
        rc, out = self.dig("+short", "TXT", name)
        if rc != 0:
            raise KnotError("dig TXT %s failed (%d): %s" % (name, rc, out))
        return [s.strip('"') for line in out.splitlines()
                for s in line.split()]

    def update(self, zone, *lines):
        """Send an RFC 2136 update of zone ("update add ..." lines)
        with nsupdate and the TSIG key."""
        text = "server 127.0.0.1 %d\nzone %s\n%s\nsend\n" % (
            self.port, zone, "\n".join(lines))
        subprocess.run(["nsupdate", "-t", "5", "-k", str(self.key_file)],
                       input=text, text=True, check=True, timeout=15,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def refresh(self):
        """A secondary polls its primary now (the NOTIFY it lacks)."""
        subprocess.run([KNOTC, "-s", str(self.control_socket),
                        "zone-refresh"], check=True, timeout=15,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def log(self):
        return tail(self.path("knotd.log"), 60)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if not self.stopped and not self.alive():
            raise KnotError("knotd exited with %s:\n%s" %
                            (self.proc and self.proc.returncode, self.log()))

    def _kill(self):
        if self.proc is None:
            return
        pebblelib.terminate(self.proc.pid, self.proc)

    def stop(self):
        """Stops knotd; a knotd that died on its own is an error."""
        died = not self.alive() and not self.stopped
        self.stopped = True
        if died:
            raise KnotError("knotd exited with %s during the test:\n%s" %
                            (self.proc and self.proc.returncode, self.log()))
        self._kill()


@pytest.fixture
def knot_factory(tmp_path):
    """make(name="knot", **Knot's arguments) -> a started Knot.  At the
    end each is stopped, and the test fails with knotd's log if one died
    before."""
    made = []

    def make(name="knot", **kw):
        k = Knot(tmp_path / name, **kw)
        made.append(k)
        return k.start()

    yield make
    errors = []
    for k in made:
        try:
            k.stop()
        except KnotError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def knot(knot_factory):
    """knotd with the zone example.test, updates with knot.key_file."""
    return knot_factory()


# ------------------------------------------- what the dns-01 tests share

def dns01_issuer(name, pebble, tmp_path, publisher):
    """An acme_issuer block over dns-01, publisher its directive
    ("dns_hook PATH ..." or "dns_update ..."), state in tmp_path."""
    return ["acme_issuer %s {" % name,
            "    uri %s;" % pebble.directory_url,
            "    state_path %s;" % (tmp_path / ("state-" + name)),
            "    accept_terms_of_service;",
            "    ssl_trusted_certificate %s;" % pebble.ca,
            "    request_rate off;",
            "    challenge dns-01;",
            "    %s;" % publisher,
            "}"]


def api(sock, path):
    p = subprocess.run(["curl", "-s", "--unix-socket", str(sock),
                        "http://localhost" + path], stdout=subprocess.PIPE,
                       text=True, timeout=10)
    return json.loads(p.stdout)


def wait_backoff(sock, cid, timeout=30):
    """The certificate's API state once it left its order: backoff is
    what a failed order ends in (not pending, not retrying at once)."""
    deadline = time.monotonic() + timeout
    while True:
        got = api(sock, "/v1/certificates/" + cid)
        if got.get("state") == "backoff" or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
