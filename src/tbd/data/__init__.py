"""Datasets on disk, framework-neutral: `tbd run WORKLOAD --data PATH` reads them.

Each format (`images.py`, `voc.py`, `text.py`, `speech.py`) has three parts, all NumPy and PIL,
no framework:
- `scan(path, ...)`: the fast check before a run starts (layout, every file the layout names
  exists, a sample of files decodes); bad data is one `UsageError` naming the file (exit 2);
- a `Dataset` (`base.Dataset`): sample `i` decoded and augmented on the host, the batch plan of
  an epoch (shuffled, bucketed by length or grouped by aspect ratio) and `collate` into a dict
  of NumPy arrays. A corrupt file met while training is skipped (another sample takes its
  place) and counted in the batch, so the run's record says how many;
- `make(out, size, hparams)`: a small dataset of generated content in the real encodings
  (`tbd data make`).

`recipes.open_dataset(spec, path, ...)` picks a workload's dataset by `WorkloadSpec.data_format`.
A framework turns a Dataset into device batches with its own loader: the PyTorch plugin with
`torch.utils.data.DataLoader` (`frameworks/torch/data.py`), JAX with the same loader feeding
JAX arrays (`frameworks/jax/data.py`); a TensorFlow plugin would wrap the same Dataset in
`tf.data` (docs/data.md, "Adding a framework's loader").
"""
