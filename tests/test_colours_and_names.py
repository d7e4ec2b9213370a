"""One colouring (pspcore.colours) and one generic class naming (pspcore.class_names) for every command:
psp-eval's saved predictions and psp-infer's masks colour a label past the model's palette alike."""
from __future__ import annotations

import cv2
import numpy as np

from pspcore.colours import colorize, colour_table
from pspcore.model_info import ModelInfo, default_info, generic_palette
from pspnet.evaluate import evaluate
from pspnet.labels import label_set_for
from runtime.postprocess import palette_lut

PALETTE = ((10, 20, 30), (40, 50, 60))  # RGB; labels 2.. lie past it


def test_a_label_past_the_palette_gets_the_generic_colour_not_black():
    table = colour_table(PALETTE, 4)
    assert len(table) == 256 and tuple(table[1]) == PALETTE[1] and tuple(table[3]) == generic_palette(4)[3]
    assert tuple(colour_table(PALETTE, 4, bgr=True)[0]) == (30, 20, 10)
    assert colorize(np.array([[0, 3]], np.uint8), table).tolist() == [[list(PALETTE[0]), list(generic_palette(4)[3])]]


def test_psp_eval_pngs_and_psp_infer_masks_share_the_colours(tmp_path):
    image, label = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    label[:, 4:] = 3

    def predict(batch):  # class 3 (past the palette) on the right half, class 0 on the left
        logits = np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)
        logits[:, 0, :, :4], logits[:, 3, :, 4:] = 1, 1
        return logits

    evaluate(predict, [(image, label)], 4, palette=PALETTE, save_png=tmp_path, progress=False)
    saved = cv2.imread(str(tmp_path / "00000.png"))  # BGR, as psp-infer writes its masks
    lut = palette_lut(ModelInfo(num_classes=4, palette=PALETTE))
    assert tuple(saved[0, 0]) == tuple(lut[0]) and tuple(saved[0, 7]) == tuple(lut[3])
    assert tuple(saved[0, 7]) != (0, 0, 0)


def test_generic_class_names():
    assert ModelInfo(class_names=("a",)).class_name(2) == "class_2"
    assert default_info(3).class_names == label_set_for(3).class_names == ("class_0", "class_1", "class_2")
