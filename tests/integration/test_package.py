"""
Installation: make install and uninstall into a DESTDIR, and the Debian
packages of scripts/build-deb, checked as a user and dpkg would see them:
the files with their modes and owners, the shipped example configuration
accepted by the packaged daemon (acme-sidecar -t), and lintian without an
error.  The packages are built from the binaries under test (ACME_SIDECAR,
ACMECTL) and the nginx module the other tests load, when there is one.

Then they are installed for real, without changing the machine: dpkg -i
in a chroot onto an overlay of / whose changes go to a tmpfs, in mount
and network namespaces of its own (root, unshare, nsenter and setpriv;
nginx for the module's package).  There the test checks the system user,
the installed files, the service started as its systemd unit starts it,
and that dpkg --purge leaves nothing behind.
"""
import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
import warnings
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


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """scripts/build-deb's packages: the daemon's, then the module's when
    there is one."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is absent: not a Debian system")
    tmp = tmp_path_factory.mktemp("packages")
    out = tmp / "deb"
    run(ROOT / "scripts" / "build-deb", "-n", private_build(tmp), out)
    return sorted(out.glob("*.deb"))


def test_install_and_debian_packages(tmp_path, packages):
    build = private_build(tmp_path)
    check_make_install(build, tmp_path)

    out = packages[0].parent
    debs = [p.name for p in packages]
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


# ---------------------------------------------- installed, run, purged

# A mount namespace holding an overlay of / whose upper layer is a tmpfs
# (not a folder of /: overlayfs does not allow layers that overlap), so
# nothing outlives the namespace; /proc, /sys and /dev are bound in, with
# a fresh /dev/shm for the daemon's zone and a fresh /run, as at boot,
# where no systemd runs (the maintainer scripts call no systemctl); the
# packages are on /mnt.  The network namespace keeps the daemon's port,
# and its attempts to reach Let's Encrypt, to itself.  It lasts until
# the test closes the script's stdin.  Exit 77: no overlay here.
NAMESPACE = r'''
set -eu
top=$1 debs=$2 root=$1/root
mount -t tmpfs -o mode=0755 acme-sidecar-test "$top" || exit 77
mkdir "$top/upper" "$top/work" "$root"
mount -t overlay -o "lowerdir=/,upperdir=$top/upper,workdir=$top/work" \
    acme-sidecar-test "$root" || exit 77
mount --rbind /proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --bind /dev "$root/dev"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
mount -t tmpfs -o mode=0755 run "$root/run"
mount --bind "$debs" "$root/mnt"
ip link set lo up
echo ready
read -r _ || true
'''

# What dpkg and the tools the maintainer scripts call leave whatever the
# package: dpkg's database and log, man-db's index (its trigger), and
# shadow's lock and backups ("passwd-" holds the previous version, by
# design: the user, after deluser).
NOT_THE_PACKAGES = ("var/lib/dpkg/", "var/log/dpkg.log", "var/cache/man/",
                    "etc/.pwd.lock", "etc/passwd-", "etc/group-",
                    "etc/shadow-", "etc/gshadow-")


# The sanitizers' reports (make sanitize's log_path) of the processes in
# the overlay: written to a folder there that the daemon can still write
# once it is acme-sidecar, then copied to where make looks for them.
SANITIZERS = ["ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"]
REPORTS = "/run/sanitizer-reports"


def sanitizer_reports():
    """The environment for the overlay, with each sanitizer's log_path
    in REPORTS/NAME, and NAME -> the folder its reports go to."""
    env, folders = dict(os.environ), {}
    for name in SANITIZERS:
        if name not in env:
            continue
        options = env[name].split(":")
        for i, option in enumerate(options):
            if option.startswith("log_path="):
                path = Path(option.removeprefix("log_path="))
                folders[name] = path.parent
                options[i] = "log_path=%s/%s/%s" % (REPORTS, name, path.name)
        env[name] = ":".join(options)
    return env, folders


class Overlay:
    """/ as an overlay in namespaces of their own: commands run chrooted
    there (nsenter), and the test reads its files through the namespace's
    /proc/PID/root."""

    def __init__(self, tmp_path, debs):
        top = tmp_path / "overlay"
        top.mkdir()
        self.chroot = str(top / "root")
        self.procs = []
        self.env, self.reports = sanitizer_reports()
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--net",
             "sh", "-c", NAMESPACE, "sh", str(top), str(debs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        if self.holder.stdout.readline() != "ready\n":
            rc = self.holder.wait(timeout=30)
            why = self.holder.stderr.read().strip()
            if rc == 77 or why.startswith("unshare:"):
                pytest.skip("no overlay of / here, so no dpkg -i: " + why)
            pytest.fail("the overlay's namespace: exit %d: %s" % (rc, why))
        gate = Path("/proc/%d/root" % self.holder.pid)
        self.root = gate / self.chroot.lstrip("/")
        self.upper = gate / str(top / "upper").lstrip("/")
        for name in self.reports:
            self.path(REPORTS).mkdir(mode=0o755, exist_ok=True)
            self.path(REPORTS + "/" + name).mkdir()
            self.path(REPORTS + "/" + name).chmod(0o1777)

    def path(self, path):
        """A path of the overlay, as the test reads it."""
        return self.root / path.lstrip("/")

    def command(self, *args):
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--",
                "chroot", self.chroot, *map(str, args)]

    def run(self, *args, check=True):
        if check:
            return run(*self.command(*args), env=self.env)
        return subprocess.run(self.command(*args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env=self.env)

    def start(self, args, log):
        """A process in the overlay; nsenter, chroot and what the unit's
        emulation puts first all exec, so its pid is the process's."""
        proc = subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                env=self.env)
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for name, folder in self.reports.items():
            for report in self.path(REPORTS + "/" + name).iterdir():
                shutil.copy(report, folder)
        self.holder.stdin.close()
        self.holder.wait(timeout=30)


