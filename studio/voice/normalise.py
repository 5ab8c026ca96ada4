"""Text normalisation before synthesis: numbers, dates, times, money, units and abbreviations said as a person reads
them, per language.

    spoken_words(["In", "1822,", "Dr.", "Smith", "paid", "$4.20"], "en")
    # ['In', 'eighteen twenty-two,', 'Doctor', 'Smith', 'paid', 'four dollars and twenty cents']

Narrators (espeak-ng, and Piper through espeak-ng's phonemizer) read "1822" as "one thousand eight hundred and
twenty-two" and "Dr." as "D R"; `narrate` therefore gives them the *spoken* text (`reading`) and folds the word
timings they return back onto the *written* words (`fold_timings`), so captions keep what the script says ("1822",
"3.5 kg") on the time it is heard.

What is read (English, French, German, Spanish; number words come from ``num2words``, LGPL-2.1):

- plain numbers with the language's separators ("1,000,000" en, "1.000.000" de, "1 000 000" fr), decimals ("3.5"
  -> "three point five", "3,5" -> "trois virgule cinq"), negatives; leading zeros digit by digit ("007");
- years: a four-digit number from 1000 to 2099 written without a separator ("1822" -> "eighteen twenty-two",
  "achtzehnhundertzweiundzwanzig"; "1,822" stays a quantity), decades ("1990s"), ISO dates ("2021-05-03"), a day
  beside a month name ("3 May", "May 3", "1er mai", "3. Mai");
- ordinals ("21st", "21e", "21.º", German "21." before a month or a lower-case word), times ("10:30", "10h30"),
  percentages ("50%", "50 %"), money ("$4.20", "4,20 €", "£3", "5 EUR"), number + unit ("3.5 kg", "100km/h",
  "20°C"), ranges ("1990-2000");
- common abbreviations ("Dr.", "Mr.", "St.", "e.g.", "etc.", "z.B.", "Mme", "Sra.") and "&".

Other languages that ``num2words`` knows get plain integers read; anything else is left as written (the engine reads
it its own way). The known ambiguity: a bare "1822" is read as a year, the common case in narration.

Mapping (`spoken_words`): one spoken string per written word. A pattern over several written words ("3.5 kg",
"4,20 €") gives each word its own spoken part where the order allows ("three point five" | "kilograms"), else the
whole spoken text to the first word and "" to the others; `fold_timings` then shares the first word's time among them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from ..project import WordTiming

__all__ = ["NORMALISER_VERSION", "Reading", "spoken_words", "reading", "fold_timings"]

# Part of the narration asset's cache key: bump it whenever a rule here changes what is said.
NORMALISER_VERSION = "1"

# -- language facts ---------------------------------------------------------------------------------------------------
_MONTHS = {
    "en": "january february march april may june july august september october november december",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "de": "januar februar märz april mai juni juli august september oktober november dezember",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
}
_MONTH_NAMES = {lang: names.split() for lang, names in _MONTHS.items()}
_EN_MONTH_ABBR = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
                  "oct": 10, "nov": 11, "dec": 12}

# Units: written form -> (singular, plural) per language. Matched case-sensitively (m is metres, M is not a unit).
_UNITS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "mg": ("milligram", "milligrams"),
        "km": ("kilometre", "kilometres"), "m": ("metre", "metres"), "cm": ("centimetre", "centimetres"),
        "mm": ("millimetre", "millimetres"), "km/h": ("kilometre per hour", "kilometres per hour"),
        "kph": ("kilometre per hour", "kilometres per hour"), "mph": ("mile per hour", "miles per hour"),
        "m/s": ("metre per second", "metres per second"), "l": ("litre", "litres"), "L": ("litre", "litres"),
        "ml": ("millilitre", "millilitres"), "mL": ("millilitre", "millilitres"), "h": ("hour", "hours"),
        "hr": ("hour", "hours"), "hrs": ("hours", "hours"), "min": ("minute", "minutes"),
        "s": ("second", "seconds"), "sec": ("second", "seconds"), "ms": ("millisecond", "milliseconds"),
        "kWh": ("kilowatt hour", "kilowatt hours"), "kW": ("kilowatt", "kilowatts"), "W": ("watt", "watts"),
        "MW": ("megawatt", "megawatts"), "V": ("volt", "volts"), "Hz": ("hertz", "hertz"),
        "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"), "GHz": ("gigahertz", "gigahertz"),
        "kB": ("kilobyte", "kilobytes"), "KB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"),
        "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"), "°C": ("degree Celsius", "degrees Celsius"),
        "°F": ("degree Fahrenheit", "degrees Fahrenheit"), "°": ("degree", "degrees"), "lb": ("pound", "pounds"),
        "lbs": ("pounds", "pounds"), "oz": ("ounce", "ounces"), "ft": ("foot", "feet"), "mi": ("mile", "miles"),
        "ha": ("hectare", "hectares"), "m²": ("square metre", "square metres"),
        "km²": ("square kilometre", "square kilometres"), "t": ("tonne", "tonnes"),
    },
    "fr": {
        "kg": ("kilogramme", "kilogrammes"), "g": ("gramme", "grammes"), "mg": ("milligramme", "milligrammes"),
        "km": ("kilomètre", "kilomètres"), "m": ("mètre", "mètres"), "cm": ("centimètre", "centimètres"),
        "mm": ("millimètre", "millimètres"), "km/h": ("kilomètre heure", "kilomètres heure"),
        "m/s": ("mètre par seconde", "mètres par seconde"), "l": ("litre", "litres"), "L": ("litre", "litres"),
        "ml": ("millilitre", "millilitres"), "mL": ("millilitre", "millilitres"), "h": ("heure", "heures"),
        "min": ("minute", "minutes"), "s": ("seconde", "secondes"), "ms": ("milliseconde", "millisecondes"),
        "kWh": ("kilowattheure", "kilowattheures"), "kW": ("kilowatt", "kilowatts"), "W": ("watt", "watts"),
        "V": ("volt", "volts"), "Hz": ("hertz", "hertz"), "Go": ("gigaoctet", "gigaoctets"),
        "Mo": ("mégaoctet", "mégaoctets"), "ko": ("kilooctet", "kilooctets"), "To": ("téraoctet", "téraoctets"),
        "°C": ("degré Celsius", "degrés Celsius"), "°": ("degré", "degrés"), "ha": ("hectare", "hectares"),
        "m²": ("mètre carré", "mètres carrés"), "km²": ("kilomètre carré", "kilomètres carrés"), "t": ("tonne", "tonnes"),
    },
    "de": {
        "kg": ("Kilogramm", "Kilogramm"), "g": ("Gramm", "Gramm"), "mg": ("Milligramm", "Milligramm"),
        "km": ("Kilometer", "Kilometer"), "m": ("Meter", "Meter"), "cm": ("Zentimeter", "Zentimeter"),
        "mm": ("Millimeter", "Millimeter"), "km/h": ("Kilometer pro Stunde", "Kilometer pro Stunde"),
        "m/s": ("Meter pro Sekunde", "Meter pro Sekunde"), "l": ("Liter", "Liter"), "L": ("Liter", "Liter"),
        "ml": ("Milliliter", "Milliliter"), "mL": ("Milliliter", "Milliliter"), "h": ("Stunde", "Stunden"),
        "Std.": ("Stunde", "Stunden"), "min": ("Minute", "Minuten"), "Min.": ("Minute", "Minuten"),
        "s": ("Sekunde", "Sekunden"), "Sek.": ("Sekunde", "Sekunden"), "ms": ("Millisekunde", "Millisekunden"),
        "kWh": ("Kilowattstunde", "Kilowattstunden"), "kW": ("Kilowatt", "Kilowatt"), "W": ("Watt", "Watt"),
        "V": ("Volt", "Volt"), "Hz": ("Hertz", "Hertz"), "MB": ("Megabyte", "Megabyte"), "GB": ("Gigabyte", "Gigabyte"),
        "TB": ("Terabyte", "Terabyte"), "°C": ("Grad Celsius", "Grad Celsius"), "°": ("Grad", "Grad"),
        "ha": ("Hektar", "Hektar"), "m²": ("Quadratmeter", "Quadratmeter"), "km²": ("Quadratkilometer", "Quadratkilometer"),
        "t": ("Tonne", "Tonnen"),
    },
    "es": {
        "kg": ("kilogramo", "kilogramos"), "g": ("gramo", "gramos"), "mg": ("miligramo", "miligramos"),
        "km": ("kilómetro", "kilómetros"), "m": ("metro", "metros"), "cm": ("centímetro", "centímetros"),
        "mm": ("milímetro", "milímetros"), "km/h": ("kilómetro por hora", "kilómetros por hora"),
        "m/s": ("metro por segundo", "metros por segundo"), "l": ("litro", "litros"), "L": ("litro", "litros"),
        "ml": ("mililitro", "mililitros"), "mL": ("mililitro", "mililitros"), "h": ("hora", "horas"),
        "min": ("minuto", "minutos"), "s": ("segundo", "segundos"), "ms": ("milisegundo", "milisegundos"),
        "kWh": ("kilovatio hora", "kilovatios hora"), "kW": ("kilovatio", "kilovatios"), "W": ("vatio", "vatios"),
        "V": ("voltio", "voltios"), "Hz": ("hercio", "hercios"), "MB": ("megabyte", "megabytes"),
        "GB": ("gigabyte", "gigabytes"), "°C": ("grado Celsius", "grados Celsius"), "°": ("grado", "grados"),
        "ha": ("hectárea", "hectáreas"), "m²": ("metro cuadrado", "metros cuadrados"),
        "km²": ("kilómetro cuadrado", "kilómetros cuadrados"), "t": ("tonelada", "toneladas"),
    },
}
_WORDS = {  # point, percent, minus, range ("to"), "and" between units of money, o'clock
    "en": {"point": "point", "percent": "percent", "minus": "minus", "to": "to", "and": "and"},
    "fr": {"point": "virgule", "percent": "pour cent", "minus": "moins", "to": "à", "and": "et"},
    "de": {"point": "Komma", "percent": "Prozent", "minus": "minus", "to": "bis", "and": "und"},
    "es": {"point": "coma", "percent": "por ciento", "minus": "menos", "to": "a", "and": "con"},
}
# Currency -> (major singular, major plural, minor singular, minor plural) per language.
_CURRENCY_CODES = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "USD": "USD", "EUR": "EUR",
                   "GBP": "GBP", "JPY": "JPY"}
_CURRENCIES = {
    "en": {"USD": ("dollar", "dollars", "cent", "cents"), "EUR": ("euro", "euros", "cent", "cents"),
           "GBP": ("pound", "pounds", "penny", "pence"), "JPY": ("yen", "yen", "", "")},
    "fr": {"USD": ("dollar", "dollars", "cent", "cents"), "EUR": ("euro", "euros", "centime", "centimes"),
           "GBP": ("livre", "livres", "penny", "pence"), "JPY": ("yen", "yens", "", "")},
    "de": {"USD": ("Dollar", "Dollar", "Cent", "Cent"), "EUR": ("Euro", "Euro", "Cent", "Cent"),
           "GBP": ("Pfund", "Pfund", "Penny", "Pence"), "JPY": ("Yen", "Yen", "", "")},
    "es": {"USD": ("dólar", "dólares", "centavo", "centavos"), "EUR": ("euro", "euros", "céntimo", "céntimos"),
           "GBP": ("libra", "libras", "penique", "peniques"), "JPY": ("yen", "yenes", "", "")},
}
_SCALES = {  # "$5m", "$3bn", "€2 million"
    "en": {"k": "thousand", "m": "million", "mn": "million", "bn": "billion", "b": "billion", "tn": "trillion"},
}
# Abbreviations: written -> spoken. Titles (said before a name) never end a sentence; the others keep a full stop
# that ends one.
_TITLES = {
    "en": {"Dr.": "Doctor", "Dr": "Doctor", "Mr.": "Mister", "Mr": "Mister", "Mrs.": "Missus", "Mrs": "Missus",
           "Ms.": "Miz", "Prof.": "Professor", "Mt.": "Mount", "Gen.": "General", "Capt.": "Captain",
           "Lt.": "Lieutenant", "Sgt.": "Sergeant", "Gov.": "Governor", "Sen.": "Senator", "Rev.": "Reverend",
           "Pres.": "President", "No.": "number", "Nos.": "numbers", "Fig.": "figure", "fig.": "figure"},
    "fr": {"M.": "Monsieur", "MM.": "Messieurs", "Mme": "Madame", "Mmes": "Mesdames", "Mlle": "Mademoiselle",
           "Mlles": "Mesdemoiselles", "Dr": "Docteur", "Dr.": "Docteur", "Pr": "Professeur", "Me": "Maître",
           "St": "Saint", "Ste": "Sainte", "n°": "numéro", "N°": "numéro"},
    "de": {"Dr.": "Doktor", "Prof.": "Professor", "Hr.": "Herr", "Fr.": "Frau", "St.": "Sankt", "Nr.": "Nummer"},
    "es": {"Sr.": "señor", "Sra.": "señora", "Srta.": "señorita", "Dr.": "doctor", "Dra.": "doctora",
           "D.": "don", "Dña.": "doña", "Ud.": "usted", "Uds.": "ustedes", "nº": "número", "Nº": "número",
           "núm.": "número"},
}
_ABBREVIATIONS = {
    "en": {"etc.": "et cetera", "e.g.": "for example", "i.e.": "that is", "vs.": "versus", "vs": "versus",
           "approx.": "approximately", "Jr.": "Junior", "Sr.": "Senior", "Ave.": "Avenue", "Blvd.": "Boulevard",
           "Rd.": "Road", "Inc.": "Incorporated", "Ltd.": "Limited", "Co.": "Company", "Corp.": "Corporation",
           "Dept.": "Department", "Univ.": "University", "&": "and",
           **{f"{abbr.capitalize()}.": _MONTH_NAMES["en"][n - 1].capitalize() for abbr, n in _EN_MONTH_ABBR.items()}},
    "fr": {"etc.": "et cetera", "c.-à-d.": "c'est-à-dire", "env.": "environ", "av.": "avenue", "bd": "boulevard",
           "&": "et"},
    "de": {"z.B.": "zum Beispiel", "usw.": "und so weiter", "bzw.": "beziehungsweise", "d.h.": "das heißt",
           "ca.": "circa", "etc.": "et cetera", "u.a.": "unter anderem", "evtl.": "eventuell",
           "ggf.": "gegebenenfalls", "inkl.": "inklusive", "vgl.": "vergleiche", "Str.": "Straße", "&": "und"},
    "es": {"etc.": "etcétera", "aprox.": "aproximadamente", "Av.": "avenida", "Avda.": "avenida", "&": "y"},
}
_TWO_WORD_ABBREVIATIONS = {"de": {("z.", "B."): "zum Beispiel", ("d.", "h."): "das heißt", ("u.", "a."): "unter anderem"},
                           "fr": {("p.", "ex."): "par exemple"}, "es": {("p.", "ej."): "por ejemplo",
                                                                        ("EE.", "UU."): "Estados Unidos"}}
_AM_PM = {"am": "a m", "a.m.": "a m", "pm": "p m", "p.m.": "p m"}

# -- token shapes -----------------------------------------------------------------------------------------------------
_LEAD = "\"'“‘«‹([{¿¡„‚"
_TRAIL = "\"'”’»›)]}.,;:!?…—–-"
_EDGE_RE = re.compile(rf"^(?P<lead>[{re.escape(_LEAD)}\s]*)(?P<core>.*?)(?P<trail>[{re.escape(_TRAIL)}\s]*)$", re.S)
_NUMBER = {  # (integer with thousands separators | plain integer) and an optional fraction
    "en": r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?",
    "latin": r"(?:\d{1,3}(?:[.\u00a0\u202f']\d{3})+|\d+)(?:,\d+)?",  # fr, de, es: 1.000,5 / 1 000,5
}
_CURRENCY_SYMBOL_RE = r"(?P<cur>US\$|[$€£¥])"
_ORDINAL_RE = {
    "en": re.compile(r"^(?P<n>\d+)(?P<suffix>st|nd|rd|th)$", re.I),
    "fr": re.compile(r"^(?P<n>\d+)(?P<suffix>er|re|ère|e|ème|eme|ᵉ|ᵉʳ|ʳᵉ)$"),
    "es": re.compile(r"^(?P<n>\d+)\.?(?P<suffix>º|ª|°|er|o|a)$"),
}
_TIME_RE = re.compile(r"^(?P<h>[01]?\d|2[0-4])(?::|h|H)(?P<m>[0-5]\d)(?P<ampm>am|pm|a\.m\.|p\.m\.)?$", re.I)
_HOUR_RE = re.compile(r"^(?P<h>[01]?\d|2[0-4])(?P<ampm>am|pm|a\.m\.|p\.m\.|h)$", re.I)
_ISO_DATE_RE = re.compile(r"^(?P<y>1\d{3}|20\d{2})-(?P<m>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12]\d|3[01])$")
_DECADE_RE = re.compile(r"^(?P<apos>['’])?(?P<n>\d{1,3}0)s$")
_RANGE_RE = re.compile(r"^(?P<a>\d+)[-–](?P<b>\d+)$")
_CJK_OR_THAI = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_DE_ORDINAL_NOUNS = {"jahrhundert", "jahrhunderts", "platz", "stock", "klasse", "mal", "auflage", "stelle", "runde",
                     "woche", "tag", "etage", "liga", "grad"}
_DE_ORDINAL_AFTER = {"am", "im", "vom", "zum", "beim", "dem", "den", "des"}  # ordinal takes the -n ending after these


@dataclass(frozen=True)
class _Token:
    lead: str
    core: str
    trail: str


def _token(word: str) -> _Token:
    m = _EDGE_RE.match(word)
    return _Token(m.group("lead"), m.group("core"), m.group("trail")) if m else _Token("", word, "")


def _primary(language: str) -> str:
    return (language or "en").strip().replace("_", "-").split("-")[0].lower()


class _Speaker:
    """Number words for one language (``num2words``), or None where it does not know the language."""

    def __init__(self, language: str) -> None:
        self.lang = _primary(language)
        self.table = self.lang if self.lang in _WORDS else None  # en/fr/de/es: the full rules
        self.num2words = _num2words_for(self.lang)
        self.number_re = _NUMBER["en"] if self.lang not in ("fr", "de", "es") else _NUMBER["latin"]

    # numbers -----------------------------------------------------------------------------------------------------------
    def cardinal(self, n: int) -> str:
        if self.num2words is None:
            return str(n)
        if abs(n) >= 10 ** 15:
            return self.digits(str(abs(n))) if n >= 0 else f"{self.word('minus')} {self.digits(str(-n))}"
        return self.num2words(n, lang=self.lang)

    def ordinal(self, n: int) -> str:
        return self._form(n, "ordinal")

    def year(self, n: int) -> str:
        return self._form(n, "year")

    def _form(self, n: int, to: str) -> str:
        """`n` as num2words' `to` form (``ordinal``, ``year``); its plain number words where the language has no such
        form in num2words (several raise NotImplementedError, or fail inside with TypeError or AttributeError), and
        the digits where num2words does not know the language at all."""
        if self.num2words is None:
            return str(n)
        try:
            return self.num2words(n, lang=self.lang, to=to)
        except (NotImplementedError, TypeError, ValueError, AttributeError):
            return self.cardinal(n)

    def digits(self, text: str) -> str:
        return " ".join(self.cardinal(int(d)) for d in text if d.isdigit())

    def word(self, key: str) -> str:
        return _WORDS.get(self.table or "en", _WORDS["en"])[key]

    def parse(self, text: str) -> tuple[int, str] | None:
        """(integer part, fraction digits) of a number written in this language's style, or None."""
        if not re.fullmatch(self.number_re, text):
            return None
        if self.number_re == _NUMBER["en"]:
            whole, _, frac = text.partition(".")
            whole = whole.replace(",", "")
        else:
            whole, _, frac = text.partition(",")
            whole = re.sub(r"[.\u00a0\u202f']", "", whole)
        return int(whole), frac

    def number(self, text: str) -> str | None:
        """A written number (separators, decimals, a sign) in words, or None if `text` is not one."""
        sign = ""
        if text[:1] in "-−" and len(text) > 1:
            sign, text = self.word("minus") + " ", text[1:]
        parsed = self.parse(text)
        if parsed is None:
            return None
        whole, frac = parsed
        if len(text) > 1 and text[0] == "0" and text.isdigit():  # "007", "0800": said digit by digit
            return sign + self.digits(text)
        out = self.cardinal(whole)
        if frac:
            if self.lang != "en" and len(frac) <= 2 and not frac.startswith("0"):
                out += f" {self.word('point')} {self.cardinal(int(frac))}"  # "trois virgule quatorze"
            else:
                out += f" {self.word('point')} {self.digits(frac)}"  # "three point one four"
        return sign + out

    @staticmethod
    def is_one(text: str) -> bool:
        return text in ("1", "-1")


