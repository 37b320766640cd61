"""The docs cannot drift from the CLI: every `hsp ...` command in a ```bash block of the
README, docs/*.md and deploy/README.md parses with the real argument parser (nothing
runs), every `make` target named there exists, and every link to a local file resolves."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
SEPARATORS = {"&&", "||", "|", ";", "&"}
REDIRECTS = {">", ">>", "<", ">&", "2>"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def shell_commands(block: str) -> list[list[str]]:
    """Simple commands of a bash block: continuations joined, comments, separators and
    redirections removed."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        tokens = iter(lexer)
        for token in tokens:
            if token in SEPARATORS:
                commands.append(current)
                current = []
            elif token in REDIRECTS:
                next(tokens, None)  # the redirection's target
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def hsp_arguments(command: list[str]) -> list[str] | None:
    """The arguments of `hsp` (or .venv/bin/hsp) when it is the command word, after any
    VAR=value, or the command that `ray job submit ... --` runs."""
    words = list(command)
    while words and re.match(r"\w+=", words[0]):
        words.pop(0)
    if "--" in words and words[0] == "ray":
        words = words[words.index("--") + 1:]
    return words[1:] if words and Path(words[0]).name == "hsp" else None


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def command_problems(text: str) -> list[str]:
    """One line per `hsp` command the real parser rejects or `make` target that is missing."""
    from cluster.cli import build_parser

    parser, problems = build_parser(), []
    for block in bash_blocks(text):
        for command in shell_commands(block):
            if command[0] == "make" and not set(command[1:]) <= make_targets():
                problems.append(f"{shlex.join(command)}: no such make target")
            args = hsp_arguments(command)
            if args is None:
                continue
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    parser.parse_args(args)
                except SystemExit as exit_info:
                    if exit_info.code:
                        problems.append(f"hsp {shlex.join(args)}: {err.getvalue().strip().splitlines()[-1]}")
    return problems


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def link_problems(page: Path, text: str) -> list[str]:
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            problems.append(f"{page.relative_to(ROOT)}: link {target} does not resolve")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{page.relative_to(ROOT)}: link {target} names no heading of {path}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_commands_parse_with_the_real_cli(page):
    text = page.read_text()
    assert not command_problems(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_links_to_local_files_resolve(page):
    assert not link_problems(page, page.read_text())


def test_docs_test_catches_an_unknown_flag_a_bad_value_and_a_missing_target():
    text = (
        "```bash\n"
        "hsp train --steps 3 --no-such-flag 1   # comment\n"
        "PYTHONPATH=. .venv/bin/hsp rl --mc-samples many > out.txt\n"
        "ray job submit --address http://x:8265 -- hsp plan --workload wikipedia \\\n  --strategy-typo fast\n"
        "hsp profile --out c.json && make no-such-target\n"
        "```\n"
    )
    problems = command_problems(text)
    assert len(problems) == 4, problems
    assert "unrecognized arguments: --no-such-flag 1" in problems[0]
    assert "'many' is not an int" in problems[1]
    assert "--strategy-typo" in problems[2]
    assert "no such make target" in problems[3]
    assert command_problems("```bash\nhsp train --model.num_layers 4 --resume\nmake demo\n```\n") == []


def test_docs_test_catches_a_dangling_link():
    page = ROOT / "docs" / "training.md"
    problems = link_problems(page, "[x](missing.md) [y](../README.md) [z](training.md#no-such-heading) [w](https://a.b)")
    assert problems == ["docs/training.md: link missing.md does not resolve",
                        "docs/training.md: link training.md#no-such-heading names no heading of training.md"]


def test_docs_list_every_config_key_of_hsp_train():
    from cluster.config import TRAIN

    page = (ROOT / "docs" / "training.md").read_text()
    missing = [key for key in TRAIN.keys if f"| `{key}` |" not in page]
    assert not missing, f"docs/training.md has no table row for {missing}"


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
