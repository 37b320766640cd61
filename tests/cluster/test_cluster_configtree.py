"""Config trees (cluster/configtree.py, configtypes.py, configflags.py): every field type's check, flags derived from the
dataclasses, links and derived keys, and TOML that feeds back to the same config."""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from cluster.config import EXPORT, PREPARE, PROFILE, RL, TRAIN, TrainConfig
from cluster.configflags import add_arguments, overrides
from cluster.configtree import Tree, build, to_dict, to_toml


@dataclass(kw_only=True)
class Inner:
    depth: int = 1
    """A key two sections down."""


@dataclass(kw_only=True)
class Shape:
    width: int = 8
    """Width."""


@dataclass(kw_only=True)
class Section:
    flag: bool = False
    """A switch."""
    count: int = 2
    """A count."""
    ratio: float = 0.5
    """A ratio."""
    name: str = "a"
    """A name."""
    where: Path = Path("out")
    """A path."""
    limit: int | None = None
    """Unset by default."""
    mode: Literal["fast", "slow"] = "fast"
    """A literal."""
    pick: str = field(default="x", metadata={"choices": ("x", "y")})
    """A choice."""
    sizes: tuple[int, ...] = (1, 2)
    """A list."""
    inner: Inner = field(default_factory=Inner)
    shape: Shape = field(default_factory=Shape)
    """Linked to the top-level [shape]."""


@dataclass(kw_only=True)
class Root:
    shape: Shape = field(default_factory=Shape)
    section: Section = field(default_factory=Section)
    top: str = "t"
    """A key outside any section."""


TREE = Tree(command="demo", root=Root, derived={"shape.width": "the demo"}, aliases={"--count": "section.count"})


def test_configtree_keys_cover_every_field_type_and_skip_links_and_derived():
    assert set(TREE.keys) == {
        "section.flag", "section.count", "section.ratio", "section.name", "section.where", "section.limit",
        "section.mode", "section.pick", "section.sizes", "section.inner.depth", "top",
    }
    assert TREE.keys["section.count"].doc == "A count."


def test_configtree_builds_typed_values_and_links_the_shared_section():
    data = {"section": {"flag": True, "ratio": 2, "where": "a/b", "limit": 3, "mode": "slow", "pick": "y",
                        "sizes": [4, 5], "inner": {"depth": 7}}, "top": "u"}
    root = build(TREE, data)
    s = root.section
    assert (s.flag, s.ratio, s.where, s.limit, s.mode, s.pick, s.sizes, s.inner.depth) == (
        True, 2.0, Path("a/b"), 3, "slow", "y", (4, 5), 7)
    assert isinstance(s.ratio, float) and root.top == "u"
    assert s.shape is root.shape  # one definition


@pytest.mark.parametrize(
    "data, message",
    [
        ({"section": {"flag": 1}}, r"section\.flag = 1 has type int, expected bool; write e\.g\. flag = true"),
        ({"section": {"count": 2.5}}, r"section\.count = 2\.5 has type float, expected int"),
        ({"section": {"count": True}}, r"section\.count = True has type bool, expected int"),
        ({"section": {"ratio": "x"}}, r"section\.ratio = 'x' has type str, expected float"),
        ({"section": {"ratio": float("nan")}}, r"config key section\.ratio = nan is not a finite number"),
        ({"section": {"ratio": float("inf")}}, r"config key section\.ratio = inf is not a finite number"),
        ({"section": {"name": 3}}, r"section\.name = 3 has type int, expected str"),
        ({"section": {"where": 3}}, r"section\.where = 3 has type int, expected path"),
        ({"section": {"limit": "no"}}, r"section\.limit = 'no' has type str, expected int"),
        ({"section": {"mode": "medium"}}, r"section\.mode = 'medium' is not one of 'fast', 'slow'"),
        ({"section": {"pick": "z"}}, r"section\.pick = 'z' is not one of x, y; write e\.g\. pick = \"x\""),
        ({"section": {"sizes": 3}}, r"section\.sizes = 3 has type int, expected list of int; write e\.g\. sizes = \[4, 4\]"),
        ({"section": {"sizes": [1, "a"]}}, r"has item 1 = 'a' that has type str, expected int"),
        ({"section": {"inner": {"dept": 1}}}, r"unknown config key section\.inner\.dept = 1 \(did you mean section\.inner\.depth\?\)"),
        ({"section": {"inner": 3}}, r"config section 'section\.inner' must be a table of keys"),
        ({"section": {"shape": {"width": 2}}}, r"section\.shape is the \[shape\] section in hsp demo; set it there"),
        ({"shape": {"width": 2}}, r"config key shape\.width is set by hsp demo \(the demo\); remove it"),
        ({"sectoin": {}}, r"unknown config section 'sectoin' \(did you mean section\?\)"),
    ],
)
def test_configtree_rejects_each_bad_value_naming_key_and_fix(data, message):
    with pytest.raises(ValueError, match=message):
        build(TREE, data)


