"""What a word is to the checks that read facts: filler, identifiers, numbers, names.

The grounding check and the lingua pruner both need to tell a word that carries a
fact (a number, an id, a name) from one that only holds a sentence together; the
rules live here once, so a word the pruner keeps is a word the check looks for.
"""

from __future__ import annotations

import re
import unicodedata

# Words that may open a telegraphic fact with a capital letter without being a name.
_OPENERS = frozenset(
    """
    a an the this that these those it its he she they we you i his her their our my your
    there here what when where who why how which if then also and but or so not no yes
    user assistant tool system human ai result results call calls called output input error
    note notes fact facts summary status plan plans decision decided task goal request
    reply replied response answer answered asked asks said says told tells mentioned
    went goes going attended attends visited visits moved moves started starts finished
    finishes bought buys made makes got gets has have had is was were are be been being
    will would can could should may might must did does do done uses used using wants
    wanted likes liked loves loved enjoys enjoyed prefers preferred feels felt thinks
    thought plans planned hopes hoped tried tries works worked lives lived joined joins
    found finds saw sees took takes gave gives ran runs read reads wrote writes shared
    shares created creates added adds removed removes updated updates fixed fixes
    failed fails passed passes returned returns ok okay both all some many most each
    every other another new old first last next recent recently today yesterday tomorrow
    tonight currently now later earlier before after during since until
    """.split()
)

COMMON_OPENERS = _OPENERS | frozenset(
    "thank thanks love hope sorry great good glad nice happy excited".split()
)

STOPWORDS = _OPENERS | frozenset(
    """
    about above across against along among around because before below beside between
    beyond both from into like near onto over past than through toward under upon with
    within without for of on in at to by as up down out off just very really quite
    such only own same too more less much any few lot lots thing things something
    anything everything nothing been him them me us am was were get got also still even
    ever never always often sometimes again once well back way ways day days time times
    one ones per via etc
    """.split()
)

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12,
}  # fmt: skip
# Words that count ("a week ago", "a couple of days") without being a number: they
# never ground a digit ("a team" must not ground "Team: 1").
_COUNT_WORDS = {"a": 1, "an": 1, "couple": 2, "couple of": 2, "a couple of": 2, "few": 3}

_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(\d+(?:\.\d+)?)(?=[a-z°%]{0,3}(?!\w))")
# A number, maybe with a currency sign, an ordinal suffix or a short unit: $1200, 5th, 7.5°c.
QUANTITY_RE = re.compile(r"[-+~]?[$€£¥]?(\d+(?:\.\d+)?)(?:st|nd|rd|th|%|°[a-z]?|[a-z]{1,3})?")
_SPLIT_RE = re.compile(r"[\s,;()\[\]{}<>\"'`=|→⇒–—]+|:(?!//)|(?<=\w)\.(?=\s|$)")
WORD_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


def count_value(phrase: str) -> int | None:
    """How many ``phrase`` counts ("3", "two", "a couple of"); ``None`` below one."""
    if phrase.isdigit():
        return int(phrase)
    lower = phrase.lower()
    value = NUMBER_WORDS.get(lower, _COUNT_WORDS.get(lower))
    return value if value is not None and value >= 1 else None


def unify(text: str) -> str:
    """Unicode forms, quotes, dashes and thousands separators made uniform; case kept."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"[‐‑‒–—−]", "-", text)
    return re.sub(r"(?<=\d)[,\u202f\u00a0'](?=\d{3}(?!\d))", "", text)


def normalise(text: str) -> str:
    """Lowercase, unify quotes and dashes, drop thousands separators, collapse spaces."""
    return re.sub(r"\s+", " ", unify(text)).strip().lower()


def numbers_in(text: str) -> set[float]:
    """The numbers ``text`` writes in digits."""
    return {float(match.group(1)) for match in _NUMBER_RE.finditer(text)}


def pieces(text: str) -> list[tuple[str, int]]:
    """Whitespace/punctuation separated pieces of ``text`` with their start offsets."""
    out: list[tuple[str, int]] = []
    position = 0
    for piece in _SPLIT_RE.split(text):
        start = text.find(piece, position) if piece else position
        if piece:
            position = start + len(piece)
            stripped = piece.strip(".!?*-•~")
            if stripped:
                out.append((stripped, start + piece.find(stripped)))
    return out


def is_idlike(token: str) -> bool:
    """Whether a token names something exactly: ids, paths, acronyms, CamelCase."""
    has_digit = any(ch.isdigit() for ch in token)
    has_alpha = any(ch.isalpha() for ch in token)
    if has_digit and has_alpha:
        return True
    if any(ch in token for ch in "/\\_@#$"):
        return has_alpha or has_digit
    if "." in token and has_alpha:  # file.py, example.com
        return True
    if has_alpha and len(token) >= 2 and token.isupper():  # LGBTQ, HTTP
        return True
    return bool(re.search(r"[a-z][A-Z]", token))  # KeyError, getWeather


def stem(word: str) -> str:
    """A crude stem: enough to match "visited" with "visiting"."""
    return word[:5] if len(word) > 5 else word
