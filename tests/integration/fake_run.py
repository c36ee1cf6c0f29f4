"""One daemon driven against the fake CA (fake_acme.py), with the waits,
checks and diagnostics the failure and regression tests share.

Every failure message carries the daemon's log tail and the requests the
fake CA saw.
"""

import os
import re
import time
from pathlib import Path

import pytest

from conftest import cert_sans, openssl, split_pem, zone_line

ISSUED_TIMEOUT = 30.0


def write_conf(path, http_port, issuers, certs):
    """issuers: {name: (uri, state_path, [extra lines])};
    certs: [(issuer, [names])].  Written atomically, so that a SIGHUP
    never reads half a file."""
    lines = ["# written by tests/integration/fake_run.py"]
    for name, (uri, state, extra) in issuers.items():
        lines += ["acme_issuer %s {" % name,
                  "    uri %s;" % uri,
                  "    state_path %s;" % state,
                  "    accept_terms_of_service;",
                  "    contact admin@example.test;"]
        if not any(e.startswith("request_rate") for e in extra):
            lines.append("    request_rate off;")
        lines += ["    " + e for e in extra]
        lines += ["}", ""]
    lines += ["challenge_listen 127.0.0.1:%d;" % http_port,
              "control_socket %s;" % (Path(path).parent / "control.sock"),
              zone_line(Path(path).parent), ""]
    for issuer, names in certs:
        lines.append("acme_certificate %s %s;" % (issuer, " ".join(names)))
    tmp = str(path) + ".tmp"
    Path(tmp).write_text("\n".join(lines) + "\n")
    os.rename(tmp, path)


class FakeRun:
    """A daemon whose issuer "fake" is the fake CA; tests may add more
    issuers (a real Pebble) to self.issuers before start()."""

    def __init__(self, tmp_path, http_port, fake, sidecar_factory):
        self.tmp = tmp_path
        self.http_port = http_port
        self.fake = fake
        self.factory = sidecar_factory
        self.state = tmp_path / "state-fake"
        self.conf = tmp_path / "acme-sidecar.conf"
        self.issuers = {"fake": (fake.directory_url, self.state, [])}
        self.sidecar = None
        self.t0 = None

    def write_conf(self, names_list, certs=(), issuer=True):
        """names_list: the fake's certificates; certs: (issuer, names)
        pairs for other issuers.  issuer=False leaves every issuer out."""
        write_conf(self.conf, self.http_port,
                   self.issuers if issuer else {},
                   [("fake", n) for n in names_list] + list(certs))

    def start(self, names_list, certs=(), pebbles=(), extra=(),
              sidecar_class=None):
        """extra: more lines for the fake issuer's block."""
        if extra:
            uri, state, _ = self.issuers["fake"]
            self.issuers["fake"] = (uri, state, list(extra))
        self.write_conf(names_list, certs)
        if sidecar_class is None:
            self.sidecar = self.factory(self.conf, pebbles)
        else:
            self.sidecar = sidecar_class(self.tmp, self.conf, pebbles)
        self.sidecar.start()
        self.t0 = time.monotonic()
        return self

    def diagnostics(self):
        return (self.sidecar.diagnostics() +
                "\n--- fake ACME requests (last 30) ---\n" +
                self.fake.summary())

    def fail(self, msg):
        pytest.fail(msg + self.diagnostics(), pytrace=False)

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if not self.sidecar.alive():
                self.fail("acme-sidecar exited (status %s) while waiting "
                          "for %s" % (self.sidecar.proc.returncode, what))
            if time.monotonic() > deadline:
                self.fail("after %.0fs still no %s" % (timeout, what))
            time.sleep(0.1)

    def wait_log(self, pattern, timeout=10.0, since=None):
        rx = re.compile(pattern)
        return self.wait(lambda: rx.search(self.sidecar.log(since=since)),
                         timeout, "log line matching /%s/" % pattern)

    def wait_issued(self, cid, state=None, timeout=ISSUED_TIMEOUT):
        f = Path(state or self.state) / "certs" / cid / "fullchain.pem"
        self.wait(f.is_file, timeout, "certificate %s" % f)

    def sleep_alive(self, until, what):
        """Sleep until t0 + until seconds; the daemon must live through
        it."""
        while time.monotonic() < self.t0 + until:
            if not self.sidecar.alive():
                self.fail("acme-sidecar exited (status %s) %s" %
                          (self.sidecar.proc.returncode, what))
            time.sleep(0.1)

    def warnings(self, *words):
        return [line for line in self.sidecar.log().splitlines()
                if "[warn]" in line and all(w in line for w in words)]

    def leaf(self, cid):
        """The leaf of certs/<cid>/fullchain.pem, checked loadable,
        verified against the fake's CA, and matching key.pem."""
        # Both files from the one generation the link names now, so that a
        # swap of the link between the two reads is no false alarm.
        d = (self.state / "certs" / cid).resolve()
        try:
            blocks = split_pem((d / "fullchain.pem").read_text())
        except OSError as e:
            self.fail("certs/%s/fullchain.pem is not readable: %s" %
                      (cid, e))
        self.check(len(blocks) == 2, "%s: %d certificates in the chain" %
                   (cid, len(blocks)))
        p = openssl("x509", "-noout", "-serial", input=blocks[0],
                    check=False)
        self.check(p.returncode == 0, "%s: the leaf does not load: %s" %
                   (cid, p.stderr))
        path = self.tmp / ("%s.leaf.pem" % cid)
        path.write_text(blocks[0])
        v = openssl("verify", "-CAfile", self.fake.ca_pem, str(path),
                    check=False)
        self.check(v.returncode == 0, "%s: %s%s" % (cid, v.stdout, v.stderr))
        pub_key = openssl("pkey", "-in", str(d / "key.pem"), "-pubout",
                          check=False)
        pub_cert = openssl("x509", "-noout", "-pubkey", input=blocks[0])
        self.check(pub_key.returncode == 0 and
                   pub_key.stdout == pub_cert.stdout,
                   "%s: key.pem does not match the certificate (%s)" %
                   (cid, pub_key.stderr.strip()))
        return blocks[0]

    def check_fake_cert(self, names):
        """The stored certificate for names verifies against the fake's
        CA, matches its key, and names exactly these identifiers."""
        leaf = self.leaf(names[0])
        self.check(cert_sans(leaf) == {"DNS:" + n for n in names},
                   "%s: SANs %s" % (names[0], sorted(cert_sans(leaf))))
