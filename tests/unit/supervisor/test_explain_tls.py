"""`fastingress explain` over https: the Secret served, from the SNI entries or the default certificate."""

from __future__ import annotations

from fastingress.compiler import CompileOptions, compile_config
from fastingress.compiler.emit import emit_endpoints, emit_routes
from fastingress.model.objects import ObjectKey
from fastingress.supervisor.explain import explain_url, render_text
from fastingress.table.lookup import EndpointTable, RouteTable, TableView
from tests.support.certs import make_cert
from tests.unit.compiler.builders import ingress, path, rule, secret, service, snapshot, tls

DEFAULT = ObjectKey("ingress", "default-cert")


def test_explain_names_the_default_secret_when_no_sni_entry_matches() -> None:
    crt, key = make_cert(["a.com"])
    fallback = secret(DEFAULT.name, *make_cert(["fallback.example"]), ns=DEFAULT.namespace)
    objs = (service(), fallback, secret("s", crt, key), ingress("i", rule("", path("/")), tls=(tls("s", "a.com"),)))
    for default, expected in ((DEFAULT, "ingress/default-cert"), (None, None)):
        config, _ = compile_config(snapshot(*objs), CompileOptions(default_tls_secret=default))
        view = TableView(RouteTable(emit_routes(config)), EndpointTable(emit_endpoints(config.endpoints)))
        assert explain_url(view, "https://a.com/").tls_secret == "default/s"
        assert explain_url(view, "https://b.com/").tls_secret == expected
        assert explain_url(view, "https://127.0.0.1/").tls_secret == expected  # no SNI at all
        assert explain_url(view, "http://b.com/").tls_secret is None
        text = render_text(explain_url(view, "https://b.com/"))
        assert ("tls secret  ingress/default-cert" if default else "tls secret  none: the self-signed default") in text
        assert "tls secret" not in render_text(explain_url(view, "http://b.com/"))
