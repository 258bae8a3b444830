"""procedural:story_arithmetic: small_arithmetic's levels and worked solutions, told as varied stories.

The demo's GRPO learned small_arithmetic's dozen verbs instead of the story -> operation mapping: on stories
told otherwise (birds that fly away, passengers who get off, the number or the question first) it added where
it should subtract. This generator keeps small_arithmetic's plans, numbers (start 5-20, amounts 1-9, packs
2-5) and worked format ("12 - 3 = 9", operands in the story's order, the start first), and builds each story
from parts: a scene (story_scenes.py: what is counted, where, and its own add/remove verb phrases), a
sentence order (the holder, the number or the place first; first person; the question first or as one
"How many ... if ...?" sentence; terse notes), events told actively, in the passive or joined in one
sentence, and a question form. `compose` also returns which parts a story used, so tests measure breadth.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from reasontune.data.arithmetic import NAMES, SMALL_RANGES, _choose, _plan
from reasontune.data.registry import Problem, register
from reasontune.data.story_scenes import PERSON_DIV, PLACE_DIV, SCENES, SELF_DIV, Scene

STYLES = ("holder", "number", "place", "first", "question_first", "question_if", "notes")
PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "him", "his")}
PROPER = {n for n, _ in NAMES} | {"I"}
OPEN = {  # a person's things, by sentence order
    "person": {"holder": ("{N} has {a} {o}", "{N} owns {a} {o}", "{N} starts the day with {a} {o}",
                          "{N} keeps {a} {o} {place}"),
               "number": ("{a} {o} belong to {NO}", "{a} {o} are {place}", "{a} {o} are all {N} has at first"),
               "place": ("{Place} sit {a} {o}", "{Place} there are {a} {o}"),
               "first": ("I had {a} {o}", "There were {a} {o} {place}", "I counted {a} {o} {place}")},
    "place": {"number": ("{a} {o} {rest} {place}", "{a} {o} are {place} at first"),
              "place": ("{Place} there are {a} {o}", "{Place}, {a} {o} {rest}"),
              "first": ("I saw {a} {o} {place}", "I counted {a} {o} {place}",
                        "There were {a} {o} {place} when I arrived")},
}
PACKOPEN = {
    "person": {"holder": ("{N} has {k} {c} with {m} {o} in each", "{N} buys {k} {c} of {m} {o}"),
               "number": ("{k} {c} of {m} {o} are {place}", "{k} {c}, each with {m} {o}, belong to {NO}"),
               "place": ("{Place} there are {k} {c} with {m} {o} in each",),
               "first": ("I had {k} {c} with {m} {o} in each", "I bought {k} {c} of {m} {o}")},
    "place": {"holder": ("{H} has {k} {c} of {m} {o}",),
              "number": ("{k} {c} of {m} {o} are {place}", "{k} {c} with {m} {o} each are {place}"),
              "place": ("{Place} there are {k} {c} of {m} {o}",),
              "first": ("I saw {k} {c} of {m} {o} {place}",)},
}
NOTE_OPEN = ("Start: {a} {o} {place}", "{Place}, at the start: {a} {o}")
NOTE_PACKOPEN = ("Start: {k} {c} of {m} {o} {place}",)
# (form, template, needs a removal in the story, a single question that an "if" clause can follow)
QUESTIONS = {
    "person": (("have_now", "How many {o} {does} {N} have now?", False, True),
               ("still_have", "How many {o} {does} {N} still have?", True, True),
               ("left", "How many {o} {does} {N} have left?", True, True),
               ("end_up", "How many {o} {does} {N} end up with?", False, True),
               ("total", "What is the total number of {o} {N} {has} now?", False, True),
               ("remain", "How many of {NP} {o} remain?", True, True),
               ("at_end", "How many {o} {does} {N} have at the end?", False, True),
               ("count", "Count {NP} {o} at the end. How many are there?", False, False)),
    "place": (("there_now", "How many {o} are {place} now?", False, True),
              ("left", "How many {o} are left {place}?", True, True),
              ("remain", "How many {o} remain {place}?", True, True),
              ("still", "How many {o} are still {place}?", True, True),
              ("total", "What is the total number of {o} {place} now?", False, True),
              ("end", "In the end, how many {o} are {place}?", False, True),
              ("count", "Count the {o} {place} at the end. How many are there?", False, False)),
}
HOLDER_Q = ("has_now", "How many {o} does {H} have now?", False, True)
CONNECT = ("", "", "", "Then ", "After that, ", "Later, ", "Next, ", "Soon, ")
JOIN = (", then ", " and ", ", and then ", ", and after that ", "; later, ")
IF_LAST = (" and ", ", and then ", " and then ")
SAME_SUBJECT = (" and ", ", then ", " and then ")
_BRACKET = re.compile(r"\[([^|\]]*)\|([^\]]*)\]")


@dataclass
class _Ctx:
    rng: random.Random
    scene: Scene
    style: str
    past: bool
    name: str
    pron: str
    friends: list
    noun: tuple  # (singular, plural)
    place: tuple  # (where, from where), {P} for the holder's possessive
    cont: str
    holder_np: str
    actor: str  # place scenes: "name", a role ("the baker"), or "I"
    actor_seen: bool = False
    holder_pron: bool = False  # "How many ... does Maya have if she has 12 ...": the opening says "she"
    passive: int = 0
    joined: int = 0

    @property
    def first(self) -> bool:
        return self.style == "first"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _low(s: str) -> str:
    return s if s.split(" ", 1)[0].strip(",") in PROPER else s[:1].lower() + s[1:]


def _parts(entry: str) -> tuple[str, str, str]:
    present, past, part = (p.strip() for p in re.split(r" \|(?: |$)", entry))
    return present, past, part


def _subject(ctx: _Ctx) -> str:
    """Who acts: the holder in a person's scene, the actor in a place's; the pronoun once the name is known."""
    if ctx.first:
        return "I"
    if ctx.scene.holder == "person":
        return ctx.rng.choice([ctx.name, ctx.pron])
    if ctx.actor != "name":
        return ctx.actor
    seen, ctx.actor_seen = ctx.actor_seen, True
    return ctx.rng.choice([ctx.name, ctx.pron]) if seen else ctx.name


def _fill(ctx: _Ctx, template: str, count: int = 2, **kw) -> str:
    """`template` with its [singular|plural] picked by `count` and its placeholders filled."""
    text = _BRACKET.sub(lambda m: m[1] if count == 1 else m[2], template)
    subj, obj, poss = ("I", "me", "my") if ctx.first else PRONOUNS[ctx.pron]
    named = not ctx.first and not ctx.holder_pron
    # "Maya keeps 12 marbles in her room", but "In Maya's room there are 12 marbles": the place says "her"
    # only after the name
    at, n_at = max(text.find("{place}"), text.find("{Place}"), text.find("{from}")), text.find("{N}")
    owner = poss if not named or 0 <= n_at < at else f"{ctx.name}'s"
    where, whence = (p.format(P=owner, H=ctx.holder_np) for p in ctx.place)
    f = {"o": ctx.noun[1], "c": ctx.cont, "H": ctx.holder_np, "F": ctx.rng.choice(ctx.friends),
         "place": where, "Place": _cap(where), "from": whence, "rest": ctx.rng.choice(ctx.scene.rest),
         "N": ctx.name if named else subj, "NO": ctx.name if named else obj,
         "NP": f"{ctx.name}'s" if named else poss, "O": obj if ctx.first else ctx.rng.choice([ctx.name, obj]),
         "P": poss, "does": "do" if ctx.first else "does", "has": "have" if ctx.first else "has"}
    if "{S}" in text:
        f["S"] = _subject(ctx)
    f.update(kw)
    return text.format(**f)


def _amount(ctx: _Ctx, kind: str, b: int) -> str:
    """The counted amount of an event: "3 more ducks", "3 of them", "another 3 ducks" ..."""
    one, many = ctx.noun
    noun = one if b == 1 else many
    if kind == "add":
        forms = [f"{b} {noun}", f"{b} more {noun}"] + ([f"another {b} {many}"] if b > 1 else [])
    else:
        forms = [f"{b} {noun}"] + ([f"{b} of the {many}", f"{b} of them"] if ctx.scene.partitive else [])
    return ctx.rng.choice(forms)


def _event(ctx: _Ctx, ev: tuple, meta: dict) -> tuple[str, bool]:
    """One event as a clause (no final stop) and whether a pack's size {m} comes before its count {k}."""
    rng, scene, kind = ctx.rng, ctx.scene, ev[0]
    if kind in ("add", "sub"):
        b = ev[1]
        entry = rng.choice(scene.add if kind == "add" else scene.sub)
        meta["verbs"].append(_parts(entry)[0])
        present, past, part = _parts(entry)
        if ctx.style == "notes":
            if part:
                return f"{_cap(_fill(ctx, part, b))}: {b}", False
            noun = ctx.noun[0] if b == 1 else ctx.noun[1]
            return _fill(ctx, past, b, n=f"{b} more" if kind == "add" else str(b), b=b, ob=noun), False
        if part and rng.random() < 0.25:
            ctx.passive += 1
            be = "[was|were]" if ctx.past else "[is|are]"
            return _fill(ctx, f"{_amount(ctx, kind, b)} {be} {part}", b), False
        noun = ctx.noun[0] if b == 1 else ctx.noun[1]
        return _fill(ctx, past if ctx.past else present, b, n=_amount(ctx, kind, b), b=b, ob=noun), False
    if kind == "pack":
        template = _parts(rng.choice(scene.pack) + " |")[1 if ctx.past else 0]
        return _fill(ctx, template, k=ev[1], m=ev[2]), template.index("{m}") < template.index("{k}")
    divs = scene.div or (PERSON_DIV if scene.holder == "person"
                         else PLACE_DIV if any("{S}" in v for v in scene.add + scene.sub) else SELF_DIV)
    return _fill(ctx, _parts(rng.choice(divs) + " |")[1 if ctx.past else 0], d=ev[1]), False


