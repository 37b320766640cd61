"""`hsp rl` end to end (a couple of steps, tiny settings): run directory and errors."""

import json

import pytest

from cluster.cli import main

MODEL = ["--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--train-items", "32", "--test-items", "8",
         "--hidden-size", "16", "--num-layers", "1", "--no-progress", "--num-threads", "1"]
TINY = ["--sft-steps", "3", "--mc-samples", "2", *MODEL]


def test_rl_cli_smoke_writes_summary_and_plot(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["rl", "--task", "sudoku4", "--algo", "bgpo", "--run-dir", str(run_dir), "--eval-every", "1", *TINY]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy_before"] <= 1.0 and 0.0 <= summary["test_accuracy_after"] <= 1.0
    assert summary["config"]["algo"] == "bgpo" and summary["config"]["mc_samples"] == 2
    assert len(summary["history"]) == 2 and summary["peak_saved_bytes"] > 0
    assert (run_dir / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the diffusion LM is recorded, so `hsp export` can refuse it with the reason
    assert main(["export", str(run_dir), "--out", str(tmp_path / "hf")]) == 2
    assert "bidirectional=True cannot be exported" in capsys.readouterr().err and not (tmp_path / "hf").exists()
    # the SFT weights are reusable: a second run with --sft-checkpoint starts from them
    again = tmp_path / "again"
    assert main(["rl", "--algo", "diffu-grpo", "--run-dir", str(again), "--sft-checkpoint", str(run_dir / "sft.pt"), *MODEL]) == 0
    s2 = json.loads((again / "summary.json").read_text())
    assert s2["config"]["mc_samples"] == 1  # diffu-grpo's default
    assert s2["test_accuracy_before"] == summary["test_accuracy_before"]


def test_rl_cli_addition_full_elbo(tmp_path):
    assert main(["rl", "--task", "addition", "--algo", "full-elbo", "--run-dir", str(tmp_path), *TINY]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["task"] == "addition"


def test_rl_cli_user_errors(tmp_path, capsys):
    assert main(["rl", "--algo", "diffu-grpo", "--mc-samples", "16", "--run-dir", str(tmp_path), *MODEL]) == 2
    assert "--mc-samples 1" in capsys.readouterr().err
    assert main(["rl", "--algo", "full-elbo", "--act-budget-bytes", "1000", "--run-dir", str(tmp_path), *TINY]) == 2
    assert "budget" in capsys.readouterr().err


def test_rl_cli_countdown(tmp_path):
    assert main(["rl", "--task", "countdown", "--run-dir", str(tmp_path), *TINY]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["task"] == "countdown" and len(summary["history"]) == 2


def test_rl_cli_shuffled_control_and_kl_record_diagnostics(tmp_path):
    run_dir = tmp_path / "ctl"
    assert main(["rl", "--advantage-control", "shuffle", "--kl-coef", "0.1", "--eval-every", "1", "--run-dir", str(run_dir), *TINY]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["advantage_control"] == "shuffle" and summary["config"]["kl_coef"] == 0.1
    for record in summary["history"]:
        assert 0.0 <= record["tied_group_share"] <= 1.0 and record["group_reward_std"] >= 0.0
        assert record["entropy"] > 0.0 and record["kl"] >= 0.0 and 0.0 <= record["train_reward"] <= 1.0
    assert summary["history"][1]["kl"] > 0.0  # one update away from the reference
    assert 0.0 <= summary["test_before"]["train_reward"] <= 1.0


def test_rl_cli_recipe_errors(tmp_path, capsys):
    assert main(["rl", "--kl-coef", "-1", "--run-dir", str(tmp_path), *TINY]) == 2
    assert "kl_coef=-1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a choices error from argparse
        main(["rl", "--advantage-control", "random", "--run-dir", str(tmp_path), *TINY])
    assert exit_info.value.code == 2 and "none, shuffle" in capsys.readouterr().err
    assert main(["rl", "--sft-stop-accuracy", "0", "--run-dir", str(tmp_path), *TINY]) == 2
    assert "sft_stop_accuracy=0.0" in capsys.readouterr().err
