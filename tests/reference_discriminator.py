"""An independent float64 reference of the released discriminator.

Written from `../shared/reference/original.md` with plain TF ops (no Keras,
no sagan_tf code), to check the port's D update against: every spectral
norm does one power iteration from a given u, exactly as the released
`ops.spectral_normed_weight`, and nothing is written anywhere. Weights are
plain float64 tensors or variables keyed by the port's variable paths, so
the test can read them off the port and differentiate the reference with
respect to them.
"""

import numpy as np
import tensorflow as tf


def l2n(x):
    return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + 1e-12)


def sn_weight(w, u):
    """Released spectral norm: W / sigma and the one-iteration u'.

    Args:
        w: float64 kernel [..., C_out].
        u: float64 [1, C_out].
    """
    w_mat = tf.reshape(w, [-1, w.shape[-1]])
    v = l2n(tf.matmul(u, w_mat, transpose_b=True))
    u_new = l2n(tf.matmul(v, w_mat))
    sigma = tf.reduce_sum(tf.matmul(v, w_mat) * u_new)
    return w / sigma, u_new


def power_step_numpy(u, w_mat):
    """One released power iteration in float64 numpy."""
    u, w_mat = np.float64(u), np.float64(w_mat)
    v = u @ w_mat.T
    v /= np.sqrt(np.sum(v**2)) + 1e-12
    u = v @ w_mat
    return u / (np.sqrt(np.sum(u**2)) + 1e-12)


def _conv(x, params, us, scope, bias=True):
    w, _ = sn_weight(params[f"{scope}/kernel"], us[f"{scope}/u"])
    y = tf.nn.conv2d(x, w, 1, "SAME")
    return y + params[f"{scope}/bias"] if bias else y


def _pool(x):
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def _attention(x, params, us, scope):
    b, h, w, c = x.shape
    n = h * w

    theta = tf.reshape(
        _conv(x, params, us, f"{scope}/theta", bias=False), [b, n, c // 8]
    )
    phi = tf.nn.max_pool2d(
        _conv(x, params, us, f"{scope}/phi", bias=False), 2, 2, "VALID"
    )
    phi = tf.reshape(phi, [b, n // 4, c // 8])
    beta = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True))
    g = tf.nn.max_pool2d(
        _conv(x, params, us, f"{scope}/g", bias=False), 2, 2, "VALID"
    )
    g = tf.reshape(g, [b, n // 4, c // 2])
    attn = tf.reshape(tf.matmul(beta, g), [b, h, w, c // 2])
    o = _conv(attn, params, us, f"{scope}/o", bias=False)
    return x + params[f"{scope}/gamma"] * o


def discriminator(images, labels, params, us, blocks, attention_after):
    """Released `discriminator_test` logits [B] (float64).

    Args:
        images: float64 [B, S, S, 3]; labels: int [B].
        params: path -> float64 tensor, the trainable weights.
        us: path -> float64 [1, C_out], the u each SN layer starts from.
        blocks: block scopes in order; the first is the optimized block,
            the last keeps the resolution (identity shortcut).
        attention_after: scope of the block followed by attention, or None.
    """
    h = images
    for i, scope in enumerate(blocks):
        if i == 0:  # optimized block
            r = _conv(h, params, us, f"{scope}/sn_conv1")
            r = _pool(_conv(tf.nn.relu(r), params, us, f"{scope}/sn_conv2"))
            h = r + _conv(_pool(h), params, us, f"{scope}/sn_conv3")
        elif i == len(blocks) - 1:  # no downsample, identity shortcut
            r = _conv(tf.nn.relu(h), params, us, f"{scope}/sn_conv1")
            r = _conv(tf.nn.relu(r), params, us, f"{scope}/sn_conv2")
            h = h + r
        else:
            r = _conv(tf.nn.relu(h), params, us, f"{scope}/sn_conv1")
            r = _pool(_conv(tf.nn.relu(r), params, us, f"{scope}/sn_conv2"))
            h = r + _pool(_conv(h, params, us, f"{scope}/sn_conv3"))
        if scope == attention_after:
            h = _attention(h, params, us, "d_non_local")
    h = tf.reduce_sum(tf.nn.relu(h), axis=[1, 2])  # [B, C]
    w, _ = sn_weight(params["d_sn_linear/kernel"], us["d_sn_linear/u"])
    out = tf.matmul(h, w)[:, 0] + params["d_sn_linear/bias"][0]
    # The released embedding normalizes the transposed table [C, classes].
    table_t, _ = sn_weight(
        tf.transpose(params["d_embedding/embeddings"]), us["d_embedding/u"]
    )
    embedded = tf.gather(tf.transpose(table_t), labels)  # [B, C]
    return out + tf.reduce_sum(h * embedded, axis=1)
