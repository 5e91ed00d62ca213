"""The operator's probe logic and metric labels, without a cluster."""

from __future__ import annotations

import pytest

from onion_operator.kube import resource_of
from onion_operator.probes import Health, parse_address


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9090", ("0.0.0.0", 9090)),
        ("[::1]:0", ("::1", 0)),
    ],
)
def test_bind_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["8080", "host:", "host:http", ":70000"])
def test_bad_bind_addresses_say_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_address(text)


def test_a_standby_is_ready_and_a_leader_once_its_caches_are_synced() -> None:
    health = Health()
    assert health.ready() and health.describe()["role"] == "standby"
    health.leading = True
    assert not health.ready()  # leading, still listing: not yet available
    health.synced = True
    assert health.describe() == {"ready": True, "role": "leader", "cachesSynced": True}


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/apps/v1/namespaces/ns/deployments/chat-mid", "deployments"),
        ("/apis/onion.dev/v1alpha1/namespaces/ns/onions/chat/status", "onions/status"),
        ("/api/v1/namespaces/ns/events", "events"),
        ("/apis/coordination.k8s.io/v1/namespaces/ns/leases", "leases"),
        ("/apis/apps/v1/deployments", "deployments"),  # across all namespaces
        ("/api/v1/services", "services"),
        ("/apis/apps/v1", "discovery"),
        ("/api/v1", "discovery"),
        ("/apis", "discovery"),
    ],
)
def test_api_requests_are_counted_by_resource_never_by_name(path: str, resource: str) -> None:
    assert resource_of(path) == resource
