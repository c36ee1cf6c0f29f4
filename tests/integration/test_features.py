"""Features beyond plain issuance, each against its own fresh Pebble:
key types, account keys, external account binding, preferred_chain,
SIGHUP removal and refusal, IP identifiers, and the state on disk."""

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import (EXPECTED_KEY, cert_id, cert_sans, cert_serial,
                      check_account, check_certificate, key_type, mode,
                      openssl, split_pem, write_config)


# ---------------------------------------------------------------- helpers

def start(tmp_path, pebble, http_port, sidecar_factory, certs,
          issuer_extra=""):
    """Write the config for certs and start the daemon on it."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    write_config(conf, pebble, state, http_port, certs,
                 issuer_extra=issuer_extra)
    sidecar = sidecar_factory(conf, [pebble]).start()
    return state, conf, sidecar


def ids(certs):
    return [cert_id(n, k) for n, k in certs]


def leaf_serial(state, cid):
    pem = (Path(state) / "certs" / cid / "fullchain.pem").read_text()
    return cert_serial(split_pem(pem)[0])


def genpkey(path, kind):
    """An unencrypted PKCS#8 key made by openssl: "ec:P-256", "rsa:2048"."""
    alg, param = kind.split(":")
    if alg == "ec":
        opt = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + param]
    else:
        opt = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + param]
    openssl("genpkey", *opt, "-out", str(path))
    os.chmod(path, 0o600)
    return path


def subject_cn(pem):
    out = openssl("x509", "-noout", "-subject", "-nameopt", "multiline",
                  input=pem).stdout
    m = re.search(r"commonName\s*=\s*(.+)", out)
    assert m, "no subject CN in: " + out
    return m.group(1).strip()


def issuer_cn(pem):
    out = openssl("x509", "-noout", "-issuer", "-nameopt", "multiline",
                  input=pem).stdout
    m = re.search(r"commonName\s*=\s*(.+)", out)
    assert m, "no issuer CN in: " + out
    return m.group(1).strip()


def verify_chain(fullchain, root_file, workdir, tag):
    """openssl verify of the chain file's leaf, with only the chain file's
    other certificates as intermediates, against root_file."""
    blocks = split_pem(fullchain)
    leaf = workdir / ("%s.leaf.pem" % tag)
    untrusted = workdir / ("%s.untrusted.pem" % tag)
    leaf.write_text(blocks[0])
    untrusted.write_text("".join(blocks[1:]))
    return openssl("verify", "-CAfile", str(root_file), "-untrusted",
                   str(untrusted), str(leaf), check=False)


def gen_folders(state, cid):
    """certs/<id>@<16 hex> folders of one certificate id."""
    rx = re.compile(r"^%s@[0-9a-f]{16}$" % re.escape(cid))
    return sorted(p.name for p in (Path(state) / "certs").iterdir()
                  if rx.match(p.name))


# A minimal ACME client, only to ask Pebble which account a key owns
# (newAccount with onlyReturnExisting).  Signing is done by openssl.