@pytest.fixture
def overlay(tmp_path, packages):
    if os.geteuid() != 0:
        pytest.skip("dpkg -i in an overlay of / needs root")
    for tool in ["unshare", "nsenter", "setpriv", "dpkg", "ip"]:
        if shutil.which(tool) is None:
            pytest.skip("%s is absent: no dpkg -i in an overlay" % tool)
    o = Overlay(tmp_path, packages[0].parent)
    try:
        yield o
    finally:
        o.close()


def entry(path):
    """What a path is: type and mode, owner, and its content's digest,
    its link's target or its device (a whiteout is device 0)."""
    st = os.lstat(path)
    what = None
    if stat.S_ISREG(st.st_mode):
        what = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        what = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        what = st.st_rdev
    return st.st_mode, st.st_uid, st.st_gid, what


def layer(top):
    """Every entry of an overlay's upper layer, relative: what it is."""
    out = {}
    for dirpath, dirs, names in os.walk(top):
        for name in dirs + names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, top)] = entry(path)
    return out


def leftovers(before, after):
    """What the upper layer holds after the purge, not before, that is
    not what / holds at that path (a copy-up changed back is no trace):
    files and folders left behind, system files changed or removed."""
    out = []
    for path, what in sorted(after.items()):
        if before.get(path) == what or path.startswith(NOT_THE_PACKAGES):
            continue
        try:
            lower = entry("/" + path)
        except FileNotFoundError:
            lower = None
        if what != lower:
            out.append(path)
    return out


def owned(path):
    """ls -l's mode of a path, its uid and gid."""
    st = os.lstat(path)
    return stat.filemode(st.st_mode), st.st_uid, st.st_gid


def account(o, db, name):
    """getent DB NAME in the overlay, split; None when there is none."""
    p = o.run("getent", db, name, check=False)
    assert p.returncode in (0, 2), (db, name, p.stderr)
    return p.stdout.strip().split(":") if p.returncode == 0 else None


def check_installed(o, module):
    """The system user postinst made and the files as dpkg installed
    them; returns the user's uid and gid."""
    user = account(o, "passwd", "acme-sidecar")
    group = account(o, "group", "acme-sidecar")
    assert user and group, "postinst made no user or group acme-sidecar"
    uid, gid = int(user[2]), int(user[3])
    # Debian's range for the system users adduser allocates.
    assert 100 <= uid <= 999 and int(group[2]) == gid and gid <= 999, user
    assert user[5:] == ["/var/lib/acme-sidecar", "/usr/sbin/nologin"], user
    password = account(o, "shadow", "acme-sidecar")[1]
    assert password.startswith("!") or password == "*", "login enabled"

    want = {}
    for path, mode in INSTALLED.items():
        if path.startswith("usr/share/man/"):
            path += ".gz"
        want[path] = (stat.filemode(stat.S_IFREG | mode), 0, 0)
    want["etc/acme-sidecar"] = ("drwxr-xr-x", 0, 0)
    want["var/lib/acme-sidecar"] = ("drwxr-xr-x", 0, 0)
    if module:
        for path, mode in MODULE_FILES.items():
            want[path] = (stat.filemode(stat.S_IFREG | mode), 0, 0)
    assert {path: owned(o.path(path)) for path in want} == want
    if module:
        assert os.readlink(o.path(ENABLED)) == \
            "/usr/share/nginx/modules-available/mod-http-acme.conf"
    conffiles = o.run("dpkg-query", "-W", "-f", "${Conffiles}",
                      "acme-sidecar").stdout
    assert "/etc/acme-sidecar/acme-sidecar.conf " in conffiles, conffiles
    # Every file as its md5sums says.
    p = o.run("dpkg", "--verify", "acme-sidecar",
              *(["libnginx-mod-http-acme"] if module else []))
    assert p.stdout == "", p.stdout
    return uid, gid


