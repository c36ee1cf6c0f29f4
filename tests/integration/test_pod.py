"""conf/kubernetes/pod.yaml, played by podman from conf/Containerfile's
images: the pod gets its certificate from Pebble, nginx serves it, a
restarted sidecar orders nothing, and nginx serves on without the sidecar.

One test, and a long one (about 4 minutes cold: the images build from the
sources).  It ignores ACME_SIDECAR (the images build their own binaries),
so make check runs it once, in whichever pass runs the tests not marked
serial: it measures nothing, and most of its time is the build.

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

Rootful podman on these machines needs a containers.conf (CONTAINERS_CONF):
no default ulimits (the sandbox refuses raising nofile and nproc) and
runc (crun refuses the hybrid cgroup layout).  The base image is Debian's
bookworm-slim, or where no registry can be reached, the same built here
with mmdebstrap and imported under that name; it is kept for later runs.
"""

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, openssl, split_pem

MANIFEST = ROOT / "conf" / "kubernetes" / "pod.yaml"
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
    """Both images, tagged for this run.  The build stage keeps a tag of
    its own across runs: its apt layer is the longest step, and a later
    run reuses it.  The stage this tag named before goes."""
    ctx = str(snapshot_context(workdir))
    old = image_id(podman, BUILD_CACHE)
    podman("build", "--pull=never", "-f", str(CONTAINERFILE), "--target",
           "build", "-t", BUILD_CACHE, ctx, timeout=1500)
    if old and old != image_id(podman, BUILD_CACHE):
        podman("rmi", old, check=False)
    images = {}
    for target in ("sidecar", "nginx"):
        name = "localhost/acme-sidecar%s:%s" % (
            "" if target == "sidecar" else "-" + target, tag)
        podman("build", "--pull=never", "-f", str(CONTAINERFILE),
               "--target", target, "-t", name, ctx, timeout=1500)
        images[target] = name
    return images


def replace_once(text, old, new):
    assert text.count(old) == 1, "%s: %r is no longer there once" % (
        MANIFEST, old)
    return text.replace(old, new)


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


def played_copy(pebble, ports, images, name):
    """The documents of pod.yaml as this test plays them."""
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    nginx_cm, sidecar_cm = by_kind["ConfigMap"]
    (deploy,) = by_kind["Deployment"]

    conf = nginx_cm["data"]["nginx.conf"]
    conf = replace_once(
        conf, "uri         https://acme-staging-v02.api.letsencrypt.org/"
        "directory;", "uri %s;\n        ssl_trusted_certificate "
        "/etc/acme-test/pebble-ca.pem;" % pebble.directory_url)
    conf = replace_once(conf, "listen 8443 ssl;",
                        "listen 127.0.0.1:%d ssl;" % ports["https"])
    conf = replace_once(conf, "listen 8080 default_server;",
                        "listen 127.0.0.1:%d default_server;" %
                        ports["http"])
    nginx_cm["data"]["nginx.conf"] = conf
    sconf = sidecar_cm["data"]["acme-sidecar.conf"]
    sidecar_cm["data"]["acme-sidecar.conf"] = replace_once(
        sconf, "challenge_listen 127.0.0.1:8081;",
        "challenge_listen 127.0.0.1:%d;" % ports["responder"])
    for cm in (nginx_cm, sidecar_cm):
        cm["metadata"]["name"] += "-" + name
    ca = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "pebble-ca-" + name},
          "data": {"pebble-ca.pem": Path(pebble.ca).read_text()}}

    deploy["metadata"]["name"] = name
    spec = deploy["spec"]["template"]["spec"]
    spec["hostNetwork"] = True
    claims = []
    for vol in spec["volumes"]:
        if "configMap" in vol:
            vol["configMap"]["name"] += "-" + name
        elif vol.get("emptyDir", {}).get("medium") == "Memory":
            claim = "%s-%s" % (name, vol["name"])
            claims.append(tmpfs_claim(claim, vol["emptyDir"]["sizeLimit"]))
            del vol["emptyDir"]
            vol["persistentVolumeClaim"] = {"claimName": claim}
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
    return [nginx_cm, sidecar_cm, ca] + claims + [deploy], claims


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
    return (Path(pebble.dir) / "pebble.log").read_text().count(
        "POST /order-plz")


def acmectl_show(podman, ctr):
    r = podman("exec", ctr, "acmectl", "--json", "show", CERT_ID,
               check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def test_pod_issues_serves_and_survives_the_sidecar(tmp_path, pebble):
    podman = Podman(tmp_path)
    tag = "test-" + uuid.uuid4().hex[:8]
    name = "acme-pod-" + tag[5:]
    ports = {"https": free_port(), "http": pebble.http_port,
             "responder": free_port()}
    played = tmp_path / "pod.yaml"
    images = {}
    claims = []
    started = time.monotonic()
    try:
        ensure_base_image(podman, tmp_path)
        images = build_images(podman, tag, tmp_path)
        built = time.monotonic()
        docs, claims = played_copy(pebble, ports, images, name)
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
        print("pod test: images %.0fs, issued %.0fs later, total %.0fs" % (
            built - started, issued - built, time.monotonic() - started))
    finally:
        if played.exists():
            podman("play", "kube", "--down", str(played), check=False)
        # podman 4.3 keeps the claims' and the ConfigMaps' volumes.
        for v in podman("volume", "ls", "-q", check=False).stdout.split():
            if name in v:
                podman("volume", "rm", "-f", v, check=False)
        for image in images.values():
            podman("rmi", "-f", image, check=False)
