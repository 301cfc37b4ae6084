"""Public toilets (公廁), some of them smart toilets with stall sensors."""

from pydantic import Field

from layers.base import LIVE_STATUS, RATINGS, Attributes, Layer, TriState


class ToiletAttributes(Attributes):
    """What a public toilet adds to a facility."""

    stalls_male: int | None = Field(None, ge=0, le=200)
    stalls_female: int | None = Field(None, ge=0, le=200)
    stalls_unisex: int | None = Field(None, ge=0, le=200)
    urinals: int | None = Field(None, ge=0, le=200)
    stalls_accessible: int | None = Field(None, ge=0, le=50)
    baby_change: TriState = None
    family_room: TriState = None
    changing_place: TriState = None
    fee: TriState = None
    attended: TriState = None
    has_sensor: TriState = None


LAYER = Layer(
    key="toilet",
    names={"zh-Hans": "公厕", "zh-Hant": "公廁", "en": "Public toilets"},
    colour="#ff7f0e",
    icon="restroom",
    attributes=ToiletAttributes,
    osm_rules=({"amenity": ("toilets",)},),
    osm_attributes={"baby_change": "changing_table", "fee": "fee", "attended": "supervised"},
    disclosure_domains=("urban_management", "environment"),
    matter_keywords=("公厕", "环卫", "市容", "垃圾", "厕所"),
    order=50,
    capabilities=frozenset({LIVE_STATUS, RATINGS}),
)
