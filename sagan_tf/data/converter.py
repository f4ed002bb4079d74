"""Converts a folder of class folders to shards in the released format.

Input: `<input_dir>/<class>/.../<image>`, e.g. ImageNet's train folder with
one folder per WordNet ID. Labels are the indices of the class folder names
in sorted order (the released convention, also TFDS imagenet2012's).

Unlabeled input: a folder whose images lie directly in it (no class
folders), or any folder tree with `unlabeled=True` (every file under it,
recursively, e.g. an LSUN export). Every label is 0; labels.txt and
conversion.json say the data is unlabeled, and training takes it with
`--number_classes 0` (an unconditional SAGAN).

Output in `<output_dir>`:
  train-00000-of-01024.tfrecords ...  tf.train.Example records with
      `image_raw` (raw uint8 S x S x 3 HWC bytes), `label` (int64) and
      `height`, `width`, `depth` (int64);
  labels.txt       one "index<TAB>folder name" line per class
                   (unlabeled: the one line UNLABELED_LINE);
  conversion.json  the settings, checked when a run is resumed, and under
                   `shard_records` each finished shard's record count and
                   byte size (training's epoch sizes, without a count).

Images are shuffled with a seeded permutation and split into shards of
near-equal size. Worker processes decode and preprocess
(`preprocessing.py`); the parent writes. A shard is written under
`incomplete-<name>.part` and renamed when complete, so a re-run skips every
finished shard. TensorFlow is imported only in the parent (the workers
start with `cli.worker_processes_without_tf`), so workers start fast and
small.
"""

import dataclasses
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from sagan_tf import cli, paths
from sagan_tf.data import preprocessing

LABELS_FILE = "labels.txt"
UNLABELED_LINE = "0\t(unlabeled: every label is 0; train with" \
    " --number_classes 0)\n"
MANIFEST_FILE = "conversion.json"
# conversion.json's {shard name: {"records": n, "bytes": size}}; not a
# setting (grows as shards are finished).
SHARD_RECORDS_KEY = "shard_records"
_TEMP_PREFIX = "incomplete-"
_TEMP_SUFFIX = ".part"


def shard_name(index, num_shards):
    """File name of shard `index`; matches the reader's `*.tfrecords`."""
    return f"train-{index:05d}-of-{num_shards:05d}.tfrecords"


