"""Greedy decoding of Memory Manager steps: plain, prompt-lookup speculative, and transformers.

The work is bank building's: chat-templated manager prompts rendered from the embedded dataset's
first test conversation (its facts in batches of --facts, the previous --shown facts as the
related memories), in the line format and in JSON, decoded greedily up to --new-tokens tokens
with the model's stop tokens, one prompt at a time (bank building is sequential within a
conversation; transformers' prompt lookup takes batch 1 only). SmolLM2-135M-Instruct from the
same GGUF file, float32, in this one process:

* memr1-jax, plain greedy (``generate``) and with prompt-lookup drafts of --draft tokens
  (``generate(speculative=k)``): tokens checked identical, drafts accepted reported;
* transformers ``generate``, plain greedy and with ``prompt_lookup_num_tokens=k`` (its prompt
  lookup: the same idea, n-grams up to 3), with torch on the same thread count.

Each engine decodes every prompt once untimed (compilation, warm-up), then --repeats timed
passes over all prompts, best kept. Tokens per second count each engine's own generated tokens.
Last line: ``speculative greedy speedup vs transformers prompt lookup: X`` (tokens/s ratio).

    python benchmarks/speculative.py [--prompts 8] [--draft 8] [--new-tokens 96]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from memr1_jax.agents.llm import ChatLLM  # noqa: E402
from memr1_jax.agents.memory_manager import conversation_fact_batches, render_step  # noqa: E402
from memr1_jax.data.embedded import make_embedded_dataset  # noqa: E402
from memr1_jax.models.registry import load_model  # noqa: E402
from memr1_jax.sampling.sampler import generate  # noqa: E402


def manager_prompts(llm: ChatLLM, output: str, count: int, facts: int, shown: int) -> list[list[int]]:
    conv = make_embedded_dataset()[-1]
    seen: list[str] = []
    prompts = []
    for _, _, _, batch in conversation_fact_batches(conv, facts):
        related = [{"id": 100 + i, "text": t} for i, t in enumerate(seen[-shown:])]
        prompt, _ = render_step(related, batch, output)
        prompts.append(llm.chat_ids(prompt))
        seen += batch
        if len(prompts) == count:
            break
    return prompts


def best_of(run, repeats: int):
    """One untimed call (compilation, warm-up), then the best wall time of ``repeats`` calls and
    the last call's result."""
    run()
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_jax(model, prompts, new_tokens: int, draft: int, repeats: int):
    stop = sorted(model.tokenizer.stop_ids)
    pad = model.tokenizer.pad_id or 0

    best, outs = best_of(lambda: [generate(model.cfg, model.params, [p], stop_ids=stop, max_new_tokens=new_tokens,
                                           pad_id=pad, speculative=draft) for p in prompts], repeats)
    seqs = [o.tokens[0, :o.lengths[0]].tolist() for o in outs]
    return dict(seconds=best, seqs=seqs, tokens=sum(map(len, seqs)),
                passes=sum(o.passes for o in outs),
                drafted=sum(o.drafted for o in outs), accepted=sum(o.accepted for o in outs))


def run_torch(hf_model, prompts, new_tokens: int, stop: list[int], draft: int, repeats: int):
    import torch
    kw = dict(do_sample=False, max_new_tokens=new_tokens, eos_token_id=stop, pad_token_id=stop[0])
    if draft:
        kw["prompt_lookup_num_tokens"] = draft

    def once():
        outs = []
        with torch.inference_mode():
            for p in prompts:
                ids = torch.tensor([p])
                seq = hf_model.generate(ids, attention_mask=torch.ones_like(ids), **kw)[0, len(p):].tolist()
                cut = next((i + 1 for i, t in enumerate(seq) if t in stop), len(seq))
                outs.append(seq[:cut])
        return outs

    best, seqs = best_of(once, repeats)
    return dict(seconds=best, seqs=seqs, tokens=sum(map(len, seqs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8, help="manager steps per output format")
    ap.add_argument("--facts", type=int, default=4)
    ap.add_argument("--shown", type=int, default=5)
    ap.add_argument("--draft", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()

    model = load_model(args.model)
    llm = ChatLLM(model.cfg, model.params, model.tokenizer)
    stop = sorted(model.tokenizer.stop_ids)
    print(f"model {model.name}, jax {jax.__version__}; {args.prompts} manager steps per format, greedy, "
          f"up to {args.new_tokens} tokens, batch 1, drafts of {args.draft}")
    hf_model = None
    if not args.skip_torch:
        import torch
        import transformers
        torch.set_num_threads(args.threads)
        src = os.path.abspath(model.source)
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(src), gguf_file=os.path.basename(src), dtype=torch.float32).eval()
        print(f"transformers {transformers.__version__} / torch {torch.__version__}, {args.threads} threads")

    rows, speedups = [], []
    for output in ("lines", "json"):
        prompts = manager_prompts(llm, output, args.prompts, args.facts, args.shown)
        plain = run_jax(model, prompts, args.new_tokens, 0, args.repeats)
        spec = run_jax(model, prompts, args.new_tokens, args.draft, args.repeats)
        if spec["seqs"] != plain["seqs"]:
            raise SystemExit(f"{output}: speculative tokens differ from plain greedy")
        rows.append((output, "memr1-jax greedy", plain, None))
        rows.append((output, f"memr1-jax lookup k={args.draft}", spec, spec["accepted"] / max(spec["drafted"], 1)))
        if hf_model is not None:
            hp = run_torch(hf_model, prompts, args.new_tokens, stop, 0, args.repeats)
            hs = run_torch(hf_model, prompts, args.new_tokens, stop, args.draft, args.repeats)
            agree = np.mean([a == b for a, b in zip(hp["seqs"], plain["seqs"])])
            rows.append((output, "transformers greedy", hp, None))
            rows.append((output, f"transformers lookup k={args.draft}", hs, None))
            speedups.append((output, (spec["tokens"] / spec["seconds"]) / (hs["tokens"] / hs["seconds"]), agree))
        print(f"  done {output}", flush=True)

    print()
    hdr = f"{'format':<6} | {'engine':<26} | {'tokens':>6} | {'seconds':>7} | {'tok/s':>6} | {'tokens/pass':>11} | {'accepted':>8}"
    print(hdr)
    print("-" * len(hdr))
    for output, name, r, acc in rows:
        per_pass = f"{r['tokens'] / r['passes']:11.2f}" if "passes" in r else f"{'-':>11}"
        acc_s = f"{100 * acc:7.0f}%" if acc is not None else f"{'-':>8}"
        print(f"{output:<6} | {name:<26} | {r['tokens']:6d} | {r['seconds']:7.2f} | "
              f"{r['tokens'] / r['seconds']:6.1f} | {per_pass} | {acc_s}")
    print(f"peak memory (maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    for output, x, agree in speedups:
        print(f"{output}: completions identical to transformers greedy: {100 * agree:.0f}%; "
              f"speculative greedy speedup vs transformers prompt lookup: {x:.2f}")
    if speedups:
        total = [r for r in rows if r[1].startswith("memr1-jax lookup")], [r for r in rows if r[1].startswith("transformers lookup")]
        mine = sum(r[2]["tokens"] for r in total[0]) / sum(r[2]["seconds"] for r in total[0])
        peer = sum(r[2]["tokens"] for r in total[1]) / sum(r[2]["seconds"] for r in total[1])
        print(f"speculative greedy speedup vs transformers prompt lookup: {mine / peer:.2f}")


if __name__ == "__main__":
    main()
