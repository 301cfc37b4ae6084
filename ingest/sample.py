"""The synthetic but realistic Luohu sample: five layers and a disclosure catalogue.

Everything here is generated (names, places, documents are made up in the district's style);
the same seed always writes the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from shapely import points

from layers import CATEGORIES

#: Luohu's ten streets (街道) with a rough centre (lon, lat) and spread in degrees.
STREETS: dict[str, tuple[float, float, float]] = {
    "桂园": (114.113, 22.546, 0.005),
    "黄贝": (114.139, 22.553, 0.006),
    "东门": (114.122, 22.550, 0.004),
    "翠竹": (114.128, 22.563, 0.005),
    "东晓": (114.133, 22.578, 0.006),
    "南湖": (114.116, 22.537, 0.005),
    "笋岗": (114.107, 22.563, 0.005),
    "东湖": (114.148, 22.572, 0.008),
    "莲塘": (114.175, 22.557, 0.008),
    "清水河": (114.112, 22.587, 0.007),
}
ROADS = (
    "深南东路", "人民南路", "建设路", "东门中路", "宝安南路", "红岭中路", "笋岗路", "布心路",
    "太宁路", "爱国路", "沿河北路", "春风路", "嘉宾路", "东晓路", "莲塘路", "罗沙路",
    "清水河一路", "泥岗西路", "贝丽北路", "文锦中路", "翠竹路", "黄贝路", "湖贝路", "松园路",
)  # fmt: skip
PLACES = (
    "翠竹", "黄贝岭", "螺岭", "洪湖", "布心", "泥岗", "莲南", "水库", "松泉", "北斗", "百仕达",
    "滨河", "人民", "文锦", "湖贝", "向西", "春风", "爱国", "华丽", "太宁", "翠北", "碧波",
    "金湖", "罗芳", "新秀", "梧桐", "仙湖", "银湖", "红岭", "怡景", "凤凰", "翠园", "草埔",
    "大望", "东乐", "木棉岭", "锦联", "延芳", "渔邨", "鹿丹", "金山", "湖景", "桃源", "水贝",
    "田贝", "笋西", "洪涛", "景贝", "清平", "沿河", "嘉北", "独树", "长岭", "罗湖村", "蔡屋围",
)  # fmt: skip

#: (layer, how many in the realistic sample)
COUNTS = {"school": 112, "clinic": 168, "eldercare": 46, "service_hall": 11, "toilet": 324}

HOURS = {
    "school": ["Mo-Fr 07:30-17:30", "Mo-Fr 07:45-17:00"],
    "clinic": ["Mo-Su 08:00-12:00,14:00-21:00", "Mo-Sa 08:30-17:30", "24/7"],
    "eldercare": ["Mo-Su 08:00-20:00", "Mo-Fr 10:30-13:00,16:30-18:30", "24/7"],
    "service_hall": ["Mo-Fr 09:00-12:00,14:00-18:00; Sa 09:00-12:00"],
    "toilet": ["24/7", "Mo-Su 06:00-23:00", "Mo-Su 05:30-23:30"],
}


@dataclass
class SampleFiles:
    """What `write_sample` wrote."""

    layer_files: dict[str, Path]
    disclosures: Path
    counts: dict[str, int]


def _positions(rng: np.random.Generator, n: int, bbox: tuple[float, ...]) -> tuple[Any, Any, Any]:
    names = list(STREETS)
    street = rng.integers(0, len(names), n)
    centre = np.array([STREETS[names[s]] for s in street])
    lon = rng.normal(centre[:, 0], centre[:, 2])
    lat = rng.normal(centre[:, 1], centre[:, 2])
    margin = 0.002
    lon = np.clip(lon, bbox[0] + margin, bbox[2] - margin)
    lat = np.clip(lat, bbox[1] + margin, bbox[3] - margin)
    return np.round(lon, 7), np.round(lat, 7), [names[s] for s in street]


def _address(rng: np.random.Generator, street: str) -> str:
    road = ROADS[int(rng.integers(0, len(ROADS)))]
    return f"深圳市罗湖区{street}街道{road}{int(rng.integers(1, 3000))}号"


def _phone(rng: np.random.Generator) -> str:
    return f"0755-{int(rng.integers(2200_0000, 2599_9999))}"


def _unique_names(rng: np.random.Generator, n: int, patterns: list[str]) -> list[str]:
    combos = [(p, place) for p in patterns for place in PLACES]
    order = rng.permutation(len(combos))
    names: list[str] = []
    round_no = 0
    while len(names) < n:
        for k in order:
            pattern, place = combos[int(k)]
            suffix = "" if round_no == 0 else f"({round_no + 1})"
            names.append(pattern.format(place=place) + suffix)
            if len(names) == n:
                break
        round_no += 1
    return names


def _layer_rows(
    rng: np.random.Generator, layer: str, n: int, bbox: tuple[float, ...]
) -> list[dict[str, Any]]:
    lon, lat, streets = _positions(rng, n, bbox)
    rows: list[dict[str, Any]] = []
    if layer == "service_hall":
        names = ["罗湖区政务服务中心"] + [f"{s}街道行政服务大厅" for s in STREETS]
        streets = ["桂园"] + list(STREETS)
        for i, street in enumerate(streets):
            cx, cy, _ = STREETS[street]
            lon[i], lat[i] = (
                round(cx + rng.normal(0, 0.0008), 7),
                round(cy + rng.normal(0, 0.0008), 7),
            )
    elif layer == "school":
        names = _unique_names(
            rng,
            n,
            [
                "罗湖区{place}小学",
                "深圳市{place}中学",
                "罗湖区{place}实验学校",
                "{place}外国语学校",
            ],
        )
    elif layer == "clinic":
        names = _unique_names(
            rng,
            n,
            ["{place}社区健康服务中心", "{place}社康中心", "{place}门诊部", "罗湖{place}诊所"],
        )
    elif layer == "eldercare":
        names = _unique_names(
            rng,
            n,
            [
                "{place}社区长者饭堂",
                "{place}日间照料中心",
                "罗湖区{place}养老院",
                "{place}长者服务站",
            ],
        )
    else:
        names = _unique_names(
            rng, n, ["{place}公厕", "{place}公园公厕", "{place}智慧公厕", "{place}地铁站公厕"]
        )
    for i in range(n):
        name = names[i]
        row: dict[str, Any] = {
            "source_id": f"LH-{layer.upper()}-{i + 1:05d}",
            "name": name,
            "address": _address(rng, streets[i]),
            "phone": _phone(rng) if layer != "toilet" else None,
            "opening_hours": HOURS[layer][int(rng.integers(0, len(HOURS[layer])))],
            "accessible": ["yes", "no", None][int(rng.choice(3, p=[0.6, 0.15, 0.25]))],
            "street": streets[i],
            "lon": lon[i],
            "lat": lat[i],
        }
        row.update(_attributes(rng, layer, name, i))
        rows.append(row)
    return rows


def _attributes(rng: np.random.Generator, layer: str, name: str, i: int) -> dict[str, Any]:
    if layer == "school":
        level = "secondary" if "中学" in name else "nine_year" if "实验" in name else "primary"
        return {
            "level": level,
            "public": "外国语" not in name,
            "students": int(rng.integers(300, 3000)),
        }
    if layer == "clinic":
        kind = "community_health_centre" if "社" in name else "clinic"
        return {
            "type": kind,
            "family_doctor": kind == "community_health_centre",
            "emergency": False,
        }
    if layer == "eldercare":
        kind = (
            "canteen"
            if "饭堂" in name
            else "day_care"
            if "日间" in name
            else "nursing_home"
            if "养老院" in name
            else "service_station"
        )
        return {
            "type": kind,
            "meal_service": kind in ("canteen", "nursing_home"),
            "day_care": kind == "day_care",
            "beds": int(rng.integers(20, 300)) if kind == "nursing_home" else None,
        }
    if layer == "service_hall":
        return {
            "level": "district" if i == 0 else "street",
            "windows": 40 if i == 0 else int(rng.integers(6, 16)),
            "booking_url": "https://www.szlh.gov.cn/",
        }
    female = int(rng.integers(2, 10))
    return {
        "stalls_female": female, "stalls_male": max(1, female - 2), "urinals": int(rng.integers(2, 8)),
        "stalls_accessible": int(rng.integers(0, 2)), "baby_change": bool(rng.random() < 0.5),
        "family_room": bool(rng.random() < 0.3), "fee": False, "attended": bool(rng.random() < 0.4),
        "has_sensor": bool(rng.random() < 0.35 or "智慧" in name),
    }  # fmt: skip


#: The sample catalogue's matters: (title, English title) per domain, with the issuing bureau
#: and its document-number prefix (made up in the district's style).
CATALOGUE_MATTERS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "compulsory_education": ("罗湖区教育局", "深罗教", [
        ("义务教育阶段学校招生", "Compulsory-education school enrolment"),
        ("学位申请", "School place applications"),
        ("课后服务", "After-school services"),
        ("学校安全管理", "School safety management"),
        ("转学办理", "School transfers"),
        ("学生资助", "Student financial aid")]),
    "health": ("罗湖区卫生健康局", "深罗卫健", [
        ("家庭医生签约服务", "Family-doctor contracts"),
        ("预防接种", "Vaccination"),
        ("社区健康服务机构管理", "Community health centre supervision"),
        ("医疗机构执业登记", "Medical institution licensing"),
        ("基本公共卫生服务", "Basic public health services"),
        ("慢性病健康管理", "Chronic disease management")]),
    "elderly_care": ("罗湖区民政局", "深罗民", [
        ("长者饭堂助餐服务", "Elderly canteens and meal assistance"),
        ("高龄老人津贴", "Allowance for the very old"),
        ("居家养老服务", "Home-based elderly care"),
        ("养老机构管理", "Care home supervision"),
        ("日间照料中心运营", "Day-care centre operation")]),
    "social_assistance": ("罗湖区民政局", "深罗民", [
        ("最低生活保障", "Minimum living allowance"),
        ("临时救助", "Temporary assistance"),
        ("特困人员供养", "Support for persons in extreme poverty"),
        ("残疾人两项补贴", "Disability subsidies")]),
    "social_insurance": ("罗湖区人力资源局", "深罗人社", [
        ("城乡居民养老保险", "Residents' pension insurance"),
        ("医疗保险参保登记", "Medical insurance registration"),
        ("社保卡办理", "Social security card"),
        ("失业保险金申领", "Unemployment benefit claims")]),
    "household_registration": ("深圳市公安局罗湖分局", "深公罗", [
        ("户口迁入", "Household registration transfer-in"),
        ("居住证办理", "Residence permits"),
        ("出生登记", "Birth registration"),
        ("身份证换领", "Identity card renewal")]),
    "employment": ("罗湖区人力资源局", "深罗人社", [
        ("就业登记", "Employment registration"),
        ("创业补贴", "Start-up subsidies"),
        ("职业技能培训", "Vocational skills training"),
        ("招聘会", "Job fairs")]),
    "urban_management": ("罗湖区城市管理和综合执法局", "深罗城管", [
        ("公厕管理", "Public toilet management"),
        ("市容环境卫生", "City appearance and sanitation"),
        ("环卫作业监管", "Street-cleaning supervision"),
        ("智慧公厕建设", "Smart toilet programme"),
        ("违法建筑查处", "Illegal construction enforcement")]),
    "environment": ("深圳市生态环境局罗湖管理局", "深环罗", [
        ("垃圾分类", "Waste sorting"),
        ("环境噪声管理", "Noise control"),
        ("公厕除臭与空气质量", "Toilet odour control and air quality"),
        ("河道水质", "River water quality")]),
}  # fmt: skip

#: How a document of each stage is titled ({t}: the matter's title).
STAGE_TITLES: dict[str, list[str]] = {
    "decision": ["关于{t}的实施方案(征求意见稿)", "{t}工作计划", "关于{t}的决策草案公开征求意见"],
    "execution": ["{t}工作进展情况", "{t}落实情况通报", "{t}重点任务推进情况"],
    "management": ["{t}管理办法", "{t}监督检查结果", "{t}服务规范"],
    "service": ["{t}办事指南", "{t}服务流程与所需材料", "{t}常见问题解答"],
    "result": ["{t}年度工作总结", "{t}统计数据公开", "{t}满意度调查结果"],
}

#: Documents that name one facility: (layer, matter index in the layer's first domain, stage,
#: title pattern); {n} is the facility's name.
NAMED_TITLES: list[tuple[str, str, str, str]] = [
    ("school", "compulsory_education:0", "service", "{n}2025年秋季招生工作指引"),
    ("school", "compulsory_education:3", "result", "{n}校园安全检查结果公示"),
    ("school", "compulsory_education:2", "execution", "{n}课后服务开展情况"),
    ("clinic", "health:0", "service", "{n}家庭医生签约服务指南"),
    ("clinic", "health:2", "result", "{n}2025年度服务质量考核结果"),
    ("eldercare", "elderly_care:0", "service", "{n}助餐服务时间与收费标准"),
    ("eldercare", "elderly_care:3", "management", "{n}消防安全检查情况"),
    ("service_hall", "social_insurance:2", "service", "{n}社保卡办理指南"),
    ("service_hall", "household_registration:1", "service", "{n}居住证办理须知"),
    ("service_hall", "employment:0", "result", "{n}2025年上半年办件量统计"),
    ("toilet", "urban_management:0", "result", "{n}2025年第三季度考评结果"),
    ("toilet", "urban_management:0", "execution", "关于{n}升级改造的施工公告"),
    ("toilet", "environment:2", "management", "{n}除臭设施运行检查记录"),
]


#: short codes in the sample's matter ids
DOMAIN_CODES = {
    "compulsory_education": "EDU", "health": "HEA", "elderly_care": "ELD",
    "social_assistance": "SAS", "social_insurance": "SIN", "household_registration": "HHR",
    "employment": "EMP", "urban_management": "URB", "environment": "ENV",
}  # fmt: skip


def _matter_ids() -> dict[str, str]:
    """'domain:index' -> matter id, as the sample catalogue numbers them."""
    return {
        f"{domain}:{j}": f"M-{DOMAIN_CODES[domain]}-{j + 1:03d}"
        for domain, (_, _, titles) in CATALOGUE_MATTERS.items()
        for j in range(len(titles))
    }


def _catalogue(
    rng: np.random.Generator, facilities: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    from opencc import OpenCC

    to_traditional = OpenCC("s2t")
    matters: list[dict[str, Any]] = []
    prefixes: dict[str, str] = {}
    for domain, (department, prefix, titles) in CATALOGUE_MATTERS.items():
        for j, (title, title_en) in enumerate(titles):
            matter_id = f"M-{DOMAIN_CODES[domain]}-{j + 1:03d}"
            prefixes[matter_id] = prefix
            matters.append({"id": matter_id, "title": title, "title_en": title_en,
                            "domain": domain, "department": department})  # fmt: skip
    documents: list[dict[str, Any]] = []
    start = date(2023, 3, 1)

    def add(title: str, category: str, matter: dict[str, Any], days: int, body: str | None) -> None:
        number = len(documents) + 1
        year = (start + timedelta(days=days)).year
        documents.append({
            "id": f"D{number:06d}", "title": title, "body": body,
            "url": f"https://www.szlh.gov.cn/xxgk/{category}/{year}/{number:06d}.html",
            "category": category, "published_at": str(start + timedelta(days=days)),
            "issuer": matter["department"],
            "doc_number": f"{prefixes[matter['id']]}〔{year}〕{int(rng.integers(1, 120))}号"
            if category in ("decision", "management") else None,
            "matter_ids": [matter["id"]],
        })  # fmt: skip

    for matter in matters:
        for category, patterns in STAGE_TITLES.items():
            for k in range(int(rng.integers(1, 4))):
                add(patterns[k].format(t=matter["title"]), category, matter,
                    int(rng.integers(0, 1000)), None)  # fmt: skip
    # documents naming a facility (what the name matcher links); every third in Traditional
    # script, as Hong Kong-facing notices are, while the facility's name is Simplified
    by_id = {m["id"]: m for m in matters}
    ids = _matter_ids()
    named = 0
    for layer, matter_key, category, pattern in NAMED_TITLES:
        for row in facilities[layer][:4]:
            title = pattern.format(n=row["name"])
            if named % 3 == 1:
                title = to_traditional.convert(title)
            named += 1
            add(title, category, by_id[ids[matter_key]], int(rng.integers(400, 1000)), None)
    # a notice naming a facility only in its body, by its short name (no "罗湖区" prefix)
    school = facilities["school"][0]["name"].removeprefix("罗湖区").removeprefix("深圳市")
    add("2025年秋季学期校园周边交通疏导安排", "execution", by_id[ids["compulsory_education:3"]], 950,
        f"开学首周,{school}周边道路早晚高峰实行临时交通管制,请家长错峰接送。")  # fmt: skip
    # manual links: the district centre handles medical-institution licensing (no rule says
    # so), sensor-equipped toilets belong to the smart-toilet programme, and private schools
    # do not allocate public school places (an exclusion that overrides the school rule)
    hall = facilities["service_hall"][0]
    links: list[dict[str, Any]] = [
        {"source": "sample", "source_id": hall["source_id"], "matter_id": ids["health:3"]},
    ]
    links += [
        {"source": "sample", "source_id": row["source_id"], "matter_id": ids["urban_management:3"]}
        for row in facilities["toilet"] if row.get("has_sensor")
    ][:20]  # fmt: skip
    links += [
        {"source": "sample", "source_id": row["source_id"], "matter_id": ids["compulsory_education:1"],
         "exclude": True}
        for row in facilities["school"] if row.get("public") is False
    ][:10]  # fmt: skip
    return {"matters": matters, "documents": documents, "links": links}


def write_sample(
    out: Path, *, seed: int = 42, bbox: tuple[float, ...] = (114.09, 22.52, 114.23, 22.62)
) -> SampleFiles:
    """Write ``<layer>.geojson`` for each layer and ``disclosures.json`` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files: dict[str, Path] = {}
    facilities: dict[str, list[dict[str, Any]]] = {}
    for layer, n in COUNTS.items():
        rows = _layer_rows(rng, layer, n, bbox)
        facilities[layer] = rows
        frame = pd.DataFrame(rows)
        gdf = gpd.GeoDataFrame(
            frame.drop(columns=["lon", "lat"]),
            geometry=points(frame["lon"], frame["lat"]),
            crs=4326,
        )
        path = out / f"{layer}.geojson"
        path.unlink(missing_ok=True)
        pyogrio.write_dataframe(
            gdf, path, driver="GeoJSON", layer_options={"COORDINATE_PRECISION": 7}
        )
        files[layer] = path
    catalogue = _catalogue(rng, facilities)
    disclosures = out / "disclosures.json"
    disclosures.write_text(json.dumps(catalogue, ensure_ascii=False, indent=1))
    counts = {layer: len(rows) for layer, rows in facilities.items()}
    counts["matters"] = len(catalogue["matters"])
    counts["documents"] = len(catalogue["documents"])
    return SampleFiles(files, disclosures, counts)


