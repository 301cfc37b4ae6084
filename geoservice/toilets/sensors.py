"""Sensor ingestion (``POST /api/v1/sensors/readings``) and live status of a toilet.

A reading is stored exactly once per (device, seq): the whole post is stored inside one
transaction, shared with other posts waiting at the same moment (``sensor_writer``), and the
answer is sent only after that transaction committed. Validation is all-or-nothing: one bad reading refuses the batch, naming
every bad row and field.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, NotRequired

import orjson
import psycopg
from fastapi import APIRouter, Path, Request, Response
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from geoservice.api.auth import Device, cached_device, forget_device, remember_stalls
from geoservice.api.deps import PoolDep, SettingsDep, get_pool, get_settings
from geoservice.api.errors import (
    Forbidden,
    InvalidParameter,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from geoservice.api.features import iso
from geoservice.settings import ToiletSettings
from geoservice.toilets.writer import IngestWriter, Job, reading_row, writer_lifespan
from layers import LIVE_STATUS, has_capability

router = APIRouter(tags=["smart toilets"], lifespan=writer_lifespan)

Connection = psycopg.AsyncConnection[dict[str, Any]]

#: most readings in one batch
MAX_BATCH = 500
#: most validation errors named in one answer
MAX_ERRORS = 10

# left to right: ids are nearly always strings, and a string never passes as an int (strict)
StallId = Annotated[
    Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")]
    | Annotated[int, Field(ge=0, le=1_000_000)],
    Field(union_mode="left_to_right"),
]
ConsumableKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
# JSON strictness: "5" is not a number, 1 is not a boolean, NaN/Infinity are refused.
# TypedDicts, not models: validation straight to dicts is twice as fast on the hot path.
# Only keys are cached while parsing: values rarely repeat exactly.
_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", cache_strings="keys")


@with_config(_STRICT)
class StallReading(TypedDict):
    """One stall's occupancy in a reading."""

    id: StallId
    occupied: bool


@with_config(_STRICT)
class Reading(TypedDict):
    """One sensor reading."""

    seq: Annotated[int, Field(ge=0, le=2**63 - 1, description="the device's sequence number")]
    observed_at: Annotated[
        AwareDatetime, Field(description="RFC 3339 time of observation, with offset")
    ]
    stalls: NotRequired[Annotated[list[StallReading], Field(max_length=64)]]
    people_count: NotRequired[
        Annotated[
            int | None,
            Field(ge=0, le=100_000, description="entries since the device's previous reading"),
        ]
    ]
    nh3_ppm: NotRequired[Annotated[float | None, Field(ge=0, le=1000)]]
    humidity_pct: NotRequired[Annotated[float | None, Field(ge=0, le=100)]]
    battery_pct: NotRequired[Annotated[float | None, Field(ge=0, le=100)]]
    consumables: NotRequired[
        Annotated[
            dict[ConsumableKey, Annotated[float, Field(ge=0, le=100)]] | None,
            Field(max_length=16, description="remaining supplies in percent, e.g. paper"),
        ]
    ]
    toilet_id: NotRequired[
        Annotated[
            str | None,
            Field(max_length=200, description="optional: the toilet; must be the device's own"),
        ]
    ]


@with_config(_STRICT)
class ReadingBatch(TypedDict):
    """A batch of readings."""

    readings: Annotated[list[Reading], Field(min_length=1, max_length=MAX_BATCH)]


_READING = TypeAdapter(Reading)
_BATCH = TypeAdapter(ReadingBatch)


class IngestResult(BaseModel):
    """What was stored: new readings and (device, seq) pairs already stored."""

    accepted: int
    duplicates: int


def inline_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """A JSON Schema with its $defs inlined (for openapi_extra, which has no $defs)."""
    schema = adapter.json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [inline_schema(_READING), inline_schema(_BATCH)]}
            }
        },
    }
}


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "int") or part.startswith(("constrained-", "function-")):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _message(errors: list[Any]) -> str:
    """One message for the errors at one place. A union (a stall id: string or integer) gives
    one error per member: the one about the value, if any, says what is wrong ("greater than
    or equal to 0" for -5), else the types allowed are named together."""
    if any(error["type"] == "missing" for error in errors):
        return "is required"
    about_value = [error["msg"] for error in errors if not error["type"].endswith("_type")]
    if about_value:
        return str(about_value[0])
    first, *others = dict.fromkeys(str(error["msg"]) for error in errors)
    return " or ".join([first, *(m.removeprefix("Input should be ") for m in others)])


