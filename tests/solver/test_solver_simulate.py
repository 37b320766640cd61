"""`hsp simulate` and solver.simulate: same batches for every strategy, stats, JSON fields."""

import json

import numpy as np
import pytest

from cluster.cli import main
from solver import load_preset, preset_cluster
from solver.simulate import format_table, simulate, workload_static_degree
from solver.workloads import BatchSampler, FileSource, get_workload

FIELDS = {"mean_step_s", "speedup_vs_static", "speedup_vs_batch_ada", "solve_s_median", "solve_s_p95",
          "lower_bound_gap", "speedup_vs_best_baseline", "best_baseline", "mip_gap_median", "lp_s_median",
          "solve_cpu_s_median", "solve_cpu_s_p95"}
BASELINES = "static,batch-ada,dcp-greedy,fast"


def test_static_degree_follows_the_workload_not_the_batch():
    """As in the paper: Wikipedia at N=64 needs SP32 at 192K and SP64 at 384K."""
    wiki = get_workload("wikipedia")
    for max_len, degree in [(192_000, 32), (384_000, 64)]:
        spec, cost = preset_cluster("gpt-7b", 64), load_preset("gpt-7b", max_len)
        assert workload_static_degree(wiki, max_len, spec, cost) == degree
    spec, cost = preset_cluster("gpt-7b", 8), load_preset("gpt-7b", 384_000)
    with pytest.raises(ValueError, match="fits no group.*lower --max-len, add ranks or memory"):
        workload_static_degree(wiki, 384_000, spec, cost)


def test_simulate_plans_the_same_batches_for_every_strategy():
    spec, cost = preset_cluster("gpt-7b", 16), load_preset("gpt-7b", 64_000)
    sampler = BatchSampler(get_workload("wikipedia"), 48, 64_000, seed=2)
    seen = []

    def on_plan(strategy, step, plan):
        seen.append((strategy, step, sum(len(g.seq_ids) for mb in plan.micro_batches for g in mb.groups)))

    stats = simulate(sampler, spec, cost, ["static", "fast"], num_steps=3,
                     options={"static": {"static_degree": 16}}, on_plan=on_plan)
    assert [(s, step) for s, step, _ in seen] == [(s, k) for k in range(3) for s in ("static", "fast")]
    assert all(n == 48 for *_, n in seen)
    assert stats["static"].speedup_vs_static == 1.0 and stats["fast"].speedup_vs_batch_ada is None
    assert stats["fast"].speedup_vs_static == pytest.approx(stats["static"].mean_step_s / stats["fast"].mean_step_s)
    assert stats["fast"].num_steps == 3 and len(stats["fast"].step_s) == 3
    assert stats["fast"].mean_step_s == pytest.approx(np.mean(stats["fast"].step_s))
    assert stats["fast"].lower_bound_gap >= -1e-9
    table = format_table(stats)
    assert table.splitlines()[0].split()[:2] == ["strategy", "mean_step_s"] and "fast" in table


def test_simulate_json_fields(capsys):
    code = main(["simulate", "--workload", "wikipedia", "--model", "gpt-7b", "--num-ranks", "16", "--max-len", "64k",
                 "--batch-size", "48", "--steps", "2", "--strategies", BASELINES, "--seed", "0", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == BASELINES.split(",")
    for name, row in data.items():
        assert FIELDS <= set(row), name
        assert row["mean_step_s"] > 0 and row["solve_s_p95"] >= row["solve_s_median"] >= 0
        assert row["speedup_vs_static"] == pytest.approx(data["static"]["mean_step_s"] / row["mean_step_s"])
        assert row["speedup_vs_batch_ada"] == pytest.approx(data["batch-ada"]["mean_step_s"] / row["mean_step_s"])
        best = min(data[s]["mean_step_s"] for s in ("static", "batch-ada", "dcp-greedy"))
        assert row["speedup_vs_best_baseline"] == pytest.approx(best / row["mean_step_s"])
    assert data["fast"]["speedup_vs_best_baseline"] >= 1 - 1e-9  # fast keeps the best candidate


def test_simulate_table_and_plot(capsys, tmp_path):
    png = tmp_path / "bars.png"
    code = main(["simulate", "--num-ranks", "16", "--max-len", "64k", "--batch-size", "32", "--steps", "2",
                 "--strategies", "static,fast", "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("cost-model simulation (predicted seconds, not measured)")
    assert "static SP degree 16" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "planning" in err  # the progress bar


def test_simulate_with_a_lengths_file_workload(capsys, tmp_path):
    path = tmp_path / "lengths.txt"
    path.write_text("\n".join(str(n) for n in [100, 2_000, 30_000, 500, 9_000]) + "\n")
    code = main(["simulate", "--workload", str(path), "--num-ranks", "16", "--batch-size", "20", "--steps", "1",
                 "--strategies", "static,fast", "--json", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert set(json.loads(out)) == {"static", "fast"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategies", "static,magic"], "unknown strategy 'magic'"),
        (["--steps", "0"], "must be positive"),
        (["--model", "gpt-1t"], "unknown cost-model preset"),
        (["--num-ranks", "8", "--max-len", "384k", "--strategies", "static"], "fits no group"),
    ],
)
def test_simulate_bad_input(capsys, argv, message):
    code = main(["simulate", "--batch-size", "16", "--steps", "1", "--no-progress", *argv])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("hsp simulate: error: ") and message in err and "Traceback" not in err


def test_file_source_longest():
    source = FileSource(np.array([5, 50, 500]))
    assert source.longest() == 500 and source.longest(499) == 50 and source.longest(4) is None


def test_simulate_includes_flexsp_and_its_solver_status(capsys):
    code = main(["simulate", "--num-ranks", "8", "--max-len", "32k", "--batch-size", "16", "--steps", "1",
                 "--strategies", "flexsp,fast", "--time-limit", "2", "--json", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert 0 <= data["flexsp"]["mip_gap_median"] < 0.05 and data["fast"]["mip_gap_median"] is None
    assert data["fast"]["lp_s_median"] > 0 and data["flexsp"]["lp_s_median"] is None
    assert data["fast"]["speedup_vs_static"] is None and data["fast"]["speedup_vs_best_baseline"] is None
