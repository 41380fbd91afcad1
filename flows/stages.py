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

from components.core.contract import write_json
from components.core.params import Params

log = logging.getLogger(__name__)


def _report(root: Path, params: Params, stage: str, stats: dict, started: float, folder: str | None = None) -> dict:
    stats = {"stage": stage, **stats, "seconds": round(time.perf_counter() - started, 2)}
    write_json(root / (folder or params.paths.data_reports) / f"{stage.replace('-', '_')}.json", stats)
    return stats


def generate_positives(root: Path, params: Params, map_fn: Callable | None = None) -> dict:
    from components.generate_positives import generate_positives as run

    t = time.perf_counter()
    stats = run(params.generate, root / params.paths.positives, map_fn=map_fn)
    return _report(root, params, "generate-positives", stats, t)


def generate_negatives(root: Path, params: Params, map_fn: Callable | None = None) -> dict:
    from components.generate_negatives import generate_negatives as run

    t = time.perf_counter()
    stats = run(params.generate, root / params.paths.negatives, root / params.paths.innocuous, map_fn=map_fn)
    return _report(root, params, "generate-negatives", stats, t)


def generate_perturbations(root: Path, params: Params) -> dict:
    from components.generate_perturbations import run

    t = time.perf_counter()
    stats = run(root / params.paths.positives, root / params.paths.perturbations, params.perturb)
    return _report(root, params, "generate-perturbations", stats, t)


def ingest_external(root: Path, params: Params) -> dict:
    from components.ingest_external import run

    t = time.perf_counter()
    out = root / params.paths.external
    stats = run(params.ingest, root, out, out.with_name(out.stem + ".rejects.jsonl"))
    return _report(root, params, "ingest-external", stats, t)


def merge(root: Path, params: Params) -> dict:
    from components.merge import merge as run, pipeline_sources

    t = time.perf_counter()
    p = params.paths
    sources = pipeline_sources(p, root)
    splits = root / p.splits
    stats = run(sources, params.merge, splits, splits / "rejects.jsonl")
    return _report(root, params, "merge", stats, t)


def train(root: Path, params: Params) -> dict:
    from components.train import train as run

    t = time.perf_counter()
    splits, model = root / params.paths.splits, root / params.paths.model
    stats = run(params.train, splits / "train.jsonl", splits / "val.jsonl", model / "checkpoint",
                root / params.paths.embedding_cache)
    write_json(root / params.paths.reports / "train_history.json", stats.pop("history"))
    return _report(root, params, "train", stats, t, folder=params.paths.reports)


def export(root: Path, params: Params) -> dict:
    from components.export import export as run

    t = time.perf_counter()
    model = root / params.paths.model
    stats = run(model / "checkpoint", model / "onnx", root / params.paths.splits / "val.jsonl", params.export)
    return _report(root, params, "export", stats, t, folder=params.paths.reports)


def evaluate(root: Path, params: Params) -> dict:
    from components import tracking
    from components.evaluate import evaluate as run
    from flows.settings import tracking_uri

    t = time.perf_counter()
    model, splits, reports = root / params.paths.model, root / params.paths.splits, root / params.paths.reports
    # The gate's no-regression check compares with the registry's champion now; the component imports no tracking.
    try:
        current = tracking.champion(tracking_uri(), params.track.model_name, retry=tracking.DEFAULT_RETRY)
        champion = None if current is None else {
            k: current.get(k) for k in ("version", "macro_f1", "real_pr_auc", "behaviour_pass_rate")}
    except tracking.TrackingError as exc:
        # Evaluation still completes and is kept; the gate fails no_regression (an unknown champion is
        # not "no champion"), and the register step, which needs the store, fails clearly.
        log.warning("%s", exc)
        champion = {"version": None, "macro_f1": None, "unavailable": str(exc).split(": ", 1)[0]}
    stats = run(model / "onnx", splits / "val.jsonl", splits / "test.jsonl", params.evaluate, model / "release",
                reports / "plots", champion=champion, real_test_path=splits / "real_test.jsonl")
    return _report(root, params, "metrics", stats, t, folder=params.paths.reports)


def register(root: Path, params: Params) -> dict:
    from components.core.params import read_params_file
    from components.register import register as run
    from flows.settings import artifact_location, tracking_uri

    t = time.perf_counter()
    raw = read_params_file(root / "params.yaml").data  # params as written, for MLflow
    uri = tracking_uri()
    stats = run(params, raw, tracking_uri=uri, reports_dir=root / params.paths.reports,
                release_dir=root / params.paths.model / "release", dvc_lock=root / "dvc.lock", code_root=root,
                artifact_location=artifact_location(root, uri))
    return _report(root, params, "registry", stats, t, folder=params.paths.reports)


def benchmark_env(root: Path, params: Params) -> dict:
    from components.benchmark_env import benchmark_env as run

    t = time.perf_counter()
    p = params.benchmark_env
    folder = root / (p.model or f"{params.paths.model}/release")
    stats = run(folder, p, root / params.paths.reports)
    stats["model"] = str(folder.relative_to(root) if folder.is_relative_to(root) else folder)
    return _report(root, params, "benchmark-env", stats, t, folder=params.paths.reports)


def report(root: Path, params: Params) -> dict:
    from components import tracking
    from components.report import report as run
    from flows.settings import tracking_uri

    t = time.perf_counter()
    reports = root / params.paths.reports
    # The page is written whatever the store says; logging it to the run registry.json names is best effort.
    stats = run(reports, reports / "report.html", data_dir=root / params.paths.data_reports,
                model_name=params.track.model_name, tracking_uri=tracking_uri(), retry=tracking.DEFAULT_RETRY)
    stats["path"] = f"{params.paths.reports}/report.html"
    return _report(root, params, "report", stats, t, folder=params.paths.reports)


# The steps that take a ``map_fn`` and can run in parts (one per category) on a task runner.
FAN_OUT_STEPS = ("generate-positives", "generate-negatives")

# The function of each dvc.yaml stage, by name; the order of the stages is dvc.yaml's
# (flows.dvc_state.stage_names). tests/flows/test_stages.py checks that the two name the same stages.
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
    "report": report,
}
