"""`spec.router.httpRoute`: the operator, with exactly the reference RBAC, creates an HTTPRoute
to the router's Service that the real Gateway API CRDs (the published release, pinned) accept."""

from __future__ import annotations

import json

import pytest
import yaml

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.waiting import wait_until
from tests.support.operator import assert_never_refused, onion_yaml
from tests.support.published_crds import install_published_crds

pytestmark = pytest.mark.cluster

ROUTE = {
    "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
    "hostnames": ["chat.example.com"],
}


def test_http_route_to_the_router(cluster: Cluster, namespace: str, restricted: Cluster) -> None:
    ns = namespace
    crds = install_published_crds(cluster, "gateway-api")
    bundle = yaml.safe_load((crds / "gateway.networking.k8s.io_httproutes.yaml").read_text())
    assert bundle["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] == "standard"
    apply_crd(cluster)
    proc = OperatorProcess(restricted, ns).start()
    try:
        onion = onion_yaml("chat", [], router={"httpRoute": ROUTE})
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion)

        def route() -> dict | None:
            # One read: between an existence check and a get, the operator may delete it.
            out = cluster.kubectl(
                "-n", ns, "get", "httproute", "chat-router", "-o", "json", check=False
            )
            return json.loads(out.stdout) if out.returncode == 0 else None

        obj = wait_until(route, timeout=30, what="the router's HTTPRoute")
        assert obj["spec"]["parentRefs"][0] == {
            "group": "gateway.networking.k8s.io",  # defaulted by the Gateway API schema
            "kind": "Gateway",
            "name": "public",
            "namespace": "gateways",
            "sectionName": "https",
        }
        assert obj["spec"]["hostnames"] == ["chat.example.com"]
        backend = obj["spec"]["rules"][0]["backendRefs"][0]
        assert (backend["name"], backend["port"], backend["kind"]) == ("chat-router", 80, "Service")
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "Onion"
        assert cluster.exists("-n", ns, "service", "chat-router")

        # A hostname the Gateway API would refuse is refused on the Onion already.
        bad = onion_yaml("chat", [], router={"httpRoute": {**ROUTE, "hostnames": ["Chat_1"]}})
        out = cluster.kubectl("-n", ns, "apply", "-f", "-", input=bad, check=False)
        assert out.returncode != 0 and "spec.router.httpRoute.hostnames[0]" in out.stderr

        # Removed from the spec: the HTTPRoute is deleted, the router's Service stays.
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", []))
        wait_until(lambda: route() is None, timeout=30, what="the HTTPRoute deleted")
        assert cluster.exists("-n", ns, "service", "chat-router")
        assert_never_refused(proc.logs())
    finally:
        proc.stop()
