"""Several replicas sharing one Redis (the "cluster" directive).

A Redis of the test's own (Debian's redis-server, AOF on, a free loopback
port), R replicas each made of a real nginx with the module and a sidecar,
and a plain nginx balancing Pebble's HTTP-01 requests round-robin over the
replicas' port-80 servers: Pebble's validation reaches whichever replica
the balancer picks, as behind a real load balancer.
"""

import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
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


class RedisError(Exception):
    """An error reply (-ERR ..., -WRONGTYPE ...)."""


class RespClient:
    """One connection speaking RESP: fast enough to poll every few ms,
    and binary-safe (bulk strings come back as bytes)."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exactly(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError("unexpected RESP line %r" % line)


class Redis:
    """redis-server in the foreground with AOF (appendfsync everysec)."""

    def __init__(self, directory, port=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = None
        self._conn = None

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

    def call(self, *args):
        """One command on a kept connection (made again after a restart);
        the decoded reply, bytes for bulk strings."""
        for attempt in (0, 1):
            try:
                if self._conn is None:
                    self._conn = RespClient(self.port)
                return self._conn(*args)
            except (OSError, ConnectionError):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt:
                    raise

    def get_text(self, key):
        v = self.call("GET", key)
        return None if v is None else v.decode(errors="replace")

    def snapshot(self, pattern="*"):
        """{key: (type, value)} of every key matching pattern, whatever
        its type, for comparing the whole database before and after."""
        snap = {}
        for k in self.call("KEYS", pattern):
            key = k.decode(errors="replace")
            kind = self.call("TYPE", k)
            if kind == "string":
                v = self.call("GET", k)
            elif kind == "hash":
                v = sorted(pairs(self.call("HGETALL", k)))
            elif kind == "list":
                v = self.call("LRANGE", k, 0, -1)
            elif kind == "set":
                v = sorted(self.call("SMEMBERS", k))
            elif kind == "zset":
                v = pairs(self.call("ZRANGE", k, 0, -1, "WITHSCORES"))
            else:
                v = None        # vanished meanwhile ("none"), or a stream
            snap[key] = (kind, v)
        return snap

    def freeze(self):
        """SIGSTOP: the port still accepts, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def pairs(flat):
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def names_of(i):
    return ["c%d.example.test" % i]


