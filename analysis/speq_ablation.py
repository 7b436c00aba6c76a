"""Study (b): SPEQ's teacher at W2A2: the probability p_high of a layer taking high_bits, and high_bits.

p_high = 0 makes the teacher the student itself (the distillation term is then constant):
plain QAT, the baseline of the table.

    python analysis/speq_ablation.py           # digits, cnn-small, ~2 min on 2 cores
    python analysis/speq_ablation.py --reuse   # redraw from the finished search
"""

from __future__ import annotations

import pandas as pd
from _study import pct, run_grid, seed_means, w2a2_study, write_study

P_HIGH = [0.0, 0.25, 0.5, 0.75, 1.0]
HIGH_BITS = [4, 8, 32]


def main() -> None:
    name = "speq-ablation-digits"
    args, space = w2a2_study(name, __doc__, {}, {"p_high": P_HIGH, "high_bits": HIGH_BITS})
    trials = run_grid(name, space, args.reuse)
    means = seed_means(trials, ["p_high", "high_bits"])
    by = means.set_index(["p_high", "high_bits"])
    table = pd.DataFrame([{"p_high": f"{p:g}", **{f"high_bits {h}": pct(by.loc[(p, h), "test_acc_mean"],
                                                                          by.loc[(p, h), "test_acc_std"])
                                                  for h in HIGH_BITS}} for p in P_HIGH])
    import plotly.graph_objects as go

    z = [[100 * by.loc[(p, h), "test_acc_mean"] for h in HIGH_BITS] for p in P_HIGH]
    fig = go.Figure(go.Heatmap(z=z, x=[str(h) for h in HIGH_BITS], y=[f"{p:g}" for p in P_HIGH], colorscale="Viridis",
                               texttemplate="%{z:.2f}", colorbar={"title": {"text": "test acc %"}}))
    fig.update_layout(title=f"SPEQ at W2A2 on digits: test accuracy (mean of {len(args.seeds)} seeds)",
                      xaxis_title="high_bits (teacher's high precision)", yaxis_title="p_high",
                      template="plotly_white")
    notes = [f"Grid: p_high {P_HIGH} x high_bits {HIGH_BITS} x seeds {args.seeds}; cnn-small on digits, W2A2 "
             f"(first/last weights at 8), {args.epochs} epochs, cosine distillation with kd_weight 1.",
             "Test accuracy (%), mean ± std over seeds. p_high 0 is plain QAT (the teacher is the student)."]
    write_study(name, {"Test accuracy by p_high and high_bits": table}, {"heatmap": fig}, notes)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
