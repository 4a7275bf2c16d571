"""schemathesis against the app's own OpenAPI schema: every documented operation, generated
requests (bounded: 30 per operation, no deadline), every check (file uploads: all but positive-data acceptance) (no 5xx, responses that match the
schema, the status codes and content types it documents). `slow`: a few hundred requests.

(schemathesis's own pytest plugin does not run under this pytest version, so each operation's
Hypothesis strategy is driven directly.)"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from slimtext.serve.app import create_app  # noqa: E402
from test_serve import MAX_BATCH, MAX_CHARS, KeywordPredictor  # noqa: E402

APP = create_app(KeywordPredictor(), max_chars=MAX_CHARS, max_batch=MAX_BATCH, model_name="keywords")
OPERATIONS = [op.ok() for op in schemathesis.openapi.from_asgi("/openapi.json", APP).get_all_operations()]


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_the_api_keeps_its_schema(operation):
    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # an arbitrary uploaded file is schema-valid but need not be a table with a text column:
        # those answer 415/422 in the JSON error shape, which the other checks still verify
        upload = operation.path in ("/api/score", "/score")
        case.call_and_validate(excluded_checks=[positive_data_acceptance] if upload else None)

    check()
