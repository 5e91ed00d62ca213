"""The prompt embedder of the learned policies: sentence-transformers/all-MiniLM-L6-v2
(Apache-2.0) as sentence-transformers runs it, in numpy, without PyTorch.

The 6-layer BERT encoder over HF `tokenizers` (the Rust tokenizer) and weights read from
`model.safetensors`; mean pooling over the tokens, L2 normalisation, inputs truncated to the
folder's `max_seq_length` (256). Equal to sentence-transformers' vectors to about 1e-6 (a test
checks it against committed reference vectors). Why numpy and not onnxruntime or llama.cpp:
docs/learned.md, with the measured sizes and latencies.

Needs the `learned` extra (numpy, tokenizers, safetensors, threadpoolctl), imported only when an
Embedder is made, so `import onion_router` never needs it; the router makes one only for a
learned policy that uses the prompt's embedding.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from tokenizers import Tokenizer

    Array = npt.NDArray[np.float32]

INSTALL = "pip install 'onion-of-experts[learned]'"
# model.safetensors of the official release (onion_lab.embedder_files fetches and verifies it)
KNOWN = {
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db": (
        "sentence-transformers/all-MiniLM-L6-v2"
    ),
}
# What a sentence-transformers folder of the model holds, and this runtime reads.
FILES = (
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)


class EmbedderError(RuntimeError):
    """The embedder cannot run: its extra is not installed, or its folder is not one it reads."""


def _import_runtime() -> tuple[Any, Any, Any, Any]:
    try:
        import numpy
        import safetensors
        import safetensors.numpy
        import threadpoolctl
        import tokenizers
    except ImportError as err:
        raise EmbedderError(
            f"the prompt embedder needs the `learned` extra ({err.name} is missing): {INSTALL}"
        ) from None
    return numpy, tokenizers, safetensors, threadpoolctl


def _json(folder: Path, name: str) -> Any:
    try:
        return json.loads((folder / name).read_text())
    except ValueError as err:
        raise EmbedderError(f"{folder / name} is not JSON: {err}") from None


class _Layer:
    """One encoder layer's weights, each Linear as (in, out) so that x @ w + b applies it."""

    def __init__(self, weights: Mapping[str, Array], prefix: str, np_: Any) -> None:
        def linear(name: str) -> tuple[Array, Array]:
            return weights[f"{prefix}{name}.weight"].T, weights[f"{prefix}{name}.bias"]

        q, k, v = (linear(f"attention.self.{n}") for n in ("query", "key", "value"))
        # one matmul for query, key and value
        self.qkv_w = np_.ascontiguousarray(np_.concatenate([q[0], k[0], v[0]], axis=1))
        self.qkv_b = np_.concatenate([q[1], k[1], v[1]])
        self.qkv_w.flags.writeable = self.qkv_b.flags.writeable = False
        self.attn_out = linear("attention.output.dense")
        self.attn_norm = linear("attention.output.LayerNorm")  # (gamma, beta)
        self.up = linear("intermediate.dense")
        self.down = linear("output.dense")
        self.out_norm = linear("output.LayerNorm")


