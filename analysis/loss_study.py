"""Study (c): SPEQ's distillation loss at W2A2: cosine against KL, and the kd_weight / ce_weight balance.

    python analysis/loss_study.py           # digits, cnn-small, ~2 min on 2 cores
    python analysis/loss_study.py --reuse   # redraw from the finished search
"""

from __future__ import annotations

import pandas as pd
from _study import pct, run_grid, seed_means, w2a2_study, write_study

KD_LOSS = ["cosine", "kl"]
KD_WEIGHT = [0.5, 1.0, 2.0]
CE_WEIGHT = [0.5, 1.0]


def main() -> None:
    name = "loss-study-digits"
    args, space = w2a2_study(name, __doc__, {"p_high": 0.5, "high_bits": 8},
                             {"kd_loss": KD_LOSS, "kd_weight": KD_WEIGHT, "ce_weight": CE_WEIGHT})
    trials = run_grid(name, space, args.reuse)
    means = seed_means(trials, ["kd_loss", "kd_weight", "ce_weight"])
    by = means.set_index(["kd_loss", "kd_weight", "ce_weight"])
    table = pd.DataFrame([{"kd_loss": loss, "ce_weight": f"{c:g}",
                           **{f"kd_weight {k:g}": pct(by.loc[(loss, k, c), "test_acc_mean"],
                                                      by.loc[(loss, k, c), "test_acc_std"]) for k in KD_WEIGHT}}
                          for loss in KD_LOSS for c in CE_WEIGHT])
    import plotly.graph_objects as go

    fig = go.Figure()
    for loss in KD_LOSS:
        for c in CE_WEIGHT:
            rows = means[(means.kd_loss == loss) & (means.ce_weight == c)].sort_values("kd_weight")
            fig.add_trace(go.Scatter(x=rows.kd_weight, y=100 * rows.test_acc_mean, mode="lines+markers",
                                     name=f"{loss}, ce_weight {c:g}",
                                     error_y={"type": "data", "array": 100 * rows.test_acc_std.fillna(0)},
                                     line={"dash": "solid" if loss == "cosine" else "dot"}))
    fig.update_layout(title=f"SPEQ at W2A2 on digits: test accuracy (mean ± std of {len(args.seeds)} seeds)",
                      xaxis_title="kd_weight", yaxis_title="test accuracy (%)", xaxis_type="log", template="plotly_white")
    notes = [f"Grid: kd_loss {KD_LOSS} x kd_weight {KD_WEIGHT} x ce_weight {CE_WEIGHT} x seeds {args.seeds}; "
             f"cnn-small on digits, W2A2, p_high 0.5, high_bits 8, {args.epochs} epochs.",
             "Test accuracy (%), mean ± std over seeds."]
    write_study(name, {"Test accuracy by distillation loss and weights": table}, {"lines": fig}, notes)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
