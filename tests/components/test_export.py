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


def test_mean_max_pooling_trains_exports_and_scores_the_same_everywhere(tiny_splits, tmp_path):
    """``pooling: mean_max``: the head reads [mean, max] of the real tokens; padding never wins the max, and the
    ONNX graph (every variant) gives PyTorch's scores."""
    import torch

    from components.export import export
    from components.model.classifier import ModerationClassifier, run_batched
    from components.train import train
    from tests.components.conftest import tiny_train_params

    stats = train(tiny_train_params("finetune", train_layers=2, pooling="mean_max", head_hidden=0), tiny_splits / "train.jsonl",
                  tiny_splits / "val.jsonl", tmp_path / "ck", tmp_path / "cache")
    assert stats["pooling"] == "mean_max"
    model, tokenizer = ModerationClassifier.load(tmp_path / "ck")
    assert model.config.pooling == "mean_max" and model.head.in_features == 2 * model.config.hidden_size
    short, long = "you are safe here", "a much longer message about the garden, the weather and the bus home today"
    with torch.no_grad():
        alone = tokenizer([short], return_tensors="pt")
        padded = tokenizer([short, long], padding=True, return_tensors="pt")
        assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # the short text is padded
        one = model.embed(alone["input_ids"], alone["attention_mask"])[0]
        both = model.embed(padded["input_ids"], padded["attention_mask"])[0]
    assert one.shape == (2 * model.config.hidden_size,) and torch.allclose(one, both, atol=1e-5)

    report = export(tmp_path / "ck", tmp_path / "onnx", tiny_splits / "val.jsonl", ExportParams())
    assert report["variants"]["fp32"]["max_abs_diff"] < 1e-4
    assert report["variants"]["fp16"]["max_abs_diff"] < 1e-2
    texts = [r.text for r in read_records(tiny_splits / "val.jsonl").records][:40]
    assert np.allclose(OnnxClassifier(tmp_path / "onnx", "fp32").predict_proba(texts, batch_size=8),
                       run_batched(model, tokenizer, texts, 8), atol=1e-4)


def test_mean_max_pooling_is_refused_in_head_mode(tiny_splits, tmp_path):
    from components.core.contract import ContractError
    from components.train import train
    from tests.components.conftest import tiny_train_params

    with pytest.raises(ContractError, match="pooling 'mean_max' needs mode finetune"):
        train(tiny_train_params("head", pooling="mean_max"), tiny_splits / "train.jsonl", tiny_splits / "val.jsonl",
              tmp_path / "ck", tmp_path / "cache")


# ------------------------------------------------------------------ a full disk (tests/drills/disk_full.py: a real tmpfs)


def _previous_folder(out):
    out.mkdir()
    for name, data in (("model.onnx", b"previous graph"), ("classifier.json", b"{}")):
        (out / name).write_bytes(data)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_a_full_disk_is_a_disk_full_error_and_the_previous_folder_is_kept(tiny_trained, tiny_splits, tmp_path,
                                                                          monkeypatch):
    import errno

    from components import export as export_module

    def fills_up(src, dst):
        dst.write_bytes(b"\0" * 100)  # the partial file a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "onnx"
    before = _previous_folder(out)
    monkeypatch.setattr(export_module, "export_fp16", fills_up)
    with pytest.raises(export_module.DiskFullError) as exc:
        export_module.export(tiny_trained[0] / "checkpoint", out, tiny_splits / "val.jsonl", ExportParams())
    assert exc.value.errno == errno.ENOSPC
    assert "the disk is full: no space left on the file system at " in str(exc.value)
    assert f"while writing {out}" in str(exc.value) and "the previous export there" in str(exc.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert list(tmp_path.iterdir()) == [out]  # the partial folder is gone


def test_a_writer_that_hides_a_full_disk_is_reported_as_one_and_other_errors_are_not(tiny_trained, tiny_splits,
                                                                                   tmp_path, monkeypatch):
    """onnx's C++ writer (quantize_dynamic's shape-inferred copy) cuts its file short without an error and the
    read after it fails with DecodeError; tokenizers raises a bare Exception, numpy a short write without errno."""
    import collections
    import shutil

    from google.protobuf.message import DecodeError

    from components import export as export_module

    def silent(src, dst):
        dst.write_bytes(b"\x08")
        raise DecodeError("Error parsing message with type 'onnx.ModelProto': Wire format was corrupt")

    out = tmp_path / "onnx"
    before = _previous_folder(out)
    monkeypatch.setattr(export_module, "export_int8", silent)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: collections.namedtuple("u", "total used free")(10**9, 10**9, 512))
    with pytest.raises(export_module.DiskFullError, match="Wire format was corrupt") as exc:
        export_module.export(tiny_trained[0] / "checkpoint", out, tiny_splits / "val.jsonl", ExportParams())
    assert "the disk is full" in str(exc.value) and isinstance(exc.value.__cause__.__cause__, DecodeError)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and list(tmp_path.iterdir()) == [out]

    monkeypatch.setattr(shutil, "disk_usage", real_usage)  # room on the disk: the error is what it is
    with pytest.raises(DecodeError):
        export_module.export(tiny_trained[0] / "checkpoint", out, tiny_splits / "val.jsonl", ExportParams())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and list(tmp_path.iterdir()) == [out]