class Embedder:
    """all-MiniLM-L6-v2 from a sentence-transformers folder: `embed(text)` is 384 floats of unit
    norm. Thread-safe: the weights are read-only and the tokenizer is locked. CPU-bound (tens of
    milliseconds; docs/learned.md has the measured figures): call it off the event loop.

    `threads`: the process's BLAS thread pool is set to this many threads (threadpoolctl);
    None leaves it as it is. One by default: one prompt is too small to share between threads,
    and OpenBLAS starts one thread per core it sees, which in a pod is the node's cores, not
    the pod's CPU limit (two threads on a busy two-core machine were several times slower than
    one: docs/learned.md).
    """

    def __init__(self, folder: str | Path, threads: int | None = 1) -> None:
        self.folder = Path(folder)
        np_, tokenizers, safetensors, threadpoolctl = _import_runtime()
        self._np = np_
        missing = [n for n in FILES if not (self.folder / n).is_file()]
        if missing:
            raise EmbedderError(
                f"{self.folder} is not an all-MiniLM-L6-v2 sentence-transformers folder: it "
                f"lacks {', '.join(missing)} (`make engine` fetches one; `python -m "
                "onion_lab.embedder_files` prints where)"
            )
        config = _json(self.folder, "config.json")
        pooling = _json(self.folder, "1_Pooling/config.json")
        modules = _json(self.folder, "modules.json")
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise EmbedderError(
                f"{self.folder}: this runtime runs BERT with GELU, not "
                f"{config.get('model_type')} with {config.get('hidden_act')}"
            )
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        if modes != {"pooling_mode_mean_tokens"}:
            raise EmbedderError(
                f"{self.folder}: this runtime pools by the mean only, not {pooling}"
            )
        types = [str(m.get("type", "")) for m in modules]
        self.normalize = any(t.endswith(".Normalize") for t in types)
        self.max_length = int(_json(self.folder, "sentence_bert_config.json")["max_seq_length"])
        self.dimensions = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        if self.max_length > int(config["max_position_embeddings"]):
            raise EmbedderError(f"{self.folder}: max_seq_length exceeds the position embeddings")

        tokenizer: Tokenizer = tokenizers.Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # tokenizer.json pads and truncates to 128; sentence-transformers pads a lone text not
        # at all and truncates it to max_seq_length (special tokens included).
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length)
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

        try:
            loaded = safetensors.numpy.load_file(str(self.folder / "model.safetensors"))
        except safetensors.SafetensorError as err:
            raise EmbedderError(f"{self.folder}/model.safetensors: {err}") from None
        weights = {
            k.removeprefix("bert."): v.astype(np_.float32, copy=False) for k, v in loaded.items()
        }
        for array in weights.values():
            array.flags.writeable = False  # shared by every thread: nothing may write to them
        try:
            self._words = weights["embeddings.word_embeddings.weight"]
            self._positions = weights["embeddings.position_embeddings.weight"]
            self._types = weights["embeddings.token_type_embeddings.weight"]
            self._norm = (
                weights["embeddings.LayerNorm.weight"],
                weights["embeddings.LayerNorm.bias"],
            )
            self._layers = [
                _Layer(weights, f"encoder.layer.{i}.", np_)
                for i in range(int(config["num_hidden_layers"]))
            ]
        except KeyError as err:
            raise EmbedderError(f"{self.folder}/model.safetensors lacks the tensor {err}") from None
        self._sha256: str | None = None
        if threads is not None:
            threadpoolctl.threadpool_limits(limits=threads, user_api="blas")

    def tokens(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids and type ids, as sentence-transformers tokenizes (it strips the text)."""
        with self._lock:
            encoding = self._tokenizer.encode(text.strip())
        return list(encoding.ids), list(encoding.type_ids)

    def _layer_norm(self, x: Array, gamma_beta: tuple[Array, Array]) -> Array:
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=-1, keepdims=True)
        out: Array = centred / self._np.sqrt(var + self.eps) * gamma_beta[0] + gamma_beta[1]
        return out

    def _gelu(self, x: Array) -> Array:
        """GELU with the exact erf, as BERT's "gelu" (not the tanh approximation). numpy has no
        erf: Abramowitz and Stegun 7.1.26, absolute error under 1.5e-7 (float32's own size),
        computed in place on two temporaries (this is a large share of the time at 256 tokens)."""
        np_ = self._np
        z = np_.abs(x)
        z *= np_.float32(1 / math.sqrt(2))  # |x| / sqrt(2)
        t = z * np_.float32(0.3275911)
        t += np_.float32(1)
        np_.reciprocal(t, out=t)
        out: Array = t * np_.float32(1.061405429)
        for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
            out += np_.float32(c)
            out *= t
        np_.square(z, out=z)
        np_.negative(z, out=z)
        np_.exp(z, out=z)
        out *= z  # 1 - erf(|x| / sqrt(2))
        np_.subtract(np_.float32(1), out, out=out)
        np_.copysign(out, x, out=out)  # erf(x / sqrt(2))
        out += np_.float32(1)
        out *= x
        out *= np_.float32(0.5)
        return out

    def _attention(self, x: Array, layer: _Layer) -> Array:
        np_ = self._np
        n, d = x.shape
        head = d // self.heads
        qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(n, 3, self.heads, head)
        qkv[:, 0] *= np_.float32(1 / math.sqrt(head))
        q, k, v = (qkv[:, i].transpose(1, 0, 2) for i in range(3))  # (heads, n, head)
        scores = q @ k.transpose(0, 2, 1)
        scores -= scores.max(axis=-1, keepdims=True)
        np_.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context: Array = (scores @ v).transpose(1, 0, 2).reshape(n, d)
        return context

    def vector(self, text: str) -> Array:
        """The embedding as a float32 array."""
        np_ = self._np
        ids, type_ids = self.tokens(text)
        x = self._words[ids] + self._positions[: len(ids)] + self._types[type_ids]
        x = self._layer_norm(x, self._norm)
        for layer in self._layers:
            attended = self._attention(x, layer) @ layer.attn_out[0] + layer.attn_out[1]
            x = self._layer_norm(attended + x, layer.attn_norm)
            hidden = self._gelu(x @ layer.up[0] + layer.up[1])
            x = self._layer_norm(hidden @ layer.down[0] + layer.down[1] + x, layer.out_norm)
        # A lone text has no padding: the mean over the attention mask is the mean over tokens.
        pooled: Array = x.mean(axis=0)
        if self.normalize:
            pooled = pooled / max(float(np_.linalg.norm(pooled)), 1e-12)
        return pooled

    def embed(self, text: str) -> list[float]:
        """384 floats of unit norm."""
        return [float(v) for v in self.vector(text)]

    def describe(self) -> dict[str, Any]:
        """What a learned model records of the embedder it was trained with."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with (self.folder / "model.safetensors").open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return {
            "model": KNOWN.get(self._sha256, self.folder.name),
            "sha256": self._sha256,
            "dimensions": self.dimensions,
            "maxSeqLength": self.max_length,
            "pooling": "mean",
            "normalize": self.normalize,
            "runtime": "numpy",
        }
