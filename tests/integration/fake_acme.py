"""A small scriptable fake ACME server for failure tests.

Plain HTTP on 127.0.0.1, HTTP/1.1 keep-alive, Python stdlib plus the
openssl command line (to sign CSRs with a throwaway CA).  It is a test
double: it parses the flattened JWS and checks the nonce, the protected
"url" and the presence of "kid" or "jwk", but verifies no signature.

By default it runs a minimal successful RFC 8555 flow:

    newOrder -> 201 pending order, one authorization per identifier
    authz    -> pending, one http-01 challenge
    challenge POST -> 200 processing; a thread then fetches
                      /.well-known/acme-challenge/TOKEN from the daemon
                      and checks the key authorization
    authz    -> valid (or invalid when the check fails)
    finalize -> 200 valid order with a certificate URL
    cert     -> the PEM chain: leaf and the fake's CA

keyChange replaces the account's jwk with the inner JWS's; newAccount
with onlyReturnExisting answers 200 for that jwk only.

Two optional parts of the directory, off by default:

    fake.ari = lambda cert_id: (start, end, headers, explanation_url)
        advertises renewalInfo (RFC 9773); GET /renewal-info/CERTID
        answers with that window (epoch seconds, sent as RFC 3339) and
        headers ({"Retry-After": "3600"}), or 404 when ari returns None.
        fake.ari_fetches(cert_id) counts the GETs.
    fake.profiles = {"classic": "...", ...}
        advertises meta.profiles; newOrder payloads are in requests().

Tests script it with rules, tried in the order added before the default
handler:

    fake.on("/new-order", problem(429, "rateLimited", "slow down",
                                  {"Retry-After": "3"}), times=1)
    fake.on("/authz/.*", lambda req: ..., when=lambda req: ...)

A rule's response is a Reply, or a callable taking the Request and
returning a Reply (or None to fall through).  Every request is recorded
(fake.requests()) with its time, path, protected header and payload, and
every response carries a fresh Replay-Nonce.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

URN = "urn:ietf:params:acme:error:"


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64u_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Reply:
    """status, headers (dict) and body: dict/list (JSON), str or bytes."""

    def __init__(self, status, body=None, headers=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def encode(self):
        if isinstance(self.body, (dict, list)):
            ctype = ("application/problem+json" if self.status >= 400
                     else "application/json")
            self.headers.setdefault("Content-Type", ctype)
            return json.dumps(self.body).encode()
        if isinstance(self.body, str):
            return self.body.encode()
        return self.body or b""


def problem(status, kind, detail=None, headers=None):
    """An RFC 7807 problem with an ACME error type ("badNonce", ...)."""
    body = {"type": URN + kind}
    if detail is not None:
        body["detail"] = detail
    return Reply(status, body, headers)


class Request:
    """One request as the fake saw it."""

    def __init__(self, method, path):
        self.t = time.monotonic()
        self.method = method
        self.path = path
        self.protected = {}
        self.payload = None         # parsed JSON, "" for POST-as-GET
        self.status = None          # what the fake answered
        self.reply_nonce = None     # the Replay-Nonce of that answer

    @property
    def nonce(self):
        return self.protected.get("nonce")

    @property
    def kid(self):
        return self.protected.get("kid")

    @property
    def url(self):
        return self.protected.get("url")

    def identifiers(self):
        """newOrder's identifier values."""
        if not isinstance(self.payload, dict):
            return []
        return [i.get("value") for i in self.payload.get("identifiers", [])]

    def __repr__(self):
        p = self.payload if self.payload != "" else "(POST-as-GET)"
        return "%.3f %s %s -> %s %s" % (self.t, self.method, self.path,
                                        self.status, p)


class _Rule:
    def __init__(self, path, response, times, when):
        self.path = re.compile(path)
        self.response = response
        self.times = times
        self.when = when


