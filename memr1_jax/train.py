"""``python -m memr1_jax.train``: RL training (GRPO or PPO) of a Memory-R1 agent.

    python -m memr1_jax.train                                        # embedded default (CPU, ~10 min)
    python -m memr1_jax.train --config configs/tiny_cpu.py --config.run_dir=runs/train/t
    python -m memr1_jax.train --config configs/memory_manager_grpo_cpu.py --config.rl.beta=0.04
    python -m memr1_jax.train --config configs/tiny_cpu.py --print_config
    python -m memr1_jax.train --export runs/train/<run> [--step N]  # checkpoint -> <run>/hf (+ adapter/ with LoRA)

``--config FILE`` names a Python file whose ``get_config()`` returns a ``memr1_jax.config.RunConfig``
(default: ``memr1_jax.config.default_config()``); ``--config.KEY=VALUE`` sets any field of it.

Each step: the task's rollouts of the current policy (``rl.group_size`` samples for each of
``rollout.questions_per_step`` items; ``memr1_jax.tasks``) -> RLBatch -> one ``rl.update`` call.
Validation every ``eval_every`` steps (and at step 0) scores the greedy policy; the best score
selects the weights that are exported (``hf/``) and evaluated on the test split.

Resume and pre-emption: a checkpoint is saved every ``save_every`` steps. Rerunning the same
command with the same ``--config.run_dir`` restores the latest one (params, optimiser and
critic state, RNG, best-so-far), drops the log rows written after it and continues, so the
logs end as those of an uninterrupted run. On SIGTERM the current step is finished, a
checkpoint is saved and the process exits with status 143; Ctrl-C does the same and exits with
130 (a second Ctrl-C stops at once, losing only the step in progress).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import pathlib
import random
import shutil
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from memr1_jax import compile_cache
from memr1_jax.agents.rollout import pack_episodes
from memr1_jax.config import ConfigError, RunConfig, default_config, from_dict, resolve, split_config_args, to_json
from memr1_jax.files import FolderInUse, atomic_write_text, folder_lock
from memr1_jax.rl.checkpoint import CheckpointError, RLCheckpointer
from memr1_jax.parallel.mesh import check_spans_processes, maybe_initialize_distributed, mesh_context
from memr1_jax.rl.train_state import init_sharded_train_state, init_train_state
from memr1_jax.rl.update import compute_logprobs, effective_params, make_update_fn
from memr1_jax.run.guards import EXIT_CODE as DIVERGED_EXIT_CODE
from memr1_jax.run.guards import TrainingDiverged, check_finite_weights, check_rewards, check_update
from memr1_jax.run.hooks import Hooks, StepInfo
from memr1_jax.run.preemption import EXIT_CODE as PREEMPTED_EXIT_CODE
from memr1_jax.run.preemption import INTERRUPT_EXIT_CODE
from memr1_jax.run.preemption import PreemptionGuard
from memr1_jax.run.records import RunRecords
from memr1_jax.sampling.sampler import fetch
from memr1_jax.tasks import load_backbone, make_task


def run_dir_of(cfg: RunConfig) -> pathlib.Path:
    if cfg.run_dir:
        return pathlib.Path(cfg.run_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return pathlib.Path(cfg.run_root) / f"{cfg.name}-{stamp}"


def checkpoint_root(cfg: RunConfig, run_dir: pathlib.Path, name: str) -> str:
    """``<run_dir>/<name>``, or ``<checkpoint_dir>/<name>`` (a gs:// URL or a folder every host
    shares: a multi-host run's checkpoint is written by all its processes)."""
    if cfg.checkpoint_dir:
        return cfg.checkpoint_dir.rstrip("/") + "/" + name
    return str(run_dir / name)


def data_order(cfg: RunConfig, n_items: int) -> list[int]:
    """The item order, a function of the seed alone (so a resumed run draws the same items).
    ``data.train_pool``: a small fixed pool, so every question comes back every few steps and
    on a CPU budget the reward curve measures learning rather than which questions were drawn."""
    order = list(range(n_items))
    random.Random(cfg.seed).shuffle(order)
    return order[: cfg.data.train_pool] if cfg.data.train_pool else order


def train(cfg: RunConfig, progress: bool = False) -> dict:
    """Runs (or resumes) the whole training; returns a summary (also in summary.json).
    SIGTERM from the start to the last step stops the run after the step in progress."""
    guard = PreemptionGuard().__enter__()
    try:
        return _train(cfg, progress, guard)
    finally:
        guard.__exit__(None, None, None)


def _train(cfg: RunConfig, progress: bool, guard: PreemptionGuard) -> dict:
    t_start = time.time()
    d = cfg.distributed
    maybe_initialize_distributed(coordinator=d.coordinator, num_processes=d.num_processes, process_id=d.process_id,
                                 cpu_collectives=d.cpu_collectives)
    check_spans_processes(cfg.mesh, jax.device_count(), jax.process_count())   # before any model or folder
    run_dir = run_dir_of(cfg)
    # One writer per run folder (process 0 writes for all processes of a run).
    lock = (folder_lock(run_dir, "training run folder", scaffolding=("config.json", "train.log"))
            if jax.process_index() == 0 else contextlib.nullcontext())
    with lock:
        return _train_in(cfg, run_dir, progress, guard, t_start)


def _train_in(cfg: RunConfig, run_dir: pathlib.Path, progress: bool, guard: PreemptionGuard, t_start: float) -> dict:
    rec = RunRecords(run_dir, cfg, progress, primary=jax.process_index() == 0)
    log = rec.log
    backbone = load_backbone(cfg)
    task = make_task(backbone, log, run_dir)
    model_cfg, base_params, mesh = backbone.llm.cfg, backbone.llm.params, backbone.llm.mesh
    rl = cfg.update_config(model_cfg.num_layers)
    state = _init_state(cfg, model_cfg, rl, base_params, mesh)
    ckpt = RLCheckpointer(checkpoint_root(cfg, run_dir, "checkpoints"), save_every=cfg.save_every, max_to_keep=2,
                          async_save=False)
    best_ckpt = RLCheckpointer(checkpoint_root(cfg, run_dir, "best"), save_every=1, max_to_keep=1, async_save=False)
    start, best = 0, {"score": -1.0, "step": 0}
    restored = _restore_latest_good(ckpt, state, run_dir, log)
    if restored is not None:
        state, start = restored.state, restored.step
        best = restored.meta.get("extra", {}).get("best", best)
    for s in best_ckpt.all_steps():   # a best saved after the checkpoint is redone
        if s > start:
            best_ckpt.manager.delete(s)
    rec.start(start)
    log(f"model {cfg.model.name}; task {cfg.task.agent}, {rl.algorithm}, "
        f"{'LoRA r=%d' % rl.lora.rank if rl.lora else 'full fine-tuning'}; {len(task.train_items)} training items"
        + (f"; resumed from the checkpoint of step {start}" if start else ""))
    order = data_order(cfg, len(task.train_items))
    updater = make_update_fn(model_cfg, rl, mesh, cfg.mesh.rules)
    pad_id = backbone.llm.tokenizer.pad_id if backbone.llm.tokenizer.pad_id is not None else 0
    rollout_key = jax.random.PRNGKey(cfg.seed + 1)

    def validate(step: int, state) -> None:
        t0 = time.time()
        v = task.validate(effective_params(rl, state) if step else base_params)
        rec.validated(step, v, time.time() - t0)
        improved = v["score"] > best["score"]
        if improved:
            best.update(score=v["score"], step=step)
            if step > 0:
                best_ckpt.save_now(step, state, model_cfg=model_cfg, rl_cfg=rl, extra={"validation": v})
        ops = f", {v['applied']:.2f} ops ({v['adds']:.2f} ADD) per step" if "applied" in v else ""
        ops += f", gold agreement {v['gold_agreement']:.3f}" if "gold_agreement" in v else ""
        log(f"validation @ step {step}: F1 {100 * v['f1']:.1f} EM {100 * v['em']:.1f} (n={v['n']}){ops}"
            f"{' *best*' if improved else ''} [{time.time() - t0:.0f}s]")

    def save(step: int, state) -> None:
        cursor = step * cfg.rollout.questions_per_step
        ckpt.save_now(step, state, data_cursor=cursor, model_cfg=model_cfg, rl_cfg=rl, extra={"best": dict(best)})

    def log_step(info: StepInfo) -> None:
        m, t = info.metrics, info.timings
        rec.step(info.step, m, t, [{"reward": e.reward, **e.info} for e in info.episodes[: cfg.rollout.samples_logged]])
        answered = f"EM {m['em_mean']:.2f}, F1 {m['f1_mean']:.2f}" if "em_mean" in m else "no answers"
        gold = f", gold {m['gold_agreement']:.2f}" if "gold_agreement" in m else ""
        log(f"step {info.step}/{cfg.steps}: reward {m['reward_mean']:.3f} ({answered}{gold}) "
            f"len {m['response_length']:.1f} T={t['seq_len']} "
            f"kl {m.get('kl_old_ref', m.get('kl', 0.0)):.4f} [{t['rollout_s']:.0f}s rollout, {t['step_s']:.0f}s step]")

    hooks = Hooks()
    hooks.add(log_step)
    hooks.add(lambda info: validate(info.step, info.state), every=cfg.eval_every)
    hooks.add(lambda info: save(info.step, info.state), every=cfg.save_every)

    preempted = False
    if start == 0:
        validate(0, state)
    try:
        for step in range(start + 1, cfg.steps + 1):
            t0 = time.time()
            items = [task.train_items[order[i % len(order)]]
                     for i in range((step - 1) * cfg.rollout.questions_per_step, step * cfg.rollout.questions_per_step)]
            key = jax.random.fold_in(rollout_key, step)   # a function of the step: resumable
            eps = task.rollouts(effective_params(rl, state), items, key, rl.group_size, rl.temperature)
            t_roll = time.time() - t0
            check_rewards(step, [e.reward for e in eps], [str(e.info.get("question", ""))[:80] for e in eps])
            batch = pack_episodes(eps, pad_id, response_len=task.response_len)
            if cfg.rollout.old_logprobs_from_sampler:
                batch = batch.replace(old_logprobs=batch.sampler_logprobs, sampler_logprobs=None)
            if rl.beta and rl.lora is None:   # with LoRA the update scores the reference from the base
                with mesh_context(mesh, cfg.mesh.rules):
                    batch = batch.replace(ref_logprobs=compute_logprobs(
                        base_params, updater.shard_batch(batch), rl.micro_batch_size or batch.tokens.shape[0],
                        model_cfg=model_cfg, chunk_size=rl.logprob_chunk, temperature=rl.temperature,
                        group=rl.group_size if rl.shared_prompt else 0))
            state, metrics = updater(state, batch)
            metrics = {k: float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0}
            metrics.update(task.step_metrics(eps))
            timings = {"rollout_s": t_roll, "step_s": time.time() - t0, "seq_len": int(batch.tokens.shape[1])}
            try:
                check_update(step, metrics, cfg.guard)
            except TrainingDiverged:
                log_step(StepInfo(step, state, metrics, timings, eps))   # the bad step's row, for diagnosis
                raise
            hooks.run(StepInfo(step, state, metrics, timings, eps), force=step == cfg.steps)
            if guard.agreed(step) and step < cfg.steps:   # agreed: a collective, so called first
                if step % cfg.save_every:
                    save(step, state)
                every = f" (all {jax.process_count()} processes)" if jax.process_count() > 1 else ""
                log(f"{guard.name}: stopped after step {step}{every}, checkpoint saved in {ckpt.directory}; "
                    "rerun the same command to resume")
                preempted = True
                break
    except TrainingDiverged as e:
        last = ckpt.latest_step()
        log(f"stopped: {e}. Nothing was saved or exported for this step; the last good checkpoint is "
            + (f"step {last} in {ckpt.directory}" if last is not None else "none: no step was saved before it"))
        for c in (ckpt, best_ckpt):
            c.close()
        rec.close()
        raise
    guard.__exit__(None, None, None)   # from here on SIGTERM ends the process as usual
    ckpt.close()
    summary = {"run_dir": str(run_dir), "rewards": [h["reward_mean"] for h in rec.history],
               "validation": rec.validation, "best": dict(best), "preempted": preempted,
               "exit_code": guard.exit_code if preempted else 0}
    if not preempted:
        summary.update(_finish(cfg, task, rec, best, best_ckpt, state, rl))
    best_ckpt.close()
    summary["wall_s"] = time.time() - t_start
    rec.write_json("summary.json", summary)
    log(f"{'stopped' if preempted else 'done'} in {summary['wall_s']:.0f}s; run dir {run_dir}")
    rec.close()
    return summary


def _restore_latest_good(ckpt: RLCheckpointer, state, run_dir: pathlib.Path, log):
    """The newest checkpoint that restores intact; a corrupt one is moved to
    ``<run>/corrupt_checkpoints/`` with a warning (so the rerun does not trip on it again)."""
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            return ckpt.restore(state, step)
        except CheckpointError as e:
            if "://" in ckpt.directory:   # an object store: nothing to move it to
                ckpt.manager.delete(step)
                log(f"warning: {e}; deleted it, trying the one before")
                continue
            aside = run_dir / "corrupt_checkpoints" / f"{step}-{int(time.time())}"
            if jax.process_index() == 0:
                aside.parent.mkdir(exist_ok=True)
                shutil.move(pathlib.Path(ckpt.directory) / str(step), aside)
            if jax.process_count() > 1:   # the others list the steps only once it has moved
                multihost_utils.sync_global_devices(f"corrupt checkpoint {step} set aside")
            ckpt.manager.reload()
            log(f"warning: {e}; moved it to {aside}, trying the one before")
    return None


def _init_state(cfg: RunConfig, model_cfg, rl, params, mesh):
    key = jax.random.PRNGKey(cfg.seed)
    if mesh is None:
        return init_train_state(model_cfg, rl, params, key)
    # Every leaf created with its target sharding (no replicated copy of the optimiser state).
    return init_sharded_train_state(model_cfg, rl, params, key, mesh, cfg.mesh.rules)


def _finish(cfg: RunConfig, task, rec: RunRecords, best: dict, best_ckpt: RLCheckpointer, state, rl) -> dict:
    """Curves, export of the selected weights and their final evaluation."""
    rec.plot_curves()
    what = "gold agreement" if cfg.task.gold_scored else "F1"
    rec.log(f"best validation {what} {100 * best['score']:.1f} at step {best['step']} (step 0 = untrained)")
    backbone = task.backbone
    out = {}
    if best["step"] > 0:
        best_state = best_ckpt.restore(state, best["step"]).state
        params = fetch(effective_params(rl, best_state))
        if rl.lora is not None and rec.primary:   # the adapters alone: a few MB over the named base model
            from memr1_jax.weights.adapters import save_adapters
            out["adapter"] = str(save_adapters(rec.dir / "adapter", fetch(best_state.params), cfg.model.name,
                                               rl.lora.rank, rl.lora.alpha))
            rec.log(f"exported the best step's LoRA adapters to {out['adapter']} (a model name wherever one is taken)")
    else:
        params = fetch(backbone.llm.params)
    if cfg.export_hf and rec.primary:
        from memr1_jax.weights.safetensors_loader import save_hf_checkpoint
        hf = rec.dir / "hf"
        check_finite_weights(params, str(hf))
        save_hf_checkpoint(backbone.llm.cfg, params, hf)
        backbone.llm.tokenizer.save(hf)
        out["hf"] = str(hf)
        how = f"--system checkpoint:{hf}" if cfg.task.agent == "answer" else f"--manager-model {hf}"
        rec.log(f"exported best weights to {hf} (evaluate with {how})")
    if cfg.eval.after_training and jax.process_count() > 1:
        rec.log("final evaluation skipped: it writes from one process; evaluate the exported hf/ with "
                "python -m memr1_jax.evaluate")
    elif cfg.eval.after_training:
        tables = task.final_evaluation(params, rec.dir)
        lines = [f"# final evaluation: {cfg.data.path} {cfg.eval.split}, first {cfg.eval.limit or 'all'} questions",
                 "", "| system | type | n | F1 | B1 | EM |", "|---|---|---|---|---|---|"]
        for tag, agg in tables.items():
            for label, row in agg.items():
                lines.append(f"| {tag} | {label} | {row['count']} | {100 * row['f1']:.2f} | "
                             f"{100 * row['b1']:.2f} | {100 * row['em']:.2f} |")
        atomic_write_text(rec.dir / "final_eval.md", "\n".join(lines) + "\n")
        rec.log("\n".join(lines))
        out["final_eval"] = {tag: {k: {m: v.get(m) for m in ("count", "f1", "em", "b1")} for k, v in t.items()}
                             for tag, t in tables.items()}
    return out


def export_checkpoint(run_dir: str | pathlib.Path, step: int | None = None) -> pathlib.Path:
    """Write the weights of one saved checkpoint of a run as an HF folder ``<run>/hf``.

    For runs stopped before their end. ``step`` defaults to the best validated step saved
    (``best/``), else the latest checkpoint."""
    from memr1_jax.models.registry import load_model
    from memr1_jax.weights.safetensors_loader import save_hf_checkpoint
    run = pathlib.Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: not a training run folder (no config.json)")
    cfg = from_dict(json.loads(cfg_path.read_text()))
    ckpts = {name: RLCheckpointer(checkpoint_root(cfg, run, name), async_save=False) for name in ("checkpoints", "best")}
    on_disk = {s: c for c in ckpts.values() for s in c.all_steps()}
    if not on_disk:
        raise FileNotFoundError(f"{run / 'checkpoints'}: no checkpoint saved")
    step = step if step is not None else (max(ckpts["best"].all_steps(), default=None) or max(on_disk))
    if step not in on_disk:
        raise ValueError(f"--step {step}: no checkpoint of that step in {run} (have {sorted(on_disk)})")
    m = load_model(cfg.model.name, dtype=cfg.model.param_dtype)
    model_cfg = m.cfg.replace(remat=cfg.model.remat, dtype=cfg.model.dtype, attention=cfg.model.attention,
                              attention_block=cfg.model.attention_block)
    rl = cfg.update_config(model_cfg.num_layers)
    restored = on_disk[step].restore(init_train_state(model_cfg, rl, m.params, jax.random.PRNGKey(cfg.seed)), step)
    for c in ckpts.values():
        c.close()
    hf = run / "hf"
    params = fetch(effective_params(rl, restored.state))
    check_finite_weights(params, f"{hf} (step {step})")
    save_hf_checkpoint(model_cfg, params, hf)
    m.tokenizer.save(hf)
    print(f"exported step {step} of {run} to {hf}")
    if rl.lora is not None:
        from memr1_jax.weights.adapters import save_adapters
        adapter = save_adapters(run / "adapter", fetch(restored.state.params), cfg.model.name, rl.lora.rank,
                                rl.lora.alpha)
        print(f"exported step {step}'s LoRA adapters to {adapter}")
    return hf


def parse_args(argv=None) -> tuple[RunConfig, bool]:
    """(the resolved run config, whether --print_config was given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        raise SystemExit(0)
    path, overrides, show, rest = split_config_args(argv)
    if rest:
        raise ConfigError(f"unknown argument {rest[0]!r} (expected --config FILE, --config.KEY=VALUE, "
                          "--print_config or --export RUN_DIR)")
    return resolve(path, overrides, default_config()), show


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "--export":
            if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--step"):
                raise ValueError("usage: python -m memr1_jax.train --export RUN_DIR [--step N]")
            export_checkpoint(argv[1], int(argv[3]) if len(argv) == 4 else None)
            return 0
        cfg, show = parse_args(argv)
        if show:
            print(to_json(cfg))
            return 0
        compile_cache.enable()
        summary = train(cfg)
    except TrainingDiverged as e:
        print(f"error: training stopped at {e}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    except (ValueError, OSError, FolderInUse) as e:   # OSError: a full disk, a folder not writable (named)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # the second Ctrl-C, or one outside the step loop
        print("\ninterrupted: the step in progress is lost; rerun the same command to resume from the last "
              "checkpoint", file=sys.stderr)
        return INTERRUPT_EXIT_CODE
    return summary.get("exit_code", PREEMPTED_EXIT_CODE if summary["preempted"] else 0)


if __name__ == "__main__":
    sys.exit(main())