class Replica:
    """One pod: nginx with the module (TLS and port 80) and a sidecar,
    both reading the same nginx.conf, plus the sidecar's own file with
    the cluster directive."""

    def __init__(self, workdir, name, pebble, redis, certs, secret):
        self.name = name
        self.pebble = pebble
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

    def control(self, method, path, body=None):
        """(HTTP status, parsed JSON body) of a control API call."""
        args = ["curl", "-sS", "--unix-socket", str(self.dir / "control.sock"),
                "-X", method, "-w", "\n%{http_code}",
                "http://localhost" + path]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary",
                     json.dumps(body)]
        out = subprocess.run(args, stdout=subprocess.PIPE, check=True,
                             text=True).stdout
        text, code = out.rsplit("\n", 1)
        try:
            return int(code), json.loads(text) if text else None
        except ValueError:
            return int(code), text

    def renew(self, cid):
        return self.control("POST", "/v1/certificates/%s/renew" % cid)

    def configure(self, certs):
        """The sidecar's view of nginx.conf with only these certificates
        (nginx itself has every server block from the start), then a
        reload if the sidecar runs.  A sidecar started later reads it."""
        self.sidecar_view.write_text(self._nginx_conf(self.pebble, certs))
        if self.sidecar.alive():
            mark = self.sidecar.mark()
            self.sidecar.signal(signal.SIGHUP)
            self.sidecar.wait_log(r"reloading ", since=mark)

    def kill(self):
        """kill -9 of the sidecar; nginx keeps serving its zone."""
        self.sidecar.kill()

    def freeze(self):
        os.killpg(self.sidecar.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.killpg(self.sidecar.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.sidecar.proc is not None:
            try:
                os.killpg(self.sidecar.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
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
    def members(r):
        try:
            return sorted(r.status()["cluster"]["members"])
        except subprocess.CalledProcessError:
            return None     # the control socket is not there yet

    want = sorted(r.name for r in replicas)
    deadline = time.monotonic() + timeout
    for r in replicas:
        while members(r) != want:
            if time.monotonic() > deadline:
                pytest.fail("%s sees members %s, not %s%s" % (
                    r.name, members(r), want,
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


class Fleet:
    """n replicas, each nginx with a server block for every one of certs,
    behind the balancer on Pebble's HTTP-01 port.  secrets: one
    secret_file per replica (default: one for all)."""

    def __init__(self, workdir, pebble, http_port, redis, n, certs,
                 secrets=None):
        self.workdir = Path(workdir)
        self.pebble = pebble
        self.redis = redis
        self.certs = certs
        if secrets is None:
            secrets = [write_secret(self.workdir / "secret")] * n
        self.replicas = [Replica(workdir, "node%d" % i, pebble, redis,
                                 certs, secrets[i]) for i in range(n)]
        self.balancer = Balancer(workdir, http_port, self.replicas)

    def start(self, replicas=None):
        """Start replicas (default all), with no certificate, and wait
        until each sees them all as members.  A replica behind the
        balancer must be a member before the first order: the ordering
        node waits for the members' acknowledgements of its token."""
        replicas = self.replicas if replicas is None else replicas
        if self.balancer.nginx.proc is None:
            self.balancer.start()
        for r in replicas:
            r.start()
        wait_members(replicas)
        return self

    def stop(self):
        for r in self.replicas:
            r.stop()
        self.balancer.stop()


def wait_members(replicas, timeout=30.0):
    """Until each of replicas sees (at least) all of them as members."""
    def members(r):
        try:
            return set(r.status()["cluster"]["members"])
        except subprocess.CalledProcessError:
            return set()    # the control socket is not there yet

    want = {r.name for r in replicas}
    deadline = time.monotonic() + timeout
    for r in replicas:
        while not want <= members(r):
            r.sidecar._check_alive("joining the fleet")
            if time.monotonic() > deadline:
                pytest.fail("%s sees members %s, not %s%s" % (
                    r.name, sorted(members(r)), sorted(want),
                    r.sidecar.diagnostics()), pytrace=False)
            time.sleep(0.1)


def pem_der(pem):
    body = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END",
                     pem, re.S).group(1)
    return base64.b64decode("".join(body.split()))


def leaf_id(pem_or_der):
    """A short SHA-256 of a certificate (PEM or DER): which leaf it is."""
    der = pem_or_der if isinstance(pem_or_der, bytes) else \
        pem_der(pem_or_der)
    return hashlib.sha256(der).hexdigest()[:16]


def quick_leaf(replica, name, timeout=5.0):
    """A TLS handshake with SNI name, in-process: (leaf DER, None), or
    (None, the error)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", replica.tls_port),
                                      timeout=timeout) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                return t.getpeercert(binary_form=True), None
    except (OSError, ssl.SSLError) as e:
        return None, repr(e)


def wait_served(replicas, certs, pebble, workdir, timeout=120.0):
    """Until every replica serves every certificate over TLS (openssl
    s_client), each verifying against Pebble's root and for its name
    (openssl verify); returns {name: {leaf_id served}}."""
    deadline = time.monotonic() + timeout
    pending = {(r.name, n[0]) for r in replicas for n in certs}
    byname = {r.name: r for r in replicas}
    served = {}
    while pending:
        for rname, name in sorted(pending):
            leaf = served_leaf(byname[rname], name)
            if leaf is None:
                continue
            ok, _ = verify_leaf(leaf, name, pebble, workdir)
            if ok:
                pending.discard((rname, name))
                served.setdefault(name, set()).add(leaf_id(leaf))
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
        time.sleep(0.25)
    return served


def redis_leaf(redis, cid):
    """The leaf of PREFIX:cert:ID's chain, or None."""
    raw = redis.get_text("%s:cert:%s" % (PREFIX, cid))
    if raw is None:
        return None
    try:
        return split_pem(json.loads(raw)["chain"])[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


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
