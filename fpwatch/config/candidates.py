"""The prompts border-input discovery tries (B3IT, research/anchors-2026-12.md section 3).

B3IT takes single tokens of the model's own tokenizer; fpwatch knows no tokenizer, so it tries short
strings that are one or two tokens in every common tokenizer: everyday English words (written for
fpwatch), letters, digits and symbols, then two-word pairs made from the words. The order is a fixed
shuffle, so every fpwatch tries the same prompts in the same order (a model's discovery is repeatable,
and a re-probe after a change continues where the last scan stopped).
"""

from __future__ import annotations

import functools
import random
import string

# Everyday English words, alphabetical (written as prose for reading; split once).
_WORDS = """
able about above act add after again against ago air all also always among an and animal answer any
appear apple are area as ask at back banana base be bear beauty been before began begin behind best
better between big bird black blue boat body book both box boy bring brought build busy but by call came
can car care carry cat cause center certain change check children city class clear close coffee cold
color come common complete contain correct could country course cover cross cry cut dark day decide deep
develop did differ direct distant do does dog done door down draw drive dry during each early earth ease
east eat end enough equate even ever every example eye face fact fall family far farm fast father feel
feet few field figure fill final find fine fire first fish five fly follow food foot for force form
found four fox free friend frog from front full game gave get girl give go gold good got govern great
green ground group grow had half hand happen hard has have he head hear heard heat hello help her here
hey hi high him his hold home horse hot hour house how hundred idea if in inch interest is island it
just keep kind king knew know land language large last late laugh lay lead learn leave left lemon less
let letter life light like line lion list listen little live long look love low machine made main make
man many map mark may maybe me mean measure men might mile mind minute miss money moon more morning most
mother mountain mouse move much multiply music must my name near need never new next night no north note
nothing notice noun now number numeral object ocean of off often oh okay old on once one only open or
orange order other our out over owl own page paint paper part pass pattern people perhaps person picture
piece place plain plan plane plant play point port pose possible pound power press problem produce
product pull put question quick rain ran reach read ready real record red remember rest right river road
rock room round rule run said same saw say school science sea second see seem self sentence serve set
several shape shark she ship short should show side simple since sing six slow small snake snow so some
song soon sound south space special spell stand star start state stay stead step still stood stop story
street strong study such sun sure surface system table tail take talk tea teach tell ten test than
thanks that the their them then there these they thing think this those though thought thousand three
through tiger time tire to together told too took top toward town travel tree true try turn two under
unit until up us use usual verb very voice vowel wait walk want war warm was watch water way we week
well went were west whale what wheel when where which while white who whole why will wind with wolf
wonder wood word work world would write year yes you young your
""".split()  # noqa: SIM905

_SYMBOLS = list("?!.,:;-+*/=#@&%$()[]{}<>~^_'\"`|\\")
_PAIR_LEFT = ("a", "the", "my", "one", "no", "big", "old", "new", "red", "hot", "dear", "hello", "why", "not")
_PAIR_COUNT = 3000


@functools.cache
def border_candidates() -> tuple[str, ...]:
    """Every prompt discovery may try, in the order it tries them (about 4,000; more than any budget needs)."""
    words = list(dict.fromkeys(_WORDS))
    singles = [*words, *(w.capitalize() for w in words[:200]), *string.ascii_letters, *string.digits, *_SYMBOLS]
    rng = random.Random("fpwatch border candidates v1")
    pairs: list[str] = []
    seen: set[str] = set()
    while len(pairs) < _PAIR_COUNT:
        pair = f"{rng.choice(_PAIR_LEFT)} {rng.choice(words)}"
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    rng.shuffle(singles)
    return tuple(dict.fromkeys([*singles, *pairs]))
