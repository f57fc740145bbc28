# Per-fact confusion of a line-format manager against the generator's gold, over every step of the
# test conversations as build_banks runs them (the manager's own banks). Usage: confusion.py ADAPTER FLOOR MAXFACTS [data]
import collections, sys
from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks, shown_texts
from memr1_jax.data import load_conversations
from memr1_jax.data.changing import gold_notes, gold_targets, Note
from memr1_jax.memory import Retriever
from memr1_jax.memory.encoder import make_encoder
from memr1_jax.memory.line_ops import line_decisions
path, floor, nf = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
data = sys.argv[4] if len(sys.argv) > 4 else "changing-people"
split = sys.argv[5] if len(sys.argv) > 5 else "test"
convs = [c for c in load_conversations(data) if f"-{split}-" in c.id]
notes = {c.id: gold_notes(c) for c in convs}
enc = make_encoder("minilm")
llm = ChatLLM.from_registry(path, batch_size=32)
cfg = ManagerConfig(kind="llm", output="lines", constrained=True, max_facts_per_step=nf, retrieve_k=5,
                    max_new_tokens=48, min_score=None if floor < -1 else floor)
conf, examples = collections.Counter(), collections.defaultdict(list)
banks_before = {}
def on_step(cid, st, out, rep, probs):
    pass
# we need the bank before each step: wrap make_step via on_step is after; so recompute shown texts from state.prompt lines
import re
def shown_from_prompt(p):
    old = p.rsplit("Old memories:", 1)[1].split("New facts:", 1)[0]
    return [l.split(": ", 1)[1] for l in old.strip().splitlines() if re.match(r"^\d+: ", l)]
def rec(cid, st, out, rep, probs):
    shown = shown_from_prompt(st.prompt) if st.id_map else []
    gold = gold_targets(st.facts, shown, notes[cid])
    dec = line_decisions(out, len(st.facts)) if out is not None else [("ADD", None)] * len(st.facts)
    for f, (ev, sid), (g, ids) in zip(st.facts, dec, gold):
        n = notes[cid].get(f, Note("", "note"))
        if ev == g and (not ids or sid in ids):
            k = ("ok", g)
        elif ev == "UPDATE" and g == "UPDATE":
            k = ("UPDATE wrong memory", g)
        else:
            k = (ev, g)
        conf[k] += 1
        if k[0] != "ok" and len(examples[k]) < 4:
            examples[k].append((f, shown[sid] if sid is not None and sid < len(shown) else None, n.kind))
build_banks(convs, enc, cfg, llm=llm, on_step=rec)
tot = sum(conf.values())
print(f"{path} floor {floor} facts/step {nf}: {tot} facts, agreement {sum(v for k, v in conf.items() if k[0]=='ok')/tot:.3f}")
for k, v in sorted(conf.items(), key=lambda kv: -kv[1]):
    print(f"  decided {k[0]:22} gold {k[1]:7} {v}")
for k, ex in examples.items():
    print(k)
    for e in ex: print("    ", e)
