"""psp-eval: mIoU / mAcc / allAcc of a checkpoint or an exported model on context-scenes, VOC, ADE20K,
Cityscapes (as downloaded) or a list file, with the authors' evaluation protocol."""
from __future__ import annotations

from pathlib import Path

import click

from pspcore.cli import SIZE, Command
from pspcore.errors import InputError
from pspcore.files import check_folder

def _floats(ctx, param, value):
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers (e.g. 0.75,1,1.25), got {value!r}") from None


def load_runner(model_path: str, backend: str | None, device: str, precision: str | None = None,
                cuda_graphs: bool = False):
    """A ready Runner for MODEL: torch for checkpoints (on `device`), else the backend asked for (auto: by
    file type). pspnet does not import the runtime: backends come from the registry by name."""
    from pspcore.registry import create_runner, resolve_backend

    name, _ = resolve_backend(backend or "auto", model_path)
    torch_options = {"device": device, "precision": precision, "cuda_graphs": cuda_graphs or None}
    runner = create_runner(name, model_path, **(torch_options if name == "torch" else {}))
    runner.activate()
    for note in runner.notes:
        click.echo(f"notice: {note}", err=True)
    return runner


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


def protocol_sizes(dataset: str | None, crop: tuple | None, base_size: int | None, info) -> tuple:
    """(window crop, base size) in effect: the options, else the model's input size and, for a named dataset,
    the reference's (semseg: crop 473 VOC/ADE20K, 713 Cityscapes; base size 512, 512, 2048). Base size 0, and
    list files or context-scenes by default, predict images at their own size."""
    from pspnet.data.datasets import DATASETS

    spec = DATASETS.get(dataset or "")
    crop = crop or info.input_size or ((spec.crop_size, spec.crop_size) if spec else None)
    if base_size is None:
        return crop, spec.base_size if spec else None
    return crop, base_size or None


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--dataset", help="'context-scenes', voc, ade20k, cityscapes (read as downloaded, from --data-root) "
              "or a list file of 'image label' lines (default: context-scenes when the model was trained on it).")
@click.option("--data-root", type=click.Path(file_okay=False), help="The named dataset's folder (VOC2012, "
              "ADEChallengeData2016, the Cityscapes root); list paths are relative to this.")
@click.option("--split", default="val", show_default=True, help="Split of a named dataset, or of context-scenes "
              "(train, val, test).")
@click.option("--scenes", type=int, help="context-scenes images (default: 200 for val).")
@click.option("--scene-size", type=SIZE, help="context-scenes image size N or HxW (default: the model's input size).")
@click.option("--seed", default=0, show_default=True, help="context-scenes seed.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default="whole", show_default=True,
              help="Whole image, or sliding windows of --crop with stride ceil(2/3 crop).")
@click.option("--crop", type=SIZE, help="Sliding-window size (default: the model's input size, else the "
              "dataset's reference crop).")
@click.option("--base-size", type=click.IntRange(min=0), help="Resize each image so its long side is BASE x "
              "scale before predicting, as semseg's test.py [default: 512 voc/ade20k, 2048 cityscapes; off "
              "(0) for list files and context-scenes].")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--scales", callback=_floats, default="1", show_default=True,
              help="Multi-scale, e.g. 0.5,0.75,1,1.25,1.5,1.75 (probabilities summed).")
@click.option("--backend", help="torch (default for .pth) or a runtime backend: onnxruntime, tensorrt, "
              "auto, ... (default for .onnx/.engine: auto).")
@click.option("--device", default="auto", show_default=True, help="torch backend: auto, cpu, cuda.")
@click.option("--precision", type=click.Choice(["fp16", "bf16"]), default=None,
              help="torch backend: autocast precision [default: fp32].")
@click.option("--cuda-graphs", is_flag=True, help="torch backend: replay the forward as a CUDA graph.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option("--save-png", type=click.Path(file_okay=False), help="Write colour predictions here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def main(model, dataset, data_root, split, scenes, scene_size, seed, mode, crop, base_size, flip, scales, backend,
         device, precision, cuda_graphs, limit, save_png, as_json):
    """Evaluate MODEL (.pth checkpoint, .onnx, TensorRT engine) with dataset-level mIoU, mAcc, allAcc.

    \b
    psp-eval runs/psp/model.pth                      (context-scenes val, whole image)
    psp-eval runs/psp/model.pth --mode slide --flip --json
    psp-eval model.pth --dataset ade20k --data-root ADEChallengeData2016 --mode slide   (semseg's protocol)
    psp-eval model.onnx --backend onnxruntime --dataset val.txt --data-root data/ --save-png preds/
    """
    from pspnet.evaluate import EvalMode, evaluate

    if not Path(model).is_file():
        raise InputError(f"model not found: {model}")
    if save_png:
        check_folder(save_png, "--save-png folder")
    runner = load_runner(model, backend, device, precision, cuda_graphs)
    predict, info = runner.infer, runner.info
    crop, base_size = protocol_sizes(dataset, crop, base_size, info)
    eval_mode = EvalMode(mode, crop, flip, scales, base_size)
    if info.output == "labels" and not eval_mode.is_plain:
        raise InputError("this model outputs labels, not logits: only whole-image mode without --flip, "
                         "--scales or --base-size applies (named datasets: add --base-size 0)")
    data = build_data(dataset, info, split, scenes, scene_size, seed, data_root)
    result = evaluate(predict, data, info.num_classes, mode=eval_mode, class_names=info.class_names,
                      mean=info.mean, std=info.std, save_png=save_png, palette=info.palette, limit=limit)
    click.echo(result.to_json() if as_json else result.table())


if __name__ == "__main__":
    main()
