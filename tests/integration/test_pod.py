"""conf/kubernetes/pod.yaml and fleet.yaml, played by podman from
conf/Containerfile's images.  The pod gets its certificate from Pebble,
nginx serves it, a restarted sidecar orders nothing, and nginx serves on
without the sidecar.  The fleet (two replicas and Redis) orders once,
validates through either replica, and both serve the certificate.

Two tests on one xdist worker, sharing the images: most of their time is
the build (about 4 minutes cold).  They ignore ACME_SIDECAR (the images
build their own binaries), so make check runs them once, in whichever pass
runs the tests not marked serial: they measure nothing.

The test's copy of the manifest differs from conf/kubernetes/pod.yaml where
podman 4.3 or the test needs it:
  - hostNetwork: the pod shares the host's loopback, so Pebble (on
    127.0.0.1, like every test's) reaches nginx for HTTP-01 and the test
    reaches nginx's TLS port, with free ports instead of 8080 and 8443;
  - podman 4.3 ignores emptyDir's medium: Memory, so the zone and the
    control socket go on tmpfs volume claims (volume.podman.io/type);
  - Pebble's directory and the CA of its HTTPS listener instead of Let's
    Encrypt's staging;
  - the images are this run's tags;
  - nginx's container does not mount the control socket's folder (see
    played_copy).
Everything else (users, fsGroup, group=33, configs) is the manifest's own.

The fleet's copy differs from conf/kubernetes/fleet.yaml in the same ways,
and also:
  - two Deployments of one replica each, instead of one of three: on the
    host's network each replica needs ports of its own, hence its own
    ConfigMaps, and its own node= (the host name is the same for all);
  - podman 4.3 mounts a Secret's volume empty (stringData) or still in
    base64 (data), so the Secret becomes a ConfigMap with the same keys;
  - Redis listens on 127.0.0.1 and a free port;
  - the test's Balancer stands for the Service: it sends the CA's
    requests to the replicas in turn, each once it passes the manifest's
    own readiness probe (run by the test: podman 4.3 runs no probe).

Rootful podman on these machines needs a containers.conf (CONTAINERS_CONF):
no default ulimits (the sandbox refuses raising nofile and nproc) and
runc (crun refuses the hybrid cgroup layout).  The base image is Debian's
bookworm-slim, or where no registry can be reached, the same built here
with mmdebstrap and imported under that name; it is kept for later runs.
"""

import base64
import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, openssl, split_pem

MANIFEST = ROOT / "conf" / "kubernetes" / "pod.yaml"
FLEET = ROOT / "conf" / "kubernetes" / "fleet.yaml"
CONTAINERFILE = ROOT / "conf" / "Containerfile"
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
BUILD_CACHE = "localhost/acme-sidecar-build:pod-test"
ISSUE_TIMEOUT = 180.0
CERT_ID = "example.com"             # server_name .example.com;
NAMES = {"DNS:example.com", "DNS:www.example.com"}

CONTAINERS_CONF = """\
# Written by tests/integration/test_pod.py.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
"""


def _why_no_podman():
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/install-deps installs it)"
    if os.geteuid() != 0:
        return "rootful podman needs root (the pod plays as root)"
    return None


pytestmark = [
    pytest.mark.skipif(bool(os.environ.get("ACME_MEMCHECK_LOGS")),
                       reason="valgrind has nothing to watch here: the "
                       "images build and run their own binaries"),
    pytest.mark.skipif(_why_no_podman() is not None,
                       reason=str(_why_no_podman())),
    # One worker builds the images once for both tests.
    pytest.mark.xdist_group("pod"),
]


