"""Certificate profiles (draft-ietf-acme-profiles) in newOrder, against
the fake CA advertising meta.profiles."""

import json
import subprocess

from fake_run import write_conf

PROFILES = {"classic": "the usual", "shortlived": "6 days"}


def orders_for(fake, name):
    return [p for p in fake.new_orders()
            if name in [i["value"] for i in p["identifiers"]]]


def api(run, method, path, body=None):
    cmd = ["curl", "-s", "--unix-socket", str(run.tmp / "control.sock"),
           "-X", method, "http://localhost" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d",
                json.dumps(body)]
    return json.loads(subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                                     timeout=10).stdout)


def test_profile_sent_overridden_and_unlisted(run, fake):
    """The issuer's profile is sent when listed, profile= overrides it
    per certificate (file and API), and one the CA does not list is left
    out with one warning."""
    fake.profiles = PROFILES
    # Each list is the words of one acme_certificate after the issuer.
    run.start([["a.example"], ["b.example", "profile=shortlived"],
               ["c.example", "profile=nope"]], extra=["profile classic;"])
    for n in ("a.example", "b.example", "c.example"):
        run.wait_issued(n)
    added = api(run, "POST", "/v1/certificates",
                {"issuer": "fake", "identifiers": ["d.example"],
                 "profile": "shortlived"})
    run.check(added.get("profile") == "shortlived", str(added))
    run.wait_issued("d.example")
    got = {n: [o.get("profile") for o in orders_for(fake, n)]
           for n in ("a.example", "b.example", "c.example", "d.example")}
    run.check(got == {"a.example": ["classic"],
                      "b.example": ["shortlived"], "c.example": [None],
                      "d.example": ["shortlived"]}, "profiles sent: %s" % got)
    run.check(len(run.warnings("does not offer profile", "nope")) == 1,
              "warnings: %s" % run.warnings("profile"))
    run.check(api(run, "GET", "/v1/certificates/b.example")["profile"] ==
              "shortlived", "b.example's profile not shown")


def test_profile_required_but_not_offered(run, fake):
    """profile NAME require: no order is sent, and the certificate says
    why; a certificate whose profile= is listed still gets it."""
    fake.profiles = PROFILES
    run.start([["e.example"], ["f.example", "profile=classic"]],
              extra=["profile tlsclient require;"])
    run.wait_issued("f.example")
    err = run.wait(lambda: api(run, "GET", "/v1/certificates/e.example")
                   .get("last_error"), 10, "e.example's error")
    run.check("profile \"tlsclient\" is required" in err["message"],
              str(err))
    run.check(orders_for(fake, "e.example") == [],
              "orders sent: %s" % orders_for(fake, "e.example"))
    run.check([o.get("profile") for o in orders_for(fake, "f.example")] ==
              ["classic"], str(orders_for(fake, "f.example")))


def test_profile_conf_errors(tmp_path, sidecar_bin):
    conf = tmp_path / "bad.conf"
    write_conf(conf, 1, {"x": ("http://127.0.0.1:1/dir", tmp_path / "s",
                               ["profile bad/name;"])}, [])
    p = subprocess.run([str(sidecar_bin), "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode != 0 and "invalid profile" in p.stdout, p.stdout