def _num2words_for(lang: str) -> Callable | None:
    try:
        from num2words import CONVERTER_CLASSES, num2words
    except ImportError:  # a core dependency; without it numbers stay as written
        return None
    return num2words if lang in CONVERTER_CLASSES else None


# -- the rules --------------------------------------------------------------------------------------------------------
def spoken_words(words: Sequence[str], language: str) -> list[str]:
    """How each written word is said, as a person reads it in `language`.

    Args:
        words: Written words, as `studio.voice.timing.split_words` gives them (punctuation attached).
        language: The text's language (``en``, ``fr-FR``, ``de``, ``es``...; others get plain integers read where
            ``num2words`` knows them, the rest unchanged).

    Returns:
        One spoken string per written word (same length as `words`): the word itself when nothing needs reading
        out, else its spoken form with the word's leading and trailing punctuation kept (it marks the pauses).
        A pattern over several words gives each its part in order ("3.5", "kg" -> "three point five",
        "kilograms"), or everything to the first and "" to the rest ("4,20", "€" -> "quatre euros vingt", "").
    """
    speaker = _Speaker(language)
    out = list(words)
    if speaker.num2words is None and speaker.table is None:
        return out
    tokens = [_token(w) for w in words]
    i = 0
    while i < len(words):
        taken = _read_at(speaker, tokens, i)
        if taken is None:
            i += 1
            continue
        parts, count = taken
        for k in range(count):
            out[i + k] = parts[k]
        i += count
    return out


