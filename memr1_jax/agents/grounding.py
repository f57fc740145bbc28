"""Whether a text says only what its source said: the memory service's guard against a small
model's inventions, in extraction (a fact must be in the message) and in answers (an answer
must rest on the memories read).

Content words are the words outside a short stop list, compared on a crude stem (an -s, -es,
-ed or -ing and a final e dropped, then the first five letters: "moved", "move" and "moving"
match, as do "lives" and "live"); numbers compare exactly.
"""

from __future__ import annotations

import re
from typing import Iterable

_STOP = frozenset("""a an the and or but so of to in on at for with from by as is are was were be been being has have
had do does did not no yes it its this that these those there here then than very really just also now new
who whom whose which what when where why how will would can could should may might must shall about into over
after before since until while again ever still some any all each every more most much many few""".split())
WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def content_words(text: str, names: Iterable[str] = ()) -> list[str]:
    """The content words of ``text``, lower-cased, "'s" dropped, ``names``' words left out."""
    skip = {w.lower() for n in names for w in WORD.findall(n)} | {"user", "asked"}
    return [w for w in (t.lower().removesuffix("'s") for t in WORD.findall(text)) if w not in _STOP and w not in skip]


def _stem(w: str) -> str:
    if w.isdigit():
        return w
    for suffix in ("ing", "ed", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            w = w[:-len(suffix)]
            break
    return w.rstrip("e")[:5]


def _said(words: Iterable[str]):
    stems = {_stem(w) for w in words}
    return lambda w: _stem(w) in stems


def grounded(fact: str, message: str, speaker: str) -> bool:
    """Every content word of ``fact`` was said in ``message``."""
    said = _said(content_words(message, [speaker]))
    words = content_words(fact, [speaker])
    return bool(words) and all(said(w) for w in words)


_YES_NO = frozenset("is are was were do does did has have had can could will would should".split())


def answer_supported(answer: str, question: str, memories: Iterable[str], names: Iterable[str] = ()) -> bool:
    """The answer rests on the memories: one of its content words not taken from the question is
    in them. An answer with no such word only restates the question ("The car is the car that Ana
    drives", "The name of Ana's dog is Ana"): supported only for a yes / no question."""
    names = list(names)
    asked = _said(content_words(question, names))
    new = [w for w in content_words(answer, names) if not asked(w)]
    if not new:
        first = WORD.findall(question.lower())[:1]
        return bool(first) and first[0] in _YES_NO
    said = _said(w for m in memories for w in content_words(m, names))
    return any(said(w) for w in new)
