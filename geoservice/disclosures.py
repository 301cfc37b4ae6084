"""Disclosure documents: the catalogue API and a facility's documents by stage.

(Filled in by the "Five disclosures" issue.)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from psycopg import AsyncConnection

from layers import CATEGORIES

router = APIRouter()


async def facility_disclosures(
    conn: AsyncConnection[dict[str, Any]], facility_id: str
) -> dict[str, list[dict[str, Any]]]:
    """A facility's documents grouped by the five stages, newest first.

    Each item: ``{id, title, url, published_at, matter}``.
    """
    return {category: [] for category in CATEGORIES}
