"""The codec and parser properties at a count that keeps the suite fast (fuzz runs use more)."""

from __future__ import annotations

import pytest

from tests.fuzz.properties import (
    PROPERTIES,
    decode_arbitrary_bytes_never_raises,
    encode_decode_round_trip,
    golden_packets,
    keepalived_parser_only_raises_config_error,
    mutated_golden_vectors_never_raise,
)

SUITE_EXAMPLES = 200


def test_properties_every_one_is_listed_for_fuzzing() -> None:
    assert set(PROPERTIES) == {
        decode_arbitrary_bytes_never_raises,
        mutated_golden_vectors_never_raise,
        encode_decode_round_trip,
        keepalived_parser_only_raises_config_error,
    }


def test_codec_arbitrary_bytes_decode_to_advert_or_drop() -> None:
    decode_arbitrary_bytes_never_raises(SUITE_EXAMPLES)


@pytest.mark.skipif(not golden_packets(), reason="keepalived golden vectors not present")
def test_codec_mutated_golden_vectors_decode_to_advert_or_drop() -> None:
    mutated_golden_vectors_never_raise(SUITE_EXAMPLES)


def test_codec_encode_decode_round_trip_is_exact() -> None:
    encode_decode_round_trip(SUITE_EXAMPLES)


def test_keepalived_parser_arbitrary_text_only_raises_config_error() -> None:
    keepalived_parser_only_raises_config_error(SUITE_EXAMPLES)
