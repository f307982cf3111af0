"""Where exports (the report, SQL results) go when the person does not say.

Beside the database, unless that folder lies inside a git work tree: a report written there is one
`git add .` away from a commit, its tables with it. Then a folder outside the work tree, in the home
folder, named after the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from engine.errors import InputError, printable

EXPORT_HOME = "mini-reports"
"""Folder under the home folder that holds the exports of databases kept inside git work trees."""


def git_work_tree(folder: Path) -> Path | None:
    """The innermost folder at or above `folder` holding a `.git` entry (a folder, or the file a worktree or
    submodule has), else None. Read from the file system: git need not be installed."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def default_export_folder(db_path: str | Path) -> Path:
    """The database's folder, or ~/mini-reports/<database stem>/ when that folder lies inside a git work tree
    (not created here: the writer creates it when it writes)."""
    db_path = Path(db_path).expanduser().absolute()
    folder = db_path.parent
    if git_work_tree(folder) is None:
        return folder
    return Path.home() / EXPORT_HOME / db_path.stem


DEFAULT_FORMAT = "parquet"
"""The format of `mini export` when neither --format nor --out's suffix says (Parquet keeps every type)."""


class ExportTarget(NamedTuple):
    path: Path
    """The file to write (absolute)."""
    fmt: str
    """csv or parquet."""
    make_folder: bool
    """The path lies in the default export folder, which may not exist yet: the writer creates it."""
    note: str
    """Why the file is not beside the database (it lies in a git work tree), else empty."""


def export_target(out: str | None, fmt: str | None, name: str, db_path: str | Path, *,
                  force: bool) -> ExportTarget:
    """Check `mini export`'s --out and --format before the database is opened; InputError names the option.

    The format comes from --format, else --out's suffix, else DEFAULT_FORMAT; the file from --out, else
    `<name>.<format>` in default_export_folder. An existing file is refused unless `force`."""
    from store.sql import EXPORT_FORMATS, export_format

    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise InputError(f"--format {printable(fmt)}: choose csv or parquet")
    if out is not None:
        if not out.strip():
            raise InputError("--out '': an empty path; give the file to write, e.g. --out table.parquet")
        path = Path(out).expanduser().absolute()
        from_suffix = export_format(path)
        if fmt is not None and from_suffix is not None and from_suffix != fmt:
            raise InputError(f"--out {printable(out)}: the name ends in .{from_suffix} but --format is {fmt}; "
                             "make them agree")
        fmt = fmt or from_suffix or DEFAULT_FORMAT
        if path.is_dir():
            raise InputError(f"--out {printable(out)}: is a folder; give a file name inside it")
        if not path.parent.is_dir():
            raise InputError(f"--out {printable(out)}: there is no folder {printable(path.parent, 200)}")
        note, make_folder = "", False
    else:
        fmt = fmt or DEFAULT_FORMAT
        db_path = Path(db_path).expanduser().absolute()
        folder = default_export_folder(db_path)
        # A name from the database, not the person: still kept to one file name.
        path = folder / f"{name.replace('/', '_').replace(chr(92), '_')}.{fmt}"
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: is a file, not a folder to export into; give --out FILE")
        work_tree = git_work_tree(db_path.parent)
        note = (f" (not beside the database, which lies in the git work tree {work_tree}; --out to choose)"
                if work_tree is not None else "")
        make_folder = True
    if path.exists() and not force:
        option = "--out " + printable(out) if out is not None else str(path)
        raise InputError(f"{option}: the file exists; add --force to replace it"
                         + ("" if out is not None else ", or --out to write elsewhere"))
    return ExportTarget(path, fmt, make_folder, note)
