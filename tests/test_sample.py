"""The synthetic Luohu sample: deterministic, plausible, inside the district, loadable."""

import json
from pathlib import Path

import geopandas as gpd
import pyogrio

import layers
from ingest.sample import COUNTS, STREETS, write_sample, write_scaled

LUOHU = (114.09, 22.52, 114.23, 22.62)


def test_sample_is_deterministic(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a", seed=7)
    b = write_sample(tmp_path / "b", seed=7)
    c = write_sample(tmp_path / "c", seed=8)
    for layer in COUNTS:
        assert a.layer_files[layer].read_bytes() == b.layer_files[layer].read_bytes()
    assert a.disclosures.read_bytes() == b.disclosures.read_bytes()
    assert a.layer_files["toilet"].read_bytes() != c.layer_files["toilet"].read_bytes()


def test_sample_is_plausible(sample_dir: Path) -> None:
    assert COUNTS["school"] >= 100 and COUNTS["clinic"] >= 150 and COUNTS["eldercare"] >= 40
    assert COUNTS["service_hall"] == 11 and COUNTS["toilet"] >= 300
    for key in layers.all_layers():
        frame = gpd.read_file(sample_dir / f"{key}.geojson")
        assert len(frame) == COUNTS[key]
        assert frame.crs.to_epsg() == 4326
        assert frame.geometry.x.between(LUOHU[0], LUOHU[2]).all()
        assert frame.geometry.y.between(LUOHU[1], LUOHU[3]).all()
        assert frame["source_id"].is_unique and frame["name"].is_unique
        assert set(frame["street"]) <= set(STREETS)
        layer = layers.get_layer(key)
        attrs = [c for c in frame.columns if c in layer.attributes.model_fields]
        for record in frame[attrs].to_dict("records"):
            clean = {k: v for k, v in record.items() if v is not None and v == v}
            assert layer.attribute_errors(clean) == []
    halls = gpd.read_file(sample_dir / "service_hall.geojson")
    assert "罗湖区政务服务中心" in set(halls["name"])
    catalogue = json.loads((sample_dir / "disclosures.json").read_text())
    assert {m["domain"] for m in catalogue["matters"]} == set(layers.DOMAINS)
    assert {d["category"] for d in catalogue["documents"]} == set(layers.CATEGORIES)


def test_scaled_sample(tmp_path: Path) -> None:
    paths = write_scaled(tmp_path, 5000, seed=1)
    frame = pyogrio.read_dataframe(paths["gpkg"])
    assert len(frame) == 5000 and frame["source_id"].is_unique
    assert set(frame["layer"]) == set(COUNTS)
    csv = pyogrio.read_dataframe(paths["csv"])
    assert len(csv) == 5000 and {"layer", "lon", "lat"} <= set(csv.columns)
