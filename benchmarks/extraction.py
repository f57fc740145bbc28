"""Fact extraction of the memory service on LoCoMo: what ``add`` keeps of each turn, against the
observations LoCoMo's annotators wrote for that session and speaker.

Each turn of a speaker is one ``add`` (as an application sends each user message). Methods:
- ``model``: the service's default (``agents.message_facts.extract_facts``): the backbone's
  facts under the extraction regex, kept only where grounded in the turn, else the turn's
  sentences;
- ``sentences``: the turn's sentences rewritten to the speaker (no model);
- ``mem0-prompt`` (the peer, what the service did before): the Mem0-style extraction prompt
  (``agents.prompts.FACT_EXTRACTION_PROMPT``), unconstrained, its JSON / bulleted list parsed.
Per session and speaker, an observation counts as found when some fact has Mem0's token F1 >= 0.4
with it (recall); a fact counts as supported when it has F1 >= 0.4 with some observation
(precision). Prints a table (facts per turn, turns left with no fact, recall, precision, wall time),
peak RSS and a last line ``extraction recall on LoCoMo: model R vs mem0-prompt P``.

Usage: python benchmarks/extraction.py [--data ../shared/data/locomo10] [--sessions 12] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

MATCH = 0.4


def turns_by_session(convs, limit: int):
    """[(conversation id, session index, speaker, [turn texts], [observations])]."""
    out = []
    for conv in convs:
        for sess in conv.sessions:
            for spk in (conv.speaker_a, conv.speaker_b):
                texts = [t.text for t in sess.turns if t.speaker == spk and t.text.strip()]
                obs = [f for f, _ in sess.observations.get(spk, ())]
                if texts and obs:
                    out.append((conv.id, sess.index, spk, texts, obs))
            if len({(c, s) for c, s, *_ in out}) >= limit:
                return out
    return out


def score(facts: list[str], obs: list[str]) -> tuple[int, int]:
    from memr1_jax.eval.metrics import token_f1
    found = sum(any(token_f1(f, o) >= MATCH for f in facts) for o in obs)
    supported = sum(any(token_f1(f, o) >= MATCH for o in obs) for f in facts)
    return found, supported


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/locomo10", help="LoCoMo (default; the embedded set without it)")
    p.add_argument("--sessions", type=int, default=12)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    from memr1_jax.agents.fact_extraction import parse_facts
    from memr1_jax.agents.llm import ChatLLM
    from memr1_jax.agents.message_facts import extract_facts, sentence_facts
    from memr1_jax.agents.prompts import FACT_EXTRACTION_PROMPT
    from memr1_jax.data import load_conversations
    source = args.data if pathlib.Path(args.data).exists() else "embedded"
    groups = turns_by_session(load_conversations(source), args.sessions)
    turns = [(text, spk) for *_, spk, texts, _ in groups for text in texts]
    print(f"{source}: {len({(c, s) for c, s, *_ in groups})} sessions, {len(groups)} session-speakers, "
          f"{len(turns)} turns, {sum(len(g[-1]) for g in groups)} observations; model {args.model}")
    llm = ChatLLM.from_registry(args.model, batch_size=args.batch)

    def mem0_prompt(chunk):
        prompts = [FACT_EXTRACTION_PROMPT.format(speaker=spk, date="", conversation=f"{spk}: {text}")
                   for text, spk in chunk]
        return [parse_facts(g.text) for g in llm.generate(prompts, max_new_tokens=96)]

    methods = {"model": lambda chunk: extract_facts(llm, chunk),
               "sentences": lambda chunk: [sentence_facts(t, s) for t, s in chunk],
               "mem0-prompt": mem0_prompt}
    rows, recall = [], {}
    for name, fn in methods.items():
        t0 = time.perf_counter()
        facts = []
        for i in range(0, len(turns), 32):
            facts += fn(turns[i:i + 32])
        wall = time.perf_counter() - t0
        k = found = supported = n_obs = n_facts = 0
        for *_, texts, obs in groups:
            mine = [f for fs in facts[k:k + len(texts)] for f in fs]
            k += len(texts)
            a, b = score(mine, obs)
            found, supported, n_obs, n_facts = found + a, supported + b, n_obs + len(obs), n_facts + len(mine)
        empty = sum(not fs for fs in facts) / len(facts)
        recall[name] = found / n_obs
        rows.append((name, n_facts / len(turns), empty, found / n_obs, supported / max(n_facts, 1), wall))
    print(f"\n| method | facts per turn | turns with no fact | recall (F1 >= {MATCH}) | precision | wall s |")
    print("|---|---|---|---|---|---|")
    for name, per, empty, rec, prec, wall in rows:
        print(f"| {name} | {per:.2f} | {100 * empty:.1f}% | {100 * rec:.1f}% | {100 * prec:.1f}% | {wall:.1f} |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"extraction recall on LoCoMo: model {100 * recall['model']:.1f}% vs mem0-prompt "
          f"{100 * recall['mem0-prompt']:.1f}% (sentences {100 * recall['sentences']:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
