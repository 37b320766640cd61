"""`hsp train` on a real local Ray session: summary, falling loss, metrics, resume,
fault recovery and user text. One uninterrupted reference run is shared."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
import time
import urllib.request

import pytest
from cluster_testlib import free_port, tiny_config
from prometheus_client.parser import text_string_to_metric_families

from cluster.attribution import CAUSES
from cluster.metrics import SERIES
from cluster.trainer import run_training

pytestmark = pytest.mark.timeout(300)


def _losses(summary_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in open(summary_dir / "history.jsonl")]
    return {r["step"]: r["loss"] for r in rows}


def _scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.fixture(scope="module")
def reference_run(ray_session, tmp_path_factory):
    """6 steps, checkpoint every 3, metrics scraped over HTTP after step 3."""
    run_dir = tmp_path_factory.mktemp("reference")
    port = free_port()
    scraped = {}

    def scrape_at_step_3(scheduler, record):
        if record.step == 3:
            scraped.update(_scrape(port))
            scraped["_time"] = time.time()

    config = tiny_config(run_dir, **{"metrics.port": port})
    printed = io.StringIO()
    summary = run_training(config, callbacks=(scrape_at_step_3,), progress=False, out=printed)
    scraped["_printed"] = printed.getvalue()
    return run_dir, summary, scraped


def test_cluster_train_finishes_with_summary_and_falling_loss(reference_run):
    run_dir, summary, scraped = reference_run
    assert summary["steps"] == 6 and summary["last_step"] == 6
    assert "loss (first -> last)" in scraped["_printed"] and "worker restarts" in scraped["_printed"]
    assert summary["loss_last"] < summary["loss_first"] - 0.3
    for name in ("summary.json", "history.jsonl", "loss.png", "step_time.png", "plan_gantt.png"):
        assert (run_dir / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in open(run_dir / "history.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["measured_s"] > 0 and r["predicted_s"] > 0 and r["plan"].startswith("mb1: ") for r in rows)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["worker_restarts"] == 0 and saved["checkpoint_warnings"] == [] and "failure" not in saved
    # one shard file per rank plus the index, and the driver's JSON, for steps 3 and 6
    for step in (3, 6):
        names = {p.name for p in (run_dir / "checkpoints" / f"step-{step:06d}").iterdir()}
        assert names == {"__0_0.distcp", "__1_0.distcp", ".metadata", "run_state.json"}
    memory = saved["memory"]
    assert memory["state_sharding"] == "zero3"
    measured, predicted = memory["model_state_bytes_per_rank"], memory["predicted_model_state_bytes_per_rank"]
    assert abs(measured - predicted) <= 0.1 * predicted, memory  # 16 B/param over 2 ranks
    assert memory["activation_peak_bytes_per_rank"] > 0 and memory["budget_bytes_per_rank"] > measured
    assert 0 < saved["mfu_median"] < 1 and all(r["flops"] > 0 and r["lr"] > 0 for r in rows)


def test_cluster_metrics_endpoint_has_every_series(reference_run):
    _, _, s = reference_run
    for series in SERIES:
        if series.kind == "histogram":
            assert f"{series.name}_count" in s, series.name
        else:
            assert series.name in s, series.name

    def value(name, **labels):
        (sample,) = [x for x in s[name] if all(x.labels.get(k) == v for k, v in labels.items())]
        return sample.value

    assert value("hsp_steps_total") == 3
    assert value("hsp_step_duration_seconds_count") == 3
    assert value("hsp_tokens_total") > 3 * 16 * 16  # >= 16 sequences of >= 16 tokens per step
    assert 0 < value("hsp_loss") < 6
    assert value("hsp_solve_seconds", strategy="fast") > 0
    assert value("hsp_step_predicted_seconds") > 0 and value("hsp_step_measured_seconds") > 0
    assert value("hsp_prediction_error_ratio") >= 0
    assert value("hsp_imbalance_ratio") >= 1.0
    assert sum(value("hsp_sp_groups", sp_degree=d) for d in ("1", "2")) >= 1
    assert all(value("hsp_peak_memory_bytes", rank=r) > 10 * 2**20 for r in ("0", "1"))
    assert value("hsp_worker_restarts_total") == 0
    assert value("hsp_rerun_steps_total") == 0
    assert all(value("hsp_worker_failures_total", cause=c) == 0 for c in CAUSES)
    assert value("hsp_last_failed_rank") == -1
    assert value("hsp_planner_fallbacks_total") == 0
    assert abs(value("hsp_last_step_timestamp_seconds") - s["_time"]) < 60


def test_cluster_resume_equals_uninterrupted(reference_run, tmp_path):
    ref_dir, _, _ = reference_run
    first = run_training(tiny_config(tmp_path, **{"train.steps": 3}), progress=False)
    assert first["last_step"] == 3
    resumed = run_training(tiny_config(tmp_path, **{"checkpoint.resume": True}), progress=False)
    assert resumed["last_step"] == 6 and resumed["steps"] == 6
    assert _losses(tmp_path) == _losses(ref_dir)  # exact: same plans, same RNG, same data


def _counters(metrics) -> dict[str, float]:
    """Samples of the driver's registry: name{label=value} -> value."""
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def _fault_run(tmp_path, rank: int, sig: int, **overrides):
    """A tiny run whose rank `rank` gets `sig` at step 5; returns the summary and the
    driver's metric samples after the last step. SIGKILL lands mid-step; SIGSTOP lands
    before step 5 is dispatched, so the stopped rank never reaches step 5's collectives
    and its peer blocks in one (mid-step, the stop could come after the last collective)."""
    hit, final = [], {}

    def fault_at_step_5(scheduler, record):
        if record.step == 4 and not hit:
            pid = scheduler.group.pids[rank]
            hit.append(pid)
            if sig == signal.SIGSTOP:
                os.kill(pid, sig)
            else:  # a moment later the driver is inside step 5: the signal lands mid-step
                threading.Timer(0.05, os.kill, (pid, sig)).start()
        if record.step == 6:
            final.update(_counters(scheduler.metrics))

    summary = run_training(tiny_config(tmp_path, **overrides), callbacks=(fault_at_step_5,), progress=False)
    assert hit and summary["worker_restarts"] == 1
    return summary, final


