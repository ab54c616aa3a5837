"""What a fact's words are worth in the memory block: information, rarity, relevance.

A clause is worth its informative words (numbers, names and identifiers most,
words of reaction little), each weighed by how few facts of the thread use it.
What the rest of the view shows (the task, the latest human turn, the recent
turns) is the focus: its words add little in a fact, and a caller may also favour
clauses that name them (identifiers and paths most). A clause that says nothing
(``100% agree``, ``ok ok ok``) is worth nothing and is never shown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from langchain_core.messages import BaseMessage

from .messages import text_of

_WORD = re.compile(r"[\w'./:-]+", re.UNICODE)
_DIGIT = re.compile(r"\d")
_IDLIKE = re.compile(r"(?=[^\d]*\d)(?=.*[a-z_/])\S{4,}$")  # letters and digits: an identifier
_CODE_NAME = re.compile(r"\w_\w|\w/\w|\w\.\w|[a-z][A-Z]")  # snake_case, a/path, a.b, camelCase
_NUMBER_ONLY = re.compile(r"^[\d.,:%#-]+$")
COMMON = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be
    been being it its this that these those i you he she we they me him her us them my your
    his our their do does did have has had not no yes just very really also too can could
    will would should may might must shall about into over after before up down out off
    again more most some any all each every both few many much such only own same than
    there here when where why how what which who whom user assistant ai thanks thank okay
    ok great good nice sure yeah hey hi hello""".split()
)
# Words of reaction and feeling: true, but rarely what anyone asks about later.
VAGUE = frozenset(
    """amazing awesome awful beautiful cool exciting excited fantastic fun glad grateful
    happy hopeful important incredible inspiring inspired interesting lovely love loved
    meaningful nice optimistic powerful proud rewarding sad special super thankful tough
    wonderful feel feeling felt feels think thought know make made makes making want wanted
    going time times really lot lots thing things way day days people guys
    definitely totally""".split()
)
# Words that only agree or react: a clause made of these (and a percentage) is empty.
_REACTION = frozenset(
    """agree agreed true right same exactly absolutely indeed yep yup lol haha wow cute
    omg congrats congratulations cheers bye welcome sorry please done""".split()
)
# How strongly a focus word ties a clause to the work: identifiers, names, other words.
FOCUS_ID, FOCUS_NAME, FOCUS_WORD = 1.5, 0.6, 0.3
_FOCUS_CHARS = 24_000


def key(text: str) -> str:
    return " ".join(text.lower().split())


_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_'./:-")
_ASCII_GAPS = bytes(i if chr(i) in _WORD_CHARS else 32 for i in range(256))

# What base_words and content_free learn of a word, kept by a caller for the next clause.
WordNotes = dict[str, tuple[str, float, str, int]]
_MEANS, _SAYS_NOTHING, _NUMBER = 0, 1, 2


def words_in(text: str) -> list[str]:
    """The words of a text as ``_WORD`` finds them; ASCII text (most facts) faster."""
    if text.isascii():
        return text.encode().translate(_ASCII_GAPS).decode().split()
    return _WORD.findall(text)


def _note(word: str) -> tuple[str, float, str, int]:
    """A word's weight before rarity (0: not informative) and its lower-case form, and
    how it reads in a clause that may say nothing."""
    lower = word.lower()
    informative = lower.strip(".:'-/")
    if not informative or informative in COMMON:
        base = 0.0
    elif _DIGIT.search(word):
        base = 2.0
    elif informative in VAGUE:
        base = 0.2
    elif word[0].isupper():
        base = 1.5
    else:
        base = 1.0 if len(informative) > 2 else 0.0
    bare = lower.strip(".:'-/%")
    if bare in _REACTION or bare in COMMON or bare in VAGUE:
        kind = _SAYS_NOTHING
    else:
        kind = _NUMBER if bare.isdigit() else _MEANS
    return informative, base, bare, kind


def _notes_of(words: list[str], notes: WordNotes | None) -> list[tuple[str, float, str, int]]:
    if notes is None:
        return [_note(word) for word in dict.fromkeys(words)]
    out = []
    for word in dict.fromkeys(words):
        note = notes.get(word)
        if note is None:
            note = notes[word] = _note(word)
        out.append(note)
    return out


