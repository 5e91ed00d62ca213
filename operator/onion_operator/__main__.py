"""`onion-operator`: run the Onion operator in a cluster or outside it (KUBECONFIG)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import socket
import sys

try:
    import kopf
except ImportError as err:  # an edge install: the router alone, without the `cluster` extra
    sys.exit(f"onion-operator needs kopf: pip install 'onion-of-experts[cluster]' ({err})")

from onion_operator.handlers import Tuning  # importing handlers registers them with kopf
from onion_operator.kube import Kube
from onion_operator.leader import LeaderElection
from onion_operator.metrics import OperatorMetrics
from onion_operator.probes import Health, ProbeServer, parse_address

log = logging.getLogger("onion_operator")

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="onion-operator", description=__doc__)
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p.add_argument(
        "--leader-namespace",
        metavar="NS",
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE, "
        "else the first --namespace, else 'default')",
    )
    p.add_argument(
        "--leader-lease-seconds",
        type=float,
        default=15.0,
        metavar="S",
        help="how long a dead leader blocks a successor (default 15)",
    )
    p.add_argument(
        "--identity", default=None, help="leader identity (default: $POD_NAME, else host-pid)"
    )
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=Tuning.resync_seconds,
        metavar="S",
        help="drift repair: re-apply every child of each Onion once per S seconds, the Onions "
        f"spread over the period (default {Tuning.resync_seconds:g})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=Tuning.workers,
        metavar="N",
        help=f"Onions reconciled in parallel (default {Tuning.workers})",
    )
    p.add_argument(
        "--metrics-bind-address",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /healthz and /readyz there (for example :8080); "
        "off by default",
    )
    p.add_argument(
        "--no-leader-election",
        action="store_true",
        help="act without taking the leader Lease (one instance only!)",
    )
    args = p.parse_args(argv)
    for namespace in args.namespace:  # listed by name at start (handlers.fill): no patterns
        if not _NAMESPACE.fullmatch(namespace):
            p.error(f"--namespace {namespace!r}: not a namespace name (DNS-1123 label)")
    if args.resync_seconds <= 0 or args.workers < 1:
        p.error("--resync-seconds must be positive and --workers at least 1")
    if args.metrics_bind_address is not None:
        try:
            parse_address(args.metrics_bind_address)
        except ValueError as e:
            p.error(f"--metrics-bind-address: {e}")
    return args


async def run(args: argparse.Namespace) -> int:
    metrics, health = OperatorMetrics(), Health()
    probes = None
    if args.metrics_bind_address is not None:
        probes = ProbeServer(metrics, health, args.metrics_bind_address)
        await probes.start()  # before the election: a standby answers its probes too
        log.info("metrics and probes on %s:%d", probes.host, probes.port)
    kube = await Kube.connect(metrics=metrics)
    leader_ns = (
        args.leader_namespace
        or os.environ.get("POD_NAMESPACE")
        or (args.namespace[0] if args.namespace else "default")
    )
    identity = (
        args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    )
    election = LeaderElection(
        kube,
        leader_ns,
        identity,
        lease_seconds=args.leader_lease_seconds,
        renew_seconds=max(0.5, args.leader_lease_seconds / 3),
    )
    lost = asyncio.Event()
    holder: asyncio.Task[None] | None = None
    try:
        if not args.no_leader_election:
            await election.acquire()
            holder = asyncio.create_task(election.hold(lost))
        health.leading = True
        metrics.leader.set(1)
        operator = asyncio.create_task(
            kopf.operator(
                standalone=True,  # leadership comes from our Lease, not kopf peering
                clusterwide=args.all_namespaces,
                namespaces=list(args.namespace),
                memo=kopf.Memo(
                    namespaces=None if args.all_namespaces else list(args.namespace),
                    tuning=Tuning(resync_seconds=args.resync_seconds, workers=args.workers),
                    metrics=metrics,
                    health=health,
                ),
            )
        )
        loser = asyncio.create_task(lost.wait())
        await asyncio.wait({operator, loser}, return_when=asyncio.FIRST_COMPLETED)
        loser.cancel()
        if lost.is_set():
            # Cancelling (not a stop flag, whose waiter kopf would leave hanging on SIGTERM)
            # makes kopf stop its watchers and handlers at once.
            operator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operator
    finally:
        if holder is not None:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder
        if not args.no_leader_election and not lost.is_set():
            with contextlib.suppress(Exception):
                await election.release()
        await kube.close()
        if probes is not None:
            await probes.stop()
    return 1 if lost.is_set() else 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=False)
    # The API client's debug log prints every response body; too much even for --verbose.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    if not args.verbose:  # one line per handled event otherwise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
