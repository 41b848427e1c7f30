"""Readers for the files check_compose.py checks: Compose YAML (with interpolation), nginx
configuration, Dockerfiles and .dockerignore. Each reads just enough of its format to answer the
checker's questions, and says so where it simplifies."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import yaml


# --- Compose ----------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation over every string of a loaded document: `$$`, `$VAR`,
    `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}` (nested defaults are not)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        got = env.get(name)
        if op in (":-",) and not got:
            return arg
        if op == "-" and got is None:
            return arg
        if op in (":?", "?") and (got is None or (op == ":?" and not got)):
            raise ValueError(f"required variable {name} is not set: {arg}")
        return got or ""

    return _INTERPOLATION.sub(sub, value)


def load_compose(path: str, env: dict[str, str] | None = None) -> dict:
    """The Compose file as Compose sees it: YAML anchors and merge keys resolved (PyYAML's safe
    loader does both), then interpolated with `env` (the checker passes none: defaults only)."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        raise ValueError("not a mapping at the top level")
    return interpolate(doc, env or {})


def environment(service: dict) -> dict[str, str | None]:
    """A service's `environment`, list or mapping form, as strings (None: taken from the shell)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            name, eq, value = str(item).partition("=")
            out[name] = value if eq else None
        return out
    return {k: (None if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in env.items()}


@dataclass
class PortMapping:
    host_ip: str | None
    host_port: int | None
    container_port: int
    protocol: str = "tcp"


def parse_ports(entries) -> list[PortMapping]:
    """`ports:` short syntax (`[IP:][HOST:]CONTAINER[/proto]`, single ports only) and long syntax."""
    out = []
    for e in entries or []:
        if isinstance(e, dict):
            out.append(PortMapping(e.get("host_ip"), int(e["published"]) if e.get("published") else None,
                                   int(e["target"]), e.get("protocol", "tcp")))
            continue
        text, _, proto = str(e).partition("/")
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            out.append(PortMapping(parts[0].strip("[]"), int(parts[1]), int(parts[2]), proto or "tcp"))
        elif len(parts) == 2:
            out.append(PortMapping(None, int(parts[0]), int(parts[1]), proto or "tcp"))
        else:
            out.append(PortMapping(None, None, int(parts[0]), proto or "tcp"))
    return out


def depends_on(service: dict) -> dict[str, str]:
    """`depends_on` as {service: condition}; the list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {k: (v or {}).get("condition", "service_started") for k, v in deps.items()}


# Keys of a service in the Compose Specification (compose-spec.json), for catching typos.
SERVICE_KEYS = set("""
annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares
cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt
dns_search domainname driver_opts entrypoint env_file environment expose extends external_links
extra_hosts gpus group_add healthcheck hostname image init ipc isolation label_file labels links
logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit models network_mode
networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged
profiles provider pull_policy pull_refresh_after read_only restart runtime scale secrets
security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty
ulimits use_api_socket user userns_mode uts volumes volumes_from working_dir
""".split())
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs", "models"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}


# --- nginx ------------------------------------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list["Directive"] | None = None
    line: int = 0

    def all(self, name: str) -> list["Directive"]:
        return [d for d in self.block or [] if d.name == name]

    def first(self, name: str) -> "Directive | None":
        found = self.all(name)
        return found[0] if found else None


def _nginx_tokens(text: str):
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            yield c, line
            i += 1
        elif c in "\"'":
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                if text[j] == "\n":
                    line += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise ValueError(f"line {line}: unterminated quoted string")
            yield ("STR", "".join(buf)), line
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "{};":
                j += 1
            yield ("STR", text[i:j]), line
            i = j


def parse_nginx(text: str) -> Directive:
    """nginx.conf as a tree of directives (the root is a pseudo-directive `main`)."""
    root = Directive("main", [], [])
    stack = [root]
    words: list[str] = []
    start = 0
    for tok, line in _nginx_tokens(text):
        if isinstance(tok, tuple):
            if not words:
                start = line
            words.append(tok[1])
        elif tok == ";":
            if not words:
                raise ValueError(f"line {line}: empty directive")
            stack[-1].block.append(Directive(words[0], words[1:], None, start))
            words = []
        elif tok == "{":
            if not words:
                raise ValueError(f"line {line}: block without a name")
            d = Directive(words[0], words[1:], [], start)
            stack[-1].block.append(d)
            stack.append(d)
            words = []
        else:  # }
            if words or len(stack) == 1:
                raise ValueError(f"line {line}: unexpected }}")
            stack.pop()
    if words or len(stack) != 1:
        raise ValueError("unexpected end of file (missing ; or })")
    return root


