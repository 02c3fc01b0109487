"""`vlab.client.tokenize.LocalTokenizer`: exact prompt lengths without a server's /tokenize, counted like vLLM's
(chat: through the model's chat template with the generation prompt). Checked against the template rendered to text
and tokenized independently (the counts once came out as 2: the length of transformers 5's BatchEncoding)."""

from __future__ import annotations

import pytest

from vlab.core.paths import MODELS_DIR

FOLDER = MODELS_DIR / "smollm2-135m-instruct"
pytestmark = pytest.mark.skipif(not (FOLDER / "tokenizer.json").is_file(), reason="model not prepared (make model)")


def test_chat_count_is_the_rendered_template_tokenized() -> None:
    from transformers import AutoTokenizer

    from vlab.client.tokenize import LocalTokenizer

    messages = [{"role": "user", "content": "How far is the GPU from its physical limit?"}]
    local = LocalTokenizer(FOLDER)
    reference = AutoTokenizer.from_pretrained(str(FOLDER), local_files_only=True)
    text = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = len(reference(text, add_special_tokens=False)["input_ids"])
    assert local.count_chat(messages) == expected
    assert expected > local.count_prompt(messages[0]["content"]) + 5  # the template's tokens are counted too


def test_prompt_count_is_the_tokenizers() -> None:
    from vlab.client.tokenize import LocalTokenizer

    local = LocalTokenizer(FOLDER)
    assert local.count_prompt("one two three") == len(local.token_strs("one two three")) >= 3