def _read_at(s: _Speaker, tokens: list[_Token], i: int) -> tuple[list[str], int] | None:
    """The spoken parts of the words from `i` on that one rule reads (and how many words it covers), or None."""
    tok = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    prev = tokens[i - 1] if i > 0 else None
    core = tok.core
    if not core:
        return None
    if s.table is None:  # a language without the full rules: plain integers only
        if core.isdigit() and not (len(core) > 1 and core[0] == "0"):
            return [_wrap(tok, s.cardinal(int(core)))], 1
        return None
    lang = s.table

    # 1. Abbreviations (two-word ones first), with the full stop they may carry
    if nxt is not None:
        pair = _TWO_WORD_ABBREVIATIONS.get(lang, {}).get((tok.core + tok.trail[:1], nxt.core + nxt.trail[:1]))
        if pair:
            rest = nxt.trail[1:]
            return [tok.lead + pair + _keep_stop(nxt.trail[:1], rest, tokens, i + 1), ""], 2
    abbreviation = _abbreviation(lang, tok, nxt)
    if abbreviation is not None:
        return [abbreviation], 1

    # 2. Money: "$4.20", "4,20 €", "4.20€", "5 EUR", "$5m", "$2 million"
    money = _money(s, tok, nxt)
    if money is not None:
        return money

    # 3. Decades before units ("1990s" is not 1990 seconds), then percent and units: "50%", "50 %", "3.5 kg", "20°C"
    m = _DECADE_RE.match(core)
    if m and lang == "en" and (len(m["n"]) == 4 or m["apos"] or tok.lead.endswith(("'", "’"))):
        n = int(m["n"])
        said = s.year(n) if len(m["n"]) == 4 else s.cardinal(n)
        return [tok.lead.rstrip("'’") + _plural_en(said) + tok.trail], 1
    measured = _measure(s, tok, nxt)
    if measured is not None:
        return measured

    # 4. Times: "10:30", "10:30am", "10 am", "10h30", "10:30 Uhr"
    timed = _time(s, tok, nxt, prev, tokens[i + 2] if i + 2 < len(tokens) else None)
    if timed is not None:
        return timed

    # 5. Dates: ISO, day beside a month name
    m = _ISO_DATE_RE.match(core)
    if m:
        return [_wrap(tok, _date(s, int(m["y"]), int(m["m"]), int(m["d"])))], 1
    dated = _day_and_month(s, tok, nxt, prev)
    if dated is not None:
        return dated

    # 6. Ordinals
    ordinal = _ordinal(s, tok, nxt, prev)
    if ordinal is not None:
        return [ordinal], 1

    # 7. Years and decades, ranges, then any number
    if re.fullmatch(r"1\d{3}|20\d{2}", core):
        return [_wrap(tok, s.year(int(core)))], 1
    m = _RANGE_RE.match(core)
    if m:
        a, b = (s.year(int(x)) if re.fullmatch(r"1\d{3}|20\d{2}", x) else s.number(x) for x in (m["a"], m["b"]))
        return [_wrap(tok, f"{a} {s.word('to')} {b}")], 1
    if lang == "fr" and re.fullmatch(r"\d{1,3}", core) and not tok.trail.strip():  # "1 000 000": groups of three
        group = 1
        while (i + group < len(tokens) and re.fullmatch(r"\d{3}", tokens[i + group].core)
               and not tokens[i + group].lead and not tokens[i + group - 1].trail.strip()):
            group += 1
        if group > 1:
            last = tokens[i + group - 1]
            number = int(core + "".join(t.core for t in tokens[i + 1:i + group]))
            return [tok.lead + s.cardinal(number) + last.trail] + [""] * (group - 1), group
    said = s.number(core)
    if said is not None:
        return [_wrap(tok, said)], 1
    return None