def _opening(ctx: _Ctx, ev: tuple, style: str) -> tuple[str, bool]:
    """The first fact (the start, or packs to start with) in sentence order `style`; and whether {m} leads."""
    rng, scene, pack = ctx.rng, ctx.scene, ev[0] == "packstart"
    if style == "holder" and scene.holder == "place" and not scene.holders:
        style = "number"  # a pond "has" no ducks: the number leads
    if style == "notes":
        options = NOTE_PACKOPEN if pack else NOTE_OPEN
    elif pack:
        table = scene.extra.get("packopen") or PACKOPEN[scene.holder]
        options = table.get(style) or table["number"]
    elif style == "holder" and scene.holder_open:
        options = tuple(t.rstrip(".") for t in scene.holder_open)
    else:
        options = OPEN[scene.holder].get(style) or OPEN[scene.holder]["number"]
    template = rng.choice(options)
    if pack:
        return _fill(ctx, template, k=ev[1], m=ev[2]), template.index("{m}") < template.index("{k}")
    return _fill(ctx, template, a=ev[1]), False


def _question(ctx: _Ctx, removal: bool, single: bool) -> tuple[str, str]:
    scene = ctx.scene
    forms = list(QUESTIONS[scene.holder]) + list(scene.extra.get("questions", ()))
    if scene.holder == "place" and scene.holders:
        forms.append(HOLDER_Q)
    forms = [f for f in forms if (removal or not f[2]) and (f[3] or not single)]
    form, template, _, _ = ctx.rng.choice(forms)
    return form, _fill(ctx, template)


