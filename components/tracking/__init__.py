"""MLflow tracking and the model registry: one run per pipeline run; the gate's verdict moves `champion`.

The public API, by module:

- :mod:`~components.tracking.store`: the tracking URI's store with retries (:class:`RetryPolicy`),
  :class:`TrackingError` (store unavailable, says how to fix it) and :class:`RegistryError`.
- :mod:`~components.tracking.runs`: :func:`log_pipeline_run` (params, figures, tags, artifacts),
  :func:`flatten_params`, :func:`report_metrics`, :func:`data_version`, :func:`code_version`.
- :mod:`~components.tracking.registry`: :func:`register_version` (alias ``candidate``),
  :func:`apply_gate` (applies the verdict the evaluate step recorded), :func:`champion`,
  :func:`promote` and :func:`rollback` (people; who and why become tags).
- :mod:`~components.tracking.lineage_runs`: :func:`import_lineage`, :func:`lineage_versions`,
  :func:`continue_lineage` over the lineage table (:mod:`~components.tracking.lineage`).

Nothing here deletes or rewrites the pipeline's outputs, so a tracking failure leaves them on disk.
"""

from components.tracking.lineage_runs import continue_lineage, import_lineage, lineage_versions
from components.tracking.registry import (
    RERUN_EVALUATE,
    Decision,
    apply_gate,
    champion,
    promote,
    register_version,
    rollback,
    verdict_reasons,
)
from components.tracking.runs import (
    code_version,
    data_version,
    experiment_ui_path,
    flatten_params,
    log_pipeline_run,
    report_metrics,
)
from components.tracking.store import (
    CANDIDATE,
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    DEFAULT_RETRY,
    GATE_ACTOR,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    RegistryError,
    RetryPolicy,
    TrackingError,
    numeric_items,
    redact_uri,
)

__all__ = [
    "CANDIDATE", "CHAMPION", "DEFAULT_EXPERIMENT", "DEFAULT_MODEL_NAME", "DEFAULT_RETRY", "GATE_ACTOR",
    "MAX_PARAM_VALUE", "MAX_TAG_VALUE", "RERUN_EVALUATE", "Decision", "RegistryError", "RetryPolicy",
    "TrackingError", "apply_gate", "champion", "code_version", "continue_lineage", "data_version", "experiment_ui_path",
    "flatten_params", "import_lineage", "lineage_versions", "log_pipeline_run", "numeric_items", "promote",
    "redact_uri", "register_version", "report_metrics", "rollback", "verdict_reasons",
]
