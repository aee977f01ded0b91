"""Written or spoken form, punctuation and casing of a transcript's words, with exact timings.

Whisper writes most numbers as digits already ("$49", "25%", "10:30") but spells some out
("seven", "forty nine dollars"), and it never writes them as words consistently. The written form
(format_text true) converts spelled numbers with text2num, which finds numbers in a stream of
timed tokens, then joins a number with its unit ("$49", "25%", "10:30 a.m."). The spoken form
(format_text false) expands every digit with num2words and lower-cases. Neither direction needs
a model, so both cost microseconds per word.

Timing rules: when words merge ("forty nine" -> "49") the new word spans the first start to the
last end and takes the lowest confidence of its parts; when a word splits ("$49" -> "forty nine
dollars") the parts divide its span in order and keep its confidence.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from decimal import Decimal

from num2words import num2words
from text_to_num import find_numbers

from engine.result import Word

NUMBER_PAUSE_MS = 800  # spelled numbers either side of a longer pause are separate numbers

_NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"
_NUMBER_CORE = re.compile(rf"^(?:{_NUMBER})(?:\.\d+)?$")
# Symbols in front of amounts, with the unit words that follow a spoken amount.
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence")}
# "pound" is also a weight, so only dollars and euros become symbols in the written form.
_WRITTEN_CURRENCY = {"dollar": "$", "dollars": "$", "euro": "€", "euros": "€"}
_SCALES = {"hundred", "thousand", "million", "billion", "trillion"}
_DIGIT_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
MIN_DIGIT_RUN = 3  # "zero three five one" is an identifier; "seven eight years" more likely a range
_MERIDIEM = {"a.m.", "p.m.", "am", "pm", "a.m", "p.m"}
# Marks that belong to a word rather than punctuate it: apostrophes and hyphens inside words,
# and the separators inside numbers ("3.5", "10:30", "1,000").
_IN_WORD = {"'", "\u2019", "-"}
_IN_NUMBER = {".", ",", ":"}


@dataclass(frozen=True)
class TextOptions:
    """What the request and the server's configuration ask of the text."""

    written: bool = True  # format_text: digits and symbols, Whisper's casing; false: spoken, lower case
    punctuation: bool = True  # punctuate, and ENABLE_AUTO_PUNCTUATION
    casing: bool = True  # ENABLE_AUTO_PUNCTUATION=False lower-cases everything


def format_words(words: list[Word], options: TextOptions) -> list[Word]:
    """The words as the options ask; words that were only punctuation are dropped."""
    shaped = written_form(words) if options.written else spoken_form(words)
    if not options.punctuation:
        shaped = [replace(w, text=strip_punctuation(w.text)) for w in shaped]
    if not options.casing:
        shaped = [replace(w, text=w.text.lower()) for w in shaped]
    return [w for w in shaped if w.text]


def written_form(words: list[Word]) -> list[Word]:
    """Spelled numbers as digits, and numbers joined with their units."""
    return _units_joined(_numbers_as_digits(words))


def spoken_form(words: list[Word]) -> list[Word]:
    """Digits and symbols as lower-case words: "$49" -> "forty nine dollars".

    Numbers Whisper spelled its own way ("forty-nine") go through the written form first, so
    every number comes out in the same spoken shape.
    """
    words = written_form(words)
    spoken = []
    unit: list[str] = []  # "$5 million": the unit waits for the scale word after the amount
    for i, word in enumerate(words):
        lead, core, trail = _split_punctuation(word.text)
        parts = _spoken(core) if any(c.isdigit() for c in core) else [core.lower()]
        if unit and core.lower() in _SCALES:
            parts, unit = parts + unit, []
        elif core[:1] in _CURRENCIES and not trail and i + 1 < len(words) and re.fullmatch(
                rf"[$€£](?:{_NUMBER})", core) and _split_punctuation(words[i + 1].text)[1].lower() in _SCALES:
            parts, unit = parts[:-1], parts[-1:]
        parts[0] = lead + parts[0]
        parts[-1] = parts[-1] + trail
        spoken.extend(_split(word, parts))
    return spoken


def strip_punctuation(text: str) -> str:
    """Drops punctuation marks but keeps those inside a word or number ("don't", "3.5", "10:30")."""
    kept = []
    for i, c in enumerate(text):
        if not unicodedata.category(c).startswith("P") or c == "%":
            kept.append(c)
            continue
        before, after = text[i - 1: i], text[i + 1: i + 2]
        if c in _IN_WORD and before.isalnum() and after.isalnum():
            kept.append(c)
        elif c in _IN_NUMBER and before.isdigit() and after.isdigit():
            kept.append(c)
        elif c == "-" and not before.isalnum() and after.isdigit():  # a minus sign
            kept.append(c)
    return "".join(kept)