def _assert_recovered_exactly(summary, metrics, ref_dir, run_dir, rank: int, cause: str) -> dict:
    (event,) = summary["recoveries"]
    assert (event["rank"], event["cause"]) == (rank, cause), event
    assert summary["steps"] == 6
    assert _losses(run_dir) == _losses(ref_dir)  # steps after the checkpoint re-run exactly
    rerun = event["at_step"] - 1 - event["resumed_at_step"]  # finished once, then again after the rollback
    assert rerun >= 1 and metrics["hsp_rerun_steps_total"] == rerun
    assert metrics["hsp_steps_total"] == 6  # each finished step once, however often it ran
    assert metrics[f"hsp_worker_failures_total{{cause={cause}}}"] == 1
    assert metrics["hsp_last_failed_rank"] == rank
    return event


def test_cluster_killed_worker_recovers_without_lost_or_repeated_steps(reference_run, tmp_path):
    ref_dir, _, _ = reference_run
    summary, metrics = _fault_run(tmp_path, 1, signal.SIGKILL)
    event = _assert_recovered_exactly(summary, metrics, ref_dir, tmp_path, rank=1, cause="died")
    # rank 0's collective fails too once its peer is gone; the dead rank is the one blamed
    assert event["resumed_at_step"] == 3 and "actor died" in event["error"]


def test_cluster_stopped_rank_0_is_blamed_not_its_waiting_peer(reference_run, tmp_path):
    """SIGSTOP rank 0; the step times out while rank 1 blocks in a collective of step 5
    (collective_timeout_s stays 60 s). Rank 1 still answers the progress probe from its
    second thread, rank 0 cannot."""
    ref_dir, _, _ = reference_run
    summary, metrics = _fault_run(tmp_path, 0, signal.SIGSTOP, **{"train.step_timeout_s": 15.0})
    event = _assert_recovered_exactly(summary, metrics, ref_dir, tmp_path, rank=0, cause="hung")
    assert "rank 0 is hung" in event["error"] and "no answer within 15s" in event["error"]
    assert re.search(r"rank 1: busy, \d+ section\(s\) entered, inside ", event["error"]), event["error"]


def test_cluster_stopped_rank_1_is_blamed_not_the_peer_that_timed_out(reference_run, tmp_path):
    """SIGSTOP rank 1; rank 0's collective times out first and raises, yet rank 1 is blamed."""
    ref_dir, _, _ = reference_run
    overrides = {"engine.collective_timeout_s": 5.0, "train.step_timeout_s": 60.0}
    summary, metrics = _fault_run(tmp_path, 1, signal.SIGSTOP, **overrides)
    event = _assert_recovered_exactly(summary, metrics, ref_dir, tmp_path, rank=1, cause="hung")
    assert "rank 1 is hung" in event["error"] and "rank 0: raised CollectiveError" in event["error"]


