"""The sample district's service-hall set-up: ``DIR/halls.json`` (``servicemap halls load``).

Pure data, made up in the district's style from the sample's own facilities and catalogue
(``ingest.sample``): the district hall (罗湖区政务服务中心, the sample's first hall), its four
specialised halls (婚姻登记, 财政, 人力资源, 卫生监督; written as GeoJSON to
``DIR/halls_facilities.json``, layer ``service_hall``, source ``sample-halls``: the sample's hall
layer has only the district and street halls, and ``DIR/<layer>.geojson`` stays one file per
layer) and the ten street halls. Windows serve groups of catalogue matters; slots of 15–30
minutes; hours with the lunch break.

The sample catalogue has no marriage-registration or finance matters, so those two halls handle
the nearest matters it has (民政: assistance and allowances; 财政: subsidies and student aid).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ingest.load import facility_id
from ingest.sample import COUNTS, STREETS, _matter_ids

SOURCE = "sample"
SPECIALISED_SOURCE = "sample-halls"
HOURS_DISTRICT = "Mo-Fr 09:00-12:00,14:00-18:00; Sa 09:00-12:00"
HOURS_STREET = "Mo-Fr 09:00-12:00,14:00-18:00"
HOURS_SPECIALISED = "Mo-Fr 09:00-12:00,14:00-17:30"

#: the district hall's windows: (name, matters as 'domain:index' of the sample catalogue, count)
DISTRICT_WINDOWS: list[tuple[str, list[str], int]] = [
    ("户籍窗口", ["household_registration:0", "household_registration:2"], 3),
    ("居住证与身份证窗口", ["household_registration:1", "household_registration:3"], 3),
    ("社保窗口", ["social_insurance:0", "social_insurance:1", "social_insurance:2",
                "social_insurance:3"], 4),
    ("就业创业窗口", ["employment:0", "employment:1", "employment:2"], 2),
    ("社会救助窗口", ["social_assistance:0", "social_assistance:1", "social_assistance:2",
                  "social_assistance:3"], 2),
    ("养老服务窗口", ["elderly_care:1", "elderly_care:2"], 1),
    ("教育窗口", ["compulsory_education:1", "compulsory_education:4",
                "compulsory_education:5"], 2),
    ("医疗卫生窗口", ["health:3"], 1),
]  # fmt: skip

#: a street hall's windows: (name, matters, count)
STREET_WINDOWS: list[tuple[str, list[str], int]] = [
    ("综合受理窗口", ["household_registration:1", "household_registration:3",
                  "social_insurance:2"], 2),
    ("社保就业窗口", ["social_insurance:0", "social_insurance:1", "employment:0"], 1),
    ("民政窗口", ["social_assistance:0", "social_assistance:1", "social_assistance:3",
               "elderly_care:1"], 1),
]  # fmt: skip

#: the specialised halls: (source id, name, English name, lon, lat, address, windows, slot)
SPECIALISED: list[tuple[str, str, str, float, float, str, list[tuple[str, list[str], int]], int]] = [
    ("LH-HALL-MZ", "罗湖区民政局婚姻登记大厅", "Luohu Civil Affairs Marriage Registration Hall",
     114.1312, 22.5479, "罗湖区文锦中路1008号", [
        ("登记窗口", ["social_assistance:2", "social_assistance:3"], 2),
        ("救助与津贴窗口", ["social_assistance:0", "social_assistance:1", "elderly_care:1"], 2),
     ], 20),
    ("LH-HALL-CZ", "罗湖区财政局专业服务大厅", "Luohu Finance Bureau Service Hall",
     114.1285, 22.5501, "罗湖区东门中路2005号", [
        ("补贴窗口", ["employment:1", "compulsory_education:5"], 2),
     ], 30),
    ("LH-HALL-RS", "罗湖区人力资源局专业服务大厅", "Luohu Human Resources Bureau Service Hall",
     114.1249, 22.5562, "罗湖区红岭中路1026号", [
        ("社保窗口", ["social_insurance:0", "social_insurance:1", "social_insurance:3"], 3),
        ("就业窗口", ["employment:0", "employment:1", "employment:2"], 2),
     ], 15),
    ("LH-HALL-WJ", "罗湖区卫生监督所专业服务大厅", "Luohu Health Supervision Service Hall",
     114.1201, 22.5588, "罗湖区宝安南路3002号", [
        ("许可窗口", ["health:3", "health:2"], 2),
     ], 30),
]  # fmt: skip


def _windows(spec: list[tuple[str, list[str], int]], ids: dict[str, str]) -> list[dict[str, Any]]:
    windows: list[dict[str, Any]] = []
    for name, matters, count in spec:
        for _ in range(count):
            number = len(windows) + 1
            windows.append(
                {"id": str(number), "name": f"{number}号{name}" if count > 1 else name,
                 "matters": [ids[m] for m in matters]}
            )  # fmt: skip
    return windows


def halls_setup() -> list[dict[str, Any]]:
    """The set-up of every sample hall, as ``servicemap halls load`` reads it."""
    ids = _matter_ids()
    hall_ids = [facility_id(SOURCE, f"LH-SERVICE_HALL-{i + 1:05d}") for i in range(11)]
    halls: list[dict[str, Any]] = [
        {"facility": hall_ids[0], "slot_minutes": 15, "booking_days_ahead": 7,
         "hours": HOURS_DISTRICT, "windows": _windows(DISTRICT_WINDOWS, ids)},
    ]  # fmt: skip
    for source_id, *_, windows, slot in SPECIALISED:
        halls.append(
            {"facility": facility_id(SPECIALISED_SOURCE, source_id), "slot_minutes": slot,
             "booking_days_ahead": 14, "hours": HOURS_SPECIALISED,
             "windows": _windows(windows, ids)}
        )  # fmt: skip
    for i, _street in enumerate(STREETS):
        halls.append(
            {"facility": hall_ids[i + 1], "slot_minutes": 20 if i % 2 else 30,
             "booking_days_ahead": 7, "hours": HOURS_STREET,
             "windows": _windows(STREET_WINDOWS, ids)}
        )  # fmt: skip
    assert len(halls) == COUNTS["service_hall"] + len(SPECIALISED)
    return halls


def specialised_halls() -> dict[str, Any]:
    """The four specialised halls as a GeoJSON FeatureCollection (layer service_hall)."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "source_id": source_id,
                "name": name,
                "name_en": name_en,
                "address": address,
                "phone": "0755-2566" + f"{1000 + n * 37:04d}",
                "opening_hours": HOURS_SPECIALISED,
                "accessible": "yes",
                "level": "district",
                "windows": sum(w[2] for w in windows),
            },  # fmt: skip
        }
        for n, (source_id, name, name_en, lon, lat, address, windows, _) in enumerate(SPECIALISED)
    ]
    return {"type": "FeatureCollection", "features": features}


def write_halls(out: Path) -> dict[Path, int]:
    """Write ``halls.json`` and ``halls_facilities.json`` into `out`: path → rows."""
    out.mkdir(parents=True, exist_ok=True)
    specialised = out / "halls_facilities.json"
    features = specialised_halls()
    specialised.write_text(json.dumps(features, ensure_ascii=False, indent=1))
    halls = out / "halls.json"
    setup = halls_setup()
    halls.write_text(json.dumps({"halls": setup}, ensure_ascii=False, indent=1))
    return {halls: len(setup), specialised: len(features["features"])}
