"""injector.core.template_diff: a workload rendered by the webhook's own code under the live
template and a new one, and what would change in what injection adds."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonpatch
import yaml

from injector.core.manual import decide_pod, decider_for
from injector.core.sidecar import files_of, with_files
from injector.core.template import Template, load_template
from injector.core.template_diff import Change, Preview, changes, preview, render_block, summary
from tests.support.helpers import DEFAULT_TEMPLATE, SHIPPED_IMAGE, bump

GOOD = DEFAULT_TEMPLATE.read_text()
LIVE = load_template(GOOD)
ASK = {"sidecar.mesher.io/inject": "yes"}


def edited(change: Callable[[dict[str, Any]], None], text: str = GOOD) -> Template:
    document = yaml.safe_load(text)
    change(document)
    return load_template(yaml.safe_dump(document))


def deployment(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {"app": "web"},
                    "annotations": {**ASK, **(annotations or {})},
                },
                "spec": {
                    "containers": [{"name": "app", "image": "registry.example/app:1"}],
                    **spec,
                },
            }
        },
    }


def compare(
    doc: dict[str, Any],
    new: Template,
    *,
    live: Template = LIVE,
    named: dict[str, Template] | None = None,
    new_named: dict[str, Template] | None = None,
) -> Preview:
    return preview(
        doc,
        live=decider_for(live, named=named or {}),
        new=decider_for(new, named=new_named or {}),
        sidecar_names=live.sidecar_names,
        label="deployment/web -n shop",
    )


def test_a_new_mesher_version_changes_the_sidecars_image_and_nothing_else() -> None:
    found = compare(deployment(), load_template(bump(GOOD, "1.6.4")))

    assert found.verdict == "changed"
    assert found.changes == (
        Change("containers[mesher].image", SHIPPED_IMAGE, SHIPPED_IMAGE.replace("1.6.3", "1.6.4")),
    )
    assert render_block("deployment/web -n shop", found) == (
        "deployment/web -n shop\n"
        f"  containers[mesher].image: {SHIPPED_IMAGE} -> "
        f"{SHIPPED_IMAGE.replace('1.6.3', '1.6.4')}\n"
    )


def test_a_template_that_only_changes_its_comments_and_version_changes_no_sidecar() -> None:
    found = compare(deployment(), edited(lambda t: t.update(version="1.6.3-docs")))

    assert (found.verdict, found.changes) == ("unchanged", ())
    assert render_block("deployment/web -n shop", found) == "deployment/web -n shop\n  no change\n"


def test_env_ports_resources_app_env_volumes_and_pull_secrets_are_compared_by_name() -> None:
    def change(t: dict[str, Any]) -> None:
        mesher = t["containers"][0]
        mesher["env"] = [e for e in mesher["env"] if e["name"] != "APP_ID"]
        mesher["env"].append({"name": "LOG_LEVEL", "value": "debug"})
        mesher["ports"][0]["containerPort"] = 30111
        mesher["resources"]["limits"]["memory"] = "512Mi"
        t["appEnv"][0]["value"] = "http://127.0.0.1:30111"
        t["volumes"] = [{"name": "certs", "secret": {"secretName": "mesher-certs"}}]
        t["imagePullSecrets"] = [{"name": "regcred"}]

    found = compare(deployment(), edited(change))

    assert found.verdict == "changed"
    assert [(c.path, c.old, c.new) for c in found.changes] == [
        ("containers[app].env[http_proxy]", "http://127.0.0.1:30101", "http://127.0.0.1:30111"),
        ("containers[mesher].env[APP_ID]", "default", None),
        ("containers[mesher].ports[mesher-http].containerPort", "30101", "30111"),
        ("containers[mesher].resources.limits.memory", "256Mi", "512Mi"),
        ("containers[mesher].env[LOG_LEVEL]", None, "debug"),
        ("volumes[certs].secret.secretName", None, "mesher-certs"),
        ("imagePullSecrets[regcred]", None, "present"),
    ]


def test_a_changed_file_of_a_discovery_type_shows_as_a_diff_of_its_lines() -> None:
    def change(t: dict[str, Any]) -> None:
        files = t["discovery"]["pilot"]["files"]
        files["/tmp/chassis.yaml"] = files["/tmp/chassis.yaml"].replace(
            "disabled: true", "disabled: false"
        )

    pilot = deployment({"sidecar.mesher.io/discoveryType": "pilot"})

    found = compare(pilot, edited(change))

    [file] = found.changes
    assert file.path == "containers[mesher].files[/tmp/chassis.yaml]"
    assert file.old is not None
    assert "disabled: true" in file.old
    block = render_block("deployment/web -n shop", found).splitlines()
    assert block[1] == "  containers[mesher].files[/tmp/chassis.yaml]: changed"
    assert "      -        disabled: true" in block
    assert "      +        disabled: false" in block


def test_a_discovery_type_the_new_template_drops_denies_the_workload_that_asks_for_it() -> None:
    pilot = deployment({"sidecar.mesher.io/discoveryType": "pilot"})

    found = compare(pilot, edited(lambda t: t["discovery"].pop("pilot")))

    assert found.verdict == "denied"
    assert found.reason == "unknown-discovery-type"
    assert found.why == (
        'sidecar.mesher.io/discoveryType="pilot" is not a known discovery type (allowed: sc)'
    )
    assert render_block("deployment/web -n shop", found).splitlines()[1] == (
        "  would be denied (unknown-discovery-type): " + found.why
    )


def test_a_workload_asking_for_a_named_template_is_compared_under_that_template() -> None:
    canary = deployment({"sidecar.mesher.io/template": "canary"})
    old, new = load_template(bump(GOOD, "1.7.0")), load_template(bump(GOOD, "1.7.1"))

    found = compare(canary, LIVE, named={"canary": old}, new_named={"canary": new})
    on_default = compare(deployment(), LIVE, named={"canary": old}, new_named={"canary": new})
    gone = compare(canary, LIVE, named={"canary": old})

    assert found.template == "canary"
    assert [(c.old, c.new) for c in found.changes] == [
        (SHIPPED_IMAGE.replace("1.6.3", "1.7.0"), SHIPPED_IMAGE.replace("1.6.3", "1.7.1"))
    ]
    assert (on_default.template, on_default.verdict) == ("template", "unchanged")
    assert (gone.verdict, gone.reason) == ("denied", "unknown-template")


def test_switching_to_native_sidecars_moves_mesher_among_the_init_containers() -> None:
    found = compare(deployment(), edited(lambda t: t.update(nativeSidecars=True)))

    assert [(c.path, c.old, c.new) for c in found.changes] == [
        ("containers[mesher].placement", "container", "init container"),
        ("containers[mesher].restartPolicy", None, "Always"),
    ]


def test_a_sidecar_name_the_pod_already_uses_shows_that_the_pod_would_lose_its_sidecar() -> None:
    def rename(t: dict[str, Any]) -> None:
        t["containers"][0]["name"] = "app"

    found = compare(deployment(), edited(rename))

    assert found.verdict == "changed"
    assert found.changes[0] == Change(
        "decision", "injected (requested)", "skipped (already-injected)"
    )
    assert Change("containers[mesher].image", SHIPPED_IMAGE, None) in found.changes


def test_a_pod_that_does_not_ask_and_a_document_without_pods_are_not_compared() -> None:
    asks_wrongly = deployment()
    asks_wrongly["spec"]["template"]["metadata"]["annotations"] = {
        "sidecar.mesher.io/inject": "true"
    }
    controller = {"kind": "ReplicationController", "metadata": {"name": "rc"}, "spec": {}}

    wrong = compare(asks_wrongly, LIVE)
    none = compare(controller, LIVE)

    assert (wrong.verdict, wrong.reason) == ("not-compared", "not-requested")
    assert wrong.why == "not injected under either template: sidecar.mesher.io/inject is not yes"
    assert (none.verdict, none.why) == (
        "not-compared",
        "the pods of a ReplicationController are not previewed (only those of CronJob, "
        "DaemonSet, Deployment, Job, Pod, ReplicaSet, StatefulSet)",
    )


def injected_pod(template: Template) -> dict[str, Any]:
    """A bare pod as the API server stores it after the webhook injected it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "solo", "namespace": "shop", "annotations": dict(ASK)},
        "spec": {
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    request_pod, outcome = decide_pod(pod, pod, decider_for(template), label="pod")
    assert outcome.decision == "injected"
    made: dict[str, Any] = jsonpatch.apply_patch(request_pod, outcome.operations())
    return {**pod, **made}


def test_an_injected_bare_pod_is_compared_as_it_was_before_its_injection() -> None:
    with_volume = edited(lambda t: t.update(volumes=[{"name": "certs", "emptyDir": {}}]))
    pod = injected_pod(with_volume)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "mesher"]
    stored = copy.deepcopy(pod)

    proxy = "http://127.0.0.1:30111"
    new = edited(lambda t: t["appEnv"][0].update(value=proxy), bump(GOOD, "1.6.4"))

    found = compare(pod, new, live=with_volume)
    again = compare(pod, with_volume, live=with_volume)

    # not "already injected", no clash with its own copy of the certs volume, and the
    # app env it was given is the template's to change
    assert [(c.path, c.new) for c in found.changes] == [
        ("containers[app].env[http_proxy]", proxy),
        ("containers[mesher].image", SHIPPED_IMAGE.replace("1.6.3", "1.6.4")),
        ("volumes[certs].emptyDir", None),
    ]
    assert again.verdict == "unchanged"
    assert pod == stored  # read, never changed