class _Token:
    """text2num's Token protocol over one timed word."""

    def __init__(self, word: Word, previous: Word | None) -> None:
        self.lead, self.core, self.trail = _split_punctuation(word.text)
        self.separated = previous is not None and (
            bool(_split_punctuation(previous.text)[2]) or word.start_ms - previous.end_ms > NUMBER_PAUSE_MS
        )

    def text(self) -> str:
        return self.core.lower()

    def nt_separated(self, previous: "_Token") -> bool:
        return self.separated or bool(self.lead)

    def not_a_number_part(self) -> bool:
        return False


def _numbers_as_digits(words: list[Word]) -> list[Word]:
    tokens = [_Token(w, words[i - 1] if i else None) for i, w in enumerate(words)]
    found = find_numbers(tokens, "en") if words else []
    # A lone scale word is a word, not a number: "a million people", "$5 million".
    found = [o for o in found if o.end - o.start > 1 or tokens[o.start].text() not in _SCALES]
    spans = _digits_joined(_years_joined([(o.start, o.end, o.text, o.is_ordinal) for o in found], tokens), tokens)
    out: list[Word] = []
    i = 0
    for start, end, text, _ in spans:
        out.extend(words[i:start])
        out.append(_merged(words[start:end], tokens[start].lead + text + tokens[end - 1].trail))
        i = end
    out.extend(words[i:])
    return out


def _years_joined(spans: list[tuple[int, int, str, bool]], tokens: list[_Token]) -> list[tuple[int, int, str, bool]]:
    """ "nineteen ninety nine" comes out of text2num as 19 and 99; a year is what was said."""
    joined: list[tuple[int, int, str, bool]] = []
    for span in spans:
        if joined and _is_year(joined[-1], span, tokens):
            previous = joined.pop()
            span = (previous[0], span[1], previous[2] + span[2], span[3])
        joined.append(span)
    return joined


def _digits_joined(spans: list[tuple[int, int, str, bool]], tokens: list[_Token]) -> list[tuple[int, int, str, bool]]:
    """A run of digits said one by one is one identifier: text2num makes "zero three five one" 03, 5
    and 1, and "five five five one two three four" seven numbers; written, they are 0351 and 5551234.
    Only runs of at least MIN_DIGIT_RUN digit words with no pause or mark between them are joined."""
    def spelled_digits(span: tuple[int, int, str, bool]) -> bool:
        return not span[3] and all(tokens[i].text() in _DIGIT_WORDS for i in range(span[0], span[1]))

    runs: list[list[tuple[int, int, str, bool]]] = []
    for span in spans:
        last = runs[-1][-1] if runs else None
        if last is not None and _adjacent(last, span, tokens) and spelled_digits(last) and spelled_digits(span):
            runs[-1].append(span)
        else:
            runs.append([span])
    joined = []
    for run in runs:
        if len(run) > 1 and run[-1][1] - run[0][0] >= MIN_DIGIT_RUN:
            joined.append((run[0][0], run[-1][1], "".join(span[2] for span in run), False))
        else:
            joined.extend(run)
    return joined


def _adjacent(first: tuple[int, int, str, bool], second: tuple[int, int, str, bool], tokens: list[_Token]) -> bool:
    """The second number follows the first with no word, pause or mark between them."""
    return first[1] == second[0] and not tokens[second[0]].nt_separated(tokens[first[1] - 1])


def _is_year(first: tuple[int, int, str, bool], second: tuple[int, int, str, bool], tokens: list[_Token]) -> bool:
    century, rest = first[2], second[2]
    return (_adjacent(first, second, tokens) and not first[3] and not second[3] and century.isdigit() and rest.isdigit()
            and 11 <= int(century) <= 20 and len(rest) == 2 and int(rest) >= 10)


def _units_joined(words: list[Word]) -> list[Word]:
    """A number and the unit after it become one word: "$49", "$49.99", "25%", "10:30 a.m."."""
    out: list[Word] = []
    i = 0
    while i < len(words):
        lead, core, trail = _split_punctuation(words[i].text)
        if not _NUMBER_CORE.match(core) or trail:
            out.append(words[i])
            i += 1
            continue
        taken, text = _unit_after(core, [_split_punctuation(w.text) for w in words[i + 1: i + 6]])
        if taken:
            last_trail = _split_punctuation(words[i + taken].text)[2]
            out.append(_merged(words[i: i + taken + 1], lead + text + last_trail))
            i += taken + 1
        else:
            out.append(words[i])
            i += 1
    return out