def unit_service(text):
    """The [Service] settings of a unit file: name -> values, in order."""
    section, out = None, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            name, _, value = line.partition("=")
            out.setdefault(name.strip(), []).append(value.strip())
    return out


def setting(service, name, default=""):
    return service.get(name, [default])[-1]


def exec_argv(line):
    """An Exec*= line's argv, without its prefixes (- @ + ! :)."""
    argv = shlex.split(line)
    argv[0] = argv[0].lstrip("-@+!:")
    return argv


def cap_list(names):
    return ",".join("+" + c.lower().removeprefix("cap_")
                    for c in names.split())


def as_the_unit(service, argv):
    """argv run as systemd runs the unit's processes, as far as the
    daemon can tell without its sandbox (ProtectSystem= and the like,
    which systemd-analyze verify checks): User=/Group=, the bounding
    set, ambient capabilities, NoNewPrivileges= and UMask=."""
    wrap = ["setpriv"]
    user = setting(service, "User")
    if user:
        wrap += ["--reuid", user, "--regid",
                 setting(service, "Group", user), "--init-groups"]
    caps = setting(service, "CapabilityBoundingSet")
    if caps:
        wrap.append("--bounding-set=-all," + cap_list(caps))
    ambient = setting(service, "AmbientCapabilities")
    if ambient:
        wrap += ["--inh-caps=" + cap_list(ambient),
                 "--ambient-caps=" + cap_list(ambient)]
    if setting(service, "NoNewPrivileges") in ("yes", "true", "on", "1"):
        wrap.append("--no-new-privs")
    umask = setting(service, "UMask", "0022")
    return wrap + ["sh", "-c", 'umask %s && exec "$@"' % umask, "sh",
                   *argv]


def unit_directories(o, service):
    """RuntimeDirectory= and StateDirectory=, as systemd makes them: the
    unit's user's (root without User=), in their Mode=."""
    owner = setting(service, "User", "root")
    group = setting(service, "Group", owner)
    for kind, base in [("Runtime", "/run"), ("State", "/var/lib")]:
        mode = setting(service, kind + "DirectoryMode", "0755")
        for name in " ".join(service.get(kind + "Directory", [])).split():
            o.run("install", "-d", "-m", mode, "-o", owner, "-g", group,
                  base + "/" + name)


def proc_status(pid):
    """/proc/PID/status: field -> its values."""
    out = {}
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        name, _, value = line.partition(":")
        out[name] = value.split()
    return out


def wait_for_log(proc, log, text, timeout=30.0):
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, \
            "exited %s:\n%s" % (proc.returncode, log.read_text())
        assert time.monotonic() < deadline, \
            "no %r in %s s:\n%s" % (text, timeout, log.read_text())
        time.sleep(0.05)


