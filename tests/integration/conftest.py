"""Fixtures for the integration tests: a real Pebble, the real daemon.

Every test gets its own temporary folder, its own free ports and a fresh
Pebble (Pebble 2.4.0 can deadlock under load, so nothing is shared), and
everything a test starts is killed at teardown, even when it fails.

The Pebble logic lives in scripts/pebble (the demo and the benchmarks use
it from the shell); it is imported here as a module.
"""

import base64
import hashlib
import importlib.machinery
import importlib.util
import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIDECAR = Path(os.environ.get("ACME_SIDECAR", ROOT / "build" / "acme-sidecar"))

# make memcheck: every daemon a test starts runs under valgrind, which
# writes its findings to ACME_MEMCHECK_LOGS/vg.PID; the Makefile fails on
# any error found there.  Stops and signals work as without it.
MEMCHECK_WRAPPER = []
if os.environ.get("ACME_MEMCHECK_LOGS"):
    MEMCHECK_WRAPPER = [
        "valgrind", "-q", "--leak-check=full",
        "--show-leak-kinds=definite,indirect,possible",
        "--errors-for-leak-kinds=definite,indirect,possible",
        "--log-file=%s/vg.%%p" % os.environ["ACME_MEMCHECK_LOGS"]]
ISSUE_TIMEOUT = 60.0


