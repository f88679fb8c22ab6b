"""The workspace sandbox: every path a tool touches is confined to one directory tree.

A path is resolved the way the kernel would follow it (``os.path.realpath``: symlinks in every
component, including the last and including dangling ones, then ``..``), and the result must lie
inside the workspace root, itself resolved once. Tools then operate on the resolved path, never on
the text the model sent, so a symlink cannot redirect a check made on one path to another file.

Limit: a process that can create symlinks inside the workspace *between* the check and the use
(a concurrent ``run_command``) could still race a check; ``run_command`` itself runs arbitrary
shell code, so the sandbox confines the file tools, not the shell.
"""

from __future__ import annotations

import os
from pathlib import Path

from raygent.errors import SandboxViolation

__all__ = ["Workspace"]


class Workspace:
    """A directory that file tools are confined to.

    Parameters
    ----------
    root : str or os.PathLike
        An existing directory; symlinks in it are resolved once, here.

    Raises
    ------
    NotADirectoryError
        If ``root`` does not exist or is not a directory.
    """

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        resolved = Path(os.path.realpath(os.fspath(root)))
        if not resolved.is_dir():
            raise NotADirectoryError(f"workspace root {os.fspath(root)!r} is not a directory")
        self.root = resolved

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """The real path of ``path``, guaranteed to lie inside the workspace.

        Parameters
        ----------
        path : str or os.PathLike
            Relative (to the root) or absolute. ``""`` and ``"."`` mean the root. The path need not
            exist: a file about to be written resolves through its existing parent chain.

        Returns
        -------
        pathlib.Path
            The absolute path with every symlink followed; use it, not ``path``, for the access.

        Raises
        ------
        SandboxViolation
            If the path contains a NUL byte, or resolves outside the root through ``..``, an
            absolute path or a symlink anywhere in the chain (also a dangling one). Nothing is
            touched on the way.
        """
        text = os.fspath(path)
        if not isinstance(text, str):
            raise SandboxViolation(f"path must be text, got {type(text).__name__}", path=repr(text))
        if "\0" in text:
            raise SandboxViolation(f"path {text!r} contains a NUL byte", path=text)
        joined = os.path.join(self.root, text) if text else str(self.root)
        # realpath (non-strict) follows every existing symlink, including a dangling final one,
        # and handles ``..`` after following, as the kernel does; missing components stay as text.
        real = Path(os.path.realpath(joined))
        if real == self.root or real.is_relative_to(self.root):
            return real
        lexical = Path(os.path.normpath(joined))
        via = (
            "through a symlink"
            if lexical == self.root or lexical.is_relative_to(self.root)
            else "via '..' or an absolute path"
        )
        raise SandboxViolation(
            f"path {text!r} resolves to {real}, outside the workspace {self.root} ({via}); "
            "only paths inside the workspace are allowed",
            path=text,
        )

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the root, ``/``-separated, for display (``"."`` for the root).

        Raises
        ------
        SandboxViolation
            If ``path`` resolves outside the workspace (see :meth:`resolve`).
        """
        rel = self.resolve(path).relative_to(self.root)
        return rel.as_posix() if rel.parts else "."

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"
