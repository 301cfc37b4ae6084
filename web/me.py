"""The resident's own page ``/me`` (placeholder, filled in below)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
