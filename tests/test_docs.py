"""The documentation stays findable and true to the tree: every relative link in README.md and
docs/*.md reaches a file (and a heading, when it names one), every docs page is linked from the
README and links back, every `make <target>` the README names exists, and the EC2 action list in
docs/ec2-api.md is the `@action` registry's."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudctl.api.ec2.actions import ACTIONS
from cloudctl.api.query.services import SPECS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The page without its fenced code blocks (shell and YAML are not links)."""
    return _FENCE.sub("", path.read_text())


def _links(path: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(path)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as '-'."""
    out = set()
    for line in _prose(path).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    assert {"architecture.md", "operating.md", "networks.md", "baremetal.md", "marketplace.md",
            "security.md", "ec2-api.md", "elb.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_links_every_docs_page_and_each_links_back() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _links(README)}
    assert [p.name for p in DOCS if p not in linked] == []
    no_way_back = [p.name for p in DOCS
                   if README not in {(p.parent / t.partition("#")[0]).resolve() for t in _links(p)}]
    assert no_way_back == []


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, re.M))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README.read_text()))
    assert named, "the README names no make target"
    assert sorted(named - targets) == []


def test_the_ec2_action_list_is_the_registry() -> None:
    text = (ROOT / "docs" / "ec2-api.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", text, re.M)
    listed = {name.strip() for _, names in rows for name in names.split(",")}
    assert sorted(listed - set(ACTIONS)) == [], "listed in docs/ec2-api.md but not implemented"
    assert sorted(set(ACTIONS) - listed) == [], "implemented but missing from docs/ec2-api.md"
    modules = {fn.__module__.rsplit(".", 1)[1] for fn in ACTIONS.values()}
    assert {m for m, _ in rows} == modules


def test_the_query_services_list_is_their_registries() -> None:
    text = (ROOT / "docs" / "ec2-api.md").read_text()
    rows = re.findall(r"^\| (\w+) \(`api/(\w+)`\) \| (.+) \|$", text, re.M)
    listed = {package: {name.strip() for name in names.split(",")} for _, package, names in rows}
    assert listed == {spec.model or spec.name: set(spec.registry.actions) for spec in SPECS}
