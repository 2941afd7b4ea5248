"""Properties over random inputs: order independence, unique routes, linked upstreams, oracle agreement."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from fastingress.compiler import CompileOptions, compile_config
from fastingress.compiler.types import CompiledConfig, Route
from fastingress.model.objects import (
    Backend,
    EndpointSlice,
    Ingress,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTLS,
    ObjectKey,
    Service,
    ServicePort,
    Snapshot,
    TLSSecret,
)
from tests.support.certs import make_cert
from tests.unit.compiler.builders import endpoint_slice, endpoints, ingress_class, secret, service
from tests.unit.compiler.reference import path_matches, reference_match, select_vhost

HOSTS = ["", "a.example.com", "b.example.com", "*.example.com", "x.b.example.com"]
PATHS = ["/", "/foo", "/foo/", "/foo/bar", "/bar", "/Foo"]
IS_PATHS = [*PATHS, "/foo//bar/./", "/x/../foo", "/../x"]
BACKENDS = [Backend("web", 80), Backend("web", port_name="http"), Backend("web", port_name="metrics"),
            Backend("api", 80), Backend("api", 81), Backend("gone", 80), Backend(resource="g/K/n")]
TIMES = ["", "2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"]
_EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
SECRETS = {
    "wild": make_cert(["*.example.com", "example.com"]),
    "a": make_cert(["a.example.com"]),
    "old": make_cert(["b.example.com"], not_after=_EXPIRY),
    "bad": (b"nope", b"nope"),
}
NOW = int(_EXPIRY.timestamp()) + 1  # "old" has expired
PROBES = ["/", "/foo", "/foo/", "/foo/bar", "/foo/bar/baz", "/foobar", "/bar", "/x", "/Foo"]
REQUEST_HOSTS = ["a.example.com", "b.example.com", "c.example.com", "x.b.example.com", "other.org", ""]

ingress_paths = st.one_of(
    st.builds(IngressPath, st.sampled_from(PATHS), st.sampled_from(["Exact", "Prefix"]), st.sampled_from(BACKENDS)),
    st.builds(IngressPath, st.sampled_from(IS_PATHS), st.just("ImplementationSpecific"), st.sampled_from(BACKENDS)),
)
rules = st.builds(IngressRule, st.sampled_from(HOSTS), st.lists(ingress_paths, max_size=3).map(tuple))
tls_entries = st.builds(IngressTLS, st.lists(st.sampled_from(HOSTS[1:]), max_size=2).map(tuple),
                        st.sampled_from([*SECRETS, "missing", ""]))


@st.composite
def ingresses(draw: st.DrawFn, index: int) -> Ingress:
    return Ingress(
        key=ObjectKey(draw(st.sampled_from(["n1", "n2"])), f"i{index}"),
        created=draw(st.sampled_from(TIMES)),
        seq=draw(st.integers(0, 3)),
        class_name=draw(st.sampled_from(["fastingress", "mine", "theirs", None])),
        class_annotation=draw(st.sampled_from([None, "mine", "theirs"])),
        annotations=draw(st.sampled_from([{}, {"fastingress.io/ssl-redirect": "false"},
                                           {"fastingress.io/force-ssl-redirect": "true"}])),
        default_backend=draw(st.one_of(st.none(), st.sampled_from(BACKENDS))),
        rules=tuple(draw(st.lists(rules, max_size=3))),
        tls=tuple(draw(st.lists(tls_entries, max_size=2))),
    )


def _fixed_objects() -> list[Service | EndpointSlice | TLSSecret | IngressClass]:
    objs: list[Service | EndpointSlice | TLSSecret | IngressClass] = []
    for ns in ("n1", "n2"):
        objs += [
            service("web", ServicePort(80, "http"), ServicePort(9090, "metrics"), ns=ns),
            service("api", ServicePort(80), ns=ns),
            endpoint_slice("web-1", "web", endpoints("10.0.0.1"), endpoints("10.0.0.2", ready=False, terminating=True),
                           ns=ns),
            endpoint_slice("web-2", "web", endpoints("10.0.0.3", "10.0.0.1"), ns=ns),
            endpoint_slice("api-1", "api", endpoints("10.1.0.1", ready=False, terminating=True), ns=ns, port=3000,
                           port_name=""),
        ]
        objs += [secret(name, crt, key, ns=ns) for name, (crt, key) in SECRETS.items()]
    return [*objs, ingress_class("mine", default=True), ingress_class("theirs", "x.io/other", default=False)]


def _remap(ing: Ingress, times: dict[str, str], seqs: dict[int, int]) -> Ingress:
    return Ingress(key=ing.key, created=times[ing.created], seq=seqs[ing.seq], class_name=ing.class_name,
                   class_annotation=ing.class_annotation, annotations=ing.annotations,
                   default_backend=ing.default_backend, rules=ing.rules, tls=ing.tls)


def _snapshot(objs: list[Ingress | Service | EndpointSlice | TLSSecret | IngressClass]) -> Snapshot:
    """Dicts filled in the order of `objs` (the point of the test: that order must not matter)."""
    return Snapshot(
        ingresses={o.key: o for o in objs if isinstance(o, Ingress)},
        classes={o.name: o for o in objs if isinstance(o, IngressClass)},
        services={o.key: o for o in objs if isinstance(o, Service)},
        slices={o.key: o for o in objs if isinstance(o, EndpointSlice)},
        secrets={o.key: o for o in objs if isinstance(o, TLSSecret)},
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snapshot, Snapshot]:
    """The same objects twice: shuffled, and with created/seq values changed without changing their order."""
    count = draw(st.integers(1, 6))
    ings = [draw(ingresses(i)) for i in range(count)]
    objs = [*ings, *_fixed_objects()]
    # whole seconds: the timestamps are written to the second, so two datetimes within one second would tie
    epoch = dt.datetime(2000, 1, 1)
    new_times = [epoch + dt.timedelta(seconds=s) for s in sorted(draw(st.lists(
        st.integers(0, 35 * 365 * 86400), min_size=2, max_size=2, unique=True)))]
    times = {"": "", TIMES[1]: new_times[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
             TIMES[2]: new_times[1].strftime("%Y-%m-%dT%H:%M:%SZ")}
    new_seqs = sorted(draw(st.lists(st.integers(0, 10_000), min_size=4, max_size=4, unique=True)))
    seqs = dict(enumerate(new_seqs))
    other = [_remap(o, times, seqs) if isinstance(o, Ingress) else o for o in objs]
    return _snapshot(objs), _snapshot(draw(st.permutations(other)))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_order_of_objects_and_equivalent_timestamps_do_not_matter(pair: tuple[Snapshot, Snapshot]) -> None:
    first, second = pair
    options = CompileOptions(now=NOW)
    config_a, problems_a = compile_config(first, options)
    config_b, problems_b = compile_config(second, options)
    assert config_a == config_b
    assert problems_a == problems_b == sorted(problems_a)
    _check_invariants(config_a)


def _check_invariants(config: CompiledConfig) -> None:
    names = [u.name for u in config.upstreams]
    assert names == sorted(set(names)) and len(config.endpoints) == len(names)
    assert [vh.host for vh in config.vhosts] == sorted({vh.host for vh in config.vhosts})
    fingerprints = {c.fingerprint for c in config.certs}
    assert all(e.cert in fingerprints for e in config.sni)
    for vh in config.vhosts:
        keys = [(r.path, r.match) for r in vh.routes]
        assert len(keys) == len(set(keys)), "no two routes share (host, path, match)"
        linked: list[Route] = [*vh.routes, *([vh.default] if vh.default else [])]
        assert all(r.upstream == "" or r.upstream in names for r in linked)
    for host in REQUEST_HOSTS:
        for probe in PROBES:
            vhost = select_vhost(config, host)
            ordered = None
            if vhost is not None:
                ordered = next((r for r in vhost.routes if path_matches(r, probe)), vhost.default)
            assert ordered == reference_match(config, host, probe), "route order is precedence order"
