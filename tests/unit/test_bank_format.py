"""The answer bank's files: append-only shards, a torn last row dropped, open shards adopted,
rewrites byte-stable, keys that change with the model or the request."""

from __future__ import annotations

from pathlib import Path

from onion_lab import bank


def _row(n: int, dataset: str = "gsm8k") -> dict[str, object]:
    return {"dataset": dataset, "id": f"{dataset}/{n}", "layer": "core", "key": f"k{n}"}


def test_rows_are_appended_and_shards_close_every_few_rows(tmp_path: Path) -> None:
    writer = bank.ShardWriter(tmp_path, "gsm8k", "w0", rotate=2)
    for n in range(5):
        writer.write(_row(n))
    # Two closed shards of two rows; the fifth row waits in an open one.
    assert len(bank.shards(tmp_path)) == 2
    assert [r["id"] for r in bank.rows(tmp_path)] == [f"gsm8k/{n}" for n in range(4)]
    assert len(list(bank.rows(tmp_path, partial=True))) == 5
    writer.close()
    assert len(list(bank.rows(tmp_path))) == 5


def test_a_row_torn_by_a_crash_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    writer = bank.ShardWriter(tmp_path, "boolq", "w1", rotate=100)
    for n in range(3):
        writer.write(_row(n, "boolq"))
    assert writer.path is not None
    data = writer.path.read_bytes()
    writer.path.write_bytes(data[:-7])  # the last member cut short
    assert bank.adopt_partials(tmp_path) == 1
    assert [r["id"] for r in bank.rows(tmp_path)] == ["boolq/0", "boolq/1"]
    assert bank.shards(tmp_path, partial=True) == []


def test_a_rewrite_with_the_same_rows_changes_no_byte(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k" / "a.jsonl.gz"
    path.parent.mkdir()
    rows = [_row(1), _row(2)]
    assert bank.rewrite(path, rows) is True
    before = path.read_bytes()
    assert bank.rewrite(path, [dict(r) for r in rows]) is False
    assert path.read_bytes() == before
    assert bank.rewrite(path, [*rows, _row(3)]) is True


def test_keys_name_the_model_file_and_the_exact_request() -> None:
    request = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 8}
    key = bank.request_key("sha-a", request)
    assert key == bank.request_key("sha-a", dict(reversed(list(request.items()))))
    assert key != bank.request_key("sha-b", request)
    assert key != bank.request_key("sha-a", {**request, "max_tokens": 9})


def test_latest_keeps_the_current_rows_only() -> None:
    old = {**_row(1), "key": "old", "answer": "a"}
    new = {**_row(1), "key": "new", "answer": "b"}
    assert bank.latest([old, new])[("gsm8k", "gsm8k/1", "core")]["answer"] == "b"
    assert bank.latest([new, old], keys={"new"})[("gsm8k", "gsm8k/1", "core")]["answer"] == "b"
