"""Fuzz every operation of the API from its own OpenAPI document with schemathesis (valid and invalid data):
nothing may answer 5xx, and every answer must be one the document declares."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test requirement (requirements-dev.txt)")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from studio.server import JobRunner  # noqa: E402

from .jobs_support import LiveServer, write_tiny_preset  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A server whose workers never start (fuzzed jobs only queue) with room for every job the fuzzer submits."""
    from studio.server.api import create_app

    folder = tmp_path_factory.mktemp("fuzz")
    runner = JobRunner(folder / "data", start=False, max_queued=100_000, max_queued_per_owner=100_000,
                       presets=[write_tiny_preset(folder)])
    server = LiveServer(create_app(runner))
    yield server
    server.stop()
    runner.close()


OPERATIONS = [("GET", "/api/health"), ("POST", "/api/jobs"), ("GET", "/api/jobs"), ("GET", "/api/jobs/{job_id}"),
              ("POST", "/api/jobs/{job_id}/cancel"), ("GET", "/api/jobs/{job_id}/events"),
              ("GET", "/api/jobs/{job_id}/video"), ("POST", "/api/uploads"), ("GET", "/api/uploads"),
              ("GET", "/api/uploads/{upload_id}"), ("DELETE", "/api/uploads/{upload_id}")]


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def test_the_document_lists_every_route(api_schema):
    found = sorted((op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations())
    assert found == sorted(OPERATIONS)


# Valid and invalid data for every operation (health takes no input, so it has no invalid data).
FUZZ = [(mode, method, path) for mode in ("positive", "negative") for method, path in OPERATIONS
        if not (mode == "negative" and path == "/api/health")]


@pytest.mark.parametrize("mode, method, path", FUZZ)
def test_no_operation_answers_a_server_error(api_schema, fuzz_server, method, path, mode):
    from hypothesis import given
    from schemathesis import GenerationMode

    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
    answers = []

    @given(case=strategy)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def run(case):
        response = case.call(base_url=fuzz_server.url, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500
        if response.status_code >= 400 and response.status_code != 405:
            body = response.json()
            assert isinstance(body.get("detail"), str) and body["detail"], body
        answers.append(response.status_code)

    run()
    assert answers  # the fuzzer really called the operation
