"""Text helpers for storyboard writers: Markdown reading, sentence splitting, scene grouping and key words.

Everything here is pure Python and deterministic, so the offline ``rules`` writer gives the same storyboard for the
same text on every machine. LLM writers may reuse `read_markdown` and `key_phrases` for their own clean-up.

Reading Markdown keeps the user's words literally: only Markdown *syntax* is removed (emphasis marks, link targets,
images, code fences, list bullets, quote marks, HTML tags, rules, front matter). Characters such as
``' : , ; [ ] \\ % { }`` that are not syntax stay exactly as typed, and line breaks inside a paragraph are kept.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# --------------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One block of a script: a heading, or a paragraph made of pieces.

    A paragraph's pieces are its leading text and each list item; sentences never run across pieces, so a list item
    without final punctuation still ends where it ends. ``text`` joins the pieces with line breaks.

    Attributes:
        kind: ``"heading"`` or ``"paragraph"``.
        pieces: The cleaned text of each piece (line breaks inside a piece are kept).
        level: Heading level (1 for ``#``), 0 for paragraphs.
    """

    kind: str
    pieces: tuple[str, ...]
    level: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.pieces)


@dataclass(frozen=True)
class Document:
    """A script read by `read_markdown`: its blocks, the front matter's title and what was left out."""

    blocks: tuple[Block, ...]
    front_title: str | None = None
    skipped: tuple[str, ...] = field(default=())  # e.g. "2 code blocks", for notes to the user

    def first_heading(self, level: int = 1) -> Block | None:
        for block in self.blocks:
            if block.kind == "heading" and block.level == level:
                return block
        return None


_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE_RE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE_RE = re.compile(r"^ {0,3}> ?")
_BULLET_RE = re.compile(r"^[ \t]*([-*+])[ \t]+(\S.*)$")
_ORDERED_RE = re.compile(r"^[ \t]*(\d{1,9})[.)][ \t]+(\S.*)$")
_REFDEF_RE = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*\S+.*$")
_TABLE_SEP_RE = re.compile(r"^ {0,3}\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*$")
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_YAML_LINE_RE = re.compile(r"^([\w-]+[ \t]*:.*|[ \t]+.*|-[ \t].*|#.*|)$")
_TOML_LINE_RE = re.compile(r"^([\w.-]+[ \t]*=.*|\[.*\]|[ \t]+.*|#.*|)$")

# Inline syntax.
# Backslash escapes are CommonMark's: a backslash before any ASCII punctuation character gives that character,
# literally and once (``\\`` is one backslash, ``\*`` a star that is not emphasis); before anything else (a letter,
# a digit, a space) the backslash stays, so a plain-text script's backslashes (``C:\temp``, ``\d``) stay as typed.
# Inside a code span a backslash is literal, and an escaped backtick opens no code span.
_ESCAPABLE = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_ESCAPE_RE = re.compile(r"\\([" + re.escape(_ESCAPABLE) + r"])")
_ESCAPE_OR_CODE_RE = re.compile(r"\\([" + re.escape(_ESCAPABLE) + r"])|(`+)(?!`)(.+?)(?<!`)\2(?!`)", re.S)
_PUA = 0xE000  # escaped characters and code spans hide in the private use area while the other rules run
_CODE_RE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_IMAGE_RE = re.compile(r"!\[[^\]\n]*\](?:\([^)\n]*\)|\[[^\]\n]*\])")
_LINK_RE = re.compile(r"\[([^\]\n]+)\]"  # [text]
                      r"\((?:<[^>\n]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)"  # (target, which may hold (balanced) parentheses
                      r"(?:[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'))?[ \t]*\)")  # "optional title")
_REFLINK_RE = re.compile(r"\[([^\]\n]+)\]\[[^\]\n]*\]")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp)://[^>\s]+|mailto:[^>\s]+|[^>\s@]+@[^>\s@]+\.[^>\s@]+)>")
_BR_RE = re.compile(r"<br\s*/?>", re.I)
# Only real HTML tag names are tags: "press <Enter>" or "a <b and c> d" in a plain script stay as typed.
_HTML_TAGS = ("a|abbr|address|article|aside|audio|b|bdi|bdo|big|blockquote|body|br|button|caption|center|cite|code|col|"
              "colgroup|dd|del|details|dfn|div|dl|dt|em|figcaption|figure|font|footer|h[1-6]|head|header|hr|html|i|"
              "iframe|img|ins|kbd|label|li|main|mark|nav|ol|p|picture|pre|q|s|samp|section|small|source|span|strike|"
              "strong|sub|summary|sup|table|tbody|td|tfoot|th|thead|time|tr|tt|u|ul|var|video|wbr")
