"""Fixtures shared by the step tests: a real SQLite MLflow store, and one tiny real MiniLM model
(splits, a head-trained checkpoint, its ONNX export) built once per session for train, export
and evaluate."""

from __future__ import annotations

import os
import shutil

import pytest

from components.core.params import ExportParams, GenerateParams, MergeParams, ProfileParams, TrainParams


# --- MLflow ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory):
    """Creating MLflow's tables takes seconds: one empty store per session, copied by each test."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow = pytest.importorskip("mlflow")
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates the tables
    return db


@pytest.fixture
def mlflow_store(tmp_path, _mlflow_template_db):
    """A fresh SQLite store: (tracking URI, artifact location), both under tmp_path."""
    shutil.copy(_mlflow_template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")


# --- the tiny model ----------------------------------------------------------------------------


def tiny_train_params(mode: str = "head", **over) -> TrainParams:
    """A profile that trains MiniLM on the tiny splits in seconds (head) or one epoch (finetune)."""
    profile = ProfileParams(mode=mode, head_epochs=60, epochs=1, batch_size=16, max_length=64, **over)
    return TrainParams(profile="tiny", profiles={"tiny": profile})


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory):
    """train/val/test JSONL splits from the offline generators (a few hundred records), and a
    real_test split of real SMS text (the committed UCI SMS Spam Collection, 160 messages ingested)."""
    from components.core.contract import write_records
    from components.core.params import IngestParams
    from components.core.project import find_root
    from components.generate_negatives import generate_negatives
    from components.generate_positives import generate_positives
    from components.ingest_external import ingest
    from components.merge import Source, jsonl_files, merge

    root = tmp_path_factory.mktemp("data")
    g = GenerateParams(positives_per_category=14, hard_negatives_default=4, hard_negatives={}, innocuous=40)
    generate_positives(g, root / "pos")
    generate_negatives(g, root / "neg", root / "inn.jsonl")
    raw = root / "raw"
    raw.mkdir()
    (raw / "sms_spam").symlink_to(find_root() / "data/external/raw/sms_spam")
    real, _, _ = ingest(IngestParams(roots=[str(raw)], caps={"sms_spam": 160}), root)
    write_records(root / "real.jsonl", real)
    sources = [Source("p", jsonl_files(root / "pos"), 2), Source("n", jsonl_files(root / "neg"), 2),
               Source("i", jsonl_files(root / "inn.jsonl"), 2), Source("e", (root / "real.jsonl",), 1)]
    merge(sources, MergeParams(val_fraction=0.2, test_fraction=0.2), root / "splits", root / "splits/rejects.jsonl")
    return root / "splits"


@pytest.fixture(scope="session")
def tiny_trained(tiny_splits, tmp_path_factory):
    """(folder, train statistics): ``folder/checkpoint`` head-trained on the tiny splits, ``folder/cache``."""
    from components.train import train

    out = tmp_path_factory.mktemp("model")
    stats = train(tiny_train_params(), tiny_splits / "train.jsonl", tiny_splits / "val.jsonl", out / "checkpoint",
                  out / "cache")
    return out, stats


@pytest.fixture(scope="session")
def tiny_exported(tiny_trained, tiny_splits):
    """(folder, export report): ``folder/onnx`` holds every variant; tests must not write into it."""
    from components.export import export

    out, _ = tiny_trained
    report = export(out / "checkpoint", out / "onnx", tiny_splits / "val.jsonl", ExportParams())
    return out, report
