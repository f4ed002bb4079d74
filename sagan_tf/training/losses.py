"""GAN losses of the released code (`model.py`), per example.

Every function returns PER-EXAMPLE losses [B] so that the training step can
average them over the global batch with `tf.nn.compute_average_loss`; the
mean over a single replica's batch equals the released
`tf.reduce_mean(...)`.
"""

import collections

import tensorflow as tf

LossFunctions = collections.namedtuple(
    "LossFunctions", ["discriminator", "generator"]
)


def d_hinge_loss(real_logits, fake_logits):
    """Hinge loss of D: relu(1 - D(x)) and relu(1 + D(G(z))).

    Args:
        real_logits: float [B], D on real images.
        fake_logits: float [B], D on generated images.

    Returns:
        (loss_real [B], loss_fake [B]).
    """
    return tf.nn.relu(1.0 - real_logits), tf.nn.relu(1.0 + fake_logits)


def g_hinge_loss(fake_logits):
    """Hinge loss of G: -D(G(z)), per example [B]."""
    return -fake_logits


def d_kl_loss(real_logits, fake_logits):
    """Released `kl_loss` of D: softplus(-D(x)) and softplus(D(G(z))).

    Args:
        real_logits: float [B].
        fake_logits: float [B].

    Returns:
        (loss_real [B], loss_fake [B]).
    """
    return tf.nn.softplus(-real_logits), tf.nn.softplus(fake_logits)


def g_kl_loss(fake_logits):
    """Released `kl_loss` of G: -D(G(z)) (the same as hinge), per example."""
    return -fake_logits


_LOSSES = {
    "hinge_loss": LossFunctions(d_hinge_loss, g_hinge_loss),
    "kl_loss": LossFunctions(d_kl_loss, g_kl_loss),
}


def get_losses(loss_type):
    """Maps the released --loss_type value to its loss functions.

    Args:
        loss_type: "hinge_loss" or "kl_loss".

    Returns:
        LossFunctions(discriminator, generator); it unpacks as a pair.

    Raises:
        ValueError: for any other loss_type.
    """
    if loss_type not in _LOSSES:
        raise ValueError(
            f"loss_type must be one of {sorted(_LOSSES)}, got {loss_type!r}"
        )
    return _LOSSES[loss_type]