def test_configtree_a_key_in_the_wrong_section_points_to_its_section():
    with pytest.raises(ValueError, match=r"unknown config key train\.lr = 0\.1 \(did you mean optimizer\.lr\?\)"):
        build(TRAIN, {"train": {"lr": 0.1}})


def _parse(tree: Tree, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False, allow_abbrev=False)
    add_arguments(parser, tree)
    return parser.parse_args(argv)


def test_configtree_flags_are_derived_from_the_dataclasses():
    args = _parse(TREE, ["--section.flag", "--count", "5", "--section.sizes", "3,4", "--section.where", "p",
                         "--section.mode", "slow", "--section.inner.depth", "9", "--top", "v"])
    root = build(TREE, {"section": {"count": 1, "name": "file"}}, overrides(TREE, args))
    s = root.section
    assert (s.flag, s.count, s.sizes, s.where, s.mode, s.inner.depth, s.name, root.top) == (
        True, 5, (3, 4), Path("p"), "slow", 9, "file", "v")
    assert build(TREE, {"section": {"flag": True}}, overrides(TREE, _parse(TREE, ["--no-section.flag"]))).section.flag is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--count", "two"], r"'two' is not an int; write e\.g\. --section\.count 4"),
        (["--section.ratio", "nan"], r"'nan' is not a finite number"),
        (["--section.pick", "z"], r"'z' is not one of x, y"),
        (["--section.sizes", "1,b"], r"'1,b' has item 1 = 'b' that is not an int"),
    ],
)
def test_configtree_bad_flag_values_name_the_flag_and_an_example(argv, message, capsys):
    parser = argparse.ArgumentParser(prog="hsp demo", allow_abbrev=False)
    add_arguments(parser, TREE)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("tree", [TRAIN, RL, PROFILE, PREPARE, EXPORT], ids=lambda t: t.command)
def test_configtree_printed_toml_feeds_back_to_the_same_config(tree):
    changed = {
        "train": {"model.num_layers": 3, "optimizer.lr": 1e-05, "engine.dtype": "float64", "checkpoint.resume": True,
                  "data.data_dir": "", "planner.strategy": "static"},
        "rl": {"rl.algo": "diffu-grpo", "rl.sample_steps": 4, "rl.sft_checkpoint": "w.pt", "model.hidden_size": 32,
               "run_dir": "r"},
        "profile": {"profile.lengths": (32, 64), "model.max_seq_len": 64, "out": "c.json", "profile.num_ranks": 2},
        "prepare": {"inputs": ("a.txt", "b"), "tokenizer": "t.json", "max_undecodable_fraction": 0.5},
        "export": {"run_dir": "runs/x", "out": "hf", "max_shard_bytes": 1000},
    }[tree.command]
    for config in (build(tree, {}), build(tree, {}, changed)):
        text = to_toml(tree, config)
        assert to_dict(build(tree, tomllib.loads(text))) == to_dict(config)


def test_configtree_default_toml_is_the_printed_default_config():
    from cluster.commands.train import DEFAULT_CONFIG

    assert DEFAULT_CONFIG.read_text() == to_toml(TRAIN, TrainConfig())


def test_configtree_every_rl_field_keeps_its_short_flag():
    from hsp.rl.config import RLConfig

    flags = set(RL.aliases)
    assert {"--" + name.replace("_", "-") for name in RLConfig.__dataclass_fields__ if name != "model"} <= flags
    assert {"--num-layers", "--hidden-size", "--num-heads", "--run-dir", "--address", "--cpus-per-worker",
            "--metrics-port"} <= flags


@dataclass(kw_only=True)
class Bad:
    limit: int | None = 3


@dataclass(kw_only=True)
class BadRoot:
    bad: Bad = field(default_factory=Bad)


def test_configtree_optional_fields_must_default_to_none():
    with pytest.raises(TypeError, match="optional field must default to None"):
        Tree(command="x", root=BadRoot).keys


def test_configtree_positionals_set_their_keys_once():
    given = build(PREPARE, {}, overrides(PREPARE, _parse(PREPARE, ["a.txt", "b/", "--out", "o", "--num-workers", "2"])))
    assert (given.inputs, given.out, given.num_workers) == (("a.txt", "b/"), "o", 2)
    assert build(PREPARE, {"inputs": ["f.txt"]}, overrides(PREPARE, _parse(PREPARE, []))).inputs == ("f.txt",)
    assert build(EXPORT, {}, overrides(EXPORT, _parse(EXPORT, ["runs/x"]))).run_dir == "runs/x"
    with pytest.raises(ValueError, match=r"RUN_DIR is given twice, as an argument and as --run_dir; give it once"):
        overrides(EXPORT, _parse(EXPORT, ["runs/x", "--run-dir", "runs/y"]))
