"""The Streamlit document Q&A app (imported as `kb.app`).

It works through `KnowledgeBase` and `ChatSession`, the settings (kb.config), and what it shares with the HTTP
API: uploads and deleting KBs and documents (kb/uploads.py), the process-wide model (llm/shared.py) and the
lazy model handle (kb/answer/loading.py)."""
