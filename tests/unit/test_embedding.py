"""The router's prompt embedder gives sentence-transformers' own vectors, on the real
all-MiniLM-L6-v2 files (`make engine` fetches them; the tests that need them skip, saying so,
until then).

tests/data/embedding-reference.json was written by hack/embedding_reference.py with
sentence-transformers and PyTorch (versions in the file) from the same verified files.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from onion_lab import embedder_files
from onion_lab.paths import REPO
from onion_router.embedding import FILES, INSTALL, Embedder, EmbedderError

REFERENCE = json.loads((REPO / "tests" / "data" / "embedding-reference.json").read_text())
ITEMS: list[dict[str, Any]] = REFERENCE["items"]
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.9999


def _folder() -> Path:
    folder = embedder_files.cached()
    if folder is None:
        pytest.skip(
            "the all-MiniLM-L6-v2 files are not fetched: `make engine` "
            "(or python -m onion_lab.embedder_files) fetches and verifies them"
        )
    return folder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(_folder())


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_the_reference_exercises_what_it_should() -> None:
    tokens = [item["tokens"] for item in ITEMS]
    assert len(ITEMS) >= 20
    assert "" in [item["text"] for item in ITEMS]
    assert tokens.count(REFERENCE["max_seq_length"]) >= 2  # truncated texts
    assert all(len(item["vector"]) == 384 for item in ITEMS)
    assert set(REFERENCE["made_with"]) >= {"sentence_transformers", "torch"}


@pytest.mark.parametrize(
    "item", ITEMS, ids=[f"{i}-{it['tokens']}tok-{it['text'][:12]!r}" for i, it in enumerate(ITEMS)]
)
def test_equal_to_sentence_transformers(embedder: Embedder, item: dict[str, Any]) -> None:
    vector = embedder.embed(item["text"])
    assert len(vector) == 384 and all(isinstance(v, float) for v in vector)
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, abs_tol=1e-5)
    worst = max(abs(a - b) for a, b in zip(vector, item["vector"], strict=True))
    assert worst < MAX_ABS_DIFF
    assert _cosine(vector, item["vector"]) > MIN_COSINE
    assert len(embedder.tokens(item["text"])[0]) == item["tokens"]  # truncated at 256 as well


def test_threads_share_one_embedder(embedder: Embedder) -> None:
    texts = [item["text"] for item in ITEMS if item["tokens"] < 64] * 3
    alone = [embedder.embed(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(embedder.embed, texts))
    assert together == alone


def test_it_says_which_model_it_runs(embedder: Embedder) -> None:
    described = embedder.describe()
    assert described["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert described["sha256"] == embedder_files.FILES["model.safetensors"][1]
    assert (described["dimensions"], described["maxSeqLength"]) == (384, 256)
    assert described["normalize"] is True


def _copy(folder: Path, into: Path, leave_out: str = "") -> Path:
    """The small files copied, the weights linked: a folder to break one file of."""
    for name in FILES:
        if name == leave_out:
            continue
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        if name == "model.safetensors":
            (into / name).symlink_to(folder / name)
        else:
            shutil.copy(folder / name, into / name)
    return into


@pytest.mark.parametrize("name", FILES)
def test_a_folder_without_a_file_says_which(name: str, tmp_path: Path) -> None:
    folder = _copy(_folder(), tmp_path, leave_out=name)
    with pytest.raises(EmbedderError, match=rf"{tmp_path}.* lacks {name} .*make engine"):
        Embedder(folder)


def test_an_empty_folder_names_every_file(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError) as caught:
        Embedder(tmp_path)
    assert all(name in str(caught.value) for name in FILES)


def test_a_pooling_it_does_not_run_is_refused(tmp_path: Path) -> None:
    folder = _copy(_folder(), tmp_path)
    pooling = json.loads((folder / "1_Pooling/config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling/config.json").write_text(json.dumps(pooling))
    with pytest.raises(EmbedderError, match="pools by the mean only"):
        Embedder(folder)


def test_weights_that_are_not_safetensors_are_refused(tmp_path: Path) -> None:
    folder = _copy(_folder(), tmp_path, leave_out="model.safetensors")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EmbedderError, match=r"model\.safetensors: .*header"):
        Embedder(folder)


def _without(modules: str, code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter where importing any of `modules` fails."""
    prelude = textwrap.dedent(f"""
        import sys
        from tests.support.without_modules import Missing
        sys.meta_path.insert(0, Missing(set({modules!r}.split(","))))
    """)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("missing", ["numpy", "tokenizers", "safetensors", "threadpoolctl"])
def test_without_the_extra_the_error_says_what_to_install(missing: str, tmp_path: Path) -> None:
    done = _without(
        missing,
        f"""
        from onion_router.embedding import Embedder, EmbedderError
        try:
            Embedder({str(tmp_path)!r})
        except EmbedderError as err:
            print(err)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert INSTALL in done.stdout and missing in done.stdout
    assert INSTALL == "pip install 'onion-of-experts[learned]'"


def test_the_router_imports_without_the_extra() -> None:
    done = _without(
        "numpy,tokenizers,safetensors,threadpoolctl",
        """
        import onion_router.embedding, onion_router.learned, onion_router.policies
        print("imported")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
