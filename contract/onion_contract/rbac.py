"""The operator's RBAC rules, defined once: `make generate` renders them into the reference
ClusterRoles (operator/rbac.yaml) and the Helm chart's Roles (templates/_rbac_rules.tpl).

What the operator calls (its kube.py, leader.py and handlers.py), per managed namespace: read
Onions and write their status (never the spec); server-side apply and delete the children
(Deployments, Services, ConfigMaps, ServiceAccounts, PVCs, demand Leases, the router's Role and
RoleBinding, HPAs, pre-pull DaemonSets, prefetch Jobs, the router's HTTPRoute); watch Leases,
Deployments, Services, ConfigMaps and HPAs; post Events. It creates the router's Role without
`escalate`/`bind` because it holds every permission that Role grants.
"""

from __future__ import annotations

from dataclasses import dataclass

from onion_contract import names

ALL = ("get", "list", "watch", "create", "update", "patch", "delete")
WRITE = ("get", "list", "create", "update", "patch", "delete")  # applied and deleted, not watched


@dataclass(frozen=True)
class PolicyRule:
    """One rule of a Role or ClusterRole, with the reason it is needed."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str = ""
    resource_names: tuple[str, ...] = ()


# In every namespace whose Onions the operator manages (or cluster-wide for all of them).
OPERATOR_RULES = (
    PolicyRule((names.GROUP,), (names.PLURAL,), ("get", "list", "watch")),
    PolicyRule((names.GROUP,), (f"{names.PLURAL}/status",), ("get", "patch", "update")),
    PolicyRule(
        (names.GROUP,),
        (f"{names.PLURAL}/finalizers",),
        ("update",),
        "owner references with blockOwnerDeletion",
    ),
    PolicyRule(
        ("coordination.k8s.io",),
        ("leases",),
        ALL,
        "demand Leases and the leader-election Lease",
    ),
    PolicyRule(("apps",), ("deployments",), ALL),
    PolicyRule(("apps",), ("daemonsets",), WRITE, "coldStart.prePullImages"),
    PolicyRule(("batch",), ("jobs",), WRITE, "coldStart.prefetchWeights"),
    PolicyRule(("",), ("services", "configmaps"), ALL),
    PolicyRule(("",), ("serviceaccounts", "persistentvolumeclaims"), WRITE),
    PolicyRule(("rbac.authorization.k8s.io",), ("roles", "rolebindings"), WRITE),
    PolicyRule(
        ("autoscaling",),
        ("horizontalpodautoscalers",),
        ALL,
        "for the core and layers with `autoscaling`",
    ),
    PolicyRule(
        ("gateway.networking.k8s.io",),
        ("httproutes",),
        WRITE,
        "the router's HTTPRoute (spec.router.httpRoute)",
    ),
    PolicyRule(("",), ("events",), ("create", "patch")),
)

# Cluster-wide even when only some namespaces are watched: kopf's observers list and watch CRDs
# and namespaces (and retry and log 403s without them). Read-only.
DISCOVERY_RULES = (
    PolicyRule(
        ("apiextensions.k8s.io",),
        ("customresourcedefinitions",),
        ("list", "watch"),
        "kopf checks that the watched resources exist",
    ),
    PolicyRule(
        ("",),
        ("namespaces",),
        ("list", "watch"),
        "kopf's namespace observer, even for explicit --namespace names",
    ),
)

# Leader election in the operator's own namespace (create cannot be limited by name).
LEADER_RULES = (
    PolicyRule(("coordination.k8s.io",), ("leases",), ("create",)),
    PolicyRule(
        ("coordination.k8s.io",),
        ("leases",),
        ("get", "update"),
        resource_names=(names.LEADER_LEASE,),
    ),
)
