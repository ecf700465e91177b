"""kb: a local knowledge-base assistant. `from kb import KnowledgeBase`."""

import time as _time

IMPORTED_AT = _time.perf_counter()  # when kb began importing (the CLI's "imports" figure counts from here)

from kb.answer import Answer, Citation, Passage  # noqa: E402 (IMPORTED_AT first)
from kb.chat import ChatSession  # noqa: E402 (IMPORTED_AT first)
from kb.config import Settings, load_settings  # noqa: E402 (IMPORTED_AT first)
from kb.errors import KBError  # noqa: E402 (IMPORTED_AT first)
from kb.knowledge_base import KnowledgeBase  # noqa: E402 (IMPORTED_AT first)
from kb.types import Chunk, DocumentInfo, Hit  # noqa: E402 (IMPORTED_AT first)

__all__ = ["KnowledgeBase", "Settings", "load_settings", "KBError", "Hit", "Chunk", "DocumentInfo", "Answer",
           "Citation", "Passage", "ChatSession"]
__version__ = "0.1.0"
