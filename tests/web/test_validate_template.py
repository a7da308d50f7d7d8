"""/validate-template over real HTTPS with the ConfigMap reviews a real API server sent
(CREATE, UPDATE, DELETE of mesher-sidecar-template): the reload's own validation, at
`kubectl apply` time."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import structlog

from injector.core.store import TemplateStore
from injector.core.template_review import review_template
from tests.support.helpers import DEFAULT_TEMPLATE, SHIPPED_IMAGE, admission_fixture
from tests.support.servers import Running

GOOD = DEFAULT_TEMPLATE.read_text()


async def validate(running: Running, review: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with running.session.post(
        running.url + "/validate-template?timeout=5s", json=review
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def update_with(text: str) -> dict[str, Any]:
    review = copy.deepcopy(admission_fixture("configmap-update"))
    review["request"]["object"]["data"]["template.yaml"] = text
    return review


async def test_the_recorded_create_and_update_are_allowed(running: Running) -> None:
    for name in ("configmap-create", "configmap-update"):
        review = admission_fixture(name)
        status, answer = await validate(running, review)
        assert status == 200
        response = answer["response"]
        assert response["uid"] == review["request"]["uid"]
        assert response["allowed"] is True
        assert "warnings" not in response
        assert answer["apiVersion"] == review["apiVersion"]


BROKEN = {
    "invalid YAML": ("version: [broken\n", "not valid YAML"),
    "an unknown variable": (
        GOOD.replace("{{ values.appId }}", "{{ values.nope }}"),
        "unknown variable {{ values.nope }}",
    ),
    "a container without an image": (
        GOOD.replace('    image: "{{ values.image }}"\n', ""),
        "containers[mesher] needs an image",
    ),
    "an integer key": (
        GOOD.replace("memory: 256Mi", "1: 256Mi"),
        "key 1 at containers[0].resources.limits must be a string",
    ),
    "an unknown field": (GOOD.replace("    resources:\n", "    resource:\n"), "resource"),
    "an image the runtime refuses": (
        GOOD.replace(f"image: {SHIPPED_IMAGE}", "image: Servicecomb/Mesher Sidecar:1.6.3"),
        "containers[mesher]: image 'Servicecomb/Mesher Sidecar:1.6.3' is not a valid image "
        "reference",
    ),
    "an image with spaces around it": (
        GOOD.replace(f"image: {SHIPPED_IMAGE}", f"image: ' {SHIPPED_IMAGE} '"),
        f"image ' {SHIPPED_IMAGE} ' is not a valid image reference",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
async def test_an_edit_the_reload_refuses_is_denied_with_its_reasons(
    running: Running, name: str
) -> None:
    text, needle = BROKEN[name]
    reload = TemplateStore().offer(text, source="test")
    assert reload.result == "rejected"  # the reload refuses it...
    with structlog.testing.capture_logs() as logs:
        status, answer = await validate(running, update_with(text))
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False  # ...and so does kubectl apply
    message = response["status"]["message"]
    assert message.startswith("the mesher sidecar template in mesher-sidecar-template is invalid")
    assert needle in message
    assert needle in reload.error
    (line,) = [e for e in logs if e["event"] == "template_review"]
    assert line["allowed"] is False
    assert line["problems"] >= 1


async def test_a_configmap_without_the_template_key_is_denied(running: Running) -> None:
    review = admission_fixture("configmap-update")
    review["request"]["object"]["data"] = {"other.yaml": GOOD}
    _, answer = await validate(running, review)
    assert answer["response"]["allowed"] is False
    assert "the ConfigMap has no key 'template.yaml'" in answer["response"]["status"]["message"]


@pytest.mark.parametrize(
    ("image", "what"),
    [
        ("servicecomb/mesher-sidecar:latest", "is tagged latest"),
        ("servicecomb/mesher-sidecar", "has no tag"),
        ("registry:5000/mesher", "has no tag"),
    ],
)
async def test_a_floating_image_is_allowed_with_a_warning(
    running: Running, image: str, what: str
) -> None:
    text = GOOD.replace(f"image: {SHIPPED_IMAGE}", f"image: {image}")
    _, answer = await validate(running, update_with(text))
    response = answer["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert f"container mesher: image {image!r} {what}" in warning


async def test_a_digest_pinned_image_gets_no_warning(running: Running) -> None:
    digest = "servicecomb/mesher-sidecar@sha256:" + "a" * 64
    text = GOOD.replace(f"image: {SHIPPED_IMAGE}", f"image: {digest}")
    _, answer = await validate(running, update_with(text))
    assert answer["response"]["allowed"] is True
    assert "warnings" not in answer["response"]


async def test_dropping_a_discovery_type_is_allowed_with_a_warning(running: Running) -> None:
    pilot = GOOD.index("  # Istio Pilot:")
    text = GOOD[:pilot]
    review = update_with(text)
    review["request"]["oldObject"]["data"]["template.yaml"] = GOOD
    _, answer = await validate(running, review)
    response = answer["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning == "discovery type(s) pilot removed: pods that ask for them will be denied"


async def test_delete_is_allowed_with_a_warning(running: Running) -> None:
    review = admission_fixture("configmap-delete")
    _, answer = await validate(running, review)
    response = answer["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert "running injectors keep serving their last good template" in warning


async def test_another_configmap_is_allowed_untouched(running: Running) -> None:
    review = update_with("version: [broken\n")
    review["request"]["name"] = "unrelated"
    review["request"]["object"]["metadata"]["name"] = "unrelated"
    review["request"]["oldObject"]["metadata"]["name"] = "unrelated"
    _, answer = await validate(running, review)
    assert answer["response"] == {"uid": review["request"]["uid"], "allowed": True}


async def test_a_body_that_is_not_a_review_gets_400(running: Running) -> None:
    async with running.session.post(
        running.url + "/validate-template",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]


def test_only_the_configured_namespace_is_judged() -> None:
    raw = json.dumps(update_with("version: [broken\n")).encode()
    assert not json.loads(
        review_template(raw, namespace="mesher-system", key="template.yaml").body
    )["response"]["allowed"]
    other = review_template(raw, namespace="elsewhere", key="template.yaml")
    assert json.loads(other.body)["response"]["allowed"] is True


def test_a_huge_broken_template_gets_a_bounded_denial() -> None:
    text = "containers:\n" + "".join(f"- name: C{n}\n" for n in range(20_000))
    raw = json.dumps(update_with(text)).encode()
    result = review_template(raw, key="template.yaml")
    assert not result.allowed
    assert len(result.body) < 4096
    assert "more" in json.loads(result.body)["response"]["status"]["message"]
