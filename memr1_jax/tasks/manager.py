"""The Memory Manager task: one manager step per training question (its evidence session
over a temporal snapshot bank), each sampled operation list applied to its own copy of the
bank, reward from a frozen Answer Agent answering from it (``agents.rollout.manager_rollouts``),
or, on the changing-facts generator's data, from its gold operations (``task.manager_reward``);
``task.manager_sft`` trains the gold completions themselves (the supervised warm start)."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import jax
import numpy as np

from memr1_jax.agents.memory_manager import decided_by_rule, gold_completion
from memr1_jax.agents.rollout import (ManagerEpisodeSpec, manager_episode_specs, manager_gold_episodes,
                                      manager_counterfactual_specs, manager_rollouts, manager_sensitive_specs,
                                      manager_step_specs)
from memr1_jax.data import question_records
from memr1_jax.data.changing import gold_notes, is_generated
from memr1_jax.files import rewrite_lines
from memr1_jax.tasks.base import Backbone, Log, final_eval_config, load_chat_model, mean_em_f1


class ManagerTask:
    def __init__(self, backbone: Backbone, log: Log, run_dir: pathlib.Path | None = None):
        self.backbone = b = backbone
        cfg = b.cfg
        t = cfg.task
        if t.manager.kind != "llm":
            raise ValueError(f"task.manager.kind={t.manager.kind!r}: the trained manager must be 'llm'")
        self.cfg, self.answer_cfg = t.manager, t.answer
        self.response_len = t.manager.max_new_tokens
        # The frozen Answer Agent whose answers are the reward: a named model, or the
        # backbone's untrained weights (never donated, see Backbone).
        self.answer_llm = load_chat_model(t.frozen_answer_model, cfg, b.llm.mesh) if t.frozen_answer_model else b.llm
        conv_of = {c.id: c for c in b.split.train + b.split.validation}
        cache: dict = {}
        train_recs = question_records(b.split.train)
        val_recs = question_records(b.split.validation)[: cfg.data.val_limit]
        self.train_items, self.val_items = [], []
        for recs, out in ((train_recs, self.train_items), (val_recs, self.val_items)):
            for cid in dict.fromkeys(r.conversation_id for r in recs):
                out.extend(manager_episode_specs(conv_of[cid], [r.qa for r in recs if r.conversation_id == cid],
                                                 b.encoder, b.retriever, t.manager, cache))
        if t.manager_items == "steps":
            self.train_items = [s for c in b.split.train
                                for s in manager_step_specs(c, b.encoder, b.retriever, t.manager, cache)]
            if t.manager_crowd:
                self.train_items += [s for c in b.split.train
                                     for s in manager_step_specs(c, b.encoder, b.retriever, t.manager, crowd=True)]
            if t.manager_counterfactual:
                self.train_items += [s for c in b.split.train
                                     for s in manager_counterfactual_specs(c, gold_notes(c), b.encoder, b.retriever,
                                                                           t.manager)]
            if t.manager_sparse_keep:
                self.train_items += [s for c in b.split.train
                                     for s in manager_step_specs(c, b.encoder, b.retriever, t.manager,
                                                                 keep=t.manager_sparse_keep, seed=cfg.seed)]
        if t.manager.min_score is not None:   # steps the floor decides (nothing shown: ADD) teach nothing
            n_train, n_val = len(self.train_items), len(self.val_items)
            self.train_items = [s for s in self.train_items if not decided_by_rule(s.state, t.manager)]
            self.val_items = [s for s in self.val_items if not decided_by_rule(s.state, t.manager)]
            log(f"task.manager.min_score={t.manager.min_score}: {n_train - len(self.train_items)} train and "
                f"{n_val - len(self.val_items)} validation steps show no memory (ADDed by rule), left out")
        # The generator's gold operations, for its conversations (the gold reward, the warm start
        # and the agreement that validation reports).
        self.gold = {c.id: gold_notes(c) for c in conv_of.values() if is_generated(c.id)}
        self.reward, self.sft = t.manager_reward, t.manager_sft
        if self.reward == "gold" or self.sft:
            missing = sorted({s.conv.id for s in self.train_items if s.conv.id not in self.gold})
            if missing:
                raise ValueError(f"task.manager_reward={self.reward!r} / task.manager_sft={self.sft}: gold operations "
                                 f"exist only for data.path='changing' conversations, not {missing[:3]}")
        if self.sft:   # the rows share one update shape, the sampler's budget
            longest = max(len(b.llm.tokenizer.encode(gold_completion(s.bank, s.state, self.gold[s.conv.id]))) + 1
                          for s in self.train_items)
            if longest > self.response_len:
                raise ValueError(f"task.manager.max_new_tokens={self.response_len} is shorter than the longest gold "
                                 f"completion ({longest} tokens with the stop token): raise it")
        log(f"manager episodes: {len(self.train_items)} train, {len(self.val_items)} validation "
            f"({len(cache)} snapshot banks); frozen Answer Agent: {t.frozen_answer_model or cfg.model.name}")
        if t.sensitive_only:
            self.train_items = self._sensitive(self.train_items, log, run_dir)
        if not self.train_items:
            raise ValueError(f"data.path={cfg.data.path!r}: no usable training questions for the manager task")

    def _sensitive(self, specs: list[ManagerEpisodeSpec], log: Log, run_dir: pathlib.Path | None):
        b, t = self.backbone, self.backbone.cfg.task
        if 0 < t.sensitive_pool < len(specs):
            pick = np.sort(np.random.default_rng(b.cfg.seed).choice(len(specs), t.sensitive_pool, replace=False))
            specs = [specs[i] for i in pick]
        kept, stats = manager_sensitive_specs(self.answer_llm, self.answer_llm.params, specs, b.encoder,
                                              b.retriever, self.cfg, self.answer_cfg)
        if run_dir is not None and jax.process_index() == 0:   # which were kept and why, for the record
            rewrite_lines(run_dir / "sensitive_episodes.jsonl", (json.dumps(x) for x in stats))
        if not kept:
            raise ValueError(f"task.sensitive_only: none of the {len(stats)} training episodes examined changes "
                             "the frozen agent's reward between ADD-all and unchanged banks; raise "
                             "task.sensitive_pool or turn the filter off")
        log(f"manager episodes whose reward depends on the bank: {len(kept)} of {len(stats)} "
            f"(mean reward ADD-all {np.mean([x['reward_add_all'] for x in stats]):.3f}, "
            f"unchanged {np.mean([x['reward_unchanged'] for x in stats]):.3f})")
        return kept

    def rollouts(self, params: Any, items: Sequence[ManagerEpisodeSpec], rng, group: int, temperature: float):
        if self.sft:
            return manager_gold_episodes(self.backbone.llm, items, self.gold)
        return self._sampled(params, items, rng, group, temperature, answer=self.reward == "answer")

    def _sampled(self, params, items, rng, group: int, temperature: float, answer: bool):
        b = self.backbone
        return manager_rollouts(b.llm, params, self.answer_llm if answer else None, self.answer_llm.params, items,
                                b.encoder, b.retriever, self.cfg, self.answer_cfg, group, b.sampling(temperature),
                                rng, gold=self.gold, reward=self.reward)

    def step_metrics(self, episodes) -> dict[str, float]:
        infos = [e.info for e in episodes]
        out = {"parse_rate": float(np.mean([i["parsed"] for i in infos]))}
        answered = [i for i in infos if np.isfinite(i["em"])]   # none with the gold reward or the warm start
        if answered:
            out.update(mean_em_f1(answered))
        if all("gold_agreement" in i for i in infos):
            out["gold_agreement"] = float(np.mean([i["gold_agreement"] for i in infos]))
        return out

    def validate(self, params: Any) -> dict:
        """The greedy manager on the validation episodes: the frozen agent's mean EM / F1 (F1 is
        the score) and the operations applied per step (a collapse to NONE shows there long
        before a few answers' F1 moves)."""
        if not self.val_items:
            return {"score": 0.0, "em": 0.0, "f1": 0.0, "n": 0}
        import jax
        eps = self._sampled(params, self.val_items, jax.random.PRNGKey(0), 1, 0.0, answer=True)
        m = mean_em_f1([e.info for e in eps])
        applied = [e.info["applied"] for e in eps]
        out = {"score": m["f1_mean"], "em": m["em_mean"], "f1": m["f1_mean"], "n": len(eps),
               "parsed": float(np.mean([e.info["parsed"] for e in eps])),
               "applied": float(np.mean([len(a) - a.count("NONE") for a in applied])),
               "adds": float(np.mean([a.count("ADD") for a in applied])),
               "f1_per_item": [e.info["f1"] for e in eps]}
        if all("gold_agreement" in e.info for e in eps):
            out["gold_agreement"] = float(np.mean([e.info["gold_agreement"] for e in eps]))
            out["gold_per_item"] = [e.info["gold_agreement"] for e in eps]
            if self.backbone.cfg.task.gold_scored:   # the checkpoint kept is the one the run optimises for
                out["score"] = out["gold_agreement"]
        return out

    def final_evaluation(self, params: Any, run_dir: pathlib.Path) -> dict[str, dict]:
        """Banks built by the trained manager (and the untrained one), answered by the frozen agent."""
        from memr1_jax.eval.run import evaluate
        b = self.backbone
        systems = [("trained", params)] + ([("base", b.llm.params)] if b.cfg.eval.base_too else [])
        return {tag: evaluate(final_eval_config(b.cfg, run_dir, tag, {"eval.manager": "llm"}), progress=False,
                              answer_llm=self.answer_llm, manager_llm=b.with_params(p), encoder=b.encoder,
                              extract_llm=None if b.cfg.data.extract_model else b.llm)
                for tag, p in systems}
