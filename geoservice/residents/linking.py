"""Who is signed in, for the service halls: a booking or queue ticket made by a signed-in
resident is kept as theirs (geoservice.halls.common.signed_in_resident asks through
``app.state.resident_of``, which the app factory sets to ``resident_id_of``)."""

from __future__ import annotations

from fastapi import Request

from geoservice.api.deps import get_pool, get_settings
from geoservice.api.errors import Unauthorized
from geoservice.residents.signin import RESIDENT_PREFIX, request_token, resident_for_token


async def resident_id_of(request: Request) -> int | None:
    """The id of the resident whose live session the request carries (bearer token or session
    cookie), else None. Never refuses: no session, an expired one, another kind of token
    (staff, a proxy's Basic credentials) all leave the request anonymous."""
    try:
        token = request_token(request)
    except Unauthorized:  # an Authorization header of another scheme: not a resident's
        return None
    if token is None or not token.startswith(RESIDENT_PREFIX):
        return None
    # sessions are checked on the primary (sign-out holds from the next request)
    resident = await resident_for_token(get_pool(request), token, get_settings(request))
    return None if resident is None else resident.id
