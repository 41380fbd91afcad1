"""What a pipeline run logs besides figures and tags: its data splits as MLflow datasets and its
release folder as an MLflow model, inside the run :func:`components.tracking.runs.log_pipeline_run`
created."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.core.taxonomy import LABELS
from components.tracking.store import Store

MODEL_NAME = "model"  # the logged model's name in its run
# (folder, name) -> mlflow.models.model.ModelInfo: logs the folder as a model in the active run.
ModelLogger = Callable[[Path, str], Any]


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent calls (``log_model``, ``start_run``) and its SQL registry's lookup of a logged
    model read the process-wide tracking URI, not a client's: point it at ``uri`` meanwhile.

    Afterwards both are as they were: the URI set in-process (None when none was) and the
    ``MLFLOW_TRACKING_URI`` environment variable, which ``mlflow.set_tracking_uri`` also writes (for
    subprocesses). Restoring only ``get_tracking_uri()`` pinned the process, and every process it
    started later, to whatever that returned then, even after the environment pointed elsewhere.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    explicit = getattr(tracking_utils, "_tracking_uri", None)  # what set_tracking_uri holds; None: the env decides
    env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(explicit)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


# ---------------------------------------------------------------------------------------------
# datasets and the model


def split_dataset(name: str, path: str | os.PathLike):
    """A JSONL split as an MLflow dataset (``mlflow.entities.Dataset``), read once and never loaded:
    ``digest`` its md5, which is the hash DVC 3 records for the file (the ``md5`` of each file in
    the merge stage's ``data/splits`` listing); ``source`` its path; ``schema`` the record's id, text
    and labels; ``profile`` its row count. It is what ``mlflow.log_input(MetaDataset(...))`` writes."""
    from mlflow.entities import Dataset
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Object, Property

    md5, rows, last = hashlib.md5(), 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            rows += chunk.count(b"\n")
            last = chunk[-1:]
    rows += last != b"\n"  # a last record without a newline
    schema = Schema([ColSpec("string", "id"), ColSpec("string", "text"),
                     ColSpec(Object([Property(c, "long") for c in LABELS]), "labels")])
    return Dataset(name=name, digest=md5.hexdigest(), source_type="local",
                   source=json.dumps({"uri": str(path)}), schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
                   profile=json.dumps({"num_rows": rows}))


def _log_datasets(store: Store, run_id: str, datasets: Mapping[str, tuple[str | os.PathLike, str]]) -> list[str]:
    """Log each ``name: (path, context)`` as a run input; returns the paths that do not exist."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs, missing = [], []
    for name, (path, context) in datasets.items():
        if not Path(path).is_file():
            missing.append(str(path))
            continue
        inputs.append(DatasetInput(split_dataset(name, path), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    if inputs:
        store.log_inputs(run_id, datasets=inputs)
    return missing


def _log_model(store: Store, run_id: str, model_dir: str | os.PathLike, model_logger: ModelLogger) -> str:
    """``model_logger(model_dir, MODEL_NAME)`` inside the run; returns the logged model's id."""
    import mlflow

    def log() -> str:
        with global_tracking_uri(store.uri), mlflow.start_run(run_id=run_id):
            return model_logger(model_dir, MODEL_NAME).model_id

    return store.call("log model", log)
