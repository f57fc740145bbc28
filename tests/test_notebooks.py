"""The notebooks in notebooks/, executed top to bottom (nbclient) with small parameters: the
parameters cell (tag "parameters") gets test values appended, as papermill would inject them.
Each notebook ends with a line ``RESULT {json}``; its figures must render."""

import json
import pathlib


import nbformat
import nbclient

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL_TRAIN = {"rollout.questions_per_step": 1, "rl.group_size": 2, "rl.mini_batch_size": None,
               "rl.micro_batch_size": None, "data.val_limit": 1, "rollout.max_prompt_tokens": 384}


def _execute(name: str, params: dict) -> "nbformat.NotebookNode":
    book = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by tests/test_notebooks.py\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    return book


def _outputs(book):
    return [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _result(book) -> dict:
    text = "".join(o.get("text", "") for o in _outputs(book) if o.get("output_type") == "stream")
    (line,) = [x for x in text.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def _figures(book) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(book))


def test_stored_without_outputs():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in book.cells if c.cell_type == "code"), path.name
        assert sum("parameters" in c.metadata.get("tags", []) for c in book.cells) == 1, path.name


def test_quickstart(tmp_path):
    book = _execute("quickstart.ipynb", {
        "EVAL_LIMIT": 1, "EVAL_MANAGER": "add-all", "MANAGER_MAX_NEW_TOKENS": 24, "WATCH_SESSIONS": 1, "TRAIN_STEPS": 1,
        "TRAIN_OVERRIDES": {**SMALL_TRAIN, "task.answer.max_new_tokens": 8, "lora.top_layers": 2}, "WORK": str(tmp_path / "q")})
    res = _result(book)
    assert set(res["systems"]) == {"base", "rag", "trained"}
    assert all(s["count"] == 1 and 0.0 <= s["f1"] <= 1.0 for s in res["systems"].values())
    assert res["bank_steps"] >= 2 and res["train_steps"] == 1
    assert _figures(book) == 1


def test_tpu_paper_config_rehearsed_on_eight_cpu_devices(tmp_path):
    book = _execute("tpu_paper_config.ipynb", {
        "DATA": "embedded", "STEPS": 2, "FAKE_CPU_DEVICES": 8, "WORK": str(tmp_path / "t"),
        "OVERRIDES": {"model.name": "tiny-qwen2", "model.encoder": "hashing", "mesh.data": 2, "mesh.fsdp": 2,
                      "mesh.tensor": 2, "rollout.questions_per_step": 2, "rl.group_size": 4,
                      "rl.mini_batch_size": None, "rl.micro_batch_size": None, "rollout.gen_batch_size": 8,
                      "rollout.max_prompt_tokens": 96, "task.answer.max_new_tokens": 6,
                      "task.answer.k_per_speaker": 2, "data.val_limit": 2, "eval_every": 1, "save_every": 1,
                      "eval.limit": 2, "eval.manager": "add-all"}})
    res = _result(book)
    assert res["devices"] == 8 and res["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert res["train_steps"] == 2 and res["eval"]["count"] == 2
    assert _figures(book) == 1


def test_memory_manager_untrained_against_trained(tmp_path):
    book = _execute("memory_manager.ipynb", {
        "MODEL": "smollm2-135m-instruct", "SESSIONS": 1, "MAX_NEW_TOKENS": 24, "TRAIN_STEPS": 1,
        "TRAIN_OVERRIDES": {**SMALL_TRAIN, "task.manager.max_new_tokens": 24}, "WORK": str(tmp_path / "m")})
    res = _result(book)
    assert res["untrained"]["steps"] == res["trained"]["steps"] == 2        # one session, two speakers
    assert res["train_steps"] == 1
    for row in (res["untrained"], res["trained"]):   # the bank is what the applied operations made
        assert row["memories"] == row["ops"]["ADD"] - row["ops"]["DELETE"], row
        assert row["format_failures"] <= row["steps"]
    assert _figures(book) == 1
