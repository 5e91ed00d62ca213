"""A real local Kubernetes control plane on 127.0.0.1 for tests and the demo.

etcd, kube-apiserver (RBAC, token auth, service-account keys), kube-controller-manager,
kube-scheduler and kwok (fake nodes whose pods turn Ready after the delay in their
`pod-ready.stage.kwok.x-k8s.io/delay` annotation). Data lives on tmpfs; every process listens on
loopback only. Binaries come from hack/build-cluster-bins.sh (cached outside the repo).

    python -m onion_lab.localcluster up [--state-dir DIR] [--nodes N] [--audit]   # idempotent;
                                                    # prints the kubeconfig
    python -m onion_lab.localcluster down [--state-dir DIR]
    python -m onion_lab.localcluster status [--state-dir DIR]
    python -m onion_lab.localcluster stop COMPONENT [--kill]   # one component down (chaos), e.g.
                                                               # etcd
    python -m onion_lab.localcluster start COMPONENT   # ... and up again, same ports and data
    python -m onion_lab.localcluster bins   # builds or reuses the binaries; prints their directory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from onion_lab.paths import HACK
from onion_lab.sockets import free_port

DEFAULT_STATE_DIR = Path(
    os.environ.get("ONION_CLUSTER_DIR", f"/dev/shm/onion-local-cluster-{os.getuid()}")
)
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Stop order: the reverse of start order.
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]


def log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def bin_dir() -> Path:
    """The cached binaries: $ONION_BIN_DIR, or what hack/build-cluster-bins.sh builds or reuses."""
    if os.environ.get("ONION_BIN_DIR"):
        return Path(os.environ["ONION_BIN_DIR"])
    out = subprocess.run(
        ["bash", str(HACK / "build-cluster-bins.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        str(pki / "ca.key"),
        "-out",
        str(pki / "ca.crt"),
        "-subj",
        "/CN=onion-local-ca",
    )
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc"
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(pki / "apiserver.key"),
        "-out",
        str(pki / "apiserver.csr"),
        "-subj",
        "/CN=kube-apiserver",
    )
    ext = pki / "apiserver.ext"
    ext.write_text(
        sans + "\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(pki / "apiserver.csr"),
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        str(ext),
        "-out",
        str(pki / "apiserver.crt"),
    )
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "onion-local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "onion-local", "context": {"cluster": "onion-local", "user": user}}],
        "current-context": "onion-local",
    }
    path.write_text(json.dumps(cfg, indent=2))  # JSON is valid YAML
    path.chmod(0o600)


class Api:
    """Just enough of a Kubernetes REST client for bootstrapping (stdlib only)."""

    def __init__(self, server: str, ca: Path, token: str) -> None:
        self.server, self.token = server, token
        self.ctx = ssl.create_default_context(cafile=str(ca))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=5) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw.startswith(b"{") else raw.decode())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


def wait_for(
    what: str, check: Any, timeout: float, procs: dict[str, subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    """Running, not a zombie: a component started by an earlier `start` command is not our
    child, and where nothing reaps orphans it stays a zombie after it exits (seen: a restarted
    kube-apiserver taken for "already running", so it was never started again)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    f = state_dir / "state.json"
    return json.loads(f.read_text()) if f.exists() else None


def healthy(state: dict[str, Any]) -> bool:
    if not all(pid_alive(pid) for pid in state["pids"].values()):
        return False
    api = Api(state["server"], Path(state["ca"]), state["token"])
    try:
        return api.call("GET", "/readyz")[0] == 200
    except (OSError, urllib.error.URLError):
        return False


def node_manifest(name: str) -> dict[str, Any]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


# With --audit, the API server logs every request of these users (one JSON line each), so a
# benchmark can count what the operator sends without trusting the operator's own code.
AUDITED_USERS = ("onion-operator",)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata", "users": list(AUDITED_USERS)}, {"level": "None"}],
}


