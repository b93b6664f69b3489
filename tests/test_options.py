"""`DecodingOptions`: overrides by name, checks, and the passes a segment is decoded in (no model)."""

import pytest

from mlxbatchwhisper.options import DEFAULT_TEMPERATURES, DecodingOptions


def test_overrides_replace_fields_of_the_given_options_or_the_defaults():
    base = DecodingOptions(beam_size=5, temperature=0.0)
    both = DecodingOptions.of(base, length_penalty=0.5)
    assert (both.beam_size, both.temperature, both.length_penalty) == (5, (0.0,), 0.5)
    assert DecodingOptions.of(beam_size=2).temperature == DEFAULT_TEMPERATURES
    assert DecodingOptions.of(None) == DecodingOptions()
    with pytest.raises(TypeError, match="unknown decoding option.*beam_width"):
        DecodingOptions.of(beam_width=5)
    with pytest.raises(TypeError, match="options must be DecodingOptions or None, not int"):
        DecodingOptions.of(16)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"temperature": ()}, "non-empty sequence"),
        ({"temperature": "0.5"}, "one number ≥ 0 or a non-empty sequence"),
        ({"temperature": (0.0, -1.0)}, "temperature must be ≥ 0"),
        ({"patience": 2.0}, "patience requires beam_size"),
        ({"suppress_tokens": "a,b"}, "suppress_tokens must be comma-separated"),
        ({"best_of": 0}, "best_of must be at least 1"),
        ({"task": "summarize"}, "task must be one of"),
    ],
)
def test_bad_values_are_refused_when_made(options, match):
    with pytest.raises(ValueError, match=match):
        DecodingOptions(**options)


def test_a_segment_is_decoded_greedily_or_in_beams_first_then_sampled():
    greedy = DecodingOptions(temperature=(0.0, 0.4), best_of=3).passes()
    assert [(p.temperature, p.beam_size, p.samples, p.rows) for p in greedy] == [(0.0, None, 1, 1), (0.4, None, 3, 3)]
    beams = DecodingOptions(temperature=(0.0, 0.4), beam_size=4, best_of=5).passes()
    # samples fill whole groups of four rows (the beams' group): 5 samples take 8 rows
    assert [(p.beam_size, p.samples, p.rows, p.group) for p in beams] == [(4, 1, 4, 4), (None, 5, 8, 4)]
    assert [p.index for p in beams] == [0, 1]
    assert DecodingOptions(temperature=0.3).passes()[0].rows == 5  # best_of defaults to 5
