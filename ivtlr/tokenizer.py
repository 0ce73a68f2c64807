"""Tokenizers: tiny offline byte-level BPEs for from-scratch models, and the latent tokens for real ones.

``train_bpe_model`` trains, in well under a second, a byte-level BPE on a task's own text with a family's special
tokens first. ``build_tiny_tokenizer`` makes the Qwen2-VL-compatible tokenizer of the Qwen families (ids 0-9 are
the specials, in the order below); Chameleon's tiny tokenizer, with one token per VQ image code, lives with its
family (``ivtlr.backbones.chameleon.build_tiny_chameleon_tokenizer``).
``load_tokenizer`` / ``add_latent_tokens`` prepare a real checkpoint's tokenizer (hub id or local path) for IVT-LR.
This module holds no prompt format (that belongs to the task objects) and never touches the network by itself.
"""

from __future__ import annotations

from typing import Iterable

QWEN2VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
)
# Added by the authors' code in this order (so their ids follow each other: start, end, latent).
LATENT_TOKENS = ("<|start-latent|>", "<|end-latent|>", "<|latent|>")

# Qwen2-VL-*-Instruct's chat template, verbatim: a default system turn when the first message is not a system
# message, then ChatML turns with <|vision_start|><|image_pad|><|vision_end|> standing for each image.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Fixed text every IVT-LR prompt contains (chat roles, the method's prompt markers, the answer sentence), mixed
# into the training corpus so that it gets compact tokens whatever the task text is.
# The authors' prompt keeps literal braces: "[Question]:{q}\n[Options]:\n(A).{c0}\n...Answer:\n".
PROMPT_TEXT = (
    "[Context]:{x}\n[Question]:{x}\n[Options]:\n" + "\n".join(f"({c}).{{x}}" for c in "ABCDE") + "\nAnswer:\n",
    "\n".join(f"{c}.{{x}}" for c in "ABCDE") + "\nAnswer:",
    *(f"Therefore, the answer is {c}" for c in "ABCDE"),
)
_FORMAT_TEXT = (
    "system\nYou are a helpful assistant.", "user\n", "assistant\n", *PROMPT_TEXT, "Picture 1: ", "Video 1: ",
)

def train_bpe_model(corpus: Iterable[str], vocab_size: int, specials: tuple[str, ...], format_text: tuple[str, ...]):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``specials`` at ids 0.. and merges learnt on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Repeat the format text so its merges are learnt even next to a large task corpus.
    tk.train_from_iterator([*corpus, *(format_text * 50)], trainer)
    return tk


def _train_bpe(corpus: Iterable[str], vocab_size: int, specials: tuple[str, ...]):
    from transformers import PreTrainedTokenizerFast

    tk = train_bpe_model(corpus, vocab_size, specials, _FORMAT_TEXT)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  extra_special_tokens=list(specials[1:]))
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tok


def build_tiny_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer for tiny from-scratch Qwen2-VL-style models.

    Args:
        corpus: the task's text (questions, options, rationales), e.g. ``ivtlr.data.synth.text_corpus()``.
        vocab_size: target size including the 256 byte symbols and the 10 specials (fewer if the corpus runs out of
            merges).
    Returns:
        A ``PreTrainedTokenizerFast``: ids 0-6 are Qwen2-VL's specials (QWEN2VL_SPECIAL_TOKENS), 7-9 the latent
        tokens (LATENT_TOKENS); eos "<|im_end|>", pad "<|endoftext|>", Qwen2-VL's chat template. It round-trips
        through ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
    Raises:
        ValueError: vocab_size too small to hold the bytes and the specials.
    """
    specials = QWEN2VL_SPECIAL_TOKENS + LATENT_TOKENS
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be >= {256 + len(specials)} (bytes + specials), got {vocab_size}")
    return _train_bpe(corpus, vocab_size, specials)


def add_latent_tokens(tokenizer) -> list[int]:
    """Add "<|start-latent|>", "<|end-latent|>", "<|latent|>" (in that order) as special tokens where missing.

    Tokens already present keep their ids. Resize the model's embeddings to ``len(tokenizer)`` afterwards.
    Returns:
        The three ids, in LATENT_TOKENS order.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in LATENT_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(LATENT_TOKENS))
    # Registered as extra specials too, so that skip_special_tokens and all_special_tokens see them.
    extra = list(getattr(tokenizer, "extra_special_tokens", None) or [])
    if not isinstance(extra, list):  # some tokenizers keep a dict of named extras; leave those alone
        return list(ids)
    new = [t for t in LATENT_TOKENS if t not in extra]
    if new:
        tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    return list(ids)


def load_tokenizer(name_or_path: str, **kwargs):
    """``AutoTokenizer.from_pretrained(name_or_path, **kwargs)`` followed by ``add_latent_tokens``.

    A hub id needs the network or a local HF cache; a local directory needs neither.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    add_latent_tokens(tok)
    return tok
