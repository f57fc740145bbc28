"""``python -m memr1_jax.evaluate``: LoCoMo-style evaluation of a memory system.

Builds memory for each conversation of the chosen split (systems base / mem0; from the
data's facts, or facts extracted from the dialogue with --facts extract), or
retrieves raw dialogue (rag), or reads the whole dialogue (fullctx), answers every
question with the backbone, and reports F1 / BLEU-1 / EM / LoCoMo-F1 / J per question
type (``memr1_jax.eval.run``). An interrupted run resumes where it stopped.

Systems (all on the same backbone; several joined by commas are evaluated in turn on the
same questions and compared with the first: the default is memory-r1,memory-r1@add-all,base,rag;
SYSTEM@MANAGER builds that system's banks with --manager MANAGER: memory-r1@add-all is the trained
Answer Agent on banks holding every observation, what the trained Memory Manager is measured against):
  memory-r1       the Memory-R1 pipeline with the trained agents that ship with the package
                  (memr1_jax/trained: LoRA adapters of the Memory Manager and the Answer
                  Agent, with the settings they were trained for)
  memory-r1:PATH  the same with the agents of a trained-pipeline folder (python -m
                  memr1_jax.pipeline writes one)
  base            the Memory-R1 pipeline with untrained agents: LLM memory manager,
                  Answer Agent prompt with memory distillation
  mem0            the same LLM memory manager, Mem0's answer prompt (no distillation)
  mem0-oss        real Mem0 (pip install mem0ai): Mem0's own add pipeline with the backbone
                  and encoder served to it on a loopback port; Mem0's answer prompt
  rag             top chunks of raw dialogue, no memory manager
  fullctx         the dialogue truncated (from the start) to the context budget
  checkpoint:PATH the base pipeline with the model weights in PATH (an HF folder,
                  e.g. one exported by memr1_jax.train)

The flags below are shorthands for keys of the run config (``memr1_jax.config``, the
schema ``train`` uses); ``--config FILE``, ``--config.KEY=VALUE`` and ``--print_config``
work as in ``train``. Defaults: ``memr1_jax.config.evaluation_defaults()``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from memr1_jax import compile_cache
from memr1_jax.config import (DATA_FORMATS, MAIN_JOB_SYSTEMS, MANAGER_KINDS, SPLITS, ConfigError, RunConfig,
                              evaluation_defaults, override, resolve, split_config_args, to_json)
from memr1_jax.data.locomo import LocomoFormatError
from memr1_jax.eval.judge import JudgeError
from memr1_jax.eval.systems import evaluate_systems
from memr1_jax.files import FolderInUse, safe_name
from memr1_jax.run.preemption import INTERRUPT_EXIT_CODE
from memr1_jax.trained import pipeline_of_system

# flag -> run-config key
FLAGS = {
    "data": "data.path", "split": "eval.split", "model": "model.name", "system": "eval.system",
    "limit": "eval.limit", "judge": "eval.judge", "k_per_speaker": "task.answer.k_per_speaker",
    "manager": "eval.manager", "batch_size": "rollout.gen_batch_size",
    "answer_max_new_tokens": "task.answer.max_new_tokens", "manager_max_new_tokens": "task.manager.max_new_tokens",
    "manager_model": "eval.manager_model", "fullctx_tokens": "eval.fullctx_tokens",
    "answer_prompt": "task.answer.prompt", "run_dir": "eval.run_dir", "encoder": "model.encoder",
    "format": "data.format", "train_ids": "data.train_ids", "validation_ids": "data.validation_ids",
    "facts": "data.facts", "extract_model": "data.extract_model",
    "mem0_messages_per_add": "eval.mem0_messages_per_add", "speculative_tokens": "rollout.speculative_tokens",
}


def _parser(d: RunConfig) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m memr1_jax.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="'embedded' (default), 'changing' / 'changing-people' (the changing-facts "
                   "generator), a LoCoMo-format path (folder of per-conversation files, or locomo10.json), a "
                   "LongMemEval JSON file or an MSC-Self-Instruct JSONL file; sources join with +")
    p.add_argument("--format", choices=DATA_FORMATS, help="the data's format (default auto: from the file)")
    p.add_argument("--split", choices=SPLITS, help=f"default {d.eval.split}; all: every conversation")
    p.add_argument("--train-ids", help="comma-separated conversation ids of the train split (default: conv-26 "
                   "for LoCoMo; data without the paper's ids is all test)")
    p.add_argument("--validation-ids", help="comma-separated conversation ids of the validation split "
                   "(default: conv-30 for LoCoMo)")
    p.add_argument("--facts", choices=("observations", "extract"),
                   help="base / mem0: what the Memory Manager reads: the data's observations (default) or facts "
                   "extracted from the dialogue by the model (cached in data.facts_cache)")
    p.add_argument("--extract-model", help="--facts extract: the extracting model (default: --model)")
    p.add_argument("--model", help=f"registry preset or model folder (default {d.model.name})")
    p.add_argument("--system", help="memory-r1[:PATH] | base | mem0 | mem0-oss | rag | fullctx | checkpoint:PATH, or several "
                   f"joined by commas (default {d.eval.system})")
    p.add_argument("--mem0-messages-per-add", type=int, help="mem0-oss: messages per Mem0 add call "
                   f"(default {d.eval.mem0_messages_per_add}, as Mem0's LoCoMo evaluation)")
    p.add_argument("--limit", type=int, help=f"first N questions of the split (default {d.eval.limit}; 0: all)")
    p.add_argument("--judge", help="none (default: J is n/a) | openai (endpoint from $MEMR1_JUDGE_BASE_URL, "
                   "$MEMR1_JUDGE_API_KEY, $MEMR1_JUDGE_MODEL) | a registry model name")
    p.add_argument("--k-per-speaker", type=int,
                   help=f"memories retrieved per speaker (default {d.task.answer.k_per_speaker}; the paper uses 30)")
    p.add_argument("--manager", choices=MANAGER_KINDS, help="base / mem0 memory construction")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--speculative-tokens", type=int, help="greedy decoding drafts this many tokens by prompt "
                   f"lookup and verifies them in one pass (default {d.rollout.speculative_tokens}; 0: off)")
    p.add_argument("--answer-max-new-tokens", type=int)
    p.add_argument("--manager-max-new-tokens", type=int)
    p.add_argument("--manager-model", help="base / mem0: the model that builds the banks (registry preset or "
                   "model folder, e.g. runs/train/<run>/hf of a trained manager); default: --model. "
                   "--model stays the Answer Agent")
    p.add_argument("--fullctx-tokens", type=int)
    p.add_argument("--answer-prompt", choices=("full", "compact"),
                   help="Answer Agent prompt of base / checkpoint runs (default full: the paper's)")
    p.add_argument("--encoder", choices=("minilm", "hashing"), help="retrieval encoder (hashing: tests only)")
    p.add_argument("--run-dir", help="output folder (default: runs/evaluate/<derived from config>)")
    return p


def _layers(argv) -> tuple:
    """(config file, flag keys, dotted keys, --print_config) of a command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path, dotted, show, rest = split_config_args(argv)
    args = vars(_parser(resolve(path, [], evaluation_defaults())).parse_args(rest))
    flags = {FLAGS[k]: v for k, v in args.items() if v is not None}
    if flags.get("eval.judge", "").lower() == "none":
        flags["eval.judge"] = ""
    return path, flags, dotted, show


