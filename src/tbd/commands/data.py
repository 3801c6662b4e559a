"""`tbd data make | check | bench | resize`: datasets on disk for `tbd run --data` (docs/data.md).

- `make WORKLOAD --out DIR [--size N]`: a small dataset in the workload's real format, with
  generated content and real encodings (JPEG files, VOC XML, WAV/FLAC, text, token files);
- `check WORKLOAD --data PATH`: the check a run makes before it starts, and what it found;
- `bench WORKLOAD --data PATH`: the loader's throughput alone, to the device, no model;
- `resize --data PATH --side N --out DIR`: a lower-resolution copy of an image folder (what the
  analysis recommends when decoding large images makes a run input-bound).
"""

from __future__ import annotations

import json

from rich.markup import escape

from tbd.commands import EXAMPLES
from tbd.commands.options import add_data_options, add_workload_options, config_from_args, non_negative_int, positive_int
from tbd.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("data", help="make, check and benchmark datasets on disk for 'tbd run --data'", formatter_class=EXAMPLES,
                       description="Datasets on disk in each workload's real format (docs/data.md).",
                       epilog="examples:\n  tbd data make resnet50 --out ./imagenet-mini --size 256\n"
                              "  tbd data check resnet50 --data ./imagenet-mini\n"
                              "  tbd data bench resnet50 --data ./imagenet-mini --workers 4\n"
                              "  tbd run resnet50 --data ./imagenet-mini --workers 4")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    make = actions.add_parser("make", help="write a small generated dataset in the workload's real format", formatter_class=EXAMPLES,
                              epilog="examples:\n  tbd data make resnet50 --out ./imagenet-mini\n"
                                     "  tbd data make resnet50 --flavor paper --out ./imagenet-500px --size 1024\n"
                                     "  tbd data make deepspeech2 --out ./speech --audio flac")
    make.add_argument("workload", help="workload name (see 'tbd list')")
    make.add_argument("--out", required=True, help="new folder to write the dataset into")
    make.add_argument("--size", type=positive_int, default=64, help="samples to write (images, sentence pairs, utterances, windows; default: 64)")
    make.add_argument("--flavor", default="tiny", help="size the content for this flavor (image sizes, vocabularies, durations; default: tiny)")
    make.add_argument("--audio", choices=("wav", "flac"), default="wav", help="deepspeech2: audio encoding (flac needs soundfile; default: wav)")
    make.add_argument("--text", choices=("bin", "txt"), default="bin",
                      help="gpt: a uint16 train.bin (default), or raw train.txt with a BPE tokenizer.json trained on it (needs tokenizers)")
    make.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the content (default: 0)")
    make.set_defaults(func=make_cmd)
    resize = actions.add_parser("resize", help="copy an ImageNet-style folder with the images' shorter side at most N px", formatter_class=EXAMPLES,
                                epilog="example:\n  tbd data resize --data ~/imagenet/train --side 256 --out ~/imagenet-256")
    resize.add_argument("--data", required=True, help="the ImageNet-style folder to copy")
    resize.add_argument("--side", type=positive_int, required=True, help="shorter side of the copies, in pixels (larger images only are resized)")
    resize.add_argument("--out", required=True, help="new folder for the copy")
    resize.add_argument("--limit", type=positive_int, help="copy at most this many images, taken evenly from the classes")
    resize.set_defaults(func=resize_cmd)
    for name, func, what in (("check", check_cmd, "check a dataset as a run would before it starts"),
                             ("bench", bench_cmd, "loader throughput alone (to the device, no model)")):
        q = actions.add_parser(name, help=what, formatter_class=EXAMPLES)
        q.add_argument("workload", help="workload name (see 'tbd list')")
        add_workload_options(q)
        add_data_options(q)
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "bench":
            q.add_argument("--batches", type=positive_int, default=50, help="batches timed after the warm-up (default: 50)")
            q.add_argument("--warmup", type=positive_int, default=5, help="batches taken before timing (default: 5)")
        q.set_defaults(func=func)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _config(args):
    if not args.data:
        raise UsageError(f"tbd data {args.action} needs --data PATH")
    for name, default in (("compile", False), ("option", []), ("seed", 0), ("max_steps", 300), ("max_time", 60.0),
                          ("target_ci", 1.0), ("in_process", True)):
        setattr(args, name, getattr(args, name, default))
    return config_from_args(args, args.workload)


def make_cmd(args) -> int:
    from tbd import registry
    from tbd.data import recipes

    spec = registry.get_spec(args.workload)
    made = recipes.make(spec, args.out, args.size, dict(spec.flavor(args.flavor).hparams), args.seed, args.audio, args.text)
    details = ", ".join(f"{k} {v}" for k, v in made.items() if k not in ("format", "path"))
    print(f"wrote {spec.name}'s dataset format ({made['format']}: {details}) to {made['path']}")
    print(f"try: tbd run {spec.name} --data {made['path']}" + ("" if args.flavor == "tiny" else f" --flavor {args.flavor}"))
    return 0


def resize_cmd(args) -> int:
    from tbd.data.images import resized_copy

    made = resized_copy(args.data, args.out, args.side, args.limit)
    print(f"wrote {made['images']:,} images in {made['classes']} classes at a shorter side of at most {args.side} px to {made['path']}")
    return 0


def check_cmd(args) -> int:
    from tbd import registry
    from tbd.data import recipes

    config = _config(args)  # validated: the check has run
    spec = registry.get_spec(config.workload)
    dataset = recipes.open_dataset(spec, config.data, config.resolved_hparams(), config.batch_size, config.seed, config.decode)
    out = {**dataset.facts, "batches_per_epoch": len(dataset.plan(0)), "notes": dataset.notes}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"ok: {escape(str(config.data))} is {recipes.layout(spec)}")
        for k, v in out.items():
            print(f"  {k}: {v}")
    return 0


def bench_cmd(args) -> int:
    from tbd.harness.data_bench import bench_loader

    config = _config(args)
    result = bench_loader(config, args.batches, args.warmup)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rate = next(k for k in result if k.endswith("_per_s") and k != "batches_per_s")
    print(f"{config.workload} loader ({config.framework}, {config.device}, batch {config.batch_size}, {config.workers} worker(s), "
          f"decode {config.decode}): {result[rate]:,.1f} {rate.replace('_per_s', '').replace('_', ' ')}/s, "
          f"{result['batches_per_s']:,.2f} batches/s over {result['batches']} batches (start-up {result['startup_s']:.1f} s)")
    return 0
