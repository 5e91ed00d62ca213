"""Fixtures for tests against the API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster
from tests.support.operator import OperatorProcess, running_operator


@pytest.fixture
def operator(cluster: Cluster, namespace: str) -> Iterator[OperatorProcess]:
    """An `onion-operator` process watching the test's namespace, stopped afterwards."""
    with running_operator(cluster, namespace) as proc:
        yield proc
