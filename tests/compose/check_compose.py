#!/usr/bin/env python3
"""Checks the Docker Compose stack without Docker: docker-compose.yml, the Dockerfile,
.dockerignore and deploy/compose/ (nginx, Prometheus, topic initialiser).

    python3 tests/compose/check_compose.py

1. Compose: the YAML loads (anchors, merge keys, interpolation with defaults only); top-level,
   service and healthcheck keys are Compose Specification keys; the stack has Kafka, a one-shot
   topic initialiser, ingest, two or more gateways, nginx and Prometheus; every referenced file
   (build contexts, Dockerfiles, targets, bind mounts, mounted scripts) exists; images are pinned
   (a tag, never `latest`); Sluice images are the chart's repositories at its appVersion.
   `docker compose config -q` runs when Compose v2 is installed (else docker-compose v1, on a copy
   without v2-only keys; else the check is skipped with the reason).
2. The binaries (from $SLUICE_BIN_DIR, default target/debug): every SLUICE_* variable a service
   sets is an env twin in its binary's `--help`; listen/admin ports (env, else --help defaults)
   equal the ports the service exposes and publishes, its healthcheck probes, nginx's upstreams
   and Prometheus' targets; the stop grace period covers the drain (gateway) or twice the
   shutdown timeout (ingest); the brokers are the Kafka service's internal advertised listener,
   and the host listener is advertised as what the host publishes.
3. Startup order: depends_on names existing services; service_healthy targets have healthchecks,
   service_completed_successfully targets are one-shots; every long-running service has a
   healthcheck and every one-shot is adopted (what `docker compose up --wait` needs); no cycles.
4. nginx: GET /v1/streams/{s} reaches the gateway upstream and POST /v1/streams/{s}/events the
   ingest upstream (nginx's location rules); buffering and cache off, HTTP/1.1 with an empty
   Connection header, read/send timeouts ≥ 2 × the gateway heartbeat, no stickiness, a body limit
   ≥ ingest's --max-body-bytes; `nginx -t` on a copy whose upstream hosts are 127.0.0.1, when
   nginx is installed. Prometheus: the targets are exactly the admin listeners (`promtool check
   config` when installed). Observability: Prometheus loads deploy/observability's rule file
   (rule_files matches its mount); a Grafana service is provisioned with Prometheus as its
   data source and a dashboards provider whose folder is the mount of
   deploy/observability/grafana/dashboards (the one copy the chart and k8s/ ship).
5. Dockerfile: BuildKit syntax line, multi-stage, every COPY --from and compose target a stage,
   FROM images pinned and the Rust image = rust-toolchain.toml's channel, a numeric non-root USER,
   ENTRYPOINT the copied binary, EXPOSE = the binary's default ports, STOPSIGNAL SIGTERM, OCI
   labels, the runtime installs every shared library the binaries link (`ldd`) beyond glibc;
   .dockerignore keeps target/ and .git out and everything cargo needs in.
6. Live: each Sluice service's compose environment, pointed at `sluice-dev --broker-only` on
   127.0.0.1, starts and becomes ready; the image's health probe (sluice-probe, taken from the
   Dockerfile) passes on /readyz and fails on a missing path and a closed port; SIGTERM exits 0
   within the service's stop_grace_period.

Prints every check and a count; exits 1 if any failed. SLUICE_COMPOSE_ROOT checks another copy of
the repository's files (e.g. a mutated one, to see a check fail). Needs Python 3.11+, pyyaml.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"check_compose: missing Python package ({e.name}). Install it with: pip install pyyaml")

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "k8s"))
import compose_files as cf  # noqa: E402
import manifests_live as live  # noqa: E402
from check_manifests import BINARIES, BinaryHelp, Report, parse_duration, parse_nginx_size, port_of  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
ROOT = os.path.abspath(os.environ.get("SLUICE_COMPOSE_ROOT", REPO))
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
GATEWAY_DRAIN_SLACK = 2  # the gateway forces its exit this long after --drain-window
COMPOSE_DEFAULT_STOP_GRACE = 10.0
# Shared libraries every Debian image has (glibc, libgcc); anything else must be installed.
BASE_LIBRARIES = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0",
                  "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
LIBRARY_PACKAGES = {"libz.so.1": "zlib1g", "libzstd.so.1": "libzstd1", "libssl.so.3": "libssl3",
                    "libcrypto.so.3": "libssl3", "liblz4.so.1": "liblz4-1", "libsasl2.so.2": "libsasl2-2",
                    "libcurl.so.4": "libcurl4", "libstdc++.so.6": "libstdc++6"}
# What librdkafka, zstd and vendored OpenSSL need to compile (rdkafka features zstd, ssl-vendored).
BUILD_PACKAGES = {"gcc", "make", "perl", "pkg-config", "zlib1g-dev"}
GATEWAY_PATHS = ["/v1/streams/demo", "/v1/streams/orders.eu-1_x"]
INGEST_PATHS = ["/v1/streams/demo/events", "/v1/streams/orders.eu-1_x/events"]


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def image_ref(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
    else:
        repo, tag = image, None
    return repo, tag, digest


def pinned(image: str) -> str | None:
    """Why `image` is not pinned (None: it is)."""
    repo, tag, digest = image_ref(image)
    if digest:
        return None
    if tag is None:
        return "no tag (means latest)"
    if tag == "latest" or "$" in tag:
        return f"tag {tag}"
    return None


class Service:
    """One Compose service, with its effective settings."""

    def __init__(self, name: str, spec: dict, helps: dict[str, BinaryHelp]):
        self.name = name
        self.spec = spec
        self.env = cf.environment(spec)
        self.binary = None
        image = spec.get("image") or ""
        repo = image_ref(image)[0].rsplit("/", 1)[-1] if image else ""
        target = (spec.get("build") or {}).get("target") if isinstance(spec.get("build"), dict) else None
        for b in BINARIES:
            if repo == b or target == b.removeprefix("sluice-"):
                self.binary = helps[b]
        self.ports = cf.parse_ports(spec.get("ports"))
        self.expose = {int(str(p).split("/")[0]) for p in spec.get("expose") or []}
        self.healthcheck = spec.get("healthcheck") or {}

    def setting(self, flag: str) -> str | None:
        """A flag's effective value: `command` args, then environment, then the --help default."""
        args = self.spec.get("command") or []
        args = args.split() if isinstance(args, str) else [str(a) for a in args]
        for i, a in enumerate(args):
            if a == f"--{flag}" and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(f"--{flag}="):
                return a.split("=", 1)[1]
        env = self.binary.flags.get(flag, {}).get("env")
        if env and self.env.get(env) is not None:
            return self.env[env]
        default = self.binary.default(flag)
        return "" if default == '""' else default  # clap prints an empty default as ""

    @property
    def one_shot(self) -> bool:
        return str(self.spec.get("restart", "no")) == "no" and not self.has_healthcheck

    @property
    def has_healthcheck(self) -> bool:
        hc = self.healthcheck
        return bool(hc) and not hc.get("disable") and (hc.get("test") or ["NONE"])[0] != "NONE"

    def container_ports(self) -> set[int]:
        return self.expose | {p.container_port for p in self.ports}