def _compose(path, flags: dict, dotted, settings: dict | None = None) -> RunConfig:
    """The config file (or the defaults), then ``settings``, the flags and the dotted keys."""
    cfg = override(resolve(path, [], evaluation_defaults()), settings or {})
    return override(override(cfg, flags), dict(dotted), from_strings=True)


def parse_args(argv=None) -> tuple[RunConfig, bool]:
    """(the resolved run config, whether --print_config was given)."""
    path, flags, dotted, show = _layers(argv)
    return _compose(path, flags, dotted), show


def system_configs(argv=None) -> tuple[list[RunConfig], bool]:
    """One resolved config per system of eval.system, and --print_config. memory-r1[:PATH] sets
    the keys its trained agents need (``memr1_jax.trained``) over the config file or the
    defaults, beneath the flags and dotted keys; with several systems an eval.run_dir holds one
    folder per system."""
    path, flags, dotted, show = _layers(argv)
    cfg = _compose(path, flags, dotted)
    systems = cfg.eval.systems
    settings = {}
    for system in {s.partition("@")[0] for s in systems}:
        if system != "memory-r1" and not system.startswith("memory-r1:"):
            continue
        try:
            settings[system] = pipeline_of_system(system, cfg.model.name).settings
        except ValueError as e:
            if cfg.eval.system != MAIN_JOB_SYSTEMS:
                raise ConfigError(f"eval.system {system}: {e}") from None
            # the default comparison over a model without trained agents: the untrained ones and rag
            systems = [s for s in systems if s.partition("@")[0] != "memory-r1"]
            print(f"note: {e}; comparing {','.join(systems)}", file=sys.stderr)
    out = []
    for entry in systems:
        system, _, kind = entry.partition("@")   # SYSTEM@MANAGER: that system's banks built by MANAGER
        one = override(_compose(path, flags, dotted, settings.get(system)),
                       {"eval.system": system, **({"eval.manager": kind} if kind else {})})
        if len(systems) > 1 and cfg.eval.run_dir:
            one = override(one, {"eval.run_dir": str(pathlib.Path(cfg.eval.run_dir) / safe_name(entry))})
        out.append(one)
    return out, show


def main(argv=None) -> int:
    try:
        cfgs, show = system_configs(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if show:
        print(to_json(cfgs[0]) if len(cfgs) == 1 else "[\n" + ",\n".join(to_json(c) for c in cfgs) + "\n]")
        return 0
    try:
        compile_cache.enable()
        table = evaluate_systems(cfgs)
    except (LocomoFormatError, FileNotFoundError, FolderInUse, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except JudgeError as e:   # the labels it did get are saved; a rerun asks only for the rest
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the predictions written so far are kept; rerun the same command to continue",
              file=sys.stderr)
        return INTERRUPT_EXIT_CODE
    if len(cfgs) > 1:
        print(f"\n{len(cfgs)} systems on the same questions ({cfgs[0].data.path}, {cfgs[0].eval.split}):\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