def _validation_detail(exc: ValidationError) -> str:
    errors: dict[str, list[Any]] = {}
    for error in exc.errors():
        errors.setdefault(_where(tuple(error["loc"])), []).append(error)
    parts = [f"{where}: {_message(found)}" for where, found in errors.items()]
    more = f" (and {len(parts) - MAX_ERRORS} more)" if len(parts) > MAX_ERRORS else ""
    return "; ".join(parts[:MAX_ERRORS]) + more


def parse_readings(body: bytes) -> tuple[list[Reading], bool]:
    """The readings of a body (one reading or {"readings": [...]}); whether it was a batch."""
    if not body.strip():
        raise InvalidParameter('the body is empty: send one reading or {"readings": [...]}')
    batch = body.lstrip().startswith(b"{") and b'"readings"' in body
    try:
        if batch:
            return _BATCH.validate_json(body)["readings"], True
        return [_READING.validate_json(body)], False
    except ValidationError as exc:
        errors = exc.errors()
        invalid = [e for e in errors if e["type"] == "json_invalid"]
        if invalid:
            raise InvalidParameter(
                f"the body is not valid JSON ({invalid[0]['msg']}); NaN and Infinity are not JSON"
            ) from exc
        if batch and any(
            e["type"] == "too_long" and tuple(e["loc"]) == ("readings",) for e in errors
        ):
            raise PayloadTooLarge(
                f"a batch holds at most {MAX_BATCH} readings; split it into smaller batches"
            ) from exc
        if any(e["type"] in ("dict_type", "model_type") and not e["loc"] for e in errors):
            raise InvalidParameter(
                'the body must be one reading object or {"readings": [...]}'
            ) from exc
        raise InvalidParameter(_validation_detail(exc)) from exc


@dataclass(frozen=True)
class Batch:
    """Validated readings ready to store."""

    #: the first reading of each seq, in posted order
    readings: list[Reading]
    #: readings dropped because their seq repeated within the post
    repeated: int
    #: every stall id the readings mention
    stall_ids: set[str]
    oldest: datetime
    newest: Reading
    seq_min: int
    seq_max: int


def check_readings(
    readings: list[Reading], device: Device, toilets: ToiletSettings, now: datetime, batch: bool
) -> Batch:
    """Times within the allowed window, stalls known or registrable, the device's own toilet."""

    def where(i: int) -> str:
        return f"readings[{i}]" if batch else "body"

    for i, reading in enumerate(readings):
        toilet = reading.get("toilet_id")
        if toilet is not None and toilet != device.facility_id:
            raise Forbidden(
                f"{where(i)}.toilet_id: this device posts only for toilet {device.facility_id!r}"
            )
    errors: list[str] = []
    latest = now + timedelta(seconds=toilets.max_future_s)
    earliest = now - timedelta(seconds=toilets.max_reading_age_s)
    times = [reading["observed_at"] for reading in readings]
    oldest, newest_time = min(times), max(times)
    if oldest < earliest or newest_time > latest:
        for i, observed in enumerate(times):
            if observed > latest:
                errors.append(
                    f"{where(i)}.observed_at: {observed.isoformat()} is more than "
                    f"{toilets.max_future_s} s in the future (server time {now.isoformat()})"
                )
            elif observed < earliest:
                errors.append(
                    f"{where(i)}.observed_at: {observed.isoformat()} is older than "
                    f"the {toilets.max_reading_age_s} s horizon"
                )
    stall_ids: set[str] = set()
    for i, reading in enumerate(readings):
        stalls = reading.get("stalls")
        if stalls:
            ids = {str(stall["id"]) for stall in stalls}
            if len(ids) != len(stalls):
                errors.append(f"{where(i)}.stalls: a stall id appears twice")
            stall_ids |= ids
    new_stalls = stall_ids - device.stall_ids
    if len(device.stall_ids) + len(new_stalls) > toilets.max_stalls_per_device:
        errors.append(
            f"stalls: {len(new_stalls)} new stall id(s) ({', '.join(sorted(new_stalls)[:5])}) "
            f"would give this device more than {toilets.max_stalls_per_device} stalls"
        )
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise InvalidParameter("; ".join(errors[:MAX_ERRORS]) + more)
    newest = readings[times.index(newest_time)]
    seqs = {reading["seq"] for reading in readings}
    seq_min, seq_max = min(seqs), max(seqs)
    if len(seqs) == len(readings):
        return Batch(readings, 0, stall_ids, oldest, newest, seq_min, seq_max)
    kept: list[Reading] = []
    for reading in readings:
        if reading["seq"] in seqs:
            seqs.discard(reading["seq"])
            kept.append(reading)
    return Batch(kept, len(readings) - len(kept), stall_ids, oldest, newest, seq_min, seq_max)


