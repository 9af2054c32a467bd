"""The pipeline's closing lines: a proxy difference is called beyond the noise only when it is."""
from search.report import proxy_noise_lines


def _row(budget: str, derived_loss: float, released_loss: float, std: float) -> dict:
    return {"budget": budget, "derived": {"loss": derived_loss, "loss_std": std},
            "released": {"loss": released_loss, "loss_std": std}}


def test_proxy_differences_are_judged_against_their_noise():
    lines = proxy_noise_lines([_row("s0", 0.88, 1.03, 0.017), _row("s1", 0.95, 0.97, 0.017)])
    assert lines[0].startswith("S0: derived - released proxy val loss -0.1500 (2 x noise 0.0481): beyond")
    assert lines[1].startswith("S1: derived - released proxy val loss -0.0200 (2 x noise 0.0481): within")
    assert "claims no accuracy difference" in lines[-1]


def test_rows_without_scores_are_left_out():
    lines = proxy_noise_lines([{"budget": "l", "derived": {"loss": None}, "released": {"loss": 0.9}}])
    assert len(lines) == 1 and "not accuracies" in lines[0]
