"""The paper's campaign: the plans of runs behind Tables 1–2, and the runner that works through them."""
