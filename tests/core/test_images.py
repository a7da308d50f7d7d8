"""Image references as the container runtime parses them (distribution/reference)."""

from __future__ import annotations

import pytest

from injector.core.images import Reference, drift_warning, parse, reference_problem
from injector.core.template import TemplateError, load_template
from tests.support.helpers import DEFAULT_TEMPLATE, SHIPPED_IMAGE

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        (
            "servicecomb/mesher-sidecar:1.6.3",
            Reference("", "servicecomb/mesher-sidecar", "1.6.3", ""),
        ),
        ("mesher", Reference("", "mesher", "", "")),
        ("registry:5000/mesher", Reference("registry:5000", "mesher", "", "")),
        (
            "localhost/a/b_c__d.e-f--g:v_1.2-rc",
            Reference("localhost", "a/b_c__d.e-f--g", "v_1.2-rc", ""),
        ),
        ("quay.io/x/y@" + DIGEST, Reference("quay.io", "x/y", "", DIGEST)),
        ("Registry.Example/x:1@" + DIGEST, Reference("Registry.Example", "x", "1", DIGEST)),
        ("[::1]:5000/x:1", Reference("[::1]:5000", "x", "1", "")),
        (
            "Servicecomb/mesher-sidecar:1.6.3",
            Reference("Servicecomb", "mesher-sidecar", "1.6.3", ""),
        ),
    ],
)
def test_references_the_runtime_takes_are_parsed(image: str, reference: Reference) -> None:
    assert parse(image) == reference
    assert reference_problem(image) is None


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("Servicecomb/Mesher Sidecar:1.6.3", "repository 'Mesher Sidecar' must be lowercase"),
        (" servicecomb/mesher-sidecar:1.6.3 ", "tag '1.6.3 ' is not"),
        (" servicecomb/mesher-sidecar", "repository ' servicecomb/mesher-sidecar' must be"),
        ("servicecomb/Mesher:1", "repository 'servicecomb/Mesher' must be lowercase"),
        ("mesher:", "tag '' is not"),
        ("mesher:-1", "tag '-1' is not"),
        ("mesher:" + "1" * 129, "is not [A-Za-z0-9_]"),
        ("mesher:é", "tag 'é' is not"),
        ("mesher@sha256:abc", "digest 'sha256:abc' is not ALGORITHM:HEX"),
        ("a..b/mesher", "registry 'a..b' is not a host name"),
        ("mesher//x", "repository 'mesher//x' must be"),
        ("mesher-/x", "repository 'mesher-/x' must be"),
        (":1", "it has no name"),
        ("x/" + "a" * 300, "longer than 255"),
    ],
)
def test_references_the_runtime_refuses_say_why(image: str, why: str) -> None:
    problem = reference_problem(image)
    assert problem is not None
    assert problem.startswith(f"image {image!r} is not a valid image reference: ")
    assert why in problem


@pytest.mark.parametrize(
    ("image", "warning"),
    [
        ("mesher", "image 'mesher' has no tag"),
        ("registry:5000/mesher", "image 'registry:5000/mesher' has no tag"),
        ("mesher:latest", "image 'mesher:latest' is tagged latest"),
        ("mesher@" + DIGEST, None),
        ("mesher:latest@" + DIGEST, None),
        ("mesher:1.6.3", None),
        ("Not An Image", None),  # reference_problem's to say
    ],
)
def test_a_floating_image_is_named(image: str, warning: str | None) -> None:
    assert drift_warning(image) == warning


def test_a_template_whose_image_the_runtime_refuses_is_refused_and_says_where() -> None:
    text = DEFAULT_TEMPLATE.read_text()
    bad = text.replace(f"image: {SHIPPED_IMAGE}", "image: Servicecomb/Mesher Sidecar:1.6.3")
    assert bad != text
    with pytest.raises(TemplateError) as info:
        load_template(bad)
    (problem,) = info.value.problems
    assert problem.startswith(
        "discovery type 'sc': containers[mesher]: image 'Servicecomb/Mesher Sidecar:1.6.3' "
        "is not a valid image reference"
    )


def test_a_discovery_types_own_image_is_checked_too() -> None:
    text = DEFAULT_TEMPLATE.read_text()
    bad = text.replace('image: "{{ values.pilotImage }}"', 'image: "{{ values.pilotImage }} "')
    assert bad != text
    with pytest.raises(TemplateError) as info:
        load_template(bad)
    (problem,) = info.value.problems
    assert problem.startswith("discovery type 'pilot': containers[mesher]: image ")
