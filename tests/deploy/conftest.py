"""The production topology on 127.0.0.1 (deploy/local.py), started once for the tests of this folder and stopped after."""

from __future__ import annotations

import pytest

from deploy.local import Topology


@pytest.fixture(scope="package")
def servers(tmp_path_factory):
    """PostgreSQL, moto's S3 server, `mlflow server`, `prefect server start` and a process worker.

    Started on first use by a test of this folder (about 12 s on a 2-core machine), stopped after its last test.
    """
    with Topology(tmp_path_factory.mktemp("servers")) as top:
        yield top
