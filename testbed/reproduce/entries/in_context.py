"""In-context learning by one linear self-attention layer (von Oswald et al. 2023, "Transformers
learn in-context by gradient descent", arXiv 2212.07677, Fig. 2): trained on linear-regression
prompts, one linear self-attention layer implements one step of gradient descent, and its error
matches that of one step of GD with the best step size on the same prompts.

Here: d = 5, prompts of 20 examples, loss on the query after all 20 (`kit.LinearAttention`,
Adam); the baseline is `one_step_gd` on the very same 1024 evaluation prompts. Measured: the
model's normalized error at N = 20 over the baseline's. Band [0.9, 1.1]: the optimum of the
layer is exactly that step (von Oswald et al.), so a trained layer within 10% has found it.
"""

from __future__ import annotations

from testbed.reproduce.registry import Measured, Reproduction, register_reproduction

D, K = 5, 20


def _run(quick: bool) -> Measured:
    from testbed.analyses.icl.figures import error_vs_n
    from testbed.reproduce import kit

    task = kit.make_prompt_task("linear", d=D, points=K)
    r = kit.train_prompts(task, kit.LinearAttention(max_points=K), steps=800 if quick else 3000,
                              batch_size=128, seeds=2, optimizer=kit.Optimizer(name="adam", lr=3e-3), evals=2,
                              eval_prompts=256 if quick else 1024, baselines=("least_squares", "one_step_gd"),
                              probe_prompts=0)
    h = r.history[(r.history["step"] == r.history["step"].max()) & (r.history["n"] == K)]
    b = r.baselines[(r.baselines["baseline"] == "one_step_gd") & (r.baselines["n"] == K)]["error"].iloc[0]
    ratio = float(h["error"].mean() / b)
    fig = error_vs_n(r.history, r.baselines, title="von Oswald et al. 2023: linear attention is one step of GD",
                     model="linear_attention")
    return Measured(ratio, f"error at N = {K}: {h['error'].mean():.4f} (seeds {h['error'].round(4).tolist()}), one-"
                           f"step GD on the same prompts {b:.4f}, closed form {(D + 1) / (K + D + 1):.4f}", fig)


@register_reproduction("linear_attention_gd")
def linear_attention_gd() -> Reproduction:
    return Reproduction(
        "linear_attention_gd", claim="One linear self-attention layer trained in context equals one step of GD",
        source="von Oswald et al. 2023, arXiv 2212.07677, Fig. 2", band=(0.9, 1.1),
        unit="error / one-step-GD error, N = 20",
        why="the layer's optimum is exactly that step; within 10% means it was found", run=_run)
