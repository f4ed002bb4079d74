"""What every command line of this project shares: quiet start-up, one
paragraph per error, and warnings.

`import sagan_tf` imports TensorFlow through `import_tensorflow_quietly()`
(see there). Commands then call `quiet_tensorflow_startup()` before their
first TensorFlow op, define `--debug` with `define_debug_flag`, and run
their work through `run(fn, program, debug)`: an error then ends the
process with status 1 and one paragraph on stderr (the message names the
flag, file or value at fault and what to do), not a Python traceback.
`--debug` shows the traceback instead.

This module imports nothing heavy: `sagan_tf/__init__.py` uses it before
TensorFlow loads.
"""

import contextlib
import os
import re
import sys
import tempfile

DEBUG_FLAG = "debug"
# TF's C++ log level when the user sets none: warnings and above.
DEFAULT_TF_LOG_LEVEL = "1"
_TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"
# Set beside _TF_LOG_ENV when this module chose its value, so that child
# processes (the demo runs the commands as subprocesses) know the level was
# not the user's and filter the same lines.
_DEFAULTED_ENV = "SAGAN_TF_DEFAULT_TF_LOG_LEVEL"
# "1" in processes that need none of TensorFlow: `import sagan_tf` then
# skips TensorFlow and the layer registration. The converter sets it for
# its image-decoding worker processes (`worker_processes_without_tf`).
NO_TENSORFLOW_ENV = "SAGAN_TF_NO_TENSORFLOW"

# TensorFlow 2.17+ writes its C++ log through absl, which prints everything
# logged before absl::InitializeLog() -- all of import and device discovery --
# whatever TF_CPP_MIN_LOG_LEVEL says. Those lines are filtered here instead.
_CPP_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\]")
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog"),
    # The second line of cpu_feature_guard's INFO message.
    re.compile(r"^To enable the following instructions: .* rebuild "
               r"TensorFlow with the appropriate compiler flags\.$"),
)
# Expected on a machine without a GPU driver; the strategy line this project
# prints says which devices are used.
_NO_GPU = re.compile(r"failed call to cuInit|Could not find cuda drivers")


def define_debug_flag(flag_values):
    """Defines --debug on an absl FlagValues."""
    from absl import flags

    flags.DEFINE_boolean(
        DEBUG_FLAG, False,
        "On an error, show the Python traceback instead of a one-paragraph "
        "message.",
        flag_values=flag_values,
    )


def command_main(work, program):
    """The `main(argv, flag_values)` that absl's app.run calls for a command.

    It refuses positional arguments and runs `work(flag_values)` through
    `run`: an error ends the process with one paragraph (--debug: the
    traceback). Tests call it in-process with their own FlagValues.

    Args:
      work: the command's work, given the parsed FlagValues.
      program: the name for error lines when argv[0] says none.
    """

    def main(argv, flag_values=None):
        from absl import app, flags

        flag_values = flags.FLAGS if flag_values is None else flag_values
        if len(argv) > 1:
            raise app.UsageError(
                f"unexpected arguments: {' '.join(argv[1:])}")
        return run(lambda: work(flag_values), program_name(argv, program),
                   debug=flag_values.debug)

    return main


def run_command(define_flags, main, module_name):
    """Runs a command line: `absl.app.run(main)` with its flags listed.

    Finds the devices first (`quiet_tensorflow_startup`), then defines the
    flags on absl's global FlagValues. absl's --help lists the flags that
    the main module defined; these are defined in `module_name`, so they
    are declared key flags of the program that runs (train_imagenet.py,
    sagan-train, ...) too, and --help starts with `module_name`'s
    docstring.
    """
    from absl import app, flags

    sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
    quiet_tensorflow_startup()
    define_flags(flags.FLAGS)
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


def _keep_startup_line(line, level, user_set):
    if level == 0:
        return True
    if any(pattern.match(line) for pattern in _NOISE):
        return False
    match = _CPP_LINE.match(line)
    if not match:
        return True
    if "IWEF".index(match.group(1)) < level:
        return False
    return user_set or not _NO_GPU.search(line)


def tensorflow_wanted():
    """False in processes started with NO_TENSORFLOW_ENV=1."""
    return os.environ.get(NO_TENSORFLOW_ENV) != "1"


