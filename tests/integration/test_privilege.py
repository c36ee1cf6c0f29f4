"""Least privilege: "user NAME [GROUP]" and the systemd unit.

A real daemon and a real Pebble.  The daemon starts as root (the tests run
as root), binds its sockets, then becomes nobody:nogroup: the kernel's own
view of it (/proc/PID/status) must say so, every file it keeps must be
nobody's with the right mode, and no private key nor the EAB HMAC may
appear in its debug log or in any answer of its API.

nobody cannot pass through pytest's 0700 temporary folders, so what the
daemon reads or writes after the switch lives in a folder of /tmp of the
test's own (0755), removed at the end.
"""

import base64
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import types
from pathlib import Path

import pytest

from conftest import (ROOT, SIDECAR, cert_id, check_certificate, write_config,
                      zone_path)

NOBODY = 65534
NOGROUP = 65534
OTHER = ["setpriv", "--reuid=65533", "--regid=%d" % NOGROUP,
         "--clear-groups"]
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOGROUP,
             "--clear-groups"]
CERTS = [(["p.example.test"], None), (["q.example.test"], "rsa:2048")]

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="switching users needs root")


@pytest.fixture
def pdir():
    """A folder nobody can pass through, and its shared zone."""
    d = Path(tempfile.mkdtemp(prefix="acme-priv-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
    try:
        zone_path(d).unlink()
    except FileNotFoundError:
        pass


def b64u(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def setup_conf(pdir, pebble, http_port, certs, extra_top="",
               issuer_extra=""):
    """The config, Pebble's CA and the state folder under pdir."""
    shutil.copy(pebble.ca, pdir / "ca.pem")
    os.chmod(pdir / "ca.pem", 0o644)
    seen = types.SimpleNamespace(directory_url=pebble.directory_url,
                                 ca=str(pdir / "ca.pem"))
    conf = pdir / "acme-sidecar.conf"
    state = pdir / "state" / "pebble"
    write_config(conf, seen, state, http_port, certs,
                 issuer_extra=issuer_extra)
    with open(conf, "a") as f:
        f.write(extra_top)
    os.chmod(conf, 0o644)
    return conf, state


def api(sock, method, path, as_user=()):
    """(status, body text) of one curl call."""
    p = subprocess.run(list(as_user) + [
        "curl", "-sS", "--max-time", "10", "--unix-socket", str(sock),
        "-X", method, "-o", "-", "-w", "\n%{http_code}",
        "http://localhost" + path], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20)
    assert p.returncode == 0, "curl %s %s: %s" % (method, path, p.stderr)
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body


def proc_status(pid):
    """{field: value} of /proc/PID/task/TID/status for every thread."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            out[tid] = dict(line.rstrip("\n").split(":\t", 1)
                            for line in f if ":\t" in line)
    return out


def pem_body_lines(path):
    """The base64 lines of a PEM private key, long enough to be telling."""
    return [line for line in Path(path).read_text().splitlines()
            if not line.startswith("-----") and len(line) >= 16]


def owner_mode(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_runs_as_user(pdir, pebble_factory, http_port, sidecar_factory):
    hmac = secrets.token_bytes(32)
    pebble = pebble_factory(http_port, eab={"kid-1": b64u(hmac)})
    # Readable by the user's group only: a reload reads it as nobody.
    eab = pdir / "eab.key"
    eab.write_text(b64u(hmac) + "\n")
    os.chown(eab, 0, NOGROUP)
    os.chmod(eab, 0o640)
    conf, state = setup_conf(
        pdir, pebble, http_port, CERTS, extra_top="user nobody nogroup;\n",
        issuer_extra="external_account_key kid-1 %s;" % eab)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_log(r"control: listening on")
    sock = pdir / "control.sock"
    events_out = open(pdir.parent / (pdir.name + ".events"), "w+")
    events = subprocess.Popen(
        ["curl", "-sSN", "--unix-socket", str(sock),
         "http://localhost/v1/events"], stdout=events_out,
        stderr=subprocess.DEVNULL)
    try:
        sidecar.wait_certs(state, [cert_id(n, k) for n, k in CERTS])
        sidecar.wait_log(r"running as user nobody \(uid 65534\), group "
                         r"nogroup \(gid 65534\)")
        for names, key in CERTS:
            check_certificate(state, names, key, pebble, pdir)

        # The kernel's view, thread by thread.
        threads = proc_status(sidecar.proc.pid)
        assert len(threads) >= 2, "the writer thread is missing"
        for tid, st in threads.items():
            assert st["Uid"].split() == [str(NOBODY)] * 4, (tid, st["Uid"])
            assert st["Gid"].split() == [str(NOGROUP)] * 4, (tid, st["Gid"])
            assert st["Groups"].split() == [str(NOGROUP)], st["Groups"]
            for cap in ("CapEff", "CapPrm", "CapAmb"):
                assert int(st[cap], 16) == 0, (tid, cap, st[cap])

        # Files, modes, owners.
        nob = (NOBODY, NOGROUP)
        assert owner_mode(state)[:2] == nob and \
            owner_mode(state)[2] == 0o700
        assert owner_mode(state / "account.key") == nob + (0o600,)
        for names, key in CERTS:
            d = state / "certs" / cert_id(names, key)
            real = d.resolve()
            assert owner_mode(real) == nob + (0o700,), real
            assert owner_mode(real / "key.pem") == nob + (0o600,)
            assert owner_mode(d)[0] == NOBODY
        assert owner_mode(state / "certs") == nob + (0o700,)
        assert owner_mode(sock)[:2] == nob and owner_mode(sock)[2] == 0o660
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        zuid, zgid, zmode = owner_mode(zone_path(pdir))
        # Opened as root before the switch: root's, which is what
        # nginx's readers trust by default (owner=).
        assert (zuid, zmode) == (0, 0o640), (zuid, oct(zmode))
        assert "nginx will refuse it" not in sidecar.log()

        # "Changes are for root and the owner": the owner is nobody now.
        code, body = api(sock, "POST", "/v1/reload", AS_NOBODY)
        assert code == 200, body
        code, body = api(sock, "POST", "/v1/reload", OTHER)
        assert code == 403, body
        code, body = api(sock, "GET", "/v1/status", OTHER)
        assert code == 200, body

        # A reload as nobody: a new certificate is issued.
        mark = sidecar.mark()
        more = CERTS + [(["r.example.test"], None)]
        with open(conf, "a") as f:
            f.write("acme_certificate pebble r.example.test;\n")
        sidecar.signal(signal.SIGHUP)
        sidecar.wait_certs(state, ["r.example.test"])
        assert "refused" not in sidecar.log(since=mark), sidecar.log(
            since=mark)

        # No secret anywhere a user can read.
        secrets_ = {"the EAB HMAC (base64url)": b64u(hmac),
                    "the EAB HMAC (base64)":
                    base64.b64encode(hmac).decode().rstrip("="),
                    "the EAB HMAC (hex)": hmac.hex()}
        for line in pem_body_lines(state / "account.key"):
            secrets_["account.key line " + line[:8]] = line
        for names, key in more:
            path = state / "certs" / cert_id(names, key) / "key.pem"
            for line in pem_body_lines(path):
                secrets_["%s line %s" % (path, line[:8])] = line
        texts = {"the log": sidecar.log(this_run=False)}
        routes = ["/v1/status", "/v1/certificates", "/v1/issuers",
                  "/metrics"] + ["/v1/certificates/" + cert_id(n, k)
                                 for n, k in more]
        for route in routes:
            code, body = api(sock, "GET", route)
            assert code == 200, (route, body)
            if route != "/metrics":
                json.loads(body)
            texts["GET " + route] = body
        events.terminate()
        events.wait(10)
        events_out.seek(0)
        texts["GET /v1/events"] = events_out.read()
        assert '"certificate"' in texts["GET /v1/events"], \
            "the event feed saw nothing: " + texts["GET /v1/events"]
        assert len(secrets_) > 10
        for where, text in texts.items():
            for what, value in secrets_.items():
                assert value not in text, "%s appears in %s" % (what, where)
        assert sidecar.stop() == 0
    finally:
        if events.poll() is None:
            events.kill()
            events.wait()
        events_out.close()
        os.unlink(events_out.name)


def test_state_of_root_refused(pdir, sidecar_factory, http_port):
    """An existing state_path is never chowned: the daemon says how."""
    state = pdir / "state" / "old"
    (state / "certs").mkdir(parents=True)
    os.chown(state, NOBODY, NOGROUP)
    (state / "account.key").write_text("not read\n")
    os.chmod(state / "account.key", 0o600)
    conf = pdir / "acme-sidecar.conf"
    conf.write_text(
        "acme_issuer old { uri https://127.0.0.1:1/dir; state_path %s; }\n"
        "challenge_listen 127.0.0.1:%d;\ncontrol_socket %s/control.sock;\n"
        "acme_shared_zone zone=%s:256k;\nuser nobody nogroup;\n" % (
            state, http_port, pdir, zone_path(pdir).name))
    sidecar = sidecar_factory(conf).start()
    assert sidecar.proc.wait(10) == 1
    log = sidecar.log()
    assert re.search(r"acme_issuer \"old\" \(%s:1\): state_path %s: "
                     r"\S+ belongs to uid 0, not to user nobody.*"
                     r"chown -R nobody:nogroup %s" % (
                         re.escape(str(conf)), re.escape(str(state)),
                         re.escape(str(state))), log), log
    assert "managing" not in log, "it went on to start orders: " + log
    assert owner_mode(state / "account.key")[0] == 0, "it chowned a file"


def test_unknown_user(pdir, sidecar_factory, http_port):
    conf = pdir / "acme-sidecar.conf"
    conf.write_text(
        "acme_issuer x { uri https://127.0.0.1:1/dir; state_path %s/s; }\n"
        "challenge_listen 127.0.0.1:%d;\ncontrol_socket %s/control.sock;\n"
        "acme_shared_zone zone=%s:256k;\nuser no-such-user-here;\n" % (
            pdir, http_port, pdir, zone_path(pdir).name))
    t = subprocess.run([str(SIDECAR), "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=10)
    assert t.returncode == 1, t.stdout
    want = '%s:5: unknown user "no-such-user-here" in "user" directive' % conf
    assert want in t.stdout
    assert "test failed" in t.stdout
    sidecar = sidecar_factory(conf).start()
    assert sidecar.proc.wait(10) == 1
    log = sidecar.log()
    assert want in log, log
    # Refused before anything is bound or created.
    assert not (pdir / "control.sock").exists()
    assert not (pdir / "s").exists()
    assert not zone_path(pdir).exists()


def test_unreadable_config_is_said(pdir, pebble, http_port,
                                   sidecar_factory):
    """SIGHUP re-reads as the user: a 0600 root config is named at start,
    and a reload is refused, saying as whom it read."""
    conf, state = setup_conf(pdir, pebble, http_port, CERTS[:1],
                             extra_top="user nobody nogroup;\n")
    os.chmod(conf, 0o600)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_log(r"%s: Permission denied as user nobody: a reload "
                     r"\(SIGHUP\) will fail" % re.escape(str(conf)))
    sidecar.wait_certs(state, [cert_id(*CERTS[0])])
    mark = sidecar.mark()
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_log(r"reload refused, keeping the running configuration: "
                     r".*Permission denied.*; read as user nobody",
                     since=mark)
    assert sidecar.alive()
    assert sidecar.stop() == 0


def test_unit_verifies(tmp_path):
    """systemd-analyze verify says nothing about conf/acme-sidecar.service
    once ExecStart points at a binary that exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd",
                    pytrace=False)
    text = (ROOT / "conf" / "acme-sidecar.service").read_text()
    for want in ("ProtectSystem=strict", "NoNewPrivileges=yes",
                 "ReadWritePaths=/var/lib/acme-sidecar /dev/shm",
                 "ExecReload=/bin/kill -HUP $MAINPID",
                 "ExecStart=/usr/local/sbin/acme-sidecar -c "
                 "/etc/acme-sidecar/acme-sidecar.conf"):
        assert want in text.splitlines(), want
    caps = re.search(r"(?m)^CapabilityBoundingSet=(.*)$", text).group(1)
    assert "CAP_NET_BIND_SERVICE" in caps.split()
    assert "CAP_SYS_ADMIN" not in caps.split()
    assert not re.search(r"(?m)^PrivateDevices=yes", text), \
        "a private /dev hides /dev/shm from nginx"
    unit = tmp_path / "acme-sidecar.service"
    unit.write_text(text.replace("/usr/local/sbin/acme-sidecar",
                                 str(SIDECAR.resolve())))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    about = [line for line in p.stdout.splitlines()
             if "acme-sidecar" in line]
    assert p.returncode == 0 and not about, p.stdout
