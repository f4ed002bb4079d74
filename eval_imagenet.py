"""Scores, samples or exports SAGAN checkpoints: the released
`eval_imagenet.py`, the same as `sagan-eval`.

    CUDA_VISIBLE_DEVICES=4 python eval_imagenet.py --data_dir ./data

`--help` explains every flag; the program is sagan_tf/commands/evaluate.py.
"""

from sagan_tf.commands import evaluate

if __name__ == "__main__":
    evaluate.run()