# --- loading ----------------------------------------------------------------------------------


def load_help(bin_dir: str, report: Report) -> dict[str, BinaryHelp]:
    helps = {}
    for name in BINARIES:
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            sys.exit(f"check_compose: {path} not found; build the binaries first "
                     "(cargo build --workspace --bins) or set SLUICE_BIN_DIR")
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            sys.exit(f"check_compose: {path} --help exited {out.returncode}: {out.stderr.strip()}")
        helps[name] = BinaryHelp(name, out.stdout)
        report.note(f"{name} --help: {len(helps[name].flags)} flags, {len(helps[name].env_to_flag)} env twins")
    return helps


def workspace_version() -> str | None:
    with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
        m = re.search(r"^\[workspace\.package\][^\[]*?^version\s*=\s*\"([^\"]+)\"", f.read(), re.M | re.S)
    return m.group(1) if m else None


def chart() -> tuple[dict, str | None]:
    with open(os.path.join(ROOT, "helm", "sluice", "values.yaml"), encoding="utf-8") as f:
        values = yaml.safe_load(f)
    with open(os.path.join(ROOT, "helm", "sluice", "Chart.yaml"), encoding="utf-8") as f:
        app_version = str(yaml.safe_load(f).get("appVersion"))
    return values, app_version


# --- 1. Compose structure, files, images --------------------------------------------------------


def check_structure(doc: dict, services: dict[str, Service], report: Report) -> None:
    unknown = [k for k in doc if k not in cf.TOP_LEVEL_KEYS and not str(k).startswith("x-")]
    report.check(not unknown, "compose: top-level keys are Compose Specification keys (or x- extensions)",
                 f"unknown: {unknown}")
    report.check("version" not in doc, "compose: no obsolete top-level `version`", "Compose v2 ignores it and warns")
    for name, s in services.items():
        bad = [k for k in s.spec if k not in cf.SERVICE_KEYS and not str(k).startswith("x-")]
        report.check(not bad, f"compose: {name}: service keys are Compose Specification keys", f"unknown: {bad}")
        report.check(bool(s.spec.get("image") or s.spec.get("build")), f"compose: {name}: has an image or a build")
        if s.healthcheck:
            bad = [k for k in s.healthcheck if k not in cf.HEALTHCHECK_KEYS]
            durations_ok = True
            for k in ("interval", "timeout", "start_period", "start_interval"):
                if k in s.healthcheck:
                    try:
                        parse_duration(str(s.healthcheck[k]))
                    except ValueError:
                        durations_ok = False
            report.check(not bad and durations_ok, f"compose: {name}: healthcheck keys and durations valid",
                         f"unknown keys {bad}" if bad else "a duration does not parse")

    by_binary = {b: [s for s in services.values() if s.binary and s.binary.name == b] for b in BINARIES}
    kafka = kafka_service(services)
    report.check(kafka is not None, "compose: an Apache Kafka service (apache/kafka image) running KRaft",
                 "no service runs apache/kafka with KAFKA_PROCESS_ROLES")
    report.check(len(by_binary["sluice-ingest"]) >= 1, "compose: an ingest service")
    report.check(len(by_binary["sluice-gateway"]) >= 2, f"compose: two or more gateways "
                 f"({', '.join(s.name for s in by_binary['sluice-gateway'])})")
    report.check(nginx_service(services) is not None, "compose: an nginx service")
    report.check(prometheus_service(services) is not None, "compose: a Prometheus service")
    inits = [s for s in services.values() if s.one_shot and "kafka-topics.sh" in script_text(s)]
    report.check(len(inits) == 1, "compose: one one-shot topic initialiser using kafka-topics.sh",
                 f"found {[s.name for s in inits]}")


def kafka_service(services: dict[str, Service]) -> Service | None:
    return next((s for s in services.values() if image_ref(s.spec.get("image", ""))[0] == "apache/kafka"
                 and "KAFKA_PROCESS_ROLES" in s.env), None)


def nginx_service(services: dict[str, Service]) -> Service | None:
    return next((s for s in services.values() if image_ref(s.spec.get("image", ""))[0] == "nginx"), None)


def prometheus_service(services: dict[str, Service]) -> Service | None:
    return next((s for s in services.values()
                 if image_ref(s.spec.get("image", ""))[0] in ("prom/prometheus", "quay.io/prometheus/prometheus")),
                None)


