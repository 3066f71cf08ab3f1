"""Plain-text tables for the command line (``check``, ``audit report``, ``replay``)."""

from __future__ import annotations

from collections.abc import Sequence


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is never padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def strip_subject(message: str, *subjects: object) -> str:
    """A violation without its leading ``image: `` (the table already names the image);
    subjects that are not text (an edited audit line) are ignored."""
    for subject in subjects:
        if isinstance(subject, str) and subject and message.startswith(subject):
            head, sep, rest = message.partition(": ")
            if sep and " " not in head:
                return rest
    return message


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 error``, ``2 errors`` (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"
