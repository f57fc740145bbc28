"""Regression tests for the probe table of shared/docs/reviews/reliability-probe.md (rows 1a-1c,
1e, 3b-3d, 6c, 7a; training rows 4-5 are in test_guards / test_train_resume, downloads and
text in test_assets_integrity / test_untrusted_text): bad data, corrupt files, hostile ids
and concurrent runs each get a clear error, a warning or the right result."""

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from memr1_jax.config import evaluation_defaults, override
from memr1_jax.data import LocomoFormatError, LocomoWarning, load_locomo, make_embedded_dataset, write_flat, write_nested
from memr1_jax.eval.run import evaluate
from memr1_jax.evaluate import main
from memr1_jax.files import FolderInUse, child, entry_lock, safe_name
from memr1_jax.memory import (BankFileError, Event, HashingTestEncoder, MemoryOp, apply, empty_bank, load_bank,
                              save_bank)
from memr1_jax.data.locomo import conversation_to_nested
from memr1_jax.memory import persistence

REPO = pathlib.Path(__file__).resolve().parents[1]
ENC = HashingTestEncoder(dim=16)


def _data(tmp_path, edit=None, name="d.json") -> pathlib.Path:
    path = tmp_path / name
    write_nested(make_embedded_dataset(), path)
    if edit:
        d = json.loads(path.read_text())
        edit(d)
        path.write_text(json.dumps(d))
    return path


def _cfg(data, **kw):
    base = {"model.name": "tiny-llama", "model.encoder": "hashing", "data.path": str(data), "eval.system": "base",
            "eval.manager": "add-all", "eval.limit": 2, "rollout.gen_batch_size": 2, "task.answer.max_new_tokens": 4,
            "task.answer.k_per_speaker": 2}
    return override(evaluation_defaults(), {**base, **kw})


# ---------------------------------------------------------------- 1a, 1b: loader errors name the file
def _deep(n):
    return "[" * n + "]" * n


@pytest.mark.parametrize("content, reason", [
    (b"\xff" + json.dumps([{}]).encode(), r"not UTF-8 text \(invalid byte at offset 0\)"),
    (_deep(200_000).encode(), r"nested too deeply"),
    (b'{"sample_id": "x", "conversation": {}, "qa": [{"answer": NaN}]}', r"NaN is not a JSON number"),
    (b'[{"sample_id": "x", "conversation": {"speaker_a": "\\ud800", "speaker_b": "B"}, "qa": []}]',
     r"key '\[0\].conversation.speaker_a': text holds a lone surrogate"),
])
def test_unreadable_data_is_a_locomo_format_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "41.json"
    path.write_bytes(content)
    with pytest.raises(LocomoFormatError, match=rf"{path}: .*{reason}"):
        load_locomo(path)


