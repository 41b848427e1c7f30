#!/usr/bin/env python3
"""Checks the Helm chart in helm/sluice against Helm, Kubernetes' schemas and the real binaries.

    pip install --ignore-requires-python helm-sdkpy kubernetes-validate pyyaml pyjwt  # once
    cargo build --workspace --bins                                         # the binaries
    python3 tests/k8s/check_chart.py

1. Lint: Helm's own linter (helm-sdkpy), failing on errors.
2. Values docs: every field of values.yaml has a comment; the README's values table is current.
3. Render: Helm installs the chart, for several value sets, into a stand-in API server
   (chart_fakeapi.py: helm-sdkpy has no `helm template` or dry run); the test decides which API
   groups the "cluster" serves, so the Prometheus Operator and KEDA objects are rendered with
   and without their CRDs. Every object is validated with kubernetes-validate (strict); custom
   resources, which it has no schema for, are checked for apiVersion/kind/name/spec. The
   Grafana dashboards ConfigMap (sidecar label) and the PrometheusRule hold exactly the files of
   deploy/observability (the chart reads them through its files/observability link).
4. Consistency with the binaries: every SLUICE_* variable and --flag of a container is in that
   binary's --help (SLUICE_BIN_DIR, default target/debug); ports and probes match the listen
   addresses; probe paths; terminationGracePeriodSeconds covers preStop + drain; secrets are
   mounted where the configuration points; the autoscaling metric exists. The rendered
   configuration of the default values is then run: a broker (sluice-dev --broker-only), a
   gateway and ingest with exactly the chart's environment (only listen addresses and brokers
   replaced), traffic through both, and the metrics the HPA/KEDA and the alerts use are scraped.
5. Refusals: values.schema.json rejects wrong types and enums; templates refuse a too-short grace
   period; the chart refuses clusters older than 1.30.

Prints each check; exits non-zero if any failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sluice"
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import jwt
    import yaml
    import helm_sdkpy
    import kubernetes_validate
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(
        f"check_chart: missing Python package ({e.name}). Install them with:\n"
        "  pip install --ignore-requires-python helm-sdkpy kubernetes-validate pyyaml pyjwt"
    )

from chart_fakeapi import FakeApiServer  # noqa: E402
import chart_values_doc  # noqa: E402

BIN_DIR = Path(os.environ.get("SLUICE_BIN_DIR", ROOT / "target" / "debug"))
BINARIES = {"gateway": "sluice-gateway", "ingest": "sluice-ingest"}
AUTOSCALING_METRIC = "sluice_gateway_connections_active"
# Kubernetes versions to validate against: the chart's minimum and the newest schema shipped.
KUBE_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
MONITORING = "monitoring.coreos.com/v1"
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
RULES = OBSERVABILITY / "prometheus" / "sluice-rules.yaml"
# A metric name in PromQL; a recording rule's name (level:metric:operations) is not one.
METRIC_IN_EXPR = re.compile(r"(?<![:\w])sluice_[a-z_]+(?![:\w])")
KEDA = "keda.sh/v1alpha1"


# --- reporting ---------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failures.append(f"{what}{': ' + detail if detail else ''}")
            print(f"  FAIL  {what}{': ' + detail if detail else ''}")
        return ok

    def section(self, title: str) -> None:
        print(f"\n== {title}")


R = Report()


# --- Helm through helm-sdkpy -------------------------------------------------------------------


@dataclass
class Rendered:
    objects: list[dict]
    notes: str
    api_versions: tuple[str, ...]

    def of(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.of(kind) if o["metadata"]["name"] == name), None)


def helm_install(
    values: dict | None, api_versions: tuple[str, ...] = (), kube_minor: int = 31
) -> Rendered:
    """Renders the chart the way `helm install` does, into the stand-in API server."""
    with FakeApiServer(api_versions, kube_minor=kube_minor) as api:
        config = helm_sdkpy.Configuration(namespace="sluice", kubeconfig=api.kubeconfig)
        result = asyncio.run(
            helm_sdkpy.Install(config).run("rel", str(CHART), values=values, wait=False, timeout=30)
        )
    objects = [o for o in yaml.safe_load_all(result["manifest"]) if o]
    return Rendered(objects, (result.get("info") or {}).get("notes", ""), api_versions)


def helm_install_error(values: dict | None, kube_minor: int = 31) -> str | None:
    """The error Helm gives for these values, or None if it installs."""
    try:
        helm_install(values, kube_minor=kube_minor)
    except helm_sdkpy.HelmError as e:
        return str(e)
    return None


# --- the binaries ------------------------------------------------------------------------------


@dataclass
class BinaryHelp:
    flags: set[str] = field(default_factory=set)
    envs: set[str] = field(default_factory=set)


def binary_help(component: str) -> BinaryHelp:
    path = BIN_DIR / BINARIES[component]
    text = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10).stdout
    return BinaryHelp(
        flags=set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", text, re.M)),
        envs=set(re.findall(r"\[env: (SLUICE_[A-Z0-9_]+)=", text)),
    )


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


def container_env(rendered: Rendered, container: dict, tag: str = "") -> dict[str, str]:
    """A container's environment, envFrom ConfigMaps resolved from the same render."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            cm = rendered.get("ConfigMap", ref["name"])
            R.check(cm is not None, f"{tag}: envFrom ConfigMap {ref['name']} is rendered")
            env.update((cm or {}).get("data", {}))
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "<valueFrom>")
    return env


