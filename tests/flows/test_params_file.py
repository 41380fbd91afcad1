"""Editing params.yaml in place (what `run --experiment` does): comments kept, validated, atomic."""

import shutil

import pytest
import yaml

from components.tracking.lineage import load_lineage
from components.core.params import ParamsError, load_params
from flows.params_file import set_params
from tests.conftest import ROOT


def test_overrides_applied_with_comments_and_order_kept(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    set_params(path, {**load_lineage().overrides_for("v16"), "track.reproduces": "v16"})
    after = path.read_text()
    assert "# the gate: every category's test F1 must reach this" in after
    assert [line.split(":")[0] for line in after.splitlines() if line and not line[0].isspace()] == \
        [line.split(":")[0] for line in before.splitlines() if line and not line[0].isspace()]
    params = load_params(path)
    assert params.train.profile == "production" and params.export.variants == ["fp32", "fp16"]
    assert params.track.reproduces == "v16"


def test_an_invalid_override_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    with pytest.raises(ParamsError, match="evaluate.f1_floor"):
        set_params(path, {"evaluate.f1_floor": 3})
    assert path.read_text() == before
    assert yaml.safe_load(before)["evaluate"]["f1_floor"] == 0.85
