"""Kubernetes API I/O: the only module that talks to the API server.

Children are written with server-side apply under one field manager (`onion-operator`); wakes
and sleeps are JSON merge patches of one layer Deployment; status goes to the status subresource.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from onion_contract import names
from onion_operator import constants as c
from onion_operator.metrics import OperatorMetrics

Obj = dict[str, Any]
Objs = list[Obj]  # (`Kube.list` hides the builtin in the class body)
ApiError = ApiException  # re-exported so callers need not import the client library

# kind -> (API path prefix, plural); every kind the operator reads or writes.
_RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "Service": ("/api/v1", "services"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "HTTPRoute": (f"/apis/{c.HTTPROUTE_API_VERSION}", "httproutes"),
    names.KIND: (f"/apis/{names.API_VERSION}", names.PLURAL),
}

# kind -> (client library API class, resource in its method names): the kinds the operator watches.
_WATCHABLE: dict[str, tuple[type[Any], str]] = {
    "Lease": (client.CoordinationV1Api, "lease"),
    "Deployment": (client.AppsV1Api, "deployment"),
    "Service": (client.CoreV1Api, "service"),
    "ConfigMap": (client.CoreV1Api, "config_map"),
    "HorizontalPodAutoscaler": (client.AutoscalingV2Api, "horizontal_pod_autoscaler"),
}

# Kinds the operator lists to garbage-collect them itself when a layer (or its autoscaling, its
# pre-pull or an old model's prefetch) is removed from the spec; owner references cover the
# rest, the watches the Leases and Deployments.
LISTED_LAYER_KINDS = ("Service", "HorizontalPodAutoscaler", "DaemonSet", "Job")

# What a pass may meet: an API error, or the API server unreachable or slow. It retries.
RETRYABLE = (ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError)

Forbidden = 403
NotFound = 404
Conflict = 409


def _path(kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """A kind's path in one namespace, or across all of them (`namespace` None, no name)."""
    prefix, plural = _RESOURCES[kind]
    if namespace is None:
        return f"{prefix}/{plural}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def resource_of(path: str) -> str:
    """The resource a request path names, for metrics: `deployments`, `onions/status`, `events`
    (in a namespace or across all); the discovery paths (`/api`, `/apis/...`) are `discovery`."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts[:-1]:
        rest = parts[parts.index("namespaces") + 2 :]
        if rest:
            return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        return "discovery"
    prefix = 2 if parts[:1] == ["api"] else 3  # /api/v1/..., /apis/<group>/<version>/...
    return parts[prefix] if len(parts) > prefix else "discovery"


class Kube:
    """A thin async client over kubernetes_asyncio's ApiClient, speaking plain dicts.

    With `metrics`, every request is counted by verb, resource and status code."""

    def __init__(self, api: client.ApiClient, metrics: OperatorMetrics | None = None) -> None:
        self.api = api
        self.metrics = metrics

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        metrics: OperatorMetrics | None = None,
        pool: int = 100,
    ) -> Kube:
        """In-cluster service account when running in a pod, else $KUBECONFIG / ~/.kube/config;
        at most `pool` connections at once (0: no limit)."""
        configuration = client.Configuration()
        configuration.connection_pool_maxsize = pool
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
        return cls(client.ApiClient(configuration), metrics)

    async def close(self) -> None:
        await self.api.close()

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        code = "error"  # no answer: the API server unreachable, or a timeout
        try:
            result, status, _ = await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object"},
            )  # by default (data, status, headers): the status is what the metrics count
            code = str(status)
            return result
        except ApiException as e:
            code = str(e.status)
            raise
        finally:
            if self.metrics is not None:
                self.metrics.api_requests.labels(method, resource_of(path), code).inc()

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            result: Obj = await self._call("GET", _path(kind, namespace, name))
        except ApiException as e:
            if e.status == NotFound:
                return None
            raise
        return result

    async def list(self, kind: str, namespace: str, selector: dict[str, str]) -> Objs:
        """The objects of `kind` in `namespace` whose labels have these values."""
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        return await self.list_pages(kind, namespace, labels)

    async def list_pages(
        self, kind: str, namespace: str | None, selector: str, page: int = 500
    ) -> Objs:
        """Every object of `kind` matching a label selector (`a=b,c`), in one namespace or all
        (None), read `page` at a time as informers do, so no single answer holds thousands."""
        items: Objs = []
        async for chunk, _ in self.list_in_pages(kind, namespace, selector, page):
            items.extend(chunk)
        return items

    async def list_in_pages(
        self, kind: str, namespace: str | None, selector: str, page: int = 500
    ) -> AsyncIterator[tuple[Objs, str]]:
        """The pages of such a list as they come, each with the resourceVersion the whole list is
        a snapshot of (a watch from it sees every change after the list)."""
        token = ""
        while True:
            query = [("labelSelector", selector), ("limit", str(page))]
            if token:
                query.append(("continue", token))
            result = await self._call("GET", _path(kind, namespace), query=query)
            meta = result.get("metadata") or {}
            yield result.get("items") or [], str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:
                return

    async def current_version(self, kind: str, namespace: str | None, selector: str) -> str:
        """The resourceVersion a watch of changes from now on starts from: one list request of
        at most one object (its answer's version is the collection's, however many there are)."""
        query = [("labelSelector", selector), ("limit", "1")]
        result = await self._call("GET", _path(kind, namespace), query=query)
        return str((result.get("metadata") or {}).get("resourceVersion", ""))

    async def watch(
        self,
        kind: str,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[Obj]:
        """Watch events (`{"type", "object"}`, bookmarks included) of `kind` after
        `resource_version`, until the server ends the stream (after `timeout_seconds`). A
        resourceVersion the server no longer has raises ApiError 410 Gone: list again."""
        call, args = self._list_call(kind, namespace)
        if self.metrics is not None:
            self.metrics.api_requests.labels(
                "WATCH", resource_of(_path(kind, namespace)), "200"
            ).inc()
        # The server ends the stream after timeout_seconds; silence well past that is a dead peer.
        async with asyncio.timeout(timeout_seconds + 60):
            # timeout_seconds given: Watch ends where the server ends the stream, and raises a
            # 410 instead of retrying it (the informer lists again).
            async with watch.Watch(return_type="object") as stream:
                events = stream.stream(
                    call,
                    *args,
                    label_selector=selector,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=timeout_seconds,
                )
                async for event in events:
                    yield {"type": event["type"], "object": event["raw_object"]}

    def _list_call(
        self, kind: str, namespace: str | None
    ) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The client library's list function for `kind` (in a namespace or all), and its
        positional arguments: what `watch.Watch` streams."""
        if kind == names.KIND:
            custom = client.CustomObjectsApi(self.api)
            if namespace is None:
                return custom.list_cluster_custom_object, (names.GROUP, names.VERSION, names.PLURAL)
            return custom.list_namespaced_custom_object, (
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
            )
        api_class, resource = _WATCHABLE[kind]
        api = api_class(self.api)
        if namespace is None:
            return getattr(api, f"list_{resource}_for_all_namespaces"), ()
        return getattr(api, f"list_namespaced_{resource}"), (namespace,)

    async def apply(self, obj: Obj, manager: str = c.FIELD_MANAGER, force: bool = True) -> Obj:
        """Server-side apply under `manager`; with `force`, taking over conflicting fields
        (without it, a field another manager owns with another value is a 409 Conflict)."""
        meta = obj["metadata"]
        query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
        result: Obj = await self._call(
            "PATCH",
            _path(obj["kind"], meta["namespace"], meta["name"]),
            body=obj,  # JSON is YAML; the client serialises it
            query=query,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: Obj, sub: str | None = None
    ) -> Obj:
        query = [("fieldManager", c.FIELD_MANAGER)]
        result: Obj = await self._call(
            "PATCH",
            _path(kind, namespace, name, sub),
            body=patch,
            query=query,
            content_type="application/merge-patch+json",
        )
        return result

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call(
                "DELETE", _path(kind, namespace, name), body={"propagationPolicy": "Background"}
            )
        except ApiException as e:
            if e.status != NotFound:
                raise

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        result: Obj = await self._call("POST", _path(obj["kind"], meta["namespace"]), body=obj)
        return result

    async def post_event(
        self, regarding: Obj, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        """A core/v1 Event about `regarding` (an Onion), as `kubectl describe` shows them."""
        meta = regarding["metadata"]
        stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion", names.API_VERSION),
                "kind": regarding.get("kind", names.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": c.FIELD_MANAGER},
            "reportingComponent": c.FIELD_MANAGER,
        }
        await self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)

    async def replace(self, obj: Obj) -> Obj:
        """PUT with the object's resourceVersion: fails with 409 if someone wrote in between."""
        meta = obj["metadata"]
        result: Obj = await self._call(
            "PUT", _path(obj["kind"], meta["namespace"], meta["name"]), body=obj
        )
        return result
