"""The command lines. Each module defines its flags (defaults from
`sagan_tf/config.py`), builds one config object from them and hands it to
the library; nothing else in the package reads flags.

  train.py       sagan-train       (train_imagenet.py)
  evaluate.py    sagan-eval        (eval_imagenet.py)
  convert.py     sagan-convert     (data/convert_imagenet.py)
  import_tf1.py  sagan-import-tf1  (python -m sagan_tf.import_tf1)

`pip install` puts the `sagan-*` commands on the PATH (pyproject.toml's
[project.scripts]); the scripts in parentheses, at the top of a clone,
run the same `run()`. Each module's `main(argv, flag_values)` is what the
tests call in-process.
"""
