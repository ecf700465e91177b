"""kb: a local knowledge-base assistant. `from kb import KnowledgeBase`."""

from kb.answer import Answer, Citation, Passage
from kb.chat import ChatSession
from kb.config import Settings, load_settings
from kb.errors import KBError
from kb.knowledge_base import KnowledgeBase
from kb.types import Chunk, DocumentInfo, Hit

__all__ = ["KnowledgeBase", "Settings", "load_settings", "KBError", "Hit", "Chunk", "DocumentInfo", "Answer",
           "Citation", "Passage", "ChatSession"]
__version__ = "0.1.0"