def _b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _openssl_bytes(*args, input=None):
    p = subprocess.run(["openssl", *args], input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, "openssl %s: %s" % (" ".join(args),
                                                  p.stderr.decode())
    return p.stdout


def _der_ecdsa_to_raw(der, n):
    """DER SEQUENCE { INTEGER r, INTEGER s } -> r || s, n bytes each."""
    assert der[0] == 0x30, "not a DER ECDSA signature"
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        ln = der[i + 1]
        v = der[i + 2:i + 2 + ln].lstrip(b"\0")
        out += v.rjust(n, b"\0")
        i += 2 + ln
    return out


_CURVES = {"P-256": (32, "ES256", "sha256"),
           "P-384": (48, "ES384", "sha384"),
           "P-521": (66, "ES512", "sha512")}


def _jwk(key_path):
    kind, param = key_type(key_path)
    if kind == "ec":
        n, alg, dgst = _CURVES[param]
        der = _openssl_bytes("pkey", "-in", str(key_path), "-pubout",
                             "-outform", "DER")
        point = der[-(2 * n + 1):]
        assert point[0] == 4, "not an uncompressed EC point"
        jwk = {"crv": param, "kty": "EC", "x": _b64u(point[1:n + 1]),
               "y": _b64u(point[n + 1:])}
        return jwk, alg, dgst, n
    text = openssl("pkey", "-in", str(key_path), "-noout", "-text").stdout
    e = int(re.search(r"publicExponent: (\d+)", text).group(1))
    mod = openssl("rsa", "-in", str(key_path), "-noout",
                  "-modulus").stdout.strip().split("=", 1)[1]
    nb = bytes.fromhex(mod)
    eb = e.to_bytes((e.bit_length() + 7) // 8, "big")
    return {"e": _b64u(eb), "kty": "RSA", "n": _b64u(nb)}, "RS256", \
        "sha256", None


def registered_account(pebble, key_path):
    """The account URL Pebble has for this key, or an AssertionError with
    Pebble's problem document.  Pebble rejects 5% of good nonces by
    default, so badNonce is retried."""
    ctx = pebble._ssl()
    d = json.loads(pebble.get(pebble.directory_url))
    jwk, alg, dgst, n = _jwk(key_path)
    payload = _b64u(json.dumps({"onlyReturnExisting": True}).encode())
    for attempt in range(10):
        req = urllib.request.Request(d["newNonce"], method="HEAD")
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            nonce = r.headers["Replay-Nonce"]
        protected = _b64u(json.dumps({"alg": alg, "jwk": jwk,
                                      "nonce": nonce,
                                      "url": d["newAccount"]}).encode())
        sig = _openssl_bytes("dgst", "-" + dgst, "-sign", str(key_path),
                             input=("%s.%s" % (protected,
                                               payload)).encode())
        if n is not None:
            sig = _der_ecdsa_to_raw(sig, n)
        body = json.dumps({"protected": protected, "payload": payload,
                           "signature": _b64u(sig)}).encode()
        req = urllib.request.Request(
            d["newAccount"], data=body, method="POST",
            headers={"Content-Type": "application/jose+json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                return r.headers["Location"]
        except urllib.error.HTTPError as e:
            status, problem = e.code, e.read().decode()
            if "badNonce" not in problem:
                break
    raise AssertionError("Pebble knows no account for %s: %d %s" %
                         (key_path, status, problem))


# ---------------------------------------------------------------- 1. keys

def test_all_certificate_key_types(tmp_path, pebble, http_port,
                                   sidecar_factory):
    keys = ["ecdsa:256", "ecdsa:384", "ecdsa:521",
            "rsa:2048", "rsa:3072", "rsa:4096"]
    certs = [(["k%d.example.test" % i], k) for i, k in enumerate(keys)]
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, certs)
    sidecar.wait_certs(state, ids(certs))
    for names, key in certs:
        try:
            check_certificate(state, names, key, pebble, tmp_path)
        except AssertionError as e:
            raise AssertionError("key=%s: %s (found %s)%s" % (
                key, e, key_type(Path(state) / "certs" /
                                 cert_id(names, key) / "key.pem"),
                sidecar.diagnostics()))
    # ecdsa:256 is the default and gets no suffix; the others do.
    assert (Path(state) / "certs" / "k0.example.test").is_symlink()
    assert (Path(state) / "certs" / "k5.example.test_rsa4096").is_symlink()
    assert sidecar.stop() == 0


# ---------------------------------------------------------------- 2. account

@pytest.mark.parametrize("spec", ["rsa:2048", "ecdsa:384"])
def test_account_key_type(tmp_path, pebble, http_port, sidecar_factory,
                          spec):
    certs = [(["acct.example.test"], None)]
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, certs,
                                 issuer_extra="account_key %s;" % spec)
    sidecar.wait_certs(state, ids(certs))
    check_certificate(state, certs[0][0], None, pebble, tmp_path)
    check_account(state)
    got = key_type(state / "account.key")
    assert got == EXPECTED_KEY[spec], (
        "account_key %s: account.key is %s" % (spec, got))
    # Pebble checked the JWS (RS256 / ES384) against this very key.
    url = (state / "account.url").read_text().strip()
    assert registered_account(pebble, state / "account.key") == url, \
        "account.url is not the account of account.key"
    assert sidecar.stop() == 0


def test_account_key_file(tmp_path, pebble, http_port, sidecar_factory):
    """A user's key file is the account key: it is registered, used and
    never copied into the state folder."""
    keyfile = genpkey(tmp_path / "my-account.pem", "ec:P-384")
    before = keyfile.read_bytes()
    certs = [(["file.example.test"], None)]
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, certs,
                                 issuer_extra="account_key %s;" % keyfile)
    sidecar.wait_certs(state, ids(certs))
    check_certificate(state, certs[0][0], None, pebble, tmp_path)
    assert not (state / "account.key").exists(), (
        "account_key FILE given, yet the daemon wrote state/account.key" +
        sidecar.diagnostics())
    url = (state / "account.url").read_text().strip()
    assert url.startswith("https://127.0.0.1:"), url
    assert registered_account(pebble, keyfile) == url, \
        "the account registered is not the one of %s" % keyfile
    assert keyfile.read_bytes() == before, "the daemon changed the key file"
    assert sidecar.stop() == 0


# ---------------------------------------------------------------- 3. EAB

def eab_key():
    return _b64u(secrets.token_bytes(32))


def test_eab_registers(tmp_path, pebble_factory, http_port,
                       sidecar_factory):
    key = eab_key()
    pebble = pebble_factory(http_port, eab={"kid-1": key})
    keyfile = tmp_path / "eab.key"
    keyfile.write_text(key + "\n")
    os.chmod(keyfile, 0o600)
    certs = [(["eab.example.test"], None)]
    state, conf, sidecar = start(
        tmp_path, pebble, http_port, sidecar_factory, certs,
        issuer_extra="external_account_key kid-1 %s;" % keyfile)
    sidecar.wait_certs(state, ids(certs))
    check_certificate(state, certs[0][0], None, pebble, tmp_path)
    check_account(state)
    assert key not in sidecar.log(), "the HMAC key appears in the log"
    assert sidecar.stop() == 0


def assert_nothing_issued(state, sidecar):
    certs_dir = Path(state) / "certs"
    found = sorted(os.listdir(certs_dir)) if certs_dir.is_dir() else []
    assert not [f for f in found if not f.startswith(".")], (
        "certificates were stored: %s%s" % (found, sidecar.diagnostics()))
    assert not re.search(r'certificate "[^"]+" issued', sidecar.log()), \
        "a certificate was issued" + sidecar.diagnostics()


def test_eab_required_but_missing(tmp_path, pebble_factory, http_port,
                                  sidecar_factory):
    pebble = pebble_factory(http_port, eab={"kid-1": eab_key()})
    certs = [(["noeab.example.test"], None)]
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, certs)
    line = sidecar.wait_log(r".*external_account_key.*").group(0)
    assert "pebble" in line, "the error must name the issuer: " + line
    time.sleep(1)
    assert sidecar.alive(), "the daemon died" + sidecar.diagnostics()
    assert_nothing_issued(state, sidecar)
    assert not (state / "account.url").exists(), \
        "an account was registered without EAB"
    assert sidecar.stop() == 0


