"""psp-eval: mIoU / mAcc / allAcc of a checkpoint or an exported model on context-scenes, VOC, ADE20K,
Cityscapes (as downloaded) or a list file, with the authors' evaluation protocol."""
from __future__ import annotations

from pathlib import Path

import click

from pspcore.cli import (SIZE, Command, ListOf, backend_flag_options, backend_option, dataset_options, device_option,
                         echo_summary, json_destination, json_option, max_images_option)
from pspcore.errors import InputError, notice
from pspcore.files import check_folder, check_writable
from pspnet.data import dataset_names

CONTEXT_SCENES = "context-scenes"


def dataset_choices() -> tuple[str, ...]:
    """context-scenes and the named datasets."""
    return (CONTEXT_SCENES, *dataset_names())


def load_runner(model_path: str, backend: str, device: str, **options):
    """A ready Runner for MODEL on `backend` (auto: torch for checkpoints, else by file type) and `device`;
    `options` (the backend flags: --threads, --precision, ...) are refused by a backend that does not take them.
    pspnet does not import the runtime: backends come from the registry by name."""
    from pspcore.cli import runner_options
    from pspcore.registry import create_runner, resolve_backend

    name, _ = resolve_backend(backend, model_path)
    runner = create_runner(name, model_path, **runner_options(name, model_path, device=device, **options))
    runner.activate()
    for note in runner.notes:
        notice(note)
    return runner


def default_mode(dataset: str | None, runner) -> str:
    """whole, except for a fixed-size model that outputs logits on real images (anything but context-scenes,
    which is drawn at the model's size): windows of its input size then, as semseg's test.py evaluates."""
    fixed = runner.input_spec.size is not None
    return "slide" if fixed and runner.info.output == "logits" and dataset not in (None, CONTEXT_SCENES) else "whole"


def checked_predict(runner, mode: str):
    """runner.infer, but an input the model cannot take says which option fixes it."""
    def predict(batch):
        problem = runner.input_spec.size_problem(tuple(batch.shape[2:]))
        if problem:
            size = runner.input_spec.size
            fix = ("pass --mode slide (windows of its input size)" if mode == "whole" and size else
                   f"pass --crop {size[0]}x{size[1]} (its input size)" if size else
                   "pass --crop HxW within that range")
            raise InputError(f"{runner.display_name} {problem}: {fix}")
        return runner.infer(batch)

    return predict


def build_data(dataset: str | None, info, split: str, scenes: int | None, scene_size: tuple | None, seed: int,
               data_root: str | None):
    from pspnet.data.context_scenes import DEFAULT_SIZE, ContextScenes
    from pspnet.data.datasets import DATASETS, open_source

    dataset = dataset or ("context-scenes" if info.dataset == "context-scenes" else None)
    if dataset is None:
        raise InputError(f"the model was not trained on context-scenes ({info.dataset or 'dataset unknown'}); "
                         f"give --dataset {'|'.join(DATASETS)} --data-root ROOT, or --dataset LIST_FILE")
    if dataset != "context-scenes":
        return open_source(dataset, data_root, split)
    size = scene_size or info.input_size or DEFAULT_SIZE
    return ContextScenes(split, scenes, size, seed)


def protocol_sizes(dataset: str | None, mode: str, crop: tuple | None, base_size: int | None, runner) -> tuple:
    """(window crop, base size) in effect. The crop (slide mode only) follows pspcore.geometry's input-size
    rule with --crop as the requested size and, for a named dataset, the reference's crop as the default
    (semseg: 473 VOC/ADE20K, 713 Cityscapes); base size: the option, else the reference's (512, 512, 2048).
    Base size 0, and list files or context-scenes by default, predict images at their own size."""
    from pspcore.geometry import runner_input_size
    from pspnet.data.datasets import DATASETS

    spec = DATASETS.get(dataset or "")
    if mode == "slide":
        reference = (spec.crop_size, spec.crop_size) if spec else None
        crop = runner_input_size(runner, crop, default=reference, option="--crop")
    if base_size is None:
        return crop, spec.base_size if spec else None
    return crop, base_size or None


