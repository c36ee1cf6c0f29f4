"""Local attackers and hostile files (issue 12).

What a local user with ordinary rights can put where the daemon looks: a
state folder made before the daemon made it, a symbolic link in its place,
a FIFO where a file is expected, a configuration that includes itself
through globs, a damaged meta.json, a pending order that points elsewhere.
The daemon must refuse what is not its own with a message that says what
and where, never hang (SIGTERM still stops it), and lose nothing it had.

The tests run as root; the attacker's steps run in a forked child that has
become nobody.  Nothing here needs Pebble: a CA that never answers is
enough where the stored certificates are the point, and the fake CA of
fake_acme.py where an order is.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import shmread
from conftest import SIDECAR, free_port, openssl, zone_line, zone_path

NOBODY = 65534
NOGROUP = 65534
T_TIMEOUT = 10          # acme-sidecar -t; it used to hang on a FIFO

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the attacker is another uid")


# ---------------------------------------------------------------- helpers

def as_nobody(fn, *args):
    """Run fn(*args) in a child that is nobody:nogroup, with no other
    group; raise if it failed."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(NOGROUP, NOGROUP, NOGROUP)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            os.umask(0o022)
            fn(*args)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker failed"


@pytest.fixture
def shared():
    """A folder like /tmp: everyone may create in it (sticky, 1777), so
    nobody can get there first.  pytest's tmp_path is 0700."""
    d = Path(tempfile.mkdtemp(prefix="acme-hostile-", dir="/tmp"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_cert(workdir, name, days=60):
    """A self-signed certificate for name and its PKCS#8 key (PEM)."""
    key = Path(workdir) / ("%s.key" % name)
    crt = Path(workdir) / ("%s.crt" % name)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
            "-out", str(crt), "-days", str(days), "-subj", "/CN=" + name,
            "-addext", "subjectAltName=DNS:" + name)
    return crt.read_text(), key.read_text()


def plant_cert(state, cid, chain, key, meta=None, gen=1):
    """What store.c would have written: certs/ID -> ID@GEN/."""
    certs = Path(state) / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    name = "%s@%016x" % (cid, gen)
    g = certs / name
    g.mkdir(mode=0o700)
    (g / "fullchain.pem").write_text(chain)
    (g / "key.pem").write_text(key)
    os.chmod(g / "key.pem", 0o600)
    if meta is not None:
        (g / "meta.json").write_text(meta)
    os.symlink(name, certs / cid)
    return g


def write_conf(workdir, state, certs=("a.example.test",), uri=None,
               issuer_extra=(), top_extra=(), socket_path=None):
    """A configuration of the test's own: its CA (by default one that
    never answers), ports, socket and zone."""
    if uri is None:
        uri = "https://127.0.0.1:%d/dir" % free_port()
    lines = ["acme_issuer test {",
             "    uri %s;" % uri,
             "    state_path %s;" % state,
             "    accept_terms_of_service;",
             "    request_rate off;"]
    lines += ["    " + x for x in issuer_extra]
    lines += ["}",
              "challenge_listen 127.0.0.1:%d;" % free_port(),
              "control_socket %s;" % (socket_path or
                                      Path(workdir) / "control.sock"),
              zone_line(workdir)]
    lines += list(top_extra)
    lines += ["acme_certificate test %s;" % c for c in certs]
    conf = Path(workdir) / "acme-sidecar.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def run_t(conf, timeout=T_TIMEOUT):
    """acme-sidecar -t; a hang fails the test instead of the suite."""
    try:
        p = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("acme-sidecar -t -c %s still running after %ds" %
                    (conf, timeout), pytrace=False)
    return p.returncode, p.stdout + p.stderr


def zone_cert(workdir, cid):
    try:
        return shmread.cert(str(zone_path(workdir)), cid)
    except (FileNotFoundError, ValueError):
        return None


def wait_exit(sidecar, timeout=10):
    try:
        return sidecar.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def wait_zone(sidecar, workdir, cid, timeout=10):
    """The zone entry of cid once published, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = zone_cert(workdir, cid)
        if c is not None or not sidecar.alive():
            return c
        time.sleep(0.1)
    return None


def stop_in_time(sidecar, timeout=5):
    """SIGTERM must stop the daemon: True if it did within timeout."""
    sidecar.signal(signal.SIGTERM)
    try:
        sidecar.proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        sidecar.kill()
        return False


# ---------------------------------------------------- 1. folders not ours

def attacker_state_folder(state, chain, key):
    """nobody makes the state folder first, with a certificate of theirs
    in it for the daemon to serve."""
    os.mkdir(state, 0o755)
    plant_cert(state, "a.example.test", chain, key,
               meta=json.dumps({"identifiers": ["a.example.test"]}))


def attacker_state_link(shared, state, chain, key):
    """nobody plants a symbolic link where the state folder will be."""
    theirs = shared / "theirs"
    os.mkdir(theirs, 0o755)
    attacker_state_folder(theirs / "state", chain, key)
    os.symlink(theirs / "state", state)


@pytest.mark.parametrize("how", ["folder", "symlink"])
def test_state_folder_of_another_user(how, shared, tmp_path,
                                      sidecar_factory):
    chain, key = make_cert(tmp_path, "a.example.test")
    state = shared / "state"
    if how == "folder":
        as_nobody(attacker_state_folder, state, chain, key)
        what = "%s: folder owned by user nobody (uid 65534), mode 0755" % \
            state
    else:
        as_nobody(attacker_state_link, shared, state, chain, key)
        what = "%s: symbolic link owned by user nobody (uid 65534)" % state
    conf = write_conf(tmp_path, state)

    sidecar = sidecar_factory(conf).start()
    rc = wait_exit(sidecar, timeout=3)
    served = zone_cert(tmp_path, "a.example.test")
    theirs_served = served is not None and served["key"] == key
    assert not theirs_served, \
        "the daemon serves the attacker's key" + sidecar.diagnostics()
    assert rc is not None and rc != 0, \
        "the daemon runs with a state folder of nobody's" + \
        sidecar.diagnostics()
    assert what in sidecar.log(), sidecar.log()
    assert "only root may own it" in sidecar.log(), sidecar.log()

    rc, out = run_t(conf)
    assert rc != 0, "-t accepted a state folder of nobody's:\n" + out
    assert what in out, out


def attacker_socket_folder(folder):
    """nobody makes the control socket's folder first, to put a socket of
    their own there once the daemon's is bound."""
    os.mkdir(folder)
    os.chmod(folder, 0o777)


def test_socket_folder_of_another_user(shared, tmp_path, sidecar_factory):
    folder = shared / "run"
    as_nobody(attacker_socket_folder, folder)
    sock = folder / "control.sock"
    conf = write_conf(tmp_path, tmp_path / "state", socket_path=sock)
    sidecar = sidecar_factory(conf).start()
    rc = wait_exit(sidecar, timeout=3)
    assert rc is not None and rc != 0, \
        "the daemon listens in a folder of nobody's" + sidecar.diagnostics()
    assert not sock.exists()
    assert "control_socket %s: %s: folder owned by user nobody (uid 65534), " \
        "mode 0777" % (sock, folder) in sidecar.log(), sidecar.log()


def test_state_folder_writable_by_others(shared, tmp_path, sidecar_factory):
    """root's, but 0777: anyone could swap what the daemon writes."""
    state = shared / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    conf = write_conf(tmp_path, state)
    rc, out = run_t(conf)
    assert rc != 0, out
    assert "%s: folder owned by user root (uid 0), mode 0777: others than " \
        "its owner may write to it" % state in out, out


def test_state_folder_in_a_pods_volume(shared, tmp_path, sidecar_factory):
    """A Kubernetes emptyDir is 0777 without the sticky bit, and the pod's
    containers are its only writers: the daemon takes its own folder in
    it, says once that the volume is open to others, and starts."""
    volume = shared / "emptydir"
    volume.mkdir()
    os.chmod(volume, 0o777)
    state = volume / "state"
    conf = write_conf(tmp_path, state)
    rc, out = run_t(conf)
    assert rc == 0, out
    sidecar = sidecar_factory(conf).start()
    sidecar.wait_log(r"control: listening on")
    warned = [line for line in sidecar.log().splitlines()
              if "%s: mode 0777: others than its owner may write to this "
              "folder, and it has no sticky bit" % volume in line]
    assert len(warned) == 1, sidecar.log()
    assert stop_in_time(sidecar)


def test_state_folder_of_ours_is_used(shared, tmp_path, sidecar_factory):
    """The control: root's own state folder in the same shared /tmp, and
    its parents created by the daemon, are accepted and used."""
    state = shared / "new" / "state"
    conf = write_conf(tmp_path, state)
    rc, out = run_t(conf)
    assert rc == 0, out
    sidecar = sidecar_factory(conf).start()
    sidecar.wait_log(r"control: listening on")
    # An unreachable CA: the daemon keeps trying, and keeps running.
    time.sleep(0.5)
    assert sidecar.alive(), sidecar.diagnostics()
    assert stop_in_time(sidecar)


# ---------------------------------------------------- 2. FIFOs for files

def fifo(path):
    os.mkfifo(path, 0o644)
    return path


FIFO_CASES = {
    # case: (issuer lines, top lines, the FIFO, line of the directive)
    "include": ((), ("include {fifo};",), "in.conf", 10),
    "secret_file": ((), ("cluster redis://127.0.0.1:1 secret_file={fifo};",),
                    "secret", 10),
    "password_file": ((), ("cluster redis://127.0.0.1:1 password_file={fifo} "
                           "secret_file={secret};",), "password", 10),
    "external_account_key": (("external_account_key kid-1 {fifo};",), (),
                             "eab.key", 6),
    "account_key": (("account_key {fifo};",), (), "account.pem", 6),
    "ssl_trusted_certificate": (("ssl_trusted_certificate {fifo};",), (),
                                "ca.pem", 6),
}


@pytest.mark.parametrize("case", sorted(FIFO_CASES))
def test_fifo_in_configuration(case, tmp_path):
    """A FIFO where the configuration names a file: -t says so at the
    directive's FILE:LINE instead of waiting for a writer forever."""
    issuer, top, name, line = FIFO_CASES[case]
    f = fifo(tmp_path / name)
    secret = tmp_path / "secret.ok"
    secret.write_text("s3cret-s3cret-s3cret-s3cret\n")
    conf = write_conf(tmp_path, tmp_path / "state",
                      issuer_extra=[x.format(fifo=f) for x in issuer],
                      top_extra=[x.format(fifo=f, secret=secret)
                                 for x in top])
    rc, out = run_t(conf)
    assert rc != 0, out
    assert "%s:%d: " % (conf, line) in out, out
    assert "is not a regular file (a FIFO)" in out, out
    assert str(f) in out, out


def test_fifo_as_the_configuration(tmp_path):
    conf = fifo(tmp_path / "acme-sidecar.conf")
    rc, out = run_t(conf)
    assert rc != 0, out
    assert '"%s" is not a regular file (a FIFO)' % conf in out, out


def test_fifo_in_state_path(tmp_path):
    """certificates.conf of state_path, read with the configuration."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    f = fifo(state / "certificates.conf")
    conf = write_conf(tmp_path, state)
    rc, out = run_t(conf)
    assert rc != 0, out
    assert '"%s" is not a regular file (a FIFO)' % f in out, out


def test_fifo_in_stored_files(tmp_path, sidecar_factory):
    """FIFOs for a pending order and a meta.json: the daemon starts,
    serves what it has, and SIGTERM stops it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    chain, key = make_cert(tmp_path, "a.example.test")
    plant_cert(state, "a.example.test", chain, key,
               meta=json.dumps({"identifiers": ["a.example.test"]}))
    (state / "pending").mkdir(mode=0o700)
    fifo(state / "pending" / "a.example.test.json")
    chain_b, key_b = make_cert(tmp_path, "b.example.test")
    g = plant_cert(state, "b.example.test", chain_b, key_b)
    fifo(g / "meta.json")
    conf = write_conf(tmp_path, state,
                      certs=("a.example.test", "b.example.test"))
    sidecar = sidecar_factory(conf).start()
    served = wait_zone(sidecar, tmp_path, "a.example.test")
    served_b = wait_zone(sidecar, tmp_path, "b.example.test")
    stopped = stop_in_time(sidecar)
    log = sidecar.log()
    assert stopped, "SIGTERM did not stop the daemon" + sidecar.diagnostics()
    assert served is not None and served["key"] == key, log
    assert "pending/a.example.test.json: not a regular file but a FIFO" \
        in log, log
    # The FIFO meta.json is replaced by one rebuilt from the certificate.
    assert served_b is not None and served_b["key"] == key_b, log
    assert stat.S_ISREG(os.lstat(g / "meta.json").st_mode)


# ---------------------------------------------------- 3. include fan-out

def test_include_fan_out(tmp_path):
    """Seven levels of ten files, each including all of the next level:
    no file includes itself and no level is deep, yet a load would open
    ten million files.  The number of files one load reads is capped."""
    levels, width = 7, 10
    for k in range(1, levels + 1):
        d = tmp_path / ("L%d" % k)
        d.mkdir()
        nxt = "include %s/L%d/*.conf;\n" % (tmp_path, k + 1) \
            if k < levels else "# the last level\n"
        for i in range(width):
            (d / ("%02d.conf" % i)).write_text(nxt)
    conf = write_conf(tmp_path, tmp_path / "state",
                      top_extra=["include %s/L1/*.conf;" % tmp_path])
    t0 = time.monotonic()
    rc, out = run_t(conf)
    assert rc != 0, out
    assert "too many files included (more than 4096)" in out, out
    assert time.monotonic() - t0 < 5, "the cap took %.1fs to trip" % (
        time.monotonic() - t0)


def test_include_total_size(tmp_path):
    """One big file included many times: the bytes one load reads are
    capped too, at the include that goes over."""
    big = tmp_path / "big.conf"
    big.write_text(("#" * 999 + "\n") * 1000)        # 1,000,000 bytes
    conf = write_conf(tmp_path, tmp_path / "state",
                      top_extra=["include %s;" % big] * 20)
    rc, out = run_t(conf)
    assert rc != 0, out
    # Lines 10.. are the includes: the 17th copy is one too many.
    assert "%s:26: included files are too large (more than 16777216 " \
        "bytes in all)" % conf in out, out


# ---------------------------------------------------- 4. damaged meta.json

@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_damaged_meta_json(damage, tmp_path, sidecar_factory):
    """Key and chain intact and matching: the certificate stays served,
    and meta.json is written anew from the certificate itself."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    names = ["a.example.test"]
    chain, key = make_cert(tmp_path, names[0])
    g = plant_cert(state, names[0], chain, key,
                   meta='{"identifiers": ["a.exa' if damage == "garbage"
                   else None)
    conf = write_conf(tmp_path, state)
    sidecar = sidecar_factory(conf).start()
    served = wait_zone(sidecar, tmp_path, names[0], timeout=5)
    log = sidecar.log()
    assert stop_in_time(sidecar)
    assert served is not None, "the certificate was dropped:\n" + log
    assert served["key"] == key and served["chain"] == chain
    assert "%s/meta.json" % g in log and "rebuilt" in log, log
    assert "ordering a new one" not in log, log
    meta = json.loads((g / "meta.json").read_text())
    assert meta["identifiers"] == names, meta
    assert meta["key"] == "ecdsa:256", meta
    nb = openssl("x509", "-noout", "-startdate", input=chain).stdout
    assert meta["not_before"] == served["not_before"], (meta, nb)
    assert meta["not_after"] == served["not_after"], meta
    assert not [p for p in g.iterdir() if p.name.startswith(".")], \
        "a temp file was left behind"


# --------------------------------------------- 5. URLs read from the state

class Listener:
    """A loopback port that records whoever connects: where a planted
    URL would send the daemon's signed requests."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(1)
            try:
                self.seen.append(c.recv(4096))
            except OSError:
                self.seen.append(b"")
            c.close()

    def close(self):
        self.done = True
        self.thread.join()
        self.sock.close()


def test_pending_order_elsewhere(tmp_path, fake, sidecar_factory):
    """A pending order whose URL is not the CA's (another origin, plain
    http) is not resumed: no request goes there, and the stored
    certificate stays served."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    name = "a.example.test"
    chain, key = make_cert(tmp_path, name)
    plant_cert(state, name, chain, key,
               meta=json.dumps({"identifiers": [name]}))
    other = Listener()
    (state / "pending").mkdir(mode=0o700)
    url = "http://127.0.0.1:%d/order/1" % other.port
    _, new_key = make_cert(tmp_path, "new")
    (state / "pending" / (name + ".json")).write_text(json.dumps(
        {"order": url, "identifiers": [name], "key": new_key}))
    conf = write_conf(tmp_path, state, uri=fake.directory_url)
    sidecar = sidecar_factory(conf).start()
    try:
        sidecar.wait_log(r"account \S+ ready")
        served = wait_zone(sidecar, tmp_path, name)
        time.sleep(1.5)
        log = sidecar.log()
    finally:
        other.close()
        assert stop_in_time(sidecar)
    assert other.seen == [], "a request went to the planted URL: %r" % (
        other.seen[:1],)
    assert "resuming order %s" % url not in log, log
    assert "certificate \"%s\": the pending order %s is not on the CA's " \
        "origin (%s); not resumed" % (name, url, fake.directory_url) in log, \
        log
    assert served is not None and served["key"] == key, log


def test_bad_account_url_names_it(tmp_path, fake, sidecar_factory):
    """A damaged account.url: the message says the account URL, not the
    account key, is what is wrong."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-out", str(state / "account.key"))
    (state / "account.url").write_text("https://a\nhttps://b\n")
    conf = write_conf(tmp_path, state, uri=fake.directory_url)
    sidecar = sidecar_factory(conf).start()
    m = sidecar.wait_log(r"issuer \"test\": ([^\n]*account\.url[^\n]*)")
    assert stop_in_time(sidecar)
    line = m.group(1)
    assert "account key" not in line, line
    assert line.startswith("loading the account: %s/account.url: not a "
                           "single URL line" % state), line
    # Nothing stored is lost: the key is the one we put there.
    assert (state / "account.key").read_text().startswith(
        "-----BEGIN PRIVATE KEY-----")