# Attributes must have values, so "a <b and c> d" is not a tag either.
_TAG_RE = re.compile(r"</?(?:" + _HTML_TAGS + r")(?=[\s/>])"
                     r"(?:\s+[A-Za-z_:][\w:.-]*\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))*\s*/?>", re.I)
_SCRIPT_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_ENTITY_RE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#\d{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_STRONG_RE = (re.compile(r"(?<![\w*])\*\*(?=[^\s*])(.+?)(?<=[^\s*])\*\*(?![\w*])", re.S),
              re.compile(r"(?<![\w_])__(?=[^\s_])(.+?)(?<=[^\s_])__(?![\w_])", re.S))
_EM_RE = (re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", re.S),
          re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])", re.S))
_STRIKE_RE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
_SPACES_RE = re.compile(r"[ \t\u00a0]{2,}")


def clean_inline(text: str) -> str:
    """Remove inline Markdown syntax from `text`, keeping the words and every character that is not syntax.

    Links become their text, images and HTML tags disappear, emphasis and code marks are dropped (the code's text
    stays), entities are decoded, and runs of spaces left behind are collapsed. Line breaks are kept.
    """
    # 1. Hide escaped characters and code spans so no later rule reads them as syntax (control characters are not
    #    narration, so NUL and SOH can mark where the code spans were).
    text = text.replace("\x00", "").replace("\x01", "").replace("\x02", "")
    codes: list[str] = []

    def hide(match: re.Match) -> str:
        if match.group(1) is not None:  # an escape, read left to right with code spans so each wins where it starts
            return chr(_PUA + ord(match.group(1)))
        content = match.group(3)
        if len(content) > 1 and content[0] == " " and content[-1] == " " and content.strip():
            content = content[1:-1]
        codes.append(content)
        return f"\x00{len(codes) - 1}\x01"

    text = _ESCAPE_OR_CODE_RE.sub(hide, text)
    # 2. Images go (they are not narration); links keep their text; tags and comments go.
    text = _IMAGE_RE.sub("\x02", text)  # \x02 marks removed markup (see step 4)
    text = _LINK_RE.sub(r"\1", text)
    text = _REFLINK_RE.sub(r"\1", text)
    text = _AUTOLINK_RE.sub(r"\1", text)
    text = _COMMENT_RE.sub("", text)
    text = _SCRIPT_RE.sub("\x02", text)
    text = _BR_RE.sub(" ", text)
    text = _TAG_RE.sub("\x02", text)
    # 3. Emphasis, strongest first, twice for nesting (***both***, **_mixed_**).
    for _ in range(2):
        for pattern in _STRONG_RE:
            text = pattern.sub(r"\1", text)
        text = _STRIKE_RE.sub(r"\1", text)
        for pattern in _EM_RE:
            text = pattern.sub(r"\1", text)
    text = _ENTITY_RE.sub(lambda m: html.unescape(m.group(0)), text)
    # 4. Bring back code and escaped characters, tidy the spaces markup removal left behind.
    text = re.sub("\x00(\\d+)\x01", lambda m: codes[int(m.group(1))], text)
    text = re.sub("[" + chr(_PUA) + "-" + chr(_PUA + 0x7F) + "]", lambda m: chr(ord(m.group(0)) - _PUA), text)
    # Where markup was removed just before punctuation, the space before it goes too ("see ![x](y)." -> "see.").
    text = re.sub(r"(?m)[ \t]*\x02(?=[\x02 \t]*(?:[.,;:!?)\]]|$))", "", text).replace("\x02", "")
    lines = [_SPACES_RE.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line)


def _front_matter(lines: list[str]) -> tuple[int, str | None]:
    """(number of lines of YAML/TOML front matter at the top, its `title` if any)."""
    if not lines:
        return 0, None
    opener = lines[0].strip()
    if opener not in ("---", "+++"):
        return 0, None
    closers = ("---", "...") if opener == "---" else ("+++",)
    line_re = _YAML_LINE_RE if opener == "---" else _TOML_LINE_RE
    for i in range(1, min(len(lines), 200)):
        if lines[i].strip() in closers:
            inner = lines[1:i]
            if not inner or not all(line_re.match(line) for line in inner):
                return 0, None  # a rule followed by prose, not front matter
            title = None
            for line in inner:
                m = re.match(r"^title[ \t]*[:=][ \t]*(.+?)[ \t]*$", line, re.I)
                if m:
                    title = m.group(1).strip().strip("\"'").strip() or None
            return i + 1, title
    return 0, None