def component_of(deployment: dict) -> str:
    return deployment["metadata"]["labels"]["app.kubernetes.io/component"]


# --- checks on one render ----------------------------------------------------------------------


def validate_schemas(name: str, rendered: Rendered) -> None:
    problems = []
    for obj in rendered.objects:
        ident = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_RESOURCES:
            if not (obj.get("metadata", {}).get("name") and isinstance(obj.get("spec"), dict)):
                problems.append(f"{ident}: custom resource without metadata.name or spec")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                problems.append(f"{ident} (k8s {version}) at {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{ident}: no Kubernetes {version} schema for {obj['apiVersion']}")
    kinds = sorted({o["kind"] for o in rendered.objects})
    R.check(
        not problems,
        f"[{name}] {len(rendered.objects)} objects valid (k8s {', '.join(KUBE_VERSIONS)}, strict; "
        f"CRs shape-checked): {', '.join(kinds)}",
        "; ".join(problems[:5]),
    )


def check_deployments(name: str, rendered: Rendered, helps: dict[str, BinaryHelp]) -> None:
    for dep in rendered.of("Deployment"):
        component = component_of(dep)
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        tag = f"[{name}] {component}"
        (container,) = pod["containers"]
        env = container_env(rendered, container, tag)
        help_ = helps[component]

        unknown_env = sorted(k for k in env if k.startswith("SLUICE_") and k not in help_.envs)
        R.check(
            not unknown_env,
            f"{tag}: all {sum(k.startswith('SLUICE_') for k in env)} SLUICE_* variables are in "
            f"{BINARIES[component]} --help",
            f"unknown: {unknown_env}",
        )
        args = [a for a in container.get("args", []) + container.get("command", [])[1:]]
        unknown_flags = sorted(
            a.split("=")[0] for a in args if a.startswith("--") and a.split("=")[0] not in help_.flags
        )
        R.check(
            not unknown_flags,
            f"{tag}: all {sum(a.startswith('--') for a in args)} --flags in args are in --help",
            f"{unknown_flags}",
        )

        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        listen = int(env["SLUICE_LISTEN"].rsplit(":", 1)[1])
        admin = int(env["SLUICE_ADMIN_LISTEN"].rsplit(":", 1)[1])
        R.check(
            ports.get("http") == listen and ports.get("admin") == admin,
            f"{tag}: container ports http={ports.get('http')} admin={ports.get('admin')} match "
            f"SLUICE_LISTEN / SLUICE_ADMIN_LISTEN",
            f"listen {listen}, admin {admin}",
        )
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container.get(probe, {}).get("httpGet", {})
            port = get.get("port")
            port = ports.get(port, port)
            R.check(
                get.get("path") == path and port == admin,
                f"{tag}: {probe} is GET {path} on the admin port {admin}",
                f"got {get}",
            )

        pre_stop = (
            container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        )
        grace = pod["terminationGracePeriodSeconds"]
        if component == "gateway":
            drain = parse_duration(env.get("SLUICE_DRAIN_WINDOW", "10s"))
            need = pre_stop + drain + 2
            what = f"preStop {pre_stop}s + drain window {drain:g}s + 2s"
        else:
            shutdown = parse_duration(env.get("SLUICE_SHUTDOWN_TIMEOUT", "30s"))
            need = pre_stop + 2 * shutdown
            what = f"preStop {pre_stop}s + 2 × shutdown timeout {shutdown:g}s"
        R.check(grace > need, f"{tag}: terminationGracePeriodSeconds {grace} > {what} = {need:g}")
        R.check(pre_stop > 0, f"{tag}: preStop sleep handler ({pre_stop}s), no shell needed")
        R.check(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0,
            f"{tag}: RollingUpdate maxUnavailable 0",
        )
        sc = container["securityContext"]
        psc = pod.get("securityContext", {})
        R.check(
            sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True
            and (sc.get("seccompProfile") or psc.get("seccompProfile", {})).get("type")
            == "RuntimeDefault",
            f"{tag}: non-root, read-only root, no privilege escalation, drop ALL, RuntimeDefault seccomp",
        )
        R.check(
            bool(spec["template"]["metadata"].get("annotations", {}).get("checksum/config")),
            f"{tag}: checksum/config annotation",
        )
        if component == "gateway":
            R.check(
                bool(pod.get("topologySpreadConstraints"))
                or bool(pod.get("affinity", {}).get("podAntiAffinity")),
                f"{tag}: topologySpreadConstraints / podAntiAffinity",
            )

        # Files the configuration points at are mounted from Secrets.
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        files = [f for f in env.get("SLUICE_KAFKA_CONFIG_FILE", "").split(",") if f]
        files += [f for f in env.get("SLUICE_JWT_HMAC_SECRET_FILE", "").split(",") if f]
        files += [f for f in env.get("SLUICE_JWT_PUBLIC_KEY_FILE", "").split(",") if f]
        files += [
            kv.split("=", 1)[1]
            for kv in env.get("SLUICE_KAFKA_CONFIG", "").split(";")
            if kv.split("=", 1)[0].endswith(".location")
        ]
        for path in files:
            directory, base = path.rsplit("/", 1)
            volume = volumes.get(mounts.get(directory, ""), {})
            items = [i["path"] for i in volume.get("secret", {}).get("items", [])]
            R.check(
                "secret" in volume and base in items,
                f"{tag}: {path} is a key of a mounted Secret ({volume.get('secret', {}).get('secretName')})",
            )
        config_maps = [yaml.safe_dump(cm.get("data", {})) for cm in rendered.of("ConfigMap")]
        anonymous = env.get("SLUICE_ALLOW_ANONYMOUS", "").lower() == "true"
        keyed = any(env.get(k) for k in ("SLUICE_JWT_HMAC_SECRET_FILE", "SLUICE_JWT_PUBLIC_KEY_FILE", "SLUICE_JWKS_URL"))
        R.check(keyed or anonymous, f"{tag}: access control configured (a token key, or allowAnonymous on purpose)")
        R.check(
            not any(re.search(r"sasl\.password|ssl\.key\.password", c) for c in config_maps)
            and not rendered.of("Secret"),
            f"{tag}: no secret value in ConfigMaps, no Secret rendered by the chart",
        )

    for svc in rendered.of("Service"):
        dep = next(
            d
            for d in rendered.of("Deployment")
            if component_of(d) == svc["metadata"]["labels"]["app.kubernetes.io/component"]
        )
        names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        targets = {p["targetPort"] for p in svc["spec"]["ports"]}
        R.check(
            targets <= names and {"http", "admin"} <= {p["name"] for p in svc["spec"]["ports"]},
            f"[{name}] Service {svc['metadata']['name']}: http + admin ports, targets exist",
        )


