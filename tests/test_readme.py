"""The README's Quickstart and CI stay in sync: CI runs the README's test command verbatim. The
claims that moved from the README into the docs site are checked where they now live."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# README plus every page of the docs site (mkdocs.yml's docs_dir).
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## quick ?start\n(.*?)^## ", text, re.S | re.M | re.I).group(1)
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
    install_and_train, install_and_test = quickstart_commands()
    assert "recipes/pretrain.py" in install_and_train and "accelerate launch" in install_and_train
    assert "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


def test_readme_has_no_unfilled_placeholders():
    for page in DOC_PAGES:
        assert "PLACEHOLDER" not in page.read_text(), page


def test_paths_named_in_the_readme_exist():
    for page in DOC_PAGES:
        for path in set(
            re.findall(
                r"`((?:recipes|accelerate_configs|benchmarks|docs|model_cards|geofm_hf)/[\w./-]+)`",
                page.read_text(),
            )
        ):
            assert (ROOT / path).exists(), (page.name, path)


def test_readme_links_to_docs_pages_that_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[\w./-]+)(?:#[\w-]*)?\)", text)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link


def _first_column(line: str) -> str:
    # A name that runs past column 29 (image_processing_geofm_inputs.py) ends the column itself.
    return line[:29] + (re.match(r"\S*", line[29:]).group(0) if line[28:29].strip() else "")


def test_code_map_names_every_module_and_folder_of_the_package():
    text = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"^## Code map\n+```\n(.*?)```", text, re.S | re.M).group(1)
    lines = block.split("geofm_hf/\n", 1)[1].split("\nrecipes/", 1)[0]
    # names in the first column (descriptions start at column 29, or after a longer name)
    named = {n for line in lines.splitlines() for n in re.findall(r"[\w.]+/?", _first_column(line))}
    package = ROOT / "geofm_hf"
    entries = {p.name + "/" if p.is_dir() else p.name for p in package.iterdir()
               if p.name != "__pycache__" and (p.is_dir() or p.suffix == ".py")}  # fmt: skip
    assert entries == named, (sorted(entries - named), sorted(named - entries))
