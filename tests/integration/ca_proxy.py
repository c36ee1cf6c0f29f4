"""A window onto what a real CA (Pebble) is asked, and a client of its own.

CaProxy is a TLS reverse proxy in front of Pebble, listening with Pebble's
own listener certificate (so the daemon's ssl_trusted_certificate still
holds).  It passes the Host header on: Pebble builds every URL of its
directory from it, so the daemon's whole conversation goes through the
proxy, which

  - counts the renewalInfo requests it forwarded, per CertID: Pebble does
    not log them;
  - can hold the requests whose path holds a given string, for a test to
    stop the daemon at a known point; released, they are forwarded, or
    dropped with their connection (those of a daemon killed meanwhile:
    they would count as asked, or place a stale signed request);
  - decodes the payload of each JWS it sees, so a test reads "replaces".

revoke_at_ca() revokes a certificate at Pebble as its owner would without
the daemon: revokeCert signed with the certificate's own key (RFC 8555
section 7.6), using the `cryptography` module.
"""

import base64
import http.client
import json
import ssl
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade",
               "proxy-connection", "te", "trailer"}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CaProxy:
    def __init__(self, pebble):
        self.pebble = pebble
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.ari = {}           # CertID -> renewalInfo requests forwarded
        self.posts = []         # [path, JWS payload or None, refused]
        self.holds = {}         # path substring -> list of held paths
        self.forward = {}       # path substring -> forward once released
        self.httpd = None

    # what the tests use

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.port

    @property
    def ca(self):
        return self.pebble.ca

    def __getattr__(self, name):
        # Everything else (logs, paths, get()) is Pebble's.
        return getattr(self.pebble, name)

    def ari_count(self, cert_id):
        with self.lock:
            return self.ari.get(cert_id, 0)

    def hold(self, what):
        with self.lock:
            self.holds.setdefault(what, [])

    def held(self, what):
        with self.lock:
            return list(self.holds.get(what, []))

    def release(self, what, forward):
        with self.cond:
            self.forward[what] = forward
            self.holds.pop(what, None)
            self.cond.notify_all()

    def payloads(self, path_part):
        """The payloads POSTed to paths holding path_part, but those
        Pebble refused for their nonce (it refuses 5% of good ones, and
        the daemon sends the same request again)."""
        with self.lock:
            return [p for path, p, refused in self.posts
                    if path_part in path and not refused]

    def start(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pebble.path("cert.pem"),
                            self.pebble.path("key.pem"))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket,
                                            server_side=True)
        self.httpd.proxy = self
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever,
                         daemon=True).start()
        return self

    def stop(self):
        if self.httpd is not None:
            with self.cond:
                self.holds.clear()
                self.cond.notify_all()
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    # the handler's side

    def _wait_if_held(self, path):
        """Whether to forward: held until released, and as released."""
        with self.cond:
            hold = [w for w in self.holds if w in path]
            if not hold:
                return True
            self.holds[hold[0]].append(path)
            while hold[0] in self.holds and self.httpd is not None:
                self.cond.wait(0.5)
            return self.httpd is not None and self.forward.get(hold[0])

    def _posted(self, path, body):
        """Every POST's payload, held or not; returns its entry."""
        try:
            payload = json.loads(b64u_decode(
                json.loads(body)["payload"]) or b"null")
        except (ValueError, KeyError, TypeError):
            payload = None
        entry = [path, payload, False]
        with self.lock:
            self.posts.append(entry)
        return entry

    def _answered(self, entry, status, data):
        if entry is not None and status == 400 and b"badNonce" in data:
            with self.lock:
                entry[2] = True

    def _forwarded(self, method, path):
        if method == "GET" and "/renewalInfo/" in path:
            cid = path.rsplit("/", 1)[1]
            with self.lock:
                self.ari[cid] = self.ari.get(cid, 0) + 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def _serve(self):
        proxy = self.server.proxy
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        entry = None
        if self.command == "POST":
            entry = proxy._posted(self.path, body)
        if not proxy._wait_if_held(self.path):
            self.close_connection = True
            return
        conn = http.client.HTTPSConnection(
            "127.0.0.1", proxy.pebble.listen_port, timeout=30,
            context=ssl.create_default_context(cafile=proxy.pebble.ca))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_HEADERS}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        proxy._forwarded(self.command, self.path)
        proxy._answered(entry, resp.status, data)
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_HEADERS and k.lower() != \
                    "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _serve

    def log_message(self, fmt, *args):
        pass


def revoke_at_ca(pebble, cert_pem, key_pem):
    """revokeCert for cert_pem, signed with its own key (jwk), straight
    to Pebble.  Returns the HTTP status (200: revoked)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "an ECDSA key"
    size = (key.curve.key_size + 7) // 8
    alg, digest = {256: ("ES256", hashes.SHA256()),
                   384: ("ES384", hashes.SHA384()),
                   521: ("ES512", hashes.SHA512())}[key.curve.key_size]
    nums = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-%d" % key.curve.key_size,
           "x": b64u(nums.x.to_bytes(size, "big")),
           "y": b64u(nums.y.to_bytes(size, "big"))}
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(
        serialization.Encoding.DER)
    ctx = ssl.create_default_context(cafile=pebble.ca)
    directory = json.loads(urllib.request.urlopen(
        pebble.directory_url, context=ctx, timeout=10).read())
    payload = b64u(json.dumps({"certificate": b64u(der)}).encode())
    # Pebble refuses 5% of good nonces (badNonce), as RFC 8555 6.5 lets a
    # CA do: ask again with a new one, as any client must.
    for _ in range(10):
        req = urllib.request.Request(directory["newNonce"], method="HEAD")
        nonce = urllib.request.urlopen(req, context=ctx,
                                       timeout=10).headers["Replay-Nonce"]
        protected = b64u(json.dumps({"alg": alg, "jwk": jwk, "nonce": nonce,
                                     "url": directory["revokeCert"]}).encode())
        r, s = utils.decode_dss_signature(key.sign(
            (protected + "." + payload).encode(), ec.ECDSA(digest)))
        sig = b64u(r.to_bytes(size, "big") + s.to_bytes(size, "big"))
        body = json.dumps({"protected": protected, "payload": payload,
                           "signature": sig}).encode()
        req = urllib.request.Request(
            directory["revokeCert"], data=body, method="POST",
            headers={"Content-Type": "application/jose+json"})
        try:
            return urllib.request.urlopen(req, context=ctx, timeout=10).status
        except urllib.error.HTTPError as e:
            if b"badNonce" not in e.read():
                return e.code
    return 400
