"""kb: a local knowledge-base assistant. `from kb import KnowledgeBase`."""
