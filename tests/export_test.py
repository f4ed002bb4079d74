"""The exported SavedModel runs in a process without sagan_tf."""

import os
import subprocess
import sys
import textwrap

import eval_fixtures as fx
import numpy as np
import tensorflow as tf

from sagan_tf import models
from sagan_tf.evaluation import export

MODEL = fx.tiny_model_config()

_LOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    data = np.load(sys.argv[2])
    variables = model.signatures["generate"].variables
    assert variables
    before = [v.numpy() for v in variables]
    images = model.generate(tf.constant(data["z"]), tf.constant(data["y"]))
    signature = model.signatures["generate"]
    via_signature = signature(z=tf.constant(data["z"]),
                              labels=tf.constant(data["y"]))["images"]
    assert not [m for m in sys.modules if m.startswith("sagan_tf")]
    # Stateless: u is frozen in the export (the released G would write it).
    for v, value in zip(variables, before):
        assert np.array_equal(v.numpy(), value), v.name
    np.savez(sys.argv[3], images=images.numpy(),
             signature=via_signature.numpy())
""")


def test_exported_generator_in_a_fresh_process(tmp_path):
    tf.keras.utils.set_random_seed(0)
    generator = models.build_generator(MODEL)
    export_dir = export.export_generator(generator, str(tmp_path / "export"))
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, MODEL.z_dim)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0], np.int32)
    np.savez(tmp_path / "in.npz", z=z, y=y)
    script = tmp_path / "load.py"
    script.write_text(_LOAD)
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, str(script), export_dir, str(tmp_path / "in.npz"),
         str(tmp_path / "out.npz")],
        check=True, cwd=str(tmp_path), env=env, timeout=300,
    )
    with np.load(tmp_path / "out.npz") as out:
        images, via_signature = out["images"], out["signature"]
    s = MODEL.image_size
    assert images.shape == (5, s, s, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 0
    # Two calls in a row agree: the export does not advance u.
    np.testing.assert_array_equal(images, via_signature)
    expected = generator(tf.constant(z), tf.constant(y), training=False)
    np.testing.assert_allclose(images, expected.numpy(), atol=1e-5)
