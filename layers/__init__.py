"""Facility layers: one module per kind, discovered at run time.

Adding a kind is adding one module to this package (or any importable module named in
``SERVICEMAP_LAYER_MODULES``) that defines ``LAYER = Layer(...)``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading

from layers.base import (
    CAPABILITIES,
    CATEGORIES,
    DOMAINS,
    LANGUAGES,
    LIVE_STATUS,
    RATINGS,
    Attributes,
    Layer,
    TriState,
    parse_tristate,
)

__all__ = [
    "CAPABILITIES",
    "CATEGORIES",
    "LIVE_STATUS",
    "RATINGS",
    "DOMAINS",
    "LANGUAGES",
    "Attributes",
    "Layer",
    "TriState",
    "UnknownLayer",
    "all_layers",
    "get_layer",
    "has_capability",
    "keys_with",
    "parse_tristate",
    "register",
    "unregister",
]

_registry: dict[str, Layer] = {}
_discovered = False
_lock = threading.Lock()


class UnknownLayer(KeyError):
    """A layer key that no module declares."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)

    def __str__(self) -> str:
        return f"unknown layer {self.key!r}; known layers: {', '.join(sorted(all_layers()))}"


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    # concurrent first callers (threads serving requests) must never see a half-filled registry
    with _lock:
        if _discovered:
            return
        names = [f"layers.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name != "base"]
        extra = os.environ.get("SERVICEMAP_LAYER_MODULES", "")
        names += [n.strip() for n in extra.split(",") if n.strip()]
        for name in names:
            module = importlib.import_module(name)
            layer = getattr(module, "LAYER", None)
            if isinstance(layer, Layer):
                _registry.setdefault(layer.key, layer)
        _discovered = True


def register(layer: Layer) -> Layer:
    """Register a layer declared outside this package (a plug-in, a test)."""
    _discover()
    _registry[layer.key] = layer
    return layer


def unregister(key: str) -> None:
    """Forget a registered layer (tests)."""
    _registry.pop(key, None)


def all_layers() -> dict[str, Layer]:
    """Every known layer by key, in registration order."""
    _discover()
    return dict(sorted(_registry.items(), key=lambda item: (item[1].order, item[0])))


def get_layer(key: str) -> Layer:
    """The layer with this key, or UnknownLayer naming the known keys."""
    layers = all_layers()
    if key not in layers:
        raise UnknownLayer(key)
    return layers[key]


def keys_with(capability: str) -> tuple[str, ...]:
    """Keys of the layers that declare `capability` (e.g. LIVE_STATUS), in menu order."""
    return tuple(key for key, layer in all_layers().items() if capability in layer.capabilities)


def has_capability(key: str, capability: str) -> bool:
    """Whether the layer `key` declares `capability` (False for unknown layers)."""
    _discover()
    layer = _registry.get(key)  # per feature on hot paths: no sorting of all_layers()
    return layer is not None and capability in layer.capabilities
