"""
The man pages (man/) against the code, so that they cannot rot: every
directive and parameter of the parser's tables is in acme-sidecar.conf(5),
every option of acme-sidecar -h in acme-sidecar(8), every command and
option of acmectl -h in acmectl(8) (and each command's own --help options
under that command's entry), and the pages render without a warning.
Then the bash completion of acmectl, which asks acmectl for the same.
"""
import json
import os
import re
import shutil
import socketserver
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import ROOT

ACMECTL = Path(os.environ.get("ACMECTL", ROOT / "build" / "acmectl"))
MAN = ROOT / "man"


def run(*args):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)


def source(name):
    return (ROOT / "src" / name).read_text()


def conf_directives():
    """The names in conf.c's directive table, conf_cmds[]."""
    text = source("conf.c")
    table = text[text.index("conf_cmds[] = {"):]
    table = table[:table.index("\n};")]
    names = re.findall(r'\{ "([a-z_]+)",', table)
    assert len(names) > 20, names
    return names


def conf_parameters():
    """The NAME= words the parsers compare their arguments with."""
    params = set()
    for f in ["conf.c", "conf_cert.c", "dns_update.c"]:
        params.update(re.findall(r'strncmp\([^,]+, "([a-z_]+=)"', source(f)))
    text = source("conf_cluster.c")
    table = text[text.index("conf_cluster_params[CLUSTER_PARAM_MAX] = {"):]
    table = table[:table.index("};")]
    params.update(n + "=" for n in re.findall(r'"([a-z_]+)"', table))
    assert {"key=", "zone=", "secret_file="} <= params, params
    return params


def page_items(page):
    """The words an .It line of the page names with Ic, Cm or Fl."""
    words = set()
    for line in (MAN / page).read_text().splitlines():
        for macro, word in re.findall(r"\b(Ic|Cm|Fl) ([^ ]+)", line):
            words.add(word.rstrip(",") if macro != "Fl" else "-" + word)
    return words


def test_conf_page_has_every_directive():
    words = page_items("acme-sidecar.conf.5")
    missing = [d for d in conf_directives() + ["include"] if d not in words]
    assert missing == [], "acme-sidecar.conf.5 misses %s" % missing
    missing = sorted(p for p in conf_parameters() if p not in words)
    assert missing == [], "acme-sidecar.conf.5 misses %s" % missing
    text = (MAN / "acme-sidecar.conf.5").read_text()
    # The nginx.conf directives --nginx-conf takes (src/nginx_conf.c).
    for d in ["user", "server_name", "listen", "acme_certificate"]:
        assert ".It Ic %s" % d in text.split(".Sh NGINX CONFIGURATION")[1], d


def test_sidecar_page_has_every_option(sidecar_bin):
    p = run(sidecar_bin, "-h")
    assert p.returncode == 0 and p.stderr == "", p
    opts = re.findall(r"^  (-[-a-zA-Z]+)", p.stdout, re.M)
    opts += re.findall(r"^  -[a-zA-Z], (--[a-z-]+)", p.stdout, re.M)
    assert {"-c", "-t", "--nginx-conf", "--help"} <= set(opts), p.stdout
    words = page_items("acme-sidecar.8")
    missing = [o for o in opts if o not in words]
    assert missing == [], "acme-sidecar.8 misses %s" % missing


def acmectl_help():
    p = run(ACMECTL, "-h")
    assert p.returncode == 0 and p.stderr == "", p
    commands = re.findall(r"^  ([a-z]+) ", p.stdout.split("commands:")[1]
                          .split("options:")[0], re.M)
    assert len(commands) >= 11 and "renew" in commands, p.stdout
    return commands


