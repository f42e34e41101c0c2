"""Floor 0: every configuration dataclass, the typed override and the sweep file (stdlib + yaml only)."""
