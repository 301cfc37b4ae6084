"""Web pages (filled in by the web-map and disclosure issues)."""

from fastapi import APIRouter

router = APIRouter()
