import sys
from memr1_jax.service.memory import Memory
from memr1_jax.agents.memory_manager import render_step, step_constraint
cases = [(["Goran lives in Austin.", "Goran painted Goran's kitchen pale green."], ["Goran moved to Leeds last month."]),
         (["Ivan works at Delta Airlines.", "Ivan painted Ivan's kitchen pale green."], ["Ivan left Delta Airlines and now Ivan works at Cedar Hospital."]),
         (["Chen's door code is 2494.", "Chen volunteered at the food bank on Saturday."], ["Chen asked to forget Chen's door code."]),
         (["Lena's cousin Jo lives in Oslo."], ["Lena's friend Joe lives in York."]),
         (["Goran lives in Austin."], ["Goran painted Goran's kitchen pale green."]),
         (["Zoe lives in Seoul.", "Zoe works at Metro Radio."], ["Zoe moved from Seoul to Rome in May 2023."]),
         (["Zoe lives in Seoul.", "Zoe works at Metro Radio."], ["Zoe moved to Rome in May 2023."])]
for path in sys.argv[1:]:
    m = Memory({"manager_model": path, "store": f"/tmp/probe-{abs(hash(path))}.db"})
    llm = m.manager_llm
    print("==", path, m.config.manager_max_new_tokens, m.config.constrained)
    for shown, facts in cases:
        prompt, _ = render_step([{"id": i, "text": t} for i, t in enumerate(shown)], facts, "lines")
        out = llm.generate([prompt], max_new_tokens=32, constraints=[step_constraint(llm, len(shown), len(facts), "lines")])[0].text
        print(f"  {facts[0][:60]!r:64} -> {out!r}")
print(prompt)
