"""`hsp plan` in-process: summary, JSON round trip, Gantt chart, and each bad input."""

import numpy as np
import pytest

from cluster.cli import main
from solver import CostModel, StepPlan, load_preset, preset_cluster, validate
from solver.workloads import BatchSampler, get_workload

SMALL = ["--model", "gpt-7b", "--num-ranks", "16"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def batch_file(tmp_path):
    lengths = BatchSampler(get_workload("wikipedia"), 64, 96_000, seed=1).batch(0)
    path = tmp_path / "batch.txt"
    path.write_text("\n".join(map(str, lengths)) + "\n")
    return path, lengths


def test_plan_summary_from_a_lengths_file(capsys, batch_file):
    path, lengths = batch_file
    code, out, err = run_cli(capsys, "plan", "--lengths", str(path), *SMALL)
    assert code == 0, err
    assert f"{len(lengths)} sequences" in out and f"{int(lengths.sum()):,} tokens" in out
    assert "cost-model predictions" in out
    assert "xSP" in out and "lower bound" in out and "gap" in out and "solve:" in out
    mb_rows = [line for line in out.splitlines() if "xSP" in line]
    assert sum(int(row.split()[-3]) for row in mb_rows) == len(lengths)  # the seqs column


def test_plan_json_round_trips_and_validates(capsys, batch_file):
    path, lengths = batch_file
    code, out, _ = run_cli(capsys, "plan", "--lengths", str(path), *SMALL, "--json")
    assert code == 0
    plan = StepPlan.from_json(out)
    spec, cost = preset_cluster("gpt-7b", 16), load_preset("gpt-7b", int(lengths.max()))
    validate(plan, lengths, spec, cost)
    assert plan.strategy == "fast" and plan.num_ranks == 16
    assert StepPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("strategy", ["static", "batch-ada", "dcp-greedy", "static-bfd", "batch-ada-bfd"])
def test_plan_from_a_workload_with_each_baseline(capsys, strategy):
    argv = ["plan", "--workload", "wikipedia", "--batch-size", "48", "--max-len", "64k", "--seed", "3", *SMALL]
    code, out, err = run_cli(capsys, *argv, "--strategy", strategy, "--json")
    assert code == 0, err
    plan = StepPlan.from_json(out)
    lengths = BatchSampler(get_workload("wikipedia"), 48, 64_000, seed=3).batch(0)
    validate(plan, lengths, preset_cluster("gpt-7b", 16), load_preset("gpt-7b", 64_000))
    assert plan.strategy == strategy


def test_plan_static_degree_flag(capsys, batch_file):
    path, _ = batch_file
    code, out, err = run_cli(capsys, "plan", "--lengths", str(path), *SMALL, "--strategy", "static",
                             "--static-degree", "16", "--json")
    assert code == 0, err
    assert {g.degree for mb in StepPlan.from_json(out).micro_batches for g in mb.groups} == {16}


def test_plan_plot_writes_a_png(capsys, batch_file, tmp_path):
    path, _ = batch_file
    png = tmp_path / "gantt.png"
    code, out, _ = run_cli(capsys, "plan", "--lengths", str(path), *SMALL, "--plot", str(png))
    assert code == 0 and f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def _lengths_file(tmp_path, text):
    path = tmp_path / "lengths.txt"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (lambda p: ["--lengths", _lengths_file(p, "\n")], r"empty batch"),
        (lambda p: ["--lengths", _lengths_file(p, "100\n-4\n")], r"lengths\.txt:2: length -4 must be positive"),
        (lambda p: ["--lengths", _lengths_file(p, "100\n0\n")], r"lengths\.txt:2: length 0 must be positive"),
        (lambda p: ["--lengths", _lengths_file(p, "100\n200\nabc\n")], r"lengths\.txt:3: 'abc' is not an integer"),
        (lambda p: ["--lengths", str(p / "missing.txt")], r"does not exist"),
        (lambda p: ["--lengths", _lengths_file(p, "100\n2000000\n"), "--num-ranks", "8"], r"2,?000,?000"),
        (lambda p: ["--workload", "wikipedia", "--num-heads", "7"], r"num_heads=7 is odd"),
        (lambda p: ["--workload", "wikipedia", "--model", "gpt-1t"], r"unknown cost-model preset 'gpt-1t'"),
        (lambda p: ["--workload", "wikipedia", "--strategy", "magic"], r"unknown strategy 'magic'.*fast"),
        (lambda p: ["--workload", "no-such-workload"], r"unknown workload"),
        (lambda p: ["--workload", "wikipedia", "--max-len", "12kb"], r"cannot read '12kb' as a length"),
        (lambda p: ["--workload", "wikipedia", "--cost", str(p / "none.json")], r"does not exist"),
        (lambda p: ["--workload", "wikipedia", "--num-ranks", "0"], r"--num-ranks must be a positive"),
        # lengths beyond int64, a directory, an empty preset name, a cluster too large to plan
        (lambda p: ["--lengths", _lengths_file(p, "100\n" + "9" * 30 + "\n")],
         r"lengths\.txt:2: length 9{30} is larger than the largest token count"),
        (lambda p: ["--lengths", str(p)], r"is a directory; give a file with one sequence length per line"),
        (lambda p: ["--workload", str(p)], r"is a directory, not a lengths file"),
        (lambda p: ["--workload", "wikipedia", "--model", ""], r"unknown cost-model preset ''; choose one of gpt-13b"),
        (lambda p: ["--workload", "wikipedia", "--num-ranks", "1000000"],
         r"num_ranks=1,000,000 is above the planner's limit of 16,384 ranks"),
    ],
)
def test_plan_bad_input_exits_2_with_one_clear_line(capsys, tmp_path, make_argv, message):
    import re

    code, out, err = run_cli(capsys, "plan", *make_argv(tmp_path))
    assert code == 2
    assert "Traceback" not in err and out == ""
    assert err.startswith("hsp plan: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", ""], r"unknown cost-model preset ''; choose one of gpt-13b, gpt-30b, gpt-7b"),
        (["--num-ranks", "1000000"], r"above the planner's limit of 16,384 ranks"),
        (["--workload", "."], r"is a directory, not a lengths file"),
    ],
)
def test_simulate_edge_cases_exit_2_before_planning(capsys, argv, message):
    import re

    code = main(["simulate", "--batch-size", "16", "--steps", "1", "--no-progress", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("hsp simulate: error: ") and re.search(message, err), err


def test_a_huge_length_in_a_workload_file_names_file_and_line(capsys, tmp_path):
    path = _lengths_file(tmp_path, "100\n200\n" + str(2**63) + "\n")
    code = main(["simulate", "--workload", path, "--batch-size", "8", "--steps", "1", "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 2 and f"lengths.txt:3: length {2**63}" in err and "Traceback" not in err


def test_sequence_that_fits_nowhere_names_index_and_ways_out(capsys, tmp_path):
    code, _, err = run_cli(capsys, "plan", "--lengths", _lengths_file(tmp_path, "100\n300\n2000000\n"),
                           "--num-ranks", "8")
    assert code == 2 and err.count("\n") == 1
    capacity = load_preset("gpt-7b", 2_000_000).token_capacity(preset_cluster("gpt-7b", 8))
    assert f"sequence 2 has 2000000 tokens" in err and f"8 x {capacity}" in err
    assert "max length" in err and "add ranks" in err and "drop the sequence" in err


def test_cost_file_is_accepted(capsys, tmp_path, batch_file):
    path, lengths = batch_file
    cost_path = tmp_path / "cost.json"
    load_preset("gpt-7b", 192_000).save(cost_path)
    code, out, err = run_cli(capsys, "plan", "--lengths", str(path), "--cost", str(cost_path), "--num-ranks", "16",
                             "--memory-gib", "28", "--json")
    assert code == 0, err
    validate(StepPlan.from_json(out), lengths, preset_cluster("gpt-7b", 16), CostModel.load(cost_path))


def test_plan_flexsp_with_time_limit_reports_how_it_was_solved(capsys):
    argv = ["plan", "--workload", "wikipedia", "--batch-size", "16", "--num-ranks", "8", "--max-len", "32k",
            "--strategy", "flexsp", "--time-limit", "2"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "(proven optimal)" in out or "(time-limited, unproven)" in out or "% of optimal per micro-batch)" in out
    code, out, err = run_cli(capsys, *argv, "--json")
    plan = StepPlan.from_json(out)
    lengths = BatchSampler(get_workload("wikipedia"), 16, 32_000, seed=0).batch(0)
    validate(plan, lengths, preset_cluster("gpt-7b", 8), load_preset("gpt-7b", 32_000))
    assert plan.strategy == "flexsp" and not (plan.optimal and plan.time_limited)
    assert len(plan.info["mip_gap"]) == len(plan.micro_batches)
    code, _, err = run_cli(capsys, *argv[:-1], "0")
    assert code == 2 and "--time-limit must be positive" in err


def test_a_flag_without_its_strategy_warns(capsys, batch_file):
    path, _ = batch_file
    code, _, err = run_cli(capsys, "plan", "--lengths", str(path), *SMALL, "--static-degree", "8", "--json")
    assert code == 0 and "--static-degree only applies to the 'static', 'static-bfd' strategies; ignored" in err
