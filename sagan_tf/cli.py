"""What every command line of this project shares: quiet start-up, one
paragraph per error, and warnings.

Entry points call `quiet_tensorflow_startup()` before anything imports
TensorFlow, define `--debug` with `define_debug_flag`, and run their work
through `run(fn, program, debug)`: an error then ends the process with
status 1 and one paragraph on stderr (the message names the flag, file or
value at fault and what to do), not a Python traceback. `--debug` shows the
traceback instead.

This module imports nothing heavy, so the entry points can use it before
TensorFlow loads.
"""

import os
import re
import sys
import tempfile

DEBUG_FLAG = "debug"
# TF's C++ log level when the user sets none: warnings and above.
DEFAULT_TF_LOG_LEVEL = "1"
_TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"

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


def quiet_tensorflow_startup():
    """Imports TensorFlow with its C++ log at warnings and above.

    Sets TF_CPP_MIN_LOG_LEVEL to warnings and above unless the user set it,
    and applies that level to the start-up lines TensorFlow prints
    regardless of it. By default the missing-GPU-driver error of a CPU
    machine goes too. TensorFlow's Python INFO log (e.g. the saver's
    timings) is turned off. Does nothing when TensorFlow is already
    imported.
    """
    if "tensorflow" in sys.modules:
        return
    user_set = _TF_LOG_ENV in os.environ
    os.environ.setdefault(_TF_LOG_ENV, DEFAULT_TF_LOG_LEVEL)
    try:
        level = int(os.environ[_TF_LOG_ENV])
    except ValueError:
        level = int(DEFAULT_TF_LOG_LEVEL)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            _import_tensorflow()
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


def _import_tensorflow():
    import tensorflow as tf

    # Device discovery logs the missing-driver lines; do it now, inside the
    # filter, rather than at the first op.
    tf.config.list_physical_devices()
    # TensorFlow's Python INFO lines (e.g. the saver's timings) go through
    # absl logging.
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")


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
        from sagan_tf import data_errors

        message = data_errors.clean(message)
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