class Podman:
    """podman with the test's containers.conf; every command logged."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        conf = self.workdir / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.logfile = self.workdir / "podman.log"

    def __call__(self, *args, check=True, timeout=600):
        with open(self.logfile, "a") as log:
            log.write("==== podman %s\n" % " ".join(args))
        r = subprocess.run(["podman", *args], env=self.env,
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        with open(self.logfile, "a") as log:
            log.write(r.stdout + r.stderr)
        if check and r.returncode != 0:
            pytest.fail("podman %s: exit %d\n%s" % (
                " ".join(args), r.returncode, r.stderr[-3000:]),
                pytrace=False)
        return r

    def tail(self, n=60):
        return "".join(self.logfile.read_text().splitlines(True)[-n:])


def ensure_base_image(podman, workdir):
    """Debian bookworm-slim, pulled or built here (mmdebstrap, then
    podman import), kept across runs: the same name a user pulls."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("mmdebstrap") is None:
        pytest.fail("%s is absent and mmdebstrap is not installed "
                    "(scripts/install-deps)" % BASE_IMAGE, pytrace=False)
    tar = Path(workdir) / "bookworm.tar"
    slim = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
            "path-exclude=/usr/share/locale/*",
            "path-include=/usr/share/locale/locale.alias",
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright"]
    r = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase"] +
                       ["--dpkgopt=" + o for o in slim] +
                       ["bookworm", str(tar)], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, "mmdebstrap: %s" % r.stderr[-3000:]
    podman("import", "--change", 'CMD ["bash"]', str(tar), BASE_IMAGE)
    tar.unlink()


def image_id(podman, name):
    return podman("image", "inspect", "-f", "{{.Id}}", name,
                  check=False).stdout.strip()


def snapshot_context(workdir):
    """The build context: what .containerignore lets in ("!PATH" lines),
    copied once, so that the three builds see the same sources (and reuse
    one build stage) even while the tree is being edited."""
    ctx = Path(workdir) / "context"
    for line in (ROOT / ".containerignore").read_text().splitlines():
        if not line.startswith("!"):
            continue
        src, dst = ROOT / line[1:], ctx / line[1:]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                "__pycache__"))
        else:
            shutil.copy2(src, dst)
    return ctx


def build_images(podman, tag, workdir):
    """The three images, tagged for this run.  The build stage keeps a tag of
    its own across runs: its apt layer is the longest step, and a later
    run reuses it.  The stage this tag named before goes."""
    ctx = str(snapshot_context(workdir))
    old = image_id(podman, BUILD_CACHE)
    podman("build", "--pull=never", "-f", str(CONTAINERFILE), "--target",
           "build", "-t", BUILD_CACHE, ctx, timeout=1500)
    if old and old != image_id(podman, BUILD_CACHE):
        podman("rmi", old, check=False)
    images = {}
    for target in ("sidecar", "nginx", "redis"):
        name = "localhost/acme-sidecar%s:%s" % (
            "" if target == "sidecar" else "-" + target, tag)
        podman("build", "--pull=never", "-f", str(CONTAINERFILE),
               "--target", target, "-t", name, ctx, timeout=1500)
        images[target] = name
    return images


def replace_once(text, old, new, manifest=MANIFEST):
    assert text.count(old) == 1, "%s: %r is no longer there once" % (
        manifest, old)
    return text.replace(old, new)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The images of this module's run, built once; removed after."""
    workdir = tmp_path_factory.mktemp("images")
    podman = Podman(workdir)
    tag = "test-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    built = {}
    try:
        ensure_base_image(podman, workdir)
        built = build_images(podman, tag, workdir)
        print("pod tests: images built in %.0fs" %
              (time.monotonic() - started))
        yield built
    finally:
        for image in built.values():
            podman("rmi", "-f", image, check=False)


def tmpfs_claim(name, size):
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "annotations": {
            "volume.podman.io/driver": "local",
            "volume.podman.io/type": "tmpfs",
            "volume.podman.io/device": "tmpfs",
            # An emptyDir's mode; the sticky bit as /tmp's.
            "volume.podman.io/mount-options": "size=%s,mode=1777" %
            size.replace("Mi", "m")}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": size}}},
    }


def pebble_nginx_conf(conf, pebble, ports, manifest=MANIFEST, extra=""):
    """nginx.conf of a manifest, with Pebble for Let's Encrypt's staging
    and the test's ports; extra goes into the issuer's block."""
    conf = replace_once(
        conf, "uri         https://acme-staging-v02.api.letsencrypt.org/"
        "directory;", "uri %s;\n        ssl_trusted_certificate "
        "/etc/acme-test/pebble-ca.pem;%s" % (pebble.directory_url, extra),
        manifest)
    conf = replace_once(conf, "listen 8443 ssl;",
                        "listen 127.0.0.1:%d ssl;" % ports["https"], manifest)
    return replace_once(conf, "listen 8080 default_server;",
                        "listen 127.0.0.1:%d default_server;" %
                        ports["http"], manifest)


