"""Feature-visualization panels: what do the units of the virtual subject respond to?

On the embedded pretrained network (AlexNet when its weights are present, else
EfficientNet-Lite0) and the 92-image set (Kriegeskorte et al. 2008):

1. first-layer filters as RGB tiles;
2. activation maps of a face image in a mid layer (white positive, black negative);
3. top-9 and bottom-9 dataset crops (under the theoretical receptive field) for a
   face-selective and a strongly driven unit in a mid and in the deepest spatial layer;
4. activation maximization for those units and for a class ("Siamese cat");
5. DeepDream of the mid-layer face unit with 1 and 3 pyramid levels (octaves);
6. gradient vs guided backprop vs deconvnet for the face stimuli (mid face unit).

The mid layer is the middle spatial, non-rectified layer of the architecture's default
layers and the deep layer the last one (AlexNet: conv3 and conv5; Lite0: stage4 and
stage7), chosen from the spec, not by name.
Writes netCDF + PNG per panel into ``--out``. ``--quick`` uses few optimization steps
a few faces, 16 activation maps and no bottom-9 panels (< 60 s on a shared 2-core CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import figure, fmt, fmt_int, load_result, make_parser, make_subject, output_dir, write_headline  # noqa: E402

import neurocnn as nc  # noqa: E402
from neurocnn.exceptions import AnalysisFailedError  # noqa: E402
from neurocnn import attribution, visualization  # noqa: E402

NAME = "feature_visualization"
CLASS_NAME = "Siamese cat"


def _spatial_layers(subject: nc.VirtualSubject) -> list[str]:
    """Default layers with a spatial map whose values are not rectified (optimizable from gray)."""
    return [
        layer for layer in subject.default_layers
        if len(subject.output_shape(layer)) == 3 and subject.relu_state(layer) != "post-activation"
    ]


def _pick_units(acts, face: np.ndarray) -> dict[str, int]:
    """The most face-selective channel (t of channel maxima, faces vs rest) and the most driven one."""
    peak = acts.max(("y", "x")).values.astype(np.float64)
    a, b = peak[face], peak[~face]
    t = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b) + 1e-12)
    face_unit = int(np.nanargmax(t))
    order = np.argsort(-peak.max(0))
    driven = int(next(c for c in order if c != face_unit))
    return {"face": face_unit, "driven": driven}


def _save(ds, out: Path, name: str, overwrite: bool) -> None:
    nc.io.save(ds, out / f"{name}.nc", overwrite=overwrite)


def _figure(fig, out: Path, name: str, overwrite: bool) -> None:
    nc.plotting.save_figure(fig, out / f"{name}.png", overwrite=overwrite)
    plt.close(fig)


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    klass = load_result(folder, "maximize_class.nc")
    maps = sorted(folder.glob("activation_maps_*.png"))
    tops = sorted(folder.glob("top9_*.png"))
    if not maps or not tops:
        raise AnalysisFailedError(f"Analysis 'feature_visualization' left no activation-map or top-9 figure in {folder}.")
    unit_files = sorted(folder.glob("maximize_*_ch*.nc"))
    roles = sorted({str(nc.io.load(p).attrs["role"]) for p in unit_files})
    top = load_result(folder, tops[0].with_suffix(".nc").name)
    return {
        "fv_mid_layer": maps[0].stem[len("activation_maps_"):],
        "fv_n_units": fmt_int(len(unit_files)),
        "fv_roles": ", ".join(roles),
        "fv_class": str(klass.attrs["target"]),
        "fv_initial": fmt(klass.attrs["initial_activation"], 2),
        "fv_final": fmt(klass.attrs["final_activation"], 2),
        "fv_classified_as": str(klass.attrs["classified_as"]),
        "fv_classified_p": fmt(klass.attrs["classified_probability"], 3),
        "fv_steps": fmt_int(klass.attrs["steps"]),
        "fv_top_k": fmt_int(top.sizes["rank"]),
        "fig_fv_filters": figure(folder, "filters.png"),
        "fig_fv_maps": figure(folder, maps[0].name),
        "fig_fv_top": figure(folder, tops[0].name),
        "fig_fv_maximize": figure(folder, "maximize.png"),
        "fig_fv_dream": figure(folder, "deepdream.png"),
        "fig_fv_attr": figure(folder, "attributions.png"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: fastest on a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = output_dir(args)
    subject = make_subject(args)
    stim = nc.load_stimuli("92images")
    face = np.asarray(stim.metadata["face"]) == 1
    steps = 4 if args.quick else 256
    dream_steps = 2 if args.quick else 10
    n_faces = 3 if args.quick else int(face.sum())
    n_maps = 16 if args.quick else 64
    directions = (False,) if args.quick else (False, True)
    ow, progress, seed = args.overwrite, args.progress, args.seed

    # 1. first-layer filters
    filters = visualization.first_layer_filters(subject)
    _save(filters, out, "filters", ow)
    _figure(visualization.plot_filters(filters), out, "filters", ow)

    spatial = _spatial_layers(subject)
    mid, deep = spatial[len(spatial) // 2], spatial[-1]

    # 2. activation maps of a face in the mid layer
    face_image = stim.subset([int(np.flatnonzero(face)[0])])
    maps = visualization.activation_maps(subject, face_image, mid)
    _save(maps, out, f"activation_maps_{mid}", ow)
    _figure(visualization.plot_activation_maps(maps.isel(channel=slice(0, n_maps))), out, f"activation_maps_{mid}", ow)

    # 3. top-9 / bottom-9 crops of a face-selective and a strongly driven unit per layer
    acts = subject.activations(stim, [mid, deep], progress=progress)
    units = {layer: _pick_units(acts[layer], face) for layer in (mid, deep)}
    for layer, chosen in units.items():
        for role, channel in chosen.items():
            for bottom in directions:
                top = visualization.top_examples(subject, stim, layer, channel, top_k=9, bottom=bottom,
                                                 activations=acts[layer], progress=False)
                tag = f"{'bottom' if bottom else 'top'}9_{layer}_ch{channel}"
                top.attrs["role"] = role
                _save(top, out, tag, ow)
                _figure(visualization.plot_top_examples(top), out, tag, ow)

    # 4. activation maximization for the same units and for a class
    settings = dict(steps=steps, lr=0.05, jitter=8, seed=seed, progress=progress)
    maxima = []
    for layer, chosen in units.items():
        for role, channel in chosen.items():
            res = visualization.maximize_activation(subject, layer, channel, objective="mean", **settings)
            res.attrs["role"] = role
            _save(res, out, f"maximize_{layer}_ch{channel}", ow)
            maxima.append(res)
    class_res = visualization.maximize_activation(subject, class_name=CLASS_NAME, **settings)
    predicted = subject.classify(class_res["image"].values[None], top_k=1)
    class_res.attrs["classified_as"] = str(predicted["class_name"].values[0, 0])
    class_res.attrs["classified_probability"] = float(predicted["probability"].values[0, 0])
    _save(class_res, out, "maximize_class", ow)
    maxima.append(class_res)
    _figure(visualization.plot_images(maxima, ncols=len(maxima)), out, "maximize", ow)

    # 5. DeepDream with 1 and 3 octaves (MATLAB's PyramidLevels)
    dreams = []
    for octaves in (1, 3):
        dream = visualization.deep_dream(
            subject, mid, [units[mid]["face"]], octaves=octaves, steps_per_octave=dream_steps,
            seed=seed, progress=progress,
        )
        _save(dream, out, f"deepdream_{octaves}octave", ow)
        dreams.append(dream)
    _figure(visualization.plot_images(dreams, titles=["1 octave", "3 octaves"]), out, "deepdream", ow)

    # 6. gradient vs guided backprop vs deconvnet on the face stimuli
    faces = stim.subset(np.flatnonzero(face)[:n_faces])
    target = {"layer": mid, "channel": units[mid]["face"]}
    results = {m: attribution.attribute(subject, faces, m, **target) for m in attribution.METHODS}
    for method, result in results.items():
        _save(result, out, f"attribution_{method}", ow)
    shown = faces.subset(np.arange(min(6, len(faces))))
    images = np.stack([subject.preprocessing.geometric(shown.load(i)).permute(1, 2, 0).numpy()
                       for i in range(len(shown))])
    fig = attribution.plot_attributions({m: r.isel(stimulus=slice(0, len(shown))) for m, r in results.items()},
                                        images=images)
    _figure(fig, out, "attributions", ow)
    write_headline(out, headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
