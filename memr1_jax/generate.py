"""Command-line text generation with the jitted sampler.

    python -m memr1_jax.generate --model smollm2-135m-instruct --prompt "What is the capital of France?"

The prompt is wrapped in the model's chat template (``--raw`` sends it as is),
decoded greedily unless ``--temperature`` > 0, and the completion is printed
without special tokens. Timing goes to stderr with ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

from memr1_jax.sampling.sampler import SamplingConfig, generate


def build_prompt_ids(tokenizer, prompt: str, *, raw: bool = False, system: str | None = None,
                     family: str | None = None) -> list[int]:
    """Token ids of `prompt`: raw text (with BOS when the tokenizer expects one) or a
    one-turn chat rendered with the model's own template / chat family."""
    from memr1_jax.text import render_chat

    if raw:
        return tokenizer.encode(prompt, add_bos=bool(tokenizer.info.add_bos))
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None) or getattr(tokenizer, "family", None):
        text = render_chat(messages, tokenizer)
    elif family:
        text = render_chat(messages, family)
    else:
        raise SystemExit("this model has no chat template (a base model?): use --raw")
    # Rendered templates carry the BOS text themselves where the format wants it.
    return tokenizer.encode(text, add_bos=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memr1_jax.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="registry preset, a .gguf file or an HF checkpoint folder")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--system", default=None, help="system message (chat mode only)")
    ap.add_argument("--raw", action="store_true", help="do not apply the chat template")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--cache-dtype", default=None, help="KV cache dtype, e.g. bfloat16")
    ap.add_argument("--verbose", action="store_true", help="print load/generation timing to stderr")
    args = ap.parse_args(argv)
    if args.raw and args.system:
        ap.error("--system needs chat mode (drop --raw)")
    try:
        sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except ValueError as err:
        ap.error(str(err))

    from memr1_jax import compile_cache
    from memr1_jax.models.registry import load_model

    try:
        compile_cache.enable()
    except ValueError as err:
        ap.error(str(err))
    t0 = time.perf_counter()
    model = load_model(args.model)
    t_load = time.perf_counter() - t0
    tok = model.tokenizer
    ids = build_prompt_ids(tok, args.prompt, raw=args.raw, system=args.system, family=model.family)
    stop_ids = sorted(set(model.stop_ids) | ({tok.eos_id} if tok.eos_id is not None else set()))
    pad_id = tok.pad_id if tok.pad_id is not None else 0

    t0 = time.perf_counter()
    out = generate(model.cfg, model.params, [ids], sampling, rng=jax.random.PRNGKey(args.seed),
                   stop_ids=stop_ids, max_new_tokens=args.max_new_tokens,
                   num_samples=args.num_samples, pad_id=pad_id, cache_dtype=args.cache_dtype)
    t_gen = time.perf_counter() - t0
    for i, comp in enumerate(out.completions()):
        if args.num_samples > 1:
            print(f"--- sample {i}")
        print(tok.decode(comp, skip_special=True))
    if args.verbose:
        n = int(out.lengths.sum())
        print(f"[{model.name}] load {t_load:.1f}s, prompt {len(ids)} tokens, {n} new tokens in "
              f"{t_gen:.1f}s (compile included)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
