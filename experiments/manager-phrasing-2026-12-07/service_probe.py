"""The service end to end (memr1_jax.Memory, sentence facts, the manager behind its floor): a first
message, then a change, a forget request or a near-namesake, for a user id that reads as a name
("alicea" -> "Alicea") and one that does not ("The user"); prints each add's events and the memories left.

    python experiments/manager-phrasing-2026-12-07/service_probe.py            # the shipped defaults
    python experiments/manager-phrasing-2026-12-07/service_probe.py ADAPTER    # another manager, same settings
"""
import os, sys, tempfile
from memr1_jax import Memory
adapter = sys.argv[1] if len(sys.argv) > 1 else None
cfg = {"store": os.path.join(tempfile.mkdtemp(), "p.db")}
if adapter:
    cfg.update(manager_model=adapter, manager_min_score=0.65, manager_max_facts=1)
m = Memory(cfg)
cases = [("I live in Porto.", "Actually I moved to Lisbon."),
         ("I moved to Porto last week.", "Actually I moved to Lisbon."),
         ("I moved to Porto last week and I work as a glassblower.", "Actually I moved to Lisbon."),
         ("I moved to Porto last week.", "I moved to Lisbon in May."),
         ("I live in Porto.", "I moved to Lisbon last month."),
         ("I work at Acme Robotics.", "I left Acme Robotics and now I work at Bluefin Bank."),
         ("I work as a glassblower.", "I work as a baker now."),
         ("I drive a Honda Civic.", "I sold my Honda Civic and bought a Kia Rio."),
         ("My door code is 4471.", "Please forget my door code."),
         ("My cousin Jo lives in Oslo.", "My friend Joe lives in York."),
         ("I live in Porto.", "I adopted a cat named Miso.")]
good = 0
for i, (a, b) in enumerate(cases):
    for u in (f"alice{chr(97+i)}", f"5f3a-{i}"):
        m.add(a, user_id=u)
        out = m.add(b, user_id=u)
        mem = [r["memory"] for r in m.get_all(user_id=u)["results"]]
        print(u[:6], [(r["event"], r["memory"]) for r in out["results"]], "->", mem)
