"""PDF retrieval-augmented generation against the local vLLM server.

Import-light on purpose: `import rag` pulls in nothing heavy. The pieces a load user needs are
`rag.retrieval.Retriever` (chromadb + the bundled all-MiniLM-L6-v2, loaded when constructed) and
`rag.prompt.build_messages` (pure Python).
"""

DEFAULT_COLLECTION = "docs"
