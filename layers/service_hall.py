"""Government service halls (行政服務大廳): the district hall and the street halls."""

from typing import Literal

from pydantic import Field, HttpUrl

from layers.base import Attributes, Layer


class ServiceHallAttributes(Attributes):
    """What a service hall adds to a facility."""

    level: Literal["district", "street"] | None = None
    booking_url: HttpUrl | None = None
    matters_handled: list[str] = Field(default_factory=list, max_length=500)
    windows: int | None = Field(None, ge=0, le=500)


LAYER = Layer(
    key="service_hall",
    names={"zh-Hans": "行政服务大厅", "zh-Hant": "行政服務大廳", "en": "Service halls"},
    colour="#2ca02c",
    icon="building-columns",
    attributes=ServiceHallAttributes,
    osm_rules=(
        {"office": ("government",), "government": ("public_service", "administrative")},
        {"amenity": ("townhall",)},
    ),
    disclosure_domains=(
        "household_registration",
        "social_insurance",
        "social_assistance",
        "employment",
        "elderly_care",
    ),
    matter_keywords=(
        "办理",
        "户籍",
        "户口",
        "居住证",
        "身份证",
        "社保",
        "参保",
        "保险",
        "就业",
        "救助",
        "保障",
        "供养",
        "补贴",
        "津贴",
        "申领",
        "登记",
    ),
    order=40,
)