def bind_mounts(s: Service) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts (short and long syntax)."""
    out = []
    for v in s.spec.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type") == "bind":
                out.append((v["source"], v["target"]))
            continue
        parts = str(v).split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/", "~")):
            out.append((parts[0], parts[1]))
    return out


def script_text(s: Service) -> str:
    """The text of the scripts a service runs from bind mounts (for recognising what it does)."""
    words = []
    for key in ("entrypoint", "command"):
        v = s.spec.get(key) or []
        words += v.split() if isinstance(v, str) else [str(x) for x in v]
    text = " ".join(words)
    for host, target in bind_mounts(s):
        if target in words:
            try:
                with open(os.path.join(ROOT, host), encoding="utf-8") as f:
                    text += "\n" + f.read()
            except OSError:
                pass
    return text


def check_files(services: dict[str, Service], report: Report) -> dict[str, cf.Dockerfile]:
    dockerfiles: dict[str, cf.Dockerfile] = {}
    for name, s in services.items():
        build = s.spec.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = os.path.normpath(os.path.join(ROOT, build.get("context", ".")))
            if not report.check(os.path.isdir(context), f"compose: {name}: build context {rel(context)} exists"):
                continue
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if not report.check(os.path.isfile(dockerfile), f"compose: {name}: Dockerfile {rel(dockerfile)} exists"):
                continue
            if dockerfile not in dockerfiles:
                with open(dockerfile, encoding="utf-8") as f:
                    try:
                        dockerfiles[dockerfile] = cf.parse_dockerfile(f.read())
                    except ValueError as e:
                        report.fail(f"{rel(dockerfile)}: cannot parse: {e}")
                        continue
            target = build.get("target")
            stages = [st.name for st in dockerfiles[dockerfile].stages]
            report.check(target is None or target in stages,
                         f"compose: {name}: build target {target} is a stage of {rel(dockerfile)}",
                         f"stages: {stages}")
        for host, target in bind_mounts(s):
            path = os.path.normpath(os.path.join(ROOT, os.path.expanduser(host)))
            report.check(os.path.exists(path), f"compose: {name}: mounted {host} → {target} exists")
        # A script run from a mount must be mounted where the command expects it.
        entry = s.spec.get("entrypoint") or []
        entry = entry.split() if isinstance(entry, str) else [str(e) for e in entry]
        for word in entry[1:]:
            if word.startswith("/") and not word.startswith(("/bin/", "/usr/", "/opt/kafka/bin/")):
                report.check(any(t == word for _, t in bind_mounts(s)),
                             f"compose: {name}: entrypoint script {word} is bind-mounted")
    return dockerfiles


def check_images(services: dict[str, Service], report: Report) -> None:
    values, app_version = chart()
    version = workspace_version()
    report.check(app_version == version, f"chart appVersion {app_version} = workspace version {version}")
    for name, s in services.items():
        image = s.spec.get("image")
        if not image:
            report.fail(f"compose: {name}: no image name (a built image should be named, as the chart pulls it)")
            continue
        why = pinned(image)
        report.check(why is None, f"compose: {name}: image {image} is pinned", why or "")
        if s.binary:
            key = s.binary.name.removeprefix("sluice-")
            repo, tag, _ = image_ref(image)
            want = values[key]["image"]["repository"]
            chart_tag = values[key]["image"].get("tag") or app_version
            report.check(repo == want and tag == chart_tag,
                         f"compose: {name}: image {repo}:{tag} is the chart's {want}:{chart_tag} (one build serves both)")
            report.check(s.spec.get("pull_policy") in ("build", "never"),
                         f"compose: {name}: pull_policy build (a local image, never pulled from a registry)",
                         f"pull_policy is {s.spec.get('pull_policy')}")


def run_compose_config(report: Report) -> None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        out = subprocess.run([docker, "compose", "-f", COMPOSE_FILE, "config", "-q"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        report.check(out.returncode == 0, "docker compose config -q (Compose v2)", out.stderr.strip())
        return
    v1 = shutil.which("docker-compose")
    if v1:
        version = subprocess.run([v1, "version", "--short"], capture_output=True, text=True).stdout.strip()
        if version.startswith("1."):
            # v1 knows the Compose Specification of 2021 but not the top-level `name`.
            with open(COMPOSE_FILE, encoding="utf-8") as f:
                text = re.sub(r"^name:.*\n", "", f.read(), flags=re.M)
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
                tmp.write(text)
            try:
                out = subprocess.run([v1, "-f", tmp.name, "--project-directory", ROOT, "config", "-q"],
                                     capture_output=True, text=True, cwd=ROOT, timeout=60)
            finally:
                os.unlink(tmp.name)
            report.check(out.returncode == 0,
                         f"docker-compose {version} config -q (Compose v2 is not installed; v1's schema, "
                         "top-level `name` removed)", out.stderr.strip())
            return
    report.note("skipped `docker compose config`: neither Compose v2 (docker compose) nor docker-compose is installed")


# --- 2. the binaries: env names, ports, Kafka, shutdown -----------------------------------------


def check_sluice_service(s: Service, report: Report) -> tuple[int, int] | None:
    what = f"{s.name} ({s.binary.name})"
    sluice = [n for n in s.env if n.startswith("SLUICE_")]
    unknown = [n for n in sluice if n not in s.binary.env_to_flag]
    report.check(not unknown, f"{what}: all {len(sluice)} SLUICE_* variables are env twins in --help",
                 "unknown: " + ", ".join(unknown))
    for n in s.env:
        if not n.startswith("SLUICE_"):
            report.note(f"{what}: {n} is not a SLUICE_* variable; not checked")
    args = s.spec.get("command") or []
    for a in args if isinstance(args, list) else args.split():
        if str(a).startswith("--"):
            flag = str(a)[2:].split("=")[0]
            report.check(flag in s.binary.flags, f"{what}: command flag --{flag} exists")
    try:
        listen, admin = port_of(s.setting("listen")), port_of(s.setting("admin-listen"))
    except (AttributeError, ValueError, IndexError):
        report.fail(f"{what}: cannot read ports from --listen/--admin-listen")
        return None
    for flag in ("listen", "admin-listen"):
        host = s.setting(flag).rsplit(":", 1)[0]
        report.check(host in ("0.0.0.0", "[::]", "::"), f"{what}: --{flag} {s.setting(flag)} binds every interface "
                     "(reachable from other containers)")
    report.check(s.container_ports() == {listen, admin},
                 f"{what}: exposed/published container ports {sorted(s.container_ports())} = --listen {listen} "
                 f"and --admin-listen {admin}")
    test = [str(t) for t in (s.healthcheck.get("test") or [])]
    report.check(test[:1] == ["CMD"] and test[1:2] == ["sluice-probe"] and test[2:4] == [str(admin), "/readyz"],
                 f"{what}: healthcheck probes /readyz on the admin port {admin} with sluice-probe",
                 f"test is {test}")
    grace = parse_duration(str(s.spec.get("stop_grace_period", COMPOSE_DEFAULT_STOP_GRACE)))
    if s.binary.name == "sluice-gateway":
        need = parse_duration(s.setting("drain-window")) + GATEWAY_DRAIN_SLACK
        report.check(grace > need, f"{what}: stop_grace_period {grace:g} s > drain window + "
                     f"{GATEWAY_DRAIN_SLACK} s slack = {need:g} s")
    else:
        need = 2 * parse_duration(s.setting("shutdown-timeout"))
        report.check(grace > need, f"{what}: stop_grace_period {grace:g} s > 2 × shutdown timeout = {need:g} s")
    report.check(s.spec.get("read_only") is True and "ALL" in (s.spec.get("cap_drop") or [])
                 and any("no-new-privileges" in str(o) for o in s.spec.get("security_opt") or []),
                 f"{what}: read-only root, cap_drop ALL, no-new-privileges (like the chart)")
    return listen, admin


def kafka_listeners(kafka: Service) -> tuple[dict[str, int], dict[str, tuple[str, int]]]:
    """KAFKA_LISTENERS as {name: port}, KAFKA_ADVERTISED_LISTENERS as {name: (host, port)}."""
    def parse(text):
        out = {}
        for item in (text or "").split(","):
            m = re.fullmatch(r"\s*([A-Za-z_]+)://([^:]*):(\d+)\s*", item)
            if m:
                out[m.group(1)] = (m.group(2), int(m.group(3)))
        return out
    listeners = {k: v[1] for k, v in parse(kafka.env.get("KAFKA_LISTENERS")).items()}
    return listeners, parse(kafka.env.get("KAFKA_ADVERTISED_LISTENERS"))


def check_kafka(services: dict[str, Service], report: Report) -> None:
    kafka = kafka_service(services)
    if kafka is None:
        return
    listeners, advertised = kafka_listeners(kafka)
    names = {kafka.name, kafka.spec.get("hostname")} - {None}
    internal = {f"{h}:{p}" for n, (h, p) in advertised.items() if h in names and listeners.get(n) == p}
    host_side = {n: (h, p) for n, (h, p) in advertised.items() if h in ("localhost", "127.0.0.1")}
    report.check(bool(internal), f"{kafka.name}: an advertised listener for containers ({', '.join(sorted(internal))})",
                 f"none of {advertised} is advertised as {names} on a listener port")
    published = {p.host_port: p.container_port for p in kafka.ports}
    ok = [n for n, (h, p) in host_side.items() if published.get(p) == listeners.get(n)]
    report.check(bool(ok), f"{kafka.name}: a host listener advertised as {', '.join(f'{h}:{p}' for h, p in host_side.values())}"
                 " and published on that host port", f"advertised {host_side}, published {published}")
    protocol = dict(item.split(":", 1) for item in (kafka.env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP") or "").split(",")
                    if ":" in item)
    report.check(set(listeners) <= set(protocol), f"{kafka.name}: every listener has a security protocol",
                 f"listeners {sorted(listeners)}, map {protocol}")
    controller = kafka.env.get("KAFKA_CONTROLLER_LISTENER_NAMES")
    voters = kafka.env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or ""
    report.check(controller in listeners and voters.endswith(f":{listeners.get(controller)}")
                 and "controller" in (kafka.env.get("KAFKA_PROCESS_ROLES") or ""),
                 f"{kafka.name}: KRaft controller listener {controller} is the quorum voters' port")
    test = " ".join(str(t) for t in kafka.healthcheck.get("test") or [])
    report.check(any(a in test for a in internal), f"{kafka.name}: healthcheck talks to the internal listener",
                 f"test is {test!r}")
    for s in services.values():
        if s.binary:
            brokers = set((s.setting("kafka-brokers") or "").split(","))
            report.check(bool(brokers) and brokers <= internal,
                         f"{s.name}: SLUICE_KAFKA_BROKERS {','.join(sorted(brokers))} is the internal listener")
        elif s.one_shot and "BOOTSTRAP" in s.env:
            report.check(s.env["BOOTSTRAP"] in internal, f"{s.name}: BOOTSTRAP {s.env['BOOTSTRAP']} is the internal listener")


def check_streams(services: dict[str, Service], report: Report) -> None:
    """Topics the initialiser creates are streams the services expose, and vice versa."""
    init = next((s for s in services.values() if s.one_shot and "TOPICS" in s.env), None)
    kafka = kafka_service(services)
    if init is None or kafka is None:
        report.fail("compose: no topic initialiser with TOPICS")
        return
    topics = [t.split(":")[0] for t in (init.env["TOPICS"] or "").split()]
    report.check(all(re.fullmatch(r"[A-Za-z0-9._-]{1,249}:[1-9][0-9]*", t) for t in init.env["TOPICS"].split()),
                 f"{init.name}: TOPICS {init.env['TOPICS']!r} are name:partitions with valid stream names")
    auto_create = str(kafka.env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")).lower() == "true"
    for s in services.values():
        if not s.binary:
            continue
        prefix = s.setting("topic-prefix") or ""
        patterns = [p.strip() for p in (s.setting("streams") or "*").split(",") if p.strip()]
        streams = [t.removeprefix(prefix) for t in topics if t.startswith(prefix)]
        missing = [t for t in streams if not any(fnmatch.fnmatchcase(t, p) for p in patterns)]
        report.check(not missing, f"{s.name}: every topic {init.name} creates is a stream it serves",
                     f"not in --streams {patterns}: {missing}")
        if not auto_create:
            literal = [p for p in patterns if not any(c in p for c in "*?[")]
            absent = [p for p in literal if prefix + p not in topics]
            report.check(not absent, f"{s.name}: every stream it names has a topic (auto-creation is off)",
                         f"no topic for {absent}")


# --- 3. startup order -----------------------------------------------------------------------------


def check_order(services: dict[str, Service], report: Report) -> None:
    adopted: set[str] = set()
    for name, s in services.items():
        for dep, cond in cf.depends_on(s.spec).items():
            target = services.get(dep)
            if not report.check(target is not None, f"depends_on: {name} → {dep} exists"):
                continue
            if cond == "service_healthy":
                report.check(target.has_healthcheck, f"depends_on: {name} → {dep} service_healthy, and {dep} has a healthcheck")
            elif cond == "service_completed_successfully":
                report.check(target.one_shot, f"depends_on: {name} → {dep} service_completed_successfully, "
                             f"and {dep} is a one-shot (restart \"no\", no healthcheck)")
                if not s.one_shot:
                    adopted.add(dep)
            else:
                report.check(cond == "service_started", f"depends_on: {name} → {dep}: condition {cond} is known")
    for name, s in services.items():
        if s.one_shot:
            report.check(name in adopted, f"{name}: one-shot, adopted by a long-running service with "
                         "service_completed_successfully (else `up --wait` fails when it exits)")
        else:
            report.check(s.has_healthcheck, f"{name}: long-running, has a healthcheck (`up --wait` waits for it)")
    # Cycles.
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> list[str] | None:
        if state.get(n) == 1:
            return path + [n]
        if state.get(n) == 2 or n not in services:
            return None
        state[n] = 1
        for d in cf.depends_on(services[n].spec):
            found = visit(d, path + [n])
            if found:
                return found
        state[n] = 2
        return None

    cycle = next((c for c in (visit(n, []) for n in services) if c), None)
    report.check(cycle is None, "depends_on: no cycles", " → ".join(cycle or []))
    kafka = kafka_service(services)
    for s in services.values():
        if s.binary and kafka:
            deps = cf.depends_on(s.spec)
            via_init = any(c == "service_completed_successfully" and services[d].one_shot
                           and cf.depends_on(services[d].spec).get(kafka.name) == "service_healthy"
                           for d, c in deps.items() if d in services)
            report.check(via_init or deps.get(kafka.name) == "service_healthy",
                         f"{s.name}: starts after Kafka is healthy and the topics exist")


# --- 4. nginx and Prometheus ----------------------------------------------------------------------


def check_nginx(services: dict[str, Service], ports: dict[str, tuple[int, int]], report: Report) -> None:
    nginx = nginx_service(services)
    if nginx is None:
        return
    mounts = {t: h for h, t in bind_mounts(nginx)}
    host = mounts.get("/etc/nginx/nginx.conf")
    if not report.check(host is not None, "nginx: a config is mounted at /etc/nginx/nginx.conf"):
        return
    path = os.path.join(ROOT, host)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        conf = cf.parse_nginx(text)
    except (OSError, ValueError) as e:
        report.fail(f"nginx: cannot read {host}: {e}")
        return
    report.ok(f"nginx: {host} parses")
    http = conf.first("http")
    servers = http.all("server") if http else []
    if not report.check(len(servers) == 1, "nginx: one http server block", f"found {len(servers)}"):
        return
    server = servers[0]
    listen = [int(re.sub(r"\D.*", "", d.args[0].rsplit(":", 1)[-1])) for d in server.all("listen")]
    report.check(set(listen) == nginx.container_ports(), f"nginx: listens on {listen}, the ports compose publishes "
                 f"{sorted(nginx.container_ports())}")
    upstreams = {u.args[0]: u for u in http.all("upstream")}

    gateways = sorted(f"{s.name}:{ports[s.name][0]}" for s in services.values()
                      if s.binary and s.binary.name == "sluice-gateway" and s.name in ports)
    ingests = sorted(f"{s.name}:{ports[s.name][0]}" for s in services.values()
                     if s.binary and s.binary.name == "sluice-ingest" and s.name in ports)
    heartbeat = max(parse_duration(s.setting("heartbeat")) for s in services.values()
                    if s.binary and s.binary.name == "sluice-gateway")
    max_body = max(int(s.setting("max-body-bytes")) for s in services.values()
                   if s.binary and s.binary.name == "sluice-ingest")

    def upstream_of(loc) -> tuple[str | None, list[str]]:
        pp = loc.first("proxy_pass") if loc else None
        name = re.sub(r"^https?://", "", pp.args[0]).split("/")[0] if pp else None
        up = upstreams.get(name)
        return name, sorted(d.args[0] for d in up.all("server")) if up else ([name] if name else [])

    for paths, want, label in ((GATEWAY_PATHS, gateways, "gateways"), (INGEST_PATHS, ingests, "ingest")):
        for p in paths:
            loc = cf.match_location(server, p)
            name, members = upstream_of(loc)
            report.check(members == want, f"nginx: {p} → {label} {', '.join(want)}",
                         f"location {' '.join(loc.args) if loc else None} proxies to {name}: {members}")

    gw_loc = cf.match_location(server, GATEWAY_PATHS[0])
    if gw_loc is None:
        return
    chain = [http, server, gw_loc]

    def value(name: str) -> str | None:
        found = cf.effective(chain, name)
        return " ".join(found[-1].args) if found else None

    report.check(value("proxy_buffering") == "off", "nginx: SSE location: proxy_buffering off",
                 f"it is {value('proxy_buffering')}")
    report.check(value("proxy_cache") in (None, "off"), "nginx: SSE location: proxy_cache off",
                 f"it is {value('proxy_cache')}")
    report.check(value("gzip") in (None, "off"), "nginx: SSE location: gzip off (compressors buffer)")
    report.check(value("proxy_http_version") == "1.1", "nginx: SSE location: proxy_http_version 1.1",
                 f"it is {value('proxy_http_version')}")
    headers = {d.args[0].lower(): d.args[1] if len(d.args) > 1 else None
               for d in cf.effective(chain, "proxy_set_header")}
    report.check(headers.get("connection") == "", 'nginx: SSE location: proxy_set_header Connection "" '
                 "(keep-alive upstream; inherited only if the location sets no proxy_set_header)",
                 f"effective Connection header: {headers.get('connection')!r}")
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        raw = value(name) or "60s"
        try:
            secs = cf.nginx_seconds(raw)
        except ValueError as e:
            report.fail(f"nginx: {name}: {e}")
            continue
        report.check(secs >= 2 * heartbeat, f"nginx: SSE location: {name} {raw} ≥ 2 × gateway heartbeat ({heartbeat:g} s)")
    up_name, _ = upstream_of(gw_loc)
    up = upstreams.get(up_name)
    sticky = [d.name for d in (up.block if up else []) if d.name in ("ip_hash", "hash", "sticky", "least_conn", "random")]
    report.check(up is not None and not sticky, f"nginx: upstream {up_name}: round robin, no stickiness",
                 f"it uses {sticky}" if up else "no such upstream")
    ing_loc = cf.match_location(server, INGEST_PATHS[0])
    if ing_loc is not None:
        found = cf.effective([http, server, ing_loc], "client_max_body_size")
        size = found[-1].args[0] if found else "1m"
        report.check(parse_nginx_size(size) == 0 or parse_nginx_size(size) >= max_body,
                     f"nginx: ingest location: client_max_body_size {size} ≥ --max-body-bytes {max_body}")

    # Tokens travel as ?access_token=… (EventSource cannot set headers): no access log may hold
    # the query string. Every access_log must name a log_format whose fields leave it out.
    formats = {d.args[0]: " ".join(d.args[1:]) for d in http.all("log_format")}
    leaky = re.compile(r"\$(request|request_uri|args|query_string|arg_\w+|http_referer|http_authorization|cookie_\w+)\b")
    logs = [d for scope in (http, server) for d in scope.all("access_log")] + [
        d for loc in server.all("location") for d in loc.all("access_log")]
    for d in logs:
        if d.args and d.args[0] == "off":
            continue
        fmt = d.args[1] if len(d.args) > 1 else "combined"
        text_of_format = formats.get(fmt)
        leak = leaky.search(text_of_format) if text_of_format is not None else None
        report.check(text_of_format is not None and leak is None,
                     f"nginx: access_log {d.args[0]} uses format {fmt!r}, which logs no query string, cookie, "
                     "Authorization or Referer",
                     "nginx's predefined `combined` logs $request (path and query)" if text_of_format is None
                     else f"its fields include {leak.group(0) if leak else ''}")

    test = [str(t) for t in nginx.healthcheck.get("test") or []]
    url = next((t for t in test if t.startswith("http://")), "")
    m = re.fullmatch(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\S*)", url)
    loc = cf.match_location(server, m.group(2)) if m else None
    report.check(bool(m) and int(m.group(1)) in listen and loc is not None and loc.first("return") is not None,
                 f"nginx: healthcheck {url} is answered by nginx itself on its listen port")

    nginx_bin = shutil.which("nginx")
    if not nginx_bin:
        report.note("skipped `nginx -t`: nginx is not installed (apt-get install nginx-light)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        names = "|".join(re.escape(n) for n in services)
        copy = re.sub(rf"(\bserver\s+)({names})(:\d+)", r"\g<1>127.0.0.1\3", text)
        copy = re.sub(r"^\s*pid\s+[^;]*;", f"pid {tmp}/nginx.pid;", copy, flags=re.M)
        conf_path = os.path.join(tmp, "nginx.conf")
        with open(conf_path, "w", encoding="utf-8") as f:
            f.write(copy)
        os.makedirs(os.path.join(tmp, "logs"))
        out = subprocess.run([nginx_bin, "-t", "-q", "-p", tmp, "-c", conf_path, "-e", os.path.join(tmp, "logs", "error.log")],
                             capture_output=True, text=True, timeout=30)
        version = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr.strip()
        report.check(out.returncode == 0, f"nginx -t on {host} (upstream hosts as 127.0.0.1; {version})",
                     out.stderr.strip())


def check_prometheus(services: dict[str, Service], ports: dict[str, tuple[int, int]], report: Report) -> None:
    prom = prometheus_service(services)
    if prom is None:
        return
    args = [str(a) for a in prom.spec.get("command") or []]
    config_path = next((a.split("=", 1)[1] for a in args if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
    listen = next((a.split("=", 1)[1] for a in args if a.startswith("--web.listen-address=")), "0.0.0.0:9090")
    host = {t: h for h, t in bind_mounts(prom)}.get(config_path)
    if not report.check(host is not None, f"prometheus: --config.file {config_path} is mounted"):
        return
    try:
        with open(os.path.join(ROOT, host), encoding="utf-8") as f:
            config = yaml.safe_load(f)
        targets = set()
        for job in config["scrape_configs"]:
            report.check(job.get("metrics_path", "/metrics") == "/metrics" and job.get("scheme", "http") == "http",
                         f"prometheus: job {job['job_name']} scrapes http …/metrics")
            for sc in job.get("static_configs") or []:
                targets |= set(sc.get("targets") or [])
    except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
        report.fail(f"prometheus: cannot read {host}: {e}")
        return
    want = {f"{s.name}:{ports[s.name][1]}" for s in services.values() if s.binary and s.name in ports}
    report.check(targets == want, f"prometheus: targets are every admin listener ({', '.join(sorted(want))})",
                 f"missing {sorted(want - targets)}, extra {sorted(targets - want)}")
    port = port_of(listen)
    report.check(port in prom.container_ports(), f"prometheus: listens on {port}, a port compose publishes")
    test = " ".join(str(t) for t in prom.healthcheck.get("test") or [])
    report.check(f":{port}/-/ready" in test or f":{port}/-/healthy" in test,
                 f"prometheus: healthcheck asks /-/ready on {port}", f"test is {test!r}")
    promtool = shutil.which("promtool")
    if promtool:
        out = subprocess.run([promtool, "check", "config", "--syntax-only", os.path.join(ROOT, host)],
                             capture_output=True, text=True, timeout=30)
        report.check(out.returncode == 0, f"promtool check config {host}", (out.stdout + out.stderr).strip())
    else:
        report.note("skipped `promtool check config`: promtool is not installed")


def grafana_service(services: dict[str, Service]) -> Service | None:
    return next((s for s in services.values()
                 if image_ref(s.spec.get("image", ""))[0] in ("grafana/grafana", "grafana/grafana-oss")), None)


def host_path(host: str) -> str:
    return os.path.normpath(os.path.join(ROOT, host))


def check_observability(services: dict[str, Service], report: Report) -> None:
    """Prometheus evaluates the shipped rules; Grafana shows the shipped dashboards over it."""
    prom = prometheus_service(services)
    if prom is None:
        return
    args = [str(a) for a in prom.spec.get("command") or []]
    config_path = next((a.split("=", 1)[1] for a in args if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
    mounts = {t: h for h, t in bind_mounts(prom)}
    with open(host_path(mounts[config_path]), encoding="utf-8") as f:
        rule_files = yaml.safe_load(f).get("rule_files") or []
    rules_host = host_path("deploy/observability/prometheus/sluice-rules.yaml")
    loaded = [t for t, h in mounts.items() if host_path(h) == rules_host
              and any(fnmatch.fnmatch(t, pattern) for pattern in rule_files)]
    report.check(bool(loaded), "prometheus: loads deploy/observability/prometheus/sluice-rules.yaml (mounted, in rule_files)",
                 f"rule_files {rule_files}, mounts {sorted(mounts)}")

    grafana = grafana_service(services)
    if not report.check(grafana is not None, "compose: a Grafana service"):
        return
    gmounts = {t: host_path(h) for h, t in bind_mounts(grafana)}
    provisioning = gmounts.get("/etc/grafana/provisioning")
    if not report.check(provisioning is not None and os.path.isdir(provisioning),
                        "grafana: a provisioning folder is mounted at /etc/grafana/provisioning"):
        return

    def provisioned(kind: str) -> list[dict]:
        folder = os.path.join(provisioning, kind)
        docs = []
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith((".yaml", ".yml")):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    docs.append(yaml.safe_load(f) or {})
        return docs

    prom_port = port_of(next((a.split("=", 1)[1] for a in args if a.startswith("--web.listen-address=")), "0.0.0.0:9090"))
    sources = [d for doc in provisioned("datasources") for d in doc.get("datasources") or []]
    report.check(any(d.get("type") == "prometheus" and d.get("url") == f"http://{prom.name}:{prom_port}" for d in sources),
                 f"grafana: data source http://{prom.name}:{prom_port} (the compose Prometheus) is provisioned",
                 f"data sources {sources}")
    dashboards_host = host_path("deploy/observability/grafana/dashboards")
    paths = [p.get("options", {}).get("path") for doc in provisioned("dashboards") for p in doc.get("providers") or []]
    report.check(any(gmounts.get(p) == dashboards_host for p in paths),
                 "grafana: a dashboards provider reads the mount of deploy/observability/grafana/dashboards",
                 f"provider paths {paths}, mounts {gmounts}")
    report.check(prom.name in (grafana.spec.get("depends_on") or {}), f"grafana: depends on {prom.name}")


def check_host_ports(services: dict[str, Service], report: Report) -> None:
    published = [(s.name, p) for s in services.values() for p in s.ports]
    hosts = [p.host_port for _, p in published if p.host_port]
    report.check(len(hosts) == len(set(hosts)), f"compose: host ports {sorted(hosts)} are distinct")
    open_ = [f"{n}:{p.host_port}" for n, p in published if p.host_ip not in ("127.0.0.1", "::1", "localhost")]
    report.check(not open_, "compose: every published port is bound to 127.0.0.1 (the stack has no auth)",
                 f"open on every interface: {open_}")
    makefile = os.path.join(ROOT, "Makefile")
    if os.path.isfile(makefile):
        with open(makefile, encoding="utf-8") as f:
            text = f.read()
        defines = dict(re.findall(r"^define (\w+)\n(.*?)^endef", text, re.M | re.S))
        for target in ("up", "down"):
            m = re.search(rf"^{target}:.*?\n((?:\t.*\n)+)", text, re.M)
            if not report.check(m is not None, f"Makefile: a `{target}` target"):
                continue
            recipe = re.sub(r"\$\((\w+)\)", lambda v: defines.get(v.group(1), v.group(0)), m.group(1))
            report.check("docker info" in recipe, f"Makefile: `make {target}` first checks that a Docker engine answers")
            if target == "up":
                urls = set(int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", recipe))
                report.check(bool(urls) and urls <= set(hosts),
                             f"Makefile: the ports `make up` prints {sorted(urls)} are published", f"published {sorted(hosts)}")


# --- 5. Dockerfile and .dockerignore ------------------------------------------------------------


def run_lines(stage: cf.Stage) -> str:
    return "\n".join(i.args for i in stage.all("RUN"))


def check_dockerfile(path: str, df: cf.Dockerfile, services: dict[str, Service], bin_dir: str, report: Report) -> None:
    name = rel(path)
    report.check(bool(df.syntax) and "dockerfile" in df.syntax, f"{name}: `# syntax=` line (BuildKit frontend for "
                 "cache mounts and heredocs)", f"syntax {df.syntax}")
    report.check(len(df.stages) >= 2, f"{name}: multi-stage ({len(df.stages)} stages: "
                 f"{', '.join(s.name or '?' for s in df.stages)})")
    stage_names = [s.name for s in df.stages]
    for st in df.stages:
        for ins in st.all("COPY"):
            flags, _ = ins.flags()
            for src in flags.get("from", []):
                earlier = src in stage_names[:st.index]
                report.check(earlier or (":" in src and pinned(src) is None),
                             f"{name}: {st.name}: COPY --from={src} names an earlier stage (line {ins.line})")
        base = df.resolve(st.base)
        if base not in stage_names:
            why = pinned(base)
            report.check(why is None and "$" not in base, f"{name}: FROM {base} ({st.name}) is pinned", why or "")

    with open(os.path.join(ROOT, "rust-toolchain.toml"), encoding="utf-8") as f:
        channel = re.search(r'channel\s*=\s*"([^"]+)"', f.read()).group(1)
    rust = next((df.resolve(s.base) for s in df.stages if image_ref(df.resolve(s.base))[0] == "rust"), None)
    report.check(rust is not None and image_ref(rust)[1].startswith(channel + "-"),
                 f"{name}: builder {rust} is rust-toolchain.toml's {channel}")
    builder = next((s for s in df.stages if image_ref(df.resolve(s.base))[0] == "rust"), None)
    if builder:
        text = run_lines(builder)
        missing = [p for p in sorted(BUILD_PACKAGES) if not re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text)]
        report.check(not missing, f"{name}: builder installs what librdkafka, zstd and OpenSSL need to compile",
                     f"missing {missing}")
        report.check("--locked" in text and "--mount=type=cache" in text,
                     f"{name}: builder runs cargo build --locked with cache mounts")

    libs = set()
    for b in BINARIES:
        out = subprocess.run(["ldd", os.path.join(bin_dir, b)], capture_output=True, text=True)
        libs |= {ln.split()[0].rsplit("/", 1)[-1] for ln in out.stdout.splitlines() if ln.strip()}
    extra = sorted(libs - BASE_LIBRARIES)
    report.note(f"the binaries link {', '.join(sorted(libs))} (ldd {os.path.relpath(bin_dir, REPO)})")

    targets = {}
    for s in services.values():
        build = s.spec.get("build") or {}
        if s.binary and isinstance(build, dict) and build.get("target"):
            targets[build["target"]] = s.binary
    for target, binary in sorted(targets.items()):
        stage = df.stage(target)
        if stage is None:
            continue
        chain = df.chain(stage)
        what = f"{name}: target {target}"
        instrs = [i for st in chain for i in st.instructions]
        users = [i.args for i in instrs if i.keyword == "USER"]
        uid = users[-1].split(":")[0] if users else None
        report.check(uid is not None and uid.isdigit() and int(uid) != 0,
                     f"{what}: runs as a numeric non-root USER ({users[-1] if users else 'none'})",
                     "numeric, so runAsNonRoot can verify it")
        entry = [i.args for i in instrs if i.keyword == "ENTRYPOINT"]
        copied = [i.args.split()[-1] for i in stage.all("COPY") if "--from=" in i.args]
        want = f"/usr/local/bin/{binary.name}"
        report.check(bool(entry) and entry[-1] == f'["{want}"]' and want in copied,
                     f"{what}: ENTRYPOINT [\"{want}\"], copied from the builder")
        exposed = {int(p.split("/")[0]) for i in stage.all("EXPOSE") for p in i.args.split()}
        defaults = {port_of(binary.default("listen")), port_of(binary.default("admin-listen"))}
        report.check(exposed == defaults, f"{what}: EXPOSE {sorted(exposed)} = {binary.name}'s default ports")
        report.check([i.args for i in instrs if i.keyword == "STOPSIGNAL"][-1:] == ["SIGTERM"],
                     f"{what}: STOPSIGNAL SIGTERM")
        labels = " ".join(i.args for i in instrs if i.keyword == "LABEL")
        need = ["title", "source", "licenses", "version", "description"]
        missing = [k for k in need if f"org.opencontainers.image.{k}=" not in labels]
        report.check(not missing and f'org.opencontainers.image.title="{binary.name}"' in labels,
                     f"{what}: OCI labels {', '.join(need)} (title {binary.name})", f"missing {missing}")
        installs = " ".join(run_lines(st) for st in chain)
        unmet = [lib for lib in extra if LIBRARY_PACKAGES.get(lib) is None
                 or not re.search(rf"(?<![\w-]){re.escape(LIBRARY_PACKAGES[lib])}(?![\w-])", installs)]
        report.check(not unmet, f"{what}: installs the package of every non-glibc library the binary links "
                     f"({', '.join(f'{lib} ← {LIBRARY_PACKAGES.get(lib)}' for lib in extra) or 'none'})",
                     f"not provided: {unmet}")
        probe = probe_script(df, stage)
        report.check(probe is not None, f"{what}: ships /usr/local/bin/sluice-probe (the compose healthcheck), mode 0755")
    version = workspace_version()
    report.check(df.global_args.get("VERSION") == version, f"{name}: ARG VERSION {df.global_args.get('VERSION')} "
                 f"= workspace version {version}")


def probe_script(df: cf.Dockerfile, stage: cf.Stage) -> str | None:
    for st in df.chain(stage):
        for ins in st.all("COPY"):
            flags, words = ins.flags()
            if words and words[-1] == "/usr/local/bin/sluice-probe" and flags.get("chmod") == ["0755"] and ins.heredocs:
                return next(iter(ins.heredocs.values()))
    return None


def check_dockerignore(report: Report) -> None:
    path = os.path.join(ROOT, ".dockerignore")
    if not report.check(os.path.isfile(path), ".dockerignore exists"):
        return
    with open(path, encoding="utf-8") as f:
        patterns = cf.dockerignore_patterns(f.read())
    for p in ("target/debug/sluice-gateway", ".git/HEAD"):
        report.check(cf.dockerignored(patterns, p), f".dockerignore leaves out {p.split('/')[0]}/")
    with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
        cargo = f.read()
    members = re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[(.*?)\]", cargo, re.S).group(1))
    needed = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"]
    for m in members:
        needed.append(f"{m}/Cargo.toml")
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, m)):
            rel_dir = os.path.relpath(dirpath, ROOT)
            # Not the member's: build output, and nested packages with their own workspace (fuzz).
            dirs[:] = [d for d in dirs if d != "target" and d != "__pycache__"
                       and not os.path.isfile(os.path.join(dirpath, d, "Cargo.toml"))]
            for f in files:
                if not f.endswith(".rs"):
                    continue
                needed.append(f"{rel_dir}/{f}")
                # Files compiled into the binaries (include_str!, include_bytes!) must be there too.
                with open(os.path.join(dirpath, f), encoding="utf-8", errors="replace") as src:
                    for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', src.read()):
                        needed.append(os.path.normpath(os.path.join(rel_dir, inc)))
    dropped = [p for p in needed if cf.dockerignored(patterns, p)]
    report.check(not dropped, f".dockerignore keeps all {len(needed)} files cargo needs (manifests, lock, toolchain, "
                 f"every member's .rs and the files they include_str!)", f"excluded: {dropped[:8]}")


# --- 6. live --------------------------------------------------------------------------------------


def check_live(services: dict[str, Service], dockerfiles: dict[str, cf.Dockerfile], bin_dir: str, report: Report) -> None:
    probe = None
    for df in dockerfiles.values():
        for st in df.stages:
            probe = probe or probe_script(df, st)
    if probe is None:
        report.fail("live: no sluice-probe script in the Dockerfile to test")
    seen = set()
    deadline = time.monotonic() + 40
    with live.Processes() as procs, tempfile.TemporaryDirectory() as tmp:
        probe_path = os.path.join(tmp, "sluice-probe")
        with open(probe_path, "w", encoding="utf-8") as f:
            f.write(probe or "exit 1\n")
        try:
            bootstrap = live.start_broker(procs, bin_dir, deadline)
        except live.LiveError as e:
            report.fail(f"live: {e}")
            return
        report.ok(f"live: sluice-dev --broker-only on {bootstrap}")
        started = []
        for s in services.values():
            if not s.binary:
                continue
            key = (s.binary.name, tuple(sorted((k, v) for k, v in s.env.items() if v is not None)))
            if key in seen:
                continue
            seen.add(key)
            proc, admin = live.start_service(procs, bin_dir, s.binary.name, s.env, bootstrap)
            started.append((s, proc, admin))
        for s, proc, admin in started:
            what = f"live: {s.binary.name} with {s.name}'s compose environment"
            try:
                live.wait_ready(procs, proc, admin, deadline)
            except live.LiveError as e:
                report.fail(f"{what}: {e}")
                continue
            report.ok(f"{what}: accepted (no exit 64), /readyz 200")
            port = admin.rsplit(":", 1)[1]

            def run_probe(*args: str) -> int:
                return subprocess.run(["bash", probe_path, *args], capture_output=True, timeout=15).returncode

            report.check(run_probe(port, "/readyz") == 0, f"{what}: sluice-probe {port} /readyz exits 0")
            report.check(run_probe(port, "/no-such-path") != 0, f"{what}: sluice-probe on a 404 path exits non-zero")
        closed = str(live.free_port())
        report.check(subprocess.run(["bash", probe_path, closed, "/readyz"], capture_output=True,
                                    timeout=15).returncode != 0, "live: sluice-probe on a closed port exits non-zero")
        for s, proc, _ in started:
            if proc.poll() is not None:
                continue
            grace = parse_duration(str(s.spec.get("stop_grace_period", COMPOSE_DEFAULT_STOP_GRACE)))
            t0 = time.monotonic()
            code = live.stop(proc, timeout=grace)
            report.check(code == 0, f"live: {s.binary.name} ({s.name}) exits 0 on SIGTERM within stop_grace_period "
                         f"{grace:g} s ({time.monotonic() - t0:.1f} s, no open streams)", f"exit {code}")


# --- main -----------------------------------------------------------------------------------------


def guarded(report: Report, label: str, fn, *args):
    """Runs one group of checks; a file shaped unlike what it expects is a failure, not a crash."""
    try:
        return fn(*args)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        report.fail(f"{label}: cannot check, the files are not shaped as expected: {e!r}")
        return None


def main() -> int:
    started = time.monotonic()
    report = Report()
    bin_dir = os.path.abspath(os.environ.get("SLUICE_BIN_DIR", os.path.join(REPO, "target", "debug")))
    print(f"check_compose: {COMPOSE_FILE} against the binaries in {bin_dir}")
    helps = load_help(bin_dir, report)

    print("\ncompose file")
    try:
        doc = cf.load_compose(COMPOSE_FILE)
        specs = doc.get("services")
        if not isinstance(specs, dict) or not specs:
            raise ValueError("no `services` mapping")
    except (OSError, ValueError, yaml.YAMLError) as e:
        report.fail(f"compose: cannot load {rel(COMPOSE_FILE)}: {e}")
        print(f"\n{report.passes} checks passed, {report.failures} failed")
        return 1
    report.ok(f"compose: {rel(COMPOSE_FILE)} loads: {len(specs)} services ({', '.join(specs)})")
    services = guarded(report, "compose", lambda: {n: Service(n, s or {}, helps) for n, s in specs.items()})
    if services is None:
        print(f"\n{report.passes} checks passed, {report.failures} failed")
        return 1
    guarded(report, "compose structure", check_structure, doc, services, report)
    dockerfiles = guarded(report, "compose files", check_files, services, report) or {}
    guarded(report, "images", check_images, services, report)
    guarded(report, "host ports", check_host_ports, services, report)
    guarded(report, "docker compose config", run_compose_config, report)

    print("\nservices against the binaries")
    ports: dict[str, tuple[int, int]] = {}
    for s in services.values():
        if s.binary:
            got = guarded(report, s.name, check_sluice_service, s, report)
            if got:
                ports[s.name] = got
    guarded(report, "kafka", check_kafka, services, report)
    guarded(report, "streams", check_streams, services, report)

    print("\nstartup order")
    guarded(report, "depends_on", check_order, services, report)

    print("\nnginx, Prometheus and Grafana")
    guarded(report, "nginx", check_nginx, services, ports, report)
    guarded(report, "prometheus", check_prometheus, services, ports, report)
    guarded(report, "observability", check_observability, services, report)

    print("\nDockerfile and build context")
    for path, df in dockerfiles.items():
        guarded(report, rel(path), check_dockerfile, path, df, services, bin_dir, report)
    guarded(report, ".dockerignore", check_dockerignore, report)

    print("\nthe real binaries, configured like the compose services")
    guarded(report, "live", check_live, services, dockerfiles, bin_dir, report)

    elapsed = time.monotonic() - started
    print(f"\n{report.passes} checks passed, {report.failures} failed ({elapsed:.1f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