def _load_pebble_script():
    path = str(ROOT / "scripts" / "pebble")
    loader = importlib.machinery.SourceFileLoader("pebble_script", path)
    spec = importlib.util.spec_from_loader("pebble_script", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


pebblelib = _load_pebble_script()


# ---------------------------------------------------------------- ports

def _port_slice():
    """(first, end) of the ports this process hands out.

    A port is picked now and bound later (Pebble's, the responder's,
    nginx's), so it must not be handed to anyone else meanwhile.  The
    kernel's ephemeral range is out: bind(0) and every outgoing
    connection draw from it.  The ports below it (or above it, if more
    are there) are split between the pytest-xdist workers of a run, one
    slice each, so two workers never pick the same port.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    first, end = max((20000, lo), (hi + 1, 65536),
                     key=lambda r: r[1] - r[0])
    if end - first < 1000:
        first, end = 1024, 65536       # all is ephemeral: share it
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if re.fullmatch(r"gw\d+", worker) and count > 1:
        span = (end - first) // count
        first += int(worker[2:]) % count * span
        end = first + span
    return first, end


_PORTS = _port_slice()
_next_port = [random.randrange(*_PORTS)]


def _bindable(port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port(udp_too=False):
    """A loopback port that is free now (TCP, and UDP if asked), from this
    process's own slice (_port_slice), and not handed out before unless
    the whole slice went round since."""
    first, end = _PORTS
    for _ in range(end - first):
        port = _next_port[0]
        _next_port[0] = first + (port + 1 - first) % (end - first)
        if _bindable(port, socket.SOCK_STREAM) and (
                not udp_too or _bindable(port, socket.SOCK_DGRAM)):
            return port
    raise pebblelib.PebbleError("no free port in %d-%d" % (first, end - 1))


# Pebble's own ports come from the same slice.
pebblelib.free_port = free_port


# ---------------------------------------------------------------- helpers

def cert_id(names, key=None):
    """The daemon's certificate id: first name, plus the key type unless
    it is the default ecdsa:256 ("c.example.test_rsa2048")."""
    if key is None or key == "ecdsa:256":
        return names[0]
    return "%s_%s" % (names[0], key.replace(":", ""))


def zone_name(workdir):
    """A shared zone of this test's own: /dev/shm/<name>, removed at the
    end of the test by the remove_zones fixture."""
    return "acme-test-" + hashlib.sha1(
        str(Path(workdir).resolve()).encode()).hexdigest()[:16]


def zone_path(workdir):
    return Path("/dev/shm") / zone_name(workdir)


def zone_line(workdir, size="1M"):
    return "acme_shared_zone zone=%s:%s;" % (zone_name(workdir), size)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return "(%s: %s)" % (path, e.strerror)


def openssl(*args, input=None, check=True):
    p = subprocess.run(["openssl", *args], input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if check and p.returncode != 0:
        raise AssertionError("openssl %s failed (%d): %s%s" %
                             (" ".join(args), p.returncode, p.stdout,
                              p.stderr))
    return p


def split_pem(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.+?"
                      r"-----END CERTIFICATE-----\n?", text, re.S)


def cert_sans(pem):
    out = openssl("x509", "-noout", "-ext", "subjectAltName",
                  input=pem).stdout
    return {s.strip() for s in out.split("\n", 1)[1].split(",")
            if s.strip()}


def cert_serial(pem):
    return openssl("x509", "-noout", "-serial", input=pem).stdout.strip()


def key_type(key_path):
    """("ec", "P-256") or ("rsa", 2048) from a private key file."""
    text = openssl("pkey", "-in", str(key_path), "-noout", "-text").stdout
    m = re.search(r"NIST CURVE: (\S+)", text)
    if m:
        return ("ec", m.group(1))
    m = re.search(r"Private-Key: \((\d+) bit, \d+ primes\)", text)
    if m and "modulus:" in text:
        return ("rsa", int(m.group(1)))
    return ("unknown", text.splitlines()[0] if text else "")


EXPECTED_KEY = {
    None: ("ec", "P-256"),
    "ecdsa:256": ("ec", "P-256"),
    "ecdsa:384": ("ec", "P-384"),
    "ecdsa:521": ("ec", "P-521"),
    "rsa:2048": ("rsa", 2048),
    "rsa:3072": ("rsa", 3072),
    "rsa:4096": ("rsa", 4096),
}


def mode(path):
    return os.stat(path).st_mode & 0o777


def check_certificate(state, names, key, pebble, workdir):
    """Everything a user can observe about one stored certificate."""
    cid = cert_id(names, key)
    d = Path(state) / "certs" / cid
    chain = (d / "fullchain.pem").read_text()
    blocks = split_pem(chain)
    assert len(blocks) >= 2, (
        "%s/fullchain.pem holds %d certificate(s); a full chain needs the "
        "leaf and the intermediate" % (cid, len(blocks)))
    leaf = workdir / ("%s.leaf.pem" % cid)
    leaf.write_text(blocks[0])
    # Only the intermediates from the chain file itself: that is what
    # nginx will serve, so the chain file alone must be enough.
    untrusted = workdir / ("%s.untrusted.pem" % cid)
    untrusted.write_text("".join(blocks[1:]))
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted",
                str(untrusted), str(leaf), check=False)
    assert v.returncode == 0, "%s: chain does not verify: %s%s" % (
        cid, v.stdout, v.stderr)

    assert cert_sans(blocks[0]) == {"DNS:" + n for n in names}, cid

    key_path = d / "key.pem"
    assert mode(key_path) == 0o600, "%s: key.pem mode %o" % (
        cid, mode(key_path))
    pub_key = openssl("pkey", "-in", str(key_path), "-pubout").stdout
    pub_cert = openssl("x509", "-noout", "-pubkey", input=blocks[0]).stdout
    assert pub_key == pub_cert, "%s: key.pem does not match the cert" % cid
    assert key_type(key_path) == EXPECTED_KEY[key], cid
    assert (d / "meta.json").is_file(), "%s: no meta.json" % cid


def check_account(state):
    key = Path(state) / "account.key"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----"), \
        "account.key is not PKCS#8 PEM"
    assert mode(key) == 0o600, "account.key mode %o" % mode(key)
    url = (Path(state) / "account.url").read_text().strip()
    assert url.startswith("https://127.0.0.1:"), url


def write_config(path, pebble, state, http_port, certs, issuer="pebble",
                 issuer_extra=""):
    """certs: list of (names, key or None)."""
    lines = [
        "# written by tests/integration/conftest.py",
        "acme_issuer %s {" % issuer,
        "    uri %s;" % pebble.directory_url,
        "    state_path %s;" % state,
        "    accept_terms_of_service;",
        "    ssl_trusted_certificate %s;" % pebble.ca,
        "    request_rate off;",
        # Debian's Pebble 2.4.0 can deadlock when a newOrder overlaps a
        # request to an authorization or a challenge.
        "    new_order_exclusive on;",
        "    contact admin@example.test;",
    ]
    if issuer_extra:
        lines.append("    " + issuer_extra)
    lines += ["}", "", "challenge_listen 127.0.0.1:%d;" % http_port,
              "control_socket %s;" % (Path(path).parent / "control.sock"),
              zone_line(Path(path).parent), ""]
    for names, key in certs:
        lines.append("acme_certificate %s %s%s;" % (
            issuer, " ".join(names), " key=" + key if key else ""))
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(tmp, path)


# ---------------------------------------------------------------- daemon

class Sidecar:
    """build/acme-sidecar in the foreground, stderr to a log file."""

    def __init__(self, workdir, config, pebbles=()):
        self.workdir = Path(workdir)
        self.config = Path(config)
        self.logfile = self.workdir / "sidecar.log"
        self.pebbles = list(pebbles)
        self.proc = None
        self.run_offset = 0

    def start(self, *extra):
        with open(self.logfile, "ab") as log:
            self.run_offset = log.tell()
            log.write(b"==== test: starting acme-sidecar\n")
            self.proc = subprocess.Popen(
                MEMCHECK_WRAPPER +
                [str(SIDECAR), "-c", str(self.config), "-v", *extra],
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=pebblelib.die_with_parent,
                cwd=str(self.workdir))
        return self

    def log(self, this_run=True, since=None):
        """The log of this run, or from offset since (see mark())."""
        with open(self.logfile, "rb") as f:
            if since is not None:
                f.seek(since)
            elif this_run:
                f.seek(self.run_offset)
            return f.read().decode(errors="replace")

    def mark(self):
        """The log's current end: pass it as since= to look only at what
        is logged from now on (e.g. after a SIGHUP)."""
        return os.path.getsize(self.logfile)

    def diagnostics(self):
        out = "\n--- acme-sidecar log (tail) ---\n" + tail(self.logfile)
        for p in self.pebbles:
            out += "\n--- %s/pebble.log (tail) ---\n" % p.dir
            out += tail(p.path("pebble.log"), 20)
        return out

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self, what):
        if not self.alive():
            rc = None if self.proc is None else self.proc.returncode
            pytest.fail("acme-sidecar exited (status %s) while %s%s" %
                        (rc, what, self.diagnostics()), pytrace=False)

    def wait_log(self, pattern, timeout=10.0, since=None):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(since=since))
            if m:
                return m
            self._check_alive("waiting for log /%s/" % pattern)
            if time.monotonic() > deadline:
                pytest.fail("no log line matching /%s/ after %.0fs%s" %
                            (pattern, timeout, self.diagnostics()),
                            pytrace=False)
            time.sleep(0.1)

    def wait_certs(self, state, ids, timeout=ISSUE_TIMEOUT):
        """Poll until certs/<id>/fullchain.pem exists for every id."""
        want = list(ids)
        deadline = time.monotonic() + timeout
        while True:
            missing = [i for i in want
                       if not (Path(state) / "certs" / i /
                               "fullchain.pem").is_file()]
            if not missing:
                return
            self._check_alive("waiting for %s" % ", ".join(missing))
            if time.monotonic() > deadline:
                pytest.fail("after %.0fs these certificates are still "
                            "missing in %s/certs: %s%s%s" %
                            (timeout, state, ", ".join(missing),
                             self.story_of(missing), self.diagnostics()),
                            pytrace=False)
            time.sleep(0.2)

    def story_of(self, ids, n=30):
        """The last lines above debug that name one of these
        certificates: why it is missing, which the log's tail may
        have scrolled past."""
        said = ['certificate "%s"' % i for i in ids]
        lines = [l for l in self.log(this_run=False).splitlines(True)
                 if "[debug]" not in l and any(s in l for s in said)]
        return "\n--- what the log says of them ---\n" + "".join(lines[-n:])

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit status.  Kills it if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail("acme-sidecar ignored SIGTERM for %.0fs%s" %
                            (timeout, self.diagnostics()), pytrace=False)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None


class MemcheckSidecar(Sidecar):
    """The daemon under valgrind memcheck: exit status 99 on any memory
    error or leak, and valgrind's summary in the log."""

    VALGRIND = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                "--show-leak-kinds=definite,indirect,possible",
                "--errors-for-leak-kinds=definite,indirect,possible"]

    def start(self, *extra):
        if os.environ.get("ACME_SANITIZED") == "1":
            pytest.skip("valgrind cannot run the sanitizers' build "
                        "(make sanitize); make memcheck runs this test")
        with open(self.logfile, "ab") as log:
            self.run_offset = log.tell()
            self.proc = subprocess.Popen(
                self.VALGRIND + [str(SIDECAR), "-c", str(self.config),
                                 "-v", *extra],
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=pebblelib.die_with_parent,
                cwd=str(self.workdir))
        return self

    def stop_clean(self, timeout=60.0):
        """SIGTERM, then fail unless valgrind found nothing and the
        daemon exited 0."""
        rc = self.stop(timeout=timeout)
        assert "ERROR SUMMARY: 0 errors" in self.log(), \
            "valgrind reported errors" + self.diagnostics()
        assert rc == 0, "exit status %s under valgrind%s" % (
            rc, self.diagnostics())


