# Gold operations of the manager steps with and without the relatedness floor (people variant):
# the share an ADD-everything manager gets right, train steps and validation episodes.
import collections, sys
from memr1_jax.data import load_conversations
from memr1_jax.data.changing import gold_notes, gold_targets
from memr1_jax.memory.encoder import make_encoder
from memr1_jax.agents.memory_manager import ManagerConfig, decided_by_rule, shown_texts
from memr1_jax.agents.rollout import manager_step_specs, manager_episode_specs
from memr1_jax.data import question_records
from memr1_jax.memory import Retriever
convs = load_conversations("changing-people")
enc, ret = make_encoder("minilm"), Retriever()
for floor in (None, 0.5):
    cfg = ManagerConfig(output="lines", max_facts_per_step=int(sys.argv[1]), retrieve_k=5, min_score=floor)
    for split in ("train", "val"):
        cs = [c for c in convs if f"-{split}-" in c.id]
        if split == "train":
            specs = [s for c in cs for s in manager_step_specs(c, enc, ret, cfg)]
        else:
            recs = question_records(cs)[:64]
            specs = [s for c in cs for s in manager_episode_specs(c, [r.qa for r in recs if r.conversation_id == c.id], enc, ret, cfg)]
        specs = [s for s in specs if not decided_by_rule(s.state, cfg)]
        cnt = collections.Counter()
        for s in specs:
            for ev, _ in gold_targets(s.state.facts, shown_texts(s.bank, s.state), gold_notes(s.conv)):
                cnt[ev] += 1
        tot = sum(cnt.values())
        print(floor, split, len(specs), "steps", dict(cnt), f"ADD share {cnt['ADD']/tot:.3f}")
