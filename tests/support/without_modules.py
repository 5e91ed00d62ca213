"""Run `onion-router` as if some packages were not installed (an edge install without the
`cluster` extra): any import of them fails as it would there.

python -m tests.support.without_modules kopf,kubernetes_asyncio -- --config FILE ...
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType


class Missing(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def main() -> int:
    names, _, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.meta_path.insert(0, Missing(set(names.split(","))))
    from onion_router.__main__ import main as router

    return router(argv)


if __name__ == "__main__":
    sys.exit(main())
