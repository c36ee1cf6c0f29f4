"""The daemon under valgrind memcheck: issuance, a reload that adds and
removes certificates, and SIGTERM, with no memory error and no leak."""

import signal

from conftest import MemcheckSidecar, cert_id, write_config

def test_memcheck_issue_reload_stop(tmp_path, pebble, http_port):
    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    first = [(["m1.example.test", "m2.example.test"], None),
             (["m3.example.test"], "rsa:2048")]
    write_config(conf, pebble, state, http_port, first)
    sidecar = MemcheckSidecar(tmp_path, conf, [pebble])
    try:
        sidecar.start()
        sidecar.wait_certs(state, [cert_id(n, k) for n, k in first],
                           timeout=120)

        # Reload: one certificate goes, one comes.
        second = [first[0], (["m4.example.test"], "ecdsa:384")]
        write_config(conf, pebble, state, http_port, second)
        sidecar.signal(signal.SIGHUP)
        sidecar.wait_certs(state, [cert_id(n, k) for n, k in second],
                           timeout=120)
        sidecar.wait_log(r"managing 2 certificates from 1 issuers",
                         timeout=30)
        sidecar.stop_clean()
    finally:
        sidecar.kill()


def test_memcheck_control_api(tmp_path, pebble, http_port):
    """Every change of the control API, an event stream still open and a
    revocation under way at exit: no memory error, no leak."""
    from test_control import api
    from test_control_changes import Events, add, metrics

    # ECDSA: an RSA key made under valgrind stalls the loop for seconds.
    new = {"issuer": "pebble", "identifiers": ["m.example.test"]}
    new_id = "m.example.test"

    state = tmp_path / "state"
    conf = tmp_path / "acme-sidecar.conf"
    sock = tmp_path / "control.sock"
    write_config(conf, pebble, state, http_port, [(["a.example.test"], None)])
    sidecar = MemcheckSidecar(tmp_path, conf, [pebble])
    events = None
    try:
        sidecar.start()
        sidecar.wait_certs(state, ["a.example.test"], timeout=120)
        sidecar.wait_log(r"control: listening on", timeout=60)
        events = Events(sock)
        assert add(sock, new)[0] == 201
        events.wait(lambda e: e["type"] == "issued" and
                    e["certificate"] == new_id, timeout=120)
        assert metrics(sock)["acme_sidecar_challenges_served_total"] > 0
        status, j, _ = api(sock, "POST", "/v1/certificates/%s/revoke" %
                           new_id, body='{"reason": 4}')
        assert status == 200, j
        status, j, _ = api(sock, "DELETE", "/v1/certificates/" + new_id)
        assert status == 200, j
        assert api(sock, "POST", "/v1/reload")[0] == 200
        assert api(sock, "POST", "/v1/certificates", body="{")[0] == 400
        sidecar.stop_clean()
    finally:
        if events is not None:
            events.close()
        sidecar.kill()
