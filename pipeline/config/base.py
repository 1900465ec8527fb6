"""What every config section shares: strict models (an unknown key is an error) and folder-safe names."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # selection/export/correlation names are folder names


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
