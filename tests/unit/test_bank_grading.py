"""The answer bank's strict graders: what passes, what fails, and that the grader cannot be fooled
by an answer that exits early or runs away."""

from __future__ import annotations

import pytest

from onion_lab import grading
from onion_lab.datasets import DATASETS

ADD = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
ADD_TEST = (
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
)


@pytest.mark.parametrize(
    ("answer", "strict", "lenient"),
    [
        ("3 * 12 = 36\nAnswer: 36", True, True),
        ("**Answer:** $1,236.", False, False),
        ("Answer: 1,236", False, False),
        ("so 36.\nAnswer: 36.0", True, True),
        ("Answer: \\boxed{36}", True, True),
        ("First, Answer: 12 is wrong.\nAnswer: 36", True, True),
        ("3 * 12 = 36", False, True),  # no Answer line: wrong, whatever the last number
        ("Answer: 35\nso really 36", False, True),
        ("I cannot solve this one.", False, False),
    ],
)
def test_gsm8k_takes_the_number_on_the_last_answer_line(
    answer: str, strict: bool, lenient: bool
) -> None:
    gold = "1236" if "1,236" in answer else "36"
    if "1,236" in answer:
        strict = lenient = True
    grade = grading.grade_number(answer, gold)
    assert (grade.correct, grade.lenient) == (strict, lenient)


@pytest.mark.parametrize(
    ("answer", "gold", "strict", "lenient"),
    [
        ("Yes", "yes", True, True),
        ("no.", "no", True, True),
        ("No, the passage says", "no", True, True),
        ("The answer is yes.", "yes", False, True),
        ("The", "yes", False, False),
        ("yes", "no", False, False),
    ],
)
def test_boolq_wants_the_word_first(answer: str, gold: str, strict: bool, lenient: bool) -> None:
    grade = grading.grade_yes_no(answer, gold)
    assert (grade.correct, grade.lenient) == (strict, lenient)


@pytest.mark.parametrize(
    ("answer", "passes"),
    [
        ("```python\ndef add(a, b):\n    return a + b\n```", True),
        ("    return a + b\n", True),  # a body: the prompt has the signature
        ("```python\ndef add(a, b):\n    return a - b\n```", False),
        ("def add(a, b):\n    return a + b\nimport sys\nsys.exit(0)\n", False),
        ("def add(a, b):\n    return a + b\nimport os\nos._exit(0)\n", False),
        ("def add(a, b):\n    return a + b\nraise SystemExit(0)\n", False),
        (
            "def add(a, b):\n    import subprocess\n    subprocess.run(['true'])\n"
            "    return a + b\n",
            False,
        ),
        ("def add(a, b):\n    import os\n    os.system('true')\n    return a + b\n", False),
        ("def add(a, b):\n    x = bytearray(2 ** 31)\n    return a + b\n", False),  # RLIMIT_AS
        ("def add(a, b):\n    print('ok')\n    return a + b\n", True),  # its own output is fine
    ],
)
def test_code_passes_only_when_check_ran_to_its_end(answer: str, passes: bool) -> None:
    assert grading.grade_code(ADD, ADD_TEST, "add", answer).correct is passes


def test_a_guessed_nonce_does_not_pass() -> None:
    answer = "def add(a, b):\n    return 0\nprint('0' * 32)\nimport os\nos._exit(0)\n"
    assert not grading.grade_code(ADD, ADD_TEST, "add", answer).correct


@pytest.mark.slow
def test_a_runaway_answer_is_stopped_by_its_cpu_limit() -> None:
    grade = grading.grade_code(
        ADD, ADD_TEST, "add", "def add(a, b):\n    while True:\n        pass\n"
    )
    assert not grade.correct


def test_every_canonical_humaneval_solution_passes_and_none_with_an_early_exit() -> None:
    humaneval = DATASETS["humaneval"]
    items = humaneval.items()
    assert len(items) == 164
    failing = [i.id for i in items if not humaneval.grade(i, i.gold).correct]
    assert failing == []
    exiting = [
        i.id
        for i in items[:10]
        if humaneval.grade(i, i.gold + "\nimport sys\nsys.exit(0)\n").correct
    ]
    assert exiting == []


def test_splits_are_fixed_by_the_id_and_about_half() -> None:
    gsm8k = DATASETS["gsm8k"].items()
    test = [i for i in gsm8k if i.split == "test"]
    assert 0.45 < len(test) / len(gsm8k) < 0.55
    assert DATASETS["gsm8k"].item("gsm8k/0").split == gsm8k[0].split
