#!/usr/bin/env python3
"""Reference vectors for the router's prompt embedder, from sentence-transformers itself.

Run once, in a throwaway venv outside the repo (PyTorch is gigabytes; the router never needs it):
  python3 -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install sentence-transformers torch
  HF_HUB_OFFLINE=1 /tmp/st-venv/bin/python hack/embedding_reference.py FOLDER \\
    > tests/data/embedding-reference.json
FOLDER is the verified all-MiniLM-L6-v2 folder (`python -m onion_lab.embedder_files` prints it).
tests/unit/test_embedding.py checks onion_router.embedding against the file.
"""

from __future__ import annotations

import json
import sys

# Varied on purpose: short and empty, prompts like the bank's, code, numbers, scripts other than
# Latin, and texts longer than the 256 tokens sentence-transformers truncates to.
LONG_STORY = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps "
    "as his father had taught him, and lit the great lamp that swept the dark water. "
) * 12
LONG_CODE = "\n".join(
    f"def step_{i}(state: dict[str, int]) -> dict[str, int]:\n"
    f"    state['x{i}'] = state.get('x{i - 1}', 0) * {i} + {i * i}\n"
    "    return state\n"
    for i in range(1, 30)
)
TEXTS = [
    "",
    "   ",
    "hi",
    "Hello World",
    "What is the capital of France?",
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' market "
    "daily for $2 per fresh duck egg. How much in dollars does she make every day at the market?",
    'def has_close_elements(numbers: list[float], threshold: float) -> bool:\n    """Check if in '
    "given list of numbers, are any two numbers closer to each other than given threshold.\n"
    '    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    """\n',
    "Passage: Ethanol fuel is ethyl alcohol, the same type of alcohol found in alcoholic "
    "beverages.\nQuestion: does ethanol take more energy make that produces?\nAnswer yes or no:",
    "3.14159 2.71828 1.41421 0 -1 42 1e-9 0x1F 1,000,000 2026-12-03T06:50:01Z",
    "SELECT name, COUNT(*) FROM orders WHERE total > 100 GROUP BY name ORDER BY 2 DESC;",
    "Ünïcödé façade, naïve café, Straße, Ærøskøbing",
    "东京是日本的首都，也是世界上人口最多的城市之一。",  # noqa: RUF001 (a fullwidth comma, on purpose)
    "日本語のテキストと한국어 텍스트와 русский текст",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "🙂🚀🔥 emoji 👩‍💻 and symbols ∑∫√≈≠ ← → ©®™",
    '<html><body><p class="x">Tags &amp; entities</p></body></html>',
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "  leading and trailing whitespace, tabs\tand\nnewlines  ",
    LONG_STORY,
    LONG_CODE,
    " ".join(str(n) for n in range(400)),
]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(sys.argv[1], device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    vectors = model.encode(TEXTS, batch_size=1, convert_to_numpy=True)
    items = []
    for text, vector in zip(TEXTS, vectors, strict=True):
        # sentence-transformers strips the text, then truncates to max_seq_length
        encoded = model.tokenizer(text.strip(), truncation=True, max_length=model.max_seq_length)
        tokens = len(encoded["input_ids"])
        items.append(
            {"text": text, "tokens": tokens, "vector": [round(float(v), 6) for v in vector]}
        )
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "made_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "call": "SentenceTransformer(folder, device='cpu').encode(texts, batch_size=1)",
        },
        "max_seq_length": model.max_seq_length,
        "items": items,
    }
    # one item a line: small, and a diff shows which text changed
    head = json.dumps({k: v for k, v in out.items() if k != "items"}, ensure_ascii=False)
    lines = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    sys.stdout.write(head[:-1] + ', "items": [\n' + lines + "\n]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
