"""The facts of a user's message, for the memory service's ``add``.

Two ways, one result shape (short third-person sentences that name the speaker, as LoCoMo's
observations and the Memory Manager's training facts are written):

- ``model``: the LLM rewrites the message as facts, decoded under ``facts_regex`` (lines that
  start with the speaker's name, so it cannot wander into prose), and each fact is kept only if
  ``grounded`` in the message (every content word and number of the fact was said): a 135M
  model often invents ("Alice's move to Lisbon is not possible"), and a memory layer must not
  store what nobody said.
- ``sentences``: the message itself, split into sentences and clauses, first person rewritten to
  the speaker ("I moved" -> "Alice moved", "my" -> "Alice's"), questions and greetings dropped,
  a request to forget written as "<name> asked to forget ..." (the changing-facts generator's
  form of a retraction). The service's default (as good on LoCoMo at 135M, no model call: README
  "Memory service"), and the fallback of ``model`` when nothing grounded is left, so an ``add``
  never silently drops what was said.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

from memr1_jax.agents.grounding import WORD, grounded

log = logging.getLogger(__name__)

EXTRACTION_PROMPT = """Turn the message into facts about {speaker}. Write "I" as "{speaker}" and "my" as "{speaker}'s". One fact per line.

Message: I just started a job as a nurse, and my dog Rex turned 5.
Facts:
Sam started a job as a nurse.
Sam's dog Rex turned 5.

Message: {message}
Facts:
"""

_GREETING = re.compile(r"^(hi|hello|hey|thanks|thank you|ok|okay|bye|good (morning|night|evening)|how are you)\b[\s\w,']*[.!]*$",
                       re.I)
_LEAD = re.compile(r"^(?:(?:actually|oh|well|so|also|anyway|by the way|btw|big news|guess what|update|"
                   r"sorry|correction|wait|oops|hey|hi)\b[\s,:!.-]*)+", re.I)
_FORGET = re.compile(r"^(?:(?:please|can you|could you|kindly)\s+)*(?:forget|delete|remove|erase|"
                     r"stop remembering|don'?t remember|do not remember)\s+(?:about\s+)?(.+)$", re.I)
_CLAUSE = re.compile(r"\s*(?:;|,?\s+(?:and|but|so|while)\s+(?=(?:I|I'm|I've|I'll|I'd|my|My|we)\b))\s*")
# First person -> the speaker, longest forms first; verbs that change with the subject.
_PRONOUNS = ((r"\bI'm\b|\bI am\b", "{n} is"), (r"\bI've\b|\bI have\b", "{n} has"), (r"\bI'll\b", "{n} will"),
             (r"\bI'd\b", "{n} would"), (r"\bI don'?t\b|\bI do not\b", "{n} does not"),
             (r"\bI\b", "{n}"), (r"\b[Mm]y\b|\b[Mm]ine\b", "{n}'s"), (r"\b[Mm]yself\b|\b[Mm]e\b", "{n}"))
_THIRD = {"work": "works", "live": "lives", "like": "likes", "love": "loves", "drive": "drives", "own": "owns",
          "want": "wants", "need": "needs", "play": "plays", "teach": "teaches", "study": "studies",
          "prefer": "prefers", "hate": "hates", "enjoy": "enjoys", "use": "uses", "go": "goes", "do": "does",
          "know": "knows", "think": "thinks", "plan": "plans", "keep": "keeps", "feel": "feels", "run": "runs"}


def speaker_name(name: str | None) -> str:
    """How facts name the speaker: a given name as written; an id that reads as a name
    ("alice", "mary_jane") capitalised; anything else (a uuid, an email) "The user"."""
    if not name:
        return "The user"
    words = re.split(r"[_\s]+", name.strip())
    if all(w.isalpha() for w in words):
        return " ".join(w if any(c.isupper() for c in w) else w.capitalize() for w in words)
    return "The user"


def _third_person(text: str, n: str) -> str:
    for pattern, repl in _PRONOUNS:
        text = re.sub(pattern, repl.replace("{n}", n), text)
    # "Alice work" -> "Alice works": the simple present after the rewritten subject.
    return re.sub(rf"\b({re.escape(n)}) ({'|'.join(_THIRD)})\b", lambda m: f"{m.group(1)} {_THIRD[m.group(2)]}", text)


def _sentences(text: str) -> list[str]:
    out = []
    for sent in re.split(r"(?<=[.!?])\s+|\n+", text):
        out.extend(c for c in _CLAUSE.split(sent.strip()) if c)
    return out


def sentence_facts(message: str, speaker: str, max_facts: int = 12, max_chars: int = 300) -> list[str]:
    """The message's sentences and clauses as facts about ``speaker`` (see the module text)."""
    out: list[str] = []
    for sent in _sentences(message):
        sent = _LEAD.sub("", sent).strip(" ,:-")
        if not sent or sent.endswith("?") or _GREETING.match(sent):
            continue
        forget = _FORGET.match(sent)
        if forget:
            fact = f"{speaker} asked to forget {_third_person(forget.group(1), speaker)}"
        else:
            fact = _third_person(sent, speaker)
        fact = fact.rstrip(" .!,;") + "."
        fact = fact[0].upper() + fact[1:]
        if len(WORD.findall(fact)) >= 3 and len(fact) <= max_chars and fact not in out:
            out.append(fact)
    return out[:max_facts]


