"""How often a LoCoMo observation is close to one its speaker said before (MiniLM cosine of the
nearest earlier observation), in the conversations of the first 300 test questions.

    python experiments/locomo-headroom-2026-12-07/near_duplicates.py
"""
import numpy as np

from memr1_jax.agents.memory_manager import conversation_fact_batches
from memr1_jax.eval.run import load_split, question_records
from memr1_jax.evaluate import system_configs
from memr1_jax.memory.encoder import make_encoder

cfg = system_configs(["--system", "memory-r1@add-all", "--data", "../shared/data/locomo10", "--limit", "300"])[0][0]
convs = load_split(cfg).test
need = {r.conversation_id for r in question_records(convs)[:300]}
enc = make_encoder("minilm")
for c in convs:
    if c.id not in need:
        continue
    embs, best = {0: [], 1: []}, []
    for _, spk, _, facts in conversation_fact_batches(c, 8):
        E = enc(list(facts))
        for e in E / np.linalg.norm(E, axis=1, keepdims=True):
            if embs[spk]:
                best.append(float(np.max(np.stack(embs[spk]) @ e)))
            embs[spk].append(e)
    b = np.array(best)
    print(c.id, len(b) + 2, "observations; nearest earlier one at cosine >=",
          ", ".join(f"{t}: {int((b >= t).sum())}" for t in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)))