def pebble_ca_map(pebble, name):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "pebble-ca-" + name},
            "data": {"pebble-ca.pem": Path(pebble.ca).read_text()}}


def adapt_volumes(spec, name, renamed):
    """The pod spec's volumes as podman 4.3 plays them: ConfigMaps (and
    Secrets, which become ConfigMaps) and claims under the names of
    renamed; emptyDirs in memory on tmpfs claims, returned."""
    claims = []
    for vol in spec["volumes"]:
        if "secret" in vol:
            src = vol.pop("secret")
            vol["configMap"] = {"name": src["secretName"]}
            if "items" in src:
                vol["configMap"]["items"] = src["items"]
        if "configMap" in vol:
            cm = vol["configMap"]
            cm["name"] = renamed.get(cm["name"], cm["name"] + "-" + name)
        elif "persistentVolumeClaim" in vol:
            pvc = vol["persistentVolumeClaim"]
            pvc["claimName"] = renamed[pvc["claimName"]]
        elif vol.get("emptyDir", {}).get("medium") == "Memory":
            claim = "%s-%s" % (name, vol["name"])
            claims.append(tmpfs_claim(claim, vol["emptyDir"]["sizeLimit"]))
            del vol["emptyDir"]
            vol["persistentVolumeClaim"] = {"claimName": claim}
    return claims


def adapt_web(deploy, name, images, renamed):
    """A Deployment of nginx + sidecar as this test plays it: one
    replica, on the host's network, this run's images, Pebble's CA
    mounted.  Returns its tmpfs claims."""
    deploy["metadata"]["name"] = name
    deploy["spec"]["replicas"] = 1
    spec = deploy["spec"]["template"]["spec"]
    spec["hostNetwork"] = True
    claims = adapt_volumes(spec, name, renamed)
    spec["volumes"].append({"name": "pebble-ca", "configMap": {
        "name": "pebble-ca-" + name}})
    for c in spec["containers"]:
        target = "nginx" if c["name"] == "nginx" else "sidecar"
        c["image"] = images[target]
        c["volumeMounts"].append({"name": "pebble-ca",
                                  "mountPath": "/etc/acme-test",
                                  "readOnly": True})
        # Probes are Kubernetes' business; podman 4.3 runs only exec ones.
        c.pop("readinessProbe", None)
        # The host's network has no port mappings: nginx listens itself.
        c.pop("ports", None)
        # podman makes a new volume the user's of a container mounting it
        # (here nginx's uid 33, where Kubernetes makes it root's), and the
        # sidecar refuses a control socket's folder of another user's.
        if target == "nginx":
            c["volumeMounts"] = [m for m in c["volumeMounts"]
                                 if m["name"] != "control"]
    return claims


def split_kinds(manifest):
    by_kind = {}
    for d in yaml.safe_load_all(manifest.read_text()):
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def played_copy(pebble, ports, images, name):
    """The documents of pod.yaml as this test plays them."""
    by_kind = split_kinds(MANIFEST)
    nginx_cm, sidecar_cm = by_kind["ConfigMap"]
    (deploy,) = by_kind["Deployment"]

    nginx_cm["data"]["nginx.conf"] = pebble_nginx_conf(
        nginx_cm["data"]["nginx.conf"], pebble, ports)
    sconf = sidecar_cm["data"]["acme-sidecar.conf"]
    sidecar_cm["data"]["acme-sidecar.conf"] = replace_once(
        sconf, "challenge_listen 127.0.0.1:8081;",
        "challenge_listen 127.0.0.1:%d;" % ports["responder"])
    for cm in (nginx_cm, sidecar_cm):
        cm["metadata"]["name"] += "-" + name
    claims = adapt_web(deploy, name, images, {})
    return [nginx_cm, sidecar_cm, pebble_ca_map(pebble, name)] + claims + \
        [deploy], claims


def served_chain(port, workdir, pebble):
    """(leaf PEM, verify result) of what nginx serves for example.com, or
    None while nothing is served."""
    r = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
         "-servername", "www.example.com", "-showcerts"],
        input="", capture_output=True, text=True, timeout=20)
    blocks = split_pem(r.stdout)
    if not blocks:
        return None
    leaf = Path(workdir) / "served.leaf.pem"
    leaf.write_text(blocks[0])
    chain = Path(workdir) / "served.chain.pem"
    chain.write_text("".join(blocks[1:]))
    v = openssl("verify", "-CAfile", pebble.root, "-untrusted", str(chain),
                str(leaf), check=False)
    return blocks[0], v


