"""Fixtures of the ingest tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import layers
from geoservice.db.connection import connect
from ingest.mapping import Mapping
from ingest.pipeline import IngestOptions, run_ingest
from ingest.report import IngestReport
from tests.ingest import aed_layer
from tests.ingest.util import LUOHU

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def aed() -> Iterator[layers.Layer]:
    """The test-only `aed` layer, registered for this test."""
    layers.register(aed_layer.LAYER)
    yield aed_layer.LAYER
    layers.unregister("aed")


Ingest = Callable[..., IngestReport]


@pytest.fixture
def ingest() -> Ingest:
    """In-process ingest: ingest(url, path, layer=..., skip_invalid=..., **mapping fields)."""

    def run(url: str, path: Path, **kwargs: Any) -> IngestReport:
        option_names = {"skip_invalid", "allow_outside", "full", "dry_run", "bbox", "chunk_rows"}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in option_names}
        options.setdefault("bbox", LUOHU)
        mapping = kwargs.pop("mapping", None) or Mapping()
        mapping = mapping.merged(**kwargs)
        with connect(url) as conn:
            return run_ingest(conn, path, IngestOptions(mapping=mapping, **options))

    return run
