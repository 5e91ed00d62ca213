"""What the learned models need at request time: each layer's loaded models (policy `learned`'s
answer model, `earlyWake`'s prompt model), the prompt embedder when a model uses the prompt's
embedding (loaded once, only then), and per request its prompt features, the embedding computed
once in a worker thread, started as the request arrives so that it overlaps the first answer.
The features and the models' arithmetic are pure (learned.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onion_contract.router_config import RouterConfig, RouterLayer
from onion_router.learned import LearnedModel, ModelFileError, answer_features, prompt_features

if TYPE_CHECKING:
    from onion_router.embedding import Embedder

log = logging.getLogger("onion_router.scoring")
TOP_ALTERNATIVES = 5  # the learned features' entropy and margin read the top 5 at each token


@dataclass(frozen=True)
class LayerModels:
    answer: LearnedModel | None  # policy learned
    prompt: LearnedModel | None  # earlyWake
    wake_probability: float


class Scoring:
    """The learned models of every layer, and the embedder if any of them needs it."""

    def __init__(self, config: RouterConfig, log_features: bool = False) -> None:
        self.layers: dict[str, LayerModels] = {}
        for layer in config.layers:
            self.layers[layer.name] = _load(layer)
        models = [m for t in self.layers.values() for m in (t.answer, t.prompt) if m is not None]
        self.needs_embedding = any(m.uses_embedding for m in models)
        self._embedder: Embedder | None = None
        if self.needs_embedding or log_features:
            self._embedder = _embedder(config.embedder, required=self.needs_embedding)

    @property
    def embeds(self) -> bool:
        return self._embedder is not None

    def of(self, layer: str) -> LayerModels:
        return self.layers.get(layer) or LayerModels(None, None, 1.0)

    def start(self, prompt: str) -> PromptFeatures:
        """A request's prompt features, the embedding begun at once (if any model needs it)."""
        return PromptFeatures(prompt, self._embedder)


def _load(layer: RouterLayer) -> LayerModels:
    e = layer.escalation

    def read(path: str | None, kind: str) -> LearnedModel | None:
        if path is None:
            return None
        try:
            model = LearnedModel.load(path)
        except ModelFileError as err:
            raise ModelFileError(f"layer {layer.name!r}: {err}") from None
        if model.kind != kind:
            raise ModelFileError(
                f"layer {layer.name!r}: {path} is a {model.kind} model, where a {kind} model "
                f"({'policy learned' if kind == 'answer' else 'earlyWake'}) belongs"
            )
        return model

    answer = read(e.model.path if e.policy == "learned" and e.model else None, "answer")
    prompt = read(e.early_wake.model.path if e.early_wake else None, "prompt")
    return LayerModels(answer, prompt, e.early_wake.probability if e.early_wake else 1.0)


def _embedder(folder: str, required: bool) -> Embedder | None:
    """The all-MiniLM-L6-v2 embedder; a missing one is fatal only when a model needs it."""
    try:
        from onion_router.embedding import Embedder, EmbedderError
    except ImportError as err:  # pragma: no cover - the module itself imports nothing heavy
        raise RuntimeError(f"the prompt embedder is not importable: {err}") from None
    try:
        return Embedder(folder)
    except EmbedderError as err:
        if required:
            raise RuntimeError(
                f"a learned model uses the prompt's embedding, but the embedder at {folder} "
                f"cannot be loaded: {err} (set `embedder:` in the router config)"
            ) from None
        log.info("no prompt embedder at %s (%s): the decision log has no embeddings", folder, err)
        return None


class PromptFeatures:
    """One request's prompt features; the embedding is computed once, off the event loop."""

    def __init__(self, prompt: str, embedder: Embedder | None) -> None:
        self.prompt = prompt
        self._task: asyncio.Task[Sequence[float]] | None = None
        if embedder is not None:
            self._task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(embedder.embed, prompt)
            )

    async def features(self) -> dict[str, float]:
        embedding = await self._task if self._task is not None else None
        return prompt_features(self.prompt, embedding)

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def answer_score(
    model: LearnedModel,
    logprobs: Sequence[float],
    top: Sequence[Sequence[Mapping[str, Any]]],
    finish_reason: str | None,
    verify: float | None,
    prompt: Mapping[str, float],
) -> tuple[float, dict[str, float]]:
    """P(the answer stands) by the layer's answer model, and the features it saw."""
    features = answer_features(logprobs, top, finish_reason, verify if model.uses_verify else None)
    features.update(prompt)
    return model.probability(features), features