def _wrap(tok: _Token, said: str) -> str:
    return f"{tok.lead}{said}{tok.trail}"


def _keep_stop(stop: str, rest: str, tokens: list[_Token], i: int) -> str:
    """The trailing punctuation of an expanded abbreviation: its own full stop stays only where it ends a sentence
    (the last word, or the next word starts with a capital)."""
    if stop != ".":
        return stop + rest
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    ends = nxt is None or (nxt.lead + nxt.core)[:1].isupper()
    return ("." if ends and not rest else "") + rest


def _abbreviation(lang: str, tok: _Token, nxt: _Token | None) -> str | None:
    """A title or an abbreviation in `lang`'s tables (case as written), expanded; None if it is not one."""
    stop, rest = (".", tok.trail[1:]) if tok.trail.startswith(".") else ("", tok.trail)
    next_word = (nxt.lead + nxt.core) if nxt is not None else ""
    titles = _TITLES.get(lang, {})
    for written, tail in ((tok.core + stop, rest), (tok.core, tok.trail)):
        if written in titles and next_word[:1].isalnum():
            if written in ("No.", "Nos.") and not next_word[:1].isdigit():
                continue  # "No." before a number only ("The answer is No. Then ...")
            if not stop and written.endswith(("Dr", "Mr", "Mrs")) and not next_word[:1].isupper():
                continue  # "Dr" without a full stop only before a name
            return tok.lead + titles[written] + tail
    if lang == "en" and tok.core + stop == "St." and next_word:  # Saint before a name, else Street
        return tok.lead + ("Saint" if next_word[:1].isupper() else "Street") + rest
    table = _ABBREVIATIONS.get(lang, {})
    for written, trail in ((tok.core + stop, rest), (tok.core, tok.trail)):
        if written in table:
            said = table[written]
            if written.endswith(".") and stop:
                ends = nxt is None or next_word[:1].isupper()
                return tok.lead + said + ("." if ends and not trail else "") + trail
            return tok.lead + said + trail
    return None


