"""Verifiable-reward tasks: generation, splits and reward functions."""

import numpy as np
import pytest
import torch

from hsp.rl.tasks import (BASE_VOCAB_SIZE, BLANK, EOS, MASK, TOKEN_TEXT, VOCAB_SIZE, Addition, Countdown, Sudoku4, all_sudoku4_grids,
                          count_solutions, detokenize, drop_overlap, get_task)


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


def _tokens(text: str, length: int) -> list[int]:
    ids = [TOKEN_TEXT.index(c) for c in text]
    return ids + [EOS] * (length - len(ids))


def _countdown_reward(task: Countdown, prompt: str, response: str) -> float:
    p = torch.tensor([_tokens(prompt, task.prompt_len)])
    return float(task.reward(p, torch.tensor([_tokens(response, task.response_len)])))


@pytest.mark.parametrize("response, expected", [
    ("(13-7)*5", 1.0), ("5*(13-7)", 1.0), ("(13-7)*5$", 1.0),  # valid, any order
    ("13-7*5", 0.0),  # precedence: 13 - 35
    ("(13-7)*7", 0.0),  # uses 7 twice and not 5
    ("13-7", 0.0),  # leaves a number unused
    ("13-7+5", 0.0),  # valid equation, wrong target (11)
    ("5/(7-7)", 0.0),  # division by zero (and reuses 7)
    ("(13-7*5", 0.0), ("13-7)*5", 0.0), ("13--7*5", 0.0), ("", 0.0),  # malformed
    ("(13-07)*5", 0.0),  # leading zero
    ("13$-7*5", 0.0),  # padding inside the equation
])
def test_rl_countdown_reward_on_hand_made_equations(response, expected):
    assert _countdown_reward(Countdown(), "13,07,05=30", response) == expected


def test_rl_countdown_reward_is_exact_with_fractions():
    task = Countdown()
    assert _countdown_reward(task, "03,06,09=27", "9/(3/9)") == 0.0  # uses 9 twice
    assert _countdown_reward(task, "02,03,06=09", "6/2*3") == 1.0  # (6/2)*3, left-associative
    assert _countdown_reward(task, "02,03,06=01", "6/(2*3)") == 1.0
    assert _countdown_reward(task, "02,03,06=01", "6/2*3") == 0.0
    assert _countdown_reward(task, "03,04,06=08", "6/(3/4)") == 1.0  # a fractional intermediate, exactly 8
    assert _countdown_reward(task, "05,05,05=01", "5/5*5/5") == 0.0  # four numbers used, three given


def test_rl_countdown_items_solvable_fixed_length_and_disjoint():
    task = Countdown()
    train, test = task.make_split("train", 300, seed=0), task.make_split("test", 300, seed=0)
    for batch in (train, test):
        assert batch.prompts.shape == (300, task.prompt_len) and batch.answers.shape == (300, task.response_len)
        assert torch.equal(task.reward(batch.prompts, batch.answers), torch.ones(300, dtype=torch.float64))
        assert int(batch.prompts.max()) < task.vocab_size and int(batch.answers.max()) < task.vocab_size
    numbers, target = task.parse_prompt(train.prompts[0].tolist())
    assert len(numbers) == 3 and all(1 <= n <= 20 for n in numbers) and 1 <= target <= 99
    assert detokenize(train.prompts[0]) == ",".join(f"{n:02d}" for n in numbers) + f"={target:02d}"
    assert not torch.equal(train.prompts, test.prompts)
    held_out = drop_overlap(test, train)
    assert 0 < len(held_out.prompts) <= 300
    seen = {tuple(p.tolist()) for p in train.prompts}
    assert not any(tuple(p.tolist()) in seen for p in held_out.prompts)
    assert torch.equal(task.make_split("train", 300, seed=0).prompts, train.prompts)  # deterministic


def test_rl_vocabularies_keep_old_ids_and_sampler_defaults():
    assert (MASK, BASE_VOCAB_SIZE, VOCAB_SIZE, len(TOKEN_TEXT)) == (14, 15, 21, 21)
    assert Sudoku4().vocab_size == Addition().vocab_size == BASE_VOCAB_SIZE  # unchanged by Countdown
    assert get_task("countdown").vocab_size == VOCAB_SIZE
    assert Addition().default_sample_steps == Addition().response_len == 3  # one digit per step
    assert Countdown().default_sample_steps == Countdown().response_len
    assert Sudoku4().default_sample_steps == 8  # two cells per step (see Sudoku4.default_sample_steps)


def test_rl_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="sudoku4"):
        get_task("chess")
