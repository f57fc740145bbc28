"""``python -m memr1_jax.evaluate``: LoCoMo-style evaluation of a memory system.

Builds memory for each conversation of the chosen split (systems base / mem0),
or retrieves raw dialogue (rag), or reads the whole dialogue (fullctx), answers
every question with the backbone, and reports F1 / BLEU-1 / EM / LoCoMo-F1 /
J per question type. Everything lands in a run directory: the config,
per-question predictions (appended as they are made, so an interrupted run
resumes where it stopped), the banks built, and the table as JSON, Markdown
and a PNG chart.

Systems (all on the same backbone):
  base            the Memory-R1 pipeline with untrained agents: LLM memory manager,
                  Answer Agent prompt with memory distillation
  mem0            the same LLM memory manager, Mem0's answer prompt (no distillation)
  rag             top chunks of raw dialogue, no memory manager
  fullctx         the dialogue truncated (from the start) to the context budget
  checkpoint:PATH the base pipeline with the model weights in PATH (an HF folder,
                  e.g. one exported by memr1_jax.train)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
from typing import Any

from memr1_jax.agents.answer_agent import AnswerConfig, answer_prompts
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks, count_steps
from memr1_jax.agents.prompts import answer_template, extract_answer
from memr1_jax.data import default_split, load_conversations, question_records
from memr1_jax.data.locomo import category_label
from memr1_jax.eval.baselines import RagConfig, fullctx_prompts, rag_prompts
from memr1_jax.eval.metrics import aggregate, format_table, score_answer

SYSTEMS = ("base", "mem0", "rag", "fullctx")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    data: str = "embedded"
    split: str = "test"
    model: str = "smollm2-135m-instruct"
    system: str = "base"
    limit: int | None = 40           # first N questions of the split; None: all
    judge: str | None = None
    k_per_speaker: int = 10          # the paper uses 30; 10 keeps CPU prompts near 1k tokens
    manager: str = "llm"             # base / mem0 memory construction: "llm" or "add-all"
    manager_k: int = 5
    manager_max_new_tokens: int = 160
    manager_model: str | None = None  # base / mem0: weights of the memory manager (registry name or
                                      # model folder, e.g. a trained manager's hf/); None: the answer model
    answer_max_new_tokens: int = 64
    answer_prompt: str = "full"      # base / checkpoint answer prompt: "full" (the paper's) or "compact"
    rag_chunk_tokens: int = 256
    rag_num_chunks: int = 2
    fullctx_tokens: int = 2048
    batch_size: int = 8
    run_dir: str | None = None

    def __post_init__(self):
        if self.system not in SYSTEMS and not self.system.startswith("checkpoint:"):
            raise ValueError(f"--system {self.system!r}: expected one of {SYSTEMS} or checkpoint:PATH")
        if self.split not in ("train", "validation", "test"):
            raise ValueError(f"--split {self.split!r}: expected train, validation or test")
        answer_template(self.answer_prompt)  # validates the name
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: must be >= 1")

    @property
    def pipeline(self) -> str:
        return "base" if self.system.startswith("checkpoint:") else self.system

    def bank_dir(self, run_dir: pathlib.Path) -> pathlib.Path:
        """Banks depend only on data, model and manager settings, so base and mem0
        runs share them (a sibling folder of the run's, keyed by those settings)."""
        builder = self.manager_model or (self.system if self.system.startswith("checkpoint:") else self.model)
        key = json.dumps([self.data, builder, self.manager, self.manager_k, self.manager_max_new_tokens],
                         sort_keys=True)
        return run_dir.parent / "banks" / hashlib.sha1(key.encode()).hexdigest()[:12]

    def default_run_dir(self) -> pathlib.Path:
        # Same config -> same folder, which is what makes resuming automatic.
        # Fields added later enter the key only when set, so older run folders keep their names.
        key = json.dumps({k: v for k, v in dataclasses.asdict(self).items()
                          if k != "run_dir" and not (k == "manager_model" and v is None)}, sort_keys=True)
        tag = hashlib.sha1(key.encode()).hexdigest()[:8]
        data = "embedded" if self.data == "embedded" else pathlib.Path(self.data).name
        system = self.system.replace(":", "-").replace("/", "_")[:40]
        if self.manager_model:
            system += "-trained_manager" if "/" in self.manager_model else f"-{self.manager_model}-manager"
        return pathlib.Path("runs") / "evaluate" / f"{data}-{self.split}-{system}-{self.model}-{tag}"


def _load_done(path: pathlib.Path) -> dict[str, dict]:
    """Predictions already made. A run killed mid-write leaves a torn last line:
    the file is rewritten (atomically) without it and that question is redone."""
    done, bad = {}, 0
    if path.exists():
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    done[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1
                    print(f"warning: {path}:{n}: unreadable prediction line, will redo it", file=sys.stderr)
        if bad:
            tmp = path.with_suffix(".jsonl.tmp")
            with open(tmp, "w") as f:
                for rec in done.values():
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    return done


def _save_outputs(run_dir: pathlib.Path, agg: dict, cfg: EvalConfig, extra: dict) -> None:
    (run_dir / "metrics.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), **extra,
                                                      "results": agg}, indent=2))
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    md = [f"# {cfg.system} on {cfg.data} ({cfg.split}), model {cfg.model}", "",
          "| type | n | F1 | B1 | EM | LoCoMo-F1 | J |", "|---|---|---|---|---|---|---|"]
    for label, row in agg.items():
        name = label if row.get("category") is None else f"{row['category']} {label}"
        md.append(f"| {name} | {row['count']} | {fmt(row['f1'])} | {fmt(row['b1'])} | {fmt(row['em'])} | "
                  f"{fmt(row.get('locomo_f1'))} | {fmt(row.get('j'))} |")
    (run_dir / "results.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels = list(agg)
        metrics = [("f1", "F1"), ("b1", "BLEU-1"), ("em", "EM")] + (
            [("j", "J")] if any(agg[lab].get("j") is not None for lab in labels) else [])
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(metrics)
        for m, (key, name) in enumerate(metrics):
            vals = [100 * (agg[lab].get(key) or 0.0) for lab in labels]
            ax.bar([i + m * width for i in range(len(labels))], vals, width, label=name)
        ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(labels))])
        ax.set_xticklabels([f"{lab}\n(n={agg[lab]['count']})" for lab in labels])
        ax.set_ylabel("score")
        ax.set_title(f"{cfg.system} / {cfg.model} / {cfg.data}:{cfg.split}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "results.png", dpi=100)
        plt.close(fig)
    except ImportError:  # matplotlib is an install requirement; keep the run's results regardless
        pass


def evaluate(cfg: EvalConfig, progress: bool = True, *, llm=None, encoder=None,
             manager_llm=None) -> dict[str, Any]:
    """Run (or resume) one evaluation; returns the aggregated table.

    ``llm`` (a ChatLLM, e.g. with freshly trained params) replaces the model named by the
    config, and its banks are then kept inside the run folder (the shared bank cache is
    keyed by model name, which no longer identifies the weights); ``encoder`` replaces
    MiniLM (tests pass HashingTestEncoder); ``manager_llm`` builds the banks instead of
    ``llm`` (a trained Memory Manager with the frozen Answer Agent)."""
    from tqdm import tqdm

    t0 = time.time()
    run_dir = pathlib.Path(cfg.run_dir) if cfg.run_dir else cfg.default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    cfg_json = json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(cfg_json):
        raise ValueError(f"{run_dir} holds a run with a different config ({cfg_path}); "
                         f"choose another --run-dir")
    cfg_path.write_text(cfg_json)

    convs = load_conversations(cfg.data)
    split_convs = getattr(default_split(convs), cfg.split)
    records = question_records(split_convs)
    if cfg.limit:
        records = records[:cfg.limit]
    pred_path = run_dir / "predictions.jsonl"
    done = _load_done(pred_path)
    todo = [r for r in records if f"{r.conversation_id}:{r.qa_index}" not in done]
    conv_by_id = {c.id: c for c in split_convs}
    print(f"{len(records)} questions from {len({r.conversation_id for r in records})} conversations "
          f"({cfg.data}, {cfg.split}); {len(records) - len(todo)} already answered in {run_dir}")

    if todo:
        from memr1_jax.agents.llm import ChatLLM
        from memr1_jax.memory import Retriever, load_bank, save_bank
        from memr1_jax.memory.encoder import load_minilm

        model_name = cfg.system.split(":", 1)[1] if cfg.system.startswith("checkpoint:") else cfg.model
        # Weights passed in are not identified by any name: their banks stay inside the run folder.
        own_llm = llm is not None or manager_llm is not None
        llm = llm if llm is not None else ChatLLM.from_registry(model_name, batch_size=cfg.batch_size)
        if manager_llm is None and cfg.manager_model and cfg.pipeline in ("base", "mem0") and cfg.manager == "llm":
            manager_llm = ChatLLM.from_registry(cfg.manager_model, batch_size=cfg.batch_size)
        encoder = encoder if encoder is not None else load_minilm()
        retriever = Retriever()
        count = lambda s: len(llm.tokenizer.encode(s))  # noqa: E731
        judge = None
        if cfg.judge:
            from memr1_jax.eval.judge import make_judge
            judge = make_judge(cfg.judge, lambda name: llm if name == model_name else
                               ChatLLM.from_registry(name, batch_size=cfg.batch_size))

        needed = sorted({r.conversation_id for r in todo})
        banks = {}
        if cfg.pipeline in ("base", "mem0"):
            bank_dir = run_dir / "banks" if own_llm else cfg.bank_dir(run_dir)
            bank_dir.mkdir(parents=True, exist_ok=True)
            missing = []
            for cid in needed:
                p = bank_dir / f"{cid}.bank"
                if p.exists():
                    banks[cid] = load_bank(p)
                else:
                    missing.append(conv_by_id[cid])
            if missing:
                mcfg = ManagerConfig(kind=cfg.manager, retrieve_k=cfg.manager_k,
                                     max_new_tokens=cfg.manager_max_new_tokens)
                n_steps = count_steps(missing, mcfg)
                log = open(bank_dir / "manager_steps.jsonl", "a")

                def on_step(cid, state, completion, report, problems):
                    # Every manager rollout is kept for inspection.
                    log.write(json.dumps({
                        "conversation_id": cid, "session": state.session, "speaker": state.speaker,
                        "facts": list(state.facts), "shown_memories": len(state.id_map),
                        "completion": completion, "problems": list(problems),
                        "applied": [r.op.event.value for r in report.results if r.applied]},
                        ensure_ascii=False) + "\n")

                with log, tqdm(total=n_steps, desc="memory construction", disable=not progress) as bar:
                    built, stats = build_banks(missing, encoder, mcfg,
                                               llm=(manager_llm or llm) if cfg.manager == "llm" else None,
                                               retriever=retriever, progress=bar.update, on_step=on_step)
                print(f"memory construction: {stats.steps} manager steps, ops {stats.ops}, "
                      f"{stats.parse_failures} steps with format problems, {stats.skipped_ops} ops skipped")
                for cid, bank in built.items():
                    save_bank(bank, bank_dir / f"{cid}.bank")
                    banks[cid] = bank

        acfg = AnswerConfig(k_per_speaker=cfg.k_per_speaker, distill=cfg.pipeline != "mem0",
                            max_new_tokens=cfg.answer_max_new_tokens,
                            template=answer_template(cfg.answer_prompt) if cfg.pipeline == "base" else None)
        chunk = max(cfg.batch_size * 4, 1)
        with open(pred_path, "a") as out, tqdm(total=len(todo), desc="answering", disable=not progress) as bar:
            for cid in needed:
                conv = conv_by_id[cid]
                recs = [r for r in todo if r.conversation_id == cid]
                for i in range(0, len(recs), chunk):
                    part = recs[i:i + chunk]
                    qs = [r.qa.question for r in part]
                    if cfg.pipeline in ("base", "mem0"):
                        prompts = answer_prompts(conv, banks[cid], qs, encoder, retriever, acfg)
                    elif cfg.pipeline == "rag":
                        prompts = rag_prompts(conv, qs, encoder, count,
                                              RagConfig(cfg.rag_chunk_tokens, cfg.rag_num_chunks))
                    else:
                        prompts = fullctx_prompts(conv, qs, count, cfg.fullctx_tokens)
                    completions = llm.complete(prompts, max_new_tokens=cfg.answer_max_new_tokens)
                    answers = []
                    for text in completions:
                        ans, marked = extract_answer(text)
                        answers.append((ans, marked))
                    js = judge(qs, [r.qa.answer for r in part], [a for a, _ in answers]) if judge else [None] * len(part)
                    for r, text, (ans, marked), j in zip(part, completions, answers, js):
                        rec = {"key": f"{r.conversation_id}:{r.qa_index}", "conversation_id": r.conversation_id,
                               "qa_index": r.qa_index, "category": r.qa.category,
                               "label": category_label(r.qa.category), "question": r.qa.question,
                               "gold": r.qa.answer, "prediction": ans, "answer_marker": marked,
                               "completion": text, **score_answer(ans, r.qa.answer, r.qa.category), "j": j}
                        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        done[rec["key"]] = rec
                    out.flush()
                    os.fsync(out.fileno())
                    bar.update(len(part))

    final = [done[f"{r.conversation_id}:{r.qa_index}"] for r in records]
    agg = aggregate(final)
    wall = time.time() - t0
    _save_outputs(run_dir, agg, cfg, {"wall_seconds": wall, "num_questions": len(final)})
    print(format_table(agg))
    print(f"wall time {wall:.0f} s; results in {run_dir} (metrics.json, results.md, results.png, predictions.jsonl)")
    return agg


def parse_args(argv=None) -> EvalConfig:
    d = EvalConfig()
    p = argparse.ArgumentParser(prog="python -m memr1_jax.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=d.data, help="'embedded' (default) or a LoCoMo path (folder of "
                   "per-conversation files, or locomo10.json)")
    p.add_argument("--split", default=d.split, choices=("train", "validation", "test"))
    p.add_argument("--model", default=d.model, help="registry preset or model folder")
    p.add_argument("--system", default=d.system, help="base | mem0 | rag | fullctx | checkpoint:PATH")
    p.add_argument("--limit", type=int, default=d.limit,
                   help=f"first N questions of the split (default {d.limit}; 0 for all)")
    p.add_argument("--judge", default=None,
                   help="none (default: J is n/a) | openai (endpoint from $MEMR1_JUDGE_BASE_URL, "
                   "$MEMR1_JUDGE_API_KEY, $MEMR1_JUDGE_MODEL) | a registry model name")
    p.add_argument("--k-per-speaker", type=int, default=d.k_per_speaker,
                   help=f"memories retrieved per speaker (default {d.k_per_speaker}; the paper uses 30)")
    p.add_argument("--manager", default=d.manager, choices=("llm", "add-all"))
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--answer-max-new-tokens", type=int, default=d.answer_max_new_tokens)
    p.add_argument("--manager-max-new-tokens", type=int, default=d.manager_max_new_tokens)
    p.add_argument("--manager-model", default=None,
                   help="base / mem0: the model that builds the banks (registry preset or model folder, e.g. "
                   "runs/train/<run>/hf of a trained manager); default: --model. --model stays the Answer Agent")
    p.add_argument("--fullctx-tokens", type=int, default=d.fullctx_tokens)
    p.add_argument("--answer-prompt", default=d.answer_prompt, choices=("full", "compact"),
                   help="Answer Agent prompt of base / checkpoint runs (default full: the paper's)")
    p.add_argument("--run-dir", default=None, help="output folder (default: runs/evaluate/<derived from config>)")
    a = p.parse_args(argv)
    return EvalConfig(data=str(a.data), split=a.split, model=a.model, system=a.system,
                      limit=a.limit or None, judge=a.judge, k_per_speaker=a.k_per_speaker,
                      manager=a.manager, batch_size=a.batch_size,
                      answer_max_new_tokens=a.answer_max_new_tokens,
                      manager_max_new_tokens=a.manager_max_new_tokens, manager_model=a.manager_model,
                      fullctx_tokens=a.fullctx_tokens,
                      answer_prompt=a.answer_prompt,
                      run_dir=a.run_dir)


def main(argv=None) -> int:
    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    evaluate(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
