"""The ``neuroxr`` command: a thin layer over the package's functions.

    neuroxr demo [DIR] [--dynamic]  write a synthetic scan (folder and .zip), open it, show it
    neuroxr info PATH               sizes, frames, trial lengths, tiers, neurons per area and layer, what is withheld
    neuroxr validate PATH           check every file of a scan; exit 1 if any problem
    neuroxr convert SRC DEST        to .nc, .zarr, .nwb, a .zip or a folder (release layout)
    neuroxr plot PATH -o FILE.png   a one-page summary figure
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from neuroxr.errors import NeuroxrError, ScanError


def _print(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    import neuroxr
    from neuroxr.formats.release import to_folder
    from neuroxr.synthetic import make_scan
    from neuroxr.views.describe import describe

    target = Path(args.dir)
    target.mkdir(parents=True, exist_ok=True)
    kind = "dynamic" if args.dynamic else "static"
    trials, neurons = DEMO_SIZES[kind]
    synthetic = make_scan(
        kind=kind, n_trials=args.trials or trials, n_neurons=args.neurons or neurons, competition=args.competition
    )
    folder = target / synthetic.attrs["release_name"]
    archive = target / f"{synthetic.attrs['release_name']}.zip"
    to_folder(synthetic, folder, overwrite=True)
    to_folder(neuroxr.open_scan(folder), archive, zip=True, overwrite=True)  # from the files: generated once
    _print("wrote a synthetic scan as the release lays it out:", f"  {folder}/", f"  {archive}", "")

    started = time.perf_counter()
    ds = neuroxr.open_scan(archive)
    opened = time.perf_counter() - started
    _print(f">>> ds = neuroxr.open_scan({str(archive)!r})   # {opened * 1000:.0f} ms, nothing loaded yet", "", describe(ds), "")
    _print(">>> ds", str(ds), "")
    if args.dynamic:
        return _demo_video(ds)
    tier = "test" if not ds.responses_withheld.values.any() else "validation"
    if tier != "test":
        _print("test responses are withheld in this scan (NaN), so this looks at the validation tier:")
    chosen = ds.responses.where(ds.tier == tier, drop=True)
    per_image = chosen.groupby("image_id").mean()
    _print(
        f'>>> ds.responses.where(ds.tier == "{tier}", drop=True).groupby("image_id").mean()',
        f"    {per_image.sizes['image_id']} {tier} images x {per_image.sizes['neuron']} neurons, "
        f"mean response {float(np.mean(per_image.values)):.3f}",
        "",
        "next: neuroxr info PATH | neuroxr validate PATH | neuroxr convert PATH scan.nc",
    )
    return 0


#: Trials and neurons of the demo scans (a video trial holds ~100 times the data of an image trial).
DEMO_SIZES = {"static": (600, 500), "dynamic": (80, 120)}


def _demo_video(ds) -> int:  # type: ignore[no-untyped-def]
    import numpy as np

    oracle = ds.responses.sel(trial=ds.tier == "oracle")
    mean = oracle.mean("trial")
    _print(
        '>>> ds.responses.sel(trial=ds.tier == "oracle").mean("trial")   # the mean over the oracle trials, frame by frame',
        f"    {mean.sizes['neuron']} neurons x {mean.sizes['frame']} frames ({float(ds.time.values[-1]):.1f} s at "
        f"{ds.attrs['frame_rate']:g} Hz), mean response {float(np.nanmean(mean.values)):.3f}",
        f">>> ds.n_frames   # each trial's length: {int(ds.n_frames.min())}-{int(ds.n_frames.max())} frames of {ds.sizes['frame']} stored",
        "",
        "next: neuroxr info PATH | neuroxr validate PATH | neuroxr plot PATH -o scan.png | neuroxr convert PATH scan.zarr",
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    import neuroxr
    from neuroxr.views.describe import describe

    opened = neuroxr.open(args.path, **opening_options(args, args.path))
    if hasattr(opened, "children"):
        for child in opened.children.values():
            _print(describe(child.to_dataset()), "")
    else:
        _print(describe(opened))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from neuroxr.layout import read_layout
    from neuroxr.layout.check import check_files, files_to_check

    try:
        layout = read_layout(args.path, strict=False, **opening_options(args, args.path))  # every structural problem
    except ScanError as error:  # not a scan at all
        _print(f"problem: {error}")
        return 1
    total = layout.n_trials * len(layout.variables)
    problems = list(layout.problems)
    with tqdm(total=files_to_check(layout), unit="file", desc="checking", disable=args.quiet, file=sys.stderr) as bar:
        for problem in check_files(layout, progress=bar.update):
            problems.append(problem)
    for problem in problems:
        _print(f"problem: {problem}")
    verdict = "ok" if not problems else f"{len(problems)} problem{'s' * (len(problems) > 1)}"
    frames = ""
    if layout.n_frames is not None:
        lengths = layout.n_frames.values
        frames = f", {int(lengths.min())}-{int(lengths.max())} frames per trial"
    _print(
        f"{layout.source.name}: a {layout.kind.name} scan, {total} trial files in {len(layout.variables)} variables{frames}, "
        f"{len(layout.trials)} trial and {len(layout.neurons)} neuron meta arrays: {verdict}"
    )
    return 1 if problems else 0


def _convert(args: argparse.Namespace) -> int:
    import neuroxr

    dest = Path(args.dest)
    kind = args.to or _kind_of(dest)
    if args.metadata is not None and kind != "nwb":
        raise SystemExit(f"neuroxr: --metadata is for NWB targets; {dest} is a {kind} target")
    obj = neuroxr.open(args.src, **opening_options(args, args.src))
    started = time.perf_counter()
    if kind == "nc":
        from neuroxr.formats.netcdf import to_netcdf

        written = to_netcdf(obj, dest, overwrite=args.overwrite, progress=not args.quiet)
    elif kind == "zarr":
        from neuroxr.formats.zarr import to_zarr

        written = to_zarr(obj, dest, overwrite=args.overwrite, progress=not args.quiet)
    elif kind == "nwb":
        from neuroxr.formats.nwb import to_nwb

        written = to_nwb(obj, dest, metadata=args.metadata, overwrite=args.overwrite, progress=not args.quiet)
    elif kind in ("folder", "zip"):
        from neuroxr.formats.release import to_folder

        if hasattr(obj, "children"):
            raise SystemExit("neuroxr: convert to the release layout takes one scan, not a folder of scans")
        written = to_folder(obj, dest, zip=kind == "zip", overwrite=args.overwrite, progress=not args.quiet)
    else:  # pragma: no cover - argparse restricts the choices
        raise SystemExit(f"neuroxr: unknown target kind {kind!r}")
    _print(f"wrote {written or dest} in {time.perf_counter() - started:.1f} s")
    return 0


def _kind_of(dest: Path) -> str:
    suffix = dest.suffix.lower()
    kinds = {".nc": "nc", ".nc4": "nc", ".zarr": "zarr", ".nwb": "nwb", ".zip": "zip"}
    if suffix in kinds:
        return kinds[suffix]
    if suffix:
        raise SystemExit(f"neuroxr: cannot tell the format of {dest} from {suffix!r}; use --to")
    return "folder"


def _plot(args: argparse.Namespace) -> int:
    import neuroxr
    from neuroxr.views.plot import summary_figure

    figure = summary_figure(neuroxr.open(args.path, **opening_options(args, args.path)))
    figure.savefig(args.output, dpi=args.dpi)
    _print(f"wrote {args.output}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neuroxr`` command."""
    main_parser = argparse.ArgumentParser(prog="neuroxr", description="Sensorium scans as lazy, labelled xarray Datasets.")
    main_parser.add_argument("--version", action="version", version=f"neuroxr {_version()}")
    commands = main_parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="write a synthetic scan, open it and show it")
    demo.add_argument("dir", nargs="?", default="neuroxr-demo", help="where to write it (default ./neuroxr-demo)")
    demo.add_argument("--dynamic", action="store_true", help="a 2023 video scan (default: a 2022 image scan)")
    demo.add_argument("--trials", type=int, help="default 600 (80 with --dynamic)")
    demo.add_argument("--neurons", type=int, help="default 500 (120 with --dynamic)")
    demo.add_argument("--competition", action="store_true", help="withhold test responses like the competition scans")
    demo.set_defaults(run=_demo)

    info = commands.add_parser("info", help="sizes, frames and trial lengths, tiers, neurons per area and layer, what is withheld")
    info.add_argument("path")
    info.set_defaults(run=_info)

    validate = commands.add_parser(
        "validate", help="check every file of a scan (header, shape, dtype, counts, padded length); every problem in one run"
    )
    validate.add_argument("path")
    validate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    validate.set_defaults(run=_validate)

    convert = commands.add_parser("convert", help="write a scan (or a folder of scans) to another format")
    convert.add_argument("src")
    convert.add_argument("dest", help="target; its suffix picks the format: .nc .zarr .nwb .zip, none = release folder")
    convert.add_argument("--to", choices=["nc", "zarr", "nwb", "zip", "folder"], help="format, when DEST has no telling suffix")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing target")
    convert.add_argument("--metadata", metavar="FILE", help="NWB only: a YAML or JSON file of NWBFile, Subject and Ophys fields")
    convert.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(run=_convert)

    plot = commands.add_parser("plot", help="draw a one-page summary of a scan, image or video (needs matplotlib)")
    plot.add_argument("path")
    plot.add_argument("-o", "--output", default="summary.png")
    plot.add_argument("--dpi", type=int, default=110)
    plot.set_defaults(run=_plot)
    for name in OPENING_COMMANDS:
        add_storage_options(commands.choices[name])
    return main_parser


