"""Router for h3 (filled in by its issue)."""

from fastapi import APIRouter

router = APIRouter()
