"""A scripted model for the memory service's tests (in process, and in a server subprocess):
extraction lists the user's lines; the manager UPDATEs (or, for "no longer", DELETEs) the shown
memory with the fact's subject and verb, else ADDs."""

from __future__ import annotations

import json
import re
import time
import types

_OLD = re.compile(r"Old Memory:\n```\n(.*?)\n```\n\nNew facts:\n```\n(.*?)\n```", re.S)


def _key(text: str) -> str:
    return " ".join(text.split()[:2]).lower()    # "Alice lives ..." -> "alice lives"


def policy(prompt: str) -> str:
    """A scripted model: extraction lists the user's lines; the manager UPDATEs (or, for "no
    longer", DELETEs) the memory with the fact's subject and verb, else ADDs."""
    if "Turn the message into facts" in prompt:   # the user's lines, as said
        return prompt.rsplit("Message: ", 1)[1].split("\nFacts:", 1)[0]
    old, new = _OLD.search(prompt).groups()
    shown = [] if old.startswith("Current memory is empty") else json.loads(old)
    out = []
    for fact in json.loads(new):
        hit = next((m for m in shown if _key(m["text"]) == _key(fact)), None)
        if hit is None:
            out.append({"id": "new", "text": fact, "event": "ADD"})
        elif "no longer" in fact:
            out.append({"id": hit["id"], "text": hit["text"], "event": "DELETE"})
        else:
            out.append({"id": hit["id"], "text": fact, "event": "UPDATE", "old_memory": hit["text"]})
    return json.dumps({"memory": out})


class Scripted:
    thread_safe = True   # called concurrently, as the batching Engine is

    def __init__(self, delay: float = 0.0):
        self.prompts, self.delay = [], delay

    def generate(self, prompts, max_new_tokens=64, **kw):
        self.prompts += list(prompts)
        time.sleep(self.delay)   # a model takes time: concurrent callers overlap
        return [types.SimpleNamespace(text=policy(p)) for p in prompts]


def serve(port: int, store: str, key: str) -> None:
    """A memory server whose models are the scripted ones (``python tests/_scripted.py PORT STORE KEY``):
    infer=True adds that UPDATE and DELETE, in a process a test can kill."""
    import uvicorn

    from memr1_jax import Memory
    from memr1_jax.service.app import create_app
    m = Memory({"store": store, "encoder": "hashing", "agents": "untrained", "extraction": "model",
                "constrained": False}, llm=Scripted())
    uvicorn.run(create_app(m, api_key=key), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    import sys
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
