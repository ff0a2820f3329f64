"""Config parsing in a worker process: the same config, the same problems, as in the hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tandem.config import offload
from tandem.config.hub import load_config_text
from tandem.config.offload import (
    LARGE_TEXT,
    parse_config_file,
    parse_config_text,
    run_in_worker,
)
from tandem.errors import ConfigError
from tests.unit.test_configsync import node_doc


def large_config(tmp_path: Path, tags: int = 3000) -> str:
    doc = node_doc(tmp_path, tags=tags)
    text = yaml.safe_dump(doc, sort_keys=False)
    assert len(text) >= LARGE_TEXT  # the worker path, not the thread
    return text


async def test_parse_config_text_large_in_worker_equals_parse_in_process(tmp_path: Path) -> None:
    text = large_config(tmp_path)
    assert await parse_config_text(text, "node.yaml") == load_config_text(text, "node.yaml")


async def test_parse_config_text_large_invalid_problems_keep_file_line_and_field(
    tmp_path: Path,
) -> None:
    text = large_config(tmp_path).replace("address: 2999", "address: -1")
    with pytest.raises(ConfigError) as caught:
        await parse_config_text(text, "node.yaml")
    [problem] = caught.value.problems
    assert problem.file == "node.yaml" and problem.line is not None
    assert problem.field == "devices[0].groups[0].tags[2999].address"
    assert text.splitlines()[problem.line - 1].strip() == "address: -1"


async def test_parse_config_file_missing_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        await parse_config_file(tmp_path / "absent.yaml")


async def test_run_in_worker_failed_child_is_an_oserror_with_its_exit_and_stderr() -> None:
    with pytest.raises(OSError, match=r"exit 1: .*No module named"):
        await run_in_worker("tandem.no_such_worker", ("x",))


async def test_parse_config_text_parses_in_the_hub_when_no_worker_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_worker(module: str, request: object) -> object:
        raise OSError("out of processes")

    monkeypatch.setattr(offload, "run_in_worker", no_worker)
    text = large_config(tmp_path, tags=3000)
    assert await parse_config_text(text, "node.yaml") == load_config_text(text, "node.yaml")