def _unit_after(number: str, following: list[tuple[str, str, str]]) -> tuple[int, str]:
    """How many of the following words join the number, and the joined text (0 when none do)."""
    cores = [core.lower() for _, core, _ in following]
    clean = [not lead for lead, _, _ in following]
    if cores[:1] and clean[0] and cores[0] in _WRITTEN_CURRENCY:
        symbol = _WRITTEN_CURRENCY[cores[0]]
        cents = cores[2:4]
        if (not following[0][2] and cores[1:2] == ["and"] and len(cents) == 2 and cents[0].isdigit()
                and len(cents[0]) <= 2 and cents[1] in ("cent", "cents") and "." not in number):
            return 4, f"{symbol}{number}.{int(cents[0]):02d}"
        return 1, symbol + number
    if cores[:1] and clean[0] and cores[0] == "percent":
        return 1, number + "%"
    if cores[:2] == ["per", "cent"] and all(clean[:2]) and not following[0][2]:
        return 2, number + "%"
    if (len(cores) >= 2 and number.isdigit() and 1 <= int(number) <= 12 and cores[0].isdigit()
            and len(cores[0]) == 2 and int(cores[0]) < 60 and not following[0][2] and cores[1] in _MERIDIEM):
        return 1, f"{number}:{cores[0]}"
    return 0, ""


def _spoken(core: str) -> list[str]:
    """The spoken words for one written word that holds digits."""
    if match := re.fullmatch(rf"([$€£])({_NUMBER})(?:\.(\d\d))?", core):
        return _spoken_amount(match.group(1), int(match.group(2).replace(",", "")), int(match.group(3) or 0))
    if match := re.fullmatch(rf"(-?(?:{_NUMBER})(?:\.\d+)?)%", core):
        return [*_words(_cardinal(match.group(1))), "percent"]
    if match := re.fullmatch(r"(\d{1,2}):(\d\d)", core):
        hour, minute = int(match.group(1)), int(match.group(2))
        return [*_words(num2words(hour)), *(["oh"] if 0 < minute < 10 else []),
                *(_words(num2words(minute)) if minute else [])]
    if match := re.fullmatch(rf"({_NUMBER})(st|nd|rd|th)", core, re.IGNORECASE):
        return _words(num2words(int(match.group(1).replace(",", "")), to="ordinal"))
    if match := re.fullmatch(r"(1[1-9]\d0|20[0-9]0)'?s", core):
        said = _words(num2words(int(match.group(1)), to="year"))
        said[-1] = said[-1][:-1] + "ies" if said[-1].endswith("y") else said[-1] + "s"
        return said
    if re.fullmatch(r"1[1-9]\d\d|20\d\d", core):
        return _words(num2words(int(core), to="year"))
    if re.fullmatch(rf"-?(?:{_NUMBER})(?:\.\d+)?", core):
        return _words(_cardinal(core))
    spoken = re.sub(r"\d+(?:\.\d+)?", lambda m: " " + _cardinal(m.group(0)) + " ", core)
    return _words(spoken) or [core.lower()]


def _spoken_amount(symbol: str, units: int, cents: int) -> list[str]:
    one, many, one_cent, many_cents = _CURRENCIES[symbol]
    said = [*_words(num2words(units)), one if units == 1 else many]
    if cents:
        said += ["and", *_words(num2words(cents)), one_cent if cents == 1 else many_cents]
    return said


def _cardinal(number: str) -> str:
    return num2words(Decimal(number.replace(",", "")))


def _words(spoken: str) -> list[str]:
    """num2words' text as separate lower-case words: "forty-nine," -> ["forty", "nine"]."""
    return [w for w in re.split(r"[\s\-,]+", spoken.lower()) if w]


def _split_punctuation(text: str) -> tuple[str, str, str]:
    """(leading marks, the word, trailing marks); "%" and currency symbols are part of the word."""
    start, end = 0, len(text)
    while start < end and _is_mark(text[start]) and not (text[start] == "-" and text[start + 1: start + 2].isdigit()):
        start += 1
    while end > start and _is_mark(text[end - 1]):
        end -= 1
    return text[:start], text[start:end], text[end:]


def _is_mark(c: str) -> bool:
    return unicodedata.category(c).startswith("P") and c != "%"


def _merged(parts: list[Word], text: str) -> Word:
    return Word(text=text, start_ms=parts[0].start_ms, end_ms=max(p.end_ms for p in parts),
                confidence=min(p.confidence for p in parts))


def _split(word: Word, texts: list[str]) -> list[Word]:
    if len(texts) == 1:
        return [replace(word, text=texts[0])]
    span = word.end_ms - word.start_ms
    bounds = [word.start_ms + span * i // len(texts) for i in range(len(texts) + 1)]
    return [Word(text=t, start_ms=bounds[i], end_ms=max(bounds[i + 1], bounds[i]), confidence=word.confidence)
            for i, t in enumerate(texts)]
