"""The trap suite (``memr1_jax.eval.traps``) against memory services on one backbone.

Systems (``--systems``, comma-separated):
- ``trained``: ``memr1_jax.Memory()`` as shipped (the trained Memory Manager and Answer Agent);
- ``add-all``: the same, every extracted fact added (no manager call);
- ``untrained``: the same settings with the untrained backbone as both agents;
- ``mem0``: mem0ai's own ``Memory`` (the installed version) on the same backbone through this
  project's loopback ``/v1`` endpoints (as ``--system mem0-oss`` runs it); what it kept is
  answered by the same untrained backbone with Mem0's answer prompt, through ``Memory.answer``.
Any ``--manager-model`` adds a ``manager=<path>`` system (the shipped agents with that manager).

Prints per system the table of passed / total per group, the failures' answers and memories
with ``--show``, peak RSS, and a last line ``trap suite: memr1 X/N vs mem0 Y/N`` (memr1: trained).

Usage: python benchmarks/traps.py [--per-group 8] [--systems trained,add-all,untrained,mem0] [--show]
       PYTHONPATH=.mem0-1.0.11 python benchmarks/traps.py --systems mem0   # the mem0ai that fits SmolLM2's
       context (installed with pip install --no-deps --target .mem0-1.0.11 mem0ai==1.0.11)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

os.environ.setdefault("MEM0_TELEMETRY", "False")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


class Mem0System:
    """mem0ai's Memory on the backbone's /v1 endpoints; answers through ``answerer`` (a
    memr1_jax Memory that is given Mem0's memories, infer=False, in the same scope)."""

    def __init__(self, mem0, answerer):
        self.mem0, self.answerer, self.failures = mem0, answerer, []

    def add(self, message, user_id, run_id, timestamp):   # Mem0 dates its memories itself
        try:
            self.mem0.add([{"role": "user", "content": message}], user_id=user_id, run_id=run_id)
        except Exception as e:     # Mem0 raises on a refused LLM call; counted, the suite goes on
            self.failures.append(f"{type(e).__name__}: {e}"[:200])

    def memories(self, user_id, run_id):
        from memr1_jax.eval.mem0_oss import _all_memories
        return [r["memory"] for r in _all_memories(self.mem0, user_id, run_id)]

    def answer(self, question, user_id, run_id):
        from memr1_jax.eval.traps import message_time
        for i, text in enumerate(self.memories(user_id, run_id)):
            self.answerer.add(text, user_id=user_id, run_id=run_id, infer=False, timestamp=message_time(i))
        return self.answerer.answer(question, user_id=user_id, run_id=run_id)["answer"]


def _setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` with VALUE read as JSON where it parses (numbers, booleans), else a string."""
    field, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set {text!r}: expected FIELD=VALUE")
    try:
        return field, json.loads(value)
    except ValueError:
        return field, value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-group", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", default="trained,add-all,untrained,mem0")
    p.add_argument("--manager-model", action="append", default=[], help="also: the shipped agents with this manager")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a MemoryConfig field for every memr1 system, e.g. manager_min_score=0.55")
    p.add_argument("--out", default=None, help="write every system's per-trap results (JSON) here")
    p.add_argument("--show", action="store_true", help="print each failed trap's answer and memories")
    args = p.parse_args(argv)
    from memr1_jax import Memory
    from memr1_jax.eval.traps import ServiceSystem, group_counts, make_traps, run_traps, traps_table
    from memr1_jax.memory.encoder import make_encoder
    traps = make_traps(args.per_group, args.seed)
    encoder = make_encoder("minilm")
    work = pathlib.Path(tempfile.mkdtemp(prefix="traps-"))
    trained = {"llm": args.model, **dict(_setting(x) for x in args.set)}
    systems = {"trained": dict(trained), "add-all": {**trained, "manager": "add-all"},
               "untrained": {**trained, "agents": "untrained", "manager_output": "lines", "constrained": True,
                             "answer_prompt": "compact", "answer_k": 5, "answer_max_new_tokens": 24}}
    systems.update({f"manager={m}": {**trained, "manager_model": m} for m in args.manager_model})
    wanted = [s for s in args.systems.split(",") if s] + [f"manager={m}" for m in args.manager_model]
    results, notes = {}, {}
    for name in wanted:
        t0 = time.perf_counter()
        if name == "mem0":
            results[name], notes[name] = run_mem0(traps, args.model, encoder, work, Memory)
        else:
            if name not in systems:
                p.error(f"--systems: unknown system {name!r}; known: {', '.join(list(systems) + ['mem0'])}")
            m = Memory({**systems[name], "store": str(work / f"{name.replace('/', '_')}.db")}, encoder=encoder)
            results[name], notes[name] = run_traps(ServiceSystem(m), traps), m.agents_note
            m.close()
        print(f"{name}: {sum(r['pass'] for r in results[name])}/{len(traps)} in {time.perf_counter() - t0:.0f} s "
              f"({notes[name]})", flush=True)
        if args.out:   # after each system: a later one that fails loses nothing measured
            pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    print()
    print(traps_table(results))
    if args.show:
        for name, rs in results.items():
            for r in rs:
                if not r["pass"]:
                    print(f"- {name} {r['id']}: {r['question']} -> {r['answer']!r}; memories {r['memories']}")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    total = {s: sum(p for p, _ in group_counts(r).values()) for s, r in results.items()}
    mem0 = f"{total['mem0']}/{len(traps)}" if "mem0" in total else "not run"
    print(f"trap suite: memr1 {total.get('trained', 0)}/{len(traps)} vs mem0 {mem0}")
    return 0


def run_mem0(traps, model, encoder, work, Memory):
    from mem0 import Memory as Mem0Memory

    from memr1_jax.agents.llm import ChatLLM
    from memr1_jax.eval.mem0_oss import local_service, mem0_config, mem0_version
    from memr1_jax.eval.traps import run_traps
    from memr1_jax.service.engine import Engine
    backbone = Engine(ChatLLM.from_registry(model, batch_size=4))   # only mem0 needs it outside a Memory
    dim = int(encoder(["probe"]).shape[-1])
    answerer = Memory({"store": str(work / "mem0-answers.db"), "agents": "untrained", "answer_prompt": "mem0",
                       "answer_k": 5, "answer_max_new_tokens": 24}, llm=backbone, encoder=encoder)
    with local_service(backbone.llm, encoder, work / "mem0", "minilm") as (url, key):
        system = Mem0System(Mem0Memory.from_config(mem0_config(url, key, dim, work / "mem0", 256)), answerer)
        results = run_traps(system, traps)
    note = f"mem0ai {mem0_version()}, {len(system.failures)} of {sum(len(t.messages) for t in traps)} adds failed"
    if system.failures:
        note += f" (first: {system.failures[0]})"
    return results, note


if __name__ == "__main__":
    sys.exit(main())
