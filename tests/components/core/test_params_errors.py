"""params.yaml that cannot be used fails with one clear message naming the key or line, never a
traceback: malformed YAML, bytes that are not UTF-8, wrong types, unknown keys, a key written twice
(at any depth), a lone surrogate escape. The in-place editor (`run --experiment`) reads it the same way."""

from __future__ import annotations

import pytest

from components.core.params import ParamsError, load_params
from flows.params_file import set_params
from tests.conftest import ROOT

BASE = (ROOT / "params.yaml").read_text("utf-8")


def line_of(text: str, fragment: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), start=1) if fragment in ln)


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


CASES = {
    # name: (file content, fragments the message must hold)
    "duplicate top-level key": (BASE + "\ntrack:\n  experiment: other\n", ["track is written twice", "keep one"]),
    "duplicate nested key": (edit("  opset: 17", "  opset: 17\n  opset: 18"), ["export.opset is written twice"]),
    "duplicate key in a profile": (edit("      head_epochs: 300", "      head_epochs: 300\n      head_epochs: 5"),
                                   ["train.profiles.cpu.head_epochs is written twice"]),
    "malformed flow list": (edit("  opset: 17", "  opset: [17"), ["not valid YAML", "column"]),
    "tab indentation": (edit("  opset: 17", "\topset: 17"), ["not valid YAML", "'\\t'"]),
    "unclosed quote": (edit("  opset: 17", '  opset: "17'), ["not valid YAML"]),
    "wrong type": (edit("  opset: 17", "  opset: seventeen"), ["export.opset (line", "valid integer", "seventeen"]),
    "wrong section type": (edit("export:\n", "export: 5\nexport_old:\n"), ["export (line"]),
    "out of range": (edit("  f1_floor: 0.85", "  f1_floor: 3"), ["evaluate.f1_floor (line", "less than or equal"]),
    "unknown key": (edit("  opset: 17", "  opset: 17\n  opsett: 18"), ["export.opsett (line", "unknown key",
                                                                      "valid keys: variants, opset"]),
    "top level a list": ("- a\n- b\n", ["top level must be a mapping", "list"]),
    "lone surrogate escape": (edit("experiment: content-moderation", 'experiment: "\\ud800"'),
                              ["track.experiment holds a lone surrogate U+D800"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_params_file_gives_a_clear_message(tmp_path, name):
    content, fragments = CASES[name]
    path = tmp_path / "params.yaml"
    path.write_text(content, "utf-8")
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    message = str(exc.value)
    assert str(path) in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    before = path.read_bytes()
    with pytest.raises(ParamsError):  # the editor refuses the same file, and leaves it as it was
        set_params(path, {"train.profile": "production"})
    assert path.read_bytes() == before


def test_a_line_number_points_at_the_bad_key(tmp_path):
    content, _ = CASES["duplicate nested key"]
    path = tmp_path / "params.yaml"
    path.write_text(content, "utf-8")
    with pytest.raises(ParamsError, match=rf"line {line_of(content, 'opset: 18')}: .*first on line "
                                          rf"{line_of(content, 'opset: 17')}"):
        load_params(path)


@pytest.mark.parametrize("bad", [b"\xe9", b"\xff\xfe", b"\xc3"], ids=["latin-1", "invalid", "truncated"])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, bad):
    content = edit("model: claude-sonnet-4-6", "model: claude-XX").encode().replace(b"XX", bad)
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    line = content[: content.index(bad)].count(b"\n") + 1
    for call in (lambda: load_params(path), lambda: set_params(path, {"train.profile": "production"})):
        with pytest.raises(ParamsError, match=rf"line {line}: byte 0x{bad[0]:02x} is not UTF-8; re-save"):
            call()


def test_setting_a_key_below_a_value_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(BASE, "utf-8")
    with pytest.raises(ParamsError, match="train.profile is a str, not a section"):
        set_params(path, {"train.profile.name": "x"})
    assert path.read_text("utf-8") == BASE


def test_the_project_params_file_reads_cleanly():
    assert load_params(ROOT / "params.yaml").train.profile
