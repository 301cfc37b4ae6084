"""Health facilities: community health centres (社康中心), clinics and hospitals."""

from typing import Literal

from pydantic import Field

from layers.base import Attributes, Layer, TriState


class ClinicAttributes(Attributes):
    """What a health facility adds to a facility."""

    type: Literal["community_health_centre", "clinic", "hospital", "doctors"] | None = None
    family_doctor: TriState = None
    emergency: TriState = None
    beds: int | None = Field(None, ge=0, le=10000)


LAYER = Layer(
    key="clinic",
    names={"zh-Hans": "医疗卫生机构", "zh-Hant": "醫療衛生機構", "en": "Clinics & hospitals"},
    colour="#d62728",
    icon="house-medical",
    attributes=ClinicAttributes,
    osm_rules=(
        {"amenity": ("clinic", "doctors", "hospital")},
        {"healthcare": ("clinic", "doctor", "hospital", "centre")},
    ),
    osm_attributes={"emergency": "emergency", "beds": "beds"},
    disclosure_domains=("health",),
    matter_keywords=("社康", "医疗", "卫生", "疫苗", "接种", "家庭医生", "医院", "健康"),
    order=20,
)
