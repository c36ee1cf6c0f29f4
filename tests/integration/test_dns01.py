"""dns-01 through a dns_hook program, against Pebble and the DNS server
of pebble-challtestsrv, which Pebble asks: the hooks set and clear TXT
records through challtestsrv's management API, as a real hook would
through a DNS provider's."""

import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (ROOT, cert_sans, free_port, openssl, split_pem,
                      write_config, zone_name, ISSUE_TIMEOUT)
from nginxlib import (MODULE, fingerprint, handshake, http_block_head,
                      main_block, nginx_factory, verify_served)  # noqa
# The njs reader's harness, and its fixtures (zone, fake_segment, nginx).
from test_njs import (der_digest, fake_segment, nginx, self_signed,  # noqa
                      tls_leaf, zone)

ACMECTL = Path(os.environ.get("ACMECTL", ROOT / "build" / "acmectl"))

# The hook: "add|del FQDN VALUE", as dns_hook.c calls it.
HOOK = """#!/bin/sh
set -e
echo "hook $1 $2 starting"
case "$1" in
add) curl -sSf -d '{"host": "'"$2"'", "value": "'"$3"'"}' \\
        http://127.0.0.1:%(port)d/set-txt ;;
del) curl -sSf -d '{"host": "'"$2"'"}' http://127.0.0.1:%(port)d/clear-txt ;;
*) exit 2 ;;
esac
echo "hook $1 $2 done"
"""


def hook(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    path.chmod(0o755)
    return path


def txt_records(port, name):
    """The TXT strings challtestsrv's DNS answers for name (UDP query)."""
    qid = random.randrange(1 << 16)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 16, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(4096)
    rid, _, qd, an = struct.unpack(">HHHH", r[:8])
    assert rid == qid, "DNS answer to another query"
    pos = 12
    for _ in range(qd):                 # the question, echoed
        while r[pos] != 0:
            pos += 1 + r[pos]
        pos += 5
    out = []
    for _ in range(an):
        if r[pos] & 0xc0 == 0xc0:       # a compressed name
            pos += 2
        else:
            while r[pos] != 0:
                pos += 1 + r[pos]
            pos += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[pos:pos + 10])
        pos += 10
        if rtype == 16:
            data, i = r[pos:pos + rdlen], 0
            while i < len(data):
                out.append(data[i + 1:i + 1 + data[i]].decode())
                i += 1 + data[i]
        pos += rdlen
    return out


def api(sock, path):
    p = subprocess.run(["curl", "-s", "--unix-socket", str(sock),
                        "http://localhost" + path], stdout=subprocess.PIPE,
                       text=True, timeout=10)
    return json.loads(p.stdout)


