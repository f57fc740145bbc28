"""Prompt templates of the Memory-R1 agents, the baselines and the judge.

The structure follows the paper's figures (Memory Manager: Figs. 9-10, Answer
Agent: Fig. 11, judge: Fig. 12), which adapt Mem0's prompts; the wording here is
our own paraphrase. Templates are plain data: a run can override any of them.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

MEMORY_MANAGER_PROMPT = """You are a smart memory manager that controls the memory of a system.
You can perform four operations: (1) ADD a new memory, (2) UPDATE an existing memory, (3) DELETE an existing memory, (4) NONE: make no change.

Compare the new facts with the old memory. For each fact decide:
- ADD: the fact holds new information that is not in memory. Add it with a new id.
- UPDATE: the fact is about something already in memory but says something different or more detailed. Keep the same id, write the new text, and put the previous text in "old_memory". If both say the same thing, do not update.
- DELETE: the fact contradicts a memory. Delete that memory, returning its id. Do not create new ids for deletions.
- NONE: the fact is already in memory or is irrelevant.

Example (ADD):
Old Memory: [{{"id": "0", "text": "User is a software engineer"}}]
New facts: ["Name is John"]
Output: {{"memory": [{{"id": "0", "text": "User is a software engineer", "event": "NONE"}}, {{"id": "1", "text": "Name is John", "event": "ADD"}}]}}

Example (UPDATE):
Old Memory: [{{"id": "0", "text": "Likes to play cricket"}}]
New facts: ["Loves to play cricket with friends"]
Output: {{"memory": [{{"id": "0", "text": "Loves to play cricket with friends", "event": "UPDATE", "old_memory": "Likes to play cricket"}}]}}

Example (DELETE):
Old Memory: [{{"id": "0", "text": "Loves cheese pizza"}}]
New facts: ["Dislikes cheese pizza"]
Output: {{"memory": [{{"id": "0", "text": "Loves cheese pizza", "event": "DELETE"}}]}}

Old Memory:
```
{old_memory}
```

New facts:
```
{new_facts}
```

Return only JSON in this structure:
{{"memory": [{{"id": "<id>", "text": "<memory text>", "event": "ADD|UPDATE|DELETE|NONE", "old_memory": "<previous text, UPDATE only>"}}]}}"""

# The compact format (memr1_jax.memory.line_ops): the manager names one operation per fact and
# never rewrites text; the example's facts and ids are not ones a real step would show.
MEMORY_MANAGER_LINES_PROMPT = """You manage a memory of facts about a person. For each new fact choose one operation:
ADD: the fact is new information. It is stored as a new memory.
UPDATE <id>: the fact changes or adds detail to old memory <id>. It replaces that memory.
DELETE <id>: the fact shows that old memory <id> is no longer true. That memory is removed.
NONE: the fact is already in memory, or not worth keeping.

Example
Old memories:
0: Likes to play cricket
1: Works at a bakery
New facts:
1. Name is John
2. Loves to play cricket with friends on Sundays
3. Quit the bakery job
4. Likes cricket
Output:
1: ADD
2: UPDATE 0
3: DELETE 1
4: NONE

Old memories:
{old_memory}
New facts:
{new_facts}
Write one line per new fact, in order, as in the example.
Output:
"""

_ANSWER_INSTRUCTIONS = """You are an intelligent memory assistant who answers questions from conversation memories.

# CONTEXT
You have memories from two speakers in a conversation. Each memory has a timestamp and may be relevant to the question.

# INSTRUCTIONS
1. Read all memories from both speakers.
2. Pay attention to the timestamps.
3. Look for direct evidence that answers the question.
4. If memories contradict each other, prefer the most recent one.
5. Turn relative time expressions ("last year", "two months ago") into dates using the memory timestamp.
6. Always give specific dates, months or years rather than relative references.
7. Focus on what the memories say and do not confuse the speakers' names.
8. Answer in less than 5-6 words.
"""

_MEMORY_BLOCKS = """
Memories for user {speaker_1}:
{memories_1}

Memories for user {speaker_2}:
{memories_2}

Question: {question}"""

# Memory-R1's Answer Agent: Mem0's instructions plus memory distillation (items 9-10).
ANSWER_AGENT_PROMPT = _ANSWER_INSTRUCTIONS + """9. IMPORTANT: first select the memories that are useful for the question and list them.
10. IMPORTANT: give the final answer after **Answer:**
""" + _MEMORY_BLOCKS

# A short form of the same prompt for small models on CPU: the memories come first and the
# instructions (distillation included) last, right before the question, in ~70 tokens instead
# of ~330, which makes rollouts and updates of the CPU configs several times cheaper.
ANSWER_AGENT_COMPACT_PROMPT = """Memories for user {speaker_1}:
{memories_1}

Memories for user {speaker_2}:
{memories_2}

Answer the question from these memories. If memories disagree, trust the most recent one; give dates, not relative times. First copy the memory that answers the question, then write **Answer:** and the answer in a few words.

Question: {question}"""

# Mem0's answer prompt (the Mem0-style baseline and the no-distillation ablation).
MEM0_ANSWER_PROMPT = _ANSWER_INSTRUCTIONS + _MEMORY_BLOCKS + "\n\nAnswer:"

# Answer-prompt variants selectable by name in configs and on the command line.
ANSWER_TEMPLATES = {"full": ANSWER_AGENT_PROMPT, "compact": ANSWER_AGENT_COMPACT_PROMPT}


def answer_template(name: str) -> str:
    if name not in ANSWER_TEMPLATES:
        raise ValueError(f"answer prompt {name!r}: expected one of {sorted(ANSWER_TEMPLATES)}")
    return ANSWER_TEMPLATES[name]


RAG_ANSWER_PROMPT = """You answer questions about a conversation between two people, using the excerpts below.
Give the shortest possible answer (a few words), using words from the conversation where you can.

