"""The service driven by schemathesis from its own OpenAPI schema: every operation with generated
valid and invalid requests, over the real app and store; no 5xx, and every response matches what
the schema says of its status, content type and body."""

from __future__ import annotations

import concurrent.futures
import types

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance)
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from memr1_jax import Memory
from memr1_jax.service.app import create_app

KEY = "schema-key"
H = {"X-API-Key": KEY}
# An invalid body may also be refused as too large (413: over --max-body-bytes before it is parsed).
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}}})


class _Answers:
    """The Answer Agent's model: an answer read from the prompt's first memory."""

    def generate(self, prompts, max_new_tokens=64, **kw):
        return [types.SimpleNamespace(text="**Answer:** " + p.split("- ", 1)[-1].split("\n", 1)[0]) for p in prompts]


class _Engine:
    """The chat route's engine: a token per character, an echo; the real engine's chat equality
    with greedy decoding is tests/test_service_engine.py's."""
    max_context = 4096

    def chat_ids(self, messages):
        return [ord(c) % 250 for m in messages for c in m["content"]][:5000] or [1]

    def submit(self, ids, max_new_tokens, sampling=None, constraint=None):
        f = concurrent.futures.Future()
        out = ids[:max_new_tokens]
        f.set_result(types.SimpleNamespace(text="".join(chr(97 + i % 26) for i in out), completion_ids=out,
                                           stopped=len(ids) <= max_new_tokens))
        return f

    def generate(self, prompts, max_new_tokens=64, **kw):
        return [types.SimpleNamespace(text="") for _ in prompts]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    m = Memory({"store": str(tmp_path_factory.mktemp("schema") / "m.db"), "encoder": "hashing",
                "agents": "untrained", "manager": "add-all", "extraction": "sentences"},
               llm=_Engine(), answer_llm=_Answers())
    m.add("Alice lives in Oslo", user_id="alice", infer=False)
    yield create_app(m, api_key=KEY, model_name="scripted")
    m.close()


def _operations():
    # schemathesis' pytest plugin predates pytest 9; the operations are driven with hypothesis here.
    from memr1_jax.service.app import create_app as _create
    m = Memory({"store": ":memory:", "encoder": "hashing", "agents": "untrained"})
    try:
        spec = schemathesis.openapi.from_asgi("/openapi.json", _create(m, api_key=KEY), headers=H)
        return sorted(r.ok().label for r in spec.get_all_operations())
    finally:
        m.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", _operations())
def test_every_operation_answers_generated_requests_without_5xx_as_its_schema_says(app, label, mode):
    spec = schemathesis.openapi.from_asgi("/openapi.json", app, headers=H, config=CONFIG)
    operation = next(r.ok() for r in spec.get_all_operations() if r.ok().label == label)
    checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
    if mode == GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.call_and_validate(headers=H, checks=checks)
    try:
        run()
    except Unsatisfiable:
        # Nothing can violate the schema: no body, and no input but free-form path ids.
        method, path = label.split(" ", 1)
        spec_op = app.openapi()["paths"][path][method.lower()]
        assert mode == GenerationMode.NEGATIVE and "requestBody" not in spec_op, label
        assert all(p["in"] == "path" and p["schema"].get("type") == "string" for p in spec_op.get("parameters", ())), label
