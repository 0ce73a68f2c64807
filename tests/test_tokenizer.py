"""The tiny offline tokenizer (Qwen2-VL specials + latent tokens + chat template) and the latent-token helpers."""

import pytest
from transformers import AutoTokenizer

from ivtlr.data.synth import SynthConfig, make_example, text_corpus
from ivtlr.tasks.prompts import format_prompt
from ivtlr.tokenizer import (
    LATENT_TOKENS, QWEN2VL_SPECIAL_TOKENS, _train_bpe, add_latent_tokens, build_tiny_tokenizer, load_tokenizer,
)

SPECIALS = [*QWEN2VL_SPECIAL_TOKENS, *LATENT_TOKENS]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer(text_corpus(300))


def user_turn(text):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def prompt_text(ex):
    return format_prompt(ex.question, ex.choices)  # the tasks' own formatter (the authors' training prompt)


def test_specials_are_single_tokens_with_fixed_ids(tok):
    assert tok.convert_tokens_to_ids(SPECIALS) == list(range(10))
    assert SPECIALS[:7] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                            "<|image_pad|>", "<|video_pad|>"]
    assert list(LATENT_TOKENS) == ["<|start-latent|>", "<|end-latent|>", "<|latent|>"]
    for i, s in enumerate(SPECIALS):
        assert tok(f"red{s}blue", add_special_tokens=False)["input_ids"].count(i) == 1
        assert tok(s, add_special_tokens=False)["input_ids"] == [i]
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert set(SPECIALS) <= set(tok.all_special_tokens)


def test_decode_skips_specials(tok):
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>red<|latent|><|latent|> cell<|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "user\nred cell"


def test_chat_template_is_qwen2vl_for_one_user_turn_with_an_image(tok):
    got = tok.apply_chat_template(user_turn("[Question]:Hi\nAnswer:\n"), tokenize=False, add_generation_prompt=True)
    assert got == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                   "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>[Question]:Hi\nAnswer:\n<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = "The white cell has an arrow pointing up<|latent|><|im_end|>"
    assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert back.convert_tokens_to_ids(SPECIALS) == list(range(10))
    assert back.chat_template == tok.chat_template
    assert (back.eos_token, back.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert len(back) == len(tok)
    assert back.apply_chat_template(user_turn("x"), tokenize=False, add_generation_prompt=True) == \
        tok.apply_chat_template(user_turn("x"), tokenize=False, add_generation_prompt=True)


def test_synthetic_example_round_trips_and_is_compact(tok):
    cfg = SynthConfig()
    for i in range(6):
        ex = make_example(cfg, 9, "test", i)
        prompt = tok.apply_chat_template(user_turn(prompt_text(ex)), tokenize=False, add_generation_prompt=True)
        text = prompt + "<|latent|>" * 3 + ex.rationale + "\nTherefore, the answer is " + ex.answer + "<|im_end|>"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        # whole words, not bytes
        assert len(tok(ex.rationale)["input_ids"]) < 2.5 * len(ex.rationale.split())
        assert len(tok(prompt_text(ex))["input_ids"]) < 3.5 * len(prompt_text(ex).split())  # + format punctuation
    assert len(tok) <= 512
    for word in ["red", "blue", "orange", "dot", "cell", "option", "follow", "white"]:
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word


def test_add_latent_tokens_appends_in_order_and_is_idempotent(tmp_path):
    base = _train_bpe(["hello world"] * 5, 300, QWEN2VL_SPECIAL_TOKENS)
    n = len(base)
    assert base.convert_tokens_to_ids(list(QWEN2VL_SPECIAL_TOKENS)) == list(range(7))
    ids = add_latent_tokens(base)
    assert ids == [n, n + 1, n + 2] and len(base) == n + 3
    assert add_latent_tokens(base) == ids and len(base) == n + 3
    enc = base("a<|start-latent|>b<|latent|><|end-latent|>", add_special_tokens=False)["input_ids"]
    assert ids[0] in enc and ids[1] in enc and ids[2] in enc
    assert base.decode(enc, skip_special_tokens=True) == "ab"
    # load_tokenizer on a local directory that lacks them.
    plain = _train_bpe(["hello world"] * 5, 300, QWEN2VL_SPECIAL_TOKENS)
    plain.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.convert_tokens_to_ids(list(LATENT_TOKENS)) == [n, n + 1, n + 2]
    assert set(LATENT_TOKENS) <= set(loaded.all_special_tokens)


def test_tiny_tokenizer_already_has_latents(tok):
    n = len(tok)
    assert add_latent_tokens(tok) == [7, 8, 9] and len(tok) == n


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_tokenizer(["red"], vocab_size=100)
