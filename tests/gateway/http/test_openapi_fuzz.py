"""schemathesis against the served OpenAPI: every operation, valid and invalid inputs, as the admin (who
may call the most). No 5xx, and every answer is documented: its status, content type, headers and body
match the schema.

Two of schemathesis' checks are left out, each for a reason that is not a schema finding:
``positive_data_acceptance`` (a schema-valid question can still ask for a column the dataset lacks:
a 400 the schema cannot foresee) and ``negative_data_rejection`` (an invalid query-string value that
serialises to a valid string, such as a list of one, is accepted as that string)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from audit import checkpoints
from gateway.http.app import create_app
from gateway.settings import DEFAULT_SNAPSHOT_SEED, Settings
from tests.gateway.conftest import provision_state

EXAMPLES = 25


def test_every_operation_answers_as_documented(demo_dir: Path, demo_snapshots: Path, tmp_path: Path) -> None:
    checkpoints.generate_key_pair(tmp_path / "signing.pem", tmp_path / "signing.pub.pem")  # /readyz is ready
    shutil.copytree(demo_snapshots / "snapshots", tmp_path / "snapshots")
    shutil.copy2(demo_snapshots / DEFAULT_SNAPSHOT_SEED, tmp_path / DEFAULT_SNAPSHOT_SEED)
    gateway_settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        catalog=demo_dir / "catalog.yaml",
        instance="fuzz",
        audit_signing_key_path=tmp_path / "signing.pem",
        rate_limit_burst=1e9,
        _env_file=None,
    )
    keys = provision_state(gateway_settings.state_database_url, tmp_path, "fuzz")
    # schemathesis calls the app through a test client that runs its lifespan for each request.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(gateway_settings))
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    findings: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation, mode in itertools.product(operations, list(GenerationMode)):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            try:
                case.call_and_validate(
                    headers=headers, excluded_checks=[positive_data_acceptance, negative_data_rejection]
                )
            except BaseException as failure:
                findings.append(f"{case.operation.label}: {str(failure)[:600]}")

        try:
            check()
        except Unsatisfiable:  # no invalid input exists for an operation without parameters
            continue
    assert findings == []
