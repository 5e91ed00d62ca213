"""The real `onion-operator` CLI as a subprocess against a cluster, and the Onion CRD applied
and serving: what the tests, the benchmarks and the demo start the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from onion_lab.cluster import Cluster
from onion_lab.paths import REPO
from onion_lab.waiting import wait_until

CRD = REPO / "crds" / "onion.dev_onions.yaml"
OPERATOR_BIN = Path(sys.executable).with_name("onion-operator")


def apply_crd(cluster: Cluster, path: Path = CRD) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    wait_established(cluster)


def wait_established(cluster: Cluster, crd: str = "onions.onion.dev") -> None:
    """Until the CRD serves. Not `kubectl wait --for=condition=Established`: it fails at once
    ("status.conditions accessor error") when it reads a CRD whose status is not written yet."""

    def established() -> bool:
        done = cluster.kubectl("get", f"crd/{crd}", "-o", "json", check=False)
        if done.returncode != 0:
            return False
        conditions = (json.loads(done.stdout).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, timeout=60, what=f"CRD {crd} Established")


class OperatorProcess:
    """`onion-operator --namespace NS`, logs to a temp file; stop() always ends it."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        *extra: str,
        kubeconfig: str | None = None,
        verbose: bool = True,
        pythonpath: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.extra = extra
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.verbose = verbose
        self.pythonpath = pythonpath  # run another checkout's operator (benchmarks)
        self.log = Path(tempfile.mkstemp(prefix="onion-operator-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        # `--all-namespaces` in `extra` replaces the default scope of the test's namespace.
        scope = [] if "--all-namespaces" in self.extra else ["--namespace", self.namespace]
        command = [str(OPERATOR_BIN)]
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        if self.pythonpath is not None:
            command = [sys.executable, "-m", "onion_operator"]
            env["PYTHONPATH"] = self.pythonpath
        args = [
            *command,
            *scope,
            *(["--verbose"] if self.verbose else []),
            "--leader-lease-seconds",
            "3",
            *self.extra,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return self

    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, show_log: bool = True) -> None:
        """SIGTERM (SIGKILL after 15s); print the log's tail (pytest shows it when a test
        fails) and remove the log file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log.exists():
            if show_log:
                tail = "\n".join(self.logs().splitlines()[-60:])
                print(f"--- onion-operator log tail ({self.log.name}) ---\n{tail}")
            self.log.unlink()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
