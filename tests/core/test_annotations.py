from __future__ import annotations

import pytest

from injector.core.annotations import (
    INJECT,
    SERVICE_PORTS,
    InvalidServicePorts,
    ServicePort,
    parse_inject,
    parse_service_ports,
)


@pytest.mark.parametrize("value", ["yes", "y", "YES", " Yes ", "Y"])
def test_yes_and_y_in_any_case_request_injection(value: str) -> None:
    choice = parse_inject({INJECT: value})
    assert choice.requested
    assert choice.warning is None


@pytest.mark.parametrize("value", ["no", "n", "NO", " n "])
def test_no_and_n_opt_out_quietly(value: str) -> None:
    choice = parse_inject({INJECT: value})
    assert not choice.requested
    assert choice.warning is None


@pytest.mark.parametrize("value", ["true", "1", "enabled", ""])
def test_other_values_do_not_inject_and_warn_with_the_allowed_values(value: str) -> None:
    choice = parse_inject({INJECT: value})
    assert not choice.requested
    assert choice.warning is not None
    assert '"yes"' in choice.warning
    assert '"y"' in choice.warning


def test_absent_inject_annotation_is_not_a_request() -> None:
    assert parse_inject({}) == parse_inject({"other": "yes"})
    assert not parse_inject({}).requested


def test_service_ports_parse_in_order() -> None:
    ports = parse_service_ports({SERVICE_PORTS: "rest:9999, grpc:8000"})
    assert ports.ports == (ServicePort("rest", 9999), ServicePort("grpc", 8000))
    assert str(ports) == "rest:9999,grpc:8000"
    assert ports.warnings == ()


def test_grps_is_accepted_as_grpc_with_a_warning() -> None:
    ports = parse_service_ports({SERVICE_PORTS: "grps:8080"})
    assert str(ports) == "grpc:8080"
    assert len(ports.warnings) == 1
    assert "grpc:8080" in ports.warnings[0]


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_or_empty_service_ports_mean_none(value: str | None) -> None:
    annotations = {} if value is None else {SERVICE_PORTS: value}
    assert parse_service_ports(annotations).ports == ()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("rest:abc", '"rest:abc" has a port that is not a number'),
        ("grpc:70000", "port 70000 outside 1-65535"),
        ("grpc:0", "port 0 outside"),
        ("http:80", 'unknown protocol "http"'),
        ("rest", '"rest" is not proto:port'),
        ("rest:80,grpc:80", "repeats port 80"),
        ("rest:80,", '"" is not proto:port'),
        ("rest:٣٣", "not a number"),
    ],
)
def test_malformed_service_ports_name_the_bad_item(value: str, needle: str) -> None:
    with pytest.raises(InvalidServicePorts) as info:
        parse_service_ports({SERVICE_PORTS: value})
    assert needle in str(info.value)


def test_every_bad_item_is_named_at_once() -> None:
    with pytest.raises(InvalidServicePorts) as info:
        parse_service_ports({SERVICE_PORTS: "rest:abc,grpc:70000"})
    assert len(info.value.problems) == 2


def test_a_value_with_newlines_is_quoted_in_the_message() -> None:
    value = 'rest:9999"\n- name: evil\n  image: evil:latest'
    with pytest.raises(InvalidServicePorts) as info:
        parse_service_ports({SERVICE_PORTS: value})
    assert "\n" not in str(info.value)
