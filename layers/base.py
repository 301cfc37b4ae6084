"""What a facility layer is: its key, names, look, attribute model, OSM rules, disclosure domains."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

LANGUAGES = ("zh-Hans", "zh-Hant", "en")

#: The nine service domains that disclosure matters belong to (DOMAIN.md).
DOMAINS: dict[str, dict[str, str]] = {
    "employment": {"zh-Hans": "就业创业", "zh-Hant": "就業創業", "en": "Employment"},
    "elderly_care": {"zh-Hans": "养老服务", "zh-Hant": "養老服務", "en": "Elderly care"},
    "social_assistance": {"zh-Hans": "社会救助", "zh-Hant": "社會救助", "en": "Social assistance"},
    "social_insurance": {"zh-Hans": "社会保险", "zh-Hant": "社會保險", "en": "Social insurance"},
    "household_registration": {
        "zh-Hans": "户籍管理",
        "zh-Hant": "戶籍管理",
        "en": "Household registration",
    },
    "health": {"zh-Hans": "医疗卫生", "zh-Hant": "醫療衛生", "en": "Health"},
    "urban_management": {
        "zh-Hans": "城市综合执法",
        "zh-Hant": "城市綜合執法",
        "en": "Urban management",
    },
    "compulsory_education": {
        "zh-Hans": "义务教育",
        "zh-Hant": "義務教育",
        "en": "Compulsory education",
    },
    "environment": {"zh-Hans": "环境保护", "zh-Hant": "環境保護", "en": "Environment"},
}

#: The five disclosure stages ("five disclosures"), in the order a matter lives them.
CATEGORIES: dict[str, dict[str, str]] = {
    "decision": {"zh-Hans": "决策公开", "zh-Hant": "決策公開", "en": "Decision"},
    "execution": {"zh-Hans": "执行公开", "zh-Hant": "執行公開", "en": "Execution"},
    "management": {"zh-Hans": "管理公开", "zh-Hant": "管理公開", "en": "Management"},
    "service": {"zh-Hans": "服务公开", "zh-Hant": "服務公開", "en": "Service"},
    "result": {"zh-Hans": "结果公开", "zh-Hant": "結果公開", "en": "Result"},
}

#: What a layer's facilities can do beyond being on the map, declared per layer as data.
#: ``live_status``: sensors post stall occupancy and facilities carry ``live`` (smart toilets);
#: ``ratings``: residents rate the facilities, staff read the ratings and their alerts.
LIVE_STATUS = "live_status"
RATINGS = "ratings"
CAPABILITIES = (LIVE_STATUS, RATINGS)

_TRUE = {"yes", "y", "true", "t", "1", "是", "有", "对", "對", "on"}
_FALSE = {"no", "n", "false", "f", "0", "否", "无", "無", "没有", "沒有", "off"}


def parse_tristate(value: Any) -> bool | None:
    """Read a yes/no value; anything that is not clearly yes or no is unknown (None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            return None
        return {1: True, 0: False}.get(int(value)) if value in (0, 1) else None
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


#: A boolean that may be unknown: never guessed from an unclear value.
TriState = Annotated[bool | None, BeforeValidator(parse_tristate)]


class Attributes(BaseModel):
    """Base of every layer's attribute model: unknown keys are refused, values validated."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


#: One OSM rule: every tag must be present, with one of the listed values (None: any value).
OsmRule = Mapping[str, tuple[str, ...] | None]


@dataclass(frozen=True)
class Layer:
    """A facility kind declared as data."""

    key: str
    names: Mapping[str, str]
    colour: str
    icon: str
    attributes: type[Attributes]
    osm_rules: tuple[OsmRule, ...] = ()
    #: layer attribute -> OSM tag whose yes/no (or number) value fills it
    osm_attributes: Mapping[str, str] = field(default_factory=dict)
    disclosure_domains: tuple[str, ...] = ()
    #: words in a matter's title that make it one this layer's facilities handle
    matter_keywords: tuple[str, ...] = ()
    #: position in menus and legends
    order: int = 100
    #: what the layer's facilities can do (CAPABILITIES)
    capabilities: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        missing = [lang for lang in LANGUAGES if lang not in self.names]
        if missing:
            raise ValueError(f"layer {self.key!r} has no name in {missing}")
        unknown = [d for d in self.disclosure_domains if d not in DOMAINS]
        if unknown:
            raise ValueError(f"layer {self.key!r} names unknown domains {unknown}")
        undeclared = sorted(self.capabilities - set(CAPABILITIES))
        if undeclared:
            raise ValueError(f"layer {self.key!r} has unknown capabilities {undeclared}")

    def name(self, lang: str) -> str:
        """The layer's name in `lang`, falling back to English."""
        return self.names.get(lang, self.names["en"])

    def validate_attributes(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate raw attributes; returns the JSON-ready dict without unset values."""
        model = self.attributes.model_validate(dict(raw))
        return model.model_dump(mode="json", exclude_none=True)

    def attribute_errors(self, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(field, reason) for each invalid attribute; empty when valid."""
        try:
            self.attributes.model_validate(dict(raw))
        except ValidationError as exc:
            return [
                (".".join(str(p) for p in e["loc"]) or "attributes", e["msg"]) for e in exc.errors()
            ]
        return []

    def matches_osm(self, tags: Mapping[str, str]) -> bool:
        """Whether an OSM element with these tags belongs to this layer."""
        for rule in self.osm_rules:
            if all(
                tag in tags and (values is None or tags[tag] in values)
                for tag, values in rule.items()
            ):
                return True
        return False

    def osm_attribute_values(self, tags: Mapping[str, str]) -> dict[str, Any]:
        """Layer attributes read from OSM tags (raw; validated later)."""
        return {attr: tags[tag] for attr, tag in self.osm_attributes.items() if tag in tags}

    def attribute_schema(self) -> dict[str, Any]:
        """JSON Schema of the layer's attributes."""
        return self.attributes.model_json_schema()
