"""The Inception classifier behind IS, FID and KID, loaded once per process.

Two formats are accepted, matching what TF-GAN has shipped:

* a TF-Hub module (a handle such as the default
  https://tfhub.dev/tensorflow/tfgan/eval/inception/1, or a local module /
  SavedModel directory). TF-GAN 2.1 (`classifier_fn_from_tfhub`) calls it as
  `hub.load(handle)(images)`: the default `__call__`, no named signature,
  float32 images in [-1, 1] of 299x299, returning a dict whose `pool_3`
  (2048) and `logits` (1008) entries it flattens to 2-D. We do the same.
* a frozen GraphDef `.pb` (TF-GAN 1's `inceptionv1_for_inception_score.pb`,
  which the released code used), fed at `Mul:0` with images in [-1, 1] of
  299x299 and read at `pool_3:0` and `logits:0`.

Images are first resized the way the released code did, with TF1's
`resize_bilinear` (no half-pixel centres). `save_classifier_as_savedmodel`
and `save_classifier_as_graphdef` write any classifier in these formats, so a
small stand-in network (tests, demo) can take Inception's place.
"""

import hashlib
import os

import tensorflow as tf

from sagan_tf.config import INCEPTION_TFHUB

INPUT_TENSOR = "Mul:0"
POOL_TENSOR = "pool_3:0"
LOGITS_TENSOR = "logits:0"
POOL_KEY = "pool_3"
LOGITS_KEY = "logits"

# Where to get a local copy when TF-Hub cannot be reached.
TFHUB_ARCHIVE_URL = INCEPTION_TFHUB + "?tf-hub-format=compressed"
FROZEN_GRAPH_URL = (
    "http://download.tensorflow.org/models/"
    "frozen_inception_v1_2015_12_05.tar.gz"
)
FROZEN_GRAPH_NAME = "inceptionv1_for_inception_score.pb"

_LOADED = {}


class InceptionLoadError(ValueError):
    """The classifier named by --inception_path could not be loaded."""


def resize_like_tf1(images, size):
    """Bilinear resize as TF1's `resize_bilinear` (no half-pixel centres).

    Args:
        images: float32 [B, H, W, C].
        size: output side.

    Returns:
        float32 [B, size, size, C]; source pixel = output pixel * H / size.
    """
    # The op behind tf.compat.v1.image.resize_bilinear, minus its
    # deprecation warning.
    return tf.raw_ops.ResizeBilinear(
        images=images,
        size=[size, size],
        align_corners=False,
        half_pixel_centers=False,
    )


class Classifier:
    """A loaded classifier mapping images in [-1, 1] to (pool_3, logits).

    Attributes:
        path: the --inception_path it came from.
        image_size: side the images are resized to.
        fingerprint: string that changes when the classifier does (keys the
            real-statistics cache).
    """

    def __init__(self, fn, path, image_size, fingerprint):
        self._fn = fn
        self.path = path
        self.image_size = image_size
        self.fingerprint = fingerprint
        self._run = tf.function(self._activations, reduce_retracing=True)

    def _activations(self, images):
        images = resize_like_tf1(tf.cast(images, tf.float32), self.image_size)
        pool, logits = self._fn(images)
        batch = tf.shape(images)[0]
        # The real graph's pool_3 is [B, 1, 1, 2048].
        pool = tf.reshape(tf.cast(pool, tf.float32), [batch, -1])
        logits = tf.reshape(tf.cast(logits, tf.float32), [batch, -1])
        return pool, logits

    def __call__(self, images):
        """Classifier outputs.

        Args:
            images: float [B, H, W, 3] in [-1, 1], any H and W.

        Returns:
            (pool_3 float32 [B, D], logits float32 [B, K]) tensors.
        """
        return self._run(images)


def _is_url(path):
    return path.startswith(("http://", "https://", "gs://"))


