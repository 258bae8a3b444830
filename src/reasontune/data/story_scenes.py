"""The scenes of procedural:story_arithmetic (data/stories.py renders them): what is counted, where, and the
verb phrases that add to it or take from it, each written so that a careful reader knows which way it goes.

A verb phrase is "present | past | participle": the clause in the present (a third-person subject), the same
clause in the past (any subject, so first-person stories use it), and a participle for the passive and for
terse notes ("sold" -> "3 of them are sold", "Sold: 3."); an empty participle means the phrase has no passive
(things that move on their own: "{n} [flies|fly] away").

Placeholders: {S} who acts (the holder in a person's scene, else the actor); {O}/{P} the holder as object and
possessive; {F} another person; {n} the counted amount with its noun ("3 more ducks", "3 of them"), {b}/{ob}
the bare number and the noun that agrees with it; {place}/{from} where the things are and where they leave
from; {k} {c} of {m}: packs; {d} equal parts. "[is|are]" picks the singular when the amount is 1.
No template holds a digit: every number of a story is an operand of its working.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scene:
    kind: str
    holder: str  # "person": someone owns the count; "place": a place holds it
    things: tuple  # (singular, plural)
    places: tuple  # (where they are, where they leave from)
    add: tuple
    sub: tuple
    pack: tuple  # present | past, adding {k} {c} of {m}
    packs: tuple  # the {c} of a pack
    rest: tuple = ("are",)  # number first: "{a} {o} {rest} {place}"
    holders: tuple = ()  # place scenes: "the bus" ... ({H})
    holder_open: tuple = ()  # place scenes, holder first
    roles: tuple = ()  # place scenes: who acts when not named ("the baker")
    partitive: bool = True  # "3 of them" reads well (not for dollars or liters)
    div: tuple = ()  # present | past; empty: the holder kind's own
    extra: dict = field(default_factory=dict)


PERSON_DIV = (
    ("{S} splits the {o} into {d} equal piles and keeps one pile"
     " | {S} split the {o} into {d} equal piles and kept one pile"),
    ("{S} divides the {o} into {d} equal groups and keeps only one group"
     " | {S} divided the {o} into {d} equal groups and kept only one group"),
    ("{S} packs the {o} equally into {d} {c}, keeps one and gives the other {c} away"
     " | {S} packed the {o} equally into {d} {c}, kept one and gave the other {c} away"),
    ("{S} shares the {o} out in {d} equal parts and keeps just one part"
     " | {S} shared the {o} out in {d} equal parts and kept just one part"),
)
PLACE_DIV = (
    ("{S} sorts the {o} into {d} equal groups and leaves only one group {place}"
     " | {S} sorted the {o} into {d} equal groups and left only one group {place}"),
    ("{S} moves all but one of {d} equal groups of the {o} somewhere else"
     " | {S} moved all but one of {d} equal groups of the {o} somewhere else"),
)
SELF_DIV = (
    ("The {o} form {d} equal groups, and only one group stays {place}"
     " | The {o} formed {d} equal groups, and only one group stayed {place}"),
    ("The {o} split into {d} equal groups, and all but one group leave"
     " | The {o} split into {d} equal groups, and all but one group left"),
)
MONEY_DIV = (
    ("{S} splits the money equally into {d} envelopes and keeps one envelope"
     " | {S} split the money equally into {d} envelopes and kept one envelope"),
    ("{S} shares the money equally among {d} jars and keeps only one jar"
     " | {S} shared the money equally among {d} jars and kept only one jar"),
)
PERSON_PACK = (
    "{S} buys {k} {c} of {o} with {m} in each | {S} bought {k} {c} of {o} with {m} in each",
    "{F} gives {O} {k} {c} with {m} {o} in each | {F} gave {O} {k} {c} with {m} {o} in each",
    "{S} gets {k} {c} of {m} {o} | {S} got {k} {c} of {m} {o}",
    "{S} adds {k} full {c}, each with {m} {o} | {S} added {k} full {c}, each with {m} {o}",
    "{S} is given {m} {o} in each of {k} {c} | {S} was given {m} {o} in each of {k} {c}",
)

SCENES = (
    Scene("possessions", "person",
          (("marble", "marbles"), ("sticker", "stickers"), ("trading card", "trading cards"), ("stamp", "stamps"),
           ("toy car", "toy cars"), ("seashell", "seashells"), ("bead", "beads"), ("crayon", "crayons"),
           ("comic book", "comic books"), ("pencil", "pencils")),
          (("in {P} room", "from {P} room"), ("in {P} backpack", "out of {P} backpack"),
           ("in {P} desk drawer", "out of {P} desk drawer")),
          add=("{S} buys {n} | {S} bought {n} | bought for {O}",
               "{S} finds {n} under the sofa | {S} found {n} under the sofa |",
               "{S} wins {n} at the fair | {S} won {n} at the fair |",
               "{F} gives {O} {n} | {F} gave {O} {n} | given to {O} by {F}",
               "{S} receives {n} from {F} | {S} received {n} from {F} | sent to {O} by {F}",
               "{S} trades an old kite for {n} | {S} traded an old kite for {n} |",
               "{S} gets {n} as a birthday present | {S} got {n} as a birthday present | given to {O} as a present",
               "{F} hands {O} {n} | {F} handed {O} {n} | handed to {O}"),
          sub=("{S} gives {n} to {F} | {S} gave {n} to {F} | given to {F}",
               "{S} sells {n} | {S} sold {n} | sold",
               "{S} loses {n} | {S} lost {n} | lost",
               "{F} takes {n} from {O} | {F} took {n} from {O} | taken by {F}",
               "{S} donates {n} to the school fair | {S} donated {n} to the school fair | donated to the school fair",
               "{S} throws away {n} | {S} threw away {n} | thrown away",
               "{S} trades away {n} for a yo-yo | {S} traded away {n} for a yo-yo | traded away",
               "{S} drops {n} down a drain | {S} dropped {n} down a drain | dropped down a drain"),
          pack=PERSON_PACK, packs=("bags", "boxes", "packs", "tins")),
    Scene("money", "person", (("dollar", "dollars"),),
          (("in {P} wallet", "from {P} wallet"), ("in {P} piggy bank", "out of {P} piggy bank"),
           ("in {P} savings jar", "out of {P} savings jar")),
          add=("{S} earns {n} washing cars | {S} earned {n} washing cars |",
               "{S} is paid {n} for walking a dog | {S} was paid {n} for walking a dog |",
               "{F} gives {O} {n} | {F} gave {O} {n} | given to {O} by {F}",
               "{S} sells an old bike for {b} {ob} | {S} sold an old bike for {b} {ob} |",
               "{S} gets {n} back from {F} | {S} got {n} back from {F} | paid back to {O} by {F}",
               "{S} wins {n} in a raffle | {S} won {n} in a raffle |",
               "{S} finds {n} in an old coat | {S} found {n} in an old coat |"),
          sub=("{S} spends {n} on lunch | {S} spent {n} on lunch | spent on lunch",
               "{S} pays {b} {ob} for a bus ticket | {S} paid {b} {ob} for a bus ticket | paid for a bus ticket",
               "{S} buys a book for {b} {ob} | {S} bought a book for {b} {ob} |",
               "{S} gives {n} to charity | {S} gave {n} to charity | given to charity",
               "{S} lends {n} to {F} | {S} lent {n} to {F} | lent to {F}",
               "{S} pays {F} back {n} | {S} paid {F} back {n} | paid back to {F}",
               "{S} loses {n} on the way home | {S} lost {n} on the way home | lost on the way home"),
          pack=("{S} earns {m} {o} a day for {k} days | {S} earned {m} {o} a day for {k} days",
                "{S} works {k} hours at {m} {o} an hour | {S} worked {k} hours at {m} {o} an hour",
                "{S} sells {k} drawings for {m} {o} each | {S} sold {k} drawings for {m} {o} each"),
          packs=("envelopes",), partitive=False, div=MONEY_DIV,
          extra={"packopen": {"holder": ("{N} has {k} {c} with {m} {o} in each",),
                              "number": ("{k} {c} with {m} {o} in each are {place}",),
                              "place": ("{Place} there are {k} {c} with {m} {o} in each",),
                              "first": ("I had {k} {c} with {m} {o} in each",)},
                 "questions": (("money", "How much money {does} {N} have now, in dollars?", False, True),)}),
    Scene("food", "person",
          (("cookie", "cookies"), ("muffin", "muffins"), ("cupcake", "cupcakes"), ("pancake", "pancakes"),
           ("dumpling", "dumplings"), ("cracker", "crackers")),
          (("in {P} kitchen", "from {P} kitchen"), ("on {P} plate", "off {P} plate"),
           ("in {P} lunch box", "out of {P} lunch box")),
          add=("{S} bakes {n} | {S} baked {n} |",
               "{S} makes {n} | {S} made {n} |",
               "{F} brings {O} {n} | {F} brought {O} {n} | brought to {O}",
               "{S} buys {n} at the market | {S} bought {n} at the market | bought for {O} at the market"),
          sub=("{S} eats {n} | {S} ate {n} | eaten",
               "{S} has {n} for breakfast | {S} had {n} for breakfast | eaten for breakfast",
               "{F} eats {n} | {F} ate {n} | eaten by {F}",
               "the dog gobbles up {n} | the dog gobbled up {n} | gobbled up by the dog",
               ("{S} drops {n} on the floor and throws [it|them] out"
                " | {S} dropped {n} on the floor and threw [it|them] out |"),
               "{n} [gets|get] burnt and [goes|go] in the bin | {n} got burnt and went in the bin |"),
          pack=PERSON_PACK, packs=("trays", "boxes", "plates", "bags")),
    Scene("birds", "place",
          (("sparrow", "sparrows"), ("pigeon", "pigeons"), ("crow", "crows"), ("robin", "robins"),
           ("bird", "birds"), ("duck", "ducks"), ("goose", "geese")),
          (("on the fence", "off the fence"), ("on the roof", "off the roof"), ("by the pond", "from the pond"),
           ("in the old oak tree", "out of the old oak tree")),
          add=("{n} [lands|land] | {n} landed |", "{n} [flies|fly] in | {n} flew in |",
               "{n} [joins|join] them | {n} joined them |",
               "{n} [swoops|swoop] down to join the flock | {n} swooped down to join the flock |"),
          sub=("{n} [flies|fly] away | {n} flew away |", "{n} [takes|take] off | {n} took off |",
               "a cat scares off {n} | a cat scared off {n} | scared off by a cat",
               "{n} [leaves|leave] for the south | {n} left for the south |"),
          pack=("{k} flocks of {m} {o} arrive | {k} flocks of {m} {o} arrived",
                "{m} {o} fly in from each of {k} nearby gardens | {m} {o} flew in from each of {k} nearby gardens"),
          packs=("flocks",), rest=("sit", "rest", "are", "wait")),
    Scene("farm", "place",
          (("sheep", "sheep"), ("cow", "cows"), ("goat", "goats"), ("horse", "horses"), ("pig", "pigs")),
          (("in the field", "out of the field"), ("in the barn", "out of the barn"),
           ("in the meadow", "out of the meadow")),
          add=("{n} [wanders|wander] in | {n} wandered in |",
               "the farmer brings in {n} | the farmer brought in {n} | brought in by the farmer",
               "{n} [comes|come] back from the hill | {n} came back from the hill |",
               "a neighbour drops off {n} | a neighbour dropped off {n} | dropped off by a neighbour"),
          sub=("{n} [wanders|wander] off | {n} wandered off |",
               "the farmer sells {n} at the market | the farmer sold {n} at the market | sold at the market",
               "{n} [escapes|escape] through a gap in the fence | {n} escaped through a gap in the fence |",
               "the farmer leads {n} out to the river | the farmer led {n} out to the river | led out to the river",
               "{n} [is|are] moved to another farm | {n} [was|were] moved to another farm |"),
          pack=("a truck brings {k} pens of {m} {o} | a truck brought {k} pens of {m} {o}",
                "{k} trailers arrive, each carrying {m} {o} | {k} trailers arrived, each carrying {m} {o}"),
          packs=("pens",), rest=("graze", "are", "stand"), holders=("the farm",),
          holder_open=("The farm has {a} {o} {place}.",), roles=("the farmer",)),
    Scene("vehicles", "place",
          (("car", "cars"), ("van", "vans"), ("truck", "trucks"), ("taxi", "taxis"), ("motorbike", "motorbikes")),
          (("in the parking lot", "out of the parking lot"), ("outside the station", "away from the station"),
           ("in the garage", "out of the garage")),
          add=("{n} [pulls|pull] in | {n} pulled in |", "{n} [parks|park] there | {n} parked there |",
               "{n} [drives|drive] in | {n} drove in |", "{n} [arrives|arrive] | {n} arrived |"),
          sub=("{n} [drives|drive] away | {n} drove away |", "{n} [pulls|pull] out | {n} pulled out |",
               "{n} [is|are] towed away | {n} [was|were] towed away |", "{n} [leaves|leave] | {n} left |"),
          pack=("{k} rows of {m} {o} pull in | {k} rows of {m} {o} pulled in",
                "{k} tour groups arrive with {m} {o} each | {k} tour groups arrived with {m} {o} each"),
          packs=("rows",), rest=("are parked", "wait", "are")),
    Scene("bus", "place",
          (("passenger", "passengers"), ("person", "people"), ("student", "students"), ("tourist", "tourists")),
          (("on {H}", "off {H}"), ("aboard {H}", "off {H}")),
          add=("{n} [gets|get] on | {n} got on |",
               "{n} [boards|board] at the next stop | {n} boarded at the next stop |",
               "{n} [climbs|climb] aboard | {n} climbed aboard |", "the driver lets {n} on | the driver let {n} on |",
               "{n} [hops|hop] on at the market | {n} hopped on at the market |"),
          sub=("{n} [gets|get] off | {n} got off |", "{n} [steps|step] off at the park | {n} stepped off at the park |",
               "{n} [leaves|leave] at the station | {n} left at the station |",
               "{n} [gets|get] out at the next stop | {n} got out at the next stop |",
               "the driver asks {n} to get off | the driver asked {n} to get off |"),
          pack=("{k} groups of {m} {o} get on | {k} groups of {m} {o} got on",
                "{k} families of {m} board together | {k} families of {m} boarded together"),
          packs=("groups",), rest=("ride", "sit", "are"), holders=("the bus", "the train", "the tram"),
          holder_open=("{H} is carrying {a} {o}.", "{H} has {a} {o} on board."), roles=("the driver",)),
    Scene("queue", "place",
          (("person", "people"), ("customer", "customers"), ("child", "children"), ("fan", "fans")),
          (("in the line at the bakery", "from the line"), ("in the queue for the museum", "from the queue"),
           ("in line at the ticket booth", "from the line")),
          add=("{n} [joins|join] the line | {n} joined the line |",
               "{n} [lines|line] up at the back | {n} lined up at the back |",
               "{n} [arrives|arrive] and [waits|wait] too | {n} arrived and waited too |",
               "{n} [gets|get] in line behind them | {n} got in line behind them |"),
          sub=("{n} [is|are] served and [leaves|leave] | {n} [was|were] served and left |",
               "{n} [gives|give] up and [goes|go] home | {n} gave up and went home |",
               "{n} [buys|buy] tickets and [goes|go] inside | {n} bought tickets and went inside |",
               "{n} [walks|walk] away | {n} walked away |", "{n} [leaves|leave] the line | {n} left the line |"),
          pack=("{k} groups of {m} {o} join the line | {k} groups of {m} {o} joined the line",),
          packs=("groups",), rest=("wait", "stand", "are")),
    Scene("container", "place",
          (("apple", "apples"), ("book", "books"), ("toy", "toys"), ("egg", "eggs"),
           ("bottle of juice", "bottles of juice")),
          (("in the crate", "out of the crate"), ("on the shelf", "off the shelf"),
           ("in the big box", "out of the big box")),
          add=("{S} puts {n} {place} | {S} put {n} {place} | put {place}", "{S} adds {n} | {S} added {n} | added",
               "{S} packs {n} {place} | {S} packed {n} {place} | packed {place}",
               "{F} brings {n} and puts [it|them] {place} | {F} brought {n} and put [it|them] {place} |"),
          sub=("{S} takes {n} {from} | {S} took {n} {from} | taken {from}",
               "{S} removes {n} | {S} removed {n} | removed",
               "{F} grabs {n} | {F} grabbed {n} | grabbed by {F}",
               "{S} moves {n} to the kitchen | {S} moved {n} to the kitchen | moved to the kitchen",
               "{S} gives {n} to a neighbour | {S} gave {n} to a neighbour | given to a neighbour"),
          pack=("{S} puts in {k} {c} of {m} {o} | {S} put in {k} {c} of {m} {o}",
                "{S} empties {k} {c} with {m} {o} each into it | {S} emptied {k} {c} with {m} {o} each into it"),
          packs=("bags", "boxes"), rest=("are", "sit")),
    Scene("shop", "place",
          (("loaf of bread", "loaves of bread"), ("umbrella", "umbrellas"), ("hat", "hats"), ("cake", "cakes"),
           ("toy robot", "toy robots"), ("flower pot", "flower pots")),
          (("in {H}", "out of {H}"), ("on the shelves of {H}", "off the shelves of {H}"),
           ("in stock at {H}", "from {H}")),
          add=("a delivery brings {n} | a delivery brought {n} | delivered",
               "{S} orders {n} and [it arrives|they arrive] | {S} ordered {n} and [it|they] arrived |",
               "a customer returns {n} | a customer returned {n} | returned by a customer",
               "{S} unpacks {n} from the storeroom | {S} unpacked {n} from the storeroom | unpacked from the storeroom",
               "{S} makes {n} to sell | {S} made {n} to sell |"),
          sub=("{S} sells {n} | {S} sold {n} | sold", "customers buy {n} | customers bought {n} | bought by customers",
               "a customer buys {n} | a customer bought {n} | bought",
               ("{S} throws out {n} that [is|are] damaged"
                " | {S} threw out {n} that [was|were] damaged | thrown out as damaged"),
               "{S} sends {n} back to the factory | {S} sent {n} back to the factory | sent back to the factory"),
          pack=("a van delivers {k} {c} of {m} {o} | a van delivered {k} {c} of {m} {o}",
                "{S} receives {k} {c} holding {m} {o} each | {S} received {k} {c} holding {m} {o} each"),
          packs=("crates", "cartons"), holders=("the shop", "the store", "the corner shop"),
          holder_open=("{H} has {a} {o} for sale.", "{H} stocks {a} {o}."),
          roles=("the shopkeeper", "the owner")),
    Scene("library", "place", (("book", "books"), ("comic", "comics"), ("magazine", "magazines")),
          (("on the class library's shelves", "from the class library"), ("in the school library", "from the library")),
          add=("students return {n} | students returned {n} | returned",
               "{S} donates {n} to the library | {S} donated {n} to the library | donated",
               "the school buys {n} | the school bought {n} | bought by the school",
               "{F} brings back {n} | {F} brought back {n} | brought back by {F}"),
          sub=("students borrow {n} | students borrowed {n} | borrowed",
               "{n} [is|are] checked out | {n} [was|were] checked out |",
               "{S} removes {n} that [is|are] torn | {S} removed {n} that [was|were] torn | removed as torn",
               "{S} lends {n} to another class | {S} lent {n} to another class | lent to another class"),
          pack=("the school buys {k} {c} of {m} {o} | the school bought {k} {c} of {m} {o}",),
          packs=("boxes", "sets"), rest=("are", "sit"), holders=("the library",),
          holder_open=("The library has {a} {o} {place}.",), roles=("the librarian",)),
    Scene("garden", "place",
          (("tulip", "tulips"), ("rose", "roses"), ("daisy", "daisies"), ("sunflower", "sunflowers")),
          (("in the garden", "from the garden"), ("in the flower bed", "from the flower bed")),
          add=("{S} plants {n} | {S} planted {n} | planted", "{F} plants {n} | {F} planted {n} | planted by {F}",
               "{S} buys {n} and plants [it|them] | {S} bought {n} and planted [it|them] |"),
          sub=("{S} picks {n} | {S} picked {n} | picked",
               "{S} cuts {n} for a vase | {S} cut {n} for a vase | cut for a vase",
               "a rabbit eats {n} | a rabbit ate {n} | eaten by a rabbit",
               "{n} [wilts|wilt] and [is|are] pulled out | {n} wilted and [was|were] pulled out |",
               "{S} digs up {n} | {S} dug up {n} | dug up"),
          pack=("{S} plants {k} rows of {m} {o} | {S} planted {k} rows of {m} {o}",),
          packs=("rows",), rest=("grow", "bloom", "are"), roles=("the gardener",)),
    Scene("woodpile", "place", (("log", "logs"),),
          (("in the woodpile", "from the woodpile"), ("by the stove", "from beside the stove")),
          add=("{S} chops {n} | {S} chopped {n} | chopped",
               "{S} carries in {n} from the shed | {S} carried in {n} from the shed |"),
          sub=("{S} burns {n} in the stove | {S} burned {n} in the stove | burned in the stove",
               "{n} [is|are] used to cook dinner | {n} [was|were] used to cook dinner |"),
          pack=("{S} carries in {k} {c} of {m} {o} | {S} carried in {k} {c} of {m} {o}",),
          packs=("baskets", "armfuls"), rest=("are", "lie")),
)