def facts_regex(speaker: str, max_facts: int) -> str:
    """1..``max_facts`` lines, each a sentence that starts with the speaker's name (or its
    possessive) and a lower-case word (no role labels, no "(date):" headers, no quotes of the
    prompt's example), ended by an empty line. The end is spelt out because outlines-core
    0.2's index keeps no transition out of an accepting state but its own loop: with an
    optional further line the model could never start one."""
    n = re.escape(speaker)
    return rf"({n}('s)? [a-z][^\n:()\"]{{2,}}\n){{1,{max_facts}}}\n"


def model_facts(completion: str, message: str, speaker: str, max_facts: int = 12) -> list[str]:
    """The grounded lines of a constrained extraction completion."""
    out: list[str] = []
    for line in completion.splitlines():
        fact = " ".join(line.split())
        if fact and grounded(fact, message, speaker) and fact not in out:
            out.append(fact)
    return out[:max_facts]



def facts_automaton(llm, speaker: str, max_facts: int):
    """``facts_regex`` compiled for the model (cached with the manager's automata)."""
    from memr1_jax.sampling.constraint import regex_automaton
    return regex_automaton(facts_regex(speaker, max_facts), llm.tokenizer, llm.cfg.vocab_size)


def extract_facts(llm, messages: Sequence[tuple[str, str]], max_facts: int = 12, max_new_tokens: int = 96,
                  instructions: str | None = None) -> list[list[str]]:
    """Per (message, speaker): the model's grounded facts (decoded under ``facts_regex`` when
    ``llm`` is a real model), else the message's sentences. One batched generate call."""
    prompts = [EXTRACTION_PROMPT.format(speaker=spk, message=msg) for msg, spk in messages]
    if instructions:
        prompts = [f"{instructions}\n\n{p}" for p in prompts]
    kw = {}
    if hasattr(llm, "tokenizer"):
        kw["constraints"] = [facts_automaton(llm, spk, max_facts) for _, spk in messages]
    outs = llm.generate(prompts, max_new_tokens=max_new_tokens, **kw)
    result = []
    for (msg, spk), out in zip(messages, outs):
        facts = model_facts(out.text, msg, spk, max_facts)
        if not facts:
            log.info("no grounded fact in the extraction %r: the message's sentences instead", out.text[:200])
        result.append(facts or sentence_facts(msg, spk, max_facts))
    return result
