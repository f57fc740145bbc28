"""One LoCoMo-style evaluation of a memory system, as a library function.

``evaluate(cfg)`` builds memory for each conversation of ``cfg.eval.split`` (systems base /
mem0: the Memory Manager ``cfg.task.manager`` over the facts), or retrieves raw dialogue
(rag), or reads the whole dialogue (fullctx), answers every question with the Answer Agent
``cfg.task.answer``, and reports F1 / BLEU-1 / EM / LoCoMo-F1 / J per question type. Both
``python -m memr1_jax.evaluate`` and the trainer's final evaluation call it; the trainer
passes its trained weights as ``answer_llm`` / ``manager_llm``.

Everything lands in a run folder: the config, per-question predictions (appended as they
are made, so an interrupted run resumes where it stopped), the banks built, and the table
as JSON, Markdown and a PNG chart.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import sys
import time
import warnings
from typing import Any

from memr1_jax.agents.answer_agent import answer_prompts
from memr1_jax.agents.memory_manager import build_banks, count_steps
from memr1_jax.agents.prompts import extract_answer
from memr1_jax.config import ConfigError, RunConfig, to_dict
from memr1_jax.data import content_hash, default_split, load_conversations, question_records
from memr1_jax.eval.bank_stats import bank_stats, total
from memr1_jax.eval.baselines import RagConfig, fullctx_prompts, rag_prompts
from memr1_jax.eval.metrics import aggregate, format_table, judge_agreement, score_answer
from memr1_jax.files import atomic_write_text, child, entry_lock, folder_lock, rewrite_lines, safe_name
from memr1_jax.trained import pipeline_of_system


def pipeline(cfg: RunConfig) -> str:
    """base | mem0 | mem0-oss | rag | fullctx (memory-r1[:PATH] and checkpoint:PATH are the
    base pipeline with other weights)."""
    system = cfg.eval.system
    return "base" if _trained(system) or system.startswith("checkpoint:") else system


def _trained(system: str) -> bool:
    """memory-r1 or memory-r1:PATH (a trained pipeline; ``memr1_jax.trained``)."""
    return system == "memory-r1" or system.startswith("memory-r1:")


def answer_model(cfg: RunConfig) -> str:
    """The Answer Agent: checkpoint:PATH's weights, memory-r1[:PATH]'s trained one, or model.name."""
    system = cfg.eval.system
    if system.startswith("checkpoint:"):
        return system.split(":", 1)[1]
    if _trained(system):
        return pipeline_of_system(system, cfg.model.name).answer_agent
    return cfg.model.name


def manager_model(cfg: RunConfig) -> str:
    """The model that builds base / mem0 banks when it is not the answer model ("" when it is):
    eval.manager_model, else memory-r1[:PATH]'s trained Memory Manager."""
    if cfg.eval.manager_model:
        return cfg.eval.manager_model
    if _trained(cfg.eval.system):
        return pipeline_of_system(cfg.eval.system, cfg.model.name).memory_manager
    return ""


def data_digest(convs) -> str:
    """A hash of the content of every conversation (not of the path it was read from)."""
    h = hashlib.sha256()
    for c in convs:
        h.update(content_hash(c).encode())
    return h.hexdigest()[:16]


def model_identity(name: str) -> str:
    """A registry preset is its name (its weights are pinned by checksum); a model folder is
    its path with the size and modification time of each file, so weights exported again
    into the same folder are another model."""
    folder = pathlib.Path(name)
    if not folder.is_dir():
        return name
    files = [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
             for f in sorted(folder.rglob("*")) if f.is_file()]
    return f"{name}@{hashlib.sha256(json.dumps(files).encode()).hexdigest()[:12]}"


