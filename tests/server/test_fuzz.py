"""schemathesis fuzzes every operation of the generated OpenAPI schema (bounded examples per operation):
no 5xx, and every response matches the schema (status codes, content types, bodies, auth).

It runs against the app in-process (ASGI) over its own KB_HOME, so random deletes touch nothing else."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from serverkit import KEY, SAMPLES, server_settings

from kb import KnowledgeBase
from kb.config import Settings
from kb.server.app import create_app

# The schema is read at import time (that is how schemathesis parametrizes); the KB it serves is built by
# the module fixture below, before the first request.
HOME = Path(tempfile.mkdtemp(prefix="kb-fuzz-"))
APP = create_app(server_settings(HOME, HOME))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Operations that reject some schema-valid input for reasons a schema cannot state (a file kb cannot read;
# a chat whose last message is not a question), with a 4xx that says why.
SEMANTIC = {"POST /v1/kbs/{name}/documents", "POST /v1/chat/completions"}


@pytest.fixture(scope="module", autouse=True)
def tiny_kb(tmp_path_factory):
    docs = tmp_path_factory.mktemp("fuzz-docs")
    shutil.copy(SAMPLES / "network-setup.md", docs)
    with KnowledgeBase.open("tiny", settings=Settings(home=HOME)) as kb:
        kb.ingest(docs)
    yield
    APP.state.kb.close()
    shutil.rmtree(HOME, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_fuzzed_requests_get_documented_answers(case):
    excluded = []
    if case.operation.label in SEMANTIC:
        excluded.append(positive_data_acceptance)
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=excluded)


def test_schema_is_complete():
    app = create_app(Settings(home="/nonexistent-kb-home"))
    spec = app.openapi()
    paths = spec["paths"]
    assert {"/health", "/v1/models", "/v1/chat/completions", "/v1/kbs", "/v1/kbs/{name}", "/v1/kbs/{name}/documents",
            "/v1/kbs/{name}/documents/{doc_id}", "/v1/kbs/{name}/search", "/v1/kbs/{name}/ask"} <= set(paths)
    chat = paths["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    upload = paths["/v1/kbs/{name}/documents"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"413", "415"} <= set(upload["responses"])
    assert "security" not in paths["/health"]["get"] and chat["security"] == [{"HTTPBearer": []}]
