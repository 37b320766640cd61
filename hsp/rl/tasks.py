"""Tasks with verifiable rewards, generated in code: 4x4 Sudoku and multi-digit addition.

Both share one small token vocabulary (`VOCAB`). A task item is a fixed-length prompt
and a fixed-length reference response; every item of a task has the same lengths, so
rollouts and ELBO samples pack into equal-length sequences.

Train and test items come from disjoint seed streams: item i of split s is drawn from
``np.random.default_rng((seed, SPLIT_IDS[s], i))``. The trainer additionally drops test
items whose prompt also occurs in its training set (`drop_overlap`).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from hsp.rl.names import TASK_NAMES

# Token ids: digits 0-9 are their own ids.
PLUS, EQUALS, BLANK, EOS, MASK = 10, 11, 12, 13, 14
VOCAB_SIZE = 15
TOKEN_TEXT = [str(d) for d in range(10)] + ["+", "=", "_", "$", "?"]
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


def drop_overlap(test: TaskBatch, train: TaskBatch) -> TaskBatch:
    """Test items whose prompt does not occur in `train` (so test accuracy is held out)."""
    seen = {tuple(p.tolist()) for p in train.prompts}
    keep = torch.tensor([tuple(p.tolist()) not in seen for p in test.prompts], dtype=torch.bool)
    return TaskBatch(test.prompts[keep], test.answers[keep])


TASKS = {"sudoku4": Sudoku4, "addition": Addition}
assert tuple(TASKS) == TASK_NAMES


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
