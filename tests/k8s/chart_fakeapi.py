"""A stand-in Kubernetes API server, just enough for Helm to install a chart into it.

helm-sdkpy exposes Helm's install/upgrade/lint, but no `helm template` and no dry run: an
install always talks to a cluster. This server is that cluster. It answers discovery (so the
test decides what `.Capabilities.APIVersions` holds, e.g. whether monitoring.coreos.com/v1
exists), stores what Helm creates, and lets the test read back every rendered object exactly
as Helm sent it. It runs nothing: no admission, no defaulting, no controllers.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Group/version -> [(plural resource, Kind, namespaced)]
CORE_RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [
        ("ingresses", "Ingress", True),
        ("networkpolicies", "NetworkPolicy", True),
    ],
}

OPTIONAL_RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "monitoring.coreos.com/v1": [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
    "keda.sh/v1alpha1": [("scaledobjects", "ScaledObject", True)],
}


class FakeApiServer:
    """`with FakeApiServer(extra_group_versions) as api:` → api.kubeconfig, api.created."""

    def __init__(self, extra_group_versions: tuple[str, ...] = (), kube_minor: int = 31):
        self.resources = dict(CORE_RESOURCES)
        for gv in extra_group_versions:
            self.resources[gv] = OPTIONAL_RESOURCES[gv]
        self.kube_minor = kube_minor
        self.raw: dict[str, tuple[bytes, str]] = {}  # path -> (body, content type)
        self.created: list[dict] = []  # chart objects, in creation order
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def kubeconfig(self) -> str:
        return (
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {self.url}\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
            "users:\n- name: fake\n  user: {}\n"
        )

    def __enter__(self) -> "FakeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- routing -------------------------------------------------------------------------

    def _resource_list(self, gv: str) -> dict:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": [
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
                for plural, kind, namespaced in self.resources[gv]
            ],
        }

    def _group_list(self) -> dict:
        groups: dict[str, list[str]] = {}
        for gv in self.resources:
            if "/" in gv:
                group, version = gv.split("/")
                groups.setdefault(group, []).append(version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, path: str) -> None:
                self._send(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": f"{path} not found",
                        "reason": "NotFound",
                        "code": 404,
                    },
                )

            def _raw(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n)

            def _send_raw(self, code: int, data: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/version":
                    return self._send(
                        200,
                        {
                            "major": "1",
                            "minor": str(api.kube_minor),
                            "gitVersion": f"v1.{api.kube_minor}.0",
                            "platform": "linux/amd64",
                        },
                    )
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    return self._send(200, api._group_list())
                if path == "/api/v1":
                    return self._send(200, api._resource_list("v1"))
                m = re.fullmatch(r"/apis/([^/]+)/([^/]+)", path)
                if m and f"{m[1]}/{m[2]}" in api.resources:
                    return self._send(200, api._resource_list(f"{m[1]}/{m[2]}"))
                with api.lock:
                    stored = api.raw.get(path)
                if stored is not None:
                    return self._send_raw(200, *stored)
                if path.endswith("/secrets"):
                    # Helm's release history: every test installs a fresh release name.
                    return self._send(
                        200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
                    )
                return self._not_found(path)

            def _store(self, path: str | None, code: int) -> None:
                # Helm's release record arrives as protobuf (client-go's typed client), chart
                # objects as JSON. Objects are echoed back in whatever encoding they came in.
                data = self._raw()
                content_type = self.headers.get("Content-Type", "application/json")
                if content_type.startswith("application/json"):
                    obj = json.loads(data)
                    name = obj.get("metadata", {}).get("name", "")
                    path = path or f"{self.path.split('?')[0]}/{name}"
                    with api.lock:
                        if code == 201:
                            api.created.append(obj)
                else:
                    # Protobuf: its name is not needed, the release record is never read back by path.
                    path = path or f"{self.path.split('?')[0]}/?protobuf"
                with api.lock:
                    api.raw[path] = (data, content_type)
                self._send_raw(code, data, content_type)

            def do_POST(self):
                self._store(None, 201)

            def do_PUT(self):
                self._store(self.path.split("?")[0], 200)

            def do_PATCH(self):
                self._raw()
                self._not_found(self.path)

            def do_DELETE(self):
                self._raw()
                self._not_found(self.path)

        return Handler
