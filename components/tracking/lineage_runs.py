"""The experiment lineage in MLflow: the historical versions as runs, and the next version a new run continues.

:func:`import_lineage` records the historical experiments (``components/tracking/lineage.py``) as runs;
:func:`continue_lineage` gives a new run its version and parent.
"""

from __future__ import annotations

import logging
import re
import time

from components.tracking.lineage import LineageTable, load_lineage, next_version, version_number
from components.tracking.runs import _experiment_id, _log_batches, flatten_params
from components.tracking.store import RetryPolicy, metric_name, Store, tag_value, numeric_items

log = logging.getLogger(__name__)


def _lineage_runs(store: Store, exp_id: str, historical: bool | None = None) -> list:
    flt = "tags.`lineage.version` != ''"
    if historical is not None:
        flt = f"tags.`lineage.historical` = '{'true' if historical else 'false'}'"
    runs, token = [], None
    while True:
        page = store.search_runs([exp_id], filter_string=flt, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def import_lineage(
    tracking_uri: str,
    experiment_name: str,
    table: LineageTable | None = None,
    *,
    artifact_location: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[str]:
    """One historical run per lineage version; returns their run ids in table order.

    Idempotent: versions already recorded (found by their ``lineage.version`` tag) are left as
    they are and only missing ones are created. Overrides become params, the figures reported
    at the time metrics named ``reported.<figure>``; parents are linked by tag and as MLflow
    parent runs, so the UI shows the tree.
    """
    from mlflow.entities import Metric, Param

    table = table or load_lineage()
    store = Store(tracking_uri, retry)
    exp_id = _experiment_id(store, experiment_name, artifact_location)
    existing: dict[str, str] = {}
    for run in _lineage_runs(store, exp_id, historical=True):
        existing.setdefault(run.data.tags["lineage.version"], run.info.run_id)

    order = sorted(table, key=lambda e: (len(table.ancestors(e.version)), e.number))
    now = int(time.time() * 1000)
    for exp in order:
        if exp.version in existing:
            continue
        parent_run = existing.get(exp.parent) if exp.parent else None
        tags = {
            "lineage.version": exp.version,
            "lineage.parent": exp.parent or "none",
            "lineage.historical": "true",
            "lineage.description": tag_value(exp.description),
            "mlflow.note.content": tag_value(
                exp.description + ("\n\n" + "\n".join(f"- {n}" for n in exp.notes) if exp.notes else "")
            ),
        }
        if exp.notes:
            tags["lineage.notes"] = tag_value(" | ".join(exp.notes))
        if parent_run:
            tags["lineage.parent_run_id"] = parent_run
            tags["mlflow.parentRunId"] = parent_run
        run = store.create_run(exp_id, run_name=exp.version, tags=tags, start_time=now)
        run_id = run.info.run_id
        params = [Param(metric_name(k), v) for k, v in flatten_params(exp.overrides).items()]
        metrics = [Metric(metric_name(f"reported.{k}"), v, now, 0) for k, v in numeric_items("", exp.reported)]
        _log_batches(store, run_id, metrics=metrics, params=params)
        store.set_terminated(run_id, "FINISHED", end_time=now)
        existing[exp.version] = run_id
        log.info("lineage: recorded historical run %s (%s)", exp.version, run_id)
    return [existing[e.version] for e in table]


def lineage_versions(
    tracking_uri: str, experiment_name: str, *, retry: RetryPolicy | None = None
) -> dict[str, str]:
    """``{version: run_id}`` of every run in the experiment that carries a lineage version.

    Where a version appears twice the newest run wins.
    """
    store = Store(tracking_uri, retry)
    exp = store.get_experiment_by_name(experiment_name)
    if exp is None:
        return {}
    out: dict[str, tuple[int, str]] = {}
    for run in _lineage_runs(store, exp.experiment_id):
        v = run.data.tags.get("lineage.version", "")
        if v and (v not in out or run.info.start_time > out[v][0]):
            out[v] = (run.info.start_time, run.info.run_id)
    return {v: rid for v, (_, rid) in out.items()}


def continue_lineage(
    tracking_uri: str,
    experiment_name: str,
    table: LineageTable | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> dict[str, str]:
    """The lineage tags for a new pipeline run: the next version, with the latest one as parent.

    The latest version is the highest of the table's and those already recorded in the
    experiment (``v16`` with only the history; ``v17`` after one new run; ...).
    """
    table = table or load_lineage()
    recorded = lineage_versions(tracking_uri, experiment_name, retry=retry)
    versions = set(recorded) | set(table.experiments)
    valid = [v for v in versions if re.fullmatch(r"v[1-9][0-9]*", v)]
    parent = max(valid, key=version_number) if valid else None
    tags = {"lineage.version": next_version(valid), "lineage.parent": parent or "none"}
    if parent and parent in recorded:
        tags["lineage.parent_run_id"] = recorded[parent]
        tags["mlflow.parentRunId"] = recorded[parent]
    return tags