def write_scaled(
    out: Path, n: int, *, seed: int = 42, bbox: tuple[float, ...] = (114.09, 22.52, 114.23, 22.62)
) -> dict[str, Path]:
    """Write `n` facilities over all layers to ``facilities.gpkg`` and ``facilities.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = list(COUNTS)
    share = np.array([COUNTS[k] for k in keys], dtype=float)
    layer_idx = rng.choice(len(keys), size=n, p=share / share.sum())
    lon, lat, street = _positions(rng, n, bbox)
    layer = np.array(keys)[layer_idx]
    hours = np.array([HOURS[k][0] for k in keys])[layer_idx]
    prefix = np.array(["学校", "医疗点", "养老点", "服务点", "公厕"])[layer_idx]
    ids = np.char.add("SC-", np.char.zfill(np.arange(1, n + 1).astype(str), 8))
    frame = pd.DataFrame({
        "source_id": ids,
        "layer": layer,
        "name": np.char.add(np.char.add(np.array(street, dtype=str), prefix), np.arange(1, n + 1).astype(str)),
        "address": np.char.add("深圳市罗湖区", np.char.add(np.array(street, dtype=str), "街道")),
        "opening_hours": hours,
        "accessible": np.where(rng.random(n) < 0.7, "yes", "no"),
        "stalls_female": np.where(layer == "toilet", rng.integers(2, 10, n), -1),
        "lon": lon,
        "lat": lat,
    })  # fmt: skip
    frame["stalls_female"] = (
        frame["stalls_female"].where(frame["stalls_female"] >= 0).astype("Int64")
    )
    gpkg, csv = out / "facilities.gpkg", out / "facilities.csv"
    gdf = gpd.GeoDataFrame(frame.drop(columns=["lon", "lat"]), geometry=points(lon, lat), crs=4326)
    gpkg.unlink(missing_ok=True)
    pyogrio.write_dataframe(gdf, gpkg, layer="facilities", driver="GPKG", use_arrow=True)
    frame.to_csv(csv, index=False)
    return {"gpkg": gpkg, "csv": csv}


def write_large_catalogue(
    out: Path,
    facility_names: list[str],
    *,
    documents: int = 20_972,
    matters: int = 1_206,
    seed: int = 42,
    named_share: float = 0.3,
) -> dict[str, int]:
    """Write a Luohu-sized catalogue JSON (benchmarks): `matters` over the nine domains and
    `documents` over the five stages, `named_share` of them naming one of `facility_names`
    (a tenth of those in Traditional script, some only in the body)."""
    from opencc import OpenCC

    rng = np.random.default_rng(seed)
    to_traditional = OpenCC("s2t")
    domains = list(CATALOGUE_MATTERS)
    qualifiers = ("", "(试点)", "(2025年版)", "专项", "延伸服务", "便民改革", "跨区通办")
    rows: list[dict[str, Any]] = []
    for i in range(matters):
        domain = domains[i % len(domains)]
        department, _, titles = CATALOGUE_MATTERS[domain]
        title, title_en = titles[(i // len(domains)) % len(titles)]
        qualifier = qualifiers[(i // (len(domains) * len(titles))) % len(qualifiers)]
        rows.append({"id": f"LM{i + 1:05d}", "title": f"{title}{qualifier}",
                     "title_en": title_en, "domain": domain, "department": department})  # fmt: skip
    categories = list(CATEGORIES)
    docs: list[dict[str, Any]] = []
    start = date(2021, 1, 1)
    matter_idx = rng.integers(0, matters, documents)
    day = rng.integers(0, 1800, documents)
    named = rng.random(documents) < named_share
    who = rng.integers(0, max(1, len(facility_names)), documents)
    for i in range(documents):
        matter = rows[int(matter_idx[i])]
        category = categories[i % len(categories)]
        title = STAGE_TITLES[category][i % 3].format(t=matter["title"])
        body = f"根据有关规定,现将{matter['title']}有关事项公开如下,欢迎社会各界监督。"
        if named[i] and facility_names:
            name = facility_names[int(who[i])]
            if i % 4 == 0:
                body = f"{body}实施地点:{name}。"
            else:
                title = f"{name}{title}"
            if i % 10 == 1:
                title, body = to_traditional.convert(title), to_traditional.convert(body)
        docs.append({
            "id": f"LD{i + 1:06d}", "title": title, "body": body,
            "url": f"https://www.szlh.gov.cn/xxgk/{category}/{i + 1:06d}.html",
            "category": category, "published_at": str(start + timedelta(days=int(day[i]))),
            "issuer": matter["department"], "doc_number": None, "matter_ids": [matter["id"]],
        })  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"matters": rows, "documents": docs}, ensure_ascii=False))
    return {"matters": len(rows), "documents": len(docs)}