def _money(s: _Speaker, tok: _Token, nxt: _Token | None) -> tuple[list[str], int] | None:
    lang = s.table
    number = s.number_re
    m = re.fullmatch(_CURRENCY_SYMBOL_RE + rf"(?P<num>{number})(?P<scale>k|m|mn|bn|b|tn)?", tok.core)
    if m:
        code = _CURRENCY_CODES[m["cur"]]
        if m["scale"] and lang in _SCALES:
            return [_wrap(tok, _scaled_money(s, code, m["num"], _SCALES[lang][m["scale"].lower()]))], 1
        if nxt is not None and lang == "en" and nxt.core.lower() in ("million", "billion", "trillion", "thousand"):
            return [tok.lead + _scaled_money(s, code, m["num"], nxt.core.lower()) + nxt.trail, ""], 2
        return [_wrap(tok, _amount(s, code, m["num"]))], 1
    m = re.fullmatch(rf"(?P<num>{number})" + _CURRENCY_SYMBOL_RE, tok.core)
    if m:
        return [_wrap(tok, _amount(s, _CURRENCY_CODES[m["cur"]], m["num"]))], 1
    if nxt is not None and re.fullmatch(number, tok.core) and nxt.core in _CURRENCY_CODES and not nxt.lead:
        said = _amount(s, _CURRENCY_CODES[nxt.core], tok.core)
        return [tok.lead + said + tok.trail + nxt.trail, ""], 2
    return None


