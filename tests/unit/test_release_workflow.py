"""The release workflow cannot run here (GitHub Actions, a registry); what can be checked is:
it parses, builds both architectures from this Dockerfile, pushes the chart as an OCI
artifact, and its version check holds for the versions in the repo now."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def test_release_workflow_shape() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    assert flow[True]["push"]["tags"] == ["v*.*.*"]  # YAML 1.1 reads the key `on` as True
    image = {s.get("uses", "").split("@")[0]: s for s in flow["jobs"]["image"]["steps"]}
    build = image["docker/build-push-action"]["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["push"] is True
    assert (REPO / build["context"] / "Dockerfile").exists()
    chart = flow["jobs"]["chart"]
    assert chart["needs"] == "image"
    assert "helm push" in chart["steps"][-1]["run"]


def test_the_version_check_passes_for_the_repo_as_it_is() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    check = next(s for s in flow["jobs"]["image"]["steps"] if s.get("id") == "version")["run"]
    version = re.search(r'^version = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    script = check.replace("$GITHUB_OUTPUT", "/dev/null")
    env = {"GITHUB_REF_NAME": f"v{version.group(1)}", "PATH": "/usr/bin:/bin"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, check=True)
    wrong = {**env, "GITHUB_REF_NAME": "v9.9.9"}
    failed = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=wrong)
    assert failed.returncode != 0
