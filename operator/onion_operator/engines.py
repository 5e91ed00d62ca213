"""Model-server engines: image, command line, port, health path, cache dir, default resources.

The one table that knows how TGI, vLLM and llama.cpp's server are started; pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Engine:
    name: str
    image: str
    port: int
    health_path: str
    cache_dir: str  # where the engine keeps downloaded weights; the model cache mounts here
    cache_env: tuple[tuple[str, str], ...]
    resources: dict[str, Any] = field(default_factory=dict)

    def args(self, model: str, served_model: str) -> list[str]:
        """The engine's command-line arguments to serve `model` on `self.port`."""
        if self.name == "tgi":
            return ["--model-id", model, "--hostname", "0.0.0.0", "--port", str(self.port)]
        if self.name == "vllm":
            return [
                "--model",
                model,
                "--served-model-name",
                served_model,
                "--host",
                "0.0.0.0",
                "--port",
                str(self.port),
            ]
        # llama.cpp: a local GGUF path, or a Hugging Face repo (optionally `repo:quant`).
        source = ["-m", model] if model.startswith("/") else ["-hf", model]
        return [*source, "--alias", served_model, "--host", "0.0.0.0", "--port", str(self.port)]


_GPU = {"limits": {"nvidia.com/gpu": 1}}

ENGINES: dict[str, Engine] = {
    "tgi": Engine(
        name="tgi",
        image="ghcr.io/huggingface/text-generation-inference:3.3.4",
        port=8080,
        health_path="/health",
        cache_dir="/data",
        cache_env=(("HF_HOME", "/data"),),
        resources=_GPU,
    ),
    "vllm": Engine(
        name="vllm",
        image="vllm/vllm-openai:v0.10.1",
        port=8000,
        health_path="/health",
        cache_dir="/root/.cache/huggingface",
        cache_env=(("HF_HOME", "/root/.cache/huggingface"),),
        resources=_GPU,
    ),
    "llamacpp": Engine(
        name="llamacpp",
        image="ghcr.io/ggml-org/llama.cpp:server",
        port=8080,
        health_path="/health",
        cache_dir="/models",
        cache_env=(("LLAMA_CACHE", "/models"),),
        resources={},
    ),
}

ENGINE_NAMES = tuple(ENGINES)
