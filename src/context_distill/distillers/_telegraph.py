"""Prose to telegraphic text: drop greetings, filler and stop words, keep what carries.

Names, numbers, dates, ids, paths, quoted strings and negations always survive
word for word; so does every word the stop lists do not name. Sentences that
carry nothing but courtesy are dropped whole.
"""

from __future__ import annotations

import re

# Words that carry no fact on their own. Negations, temporal relations and the
# prepositions that decide direction ("from", "to", "with", "without") are kept.
_STOP = frozenset(
    """a an the this that these those is are was were be been being am 's 're 've 'm 'd 'll
    do does did doing done have has had having i me my mine myself you your yours
    yourself we us our ours ourselves he him his she her hers it its itself they them
    their theirs themselves what which who whom whose of in on at by as into onto upon
    than then there here so such very really just quite pretty rather too also even
    still yet actually basically literally honestly totally definitely certainly surely
    truly simply super kinda sorta gonna wanna gotta got get gets getting lot lots bit
    much many some any all every each both either neither own same other another more
    most less least will would shall should can could may might must oh ah aw wow hey hi
    hello um uh hmm yeah yes yep ok okay well like thing things stuff something anything
    everything nothing someone anyone everyone about around over out up down off again
    ever always usually often sometimes maybe perhaps because since while though
    although if when where how why whether and or but nor let lets let's i'm i've i'd
    i'll you're you've you'd you'll he's she's it's we're we've we'd we'll they're
    they've they'd they'll that's there's here's what's who's how's where's when's why's
    glad happy thanks thank appreciate sure""".split()
)

# Kept although they look like function words: they change what a fact says.
_KEEP = frozenset(
    """not no never none nobody nowhere cannot without from to with for before after until
    since against between during per via""".split()
)

# Manner adverbs ("completely", "exactly") rarely carry a fact; these -ly words do.
_LY_KEEP = frozenset(
    """family assembly anomaly butterfly monopoly italy elderly friendly lonely quarterly
    weekly monthly daily yearly hourly nightly only early supply reply apply imply rely
    currently previously recently formerly originally""".split()
)

_NEGATED = re.compile(r"\b(\w+)n't\b", re.I)
_IRREGULAR_NEGATION = {"won't": "will not", "can't": "cannot", "shan't": "shall not"}

# Whole sentences that are only courtesy or reaction.
_COURTESY = re.compile(
    r"^(?:(?:hey|hi|hello|wow|oh|ah|aw+|yay|haha+|lol|omg|thanks?(?: you)?(?: so much)?|"
    r"thank you|cheers|bye|goodbye|see (?:you|ya)|take care|congrats|congratulations|"
    r"awesome|amazing|great|cool|nice|sweet|lovely|wonderful|fantastic|incredible|"
    r"that(?:'s| is) (?:so |really |super |very )?"
    r"(?:awesome|amazing|great|cool|nice|sweet|lovely|wonderful|fantastic|incredible|"
    r"awful|terrible|sad|tough|hard|rough|exciting|inspiring|impressive|beautiful|"
    r"interesting|fun|good|funny|crazy|wild|huge)|"
    r"(?:i'?m |so )?(?:glad|happy|sorry) (?:to hear|for you)[^.!?]*|"
    r"good (?:to|for) (?:see|hear|you)[^.!?]*|how (?:have you been|are you|about you)|"
    r"what'?s up(?: with you)?|(?:that |it |this )?sounds? (?:so |really )?"
    r"(?:good|great|fun|awesome|amazing|cool|nice|lovely|wonderful|exciting|interesting)|"
    r"no problem|you'?re welcome|of course|for sure|absolutely|exactly|indeed|"
    r"me too|same here|i agree|agreed|true|right|yes|yeah|yep|ok|okay|sure|"
    r"keep (?:it )?up(?: the good work)?|you got this|good luck|well done|"
    r"talk (?:to you )?(?:soon|later)|catch you later|spill (?:the )?beans|fingers crossed|"
    r"hang in there|way to go|go for it|you rock|tell me (?:more|everything)(?: about it)?|"
    r"do tell|(?:\d+ ?% )?agreed?(?: \d+ ?%)?)[\s,!.?]*)+$",
    re.I,
)

