"""PSPNet: the model, checkpoints, data, training and evaluation (needs torch)."""
from pspnet.checkpoint import load_checkpoint, load_model, save_checkpoint
from pspnet.factory import VARIANTS, create_model
from pspnet.pspnet import PSPNet, PSPNetConfig, PSPNetLoss
from pspnet.labels import LABEL_SETS, get_label_set

__all__ = ["create_model", "load_checkpoint", "load_model", "save_checkpoint", "VARIANTS", "PSPNet",
           "PSPNetConfig", "PSPNetLoss", "LABEL_SETS", "get_label_set"]
