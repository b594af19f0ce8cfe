"""One flag vocabulary: every `mp-deploy` command's parser against docs/cli.md (flag -> meaning -> type), and the old
spellings that still work for one release."""
import argparse
import re
from pathlib import Path

import pytest

from mp_deploy import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def flags() -> dict[str, dict[str, str]]:
    """flag -> {command: its type word} over every command's parser; deprecated spellings (hidden) left out."""
    found: dict[str, dict[str, str]] = {}
    for name in cli.COMMANDS:
        parser, _ = cli.command_parser(name)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                found.setdefault(option, {})[name] = cli.type_word(action) + (
                    f" {sorted(map(str, action.choices))}" if action.choices is not None else "")
    return found


def table() -> dict[str, tuple[str, str]]:
    """flag -> (meaning, type) from docs/cli.md's table."""
    rows = re.findall(r"^\| `(--[a-z0-9-]+)` \| (.+?) \| ([^|]+?) \| [^|]+ \|$", DOC.read_text(), re.M)
    return {flag: (meaning, kind) for flag, meaning, kind in rows}


def test_one_name_one_type_across_commands():
    """A flag that several commands have takes the same type (and the same choices) in all of them."""
    mixed = {flag: per for flag, per in flags().items() if len(set(per.values())) > 1}
    assert not mixed, f"flags with two types: {mixed}"


def test_the_table_is_the_parsers():
    """Every flag is in docs/cli.md once, with the parser's type; the table names no flag that does not exist."""
    parsed, documented = flags(), table()
    assert set(parsed) - set(documented) == set(), "flags missing from docs/cli.md"
    assert set(documented) - set(parsed) == set(), "docs/cli.md names flags no command has"
    wrong = {flag: (documented[flag][1], sorted(set(t.split(" [")[0] for t in per.values())))
             for flag, per in parsed.items() if {t.split(" [")[0] for t in per.values()} != {documented[flag][1]}}
    assert not wrong, f"types that differ from docs/cli.md: {wrong}"
    assert len(re.findall(r"^\| `--output` ", DOC.read_text(), re.M)) == 1


def test_the_checks_can_fail(monkeypatch):
    """A command that gives --output another type is caught (so the tests above are not vacuous)."""
    real = cli.command_parser

    def broken(name):
        parser, module = real(name)
        if name == "eval":
            for action in parser._actions:
                if "--output" in action.option_strings:
                    action.type = int
        return parser, module

    monkeypatch.setattr(cli, "command_parser", broken)
    assert len(set(flags()["--output"].values())) == 2


@pytest.mark.parametrize("command, old, new, value", [
    ("build", "--out-dir", "output", "somewhere"),
    ("bench", "--out-dir", "output", "somewhere"),
    ("triton-repo", "--out", "output", "somewhere"),
    ("bench", "--no-kernels", "kernels", "off"),
])
def test_old_spellings_still_work_and_say_so(command, old, new, value, capsys):
    parser, _ = cli.command_parser(command)
    argv = [old] if value == "off" else [old, value]
    if command == "triton-repo":
        argv += ["--engine", "x.onnx"]
    if command == "build":
        argv += ["--task", "depth"]
    args = parser.parse_args(argv)
    assert getattr(args, new) == value
    assert f"{old} is deprecated" in capsys.readouterr().err


def test_shared_value_types():
    assert cli.size_range("480") == (480, 480, 480) and cli.size_range("128,448,1024") == (128, 448, 1024)
    for bad in ("1,2", "0", "a", "1,2,3,4"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.size_range(bad)
    assert cli.one_size((480, 480, 480), "--height") == 480
    with pytest.raises(cli.UsageError, match="--height takes one value here"):
        cli.one_size((128, 256, 512), "--height")
    assert cli.nonnegative_int("0") == 0 and cli.positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_int("0")
