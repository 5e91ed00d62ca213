"""The Gateway API CRDs (standard channel, pinned in hack/versions.env) on the test cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.cluster import REPO, Cluster

FETCH = REPO / "hack" / "fetch-gateway-api.sh"


def install_gateway_api(cluster: Cluster) -> Path:
    """Apply the published CRDs (fetched once into the cache by `make bins`); their dir."""
    crds = Path(subprocess.check_output(["bash", str(FETCH)], text=True).strip().splitlines()[-1])
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/httproutes.gateway.networking.k8s.io",
    )
    return crds
