"""Failure drills: each module injects one kind of failure into real components and says what
was injected, what happened and what was lost (the target is nothing).

A drill module exposes ``run(workdir: Path, light: bool) -> dict`` returning at least
``{"injected": str, "happened": str, "lost": str, "passed": bool}`` plus its own figures.
``light=True`` is the form ``make test`` runs (``tests/drills/test_*.py``); the full form is run
by ``benchmarks/reliability.py``, which writes ``reports/reliability.json``.
"""


def pipeline_runs(client, experiment: str = "content-moderation") -> list[dict]:
    """The pipeline's own MLflow runs of ``experiment`` (not imported lineage history), deleted ones too:
    run id, status, lifecycle stage, lineage version and gate verdict. ``client``: an MlflowClient."""
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [{"run_id": r.info.run_id, "status": r.info.status, "stage": r.info.lifecycle_stage,
             "lineage": r.data.tags.get("lineage.version"), "gate": r.data.tags.get("gate.verdict")}
            for r in client.search_runs([exp.experiment_id], "tags.`lineage.historical` = 'false'",
                                        run_view_type=ViewType.ALL, max_results=1000)]
