"""The bundled training script, run as a real subprocess under the SageMaker container contract."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parent.parent / "training_scripts"
TRAIN = SCRIPTS / "train.py"

# Small, quick settings that still learn digits well enough to check predictions.
QUICK_FLAGS = ("--image-size", "16", "--batch-size", "32", "--learning-rate", "0.01")


def load_script_module(name: str) -> ModuleType:
    """Import a training_scripts module under a private name, leaving sys.path alone."""
    spec = importlib.util.spec_from_file_location(f"training_scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits = load_script_module("make_digits_dataset")
evaluation = load_script_module("evaluation")
metric_lines = load_script_module("metric_lines")


@dataclass
class TrainingRun:
    """A finished train.py process and the folders it wrote to."""

    process: subprocess.CompletedProcess
    model_dir: Path
    output_data_dir: Path
    output_dir: Path

    @property
    def metric_lines(self) -> list[str]:
        return [line for line in self.process.stdout.splitlines() if line.startswith("epoch=")]

    @property
    def failure(self) -> str:
        return (self.output_dir / "failure").read_text(encoding="utf-8")

    def metrics(self) -> dict:
        return json.loads((self.model_dir / "metrics.json").read_text(encoding="utf-8"))


def run_training(workdir: Path, channel: Path, *flags: str, checkpoints: Path | None = None,
                 launcher: tuple[str, ...] = (sys.executable,)) -> TrainingRun:
    """Run train.py on `channel` with SM_* folders under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(None, workdir / "model", workdir / "output" / "data", workdir / "output")
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SM_CHANNEL_TRAINING=str(channel), SM_MODEL_DIR=str(run.model_dir),
               SM_OUTPUT_DATA_DIR=str(run.output_data_dir), SM_OUTPUT_DIR=str(run.output_dir))
    command = [*launcher, str(TRAIN), "--checkpoint-dir", str(checkpoints or workdir / "checkpoints"), *flags]
    run.process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return run


def write_digits(folder: Path, limit: int, layout: str = "csv", binary: bool = False) -> Path:
    digits.write_dataset(folder, digits.digits_samples(limit, None, binary), layout)
    return folder


