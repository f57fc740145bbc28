"""Does a month in the fact decide the manager's operation? One fact beside one memory of the same
slot, said with and without a date, for three speaker names (the service writes "The user" for an id
that is no name); the step is rendered and decoded as build_banks and the service do.

    python experiments/manager-phrasing-2026-12-07/date_cue_probe.py ADAPTER
"""
import sys

from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.memory_manager import render_step, step_constraint
llm = ChatLLM.from_registry(sys.argv[1], batch_size=32)
cases = []
for n in ("Alice", "Maya", "The user"):
    for mem in (f"{n} lives in Porto.", f"{n} moved to Porto last week.", f"{n} moved to Porto in May 2023."):
        for fact in (f"{n} moved to Lisbon.", f"{n} moved to Lisbon last month.", f"{n} moved to Lisbon in June 2023.",
                     f"{n} moved from Porto to Lisbon in June 2023.", f"{n} lives in Lisbon now."):
            cases.append(([mem], fact))
    cases.append(([f"{n} drives a Honda Civic."], f"{n} sold {n}'s Honda Civic and bought a Kia Rio."))
    cases.append(([f"{n} drives a red Honda."], f"{n} sold a red Honda and bought a blue Subaru in May 2023."))
    cases.append(([f"{n}'s door code is 4471."], f"{n} asked to forget {n}'s door code."))
prompts = [render_step([{"id": i, "text": t} for i, t in enumerate(m)], [f], "lines")[0] for m, f in cases]
outs = llm.generate(prompts, max_new_tokens=16, constraints=[step_constraint(llm, len(m), 1, "lines") for m, _ in cases])
for (m, f), o in zip(cases, outs):
    print(f"{o.text.strip()[:12]:12} | {m[0]:40} | {f}")
