"""The daemon under valgrind memcheck: issuance, a reload that adds and
removes certificates, and SIGTERM, with no memory error and no leak."""

import signal
import subprocess

import pytest

import conftest
from conftest import Sidecar, cert_id, write_config

VALGRIND = ["valgrind", "--error-exitcode=99", "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible"]


class MemcheckSidecar(Sidecar):
    def start(self, *extra):
        with open(self.logfile, "ab") as log:
            self.run_offset = log.tell()
            self.proc = subprocess.Popen(
                VALGRIND + [str(conftest.SIDECAR), "-c", str(self.config),
                            "-v", *extra],
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=conftest.pebblelib.die_with_parent,
                cwd=str(self.workdir))
        return self


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
