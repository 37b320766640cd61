"""Verifiable-reward tasks: generation, splits and reward functions."""

import numpy as np
import pytest
import torch

from hsp.rl.tasks import BLANK, EOS, Addition, Sudoku4, all_sudoku4_grids, count_solutions, drop_overlap, get_task


def _valid(grid: np.ndarray) -> bool:
    g = grid.reshape(4, 4)
    units = [g[r] for r in range(4)] + [g[:, c] for c in range(4)]
    units += [g[r : r + 2, c : c + 2].ravel() for r in (0, 2) for c in (0, 2)]
    return all(sorted(u) == [1, 2, 3, 4] for u in units)


def test_rl_sudoku_grids_are_all_valid_4x4_sudokus():
    grids = all_sudoku4_grids()
    assert grids.shape == (288, 16)  # the known count of 4x4 Sudoku grids
    assert len({tuple(g) for g in grids}) == 288
    assert all(_valid(g) for g in grids)


def test_rl_sudoku_puzzles_unique_and_consistent():
    task = Sudoku4()
    batch = task.make_split("train", 60, seed=0)
    for p, a in zip(batch.prompts, batch.answers):
        blanks = p == BLANK
        assert task.min_blanks <= int(blanks.sum()) <= task.max_blanks
        assert torch.equal(p[~blanks], a[~blanks])  # givens agree with the solution
        assert _valid(a.numpy())
        assert count_solutions(np.where(blanks.numpy(), 0, p.numpy())) == 1


def test_rl_sudoku_reward_is_fraction_of_blank_cells_correct():
    task = Sudoku4()
    batch = task.make_split("test", 4, seed=1)
    assert torch.equal(task.reward(batch.prompts, batch.answers), torch.ones(4, dtype=torch.float64))
    wrong = batch.answers.clone()
    blank_idx = torch.nonzero(batch.prompts[0] == BLANK).flatten()
    wrong[0, blank_idx[:2]] = wrong[0, blank_idx[:2]] % 4 + 1  # two blank cells wrong
    given_idx = torch.nonzero(batch.prompts[1] != BLANK).flatten()
    wrong[1, given_idx] = EOS  # givens are not scored
    r = task.reward(batch.prompts, wrong)
    assert abs(float(r[0]) - (1 - 2 / len(blank_idx))) < 1e-12
    assert float(r[1]) == 1.0
    assert not bool(task.solved(batch.prompts, wrong)[0])


def test_rl_splits_use_disjoint_seeds_and_are_deterministic():
    task = Sudoku4()
    a, b = task.make_split("train", 50, 0), task.make_split("train", 50, 0)
    assert torch.equal(a.prompts, b.prompts)
    test = task.make_split("test", 50, 0)
    assert not torch.equal(test.prompts, a.prompts)
    kept = drop_overlap(task.make_split("train", 10, 0), a)
    assert len(kept.prompts) == 0  # every item of a prefix occurs in the full split


def test_rl_addition_reward():
    task = Addition(num_digits=2)
    batch = task.make_split("train", 20, seed=3)
    assert batch.prompts.shape == (20, 6) and batch.answers.shape == (20, 3)
    assert torch.equal(task.reward(batch.prompts, batch.answers), torch.ones(20, dtype=torch.float64))
    prompt = torch.tensor([[4, 7, 10, 5, 8, 11]])  # 47+58=
    assert float(task.reward(prompt, torch.tensor([[1, 0, 5]]))) == 1.0
    assert float(task.reward(prompt, torch.tensor([[1, 0, 4]]))) == 0.0
    assert float(task.reward(prompt, torch.tensor([[EOS, 0, 5]]))) == 0.0  # non-digit


def test_rl_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="sudoku4"):
        get_task("chess")
