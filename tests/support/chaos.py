"""The chaos campaign: the operator, the router and the control plane killed at random moments
while layers wake and sleep, with figures a platform team can quote.

Scenarios (each counts its trials, lost wakes, layers stuck awake, hung and dropped requests):

- `operator_kills`: wake and sleep cycles of one layer, the operator `kill -9`'d at a random
  moment of each (mid-wake, awake, when the sleep falls due) and started again at once;
- `router_kills`: requests held by a router (in Kubernetes mode) while the layer wakes, the router
  `kill -9`'d mid-hold; its clients must get an error at once, the layer must still sleep, and a
  restarted router must serve;
- `apiserver_restarts` / `etcd_restarts`: kube-apiserver (same etcd) or etcd stopped mid-wake and
  started again seconds later, while a router holds a request; operator and router must reconnect
  by themselves, the wake must complete and the request be answered, and the layer must sleep;
- `two_routers`: two router replicas renewing one Onion's Leases, one killed mid-hold; the
  other's held requests are answered.

tests/integration/test_chaos.py runs a short version in `make test`, and the campaign at length
(`make chaos`, sizes from the environment: Sizes.from_environment) with its report written to
results/chaos.json. It lives here, not in a benchmark: it runs the TGI-protocol test servers as
the models, and a test double stays under tests/.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.operator import DELAY_ANNOTATION, local_router_config, onion_yaml, renew_demand
from tests.support.router_server import RouterProcess

ONION = "chaos"
LAYER = "mid"
IDLE_SECONDS = 4.0
WAKE_TIMEOUT_SECONDS = 60.0
LOAD_SECONDS = 2.0  # kwok's simulated model load of the layer
# A wake that has not reached Ready this long after demand is lost; a layer still awake this
# long after its idle timeout is stuck. Both allow an operator restart and a leader hand-over.
WAKE_BOUND = 30.0
SLEEP_BOUND = 20.0
HANG_BOUND = 5.0  # a client of a killed router must have its error by then
TOTALS = ("trials", "lost_wakes", "stuck_awake", "hung_requests", "dropped_requests", "requests")


@dataclass(frozen=True)
class Sizes:
    """How many trials of each scenario: a short campaign by default (`make test`)."""

    operator_cycles: int = 3
    router_trials: int = 1
    restart_trials: int = 1
    seed: int = 1

    @classmethod
    def from_environment(cls) -> Sizes:
        """ONION_CHAOS_OPERATOR_CYCLES, _ROUTER_TRIALS, _RESTART_TRIALS and _SEED (`make chaos`)."""
        env = os.environ
        return cls(
            operator_cycles=int(env.get("ONION_CHAOS_OPERATOR_CYCLES", cls.operator_cycles)),
            router_trials=int(env.get("ONION_CHAOS_ROUTER_TRIALS", cls.router_trials)),
            restart_trials=int(env.get("ONION_CHAOS_RESTART_TRIALS", cls.restart_trials)),
            seed=int(env.get("ONION_CHAOS_SEED", cls.seed)),
        )


@dataclass
class Figures:
    scenario: str
    trials: int = 0
    lost_wakes: int = 0
    stuck_awake: int = 0
    hung_requests: int = 0
    dropped_requests: int = 0
    requests: int = 0
    answered: int = 0
    clean_errors: int = 0
    wake_seconds: list[float] = field(default_factory=list)
    sleep_late_seconds: list[float] = field(default_factory=list)  # after the idle timeout
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.lost_wakes + self.stuck_awake + self.hung_requests + self.dropped_requests

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("wake_seconds", "sleep_late_seconds"):
            values = sorted(out.pop(key))
            out[key.replace("_seconds", "")] = {
                "count": len(values),
                "p50_s": round(values[len(values) // 2], 2) if values else None,
                "max_s": round(values[-1], 2) if values else None,
            }
        return out


class Holder:
    """Times (epoch seconds) of the first and the last demand a held request recorded."""

    def __init__(self, first: float) -> None:
        self.first = first
        self.last = first


class Campaign:
    """One Onion (a core and one managed layer) in `namespace`, an operator, test servers for the
    core and the layer (kwok pods run nothing), and the probes the scenarios share."""

    def __init__(self, cluster: Cluster, namespace: str, seed: int = 1) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.rng = random.Random(seed)
        self.operator: OperatorProcess | None = None
        self.lease_seconds = 3.0
        self.servers: dict[str, FakeTGI] = {}
        self.log: Callable[[str], None] = lambda _msg: None
        # As a kubelet restarts a Deployment's pod whose process exited (an operator that could
        # not renew its leader Lease in time steps down and exits): one second later.
        self.restarts = 0
        self.pods = 0  # a new identity per new "pod"; a restart in place keeps it (POD_NAME)
        self._lock = threading.RLock()
        self._supervising = threading.Event()
        self._supervisor: threading.Thread | None = None

    # --- set-up --------------------------------------------------------------------------

    def __enter__(self) -> Campaign:
        apply_crd(self.cluster)
        self.start_operator()
        self._supervising.set()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        self.servers = {
            "core": FakeTGI(Script(tokens=["Paris", "."], logprob=-0.05), name="core").start(),
            LAYER: FakeTGI(Script(tokens=["Deep", " answer", "."]), name=LAYER).start(),
        }
        layer = {
            "name": LAYER,
            "model": "Qwen/Qwen2.5-14B-Instruct",
            "idleTimeout": f"{IDLE_SECONDS:g}s",
            "wakeTimeout": f"{WAKE_TIMEOUT_SECONDS:g}s",
            "podAnnotations": {DELAY_ANNOTATION: f"{LOAD_SECONDS:g}s"},
        }
        body = yaml.safe_load(onion_yaml(ONION, [layer], router={"replicas": 0}))
        self.cluster.kubectl("-n", self.ns, "apply", "-f", "-", input=yaml.safe_dump(body))
        self.wait(lambda: self.phase() == "Dormant", 60, "layer Dormant at start")
        return self

    def __exit__(self, *_: object) -> None:
        self._supervising.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        if self.operator is not None:
            self.operator.stop(show_log=False)
        for server in self.servers.values():
            server.stop()

    def start_operator(self, lease_seconds: float | None = None, new_pod: bool = True) -> None:
        with self._lock:
            self.lease_seconds = lease_seconds or self.lease_seconds
            self.pods += new_pod
            extra = (
                *("--leader-lease-seconds", f"{self.lease_seconds:g}"),
                *("--identity", f"chaos-operator-{self.pods}"),
            )
            self.operator = OperatorProcess(self.cluster, self.ns, *extra).start()

    def restart_operator(self) -> None:
        """`kill -9`, then start a new one at once (as a Deployment would)."""
        with self._lock:
            assert self.operator is not None
            self.operator.kill()
            self.operator.stop(show_log=False)
            self.start_operator()

    def _supervise(self) -> None:
        while self._supervising.is_set():
            time.sleep(0.5)
            with self._lock:
                if self.operator is None or self.operator_alive() or not self._supervising.is_set():
                    continue
                self.operator.stop(show_log=False)
                self.restarts += 1
                time.sleep(1.0)
                self.start_operator(new_pod=False)  # the same pod: its name, its identity

    def operator_alive(self) -> bool:
        return (
            self.operator is not None
            and self.operator.proc is not None
            and (self.operator.proc.poll() is None)
        )

    def router(self, identity: str) -> RouterProcess:
        urls = {name: server.url for name, server in self.servers.items()}
        config = local_router_config(self.cluster, self.ns, ONION, urls)
        config["heartbeatSeconds"] = 0.5
        env = {"KUBECONFIG": self.cluster.kubeconfig, "POD_NAME": identity}
        return RouterProcess(config, env).start()

    # --- probes (tolerant: the API server may be down) -----------------------------------

    def _get(self, *args: str) -> dict[str, Any] | None:
        done = self.cluster.kubectl("-n", self.ns, "get", *args, "-o", "json", check=False)
        if done.returncode != 0:
            return None
        return dict(json.loads(done.stdout))

    def phase(self) -> str | None:
        onion = self._get("onion", ONION)
        layers = ((onion or {}).get("status") or {}).get("layers") or []
        return next((e.get("phase") for e in layers if e.get("name") == LAYER), None)

    def replicas(self) -> int | None:
        dep = self._get("deployment", f"{ONION}-{LAYER}")
        return None if dep is None else int(dep["spec"].get("replicas") or 0)

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> bool:
        """Whether `check` holds within `timeout` (asked at least once, even if it is past)."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self.log(f"timed out after {timeout:.0f}s: {what}")
        return False

    def demand(self) -> float:
        """Record demand as the router does; returns its time (epoch seconds)."""
        return renew_demand(self.cluster, self.ns, f"{ONION}-{LAYER}-demand").timestamp()

    @contextlib.contextmanager
    def holding(self) -> Iterator[Holder]:
        """Demand renewed every 2 s, as a router renews it while it holds a request (3 s)."""
        holder = Holder(self.demand())
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(2.0):
                with contextlib.suppress(Exception):  # the API server may be down
                    holder.last = self.demand()

        thread = threading.Thread(target=renew, daemon=True)
        thread.start()
        try:
            yield holder
        finally:
            stop.set()
            thread.join()

    def settle(self) -> None:
        """Back to a dormant layer with no pod left before the next trial."""
        self.wait(lambda: self.phase() == "Dormant", WAKE_TIMEOUT_SECONDS, "layer Dormant")

    def check_sleep(self, figures: Figures, last_demand: float) -> None:
        """The layer must be at 0 replicas within SLEEP_BOUND of its idle timeout."""
        due = last_demand + IDLE_SECONDS
        if self.wait(lambda: self.replicas() == 0, due + SLEEP_BOUND - time.time(), "asleep"):
            figures.sleep_late_seconds.append(max(0.0, time.time() - due))
        else:
            figures.stuck_awake += 1
            figures.notes.append(
                f"trial {figures.trials - 1}: still awake {SLEEP_BOUND:g}s after its idle timeout"
            )

    # --- scenarios -----------------------------------------------------------------------

    def operator_kills(self, cycles: int) -> Figures:
        """A held request's demand (renewed until the layer is Ready), the operator killed
        mid-wake, while awake, or when the sleep falls due."""
        figures = Figures("operator_kills")
        moments = ("mid-wake", "awake", "sleep-due")
        for trial in range(cycles):
            figures.trials += 1
            moment = moments[trial % len(moments)]
            with self.holding() as held:
                if moment == "mid-wake":
                    time.sleep(self.rng.uniform(0.0, LOAD_SECONDS))
                    self.restart_operator()
                ready = self.wait(lambda: self.phase() == "Ready", WAKE_BOUND, "Ready")
            if ready:
                figures.wake_seconds.append(time.time() - held.first)
            else:
                figures.lost_wakes += 1
                figures.notes.append(f"trial {trial} ({moment}): never Ready")
            if moment == "awake":
                self.restart_operator()
            elif moment == "sleep-due":
                pause = held.last + IDLE_SECONDS + self.rng.uniform(-1.0, 0.5) - time.time()
                time.sleep(max(0.0, pause))
                self.restart_operator()
            self.check_sleep(figures, held.last)
            self.settle()
            self.log(f"operator_kills {trial + 1}/{cycles} ({moment}) ok={not figures.failures}")
        return figures

    def _ask(self, url: str, stream: bool) -> str:
        """One client request pinned to the layer: 'answered', 'error' or 'dropped:...'."""
        body = {
            "model": f"onion/{LAYER}",
            "messages": [{"role": "user", "content": "a hard question"}],
            "stream": stream,
        }
        try:
            with httpx.Client(timeout=WAKE_TIMEOUT_SECONDS + 30) as client:
                if not stream:
                    response = client.post(f"{url}/v1/chat/completions", json=body)
                    if response.status_code == 200:
                        text = response.json()["choices"][0]["message"]["content"]
                        return "answered" if text == "Deep answer." else f"dropped: {text!r}"
                    if response.status_code in (429, 503) and response.json().get("error"):
                        return "error"  # a clean refusal, with Retry-After
                    return f"dropped: HTTP {response.status_code}"
                with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                    lines = [line for line in response.iter_lines() if line.startswith("data:")]
                if lines and lines[-1] == "data: [DONE]":
                    return "answered"
                if lines and '"error"' in lines[-1]:
                    return "error"
                return f"dropped: stream ended after {len(lines)} events"
        except httpx.TransportError:
            return "error"  # the router went away: the client knows at once

    @contextlib.contextmanager
    def clients(self, url: str, count: int) -> Iterator[list[Future[str]]]:
        with ThreadPoolExecutor(max_workers=count) as pool:
            yield [pool.submit(self._ask, url, stream=i % 2 == 1) for i in range(count)]

    @staticmethod
    def collect(
        figures: Figures, futures: list[Future[str]], by: float, *, killed: bool
    ) -> list[str]:
        """Outcomes by deadline `by` (monotonic); a killed router's clients must all error."""
        outcomes = []
        for future in futures:
            figures.requests += 1
            try:
                outcome = future.result(timeout=max(0.0, by - time.monotonic()))
            except TimeoutError:
                figures.hung_requests += 1
                outcomes.append("hung")
                continue
            outcomes.append(outcome)
            if outcome == "answered":
                figures.answered += 1
            elif outcome == "error":
                figures.clean_errors += 1
                if not killed:  # a surviving router must answer what it held
                    figures.dropped_requests += 1
            else:
                figures.dropped_requests += 1
        return outcomes

    def router_kills(self, trials: int) -> Figures:
        figures = Figures("router_kills")
        for trial in range(trials):
            figures.trials += 1
            router = self.router(f"router-chaos-{trial}")
            try:
                with self.clients(router.url, 4) as futures:
                    time.sleep(self.rng.uniform(0.3, LOAD_SECONDS * 0.8))  # held: still waking
                    killed_at = time.time()
                    router.kill()
                    outcomes = self.collect(
                        figures, futures, time.monotonic() + HANG_BOUND, killed=True
                    )
            finally:
                router.stop()
            self.log(f"router_kills {trial + 1}/{trials}: {outcomes}")
            # Its demand stops with it: the layer sleeps after the idle timeout.
            self.check_sleep(figures, killed_at)
            self.settle()
            # A router started again serves (and wakes the layer again).
            again = self.router(f"router-chaos-{trial}-again")
            try:
                started = time.time()
                with self.clients(again.url, 1) as futures:
                    self.collect(figures, futures, time.monotonic() + WAKE_BOUND, killed=False)
                figures.wake_seconds.append(time.time() - started)
                last = time.time()
            finally:
                again.stop()
            self.check_sleep(figures, last)
            self.settle()
        return figures

    def control_plane_restarts(self, component: str, trials: int) -> Figures:
        """`component` (kube-apiserver or etcd) down for seconds mid-wake, a request held."""
        figures = Figures(f"{component.replace('kube-', '')}_restarts")
        # A leader that cannot renew for 80% of its lease steps down: keep the outage shorter.
        self.restart_operator_with_lease(15.0)
        router = self.router(f"router-{component}")
        try:
            for trial in range(trials):
                figures.trials += 1
                restarts = self.restarts
                with self.clients(router.url, 2) as futures:
                    time.sleep(self.rng.uniform(0.2, 1.0))  # the demand is recorded by now
                    self.cluster.stop_component(component, kill=trial % 2 == 0)
                    time.sleep(self.rng.uniform(1.0, 4.0))
                    self.cluster.start_component(component)
                    # The rest of the control plane recovers too (the controller-manager's
                    # watches report the layer's Ready pod up to tens of seconds late here): a
                    # held request counts as answered within its layer's wakeTimeout, the
                    # router's own promise.
                    outcomes = self.collect(
                        figures, futures, time.monotonic() + WAKE_TIMEOUT_SECONDS + 10, killed=False
                    )
                last = time.time()
                if "answered" not in outcomes:
                    figures.lost_wakes += 1
                self.log(f"{figures.scenario} {trial + 1}/{trials}: {outcomes}")
                self.check_sleep(figures, last)
                self.settle()
                if self.restarts > restarts:
                    figures.notes.append(f"trial {trial}: the operator exited and was restarted")
        finally:
            router.stop()
            self.restart_operator_with_lease(3.0)
        return figures

    def restart_operator_with_lease(self, seconds: float) -> None:
        with self._lock:
            if self.operator is not None:
                self.operator.stop(show_log=False)  # a clean exit releases the leader Lease
            self.start_operator(seconds)

    def two_routers(self, trials: int) -> Figures:
        figures = Figures("two_routers")
        for trial in range(trials):
            figures.trials += 1
            a, b = self.router(f"router-a-{trial}"), self.router(f"router-b-{trial}")
            try:
                with self.clients(a.url, 2) as on_a, self.clients(b.url, 2) as on_b:
                    time.sleep(self.rng.uniform(0.3, LOAD_SECONDS * 0.8))
                    a.kill()
                    lost = self.collect(figures, on_a, time.monotonic() + HANG_BOUND, killed=True)
                    kept = self.collect(figures, on_b, time.monotonic() + WAKE_BOUND, killed=False)
                last = time.time()
            finally:
                a.stop()
                b.stop()
            self.log(f"two_routers {trial + 1}/{trials}: killed {lost}, survivor {kept}")
            self.check_sleep(figures, last)
            self.settle()
        return figures