@click.command(cls=Command)
@click.argument("model", type=click.Path(dir_okay=False))
@dataset_options(dataset_choices, files=True,
                 dataset_help="context-scenes, voc, ade20k, cityscapes (read as downloaded, from --data-root) or a "
                              "list file of 'image label' lines (default: context-scenes when the model was trained "
                              "on it).",
                 data_root_help="The named dataset's folder (VOC2012, ADEChallengeData2016, the Cityscapes root); "
                                "list paths are relative to this.",
                 split_help="Split of a named dataset, or of context-scenes (train, val, test).")
@click.option("--scenes", type=int, help="context-scenes images (default: 200 for val).")
@click.option("--scene-size", type=SIZE, help="context-scenes image size N or HxW (default: the model's input size).")
@click.option("--seed", default=0, show_default=True, help="context-scenes seed.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default=None,
              help="Whole image, or sliding windows of --crop with stride ceil(2/3 crop) [default: slide for a "
                   "fixed-size model (logits) on real images, in windows of its input size; else whole].")
@click.option("--crop", type=SIZE, help="Sliding-window size (default: the model's input size, else the "
              "dataset's reference crop).")
@click.option("--base-size", type=click.IntRange(min=0), help="Resize each image so its long side is BASE x "
              "scale before predicting, as semseg's test.py [default: 512 voc/ade20k, 2048 cityscapes; off "
              "(0) for list files and context-scenes].")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--scales", type=ListOf(click.FloatRange(min=0, min_open=True), metavar="S[,S...]"), default="1",
              show_default=True, help="Multi-scale, e.g. 0.5,0.75,1,1.25,1.5,1.75 (probabilities summed).")
@backend_option("torch (auto for .pth) or a runtime backend (auto: by file type).")
@device_option()
@backend_flag_options()
@max_images_option("--limit")
@click.option("--save-png", type=click.Path(file_okay=False), help="Write colour predictions here.")
@json_option("Write the result as JSON")
def main(model, dataset, data_root, split, scenes, scene_size, seed, mode, crop, base_size, flip, scales, backend,
         device, max_images, save_png, json_path, **backend_flags):
    """Evaluate MODEL (.pth checkpoint, .onnx, TensorRT engine) with dataset-level mIoU, mAcc, allAcc.

    \b
    psp-eval runs/psp/model.pth                      (context-scenes val, whole image)
    psp-eval runs/psp/model.pth --mode slide --flip --json result.json
    psp-eval model.onnx --dataset voc --data-root VOC2012 --json -   (fixed size: windows of its size)
    psp-eval model.pth --dataset ade20k --data-root ADEChallengeData2016 --mode slide   (semseg's protocol)
    psp-eval model.onnx --backend onnxruntime --dataset val.txt --data-root data/ --save-png preds/
    """
    from pspcore.files import atomic_output
    from pspnet.evaluate import EvalMode, evaluate

    if not Path(model).is_file():
        raise InputError(f"model not found: {model}")
    if save_png:
        check_folder(save_png, "--save-png folder")
    if json_path not in (None, "-"):
        check_writable(json_path)
    runner = load_runner(model, backend, device, **backend_flags)
    info = runner.info
    mode = mode or default_mode(dataset or info.dataset, runner)
    crop, base_size = protocol_sizes(dataset, mode, crop, base_size, runner)
    eval_mode = EvalMode(mode, crop, flip, scales, base_size)
    if info.output == "labels" and not eval_mode.is_plain:
        raise InputError("this model outputs labels, not logits: only whole-image mode without --flip, "
                         "--scales or --base-size applies (named datasets: add --base-size 0; a fixed-size model "
                         "on images of other sizes: export it with --emit logits)")
    predict = checked_predict(runner, eval_mode.mode)
    data = build_data(dataset, info, split, scenes, scene_size, seed, data_root)
    result = evaluate(predict, data, info.num_classes, mode=eval_mode, class_names=info.class_names,
                      mean=info.mean, std=info.std, save_png=save_png, palette=info.palette, limit=max_images)
    echo_summary(result.table(), json_path)
    if json_path:
        with json_destination(json_path) as path, atomic_output(path, suffix=".json") as tmp:
            tmp.write_text(result.to_json() + "\n")


if __name__ == "__main__":
    main()
