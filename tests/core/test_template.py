from __future__ import annotations

import pytest

from injector.core.sidecar import sample_context
from injector.core.template import Template, TemplateError, load_template
from tests.support.helpers import (
    DEFAULT_TEMPLATE,
    KUBE_API,
    SHIPPED_IMAGE,
    SHIPPED_VERSION,
    assert_pilot_configured,
    pilot_chassis,
)

MINIMAL = (
    'version: "1.6.3"\ncontainers:\n- name: mesher\n  image: servicecomb/mesher-sidecar:1.6.3\n'
)


def problems_of(text: str) -> str:
    with pytest.raises(TemplateError) as info:
        load_template(text)
    return str(info.value)


def test_default_template_declares_sc_and_pilot_with_sc_default(template: Template) -> None:
    assert template.discovery_types == ("sc", "pilot")
    assert template.default_discovery == "sc"
    assert template.version == SHIPPED_VERSION
    assert template.sidecar_names == frozenset({"mesher"})


def test_default_template_carries_the_mesher_facts(template: Template) -> None:
    sidecar = template.render(sample_context("sc"))
    (mesher,) = sidecar.containers
    assert [p["containerPort"] for p in mesher["ports"]] == [30101, 40101, 30102]
    env = {e["name"]: e for e in mesher["env"]}
    assert set(env) >= {
        "SERVICE_NAME",
        "VERSION",
        "APP_ID",
        "SERVICE_PORTS",
        "CSE_REGISTRY_ADDR",
        "POD_NAME",
        "POD_NAMESPACE",
        "INSTANCE_IP",
    }
    assert env["INSTANCE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["CSE_REGISTRY_ADDR"]["value"] == "http://service-center.servicecomb:30100"
    assert mesher["image"] == SHIPPED_IMAGE
    assert mesher["command"] == ["sh", "/opt/mesher/start.sh"]  # as the image runs it
    pilot = template.render(sample_context("pilot")).containers[0]
    assert_pilot_configured(pilot, "istio-pilot.istio-system:15010")
    chassis = pilot_chassis(pilot)["cse"]
    # mesher's own ports (conf/chassis.yaml), kept when chassis.yaml is replaced
    assert chassis["protocols"]["http"]["listenAddress"].endswith(":30101")
    assert chassis["protocols"]["grpc"]["listenAddress"].endswith(":40101")


def test_variables_are_substituted_inside_strings_only(template: Template) -> None:
    ctx = sample_context("sc")._replace(service_name='x"\n- name: evil')
    (mesher,) = template.render(ctx).containers
    env = {e["name"]: e.get("value") for e in mesher["env"]}
    assert env["SERVICE_NAME"] == 'x"\n- name: evil'
    assert [c["name"] for c in template.render(ctx).containers] == ["mesher"]


def test_renders_are_cached_by_the_variables_the_template_uses(template: Template) -> None:
    first = template.render(sample_context("sc"))
    # pod.name is not used by the default template: a pod of another name shares the render.
    assert template.render(sample_context("sc")._replace(pod_name="other")) is first
    other = template.render(sample_context("sc")._replace(service_name="other"))
    assert other is not first
    assert {"name": "SERVICE_NAME", "value": "other"} in other.containers[0]["env"]
    assert {"name": "SERVICE_NAME", "value": "sample"} in first.containers[0]["env"]
    pilot = template.render(sample_context("pilot"))
    assert pilot is not first
    assert pilot.containers[0]["image"].endswith("-pilot")


def test_the_render_cache_is_bounded_in_bytes(template: Template) -> None:
    from injector.core.limits import RENDER_CACHE_BYTES

    one = template.render(sample_context("sc")).encoded.size
    for n in range(3 * RENDER_CACHE_BYTES // one):
        template.render(sample_context("sc")._replace(service_name=f"s{n}" + "x" * 200))
    cache = template.renders
    assert 0 < cache.size <= RENDER_CACHE_BYTES
    assert len(cache) < 3 * RENDER_CACHE_BYTES // one
    # the most recent renders are the ones kept
    last = sample_context("sc")._replace(
        service_name=f"s{3 * RENDER_CACHE_BYTES // one - 1}" + "x" * 200
    )
    assert cache.get(template.render_key(last)) is not None


def test_the_recorded_configmap_template_is_valid() -> None:
    import json

    data = json.loads((KUBE_API / "list.json").read_text())["items"][0]["data"]["template.yaml"]
    template = load_template(data)
    assert template.version == "1.6.3"
    assert template.discovery_types == ()
    assert template.render(sample_context("")).containers[0]["image"].endswith(":1.6.3")


def test_revision_depends_on_content_not_formatting() -> None:
    a = load_template(MINIMAL)
    b = load_template(
        "# a comment\ncontainers: [{image: 'servicecomb/mesher-sidecar:1.6.3', name: mesher}]\n"
        "version: '1.6.3'\n"
    )
    c = load_template(MINIMAL.replace("1.6.3\n", "1.6.4\n"))
    assert a.revision == b.revision
    assert a.revision != c.revision
    assert len(a.revision) == 12


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: [broken\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("version: x\n", "containers must be a non-empty list"),
        ("containers:\n- image: x\n", "needs a name"),
        ("containers:\n- name: Bad_Name\n  image: x\n", "DNS label"),
        ("containers:\n- name: m\n", "containers[m] needs an image"),
        (
            "containers:\n- name: m\n  image: x\n- name: m\n  image: y\n",
            "'m' is used more than once",
        ),
        ("containers:\n- name: m\n  image: x\n  ports:\n  - containerPort: '30101'\n", "integer"),
        (
            "containers:\n- name: m\n  image: x\ncontainer: []\n",
            "unknown top-level key 'container'",
        ),
        ("containers:\n- name: m\n  image: '{{ nope }}'\n", "unknown variable {{ nope }}"),
        (
            "containers:\n- name: m\n  image: '{{ values.img }}'\n",
            "unknown variable {{ values.img }}",
        ),
        (
            "containers:\n- name: m\n  image: x\ndiscovery:\n  sc: {}\ndefaults:\n  discoveryType: pilot\n",
            "defaults.discoveryType 'pilot' is not a key of discovery",
        ),
        (
            "containers:\n- name: m\n  image: x\ndiscovery:\n  sc: {}\n",
            "defaults.discoveryType is required",
        ),
        (
            "containers:\n- name: m\n  image: x\ndiscovery:\n  sc:\n    ports: []\ndefaults: {discoveryType: sc}\n",
            "discovery.sc has unknown key 'ports'",
        ),
        ("containers:\n- name: m\n  image: x\ninitContainersPosition: middle\n", "first' or 'last"),
        (
            "containers:\n- name: m\n  image: x\nvolumes:\n- name: v\n- name: v\n",
            "'v' is used more than once",
        ),
    ],
)
def test_invalid_templates_are_rejected_with_the_reason(text: str, needle: str) -> None:
    assert needle in problems_of(text)


def test_all_problems_are_reported_together() -> None:
    message = problems_of("containers:\n- name: m\ncolour: red\n")
    assert "needs an image" in message
    assert "unknown top-level key 'colour'" in message


def test_values_are_usable_as_variables() -> None:
    text = MINIMAL.replace(
        "servicecomb/mesher-sidecar:1.6.3", "'{{ values.registry.host }}/mesher'"
    )
    text += "values:\n  registry:\n    host: reg.local\n"
    template = load_template(text)
    assert template.render(sample_context("")).containers[0]["image"] == "reg.local/mesher"


def test_default_template_file_is_what_make_run_serves() -> None:
    assert load_template(DEFAULT_TEMPLATE.read_text()).discovery_types == ("sc", "pilot")


PILOT_FILES = DEFAULT_TEMPLATE.read_text()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            ("address: grpc://{{ values.pilot }}", "address: grpc://{{ service.name }}"),
            "uses {{ service.name }}: files may use only values.*",
        ),
        (("/tmp/chassis.yaml: |", "tmp/chassis.yaml: |"), "must be an absolute path"),
        (("/tmp/chassis.yaml: |", "/tmp/../etc/chassis.yaml: |"), "must be an absolute path"),
        (("/tmp/chassis.yaml: |", "/tmp/$(x).yaml: |"), "must be an absolute path"),
        (
            ('    command: ["sh", "/opt/mesher/start.sh"]\n', ""),
            "needs the first container to declare its command",
        ),
        (('    image: "{{ values.pilotImage }}"', "    image: ''"), "image must be a non-empty"),
    ],
)
def test_files_and_images_of_a_discovery_type_are_validated(
    change: tuple[str, str], needle: str
) -> None:
    old, new = change
    assert old in PILOT_FILES
    assert needle in problems_of(PILOT_FILES.replace(old, new))


def test_file_text_is_escaped_for_the_kubelets_variable_expansion() -> None:
    text = PILOT_FILES.replace("appId: default", "appId: default\n  home: $(HOME)").replace(
        "          handler:", "          note: {{ values.home }}\n          handler:"
    )
    pilot = load_template(text).render(sample_context("pilot")).containers[0]
    env = {e["name"]: e["value"] for e in pilot["env"] if "value" in e}
    assert "note: $$(HOME)" in env["MESHER_INJECTOR_FILE_0"]
    assert pilot_chassis(pilot)["cse"]["note"] == "$(HOME)"


def test_a_pilot_pod_needs_no_object_in_its_namespace(template: Template) -> None:
    from injector.core.decide import decide
    from tests.support.helpers import admission_fixture

    outcome = decide(admission_fixture("client-pilot")["request"], template)
    assert outcome.decision == "injected"
    for op in outcome.operations():
        assert op["path"].startswith(("/spec/", "/metadata/annotations")), op["path"]
    volumes = [
        v
        for op in outcome.operations()
        if op["path"].startswith("/spec/volumes")
        for v in ([op["value"]] if isinstance(op["value"], dict) else op["value"])
    ]
    assert not [v for v in volumes if "configMap" in v or "secret" in v]
