# How well does a cosine floor separate a fact's gold target memories (same person's slot) from the
# other memories top-5 retrieval shows? People variant, train split, add-all snapshots.
import numpy as np, collections
from memr1_jax.data import load_conversations
from memr1_jax.data.changing import gold_notes, Note
from memr1_jax.memory.encoder import make_encoder
from memr1_jax.agents.memory_manager import ManagerConfig
from memr1_jax.agents.rollout import manager_step_specs
from memr1_jax.memory import Retriever
import sys
src = sys.argv[1] if len(sys.argv) > 1 else "changing-people"
convs = [c for c in load_conversations(src) if "-train-" in c.id][:24]
enc = make_encoder("minilm"); ret = Retriever()
cfg = ManagerConfig(output="lines", max_facts_per_step=4, retrieve_k=5)
tgt, other, namesake = [], [], []
kinds = collections.Counter()
for c in convs:
    notes = gold_notes(c)
    for sp in manager_step_specs(c, enc, ret, cfg):
        b = sp.bank; a = b.arrays
        live = np.where(np.asarray(a.valid) & (np.asarray(a.speaker) == sp.state.speaker))[0]
        if not len(live): continue
        E = np.asarray(a.embeddings)[live]
        F = np.asarray(enc(list(sp.state.facts)))
        S = F @ E.T
        for fi, f in enumerate(sp.state.facts):
            n = notes.get(f, Note("", "note"))
            top = np.argsort(-S[fi])[:5]
            for j in top:
                m = b.text(int(live[j])); mn = notes.get(m, Note("", ""))
                same = n.slot and mn.slot == n.slot and mn.who == n.who
                if same and n.kind in ("change", "correct", "end", "retract"):
                    tgt.append(S[fi, j]); kinds[n.kind] += 1
                else:
                    other.append(S[fi, j])
                    if n.slot and mn.slot and mn.slot != n.slot and " " in n.slot and " " in mn.slot:
                        namesake.append(S[fi, j])
            # targets not in top-5
            for j in range(len(live)):
                if j in top: continue
                m = b.text(int(live[j])); mn = notes.get(m, Note("", ""))
                if n.slot and mn.slot == n.slot and mn.who == n.who and n.kind in ("change","correct","end","retract"):
                    tgt.append(-9)  # missed by top-5
tgt, other = np.array(tgt), np.array(other)
print("targets", len(tgt), dict(kinds), "missed by top5", int((tgt == -9).sum()), "others", len(other), "same-kind-other-slot", len(namesake))
for fl in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
    print(f"floor {fl}: targets kept {np.mean(tgt >= fl):.3f}  others shown {np.mean(other >= fl):.3f}  same-kind others {np.mean(np.array(namesake) >= fl) if namesake else float('nan'):.3f}")
print("target score quantiles", np.quantile(tgt[tgt > -9], [0.05, 0.25, 0.5]))
