"""Project-level consistency: pins, environments and the table of contents."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version.strip()
    return pins


def test_torch_pinned_to_the_cpu_build_on_disk():
    assert _pins()["torch"] == "2.13.0"
    assert _pins()["jupyter-book"] == "1.0.4.post1"


def test_binder_environment_matches_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    torch_dep = next(d for d in deps if isinstance(d, str) and d.startswith("pytorch="))
    assert torch_dep.split("=")[1] == _pins()["torch"] and "cpu" in torch_dep
    pip = next(d for d in deps if isinstance(d, dict))["pip"]
    assert "-r requirements.txt" in pip


def test_every_chapter_is_in_the_toc_and_exists():
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"file:\s*(\S+)", toc) + re.findall(r"root:\s*(\S+)", toc)
    for f in files:
        assert any((ROOT / (f + ext)).exists() for ext in (".md", ".ipynb")), f
    for nb in (ROOT / "book").glob("*.ipynb"):
        assert f"book/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text()


def test_every_lib_module_is_on_the_api_page_and_within_size():
    api = (ROOT / "book" / "api.md").read_text()
    for path in sorted((ROOT / "lib").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        name = ".".join(parts)
        if name == "lib":
            continue
        assert f"automodule:: {name}\n" in api, f"{name} is missing from book/api.md"
        lines = len(path.read_text().splitlines())
        assert lines <= 700, f"{rel} has {lines} lines: split it (one concept per module)"


def test_no_module_of_the_old_flat_layout_is_imported():
    old = r"lib\.(downlink|utils|evaluation|plotting|channels|arrays|csi|hybrid|outage|unrolling"
    old += r"|unrolled_sparse|unfolded_wmmse|pretrained_sparse|distribution_shift)\b"
    pattern = re.compile(r"(from|import) " + old)
    for folder in ("lib", "tests", "scripts", "benchmarks", "book"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".ipynb", ".md") and ".ipynb_checkpoints" not in str(path):
                assert not pattern.search(path.read_text()), f"{path} uses the flat lib layout"
