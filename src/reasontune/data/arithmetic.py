"""procedural:arithmetic: multi-step arithmetic word problems with exact integer answers.

Levels (operations = lines of the worked solution):
  1: one + or - on two-digit numbers
  2: two + / - operations on two-digit numbers
  3: two or three + / - operations on three-digit numbers
  4: three operations, one a multiplication by a one-digit number
  5: four operations on three-digit numbers with a multiplication and an exact division
Every intermediate value and the answer are positive integers. The worked solution has one
terse line per step, "134 + 27 = 161", which a small model can imitate.

procedural:small_arithmetic has the same levels (the same plans of operations) on small numbers
(start 5-20, amounts 1-9, packs of 2-5) and more phrasings: the reasoning it trains is the mapping from
a story to its operations, not multi-digit carrying, which SmolLM2-135M gets wrong ("39 - 38 = 17")
whatever the story says. The demo uses it (recipes/demo.yaml says why, with the figures).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from reasontune.data.registry import Problem, register

NAMES = [
    ("Maya", "she"), ("Leo", "he"), ("Ava", "she"), ("Omar", "he"), ("Lena", "she"), ("Ben", "he"),
    ("Priya", "she"), ("Carlos", "he"), ("Zoe", "she"), ("Ivan", "he"), ("Nora", "she"), ("Sam", "he"),
    ("Aisha", "she"), ("Tom", "he"), ("Mei", "she"), ("Lucas", "he"), ("Sofia", "she"), ("Kofi", "he"),
    ("Hana", "she"), ("Diego", "he"), ("Emma", "she"), ("Noah", "he"), ("Yara", "she"), ("Felix", "he"),
]
OBJECTS = [  # (plural noun, container plural)
    ("marbles", "bags"), ("stickers", "sheets"), ("apples", "baskets"), ("books", "boxes"),
    ("pencils", "packs"), ("coins", "jars"), ("cards", "decks"), ("cookies", "trays"),
    ("shells", "buckets"), ("beads", "bags"), ("eggs", "cartons"), ("crayons", "boxes"),
    ("balloons", "packs"), ("toy cars", "boxes"), ("candies", "bags"), ("stamps", "sheets"),
]
OPENINGS = ["{N} has {a} {o}.", "{N} starts with {a} {o}.", "{N} has a collection of {a} {o}.",
            "There are {a} {o} in {N}'s room."]
PACK_OPENINGS = ["{N} buys {k} {c} of {o} with {m} {o} in each.", "{N} has {k} {c} of {o}, each holding {m}."]
ADD = ["{S} buys {b} more {o}.", "{S} finds {b} more {o}.", "{F} gives {O} {b} more {o}.",
       "{S} wins {b} {o} in a game.", "{S} gets {b} {o} as a gift."]
SUB = ["{S} gives {b} {o} to {F}.", "{S} sells {b} {o}.", "{S} loses {b} {o}.",
       "{S} gives away {b} {o}.", "{S} trades {b} {o} with {F}.", "{S} uses {b} {o} for a school project."]
PACK = ["{S} buys {k} {c} of {o} with {m} in each.", "{S} buys {k} {c} of {m} {o}.",
        "{F} gives {O} {k} {c} with {m} {o} in each."]
DIV = ["{S} splits the {o} into {d} equal piles and keeps one pile.",
       "{S} packs the {o} equally into {d} {c} and keeps one of them.",
       "{S} divides the {o} into {d} equal groups and keeps one group."]
CONNECT = ["", "", "Then ", "After that, ", "Later, ", "Next, "]
QUESTIONS = ["How many {o} does {N} have now?", "How many {o} does {N} have in the end?",
             "How many {o} does {N} have left?"]

# Operand ranges per level: start value, added/subtracted amount, pack size, packs count.
RANGES = {
    1: dict(a=(10, 99), b=(10, 99)),
    2: dict(a=(10, 99), b=(10, 99)),
    3: dict(a=(100, 999), b=(100, 999)),
    4: dict(a=(100, 999), b=(10, 99), m=(10, 99), k=(2, 9)),
    5: dict(a=(100, 999), b=(100, 999), m=(100, 499), k=(2, 9), d=(2, 9)),
}

SMALL_RANGES = {
    1: dict(a=(5, 20), b=(1, 9)),
    2: dict(a=(5, 20), b=(1, 9)),
    3: dict(a=(5, 20), b=(1, 9)),
    4: dict(a=(5, 20), b=(1, 9), m=(2, 5), k=(2, 5)),
    5: dict(a=(5, 20), b=(1, 9), m=(2, 5), k=(2, 5), d=(2, 5)),
}
# Extra phrasings for small_arithmetic, so the operation has to be read from the story rather than
# from a handful of verbs (the demo's gain is meant to carry to problems phrased unlike ours).
SMALL_PHRASES = {
    "openings": OPENINGS + ["At first {N} owns {a} {o}.", "{N} keeps {a} {o} in a drawer.",
                            "{N} counted {a} {o} this morning."],
    "add": ADD + ["{S} picks up {b} more {o}.", "{F} hands {O} another {b} {o}.", "{S} collects {b} extra {o}.",
                  "{S} receives {b} {o} from {F}.", "{S} makes {b} new {o}."],
    "sub": SUB + ["{F} takes {b} {o} from {O}.", "{S} donates {b} {o}.", "{S} drops {b} {o} and cannot find them.",
                  "{S} hands {b} {o} over to {F}.", "{S} throws away {b} broken {o}."],
    "questions": QUESTIONS + ["How many {o} does {N} end up with?", "What is the number of {o} {N} has now?",
                              "Count {N}'s {o} at the end: how many are there?"],
}
PHRASES = {"openings": OPENINGS, "add": ADD, "sub": SUB, "questions": QUESTIONS}


def _plan(rng: random.Random, level: int) -> list[str]:
    pm = lambda: rng.choice(["add", "sub"])  # noqa: E731
    if level == 1:
        return ["start", pm()]
    if level == 2:
        return ["start", pm(), pm()]
    if level == 3:
        return ["start"] + [pm() for _ in range(rng.choice([2, 3]))]
    if level == 4:
        return rng.choice([["start", "pack", pm()], ["start", pm(), "pack"], ["packstart", pm(), pm()]])
    return rng.choice([["start", "pack", "sub", "div"], ["packstart", "add", "sub", "div"],
                       ["start", "pack", "div", pm()], ["packstart", "div", "add", "sub"]])


@dataclass
class _Story:
    rng: random.Random
    level: int
    name: str
    pron: str
    obj: str
    cont: str
    friends: list[str]
    ranges: dict = field(default_factory=lambda: RANGES)
    phrases: dict = field(default_factory=lambda: PHRASES)
    x: int = 0
    pending: int = 1  # divisor that the next "div" step uses
    steps: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)

    def rnd(self, key: str) -> int:
        lo, hi = self.ranges[self.level][key]
        return self.rng.randint(lo, hi)

    def say(self, template: str, **kw) -> None:
        connect = self.rng.choice(CONNECT) if self.sentences else ""
        subject = self.rng.choice([self.name, self.pron])
        text = template.format(S=subject, F=self.rng.choice(self.friends), O="her" if self.pron == "she" else "him",
                               o=self.obj, c=self.cont, N=self.name, **kw)
        text = text[0].upper() + text[1:]
        if connect:
            text = connect + (text[0].lower() + text[1:] if text.split()[0] in ("She", "He") else text)
        self.sentences.append(text)

    def step(self, a: int, op: str, b: int) -> int:
        c = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        self.steps.append(f"{a} {op} {b} = {c}")
        return c


def _choose(rng: random.Random, lo: int, hi: int, ok) -> int | None:
    cands = [v for v in range(lo, hi + 1) if ok(v)]
    return rng.choice(cands) if cands else None


def _do(story: _Story, kind: str, divisor: int | None) -> bool:
    """Run one planned step; `divisor` (when set) must divide the result. False: impossible."""
    fits = (lambda v: v > 0 and v % divisor == 0) if divisor else (lambda v: v > 0)
    r, x = story.rng, story.x
    lo, hi = story.ranges[story.level]["a" if kind == "start" else "b"]
    if kind == "start":
        story.x = _choose(r, lo, hi, fits)
        story.sentences.append(r.choice(story.phrases["openings"]).format(N=story.name, a=story.x, o=story.obj))
    elif kind in ("add", "sub"):
        sign = 1 if kind == "add" else -1
        b = _choose(r, lo, hi, lambda v: fits(x + sign * v))
        if b is None:
            return False
        story.say(r.choice(story.phrases[kind]), b=b)
        story.x = story.step(x, "+" if kind == "add" else "-", b)
    elif kind in ("pack", "packstart"):
        return _do_pack(story, kind, fits)
    else:  # div: the previous step made x divisible by the pre-chosen divisor
        d = story.pending
        story.say(r.choice(DIV), d=d)
        story.x = story.step(x, "/", d)
    return True


def _do_pack(story: _Story, kind: str, fits) -> bool:
    r, x = story.rng, story.x
    (klo, khi), (mlo, mhi) = story.ranges[story.level]["k"], story.ranges[story.level]["m"]
    pairs = [(k, m) for k in range(klo, khi + 1) for m in range(mlo, mhi + 1) if fits(x + k * m)]
    if not pairs:
        return False
    k, m = r.choice(pairs)
    p = story.step(k, "*", m)
    if kind == "packstart":
        story.sentences.append(r.choice(PACK_OPENINGS).format(N=story.name, k=k, m=m, o=story.obj, c=story.cont))
        story.x = p
    else:
        story.say(r.choice(PACK), k=k, m=m)
        story.x = story.step(x, "+", p)
    return True


def _attempt(rng: random.Random, level: int, ranges: dict = RANGES, phrases: dict = PHRASES) -> Problem | None:
    (name, pron), (obj, cont) = rng.choice(NAMES), rng.choice(OBJECTS)
    friends = [n for n, _ in rng.sample(NAMES, 4) if n != name]
    story = _Story(rng, level, name, pron, obj, cont, friends, ranges, phrases)
    plan = _plan(rng, level)
    for i, kind in enumerate(plan):
        divisor = None
        if i + 1 < len(plan) and plan[i + 1] == "div":
            divisor = story.pending = rng.randint(*ranges[level]["d"])
        ok = _do(story, kind, divisor)
        if not ok and kind == "sub":
            ok = _do(story, "add", divisor)  # too little left to take away: add instead
        if not ok:
            return None
    question = " ".join(story.sentences + [rng.choice(phrases["questions"]).format(o=obj, N=name)])
    return Problem(question, str(story.x), "\n".join(story.steps), level)


@register("arithmetic", levels=(1, 2, 3, 4, 5), default_levels=(1, 2, 3, 4),
          description="multi-step arithmetic word problems, levels 1-5")
def arithmetic(rng: random.Random, level: int) -> Problem:
    return _first(rng, level, RANGES, PHRASES, "arithmetic")


@register("small_arithmetic", levels=(1, 2, 3, 4, 5), default_levels=(1, 2, 3, 4),
          description="the arithmetic levels on small numbers, more phrasings: the story-to-operations mapping")
def small_arithmetic(rng: random.Random, level: int) -> Problem:
    return _first(rng, level, SMALL_RANGES, SMALL_PHRASES, "small_arithmetic")


def _first(rng: random.Random, level: int, ranges: dict, phrases: dict, name: str) -> Problem:
    for _ in range(100):
        p = _attempt(rng, level, ranges, phrases)
        if p is not None:
            return p
    raise RuntimeError(f"{name} level {level}: no valid problem after 100 attempts")  # pragma: no cover