class RateLimiter:
    """A token bucket per key (in this process): `rate` per second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key: int, now: float | None = None) -> float:
        """0 when allowed (a token is taken), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


def _limiter(request: Request, toilets: ToiletSettings) -> RateLimiter:
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "device_limiter", None)
    if limiter is None:
        limiter = RateLimiter(toilets.device_rate_per_s, toilets.device_burst)
        state.device_limiter = limiter
    return limiter


def _months(oldest: datetime, newest: datetime) -> set[date]:
    """First days of the months (UTC) from oldest to newest."""
    month = oldest.astimezone(UTC).date().replace(day=1)
    last = newest.astimezone(UTC).date().replace(day=1)
    months = {month}
    while month < last:
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        months.add(month)
    return months


def stall_states(batch: Batch) -> list[dict[str, Any]]:
    """The newest state of each stall in the batch: [{"id", "occupied", "at"}]."""
    newest = batch.newest
    stalls = newest.get("stalls") or []
    if len(stalls) == len(batch.stall_ids):
        # the usual case: the newest reading reports every stall
        at = newest["observed_at"]
        return [{"id": str(s["id"]), "occupied": s["occupied"], "at": at} for s in stalls]
    states: dict[str, tuple[datetime, bool]] = {}
    for reading in batch.readings:
        observed = reading["observed_at"]
        for stall in reading.get("stalls") or ():
            key = str(stall["id"])
            state = states.get(key)
            if state is None or state[0] < observed:
                states[key] = (observed, stall["occupied"])
    return [{"id": k, "occupied": occupied, "at": at} for k, (at, occupied) in states.items()]


def make_job(device: Device, batch: Batch) -> Job:
    """The post as the writer stores it: rows to COPY and the JSON its SQL functions take."""
    newest = batch.newest
    begin = orjson.dumps(
        {
            "device": device.id,
            "facility": device.facility_id,
            "seq_min": batch.seq_min,
            "seq_max": batch.seq_max,
            "stalls": stall_states(batch),
        }
    )
    status = {
        "facility": device.facility_id,
        "newest": newest["observed_at"].isoformat(),
        "nh3_ppm": newest.get("nh3_ppm"),
        "humidity_pct": newest.get("humidity_pct"),
        "battery_pct": newest.get("battery_pct"),
    }
    rows = [reading_row(device.id, device.facility_id, r) for r in batch.readings]
    months = _months(batch.oldest, newest["observed_at"])
    return Job(device.id, device.facility_id, begin, rows, status, months)


def _writer(request: Request) -> IngestWriter:
    writer: IngestWriter | None = getattr(request.app.state, "ingest_writer", None)
    if writer is None:
        # an app built without this router's lifespan (never in the service itself)
        writer = request.app.state.ingest_writer = IngestWriter(request.app.state.settings)
    return writer