def check_service(o, uid, gid, tmp_path):
    """The daemon started as its unit starts it: root that becomes the
    configuration's user, answering on its control socket, SIGTERM
    ending it with status 0."""
    unit = "/usr/lib/systemd/system/acme-sidecar.service"
    service = unit_service(o.path(unit).read_text())
    start = exec_argv(setting(service, "ExecStart"))
    assert start[0] == "/usr/sbin/acme-sidecar", start
    unit_directories(o, service)
    for line in service.get("ExecStartPre", []):
        o.run(*as_the_unit(service, exec_argv(line)))
    log = tmp_path / "daemon.log"
    with open(log, "w") as f:
        proc = o.start(as_the_unit(service, start), f)
    wait_for_log(proc, log, "running as user acme-sidecar")

    status = proc_status(proc.pid)
    assert status["Name"] == ["acme-sidecar"], status["Name"]
    assert status["Uid"] == [str(uid)] * 4, status["Uid"]
    assert status["Gid"] == [str(gid)] * 4, status["Gid"]
    assert int(status["CapPrm"][0], 16) == 0, status["CapPrm"]
    assert int(status["CapEff"][0], 16) == 0, status["CapEff"]
    p = o.run("acmectl", "status")
    assert p.stdout.startswith("version "), p.stdout
    assert "letsencrypt_staging" in p.stdout, p.stdout

    # What it made: the control socket and state_path its user's, the
    # zone root's in nginx's workers' group.
    www_data = int(account(o, "group", "www-data")[2])
    assert {path: owned(o.path(path)) for path in [
        "run/acme-sidecar/control.sock",
        "var/lib/acme-sidecar/letsencrypt-staging",
        "dev/shm/ngx_acme_shared"]} == {
        "run/acme-sidecar/control.sock": ("srw-rw----", uid, gid),
        "var/lib/acme-sidecar/letsencrypt-staging": ("drwx------", uid, gid),
        "dev/shm/ngx_acme_shared": ("-rw-r-----", 0, www_data)}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()

    if shutil.which("systemd-analyze") is None:
        warnings.warn("systemd-analyze is absent: the unit is not verified")
        return
    p = o.run("systemd-analyze", "verify", unit, check=False)
    complaints = [l for l in (p.stdout + p.stderr).splitlines()
                  if "acme-sidecar" in l]
    assert p.returncode == 0 and not complaints, p.stdout + p.stderr


def check_purged(o):
    assert account(o, "passwd", "acme-sidecar") is None
    assert account(o, "group", "acme-sidecar") is None
    for path in ["etc/acme-sidecar", "var/lib/acme-sidecar",
                 "usr/share/acme-sidecar", "usr/sbin/acme-sidecar",
                 "usr/lib/systemd/system/acme-sidecar.service", ENABLED,
                 ENABLED + ".removed"]:
        assert not os.path.lexists(o.path(path)), path


def check_upgrade_restarts(o, packages):
    """With systemd running, the postinst of an upgrade ($2, the version
    before) asks systemd to try-restart the daemon, as dh_installsystemd
    does, and that of a first install does not.  systemd is stood in for
    by /run/systemd/system and two stubs that log their arguments."""
    log = o.path("var/log/stub-systemd")
    stubs = [o.path("usr/local/sbin/" + n)
             for n in ("systemctl", "deb-systemd-invoke")]
    for stub in stubs:
        stub.write_text('#!/bin/sh\necho "${0##*/} $*" >>/var/log/'
                        'stub-systemd\n')
        stub.chmod(0o755)
    running = o.path("run/systemd/system")
    made = not running.exists()
    running.mkdir(parents=True, exist_ok=True)
    try:
        postinst = "/var/lib/dpkg/info/acme-sidecar.postinst"
        o.run(postinst, "configure", "")
        assert log.read_text() == "systemctl --system daemon-reload\n"
        log.unlink()
        version = o.run("dpkg-query", "-W", "-f", "${Version}",
                        "acme-sidecar").stdout
        o.run(postinst, "configure", version)
        restart = "deb-systemd-invoke try-restart acme-sidecar.service\n"
        assert log.read_text() == "systemctl --system daemon-reload\n" + \
            restart
        log.unlink()
        # The real thing: dpkg -i of the package installed is an upgrade.
        o.run("dpkg", "-i", "/mnt/" + packages[0].name)
        assert restart in log.read_text(), log.read_text()
    finally:
        for stub in stubs:
            stub.unlink()
        log.unlink(missing_ok=True)
        if made:
            running.rmdir()


def test_package_installs_runs_and_purges(overlay, packages, tmp_path):
    o = overlay
    module = len(packages) > 1
    policy = o.path("usr/sbin/policy-rc.d")
    if not policy.exists():
        # As in any chroot: invoke-rc.d (nginx's reload trigger) starts
        # and reloads nothing.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    before = layer(o.upper)

    p = o.run("dpkg", "-i", *["/mnt/" + deb.name for deb in packages])
    assert "warning" not in p.stdout + p.stderr, p.stdout + p.stderr
    uid, gid = check_installed(o, module)
    p = o.run("/usr/sbin/acme-sidecar", "-t", "-c",
              "/etc/acme-sidecar/acme-sidecar.conf")
    assert "test is successful" in p.stderr, p.stderr
    check_service(o, uid, gid, tmp_path)
    check_upgrade_restarts(o, packages)

    p = o.run("dpkg", "--purge", "acme-sidecar",
              *(["libnginx-mod-http-acme"] if module else []))
    assert "dpkg: warning" not in p.stdout + p.stderr, p.stdout + p.stderr
    check_purged(o)
    assert leftovers(before, layer(o.upper)) == []
