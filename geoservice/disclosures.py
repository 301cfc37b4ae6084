"""Router for disclosures (filled in by its issue)."""

from fastapi import APIRouter

router = APIRouter()