def run_campaign(
    cluster: Cluster,
    namespace: str,
    *,
    operator_cycles: int,
    router_trials: int,
    restart_trials: int,
    seed: int = 1,
    log: Callable[[str], None] | None = None,
) -> list[Figures]:
    """Every scenario in turn on one Onion; the figures per scenario."""
    with Campaign(cluster, namespace, seed) as campaign:
        if log is not None:
            campaign.log = log
        results = [campaign.operator_kills(operator_cycles)]
        results.append(campaign.router_kills(router_trials))
        results.append(campaign.two_routers(router_trials))
        if cluster.state_dir is not None:  # only the local cluster's components can be stopped
            results.append(campaign.control_plane_restarts("kube-apiserver", restart_trials))
            results.append(campaign.control_plane_restarts("etcd", restart_trials))
        return results


def report(figures: list[Figures], sizes: Sizes, wall_seconds: float) -> dict[str, Any]:
    """The campaign's figures per scenario and in total, with its settings (results/chaos.json)."""
    scenarios = [f.summary() for f in figures]
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": uuid.uuid4().hex[:8],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "idle_timeout_s": IDLE_SECONDS,
            "simulated_load_s": LOAD_SECONDS,
            "wake_bound_s": WAKE_BOUND,
            "sleep_bound_s": SLEEP_BOUND,
            "hang_bound_s": HANG_BOUND,
            "seed": sizes.seed,
        },
        "scenarios": scenarios,
        "totals": {key: sum(s[key] for s in scenarios) for key in TOTALS},
        "wall_seconds": round(wall_seconds, 1),
    }
