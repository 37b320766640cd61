"""Workloads: lengths files, the built-in Wikipedia shape, synthetic tails, the batch sampler."""


import numpy as np
import pytest

from tests.shared_data import WIKIPEDIA_LENGTHS, require
from solver.workloads import (
    BatchSampler,
    FileSource,
    ScaledSource,
    get_workload,
    load_lengths,
    parse_length,
    summarize,
    workload_names,
)

# ../shared/data next to the repository, as in the project's layout


@pytest.mark.parametrize(
    "text, tokens",
    [("192k", 192_000), ("384K", 384_000), ("1m", 1_000_000), ("4096", 4096), ("1.5k", 1500), (" 7 ", 7), (12, 12)],
)
def test_parse_length(text, tokens):
    assert parse_length(text) == tokens


@pytest.mark.parametrize("text", ["", "abc", "12kb", "-5", "0", "1.0001k", "k"])
def test_parse_length_rejects_bad_text(text):
    with pytest.raises(ValueError, match="length"):
        parse_length(text)


def test_load_lengths_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "batch.txt"
    path.write_text("# a batch\n10\n\n20  # trailing\n30\n")
    assert load_lengths(path).tolist() == [10, 20, 30]
    assert load_lengths(path).dtype == np.int64


@pytest.mark.parametrize(
    "content, line, what",
    [("10\n20\nabc\n", 3, "not an integer"), ("10\n1.5\n", 2, "not an integer"), ("5\n0\n", 2, "positive"),
     ("5\n6\n7\n-3\n", 4, "positive")],
)
def test_load_lengths_names_the_bad_line(tmp_path, content, line, what):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"bad\.txt:{line}: .*{what}"):
        load_lengths(path)


