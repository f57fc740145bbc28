"""Single-fact probes of a line-format manager behind the relatedness floor: the memories shown are
those at cosine >= FLOOR to the fact (MiniLM), as ManagerConfig.min_score / the service show them.

    python experiments/manager-floor-2026-12-07/probe.py 0.5 ADAPTER [ADAPTER ...]
"""
import sys

import numpy as np

from memr1_jax.agents.memory_manager import render_step, step_constraint
from memr1_jax.service.memory import Memory

CASES = [  # (memories, fact, what a perfect manager does)
    (["Goran lives in Austin.", "Goran painted Goran's kitchen pale green."], "Goran moved to Leeds last month.", "UPDATE 0"),
    (["Ivan works at Delta Airlines.", "Ivan painted Ivan's kitchen pale green."],
     "Ivan left Delta Airlines and now Ivan works at Cedar Hospital.", "UPDATE 0"),
    (["Lena drives a Toyota Corolla.", "Lena ran Lena's first marathon this month."],
     "Lena sold Lena's Toyota Corolla and bought a Ford Focus.", "UPDATE 0"),
    (["Chen's door code is 2494.", "Chen volunteered at the food bank on Saturday."],
     "Chen asked to forget Chen's door code.", "DELETE 0"),
    (["Lena's cousin Jo lives in Oslo."], "Lena's friend Joe lives in York.", "ADD"),
    (["Jun's cousin Dan lives in Lima."], "Jun's friend Danny lives in Denver.", "ADD"),
    (["Jun's cousin Dan lives in Lima."], "Jun's cousin Dan moved to Denver.", "UPDATE 0"),
    (["Goran lives in Austin."], "Goran painted Goran's kitchen pale green.", "ADD"),
    (["Zoe lives in Seoul.", "Zoe works at Metro Radio."], "Zoe moved to Rome in May 2023.", "UPDATE 0"),
    (["Zoe lives in Seoul.", "Zoe works at Metro Radio."], "Zoe started working at Bluefin Bank.", "UPDATE 1"),
]
floor = float(sys.argv[1])
for path in sys.argv[2:]:
    m = Memory({"manager_model": path, "store": f"/tmp/probe-{abs(hash(path))}.db"})
    llm, right = m.manager_llm, 0
    print("==", path)
    for memories, fact, want in CASES:
        scores = m.embed([fact]) @ m.embed(memories).T
        shown = [t for t, s in zip(memories, scores[0]) if s >= floor]
        if not shown:
            out = "1: ADD (no memory shown)"
        else:
            prompt, _ = render_step([{"id": i, "text": t} for i, t in enumerate(shown)], [fact], "lines")
            out = llm.generate([prompt], max_new_tokens=16,
                               constraints=[step_constraint(llm, len(shown), 1, "lines")])[0].text
        # the shown ids are renumbered: compare by the memory text targeted
        got = out.split(": ", 1)[1].split(" (")[0]
        op, _, j = got.partition(" ")
        tgt = shown[int(j)] if j.isdigit() and int(j) < len(shown) else None
        wop, _, wj = want.partition(" ")
        ok = op == wop and (not wj or tgt == memories[int(wj)])
        right += ok
        print(f"  {'ok ' if ok else 'BAD'} {fact[:58]!r:62} shown {len(shown)} -> {got!r:14} want {want}")
    print(f"  {right}/{len(CASES)} as a perfect manager")