def _spec(cfg: RunConfig, digest: str = "") -> dict:
    """What an evaluation's results depend on: the key of its run folder and config.json."""
    e = cfg.eval
    d = cfg.data
    spec = {"data": d.path, "data_content": digest, "model": model_identity(cfg.model.name),
            "encoder": cfg.model.encoder, "answer": to_dict(cfg.task.answer),
            "batch_size": cfg.rollout.gen_batch_size,
            # the judge only adds a column: a run judged later (or by another judge) keeps its answers
            "eval": {k: v for k, v in to_dict(e).items() if k not in ("run_dir", "after_training", "base_too",
                                                                     "judge", "mem0_messages_per_add")}}
    if d.format != "auto" or d.train_ids or d.validation_ids:
        spec["data_options"] = {"format": d.format, "train_ids": d.train_ids, "validation_ids": d.validation_ids}
    if d.facts == "extract" and pipeline(cfg) in ("base", "mem0"):
        spec["facts"] = {"extractor": extractor_identity(cfg)}
    if answer_model(cfg) != cfg.model.name:
        spec["weights"] = model_identity(answer_model(cfg))
    if pipeline(cfg) == "mem0-oss":
        from memr1_jax.eval.mem0_oss import mem0_version
        spec["mem0"] = {"version": mem0_version(), "messages_per_add": e.mem0_messages_per_add,
                        "max_tokens": cfg.task.manager.max_new_tokens}
    if pipeline(cfg) in ("base", "mem0"):
        spec["manager"] = to_dict(cfg.task.manager)
        if manager_model(cfg):
            spec["manager_weights"] = model_identity(manager_model(cfg))
    return spec


def extractor_identity(cfg: RunConfig) -> str:
    """The model that extracts facts (data.facts=extract): data.extract_model or the answer model."""
    return model_identity(cfg.data.extract_model or answer_model(cfg))


def bank_dir(cfg: RunConfig, run_dir: pathlib.Path) -> pathlib.Path:
    """Banks depend on the manager model and settings, the encoder and the conversation, so
    base and mem0 runs share them (a sibling folder of the run's keyed by the settings; each
    file named by its conversation's id and content hash: ``bank_file``)."""
    m = cfg.task.manager
    builder = model_identity(manager_model(cfg) or answer_model(cfg))
    key = [builder, cfg.model.encoder, cfg.eval.manager, m.retrieve_k, m.max_facts_per_step, m.max_new_tokens,
           m.template] + (["constrained"] if m.constrained and cfg.eval.manager == "llm" else []) \
        + ([m.output] if m.output != "json" and cfg.eval.manager == "llm" else [])   # json keeps older keys
    key += [["min_score", m.min_score]] if m.min_score is not None and cfg.eval.manager == "llm" else []
    key = json.dumps(key, sort_keys=True)
    return run_dir.parent / "banks" / hashlib.sha1(key.encode()).hexdigest()[:12]


def mem0_bank_dir(cfg: RunConfig, run_dir: pathlib.Path) -> pathlib.Path:
    """Banks Mem0 built (mem0-oss): keyed by Mem0's version and settings, the model and the encoder."""
    from memr1_jax.eval.mem0_oss import mem0_version
    key = json.dumps(["mem0-oss", mem0_version(), cfg.eval.mem0_messages_per_add, cfg.task.manager.max_new_tokens,
                      model_identity(answer_model(cfg)), cfg.model.encoder], sort_keys=True)
    return run_dir.parent / "banks" / ("mem0-" + hashlib.sha1(key.encode()).hexdigest()[:12])


def bank_file(folder: pathlib.Path, conv) -> pathlib.Path:
    return child(folder, f"{conv.id}-{content_hash(conv)[:12]}", ".bank")


def default_run_dir(cfg: RunConfig, digest: str = "") -> pathlib.Path:
    # Same config and data -> same folder, which is what makes resuming automatic.
    tag = hashlib.sha1(json.dumps(_spec(cfg, digest), sort_keys=True).encode()).hexdigest()[:8]
    data = "embedded" if cfg.data.path == "embedded" else safe_name(pathlib.Path(cfg.data.path).name)
    system = cfg.eval.system.replace(":", "-").replace("/", "_")[:40]
    if cfg.eval.manager != "llm":
        system += f"-{cfg.eval.manager}"
    if cfg.eval.manager_model:
        mm = cfg.eval.manager_model
        system += "-trained_manager" if "/" in mm else f"-{mm}-manager"
    return pathlib.Path("runs") / "evaluate" / safe_name(f"{data}-{cfg.eval.split}-{system}-{cfg.model.name}-{tag}")