def up(state_dir: Path, nodes: int, audit: bool = False) -> dict[str, Any]:
    state = read_state(state_dir)
    if state is not None:
        if healthy(state):
            log(f"already running (state in {state_dir})")
            return state
        log("found a stale cluster; cleaning it up first")
        down(state_dir)

    bins = bin_dir()
    t0 = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    pki, logs = state_dir / "pki", state_dir / "logs"
    logs.mkdir(exist_ok=True)
    make_pki(pki)
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    # `onion-operator` is an admin too, with its own name for the audit log and the API
    # server's per-user accounting (operator.kubeconfig).
    users = ("admin", "controller-manager", "scheduler", "kwok", "onion-operator")
    tokens = {u: secrets.token_hex(16) for u in users}
    (pki / "tokens.csv").write_text(
        "".join(f'{tok},{user},{user},"system:masters"\n' for user, tok in tokens.items())
    )
    kubeconfigs = {}
    for user, tok in tokens.items():
        file = {"admin": "kubeconfig", "onion-operator": "operator.kubeconfig"}.get(user)
        kubeconfigs[user] = state_dir / (file or f"{user}.kubeconfig")
        write_kubeconfig(kubeconfigs[user], server, pki / "ca.crt", user, tok)

    audit_flags: list[str] = []
    if audit:
        policy = state_dir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        audit_flags = [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={logs / 'audit.log'}",
            "--audit-log-maxsize=0",  # one file, never rotated: a benchmark reads it whole
            "--audit-log-mode=batch",
            "--audit-log-batch-max-wait=1s",
        ]
    commands = {
        "etcd": [
            str(bins / "etcd"),
            "--name=onion",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=onion=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=1073741824",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=0",
            *audit_flags,
        ],
        "kube-controller-manager": [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kubeconfigs['controller-manager']}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--profiling=false",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=10",
            # The real HPA controller runs; every 2 s instead of 15 s so its tests are short.
            "--horizontal-pod-autoscaler-sync-period=2s",
            # Its client's default rate limit (20 requests/s, bursts of 30) is what paces a
            # thousand Deployments' ReplicaSets, pods and EndpointSlices otherwise; large
            # clusters raise it too.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
        "kube-scheduler": [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={kubeconfigs['scheduler']}",
            "--leader-elect=false",
            "--secure-port=0",
            "--profiling=false",
        ],
        "kwok": [
            str(bins / "kwok"),
            f"--kubeconfig={kubeconfigs['kwok']}",
            f"--config={HACK / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
            "--node-ip=127.0.0.1",
            "--cidr=10.244.0.0/16",
            "--node-lease-duration-seconds=40",
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    api = Api(server, pki / "ca.crt", tokens["admin"])
    state = {
        "server": server,
        "ca": str(pki / "ca.crt"),
        "token": tokens["admin"],
        "kubeconfig": str(kubeconfigs["admin"]),
        "operator_kubeconfig": str(kubeconfigs["onion-operator"]),
        "audit_log": str(logs / "audit.log") if audit else None,
        "etcd": f"http://127.0.0.1:{etcd_port}",
        "commands": commands,  # so one component can be stopped and started again (chaos)
        "pids": {},
    }

    def start(name: str) -> None:
        procs[name] = spawn(state_dir, state, name)

    try:
        start("etcd")
        wait_for("etcd", lambda: etcd_healthy(state), 30, procs)
        start("kube-apiserver")
        wait_for("kube-apiserver /readyz", lambda: api.call("GET", "/readyz")[0] == 200, 90, procs)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            start(name)
        for i in range(nodes):
            code, body = api.call("POST", "/api/v1/nodes", node_manifest(f"kwok-node-{i}"))
            if code not in (201, 409):
                raise RuntimeError(f"creating node: {code} {body}")

        def nodes_ready() -> bool:
            items = api.call("GET", "/api/v1/nodes")[1]["items"]
            ready = [
                n
                for n in items
                for c in n.get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True"
            ]
            return len(ready) >= nodes

        wait_for(f"{nodes} kwok nodes Ready", nodes_ready, 60, procs)
        # Pods are admitted only once the service-account controller made `default`.
        wait_for(
            "default ServiceAccount",
            lambda: api.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            60,
            procs,
        )
    except BaseException:
        log(f"start failed; logs in {logs}")
        down(state_dir, keep_logs=True)
        raise
    log(f"cluster ready in {time.monotonic() - t0:.1f}s: {server}")
    return state


def spawn(state_dir: Path, state: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    """Start one component from its recorded command line; its log is appended to."""
    out = open(state_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        state["commands"][name],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    state["pids"][name] = proc.pid
    (state_dir / "state.json").write_text(json.dumps(state, indent=2))
    log(f"started {name} (pid {proc.pid})")
    return proc


def etcd_healthy(state: dict[str, Any]) -> bool:
    with urllib.request.urlopen(f"{state['etcd']}/health", timeout=2) as resp:
        return bool(resp.status == 200)


def stop_component(state_dir: Path, name: str, kill: bool = False) -> None:
    """Stop one component of a running cluster (SIGTERM, or SIGKILL with `kill`)."""
    state = read_state(state_dir)
    if state is None or name not in state.get("pids", {}):
        raise SystemExit(f"no running cluster with a {name} in {state_dir}")
    pid = state["pids"][name]
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    log(f"stopped {name}")


def start_component(state_dir: Path, name: str) -> None:
    """Start a stopped component again with the same ports and data; wait until it serves."""
    state = read_state(state_dir)
    if state is None or name not in state.get("commands", {}):
        raise SystemExit(f"no cluster with a {name} in {state_dir}")
    if pid_alive(state["pids"].get(name, 0)):
        log(f"{name} is already running")
        return
    proc = spawn(state_dir, state, name)
    api = Api(state["server"], Path(state["ca"]), state["token"])
    checks = {
        "etcd": lambda: etcd_healthy(state),
        "kube-apiserver": lambda: api.call("GET", "/readyz")[0] == 200,
    }
    if name in checks:
        wait_for(name, checks[name], 90, {name: proc})


def down(state_dir: Path, keep_logs: bool = False) -> None:
    state = read_state(state_dir)
    if state is not None:
        pids = state.get("pids", {})
        for name in reversed(COMPONENTS):
            if name in pids and pid_alive(pids[name]):
                os.kill(pids[name], signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name in reversed(COMPONENTS):
            pid = pids.get(name)
            while pid and pid_alive(pid) and time.monotonic() < deadline:
                reap(pid)
                time.sleep(0.05)
            if pid and pid_alive(pid):
                log(f"{name} did not stop; killing it")
                os.kill(pid, signal.SIGKILL)
                reap(pid)
        log("stopped")
    if state_dir.exists() and not keep_logs:
        subprocess.run(["rm", "-rf", str(state_dir)], check=True)


def reap(pid: int) -> None:
    """Collect a child that has exited (only our own children; others are reaped by init)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m onion_lab.localcluster", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status", "bins", "stop", "start"])
    parser.add_argument("component", nargs="?", choices=COMPONENTS, help="for stop and start")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--audit", action="store_true", help=f"audit-log the requests of {', '.join(AUDITED_USERS)}"
    )
    parser.add_argument("--kill", action="store_true", help="stop with SIGKILL")
    args = parser.parse_args()
    if args.command in ("stop", "start") and args.component is None:
        parser.error(f"{args.command} needs a COMPONENT")
    if args.command == "stop":
        stop_component(args.state_dir, args.component, kill=args.kill)
    elif args.command == "start":
        start_component(args.state_dir, args.component)
    elif args.command == "up":
        state = up(args.state_dir, args.nodes, args.audit)
        print(f"export KUBECONFIG={state['kubeconfig']}")
    elif args.command == "down":
        down(args.state_dir)
    elif args.command == "bins":
        print(bin_dir())
    else:
        state = read_state(args.state_dir)
        if state is None or not healthy(state):
            print("not running")
            return 1
        print(f"running: {state['server']}\nexport KUBECONFIG={state['kubeconfig']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