# ---------------------------------------------------------------- order

# The longest tests (10 s to 2 min each, measured on 2 cores) go first.
# tests/integration/run hands the tests out one at a time, in this order,
# to whichever xdist worker is free (--dist loadgroup, no test in a group):
# a worker that drew one of these near the end would keep the whole run
# waiting for it.  Every other test keeps its place, after these.
LONGEST_FIRST = [
    "test_pod.py",      # builds three images: 2 to 8 minutes
    "test_cluster_faults.py::test_redis_away_30s",
    "test_faults.py::test_ca_outage_60s",
    "test_faults.py::test_nonce_reject_50",
    "test_faults.py::test_kill_9_during_200_orders",
    "test_cluster.py",
    "test_cluster_faults.py::test_redis_restart_mid_run",
    "test_cluster_faults.py::test_kill_9_lease_holders",
    "test_cluster_faults.py::test_fencing_frozen_holder",
    "test_faults.py::test_state_path_fault",
    "test_nginx_module.py::test_renewal_without_reload",
    "test_njs.py::test_njs_renewal_without_reload",
    "test_memcheck.py::test_memcheck_issue_reload_stop",
    "test_challenge_hostile.py::test_idle_connections_beyond_the_cap",
]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = "%s::%s" % (item.path.name, item.name)
        for i, prefix in enumerate(LONGEST_FIRST):
            if name.startswith(prefix):
                return i
        return len(LONGEST_FIRST)
    items.sort(key=rank)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def sidecar_bin():
    if not os.access(SIDECAR, os.X_OK):
        pytest.fail("%s is missing: run make first" % SIDECAR,
                    pytrace=False)
    return SIDECAR