def read_markdown(source: str) -> Document:
    """Read a script (Markdown or plain text) into headings and paragraphs of cleaned text.

    Indented text is read as prose, not as a code block (people indent paragraphs in plain text); fenced code blocks
    are skipped (they are not narration). A ``---`` line right under a single short line makes it a heading (setext),
    otherwise it is a rule; rules, like blank lines and headings, end a paragraph.
    """
    text = source.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    lines = text.split("\n")
    skip, front_title = _front_matter(lines)
    text = _COMMENT_RE.sub("", "\n".join(lines[skip:]))
    lines = text.split("\n")

    blocks: list[Block] = []
    pieces: list[list[str]] = []  # the open paragraph: pieces, each a list of raw lines
    in_list = False
    fence: str | None = None
    skipped = Counter()

    def close() -> None:
        nonlocal pieces, in_list
        cleaned = tuple(c for c in (clean_inline("\n".join(p)) for p in pieces) if c)
        if cleaned:
            blocks.append(Block("paragraph", cleaned))
        pieces, in_list = [], False

    def heading(level: int, raw: str) -> None:
        close()
        cleaned = clean_inline(raw).replace("\n", " ")
        if cleaned:
            blocks.append(Block("heading", (cleaned,), level))

    for raw_line in lines:
        # 1. Code fences: skip everything until the matching fence.
        if fence is not None:
            if raw_line.strip().startswith(fence) and not raw_line.strip()[len(fence):].strip(fence[0]).strip():
                fence = None
            continue
        m = _FENCE_RE.match(raw_line)
        if m:
            close()
            fence = m.group(1)
            skipped["code block"] += 1
            continue
        # 2. Block quotes: drop the markers and read what they quote.
        line = raw_line
        while _QUOTE_RE.match(line):
            line = _QUOTE_RE.sub("", line, count=1)
        line = line.rstrip()
        if (len(line) - len(line.rstrip("\\"))) % 2:
            line = line[:-1].rstrip()  # a Markdown hard line break (an odd run: the last backslash is not escaped)
        if not line.strip():
            close()
            continue
        skipped["image"] += len(_IMAGE_RE.findall(line))
        # 3. Headings, setext underlines, rules, link definitions, table separators.
        m = _ATX_RE.match(line)
        if m:
            heading(len(m.group(1)), m.group(2) or "")
            continue
        m = _SETEXT_RE.match(line)
        if m and len(pieces) == 1 and len(pieces[0]) == 1 and not in_list and len(pieces[0][0].split()) <= 12:
            raw = pieces[0][0]
            pieces = []
            heading(1 if m.group(1)[0] == "=" else 2, raw)
            continue
        if _RULE_RE.match(line) or (m and m.group(1)[0] == "="):
            close()
            continue
        if _REFDEF_RE.match(line) or _TABLE_SEP_RE.match(line):
            continue
        # 4. List items start a new piece; a list may follow its lead-in line directly.
        bullet = _BULLET_RE.match(line)
        ordered = _ORDERED_RE.match(line)
        if ordered and not in_list and pieces and ordered.group(1) != "1":
            ordered = None  # "2000. Then ..." wrapped onto a new line is prose, not a list
        item = bullet or ordered
        if item:
            pieces.append([item.group(2)])
            in_list = True
            continue
        # 5. Prose: continue the open piece.
        if pieces:
            pieces[-1].append(line.strip())
        else:
            pieces.append([line.strip()])
    close()
    notes = tuple(f"{n} {what}{'s' if n > 1 else ''}" for what, n in skipped.items() if n)
    return Document(tuple(blocks), front_title, notes)


# --------------------------------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------------------------------

