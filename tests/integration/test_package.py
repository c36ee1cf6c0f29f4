"""
Installation: make install and uninstall into a DESTDIR, and the Debian
packages of scripts/build-deb, checked as a user and dpkg would see them:
the files with their modes and owners, the shipped example configuration
accepted by the packaged daemon (acme-sidecar -t), and lintian without an
error.  The packages are built from the binaries under test (ACME_SIDECAR,
ACMECTL) and the nginx module the other tests load, when there is one.
"""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, SIDECAR
from nginxlib import MODULE

ACMECTL = Path(os.environ.get("ACMECTL", ROOT / "build" / "acmectl"))

INSTALLED = {
    # path under DESTDIR: mode
    "usr/sbin/acme-sidecar": 0o755,
    "usr/bin/acmectl": 0o755,
    "usr/share/man/man5/acme-sidecar.conf.5": 0o644,
    "usr/share/man/man8/acme-sidecar.8": 0o644,
    "usr/share/man/man8/acmectl.8": 0o644,
    "usr/share/bash-completion/completions/acmectl": 0o644,
    "usr/share/acme-sidecar/acme.js": 0o644,
    "usr/lib/systemd/system/acme-sidecar.service": 0o644,
    "etc/acme-sidecar/acme-sidecar.conf": 0o644,
}
MODULE_FILES = {
    "usr/lib/nginx/modules/ngx_http_acme_module.so": 0o644,
    "usr/share/nginx/modules-available/mod-http-acme.conf": 0o644,
}
ENABLED = "etc/nginx/modules-enabled/50-mod-http-acme.conf"


def run(*args, **kw):
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120, **kw)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def files_under(root):
    """Every file and link under root, relative: its mode (or its target)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            out[rel] = (os.readlink(path) if path.is_symlink()
                        else stat.S_IMODE(path.stat().st_mode))
    return out


def private_build(tmp_path):
    """A BUILD folder holding the binaries under test, for make and
    build-deb (-n: nothing is built)."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "acme-sidecar").symlink_to(SIDECAR)
    (build / "acmectl").symlink_to(ACMECTL)
    if MODULE.exists():
        (build / MODULE.name).symlink_to(MODULE)
    return build


def check_make_install(build, tmp_path):
    dest = tmp_path / "dest"
    make = ["make", "-s", "-C", ROOT, "-o", "all", "BUILD=%s" % build,
            "DESTDIR=%s" % dest, "PREFIX=/usr"]
    run(*make, "install")
    want = dict(INSTALLED)
    if MODULE.exists():
        want.update(MODULE_FILES)
        want[ENABLED] = "/usr/share/nginx/modules-available/mod-http-acme.conf"
    assert files_under(dest) == want
    unit = (dest / "usr/lib/systemd/system/acme-sidecar.service").read_text()
    assert "ExecStart=/usr/sbin/acme-sidecar -c /etc/acme-sidecar/" in unit
    assert "/usr/local" not in unit
    if MODULE.exists():
        assert (dest / "usr/share/nginx/modules-available/mod-http-acme.conf"
                ).read_text() == ("load_module /usr/lib/nginx/modules/"
                                  "ngx_http_acme_module.so;\n")
    # A second install keeps an edited configuration; uninstall leaves
    # only it.
    conf = dest / "etc/acme-sidecar/acme-sidecar.conf"
    conf.write_text("# edited\n")
    run(*make, "install")
    assert conf.read_text() == "# edited\n"
    run(*make, "uninstall")
    assert files_under(dest) == {"etc/acme-sidecar/acme-sidecar.conf": 0o644}


def deb_listing(deb):
    """dpkg-deb -c: path -> (mode string, owner)."""
    out = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        mode, owner, _, _, _, path = line.split(None, 5)
        out[path.split(" -> ")[0].lstrip("./")] = (mode, owner)
    return out