def test_eab_wrong_key(tmp_path, pebble_factory, http_port,
                       sidecar_factory):
    pebble = pebble_factory(http_port, eab={"kid-1": eab_key()})
    wrong = eab_key()
    keyfile = tmp_path / "eab.key"
    keyfile.write_text(wrong + "\n")
    certs = [(["badeab.example.test"], None)]
    state, conf, sidecar = start(
        tmp_path, pebble, http_port, sidecar_factory, certs,
        issuer_extra="external_account_key kid-1 %s;" % keyfile)
    line = sidecar.wait_log(r".*newAccount.*").group(0)
    # Pebble's problem: "urn:ietf:params:acme:error:unauthorized" with a
    # detail about the EAB signature; the daemon must pass it on.
    assert re.search(r"unauthori[sz]ed|malformed", line, re.I), (
        "the log line must carry Pebble's problem type: " + line)
    assert re.search(r"(?i)external|eab|binding|signature|mac", line), (
        "the log line must carry Pebble's problem detail: " + line)
    assert "pebble" in line, "the error must name the issuer: " + line
    assert wrong not in sidecar.log(), "the HMAC key appears in the log"
    time.sleep(1)
    assert sidecar.alive(), "the daemon died" + sidecar.diagnostics()
    assert_nothing_issued(state, sidecar)
    assert sidecar.stop() == 0


# ---------------------------------------------------------------- 4. chains

@pytest.fixture
def alt_pebble(pebble_factory, http_port, tmp_path):
    """A Pebble with one alternate root; returns (pebble, root1 path)."""
    pebble = pebble_factory(http_port, env={"PEBBLE_ALTERNATE_ROOTS": "1"})
    pem = pebble.get(pebble.mgmt_url + "/roots/1").decode()
    assert "BEGIN CERTIFICATE" in pem, "no /roots/1: " + pem
    root1 = tmp_path / "root1.pem"
    root1.write_text(pem)
    assert subject_cn(pem) != subject_cn(Path(pebble.root).read_text()), \
        "Pebble's two roots have the same name"
    return pebble, root1