def _sentences(ctx: _Ctx, clauses: list[str]) -> list[str]:
    """Event clauses as sentences: some joined ("..., then ..."), some with a connective."""
    out: list[str] = []
    i = 0
    while i < len(clauses):
        text, i, parts = clauses[i], i + 1, 1
        while i < len(clauses) and parts < 3 and ctx.rng.random() < 0.3:
            nxt, same = clauses[i], {ctx.name.lower(), ctx.pron, "i"}
            if {text.split(" ", 1)[0].lower(), nxt.split(" ", 1)[0].lower()} <= same and ctx.rng.random() < 0.5:
                text += ctx.rng.choice(SAME_SUBJECT) + nxt.split(" ", 1)[1]  # "Maya sells 3 and finds 5 more"
            else:
                text += ctx.rng.choice(JOIN) + _low(nxt)
            i, parts = i + 1, parts + 1
            ctx.joined += 1
        lead = ctx.rng.choice(CONNECT)
        out.append(_cap(lead + _low(text) if lead else text) + ".")
    return out


def _tell(ctx: _Ctx, events: list[tuple], meta: dict) -> tuple[str, list[bool]]:
    """The story's text in ctx.style, and per event whether a pack's {m} comes before its {k}."""
    rng, style = ctx.rng, ctx.style
    removal = any(ev[0] in ("sub", "div") for ev in events)
    base = "first" if style == "first" else "notes" if style == "notes" else \
        style if style in ("holder", "number", "place") else rng.choice(["holder", "number"])
    ctx.holder_pron = style == "question_if"
    start, m0 = _opening(ctx, events[0], base)
    ctx.holder_pron = False
    told = [_event(ctx, ev, meta) for ev in events[1:]]
    clauses, flags = [t for t, _ in told], [m0] + [m for _, m in told]
    meta["question"], question = _question(ctx, removal, single=style == "question_if")
    if style == "question_if":
        facts = [start] + clauses
        body = ", ".join(facts[:-1]) + rng.choice(IF_LAST) + facts[-1] if len(facts) > 1 else facts[0]
        return question[:-1] + " if " + _low(body) + "?", flags
    if style == "notes":
        return " ".join([_cap(start) + "."] + [_cap(c) + "." for c in clauses] + [question]), flags
    facts = [_cap(start) + "."] + _sentences(ctx, clauses)
    if style == "question_first":
        return " ".join([question] + ([rng.choice(["Here is what happens:", "The story:"])] if rng.random() < 0.3
                                      else []) + facts), flags
    return " ".join(facts + [question]), flags


