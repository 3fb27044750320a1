"""The simulated teams' monthly budgets, for the demo: one team within its budget, one
over it.

Teams are namespaces unless ``attribution.team_label`` is set. At the example prices,
``vision`` holds eight A100-80GB GPUs on-demand around the clock (detector-train 4,
segmenter-finetune 2, the hung nightly-eval 2): 8 x 32.00 = 256.00 CNY an hour,
184,320.00 CNY over the 720 hours of November, against a budget of 150,000.00. ``llm``
holds 16 on-demand A100-80GB and 8 spot A100-40GB: 16 x 32.00 + 8 x 7.20 = 569.60 CNY
an hour, 410,112.00 over November, within its 450,000.00.
"""

from __future__ import annotations

from typing import Any

DEMO_BUDGET_TIME_ZONE = "Asia/Shanghai"
DEMO_DAYS = 24.0
"""History back to 2026-10-31T02:00Z: before November began in Shanghai (16:00Z)."""
DEMO_BUDGETS: list[dict[str, Any]] = [
    {"team": "vision", "amount": 150000, "currency": "CNY", "channel": "#vision-gpu"},
    {"team": "llm", "amount": 450000, "currency": "CNY"},
]
