"""The DAG's steps as one table: each entry reads params.yaml and calls its component.

DVC runs them as ``content-moderation stage <name>`` (see dvc.yaml); the Prefect flow calls
the same functions. This file wires paths and params to components and writes each step's
statistics; the logic of every step lives in ``components/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from components.contract import write_json
from components.params import Params

log = logging.getLogger(__name__)


def _report(root: Path, params: Params, stage: str, stats: dict, started: float, folder: str | None = None) -> dict:
    stats = {"stage": stage, **stats, "seconds": round(time.perf_counter() - started, 2)}
    write_json(root / (folder or params.paths.data_reports) / f"{stage.replace('-', '_')}.json", stats)
    return stats


def generate_positives(root: Path, params: Params) -> dict:
    from components.generate import generate_positives as run

    t = time.perf_counter()
    return _report(root, params, "generate-positives", run(params.generate, root / params.paths.positives), t)


def generate_negatives(root: Path, params: Params) -> dict:
    from components.generate import generate_negatives as run

    t = time.perf_counter()
    stats = run(params.generate, root / params.paths.negatives, root / params.paths.innocuous)
    return _report(root, params, "generate-negatives", stats, t)


def generate_perturbations(root: Path, params: Params) -> dict:
    from components.perturb import run

    t = time.perf_counter()
    stats = run(root / params.paths.positives, root / params.paths.perturbations, params.perturb)
    return _report(root, params, "generate-perturbations", stats, t)


def ingest_external(root: Path, params: Params) -> dict:
    from components.ingest import run

    t = time.perf_counter()
    out = root / params.paths.external
    stats = run(params.ingest, root, out, out.with_name(out.stem + ".rejects.jsonl"))
    return _report(root, params, "ingest-external", stats, t)


def merge(root: Path, params: Params) -> dict:
    from components.merge import Source, jsonl_files, merge as run

    t = time.perf_counter()
    p = params.paths
    sources = [
        # Lower priority number wins a duplicate: people's reviews, then real data, then generated.
        Source("incoming", jsonl_files(root / p.incoming), 0),
        Source("external", jsonl_files(root / p.external), 1),
        Source("positives", jsonl_files(root / p.positives), 2),
        Source("negatives", jsonl_files(root / p.negatives), 2),
        Source("innocuous", jsonl_files(root / p.innocuous), 2),
        Source("perturbations", jsonl_files(root / p.perturbations), 3),
    ]
    splits = root / p.splits
    stats = run(sources, params.merge, splits, splits / "rejects.jsonl")
    return _report(root, params, "merge", stats, t)


def train(root: Path, params: Params) -> dict:
    from components.train import train as run

    t = time.perf_counter()
    splits, model = root / params.paths.splits, root / params.paths.model
    stats = run(params.train, splits / "train.jsonl", splits / "val.jsonl", model / "checkpoint",
                root / "models" / ".embedding-cache")
    write_json(root / params.paths.reports / "train_history.json", stats.pop("history"))
    return _report(root, params, "train", stats, t, folder=params.paths.reports)


def export(root: Path, params: Params) -> dict:
    from components.export import export as run

    t = time.perf_counter()
    model = root / params.paths.model
    stats = run(model / "checkpoint", model / "onnx", root / params.paths.splits / "val.jsonl", params.export)
    return _report(root, params, "export", stats, t, folder=params.paths.reports)


def evaluate(root: Path, params: Params) -> dict:
    from components.evaluate import evaluate as run

    t = time.perf_counter()
    model, splits, reports = root / params.paths.model, root / params.paths.splits, root / params.paths.reports
    stats = run(model / "onnx", splits / "val.jsonl", splits / "test.jsonl", params.evaluate, model / "release",
                reports / "plots")
    return _report(root, params, "metrics", stats, t, folder=params.paths.reports)


def register(root: Path, params: Params) -> dict:
    import yaml

    from components.register import register as run
    from flows.settings import artifact_location, tracking_uri

    t = time.perf_counter()
    raw = yaml.safe_load((root / "params.yaml").read_text("utf-8"))
    uri = tracking_uri()
    stats = run(params, raw, tracking_uri=uri, reports_dir=root / params.paths.reports,
                release_dir=root / params.paths.model / "release", dvc_lock=root / "dvc.lock", code_root=root,
                artifact_location=artifact_location(root, uri))
    return _report(root, params, "registry", stats, t, folder=params.paths.reports)


from flows.benchmark_env_stage import benchmark_env  # noqa: E402  (its own module: the environment is large)

STAGES: dict[str, Callable[[Path, Params], dict]] = {
    "generate-positives": generate_positives,
    "generate-negatives": generate_negatives,
    "generate-perturbations": generate_perturbations,
    "ingest-external": ingest_external,
    "merge": merge,
    "train": train,
    "export": export,
    "evaluate": evaluate,
    "benchmark-env": benchmark_env,
    "register": register,
}
