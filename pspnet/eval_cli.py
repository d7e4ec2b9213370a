"""psp-eval: mIoU / mAcc / allAcc of a checkpoint or an exported model on context-scenes or a list file."""
from __future__ import annotations

from pathlib import Path

import click

from runtime.commandline import SIZE, Command
from runtime.errors import InputError

TORCH_SUFFIXES = (".pth", ".pt")


def _floats(ctx, param, value):
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers (e.g. 0.75,1,1.25), got {value!r}") from None


def torch_predictor(model_path: str, device: str):
    """(predict, ModelInfo) for a PyTorch checkpoint: logits as numpy, no autograd."""
    import torch

    from pspnet.checkpoint import load_model

    model, info = load_model(model_path)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model = model.to(dev).eval()

    def predict(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(dev)).float().cpu().numpy()

    return predict, info


def runner_predictor(backend: str, model_path: str):
    """(predict, ModelInfo) for any runtime backend (ONNX Runtime, TensorRT, ...)."""
    try:
        from runtime.backends import create_runner
    except ImportError:
        raise InputError("this installation has no runtime backends (runtime.backends.create_runner); "
                         "evaluate a .pth checkpoint with --backend torch") from None
    runner = create_runner(backend, model_path)
    runner.activate()
    return runner.infer, runner.info


def build_data(dataset: str | None, info, split: str, scenes: int | None, scene_size: tuple | None, seed: int,
               data_root: str | None):
    from pspnet.data.context_scenes import DEFAULT_SIZE, ContextScenes
    from pspnet.data.listfile import ListFileSource

    dataset = dataset or ("context-scenes" if info.dataset == "context-scenes" else None)
    if dataset is None:
        raise InputError(f"the model was not trained on context-scenes ({info.dataset or 'dataset unknown'}); "
                         "give --dataset LIST_FILE")
    if dataset != "context-scenes":
        return ListFileSource(dataset, data_root)
    size = scene_size or info.input_size or DEFAULT_SIZE
    return ContextScenes(split, scenes, size, seed)


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--dataset", help="'context-scenes' or a list file of 'image label' lines (default: "
              "context-scenes when the model was trained on it).")
@click.option("--data-root", type=click.Path(file_okay=False), help="List paths are relative to this.")
@click.option("--split", default="val", show_default=True, help="context-scenes split: train, val, test.")
@click.option("--scenes", type=int, help="context-scenes images (default: 200 for val).")
@click.option("--scene-size", type=SIZE, help="context-scenes image size N or HxW (default: the model's input size).")
@click.option("--seed", default=0, show_default=True, help="context-scenes seed.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default="whole", show_default=True,
              help="Whole image, or sliding windows of --crop with stride ceil(2/3 crop).")
@click.option("--crop", type=SIZE, help="Sliding-window size (default: the model's input size).")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--scales", callback=_floats, default="1", show_default=True,
              help="Multi-scale, e.g. 0.5,0.75,1,1.25,1.5,1.75 (probabilities summed).")
@click.option("--backend", help="torch (default for .pth) or a runtime backend: onnxruntime, tensorrt, "
              "auto, ... (default for .onnx/.engine: auto).")
@click.option("--device", default="auto", show_default=True, help="torch backend: auto, cpu, cuda.")
@click.option("--limit", type=int, help="Evaluate only the first N images.")
@click.option("--save-png", type=click.Path(file_okay=False), help="Write colour predictions here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def main(model, dataset, data_root, split, scenes, scene_size, seed, mode, crop, flip, scales, backend, device,
         limit, save_png, as_json):
    """Evaluate MODEL (.pth checkpoint, .onnx, TensorRT engine) with dataset-level mIoU, mAcc, allAcc.

    \b
    psp-eval runs/psp/model.pth                      (context-scenes val, whole image)
    psp-eval runs/psp/model.pth --mode slide --flip --json
    psp-eval model.onnx --backend onnxruntime --dataset val.txt --data-root data/ --save-png preds/
    """
    from pspnet.evaluate import EvalMode, evaluate

    if not Path(model).is_file():
        raise InputError(f"model not found: {model}")
    backend = backend or ("torch" if model.endswith(TORCH_SUFFIXES) else "auto")
    if backend == "torch" and model.endswith(TORCH_SUFFIXES):
        predict, info = torch_predictor(model, device)
    else:
        predict, info = runner_predictor(backend, model)
    if info.output == "labels" and (mode != "whole" or flip or scales != (1.0,)):
        raise InputError("this model outputs labels, not logits: only whole-image mode without --flip or "
                         "--scales applies")
    eval_mode = EvalMode(mode, crop or info.input_size, flip, scales)
    data = build_data(dataset, info, split, scenes, scene_size, seed, data_root)
    result = evaluate(predict, data, info.num_classes, mode=eval_mode, class_names=info.class_names,
                      mean=info.mean, std=info.std, save_png=save_png, palette=info.palette, limit=limit)
    click.echo(result.to_json() if as_json else result.table())


if __name__ == "__main__":
    main()
