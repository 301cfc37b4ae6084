"""Web router: staff_page (filled in by its issue)."""

from fastapi import APIRouter

router = APIRouter()
