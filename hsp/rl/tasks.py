"""Tasks with verifiable rewards, generated in code: 4x4 Sudoku, multi-digit addition and
Countdown (reach a target with a few numbers and + - * /).

All share one token table (`TOKEN_TEXT`, ids stable across tasks). A task's model uses
the first `task.vocab_size` ids: Sudoku and addition use ids 0-14 (digits, + = _ $ and
MASK), exactly as before Countdown appended its ids 15-20, so their models, seeds and
checkpoints are unchanged. A task item is a fixed-length prompt and a fixed-length
reference response; every item of a task has the same lengths, so rollouts and ELBO
samples pack into equal-length sequences.

Train and test items come from disjoint seed streams: item i of split s is drawn from
``np.random.default_rng((seed, SPLIT_IDS[s], i))``. The trainer additionally drops test
items whose prompt also occurs in its training set (`drop_overlap`).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

from hsp.rl.names import TASK_NAMES

# Token ids: digits 0-9 are their own ids; Countdown's ids come after MASK so the
# older tasks keep their vocabulary (ids 0..BASE_VOCAB_SIZE-1) unchanged.
PLUS, EQUALS, BLANK, EOS, MASK = 10, 11, 12, 13, 14
BASE_VOCAB_SIZE = 15
MINUS, TIMES, DIVIDE, LPAREN, RPAREN, COMMA = 15, 16, 17, 18, 19, 20
VOCAB_SIZE = 21
TOKEN_TEXT = [str(d) for d in range(10)] + ["+", "=", "_", "$", "?", "-", "*", "/", "(", ")", ","]
assert len(TOKEN_TEXT) == VOCAB_SIZE
SPLIT_IDS = {"train": 0, "test": 1}


def detokenize(ids) -> str:
    return "".join(TOKEN_TEXT[int(i)] for i in ids)


@dataclass(frozen=True)
class TaskBatch:
    """Prompts (N, prompt_len) and reference responses (N, response_len), int64."""

    prompts: torch.Tensor
    answers: torch.Tensor


class Task(ABC):
    """A verifiable-reward task: generates items and scores responses in [0, 1]."""

    name: str
    prompt_len: int
    response_len: int
    vocab_size: int = BASE_VOCAB_SIZE
    """The model's vocabulary: token ids 0..vocab_size-1 (MASK included)."""

    @property
    def default_sample_steps(self) -> int:
        """Sampler steps when RLConfig.sample_steps is unset: one token per step, so every
        token is committed seeing all earlier commits (carries, equation syntax)."""
        return self.response_len

    @abstractmethod
    def item(self, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """One (prompt ids, reference response ids)."""

    @abstractmethod
    def reward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """(N,) float rewards in [0, 1] for responses (N, response_len)."""

    def solved(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the response is fully correct."""
        return self.reward(prompts, responses) >= 1.0

    def make_split(self, split: str, num_items: int, seed: int) -> TaskBatch:
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
        if num_items <= 0:
            raise ValueError(f"num_items must be > 0, got {num_items}")
        items = [self.item(np.random.default_rng((seed, SPLIT_IDS[split], i))) for i in range(num_items)]
        prompts = torch.tensor([p for p, _ in items], dtype=torch.long)
        answers = torch.tensor([a for _, a in items], dtype=torch.long)
        return TaskBatch(prompts, answers)


# ----------------------------------------------------------------------------- Sudoku


@lru_cache(maxsize=1)
def all_sudoku4_grids() -> np.ndarray:
    """All 288 valid 4x4 Sudoku grids, (288, 16) with digits 1-4, row-major."""
    perms = [np.array(p) for p in itertools.permutations(range(1, 5))]
    grids: list[np.ndarray] = []

    def extend(rows: list[np.ndarray]) -> None:
        if len(rows) == 4:
            grids.append(np.concatenate(rows))
            return
        r = len(rows)
        for p in perms:
            # columns so far stay distinct; rows 0-1 and 2-3 form the 2x2 boxes
            if any((p == q).any() for q in rows):
                continue
            if r % 2 and (set(p[:2]) != set(rows[-1][2:])):
                continue
            extend(rows + [p])

    extend([])
    return np.stack(grids)


def count_solutions(puzzle: np.ndarray) -> int:
    """Number of valid grids consistent with the givens (0 = blank) of a (16,) puzzle."""
    grids = all_sudoku4_grids()
    given = puzzle > 0
    return int(np.all(grids[:, given] == puzzle[given], axis=1).sum())


class Sudoku4(Task):
    """4x4 Sudoku with a unique solution.

    Prompt: the 16 cells row-major, digits 1-4 for givens and BLANK for blanks.
    Response: the full solved grid (16 digits). Reward: fraction of the blank cells
    whose digit equals the (unique) solution's, as in d1's Sudoku reward.
    """

    name = "sudoku4"
    prompt_len = 16
    response_len = 16

    @property
    def default_sample_steps(self) -> int:
        """Two cells per step (8 steps), half the cost of one per step: after the default
        200-step SFT, greedy test accuracy at 8 and 16 steps is 0.569 vs 0.568 (3 seeds,
        bench/results/rl_sampler_steps.md); one cell per step gains only +0.011 after 1000."""
        return self.response_len // 2

    def __init__(self, min_blanks: int = 4, max_blanks: int = 8):
        if not 1 <= min_blanks <= max_blanks <= 12:
            raise ValueError(f"need 1 <= min_blanks ({min_blanks}) <= max_blanks ({max_blanks}) <= 12")
        self.min_blanks, self.max_blanks = min_blanks, max_blanks

    def item(self, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        grids = all_sudoku4_grids()
        solution = grids[rng.integers(len(grids))]
        target = int(rng.integers(self.min_blanks, self.max_blanks + 1))
        puzzle = solution.copy()
        # Blank cells in random order, skipping any blank that would allow a second solution.
        for cell in rng.permutation(16):
            if (puzzle == 0).sum() == target:
                break
            saved, puzzle[cell] = puzzle[cell], 0
            if count_solutions(puzzle) > 1:
                puzzle[cell] = saved
        prompt = [BLANK if v == 0 else int(v) for v in puzzle]
        return prompt, [int(v) for v in solution]

    def reward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        blanks = prompts == BLANK  # (N, 16)
        solutions = torch.stack([torch.as_tensor(self.solve(p)) for p in prompts])
        correct = (responses == solutions) & blanks
        return correct.sum(1).double() / blanks.sum(1).clamp(min=1).double()

    def solve(self, prompt: torch.Tensor) -> np.ndarray:
        puzzle = np.where(prompt.numpy() == BLANK, 0, prompt.numpy())
        grids = all_sudoku4_grids()
        given = puzzle > 0
        matches = grids[np.all(grids[:, given] == puzzle[given], axis=1)]
        if len(matches) != 1:
            raise ValueError(f"puzzle {detokenize(prompt)} has {len(matches)} solutions; expected exactly 1")
        return matches[0]


# --------------------------------------------------------------------------- Addition


class Addition(Task):
    """a + b with `num_digits`-digit operands (zero-padded).

    Prompt: ``aa+bb=`` digits; response: the sum zero-padded to num_digits + 1 digits,
    most significant first. Reward: 1 if every digit is right, else 0.
    """

    name = "addition"

    def __init__(self, num_digits: int = 2):
        if not 1 <= num_digits <= 6:
            raise ValueError(f"num_digits must be in [1, 6], got {num_digits}")
        self.num_digits = num_digits
        self.prompt_len = 2 * num_digits + 2
        self.response_len = num_digits + 1

    @staticmethod
    def _digits(value: int, width: int) -> list[int]:
        return [int(c) for c in str(value).zfill(width)]

    def item(self, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        a, b = (int(rng.integers(10**self.num_digits)) for _ in range(2))
        n = self.num_digits
        prompt = self._digits(a, n) + [PLUS] + self._digits(b, n) + [EQUALS]
        return prompt, self._digits(a + b, n + 1)

    def reward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        n = self.num_digits
        place = 10 ** torch.arange(n, -1, -1)  # most significant first
        a = (prompts[:, :n] * place[1:]).sum(1)
        b = (prompts[:, n + 1 : 2 * n + 1] * place[1:]).sum(1)
        valid = (responses <= 9).all(1)
        value = (responses.clamp(max=9) * place).sum(1)
        return ((value == a + b) & valid).double()


# -------------------------------------------------------------------------- Countdown

OPS = {PLUS: (1, lambda a, b: a + b), MINUS: (1, lambda a, b: a - b),
       TIMES: (2, lambda a, b: a * b), DIVIDE: (2, lambda a, b: a / b if b else None)}
"""Operator id -> (precedence, exact function on Fractions; None = division by zero)."""


@dataclass(frozen=True)
class Expr:
    """An expression over the given numbers: its exact value and its tokens, written
    with the fewest parentheses that keep its meaning (left-associative, * / before + -)."""

    value: Fraction
    tokens: tuple[int, ...]
    prec: int  # precedence of the top operator; 3 for a bare number


def number_tokens(n: int) -> tuple[int, ...]:
    return tuple(int(c) for c in str(n))


def combine(left: Expr, op: int, right: Expr) -> Expr | None:
    """left op right, or None when it divides by zero."""
    prec, fn = OPS[op]
    value = fn(left.value, right.value)
    if value is None:
        return None
    # a - (b - c) and a / (b / c) need their parentheses; a + (b - c), a * (b / c) do not
    wrap_right = right.prec < prec or (right.prec == prec and op in (MINUS, DIVIDE))
    lt = (LPAREN, *left.tokens, RPAREN) if left.prec < prec else left.tokens
    rt = (LPAREN, *right.tokens, RPAREN) if wrap_right else right.tokens
    return Expr(value, (*lt, op, *rt), prec)


def expressions(numbers: tuple[int, ...]) -> list[Expr]:
    """Every expression using each number exactly once, in this order (all binary trees
    and operators; permutations are the caller's)."""
    if len(numbers) == 1:
        return [Expr(Fraction(numbers[0]), number_tokens(numbers[0]), 3)]
    out = []
    for split in range(1, len(numbers)):
        for left in expressions(numbers[:split]):
            for right in expressions(numbers[split:]):
                out += [e for op in OPS if (e := combine(left, op, right)) is not None]
    return out


@lru_cache(maxsize=4096)
def countdown_solutions(numbers: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """Reachable positive integer targets of a sorted multiset of numbers -> the canonical
    solution's tokens (shortest, then smallest token ids): one SFT answer per prompt."""
    best: dict[int, tuple[int, ...]] = {}
    for order in set(itertools.permutations(numbers)):
        for e in expressions(order):
            if e.value.denominator == 1 and e.value > 0:
                t = int(e.value)
                if t not in best or (len(e.tokens), e.tokens) < (len(best[t]), best[t]):
                    best[t] = e.tokens
    return best


class _Parser:
    """Recursive descent over response tokens: expr := term (+|- term)*,
    term := factor (*|/ factor)*, factor := number | ( expr ). Numbers have no leading zero."""

    def __init__(self, tokens: list[int]):
        self.tokens, self.pos, self.numbers = tokens, 0, []

    def peek(self) -> int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def binary(self, ops: tuple[int, int], operand) -> Fraction:
        value = operand()
        while self.peek() in ops:
            op = self.tokens[self.pos]
            self.pos += 1
            value = OPS[op][1](value, operand())
            if value is None:
                raise ValueError("division by zero")
        return value

    def expr(self) -> Fraction:
        return self.binary((PLUS, MINUS), self.term)

    def term(self) -> Fraction:
        return self.binary((TIMES, DIVIDE), self.factor)

    def factor(self) -> Fraction:
        if self.peek() == LPAREN:
            self.pos += 1
            value = self.expr()
            if self.peek() != RPAREN:
                raise ValueError("unclosed parenthesis")
            self.pos += 1
            return value
        start = self.pos
        while self.peek() is not None and self.peek() <= 9:
            self.pos += 1
        digits = self.tokens[start:self.pos]
        if not digits or (digits[0] == 0 and len(digits) > 1):
            raise ValueError("expected a number without leading zeros")
        self.numbers.append(int("".join(map(str, digits))))
        return Fraction(self.numbers[-1])


def evaluate_equation(tokens: list[int]) -> tuple[Fraction, list[int]] | None:
    """(exact value, numbers used) of a response: an expression then only EOS padding;
    None if malformed or it divides by zero."""
    end = tokens.index(EOS) if EOS in tokens else len(tokens)
    if any(t != EOS for t in tokens[end:]):
        return None
    parser = _Parser(tokens[:end])
    try:
        value = parser.expr()
    except ValueError:
        return None
    return (value, parser.numbers) if parser.pos == end else None


class Countdown(Task):
    """Reach the target with each given number used exactly once (as in d1/TinyZero's
    Countdown) and + - * / with parentheses; intermediate fractions are allowed (exact
    arithmetic), division by zero is invalid.

    Prompt: the numbers zero-padded to the width of max_number, separated by ``,``, then
    ``=`` and the zero-padded target, e.g. ``07,13,05=30``. Response: an equation such as
    ``(13-7)*5``, EOS-padded to the longest minimal-parenthesis equation. Items are
    solvable by construction: the target is drawn uniformly from the positive integers
    <= max_target that some equation reaches, and the reference is the canonical solution
    (`countdown_solutions`). Reward: 1 for a well-formed equation that uses exactly the
    given numbers and equals the target, else 0. No format reward: SFT on the references
    teaches the format (the SFT model's rollouts are nearly all well-formed), and a
    partial reward for form would only shrink the spread of rewards within a group.
    """

    name = "countdown"
    vocab_size = VOCAB_SIZE

    def __init__(self, num_numbers: int = 3, max_number: int = 20, max_target: int = 99):
        if not 2 <= num_numbers <= 4:
            raise ValueError(f"num_numbers must be in [2, 4], got {num_numbers}")
        if not 1 <= max_number <= 99 or not 1 <= max_target <= 999:
            raise ValueError(f"need 1 <= max_number ({max_number}) <= 99 and 1 <= max_target ({max_target}) <= 999")
        self.num_numbers, self.max_number, self.max_target = num_numbers, max_number, max_target
        self.number_width, self.target_width = len(str(max_number)), len(str(max_target))
        self.prompt_len = num_numbers * (self.number_width + 1) + self.target_width
        # digits, operators, and at most one pair of parentheses per non-root operator
        self.response_len = num_numbers * self.number_width + (num_numbers - 1) + 2 * (num_numbers - 2)

    def _padded(self, value: int, width: int) -> list[int]:
        return [int(c) for c in str(value).zfill(width)]

    def item(self, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        while True:
            numbers = [int(v) for v in rng.integers(1, self.max_number + 1, self.num_numbers)]
            solutions = countdown_solutions(tuple(sorted(numbers)))
            targets = sorted(t for t in solutions if t <= self.max_target)
            if targets:
                break
        target = targets[int(rng.integers(len(targets)))]
        prompt: list[int] = []
        for n in numbers:
            prompt += self._padded(n, self.number_width) + [COMMA]
        prompt[-1] = EQUALS
        answer = list(solutions[target])
        return prompt + self._padded(target, self.target_width), answer + [EOS] * (self.response_len - len(answer))

    def parse_prompt(self, prompt: list[int]) -> tuple[list[int], int]:
        """(numbers, target) of a prompt."""
        w = self.number_width + 1
        numbers = [int("".join(map(str, prompt[i * w:i * w + self.number_width]))) for i in range(self.num_numbers)]
        return numbers, int("".join(map(str, prompt[self.num_numbers * w:])))

    def reward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(prompts), dtype=torch.float64)
        for i, (p, r) in enumerate(zip(prompts.tolist(), responses.tolist())):
            numbers, target = self.parse_prompt(p)
            result = evaluate_equation(r)
            if result is not None and result[0] == target and sorted(result[1]) == sorted(numbers):
                out[i] = 1.0
        return out


def drop_overlap(test: TaskBatch, train: TaskBatch) -> TaskBatch:
    """Test items whose prompt does not occur in `train` (so test accuracy is held out)."""
    seen = {tuple(p.tolist()) for p in train.prompts}
    keep = torch.tensor([tuple(p.tolist()) not in seen for p in test.prompts], dtype=torch.bool)
    return TaskBatch(test.prompts[keep], test.answers[keep])


TASKS = {"sudoku4": Sudoku4, "addition": Addition, "countdown": Countdown}
assert tuple(TASKS) == TASK_NAMES


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
