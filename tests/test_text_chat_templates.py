"""Chat templates: built-in per-family renderers vs the models' own jinja templates and
hand-written expected prompts."""

import pytest

from _offline import fetched
from memr1_jax import assets
from memr1_jax.text import (QWEN25_DEFAULT_SYSTEM, SMOLLM2_DEFAULT_SYSTEM, ChatTemplateError,
                            read_gguf_metadata, render_chat)
from memr1_jax.text import chat_templates as ct

SYS_USER = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]
MULTI = [{"role": "user", "content": "  Hi!  "},
         {"role": "assistant", "content": "Hello. How can I help?\n"},
         {"role": "user", "content": "Tell me a joke."}]
CONVERSATIONS = [SYS_USER, MULTI, [SYS_USER[0]] + MULTI, [{"role": "user", "content": "x"}]]


def _embedded_template(payload):
    path = fetched(assets.fetch_payload, payload)
    return read_gguf_metadata(path).get("tokenizer.chat_template")


@pytest.fixture(scope="module")
def smol_template():
    return _embedded_template(assets.SMOLLM2_135M_GGUF)


def test_smollm2_builtin_equals_embedded_jinja(smol_template):
    assert smol_template and "SmolLM" in smol_template
    for msgs in CONVERSATIONS:
        for agp in (True, False):
            ours = render_chat(msgs, "chatml", agp, default_system=SMOLLM2_DEFAULT_SYSTEM)
            assert ours == render_chat(msgs, smol_template, agp)
    expected = ("<|im_start|>system\nYou answer briefly.<|im_end|>\n"
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert render_chat(SYS_USER, smol_template) == expected
    # No system message: SmolLM2's default system prompt is inserted by its template.
    out = render_chat([{"role": "user", "content": "hi"}], smol_template)
    assert out.startswith(f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n")


def test_qwen_builtin_equals_embedded_jinja():
    template = _embedded_template(assets.QWEN25_CODER_05B_GGUF)
    assert template and "Qwen" in template
    for msgs in CONVERSATIONS:
        for agp in (True, False):
            ours = render_chat(msgs, "chatml", agp, default_system=QWEN25_DEFAULT_SYSTEM)
            assert ours == render_chat(msgs, template, agp)


def test_gemma_hand_written():
    expected = ("<bos><start_of_turn>user\nYou answer briefly.\n\nWhat is the capital of France?"
                "<end_of_turn>\n<start_of_turn>model\n")
    assert render_chat(SYS_USER, "gemma") == expected
    expected_multi = ("<bos><start_of_turn>user\nHi!<end_of_turn>\n"
                      "<start_of_turn>model\nHello. How can I help?<end_of_turn>\n"
                      "<start_of_turn>user\nTell me a joke.<end_of_turn>\n")
    assert render_chat(MULTI, "gemma", add_generation_prompt=False) == expected_multi
    assert render_chat(MULTI, "gemma").endswith("<end_of_turn>\n<start_of_turn>model\n")


def test_gemma_builtin_equals_upstream_jinja():
    for msgs in CONVERSATIONS:
        for agp in (True, False):
            assert render_chat(msgs, "gemma", agp) == render_chat(
                msgs, ct.GEMMA3_TEMPLATE, agp, bos_token="<bos>")
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ValueError, match="alternate"):
        render_chat(bad, "gemma")
    with pytest.raises(ChatTemplateError, match="alternate"):
        render_chat(bad, ct.GEMMA3_TEMPLATE)


def test_llama3_hand_written():
    expected = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                "You answer briefly.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\n"
                "What is the capital of France?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_chat(SYS_USER, "llama3") == expected
    no_gen = render_chat(SYS_USER, "llama3", add_generation_prompt=False)
    assert no_gen + "<|start_header_id|>assistant<|end_header_id|>\n\n" == expected
    for msgs in CONVERSATIONS:
        for agp in (True, False):
            assert render_chat(msgs, "llama3", agp) == render_chat(
                msgs, ct.LLAMA3_TEMPLATE, agp, bos_token="<|begin_of_text|>")


def test_chatml_generation_prompt_toggle():
    with_gen = render_chat(SYS_USER, "chatml")
    without = render_chat(SYS_USER, "chatml", add_generation_prompt=False)
    assert with_gen == without + "<|im_start|>assistant\n"
    assert without.endswith("<|im_end|>\n") and "You are" not in without
    assert render_chat(SYS_USER, ct.CHATML_TEMPLATE) == with_gen


def test_jinja_environment_features():
    tpl = ("{% for m in messages %}{% if loop.index0 > 0 %}{% break %}{% endif %}"
           "{{ m | tojson }}{% endfor %}{{ bos_token }}|{{ eos_token }}|{{ extra }}")
    out = render_chat([{"role": "user", "content": "é"}, {"role": "user", "content": "z"}], tpl,
                      bos_token="<s>", eos_token="</s>", extra=42)
    assert out == '{"role": "user", "content": "é"}<s>|</s>|42'
    with pytest.raises(ChatTemplateError, match="boom"):
        render_chat([], "{{ raise_exception('boom') }}")
    with pytest.raises(ChatTemplateError, match="syntax error"):
        render_chat([], "{% for %}")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown chat family 'vicuna'"):
        render_chat(SYS_USER, "vicuna")
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        render_chat([{"role": "user", "content": "a"}, {"content": "b"}], "chatml")
    with pytest.raises(ValueError, match="must be a string"):
        render_chat([{"role": "user", "content": 3}], "llama3")
    with pytest.raises(TypeError):
        render_chat("hello", "chatml")
    with pytest.raises(TypeError):
        render_chat(SYS_USER, 123)