def test_install_and_debian_packages(tmp_path):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is absent: not a Debian system")
    build = private_build(tmp_path)
    check_make_install(build, tmp_path)

    out = tmp_path / "deb"
    run(ROOT / "scripts" / "build-deb", "-n", build, out)
    debs = sorted(p.name for p in out.glob("*.deb"))
    daemon_deb = out / debs[0]
    assert debs[0].startswith("acme-sidecar_") and debs[0].endswith(".deb")

    files = {p: m for p, m in deb_listing(daemon_deb).items()
             if not m[0].startswith("d")}
    want = {}
    for path, mode in INSTALLED.items():
        if path.startswith("usr/share/man/"):
            path += ".gz"
        want[path] = ("-rwxr-xr-x" if mode == 0o755 else "-rw-r--r--",
                      "root/root")
    for doc in ["copyright", "changelog.Debian.gz"]:
        want["usr/share/doc/acme-sidecar/" + doc] = ("-rw-r--r--",
                                                     "root/root")
    assert files == want
    info = run("dpkg-deb", "-f", daemon_deb, "Depends").stdout
    for lib in ["adduser", "libevent-2.1-7", "libevent-openssl-2.1-7",
                "libssl3", "libjansson4", "libmicrohttpd12",
                "libhiredis0.14", "libldns3"]:
        assert lib + " " in info or lib + "," in info, info
    control = tmp_path / "control"
    run("dpkg-deb", "-e", daemon_deb, control)
    assert (control / "conffiles").read_text() == \
        "/etc/acme-sidecar/acme-sidecar.conf\n"
    assert "adduser --system" in (control / "postinst").read_text()
    assert "deluser --system" in (control / "postrm").read_text()

    if MODULE.exists():
        assert debs[1].startswith("libnginx-mod-http-acme_"), debs
        files = {p: m for p, m in deb_listing(out / debs[1]).items()
                 if not m[0].startswith("d")}
        assert {p: m for p, m in files.items() if "/doc/" not in p} == {
            p: ("-rw-r--r--", "root/root") for p in MODULE_FILES}
        depends = run("dpkg-deb", "-f", out / debs[1], "Depends").stdout
        assert depends.startswith("nginx-abi-"), depends
    else:
        assert len(debs) == 1, debs

    # The packaged daemon accepts the packaged example as it is; its
    # "user acme-sidecar;" needs that user, which postinst creates: where
    # the machine has none, it is added in a mount namespace of its own.
    root = tmp_path / "root"
    run("dpkg-deb", "-x", daemon_deb, root)
    conf = root / "etc/acme-sidecar/acme-sidecar.conf"
    assert "\nuser acme-sidecar;\n" in conf.read_text()
    check = [str(root / "usr/sbin/acme-sidecar"), "-t", "-c", str(conf)]
    if subprocess.run(["getent", "passwd", "acme-sidecar"],
                      stdout=subprocess.DEVNULL).returncode != 0:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("no user acme-sidecar here, and no root to add one")
        for f in ["passwd", "group"]:
            text = Path("/etc", f).read_text()
            line = ("acme-sidecar:x:900:900::/var/lib/acme-sidecar:"
                    "/usr/sbin/nologin\n" if f == "passwd"
                    else "acme-sidecar:x:900:\n")
            (tmp_path / f).write_text(text + line)
        check = ["unshare", "--mount", "sh", "-c",
                 'mount --bind "$1" /etc/passwd && '
                 'mount --bind "$2" /etc/group && shift 2 && exec "$@"',
                 "sh", str(tmp_path / "passwd"), str(tmp_path / "group"),
                 *check]
    p = run(*check)
    assert "test is successful" in p.stderr, p.stderr

    # lintian: no error (its warnings are in the report of the change).
    if shutil.which("lintian") is None:
        pytest.fail("lintian is missing: run scripts/install-deps",
                    pytrace=False)
    p = subprocess.run(["lintian", "--fail-on", "error", *out.glob("*.deb")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not [l for l in p.stdout.splitlines() if l.startswith("E:")], \
        p.stdout