def hook_processes(path):
    """Processes whose command line names path."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path("/proc", pid, "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmd:
            found.append(int(pid))
    return found


def verify(state, cid, names, pebble, tmp_path):
    chain = (Path(state) / "certs" / cid / "fullchain.pem").read_text()
    blocks = split_pem(chain)
    leaf = tmp_path / (cid + ".leaf.pem")
    leaf.write_text(blocks[0])
    rest = tmp_path / (cid + ".chain.pem")
    rest.write_text("".join(blocks[1:]))
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted", str(rest),
                str(leaf), check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    assert cert_sans(blocks[0]) == {"DNS:" + n for n in names}


def test_dns01_wildcard_and_hostile_hooks(tmp_path, pebble, http_port,
                                          sidecar_factory):
    """A wildcard plus apex certificate is issued over dns-01 through a
    hook, and its records are gone afterwards.  Beside it, hooks that
    hang, fail or flood the log each cost only their own certificate."""
    mgmt = pebble.chall_mgmt_port
    good = hook(tmp_path, "good.sh", HOOK % {"port": mgmt})
    # Megabytes of output, then the real work: the log is capped.
    flood = hook(tmp_path, "flood.sh", "#!/bin/sh\n"
                 "head -c 3000000 /dev/zero | tr '\\0' 'x'\n"
                 "exec %s \"$@\"\n" % good)
    fails = hook(tmp_path, "fails.sh", "#!/bin/sh\n"
                 "echo 'provider says: bad credentials' >&2\nexit 1\n")
    hangs = hook(tmp_path, "hangs.sh", "#!/bin/sh\nsleep 300\n")
    # Latin-1, not UTF-8: the API must show it, not stop on it.
    latin1 = hook(tmp_path, "latin1.sh", "#!/bin/sh\n"
                  "printf 'provider says: caf\\351\\n' >&2\nexit 1\n")

    state = tmp_path / "state"
    conf = tmp_path / "sidecar.conf"
    write_config(conf, pebble, state, http_port,
                 [(["*.example.test", "example.test"], None)],
                 # challtestsrv answers without AA: it is no
                 # authoritative server the propagation check could ask.
                 issuer_extra="challenge dns-01;\n    dns_hook %s;\n"
                 "    dns_check off;" % good)
    extra = []
    missing = tmp_path / "no-such-hook"
    for name, path, timeout in (("flood", flood, ""),
                                ("fails", fails, ""),
                                ("missing", missing, ""),
                                ("latin1", latin1, ""),
                                ("hangs", hangs, " timeout=2s")):
        extra += [
            "acme_issuer %s {" % name,
            "    uri %s;" % pebble.directory_url,
            "    state_path %s;" % (tmp_path / ("state-" + name)),
            "    accept_terms_of_service;",
            "    ssl_trusted_certificate %s;" % pebble.ca,
            "    request_rate off;",
            "    challenge dns-01;",
            "    dns_hook %s%s;" % (path, timeout),
            "    dns_check off;",
            "}",
            "acme_certificate %s %s.example.test;" % (name, name),
        ]
    with open(conf, "a") as f:
        f.write("\n".join(extra) + "\n")

    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ["_.example.test"], ISSUE_TIMEOUT)
    sidecar.wait_certs(tmp_path / "state-flood", ["flood.example.test"],
                       ISSUE_TIMEOUT)
    verify(state, "_.example.test", ["*.example.test", "example.test"],
           pebble, tmp_path)
    verify(tmp_path / "state-flood", "flood.example.test",
           ["flood.example.test"], pebble, tmp_path)

    sidecar.wait_log(r'dns_hook %s add _acme-challenge\.fails\.example\.test\. '
                     r'exited with status 1 \(its last line: "provider says: '
                     r'bad credentials"\)' % fails, timeout=30)
    sidecar.wait_log(r'dns_hook %s add _acme-challenge\.hangs\.example\.test\. '
                     r'timed out after 2s and was killed' % hangs, timeout=30)
    sidecar.wait_log(r'dns_hook %s add _acme-challenge\.missing\.example\.test\. '
                     r'exited with status 127 \(its last line: "cannot '
                     r'execute it: missing, or not executable by the '
                     r'daemon\'s user"\)' % missing, timeout=30)
    sock = tmp_path / "control.sock"
    for name in ("fails", "hangs", "missing"):
        got = api(sock, "/v1/certificates/%s.example.test" % name)
        assert got["state"] == "backoff", got
        assert "dns_hook" in got["last_error"]["message"], got
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = api(sock, "/v1/certificates/latin1.example.test")
        if got["last_error"] is not None:
            break
        time.sleep(0.2)
    assert got["state"] == "backoff", got
    assert '(its last line: "provider says: caf?")' in \
        got["last_error"]["message"], got
    listed = {c["id"]: c for c in api(sock, "/v1/certificates")
              ["certificates"]}
    assert "caf?" in listed["latin1.example.test"]["last_error"]["message"]
    # The hanging hook's whole group is gone, its "del" run too.
    sidecar.wait_log(r"dns_hook del _acme-challenge\.hangs\.example\.test\.: "
                     r"no result after 2s", timeout=30)
    deadline = time.monotonic() + 10
    while hook_processes(hangs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hook_processes(hangs) == []

    # Each record went once its authorization settled.
    sidecar.wait_log(r"dns_hook del _acme-challenge\.flood\.example\.test\.: "
                     r"done", timeout=30)
    done = "hook del _acme-challenge.example.test. done"
    deadline = time.monotonic() + 30
    while sidecar.log().count(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = sidecar.log()
    # The API showed each authorization's hook as its own state.
    assert log.count('"_.example.test": authz -> dns-publish') == 2
    assert log.count('"_.example.test": dns-publish -> challenge') == 2
    # One record name for both authorizations, one after the other.
    assert log.count("hook add _acme-challenge.example.test. done") == 2
    assert log.count(done) == 2, log
    for name in ("example.test", "flood.example.test"):
        assert txt_records(pebble.dns_port, "_acme-challenge." + name) == []
    # The flood: 64 KiB logged, the rest counted; the daemon goes on.
    assert "more bytes of output not logged (at most 65536 a run)" in log
    assert len(log) < 1000000, len(log)

    # acmectl add --challenge: refused over http-01, issued over dns-01,
    # and kept in certificates.conf.
    ctl = [str(ACMECTL), "-s", str(sock), "add", "--timeout", "60"]
    p = subprocess.run(ctl + ["--challenge", "http-01", "pebble",
                              "*.api.example.test"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    assert p.returncode != 0 and \
        'wildcard identifier "*.api.example.test" needs challenge dns-01' \
        in p.stdout, p.stdout
    p = subprocess.run(ctl + ["--challenge", "dns", "pebble",
                              "*.api.example.test"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=90)
    assert p.returncode == 0, p.stdout + sidecar.diagnostics()
    verify(state, "_.api.example.test", ["*.api.example.test"], pebble,
           tmp_path)
    assert "acme_certificate pebble *.api.example.test challenge=dns-01;" \
        in (state / "certificates.conf").read_text()
    assert sidecar.alive()
    assert sidecar.stop() == 0


def test_njs_serves_a_wildcard(tmp_path, zone, fake_segment, nginx):
    """acme.js: an SNI name with no entry of its own gets the certificate
    of "*." + its parent, one label deep; an exact entry wins."""
    wild = self_signed(tmp_path, "w", ["*.w.example.test"])
    exact = self_signed(tmp_path, "a", ["a.w.example.test"])
    fake_segment.publish([("_.w.example.test", ["*.w.example.test"], *wild),
                          ("a.w.example.test", ["a.w.example.test"],
                           *exact)])
    port = nginx.server("/dev/shm/" + zone)
    nginx.write()
    nginx.start()
    assert tls_leaf(port, "b.w.example.test") == der_digest(wild[0]), \
        nginx.diagnostics()
    assert tls_leaf(port, "a.w.example.test") == der_digest(exact[0])
    assert tls_leaf(port, "c.b.w.example.test") is None
    assert tls_leaf(port, "w.example.test") is None
    assert 'no certificate for server name "c.b.w.example.test"' in \
        nginx.log()


def test_module_serves_a_wildcard(tmp_path, pebble, http_port,
                                  nginx_factory, sidecar_factory):
    """nginx.conf alone: an issuer with challenge dns-01 and a dns_hook, a
    server whose server_name starts with a wildcard.  The module takes
    the same words as the sidecar, and nginx serves the certificate
    "_.example.test" to a name under the wildcard."""
    if not MODULE.exists():
        pytest.skip("%s is not built" % MODULE)
    good = hook(tmp_path, "good.sh", HOOK % {"port": pebble.chall_mgmt_port})
    tls_port = free_port()
    nginx = nginx_factory()
    body = """
