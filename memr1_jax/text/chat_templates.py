"""Chat prompt rendering: a model's own jinja template, or built-in per-family formats.

`render_chat(messages, x)` where x is
* a `Tokenizer`: its embedded template (GGUF `tokenizer.chat_template` or
  tokenizer_config.json) when present, else the built-in format of its family;
* a family name: "chatml", "gemma", "llama3" (built-in, plain Python);
* a jinja template source string.

Rendered gemma/llama3 prompts start with the BOS *text* ("<bos>",
"<|begin_of_text|>") as the official templates do; our tokenizers map that
text to the BOS id, so encode such prompts with add_bos=False.

Jinja rendering mirrors transformers' `apply_chat_template` environment
(sandboxed, trim_blocks, lstrip_blocks, loopcontrols, raise_exception, tojson).
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Mapping, Sequence

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

FAMILY_BOS = {"chatml": None, "gemma": "<bos>", "llama3": "<|begin_of_text|>"}

# Upstream templates (text-only parts), kept for reference and as jinja fallbacks.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError("messages must be a sequence of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] = {m!r} is not a {{'role', 'content'}} mapping")
        if not isinstance(m["role"], str):
            raise ValueError(f"messages[{i}]['role'] = {m['role']!r} is not a string")
        out.append(dict(m))
    return out


def _text(m: dict, i: int) -> str:
    c = m["content"]
    if not isinstance(c, str):
        raise ValueError(f"messages[{i}]['content'] must be a string for built-in templates, "
                         f"got {type(c).__name__}")
    return c


def render_chatml(messages, add_generation_prompt: bool = True,
                  default_system: str | None = None) -> str:
    """ChatML (SmolLM2, Qwen). default_system is inserted when the first message isn't a system one
    (SMOLLM2_DEFAULT_SYSTEM / QWEN25_DEFAULT_SYSTEM reproduce those models' templates)."""
    messages = _check_messages(messages)
    parts = []
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for i, m in enumerate(messages):
        parts.append(f"<|im_start|>{m['role']}\n{_text(m, i)}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def render_gemma(messages, add_generation_prompt: bool = True, bos_token: str = "<bos>") -> str:
    """Gemma 3: system text folded into the first user turn; 'assistant' is 'model'."""
    messages = _check_messages(messages)
    prefix = ""
    if messages and messages[0]["role"] == "system":
        prefix = _text(messages[0], 0) + "\n\n"
        messages = messages[1:]
    parts = [bos_token or ""]
    for i, m in enumerate(messages):
        if (m["role"] == "user") != (i % 2 == 0):
            raise ValueError("Gemma chat: roles must alternate user/assistant/user/..., "
                             f"got {m['role']!r} at turn {i}")
        role = "model" if m["role"] == "assistant" else m["role"]
        parts.append(f"<start_of_turn>{role}\n{prefix if i == 0 else ''}"
                     f"{_text(m, i).strip()}<end_of_turn>\n")
    if add_generation_prompt:
        parts.append("<start_of_turn>model\n")
    return "".join(parts)


def render_llama3(messages, add_generation_prompt: bool = True,
                  bos_token: str = "<|begin_of_text|>") -> str:
    """Llama 3 (Instruct) header format; contents are stripped as in the official template."""
    messages = _check_messages(messages)
    parts = [bos_token or ""] if messages else []
    for i, m in enumerate(messages):
        parts.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
                     f"{_text(m, i).strip()}<|eot_id|>")
    if add_generation_prompt:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


_BUILTIN = {"chatml": render_chatml, "gemma": render_gemma, "llama3": render_llama3}


class ChatTemplateError(ValueError):
    """Raised by a template's raise_exception(...) or on a jinja syntax error."""


def _raise(msg):
    raise ChatTemplateError(msg)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@functools.lru_cache(maxsize=32)
def _compile(source: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template syntax error at line {e.lineno}: {e.message}") from None


def render_jinja(source: str, messages, add_generation_prompt: bool = True,
                 bos_token: str | None = None, eos_token: str | None = None, **variables) -> str:
    """Render a (HF-style) jinja chat template."""
    messages = _check_messages(messages)
    return _compile(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=bos_token or "", eos_token=eos_token or "",
                                   **variables)


def _looks_like_jinja(s: str) -> bool:
    return "{{" in s or "{%" in s


def render_chat(messages: Sequence[Mapping[str, Any]], family_or_template,
                add_generation_prompt: bool = True, *, default_system: str | None = None,
                bos_token: str | None = None, eos_token: str | None = None,
                **variables) -> str:
    """Render a conversation as a prompt string (see module docstring for dispatch).

    default_system only applies to the built-in chatml format; a model's own template
    decides its default system prompt itself.
    """
    x = family_or_template
    if hasattr(x, "chat_template") and hasattr(x, "family"):  # a Tokenizer
        bos_token = bos_token if bos_token is not None else x.bos_token
        eos_token = eos_token if eos_token is not None else x.eos_token
        if x.chat_template:
            return render_jinja(x.chat_template, messages, add_generation_prompt,
                                bos_token=bos_token, eos_token=eos_token, **variables)
        if x.family is None:
            raise ValueError(f"tokenizer {x!r} has no chat template and no recognised chat family")
        x = x.family
    if not isinstance(x, str):
        raise TypeError(f"family_or_template must be a Tokenizer, a family name or a jinja "
                        f"string, got {type(x).__name__}")
    if x in _BUILTIN:
        if x == "chatml":
            return render_chatml(messages, add_generation_prompt, default_system)
        bos = bos_token if bos_token is not None else FAMILY_BOS[x]
        return _BUILTIN[x](messages, add_generation_prompt, bos)
    if _looks_like_jinja(x):
        return render_jinja(x, messages, add_generation_prompt, bos_token=bos_token,
                            eos_token=eos_token, **variables)
    raise ValueError(f"unknown chat family {x!r} (known: {', '.join(_BUILTIN)}; "
                     "or pass a jinja template string)")
