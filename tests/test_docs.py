"""The README is the door, the docs site (docs/, mkdocs.yml) holds the rest: the README stays
short and every relative link in it leads somewhere. (`make test` also builds the site with
`mkdocs build --strict`, which checks the links between the pages.) Standard library only."""

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 200
# [text](target) and ![alt](target); a target ends at whitespace or ")" (an optional "title" follows)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _relative_links(text: str) -> list[str]:
    text = FENCE.sub("", text)  # commands in code blocks are not links
    links = [m.group(1) for m in LINK.finditer(text)]
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link, re.I) and not link.startswith("#")]


def _anchors(markdown: str) -> set[str]:
    """The ids MkDocs' toc extension gives the headings (its default slugify)."""
    ids = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        ids.add(re.sub(r"[-\s]+", "-", slug))
    return ids


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; at most {MAX_LINES}: move the rest into docs/"


def test_readme_relative_links_resolve():
    links = _relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md links into the docs site"
    broken = []
    for link in links:
        path, _, anchor = unquote(link).partition("#")
        target = (ROOT / path).resolve()
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{link}: no heading with that anchor")
    assert not broken, "README.md: " + "; ".join(broken)


def test_readme_docs_links_are_site_pages():
    """A docs/ page the README names is in mkdocs.yml's nav, so it is on the site too."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for link in _relative_links(README.read_text(encoding="utf-8")):
        path = unquote(link).partition("#")[0]
        if path.startswith("docs/") and path.endswith(".md"):
            assert path.removeprefix("docs/") in nav, f"{path} is not in mkdocs.yml's nav"


def test_link_checker_sees_a_broken_link():
    assert _relative_links("[a](docs/nope.md) ![b](x.png) [c](https://x.org) [d](#top)") == ["docs/nope.md", "x.png"]
    assert "on-a-gpu" in _anchors("### On a GPU\n") and "sttm-info" in _anchors("## `sttm info`\n")
