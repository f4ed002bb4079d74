"""Calls and state of saved Keras models, for the `.keras` round trip in
keras_saving_test.py. Imports only keras and numpy, so that the fresh
process's only project import is `import sagan_tf`."""

import os

import keras
import numpy as np


def weights(model):
    return {w.path: w.numpy() for w in model.weights}


def exercise(name, model, inputs, record):
    """Inference call, training call, then the state: into `record`."""
    def call(training):
        if name == "functional":
            return model(inputs, training=training)
        return model(*inputs, training=training)

    record[f"{name}/inference"] = np.asarray(call(False))
    record[f"{name}/training"] = np.asarray(call(True))
    for path, value in weights(model).items():
        record[f"{name}/after/{path}"] = value


def load_and_exercise(directory):
    """Runs in the fresh process."""
    with np.load(os.path.join(directory, "inputs.npz")) as data:
        inputs = {name: [data[f"{name}/0"], data[f"{name}/1"]]
                  for name in ("functional", "generator", "discriminator")}
    record = {}
    for name, model_inputs in inputs.items():
        model = keras.saving.load_model(
            os.path.join(directory, f"{name}.keras"))
        for path, value in weights(model).items():
            record[f"{name}/loaded/{path}"] = value
        exercise(name, model, model_inputs, record)
    np.savez(os.path.join(directory, "child.npz"), **record)
