"""Trains SAGAN: the released `train_imagenet.py`, the same as `sagan-train`.

    CUDA_VISIBLE_DEVICES=0,1,2,3 python train_imagenet.py --data_dir ./data

`--help` explains every flag; the program is sagan_tf/commands/train.py.
"""

from sagan_tf.commands import train

if __name__ == "__main__":
    train.run()
