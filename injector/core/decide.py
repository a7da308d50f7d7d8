"""A pod's admission request -> inject, skip or deny, with the patch (pure).

`decide` is the one decision function: the webhook and the manual `inject` command
both call it, so they always agree. It runs named steps in a fixed order; each returns
an Outcome (the decision: stop) or the value the next steps need (go on). The warnings
found on the way gather in one list that the steps append to.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from injector.core import annotations as ann
from injector.core.limits import (
    MAX_CONTAINERS,
    MAX_LOG_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_VARIABLE_CHARS,
    cap_warnings,
    clip,
)
from injector.core.names import DEFAULT_TEMPLATE_NAME, NEVER_INJECTED
from injector.core.outcomes import Outcome, Reason
from injector.core.patch import PatchConflict, build_patch
from injector.core.pods import (
    controller_of,
    declares_port,
    pod_shape_problem,
    service_name_of,
    service_version,
)
from injector.core.reviews import BadReview
from injector.core.sidecar import RenderContext, Sidecar, resources_problem
from injector.core.template import Template

NO_NAMED_TEMPLATES: Mapping[str, Template] = MappingProxyType({})
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def decide(
    request: Mapping[str, Any],
    template: Template | None,
    *,
    named: Mapping[str, Template] = NO_NAMED_TEMPLATES,
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
    pod_checked: bool = False,
) -> Outcome:
    """`template` is the default, `named` the named templates a pod may pick with the
    template annotation. Raises BadReview when the pod is not shaped like a Pod (never
    sent by an API server); `pod_checked` says pod_review's types already made sure."""
    pod = _pod_to_mutate(request, pod_checked)
    if isinstance(pod, Outcome):
        return pod
    metadata: Mapping[str, Any] = pod.get("metadata") or _EMPTY
    namespace = _namespace(request, metadata, excluded_namespaces)
    if isinstance(namespace, Outcome):
        return namespace
    # Only ours are read, each by its key (pod_shape_problem checked they are strings):
    # a pod may carry megabytes of other annotations, never copied.
    annotations: Mapping[str, Any] = metadata.get("annotations") or _EMPTY
    warnings = _requested(annotations)
    if isinstance(warnings, Outcome):
        return warnings
    spec: Mapping[str, Any] = pod["spec"]  # an object: pod_shape_problem
    name = annotations.get(ann.TEMPLATE, "").strip() or DEFAULT_TEMPLATE_NAME
    named_template = _named_template(name, template, named, warnings)
    if isinstance(named_template, Outcome):
        return named_template
    chosen = _injectable(named_template, spec, warnings)
    if isinstance(chosen, Outcome):
        return chosen
    discovery = _discovery_type(annotations, chosen, warnings)
    if isinstance(discovery, Outcome):
        return discovery
    ports = _service_ports(annotations, spec["containers"], warnings)
    if isinstance(ports, Outcome):
        return ports
    owner = controller_of(metadata)
    ctx = _render_context(metadata, namespace, owner, ports.text, discovery, warnings)
    if isinstance(ctx, Outcome):
        return ctx
    sidecar = _sidecar(annotations, chosen, ctx, owner, warnings)
    if isinstance(sidecar, Outcome):
        return sidecar
    patch = _patch(pod, sidecar, chosen.revision, warnings)
    if isinstance(patch, Outcome):
        return patch
    return Outcome(  # positional: made for every injection, keywords cost twice as much
        "injected",  # decision
        "requested",  # reason
        f"mesher sidecar injected (discovery {discovery or 'none'})",  # message
        cap_warnings(warnings),  # warnings
        patch,  # patch
        discovery,  # discovery_type
        ports.text,  # service_ports
        chosen.revision,  # revision
        name,  # template
    )


_NOT_A_POD_CREATE = Outcome(
    decision="skipped", reason="not-a-pod-create", message="only pod CREATE requests are mutated"
)
_NOT_REQUESTED = Outcome(
    decision="skipped", reason="not-requested", message=f"{ann.INJECT} is not yes"
)


def _skip(reason: Reason, message: str, warnings: list[str] | None = None) -> Outcome:
    return Outcome(
        decision="skipped", reason=reason, message=message, warnings=cap_warnings(warnings or [])
    )


