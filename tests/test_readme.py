"""The README's quickstart runs as pasted, and every relative link in the docs leads somewhere.

The quickstart is the ```python block right after the `<!-- quickstart -->` marker in README.md.
It runs in a subprocess with the repository's Python, in an empty directory, offline.
"""

import os
import pathlib
import re
import subprocess
import sys
import time
import unicodedata

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = "<!-- quickstart -->"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and [text]: target, outside code blocks and inline code.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def quickstart_code(text):
    """The code of the ```python block that follows the quickstart marker."""
    after = text.split(MARKER, 1)
    if len(after) != 2:
        raise AssertionError(f"README.md has no {MARKER} marker before the quickstart block.")
    match = re.match(r"\s*```python\n(.*?)\n```", after[1], re.S)
    if match is None:
        raise AssertionError(f"{MARKER} is not followed by a ```python code block.")
    return match.group(1)


def prose_lines(text):
    """`(line number, line)` of the text outside fenced code blocks, inline code removed."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield number, INLINE_CODE.sub("", line)


def links(path):
    """`(line number, target)` of every link in a Markdown file."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        found += [(number, m.group(1)) for m in INLINE_LINK.finditer(line)]
        found += [(number, m.group(1)) for m in REFERENCE_LINK.finditer(line)]
    return found


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path):
    """The anchors of a Markdown file's headings (repeated headings get -1, -2, ...)."""
    seen, result = {}, set()
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        match = None if inside else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_slug_follows_github():
    assert slug("Taps: intermediate outputs through functional sub-models") == (
        "taps-intermediate-outputs-through-functional-sub-models")
    assert slug("`custom_config`") == "custom_config"
    assert slug("On a cluster: Kubernetes, Vertex AI, TFX") == (
        "on-a-cluster-kubernetes-vertex-ai-tfx")


def test_links_are_found_outside_code():
    sample = "See [a](a.md) and `[b](b.md)`.\n```\n[c](c.md)\n```\n[d]: d.md\n"
    lines = [line for _, line in prose_lines(sample)]
    found = [m.group(1) for line in lines for m in INLINE_LINK.finditer(line)]
    found += [m.group(1) for line in lines for m in REFERENCE_LINK.finditer(line)]
    assert found == ["a.md", "d.md"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(document):
    broken = []
    for number, target in links(document):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (document.parent / file_part).resolve() if file_part else document
        where = f"{document.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where} (no heading with anchor #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_quickstart_runs_as_pasted(tmp_path):
    code = quickstart_code(README.read_text(encoding="utf-8"))
    script = tmp_path / "quickstart.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - start
    assert result.returncode == 0, (
        f"the README quickstart failed (exit {result.returncode}) after {seconds:.0f} s:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    exported = tmp_path / "student_export"
    assert (exported / "saved_model").is_dir(), result.stdout[-3000:]
    assert (exported / "model_dynamic_int8.tflite").is_file(), result.stdout[-3000:]
    print(f"README quickstart: {seconds:.1f} s")