def base_words(text: str, notes: WordNotes | None = None) -> list[tuple[str, float]]:
    """The informative words of a clause, each with a weight before rarity.

    Numbers and names weigh more than plain words, words of reaction little; a
    question carries half of what a statement does, and a clause of bare numbers
    (line numbers, counts) little. ``notes`` caches what each word is (any dict).
    """
    out: dict[str, float] = {}
    question = 0.5 if text.rstrip().endswith("?") else 1.0
    # A word said again weighs nothing more: each spelling is looked at once.
    for informative, base, _, _ in _notes_of(words_in(text), notes):
        if base and informative not in out:
            out[informative] = base * question
    if out and all(_NUMBER_ONLY.match(word) for word in out):
        return [(word, 0.3 * weight) for word, weight in out.items()]
    return list(out.items())


def content_free(clause: str, notes: WordNotes | None = None) -> bool:
    """A clause that carries nothing: reactions, agreement, one word said over and over."""
    found = words_in(clause)
    noted = [note for note in _notes_of(found, notes) if note[2]]
    if not noted:
        return True
    if len({note[2] for note in noted}) == 1 and (
        sum(1 for w in found if w.lower().strip(".:'-/%")) >= 3
    ):
        return True
    if any(note[3] == _MEANS for note in noted):
        return False  # a word that means something
    return any(note[3] == _SAYS_NOTHING for note in noted)


def collapse_alike(clauses: list[str]) -> list[str]:
    """A run of three or more clauses that differ only in their numbers (``def
    helper_0(x); def helper_1(x); …``): the first, the last and how many."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) >= 3:
            out.extend([run[0], f"…{len(run) - 2} alike…", run[-1]])
        else:
            out.extend(run)
        run.clear()

    for clause in clauses:
        if run and re.sub(r"\d+", "#", clause) != re.sub(r"\d+", "#", run[-1]):
            flush()
        run.append(clause)
    flush()
    return out


def rarity(
    df: Mapping[str, int], held: int, idlike: dict[str, bool] | None = None
) -> dict[str, float]:
    """Weight of each word by how few held facts of this thread use it.

    An identifier (a user id, an order number, a path) that many facts repeat is
    what the thread is about, not noise: it weighs as if it were rare. ``idlike``
    remembers which words are identifiers between calls.
    """
    top = math.log(1.0 + held)
    known = {} if idlike is None else idlike
    by_count: dict[int, float] = {}
    out: dict[str, float] = {}
    for word, count in df.items():
        ident = known.get(word)
        if ident is None:
            ident = known[word] = _IDLIKE.match(word) is not None
        if ident:
            out[word] = top
            continue
        value = by_count.get(count)
        if value is None:
            value = by_count[count] = math.log(1.0 + held / count)
        out[word] = value
    return out


def focus_terms(texts: Iterable[str]) -> dict[str, float]:
    """What the work in progress names, each word with the boost it gives a fact.

    Identifiers (snake_case, paths, dotted names, letters with digits) weigh most,
    then names, then other content words; only the newest part of long text counts.
    """
    terms: dict[str, float] = {}
    for text in texts:
        for word in words_in(text[-_FOCUS_CHARS:]):
            lower = word.lower().strip(".:'-/")
            if len(lower) < 3 or lower in COMMON or lower in VAGUE:
                continue
            if _CODE_NAME.search(word) or _IDLIKE.match(lower):
                boost = FOCUS_ID
            elif word[0].isupper():
                boost = FOCUS_NAME
            else:
                boost = FOCUS_WORD
            if boost > terms.get(lower, 0.0):
                terms[lower] = boost
    return terms


def focus_of(view: Sequence[BaseMessage]) -> list[str]:
    """The texts a view's work in progress is about: the task (the first human
    message), the latest human message and the newest turns, newest last.

    ``view`` is the view without its memory block (the system prompt is left out:
    it says how to work, not on what).
    """
    humans = [m for m in view if m.type == "human"]
    texts = [text_of(humans[0])] if humans else []
    if len(humans) > 1:
        texts.append(text_of(humans[-1]))
    recent: list[str] = []
    size = 0
    for message in reversed(view):
        if message.type == "system" or (humans and message is humans[0]):
            break
        text = text_of(message)
        recent.append(text)
        size += len(text)
        if size >= _FOCUS_CHARS:
            break
    texts.extend(reversed(recent))
    return texts