def scan_class_folders(input_dir):
    """Lists the classes and the image files of a folder of class folders.

    Args:
        input_dir: folder whose sub-folders are the classes.

    Returns:
        (classes, items, ignored): sorted class names; [(path, label)] for
        every non-hidden file under each class folder (recursively, sorted);
        the files lying directly in input_dir, which belong to no class.

    Raises:
        ValueError: input_dir is missing or has no class folders or no files.
    """
    if not os.path.isdir(input_dir):
        raise ValueError(f"--input_dir {input_dir!r} is not a folder")
    entries = sorted(
        name for name in os.listdir(input_dir) if not name.startswith(".")
    )
    classes = [n for n in entries if os.path.isdir(os.path.join(input_dir, n))]
    ignored = [n for n in entries if n not in classes]
    if not classes:
        raise ValueError(
            f"--input_dir {input_dir!r} has no class folders and no images"
            " (expected one folder per class, e.g. ImageNet's"
            " train/n01440764/..., or the images themselves)"
        )
    items = []
    for label, name in enumerate(classes):
        for root, dirs, files in os.walk(os.path.join(input_dir, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                if not file.startswith("."):
                    items.append((os.path.join(root, file), label))
    if not items:
        raise ValueError(f"the class folders of {input_dir!r} hold no files")
    return classes, items, ignored


def _files_under(folder):
    """Every non-hidden file under `folder`, recursively, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".")]
    return found


def scan_folder(input_dir, unlabeled=False):
    """Lists the images to convert and whether they are unlabeled.

    Class folders give labeled data (`scan_class_folders`). A folder with
    no class folders, or any folder with `unlabeled`, gives unlabeled data:
    every non-hidden file under it (recursively), label 0.

    Returns:
        (classes, items, ignored, unlabeled): as `scan_class_folders`;
        classes is [] and ignored [] for unlabeled data.

    Raises:
        ValueError: input_dir is missing or holds no files.
    """
    if not os.path.isdir(input_dir):
        raise ValueError(f"--input_dir {input_dir!r} is not a folder")
    if not unlabeled:
        unlabeled = not any(
            os.path.isdir(os.path.join(input_dir, name))
            for name in os.listdir(input_dir) if not name.startswith(".")
        )
        if unlabeled and not _files_under(input_dir):
            return scan_class_folders(input_dir) + (False,)  # raises
    if not unlabeled:
        return scan_class_folders(input_dir) + (False,)
    items = [(path, 0) for path in _files_under(input_dir)]
    if not items:
        raise ValueError(
            f"--input_dir {input_dir!r} holds no files (--unlabeled takes"
            " every image under it)")
    return [], items, [], True


def plan_shards(items, num_shards, seed):
    """Shuffles `items` with `seed` and splits them into `num_shards` lists
    whose sizes differ by at most one."""
    if num_shards < 1:
        raise ValueError(f"--num_shards must be positive, got {num_shards}")
    order = np.random.default_rng(seed).permutation(len(items))
    return [
        [items[i] for i in part]
        for part in np.array_split(order, num_shards)
    ]


@dataclasses.dataclass
class Summary:
    """What a conversion did."""

    num_classes: int = 0
    images_written: int = 0
    shards_written: int = 0
    # Shards found finished by an earlier run, left untouched.
    shards_resumed: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason)
    # Shards whose every file was unreadable; not written.
    empty_shards: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    unlabeled: bool = False

    def lines(self):
        source = (f"{self.num_classes} classes" if not self.unlabeled
                  else "no classes")
        out = [
            f"{self.images_written} images from {source}"
            f" written to {self.shards_written} shard(s);"
            f" {self.shards_resumed} shard(s) already finished were kept.",
            f"{len(self.skipped)} unreadable file(s) skipped.",
        ]
        if self.unlabeled:
            out.insert(0, "Unlabeled data (every label is 0): train it with"
                          " --number_classes 0, an unconditional SAGAN.")
        out += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        if self.ignored:
            out.append(
                f"{len(self.ignored)} file(s) outside class folders ignored:"
                f" {', '.join(self.ignored[:10])}"
            )
        return out


class _Progress:
    """A one-line progress bar with rate and ETA on stderr."""

    def __init__(self, total, stream=None, width=30):
        self.total = max(total, 1)
        self.done = 0
        self.start = time.monotonic()
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0

    def line(self):
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = (time.strftime("%H:%M:%S", time.gmtime(left))
               if left == left else "--:--:--")
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        return (f"[{bar}] {self.done}/{self.total} images"
                f" ({100.0 * self.done / self.total:.1f}%)"
                f" {rate:.0f} img/s ETA {eta}")

    def advance(self, count=1, force=False):
        self.done += count
        now = time.monotonic()
        # A terminal gets a redrawn line; logs get a line every 10 s.
        interval = 0.25 if self.tty else 10.0
        if force or now - self.last >= interval:
            self.last = now
            end = "\r" if self.tty and not force else "\n"
            print(self.line(), end=end, file=self.stream, flush=True)

    def warn(self, text):
        prefix = "\r\033[K" if self.tty else ""
        print(f"{prefix}WARNING: {text}", file=self.stream, flush=True)


def _load(args):
    """Worker task: (path, image_size) -> (path, pixel bytes or None, error)."""
    path, image_size = args
    try:
        pixels = preprocessing.load_square_image(path, image_size)
    except Exception as error:  # noqa: BLE001 - any unreadable file is skipped
        return path, None, f"{type(error).__name__}: {error}"
    return path, pixels.tobytes(), None


def _example(pixels, label, image_size):
    import tensorflow as tf

    def ints(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    example = tf.train.Example(features=tf.train.Features(feature={
        "image_raw": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[pixels])),
        "label": ints(label),
        "height": ints(image_size),
        "width": ints(image_size),
        "depth": ints(3),
    }))
    # Map order otherwise varies between processes; re-runs must give
    # identical shards.
    return example.SerializeToString(deterministic=True)


def _write_atomic(path, text):
    temp = path + _TEMP_SUFFIX
    with open(temp, "w") as stream:
        stream.write(text)
    os.replace(temp, path)


def _check_manifest(output_dir, manifest):
    """Refuses other settings in an existing conversion.json; writes it.

    Returns:
        The shard counts the existing file holds ({} for a new one).
    """
    path = os.path.join(output_dir, MANIFEST_FILE)
    counts = {}
    if os.path.exists(path):
        with open(path) as stream:
            previous = json.load(stream)
        counts = previous.pop(SHARD_RECORDS_KEY, {})
        if previous != manifest:
            changed = sorted(
                key for key in set(previous) | set(manifest)
                if previous.get(key) != manifest.get(key)
            )
            raise ValueError(
                f"--output_dir {output_dir!r} holds a conversion with other"
                f" settings ({', '.join(changed)} differ, see {path}); use an"
                " empty --output_dir or the same flags to resume"
            )
    _write_manifest(output_dir, manifest, counts)
    return counts


def _write_manifest(output_dir, manifest, counts):
    _write_atomic(
        os.path.join(output_dir, MANIFEST_FILE),
        json.dumps({**manifest, SHARD_RECORDS_KEY: counts}, indent=2,
                   sort_keys=True))


def convert(input_dir, output_dir, *, image_size, num_shards, seed=0,
            num_workers=1, stream=None, unlabeled=False):
    """Converts an image folder tree to released-format shards.

    Args:
        input_dir: folder of class folders, or of images (unlabeled).
        output_dir: where shards, labels.txt and conversion.json go.
        image_size: side S of the stored images.
        num_shards: number of output shards.
        seed: seed of the image shuffle.
        num_workers: decoding processes; 1 decodes in this process.
        stream: where progress and warnings go (default stderr).
        unlabeled: take every file under input_dir, recursively, as
            unlabeled data (label 0), class folders or not.

    Returns:
        Summary.

    Raises:
        ValueError: bad arguments, or output_dir holds a conversion made
            with other settings.
    """
    import tensorflow as tf

    if image_size < 1:
        raise ValueError(f"--image_size must be positive, got {image_size}")
    if num_workers < 1:
        raise ValueError(f"--num_workers must be positive, got {num_workers}")
    stream = stream or sys.stderr
    classes, items, ignored, unlabeled = scan_folder(input_dir, unlabeled)
    if num_shards > len(items):
        raise ValueError(
            f"--num_shards {num_shards} is more than the {len(items)} files"
            f" under --input_dir {input_dir!r}: some shards would be empty."
            f" Pass --num_shards {len(items)} or fewer"
        )
    shards = plan_shards(items, num_shards, seed)
    paths.check_folder(output_dir, "--output_dir")
    created = {
        name: not os.path.exists(os.path.join(output_dir, name))
        for name in (MANIFEST_FILE, LABELS_FILE)
    }
    paths.make_folder(output_dir, "--output_dir")
    manifest = {
        "input_dir": os.path.abspath(input_dir),
        "image_size": image_size,
        "num_shards": num_shards,
        "seed": seed,
        "num_files": len(items),
        "num_classes": len(classes),
    }
    if unlabeled:
        # Only then: labeled conversions made before the key existed still
        # resume.
        manifest["unlabeled"] = True
    counts = _check_manifest(output_dir, manifest)
    _write_atomic(
        os.path.join(output_dir, LABELS_FILE),
        UNLABELED_LINE if unlabeled else
        "".join(f"{i}\t{name}\n" for i, name in enumerate(classes)),
    )
    summary = Summary(num_classes=len(classes), ignored=ignored,
                      unlabeled=unlabeled)
    todo = []
    for index, shard in enumerate(shards):
        name = shard_name(index, num_shards)
        if os.path.exists(os.path.join(output_dir, name)):
            summary.shards_resumed += 1
        else:
            todo.append((name, shard))
    for name in os.listdir(output_dir):
        if name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX):
            # Left by a killed run; its shard is redone below.
            os.remove(os.path.join(output_dir, name))
    where = ("unlabeled" if unlabeled
             else f"in {len(classes)} classes")
    print(f"{len(items)} files {where};"
          f" {len(todo)} of {num_shards} shard(s) to write"
          f" ({summary.shards_resumed} already finished).",
          file=stream, flush=True)
    progress = _Progress(sum(len(shard) for _, shard in todo), stream)
    tasks = [(path, image_size) for _, shard in todo for path, _ in shard]
    pool = None
    if num_workers > 1 and tasks:
        # spawn: the parent has TensorFlow loaded, which fork does not
        # tolerate; workers import only PIL and numpy.
        with cli.worker_processes_without_tf():
            pool = multiprocessing.get_context("spawn").Pool(num_workers)
        results = pool.imap(_load, tasks, chunksize=16)
    else:
        results = map(_load, tasks)
    try:
        for name, shard in todo:
            final = os.path.join(output_dir, name)
            temp = os.path.join(output_dir, _TEMP_PREFIX + name + _TEMP_SUFFIX)
            written = 0
            with tf.io.TFRecordWriter(temp) as writer:
                for _, label in shard:
                    path, pixels, error = next(results)
                    if pixels is None:
                        summary.skipped.append((path, error))
                        progress.warn(f"skipping unreadable {path}: {error}")
                    else:
                        writer.write(_example(pixels, label, image_size))
                        written += 1
                    progress.advance()
            if not written:
                # An empty shard stops training at its first batch.
                os.remove(temp)
                summary.empty_shards.append(name)
                continue
            os.replace(temp, final)
            # After every shard: a killed run keeps the counts it made.
            counts[name] = {"records": written,
                            "bytes": os.path.getsize(final)}
            _write_manifest(output_dir, manifest, counts)
            summary.images_written += written
            summary.shards_written += 1
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if tasks:
        progress.advance(0, force=True)
    for line in summary.lines():
        print(line, file=stream, flush=True)
    if summary.empty_shards:
        _refuse_empty_output(output_dir, input_dir, summary, created)
    return summary


def _refuse_empty_output(output_dir, input_dir, summary, created):
    examples = "; ".join(
        f"{path}: {reason}" for path, reason in summary.skipped[:3])
    if not summary.images_written and not summary.shards_resumed:
        # Nothing was converted: leave no settings file that would bind
        # the next attempt.
        for name, new in created.items():
            if new:
                os.remove(os.path.join(output_dir, name))
        raise ValueError(
            f"no readable image under --input_dir {input_dir!r}: all"
            f" {len(summary.skipped)} file(s) in its class folders were"
            f" skipped (e.g. {examples}), so no shard was written. Point"
            " --input_dir at folders of images (JPEG, PNG, ...)"
        )
    raise ValueError(
        f"{len(summary.empty_shards)} shard(s) got no readable image and"
        f" were not written ({', '.join(summary.empty_shards[:5])}): every"
        f" file planned for them was unreadable (e.g. {examples}). The other"
        f" shards in {output_dir!r} are complete. Remove the unreadable"
        " files and convert again into an empty --output_dir"
    )
