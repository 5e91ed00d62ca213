"""Model-server engines: image, command line, port, health path, cache dir, default resources.

The one table that knows how TGI, vLLM and llama.cpp's server are started; pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Engine:
    name: str
    image: str
    port: int
    cache_dir: str  # where the engine keeps downloaded weights; the model cache mounts here
    cache_var: str  # the environment variable that points the engine at cache_dir
    gpu: bool  # whether it asks for one GPU by default
    health_path: str = "/health"
    # Where the engine keeps what its warm-up builds (compiled graphs, kernels), below cache_dir
    # so that it survives a sleep on the model cache volume: (variable, subdirectory) pairs.
    warmup_cache: tuple[tuple[str, str], ...] = ()
    # Whether the weights are a hub repository in the Hugging Face cache layout under cache_dir
    # (what a prefetch Job fills with `hf download`).
    hub_cache: bool = True

    @property
    def cache_env(self) -> tuple[tuple[str, str], ...]:
        warmup = tuple((var, f"{self.cache_dir}/{sub}") for var, sub in self.warmup_cache)
        return ((self.cache_var, self.cache_dir), *warmup)

    @property
    def resources(self) -> dict[str, Any]:
        """Default container resources: one GPU, or none (CPU)."""
        return {"limits": {"nvidia.com/gpu": 1}} if self.gpu else {}

    def args(self, model: str, served_model: str, revision: str | None = None) -> list[str]:
        """The engine's command-line arguments to serve `model` on `self.port`."""
        pinned = ["--revision", revision] if revision else []
        if self.name == "tgi":
            return [
                "--model-id",
                model,
                *pinned,
                "--hostname",
                "0.0.0.0",
                "--port",
                str(self.port),
            ]
        if self.name == "vllm":
            return [
                "--model",
                model,
                *pinned,
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


ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine(
            name="tgi",
            image="ghcr.io/huggingface/text-generation-inference:3.3.4",
            port=8080,
            cache_dir="/data",
            cache_var="HF_HOME",
            gpu=True,
        ),
        Engine(
            name="vllm",
            image="vllm/vllm-openai:v0.10.1",
            port=8000,
            cache_dir="/root/.cache/huggingface",
            cache_var="HF_HOME",
            gpu=True,
            # torch.compile's artifacts (vLLM keys them by model, config and versions) and
            # Triton's kernels: a wake after the first skips most of the compile step.
            warmup_cache=(("VLLM_CACHE_ROOT", "vllm"), ("TRITON_CACHE_DIR", "triton")),
        ),
        Engine(
            name="llamacpp",
            image="ghcr.io/ggml-org/llama.cpp:server",
            port=8080,
            cache_dir="/models",
            cache_var="LLAMA_CACHE",
            gpu=False,
            hub_cache=False,  # llama.cpp's -hf keeps GGUF files in its own layout
        ),
    )
}

ENGINE_NAMES = tuple(ENGINES)
