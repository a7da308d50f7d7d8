"""Small workload manifests for the e2e tests (the stand-in node runs no image: any will do)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

IMAGE = "registry.example/app:1"
# The label a namespace opts in to injection with (deploy/base/webhook.yaml).
INJECTION_LABEL = "sidecar-injector"
# The annotation a pod asks for mesher with (docs: DESIGN.md, section 2).
ASK = {"sidecar.mesher.io/inject": "yes"}
# deploy/'s namespace and template ConfigMap (its webhook configurations name both).
INJECTOR_NAMESPACE = "mesher-system"
TEMPLATE_CONFIGMAP = "mesher-sidecar-template"


def container(name: str = "app", **fields: Any) -> Json:
    return {"name": name, "image": IMAGE, **fields}


def native_sidecar(name: str = "mesher") -> Json:
    return container(name, restartPolicy="Always")


def pod_template(
    labels: dict[str, str],
    *,
    containers: list[Json] | None = None,
    init_containers: list[Json] | None = None,
    annotations: dict[str, str] | None = None,
    restart_policy: str = "Always",
) -> Json:
    spec: Json = {
        "containers": containers or [container()],
        "restartPolicy": restart_policy,
        # the stand-in node's apps stop within a second anyway; keep the bound short
        "terminationGracePeriodSeconds": 5,
    }
    if init_containers:
        spec["initContainers"] = init_containers
    metadata: Json = {"labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec}


def deployment(name: str, *, replicas: int = 1, **template: Any) -> Json:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod_template(labels, **template),
        },
    }


def statefulset(name: str, *, replicas: int = 1, **template: Any) -> Json:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": pod_template(labels, **template),
        },
    }


def daemonset(name: str, **template: Any) -> Json:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"matchLabels": labels}, "template": pod_template(labels, **template)},
    }


def job(name: str, **template: Any) -> Json:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": pod_template({"app": name}, restart_policy="Never", **template),
        },
    }


def pod(name: str, **template: Any) -> Json:
    shape = pod_template({"app": name}, **template)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **shape["metadata"]},
        "spec": shape["spec"],
    }


def service(name: str, *, port: int = 80) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]},
    }


def container_names(pod: Json) -> list[str]:
    return [c["name"] for c in pod["spec"]["containers"]]


def template_configmap(text: str, *, name: str = TEMPLATE_CONFIGMAP) -> Json:
    """A template ConfigMap holding `text` as its default template (key template.yaml)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"template.yaml": text},
    }
