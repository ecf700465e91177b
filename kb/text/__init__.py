"""Facts about text that every stage shares: which language a text is in and how wide its characters are
(lang.py), keyword terms and stop-words (keywords.py), and where sentences and list items begin and end
(sentences.py).

A leaf package: it imports nothing else of kb, so ingest, retrieval and answering can all use it.
"""