def test_load_lengths_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="empty batch"):
        load_lengths(empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_lengths(tmp_path / "missing.txt")


def test_builtin_workloads_and_unknown_name(tmp_path):
    assert {"wikipedia", "synthetic-pareto"} <= set(workload_names())
    for name in workload_names():
        source = get_workload(name)
        x = source.sample(1000, np.random.default_rng(0))
        assert x.dtype == np.int64 and x.shape == (1000,) and x.min() >= 1
        if name.startswith("synthetic"):
            assert "SYNTHETIC" in source.description
    with pytest.raises(ValueError, match="unknown workload 'nope'.*wikipedia"):
        get_workload("nope")
    path = tmp_path / "l.txt"
    path.write_text("3\n4\n")
    assert set(get_workload(str(path)).sample(50, np.random.default_rng(1)).tolist()) == {3, 4}


def test_wikipedia_quantile_table_keeps_the_papers_shape():
    """Against the published summary (README of the data): mean 1,014, median 347,
    p90 2,112, p99 10,921, p99.9 37,367, max 1,823,777, 4.4% > 4K hold 43% of tokens."""
    source = get_workload("wikipedia")
    stats = summarize(source.sample(1_000_000, np.random.default_rng(0)))
    assert stats["mean"] == pytest.approx(1014, rel=0.05)
    assert stats["median"] == pytest.approx(347, rel=0.02)
    assert stats["p90"] == pytest.approx(2112, rel=0.02)
    assert stats["p99"] == pytest.approx(10921, rel=0.04)
    assert stats["p99.9"] == pytest.approx(37367, rel=0.08)
    assert stats["frac_seqs_over_4k"] == pytest.approx(0.044, abs=0.003)
    assert stats["frac_tokens_over_4k"] == pytest.approx(0.43, abs=0.03)
    assert source.longest() == 1_823_777
    # the longest sequences are kept exactly: they decide the static baseline's degree
    assert source.longest(192_000) == 187_084 and source.longest(384_000) == 300_280


def test_wikipedia_builtin_matches_the_real_file():
    real = FileSource.from_file(require(WIKIPEDIA_LENGTHS))
    builtin = get_workload("wikipedia")
    a = summarize(real.lengths)
    b = summarize(builtin.sample(1_000_000, np.random.default_rng(7)))
    for key, rel in [("mean", 0.05), ("median", 0.02), ("p90", 0.02), ("p99", 0.04), ("p99.9", 0.08)]:
        assert b[key] == pytest.approx(a[key], rel=rel), key
    for limit in (4096, 65_536, 192_000, 384_000, None):
        assert builtin.longest(limit) == real.longest(limit)


def test_synthetic_pareto_is_heavier_tailed_than_wikipedia():
    rng = np.random.default_rng(3)
    wiki = summarize(get_workload("wikipedia").sample(400_000, rng))
    pareto = summarize(get_workload("synthetic-pareto").sample(400_000, rng))
    assert pareto["p99.9"] > 1.5 * wiki["p99.9"]
    assert pareto["frac_tokens_over_4k"] > wiki["frac_tokens_over_4k"]


def test_batch_sampler_is_deterministic_and_filters():
    source = get_workload("wikipedia")
    sampler = BatchSampler(source, batch_size=512, max_len=4096, seed=5)
    a, b = sampler.batch(3), sampler.batch(3)
    assert np.array_equal(a, b) and a.shape == (512,) and a.max() <= 4096
    assert not np.array_equal(a, sampler.batch(4))
    assert not np.array_equal(a, BatchSampler(source, 512, 4096, seed=6).batch(3))
    # a dropped draw is redrawn, so the filter only changes the long tail, not the batch size
    unfiltered = BatchSampler(source, 512, 10_000_000, seed=5).batch(3)
    assert unfiltered.shape == (512,) and unfiltered.max() > 4096


def test_batch_sampler_rejects_impossible_settings():
    source = FileSource(np.array([100, 200]))
    with pytest.raises(ValueError, match="raise the max length"):
        BatchSampler(source, 8, max_len=50, seed=0)
    with pytest.raises(ValueError, match="batch size"):
        BatchSampler(source, 0, max_len=500, seed=0)


def test_scaled_source_keeps_the_shape():
    wiki = get_workload("wikipedia")
    small = ScaledSource(wiki, 1 / 256)
    rng = np.random.default_rng(0)
    x = small.sample(200_000, rng)
    assert x.min() >= 1
    assert np.median(x) == pytest.approx(347 / 256, abs=1)
    assert np.percentile(x, 99) == pytest.approx(10921 / 256, rel=0.06)
    assert small.longest() == round(1_823_777 / 256)
    assert small.longest(192_000 // 256) == round(187_084 / 256)
    assert BatchSampler(small, 64, max_len=750, seed=0).batch(0).max() <= 750
    with pytest.raises(ValueError, match="factor"):
        ScaledSource(wiki, 0)


def test_synthetic_workloads_have_the_described_shapes():
    """Each built-in synthetic workload says SYNTHETIC and has the shape its docstring gives."""
    stats = {}
    for name in workload_names():
        if name.startswith("synthetic-"):
            source = get_workload(name)
            assert source.description.startswith("SYNTHETIC"), name
            stats[name] = summarize(BatchSampler(source, 200_000, 192_000, seed=1).batch(0))
    longdoc = stats["synthetic-longdoc"]  # a long-document corpus after the 192K filter
    assert longdoc["median"] == pytest.approx(6_000, rel=0.05)
    assert longdoc["mean"] == pytest.approx(18_700, rel=0.05)
    assert longdoc["p90"] == pytest.approx(54_000, rel=0.05)
    assert stats["synthetic-all-long"]["p90"] > 40_000 and stats["synthetic-all-long"]["median"] > 30_000
    assert stats["synthetic-short"]["max"] <= 16_000
    assert stats["synthetic-pareto-heavy"]["frac_tokens_over_4k"] > stats["synthetic-pareto"]["frac_tokens_over_4k"]
    bimodal = BatchSampler(get_workload("synthetic-bimodal"), 100_000, 192_000, seed=2).batch(0)
    assert 0.12 < float(np.mean(bimodal > 20_000)) < 0.18  # the long mode's 15%


def test_lengths_file_errors_name_the_file_and_line(tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_text("5\n" + "1" * 25 + "\n")
    with pytest.raises(ValueError, match=r"huge\.txt:2: length 1{25} is larger than the largest token count"):
        load_lengths(huge)
    with pytest.raises(ValueError, match=r"is a directory; give a file"):
        load_lengths(tmp_path)
    with pytest.raises(ValueError, match=r"is a directory, not a lengths file"):
        get_workload(str(tmp_path))
    with pytest.raises(ValueError, match="larger than the largest token count"):
        parse_length("9" * 25)
