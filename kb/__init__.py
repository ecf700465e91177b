"""kb: a local knowledge-base assistant. `from kb import KnowledgeBase`."""

from kb.config import Settings, load_settings
from kb.errors import KBError
from kb.knowledge_base import KnowledgeBase
from kb.types import Chunk, DocumentInfo, Hit

__all__ = ["KnowledgeBase", "Settings", "load_settings", "KBError", "Hit", "Chunk", "DocumentInfo"]
__version__ = "0.1.0"
