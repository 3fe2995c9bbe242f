"""The documentation against the repository: README.md stays an index, every
relative link resolves to a file or a heading, and docs/configuration.md lists
exactly the environment variables the code reads."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The crates whose variables docs/configuration.md documents, by its heading.
SECTIONS = {
    "cloud-run": "Every service",
    "id-token": "Receiver",
    "sender": "Sender",
    "cloud-run-ingress": "Cloud Run ingress",
}

# Upper-case string literals in src/ that are not environment variables.
NOT_VARIABLES = {
    "AQAB", "RSA", "RS256", "PS256", "DEBUG", "INFO", "WARNING", "ERROR",
    "NOTICE", "CRITICAL", "SIGINT", "SIGTERM", "SIGNATURE_REMOVED_BY_GOOGLE",
    "GET", "HEAD", "POST", "JWT", "EC", "ES256", "P-256",
}

# Variables read by the code that a user does not set and the tables need
# not list.
INTERNAL = set()


def test_readme_is_an_index():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"
    assert lines[0].startswith("# ")
    # The two commands a newcomer needs come first.
    head = "\n".join(lines[:8])
    assert "deploy/local.sh" in head and ".ci/run" in head


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    found = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(anchor(line.lstrip("#")))
    return found


def links(page: Path):
    in_code = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            yield number, target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue  # an outside address
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"line {number}: {target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"line {number}: {target}: no such heading")
        elif ROOT not in file.parents and file != ROOT:
            broken.append(f"line {number}: {target}: outside the repository")
    assert not broken, "\n".join(broken)


def strip_tests(source: str) -> str:
    """The source up to its unit tests, which name variables they set."""
    return source.split("#[cfg(test)]")[0]


def read_variables(crate: str) -> set:
    found = set()
    for file in (ROOT / crate / "src").rglob("*.rs"):
        if file.name == "testing.rs":
            continue
        for name in re.findall(r'"([A-Z][A-Z0-9_]{2,})"', strip_tests(file.read_text())):
            if name not in NOT_VARIABLES:
                found.add(name)
    return found - INTERNAL


def documented(section: str) -> set:
    text = (ROOT / "docs" / "configuration.md").read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/configuration.md has no '## {section}' section"
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", match.group(1), re.M))


def test_configuration_lists_every_variable_the_code_reads():
    missing = {
        crate: sorted(read_variables(crate) - set().union(*map(documented, SECTIONS.values())))
        for crate in SECTIONS
    }
    assert not any(missing.values()), f"read but not in docs/configuration.md: {missing}"


@pytest.mark.parametrize("crate", sorted(SECTIONS))
def test_configuration_lists_only_variables_the_code_reads(crate):
    # The shared crate reads some variables on a service's behalf
    # (GCE_METADATA_HOST for the sender), so they may be listed there.
    code = read_variables(crate) | read_variables("cloud-run")
    docs = documented(SECTIONS[crate])
    assert read_variables(crate), f"found no variables in {crate}/src: is the scan still right?"
    assert not docs - code, f"in docs/configuration.md but not read by {crate}: {sorted(docs - code)}"
