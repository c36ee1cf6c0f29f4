"""Several replicas sharing one Redis (the "cluster" directive).

A Redis of the test's own (Debian's redis-server, AOF on, a free loopback
port), R replicas each made of a real nginx with the module and a sidecar,
and a plain nginx balancing Pebble's HTTP-01 requests round-robin over the
replicas' port-80 servers: Pebble's validation reaches whichever replica
the balancer picks, as behind a real load balancer.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (Sidecar, free_port, openssl, pebblelib, split_pem,
                      tail, zone_line)
from nginxlib import MODULE, Nginx, handshake, http_block_head, main_block

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
PEBBLE_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+) for order")
PREFIX = "fleet"


class Redis:
    """redis-server in the foreground with AOF (appendfsync everysec)."""

    def __init__(self, directory, port=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = None

    def start(self, timeout=10.0):
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "",
             "--daemonize", "no", "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=pebblelib.die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.ping():
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start:\n" +
                            tail(self.dir / "redis.log"), pytrace=False)
            time.sleep(0.05)

    def ping(self):
        p = subprocess.run([REDIS_CLI, "-p", str(self.port), "PING"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, timeout=5)
        return p.stdout.strip() == "PONG"

    def cli(self, *args, input=None):
        """One redis-cli command; its raw output."""
        p = subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw", *args],
                           input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=10)
        assert p.returncode == 0, "redis-cli %s: %s" % (args, p.stderr)
        return p.stdout

    def keys(self, pattern="*"):
        return sorted(k for k in self.cli("--scan", "--pattern",
                                          pattern).split("\n") if k)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def names_of(i):
    return ["c%d.example.test" % i]


class Replica:
    """One pod: nginx with the module (TLS and port 80) and a sidecar,
    both reading the same nginx.conf, plus the sidecar's own file with
    the cluster directive."""

    def __init__(self, workdir, name, pebble, redis, certs, secret):
        self.name = name
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self.dir / "state"
        self.http_port = free_port()
        self.tls_port = free_port()
        self.nginx = Nginx(self.dir / "nginx")
        self.nginx.write(self._nginx_conf(pebble, certs))
        # The sidecar reads its own copy of nginx.conf, without the
        # certificates until the whole fleet has joined (see join()).
        self.sidecar_view = self.dir / "sidecar-nginx.conf"
        self.sidecar_view.write_text(self._nginx_conf(pebble, []))
        conf = self.dir / "acme-sidecar.conf"
        conf.write_text(
            "challenge_listen 127.0.0.1:%d;\n"
            "control_socket %s;\n"
            "cluster redis://127.0.0.1:%d prefix=%s node=%s "
            "secret_file=%s;\n" % (free_port(), self.dir / "control.sock",
                                   redis.port, PREFIX, name, secret))
        self.sidecar = Sidecar(self.dir, conf, [pebble])

    def _nginx_conf(self, pebble, certs):
        body = ["acme_issuer pebble {",
                "    uri %s;" % pebble.directory_url,
                "    state_path %s;" % self.state,
                "    accept_terms_of_service;",
                "    ssl_trusted_certificate %s;" % pebble.ca,
                "    request_rate off;",
                "}",
                zone_line(self.dir, "4M"),
                "server {",
                "    listen 127.0.0.1:%d;" % self.http_port,
                "    location / { return 404; }",
                "}"]
        for names in certs:
            body += ["server {",
                     "    listen 127.0.0.1:%d ssl;" % self.tls_port,
                     "    server_name %s;" % " ".join(names),
                     "    acme_certificate pebble;",
                     "    ssl_certificate $acme_certificate;",
                     "    ssl_certificate_key $acme_certificate_key;",
                     "}"]
        return main_block(self.nginx.prefix, [MODULE]) + "http {\n" + \
            http_block_head(self.nginx.prefix) + \
            "\n".join("    " + b for b in body) + "\n}\n"

    def start(self):
        self.nginx.start([self.tls_port, self.http_port])
        self.start_sidecar()
        return self

    def start_sidecar(self):
        self.sidecar.start("--nginx-conf", str(self.sidecar_view))

    def status(self):
        out = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(self.dir / "control.sock"),
             "http://localhost/v1/status"], stdout=subprocess.PIPE,
            check=True).stdout
        return json.loads(out)

    def configure_certificates(self):
        """Give the sidecar nginx.conf's certificates: a reload."""
        self.sidecar_view.write_text(self.nginx.conf.read_text())
        mark = self.sidecar.mark()
        self.sidecar.signal(signal.SIGHUP)
        self.sidecar.wait_log(r"reloading ", since=mark)

    def stop(self):
        self.sidecar.kill()
        self.nginx.stop()


def join(replicas, timeout=30.0):
    """Wait until every replica sees all of them as members, then give
    them their certificates.

    A replica behind the balancer must be a member before the first
    order: the ordering node waits for the members' acknowledgements,
    and a replica whose sidecar has not joined yet has nothing in its
    zone. Kubernetes gets this from the sidecar's readiness probe; the
    test gets it by configuring the certificates once all have joined.
    """
    want = sorted(r.name for r in replicas)
    deadline = time.monotonic() + timeout
    for r in replicas:
        while sorted(r.status()["cluster"]["members"]) != want:
            if time.monotonic() > deadline:
                pytest.fail("%s sees members %s, not %s%s" % (
                    r.name, r.status()["cluster"]["members"], want,
                    r.sidecar.diagnostics()), pytrace=False)
            time.sleep(0.1)
    for r in replicas:
        r.configure_certificates()


class Balancer:
    """A plain nginx on Pebble's HTTP-01 port, round-robin over the
    replicas' port-80 servers; a 404 is passed on, never retried."""

    def __init__(self, workdir, port, replicas):
        self.port = port
        self.nginx = Nginx(Path(workdir) / "balancer")
        upstream = "".join("        server 127.0.0.1:%d;\n" % r.http_port
                           for r in replicas)
        self.nginx.write(
            main_block(self.nginx.prefix) + "http {\n" +
            http_block_head(self.nginx.prefix) +
            "    upstream replicas {\n%s    }\n" % upstream +
            "    server {\n"
            "        listen 127.0.0.1:%d;\n" % port +
            "        location / { proxy_pass http://replicas; }\n"
            "    }\n}\n")

    def start(self):
        self.nginx.start([self.port])
        return self

    def stop(self):
        self.nginx.stop()


def issued_by_pebble(pebble):
    """Serials Pebble's own log says it issued."""
    text = (Path(pebble.dir) / "pebble.log").read_text(errors="replace")
    return PEBBLE_ISSUED.findall(text)


def served_leaf(replica, name):
    rc, blocks, _ = handshake(replica.tls_port, name, check=False)
    return blocks[0] if rc == 0 and blocks else None


def verify_leaf(pem, name, pebble, workdir):
    leaf = Path(workdir) / ("v-%s.pem" % name)
    leaf.write_text(pem)
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted",
                pebble.intermediate, "-verify_hostname", name, str(leaf),
                check=False)
    return v.returncode == 0, v.stdout + v.stderr


def fingerprint(pem):
    return openssl("x509", "-noout", "-fingerprint", "-sha256",
                   input=pem).stdout.strip()


def stored_leaf(replica, cid):
    p = replica.state / "certs" / cid / "fullchain.pem"
    try:
        return split_pem(p.read_text())[0]
    except (FileNotFoundError, IndexError):
        return None


def write_secret(path, text=None):
    path.write_text(text or os.urandom(32).hex() + "\n")
    os.chmod(path, 0o600)
    return path