def test_preferred_chain_alternate(tmp_path, alt_pebble, http_port,
                                   sidecar_factory):
    pebble, root1 = alt_pebble
    want = subject_cn(root1.read_text())
    certs = [(["alt.example.test"], None)]
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, certs,
                                 issuer_extra='preferred_chain "%s";' % want)
    sidecar.wait_certs(state, ids(certs))
    chain = (state / "certs" / "alt.example.test" /
             "fullchain.pem").read_text()
    blocks = split_pem(chain)
    assert len(blocks) >= 2, chain
    top = issuer_cn(blocks[-1])
    assert top == want, (
        "preferred_chain %r: the stored chain ends at %r%s" %
        (want, top, sidecar.diagnostics()))
    v = verify_chain(chain, root1, tmp_path, "alt1")
    assert v.returncode == 0, "does not chain to the alternate root: " + \
        v.stdout + v.stderr
    v = verify_chain(chain, pebble.root, tmp_path, "alt0")
    assert v.returncode != 0, "the chain still verifies against /roots/0"
    assert sidecar.stop() == 0


def test_preferred_chain_no_match(tmp_path, alt_pebble, http_port,
                                  sidecar_factory):
    pebble, root1 = alt_pebble
    certs = [(["nomatch.example.test"], None)]
    state, conf, sidecar = start(
        tmp_path, pebble, http_port, sidecar_factory, certs,
        issuer_extra='preferred_chain "No Such Root CA";')
    sidecar.wait_certs(state, ids(certs))
    # check_certificate verifies against /roots/0: the default chain.
    check_certificate(state, certs[0][0], None, pebble, tmp_path)
    sidecar.wait_log(r'no chain is issued by "No Such Root CA"')
    assert sidecar.stop() == 0


# ---------------------------------------------------------------- 5. SIGHUP

def test_sighup_remove_and_refuse(tmp_path, pebble, http_port,
                                  sidecar_factory):
    a = (["keep.example.test"], None)
    b = (["drop.example.test"], "rsa:2048")
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, [a, b])
    sidecar.wait_certs(state, ids([a, b]))
    sidecar.wait_log(r"managing 2 certificates from 1 issuers")
    keep = leaf_serial(state, cert_id(*a))

    # Remove b.
    mark = sidecar.mark()
    write_config(conf, pebble, state, http_port, [a])
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_log(r"managing 1 certificates from 1 issuers", since=mark)

    # A broken file is refused with FILE:LINE and changes nothing.
    write_config(conf, pebble, state, http_port, [a])
    with open(conf) as f:
        nlines = len(f.read().splitlines())
    with open(conf, "a") as f:
        f.write("acme_bogus on;\n")
    bad_line = nlines + 1
    mark = sidecar.mark()
    sidecar.signal(signal.SIGHUP)
    line = sidecar.wait_log(r".*reload refused.*", since=mark).group(0)
    assert "%s:%d:" % (conf, bad_line) in line, (
        "the refusal must name %s:%d: %s" % (conf, bad_line, line))
    time.sleep(1)
    assert sidecar.alive(), "a bad reload killed the daemon" + \
        sidecar.diagnostics()
    after = sidecar.log(since=mark)
    assert "managing" not in after, (
        "the refused configuration was applied:\n" + after)
    assert leaf_serial(state, cert_id(*a)) == keep

    # A good reload afterwards still works.
    c = (["late.example.test"], None)
    write_config(conf, pebble, state, http_port, [a, c])
    mark = sidecar.mark()
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_log(r"managing 2 certificates from 1 issuers", since=mark)
    sidecar.wait_certs(state, ids([c]))
    check_certificate(state, c[0], c[1], pebble, tmp_path)
    assert leaf_serial(state, cert_id(*a)) == keep, \
        "reloads re-issued an unchanged certificate"
    log = sidecar.log()
    assert len(re.findall(r'certificate "keep.example.test" issued',
                          log)) == 1, log
    assert sidecar.stop() == 0


# ---------------------------------------------------------------- 6. IP

