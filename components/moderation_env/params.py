"""The ``benchmark_env`` section of params.yaml: what the benchmark-env pipeline step plays.

Imports no OpenEnv (params are validated by every command; OpenEnv takes seconds to import)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.moderation_env.vocab import TASK_NAMES


class BenchmarkEnvParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(42, ge=0, description="episode seed: the same seed serves the same items")
    tasks: list[str] = Field(default_factory=lambda: list(TASK_NAMES), min_length=1)
    model: Optional[str] = Field(None, description="exported model folder; default <paths.model>/release")
    variant: Optional[Literal["fp32", "fp16", "int8"]] = Field(None, description="default: the folder's served variant")
    baselines: list[Literal["random", "approve-all"]] = Field(default_factory=lambda: ["random", "approve-all"],
                                                              description="played beside the classifier for scale")

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"unknown task {unknown}; tasks: {', '.join(TASK_NAMES)}")
        return v