def _simulate(rng: random.Random, level: int) -> list[tuple] | None:
    """small_arithmetic's numbers for one plan: ("start", a), ("add"|"sub", b), ("pack"|"packstart", k, m),
    ("div", d); every value positive, each division exact. None: this plan found no numbers."""
    ranges, plan = SMALL_RANGES[level], _plan(rng, level)
    x, pending, events = 0, 1, []
    for i, kind in enumerate(plan):
        div = rng.randint(*ranges["d"]) if i + 1 < len(plan) and plan[i + 1] == "div" else None
        fits = (lambda v, d=div: v > 0 and (d is None or v % d == 0))
        if kind == "start":
            x = _choose(rng, *ranges["a"], fits)
            events.append(("start", x))
        elif kind in ("add", "sub"):
            sign = 1 if kind == "add" else -1
            b = _choose(rng, *ranges["b"], lambda v, x=x, s=sign, ok=fits: ok(x + s * v))
            if b is None and kind == "sub":  # too little left to take away: add instead, as small_arithmetic does
                kind, b = "add", _choose(rng, *ranges["b"], lambda v, x=x, ok=fits: ok(x + v))
            if b is None:
                return None
            x = x + b if kind == "add" else x - b
            events.append((kind, b))
        elif kind in ("pack", "packstart"):
            base = x if kind == "pack" else 0
            pairs = [(k, m) for k in range(ranges["k"][0], ranges["k"][1] + 1)
                     for m in range(ranges["m"][0], ranges["m"][1] + 1) if fits(base + k * m)]
            if not pairs:
                return None
            k, m = rng.choice(pairs)
            x = base + k * m
            events.append((kind, k, m))
        else:  # div: the step before made x a multiple of the divisor chosen for it
            x //= pending
            events.append(("div", pending))
        pending = div or 1
    return events


def _working(events: list[tuple], m_first: list[bool]) -> tuple[list[str], int]:
    """One "a op b = c" line per step, operands in the story's order (the start first); and the answer."""
    x, lines = 0, []
    for ev, mf in zip(events, m_first):
        kind = ev[0]
        if kind == "start":
            x = ev[1]
        elif kind in ("add", "sub"):
            c = x + ev[1] if kind == "add" else x - ev[1]
            lines.append(f"{x} {'+' if kind == 'add' else '-'} {ev[1]} = {c}")
            x = c
        elif kind in ("pack", "packstart"):
            u, v = (ev[2], ev[1]) if mf else (ev[1], ev[2])
            lines.append(f"{u} * {v} = {u * v}")
            if kind == "pack":
                lines.append(f"{x} + {u * v} = {x + u * v}")
            x = x + u * v if kind == "pack" else u * v
        else:
            lines.append(f"{x} / {ev[1]} = {x // ev[1]}")
            x //= ev[1]
    return lines, x


def compose(rng: random.Random, level: int) -> tuple[Problem, dict]:
    """One story of `level` and the parts it used: scene, style (sentence order), verbs, question form,
    passive and joined event counts (tests measure breadth from these)."""
    for _ in range(100):
        events = _simulate(rng, level)
        if events is not None:
            break
    else:  # pragma: no cover - every plan has numbers at these ranges
        raise RuntimeError(f"story_arithmetic level {level}: no valid numbers after 100 attempts")
    scene = rng.choice(SCENES)
    style = rng.choice([s for s in STYLES if s != "holder" or scene.holder == "person" or scene.holders])
    name, pron = rng.choice(NAMES)
    friends = [n for n, _ in rng.sample(NAMES, 4) if n != name]
    actor = "I" if style == "first" else rng.choice(scene.roles) if scene.roles and rng.random() < 0.4 else "name"
    past = style == "first" or (style not in ("notes", "question_if") and rng.random() < 0.25)
    ctx = _Ctx(rng, scene, style, past, name, pron, friends, rng.choice(scene.things), rng.choice(scene.places),
               rng.choice(scene.packs), rng.choice(scene.holders) if scene.holders else "", actor)
    meta = {"scene": scene.kind, "style": style, "verbs": []}
    text, m_first = _tell(ctx, events, meta)
    lines, answer = _working(events, m_first)
    meta.update(passive=ctx.passive, joined=ctx.joined)
    return Problem(text, str(answer), "\n".join(lines), level), meta


@register("story_arithmetic", levels=(1, 2, 3, 4, 5), default_levels=(1, 2, 3, 4),
          description="small_arithmetic's levels told as varied stories: scenes, sentence orders, question forms")
def story_arithmetic(rng: random.Random, level: int) -> Problem:
    return compose(rng, level)[0]
