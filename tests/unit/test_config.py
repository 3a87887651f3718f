from __future__ import annotations

from pathlib import Path

import pytest

from journeystream.config import Settings, mask_password, settings_table
from journeystream.errors import ConfigError
from journeystream.sinks.store import StoreTarget


def test_defaults_use_embedded_clickhouse_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"JOURNEYSTREAM_DATA_DIR": str(tmp_path)})
    assert settings.clickhouse_dsn == f"chdb://{tmp_path.resolve()}/clickhouse"
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert StoreTarget.from_settings(settings).embedded


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOURNEYSTREAM_PARTITIONS", "0"),
        ("JOURNEYSTREAM_HTTP_PORT", "70000"),
        ("JOURNEYSTREAM_STORE", "redis://"),
        ("JOURNEYSTREAM_SINK_BATCH_ROWS", "many"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_server_dsn_names_the_database_and_its_password_is_never_shown() -> None:
    env = {"JOURNEYSTREAM_CLICKHOUSE_DSN": "http://writer:s3cret@clickhouse:8123/analytics"}
    settings = Settings.from_env(env)
    assert StoreTarget.from_settings(settings).database == "analytics"
    shown = settings.describe()
    assert "s3cret" not in str(shown)
    assert shown["clickhouse_dsn"] == "http://writer:***@clickhouse:8123/analytics"


def test_database_name_must_be_an_identifier() -> None:
    settings = Settings.from_env({"JOURNEYSTREAM_CLICKHOUSE_DATABASE": "x; DROP TABLE y"})
    with pytest.raises(ConfigError):
        StoreTarget.from_settings(settings)


def test_mask_password_leaves_dsns_without_one() -> None:
    assert mask_password("chdb:///tmp/x") == "chdb:///tmp/x"


def test_readme_configuration_table_is_current() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table() in readme, "regenerate it with: journeystream config --markdown"
