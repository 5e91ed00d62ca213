"""The answer bank: every question asked once of every layer, recorded with all that a signal or
a cost figure could need, so that a new signal is a re-analysis, not a re-run of the models.

Layout, under `results/bank/`:

    manifest.json                       models (file, sha256), engine, prompts, sampling, dates
    <dataset>/<shard>.jsonl.gz          one JSON object per (dataset, question, layer)
    <dataset>/<shard>.jsonl.gz.partial  a shard still being recorded (resumed, never analysed)

Shards are append-only while recorded (one gzip member per row, so a crash loses at most the row
being written) and closed every few dozen rows, so a commit of the bank adds files and rewrites
none. A row's `key` is the sha256 of its model file's sha256 and the exact request: recording
skips a key it has, so a new model or a new prompt re-records only its own rows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from onion_lab.paths import RESULTS

BANK = RESULTS / "bank"
PARTIAL = ".partial"
# Fields every row has (outside tools read them); `probes` only on judged (inner) layers.
FIELDS = (
    "dataset",
    "id",
    "split",
    "layer",
    "correct",
    "answer",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
    "logprobs",
    "top_logprobs",
    "scores",
)


def request_key(model_sha256: str, request: Mapping[str, Any]) -> str:
    """The identity of a recorded call: which model file, asked exactly what."""
    text = json.dumps({"model": model_sha256, "request": request}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def messages_digest(messages: Iterable[Mapping[str, Any]]) -> str:
    """What a replay engine recognises a request by: its messages, nothing else."""
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()


def rounded(value: float, places: int = 4) -> float:
    """Logprobs kept to 4 decimals (1e-4 nats) to keep the bank small; -inf stays -inf... as
    the lowest finite float JSON can carry."""
    if not math.isfinite(value):
        return -1e9
    return round(value, places)


def read_shard(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one shard; a truncated last member (a crash mid-write) is dropped."""
    data = path.read_bytes()
    while data:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            text = inflater.decompress(data)
        except zlib.error:
            return
        if not inflater.eof:
            return
        for line in text.decode().splitlines():
            if line.strip():
                yield json.loads(line)
        data = inflater.unused_data


def shards(bank: Path = BANK, dataset: str | None = None, partial: bool = False) -> list[Path]:
    pattern = "*.jsonl.gz" + (PARTIAL if partial else "")
    folders = [bank / dataset] if dataset else sorted(p for p in bank.glob("*") if p.is_dir())
    return sorted(p for folder in folders for p in folder.glob(pattern))


def rows(
    bank: Path = BANK, dataset: str | None = None, partial: bool = False
) -> Iterator[dict[str, Any]]:
    """Every row of the closed shards (and of the open ones with `partial`)."""
    paths = shards(bank, dataset)
    if partial:
        paths += shards(bank, dataset, partial=True)
    for path in paths:
        yield from read_shard(path)


def latest(
    all_rows: Iterable[dict[str, Any]], keys: set[str] | None = None
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """One row per (dataset, id, layer): the one whose key is in `keys` (the current models and
    prompts) when given, else the last recorded."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in all_rows:
        if keys is not None and row["key"] not in keys:
            continue
        out[(row["dataset"], row["id"], row["layer"])] = row
    return out


class ShardWriter:
    """Appends rows to `<dataset>/<stamp>-<worker>-<n>.jsonl.gz.partial`, one gzip member a row,
    and closes the shard (drops `.partial`) every `rotate` rows and at the end."""

    def __init__(self, bank: Path, dataset: str, worker: str, rotate: int = 60) -> None:
        self.folder = bank / dataset
        self.folder.mkdir(parents=True, exist_ok=True)
        self.worker, self.rotate = worker, rotate
        self.count, self.serial = 0, 0
        self.path: Path | None = None

    def _open(self) -> Path:
        if self.path is None:
            self.serial += 1
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            name = f"{stamp}-{self.worker}-{self.serial:03d}.jsonl.gz{PARTIAL}"
            self.path = self.folder / name
        return self.path

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n"
        path = self._open()
        with path.open("ab") as out:
            out.write(gzip.compress(line.encode(), mtime=0))
            out.flush()
            os.fsync(out.fileno())
        self.count += 1
        if self.count % self.rotate == 0:
            self.close()

    def close(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.rename(self.path.with_name(self.path.name.removesuffix(PARTIAL)))
        self.path = None


def adopt_partials(bank: Path = BANK) -> int:
    """Close the shards a stopped recording left open (their rows are whole; a torn last
    member is cut off), so they can be analysed and committed. Returns how many."""
    count = 0
    for path in shards(bank, partial=True):
        good = list(read_shard(path))
        closed = path.with_name(path.name.removesuffix(PARTIAL))
        if good:
            closed.write_bytes(
                b"".join(
                    gzip.compress(
                        (json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n").encode(),
                        mtime=0,
                    )
                    for r in good
                )
            )
        path.unlink()
        count += 1
    return count


def rewrite(path: Path, new_rows: list[dict[str, Any]]) -> bool:
    """Replace a closed shard's rows (new grades or scores) in one gzip member, byte-stable:
    the same rows give the same bytes, so an unchanged bank leaves no diff. True if changed."""
    text = "".join(
        json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in new_rows
    )
    data = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    if path.exists() and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True