def _fingerprint(path):
    """Path plus size and modification time of every file under it."""
    if _is_url(path):
        return path
    digest = hashlib.sha256(os.path.abspath(path).encode())
    if os.path.isdir(path):
        files = []
        for root, _, names in os.walk(path):
            files.extend(os.path.join(root, name) for name in names)
    else:
        files = [path]
    for name in sorted(files):
        stat = os.stat(name)
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path}@{digest.hexdigest()[:16]}"


def _how_to_get_a_local_copy(path):
    return (
        f"Could not load the Inception classifier from --inception_path="
        f"{path!r}. On a machine without network access, supply a local "
        "copy: either\n"
        f"  (a) download the TF-Hub module {TFHUB_ARCHIVE_URL} (a .tar.gz; "
        "tfhub.dev handles are now served by Kaggle Models), extract it "
        "into a directory and pass --inception_path=<that directory>, or\n"
        f"  (b) download {FROZEN_GRAPH_URL}, extract {FROZEN_GRAPH_NAME} and "
        f"pass --inception_path=<path to {FROZEN_GRAPH_NAME}>.\n"
        "TF-Hub modules fetched once are cached in $TFHUB_CACHE_DIR and then "
        "load without network."
    )


def _load_hub_module(path):
    # tensorflow_hub is only needed for handles; import it here so that the
    # GraphDef path works without it.
    import tensorflow_hub as hub

    try:
        module = hub.load(path)
    except Exception as err:  # Network, DNS, cache and format errors alike.
        raise InceptionLoadError(
            f"{_how_to_get_a_local_copy(path)}\nCause: {err!r}"
        ) from err
    if callable(module):
        call = module
    elif "serving_default" in getattr(module, "signatures", {}):
        signature = module.signatures["serving_default"]
        input_name = list(signature.structured_input_signature[1])[0]

        def call(images):
            return signature(**{input_name: images})
    else:
        raise InceptionLoadError(
            f"--inception_path={path!r} is neither callable nor has a "
            "serving_default signature."
        )

    def fn(images):
        outputs = call(images)
        if not isinstance(outputs, dict) or not {POOL_KEY, LOGITS_KEY} <= set(
            outputs
        ):
            found = sorted(outputs) if isinstance(outputs, dict) else outputs
            raise InceptionLoadError(
                f"The module at --inception_path={path!r} must return a dict "
                f"with {POOL_KEY!r} and {LOGITS_KEY!r}; it returned {found}."
            )
        return outputs[POOL_KEY], outputs[LOGITS_KEY]

    # Keep the module alive as long as the function that calls it.
    fn.module = module
    return fn


def _load_graph_def(path, image_size):
    if not tf.io.gfile.exists(path):
        raise InceptionLoadError(
            f"--inception_path={path!r}: no such file.\n"
            f"{_how_to_get_a_local_copy(path)}"
        )
    graph_def = tf.compat.v1.GraphDef()
    with tf.io.gfile.GFile(path, "rb") as f:
        content = f.read()
    try:
        graph_def.ParseFromString(content)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError
        raise InceptionLoadError(
            f"--inception_path={path!r} is not a frozen GraphDef ({err}); "
            "the file may be damaged or of another kind.\n"
            f"{_how_to_get_a_local_copy(path)}"
        ) from None

    def import_graph(images):
        return tf.compat.v1.import_graph_def(
            graph_def,
            input_map={INPUT_TENSOR: images},
            return_elements=[POOL_TENSOR, LOGITS_TENSOR],
            name="inception",
        )

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    try:
        wrapped = tf.compat.v1.wrap_function(import_graph, [spec])
    except Exception as err:  # noqa: BLE001 - any graph that does not fit
        raise InceptionLoadError(
            f"--inception_path={path!r}: the frozen graph must have input "
            f"{INPUT_TENSOR} and outputs {POOL_TENSOR}, {LOGITS_TENSOR} "
            f"({type(err).__name__}: {err}).\n"
            f"{_how_to_get_a_local_copy(path)}"
        ) from None

    def fn(images):
        pool, logits = wrapped(images)
        return pool, logits

    return fn