def _thumbprint(jwk):
    """RFC 7638 JWK thumbprint: the daemon's key authorization suffix."""
    names = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
    members = {k: jwk[k] for k in names[jwk["kty"]]}
    canon = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64u_encode(hashlib.sha256(canon.encode()).digest())


class FakeAcme:
    def __init__(self, workdir, challenge_port):
        self.dir = str(workdir)
        self.challenge_port = challenge_port
        self.lock = threading.RLock()   # rules may call requests()
        self.rules = []
        self.log = []
        self.nonces = set()             # issued, not yet used
        self.account_jwk = None
        self.account = {"status": "valid"}  # the account object
        self.orders = {}
        self.authzs = {}
        self.validation_error = None    # detail: fail every validation
        self.ari = None                 # see the module's docstring
        self.profiles = None
        self.next_id = 1
        os.makedirs(self.dir, exist_ok=True)
        self.ca_key = os.path.join(self.dir, "fake-ca.key")
        self.ca_pem = os.path.join(self.dir, "fake-ca.pem")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                      "-subj", "/CN=fake ACME test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign",
                      "-keyout", self.ca_key, "-out", self.ca_pem)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False   # keep-alive threads linger
        self.port = self.httpd.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)

    # ------------------------------------------------ test-facing API

    @property
    def directory_url(self):
        return self.base + "/dir"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def on(self, path, response, times=1, when=None):
        """Answer requests whose path fully matches the regex path (and
        when(request), if given) with response, times times (None: for
        ever)."""
        with self.lock:
            self.rules.append(_Rule(path, response, times, when))

    def requests(self, path=".*", method=None):
        rx = re.compile(path)
        with self.lock:
            return [r for r in self.log if rx.fullmatch(r.path) and
                    (method is None or r.method == method)]

    def ari_fetches(self, cert_id=None):
        """GETs of renewalInfo, for cert_id or for any."""
        return [r for r in self.requests("/renewal-info/.*", "GET")
                if cert_id is None or r.path.split("/")[2] == cert_id]

    def new_orders(self):
        """newOrder payloads the fake accepted or refused, in order."""
        return [r.payload for r in self.requests("/new-order", "POST")
                if isinstance(r.payload, dict)]

    def summary(self, n=30):
        with self.lock:
            return "\n".join(repr(r) for r in self.log[-n:])

    # ------------------------------------------------ dispatch

    def handle(self, req, body):
        """Returns the Reply for one request; records it."""
        with self.lock:
            self.log.append(req)
            if req.method == "POST":
                early = self._parse_jws(req, body)
                if early is not None:
                    return early
            for rule in self.rules:
                if rule.times == 0 or not rule.path.fullmatch(req.path):
                    continue
                if rule.when is not None and not rule.when(req):
                    continue
                reply = rule.response
                if callable(reply):
                    reply = reply(req)
                    if reply is None:
                        continue
                if rule.times is not None:
                    rule.times -= 1
                return reply
            return self.default(req)

    def fresh_nonce(self):
        with self.lock:
            n = b64u_encode(secrets.token_bytes(16))
            self.nonces.add(n)
            return n

    def _parse_jws(self, req, body):
        try:
            jws = json.loads(body)
            req.protected = json.loads(b64u_decode(jws["protected"]))
            raw = b64u_decode(jws["payload"])
            req.payload = json.loads(raw) if raw else ""
        except (ValueError, KeyError, TypeError) as e:
            return problem(400, "malformed", "bad JWS: %s" % e)
        if req.nonce not in self.nonces:
            return problem(400, "badNonce", "unknown or used nonce")
        self.nonces.discard(req.nonce)
        if req.url != self.base + req.path:
            return problem(401, "unauthorized", "url %r is not %r" %
                           (req.url, self.base + req.path))
        if ("jwk" in req.protected) == ("kid" in req.protected):
            return problem(400, "malformed", "need exactly one of jwk, kid")
        return None

    # ------------------------------------------------ the default CA

    def default(self, req):
        head = req.path.split("/")[1]
        fn = getattr(self, "_do_" + head.replace("-", "_"), None)
        if fn is None:
            return problem(404, "malformed", "no such resource")
        if req.method == "POST" and head not in ("new-account", "nonce") \
                and req.kid != self.base + "/acct/1":
            return problem(400, "accountDoesNotExist", "unknown kid")
        return fn(req)

    def _do_dir(self, req):
        d = {"newNonce": self.base + "/nonce",
             "newAccount": self.base + "/new-account",
             "newOrder": self.base + "/new-order",
             "keyChange": self.base + "/key-change",
             "meta": {"termsOfService": self.base + "/tos"}}
        if self.ari is not None:
            d["renewalInfo"] = self.base + "/renewal-info"
        if self.profiles is not None:
            d["meta"]["profiles"] = dict(self.profiles)
        return Reply(200, d)

    def _do_renewal_info(self, req):
        parts = req.path.split("/")
        got = self.ari(parts[2]) if self.ari and len(parts) == 3 else None
        if got is None:
            return problem(404, "malformed", "no such certificate")
        start, end, headers, explanation = got

        def rfc3339(t):
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        body = {"suggestedWindow": {"start": rfc3339(start),
                                    "end": rfc3339(end)}}
        if explanation:
            body["explanationURL"] = explanation
        return Reply(200, body, headers)

    def _do_nonce(self, req):
        return Reply(200 if req.method == "HEAD" else 204,
                     headers={"Cache-Control": "no-store"})

    def _do_new_account(self, req):
        if isinstance(req.payload, dict) and \
                req.payload.get("onlyReturnExisting"):
            if req.protected.get("jwk") != self.account_jwk:
                return problem(400, "accountDoesNotExist", "unknown key")
            return Reply(200, self.account,
                         {"Location": self.base + "/acct/1"})
        created = self.account_jwk is None
        self.account_jwk = req.protected.get("jwk")
        if created and isinstance(req.payload, dict) and \
                "contact" in req.payload:
            self.account["contact"] = req.payload["contact"]
        return Reply(201 if created else 200, self.account,
                     {"Location": self.base + "/acct/1"})

    def _do_key_change(self, req):
        """keyChange (RFC 8555 7.3.5): the account's key becomes the inner
        JWS's jwk (fake.key_changed(req) does the same for a rule)."""
        self.key_changed(req)
        return Reply(200)

    def key_changed(self, req):
        inner = req.payload
        self.account_jwk = json.loads(b64u_decode(inner["protected"]))["jwk"]

    def _do_acct(self, req):
        """The account (RFC 8555 7.3.2): POST-as-GET reads it, a
        payload with "contact" changes that."""
        if isinstance(req.payload, dict) and "contact" in req.payload:
            self.account["contact"] = req.payload["contact"]
        return Reply(200, self.account)

    def _new_id(self):
        n = self.next_id
        self.next_id += 1
        return n

    def _do_new_order(self, req):
        oid = self._new_id()
        order = {"identifiers": req.payload["identifiers"], "authz": [],
                 "cert": None}
        for ident in order["identifiers"]:
            aid = self._new_id()
            self.authzs[aid] = {"identifier": ident, "status": "pending",
                                "challenge": "pending", "error": None,
                                "token": b64u_encode(secrets.token_bytes(16))}
            order["authz"].append(aid)
        self.orders[oid] = order
        return Reply(201, self._order_json(oid),
                     {"Location": self.base + "/order/%d" % oid})

    def _order_status(self, order):
        states = [self.authzs[a]["status"] for a in order["authz"]]
        if order["cert"] is not None:
            return "valid"
        if "invalid" in states:
            return "invalid"
        if all(s == "valid" for s in states):
            return "ready"
        return "pending"

    def _order_json(self, oid):
        order = self.orders[oid]
        o = {"status": self._order_status(order),
             "identifiers": order["identifiers"],
             "authorizations": [self.base + "/authz/%d" % a
                                for a in order["authz"]],
             "finalize": self.base + "/finalize/%d" % oid}
        if order["cert"] is not None:
            o["certificate"] = self.base + "/cert/%d" % oid
        return o

    def _authz_json(self, aid):
        a = self.authzs[aid]
        chall = {"type": "http-01", "url": self.base + "/chall/%d" % aid,
                 "token": a["token"], "status": a["challenge"]}
        if a["error"] is not None:
            chall["error"] = a["error"]
        return {"identifier": a["identifier"], "status": a["status"],
                "challenges": [chall]}

    def _do_order(self, req):
        return Reply(200, self._order_json(int(req.path.split("/")[2])))

    def _do_authz(self, req):
        return Reply(200, self._authz_json(int(req.path.split("/")[2])))

    def _do_chall(self, req):
        aid = int(req.path.split("/")[2])
        a = self.authzs[aid]
        if a["challenge"] == "pending":
            a["challenge"] = "processing"
            threading.Thread(target=self._validate, args=(aid,),
                             daemon=True).start()
        chall = self._authz_json(aid)["challenges"][0]
        return Reply(200, chall, {"Link": "<%s/authz/%d>;rel=\"up\"" %
                                  (self.base, aid)})

    def _validate(self, aid):
        """What a CA's validation authority does for HTTP-01."""
        with self.lock:
            a = self.authzs[aid]
            token, err = a["token"], self.validation_error
            want = token + "." + _thumbprint(self.account_jwk)
        if err is None:
            url = "http://127.0.0.1:%d/.well-known/acme-challenge/%s" % (
                self.challenge_port, token)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    got = r.read().decode(errors="replace").strip()
                if got != want:
                    err = "%s served %r, expected %r" % (url, got, want)
            except OSError as e:
                err = "fetching %s: %s" % (url, e)
        with self.lock:
            if err is None:
                a["status"] = a["challenge"] = "valid"
            else:
                a["status"] = a["challenge"] = "invalid"
                a["error"] = {"type": URN + "connection", "detail": err}

    def _do_finalize(self, req):
        oid = int(req.path.split("/")[2])
        order = self.orders[oid]
        if self._order_status(order) != "ready":
            return problem(403, "orderNotReady", "order is %s" %
                           self._order_status(order))
        der = b64u_decode(req.payload["csr"])
        csr = "-----BEGIN CERTIFICATE REQUEST-----\n%s\n" \
              "-----END CERTIFICATE REQUEST-----\n" % \
              base64.encodebytes(der).decode().strip()
        leaf = self._openssl("x509", "-req", "-CA", self.ca_pem,
                             "-CAkey", self.ca_key, "-days", "7",
                             "-set_serial", str(secrets.randbits(63)),
                             "-copy_extensions", "copy", input=csr)
        with open(self.ca_pem) as f:
            order["cert"] = leaf + f.read()
        return Reply(200, self._order_json(oid),
                     {"Location": self.base + "/order/%d" % oid})

    def _do_cert(self, req):
        order = self.orders[int(req.path.split("/")[2])]
        return Reply(200, order["cert"],
                     {"Content-Type": "application/pem-certificate-chain"})

    def _openssl(self, *args, input=None):
        p = subprocess.run(["openssl", *args], input=input, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (args[0], p.stderr))
        return p.stdout


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60    # idle keep-alive connections go away eventually

    def _serve(self):
        fake = self.server.fake
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        req = Request(self.command, self.path)
        try:
            reply = fake.handle(req, body)
        except Exception as e:      # a fake bug must not look like a hang
            reply = problem(500, "serverInternal", "fake: %r" % e)
        data = reply.encode()
        req.status = reply.status
        req.reply_nonce = fake.fresh_nonce()
        self.send_response(reply.status)
        self.send_header("Replay-Nonce", req.reply_nonce)
        self.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _serve

    def log_message(self, fmt, *args):
        pass