def test_cli_bad_data_prints_error_exits_2_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff" + _data(tmp_path).read_bytes())
    assert main(["--data", str(bad), "--model", "tiny-llama", "--encoder", "hashing"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    missing = _data(tmp_path, lambda d: d[2]["qa"][0].pop("question"), "missing.json")
    assert main(["--data", str(missing), "--model", "tiny-llama", "--encoder", "hashing"]) == 2
    assert "key 'qa[0].question': missing" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 1c: silent drops become warnings
def test_facts_under_an_unknown_speaker_warn(tmp_path):
    def rename(d):
        obs = d[2]["observation"]["session_1_observation"]
        obs["Someone Else"] = obs.pop("Leah")
    with pytest.warns(LocomoWarning, match=r"session 1 has observations under \['Someone Else'\], neither speaker_a"):
        load_locomo(_data(tmp_path, rename))


def test_nothing_to_evaluate_warns(tmp_path):
    def adversarial_only(d):
        for conv in d:
            for q in conv["qa"]:
                q["category"] = 5
    data = _data(tmp_path, adversarial_only)
    with pytest.warns(UserWarning, match="no questions to evaluate in the test split"):
        agg = evaluate(_cfg(data, **{"eval.run_dir": str(tmp_path / "run")}), progress=False)
    assert agg["overall"]["count"] == 0


# ---------------------------------------------------------------- 1e: content-addressed results
def test_an_edited_data_file_is_never_scored_with_old_answers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path)
    evaluate(_cfg(data), progress=False)
    d = json.loads(data.read_text())
    d[2]["qa"][0]["answer"] = "CHANGED"
    d[2]["observation"]["session_1_observation"]["Leah"][0][0] = "Leah keeps a red kite."
    data.write_text(json.dumps(d))
    evaluate(_cfg(data), progress=False)
    runs = sorted((tmp_path / "runs" / "evaluate").glob("d.json-*"))
    assert len(runs) == 2                              # same path, other content: another run
    golds = {json.loads(x)["gold"] for r in runs for x in (r / "predictions.jsonl").read_text().splitlines()
             if json.loads(x)["key"] == "emb-03:0"}
    assert golds == {"Lisbon", "CHANGED"}
    banks = list((tmp_path / "runs" / "evaluate" / "banks").glob("*/emb-03-*.bank"))
    assert len(banks) == 2                             # the edited conversation's bank is rebuilt


# ---------------------------------------------------------------- 6c: ids from data never leave the folder
def test_a_hostile_sample_id_stays_inside_the_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = "../" * 12 + "tmp/PWNED-" + str(os.getpid())
    data = _data(tmp_path, lambda d: d[2].update(sample_id=evil))
    evaluate(_cfg(data), progress=False)
    assert not pathlib.Path(f"/tmp/PWNED-{os.getpid()}.bank").exists()
    banks = list((tmp_path / "runs" / "evaluate" / "banks").glob("*/*.bank"))
    assert banks and all(b.resolve().is_relative_to(tmp_path) for b in banks)
    assert any(b.name.startswith("tmp_PWNED") for b in banks)
    written = write_flat(load_locomo(data), tmp_path / "flat")
    assert all(p.parent == tmp_path / "flat" for p in written)
    assert safe_name("conv-26") == "conv-26" and safe_name("..") != ".." and "/" not in safe_name("a/b")
    assert safe_name("a/b") != safe_name("a_b")        # unique: the hash of the whole id
    with pytest.raises(ValueError, match="outside"):
        child(tmp_path, "x", suffix="/../../y")


# ---------------------------------------------------------------- 3b-3d: banks
def _raw_bank(path, header: bytes, arrays: bytes = b""):
    digest = hashlib.sha256(header + arrays).digest()
    path.write_bytes(persistence._PREFIX.pack(persistence.MAGIC, len(header), digest) + header + arrays)


def _valid_parts():
    bank, _ = apply(empty_bank(4, capacity=2), [MemoryOp(Event.ADD, None, "a"), MemoryOp(Event.ADD, None, "b")],
                    embed_fn=HashingTestEncoder(dim=4))
    return bank


def _header_and_arrays(tmp_path):
    p = save_bank(_valid_parts(), tmp_path / "ok.bank")
    raw = p.read_bytes()
    _, hlen, _ = persistence._PREFIX.unpack(raw[:persistence._PREFIX.size])
    start = persistence._PREFIX.size
    return json.loads(raw[start:start + hlen]), raw[start + hlen:]


@pytest.mark.parametrize("mutate, reason", [
    (lambda h: h["arrays"][0].update(shape=[-1, 4]), "bad shape"),
    (lambda h: h["arrays"][0].update(shape=[2 ** 50, 4]), "bad shape"),
    (lambda h: h["arrays"][0].update(shape="2,4"), "bad shape"),
    (lambda h: h["arrays"][1].update(shape=[3]), "does not match"),
    (lambda h: h["host"].update(next_id=0), "next_id 0 must exceed every memory id"),
    (lambda h: h["host"].update(next_id=-5), "next_id -5"),
    (lambda h: h["host"]["texts"].update({"7": "ghost"}), "next_id|name different memory ids"),
    (lambda h: h.update(host=[1, 2]), "malformed host section"),
    (lambda h: h["arrays"].pop(), "corrupt array manifest"),
])
def test_hand_made_bank_headers_are_bank_file_errors(tmp_path, mutate, reason):
    header, arrays = _header_and_arrays(tmp_path)
    mutate(header)
    _raw_bank(tmp_path / "x.bank", json.dumps(header).encode(), arrays)
    with pytest.raises(BankFileError, match=rf"x.bank: .*({reason})"):
        load_bank(tmp_path / "x.bank")


def test_a_100k_deep_bank_header_is_a_bank_file_error(tmp_path):
    _raw_bank(tmp_path / "deep.bank", _deep(100_000).encode())
    with pytest.raises(BankFileError, match="deep.bank: corrupt header"):
        load_bank(tmp_path / "deep.bank")


def test_non_finite_embeddings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="non-finite embedding for memory text 'x'"):
        apply(empty_bank(4), [MemoryOp(Event.ADD, None, "x")], embed_fn=lambda texts: np.full((1, 4), np.nan))
    bank = _valid_parts()
    emb = np.array(bank.arrays.embeddings)
    emb[0, 0] = np.nan
    with pytest.raises(ValueError, match="refusing to save a bank with non-finite embeddings"):
        save_bank(dataclasses.replace(bank, arrays=dataclasses.replace(bank.arrays, embeddings=emb)), tmp_path / "nan.bank")
    assert not (tmp_path / "nan.bank").exists()