# ----------------------------------------------------------------------------------------------
# remote paths: storage options for every command that opens a path

#: The commands that open a path (a URL among them).
OPENING_COMMANDS = ("info", "validate", "convert", "plot")


def _version() -> str:
    from neuroxr import __version__

    return __version__


def add_storage_options(command: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) and ``--anon``: fsspec options for a URL."""
    group = command.add_argument_group("remote scans (s3://, gs://, https://...)")
    group.add_argument(
        "--storage-option", dest="storage_options", action="append", default=[], metavar="KEY=VALUE",
        help="an fsspec storage option, e.g. endpoint_url=https://... or requester_pays=true "
        "(VALUE is read as JSON when it can be: true, 3, {...}); repeat for more",
    )  # fmt: skip
    group.add_argument("--anon", action="store_true", help="no credentials (public buckets): storage option anon=true")


def storage_options(args: argparse.Namespace) -> dict[str, object]:
    """The storage options the command line gives, as fsspec takes them.

    >>> storage_options(parser().parse_args(["info", "s3://b/scan.zip", "--anon", "--storage-option", "block_size=1024"]))
    {'block_size': 1024, 'anon': True}
    """
    options: dict[str, object] = {}
    for item in getattr(args, "storage_options", []) or []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--storage-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    if getattr(args, "anon", False):
        options["anon"] = True
    return options


def opening_options(args: argparse.Namespace, path: str) -> dict[str, object]:
    """The keyword arguments for opening ``path``: ``storage_options`` for a URL, when any were given."""
    from neuroxr.sources import is_url

    options = storage_options(args)
    if not options:
        return {}
    if not is_url(path):
        raise ValueError(f"{path}: --storage-option and --anon apply to URLs (s3://, https://...), not to a local path")
    return {"storage_options": options}


# ----------------------------------------------------------------------------------------------
# errors: one line each, in the command's terms

#: Exit status of a refusal or a failure the user can act on, and of an error neuroxr did not expect.
EXIT_ERROR = 2
EXIT_INTERNAL = 3
DEBUG_VARIABLE = "NEUROXR_DEBUG"
#: Advice the library gives in Python terms, said in the command's.
IN_COMMAND_TERMS = {
    "pass overwrite=True": "use --overwrite",
    "open them with neuroxr.open_datatree": "unzip it and give the folder, which opens as one scan per folder",
    "pass storage_options={'anon': True}": "use --anon",
    "in storage_options": "given with --storage-option",
}


def error_line(error: BaseException) -> str:
    """One line for ``error``, in the command's terms (``--overwrite``, not ``overwrite=True``)."""
    from neuroxr.errors import TargetExistsError

    if isinstance(error, TargetExistsError):
        text = f"{error.path}: {error.problem}" + ("; use --overwrite to replace it" if error.replaceable else "")
    elif isinstance(error, OSError) and error.strerror and not isinstance(error, NeuroxrError):
        text = error.strerror
        if error.filename and str(error.filename) not in text:
            text = f"{error.filename}: {text}"
    elif isinstance(error, (NeuroxrError, ValueError, OSError)):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    notes = [note for note in getattr(error, "__notes__", []) if note not in text]
    text = "; ".join([text, *notes])
    for api, command in IN_COMMAND_TERMS.items():
        text = text.replace(api, command)
    return " ".join(text.split())  # one line, whatever the libraries put in their messages


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neuroxr`` command; return its exit status.

    Every error is one line on stderr (``neuroxr: ...``) and a non-zero status: 2 for what the
    user can act on, 3 for an error neuroxr did not expect (``NEUROXR_DEBUG=1`` shows its traceback).
    """
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("neuroxr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``neuroxr info ... | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit cannot fail again
        return 1
    except Exception as error:
        expected = isinstance(error, (NeuroxrError, OSError, ValueError))
        prefix = "neuroxr: " if expected else "neuroxr: internal error: "
        print(prefix + error_line(error), file=sys.stderr)
        if os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        elif not expected:
            print(f"neuroxr: set {DEBUG_VARIABLE}=1 to see where it happened", file=sys.stderr)
        return EXIT_ERROR if expected else EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
