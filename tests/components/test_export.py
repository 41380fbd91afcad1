"""The export step: every ONNX variant of the tiny real MiniLM checkpoint, with parity against PyTorch."""

import numpy as np
import pytest

from components.core.contract import read_records
from components.core.params import ExportParams
from components.core.taxonomy import LABELS
from components.model.folder import CONFIG_NAME, TORCH_VAL_PROBS, VARIANT_FILES, ClassifierConfig
from components.model.onnx_runtime import OnnxClassifier
from components.quality.parity import parity

pytestmark = pytest.mark.slow


def test_export_parity_within_tolerance(tiny_exported):
    _, report = tiny_exported
    v = report["variants"]
    assert set(v) == {"fp32", "fp16", "int8"}
    assert v["fp32"]["max_abs_diff"] < 1e-4 and v["fp32"]["decision_diff_rate"] == 0
    assert v["fp16"]["max_abs_diff"] < 1e-2
    assert v["int8"]["size_bytes"] < v["fp16"]["size_bytes"] < v["fp32"]["size_bytes"]
    assert all(r["threshold"] == 0.5 for r in v.values())  # before tuning, parity is judged at 0.5


def test_export_folder_holds_everything_serving_needs(tiny_exported, tiny_splits):
    out, report = tiny_exported
    onnx = out / "onnx"
    assert {f.name for f in onnx.iterdir()} >= {*VARIANT_FILES.values(), CONFIG_NAME, "tokenizer.json",
                                                 TORCH_VAL_PROBS, "parity.json"}
    assert ClassifierConfig.load(onnx) == ClassifierConfig.load(out / "checkpoint")
    val = [r.text for r in read_records(tiny_splits / "val.jsonl").records]
    reference = np.load(onnx / TORCH_VAL_PROBS)
    assert reference.shape == (len(val), len(LABELS))
    # the report's figures are the one parity function over the saved reference
    int8 = OnnxClassifier(onnx, "int8").predict_proba(val, batch_size=ExportParams().parity_batch_size)
    again = parity(reference, int8)
    assert again["decision_diff_rate"] == pytest.approx(report["variants"]["int8"]["decision_diff_rate"])