Conversation excerpts:
{context}

Question: {question}

Answer:"""

FULL_CONTEXT_PROMPT = """You answer questions about a conversation between two people, shown in full below.
Give the shortest possible answer (a few words), using words from the conversation where you can.

Conversation:
{context}

Question: {question}

Answer:"""

FACT_EXTRACTION_PROMPT = """You organise personal information. Extract the distinct facts worth remembering about {speaker} from the conversation below: preferences, personal details (names, relationships, dates), plans, activities, health, work, and favourite things. Ignore greetings and small talk. Write each fact as a short self-contained sentence that names {speaker}.

Example input: "John: Hi, I'm John. I just started a job as a nurse."
Example output: {{"facts": ["John started a job as a nurse"]}}

Return only JSON with the key "facts" and a list of strings (an empty list if nothing is worth remembering).

Conversation ({date}):
{conversation}"""

JUDGE_PROMPT = """Your task is to label an answer to a question as 'CORRECT' or 'WRONG'. You get a question that one user asked another about their earlier conversations, a 'gold' (ground truth) answer, and a generated answer.

Gold answers are short, e.g. "A shell necklace" for "What did Caroline buy in Hawaii?". Be generous: a generated answer is CORRECT if it touches the same topic as the gold answer, even if it is longer. For time questions, it is CORRECT if it refers to the same date or period, whatever the format ("May 7th" and "7 May" are the same); relative references are fine if they mean the same time.

Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

First give a one-sentence reason, then the label CORRECT or WRONG (never both). Return JSON with the key "label"."""


# --------------------------------------------------------------------- rendering
def format_memory_line(timestamp: str, text: str) -> str:
    """One retrieved memory as the Answer Agent sees it: ``- <timestamp>: <text>``."""
    return f"- {timestamp}: {text}" if timestamp else f"- {text}"


def render_answer_prompt(question: str, speaker_1: str, memories_1: Sequence[str],
                         speaker_2: str, memories_2: Sequence[str], distill: bool = True,
                         template: str | None = None) -> str:
    """Fill the Answer Agent prompt; ``memories_*`` are already formatted lines."""
    template = template or (ANSWER_AGENT_PROMPT if distill else MEM0_ANSWER_PROMPT)
    return template.format(
        speaker_1=speaker_1, speaker_2=speaker_2, question=question,
        memories_1="\n".join(memories_1) or "(none)", memories_2="\n".join(memories_2) or "(none)")


def render_manager_prompt(old_memory_json: str, new_facts: Sequence[str],
                          template: str | None = None) -> str:
    """Fill the Memory Manager prompt. ``old_memory_json`` is the rendered
    ``[{"id": "0", "text": ...}]`` list with small prompt-side ids (see
    ``memr1_jax.memory.render_memories``, which also returns the map back to bank ids)."""
    old = old_memory_json if old_memory_json and old_memory_json != "[]" else "Current memory is empty."
    return (template or MEMORY_MANAGER_PROMPT).format(
        old_memory=old, new_facts=json.dumps(list(new_facts), ensure_ascii=False))


def render_manager_lines_prompt(shown: Sequence[str], new_facts: Sequence[str],
                                template: str | None = None) -> str:
    """Fill the line-format manager prompt: ``shown`` are the related memories' texts, listed
    under their prompt ids 0, 1, ... (the order of ``render_memories``' id map)."""
    old = "\n".join(f"{i}: {t}" for i, t in enumerate(shown)) or "(none)"
    facts = "\n".join(f"{n}. {f}" for n, f in enumerate(new_facts, 1))
    return (template or MEMORY_MANAGER_LINES_PROMPT).format(old_memory=old, new_facts=facts)


def render_judge_prompt(question: str, gold_answer: str, generated_answer: str) -> str:
    return JUDGE_PROMPT.format(question=question, gold_answer=gold_answer, generated_answer=generated_answer)


# --------------------------------------------------------------------- extraction
_ANSWER_MARK = re.compile(r"\*{0,2}\s*answer\s*\*{0,2}\s*:\s*\*{0,2}", re.IGNORECASE)


def extract_answer(completion: str) -> tuple[str, bool]:
    """The final answer of an Answer Agent completion and whether the
    ``**Answer:**`` marker was found.

    Takes the text after the last marker (models sometimes restate the
    instruction) up to the first blank line; without a marker it falls back to
    the last non-empty line, since small untrained models often skip the format.
    """
    text = completion.strip()
    matches = list(_ANSWER_MARK.finditer(text))
    if matches:
        tail = text[matches[-1].end():].strip()
        answer = tail.split("\n\n")[0].strip().splitlines()[0].strip() if tail else ""
        return answer.strip(" *\"'"), True
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1].strip(" *\"'") if lines else ""), False


def parse_judge_label(completion: str) -> int | None:
    """1 for CORRECT, 0 for WRONG, None when the judge output names neither.

    A JSON ``"label"`` decides as in Mem0's evaluation: 1 only for exactly ``"CORRECT"``,
    0 for any other value. Without one (output Mem0's code could not read), a bare
    CORRECT or WRONG word decides, and None when both or neither appear."""
    m = re.search(r'"label"\s*:\s*"([^"]*)"', completion)
    if m:
        return int(m.group(1) == "CORRECT")
    has_c = re.search(r"\bCORRECT\b", completion, re.IGNORECASE) is not None
    has_w = re.search(r"\bWRONG\b", completion, re.IGNORECASE) is not None
    if has_c != has_w:
        return int(has_c)
    return None