# Abbreviations after which a period usually does not end the sentence. A period after one of these (or after an
# initial like "J." or an initialism like "U.S.") ends the sentence only when the next word is a common sentence
# starter ("... in the U.S. The next year ..."), never before a name ("Dr. Rivera", "U.S. Army").
ABBREVIATIONS = frozenset(
    """mr mrs ms mx dr prof sr jr st mt ft rev hon gov sen rep gen col capt lt sgt maj cmdr adm pres supt fr sra srta
    etc inc ltd co corp bros llc plc dept univ assn est approx misc
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun
    al ave blvd rd hwy""".split()
)
# Never the end of a sentence: they always introduce something.
NEVER_FINAL = frozenset("e.g eg i.e ie vs v cf viz".split())
# Before a number only: "No. 5", "Fig. 3", "p. 12".
BEFORE_NUMBER = frozenset("no nos fig figs p pp vol vols ch chap sec art eq op ed n ca c".split())
SENTENCE_STARTERS = frozenset(
    """a an the this that these those there here it its i we you he she they our your their his her my
    in on at as by for from with after before during when while if then so but and or yet still also now today
    however finally first next later meanwhile once since some many most each every all no not one two what why how
    where which who mr mrs ms dr prof""".split()
)
# Terminators: Latin, CJK full-width, Arabic question mark and full stop, Devanagari danda. Closers after them:
# quotes, brackets (CJK ones too) and the invisible direction marks right-to-left text carries (LRM, RLM, ALM,
# embeddings and isolates).
_CLOSER_CHARS = "\"'”’»)\\]」』）\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069"
_TERMINATOR_RE = re.compile(r"(\.{2,}|…|[.!?‽؟]+|[。！？]+|[۔।॥]+)([" + _CLOSER_CHARS + r"]*)")
_CJK_TERMINATORS = set("。！？")
_OPENERS = "\"'“‘«(["


def _mark_class() -> str:
    """A regex character class of every combining mark (Unicode categories Mn, Mc, Me): Python's ``\\w`` leaves them
    out, so without it a Devanagari word (नमस्ते: a virama and a vowel sign) would split into pieces."""
    ranges, start, last = [], None, None
    # Planes 0 and 1 hold every combining mark but the variation selectors of plane 14 (scanning only these keeps
    # the import quick).
    for code in [*range(0x20000), *range(0xE0100, 0xE01F0)]:
        if unicodedata.category(chr(code)).startswith("M"):
            if start is None:
                start = code
            elif code != last + 1:
                ranges.append((start, last))
                start = code
            last = code
    if start is not None:
        ranges.append((start, last))
    return "".join(f"\\U{a:08x}-\\U{b:08x}" if a != b else f"\\U{a:08x}" for a, b in ranges)


_W = rf"[\w{_mark_class()}]"  # a word character: \w and the combining marks that belong to words
_WORD_RE = re.compile(rf"{_W}(?:{_W}|['’\-])*")
_SPACE_RE = re.compile(r"\s*")
_TOKEN_BEFORE_RE = re.compile(r"[^\s" + re.escape(_OPENERS) + r"]*\Z")
_NEXT_WORD_RE = re.compile(r"[" + re.escape(_OPENERS) + rf"]*({_W}+)")


_UNSPACED_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")


def count_words(text: str) -> int:
    """Words in `text` (numbers count; "don't" and "well-known" are one word). Chinese and Japanese, written
    without spaces, count a word per two characters (about as long to say as an English word)."""
    words = _WORD_RE.findall(text)
    unspaced = sum(len(_UNSPACED_RE.findall(w)) for w in words)
    if not unspaced:
        return len(words)
    plain = sum(1 for w in words if not _UNSPACED_RE.search(w))
    return plain + sum(math.ceil(len(_UNSPACED_RE.findall(w)) / 2) for w in words if _UNSPACED_RE.search(w))


