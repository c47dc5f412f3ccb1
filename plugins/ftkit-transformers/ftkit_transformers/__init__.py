"""Text classification for ftkit: Hugging Face encoders, ftkit's strategies.

A worked example of a plugin that brings a new kind of input to ftkit. It
registers three things, each through its own hook:

1. a model family, ``hf``: ``--model hf:PATH`` (a folder with ``config.json``,
   as ``from_pretrained`` reads it) or ``hf:NAME`` (from the Hugging Face
   cache; nothing is downloaded offline). ``build`` returns an
   ``AutoModelForSequenceClassification`` with random weights, wrapped so that
   it takes one tensor; ``--weights pretrained`` loads the folder's own weights
   through ftkit's loader, whose one-line report says which head tensors (the
   new classifier) start fresh. See ``ftkit_transformers.model``.
2. an anatomy: ``embeddings``, ``layer.0`` ... ``layer.N-1``, then the head
   (``pooler``, ``classifier``), so every strategy works unchanged: ``freeze
   -o train_from=layer.3``, ``llrd`` (embeddings 0, layer i at i + 1, the head
   last, as timm numbers a ViT), ``gradual``, ``discriminative``.
3. a task, ``text-classification``: its ``load_data`` reads a CSV or
   JSON-lines file (or a folder with ``train.*`` and ``val.*``) and tokenises it
   with the model's own tokenizer; its ``collate`` pads each training batch
   to its longest text. Metrics are ftkit's classification ones. See
   ``ftkit_transformers.text``.

It also adds three command-line options through ``ftkit_add_options``:
``--text-column``, ``--label-column`` and ``--max-length``. ftkit shows them in
``ftkit run --help``, reads them from ``FTKIT_TEXT_COLUMN`` ... and config
files, records them in the run's ``config.toml`` and hands their values to
``load_data`` as ``options``.

This module is imported whenever ftkit starts (``ftkit --help`` included), so
it imports neither torch nor transformers: the work happens in the submodules,
imported by the functions below when a command needs them. ``pyproject.toml``
declares it in the ``ftkit`` entry-point group; that is the whole
registration.
"""

from importlib.metadata import PackageNotFoundError, version

import ftkit

try:
    __version__ = version("ftkit-transformers")
except PackageNotFoundError:  # imported from a source tree
    __version__ = "0.0.0"

PREFIX = "hf"


def build(rest, *, num_classes, task):
    from ftkit_transformers.model import build_model

    return build_model(rest, num_classes=num_classes, task=task)


def named_weights(rest, name):
    from ftkit_transformers.model import pretrained_weights

    return pretrained_weights(rest, name)


def preprocessing(rest, name):
    # Text has no image statistics: an empty mean tells ftkit to print the source as
    # the input line ("input: text, tokenised by ...").
    return ftkit.Preprocessing(mean=(), std=(), source=f"text, tokenised by hf:{rest}'s tokenizer")


def convert(state, model):
    from ftkit_transformers.model import to_model_keys

    return to_model_keys(state, model)


def is_text_classifier(model):
    return type(model).__module__ == "ftkit_transformers.model"


def anatomy(model):
    from ftkit_transformers.model import anatomy as build_anatomy

    return build_anatomy(model)


def load_data(spec, *, model, seed, num_classes, options=None):
    from ftkit_transformers.text import load_text

    return load_text(spec, model=model, seed=seed, num_classes=num_classes, options=options)


@ftkit.hookimpl
def ftkit_add_options(register):
    from ftkit_transformers.text import OPTIONS  # stdlib and ftkit only: cheap

    for option in OPTIONS:
        register(option)


@ftkit.hookimpl
def ftkit_register_models(register):
    register(ftkit.ModelFamily(PREFIX, build, named_weights, preprocessing, convert))


@ftkit.hookimpl
def ftkit_register_anatomies(register):
    register(ftkit.AnatomyProvider("hf", is_text_classifier, anatomy, priority=10))


@ftkit.hookimpl
def ftkit_register_tasks(register):
    register(
        ftkit.Task(
            "text-classification",
            "classification",  # labels as the classification task has them: one class each
            "val_accuracy",
            ("val_accuracy", "val_macro_f1", "val_loss"),
            ftkit.classification_metrics,
            "f1_per_class",
            load_data=load_data,
        )
    )
