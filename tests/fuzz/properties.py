"""Property tests for the VRRP codec and the keepalived.conf parser, at any example count.

The test suite runs each property at a modest count (tests/unit/test_properties.py); a fuzz
run imports the same functions and asks for 100,000 examples each:

    from tests.fuzz.properties import PROPERTIES
    for prop in PROPERTIES: prop(100_000)

Every property is a function of the example count, so the strategies and checks exist once.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.config.keepalived import parse_file
from tandem.errors import ConfigError
from tandem.vrrp import packet
from tandem.vrrp.types import Advert, Drop

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "keepalived-2.2.7"

Property = Callable[[int], None]

addresses = st.builds(IPv4Address, st.integers(min_value=0, max_value=2**32 - 1))


def _settings(examples: int) -> settings:
    # No deadline: a loaded 2-core machine must not turn slowness into a failure.
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def golden_packets() -> list[bytes]:
    """Every IPv4 packet keepalived 2.2.7 sent in the captures (empty when absent)."""
    if not VECTORS.is_dir():
        return []
    found = []
    for path in sorted(VECTORS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                found.append(bytes.fromhex(json.loads(line)["ip_packet_hex"]))
    return found


def _decode_whole(data: bytes) -> Advert | Drop:
    """What the receive path does with one raw packet: split the IP header, then decode."""
    split = packet.split_ip(data)
    if isinstance(split, Drop):
        return split
    header, payload = split
    return packet.decode(payload, header.src, header.dst)


def decode_arbitrary_bytes_never_raises(examples: int) -> None:
    """Any bytes, as a VRRP payload or as a whole IP packet: an Advert or a typed Drop."""

    @_settings(examples)
    @given(st.binary(max_size=1100), addresses, addresses)
    def check(data: bytes, src: IPv4Address, dst: IPv4Address) -> None:
        assert isinstance(packet.decode(data, src, dst), Advert | Drop)
        assert isinstance(_decode_whole(data), Advert | Drop)

    check()


def mutated_golden_vectors_never_raise(examples: int) -> None:
    """keepalived's real packets with bytes flipped, cut or appended: never an exception."""
    vectors = golden_packets()
    if not vectors:
        return

    @_settings(examples)
    @given(
        st.sampled_from(vectors),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
        st.integers(0, 80),
        st.binary(max_size=16),
    )
    def check(base: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
        data = bytearray(base)
        for offset, value in flips:
            if offset < len(data):
                data[offset] = value
        mutated = bytes(data[: max(0, len(data) - cut)]) + tail
        result = _decode_whole(mutated)
        assert isinstance(result, Advert | Drop)
        if mutated == base:
            assert isinstance(result, Advert)

    check()


adverts = st.one_of(
    st.builds(
        Advert,
        version=st.just(2),
        vrid=st.integers(0, 255),
        priority=st.integers(0, 255),
        interval=st.integers(0, 255).map(float),
        addresses=st.lists(addresses, max_size=20).map(tuple),
        auth_type=st.integers(0, 255),
        auth_data=st.binary(min_size=8, max_size=8),
    ),
    st.builds(
        Advert,
        version=st.just(3),
        vrid=st.integers(0, 255),
        priority=st.integers(0, 255),
        interval=st.integers(0, 4095).map(lambda cs: cs / 100),
        addresses=st.lists(addresses, max_size=20).map(tuple),
    ),
)


def encode_decode_round_trip(examples: int) -> None:
    """Every advert we can build decodes to itself, with the checksum that was computed."""

    @_settings(examples)
    @given(adverts, addresses, addresses)
    def check(advert: Advert, src: IPv4Address, dst: IPv4Address) -> None:
        wire = packet.encode(advert, src, dst)
        decoded = packet.decode(wire, src, dst)
        assert isinstance(decoded, Advert), decoded
        assert decoded == Advert(**{**_fields(advert), "checksum": decoded.checksum})
        assert packet.encode(decoded, src, dst) == wire  # a decoded advert re-encodes exactly
        whole = packet.encode_ip(advert, src, dst, ident=1)
        assert _decode_whole(whole) == decoded

    check()


def _fields(advert: Advert) -> dict[str, object]:
    return {name: getattr(advert, name) for name in Advert.__slots__}


# Words a keepalived.conf is made of, so generated text reaches deep into the checker
# instead of failing at the first unknown keyword.
_WORDS = [
    "global_defs", "vrrp_instance", "vrrp_script", "vrrp_sync_group", "include", "VI_1",
    "chk", "state", "MASTER", "BACKUP", "interface", "eth0", "virtual_router_id", "priority",
    "advert_int", "version", "nopreempt", "preempt_delay", "authentication", "auth_type",
    "PASS", "AH", "auth_pass", "virtual_ipaddress", "unicast_src_ip", "unicast_peer",
    "track_script", "track_interface", "weight", "reverse", "notify_master", "notify",
    "script", "interval", "timeout", "rise", "fall", "user", "script_user", "dev", "label",
    "brd", "scope", "no_track", "garp_master_delay", "garp_master_repeat",
    "check_unicast_src", "vrrp_check_unicast_src", "dont_track_primary",
    "enable_script_security", "vrrp_notify_fifo", "vrrp_garp_interval", "vrrp_version",
    "10.0.0.1", "10.0.0.1/24", "300", "0", "-5", "1.5", "0.01", "{", "}", '"', "!", "#",
    "+", "-", "/nonexistent/*.conf", "\u00e9", "\x00",
]  # fmt: skip
config_text = st.one_of(
    st.text(max_size=400),
    st.lists(
        st.one_of(st.sampled_from(_WORDS), st.sampled_from([" ", "\n", "\t", "  "])),
        max_size=120,
    ).map(" ".join),
)


def keepalived_parser_only_raises_config_error(examples: int) -> None:
    """Any text as keepalived.conf: a config, or ConfigError naming the problems."""
    with tempfile.TemporaryDirectory(prefix="tandem-fuzz-") as name:
        path = Path(name) / "keepalived.conf"

        @_settings(examples)
        @given(config_text)
        def check(text: str) -> None:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            try:
                parse_file(path)
            except ConfigError as exc:
                assert exc.problems, "a ConfigError must name at least one problem"
                assert all(p.file for p in exc.problems)

        check()


PROPERTIES: tuple[Property, ...] = (
    decode_arbitrary_bytes_never_raises,
    mutated_golden_vectors_never_raise,
    encode_decode_round_trip,
    keepalived_parser_only_raises_config_error,
)
