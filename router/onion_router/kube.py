"""The router's only Kubernetes I/O: renew demand Leases and watch the Onion's layer phases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from onion_contract.names import GROUP, PLURAL, VERSION
from onion_router.layers import LeaseMissing, PhaseSink

log = logging.getLogger("onion_router.kube")


def holder_identity() -> str:
    """Who renews the Lease: the router pod (POD_NAME from the downward API) or this host."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def micro_time(now: datetime) -> str:
    """RFC 3339 MicroTime as Kubernetes writes it."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def phases_from(onion: dict[str, Any]) -> dict[str, str]:
    """Layer name -> phase from an Onion object's status."""
    layers = (onion.get("status") or {}).get("layers") or []
    return {
        str(layer["name"]): str(layer.get("phase") or "Unknown")
        for layer in layers
        if isinstance(layer, dict) and layer.get("name")
    }


class KubeLink:
    """Demand and readiness through the API server (in-cluster, or $KUBECONFIG outside)."""

    def __init__(self, namespace: str, onion: str, holder: str | None = None) -> None:
        self.namespace = namespace
        self.onion = onion
        self.holder = holder or holder_identity()
        self._api: client.ApiClient | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def _connect(self) -> client.ApiClient:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        configuration = client.Configuration()
        # KUBECONFIG is read now, not when kubernetes_asyncio was imported.
        await config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    async def start(self, on_phases: PhaseSink) -> None:
        self._api = await self._connect()
        self._watcher = asyncio.create_task(self._watch(on_phases))

    async def _watch(self, on_phases: PhaseSink) -> None:
        assert self._api is not None
        api = client.CustomObjectsApi(self._api)
        selector = f"metadata.name={self.onion}"
        while True:
            try:
                # A fresh watch lists first (ADDED events), so a restart misses nothing.
                async with watch.Watch() as stream:
                    events = stream.stream(
                        api.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        field_selector=selector,
                        timeout_seconds=300,
                    )
                    async for event in events:
                        obj = event["object"]
                        if event["type"] == "DELETED":
                            on_phases(dict.fromkeys(phases_from(obj), "Unknown"))
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            on_phases(phases_from(obj))
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning(
                    "watching onion %s/%s failed, reconnecting: %s", self.namespace, self.onion, err
                )
                await asyncio.sleep(1.0)  # back off before reconnecting

    async def renew(self, lease: str) -> None:
        assert self._api is not None, "start() first"
        body = {"spec": {"renewTime": micro_time(datetime.now(UTC)), "holderIdentity": self.holder}}
        try:
            await client.CoordinationV1Api(self._api).patch_namespaced_lease(
                lease, self.namespace, body
            )
        except ApiException as err:
            if err.status == 404:
                raise LeaseMissing(
                    f"demand Lease {self.namespace}/{lease} does not exist; "
                    "is the onion operator running?"
                ) from None
            raise

    async def annotations(self, lease: str) -> dict[str, str]:
        """A Lease's annotations (the thresholds Lease: what other replicas published)."""
        assert self._api is not None, "start() first"
        found = await client.CoordinationV1Api(self._api).read_namespaced_lease(
            lease, self.namespace
        )
        return dict(found.metadata.annotations or {})

    async def annotate(self, lease: str, values: Mapping[str, str]) -> None:
        """Merge these annotations into a Lease's."""
        assert self._api is not None, "start() first"
        body = {"metadata": {"annotations": dict(values)}}
        await client.CoordinationV1Api(self._api).patch_namespaced_lease(
            lease, self.namespace, body
        )

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._api is not None:
            await self._api.close()
