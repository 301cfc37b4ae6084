"""/openapi.json tells the truth: schemathesis calls every operation and checks each answer.

Bounded in time for CI: a few examples per operation, generated deterministically, against a
database of its own holding a handful of facilities (writes land there, never in the sample).
Checked: no 5xx, documented status codes, content types and response bodies that validate
against the documented schemas (issue 13: 422 ``detail`` was documented as an array but is a
string, GeoJSON bodies were documented as strings, 404 was undocumented).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.python import asgi

from geoservice.app import create_app
from tests.geoservice.toilet_support import add_facilities, toilet_settings

#: examples per operation: enough to reach each documented status, small enough for CI
MAX_EXAMPLES = 8
#: what the document promises: no 5xx, and status, content type, headers and body as documented
#: (not schemathesis' guesses about which values the server should accept or refuse)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(make_db: Callable[[], str]) -> Iterator[Any]:
    url = make_db()
    add_facilities(url)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(toilet_settings(url)))
    asgi.shutdown_lifespans()  # close the app's pool before its database is dropped


def _exercise(operation: Any) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    run()


@pytest.mark.timeout(900)
def test_every_operation_answers_as_documented(api_schema: Any) -> None:
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            _exercise(operation)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises a BaseExceptionGroup
            failures.append(f"{operation.label}: {str(exc).strip()[:1500]}")
    assert operations > 40
    assert not failures, "\n\n".join(failures)


def test_the_document_describes_errors_and_geojson_as_served() -> None:
    from geoservice.settings import Settings

    document = create_app(Settings()).openapi()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["Error"]["properties"]["detail"] == {"title": "Detail", "type": "string"}
    paths = document["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    for path in ("/api/v1/nearest", "/api/v1/h3", "/ogc/collections/{collectionId}/items"):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/geo+json"]["schema"]
        assert schema["type"] == "object", path
    for path in (
        "/api/v1/toilets/{facility_id}/status",
        "/api/v1/facilities/{facility_id}/ratings",
        "/api/v1/disclosures",
        "/ogc/collections/{collectionId}/items/{featureId}",
        "/downloads/{filename}",
    ):
        operation = paths[path].get("get") or paths[path]["post"]
        assert "404" in operation["responses"], path
    assert {"401", "403"} <= set(paths["/api/v1/staff/alerts"]["get"]["responses"])