acme_issuer example {
    uri %(uri)s;
    state_path %(state)s;
    accept_terms_of_service;
    ssl_trusted_certificate %(ca)s;
    challenge dns-01;
    dns_hook %(hook)s timeout=20s;
}
acme_shared_zone zone=%(zone)s:1M;
server {
    listen 127.0.0.1:%(tls)d ssl;
    server_name *.example.test example.test;
    acme_certificate example;
    ssl_certificate $acme_certificate;
    ssl_certificate_key $acme_certificate_key;
}
""" % dict(uri=pebble.directory_url, state=tmp_path / "state", ca=pebble.ca,
           hook=good, zone=zone_name(tmp_path), tls=tls_port)
    nginx.write(main_block(nginx.prefix, [MODULE]) + "http {\n" +
                http_block_head(nginx.prefix) + body + "}\n")
    rc, out = nginx.test_config()
    assert rc == 0, out
    nginx.start([tls_port])
    conf = tmp_path / "acme-sidecar.conf"
    # The module takes no dns_check: challtestsrv (no AA) goes unchecked.
    conf.write_text("challenge_listen 127.0.0.1:%d;\ncontrol_socket %s;\n"
                    "challenge_check off;\n" %
                    (http_port, tmp_path / "control.sock"))
    sidecar = sidecar_factory(conf, [pebble])
    sidecar.start("--nginx-conf", str(nginx.conf))
    sidecar.wait_certs(tmp_path / "state", ["_.example.test"])
    leaf = split_pem((tmp_path / "state" / "certs" / "_.example.test" /
                      "fullchain.pem").read_text())[0]
    deadline = time.monotonic() + 10
    for name in ("www.example.test", "example.test"):
        while True:
            rc, blocks, _ = handshake(tls_port, name, check=False)
            if rc == 0 and blocks and \
                    fingerprint(blocks[0]) == fingerprint(leaf):
                break
            assert time.monotonic() < deadline, \
                "nginx never served _.example.test for %s%s" % (
                    name, nginx.diagnostics())
            time.sleep(0.1)
        verify_served(tls_port, name, pebble, tmp_path)


def test_module_t_errors(tmp_path, pebble, nginx_factory):
    """nginx -t refuses what the sidecar refuses: a wildcard over http-01,
    dns-01 without dns_hook, a wildcard over tls-alpn-01."""
    cases = [
        ("", "server_name *.example.test;", "acme_certificate example;",
         'wildcard identifier "*.example.test" needs challenge dns-01'),
        ("challenge dns-01;", "", "acme_certificate example a.example.test;",
         "has challenge dns-01 but no way to publish the TXT record"),
        ("", "", "acme_certificate example a.example.test challenge=dns;",
         "has challenge dns-01 but acme_issuer \"example\" has no way"),
        ("challenge tls-alpn-01;", "server_name *.example.test;",
         "acme_certificate example;",
         'wildcard identifier "*.example.test" needs challenge dns-01: '
         'tls-alpn-01 cannot'),
    ]
    for issuer, names, cert, message in cases:
        nginx = nginx_factory("nginx-%d" % len(message))
        body = ("acme_issuer example { uri %s; %s }\n"
                "acme_shared_zone zone=%s:1M;\n"
                "server {\n"
                "    listen 127.0.0.1:%d ssl;\n"
                "    %s %s\n"
                "    ssl_certificate $acme_certificate;\n"
                "    ssl_certificate_key $acme_certificate_key;\n"
                "}\n") % (pebble.directory_url, issuer, zone_name(tmp_path),
                          free_port(), names, cert)
        nginx.write(main_block(nginx.prefix, [MODULE]) + "http {\n" +
                    http_block_head(nginx.prefix) + body + "}\n")
        rc, out = nginx.test_config()
        assert rc != 0 and message in out, out


def test_dns01_record_left_by_a_crash_is_removed_at_start(tmp_path, pebble,
                                                         http_port,
                                                         sidecar_factory):
    """The daemon is killed (-9) while the hook removes a record: the note
    it wrote in state_path before the "add" survives, and the next start
    runs the "del" again and drops the note.  A note that does not parse
    is left alone, with a warning."""
    mgmt = pebble.chall_mgmt_port
    block, delpid = tmp_path / "block-del", tmp_path / "del.pid"
    good = hook(tmp_path, "good.sh", HOOK % {"port": mgmt})
    # While block-del exists, "del" hangs (its pid in del.pid).
    blocking = hook(tmp_path, "blocking.sh", "#!/bin/sh\n"
                    "if [ \"$1\" = del ] && [ -e %s ]; then\n"
                    "    echo $$ > %s.tmp && mv %s.tmp %s\n"
                    "    exec sleep 300\n"
                    "fi\n"
                    "exec %s \"$@\"\n" % (block, delpid, delpid, delpid, good))
    block.touch()
    state = tmp_path / "state"
    conf = tmp_path / "sidecar.conf"
    extra = "challenge dns-01;\n    dns_hook %s;\n    dns_check off;" % \
        blocking
    write_config(conf, pebble, state, http_port,
                 [(["crash.example.test"], None)], issuer_extra=extra)
    with open(conf, "a") as f:
        f.write("acme_certificate pebble web.example.test "
                "challenge=http-01;\n")
    sidecar = sidecar_factory(conf, [pebble]).start()
    deadline = time.monotonic() + ISSUE_TIMEOUT
    while not delpid.exists():
        assert sidecar.alive() and time.monotonic() < deadline, \
            "the hook's del never ran" + sidecar.diagnostics()
        time.sleep(0.1)
    # The API and acmectl show each certificate's challenge type.
    sock = tmp_path / "control.sock"
    got = {c["id"]: c["challenge"]
           for c in api(sock, "/v1/certificates")["certificates"]}
    assert got == {"crash.example.test": "dns-01",
                   "web.example.test": "http-01"}, got
    assert api(sock, "/v1/certificates/web.example.test")["challenge"] == \
        "http-01"
    p = subprocess.run([str(ACMECTL), "-s", str(sock), "show",
                        "crash.example.test"], stdout=subprocess.PIPE,
                       text=True, timeout=10)
    assert p.returncode == 0 and \
        re.search(r"^challenge +dns-01$", p.stdout, re.M), p.stdout
    name = "_acme-challenge.crash.example.test."
    notes = list((state / "dns-01").glob("*.json"))
    assert len(notes) == 1, notes
    assert notes[0].stat().st_mode & 0o777 == 0o600
    note = json.loads(notes[0].read_text())
    assert note["fqdn"] == name
    assert notes[0].name == note["value"] + ".json"
    assert txt_records(pebble.dns_port, name) == [note["value"]]

    sidecar.kill()
    os.killpg(int(delpid.read_text()), signal.SIGKILL)
    block.unlink()
    assert txt_records(pebble.dns_port, name) == [note["value"]]
    bogus = state / "dns-01" / ("A" * 43 + ".json")
    bogus.write_text('{"fqdn": "_acme-challenge.x.test; rm -rf /", '
                     '"value": "%s"}' % ("A" * 43))

    # The next start, without the certificate: only the sweep runs.
    write_config(conf, pebble, state, http_port, [], issuer_extra=extra)
    sidecar.start()
    sidecar.wait_log(r'TXT %s "%s" removed' % (name.replace(".", r"\."),
                                                note["value"]), timeout=30)
    assert not notes[0].exists()
    assert txt_records(pebble.dns_port, name) == []
    log = sidecar.log()
    assert 'removing TXT %s "%s", left behind by an earlier run' % (
        name, note["value"]) in log, log
    assert "%s: no valid \"fqdn\" and \"value\"; left alone" % bogus in log
    assert bogus.exists()
    assert sidecar.stop() == 0


def test_dns01_through_the_api_of_a_cluster(tmp_path, pebble,
                                            sidecar_factory):
    """POST /v1/certificates with "challenge": "dns-01" on one node of a
    cluster: the fleet's record carries it, so the other node adds the
    wildcard too (over http-01 it would refuse it), and the certificate
    is issued and stored on both."""
    from clusterlib import PREFIX, Redis, write_secret
    redis = Redis(tmp_path / "redis").start()
    try:
        good = hook(tmp_path, "good.sh",
                    HOOK % {"port": pebble.chall_mgmt_port})
        secret = write_secret(tmp_path / "secret")
        nodes = []
        for i in range(2):
            d = tmp_path / ("node%d" % i)
            d.mkdir()
            conf = d / "sidecar.conf"
            write_config(conf, pebble, d / "state", free_port(), [],
                         issuer_extra="dns_hook %s;\n    dns_check off;"
                         % good)
            with open(conf, "a") as f:
                f.write("cluster redis://127.0.0.1:%d prefix=%s node=node%d "
                        "secret_file=%s;\n" % (redis.port, PREFIX, i, secret))
            nodes.append((d, sidecar_factory(conf, [pebble]).start()))
        for d, s in nodes:
            deadline = time.monotonic() + 30
            while True:
                try:
                    st = api(d / "control.sock", "/v1/status")
                    if sorted(st["cluster"]["members"]) == ["node0", "node1"]:
                        break
                except (ValueError, KeyError):
                    pass
                assert s.alive() and time.monotonic() < deadline, \
                    s.diagnostics()
                time.sleep(0.1)

        sock0 = nodes[0][0] / "control.sock"
        body = json.dumps({"issuer": "pebble", "challenge": "dns-01",
                           "identifiers": ["*.fleet.example.test"]})
        p = subprocess.run(["curl", "-s", "-w", "\n%{http_code}",
                            "--unix-socket", str(sock0), "-d", body,
                            "http://localhost/v1/certificates"],
                           stdout=subprocess.PIPE, text=True, timeout=10)
        out, code = p.stdout.rsplit("\n", 1)
        assert code == "201", out
        cid = json.loads(out)["id"]
        assert cid == "_.fleet.example.test"
        for d, s in nodes:
            s.wait_certs(d / "state", [cid], ISSUE_TIMEOUT)
            verify(d / "state", cid, ["*.fleet.example.test"], pebble,
                   tmp_path)
            assert api(d / "control.sock",
                       "/v1/certificates/" + cid)["challenge"] == "dns-01"
        assert "acme_certificate pebble *.fleet.example.test " \
            "challenge=dns-01;" in \
            (nodes[1][0] / "state" / "certificates.conf").read_text()
        assert "on another node" in nodes[1][1].log()
        record = json.loads(redis.cli("HGET", PREFIX + ":runtime", cid))
        assert record["challenge"] == "dns-01", record
        for d, s in nodes:
            assert s.stop() == 0
    finally:
        redis.kill()
