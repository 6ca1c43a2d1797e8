"""Masking payment card numbers, card security codes and US social security numbers in transcripts.

Pure code, no I/O.  The transcriber runs it on every channel's words before anything is stored;
the time spans it returns are what ``redact_audio`` silences.

What is found, whether the speech model wrote digits ("4111 1111 1111 1111", "4111-1111-...")
or words ("four one one one ...", "double five", "forty-one", "oh" for zero):

- **card numbers**: a run of digits holding 13 to 19 digits that pass the Luhn check (the whole
  run goes: a card number read out with its expiry date or code after it); any run of 12 digits or
  more within a few words after "card", "visa", "credit"... even when the check fails (a digit
  misheard by the model must not leave the rest of the number in the transcript); and any run of
  20 digits or more (no number people say is that long; a speech model looping on a card number
  writes such runs);
- **security codes**: 3 or 4 digits just after (or just before) "security code", "CVV", "CVC",
  "verification code", "three digit code", "code on the back";
- **social security numbers**: 3-2-4 digits written with dashes (a valid area, group and serial),
  or 9 digits (or "the last four") after "social", "social security", "SSN".

Each finding becomes one mask (``[card number]``, ``[security code]``, ``[SSN]``) in place of the
words that said it; a :class:`Redaction` names the kind and the words, never the digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MASKS = {"card": "[card number]", "cvv": "[security code]", "ssn": "[SSN]"}

_UNITS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "for": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_TEENS = {
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
}
_TENS = {
    "twenty": "2",
    "thirty": "3",
    "forty": "4",
    "fourty": "4",
    "fifty": "5",
    "sixty": "6",
    "seventy": "7",
    "eighty": "8",
    "ninety": "9",
}
_REPEAT = {"double": 2, "triple": 3}
#: words that may stand between the digits of one number
_JOINERS = {"dash", "hyphen"}

_CARD_CONTEXT = {
    "card",
    "cards",
    "visa",
    "mastercard",
    "amex",
    "discover",
    "credit",
    "debit",
    "express",
    "account",
}
#: phrases (as word tuples) after which 3 or 4 digits are a card security code
_CVV_PHRASES = (
    ("security", "code"),
    ("security", "number"),
    ("cvv",),
    ("cvv2",),
    ("cvc",),
    ("cvc2",),
    ("csc",),
    ("cid",),
    ("verification", "code"),
    ("verification", "number"),
    ("three", "digit", "code"),
    ("four", "digit", "code"),
    ("three", "digit", "number"),
    ("four", "digit", "number"),
    ("code", "on", "the", "back"),
    ("number", "on", "the", "back"),
    ("back", "of", "the", "card"),
)
_SSN_PHRASES = (("social",), ("ssn",), ("social", "security"))

#: how many words after a phrase its digits may begin
_REACH = 8
_PUNCT = ".,;:!?\"'()[]{}<>«»“”‘’…$#*/\\"
_DIGITS_RE = re.compile(r"^[0-9][0-9.\-]*$")
_SSN_WRITTEN = re.compile(r"^(\d{3})-(\d{2})-(\d{4})$")


@dataclass(frozen=True)
class Redaction:
    """One masked finding: its kind (card, cvv, ssn) and the words (first..last, inclusive) it covered."""

    kind: str
    first: int
    last: int


@dataclass(frozen=True)
class Word:
    """A word as the speech model gave it (with its leading space) and when it was said, seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class TimedRedaction:
    kind: str
    start: float
    end: float


