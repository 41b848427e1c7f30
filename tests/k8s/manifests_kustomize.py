"""A small kustomize renderer: the subset of `kubectl kustomize` that k8s/ uses.

check_manifests.py uses `kubectl kustomize` (or `kustomize build`) when one is installed and
this module otherwise, so the checks run on a bare CI machine. When both are there, the script
renders with both and compares, which keeps this module honest.

Supported, as kustomize does it:

- `resources`: YAML files (several documents each) and directories holding a kustomization;
- `namespace`: set on every namespaced resource;
- `labels` (`pairs`, `includeTemplates`; not `includeSelectors`, which rewrites selectors);
- `images`: `newName`, `newTag`, `digest` on workload containers and initContainers;
- `configMapGenerator`: `literals`, `envs`, `files`, `behavior` create/merge/replace, with the
  content-hash name suffix and the references to it in pod templates (envFrom, env valueFrom,
  volumes, projected volumes) renamed. The suffix is kustomize's documented algorithm; some
  kustomize releases compute another value, so compare generated names without it;
- `generatorOptions.disableNameSuffixHash`, and a generator's own `options` (`labels`,
  `disableNameSuffixHash`);
- `patches` with `path` or `patch`: strategic-merge patches, matched by kind and name. Mappings
  merge deeply; lists of containers, initContainers, env, envFrom-less volumes and
  imagePullSecrets merge by `name`, volumeMounts by `mountPath`, container ports by
  `containerPort`, Service ports by `port`; other lists are replaced. No `$patch` directives,
  no JSON 6902 patches, no `target`.

Anything else in a kustomization is an error, not silently ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re

import yaml

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}

# Kinds that have no namespace (the ones a Sluice overlay could plausibly hold).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}

WORKLOADS_WITH_TEMPLATE = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# Marks a generated resource until the final render names it; never in the output.
_GENERATED = "__sluice_generated__"


class KustomizeError(Exception):
    """A kustomization this renderer cannot (or must not) render."""


def render(directory: str) -> list[dict]:
    """Renders the kustomization in `directory`, like `kubectl kustomize directory`."""
    resources, hashed = _build(os.path.abspath(directory))
    renames: dict[str, str] = {}
    for res in resources:
        generated = res.pop(_GENERATED, None)
        if generated and hashed.get(generated, True):
            old = res["metadata"]["name"]
            new = f"{old}-{configmap_hash(res)}"
            res["metadata"]["name"] = new
            renames[old] = new
    for res in resources:
        for spec in pod_specs(res):
            _rename_configmap_refs(spec, renames)
    return resources


def configmap_hash(cm: dict) -> str:
    """kustomize's name suffix for a ConfigMap (api/hasher, encodeConfigMap)."""
    m = {"kind": "ConfigMap", "name": cm["metadata"]["name"], "data": cm.get("data") or {}}
    if cm.get("binaryData"):
        m["binaryData"] = cm["binaryData"]
    # Go's json.Marshal: sorted keys, no spaces, HTML characters escaped.
    encoded = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def pod_specs(res: dict) -> list[dict]:
    """The pod specs inside a resource (a workload's template, a CronJob's job template)."""
    spec = res.get("spec") or {}
    if res.get("kind") in WORKLOADS_WITH_TEMPLATE:
        tpl = (spec.get("template") or {}).get("spec")
        return [tpl] if tpl else []
    if res.get("kind") == "CronJob":
        tpl = (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
        return [tpl] if tpl else []
    if res.get("kind") == "Pod":
        return [spec]
    return []


def load_yaml_documents(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _kustomization_file(directory: str) -> str:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _build(directory: str) -> tuple[list[dict], dict[str, bool]]:
    """Resources of one kustomization, generated ConfigMaps still unsuffixed.

    Returns the resources and, per generated ConfigMap name, whether it gets a hash suffix.
    """
    path = _kustomization_file(directory)
    kz = load_yaml_documents(path)[0]
    unknown = set(kz) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{path}: unsupported by this renderer: {', '.join(sorted(unknown))}")

    resources: list[dict] = []
    hashed: dict[str, bool] = {}
    for entry in kz.get("resources") or []:
        target = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(target):
            sub, sub_hashed = _build(target)
            resources += sub
            hashed.update(sub_hashed)
        elif os.path.isfile(target):
            resources += load_yaml_documents(target)
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")

    options = kz.get("generatorOptions") or {}
    unknown = set(options) - {"disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(f"{path}: unsupported generatorOptions: {', '.join(sorted(unknown))}")
    for gen in kz.get("configMapGenerator") or []:
        _generate_configmap(directory, path, gen, options, resources, hashed)

    for entry in kz.get("patches") or []:
        _apply_patch(directory, path, entry, resources)

    for entry in kz.get("labels") or []:
        unknown = set(entry) - {"pairs", "includeTemplates", "includeSelectors"}
        if unknown or entry.get("includeSelectors"):
            raise KustomizeError(f"{path}: labels: only pairs and includeTemplates are supported")
        for res in resources:
            _set_labels(res.setdefault("metadata", {}), entry.get("pairs") or {})
            if entry.get("includeTemplates") and res.get("kind") in WORKLOADS_WITH_TEMPLATE:
                tpl = res.setdefault("spec", {}).setdefault("template", {})
                _set_labels(tpl.setdefault("metadata", {}), entry.get("pairs") or {})

    for image in kz.get("images") or []:
        for res in resources:
            for spec in pod_specs(res):
                for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                    c["image"] = _retag(c.get("image", ""), image)

    if "namespace" in kz:
        for res in resources:
            if res.get("kind") not in CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = kz["namespace"]
    return resources, hashed


def _set_labels(metadata: dict, pairs: dict) -> None:
    labels = metadata.get("labels") or {}
    labels.update({k: str(v) for k, v in pairs.items()})
    metadata["labels"] = labels


def _split_key_value(line: str, where: str) -> tuple[str, str]:
    if "=" not in line:
        raise KustomizeError(f"{where}: {line!r} is not KEY=VALUE")
    key, value = line.split("=", 1)
    return key, value


def _generate_configmap(directory, path, gen, options, resources, hashed) -> None:
    unknown = set(gen) - {"name", "literals", "envs", "files", "behavior", "options"}
    if unknown:
        raise KustomizeError(f"{path}: configMapGenerator: unsupported {', '.join(sorted(unknown))}")
    where = f"{path}: configMapGenerator {gen.get('name')!r}"
    data: dict[str, str] = {}
    for line in gen.get("literals") or []:
        key, value = _split_key_value(line, where)
        # kustomize strips one pair of matching quotes around a literal's value.
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        data[key] = value
    for env_file in gen.get("envs") or []:
        with open(os.path.join(directory, env_file), encoding="utf-8") as f:
            for raw in f:
                line = raw.strip()
                if line and not line.startswith("#"):
                    key, value = _split_key_value(line, f"{where}: {env_file}")
                    data[key] = value
    for spec in gen.get("files") or []:
        key, _, file = spec.partition("=") if "=" in spec else (os.path.basename(spec), "", spec)
        with open(os.path.join(directory, file), encoding="utf-8") as f:
            data[key] = f.read()

    name = gen["name"]
    behavior = gen.get("behavior", "create")
    existing = [
        r
        for r in resources
        if r.get("kind") == "ConfigMap" and r.get("metadata", {}).get("name") == name
    ]
    own = gen.get("options") or {}
    if set(own) - {"labels", "disableNameSuffixHash"}:
        raise KustomizeError(f"{where}: options: only labels and disableNameSuffixHash are supported")
    disable_hash = bool(own.get("disableNameSuffixHash", options.get("disableNameSuffixHash")))
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{where}: a ConfigMap {name!r} exists already (use behavior: merge)")
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data,
              _GENERATED: name}
        if own.get("labels"):
            _set_labels(cm["metadata"], own["labels"])
        resources.append(cm)
        hashed[name] = not disable_hash
    elif behavior in ("merge", "replace"):
        if len(existing) != 1:
            raise KustomizeError(f"{where}: behavior {behavior} needs exactly one ConfigMap {name!r}")
        cm = existing[0]
        cm["data"] = {**(cm.get("data") or {}), **data} if behavior == "merge" else data
    else:
        raise KustomizeError(f"{where}: unknown behavior {behavior!r}")


def _apply_patch(directory, path, entry, resources) -> None:
    unknown = set(entry) - {"path", "patch"}
    if unknown:
        raise KustomizeError(f"{path}: patches: unsupported {', '.join(sorted(unknown))}")
    if "path" in entry:
        docs = load_yaml_documents(os.path.join(directory, entry["path"]))
        where = f"{path}: patch {entry['path']}"
    else:
        docs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
        where = f"{path}: inline patch"
    for patch in docs:
        if not isinstance(patch, dict) or "kind" not in patch:
            raise KustomizeError(f"{where}: only strategic-merge patches are supported")
        name = (patch.get("metadata") or {}).get("name")
        matches = [
            r
            for r in resources
            if r.get("kind") == patch["kind"] and r.get("metadata", {}).get("name") == name
        ]
        if len(matches) != 1:
            raise KustomizeError(f"{where}: matches {len(matches)} resources {patch['kind']}/{name}")
        strategic_merge(matches[0], patch)


def _merge_key(field: str, items: list) -> str | None:
    if field in ("containers", "initContainers", "env", "volumes", "imagePullSecrets"):
        return "name"
    if field == "volumeMounts":
        return "mountPath"
    if field == "ports" and items and isinstance(items[0], dict):
        return "containerPort" if "containerPort" in items[0] else "port"
    return None


def strategic_merge(target: dict, patch: dict) -> dict:
    """Merges `patch` into `target` in place (the strategic-merge subset described above)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list):
            merge_key = _merge_key(key, value or target[key])
            if merge_key is None:
                target[key] = copy.deepcopy(value)
                continue
            merged = list(target[key])
            new_items = []
            for item in value:
                same = [i for i, old in enumerate(merged) if old.get(merge_key) == item.get(merge_key)]
                if same:
                    strategic_merge(merged[same[0]], item)
                else:
                    new_items.append(copy.deepcopy(item))
            # kustomize (kyaml) puts the patch's new items first.
            target[key] = new_items + merged
        else:
            target[key] = copy.deepcopy(value)
    return target


_IMAGE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[^:/@]+))?(?:@(?P<digest>.+))?$")


def _retag(image: str, rule: dict) -> str:
    m = _IMAGE.match(image)
    if not m or m.group("name") != rule["name"]:
        return image
    name = rule.get("newName", m.group("name"))
    if rule.get("digest"):
        return f"{name}@{rule['digest']}"
    tag = rule.get("newTag", m.group("tag"))
    digest = m.group("digest")
    if "newTag" in rule:
        digest = None
    out = name
    if tag:
        out += f":{tag}"
    if digest:
        out += f"@{digest}"
    return out


def _rename_configmap_refs(spec: dict, renames: dict[str, str]) -> None:
    def rename(holder: dict | None) -> None:
        if holder and holder.get("name") in renames:
            holder["name"] = renames[holder["name"]]

    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for source in c.get("envFrom") or []:
            rename(source.get("configMapRef"))
        for env in c.get("env") or []:
            rename((env.get("valueFrom") or {}).get("configMapKeyRef"))
    for volume in spec.get("volumes") or []:
        rename(volume.get("configMap"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            rename(source.get("configMap"))