def cert_of(pem):
    sans = openssl("x509", "-noout", "-ext", "subjectAltName",
                   input=pem).stdout
    serial = openssl("x509", "-noout", "-serial", input=pem).stdout.strip()
    return set(re.findall(r"DNS:[^,\s]+", sans)), serial


def wait_served(port, workdir, pebble, podman, pod, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        got = served_chain(port, workdir, pebble)
        if got is not None and got[1].returncode == 0:
            return got[0]
        last = got
        time.sleep(1)
    logs = podman("pod", "logs", pod, check=False)
    pytest.fail("nginx served no verifying certificate within %ds (last: "
                "%s)\npod log:\n%s\npodman:\n%s" % (
                    timeout, last and last[1].stdout + last[1].stderr,
                    (logs.stdout + logs.stderr)[-4000:], podman.tail()),
                pytrace=False)


def orders(pebble):
    """Orders Pebble made (not newOrder requests: it refuses 5% of good
    nonces, and the daemon sends the same request again)."""
    return (Path(pebble.dir) / "pebble.log").read_text().count(
        "Added order ")


def acmectl_show(podman, ctr):
    r = podman("exec", ctr, "acmectl", "--json", "show", CERT_ID,
               check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def play_down(podman, played, name):
    """Takes down what played holds; podman 4.3 keeps the claims' and the
    ConfigMaps' volumes, so those whose names hold name go too."""
    if played.exists():
        podman("play", "kube", "--down", str(played), check=False)
    for v in podman("volume", "ls", "-q", check=False).stdout.split():
        if name in v:
            podman("volume", "rm", "-f", v, check=False)


def test_pod_issues_serves_and_survives_the_sidecar(tmp_path, pebble,
                                                     images):
    podman = Podman(tmp_path)
    name = "acme-pod-" + uuid.uuid4().hex[:8]
    ports = {"https": free_port(), "http": pebble.http_port,
             "responder": free_port()}
    played = tmp_path / "pod.yaml"
    started = time.monotonic()
    try:
        docs, _ = played_copy(pebble, ports, images, name)
        played.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        podman("play", "kube", str(played))
        pod = name + "-pod-0"
        nginx = pod + "-nginx"
        sidecar = pod + "-acme-sidecar"

        # Issued through nginx answering HTTP-01 from the zone, served,
        # and verifying up to Pebble's root.
        leaf = wait_served(ports["https"], tmp_path, pebble, podman, pod,
                           ISSUE_TIMEOUT)
        sans, serial = cert_of(leaf)
        assert sans == NAMES
        issued = time.monotonic()

        # The zone as nginx's container sees it: the sidecar's uid, the
        # pod's fsGroup (group=33, a number), 0640.
        st = podman("exec", nginx, "stat", "-c", "%u %g %a",
                    "/run/acme-zone/ngx_acme_shared").stdout.split()
        assert st == ["10001", "33", "640"], st
        assert podman("exec", sidecar, "id", "-u").stdout.strip() == "10001"
        assert podman("exec", nginx, "id", "-u").stdout.strip() == "33"

        # A restarted sidecar finds its certificate in state_path and
        # orders nothing.
        before = orders(pebble)
        assert before >= 1
        podman("restart", sidecar)
        deadline = time.monotonic() + 60
        shown = None
        while time.monotonic() < deadline:
            shown = acmectl_show(podman, sidecar)
            if shown is not None and shown["valid"] and \
                    shown["state"] == "idle":
                break
            time.sleep(0.5)
        assert shown is not None and shown["valid"], shown
        assert shown["state"] == "idle", shown
        assert shown["next_renewal"] is not None, shown
        assert orders(pebble) == before, "the restarted sidecar ordered"
        got = served_chain(ports["https"], tmp_path, pebble)
        assert got is not None and cert_of(got[0])[1] == serial

        # Without the sidecar, nginx serves on from the zone.
        podman("stop", "-t", "5", sidecar)
        state = podman("inspect", "-f", "{{.State.Running}}",
                       sidecar).stdout.strip()
        assert state == "false"
        got = served_chain(ports["https"], tmp_path, pebble)
        assert got is not None, "nginx served nothing without the sidecar"
        assert got[1].returncode == 0, got[1].stdout + got[1].stderr
        assert cert_of(got[0])[1] == serial
        print("pod test: issued %.0fs after the play, total %.0fs" % (
            issued - started, time.monotonic() - started))
    finally:
        play_down(podman, played, name)


# ---------------------------------------------------------------- fleet

REPLICAS = ("a", "b")


def fleet_secret_values():
    """The two values the fleet's REPLACE note asks for."""
    return {"secret": base64.b64encode(secrets.token_bytes(32)).decode(),
            "redis-password": "acme-sidecar " + secrets.token_hex(32)}


def fleet_copy(pebble, ports, images, name):
    """The documents of fleet.yaml as this test plays them: Redis, and
    one Deployment per replica (ports: {"redis": P, "a": {...}, ...})."""
    by_kind = split_kinds(FLEET)
    (secret,) = by_kind["Secret"]
    nginx_cm, sidecar_cm, redis_cm = by_kind["ConfigMap"]
    web, redis = by_kind["Deployment"]
    (pvc,) = by_kind["PersistentVolumeClaim"]

    # The Secret, as a ConfigMap of the same keys (see the top).
    assert set(secret["stringData"]) == {"secret", "redis-password"}
    renamed = {secret["metadata"]["name"]: "cluster-" + name,
               pvc["metadata"]["name"]: "redis-data-" + name}
    cluster_cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "cluster-" + name},
                  "data": fleet_secret_values()}
    pvc["metadata"]["name"] = "redis-data-" + name

    rconf = redis_cm["data"]["redis.conf"]
    rconf = replace_once(rconf, "bind * -::*", "bind 127.0.0.1", FLEET)
    redis_cm["data"]["redis.conf"] = replace_once(
        rconf, "port 6379", "port %d" % ports["redis"], FLEET)
    redis_cm["metadata"]["name"] += "-" + name
    redis["metadata"]["name"] = "redis-" + name
    rspec = redis["spec"]["template"]["spec"]
    rspec["hostNetwork"] = True
    docs = [cluster_cm, redis_cm, pvc, pebble_ca_map(pebble, name)]
    docs += adapt_volumes(rspec, name, renamed)
    (rc,) = rspec["containers"]
    rc["image"] = images["redis"]
    rc.pop("readinessProbe", None)
    rc.pop("ports", None)
    docs.append(redis)

    for r in REPLICAS:
        rname = "%s-%s" % (name, r)
        ncm, scm, dep = (copy.deepcopy(d) for d in (nginx_cm, sidecar_cm,
                                                    web))
        # Long enough for a newOrder the test holds (see the test).
        ncm["data"]["nginx.conf"] = pebble_nginx_conf(
            ncm["data"]["nginx.conf"], pebble, ports[r], FLEET,
            "\n        request_timeout %ds;" % (2 * READY_TIMEOUT + 60))
        sconf = replace_once(scm["data"]["acme-sidecar.conf"],
                             "challenge_listen 127.0.0.1:8081;",
                             "challenge_listen 127.0.0.1:%d;" %
                             ports[r]["responder"], FLEET)
        scm["data"]["acme-sidecar.conf"] = replace_once(
            sconf, "redis://acme-redis:6379", "redis://127.0.0.1:%d "
            "node=web-%s" % (ports["redis"], r), FLEET)
        for cm in (ncm, scm):
            cm["metadata"]["name"] += "-" + rname
        ca = pebble_ca_map(pebble, rname)
        docs += [ncm, scm, ca] + adapt_web(dep, rname, images, renamed) + \
            [dep]
    return docs