def check_autoscaling(name: str, rendered: Rendered, mode: str) -> None:
    gateway_hpas = [
        h for h in rendered.of("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"].endswith("-gateway")
    ]
    scaled = rendered.of("ScaledObject")
    gateway = next((d for d in rendered.of("Deployment") if component_of(d) == "gateway"), None)
    if mode == "hpa":
        R.check(len(gateway_hpas) == 1 and not scaled, f"[{name}] one gateway HPA, no ScaledObject")
        metrics = gateway_hpas[0]["spec"]["metrics"] if gateway_hpas else []
        R.check(
            any(m["type"] == "Pods" and m["pods"]["metric"]["name"] == AUTOSCALING_METRIC for m in metrics),
            f"[{name}] HPA scales on the Pods metric {AUTOSCALING_METRIC}",
        )
        behavior = gateway_hpas[0]["spec"].get("behavior", {}) if gateway_hpas else {}
    elif mode == "keda":
        R.check(
            len(scaled) == 1 and not gateway_hpas and not rendered.of("HorizontalPodAutoscaler"),
            f"[{name}] one ScaledObject, no HPA",
        )
        trigger = scaled[0]["spec"]["triggers"][0] if scaled else {}
        R.check(
            trigger.get("type") == "prometheus"
            and AUTOSCALING_METRIC in trigger.get("metadata", {}).get("query", ""),
            f"[{name}] KEDA Prometheus trigger queries {AUTOSCALING_METRIC}",
        )
        behavior = (
            scaled[0]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] if scaled else {}
        )
    else:
        R.check(not gateway_hpas and not scaled, f"[{name}] no gateway autoscaler (mode none)")
        R.check(
            gateway is None or "replicas" in gateway["spec"],
            f"[{name}] gateway Deployment sets replicas itself",
        )
        return
    R.check(
        gateway is not None and "replicas" not in gateway["spec"],
        f"[{name}] gateway Deployment leaves replicas to the autoscaler",
    )
    down = behavior.get("scaleDown", {})
    R.check(
        down.get("stabilizationWindowSeconds", 0) >= 300
        and all(p["value"] <= 25 for p in down.get("policies", []) if p["type"] == "Percent"),
        f"[{name}] slow scale-down (window {down.get('stabilizationWindowSeconds')}s, small steps)",
    )