def assert_succeeded(run: TrainingRun) -> None:
    assert run.process.returncode == 0, run.process.stdout[-2000:] + run.process.stderr[-2000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[TrainingRun, Path]:
    """A model trained on 300 digits in the csv layout, shared by the tests that read one."""
    root = tmp_path_factory.mktemp("trained")
    channel = write_digits(root / "channel", 300)
    run = run_training(root / "run", channel, "--epochs", "5", *QUICK_FLAGS)
    assert_succeeded(run)
    return run, channel


def test_csv_layout_writes_model_metrics_and_history(trained):
    run, _ = trained
    assert len(run.metric_lines) == 5
    assert {"model.pt", "labels.json", "metrics.json"} <= {path.name for path in run.model_dir.iterdir()}
    assert (run.model_dir / "code" / "inference.py").is_file()
    metrics = run.metrics()
    assert metrics["epochs"] == 5 and metrics["samples"] == 300
    assert metrics["val_accuracy"] > 0.8
    history = json.loads((run.output_data_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4, 5]
    labels = json.loads((run.model_dir / "labels.json").read_text())
    assert labels["labels"]["9"] == "9" and labels["channels"] == 1 and labels["image_size"] == 16


def test_metric_definitions_read_every_metric_line(trained):
    run, _ = trained
    definitions = json.loads(subprocess.run([sys.executable, str(TRAIN), "--describe"], capture_output=True,
                                            text=True, check=True).stdout)["metrics"]
    last = run.metric_lines[-1]
    captured = {item["Name"]: float(re.search(item["Regex"], last).group(1)) for item in definitions}
    expected = run.metrics()
    for name in metric_lines.METRIC_NAMES:
        assert captured[name] == pytest.approx(expected[name], abs=1e-4)
    assert captured["epoch"] == 5
    for line in run.process.stdout.splitlines():
        matches_line = re.match(metric_lines.METRIC_LINE_REGEX, line) is not None
        assert matches_line == line.startswith("epoch="), line
        if not line.startswith("epoch="):
            assert all(re.search(item["Regex"], line) is None for item in definitions), line


def test_metric_line_format_writes_nan_and_four_decimals():
    line = metric_lines.format_metric_line(3, 10, {"train_loss": 0.41234, "val_loss": float("inf"),
                                                   "val_accuracy": 0.9, "val_auc": float("nan")})
    assert line == "epoch=3/10 train_loss=0.4123 val_loss=nan val_accuracy=0.9000 val_auc=nan"
    parsed = metric_lines.parse_metric_line(line)
    assert parsed["epoch"] == 3 and parsed["train_loss"] == 0.4123 and np.isnan(parsed["val_auc"])
    # Launchers such as MPI prefix each line; SageMaker's definitions must still read it.
    for definition in metric_lines.METRIC_DEFINITIONS[:2]:
        assert re.search(definition["Regex"], "[1,0]<stdout>:" + line).group(1) in ("3", "0.4123")


def test_class_folder_layout_trains_with_underscore_flags(tmp_path):
    channel = write_digits(tmp_path / "channel", 200, layout="folders")
    run = run_training(tmp_path, channel, "--epochs", "1", "--image_size", "16", "--batch_size", "32")
    assert_succeeded(run)
    assert run.metrics()["samples"] == 200
    assert len(json.loads((run.model_dir / "labels.json").read_text())["labels"]) == 10


def test_one_colour_image_makes_the_model_rgb(tmp_path):
    channel = tmp_path / "channel"
    random = np.random.default_rng(0)
    for label, mode in (("dark", "L"), ("light", "L"), ("light", "RGBA")):
        (channel / label).mkdir(parents=True, exist_ok=True)
        for number in range(6):
            base = 60 if label == "dark" else 190
            pixels = random.integers(base - 40, base + 40, size=(12, 10, 4), dtype=np.uint8)
            image = Image.fromarray(pixels).convert(mode)
            image.save(channel / label / f"{mode}-{number}.png")
    run = run_training(tmp_path / "run", channel, "--epochs", "1", *QUICK_FLAGS)
    assert_succeeded(run)
    assert json.loads((run.model_dir / "labels.json").read_text())["channels"] == 3


def test_tar_archive_in_channel_is_unpacked_outside_the_channel(tmp_path):
    dataset = write_digits(tmp_path / "dataset", 200)
    channel = tmp_path / "channel"
    channel.mkdir()
    with tarfile.open(channel / "dataset.tar", "w") as archive:
        for path in sorted(dataset.rglob("*")):
            archive.add(path, arcname=path.relative_to(dataset).as_posix(), recursive=False)
    run = run_training(tmp_path / "run", channel, "--epochs", "1", *QUICK_FLAGS)
    assert_succeeded(run)
    assert run.metrics()["samples"] == 200
    assert [path.name for path in channel.iterdir()] == ["dataset.tar"]


def test_binary_dataset_reports_auc_on_every_metric_line(tmp_path):
    channel = write_digits(tmp_path / "channel", 200, binary=True)
    run = run_training(tmp_path / "run", channel, "--epochs", "2", *QUICK_FLAGS)
    assert_succeeded(run)
    for line in run.metric_lines:
        assert metric_lines.parse_metric_line(line)["val_auc"] >= 0.5
    assert 0.5 <= run.metrics()["val_auc"] <= 1.0


def test_roc_auc_matches_sklearn_with_ties():
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    random = np.random.default_rng(7)
    targets = random.integers(0, 2, size=300)
    scores = np.round(random.random(300) + 0.3 * targets, 1)  # rounding creates many ties
    assert evaluation.roc_auc(scores, targets == 1) == pytest.approx(roc_auc_score(targets, scores))
    probabilities = random.dirichlet(np.ones(4), size=300)
    classes = random.integers(0, 4, size=300)
    assert evaluation.classification_auc(probabilities, classes) == pytest.approx(
        roc_auc_score(classes, probabilities, multi_class="ovr", average="macro"))
    assert np.isnan(evaluation.roc_auc(scores, np.zeros(300, dtype=bool)))


def test_resumed_run_continues_at_next_epoch_and_matches_an_uninterrupted_run(tmp_path):
    channel = write_digits(tmp_path / "channel", 200)
    checkpoints = tmp_path / "checkpoints"
    first = run_training(tmp_path / "first", channel, "--epochs", "2", *QUICK_FLAGS, checkpoints=checkpoints)
    resumed = run_training(tmp_path / "resumed", channel, "--epochs", "3", *QUICK_FLAGS, checkpoints=checkpoints)
    straight = run_training(tmp_path / "straight", channel, "--epochs", "3", *QUICK_FLAGS)
    for run in (first, resumed, straight):
        assert_succeeded(run)
    assert [line.split()[0] for line in resumed.metric_lines] == ["epoch=3/3"]
    assert resumed.metric_lines == straight.metric_lines[-1:]
    assert resumed.metrics() == straight.metrics()


def test_sigterm_stops_between_batches_keeping_the_last_epochs_checkpoint_to_resume_from(tmp_path):
    # SageMaker sends SIGTERM before a spot interruption (and on a stop); so does the executor at its shutdown.
    channel = write_digits(tmp_path / "channel", 400)
    checkpoints = tmp_path / "checkpoints"
    workdir = tmp_path / "stopped"
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SM_CHANNEL_TRAINING=str(channel), SM_MODEL_DIR=str(workdir / "model"),
               SM_OUTPUT_DATA_DIR=str(workdir / "output" / "data"), SM_OUTPUT_DIR=str(workdir / "output"))
    process = subprocess.Popen([sys.executable, str(TRAIN), "--checkpoint-dir", str(checkpoints), "--epochs", "500",
                                *QUICK_FLAGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith("epoch=2/"):
            break
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    assert process.wait(timeout=30) == 143
    assert time.monotonic() - signalled < 5
    last_epoch = max(int(line.split("/")[0].split("=")[1]) for line in printed + rest.splitlines(True)
                     if line.startswith("epoch="))
    assert f"stopped by SIGTERM during epoch {last_epoch + 1}: the checkpoint after epoch {last_epoch} is kept" in rest
    assert not (workdir / "output" / "failure").exists()  # a stop is not a failure
    # The model as the last finished epoch left it is exported: what a stopped job (or trial) keeps.
    assert (workdir / "model" / "model.pt").exists()
    assert json.loads((workdir / "model" / "metrics.json").read_text())["epochs"] == last_epoch

    resumed = run_training(tmp_path / "resumed", channel, "--epochs", str(last_epoch + 1), *QUICK_FLAGS,
                           checkpoints=checkpoints)
    assert_succeeded(resumed)
    assert [line.split()[0] for line in resumed.metric_lines] == [f"epoch={last_epoch + 1}/{last_epoch + 1}"]


def test_torchrun_with_two_processes_trains_and_only_rank_0_reports(tmp_path):
    channel = write_digits(tmp_path / "channel", 200)
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    run = run_training(tmp_path / "run", channel, "--epochs", "2", *QUICK_FLAGS, launcher=torchrun)
    assert_succeeded(run)
    assert [line.split()[0] for line in run.metric_lines] == ["epoch=1/2", "epoch=2/2"]
    assert "2 process(es)" in run.process.stdout
    assert run.metrics()["train_samples"] + run.metrics()["val_samples"] == 200


def write_single_class(channel: Path) -> None:
    for number in range(3):
        (channel / "cats").mkdir(exist_ok=True)
        Image.new("L", (8, 8), number * 40).save(channel / "cats" / f"{number}.png")


def write_missing_files(channel: Path) -> None:
    (channel / "metadata.csv").write_text("filename,label\nnowhere/a.png,a\nnowhere/b.png,b\n")


def write_unsafe_zip(channel: Path) -> None:
    with zipfile.ZipFile(channel / "data.zip", "w") as archive:
        archive.writestr("../escaped.png", b"not really")


@pytest.mark.parametrize("make_bad_dataset, reason", [
    (lambda channel: (channel / "notes.txt").write_text("no images here"), "no images"),
    (lambda channel: (channel / "metadata.csv").write_text("file,class\na.png,x\n"), "columns filename,label"),
    (write_single_class, "at least two classes"),
    (write_missing_files, "none of the 2 file(s)"),
    (write_unsafe_zip, "unsafe member"),
], ids=["no-images", "no-label-column", "single-class", "all-files-missing", "unsafe-zip"])
def test_bad_dataset_fails_with_a_one_line_failure_file(tmp_path, make_bad_dataset, reason):
    channel = tmp_path / "channel"
    channel.mkdir()
    make_bad_dataset(channel)
    run = run_training(tmp_path / "run", channel)
    assert run.process.returncode == 1
    assert reason in run.failure and run.failure.count("\n") == 1


@pytest.mark.parametrize("flags, flag", [
    (("--epochz", "3"), "--epochz"),
    (("--epochs", "0"), "--epochs"),
    (("--val-split", "0.9"), "--val-split"),
    (("--amp", "maybe"), "--amp"),
], ids=["unknown", "below-minimum", "above-maximum", "not-a-bool"])
def test_bad_hyperparameter_exits_2_naming_the_flag(tmp_path, flags, flag):
    run = run_training(tmp_path, tmp_path / "unused", *flags)
    assert run.process.returncode == 2
    assert flag in run.process.stderr and flag in run.failure


def test_describe_prints_the_hyperparameter_table_and_metric_definitions():
    process = subprocess.run([sys.executable, str(TRAIN), "--describe"], capture_output=True, text=True, check=True)
    description = json.loads(process.stdout)
    assert set(description) == {"hyperparameters", "metrics"}
    hyperparameters = description["hyperparameters"]
    required = {"epochs", "batch-size", "learning-rate", "image-size", "val-split", "seed", "metadata-file",
                "checkpoint-dir"}
    assert required <= set(hyperparameters)
    python_types = {"int": int, "float": (int, float), "str": str, "bool": bool}
    for name, spec in hyperparameters.items():
        assert spec["type"] in python_types, name
        assert isinstance(spec["default"], python_types[spec["type"]]) and spec["help"], name
        if "minimum" in spec:
            assert spec["minimum"] <= spec["default"] <= spec["maximum"], name
    assert hyperparameters["epochs"]["minimum"] == 1
    assert hyperparameters["metadata-file"] == {"type": "str", "default": "metadata.csv",
                                                "help": hyperparameters["metadata-file"]["help"]}
    assert hyperparameters["amp"]["type"] == "bool"
    names = [item["Name"] for item in description["metrics"]]
    assert names == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_auc"]
    assert all(1 <= len(item["Regex"]) <= 500 for item in description["metrics"])


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    channel = write_digits(tmp_path / "channel", 200)
    (channel / "images" / "digit_00007.png").write_bytes(b"\x89PNG truncated garbage")
    run = run_training(tmp_path / "run", channel, "--epochs", "1", *QUICK_FLAGS)
    assert_succeeded(run)
    assert "skipped 1 unreadable image(s): images/digit_00007.png" in run.process.stdout
    assert run.metrics()["skipped_images"] == 1 and run.metrics()["samples"] == 199


@pytest.fixture
def inference(trained, monkeypatch) -> ModuleType:
    """inference.py imported from the model's code/ folder, as the inference container does."""
    run, _ = trained
    monkeypatch.syspath_prepend(str(run.model_dir / "code"))
    for name in ("inference", "preprocessing"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import inference as module
    yield module
    for name in ("inference", "preprocessing"):
        sys.modules.pop(name, None)


def test_inference_round_trip_predicts_training_digits(trained, inference):
    run, channel = trained
    model = inference.model_fn(str(run.model_dir))
    rows = [line.split(",") for line in (channel / "metadata.csv").read_text().splitlines()[1:41]]
    arrays = [np.asarray(Image.open(channel / name)).tolist() for name, _ in rows]
    body = json.dumps({"instances": arrays})
    answer = json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(body, "application/json"), model),
                                            "application/json"))
    predictions = answer["predictions"]
    assert len(predictions) == 40
    assert all(set(item["probabilities"]) == {str(digit) for digit in range(10)} for item in predictions)
    assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    correct = sum(item["label"] == label for item, (_, label) in zip(predictions, rows))
    assert correct / len(rows) >= 0.9

    png = base64.b64encode((channel / rows[0][0]).read_bytes()).decode()
    from_base64 = inference.predict_fn(inference.input_fn(json.dumps({"image": png}), "application/json"), model)
    assert from_base64[0]["probabilities"] == pytest.approx(predictions[0]["probabilities"])
    raw = inference.predict_fn(inference.input_fn((channel / rows[0][0]).read_bytes(), "image/png"), model)
    assert raw[0]["label"] == predictions[0]["label"]


# On SageMaker the inference toolkit answers a BaseInferenceToolkitError with its status_code and any
# other exception with a 500 (sagemaker-inference-toolkit, src/sagemaker_inference/transformer.py);
# the local model worker catches ValueError, so each refusal is both.
@pytest.mark.parametrize("body, content_type, message, status", [
    ("[]", "application/json", "no images", 400),
    ('{"instances": [[[1, 2], [3]]]}', "application/json", "ragged", 400),
    ('{"instances": [[[{"r": 1}]]]}', "application/json", "other than numbers", 400),
    ('{"instances": [[[300]]]}', "application/json", "outside 0..255", 400),
    ('{"instances": ["!!"]}', "application/json", "not valid base64", 400),
    (b"\xff{", "application/json", "not valid JSON", 400),
    (b"GIF89a", "image/png", "not a readable", 400),
    ("{}", "text/csv", "unsupported content type", 415),
])
def test_inference_refuses_bad_input_with_the_status_the_toolkit_answers(inference, body, content_type, message,
                                                                          status):
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        inference.input_fn(body, content_type)
    assert refused.value.status_code == status and refused.value.message == str(refused.value)


def test_inference_refuses_an_answer_type_it_cannot_write_with_406(inference):
    with pytest.raises(ValueError, match="unsupported accept type") as refused:
        inference.output_fn([{"label": "7", "probabilities": {"7": 1.0}}], "text/csv")
    assert refused.value.status_code == 406 and refused.value.phrase == str(refused.value)
    assert json.loads(inference.output_fn([], "*/*")) == {"predictions": []}


@pytest.fixture
def script_import(monkeypatch):
    """Import training_scripts modules by their own names, as train.py does; forget them afterwards."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    before = set(sys.modules)
    yield importlib.import_module
    for name, module in list(sys.modules.items()):
        if name not in before and Path(getattr(module, "__file__", None) or "/").parent == SCRIPTS:
            del sys.modules[name]


def write_mixed_images(folder: Path, count: int) -> list[Path]:
    """Write `count` small images of every kind the decoder meets, a truncated and a garbage file among them."""
    random = np.random.default_rng(3)
    modes = ("L", "LA", "RGB", "RGBA", "P", "I;16", "1")
    folder.mkdir(parents=True)
    paths = []
    for number in range(count):
        mode = modes[number % len(modes)]
        height, width = (int(side) for side in random.integers(6, 30, size=2))
        if mode == "I;16":
            image = Image.fromarray(random.integers(0, 65536, size=(height, width)).astype(np.uint16))
        else:
            image = Image.fromarray(random.integers(0, 256, size=(height, width, 4), dtype=np.uint8)).convert(mode)
        path = folder / f"{number:04d}.png"
        image.save(path)
        paths.append(path)
    # A colour header over corrupt pixels still makes the dataset RGB, as it did when headers were read apart.
    Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "truncated.png")
    (folder / "truncated.png").write_bytes((folder / "truncated.png").read_bytes()[:60])
    (folder / "garbage.png").write_bytes(b"\x89PNG not an image")
    return [paths[0], folder / "truncated.png", *paths[1:], folder / "garbage.png"]


def test_parallel_decoding_is_bit_identical_to_decoding_each_file_alone(tmp_path, script_import):
    decoding = script_import("decoding")
    preprocessing = script_import("preprocessing")
    paths = write_mixed_images(tmp_path / "images", 2 * decoding.MIN_IMAGES_PER_PROCESS)
    parallel = decoding.decode_images(paths, 12, processes=2)
    serial = decoding.decode_images(paths, 12, processes=1)
    assert parallel.processes == 2 and serial.processes == 1
    assert parallel.channels == 3
    assert parallel.readable.tolist() == serial.readable.tolist() == [True, False] + [True] * (len(paths) - 3) + [False]
    expected = []
    for path in paths[:1] + paths[2:-1]:
        with Image.open(path) as image:
            expected.append(preprocessing.image_to_array(image, 12, 3))
    assert np.array_equal(parallel.images, np.stack(expected))
    assert np.array_equal(serial.images, parallel.images)
    grey_beside_corrupt_colour = decoding.decode_images(paths[:2], 12, processes=1)
    assert grey_beside_corrupt_colour.channels == 3 and grey_beside_corrupt_colour.readable.tolist() == [True, False]


def test_decoding_runs_the_overlapped_work_once_and_keeps_grey_datasets_grey(tmp_path, script_import):
    decoding = script_import("decoding")
    paths = write_digits(tmp_path / "digits", 600)
    files = sorted((paths / "images").iterdir())
    calls = []
    decoded = decoding.decode_images(files, 8, processes=2, while_decoding=lambda: calls.append("ran"))
    assert calls == ["ran"]
    assert decoded.channels == 1 and decoded.images.shape == (600, 1, 8, 8) and decoded.readable.all()


@pytest.mark.parametrize("environment, processes", [
    ({"SM_NUM_CPUS": "8"}, 8),
    ({"SM_NUM_CPUS": "8", "LOCAL_WORLD_SIZE": "4"}, 2),
    ({"SM_NUM_CPUS": "2", "LOCAL_WORLD_SIZE": "4"}, 1),
])
def test_each_rank_uses_its_share_of_the_jobs_cores(monkeypatch, script_import, environment, processes):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert script_import("cores").rank_cores() == processes


def test_resident_batches_are_the_loaders_batches_bit_for_bit_on_every_rank(script_import):
    torch = pytest.importorskip("torch")
    batches = script_import("batches")
    random = np.random.default_rng(5)
    images = torch.from_numpy(random.integers(0, 256, size=(103, 1, 6, 6), dtype=np.uint8))
    targets = torch.from_numpy(random.integers(0, 10, size=103))
    cpu = torch.device("cpu")
    seen = []
    for rank in (0, 1):
        resident = batches.training_batches(images, targets, 16, batches.AUTO_WORKERS, 7, rank, 2, cpu, images.nbytes)
        loader = batches.training_batches(images, targets, 16, 0, 7, rank, 2, cpu, images.nbytes)
        assert resident.resident and not loader.resident
        for epoch in (1, 2):
            resident.set_epoch(epoch)
            loader.set_epoch(epoch)
            pairs = list(zip(resident, loader, strict=True))
            assert len(pairs) == 4  # 52 of the 103 images on each rank (padded), batches of 16
            for (resident_images, resident_targets), (loader_images, loader_targets) in pairs:
                assert torch.equal(resident_images, loader_images) and torch.equal(resident_targets, loader_targets)
            seen.append(torch.cat([resident_batch for (resident_batch, _), _ in pairs]))
    # Epochs shuffle differently; the two ranks' shards of an epoch cover every image.
    assert not torch.equal(seen[0], seen[1])
    covered = {bytes(image.numpy()) for image in torch.cat([seen[0], seen[2]])}
    assert covered == {bytes(image.numpy()) for image in images}


@pytest.mark.parametrize("capability, dtype", [((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16"),
                                               ((9, 0), "bfloat16")], ids=["V100", "T4", "A100", "H100"])
def test_bf16_only_from_compute_capability_8(script_import, capability, dtype):
    torch = pytest.importorskip("torch")
    assert script_import("trainer").autocast_dtype(capability) == getattr(torch, dtype)


def test_torch_threads_honour_an_explicit_omp_setting(monkeypatch, script_import):
    monkeypatch.setenv("SM_NUM_CPUS", "8")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = script_import("cores")
    assert cores.torch_threads() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cores.torch_threads() == 3


def test_the_resident_feed_and_the_dataloader_train_the_same_model(tmp_path):
    channel = write_digits(tmp_path / "channel", 200)
    resident = run_training(tmp_path / "resident", channel, "--epochs", "2", *QUICK_FLAGS)
    loader = run_training(tmp_path / "loader", channel, "--epochs", "2", "--num-workers", "0", *QUICK_FLAGS)
    for run in (resident, loader):
        assert_succeeded(run)
    assert "training images resident on cpu" in resident.process.stdout
    assert "DataLoader with 0 worker process(es)" in loader.process.stdout
    assert resident.metric_lines == loader.metric_lines and resident.metrics() == loader.metrics()
