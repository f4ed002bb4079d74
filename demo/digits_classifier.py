"""The demo's measuring instrument: a small CNN trained on the digits in
Inception's place (its pool features for FID, KID and the manifold metrics,
its logits for IS), and the share of generated digits it classifies as
the digit they were conditioned on.
"""

import os

NUM_CLASSES = 10


def read_shards(data_dir, image_size):
    """All converted images: float32 [N, S, S, 3] in [-1, 1], int labels."""
    import numpy as np
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, "*.tfrecords")))
    spec = {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    images, labels = [], []
    for batch in tf.data.TFRecordDataset(files).batch(1024):
        example = tf.io.parse_example(batch, spec)
        pixels = tf.io.decode_raw(example["image_raw"], tf.uint8).numpy()
        # [B, S*S*3] -> [B, S, S, 3]
        images.append(pixels.reshape(-1, image_size, image_size, 3))
        labels.append(example["label"].numpy())
    images = np.concatenate(images).astype(np.float32) / 127.5 - 1.0
    return images, np.concatenate(labels).astype(np.int32)


def build_classifier(image_size):
    """A small CNN as a tf.Module: images -> (pool features, logits).

    Images of any size are resized to `image_size` first, so the module
    also works when the evaluator feeds another size.
    """
    import keras
    import tensorflow as tf

    class DigitClassifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.image_size = image_size
            # [B, S, S, 3] -> [B, 128] pool features.
            self.trunk = keras.Sequential([
                keras.Input((image_size, image_size, 3)),
                keras.layers.Conv2D(32, 3, padding="same",
                                    activation="relu"),
                keras.layers.MaxPooling2D(),  # S/2
                keras.layers.Conv2D(64, 3, padding="same",
                                    activation="relu"),
                keras.layers.MaxPooling2D(),  # S/4
                keras.layers.Conv2D(128, 3, padding="same",
                                    activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
            ])
            self.head = keras.Sequential([
                keras.Input((128,)),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(NUM_CLASSES),
            ])

        def __call__(self, images, training=False):
            images = tf.image.resize(
                images, [self.image_size, self.image_size]
            )
            pool = self.trunk(images, training=training)
            return pool, self.head(pool, training=training)

    return DigitClassifier()


def train_classifier(images, labels, image_size, epochs, seed):
    """Trains the stand-in classifier; returns (module, held-out accuracy).

    A fifth of the digits is held out to measure the accuracy of the very
    classifier the evaluation then uses.
    """
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(images))
    held, fit = order[: len(order) // 5], order[len(order) // 5:]
    classifier = build_classifier(image_size)
    model = keras.Sequential([classifier.trunk, classifier.head])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images[fit], labels[fit], batch_size=64, epochs=epochs,
              verbose=0)
    _, accuracy = model.evaluate(images[held], labels[held], verbose=0)
    return classifier, float(accuracy)


def class_accuracy(classifier_dir, samples_path, image_size):
    """Per conditioned class: share of samples the classifier gives that class.

    Returns:
        ({class: accuracy}, overall accuracy, samples per class).
    """
    import numpy as np

    from sagan_tf.evaluation import inception

    classifier = inception.load_classifier(classifier_dir, image_size)
    with np.load(samples_path) as npz:
        images, labels = npz["images"], npz["labels"]
    _, logits = classifier(images.astype(np.float32) / 127.5 - 1.0)
    predicted = np.argmax(logits.numpy(), axis=1)
    per_class, counts = {}, {}
    for c in range(NUM_CLASSES):
        mask = labels == c
        counts[c] = int(mask.sum())
        hits = predicted[mask] == c
        per_class[c] = float(np.mean(hits)) if counts[c] else 0.0
    return per_class, float(np.mean(predicted == labels)), counts
