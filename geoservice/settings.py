"""Settings, one small class per concern (``SERVICEMAP_`` prefix, ``.env``, extra keys ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Where the project lives: the checkout when run from one, else the working directory.
PROJECT_ROOT = (
    Path(__file__).resolve().parent.parent
    if (Path(__file__).resolve().parent.parent / "pyproject.toml").exists()
    else Path.cwd()
)


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class DatabaseSettings(BaseSettings):
    """Where the data lives: ``DATABASE_URL`` or the embedded project-local cluster."""

    model_config = _config("SERVICEMAP_DB_")

    url: str | None = Field(None, validation_alias="DATABASE_URL")
    data_dir: Path = PROJECT_ROOT / ".data" / "postgres"
    port: int = Field(54329, ge=1024, le=65535)
    name: str = "servicemap"
    pool_min: int = Field(1, ge=0)
    pool_max: int = Field(10, ge=1)
    pool_timeout_s: float = Field(5.0, gt=0)
    statement_timeout_ms: int = Field(15000, ge=0)
    #: streaming standbys for read-only requests (geoservice.db.replicas), comma-separated
    read_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias="SERVICEMAP_DATABASE_READ_URLS"
    )
    #: a standby further behind the primary than this (seconds) gets no reads
    max_replica_lag_s: float = Field(5.0, gt=0, validation_alias="SERVICEMAP_MAX_REPLICA_LAG_S")
    #: how often each standby's health and lag are checked (seconds)
    replica_check_s: float = Field(1.0, gt=0, le=60)

    @field_validator("read_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(u.strip() for u in value.split(",") if u.strip())
        return value


class DistrictSettings(BaseSettings):
    """The district this deployment serves."""

    model_config = _config("SERVICEMAP_DISTRICT_")

    name: str = "罗湖区"
    name_en: str = "Luohu District, Shenzhen"
    code: str = "440303"
    #: minLon, minLat, maxLon, maxLat
    bbox: Annotated[tuple[float, float, float, float], NoDecode] = (114.09, 22.52, 114.23, 22.62)
    timezone: str = "Asia/Shanghai"
    default_lang: str = "zh-Hans"

    @field_validator("bbox", mode="before")
    @classmethod
    def _parse_bbox(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(v) for v in value.split(","))
        return value

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, value: tuple[float, float, float, float]) -> tuple[float, ...]:
        min_lon, min_lat, max_lon, max_lat = value
        if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
            raise ValueError("bbox must be minLon,minLat,maxLon,maxLat in degrees")
        return value

    @property
    def centre(self) -> tuple[float, float]:
        """(lat, lon) of the bbox centre."""
        min_lon, min_lat, max_lon, max_lat = self.bbox
        return (min_lat + max_lat) / 2, (min_lon + max_lon) / 2


class ServiceSettings(BaseSettings):
    """How the HTTP service runs and presents itself."""

    model_config = _config("SERVICEMAP_")

    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    tile_attribution: str = "&copy; OpenStreetMap contributors"
    #: largest request body accepted, in bytes
    max_body_bytes: int = Field(1_000_000, ge=1024)
    #: salt for hashing client identities (ratings); set it in production
    client_salt: str = "change-me"
    log_level: str = "info"

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class ToiletSettings(BaseSettings):
    """Smart toilets: sensor windows, alert thresholds, retention and rate limits."""

    model_config = _config("SERVICEMAP_TOILETS_")

    #: a sensor heard from within this many seconds is online
    online_window_s: int = Field(300, ge=10, le=86400)
    #: readings observed longer ago than this are refused (seconds; default 30 days)
    max_reading_age_s: int = Field(30 * 86400, ge=60, le=400 * 86400)
    #: readings observed this far in the future are refused (clock skew allowance)
    max_future_s: int = Field(300, ge=0, le=3600)
    #: alert: a sensor silent longer than this (seconds)
    silent_after_s: int = Field(900, ge=60)
    #: alert: ammonia above this (ppm)
    nh3_alert_ppm: float = Field(25.0, gt=0)
    #: alert: people since the last clean above this
    busy_after_people: int = Field(200, ge=1)
    #: alert: 30-day average rating below this, with at least `low_rating_min_count` ratings
    low_rating_below: float = Field(3.0, gt=1, le=5)
    low_rating_min_count: int = Field(5, ge=1)
    #: per-device request rate (requests per second, sustained) and burst
    device_rate_per_s: float = Field(5.0, gt=0)
    device_burst: int = Field(30, ge=1)
    #: largest number of stalls one device may report
    max_stalls_per_device: int = Field(64, ge=1, le=1000)
    #: one rating per client per facility per this many hours
    rating_interval_h: float = Field(12.0, ge=0)
    #: at most this many ratings of one facility per network address per interval (headroom
    #: for residents behind one carrier NAT; a client changing its user agent is one of them)
    ratings_per_address: int = Field(4, ge=1)


class HallSettings(BaseSettings):
    """Service halls: appointments, queue tickets, personal data, abuse bounds."""

    model_config = _config("SERVICEMAP_HALLS_")

    #: a booking not checked in this many minutes after its start lapses
    lapse_after_min: int = Field(15, ge=0, le=240)
    #: check-in opens this many minutes before the slot
    check_in_before_min: int = Field(30, ge=0, le=240)
    #: names and phone numbers are deleted this many days after the case ends
    retention_days: int = Field(30, ge=0, le=3650)
    #: bookings one phone number may hold at once (not yet ended)
    max_bookings_per_phone: int = Field(3, ge=1, le=100)
    #: bookings and walk-in tickets one network address may make per hour
    max_per_address_per_hour: int = Field(20, ge=1, le=1_000_000)


class ResidentSettings(BaseSettings):
    """Residents' own pages: sign-in codes, mail, rate limits, retention."""

    model_config = _config("SERVICEMAP_RESIDENTS_")

    #: where codes and digests are mailed (smtp://[user:password@]host:port, smtps:// for TLS);
    #: unset: codes are written to the server log and digests are not sent (development)
    smtp_url: str | None = Field(None, validation_alias="SERVICEMAP_SMTP_URL")
    mail_from: str = "servicemap@localhost"
    #: a sign-in code is good for this many seconds and this many tries
    code_ttl_s: int = Field(600, ge=60, le=3600)
    code_tries: int = Field(5, ge=1, le=20)
    #: codes sent per address and per network (/24 or /48) per hour
    codes_per_address_per_hour: int = Field(5, ge=1, le=1000)
    codes_per_network_per_hour: int = Field(30, ge=1, le=1_000_000)
    #: a session unused this many days ends
    session_days: int = Field(90, ge=1, le=3650)
    #: an account unused this many days is erased (0: never)
    retention_days: int = Field(730, ge=0, le=36500)
    #: feed items, and then their events, older than this many days are deleted by each digest
    #: run, except items not yet mailed to a resident who wants digests (0: kept forever)
    feed_retention_days: int = Field(365, ge=0, le=36500)
    #: largest radius of an area subscription (metres), and subscriptions per resident
    max_radius_m: float = Field(5000.0, gt=0, le=50000)
    max_subscriptions: int = Field(200, ge=1, le=10000)
    #: `servicemap serve` fans out and mails every this many seconds (0: only `servicemap notify`)
    notify_every_s: int = Field(0, ge=0, le=86400)


class Settings(BaseModel):
    """All settings, grouped by concern."""

    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    district: DistrictSettings = Field(default_factory=DistrictSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    toilets: ToiletSettings = Field(default_factory=ToiletSettings)
    halls: HallSettings = Field(default_factory=HallSettings)
    residents: ResidentSettings = Field(default_factory=ResidentSettings)


def load_settings() -> Settings:
    """Read settings from the environment and ``.env``."""
    return Settings()
