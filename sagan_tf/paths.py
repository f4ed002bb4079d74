"""Checks of the folders a command will write to, named by their flag."""

import os


def _is_remote(path):
    return "://" in path


def check_folder(path, flag):
    """Raises ValueError unless `path` is, or can become, a folder.

    Catches the mistakes that otherwise end in an OS-level traceback: the
    path, or a folder above it, is a regular file; or a folder on the way
    cannot be written.

    Args:
      path: the folder a command will create or write into.
      flag: the flag that named it, e.g. "--checkpoint_dir".
    """
    if not path:
        raise ValueError(f"{flag} is empty; it must name a folder")
    if _is_remote(path):
        return
    absolute = os.path.abspath(path)
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise ValueError(
            f"{flag} {path!r} is a file, not a folder. Pass a folder (it is "
            "created if missing), or move the file away."
        )
    parent = absolute
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(
            f"{flag} {path!r} cannot be created: {parent!r} is a file, not "
            "a folder. Pass a path under a folder."
        )
    if parent != absolute and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"{flag} {path!r} cannot be created: no permission to write in "
            f"{parent!r}."
        )


def make_folder(path, flag):
    """`check_folder`, then creates the folder; returns `path`."""
    check_folder(path, flag)
    if _is_remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"{flag} {path!r} cannot be created: {error.strerror}"
            ) from None
    return path
