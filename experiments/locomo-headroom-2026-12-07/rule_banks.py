"""How much can managing LoCoMo's observations gain over adding them all, for this reader?

Builds banks of the first 300 LoCoMo test questions' conversations by a rule instead of a model
and answers with the shipped Answer Agent in its settings (``memory-r1@add-all``'s run, its
add-all bank folder filled with the rule's banks first):
- ``dedup TAU``: a fact whose cosine (MiniLM) to one of the speaker's memories is >= TAU is not
  stored (NONE);
- ``replace TAU``: it replaces that memory (UPDATE with the newer fact and its session date).

    python experiments/locomo-headroom-2026-12-07/rule_banks.py dedup 0.85 ~/runs/diag/dedup-0.85
    python -m memr1_jax.compare ~/runs/diag/dedup-0.85/run ~/runs/eval/locomo-add-all
"""
import pathlib
import sys

import numpy as np

from memr1_jax.agents.memory_manager import conversation_fact_batches
from memr1_jax.eval.run import bank_dir, bank_file, evaluate, load_split, question_records
from memr1_jax.evaluate import system_configs
from memr1_jax.memory import Event, MemoryOp, apply, empty_bank, save_bank
from memr1_jax.memory.encoder import make_encoder

mode, tau, out = sys.argv[1], float(sys.argv[2]), pathlib.Path(sys.argv[3])
cfg = system_configs(["--system", "memory-r1@add-all", "--data", "../shared/data/locomo10", "--limit", "300",
                      "--run-dir", str(out / "run")])[0][0]
convs = load_split(cfg).test
need = {r.conversation_id for r in question_records(convs)[:300]}
enc = make_encoder(cfg.model.encoder)
folder = bank_dir(cfg, out / "run")
folder.mkdir(parents=True, exist_ok=True)
counts = {"ADD": 0, "NONE": 0, "UPDATE": 0}
for c in convs:
    if c.id not in need:
        continue
    bank = empty_bank(int(enc(["x"]).shape[-1]))
    embs, ids = {0: [], 1: []}, {0: [], 1: []}
    for sess, spk, date, facts in conversation_fact_batches(c, 8):
        E = enc(list(facts))
        E = E / np.linalg.norm(E, axis=1, keepdims=True)
        for f, e in zip(facts, E):
            sims = np.stack(embs[spk]) @ e if embs[spk] else np.zeros(0)
            j = int(np.argmax(sims)) if sims.size else -1
            if j >= 0 and sims[j] >= tau and mode == "dedup":
                counts["NONE"] += 1
                continue
            if j >= 0 and sims[j] >= tau and mode == "replace":
                op = MemoryOp(Event.UPDATE, target_id=ids[spk][j], text=f, timestamp=date, session=sess)
                bank, _ = apply(bank, [op], embed_fn=enc, speaker=spk, session=sess, timestamp=date)
                embs[spk][j] = e
                counts["UPDATE"] += 1
                continue
            bank, rep = apply(bank, [MemoryOp(Event.ADD, text=f)], embed_fn=enc, speaker=spk, session=sess,
                              timestamp=date)
            embs[spk].append(e)
            ids[spk].append(rep.added_ids[0])
            counts["ADD"] += 1
    save_bank(bank, bank_file(folder, c))
print(mode, tau, counts, flush=True)
evaluate(cfg, progress=False)
