"""Published CRDs on the test cluster, pinned in hack/versions.env and fetched once into the
cache by `make bins` (hack/fetch-crds.sh): Gateway API, and prometheus-operator's monitors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from onion_lab.cluster import Cluster
from onion_lab.operator import wait_established
from onion_lab.paths import REPO

FETCH = REPO / "hack" / "fetch-crds.sh"
ESTABLISHED = {
    "gateway-api": ["httproutes.gateway.networking.k8s.io"],
    "prometheus-operator": [
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
    ],
}


def install_published_crds(cluster: Cluster, project: str) -> Path:
    """Apply `project`'s CRDs (gateway-api or prometheus-operator); returns their directory."""
    out = subprocess.check_output(["bash", str(FETCH), project], text=True)
    crds = Path(out.strip().splitlines()[-1])
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    for name in ESTABLISHED[project]:
        wait_established(cluster, name)
    return crds
