"""scripts/init_env.py (`make run`): a new .env has a METRICS_TOKEN; an existing one keeps
every value and gets a METRICS_TOKEN only when it has none."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(env_path: Path):
    spec = importlib.util.spec_from_file_location("init_env", ROOT / "scripts" / "init_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ENV_PATH = env_path
    return module


def _values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line and not line.startswith("#"))


def test_a_new_env_has_a_metrics_token(tmp_path):
    env = tmp_path / ".env"
    assert _script(env).main() == 0
    values = _values(env)
    assert set(values) == {"SECRET_KEY", "VAULT_KEYS", "VAULT_ACTIVE_KEY", "FINGERPRINT_KEY",
                           "METRICS_TOKEN"}
    assert len(values["METRICS_TOKEN"]) >= 40
    assert env.stat().st_mode & 0o777 == 0o600


def test_an_existing_env_only_gains_a_metrics_token(tmp_path, capsys):
    env = tmp_path / ".env"
    env.write_text("SECRET_KEY=keep\nVAULT_KEYS=k1=abc")  # no final newline
    script = _script(env)
    assert script.main() == 0
    assert "added a METRICS_TOKEN" in capsys.readouterr().out
    values = _values(env)
    assert values["SECRET_KEY"] == "keep" and values["VAULT_KEYS"] == "k1=abc"
    token = values["METRICS_TOKEN"]
    assert script.main() == 0  # again: unchanged
    assert "leaving it unchanged" in capsys.readouterr().out
    assert _values(env)["METRICS_TOKEN"] == token
