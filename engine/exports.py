"""Where exports (the report, SQL results) go when the person does not say.

Beside the database, unless that folder lies inside a git work tree: a report written there is one
`git add .` away from a commit, its tables with it. Then a folder outside the work tree, in the home
folder, named after the database.
"""

from __future__ import annotations

from pathlib import Path

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
