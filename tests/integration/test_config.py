"""`acme-sidecar -t`: configuration test, nginx style, file:line errors.

Only the binary is needed: nothing is contacted.  The wording of errors
belongs to the parser, so these tests check the FILE:LINE: location, the
exit status and one word of the cause.
"""

import re
import signal
import stat
import subprocess
import time

import pytest

from conftest import ROOT, SIDECAR, openssl, pebblelib


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    pebblelib.make_listener_certs(str(d))
    return d / "ca.pem"


def base_lines(state, ca):
    return [
        "# acme-sidecar -t test",                          # 1
        "acme_issuer pebble {",                            # 2
        "    uri https://127.0.0.1:14000/dir;",            # 3
        "    state_path %s;" % state,                      # 4
        "    accept_terms_of_service;",                    # 5
        "    ssl_trusted_certificate %s;" % ca,            # 6
        "    request_rate off;",                           # 7
        "    contact admin@example.test;",                 # 8
        "}",                                               # 9
        "",                                                # 10
        "challenge_listen 127.0.0.1:8080;",                # 11
        "",                                                # 12
        "acme_certificate pebble a.example.test b.example.test;",  # 13
        "acme_certificate pebble c.example.test key=rsa:2048;",    # 14
    ]


def run_t(sidecar_bin, conf):
    return subprocess.run([str(sidecar_bin), "-t", "-c", str(conf)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=30)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_config(tmp_path, sidecar_bin, ca_file):
    conf = write(tmp_path / "good.conf", base_lines(tmp_path / "state",
                                                    ca_file))
    p = run_t(sidecar_bin, conf)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "syntax is ok" in out, out
    assert "test is successful" in out, out


# (name, edit, line of the error, any of these words in the message)
# edit(lines) changes the base config in place.
def _insert(at, text):
    def edit(lines):
        lines.insert(at - 1, text)
    return edit


def _replace(at, text):
    def edit(lines):
        lines[at - 1] = text
    return edit


BAD = [
    ("unknown directive", _insert(12, "acme_bogus on;"), 12,
     ("unknown", "acme_bogus")),
    ("unknown directive in issuer", _insert(8, "    uri_typo x;"), 8,
     ("unknown", "uri_typo")),
    ("bad key type", _insert(15, "acme_certificate pebble d.example.test "
                                 "key=rsa:1024;"), 15,
     ("rsa:1024", "key")),
    ("unknown issuer", _insert(15, "acme_certificate nosuch d.example.test;"),
     15, ("nosuch", "issuer", "unknown")),
    ("duplicate certificate",
     _insert(15, "acme_certificate pebble a.example.test b.example.test;"),
     15, ("duplicate", "already")),
    ("no identifiers", _insert(15, "acme_certificate pebble;"), 15,
     ("identifier", "argument", "name")),
    ("wildcard", _insert(15, "acme_certificate pebble *.example.test;"), 15,
     ("wildcard", "*.example.test", "needs challenge dns-01")),
    ("dns-01 without a publisher",
     _insert(15, "acme_certificate pebble *.example.test "
                 "challenge=dns-01;"), 15,
     ("dns-01", "no way to publish", "dns_hook")),
    ("unknown issuer parameter", _replace(7, "    request_rate fast;"), 7,
     ("request_rate", "fast", "invalid")),
]


@pytest.mark.parametrize("name,edit,line,words", BAD,
                         ids=[b[0] for b in BAD])
def test_bad_config(tmp_path, sidecar_bin, ca_file, name, edit, line, words):
    lines = base_lines(tmp_path / "state", ca_file)
    edit(lines)
    conf = write(tmp_path / "bad.conf", lines)
    p = run_t(sidecar_bin, conf)
    assert p.returncode == 1, "%s: status %d\n%s%s" % (
        name, p.returncode, p.stdout, p.stderr)
    where = "%s:%d:" % (conf, line)
    assert where in p.stderr, "%s: expected %r in stderr:\n%s" % (
        name, where, p.stderr)
    assert any(w.lower() in p.stderr.lower() for w in words), \
        "%s: none of %s in stderr:\n%s" % (name, words, p.stderr)
    assert "test is successful" not in p.stdout + p.stderr


def test_missing_semicolon(tmp_path, sidecar_bin, ca_file):
    """`contact x` then `}`: the parser meets "}" before ";".  nginx puts
    that error on the line of the unexpected token; the line of the
    directive itself is just as helpful, so either is accepted."""
    lines = base_lines(tmp_path / "state", ca_file)
    lines[7] = "    contact admin@example.test"                  # line 8
    conf = write(tmp_path / "semi.conf", lines)
    p = run_t(sidecar_bin, conf)
    assert p.returncode == 1, p.stdout + p.stderr
    assert ("%s:8:" % conf in p.stderr or "%s:9:" % conf in p.stderr), \
        p.stderr
    assert any(w in p.stderr.lower() for w in (";", "unexpected", "expect")),\
        p.stderr


def test_error_in_included_file(tmp_path, sidecar_bin, ca_file):
    """An error in an included file names that file and its line."""
    inc = write(tmp_path / "certs.conf.inc", [
        "# certificates",
        "acme_certificate pebble d.example.test;",
        "acme_bogus on;",
    ])
    lines = base_lines(tmp_path / "state", ca_file)
    lines.append("include %s;" % (tmp_path / "*.conf.inc"))
    conf = write(tmp_path / "main.conf", lines)
    p = run_t(sidecar_bin, conf)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "%s:3:" % inc in p.stderr, p.stderr


def test_missing_file(tmp_path, sidecar_bin):
    conf = tmp_path / "nonexistent.conf"
    p = run_t(sidecar_bin, conf)
    assert p.returncode == 1, p.stdout + p.stderr
    assert str(conf) in p.stderr, p.stderr


def test_example_config(tmp_path, sidecar_bin):
    """conf/acme-sidecar.conf, the documented example, passes -t (with its
    paths moved into the test's folder so nothing outside is touched)."""
    text = (ROOT / "conf" / "acme-sidecar.conf").read_text()
    text = re.sub(r"(?m)^(\s*state_path\s+)\S+;",
                  r"\g<1>%s;" % (tmp_path / "state"), text)
    text = re.sub(r"(?m)^(\s*control_socket\s+)\S+;",
                  r"\g<1>%s;" % (tmp_path / "control.sock"), text)
    conf = tmp_path / "example.conf"
    conf.write_text(text)
    p = run_t(sidecar_bin, conf)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "test is successful" in out, out


def test_nginx_acme_vocabulary(run, fake, tmp_path, monkeypatch):
    """nginx-acme 0.4's words, against the fake CA (it signs the CSR's
    subject as it is): by default the subject is empty, and once a reload
    turns common_name_in_csr on, the first name is its CN; key=rsa is a
    2048-bit key; state_path off keeps everything in one private folder
    under TMPDIR (-t leaves nothing), which reloads keep and a clean stop
    removes."""
    rt = tmp_path / "rt"
    rt.mkdir()
    monkeypatch.setenv("TMPDIR", str(rt))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    default_state = run.state
    run.issuers = {"fake": (fake.directory_url, "off", [])}
    run.write_conf([["b.example", "c.example"]])
    p = run_t(SIDECAR, run.conf)
    assert p.returncode == 0, p.stderr
    assert list(rt.iterdir()) == [], "-t left %s" % list(rt.iterdir())

    run.sidecar = run.factory(run.conf).start()
    run.t0 = time.monotonic()
    root = run.wait(lambda: list(rt.glob("acme-sidecar.*")), 10,
                    "the state_path off folder")[0]
    run.check(stat.S_IMODE(root.stat().st_mode) == 0o700,
              "%s: mode %o" % (root, root.stat().st_mode))
    run.state = root / "fake"
    run.wait_issued("b.example")
    b = run.leaf("b.example")
    run.check(subject(b) == "", "b: %r" % subject(b))

    run.issuers = {"fake": (fake.directory_url, "off",
                            ["common_name_in_csr on;"])}
    run.write_conf([["b.example", "c.example"], ["a.example", "key=rsa"]])
    run.sidecar.proc.send_signal(signal.SIGHUP)
    run.wait_issued("a.example_rsa2048")
    a = run.leaf("a.example_rsa2048")
    run.check(subject(a) == "CN = a.example", "a: %r" % subject(a))
    run.check("Public-Key: (2048 bit)" in openssl(
        "x509", "-noout", "-text", input=a).stdout, "a: not RSA 2048")
    run.check(list(rt.iterdir()) == [root] and
              (root / "fake" / "account.key").is_file(),
              "after the reload: %s" % list(rt.rglob("*")))
    assert run.sidecar.stop() == 0, run.diagnostics()
    assert list(rt.iterdir()) == [], "left after a clean stop: %s" % [
        str(p) for p in rt.rglob("*")]
    assert not default_state.exists()


def subject(pem):
    out = openssl("x509", "-noout", "-subject", "-nameopt", "oneline",
                  input=pem).stdout.strip()
    return out[len("subject="):].strip()
