"""A new facility kind declared in one file: automated external defibrillators (AED).

Used by the ingest tests to prove that a kind needs nothing but this module: in-process through
``layers.register(LAYER)``, in a subprocess through ``SERVICEMAP_LAYER_MODULES``.
"""

from pydantic import Field

from layers import Attributes, Layer, TriState


class AedAttributes(Attributes):
    """What an AED adds to a facility."""

    category: str | None = Field(None, max_length=200)
    indoor: TriState = None


LAYER = Layer(
    key="aed",
    names={"zh-Hans": "自动体外除颤器", "zh-Hant": "自動體外除顫器", "en": "AEDs"},
    colour="#e377c2",
    icon="heart-pulse",
    attributes=AedAttributes,
    osm_rules=({"emergency": ("defibrillator",)},),
    disclosure_domains=("health",),
    order=60,
)