def _amount(s: _Speaker, code: str, text: str) -> str:
    """An amount of money in words: "four dollars and twenty cents", "quatre euros vingt", "vier Euro zwanzig"."""
    major_one, major_many, minor_one, minor_many = _CURRENCIES[s.table][code]
    whole, frac = s.parse(text)
    cents = int((frac + "00")[:2]) if frac and minor_one else 0
    if frac and (len(frac) != 2 or not minor_one):  # "$1.5" is not cents: "one point five dollars"
        return f"{s.number(text)} {major_many}"
    major = f"{s.cardinal(whole)} {major_one if whole == 1 else major_many}"
    if not cents:
        return major
    minor = s.cardinal(cents)
    if whole == 0:
        return f"{minor} {minor_one if cents == 1 else minor_many}"
    if s.table == "en":
        return f"{major} {s.word('and')} {minor} {minor_one if cents == 1 else minor_many}"
    if s.table == "es":
        return f"{major} con {minor}"
    return f"{major} {minor}"  # fr, de: "quatre euros vingt", "vier Euro zwanzig"


def _scaled_money(s: _Speaker, code: str, text: str, scale: str) -> str:
    return f"{s.number(text)} {scale} {_CURRENCIES[s.table][code][1]}"


def _measure(s: _Speaker, tok: _Token, nxt: _Token | None) -> tuple[list[str], int] | None:
    units = _UNITS[s.table]
    number = s.number_re
    signed = rf"[-−]?{number}"
    m = re.fullmatch(rf"(?P<num>{signed})(?P<unit>%|{'|'.join(re.escape(u) for u in sorted(units, key=len, reverse=True))})",
                     tok.core)
    if m:
        return [_wrap(tok, f"{s.number(m['num'])} {_unit_words(s, m['unit'], m['num'])}")], 1
    if nxt is not None and re.fullmatch(signed, tok.core) and not tok.trail.strip() and not nxt.lead:
        unit = nxt.core + (nxt.trail[:1] if nxt.trail.startswith(".") and nxt.core + "." in units else "")
        if unit == "%" or unit in units:
            trail = nxt.trail[len(unit) - len(nxt.core):]
            return [_wrap(tok, s.number(tok.core)), _unit_words(s, unit, tok.core) + trail], 2
    return None


def _unit_words(s: _Speaker, unit: str, number: str) -> str:
    if unit == "%":
        return s.word("percent")
    one, many = _UNITS[s.table][unit]
    return one if s.is_one(number) else many