def _deny(reason: Reason, message: str, warnings: list[str] | None = None) -> Outcome:
    return Outcome(
        decision="denied",
        reason=reason,
        message=clip(message, MAX_MESSAGE_CHARS),
        warnings=cap_warnings(warnings or []),
    )


def _pod_to_mutate(request: Mapping[str, Any], pod_checked: bool) -> Outcome | dict[str, Any]:
    """The pod of a pod CREATE; BadReview when it is not shaped like a Pod."""
    kind = request.get("kind")
    pod = request.get("object")
    if (
        not isinstance(kind, dict)
        or kind.get("kind") != "Pod"
        or request.get("operation") != "CREATE"
        or request.get("subResource")
        or not isinstance(pod, dict)
    ):
        return _NOT_A_POD_CREATE
    problem = "" if pod_checked else pod_shape_problem(pod)
    if problem:
        raise BadReview(f"request.object is not a valid Pod: {problem}")
    return pod


def _namespace(
    request: Mapping[str, Any], metadata: Mapping[str, Any], excluded: frozenset[str]
) -> Outcome | str:
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    if not isinstance(namespace, str):
        raise BadReview("request.namespace must be a string")
    if namespace in excluded:
        return _skip("excluded-namespace", f"namespace {namespace!r} is never injected")
    return namespace


def _requested(annotations: Mapping[str, Any]) -> Outcome | list[str]:
    """The warnings so far (the inject and failurePolicy annotations'), when the pod asks
    to be injected and is not already."""
    choice = ann.parse_inject(annotations)
    warnings = [choice.warning] if choice.warning else []
    if not choice.requested:
        return (
            _skip("not-requested", _NOT_REQUESTED.message, warnings) if warnings else _NOT_REQUESTED
        )
    if annotations.get(ann.STATUS) == ann.STATUS_INJECTED:
        return _skip("already-injected", f"{ann.STATUS} is {ann.STATUS_INJECTED}")
    policy_warning = ann.failure_policy_warning(annotations)
    if policy_warning:
        warnings.append(policy_warning)
    return warnings


def _named_template(
    name: str, default: Template | None, named: Mapping[str, Template], warnings: list[str]
) -> Outcome | Template | None:
    """The template the pod names (`name`): the default (None while none is loaded), a
    named one, or a denial naming the ones there are."""
    if name == DEFAULT_TEMPLATE_NAME:
        return default
    if name not in named:
        available = ", ".join([DEFAULT_TEMPLATE_NAME, *sorted(named)])
        return _deny(
            "unknown-template",
            f"{ann.TEMPLATE}={ann.quote(name)} names no template (available: {available})",
            warnings,
        )
    return named[name]


def _injectable(
    template: Template | None, spec: Mapping[str, Any], warnings: list[str]
) -> Outcome | Template:
    """`template`, unless the pod has its sidecar already, is on the host's network or
    has too many containers, or there is no template yet."""
    containers: tuple[dict[str, Any], ...] = (
        *spec["containers"],
        *(spec.get("initContainers") or ()),
    )
    if template is not None:
        sidecar_names = template.sidecar_names
        for container in containers:  # all objects: pod_shape_problem
            if container.get("name") in sidecar_names:
                names = {c.get("name") for c in containers}
                found = ", ".join(sorted(str(n) for n in names & sidecar_names))
                return _skip("already-injected", f"the pod already has sidecar container {found}")
    if spec.get("hostNetwork"):
        return _skip("host-network", "pods with hostNetwork: true are not injected")
    if template is None:
        return _deny(
            "no-template",
            "mesher-injector has no sidecar template loaded yet, so the pod cannot be "
            "injected; retry shortly or check the injector's /template",
        )
    if len(containers) > MAX_CONTAINERS:
        return _deny(
            "pod-too-large",
            f"the pod has {len(containers)} containers and init containers; mesher-injector "
            f"injects pods with at most {MAX_CONTAINERS}",
            warnings,
        )
    return template