# --- running the rendered configuration --------------------------------------------------------


def check_observability(name: str, rendered: Rendered, values: dict, monitoring: bool) -> None:
    """The dashboards ConfigMap and the PrometheusRule carry deploy/observability's files as they are."""
    wanted = values.get("metrics", {}).get("grafanaDashboards", {}).get("enabled", True)
    boards = [c for c in rendered.of("ConfigMap") if c["metadata"]["name"].endswith("-dashboards")]
    R.check(bool(boards) == wanted, f"[{name}] Grafana dashboards ConfigMap {'rendered' if wanted else 'absent'}")
    for cm in boards:
        data = cm.get("data") or {}
        R.check(
            cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1",
            f"[{name}] dashboards ConfigMap carries the Grafana sidecar label grafana_dashboard: \"1\"",
        )
        R.check(
            sorted(data) == [p.name for p in DASHBOARDS] and all(data[p.name] == p.read_text() for p in DASHBOARDS),
            f"[{name}] dashboards ConfigMap holds deploy/observability's {len(DASHBOARDS)} dashboards, unchanged",
            f"keys {sorted(data)}",
        )
    if monitoring:
        for rule in rendered.of("PrometheusRule"):
            R.check(
                rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"],
                f"[{name}] PrometheusRule groups are deploy/observability/prometheus/sluice-rules.yaml's",
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 5):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def first_event_id(url: str, headers: dict | None = None, timeout: float = 10) -> str | None:
    """Opens an SSE stream, returns the first event's id, and closes the connection."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"\nid: ?([^\r\n]+)\r?\n", buf)
            if m:
                return m[1].decode()
    return None


def metric_families(text: str) -> dict[str, str]:
    """`# TYPE name type` lines of a Prometheus/OpenMetrics scrape → {family: type}."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))


