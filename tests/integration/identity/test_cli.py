"""`doorward bootstrap` as an operator runs it: a real process, password on stdin."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PASSWORD = "Operator-Chosen-Passphrase"


def run_cli(env, *args, stdin=PASSWORD + "\n"):
    return subprocess.run(
        [sys.executable, "-c", "from deploy.cli import app; app()", "bootstrap", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_bootstrap_command(postgres):
    url = postgres.fresh_database("identity_cli")
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "DOORWARD_IDENTITY_DB_URL": url,
            "DOORWARD_DATA_DIR": data_dir,
            "DOORWARD_IDENTITY_ARGON2_MEMORY_COST": "8",
            "DOORWARD_IDENTITY_ARGON2_TIME_COST": "1",
            "DOORWARD_IDENTITY_ARGON2_PARALLELISM": "1",
        }
        env.pop("DOORWARD_IDENTITY_KEY_DIR", None)
        first = run_cli(env, "--org", "Acme Doors", "--admin-email", "ops@example.com")
        assert first.returncode == 0, first.stderr
        out = dict(line.split(":", 1) for line in first.stdout.splitlines() if ":" in line[:20])
        assert out["organisation id"].strip() and out["admin user id"].strip()
        assert len(out["TOTP secret"].strip()) == 32
        assert PASSWORD not in first.stdout + first.stderr
        # The key folder is where `doorward up` keeps it, private.
        keys = Path(data_dir) / "credentials" / "identity" / "keys"
        assert (keys / "data.key").exists()
        assert oct(keys.stat().st_mode & 0o777) == "0o700"

        again = run_cli(env, "--org", "Acme Doors", "--admin-email", "other@example.com")
        assert again.returncode == 1
        assert "already been bootstrapped" in again.stderr

        weak = run_cli(env, "--org", "Other", "--admin-email", "x@example.com", stdin="short\n")
        assert weak.returncode == 1 and "at least 12" in weak.stderr