def run_folder(cfg: RunConfig) -> pathlib.Path:
    """The folder ``evaluate(cfg)`` writes: eval.run_dir, or the one derived from the config and
    the content of the split's data."""
    if cfg.eval.run_dir:
        return pathlib.Path(cfg.eval.run_dir)
    convs = getattr(default_split(load_conversations(cfg.data.path, cfg.data.format),
                                  cfg.data.train_ids, cfg.data.validation_ids), cfg.eval.split)
    return default_run_dir(cfg, data_digest(convs))


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
            rewrite_lines(path, (json.dumps(rec, ensure_ascii=False) for rec in done.values()))
    return done


def _save_outputs(run_dir: pathlib.Path, agg: dict, cfg: RunConfig, extra: dict, spec: dict) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps({"config": spec, **extra, "results": agg}, indent=2))
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    md = [f"# {cfg.eval.system} on {cfg.data.path} ({cfg.eval.split}), model {cfg.model.name}", "",
          "| type | n | F1 | B1 | EM | LoCoMo-F1 | J |", "|---|---|---|---|---|---|---|"]
    for label, row in agg.items():
        name = f"{row['category']} {label}" if row.get("category") else label
        md.append(f"| {name} | {row['count']} | {fmt(row['f1'])} | {fmt(row['b1'])} | {fmt(row['em'])} | "
                  f"{fmt(row.get('locomo_f1'))} | {fmt(row.get('j'))} |")
    if extra.get("judge"):
        md += ["", f"J: LLM judge `{extra['judge']}` (Mem0's accuracy prompt; 1 for CORRECT, else 0)."]
    atomic_write_text(run_dir / "results.md", "\n".join(md) + "\n")
    _plot(run_dir / "results.png", agg, cfg)


