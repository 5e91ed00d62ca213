"""The image a cluster pulls, as `make image` built it (buildah here, where no container engine
runs), run as the chart runs it (uid 65532) with `buildah run --isolation chroot`: both
entrypoints start, and the router inside answers a request from a model server outside.

`make test-image` builds the image and runs these; `make test` does not (the build takes
minutes and downloads a Debian base); CI runs both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onion_lab.paths import REPO
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import router_layer, router_process

VERSION = re.search(r'^version = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
IMAGE = os.environ.get("ONION_IMAGE", f"ghcr.io/onion-of-experts/onion:{VERSION}")
USER = "65532:65532"


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", *args], text=True, capture_output=True, check=check, timeout=300
    )


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the image (removed afterwards)."""
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed (apt-get install buildah debootstrap; make image)")
    if buildah("inspect", "--type", "image", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is not built: run `make image` (or `make test-image`)")
    name = buildah("from", "--pull-never", IMAGE).stdout.strip()
    try:
        yield name
    finally:
        buildah("rm", name, check=False)


def run(container: str, *argv: str, mounts: tuple[str, ...] = ()) -> list[str]:
    """The `buildah run` command line for `argv` in the container, as the image's user."""
    volumes = [f"--volume={m}" for m in mounts]
    return [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--user",
        USER,
        *volumes,
        container,
        "--",
        *argv,
    ]


def test_the_image_runs_both_entrypoints_as_a_numeric_non_root_user(container: str) -> None:
    config = json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)["OCIv1"]["config"]
    assert config["User"] == USER
    assert config["Cmd"] == ["onion-operator", "--all-namespaces"]
    uid = subprocess.run(run(container, "id", "-u"), text=True, capture_output=True, check=True)
    assert uid.stdout.strip() == "65532"
    for entrypoint in ("onion-operator", "onion-router"):
        out = subprocess.run(
            run(container, entrypoint, "--help"), text=True, capture_output=True, timeout=60
        )
        assert out.returncode == 0 and f"usage: {entrypoint}" in out.stdout, out.stderr


def test_the_image_carries_the_prompt_embedder_at_the_default_path(container: str) -> None:
    """A learned policy that reads the prompt's embedding works from the image alone."""
    code = (
        "from onion_contract.router_config import RouterConfig\n"
        "from onion_router.embedding import Embedder\n"
        "folder = RouterConfig.model_fields['embedder'].default\n"
        "print(folder, len(Embedder(folder).embed('What is 17 * 24?')))"
    )
    out = subprocess.run(
        run(container, "python", "-c", code), text=True, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/opt/onion-of-experts/embedders/all-minilm-l6-v2", "384"]


@contextlib.contextmanager
def router_in_image(container: str, config: dict, workdir: Path) -> Iterator[str]:
    """`onion-router` inside the image, its config mounted; chroot isolation shares the host's
    network, so it listens on this machine's loopback."""

    def launcher(workdir: Path, args: list[str]) -> list[str]:
        # Readable by the image's user, as a ConfigMap volume is (pytest's dirs are 0700).
        workdir.chmod(0o755)
        (workdir / "config.yaml").chmod(0o644)
        argv = ["onion-router", "--config", "/etc/onion/config.yaml", *args]
        return run(container, *argv, mounts=(f"{workdir}:/etc/onion:ro",))

    with router_process(config, workdir=workdir, launcher=launcher, timeout=60) as url:
        yield url
    # Its processes run in the container's environment, out of the test session's sight
    # (tests/support/leftovers.py): make sure here that none outlives the test.
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while (left := _listening(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"the router in the image still runs: {left}"


def _listening(port: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                if b"onion-router" in b" ".join(cmd) and str(port).encode() in cmd:
                    found.append(int(proc.name))
    return found


def test_the_router_in_the_image_answers_a_request(container: str, tmp_path: Path) -> None:
    with FakeTGI(Script(tokens=["from", " the", " image"]), name="core") as core:
        config = {"layers": [router_layer("core", core.url)]}
        with router_in_image(container, config, tmp_path) as url:
            body = {"model": "onion", "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == "from the image"
            assert response.headers["x-onion-layer"] == "core"
            assert httpx.get(f"{url}/ready", timeout=5).json() == {"ready": True, "core": "core"}
        assert len(core.stats.requests) == 1
