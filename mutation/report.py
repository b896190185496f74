"""Summarise a mutmut run: killed / total per module and every mutant that no test caught, with its one-line diff.

Run from the repository root after `mutmut run` (what `make mutants` does):

    .venv/bin/python mutation/report.py [--output FILE]

It reads mutmut's own result files under mutants/ through mutmut's API, so it reports exactly what `mutmut results`
and `mutmut show NAME` report, in one plain-text listing: one line per mutant that was not killed,

    <module path>  <mutant id>  <status>  L<line>  - <original line>  =>  + <mutated line>

(L? where the original line is not unique in the file; " | " joins the lines of a mutant that spans several).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from mutmut.configuration import config
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

# Statuses that count as "the tests caught it" in the score.
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


def one_line_diff(diff: str, source_lines: list[str]) -> tuple[str, str]:
    """The removed and added lines of a mutmut diff, and the line number in the original file where it is unique."""
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    removed = [line[1:].strip() for line in body if line.startswith("-")]
    added = [line[1:].strip() for line in body if line.startswith("+")]
    where = "L?"
    if removed:
        hits = [i + 1 for i, line in enumerate(source_lines) if line.strip() == removed[0]]
        if len(hits) == 1:
            where = f"L{hits[0]}"
    return where, f"- {' | '.join(removed) or '(nothing)'}  =>  + {' | '.join(added) or '(removed)'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the listing to this file")
    args = parser.parse_args()
    config()  # reads [tool.mutmut] from pyproject.toml in the current directory

    summary, listing = [], []
    totals: Counter[str] = Counter()
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        if not data.exit_code_by_key:
            continue
        statuses = {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}
        counts = Counter(statuses.values())
        totals.update(counts)
        total = len(statuses)
        checked = total - counts["not checked"]
        caught = sum(counts[s] for s in CAUGHT)
        score = f"{100 * caught / checked:5.1f}%" if checked else "   n/a"
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in {"killed", "survived"})
        summary.append(
            f"{str(path):42s} killed {counts['killed']:4d} / {total:4d}   survived {counts['survived']:4d}   "
            f"score {score} of {checked} checked" + (f"   ({others})" if others else "")
        )
        source_lines = Path(path).read_text().splitlines()
        for name, status in statuses.items():
            if status in CAUGHT or status == "not checked":
                continue
            where, diff = one_line_diff(get_diff_for_mutant(name, path=path), source_lines)
            listing.append(f"{path}  {name.rpartition('.')[2]}  {status}  {where}  {diff}")

    total = sum(totals.values())
    checked = total - totals["not checked"]
    caught = sum(totals[s] for s in CAUGHT)
    summary.append(
        f"{'all':42s} killed {totals['killed']:4d} / {total:4d}   survived {totals['survived']:4d}   "
        f"score {100 * caught / checked if checked else 0:5.1f}% of {checked} checked"
    )
    text = "\n".join(
        ["Mutation score per module (caught = killed, timeout or segfault; 'not checked' = not run yet)", ""]
        + summary
        + ["", f"Mutants the tests did not catch ({len(listing)}):", ""]
        + listing
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