@pytest.fixture(autouse=True)
def remove_zones(tmp_path):
    """Every test's shared zone goes with the test."""
    yield
    try:
        zone_path(tmp_path).unlink()
    except FileNotFoundError:
        pass


@pytest.fixture
def http_port():
    """Where the sidecar's HTTP-01 responder listens (Pebble's httpPort)."""
    return free_port()


@pytest.fixture
def pebble_factory(tmp_path):
    """make(http_port, listen_port=None, env=None, start=True, eab=None,
    validity=None, dns_server=None) -> Pebble.  eab: {kid: base64url HMAC
    key} makes EAB required; validity: lifetime of issued certificates,
    in seconds; dns_server: "HOST:PORT" Pebble resolves through instead
    of challtestsrv (dnslib's knot.address).

    With start=False the certificates, ports and pebble.json are ready
    (directory_url and ca are known) but nothing runs yet.
    """
    started = []

    def make(http_port, listen_port=None, env=None, start=True,
             name="pebble", eab=None, validity=None, bindir=None,
             dns_server=None):
        e = {"PEBBLE_VA_NOSLEEP": "1"}
        e.update(env or {})
        p = pebblelib.Pebble(tmp_path / name, http_port=http_port,
                             listen_port=listen_port, env=e, tied=True,
                             eab=eab, validity=validity, bindir=bindir,
                             dns_server=dns_server)
        started.append(p)
        p.prepare()
        if start:
            p.start()
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def pebble(pebble_factory, http_port):
    return pebble_factory(http_port)


PEBBLE26_BIN = ROOT / "build" / "pebble-2.6" / "usr" / "bin"


@pytest.fixture
def pebble26(pebble_factory, http_port):
    """Pebble 2.6.0 (Debian trixie's, which scripts/install-deps unpacks
    into build/pebble-2.6): it has ARI (renewalInfo, "replaces").  The
    other tests keep bookworm's 2.4.0."""
    if not os.access(PEBBLE26_BIN / "pebble", os.X_OK):
        pytest.fail("%s is missing: run scripts/install-deps" %
                    (PEBBLE26_BIN / "pebble"), pytrace=False)
    return pebble_factory(http_port, name="pebble26", bindir=str(PEBBLE26_BIN))


def pebble26_links(cert_id):
    """Whether Pebble 2.6 finds the certificate a "replaces" names.  It
    looks the CertID's serial up without the zero byte that DER puts
    before a first byte of 0x80 or more (about 1 in 256 of its serials)
    and answers 500; the daemon then orders again without "replaces"."""
    serial = cert_id.split(".")[1]
    return base64.urlsafe_b64decode(serial + "=" * (-len(serial) % 4))[0] \
        != 0


@pytest.fixture
def sidecar_factory(tmp_path, sidecar_bin):
    made = []

    def make(config, pebbles=()):
        s = Sidecar(tmp_path, config, pebbles)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


@pytest.fixture
def fake(tmp_path, http_port):
    """The scriptable fake ACME CA of fake_acme.py."""
    from fake_acme import FakeAcme
    f = FakeAcme(tmp_path / "fake", http_port).start()
    yield f
    f.stop()


@pytest.fixture
def run(tmp_path, http_port, fake, sidecar_factory):
    """A daemon against the fake CA (fake_run.FakeRun), killed at the end."""
    from fake_run import FakeRun
    r = FakeRun(tmp_path, http_port, fake, sidecar_factory)
    yield r
    if r.sidecar is not None:
        r.sidecar.kill()