_ADDRESSEE = re.compile(r"[A-Z][a-z]+[,;!.]?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+|\s*\[(?=[^\]]{12,}\])|\]\s*")
# A token: a quoted string, a URL or path, a word with inner punctuation, or a symbol run.
_TOKEN = re.compile(
    r"\"[^\"\n]{1,120}\"|`[^`\n]{1,120}`|https?://\S+|[\w~./\\@#:%+='-]*[\w/%]|[^\w\s]+",
    re.UNICODE,
)
_PROTECTED = re.compile(r"\d|[/\\@#_]|^[\"`]|^https?://|\.\w|[A-Z].*[A-Z]")
_SPEAKER = re.compile(r"^\s*([A-Z][\w.'-]*(?: [A-Z][\w.'-]*){0,3}):\s+(?=\S)")


def split_speaker(text: str) -> tuple[str | None, str]:
    """'Caroline: I went ...' → ('Caroline', 'I went ...')."""
    match = _SPEAKER.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE.split(text) if part and part.strip()]


_VOCATIVE = re.compile(r"(?:,\s*|\s+)[A-Z][a-z]+(?=\s*[!.?,]|\s*$)|^[A-Z][a-z]+,\s*")
# A name said to the listener at the start or end of a sentence: "Mel, ..." / "..., Mel!"
_ADDRESS = re.compile(
    r"^(?:(?:[Hh]ey|[Hh]i|[Oo]h|[Ww]ow|[Yy]es|[Yy]eah|[Tt]hanks|[Ss]o|[Ww]ell),?\s+)?"
    r"[A-Z][a-z]+,\s+|,\s*[A-Z][a-z]+(?=[!.?]*\s*$)"
)


def is_courtesy(sentence: str) -> bool:
    """A sentence that carries only a greeting, thanks or a reaction (a name may be added)."""
    return bool(_COURTESY.match(_VOCATIVE.sub("", sentence.strip())))


def _expand_negations(text: str) -> str:
    for short, full in _IRREGULAR_NEGATION.items():
        text = re.sub(rf"\b{short}\b", full, text, flags=re.I)
    return _NEGATED.sub(lambda m: f"{m.group(1)} not", text)


def compress_sentence(sentence: str) -> str:
    """One sentence, telegraphic: stop words out, everything that carries in."""
    sentence = _ADDRESS.sub(" ", _expand_negations(sentence.replace("\u2019", "'")))
    out: list[str] = []
    for position, token in enumerate(_TOKEN.findall(sentence)):
        first = token[0]
        if not (first.isalnum() or first in '"`_~#@' or (len(token) > 1 and first in "./\\")):
            # punctuation: keep the separators that structure a fact
            if token in (",", ";", ":", "?", "->", "→", "=", "+", "%", "$", "€", "£"):
                out.append(token)
            continue
        lower = token.lower()
        if lower == "i" or lower.startswith("i'"):
            continue
        if lower in _KEEP or _PROTECTED.search(token) or (position and first.isupper()):
            out.append(token)
            continue
        if lower in _STOP or lower.rstrip("'s") in _STOP:
            continue
        if len(lower) >= 7 and lower.endswith("ly") and lower not in _LY_KEEP:
            continue
        out.append(token)
    text = " ".join(out)
    text = re.sub(r"\s+([,;:?%])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"([$€£])\s+(?=\d)", r"\1", text)
    return text.strip(" ,;:")


def telegraph(text: str) -> list[str]:
    """Telegraphic sentences of a passage, courtesy dropped; empty if nothing carries."""
    kept: list[str] = []
    for sentence in sentences(text):
        if is_courtesy(sentence):
            continue
        compact = compress_sentence(sentence)
        if _ADDRESSEE.fullmatch(compact):
            continue  # only a name was left: the sentence addressed someone
        if compact and any(ch.isalnum() for ch in compact):
            if sentence.rstrip().endswith("?") and not compact.endswith("?"):
                compact += "?"
            kept.append(compact)
    return kept
