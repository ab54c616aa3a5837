"""A tiny randomly initialised Llama and a byte-level BPE tokenizer, built in milliseconds.

Model code is tested against this instead of a real model: same architecture
family and tokenizer machinery, no download, no seconds-long GGUF parsing. Callers
import torch/transformers through ``pytest.importorskip`` first.
"""

from __future__ import annotations

import functools
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "Melanie: I painted that lake sunrise last year! It's special to me.",
    "get_weather(city=Berlin) returned 7.5 C, light rain, humidity 86%",
    "pytest tests/test_api.py: 3 failed, 41 passed; KeyError 'token' in test_login",
    "- fact one\n- fact two\n\nThe refund policy allows returns within 30 business days.",
    "Session 2 - 1:14 pm on 25 May, 2023. Order ORD-7731 shipped to /srv/data/out.csv",
]


@functools.cache
def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(seed: int = 0, *, kv_heads: int = 2, init: float = 0.3) -> Any:
    """A 2-layer Llama with grouped-query attention; ``init`` large enough to vary outputs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=init,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def tiny_loaded(seed: int = 0, **options: Any) -> Any:
    """A :class:`LoadedModel` around the tiny model, on CPU in float32."""
    import torch

    from context_distill.models.loading import LoadedModel

    return LoadedModel(
        model=tiny_model(seed, **options),
        tokenizer=tiny_tokenizer(),
        device=torch.device("cpu"),
        dtype=torch.float32,
        source=f"tiny-{seed}",
    )