def readiness_command(manifest=FLEET):
    """The sidecar container's readiness probe, as the manifest has it."""
    for d in yaml.safe_load_all(manifest.read_text()):
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "acme-sidecar":
                return c["readinessProbe"]["exec"]["command"]
    raise AssertionError("%s: no readiness probe on acme-sidecar" % manifest)


class Balancer:
    """The web Service, on Pebble's HTTP-01 port: each connection goes to
    the next of the ready replicas' HTTP ports, in turn.  A connection
    that comes while none is ready waits for one."""

    def __init__(self, port):
        self.ready = []
        self.sent = {}
        self.turn = 0
        self.cond = threading.Condition()
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def add(self, port):
        with self.cond:
            self.ready.append(port)
            self.sent.setdefault(port, 0)
            self.cond.notify_all()

    def _backend(self):
        with self.cond:
            if not self.cond.wait_for(lambda: self.ready, timeout=60):
                return None
            port = self.ready[self.turn % len(self.ready)]
            self.turn += 1
            self.sent[port] += 1
            return port

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._relay, args=(conn,),
                             daemon=True).start()

    def _relay(self, conn):
        port = self._backend()
        try:
            if port is None:
                return
            with socket.create_connection(("127.0.0.1", port), 10) as up:
                t = threading.Thread(target=self._pipe, args=(up, conn),
                                     daemon=True)
                t.start()
                self._pipe(conn, up)
                t.join(30)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.closed = True
        self.thread.join(5)
        self.sock.close()


