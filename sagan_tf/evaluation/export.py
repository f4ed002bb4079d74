"""Export of a trained G as a self-contained TF SavedModel.

The SavedModel needs neither this package nor Keras to run:

    model = tf.saved_model.load(export_dir)
    images = model.generate(z, labels)          # float32 [B, S, S, 3]
    # or, through the serving signature:
    images = model.signatures["generate"](z=z, labels=labels)["images"]

with z float32 [B, z_dim] (standard normal) and labels int32 [B]; images
are in [-1, 1]. An unconditional G (num_classes 0) is exported without
labels: `model.generate(z)`, `model.signatures["generate"](z=z)`.
G runs in inference mode (BN moving statistics) with its SN vectors u
frozen, so the SavedModel is stateless: the same inputs always give the
same images (the released evaluator instead advances u on every
batch; see `models.Generator`).
"""

import tensorflow as tf

SIGNATURE = "generate"


class _GeneratorModule(tf.Module):
    """Holds G and its `generate` functions, traced for any batch size."""

    def __init__(self, generator):
        super().__init__(name="sagan_generator")
        self.generator = generator
        self.z_dim = tf.constant(generator.z_dim, tf.int32)
        self.image_size = tf.constant(generator.image_size, tf.int32)
        self.num_classes = tf.constant(generator.num_classes, tf.int32)
        z_spec = tf.TensorSpec([None, generator.z_dim], tf.float32, name="z")
        if generator.num_classes:
            spec = [z_spec, tf.TensorSpec([None], tf.int32, name="labels")]
            generate, signature = self._generate, self._signature
        else:
            spec = [z_spec]
            generate, signature = self._generate_z, self._signature_z
        self.generate = tf.function(generate, input_signature=spec)
        self.generate_signature = tf.function(
            signature, input_signature=spec
        )

    def _generate(self, z, labels):
        # update_sn=False: a SavedModel call must not mutate u.
        images = self.generator(z, labels, training=False, update_sn=False)
        return tf.cast(images, tf.float32)

    def _signature(self, z, labels):
        return {"images": self._generate(z, labels)}

    def _generate_z(self, z):
        return self._generate(z, None)

    def _signature_z(self, z):
        return {"images": self._generate_z(z)}


def export_generator(generator, export_dir):
    """Saves G with the `generate(z, labels) -> images` signature
    (`generate(z)` for an unconditional G).

    Args:
        generator: a built `models.Generator` (restored weights).
        export_dir: output directory.

    Returns:
        export_dir.
    """
    module = _GeneratorModule(generator)
    signature = module.generate_signature.get_concrete_function()
    tf.saved_model.save(
        module,
        export_dir,
        signatures={SIGNATURE: signature, "serving_default": signature},
    )
    print(f"Exported the generator to {export_dir}", flush=True)
    return export_dir