def command_entries(page_text):
    """acmectl.8's command list: each .It (with its Xo ... Xc) by name."""
    body = page_text.split("The commands are as follows:")[1]
    body = body.split(".El")[0]
    entries = {}
    for item in body.split("\n.It ")[1:]:
        head = item.split(".Xc")[0] if item.startswith("Xo") else \
            item.split("\n")[0]
        name = re.search(r"Cm ([a-z]+)", head).group(1)
        entries[name] = entries.get(name, "") + head
    return entries


def test_acmectl_page_has_every_command_and_option():
    text = (MAN / "acmectl.8").read_text()
    entries = command_entries(text)
    words = page_items("acmectl.8")
    for cmd in acmectl_help():
        assert cmd in entries, "acmectl.8 misses command %s" % cmd
        p = run(ACMECTL, cmd, "--help")
        assert p.returncode == 0 and p.stderr == "", (cmd, p)
        usage = p.stdout.splitlines()[0]
        assert usage.startswith("usage: acmectl [--json] [-s socket] %s"
                                % cmd), (cmd, usage)
        # Its options (-s and --json are every command's, in SYNOPSIS)
        # are under its entry in the page.
        opts = re.findall(r"^  (--[a-z-]+)", p.stdout, re.M)
        for opt in opts:
            assert opt in words, "acmectl.8 misses %s" % opt
            if opt != "--json":
                assert "Fl %s" % opt[1:] in entries[cmd], (cmd, opt)
    p = run(ACMECTL, "-h")
    for opt in re.findall(r"^  (--?[a-zA-Z-]+)", p.stdout, re.M):
        assert opt in words, "acmectl.8 misses %s" % opt


def test_pages_render_without_warnings():
    pages = sorted(MAN.glob("*.[58]"))
    assert [p.name for p in pages] == [
        "acme-sidecar.8", "acme-sidecar.conf.5", "acmectl.8"]
    if shutil.which("mandoc") is None:
        pytest.fail("mandoc is missing: run scripts/install-deps",
                    pytrace=False)
    p = run("mandoc", "-T", "lint", "-W", "warning", *pages)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p
    for page in pages:
        p = run("groff", "-ww", "-mandoc", "-Tutf8", page)
        assert p.returncode == 0 and p.stderr == "", (page, p.stderr)
        # Bold and underline are overstruck: X backspace X.
        assert "SEE ALSO" in re.sub(".\b", "", p.stdout), page


COMPLETION = ROOT / "conf" / "acmectl.bash-completion"


def complete(*words, env=None):
    """What _acmectl offers for the words, the last being completed."""
    script = ('source "$1"; shift; COMP_WORDS=("$@"); '
              'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _acmectl; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run(["bash", "-c", script, "bash", str(COMPLETION),
                        str(ACMECTL), *words], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30,
                       env=env)
    assert p.returncode == 0 and p.stderr == "", p
    return p.stdout.split()


class _Certificates(socketserver.StreamRequestHandler):
    """GET /v1/certificates, as the daemon answers it."""
    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = json.dumps({"certificates": [
            {"id": "a.example.test", "state": "valid"},
            {"id": "b.example.test_rsa2048", "state": "valid"}]}).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))


def test_bash_completion(tmp_path):
    assert complete("re") == ["remove", "renew", "revoke", "reload"]
    assert "account" in complete("")
    assert complete("renew", "--") == [
        "--help", "--json", "--no-wait", "--timeout", "--all"]
    assert complete("add", "--key", "rsa") == [
        "rsa:2048", "rsa:3072", "rsa:4096"]
    assert complete("account", "") == ["show", "rollover", "deactivate"]
    # Ids from "acmectl list" on the socket -s names; none without one.
    sock = tmp_path / "control.sock"
    server = socketserver.UnixStreamServer(str(sock), _Certificates)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert complete("-s", str(sock), "renew", "") == [
            "a.example.test", "b.example.test_rsa2048"]
        assert complete("-s", str(sock), "show", "b") == [
            "b.example.test_rsa2048"]
    finally:
        server.shutdown()
        server.server_close()
    assert complete("-s", str(sock), "renew", "") == []
