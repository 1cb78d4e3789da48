"""What a reader meets: executed notebooks with their pictures, compact, no errors, nothing that points outside the repo.

Fails (exit 1, one line per problem) on:
- a notebook without any image output (09_cli, the command line, draws nothing and is exempt), or a marked picture
  cell (a code cell whose first line after nbdev's `#|` directives is `# picture: ...`) without an image;
- an error output or a traceback in any output;
- an image over 150 KB, a notebook over 1.5 MB, all notebooks together over 8 MB;
- an absolute machine path in an output, or a mention of the team's private specification
 anywhere in notebooks, modules, tests, bench or the READMEs.
Prints the picture count and size of every notebook.
"""
import base64
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_LIMIT, NOTEBOOK_LIMIT, TOTAL_LIMIT = 150_000, 1_500_000, 8_000_000
EXEMPT = {"09_cli.ipynb"}  # the command line draws nothing
MARKER = re.compile(r"^#\s*picture:", re.I)
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|Users|mnt|opt|var)/[\w.-]+")
PRIVATE = re.compile("method" + r"\.md")  # written so that this file does not match itself


def images_of(cell) -> list[int]:
    "Sizes in bytes of the PNG/JPEG images in a cell's outputs."
    sizes = []
    for out in cell.get("outputs", []):
        for mime, data in out.get("data", {}).items():
            if mime.startswith("image/"): sizes.append(len(base64.b64decode("".join(data))))
    return sizes


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts += out.get("text", []) + out.get("traceback", [])
        parts += out.get("data", {}).get("text/plain", [])
    return "".join(parts if isinstance(parts, list) else [parts])


def check_notebook(path: Path, problems: list) -> tuple[int, int]:
    nb = json.loads(path.read_text())
    n_images = 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code": continue
        sizes = images_of(cell)
        n_images += len(sizes)
        where = f"{path.name} cell {i} ({cell.get('id')})"
        lines = [l for l in "".join(cell["source"]).splitlines() if not l.startswith("#|")]  # nbdev directives come first
        if lines and MARKER.match(lines[0].lstrip()):
            if not sizes: problems.append(f"{where}: a picture cell without an image output")
        for s in sizes:
            if s > IMAGE_LIMIT: problems.append(f"{where}: image of {s / 1e3:.0f} KB (limit {IMAGE_LIMIT // 1000} KB)")
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            problems.append(f"{where}: an error output")
        text = output_text(cell)
        if "Traceback (most recent call last)" in text: problems.append(f"{where}: a traceback in the output")
        for m in ABSOLUTE.finditer(text): problems.append(f"{where}: an absolute path in the output: {m.group(0)}")
    if path.name not in EXEMPT and not n_images: problems.append(f"{path.name}: no image output (every notebook but 09_cli draws)")
    size = path.stat().st_size
    if size > NOTEBOOK_LIMIT: problems.append(f"{path.name}: {size / 1e6:.2f} MB (limit {NOTEBOOK_LIMIT / 1e6} MB)")
    return n_images, size


def check_private_references(problems: list) -> None:
    files = [*REPO.glob("nbs/*.ipynb"), *REPO.glob("dense_ulearn/*.py"), *REPO.glob("tests/*.py"),
             *REPO.glob("bench/*"), REPO / "README.md", *REPO.glob("data/*.md"), *REPO.glob(".ci/*")]
    for f in files:
        if f.is_file() and PRIVATE.search(f.read_text(errors="replace")):
            problems.append(f"{f.relative_to(REPO)}: refers to the team's private specification; cite the paper instead")


def main() -> int:
    problems, total = [], 0
    for path in sorted((REPO / "nbs").glob("*.ipynb")):
        n, size = check_notebook(path, problems)
        total += size
        print(f"{path.name:28s} {n:3d} pictures {size / 1e3:7.0f} KB")
    if total > TOTAL_LIMIT: problems.append(f"all notebooks: {total / 1e6:.2f} MB (limit {TOTAL_LIMIT / 1e6} MB)")
    print(f"{'all notebooks':28s}     {total / 1e6:10.2f} MB")
    check_private_references(problems)
    for p in problems: print(f"check-notebooks: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__": sys.exit(main())