def test_temp_files_of_dead_savers_are_removed(tmp_path):
    dead = tmp_path / ".b.bank.4194999.abc.tmp"     # above Linux's largest pid: never alive
    alive = tmp_path / f".b.bank.{os.getpid()}.def.tmp"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    save_bank(_valid_parts(), tmp_path / "b.bank")
    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "b.bank"])


def test_a_corrupt_cached_bank_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path)
    first = evaluate(_cfg(data), progress=False)
    bank = next((tmp_path / "runs" / "evaluate" / "banks").glob("*/emb-03-*.bank"))
    bank.write_bytes(bank.read_bytes()[:-7])
    with pytest.warns(UserWarning, match=rf"{bank.name}: truncated or padded.*moved it to .*corrupt"):
        again = evaluate(_cfg(data, **{"eval.limit": 3}), progress=False)   # another run, same banks
    assert load_bank(bank).host.texts and again["overall"]["count"] == 3 and first["overall"]["count"] == 2


# ---------------------------------------------------------------- 7a, 7b: one writer per folder / entry
_HOLD = ("import sys, time; from memr1_jax.files import {fn}\n"
         "with {fn}(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")


def _hold(fn, path, seconds):
    p = subprocess.Popen([sys.executable, "-c", _HOLD.format(fn=fn), str(path), str(seconds)], cwd=REPO,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_evaluation_of_the_same_run_folder_stops_with_a_message(tmp_path, capsys):
    data = _data(tmp_path)
    run = tmp_path / "run"
    holder = _hold("folder_lock", run, 60)
    try:
        with pytest.raises(FolderInUse, match=f"evaluation run folder {run} is in use by another process"):
            evaluate(_cfg(data, **{"eval.run_dir": str(run)}), progress=False)
        assert main(["--data", str(data), "--model", "tiny-llama", "--encoder", "hashing", "--run-dir", str(run),
                     "--system", "base", "--limit", "1"]) == 2
        assert "is in use by another process" in capsys.readouterr().err
        assert not (run / "predictions.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    evaluate(_cfg(data, **{"eval.run_dir": str(run)}), progress=False)   # the lock died with its holder
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 2


def test_a_cache_entry_being_built_is_waited_for(tmp_path):
    entry = tmp_path / "trees" / "m"
    holder = _hold("entry_lock", entry, 1.5)
    t0 = time.time()
    with entry_lock(entry):
        waited = time.time() - t0
    holder.wait()
    assert waited > 0.8


def test_a_second_training_run_in_the_same_folder_stops(tmp_path):
    run = tmp_path / "train"
    holder = _hold("folder_lock", run, 60)
    try:
        p = subprocess.run([sys.executable, "-m", "memr1_jax.train", "--config", "configs/tiny_cpu.py",
                            f"--config.run_dir={run}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 2 and f"training run folder {run} is in use" in p.stderr
    assert not (run / "metrics.jsonl").exists()


# ---------------------------------------------------------------- fuzzing: loader and bank header
import hypothesis
st = hypothesis.strategies

_KEYS = ["sample_id", "conversation", "qa", "observation", "speaker_a", "speaker_b", "session_1",
         "session_1_date_time", "session_1_observation", "question", "answer", "category", "evidence",
         "speaker", "dia_id", "text", "img_url", "session_summary", "event_summary", "events_session_1", "x"]
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["D1:1", "Leah", "1:56 pm on 8 May, 2023"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4),
                                                                inner, max_size=6),
    max_leaves=30)


@functools.lru_cache(maxsize=1)
def _base_json() -> str:
    return json.dumps(conversation_to_nested(make_embedded_dataset()[2]))


@hypothesis.settings(max_examples=1500, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(doc=_json, raw=st.binary(max_size=64), mode=st.sampled_from(["json", "bytes", "graft"]),
                  where=st.sampled_from(["conversation", "qa", "observation", "sample_id", "session_1",
                                         "speaker_a", "session_1_observation"]))
def test_fuzz_the_loader_raises_only_locomo_format_errors(tmp_path_factory, doc, raw, mode, where):
    path = tmp_path_factory.getbasetemp() / "fuzz.json"
    if mode == "json":
        path.write_text(json.dumps(doc))
    elif mode == "bytes":
        path.write_bytes(raw)
    else:   # a real conversation with one field replaced
        conv = json.loads(_base_json())
        target = conv["conversation"] if where.startswith(("session", "speaker")) else conv
        target[where] = doc
        path.write_text(json.dumps([conv]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LocomoWarning)
        try:
            load_locomo(path)
        except LocomoFormatError as e:
            assert str(path) in str(e)


@hypothesis.settings(max_examples=1500, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(section=st.sampled_from(["arrays", "host", "format_version", "texts", "slot_of", "next_id",
                                           "shape", "nbytes", "history"]),
                  value=_json, index=st.integers(0, 5))
def test_fuzz_bank_headers_raise_only_bank_file_errors(tmp_path_factory, section, value, index):
    folder = tmp_path_factory.getbasetemp()
    if not (folder / "ok.bank").exists():
        save_bank(_valid_parts(), folder / "ok.bank")
    raw = (folder / "ok.bank").read_bytes()
    _, hlen, _ = persistence._PREFIX.unpack(raw[:persistence._PREFIX.size])
    start = persistence._PREFIX.size
    header, arrays = json.loads(raw[start:start + hlen]), raw[start + hlen:]
    if section in ("arrays", "host", "format_version"):
        header[section] = value
    elif section in ("shape", "nbytes"):
        header["arrays"][index % len(header["arrays"])][section] = value
    else:
        header["host"][section] = value
    _raw_bank(folder / "fuzz.bank", json.dumps(header).encode(), arrays)
    try:
        load_bank(folder / "fuzz.bank")
    except BankFileError as e:
        assert "fuzz.bank" in str(e)


def test_training_on_bad_data_prints_error_and_leaves_no_run_folder(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff" + _data(tmp_path).read_bytes())
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "memr1_jax.train", "--config", "configs/tiny_cpu.py",
                        f"--config.run_dir={run}", f"--config.data.path={bad}"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and f"{bad}: not UTF-8 text" in p.stderr
    assert "Traceback" not in p.stderr and not run.exists()
