"""Secrets read from files (mounted Secrets): re-read when they change, never shown."""

from __future__ import annotations

import os
from pathlib import Path

from onion_router.credentials import ApiKey, Keys, WatchedFile


def swap(path: Path, text: str) -> None:
    """What the kubelet does to a Secret volume's file: a new one in its place."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_a_watched_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "key"
    watched = WatchedFile(str(path), every=0)
    assert watched.read() is None  # missing
    swap(path, "one")
    first = watched.read()
    assert first == b"one" and watched.read() is first  # unchanged: not read again
    swap(path, "two")
    assert watched.read() == b"two"
    path.unlink()
    assert watched.read() is None


def test_an_api_key_is_one_line_and_never_in_its_repr(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    key = ApiKey(str(path), every=0)
    swap(path, "  sk-secret-1\n")
    assert key.value() == "sk-secret-1"
    assert "sk-secret" not in repr(key) and str(path) in repr(key)
    for bad in ("", "two\nlines", "sk-ünicode"):
        swap(path, bad)
        assert key.value() is None, bad


def test_client_keys_skip_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    swap(path, "# the edge devices\nkey-a\n\n  key-b  \n")
    keys = Keys(str(path))
    assert keys.allows("Bearer key-a") and keys.allows("bearer key-b")
    assert not keys.allows("Bearer # the edge devices") and not keys.allows(None)
    assert not keys.allows("key-a")