def _is_boundary(text: str, start: int, end: int, terminator: str) -> bool:
    """Whether the terminator ``text[start:end]`` (closers included) ends a sentence."""
    if terminator[0] in _CJK_TERMINATORS:
        return True
    if end < len(text) and not text[end].isspace():
        return False  # 3.5, example.com, "Wait.what" - not a boundary
    # Look only at a short window on each side: slicing the whole text here would make splitting quadratic.
    after = _SPACE_RE.match(text, end).end()
    rest = text[after:after + 80]
    if not rest:
        return True
    following = rest[0]
    if following.islower():
        return False  # "e.g. apples", "Why?” she asked", "and so on... and"
    if terminator != ".":
        return True  # ? ! ‽ and ellipses before a capital, digit, quote or bracket
    token = _TOKEN_BEFORE_RE.search(text[max(0, start - 80):start]).group(0)
    bare = token.lower().rstrip(".")
    next_word = _NEXT_WORD_RE.match(rest)
    next_word = next_word.group(1) if next_word else ""
    if bare in NEVER_FINAL:
        return False
    if bare in BEFORE_NUMBER and (token[:1].isupper() or len(bare) <= 2) and following.isdigit():
        return False
    is_initial = bool(re.fullmatch(r"[A-Za-z]", token))
    is_initialism = bool(re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]|[A-Z][a-z]?\.[A-Z][a-z]?", token))  # U.S., Ph.D.
    if bare in ABBREVIATIONS or is_initial or is_initialism:
        return next_word.lower() in SENTENCE_STARTERS
    return True


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in `text`; the text between sentences is only whitespace.

    Handles abbreviations ("Dr.", "e.g.", "U.S.", "etc."), decimals ("3.5"), ellipses, closing quotes and brackets
    after the terminator, runs like "?!", and CJK full stops.
    """
    spans = []
    start = 0
    for m in _TERMINATOR_RE.finditer(text):
        if _is_boundary(text, m.start(), m.end(), m.group(1)):
            chunk = text[start:m.end()]
            if chunk.strip():
                lead = len(chunk) - len(chunk.lstrip())
                spans.append((start + lead, m.end()))
            start = m.end()
    tail = text[start:]
    if tail.strip():
        lead = len(tail) - len(tail.lstrip())
        spans.append((start + lead, start + len(tail.rstrip())))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, each exactly as written (see `sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text)]


# --------------------------------------------------------------------------------------------------------------------
# Grouping sentences into scenes
# --------------------------------------------------------------------------------------------------------------------


def balanced_groups(weights: Sequence[int], *, max_weight: int, max_items: int | None = None,
                    min_weight: int = 0, item_counts: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Split items into as few contiguous groups as the limits allow, as even as possible.

    Args:
        weights: Each item's weight (e.g. a sentence's words).
        max_weight: Most weight per group; a single heavier item still forms its own group.
        max_items: Most items per group (None: no limit), counted with `item_counts`.
        min_weight: Groups lighter than this are penalised, so a tiny fragment joins a neighbour where it can.
        item_counts: How much each item counts toward `max_items` (default 1 each; e.g. 0 for a list item that is
            not a full sentence).

    Returns:
        (start, end) item ranges, in order, covering every item.
    """
    n = len(weights)
    if n == 0:
        return []
    limit = max_items if max_items is not None else n
    counts = list(item_counts) if item_counts is not None else [1] * n
    prefix, cprefix = [0], [0]
    for w, c in zip(weights, counts):
        prefix.append(prefix[-1] + w)
        cprefix.append(cprefix[-1] + c)

    def fits(a: int, b: int) -> bool:
        return b - a == 1 or (cprefix[b] - cprefix[a] <= limit and prefix[b] - prefix[a] <= max_weight)

    # Group starts that can end at b, nearest first (groups only grow heavier going back, so stop at the first misfit).
    def starts(b: int):
        for a in range(b - 1, -1, -1):
            if not fits(a, b):
                return
            yield a

    # 1. The fewest groups that respect the limits: for the items before b, and for the items from b on.
    fewest = [0] + [math.inf] * n
    for b in range(1, n + 1):
        fewest[b] = min(fewest[a] + 1 for a in starts(b))
    k = int(fewest[n])
    rest = [math.inf] * n + [0]
    for a in range(n - 1, -1, -1):
        b = a + 1
        while b <= n and fits(a, b):
            rest[a] = min(rest[a], rest[b] + 1)
            b += 1

    # 2. Among partitions into k groups, the most even one (least squared distance from the mean weight). Only
    #    states that can still finish in k groups are kept, so this stays linear in the number of items.
    mean = prefix[n] / k

    def cost(a: int, b: int) -> float:
        w = prefix[b] - prefix[a]
        penalty = 50.0 * (min_weight - w) ** 2 if k > 1 and w < min_weight else 0.0
        return (w - mean) ** 2 + penalty

    best: list[dict[int, tuple[float, int]]] = [{} for _ in range(n + 1)]  # best[b][groups] = (cost, start)
    best[0][0] = (0.0, 0)
    for b in range(1, n + 1):
        states = best[b]
        for a in starts(b):
            step = cost(a, b)
            for j, (c, _) in best[a].items():
                if j + 1 + rest[b] > k:
                    continue
                total = c + step
                if j + 1 not in states or total < states[j + 1][0]:
                    states[j + 1] = (total, a)
    groups = []
    b, j = n, k
    while b > 0:
        a = best[b][j][1]
        groups.append((a, b))
        b, j = a, j - 1
    return groups[::-1]


def even_groups(n: int, k: int) -> list[tuple[int, int]]:
    """`n` items shared out in order over `k` (<= n) groups whose sizes differ by at most one."""
    if k <= 0:
        return []
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


_CLAUSE_RE = re.compile(r"[,;:—–،؛](?=\s)|[，、；：]|\s[-–—](?=\s)")  # CJK clause marks need no space after them


