"""The sample corpus: a generator for small PDFs about LLM serving, the PDFs it made and labeled questions."""
