import pytest

from mlxbatchwhisper.tokenizer import LANGUAGES, get_tokenizer, language_code
from reference import manifest

openai_tokenizer = pytest.importorskip("whisper.tokenizer")

CASES = [(False, 99), (True, 99), (True, 100)]  # English-only, multilingual, large-v3's vocabulary


def pair(multilingual, num_languages):
    ours = get_tokenizer(multilingual, num_languages)
    ref = openai_tokenizer.get_tokenizer(multilingual, num_languages=num_languages)
    return ours, ref


def test_language_table_matches_openai():
    assert LANGUAGES == openai_tokenizer.LANGUAGES


@pytest.mark.parametrize("multilingual, num_languages", CASES)
def test_every_special_token_matches(multilingual, num_languages):
    ours, ref = pair(multilingual, num_languages)
    assert ours.special_tokens == ref.special_tokens
    for name in (
        "eot",
        "sot",
        "transcribe",
        "translate",
        "sot_lm",
        "sot_prev",
        "no_speech",
        "no_timestamps",
        "timestamp_begin",
    ):
        assert getattr(ours, name) == getattr(ref, name), name
    if multilingual:
        # openai lists them in set order; ours are in token order
        assert ours.language_tokens == tuple(sorted(ref.all_language_tokens))
        assert dict(zip(ours.language_tokens, ours.language_codes)) == dict(
            zip(ref.all_language_tokens, ref.all_language_codes)
        )
    assert ours.encoding.n_vocab == ref.encoding.n_vocab


@pytest.mark.parametrize("multilingual, num_languages", CASES)
def test_non_speech_suppression_list_matches(multilingual, num_languages):
    ours, ref = pair(multilingual, num_languages)
    assert list(ours.non_speech_tokens) == list(ref.non_speech_tokens)


@pytest.mark.parametrize("multilingual", [False, True])
def test_corpus_texts_encode_identically_in_all_languages(multilingual):
    ours, ref = pair(multilingual, 99)
    texts = [f["text"] for f in manifest().values()]
    assert {f["language"] for f in manifest().values()} >= {"en", "fr", "de", "es", "it"}
    for text in texts + ["", " ♪ [Music] (laughs) 「こんにちは」 <|endoftext|> 12:30 -- ok"]:
        ids = ours.encode(text)
        assert ids == ref.encode(text, disallowed_special=())
        assert ours.decode(ids) == text


def test_sot_sequences_and_timestamps():
    ours, ref = pair(True, 99)
    ref_fr = openai_tokenizer.get_tokenizer(True, num_languages=99, language="fr", task="translate")
    assert ours.sot_sequence("fr", "translate") == ref_fr.sot_sequence
    assert ours.sot_sequence("French", "translate") == ref_fr.sot_sequence
    en, en_ref = pair(False, 99)
    assert en.sot_sequence() == en_ref.sot_sequence == (en.sot,)
    ids = [ours.sot, ours.timestamp_begin + 150] + ours.encode(" hi") + [ours.timestamp_begin + 1500]
    assert ours.decode(ids) == ref.decode(ids)
    assert (
        ours.decode_with_timestamps(ids)
        == ref.decode_with_timestamps(ids)
        == "<|startoftranscript|><|3.00|> hi<|30.00|>"
    )


def test_language_errors():
    assert language_code("English") == "en" and language_code("mandarin") == "zh"
    with pytest.raises(ValueError, match="unsupported language"):
        language_code("klingon")
    with pytest.raises(ValueError, match="not in this model"):
        get_tokenizer(True, 99).language_token("yue")
    with pytest.raises(ValueError, match="task"):
        get_tokenizer(True, 99).sot_sequence("en", "summarize")
