"""Repetition loops of a speech model, shortened before a transcript is stored.

Whisper models, the small ones most, sometimes get stuck on a word or a few characters and write
them until the window's token limit ("time time time ...", "4242424242...", "1-1-1-1-..."): the
bundled model does it on espeak-ng's spoken test card numbers.  Decoding options that stop it
(``no_repeat_ngram_size``, ``repetition_penalty``) also break the digits of spoken card numbers,
so redaction's Luhn check no longer finds them (measured: the Discover test number's first four
digits were stored), so calltrack keeps the decoding as it is and shortens the loops in the text
instead, after redaction has seen every digit.

What counts as a loop (nothing a person says on a call):
- one word more than 5 times in a row, or a unit of 2-3 words more than 3 times;
- number words and digits only beyond 19 in a row (the longest card number): a phone number or a
  card read out digit by digit ("five five five, five five five five") is kept as said;
- inside one word, a unit of up to 4 characters repeated to 20 characters or more.
A loop keeps its first unit and says how often the model wrote it: ``time [repeated 15 times]``.
"""

from __future__ import annotations

import re

#: one word written more often than this in a row is a loop
MAX_WORD_RUN = 5
#: a unit of two or three words written more often than this in a row is a loop
MAX_PHRASE_RUN = 3
#: digits and number words: a loop only beyond this many in a row (the longest card number)
MAX_DIGIT_RUN = 19
#: a unit of up to 4 characters repeated inside one word to this length or more is a loop
MIN_CHAR_LOOP = 20

_TOKEN = re.compile(r"\s*\S+")
_PUNCT = ".,;:!?\"'()[]{}<>«»“”‘’…"
_NUMBER_WORDS = frozenset("zero oh o one two three four five six seven eight nine".split())
_CHAR_LOOP = re.compile(r"(.{1,4}?)\1{4,}", re.DOTALL)


def _core(token: str) -> str:
    return token.strip().strip(_PUNCT).lower()


def _is_digit(core: str) -> bool:
    return core in _NUMBER_WORDS or core.isdigit()


def _is_loop(unit: list[str], times: int) -> bool:
    if all(_is_digit(c) for c in unit):
        return times * len(unit) > MAX_DIGIT_RUN
    return times > (MAX_WORD_RUN if len(unit) == 1 else MAX_PHRASE_RUN)


def _note(times: int) -> str:
    return f"[repeated {times} times]"


def _collapse_chars(token: str) -> str:
    def shorten(m: re.Match[str]) -> str:
        run, unit = m.group(0), m.group(1)
        if len(run) < MIN_CHAR_LOOP:
            return run
        times = len(run) // len(unit)
        return unit + " " + _note(times) + run[times * len(unit) :]

    return _CHAR_LOOP.sub(shorten, token)


def collapse_repeats(text: str) -> str:
    """*text* with every repetition loop shortened to its first unit and a note of how often it came."""
    tokens = _TOKEN.findall(text)
    rest = text[sum(map(len, tokens)) :]
    cores = [_core(t) for t in tokens]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        best: tuple[int, int] | None = None  # (times, words in the unit)
        for size in (1, 2, 3):
            unit = cores[i : i + size]
            if len(unit) < size or not all(unit):
                continue
            times = 1
            while cores[i + times * size : i + (times + 1) * size] == unit:
                times += 1
            if _is_loop(unit, times) and (best is None or times * size > best[0] * best[1]):
                best = (times, size)
        if best is None:
            out.append(_collapse_chars(tokens[i]))
            i += 1
            continue
        times, size = best
        first = "".join(tokens[i : i + size]).rstrip()
        first = first.rstrip(_PUNCT) or first
        last = tokens[i + times * size - 1].rstrip()
        trailing = last[len(last.rstrip(".,;:!?")) :]
        out.append(first + " " + _note(times) + trailing)
        i += times * size
    return "".join(out) + rest


def longest_run(text: str) -> int:
    """How many times in a row the most repeated word of *text* comes (the benchmark and tests report it)."""
    best = run = 0
    previous = None
    for token in _TOKEN.findall(text):
        core = _core(token)
        run = run + 1 if core and core == previous else (1 if core else 0)
        previous = core
        best = max(best, run)
    return best