def family_of(series: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", series)


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=env, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def run_rendered_config(rendered: Rendered, rule_metrics: set[str]) -> None:
    """Runs a broker plus the gateway and ingest with the chart's environment; scrapes metrics."""
    envs = {}
    for dep in rendered.of("Deployment"):
        envs[component_of(dep)] = container_env(
            rendered, dep["spec"]["template"]["spec"]["containers"][0], component_of(dep)
        )
    procs = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            broker_out = open(Path(tmp) / "broker.out", "w+")
            procs.start(
                # Nothing creates a topic by asking: the stream the traffic below uses exists first.
                [str(BIN_DIR / "sluice-dev"), "--broker-only", "--topics", "chartcheck", "--log", "warn"],
                dict(os.environ),
                stdout=broker_out,
                stderr=subprocess.DEVNULL,
            )

            def bootstrap() -> str | None:
                broker_out.seek(0)
                m = re.search(r"KAFKA_BOOTSTRAP=(\S+)", broker_out.read())
                return m[1] if m else None

            if not R.check(wait_until(lambda: bootstrap() is not None, 20), "sluice-dev --broker-only is up"):
                return
            # The Secret's mounted file cannot exist here: a stand-in secret, and a token signed
            # with it that grants every stream, so traffic can pass as a real client's would.
            secret = secrets.token_urlsafe(48)
            (Path(tmp) / "jwt-hmac-secret").write_text(secret + "\n")
            claims = {"sub": "chart-check", "exp": int(time.time()) + 600,
                      "sluice": {"subscribe": ["*"], "publish": ["*"]}}
            auth = {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}
            urls = {}
            for component, chart_env in envs.items():
                http_port, admin_port = free_port(), free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
                env.update(chart_env)
                # Only what cannot hold outside a pod changes: addresses and the broker.
                env["SLUICE_LISTEN"] = f"127.0.0.1:{http_port}"
                env["SLUICE_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
                env["SLUICE_KAFKA_BROKERS"] = bootstrap()
                env["SLUICE_LOG"] = "warn"
                if env.get("SLUICE_JWT_HMAC_SECRET_FILE"):
                    env["SLUICE_JWT_HMAC_SECRET_FILE"] = str(Path(tmp) / "jwt-hmac-secret")
                if component == "gateway":
                    # Consumer lag is refreshed every 10 s by default; sooner, so it can be scraped.
                    env["SLUICE_CONSUMER_LAG_INTERVAL"] = "500ms"
                    env["SLUICE_KAFKA_CONFIG"] = ";".join(
                        filter(None, [env.get("SLUICE_KAFKA_CONFIG"), "fetch.wait.max.ms=5"])
                    )
                p = procs.start(
                    [str(BIN_DIR / BINARIES[component])], env,
                    stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / f"{component}.err", "w"),
                )
                urls[component] = (f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{admin_port}", p)

            for component, (_, admin, p) in urls.items():
                ready = wait_until(lambda: p.poll() is not None or http(f"{admin}/readyz", timeout=1)[0] == 200, 30)
                err = (Path(tmp) / f"{component}.err").read_text()[-500:]
                R.check(
                    ready and p.poll() is None,
                    f"{BINARIES[component]} starts with the chart's rendered environment and is ready",
                    f"exit {p.poll()}: {err}",
                )
            if any(p.poll() is not None for _, _, p in urls.values()):
                return

            ingest, ingest_admin, _ = urls["ingest"]
            gateway, gateway_admin, _ = urls["gateway"]
            stream = "chartcheck"
            status, body = http(
                f"{ingest}/v1/streams/{stream}/events",
                data=json.dumps([{"type": "t", "key": "k", "data": i} for i in range(3)]).encode(),
                headers={"Content-Type": "application/json"},
            )
            R.check(status == 401, f"publish without a token: {status} (the chart's services are not open)", body[:200])
            status, body = http(
                f"{ingest}/v1/streams/{stream}/events",
                data=json.dumps([{"type": "t", "key": "k", "data": i} for i in range(3)]).encode(),
                headers={"Content-Type": "application/json", **auth},
            )
            R.check(status == 200, f"publish through ingest with a token: {status}", body[:200])
            status, _ = http(f"{gateway}/v1/streams/{stream}?from=earliest", timeout=2)
            R.check(status == 401, f"stream without a token: {status}")
            event_id = first_event_id(f"{gateway}/v1/streams/{stream}?from=earliest", auth)
            R.check(event_id is not None, "read an event from the gateway over SSE with a token")
            if event_id:
                R.check(
                    first_event_id(f"{gateway}/v1/streams/{stream}", {"Last-Event-ID": event_id, **auth}) is not None,
                    "resume from its id on the gateway",
                )
            http(f"{gateway}/v1/streams/{stream}?lastEventId=not-a-cursor")  # a rejected request

            scraped: dict[str, str] = {}

            def scrape() -> bool:
                scraped.clear()
                for _, admin, _ in urls.values():
                    scraped.update(metric_families(http(f"{admin}/metrics")[1] or ""))
                return {family_of(m) for m in rule_metrics} <= set(scraped)

            wait_until(scrape, 8, interval=0.5)
            R.check(
                scraped.get(AUTOSCALING_METRIC) == "gauge",
                f"{AUTOSCALING_METRIC} is a gauge in the running gateway's /metrics (the HPA/KEDA metric)",
                f"type {scraped.get(AUTOSCALING_METRIC)}",
            )
            missing = sorted(m for m in rule_metrics if family_of(m) not in scraped)
            sources = {
                "gateway": (ROOT / "services/gateway/src/metrics.rs").read_text(),
                "ingest": (ROOT / "services/ingest/src/metrics.rs").read_text(),
            }
            unregistered = [
                m for m in missing
                if not any(
                    f'"{re.sub(r"^sluice_(gateway|ingest)_|_seconds$", "", family_of(m))}"' in src
                    for src in sources.values()
                )
            ]
            R.check(
                not unregistered,
                f"the {len(rule_metrics)} metrics the alerts use exist: "
                f"{len(rule_metrics) - len(missing)} scraped from the running services"
                + (f", {len(missing)} only registered in metrics.rs (no sample yet: {', '.join(missing)})" if missing else ""),
                f"unknown: {unregistered}",
            )
        finally:
            procs.stop()


# --- the run -----------------------------------------------------------------------------------

SASL_TLS = {
    "kafka": {
        "brokers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "config": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
        "credentials": {"existingSecret": "sluice-kafka-credentials"},
        "tls": {"existingSecret": "kafka-cluster-ca", "certKey": "tls.crt", "keyKey": "tls.key"},
    },
    "gateway": {"credentialsSecret": "sluice-gateway-kafka"},
}

# The chart refuses to render without access control, so every value set names a key source.
HMAC = {"auth": {"hmacSecret": {"existingSecret": "sluice-jwt"}}}
PUBLIC_KEYS = {
    "auth": {
        "publicKeys": {"existingSecret": "sluice-jwt-keys", "keys": ["current.pem", "next.pem"]},
        "issuer": "https://idp.example.com/",
        "audience": "sluice",
    },
    "gateway": {"publicStreams": "status,news.*"},
}


def with_auth(values: dict, auth: dict = HMAC) -> dict:
    return {**values, **auth}


SCENARIOS: list[tuple[str, dict | None, tuple[str, ...], str]] = [
    ("defaults", HMAC, (), "none"),
    ("hpa", with_auth({"autoscaling": {"mode": "hpa"}, "ingest": {"autoscaling": {"enabled": True}}}), (), "hpa"),
    ("keda", with_auth({"autoscaling": {"mode": "keda"}}), (KEDA,), "keda"),
    ("none", with_auth({"autoscaling": {"mode": "none"}, "metrics": {"grafanaDashboards": {"enabled": False}}}), (), "none"),
    ("auth-public-keys", PUBLIC_KEYS, (), "none"),
    ("auth-jwks", {"auth": {"jwksUrl": "https://idp.example.com/.well-known/jwks.json"}}, (), "none"),
    ("anonymous on purpose", {"auth": {"allowAnonymous": True}}, (), "none"),
    ("kafka-sasl-tls", with_auth(SASL_TLS), (), "none"),
    ("gateway-only", with_auth({"ingest": {"enabled": False}, "ingress": {"enabled": True}}), (MONITORING,), "none"),
    ("ingest-only", with_auth({"gateway": {"enabled": False}, "ingress": {"enabled": True}}), (MONITORING,), "none"),
    (
        "examples/kafka-sasl-tls-values.yaml",
        yaml.safe_load((CHART / "examples" / "kafka-sasl-tls-values.yaml").read_text()),
        (),
        "none",
    ),
    (
        "everything",
        {
            "autoscaling": {"mode": "keda"},
            "ingress": {"enabled": True, "gateway": {"tlsSecret": "sse-tls"}},
            "networkPolicy": {"enabled": True, "adminFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
            "gateway": {"maxConnectionLifetime": "30m", "extraConfig": {"SLUICE_STREAM_IDLE_TIMEOUT": "10m"}},
            **{k: v for k, v in SASL_TLS.items() if k == "kafka"},
            **HMAC,
        },
        (MONITORING, KEDA),
        "keda",
    ),
]


def main() -> int:
    started = time.monotonic()
    missing = [b for b in ("sluice-gateway", "sluice-ingest", "sluice-dev") if not (BIN_DIR / b).exists()]
    if missing:
        print(f"check_chart: {', '.join(missing)} not in {BIN_DIR}; run `cargo build --workspace --bins` "
              "or set SLUICE_BIN_DIR", file=sys.stderr)
        return 2
    helps = {c: binary_help(c) for c in BINARIES}

    R.section("lint (helm-sdkpy)")
    with FakeApiServer() as api:
        lint = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration(kubeconfig=api.kubeconfig)).run(str(CHART)))
    messages = lint.get("Messages") or []
    errors = [m for m in messages if m.get("Severity", 0) >= 3] + (lint.get("Errors") or [])
    for m in messages:
        if m.get("Severity", 0) >= 2:
            print(f"  lint: severity {m['Severity']} in {m.get('Path')} {m.get('Err') or ''}")
    R.check(
        not errors,
        f"helm lint: {len(messages)} message(s), no errors",
        f"{json.dumps(errors)[:300]} (helm-sdkpy drops lint messages' text; the renders below name the cause)",
    )

    R.section("values documentation")
    values_text = (CHART / "values.yaml").read_text()
    rows, doc_errors = chart_values_doc.rows_and_errors(values_text)
    R.check(not doc_errors, f"every field of values.yaml has a comment ({len(rows)} fields)", "; ".join(doc_errors))
    readme = (CHART / "README.md").read_text()
    R.check(
        readme == chart_values_doc.expected_readme(readme, values_text),
        "helm/sluice/README.md values table is up to date",
        "run python3 tests/k8s/chart_values_doc.py --write",
    )

    renders: dict[str, Rendered] = {}
    for name, values, api_versions, mode in SCENARIOS:
        R.section(f"render: {name} (cluster serves {', '.join(api_versions) or 'no CRDs'})")
        try:
            rendered = helm_install(values, api_versions)
        except helm_sdkpy.HelmError as e:
            R.check(False, f"[{name}] renders", str(e)[:500])
            continue
        renders[name] = rendered
        validate_schemas(name, rendered)
        check_deployments(name, rendered, helps)
        check_autoscaling(name, rendered, mode)
        values = values or {}
        for component in BINARIES:
            enabled = values.get(component, {}).get("enabled", True)
            has = any(component_of(d) == component for d in rendered.of("Deployment"))
            R.check(has == enabled, f"[{name}] {component} Deployment {'rendered' if enabled else 'absent'}")
            if has:
                R.check(
                    any(p["metadata"]["name"].endswith(component) for p in rendered.of("PodDisruptionBudget")),
                    f"[{name}] {component} PodDisruptionBudget",
                )
        monitoring = MONITORING in api_versions
        for kind in ("ServiceMonitor", "PrometheusRule"):
            R.check(
                bool(rendered.of(kind)) == monitoring,
                f"[{name}] {kind} {'rendered' if monitoring else 'absent'} "
                f"({'CRD served' if monitoring else 'no CRD'})",
            )
        check_observability(name, rendered, values, monitoring)
        if rendered.of("Ingress"):
            for ing in rendered.of("Ingress"):
                component = ing["metadata"]["labels"]["app.kubernetes.io/component"]
                ann = ing["metadata"].get("annotations", {})
                if component == "gateway":
                    R.check(
                        ann.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off"
                        and int(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout", 0)) > 15,
                        f"[{name}] gateway Ingress: proxy buffering off, read timeout above the heartbeat",
                    )
            hosts = [r["host"] for i in rendered.of("Ingress") for r in i["spec"]["rules"]]
            R.check(len(hosts) == len(set(hosts)), f"[{name}] Ingresses split by host: {hosts}")
        if any(component_of(d) == "gateway" for d in rendered.of("Deployment")):
            R.check("curl -N" in rendered.notes, f"[{name}] NOTES.txt tells how to watch a stream (curl -N)")

    R.section("checksum/config follows the configuration")
    base = renders.get("defaults")
    if base:
        def checksums(r: Rendered) -> dict[str, str]:
            return {
                component_of(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in r.of("Deployment")
            }
        changed = checksums(helm_install(with_auth({"gateway": {"maxConnections": 5000}})))
        same = checksums(helm_install(with_auth({"gateway": {"replicas": 7}})))
        R.check(
            changed["gateway"] != checksums(base)["gateway"] and changed["ingest"] == checksums(base)["ingest"],
            "changing gateway.maxConnections changes the gateway's checksum only",
        )
        R.check(same == checksums(base), "changing replicas leaves the checksums alone")

    R.section("tracing: OTEL_* only when an endpoint is set")
    if base:
        for dep in base.of("Deployment"):
            env = container_env(base, dep["spec"]["template"]["spec"]["containers"][0])
            otel = sorted(k for k in env if k.startswith("OTEL_"))
            R.check(not otel, f"[defaults] {component_of(dep)}: no OTEL_* variable (no exporter)", f"{otel}")
        traced = helm_install(with_auth({"tracing": {
            "endpoint": "http://otel-collector.observability:4317",
            "protocol": "http/protobuf",
            "sampler": "parentbased_always_on",
            "samplerArg": "1",
            "resourceAttributes": "deployment.environment=test",
        }}))
        want = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_TRACES_SAMPLER_ARG": "1",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        }
        for dep in traced.of("Deployment"):
            env = container_env(traced, dep["spec"]["template"]["spec"]["containers"][0])
            got = {k: v for k, v in env.items() if k.startswith("OTEL_")}
            R.check(got == want, f"[tracing] {component_of(dep)}: the OTEL_* variables from `tracing`", f"{got}")

    R.section("refusals")
    refusals = [
        ("tracing.protocol not an OTLP protocol", {"tracing": {"protocol": "udp"}}, "schema"),
        ("gateway.maxConnections as a string", {"gateway": {"maxConnections": "lots"}}, "schema"),
        ("autoscaling.mode outside hpa|keda|none", {"autoscaling": {"mode": "both"}}, "schema"),
        ("gateway.enabled as a string", {"gateway": {"enabled": "yes"}}, "schema"),
        ("a misspelt key (gateway.maxConnection)", {"gateway": {"maxConnection": 1}}, "schema"),
        ("extraConfig with a non-SLUICE_ name", {"gateway": {"extraConfig": {"RUST_LOG": "debug"}}}, "schema"),
        (
            "terminationGracePeriodSeconds below preStop + drain window",
            {"gateway": {"terminationGracePeriodSeconds": 12, "drainWindowSeconds": 10}},
            "terminationGracePeriodSeconds",
        ),
        ("a Kafka property value with ';'", {"kafka": {"config": {"client.id": "a;b"}}}, "must not contain"),
    ]
    for what, values, expect in refusals:
        error = helm_install_error(with_auth(values))
        R.check(
            error is not None and expect in error,
            f"rejects {what}",
            f"rendered fine" if error is None else f"error without {expect!r}: {error[:300]}",
        )
    for what, values in [
        ("an open deployment (no token key, allowAnonymous false): the default values", None),
        ("public keys named without their Secret's keys", {"auth": {"publicKeys": {"existingSecret": "k"}}}),
    ]:
        error = helm_install_error(values)
        R.check(error is not None and "auth" in error, f"refuses {what}",
                "rendered fine" if error is None else error[:300])
    error = helm_install_error(HMAC, kube_minor=29)
    R.check(error is not None and "kubeVersion" in error, "refuses Kubernetes 1.29 (no preStop sleep handler)",
            str(error)[:200])

    R.section("the rendered configuration, run (broker + gateway + ingest)")
    everything = renders.get("everything")
    rule_metrics: set[str] = set()
    if everything:
        for rule in everything.of("PrometheusRule"):
            for group in rule["spec"]["groups"]:
                for r in group["rules"]:
                    rule_metrics |= set(METRIC_IN_EXPR.findall(r["expr"]))
    rule_metrics.add(AUTOSCALING_METRIC)
    if base:
        run_rendered_config(base, rule_metrics)

    took = time.monotonic() - started
    print(f"\n{R.passed} checks passed, {len(R.failures)} failed, in {took:.1f} s")
    for f in R.failures:
        print(f"  FAILED: {f}")
    return 1 if R.failures else 0


if __name__ == "__main__":
    sys.exit(main())
