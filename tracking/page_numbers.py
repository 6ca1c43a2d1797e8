"""Which numbers dni.js would swap on a page: the script's matching, in Python, over the page's HTML.

`calltrack sites check` reads a page (fetched, or a saved file for pages behind a sign-in) and
reports what the script would do there: blocks are read as the script reads them (inline
elements joined, ``<br>`` a line break, scripts, styles, form fields and comments skipped), the
business numbers' digit sequences (tracking/number_forms.py) are looked for with the same rules
(whole digit groups; not inside a longer dash-joined number; not inside an international number),
and so are ``tel:`` targets in ``href`` and ``onclick`` and the attributes the tag's ``data-attrs``
names.  Phone numbers that are not the business's are listed too: the script leaves them alone.
"""

from __future__ import annotations

import html.parser
import re
import urllib.parse
from dataclasses import dataclass, field

from tracking.number_forms import forms

INLINE = frozenset(
    "a abbr b bdi bdo big br cite code data dfn em font i kbd label mark nobr q s samp small span strong sub sup "
    "time tt u var wbr".split()
)
SKIP = frozenset("script style noscript textarea input select option template svg math".split())
VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_GAP = re.compile(r"^[\s().\-\u2010-\u2015/]{1,4}$")
_TEL = re.compile(r"tel:([+\d\s().\-\u2010-\u2015/%]+)", re.I)
_WORD = re.compile(r"\w")


def find(text: str, keys: dict[str, str]) -> list[tuple[int, int, str]]:
    """(start, end, what it stands for) of each number of *keys* (digits -> value) in *text*, as dni.js finds them."""
    if not keys:
        return []
    most = max(len(k) for k in keys)
    groups: list[tuple[int, int, bool, bool, bool]] = []  # start, end, joined, tightly joined, in a + number
    for m in re.finditer(r"\d+", text):
        gap = text[groups[-1][1] : m.start()] if groups else ""
        join = bool(groups) and bool(_GAP.match(gap))
        plus = groups[-1][4] if join else text[m.start() - 1 : m.start()] == "+"
        groups.append((m.start(), m.end(), join, join and not re.search(r"\s", gap), plus))
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < len(groups):
        g = groups[i]
        if g[3] or (g[2] and g[4]) or _WORD.match(text[g[0] - 1 : g[0]] or " "):
            i += 1
            continue
        acc, best, hit = "", -1, ""
        j = i
        while j < len(groups) and (j == i or groups[j][2]):
            acc += text[groups[j][0] : groups[j][1]]
            if len(acc) > most:
                break
            tight_after = j + 1 < len(groups) and groups[j + 1][3]
            if acc in keys and not _WORD.match(text[groups[j][1] : groups[j][1] + 1] or " ") and not tight_after:
                best, hit = j, acc
            j += 1
        if best >= 0:
            out.append((g[0], groups[best][1], keys[hit]))
            i = best + 1
        else:
            i += 1
    return out


def keys_for(numbers: list[str]) -> dict[str, str]:
    """digits -> E.164, every form of each business number."""
    found: dict[str, str] = {}
    for number in numbers:
        for _, digits in forms(number):
            found.setdefault(digits, number)
    return found


@dataclass
class Block:
    where: str
    text: str = ""


@dataclass
class Tag:
    """A dni.js script tag."""

    src: str
    account: str | None
    replace: list[str]
    attrs: list[str]
    debug: bool


@dataclass
class Page:
    blocks: list[Block] = field(default_factory=list)
    #: (where, attribute, value) for href/onclick/data-* values
    attributes: list[tuple[str, str, str]] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)


class _Reader(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[str] = []
        self.skip = 0
        self.block = Block("body")

    def _where(self, tag: str, attrs: dict[str, str | None]) -> str:
        where = tag
        if attrs.get("id"):
            where += f"#{attrs['id']}"
        elif attrs.get("class"):
            where += "." + ".".join((attrs["class"] or "").split()[:2])
        return where

    def _flush(self, where: str) -> None:
        if self.block.text.strip():
            self.page.blocks.append(self.block)
        self.block = Block(where)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = dict(attrs_list)
        if tag == "script" and "dni.js" in (attrs.get("src") or "") and "data-account" in attrs:
            self.page.tags.append(
                Tag(
                    attrs.get("src") or "",
                    attrs.get("data-account"),
                    [v.strip() for v in (attrs.get("data-replace") or "").split(",") if v.strip()],
                    (attrs.get("data-attrs") or "").replace(",", " ").split(),
                    "data-debug" in attrs,
                )
            )
        where = self._where(tag, attrs)
        for name, value in attrs_list:
            if value and (name in ("href", "onclick") and "tel:" in value.lower() or name.startswith("data-")):
                self.page.attributes.append((where, name, value))
        if self.skip:
            if tag not in VOID:
                self.skip += 1
            return
        if tag in SKIP:
            if tag not in VOID:
                self.skip = 1
            return
        if tag == "br":
            self.block.text += "\n"
            return
        if tag not in INLINE:
            self._flush(where)
        if tag not in VOID:
            self.stack.append(where)

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            self.skip -= 1
            return
        if tag in VOID:
            return
        if self.stack:
            self.stack.pop()
        if tag not in INLINE:
            self._flush(self.stack[-1] if self.stack else "body")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.block.text += data

    def close(self) -> None:
        super().close()
        self._flush("body")


def read_page(text: str) -> Page:
    reader = _Reader()
    reader.feed(text)
    reader.close()
    return reader.page


@dataclass(frozen=True)
class Found:
    where: str
    #: the text as the page writes it ("(404) 555-0100"), or "href: tel:+14045550100"
    shown: str
    number: str


def swaps_on(page: Page, numbers: list[str], marked: list[str]) -> list[Found]:
    """What dni.js would swap on *page* for the business *numbers* (E.164)."""
    keys = keys_for(numbers)
    out: list[Found] = []
    for block in page.blocks:
        for start, end, number in find(block.text, keys):
            start -= block.text[start - 1 : start] in ("(", "+")
            out.append(Found(block.where, block.text[start:end].replace("\n", " "), number))
    for where, name, value in page.attributes:
        if name in ("href", "onclick"):
            targets = [urllib.parse.unquote(m.group(1)) for m in _TEL.finditer(value)]
        elif name in marked:
            targets = [value]
        else:
            continue
        for target in targets:
            for start, end, number in find(target, keys):
                start -= target[start - 1 : start] in ("(", "+")
                out.append(Found(where, f"{name}: {target[start:end].strip()}", number))
    return out


def other_numbers(page: Page, region: str, numbers: list[str]) -> list[tuple[str, str]]:
    """(where, text) of phone numbers in the page's text that are not the business's: left alone."""
    import phonenumbers

    seen: list[tuple[str, str]] = []
    for block in page.blocks:
        for match in phonenumbers.PhoneNumberMatcher(block.text.replace("\n", " "), region):
            e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            if e164 not in numbers:
                seen.append((block.where, match.raw_string))
    return seen