def _split_long(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    """Cut one over-long sentence ``text[start:end]`` at clause marks (else between words) into balanced spans."""
    cuts = [m.end() for m in _CLAUSE_RE.finditer(text, start, end)]
    units = []
    a = start
    for c in cuts + [end]:
        if text[a:c].strip():
            units.append((a, c))
        a = c
    # A clause still too long is cut between words.
    fine: list[tuple[int, int]] = []
    for a, b in units:
        if count_words(text[a:b]) <= max_words:
            fine.append((a, b))
            continue
        spans = [(a + w.start(), a + w.end()) for w in re.finditer(r"\S+", text[a:b])]
        for g0, g1 in even_groups(len(spans), -(-len(spans) // max_words)):
            fine.append((spans[g0][0], spans[g1 - 1][1]))
    groups = balanced_groups([count_words(text[a:b]) for a, b in fine], max_weight=max_words)
    out = []
    for g0, g1 in groups:
        a, b = fine[g0][0], fine[g1 - 1][1]
        chunk = text[a:b]
        a += len(chunk) - len(chunk.lstrip())
        b -= len(chunk) - len(chunk.rstrip())
        out.append((a, b))
    return out


def scene_spans(block: Block, *, max_words: int = 45, max_sentences: int = 3, min_words: int = 6) -> list[tuple[int, int]]:
    """Cut a paragraph into scene-sized spans of ``block.text``: 1-`max_sentences` sentences and at most `max_words`
    words each, as few and as even as possible; a tiny trailing or leading fragment joins its neighbour. List items
    are units of their own (a scene never ends inside one).

    A single sentence longer than `max_words` is cut at its commas, semicolons, colons or dashes (or between words).
    """
    text = block.text
    units: list[tuple[int, int]] = []
    offset = 0
    for piece in block.pieces:
        for a, b in sentence_spans(piece):
            a, b = a + offset, b + offset
            if count_words(text[a:b]) > max_words:
                units.extend(_split_long(text, a, b, max_words))
            else:
                units.append((a, b))
        offset += len(piece) + 1
    # A list item or lead-in without final punctuation ("Bring these:", "a ruler") is not a sentence: it counts
    # toward the word limit only.
    full = [1 if re.search(r"[.!?…。！？‽؟۔।॥][" + _CLOSER_CHARS + r"]*$", text[a:b]) else 0 for a, b in units]
    groups = balanced_groups([count_words(text[a:b]) for a, b in units], max_weight=max_words,
                             max_items=max_sentences, min_weight=min_words, item_counts=full)
    return [(units[g0][0], units[g1 - 1][1]) for g0, g1 in groups]


# --------------------------------------------------------------------------------------------------------------------
# Key words
# --------------------------------------------------------------------------------------------------------------------

STOP_WORDS = frozenset(
    """a about above across after afterwards again against ago all almost alone along already also although always am
    among amongst an and another any anybody anyone anything anyway anywhere are around as at away back be became
    because become becomes becoming been before began begin begins behind being below beside besides between beyond
    both but by came can cannot could did do does doing done down during each either else elsewhere end ends enough
    even ever every everyone everything everywhere few first for former from further get gets getting give gives go
    goes going gone got had has have having he her here hers herself him himself his how however i if in indeed
    instead into is it its itself just keep keeps kind last later least less let lets like likely made make makes
    making many may maybe me meanwhile might mine more moreover most mostly much must my myself near nearly need
    needs neither never next no nobody none noone nor not nothing now nowhere of off often on once one ones only onto
    or other others otherwise our ours ourselves out over own part per perhaps put quite rather really said same say
    says see seem seemed seems seen several shall she should show shows since so some somebody someone something
    sometime sometimes somewhere still such take takes than that the their theirs them themselves then there
    thereafter therefore these they thing things this those though through throughout thus to today together too
    took toward towards turn turns under unless until up upon us use used uses using very via want wants was way ways
    we well were what whatever when whenever where whereas wherever whether which while who whoever whole whom whose
    why will with within without would yet you your yours yourself yourselves
    called call calls get tell tells told know knows known think thinks go went come comes look looks looking mean
    means put puts set sets try tries ready lot lots bit far inside outside whole real single somewhere plus minus
    able actually almost around certain different else enough even every example exactly instead kinds likely lot
    sure true
    zero two three four five six seven eight nine ten hundred thousand million billion half
    i'm i've i'd i'll you're you've you'd you'll he's she's it's we're we've we'd we'll they're they've they'd
    they'll that's there's here's what's who's let's don't doesn't didn't isn't aren't wasn't weren't won't
    wouldn't can't couldn't shouldn't haven't hasn't hadn't""".split()
)
# Common verbs: they make poor picture words, so they end a key phrase ("pickers | harvest", "plants | love |
# altitude"). Words that are as often picture nouns ("dance", "water", "face", "plant", "light") are left out.
_VERBS = """accept achieve add admit affect agree allow appear apply argue arrive ask avoid become begin believe belong
    borrow break bring build bump buy carry catch cause change check choose claim climb collect compare complain
    complete consider contain continue create cross cry cut decide deliver depend describe destroy develop die discover
    discuss divide eat enjoy enter escape expect explain express fall feel fight fill find finish fly follow forget
    gather grab grow happen hate hear help hide hit hold hope hurt imagine improve include increase introduce invite
    join jump kill lead learn leave lend lie listen live lose love manage marry matter meet mention move notice
    obtain occur offer open pass pay pick pour prefer prepare prevent produce promise protect prove provide pull push
    reach realise realize receive recognise recognize reduce refer relax release remain remember remove repeat
    replace reply report require rest return reveal ride rise save scatter seem sell send serve share shine shout sing sit
    sleep smell speak spend spread stand start stay steal stop study succeed suggest supply support suppose surprise
    survive swim talk teach tend thank throw touch travel treat trust understand visit wait wake walk warn wash watch
    wear win wish wonder worry write""".split()
_IRREGULAR = """became began begun broke broken brought built bought caught chose chosen did drew drawn drank drove driven
    ate eaten fell fallen felt fought found flew flown forgot forgotten gave given went grew grown hid hidden held
    heard kept knew laid led left lent lay lost meant met paid quit rode ridden rang rose risen ran sold sent shook
    shaken shone shot showed shown shut sang sank sat slept slid spoke spoken spent stood stole stolen stuck struck
    swept swam swum taught tore torn thought threw thrown understood woke woken wore worn won wrote written""".split()
# -ing and -ed forms that are mostly nouns or adjectives, kept as picture words.
_NOT_VERBS = {"building", "buildings", "meeting", "meetings", "feeling", "feelings", "living", "opening", "openings",
              "reading", "readings", "findings", "savings", "learning", "beginning", "surroundings", "drawing",
              "drawings", "crossing", "crossings", "landing", "setting", "settings", "writing", "writings"}


def _verb_forms(base: str) -> set[str]:
    """Base, third person, past and -ing forms of a regular verb (with and without a doubled final consonant)."""
    forms = {base}
    stem_y = base[:-1] if base.endswith("y") and base[-2:-1] not in "aeiou" else None
    forms.add(stem_y + "ies" if stem_y else base + ("es" if base.endswith(("s", "x", "z", "ch", "sh", "o")) else "s"))
    forms.add(stem_y + "ied" if stem_y else base + ("d" if base.endswith("e") else "ed"))
    forms.add(base[:-1] + "ing" if base.endswith("e") and not base.endswith("ee") else base + "ing")
    if re.fullmatch(r".*[^aeiou][aeiou][bdgklmnprt]", base):
        forms.update({base + base[-1] + "ed", base + base[-1] + "ing"})
    return forms


VERB_FORMS = frozenset(set().union(*(_verb_forms(v) for v in _VERBS)) | set(_IRREGULAR)) - _NOT_VERBS
# Joins two capitalised words into one name: "Tropic of Cancer", "Statue of Liberty".
_NAME_JOINERS = frozenset({"of", "de", "la", "del", "da", "van", "von"})
_TOKEN_RE = re.compile(rf"{_W}(?:{_W}|['’\-])*{_W}|{_W}")


def normalise(word: str) -> str:
    """A crude lemma for counting: lower case, possessive and plural 's' dropped ("Fractions" ~ "fraction")."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return w


def content_words(text: str, proper: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The words of `text` that can be key words: not stop words, common verbs or adverbs (as written)."""
    return [w for w in _TOKEN_RE.findall(text) if _is_content(w, proper)]


def _is_content(word: str, proper: set[str] | frozenset[str] = frozenset()) -> bool:
    lower = word.lower().replace("’", "'")
    if lower in STOP_WORDS or (lower.endswith("'s") and lower[:-2] in STOP_WORDS):
        return False
    if word in proper:
        return True
    if lower in VERB_FORMS:
        return False
    if word.isdigit():
        return len(word) >= 2  # years and amounts, not "1"
    if len(word) < 3 and not word.isupper() and word.isascii():
        return False  # short words of spaced Latin text are function words; 東京 or γη are not
    if len(lower) > 4 and lower.endswith("ly"):
        return False  # adverbs ("slowly", "finally") make poor picture words
    return True


@dataclass(frozen=True)
class Phrase:
    """A candidate key phrase: its display text, where it starts, its score and its words' lemmas."""

    text: str
    position: int
    score: float
    lemmas: tuple[str, ...]


def proper_words(text: str) -> set[str]:
    """Words written with a capital where a sentence does not start (names: "Capricorn", "NASA")."""
    proper = set()
    for a, b in sentence_spans(text):
        sentence = text[a:b]
        for i, m in enumerate(_TOKEN_RE.finditer(sentence)):
            word = m.group(0)
            starts_line = m.start() > 0 and sentence[:m.start()].rstrip(" \t").endswith("\n")
            if word[0].isupper() and (i > 0 and not starts_line) or (len(word) > 1 and word.isupper()):
                proper.add(word)
    return proper


def candidate_phrases(text: str, *, proper: set[str] | None = None, weights: dict[str, float] | None = None,
                      max_words: int = 3) -> list[Phrase]:
    """Runs of content words not broken by stop words or punctuation, scored (see `key_phrases`)."""
    proper = proper_words(text) if proper is None else proper
    weights = weights or {}
    tokens = list(_TOKEN_RE.finditer(text))
    counts = Counter(normalise(t.group(0)) for t in tokens if _is_content(t.group(0), proper))
    runs: list[list[re.Match]] = []
    run: list[re.Match] = []
    for i, tok in enumerate(tokens):
        word = tok.group(0)
        joined = run and text[run[-1].end():tok.start()].strip(" ") == ""  # only spaces since the last word
        if _is_content(word, proper):
            if run and not joined:
                runs.append(run)
                run = []
            run.append(tok)
            continue
        # A name joiner between two capitalised words stays inside the run ("Tropic of Cancer").
        nxt = tokens[i + 1].group(0) if i + 1 < len(tokens) else ""
        if (word.lower() in _NAME_JOINERS and run and joined and run[-1].group(0) in proper and nxt in proper
                and text[tok.end():tokens[i + 1].start()].strip(" ") == ""):
            run.append(tok)
            continue
        if run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)

    phrases = []
    for run in runs:
        # Long runs keep their last words: in English the head noun comes last ("rich volcanic soil").
        while run and run[0].group(0).lower() in _NAME_JOINERS:
            run = run[1:]
        if len(run) > max_words:
            run = run[-max_words:]
            while run and run[0].group(0).lower() in _NAME_JOINERS:
                run = run[1:]
        words = [t.group(0) for t in run]
        content = [w for w in words if w.lower() not in _NAME_JOINERS]
        if not content:
            continue
        score = 0.0
        for w in content:
            s = 1.0 + 0.25 * min(len(w), 12)
            if w in proper:
                s += 1.5
            if any(ch.isdigit() for ch in w):
                s += 0.5
            if w.lower().endswith("ing") and len(content) > 1:
                s -= 0.75  # "climbing steep hillsides": the verb matters less than the picture
            s += 0.5 * (counts[normalise(w)] - 1) + weights.get(normalise(w), 0.0)
            score += s
        score = score / len(content) * (1 + 0.35 * (len(content) - 1))
        display = text[run[0].start():run[-1].end()]
        if run[0].group(0) not in proper and not run[0].group(0).isupper():
            display = display[0].lower() + display[1:]
        phrases.append(Phrase(display, run[0].start(), score, tuple(normalise(w) for w in content)))
    return phrases


def key_phrases(text: str, *, limit: int = 5, proper: set[str] | None = None, weights: dict[str, float] | None = None,
                max_total_words: int = 10) -> list[str]:
    """The key words and short phrases of `text`, best first chosen, returned in order of appearance.

    Stop words are dropped; what remains is grouped into phrases of up to three adjacent words ("steep hillsides") and
    ranked by length, capitalisation (names), repetition and optional per-word `weights`. Deterministic.

    Args:
        text: The text (a scene's narration, a brief).
        limit: Most phrases to return.
        proper: Words known to be names (kept capitalised, ranked higher); found from `text` when None.
        weights: Extra score per normalised word (see `normalise`).
        max_total_words: Most words over all returned phrases.
    """
    phrases = candidate_phrases(text, proper=proper, weights=weights)
    chosen: list[Phrase] = []
    seen: set[str] = set()
    words = 0
    for phrase in sorted(phrases, key=lambda p: (-p.score, p.position)):
        if len(chosen) >= limit:
            break
        if set(phrase.lemmas) <= seen:
            continue  # "Tropic" again, "coffee" again
        n = len(phrase.lemmas)
        if words + n > max_total_words and chosen:
            continue
        chosen.append(phrase)
        seen.update(phrase.lemmas)
        words += n
    return [p.text for p in sorted(chosen, key=lambda p: p.position)]


def join_and(items: Iterable[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
