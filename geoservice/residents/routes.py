"""Every resident route in one router (the app includes ``router``)."""

from __future__ import annotations

from fastapi import APIRouter

from geoservice.residents import account, atom, feed, signin, subscriptions

router = APIRouter()
# the Atom route before /api/v1/me/… so "feed.atom" is never read as another path
for module_router in (
    signin.router,
    account.public_router,
    atom.router,
    feed.router,
    subscriptions.router,
    account.router,
):
    router.include_router(module_router)
