"""Elderly-care services: canteens (長者飯堂), day-care centres (日照中心), care homes (養老院)."""

from typing import Literal

from pydantic import Field

from layers.base import Attributes, Layer, TriState


class EldercareAttributes(Attributes):
    """What an elder-care site adds to a facility."""

    type: Literal["canteen", "day_care", "nursing_home", "service_station"] | None = None
    beds: int | None = Field(None, ge=0, le=5000)
    day_care: TriState = None
    meal_service: TriState = None


LAYER = Layer(
    key="eldercare",
    names={"zh-Hans": "养老服务", "zh-Hant": "養老服務", "en": "Elderly care"},
    colour="#9467bd",
    icon="person-cane",
    attributes=EldercareAttributes,
    osm_rules=(
        {"social_facility": None, "social_facility:for": ("senior",)},
        {"amenity": ("nursing_home",)},
    ),
    osm_attributes={"beds": "capacity"},
    disclosure_domains=("elderly_care", "social_assistance"),
    matter_keywords=("养老", "长者", "老年", "高龄", "居家", "照料", "特困", "供养"),
    order=30,
)
