"""kb: a local knowledge-base assistant. `from kb import KnowledgeBase`.

The public names load on first use (PEP 562), so that `kb --help` and other commands that never open a
knowledge base do not import numpy, the stores and the embedder: tests/bench/bench_help.py measures it.
"""

import time as _time
from importlib import import_module as _import_module

IMPORTED_AT = _time.perf_counter()  # when kb began importing (the CLI's "imports" figure counts from here)

_PUBLIC = {
    "KnowledgeBase": "kb.knowledge_base", "Settings": "kb.config", "load_settings": "kb.config",
    "KBError": "kb.errors", "Hit": "kb.types", "Chunk": "kb.types", "DocumentInfo": "kb.types",
    "Answer": "kb.answer.types", "Citation": "kb.answer.types", "Passage": "kb.answer.types", "ChatSession": "kb.answer.chat",
}
__all__ = list(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(_import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later reads skip this function
        return value
    raise AttributeError(f"module 'kb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
