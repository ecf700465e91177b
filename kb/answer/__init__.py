"""Answering a question: the chain (chain.py: rewrite | retrieve | pack | prompt | generate | verify), its
prompts (prompts.py, prompts/*.txt) and budgets (packing.py), quoting (extract.py), citation checks
(citations.py), the loop guard, follow-up rewriting (rewrite.py), chat sessions (chat.py), loading the model
beside the chain (loading.py) and the one answer service every face uses (service.py), with its bound on the
answers running or waiting for the model (admission.py).

The data types an answer is made of (`Answer`, `Citation`, `Passage`, `Timings`) live in types.py and are
importable from here. This package leaves out search (kb/retrieval/).
"""

from kb.answer.types import Answer, Citation, Passage, Timings

__all__ = ["Answer", "Citation", "Passage", "Timings"]
