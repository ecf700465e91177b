"""The Streamlit document Q&A app (imported as `kb.app`). It uses kb's public API only."""