def match_location(server: Directive, path: str) -> Directive | None:
    """The location nginx picks for `path` (no nested locations, no named ones): an exact match;
    else the longest prefix, unless a regex (in order) matches and the prefix is not `^~`."""
    exact, prefixes, regexes = None, [], []
    for loc in server.all("location"):
        args = loc.args
        if len(args) == 2 and args[0] == "=":
            if args[1] == path:
                exact = loc
        elif len(args) == 2 and args[0] in ("~", "~*"):
            regexes.append((re.compile(args[1], re.I if args[0] == "~*" else 0), loc))
        elif len(args) == 2 and args[0] == "^~":
            if path.startswith(args[1]):
                prefixes.append((len(args[1]), True, loc))
        elif len(args) == 1 and path.startswith(args[0]):
            prefixes.append((len(args[0]), False, loc))
    if exact:
        return exact
    best = max(prefixes, key=lambda p: p[0]) if prefixes else None
    if best and best[1]:
        return best[2]
    for rx, loc in regexes:
        if rx.search(path):
            return loc
    return best[2] if best else None


def effective(chain: list[Directive], name: str) -> list[Directive]:
    """A directive as nginx inherits it: the innermost level of `chain` (outermost first) that sets
    it at all wins, entirely (which is how proxy_set_header and add_header behave too)."""
    for level in reversed(chain):
        found = level.all(name)
        if found:
            return found
    return []


def nginx_seconds(text: str) -> float:
    """nginx time: `60`, `60s`, `1m`, `1h30m`, `500ms`."""
    units = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}
    if re.fullmatch(r"\d+", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+)(ms|[smhdwMy])", text):
        if m.start() != pos:
            raise ValueError(f"not an nginx time: {text!r}")
        total += int(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not an nginx time: {text!r}")
    return total


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    heredocs: dict[str, str] = field(default_factory=dict)

    def flags(self) -> tuple[dict[str, list[str]], list[str]]:
        """`--name=value` flags (repeatable) and the remaining words, for COPY/RUN/FROM."""
        words = self.args.split()
        flags: dict[str, list[str]] = {}
        rest = []
        for w in words:
            if w.startswith("--") and not rest:
                k, _, v = w[2:].partition("=")
                flags.setdefault(k, []).append(v)
            else:
                rest.append(w)
        return flags, rest


@dataclass
class Stage:
    base: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    syntax: str | None
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), text)

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, outermost first."""
        out = [stage]
        while True:
            parent = self.stage(out[0].base)
            if parent is None or parent in out:
                return out
            out.insert(0, parent)


_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions with continuations joined and heredocs (BuildKit `<<EOF`) collected."""
    lines = text.split("\n")
    syntax = None
    m = re.match(r"#\s*syntax\s*=\s*(\S+)", lines[0]) if lines else None
    if m:
        syntax = m.group(1)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [raw]
        while parts[-1].rstrip().endswith("\\") and i < len(lines):
            parts[-1] = parts[-1].rstrip()[:-1]
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                parts.append("")
                continue
            parts.append(nxt)
        joined = " ".join(p.strip() for p in parts)
        keyword, _, args = joined.partition(" ")
        heredocs = {}
        for hm in _HEREDOC.finditer(args):
            body = []
            while i < len(lines) and lines[i].strip() != hm.group(3):
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"line {start}: heredoc {hm.group(3)} is not terminated")
            i += 1
            heredocs[hm.group(3)] = "\n".join(body) + "\n"
        ins = Instruction(keyword.upper(), args.strip(), start, heredocs)
        if ins.keyword == "FROM":
            flags, words = ins.flags()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name, len(stages)))
        elif not stages:
            if ins.keyword == "ARG":
                k, _, v = ins.args.partition("=")
                global_args[k.strip()] = v.strip().strip("\"'")
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(syntax, global_args, stages)


# --- .dockerignore ----------------------------------------------------------------------------


def dockerignore_patterns(text: str) -> list[tuple[bool, str]]:
    """(exception, pattern) pairs, cleaned as Docker does (leading `/` and `./` dropped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pat = line[1:].strip() if exception else line
        pat = re.sub(r"^(\./|/)+", "", pat).rstrip("/")
        out.append((exception, pat))
    return out


def _match(pattern: str, path: str) -> bool:
    # `**` matches any number of directories; fnmatch's `*` already crosses `/`, which is close
    # enough for patterns without `**` when they are matched segment by segment below.
    if "**" in pattern:
        rx = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.fullmatch(rx, path) is not None
    if pattern.count("/") != path.count("/"):
        return False
    return all(fnmatch.fnmatchcase(p, q) for p, q in zip(path.split("/"), pattern.split("/")))


def dockerignored(patterns: list[tuple[bool, str]], path: str) -> bool:
    """Whether `path` (relative to the context) is left out: it or a parent directory matches,
    and the last matching pattern decides (Docker's rule)."""
    parts = path.split("/")
    ignored = False
    for exception, pat in patterns:
        for k in range(1, len(parts) + 1):
            if _match(pat, "/".join(parts[:k])):
                ignored = not exception
                break
    return ignored
