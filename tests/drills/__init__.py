"""Failure drills: each module injects one kind of failure into real components and says what
was injected, what happened and what was lost (the target is nothing).

A drill module exposes ``run(workdir: Path, light: bool) -> dict`` returning at least
``{"injected": str, "happened": str, "lost": str, "passed": bool}`` plus its own figures.
``light=True`` is the form ``make test`` runs (``tests/drills/test_*.py``); the full form is run
by ``benchmarks/reliability.py``, which writes ``reports/reliability.json``.
"""