def _time(s: _Speaker, tok: _Token, nxt: _Token | None, prev: _Token | None,
          after: _Token | None) -> tuple[list[str], int] | None:
    ampm_next = nxt is not None and (nxt.core.lower() + nxt.trail[:1]).rstrip(",;!?") in (*_AM_PM, "a.m.", "p.m.")
    m = _TIME_RE.match(tok.core + (tok.trail[:1] if tok.trail.startswith(".") and tok.core.lower().endswith(("a.m", "p.m")) else ""))
    hour_only = None if m else _HOUR_RE.match(tok.core + (tok.trail[:1] if tok.core.lower().endswith(("a.m", "p.m")) else ""))
    if not m and not hour_only:
        if ampm_next and tok.core.isdigit() and 1 <= int(tok.core) <= 12 and s.table == "en":
            return _with_ampm(tok, nxt, after, s.cardinal(int(tok.core)))
        return None
    found = m or hour_only
    hour = int(found["h"])
    minute = int(m["m"]) if m else 0
    ampm = (found["ampm"] or "").lower()
    if hour_only and ampm == "h" and s.table != "fr":
        return None
    if m and (tok.core[len(found["h"])] in "hH") and s.table not in ("fr",):
        return None  # "10h30" is French style only
    lang = s.table
    if lang == "en":
        if hour in (0, 24) and minute == 0 and not ampm and not ampm_next:
            return [_wrap(tok, "midnight")], 1
        said = s.cardinal(hour if hour not in (0, 24) else 12)
        if minute == 0 and not ampm and not ampm_next:
            said += " o'clock"
        elif minute:
            said += " " + (f"oh {s.cardinal(minute)}" if minute < 10 else s.cardinal(minute))
        if ampm in _AM_PM or ampm.rstrip(".") + "." in ("a.m.", "p.m."):
            said += " " + _AM_PM.get(ampm, _AM_PM.get(ampm + ".", ""))
            trail = tok.trail[1:] if ampm.endswith(".") and tok.trail.startswith(".") else tok.trail
            return [tok.lead + said + trail], 1
        if ampm_next:
            return _with_ampm(tok, nxt, after, said)
        return [_wrap(tok, said)], 1
    if lang == "fr":
        said = "une heure" if hour == 1 else f"{s.cardinal(hour)} heures"
        if minute:
            said += f" {s.cardinal(minute)}"
        return [_wrap(tok, said)], 1
    if lang == "de":
        said = f"{'ein' if hour == 1 else s.cardinal(hour)} Uhr" + (f" {s.cardinal(minute)}" if minute else "")
        if nxt is not None and nxt.core == "Uhr" and not nxt.lead:
            return [tok.lead + said + tok.trail + nxt.trail, ""], 2
        return [_wrap(tok, said)], 1
    if lang == "es":
        article = prev is None or prev.core.lower() not in ("la", "las")  # "a las 10:30" has its article
        said = ("la una" if hour == 1 else f"las {s.cardinal(hour)}") if article else s.cardinal(hour)
        said = "una" if said == "uno" else said
        said += f" y {s.cardinal(minute)}" if minute else " en punto"
        return [_wrap(tok, said)], 1
    return None


def _with_ampm(tok: _Token, nxt: _Token, after: _Token | None, said: str) -> tuple[list[str], int]:
    """A time and the "am"/"p.m." word after it; the abbreviation's full stop stays only where it ends a sentence."""
    key = (nxt.core.lower() + nxt.trail[:1]).rstrip(",;!?")
    key = key if key in _AM_PM else nxt.core.lower()
    stop, trail = (".", nxt.trail[1:]) if key.endswith(".") else ("", nxt.trail)
    tokens = [nxt] + ([after] if after is not None else [])
    return [_wrap(tok, said), nxt.lead + _AM_PM.get(key, "") + _keep_stop(stop, trail, tokens, 0)], 2


def _month(lang: str, word: str) -> int | None:
    """1-12 if `word` is a month name in `lang` (English abbreviations too), else None."""
    bare = word.lower().rstrip(".")
    names = _MONTH_NAMES.get(lang, [])
    if bare in names:
        return names.index(bare) + 1
    if lang == "en" and bare in _EN_MONTH_ABBR:
        return _EN_MONTH_ABBR[bare]
    return None


def _date(s: _Speaker, year: int, month: int, day: int) -> str:
    lang = s.table
    name = _MONTH_NAMES[lang][month - 1]
    if lang == "en":
        return f"{name.capitalize()} {s.ordinal(day)}, {s.year(year)}"
    if lang == "fr":
        return f"{'premier' if day == 1 else s.cardinal(day)} {name} {s.year(year)}"
    if lang == "de":
        return f"{s.ordinal(day)}r {name.capitalize()} {s.year(year)}"
    return f"{s.cardinal(day)} de {name} de {s.year(year)}"


def _day_and_month(s: _Speaker, tok: _Token, nxt: _Token | None, prev: _Token | None) -> tuple[list[str], int] | None:
    """A day number beside a month name: "3 May" -> "the third of", "May 3" -> "third", "1 mai" -> "premier"."""
    lang = s.table
    core = tok.core
    m = _ORDINAL_RE["en"].match(core) if lang == "en" else None
    day = int(m["n"]) if m else (int(core) if core.isdigit() and len(core) <= 2 else None)
    if lang == "fr" and _ORDINAL_RE["fr"].match(core) and core.startswith("1") and len(core) in (2, 3):
        day = 1 if core in ("1er", "1re", "1ère") else day
    if day is None or not 1 <= day <= 31:
        return None
    before = nxt is not None and _month(lang, nxt.core) is not None and not tok.trail.strip()
    after = prev is not None and _month(lang, prev.core) is not None and not prev.trail.strip()
    if lang == "en" and (before or after):
        return [_wrap(tok, ("the " if before else "") + s.ordinal(day) + (" of" if before else ""))], 1
    if lang == "fr" and day == 1 and before:
        return [_wrap(tok, "premier")], 1
    return None


def _ordinal(s: _Speaker, tok: _Token, nxt: _Token | None, prev: _Token | None) -> str | None:
    lang = s.table
    pattern = _ORDINAL_RE.get(lang)
    m = pattern.match(tok.core) if pattern else None
    if m:
        n, suffix = int(m["n"]), m["suffix"]
        if lang == "fr" and n == 1:
            return _wrap(tok, "première" if suffix in ("re", "ère", "ʳᵉ") else "premier")
        said = s.ordinal(n)
        if lang == "es" and suffix == "ª":
            said = " ".join(w[:-1] + "a" if w.endswith("o") else w for w in said.split())
        elif lang == "es" and suffix == "er":
            said = said.removesuffix("primero").removesuffix("tercero") + ("primer" if said.endswith("primero") else
                                                                            "tercer" if said.endswith("tercero") else "")
        return _wrap(tok, said)
    if lang == "de" and tok.core.isdigit() and tok.trail.startswith(".") and nxt is not None:
        following = nxt.lead + nxt.core
        if following[:1].islower() or _month("de", nxt.core) or nxt.core.lower() in _DE_ORDINAL_NOUNS:
            said = s.ordinal(int(tok.core))
            if prev is not None and prev.core.lower() in _DE_ORDINAL_AFTER:
                said += "n"  # "am dritten Mai"
            elif _month("de", nxt.core):
                said += "r"  # "dritter Mai"
            return tok.lead + said + tok.trail[1:]
    return None


