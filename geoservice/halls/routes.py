"""Every service-hall route in one router (the app includes ``router``)."""

from __future__ import annotations

from fastapi import APIRouter

from geoservice.halls import booking, cases, queue

router = APIRouter()
# staff paths before the public ones that share their prefix shape
for module_router in (
    queue.staff_router,
    cases.staff_router,
    booking.router,
    queue.router,
    cases.router,
):
    router.include_router(module_router)
