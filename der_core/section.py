"""The base of every validated configuration section (the simulator's, a site file's, a
tariff's): strict types, frozen, unknown fields refused, so a typo never silently falls back to
a default and a value means what it says."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False)
