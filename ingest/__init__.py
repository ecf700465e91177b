"""Ingestion (imported as `kb.ingest`): load -> split -> embed -> write."""
