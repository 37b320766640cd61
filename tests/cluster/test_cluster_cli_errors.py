"""Bad input to `hsp train` / `hsp rl` / `hsp profile` through the real entry point
(cluster.cli.main, the `hsp` console script): exit 2 and one line that names the value
and the fix, before anything slow starts (no Ray, no SFT, no rank processes)."""

from __future__ import annotations

import socket

import pytest
from cluster_testlib import one_line_error

from cluster import checkpoint
from cluster.cli import main


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--metrics-port", "99999"], ["metrics.port=99999", "1..65535", "0 to turn metrics off"]),
        (["--min-t", "2"], ["min_t=2.0", "(0, 1)", "--min-t 0.001"]),
        (["--block-length", "0"], ["block_length=0", ">= 1", "left unset"]),
        (["--sample-steps", "0"], ["sample_steps=0", ">= 1", "left unset"]),
        (["--clip-eps", "-1"], ["clip_eps=-1.0", "> 0", "--clip-eps 0.2"]),
    ],
)
def test_cli_rl_rejects_bad_settings(capsys, tmp_path, argv, needles):
    err = one_line_error(capsys, ["rl", "--run-dir", str(tmp_path), "--no-progress", *argv])
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "sft.pt").exists()  # rejected before the SFT warm-up


def test_cli_rl_metrics_port_in_use_is_one_line(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = one_line_error(capsys, ["rl", "--run-dir", str(tmp_path), "--no-progress", "--metrics-port", str(port)])
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "pass another --metrics-port" in err
    assert not (tmp_path / "sft.pt").exists()


def test_cli_profile_rank_count_that_groups_cannot_tile(capsys, tmp_path):
    err = one_line_error(capsys, ["profile", "--out", str(tmp_path / "c.json"), "--num-ranks", "3"])
    assert "num_ranks=3" in err and "degree 2" in err and "use a power of two such as 2" in err


def test_cli_profile_nccl_without_a_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: nccl is a valid choice here")
    err = one_line_error(capsys, ["profile", "--out", str(tmp_path / "c.json"), "--backend", "nccl"])
    assert "profile.backend='nccl'" in err and "--backend gloo" in err


@pytest.mark.parametrize(
    "toml, needle",
    [
        ("[optimizer]\nlr = nan\n", "config key optimizer.lr = nan is not a finite number; write e.g. lr = 0.5"),
        ("[planner]\ndeadline_s = nan\n", "config key planner.deadline_s = nan is not a finite number"),
        ("[train]\nstep_timeout_s = inf\n", "config key train.step_timeout_s = inf is not a finite number"),
    ],
)
def test_cli_train_rejects_non_finite_floats_naming_the_key(capsys, tmp_path, toml, needle):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    assert needle in one_line_error(capsys, ["train", "--config", str(path)])


def test_cli_train_non_finite_flag_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--optimizer.lr", "nan"])
    assert exit_info.value.code == 2
    assert "--optimizer.lr: 'nan' is not a finite number" in capsys.readouterr().err


def test_cli_train_resume_past_the_requested_steps(capsys, tmp_path):
    checkpoint.commit(checkpoint.staging_dir(tmp_path, 30), {"step": 30, "data_fingerprint": {}}, keep_last=2)
    err = one_line_error(capsys, ["train", "--run-dir", str(tmp_path), "--resume", "--steps", "20",
                                  "--metrics-port", "0", "--no-progress"])
    assert "is at step 30 >= --steps 20; pass --steps > 30 to continue" in err


def test_cli_derived_keys_say_who_sets_them(capsys):
    with pytest.raises(SystemExit):
        main(["rl", "--model.max_seq_len", "64"])
    assert "model.max_seq_len is set by hsp rl (the task's prompt + response length)" in capsys.readouterr().err


def test_cli_print_config_resolves_without_running(capsys, tmp_path):
    assert main(["rl", "--algo", "diffu-grpo", "--run-dir", str(tmp_path), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "mc_samples = 1" in out and f'run_dir = "{tmp_path}"' in out
    assert not any(tmp_path.iterdir())
    assert main(["train", "--engine.dtype", "float64", "--optimizer.max_grad_norm", "0", "--engine.pin_cpus",
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert 'dtype = "float64"' in out and "max_grad_norm = 0.0" in out and "pin_cpus = true" in out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--activation-checkpointing"], ["engine.activation_checkpointing=True", "activation_checkpointing=False",
                                          "hsp profile --activation-checkpointing"]),
        (["--dtype", "bfloat16", "--state-sharding", "replicated"], ["engine.dtype='bfloat16'", "zero3"]),
        (["--optimizer.warmup_steps", "10", "--optimizer.decay_steps", "5"],
         ["optimizer.decay_steps=5 <= optimizer.warmup_steps=10"]),
        (["--keep-last", "0"], ["checkpoint.keep_last=0 must be >= 1"]),
    ],
)
def test_cli_train_rejects_state_and_schedule_settings(capsys, tmp_path, argv, needles):
    err = one_line_error(capsys, ["train", "--run-dir", str(tmp_path / "run"), "--metrics-port", "0", "--no-progress",
                                  *argv])
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "run").exists()  # refused before anything is written
