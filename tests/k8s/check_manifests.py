#!/usr/bin/env python3
"""Checks the plain Kubernetes manifests in k8s/ against Kubernetes' schemas and the binaries.

    python3 tests/k8s/check_manifests.py

1. Renders k8s/base and every k8s/overlays/* with `kubectl kustomize` (or `kustomize build`)
   when installed, else with manifests_kustomize.py (or SLUICE_K8S_RENDERER=python); with both,
   checks they agree.
2. Validates every rendered manifest, and every k8s/**/*.example.yaml, with kubernetes-validate
   (strict: unknown fields are errors) against Kubernetes 1.30 (the oldest supported: the
   preStop `sleep` handler) and the newest schema it ships.
3. Checks each workload against its binary's `--help` (binaries from $SLUICE_BIN_DIR, default
   target/debug): every `--flag` in args and every SLUICE_* variable (env, envFrom ConfigMaps)
   exists; container and probe ports are the --listen/--admin-listen ports; probes use /readyz
   and /healthz; terminationGracePeriodSeconds covers preStop + drain window (gateway) or
   preStop + twice the shutdown timeout (ingest); Kafka files named in the config are mounted;
   no SASL password sits in a ConfigMap. Services, Ingresses, HPAs and PDBs point at what
   exists, the SSE Ingress has its proxy settings, the gateway HPA scales on
   sluice_gateway_connections_active.
4. Every rendered target carries deploy/observability's ConfigMaps: the Grafana dashboards with
   the sidecar label grafana_dashboard: "1" and the Prometheus rule file, each file unchanged.
5. Starts the real binaries on 127.0.0.1 against `sluice-dev --broker-only`, configured with the
   base's rendered environment: each must become ready (no exit 64), the gateway's /metrics must
   expose the gauge sluice_gateway_connections_active, and SIGTERM must end each with code 0.

Prints every check; exits 1 if any failed. Needs Python 3.11+, pyyaml, kubernetes-validate.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import yaml
    import kubernetes_validate
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"check_manifests: missing Python package ({e.name}). "
        "Install them with: pip install kubernetes-validate pyyaml"
    )

sys.dont_write_bytecode = True  # no __pycache__ beside the helpers
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import manifests_kustomize as kustomize  # noqa: E402
import manifests_live as live  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# SLUICE_K8S_DIR checks another copy of k8s/ (e.g. a mutated one, to see a check fail).
K8S = os.path.abspath(os.environ.get("SLUICE_K8S_DIR", os.path.join(ROOT, "k8s")))
OLDEST_KUBERNETES = "1.30"  # lifecycle.preStop.sleep is on by default from 1.30
HPA_METRIC = "sluice_gateway_connections_active"
# The gateway forces its exit this long after the drain window (README, Graceful drain).
GATEWAY_DRAIN_SLACK = 2
BINARIES = ("sluice-gateway", "sluice-ingest")


class Report:
    def __init__(self) -> None:
        self.failures = 0
        self.passes = 0

    def ok(self, what: str) -> None:
        self.passes += 1
        print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.failures += 1
        print(f"  FAIL  {what}")

    def check(self, cond: bool, what: str, why: str = "") -> bool:
        if cond:
            self.ok(what)
        else:
            self.fail(f"{what}{': ' + why if why else ''}")
        return cond

    def note(self, what: str) -> None:
        print(f"  note  {what}")


# --- the binaries' --help -------------------------------------------------------------------


class BinaryHelp:
    """Flags, env twins and defaults, parsed from clap's `--help`."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.flags: dict[str, dict] = {}  # "listen" -> {"env": "SLUICE_LISTEN", "default": "…"}
        current = None
        for line in text.splitlines():
            m = re.match(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", line)
            if m:
                current = self.flags.setdefault(m.group(1), {"env": None, "default": None})
                continue
            if current is not None:
                env = re.search(r"\[env: ([A-Z0-9_]+)=", line)
                if env:
                    current["env"] = env.group(1)
                default = re.search(r"\[default: ([^\]]*)\]", line)
                if default:
                    current["default"] = default.group(1)
        self.env_to_flag = {v["env"]: k for k, v in self.flags.items() if v["env"]}

    def default(self, flag: str) -> str | None:
        return self.flags.get(flag, {}).get("default")


def load_help(bin_dir: str, report: Report) -> dict[str, BinaryHelp]:
    helps = {}
    for name in BINARIES:
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            sys.exit(
                f"check_manifests: {path} not found; build the binaries first "
                "(cargo build --workspace --bins) or set SLUICE_BIN_DIR"
            )
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            sys.exit(f"check_manifests: {path} --help exited {out.returncode}: {out.stderr.strip()}")
        helps[name] = BinaryHelp(name, out.stdout)
        report.note(f"{name} --help: {len(helps[name].flags)} flags, {len(helps[name].env_to_flag)} env twins")
    return helps


# --- rendering ------------------------------------------------------------------------------


def external_renderer() -> list[str] | None:
    if os.environ.get("SLUICE_K8S_RENDERER") == "python":
        return None
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def normalised(docs: list[dict]) -> dict[tuple, str]:
    """Documents keyed by kind/namespace/name, generated-name hashes blanked (see renderer)."""
    generated = {
        d["metadata"]["name"]
        for d in docs
        if d.get("kind") == "ConfigMap" and re.search(r"-[a-z0-9]{10}$", d["metadata"]["name"])
    }
    out = {}
    for d in docs:
        text = yaml.safe_dump(d, sort_keys=True)
        for name in generated:
            text = text.replace(name, name[:-10] + "HASH")
        meta = d.get("metadata", {})
        key = (d.get("kind"), meta.get("namespace"), meta.get("name"))
        key = (key[0], key[1], key[2][:-10] + "HASH" if key[2] in generated else key[2])
        out[key] = text
    return out


def render(directory: str, report: Report) -> list[dict] | None:
    rel = os.path.relpath(directory, ROOT)
    try:
        ours = kustomize.render(directory)
    except (kustomize.KustomizeError, OSError, yaml.YAMLError) as e:
        report.fail(f"render {rel} (python renderer): {e}")
        return None
    tool = external_renderer()
    if tool is None:
        report.ok(f"render {rel}: {len(ours)} resources (python renderer, tests/k8s/manifests_kustomize.py)")
        return ours
    out = subprocess.run(tool + [directory], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        report.fail(f"render {rel} ({' '.join(tool)}): {out.stderr.strip()}")
        return None
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    report.ok(f"render {rel}: {len(theirs)} resources ({' '.join(tool)})")
    a, b = normalised(ours), normalised(theirs)
    differ = sorted({k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}, key=str)
    report.check(
        not differ,
        f"render {rel}: the python renderer agrees with {' '.join(tool)}",
        "differs on " + ", ".join("/".join(str(p) for p in k if p) for k in differ),
    )
    return theirs


# --- schema validation ----------------------------------------------------------------------


def validate(docs: list[dict], label: str, report: Report) -> None:
    versions = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
    for doc in docs:
        what = f"{label}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        errors = []
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path) if hasattr(e, "path") else ""
                errors.append(f"{version}: {path} {getattr(e, 'message', e)}")
            except Exception as e:  # schema missing, version unsupported
                errors.append(f"{version}: {e}")
        report.check(not errors, f"{what} valid (strict) for Kubernetes {' and '.join(versions)}", "; ".join(errors))


# --- consistency with the binaries ----------------------------------------------------------


def parse_duration(text: str) -> float:
    """humantime's subset: `10s`, `1m30s`, `500ms`, `0`."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*([a-z]+)\s*", text):
        if m.start() != pos or m.group(2) not in units:
            raise ValueError(f"not a duration: {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {text!r}")
    return total


def parse_nginx_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text.strip())
    if not m:
        raise ValueError(f"not an nginx size: {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def binary_of(container: dict) -> str | None:
    image = container.get("image", "").split("@")[0]
    repo = image.rsplit("/", 1)[-1].split(":")[0]
    for name in BINARIES:
        if repo == name or container.get("name") == name.removeprefix("sluice-"):
            return name
    return None


class Workload:
    """One Sluice container of a Deployment, with its effective configuration."""

    def __init__(self, deployment: dict, container: dict, binary: BinaryHelp, docs: list[dict]):
        self.deployment = deployment
        self.name = deployment["metadata"]["name"]
        self.pod = deployment["spec"]["template"]["spec"]
        self.container = container
        self.binary = binary
        self.env_names: list[tuple[str, str]] = []  # (name, where)
        self.env: dict[str, str | None] = {}  # literal values; None for valueFrom
        self.missing_configmaps: list[str] = []
        self.configmap_values: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef")
            if not ref:
                continue
            cm = next(
                (d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == ref["name"]),
                None,
            )
            if cm is None:
                if not ref.get("optional"):
                    self.missing_configmaps.append(ref["name"])
                continue
            for key, value in (cm.get("data") or {}).items():
                name = source.get("prefix", "") + key
                self.env_names.append((name, f"ConfigMap {ref['name']}"))
                self.env[name] = value
                self.configmap_values[name] = value
        for item in container.get("env") or []:
            self.env_names.append((item["name"], "env"))
            self.env[item["name"]] = item.get("value") if "valueFrom" not in item else None
        self.args = list(container.get("command") or [])[1:] + list(container.get("args") or [])

    def arg_flags(self) -> list[tuple[str, str | None]]:
        flags, i = [], 0
        while i < len(self.args):
            arg = self.args[i]
            if arg.startswith("--"):
                name, eq, value = arg[2:].partition("=")
                if not eq and i + 1 < len(self.args) and not self.args[i + 1].startswith("-"):
                    value, i = self.args[i + 1], i + 1
                flags.append((name, value if (eq or value) else None))
            i += 1
        return flags

    def setting(self, flag: str) -> str | None:
        """The effective value of a flag: args, then environment, then the binary's default."""
        for name, value in self.arg_flags():
            if name == flag:
                return value
        env = self.binary.flags.get(flag, {}).get("env")
        if env and env in self.env:
            return self.env[env]
        return self.binary.default(flag)

    def container_port(self, port) -> int | None:
        for p in self.container.get("ports") or []:
            if port in (p.get("name"), p.get("containerPort")):
                return p.get("containerPort")
        return port if isinstance(port, int) else None

    def mounted(self, path: str) -> str | None:
        """Why `path` is not readable in the container (None: it is mounted)."""
        volumes = {v["name"]: v for v in self.pod.get("volumes") or []}
        for mount in self.container.get("volumeMounts") or []:
            prefix = mount["mountPath"].rstrip("/") + "/"
            if not path.startswith(prefix):
                continue
            volume = volumes.get(mount["name"])
            if volume is None:
                return f"volumeMount {mount['name']} has no volume"
            source = volume.get("secret") or volume.get("configMap")
            rel = path[len(prefix):]
            if mount.get("subPath"):
                return None
            if source and source.get("items") and rel not in [i["path"] for i in source["items"]]:
                return f"volume {mount['name']} has no item with path {rel}"
            return None
        return "no volumeMount covers it"


def check_workload(w: Workload, report: Report, label: str) -> None:
    what = f"{label}: {w.name}/{w.container['name']} ({w.binary.name})"
    for name in w.missing_configmaps:
        report.fail(f"{what}: envFrom ConfigMap {name} is not in the rendered manifests")

    # Flags and env names exist.
    for flag, _ in w.arg_flags():
        report.check(flag in w.binary.flags, f"{what}: arg --{flag} is a flag of {w.binary.name}",
                     f"`{w.binary.name} --help` has no --{flag}")
    sluice_names = [(n, where) for n, where in w.env_names if n.startswith("SLUICE_")]
    unknown = [f"{n} ({where})" for n, where in sluice_names if n not in w.binary.env_to_flag]
    report.check(not unknown, f"{what}: all {len(sluice_names)} SLUICE_* variables are env twins in --help",
                 "unknown: " + ", ".join(unknown))
    for name, where in w.env_names:
        if not name.startswith("SLUICE_"):
            report.note(f"{what}: {name} ({where}) is not a SLUICE_* variable; not checked")

    # Ports and probes.
    listen, admin = w.setting("listen"), w.setting("admin-listen")
    try:
        listen_port, admin_port = port_of(listen), port_of(admin)
    except (AttributeError, ValueError, IndexError):
        report.fail(f"{what}: cannot read ports from --listen {listen!r} / --admin-listen {admin!r}")
        return
    ports = sorted(p.get("containerPort") for p in w.container.get("ports") or [])
    report.check(ports == sorted({listen_port, admin_port}),
                 f"{what}: containerPorts {ports} = --listen {listen_port} and --admin-listen {admin_port}")
    for port_name, expected in (("http", listen_port), ("admin", admin_port)):
        got = w.container_port(port_name)
        if got is not None:
            report.check(got == expected, f"{what}: port named {port_name} is {expected}", f"it is {got}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (w.container.get(probe) or {}).get("httpGet")
        if not report.check(bool(get), f"{what}: {probe} is an httpGet probe"):
            continue
        port = w.container_port(get.get("port"))
        report.check(get.get("path") == path and port == admin_port,
                     f"{what}: {probe} GET {path} on the admin port {admin_port}",
                     f"it is GET {get.get('path')} on {port}")
    startup = (w.container.get("startupProbe") or {}).get("httpGet")
    if startup:
        report.check(startup.get("path") in ("/healthz", "/readyz")
                     and w.container_port(startup.get("port")) == admin_port,
                     f"{what}: startupProbe on the admin port")

    # Shutdown timing.
    pre_stop = (w.container.get("lifecycle") or {}).get("preStop") or {}
    report.check("exec" not in pre_stop, f"{what}: preStop needs no shell (the image is distroless)",
                 "it uses exec")
    sleep = (pre_stop.get("sleep") or {}).get("seconds", 0)
    grace = w.pod.get("terminationGracePeriodSeconds", 30)
    try:
        check_grace(w, what, sleep, grace, report)
    except (TypeError, ValueError) as e:
        report.fail(f"{what}: cannot check terminationGracePeriodSeconds: {e}")

    # Security context.
    pod_sc, sc = w.pod.get("securityContext") or {}, w.container.get("securityContext") or {}
    hardened = (
        (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) is True
        and sc.get("readOnlyRootFilesystem") is True
        and sc.get("allowPrivilegeEscalation") is False
        and "ALL" in ((sc.get("capabilities") or {}).get("drop") or [])
        and ((sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault")
    )
    report.check(hardened, f"{what}: non-root, read-only root, no privilege escalation, drop ALL, seccomp RuntimeDefault")

    # Kafka files and secrets.
    files = [p for p in (w.env.get("SLUICE_KAFKA_CONFIG_FILE") or "").split(",") if p]
    config = [e for e in re.split(r"[;]", w.env.get("SLUICE_KAFKA_CONFIG") or "") if "=" in e]
    config += [v for f, v in w.arg_flags() if f == "kafka-config" and v]
    locations = [e.split("=", 1)[1] for e in config if e.split("=", 1)[0].endswith(".location")]
    files += [v for f, v in w.arg_flags() if f == "kafka-config-file" and v]
    for path in files + locations:
        why = w.mounted(path)
        report.check(why is None, f"{what}: Kafka file {path} is mounted", why or "")
    leaked = [k for k in ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")
              if any(e.split("=", 1)[0].strip() == k for e in
                     (w.configmap_values.get("SLUICE_KAFKA_CONFIG") or "").split(";"))]
    report.check(not leaked, f"{what}: no Kafka secret in a ConfigMap", "found " + ", ".join(leaked))

    # Access control: never open unless said on purpose; key files come from mounted Secrets.
    key_files = [p for p in (w.env.get("SLUICE_JWT_HMAC_SECRET_FILE") or "").split(",") if p]
    key_files += [p for p in (w.env.get("SLUICE_JWT_PUBLIC_KEY_FILE") or "").split(",") if p]
    anonymous = (w.env.get("SLUICE_ALLOW_ANONYMOUS") or "").lower() in ("true", "1", "yes")
    report.check(bool(key_files or w.env.get("SLUICE_JWKS_URL")) or anonymous,
                 f"{what}: access control configured (a token key, or SLUICE_ALLOW_ANONYMOUS on purpose)",
                 "neither SLUICE_JWT_HMAC_SECRET_FILE, SLUICE_JWT_PUBLIC_KEY_FILE, SLUICE_JWKS_URL nor "
                 "SLUICE_ALLOW_ANONYMOUS: the binary exits 64")
    for path in key_files:
        why = w.mounted(path)
        report.check(why is None, f"{what}: token key file {path} is mounted", why or "")



def check_grace(w: Workload, what: str, sleep: int, grace: int, report: Report) -> None:
    if w.binary.name == "sluice-gateway":
        drain = parse_duration(w.setting("drain-window"))
        need = sleep + drain + GATEWAY_DRAIN_SLACK
        report.check(grace > need,
                     f"{what}: terminationGracePeriodSeconds {grace} > preStop {sleep} + drain window "
                     f"{drain:g} + {GATEWAY_DRAIN_SLACK} s forced-exit slack = {need:g}")
    else:
        timeout = parse_duration(w.setting("shutdown-timeout"))
        need = sleep + 2 * timeout
        report.check(grace > need,
                     f"{what}: terminationGracePeriodSeconds {grace} > preStop {sleep} + 2 × shutdown "
                     f"timeout {timeout:g} (requests, then producer flush) = {need:g}")


def check_rendered(docs: list[dict], helps: dict[str, BinaryHelp], report: Report, label: str) -> list[Workload]:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    workloads: list[Workload] = []
    for dep in by_kind.get("Deployment", []):
        for container in dep["spec"]["template"]["spec"].get("containers", []):
            binary = binary_of(container)
            if not report.check(binary is not None,
                                f"{label}: {dep['metadata']['name']}/{container['name']} runs a Sluice binary",
                                f"image {container.get('image')} is neither of {', '.join(BINARIES)}"):
                continue
            w = Workload(dep, container, helps[binary], docs)
            workloads.append(w)
            try:
                check_workload(w, report, label)
            except (KeyError, TypeError, ValueError) as e:
                report.fail(f"{label}: {w.name}: cannot read the container's settings: {e!r}")
    found = sorted({w.binary.name for w in workloads})
    report.check(found == sorted(BINARIES), f"{label}: a Deployment for each of {', '.join(BINARIES)}", f"found {found}")

    def selected(selector: dict) -> list[Workload]:
        return [w for w in workloads
                if labels_match(selector, w.deployment["spec"]["template"]["metadata"].get("labels") or {})]

    services = {}
    for svc in by_kind.get("Service", []):
        name = svc["metadata"]["name"]
        targets = selected(svc["spec"].get("selector") or {})
        if not report.check(len(targets) == 1, f"{label}: Service {name} selects one Sluice Deployment",
                            f"it selects {len(targets)}"):
            continue
        services[name] = (svc, targets[0])
        for p in svc["spec"].get("ports", []):
            target = targets[0].container_port(p.get("targetPort", p["port"]))
            report.check(target in [c.get("containerPort") for c in targets[0].container.get("ports") or []],
                         f"{label}: Service {name} port {p.get('name', p['port'])} → container port {target}")

    hosts: dict[str, set[str]] = {}
    for ing in by_kind.get("Ingress", []):
        name = ing["metadata"]["name"]
        annotations = ing["metadata"].get("annotations") or {}
        for rule in ing["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                backend = path["backend"]["service"]
                ref = backend["name"]
                port = backend["port"].get("name", backend["port"].get("number"))
                svc = services.get(ref)
                ok = svc is not None and any(port in (p.get("name"), p["port"]) for p in svc[0]["spec"]["ports"])
                report.check(ok, f"{label}: Ingress {name} {rule.get('host')}{path['path']} → Service {ref}:{port}")
                if not svc:
                    continue
                w = svc[1]
                hosts.setdefault(rule.get("host"), set()).add(w.binary.name)
                if w.binary.name == "sluice-gateway":
                    heartbeat = parse_duration(w.setting("heartbeat"))
                    sse = (
                        annotations.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off"
                        and annotations.get("nginx.ingress.kubernetes.io/proxy-http-version") == "1.1"
                        and all(float(annotations.get(f"nginx.ingress.kubernetes.io/{a}", 0)) > 2 * heartbeat
                                for a in ("proxy-read-timeout", "proxy-send-timeout"))
                    )
                    report.check(sse, f"{label}: Ingress {name}: buffering off, HTTP/1.1, read/send timeouts "
                                      f"> 2 × heartbeat ({heartbeat:g} s)")
                else:
                    limit = int(w.setting("max-body-bytes"))
                    size = annotations.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m")
                    report.check(parse_nginx_size(size) == 0 or parse_nginx_size(size) >= limit,
                                 f"{label}: Ingress {name}: proxy-body-size {size} ≥ --max-body-bytes {limit}")
    for host, binaries in hosts.items():
        report.check(len(binaries) == 1, f"{label}: host {host} routes to one service",
                     "an Ingress cannot route by method; use one host per service")

    deployments = {w.name: w for w in workloads}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        name, ref = hpa["metadata"]["name"], hpa["spec"]["scaleTargetRef"]
        w = deployments.get(ref["name"]) if ref.get("kind") == "Deployment" else None
        if not report.check(w is not None, f"{label}: HPA {name} targets Deployment {ref['name']}"):
            continue
        metrics = hpa["spec"].get("metrics", [])
        if w.binary.name == "sluice-gateway":
            pods = [m["pods"] for m in metrics if m.get("type") == "Pods"]
            good = [p for p in pods if p["metric"]["name"] == HPA_METRIC]
            report.check(len(good) == 1 and len(metrics) == 1,
                         f"{label}: HPA {name} scales on the Pods metric {HPA_METRIC}",
                         f"metrics: {metrics}")
            if good:
                target = good[0]["target"]
                max_conn = int(w.setting("max-connections"))
                value = float(str(target.get("averageValue", "0")))
                report.check(target.get("type") == "AverageValue" and 0 < value < max_conn,
                             f"{label}: HPA {name} target averageValue {value:g} < --max-connections {max_conn}")
            down = (hpa["spec"].get("behavior") or {}).get("scaleDown") or {}
            report.check(down.get("stabilizationWindowSeconds", 300) >= 300,
                         f"{label}: HPA {name} scales down after a stabilisation window of "
                         f"{down.get('stabilizationWindowSeconds', 300)} s")
        else:
            cpu = [m for m in metrics if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"]
            request = ((w.container.get("resources") or {}).get("requests") or {}).get("cpu")
            report.check(bool(cpu) and bool(request),
                         f"{label}: HPA {name} scales on CPU, and the container requests CPU ({request})")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        name = pdb["metadata"]["name"]
        targets = selected((pdb["spec"].get("selector") or {}).get("matchLabels") or {})
        report.check(len(targets) == 1, f"{label}: PDB {name} selects one Sluice Deployment", f"{len(targets)}")
    return workloads


# --- the real binaries ----------------------------------------------------------------------


def check_live(workloads: list[Workload], bin_dir: str, report: Report) -> None:
    deadline = time.monotonic() + 30
    with live.Processes() as procs:
        try:
            bootstrap = live.start_broker(procs, bin_dir, deadline)
        except live.LiveError as e:
            report.fail(f"live: {e}")
            return
        report.ok(f"live: sluice-dev --broker-only on {bootstrap}")
        started = []
        stand_ins = tempfile.mkdtemp(prefix="sluice-k8s-")
        for w in workloads:
            args = [a for a in w.args if not a.startswith(("--listen", "--admin-listen", "--kafka-brokers"))]
            env = dict(w.env)
            if env.get("SLUICE_JWT_HMAC_SECRET_FILE"):
                # The Secret's mounted file cannot exist here: a stand-in with a random secret.
                path = os.path.join(stand_ins, "jwt-hmac-secret")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(secrets.token_urlsafe(48) + "\n")
                env["SLUICE_JWT_HMAC_SECRET_FILE"] = path
            proc, admin = live.start_service(procs, bin_dir, w.binary.name, env, bootstrap, args)
            started.append((w, proc, admin))
        for w, proc, admin in started:
            what = f"live: {w.binary.name} with {w.name}'s rendered environment"
            try:
                live.wait_ready(procs, proc, admin, deadline)
            except live.LiveError as e:
                report.fail(f"{what}: {e}")
                continue
            report.ok(f"{what}: accepted (no exit 64), /readyz 200")
            status, _ = live.http_get(f"http://{admin}/healthz")
            report.check(status == 200, f"{what}: /healthz 200", f"got {status}")
            if w.binary.name == "sluice-gateway":
                status, metrics = live.http_get(f"http://{admin}/metrics")
                gauge = re.search(rf"^# TYPE {HPA_METRIC} gauge$", metrics, re.M) and re.search(
                    rf"^{HPA_METRIC}(\{{[^}}]*\}})? \S+$", metrics, re.M)
                report.check(status == 200 and bool(gauge),
                             f"{what}: /metrics exposes the gauge {HPA_METRIC} (the HPA's metric)",
                             f"status {status}, no such gauge")
        for w, proc, _ in started:
            if proc.poll() is not None:
                continue
            started_at = time.monotonic()
            code = live.stop(proc, timeout=15)
            report.check(code == 0, f"live: {w.binary.name} exits 0 on SIGTERM "
                                    f"({time.monotonic() - started_at:.1f} s, no open streams)", f"exit {code}")


# --- main -----------------------------------------------------------------------------------


OBSERVABILITY = os.path.join(ROOT, "deploy", "observability")


def check_observability(docs: list[dict], report: Report, label: str) -> None:
    """The dashboards and rules ConfigMaps hold deploy/observability's files as they are."""
    maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    boards = maps.get("sluice-grafana-dashboards")
    folder = os.path.join(OBSERVABILITY, "grafana", "dashboards")
    files = {f: open(os.path.join(folder, f), encoding="utf-8").read()
             for f in sorted(os.listdir(folder)) if f.endswith(".json")}
    if report.check(boards is not None, f"{label}: ConfigMap sluice-grafana-dashboards"):
        report.check((boards["metadata"].get("labels") or {}).get("grafana_dashboard") == "1",
                     f"{label}: the dashboards carry the Grafana sidecar label grafana_dashboard: \"1\"")
        report.check(boards.get("data") == files,
                     f"{label}: the dashboards ConfigMap holds deploy/observability's {len(files)} dashboards, unchanged",
                     f"keys {sorted(boards.get('data') or {})}")
    rules = maps.get("sluice-prometheus-rules")
    with open(os.path.join(OBSERVABILITY, "prometheus", "sluice-rules.yaml"), encoding="utf-8") as f:
        want = {"sluice-rules.yaml": f.read()}
    if report.check(rules is not None, f"{label}: ConfigMap sluice-prometheus-rules"):
        report.check(rules.get("data") == want, f"{label}: the rules ConfigMap holds sluice-rules.yaml, unchanged")


def main() -> int:
    started = time.monotonic()
    report = Report()
    bin_dir = os.path.abspath(os.environ.get("SLUICE_BIN_DIR", os.path.join(ROOT, "target", "debug")))
    print(f"check_manifests: {K8S} against the binaries in {bin_dir}")
    tool = external_renderer()
    if tool:
        print(f"renderer: {' '.join(tool)}, compared with the python renderer")
    elif os.environ.get("SLUICE_K8S_RENDERER") == "python":
        print("renderer: the python renderer (SLUICE_K8S_RENDERER=python)")
    else:
        print("renderer: the python renderer (no kubectl or kustomize on PATH)")
    helps = load_help(bin_dir, report)

    targets = [os.path.join(K8S, "base")]
    overlays = os.path.join(K8S, "overlays")
    if os.path.isdir(overlays):
        targets += [os.path.join(overlays, d) for d in sorted(os.listdir(overlays))
                    if os.path.isdir(os.path.join(overlays, d))]
    base_workloads = []
    for directory in targets:
        label = os.path.relpath(directory, K8S)
        print(f"\n{label}")
        docs = render(directory, report)
        if docs is None:
            continue
        validate(docs, label, report)
        check_observability(docs, report, label)
        try:
            workloads = check_rendered(docs, helps, report, label)
        except (KeyError, TypeError, ValueError) as e:
            report.fail(f"{label}: cannot read the manifests: {e!r}")
            continue
        if label == "base":
            base_workloads = workloads

    print("\nexample files (not rendered)")
    for dirpath, _, files in os.walk(K8S):
        for f in sorted(files):
            if f.endswith(".example.yaml"):
                path = os.path.join(dirpath, f)
                validate(kustomize.load_yaml_documents(path), os.path.relpath(path, K8S), report)

    print("\nthe real binaries, configured like k8s/base")
    if base_workloads:
        check_live(base_workloads, bin_dir, report)
    else:
        report.fail("live: no workloads rendered from k8s/base")

    elapsed = time.monotonic() - started
    print(f"\n{report.passes} checks passed, {report.failures} failed ({elapsed:.1f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