@contextlib.contextmanager
def worker_processes_without_tf():
    """Processes started inside this block import sagan_tf without
    TensorFlow (about 0.7 GB and 3 s less each)."""
    previous = os.environ.get(NO_TENSORFLOW_ENV)
    os.environ[NO_TENSORFLOW_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[NO_TENSORFLOW_ENV]
        else:
            os.environ[NO_TENSORFLOW_ENV] = previous


def _log_level():
    """(level, user_set): TF's C++ log level, and whether the user chose it.

    Sets the level to warnings and above when nobody has.
    """
    user_set = (_TF_LOG_ENV in os.environ
                and os.environ.get(_DEFAULTED_ENV) != "1")
    if _TF_LOG_ENV not in os.environ:
        os.environ[_TF_LOG_ENV] = DEFAULT_TF_LOG_LEVEL
        os.environ[_DEFAULTED_ENV] = "1"
    try:
        level = int(os.environ[_TF_LOG_ENV])
    except ValueError:
        level = int(DEFAULT_TF_LOG_LEVEL)
    return level, user_set


def _filter_stderr(fn):
    """Runs fn() with file descriptor 2 captured, then writes back the
    lines the log level keeps (all of them if fn fails)."""
    level, user_set = _log_level()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        return fn()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            return fn()
        except BaseException:
            level = 0  # show everything that led to the failure
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if _keep_startup_line(line, level, user_set)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow_quietly():
    """Imports TensorFlow and Keras with their start-up lines filtered.

    `import sagan_tf` calls this. TF_CPP_MIN_LOG_LEVEL, which TensorFlow
    reads only while it loads, is set to warnings and above unless the
    user set it; the lines TensorFlow prints while loading regardless of
    that level are filtered to it (the missing-GPU-driver lines of a CPU
    machine too, unless the user chose the level). Does nothing when
    TensorFlow is already imported.
    """
    if "tensorflow" in sys.modules:
        return

    def load():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

    _filter_stderr(load)


def quiet_tensorflow_startup():
    """Finds the devices with TensorFlow's start-up lines filtered.

    Commands call it before `absl.app.run`, which lets TensorFlow list the
    GPUs before `main` starts (an init callback of tf.distribute): device
    discovery logs the missing-GPU-driver error of a CPU machine, which is
    filtered as in `import_tensorflow_quietly`. TensorFlow's Python INFO
    log (e.g. the saver's timings) is turned off.
    """
    import_tensorflow_quietly()
    import tensorflow as tf

    _filter_stderr(tf.config.list_physical_devices)
    # TensorFlow's Python INFO lines go through absl logging.
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")


def program_name(argv, default):
    """The name the user ran the command by: `train_imagenet.py`,
    `sagan-train`, ... (for error lines), else `default`."""
    name = os.path.basename(argv[0]) if argv else ""
    return name if name and name != "-c" else default


def warn(text):
    """Prints one warning paragraph to stderr."""
    print(f"WARNING: {text}", file=sys.stderr, flush=True)


def _is_expected(error):
    """Errors this project raises on purpose carry a message for the user."""
    if isinstance(error, (ValueError, OSError)):
        return True
    return type(error).__module__.startswith("sagan_tf")


def error_paragraph(program, error):
    """The one paragraph that reports `error`."""
    message = getattr(error, "message", None) or str(error)
    if type(error).__module__.startswith("tensorflow"):
        from sagan_tf.data import errors

        message = errors.clean(message)
    if _is_expected(error) or type(error).__module__.startswith(
        "tensorflow"
    ):
        text = message
    else:
        text = (f"unexpected {type(error).__name__}: {message}. Re-run with "
                f"--{DEBUG_FLAG} to see where it happened.")
    return f"{program}: error: {text}"


def run(fn, program, debug=False):
    """Runs fn(); an error exits with status 1 and one paragraph.

    Args:
      fn: the command's work, no arguments.
      program: the command's name, e.g. "train_imagenet.py".
      debug: re-raise instead (the --debug flag), for the traceback.

    Returns:
      What fn returns.
    """
    try:
        return fn()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{program}: interrupted.", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - reported, not hidden
        if debug:
            raise
        print(error_paragraph(program, error), file=sys.stderr, flush=True)
        sys.exit(1)
