"""`python -m memr1_jax.generate` end to end on the real SmolLM2 model (greedy)."""

import os
import subprocess
import sys



REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_answers_capital_of_france(smollm2_gguf):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user would run it
    proc = subprocess.run(
        [sys.executable, "-m", "memr1_jax.generate", "--model", "smollm2-135m-instruct",
         "--prompt", "What is the capital of France?", "--max-new-tokens", "24"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Paris" in proc.stdout, proc.stdout
    assert "<|im_end|>" not in proc.stdout  # stopped on the stop token, specials skipped


def test_cli_rejects_bad_sampling_flags():
    proc = subprocess.run([sys.executable, "-m", "memr1_jax.generate", "--prompt", "x", "--top-p", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0 and "top_p" in proc.stderr