@router.post(
    "/api/v1/sensors/readings",
    response_model=IngestResult,
    summary="Post one reading or a batch of up to 500 (device token)",
    openapi_extra=_BODY_SCHEMA,
    responses={
        401: {"description": "missing, invalid or revoked device token"},
        403: {"description": "a reading for another toilet"},
        413: {"description": "body or batch too large"},
        429: {"description": "too many requests from this device (see Retry-After)"},
    },
)
async def post_readings(request: Request) -> Response:
    """Store readings exactly once per (device, seq); answer after the commit.

    Send `Authorization: Bearer <device token>`. The body is one reading or
    `{"readings": [...]}`; the answer `{"accepted": n, "duplicates": m}`.
    """
    # the hot path resolves its few dependencies itself rather than through injection
    device = await cached_device(request, get_pool(request))
    toilets = get_settings(request).toilets
    wait = _limiter(request, toilets).take(device.id)
    if wait > 0:
        raise TooManyRequests(
            f"device {device.id} posts more than {toilets.device_rate_per_s:g} requests/s; "
            "batch readings or slow down",
            retry_after=math.ceil(wait),
        )
    readings, batch = parse_readings(await request.body())
    checked = check_readings(readings, device, toilets, datetime.now(UTC), batch)
    try:
        accepted = await _writer(request).submit(make_job(device, checked))
    except psycopg.errors.InsufficientPrivilege as exc:
        forget_device(request)
        raise Unauthorized("this device token has been revoked") from exc
    except psycopg.errors.ProgramLimitExceeded as exc:
        raise InvalidParameter(
            f"stalls: this device would have more than {toilets.max_stalls_per_device} stalls"
        ) from exc
    remember_stalls(request, device, checked.stall_ids)
    result = {
        "accepted": accepted,
        "duplicates": len(checked.readings) - accepted + checked.repeated,
    }
    return Response(orjson.dumps(result), media_type="application/json")


ToiletId = Annotated[str, Path(max_length=200, description="the toilet's facility id")]


async def toilet_status(
    conn: psycopg.AsyncConnection[dict[str, Any]], facility_id: str, toilets: ToiletSettings
) -> dict[str, Any]:
    """Live status of one toilet (404 unknown or not a toilet)."""
    row = await (
        await conn.execute(
            "SELECT f.id, f.layer, f.name, s.stalls_total, s.stalls_free, s.people_since_clean,"
            " s.nh3_ppm, s.humidity_pct, s.battery_pct, s.observed_at, s.last_seen,"
            " s.cleaned_at, s.cleaned_by,"
            " s.last_seen > now() - make_interval(secs => %s) AS online,"
            " EXISTS (SELECT 1 FROM toilet_devices d WHERE d.facility_id = f.id"
            "         AND d.revoked_at IS NULL) AS sensor"
            " FROM facilities f LEFT JOIN toilet_status s ON s.facility_id = f.id"
            " WHERE f.id = %s",
            (toilets.online_window_s, facility_id),
        )
    ).fetchone()
    if row is None or not has_capability(row["layer"], LIVE_STATUS):
        raise NotFound(f"no toilet with id {facility_id!r}")
    has_status = row["stalls_total"] is not None
    return {
        "id": row["id"],
        "name": row["name"],
        "sensor": bool(row["sensor"]),
        "stalls_total": row["stalls_total"] if has_status else None,
        "stalls_free": row["stalls_free"] if has_status else None,
        "online": bool(row["online"]),
        "last_seen": iso(row["last_seen"]),
        "observed_at": iso(row["observed_at"]),
        "people_since_clean": row["people_since_clean"],
        "nh3_ppm": row["nh3_ppm"],
        "humidity_pct": row["humidity_pct"],
        "battery_pct": row["battery_pct"],
        "cleaned_at": iso(row["cleaned_at"]),
        "cleaned_by": row["cleaned_by"],
    }


@router.get("/api/v1/toilets/{facility_id}/status", summary="Live status of a smart toilet")
async def get_status(facility_id: ToiletId, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """Stalls total/free, online, last seen, people since the last clean, NH₃, battery."""
    async with pool.connection() as conn:
        return await toilet_status(conn, facility_id, settings.toilets)