def test_ip_identifier(tmp_path, pebble, http_port, sidecar_factory):
    """RFC 8738: Pebble 2.4 validates an IP identifier over HTTP-01 at
    IP:httpPort, which is where the daemon's responder listens."""
    certs = [(["127.0.0.1"], None)]
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, certs)
    sidecar.wait_certs(state, ids(certs))
    chain = (state / "certs" / "127.0.0.1" / "fullchain.pem").read_text()
    leaf = split_pem(chain)[0]
    assert cert_sans(leaf) == {"IP Address:127.0.0.1"}, cert_sans(leaf)
    v = verify_chain(chain, pebble.root, tmp_path, "ip")
    assert v.returncode == 0, v.stdout + v.stderr
    assert sidecar.stop() == 0


def test_issuer_by_host_name(tmp_path, pebble, http_port, sidecar_factory):
    """An issuer URI with a host name: it resolves through evdns (here
    from /etc/hosts), and TLS checks the listener's certificate against
    that name."""
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    certs = [(["named.example.test"], None)]
    write_config(conf, pebble, state, http_port, certs)
    by_ip = pebble.directory_url
    assert "//127.0.0.1:" in by_ip, by_ip
    text = conf.read_text().replace(by_ip,
                                    by_ip.replace("//127.0.0.1:", "//localhost:"))
    conf.write_text(text)
    sidecar = sidecar_factory(conf, [pebble]).start()
    sidecar.wait_certs(state, ids(certs))
    sidecar.wait_log(r"account https://localhost:\d+/")
    assert sidecar.stop() == 0


# ---------------------------------------------------------------- 7. state

def test_state_files_and_generations(tmp_path, pebble, http_port,
                                     sidecar_factory):
    p = (["p.example.test"], None)
    r = (["r.example.test"], "rsa:2048")
    state, conf, sidecar = start(tmp_path, pebble, http_port,
                                 sidecar_factory, [p, r])
    sidecar.wait_certs(state, ids([p, r]))
    assert mode(state / "account.key") == 0o600, \
        "account.key mode %o" % mode(state / "account.key")
    certs_dir = state / "certs"
    links = {}
    for cid in ids([p, r]):
        link = certs_dir / cid
        assert link.is_symlink(), "certs/%s is not a symlink" % cid
        target = os.readlink(link)
        assert (certs_dir / target).is_dir() and \
            not (certs_dir / target).is_symlink(), \
            "certs/%s -> %s is not a folder" % (cid, target)
        assert gen_folders(state, cid) == [os.path.basename(target)], \
            "%s: generation folders %s" % (cid, gen_folders(state, cid))
        assert mode(link / "key.pem") == 0o600, \
            "%s/key.pem mode %o" % (cid, mode(link / "key.pem"))
        links[cid] = target
    old_serial = leaf_serial(state, "p.example.test")
    r_serial = leaf_serial(state, cert_id(*r))

    # Same id, other identifiers: a new certificate, a new generation.
    p2 = (["p.example.test", "q.example.test"], None)
    write_config(conf, pebble, state, http_port, [p2, r])
    sidecar.signal(signal.SIGHUP)
    link = certs_dir / "p.example.test"
    deadline = time.monotonic() + 30
    while os.readlink(link) == links["p.example.test"]:
        if not sidecar.alive() or time.monotonic() > deadline:
            pytest.fail("certs/p.example.test still -> %s after changing "
                        "its identifiers%s" % (links["p.example.test"],
                                               sidecar.diagnostics()),
                        pytrace=False)
        time.sleep(0.2)
    sidecar.wait_log(r'certificate "p.example.test" issued.*'
                     r'(?:.|\n)*certificate "p.example.test" issued')
    check_certificate(state, p2[0], None, pebble, tmp_path)
    new_target = os.readlink(link)
    assert new_target != links["p.example.test"]
    assert leaf_serial(state, "p.example.test") != old_serial
    assert gen_folders(state, "p.example.test") == [
        os.path.basename(new_target)], (
        "exactly the new generation must remain: %s" %
        gen_folders(state, "p.example.test"))
    assert mode(link / "key.pem") == 0o600
    # The other certificate is untouched.
    assert os.readlink(certs_dir / cert_id(*r)) == links[cert_id(*r)]
    assert leaf_serial(state, cert_id(*r)) == r_serial
    leftovers = [f for f in os.listdir(certs_dir) if f.startswith(".")]
    assert not leftovers, "temporary files left: %s" % leftovers
    assert sidecar.stop() == 0
