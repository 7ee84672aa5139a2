import pytest

from v2pe_common.lengths import format_length, parse_length


@pytest.mark.parametrize(
    "text,tokens",
    [("32k", 32768), ("64K", 65536), ("1m", 1048576), ("1M", 1048576), ("131072", 131072), (4096, 4096), ("0.5k", 512)],
)
def test_lengths_parse_with_binary_units(text, tokens):
    assert parse_length(text) == tokens


@pytest.mark.parametrize("bad", ["", "k", "64q", "-1k", "0", 0, -5, "1.3", True])
def test_malformed_lengths_are_rejected_with_the_literal_named(bad):
    with pytest.raises(ValueError, match="length"):
        parse_length(bad)


def test_format_length_inverts_parse_for_round_lengths():
    for text in ["32k", "64k", "256k", "1m", "1000"]:
        assert format_length(parse_length(text)) == text
