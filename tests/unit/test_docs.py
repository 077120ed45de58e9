"""The README's settings table and docs/schemas.json must follow the code."""

import json
from pathlib import Path

from devstack.settings import StackSettings
from trainer.settings import TrainerSettings
from worker.schemas import json_schemas
from worker.settings import NESTED_SETTINGS, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text()
    for name, field in WorkerSettings.model_fields.items():
        if name in NESTED_SETTINGS:  # one variable per inner field: DRIFT_WINDOW_S, ...
            for inner in field.annotation.model_fields:
                assert f"`{name.upper()}_{inner.upper()}`" in readme, f"{name}.{inner}"
        else:
            assert f"`{name.upper()}`" in readme, name
    for name in StackSettings.model_fields:
        assert f"`{name.upper()}`" in readme, name
    for name in TrainerSettings.model_fields:
        assert f"`TRAINER_{name.upper()}`" in readme, name


def test_schema_file_is_current():
    assert json.loads((ROOT / "docs" / "schemas.json").read_text()) == json_schemas()
