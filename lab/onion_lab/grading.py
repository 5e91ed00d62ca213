"""Strict graders for the answer bank, and a sandbox for the code answers.

GSM8K: the number on the answer's final `Answer:` line; no such line is wrong (a lenient grade,
the last number anywhere, is kept beside it, labelled). BoolQ: the first word is yes or no.
HumanEval: the task's `check()` must run to its end in a fresh Python with resource limits; a
nonce printed after it is the proof, so an answer that exits early (`sys.exit(0)`,
`os._exit(0)`) fails even with exit code 0.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_LINE = re.compile(r"^[\s*#>_-]*answer\s*[:\uff1a]\s*(.*)$", re.I | re.M)
_CODE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Grade:
    correct: bool  # the strict grade, the headline
    lenient: bool  # a forgiving reading, shown beside it, labelled
    detail: str  # what was read or why it failed, for a person checking the grader


# --- numbers (GSM8K) -------------------------------------------------------------------------


def _number(text: str) -> float | None:
    cleaned = text.replace(",", "").replace("$", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def final_answer_number(text: str) -> str | None:
    """The first number on the last `Answer:` line, or None when there is no such line (or no
    number on it)."""
    lines = _ANSWER_LINE.findall(text)
    if not lines:
        return None
    found = _NUMBER.search(lines[-1])
    return found.group(0) if found else None


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def grade_number(text: str, gold: str) -> Grade:
    want = _number(gold)
    strict, lenient = final_answer_number(text), last_number(text)

    def same(got: str | None) -> bool:
        value = _number(got) if got is not None else None
        return value is not None and want is not None and abs(value - want) < 1e-6

    detail = f"Answer line: {strict!r}" if strict is not None else "no 'Answer:' line"
    return Grade(same(strict), same(lenient), detail)


# --- yes / no (BoolQ) ------------------------------------------------------------------------


def grade_yes_no(text: str, gold: str) -> Grade:
    """Strict: the first word is the gold one. Lenient: the first yes or no anywhere."""
    words = _WORD.findall(text.lower())
    first = words[0] if words else None
    said = next((w for w in words if w in ("yes", "no")), None)
    return Grade(first == gold, said == gold, f"first word {first!r}")


# --- code (HumanEval) ------------------------------------------------------------------------

# Resource limits of a graded program: CPU seconds, address space, file size, processes. Wall
# time is bounded by the parent's timeout. RLIMIT_NPROC binds only non-root users (the kernel
# exempts root), so the guard below also removes the ways to start processes.
LIMITS = {"cpu_seconds": 10, "address_space_bytes": 1 << 30, "file_bytes": 1 << 20, "nproc": 16}
TIMEOUT_SECONDS = 15.0

_GUARD = """\
import os as _os, resource as _resource
_resource.setrlimit(_resource.RLIMIT_CPU, ({cpu_seconds}, {cpu_seconds}))
_resource.setrlimit(_resource.RLIMIT_AS, ({address_space_bytes}, {address_space_bytes}))
_resource.setrlimit(_resource.RLIMIT_FSIZE, ({file_bytes}, {file_bytes}))
_resource.setrlimit(_resource.RLIMIT_NPROC, ({nproc}, {nproc}))
_nonce_fd = _os.dup(1)
import shutil as _shutil, subprocess as _subprocess
for _name in ("system", "kill", "killpg", "fork", "forkpty", "execv", "execve", "execl",
              "spawnv", "spawnve", "popen", "remove", "unlink", "rmdir", "removedirs", "rename",
              "renames", "replace", "truncate", "chmod", "chown", "chroot", "setuid", "putenv"):
    if hasattr(_os, _name):
        setattr(_os, _name, None)
_shutil.rmtree = _shutil.move = _shutil.chown = None
_subprocess.Popen = _subprocess.run = _subprocess.call = None
del _name
"""


def code_of(text: str) -> str:
    """The answer's code: its first fenced block, else the whole answer."""
    match = _CODE.search(text)
    return match.group(1) if match else text


def humaneval_program(prompt: str, test: str, entry_point: str, answer: str, nonce: str) -> str:
    """The program that proves an answer: guard, the task's prompt (its imports and helpers)
    and the answer's code, the task's tests, `check()`, then the nonce, on a saved stdout."""
    code = code_of(answer)
    # A body only: the prompt has the signature. A whole function: the prompt's imports and
    # helpers, a stub of the function, then the answer's own.
    whole = f"def {entry_point}" in code
    body = prompt + "\n    pass\n\n" + code if whole else prompt + code
    return (
        _GUARD.format(**LIMITS)
        + f"\n{body}\n\n{test}\n\ncheck({entry_point})\n"
        + f"import sys as _sys\n_sys.stdout.flush()\n_os.write(_nonce_fd, b'\\n{nonce}\\n')\n"
    )


def run_program(source: str, nonce: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Run `source` in a fresh isolated Python in an empty temporary directory; it passed when
    it wrote the nonce (which only the end of `check()` leads to) and exited 0."""
    with tempfile.TemporaryDirectory(prefix="onion-grade-") as tmp:
        path = Path(tmp) / "candidate.py"
        path.write_text(source)
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-S", "-B", str(path)],
                cwd=tmp,
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f}s"
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode == 0 and nonce in lines:
        return True, "check() ran to its end"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return False, f"exit code {done.returncode}: {tail[0][:200]}"
    return False, "exited 0 before check() finished (no nonce)"


def grade_code(prompt: str, test: str, entry_point: str, answer: str) -> Grade:
    nonce = secrets.token_hex(16)
    passed, detail = run_program(humaneval_program(prompt, test, entry_point, answer, nonce), nonce)
    return Grade(passed, passed, detail)
