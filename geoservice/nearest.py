"""Router for nearest (filled in by its issue)."""

from fastapi import APIRouter

router = APIRouter()
