"""Whisper's tokenizer on tiktoken, offline: BPE vocabularies ship in `assets/`."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import tiktoken

ASSETS = Path(__file__).resolve().parent / "assets"

# Language codes in Whisper's token order, with their English names.
LANGUAGES = dict(
    item.split(":")
    for item in (
        "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
        "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
        "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay "
        "cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai ur:urdu "
        "hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh sk:slovak "
        "te:telugu fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian "
        "kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic hy:armenian "
        "ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician "
        "mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans "
        "oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic "
        "yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk "
        "mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy "
        "as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese "
        "yue:cantonese"
    ).split()
)
LANGUAGES = {code: name.replace("_", " ") for code, name in LANGUAGES.items()}
_NAME_ALIASES = {
    "burmese": "my",
    "valencian": "ca",
    "flemish": "nl",
    "haitian": "ht",
    "letzeburgesch": "lb",
    "pushto": "ps",
    "panjabi": "pa",
    "moldavian": "ro",
    "moldovan": "ro",
    "sinhalese": "si",
    "castilian": "es",
    "mandarin": "zh",
}
TO_LANGUAGE_CODE = {**{name: code for code, name in LANGUAGES.items()}, **_NAME_ALIASES}

# Symbols whose tokens the non-speech suppression list holds (OpenAI's list of annotations).
_NON_SPEECH_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
_MUSIC_SYMBOLS = list("♩♪♫♬♭♮♯")


def language_code(language: str) -> str:
    """Normalize a language code or English name ('English', 'en') to Whisper's code."""
    key = language.lower().strip()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ValueError(f"unsupported language {language!r}; use a code such as 'en' or a name such as 'english'")


@cache
def get_encoding(name: str, num_languages: int) -> tiktoken.Encoding:
    """The tiktoken encoding `name` ('gpt2' or 'multilingual') with Whisper's special tokens."""
    path = ASSETS / f"{name}.tiktoken"
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in path.read_text().splitlines() if line)
    }
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{code}|>" for code in list(LANGUAGES)[:num_languages]],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *[f"<|{i * 0.02:.2f}|>" for i in range(1501)],
    ]
    return tiktoken.Encoding(
        name=f"whisper-{name}-{num_languages}",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + i for i, token in enumerate(specials)},
    )


@dataclass(frozen=True)
class Tokenizer:
    """Whisper's vocabulary and special tokens; `language`/`task` set the default start sequence."""

    encoding: tiktoken.Encoding
    num_languages: int
    multilingual: bool
    special_tokens: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        specials = {t: self.encoding.encode_single_token(t) for t in self.encoding.special_tokens_set}
        object.__setattr__(self, "special_tokens", specials)

    def encode(self, text: str) -> list[int]:
        """Text tokens (special tokens are not recognized in `text`)."""
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, tokens: list[int]) -> str:
        """Text of the tokens, timestamp tokens dropped."""
        return self.encoding.decode([t for t in tokens if t < self.timestamp_begin])

    def decode_with_timestamps(self, tokens: list[int]) -> str:
        """Text with timestamp tokens written as <|1.08|>."""
        return self.encoding.decode(tokens)

    @property
    def eot(self) -> int:
        return self.encoding.eot_token

    @property
    def sot(self) -> int:
        return self.special_tokens["<|startoftranscript|>"]

    @property
    def transcribe(self) -> int:
        return self.special_tokens["<|transcribe|>"]

    @property
    def translate(self) -> int:
        return self.special_tokens["<|translate|>"]

    @property
    def sot_lm(self) -> int:
        return self.special_tokens["<|startoflm|>"]

    @property
    def sot_prev(self) -> int:
        return self.special_tokens["<|startofprev|>"]

    @property
    def no_speech(self) -> int:
        return self.special_tokens["<|nospeech|>"]

    @property
    def no_timestamps(self) -> int:
        return self.special_tokens["<|notimestamps|>"]

    @property
    def timestamp_begin(self) -> int:
        return self.special_tokens["<|0.00|>"]

    @cached_property
    def language_codes(self) -> tuple[str, ...]:
        return tuple(LANGUAGES)[: self.num_languages] if self.multilingual else ()

    @cached_property
    def language_tokens(self) -> tuple[int, ...]:
        return tuple(self.special_tokens[f"<|{code}|>"] for code in self.language_codes)

    def language_token(self, language: str) -> int:
        """The <|xx|> token of a language code or name; ValueError if the vocabulary lacks it."""
        code = language_code(language)
        if code not in self.language_codes:
            raise ValueError(f"language {code!r} is not in this model's vocabulary")
        return self.special_tokens[f"<|{code}|>"]

    def sot_sequence(self, language: str | None = None, task: str = "transcribe") -> tuple[int, ...]:
        """<|startoftranscript|> [<|lang|> <|task|>] — the language and task only for multilingual models."""
        if not self.multilingual:
            return (self.sot,)
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
        seq = [self.sot]
        if language is not None:
            seq.append(self.language_token(language))
        seq.append(self.transcribe if task == "transcribe" else self.translate)
        return tuple(seq)

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of speaker tags and annotations ('[', '(', '♪' …) that the decoder suppresses.

        A symbol's token counts when the symbol (alone or after a space) is one token; the
        music symbols count by their first token. ' -' and " '" always count.
        """
        tokens = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in _NON_SPEECH_SYMBOLS + _MUSIC_SYMBOLS:
            for ids in (self.encode(symbol), self.encode(" " + symbol)):
                if len(ids) == 1 or symbol in _MUSIC_SYMBOLS:
                    tokens.add(ids[0])
        return tuple(sorted(tokens))

    @cached_property
    def numeral_symbol_tokens(self) -> tuple[int, ...]:
        """Text tokens that write a digit, '%', '$' or '£' (whisperX's suppress_numerals suppresses them)."""
        return tuple(t for t in range(self.eot) if any(c in "0123456789%$£" for c in self.encoding.decode([t])))


@cache
def get_tokenizer(multilingual: bool, num_languages: int = 99) -> Tokenizer:
    """The tokenizer for an English-only (gpt2) or multilingual model."""
    name = "multilingual" if multilingual else "gpt2"
    return Tokenizer(get_encoding(name, num_languages), num_languages, multilingual)
