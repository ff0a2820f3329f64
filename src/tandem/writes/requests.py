"""Read and write requests as they arrive (Neuron's MQTT shapes, the REST body), strictly parsed."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

# Bounded so a hostile request cannot make us hold or log much: a uuid is an opaque id.
Uuid = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
# Strict: "12" is not 12 and 1 is not true; the tag decides what it takes.
WriteValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=1024)]
MAX_TAGS_PER_REQUEST = 1000
_UUID: TypeAdapter[str] = TypeAdapter(Uuid)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagWrite(_Strict):
    tag: Name
    value: WriteValue


class WriteBody(_Strict):
    """``{"uuid","node","group","tag","value"}`` or ``{"uuid","node","group","tags":[...]}``."""

    uuid: Uuid
    node: Name
    group: Name
    tag: Name | None = None
    value: WriteValue | None = None
    tags: Annotated[list[TagWrite], Field(min_length=1, max_length=MAX_TAGS_PER_REQUEST)] | None = (
        None
    )

    @model_validator(mode="after")
    def _one_shape(self) -> WriteBody:
        single = self.tag is not None
        if single == (self.tags is not None):
            raise ValueError("give tag and value, or tags, not both or neither")
        if single and self.value is None:
            raise ValueError("value is missing")
        if not single and self.value is not None:
            raise ValueError("value belongs in tags")
        return self

    def items(self) -> list[TagWrite]:
        if self.tags is not None:
            return list(self.tags)
        assert self.tag is not None and self.value is not None
        return [TagWrite(tag=self.tag, value=self.value)]


class ReadBody(_Strict):
    uuid: Uuid
    node: Name
    group: Name


def readable_uuid(payload: bytes) -> str | None:
    """The uuid of a request that did not parse, if one can be read safely; else None."""
    try:
        raw: Any = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return _UUID.validate_python(raw.get("uuid"))
    except ValidationError:
        return None
