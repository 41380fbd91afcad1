"""Command-line arguments that are not UTF-8 (argv carries such bytes as surrogates, e.g. '\\udcff')
end every command with one line naming the argument and the fix, never a traceback; a text to score
that has no visible character is refused the same way."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import ROOT
from tests.project import BIN, clean_env

runner = CliRunner()
BAD = ["\udcff", "caf\udce9", "\ud83d", "ok \ude00\ud83d"]  # an escaped byte, Latin-1, lone high, reversed pair


def _leaves(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


def _value_slots() -> list[tuple[list[str], str]]:
    """Every command with every place a value goes: its first argument, and each option that takes one."""
    slots = []
    for path, command in _leaves(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name == "argument":
                slots.append(([*path], f"{' '.join(path)} <{param.name}>"))
            elif not getattr(param, "is_flag", False):
                slots.append(([*path, param.opts[0]], f"{' '.join(path)} {param.opts[0]}"))
        slots.append(([*path], f"{' '.join(path)} (extra)"))
    return slots


SLOTS = _value_slots()


def test_the_slots_cover_the_commands_that_take_texts_and_files():
    names = {label for _, label in SLOTS}
    assert {"predict <texts>", "validate <file>", "review <category>", "showcase --test", "evaluate --model",
            "env run --output", "generate --out", "promote <version>"} <= names


@pytest.mark.parametrize("argv, label", SLOTS, ids=[label for _, label in SLOTS])
def test_an_argument_that_is_not_utf8_is_one_clear_line(argv, label):
    for bad in BAD:
        result = runner.invoke(app, [*argv, bad])
        assert result.exit_code == 2, (label, result.output)
        assert isinstance(result.exception, SystemExit)  # not a crash
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert "is not valid UTF-8" in lines[0] and "LANG=C.UTF-8" in lines[0]
        assert f"argument {len(argv) + 1} '" in lines[0]


def _cli(*args: bytes | str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "content-moderation"), *args], cwd=ROOT, env=clean_env(ROOT),
                          capture_output=True, timeout=120)


def test_real_non_utf8_bytes_on_the_command_line():
    for args in ([b"predict", b"caf\xe9"], [b"validate", b"\xff.jsonl"], [b"review", b"\xfe", b"positives"]):
        proc = _cli(*args)
        out = (proc.stdout + proc.stderr).decode("utf-8")
        assert proc.returncode == 2 and "Traceback" not in out
        assert out.strip().count("\n") == 0 and "is not valid UTF-8 (byte 0x" in out, out
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "predict", b"\xed\xa0\xbd"], cwd=ROOT,
                          env=clean_env(ROOT), capture_output=True, timeout=120)
    assert proc.returncode == 2 and b"byte 0xed" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["\u200b\u200b", "\u2060\ufeff", " \u00a0\u3000"])
def test_predict_refuses_a_text_with_no_visible_character(text):
    proc = _cli("predict", "a fine text", text)
    out = (proc.stdout + proc.stderr).decode("utf-8")
    assert proc.returncode == 1 and "Traceback" not in out
    assert out.strip().count("\n") == 0 and "text 2" in out and "no visible character" in out, out


def test_validate_lists_every_kind_of_bad_text_with_its_line(tmp_path):
    from components.core.contract import make_labels

    def rec(rid, text):
        return json.dumps({"id": rid, "text": text, "labels": make_labels(), "metadata": {"source": "offline"}})

    labels_twice = rec("d", "fine").replace('"threats": 0', '"threats": 1, "threats": 0')
    lines = [rec("a", "fine"), rec("b", "\ud83d"), rec("c", "\u200b\u200b"), labels_twice, rec("e", "also fine")]
    path = tmp_path / "f.jsonl"
    latin1 = rec("f", "caf").encode().replace(b"caf", b"caf\xe9")
    path.write_bytes("\n".join(lines).encode() + b"\n" + latin1 + b"\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "2 valid, 4 invalid of 6 lines" in result.output
    for line, reason in [(2, "text: not valid UTF-8: lone surrogate U+D83D"), (3, "text is empty: it has no visible character, only U+200B"),
                         (4, "duplicate key: labels names 'threats' 2 times"), (6, "line is not UTF-8: byte 0xe9")]:
        assert f"line {line}: {reason}" in result.output, result.output
