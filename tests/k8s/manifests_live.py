"""Runs the real binaries briefly, on 127.0.0.1 only, with deadlines: what check_manifests.py
needs to know that a rendered configuration starts and serves what the manifests expect."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request


class LiveError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class Processes:
    """Children started here, stopped (by their own pid) when the block ends."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen, tempfile.TemporaryFile]] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        for _, proc, log in self.children:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            log.close()

    def start(self, name: str, argv: list[str], env: dict[str, str], stdout=None) -> subprocess.Popen:
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
        )
        self.children.append((name, proc, log))
        return proc

    def log_tail(self, proc: subprocess.Popen, lines: int = 5) -> str:
        for _, p, log in self.children:
            if p is proc:
                log.seek(0)
                text = log.read().decode("utf-8", "replace").strip().splitlines()
                return "\n      ".join(text[-lines:])
        return ""


def clean_env() -> dict[str, str]:
    """The caller's environment without SLUICE_* (those come from the manifests only)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}


def start_broker(procs: Processes, bin_dir: str, deadline: float) -> str:
    """Starts `sluice-dev --broker-only` and returns its KAFKA_BOOTSTRAP address."""
    proc = procs.start(
        "sluice-dev",
        [os.path.join(bin_dir, "sluice-dev"), "--broker-only"],
        clean_env(),
        stdout=subprocess.PIPE,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LiveError("sluice-dev --broker-only printed no KAFKA_BOOTSTRAP= line in time")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise LiveError(
                f"sluice-dev --broker-only exited ({proc.wait()}) before printing KAFKA_BOOTSTRAP=: "
                + procs.log_tail(proc)
            )
        if line.startswith("KAFKA_BOOTSTRAP="):
            return line.split("=", 1)[1]


def start_service(
    procs: Processes,
    bin_dir: str,
    binary: str,
    env: dict[str, str | None],
    bootstrap: str,
    args: list[str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Starts `binary` with the SLUICE_* variables of a deployment's `env` (others ignored), on
    loopback against `bootstrap`; returns the process and its admin address."""
    run_env = clean_env()
    run_env.update({k: v for k, v in env.items() if k.startswith("SLUICE_") and v is not None})
    admin = f"127.0.0.1:{free_port()}"
    run_env.update(SLUICE_KAFKA_BROKERS=bootstrap, SLUICE_LISTEN="127.0.0.1:0", SLUICE_ADMIN_LISTEN=admin)
    proc = procs.start(binary, [os.path.join(bin_dir, binary)] + (args or []), run_env)
    return proc, admin


def wait_ready(procs: Processes, proc: subprocess.Popen, admin: str, deadline: float) -> None:
    """Polls /readyz until 200; fails early when the process exits (e.g. 64, bad config)."""
    last = "no answer"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise LiveError(f"exited with code {code} before /readyz answered 200: " + procs.log_tail(proc))
        try:
            status, body = http_get(f"http://{admin}/readyz", timeout=1)
            if status == 200:
                return
            last = f"{status} {body.strip()}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise LiveError(f"/readyz did not answer 200 in time (last: {last})")


def stop(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM, then the exit code, or None (and SIGKILL) past the timeout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return None