def _plural_en(said: str) -> str:
    """ "nineteen ninety" -> "nineteen nineties", "two thousand" -> "two thousands"."""
    head, _, last = said.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


# -- reading a whole text, and folding timings back -------------------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    """A narration as written and as said.

    Attributes:
        text: What the narrator is given (the spoken form; the written text where nothing needs reading out).
        written: The written words (`split_words` of the narration): what captions show.
        spans: For each written word, the (start, end) characters of its spoken form in `text`; start == end for a
            word whose reading the word before it says ("€" in "4,20 €").
    """

    text: str
    written: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]


def reading(text: str, language: str) -> Reading:
    """The spoken form of a narration (`spoken_words` of its words), joined as the original was: a space where the
    written words had one between them, none inside a run of Chinese or Japanese."""
    from .timing import split_words

    written = split_words(text)
    spoken = spoken_words(written, language)
    if spoken == written:
        return Reading(text, tuple(written), tuple(_locate(text, written)))
    located = _locate(text, written)
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for k, said in enumerate(spoken):
        if said and parts:
            gap = text[located[k - 1][1]:located[k][0]] if k else " "
            separator = " " if (gap or not located[k][0]) else ""
            parts.append(separator)
            position += len(separator)
        spans.append((position, position + len(said)))
        parts.append(said)
        position += len(said)
    return Reading("".join(parts), tuple(written), tuple(spans))


def _locate(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Where each word (whitespace-separated parts) lies in `text`, in order; (0, 0) for one it cannot find."""
    out: list[tuple[int, int]] = []
    cursor = 0
    for word in words:
        start = end = None
        for part in word.split():
            at = text.find(part, cursor)
            if at < 0:
                break
            start = at if start is None else start
            end = cursor = at + len(part)
        out.append((start, end) if start is not None and end is not None else (0, 0))
    return out


def fold_timings(said: Reading, timings: Sequence[WordTiming]) -> tuple[WordTiming, ...]:
    """Timings of the written words from the narrator's timings of the spoken words.

    `timings` are one per spoken word (``split_words(said.text)``, as a narrator or an aligner returns them). Each
    spoken word is found in ``said.text``; a written word spans the time of the spoken characters it owns (a
    spoken word shared by two written words is shared in proportion to the characters each owns). Written words
    said by the word before them share that word's time, in proportion to their written lengths.

    Returns:
        One `WordTiming` per written word, in order, with the written text; starts and ends never go back.
    """
    written = said.written
    if not written:
        return ()
    if not timings:
        return tuple(WordTiming(w, 0.0, 0.0) for w in written)
    if said.text == " ".join(written) and [t.word for t in timings] == list(written):
        return tuple(timings)
    # 1. Each timed spoken word's characters in the spoken text (found in order; unfound ones by proportion)
    ranges = _locate(said.text, [t.word for t in timings])
    if any(r == (0, 0) and k for k, r in enumerate(ranges)):
        total = max(len(said.text), 1)
        lengths = [max(len(t.word), 1) for t in timings]
        scale, at, ranges = total / sum(lengths), 0.0, []
        for n in lengths:
            ranges.append((int(round(at)), int(round(at + n * scale))))
            at += n * scale
    # 2. Each written word's start and end: the time at its first and last owned character
    def time_at(char: float, edge: str) -> float | None:
        for (a, b), t in zip(ranges, timings):
            if a <= char < b or (edge == "end" and a < char <= b):
                f = (char - a) / max(b - a, 1)
                return t.start_s + f * (t.end_s - t.start_s)
        return None

    rough: list[tuple[float, float] | None] = []
    for start, end in said.spans:
        if end <= start:
            rough.append(None)
            continue
        a = time_at(start, "start")
        b = time_at(end, "end")
        if a is None:  # in a gap between spoken words: the next word that starts after it
            a = next((t.start_s for (x, _), t in zip(ranges, timings) if x >= start), timings[-1].end_s)
        if b is None:
            b = next((t.end_s for (_, y), t in reversed(list(zip(ranges, timings))) if y <= end), a)
        rough.append((a, max(a, b)))
    # 3. Words said by the word before them share its time (by written length); then keep time moving forward
    out: list[WordTiming] = []
    k = 0
    while k < len(written):
        j = k + 1
        while j < len(written) and rough[j] is None:
            j += 1
        span = rough[k] if rough[k] is not None else (out[-1].end_s if out else 0.0,) * 2
        group = written[k:j]
        weights = [max(len(w), 1) for w in group]
        at = span[0]
        for word, weight in zip(group, weights):
            length = (span[1] - span[0]) * weight / sum(weights)
            out.append(WordTiming(word, at, at + length))
            at += length
        k = j
    cleaned: list[WordTiming] = []
    floor = 0.0
    for t in out:
        start = max(t.start_s, floor)
        end = max(t.end_s, start)
        cleaned.append(WordTiming(t.word, round(start, 4), round(end, 4)))
        floor = end
    return tuple(cleaned)
