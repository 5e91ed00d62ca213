"""Secrets the router reads from files (mounted Kubernetes Secrets): the bearer keys its own
clients must send, and each endpoint layer's API key. Kubernetes swaps a Secret volume's files
when the Secret changes, so a file is read again when it changed, checked at most once a second.
"""

from __future__ import annotations

import hmac
import os
import time


class WatchedFile:
    """A small file whose content is re-read when the file changes (checked every `every` s)."""

    def __init__(self, path: str, every: float = 1.0) -> None:
        self.path = os.path.expanduser(path)
        self._every = every
        self._checked = -float("inf")
        self._stamp: tuple[int, int, int] | None = None
        self._content: bytes | None = None

    def read(self) -> bytes | None:
        """The file's content, or None while it is missing or unreadable."""
        now = time.monotonic()
        if now - self._checked < self._every:
            return self._content
        self._checked = now
        try:
            st = os.stat(self.path)  # follows the symlinks of a Secret volume
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with open(self.path, "rb") as handle:
                    self._content = handle.read()
                self._stamp = stamp
        except OSError:
            self._content, self._stamp = None, None
        return self._content


class Keys:
    """The bearer keys the router's clients may send: one per line, `#` comments."""

    def __init__(self, path: str) -> None:
        self._file = WatchedFile(path)
        self._raw: bytes | None = None
        self._keys: list[bytes] = []

    def _current(self) -> list[bytes]:
        raw = self._file.read()
        if raw is not self._raw:
            self._raw = raw
            lines = (raw or b"").splitlines()
            self._keys = [k.strip() for k in lines if k.strip() and not k.startswith(b"#")]
        return self._keys

    def allows(self, authorization: str | None) -> bool:
        keys = self._current()
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        given = authorization[7:].strip().encode()
        return any(hmac.compare_digest(given, key) for key in keys)


class ApiKey:
    """One endpoint layer's API key: the whole file, surrounding whitespace stripped."""

    def __init__(self, path: str, every: float = 1.0) -> None:
        self._file = WatchedFile(path, every)
        self.path = self._file.path
        self._raw: bytes | None = None
        self._key: str | None = None

    def value(self) -> str | None:
        """The key, or None while the file is missing, empty or not one line of ASCII."""
        raw = self._file.read()
        if raw is not self._raw:
            self._raw = raw
            key = (raw or b"").strip()
            usable = key and key.isascii() and b"\n" not in key and b"\r" not in key
            self._key = key.decode() if usable else None
        return self._key

    def __repr__(self) -> str:  # never the key itself
        return f"ApiKey(path={self.path!r})"
