"""Every resident route in one router (the app includes ``router``)."""

from __future__ import annotations

from fastapi import APIRouter

from geoservice.residents import account, atom, feed, signin, subscriptions

router = APIRouter()
# the feed first: the most frequent request, and FastAPI tries every route before the one that
# matches; the Atom route before the other /api/v1/me/… so "feed.atom" is never read as another
# path
for module_router in (
    feed.router,
    signin.router,
    account.public_router,
    atom.router,
    subscriptions.router,
    account.router,
):
    router.include_router(module_router)
