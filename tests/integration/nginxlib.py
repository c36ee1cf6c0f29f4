"""Real nginx for the integration tests: a private prefix, free loopback
ports, and the handshake and HTTP helpers that look at what it serves.

nginx runs in the foreground (daemon off) with a master and one worker,
so a test sees exactly one worker's cache.  The workers run as www-data,
the group the shared zone is given, as on a Debian host.
"""

import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, openssl, split_pem, tail

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
MODULE = Path(os.environ.get("ACME_NGINX_MODULE",
                             ROOT / "build" / "ngx_http_acme_module.so"))
NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
NJS_SCRIPT = ROOT / "src" / "njs" / "acme.js"


def main_block(prefix, modules=(), user="www-data"):
    """The main context every test config starts with.  user None: no
    "user" line, so nginx (started as root) runs its workers as the user
    and group it was built with (Debian: nobody:nogroup)."""
    lines = ["load_module %s;" % m for m in modules]
    lines += [
        "daemon off;",
        "master_process on;",
        "worker_processes 1;",
    ] + (["user %s;" % user] if user else []) + [
        "pid %s/nginx.pid;" % prefix,
        "error_log %s/error.log info;" % prefix,
        "events { worker_connections 256; }",
    ]
    return "\n".join(lines) + "\n"


def http_block_head(prefix):
    """Temp paths inside the prefix, so nothing outside it is touched."""
    return "\n".join([
        "    access_log off;",
        "    client_body_temp_path %s/tmp/body;" % prefix,
        "    proxy_temp_path %s/tmp/proxy;" % prefix,
        "    fastcgi_temp_path %s/tmp/fastcgi;" % prefix,
        "    uwsgi_temp_path %s/tmp/uwsgi;" % prefix,
        "    scgi_temp_path %s/tmp/scgi;" % prefix,
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache off;",
        "    ssl_session_tickets off;",
    ]) + "\n"


class Nginx:
    def __init__(self, prefix):
        self.prefix = Path(prefix)
        self.conf = self.prefix / "nginx.conf"
        self.proc = None
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        # Workers (www-data) create their temp folders' contents.
        os.chmod(self.prefix, 0o755)

    def write(self, text):
        self.conf.write_text(text)
        return self

    def test_config(self):
        """nginx -t: (exit status, its output)."""
        p = subprocess.run([NGINX, "-t", "-p", str(self.prefix), "-c",
                            str(self.conf)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        return p.returncode, p.stdout

    def start(self, ports, timeout=10.0):
        rc, out = self.test_config()
        assert rc == 0, "nginx -t failed:\n" + out
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "stderr.log", "ab"),
            start_new_session=True)
        deadline = time.monotonic() + timeout
        for port in ports:
            while not _accepts(port):
                if self.proc.poll() is not None:
                    pytest.fail("nginx exited with %s%s" % (
                        self.proc.returncode, self.diagnostics()),
                        pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail("nginx does not listen on %d%s" % (
                        port, self.diagnostics()), pytrace=False)
                time.sleep(0.05)
        return self

    def error_log(self):
        try:
            return (self.prefix / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self):
        return "\n--- nginx error.log (tail) ---\n" + tail(
            self.prefix / "error.log")

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                             stdout=subprocess.PIPE, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def handshake(port, servername, check=True, host="127.0.0.1", extra=()):
    """openssl s_client: (exit status, the served chain as PEM blocks,
    its output).  Without servername no SNI is sent when host is an
    address, as a browser sends none; extra: more s_client options
    (-sigalgs, -cipher, -tls1_2 ...)."""
    where = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host,
                                                                    port)
    args = ["s_client", "-connect", where, "-showcerts", *extra]
    if servername:
        args += ["-servername", servername]
    p = openssl(*args, input="", check=False)
    blocks = split_pem(p.stdout)
    if check:
        assert p.returncode == 0 and blocks, (
            "handshake with %s on %d failed:\n%s%s" % (
                servername, port, p.stdout[-800:], p.stderr[-800:]))
    return p.returncode, blocks, p.stdout + p.stderr


def fingerprint(pem):
    return openssl("x509", "-noout", "-fingerprint", "-sha256",
                   input=pem).stdout.strip()


def served_leaf(port, servername):
    return handshake(port, servername)[1][0]


def verify_served(port, servername, pebble, workdir):
    """The served chain verifies against Pebble's root, for servername."""
    _, blocks, _ = handshake(port, servername)
    leaf = Path(workdir) / ("served-%s.pem" % servername)
    inter = Path(workdir) / ("served-%s.chain.pem" % servername)
    leaf.write_text(blocks[0])
    inter.write_text("".join(blocks[1:]))
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted", str(inter),
                "-verify_hostname", servername, str(leaf), check=False)
    assert v.returncode == 0, "%s: served chain does not verify: %s%s" % (
        servername, v.stdout, v.stderr)
    return blocks


def http_get(port, path, host="localhost"):
    """(status, body) of a plain HTTP GET."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def _handshake_loop(port, name, stop, results):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=name) as t:
                    results.append(("ok", t.getpeercert(binary_form=True)))
        except (OSError, ssl.SSLError) as e:
            results.append(("error", repr(e)))
        time.sleep(0.01)


def served_while(port, name, changed, timeout, diagnostics):
    """Full handshakes with name, back to back, until changed() is true
    and for one second after; every one must succeed.  Returns the
    fingerprints of the leaves served."""
    stop = threading.Event()
    results = []
    t = threading.Thread(target=_handshake_loop,
                         args=(port, name, stop, results))
    t.start()
    try:
        deadline = time.monotonic() + timeout
        while not changed():
            assert time.monotonic() < deadline, \
                "no renewal within %ds%s" % (timeout, diagnostics())
            time.sleep(0.2)
        # Keep handshaking a little after the switch.
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    errors = [r for k, r in results if k == "error"]
    assert len(results) > 100, "only %d handshakes" % len(results)
    assert not errors, "%d of %d handshakes failed during the renewal: %s" \
        % (len(errors), len(results), errors[:3])
    # Distinct leaves first: one openssl run per certificate, not per
    # handshake, so the caller looks at nginx before the next renewal.
    leaves = {ssl.DER_cert_to_PEM_cert(c) for k, c in results if k == "ok"}
    return {fingerprint(pem) for pem in leaves}


@pytest.fixture
def nginx_factory(tmp_path):
    made = []

    def make(name="nginx"):
        n = Nginx(tmp_path / name)
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()
