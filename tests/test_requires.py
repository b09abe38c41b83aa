"""A missing host framework is a typed error carrying the exact install command (issue: fresh installs)."""

import subprocess
import sys

import pytest

from adapters.core import MissingDependencyError
from adapters.core.requires import require_modules

SAT_HINT = "pip install 'ckpt-adapters[sat]' && pip install --no-deps SwissArmyTransformer==0.4.12"


def _import_without(module: str, host: str) -> str:
    """stderr's last line of importing `host` in a fresh process where `module` cannot be imported."""
    code = f"import sys; sys.modules[{module!r}] = None\ntry:\n    import {host}\nexcept ImportError as e:\n"
    code += "    print(type(e).__name__, '|', e, file=sys.stderr); raise SystemExit(3)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    return out.stderr.strip()


@pytest.mark.parametrize(
    ("module", "host", "expected"),
    [
        ("sat", "adapters.sat", f"adapters.sat needs the module 'sat', which is not installed\n  hint: {SAT_HINT}"),
        ("requests", "adapters.sat", f"adapters.sat needs the module 'requests', which is not installed\n  hint: {SAT_HINT}"),
        ("fla", "adapters.fla", "adapters.fla needs the module 'fla', which is not installed\n  hint: pip install 'ckpt-adapters[fla]'"),
    ],
)
def test_a_missing_framework_names_the_install_command(module, host, expected):
    assert _import_without(module, host) == f"MissingDependencyError | {expected}"


def test_a_missing_import_inside_the_framework_names_both(tmp_path, monkeypatch):
    (tmp_path / "framework_with_a_hole.py").write_text("import adapters_test_module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError) as info:
        require_modules("adapters.x", ("framework_with_a_hole",), "pip install x")
    assert str(info.value) == (
        "adapters.x needs the module 'adapters_test_module_that_is_not_there' (imported by 'framework_with_a_hole'), "
        "which is not installed\n  hint: pip install x"
    )
    assert isinstance(info.value, ImportError) and info.value.name == "adapters_test_module_that_is_not_there"
