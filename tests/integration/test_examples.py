"""The nginx examples in conf/ are accepted by Debian's nginx as shipped.

Only what points outside the example is changed: where acme.js is
installed.  (conf/nginx-module.conf is checked in test_nginx_module.py,
with the sidecar's -t too; conf/nginx-proxy-pass.conf also runs against
Pebble in test_proxy_pass.py.)
"""

import subprocess

from conftest import ROOT


def nginx_t(conf):
    p = subprocess.run(["/usr/sbin/nginx", "-t", "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0, p.stdout
    assert "test is successful" in p.stdout, p.stdout


def test_njs_example(tmp_path):
    text = (ROOT / "conf" / "nginx-njs.conf").read_text()
    assert "/etc/nginx/njs/acme.js" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("/etc/nginx/njs/acme.js",
                                 str(ROOT / "src" / "njs" / "acme.js")))
    nginx_t(conf)


def test_proxy_pass_example_in_http(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n    include %s;\n}\n" %
                    (ROOT / "conf" / "nginx-proxy-pass.conf"))
    nginx_t(conf)