def load_classifier(path=INCEPTION_TFHUB, image_size=299):
    """Loads (once per process) the classifier named by --inception_path.

    Args:
        path: TF-Hub handle, local module directory, or frozen GraphDef
            `.pb` file.
        image_size: side images are resized to (299 for Inception).

    Returns:
        A `Classifier`.

    Raises:
        InceptionLoadError: it cannot be loaded; the message says how to
            supply a local copy.
    """
    if not path:
        raise InceptionLoadError("--inception_path is empty.")
    key = (path, image_size)
    if key in _LOADED:
        return _LOADED[key]
    if not _is_url(path) and not tf.io.gfile.exists(path):
        raise InceptionLoadError(
            f"--inception_path={path!r} does not exist (no such file or "
            "folder).\n"
            f"{_how_to_get_a_local_copy(path)}"
        )
    if path.endswith(".pb") and not _is_url(path):
        fn = _load_graph_def(path, image_size)
    elif os.path.isdir(path) and not any(
        os.path.exists(os.path.join(path, name))
        for name in ("saved_model.pb", "saved_model.pbtxt")
    ):
        raise InceptionLoadError(
            f"--inception_path={path!r} is a folder without saved_model.pb, "
            "so neither a TF-Hub module nor a SavedModel (an unfinished "
            "download or extraction?).\n"
            f"{_how_to_get_a_local_copy(path)}"
        )
    elif _is_url(path) or os.path.isdir(path):
        fn = _load_hub_module(path)
    else:
        raise InceptionLoadError(
            f"--inception_path={path!r} is a file but not a frozen GraphDef "
            f"(.pb): it must be a TF-Hub handle (URL), a module or "
            f"SavedModel folder, or a .pb file.\n"
            f"{_how_to_get_a_local_copy(path)}"
        )
    classifier = Classifier(fn, path, image_size, _fingerprint(path))
    _LOADED[key] = classifier
    return classifier


class _ClassifierModule(tf.Module):
    """Hub-style module: `__call__(images)` -> {'pool_3', 'logits'}."""

    def __init__(self, classifier_fn):
        super().__init__()
        self.classifier = classifier_fn

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
    )
    def __call__(self, images):
        pool, logits = self.classifier(images)
        return {POOL_KEY: pool, LOGITS_KEY: logits}


def save_classifier_as_savedmodel(classifier_fn, export_dir):
    """Saves a classifier as a module directory --inception_path accepts.

    Args:
        classifier_fn: callable (a Keras model, a tf.Module, a function)
            mapping float32 images [B, S, S, 3] in [-1, 1] to
            (pool [B, D], logits [B, K]). Variables it tracks are saved.
        export_dir: output directory.
    """
    module = _ClassifierModule(classifier_fn)
    tf.saved_model.save(
        module,
        export_dir,
        signatures={"serving_default": module.__call__.get_concrete_function()},
    )


def save_classifier_as_graphdef(classifier_fn, path, image_size=299):
    """Saves a classifier as a frozen GraphDef with Inception's tensor names.

    The graph takes images at `Mul:0` and yields `pool_3:0` and `logits:0`.

    Args:
        classifier_fn: as for `save_classifier_as_savedmodel`.
        path: output `.pb` file.
        image_size: side of the input images.

    Raises:
        ValueError: the tensor names could not be given (the classifier
            already uses them).
    """
    # Freezing variables into constants has no public TF2 API.
    from tensorflow.python.framework import convert_to_constants

    @tf.function
    def graph(images):
        # The released graph's input is the output of a Mul op.
        images = tf.multiply(images, 1.0, name="Mul")
        pool, logits = classifier_fn(images)
        return (
            tf.identity(pool, name="pool_3"),
            tf.identity(logits, name="logits"),
        )

    concrete = graph.get_concrete_function(
        tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    )
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    names = {node.name for node in graph_def.node}
    for tensor in (INPUT_TENSOR, POOL_TENSOR, LOGITS_TENSOR):
        if tensor.split(":")[0] not in names:
            raise ValueError(
                f"Could not name a node {tensor!r} in {path!r}: the "
                "classifier already uses that name."
            )
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(graph_def.SerializeToString())
