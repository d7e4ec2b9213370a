"""The torch-free base every part of pspnet-deploy stands on: errors, files, command-line plumbing, ModelInfo,
the engine file format, shared preprocessing, and the Runner interface with its registry of backends."""
