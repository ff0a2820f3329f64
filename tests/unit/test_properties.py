"""The parser properties at a count that keeps the suite fast (bench/fuzz.py runs 100,000)."""

from __future__ import annotations

import pytest

from tests.fuzz.inputs import (
    INPUT_PROPERTIES,
    broker_control_payloads_never_raise,
    broker_data_payloads_never_raise,
    modbus_replies_never_raise,
    modbus_write_replies_never_raise,
    rest_bodies_only_raise_validation_error,
    write_requests_only_raise_validation_error,
    yaml_config_only_raises_config_error,
)
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
    assert set(INPUT_PROPERTIES) == {
        broker_data_payloads_never_raise,
        broker_control_payloads_never_raise,
        rest_bodies_only_raise_validation_error,
        yaml_config_only_raises_config_error,
        modbus_replies_never_raise,
        write_requests_only_raise_validation_error,
        modbus_write_replies_never_raise,
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


def test_broker_data_payloads_parse_or_typed_drop() -> None:
    broker_data_payloads_never_raise(SUITE_EXAMPLES)


def test_broker_control_payloads_parse_or_typed_drop() -> None:
    broker_control_payloads_never_raise(SUITE_EXAMPLES)


def test_rest_and_peer_bodies_only_raise_validation_error() -> None:
    rest_bodies_only_raise_validation_error(SUITE_EXAMPLES)


def test_yaml_config_arbitrary_text_only_raises_config_error() -> None:
    yaml_config_only_raises_config_error(SUITE_EXAMPLES)


def test_modbus_arbitrary_replies_parse_and_decode_without_escaping() -> None:
    modbus_replies_never_raise(SUITE_EXAMPLES)


def test_write_requests_and_intents_only_raise_validation_error() -> None:
    write_requests_only_raise_validation_error(SUITE_EXAMPLES)


def test_modbus_write_replies_parse_and_judge_without_escaping() -> None:
    modbus_write_replies_never_raise(SUITE_EXAMPLES)
