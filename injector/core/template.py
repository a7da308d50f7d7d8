"""The sidecar template: parse, revision, compile, render (pure). The checks are in
template_checks, what a render makes in sidecar.

A template is YAML parsed once. Variables are written ``{{ name }}`` inside string
values and substituted after parsing, so a value can never change the structure.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from injector.core.images import reference_problem
from injector.core.names import TEMPLATE_SUFFIX
from injector.core.sidecar import (
    CONTEXT_ATTRIBUTES,
    RenderCache,
    RenderContext,
    Sidecar,
    sample_context,
    with_files,
)
from injector.core.template_checks import DNS_LABEL, VARIABLE, check


class TemplateError(ValueError):
    """The template is invalid; `problems` lists every reason found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid template: " + "; ".join(problems))


class SidecarImage(NamedTuple):
    where: str  # containers[NAME], after "discovery type 'T': " when the template has types
    container: str
    image: str


# A compiled node renders itself from the variables of one request.
Renderer = Callable[[Mapping[str, str]], Any]


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed, validated, immutable template. Swap references to it, never mutate it."""

    version: str
    revision: str
    default_discovery: str | None
    discovery_types: tuple[str, ...]
    sidecar_names: frozenset[str]
    values: Mapping[str, str]
    native_sidecars: bool
    _base: Renderer
    _fragments: Mapping[str, Renderer]
    _pod_key: Callable[[RenderContext], tuple[str, ...]]  # the render key of a context
    renders: RenderCache = field(default_factory=RenderCache, compare=False)

    def variables(self, ctx: RenderContext) -> dict[str, str]:
        variables = dict(self.values)
        for name, attr in CONTEXT_ATTRIBUTES.items():
            variables[name] = getattr(ctx, attr)
        variables["template.revision"] = self.revision
        return variables

    def render_key(self, ctx: RenderContext) -> tuple[str, ...]:
        """What a render depends on: the discovery type and the pod-derived variables the
        template uses (values and the revision are the template's own)."""
        return self._pod_key(ctx)

    def images(self) -> list[SidecarImage]:
        """Every sidecar container's image as rendered for the sample pod, per discovery
        type (what the reload checks and the validating webhook warns about)."""
        found: list[SidecarImage] = []
        for discovery_type in self.discovery_types or ("",):
            sidecar = self.render(sample_context(discovery_type))
            prefix = f"discovery type {discovery_type!r}: " if discovery_type else ""
            for group, containers in (
                ("containers", sidecar.containers),
                ("initContainers", sidecar.init_containers),
            ):
                for container in containers:
                    where = f"{prefix}{group}[{container.get('name')}]"
                    found.append(
                        SidecarImage(
                            where, str(container.get("name")), str(container.get("image", ""))
                        )
                    )
        return found

    def render(self, ctx: RenderContext) -> Sidecar:
        """Render for one pod. `ctx.discovery_type` must be one of `discovery_types` (or
        empty when the template declares none). The result is shared: read-only."""
        key = self.render_key(ctx)
        cached = self.renders.get(key)
        if cached is not None:
            return cached
        sidecar = self._render(ctx.discovery_type, self.variables(ctx))
        self.renders.put(key, sidecar, sidecar.encoded.size)
        return sidecar

    def _render(self, discovery_type: str, variables: dict[str, str]) -> Sidecar:
        base: dict[str, Any] = self._base(variables)
        containers: list[dict[str, Any]] = base.get("containers", [])
        volumes: list[dict[str, Any]] = base.get("volumes", [])
        if discovery_type:
            fragment: dict[str, Any] = self._fragments[discovery_type](variables)
            for container in containers:
                if fragment.get("env"):
                    container["env"] = [*container.get("env", []), *fragment["env"]]
                if fragment.get("volumeMounts"):
                    container["volumeMounts"] = [
                        *container.get("volumeMounts", []),
                        *fragment["volumeMounts"],
                    ]
            volumes = [*volumes, *fragment.get("volumes", [])]
            if containers and fragment.get("image"):
                containers[0]["image"] = fragment["image"]
            if containers and fragment.get("files"):
                containers[0] = with_files(containers[0], fragment["files"])
        return Sidecar(
            containers=containers,
            init_containers=base.get("initContainers", []),
            init_containers_first=base.get("initContainersPosition", "first") == "first",
            volumes=volumes,
            image_pull_secrets=base.get("imagePullSecrets", []),
            app_env=base.get("appEnv", []),
        )


def revision_of(document: object) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_template(text: str) -> Template:
    """Parse and validate; raise TemplateError with every problem found. Nothing else
    escapes: a template of any shape that cannot be loaded is a TemplateError."""
    try:
        return _load(text)
    except TemplateError:
        raise
    except Exception as exc:  # a shape the checks did not foresee must not escape
        raise TemplateError([f"cannot load the template: {type(exc).__name__}: {exc}"]) from exc


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loading that refuses a key given twice in one mapping (YAML says keys are
    unique; PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            if isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load(text: str) -> Template:
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise TemplateError([f"not valid YAML: {_one_line(str(exc))}"]) from exc
    if not isinstance(document, dict):
        raise TemplateError(["the template must be a YAML mapping"])
    problems, values, used = check(document)
    if problems:
        raise TemplateError(problems)

    discovery: dict[str, Any] = document.get("discovery") or {}
    base = {
        k: v
        for k, v in document.items()
        if k not in ("discovery", "values", "defaults", "nativeSidecars")
    }
    defaults = document.get("defaults") or {}
    version = document.get("version")
    template = Template(
        version="" if version is None else str(version),
        revision=revision_of(document),
        default_discovery=defaults.get("discoveryType"),
        discovery_types=tuple(discovery),
        sidecar_names=frozenset(
            c["name"] for c in [*document["containers"], *(document.get("initContainers") or [])]
        ),
        values=values,
        native_sidecars=document.get("nativeSidecars") is True,
        _base=_compile(base),
        _fragments={name: _compile(fragment or {}) for name, fragment in discovery.items()},
        _pod_key=_key_of(used),
    )
    for discovery_type in template.discovery_types or ("",):
        try:
            template.render(sample_context(discovery_type))  # serialises it: Sidecar.encoded
        except Exception as exc:  # a template that cannot render must never activate
            raise TemplateError(
                [f"rendering discovery type {discovery_type!r} failed: {exc}"]
            ) from exc
    problems = []
    for image in template.images():
        problem = reference_problem(image.image)
        if problem is not None:
            problems.append(f"{image.where}: {problem}")
    if problems:
        raise TemplateError(list(dict.fromkeys(problems)))
    return template


def _key_of(used: set[str]) -> Callable[[RenderContext], tuple[str, ...]]:
    """The render key: the discovery type, then the pod-derived variables used."""
    fields = RenderContext._fields
    indexes = [
        fields.index(CONTEXT_ATTRIBUTES[name])
        for name in sorted(used)
        if name in CONTEXT_ATTRIBUTES and name != "discovery.type"
    ]
    if not indexes:
        return lambda ctx: (ctx.discovery_type,)
    # itemgetter of two or more indexes: a tuple, made in C
    return operator.itemgetter(fields.index("discovery_type"), *indexes)


def template_name(key: str) -> str | None:
    """`NAME.yaml` -> NAME (`template.yaml` is the default, named "template"); None for a
    key that is no template (another suffix). A NAME must be a DNS label."""
    if not key.endswith(TEMPLATE_SUFFIX):
        return None
    return key[: -len(TEMPLATE_SUFFIX)]


def valid_template_name(name: str) -> bool:
    return bool(DNS_LABEL.match(name))


def template_in(data: object, key: str) -> str:
    """The template text under `key` of a ConfigMap's `data`, or TemplateError: what a
    reload and the validating webhook both read."""
    text = data.get(key) if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise TemplateError([f"the ConfigMap has no key {key!r}"])
    return text


def _one_line(text: str) -> str:
    """A YAML error on one line, without PyYAML's "<unicode string>" (the caller names
    the file)."""
    return " ".join(text.replace('in "<unicode string>", ', "").split())


def _compile(node: object) -> Renderer:
    """Turn a parsed node into a function of the variables that builds a fresh copy."""
    if isinstance(node, dict):
        items = [(key, _compile(value)) for key, value in node.items()]
        return lambda variables: {key: render(variables) for key, render in items}
    if isinstance(node, list):
        children = [_compile(value) for value in node]
        return lambda variables: [render(variables) for render in children]
    if isinstance(node, str) and VARIABLE.search(node):
        pieces = VARIABLE.split(node)  # literal, name, literal, name, ..., literal
        literals = pieces[0::2]
        names = pieces[1::2]

        def substitute(variables: Mapping[str, str]) -> str:
            out = [literals[0]]
            for name, literal in zip(names, literals[1:], strict=True):
                out.append(variables[name])
                out.append(literal)
            return "".join(out)

        return substitute
    return lambda _variables: node