def luhn_ok(digits: str) -> bool:
    """The Luhn check every payment card number passes."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _core(word: str) -> str:
    return word.strip().strip(_PUNCT).lower()


def _word_digits(core: str) -> str | None:
    """The digits one word says, or None when it says none (or says something else too)."""
    if not core:
        return None
    if _DIGITS_RE.match(core.replace(",", "")):
        return re.sub(r"\D", "", core)
    if core in _UNITS:
        return _UNITS[core]
    if core in _TEENS:
        return _TEENS[core]
    if core in _TENS:
        return _TENS[core] + "0"
    if "-" in core:
        parts = [p for p in core.split("-") if p]
        if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS and _UNITS[parts[1]] != "0":
            return _TENS[parts[0]] + _UNITS[parts[1]]
        pieces = [_word_digits(p) for p in parts]
        if pieces and all(p is not None for p in pieces):
            return "".join(p for p in pieces if p is not None)
    return None


def _is_separator(core: str, raw: str) -> bool:
    return core in _JOINERS or (not core and raw.strip() != "")


def _phrase_ends(cores: Sequence[str], phrases: Sequence[tuple[str, ...]]) -> list[tuple[int, int]]:
    """(first, last) word index of every occurrence of any phrase."""
    found = []
    for i in range(len(cores)):
        for phrase in phrases:
            n = len(phrase)
            if tuple(c.replace("-", " ") for c in cores[i : i + n]) == phrase:
                found.append((i, i + n - 1))
            elif n > 1 and "-".join(phrase[:2]) == cores[i] and tuple(cores[i + 1 : i + n - 1]) == phrase[2:]:
                found.append((i, i + n - 2))  # "three-digit code"
    return found


@dataclass
class _Run:
    #: (word index, the digits it says)
    words: list[tuple[int, str]]

    @property
    def digits(self) -> str:
        return "".join(d for _, d in self.words)

    @property
    def first(self) -> int:
        return self.words[0][0]

    @property
    def last(self) -> int:
        return self.words[-1][0]


def _runs(raw: Sequence[str], cores: Sequence[str], blocked: set[int]) -> list[_Run]:
    """Maximal runs of words that say digits (separators and joiners allowed between them)."""
    runs: list[_Run] = []
    current: list[tuple[int, str]] = []
    pending_sep = False
    i = 0
    while i < len(cores):
        core = cores[i]
        digits = None if i in blocked else _word_digits(core)
        if digits is None and core in _REPEAT and i + 1 < len(cores) and i + 1 not in blocked:
            nxt = _word_digits(cores[i + 1])
            if nxt is not None and len(nxt) == 1:
                current.append((i, ""))
                current.append((i + 1, nxt * _REPEAT[core]))
                pending_sep = False
                i += 2
                continue
        if digits is not None:
            # "forty one": the tens word gives its first digit, the unit word the second
            if core in _TENS and i + 1 < len(cores) and cores[i + 1] in _UNITS and _UNITS[cores[i + 1]] != "0":
                digits = _TENS[core]
            current.append((i, digits))
            pending_sep = False
        elif current and not pending_sep and _is_separator(core, raw[i]):
            pending_sep = True
        else:
            if current:
                runs.append(_Run(current))
            current = []
            pending_sep = False
        i += 1
    if current:
        runs.append(_Run(current))
    return runs


def _windows(run: _Run, lengths: range) -> list[tuple[int, int, str]]:
    """(first position, last position, digits) of every word-aligned stretch of the run with a length in *lengths*."""
    out = []
    words = run.words
    for a in range(len(words)):
        if not words[a][1]:
            continue
        acc = ""
        for b in range(a, len(words)):
            acc += words[b][1]
            if len(acc) > lengths.stop:
                break
            if len(acc) in lengths:
                out.append((a, b, acc))
    return out


def find(words: Sequence[str]) -> list[Redaction]:
    """What to mask in a channel's words (each with its leading space, as the model gives them)."""
    raw = list(words)
    cores = [_core(w) for w in raw]
    cvv_phrases = _phrase_ends(cores, _CVV_PHRASES)
    ssn_phrases = _phrase_ends(cores, _SSN_PHRASES)
    # "three digit code" says a digit that is not part of a number
    blocked = {i for a, b in cvv_phrases for i in range(a, b + 1)}
    runs = _runs(raw, cores, blocked)
    found: list[Redaction] = []
    taken: set[int] = set()

    def take(kind: str, first: int, last: int) -> None:
        found.append(Redaction(kind, first, last))
        taken.update(range(first, last + 1))

    def free(run: _Run, a: int = 0, b: int | None = None) -> bool:
        b = len(run.words) - 1 if b is None else b
        return not any(run.words[k][0] in taken for k in range(a, b + 1))

    def near_before(index: int, what: set[str], reach: int = 10) -> bool:
        return any(c in what for c in cores[max(0, index - reach) : index])

    # social security numbers first: 9 digits would otherwise never be mistaken for a card, but
    # a written 3-2-4 number is unambiguous
    for run in runs:
        for i, _ in run.words:
            m = _SSN_WRITTEN.match(cores[i])
            if m and m.group(1) not in ("000", "666") and m.group(1)[0] != "9" and m.group(2) != "00":
                if m.group(3) != "0000" and (i not in taken):
                    take("ssn", i, i)
    for a, b in ssn_phrases:
        last_four = near_before(a, {"last"}, 4) and near_before(a, {"four", "4"}, 4)
        for run in runs:
            if b < run.first <= b + _REACH and free(run):
                if len(run.digits) == 9 or (last_four and len(run.digits) == 4):
                    take("ssn", run.first, run.last)
                break
    # card numbers: Luhn-valid stretches, longest first
    for run in runs:
        if not free(run):
            continue
        digits = run.digits
        if (
            any(luhn_ok(w[2]) for w in _windows(run, range(13, 20)))
            or len(digits) >= 20
            or (len(digits) >= 12 and near_before(run.first, _CARD_CONTEXT))
        ):
            take("card", run.first, run.last)
    # security codes: 3 or 4 digits just after the phrase (or just before it)
    for a, b in cvv_phrases:
        for run in runs:
            after = b < run.first <= b + _REACH
            before = a - 4 <= run.last < a
            if (after or before) and free(run) and len(run.digits) in (3, 4):
                take("cvv", run.first, run.last)
                break
    found.sort(key=lambda r: r.first)
    return found


def apply(words: Sequence[str], redactions: Sequence[Redaction]) -> list[str]:
    """*words* with each finding's words replaced by its mask (on the first word; the others emptied)."""
    out = list(words)
    for r in redactions:
        lead = out[r.first][: len(out[r.first]) - len(out[r.first].lstrip())]
        tail = words[r.last].rstrip()
        trailing = tail[len(tail.rstrip(".,;:!?")) :]
        out[r.first] = lead + MASKS[r.kind] + trailing
        for i in range(r.first + 1, r.last + 1):
            out[i] = ""
    return out


_TOKEN = re.compile(r"\s*\S+")


def redact_text(text: str) -> tuple[str, list[Redaction]]:
    """*text* with every finding masked, and the findings (word indexes of the whitespace-split text)."""
    words = _TOKEN.findall(text)
    rest = text[sum(map(len, words)) :]  # trailing whitespace
    redactions = find(words)
    return "".join(apply(words, redactions)) + rest, redactions


def redact_words(words: Sequence[Word]) -> tuple[list[str], list[TimedRedaction]]:
    """The words' texts with findings masked, and each finding's time span (what redact_audio silences)."""
    texts = [w.text for w in words]
    redactions = find(texts)
    spans = [TimedRedaction(r.kind, words[r.first].start, words[r.last].end) for r in redactions]
    return apply(texts, redactions), spans
