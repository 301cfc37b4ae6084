"""Schools providing compulsory education (義務教育)."""

from typing import Literal

from pydantic import Field

from layers.base import Attributes, Layer, TriState


class SchoolAttributes(Attributes):
    """What a school adds to a facility."""

    level: Literal["primary", "secondary", "nine_year", "twelve_year"] | None = None
    public: TriState = None
    enrolment_area: str | None = Field(None, max_length=2000)
    students: int | None = Field(None, ge=0, le=20000)


LAYER = Layer(
    key="school",
    names={"zh-Hans": "学校", "zh-Hant": "學校", "en": "Schools"},
    colour="#1f77b4",
    icon="school",
    attributes=SchoolAttributes,
    osm_rules=({"amenity": ("school",)},),
    disclosure_domains=("compulsory_education",),
    matter_keywords=("入学", "学位", "义务教育", "学校", "招生", "课后", "转学", "学生"),
    order=10,
)