def _plot(path: pathlib.Path, agg: dict, cfg: RunConfig) -> None:
    from matplotlib.figure import Figure   # no pyplot: the caller's backend is left alone
    labels = list(agg)
    metrics = [("f1", "F1"), ("b1", "BLEU-1"), ("em", "EM")] + (
        [("j", "J")] if any(agg[lab].get("j") is not None for lab in labels) else [])
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for m, (key, name) in enumerate(metrics):
        vals = [100 * (agg[lab].get(key) or 0.0) for lab in labels]
        ax.bar([i + m * width for i in range(len(labels))], vals, width, label=name)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(labels))])
    ax.set_xticklabels([f"{lab}\n(n={agg[lab]['count']})" for lab in labels])
    ax.set_ylabel("score")
    ax.set_title(f"{cfg.eval.system} / {cfg.model.name} / {cfg.data.path}:{cfg.eval.split}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _banks(bank_path: pathlib.Path, convs, build) -> dict:
    """The banks of ``convs`` saved in ``bank_path``; ``build(missing convs, bank_path)`` makes
    (and saves) the others. Another run building the same banks: wait, then reuse them."""
    bank_path.mkdir(parents=True, exist_ok=True)
    with entry_lock(bank_path):
        banks = {c.id: _cached_bank(bank_file(bank_path, c)) for c in convs}
        missing = [c for c in convs if banks[c.id] is None]
        if missing:
            banks.update(build(missing, bank_path))
    return banks


def _build_missing_banks(cfg: RunConfig, convs, encoder, retriever, llm, bank_path: pathlib.Path,
                         progress: bool) -> dict:
    from tqdm import tqdm

    from memr1_jax.memory import save_bank
    mcfg = dataclasses.replace(cfg.task.manager, kind=cfg.eval.manager)
    log = open(bank_path / "manager_steps.jsonl", "a")

    def on_step(cid, state, completion, report, problems):
        # Every manager rollout is kept for inspection.
        log.write(json.dumps({
            "conversation_id": cid, "session": state.session, "speaker": state.speaker,
            "facts": list(state.facts), "shown_memories": len(state.id_map),
            "completion": completion, "problems": list(problems),
            "applied": [r.op.event.value for r in report.results if r.applied]}, ensure_ascii=False) + "\n")

    with log, tqdm(total=count_steps(convs, mcfg), desc="memory construction", disable=not progress) as bar:
        built, stats = build_banks(convs, encoder, mcfg, llm=llm if mcfg.kind == "llm" else None,
                                   retriever=retriever, progress=bar.update, on_step=on_step)
    print(f"memory construction: {stats.steps} manager steps, ops {stats.ops}, "
          f"{stats.parse_failures} steps with format problems, {stats.skipped_ops} ops skipped")
    if mcfg.kind == "llm" and stats.steps and not sum(stats.ops.values()):
        hint = ("" if mcfg.output == "lines" and mcfg.constrained else
                "; --config.task.manager.output=lines --config.task.manager.constrained=true makes every step "
                "a valid decision (README: the line format)")
        print(f"  the manager applied no operation, so the Answer Agent reads empty banks{hint}")
    by_id = {c.id: c for c in convs}
    for cid, bank in built.items():
        save_bank(bank, bank_file(bank_path, by_id[cid]))
    return built


def _build_mem0_banks(cfg: RunConfig, convs, encoder, llm, bank_path: pathlib.Path, progress: bool) -> dict:
    """mem0-oss: Mem0 adds each conversation through this project's endpoints; banks saved."""
    import tempfile

    from tqdm import tqdm

    from memr1_jax.eval.mem0_oss import build_banks, count_calls, mem0_version
    from memr1_jax.memory import save_bank
    per_add = cfg.eval.mem0_messages_per_add
    with tempfile.TemporaryDirectory(dir=bank_path) as work, \
            tqdm(total=count_calls(convs, per_add), desc="mem0 add", disable=not progress) as bar:
        built, stats = build_banks(convs, llm, encoder, pathlib.Path(work), encoder_name=cfg.model.encoder,
                                   messages_per_add=per_add, max_tokens=cfg.task.manager.max_new_tokens,
                                   progress=bar.update)
    print(f"mem0 (mem0ai {mem0_version()}): {stats.add_calls} add calls, {stats.failed_calls} failed, "
          f"{stats.memories} memories kept, {stats.seconds:.0f} s")
    if stats.errors:
        print(f"first mem0 error: {stats.errors[0]}")
    by_id = {c.id: c for c in convs}
    for cid, bank in built.items():
        save_bank(bank, bank_file(bank_path, by_id[cid]))
    return built


def _cached_bank(path: pathlib.Path):
    """The bank saved at ``path``, or None when there is none; a damaged one is moved aside
    (``*.corrupt``) with a warning and rebuilt."""
    from memr1_jax.memory import BankFileError, load_bank
    if not path.exists():
        return None
    try:
        return load_bank(path)
    except BankFileError as e:
        aside = path.with_name(path.name + f".{int(time.time())}.corrupt")
        os.replace(path, aside)
        warnings.warn(f"{e}; moved it to {aside.name} and building the bank again", stacklevel=2)
        return None


def load_split(cfg: RunConfig):
    """The conversations of the run's data split by ``data.train_ids`` / ``data.validation_ids``
    (see ``memr1_jax.data.default_split``); a note on how it was chosen goes to stderr."""
    split = default_split(load_conversations(cfg.data.path, cfg.data.format),
                          cfg.data.train_ids, cfg.data.validation_ids)
    if split.note:
        print(f"{cfg.data.path}: {split.note}", file=sys.stderr)
    return split


def extracted(cfg: RunConfig, convs, llm, cache_root: pathlib.Path | None, progress: bool):
    """``convs`` with facts extracted from their dialogue by ``llm`` (data.facts=extract)."""
    from tqdm import tqdm

    from memr1_jax.agents.fact_extraction import ExtractionConfig, count_requests, extract_facts
    ecfg = ExtractionConfig()
    with tqdm(total=count_requests(convs, ecfg), desc="fact extraction", disable=not progress) as bar:
        out = extract_facts(convs, llm, ecfg, cache_root=cache_root, extractor=extractor_identity(cfg),
                            progress=bar.update)
    n = sum(len(f) for c in out for s in c.sessions for f in s.observations.values())
    print(f"fact extraction: {n} facts from {len(out)} conversations")
    return out


def evaluate(cfg: RunConfig, progress: bool = True, *, answer_llm=None, manager_llm=None,
             encoder=None, extract_llm=None) -> dict[str, Any]:
    """Run (or resume) one evaluation; returns the aggregated table.

    ``answer_llm`` (a ChatLLM, e.g. with freshly trained params) replaces the model named by
    the config, ``manager_llm`` the model that builds the banks; weights passed in are not
    identified by any name, so their banks (and extracted facts) are kept inside the run
    folder. ``extract_llm`` (data.facts=extract) is the model named by ``data.extract_model``
    or ``model.name``, already loaded (the trainer's untrained backbone): its facts are cached
    as that model's. ``encoder`` replaces the one named by ``cfg.model.encoder``. With a judge
    (``cfg.eval.judge``) every answer not yet labelled by that judge is labelled; the
    answers themselves are reused."""
    if len(cfg.eval.systems) != 1:
        raise ConfigError(f"eval.system={cfg.eval.system!r}: evaluate() runs one system; "
                          f"memr1_jax.eval.systems.evaluate_systems runs several")
    t0 = time.time()
    # The data first: a bad file stops here, before any run folder exists.
    split_convs = getattr(load_split(cfg), cfg.eval.split)
    records = question_records(split_convs)
    if cfg.eval.limit:
        records = records[:cfg.eval.limit]
    if not records:
        warnings.warn(f"{cfg.data.path}: no questions to evaluate in the {cfg.eval.split} split "
                      f"({len(split_convs)} conversations; category-5 questions are not scored)", stacklevel=2)
    spec = _spec(cfg, data_digest(split_convs))
    run_dir = pathlib.Path(cfg.eval.run_dir) if cfg.eval.run_dir else default_run_dir(cfg, spec["data_content"])
    with folder_lock(run_dir, "evaluation run folder", scaffolding=("config.json",)):
        return _evaluate(cfg, run_dir, spec, split_convs, records, t0, progress,
                         _Models(cfg, answer_llm, manager_llm, extract_llm), encoder)


class _Models:
    """The run's models, loaded when first needed (a resumed run that only needs judging
    loads only the judge)."""

    def __init__(self, cfg: RunConfig, answer_llm, manager_llm, extract_llm=None):
        self.cfg, self._answer, self.manager, self._extract = cfg, answer_llm, manager_llm, extract_llm
        self.own_weights = answer_llm is not None or manager_llm is not None
        self._given = answer_llm is not None   # weights passed in are not the named model

    @functools.cached_property
    def mesh(self):
        from memr1_jax.run.models import build_mesh
        return self._answer.mesh if self._given else build_mesh(self.cfg)

    def load(self, name: str):
        from memr1_jax.run.models import load_chat_model
        return load_chat_model(name, self.cfg, self.mesh)

    @property
    def answer(self):
        if self._answer is None:
            self._answer = self.load(answer_model(self.cfg))
        return self._answer

    def extractor(self):
        """(the fact-extracting model, whether it is the model its name says: cacheable)."""
        if self._extract is None and self.cfg.data.extract_model:
            self._extract = self.load(self.cfg.data.extract_model)
        if self._extract is not None:
            return self._extract, True
        return self.answer, not self._given

    def named(self, name: str):
        """The answer model when ``name`` names it (loaded once), else the model ``name``."""
        if name == answer_model(self.cfg) and not self._given:
            return self.answer
        return self.load(name)


def _evaluate(cfg: RunConfig, run_dir: pathlib.Path, spec: dict, split_convs, records, t0: float, progress: bool,
              models: "_Models", encoder) -> dict[str, Any]:
    cfg_path = run_dir / "config.json"
    cfg_json = json.dumps(spec, indent=2, sort_keys=True)
    if cfg_path.exists():
        try:
            same = json.loads(cfg_path.read_text()) == json.loads(cfg_json)
        except (OSError, ValueError):
            same = False
        if not same:
            raise ValueError(f"{run_dir} holds a run with a different config or data ({cfg_path}); "
                             f"choose another eval.run_dir (--run-dir)")
    atomic_write_text(cfg_path, cfg_json)
    pred_path = run_dir / "predictions.jsonl"
    done = _load_done(pred_path)
    todo = [r for r in records if f"{r.conversation_id}:{r.qa_index}" not in done]
    print(f"{len(records)} questions from {len({r.conversation_id for r in records})} conversations "
          f"({cfg.data.path}, {cfg.eval.split}); {len(records) - len(todo)} already answered in {run_dir}")
    if todo:
        _answer(cfg, run_dir, split_convs, todo, done, pred_path, models, encoder, progress)
    judge_name = ""
    if cfg.eval.judge:
        judge_name = _judge(cfg, records, done, pred_path, models, progress)

    final = [done[f"{r.conversation_id}:{r.qa_index}"] for r in records]
    agg = aggregate(final)
    wall = time.time() - t0
    extra = {"wall_seconds": wall, "num_questions": len(final)}
    banks = _bank_report(cfg, run_dir, models, split_convs, records)
    if banks:
        extra["banks"] = banks
        cov = "" if banks["coverage"] is None else f", {100 * banks['coverage']:.0f}% of {banks['observations']} observations kept"
        print(f"banks: {banks['memories']} memories ({banks['adds']} ADD, {banks['updates']} UPDATE, "
              f"{banks['deletes']} DELETE applied){cov}")
    if judge_name:
        extra["judge"] = judge_name
        extra["judge_agreement"] = judge_agreement(final)
    _save_outputs(run_dir, agg, cfg, extra, spec)
    print(format_table(agg))
    if judge_name and extra["judge_agreement"]["n"]:
        a = extra["judge_agreement"]
        fmt = lambda k: "n/a" if k is None else f"{k:.2f}"  # noqa: E731
        print(f"J: LLM judge {judge_name}; CORRECT for {100 * a['judge_positive']:.1f}% of {a['n']}; agreement "
              f"with EM {100 * a['em']['agreement']:.1f}% (kappa {fmt(a['em']['kappa'])}), with F1>=0.5 "
              f"{100 * a['f1>=0.5']['agreement']:.1f}% (kappa {fmt(a['f1>=0.5']['kappa'])})")
    print(f"wall time {wall:.0f} s; results in {run_dir} (metrics.json, results.md, results.png, predictions.jsonl)")
    return agg


def _answer(cfg: RunConfig, run_dir: pathlib.Path, split_convs, todo, done: dict, pred_path: pathlib.Path,
            models: _Models, encoder, progress: bool) -> None:
    from tqdm import tqdm

    from memr1_jax.memory import Retriever
    from memr1_jax.memory.encoder import make_encoder

    batch = cfg.rollout.gen_batch_size
    kind = pipeline(cfg)
    llm = models.answer
    if models.manager is None and manager_model(cfg) and kind in ("base", "mem0") and cfg.eval.manager == "llm":
        models.manager = models.load(manager_model(cfg))
    encoder = encoder if encoder is not None else make_encoder(cfg.model.encoder)
    retriever = Retriever()
    count = lambda s: len(llm.tokenizer.encode(s))  # noqa: E731
    conv_by_id = {c.id: c for c in split_convs}
    needed = sorted({r.conversation_id for r in todo})
    banks = {}
    if kind in ("base", "mem0"):
        if cfg.data.facts == "extract":
            extractor, named = models.extractor()
            convs = extracted(cfg, [conv_by_id[cid] for cid in needed], extractor,
                              pathlib.Path(cfg.data.facts_cache) if named else run_dir / "facts", progress)
            conv_by_id.update({c.id: c for c in convs})
        banks = _banks(_bank_folder(cfg, run_dir, models), [conv_by_id[cid] for cid in needed],
                       lambda convs, path: _build_missing_banks(cfg, convs, encoder, retriever,
                                                                models.manager or llm, path, progress))
    elif kind == "mem0-oss":
        banks = _banks(_bank_folder(cfg, run_dir, models), [conv_by_id[cid] for cid in needed],
                       lambda convs, path: _build_mem0_banks(cfg, convs, encoder, llm, path, progress))

    # mem0 / mem0-oss: Mem0's answer prompt (no distillation); base: the configured distillation prompt.
    acfg = dataclasses.replace(cfg.task.answer, distill=cfg.task.answer.distill and kind not in ("mem0", "mem0-oss"))
    chunk = max(batch * 4, 1)
    with open(pred_path, "a") as out, tqdm(total=len(todo), desc="answering", disable=not progress) as bar:
        for cid in needed:
            conv = conv_by_id[cid]
            recs = [r for r in todo if r.conversation_id == cid]
            for i in range(0, len(recs), chunk):
                part = recs[i:i + chunk]
                qs = [r.qa.question for r in part]
                if kind in ("base", "mem0", "mem0-oss"):
                    prompts = answer_prompts(conv, banks[cid], qs, encoder, retriever, acfg)
                elif kind == "rag":
                    prompts = rag_prompts(conv, qs, encoder, count,
                                          RagConfig(cfg.eval.rag_chunk_tokens, cfg.eval.rag_num_chunks))
                else:
                    prompts = fullctx_prompts(conv, qs, count, cfg.eval.fullctx_tokens)
                completions = llm.complete(prompts, max_new_tokens=acfg.max_new_tokens)
                recs_out = []
                for r, text in zip(part, completions):
                    ans, marked = extract_answer(text)
                    recs_out.append({"key": f"{r.conversation_id}:{r.qa_index}", "conversation_id": r.conversation_id,
                                     "qa_index": r.qa_index, "category": r.qa.category, "label": r.qa.label,
                                     "question": r.qa.question, "gold": r.qa.answer, "prediction": ans,
                                     "answer_marker": marked, "completion": text,
                                     **score_answer(ans, r.qa.answer, r.qa.category), "j": None})
                _append(out, recs_out, done)
                bar.update(len(part))


def _bank_folder(cfg: RunConfig, run_dir: pathlib.Path, models: _Models) -> pathlib.Path:
    """Where the run's banks are: shared by every run of the same manager, or inside the run
    folder for weights passed in (not identified by a name)."""
    if models.own_weights:
        return run_dir / "banks"
    return mem0_bank_dir(cfg, run_dir) if pipeline(cfg) == "mem0-oss" else bank_dir(cfg, run_dir)


def _bank_report(cfg: RunConfig, run_dir: pathlib.Path, models: _Models, split_convs, records) -> dict | None:
    """Operations applied, memories kept and observations covered, summed over the banks the
    questions were answered from (``memr1_jax.eval.bank_stats``); None without banks."""
    if pipeline(cfg) not in ("base", "mem0", "mem0-oss"):
        return None
    folder = _bank_folder(cfg, run_dir, models)
    ids = {r.conversation_id for r in records}
    stats = []
    for conv in split_convs:
        if conv.id in ids:
            bank = _cached_bank(bank_file(folder, conv))
            if bank is None:
                return None
            stats.append(bank_stats(conv, bank))
    return total(stats) if stats else None


def _append(out, recs: list[dict], done: dict) -> None:
    """Appends prediction records (a later line of the same key replaces an earlier one) durably."""
    for rec in recs:
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        done[rec["key"]] = rec
    out.flush()
    os.fsync(out.fileno())


def _judge(cfg: RunConfig, records, done: dict, pred_path: pathlib.Path, models: _Models, progress: bool) -> str:
    """Labels, with the judge ``cfg.eval.judge``, every answer it has not labelled; returns its name.

    As Mem0's evaluation scores it: j = 1 for CORRECT and 0 otherwise; an output naming
    neither label counts as WRONG and is flagged (``judge_unparsed``)."""
    from tqdm import tqdm

    from memr1_jax.eval.judge import JudgeError, make_judge
    judge = make_judge(cfg.eval.judge, models.named)
    keys = [f"{r.conversation_id}:{r.qa_index}" for r in records]
    todo = [k for k in keys if done[k].get("judge") != judge.name or done[k].get("j") is None]
    if not todo:
        return judge.name
    chunk = max(cfg.rollout.gen_batch_size * 4, 1)
    with open(pred_path, "a") as out, tqdm(total=len(todo), desc=f"judging ({judge.name})",
                                           disable=not progress) as bar:
        for i in range(0, len(todo), chunk):
            part = [done[k] for k in todo[i:i + chunk]]
            failed = None
            try:
                labels = judge([r["question"] for r in part], [r["gold"] for r in part],
                               [r["prediction"] for r in part])
            except JudgeError as e:   # the batch's labelled prompts are kept: a rerun judges the rest
                failed = e
                part, labels = ([x for j, x in enumerate(xs) if j not in e.failed] for xs in (part, e.labels))
            _append(out, [{**r, "j": int(lab == 1), "judge": judge.name, "judge_unparsed": lab is None}
                          for r, lab in zip(part, labels)], done)
            bar.update(len(part))
            if failed is not None:
                raise failed
    return judge.name
