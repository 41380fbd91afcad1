"""Train, export and evaluate on tiny data with the real MiniLM; then load the release folder alone."""

import json
import shutil

import numpy as np
import pytest

from components.model.classifier import CheckpointError, ModerationClassifier, run_batched
from components.core.contract import ContractError, read_records, write_records
from components.evaluate import evaluate
from components.export import export
from components.generate_negatives import generate_negatives
from components.generate_positives import generate_positives
from components.merge import Source, jsonl_files, merge
from components.model.onnx_runtime import ModelFolderError, OnnxClassifier
from components.core.params import EvaluateParams, ExportParams, GenerateParams, MergeParams, ProfileParams, TrainParams
from components.core.taxonomy import LABELS, ContextPrefix
from components.train import train

pytestmark = pytest.mark.slow


def tiny_train_params(mode="head", **over) -> TrainParams:
    profile = ProfileParams(mode=mode, head_epochs=60, epochs=1, batch_size=16, max_length=64, **over)
    return TrainParams(profile="tiny", profiles={"tiny": profile})


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    g = GenerateParams(positives_per_category=14, hard_negatives_default=4, hard_negatives={}, innocuous=40)
    generate_positives(g, root / "pos")
    generate_negatives(g, root / "neg", root / "inn.jsonl")
    sources = [Source("p", jsonl_files(root / "pos"), 2), Source("n", jsonl_files(root / "neg"), 2),
               Source("i", jsonl_files(root / "inn.jsonl"), 2)]
    merge(sources, MergeParams(val_fraction=0.2, test_fraction=0.2), root / "splits", root / "splits/rejects.jsonl")
    return root / "splits"


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    stats = train(tiny_train_params(), splits / "train.jsonl", splits / "val.jsonl", out / "checkpoint", out / "cache")
    return out, stats


@pytest.fixture(scope="module")
def exported(trained, splits):
    out, _ = trained
    report = export(out / "checkpoint", out / "onnx", splits / "val.jsonl", ExportParams())
    return out, report


def test_head_training_writes_a_checkpoint_and_history(trained):
    out, stats = trained
    assert stats["mode"] == "head" and stats["train_examples"] > 100
    assert stats["history"] and all({"epoch", "loss", "val_macro_f1"} <= set(h) for h in stats["history"])
    model, _ = ModerationClassifier.load(out / "checkpoint")
    assert model.config.labels == list(LABELS) and model.config.normalize
    # the second run reads every embedding from the cache
    assert any(out.joinpath("cache").rglob("vectors.npy"))


def test_export_parity_within_tolerance(exported):
    _, report = exported
    v = report["variants"]
    assert set(v) == {"fp32", "fp16", "int8"}
    assert v["fp32"]["max_abs_diff"] < 1e-4 and v["fp32"]["decision_diff_rate"] == 0
    assert v["fp16"]["max_abs_diff"] < 1e-2
    assert v["int8"]["size_bytes"] < v["fp16"]["size_bytes"] < v["fp32"]["size_bytes"]


def test_evaluate_release_folder_loads_and_predicts_alone(exported, splits, tmp_path):
    out, _ = exported
    report = evaluate(out / "onnx", splits / "val.jsonl", splits / "test.jsonl",
                      EvaluateParams(f1_floor=0.0, variant_tolerance=1.0, parity_tolerance=1.0), out / "release",
                      tmp_path / "plots")
    assert report["gate"]["passed"] and report["served_variant"] == "int8"  # smallest within tolerance
    assert set(report["thresholds"]) == set(LABELS)
    assert (tmp_path / "plots/per_category_f1.png").exists()
    # copy the release folder anywhere: it loads with nothing else and reproduces evaluation's decisions
    alone = tmp_path / "elsewhere"
    shutil.copytree(out / "release", alone)
    model = OnnxClassifier(alone, verify=True)
    assert model.variant == "int8" and model.tuned
    texts = [r.text for r in read_records(splits / "test.jsonl").records]
    probs = model.predict_proba(texts)
    assert probs.shape == (len(texts), len(LABELS)) and np.all((probs >= 0) & (probs <= 1))
    text = model.with_context("i will find you and hurt you", ContextPrefix("GENERAL", "MESSAGE"))
    assert text.startswith("[GENERAL][MESSAGE] ")
    flags = model.flags(model.predict_proba([text]))[0]
    assert all(f.score >= f.threshold for f in flags)


def test_gate_failure_is_recorded_not_raised(exported, splits, tmp_path):
    out, _ = exported
    report = evaluate(out / "onnx", splits / "val.jsonl", splits / "test.jsonl", EvaluateParams(f1_floor=1.0),
                      tmp_path / "release", tmp_path / "plots")
    assert report["gate"]["passed"] is False and report["served_variant"] == "fp32"
    assert any(name.startswith("f1_floor:") for name in report["gate"]["failing"])
    assert json.loads((tmp_path / "release/manifest.json").read_text())["gate"]["passed"] is False


def test_finetune_mode_runs_and_ends_in_the_same_checkpoint_format(splits, tmp_path):
    stats = train(tiny_train_params("finetune"), splits / "train.jsonl", splits / "val.jsonl", tmp_path / "ck", tmp_path / "c")
    assert stats["mode"] == "finetune" and stats["epochs_run"] == 1
    model, tokenizer = ModerationClassifier.load(tmp_path / "ck")
    probs = run_batched(model, tokenizer, ["hello there"], 8)
    assert probs.shape == (1, len(LABELS))


def test_bad_model_folders_get_clear_errors(exported, tmp_path):
    out, _ = exported
    with pytest.raises(ModelFolderError, match="no such model folder"):
        OnnxClassifier(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(out / "onnx", broken)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelFolderError, match="not a loadable ONNX model"):
        OnnxClassifier(broken, "fp32")
    with pytest.raises(ModelFolderError, match="variants present"):
        (broken / "model.int8.onnx").unlink()
        OnnxClassifier(broken, "int8")
    mismatched = tmp_path / "mismatched"
    shutil.copytree(out / "onnx", mismatched)
    tok = json.loads((mismatched / "tokenizer.json").read_text())
    tok["model"]["vocab"] = dict(list(tok["model"]["vocab"].items())[:1000])
    (mismatched / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ModelFolderError, match="does not match the model"):
        OnnxClassifier(mismatched, "fp32")
    with pytest.raises(CheckpointError, match="no classifier.json"):
        (mismatched / "classifier.json").unlink()
        OnnxClassifier(mismatched)


def test_unknown_labels_and_empty_splits_name_the_file(exported, splits, tmp_path):
    out, _ = exported
    bad = tmp_path / "test.jsonl"
    rows = [json.loads(l) for l in (splits / "test.jsonl").read_text().splitlines()]
    rows[0]["labels"]["violence"] = 1
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ContractError, match=r"test.jsonl: 1 of \d+ lines .*unknown label\(s\) \['violence'\]"):
        evaluate(out / "onnx", splits / "val.jsonl", bad, EvaluateParams(), tmp_path / "r", tmp_path / "p")
    empty = tmp_path / "empty.jsonl"
    write_records(empty, [])
    with pytest.raises(ContractError, match="empty.jsonl: the validation split is empty"):
        evaluate(out / "onnx", empty, splits / "test.jsonl", EvaluateParams(), tmp_path / "r", tmp_path / "p")
