"""A handle on a Kubernetes cluster (kubectl, helm and namespaces through its kubeconfig) and a
private local one started and stopped around a test session or a benchmark. The tests use any
cluster in $KUBECONFIG instead when ONION_TEST_CLUSTER=external (for example a kind cluster)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onion_lab import localcluster

# Run as a command, not called in-process: the control plane's processes are then the children
# of a command that exits (and init reaps them), not of the test process.
LOCALCLUSTER = [sys.executable, "-m", "onion_lab.localcluster"]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    bin_dir: Path | None  # cached binaries (kubectl, helm); None for an external cluster
    local: bool
    state_dir: Path | None = None  # the local cluster's, for stopping one component (chaos)

    def tool(self, name: str) -> str:
        if self.bin_dir is not None and (self.bin_dir / name).exists():
            return str(self.bin_dir / name)
        return name

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tool("kubectl"), *args],
            input=input,
            text=True,
            capture_output=True,
            check=check,
            env=self.env(),
            timeout=120,
        )

    def exists(self, *args: str) -> bool:
        """Whether `kubectl get ARGS` finds the object."""
        return self.kubectl("get", *args, check=False).returncode == 0

    def kubectl_json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def _component(self, command: str, name: str, *flags: str) -> None:
        if self.state_dir is None:
            raise RuntimeError(f"{command} {name}: only the local cluster's components can be")
        argv = [*LOCALCLUSTER, command, name, "--state-dir", str(self.state_dir)]
        subprocess.run(
            [*argv, *flags],
            check=True,
            capture_output=True,
            env={**os.environ, "ONION_BIN_DIR": str(self.bin_dir)},
            timeout=120,
        )

    def stop_component(self, name: str, kill: bool = False) -> None:
        """Stop one control-plane process (etcd, kube-apiserver, ...) of the local cluster."""
        self._component("stop", name, *(["--kill"] if kill else []))

    def start_component(self, name: str) -> None:
        """Start it again (same ports and data); returns once it serves."""
        self._component("start", name)

    @contextlib.contextmanager
    def new_namespace(self, prefix: str) -> Iterator[str]:
        """A fresh namespace `PREFIX-<random>`, deleted (without waiting) afterwards."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.kubectl("create", "namespace", name)
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)


class LocalClusterProcess:
    """Starts a private local cluster in its own state dir (on tmpfs unless `state_dir` says
    where) and stops it afterwards; `stop` removes the state dir."""

    def __init__(self, nodes: int = 3, audit: bool = False, state_dir: Path | None = None) -> None:
        self.nodes, self.audit = nodes, audit
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="onion-test-cluster-", dir=base))
        self.bin_dir = localcluster.bin_dir()
        # The handle on it, usable once started.
        self.cluster = Cluster(
            str(self.state_dir / "kubeconfig"), self.bin_dir, local=True, state_dir=self.state_dir
        )

    def _run(self, cmd: str, *extra: str) -> None:
        subprocess.run(
            [*LOCALCLUSTER, cmd, "--state-dir", str(self.state_dir), *extra],
            check=True,
            stdout=subprocess.DEVNULL,  # `up` prints an `export KUBECONFIG=...` for a shell
            env={**os.environ, "ONION_BIN_DIR": str(self.bin_dir)},
        )

    def state(self) -> dict[str, Any]:
        """onion_lab.localcluster's state.json: kubeconfigs, the audit log's path, pids."""
        state: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return state

    def start(self) -> Cluster:
        self._run("up", "--nodes", str(self.nodes), *(["--audit"] if self.audit else []))
        return self.cluster

    def stop(self) -> None:
        self._run("down")

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
