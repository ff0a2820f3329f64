"""Read planning: tags coalesce into the fewest requests the Modbus limits and gap rule allow."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tandem.config.hub import TagConfig
from tandem.hub.codec import (
    MAX_BIT_GAP,
    MAX_REGISTER_GAP,
    ReadBlock,
    plan_reads,
)


def tag(name: str, address: int, **fields: Any) -> TagConfig:
    return TagConfig(name=name, address=address, **fields)


def spans(blocks: list[ReadBlock]) -> list[tuple[str, int, int]]:
    return [(b.area, b.start, b.count) for b in blocks]


def test_plan_reads_no_tags_gives_no_blocks() -> None:
    assert plan_reads([]) == []


def test_plan_reads_adjacent_registers_merge_into_one_block() -> None:
    blocks = plan_reads([tag(f"t{i}", i) for i in range(10)])
    assert spans(blocks) == [("holding", 0, 10)]
    assert [t.name for t in blocks[0].tags] == [f"t{i}" for i in range(10)]


def test_plan_reads_unsorted_input_is_sorted_by_address() -> None:
    blocks = plan_reads([tag("c", 5), tag("a", 0), tag("b", 2)])
    assert spans(blocks) == [("holding", 0, 6)]
    assert [t.name for t in blocks[0].tags] == ["a", "b", "c"]


def test_plan_reads_small_gap_is_read_through() -> None:
    blocks = plan_reads([tag("a", 0), tag("b", 1 + MAX_REGISTER_GAP)])
    assert spans(blocks) == [("holding", 0, MAX_REGISTER_GAP + 2)]


def test_plan_reads_gap_beyond_limit_splits() -> None:
    blocks = plan_reads([tag("a", 0), tag("b", 2 + MAX_REGISTER_GAP)])
    assert spans(blocks) == [("holding", 0, 1), ("holding", 2 + MAX_REGISTER_GAP, 1)]


def test_plan_reads_explicit_zero_gap_splits_on_any_hole() -> None:
    blocks = plan_reads([tag("a", 0), tag("b", 2), tag("c", 3)], max_gap=0)
    assert spans(blocks) == [("holding", 0, 1), ("holding", 2, 2)]


def test_plan_reads_respects_125_register_limit() -> None:
    blocks = plan_reads([tag(f"t{i}", i) for i in range(300)])
    assert spans(blocks) == [("holding", 0, 125), ("holding", 125, 125), ("holding", 250, 50)]


def test_plan_reads_wide_tag_not_split_across_blocks() -> None:
    tags = [tag(f"t{i}", i) for i in range(124)] + [tag("f", 124, type="float32")]
    blocks = plan_reads(tags)
    assert spans(blocks) == [("holding", 0, 124), ("holding", 124, 2)]
    assert blocks[1].tags[0].name == "f"


def test_plan_reads_string_counts_its_length() -> None:
    blocks = plan_reads([tag("s", 10, type="string", length=8), tag("n", 18)])
    assert spans(blocks) == [("holding", 10, 9)]


def test_plan_reads_bits_in_one_register_share_it() -> None:
    blocks = plan_reads([tag(f"b{i}", 4, type="bit", bit=i) for i in range(16)])
    assert spans(blocks) == [("holding", 4, 1)]
    assert len(blocks[0].tags) == 16


def test_plan_reads_areas_never_mix() -> None:
    tags = [
        tag("h", 0),
        tag("i", 0, area="input"),
        tag("c", 0, area="coil", type="bool"),
        tag("d", 0, area="discrete", type="bool"),
    ]
    assert spans(plan_reads(tags)) == [
        ("holding", 0, 1),
        ("input", 0, 1),
        ("coil", 0, 1),
        ("discrete", 0, 1),
    ]


def test_plan_reads_coils_use_2000_bit_limit_and_bit_gap() -> None:
    coils = [tag(f"c{i}", i, area="coil", type="bool") for i in range(2500)]
    assert spans(plan_reads(coils)) == [("coil", 0, 2000), ("coil", 2000, 500)]
    far = [
        tag("a", 0, area="coil", type="bool"),
        tag("b", MAX_BIT_GAP + 2, area="coil", type="bool"),
    ]
    assert len(plan_reads(far)) == 2


def test_plan_reads_custom_register_limit_is_honoured() -> None:
    blocks = plan_reads([tag(f"t{i}", i) for i in range(10)], max_registers=4)
    assert spans(blocks) == [("holding", 0, 4), ("holding", 4, 4), ("holding", 8, 2)]


def test_plan_reads_tag_wider_than_limit_raises() -> None:
    with pytest.raises(ValueError, match="wider"):
        plan_reads([tag("s", 0, type="string", length=10)], max_registers=8)


@pytest.mark.parametrize("seed", range(20))
def test_plan_reads_random_layout_covers_every_tag_within_limits(seed: int) -> None:
    rng = random.Random(seed)
    kinds = [("uint16", {}), ("float32", {}), ("float64", {}), ("string", {"length": 3})]
    tags, address = [], 0
    for i in range(rng.randint(1, 400)):
        address += rng.choice([0, 0, 1, 2, 5, 20, 200])
        kind, extra = rng.choice(kinds)
        t = tag(f"t{i}", address, type=kind, **extra)
        tags.append(t)
        address += t.width
    blocks = plan_reads(tags)
    assert sorted(t.name for b in blocks for t in b.tags) == sorted(t.name for t in tags)
    for b in blocks:
        assert 1 <= b.count <= 125
        for t in b.tags:
            assert b.start <= t.address and t.address + t.width <= b.end
    for earlier, later in zip(blocks, blocks[1:], strict=False):
        # A split happens only where merging would break the limit or the gap rule.
        too_far = later.start - earlier.end > MAX_REGISTER_GAP
        too_big = later.tags[0].address + later.tags[0].width - earlier.start > 125
        assert too_far or too_big