def test_cluster_trains_on_a_folder_of_text(ray_session, tmp_path):
    data = tmp_path / "text"
    data.mkdir()
    (data / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    (data / "b.jsonl").write_text("\n".join(json.dumps({"text": "hello world " * (i + 3)}) for i in range(60)))
    summary = run_training(
        tiny_config(tmp_path / "run", **{"data.data_dir": str(data), "train.steps": 4}), progress=False
    )
    assert summary["steps"] == 4 and summary["loss_last"] < summary["loss_first"]


def test_cluster_damaged_newest_checkpoint_falls_back_to_the_previous_one(reference_run, tmp_path, caplog):
    ref_dir, _, _ = reference_run
    first = run_training(tiny_config(tmp_path, **{"train.steps": 4, "checkpoint.every_steps": 2}), progress=False)
    assert first["last_step"] == 4
    newest = tmp_path / "checkpoints" / "step-000004"
    shard = newest / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    resumed = run_training(tiny_config(tmp_path, **{"checkpoint.resume": True, "checkpoint.every_steps": 2}), progress=False)
    (warning,) = resumed["checkpoint_warnings"]
    assert warning["path"] == str(newest) and "__1_0.distcp has" in warning["reason"]
    assert str(newest) in caplog.text and "trying the previous checkpoint" in caplog.text
    losses, ref = _losses(tmp_path), _losses(ref_dir)
    assert resumed["first_step"] == 1 and losses == ref  # steps 3..6 re-run from step 2, equal to uninterrupted

    # a shard index the ranks cannot read (same size, so only loading finds it): rank-side fallback
    index = tmp_path / "checkpoints" / "step-000006" / ".metadata"
    index.write_bytes(b"\0" * index.stat().st_size)
    again = run_training(tiny_config(tmp_path, **{"checkpoint.resume": True, "train.steps": 7}), progress=False)
    assert [w["path"] for w in again["checkpoint_warnings"]][-1] == str(index.parent)
    assert "could not be loaded" in again["checkpoint_warnings"][-1]["reason"]
    assert {s: v for s, v in _losses(tmp_path).items() if s <= 6} == ref and again["last_step"] == 7


def test_cluster_resume_on_more_workers_reshards(reference_run, tmp_path, caplog):
    import shutil

    ref_dir, _, _ = reference_run
    shutil.copytree(ref_dir / "checkpoints", tmp_path / "checkpoints")
    summary = run_training(
        tiny_config(tmp_path, **{"checkpoint.resume": True, "train.steps": 7, "cluster.num_workers": 4}), progress=False
    )
    assert summary["last_step"] == 7 and summary["steps"] == 7 and summary["num_workers"] == 4
    assert "written by 2 ranks and loads onto 4" in caplog.text
    assert {s: v for s, v in _losses(tmp_path).items() if s <= 6} == _losses(ref_dir)


def test_cluster_exhausted_restarts_leave_history_summary_and_checkpoint(reference_run, tmp_path, capsys):
    from cluster import checkpoint
    from cluster.trainer import EXIT_RUN_FAILED, RunFailed

    def kill_rank1_during_step_5(scheduler, record):
        if record.step == 4:
            threading.Timer(0.05, os.kill, (scheduler.group.pids[1], signal.SIGKILL)).start()

    with pytest.raises(RunFailed) as failed:
        run_training(tiny_config(tmp_path, **{"train.max_restarts": 0}), callbacks=(kill_rank1_during_step_5,), progress=False)
    assert failed.value.code == EXIT_RUN_FAILED
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("hsp train: error:")]
    assert "step 5 failed" in line and "last good checkpoint" in line and "Traceback" not in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failure"]["rank"] == 1 and summary["failure"]["at_step"] == 5
    assert "actor died" in summary["failure"]["error"]
    assert list(_losses(tmp_path)) == [1, 2, 3, 4]  # every finished step
    assert summary["last_checkpoint"] == str(tmp_path / "checkpoints" / "step-000003")
    assert checkpoint.read(tmp_path / "checkpoints" / "step-000003")["step"] == 3


def test_cluster_progress_line_shows_speed_and_memory_against_the_budget():
    from cluster.scheduler import StepRecord, _progress_line

    record = StepRecord(step=1, loss=2.0, num_tokens=4000, predicted_s=1.0, calibrated_predicted_s=1.0, measured_s=1.9,
                        wall_s=2.0, solve_s=0.01, plan_wait_s=0.0, overhead_s=0.1, imbalance=1.0, fallback=False,
                        plan="mb1: 1xSP2", sp_groups={2: 1}, peak_memory_bytes=[1], timestamp_s=0.0, restarts=0,
                        model_state_bytes=3 * 2**20, activation_peak_bytes=2**20, mfu=0.125)
    line = _progress_line(record, budget_bytes=8 * 2**20)
    assert "2,000 tok/s" in line and "MFU 12.5%" in line and "mem 4.0/8.0 MiB" in line


def test_cluster_replicated_layout_with_warmup_through_the_config_tree(ray_session, tmp_path):
    """engine.state_sharding=replicated reaches the ranks and the cost model (full states
    per rank, predicted and held), optimizer.warmup_steps the learning rate, and the
    replicated checkpoint reads back for `hsp export`."""
    from cluster import checkpoint
    from hsp.model import Decoder, ModelConfig

    config = tiny_config(tmp_path, **{"train.steps": 2, "checkpoint.every_steps": 0, "engine.state_sharding": "replicated",
                                      "optimizer.warmup_steps": 2})
    summary = run_training(config, progress=False)
    memory = summary["memory"]
    params = Decoder(config.model).num_params()
    assert memory["state_sharding"] == "replicated"
    assert memory["predicted_model_state_bytes_per_rank"] == pytest.approx(16 * params, rel=0.05)  # no / N
    assert abs(memory["model_state_bytes_per_rank"] - 16 * params) <= 0.1 * 16 * params
    rows = [json.loads(line) for line in open(tmp_path / "history.jsonl")]
    assert [r["lr"] for r in rows] == [config.optimizer.lr / 2, config.optimizer.lr]
    model, state = checkpoint.read_model_state(tmp_path)
    assert state.keys() == Decoder(ModelConfig.from_dict(model)).state_dict().keys()
