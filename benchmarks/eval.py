"""Best-of-N evaluation throughput: vpkit's batched `evaluate` against the one-sample-at-a-time loop.

SVG-LP on the Stochastic Moving MNIST preset (5 → 10 frames; untrained weights: speed does not depend on them),
best of `--samples` (100) on the first `--videos` (256) test videos, metrics PSNR and SSIM (and LPIPS with
`--lpips-backbone PATH`, torchvision's alexnet-owt-7be5be79.pth, when you have it).

- **vpkit**: `vpkit.engine.evaluator.evaluate`, which draws many samples per `predict` call (as many as fit in its
  256 MiB budget: all 100 here) and scores every sample and frame of a batch in one metric call.
- **loop**: SRVP's `test.py` structure (which SLAMP copies): for each batch of 16 videos, for each of the N samples,
  one model call drawing one sample per video, then the metrics of that sample, keeping the best per video. It uses
  vpkit's own model and metric functions, so the difference measured is the batching alone.

Both draw their samples from a generator seeded alike but consume it in a different order, so their best-of-N
numbers agree statistically, not bit for bit; the table prints both.

    python benchmarks/eval.py                     # 256 videos, best of 100, both variants
    python benchmarks/eval.py --videos 32         # a quick look
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from vpkit.engine import evaluator


def build_model(seed: int) -> torch.nn.Module:
    from vpkit_svg.config import SVGConfig
    from vpkit_svg.model import SVG
    from vpkit_svg.plugin import SMMNIST

    torch.manual_seed(seed)
    return SVG(SVGConfig(**SMMNIST.model), (1, 64, 64)).eval()


def build_dataset():
    from vpkit_svg.plugin import SMMNIST

    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host

    spec = get_host().datasets.get(SMMNIST.dataset)
    return spec.build(build_config(spec.config_cls, SMMNIST.data, what="smmnist preset"), "test"), SMMNIST.model


def per_sample_loop(model, dataset, metrics, *, n_context, horizon, num_samples, num_videos, batch_size, seed):
    """SRVP's loop: one sample per model call, metrics per sample, running best per video (strictly better)."""
    generator = torch.Generator().manual_seed(seed)
    best: dict[str, list[torch.Tensor]] = {m.name: [] for m in metrics}
    spent = {"model": 0.0, "metrics": 0.0}
    with evaluator.sampling_mode(model), torch.no_grad():
        for start in range(0, num_videos, batch_size):
            indices = list(range(start, min(start + batch_size, num_videos)))
            videos = torch.stack([torch.as_tensor(dataset[i]) for i in indices]).float() / 255
            context, truth = videos[:, :n_context], videos[:, n_context:n_context + horizon]
            running: dict[str, torch.Tensor] = {}
            for _ in range(num_samples):
                tick = time.perf_counter()
                pred = model.predict(context, horizon, num_samples=1, generator=generator)[:, 0]
                spent["model"] += time.perf_counter() - tick
                for metric in metrics:
                    tick = time.perf_counter()
                    value = metric.score(pred, truth).mean(dim=1)  # [B]: this sample's frame-averaged score
                    spent["metrics"] += time.perf_counter() - tick
                    old = running.get(metric.name)
                    if old is None:
                        running[metric.name] = value
                    else:
                        better = value > old if metric.spec.higher_is_better else value < old
                        running[metric.name] = torch.where(better, value, old)
            for name, value in running.items():
                best[name].append(value)
    return {name: torch.cat(values).double().mean().item() for name, values in best.items()}, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=256)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="test videos per batch (SRVP's default 16)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lpips-backbone", default=None)
    parser.add_argument("--only", choices=("vpkit", "loop"), default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.seed)
    dataset, preset = build_dataset()
    n_context, horizon = int(preset["n_context"]), int(preset["n_future"])
    names = ["psnr", "ssim"] + (["lpips"] if args.lpips_backbone else [])
    options = {"device": "cpu", "lpips_backbone": args.lpips_backbone}
    metrics = [evaluator.build_metric(name, options) for name in names]
    common = dict(n_context=n_context, horizon=horizon, num_samples=args.samples, batch_size=args.batch_size,
                  seed=args.seed)

    print(f"SVG-LP smmnist, {n_context} → {horizon} frames, best of {args.samples}, {args.videos} videos, metrics "
          f"{','.join(names)}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    rows = []
    if args.only in (None, "vpkit"):
        # Time split: the model's predict and the metrics, measured by wrapping both.
        spent = {"model": 0.0, "metrics": 0.0}
        predict = model.predict

        def timed_predict(*a, **k):
            t = time.perf_counter()
            out = predict(*a, **k)
            spent["model"] += time.perf_counter() - t
            return out

        model.predict = timed_predict
        timed_metrics = []
        for metric in metrics:
            def score(pred, target, _score=metric.score):
                t = time.perf_counter()
                out = _score(pred, target)
                spent["metrics"] += time.perf_counter() - t
                return out
            timed_metrics.append(evaluator.BuiltMetric(metric.spec, score))
        start = time.perf_counter()
        result = evaluator.evaluate(model, dataset, metrics=timed_metrics, num_videos=args.videos, progress=False,
                                    **common)
        elapsed = time.perf_counter() - start
        del model.predict
        rows.append(("vpkit evaluate", elapsed, {n: result.best_mean(n) for n in names}, spent))
    if args.only in (None, "loop"):
        start = time.perf_counter()
        values, spent = per_sample_loop(model, dataset, metrics, num_videos=args.videos, **common)
        rows.append(("one sample at a time", time.perf_counter() - start, values, spent))

    print(f"{'variant':<22} {'seconds':>9} {'videos/s':>9}  best-of-N " + "  ".join(f"{n:>7}" for n in names)
          + "   time split")
    for label, seconds, values, spent in rows:
        split = "" if spent is None else (f"model {spent['model']:.1f} s, metrics {spent['metrics']:.1f} s, "
                                          f"other {seconds - spent['model'] - spent['metrics']:.1f} s")
        print(f"{label:<22} {seconds:>9.1f} {args.videos / seconds:>9.2f}  {'':>9} "
              + "  ".join(f"{values[n]:>7.4f}" for n in names) + f"   {split}")
    if len(rows) == 2:
        print(f"speed-up of vpkit over the one-sample loop: {rows[1][1] / rows[0][1]:.2f}x overall, "
              f"{rows[1][3]['metrics'] / rows[0][3]['metrics']:.2f}x in the metrics, "
              f"{rows[1][3]['model'] / rows[0][3]['model']:.2f}x in the model")


if __name__ == "__main__":
    main()