def test_the_files_a_discovery_type_writes_are_read_back_from_the_container() -> None:
    container = {"name": "m", "image": "x", "command": ["sh", "/start.sh"], "env": [{"name": "A"}]}
    files = {"/tmp/a.yaml": "home: $HOME\n", "/tmp/b": "b"}

    assert files_of(with_files(container, files)) == (container, files)
    assert files_of(container) == (container, {})


def test_changes_lists_what_only_the_new_render_has_after_what_the_live_one_has() -> None:
    before = {"containers": {"mesher": {"image": "a", "args": ["x"]}}}
    after = {"containers": {"mesher": {"image": "b"}, "helper": {"image": "h"}}}

    assert changes(before, after) == [
        Change("containers[mesher].image", "a", "b"),
        Change("containers[mesher].args", '["x"]', None),
        Change("containers[helper].image", None, "h"),
    ]


def test_the_summary_counts_each_verdict() -> None:
    previews = [
        Preview("changed", "template"),
        Preview("unchanged", "template"),
        Preview("denied", "template"),
        Preview("not-compared", "template"),
    ]

    assert summary(previews[:3]) == "3 workloads: 1 would change, 1 unchanged, 1 denied"
    assert summary(previews) == (
        "4 workloads: 1 would change, 1 unchanged, 1 denied, 1 not compared"
    )
    assert summary([]) == "0 workloads: 0 would change, 0 unchanged, 0 denied"
