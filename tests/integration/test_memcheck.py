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
        rc = sidecar.stop(timeout=60)
        log = sidecar.log()
        assert "ERROR SUMMARY: 0 errors" in log, \
            "valgrind reported errors" + sidecar.diagnostics()
        assert rc == 0, "exit status %s under valgrind%s" % (
            rc, sidecar.diagnostics())
    finally:
        sidecar.kill()
