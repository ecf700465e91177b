"""Model backends (imported as `kb.llm`): one file per backend behind one small interface."""
