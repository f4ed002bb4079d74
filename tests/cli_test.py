"""Start-up quietness of the commands (sagan_tf/cli.py).

The commands set TensorFlow's C++ log level to warnings unless the user
set it, and filter the lines TensorFlow prints while it loads and finds
devices. A command started by another one of this project (the demo runs
them as subprocesses) inherits the level that was chosen for it, not by
the user, and must be as quiet as when run by hand.
"""

import os
import subprocess
import sys

import pytest

from sagan_tf import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LEVEL, _DEFAULTED = "TF_CPP_MIN_LOG_LEVEL", "SAGAN_TF_DEFAULT_TF_LOG_LEVEL"
_CUINIT = ("E0000 00:00:1796078286.267188    7592 cuda_platform.cc:52] "
           "failed call to cuInit: INTERNAL: CUDA error\n")
_INFO = ("I0000 00:00:1796077667.067459    3575 port.cc:153] oneDNN custom "
         "operations are on.\n")


@pytest.mark.parametrize("env, kept", [
    ({}, []),  # nobody chose a level: warnings, and no driver error
    ({_LEVEL: "1", _DEFAULTED: "1"}, []),  # inherited from a command
    ({_LEVEL: "1"}, [_CUINIT]),  # the user's level: the error is theirs
    ({_LEVEL: "0"}, [_CUINIT, _INFO]),  # the user asked for everything
], ids=["unset", "inherited", "user_warnings", "user_all"])
def test_the_users_level_wins_and_an_inherited_one_filters(
    monkeypatch, env, kept
):
    for name in (_LEVEL, _DEFAULTED):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    level, user_set = cli._log_level()
    lines = [line for line in (_CUINIT, _INFO)
             if cli._keep_startup_line(line, level, user_set)]
    assert lines == kept
    assert os.environ[_LEVEL] == env.get(_LEVEL, cli.DEFAULT_TF_LOG_LEVEL)


def test_a_command_started_by_a_command_is_quiet():
    """As the demo starts its stages: the parent's imports set the level,
    the child inherits it."""
    parent = (
        "import os, subprocess, sys; import sagan_tf; "
        "sys.exit(subprocess.run([sys.executable, sys.argv[1], '--help'])"
        ".returncode)"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in (_LEVEL, _DEFAULTED)}
    result = subprocess.run(
        [sys.executable, "-c", parent,
         os.path.join(ROOT, "train_imagenet.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert "--data_dir" in out  # the child's --help ran
    for noise in ("cuInit", "cuda drivers", "I0000", "oneDNN",
                  "absl::InitializeLog"):
        assert noise not in out, out[-2000:]


def test_error_paragraph_drops_tfs_graph_trace():
    import tensorflow as tf

    error = tf.errors.UnavailableError(None, None, (
        "Graph execution error:\n\nDetected at node CollectiveReduceV2 "
        "defined at (most recent call last):\n  File \"/x/train_imagenet.py"
        "\", line 11, in <module>\n\nrecvmsg:Connection reset by peer\n\t "
        "[[{{node CollectiveReduceV2}}]] [Op:__inference_reduce_41]"))
    assert cli.error_paragraph("train_imagenet.py", error) == (
        "train_imagenet.py: error: recvmsg:Connection reset by peer")