def play_logs(podman, name, each=2000):
    """The last lines of every container of the play named name."""
    out = []
    ps = podman("ps", "-a", "--format", "{{.Names}}", check=False)
    for ctr in ps.stdout.split():
        if name in ctr and not ctr.endswith("-infra"):
            r = podman("logs", ctr, check=False)
            out.append("---- %s\n%s" % (ctr, (r.stdout + r.stderr)[-each:]))
    return "\n".join(out)


READY_TIMEOUT = 120


def wait_ready(podman, ctr, probe, name, timeout=READY_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman("exec", ctr, *probe, check=False).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail("%s never passed its readiness probe %s\n%s" % (
        ctr, probe, play_logs(podman, name)), pytrace=False)


def test_fleet_orders_once_and_serves_everywhere(tmp_path, pebble, images):
    podman = Podman(tmp_path)
    name = "acme-fleet-" + uuid.uuid4().hex[:8]
    ports = {"redis": free_port()}
    for r in REPLICAS:
        ports[r] = {"https": free_port(), "http": free_port(),
                    "responder": free_port()}
    played = tmp_path / "fleet.yaml"
    balancer = Balancer(pebble.http_port)
    probe = readiness_command()
    # The replicas reach Pebble through a proxy that holds the fleet's
    # newOrder until both pass their probe (see below).
    from ca_proxy import CaProxy
    proxy = CaProxy(pebble).start()
    proxy.hold("/order-plz")
    started = time.monotonic()
    try:
        docs = fleet_copy(proxy, ports, images, name)
        played.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        podman("play", "kube", str(played))
        # In Kubernetes the Service sends a replica traffic once it is
        # ready: a member of the fleet, whose secret_file opens the
        # fleet's seal.  Here the test runs the probe, and lets the CA's
        # requests through once both replicas pass it, so that each gets
        # one of them.  The order waits until then: Pebble gives up on a
        # validation after 15 s, and a loaded machine may take longer to
        # start the second replica, which would cost a second order.
        for r in REPLICAS:
            wait_ready(podman, "%s-%s-pod-0-acme-sidecar" % (name, r), probe,
                       name)
        for r in REPLICAS:
            balancer.add(ports[r]["http"])
        proxy.release("/order-plz", forward=True)

        serials = set()
        for r in REPLICAS:
            pod = "%s-%s-pod-0" % (name, r)
            leaf = wait_served(ports[r]["https"], tmp_path, pebble, podman,
                               pod, ISSUE_TIMEOUT)
            sans, serial = cert_of(leaf)
            assert sans == NAMES, (r, sans)
            serials.add(serial)
        issued = time.monotonic()

        # One order for the fleet, one certificate served by both, and
        # the CA's requests for its two names reached each replica.
        assert orders(pebble) == 1, "%d orders for one certificate\n%s" % (
            orders(pebble), play_logs(podman, name))
        assert len(serials) == 1, serials
        sent = {r: balancer.sent.get(ports[r]["http"], 0)
                for r in REPLICAS}
        assert all(n >= 1 for n in sent.values()), sent
        print("fleet test: issued %.0fs after the play (CA requests per "
              "replica: %s), total %.0fs" % (issued - started, sent,
                                            time.monotonic() - started))
    finally:
        balancer.close()
        proxy.stop()
        play_down(podman, played, name)
