"""Finding the passages for a query: hybrid dense + keyword search fused by rank (hybrid.py), the dictionary
gloss of a question across languages (glossary.py, its lookup built by glossary_build.py), an optional reranker
(rerank.py), the `Retriever` the answer chain is built with (retriever.py) and LangChain's retriever interface
(langchain_retriever.py).

This package leaves out the stores the passages live in (kb/stores/) and what is done with them (kb/answer/).
"""
