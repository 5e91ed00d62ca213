"""Shared fixtures: the session's cluster and a fresh namespace per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from onion_lab.cluster import Cluster, LocalClusterProcess
from tests.support import leftovers
from tests.support.llama import llama_server, require_engine

_BEFORE = pytest.StashKey[set[int]]()
_SESSION = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A real Kubernetes API server: $KUBECONFIG if ONION_TEST_CLUSTER=external, else local."""
    if os.environ.get("ONION_TEST_CLUSTER") == "external":
        kubeconfig = os.environ.get("KUBECONFIG")
        if not kubeconfig:
            pytest.fail("ONION_TEST_CLUSTER=external needs KUBECONFIG")
        yield Cluster(kubeconfig, None, local=False)
        return
    with LocalClusterProcess() as local:
        yield local


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's `llama-server` with the real SmolLM2-135M-Instruct (served as `core`): its
    URL. One for the whole session: the engine test and the edge test share it."""
    require_engine("smollm2")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with llama_server("smollm2", "core", log) as url:
        yield url


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    with cluster.new_namespace("t") as name:
        yield name


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = leftovers.mark_session()
    session.config.stash[_BEFORE] = set(leftovers.ours())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every fixture is torn down by now: anything of ours still running is a leak."""
    left = leftovers.started_since(
        session.config.stash.get(_BEFORE, set()), session.config.stash.get(_SESSION, None)
    )
    if left:
        print("\nprocesses left running after the tests:\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
