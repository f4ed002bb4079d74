"""Converts a folder of class folders of images to training shards: the
same as `sagan-convert`.

    python data/convert_imagenet.py --input_dir ILSVRC2012/train \
        --output_dir ./data --image_size 128 --num_shards 1024

`--help` explains every flag; the program is sagan_tf/commands/convert.py.
"""

import os
import sys

# Run from a clone without installing: the repository's package first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sagan_tf.commands import convert  # noqa: E402

if __name__ == "__main__":
    convert.run()
