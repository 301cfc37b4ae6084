"""The facility's fields are defined once (layers.facility) and agree with the schema."""

import numpy as np
import pandas as pd
from sqlalchemy.dialects import postgresql

from geoservice.api.features import FEATURE_COLUMNS
from geoservice.db.models import facilities
from ingest import load, transform
from ingest.mapping import FACILITY_FIELDS
from layers import facility

#: stored fields whose records carry another form than the table (hex EWKB for a geometry)
STORED_TYPES = {"footprint": "geometry(GEOMETRY,4326)"}


def _normalised(sql_type: str) -> str:
    aliases = {"timestamptz": "timestamp with time zone"}
    return aliases.get(sql_type, sql_type).replace(" ", "").lower()


def test_the_model_has_exactly_the_stored_fields() -> None:
    assert sorted(facilities.columns.keys()) == sorted(facility.TABLE_COLUMNS)
    assert len(set(facility.TABLE_COLUMNS)) == len(facility.TABLE_COLUMNS)


def test_the_model_agrees_on_nullability_and_types() -> None:
    dialect = postgresql.dialect()
    for field in facility.FIELDS:
        if not field.stored:
            continue
        column = facilities.columns[field.name]
        assert column.nullable is not field.required, field.name
        expected = STORED_TYPES.get(field.name, field.sql_type)
        assert _normalised(str(column.type.compile(dialect=dialect))) == _normalised(expected), (
            field.name
        )


def test_the_lists_are_derived_from_the_fields() -> None:
    assert FACILITY_FIELDS == facility.MAPPED_COLUMNS
    assert load.STAGING_COLUMNS[: len(facility.RECORD_COLUMNS)] == facility.RECORD_COLUMNS
    # a position is stored as geom, served as lon/lat
    assert {"lon", "lat"} <= set(facility.RECORD_COLUMNS) - set(facility.TABLE_COLUMNS)
    served = [c.strip() for c in FEATURE_COLUMNS.split(",")]
    assert "ST_X(f.geom) AS lon" in served and "ST_Y(f.geom) AS lat" in served
    assert {c.removeprefix("f.") for c in served if c.startswith("f.")} == (
        set(facility.SERVED_COLUMNS) - {"geom"}
    )
    # every hashed, mapped and updated field is a record or table field
    assert set(facility.HASHED_COLUMNS) <= set(facility.RECORD_COLUMNS)
    assert set(facility.MAPPED_COLUMNS) <= set(facility.RECORD_COLUMNS)
    assert set(facility.UPDATED_COLUMNS) <= set(facility.LOADED_COLUMNS)


def test_transform_produces_exactly_the_record_columns() -> None:
    frame = pd.DataFrame(
        {
            "_row": [1],
            "source_id": ["a"],
            "layer": ["toilet"],
            "name": ["公厕"],
            "name_en": [None],
            "address": [None],
            "phone": [None],
            "website": [None],
            "opening_hours": ["24/7"],
            "opening_hours_norm": ["24/7"],
            "accessible_bool": [True],
            "status": [None],
            "status_reason": [None],
            "verified_at_iso": [None],
        }
    )
    records = transform.records(
        frame,
        np.array([114.12]),
        np.array([22.55]),
        np.array([None], dtype=object),
        np.array(["{}"], dtype=object),
        source="test",
    )
    assert tuple(records.columns) == (*facility.RECORD_COLUMNS, "row_no", "content_hash")
