"""Render deploy/k8s the way `kubectl apply -k` does, for the tests (no kubectl or kustomize here).

Only the part of kustomize that deploy/k8s uses is implemented, and a kustomization using any
other field is refused (KustomizeError), so the tests can never pass over something this
renderer would silently ignore:

- `resources`: YAML files (several documents each) and folders holding a kustomization.yaml,
  rendered in order, depth first;
- `namespace`: set on every namespaced object (cluster-scoped kinds keep none);
- `labels` with `pairs` (added to every object's metadata.labels; `includeSelectors` and
  `includeTemplates` are refused, the manifests spell their selectors out);
- `images`: `name` -> `newName` / `newTag` / `digest` in every pod template's containers.

Semantics follow the kustomize reference (kubectl.docs.kubernetes.io, "Kustomization File").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
# libyaml's loader when PyYAML has it (about 10x faster), else the pure-Python one.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

KUSTOMIZATION = "kustomization.yaml"
_KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "images"}
# Kinds without a namespace among those the manifests use (the renderer refuses to guess).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ClusterIssuer",
    "StorageClass",
    "PersistentVolume",
}
_POD_TEMPLATE_PATHS = (
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
)


class KustomizeError(Exception):
    """A kustomization this renderer cannot render exactly as kustomize would."""


def render(folder: Path | str) -> list[Resource]:
    """Every object `kubectl apply -k folder` would apply, in order."""
    folder = Path(folder)
    path = folder / KUSTOMIZATION
    if not path.is_file():
        raise KustomizeError(f"{folder}: no {KUSTOMIZATION}")
    spec = yaml.load(path.read_text(), Loader=_Loader) or {}  # noqa: S506 (a safe loader)
    unknown = set(spec) - _KNOWN
    if unknown:
        raise KustomizeError(f"{path}: fields not supported here: {sorted(unknown)}")
    if spec.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{path}: kind must be Kustomization")

    objects: list[Resource] = []
    for entry in spec.get("resources", []):
        target = (folder / entry).resolve()
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(load_documents(target))
        else:
            raise KustomizeError(f"{path}: resource {entry} not found")

    for item in spec.get("labels", []):
        extra = set(item) - {"pairs"}
        if extra:
            raise KustomizeError(f"{path}: labels fields not supported here: {sorted(extra)}")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(item["pairs"])
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    _check_unique(objects, path)
    return objects


def load_documents(path: Path) -> list[Resource]:
    docs = [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise KustomizeError(f"{path}: every document needs apiVersion and kind")
    return [copy.deepcopy(d) for d in docs]


def pod_specs(obj: Resource) -> Iterator[dict[str, Any]]:
    """The pod spec(s) inside a workload object (Deployment, Job, CronJob, ...)."""
    for route in _POD_TEMPLATE_PATHS:
        node: Any = obj
        for key in route:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            yield node


def _set_image(obj: Resource, rule: dict[str, str]) -> None:
    unknown = set(rule) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images fields not supported here: {sorted(unknown)}")
    for pod in pod_specs(obj):
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            name, tag = _split_image(container["image"])
            if name != rule["name"]:
                continue
            name = rule.get("newName", name)
            if "digest" in rule:
                container["image"] = f"{name}@{rule['digest']}"
            else:
                tag = rule.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image.split("@", 1)[0], None
    head, _, last = image.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{head}/{last}" if head else last), tag
    return image, None


def _check_unique(objects: list[Resource], where: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        meta = obj.get("metadata", {})
        key = (
            obj["apiVersion"].split("/")[0],
            obj["kind"],
            meta.get("namespace", ""),
            meta.get("name", ""),
        )
        if key in seen:
            raise KustomizeError(f"{where}: {obj['kind']}/{meta.get('name')} defined twice")
        seen.add(key)
