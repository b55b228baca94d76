"""README.md's Configuration tables list every environment variable Doorward reads, with its
real default: the docs cannot drift from the settings classes, `doorward up` or the code."""

from __future__ import annotations

import importlib
import pkgutil
import re
from enum import Enum
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

import services
from deploy.supervisor import UpConfig, env_names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Packages whose code may read the environment (tests and benchmarks are not Doorward processes).
CODE = ("doorward_kit", "services", "gateway", "deploy")
# A variable name in a string literal: os.environ.get("X"), env["X"], env.pop("X"), ...
LITERAL = re.compile(r"""["']((?:DOORWARD|OTEL)_[A-Z0-9_]*[A-Z0-9])["']""")


def settings_classes() -> list[type[BaseSettings]]:
    modules = ["doorward_kit.settings", "gateway.settings"] + [
        f"services.{m.name}.settings" for m in pkgutil.iter_modules(services.__path__)
    ]
    found: dict[str, type[BaseSettings]] = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a service without settings of its own
            raise
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__ == name
            ):
                found[f"{name}.{value.__name__}"] = value
    return list(found.values())


def settings_variables() -> dict[str, object]:
    """Every variable of every settings class -> its default (None when it has none)."""
    names: dict[str, object] = {}
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for field, info in cls.model_fields.items():
            alias = info.validation_alias if isinstance(info.validation_alias, str) else None
            name = (alias or f"{prefix}{field}").upper()
            default = None if info.default_factory is not None else info.default
            names.setdefault(name, default)
    return names


def code_variables() -> set[str]:
    found: set[str] = set()
    for package in CODE:
        for path in (ROOT / package).rglob("*.py"):
            found.update(LITERAL.findall(path.read_text(encoding="utf-8")))
    return found


def config_rows() -> dict[str, list[list[str]]]:
    """README's Configuration section: variable -> the cells of each table row naming it
    (a variable two programs read, e.g. DOORWARD_VAULT_ADDR, has a row in each table)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Configuration\n")
    end = text.index("\n## ", start + 1)
    rows: dict[str, list[list[str]]] = {}
    for line in text[start:end].splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`((?:DOORWARD|OTEL)_[A-Z0-9_]+)`", cells[0]):
            rows.setdefault(name, []).append(cells)
    return rows


def rendered(default: object) -> str | None:
    """A default as the README writes it, or None when it is not a plain value."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, int | str | Path):
        return str(default)
    return None


def test_every_settings_class_is_found() -> None:
    names = {cls.__name__ for cls in settings_classes()}
    assert {
        "StackSettings",
        "GatewaySettings",
        "IdentitySettings",
        "WorkOrdersSettings",
        "SecretsSettings",
        "AuditSettings",
    } <= names


def test_every_variable_has_a_row_in_readme() -> None:
    rows = config_rows()
    wanted = set(settings_variables()) | set(env_names()) | code_variables()
    missing = sorted(wanted - set(rows))
    assert not missing, f"README.md's Configuration tables lack: {', '.join(missing)}"


def up_defaults() -> dict[str, object]:
    """`doorward up`'s own defaults (they are not pydantic fields)."""
    cfg = UpConfig.from_env({})
    return {
        "DOORWARD_VAULT_PORT": cfg.vault_port,
        "DOORWARD_READY_TIMEOUT": cfg.ready_timeout,
        "DOORWARD_DATA_DIR": cfg.data_dir.relative_to(Path.cwd()),
    }


def test_readme_defaults_are_the_real_ones() -> None:
    rows = config_rows()
    wrong = []
    for name, default in (settings_variables() | up_defaults()).items():
        text = rendered(default)
        if text is None or name not in rows:
            continue  # no plain default (required, computed) / reported by the test above
        for cells in rows[name]:
            if not re.search(rf"(?<![\w.]){re.escape(text)}(?![\w])", cells[1]):
                wrong.append(f"{name}: README says {cells[1]!r}, the code {text!r}")
    assert not wrong, "\n".join(wrong)


def test_readme_lists_nothing_that_does_not_exist() -> None:
    known = set(settings_variables()) | set(env_names()) | code_variables()
    # Standard OpenTelemetry variables are read by the SDK itself, not named in our code.
    stale = sorted(n for n in config_rows() if n not in known and not n.startswith("OTEL_"))
    assert not stale, f"README.md documents variables nothing reads: {', '.join(stale)}"


def test_every_benchmark_is_in_readme() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Benchmarks\n")
    section = text[start : text.index("\n## ", start + 1)]
    missing = [
        p.name
        for p in sorted((ROOT / "bench").glob("*.py"))
        if f"bench/{p.name}" not in section and f"bench.{p.stem} " not in section
    ]
    assert not missing, f"README.md's Benchmarks section lacks: {', '.join(missing)}"