def _discovery_type(
    annotations: Mapping[str, Any], template: Template, warnings: list[str]
) -> Outcome | str:
    """The pod's discovery type, else the template's default ('' for none)."""
    discovery = annotations.get(ann.DISCOVERY_TYPE, "").strip() or template.default_discovery or ""
    if discovery and discovery not in template.discovery_types:
        allowed = ", ".join(template.discovery_types) or "none: this template declares no types"
        return _deny(
            "unknown-discovery-type",
            f"{ann.DISCOVERY_TYPE}={ann.quote(discovery)} is not a known discovery type "
            f"(allowed: {allowed})",
            warnings,
        )
    return discovery


def _service_ports(
    annotations: Mapping[str, Any], app_containers: list[dict[str, Any]], warnings: list[str]
) -> Outcome | ann.ServicePorts:
    """The servicePorts annotation's ports; a port no container declares is a warning."""
    try:
        ports = ann.parse_service_ports(annotations)
    except ann.InvalidServicePorts as exc:
        return _deny("invalid-service-ports", str(exc), warnings)
    warnings += ports.warnings
    for port in ports.ports:
        if not declares_port(app_containers, port.port):
            warnings.append(
                f"{ann.SERVICE_PORTS}: port {port.port} is not declared by any container of the pod"
            )
    return ports


def _render_context(
    metadata: Mapping[str, Any],
    namespace: str,
    owner: tuple[str, str] | None,
    service_ports: str,
    discovery: str,
    warnings: list[str],
) -> Outcome | RenderContext:
    """The template's variables for this pod, each short enough for Kubernetes."""
    ctx = RenderContext(  # positional: a third of the cost of keywords, per admission
        str(metadata.get("name") or ""),  # pod_name
        namespace,  # pod_namespace
        service_name_of(metadata, owner),  # service_name
        service_version(metadata),  # service_version
        service_ports,  # service_ports
        discovery,  # discovery_type
    )
    if max(len(ctx.pod_name), len(namespace), len(ctx.service_name), len(ctx.service_version)) > (
        MAX_VARIABLE_CHARS
    ):
        for variable, value in (
            ("pod.name", ctx.pod_name),
            ("pod.namespace", ctx.pod_namespace),
            ("service.name", ctx.service_name),
            ("service.version", ctx.service_version),
        ):
            if len(value) > MAX_VARIABLE_CHARS:
                # The API server refuses such a name or label after admission anyway.
                return _deny(
                    "pod-too-large",
                    f"{variable} would be {len(value)} characters long (from the pod's name, "
                    f"namespace or labels); Kubernetes allows at most {MAX_VARIABLE_CHARS}",
                    warnings,
                )
    return ctx


def _sidecar(
    annotations: Mapping[str, Any],
    template: Template,
    ctx: RenderContext,
    owner: tuple[str, str] | None,
    warnings: list[str],
) -> Outcome | Sidecar:
    """The template rendered for this pod, native or classic and with the resources its
    annotations ask for."""
    native = ann.parse_native(annotations, default=template.native_sidecars)
    if native.warning:
        warnings.append(native.warning)
    try:
        resources = ann.parse_resources(annotations)
    except ann.InvalidResources as exc:
        return _deny("invalid-resources", str(exc), warnings)
    job = clip(owner[1], MAX_LOG_FIELD_CHARS) if owner and owner[0] == "Job" else ""
    if job and not native.native:
        warnings.append(
            f"this pod belongs to Job {job}: with a classic sidecar the Job never completes, "
            f'because mesher keeps running; set {ann.NATIVE_SIDECAR}: "yes" '
            "(native sidecars, Kubernetes 1.29+)"
        )
    sidecar = template.render(ctx)
    if resources or native.native != sidecar.native:
        sidecar = sidecar.for_pod(native=native.native, resources=resources)
    problem = resources_problem(sidecar) if resources else ""
    if problem:
        return _deny("invalid-resources", problem, warnings)
    return sidecar


def _patch(
    pod: Mapping[str, Any], sidecar: Sidecar, revision: str, warnings: list[str]
) -> Outcome | bytes:
    """The JSON Patch adding the sidecar and our annotations to the pod."""
    try:
        return build_patch(
            pod=pod,
            sidecar=sidecar,
            annotations={ann.STATUS: ann.STATUS_INJECTED, ann.TEMPLATE_REVISION: revision},
        )
    except PatchConflict as exc:
        return _deny("render-error", f"cannot inject the mesher sidecar: {exc}", warnings)
