"""`servicemap link` over Luohu's size (20,972 documents, 20,000 facilities) against a naive scan.

The baseline, measured in the same run on the same data, is what one writes first: convert every
document to Simplified script with OpenCC, then test every facility name (full and short) as a
substring of every document — one check per (document, name) pair. It only matches; it writes
nothing. `servicemap link` (geoservice.disclosures.linking.link_all) does the whole job: rules, name matching
with one Aho-Corasick automaton, and storing the difference in PostGIS. Target: ≥ 20× faster.

    .venv/bin/python -m benchmarks.bench_link [--facilities N] [--documents N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import opencc
import psycopg
from psycopg import sql

from geoservice.db.connection import connect, database_url
from geoservice.db.migrate import upgrade
from geoservice.disclosures.linking import link_all, short_names
from geoservice.settings import DatabaseSettings
from ingest.disclosures import ingest_catalogue
from ingest.load import facility_id
from ingest.sample import COUNTS, PLACES, STREETS, write_large_catalogue

TARGET = 20.0

#: name patterns per layer, as the district's lists spell them
PATTERNS = {
    "school": ["罗湖区{place}小学", "深圳市{place}中学", "罗湖区{place}实验学校", "{place}外国语学校"],
    "clinic": ["{place}社区健康服务中心", "{place}社康中心", "{place}门诊部", "罗湖{place}诊所"],
    "eldercare": ["{place}社区长者饭堂", "{place}日间照料中心", "罗湖区{place}养老院",
                  "{place}长者服务站"],
    "service_hall": ["{street}街道{place}社区党群服务中心"],
    "toilet": ["{place}公厕", "{place}公园公厕", "{place}智慧公厕", "{place}地铁站公厕"],
}  # fmt: skip


def facility_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(layer, source_id, name) for n facilities, layers in the sample's proportions."""
    rng = np.random.default_rng(seed)
    keys = list(COUNTS)
    share = np.array([COUNTS[k] for k in keys], dtype=float)
    layers = rng.choice(len(keys), size=n, p=share / share.sum())
    streets = list(STREETS)
    seen: dict[str, int] = {}
    rows = []
    for i, index in enumerate(layers):
        layer = keys[int(index)]
        patterns = PATTERNS[layer]
        street = streets[int(rng.integers(0, len(streets)))]
        place = PLACES[int(rng.integers(0, len(PLACES)))]
        base = patterns[int(rng.integers(0, len(patterns)))].format(place=place, street=street)
        if not base.startswith(("罗湖", "深圳", street)):
            base = f"{street}{base}"
        count = seen.get(base, 0) + 1
        seen[base] = count
        name = base if count == 1 else f"{base}({count})"
        rows.append((layer, f"B-{i + 1:06d}", name))
    return rows


def load_facilities(url: str, rows: list[tuple[str, str, str]]) -> None:
    """COPY the facilities straight in (this benchmark measures linking, not ingest)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY facilities (id, layer, name, source, source_id, geom, h3_15, content_hash) "
            "FROM STDIN"
        ) as copy:
            for layer, source_id, name in rows:
                copy.write_row(
                    (facility_id("bench", source_id), layer, name, "bench", source_id,
                     "SRID=4326;POINT(114.12 22.55)", 0, "x")
                )  # fmt: skip
        conn.commit()


def naive_scan(url: str) -> tuple[float, int]:
    """(seconds, pairs found): OpenCC on every document, then every name against every text."""
    with psycopg.connect(url) as conn:
        facilities = conn.execute("SELECT id, name FROM facilities").fetchall()
        documents = conn.execute("SELECT id, title, body FROM documents").fetchall()
    started = time.perf_counter()
    t2s = opencc.OpenCC("t2s")
    names = []
    for fid, name in facilities:
        simple = t2s.convert(name)
        names.append((fid, [simple, *short_names(simple)]))
    found = 0
    for _doc_id, title, body in documents:
        text = t2s.convert(f"{title}\n{body or ''}")
        for _fid, variants in names:
            for variant in variants:
                if len(variant) >= 4 and variant in text:
                    found += 1
                    break
    return time.perf_counter() - started, found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facilities", type=int, default=20_000)
    parser.add_argument("--documents", type=int, default=20_972)
    parser.add_argument("--matters", type=int, default=1_206)
    parser.add_argument("--quick", action="store_true", help="5,000 facilities × 5,000 documents")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)  # None: sys.argv (python -m benchmarks NAME --option)
    if args.quick:
        args.facilities, args.documents = 5_000, 5_000

    server = database_url(DatabaseSettings(), start=True)
    name = f"bench_link_{os.getpid()}"
    base = server.rpartition("/")[0]
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{base}/{name}"
    try:
        upgrade(url)
        rows = facility_rows(args.facilities, args.seed)
        load_facilities(url, rows)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "catalogue.json"
            counts = write_large_catalogue(
                path, [r[2] for r in rows], documents=args.documents, matters=args.matters,
                seed=args.seed,
            )  # fmt: skip
            with connect(url) as conn:
                started = time.perf_counter()
                ingest_catalogue(conn, path)
                load_s = time.perf_counter() - started
        print(f"{args.facilities:,} facilities, {counts['documents']:,} documents, "
              f"{counts['matters']:,} matters (catalogue loaded in {load_s:.2f}s)", flush=True)  # fmt: skip

        with connect(url) as conn:
            started = time.perf_counter()
            report = link_all(conn)
            link_s = time.perf_counter() - started
            started = time.perf_counter()
            again = link_all(conn)
            relink_s = time.perf_counter() - started
        print(f"servicemap link:   {link_s:8.2f}s  ({report.name_matches.total:,} name matches, "
              f"{report.rules.total:,} layer rules, {report.patterns:,} names)", flush=True)  # fmt: skip
        print(f"re-link (no-op):   {relink_s:8.2f}s  (added {again.name_matches.added}, "
              f"removed {again.name_matches.removed})", flush=True)  # fmt: skip

        naive_s, naive_found = naive_scan(url)
        # the naive scan counts more pairs: it also reports a name inside a longer one
        # ("翠竹公厕" inside "翠竹公厕(2)") and names shared by many facilities
        print(f"naive pair scan:   {naive_s:8.2f}s  ({naive_found:,} pairs found)", flush=True)
        ratio = naive_s / link_s
        print(f"ratio naive / link: {ratio:.1f}x (target >= {TARGET:.0f}x)", flush=True)
        if ratio < TARGET:
            print("BELOW TARGET", flush=True)
            raise SystemExit(1)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main(sys.argv[1:])
