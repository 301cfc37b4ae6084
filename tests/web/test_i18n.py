"""The one i18n table: every page has every word in every language; one template environment."""

from __future__ import annotations

import pytest

import layers
from web import i18n, templating


@pytest.mark.parametrize("page", i18n.PAGES)
def test_every_language_has_every_word(page: str):
    table = i18n.TEXT[page]
    assert tuple(table) == layers.LANGUAGES
    keys = set(table["en"])
    for lang, words in table.items():
        assert set(words) == keys, lang
        assert all(isinstance(w, str) and w.strip() for w in words.values()), lang


def test_language_labels_name_each_language():
    assert tuple(i18n.LANGUAGE_LABELS) == layers.LANGUAGES
    assert tuple(i18n.OG_LOCALE) == layers.LANGUAGES


def test_templates_escape_and_refuse_undefined_names():
    template = templating.environment.from_string("{{ value }}")
    assert template.render(value="<script>") == "&lt;script&gt;"
    with pytest.raises(Exception, match="undefined"):
        templating.environment.from_string("{{ missing }}").render()
    assert templating.http_url("javascript:alert(1)") is None
    assert templating.http_url(" https://example.org ") == "https://example.org"
