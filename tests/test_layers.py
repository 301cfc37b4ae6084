"""The layer registry: five kinds as data; adding one is one declaration."""

import pytest
from pydantic import Field

import layers
from layers import Attributes, Layer, TriState, parse_tristate


def test_five_layers_in_mission_order() -> None:
    assert list(layers.all_layers()) == ["school", "clinic", "eldercare", "service_hall", "toilet"]


@pytest.mark.parametrize("key", ["school", "clinic", "eldercare", "service_hall", "toilet"])
def test_each_layer_is_complete(key: str) -> None:
    layer = layers.get_layer(key)
    assert set(layer.names) >= {"zh-Hans", "zh-Hant", "en"}
    assert layer.colour.startswith("#") and layer.icon
    assert layer.osm_rules and layer.disclosure_domains
    assert layer.attribute_schema()["type"] == "object"


def test_unknown_layer_names_the_known_ones() -> None:
    with pytest.raises(layers.UnknownLayer) as info:
        layers.get_layer("park")
    assert "toilet" in str(info.value) and "park" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Yes", True), ("N", False), ("是", True), ("否", False), (1, True), ("0", False),
     ("true", True), ("maybe", None), ("", None), (None, None), (float("nan"), None), (2, None)],
)  # fmt: skip
def test_tristate_never_guesses(raw: object, expected: bool | None) -> None:
    assert parse_tristate(raw) is expected


def test_toilet_attributes_validate() -> None:
    toilet = layers.get_layer("toilet")
    assert toilet.validate_attributes({"baby_change": "Yes", "stalls_female": "4", "fee": "?"}) == {
        "baby_change": True,
        "stalls_female": 4,
    }
    errors = toilet.attribute_errors({"stalls_female": -3, "colour": "red"})
    assert {field for field, _ in errors} == {"stalls_female", "colour"}


def test_osm_rules() -> None:
    assert layers.get_layer("toilet").matches_osm({"amenity": "toilets"})
    assert layers.get_layer("clinic").matches_osm({"amenity": "doctors"})
    eldercare = layers.get_layer("eldercare")
    assert eldercare.matches_osm({"social_facility": "group_home", "social_facility:for": "senior"})
    assert not eldercare.matches_osm(
        {"social_facility": "group_home", "social_facility:for": "child"}
    )


def test_a_new_kind_is_one_declaration() -> None:
    class AedAttributes(Attributes):
        indoor: TriState = None
        cabinets: int | None = Field(None, ge=0)

    aed = Layer(
        key="aed_test",
        names={"zh-Hans": "除颤仪", "zh-Hant": "除顫儀", "en": "AEDs"},
        colour="#00aa00",
        icon="heart-pulse",
        attributes=AedAttributes,
        osm_rules=({"emergency": ("defibrillator",)},),
        disclosure_domains=("health",),
    )
    layers.register(aed)
    try:
        assert layers.get_layer("aed_test") is aed
        assert aed.validate_attributes({"indoor": "是"}) == {"indoor": True}
    finally:
        layers.unregister("aed_test")
    assert "aed_test" not in layers.all_layers()


def test_layer_needs_all_languages() -> None:
    with pytest.raises(ValueError, match="zh-Hant"):
        Layer(
            key="x",
            names={"zh-Hans": "x", "en": "x"},
            colour="#000",
            icon="x",
            attributes=Attributes,
        )


def test_discovery_is_thread_safe() -> None:
    import importlib
    from concurrent.futures import ThreadPoolExecutor

    registry = importlib.import_module("layers")
    saved = dict(registry._registry)
    registry._registry.clear()
    registry._discovered = False
    try:
        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(lambda _: tuple(layers.all_layers()), range(64)))
        assert set(seen) == {("school", "clinic", "eldercare", "service_hall", "toilet")}
    finally:
        registry._registry.update(saved)
        registry._discovered = True


def test_capabilities_are_declared_per_layer() -> None:
    assert layers.keys_with(layers.LIVE_STATUS) == ("toilet",)
    assert layers.has_capability("toilet", layers.RATINGS)
    assert not layers.has_capability("school", layers.LIVE_STATUS)
    assert not layers.has_capability("park", layers.LIVE_STATUS)


def test_a_plug_in_layer_with_live_status_gets_it() -> None:
    kiosk = Layer(
        key="kiosk",
        names={"zh-Hans": "亭", "zh-Hant": "亭", "en": "Kiosks"},
        colour="#123456",
        icon="store",
        attributes=Attributes,
        capabilities=frozenset({layers.LIVE_STATUS}),
    )
    layers.register(kiosk)
    try:
        assert layers.keys_with(layers.LIVE_STATUS) == ("toilet", "kiosk")
    finally:
        layers.unregister("kiosk")
    assert layers.keys_with(layers.LIVE_STATUS) == ("toilet",)


def test_unknown_capability_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown capabilities"):
        Layer(
            key="x",
            names={"zh-Hans": "x", "zh-Hant": "x", "en": "x"},
            colour="#000000",
            icon="x",
            attributes=Attributes,
            capabilities=frozenset({"teleport"}),
        )
